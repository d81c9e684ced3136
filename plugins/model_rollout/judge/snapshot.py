"""Reading a gateway statistics snapshot (docs/architecture.md) defensively.

Nothing here raises on bad data: a field that is missing, negative, NaN or of the wrong type
becomes None plus a sentence in `problems`, so that the metric needing it says "inconclusive"
with that sentence and the others still judge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .histograms import bucket_edges, edge_cdf_points, parse_bounds, parse_counts


def _count(value: Any) -> float | None:
    """A finite non-negative number, else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class Feedback:
    count: float
    total: float
    total_sq: float


@dataclass
class ArmStats:
    """Counters of one (version, arm) entry, cleaned."""

    version: str
    arm: str
    requests: float | None = None
    errors: float | None = None
    latency_lo: np.ndarray | None = None  # bucket edges, log ms
    latency_hi: np.ndarray | None = None
    latency_cnt: np.ndarray | None = None
    feedback: Feedback | None = None
    outputs_kind: str | None = None
    outputs: dict[str, float] | None = None
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def latency_total(self) -> float:
        return float(self.latency_cnt.sum()) if self.latency_cnt is not None else 0.0

    @cached_property
    def latency_points(self) -> tuple[np.ndarray, np.ndarray]:
        """CDF knots of the latency histogram (computed once, shared by the latency metrics)."""
        return edge_cdf_points(self.latency_lo, self.latency_hi, self.latency_cnt)


@dataclass
class PairStats:
    pairs: float | None = None
    agree: float | None = None
    abs_delta_sum: float | None = None
    abs_delta_sq_sum: float | None = None
    problems: dict[str, str] = field(default_factory=dict)


def read_arm(entry: Mapping) -> ArmStats:
    """Clean one `arms[]` entry."""
    arm = ArmStats(version=str(entry.get("version")), arm=str(entry.get("arm")))
    arm.requests = _count(entry.get("requests"))
    if arm.requests is None:
        arm.problems["requests"] = f"requests of version {arm.version} is missing or invalid"
    arm.errors = _count(entry.get("errors", 0))
    if arm.errors is None or (arm.requests is not None and arm.errors > arm.requests):
        arm.errors = None
        arm.problems["errors"] = f"errors of version {arm.version} is missing or invalid"
    latency = entry.get("latency") or {}
    try:
        if isinstance(latency, Mapping) and "bounds_ms" in latency:
            arm.latency_lo, arm.latency_hi, arm.latency_cnt = parse_bounds(
                latency["bounds_ms"], latency.get("counts")
            )
        else:
            counts = latency.get("counts") if isinstance(latency, Mapping) else None
            idx, arm.latency_cnt = parse_counts(counts)
            arm.latency_lo, arm.latency_hi = bucket_edges(idx)
    except (ValueError, TypeError, OverflowError) as exc:
        arm.problems["latency"] = f"latency histogram of version {arm.version} is invalid ({exc})"
    feedback = entry.get("feedback")
    if isinstance(feedback, Mapping):
        count = _count(feedback.get("count"))
        total = _finite(feedback.get("sum"))
        total_sq = _count(feedback.get("sum_sq"))
        if count is None or total is None or total_sq is None:
            arm.problems["feedback"] = f"feedback of version {arm.version} is invalid"
        else:
            arm.feedback = Feedback(count, total, total_sq)
    outputs = entry.get("outputs")
    if isinstance(outputs, Mapping) and isinstance(outputs.get("counts"), Mapping):
        cleaned = {str(k): _count(v) for k, v in outputs["counts"].items()}
        if any(v is None for v in cleaned.values()):
            arm.problems["outputs"] = f"output counts of version {arm.version} are invalid"
        else:
            arm.outputs_kind = str(outputs.get("kind", "categorical"))
            arm.outputs = {k: v for k, v in cleaned.items() if v}
    return arm


def read_pair(entry: Mapping) -> PairStats:
    """Clean one `pairs[]` entry."""
    pair = PairStats(
        pairs=_count(entry.get("pairs")),
        agree=_count(entry.get("agree")),
        abs_delta_sum=_count(entry.get("abs_delta_sum")),
        abs_delta_sq_sum=_count(entry.get("abs_delta_sq_sum")),
    )
    if pair.pairs is None or pair.agree is None or pair.agree > pair.pairs:
        pair.problems["agreement"] = "pairs/agree counts are missing or invalid"
    return pair


def find_arm(snapshot: Mapping, version: str, arm: str) -> ArmStats | None:
    """The (version, arm) entry of the snapshot, cleaned; None if absent (or merged if repeated)."""
    arms = snapshot.get("arms")
    if not isinstance(arms, list):
        return None
    found = [
        e
        for e in arms
        if isinstance(e, Mapping) and str(e.get("version")) == version and e.get("arm") == arm
    ]
    if not found:
        return None
    return read_arm(found[0])


def find_pair(snapshot: Mapping, shadow_version: str, primary_version: str) -> PairStats | None:
    pairs = snapshot.get("pairs")
    if not isinstance(pairs, list):
        return None
    for e in pairs:
        if (
            isinstance(e, Mapping)
            and str(e.get("shadow_version")) == shadow_version
            and str(e.get("primary_version")) == primary_version
        ):
            return read_pair(e)
    return None


def configured_share(snapshot: Mapping, baseline: str, candidate: str) -> float | None:
    """Candidate's configured share of the two arms' traffic, from `weights`; None if unusable."""
    weights = snapshot.get("weights")
    if not isinstance(weights, Mapping):
        return None
    wb = _count(weights.get(baseline))
    wc = _count(weights.get(candidate))
    if wb is None or wc is None or wb + wc <= 0 or wb == 0 or wc == 0:
        return None
    return wc / (wb + wc)


def store_problem(snapshot: Mapping) -> str | None:
    """Why the snapshot's counts may be incomplete because the gateway's store was failing.

    The gateway reads its statistics back from its store; while flushes fail (disk full, a
    revoked permission, the database down) the requests since the first failure are kept in
    memory and are missing from the snapshot. Such a snapshot is a valid earlier look (its
    counts are a prefix in time), but it is not the evidence of now. None when the store took
    the last flush, or when the snapshot has no `store` field (gateways that predate it).
    """
    store = snapshot.get("store")
    if store is None:
        return None
    if not isinstance(store, Mapping) or not isinstance(store.get("writable"), bool):
        return "The snapshot's store health is unreadable, so its counts may be incomplete."
    if store["writable"]:
        return None
    kind = store.get("kind") if isinstance(store.get("kind"), str) else "request"
    since = _finite(store.get("failing_since"))
    until = _finite(snapshot.get("until"))
    known = since is not None and until is not None
    for_how_long = f" for {max(0.0, until - since):.0f} s" if known else ""
    unwritten = _count(store.get("unflushed_rows"))
    rows = f", {unwritten:.0f} request-log rows not written yet" if unwritten is not None else ""
    error = store.get("last_error")
    cause = f" ({str(error)[:200]})" if error else ""
    return (
        f"The gateway's {kind} store has been failing writes{for_how_long}{rows}{cause}: "
        "this snapshot misses the requests answered since, so it cannot show the candidate "
        "healthy."
    )


@dataclass
class Stage:
    """One stage of a phase: the two arms over the stage's time range and the candidate's share.

    `rho` is the configured share of the candidate (canary) or its observed share (shadow);
    None when neither can be had (no usable weights and no traffic).
    """

    base: ArmStats
    cand: ArmStats
    rho: float | None


def empty_arm(version: str, arm: str) -> ArmStats:
    """An arm that served nothing in a stage (absent from that stage's snapshot)."""
    return ArmStats(version=version, arm=arm, requests=0.0, errors=0.0)


def _pooled_buckets(arms: list[ArmStats]):
    """The buckets of several arms added up: equal buckets merge; None when buckets of
    different layouts overlap (no CDF can be read from them)."""
    if not arms:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    lo = np.concatenate([a.latency_lo for a in arms])
    hi = np.concatenate([a.latency_hi for a in arms])
    cnt = np.concatenate([a.latency_cnt for a in arms])
    order = np.lexsort((hi, lo))
    lo, hi, cnt = lo[order], hi[order], cnt[order]
    new = np.ones(lo.size, dtype=bool)
    new[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    starts = np.flatnonzero(new)
    lo, hi, cnt = lo[starts], hi[starts], np.add.reduceat(cnt, starts)
    if np.any(lo[1:] < hi[:-1] - 1e-9):  # adjacent edges may differ in the last bits
        return None, None, None
    return lo, hi, cnt


def pooled_arm(arms: list[ArmStats]) -> ArmStats:
    """The sum of one arm over several stages: counts, histograms and feedback add up.

    Arms with problems in a field are left out of that field's sum; the pooled arm carries the
    problems of the last (current) arm, which is the one a reader must fix.
    """
    last = arms[-1]
    out = ArmStats(version=last.version, arm=last.arm, problems=dict(last.problems))
    if "requests" not in last.problems:
        out.requests = sum(a.requests or 0.0 for a in arms if "requests" not in a.problems)
    if "errors" not in last.problems:
        out.errors = sum(a.errors or 0.0 for a in arms if "errors" not in a.problems)
    hists = [
        a
        for a in arms
        if "latency" not in a.problems and a.latency_cnt is not None and a.latency_cnt.size
    ]
    if "latency" not in last.problems:
        out.latency_lo, out.latency_hi, out.latency_cnt = _pooled_buckets(hists)
        if out.latency_cnt is None:
            out.problems["latency"] = (
                f"latency histograms of version {last.version} have different bucket layouts "
                "in different stages and cannot be added up"
            )
    feedback = [a.feedback for a in arms if a.feedback is not None]
    if feedback and "feedback" not in last.problems:
        out.feedback = Feedback(
            sum(f.count for f in feedback),
            sum(f.total for f in feedback),
            sum(f.total_sq for f in feedback),
        )
    out.outputs_kind = last.outputs_kind
    out.outputs = last.outputs
    return out
