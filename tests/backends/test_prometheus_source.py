"""The Prometheus metric source against a real Prometheus scraping the real gateway (issue #13).

What the judge reads through Prometheus must be what the gateway counted: the same requests,
errors, outcomes and (re-binned into the exporter's buckets) latency per version, for any
time range, across a gateway restart (its counters start again from zero).
"""

from __future__ import annotations

import asyncio
import time

import pytest
import requests
from support.models import iris_rows, scoring_payload
from support.prometheus import PrometheusProcess
from support.servers import GatewayProcess
from support.slow_load import save_slow_model

from model_rollout.backends.gateway import GatewayBackend
from model_rollout.backends.prometheus import FIRST_SCRAPE_WINDOW, PrometheusSource
from model_rollout.judge import JudgeConfig, evaluate
from model_rollout.judge.snapshot import find_arm

pytestmark = pytest.mark.timeout(600)

MODEL = "prom"
ROWS = iris_rows(30, seed=7)
BUDGET = 90.0  # seconds a scrape may take to show counts on a busy machine
SCRAPE = 1.0  # the test Prometheus' scrape interval (PrometheusProcess)
OPTIONS = {"scrape_interval": SCRAPE}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("prom-stack")
    gw = GatewayProcess(root / "gw").start()
    prom = None
    try:
        backend = GatewayBackend(gw.url, gw.token)
        uri = save_slow_model(root / "model")
        for v in ("1", "2"):
            backend.deploy(MODEL, v, uri=uri)
        backend.set_traffic(MODEL, {"1": 50, "2": 50})
        backend.wait_ready(MODEL, timeout=120)
        prom = PrometheusProcess(root / "prom", [f"127.0.0.1:{gw.port}"]).start()
        yield gw, prom, backend
    finally:
        if prom is not None:
            prom.stop()
        gw.stop()


def play(gw, n: int, outcome: float | None = None) -> None:
    with requests.Session() as s:
        for i in range(n):
            r = s.post(
                f"{gw.url}/models/{MODEL}/invocations",
                json=scoring_payload([ROWS[i % len(ROWS)]]),
                timeout=30,
            )
            assert r.status_code == 200, r.text
            if outcome is not None:
                rid = r.headers["x-request-id"]
                fb = s.post(
                    f"{gw.url}/models/{MODEL}/feedback",
                    json={"request_id": rid, "outcome": outcome},
                    timeout=30,
                )
                assert fb.status_code == 200, fb.text


def per_version(snap: dict) -> dict[str, tuple]:
    out = {}
    for v in ("1", "2"):
        a = find_arm(snap, v, "primary")
        fb = (a.feedback.count, round(a.feedback.total, 6)) if a and a.feedback else (0, 0)
        out[v] = (a.requests, a.errors, a.latency_total, *fb) if a else (0, 0, 0, 0, 0)
    return out


def counters_of(per: dict[str, tuple]) -> dict[str, tuple]:
    """(requests, errors, feedback count, feedback sum) per version: the counter series."""
    return {v: (x[0], x[1], x[3], x[4]) for v, x in per.items()}


def counters(snap: dict) -> dict[str, tuple]:
    return counters_of(per_version(snap))


def until_equal(read, want, what: str):
    """Wait (generously) until the Prometheus reading equals the gateway's counts."""
    deadline = time.monotonic() + BUDGET
    got = None
    while time.monotonic() < deadline:
        got = read()
        if got == want:
            return got
        time.sleep(0.5)
    raise AssertionError(f"{what}: Prometheus says {got}, the gateway {want}")


def quiet_point(source) -> float:
    """A `since` with no traffic around it, as a rollout stage has under one route: the time
    of a scrape taken after everything so far, returned once the next scrape interval is
    over (the source counts a range from the first scrape after its start)."""
    mark = time.time()
    deadline = time.monotonic() + BUDGET
    while (as_of := source.snapshot(MODEL, mark - 60).get("as_of") or 0) <= mark:
        assert time.monotonic() < deadline, "Prometheus did not scrape the gateway"
        time.sleep(0.25)
    time.sleep(max(as_of + SCRAPE + 0.2 - time.time(), 0.0))
    return as_of


def test_prometheus_counts_what_the_gateway_counted(stack):
    gw, prom, backend = stack
    source = PrometheusSource(prom.url, OPTIONS)
    # no traffic of the model yet, and the range's first scrapes (where it starts counting)
    # are behind us: everything played now is in it
    t0 = time.time() - (FIRST_SCRAPE_WINDOW + 1) * SCRAPE
    play(gw, 40, outcome=1.0)
    want = per_version(backend.snapshot(MODEL, t0))
    assert sum(x[0] for x in want.values()) == 40
    until_equal(lambda: per_version(source.snapshot(MODEL, t0)), want, "since t0")
    snap = source.snapshot(MODEL, t0)
    assert snap["schema"] == 2 and "weights" not in snap  # the route is the router's to say
    latency = next(a for a in snap["arms"] if a["version"] == "1")["latency"]
    assert latency["bounds_ms"][-1] is None and sum(latency["counts"]) == want["1"][2]
    # the async twin (the judge's trigger) reads the same
    assert per_version(asyncio.run(source.asnapshot(MODEL, t0))) == want
    # the judge reads it (with the weights the traffic task applied)
    v = evaluate(
        {**snap, "weights": {"1": 50, "2": 50}},
        baseline="1",
        candidate="2",
        mode="canary",
        config=JudgeConfig(min_samples=10),
    )
    assert v.status != "degraded" and "latency" in v.metrics
    assert "invalid" not in (v.metrics["latency"].reason or "")


def test_a_range_holds_only_its_traffic_and_survives_a_gateway_restart(stack):
    gw, prom, backend = stack
    source = PrometheusSource(prom.url, OPTIONS)
    t0 = quiet_point(source)
    play(gw, 20)
    first = per_version(backend.snapshot(MODEL, t0))
    assert sum(x[0] for x in first.values()) == 20
    until_equal(lambda: per_version(source.snapshot(MODEL, t0)), first, "first burst")
    t_mid = quiet_point(source)  # the burst is wholly before t_mid
    gw.restart()  # its /metrics counters start again from zero
    backend.wait_ready(MODEL, timeout=120)
    play(gw, 20)
    second = counters(backend.snapshot(MODEL, t_mid))
    assert sum(x[0] for x in second.values()) == 20
    until_equal(lambda: counters(source.snapshot(MODEL, t_mid)), second, "after the restart")
    both = {
        v: tuple(a + b for a, b in zip(counters_of(first)[v], second[v], strict=True))
        for v in first
    }
    until_equal(lambda: counters(source.snapshot(MODEL, t0)), both, "across the restart")
    # the latency histogram is other series than the counter: across a restart it was once
    # one request off (CI, 2026-12-01), never more
    for v, (requests_, _, latency, *_) in per_version(source.snapshot(MODEL, t0)).items():
        assert abs(latency - requests_) <= 1, (v, requests_, latency)
    # a finished range read later is the same
    assert per_version(source.snapshot(MODEL, t0, t_mid)) == first


def test_a_bad_url_or_query_is_an_error_naming_prometheus(stack):
    _, prom, _ = stack
    from model_rollout.backends import BackendUnreachable, TrafficError

    with pytest.raises(BackendUnreachable, match="Prometheus http://127.0.0.1:1"):
        PrometheusSource("http://127.0.0.1:1", timeout=2).snapshot(MODEL, time.time() - 60)
    custom = {"preset": "custom", "requests": "x", "model_label": "m", "version_label": "v"}
    with pytest.raises(ValueError, match="needs requests"):
        PrometheusSource(prom.url, {"preset": "custom"})
    bad = PrometheusSource(prom.url, {**custom, "selector": "nope"})
    with pytest.raises(TrafficError, match="refused"):
        bad.snapshot(MODEL, time.time() - 60)


def test_a_stage_counts_only_the_traffic_of_its_own_route(stack):
    """Traffic keeps flowing while the route changes from 100/0 to 50/50, as between two
    stages: the range from the change holds no request the previous route answered (else the
    new stage's split reads skewed and fails the sample-ratio check), and at most a scrape
    interval of its own."""
    import threading

    gw, prom, backend = stack
    source = PrometheusSource(prom.url, OPTIONS)
    backend.set_traffic(MODEL, {"1": 100})
    stop = threading.Event()

    def keep_playing():
        with requests.Session() as s:
            for i in range(20_000):  # bounded; ~10 s at this machine's pace
                if stop.is_set():
                    return
                s.post(
                    f"{gw.url}/models/{MODEL}/invocations",
                    json=scoring_payload([ROWS[i % len(ROWS)]]),
                    timeout=30,
                )

    player = threading.Thread(target=keep_playing)
    player.start()
    try:
        time.sleep(3)
        backend.set_traffic(MODEL, {"1": 50, "2": 50})
        changed = time.time()
        time.sleep(4)
    finally:
        stop.set()
        player.join(timeout=60)
    ended = time.time()
    quiet_point(source)  # every request is scraped
    exact = per_version(backend.snapshot(MODEL, changed, ended + 1))  # whole seconds after
    got = per_version(source.snapshot(MODEL, changed, ended + 1))
    # no request of the 100/0 route, and of its own at most what the gateway counted
    assert got["1"][0] <= exact["1"][0] and got["2"][0] <= exact["2"][0], (got, exact)
    assert got["1"][0] + got["2"][0] >= 100, (got, exact)  # it did count the stage
    share = got["2"][0] / (got["1"][0] + got["2"][0])
    assert 0.4 < share < 0.6, (share, got)
