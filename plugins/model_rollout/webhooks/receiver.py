"""FastAPI app on Airflow's api-server: MLflow registry webhook in, queued rollout DagRun out.

`POST /model-rollout/webhooks/mlflow` (mounted by `model_rollout_plugin`). The HMAC is the
authentication (MLflow cannot send an Airflow JWT). The answer comes after one short
metadata-DB transaction, well inside MLflow's delivery timeout; nothing slow (MLflow, the
gateway) is called on this path.

Status codes: 202 started or ignored (unknown model, event not the model's trigger, version
already has a run); 400 malformed body; 401 bad/missing signature or timestamp outside the
5-minute window; 409 replayed delivery id; 413 body too large; 503 receiver not ready (no
secret configured, DAG not in the metadata DB yet, DB error) - nothing recorded, so MLflow's
own retries (on 5xx, same delivery id) can still succeed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from model_rollout.webhooks import events, signature
from model_rollout.webhooks.dedupe import DeliveryStore, existing_run
from model_rollout.webhooks.settings import webhook_secrets

log = logging.getLogger("model_rollout.webhooks")

MAX_BODY_BYTES = 1_000_000
TRIGGERING_USER = "mlflow-webhook"
RETRY_AFTER_SECONDS = "5"

_store = DeliveryStore()


@dataclass
class Outcome:
    """What the receiver answers."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status_code, headers=self.headers)


def _policy_decision(event: events.RegistryEvent) -> events.Start | events.Ignore:
    """Look the model's policy up (a YAML read, no DB) and apply its trigger."""
    from model_rollout.policy import PolicyError, load_policy_for, policies_dir

    if not events.is_policy_name(event.model):
        return events.Ignore(f"unknown model {event.model!r}: no rollout policy")
    folder = policies_dir()
    try:
        found = any((folder / f"{event.model}{s}").is_file() for s in (".yaml", ".yml"))
    except OSError as e:  # e.g. a name the file system refuses; never a reason to 5xx
        log.warning("webhook for %r ignored: cannot look for its policy: %s", event.model, e)
        found = False
    if not found:
        return events.Ignore(f"unknown model {event.model!r}: no rollout policy in {folder}")
    try:
        policy = load_policy_for(event.model, folder)
    except PolicyError as e:
        log.error("webhook for %r ignored: its policy is invalid: %s", event.model, e)
        return events.Ignore(f"the rollout policy of {event.model!r} is invalid")
    return events.decide(event, policy.trigger)


def _queue(session, start: events.Start) -> tuple[str, str]:
    """Queue the run in `session` (uncommitted); ("started"|"ignored", detail)."""
    from airflow._shared.timezones import timezone
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagRunAlreadyExists
    from airflow.utils.types import DagRunTriggeredByType

    if found := existing_run(session, start.dag_id, start.version):
        return "ignored", (
            f"version {start.version} of {start.model!r} already has run {found[0]} "
            f"({found[1]}); trigger {start.dag_id} from the Airflow UI to roll it out again"
        )
    try:
        trigger_dag(
            start.dag_id,
            conf=start.conf,
            run_id=start.run_id,
            triggered_by=DagRunTriggeredByType.REST_API,
            triggering_user_name=TRIGGERING_USER,
            run_after=timezone.utcnow(),
            session=session,
        )
    except DagRunAlreadyExists:
        return "ignored", f"run {start.run_id} of {start.dag_id} already exists"
    return "started", start.reason


def handle(headers: dict[str, str | None], body: bytes, now: float | None = None) -> Outcome:
    """The whole receive path, synchronous (run in a worker thread by the endpoint)."""
    now = time.time() if now is None else now
    delivery_id = headers.get(signature.DELIVERY_ID_HEADER)
    secrets = webhook_secrets()
    if not secrets:
        log.error("webhook refused: no secret configured (env or Airflow Variable)")
        return Outcome(503, {"detail": "webhook secret not configured on the receiver"})
    try:
        signature.verify(
            secrets,
            delivery_id=delivery_id,
            timestamp=headers.get(signature.TIMESTAMP_HEADER),
            signature=headers.get(signature.SIGNATURE_HEADER),
            body=body,
            now=now,
        )
    except signature.SignatureError as e:
        log.warning("webhook rejected (delivery %r): %s", delivery_id, e)
        return Outcome(401, {"detail": str(e)})
    assert delivery_id is not None  # verify() requires it
    try:
        event = events.parse(body)
    except events.MalformedEvent as e:
        log.warning("webhook rejected (delivery %s): %s", delivery_id, e)
        return Outcome(400, {"detail": str(e)})

    decision = _policy_decision(event)
    return _commit(delivery_id, event, decision, now)


def _commit(
    delivery_id: str,
    event: events.RegistryEvent,
    decision: events.Start | events.Ignore,
    now: float,
) -> Outcome:
    """Replay check, run creation and the delivery record in one transaction."""
    from airflow.exceptions import DagNotFound
    from airflow.settings import engine
    from airflow.utils.session import create_session
    from sqlalchemy.exc import IntegrityError

    try:
        _store.ensure_table(engine)
        with create_session() as session:
            if _store.seen(session, delivery_id):
                log.warning("webhook replay refused: delivery %s was seen before", delivery_id)
                return Outcome(409, {"detail": f"delivery {delivery_id} was already received"})
            if isinstance(decision, events.Start):
                outcome, detail = _queue(session, decision)
            else:
                outcome, detail = "ignored", decision.reason
            _store.record(
                session,
                delivery_id,
                event=event.event,
                model=event.model,
                version=event.version,
                outcome=outcome,
                detail=detail,
                now=now,
            )
            _store.maybe_prune(session, now)
    except IntegrityError:  # a concurrent request recorded this delivery id or run id first
        log.warning(
            "webhook %s lost a race with a concurrent delivery; nothing recorded", delivery_id
        )
        return Outcome(
            409, {"detail": f"delivery {delivery_id} conflicts with one handled concurrently"}
        )
    except DagNotFound as e:
        log.warning("webhook for %r not queued yet: %s", event.model, e)
        return Outcome(
            503,
            {"detail": f"DAG for model {event.model!r} is not in Airflow yet: {e}"},
            {"Retry-After": RETRY_AFTER_SECONDS},
        )
    except Exception as e:  # metadata DB trouble: nothing was committed, let MLflow retry
        log.exception("webhook delivery %s failed; nothing recorded", delivery_id)
        return Outcome(
            503,
            {"detail": f"receiver error: {type(e).__name__}"},
            {"Retry-After": RETRY_AFTER_SECONDS},
        )

    body: dict[str, Any] = {"status": outcome, "delivery_id": delivery_id, "event": event.event}
    if outcome == "started" and isinstance(decision, events.Start):
        body.update(dag_id=decision.dag_id, run_id=decision.run_id, version=decision.version)
        log.info(
            "webhook %s queued %s run %s (version %s)",
            delivery_id,
            decision.dag_id,
            decision.run_id,
            decision.version,
        )
    else:
        body["reason"] = detail
        log.info("webhook %s ignored: %s", delivery_id, detail)
    return Outcome(202, body)


def create_app() -> FastAPI:
    """The receiver app (mounted under `/model-rollout` by the Airflow plugin)."""
    api = FastAPI(
        title="model_rollout webhooks",
        description="MLflow registry webhooks that start rollouts.",
        docs_url=None,
        redoc_url=None,
    )

    @api.post("/webhooks/mlflow", status_code=202)
    async def mlflow_webhook(request: Request) -> JSONResponse:
        """Verify, map and queue one MLflow registry webhook delivery."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return Outcome(413, {"detail": f"body larger than {MAX_BODY_BYTES} bytes"}).response()
        chunks, size = [], 0
        async for chunk in request.stream():  # bounded even without a Content-Length
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return Outcome(
                    413, {"detail": f"body larger than {MAX_BODY_BYTES} bytes"}
                ).response()
            chunks.append(chunk)
        body = b"".join(chunks)
        headers = {
            h: request.headers.get(h)
            for h in (
                signature.DELIVERY_ID_HEADER,
                signature.TIMESTAMP_HEADER,
                signature.SIGNATURE_HEADER,
            )
        }
        outcome = await run_in_threadpool(handle, headers, body)
        return outcome.response()

    return api


app = create_app()
