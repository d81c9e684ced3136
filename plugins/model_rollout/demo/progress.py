"""Terminal progress of one rollout run: a line per change of task state, split and verdict.

Why polling two sources: Airflow knows the stage and the verdicts (task states, the gates'
`decision` XComs), the gateway knows the traffic split actually in force and what each version
answered. Both are read-only here; a slow poll never affects the rollout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests

from model_rollout.demo.airflow_api import AirflowAPI

TERMINAL = {"success", "failed"}
TROUBLE = {"up_for_retry", "up_for_reschedule", "upstream_failed"}  # worth a line: see its log
RUN_DONE = {"success", "failed"}
STATS_EVERY = 10.0


def ts(value: str | None) -> float | None:
    """Unix time of an Airflow ISO timestamp."""
    return datetime.fromisoformat(value).timestamp() if value else None


def split_text(route: dict) -> str:
    """'v1 80% | v2 20%' plus mirrors and the staging slot."""
    weights = route.get("weights") or {}
    parts = [f"v{v} {w}%" for v, w in sorted(weights.items(), key=lambda kv: int(kv[0])) if w]
    text = " | ".join(parts) or "no live version"
    if route.get("shadows"):
        text += " | mirrored to " + ", ".join(f"v{v}" for v in route["shadows"])
    if route.get("staging"):
        text += f" | staging v{route['staging']}"
    return text


def metric_lines(verdict: dict) -> list[str]:
    """One line per judged metric of a verdict: its status and the judge's sentence."""
    metrics = verdict.get("metrics") or {}
    items = metrics.items() if isinstance(metrics, dict) else ((m["name"], m) for m in metrics)
    return [f"{name}: {m.get('status')} - {m.get('reason')}" for name, m in items]


@dataclass
class RunReport:
    """What one rollout did, for the summary."""

    run_id: str
    candidate: str
    incumbent: str | None
    state: str = "unknown"
    decisions: list[dict] = field(default_factory=list)
    reason: str = ""
    stage: str = ""
    first_traffic_at: float | None = None  # candidate first got (mirrored or live) traffic
    detected_at: float | None = None  # the judge's degraded verdict ended the monitor
    restored_at: float | None = None  # 100% back on the incumbent
    started_at: float | None = None
    ended_at: float | None = None
    answered: dict[str, int] = field(default_factory=dict)  # "v3 primary" -> requests
    errors: dict[str, int] = field(default_factory=dict)


class RunWatcher:
    """Polls one DAG run until it ends, printing what changed.

    :param say: prints one line (the demo prefixes the elapsed time).
    """

    def __init__(
        self,
        api: AirflowAPI,
        gateway_url: str,
        gateway_token: str,
        model: str,
        dag_id: str,
        run_id: str,
        candidate: str,
        say: Callable[[str], None],
        poll: float = 2.0,
    ):
        self.api = api
        self.gw = requests.Session()
        self.gw.headers["Authorization"] = f"Bearer {gateway_token}"
        self.gateway_url = gateway_url.rstrip("/")
        self.model = model
        self.dag_id = dag_id
        self.run_id = run_id
        self.say = say
        self.poll = poll
        self.report = RunReport(run_id=run_id, candidate=candidate, incumbent=None)
        self._states: dict[str, str] = {}
        self._tis: dict[str, dict] = {}
        self._route: dict | None = None
        self._run_state: str | None = None
        self._last_stats = 0.0

    # -- gateway ------------------------------------------------------------------------------
    def _gw(self, path: str, **params) -> dict | None:
        try:
            r = self.gw.get(f"{self.gateway_url}{path}", params=params, timeout=10)
        except requests.RequestException:
            return None
        return r.json() if r.status_code == 200 else None

    def _check_route(self) -> None:
        route = self._gw(f"/admin/models/{self.model}/route")
        if route is None:
            return
        key = (route.get("weights"), route.get("shadows"), route.get("staging"))
        if self._route is None or key != (
            self._route.get("weights"),
            self._route.get("shadows"),
            self._route.get("staging"),
        ):
            self.say(f"split    {split_text(route)}")
        self._route = route

    def _stats_line(self, window: float = STATS_EVERY) -> None:
        snap = self._gw(f"/admin/models/{self.model}/stats", since=time.time() - window)
        if not snap:
            return
        parts = []
        for arm in sorted(snap.get("arms") or [], key=lambda a: (a["arm"], int(a["version"]))):
            if arm["arm"] == "staging" or not arm.get("requests"):
                continue
            label = f"v{arm['version']}" + (" (mirror)" if arm["arm"] == "shadow" else "")
            fb = (arm.get("feedback") or {}).get("count") or 0
            conv = f", {arm['feedback']['sum'] / fb:.0%} converted" if fb else ""
            parts.append(f"{label} {arm['requests']} req, {arm.get('errors', 0)} errors{conv}")
        if parts:
            self.say(f"traffic  last {window:.0f} s: " + "; ".join(parts))

    # -- airflow ------------------------------------------------------------------------------
    def _decision(self, gate: str) -> dict:
        try:
            return self.api.xcom(self.dag_id, self.run_id, gate, key="decision") or {}
        except requests.RequestException:
            return {}

    def _on_task(self, ti: dict, state: str) -> None:
        tid = ti["task_id"]
        if state == "deferred" and tid.endswith(".monitor"):
            self.say(f"judge    {tid.split('.')[0]}: watching live statistics")
            return
        if state in TROUBLE:
            self.say(f"task     {tid}: {state} (its log: Airflow UI, or .demo/airflow/logs/)")
            return
        if state not in TERMINAL:
            return
        took = ""
        if ti.get("start_date") and ti.get("end_date"):
            took = f" ({ts(ti['end_date']) - ts(ti['start_date']):.1f} s)"
        if tid == "resolve" and state == "success":
            resolved = self.api.xcom(self.dag_id, self.run_id, "resolve") or {}
            self.report.incumbent = resolved.get("incumbent")
            self.say(
                f"task     resolve: candidate v{resolved.get('candidate')} against "
                f"champion v{resolved.get('incumbent')}{took}"
            )
            return
        if tid.endswith(".gate") and state == "success":
            d = self._decision(tid)
            if d:
                self.report.decisions.append(d)
                outcome = str(d.get("outcome", "?")).upper()
                reason = (
                    f": {d['reason']}"
                    if d.get("reason") and d["reason"] != d.get("outcome")
                    else ""
                )
                self.say(f"verdict  {d.get('stage')} -> {outcome}{reason}")
                if d.get("outcome") == "degraded":
                    for line in metric_lines(d.get("verdict") or {}):
                        self.say(f"         {line}")
            return
        if tid.endswith(".monitor"):
            return  # its verdict is printed by the stage's gate
        if tid in ("shadow.start",) or tid.endswith(".set_traffic"):
            applied = (self.api.xcom(self.dag_id, self.run_id, tid) or {}).get("applied_at")
            if state == "success" and self.report.first_traffic_at is None:
                self.report.first_traffic_at = applied or ts(ti.get("end_date"))
            self.report.stage = tid.split(".")[0]
        if tid == "rollback.restore_traffic" and state == "success":
            done = self.api.xcom(self.dag_id, self.run_id, tid) or {}
            restored = done.get("live_at") or done.get("restored_at")
            self.report.restored_at = restored or ts(ti.get("end_date"))
        if tid == "cutover" and state == "success":
            self.report.stage = "cutover"
        if tid.endswith(".degraded") or tid in ("staging.blocked", "staging.first_rollout"):
            return  # markers: the gate's verdict line said it
        if tid == "rollback.fail_run":
            return  # fails on purpose: the run ends red with the reason
        self.say(f"task     {tid}: {state}{took}")

    def poll_once(self) -> bool:
        """One look at the run; True when it has ended."""
        run = self.api.run(self.dag_id, self.run_id)
        if run is None:
            return False
        state = str(run.get("state"))
        if state != self._run_state:
            self._run_state = state
            if self.report.started_at is None and run.get("start_date"):
                self.report.started_at = ts(run["start_date"])
        tis = sorted(
            self.api.task_instances(self.dag_id, self.run_id),
            key=lambda t: ts(t.get("end_date")) or ts(t.get("start_date")) or float("inf"),
        )
        for ti in tis:
            st = str(ti.get("state"))
            self._tis[ti["task_id"]] = ti
            if self._states.get(ti["task_id"]) != st:
                self._states[ti["task_id"]] = st
                self._on_task(ti, st)
        self._check_route()
        judging = any(
            t.endswith(".monitor") and s in ("deferred", "running") for t, s in self._states.items()
        )
        if judging and time.monotonic() - self._last_stats >= STATS_EVERY:
            self._last_stats = time.monotonic()
            self._stats_line()
        if state in RUN_DONE:
            self.report.state = state
            self.report.ended_at = ts(run.get("end_date")) or time.time()
            return True
        return False

    def watch(self, timeout: float) -> RunReport:
        """Poll until the run ends (or `timeout` seconds pass: TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.poll_once():
                    self._finish()
                    return self.report
            except requests.RequestException as e:
                self.say(f"(progress poll failed, retrying: {type(e).__name__})")
            time.sleep(self.poll)
        raise TimeoutError(f"run {self.run_id} of {self.dag_id} did not end within {timeout:.0f} s")

    def _finish(self) -> None:
        """Rollback reason and what the candidate answered during the run."""
        r = self.report
        if r.state == "failed":
            why = self.api.xcom(self.dag_id, self.run_id, "rollback.start") or {}
            blocked = self._decision("staging.gate")
            if why.get("reason"):
                r.reason = why["reason"]
            elif blocked.get("outcome") == "blocked":
                r.reason = f"staging: {blocked.get('reason')}"
                r.stage = "staging"
        for d in r.decisions:  # the monitor ended the moment the judge said degraded
            if d.get("outcome") == "degraded" and r.detected_at is None:
                r.detected_at = ts(
                    (self._tis.get(f"{d.get('stage')}.monitor") or {}).get("end_date")
                )
        since = r.started_at or time.time() - 600
        snap = self._gw(f"/admin/models/{self.model}/stats", since=since) or {}
        for arm in snap.get("arms") or []:
            key = f"{arm['version']} {arm['arm']}"
            r.answered[key] = int(arm.get("requests") or 0)
            r.errors[key] = int(arm.get("errors") or 0)

    @staticmethod
    def wait_for_run(
        api: AirflowAPI, dag_id: str, run_id: str, timeout: float
    ) -> dict[str, Any] | None:
        """The run once the webhook has queued it, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = api.run(dag_id, run_id)
            if run is not None:
                return run
            time.sleep(1.0)
        return None
