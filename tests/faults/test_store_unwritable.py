"""The gateway's store stops taking writes while the gateway serves a canary.

Injected, per store:
- SQLite: the running gateway's file-size limit (RLIMIT_FSIZE, `prlimit`) drops to 0, so every
  write to its database fails the way it does on a full disk (SQLite: "disk I/O error"); reads
  still work. Unprivileged and undone by raising the limit again. (A read-only chmod would not
  do: it does not touch files the gateway already has open, and root ignores it anyway.)
- PostgreSQL: the gateway runs as its own role, owner of its schema; INSERT and UPDATE on its
  tables are revoked from that role, then granted back (an operator's mistake, a migration).

Expected: 0 failed requests; /readyz 503 naming the store; /metrics shows the store not
writable, the failed flushes and the rows waiting; the snapshot says so in its `store` field
and the judge answers "inconclusive" on it; once the store takes writes again, every row
answered during the fault is in the log and in the statistics (nothing lost).
"""

from __future__ import annotations

import contextlib
import resource
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo
from support.gateway_api import admin_client, fire, serve, set_route, stats
from support.pg import require_postgres

from model_rollout.judge import JudgeConfig, evaluate

from .helpers import gateway_evidence, metric, readyz_reasons, scrape, wait_until

pytestmark = pytest.mark.timeout(300)

MODEL = "faults-store"
BEFORE, DURING = 200, 1000


@dataclass
class StoreFault:
    kind: str
    gateway_kwargs: dict = field(default_factory=dict)
    pg: tuple[str, str, str] | None = None  # admin url, schema, role

    def inject(self, gw) -> None:
        if self.pg is None:
            _, hard = resource.prlimit(gw.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(gw.proc.pid, resource.RLIMIT_FSIZE, (0, hard))
        else:
            self._sql('REVOKE INSERT, UPDATE ON ALL TABLES IN SCHEMA "{s}" FROM "{r}"')

    def repair(self, gw) -> None:
        if self.pg is None:
            _, hard = resource.prlimit(gw.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(gw.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        else:
            self._sql('GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA "{s}" TO "{r}"')

    def log_count(self, gw) -> int:
        q = "SELECT count(*) FROM gw_requests WHERE model = "
        if self.pg is None:
            with sqlite3.connect(Path(gw.data_dir) / "gateway.db") as conn:
                return conn.execute(q + "?", (MODEL,)).fetchone()[0]
        import psycopg

        url, schema, _ = self.pg
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            return conn.execute(q + "%s", (MODEL,)).fetchone()[0]

    def _sql(self, template: str) -> None:
        import psycopg

        url, schema, role = self.pg
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(template.format(s=schema, r=role))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fault(request):
    if request.param == "sqlite":
        yield StoreFault("sqlite")
        return
    import psycopg

    url = require_postgres()
    tag = uuid.uuid4().hex[:10]
    role, schema = f"gwfault_{tag}", f"gwfault_{tag}"
    with psycopg.connect(url, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO "{role}"')
    gw_url = make_conninfo(url, user=role)
    try:
        yield StoreFault(
            "postgresql", {"store_url": gw_url, "store_schema": schema}, (url, schema, role)
        )
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'REVOKE CREATE ON DATABASE "{dbname}" FROM "{role}"')
            with contextlib.suppress(psycopg.Error):
                conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def primary_requests(snap: dict) -> int:
    return sum(a["requests"] for a in snap["arms"] if a["arm"] == "primary")


def test_unwritable_store_keeps_serving_reports_it_and_loses_nothing(
    gateway_factory, iris_registry, fault
):
    gw = gateway_factory(**fault.gateway_kwargs)
    with gateway_evidence(gw):
        url = f"{gw.url}/models/{MODEL}/invocations"
        with admin_client(gw) as c:
            serve(c, MODEL, iris_registry, {"1": "good", "2": "good2"})
            assert set_route(c, MODEL, {"1": 75, "2": 25}).status_code == 200
            gw.wait_ready(timeout=120)
            assert fire(url, BEFORE, concurrency=4).ok == BEFORE
            snap = stats(c, MODEL)
            assert snap["store"]["writable"] is True and snap["store"]["kind"] == fault.kind
            assert primary_requests(snap) == BEFORE

            fault.inject(gw)
            during = fire(url, DURING, concurrency=8)
            # the data plane never notices: every request answered 200
            assert during.ok == DURING and not during.failures
            reasons = wait_until(
                "/readyz to report the store", lambda: readyz_reasons(gw) or None, timeout=30
            )
            assert any(r.startswith("store not writable: ") for r in reasons), reasons
            text = scrape(gw)
            assert metric(text, "model_gateway_store_writable") == 0.0
            flush_errors = metric(text, "model_gateway_store_flush_errors_total")
            at_risk = metric(text, "model_gateway_log_backlog")
            assert flush_errors >= 1 and at_risk == DURING
            assert metric(text, "model_gateway_log_dropped_total") == 0.0
            # the snapshot stops where the failures began, and says so
            snap = stats(c, MODEL)
            store = snap["store"]
            assert store["writable"] is False and store["last_error"]
            assert store["unflushed_rows"] == DURING and store["failing_since"] <= snap["until"]
            assert primary_requests(snap) == BEFORE
            verdict = evaluate(
                snap, baseline="1", candidate="2", mode="canary", config=JudgeConfig()
            ).to_json()
            assert verdict["status"] == "inconclusive" and not verdict["invalid"]
            assert verdict["reason"].startswith(
                f"The gateway's {fault.kind} store has been failing"
            )
            assert verdict["checks"]["store"]["complete"] is False
            print(
                f"\n{fault.kind} store unwritable: {during.ok}/{DURING} answered 200, "
                f"{flush_errors:.0f} failed flushes, {at_risk:.0f} rows held in memory; "
                f"/readyz: {reasons}; judge: {verdict['reason']}"
            )

            fault.repair(gw)
            wait_until("/readyz 200 again", lambda: not readyz_reasons(gw) or None, timeout=60)
            snap = stats(c, MODEL)
            assert snap["store"]["writable"] is True
            assert primary_requests(snap) == BEFORE + DURING  # the statistics caught up
            text = scrape(gw)
            assert metric(text, "model_gateway_log_backlog") == 0.0
            assert metric(text, "model_gateway_log_rows_written_total") == BEFORE + DURING
        assert fault.log_count(gw) == BEFORE + DURING  # and the log: nothing lost
