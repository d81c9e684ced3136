"""Streaming statistics per (model, version, arm) and per (model, shadow, primary) pair.

Why time-bucketed aggregates: a snapshot "since t" must cost milliseconds however many
requests were logged. Every request updates a small cell for its second; the store keeps the
cells at three resolutions (second, minute, hour), so a window [t, now] is covered by at most
59 second-cells, 59 minute-cells and one cell per hour, summed by plain addition (fixed
histogram buckets from `model_rollout.histogram` merge by addition, across replicas too).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from model_rollout.histogram import latency_bucket, value_bucket
from model_rollout.snapshot_schema import SNAPSHOT_SCHEMA

MAX_LABELS = 100
OTHER = "__other__"
LEVELS = (1, 60, 3600)
T = TypeVar("T")


def output_label(value: Any) -> tuple[str, str | int]:
    """('cat', label) for labels (str/int/bool/other), ('num', bucket) for floats."""
    if isinstance(value, bool):
        return "cat", "true" if value else "false"
    if isinstance(value, float):
        return "num", value_bucket(value)
    if isinstance(value, (int, str)):
        return "cat", str(value)
    if isinstance(value, dict) and len(value) == 1:
        return output_label(next(iter(value.values())))
    import orjson

    try:
        return "cat", orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return "cat", repr(value)


def _add_label(counts: dict[str, int], label: str, n: int = 1) -> None:
    if label in counts or len(counts) < MAX_LABELS:
        counts[label] = counts.get(label, 0) + n
    else:
        counts[OTHER] = counts.get(OTHER, 0) + n


class ArmCell:
    """Aggregates of one (model, version, arm) over one time span."""

    __slots__ = (
        "requests",
        "errors",
        "rejected",
        "latency",
        "latency_sum_ms",
        "fb_count",
        "fb_sum",
        "fb_sum_sq",
        "out_cat",
        "out_num",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.rejected = 0
        self.latency: dict[str, int] = {}
        self.latency_sum_ms = 0.0
        self.fb_count = 0
        self.fb_sum = 0.0
        self.fb_sum_sq = 0.0
        self.out_cat: dict[str, int] = {}
        self.out_num: dict[str, int] = {}

    def add_request(self, status: int, latency_ms: float, rows: list | None) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
            return
        if status >= 400:
            self.rejected += 1
            return
        k = str(latency_bucket(latency_ms))
        self.latency[k] = self.latency.get(k, 0) + 1
        self.latency_sum_ms += latency_ms
        if rows:
            for value in rows:
                kind, label = output_label(value)
                if kind == "cat":
                    _add_label(self.out_cat, label)
                else:
                    key = str(label)
                    self.out_num[key] = self.out_num.get(key, 0) + 1

    def add_feedback(self, outcome: float) -> None:
        self.fb_count += 1
        self.fb_sum += outcome
        self.fb_sum_sq += outcome * outcome

    def merge(self, other: ArmCell) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.rejected += other.rejected
        for k, v in other.latency.items():
            self.latency[k] = self.latency.get(k, 0) + v
        self.latency_sum_ms += other.latency_sum_ms
        self.fb_count += other.fb_count
        self.fb_sum += other.fb_sum
        self.fb_sum_sq += other.fb_sum_sq
        for k, v in other.out_cat.items():
            _add_label(self.out_cat, k, v)
        for k, v in other.out_num.items():
            self.out_num[k] = self.out_num.get(k, 0) + v

    def outputs(self) -> dict:
        if self.out_cat or not self.out_num:
            return {"kind": "categorical", "counts": dict(self.out_cat)}
        return {"kind": "numeric", "counts": dict(self.out_num)}

    def to_snapshot(self, version: str, arm: str) -> dict:
        return {
            "version": version,
            "arm": arm,
            "requests": self.requests,
            "errors": self.errors,
            "rejected": self.rejected,
            "latency": {"counts": dict(self.latency)},
            "latency_sum_ms": self.latency_sum_ms,
            "feedback": {"count": self.fb_count, "sum": self.fb_sum, "sum_sq": self.fb_sum_sq},
            "outputs": self.outputs(),
        }


class PairCell:
    """Paired agreement of a shadow version against the primary that answered the same request."""

    __slots__ = ("pairs", "agree", "abs_delta_sum", "abs_delta_sq_sum")

    def __init__(self) -> None:
        self.pairs = 0
        self.agree = 0
        self.abs_delta_sum = 0.0
        self.abs_delta_sq_sum = 0.0

    def add_rows(self, shadow_rows: list, primary_rows: list) -> None:
        for s, p in zip(shadow_rows, primary_rows, strict=False):
            self.pairs += 1
            if s == p and type(s) is type(p) or (_is_num(s) and _is_num(p) and s == p):
                self.agree += 1
                continue
            if _is_num(s) and _is_num(p) and (isinstance(s, float) or isinstance(p, float)):
                d = abs(float(s) - float(p))
                if math.isnan(d):
                    d = 1.0
            else:
                d = 1.0
            self.abs_delta_sum += d
            self.abs_delta_sq_sum += d * d

    def merge(self, other: PairCell) -> None:
        self.pairs += other.pairs
        self.agree += other.agree
        self.abs_delta_sum += other.abs_delta_sum
        self.abs_delta_sq_sum += other.abs_delta_sq_sum


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Recorder:
    """Collects per-second deltas from the request path; the store's writer drains them.

    The lock is held for a few dictionary operations only, so the event loop never waits on
    the writer's database work.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arms: dict[tuple[str, str, str, int], ArmCell] = {}
        self._pairs: dict[tuple[str, str, str, int], PairCell] = {}
        # cumulative since process start, for /metrics
        self.totals: dict[tuple[str, str, str], ArmCell] = {}
        self.pair_totals: dict[tuple[str, str, str], PairCell] = {}

    def _arm(self, model: str, version: str, arm: str, now: float | None) -> ArmCell:
        sec = int(now if now is not None else time.time())
        key = (model, version, arm, sec)
        cell = self._arms.get(key)
        if cell is None:
            cell = self._arms[key] = ArmCell()
        return cell

    def request(
        self, model: str, version: str, arm: str, status: int, latency_ms: float, rows: list | None
    ) -> None:
        with self._lock:
            self._arm(model, version, arm, None).add_request(status, latency_ms, rows)

    def feedback(self, model: str, version: str, arm: str, outcome: float) -> None:
        with self._lock:
            self._arm(model, version, arm, None).add_feedback(outcome)

    def pair(
        self, model: str, shadow_version: str, primary_version: str, shadow_rows, primary_rows
    ) -> None:
        key = (model, shadow_version, primary_version, int(time.time()))
        with self._lock:
            cell = self._pairs.get(key)
            if cell is None:
                cell = self._pairs[key] = PairCell()
            cell.add_rows(shadow_rows, primary_rows)

    def drain_with(self, take: Callable[[], T]) -> tuple[T, tuple[dict, dict]]:
        """`take()` and the pending deltas, in one step under the lock (the store takes its log
        rows here, so rows and counts of the same requests are committed together); the deltas
        are folded into the since-start totals, under the lock too: /metrics reads them on the
        event loop while this runs in the store's flush thread."""
        with self._lock:
            taken = take()
            arms, self._arms = self._arms, {}
            pairs, self._pairs = self._pairs, {}
            for (m, v, a, _), cell in arms.items():
                tot = self.totals.get((m, v, a))
                if tot is None:
                    tot = self.totals[(m, v, a)] = ArmCell()
                tot.merge(cell)
            for (m, s, p, _), cell in pairs.items():
                tot = self.pair_totals.get((m, s, p))
                if tot is None:
                    tot = self.pair_totals[(m, s, p)] = PairCell()
                tot.merge(cell)
        return taken, (arms, pairs)

    def totals_copy(self) -> tuple[dict, dict]:
        """Copies of the since-start totals (arms, pairs), taken under the lock."""
        with self._lock:
            arms = {k: _copied(ArmCell(), c) for k, c in self.totals.items()}
            pairs = {k: _copied(PairCell(), c) for k, c in self.pair_totals.items()}
        return arms, pairs


def _copied(empty, cell):
    empty.merge(cell)
    return empty


def window_ranges(since: int, now: int, until: int | None = None) -> list[tuple[int, int, int]]:
    """(level, first start, end exclusive) triples whose cells exactly cover [since, now].

    Second cells up to the next whole minute, minute cells up to the next whole hour, hour
    cells from there on (the current hour's cell is kept up to date by every flush). With
    `until` (whole seconds, <= now) the cells cover [since, until) exactly: a finished stage of
    a rollout, read after the next stage began.
    """
    since = max(0, int(since))
    if until is not None:
        return _closed_ranges(since, int(until))
    m = -(-since // 60) * 60
    h = -(-since // 3600) * 3600
    far = max(now, since) + 7200
    out = []
    if since < m:
        out.append((1, since, m))
    if m < h:
        out.append((60, m, h))
    out.append((3600, h, far))
    return out


def _closed_ranges(a: int, b: int) -> list[tuple[int, int, int]]:
    """Seconds up to a whole minute, minutes up to a whole hour, hours, then back down to b."""
    out: list[tuple[int, int, int]] = []
    cur = a
    m = min(-(-cur // 60) * 60, b)
    if cur < m:
        out.append((1, cur, m))
        cur = m
    h = min(-(-cur // 3600) * 3600, b // 60 * 60)
    if cur % 60 == 0 and cur < h:
        out.append((60, cur, h))
        cur = h
    for level in (3600, 60, 1):
        end = b // level * level
        if cur % level == 0 and cur < end:
            out.append((level, cur, end))
            cur = end
    return out


def snapshot(
    model: str,
    since: float,
    until: float,
    route: dict | None,
    arm_rows: list[tuple[str, str, ArmCell]],
    pair_rows: list[tuple[str, str, PairCell]],
    store: dict | None = None,
) -> dict:
    """The statistics snapshot of docs/architecture.md from summed cells.

    :param store: the store's health (`Store.health()`) when the cells were read; a snapshot
        taken while flushes fail misses the requests since the failures began, and says so in
        its `store` field (the judge then never concludes "healthy").
    """
    arms: dict[tuple[str, str], ArmCell] = {}
    for version, arm, cell in arm_rows:
        tot = arms.get((version, arm))
        if tot is None:
            tot = arms[(version, arm)] = ArmCell()
        tot.merge(cell)
    pairs: dict[tuple[str, str], PairCell] = {}
    for shadow, primary, cell in pair_rows:
        tot = pairs.get((shadow, primary))
        if tot is None:
            tot = pairs[(shadow, primary)] = PairCell()
        tot.merge(cell)
    route = route or {}
    return {
        "schema": SNAPSHOT_SCHEMA,
        "model": model,
        "since": float(since),
        "until": float(until),
        "generation": route.get("generation", 0),
        "weights": route.get("weights", {}),
        "shadows": route.get("shadows", []),
        "arms": [
            cell.to_snapshot(v, a) for (v, a), cell in sorted(arms.items(), key=_version_arm_key)
        ],
        "pairs": [
            {
                "shadow_version": s,
                "primary_version": p,
                "pairs": c.pairs,
                "agree": c.agree,
                "abs_delta_sum": c.abs_delta_sum,
                "abs_delta_sq_sum": c.abs_delta_sq_sum,
            }
            for (s, p), c in sorted(pairs.items())
        ],
        **({"store": store} if store is not None else {}),
    }


def version_sort_key(v: str) -> tuple:
    """Numeric versions in numeric order, then anything else by name."""
    return (0, int(v), "") if v.isdigit() else (1, 0, v)


def _version_arm_key(item) -> tuple:
    (v, a), _ = item
    return (version_sort_key(v), a)
