"""Copied into the image's $AIRFLOW_HOME/config: every Airflow component imports it at start.

What rollout DAG files, tasks and triggers import (pydantic for policies; numpy, scipy, pandas
for the judge; mlflow) is imported here once per component instead of once per DAG parse, per
task process and on the api-server's first webhook: LocalExecutor and Celery fork task
processes from the component and the DAG processor forks its parsers, so they inherit it.
Seen on a busy 2-core machine without it: the api-server's first webhook delivery took 67 s,
MLflow's 30 s delivery timeout fired and its retries were refused as replays (409).
Only modules that do not import Airflow: this runs while Airflow itself is being imported.
"""

import sys

_COMPONENT = sys.argv[1] if len(sys.argv) > 1 else ""
if _COMPONENT in ("scheduler", "triggerer", "dag-processor", "api-server", "celery"):
    import model_rollout.policy  # noqa: F401  (pydantic, the judge's config)
if _COMPONENT in ("scheduler", "triggerer", "celery"):  # tasks and JudgeTrigger judge
    # through the package: it binds the lazy name to the function (not the submodule)
    from model_rollout.judge import evaluate  # noqa: F401  (numpy, scipy, pandas)
if _COMPONENT in ("scheduler", "celery"):  # where task processes are forked
    import mlflow.pyfunc  # noqa: F401

    import model_rollout.registry  # noqa: F401
