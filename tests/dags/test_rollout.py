"""The real rollout DAGs under dag.test(), against a real MLflow server and the real gateway.

Synthetic traffic (with business feedback) flows through the gateway for the whole run; each
test asserts task states, the gateway's route and the registry's aliases and tags. Windows are
compressed to seconds by the test policies.
"""

from __future__ import annotations

import pytest
import requests
from support.models import register_iris_version
from support.rollout_env import (
    POLICY,
    aliases,
    canary_exposure,
    champion_serving,
    live_only_failure_seed,
    rollout_env,
    run,
    ti_times,
    version_tags,
)

# model name -> (shadow enabled, kpi judged)
MODELS = {
    "ro_healthy": (True, True),
    "ro_errors": (False, False),
    "ro_latency": (False, False),
    "ro_kpi": (False, True),
    "ro_shadow": (True, False),
    "ro_unloadable": (True, False),
    "ro_signature": (True, False),
    "ro_raises_task": (False, False),
    "ro_retry": (False, False),
    "ro_first": (True, False),
    "ro_decom": (False, False),
}


@pytest.fixture(scope="module")
def env(mlflow_server, airflow_db, tmp_path_factory):
    policies = {
        name: POLICY.format(shadow=str(shadow).lower(), kpi=str(kpi).lower())
        for name, (shadow, kpi) in MODELS.items()
    }
    with rollout_env(
        mlflow_server,
        tmp_path_factory.mktemp("policies"),
        tmp_path_factory.mktemp("gateway"),
        policies,
    ) as e:
        yield e


def assert_rolled_back(env, model, v1, v2, dr, st, stage):
    assert str(dr.state) in ("failed", "DagRunState.FAILED"), st
    assert st["rollback.restore_traffic"] == "success", st
    assert st["rollback.record"] == "success", st
    assert st["rollback.fail_run"] == "failed", st
    assert st["cutover"] in ("skipped", "upstream_failed"), st
    route = env.route(model)
    assert route["weights"] == {v1: 100}, route
    assert route["shadows"] == [] and route["staging"] is None, route
    tags = version_tags(env, model, v2)
    assert tags["rollout.state"] == "rolled_back", tags
    assert tags["rollout.reason"].startswith(stage), tags
    assert tags.get("rollout.evidence_run_id")
    al = aliases(env, model)
    assert al.get("champion") == v1 and "challenger" not in al, al


def test_healthy_candidate_is_promoted_and_previous_kept_in_standby(env):
    model = "ro_healthy"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    dr, st, stats = run(env, model, v2, conversion={"*": 0.3})
    times = ti_times(dr)
    wall = (
        max(e for _, e in times.values() if e) - min(b for b, _ in times.values() if b)
    ).total_seconds()
    waiting = sum(
        (e - b).total_seconds() for t, (b, e) in times.items() if t.endswith(".monitor") and b and e
    )
    print(
        f"TIMING healthy rollout: wall {wall:.1f} s, monitors {waiting:.1f} s, orchestration {wall - waiting:.1f} s"
    )
    why = version_tags(env, model, v2).get("rollout.reason")
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), (why, sorted(st.items()))
    for task in (
        "resolve",
        "staging.gate",
        "shadow.monitor",
        "canary_25.monitor",
        "step_50.monitor",
        "cutover",
    ):
        assert st[task] == "success", (task, st)
    assert st["rollback.start"] == "skipped" and st["block_promotion"] == "skipped", st
    assert env.route(model)["weights"] == {v2: 100}
    al = aliases(env, model)
    assert al["champion"] == v2 and al["standby"] == v1 and "challenger" not in al, al
    assert version_tags(env, model, v2)["rollout.state"] == "promoted"
    assert version_tags(env, model, v1)["rollout.state"] == "standby"
    assert sum(stats.failed.values()) == 0, stats.failed
    assert stats.answered[v2] > 0 and stats.feedback > 0


def test_error_regression_rolls_back_at_the_canary(env):
    model = "ro_errors"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(
        env.tracking_uri, model, kind="raises", p=0.15, seed=live_only_failure_seed(0.15)
    )
    dr, st, _ = run(env, model, v2)
    assert st["canary_25.degraded"] == "success", st
    assert_rolled_back(env, model, v1, v2, dr, st, "canary_25")
    assert "errors" in version_tags(env, model, v2)["rollout.verdict"]
    judged, exposed = canary_exposure(dr)
    print(
        f"TIMING error regression: degraded verdict after {judged:.1f} s, 100% incumbent after {exposed:.1f} s"
    )


def test_latency_regression_rolls_back(env):
    model = "ro_latency"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="slow", delay_ms=40)
    dr, st, _ = run(env, model, v2)
    assert st["canary_25.degraded"] == "success", st
    assert_rolled_back(env, model, v1, v2, dr, st, "canary_25")


def test_kpi_regression_rolls_back(env):
    model = "ro_kpi"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    dr, st, _ = run(env, model, v2, conversion={v1: 0.6, v2: 0.15})
    degraded = [t for t in ("canary_25.degraded", "step_50.degraded") if st.get(t) == "success"]
    assert degraded, st
    assert_rolled_back(env, model, v1, v2, dr, st, degraded[0].split(".")[0])
    assert "kpi" in version_tags(env, model, v2)["rollout.reason"].lower()


def test_shadow_divergence_rolls_back_before_any_user_sees_the_candidate(env):
    model = "ro_shadow"
    v1 = champion_serving(env, model)
    # Right on every holdout row (offline validation passes), wrong on a quarter of live rows.
    v2 = register_iris_version(
        env.tracking_uri, model, kind="noisy", p=0.25, seed=live_only_failure_seed(0.25)
    )
    dr, st, stats = run(env, model, v2)
    assert st["shadow.degraded"] == "success", st
    assert_rolled_back(env, model, v1, v2, dr, st, "shadow")
    assert stats.answered[v2] == 0, stats.answered
    assert "canary_25.set_traffic" in st and st["canary_25.set_traffic"] == "skipped"


def test_unloadable_artifact_is_blocked_at_staging(env):
    model = "ro_unloadable"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="unloadable")
    dr, st, _ = run(env, model, v2)
    assert str(dr.state) in ("failed", "DagRunState.FAILED")
    assert st["staging.deploy"] == "failed" and st["staging.blocked"] == "success", st
    assert st["block_promotion"] == "failed" and st["shadow.start"] == "skipped", st
    assert st["rollback.start"] == "skipped", st
    tags = version_tags(env, model, v2)
    assert (
        tags["rollout.state"] == "blocked" and "staging.deploy failed" in tags["rollout.reason"]
    ), tags
    assert env.route(model)["weights"] == {v1: 100}
    assert aliases(env, model).get("champion") == v1


def test_incompatible_signature_is_blocked_at_staging(env):
    model = "ro_signature"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="incompatible")
    dr, st, _ = run(env, model, v2)
    assert st["staging.blocked"] == "success" and st["block_promotion"] == "failed", st
    tags = version_tags(env, model, v2)
    assert tags["rollout.state"] == "blocked", tags
    assert "cannot score the 30 holdout rows" in tags["rollout.reason"], tags
    route = env.route(model)
    assert route["weights"] == {v1: 100} and route["staging"] is None, route


def test_task_failing_mid_canary_rolls_back(env, monkeypatch):
    """The gateway refuses the 50% step (fault injected in the backend): rollback follows."""
    from model_rollout.backends.base import TrafficError
    from model_rollout.backends.gateway import GatewayBackend

    model = "ro_raises_task"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    real = GatewayBackend.set_traffic

    def flaky(self, m, weights, shadows=(), **kw):
        if m == model and weights.get(v2) == 50:
            raise TrafficError("injected: gateway refused the 50% step")
        return real(self, m, weights, shadows, **kw)

    monkeypatch.setattr(GatewayBackend, "set_traffic", flaky)
    dr, st, _ = run(env, model, v2)
    assert st["step_50.set_traffic"] == "failed", st
    assert_rolled_back(env, model, v1, v2, dr, st, "step_50")
    assert "injected" in version_tags(env, model, v2)["rollout.reason"]


def test_rollback_retried_reaches_the_same_end_state(env, monkeypatch):
    """restore_traffic dies after changing the route; its retry converges, applies nothing twice."""
    from model_rollout.backends.gateway import GatewayBackend

    model = "ro_retry"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(
        env.tracking_uri, model, kind="raises", p=0.15, seed=live_only_failure_seed(0.15)
    )
    calls = {"retire": 0, "route_writes": []}
    real_retire, real_set = GatewayBackend.retire, GatewayBackend.set_traffic

    def retire_dies_once(self, m, version):
        calls["retire"] += 1
        if m == model and calls["retire"] == 1:
            raise RuntimeError("injected: worker died after restoring traffic")
        return real_retire(self, m, version)

    def counting_set(self, m, weights, shadows=(), **kw):
        route = real_set(self, m, weights, shadows, **kw)
        if m == model:
            calls["route_writes"].append(route.generation)
        return route

    monkeypatch.setattr(GatewayBackend, "retire", retire_dies_once)
    monkeypatch.setattr(GatewayBackend, "set_traffic", counting_set)
    dr, st, _ = run(env, model, v2)
    assert calls["retire"] >= 2, calls
    assert_rolled_back(env, model, v1, v2, dr, st, "canary_25")
    # The retry found the route already restored: the last two writes left one generation.
    assert calls["route_writes"][-1] == calls["route_writes"][-2], calls
    gen = env.route(model)["generation"]
    GatewayBackend(env.gateway.url, env.gateway.token).set_traffic(
        model, {v1: 100}, [], staging=None
    )
    assert env.route(model)["generation"] == gen


def test_first_rollout_promotes_after_staging_checks(env):
    """No champion yet: nothing to compare against, so staging checks alone decide."""
    model = "ro_first"
    v1 = register_iris_version(env.tracking_uri, model, kind="good")
    dr, st, _ = run(env, model, v1)
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), st
    assert st["staging.first_rollout"] == "success" and st["cutover"] == "success", st
    assert st["shadow.start"] == "skipped", st
    assert env.route(model)["weights"] == {v1: 100}
    assert aliases(env, model) == {"champion": v1}
    assert version_tags(env, model, v1)["rollout.state"] == "promoted"


def test_decommission_retires_standby_after_its_window_and_keeps_the_champion(env):
    from model_rollout.backends.gateway import GatewayBackend

    model = "ro_decom"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    backend = GatewayBackend(env.gateway.url, env.gateway.token)
    backend.deploy(model, v2)
    backend.set_traffic(model, {v2: 100}, [])
    client = env.registry()
    client.set_registered_model_alias(model, "champion", v2)
    client.set_registered_model_alias(model, "standby", v1)
    client.set_model_version_tag(model, v1, "rollout.state", "standby")
    client.set_model_version_tag(model, v1, "rollout.standby_since", "0")  # window long over
    dag = env.bag.get_dag("model_rollout_decommission")

    def loaded() -> set[str]:
        r = requests.get(f"{env.gateway.url}/admin/state", headers=env.gateway.auth, timeout=10)
        return set(r.json()["models"][model]["versions"])

    dr = dag.test(run_conf={"dry_run": True})
    assert str(dr.state) in ("success", "DagRunState.SUCCESS")
    assert loaded() == {v1, v2} and aliases(env, model)["standby"] == v1  # dry run: untouched

    dr = dag.test(run_conf={"dry_run": False})
    assert str(dr.state) in ("success", "DagRunState.SUCCESS")
    assert loaded() == {v2}
    assert aliases(env, model) == {"champion": v2}
    assert version_tags(env, model, v1)["rollout.state"] == "decommissioned"
    assert env.route(model)["weights"] == {v2: 100}
    assert "rollout.state" not in version_tags(env, model, v2)
