"""What each task of a rollout DAG does. Plain functions of (policy, context), no DAG wiring.

Every function is idempotent: traffic changes go through the backend's compare-and-set and are
skipped when the route already is as wanted; tags and aliases are set to absolute values. So
a retried task, or a rollback of a candidate that never got traffic, ends in the same state.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from typing import Any

from model_rollout.orchestration.hooks import MlflowRegistryHook, ServingHook
from model_rollout.policy import Policy
from model_rollout.registry import CHALLENGER, CHAMPION, STANDBY

RESOLVE = "resolve"
FAILURE_KEY = "failure"


class RolloutFailed(Exception):
    """Ends a run as failed with the reason (block or rollback)."""


def _fail(reason: str):
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(reason)


def records_failure(fn):
    """Push `{"task", "error"}` to XCom before re-raising, so gates and rollback can say why."""

    @functools.wraps(fn)
    def wrapper(*args, **context):
        try:
            return fn(*args, **context)
        except BaseException as e:
            ti = context.get("ti")
            if ti is not None:
                with contextlib.suppress(Exception):  # the original error matters more
                    ti.xcom_push(
                        FAILURE_KEY, {"task": ti.task_id, "error": f"{type(e).__name__}: {e}"}
                    )
            raise

    return wrapper


def _registry():
    return MlflowRegistryHook().get_conn()


def _serving(policy: Policy) -> ServingHook:
    return ServingHook(policy.serving)


def _resolved(context) -> dict[str, Any]:
    return context["ti"].xcom_pull(task_ids=RESOLVE) or {}


def _now() -> float:
    return time.time()


def _notify(policy: Policy, event: str, version: str, stage: str, reason: str, context) -> None:
    """Tell whoever the policy's `notify` names (never raises: see orchestration/notify.py)."""
    if not any(event in n.on for n in policy.notify):
        return
    from model_rollout.orchestration import notify

    tracking = MlflowRegistryHook().tracking_uri()
    notify.send(
        policy, notify.event_for(event, policy.model, version, stage, reason, tracking), context
    )


def notify_callback(policy: Policy, event: str, stage: str, reason: str):
    """An `on_execute_callback` sending `event` when a human is asked to decide."""

    def callback(context) -> None:
        cand = (_resolved(context) or {}).get("candidate") or "?"
        _notify(policy, event, cand, stage, reason, context)

    return callback


# --- resolve -----------------------------------------------------------------------------
@records_failure
def resolve(policy: Policy, **context) -> dict[str, Any]:
    """Candidate from the run's conf/params; incumbent is the champion alias."""
    params = context.get("params") or {}
    conf = (context["dag_run"].conf or {}) if context.get("dag_run") else {}
    version = str(conf.get("version") or params.get("version") or "").strip()
    if not version:
        raise ValueError(
            f'no candidate version: trigger {policy.dag_id} with conf {{"version": "<n>"}}'
        )
    reg = _registry()
    cand = reg.version(policy.model, version)
    if cand.status not in ("READY", "ModelVersionStatus.READY"):
        raise ValueError(f"model {policy.model!r} version {version} is {cand.status}, not READY")
    incumbent = reg.alias_version(policy.model, CHAMPION)
    if incumbent == version:
        raise ValueError(f"version {version} of {policy.model!r} is already the champion")
    if incumbent is None and policy.first_rollout == "block":
        raise ValueError(
            f"{policy.model!r} has no champion and the policy says first_rollout: block; "
            f"set the champion alias by hand for the first version"
        )
    state, by_run = cand.tags.get("rollout.state"), cand.tags.get("rollout.run_id")
    force = str(conf.get("force", params.get("force", False))).lower() == "true"
    if state and by_run != context["run_id"] and not force:
        raise ValueError(
            f"{policy.model!r} version {version} was already handled by run {by_run} "
            f"(rollout.state={state}); trigger with conf force=true to roll it out again"
        )
    # Tags first: the alias fires a registry webhook, whose run must then see this one.
    reg.set_tags(
        policy.model,
        version,
        {"state": "rolling_out", "stage": "resolve", "run_id": context["run_id"]},
    )
    reg.set_alias(policy.model, CHALLENGER, version)
    return {"candidate": version, "incumbent": incumbent, "first_rollout": incumbent is None}


# --- staging -----------------------------------------------------------------------------
@records_failure
def deploy_staging(policy: Policy, **context) -> dict[str, Any]:
    """Load the candidate (and make sure the incumbent serves 100%), then put it in staging."""
    r = _resolved(context)
    serving = _serving(policy)
    router, deployer = serving.router(), serving.deployer()
    inc = r.get("incumbent")
    if inc:
        deployer.deploy(policy.model, inc, batching=policy.batching)
        route = router.route(policy.model)
        if not route.weights:  # a fresh gateway: adopt the champion as the whole route
            router.set_traffic(policy.model, {inc: 100}, [])
    deployer.deploy(policy.model, r["candidate"], batching=policy.batching)
    route = router.route(policy.model)
    # A first rollout has no live route yet: the staging slot is then the model's only entry.
    router.set_traffic(policy.model, route.weights, list(route.shadows), staging=r["candidate"])
    _registry().set_tags(policy.model, r["candidate"], {"stage": "staging"})
    return {"deployed": r["candidate"], "at": _now()}


@records_failure
def offline_validation(policy: Policy, **context) -> dict[str, Any]:
    """Holdout metric of candidate vs incumbent within the policy's tolerance."""
    from model_rollout.orchestration.validation import ValidationFailed, offline_evaluation

    r = _resolved(context)
    if policy.holdout is None:
        return {"passed": True, "skipped": "no holdout in the policy"}
    _registry()  # binds this process's models:/ resolution to the rollout's MLflow server
    try:
        res = offline_evaluation(
            policy.holdout,
            f"models:/{policy.model}/{r['candidate']}",
            f"models:/{policy.model}/{r['incumbent']}" if r.get("incumbent") else None,
        )
    except ValidationFailed as e:
        return {"passed": False, "reason": str(e)}
    return {"passed": True, **res}


@records_failure
def integration_tests(policy: Policy, **context) -> dict[str, Any]:
    """Signature compatibility, sample requests through staging (ok, deterministic), p99 budget."""
    from model_rollout.backends import TrafficError
    from model_rollout.orchestration.validation import (
        ValidationFailed,
        p99,
        sample_payloads,
        signature_compatible,
    )

    r = _resolved(context)
    reg = _registry()
    checks: dict[str, Any] = {}
    if policy.staging.require_signature_compatible and r.get("incumbent"):
        ok, why = signature_compatible(
            reg.input_schema(policy.model, r["incumbent"]),
            reg.input_schema(policy.model, r["candidate"]),
        )
        checks["signature"] = why
        if not ok:
            return {"passed": False, "reason": f"incompatible signature: {why}", **checks}
    try:
        payloads = sample_payloads(policy.holdout, policy.staging.sample_requests)
    except ValidationFailed as e:
        return {"passed": False, "reason": str(e), **checks}
    deployer = _serving(policy).deployer()
    latencies = []
    for i, payload in enumerate(payloads):
        try:
            first, ms = deployer.invoke_staging(policy.model, payload)
            latencies.append(ms)
            if i < 5:
                again, _ = deployer.invoke_staging(policy.model, payload)
                if json.dumps(first, sort_keys=True) != json.dumps(again, sort_keys=True):
                    return {
                        "passed": False,
                        "reason": f"non-deterministic answer to sample {i}: {first} then {again}",
                    }
        except TrafficError as e:
            return {
                "passed": False,
                "reason": f"sample request {i} failed on staging: {e}",
                **checks,
            }
    budget = policy.staging.latency_budget_p99_ms
    measured = p99(latencies)
    checks.update({"sample_requests": len(payloads), "p99_ms": measured, "p99_budget_ms": budget})
    if measured > budget:
        return {
            "passed": False,
            "reason": f"staging p99 {measured:.1f} ms over the budget {budget} ms",
            **checks,
        }
    return {"passed": True, **checks}


def staging_gate(
    policy: Policy, *, first_task: str, first_rollout_task: str, blocked_task: str, **context
) -> str:
    """Branch: into the live stages, straight to cutover on a first rollout, or block."""
    ti = context["ti"]
    reasons = []
    for tid in ("staging.deploy", "staging.offline_validation", "staging.integration_tests"):
        res = ti.xcom_pull(task_ids=tid)
        if res is None:
            reasons.append(_failure_of(ti, [RESOLVE, tid]) or f"{tid} did not finish")
            break
        if isinstance(res, dict) and res.get("passed") is False:
            reasons.append(f"{tid.split('.')[-1]}: {res.get('reason')}")
            break
    if reasons:
        ti.xcom_push("decision", {"stage": "staging", "outcome": "blocked", "reason": reasons[0]})
        return blocked_task
    ti.xcom_push("decision", {"stage": "staging", "outcome": "passed"})
    return first_rollout_task if _resolved(context).get("first_rollout") else first_task


def _aborted_by(policy: Policy, cand: str | None) -> str | None:
    """Who aborted the candidate's rollout (`model-rollout abort`), if anyone."""
    if not cand:
        return None
    try:
        tags = _registry().version(policy.model, cand).tags
    except Exception:  # the registry down must not stop a rollback or a traffic task
        return None
    return tags.get("rollout.aborted_by")


def _refuse_if_aborted(policy: Policy, context) -> None:
    """A traffic task never sends traffic back to a candidate an operator aborted."""
    who = _aborted_by(policy, _resolved(context).get("candidate"))
    if who:
        _fail(f"the rollout was aborted by {who}: no more traffic to the candidate")


def _state_of(ti, task_id: str) -> str | None:
    """Another task's state in this run (through the Task SDK), None when unknown."""
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
    except Exception:  # an SDK without it, or no supervisor: treat as unknown
        return None
    return (states.get(ti.run_id) or {}).get(task_id)


def _failure_of(ti, task_ids: list[str]) -> str | None:
    for tid in task_ids:
        f = ti.xcom_pull(task_ids=tid, key=FAILURE_KEY)
        if f:
            return f"{f['task']} failed: {f['error']}"
    return None


def block_promotion(policy: Policy, **context) -> None:
    """Tag the candidate blocked with the reason, take it out of staging, fail the run."""
    ti = context["ti"]
    decision = ti.xcom_pull(task_ids="staging.gate", key="decision") or {}
    reason = decision.get("reason") or "staging checks failed"
    r = _resolved(context)
    cand = r.get("candidate")
    if cand:
        try:
            serving = _serving(policy)
            route = serving.router().route(policy.model)
            if route.staging == cand:
                serving.router().set_traffic(
                    policy.model, route.weights, list(route.shadows), staging=None
                )
            if cand not in route.weights:
                serving.deployer().retire(policy.model, cand)
        finally:
            reg = _registry()
            reg.set_tags(
                policy.model, cand, {"state": "blocked", "stage": "staging", "reason": reason}
            )
            reg.clear_alias(policy.model, CHALLENGER, only_if_version=cand)
    _notify(policy, "blocked", cand or "?", "staging", reason, context)
    _fail(f"promotion of {policy.model} v{cand or '?'} blocked: {reason}")


# --- live stages -------------------------------------------------------------------------
@records_failure
def start_shadow(policy: Policy, **context) -> dict[str, Any]:
    """Incumbent keeps 100%; the candidate gets a mirrored copy of every request."""
    _refuse_if_aborted(policy, context)
    r = _resolved(context)
    router = _serving(policy).router()
    route = router.set_traffic(policy.model, {r["incumbent"]: 100}, [r["candidate"]], staging=None)
    # the shadow's worker may still be loading
    router.wait_ready(policy.model, timeout=policy.task_timeout)
    _registry().set_tags(policy.model, r["candidate"], {"stage": "shadow"})
    return {
        "applied_at": _now(),
        "generation": route.generation,
        "weights": route.weights,
        "shadows": list(route.shadows),
    }


@records_failure
def set_step_traffic(policy: Policy, step: int, **context) -> dict[str, Any]:
    """Candidate at `step`%, incumbent at the rest; no shadow."""
    _refuse_if_aborted(policy, context)
    r = _resolved(context)
    router = _serving(policy).router()
    weights = {r["candidate"]: step, r["incumbent"]: 100 - step}
    route = router.set_traffic(policy.model, weights, [], staging=None)
    router.wait_ready(policy.model, timeout=policy.task_timeout)
    _registry().set_tags(
        policy.model,
        r["candidate"],
        {"stage": context["ti"].task_id.split(".")[0], "traffic_percent": str(step)},
    )
    return {"applied_at": _now(), "generation": route.generation, "weights": route.weights}


def monitor_gate(
    policy: Policy,
    *,
    stage: str,
    next_task: str,
    degraded_task: str,
    review_task: str | None = None,
    **context,
) -> str:
    """Branch on the monitor's outcome (`decisions.monitor.next_move` says where it leads).

    Healthy (proof) and passed (guard) go on; inconclusive goes to a human review when the
    policy says so (the reason says how much more traffic it would take), else rolls back; a
    degraded outcome, and a failed or timed-out monitor, roll back; an invalid one (sample ratio
    mismatch) goes to the review too when the policy has one.
    """
    from model_rollout.decisions.monitor import NEXT, REVIEW, next_move
    from model_rollout.decisions.plan import plan_for

    st = plan_for(policy).stage(stage)
    ti = context["ti"]
    event = ti.xcom_pull(task_ids=st.monitor_task_id)
    if not event and _state_of(ti, st.monitor_task_id) == "success":
        # "Mark success" on the monitor in Airflow: a human passed the stage
        reason = f"{stage} marked success in Airflow (a manual decision)"
        ti.xcom_push(
            "decision", {"stage": stage, "outcome": "passed", "reason": reason, "manual": True}
        )
        cand = _resolved(context).get("candidate")
        if cand:
            _registry().set_tags(policy.model, cand, {"manual_decision": reason})
        return next_task
    if not event:
        why = _failure_of(ti, [st.traffic_task_id]) or f"{st.monitor_task_id} failed or timed out"
        decision = {"stage": stage, "outcome": "failed", "reason": why}
        verdict = _judge_once(policy, st, context)
        if verdict and verdict.get("status") == "degraded":  # the evidence says more
            decision = {
                "stage": stage,
                "outcome": "degraded",
                "verdict": verdict,
                "reason": f"{verdict.get('reason')} (judged at the gate: {why})",
            }
        ti.xcom_push("decision", decision)
        return degraded_task
    outcome = event.get("outcome")
    verdict = event.get("verdict") or {}
    decision = {
        "stage": stage,
        "outcome": outcome,
        "reason": event.get("reason") or verdict.get("reason") or outcome,
        "looks": event.get("looks"),
        "needed_seconds": event.get("needed_seconds"),
        "verdict": verdict,
    }
    ti.xcom_push("decision", decision)
    move = next_move(outcome, policy.inconclusive_action)
    if move == NEXT:
        return next_task
    if move == REVIEW and review_task:
        return review_task
    return degraded_task


def _judge_once(policy: Policy, stage, context) -> dict[str, Any] | None:
    """The judge's verdict on the stage's traffic so far, or None when it cannot be had.

    Used when the monitor left no outcome (e.g. a trigger that fired within seconds of
    deferring can be marked failed by Airflow 3.3.2): rolling back stays the answer either
    way, but the reason should be the evidence when there is some.
    """
    from model_rollout.decisions.plan import plan_for
    from model_rollout.orchestration.monitor import (
        earlier_snapshots,
        fill_weights,
        stage_monitor,
    )

    ti = context["ti"]
    plan = plan_for(policy)
    tids = [s.traffic_task_id for s in plan.earlier_in_phase(stage)] + [stage.traffic_task_id]
    applied = [ti.xcom_pull(task_ids=t) or {} for t in tids]
    r = _resolved(context)
    if any("applied_at" not in a for a in applied) or not r.get("incumbent"):
        return None
    windows = [
        {"since": a["applied_at"], "until": b["applied_at"], "weights": a.get("weights")}
        for a, b in zip(applied, applied[1:], strict=False)
    ]
    since = float(applied[-1]["applied_at"])
    try:
        metrics = _serving(policy).metrics()
        monitor = stage_monitor(
            stage,
            baseline=r["incumbent"],
            candidate=r["candidate"],
            since=since,
            judge_config=policy.judge_settings(stage.mode),
            alpha_metric=plan.alpha_per_test,
            inconclusive_action=policy.inconclusive_action,
        )
        verdict = monitor.judge(
            fill_weights(metrics.snapshot(policy.model, since), applied[-1].get("weights")),
            earlier_snapshots(metrics, policy.model, windows),
        )
        return verdict.to_json()
    except Exception:  # the gate must decide even when the metric source cannot answer
        return None


@records_failure
def cutover(policy: Policy, **context) -> dict[str, Any]:
    """100% to the candidate; champion -> candidate, standby -> previous; evidence recorded."""
    _refuse_if_aborted(policy, context)
    r = _resolved(context)
    cand, inc = r["candidate"], r.get("incumbent")
    serving = _serving(policy)
    if r.get("first_rollout"):
        serving.deployer().deploy(policy.model, cand, batching=policy.batching)
    route = serving.router().set_traffic(policy.model, {cand: 100}, [], staging=None)
    reg = _registry()
    now = _now()
    decisions = _decisions(context)
    evidence = {
        "model": policy.model,
        "candidate": cand,
        "incumbent": inc,
        "decisions": decisions,
        "route": route.to_json(),
        "at": now,
    }
    run_id = reg.record_evidence(policy.model, cand, "cutover", evidence)
    reg.set_alias(policy.model, CHAMPION, cand)
    if inc:
        reg.set_alias(policy.model, STANDBY, inc)
        reg.set_tags(
            policy.model,
            inc,
            {
                "state": "standby",
                "stage": "standby",
                "standby_since": str(now),
                "replaced_by": cand,
            },
        )
    reg.clear_alias(policy.model, CHALLENGER, only_if_version=cand)
    summary = "; ".join(f"{d['stage']}: {d.get('outcome')}" for d in decisions)
    reg.set_tags(
        policy.model,
        cand,
        {
            "state": "promoted",
            "stage": "champion",
            "promoted_at": str(now),
            "evidence_run_id": run_id,
            "summary": summary,
        },
    )
    _notify(policy, "promoted", cand, "cutover", summary or "every stage passed", context)
    return {
        "generation": route.generation,
        "champion": cand,
        "standby": inc,
        "evidence_run_id": run_id,
    }


def _decisions(context) -> list[dict[str, Any]]:
    """Every gate's decision so far, in DAG order (task ids carry the stage)."""
    ti = context["ti"]
    task = context["task"]
    gates = [t for t in task.dag.task_ids if t.endswith(".gate")]
    out = []
    for gid in gates:
        d = ti.xcom_pull(task_ids=gid, key="decision")
        if d:
            out.append(d)
    return out


# --- rollback ----------------------------------------------------------------------------
def rollback_reason(policy: Policy, **context) -> dict[str, Any]:
    """Why we roll back: an operator's abort, the first degraded gate, or the first task that
    failed."""
    ti = context["ti"]
    aborted = _aborted_by(policy, _resolved(context).get("candidate"))
    if aborted:
        return {"reason": f"aborted by {aborted}", "decision": None}
    for d in _decisions(context):
        if d.get("outcome") not in ("healthy", "passed"):
            return {"reason": f"{d['stage']}: {d.get('reason')}", "decision": d}
    ids = [t for t in context["task"].dag.task_ids if not t.startswith("rollback.")]
    why = _failure_of(ti, ids)
    return {"reason": why or "a rollout task failed (see the run's task logs)", "decision": None}


def restore_traffic(policy: Policy, **context) -> dict[str, Any]:
    """100% back to the incumbent, candidate out of weights, shadows and staging; `live_at` is
    when the router confirmed it (before the candidate is retired, which may take a while)."""
    r = _resolved(context)
    cand, inc = r.get("candidate"), r.get("incumbent")
    serving = _serving(policy)
    router = serving.router()
    if inc:
        route = router.set_traffic(policy.model, {inc: 100}, [], staging=None)
    else:
        route = router.route(policy.model)
        if route.staging == cand or cand in route.shadows:
            route = router.set_traffic(
                policy.model, route.weights, [s for s in route.shadows if s != cand], staging=None
            )
    if route.weights:
        router.wait_ready(policy.model, timeout=policy.task_timeout)
    live_at = _now()
    if cand and cand not in route.weights:
        serving.deployer().retire(policy.model, cand)
    return {"restored_at": _now(), "live_at": live_at, "route": route.to_json()}


@records_failure
def record_rollback(policy: Policy, **context) -> dict[str, Any]:
    """Tag the candidate rolled back with reason and evidence; clear challenger."""
    ti = context["ti"]
    r = _resolved(context)
    cand = r.get("candidate")
    why = ti.xcom_pull(task_ids="rollback.start") or {}
    reason = why.get("reason", "unknown")
    if not cand:
        return {"reason": reason, "tagged": False}
    reg = _registry()
    evidence = {
        "model": policy.model,
        "candidate": cand,
        "incumbent": r.get("incumbent"),
        "reason": reason,
        "decisions": _decisions(context),
        "at": _now(),
    }
    run_id = reg.record_evidence(policy.model, cand, "rollback", evidence)
    verdict = (why.get("decision") or {}).get("verdict") or {}
    reg.set_tags(
        policy.model,
        cand,
        {
            "state": "rolled_back",
            "reason": reason,
            "evidence_run_id": run_id,
            "rolled_back_at": str(_now()),
            "verdict": json.dumps(_verdict_summary(verdict)),
        },
    )
    reg.clear_alias(policy.model, CHALLENGER, only_if_version=cand)
    stage = (why.get("decision") or {}).get("stage") or reason.split(":", 1)[0]
    _notify(policy, "rolled_back", cand, stage, reason, context)
    return {"reason": reason, "evidence_run_id": run_id}


def _verdict_summary(verdict: dict[str, Any]) -> dict[str, Any]:
    metrics = verdict.get("metrics") or {}
    items = metrics.items() if isinstance(metrics, dict) else ((m.get("name"), m) for m in metrics)
    return {"status": verdict.get("status"), **{str(k): (v or {}).get("status") for k, v in items}}


def fail_run(policy: Policy, **context) -> None:
    """Leave the run failed (red in the UI) with the rollback's reason."""
    why = context["ti"].xcom_pull(task_ids="rollback.start") or {}
    _fail(f"rolled back {policy.model}: {why.get('reason', 'unknown reason')}")
