"""Shadow predictions: paired agreement and marginal output drift.

Agreement. Shadow and primary answer the same request, so each pair is one Bernoulli trial:
"flip" for classifiers (labels differ), |delta| for regressors. Flip rate: one-sided Beta
mixture e-values against the tolerance (degraded: rate > tol shown; healthy: rate < tol shown).
Mean |delta|: one-sided normal mixture on the mean with the plug-in variance (asymptotic).

Drift. Total-variation distance between the two output histograms, with a tolerance and a noise
allowance that shrinks with the sample: for each arm, ||p_hat - p||_1 <= x_j / n for all n in
the dyadic epoch (2^(j-1), 2^j], with x_j = sqrt(2 N_j (B ln 2 + ln(1/delta_j))) (Hoeffding's
maximal inequality over the 2^B sign vectors; delta_j = delta / (j (j + 1)) sums to delta).
So TV_hat - allowance > tol is a degradation at every look with probability <= delta. This is
what PSI thresholds lack: at n = m = 100, A/A PSI exceeds 0.1 most of the time.
"""

from __future__ import annotations

import math

import numpy as np

from .config import OutputDriftConfig, ShadowConfig
from .counts import log_evalue_above, log_evalue_below, proportion_interval
from .kpi import log_evalue_normal_one_sided, normal_mixture_halfwidth
from .snapshot import ArmStats, PairStats
from .verdict import DEGRADED, HEALTHY, INCONCLUSIVE, MetricResult


def prediction_kind(cfg: ShadowConfig, cand: ArmStats, pair: PairStats) -> str:
    """classifier or regressor: configured, else from the outputs kind, else from the deltas."""
    if cfg.prediction_kind != "auto":
        return cfg.prediction_kind
    if cand.outputs_kind:
        return "classifier" if cand.outputs_kind == "categorical" else "regressor"
    flips = (pair.pairs or 0) - (pair.agree or 0)
    if pair.abs_delta_sum is not None and abs(pair.abs_delta_sum - flips) > 1e-9:
        return "regressor"
    return "classifier"


def judge_agreement(
    base: ArmStats,
    cand: ArmStats,
    pair: PairStats | None,
    log_threshold: float,
    alpha_metric: float,
    min_samples: int,
    cfg: ShadowConfig,
) -> MetricResult:
    """Verdict on paired shadow predictions."""
    name = "shadow_agreement"
    if pair is None:
        return MetricResult(
            name,
            INCONCLUSIVE,
            f"The snapshot has no pairs entry for shadow {cand.version} against {base.version}.",
        )
    if pair.problems:
        return MetricResult(name, INCONCLUSIVE, next(iter(pair.problems.values())) + ".")
    n = pair.pairs
    if n == 0:
        return MetricResult(name, INCONCLUSIVE, "No paired shadow predictions yet.")
    kind = prediction_kind(cfg, cand, pair)
    if kind == "classifier":
        return _flip_rate(name, n, n - pair.agree, log_threshold, alpha_metric, min_samples, cfg)
    return _mean_abs_delta(name, pair, log_threshold, alpha_metric, min_samples, cfg)


def _flip_rate(name, n, flips, log_threshold, alpha_metric, min_samples, cfg: ShadowConfig):
    tol = cfg.max_disagreement
    log_e_deg = float(log_evalue_above(flips, n, tol, cfg.concentration))
    log_e_ok = float(log_evalue_below(flips, n, tol, cfg.concentration))
    lo, hi = proportion_interval(flips, n, alpha_metric, 0.5, 0.5)
    rate = flips / n
    common = dict(
        scale="flip rate (share of pairs whose labels differ)",
        estimate=rate,
        interval=(lo, hi),
        tolerance=tol,
        statistic="log e-value vs flip rate <= tolerance",
        value=log_e_deg,
        threshold=log_threshold,
        samples={"pairs": n, "flips": flips},
        details={"kind": "classifier", "log_evalue_within_tolerance": log_e_ok},
    )
    if log_e_deg >= log_threshold:
        reason = f"The shadow disagrees with the primary on {rate:.2%} of rows, above {tol:.2%}."
        return MetricResult(name, DEGRADED, reason, **common)
    if n < min_samples:
        reason = f"Waiting for {min_samples} shadow pairs before calling agreement healthy."
        return MetricResult(name, INCONCLUSIVE, reason, **common)
    if log_e_ok >= log_threshold:
        reason = f"The flip rate {rate:.2%} is below the {tol:.2%} tolerance with confidence."
        return MetricResult(name, HEALTHY, reason, **common)
    reason = f"The flip rate {rate:.2%} cannot yet be told apart from the {tol:.2%} tolerance."
    return MetricResult(name, INCONCLUSIVE, reason, **common)


def _mean_abs_delta(name, pair: PairStats, log_threshold, alpha_metric, min_samples, cfg):
    tol = cfg.max_mean_abs_delta
    if tol is None:
        return MetricResult(
            name,
            INCONCLUSIVE,
            "Regressor shadow: set shadow.max_mean_abs_delta to judge the mean |delta|.",
            details={"kind": "regressor"},
        )
    if pair.abs_delta_sum is None or pair.abs_delta_sq_sum is None:
        return MetricResult(name, INCONCLUSIVE, "The pairs entry lacks abs_delta sums.")
    n = pair.pairs
    mean = pair.abs_delta_sum / n
    var = max(pair.abs_delta_sq_sum / n - mean * mean, 0.0) * n / max(n - 1, 1)
    variance = max(var / n, 1e-18 * max(1.0, tol * tol))
    scale = 2.0 * tol
    log_e_deg = float(log_evalue_normal_one_sided(mean - tol, variance, scale))
    log_e_ok = float(log_evalue_normal_one_sided(tol - mean, variance, scale))
    half = float(normal_mixture_halfwidth(variance, scale, alpha_metric))
    common = dict(
        scale="mean |shadow - primary| (prediction units)",
        estimate=mean,
        interval=(max(mean - half, 0.0), mean + half),
        tolerance=tol,
        statistic="log e-value vs mean |delta| <= tolerance",
        value=log_e_deg,
        threshold=log_threshold,
        samples={"pairs": n},
        details={"kind": "regressor", "log_evalue_within_tolerance": log_e_ok},
    )
    if n >= 30 and log_e_deg >= log_threshold:
        reason = f"The shadow's mean |delta| {mean:.4g} exceeds the tolerance {tol:.4g}."
        return MetricResult(name, DEGRADED, reason, **common)
    if n < max(min_samples, 30):
        reason = f"Waiting for {max(min_samples, 30)} shadow pairs before judging mean |delta|."
        return MetricResult(name, INCONCLUSIVE, reason, **common)
    if log_e_ok >= log_threshold:
        reason = f"The mean |delta| {mean:.4g} is below the tolerance {tol:.4g} with confidence."
        return MetricResult(name, HEALTHY, reason, **common)
    reason = f"The mean |delta| {mean:.4g} cannot yet be told apart from the tolerance {tol:.4g}."
    return MetricResult(name, INCONCLUSIVE, reason, **common)


def l1_allowance(n, bins, delta):
    """Time-uniform bound on ||p_hat_n - p||_1 holding for all n at once w.p. >= 1 - delta."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        epoch = np.maximum(np.ceil(np.log2(np.maximum(n, 1.0))), 0.0) + 1.0
        size = 2.0 ** (epoch - 1.0)
        size = np.where(size < n, 2.0 * size, size)
        log_inv_delta = math.log(1.0 / delta) + np.log(epoch * (epoch + 1.0))
        bound = np.sqrt(2.0 * size * (bins * math.log(2.0) + log_inv_delta)) / n
    return np.where(n > 0, np.minimum(bound, 2.0), 2.0)


def _bins(base: dict[str, float], cand: dict[str, float], kind: str, max_bins: int):
    """Aligned count vectors; numeric buckets merged into <= max_bins by baseline mass."""
    keys = sorted(set(base) | set(cand), key=lambda k: (int(k) if kind == "numeric" else 0, k))
    b = np.array([base.get(k, 0.0) for k in keys])
    c = np.array([cand.get(k, 0.0) for k in keys])
    if len(keys) <= max_bins:
        return b, c
    if kind == "numeric":
        # Contiguous bins of about equal pooled mass keep the order of values.
        pooled = np.cumsum(b / max(b.sum(), 1.0) + c / max(c.sum(), 1.0))
        group = np.minimum((pooled / pooled[-1] * max_bins).astype(int), max_bins - 1)
    else:
        # Keep the commonest labels, merge the rest.
        order = np.argsort(-(b + c), kind="stable")
        group = np.empty(len(keys), dtype=int)
        group[order] = np.minimum(np.arange(len(keys)), max_bins - 1)
    return np.bincount(group, weights=b, minlength=max_bins), np.bincount(
        group, weights=c, minlength=max_bins
    )


def judge_output_drift(
    base: ArmStats,
    cand: ArmStats,
    alpha_metric: float,
    min_samples: int,
    cfg: OutputDriftConfig,
) -> MetricResult:
    """Verdict on the distance between the output distributions."""
    name = "output_drift"
    for label, arm in (("incumbent", base), ("shadow", cand)):
        if "outputs" in arm.problems:
            return MetricResult(name, INCONCLUSIVE, arm.problems["outputs"].capitalize() + ".")
        if not arm.outputs:
            return MetricResult(name, INCONCLUSIVE, f"The {label} arm reports no outputs yet.")
    kind = "numeric" if cand.outputs_kind == "numeric" else "categorical"
    if (base.outputs_kind == "numeric") != (kind == "numeric"):
        return MetricResult(
            name, INCONCLUSIVE, "The two arms report different output kinds; cannot compare."
        )
    b, c = _bins(base.outputs, cand.outputs, kind, cfg.max_bins)
    nb, nc = float(b.sum()), float(c.sum())
    tv = 0.5 * float(np.abs(b / nb - c / nc).sum())
    bins = len(b)
    allowance = 0.5 * float(
        l1_allowance(nb, bins, alpha_metric / 2) + l1_allowance(nc, bins, alpha_metric / 2)
    )
    tol = cfg.max_total_variation
    common = dict(
        scale="total-variation distance between output distributions",
        estimate=tv,
        interval=(max(tv - allowance, 0.0), min(tv + allowance, 1.0)),
        tolerance=tol,
        statistic="total variation minus its noise allowance vs tolerance",
        value=tv - allowance,
        threshold=tol,
        samples={"baseline": nb, "candidate": nc},
        details={"kind": kind, "bins": bins, "noise_allowance": allowance},
    )
    if tv - allowance > tol:
        reason = (
            f"The shadow's outputs differ from the incumbent's by TV {tv:.3f}, beyond "
            f"{tol:.3f} even after a {allowance:.3f} allowance for noise."
        )
        return MetricResult(name, DEGRADED, reason, **common)
    if min(nb, nc) < min_samples:
        reason = f"Waiting for {min_samples} outputs per arm before calling output drift healthy."
        return MetricResult(name, INCONCLUSIVE, reason, **common)
    if tv + allowance <= tol:
        reason = f"The output distributions are within TV {tol:.3f} with confidence."
        return MetricResult(name, HEALTHY, reason, **common)
    reason = (
        f"TV {tv:.3f} with a noise allowance of {allowance:.3f} does not yet exclude drift above "
        f"{tol:.3f}."
    )
    return MetricResult(name, INCONCLUSIVE, reason, **common)
