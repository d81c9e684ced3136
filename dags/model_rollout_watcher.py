"""Registry watcher DAG: starts rollouts that no webhook announced (stages, missed events).

Scheduled on the `model_rollout_registry` asset, whose AssetWatcher runs
`model_rollout.watcher.RegistryWatchTrigger` in the triggerer (poll every
MODEL_ROLLOUT_WATCH_INTERVAL seconds, default 60). Each run re-checks its events against the
registry and the metadata DB, then triggers `model_rollout__<model>` with conf
{"version": "<n>"} as run `rollout__v<n>` (the webhook receiver's run id too): a version is
never started twice automatically. Active on deploy (not paused at creation).
"""

from __future__ import annotations

import os

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from model_rollout.watcher import plan_from_context, registry_asset

REGISTRY = registry_asset(poll_interval=float(os.environ.get("MODEL_ROLLOUT_WATCH_INTERVAL", "60")))


@dag(
    dag_id="model_rollout_watcher",
    schedule=[REGISTRY],
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=["model_rollout"],
    doc_md=__doc__,
)
def model_rollout_watcher():
    @task
    def plan(**context) -> list[dict]:
        """Events still worth a rollout, as TriggerDagRunOperator kwargs."""
        return plan_from_context(context)

    TriggerDagRunOperator.partial(
        task_id="start_rollout",
        skip_when_already_exists=True,
        wait_for_completion=False,
        logical_date=None,  # like UI/REST runs: several runs of a DAG never clash on a date
        openlineage_inject_parent_info=False,  # conf stays exactly {"version": "<n>"}
        retries=1,
    ).expand_kwargs(plan())


model_rollout_watcher()
