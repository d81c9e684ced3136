"""The scheduled decommission DAG: standby versions past their stability window are retired.

Why a separate DAG: the previous champion stays loaded (instant rollback) for the policy's
stability window, which outlives the rollout run by hours or days.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param, task

from model_rollout.orchestration.hooks import MlflowRegistryHook, ServingHook
from model_rollout.policy import load_policy, policy_files
from model_rollout.registry import CHAMPION, STANDBY, TAG_PREFIX

DAG_ID = "model_rollout_decommission"


def retire_standby(
    model: str,
    stability_window: float,
    *,
    dry_run: bool,
    now: float | None = None,
    serving: Any = None,
) -> list[dict[str, Any]]:
    """Retire every standby version of `model` whose window has passed; never the champion.

    :param serving: the policy's `serving` section (default: the embedded gateway).
    """
    now = time.time() if now is None else now
    reg = MlflowRegistryHook().get_conn()
    if not reg.model_exists(model):
        return []
    stack = ServingHook(serving)
    router = stack.router()
    aliases = reg.aliases(model)
    champion = aliases.get(CHAMPION)
    route = router.route(model)
    routed = set(route.weights) | set(route.shadows) | ({route.staging} if route.staging else set())
    report = []
    for mv in reg.all_versions(model):
        is_standby = (
            mv.tags.get(TAG_PREFIX + "state") == "standby" or aliases.get(STANDBY) == mv.version
        )
        if not is_standby:
            continue
        since = float(mv.tags.get(TAG_PREFIX + "standby_since") or mv.created_ms / 1000)
        entry = {"version": mv.version, "standby_for_s": round(now - since, 1)}
        if mv.version == champion:
            report.append({**entry, "action": "kept", "why": "it is the champion"})
            continue
        if now - since < stability_window:
            report.append(
                {
                    **entry,
                    "action": "kept",
                    "why": f"stability window {stability_window:.0f}s not over",
                }
            )
            continue
        if mv.version in routed and route.weights.get(mv.version, 0) > 0:
            report.append({**entry, "action": "kept", "why": "it still receives live traffic"})
            continue
        if dry_run:
            report.append({**entry, "action": "would_retire"})
            continue
        if mv.version in routed:  # only a shadow or staging leftover: take it out first
            router.set_traffic(
                model,
                route.weights,
                [s for s in route.shadows if s != mv.version],
                staging=None if route.staging == mv.version else route.staging,
            )
        stack.deployer().retire(model, mv.version)
        reg.clear_alias(model, STANDBY, only_if_version=mv.version)
        reg.set_tags(
            model,
            mv.version,
            {"state": "decommissioned", "stage": "decommissioned", "decommissioned_at": str(now)},
        )
        if mv.stage and mv.stage not in ("None", "Archived"):
            reg.set_stage(model, mv.version, "Archived")
        report.append({**entry, "action": "retired"})
    return report


def build_decommission_dag() -> DAG:
    """`model_rollout_decommission`: hourly by default (env MODEL_ROLLOUT_DECOMMISSION_SCHEDULE)."""
    with DAG(
        dag_id=DAG_ID,
        schedule=os.environ.get("MODEL_ROLLOUT_DECOMMISSION_SCHEDULE", "@hourly"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["model_rollout"],
        params={
            "dry_run": Param(
                False, type="boolean", description="Only report what would be retired."
            )
        },
        doc_md=__doc__,
    ) as dag:

        @task
        def models() -> list[str]:
            return [p.stem for p in policy_files()]

        @task
        def retire(model: str, params=None) -> list[dict[str, Any]]:
            from model_rollout.policy import policies_dir

            path = next(p for p in policy_files() if p.stem == model)
            policy = load_policy(path)
            dry = bool((params or {}).get("dry_run"))
            out = retire_standby(
                model, policy.stability_window, dry_run=dry, serving=policy.serving
            )
            print(f"{model} ({policies_dir()}): {out}")
            return out

        retire.expand(model=models())
    return dag
