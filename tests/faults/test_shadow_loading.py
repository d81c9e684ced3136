"""A shadow whose worker process is still loading (or failed to start) is not a failing shadow.

The bug this guards against: the shadow worker said "loaded" as soon as it was created, so the
copies mirrored while its process started and loaded the model waited for that load, timed
out (504) and were recorded as errors of the shadow version, i.e. against the candidate. Now
the worker says "loading" until the model is loaded in its process, and the mirror drops those
copies and counts them (`model_gateway_shadow_unready_dropped_total`).

The shadow model here takes LOAD_SECONDS to load in a worker process, longer than the
gateway's predict timeout, so with the bug the first copies time out whatever the machine's
speed.
"""

from __future__ import annotations

import time

import pytest
from support.gateway_api import admin_client, arm, fire, load, serve, set_route, stats
from support.models import IRIS_COLUMNS, PIP_REQUIREMENTS, _fitted, iris
from support.servers import GatewayProcess

from .helpers import gateway_evidence, metric, readyz_reasons, scrape, wait_until

pytestmark = pytest.mark.timeout(300)

REGISTERED = "faults-shadow"
LOAD_SECONDS = 6.0  # in the shadow's worker process only
PREDICT_TIMEOUT = 3.0  # < LOAD_SECONDS: a copy sent to a loading worker would time out

MODEL_CODE = '''
"""Predicts iris classes by petal length; in a worker process, slow to load or refusing to."""
import multiprocessing
import time

import mlflow
from mlflow.pyfunc import PythonModel


class PetalRule(PythonModel):
    def load_context(self, context):
        config = context.model_config or {}
        if multiprocessing.parent_process() is None:
            return  # the gateway's own process: loads at once
        if config.get("refuse_in_worker"):
            raise RuntimeError("this test model refuses to load in a worker process")
        time.sleep(float(config.get("worker_load_seconds", 0)))

    def predict(self, context, model_input, params=None):
        return [0 if x < 2.5 else 1 if x < 4.9 else 2 for x in model_input["petal_length"]]


mlflow.models.set_model(PetalRule())
'''


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mlflow_server, iris_registry):
    """One gateway for both tests; shadows at nice 0 so a busy machine cannot starve them."""
    args = ["--predict-timeout", str(PREDICT_TIMEOUT), "--shadow-nice", "0"]
    g = GatewayProcess(
        tmp_path_factory.mktemp("gateway"), tracking_uri=mlflow_server, extra_args=args
    ).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def shadow_models(mlflow_server, tmp_path_factory) -> dict[str, str]:
    """Model URIs: "slow" (LOAD_SECONDS to load in a worker), "refuses" (fails to, there)."""
    import mlflow
    from mlflow.models import infer_signature

    code = tmp_path_factory.mktemp("shadow-model") / "petal_rule.py"
    code.write_text(MODEL_CODE)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    mlflow.set_experiment("model_rollout_faults")
    X, _ = iris()
    signature = infer_signature(X[IRIS_COLUMNS], _fitted().predict(X))
    uris = {}
    for label, config in (
        ("slow", {"worker_load_seconds": LOAD_SECONDS}),
        ("refuses", {"refuse_in_worker": True}),
    ):
        with mlflow.start_run(run_name=f"{REGISTERED}-{label}"):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                model_config=config,
                signature=signature,
                pip_requirements=PIP_REQUIREMENTS,
                registered_model_name=REGISTERED,
            )
        uris[label] = f"models:/{REGISTERED}/{info.registered_model_version}"
    return uris


def serve_candidate(gw, c, model: str, registry: dict, candidate_uri: str) -> str:
    """Version 1 the good iris model, version 2 `candidate_uri` (both loaded in the gateway's
    own process); returns the model's invocations URL."""
    serve(c, model, registry, {"1": "good"})
    assert load(c, model, "2", candidate_uri)["status"] == "loaded"
    return f"{gw.url}/models/{model}/invocations"


def shadow_dropped(c, model: str) -> int:
    return c.get("/admin/state").json()["shadow_dropped"].get(f"{model}/2", 0)


def test_shadow_copies_are_dropped_not_failed_while_its_worker_loads(
    gw, iris_registry, shadow_models
):
    model = "faults-shadow-slow"
    with gateway_evidence(gw):
        with admin_client(gw) as c:
            url = serve_candidate(gw, c, model, iris_registry, shadow_models["slow"])
            assert set_route(c, model, {"1": 100}).status_code == 200
            assert fire(url, 20, concurrency=2).ok == 20  # warm
            t0 = time.time()
            assert set_route(c, model, {"1": 100}, shadows=["2"]).status_code == 200
            # its worker process is loading the model: /readyz says so, as must the mirror
            assert f"{model}/2: shadow worker starting" in readyz_reasons(gw)
            sent, rounds, deadline = 0, 0, time.monotonic() + 180
            while readyz_reasons(gw):  # traffic all the while the worker loads
                assert time.monotonic() < deadline, readyz_reasons(gw)
                sent += len(fire(url, 40, concurrency=4).responses)
                rounds += 1
            sent += len(fire(url, 200, concurrency=4).responses)  # and once loaded

            def settled():
                snap = stats(c, model, since=t0 - 1)
                dropped = shadow_dropped(c, model)
                shadow = arm(snap, "2", "shadow") or {"requests": 0, "errors": 0}
                return (shadow, dropped) if shadow["requests"] + dropped >= sent else None

            shadow, dropped = wait_until("every copy answered or dropped", settled, timeout=60)
        unready = metric(scrape(gw), "model_gateway_shadow_unready_dropped_total", model=model)
        print(
            f"\nshadow loading {LOAD_SECONDS:g} s (predict timeout {PREDICT_TIMEOUT:g} s): "
            f"{sent} copies, {dropped} dropped while loading ({rounds} rounds of traffic), "
            f"{shadow['requests']} predicted, {shadow['errors']} shadow errors"
        )
        assert rounds >= 1 and dropped > 0
        assert unready == dropped  # every drop was for the worker loading, none for a full queue
        assert shadow["errors"] == 0  # nothing charged to the candidate for its worker's start
        assert shadow["requests"] + dropped == sent and shadow["requests"] >= 200


def test_shadow_worker_that_cannot_load_is_failed_and_its_copies_dropped(
    gw, iris_registry, shadow_models
):
    model = "faults-shadow-refuses"
    with gateway_evidence(gw):
        with admin_client(gw) as c:
            url = serve_candidate(gw, c, model, iris_registry, shadow_models["refuses"])
            assert set_route(c, model, {"1": 100}, shadows=["2"]).status_code == 200

            def failed():
                why = [r for r in readyz_reasons(gw) if r.startswith(f"{model}/2: shadow worker")]
                return why if why and "failed to load" in why[0] else None

            why = wait_until("/readyz to report the failed worker", failed, timeout=180)
            assert fire(url, 100, concurrency=4).ok == 100  # the primary never notices

            def all_dropped():
                n = shadow_dropped(c, model)
                return n if n >= 100 else None

            assert wait_until("copies dropped", all_dropped, timeout=30) == 100
            assert arm(stats(c, model), "2", "shadow") is None  # no result, so no error, recorded
        assert metric(scrape(gw), "model_gateway_shadow_unready_dropped_total", model=model) == 100
        assert why[0].startswith(f"{model}/2: shadow worker failed to load the model: "), why
        assert "this test model refuses to load in a worker process" in why[0], why


def _forkserver_and_workers(gw) -> tuple:
    """The gateway's forkserver process and the shadow workers forked from it."""
    import psutil

    procs = psutil.Process(gw.proc.pid).children(recursive=True)
    forked = [p for p in procs if "multiprocessing.forkserver" in " ".join(p.cmdline())]
    server = [p for p in forked if p.ppid() not in {q.pid for q in forked}]
    assert len(server) == 1, [(p.pid, p.ppid(), p.cmdline()[:3]) for p in procs]
    return server[0], [p for p in forked if p.ppid() == server[0].pid]


def test_a_lost_shadow_worker_drops_its_copies_and_a_crashed_one_counts_them(
    gw, iris_registry, shadow_models
):
    """Two ways a worker goes away. Its forkserver killed (nothing the model did; the pool
    sees the worker's status pipe close): copies dropped, no shadow error, a new worker comes
    back. The worker itself killed by a signal (as a crash in the model's native code or the
    OOM killer would): the copies it held count as the shadow version's errors."""
    import signal

    model = "faults-shadow-lost"
    with gateway_evidence(gw):
        with admin_client(gw) as c:
            url = serve_candidate(gw, c, model, iris_registry, shadow_models["slow"])
            assert set_route(c, model, {"1": 100}, shadows=["2"]).status_code == 200

            def starting() -> list[str]:  # other tests' models may stay unready (refuses)
                return [r for r in readyz_reasons(gw) if r.startswith(f"{model}/")]

            def ready_with(n: int):
                if starting():
                    return None
                assert fire(url, n, concurrency=2).ok == n
                return True

            wait_until("the shadow worker to load", lambda: ready_with(1), timeout=180)
            t0 = time.time()
            server, workers = _forkserver_and_workers(gw)
            assert workers, "no shadow worker process"
            server.kill()
            server.wait(30)
            sent, deadline = 0, time.monotonic() + 180
            while True:  # traffic until the worker is back
                sent += len(fire(url, 20, concurrency=2).responses)
                if not starting() and shadow_dropped(c, model) > 0:
                    break
                assert time.monotonic() < deadline, starting()
            sent += len(fire(url, 50, concurrency=2).responses)

            def settled():
                shadow = arm(stats(c, model, since=t0), "2", "shadow") or {"requests": 0}
                dropped = shadow_dropped(c, model)
                return (shadow, dropped) if shadow["requests"] + dropped >= sent else None

            shadow, dropped = wait_until("every copy answered or dropped", settled, timeout=60)
            assert shadow["errors"] == 0 and dropped > 0, (shadow, dropped)
            assert shadow["requests"] >= 50, shadow  # the new worker predicts again

            # now the worker itself, by a signal
            _, workers = _forkserver_and_workers(gw)
            assert len(workers) == 1, workers
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(30)

            def charged():
                fire(url, 5, concurrency=1)
                shadow = arm(stats(c, model), "2", "shadow")  # none before: asserted above
                return shadow if shadow and shadow["errors"] > 0 else None

            shadow = wait_until("the crash's copies counted", charged, timeout=60)
        assert "shadow worker faults-shadow-lost/2 died" in gw.log.read_text()
        print(f"\nlost worker: {sent} copies, {dropped} dropped, crashed worker: {shadow}")
