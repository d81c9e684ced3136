"""Durable state: request log, feedback, routes, registered versions and statistics cells.

SQLite (WAL) in the data dir by default; PostgreSQL by URL, so several replicas can share one
store. The request path never touches the database: it appends to in-memory queues that a
writer thread flushes in one transaction every `flush_interval`. Statistics cells are keyed by
replica, so each replica owns (and simply overwrites) its own rows, and a snapshot sums over
replicas. Route changes are compare-and-set on the generation inside a transaction.

What a crash can lose: the rows answered since the last committed flush (`backlog()`, the
`model_gateway_log_backlog` gauge), i.e. about one flush interval plus one flush of traffic,
and the statistics of the same requests (they are committed in the same transaction as the log
rows). Everything committed before stays: SQLite in WAL mode and PostgreSQL both keep a
committed transaction through a killed process.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from model_rollout.gateway.config import Settings
from model_rollout.gateway.stats import LEVELS, ArmCell, PairCell, Recorder, window_ranges

log = logging.getLogger("model_rollout.gateway.store")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS gw_routes (
        model TEXT PRIMARY KEY,
        generation BIGINT NOT NULL,
        weights TEXT NOT NULL,
        shadows TEXT NOT NULL,
        staging TEXT,
        updated_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS gw_versions (
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (model, version))""",
    """CREATE TABLE IF NOT EXISTS gw_batching (
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        mode TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (model, version))""",
    """CREATE TABLE IF NOT EXISTS gw_requests (
        request_id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        arm TEXT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        status INTEGER NOT NULL,
        prediction TEXT,
        error TEXT,
        replica TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS gw_requests_id ON gw_requests (request_id)",
    "CREATE INDEX IF NOT EXISTS gw_requests_model_ts ON gw_requests (model, ts)",
    """CREATE TABLE IF NOT EXISTS gw_feedback (
        request_id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        arm TEXT NOT NULL,
        outcome DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS gw_stats (
        model TEXT NOT NULL,
        level INTEGER NOT NULL,
        start BIGINT NOT NULL,
        version TEXT NOT NULL,
        arm TEXT NOT NULL,
        replica TEXT NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        rejected BIGINT NOT NULL,
        latency_sum_ms DOUBLE PRECISION NOT NULL,
        latency TEXT NOT NULL,
        fb_count BIGINT NOT NULL,
        fb_sum DOUBLE PRECISION NOT NULL,
        fb_sum_sq DOUBLE PRECISION NOT NULL,
        out_cat TEXT NOT NULL,
        out_num TEXT NOT NULL,
        PRIMARY KEY (model, level, start, version, arm, replica))""",
    """CREATE TABLE IF NOT EXISTS gw_pairs (
        model TEXT NOT NULL,
        level INTEGER NOT NULL,
        start BIGINT NOT NULL,
        shadow_version TEXT NOT NULL,
        primary_version TEXT NOT NULL,
        replica TEXT NOT NULL,
        pairs BIGINT NOT NULL,
        agree BIGINT NOT NULL,
        abs_delta_sum DOUBLE PRECISION NOT NULL,
        abs_delta_sq_sum DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (model, level, start, shadow_version, primary_version, replica))""",
]

_INSERT_REQUEST = (
    "INSERT INTO gw_requests (request_id, ts, model, version, arm, latency_ms, status, "
    "prediction, error, replica) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_FEEDBACK = (
    "INSERT INTO gw_feedback (request_id, ts, model, version, arm, outcome) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING"
)
_UPSERT_STATS = """INSERT INTO gw_stats (model, level, start, version, arm, replica, requests,
    errors, rejected, latency_sum_ms, latency, fb_count, fb_sum, fb_sum_sq, out_cat, out_num)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (model, level, start, version, arm, replica) DO UPDATE SET
    requests = excluded.requests, errors = excluded.errors, rejected = excluded.rejected,
    latency_sum_ms = excluded.latency_sum_ms, latency = excluded.latency,
    fb_count = excluded.fb_count, fb_sum = excluded.fb_sum, fb_sum_sq = excluded.fb_sum_sq,
    out_cat = excluded.out_cat, out_num = excluded.out_num"""
_UPSERT_PAIRS = """INSERT INTO gw_pairs (model, level, start, shadow_version, primary_version,
    replica, pairs, agree, abs_delta_sum, abs_delta_sq_sum)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (model, level, start, shadow_version, primary_version, replica) DO UPDATE SET
    pairs = excluded.pairs, agree = excluded.agree, abs_delta_sum = excluded.abs_delta_sum,
    abs_delta_sq_sum = excluded.abs_delta_sq_sum"""

_STATS_COLS = (
    "version, arm, requests, errors, rejected, latency_sum_ms, latency, fb_count, fb_sum, "
    "fb_sum_sq, out_cat, out_num"
)


class StaleGeneration(Exception):
    """A route write named a generation that is no longer current."""

    def __init__(self, current: int):
        super().__init__(f"stale generation; current is {current}")
        self.current = current


def _cell_from_row(row: tuple) -> ArmCell:
    c = ArmCell()
    (
        c.requests,
        c.errors,
        c.rejected,
        c.latency_sum_ms,
        lat,
        c.fb_count,
        c.fb_sum,
        c.fb_sum_sq,
        cat,
        num,
    ) = row
    c.latency = orjson.loads(lat)
    c.out_cat = orjson.loads(cat)
    c.out_num = orjson.loads(num)
    return c


def _pair_from_row(row: tuple) -> PairCell:
    c = PairCell()
    c.pairs, c.agree, c.abs_delta_sum, c.abs_delta_sq_sum = row
    return c


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:  # e.g. records with integer column names, as mlflow answers them
        return orjson.dumps(
            value, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        ).decode()


class _Db:
    """One connection of either dialect, with `?` placeholders on both."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.pg = bool(settings.store_url)
        self.conn: Any = None
        self.connect()

    def connect(self) -> None:
        if self.pg:
            import psycopg

            self.conn = psycopg.connect(self.settings.store_url, autocommit=False)
            schema = self.settings.store_schema
            if schema:
                from psycopg import sql

                with self.conn.cursor() as cur:
                    cur.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                    )
                    cur.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
                self.conn.commit()
        else:
            path = Path(self.settings.data_dir) / "gateway.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(
                str(path), timeout=30, isolation_level=None, check_same_thread=False
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=30000")

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def begin(self, immediate: bool = False) -> None:
        if not self.pg:
            self.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def commit(self) -> None:
        self.conn.commit() if self.pg else self.conn.execute("COMMIT")

    def rollback(self) -> None:
        try:
            if self.pg:
                self.conn.rollback()
            elif self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - best effort after a failure
            log.debug("rollback failed", exc_info=True)

    def execute(self, sql: str, params: Iterable = ()) -> Any:
        if self.pg:
            cur = self.conn.cursor()
            cur.execute(self.q(sql), tuple(params))
            return cur
        return self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: list) -> None:
        if not rows:
            return
        if self.pg:
            with self.conn.cursor() as cur:
                cur.executemany(self.q(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def copy_requests(self, rows: list) -> None:
        if not self.pg:
            self.conn.executemany(_INSERT_REQUEST, rows)
            return
        with (
            self.conn.cursor() as cur,
            cur.copy(
                "COPY gw_requests (request_id, ts, model, version, arm, latency_ms, status, "
                "prediction, error, replica) FROM STDIN"
            ) as cp,
        ):
            for row in rows:
                cp.write_row(row)

    def healthy(self) -> bool:
        try:
            return not (self.conn.closed or self.conn.broken) if self.pg else True
        except Exception:  # noqa: BLE001
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class Store:
    """The gateway's store; thread-safe. Reads and admin writes use one locked connection, the
    writer thread its own."""

    def __init__(self, settings: Settings, recorder: Recorder):
        self.settings = settings
        self.recorder = recorder
        self.replica = settings.replica_id
        self._requests: collections.deque = collections.deque()
        self._feedback: collections.deque = collections.deque()
        self._retry: list[tuple[list, list]] = []
        self.dropped_log_rows = 0
        self._dropped_queued = 0  # of those, rows dropped after they were queued
        self.rows_logged = 0  # request-log rows queued since start (event loop)
        self.rows_written = 0  # request-log rows committed since start (writer thread)
        self.flush_errors = 0
        self.last_flush_ok = True
        self.last_error: str | None = None
        self.failing_since: float | None = None  # first failed flush of the current streak
        self._cells: dict[tuple, ArmCell] = {}
        self._pair_cells: dict[tuple, PairCell] = {}
        self._dirty: set[tuple] = set()
        self._dirty_pairs: set[tuple] = set()
        self._lock = threading.Lock()
        self._flush_cond = threading.Condition()
        self._flush_seq = 0
        self._flush_done = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: _Db | None = None
        self._writer: _Db | None = None

    @property
    def kind(self) -> str:
        return "postgresql" if self.settings.store_url else "sqlite"

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        self._reader = _Db(self.settings)
        db = self._reader
        with self._lock:
            if db.pg:
                # concurrent replicas may race on CREATE TABLE IF NOT EXISTS: serialise them
                db.execute("SELECT pg_advisory_xact_lock(727274)")
            else:
                db.begin(immediate=True)
            try:
                for stmt in _SCHEMA:
                    db.execute(stmt)
                db.commit()
            except Exception:
                db.rollback()
                raise
        self._writer = _Db(self.settings)
        self._thread = threading.Thread(target=self._run, name="gateway-store-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._flush_cond:
            self._flush_cond.notify_all()
        if self._thread:
            self._thread.join(timeout=10)
        self._flush()  # whatever arrived last
        for db in (self._writer, self._reader):
            if db:
                db.close()

    # -- request path (event loop; no I/O) ---------------------------------------------------
    def log_request(
        self,
        request_id: str,
        ts: float,
        model: str,
        version: str,
        arm: str,
        latency_ms: float,
        status: int,
        prediction: Any,
        error: str | None,
    ) -> None:
        if len(self._requests) >= self.settings.log_queue_limit:
            self.dropped_log_rows += 1
            return
        self._requests.append(
            (request_id, ts, model, version, arm, latency_ms, status, prediction, error)
        )
        self.rows_logged += 1

    def log_feedback(
        self, request_id: str, ts: float, model: str, version: str, arm: str, outcome: float
    ) -> None:
        self._feedback.append((request_id, ts, model, version, arm, outcome))

    def backlog(self) -> int:
        """Request-log rows answered but not committed yet: what a crash now would lose.

        Queued, being written and waiting for a retry alike. Counters rather than queue lengths,
        so a flush in progress is counted too; read on the event loop it is never below the
        true figure (the writer's counters are read first)."""
        settled = self.rows_written + self._dropped_queued
        return max(0, self.rows_logged - settled)

    def health(self) -> dict:
        """The store's state for snapshots and readiness: is it taking writes right now?"""
        return {
            "kind": self.kind,
            "writable": self.last_flush_ok,
            "failing_since": self.failing_since,
            "last_error": self.last_error,
            "flush_errors": self.flush_errors,
            "unflushed_rows": self.backlog(),
            "dropped_log_rows": self.dropped_log_rows,
        }

    # -- writer --------------------------------------------------------------------------------
    def _run(self) -> None:
        interval = self.settings.flush_interval
        while not self._stop.is_set():
            with self._flush_cond:
                if self._flush_seq == self._flush_done:
                    self._flush_cond.wait(timeout=interval)
                target = self._flush_seq
            if self._stop.is_set():
                break
            self._flush()
            with self._flush_cond:
                self._flush_done = max(self._flush_done, target)
                self._flush_cond.notify_all()

    def flush_now(self, timeout: float = 10.0) -> bool:
        """Ask the writer for a flush and wait until one that started after now completed."""
        if self._thread is None or not self._thread.is_alive():
            self._flush()
            return self.last_flush_ok
        with self._flush_cond:
            self._flush_seq += 1
            want = self._flush_seq
            self._flush_cond.notify_all()
            self._flush_cond.wait_for(
                lambda: self._flush_done >= want or self._stop.is_set(), timeout=timeout
            )
        return self.last_flush_ok

    def _flush(self) -> None:
        db = self._writer
        if db is None:
            return
        # Log rows and statistics deltas are taken together (under the recorder's lock), so a
        # transaction commits the rows and the counts of the same requests: after a crash the
        # statistics and the log agree (to the one request being recorded at that instant).
        (req_rows, fb_rows), (arms, pairs) = self.recorder.drain_with(
            lambda: (_take(self._requests), _take(self._feedback))
        )
        if self._retry:
            old_req, old_fb = self._retry.pop()
            req_rows = old_req + req_rows
            fb_rows = old_fb + fb_rows
        now = time.time()
        try:
            self._merge_cells(db, arms, pairs, now)
            rows = [
                (rid, ts, m, v, a, lat, st, _dumps(pred), err, self.replica)
                for rid, ts, m, v, a, lat, st, pred, err in req_rows
            ]
            db.begin(immediate=True)
            db.copy_requests(rows)
            db.executemany(_INSERT_FEEDBACK, fb_rows)
            db.executemany(_UPSERT_STATS, [self._stats_row(k) for k in self._dirty])
            db.executemany(_UPSERT_PAIRS, [self._pair_row(k) for k in self._dirty_pairs])
            db.commit()
            self.rows_written += len(rows)
            self._dirty.clear()
            self._dirty_pairs.clear()
            if not self.last_flush_ok:
                log.warning(
                    "store writable again after %.1f s; %d retried rows written",
                    now - (self.failing_since or now),
                    len(rows),
                )
            self.last_flush_ok = True
            self.last_error = None
            self.failing_since = None
        except Exception as exc:  # noqa: BLE001 - keep rows and retry; never kill the writer
            db.rollback()
            self.flush_errors += 1
            self.last_flush_ok = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.failing_since is None:
                self.failing_since = now
            log.warning("store flush failed (will retry): %s", self.last_error)
            overflow = len(req_rows) - self.settings.log_queue_limit
            if overflow > 0:
                self.dropped_log_rows += overflow
                self._dropped_queued += overflow
                req_rows = req_rows[overflow:]
            self._retry.append((req_rows, fb_rows))
            self._reconnect(db)
            return
        self._evict(now)

    def _reconnect(self, db: _Db) -> None:
        if db.pg and not db.healthy():
            try:
                db.close()
                db.connect()
            except Exception as exc:  # noqa: BLE001
                log.warning("store reconnect failed: %s", exc)

    def _merge_cells(self, db: _Db, arms: dict, pairs: dict, now: float) -> None:
        for (m, v, a, sec), delta in arms.items():
            for level in LEVELS:
                key = (m, level, sec - sec % level, v, a)
                cell = self._cells.get(key)
                if cell is None:
                    cell = self._load_cell(db, key, now) or ArmCell()
                    self._cells[key] = cell
                cell.merge(delta)
                self._dirty.add(key)
        for (m, s, p, sec), delta in pairs.items():
            for level in LEVELS:
                key = (m, level, sec - sec % level, s, p)
                cell = self._pair_cells.get(key)
                if cell is None:
                    cell = self._load_pair(db, key, now) or PairCell()
                    self._pair_cells[key] = cell
                cell.merge(delta)
                self._dirty_pairs.add(key)

    def _load_cell(self, db: _Db, key: tuple, now: float) -> ArmCell | None:
        m, level, start, v, a = key
        if start + level > now - 100:  # never evicted yet: a new cell
            return None
        row = db.execute(
            "SELECT requests, errors, rejected, latency_sum_ms, latency, fb_count, fb_sum, "
            "fb_sum_sq, out_cat, out_num FROM gw_stats WHERE model = ? AND level = ? AND "
            "start = ? AND version = ? AND arm = ? AND replica = ?",
            (m, level, start, v, a, self.replica),
        ).fetchone()
        if db.pg:
            db.commit()
        return _cell_from_row(row) if row else None

    def _load_pair(self, db: _Db, key: tuple, now: float) -> PairCell | None:
        m, level, start, s, p = key
        if start + level > now - 100:
            return None
        row = db.execute(
            "SELECT pairs, agree, abs_delta_sum, abs_delta_sq_sum FROM gw_pairs WHERE model = ? "
            "AND level = ? AND start = ? AND shadow_version = ? AND primary_version = ? "
            "AND replica = ?",
            (m, level, start, s, p, self.replica),
        ).fetchone()
        if db.pg:
            db.commit()
        return _pair_from_row(row) if row else None

    def _evict(self, now: float) -> None:
        for cells, dirty in ((self._cells, self._dirty), (self._pair_cells, self._dirty_pairs)):
            old = [k for k in cells if k[2] + k[1] < now - 120 and k not in dirty]
            for k in old:
                del cells[k]

    def _stats_row(self, key: tuple) -> tuple:
        m, level, start, v, a = key
        c = self._cells[key]
        return (
            m,
            level,
            start,
            v,
            a,
            self.replica,
            c.requests,
            c.errors,
            c.rejected,
            c.latency_sum_ms,
            orjson.dumps(c.latency).decode(),
            c.fb_count,
            c.fb_sum,
            c.fb_sum_sq,
            orjson.dumps(c.out_cat).decode(),
            orjson.dumps(c.out_num).decode(),
        )

    def _pair_row(self, key: tuple) -> tuple:
        m, level, start, s, p = key
        c = self._pair_cells[key]
        return (
            m,
            level,
            start,
            s,
            p,
            self.replica,
            c.pairs,
            c.agree,
            c.abs_delta_sum,
            c.abs_delta_sq_sum,
        )

    # -- reads and admin writes (worker threads) ------------------------------------------------
    def _read(self, fn):
        with self._lock:
            db = self._reader
            try:
                out = fn(db)
                if db.pg:
                    db.commit()
                return out
            except Exception:
                db.rollback()
                self._reconnect(db)
                raise

    def read_stats(
        self, model: str, since: float, now: float, until: int | None = None
    ) -> tuple[list, list]:
        """Cells covering [since, now] (or [since, until)) from every replica:
        (version, arm, cell), (s, p, cell)."""
        ranges = window_ranges(int(since), int(now), until)
        cond = " OR ".join("(level = ? AND start >= ? AND start < ?)" for _ in ranges)
        args: list = [model]
        for r in ranges:
            args.extend(r)

        def run(db: _Db):
            arms = [
                (r[0], r[1], _cell_from_row(r[2:]))
                for r in db.execute(
                    f"SELECT {_STATS_COLS} FROM gw_stats WHERE model = ? AND ({cond})", args
                ).fetchall()
            ]
            pairs = [
                (r[0], r[1], _pair_from_row(r[2:]))
                for r in db.execute(
                    "SELECT shadow_version, primary_version, pairs, agree, abs_delta_sum, "
                    f"abs_delta_sq_sum FROM gw_pairs WHERE model = ? AND ({cond})",
                    args,
                ).fetchall()
            ]
            return arms, pairs

        return self._read(run)

    def load_routes(self) -> dict[str, dict]:
        def run(db: _Db):
            rows = db.execute(
                "SELECT model, generation, weights, shadows, staging FROM gw_routes"
            ).fetchall()
            return {
                r[0]: {
                    "generation": int(r[1]),
                    "weights": orjson.loads(r[2]),
                    "shadows": orjson.loads(r[3]),
                    "staging": r[4],
                }
                for r in rows
            }

        return self._read(run)

    def load_routes_and_versions(self) -> tuple[dict[str, dict], dict[tuple, tuple[str, str]]]:
        """Routes, and (model, version) -> (source, kind) of every registered version: what a
        replica polls to keep in step with the others."""
        routes = self.load_routes()
        return routes, {(m, v): (s, k) for m, v, s, k in self.load_versions()}

    def load_versions(self) -> list[tuple[str, str, str, str]]:
        return self._read(
            lambda db: [
                tuple(r)
                for r in db.execute(
                    "SELECT model, version, source, kind FROM gw_versions"
                ).fetchall()
            ]
        )

    def put_version(self, model: str, version: str, source: str, kind: str) -> None:
        def run(db: _Db):
            db.begin(immediate=True)
            db.execute(
                "INSERT INTO gw_versions (model, version, source, kind, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model, version) DO UPDATE SET "
                "source = excluded.source, kind = excluded.kind, updated_at = excluded.updated_at",
                (model, version, source, kind, time.time()),
            )
            db.commit()

        self._read(run)

    def load_batching(self) -> dict[tuple[str, str], str]:
        """Per-version batching modes set through the admin API: (model, version) -> mode."""
        return self._read(
            lambda db: {
                (r[0], r[1]): r[2]
                for r in db.execute("SELECT model, version, mode FROM gw_batching").fetchall()
            }
        )

    def put_batching(self, model: str, version: str, mode: str | None) -> None:
        """Record a version's batching mode (None: forget it, the gateway default applies)."""

        def run(db: _Db):
            db.begin(immediate=True)
            if mode is None:
                db.execute(
                    "DELETE FROM gw_batching WHERE model = ? AND version = ?", (model, version)
                )
            else:
                db.execute(
                    "INSERT INTO gw_batching (model, version, mode, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (model, version) DO UPDATE SET "
                    "mode = excluded.mode, updated_at = excluded.updated_at",
                    (model, version, mode, time.time()),
                )
            db.commit()

        self._read(run)

    def delete_version(self, model: str, version: str) -> None:
        def run(db: _Db):
            db.begin(immediate=True)
            db.execute("DELETE FROM gw_versions WHERE model = ? AND version = ?", (model, version))
            db.commit()

        self._read(run)

    def cas_route(self, model: str, expected: int, route: dict) -> dict:
        """Write `route` as generation expected+1 if `expected` is current; else StaleGeneration."""

        def run(db: _Db):
            db.begin(immediate=True)
            row = db.execute(
                "SELECT generation FROM gw_routes WHERE model = ?"
                + (" FOR UPDATE" if db.pg else ""),
                (model,),
            ).fetchone()
            current = int(row[0]) if row else 0
            if current != expected:
                db.rollback()
                raise StaleGeneration(current)
            new = {**route, "generation": expected + 1}
            args = (
                model,
                new["generation"],
                orjson.dumps(new["weights"]).decode(),
                orjson.dumps(new["shadows"]).decode(),
                new["staging"],
                time.time(),
            )
            if row is None:
                cur = db.execute(
                    "INSERT INTO gw_routes (model, generation, weights, shadows, staging, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model) DO NOTHING",
                    args,
                )
            else:
                cur = db.execute(
                    "UPDATE gw_routes SET generation = ?, weights = ?, shadows = ?, staging = ?, "
                    "updated_at = ? WHERE model = ? AND generation = ?",
                    (*args[1:], model, expected),
                )
            if cur.rowcount != 1:  # another replica got there first
                db.rollback()
                raise StaleGeneration(expected + 1)
            db.commit()
            return new

        return self._read(run)

    def lookup_request(self, request_id: str) -> tuple[str, str, str] | None:
        """(model, version, arm) of the live answer to a request id, from the log."""
        row = self._read(
            lambda db: db.execute(
                "SELECT model, version, arm FROM gw_requests WHERE request_id = ? AND arm <> 'shadow' "
                "ORDER BY ts DESC LIMIT 1",
                (request_id,),
            ).fetchone()
        )
        return tuple(row) if row else None

    def has_feedback(self, request_id: str) -> bool:
        return bool(
            self._read(
                lambda db: db.execute(
                    "SELECT 1 FROM gw_feedback WHERE request_id = ?", (request_id,)
                ).fetchone()
            )
        )

    def probe(self) -> bool:
        """True while the store answers a trivial query (readiness)."""
        try:
            self._read(lambda db: db.execute("SELECT 1").fetchone())
            return True
        except Exception:  # noqa: BLE001
            return False


def _take(dq: collections.deque) -> list:
    n = len(dq)
    return [dq.popleft() for _ in range(n)]
