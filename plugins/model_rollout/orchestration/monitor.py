"""The deferrable monitor: asks the judge every few seconds, ends the moment it says degraded.

Why a trigger: a window can last hours; waiting in the triggerer holds no worker slot. What a
look decides is `decisions.monitor.StageMonitor`'s business (the same code the simulator and
the planner run); this module only fetches the statistics (from the policy's metric source, never a URL of its
own) and hands them over. Nothing is kept
that a restart must not lose: every count is read from the stage's start (and the earlier
stages of the phase from their recorded time ranges), and no traffic change is made here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.triggers.base import BaseTrigger, TriggerEvent

from model_rollout.decisions.plan import Stage
from model_rollout.orchestration.hooks import ServingHook

MAX_CONSECUTIVE_FETCH_ERRORS = 5


def stage_monitor(
    stage: dict | Stage,
    *,
    baseline: str,
    candidate: str,
    since: float,
    judge_config: dict,
    alpha_metric: float,
    inconclusive_action: str,
):
    """A `StageMonitor` from the JSON-able arguments a trigger or task carries."""
    from model_rollout.decisions.monitor import StageMonitor

    return StageMonitor(
        stage if isinstance(stage, Stage) else Stage(**stage),
        baseline=baseline,
        candidate=candidate,
        since=since,
        judge_config=judge_config,
        alpha_metric=alpha_metric,
        inconclusive_action=inconclusive_action,  # type: ignore[arg-type]
    )


def with_weights(snapshot: dict[str, Any], weights: dict[str, Any] | None) -> dict[str, Any]:
    """A finished stage's snapshot carries today's route; judge it with the stage's own weights."""
    if weights:
        return arms_by_route({**snapshot, "weights": dict(weights)})
    return snapshot


def fill_weights(snapshot: dict[str, Any], weights: dict[str, Any] | None) -> dict[str, Any]:
    """A source that knows no route (Prometheus) gives no weights: judge the stage with the
    weights its traffic task applied."""
    if weights and not snapshot.get("weights"):
        return arms_by_route({**snapshot, "weights": dict(weights)})
    return snapshot


def arms_by_route(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A source that cannot tell mirrored from live requests (`arms_by_route`: MLServer counts
    whatever reaches it) has them told apart by the stage's route: a version with no live
    weight only received mirrored copies, so its requests are the shadow arm."""
    if not snapshot.get("arms_by_route") or not snapshot.get("weights"):
        return snapshot
    live = {str(v) for v, w in snapshot["weights"].items() if float(w) > 0}
    arms = [
        a if a["version"] in live or a["arm"] != "primary" else {**a, "arm": "shadow"}
        for a in snapshot.get("arms", [])
    ]
    return {**snapshot, "arms": arms, "arms_by_route": False}


def earlier_snapshots(metrics, model: str, windows: list[dict]) -> list[dict[str, Any]]:
    """Snapshots of the phase's finished stages, each over its own [since, until)."""
    return [
        with_weights(metrics.snapshot(model, w["since"], w["until"]), w.get("weights"))
        for w in windows
    ]


class JudgeTrigger(BaseTrigger):
    """Polls the metric source and the stage's monitor until the outcome is known.

    :param model: registered model name.
    :param baseline: incumbent version.
    :param candidate: candidate version.
    :param stage: the stage (`decisions.plan.Stage` as a dict: window, role, max duration...).
    :param since: unix time the stage's traffic was applied.
    :param earlier: the phase's finished stages, oldest first: `{"since", "until", "weights"}`.
    :param weights: the weights the stage's traffic task applied (used when the metric source
        does not report the route).
    :param poll_interval: seconds between looks.
    :param judge_config: the policy's `JudgeConfig` for the stage's mode, as a dict.
    :param alpha_metric: alpha of each of the rollout's tests.
    :param inconclusive_action: "pause" or "rollback" (what an undecided stage finally does).
    :param serving: the policy's `serving` section as a dict (names and connection ids; the
        credentials are read here from the connections, never stored in the trigger).
    :param hold_deadline: unix time after which a stage still held (`model-rollout pause`)
        ends the trigger with outcome "held", so that the sensor defers again before its
        deferral times out.
    """

    def __init__(
        self,
        *,
        model: str,
        baseline: str,
        candidate: str,
        stage: dict,
        since: float,
        earlier: list[dict],
        poll_interval: float,
        judge_config: dict,
        alpha_metric: float,
        inconclusive_action: str,
        serving: dict | None = None,
        weights: dict | None = None,
        hold_deadline: float | None = None,
    ):
        super().__init__()
        self.hold_deadline = hold_deadline
        self._controls_at = float("-inf")
        self._controls_seen: dict[str, str] = {}
        self.model = model
        self.baseline = baseline
        self.candidate = candidate
        self.stage = stage
        self.since = since
        self.earlier = earlier
        self.poll_interval = poll_interval
        self.judge_config = judge_config
        self.alpha_metric = alpha_metric
        self.inconclusive_action = inconclusive_action
        self.serving = dict(serving or {})
        self.weights = dict(weights or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model": self.model,
                "baseline": self.baseline,
                "candidate": self.candidate,
                "stage": self.stage,
                "since": self.since,
                "earlier": self.earlier,
                "poll_interval": self.poll_interval,
                "judge_config": self.judge_config,
                "alpha_metric": self.alpha_metric,
                "inconclusive_action": self.inconclusive_action,
                "serving": self.serving,
                "weights": self.weights,
                "hold_deadline": self.hold_deadline,
            },
        )

    CONTROLS_EVERY = 5.0  # seconds between reads of the control tags

    async def _controls(self) -> dict[str, str]:
        """The operator's controls on the candidate (`model-rollout pause` / `promote --full`:
        tags `rollout.hold`, `rollout.promote_full`); {} when none or MLflow cannot say.

        Read with one bounded HTTP call (5 s), at most every CONTROLS_EVERY s: MLflow being
        down must never slow the judge's looks (its client retries for minutes)."""
        now = time.monotonic()
        if now - self._controls_at < self.CONTROLS_EVERY:
            return self._controls_seen
        self._controls_at = now
        import httpx
        from asgiref.sync import sync_to_async

        from model_rollout.orchestration.hooks import MlflowRegistryHook

        try:
            uri = await sync_to_async(lambda: MlflowRegistryHook().tracking_uri())()
            if not uri.startswith("http"):
                return {}
            async with httpx.AsyncClient(timeout=5.0) as client:
                r = await client.get(
                    f"{uri.rstrip('/')}/api/2.0/mlflow/model-versions/get",
                    params={"name": self.model, "version": self.candidate},
                )
            r.raise_for_status()
            tags = {t["key"]: t.get("value", "") for t in r.json()["model_version"].get("tags", [])}
        except Exception as e:
            self.log.warning("could not read the rollout's control tags: %s", e)
            return self._controls_seen
        self._controls_seen = {k: tags.get(f"rollout.{k}", "") for k in ("hold", "promote_full")}
        return self._controls_seen

    async def _metrics(self):
        """The metric source; opening it reads Airflow connections, which blocks."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(lambda: ServingHook(self.serving).metrics())()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        monitor = stage_monitor(
            self.stage,
            baseline=self.baseline,
            candidate=self.candidate,
            since=self.since,
            judge_config=self.judge_config,
            alpha_metric=self.alpha_metric,
            inconclusive_action=self.inconclusive_action,
        )
        metrics = await self._metrics()
        errors = 0
        earlier: list[dict] | None = None
        while True:
            try:
                if earlier is None:  # finished stages: read once, they do not change
                    earlier = [
                        with_weights(
                            await metrics.asnapshot(self.model, w["since"], w["until"]),
                            w.get("weights"),
                        )
                        for w in self.earlier
                    ]
                snapshot = fill_weights(
                    await metrics.asnapshot(self.model, self.since), self.weights
                )
                errors = 0
            except Exception as e:  # a source that fails is retried, then names its error
                errors += 1
                self.log.warning("statistics fetch failed (%d in a row): %s", errors, e)
                if errors >= MAX_CONSECUTIVE_FETCH_ERRORS:
                    yield TriggerEvent(
                        {
                            "outcome": "error",
                            "error": f"{metrics!r} statistics unreadable "
                            f"{errors} times in a row: {e}",
                        }
                    )
                    return
                await asyncio.sleep(self.poll_interval)
                continue
            outcome = monitor.look(snapshot, earlier, now=time.time())
            harm = outcome is not None and outcome.get("outcome") in ("degraded", "invalid")
            controls = {} if harm else await self._controls()
            if controls.get("promote_full"):  # an operator skips the rest of the steps
                yield TriggerEvent(
                    {
                        "outcome": "passed",
                        "manual": True,
                        "looks": monitor.looks,
                        "reason": f"promoted to cutover by {controls['promote_full']}",
                    }
                )
                return
            if outcome is not None and not harm:
                holder = controls.get("hold")
                if holder:  # paused by an operator: keep watching, act only on harm
                    if self.hold_deadline and time.time() > self.hold_deadline:
                        yield TriggerEvent({"outcome": "held", "held_by": holder})
                        return
                    await asyncio.sleep(self.poll_interval)
                    continue
            if outcome is not None:
                yield TriggerEvent(outcome)
                return
            await asyncio.sleep(self.poll_interval)


class RolloutMonitorSensor(BaseSensorOperator):
    """Waits out one stage while the judge watches the traffic.

    Returns (XCom) the stage's outcome (`decisions.monitor.StageMonitor.look`): `outcome`,
    `reason`, `verdict`, `looks`, `needed_seconds`...; the stage's gate branches on it. With
    `deferrable=True` (default) it waits in the triggerer, keeping the stage's evidence between
    looks; otherwise it pokes in reschedule mode, judging the data afresh at each poke.

    :param model: registered model name.
    :param stage: the stage (`decisions.plan.Stage`).
    :param poll_interval: seconds between looks.
    :param judge_config: the policy's `JudgeConfig` for the stage's mode, as a dict.
    :param alpha_metric: alpha of each of the rollout's tests (`RolloutPlan.alpha_per_test`).
    :param inconclusive_action: "pause" or "rollback".
    :param resolve_task_id: task whose XCom holds candidate/incumbent.
    :param traffic_task_id: task whose XCom holds `applied_at`, the stage's start.
    :param earlier_traffic_task_ids: traffic tasks of the phase's earlier stages, oldest first
        (their `applied_at` and `weights` delimit the evidence carried over).
    :param serving: the policy's `serving` section as a dict (default: the embedded gateway).
    :param deferrable: wait in the triggerer (True) or poke (False).
    """

    template_fields = ()

    def __init__(
        self,
        *,
        model: str,
        stage: Stage,
        poll_interval: float,
        judge_config: dict,
        alpha_metric: float,
        inconclusive_action: str,
        resolve_task_id: str,
        traffic_task_id: str,
        earlier_traffic_task_ids: list[str] | tuple[str, ...] = (),
        serving: dict | None = None,
        deferrable: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("timeout", stage.max_duration + max(300.0, 0.5 * stage.max_duration))
        kwargs.setdefault("poke_interval", poll_interval)
        if not deferrable:
            kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.model = model
        self.stage = stage
        self.poll_interval = poll_interval
        self.judge_config = judge_config
        self.alpha_metric = alpha_metric
        self.inconclusive_action = inconclusive_action
        self.resolve_task_id = resolve_task_id
        self.traffic_task_id = traffic_task_id
        self.earlier_traffic_task_ids = list(earlier_traffic_task_ids)
        self.serving = dict(serving or {})
        self.deferrable = deferrable

    def _arms(self, context) -> tuple[str, str, float, list[dict], dict | None]:
        ti = context["ti"]
        resolved = ti.xcom_pull(task_ids=self.resolve_task_id) or {}
        if not resolved.get("candidate") or not resolved.get("incumbent"):
            raise ValueError(
                f"{self.resolve_task_id} did not name a candidate and an incumbent: {resolved}"
            )
        applied = []
        for tid in [*self.earlier_traffic_task_ids, self.traffic_task_id]:
            x = ti.xcom_pull(task_ids=tid) or {}
            if "applied_at" not in x:
                raise ValueError(f"{tid} did not record when traffic was applied: {x}")
            applied.append(x)
        windows = [
            {"since": a["applied_at"], "until": b["applied_at"], "weights": a.get("weights")}
            for a, b in zip(applied, applied[1:], strict=False)
        ]
        return (
            resolved["incumbent"],
            resolved["candidate"],
            float(applied[-1]["applied_at"]),
            windows,
            applied[-1].get("weights"),
        )

    def _monitor(self, baseline: str, candidate: str, since: float):
        return stage_monitor(
            self.stage,
            baseline=baseline,
            candidate=candidate,
            since=since,
            judge_config=self.judge_config,
            alpha_metric=self.alpha_metric,
            inconclusive_action=self.inconclusive_action,
        )

    def execute(self, context):
        if not self.deferrable:
            return super().execute(context)
        baseline, candidate, since, windows, weights = self._arms(context)
        self._defer(baseline, candidate, since, windows, weights)

    HOLD_SLICE = 3600.0  # a held stage re-defers every hour (a deferral needs a timeout)

    def _defer(self, baseline, candidate, since, windows, weights, held: bool = False) -> None:
        remaining = since + self.stage.max_duration - time.time()
        if held:
            remaining = self.HOLD_SLICE
        self.defer(
            trigger=JudgeTrigger(
                model=self.model,
                baseline=baseline,
                candidate=candidate,
                stage=asdict(self.stage),
                since=since,
                earlier=windows,
                poll_interval=self.poll_interval,
                judge_config=self.judge_config,
                alpha_metric=self.alpha_metric,
                inconclusive_action=self.inconclusive_action,
                serving=self.serving,
                weights=weights,
                hold_deadline=time.time() + max(remaining, 0) + 240.0,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(remaining, 0) + 300.0),
        )

    def execute_complete(self, context, event: dict[str, Any]):
        if event.get("outcome") == "held":  # still paused: watch for another slice
            self.log.info("stage held by %s: watching on", event.get("held_by"))
            self._defer(*self._arms(context), held=True)
        if event.get("outcome") == "error":
            raise RuntimeError(event.get("error", "monitor failed"))
        self.log.info(
            "monitor %s ended %s after %s looks: %s",
            self.task_id,
            event.get("outcome"),
            event.get("looks"),
            event.get("reason"),
        )
        return event

    def poke(self, context) -> PokeReturnValue:
        baseline, candidate, since, windows, weights = self._arms(context)
        metrics = ServingHook(self.serving).metrics()
        monitor = self._monitor(baseline, candidate, since)
        outcome = monitor.look(
            fill_weights(metrics.snapshot(self.model, since), weights),
            earlier_snapshots(metrics, self.model, windows),
            now=time.time(),
        )
        if outcome is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=outcome)
