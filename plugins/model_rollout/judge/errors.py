"""Error rate: the count e-process on errors given the traffic split (Lindon & Malek 2022).

Each error falls in the candidate arm with probability theta; with the candidate's traffic
share rho and rate ratio r, theta = rho r / (rho r + 1 - rho). A degradation is an increase
beyond both tolerances (relative, and the absolute floor), i.e. r above r* = max(1 + rel,
1 + floor / p_b). "Degraded" rejects r <= r* (one-sided Beta mixture, valid at every look) and
also needs the estimated increase above the floor. "Healthy" needs the mirror-image e-value
(r < r* shown) or anytime intervals showing that the absolute increase is below the floor;
either takes on the order of p / floor^2 requests (about 150k at 1% errors and a 0.1 pp floor),
which is why the floor is a policy knob.

Why the floor enters the null and not only the estimate: arm-specific bursts (one canary pod
misbehaving for a minute) make error counts over-dispersed, which no count test models; a null
at r* rather than at 1 absorbs them (the autocorrelated A/A scenario of the benchmark).
"""

from __future__ import annotations

import math

import numpy as np

from .config import ErrorsConfig
from .counts import log_evalue_above, log_evalue_below, null_share, proportion_interval, rate_ratio
from .snapshot import ArmStats
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


def degraded_log_evalue(err_c, err_b, req_b, rho, cfg: ErrorsConfig):
    """log e-value against 'the candidate's error rate is within tolerance' (vectorised)."""
    err_b = np.asarray(err_b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_b = np.where(np.asarray(req_b) > 0, err_b / req_b, 0.0)
    theta0 = null_share(rho, tolerated_ratio(rate_b, cfg))
    return log_evalue_above(err_c, np.asarray(err_c) + err_b, theta0, cfg.concentration)


def absolute_increase(err_c, err_b, req_c, req_b):
    """Point estimate of candidate error rate minus baseline error rate (vectorised)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(err_c) / req_c - np.asarray(err_b) / req_b


def judge_errors(
    base: ArmStats,
    cand: ArmStats,
    rho: float,
    log_threshold: float,
    alpha_metric: float,
    min_samples: int,
    cfg: ErrorsConfig,
) -> MetricResult:
    """Verdict on the error rate; `log_threshold` = log(1 / alpha_metric)."""
    name = "errors"
    for arm in (base, cand):
        for key in ("requests", "errors"):
            if key in arm.problems:
                return MetricResult(name, INCONCLUSIVE, arm.problems[key].capitalize() + ".")
    nb, nc, eb, ec = base.requests, cand.requests, base.errors, cand.errors
    samples = {"baseline_requests": nb, "candidate_requests": nc, "baseline_errors": eb}
    samples["candidate_errors"] = ec
    if nb == 0 or nc == 0:
        empty = "baseline" if nb == 0 else "candidate"
        return MetricResult(
            name, INCONCLUSIVE, f"The {empty} arm has served no requests yet.", samples=samples
        )
    rate_b, rate_c = eb / nb, ec / nc
    # One bound serves both sides: beyond it is a degradation, within it is healthy.
    bound = float(tolerated_ratio(rate_b, cfg))
    theta0 = float(null_share(rho, bound))
    log_e_deg = float(degraded_log_evalue(ec, eb, nb, rho, cfg))
    log_e_ok = float(log_evalue_below(ec, ec + eb, theta0, cfg.concentration))
    diff = rate_c - rate_b
    # Evidence for humans: an anytime interval on the rate ratio (fixed prior centred on rho).
    a, b = cfg.concentration * rho, cfg.concentration * (1 - rho)
    lo, hi = proportion_interval(ec, ec + eb, alpha_metric, a, b) if ec + eb else (0.0, 1.0)
    ratio_lo, ratio_hi = float(rate_ratio(lo, rho)), float(rate_ratio(hi, rho))
    ratio_hat = rate_c / rate_b if rate_b > 0 else (math.inf if rate_c > 0 else math.nan)
    pc_lo, pc_hi = proportion_interval(ec, nc, alpha_metric / 2, 0.5, 0.5)
    pb_lo, pb_hi = proportion_interval(eb, nb, alpha_metric / 2, 0.5, 0.5)
    details = {
        "baseline_rate": rate_b,
        "candidate_rate": rate_c,
        "absolute_increase": diff,
        "min_absolute_increase": cfg.min_absolute_increase,
        "max_relative_increase": cfg.max_relative_increase,
        "candidate_rate_interval": [pc_lo, pc_hi],
        "baseline_rate_interval": [pb_lo, pb_hi],
        "traffic_share": rho,
        "null_error_share": theta0,
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
    if log_e_deg >= log_threshold and diff > cfg.min_absolute_increase:
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
