"""KPI non-inferiority, shadow agreement and drift, sample ratio mismatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from model_rollout.judge import JudgeConfig, evaluate
from model_rollout.judge.config import KpiConfig, SrmConfig
from model_rollout.judge.kpi import kpi_contrast, log_evalue_normal_one_sided
from model_rollout.judge.shadow import l1_allowance
from model_rollout.judge.srm import check_split

from .helpers import arm, canary_snapshot, shadow_snapshot


def test_half_normal_mixture_e_value_matches_the_integral():
    x, v, s = 0.3, 0.04, 0.5
    integrand = lambda d: (  # noqa: E731
        math.exp(d * x / v - d * d / (2 * v)) * 2 * stats.norm.pdf(d, scale=s)
    )
    expected, _ = integrate.quad(integrand, 0, np.inf)
    got = math.exp(float(log_evalue_normal_one_sided(x, v, s)))
    assert got == pytest.approx(expected, rel=1e-7)


def test_kpi_contrast_by_hand():
    higher = KpiConfig(enabled=True, margin=0.02)
    d, var, margin = kpi_contrast(0.095, 0.09, 1000, 0.10, 0.09, 19000, higher)
    assert d == pytest.approx(0.095 - 0.98 * 0.10)
    assert var == pytest.approx(0.09 / 1000 + 0.98**2 * 0.09 / 19000)
    assert margin == pytest.approx(0.002)
    lower = KpiConfig(enabled=True, margin=5.0, margin_kind="absolute", direction="lower_is_better")
    d, var, margin = kpi_contrast(103.0, 4.0, 100, 100.0, 9.0, 900, lower)
    assert d == pytest.approx(100.0 + 5.0 - 103.0)
    assert var == pytest.approx(4.0 / 100 + 9.0 / 900)
    assert margin == 5.0


def _kpi_verdict(ctr_c: float, n: int = 100_000, **kpi):
    base = arm("1", 19 * n, 0, clicks=0.10 * 19 * n)
    cand = arm("2", n, 0, clicks=ctr_c * n)
    cfg = JudgeConfig(kpi={"enabled": True, **kpi})
    return evaluate(
        canary_snapshot(base, cand), baseline="1", candidate="2", mode="canary", config=cfg
    )


def test_kpi_verdicts():
    assert _kpi_verdict(0.09).metrics["kpi"].status == "degraded"  # -10% with a 2% margin
    assert _kpi_verdict(0.10, n=1_000_000).metrics["kpi"].status == "healthy"
    assert _kpi_verdict(0.0995, n=1_000_000).metrics["kpi"].status == "healthy"  # inside margin
    assert _kpi_verdict(0.0985, n=1000).metrics["kpi"].status == "inconclusive"
    # Same numbers, but now lower is better: a higher CTR would be the degradation.
    worse = _kpi_verdict(0.11, direction="lower_is_better")
    assert worse.metrics["kpi"].status == "degraded"


def test_kpi_without_feedback_does_not_apply_and_missing_candidate_feedback_blocks():
    cfg = JudgeConfig()  # the KPI is judged by default, whenever feedback arrives
    plenty = 9_500_000, 500_000
    none = evaluate(
        canary_snapshot(arm("1", plenty[0], 0), arm("2", plenty[1], 0)),
        baseline="1",
        candidate="2",
        mode="canary",
        config=cfg,
    )
    assert none.metrics["kpi"].status == "not_applicable"
    assert "No feedback" in none.metrics["kpi"].reason
    assert none.status == "healthy", none.reason  # a model without feedback still promotes
    # The baseline gets outcomes and the candidate none: a broken feedback path, never healthy.
    v = evaluate(
        canary_snapshot(arm("1", plenty[0], 0, clicks=95_000.0), arm("2", plenty[1], 0)),
        baseline="1",
        candidate="2",
        mode="canary",
        config=cfg,
    )
    assert v.metrics["kpi"].status == "inconclusive"
    assert "candidate arm has 0 feedback" in v.metrics["kpi"].reason
    assert v.status == "inconclusive"


def _shadow(flips: int, pairs: int = 200_000, **shadow_cfg):
    out = {"kind": "categorical", "counts": {"a": 120_000, "b": 60_000, "c": 20_000}}
    base = arm("1", pairs, 0, outputs=out)
    shadow = arm("2", pairs, 0, arm_kind="shadow", outputs=out)
    cfg = JudgeConfig(shadow=shadow_cfg) if shadow_cfg else JudgeConfig()
    snap = shadow_snapshot(base, shadow, pairs, pairs - flips)
    return evaluate(snap, baseline="1", candidate="2", mode="shadow", config=cfg)


def test_flip_rate_verdicts():
    assert _shadow(10_000).metrics["shadow_agreement"].status == "degraded"  # 5% > 2%
    assert _shadow(2_000).metrics["shadow_agreement"].status == "healthy"  # 1% < 2%
    close = _shadow(41, pairs=2_000)  # 2.05% of 2000: cannot tell
    assert close.metrics["shadow_agreement"].status == "inconclusive"
    whole = _shadow(2_000)
    assert set(whole.metrics) == {
        "errors",
        "latency",
        "latency_tail",
        "shadow_agreement",
        "output_drift",
    }
    assert whole.status == "healthy"


def test_regressor_mean_abs_delta():
    out = {"kind": "numeric", "counts": {"10": 500, "11": 500}}
    base = arm("1", 10_000, 0, outputs=out)
    shadow = arm("2", 10_000, 0, arm_kind="shadow", outputs=out)
    snap = shadow_snapshot(base, shadow, 10_000, 9_000, delta_sum=10_000 * 0.5)
    unset = evaluate(snap, baseline="1", candidate="2", mode="shadow", config=JudgeConfig())
    assert unset.metrics["shadow_agreement"].status == "inconclusive"
    assert "max_mean_abs_delta" in unset.metrics["shadow_agreement"].reason
    # |delta| is 0.5 on average (sum of squares = sum: all deltas 0 or 1 -> variance 0.25).
    strict = JudgeConfig(shadow={"max_mean_abs_delta": 0.3})
    loose = JudgeConfig(shadow={"max_mean_abs_delta": 0.8})
    v = evaluate(snap, baseline="1", candidate="2", mode="shadow", config=strict)
    assert v.metrics["shadow_agreement"].status == "degraded"
    v = evaluate(snap, baseline="1", candidate="2", mode="shadow", config=loose)
    assert v.metrics["shadow_agreement"].status == "healthy"


def test_l1_allowance_by_hand_and_monotone():
    # n = 1000 lies in the epoch (512, 1024]: j = 10, N = 1024, delta_j = delta / (11 * 12).
    expected = math.sqrt(2 * 1024 * (3 * math.log(2) + math.log(132 / 0.01))) / 1000
    assert float(l1_allowance(1000, 3, 0.01)) == pytest.approx(expected)
    values = l1_allowance(np.array([10, 100, 1_000, 10_000, 100_000]), 20, 0.01)
    assert np.all(np.diff(values) < 0)
    assert float(l1_allowance(0, 3, 0.01)) == 2.0


def test_output_drift_needs_distance_beyond_tolerance_and_noise():
    def drift(b_counts, s_counts):
        base = arm("1", 1000, outputs={"kind": "categorical", "counts": b_counts})
        shadow = arm(
            "2", 1000, arm_kind="shadow", outputs={"kind": "categorical", "counts": s_counts}
        )
        snap = shadow_snapshot(base, shadow, 1000, 1000)
        return evaluate(snap, baseline="1", candidate="2", mode="shadow", config=JudgeConfig())

    small = drift({"a": 60, "b": 40}, {"a": 40, "b": 60})  # TV 0.2 but n = 100
    assert small.metrics["output_drift"].status == "inconclusive"
    big = drift({"a": 60_000, "b": 40_000}, {"a": 40_000, "b": 60_000})
    assert big.metrics["output_drift"].status == "degraded"
    same = drift({"a": 60_000, "b": 40_000}, {"a": 60_100, "b": 39_900})
    assert same.metrics["output_drift"].status == "healthy"


def test_srm_matches_savvi_and_flags_a_broken_split():
    savvi = pytest.importorskip("savvi.multinomial")
    test = savvi.Multinomial(0.001, np.array([0.95, 0.05]), k=100)
    test.update(np.array([18_800, 1_200]))
    result = check_split(18_800, 1_200, 0.05, SrmConfig())
    assert math.exp(result.log_evalue) == pytest.approx(test.odds, rel=1e-8)
    assert result.mismatch
    assert not check_split(19_010, 990, 0.05, SrmConfig()).mismatch


def test_srm_mismatch_makes_the_verdict_invalid_not_degraded():
    base, cand = arm("1", 180_000, 1800), arm("2", 20_000, 800)  # 10% share, 5% configured
    v = evaluate(
        canary_snapshot(base, cand),
        baseline="1",
        candidate="2",
        mode="canary",
        config=JudgeConfig(),
    )
    assert v.invalid and v.status == "inconclusive"
    assert "mismatch" in v.reason
    assert v.to_json()["checks"]["srm"]["mismatch"] is True
    # The per-metric evidence is still there for the humans.
    assert v.metrics["errors"].status == "degraded"
