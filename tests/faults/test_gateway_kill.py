"""kill -9 of the gateway in the middle of a canary under load, then a restart on its data dir.

What a crash may lose is the request log's (and the statistics') rows answered since the last
committed flush: about one flush interval (0.25 s) plus one flush of traffic. The gateway says
how many that is at any moment (`model_gateway_log_backlog`: answered, not committed yet), so
the bound checked here is a count, not a time: rows lost <= the backlog in a /metrics scrape
taken just before the kill + the answers the client received after it sent that scrape (any
row the gateway recorded after computing the gauge was answered after that).
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from support.gateway_api import admin_client, arm, log_rows, serve, set_route, stats
from support.load import Connection
from support.models import iris_rows, scoring_payload

from .helpers import gateway_evidence, metric

pytestmark = pytest.mark.timeout(300)

MODEL = "faults-kill"
KEYS = 400  # routing keys (users); the split is checked key by key after the restart
CONCURRENCY = 8
KILL_AFTER = 2000  # answers before the kill
MAX_REQUESTS = 20_000
MAX_SECONDS = 90.0
FEEDBACK_EVERY = 4  # one answer in four gets a business outcome


@dataclass
class Run:
    """What the client saw. `answered` is in the order the answers arrived."""

    answered: list[str] = field(default_factory=list)
    answer: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (version, status)
    key_version: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    sent: set[str] = field(default_factory=set)
    unanswered: set[str] = field(default_factory=set)  # in flight when the process died
    feedback_acked: set[str] = field(default_factory=set)
    backlog_samples: list[float] = field(default_factory=list)
    backlog_at_kill: float = -1.0  # the gauge in the scrape just before the kill
    answered_before_scrape: int = 0
    rate: float = 0.0  # answers per second before the kill (for the report only)


async def _load_then_kill(gw) -> Run:
    run = Run()
    host, port = "127.0.0.1", gw.port
    path, fb_path = f"/models/{MODEL}/invocations", f"/models/{MODEL}/feedback"
    bodies = [orjson.dumps(scoring_payload(iris_rows(1, seed=i))) for i in range(200)]
    counter = iter(range(MAX_REQUESTS))
    deadline = time.monotonic() + MAX_SECONDS
    killed = asyncio.Event()

    async def client() -> None:
        conn, fb = Connection(host, port), Connection(host, port)
        transport = (ConnectionError, OSError, asyncio.IncompleteReadError)
        try:
            for i in counter:
                if killed.is_set() or time.monotonic() > deadline:
                    return
                rid, key = f"kill-{i:06d}", f"user{i % KEYS}"
                run.sent.add(rid)
                headers = {"X-Request-Id": rid, "X-Routing-Key": key}
                try:
                    resp = await conn.request("POST", path, bodies[i % len(bodies)], headers)
                except transport:
                    run.unanswered.add(rid)
                    return
                version = resp.headers.get("x-model-version", "")
                run.answered.append(rid)
                run.answer[rid] = (version, resp.status)
                run.key_version[key].add(version)
                if resp.status != 200 or i % FEEDBACK_EVERY:
                    continue
                outcome = orjson.dumps({"request_id": rid, "outcome": float(i % 3 == 0)})
                try:
                    r = await fb.request("POST", fb_path, outcome)
                except transport:
                    return
                if r.status == 200 and orjson.loads(r.body).get("accepted") == 1:
                    run.feedback_acked.add(rid)
        finally:
            await conn.close()
            await fb.close()

    async def controller() -> None:
        scraper = Connection(host, port)
        t0 = time.monotonic()
        try:
            while len(run.answered) < KILL_AFTER:
                assert time.monotonic() < deadline, f"only {len(run.answered)} answers"
                await asyncio.sleep(0.1)
                r = await scraper.request("GET", "/metrics")
                run.backlog_samples.append(metric(r.body.decode(), "model_gateway_log_backlog"))
            # The kill: every row recorded after this scrape computed its gauge is answered
            # after the scrape was sent, i.e. after `answered_before_scrape`.
            run.answered_before_scrape = len(run.answered)
            run.rate = run.answered_before_scrape / (time.monotonic() - t0)
            r = await scraper.request("GET", "/metrics")
            run.backlog_at_kill = metric(r.body.decode(), "model_gateway_log_backlog")
            os.killpg(gw.proc.pid, signal.SIGKILL)
        finally:
            killed.set()
            await scraper.close()

    await asyncio.gather(controller(), *(client() for _ in range(CONCURRENCY)))
    return run


def _feedback_ids(data_dir: Path) -> set[str]:
    with sqlite3.connect(Path(data_dir) / "gateway.db") as conn:
        q = "SELECT request_id FROM gw_feedback WHERE model = ?"
        return {r[0] for r in conn.execute(q, (MODEL,))}


def test_kill_9_under_canary_load_keeps_what_was_committed(gateway_factory, iris_registry):
    gw = gateway_factory()
    with gateway_evidence(gw):
        with admin_client(gw) as c:
            serve(c, MODEL, iris_registry, {"1": "good", "2": "good2"})
            assert set_route(c, MODEL, {"1": 75, "2": 25}).status_code == 200
            route = c.get(f"/admin/models/{MODEL}/route").json()
        gw.wait_ready(timeout=120)

        run = asyncio.run(_load_then_kill(gw))
        gw.proc.wait(timeout=30)
        assert gw.proc.returncode == -signal.SIGKILL
        # committed before the kill: what is on disk now, before anything starts again
        committed = log_rows(gw.data_dir, MODEL)
        committed_feedback = _feedback_ids(gw.data_dir)

        gw.start()
        gw.wait_ready(timeout=180)
        with admin_client(gw) as c:
            # the same routes and the same generation
            assert c.get(f"/admin/models/{MODEL}/route").json() == route
            # read before any new traffic: the restart kept every committed row, invented none
            after = log_rows(gw.data_dir, MODEL)
            assert sorted(after) == sorted(committed)
            assert _feedback_ids(gw.data_dir) == committed_feedback
            snap = stats(c, MODEL)

        ids = [r[0] for r in after]
        assert len(ids) == len(set(ids)), "a request id logged twice"
        assert set(ids) <= run.sent
        for rid, version, arm_name, status in after:  # the log says what the client was told
            if rid in run.answer:
                assert (version, status, arm_name) == (*run.answer[rid], "primary")
        answered = set(run.answered)
        lost = answered - set(ids)
        logged_unanswered = set(ids) & run.unanswered  # answered by the gateway, reply cut off
        answers_after_scrape = len(run.answered) - run.answered_before_scrape
        bound = run.backlog_at_kill + answers_after_scrape
        print(
            f"\nkill -9 after {len(run.answered)} answers ({run.rate:.0f}/s before the kill): "
            f"{len(ids)} rows in the log after restart, {len(lost)} answered rows lost; "
            f"at risk at the last scrape {run.backlog_at_kill:.0f} + {answers_after_scrape} "
            f"answered after it = bound {bound:.0f}; backlog during load max "
            f"{max(run.backlog_samples):.0f}, median "
            f"{sorted(run.backlog_samples)[len(run.backlog_samples) // 2]:.0f} "
            f"({len(run.backlog_samples)} scrapes); {len(run.unanswered)} requests in flight, "
            f"{len(logged_unanswered)} of them logged; feedback: {len(run.feedback_acked)} "
            f"accepted, {len(run.feedback_acked - committed_feedback)} lost"
        )
        assert len(run.answered) >= KILL_AFTER
        assert all(status == 200 for _, status in run.answer.values())
        # rows in the log <= answers given (the ones in flight at the kill may have been logged)
        assert len(ids) <= len(answered) + len(logged_unanswered)
        assert len(run.unanswered) <= CONCURRENCY
        # rows in the log >= answers given - the at-risk rows the gateway reported
        assert len(lost) <= bound, (len(lost), bound)
        assert committed_feedback <= run.feedback_acked

        # statistics were committed with the log rows, in the same transactions
        logged = collections.Counter(r[1] for r in after)
        counted = {v: (arm(snap, v) or {"requests": 0})["requests"] for v in ("1", "2")}
        assert 0 <= sum(counted.values()) - len(after) <= 1, (counted, logged)

        # the restarted gateway serves the same split: every key lands where it did before
        before = {}
        for key, versions in run.key_version.items():
            assert len(versions) == 1, f"{key} was answered by {versions} before the kill"
            before[key] = next(iter(versions))
        split_after = _versions_by_key(gw, sorted(before))
        assert split_after == before
        share = sum(v == "2" for v in split_after.values()) / len(split_after)
        assert 0.15 < share < 0.35, share  # 25% of the keys, give or take the hash


def _versions_by_key(gw, keys: list[str]) -> dict[str, str]:
    async def ask() -> dict[str, str]:
        conn = Connection("127.0.0.1", gw.port)
        body = orjson.dumps(scoring_payload(iris_rows(1)))
        out = {}
        try:
            for key in keys:
                r = await conn.request(
                    "POST", f"/models/{MODEL}/invocations", body, {"X-Routing-Key": key}
                )
                assert r.status == 200, r.body
                out[key] = r.headers["x-model-version"]
        finally:
            await conn.close()
        return out

    return asyncio.run(ask())
