"""Error rate: the count e-process on errors given the traffic split (Lindon & Malek 2022).

Each error falls in the candidate arm with probability theta; with the candidate's traffic
share rho and rate ratio r, theta = rho r / (rho r + 1 - rho). "Degraded" rejects r <= 1 + tol
(one-sided Beta mixture, valid at every look); a degradation must also exceed an absolute floor
so that 3 errors against 1 on a quiet service do not count. "Healthy" needs the mirror-image
e-value (r below 1 + max(tol, floor / baseline rate) shown) or anytime intervals showing that
the absolute increase is below the floor; either takes on the order of 1 / floor^2 x rate
requests (about 150k at 1% errors and a 0.1 pp floor), which is why the floor is a policy knob.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ErrorsConfig
from .counts import log_evalue_above, log_evalue_below, null_share, proportion_interval, rate_ratio
from .snapshot import ArmStats
from .verdict import DEGRADED, HEALTHY, INCONCLUSIVE, MetricResult


def degraded_log_evalue(err_c, err_b, rho, cfg: ErrorsConfig):
    """log e-value against 'candidate's error rate <= (1 + tol) x baseline's' (vectorised)."""
    theta0 = null_share(rho, 1.0 + cfg.max_relative_increase)
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
    tol = cfg.max_relative_increase
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
    theta0 = float(null_share(rho, 1.0 + tol))
    log_e_deg = float(log_evalue_above(ec, ec + eb, theta0, cfg.concentration))
    # "Healthy" may use the floor as a ratio too: with the baseline's rate known well, an
    # increase below the floor is a ratio below 1 + floor / rate_b.
    healthy_ratio = 1.0 + max(tol, cfg.min_absolute_increase / rate_b if rate_b > 0 else 0.0)
    theta_ok = float(null_share(rho, healthy_ratio))
    log_e_ok = float(log_evalue_below(ec, ec + eb, theta_ok, cfg.concentration))
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
        "candidate_rate_interval": [pc_lo, pc_hi],
        "baseline_rate_interval": [pb_lo, pb_hi],
        "traffic_share": rho,
        "null_error_share": theta0,
        "log_evalue_within_tolerance": log_e_ok,
        "healthy_ratio_bound": healthy_ratio,
    }
    common = dict(
        scale="error-rate ratio candidate/baseline",
        estimate=ratio_hat,
        interval=(ratio_lo, ratio_hi),
        tolerance=1.0 + tol,
        statistic="log e-value vs ratio <= 1 + tolerance",
        value=log_e_deg,
        threshold=log_threshold,
        samples=samples,
        details=details,
    )
    if log_e_deg >= log_threshold and diff > cfg.min_absolute_increase:
        reason = (
            f"The candidate's error rate {rate_c:.3%} is above {1 + tol:.2f}x the baseline's "
            f"{rate_b:.3%} (e-value {math.exp(min(log_e_deg, 700)):.3g} >= "
            f"{math.exp(log_threshold):.3g})."
        )
        return MetricResult(name, DEGRADED, reason, **common)
    if min(nb, nc) < min_samples:
        reason = (
            f"Waiting for {min_samples} requests per arm before calling errors healthy "
            f"(have {int(min(nb, nc))})."
        )
        return MetricResult(name, INCONCLUSIVE, reason, **common)
    if log_e_ok >= log_threshold:
        within = (
            f"within the {cfg.min_absolute_increase:.3%} floor of"
            if healthy_ratio > 1.0 + tol
            else f"below {1 + tol:.2f}x"
        )
        reason = (
            f"The candidate's error rate {rate_c:.3%} is {within} the baseline's {rate_b:.3%} "
            f"with confidence (ratio below {healthy_ratio:.2f})."
        )
        return MetricResult(name, HEALTHY, reason, **common)
    if pc_hi - pb_lo <= cfg.min_absolute_increase:
        reason = (
            f"The error rate rose by at most {pc_hi - pb_lo:.3%} with confidence, under the "
            f"{cfg.min_absolute_increase:.3%} floor."
        )
        return MetricResult(name, HEALTHY, reason, **common)
    reason = (
        f"Error rates {rate_c:.3%} (candidate) and {rate_b:.3%} (baseline) do not yet exclude a "
        f"ratio above {1 + tol:.2f}."
    )
    return MetricResult(name, INCONCLUSIVE, reason, **common)
