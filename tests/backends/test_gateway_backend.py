"""The gateway backend against a real gateway that restarts, freezes or is gone (issue #11).

A traffic change must survive a gateway that is slow or briefly unreachable: every call is
retried for a bounded time (the generation compare-and-set makes a repeated route write
safe), and only then fails, saying the gateway was unreachable and for how long.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests
from support.servers import GatewayProcess, free_port
from support.slow_load import save_slow_model

from model_rollout.backends import BackendUnreachable, TrafficError
from model_rollout.backends.gateway import GatewayBackend

pytestmark = pytest.mark.timeout(300)

MODEL = "be"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("backend-models")
    return {"fast": save_slow_model(root), "slow": save_slow_model(root, load_seconds=5)}


@pytest.fixture
def gw(tmp_path, models):
    """A gateway serving version 1 at 100%, version 2 loaded."""
    g = GatewayProcess(tmp_path / "gw").start()
    try:
        backend = GatewayBackend(g.url, g.token)
        backend.deploy(MODEL, "1", uri=models["fast"])
        backend.deploy(MODEL, "2", uri=models["fast"])
        backend.set_traffic(MODEL, {"1": 100})
        yield g
    finally:
        g.stop()


def served(g) -> dict:
    return requests.get(f"{g.url}/admin/models/{MODEL}/route", headers=g.auth, timeout=30).json()


def test_deploy_waits_for_the_load_and_names_its_error(gw, models, tmp_path):
    backend = GatewayBackend(gw.url, gw.token)
    backend.deploy(MODEL, "3", uri=models["slow"])  # the PUT answers 202; deploy polls
    r = requests.get(f"{gw.url}/admin/models/{MODEL}/versions/3", headers=gw.auth, timeout=30)
    assert r.json()["status"] == "loaded"
    with pytest.raises(TrafficError, match="could not load version 4 .*no-model-here"):
        backend.deploy(MODEL, "4", uri=str(tmp_path / "no-model-here"))


def test_a_load_that_fails_on_a_half_imported_library_is_tried_again(gw, tmp_path):
    """Two versions loading at once can both be first to import a flavor's library; the one
    that sees it half-initialised ("module 'skops' has no attribute 'io'") loads again."""
    backend = GatewayBackend(gw.url, gw.token)
    backend.deploy(MODEL, "5", uri=save_slow_model(tmp_path / "ff", fail_first_load=True))
    r = requests.get(f"{gw.url}/admin/models/{MODEL}/versions/5", headers=gw.auth, timeout=30)
    assert r.json()["status"] == "loaded"


def test_a_traffic_change_survives_a_gateway_restart(gw):
    gw.stop()
    restart = threading.Timer(3.0, gw.start)
    restart.start()
    try:
        route = GatewayBackend(gw.url, gw.token, retry_for=120).set_traffic(
            MODEL, {"1": 50, "2": 50}
        )
    finally:
        restart.join()
    assert route.generation == 2 and route.weights == {"1": 50, "2": 50}
    # the restarted gateway was still reloading its versions: committed, served once loaded
    GatewayBackend(gw.url, gw.token).wait_ready(MODEL, timeout=120)
    assert served(gw)["generation"] == 2 and served(gw)["weights"] == {"1": 50, "2": 50}


def test_a_write_retried_after_a_lost_answer_is_applied_once(gw):
    """The gateway frozen (SIGSTOP) longer than a call's timeout: the first PUT waits in its
    socket, the client gives up on it and tries again; once thawed the gateway gets both."""
    backend = GatewayBackend(gw.url, gw.token, timeout=1.0, retry_for=60)
    os.kill(gw.proc.pid, signal.SIGSTOP)
    thaw = threading.Timer(4.0, os.kill, (gw.proc.pid, signal.SIGCONT))
    thaw.start()
    try:
        route = backend.set_traffic(MODEL, {"1": 80, "2": 20})
    finally:
        thaw.join()
        os.kill(gw.proc.pid, signal.SIGCONT)
    assert route.weights == {"1": 80, "2": 20}
    time.sleep(1.0)  # anything still queued in the gateway's sockets has been answered
    assert served(gw) == {
        "generation": 2,
        "weights": {"1": 80, "2": 20},
        "shadows": [],
        "staging": None,
    }


def test_an_unreachable_gateway_fails_after_the_budget_saying_so():
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    backend = GatewayBackend(url, "t", retry_for=3.0)
    t0 = time.monotonic()
    with pytest.raises(BackendUnreachable) as err:
        backend.set_traffic(MODEL, {"1": 100})
    waited = time.monotonic() - t0
    assert f"gateway {url} unreachable for" in str(err.value)
    assert "GET /admin/models/be/route" in str(err.value)
    assert 2.0 <= waited < 3.0 + backend.timeout  # it retried, within its budget
    assert isinstance(err.value, TrafficError)  # what the tasks already handle
