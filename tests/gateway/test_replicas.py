"""Two real gateway replicas sharing one PostgreSQL store."""

from __future__ import annotations

import time

import httpx
import pytest
from faults.helpers import wait_until
from support.gateway_api import admin_client, arm, fire, load, serve, set_route, stats, wait_loaded
from support.models import iris_rows, scoring_payload

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]


def test_replicas_share_routes_statistics_and_feedback(
    gateway_factory, postgres_store, iris_registry
):
    url, schema = postgres_store
    a = gateway_factory(store_url=url, store_schema=schema)
    b = gateway_factory(store_url=url, store_schema=schema)
    with admin_client(a) as ca, admin_client(b) as cb:
        serve(ca, "shared", iris_registry, {"1": "good", "2": "flipped"})
        assert set_route(ca, "shared", {"1": 100}).status_code == 200
        # replica b learns the route (and loads the versions it names) from the store
        deadline = time.time() + 60
        while time.time() < deadline:
            if cb.get("/admin/models/shared/route").json().get("generation") == 1:
                break
            time.sleep(0.2)
        assert cb.get("/admin/models/shared/route").json()["generation"] == 1
        b.wait_ready(timeout=60)
        # a write through b with a's generation... is current; a stale one is refused on both
        r = set_route(cb, "shared", {"1": 50, "2": 50}, generation=1)
        assert r.status_code == 200 and r.json()["generation"] == 2
        assert set_route(ca, "shared", {"1": 100}, generation=1).status_code == 409
        t0 = time.time()
        while (
            time.time() < t0 + 10 and ca.get("/admin/models/shared/route").json()["generation"] != 2
        ):
            time.sleep(0.1)
        picked_up = time.time() - t0
        assert ca.get("/admin/models/shared/route").json()["generation"] == 2
        assert picked_up < 5  # polled every 0.5 s
        since = time.time() - 1
        ra = fire(f"{a.url}/models/shared/invocations", 300, concurrency=4)
        rb = fire(f"{b.url}/models/shared/invocations", 200, concurrency=4)
        assert ra.ok == 300 and rb.ok == 200
        # feedback for a request answered by b, posted to a (b's log reaches the store first)
        rid = httpx.post(
            f"{b.url}/models/shared/invocations", json=scoring_payload(iris_rows(1))
        ).headers["x-request-id"]
        stats(cb, "shared", since)  # flushes b
        r = httpx.post(f"{a.url}/models/shared/feedback", json={"request_id": rid, "outcome": 1})
        assert r.status_code == 200 and r.json() == {"accepted": 1}
        stats(ca, "shared", since)  # flushes a
        snap = stats(cb, "shared", since)
        total = sum(x["requests"] for x in snap["arms"] if x["arm"] == "primary")
        assert total == 501
        assert sum(x["feedback"]["count"] for x in snap["arms"]) == 1
        assert arm(snap, "1")["requests"] > 100 and arm(snap, "2")["requests"] > 100


def test_every_replica_loads_registered_versions_and_drops_deleted_ones(
    gateway_factory, postgres_store, iris_registry
):
    """A version registered through one replica is loaded by the others before any route
    names it (so a route naming it is served there at once), and deleted with it."""
    url, schema = postgres_store
    a = gateway_factory(store_url=url, store_schema=schema)
    b = gateway_factory(store_url=url, store_schema=schema)
    uri = f"models:/{iris_registry['_name']}/{iris_registry['good']}"

    def on_b(version: str):
        r = cb.get(f"/admin/models/fleet/versions/{version}")
        return r.json()["status"] if r.status_code == 200 else None

    with admin_client(a) as ca, admin_client(b) as cb:
        assert load(ca, "fleet", "1", uri)["status"] == "loaded"
        assert wait_until("b loading fleet/1", lambda: on_b("1"), timeout=60) in (
            "loading",
            "loaded",
        )
        assert wait_loaded(cb, "fleet", "1")["status"] == "loaded"  # no route names it yet
        r = set_route(cb, "fleet", {"1": 100})
        assert r.status_code == 200, r.text  # served at once: nothing left to load on b
        # out of the route, then deleted through a: b drops it too
        assert set_route(cb, "fleet", {}, generation=r.json()["generation"]).status_code == 200
        wait_until(
            "a at generation 2",
            lambda: ca.get("/admin/models/fleet/route").json()["generation"] == 2 or None,
            timeout=30,
        )
        assert ca.delete("/admin/models/fleet/versions/1").status_code == 200
        wait_until("b dropping fleet/1", lambda: on_b("1") is None or None, timeout=30)
