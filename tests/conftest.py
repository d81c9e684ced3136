"""Shared fixtures: a real MLflow server, registered test models, the real gateway, PostgreSQL.

Reuse from any test folder:

- ``mlflow_server`` (session): tracking URI of a real ``mlflow server`` on SQLite (~30 s to
  start, once). Also exported as MLFLOW_TRACKING_URI for the session.
- ``iris_registry`` (session): a registered model ``iris-test`` with one version per kind of
  ``support.models.KINDS``; a dict kind -> version (plus "good2": a second good version,
  "slow1s": 1 s per call, "raises_half": raises on ~half the rows).
- ``gateway_factory`` (function): ``start(**GatewayProcess kwargs) -> GatewayProcess``; every
  gateway it started is stopped at teardown.
- ``postgres_store`` (session): (url, schema) of a fresh schema on the machine's PostgreSQL;
  skipped when no server answers, unless CI=true (then it fails).
- ``airflow_db`` (session): the migrated metadata DB of the session's one Airflow test home
  (``support.airflow_home``).
- helpers in ``support.models`` (register_iris_version, iris_rows, scoring_payload),
  ``support.servers`` (MlflowServer, GatewayProcess, free_port), ``support.load`` (run_load).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# first: sets AIRFLOW_HOME & co. before anything imports airflow; `airflow_db` for every folder
from support.airflow_home import airflow_db  # noqa: E402, F401
from support.pg import require_postgres  # noqa: E402
from support.servers import GatewayProcess, MlflowServer  # noqa: E402

pytest_plugins = ["support.file_durations"]  # seconds per test file, at the end of every run

REGISTRY_MODEL = "iris-test"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """Tracking URI of a real `mlflow server` (SQLite backend, local artifacts)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    uri = server.start()
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield uri
    finally:
        server.stop()
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="session")
def iris_registry(mlflow_server) -> dict[str, str]:
    """One registered version per test-model kind, under the registered model `iris-test`."""
    from support.models import register_iris_version

    plan = [
        ("good", {}),
        ("good2", {"kind": "good"}),
        ("flipped", {}),
        ("slow1s", {"kind": "slow", "delay_ms": 1000}),
        ("raises", {"p": 1.0}),
        ("raises_half", {"kind": "raises", "p": 0.5}),
        ("regressor", {}),
        ("unloadable", {}),
        ("incompatible", {}),
    ]
    out = {}
    for label, kw in plan:
        kw = {"kind": label, **kw}
        out[label] = register_iris_version(mlflow_server, REGISTRY_MODEL, **kw)
    out["_name"] = REGISTRY_MODEL
    return out


@pytest.fixture
def gateway_factory(tmp_path, mlflow_server):
    """Start real `model-gateway` processes; all are stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(**kwargs) -> GatewayProcess:
        kwargs.setdefault("tracking_uri", mlflow_server)
        data_dir = kwargs.pop("data_dir", None) or tmp_path / f"gw{len(started)}"
        gw = GatewayProcess(data_dir, **kwargs)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def postgres_store() -> tuple[str, str]:
    """(url, schema): a fresh schema on the local PostgreSQL, dropped at the end."""
    url = require_postgres()
    import psycopg

    schema = f"gwtest_{uuid.uuid4().hex[:10]}"
    yield url, schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
