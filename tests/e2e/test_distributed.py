"""One rollout on the distributed topology of docker-compose.yaml, with this machine's services.

Airflow's metadata on PostgreSQL, CeleryExecutor with Redis (127.0.0.1:6379) and two Celery
workers, api-server / scheduler / dag-processor / triggerer as separate processes, MLflow on
PostgreSQL, two gateway replicas sharing one PostgreSQL store with the traffic spread over both.
While the canary's monitor waits, the triggerer and then the scheduler are stopped and started
again (issue #6): the monitor must resume and no traffic change may be applied twice.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
import requests
from support.distributed import VENV_BIN, Distributed
from support.pg import require_postgres
from support.route_watch import RouteWatch

from model_rollout.backends.gateway import GatewayBackend
from model_rollout.demo import models as demo_models
from model_rollout.demo.models import COLUMNS, live_rows
from model_rollout.loadgen import Traffic

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(1800)]

MODEL = "iris"
DAG_ID = f"model_rollout__{MODEL}"
POLICY = """\
model: iris
trigger: {event: alias, alias: challenger}
steps: [50, 100]
step_duration: 40
poll_interval: 6
on_inconclusive: extend
after_max_stage_duration: rollback
task_retries: 1
retry_delay: 5
shadow: {enabled: false}
staging: {sample_requests: 20, latency_budget_p99_ms: 2000}
holdout: {path: data/iris_holdout.csv, target: species, metric: accuracy, tolerance: 0.05}
judge:
  alpha: 0.05
  min_samples: 80
  errors: {max_relative_increase: 0.5, min_absolute_increase: 0.02}
  latency: {quantiles: [0.5], tolerance: 3.0}
  latency_tail: {enabled: false}
  kpi: {enabled: true, margin: 0.5, min_feedback: 40}
"""
RATE_PER_REPLICA = 40.0
# Replicas re-read the route every 0.5 s (--route-poll-interval) and load every registered
# version as soon as it is registered, off the poll: a route naming versions b holds must be
# live on b within a poll or so, whatever loads; one naming a version for the first time may
# wait for b's own load of it (MLflow import and model load on a machine this busy).
ROUTE_BOUND_S = 3.0
FIRST_USE_BOUND_S = 120.0
FIRST_ROUTE_BOUND_S = 240.0  # b's first load of all: MLflow import while Airflow starts


def _require_redis() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return
    except OSError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Redis does not answer on 127.0.0.1:6379; CI=true requires it")
        pytest.skip("Redis does not answer on 127.0.0.1:6379")


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    pg = require_postgres()
    _require_redis()
    d = Distributed(tmp_path_factory.mktemp("distributed"), pg, {MODEL: POLICY})
    try:
        d.prepare()
        d.start_mlflow()
        d.start_gateways(2)
        d.migrate()
        d.start_airflow(workers=2)
        d.wait_healthy()
        d.api.login()
        yield d
    finally:
        d.stop()
        d.drop_databases()


def _wait(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout:.0f} s")


def _ti(d: Distributed, run_id: str) -> dict[str, dict]:
    return {t["task_id"]: t for t in d.api.task_instances(DAG_ID, run_id)}


def test_rollout_on_postgres_celery_and_two_gateway_replicas(topo):
    d = topo
    a, b = d.gateways
    v1 = demo_models.register_sklearn(d.mlflow_url, 1.0, "incumbent").version
    v2 = demo_models.register_sklearn(d.mlflow_url, 2.0, "candidate").version
    from mlflow import MlflowClient

    client = MlflowClient(d.mlflow_url, d.mlflow_url)
    client.set_registered_model_alias(MODEL, "champion", v1)

    # production before the rollout: v1 at 100% through replica a; b must serve it too
    backend_a = GatewayBackend(a.url, d.token)
    backend_a.deploy(MODEL, v1)
    t0 = time.monotonic()
    backend_a.set_traffic(MODEL, {v1: 100}, [], staging=None)
    gen = requests.get(f"{a.url}/admin/models/{MODEL}/route", headers=a.auth, timeout=10).json()
    _wait(
        lambda: (
            requests.get(f"{b.url}/admin/models/{MODEL}/route", headers=b.auth, timeout=10)
            .json()
            .get("generation")
            == gen["generation"]
        ),
        FIRST_ROUTE_BOUND_S,
        "replica b taking the route written through a",
        interval=0.1,
    )
    GatewayBackend(b.url, d.token).wait_ready(MODEL)
    propagated = time.monotonic() - t0
    row = {"dataframe_split": {"columns": COLUMNS, "data": [live_rows()[0]]}}
    served = requests.post(f"{b.url}/models/{MODEL}/invocations", json=row, timeout=30)
    assert served.status_code == 200 and served.headers["x-model-version"] == v1
    print(f"ROUTE first route through a served by b after {propagated:.2f} s (incl. model load)")

    # the Airflow side: DAG parsed, unpaused, the webhook registered in MLflow
    _wait(lambda: d.api.dag(DAG_ID), 420, f"DAG {DAG_ID} parsed", interval=2.0)
    d.api.unpause(DAG_ID)
    d.api.set_paused("model_rollout_watcher", True)
    hook = subprocess.run(
        [
            str(VENV_BIN / "model-rollout"),
            "register-webhook",
            "--url",
            f"{d.api_url}/model-rollout/webhooks/mlflow",
            "--tracking-uri",
            d.mlflow_url,
            "--policies",
            str(d.workdir / "policies"),
        ],
        env={**os.environ, "MODEL_ROLLOUT_WEBHOOK_SECRET": d.webhook_secret},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert hook.returncode == 0, hook.stdout + hook.stderr
    time.sleep(1.5)  # MLFLOW_WEBHOOK_CACHE_TTL=1

    rows = live_rows()

    def payload(i: int):
        return {"dataframe_split": {"columns": COLUMNS, "data": [rows[i % len(rows)]]}}, f"u{i}"

    traffic = [
        Traffic(
            gw.url,
            MODEL,
            payload,
            rate=RATE_PER_REPLICA,
            max_requests=int(RATE_PER_REPLICA * 900),
            max_seconds=900,
            conversion={"*": 0.4},
            workers=2,
            seed=seed,
        ).start()
        for seed, gw in enumerate((a, b))
    ]
    run_id = f"rollout__v{v2}"
    try:
        with RouteWatch([a.url, b.url], d.token, MODEL, every=0.1, max_seconds=1800) as history:
            time.sleep(3.0)
            client.set_registered_model_alias(MODEL, "challenger", v2)
            _wait(lambda: d.api.run(DAG_ID, run_id), 120, f"webhook run {run_id}")

            # restart the triggerer, then the scheduler, while the canary's monitor waits
            monitor = "canary_50.monitor"
            _wait(
                lambda: _ti(d, run_id).get(monitor, {}).get("state") == "deferred",
                600,
                f"{monitor} deferred",
            )
            d.stop_component("triggerer")
            d.start_component("triggerer")
            time.sleep(3.0)
            d.stop_component("scheduler")
            d.start_component("scheduler")
            final = _wait(
                lambda: (r := d.api.run(DAG_ID, run_id))["state"] in ("success", "failed") and r,
                900,
                f"run {run_id} finished",
                interval=3.0,
            )
            time.sleep(2.0)
    finally:
        for t in traffic:
            t.stop()

    tis = _ti(d, run_id)
    assert final["state"] == "success", {k: v["state"] for k, v in tis.items()}
    # the monitor resumed where it was (same try), it was not failed and retried
    assert tis[monitor]["state"] == "success" and tis[monitor]["try_number"] == 1, tis[monitor]
    assert client.get_registered_model(MODEL).aliases.get("champion") == v2
    for gw in (a, b):
        route = requests.get(f"{gw.url}/admin/models/{MODEL}/route", headers=gw.auth, timeout=10)
        assert {k: w for k, w in route.json()["weights"].items() if w} == {v2: 100}

    # no traffic change applied twice: every generation b saw is a new state
    states = history.states[b.url]
    print("ROUTES", states)
    lags = history.lags(a.url, b.url)
    print("ROUTE LAG b behind a per generation (s):", {g: round(x, 2) for g, x in lags.items()})
    assert len(lags) >= 3, lags
    held: set[str] = set()
    for gen, weights, shadows, staging in states:
        named = set(weights) | set(shadows) | ({staging} if staging else set())
        bound = ROUTE_BOUND_S if named <= held else FIRST_USE_BOUND_S
        held |= named
        assert gen not in lags or lags[gen] < bound, (gen, named, lags)
    gens = [g for g, *_ in states]
    assert gens == sorted(set(gens)), gens
    for prev, cur in zip(states, states[1:], strict=False):
        assert prev[1:] != cur[1:], f"generation {cur[0]} re-applied route {cur[1:]}"
    live = [w for _, w, *_ in states]
    assert {v1: 50, v2: 50} in live and live.count({v1: 50, v2: 50}) == 1

    # both replicas answered the candidate's live traffic, and the judge counted both
    per_replica = dict(
        d.store_rows(
            "SELECT replica, count(*) FROM gw_requests WHERE model = %s AND version = %s "
            "AND arm = 'primary' GROUP BY replica",
            MODEL,
            v2,
        )
    )
    assert len(per_replica) == 2 and min(per_replica.values()) > 50, per_replica
    outcome = d.api.xcom(DAG_ID, run_id, monitor) or {}
    errors = ((outcome.get("verdict") or {}).get("metrics") or {}).get("errors") or {}
    samples = errors.get("samples") or {}
    canary_rows = dict(
        d.store_rows(
            "SELECT replica, count(*) FROM gw_requests r WHERE model = %s AND version = %s "
            "AND arm = 'primary' AND ts <= %s GROUP BY replica",
            MODEL,
            v2,
            _ts(tis["canary_50.monitor"]["end_date"]),
        )
    )
    print("JUDGE", samples, "per replica up to the canary's end", canary_rows)
    assert samples.get("candidate_requests", 0) > max(canary_rows.values()), (samples, canary_rows)

    # both Celery workers ran tasks
    received = [
        d.services.log_path(f"airflow-worker-{i}").read_text(errors="replace").count("] received")
        for i in (1, 2)
    ]
    print("CELERY tasks received per worker", received)
    assert all(n > 0 for n in received), received

    for t in traffic:
        failed = sum(t.stats.failed.values())
        assert failed == 0, t.stats.failed


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
