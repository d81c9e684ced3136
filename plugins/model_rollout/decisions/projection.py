"""How much more traffic a stage needs to decide, at the rates it has observed so far.

Why by re-judging: the judge's own tests decide, so the projection asks the judge itself. The
current stage's counts are scaled by f (f times as long at the same observed rates) and the
smallest f at which the missing metrics turn healthy is searched; the time needed is then
(f - 1) x the stage's elapsed time. The observed rates carry noise, so this is an estimate (the
simulator shows how good), but it is the planner's arithmetic on the real tests, not a formula
of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

MAX_FACTOR = 4096.0  # beyond ~4000x the stage so far, say "not at this traffic"


def scaled(snapshot: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """The snapshot with every count multiplied by `factor` (the same rates, more traffic)."""

    def arm(entry: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        for key in ("requests", "errors", "rejected", "latency_sum_ms"):
            if isinstance(entry.get(key), int | float) and not isinstance(entry.get(key), bool):
                out[key] = entry[key] * factor
        latency = entry.get("latency")
        counts = latency.get("counts") if isinstance(latency, Mapping) else None
        if isinstance(counts, Mapping):  # the gateway's bucket indexes
            out["latency"] = {**latency, "counts": {k: v * factor for k, v in counts.items()}}
        elif isinstance(counts, list):  # explicit bounds (snapshot schema 2)
            out["latency"] = {**latency, "counts": [v * factor for v in counts]}
        feedback = entry.get("feedback")
        if isinstance(feedback, Mapping):
            out["feedback"] = {k: v * factor for k, v in feedback.items()}
        outputs = entry.get("outputs")
        if isinstance(outputs, Mapping) and isinstance(outputs.get("counts"), Mapping):
            out["outputs"] = {
                **outputs,
                "counts": {k: v * factor for k, v in outputs["counts"].items()},
            }
        return out

    def pair(entry: Mapping[str, Any]) -> dict[str, Any]:
        keys = ("pairs", "agree", "abs_delta_sum", "abs_delta_sq_sum")
        return {k: (v * factor if k in keys else v) for k, v in entry.items()}

    out = dict(snapshot)
    out["arms"] = [arm(a) for a in snapshot.get("arms") or [] if isinstance(a, Mapping)]
    out["pairs"] = [pair(p) for p in snapshot.get("pairs") or [] if isinstance(p, Mapping)]
    return out


def as_baseline(snapshot: Mapping[str, Any], baseline: str, candidate: str) -> dict[str, Any]:
    """The snapshot with the candidate's arm replaced by the baseline's rates at the
    candidate's request count: what an equal candidate would have shown so far.

    Why: with little traffic the candidate's own estimates are noise (one error in 600
    requests reads as 0.17%), and projecting noise says "never"; a user deciding whether to
    wait wants what it takes for a candidate that is as good as the incumbent.
    """
    arms = [a for a in snapshot.get("arms") or [] if isinstance(a, Mapping)]
    base = next(
        (a for a in arms if str(a.get("version")) == baseline and a.get("arm") == "primary"), None
    )
    cand = next((a for a in arms if str(a.get("version")) == candidate), None)
    if base is None or cand is None or not base.get("requests") or not cand.get("requests"):
        return dict(snapshot)
    ratio = float(cand["requests"]) / float(base["requests"])
    twin = scaled({"arms": [base]}, ratio)["arms"][0]
    twin.update(version=cand["version"], arm=cand["arm"])
    if "outputs" in cand:
        twin["outputs"] = cand["outputs"]
    out = dict(snapshot)
    out["arms"] = [twin if a is cand else a for a in arms]
    return out


def needed_factor(decided: Callable[[dict[str, Any]], bool], snapshot: Mapping) -> float | None:
    """Smallest f >= 1 (to ~5%) with `decided(scaled(snapshot, f))`; None past MAX_FACTOR.

    `decided` must be monotone in f for the answer to mean anything; more of the same evidence
    only grows the judge's e-values and narrows its intervals, so it is, up to plug-ins.
    """
    if decided(dict(snapshot)):
        return 1.0
    lo, hi = 1.0, 2.0
    while not decided(scaled(snapshot, hi)):
        lo, hi = hi, hi * 2.0
        if hi > MAX_FACTOR:
            return None
    while hi / lo > 1.05:
        mid = math.sqrt(lo * hi)
        if decided(scaled(snapshot, mid)):
            hi = mid
        else:
            lo = mid
    return hi
