"""The deferrable monitor: asks the judge every few seconds, ends the moment it says degraded.

Why a trigger: a window can last hours; waiting in the triggerer holds no worker slot. The
decision is a pure function of (verdict, now, window start) so that a restarted triggerer,
a retried sensor or the non-deferrable poke path all reach the same answer: nothing is kept
in memory that a restart could lose, and no traffic change is made here at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.triggers.base import BaseTrigger, TriggerEvent

from model_rollout.orchestration.hooks import GATEWAY_CONN_ID, GatewayHook

MAX_CONSECUTIVE_FETCH_ERRORS = 5


def window_deadline(since: float, window: float, on_inconclusive: str, extend_by: float) -> float:
    """Latest time the monitor may run: the window, plus one extension when the policy says so."""
    if on_inconclusive == "extend":
        return since + window + (extend_by or window)
    return since + window


def decide(
    verdict: dict[str, Any],
    *,
    now: float,
    since: float,
    window: float,
    on_inconclusive: str,
    extend_by: float,
) -> str | None:
    """`None` to keep waiting, else the outcome: degraded, invalid, healthy or inconclusive.

    Degraded and invalid (sample ratio mismatch) end the window at once; healthy only counts
    once the window has passed; inconclusive at the end of the window is extended once when
    the policy says `extend`.
    """
    status = verdict.get("status")
    if status == "degraded":
        return "degraded"
    if verdict.get("invalid"):
        return "invalid"
    if now < since + window:
        return None
    if status == "healthy":
        return "healthy"
    if now < window_deadline(since, window, on_inconclusive, extend_by):
        return None
    return "inconclusive"


def judge_snapshot(
    snapshot: dict[str, Any], *, baseline: str, candidate: str, mode: str, judge_config: dict
) -> dict[str, Any]:
    """Run the judge on one snapshot; its verdict as JSON."""
    from model_rollout.judge import JudgeConfig, evaluate

    config = JudgeConfig.model_validate(judge_config)
    return evaluate(
        snapshot, baseline=baseline, candidate=candidate, mode=mode, config=config
    ).to_json()


class JudgeTrigger(BaseTrigger):
    """Polls the gateway's statistics and the judge until the monitor's outcome is known.

    :param model: registered model name.
    :param baseline: incumbent version.
    :param candidate: candidate version.
    :param mode: "canary" (both arms live) or "shadow" (candidate mirrored).
    :param since: unix time the window's traffic split was applied.
    :param window: window length in seconds.
    :param poll_interval: seconds between judge evaluations.
    :param on_inconclusive: the policy's choice at window end (extend, pause, rollback).
    :param extend_by: extension length in seconds (0: one more window).
    :param judge_config: `JudgeConfig` as a dict.
    :param gateway_conn_id: connection of the gateway (the token is read here, never stored).
    """

    def __init__(
        self,
        *,
        model: str,
        baseline: str,
        candidate: str,
        mode: str,
        since: float,
        window: float,
        poll_interval: float,
        on_inconclusive: str,
        extend_by: float,
        judge_config: dict,
        gateway_conn_id: str = GATEWAY_CONN_ID,
    ):
        super().__init__()
        self.model = model
        self.baseline = baseline
        self.candidate = candidate
        self.mode = mode
        self.since = since
        self.window = window
        self.poll_interval = poll_interval
        self.on_inconclusive = on_inconclusive
        self.extend_by = extend_by
        self.judge_config = judge_config
        self.gateway_conn_id = gateway_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model": self.model,
                "baseline": self.baseline,
                "candidate": self.candidate,
                "mode": self.mode,
                "since": self.since,
                "window": self.window,
                "poll_interval": self.poll_interval,
                "on_inconclusive": self.on_inconclusive,
                "extend_by": self.extend_by,
                "judge_config": self.judge_config,
                "gateway_conn_id": self.gateway_conn_id,
            },
        )

    async def _endpoint(self):
        from asgiref.sync import sync_to_async

        return await sync_to_async(GatewayHook(self.gateway_conn_id).endpoint)()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        ep = await self._endpoint()
        headers = {"Authorization": f"Bearer {ep.token}"} if ep.token else {}
        errors = 0
        looks = 0
        async with httpx.AsyncClient(base_url=ep.url, headers=headers, timeout=15.0) as client:
            while True:
                try:
                    r = await client.get(
                        f"/admin/models/{self.model}/stats", params={"since": self.since}
                    )
                    r.raise_for_status()
                    snapshot = r.json()
                    errors = 0
                except (httpx.HTTPError, ValueError) as e:
                    errors += 1
                    self.log.warning("gateway stats fetch failed (%d in a row): %s", errors, e)
                    if errors >= MAX_CONSECUTIVE_FETCH_ERRORS:
                        yield TriggerEvent(
                            {
                                "outcome": "error",
                                "error": f"gateway {ep.url} statistics unreadable "
                                f"{errors} times in a row: {e}",
                            }
                        )
                        return
                    await asyncio.sleep(self.poll_interval)
                    continue
                verdict = judge_snapshot(
                    snapshot,
                    baseline=self.baseline,
                    candidate=self.candidate,
                    mode=self.mode,
                    judge_config=self.judge_config,
                )
                looks += 1
                outcome = decide(
                    verdict,
                    now=time.time(),
                    since=self.since,
                    window=self.window,
                    on_inconclusive=self.on_inconclusive,
                    extend_by=self.extend_by,
                )
                if outcome is not None:
                    yield TriggerEvent({"outcome": outcome, "looks": looks, "verdict": verdict})
                    return
                await asyncio.sleep(self.poll_interval)


class RolloutMonitorSensor(BaseSensorOperator):
    """Waits out one stage's window while the judge watches the traffic.

    Returns (XCom) `{"outcome", "verdict", "looks"}`; the stage's gate branches on it. With
    `deferrable=True` (default) it waits in the triggerer; otherwise it pokes in reschedule mode.

    :param model: registered model name.
    :param mode: "canary" or "shadow".
    :param window: window length in seconds.
    :param poll_interval: seconds between looks.
    :param on_inconclusive: the policy's choice at window end.
    :param extend_by: extension length in seconds.
    :param judge_config: the policy's `JudgeConfig` as a dict.
    :param resolve_task_id: task whose XCom holds candidate/incumbent.
    :param traffic_task_id: task whose XCom holds `applied_at`, the window's start.
    :param gateway_conn_id: the gateway connection.
    :param deferrable: wait in the triggerer (True) or poke (False).
    """

    template_fields = ()

    def __init__(
        self,
        *,
        model: str,
        mode: str,
        window: float,
        poll_interval: float,
        on_inconclusive: str,
        extend_by: float,
        judge_config: dict,
        resolve_task_id: str,
        traffic_task_id: str,
        gateway_conn_id: str = GATEWAY_CONN_ID,
        deferrable: bool = True,
        **kwargs,
    ):
        deadline = window_deadline(0.0, window, on_inconclusive, extend_by)
        kwargs.setdefault("timeout", deadline + max(300.0, 0.5 * deadline))
        kwargs.setdefault("poke_interval", poll_interval)
        if not deferrable:
            kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.model = model
        self.monitor_mode = mode
        self.window = window
        self.poll_interval = poll_interval
        self.on_inconclusive = on_inconclusive
        self.extend_by = extend_by
        self.judge_config = judge_config
        self.resolve_task_id = resolve_task_id
        self.traffic_task_id = traffic_task_id
        self.gateway_conn_id = gateway_conn_id
        self.deferrable = deferrable

    def _arms(self, context) -> tuple[str, str, float]:
        ti = context["ti"]
        resolved = ti.xcom_pull(task_ids=self.resolve_task_id) or {}
        applied = ti.xcom_pull(task_ids=self.traffic_task_id) or {}
        if not resolved.get("candidate") or not resolved.get("incumbent"):
            raise ValueError(
                f"{self.resolve_task_id} did not name a candidate and an incumbent: {resolved}"
            )
        if "applied_at" not in applied:
            raise ValueError(
                f"{self.traffic_task_id} did not record when traffic was applied: {applied}"
            )
        return resolved["incumbent"], resolved["candidate"], float(applied["applied_at"])

    def execute(self, context):
        if not self.deferrable:
            return super().execute(context)
        baseline, candidate, since = self._arms(context)
        remaining = (
            window_deadline(since, self.window, self.on_inconclusive, self.extend_by) - time.time()
        )
        self.defer(
            trigger=JudgeTrigger(
                model=self.model,
                baseline=baseline,
                candidate=candidate,
                mode=self.monitor_mode,
                since=since,
                window=self.window,
                poll_interval=self.poll_interval,
                on_inconclusive=self.on_inconclusive,
                extend_by=self.extend_by,
                judge_config=self.judge_config,
                gateway_conn_id=self.gateway_conn_id,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(remaining, 0) + 300.0),
        )

    def execute_complete(self, context, event: dict[str, Any]):
        if event.get("outcome") == "error":
            raise RuntimeError(event.get("error", "monitor failed"))
        self.log.info(
            "monitor %s ended %s after %s looks: %s",
            self.task_id,
            event.get("outcome"),
            event.get("looks"),
            (event.get("verdict") or {}).get("reason"),
        )
        return event

    def poke(self, context) -> PokeReturnValue:
        baseline, candidate, since = self._arms(context)
        backend = GatewayHook(self.gateway_conn_id).get_conn()
        verdict = judge_snapshot(
            backend.snapshot(self.model, since),
            baseline=baseline,
            candidate=candidate,
            mode=self.monitor_mode,
            judge_config=self.judge_config,
        )
        outcome = decide(
            verdict,
            now=time.time(),
            since=since,
            window=self.window,
            on_inconclusive=self.on_inconclusive,
            extend_by=self.extend_by,
        )
        if outcome is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(
            is_done=True, xcom_value={"outcome": outcome, "verdict": verdict, "looks": None}
        )
