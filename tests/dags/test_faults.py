"""Faults around a rollout under dag.test(): the MLflow server goes away during the canary.

The gateway holds both versions and the route, so the rollback does not need the registry:
traffic must go back to the incumbent, and the task that needs MLflow (recording the rollback
in the registry) must fail saying which server it could not reach. Own MLflow server here:
the session's is shared with other tests.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from support.models import iris_rows, register_iris_version, scoring_payload
from support.rollout_env import champion_serving, live_only_failure_seed, rollout_env, states
from support.servers import MlflowServer

from model_rollout.loadgen import Traffic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "fault_mlflow_down"
POLICY = """
steps: [25, 100]
step_duration: 20
poll_interval: 1
after_max_stage_duration: rollback
task_retries: 0
retry_delay: 1
shadow: {enabled: false}
staging: {sample_requests: 10, latency_budget_p99_ms: 3000}
holdout: {path: data/iris_holdout.csv, target: species, metric: accuracy, tolerance: 0.05}
judge:
  alpha: 0.05
  min_samples: 80
  errors: {max_relative_increase: 0.5, min_absolute_increase: 0.05}
  latency: {quantiles: [0.5], tolerance: 3.0}
  latency_tail: {enabled: false}
  kpi: {enabled: false}
"""


def _stop_mlflow_at_canary(gateway, candidate: str, server: MlflowServer, done: dict) -> None:
    """Stop the MLflow server the moment the candidate gets live traffic (bounded wait)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            route = requests.get(
                f"{gateway.url}/admin/models/{MODEL}/route", headers=gateway.auth, timeout=5
            ).json()
        except requests.RequestException:
            route = {}
        if (route.get("weights") or {}).get(candidate):
            server.stop()
            done["stopped_at"] = time.time()
            return
        time.sleep(0.2)


def test_mlflow_down_during_canary_still_rolls_back(airflow_db, tmp_path_factory):
    from model_rollout.orchestration.tasks import FAILURE_KEY

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-fault"))
    uri = server.start()
    try:
        with rollout_env(
            uri,
            tmp_path_factory.mktemp("policies"),
            tmp_path_factory.mktemp("gateway"),
            {MODEL: POLICY},
        ) as env:
            v1 = champion_serving(env, MODEL)
            v2 = register_iris_version(
                uri, MODEL, kind="raises", p=0.15, seed=live_only_failure_seed(0.15)
            )
            done: dict = {}
            killer = threading.Thread(
                target=_stop_mlflow_at_canary, args=(env.gateway, v2, server, done), daemon=True
            )
            rows = iris_rows(500, seed=1)
            with Traffic(
                env.gateway.url,
                MODEL,
                lambda i: (scoring_payload([rows[i % len(rows)]]), None),
                rate=150,
                max_requests=40_000,
                max_seconds=300,
                workers=3,
            ):
                killer.start()
                dr = env.dag(MODEL).test(run_conf={"version": v2, "force": False})
            killer.join(timeout=5)
            st = states(dr)
            assert "stopped_at" in done, "the candidate never got canary traffic"
            assert st["canary_25.degraded"] == "success", st
            assert st["rollback.restore_traffic"] == "success", st
            assert env.route(MODEL)["weights"] == {v1: 100}
            assert st["rollback.record"] == "failed", st
            ti = dr.get_task_instance("rollback.record")
            failure = ti.xcom_pull(task_ids="rollback.record", key=FAILURE_KEY) or {}
            print("MLFLOW DOWN record error:", failure.get("error", "")[:300])
            assert uri in failure.get("error", ""), failure
            assert "MLflow" in failure["error"], failure
    finally:
        server.stop()
