"""The judge's entry point: one snapshot in, one verdict out; pure, no I/O.

Alpha is split evenly over the metrics in force (Bonferroni on e-values: each metric rolls back
at e >= m / alpha). Why not average the e-values (also valid)? The average only wins when
several metrics degrade a little at once; Bonferroni keeps each metric's verdict valid on its
own, so the evidence can say *which* metric failed, at a cost of log(m) in the threshold. The
set of metrics in force depends only on the configuration and mode, never on the data, which is
what keeps the split valid across looks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from .config import JudgeConfig
from .errors import judge_errors
from .kpi import judge_kpi
from .latency import judge_latency, judge_latency_tail
from .shadow import judge_agreement, judge_output_drift
from .snapshot import ArmStats, configured_share, find_arm, find_pair, store_problem
from .srm import check_split
from .verdict import DEGRADED, INCONCLUSIVE, MetricResult, Verdict, combine


def evaluate(
    snapshot: dict,
    *,
    baseline: str,
    candidate: str,
    mode: Literal["canary", "shadow"],
    config: JudgeConfig,
) -> Verdict:
    """Judge the candidate arm against the baseline arm of a gateway statistics snapshot.

    canary: both arms are `primary` entries, the configured split is `snapshot["weights"]`.
    shadow: the baseline is the incumbent's `primary` arm, the candidate its `shadow` arm, and
    the paired predictions come from `snapshot["pairs"]`. Bad or degenerate data never raise:
    they give an inconclusive verdict saying what is wrong. A snapshot whose `store` says the
    gateway's writes were failing is inconclusive with that reason, never "healthy" (its counts
    stop where the failures began); "degraded" stands, since evidence in an earlier look stays
    valid.
    """
    if mode not in ("canary", "shadow"):
        raise ValueError(f"mode must be 'canary' or 'shadow', got {mode!r}")
    if not isinstance(config, JudgeConfig):
        raise TypeError(f"config must be a JudgeConfig, got {type(config).__name__}")
    baseline, candidate = str(baseline), str(candidate)
    in_force = config.metrics_in_force(mode)
    alpha_metric = config.alpha / max(len(in_force), 1)
    header: dict[str, Any] = dict(
        mode=mode,
        baseline=baseline,
        candidate=candidate,
        alpha=config.alpha,
        alpha_per_metric=alpha_metric,
    )

    def stop(reason: str, invalid: bool = False, **checks: Any) -> Verdict:
        return Verdict(INCONCLUSIVE, reason, {}, invalid=invalid, checks=checks, **header)

    if not isinstance(snapshot, Mapping):
        return stop("The snapshot is not a JSON object.")
    if baseline == candidate:
        return stop(f"Baseline and candidate are the same version ({baseline}).")
    try:
        return _judge(snapshot, baseline, candidate, mode, config, in_force, alpha_metric, header)
    except Exception as exc:  # pragma: no cover - last resort, the tests keep it unreachable
        return stop(f"The snapshot could not be judged ({type(exc).__name__}: {exc}).")


def _judge(snapshot, baseline, candidate, mode, config, in_force, alpha_metric, header) -> Verdict:
    candidate_arm = "primary" if mode == "canary" else "shadow"
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

    log_threshold = math.log(1.0 / alpha_metric)
    min_n = config.min_samples
    results: list[MetricResult] = []
    for name in in_force:
        if name in ("errors", "latency_tail") and rho is None:
            results.append(MetricResult(name, INCONCLUSIVE, "An arm has no traffic yet."))
        elif name == "errors":
            results.append(
                judge_errors(base, cand, rho, log_threshold, alpha_metric, min_n, config.errors)
            )
        elif name == "latency":
            results.append(judge_latency(base, cand, alpha_metric, min_n, config.latency))
        elif name == "latency_tail":
            results.append(
                judge_latency_tail(
                    base, cand, rho, log_threshold, alpha_metric, min_n, config.latency_tail
                )
            )
        elif name == "kpi":
            results.append(judge_kpi(base, cand, log_threshold, alpha_metric, min_n, config.kpi))
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
