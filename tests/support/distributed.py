"""The distributed topology of docker-compose.yaml, on this machine's own services.

Airflow's metadata in a fresh PostgreSQL database, the CeleryExecutor with Redis
(127.0.0.1:6379) as broker and two Celery workers, Airflow's api-server, scheduler,
dag-processor and triggerer as separate processes, MLflow on a second fresh PostgreSQL
database, and two gateway replicas sharing one PostgreSQL store schema. Every process is a
session leader started through the demo's `Services` (pidfiles, whole-session stop), so a
test can stop and start one component (the triggerer, the scheduler) while the rest runs.

Why a per-run Celery queue: the Redis broker is the machine's, shared with whatever else runs
here; tasks of this topology go to a queue only its two workers consume.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from model_rollout.demo.airflow_api import AirflowAPI
from model_rollout.demo.scenario import LOCAL_SETTINGS
from model_rollout.demo.services import Service, Services, http_ok

from .servers import GatewayProcess, env_with_venv, free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/0"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def _pg_url(base: str, db: str) -> str:
    """`base` (postgresql://user@host:port/anything) pointed at database `db`, psycopg 3."""
    head = base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{head}/{db}"


@dataclass
class Distributed:
    """One distributed model_rollout deployment under `workdir`.

    :param pg_url: the machine's PostgreSQL (`postgresql://postgres@127.0.0.1:5432/test`).
    :param policies: policy YAML per model (written where Airflow reads policies).
    """

    workdir: Path
    pg_url: str
    policies: dict[str, str]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.services = Services(self.workdir)
        self.home = self.workdir / "airflow"
        self.airflow_db = f"mr_e2e_af_{self.run_id}"
        self.mlflow_db = f"mr_e2e_ml_{self.run_id}"
        self.gateway_schema = f"mr_e2e_gw_{self.run_id}"
        self.queue = f"model-rollout-e2e-{self.run_id}"
        self.api_port, self.mlflow_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        self.token = secrets.token_urlsafe(24)
        self.webhook_secret = secrets.token_urlsafe(24)
        self.gateways: list[GatewayProcess] = []
        self.api = AirflowAPI(self.api_url, self.home / "passwords.json")
        self._defs: dict[str, Service] = {}

    # -- PostgreSQL -------------------------------------------------------------------------
    def _admin(self, *statements: str) -> None:
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt)

    def create_databases(self) -> None:
        self._admin(f'CREATE DATABASE "{self.airflow_db}"', f'CREATE DATABASE "{self.mlflow_db}"')

    def drop_databases(self) -> None:
        self._admin(
            f'DROP DATABASE IF EXISTS "{self.airflow_db}" WITH (FORCE)',
            f'DROP DATABASE IF EXISTS "{self.mlflow_db}" WITH (FORCE)',
            f'DROP SCHEMA IF EXISTS "{self.gateway_schema}" CASCADE',
        )

    def store_rows(self, sql: str, *params) -> list[tuple]:
        """Rows of a query on the gateways' shared store schema."""
        with psycopg.connect(self.pg_url) as conn:
            conn.execute(f'SET search_path TO "{self.gateway_schema}"')
            return conn.execute(sql, params).fetchall()

    # -- environment ------------------------------------------------------------------------
    def airflow_env(self, **extra: str) -> dict[str, str]:
        """What every Airflow component must agree on (docker-compose.yaml's x-airflow-env)."""
        db = _pg_url(self.pg_url, self.airflow_db)
        gateway = self.gateways[0]
        env = {
            k: v
            for k, v in env_with_venv().items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and k != "AIRFLOW_HOME"
        }
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
            AIRFLOW__CORE__PARALLELISM="8",
            AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="300",
            AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT="300",
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="600",
            AIRFLOW__CORE__FERNET_KEY=self._fernet,
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.api_url}/execution/",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=db,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API__BASE_URL=self.api_url,
            AIRFLOW__API__SECRET_KEY=self._api_secret,
            AIRFLOW__API_AUTH__JWT_SECRET=self._jwt_secret,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.home / "passwords.json"),
            AIRFLOW__CELERY__BROKER_URL=REDIS_URL,
            AIRFLOW__CELERY__RESULT_BACKEND=f"db+{db}",
            AIRFLOW__OPERATORS__DEFAULT_QUEUE=self.queue,
            AIRFLOW__CELERY__WORKER_CONCURRENCY="4",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": self.mlflow_port}
            ),
            AIRFLOW_CONN_MODEL_GATEWAY_DEFAULT=json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": gateway.port}
            ),
            MODEL_GATEWAY_TOKEN=self.token,
            MLFLOW_TRACKING_URI=self.mlflow_url,
            MLFLOW_REGISTRY_URI=self.mlflow_url,
            MODEL_ROLLOUT_POLICIES=str(self.workdir / "policies"),
            MODEL_ROLLOUT_WEBHOOK_SECRET=self.webhook_secret,
        )
        env.update(extra)
        return env

    # -- processes --------------------------------------------------------------------------
    def prepare(self) -> None:
        """Folders, policies, local settings, the two databases, Airflow's schema."""
        self._fernet = base64.urlsafe_b64encode(os.urandom(32)).decode()
        self._api_secret = secrets.token_urlsafe(24)
        self._jwt_secret = secrets.token_urlsafe(32)
        (self.workdir / "policies").mkdir(parents=True, exist_ok=True)
        for model, text in self.policies.items():
            (self.workdir / "policies" / f"{model}.yaml").write_text(text)
        (self.home / "config").mkdir(parents=True, exist_ok=True)
        # the demo's preloads, and the Celery workers (which run the tasks) preload like the
        # scheduler does under LocalExecutor
        (self.home / "config" / "airflow_local_settings.py").write_text(
            LOCAL_SETTINGS.replace(
                'if _COMPONENT == "scheduler":', 'if _COMPONENT in ("scheduler", "celery"):'
            )
        )
        self.create_databases()

    def start_mlflow(self) -> None:
        root = self.workdir / "mlflow"
        root.mkdir(parents=True, exist_ok=True)
        svc = Service(
            name="mlflow",
            cmd=[
                str(VENV_BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                _pg_url(self.pg_url, self.mlflow_db),
                "--default-artifact-root",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--workers",
                "1",
            ],
            port=self.mlflow_port,
            ready=lambda: http_ok(f"{self.mlflow_url}/health"),
            cwd=root,
            env=env_with_venv(
                {
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(
                        os.urandom(32)
                    ).decode(),
                    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
                    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
                }
            ),
        )
        self._defs["mlflow"] = svc
        self.services.start(svc)

    def start_gateways(self, n: int = 2) -> None:
        """`n` replicas on one PostgreSQL store schema (the first creates it)."""
        for i in range(n):
            gw = GatewayProcess(
                self.workdir / f"gateway-{i}",
                token=self.token,
                tracking_uri=self.mlflow_url,
                store_url=self.pg_url,
                store_schema=self.gateway_schema,
                extra_args=["--shadow-in-process", "--route-poll-interval", "0.5"],
            )
            gw.start(timeout=180)
            self.gateways.append(gw)

    def migrate(self) -> None:
        p = subprocess.run(
            [str(VENV_BIN / "airflow"), "db", "migrate"],
            env=self.airflow_env(),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=self.home,
        )
        if p.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{p.stdout[-2000:]}{p.stderr[-3000:]}")

    def component(self, name: str) -> Service:
        """The Service definition of an Airflow component or Celery worker (`worker-1`, ...)."""
        if name.startswith("worker-"):
            cmd = ["celery", "worker", "-H", f"{name}@%h", "-q", self.queue]
            env = self.airflow_env(AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))
            ready, port = (lambda: None), 0
        else:
            cmd = [name]
            env = self.airflow_env()
            port = self.api_port if name == "api-server" else 0
            ready = (lambda: self.api.health_problem()) if name == "api-server" else (lambda: None)
        return Service(
            name=f"airflow-{name}",
            cmd=[str(VENV_BIN / "airflow"), *cmd],
            port=port,
            ready=ready,
            env=env,
            cwd=self.home,
        )

    def start_component(self, name: str) -> Service:
        svc = self.component(name)
        if svc.port == 0:
            svc.port = free_port()  # nothing to listen on; Services checks a port is free
        self.services.start(svc)
        self._defs[name] = svc
        return svc

    def stop_component(self, name: str) -> None:
        """SIGTERM the component's whole session (what an orchestrator's restart does)."""
        svc = self._defs.pop(name)
        self.services.stop_all(lambda m: None, only=[svc.name])

    def start_airflow(self, workers: int = 2) -> None:
        for name in AIRFLOW_COMPONENTS:
            self.start_component(name)
        for i in range(1, workers + 1):
            self.start_component(f"worker-{i}")

    def wait_healthy(self, timeout: float = 420.0) -> None:
        self.services.wait_ready(self._defs["mlflow"], timeout=timeout)
        self.services.wait_ready(self._defs["api-server"], timeout=timeout)

    def stop(self) -> None:
        for gw in self.gateways:
            gw.stop()
        self.services.stop_all(lambda m: None)
