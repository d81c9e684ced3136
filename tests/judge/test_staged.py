"""The staged count e-process (evidence carried over a rollout's steps), checked by hand, by
quadrature of its prior, and by simulation of whole multi-stage A/A streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from model_rollout.judge import Budget, JudgeConfig, evaluate
from model_rollout.judge.counts import (
    null_share,
    restarting_log_evalue,
    stage_log_lr,
    staged_log_evalue,
    staged_ratio_interval,
)

from .helpers import arm, canary_snapshot

SCALES = (0.1, 0.4, 1.6)


def prior_density(u: float) -> float:
    """The documented prior on u = log(r / r0) > 0: equal parts of three half-normals."""
    return sum(math.exp(-0.5 * (u / s) ** 2) / s * math.sqrt(2 / math.pi) for s in SCALES) / 3


@pytest.mark.parametrize(
    ("cand", "total", "rho", "side"),
    [
        ([200], [2100], [0.05], "above"),
        ([6, 30, 60], [120, 120, 120], [0.05, 0.25, 0.5], "below"),
        ([3, 1], [40, 90], [0.1, 0.5], "above"),
    ],
)
def test_the_grid_mixture_is_the_prior_integral(cand, total, rho, side):
    """A discrete mixture is valid whatever its grid; it should also be close to the integral."""
    theta0 = null_share(np.array(rho), 1.3)
    sign = 1 if side == "above" else -1

    def likelihood_ratio(u: float) -> float:
        x = sign * u
        return math.exp(
            sum(
                c * x - n * math.log1p(t * math.expm1(x))
                for c, n, t in zip(cand, total, theta0, strict=True)
            )
        )

    exact, _ = integrate.quad(lambda u: likelihood_ratio(u) * prior_density(u), 0, 8, limit=400)
    exact /= integrate.quad(prior_density, 0, 8)[0]
    assert staged_log_evalue(cand, total, theta0, side) == pytest.approx(math.log(exact), abs=0.15)


def test_one_stage_log_likelihood_ratio_by_hand():
    # 3 of 10 events in the candidate at theta0 = 0.2, alternative r = r0 e^u with u = log 2:
    # theta1 = 0.2 * 2 / (0.2 * 2 + 0.8) = 1/3; LR = (1/3 / 0.2)^3 (2/3 / 0.8)^7
    lr = stage_log_lr([3], [10], [0.2], "above")
    u = np.geomspace(0.002, 8.0, 64)
    j = int(np.argmin(abs(u - math.log(2))))
    t1 = 0.2 * math.exp(u[j]) / (0.2 * math.exp(u[j]) + 0.8)
    expected = 3 * math.log(t1 / 0.2) + 7 * math.log((1 - t1) / 0.8)
    assert lr[0, j] == pytest.approx(expected, rel=1e-9)


def test_no_events_no_evidence_and_unreached_stages_count_as_one():
    assert staged_log_evalue([], [], [], "above") == 0.0
    assert staged_log_evalue([0, 0], [0, 0], [0.05, 0.5], "above") == pytest.approx(0.0, abs=1e-9)
    # one stage of three reached, with no events: the mean of three ones
    assert restarting_log_evalue([0], [0], [0.05], "above", 3) == pytest.approx(0.0, abs=1e-9)


def test_multi_stage_a_a_streams_stay_under_alpha_at_every_look():
    """Identical arms, shares 5% -> 25% -> 50%, 20 looks per stage, 600 rollouts: the share
    whose restarting e-process ever reaches 1/alpha stays below alpha (Ville)."""
    rng = np.random.default_rng(7)
    alpha, looks, reps = 0.1, 20, 600
    shares = [0.05, 0.25, 0.5]
    crossed = 0
    for _ in range(reps):
        cand, total, rho, hit = [], [], [], False
        for share in shares:
            cand.append(0.0), total.append(0.0), rho.append(share)
            for _ in range(looks):
                n = rng.poisson(5)
                c = rng.binomial(n, share)  # equal rates: each event is the candidate's w.p. share
                cand[-1] += c
                total[-1] += n
                if restarting_log_evalue(cand, total, rho, "above", 3) >= math.log(1 / alpha):
                    hit = True
                    break
            if hit:
                break
        crossed += hit
    assert crossed / reps < alpha  # the Wilson upper bound of 0.1 at 600 runs is ~0.125


def test_restarting_catches_a_late_regression_the_pooled_one_drowns():
    """Fine at 5% and 25% (lots of evidence of it), twice the errors at 50%."""
    rho = [0.05, 0.25, 0.5]
    theta0 = null_share(np.array(rho), 1.2)
    early_ok = [50, 250]  # candidate events when the rates are equal: shares of 1000 events
    totals = [1000, 1000, 400]
    late = 267  # 50% share, twice the rate: 2/3 of 400
    cand = [*early_ok, late]
    restarting = restarting_log_evalue(cand, totals, theta0, "above", 3)
    pooled = staged_log_evalue(cand, totals, theta0, "above")
    assert restarting > pooled + 3
    assert restarting >= math.log(7 / 0.05)  # rolls back at the rollout's alpha per test


def test_ratio_interval_covers_the_truth_and_narrows_with_evidence():
    rho = np.array([0.05, 0.25, 0.5])
    wide = staged_ratio_interval([5, 25, 50], [100, 100, 100], rho, 0.01)
    narrow = staged_ratio_interval([50, 250, 500], [1000, 1000, 1000], rho, 0.01)
    assert wide[0] < narrow[0] < 1.0 < narrow[1] < wide[1]
    assert staged_ratio_interval([0], [20], [0.05], 0.01)[0] == 0.0  # no upper evidence side
    assert staged_ratio_interval([5], [5], [0.05], 0.01)[1] == math.inf


def test_evidence_carries_over_the_steps_of_a_phase():
    """Identical arms at 0.1% errors: the 50% step alone cannot show the error rate within its
    tolerance (a doubling), the three steps together can."""
    cfg = JudgeConfig()
    budget = Budget(0.05 / 7, 3)
    steps = [(5, 114_000, 6_000), (25, 90_000, 30_000)]
    earlier = [
        canary_snapshot(arm("1", nb, nb // 1000), arm("2", nc, nc // 1000), {"1": 100 - w, "2": w})
        for w, nb, nc in steps
    ]
    current = canary_snapshot(arm("1", 30_000, 30), arm("2", 30_000, 30), {"1": 50, "2": 50})

    def errors(earlier_stages):
        v = evaluate(
            current,
            baseline="1",
            candidate="2",
            mode="canary",
            config=cfg,
            earlier=earlier_stages,
            budget=budget,
        )
        return v.metrics["errors"]

    alone, pooled = errors([]), errors(earlier)
    assert alone.status == "inconclusive", alone.reason
    assert pooled.status == "healthy", pooled.reason
    assert pooled.details["stages"] == 3
    assert pooled.samples["candidate_requests"] == 66_000


def test_kpi_is_stratified_by_step_so_a_drifting_kpi_is_not_a_difference():
    """The click rate doubles between the steps (time of day) while the arms are identical;
    pooled means would weigh the steps differently per arm (5% vs 50% share) and show the
    candidate better or worse; stratified by step they do not differ."""
    cfg = JudgeConfig(kpi={"margin": 0.02})
    budget = Budget(0.05 / 7, 2)
    first = canary_snapshot(
        arm("1", 190_000, clicks=19_000.0), arm("2", 10_000, clicks=1_000.0), {"1": 95, "2": 5}
    )
    second = canary_snapshot(
        arm("1", 100_000, clicks=20_000.0), arm("2", 100_000, clicks=20_000.0), {"1": 50, "2": 50}
    )
    v = evaluate(
        second,
        baseline="1",
        candidate="2",
        mode="canary",
        config=cfg,
        earlier=[first],
        budget=budget,
    )
    kpi = v.metrics["kpi"]
    assert kpi.status != "degraded"
    assert kpi.details["non_inferiority_contrast"] > 0  # the margin, not a bias
    # the naive pooled difference is large and spurious: (21000/110000) - (39000/290000)
    assert kpi.estimate == pytest.approx(21_000 / 110_000 - 39_000 / 290_000)
