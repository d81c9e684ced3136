"""Whole rollouts simulated through the product's own decision code.

Each run walks the policy's stages (`plan_for`), draws the stage's traffic interval by interval
(`traffic.StageStream`, one look per poll interval) and asks the very `StageMonitor` the DAG's
monitor runs; `next_move` (the gate's rule) says whether the rollout goes on, pauses for a human
or rolls back. Only the time between looks is simulated, not Airflow's task overhead.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from model_rollout.decisions.monitor import NEXT, REVIEW, StageMonitor, next_move
from model_rollout.decisions.plan import plan_for
from model_rollout.decisions.traffic import BASELINE, CANDIDATE, Effect, StageStream, Traffic
from model_rollout.policy import Policy

PROMOTED, ROLLED_BACK, PAUSED = "promoted", "rolled_back", "paused"


@dataclass(frozen=True)
class RunResult:
    """How one simulated rollout ended."""

    outcome: str  # promoted | rolled_back | paused
    seconds: float  # from the first stage's start to the decision
    stage: str  # the stage that decided (the last one for a promotion)
    reason: str
    candidate_requests: float  # live requests the candidate answered (shadow copies excluded)
    needed_seconds: float | None = None  # for undecided stages: what the projection said


def simulate_rollout(policy: Policy, traffic: Traffic, effect: Effect, seed=0) -> RunResult:
    """One rollout; the same seed gives the same traffic."""
    plan = plan_for(policy)
    earlier: dict[str, list[dict]] = {"shadow": [], "canary": []}
    draw = np.random.default_rng([int(seed), 1 << 20])  # per run, whatever the stages
    phase = float(draw.uniform(0, 2 * math.pi))
    first_live = next((s for s in plan.stages if s.mode == "canary"), None)
    burst_at = float(draw.uniform(0, first_live.window)) if first_live and effect.burst else None
    t = 0.0
    served = 0.0
    out: dict = {}
    for index, stage in enumerate(plan.stages):
        stream = StageStream(
            traffic,
            effect,
            mode=stage.mode,
            step=stage.step,
            seed=[int(seed), index],
            start=t,
            phase=phase,
            burst_at=burst_at if stage is first_live else None,
        )
        monitor = StageMonitor(
            stage,
            baseline=BASELINE,
            candidate=CANDIDATE,
            since=t,
            judge_config=policy.judge_settings(stage.mode),
            alpha_metric=plan.alpha_per_test,
            inconclusive_action=policy.inconclusive_action,
        )
        start = t
        out = None
        while out is None:
            stream.advance(policy.poll_interval)
            t += policy.poll_interval
            out = monitor.look(stream.snapshot(), earlier[stage.mode], now=t)
            if t - start > stage.max_duration + 10 * policy.poll_interval:  # pragma: no cover
                raise RuntimeError(f"stage {stage.name} never ended: {monitor.__dict__}")
        snapshot = stream.snapshot()
        if stage.mode == "canary":
            served += snapshot["arms"][1]["requests"]
        move = next_move(out["outcome"], policy.inconclusive_action)
        if move == NEXT:
            earlier[stage.mode].append(snapshot)
            continue
        result = PAUSED if move == REVIEW else ROLLED_BACK
        return RunResult(
            result, t, stage.name, f"{stage.name}: {out['reason']}", served, out["needed_seconds"]
        )
    last = plan.stages[-1].name if plan.stages else "cutover"
    return RunResult(PROMOTED, t, last, f"{last}: {out.get('reason', '')}", served)


def _run(args) -> RunResult:
    policy, traffic, effect, seed = args
    return simulate_rollout(policy, traffic, effect, seed)


@dataclass(frozen=True)
class Summary:
    """Many rollouts of one scenario: shares of each end, with Wilson intervals, and times."""

    runs: int
    promoted: float
    rolled_back: float
    paused: float
    intervals: dict[str, tuple[float, float]]
    median_decision_minutes: float
    p90_decision_minutes: float
    median_rollback_minutes: float | None
    stages: dict[str, int]  # deciding stage of the rollbacks and pauses -> runs
    example_reasons: dict[str, str]
    median_candidate_requests_at_rollback: float | None

    def to_json(self) -> dict:
        return asdict(self)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(results: list[RunResult]) -> Summary:
    n = len(results)
    counts = {k: sum(r.outcome == k for r in results) for k in (PROMOTED, ROLLED_BACK, PAUSED)}
    minutes = sorted(r.seconds / 60 for r in results)
    rollbacks = sorted(r.seconds / 60 for r in results if r.outcome == ROLLED_BACK)
    stages: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for r in results:
        if r.outcome != PROMOTED:
            key = f"{r.outcome}@{r.stage}"
            stages[key] = stages.get(key, 0) + 1
            reasons.setdefault(key, r.reason)
    served = [r.candidate_requests for r in results if r.outcome == ROLLED_BACK]
    return Summary(
        runs=n,
        promoted=counts[PROMOTED] / n,
        rolled_back=counts[ROLLED_BACK] / n,
        paused=counts[PAUSED] / n,
        intervals={k: wilson(v, n) for k, v in counts.items()},
        median_decision_minutes=statistics.median(minutes),
        p90_decision_minutes=minutes[min(n - 1, math.ceil(0.9 * n) - 1)],
        median_rollback_minutes=statistics.median(rollbacks) if rollbacks else None,
        stages=stages,
        example_reasons=reasons,
        median_candidate_requests_at_rollback=statistics.median(served) if served else None,
    )


def simulate(
    policy: Policy,
    traffic: Traffic,
    effect: Effect,
    *,
    runs: int,
    seed: int = 0,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[RunResult]:
    """`runs` rollouts (seeds seed .. seed + runs - 1), on `jobs` processes (default: cores, at
    most 2 here is the usual machine), reporting progress as (done, runs)."""
    jobs = jobs or min(os.cpu_count() or 1, 4)
    args = [(policy, traffic, effect, seed + i) for i in range(runs)]
    results: list[RunResult] = []
    if jobs <= 1 or runs < 8:
        for a in args:
            results.append(_run(a))
            if progress:
                progress(len(results), runs)
        return results
    with ProcessPoolExecutor(jobs) as pool:
        for r in pool.map(_run, args, chunksize=max(1, runs // (jobs * 8))):
            results.append(r)
            if progress:
                progress(len(results), runs)
    return results


def print_progress(done: int, total: int) -> None:
    """A progress line on stderr (long simulations)."""
    if done == total or done % max(1, total // 20) == 0:
        print(f"\r  {done}/{total} rollouts", end="\n" if done == total else "", file=sys.stderr)
