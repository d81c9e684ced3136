"""Count e-processes: hand-computed values, savvi cross-check, anytime validity by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from model_rollout.judge.counts import (
    critical_counts,
    log_evalue_above,
    log_evalue_below,
    log_evalue_two_sided,
    null_share,
    proportion_interval,
    rate_ratio,
)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def test_two_sided_matches_the_formula_by_hand():
    # s = 3 of n = 10 at p0 = 0.2, k = 10: prior Beta(2, 8).
    # E = B(2 + 3, 8 + 7) / B(2, 8) / (0.2^3 * 0.8^7)
    expected = _log_beta(5, 15) - _log_beta(2, 8) - (3 * math.log(0.2) + 7 * math.log(0.8))
    assert float(log_evalue_two_sided(3, 10, 0.2, k=10)) == pytest.approx(expected, rel=1e-12)


def test_no_data_is_no_evidence():
    assert float(log_evalue_two_sided(0, 0, 0.05)) == pytest.approx(0.0, abs=1e-12)
    assert float(log_evalue_above(0, 0, 0.05)) == pytest.approx(0.0, abs=1e-12)
    assert float(log_evalue_below(0, 0, 0.05)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("s", "n", "p0"), [(7, 20, 0.2), (2, 20, 0.2), (40, 400, 0.05)])
def test_one_sided_is_the_truncated_mixture(s, n, p0):
    """E_above = integral over p > p0 of L(p)/L(p0) against the truncated Beta prior."""
    k = 10.0
    a, b = k * p0, k * (1 - p0)
    prior = stats.beta(a, b)

    def ratio(p):
        return math.exp(s * math.log(p / p0) + (n - s) * math.log((1 - p) / (1 - p0)))

    above, _ = integrate.quad(lambda p: ratio(p) * prior.pdf(p), p0, 1, limit=200)
    below, _ = integrate.quad(lambda p: ratio(p) * prior.pdf(p), 0, p0, limit=200)
    assert math.exp(float(log_evalue_above(s, n, p0, k))) == pytest.approx(
        above / prior.sf(p0), rel=1e-6
    )
    assert math.exp(float(log_evalue_below(s, n, p0, k))) == pytest.approx(
        below / prior.cdf(p0), rel=1e-6
    )


def test_two_sided_equals_savvi_multinomial_along_a_stream():
    """savvi.Multinomial (Lindon & Malek's SRM test) computes the same e-value for 2 cells."""
    savvi = pytest.importorskip("savvi.multinomial")
    rng = np.random.default_rng(3)
    for rho, k in ((0.05, 100.0), (0.25, 100.0), (0.5, 20.0)):
        test = savvi.Multinomial(0.05, np.array([1 - rho, rho]), k=k)
        total = np.zeros(2, dtype=np.int64)
        for _ in range(30):
            x = rng.multinomial(40, [1 - rho * 1.3, rho * 1.3])
            test.update(x)
            total += x
            ours = math.exp(float(log_evalue_two_sided(total[1], total.sum(), rho, k)))
            assert ours == pytest.approx(test.odds, rel=1e-8)


def test_split_e_process_keeps_its_level_under_repeated_looks():
    """Ville: under the null, sup_t E_t >= 1/alpha in at most alpha of the runs (360 looks)."""
    rng = np.random.default_rng(11)
    runs, looks, alpha, rho = 2000, 360, 0.05, 0.05
    events = rng.poisson(3.0, size=(looks, runs))
    cand = rng.binomial(events, rho)
    n = np.cumsum(events, axis=0)
    s = np.cumsum(cand, axis=0)
    log_e = log_evalue_above(s, n, rho)
    false_alarms = np.mean(np.max(log_e, axis=0) >= math.log(1 / alpha))
    assert false_alarms <= alpha
    # A naive per-look one-sided z-test on the same streams is far beyond alpha.
    z = (s - n * rho) / np.sqrt(np.maximum(n * rho * (1 - rho), 1e-9))
    assert np.mean(np.max(z, axis=0) >= stats.norm.ppf(1 - alpha)) > 2 * alpha


def test_composite_null_below_the_boundary_is_even_safer():
    rng = np.random.default_rng(5)
    events = rng.poisson(5.0, size=(200, 2000))
    cand = rng.binomial(events, 0.04)  # true share below the null share 0.05
    log_e = log_evalue_above(np.cumsum(cand, 0), np.cumsum(events, 0), 0.05)
    assert np.mean(np.max(log_e, axis=0) >= math.log(20)) <= 0.01


def test_more_candidate_events_mean_more_evidence_of_too_many():
    s = np.arange(0, 60)
    log_e = log_evalue_above(s, s + 500, 0.05)
    assert np.all(np.diff(log_e) > 0)
    log_ok = log_evalue_below(s, s + 500, 0.05)
    assert np.all(np.diff(log_ok) < 0)


def test_null_share_and_rate_ratio_are_inverse():
    assert float(null_share(0.05, 1.0)) == pytest.approx(0.05)
    assert float(null_share(0.05, 2.0)) == pytest.approx(0.1 / 1.05)
    for ratio in (0.5, 1.0, 1.2, 3.0):
        assert float(rate_ratio(null_share(0.1, ratio), 0.1)) == pytest.approx(ratio)


def test_critical_counts_are_where_the_evidence_reaches_the_threshold():
    n = np.array([[95000.0], [5000.0], [400.0]])
    q = np.array([0.5, 0.9, 0.99])
    log_thr = 5.5
    lo, hi = critical_counts(n, q, log_thr)
    p = np.broadcast_to(q, lo.shape)
    nn = np.broadcast_to(n, lo.shape)
    for side in (lo, hi):
        finite = np.isfinite(side)
        got = log_evalue_two_sided(side[finite], nn[finite], p[finite])
        assert np.all(got >= log_thr - 1e-9)
        assert np.all(got <= log_thr + 0.05)
    assert np.all(lo <= nn * p) and np.all(hi >= nn * p)


def test_critical_counts_say_infinite_when_no_count_is_enough():
    lo, hi = critical_counts(np.array([3.0]), np.array([0.5]), math.log(1000))
    assert lo[0] == -math.inf and hi[0] == math.inf


def test_proportion_interval_by_hand_and_edges():
    # Endpoints solve s log p + (n - s) log(1 - p) = log m + log alpha.
    s, n, alpha, a, b = 30, 1000, 0.05, 0.5, 0.5
    lo, hi = proportion_interval(s, n, alpha, a, b)
    level = _log_beta(a + s, b + n - s) - _log_beta(a, b) + math.log(alpha)
    for p in (lo, hi):
        assert s * math.log(p) + (n - s) * math.log1p(-p) == pytest.approx(level, abs=1e-8)
    assert lo < s / n < hi
    # No successes: the lower end is exactly 0, the upper solves n log(1 - p) = level.
    lo0, hi0 = proportion_interval(0, 100, 0.05, 0.5, 0.5)
    level0 = _log_beta(0.5, 100.5) - _log_beta(0.5, 0.5) + math.log(0.05)
    assert lo0 == 0.0 and hi0 == pytest.approx(1 - math.exp(level0 / 100), rel=1e-9)
    assert all(math.isnan(x) for x in proportion_interval(0, 0, 0.05, 1, 1))
