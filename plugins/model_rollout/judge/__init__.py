"""Canary judge: anytime-valid verdicts on latency, errors, business KPIs and shadow predictions.

Pure statistics on gateway snapshots (numpy/scipy/pandas): no I/O, no Airflow, no MLflow.
`evaluate(snapshot, baseline=..., candidate=..., mode=..., config=JudgeConfig())` returns a
`Verdict` whose `.to_json()` is the evidence to store. `fixed_horizon_report` is the after-the-
fact report on raw request logs for humans.
"""

from .config import (
    ErrorsConfig,
    JudgeConfig,
    KpiConfig,
    LatencyConfig,
    OutputDriftConfig,
    ShadowConfig,
    SrmConfig,
    TailLatencyConfig,
)
from .evaluate import evaluate
from .report import fixed_horizon_report, report_markdown
from .verdict import DEGRADED, HEALTHY, INCONCLUSIVE, MetricResult, Status, Verdict

__all__ = [
    "DEGRADED",
    "HEALTHY",
    "INCONCLUSIVE",
    "ErrorsConfig",
    "JudgeConfig",
    "KpiConfig",
    "LatencyConfig",
    "MetricResult",
    "OutputDriftConfig",
    "ShadowConfig",
    "SrmConfig",
    "Status",
    "TailLatencyConfig",
    "Verdict",
    "evaluate",
    "fixed_horizon_report",
    "report_markdown",
]
