"""Latency: histogram CDF reading, quantile bounds, shift and tail verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_rollout.histogram import LATENCY_GROWTH, LATENCY_MIN_MS, latency_bucket_bounds
from model_rollout.judge import JudgeConfig, evaluate
from model_rollout.judge.counts import log_evalue_above, staged_log_evalue
from model_rollout.judge.histograms import cdf_at, cdf_points, inverse_cdf, parse_counts
from model_rollout.judge.latency import quantile_bounds, shift_bounds, tail_counts

from .helpers import arm, canary_snapshot, lognormal_counts


def test_parse_counts_sorts_and_drops_empty_buckets():
    idx, cnt = parse_counts({"413": 17, "412": 10, "500": 0})
    assert idx.tolist() == [412, 413]
    assert cnt.tolist() == [10.0, 17.0]
    for bad in ({"-1": 3}, {"x": 1}, {"3": -1}, {"3": float("nan")}, {"100000": 1}):
        with pytest.raises(ValueError):
            parse_counts(bad)


def test_cdf_is_log_linear_inside_buckets_by_hand():
    idx, cnt = parse_counts({"100": 10, "101": 10, "200": 20})
    log_x, cum = cdf_points(idx, cnt)
    lo100, hi100 = latency_bucket_bounds(100)
    lo200, hi200 = latency_bucket_bounds(200)
    # Half-way through bucket 100 in log space: 5 observations.
    mid = 0.5 * (math.log(lo100) + math.log(hi100))
    assert float(cdf_at(log_x, cum, np.array([mid]))[0]) == pytest.approx(5.0)
    # The median (20 of 40) is the top edge of bucket 101 = bottom of bucket 102.
    assert math.exp(float(inverse_cdf(log_x, cum, np.array([20.0]))[0])) == pytest.approx(
        LATENCY_MIN_MS * LATENCY_GROWTH**102
    )
    # Between buckets 101 and 200 nothing happens: the CDF is flat at 20.
    assert float(cdf_at(log_x, cum, np.array([math.log(lo200) - 0.1]))[0]) == pytest.approx(20)
    # 30 of 40 is half-way through bucket 200.
    got = math.exp(float(inverse_cdf(log_x, cum, np.array([30.0]))[0]))
    assert got == pytest.approx(math.sqrt(lo200 * hi200))
    # Out of range.
    assert inverse_cdf(log_x, cum, np.array([-np.inf, 41.0])).tolist() == [-np.inf, np.inf]


def test_batched_and_single_paths_agree():
    rng = np.random.default_rng(2)
    idx = np.arange(300, 420)
    cnt = rng.poisson(20.0, size=(4, idx.size)).astype(float)
    log_x, cum = cdf_points(idx, cnt)
    s = rng.uniform(0, cum[:, -1:], size=(4, 3))
    log_t = rng.uniform(log_x[0] - 0.1, log_x[-1] + 0.1, size=(4, 3))
    batched_inv = inverse_cdf(log_x, cum, s)
    batched_cdf = cdf_at(log_x, cum, log_t)
    for r in range(4):
        np.testing.assert_allclose(inverse_cdf(log_x, cum[r], s[r]), batched_inv[r], rtol=1e-12)
        np.testing.assert_allclose(cdf_at(log_x, cum[r], log_t[r]), batched_cdf[r], rtol=1e-12)


def test_quantile_bounds_cover_the_true_median_and_shrink():
    widths = []
    for n in (1_000, 100_000):
        idx, cnt = parse_counts(lognormal_counts(n, median_ms=50.0))
        lo, mid, hi = quantile_bounds(cdf_points(idx, cnt), [0.5], math.log(40), 100.0)
        assert math.exp(lo[0]) < 50.0 < math.exp(hi[0])
        assert math.exp(mid[0]) == pytest.approx(50.0, rel=0.01)
        widths.append(hi[0] - lo[0])
    assert widths[1] < widths[0] / 5


def test_shift_bounds_find_a_20_percent_slowdown():
    base = cdf_points(*parse_counts(lognormal_counts(190_000)))
    cand = cdf_points(*parse_counts(lognormal_counts(10_000, scale=1.2)))
    lo, mid, hi, _ = shift_bounds(base, cand, [0.5, 0.9], math.log(160), 100.0)
    assert np.exp(mid) == pytest.approx([1.2, 1.2], rel=0.02)
    assert np.all(np.exp(lo) > 1.1) and np.all(np.exp(hi) < 1.3)


def test_tail_counts_by_hand():
    # Baseline: 99 requests in bucket 100, 1 in bucket 300; candidate: 10 in bucket 300.
    base = cdf_points(*parse_counts({"100": 99, "300": 1}))
    cand = cdf_points(*parse_counts({"100": 90, "300": 10}))
    ev_c, ev_b, log_tau = tail_counts(base, cand, 0.99, 0.0)
    # tau (99 of 100) is the top edge of bucket 100; everything in bucket 300 exceeds it.
    assert math.exp(float(log_tau)) == pytest.approx(latency_bucket_bounds(100)[1])
    assert float(ev_c) == pytest.approx(10.0)
    assert float(ev_b) == pytest.approx(1.0)


def _verdict(scale: float, n_base: int, n_cand: int, **cfg):
    snap = canary_snapshot(arm("1", n_base, 0), arm("2", n_cand, 0, scale=scale))
    config = JudgeConfig(**cfg)
    return evaluate(snap, baseline="1", candidate="2", mode="canary", config=config)


def test_latency_degraded_beyond_tolerance_healthy_within():
    slow = _verdict(1.25, 190_000, 10_000)
    assert slow.metrics["latency"].status == "degraded"
    assert slow.metrics["latency_tail"].status == "degraded"
    assert slow.status == "degraded"
    same = _verdict(1.0, 190_000, 10_000)
    assert same.metrics["latency"].status == "healthy"
    # ~100 candidate requests beyond p99 cannot yet exclude a 5% tail slow-down...
    assert same.metrics["latency_tail"].status == "inconclusive"
    # ...a few hundred more can.
    assert _verdict(1.0, 950_000, 50_000).metrics["latency_tail"].status == "healthy"


def test_a_tiny_real_slowdown_on_huge_traffic_is_not_a_degradation():
    """+3% everywhere with a million requests: significant, but inside the tolerances."""
    v = _verdict(1.03, 19_000_000, 1_000_000)
    assert v.metrics["latency"].status == "healthy"
    assert v.metrics["latency_tail"].status == "healthy"
    tight = _verdict(1.03, 19_000_000, 1_000_000, latency={"tolerance": 0.0})
    assert tight.metrics["latency"].status == "degraded"


def test_tail_regression_alone_is_caught_by_the_tail_metric():
    base = lognormal_counts(190_000)
    cand = lognormal_counts(10_000)
    # Move the candidate's slowest 3% up by 40%: shift those buckets by log(1.4)/log(1.02).
    idx, cnt = parse_counts(cand)
    cum = np.cumsum(cnt) / cnt.sum()
    shift = round(math.log(1.4) / math.log(LATENCY_GROWTH))
    moved = {
        str(i + shift if c > 0.97 else i): int(v) for i, v, c in zip(idx, cnt, cum, strict=True)
    }
    snap = canary_snapshot(arm("1", 190_000), arm("2", 10_000))
    snap["arms"][0]["latency"]["counts"] = base
    snap["arms"][1]["latency"]["counts"] = moved
    v = evaluate(snap, baseline="1", candidate="2", mode="canary", config=JudgeConfig())
    assert v.metrics["latency_tail"].status == "degraded"
    assert v.metrics["latency"].status != "degraded"
    tail = v.metrics["latency_tail"]
    assert tail.value >= tail.threshold
    ev_c = tail.samples["candidate_events"]
    assert ev_c > 0.02 * 10_000


def test_tail_e_value_in_the_evidence_is_the_count_e_process():
    v = _verdict(1.25, 190_000, 10_000)
    tail = v.metrics["latency_tail"]
    ev_c = tail.samples["candidate_events"]
    rate_b = tail.details["baseline_exceedance_rate_at_tau_over_1_plus_tol"]
    ev_b = rate_b * tail.samples["baseline"]
    expected = staged_log_evalue([ev_c], [ev_c + ev_b], [0.05], "above")
    assert tail.value == pytest.approx(expected, rel=1e-9)
    # the same evidence as the single-stage Beta mixture, up to the prior
    assert tail.value == pytest.approx(float(log_evalue_above(ev_c, ev_c + ev_b, 0.05)), abs=1.0)
