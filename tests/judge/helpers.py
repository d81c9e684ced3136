"""Snapshot builders for the judge tests (deterministic: histograms from quantiles, not draws)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from model_rollout.histogram import LATENCY_GROWTH, LATENCY_MIN_MS, latency_bucket


def lognormal_counts(n: int, median_ms: float = 50.0, sigma: float = 0.5, scale: float = 1.0):
    """Expected bucket counts of n lognormal latencies, rounded (no sampling noise)."""
    if n <= 0:
        return {}
    lo = latency_bucket(median_ms * scale * math.exp(-6 * sigma))
    hi = latency_bucket(median_ms * scale * math.exp(6 * sigma))
    idx = np.arange(lo, hi + 1)
    edges = np.log(LATENCY_MIN_MS) + np.arange(lo, hi + 2) * math.log(LATENCY_GROWTH)
    cdf = norm.cdf((edges - math.log(median_ms * scale)) / sigma)
    cdf[0], cdf[-1] = 0.0, 1.0
    counts = np.round(np.diff(cdf) * n).astype(int)
    return {str(i): int(c) for i, c in zip(idx, counts, strict=True) if c > 0}


def arm(
    version: str,
    requests: int,
    errors: int = 0,
    *,
    arm_kind: str = "primary",
    scale: float = 1.0,
    clicks: float | None = None,
    feedback: int | None = None,
    outputs: dict | None = None,
) -> dict:
    latency = lognormal_counts(requests, scale=scale)
    entry = {
        "version": version,
        "arm": arm_kind,
        "requests": requests,
        "errors": errors,
        "rejected": 0,
        "latency": {"counts": latency},
        "latency_sum_ms": 0.0,
    }
    if clicks is not None:
        count = requests if feedback is None else feedback
        entry["feedback"] = {"count": count, "sum": clicks, "sum_sq": clicks}
    if outputs is not None:
        entry["outputs"] = outputs
    return entry


def canary_snapshot(base: dict, cand: dict, weights: dict | None = None) -> dict:
    return {
        "model": "m",
        "since": 0.0,
        "until": 600.0,
        "generation": 1,
        "weights": weights or {base["version"]: 95, cand["version"]: 5},
        "shadows": [],
        "arms": [base, cand],
        "pairs": [],
    }


def shadow_snapshot(base: dict, shadow: dict, pairs: int, agree: int, delta_sum=None) -> dict:
    flips = pairs - agree
    return {
        "model": "m",
        "weights": {base["version"]: 100},
        "shadows": [shadow["version"]],
        "arms": [base, shadow],
        "pairs": [
            {
                "shadow_version": shadow["version"],
                "primary_version": base["version"],
                "pairs": pairs,
                "agree": agree,
                "abs_delta_sum": float(flips if delta_sum is None else delta_sum),
                "abs_delta_sq_sum": float(flips if delta_sum is None else delta_sum),
            }
        ],
    }
