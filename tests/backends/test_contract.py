"""The contract every traffic router, deployer and metric source honours (issue #13).

One suite, run against each implementation: the real gateway over HTTP (router, deployer and
metric source), nginx routing to one MLServer per version (deployer) judged from a real
Prometheus, and the in-memory stack. A new implementation joins by adding a fixture
parameter that starts it and says how to play traffic through it; nothing else changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import requests
from support.models import iris_rows, scoring_payload
from support.prometheus import PrometheusProcess
from support.servers import GatewayProcess
from support.serving_stack import ServingStack
from support.slow_load import save_slow_model

from model_rollout.backends import (
    Deployer,
    MetricSource,
    Route,
    TrafficError,
    TrafficRouter,
    capabilities,
    catalog,
)
from model_rollout.backends.memory import MemoryStack
from model_rollout.backends.prometheus import FIRST_SCRAPE_WINDOW
from model_rollout.judge.snapshot import find_arm, find_pair
from model_rollout.orchestration.monitor import fill_weights

pytestmark = pytest.mark.timeout(300)

MODEL = "contract"
ROWS = iris_rows(20, seed=5)


@dataclass
class Stack:
    """One implementation under test, and how to send it live traffic."""

    name: str
    router: TrafficRouter
    deployer: Deployer
    metrics: MetricSource
    uri: str | None  # what deploy() loads
    play: Callable[[int], None]  # send n live requests of MODEL
    start_lag: float = 0.0  # seconds after a range's start before its counts begin


def start_range(stack: Stack) -> float:
    """A range start for the traffic played next: a sampling source (Prometheus) counts from
    the first scrapes after the start, so the traffic waits until those are behind it."""
    since = time.time() - 1.0
    time.sleep(max(since + stack.start_lag - time.time(), 0.0))
    return since


def wait_for(check: Callable[[], bool], what: str, budget: float = 90.0) -> None:
    deadline = time.monotonic() + budget
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {budget:.0f} s: {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory) -> str:
    return save_slow_model(tmp_path_factory.mktemp("contract-model"))


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory):
    g = GatewayProcess(tmp_path_factory.mktemp("contract-gw")).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def prometheus_process(gateway_process, tmp_path_factory):
    """A real Prometheus scraping the contract gateway every second."""
    p = PrometheusProcess(
        tmp_path_factory.mktemp("contract-prom"), [f"127.0.0.1:{gateway_process.port}"]
    )
    yield p.start()
    p.stop()


@pytest.fixture(scope="module")
def nginx_stack(tmp_path_factory):
    """nginx + Prometheus (file_sd of the MLServers the deployer starts)."""
    s = ServingStack(tmp_path_factory.mktemp("contract-nginx")).start()
    yield s
    s.stop()


def http_play(front_door: str, model: str) -> Callable[[int], None]:
    """Send n live requests of `model` through a front door (the gateway, nginx)."""
    http = requests.Session()

    def play(n: int) -> None:
        for i in range(n):
            body = scoring_payload([ROWS[i % len(ROWS)]])
            r = http.post(f"{front_door}/models/{model}/invocations", json=body, timeout=30)
            assert r.status_code == 200, r.text

    return play


def open_stack(name: str, request, monkeypatch, model_uri) -> Stack:
    """An implementation opened by name through the entry points like a policy does;
    "prometheus" is the gateway's router and deployer judged from Prometheus, "nginx" the
    nginx router and the MLServer deployer judged from Prometheus."""
    if name == "nginx":
        ns = request.getfixturevalue("nginx_stack")
        for k, v in ns.env().items():
            monkeypatch.setenv(k, v)
        model = f"{request.node.originalname.removeprefix('test_')}_{name}"[:100]
        deployer = catalog.open_backend("deployer", "mlserver")
        # one MLServer per version: stop this test's servers when it ends
        request.addfinalizer(lambda: [deployer.retire(model, v) for v in ("1", "2")])
        request.node.model = model
        return Stack(
            name,
            catalog.open_backend("router", "nginx"),
            deployer,
            catalog.open_backend(
                "metrics", "prometheus", None, {"preset": "mlserver", "scrape_interval": 1}
            ),
            model_uri,
            http_play(ns.url, model),
            (FIRST_SCRAPE_WINDOW + 1) * 1.0,
        )
    if name in ("gateway", "prometheus"):
        g = request.getfixturevalue("gateway_process")
        monkeypatch.setenv("MODEL_GATEWAY_URL", g.url)
        monkeypatch.setenv("MODEL_GATEWAY_TOKEN", g.token)
        model = f"{request.node.originalname.removeprefix('test_')}_{name}"  # fresh per test
        play = http_play(g.url, model)

        conn, uri, serving = "model_gateway_default", model_uri, "gateway"
        if name == "prometheus":
            prom = request.getfixturevalue("prometheus_process")
            monkeypatch.setenv("PROMETHEUS_URL", prom.url)
    else:
        MemoryStack.reset()
        model, conn, uri, serving = MODEL, "contract_memory", None, name
        mem = MemoryStack.named(conn)

        def play(n: int) -> None:
            mem.serve(model, n)

    request.node.model = model
    if name == "prometheus":
        metrics = catalog.open_backend("metrics", name, None, {"scrape_interval": 1})
        lag = (FIRST_SCRAPE_WINDOW + 1) * 1.0
    else:
        metrics, lag = catalog.open_backend("metrics", name, conn), 0.0
    return Stack(
        name,
        catalog.open_backend("router", serving, conn),
        catalog.open_backend("deployer", serving, conn),
        metrics,
        uri,
        play,
        lag,
    )


@pytest.fixture(params=["gateway", "nginx", "memory"])
def stack(request, monkeypatch, model_uri) -> Stack:
    """Routers and deployers: each implementation."""
    return open_stack(request.param, request, monkeypatch, model_uri)


@pytest.fixture(params=["gateway", "memory", "prometheus", "nginx"])
def metric_stack(request, monkeypatch, model_uri) -> Stack:
    """Metric sources: each implementation, Prometheus scraping the gateway or MLServer."""
    return open_stack(request.param, request, monkeypatch, model_uri)


@pytest.fixture
def model(request) -> str:
    request.getfixturevalue("stack" if "stack" in request.fixturenames else "metric_stack")
    return request.node.model


def two_versions(s: Stack, model: str) -> None:
    for v in ("1", "2"):
        s.deployer.deploy(model, v, uri=s.uri)


def total(snapshot: dict, version: str, arm: str = "primary") -> float:
    a = find_arm(snapshot, version, arm)
    return 0.0 if a is None else a.requests


# --- router ------------------------------------------------------------------------------
def test_a_model_without_a_route_has_generation_zero(stack, model):
    assert stack.router.route(model) == Route(generation=0)


def test_weights_apply_once_and_a_repeat_is_no_new_change(stack, model):
    two_versions(stack, model)
    first = stack.router.set_traffic(model, {"1": 90, "2": 10})
    assert first.weights == {"1": 90, "2": 10} and first.generation >= 1
    again = stack.router.set_traffic(model, {"1": 90, "2": 10})
    assert again.generation == first.generation  # a retried task changes nothing
    moved = stack.router.set_traffic(model, {"1": 50, "2": 50})
    assert moved.generation > first.generation
    assert stack.router.route(model).weights == {"1": 50, "2": 50}


def test_staging_slot_is_kept_unless_named(stack, model):
    two_versions(stack, model)
    stack.router.set_traffic(model, {"1": 100}, staging="2")
    kept = stack.router.set_traffic(model, {"1": 100}, ["2"])
    assert kept.staging == "2" and kept.shadows == ("2",)
    cleared = stack.router.set_traffic(model, {"1": 100}, [], staging=None)
    assert cleared.staging is None and cleared.shadows == ()


def test_wait_ready_returns_once_the_route_is_served_and_served_lists_it(stack, model):
    two_versions(stack, model)
    stack.router.set_traffic(model, {"1": 75, "2": 25})
    stack.router.wait_ready(model, timeout=120)
    served = stack.router.served()[model]
    assert served.route.weights == {"1": 75, "2": 25}
    assert served.versions == {"1": "loaded", "2": "loaded"}


# --- deployer ----------------------------------------------------------------------------
def test_staging_requests_reach_the_staging_version_only(stack, model):
    two_versions(stack, model)
    stack.router.set_traffic(model, {"1": 100}, staging="2")
    stack.router.wait_ready(model, timeout=120)
    predictions, ms = stack.deployer.invoke_staging(model, scoring_payload(ROWS[:3]))
    assert len(predictions) == 3 and ms >= 0
    snap = stack.metrics.snapshot(model, time.time() - 60)
    assert total(snap, "1") == 0  # nothing was live traffic


def test_retire_takes_an_unrouted_version_off_and_repeats_safely(stack, model):
    two_versions(stack, model)
    stack.router.set_traffic(model, {"1": 100})
    stack.deployer.retire(model, "2")
    stack.deployer.retire(model, "2")
    wait_for(lambda: "2" not in stack.router.served()[model].versions, "version 2 retired")
    assert stack.router.served()[model].versions == {"1": "loaded"}


# --- metric source -----------------------------------------------------------------------
def test_snapshot_counts_live_traffic_per_version_within_its_time_range(metric_stack, model):
    stack = metric_stack
    two_versions(stack, model)
    stack.router.set_traffic(model, {"1": 75, "2": 25})
    stack.router.wait_ready(model, timeout=120)
    before = start_range(stack)
    stack.play(40)
    wait_for(
        lambda: (
            total(stack.metrics.snapshot(model, before), "1")
            + total(stack.metrics.snapshot(model, before), "2")
            == 40
        ),
        "40 requests counted",
    )
    snap = stack.metrics.snapshot(model, before)
    assert snap.get("weights", {"1": 75, "2": 25}) == {"1": 75, "2": 25}  # when it knows them
    for v in ("1", "2"):
        arm = find_arm(snap, v, "primary")
        assert arm.problems == {}, arm.problems  # the judge reads it as it is
        assert arm.errors == 0 and arm.latency_total == arm.requests
    assert total(snap, "2") > 0 and total(snap, "1") > total(snap, "2")
    # a range that ended before the traffic holds none of it
    assert total(stack.metrics.snapshot(model, before - 60, before - 30), "1") == 0
    # the async twin (the judge's trigger) reads the same counts
    again = asyncio.run(stack.metrics.asnapshot(model, before))
    assert total(again, "1") == total(snap, "1") and total(again, "2") == total(snap, "2")


def test_shadow_copies_are_counted_and_paired(metric_stack, model):
    stack = metric_stack
    two_versions(stack, model)
    stack.router.set_traffic(model, {"1": 100}, ["2"])
    stack.router.wait_ready(model, timeout=120)
    before = start_range(stack)
    stack.play(10)

    def judged() -> dict:  # as the monitor reads it: with the stage's route
        return fill_weights(stack.metrics.snapshot(model, before), {"1": 100})

    wait_for(  # each version's server may be scraped at its own moment
        lambda: total(judged(), "2", "shadow") == 10 and total(judged(), "1") == 10,
        "10 requests and 10 shadow copies counted",
    )
    snap = judged()
    assert total(snap, "1") == 10 and total(snap, "2") == 0  # the shadow answered nobody
    if capabilities.SHADOW_PAIRING in type(stack.metrics).offered(
        getattr(stack.metrics, "options", None)
    ):
        wait_for(
            lambda: (
                (find_pair(stack.metrics.snapshot(model, before), "2", "1") or 0)
                and find_pair(stack.metrics.snapshot(model, before), "2", "1").pairs == 10
            ),
            "10 pairs counted",
        )


# --- what every implementation declares ---------------------------------------------------
def test_declared_capabilities_are_known_and_belong_to_the_role():
    for role in ("router", "deployer", "metrics"):
        for name in catalog.registered(role):
            declared = catalog.implementation(role, name).capabilities
            assert declared <= set(capabilities.DESCRIPTIONS), (role, name)
            assert catalog.capabilities(role, name), f"{name} as {role} declares nothing"


def test_an_unknown_model_or_version_is_an_error_naming_it(stack, model):
    with pytest.raises(TrafficError, match=model):
        stack.deployer.invoke_staging(model, scoring_payload(ROWS[:1]))


def test_orchestration_and_the_page_reach_serving_only_through_the_interfaces():
    """No module of orchestration/ or ui/ imports a particular backend or calls a gateway URL:
    what they do works on any router and metric source a policy names."""
    import ast
    from pathlib import Path

    import model_rollout

    root = Path(model_rollout.__file__).parent
    offenders = []
    for folder in ("orchestration", "ui"):
        for path in sorted((root / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    ("model_rollout.backends.gateway", "model_rollout.backends.memory")
                ):
                    offenders.append(f"{path.name}: imports {node.module}")
                if isinstance(node, ast.Constant) and "/admin/" in str(node.value):
                    offenders.append(f"{path.name}: calls {node.value!r}")
    assert offenders == []
