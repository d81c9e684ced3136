"""Per-interval, per-arm statistics from a metric source's cumulative snapshots.

A snapshot counts everything since `since` up to the moment it is read. Reading snapshots at
edges t0 < t1 < ... < tn (newest edge first) and subtracting neighbours gives the traffic of
each interval [t_k, t_k+1): requests, errors and the latency histogram (bucket by bucket), so
quantiles are those of the interval, not running totals. Requests that arrive while the
snapshots are being read (a few ms each) land in the interval before; counts never go negative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from model_rollout.histogram import quantile_from_counts
from model_rollout.judge.histograms import parse_bounds

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
RANGE = "~"  # key of an explicit bucket: "<lower ms>~<upper ms>"


def _latency_cells(latency: Any) -> dict[str, int]:
    """A snapshot arm's latency histogram as bucket key -> count, in either form (the
    gateway's bucket indexes, or explicit bounds as "lo~hi" keys); {} when unreadable."""
    if not isinstance(latency, Mapping):
        return {}
    if "bounds_ms" in latency:
        try:
            lo, hi, cnt = parse_bounds(latency["bounds_ms"], latency.get("counts"))
        except ValueError:
            return {}
        return {
            f"{math.exp(a):.6g}{RANGE}{math.exp(b):.6g}": int(c)
            for a, b, c in zip(lo, hi, cnt, strict=True)
        }
    return {str(k): int(v) for k, v in (latency.get("counts") or {}).items()}


def _quantile(cells: dict[str, int], q: float) -> float:
    """The q-quantile in ms: the gateway's buckets by index, explicit ones at their
    geometric middle."""
    if not any(RANGE in k for k in cells):
        return quantile_from_counts(cells, q)
    items = sorted(
        (float(hi), math.sqrt(float(lo) * float(hi)), n)
        for k, n in cells.items()
        for lo, hi in [k.split(RANGE)]
        if n > 0
    )
    total = sum(n for _, _, n in items)
    seen = 0
    for _, mid, n in items:
        seen += n
        if seen >= q * total:
            return mid
    return items[-1][1] if items else math.nan


def edges(start: float, end: float, buckets: int) -> list[float]:
    """Whole-second edges from `start` to `end`, at most `buckets` intervals of >= 1 s."""
    start, end = math.floor(start), math.ceil(end)
    span = max(end - start, 1)
    step = max(1, math.ceil(span / max(buckets, 1)))
    n = math.ceil(span / step)
    return [float(start + k * step) for k in range(n + 1)]


def _arm_cells(snapshot: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for arm in snapshot.get("arms") or []:
        key = (str(arm.get("version")), str(arm.get("arm", "primary")))
        out[key] = {
            "requests": int(arm.get("requests") or 0),
            "errors": int(arm.get("errors") or 0),
            "latency": _latency_cells(arm.get("latency")),
        }
    return out


def _minus(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    a = a or {"requests": 0, "errors": 0, "latency": {}}
    b = b or {"requests": 0, "errors": 0, "latency": {}}
    lat = {k: v - b["latency"].get(k, 0) for k, v in a["latency"].items()}
    return {
        "requests": max(a["requests"] - b["requests"], 0),
        "errors": max(a["errors"] - b["errors"], 0),
        "latency": {k: v for k, v in lat.items() if v > 0},
    }


def _arm_order(key: tuple[str, str]) -> tuple[int, int, str]:
    version, arm = key
    rank = {"primary": 0, "shadow": 1, "staging": 2}.get(arm, 3)
    return (int(version) if version.isdigit() else 1 << 30, rank, version)


def interval_series(snapshots: list[Mapping[str, Any]], times: list[float]) -> dict[str, Any]:
    """Per-interval arm statistics from snapshots read at `times` (oldest edge first).

    Returns {"t": interval starts, "step": seconds, "arms": [{version, arm, label, requests,
    errors, error_rate, share, p50, p95, p99}]}, one value per interval (None when the arm had
    no request, or no successful one for latency, in that interval).
    """
    if len(snapshots) != len(times) or len(times) < 2:
        raise ValueError("need one snapshot per edge and at least two edges")
    cells = [_arm_cells(s) for s in snapshots]
    keys = sorted({k for c in cells for k in c}, key=_arm_order)
    n = len(times) - 1
    per = {k: [_minus(cells[i].get(k), cells[i + 1].get(k)) for i in range(n)] for k in keys}
    live_total = [sum(per[k][i]["requests"] for k in keys if k[1] == "primary") for i in range(n)]
    arms = []
    for key in keys:
        version, arm = key
        rows = per[key]
        entry: dict[str, Any] = {
            "version": version,
            "arm": arm,
            "label": f"v{version}" if arm == "primary" else f"v{version} ({arm})",
            "requests": [r["requests"] for r in rows],
            "errors": [r["errors"] for r in rows],
            "error_rate": [r["errors"] / r["requests"] if r["requests"] else None for r in rows],
            "share": [
                (r["requests"] / live_total[i] if live_total[i] else None)
                if arm == "primary"
                else None
                for i, r in enumerate(rows)
            ],
        }
        for name, q in QUANTILES.items():
            vals = [_quantile(r["latency"], q) if r["latency"] else None for r in rows]
            entry[name] = [None if v is None or math.isnan(v) else round(v, 3) for v in vals]
        arms.append(entry)
    step = times[1] - times[0]
    return {"t": list(times[:-1]), "step": step, "arms": arms}


def sample(
    snapshot: Callable[[float], Mapping[str, Any]], start: float, end: float, buckets: int = 24
) -> dict[str, Any]:
    """Read one snapshot per edge (newest first) and return `interval_series` of them."""
    times = edges(start, end, buckets)
    snaps = [snapshot(t) for t in reversed(times)][::-1]
    out = interval_series(snaps, times)
    out.update(start=times[0], end=times[-1])
    return out
