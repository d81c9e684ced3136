"""Verdict objects: per-metric results and the overall decision, serialisable as strict JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["degraded", "healthy", "inconclusive", "not_applicable"]

DEGRADED: Status = "degraded"
HEALTHY: Status = "healthy"
INCONCLUSIVE: Status = "inconclusive"
NOT_APPLICABLE: Status = "not_applicable"
"""A metric with nothing to judge (no feedback at all: the model gets none). Metric-level only:
it neither blocks "healthy" nor counts as evidence; a verdict is never not_applicable."""

# Every number a verdict carries is clipped to +-1e18 (infinities included: "unbounded").
# Verdicts travel through PostgreSQL's jsonb (trigger events, XComs), which hands integral
# floats back as integers, and Airflow's task messages (msgpack) refuse integers beyond 64 bits:
# an unbounded interval written as 1e300 failed a resumed monitor on PostgreSQL.
_MAX_JSON_NUMBER = 1e18


def json_safe(value: Any) -> Any:
    """Recursively replace NaN by None and clip to +-1e18, so the verdict survives any JSON store."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return (
            value if abs(value) <= _MAX_JSON_NUMBER else int(math.copysign(_MAX_JSON_NUMBER, value))
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return None
    if abs(number) > _MAX_JSON_NUMBER:
        return math.copysign(_MAX_JSON_NUMBER, number)
    if hasattr(value, "is_integer") and not isinstance(value, float):  # numpy integer
        return int(number) if number.is_integer() else number
    return number


@dataclass(frozen=True)
class MetricResult:
    """One metric's verdict and the evidence behind it.

    `statistic` is the log e-value (or distance) compared with `threshold`; `estimate` and
    `interval` are on the scale named by `scale` (e.g. "rate ratio candidate/baseline").
    """

    name: str
    status: Status
    reason: str
    scale: str = ""
    estimate: float = math.nan
    interval: tuple[float, float] = (math.nan, math.nan)
    tolerance: float = math.nan
    statistic: str = ""
    value: float = math.nan
    threshold: float = math.nan
    samples: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for JSON (no NaN, no infinities)."""
        return json_safe(
            {
                "name": self.name,
                "status": self.status,
                "reason": self.reason,
                "scale": self.scale,
                "estimate": self.estimate,
                "interval": list(self.interval),
                "tolerance": self.tolerance,
                "statistic": self.statistic,
                "value": self.value,
                "threshold": self.threshold,
                "samples": self.samples,
                "details": self.details,
            }
        )


@dataclass(frozen=True)
class Verdict:
    """Overall judgement of a candidate arm against its baseline arm for one snapshot."""

    status: Status
    reason: str
    metrics: dict[str, MetricResult]
    mode: str
    baseline: str
    candidate: str
    alpha: float
    alpha_per_metric: float
    invalid: bool = False
    checks: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for JSON (no NaN, no infinities): what the monitor stores as evidence."""
        return json_safe(
            {
                "status": self.status,
                "reason": self.reason,
                "invalid": self.invalid,
                "mode": self.mode,
                "baseline": self.baseline,
                "candidate": self.candidate,
                "alpha": self.alpha,
                "alpha_per_metric": self.alpha_per_metric,
                "metrics": {name: m.to_json() for name, m in self.metrics.items()},
                "checks": self.checks,
            }
        )


def combine(results: list[MetricResult]) -> tuple[Status, str]:
    """Degraded if any metric is, healthy only if every applicable metric is, else inconclusive."""
    results = [r for r in results if r.status != NOT_APPLICABLE]
    if not results:
        return INCONCLUSIVE, "No metric is enabled for this mode, so there is nothing to judge."
    degraded = [r for r in results if r.status == DEGRADED]
    if degraded:
        names = ", ".join(r.name for r in degraded)
        return DEGRADED, f"Degraded on {names}: {degraded[0].reason}"
    waiting = [r for r in results if r.status != HEALTHY]
    if not waiting:
        return HEALTHY, "Every metric is within its tolerance with enough evidence."
    names = ", ".join(r.name for r in waiting)
    return INCONCLUSIVE, f"Not yet conclusive on {names}: {waiting[0].reason}"
