"""Fixed log-spaced histograms shared by the gateway (which fills them) and the judge (which reads them).

Why fixed buckets: counts from any number of requests, replicas and time slices merge by plain
addition, a snapshot costs the same however much traffic was logged, and a quantile read from
buckets that grow by 2% is within ~1% of the true value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

# Latency buckets: bucket i holds [MIN_MS * GROWTH**i, MIN_MS * GROWTH**(i+1)); i=0 also holds
# anything faster, the last bucket anything slower (about 2 minutes).
LATENCY_MIN_MS = 0.001
LATENCY_GROWTH = 1.02
LATENCY_BUCKETS = 950
_LOG_GROWTH = math.log(LATENCY_GROWTH)

# Numeric prediction buckets (for output-distribution drift of regressors): signed log buckets.
VALUE_MIN_ABS = 1e-6
VALUE_GROWTH = 1.05
_LOG_VALUE_GROWTH = math.log(VALUE_GROWTH)
VALUE_MAX_INDEX = 900


def latency_bucket(ms: float) -> int:
    """Index of the latency bucket holding `ms` milliseconds."""
    if not ms > LATENCY_MIN_MS:  # also catches NaN and negatives
        return 0
    i = int(math.log(ms / LATENCY_MIN_MS) / _LOG_GROWTH)
    return min(i, LATENCY_BUCKETS - 1)


def latency_bucket_bounds(i: int) -> tuple[float, float]:
    """Lower and upper edge (ms) of latency bucket `i`."""
    lo = LATENCY_MIN_MS * LATENCY_GROWTH**i
    return lo, lo * LATENCY_GROWTH


def latency_bucket_mid(i: int) -> float:
    """Geometric middle of bucket `i`: the value a quantile read from the bucket reports."""
    return LATENCY_MIN_MS * LATENCY_GROWTH ** (i + 0.5)


def value_bucket(x: float) -> int:
    """Signed log bucket of a numeric prediction: 0 near zero, +i / -i by magnitude."""
    if x != x or math.isinf(x):  # NaN or inf go to the outermost buckets
        return VALUE_MAX_INDEX if x == math.inf else -VALUE_MAX_INDEX
    a = abs(x)
    if a < VALUE_MIN_ABS:
        return 0
    i = 1 + int(math.log(a / VALUE_MIN_ABS) / _LOG_VALUE_GROWTH)
    i = min(i, VALUE_MAX_INDEX)
    return i if x > 0 else -i


def merge_counts(*parts: Mapping[str, int] | Mapping[int, int] | None) -> dict[str, int]:
    """Add sparse bucket->count maps (keys as str, the JSON form)."""
    out: dict[str, int] = {}
    for part in parts:
        if not part:
            continue
        for k, v in part.items():
            key = str(k)
            out[key] = out.get(key, 0) + int(v)
    return out


def quantile_from_counts(counts: Mapping[str, int] | Mapping[int, int], q: float) -> float:
    """The q-quantile (0..1) of a sparse latency histogram, in ms; NaN when it is empty."""
    items = sorted((int(k), int(v)) for k, v in counts.items() if int(v) > 0)
    total = sum(v for _, v in items)
    if total == 0:
        return math.nan
    rank = q * total
    seen = 0
    for i, v in items:
        seen += v
        if seen >= rank:
            return latency_bucket_mid(i)
    return latency_bucket_mid(items[-1][0])


def counts_of(latencies_ms: Iterable[float]) -> dict[str, int]:
    """Sparse histogram of raw latencies (tests, benchmarks, the fixed-horizon report)."""
    out: dict[str, int] = {}
    for ms in latencies_ms:
        k = str(latency_bucket(ms))
        out[k] = out.get(k, 0) + 1
    return out
