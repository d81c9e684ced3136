"""The admin API never waits for a model load or a process start (issue #11).

A version that is still loading must not hold up an admin call: `PUT .../versions/...` answers
at once (202) and the load is watched through `GET .../versions/...`; a route naming a version
still loading is committed and served the moment the load ends (202), and a later route that
names only loaded versions (a rollback) is served at once and supersedes it.

Whether a call waited is read from the answers themselves, not from a clock: the models here
sleep LOAD_SECONDS in `load_context`, and every answer below comes back while the gateway
still reports that load under way.
"""

from __future__ import annotations

import httpx
import pytest
from faults.helpers import readyz_reasons, wait_until
from support.gateway_api import admin_client, fire, load, set_route, wait_loaded
from support.servers import GatewayProcess
from support.slow_load import save_slow_model

pytestmark = pytest.mark.timeout(300)

LOAD_SECONDS = 20.0  # far longer than any admin call may take on a busy machine


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("control-plane-models")
    return {
        "fast": save_slow_model(root),
        "slow": save_slow_model(root, load_seconds=LOAD_SECONDS),
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = GatewayProcess(tmp_path_factory.mktemp("control-plane-gateway")).start()
    yield g
    g.stop()


def version_state(c: httpx.Client, model: str, version: str) -> str:
    return c.get(f"/admin/models/{model}/versions/{version}").json()["status"]


def test_a_version_put_answers_at_once_and_its_load_is_watched(gw, models):
    with admin_client(gw) as c:
        r = c.put("/admin/models/cp-load/versions/1", json={"uri": models["slow"]})
        assert r.status_code == 202, r.text
        doc = r.json()
        assert doc.pop("batching")["mode"] == "auto"  # in-process versions say their batching
        assert doc == {
            "model": "cp-load",
            "version": "1",
            "source": models["slow"],
            "kind": "pyfunc",
            "status": "loading",
            "error": None,
        }
        assert version_state(c, "cp-load", "1") == "loading"  # the answer did not wait
        # the same PUT again while it loads: no second load, the same answer
        again = c.put("/admin/models/cp-load/versions/1", json={"uri": models["slow"]})
        assert again.status_code == 202 and again.json()["status"] == "loading"
        # another source for a version being loaded is a conflict, not a second load
        other = c.put("/admin/models/cp-load/versions/1", json={"uri": models["fast"]})
        assert other.status_code == 409 and "being loaded" in other.json()["message"]
        assert wait_loaded(c, "cp-load", "1", timeout=LOAD_SECONDS + 120)["status"] == "loaded"
        # once loaded, a repeated PUT is a 200 and loads nothing
        r = c.put("/admin/models/cp-load/versions/1", json={"uri": models["slow"]})
        assert r.status_code == 200 and r.json()["status"] == "loaded"


def test_a_route_naming_a_loading_version_is_served_once_it_loaded(gw, models):
    model = "cp-pending"
    with admin_client(gw) as c:
        assert load(c, model, "1", models["fast"])["status"] == "loaded"
        assert set_route(c, model, {"1": 100}).status_code == 200
        assert c.put(f"/admin/models/{model}/versions/2", json={"uri": models["slow"]}).is_success
        r = set_route(c, model, {"1": 50, "2": 50}, generation=1)
        assert r.status_code == 202, r.text
        assert r.json() == {
            "generation": 2,
            "weights": {"1": 50, "2": 50},
            "shadows": [],
            "staging": None,
            "loading": ["2"],
        }
        # served: still generation 1; committed and waiting: generation 2
        route = c.get(f"/admin/models/{model}/route").json()
        assert route["generation"] == 1 and route["weights"] == {"1": 100}, route
        assert route["pending"]["generation"] == 2 and route["pending"]["loading"] == ["2"]
        assert version_state(c, model, "2") == "loading"
        assert f"{model}/2: loading, route generation 2 waits for it" in readyz_reasons(gw)
        res = fire(f"{gw.url}/models/{model}/invocations", 50, concurrency=2)
        assert res.ok == 50 and {x.headers["x-model-version"] for x in res.responses} == {"1"}
        # a write must build on the committed generation, not on the one served
        assert set_route(c, model, {"1": 100}, generation=1).status_code == 409

        def served():
            doc = c.get(f"/admin/models/{model}/route").json()
            return doc if doc["generation"] == 2 else None

        route = wait_until("generation 2 served", served, timeout=LOAD_SECONDS + 120)
        assert route == {
            "generation": 2,
            "weights": {"1": 50, "2": 50},
            "shadows": [],
            "staging": None,
        }
        assert not [x for x in readyz_reasons(gw) if x.startswith(f"{model}/")]
        res = fire(f"{gw.url}/models/{model}/invocations", 200, concurrency=2)
        assert res.ok == 200 and {x.headers["x-model-version"] for x in res.responses} == {"1", "2"}


def test_a_rollback_is_served_at_once_and_supersedes_a_route_waiting_for_a_load(gw, models):
    model = "cp-rollback"
    with admin_client(gw) as c:
        assert load(c, model, "1", models["fast"])["status"] == "loaded"
        assert set_route(c, model, {"1": 100}).status_code == 200
        assert c.put(f"/admin/models/{model}/versions/3", json={"uri": models["slow"]}).is_success
        assert set_route(c, model, {"1": 90, "3": 10}, generation=1).status_code == 202
        r = set_route(c, model, {"1": 100}, generation=2)  # the rollback
        assert r.status_code == 200, r.text
        assert r.json() == {"generation": 3, "weights": {"1": 100}, "shadows": [], "staging": None}
        assert c.get(f"/admin/models/{model}/route").json() == r.json()  # served, nothing pending
        assert version_state(c, model, "3") == "loading"  # ... while version 3 still loads
        # the load ending later does not bring back the route it superseded
        assert wait_loaded(c, model, "3", timeout=LOAD_SECONDS + 120)["status"] == "loaded"
        assert c.get(f"/admin/models/{model}/route").json() == r.json()
        res = fire(f"{gw.url}/models/{model}/invocations", 100, concurrency=2)
        assert res.ok == 100 and {x.headers["x-model-version"] for x in res.responses} == {"1"}


def test_a_route_naming_a_version_that_failed_or_is_unknown_is_refused(gw, tmp_path):
    model = "cp-refused"
    with admin_client(gw) as c:
        assert load(c, model, "1", str(tmp_path / "no-model-here"))["status"] == "failed"
        r = set_route(c, model, {"1": 100})
        assert r.status_code == 422
        assert "version 1 failed to load" in r.json()["message"], r.text
        r = set_route(c, model, {"9": 100})
        assert r.status_code == 422 and "['9']" in r.json()["message"], r.text
        assert c.get(f"/admin/models/{model}/route").json()["generation"] == 0
