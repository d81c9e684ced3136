"""Durable "seen before?" answers for the receiver: replayed delivery ids and versions with a run.

Why a table in Airflow's metadata DB (not a file under $AIRFLOW_HOME): the delivery id is
written in the SAME transaction as the DagRun it starts, so a crash can neither lose an event
(id stored, no run) nor start it twice (run, id lost, sender retries); and every api-server
replica shares it, which a local file would not. The table is ours (own MetaData, created on
first use, `CREATE TABLE IF NOT EXISTS` semantics), so Airflow's migrations never touch it.
Rows older than the retention are pruned; the timestamp window makes older ids unusable anyway.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy import Column, Float, MetaData, String, Table, delete, inspect, select
from sqlalchemy.exc import OperationalError, ProgrammingError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

TABLE_NAME = "model_rollout_webhook_delivery"
RETENTION_SECONDS = 7 * 86400.0  # >> the 5-minute timestamp window
_PRUNE_EVERY_SECONDS = 3600.0
_RUN_SCAN_LIMIT = 1000  # newest runs of a DAG looked at for "this version already has a run"

_metadata = MetaData()
deliveries = Table(
    TABLE_NAME,
    _metadata,
    Column("delivery_id", String(128), primary_key=True),
    Column("received_at", Float, nullable=False, index=True),
    Column("event", String(100), nullable=False),
    Column("model", String(250)),
    Column("version", String(32)),
    Column("outcome", String(20), nullable=False),  # started | ignored
    Column("detail", String(500)),
)


class DeliveryStore:
    """Replay memory for webhook delivery ids, in the DB behind `engine`."""

    def __init__(self, retention: float = RETENTION_SECONDS):
        self.retention = retention
        self._ready: set[int] = set()
        self._lock = threading.Lock()
        self._last_prune: float | None = None

    def ensure_table(self, engine: Engine) -> None:
        """Create the table once per engine; a concurrent creator winning the race is fine."""
        if id(engine) in self._ready:
            return
        with self._lock:
            if id(engine) in self._ready:
                return
            try:
                deliveries.create(bind=engine, checkfirst=True)
            except (OperationalError, ProgrammingError):
                # another api-server worker created it between our check and our CREATE
                if not inspect(engine).has_table(TABLE_NAME):
                    raise
            self._ready.add(id(engine))

    def seen(self, session: Session, delivery_id: str) -> bool:
        return (
            session.execute(
                select(deliveries.c.delivery_id).where(deliveries.c.delivery_id == delivery_id)
            ).first()
            is not None
        )

    def record(
        self,
        session: Session,
        delivery_id: str,
        *,
        event: str,
        model: str | None,
        version: str | None,
        outcome: str,
        detail: str,
        now: float,
    ) -> None:
        """Add the id to the caller's transaction (flushed now: a duplicate raises here)."""
        session.execute(
            deliveries.insert().values(
                delivery_id=delivery_id,
                received_at=now,
                event=event[:100],
                model=(model or "")[:250] or None,
                version=version,
                outcome=outcome,
                detail=detail[:500],
            )
        )
        session.flush()

    def maybe_prune(self, session: Session, now: float) -> int:
        """Delete rows past the retention, at most once an hour per process."""
        if self._last_prune is not None and now - self._last_prune < _PRUNE_EVERY_SECONDS:
            return 0
        self._last_prune = now
        result = session.execute(
            delete(deliveries).where(deliveries.c.received_at < now - self.retention)
        )
        return result.rowcount or 0


def existing_run(session: Session, dag_id: str, version: str) -> tuple[str, str] | None:
    """(run_id, state) of a run of `dag_id` whose conf names `version`, newest first, or None.

    Covers runs started by hand from the UI as well as the deterministic automatic ones.
    """
    from airflow.models.dagrun import DagRun

    rows = session.execute(
        select(DagRun.run_id, DagRun.state, DagRun.conf)
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.id.desc())
        .limit(_RUN_SCAN_LIMIT)
    )
    for run_id, state, conf in rows:
        if isinstance(conf, dict) and str(conf.get("version", "")).strip() == version:
            return run_id, str(state)
    return None
