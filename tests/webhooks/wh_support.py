"""Helpers shared by the trigger tests (metadata DB reads, bounded waits, registry setup)."""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import Callable

from model_rollout.webhooks.signature import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)


def signed_headers(
    secret: str, body: bytes, *, delivery_id: str | None = None, timestamp: float | None = None
) -> dict[str, str]:
    """Headers MLflow would send with `body`."""
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(time.time() if timestamp is None else timestamp))
    return {
        "Content-Type": "application/json",
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: sign(secret, delivery_id, ts, body),
    }


def alias_body(model: str, version: str, alias: str = "challenger") -> bytes:
    import json

    return json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-11-28T09:00:00+00:00",
            "data": {"name": model, "alias": alias, "version": version},
        }
    ).encode()


def garbled(signature: str) -> str:
    """The same header with one bit of the digest flipped."""
    version, _, b64 = signature.partition(",")
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return f"{version},{base64.b64encode(bytes(raw)).decode()}"


def runs_of(dag_id: str) -> list:
    """DagRuns of a DAG, straight from the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)).all()
        session.expunge_all()
        return list(runs)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.25):
    """Poll until predicate() is truthy (returned) or the timeout passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def new_version(client, model: str) -> str:
    """Register a version of `model` (no artifacts needed: the registry only records it)."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # already there
        client.create_registered_model(model)
    exp = client.get_experiment_by_name("Default")
    run = client.create_run(exp.experiment_id)
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(
        model, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    return str(mv.version)
