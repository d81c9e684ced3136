"""A gateway that stops answering during a traffic change (issue #11), under dag.test().

The failure this guards against: `shadow.start`'s route change got no answer within the
backend's timeout on a busy machine, the task failed and a healthy candidate was rolled back.
Here the gateway process is frozen (SIGSTOP) for longer than one call's timeout right when a
traffic task calls it: the backend retries (a repeated compare-and-set write is safe) and the
rollout goes on. Frozen for longer than the retry budget, the task fails and the rollback's
reason says the gateway was unreachable, not that the candidate was degraded.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from support.models import iris_rows, register_iris_version, scoring_payload
from support.rollout_env import aliases, champion_serving, rollout_env, states, version_tags

from model_rollout.loadgen import Traffic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
POLICY = """
steps: [50, 100]
step_duration: 8
poll_interval: 1
on_inconclusive: extend
task_retries: 0
retry_delay: 1
shadow: {{enabled: {shadow}, duration: 5}}
staging: {{sample_requests: 10, latency_budget_p99_ms: 3000}}
holdout: {{path: {holdout}, target: species, metric: accuracy, tolerance: 0.05}}
judge:
  alpha: 0.05
  min_samples: 80
  errors: {{max_relative_increase: 0.5, min_absolute_increase: 0.05}}
  latency: {{quantiles: [0.5], tolerance: 3.0}}
  latency_tail: {{enabled: false}}
  kpi: {{enabled: false}}
  shadow: {{max_disagreement: 0.1}}
  output_drift: {{max_total_variation: 0.3}}
"""
FROZEN_S = 35.0  # > one call's timeout (15 s; 30 s before issue #11), < the retry budget (45 s)
ROWS = iris_rows(300, seed=3)


@pytest.fixture(scope="module")
def env(mlflow_server, airflow_db, tmp_path_factory):
    holdout = ROOT / "include" / "data" / "iris_holdout.csv"
    policies = {
        "gp_frozen": POLICY.format(shadow="true", holdout=holdout),
        "gp_down": POLICY.format(shadow="false", holdout=holdout),
    }
    with rollout_env(
        mlflow_server,
        tmp_path_factory.mktemp("policies"),
        tmp_path_factory.mktemp("gateway"),
        policies,
    ) as e:
        yield e


def run(env, model: str, version: str):
    traffic = Traffic(
        env.gateway.url,
        model,
        lambda i: (scoring_payload([ROWS[i % len(ROWS)]]), None),
        rate=150.0,
        max_requests=30_000,
        max_seconds=300,
        workers=3,
        timeout=120.0,  # a request sent while the gateway is frozen waits for it
    )
    with traffic:
        dr = env.dag(model).test(run_conf={"version": version})
    return dr, states(dr)


def freeze(gw, seconds: float | None) -> threading.Timer | None:
    """SIGSTOP the gateway; SIGCONT after `seconds` (None: the caller thaws it)."""
    os.kill(gw.proc.pid, signal.SIGSTOP)
    if seconds is None:
        return None
    thaw = threading.Timer(seconds, os.kill, (gw.proc.pid, signal.SIGCONT))
    thaw.start()
    return thaw


def test_a_gateway_frozen_during_a_traffic_change_does_not_roll_back_a_good_candidate(
    env, monkeypatch
):
    from model_rollout.backends.gateway import GatewayBackend

    model = "gp_frozen"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    real, seen = GatewayBackend.set_traffic, {}

    def frozen_once(self, m, weights, shadows=(), **kw):
        if m == model and list(shadows) == [v2] and "took" not in seen:  # shadow.start
            t0 = time.monotonic()
            thaw = freeze(env.gateway, FROZEN_S)
            try:
                return real(self, m, weights, shadows, **kw)
            finally:
                thaw.join()
                seen["took"] = time.monotonic() - t0
        return real(self, m, weights, shadows, **kw)

    monkeypatch.setattr(GatewayBackend, "set_traffic", frozen_once)
    dr, st = run(env, model, v2)
    # the route change spanned the freeze (its first call timed out and was retried) ...
    assert seen["took"] >= FROZEN_S, seen
    # ... and the candidate went all the way
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), sorted(st.items())
    assert st["shadow.start"] == "success" and st["rollback.start"] == "skipped", st
    assert env.route(model)["weights"] == {v2: 100}
    assert aliases(env, model)["champion"] == v2 and aliases(env, model)["standby"] == v1


def test_a_gateway_unreachable_beyond_the_budget_is_reported_so_not_as_degraded(env, monkeypatch):
    from model_rollout.backends.gateway import GatewayBackend
    from model_rollout.orchestration.hooks import GatewayHook

    model = "gp_down"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    real = GatewayBackend.set_traffic

    # a short budget keeps the test short: the tasks' backend gives up after 6 s
    def short_budget(cls, conn_id=None, **_):
        ep = GatewayHook(conn_id).endpoint()
        return cls(ep.url, ep.token, timeout=2.0, retry_for=6.0)

    monkeypatch.setattr(GatewayBackend, "from_connection", classmethod(short_budget))

    def down_at_50(self, m, weights, shadows=(), **kw):
        if m == model and weights.get(v2) == 50:
            freeze(env.gateway, None)
            try:
                return real(self, m, weights, shadows, **kw)
            finally:
                os.kill(env.gateway.proc.pid, signal.SIGCONT)
        return real(self, m, weights, shadows, **kw)

    monkeypatch.setattr(GatewayBackend, "set_traffic", down_at_50)
    dr, st = run(env, model, v2)
    assert str(dr.state) in ("failed", "DagRunState.FAILED"), st
    assert st["canary_50.set_traffic"] == "failed", st
    assert st["rollback.restore_traffic"] == "success", st
    assert env.route(model)["weights"] == {v1: 100}
    reason = version_tags(env, model, v2)["rollout.reason"]
    assert reason.startswith("canary_50: canary_50.set_traffic failed: BackendUnreachable"), reason
    # 6 s of retries, plus up to one call's timeout (2 s) for the attempt under way
    assert re.search(rf"gateway {env.gateway.url} unreachable for [6-8] s \(", reason), reason
    assert "degraded" not in reason, reason
