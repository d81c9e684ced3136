"""A paused rollout holds its traffic and still rolls back on harm (issue #14).

`model-rollout pause` tags the candidate `rollout.hold`; the stage's monitor (the real
deferrable trigger, run by dag.test()) keeps judging. Held, a healthy canary stays at 25% past
its window until the hold is lifted, then the rollout goes on and is promoted; a candidate
failing 15% of its requests is rolled back at the canary even while held.
"""

from __future__ import annotations

import threading
import time

import pytest
from support.models import register_iris_version
from support.rollout_env import (
    POLICY,
    champion_serving,
    live_only_failure_seed,
    rollout_env,
    run,
    version_tags,
)

MODELS = ("pz_healthy", "pz_errors")
WINDOW = 10.0  # the test policy's step_duration


@pytest.fixture(scope="module")
def env(mlflow_server, airflow_db, tmp_path_factory):
    with rollout_env(
        mlflow_server,
        tmp_path_factory.mktemp("pz-policies"),
        tmp_path_factory.mktemp("pz-gateway"),
        {m: POLICY.format(shadow="false", kpi="false") for m in MODELS},
    ) as e:
        yield e


def hold(env, model: str, version: str, holder: str) -> None:
    env.registry().set_model_version_tag(model, version, "rollout.hold", holder)


def test_a_paused_rollout_holds_its_traffic_until_resumed(env):
    model = "pz_healthy"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    hold(env, model, v2, "tester")
    seen: dict = {}

    def operator() -> None:
        """Waits for the canary, checks it is still there well past its window, resumes."""
        deadline = time.monotonic() + 300
        canary = {v1: 75, v2: 25}
        while time.monotonic() < deadline:
            if {k: w for k, w in env.route(model)["weights"].items() if w} == canary:
                break
            time.sleep(0.5)
        else:
            seen["error"] = "the canary never started"
            return
        time.sleep(WINDOW + 10.0)  # its window is over: unheld, it would have moved on
        seen["held"] = {k: w for k, w in env.route(model)["weights"].items() if w}
        hold(env, model, v2, "")

    t = threading.Thread(target=operator, daemon=True)
    t.start()
    dr, st, _ = run(env, model, v2)
    t.join(timeout=30)
    assert "error" not in seen, seen
    assert seen["held"] == {v1: 75, v2: 25}, seen  # still the canary, past its window
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), st
    assert st["cutover"] == "success", st
    assert env.route(model)["weights"] == {v2: 100}


def test_a_paused_rollout_still_rolls_back_on_a_degradation(env):
    model = "pz_errors"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(
        env.tracking_uri, model, kind="raises", p=0.15, seed=live_only_failure_seed(0.15)
    )
    hold(env, model, v2, "tester")
    dr, st, _ = run(env, model, v2)
    assert st["canary_25.degraded"] == "success", st
    assert st["rollback.restore_traffic"] == "success", st
    assert env.route(model)["weights"] == {v1: 100}
    assert version_tags(env, model, v2)["rollout.state"] == "rolled_back"
