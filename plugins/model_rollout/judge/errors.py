"""Error rate: the count e-process on errors given the traffic split (Lindon & Malek 2022).

Each error falls in the candidate arm with probability theta; with the candidate's traffic
share rho and rate ratio r, theta = rho r / (rho r + 1 - rho). A degradation is an increase
beyond both tolerances (relative, and the absolute floor), i.e. r above r* = max(1 + rel,
1 + floor / p_b). "Degraded" rejects r <= r* and also needs the estimated increase above the
floor. "Healthy" needs the mirror-image e-value (r < r* shown) or anytime intervals showing that
the absolute increase is below the floor; either takes on the order of p / floor^2 requests
(about 150k at 1% errors and a 0.1 pp floor), which is why the floor is a policy knob.

Stages: the counts of every stage of the phase count, each with its own share (the staged
e-process of `counts`); "degraded" averages the processes started at each stage, so a
regression that appears only at a later, larger step is not drowned by the earlier evidence.

Why the floor enters the null and not only the estimate: arm-specific bursts (one canary pod
misbehaving for a minute) make error counts over-dispersed, which no count test models; a null
at r* rather than at 1 absorbs them (the autocorrelated A/A scenario of the benchmark).
"""

from __future__ import annotations

import math

import numpy as np

from .config import ErrorsConfig
from .counts import (
    null_share,
    proportion_interval,
    restarting_log_evalue,
    staged_log_evalue,
    staged_ratio_interval,
)
from .snapshot import Stage, pooled_arm
from .verdict import DEGRADED, HEALTHY, INCONCLUSIVE, MetricResult


def tolerated_ratio(rate_b, cfg: ErrorsConfig):
    """Largest error-rate ratio that is not a degradation (vectorised).

    p_c > p_b (1 + rel) and p_c > p_b + floor means a ratio above max(1 + rel, 1 + floor / p_b),
    with the baseline's rate (the arm with most traffic) plugged in. Below a baseline rate equal
    to the floor the bound stays at 2 (a doubling), so that an arm with almost no errors can
    still be judged.
    """
    rate_b = np.asarray(rate_b, dtype=float)
    floor = cfg.min_absolute_increase
    floor_ratio = 1.0 + floor / np.maximum(rate_b, floor) if floor > 0 else 1.0
    return np.maximum(1.0 + cfg.max_relative_increase, floor_ratio)


def usable_stages(stages: list[Stage], *fields: str) -> list[Stage]:
    """Stages whose share is known and whose arms have the fields, without problems."""
    return [
        s
        for s in stages
        if s.rho is not None
        and all(
            f not in a.problems and getattr(a, f) is not None
            for a in (s.base, s.cand)
            for f in fields
        )
    ]


def judge_errors(
    stages: list[Stage],
    log_threshold: float,
    alpha_metric: float,
    min_samples: int,
    cfg: ErrorsConfig,
    restarts: int = 1,
) -> MetricResult:
    """Verdict on the error rate over the phase's stages (the last one is the current stage).

    `log_threshold` = log(1 / alpha_metric); `restarts` = stages the phase has in all.
    """
    name = "errors"
    current = stages[-1]
    for arm in (current.base, current.cand):
        for key in ("requests", "errors"):
            if key in arm.problems:
                return MetricResult(name, INCONCLUSIVE, arm.problems[key].capitalize() + ".")
    used = usable_stages(stages, "requests", "errors")
    base = pooled_arm([s.base for s in used] or [current.base])
    cand = pooled_arm([s.cand for s in used] or [current.cand])
    nb, nc, eb, ec = base.requests, cand.requests, base.errors, cand.errors
    samples = {"baseline_requests": nb, "candidate_requests": nc, "baseline_errors": eb}
    samples["candidate_errors"] = ec
    if nb == 0 or nc == 0 or not used:
        empty = "baseline" if nb == 0 else "candidate"
        return MetricResult(
            name, INCONCLUSIVE, f"The {empty} arm has served no requests yet.", samples=samples
        )
    rate_b, rate_c = eb / nb, ec / nc
    # One bound serves both sides: beyond it is a degradation, within it is healthy.
    bound = float(tolerated_ratio(rate_b, cfg))
    events_c = np.array([s.cand.errors for s in used])
    events = events_c + np.array([s.base.errors for s in used])
    theta0 = null_share(np.array([s.rho for s in used]), bound)
    log_e_deg = restarting_log_evalue(events_c, events, theta0, "above", restarts)
    log_e_ok = staged_log_evalue(events_c, events, theta0, "below")
    diff = rate_c - rate_b
    last_diff = (
        current.cand.errors / current.cand.requests - current.base.errors / current.base.requests
        if current.cand.requests and current.base.requests
        else -math.inf
    )
    pc_lo, pc_hi = proportion_interval(ec, nc, alpha_metric / 2, 0.5, 0.5)
    pb_lo, pb_hi = proportion_interval(eb, nb, alpha_metric / 2, 0.5, 0.5)
    rho_s = np.array([s.rho for s in used])
    ratio_lo, ratio_hi = staged_ratio_interval(events_c, events, rho_s, alpha_metric)
    ratio_hat = rate_c / rate_b if rate_b > 0 else (math.inf if rate_c > 0 else math.nan)
    details = {
        "baseline_rate": rate_b,
        "candidate_rate": rate_c,
        "absolute_increase": diff,
        "min_absolute_increase": cfg.min_absolute_increase,
        "max_relative_increase": cfg.max_relative_increase,
        "candidate_rate_interval": [pc_lo, pc_hi],
        "baseline_rate_interval": [pb_lo, pb_hi],
        "traffic_share": current.rho,
        "stages": len(used),
        "log_evalue_within_tolerance": log_e_ok,
    }
    common = dict(
        scale="error-rate ratio candidate/baseline",
        estimate=ratio_hat,
        interval=(ratio_lo, ratio_hi),
        tolerance=bound,
        statistic="log e-value vs ratio <= tolerated ratio",
        value=log_e_deg,
        threshold=log_threshold,
        samples=samples,
        details=details,
    )
    if log_e_deg >= log_threshold and max(diff, last_diff) > cfg.min_absolute_increase:
        reason = (
            f"The candidate's error rate {rate_c:.3%} is above {bound:.2f}x the baseline's "
            f"{rate_b:.3%}, beyond the tolerance (e-value {math.exp(min(log_e_deg, 700)):.3g} "
            f">= {math.exp(log_threshold):.3g})."
        )
        return MetricResult(name, DEGRADED, reason, **common)
    if min(nb, nc) < min_samples:
        reason = (
            f"Waiting for {min_samples} requests per arm before calling errors healthy "
            f"(have {int(min(nb, nc))})."
        )
        return MetricResult(name, INCONCLUSIVE, reason, **common)
    if log_e_ok >= log_threshold:
        reason = (
            f"The candidate's error rate {rate_c:.3%} is within tolerance of the baseline's "
            f"{rate_b:.3%} with confidence (ratio below {bound:.2f})."
        )
        return MetricResult(name, HEALTHY, reason, **common)
    if pc_hi - pb_lo <= cfg.min_absolute_increase:
        reason = (
            f"The error rate rose by at most {pc_hi - pb_lo:.3%} with confidence, under the "
            f"{cfg.min_absolute_increase:.3%} floor."
        )
        return MetricResult(name, HEALTHY, reason, **common)
    reason = (
        f"Error rates {rate_c:.3%} (candidate) and {rate_b:.3%} (baseline) do not yet exclude "
        f"a ratio above {bound:.2f}."
    )
    return MetricResult(name, INCONCLUSIVE, reason, **common)
