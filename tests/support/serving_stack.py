"""The second serving stack on loopback: nginx routing, MLServer per version, Prometheus.

nginx (Debian's, `make nginx`) runs the router's `main_config`; MLServer (`make mlserver`,
its own venv) is started per version by the deployer itself; Prometheus scrapes every version
the deployer lists in its file_sd targets. `env()` is what points Airflow at the stack: the
connection `model_serving_default` (front door + state folder + MLServer executable) and
PROMETHEUS_URL.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

from model_rollout.backends.endpoints import Endpoints
from model_rollout.backends.nginx import ROUTE_PATH, main_config
from model_rollout.backends.processes import stop_group

from .prometheus import PrometheusProcess
from .servers import free_port, stop_process, wait_http

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".venv-mlserver" / "bin" / "mlserver"


class ServingStack:
    """nginx + Prometheus started here; MLServers started by the deployer, stopped here."""

    def __init__(self, root: Path, scrape_interval: str = "1s", targets: list[str] = ()):
        """:param targets: further static scrape targets (e.g. a gateway, to compare)."""
        self.root = Path(root)
        self.targets = list(targets)
        self.state = self.root / "state"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scrape_interval = scrape_interval
        self.nginx: subprocess.Popen | None = None
        self.prometheus: PrometheusProcess | None = None

    def start(self) -> ServingStack:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(exe).exists():
            raise RuntimeError("nginx is not installed: run `make nginx`")
        if not MLSERVER.exists():
            raise RuntimeError(f"{MLSERVER} is missing: run `make mlserver`")
        d = self.state / "nginx"
        for sub in ("http.d", "server.d", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "nginx.conf").write_text(main_config(self.state, f"127.0.0.1:{self.port}"))
        log = d / "nginx.out"
        with open(log, "ab") as out:
            self.nginx = subprocess.Popen(
                [
                    exe,
                    "-c",
                    str(d / "nginx.conf"),
                    "-p",
                    str(d),
                    "-e",
                    str(d / "error.log"),
                    "-g",
                    "daemon off;",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_http(f"{self.url}/_model_rollout/healthz", timeout=60, proc=self.nginx, log=log)
        targets = self.state / "endpoints" / "targets.json"
        targets.parent.mkdir(parents=True, exist_ok=True)
        if not targets.exists():
            targets.write_text("[]")
        self.prometheus = PrometheusProcess(
            self.root / "prometheus",
            self.targets,
            scrape_interval=self.scrape_interval,
            file_sd=targets,
        ).start()
        return self

    def connection(self) -> str:
        """`AIRFLOW_CONN_MODEL_SERVING_DEFAULT`: the front door, the state folder, MLServer."""
        return json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": self.port,
                "extra": {"state_dir": str(self.state), "mlserver": str(MLSERVER)},
            }
        )

    def env(self) -> dict[str, str]:
        return {
            "AIRFLOW_CONN_MODEL_SERVING_DEFAULT": self.connection(),
            "PROMETHEUS_URL": self.prometheus.url,
        }

    def served_generation(self, model: str) -> int | None:
        import requests

        r = requests.get(f"{self.url}{ROUTE_PATH}/{model}", timeout=5)
        return r.json()["generation"] if r.status_code == 200 else None

    def stop(self) -> None:
        eps = Endpoints(self.state)
        for model in eps.models():
            for entry in eps.of(model).values():
                with contextlib.suppress(Exception):
                    stop_group(entry.get("pid"))
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.nginx is not None:
            stop_process(self.nginx)
