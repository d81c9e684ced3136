"""The DAG factory's shape for each policy variant (no servers needed)."""

from __future__ import annotations

import pytest

from model_rollout.orchestration.dag_factory import build_all, build_rollout_dag
from model_rollout.policy import Policy


def rules(dag) -> dict[str, str]:
    return {t.task_id: str(t.trigger_rule.value) for t in dag.tasks}


def test_default_policy_reads_like_the_flow():
    dag = build_rollout_dag(Policy(model="m"))
    assert dag.dag_id == "model_rollout__m" and dag.max_active_runs == 1
    ids = set(dag.task_ids)
    for group in ("shadow", "canary_5", "step_25", "step_50"):
        assert {f"{group}.monitor", f"{group}.gate", f"{group}.degraded"} <= ids, group
    assert "step_100.monitor" not in ids  # 100% is the cutover, not a judged step
    r = rules(dag)
    assert r["staging.gate"] == r["canary_5.gate"] == "none_skipped"
    assert r["rollback.failure_detected"] == "one_failed"
    assert r["rollback.start"] == "one_success"
    assert r["cutover"] == "none_failed_min_one_success"
    # a branching gate must never be a direct upstream of the failure detector (it would skip it)
    for gate in (t for t in dag.tasks if t.task_id.endswith(".gate")):
        assert "rollback.failure_detected" not in gate.downstream_task_ids
    # extend, then pause: an undecided stage ends in a human review (approve goes on)
    assert dag.get_task("step_50.gate").downstream_task_ids == {
        "step_50.proceed",
        "step_50.review",
        "step_50.degraded",
    }
    assert dag.get_task("step_50.proceed").downstream_task_ids == {"cutover"}
    assert dag.get_task("shadow.proceed").downstream_task_ids == {"canary_5.set_traffic"}
    rollback = build_rollout_dag(Policy(model="m", after_max_stage_duration="rollback"))
    assert rollback.get_task("step_50.gate").downstream_task_ids == {
        "cutover",
        "step_50.degraded",
    }
    assert rollback.get_task("shadow.gate").downstream_task_ids == {
        "canary_5.set_traffic",
        "shadow.degraded",
    }
    assert dag.get_task("rollback.start").upstream_task_ids == {
        "shadow.degraded",
        "canary_5.degraded",
        "step_25.degraded",
        "step_50.degraded",
        "rollback.failure_detected",
    }


def test_monitors_are_deferrable_with_the_policy_windows_roles_and_evidence():
    policy = Policy(
        model="m",
        step_duration=30,
        step_durations={25: 45},
        shadow={"duration": 7},
        max_stage_duration=100,
    )
    dag = build_rollout_dag(policy)
    shadow, first = dag.get_task("shadow.monitor"), dag.get_task("canary_5.monitor")
    step25, step50 = dag.get_task("step_25.monitor"), dag.get_task("step_50.monitor")
    assert (shadow.stage.window, first.stage.window, step25.stage.window) == (7, 30, 45)
    assert {m.stage.max_duration for m in (shadow, first, step25, step50)} == {100}
    # early steps guard, the last one proves; evidence carries over within the live phase
    assert [m.stage.role for m in (shadow, first, step25, step50)] == [
        "guard",
        "guard",
        "guard",
        "proof",
    ]
    assert step50.earlier_traffic_task_ids == ["canary_5.set_traffic", "step_25.set_traffic"]
    assert shadow.earlier_traffic_task_ids == [] == first.earlier_traffic_task_ids
    # one alpha for the whole rollout: 3 shadow tests + 4 live tests
    assert step50.alpha_metric == pytest.approx(0.05 / 7) == shadow.alpha_metric
    assert all(dag.get_task(t).deferrable for t in ("shadow.monitor", "canary_5.monitor"))
    # shadows run deprioritised: their latency is judged only when the policy asks
    assert not dag.get_task("shadow.monitor").judge_config["latency"]["enabled"]
    assert dag.get_task("canary_5.monitor").judge_config["latency"]["enabled"]


def test_no_shadow_starts_at_the_canary():
    dag = build_rollout_dag(Policy(model="m", shadow={"enabled": False}, steps=[10, 100]))
    assert not any(t.startswith("shadow.") for t in dag.task_ids)
    assert "canary_10.set_traffic" in dag.get_task("staging.gate").downstream_task_ids


def test_approval_and_pause_add_human_reviews():
    dag = build_rollout_dag(
        Policy(model="m", steps=[10, 100], on_inconclusive="pause", approval={"required": True})
    )
    assert {"shadow.review", "shadow.proceed", "canary_10.review", "approval"} <= set(dag.task_ids)
    assert dag.get_task("canary_10.set_traffic").upstream_task_ids == {
        "shadow.proceed",
        "shadow.review",
    }
    assert dag.get_task("cutover").upstream_task_ids == {"approval", "staging.first_rollout"}
    assert type(dag.get_task("approval")).__name__ == "ApprovalOperator"


def test_invalid_policy_gets_a_failing_dag_and_others_still_build(tmp_path):
    (tmp_path / "good.yaml").write_text("steps: [10, 100]\n")
    (tmp_path / "bad.yaml").write_text("steps: [10, 50]\n")
    dags = build_all(str(tmp_path))
    assert set(dags) == {"model_rollout__good", "model_rollout__bad"}
    bad = dags["model_rollout__bad"]
    assert "invalid-policy" in bad.tags
    assert (
        "bad.yaml" in bad.doc_md
        and "field 'steps'" in bad.doc_md
        and "last step to be 100" in bad.doc_md
    )
    from model_rollout.policy import PolicyError

    with pytest.raises(PolicyError, match="last step to be 100"):
        bad.get_task("policy_invalid").python_callable()
