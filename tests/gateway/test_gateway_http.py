"""The real gateway over HTTP, with versions loaded from a real MLflow registry.

One gateway process serves this module; each test uses its own gateway model name so tests
do not see each other's traffic.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time

import httpx
import orjson
import pytest
from support.gateway_api import (
    admin_client,
    arm,
    fire,
    load,
    log_rows,
    serve,
    set_route,
    stats,
    wait_loaded,
)
from support.load import percentile, run_load
from support.models import IRIS_COLUMNS, _fitted, iris_rows, scoring_payload
from support.servers import GatewayProcess

pytestmark = pytest.mark.timeout(300)
SHADOW_QUEUE = 64


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mlflow_server, iris_registry):
    g = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        tracking_uri=mlflow_server,
        extra_args=["--shadow-queue-size", str(SHADOW_QUEUE)],
    ).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    with admin_client(gw) as c:
        yield c


def inv(gw, model: str) -> str:
    return f"{gw.url}/models/{model}/invocations"


def post(gw, model: str, body, headers=None) -> httpx.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        inv(gw, model),
        content=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=30,
    )


def test_all_scoring_formats_answer_like_mlflow(gw, client, iris_registry):
    serve(client, "fmt", iris_registry, {"1": "good"})
    assert set_route(client, "fmt", {"1": 100}).status_code == 200
    rows = iris_rows(7, seed=3)
    import pandas as pd

    expected = _fitted().predict(pd.DataFrame(rows, columns=IRIS_COLUMNS)).tolist()
    for fmt in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        r = post(gw, "fmt", scoring_payload(rows, fmt), {"X-Request-Id": f"req-{fmt}"})
        assert r.status_code == 200, (fmt, r.text)
        assert r.json() == {"predictions": expected}, fmt
        assert r.headers["x-model-version"] == "1"
        assert r.headers["x-model-arm"] == "primary"
        assert r.headers["x-request-id"] == f"req-{fmt}"
    r = post(gw, "fmt", scoring_payload(rows))
    assert len(r.headers["x-request-id"]) == 32  # made by the gateway


def test_bad_input_gets_4xx_naming_the_problem(gw, client, iris_registry):
    serve(client, "bad", iris_registry, {"1": "good", "2": "incompatible"})
    assert set_route(client, "bad", {"1": 100}).status_code == 200
    # messages are mlflow's own (tests/parity checks codes and statuses against mlflow serve)
    cases = [
        (b"{not json", 400, "valid JSON"),
        (b"[1, 2]", 400, "Received a list"),
        (b'{"dataframe_split": {"data": []}, "inputs": []}', 400, "exactly one of the input"),
        (b'{"dataframe_split": {"columns": ["a"]}}', 400, "'data' field"),
        (b'{"dataframe_records": {"a": 1}}', 400, "list of records"),
        (b'{"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2]]}}', 400, "sepal_length"),
        (
            b'{"dataframe_records": [{"sepal_length": "abc", "sepal_width": 1, "petal_length": 1, "petal_width": 1}]}',
            400,
            "sepal_length",
        ),
        (b"", 400, "valid JSON"),
        # inputs the model raises on, and whose fault is the request's (found by the fuzzer):
        # an empty list where the signature takes one double, a request without rows
        (
            b'{"inputs": {"sepal_length": [[]], "sepal_width": [2.5], "petal_length": [3.0], "petal_width": [1.0]}}',
            400,
            "evaluating the model",
        ),
        (
            b'{"instances": {"sepal_length": [], "sepal_width": [], "petal_length": [], "petal_width": []}}',
            400,
            "evaluating the model",
        ),
    ]
    for body, status, needle in cases:
        r = post(gw, "bad", body)
        assert r.status_code == status, (body, r.text)
        assert needle in r.json()["message"], (body, r.text)
    r = httpx.post(inv(gw, "bad"), content=b"a,b\n1,2", headers={"Content-Type": "text/csv"})
    assert r.status_code == 400 and "sepal_length" in r.json()["message"]  # CSV read, columns wrong
    r = httpx.post(inv(gw, "bad"), content=b"a", headers={"Content-Type": "text/xml"})
    assert r.status_code == 415 and "text/csv" in r.json()["message"]
    r = post(gw, "no-such-model", scoring_payload(iris_rows(1)))
    assert r.status_code == 404 and "no-such-model" in r.json()["message"]
    # a route naming a version that is not loaded
    r = set_route(client, "bad", {"1": 50, "9": 50})
    assert r.status_code == 422 and "'9'" in r.json()["message"]
    # the incompatible version rejects iris rows: 4xx, counted as rejected, not as an error
    assert set_route(client, "bad", {"2": 100}).status_code == 200
    r = post(gw, "bad", scoring_payload(iris_rows(2)))
    assert r.status_code == 400 and "feature_a" in r.json()["message"]
    snap = stats(client, "bad")
    v1, v2 = arm(snap, "1"), arm(snap, "2")
    assert v1["rejected"] == len(cases) + 2 and v1["errors"] == 0
    assert v2["rejected"] == 1 and v2["errors"] == 0
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


def test_model_that_raises_is_counted_as_that_versions_error(gw, client, iris_registry):
    """mlflow answers a model exception with 400 BAD_REQUEST (so does the gateway), but for
    the statistics it is the version's error, not a rejected request."""
    serve(client, "boom", iris_registry, {"1": "raises", "2": "raises_half"})
    assert set_route(client, "boom", {"1": 100}).status_code == 200
    res = fire(inv(gw, "boom"), 40, concurrency=4)
    assert {r.status for r in res.responses} == {400}
    doc = orjson.loads(res.responses[0].body)
    assert doc["error_code"] == "BAD_REQUEST" and "test model failure" in doc["stack_trace"]
    # half the rows raise: batching must not spread one request's failure to its neighbours
    assert set_route(client, "boom", {"2": 100}).status_code == 200
    res = fire(inv(gw, "boom"), 400, concurrency=8)
    by_status = {s: sum(1 for r in res.responses if r.status == s) for s in (200, 400)}
    assert by_status[200] + by_status[400] == 400
    assert 120 < by_status[400] < 280  # ~half of the distinct single-row requests
    snap = stats(client, "boom")
    assert arm(snap, "1")["errors"] == 40 and arm(snap, "1")["requests"] == 40
    assert arm(snap, "2")["errors"] == by_status[400] and arm(snap, "2")["rejected"] == 0
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


def test_unloadable_version_is_recorded_failed_and_cannot_be_routed(gw, client, iris_registry):
    uri = f"models:/{iris_registry['_name']}/{iris_registry['unloadable']}"
    r = client.put("/admin/models/broken/versions/1", json={"uri": uri})
    assert r.status_code == 202 and r.json()["status"] == "loading", r.text  # never waits
    doc = wait_loaded(client, "broken", "1")
    assert doc["status"] == "failed" and "refuses to load" in doc["error"], doc
    state = client.get("/admin/state").json()
    assert state["models"]["broken"]["versions"]["1"]["status"] == "failed"
    r = set_route(client, "broken", {"1": 100})
    assert r.status_code == 422, r.text
    assert "failed to load" in r.json()["message"] and "refuses to load" in r.json()["message"]
    assert load(client, "broken", "2", "models:/no-such-registered-model/1")["status"] == "failed"
    r = client.put(
        "/admin/models/broken/versions/3", json={"uri": "x", "upstream": "http://127.0.0.1:1"}
    )
    assert r.status_code == 422 and "either" in r.json()["message"]
    r = client.get("/admin/models/broken/versions/3")
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_admin_api_requires_the_token(gw):
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {gw.token}"},
        {"Authorization": gw.token},
    ):
        for method, path in (
            ("GET", "/admin/state"),
            ("PUT", "/admin/models/x/route"),
            ("GET", "/admin/models/x/versions/1"),
            ("DELETE", "/admin/models/x/versions/1"),
            ("GET", "/admin/models/x/stats"),
        ):
            r = httpx.request(method, gw.url + path, headers=headers)
            assert r.status_code == 401, (headers, method, path)
            assert gw.token not in r.text
    assert httpx.get(gw.url + "/admin/state", headers=gw.auth).status_code == 200


def test_route_generation_compare_and_set(gw, client, iris_registry):
    serve(client, "gen", iris_registry, {"1": "good", "2": "good2"})
    r = set_route(client, "gen", {"1": 100}, generation=0)
    assert r.status_code == 200 and r.json()["generation"] == 1
    r = set_route(client, "gen", {"1": 50, "2": 50}, generation=0)
    assert r.status_code == 409 and r.json()["generation"] == 1
    r = set_route(client, "gen", {"1": 60, "2": 50}, generation=1)
    assert r.status_code == 422 and "sum to 100" in r.json()["message"]
    r = set_route(client, "gen", {"1": 100}, shadows=["1"], generation=1)
    assert r.status_code == 422 and "shadow" in r.json()["message"]
    r = set_route(client, "gen", {"1": 90, "2": 10}, generation=1)
    assert r.status_code == 200 and r.json() == {
        "generation": 2,
        "weights": {"1": 90, "2": 10},
        "shadows": [],
        "staging": None,
    }
    assert client.get("/admin/models/gen/route").json()["generation"] == 2
    # a routed version cannot be unloaded; once out of the route it can
    r = client.delete("/admin/models/gen/versions/2")
    assert r.status_code == 409
    assert set_route(client, "gen", {"1": 100}).status_code == 200
    assert client.delete("/admin/models/gen/versions/2").status_code == 200
    assert "2" not in client.get("/admin/state").json()["models"]["gen"]["versions"]


def test_weighted_split_is_within_binomial_tolerance(gw, client, iris_registry):
    serve(client, "split", iris_registry, {"1": "good", "2": "good2"})
    assert set_route(client, "split", {"1": 80, "2": 20}).status_code == 200
    n = 2000
    res = fire(inv(gw, "split"), n, concurrency=8)
    assert res.ok == n and not res.failures
    k = sum(1 for r in res.responses if r.headers["x-model-version"] == "2")
    sd = math.sqrt(n * 0.2 * 0.8)
    assert abs(k - n * 0.2) < 4.5 * sd, k


def test_sticky_routing_keeps_a_key_on_its_version(gw, client, iris_registry):
    serve(client, "sticky", iris_registry, {"1": "good", "2": "good2"})
    assert set_route(client, "sticky", {"1": 50, "2": 50}).status_code == 200
    keys = [f"user-{i}" for i in range(150)]
    res = fire(inv(gw, "sticky"), 600, concurrency=8, routing_key=lambda i: keys[i % len(keys)])
    assert res.ok == 600
    seen: dict[str, set] = {}
    # a sequential pass maps each key to the versions that answered it
    with httpx.Client() as c:
        for key in keys[:60]:
            versions = {
                c.post(
                    inv(gw, "sticky"),
                    json=scoring_payload(iris_rows(1)),
                    headers={"X-Routing-Key": key},
                ).headers["x-model-version"]
                for _ in range(4)
            }
            seen[key] = versions
        assert all(len(v) == 1 for v in seen.values())
        first = {k: next(iter(v)) for k, v in seen.items()}
        assert set(first.values()) == {"1", "2"}
        # a new generation with the same weights (a shadow added) keeps every key in place
        serve(client, "sticky", iris_registry, {"3": "flipped"})
        assert set_route(client, "sticky", {"1": 50, "2": 50}, shadows=["3"]).status_code == 200
        for key in keys[:60]:
            r = c.post(
                inv(gw, "sticky"),
                json=scoring_payload(iris_rows(1)),
                headers={"X-Routing-Key": key},
            )
            assert r.headers["x-model-version"] == first[key]
        # growing version 2 keeps every key that version 2 already had
        assert set_route(client, "sticky", {"1": 30, "2": 70}, shadows=["3"]).status_code == 200
        for key in keys[:60]:
            if first[key] == "2":
                r = c.post(
                    inv(gw, "sticky"),
                    json=scoring_payload(iris_rows(1)),
                    headers={"X-Routing-Key": key},
                )
                assert r.headers["x-model-version"] == "2"


def test_slow_shadow_does_not_move_primary_latency(gw, client, iris_registry):
    serve(
        client,
        "shadowed",
        iris_registry,
        {"1": "good", "2": "slow1s", "3": "flipped", "4": "good2"},
    )
    # the 1 s-per-call test model is row-independent by design: its copies may share calls
    # (batching auto would predict a custom pyfunc one copy at a time: 1 s each)
    uri = f"models:/{iris_registry['_name']}/{iris_registry['slow1s']}"
    assert load(client, "shadowed", "2", uri=uri, batching="on")["status"] == "loaded"
    assert set_route(client, "shadowed", {"1": 100}).status_code == 200
    fire(inv(gw, "shadowed"), 100, concurrency=4)  # warm up
    base = fire(inv(gw, "shadowed"), 400, concurrency=4)
    t0 = time.time()
    assert set_route(client, "shadowed", {"1": 100}, shadows=["2", "3", "4"]).status_code == 200
    gw.wait_ready(timeout=300)  # shadow workers started (each loads its model in its own process)
    shadowed = fire(inv(gw, "shadowed"), 400, concurrency=4)
    assert base.ok == 400 and shadowed.ok == 400
    p50_base = percentile(base.latencies(), 0.5)
    p50_shadow = percentile(shadowed.latencies(), 0.5)
    # a shadow in the request path would add >= 1000 ms to every answer
    assert max(shadowed.latencies()) < 900
    assert p50_shadow < 3 * p50_base + 20, (p50_base, p50_shadow)
    # the shadows did run, off the path, and were paired with the primary answers; a copy
    # is either answered or dropped (counted) when its shadow's queue is full
    deadline = time.time() + 30
    while time.time() < deadline:
        snap = stats(client, "shadowed", since=t0 - 1)
        dropped = client.get("/admin/state").json()["shadow_dropped"]
        s2 = arm(snap, "2", "shadow")
        if s2 and s2["requests"] + dropped.get("shadowed/2", 0) >= 400:
            break
        time.sleep(0.5)
    pairs = {(p["shadow_version"], p["primary_version"]): p for p in snap["pairs"]}
    for v, agree_all in (("3", False), ("4", True)):
        p = pairs[(v, "1")]
        assert p["pairs"] > 0 and p["pairs"] + dropped.get(f"shadowed/{v}", 0) == 400
        assert p["agree"] == (p["pairs"] if agree_all else 0)
        assert arm(snap, v, "shadow")["requests"] == p["pairs"]
    assert arm(snap, "2", "shadow")["requests"] + dropped.get("shadowed/2", 0) == 400
    assert arm(snap, "1", "primary")["requests"] >= 400


def test_full_shadow_queue_drops_and_counts(gw, client, iris_registry):
    serve(client, "drops", iris_registry, {"1": "good", "2": "slow1s"})
    assert set_route(client, "drops", {"1": 100}, shadows=["2"]).status_code == 200
    res = fire(inv(gw, "drops"), 300, concurrency=8)
    assert res.ok == 300  # the primary never fails because of its shadow
    dropped = client.get("/admin/state").json()["shadow_dropped"]["drops/2"]
    assert dropped > 0
    metrics = httpx.get(gw.url + "/metrics").text
    assert (
        f'model_gateway_shadow_dropped_total{{model="drops",version="2"}} {float(dropped)}'
        in metrics
        or ('model_gateway_shadow_dropped_total{model="drops",version="2"}' in metrics)
    )


def test_staging_slot_never_gets_live_traffic(gw, client, iris_registry):
    serve(client, "stage", iris_registry, {"1": "good", "2": "flipped"})
    assert set_route(client, "stage", {"1": 100}, staging="2").status_code == 200
    res = fire(inv(gw, "stage"), 500, concurrency=8)
    assert {r.headers["x-model-version"] for r in res.responses} == {"1"}
    r = client.post("/admin/models/stage/staging/invocations", json=scoring_payload(iris_rows(3)))
    assert (
        r.status_code == 200
        and r.headers["x-model-arm"] == "staging"
        and r.headers["x-model-version"] == "2"
    )
    assert (
        httpx.post(gw.url + "/admin/models/stage/staging/invocations", json={}).status_code == 401
    )
    snap = stats(client, "stage")
    assert arm(snap, "2", "staging")["requests"] == 1
    assert arm(snap, "2", "primary") is None


def test_weight_changes_under_load_lose_no_request_and_log_agrees(gw, client, iris_registry):
    serve(client, "churn", iris_registry, {"1": "good", "2": "good2", "3": "flipped"})
    assert set_route(client, "churn", {"1": 100}).status_code == 200
    total, changes = 20_000, 1000
    stop = threading.Event()
    done_changes = []
    errors = []

    def churn():
        rng = random.Random(7)
        with admin_client(gw) as c:
            gen = c.get("/admin/models/churn/route").json()["generation"]
            while len(done_changes) < changes and not stop.is_set():
                w = rng.randint(0, 100)
                r = c.put(
                    "/admin/models/churn/route",
                    json={
                        "generation": gen,
                        "weights": {"1": w, "2": 100 - w},
                        "shadows": ["3"] if w % 2 else [],
                    },
                )
                if r.status_code != 200:
                    errors.append(r.text)
                    return
                gen = r.json()["generation"]
                done_changes.append(gen)

    t = threading.Thread(target=churn)
    t.start()
    bodies = [orjson.dumps(scoring_payload(iris_rows(1, seed=i))) for i in range(200)]

    def make(i):
        return bodies[i % 200], ({"X-Routing-Key": f"k{i % 97}"} if i % 3 == 0 else {})

    res = asyncio.run(
        run_load(inv(gw, "churn"), make, total=total, concurrency=16, max_seconds=200)
    )
    # keep changing until the 1000 changes are in (they normally finish during the load)
    t.join(timeout=120)
    stop.set()
    assert not errors, errors[:3]
    assert len(done_changes) == changes
    assert not res.failures, res.failures[:3]
    assert len(res.responses) == total
    assert res.ok == total, {r.status for r in res.responses}
    # request-log rows equal requests answered; the snapshot agrees with the log
    snap = stats(client, "churn")  # flushes this replica first
    rows = [r for r in log_rows(gw.data_dir, "churn") if r[2] == "primary"]
    assert len(rows) == total
    assert len({r[0] for r in rows}) == total
    per_version = {}
    for _, v, _, status in rows:
        assert status == 200
        per_version[v] = per_version.get(v, 0) + 1
    assert {
        a["version"]: a["requests"] for a in snap["arms"] if a["arm"] == "primary"
    } == per_version
    for a in snap["arms"]:
        if a["arm"] == "primary":
            assert sum(a["latency"]["counts"].values()) == a["requests"]
    assert snap["generation"] == done_changes[-1]


def test_feedback_is_counted_for_the_version_that_answered(gw, client, iris_registry):
    serve(client, "fb", iris_registry, {"1": "good", "2": "flipped"})
    assert set_route(client, "fb", {"1": 50, "2": 50}).status_code == 200
    answered = {}
    with httpx.Client() as c:
        for i in range(40):
            r = c.post(inv(gw, "fb"), json=scoring_payload(iris_rows(1, seed=i)))
            answered[r.headers["x-request-id"]] = r.headers["x-model-version"]
    ids = list(answered)
    r = httpx.post(f"{gw.url}/models/fb/feedback", json={"request_id": ids[0], "outcome": True})
    assert r.status_code == 200 and r.json() == {"accepted": 1}
    items = [{"request_id": rid, "outcome": 0.5} for rid in ids[1:]] + [
        {"request_id": "nope", "outcome": 1}
    ]
    r = httpx.post(f"{gw.url}/models/fb/feedback", json={"feedback": items})
    assert r.status_code == 200 and r.json() == {"accepted": 39, "unknown": ["nope"]}
    r = httpx.post(f"{gw.url}/models/fb/feedback", json={"request_id": ids[0], "outcome": 1})
    assert r.json() == {"accepted": 0, "duplicates": [ids[0]]}
    # a client reusing a request id does not earn that id a second outcome
    again = httpx.post(
        inv(gw, "fb"), json=scoring_payload(iris_rows(1)), headers={"X-Request-Id": ids[0]}
    )
    assert again.status_code == 200 and again.headers["x-request-id"] == ids[0]
    r = httpx.post(f"{gw.url}/models/fb/feedback", json={"request_id": ids[0], "outcome": 1})
    assert r.json() == {"accepted": 0, "duplicates": [ids[0]]}
    assert (
        httpx.post(
            f"{gw.url}/models/fb/feedback", json={"request_id": "nope", "outcome": 1}
        ).status_code
        == 404
    )
    r = httpx.post(f"{gw.url}/models/fb/feedback", json={"request_id": ids[1], "outcome": "good"})
    assert r.status_code == 422 and "outcome" in r.json()["message"]
    snap = stats(client, "fb")
    for v in ("1", "2"):
        n = sum(1 for rid in ids if answered[rid] == v)
        expect = sum(1.0 if rid == ids[0] else 0.5 for rid in ids if answered[rid] == v)
        fb = arm(snap, v)["feedback"]
        assert fb["count"] == n and fb["sum"] == pytest.approx(expect)


def test_metrics_health_and_readiness(gw, client, iris_registry):
    serve(client, "met", iris_registry, {"1": "good"})
    assert set_route(client, "met", {"1": 100}).status_code == 200
    fire(inv(gw, "met"), 20, concurrency=2)
    stats(client, "met")  # forces a flush, so /metrics is current
    text = httpx.get(gw.url + "/metrics").text
    assert 'model_gateway_requests_total{arm="primary",model="met",version="1"} 20.0' in text
    assert "model_gateway_latency_seconds_bucket" in text
    assert httpx.get(gw.url + "/healthz").status_code == 200
    r = httpx.get(gw.url + "/readyz")
    assert r.status_code == 200, r.text


def test_numeric_outputs_and_abs_delta_pairs(gw, client, iris_registry):
    serve(client, "reg", iris_registry, {"1": "regressor", "2": "good"})
    assert set_route(client, "reg", {"1": 100}).status_code == 200
    fire(inv(gw, "reg"), 50, concurrency=2)
    snap = stats(client, "reg")
    a = arm(snap, "1")
    assert a["outputs"]["kind"] == "numeric" and sum(a["outputs"]["counts"].values()) == 50


def test_restart_restores_routes_and_reloads_versions(gateway_factory, iris_registry):
    g = gateway_factory()
    with admin_client(g) as c:
        serve(c, "keep", iris_registry, {"1": "good", "2": "flipped", "3": "good2"})
        assert (
            set_route(c, "keep", {"1": 70, "3": 30}, shadows=["2"], staging=None).status_code == 200
        )
        before = c.get("/admin/models/keep/route").json()
    g.restart()
    with admin_client(g) as c:
        g.wait_ready(timeout=300)
        assert c.get("/admin/models/keep/route").json() == before
        versions = c.get("/admin/state").json()["models"]["keep"]["versions"]
        assert {v: d["status"] for v, d in versions.items()} == {
            "1": "loaded",
            "2": "loaded",
            "3": "loaded",
        }
        r = post(g, "keep", scoring_payload(iris_rows(2)))
        assert r.status_code == 200 and r.headers["x-model-version"] in {"1", "3"}
        # and the route can still be changed from the restored generation
        assert set_route(c, "keep", {"1": 100}, generation=before["generation"]).status_code == 200


def test_upstream_version_is_forwarded(gw, client, iris_registry, gateway_factory):
    serve(client, "up-src", iris_registry, {"7": "flipped"})
    assert set_route(client, "up-src", {"7": 100}).status_code == 200
    front = gateway_factory()
    with admin_client(front) as c:
        doc = load(c, "up", "u1", upstream=inv(gw, "up-src"))
        assert doc["status"] == "loaded" and doc["kind"] == "upstream", doc
        doc = load(c, "up", "dead", upstream="http://127.0.0.1:9/invocations")
        assert doc["status"] == "failed" and "did not answer" in doc["error"], doc
        assert set_route(c, "up", {"u1": 100}).status_code == 200
        rows = iris_rows(4, seed=5)
        r = post(front, "up", scoring_payload(rows))
        direct = post(gw, "up-src", scoring_payload(rows))
        assert r.status_code == 200 and r.json() == direct.json()
        assert r.headers["x-model-version"] == "u1"
        r = post(front, "up", b'{"dataframe_split": {"columns": ["q"], "data": [[1]]}}')
        assert r.status_code == 400  # the upstream's rejection passes through
        snap = stats(c, "up")
        a = arm(snap, "u1")
        assert a["requests"] == 2 and a["rejected"] == 1 and a["errors"] == 0
