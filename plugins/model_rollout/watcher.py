"""Registry watcher: what webhooks cannot deliver, found by polling MLflow from the triggerer.

Covers legacy stage transitions (they fire no webhook) and any trigger event missed while
Airflow or the receiver was down. `RegistryWatchTrigger` (a `BaseEventTrigger` behind an
`AssetWatcher`) yields one event per version that currently matches its model's policy
trigger; the `model_rollout_watcher` DAG (dags/model_rollout_watcher.py) consumes them.

Dedupe is durable, not in the trigger's memory (lost on triggerer restart):
- a version carrying any `rollout.state` tag (rolling_out, promoted, rolled_back, blocked,
  standby, decommissioned, ...) was handled already and is never a candidate;
- the run id is `rollout__v<version>`, the same as the webhook receiver's, so the metadata DB
  refuses a second automatic run of a version whichever path came first;
- the consumer re-reads the registry just before triggering (the poll may be stale).

Importable without mlflow (the DAG file imports it at parse time); the triggerer has
`plugins/` on its path, so the trigger's classpath resolves there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

if TYPE_CHECKING:
    from model_rollout.policy import Policy
    from model_rollout.registry import Registry, VersionInfo

log = logging.getLogger(__name__)

ASSET_NAME = "model_rollout_registry"
ASSET_URI = "model-rollout://mlflow-registry"
WATCHER_NAME = "model_rollout_registry_watcher"
DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_REEMIT_AFTER = 3600.0
STATE_TAG = "rollout.state"
_READY = ("READY", "ModelVersionStatus.READY")


@dataclass(frozen=True)
class Candidate:
    """A version whose registry state asks for a rollout that has not happened."""

    model: str
    version: str
    dag_id: str
    run_id: str
    reason: str

    def payload(self) -> dict[str, str]:
        return asdict(self)


def _handled(v: VersionInfo) -> bool:
    return bool(v.tags.get(STATE_TAG, "").strip())


def candidates_for(
    policy: Policy, versions: Iterable[VersionInfo], aliases: Mapping[str, str]
) -> list[Candidate]:
    """Versions of `policy.model` that its trigger selects and no rollout has touched.

    `version_created` selects only the newest READY version above every handled version and
    the champion: after an outage, older unhandled versions are superseded, and on a first
    install the whole history is not rolled out one by one.
    """
    from model_rollout.registry import CHAMPION
    from model_rollout.webhooks.events import run_id_for

    trig = policy.trigger
    versions = sorted(versions, key=lambda v: int(v.version))
    champion = aliases.get(CHAMPION)
    picked: list[tuple[VersionInfo, str]] = []
    if trig.event == "alias":
        target = aliases.get(trig.alias)
        picked = [(v, f"alias {trig.alias!r}") for v in versions if v.version == target]
    elif trig.event == "tag":
        picked = [
            (v, f"tag {trig.tag_key}={trig.tag_value!r}")
            for v in versions
            if v.tags.get(trig.tag_key) == trig.tag_value
        ]
    elif trig.event == "stage":
        want = trig.stage.strip().lower()
        picked = [
            (v, f"stage {trig.stage!r}")
            for v in versions
            if (v.stage or "").strip().lower() == want
        ]
    elif trig.event == "version_created":
        marks = [int(v.version) for v in versions if _handled(v)]
        if champion is not None and champion.isdigit():
            marks.append(int(champion))
        watermark = max(marks, default=0)
        newest = [v for v in versions if int(v.version) > watermark and v.status in _READY]
        picked = [(newest[-1], "new version")] if newest else []
    return [
        Candidate(
            model=policy.model,
            version=v.version,
            dag_id=policy.dag_id,
            run_id=run_id_for(v.version),
            reason=f"{why} on version {v.version} (registry watcher)",
        )
        for v, why in picked
        if not _handled(v) and v.status in _READY and v.version != champion
    ]


def load_policies(folder: str | None = None, models: Iterable[str] | None = None) -> list[Policy]:
    """Every valid policy (invalid ones are logged and skipped: their DAG shows the error)."""
    from model_rollout.policy import PolicyError, load_policy, policy_files

    wanted = set(models) if models else None
    out = []
    for path in policy_files(folder):
        if wanted is not None and path.stem not in wanted:
            continue
        try:
            out.append(load_policy(path))
        except PolicyError as e:
            log.warning("registry watcher skips %s: %s", path, e)
    return out


def scan(registry: Registry, policies: Iterable[Policy]) -> list[Candidate]:
    """Candidates of every policy's model; a model missing from the registry has none."""
    out: list[Candidate] = []
    for policy in policies:
        if not registry.model_exists(policy.model):
            continue
        out.extend(
            candidates_for(
                policy, registry.all_versions(policy.model), registry.aliases(policy.model)
            )
        )
    return out


def resolve_tracking_uri(tracking_uri: str | None, mlflow_conn_id: str) -> str:
    """Explicit URI, else the `mlflow_default` connection, else MLFLOW_TRACKING_URI."""
    if tracking_uri:
        return tracking_uri
    from model_rollout.orchestration.hooks import MlflowRegistryHook

    return MlflowRegistryHook(mlflow_conn_id).tracking_uri()


class RegistryWatchTrigger(BaseEventTrigger):
    """Polls the MLflow registry and yields an event per version a policy trigger selects.

    :param poll_interval: seconds between polls.
    :param tracking_uri: MLflow tracking URI; None resolves `mlflow_conn_id` (or the env
        fallback MLFLOW_TRACKING_URI) in the triggerer at run time.
    :param mlflow_conn_id: Airflow connection of the MLflow server.
    :param policies_dir: policy folder; None means `MODEL_ROLLOUT_POLICIES` or the default.
    :param models: only watch these models (None: every model with a policy).
    :param reemit_after: seconds after which a still-pending candidate is emitted again (its
        first event may have found the rollout DAG missing); the consumer dedupes.
    """

    def __init__(
        self,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        tracking_uri: str | None = None,
        mlflow_conn_id: str = "mlflow_default",
        policies_dir: str | None = None,
        models: list[str] | None = None,
        reemit_after: float = DEFAULT_REEMIT_AFTER,
    ):
        super().__init__()
        self.poll_interval = float(poll_interval)
        self.tracking_uri = tracking_uri
        self.mlflow_conn_id = mlflow_conn_id
        self.policies_dir = policies_dir
        self.models = list(models) if models else None
        self.reemit_after = float(reemit_after)
        self._registry: Registry | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "poll_interval": self.poll_interval,
                "tracking_uri": self.tracking_uri,
                "mlflow_conn_id": self.mlflow_conn_id,
                "policies_dir": self.policies_dir,
                "models": self.models,
                "reemit_after": self.reemit_after,
            },
        )

    def poll_once(self) -> list[Candidate]:
        """One blocking pass over the registry (run in a thread by `run`)."""
        if self._registry is None:
            from model_rollout.registry import Registry

            self._registry = Registry(resolve_tracking_uri(self.tracking_uri, self.mlflow_conn_id))
        return scan(self._registry, load_policies(self.policies_dir, self.models))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        emitted: dict[tuple[str, str], float] = {}
        while True:
            try:
                found = await asyncio.to_thread(self.poll_once)
            except Exception as e:  # registry down: keep watching (and remembering), say why
                log.warning("registry watcher poll failed: %s", e)
                await asyncio.sleep(self.poll_interval)
                continue
            now = time.monotonic()
            current = {(c.model, c.version) for c in found}
            for key in list(emitted):  # forget versions no longer pending: bounded memory
                if key not in current:
                    del emitted[key]
            for c in found:
                key = (c.model, c.version)
                if key in emitted and now - emitted[key] < self.reemit_after:
                    continue
                emitted[key] = now
                log.info("registry watcher: %s", c.reason)
                yield TriggerEvent(c.payload())
            await asyncio.sleep(self.poll_interval)


def registry_asset(**trigger_kwargs: Any):
    """The asset the watcher DAG is scheduled on, with the polling trigger attached."""
    from airflow.sdk import Asset, AssetWatcher

    return Asset(
        name=ASSET_NAME,
        uri=ASSET_URI,
        watchers=[AssetWatcher(name=WATCHER_NAME, trigger=RegistryWatchTrigger(**trigger_kwargs))],
    )


def plan_triggers(
    payloads: Iterable[Mapping[str, Any]],
    registry: Registry,
    policies: Mapping[str, Policy],
    has_run: Callable[[str, str], bool],
) -> list[dict[str, Any]]:
    """TriggerDagRunOperator kwargs for the events still worth a run, re-checked right now.

    `has_run(dag_id, run_id)` asks the metadata DB; the registry is re-read because an event
    may be minutes old (the version may have been rolled out or its alias moved since).
    """
    out: list[dict[str, Any]] = []
    wanted: dict[str, set[str]] = {}
    for p in payloads:
        model, version = str(p.get("model", "")), str(p.get("version", ""))
        if not model or not version.isdigit():
            log.warning("watcher event without model/version ignored: %r", dict(p))
            continue
        wanted.setdefault(model, set()).add(version)
    for model, versions in sorted(wanted.items()):
        policy = policies.get(model)
        if policy is None:
            log.info("no policy for %r any more; ignoring versions %s", model, sorted(versions))
            continue
        fresh = {c.version: c for c in scan(registry, [policy])}
        for version in sorted(versions, key=int):
            c = fresh.get(version)
            if c is None:
                log.info(
                    "%r version %s: no longer a candidate (rolled out, refused or trigger moved)",
                    model,
                    version,
                )
                continue
            if has_run(c.dag_id, c.run_id):
                log.info("%r version %s already has run %s", model, version, c.run_id)
                continue
            out.append(
                {
                    "trigger_dag_id": c.dag_id,
                    "trigger_run_id": c.run_id,
                    "conf": {"version": c.version},
                    "note": c.reason,
                }
            )
    return out


def payloads_from_context(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trigger payloads behind this asset-triggered run."""
    out = []
    for events in (context.get("triggering_asset_events") or {}).values():
        for ev in events:
            extra = getattr(ev, "extra", None) or {}
            if isinstance(extra.get("payload"), dict):
                out.append(extra["payload"])
    return out


def plan_from_context(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The watcher DAG's `plan` task: its events, re-checked against registry and DB."""
    from model_rollout.orchestration.hooks import MlflowRegistryHook

    payloads = payloads_from_context(context)
    if not payloads:
        return []
    models = {str(p.get("model", "")) for p in payloads}
    policies = {p.model: p for p in load_policies(models=models)}
    ti = context["ti"]

    def has_run(dag_id: str, run_id: str) -> bool:
        return ti.get_dr_count(dag_id=dag_id, run_ids=[run_id]) > 0

    return plan_triggers(payloads, MlflowRegistryHook().get_conn(), policies, has_run)
