"""Registry watcher: candidate rules, the trigger polling a real MLflow server, durable dedupe."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from wh_support import new_version

from model_rollout.policy import Policy, Trigger
from model_rollout.registry import Registry, VersionInfo
from model_rollout.watcher import (
    RegistryWatchTrigger,
    candidates_for,
    payloads_from_context,
    plan_triggers,
)

ROOT = Path(__file__).resolve().parents[2]


def v(version, *, stage=None, tags=None, status="READY") -> VersionInfo:
    return VersionInfo(
        name="m",
        version=str(version),
        source="s",
        run_id=None,
        status=status,
        stage=stage,
        aliases=(),
        tags=tags or {},
        created_ms=0,
    )


def policy(**trigger) -> Policy:
    return Policy(model="m", trigger=Trigger(**trigger))


def versions_of(cands) -> list[str]:
    return [c.version for c in cands]


# --- candidate rules (pure) --------------------------------------------------------------
def test_alias_trigger_selects_the_aliased_version_unless_handled():
    vs = [v(1), v(2), v(3, tags={"rollout.state": "rolled_back"})]
    assert versions_of(candidates_for(policy(), vs, {"challenger": "2", "champion": "1"})) == ["2"]
    assert candidates_for(policy(), vs, {"challenger": "3"}) == []
    assert candidates_for(policy(), vs, {"champion": "1"}) == []
    [c] = candidates_for(policy(), vs, {"challenger": "2"})
    assert (c.dag_id, c.run_id) == ("model_rollout__m", "rollout__v2")
    assert "alias 'challenger'" in c.reason


@pytest.mark.parametrize(
    "state", ["rolling_out", "promoted", "rolled_back", "blocked", "standby", "decommissioned"]
)
def test_every_rollout_state_means_handled(state):
    vs = [v(1, stage="Staging", tags={"rollout.state": state})]
    assert candidates_for(policy(event="stage"), vs, {}) == []


def test_stage_trigger_is_case_insensitive_and_skips_the_champion_and_unready():
    vs = [
        v(1, stage="Staging"),
        v(2, stage="staging"),
        v(3, stage="Production"),
        v(4, stage="Staging", status="PENDING_REGISTRATION"),
    ]
    assert versions_of(candidates_for(policy(event="stage"), vs, {"champion": "1"})) == ["2"]


def test_tag_trigger():
    vs = [v(1, tags={"deploy": "yes"}), v(2, tags={"deploy": "no"}), v(3)]
    p = policy(event="tag", tag_key="deploy", tag_value="yes")
    assert versions_of(candidates_for(p, vs, {})) == ["1"]


def test_version_created_picks_only_the_newest_above_champion_and_handled():
    vs = [v(1), v(2), v(3, tags={"rollout.state": "rolled_back"}), v(4), v(5)]
    p = policy(event="version_created")
    assert versions_of(candidates_for(p, vs, {"champion": "2"})) == ["5"]
    assert versions_of(candidates_for(p, vs[:3], {"champion": "2"})) == []
    assert versions_of(candidates_for(p, [v(1), v(2)], {})) == ["2"]  # first install: newest only
    assert candidates_for(p, [v(1), v(2, status="FAILED_REGISTRATION")], {"champion": "1"}) == []


# --- the trigger -------------------------------------------------------------------------
def test_the_trigger_serializes_to_an_importable_classpath():
    t = RegistryWatchTrigger(poll_interval=5, models=["a"], policies_dir="/p")
    classpath, kwargs = t.serialize()
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert RegistryWatchTrigger.hash(classpath, kwargs) == RegistryWatchTrigger.hash(
        *again.serialize()
    )


async def _next_event(agen, timeout: float):
    return await asyncio.wait_for(agen.__anext__(), timeout)


def test_the_trigger_polls_mlflow_for_a_legacy_stage_and_dedupes_durably(
    mlflow_server, mlflow_client, policies, model_name
):
    policies(model_name, event="stage", stage="Staging")
    v1 = new_version(mlflow_client, model_name)
    v2 = new_version(mlflow_client, model_name)
    mlflow_client.set_registered_model_alias(model_name, "champion", v1)
    with pytest.warns(FutureWarning):
        mlflow_client.transition_model_version_stage(model_name, v2, "Staging")

    def make():
        return RegistryWatchTrigger(
            poll_interval=0.2,
            tracking_uri=mlflow_server,
            policies_dir=str(policies.folder),
            models=[model_name],
        )

    async def scenario():
        agen = make().run()
        try:
            first = await _next_event(agen, 60)
            # the same pending version is not emitted again on every poll
            with pytest.raises(TimeoutError):
                await _next_event(agen, 1.5)
            return first.payload
        finally:
            await agen.aclose()

    payload = asyncio.run(scenario())
    assert payload == {
        "model": model_name,
        "version": v2,
        "dag_id": f"model_rollout__{model_name}",
        "run_id": f"rollout__v{v2}",
        "reason": f"stage 'Staging' on version {v2} (registry watcher)",
    }
    # a triggerer restart forgets memory; the rollout.state tag is what keeps v2 handled
    assert [c.version for c in make().poll_once()] == [v2]
    mlflow_client.set_model_version_tag(model_name, v2, "rollout.state", "rolling_out")
    assert make().poll_once() == []


def test_a_poll_failure_does_not_end_the_watch(policies, model_name, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    policies(model_name, event="stage")
    t = RegistryWatchTrigger(
        poll_interval=0.1, tracking_uri="http://127.0.0.1:9", policies_dir=str(policies.folder)
    )
    assert t.poll_once is not None

    async def scenario():
        agen = t.run()
        try:
            with pytest.raises(TimeoutError):  # polls fail (refused), the generator lives on
                await _next_event(agen, 2.0)
        finally:
            await agen.aclose()

    asyncio.run(scenario())


# --- the consumer's re-check ----------------------------------------------------------------
def test_plan_rechecks_registry_and_existing_runs(mlflow_server, mlflow_client, model_name):
    v1 = new_version(mlflow_client, model_name)
    v2 = new_version(mlflow_client, model_name)
    mlflow_client.set_registered_model_alias(model_name, "challenger", v2)
    reg = Registry(mlflow_server)
    pol = {model_name: Policy(model=model_name)}
    events = [
        {"model": model_name, "version": v2},
        {"model": model_name, "version": v2},  # duplicate in one batch
        {"model": model_name, "version": v1},  # alias moved away since the poll
        {"model": "no-policy", "version": "1"},
        {"model": model_name, "version": "x"},
    ]
    plan = plan_triggers(events, reg, pol, has_run=lambda dag_id, run_id: False)
    assert plan == [
        {
            "trigger_dag_id": f"model_rollout__{model_name}",
            "trigger_run_id": f"rollout__v{v2}",
            "conf": {"version": v2},
            "note": f"alias 'challenger' on version {v2} (registry watcher)",
        }
    ]
    asked = []
    assert plan_triggers(events, reg, pol, lambda d, r: asked.append((d, r)) or True) == []
    assert asked == [(f"model_rollout__{model_name}", f"rollout__v{v2}")]
    mlflow_client.set_model_version_tag(model_name, v2, "rollout.state", "blocked")
    assert plan_triggers(events, reg, pol, has_run=lambda d, r: False) == []


def test_payloads_come_from_the_triggering_asset_events():
    ev = SimpleNamespace(extra={"from_trigger": True, "payload": {"model": "m", "version": "2"}})
    other = SimpleNamespace(extra={"something": "else"})
    ctx = {"triggering_asset_events": {"asset": [ev, other]}}
    assert payloads_from_context(ctx) == [{"model": "m", "version": "2"}]
    assert payloads_from_context({}) == []


# --- the DAG wiring --------------------------------------------------------------------------
def test_the_watcher_dag_is_scheduled_on_the_watched_asset(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "model_rollout_watcher.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["model_rollout_watcher"]
    assert dag.is_paused_upon_creation is False
    assert dag.max_active_runs == 1
    assert set(dag.task_ids) == {"plan", "start_rollout"}
    [asset] = dag.timetable.asset_condition.objects
    [watcher] = asset.watchers
    assert isinstance(watcher.trigger, RegistryWatchTrigger)
    assert dag.get_task("start_rollout").partial_kwargs["skip_when_already_exists"] is True


def test_the_plan_task_reads_its_context(mlflow_server, mlflow_client, policies, model_name):
    """The DAG's task body: payloads from the asset events, MLflow from env, runs from the ti."""
    from model_rollout.watcher import plan_from_context

    policies(model_name, event="tag", tag_key="deploy", tag_value="yes")
    v1 = new_version(mlflow_client, model_name)
    mlflow_client.set_model_version_tag(model_name, v1, "deploy", "yes")
    asked = []
    ti = SimpleNamespace(get_dr_count=lambda dag_id, run_ids: asked.append(run_ids) or 0)
    ev = SimpleNamespace(extra={"payload": {"model": model_name, "version": v1}})
    ctx = {"ti": ti, "triggering_asset_events": {"a": [ev]}}
    [kwargs] = plan_from_context(ctx)
    assert kwargs["conf"] == {"version": v1}
    assert asked == [[f"rollout__v{v1}"]]
    assert plan_from_context({"ti": ti, "triggering_asset_events": {}}) == []
