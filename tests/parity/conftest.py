"""Fixtures of the parity suite: the models, one `mlflow models serve` per model, one gateway.

Everything is started once per session: the models are saved locally (~15 s), the mlflow
servers start in parallel (~17 s each alone, ~1 min together on 2 cores), the gateway loads
every model from the same folders.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from catalogue import Kind, build_models  # noqa: E402
from support.gateway_api import load  # noqa: E402
from support.servers import (  # noqa: E402
    VENV_BIN,
    GatewayProcess,
    env_with_venv,
    free_port,
    stop_process,
    wait_http,
)


@pytest.fixture(scope="session")
def kinds(tmp_path_factory) -> dict[str, Kind]:
    root = tmp_path_factory.mktemp("parity-models")
    return {k.name: k for k in build_models(root)}


@pytest.fixture(scope="session")
def mlflow_serve(kinds, tmp_path_factory) -> dict[str, str]:
    """name -> invocations URL of a real `mlflow models serve` of that model."""
    logs = tmp_path_factory.mktemp("mlflow-serve")
    procs: dict[str, tuple[subprocess.Popen, str, Path]] = {}
    try:
        for name, kind in kinds.items():
            port = free_port()
            log = logs / f"{name}.log"
            with open(log, "wb") as out:
                procs[name] = (
                    subprocess.Popen(
                        [
                            str(VENV_BIN / "mlflow"),
                            "models",
                            "serve",
                            "-m",
                            str(kind.path),
                            "--env-manager",
                            "local",
                            "-h",
                            "127.0.0.1",
                            "-p",
                            str(port),
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env_with_venv(),
                        start_new_session=True,
                    ),
                    f"http://127.0.0.1:{port}",
                    log,
                )
        deadline = time.monotonic() + 400
        for proc, url, log in procs.values():
            wait_http(
                f"{url}/ping", timeout=max(5, deadline - time.monotonic()), proc=proc, log=log
            )
        yield {name: f"{url}/invocations" for name, (_, url, _) in procs.items()}
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: stop_process(p[0]), procs.values()))


@pytest.fixture(scope="session")
def parity_gateway(kinds, tmp_path_factory) -> GatewayProcess:
    """One gateway serving every model (batching auto), plus `iris-off` (batching off) and
    `batch_dep-on` (batching on)."""
    gw = GatewayProcess(tmp_path_factory.mktemp("parity-gateway")).start()
    try:
        with httpx.Client(base_url=gw.url, headers=gw.auth, timeout=300) as c:
            specs = {name: {"uri": str(k.path)} for name, k in kinds.items()}
            specs["iris-off"] = {"uri": str(kinds["iris"].path), "batching": "off"}
            specs["batch_dep-on"] = {"uri": str(kinds["batch_dep"].path), "batching": "on"}
            for name, spec in specs.items():
                doc = load(c, name, "1", **spec)  # answered at once, then loaded
                assert doc["status"] == "loaded", doc
                r = c.put(
                    f"/admin/models/{name}/route", json={"generation": 0, "weights": {"1": 100}}
                )
                assert r.status_code == 200, r.text
        yield gw
    finally:
        gw.stop()
