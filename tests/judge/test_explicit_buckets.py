"""Latency histograms with explicit bounds (snapshot schema 2): a source such as Prometheus
hands the judge its own buckets (`latency.bounds_ms` + `counts`), no re-binning (issue #13)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from model_rollout.judge import JudgeConfig, evaluate
from model_rollout.judge.histograms import parse_bounds

from .helpers import arm, canary_snapshot

# a Prometheus-style layout: 10% steps from 1 ms to ~14 s, then +Inf (None)
BOUNDS = [round(1.1**k, 6) for k in range(101)] + [None]


def bounded(n: int, median_ms: float = 50.0, sigma: float = 0.5, scale: float = 1.0) -> dict:
    """Expected counts of n lognormal latencies in BOUNDS' buckets (no sampling noise)."""
    upper = np.log(np.array(BOUNDS[:-1], dtype=float))
    cdf = norm.cdf((upper - math.log(median_ms * scale)) / sigma)
    per_bucket = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    return {"bounds_ms": BOUNDS, "counts": [round(float(c) * n) for c in per_bucket]}


def explicit_arm(version: str, requests: int, scale: float = 1.0) -> dict:
    entry = arm(version, requests, 0)
    entry["latency"] = bounded(requests, scale=scale)
    return entry


def judge(base: dict, cand: dict, earlier=(), **cfg):
    snap = {**canary_snapshot(base, cand), "schema": 2}
    return evaluate(
        snap,
        earlier=earlier,
        baseline="1",
        candidate="2",
        mode="canary",
        config=JudgeConfig(**cfg),
    )


def test_a_slowdown_is_caught_and_an_equal_candidate_passes_on_explicit_buckets():
    slow = judge(explicit_arm("1", 190_000), explicit_arm("2", 10_000, scale=1.25))
    assert slow.metrics["latency"].status == "degraded"
    assert slow.metrics["latency_tail"].status == "degraded"
    same = judge(explicit_arm("1", 190_000), explicit_arm("2", 10_000))
    assert same.metrics["latency"].status == "healthy"
    assert same.status != "degraded"


def test_explicit_and_gateway_buckets_estimate_the_same_shift():
    """The same +20% read from 10% buckets and from the gateway's 2% buckets."""
    coarse = judge(explicit_arm("1", 190_000), explicit_arm("2", 10_000, scale=1.2))
    fine = judge(arm("1", 190_000), arm("2", 10_000, scale=1.2))
    got, want = coarse.metrics["latency"].value, fine.metrics["latency"].value
    assert got == pytest.approx(want, rel=0.05), (got, want)


def test_the_inf_bucket_is_a_point_at_the_last_bound():
    lo, hi, cnt = parse_bounds([10, 20, None], [1, 2, 3])
    assert np.exp(lo) == pytest.approx([5, 10, 20]) and np.exp(hi) == pytest.approx([10, 20, 20])
    assert list(cnt) == [1, 2, 3]


@pytest.mark.parametrize(
    "bounds, counts, expected",
    [
        ([10, 5, None], [1, 1, 1], "strictly increasing"),
        ([10, 20], [1], "same length"),
        ([10, 20], [1, -1], "non-negative"),
        ([0, 20], [1, 1], "positive finite"),
        ("10,20", [1, 1], "must be lists"),
    ],
)
def test_malformed_bounds_make_latency_inconclusive_naming_the_problem(bounds, counts, expected):
    cand = arm("2", 10_000, 0)
    cand["latency"] = {"bounds_ms": bounds, "counts": counts}
    v = judge(explicit_arm("1", 190_000), cand)
    assert v.metrics["latency"].status == "inconclusive"
    assert "Latency histogram of version 2 is invalid" in v.metrics["latency"].reason
    assert expected in v.metrics["latency"].reason
    assert "atency" not in v.metrics["errors"].reason  # the other metrics judge on their own


def test_stages_with_different_bucket_layouts_are_not_added_up():
    earlier = [{**canary_snapshot(arm("1", 90_000), arm("2", 10_000)), "schema": 2}]
    v = judge(explicit_arm("1", 190_000), explicit_arm("2", 10_000), earlier)
    assert v.metrics["latency_tail"].status == "inconclusive"  # it adds the stages up
    assert "different bucket layouts" in v.metrics["latency_tail"].reason


def test_a_snapshot_of_an_unknown_schema_is_not_judged():
    snap = {**canary_snapshot(arm("1", 190_000), arm("2", 10_000)), "schema": 3}
    v = evaluate(snap, baseline="1", candidate="2", mode="canary", config=JudgeConfig())
    assert v.status == "inconclusive" and "schema 3" in v.reason


def test_the_projection_scales_explicit_buckets_like_the_gateways():
    """ "How much more traffic?" re-judges scaled counts: explicit buckets scale too, so an
    equal candidate with too little traffic yet gets a finite answer, not "never"."""
    from model_rollout.decisions.projection import needed_factor, scaled

    snap = {**canary_snapshot(explicit_arm("1", 600), explicit_arm("2", 200)), "schema": 2}
    tripled = scaled(snap, 3.0)["arms"][1]["latency"]["counts"]
    assert tripled == [3.0 * c for c in snap["arms"][1]["latency"]["counts"]]

    def shown(s):
        v = evaluate(s, baseline="1", candidate="2", mode="canary", config=JudgeConfig())
        return v.metrics["latency"].status == "healthy"

    assert not shown(snap)
    factor = needed_factor(shown, snap)
    assert factor is not None and 1.0 < factor < 1000.0


def test_observed_traffic_reads_the_median_from_either_latency_form():
    """`model-rollout plan --observed` measures the traffic from a snapshot of any source."""
    from model_rollout.decisions.traffic import observed_traffic

    fine = canary_snapshot(arm("1", 9_000), arm("2", 1_000))
    coarse = {**canary_snapshot(explicit_arm("1", 9_000), explicit_arm("2", 1_000)), "schema": 2}
    a, b = observed_traffic(fine, 100.0), observed_traffic(coarse, 100.0)
    assert a.rate == b.rate == 100.0
    assert a.latency_ms == pytest.approx(50.0, rel=0.02)
    assert b.latency_ms == pytest.approx(50.0, rel=0.05)
    assert b.latency_sigma == pytest.approx(0.5, rel=0.1)
