"""The rollout DAGs under dag.test() against a real MLflow server and a real gateway process.

Shared by the rollout scenarios and the load tests: `rollout_env()` writes the policies, starts
a gateway, points the DAG file at both through the environment and parses the real dags/
folder; the helpers read back what a run left in Airflow, MLflow and the gateway.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from .models import register_iris_version
from .servers import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    tracking_uri: str
    gateway: GatewayProcess
    bag: object

    def dag(self, model: str):
        return self.bag.get_dag(f"model_rollout__{model}")

    def route(self, model: str) -> dict:
        r = requests.get(
            f"{self.gateway.url}/admin/models/{model}/route", headers=self.gateway.auth, timeout=10
        )
        r.raise_for_status()
        return r.json()

    def registry(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


@contextlib.contextmanager
def rollout_env(
    tracking_uri: str, folder: Path, gateway_dir: Path, policies: dict[str, str]
) -> Iterator[Env]:
    """Policies written to `folder`, a gateway in `gateway_dir`, the DAGs parsed against both."""
    for name, text in policies.items():
        (folder / f"{name}.yaml").write_text(text)
    gw = GatewayProcess(gateway_dir, tracking_uri=tracking_uri).start()
    saved = {
        k: os.environ.get(k)
        for k in (
            "MODEL_ROLLOUT_POLICIES",
            "MLFLOW_TRACKING_URI",
            "MLFLOW_REGISTRY_URI",
            "MODEL_GATEWAY_URL",
            "MODEL_GATEWAY_TOKEN",
        )
    }
    os.environ.update(
        MODEL_ROLLOUT_POLICIES=str(folder),
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_REGISTRY_URI=tracking_uri,
        MODEL_GATEWAY_URL=gw.url,
        MODEL_GATEWAY_TOKEN=gw.token,
    )
    try:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert not bag.import_errors, bag.import_errors
        yield Env(tracking_uri, gw, bag)
    finally:
        gw.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def champion_serving(env: Env, model: str) -> str:
    """Register a good v1 as champion and put it at 100% in the gateway (production today)."""
    from model_rollout.backends.gateway import GatewayBackend

    v1 = register_iris_version(env.tracking_uri, model, kind="good", alias="champion")
    backend = GatewayBackend(env.gateway.url, env.gateway.token)
    backend.deploy(model, v1)
    backend.set_traffic(model, {v1: 100}, [])
    return v1


def states(dr) -> dict[str, str]:
    return {
        ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
        for ti in dr.get_task_instances()
    }


def ti_times(dr) -> dict[str, tuple]:
    return {ti.task_id: (ti.start_date, ti.end_date) for ti in dr.get_task_instances()}


def version_tags(env: Env, model: str, version: str) -> dict[str, str]:
    return dict(env.registry().get_model_version(model, version).tags)


def aliases(env: Env, model: str) -> dict[str, str]:
    return {k: str(v) for k, v in env.registry().get_registered_model(model).aliases.items()}


def live_only_failure_seed(p: float) -> int:
    """A seed for kind="raises"/"noisy" under which no holdout row is hit: offline validation
    and the staging samples pass, and the fault only shows on live traffic (other iris rows)."""
    import pandas as pd

    from .pyfunc_kinds import row_unit

    holdout = (
        pd.read_csv(ROOT / "include" / "data" / "iris_holdout.csv")
        .drop(columns=["species"])
        .to_numpy()
    )
    return next(s for s in range(100_000) if all(row_unit(r, s) >= p for r in holdout))
