"""Business KPI (feedback outcomes) as a sequential non-inferiority test.

The contrast D = mean_c - (1 - m) mean_b (higher is better, relative margin m; the other cases
are the same up to sign and offset) is >= 0 exactly when the candidate is non-inferior. Its
estimate is asymptotically normal with variance v = s_c^2/n_c + (1-m)^2 s_b^2/n_b, so a one-sided
normal mixture of likelihood ratios (mSPRT, Johari et al. arXiv 1512.04922; asymptotic
time-uniform validity: Waudby-Smith et al. 2021) gives an e-value for "D < 0" (degraded) and
one for "D > 0" (non-inferior, healthy). Only sums and sums of squares are needed. Over several
stages D is stratified by stage (weights: the candidate's outcomes per stage).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr

from .config import KpiConfig
from .snapshot import ArmStats, Stage, pooled_arm
from .verdict import DEGRADED, HEALTHY, INCONCLUSIVE, NOT_APPLICABLE, MetricResult


def log_evalue_normal_one_sided(estimate, variance, scale):
    """log e-value against 'true contrast <= 0' for an N(contrast, variance) estimate.

    Half-normal mixture (spread `scale`) over positive contrasts; vectorised. Closed form:
    2 sqrt(v / (v + s^2)) exp(x^2 s^2 / (2 v (v + s^2))) Phi(x s / sqrt(v (v + s^2))).
    """
    x = np.asarray(estimate, dtype=float)
    v = np.asarray(variance, dtype=float)
    s2 = np.asarray(scale, dtype=float) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        total = v + s2
        z = x * np.sqrt(s2) / np.sqrt(v * total)
        return (
            math.log(2.0) + 0.5 * np.log(v / total) + x * x * s2 / (2.0 * v * total) + log_ndtr(z)
        )


def normal_mixture_halfwidth(variance, scale, alpha):
    """Half-width of the two-sided normal-mixture confidence sequence at level alpha."""
    v = np.asarray(variance, dtype=float)
    s2 = np.asarray(scale, dtype=float) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(v * (v + s2) / s2 * (np.log((v + s2) / v) + 2.0 * math.log(1.0 / alpha)))


def kpi_contrast(mean_c, var_c, n_c, mean_b, var_b, n_b, cfg: KpiConfig):
    """(D estimate, its variance, margin in outcome units): D >= 0 means non-inferior."""
    sign = 1.0 if cfg.direction == "higher_is_better" else -1.0
    if cfg.margin_kind == "relative":
        factor = 1.0 - sign * cfg.margin
        offset = 0.0
        margin_units = cfg.margin * abs(mean_b)
    else:
        factor = 1.0
        offset = cfg.margin
        margin_units = cfg.margin
    contrast = sign * (mean_c - factor * mean_b) + offset
    variance = var_c / n_c + factor * factor * var_b / n_b
    return contrast, variance, margin_units


def mixture_scale(cfg: KpiConfig, mean_b, var_b):
    """Spread of the mixture over effects, in outcome units (vectorised); never zero."""
    unit = np.where(np.abs(mean_b) > 0, np.abs(mean_b), np.sqrt(np.maximum(var_b, 0.0)))
    return cfg.mixture_scale * np.maximum(unit, 1e-12)


def _moments(arm: ArmStats) -> tuple[float, float, float]:
    fb = arm.feedback
    n = fb.count
    mean = fb.total / n
    var = max(fb.total_sq - n * mean * mean, 0.0) / (n - 1)
    return n, mean, var


def stratified_contrast(strata, cfg: KpiConfig):
    """(D, variance) over stages: each stage's contrast weighted by its candidate outcomes.

    Why stratify: the candidate's share grows from stage to stage, so pooled means would weigh
    the stages differently per arm; a KPI that drifts over the day (it does) would then look
    like a difference between the arms. `strata` holds (n_c, mean_c, var_c, n_b, mean_b, var_b)
    per stage.
    """
    total_c = sum(s[0] for s in strata)
    contrast = variance = 0.0
    for n_c, mean_c, var_c, n_b, mean_b, var_b in strata:
        w = n_c / total_c
        # One variance for both arms (the pooled one): a few outcomes that happen to be all 0
        # read as a variance of 0, and a plug-in of 0 made the candidate look surely worse.
        pooled = ((n_c - 1) * var_c + (n_b - 1) * var_b) / max(n_c + n_b - 2, 1)
        var_c, var_b = max(var_c, pooled), max(var_b, pooled)
        d, v, _ = kpi_contrast(mean_c, var_c, n_c, mean_b, var_b, n_b, cfg)
        contrast += w * d
        variance += w * w * v
    return contrast, variance


def judge_kpi(
    stages: list[Stage],
    log_threshold: float,
    alpha_metric: float,
    min_samples: int,
    cfg: KpiConfig,
    restarts: int = 1,
) -> MetricResult:
    """Verdict on the feedback KPI (non-inferiority with the policy's margin) over the stages.

    Judged whenever feedback arrives: with no outcome on either arm the KPI does not apply (a
    model without feedback); once the baseline has outcomes, the candidate must have them too.
    """
    name = "kpi"
    current = stages[-1]
    for arm in (current.base, current.cand):
        if "feedback" in arm.problems:
            return MetricResult(name, INCONCLUSIVE, arm.problems["feedback"].capitalize() + ".")
    base = pooled_arm([s.base for s in stages])
    cand = pooled_arm([s.cand for s in stages])
    counts = {
        label: 0 if arm.feedback is None else int(arm.feedback.count)
        for label, arm in (("baseline", base), ("candidate", cand))
    }
    if not any(counts.values()):
        return MetricResult(
            name, NOT_APPLICABLE, "No feedback outcome has arrived for either arm: no KPI."
        )
    for label, have in counts.items():
        if have < cfg.min_feedback:
            reason = (
                f"The {label} arm has {have} feedback outcomes; at least {cfg.min_feedback} are "
                f"needed."
            )
            return MetricResult(name, INCONCLUSIVE, reason)
    strata = [
        (*_moments(s.cand), *_moments(s.base))
        for s in stages
        if s.cand.feedback is not None
        and s.base.feedback is not None
        and s.cand.feedback.count >= 2
        and s.base.feedback.count >= 2
    ]
    if not strata:
        return MetricResult(name, INCONCLUSIVE, "No stage has two outcomes on each arm yet.")
    n_b, mean_b, var_b = _moments(base)
    n_c, mean_c, var_c = _moments(cand)
    samples = {"baseline": n_b, "candidate": n_c}
    floor = 1e-12 * max(1.0, mean_b * mean_b)  # every outcome identical: the sign decides

    def log_e(start: int, sign: float) -> float:
        contrast, variance = stratified_contrast(strata[start:], cfg)
        return float(log_evalue_normal_one_sided(sign * contrast, max(variance, floor), scale))

    scale = mixture_scale(cfg, mean_b, var_b)
    contrast, variance = stratified_contrast(strata, cfg)
    variance = max(variance, floor)
    # Degraded: the mean of the processes started at each stage (unreached stages count as 1).
    starts = [log_e(k, -1.0) for k in range(len(strata))]
    starts += [0.0] * max(restarts - len(starts), 0)
    top = max(starts)
    log_e_deg = top + math.log(sum(math.exp(x - top) for x in starts) / len(starts))
    log_e_ok = float(log_evalue_normal_one_sided(contrast, variance, scale))
    half = float(normal_mixture_halfwidth(variance, scale, alpha_metric))
    _, _, margin_units = kpi_contrast(mean_c, var_c, n_c, mean_b, var_b, n_b, cfg)
    diff = mean_c - mean_b
    relative = diff / mean_b if mean_b else math.nan
    common = dict(
        scale="KPI mean difference candidate - baseline (outcome units)",
        estimate=diff,
        interval=(diff - half, diff + half),
        tolerance=-margin_units if cfg.direction == "higher_is_better" else margin_units,
        statistic="log e-value vs candidate within the non-inferiority margin",
        value=log_e_deg,
        threshold=log_threshold,
        samples=samples,
        details={
            "baseline_mean": mean_b,
            "candidate_mean": mean_c,
            "relative_difference": relative,
            "direction": cfg.direction,
            "margin": cfg.margin,
            "margin_kind": cfg.margin_kind,
            "non_inferiority_contrast": contrast,
            "stages": len(strata),
            "log_evalue_non_inferior": log_e_ok,
        },
    )
    worse = "lower" if cfg.direction == "higher_is_better" else "higher"
    if log_e_deg >= log_threshold:
        reason = (
            f"The KPI is {worse} on the candidate ({mean_c:.4g} vs {mean_b:.4g}) by more than "
            f"the {cfg.margin:g} {cfg.margin_kind} margin."
        )
        return MetricResult(name, DEGRADED, reason, **common)
    if min(n_b, n_c) < min_samples:
        reason = (
            f"Waiting for {min_samples} feedback outcomes per arm before calling the KPI "
            f"non-inferior (have {int(min(n_b, n_c))})."
        )
        return MetricResult(name, INCONCLUSIVE, reason, **common)
    if log_e_ok >= log_threshold:
        reason = (
            f"The candidate's KPI ({mean_c:.4g} vs {mean_b:.4g}) is non-inferior within the "
            f"{cfg.margin:g} {cfg.margin_kind} margin."
        )
        return MetricResult(name, HEALTHY, reason, **common)
    reason = (
        f"The KPI difference ({diff:+.4g}) cannot yet be told apart from the "
        f"{cfg.margin:g} {cfg.margin_kind} margin."
    )
    return MetricResult(name, INCONCLUSIVE, reason, **common)
