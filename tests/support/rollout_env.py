"""The rollout DAGs under dag.test() against a real MLflow server and a real gateway process.

Shared by the rollout scenarios and the load tests: `rollout_env()` writes the policies, starts
a gateway, points the DAG file at both through the environment and parses the real dags/
folder; the helpers read back what a run left in Airflow, MLflow and the gateway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from model_rollout.loadgen import Traffic

from .models import iris_rows, register_iris_version, scoring_payload
from .servers import GatewayProcess, environment

ROOT = Path(__file__).resolve().parents[2]
HOLDOUT = ROOT / "include" / "data" / "iris_holdout.csv"

# Compressed windows (seconds, not minutes); otherwise the shipped defaults' shape: guard
# steps then a proof step with its evidence pooled, extension to a max duration then a pause
# (or, here, a rollback, so that a test cannot hang on a human), alpha 0.05 over the whole
# rollout, latency at p50 and p90, the tail, the KPI whenever feedback arrives. The tolerances
# are wider than the shipped ones only because a test has ~1000 requests, not ~100,000.
# Placeholders: {shadow}, {kpi} (true / false); more judge settings may be appended.
POLICY = """
steps: [25, 50, 100]
step_duration: 10
max_stage_duration: 60
poll_interval: 1
on_inconclusive: extend
after_max_stage_duration: rollback
task_retries: 0
retry_delay: 1
shadow: {{enabled: {shadow}, duration: 5}}
staging: {{sample_requests: 10, latency_budget_p99_ms: 3000}}
holdout: {{path: HOLDOUT, target: species, metric: accuracy, tolerance: 0.05}}
stability_window: 1
judge:
  alpha: 0.05
  min_samples: 300
  errors: {{min_absolute_increase: 0.01}}
  latency: {{tolerance: 0.5}}
  latency_tail: {{tolerance: 1.0}}
  kpi: {{enabled: {kpi}, margin: 0.2, min_feedback: 40}}
""".replace("HOLDOUT", str(HOLDOUT))
ROWS = iris_rows(500, seed=1)


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
    values = {
        "MODEL_ROLLOUT_POLICIES": str(folder),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_REGISTRY_URI": tracking_uri,
        "MODEL_GATEWAY_URL": gw.url,
        "MODEL_GATEWAY_TOKEN": gw.token,
    }
    try:
        with environment(values):
            from airflow.dag_processing.dagbag import DagBag

            bag = DagBag(dag_folder=str(ROOT / "dags"))
            assert not bag.import_errors, bag.import_errors
            yield Env(tracking_uri, gw, bag)
    finally:
        gw.stop()


def champion_serving(env: Env, model: str) -> str:
    """Register a good v1 as champion and put it at 100% in the gateway (production today)."""
    from model_rollout.backends.gateway import GatewayBackend

    v1 = register_iris_version(env.tracking_uri, model, kind="good", alias="champion")
    backend = GatewayBackend(env.gateway.url, env.gateway.token)
    backend.deploy(model, v1)
    backend.set_traffic(model, {v1: 100}, [])
    return v1


def iris_traffic(
    url: str, model: str, conversion=None, rate: float = 150.0, max_seconds: float = 240
) -> Traffic:
    """Bounded loopback traffic of iris rows to `url` (a gateway or any front door serving
    `/models/<model>/invocations`), with business feedback when `conversion`."""
    return Traffic(
        url,
        model,
        lambda i: (scoring_payload([ROWS[i % len(ROWS)]]), None),
        rate=rate,
        max_requests=40_000,
        max_seconds=max_seconds,
        conversion=conversion,
        workers=3,
    )


def traffic(env: Env, model: str, conversion=None, rate: float = 150.0) -> Traffic:
    """Bounded loopback traffic of iris rows through the env's gateway."""
    return iris_traffic(env.gateway.url, model, conversion, rate)


def run(env: Env, model: str, version: str, **traffic_kw):
    """A dag.test() run of `version` with traffic flowing: (dag run, task states, traffic)."""
    with traffic(env, model, **traffic_kw) as t:
        dr = env.dag(model).test(run_conf={"version": version})
    return dr, states(dr), t.stats


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


def canary_exposure(dr, stage: str = "canary_25") -> tuple[float, float]:
    """(seconds from the stage's traffic applied to its degraded verdict, to the incumbent's
    100% confirmed live by the router), from the tasks' own records."""

    def xcom(task_id: str) -> dict:
        return dr.get_task_instance(task_id).xcom_pull(task_ids=task_id) or {}

    applied = float(xcom(f"{stage}.set_traffic")["applied_at"])
    judged = dr.get_task_instance(f"{stage}.monitor").end_date.timestamp() - applied
    return judged, float(xcom("rollback.restore_traffic")["live_at"]) - applied
