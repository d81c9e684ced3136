"""Latency: a whole-distribution shift (quantile ratios) and the tail (p99 exceedances).

Shift. For each quantile q and each arm, an anytime-valid confidence sequence for the quantile
(Howard & Ramdas 2022, arXiv 1906.09712): "F(x) = q" is tested at every x by the Beta-mixture
e-value of the count of requests <= x, and the x not rejected form the interval. The ratio of
quantiles is then bounded by [cand_lo / base_hi, cand_hi / base_lo]. "Degraded" when the lower
bound exceeds 1 + tolerance at any quantile, "healthy" when every upper bound is within it. Alpha
is split over quantiles and arms (Bonferroni). Judged on the current stage alone: latency
depends on load, which changes with the step; the caller gives each stage its share of alpha.

Tail. tau = baseline's q-quantile (p99). Under "the candidate is at most (1 + tol) times slower
in the tail", its requests exceed tau no more often than the baseline's exceed tau / (1 + tol),
so the two counts feed the Poisson-split e-process with null share rho. Conditioning on the
total makes it immune to load swings common to both arms (diurnal, bursts). Over a phase's
stages the counts pool like the error counts, each stage with its own share.
"""

from __future__ import annotations

import math

import numpy as np

from .config import LatencyConfig, TailLatencyConfig
from .counts import (
    critical_counts,
    log_evalue_two_sided,
    restarting_log_evalue,
    staged_log_evalue,
    staged_ratio_interval,
)
from .histograms import cdf_at, inverse_cdf
from .snapshot import ArmStats, Stage, pooled_arm
from .verdict import DEGRADED, HEALTHY, INCONCLUSIVE, MetricResult


def quantile_bounds(points, quantiles, log_threshold, k, critical=None):
    """(lower, point, upper) log-ms bounds of each quantile; cum (..., P) -> arrays (..., Q)."""
    log_x, cum = points
    quantiles = np.asarray(quantiles, dtype=float)
    n = cum[..., -1:]
    s_lo, s_hi = (
        critical if critical is not None else critical_counts(n, quantiles, log_threshold, k)
    )
    queries = np.concatenate([s_lo, n * quantiles, s_hi], axis=-1)
    found = inverse_cdf(log_x, cum, queries)
    q = quantiles.shape[-1]
    return found[..., :q], found[..., q : 2 * q], found[..., 2 * q :]


def shift_bounds(base_points, cand_points, quantiles, log_threshold, k):
    """log ratio (cand/base) of each quantile: (lower, point, upper), plus the baseline's upper
    bounds; vectorised over any batch shape. One root-finding call serves both arms."""
    quantiles = np.asarray(quantiles, dtype=float)
    n = np.stack([base_points[1][..., -1:], cand_points[1][..., -1:]])
    s_lo, s_hi = critical_counts(n, quantiles, log_threshold, k)
    b_lo, b_mid, b_hi = quantile_bounds(base_points, quantiles, 0.0, k, (s_lo[0], s_hi[0]))
    c_lo, c_mid, c_hi = quantile_bounds(cand_points, quantiles, 0.0, k, (s_lo[1], s_hi[1]))
    with np.errstate(invalid="ignore"):
        return c_lo - b_hi, c_mid - b_mid, c_hi - b_lo, b_hi


def tail_counts(base_points, cand_points, quantile, tolerance, log_tau=None):
    """(candidate exceedances of tau, baseline exceedances of tau / (1 + tol), log tau).

    tau is the baseline's `quantile` unless given (a phase's pooled baseline quantile)."""
    b_log_x, b_cum = base_points
    c_log_x, c_cum = cand_points
    nb = b_cum[..., -1:]
    if log_tau is None:
        log_tau = inverse_cdf(b_log_x, b_cum, nb * quantile)
    else:
        log_tau = np.broadcast_to(np.asarray(log_tau, dtype=float), nb.shape)
    nc = c_cum[..., -1:]
    cand_events = nc - cdf_at(c_log_x, c_cum, log_tau)
    base_events = nb - cdf_at(b_log_x, b_cum, log_tau - math.log1p(tolerance))
    return cand_events[..., 0], base_events[..., 0], log_tau[..., 0]


def _arm_problem(base: ArmStats, cand: ArmStats) -> str | None:
    for arm in (base, cand):
        if "latency" in arm.problems:
            return arm.problems["latency"].capitalize() + "."
    for label, arm in (("baseline", base), ("candidate", cand)):
        if arm.latency_total == 0:
            return f"The {label} arm has no latency observations yet."
    return None


def judge_latency(
    base: ArmStats,
    cand: ArmStats,
    alpha_metric: float,
    min_samples: int,
    cfg: LatencyConfig,
) -> MetricResult:
    """Verdict on the latency distribution at the configured quantiles."""
    name = "latency"
    problem = _arm_problem(base, cand)
    if problem:
        return MetricResult(name, INCONCLUSIVE, problem)
    quantiles = np.asarray(cfg.quantiles)
    # Each quantile gets alpha / Q, shared by the two arms' intervals.
    log_threshold = math.log(2 * len(quantiles) / alpha_metric)
    base_points = base.latency_points
    cand_points = cand.latency_points
    lo, mid, hi, b_hi = shift_bounds(
        base_points, cand_points, quantiles, log_threshold, cfg.concentration
    )
    nb, nc = base.latency_total, cand.latency_total
    samples = {"baseline": nb, "candidate": nc}
    log_tol = math.log1p(cfg.tolerance)
    ratios = {
        f"p{round(q * 100):g}": {
            "ratio": math.exp(m),
            "interval": [math.exp(a), math.exp(b)],
        }
        for q, a, m, b in zip(quantiles, lo, mid, hi, strict=True)
    }
    # Report the candidate's e-value at the tolerance edge of the worst quantile.
    worst = int(np.nanargmax(lo - log_tol)) if np.any(np.isfinite(lo)) else 0
    edge = b_hi[worst] + log_tol
    below = float(cdf_at(*cand_points, np.array([edge]))[0]) if np.isfinite(edge) else nc
    q = float(quantiles[worst])
    log_e = float(log_evalue_two_sided(below, nc, q, cfg.concentration)) if below < nc * q else 0.0
    label = f"p{round(q * 100):g}"
    common = dict(
        scale=f"{label} latency ratio candidate/baseline",
        estimate=math.exp(mid[worst]),
        interval=(math.exp(lo[worst]), math.exp(hi[worst])),
        tolerance=1.0 + cfg.tolerance,
        statistic=f"log e-value of the candidate's {label} at (1 + tolerance) x baseline bound",
        value=log_e,
        threshold=log_threshold,
        samples=samples,
        details={"quantiles": ratios},
    )
    degraded = np.nonzero(lo > log_tol)[0]
    if degraded.size:
        q = float(quantiles[degraded[0]])
        label = f"p{round(q * 100):g}"
        reason = (
            f"The candidate's {label} latency is at least {math.exp(lo[degraded[0]]):.2f}x the "
            f"baseline's, beyond the {1 + cfg.tolerance:.2f}x tolerance."
        )
        return MetricResult(name, DEGRADED, reason, **common)
    if min(nb, nc) < min_samples:
        reason = (
            f"Waiting for {min_samples} latency observations per arm before calling latency "
            f"healthy (have {int(min(nb, nc))})."
        )
        return MetricResult(name, INCONCLUSIVE, reason, **common)
    if np.all(hi <= log_tol):
        reason = (
            f"Every compared quantile of the candidate is within {1 + cfg.tolerance:.2f}x the "
            f"baseline's with confidence."
        )
        return MetricResult(name, HEALTHY, reason, **common)
    open_q = float(quantiles[int(np.argmax(hi))])
    reason = (
        f"The p{round(open_q * 100):g} ratio interval still reaches "
        f"{math.exp(float(np.max(hi))):.2f}x, above the {1 + cfg.tolerance:.2f}x tolerance."
    )
    return MetricResult(name, INCONCLUSIVE, reason, **common)


def judge_latency_tail(
    stages: list[Stage],
    log_threshold: float,
    alpha_metric: float,
    min_samples: int,
    cfg: TailLatencyConfig,
    restarts: int = 1,
) -> MetricResult:
    """Verdict on tail latency over the phase's stages: exceedances of the baseline's p99.

    tau is read from the baseline pooled over the stages; each stage's exceedances enter the
    staged count e-process with that stage's share (as the error rate does).
    """
    name = "latency_tail"
    current = stages[-1]
    problem = _arm_problem(current.base, current.cand)
    if problem:
        return MetricResult(name, INCONCLUSIVE, problem)
    used = [s for s in stages if s.rho is not None and _arm_problem(s.base, s.cand) is None] or [
        current
    ]
    base = pooled_arm([s.base for s in used])
    cand = pooled_arm([s.cand for s in used])
    problem = _arm_problem(base, cand)  # e.g. stages whose bucket layouts do not add up
    if problem:
        return MetricResult(name, INCONCLUSIVE, problem)
    _, _, log_tau = tail_counts(base.latency_points, cand.latency_points, cfg.quantile, 0.0)
    log_tau = float(log_tau)
    per_stage = [
        tail_counts(
            s.base.latency_points, s.cand.latency_points, cfg.quantile, cfg.tolerance, log_tau
        )
        for s in used
    ]
    ev_c_s = np.array([float(c) for c, _, _ in per_stage])
    ev_b_s = np.array([float(b) for _, b, _ in per_stage])
    rho_s = np.array([s.rho if s.rho is not None else math.nan for s in used])
    ev_c, ev_b = float(ev_c_s.sum()), float(ev_b_s.sum())
    nb, nc = base.latency_total, cand.latency_total
    total = ev_c + ev_b
    if np.all(np.isfinite(rho_s)):
        log_e_deg = restarting_log_evalue(ev_c_s, ev_c_s + ev_b_s, rho_s, "above", restarts)
        log_e_ok = staged_log_evalue(ev_c_s, ev_c_s + ev_b_s, rho_s, "below")
    else:  # the current stage alone, without a usable share
        return MetricResult(name, INCONCLUSIVE, "An arm has no traffic yet.")
    rate_c, rate_b = ev_c / nc, ev_b / nb
    rho = float(rho_s[-1])
    ratio_lo, ratio_hi = staged_ratio_interval(ev_c_s, ev_c_s + ev_b_s, rho_s, alpha_metric)
    label = f"p{round(cfg.quantile * 100):g}"
    tau_ms = math.exp(log_tau)
    common = dict(
        scale=f"exceedance-rate ratio over the baseline's {label} (tolerance built in)",
        estimate=rate_c / rate_b if rate_b > 0 else math.nan,
        interval=(ratio_lo, ratio_hi),
        tolerance=1.0,
        statistic="log e-value vs exceedance ratio <= 1",
        value=log_e_deg,
        threshold=log_threshold,
        samples={"baseline": nb, "candidate": nc, "candidate_events": ev_c, "events": total},
        details={
            "tau_ms": tau_ms,
            "candidate_exceedance_rate": rate_c,
            "baseline_exceedance_rate_at_tau_over_1_plus_tol": rate_b,
            "latency_tolerance": cfg.tolerance,
            "traffic_share": rho,
            "stages": len(used),
            "log_evalue_within_tolerance": log_e_ok,
        },
    )
    if log_e_deg >= log_threshold:
        reason = (
            f"{rate_c:.2%} of candidate requests exceed the baseline's {label} of {tau_ms:.1f} ms, "
            f"more than the baseline exceeds it with {1 + cfg.tolerance:.2f}x slack ({rate_b:.2%})."
        )
        return MetricResult(name, DEGRADED, reason, **common)
    if min(nb, nc) < min_samples:
        reason = (
            f"Waiting for {min_samples} latency observations per arm before calling the tail "
            f"healthy (have {int(min(nb, nc))})."
        )
        return MetricResult(name, INCONCLUSIVE, reason, **common)
    if log_e_ok >= log_threshold:
        reason = (
            f"The candidate's tail beyond the baseline's {label} ({tau_ms:.1f} ms) is within "
            f"{1 + cfg.tolerance:.2f}x with confidence."
        )
        return MetricResult(name, HEALTHY, reason, **common)
    reason = (
        f"Too few tail events ({ev_c:.0f} candidate, {ev_b:.0f} baseline) to exclude a tail "
        f"slow-down beyond {1 + cfg.tolerance:.2f}x."
    )
    return MetricResult(name, INCONCLUSIVE, reason, **common)
