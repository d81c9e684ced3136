"""Everything the Rollouts page shows, gathered from the serving stack (router and metric
source, whichever the policy names), the registry and Airflow's DB.

Each source can fail on its own (gateway down, MLflow slow, no DB in a unit test): the page
then still renders what the others gave, with the failure named in `errors`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_rollout.ui import series

log = logging.getLogger("model_rollout.ui")

DAG_PREFIX = "model_rollout__"
DEFAULT_WINDOW = 30 * 60  # seconds shown when a model has no rollout to frame the chart
ROLLOUT_FALLBACK = 15 * 60  # assumed rollout length when its start is unknown
MAX_WINDOW = 7 * 24 * 3600
BUCKETS = 24
OK_OUTCOMES = ("healthy", "passed")
_STEP_TASK = re.compile(r"^(?:(shadow)\.start|((?:canary|step)_(\d+))\.set_traffic)$")


def stage_label(stage: str | None) -> str:
    """'canary_5' -> 'canary 5%', 'step_25' -> '25%', others as they are."""
    if not stage:
        return "—"
    m = re.fullmatch(r"(canary|step)_(\d+)", stage)
    if m:
        return f"canary {m[2]}%" if m[1] == "canary" else f"{m[2]}%"
    return stage.replace("_", " ")


def _ts(value: Any) -> float | None:
    """Unix seconds from a datetime, a number or a numeric string; None otherwise."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _json_tag(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        out = json.loads(value)
    except ValueError:
        return {"status": None, "raw": value}
    return out if isinstance(out, dict) else {"status": None, "raw": value}


# --- sources -----------------------------------------------------------------------------
class AirflowRuns:
    """Reads DAG runs, task instances and gate decisions of rollout DAGs from the metadata DB."""

    def dag_ids(self) -> list[str]:
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as s:
            rows = s.execute(select(DagModel.dag_id).where(DagModel.dag_id.startswith(DAG_PREFIX)))
            return sorted(r[0] for r in rows)

    def runs(self, dag_id: str, limit: int = 25) -> list[dict[str, Any]]:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as s:
            rows = s.execute(
                select(
                    DagRun.run_id,
                    DagRun.state,
                    DagRun.conf,
                    DagRun.start_date,
                    DagRun.end_date,
                    DagRun.queued_at,
                )
                .where(DagRun.dag_id == dag_id)
                .order_by(DagRun.id.desc())
                .limit(limit)
            ).all()
        out = []
        for run_id, state, conf, start, end, queued in rows:
            conf = conf if isinstance(conf, dict) else {}
            out.append(
                {
                    "run_id": run_id,
                    "state": str(getattr(state, "value", state)),
                    "version": str(conf.get("version", "")).strip() or None,
                    "start": _ts(start) or _ts(queued),
                    "end": _ts(end),
                }
            )
        return out

    def tasks(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as s:
            rows = s.execute(
                select(
                    TaskInstance.task_id,
                    TaskInstance.state,
                    TaskInstance.start_date,
                    TaskInstance.end_date,
                ).where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.map_index == -1,
                )
            ).all()
        return [
            {
                "task_id": t,
                "state": str(getattr(st, "value", st)) if st else None,
                "start": _ts(a),
                "end": _ts(b),
            }
            for t, st, a, b in rows
        ]

    def decisions(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Gate decisions pushed so far (a rollout still running has no evidence run yet)."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as s:
            rows = s.execute(
                select(XComModel.task_id, XComModel.value, XComModel.timestamp).where(
                    XComModel.dag_id == dag_id,
                    XComModel.run_id == run_id,
                    XComModel.key == "decision",
                )
            ).all()
        out = []
        for row in sorted(rows, key=lambda r: r.timestamp):
            value = XComModel.deserialize_value(row)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    continue
            if isinstance(value, dict):
                out.append({**value, "at": _ts(row.timestamp)})
        return out


class EvidenceCache:
    """Evidence JSON by MLflow run id (runs are written once, so entries never go stale)."""

    def __init__(self, size: int = 64):
        self.size = size
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, run_id: str, item: dict[str, Any]) -> None:
        with self._lock:
            self._items[run_id] = item

    def get(self, registry: Any, run_id: str) -> dict[str, Any]:
        with self._lock:
            if run_id in self._items:
                self._items.move_to_end(run_id)
                return self._items[run_id]
        item = load_evidence(registry, run_id)
        with self._lock:
            self._items[run_id] = item
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


def load_evidence(registry: Any, run_id: str) -> dict[str, Any]:
    """{"run_id", "experiment_id", "stage", "path", "data"} of an evidence run."""
    client = registry.client
    run = client.get_run(run_id)
    files = [f.path for f in client.list_artifacts(run_id, "evidence") if f.path.endswith(".json")]
    stage = run.data.tags.get("rollout.stage")
    want = f"evidence/{stage}.json"
    path = want if want in files else (files[0] if files else None)
    data: dict[str, Any] = {}
    if path:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            data = json.loads(Path(local).read_text())
    return {
        "run_id": run_id,
        "experiment_id": run.info.experiment_id,
        "stage": stage,
        "path": path,
        "data": data,
    }


# --- assembling ---------------------------------------------------------------------------
@dataclass
class Sources:
    """Factories of the sources; None skips a source (tests, partial setups).

    `serving(model)` gives the model's serving stack (`orchestration.hooks.ServingHook` or
    anything with `router()` and `metrics()`); `serving(None)` the default one, whose router
    lists the models it serves. A model whose stack is the default one (the same object, or
    an equal `serving` section) is read through the default's open connections.
    """

    serving: Callable[[str | None], Any] | None = None
    registry: Callable[[], Any] | None = None
    airflow: AirflowRuns | None = None
    evidence: EvidenceCache = field(default_factory=EvidenceCache)


PAGE_TIMEOUT = 5.0  # seconds a serving stack may take to answer the page (no retries)


def default_sources() -> Sources:
    """Sources from the policies and Airflow connections (or env fallbacks), as the rollout
    DAG uses them."""

    def serving(model: str | None):
        from model_rollout.orchestration.hooks import ServingHook
        from model_rollout.policy import PolicyError, Serving, load_policy_for

        cfg = Serving()
        if model is not None:
            with contextlib.suppress(PolicyError):  # no policy (yet): the default stack
                cfg = load_policy_for(model).serving
        return ServingHook(cfg, timeout=PAGE_TIMEOUT)  # connections are read when opened

    def registry():
        from model_rollout.orchestration.hooks import MlflowRegistryHook

        return MlflowRegistryHook().get_conn()

    return Sources(serving=serving, registry=registry, airflow=AirflowRuns())


class _Errors(list):
    def note(self, source: str, exc: BaseException) -> None:
        msg = f"{source}: {exc}"
        log.warning("rollouts page: %s", msg)
        if msg not in self:
            self.append(msg)


def _open(factory: Callable[[], Any] | None, name: str, errors: _Errors) -> Any:
    if factory is None:
        return None
    try:
        return factory()
    except Exception as e:
        errors.note(name, e)
        return None


def collect(
    sources: Sources,
    *,
    model: str | None = None,
    version: str | None = None,
    window: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The page's data: every model (or one), each with its split, rollouts and chart series.

    :param model: only this model. :param version: with `model`, the rollout shown in detail
        (default: the newest version with a `rollout.state` tag).
    :param window: chart the last `window` seconds instead of the rollout's own span.
    """
    t_begin = time.time()
    now = t_begin if now is None else now
    errors = _Errors()
    default = _open(sources.serving and (lambda: sources.serving(None)), "serving stack", errors)
    registry = _open(sources.registry, "MLflow registry", errors)
    served: dict[str, Any] = {}
    router = None
    if default is not None:
        try:
            router = default.router()
            served = router.served()
        except Exception as e:
            errors.note(f"router {router!r}" if router is not None else "router", e)
            default = None
    dag_ids: list[str] = []
    if sources.airflow is not None:
        try:
            dag_ids = sources.airflow.dag_ids()
        except Exception as e:
            errors.note("Airflow metadata DB", e)
    names = sorted(set(served) | {d[len(DAG_PREFIX) :] for d in dag_ids})
    if model is not None:
        names = [model]
    ctx = _Ctx(sources, default, registry, served, set(dag_ids), errors, now)
    models = [ctx.safe_model(n, version if model else None, window) for n in names]
    return {
        "generated_at": now,
        "took": round(time.time() - t_begin, 3),
        "errors": list(errors),
        "tracking_uri": getattr(registry, "tracking_uri", None),
        "serving": repr(router) if router is not None else None,
        "models": models,
    }


@dataclass
class _Ctx:
    sources: Sources
    default: Any  # the default serving stack (None: unavailable)
    registry: Any
    served: dict[str, Any]  # model -> ServedModel, from the default stack's router
    dag_ids: set[str]
    errors: _Errors
    now: float
    stacks: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def stack(self, name: str) -> tuple[Any, Any]:
        """The model's serving stack and what its router serves of it (None, None when the
        stack cannot be reached); each model's is opened once per page."""
        if name not in self.stacks:
            self.stacks[name] = self._open_stack(name)
        return self.stacks[name]

    def _open_stack(self, name: str) -> tuple[Any, Any]:
        if self.sources.serving is None:
            return None, None
        try:
            stack = self.sources.serving(name)
            mine = getattr(stack, "serving", stack)
            if stack is self.default or mine == getattr(self.default, "serving", self.default):
                return self.default, self.served.get(name)
            return stack, stack.router().served().get(name)
        except Exception as e:
            self.errors.note(f"serving stack of {name}", e)
            return None, None

    def safe_model(self, name: str, focus: str | None, window: float | None) -> dict[str, Any]:
        """`model()`, or a bare entry naming the failure: one odd model never breaks the page."""
        try:
            return self.model(name, focus, window)
        except Exception as e:
            log.exception("rollouts page: model %s", name)
            self.errors.note(f"model {name}", e)
            bare = {"route": None, "aliases": {}, "rollouts": [], "rollout": None}
            return {"name": name, "dag_id": DAG_PREFIX + name, "has_dag": False, **bare}

    def model(self, name: str, focus: str | None, window: float | None) -> dict[str, Any]:
        dag_id = DAG_PREFIX + name
        stack, served = self.stack(name)
        out: dict[str, Any] = {
            "name": name,
            "dag_id": dag_id,
            "has_dag": dag_id in self.dag_ids,
            "route": None,
            "served_versions": {},
            "aliases": {},
            "rollouts": [],
            "rollout": None,
            "series": None,
            "window": None,
        }
        if served is not None:
            out["route"] = served.route.to_json()
            out["served_versions"] = dict(served.versions)
        runs = self._runs(dag_id)
        versions = []
        if self.registry is not None:
            try:
                if self.registry.model_exists(name):
                    out["aliases"] = self.registry.aliases(name)
                    versions = self.registry.all_versions(name)
            except Exception as e:
                self.errors.note(f"MLflow registry ({name})", e)
        tagged = [v for v in reversed(versions) if v.tags.get("rollout.state")]
        out["rollouts"] = [self._summary(v, runs) for v in tagged]
        chosen = next((v for v in tagged if v.version == focus), None) if focus else None
        chosen = chosen or (tagged[0] if tagged else None)
        if chosen is not None:
            out["rollout"] = self._detail(name, dag_id, chosen, runs)
        out["window"] = self._window(out["rollout"], window)
        if stack is not None and served is not None:
            w = out["window"]
            try:
                metrics = stack.metrics()
                out["series"] = series.sample(
                    lambda t: metrics.snapshot(name, t), w["start"], w["end"], BUCKETS
                )
            except Exception as e:
                self.errors.note(f"statistics of {name}", e)
        return out

    def _runs(self, dag_id: str) -> list[dict[str, Any]]:
        if self.sources.airflow is None or dag_id not in self.dag_ids:
            return []
        try:
            return self.sources.airflow.runs(dag_id)
        except Exception as e:
            self.errors.note(f"Airflow runs of {dag_id}", e)
            return []

    def _run_of(self, info: Any, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
        want = info.tags.get("rollout.run_id")
        for r in runs:
            if (want and r["run_id"] == want) or (not want and r["version"] == info.version):
                return r
        return None

    def _summary(self, info: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
        tags = info.tags
        run = self._run_of(info, runs)
        verdict = _json_tag(tags.get("rollout.verdict"))
        return {
            "version": info.version,
            "state": tags.get("rollout.state"),
            "stage": tags.get("rollout.stage"),
            "reason": tags.get("rollout.reason"),
            "verdict": verdict,
            "run_id": (run or {}).get("run_id") or tags.get("rollout.run_id"),
            "run_state": (run or {}).get("state"),
            "ended_at": _ts(tags.get("rollout.rolled_back_at") or tags.get("rollout.promoted_at")),
        }

    def _detail(self, name: str, dag_id: str, info: Any, runs: list) -> dict[str, Any]:
        tags = info.tags
        d = self._summary(info, runs)
        run = self._run_of(info, runs)
        d["traffic_percent"] = tags.get("rollout.traffic_percent")
        d["evidence_run_id"] = tags.get("rollout.evidence_run_id")
        d["run"] = run
        d["decisions"], d["evidence"] = [], None
        if d["evidence_run_id"] and self.registry is not None:
            try:
                ev = self.sources.evidence.get(self.registry, d["evidence_run_id"])
                d["evidence"] = {k: ev[k] for k in ("run_id", "experiment_id", "stage", "path")}
                d["decisions"] = list(ev["data"].get("decisions") or [])
                d["evidence_at"] = _ts(ev["data"].get("at"))
            except Exception as e:
                self.errors.note(f"evidence run {d['evidence_run_id']}", e)
        tasks: list[dict[str, Any]] = []
        if run is not None and self.sources.airflow is not None:
            try:
                tasks = self.sources.airflow.tasks(dag_id, run["run_id"])
                if not d["decisions"]:
                    d["decisions"] = self.sources.airflow.decisions(dag_id, run["run_id"])
            except Exception as e:
                self.errors.note(f"Airflow run {run['run_id']}", e)
        d["deciding"] = deciding_decision(d["decisions"])
        if d["verdict"] is None and d["deciding"]:
            v = d["deciding"].get("verdict") or {}
            d["verdict"] = {"status": v.get("status") or d["deciding"].get("outcome")}
        d["timeline"] = timeline(d, tasks)
        d["progress"] = None
        stack = self.stack(name)[0] if d["timeline"] else None
        if stack is not None and d["timeline"][-1]["outcome"] == "running":
            try:
                d["progress"] = stage_progress(
                    stack.metrics(), name, info.version, out_aliases(self.registry, name), tasks
                )
            except Exception as e:
                self.errors.note(f"progress of {name} v{info.version}", e)
        ends = [d["ended_at"], (run or {}).get("end"), d.get("evidence_at")]
        d["end"] = next((t for t in ends if t), None)
        d["start"] = (run or {}).get("start")
        return d

    def _window(self, rollout: dict[str, Any] | None, window: float | None) -> dict[str, Any]:
        now = self.now
        if window:
            w = min(max(float(window), 10.0), MAX_WINDOW)
            return {"start": now - w, "end": now, "basis": f"last {int(w)} s"}
        if rollout is None:
            return {"start": now - DEFAULT_WINDOW, "end": now, "basis": "last 30 min"}
        end = min(rollout.get("end") or now, now)
        start = rollout.get("start")
        basis = "the rollout's DAG run"
        if not start:
            start, basis = end - ROLLOUT_FALLBACK, f"{ROLLOUT_FALLBACK // 60} min before it ended"
            if not rollout.get("end"):
                basis = f"last {ROLLOUT_FALLBACK // 60} min"
        start = max(start, end - MAX_WINDOW)
        pad = max(5.0, 0.1 * (end - start))  # some context before and after
        return {"start": start - pad, "end": min(end + pad, now), "basis": basis}


def out_aliases(registry: Any, name: str) -> dict[str, str]:
    return registry.aliases(name) if registry is not None else {}


def stage_progress(
    metrics: Any, model: str, candidate: str, aliases: dict[str, str], tasks: list[dict]
) -> dict[str, Any] | None:
    """The running stage's progress (`StageMonitor.progress`): what the judge sees now and, for
    the proof step, how many more minutes it needs at the observed rate. The stage's and the
    earlier stages' starts are the ends of their traffic tasks (within a second of the route)."""
    from model_rollout.decisions.monitor import StageMonitor
    from model_rollout.decisions.plan import plan_for
    from model_rollout.orchestration.monitor import earlier_snapshots, fill_weights
    from model_rollout.policy import load_policy_for

    incumbent = aliases.get("champion")
    if not incumbent or incumbent == candidate:
        return None
    policy = load_policy_for(model)
    plan = plan_for(policy)
    ends = {t["task_id"]: t.get("end") for t in tasks if t.get("state") == "success"}
    started = [s for s in plan.stages if ends.get(s.traffic_task_id)]
    if not started:
        return None
    stage = started[-1]
    earlier = plan.earlier_in_phase(stage)
    bounds = [ends.get(s.traffic_task_id) for s in [*earlier, stage]]
    if any(b is None for b in bounds):
        return None
    windows = [
        {"since": a, "until": b, "weights": {incumbent: 100 - s.step, candidate: s.step}}
        for s, a, b in zip(earlier, bounds, bounds[1:], strict=False)
    ]
    monitor = StageMonitor(
        stage,
        baseline=incumbent,
        candidate=candidate,
        since=bounds[-1],
        judge_config=policy.judge_settings(stage.mode),
        alpha_metric=plan.alpha_per_test,
        inconclusive_action=policy.inconclusive_action,
    )
    return monitor.progress(
        fill_weights(
            metrics.snapshot(model, bounds[-1]),
            {incumbent: 100 - stage.step, candidate: stage.step},
        ),
        earlier_snapshots(metrics, model, windows),
        now=time.time(),
    )


def deciding_decision(decisions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first gate that did not pass (it ended the rollout), else the latest one."""
    for d in decisions:
        if d.get("outcome") not in OK_OUTCOMES:
            return d
    return decisions[-1] if decisions else None


def timeline(rollout: dict[str, Any], tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Traffic steps in order: stage, candidate traffic, start time (when known), outcome.

    From the DAG run's task instances when the run is known; else from the gate decisions
    recorded with the evidence (no times), closed by the rollback or cutover.
    """
    outcomes = {d.get("stage"): d.get("outcome") for d in rollout.get("decisions") or []}
    steps: list[dict[str, Any]] = []
    for t in sorted((t for t in tasks if t["start"]), key=lambda t: t["start"]):
        m = _STEP_TASK.match(t["task_id"])
        if m:
            stage = m[1] or m[2]
            steps.append(
                {
                    "stage": stage,
                    "label": stage_label(stage),
                    "percent": 0 if m[1] else int(m[3]),
                    "at": t["start"],
                    "outcome": outcomes.get(stage),
                    "state": t["state"],
                }
            )
        elif t["task_id"] == "cutover" and t["state"] == "success":
            steps.append(_end_step("cutover", 100, t["start"], "promoted"))
        elif t["task_id"] == "rollback.restore_traffic":
            steps.append(_end_step("rollback", 0, t["start"], _done(t["state"], "rolled_back")))
    if steps:
        for i, st in enumerate(steps):  # a stage without a recorded gate decision
            st.pop("state", None)
            if st["outcome"] is None:
                if i + 1 < len(steps):
                    st["outcome"] = "passed"
                elif rollout.get("state") == "rolling_out":
                    st["outcome"] = "running"
        return steps
    for d in rollout.get("decisions") or []:
        stage = d.get("stage") or "?"
        m = re.fullmatch(r"(?:canary|step)_(\d+)", stage)
        steps.append(
            {
                "stage": stage,
                "label": stage_label(stage),
                "percent": int(m[1]) if m else 0,
                "at": d.get("at"),
                "outcome": d.get("outcome"),
            }
        )
    if rollout.get("state") == "rolled_back":
        steps.append(_end_step("rollback", 0, rollout.get("ended_at"), "rolled_back"))
    elif rollout.get("state") in ("promoted", "standby", "decommissioned"):
        steps.append(_end_step("cutover", 100, rollout.get("ended_at"), "promoted"))
    return steps


def _done(state: str | None, success: str) -> str:
    return success if state == "success" else (state or "running")


def _end_step(stage: str, percent: int, at: float | None, outcome: str) -> dict[str, Any]:
    return {"stage": stage, "label": stage, "percent": percent, "at": at, "outcome": outcome}
