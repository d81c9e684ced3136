"""Builds the per-model rollout DAG from its policy, and the decommission DAG.

The shape (grid view reads like the flow):
    resolve → staging[deploy → offline_validation → integration_tests → gate]
      gate → blocked → block_promotion                         (run ends failed)
      gate → first_rollout ─────────────────────────────┐       (no champion yet)
      gate → shadow[start → monitor → gate] → canary_5[...] → step_25[...] → ... → [approval] → cutover
      every live gate → <stage>.degraded → rollback[start → restore_traffic → record → fail_run]
      a gate, approval or cutover failing → rollback.failure_detected → rollback.start
Gates use trigger rule `none_skipped`: they run when their stage succeeded *or failed*, and
turn a failure into a decision with a reason; `none_skipped` keeps them quiet on paths a
branch skipped.
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from model_rollout.decisions.plan import plan_for
from model_rollout.orchestration import tasks
from model_rollout.orchestration.monitor import RolloutMonitorSensor
from model_rollout.policy import Policy, PolicyError, dag_id_for, load_policy, policy_files

log = logging.getLogger(__name__)
START = datetime(2026, 1, 1)


def _py(task_id: str, fn, policy: Policy, *, branch: bool = False, **kwargs) -> PythonOperator:
    op = BranchPythonOperator if branch else PythonOperator
    extra = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k not in ("trigger_rule", "retries", "execution_timeout")
    }
    return op(task_id=task_id, python_callable=functools.partial(fn, policy, **extra), **kwargs)


def _approval(task_id: str, subject: str, body: str, timeout: float, on_ask=None):
    """Airflow's human-in-the-loop approval; a rejection fails the task (and rolls back).
    `on_ask` runs when it starts waiting (the policy's notifications)."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    return ApprovalOperator(
        task_id=task_id,
        subject=subject,
        body=body,
        on_execute_callback=on_ask,
        fail_on_reject=True,
        response_timeout=timedelta(seconds=timeout),
        execution_timeout=None,
        retries=0,
    )


def _doc(policy: Policy) -> str:
    """The DAG's docs (also on the trigger form): the stages, what ends them, how to plan."""
    plan = plan_for(policy)
    stages = "\n".join(
        f"- **{s.name}** ({s.role}): {s.window / 60:g} min"
        + (
            f", up to {s.max_duration / 60:g} min"
            if s.role == "proof" or s.holds_on_suspicion
            else ""
        )
        for s in plan.stages
    )
    return (
        f"Rollout of MLflow model **{policy.model}**. Trigger with conf "
        f'`{{"version": "<n>"}}`.\n\n{stages}\n\nGuards go on at their window\'s end '
        "unless a degradation is shown (those with an upper bound hold their share while one is "
        "nearly shown, until the evidence settles it); the proof step must show every metric within tolerance "
        f"on all live steps' evidence, else the rollout ends in a {policy.inconclusive_action} "
        f"saying how many more minutes it would need. alpha {policy.judge.alpha} over the whole rollout "
        f"({len(plan.tests)} tests). How long at your traffic: "
        f"`model-rollout plan {policy.model} --rate <req/s>`."
    )


def build_rollout_dag(policy: Policy) -> DAG:
    """One DAG per registered model: `model_rollout__<model>`, one active run at a time."""
    timeout = timedelta(seconds=policy.task_timeout)
    with DAG(
        dag_id=policy.dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["model_rollout", policy.model],
        params={
            "version": Param(
                None,
                type=["null", "string"],
                title="Candidate version",
                description=f"Version of registered model {policy.model!r} to roll out.",
            ),
            "force": Param(
                False,
                type="boolean",
                title="Roll out again",
                description="Allow a version that an earlier run already promoted, rolled back or blocked.",
            ),
        },
        default_args={
            "retries": policy.task_retries,
            "retry_delay": timedelta(seconds=policy.retry_delay),
            "execution_timeout": timeout,
        },
        doc_md=_doc(policy),
    ) as dag:
        # Stage plan first, so each gate knows the task id it branches to.
        plan = plan_for(policy)
        final_id = "approval" if policy.approval.required else "cutover"
        entry_ids = [s.traffic_task_id for s in plan.stages] + [final_id]

        resolve = _py(tasks.RESOLVE, tasks.resolve, policy)
        with TaskGroup("staging"):
            deploy = _py("deploy", tasks.deploy_staging, policy)
            offline = _py("offline_validation", tasks.offline_validation, policy)
            integration = _py("integration_tests", tasks.integration_tests, policy)
            blocked = EmptyOperator(task_id="blocked")
            first_rollout = EmptyOperator(task_id="first_rollout")
            staging_gate = _py(
                "gate",
                tasks.staging_gate,
                policy,
                branch=True,
                trigger_rule=TriggerRule.NONE_SKIPPED,
                first_task=entry_ids[0],
                first_rollout_task="staging.first_rollout",
                blocked_task="staging.blocked",
            )
            resolve >> deploy >> offline >> integration >> staging_gate >> [blocked, first_rollout]
        block = _py("block_promotion", tasks.block_promotion, policy, retries=2)
        blocked >> block

        pause = policy.inconclusive_action == "pause"
        degraded_markers, exits = [], [staging_gate]
        for stage, next_id in zip(plan.stages, entry_ids[1:], strict=True):
            with TaskGroup(stage.name):
                join = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS  # after a gate or a review
                if stage.mode == "shadow":
                    start = _py("start", tasks.start_shadow, policy, trigger_rule=join)
                else:
                    start = _py(
                        "set_traffic",
                        tasks.set_step_traffic,
                        policy,
                        step=stage.step,
                        trigger_rule=join,
                    )
                monitor = RolloutMonitorSensor(
                    task_id="monitor",
                    model=policy.model,
                    stage=stage,
                    poll_interval=policy.poll_interval,
                    judge_config=policy.judge_settings(stage.mode),
                    alpha_metric=plan.alpha_per_test,
                    inconclusive_action=policy.inconclusive_action,
                    resolve_task_id=tasks.RESOLVE,
                    traffic_task_id=stage.traffic_task_id,
                    earlier_traffic_task_ids=[
                        s.traffic_task_id for s in plan.earlier_in_phase(stage)
                    ],
                    serving=policy.serving.model_dump(),
                    retries=0,
                    execution_timeout=None,
                )
                degraded = EmptyOperator(task_id="degraded")
                review = proceed = None
                if pause:  # undecided at the stage's end: a human decides (reject rolls back)
                    proceed = EmptyOperator(task_id="proceed")
                    review = _approval(
                        "review",
                        f"{policy.model}: {stage.name} undecided. Continue the rollout?",
                        "The judge could not show every metric within tolerance in time; the "
                        "stage's gate decision says how much more traffic it would take. "
                        "Approve to go on; reject to roll back.",
                        policy.approval.timeout,
                        tasks.notify_callback(
                            policy,
                            "paused",
                            stage.name,
                            f"{stage.name} undecided at its end: a human decides",
                        ),
                    )
                gate = _py(
                    "gate",
                    tasks.monitor_gate,
                    policy,
                    branch=True,
                    trigger_rule=TriggerRule.NONE_SKIPPED,
                    stage=stage.name,
                    next_task=proceed.task_id if proceed else next_id,
                    review_task=review.task_id if review else None,
                    degraded_task=degraded.task_id,
                )
                start >> monitor >> gate >> degraded
                if pause:
                    gate >> [proceed, review]
            exits >> start
            degraded_markers.append(degraded)
            exits = [proceed, review] if pause else [gate]

        if policy.approval.required:
            approval = _approval(
                "approval",
                f"Promote {policy.model} to 100%?",
                "Every stage was judged healthy. Approve to cut over; reject to roll back.",
                policy.approval.timeout,
                tasks.notify_callback(
                    policy, "needs_approval", "approval", "every stage passed: approve the cutover"
                ),
            )
            approval.trigger_rule = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
            exits >> approval
            exits = [approval]
        cut = _py(
            "cutover", tasks.cutover, policy, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
        )
        [*exits, first_rollout] >> cut

        with TaskGroup("rollback"):
            detected = EmptyOperator(
                task_id="failure_detected", trigger_rule=TriggerRule.ONE_FAILED
            )
            rb_start = _py(
                "start", tasks.rollback_reason, policy, trigger_rule=TriggerRule.ONE_SUCCESS
            )
            restore = _py("restore_traffic", tasks.restore_traffic, policy, retries=3)
            record = _py(
                "record",
                tasks.record_rollback,
                policy,
                retries=3,
                trigger_rule=TriggerRule.NONE_SKIPPED,
            )
            fail = _py(
                "fail_run", tasks.fail_run, policy, retries=0, trigger_rule=TriggerRule.NONE_SKIPPED
            )
            # Not the branching gates themselves (a branch skips its other direct downstreams):
            # a failing gate or approval leaves cutover or a marker upstream_failed, seen here.
            [*degraded_markers, cut] >> detected
            [*degraded_markers, detected] >> rb_start >> restore >> record >> fail
    return dag


def build_invalid_policy_dag(path: Path, error: str) -> DAG:
    """A policy that does not validate still gets its DAG id, showing and failing with the error.

    Why not an import error: all policies share one DAG file, and one typo must not take down
    every other model's rollout DAG (and its running rollouts) with it.
    """
    model = re.sub(r"[^A-Za-z0-9_.\-]", "_", path.stem)

    def _raise():
        raise PolicyError(error)

    with DAG(
        dag_id=dag_id_for(model),
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["model_rollout", "invalid-policy"],
        is_paused_upon_creation=True,
        doc_md=f"**Invalid rollout policy** `{path}`:\n\n```\n{error}\n```",
    ) as dag:
        PythonOperator(task_id="policy_invalid", python_callable=_raise, retries=0)
    return dag


def build_all(folder: str | None = None) -> dict[str, DAG]:
    """Every policy's DAG, by DAG id; invalid policies get a DAG that reports the error."""
    dags: dict[str, DAG] = {}
    for path in policy_files(folder):
        try:
            policy = load_policy(path)
        except PolicyError as e:
            log.error("%s", e)
            dag = build_invalid_policy_dag(path, str(e))
        else:
            dag = build_rollout_dag(policy)
        dags[dag.dag_id] = dag
    return dags
