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

# The statistics (scipy, pandas) load on first use: the policy embeds JudgeConfig, and DAG
# parsing or a webhook must not pay for scipy just to validate a policy. Import these names
# from the package (`from model_rollout.judge import evaluate`), not from their submodules.
_LAZY = {
    "Budget": ".evaluate",
    "evaluate": ".evaluate",
    "fixed_horizon_report": ".report",
    "report_markdown": ".report",
    "DEGRADED": ".verdict",
    "HEALTHY": ".verdict",
    "INCONCLUSIVE": ".verdict",
    "MetricResult": ".verdict",
    "Status": ".verdict",
    "Verdict": ".verdict",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        module = import_module(_LAZY[name], __name__)
        # Importing `.evaluate` just bound the submodule to that name here: bind every name the
        # submodule provides (the function `evaluate` included) over it.
        for other, where in _LAZY.items():
            if where == _LAZY[name]:
                globals()[other] = getattr(module, other)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEGRADED",
    "Budget",
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
