"""What each stage of a policy needs at a given traffic, and how long a rollout should take.

The planner replays the policy's stages on the *expected* counts of a candidate as good as the
incumbent (`traffic.StageStream(expected=True)`) and asks the same judge the monitor asks when
the proof step would have shown every metric within tolerance. That is the median time for a
good candidate; noise makes some take longer. The evidence grows about linearly with traffic
while its noise grows with its square root, so ~95% of good candidates decide by the time the
expected evidence is SAFETY = 2.3 times what the median needs (normal approximation of a
one-sided 5% shortfall at the usual e-value thresholds). The recommendation is for the proof
step (at the largest share a minute of it brings more evidence than a minute of any earlier
step): a window of the median's time, and a max duration of the 95% time, which the extension
uses only when the evidence is late. `model-rollout simulate` checks it with draws.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from model_rollout.decisions.monitor import StageMonitor
from model_rollout.decisions.plan import PROOF, RolloutPlan, Stage, plan_for
from model_rollout.decisions.projection import scaled
from model_rollout.decisions.traffic import BASELINE, CANDIDATE, Effect, StageStream, Traffic
from model_rollout.policy import Policy

SAFETY = 2.3
MAX_SCALE = 1000.0


@dataclass(frozen=True)
class StageRow:
    """One stage of the plan."""

    stage: str
    role: str
    step: int | None
    window_minutes: float
    max_minutes: float
    candidate_requests: float  # expected in the window (shadow: mirrored copies)
    candidate_errors: float
    decides_minutes: float | None  # proof: expected time to show every metric; guard: window
    note: str


@dataclass(frozen=True)
class PlanReport:
    """The plan of one policy at one traffic."""

    model: str
    traffic: dict
    alpha_per_test: float
    tests: list[str]
    stages: list[StageRow]
    expected_minutes: float | None  # to a promotion of a good candidate (median)
    windows_minutes: float
    recommended_proof_window_minutes: float | None
    recommended_max_stage_minutes: float | None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _stream(traffic: Traffic, stage: Stage, seconds: float) -> StageStream:
    s = StageStream(traffic, Effect(), mode=stage.mode, step=stage.step, expected=True)
    s.advance(seconds)
    return s


def _monitor(policy: Policy, plan: RolloutPlan, stage: Stage) -> StageMonitor:
    return StageMonitor(
        stage,
        baseline=BASELINE,
        candidate=CANDIDATE,
        since=0.0,
        judge_config=policy.judge_settings(stage.mode),
        alpha_metric=plan.alpha_per_test,
        inconclusive_action=policy.inconclusive_action,
    )


def _proven(monitor: StageMonitor, snapshot: dict, earlier: list[dict]) -> bool:
    v = monitor.judge(snapshot, earlier)
    return all(m.status in ("healthy", "not_applicable") for m in v.metrics.values())


def proof_seconds(policy: Policy, traffic: Traffic, *, deflate: float = 1.0) -> float | None:
    """Seconds into the proof step until a good candidate's expected evidence shows every
    metric within tolerance (counts divided by `deflate`); None if not within MAX_SCALE windows."""
    plan = plan_for(policy)
    proof = next((s for s in plan.stages if s.role == PROOF), None)
    if proof is None:
        return 0.0
    earlier = [
        scaled(_stream(traffic, s, s.window).snapshot(), 1 / deflate)
        for s in plan.earlier_in_phase(proof)
    ]
    monitor = _monitor(policy, plan, proof)

    def proven_at(t: float) -> bool:
        return _proven(monitor, scaled(_stream(traffic, proof, t).snapshot(), 1 / deflate), earlier)

    lo, hi = 0.0, proof.window
    while not proven_at(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_SCALE * proof.window:
            return None
    while hi - lo > max(policy.poll_interval, 0.01 * hi):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if proven_at(mid) else (mid, hi)
    return hi


def plan_rollout(policy: Policy, traffic: Traffic) -> PlanReport:
    """The plan: every stage's expected traffic and decision time, warnings, a recommendation."""
    plan = plan_for(policy)
    rows: list[StageRow] = []
    warnings: list[str] = []
    proof_t = proof_seconds(policy, traffic)
    total = 0.0
    for stage in plan.stages:
        snap = _stream(traffic, stage, stage.window).snapshot()
        cand = snap["arms"][1]
        if stage.role == PROOF:
            decides = None if proof_t is None else max(proof_t, stage.window)
            if proof_t is None:
                note = "cannot show every metric within tolerance at this traffic"
            elif proof_t <= stage.window:
                note = f"shows every metric within tolerance after ~{proof_t / 60:.1f} min"
            elif proof_t <= stage.max_duration:
                note = (
                    f"needs ~{proof_t / 60:.1f} min, longer than its window: extended "
                    f"(up to {stage.max_duration / 60:.0f} min)"
                )
            else:
                note = (
                    f"needs ~{proof_t / 60:.1f} min, beyond its max duration "
                    f"({stage.max_duration / 60:.0f} min): good candidates end "
                    f"{policy.inconclusive_action}d"
                )
        else:
            decides = stage.window
            note = "guard: goes on at the window's end unless a degradation is shown"
            if cand["requests"] < 1:
                note = "guard: the candidate would see no request in the window"
                warnings.append(f"{stage.name}: less than one candidate request per window")
        rows.append(
            StageRow(
                stage.name,
                stage.role,
                stage.step,
                stage.window / 60,
                stage.max_duration / 60,
                cand["requests"],
                cand["errors"],
                None if decides is None else decides / 60,
                note,
            )
        )
        total = (
            math.nan
            if decides is None or math.isnan(total)
            else total + min(decides, stage.max_duration)
        )
    windows = sum(s.window for s in plan.stages) / 60
    proof = next((s for s in plan.stages if s.role == PROOF), None)
    safe = proof_seconds(policy, traffic, deflate=SAFETY) if proof is not None else None
    recommended_window = recommended_max = None
    if proof is not None and proof_t is not None and safe is not None:
        recommended_window = math.ceil(max(proof_t, proof.window) / 60)
        recommended_max = math.ceil(max(safe, proof_t, proof.window) / 60)
    if proof is not None and (proof_t is None or proof_t > proof.window):
        warnings.append(
            f"{proof.name}: its {proof.window / 60:.0f} min window is too short for the "
            "tolerances at this traffic"
            + (
                f" (a good candidate needs ~{proof_t / 60:.0f} min)"
                if proof_t is not None
                else " (no window would do: widen a tolerance or raise the traffic)"
            )
        )
    if recommended_max is not None and (
        recommended_window * 60 > proof.window or recommended_max * 60 > proof.max_duration
    ):
        warnings.append(
            f"recommended: step_durations: {{{proof.step}: {recommended_window}m}} and "
            f"max_stage_duration: {recommended_max}m (now {proof.window / 60:.0f} and "
            f"{proof.max_duration / 60:.0f} min): a good candidate then decides in about "
            f"{proof_t / 60:.0f} min of the {proof.step}% step, ~95% of them within "
            f"{recommended_max} min"
        )
    return PlanReport(
        model=policy.model,
        traffic=asdict(traffic),
        alpha_per_test=plan.alpha_per_test,
        tests=list(plan.tests),
        stages=rows,
        expected_minutes=None if math.isnan(total) else total / 60,
        windows_minutes=windows,
        recommended_proof_window_minutes=recommended_window,
        recommended_max_stage_minutes=recommended_max,
        warnings=warnings,
    )
