"""One stage's decision, look by look: the code the DAG's monitor runs and the simulator runs.

Each look judges the stage (with the earlier stages of its phase as evidence) and returns an
outcome or None (keep watching):

- degraded / invalid (sample ratio mismatch): at once, whatever the window.
- guard stage, window over: "passed" unless harm was shown (the candidate must have served),
  or, for a guard that `holds_on_suspicion`, nearly shown (`leaning_degraded`): that step holds
  its traffic until the evidence settles it, up to the stage's max duration, then
  "inconclusive" (the policy's action).
- proof stage: "healthy" once every applicable metric has been shown within tolerance at some
  look of the stage (each metric's test is anytime-valid, so a metric shown healthy stays
  shown: a later look's noise cannot take it back, and no flicker at the window's last look
  costs an extension).
- undecided at the window's end: the projection says how much longer it would take at the
  observed rates; `extend` keeps watching up to the stage's max duration when a candidate as
  good as the incumbent would decide in that time (the candidate's own estimates are noisy),
  else (and for pause / rollback) the outcome is "inconclusive" with that number in the reason.

State (metrics shown healthy, the extension) lives in the object: a restarted trigger starts a
new one and re-derives what it can from the data, which is all counted from the stage's start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from model_rollout.decisions.plan import GUARD, Stage
from model_rollout.decisions.projection import as_baseline, needed_factor

NEXT = "next"
REVIEW = "review"
ROLLBACK = "rollback"
ACTION_TEXT = {"pause": " Paused for a human decision.", "rollback": " Rolling back."}


def next_move(outcome: str | None, inconclusive_action: Literal["pause", "rollback"]) -> str:
    """Where a stage's outcome leads: the next stage, a human review, or the rollback."""
    if outcome in ("healthy", "passed"):
        return NEXT
    # invalid (the observed split is not the configured one): the comparison says nothing of
    # the candidate, so a human looks at it when the policy has one, as for an undecided stage
    if outcome in ("inconclusive", "invalid") and inconclusive_action == "pause":
        return REVIEW
    return ROLLBACK


def leaning_degraded(verdict) -> list[str]:
    """Metrics whose evidence of harm has come a third of the way to a rollback (log scale).

    Why: a guard step passes when no harm is *shown*, but a regression that is nearly shown
    (e-value >= alpha^(-1/3)) is far likelier harm than noise: a candidate at its tolerance gets
    there with probability at most alpha^(1/3) over the whole stage (Ville's inequality, for the
    e-process metrics), and a candidate as good as the incumbent far less often. Such a guard
    holds its traffic until the evidence settles it either way instead of raising the
    candidate's share; the rollback test itself, and so its error bound, is unchanged. A hold
    the evidence has not settled by the stage's max duration (at once when the policy does not
    `extend`) ends like an undecided proof: the policy's inconclusive action, never "degraded".
    """
    return sorted(
        name
        for name, m in verdict.metrics.items()
        if m.statistic.startswith("log e-value")
        and math.isfinite(m.value)
        and math.isfinite(m.threshold)
        and m.value >= m.threshold / 3
    )


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class StageMonitor:
    """Watches one stage of one rollout.

    :param stage: the stage (window, max duration, role, place in its phase).
    :param baseline: incumbent version; :param candidate: candidate version.
    :param since: unix time the stage's traffic was applied (its window starts there).
    :param judge_config: the policy's judge settings for the stage's mode (a dict).
    :param alpha_metric: the alpha of each of the rollout's tests (`RolloutPlan.alpha_per_test`).
    :param inconclusive_action: "pause" or "rollback" (`Policy.inconclusive_action`).
    """

    def __init__(
        self,
        stage: Stage,
        *,
        baseline: str,
        candidate: str,
        since: float,
        judge_config: Mapping[str, Any],
        alpha_metric: float,
        inconclusive_action: Literal["pause", "rollback"],
    ):
        from model_rollout.judge import Budget, JudgeConfig

        self.stage = stage
        self.baseline, self.candidate = str(baseline), str(candidate)
        self.since = float(since)
        self.config = JudgeConfig.model_validate(dict(judge_config))
        self.budget = Budget(alpha_metric, stage.phase_stages)
        self.inconclusive_action = inconclusive_action
        self.shown_healthy: set[str] = set()
        self.looks = 0
        self.extended_until: float | None = None
        self.needed_seconds: float | None = None
        self.projected_as_baseline = False
        self.leaning: list[str] = []

    # -- the judge ---------------------------------------------------------------------------
    def judge(self, snapshot: Mapping, earlier: Sequence[Mapping] = ()):
        """The judge's verdict on the stage (a `Verdict`), earlier stages as evidence."""
        from model_rollout.judge import evaluate

        return evaluate(
            snapshot,
            baseline=self.baseline,
            candidate=self.candidate,
            mode=self.stage.mode,
            config=self.config,
            earlier=earlier,
            budget=self.budget,
        )

    # -- one look ------------------------------------------------------------------------------
    def look(
        self, snapshot: Mapping, earlier: Sequence[Mapping] = (), *, now: float
    ) -> dict[str, Any] | None:
        """Judge the stage's data so far; the outcome (a JSON-able dict) or None to keep waiting."""
        verdict = self.judge(snapshot, earlier)
        self.looks += 1
        if verdict.status == "degraded":
            return self._outcome("degraded", verdict, verdict.reason, now)
        if verdict.invalid:
            return self._outcome("invalid", verdict, verdict.reason, now)
        complete = "store" not in verdict.checks  # a failing store: counts stop, wait
        for name, m in verdict.metrics.items():
            if m.status == "healthy" and complete:
                self.shown_healthy.add(name)
        if now < self.since + self.stage.window:
            return None
        missing = self.missing(verdict)
        if self.stage.role == GUARD:
            if self._candidate_served(snapshot):
                return self._guard_end(verdict, now)
        elif not missing and complete:
            reason = (
                f"Every metric shown within tolerance ({', '.join(sorted(self.shown_healthy))}) "
                f"on the evidence of {self._served_text(verdict)}."
            )
            return self._outcome("healthy", verdict, reason, now)
        if self.extended_until is not None and now < self.extended_until:
            return None
        hard_end = self.since + self.stage.max_duration
        first = self.extended_until is None
        self.needed_seconds = self.project(snapshot, earlier, now, missing)
        if first and now < hard_end:
            # Extend when a candidate as good as the incumbent would decide in the time left:
            # the observed estimates are noisy (an unlucky draw of a good candidate reads as
            # "needs hours"), and the evidence itself ends the extension as soon as it is there.
            reach = self.needed_seconds
            if self.stage.role != GUARD and missing:
                equal = self.project(snapshot, earlier, now, missing, as_equal=True)
                reach = equal if reach is None or equal is None else min(reach, equal)
            if self.stage.role == GUARD or (reach is not None and now + reach <= hard_end):
                self.extended_until = hard_end  # wait for it (a guard: for traffic), bounded
                return None
        return self._outcome("inconclusive", verdict, self._undecided_reason(missing, now), now)

    def _guard_end(self, verdict, now: float) -> dict[str, Any] | None:
        """A guard whose window is over and whose candidate served: passed, or held."""
        self.leaning = leaning_degraded(verdict) if self.stage.holds_on_suspicion else []
        if not self.leaning:
            reason = (
                f"No degradation shown in {minutes(now - self.since)} "
                f"({self._served_text(verdict)})."
            )
            return self._outcome("passed", verdict, reason, now)
        if now < self.since + self.stage.max_duration:
            return None  # hold: more traffic here settles it, and exposes no one more
        return self._outcome("inconclusive", verdict, self._held_reason(verdict, now), now)

    def missing(self, verdict) -> list[str]:
        """Applicable metrics not yet shown within tolerance in this stage."""
        return sorted(
            name
            for name, m in verdict.metrics.items()
            if m.status != "not_applicable" and name not in self.shown_healthy
        )

    def project(
        self,
        snapshot: Mapping,
        earlier: Sequence[Mapping],
        now: float,
        missing: list[str],
        *,
        as_equal: bool = False,
    ) -> float | None:
        """Seconds more at the observed rates until `missing` are healthy; None if not in sight.

        From the candidate's own estimates; when they show nothing in sight (noise, or an
        estimate beyond tolerance), or with `as_equal`, for a candidate as good as the baseline
        (its rates at the candidate's traffic); `projected_as_baseline` says which was used.
        """
        # counts that lag (a Prometheus scrape) cover only up to `as_of`: the rates are theirs
        as_of = snapshot.get("as_of")
        counted_to = min(now, float(as_of)) if isinstance(as_of, int | float) else now
        elapsed = counted_to - self.since
        if elapsed <= 0 or not self._candidate_served(snapshot):
            return None
        if self.stage.role == GUARD or not missing:
            return 0.0

        def decided(snap: dict) -> bool:
            v = self.judge(snap, earlier)
            return all(v.metrics[m].status in ("healthy", "not_applicable") for m in missing)

        equal = as_baseline(snapshot, self.baseline, self.candidate)
        factor = None if as_equal else needed_factor(decided, snapshot)
        if not as_equal:
            self.projected_as_baseline = factor is None
        if factor is None:
            factor = needed_factor(decided, equal)
        return None if factor is None else (factor - 1.0) * elapsed

    def progress(
        self, snapshot: Mapping, earlier: Sequence[Mapping] = (), *, now: float
    ) -> dict[str, Any]:
        """Where a running stage stands (for people, e.g. the Rollouts page): elapsed time, the
        judge's status, the metrics not yet shown within tolerance and, for the proof, how much
        longer that would take at the observed rate. Decides nothing."""
        verdict = self.judge(snapshot, earlier)
        missing = self.missing(verdict) if self.stage.role != GUARD else []
        needed = None
        if missing and verdict.status != "degraded":
            needed = self.project(snapshot, earlier, now, missing)
        return {
            "stage": self.stage.name,
            "role": self.stage.role,
            "elapsed_seconds": now - self.since,
            "window_seconds": self.stage.window,
            "max_seconds": self.stage.max_duration,
            "status": verdict.status,
            "reason": verdict.reason,
            "missing": missing,
            "leaning": leaning_degraded(verdict) if self.stage.holds_on_suspicion else [],
            "needed_seconds": needed,
            "needed_as_baseline": self.projected_as_baseline,
        }

    # -- outcome ---------------------------------------------------------------------------------
    def _candidate_served(self, snapshot: Mapping) -> bool:
        from model_rollout.judge.snapshot import find_arm

        arm = "shadow" if self.stage.mode == "shadow" else "primary"
        cand = find_arm(snapshot, self.candidate, arm)
        return cand is not None and bool(cand.requests)

    @staticmethod
    def _served_text(verdict) -> str:
        errors = verdict.metrics.get("errors")
        samples = errors.samples if errors is not None else {}
        nc, nb = samples.get("candidate_requests"), samples.get("baseline_requests")
        if nc is None or nb is None:
            return "the traffic so far"
        return f"{nc:,.0f} candidate and {nb:,.0f} baseline requests"

    def _held_reason(self, verdict, now: float) -> str:
        evidence = "; ".join(
            f"{name} log e-value {verdict.metrics[name].value:.1f} of "
            f"{verdict.metrics[name].threshold:.1f} for a rollback"
            for name in self.leaning
        )
        return (
            f"Held at this step for {minutes(now - self.since)} (its max duration): the evidence "
            f"leans towards a degradation without showing it ({evidence}), so the candidate's "
            f"share was not raised.{ACTION_TEXT[self.inconclusive_action]}"
        )

    def _undecided_reason(self, missing: list[str], now: float) -> str:
        stage, elapsed = self.stage, now - self.since
        what = ", ".join(missing) if missing else "the candidate's traffic"
        head = f"Not yet shown within tolerance after {minutes(elapsed)}: {what}."
        if self.stage.role == GUARD:  # a guard is undecided only without candidate traffic
            head = f"The candidate served no requests in {minutes(elapsed)}: nothing to judge."
        needed = self.needed_seconds
        if needed is None:
            need = (
                " No amount of traffic at the observed rate would show it (the candidate serves "
                "nothing, or even a candidate as good as the baseline could not be told apart "
                "from the tolerance)."
            )
        elif self.projected_as_baseline:
            need = (
                f" At the observed rate a candidate as good as the baseline needs about "
                f"{minutes(needed)} more traffic (this one's estimates do not yet show it as good)."
            )
        else:
            need = f" At the observed rate it needs about {minutes(needed)} more traffic."
        bound = stage.max_duration
        if needed is not None and elapsed + needed > bound and bound > stage.window:
            need += f" That is beyond the stage's max duration of {minutes(bound)}."
        return head + need + ACTION_TEXT[self.inconclusive_action]

    def _outcome(self, outcome: str, verdict, reason: str, now: float) -> dict[str, Any]:
        elapsed = now - self.since
        needed = self.needed_seconds
        return {
            "outcome": outcome,
            "stage": self.stage.name,
            "role": self.stage.role,
            "reason": reason,
            "looks": self.looks,
            "elapsed_seconds": elapsed,
            "needed_seconds": None if needed is None or not math.isfinite(needed) else needed,
            "shown_healthy": sorted(self.shown_healthy),
            "verdict": verdict.to_json(),
        }
