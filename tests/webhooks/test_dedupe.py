"""The delivery-id store on a real SQLite database: replays are seen, old rows pruned."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from model_rollout.webhooks.dedupe import DeliveryStore, deliveries


@pytest.fixture
def engine(tmp_path):
    return create_engine(f"sqlite:///{tmp_path / 'd.db'}")


def _record(store, session, delivery_id, now=1000.0):
    store.record(
        session,
        delivery_id,
        event="model_version_alias.created",
        model="m",
        version="1",
        outcome="started",
        detail="x" * 2000,
        now=now,
    )


def test_a_recorded_id_is_seen_after_commit_and_survives_a_new_store(engine):
    store = DeliveryStore()
    store.ensure_table(engine)
    store.ensure_table(engine)  # idempotent
    with Session(engine) as s:
        assert not store.seen(s, "d1")
        _record(store, s, "d1")
        s.commit()
    fresh = DeliveryStore()  # a restarted api-server
    fresh.ensure_table(engine)
    with Session(engine) as s:
        assert fresh.seen(s, "d1")
        assert not fresh.seen(s, "d2")


def test_a_duplicate_insert_fails_and_rollback_forgets_the_id(engine):
    store = DeliveryStore()
    store.ensure_table(engine)
    with Session(engine) as s:
        _record(store, s, "d1")
        s.commit()
        with pytest.raises(IntegrityError):
            _record(store, s, "d1")
        s.rollback()
        _record(store, s, "d2")
        s.rollback()  # e.g. the DagRun could not be created: the id must stay usable
        assert not store.seen(s, "d2")


def test_prune_deletes_past_retention_at_most_hourly(engine):
    store = DeliveryStore(retention=100.0)
    store.ensure_table(engine)
    with Session(engine) as s:
        _record(store, s, "old", now=1000.0)
        _record(store, s, "new", now=1950.0)
        assert store.maybe_prune(s, now=2000.0) == 1
        _record(store, s, "older", now=1.0)
        assert store.maybe_prune(s, now=2001.0) == 0  # pruned less than an hour ago
        s.commit()
        assert s.scalar(select(func.count()).select_from(deliveries)) == 2
