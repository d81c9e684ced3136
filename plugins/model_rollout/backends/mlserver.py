"""MLServer as a deployer: one MLServer (Seldon Core v2's and KServe's runtime) per version.

Why one server per version, as KServe and Seldon run a pod per predictor: MLServer's latency
histogram and request counters are per server, not per model, so a version's statistics are
its server's (Prometheus adds `model`/`version` from the scrape target, see `endpoints`).
Deploying downloads the version's artifacts from the MLflow registry into the stack's folder
and starts `mlserver start` on free loopback ports with `mlserver_mlflow.MLflowRuntime`; the
version serves MLflow's scoring protocol (`/invocations`) like `mlflow models serve`.
MLServer 1.7 pins fastapi < 0.116, so it runs from its own environment (`make mlserver`
builds `.venv-mlserver` from requirements/mlserver.txt); the connection's extra `mlserver`
names its executable.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field

from model_rollout.backends import capabilities as cap
from model_rollout.backends.base import TrafficError
from model_rollout.backends.deployer import Deployer
from model_rollout.backends.endpoints import (
    Endpoints,
    check_name,
    file_lock,
    stack_settings,
    write_atomic,
)
from model_rollout.backends.processes import running, stop_group

RUNTIME = "mlserver_mlflow.MLflowRuntime"


class MLServerOptions(BaseModel):
    """`serving.deployer_options` of the MLServer deployer."""

    model_config = ConfigDict(extra="forbid")

    load_timeout: float = Field(
        600.0, gt=0, description="Seconds a version may take to download and load."
    )
    parallel_workers: int = Field(
        0, ge=0, le=64, description="MLServer inference worker processes (0: in the server)."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    errors = [x for x in text if "Error" in x or "Exception" in x]
    return " | ".join((errors or text)[-lines:])[-1500:]


class MLServerDeployer(Deployer):
    """Serves each version in its own MLServer process (MLflow models, /invocations)."""

    capabilities = frozenset({cap.STAGING_REQUESTS})
    options_model = MLServerOptions

    def __init__(
        self,
        state_dir: str | Path,
        front_url: str = "",
        *,
        mlserver: str | None = None,
        options: MLServerOptions | None = None,
        timeout: float = 30.0,
    ):
        self.state_dir = Path(state_dir)
        self.endpoints = Endpoints(self.state_dir)
        self.front_url = front_url.rstrip("/")
        self.mlserver = mlserver or os.environ.get("MLSERVER_BIN") or shutil.which("mlserver")
        self.options = options or MLServerOptions()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"MLServerDeployer({str(self.state_dir)!r})"

    @classmethod
    def from_connection(cls, conn_id=None, *, timeout=None, options=None) -> MLServerDeployer:
        """From the stack's connection (`endpoints.stack_settings`; extra `mlserver`)."""
        s = stack_settings(conn_id)
        return cls(
            s["state_dir"],
            s["url"],
            mlserver=s.get("mlserver"),
            options=cls.parse_options(options),
            timeout=timeout or 30.0,
        )

    def _dir(self, model: str, version: str) -> Path:
        return self.state_dir / "mlserver" / model / version

    def deploy(self, model, version, *, uri=None, upstream=None, batching=None) -> None:
        """Start the version's server unless it already serves; return once it is ready."""
        model, version = check_name("model", model), check_name("version", str(version))
        if upstream:
            raise TrafficError("the MLServer deployer starts its own servers (no upstream URLs)")
        with file_lock(self.state_dir / "locks" / f"{model}.{version}.lock"):
            entry = self.endpoints.get(model, version)
            if entry and running(entry.get("pid")) and self._ready(entry):
                if entry.get("status") != "loaded":
                    self.endpoints.put(model, version, **{**entry, "status": "loaded"})
                return
            if entry:  # a server that died (machine restart, crash): start it again
                stop_group(entry.get("pid"))
            folder = self._dir(model, version)
            self._fetch(model, version, uri or f"models:/{model}/{version}", folder)
            self._start(model, version, folder)

    def _fetch(self, model: str, version: str, uri: str, folder: Path) -> None:
        """The version's artifacts, downloaded once from the registry (MLflow connection)."""
        target = folder / "model"
        if (target / "MLmodel").is_file():
            return
        from mlflow.artifacts import download_artifacts

        from model_rollout.orchestration.hooks import MlflowRegistryHook

        shutil.rmtree(folder, ignore_errors=True)
        partial = folder / "download"
        partial.mkdir(parents=True)
        tracking = MlflowRegistryHook().tracking_uri() or None
        try:
            import mlflow

            if tracking:
                mlflow.set_tracking_uri(tracking)
                mlflow.set_registry_uri(tracking)
            path = Path(download_artifacts(artifact_uri=uri, dst_path=str(partial)))
        except Exception as e:
            raise TrafficError(
                f"could not download version {version} of {model!r} from {uri}: "
                f"{type(e).__name__}: {e}"
            ) from None
        if not (path / "MLmodel").is_file():
            raise TrafficError(
                f"{uri} holds no MLflow model (no MLmodel file in {sorted(os.listdir(path))})"
            )
        path.rename(target)
        shutil.rmtree(partial, ignore_errors=True)

    def _start(self, model: str, version: str, folder: Path) -> None:
        if not self.mlserver or not Path(self.mlserver).exists():
            raise TrafficError(
                f"no MLServer executable ({self.mlserver or 'mlserver not on PATH'}): run "
                "`make mlserver` and name .venv-mlserver/bin/mlserver in the connection's "
                "extra field `mlserver` (or MLSERVER_BIN)"
            )
        http, grpc, metrics = _free_port(), _free_port(), _free_port()
        repo = folder / "repository"
        (repo / model).mkdir(parents=True, exist_ok=True)
        write_atomic(
            repo / "settings.json",
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "http_port": http,
                    "grpc_port": grpc,
                    "metrics_port": metrics,
                    "metrics_dir": str(folder / "metrics"),
                    "parallel_workers": self.options.parallel_workers,
                    "load_models_at_startup": True,
                }
            ),
        )
        write_atomic(
            repo / model / "model-settings.json",
            json.dumps(
                {
                    "name": model,
                    "implementation": RUNTIME,
                    "parameters": {"uri": str(folder / "model"), "version": version},
                }
            ),
        )
        log = folder / "mlserver.log"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [self.mlserver, "start", str(repo)],
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the task that started it; stopped as a group
                env=env,
            )
        entry = {
            "url": f"http://127.0.0.1:{http}",
            "pid": proc.pid,
            "status": "loading",
            "started_at": time.time(),
        }
        self.endpoints.put(model, version, **entry)
        deadline = time.monotonic() + self.options.load_timeout
        while not self._ready(entry):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_group(proc.pid)
                self.endpoints.put(model, version, **{**entry, "status": "failed", "url": ""})
                why = "exited" if proc.returncode is not None else "timed out loading"
                raise TrafficError(
                    f"MLServer {why} for version {version} of {model!r} ({log}): {_log_tail(log)}"
                )
            time.sleep(0.25)
        # scraped from now on (a target Prometheus sees only once it answers)
        metrics_url = f"http://127.0.0.1:{metrics}"
        self.endpoints.put(
            model, version, **{**entry, "status": "loaded", "metrics_url": metrics_url}
        )

    def _ready(self, entry: dict[str, Any]) -> bool:
        url = entry.get("url")
        if not url:
            return False
        try:
            return requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def retire(self, model: str, version: str) -> None:
        model, version = check_name("model", model), check_name("version", str(version))
        with file_lock(self.state_dir / "locks" / f"{model}.{version}.lock"):
            entry = self.endpoints.get(model, version)
            if entry:
                stop_group(entry.get("pid"))
            self.endpoints.remove(model, version)
            shutil.rmtree(self._dir(model, version), ignore_errors=True)

    def invoke_staging(self, model: str, payload: dict[str, Any]) -> tuple[Any, float]:
        """Through the front door's staging path, which the router points at the staging
        version (`/staging/<model>/invocations`)."""
        if not self.front_url:
            raise TrafficError("the stack's connection names no URL (the router's front door)")
        t0 = time.perf_counter()
        try:
            r = requests.post(
                f"{self.front_url}/staging/{model}/invocations", json=payload, timeout=self.timeout
            )
        except requests.RequestException as e:
            raise TrafficError(f"staging request for {model!r}: {type(e).__name__}: {e}") from None
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code != 200:
            raise TrafficError(
                f"staging request for {model!r} answered {r.status_code}: {r.text[:500]}"
            )
        return r.json().get("predictions"), ms
