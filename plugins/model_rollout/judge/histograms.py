"""Cumulative views of latency histograms, batched so the benchmark can reuse them.

A histogram is a list of buckets, each with its lower and upper edge (log ms) and a count,
in one of two forms a snapshot may carry: the gateway's fixed 2% log buckets by index
(`parse_counts`, `bucket_edges`), or explicit bounds such as a Prometheus histogram's `le`
(`parse_bounds`). It is read as a piecewise log-linear CDF: inside a bucket the mass is
spread evenly in log(ms), which is how a log-spaced bucket's width is best used. Arrays have
any leading batch shape (one snapshot: none; the benchmark: replicates); cost is
O(number of buckets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from model_rollout.histogram import LATENCY_BUCKETS, LATENCY_GROWTH, LATENCY_MIN_MS

_LOG_MIN = math.log(LATENCY_MIN_MS)
_LOG_GROWTH = math.log(LATENCY_GROWTH)


def parse_counts(counts: Mapping | None) -> tuple[np.ndarray, np.ndarray]:
    """Sparse {bucket: count} -> sorted (bucket indexes, counts); raises ValueError if malformed."""
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if not isinstance(counts, Mapping):
        raise ValueError("latency.counts must be a mapping of bucket index to count")
    idx = np.fromiter(map(int, counts), dtype=np.int64, count=len(counts))
    cnt = np.fromiter(map(float, counts.values()), dtype=float, count=len(counts))
    if not np.all(np.isfinite(cnt)) or np.any(cnt < 0):
        raise ValueError("latency counts must be finite and non-negative")
    if np.any(idx < 0) or np.any(idx >= LATENCY_BUCKETS):
        raise ValueError(f"latency bucket indexes must be in 0..{LATENCY_BUCKETS - 1}")
    keep = cnt > 0
    idx, cnt = idx[keep], cnt[keep]
    order = np.argsort(idx, kind="stable")
    return idx[order], cnt[order]


def bucket_edges(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edges (log ms) of the gateway's fixed buckets `idx`."""
    lower = _LOG_MIN + np.asarray(idx) * _LOG_GROWTH
    return lower, lower + _LOG_GROWTH


def parse_bounds(bounds, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Explicit buckets -> (lower log ms, upper log ms, counts) without the empty ones.

    `bounds` are upper bounds in ms, increasing, the last may be None (+Inf); `counts[i]` is
    the number of observations in (bounds[i-1], bounds[i]] (not cumulative). The first
    bucket's lower edge is taken one bucket-ratio below its upper edge (log-spaced layouts);
    the +Inf bucket is a point at the last finite bound, so quantiles beyond it read as that
    bound (as Prometheus' `histogram_quantile` does). Raises ValueError naming the problem.
    """
    if not isinstance(bounds, list | tuple) or not isinstance(counts, list | tuple):
        raise ValueError("latency.bounds_ms and latency.counts must be lists")
    if not bounds or len(bounds) != len(counts):
        raise ValueError(
            f"latency.bounds_ms ({len(bounds)}) and latency.counts ({len(counts)}) must be "
            "non-empty and of the same length"
        )
    finite = list(bounds[:-1]) + ([] if bounds[-1] is None else [bounds[-1]])
    try:
        upper = np.array([float(b) for b in finite])
        cnt = np.array([float(c) for c in counts])
    except (TypeError, ValueError):
        raise ValueError(
            "latency bounds and counts must be numbers (the last bound may be null)"
        ) from None
    if not upper.size or not np.all(np.isfinite(upper)) or np.any(upper <= 0):
        raise ValueError("latency.bounds_ms must be positive finite numbers (the last may be null)")
    if np.any(np.diff(upper) <= 0):
        raise ValueError("latency.bounds_ms must be strictly increasing")
    if not np.all(np.isfinite(cnt)) or np.any(cnt < 0):
        raise ValueError("latency counts must be finite and non-negative")
    log_hi = np.log(upper)
    first_lo = 2 * log_hi[0] - log_hi[1] if log_hi.size > 1 else log_hi[0]
    log_lo = np.concatenate([[first_lo], log_hi[:-1]])
    if bounds[-1] is None:  # the +Inf bucket: a point at the last finite bound
        log_lo = np.append(log_lo, log_hi[-1])
        log_hi = np.append(log_hi, log_hi[-1])
    keep = cnt > 0
    return log_lo[keep], log_hi[keep], cnt[keep]


def cdf_points(idx: np.ndarray, cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`edge_cdf_points` of the gateway's fixed buckets `idx`."""
    return edge_cdf_points(*bucket_edges(idx), cnt)


def edge_cdf_points(
    log_lo: np.ndarray, log_hi: np.ndarray, cnt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Knots (log ms, cumulative count) of the CDF: each bucket contributes its two edges.

    Buckets are sorted and do not overlap. `log_lo`, `log_hi` have shape (B,); `cnt`
    (..., B). Returns log_x (2B,) and cum (..., 2B), both non-decreasing, cum starting at 0.
    """
    log_x = np.stack([log_lo, log_hi], axis=-1).reshape(-1)
    after = np.cumsum(cnt, axis=-1)
    before = after - cnt
    cum = np.stack([before, after], axis=-1).reshape(*cnt.shape[:-1], -1)
    return log_x, cum


def cdf_at(log_x: np.ndarray, cum: np.ndarray, log_t) -> np.ndarray:
    """Interpolated count of observations <= exp(log_t); log_t has shape (..., K)."""
    log_t = np.asarray(log_t, dtype=float)
    if log_x.size == 0:
        return np.zeros(np.broadcast_shapes(log_t.shape, cum.shape[:-1] + (1,)))
    if cum.ndim == 1:  # one histogram: numpy's interp is the fast path
        return np.interp(log_t, log_x, cum)
    j = np.searchsorted(log_x, log_t, side="right")
    hi = np.clip(j, 1, log_x.size - 1)
    lo = hi - 1
    x0, x1 = log_x[lo], log_x[hi]
    c0 = np.take_along_axis(cum, np.broadcast_to(lo, cum.shape[:-1] + lo.shape[-1:]), axis=-1)
    c1 = np.take_along_axis(cum, np.broadcast_to(hi, cum.shape[:-1] + hi.shape[-1:]), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(x1 > x0, (log_t - x0) / (x1 - x0), 1.0)
    out = c0 + np.clip(frac, 0.0, 1.0) * (c1 - c0)
    out = np.where(log_t < log_x[0], 0.0, out)
    return np.where(log_t >= log_x[-1], cum[..., -1:], out)


def inverse_cdf(log_x: np.ndarray, cum: np.ndarray, s) -> np.ndarray:
    """log ms at which the interpolated cumulative count reaches `s` (shape (..., K)).

    s = -inf gives -inf (no lower bound), s beyond the total gives +inf (no upper bound).
    """
    s = np.asarray(s, dtype=float)
    if log_x.size == 0:
        return np.full(np.broadcast_shapes(s.shape, cum.shape[:-1] + (1,)), np.nan)
    if cum.ndim == 1:  # one histogram: the same rule as below, without the broadcasting
        hi = np.clip(np.searchsorted(cum, s, side="left"), 1, log_x.size - 1)
        lo = hi - 1
        c0, c1 = cum[lo], cum[hi]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(c1 > c0, (s - c0) / (c1 - c0), 0.0)
        out = log_x[lo] + np.clip(frac, 0.0, 1.0) * (log_x[hi] - log_x[lo])
        out = np.where(s <= 0.0, log_x[0], out)
        out = np.where(s == -np.inf, -np.inf, out)
        return np.where(s > cum[-1], np.inf, out)
    j = np.sum(cum[..., None, :] < s[..., :, None], axis=-1)
    hi = np.clip(j, 1, log_x.size - 1)
    lo = hi - 1
    c0 = np.take_along_axis(cum, np.broadcast_to(lo, cum.shape[:-1] + lo.shape[-1:]), axis=-1)
    c1 = np.take_along_axis(cum, np.broadcast_to(hi, cum.shape[:-1] + hi.shape[-1:]), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(c1 > c0, (s - c0) / (c1 - c0), 0.0)
    out = log_x[lo] + np.clip(frac, 0.0, 1.0) * (log_x[hi] - log_x[lo])
    out = np.where(s <= 0.0, log_x[0], out)
    out = np.where(s == -np.inf, -np.inf, out)
    return np.where(s > cum[..., -1:], np.inf, out)
