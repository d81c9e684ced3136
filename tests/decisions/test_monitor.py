"""StageMonitor: one stage's decision, look by look (the code the DAG's trigger runs)."""

from __future__ import annotations

import pytest

from model_rollout.decisions.monitor import NEXT, REVIEW, ROLLBACK, StageMonitor, next_move
from model_rollout.decisions.plan import GUARD, PROOF, Stage, plan_for
from model_rollout.decisions.traffic import Effect, StageStream, Traffic
from model_rollout.policy import Policy

WINDOW = 600.0


def stage(role: str, *, max_duration: float = WINDOW, step: int = 50) -> Stage:
    return Stage(f"step_{step}", "canary", step, WINDOW, max_duration, role, 0, 1)


def monitor(st: Stage, action: str = "pause", **judge) -> StageMonitor:
    return StageMonitor(
        st,
        baseline="1",
        candidate="2",
        since=0.0,
        judge_config=Policy(model="m", judge=judge).judge_settings("canary"),
        alpha_metric=0.05 / 4,
        inconclusive_action=action,
    )


IDENTICAL = Effect()


def stream(rate: float, effect: Effect = IDENTICAL, step: int = 50, seconds: float = 0.0, seed=1):
    s = StageStream(Traffic(rate=rate), effect, mode="canary", step=step, seed=seed)
    if seconds:
        s.advance(seconds)
    return s


def test_next_move_is_the_gates_rule():
    assert next_move("healthy", "pause") == NEXT == next_move("passed", "rollback")
    assert next_move("inconclusive", "pause") == REVIEW
    assert next_move("inconclusive", "rollback") == ROLLBACK
    assert next_move("invalid", "pause") == REVIEW  # a broken split says nothing of the model
    assert next_move("invalid", "rollback") == ROLLBACK
    for bad in ("degraded", "failed", None):
        assert next_move(bad, "pause") == ROLLBACK


def test_a_degradation_ends_the_stage_at_once_whatever_the_window():
    m = monitor(stage(GUARD))
    s = stream(200, Effect(crash_share=0.2))
    out = None
    t = 0.0
    while out is None and t < WINDOW:
        s.advance(10)
        t += 10
        out = m.look(s.snapshot(), now=t)
    assert out is not None and out["outcome"] == "degraded", out
    assert t < 60 and "errors" in out["reason"]
    assert out["verdict"]["status"] == "degraded"


def test_a_guard_goes_on_at_the_window_end_without_proof():
    m = monitor(stage(GUARD))
    s = stream(2)  # 2 req/s: nothing can be proven, no harm is shown
    outs = []
    for t in range(10, int(WINDOW) + 10, 10):
        s.advance(10)
        outs.append(m.look(s.snapshot(), now=float(t)))
    assert all(o is None for o in outs[:-1])
    assert outs[-1]["outcome"] == "passed" and outs[-1]["role"] == "guard"
    assert "No degradation shown in 10 min" in outs[-1]["reason"]


def test_a_guard_without_candidate_traffic_is_undecided_not_passed():
    m = monitor(stage(GUARD), action="rollback")
    s = stream(200, step=50)
    s.advance(WINDOW)
    snap = s.snapshot()
    snap["arms"] = snap["arms"][:1]  # the candidate never answered
    out = m.look(snap, now=WINDOW)
    assert out["outcome"] == "inconclusive"
    assert "served no requests" in out["reason"] and "Rolling back" in out["reason"]


def test_the_proof_remembers_metrics_shown_healthy_no_flicker_at_the_last_look():
    m = monitor(stage(PROOF))
    s = stream(2000)
    s.advance(300)
    assert m.look(s.snapshot(), now=300.0) is None  # all shown within tolerance, window not over
    assert {"errors", "latency", "latency_tail"} <= m.shown_healthy
    # the last look sees less (here: an early snapshot again): what was shown stays shown
    early = stream(2000, seconds=20).snapshot()
    out = m.look(early, now=WINDOW)
    assert m.judge(early).status != "healthy"
    assert out["outcome"] == "healthy", out["reason"]
    assert out["shown_healthy"] == ["errors", "latency", "latency_tail"]


def test_an_undecided_proof_says_how_long_it_would_need_then_pauses():
    m = monitor(stage(PROOF), action="pause")
    s = stream(20)
    for t in range(10, int(WINDOW) + 10, 10):
        s.advance(10)
        out = m.look(s.snapshot(), now=float(t))
    assert out["outcome"] == "inconclusive"
    assert out["needed_seconds"] and out["needed_seconds"] > 600
    assert "more traffic" in out["reason"] and "Paused for a human decision" in out["reason"]


def test_extend_keeps_watching_until_the_evidence_is_there():
    m = monitor(stage(PROOF, max_duration=3 * WINDOW), action="pause")
    s = stream(200)
    s.advance(WINDOW)  # at 50% of 200 req/s: 0.1% errors not yet shown within a doubling
    first = m.look(s.snapshot(), now=WINDOW)
    if first is not None:  # the draw was lucky: already proven
        assert first["outcome"] == "healthy"
        return
    assert m.extended_until == 3 * WINDOW and m.needed_seconds is not None
    out, t = None, WINDOW
    while out is None:
        s.advance(10)
        t += 10
        out = m.look(s.snapshot(), now=t)
    assert out["outcome"] == "healthy", out["reason"]
    assert WINDOW < t <= 3 * WINDOW


@pytest.mark.parametrize("action", ["pause", "rollback"])
def test_plan_gives_every_monitor_its_stage_and_one_alpha(action):
    policy = Policy(model="m", on_inconclusive=action)
    plan = plan_for(policy)
    assert [s.role for s in plan.stages] == ["guard", "guard", "guard", "proof"]
    assert all(s.max_duration == s.window for s in plan.stages)  # no extension without extend
    assert plan.alpha_per_test == pytest.approx(0.05 / len(plan.tests))
    assert plan.tests == (
        "shadow.errors",
        "shadow.shadow_agreement",
        "shadow.output_drift",
        "canary.errors",
        "canary.latency",
        "canary.latency_tail",
        "canary.kpi",
    )


def kpi_stream(step: int = 25) -> StageStream:
    """Expected counts (no draws): a KPI 10% lower, which 10 minutes at 25% of 200 req/s
    nearly show beyond the 5% margin but do not yet show."""
    traffic = Traffic(rate=200, feedback_share=1.0)
    return StageStream(traffic, Effect(kpi_factor=0.9), mode="canary", step=step, expected=True)


def guard_at(position: int, *, max_duration: float) -> Stage:
    return Stage("step_25", "canary", 25, WINDOW, max_duration, GUARD, position, 3)


def look_until(m: StageMonitor, s: StageStream, until: float, start: float = 0.0):
    out, t = None, start
    while out is None and t < until:
        s.advance(10)
        t += 10
        out = m.look(s.snapshot(), now=t)
    return out, t


def test_the_last_guard_holds_while_harm_is_nearly_shown_and_the_evidence_settles_it():
    plan = plan_for(Policy(model="m"))
    assert [s.name for s in plan.stages if s.holds_on_suspicion] == ["shadow", "step_25"]
    early, last = (
        monitor(guard_at(0, max_duration=3 * WINDOW)),
        monitor(guard_at(1, max_duration=3 * WINDOW)),
    )
    assert not early.stage.holds_on_suspicion and last.stage.holds_on_suspicion
    s_early, s_last = kpi_stream(), kpi_stream()
    out_early, _ = look_until(early, s_early, WINDOW)
    out_last, _ = look_until(last, s_last, WINDOW)
    kpi = early.judge(s_early.snapshot()).metrics["kpi"]
    assert kpi.status == "inconclusive" and kpi.threshold / 3 <= kpi.value < kpi.threshold
    # an early guard goes on (the next step sees more, faster); the last one holds its share
    assert out_early["outcome"] == "passed"
    assert out_last is None and last.leaning == ["kpi"]
    assert last.progress(s_last.snapshot(), now=WINDOW)["leaning"] == ["kpi"]
    assert early.progress(s_early.snapshot(), now=WINDOW)["leaning"] == []
    out, t = look_until(last, s_last, 3 * WINDOW, start=WINDOW)
    assert out is not None and out["outcome"] == "degraded", out
    assert "kpi" in out["reason"] and WINDOW < t < 3 * WINDOW


@pytest.mark.parametrize(
    ("action", "ending"), [("pause", "Paused for a human decision."), ("rollback", "Rolling back.")]
)
def test_a_hold_that_the_evidence_does_not_settle_ends_with_the_policys_action(action, ending):
    m = monitor(guard_at(1, max_duration=WINDOW + 30), action=action)
    out, t = look_until(m, kpi_stream(), 2 * WINDOW)
    assert out["outcome"] == "inconclusive" and t == WINDOW + 30
    assert out["reason"].startswith("Held at this step for 10 min (its max duration)")
    assert "kpi log e-value" in out["reason"] and out["reason"].endswith(ending)
    assert next_move(out["outcome"], action) == (REVIEW if action == "pause" else ROLLBACK)
