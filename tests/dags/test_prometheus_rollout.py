"""Whole rollouts judged from Prometheus instead of the gateway's own statistics (issue #13).

The same DAG, the same gateway routing the traffic, but `serving.metrics: prometheus`: the
monitor's trigger reads the counts with PromQL from a real Prometheus scraping the gateway
every second, and judges each stage with the weights its traffic task applied. A good
candidate is promoted, one failing 15% of its requests is rolled back at the canary.
"""

from __future__ import annotations

import os

import pytest
from support.models import register_iris_version
from support.prometheus import PrometheusProcess
from support.rollout_env import (
    POLICY,
    aliases,
    canary_exposure,
    champion_serving,
    live_only_failure_seed,
    rollout_env,
    run,
    version_tags,
)

# the rollouts of test_rollout.py, judged from Prometheus (which counts no output
# distribution: the shadow's drift check is off, the paired agreement stays); the errors case
# has no shadow, as there, so that the canary catches it and the two stacks' times compare
PROMETHEUS = """  output_drift: {enabled: false}
serving:
  metrics: prometheus
  metrics_conn_id: prometheus_default
  metrics_options: {scrape_interval: 1}
"""
MODELS = {"pr_healthy": "true", "pr_errors": "false"}


@pytest.fixture(scope="module")
def env(mlflow_server, airflow_db, tmp_path_factory):
    with rollout_env(
        mlflow_server,
        tmp_path_factory.mktemp("policies"),
        tmp_path_factory.mktemp("gateway"),
        {m: POLICY.format(shadow=sh, kpi="false") + PROMETHEUS for m, sh in MODELS.items()},
    ) as e:
        prom = PrometheusProcess(
            tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{e.gateway.port}"]
        ).start()
        saved = os.environ.get("PROMETHEUS_URL")
        os.environ["PROMETHEUS_URL"] = prom.url  # the connection's env fallback
        try:
            yield e
        finally:
            prom.stop()
            if saved is None:
                os.environ.pop("PROMETHEUS_URL", None)
            else:
                os.environ["PROMETHEUS_URL"] = saved


def test_a_healthy_candidate_judged_from_prometheus_is_promoted(env):
    model = "pr_healthy"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    dr, st, _ = run(env, model, v2)
    why = version_tags(env, model, v2).get("rollout.reason")
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), (why, sorted(st.items()))
    for task in ("shadow.monitor", "canary_25.monitor", "step_50.monitor", "cutover"):
        assert st[task] == "success", (task, st)
    assert env.route(model)["weights"] == {v2: 100}
    al = aliases(env, model)
    assert al["champion"] == v2 and al["standby"] == v1, al


def test_an_error_regression_judged_from_prometheus_rolls_back_at_the_canary(env):
    model = "pr_errors"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(
        env.tracking_uri, model, kind="raises", p=0.15, seed=live_only_failure_seed(0.15)
    )
    dr, st, _ = run(env, model, v2)
    assert str(dr.state) in ("failed", "DagRunState.FAILED"), st
    assert st["canary_25.degraded"] == "success", st
    assert st["rollback.restore_traffic"] == "success", st
    assert env.route(model)["weights"] == {v1: 100}
    tags = version_tags(env, model, v2)
    assert tags["rollout.state"] == "rolled_back" and "errors" in tags["rollout.verdict"], tags
    judged, exposed = canary_exposure(dr)
    print(
        f"TIMING error regression (Prometheus, 1 s scrapes): degraded verdict after "
        f"{judged:.1f} s, 100% incumbent after {exposed:.1f} s"
    )
