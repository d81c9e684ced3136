"""The judge's entry point: the stages of a phase in, one verdict out; pure, no I/O.

Alpha. A rollout is a set of tests fixed by its configuration: each metric of the shadow phase,
and each metric of the live (canary) phase, is one test over that whole phase however many
stages and looks it takes. `Budget.alpha_metric` is the alpha each test gets; the caller splits
the rollout's alpha evenly (Bonferroni on e-values: each test rolls back at e >= 1 / alpha_metric).
Why not average the e-values (also valid)? The average only wins when several metrics degrade a
little at once; Bonferroni keeps each metric's verdict valid on its own, so the evidence can say
*which* metric failed. The set of tests depends only on the configuration, never on the data,
which is what keeps the split valid across looks, stages and extensions.

Stages. A live phase has several steps (5% -> 25% -> 50%) of the same candidate. Error and tail
counts and the KPI pool every stage's evidence (each stage with its own share); the latency shift
is judged on the current stage with alpha_metric / stages (latency depends on load, and the load
changes with the step). Without a budget, one snapshot is one whole phase (the old contract).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..snapshot_schema import SNAPSHOT_SCHEMA
from .config import JudgeConfig
from .errors import judge_errors
from .kpi import judge_kpi
from .latency import judge_latency, judge_latency_tail
from .shadow import judge_agreement, judge_output_drift
from .snapshot import (
    ArmStats,
    Stage,
    configured_share,
    empty_arm,
    find_arm,
    find_pair,
    store_problem,
)
from .srm import check_split
from .verdict import DEGRADED, INCONCLUSIVE, MetricResult, Verdict, combine


@dataclass(frozen=True)
class Budget:
    """The alpha of each metric's test over its whole phase, and the phase's number of stages."""

    alpha_metric: float
    stages: int = 1


def evaluate(
    snapshot: dict,
    *,
    baseline: str,
    candidate: str,
    mode: Literal["canary", "shadow"],
    config: JudgeConfig,
    earlier: Sequence[Mapping] = (),
    budget: Budget | None = None,
) -> Verdict:
    """Judge the candidate arm against the baseline arm; `snapshot` is the current stage.

    canary: both arms are `primary` entries, the configured split is `snapshot["weights"]`.
    shadow: the baseline is the incumbent's `primary` arm, the candidate its `shadow` arm, and
    the paired predictions come from `snapshot["pairs"]`.

    :param earlier: snapshots of the phase's earlier stages, oldest first, each covering its
        stage's time range and carrying that stage's `weights`.
    :param budget: alpha per metric and stages of the phase; default: `config.alpha` split over
        the metrics in force, `len(earlier) + 1` stages.

    Bad or degenerate data never raise: they give an inconclusive verdict saying what is wrong.
    A snapshot whose `store` says the gateway's writes were failing is inconclusive with that
    reason, never "healthy" (its counts stop where the failures began); "degraded" stands, since
    evidence in an earlier look stays valid.
    """
    if mode not in ("canary", "shadow"):
        raise ValueError(f"mode must be 'canary' or 'shadow', got {mode!r}")
    if not isinstance(config, JudgeConfig):
        raise TypeError(f"config must be a JudgeConfig, got {type(config).__name__}")
    baseline, candidate = str(baseline), str(candidate)
    in_force = config.metrics_in_force(mode)
    if budget is None:
        budget = Budget(config.alpha / max(len(in_force), 1), len(earlier) + 1)
    header: dict[str, Any] = dict(
        mode=mode,
        baseline=baseline,
        candidate=candidate,
        alpha=config.alpha,
        alpha_per_metric=budget.alpha_metric,
    )

    def stop(reason: str, invalid: bool = False, **checks: Any) -> Verdict:
        return Verdict(INCONCLUSIVE, reason, {}, invalid=invalid, checks=checks, **header)

    if not isinstance(snapshot, Mapping):
        return stop("The snapshot is not a JSON object.")
    if baseline == candidate:
        return stop(f"Baseline and candidate are the same version ({baseline}).")
    try:
        return _judge(
            snapshot, earlier, baseline, candidate, mode, config, in_force, budget, header
        )
    except Exception as exc:  # pragma: no cover - last resort, the tests keep it unreachable
        return stop(f"The snapshot could not be judged ({type(exc).__name__}: {exc}).")


def _earlier_stage(snapshot: Any, baseline: str, candidate: str, arm: str) -> Stage | None:
    """A finished stage's arms (absent arms served nothing); None when it cannot be used."""
    if not isinstance(snapshot, Mapping):
        return None
    base = find_arm(snapshot, baseline, "primary") or empty_arm(baseline, "primary")
    cand = find_arm(snapshot, candidate, arm) or empty_arm(candidate, arm)
    rho = configured_share(snapshot, baseline, candidate) if arm == "primary" else None
    return Stage(base, cand, rho if rho is not None else _observed_share(base, cand))


def _judge(snapshot, earlier, baseline, candidate, mode, config, in_force, budget, header):
    candidate_arm = "primary" if mode == "canary" else "shadow"
    schema = snapshot.get("schema", 1)
    if (
        not isinstance(schema, int)
        or isinstance(schema, bool)
        or not 1 <= schema <= SNAPSHOT_SCHEMA
    ):
        reason = (
            f"The snapshot's schema {schema!r} is not one this judge reads (1..{SNAPSHOT_SCHEMA}): "
            "the metric source is newer than model_rollout, or not a model_rollout source."
        )
        return Verdict(INCONCLUSIVE, reason, {}, **header)
    base = find_arm(snapshot, baseline, "primary")
    cand = find_arm(snapshot, candidate, candidate_arm)
    missing = [
        f"{arm} arm of version {v}"
        for v, arm, found in ((baseline, "primary", base), (candidate, candidate_arm, cand))
        if found is None
    ]
    if missing:
        reason = f"The snapshot has no {' and no '.join(missing)}."
        return Verdict(INCONCLUSIVE, reason, {}, **header)

    checks: dict[str, Any] = {}
    invalid_reason = None
    if mode == "canary":
        rho = configured_share(snapshot, baseline, candidate)
        if rho is None:
            invalid_reason = (
                f"The snapshot's weights give no positive share to both {baseline} and "
                f"{candidate}; the split cannot be checked."
            )
        elif config.srm.enabled and base.requests is not None and cand.requests is not None:
            srm = check_split(base.requests, cand.requests, rho, config.srm)
            checks["srm"] = srm.to_json()
            if srm.mismatch:
                invalid_reason = srm.reason
    else:
        rho = _observed_share(base, cand)
    if rho is None:
        rho = _observed_share(base, cand)
    checks["traffic_share"] = rho
    stages = [
        s
        for s in (_earlier_stage(e, baseline, candidate, candidate_arm) for e in earlier)
        if s is not None
    ]
    stages.append(Stage(base, cand, rho))
    checks["stages"] = len(stages)

    alpha_metric = budget.alpha_metric
    log_threshold = math.log(1.0 / alpha_metric)
    restarts = max(budget.stages, len(stages))
    min_n = config.min_samples
    results: list[MetricResult] = []
    for name in in_force:
        if name in ("errors", "latency_tail") and rho is None:
            results.append(MetricResult(name, INCONCLUSIVE, "An arm has no traffic yet."))
        elif name == "errors":
            results.append(
                judge_errors(stages, log_threshold, alpha_metric, min_n, config.errors, restarts)
            )
        elif name == "latency":
            results.append(
                judge_latency(base, cand, alpha_metric / restarts, min_n, config.latency)
            )
        elif name == "latency_tail":
            results.append(
                judge_latency_tail(
                    stages, log_threshold, alpha_metric, min_n, config.latency_tail, restarts
                )
            )
        elif name == "kpi":
            results.append(
                judge_kpi(stages, log_threshold, alpha_metric, min_n, config.kpi, restarts)
            )
        elif name == "shadow_agreement":
            pair = find_pair(snapshot, candidate, baseline)
            results.append(
                judge_agreement(base, cand, pair, log_threshold, alpha_metric, min_n, config.shadow)
            )
        elif name == "output_drift":
            results.append(judge_output_drift(base, cand, alpha_metric, min_n, config.output_drift))

    metrics = {r.name: r for r in results}
    incomplete = store_problem(snapshot)
    if incomplete is not None:
        checks["store"] = {"complete": False, "reason": incomplete}
    if invalid_reason:
        return Verdict(INCONCLUSIVE, invalid_reason, metrics, invalid=True, checks=checks, **header)
    status, reason = combine(results)
    if incomplete is not None and status != DEGRADED:
        status, reason = INCONCLUSIVE, incomplete
    return Verdict(status, reason, metrics, checks=checks, **header)


def _observed_share(base: ArmStats, cand: ArmStats) -> float | None:
    """Candidate's observed share of requests (shadow mode: the mirror rate is not configured)."""
    nb, nc = base.requests, cand.requests
    if nb is None or nc is None:
        nb, nc = base.latency_total, cand.latency_total
    if nb + nc <= 0 or nb == 0 or nc == 0:
        return None
    return nc / (nb + nc)
