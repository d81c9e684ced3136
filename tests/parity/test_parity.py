"""The gateway answers exactly like `mlflow models serve`, alone and under concurrency.

For every model kind of `catalogue.py`, the same requests go to a real `mlflow models serve`
of the model and to the real gateway serving it (batching `auto`): every successful answer
must be byte-identical, every status code the same, and every error code the same where
mlflow answers JSON. Under concurrency the reference is mlflow's answer to the request sent
alone: coalescing must never change an answer, whatever other requests arrive with it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
import requests
from catalogue import payloads
from support.gateway_api import load
from support.servers import GatewayProcess

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

KINDS = (
    "iris",
    "mixed",
    "regressor",
    "forest",
    "params",
    "tensor",
    "frame_out",
    "dict_out",
    "batch_dep",
    "no_sig",
    "type_hint",
)
CLIENTS = 24


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def send(session: requests.Session, url: str, body: bytes, ctype: str) -> Answer:
    """POST one request. mlflow's server closes the connection after an unhandled error (its
    bare 500): a request that finds the kept-alive connection gone is sent again once."""
    for attempt in (1, 2):
        try:
            r = session.post(url, data=body, headers={"Content-Type": ctype}, timeout=120)
            return Answer(r.status_code, r.content)
        except requests.ConnectionError:
            session.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def error_code(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get("error_code") if isinstance(doc, dict) else None


def difference(mlflow: Answer, gateway: Answer) -> str | None:
    """How the gateway's answer differs from mlflow's, or None."""
    if mlflow.status != gateway.status:
        return f"status {gateway.status}, mlflow {mlflow.status}: {gateway.body[:300]!r}"
    if mlflow.status == 200:
        if mlflow.body != gateway.body:
            return f"body {gateway.body[:300]!r}, mlflow {mlflow.body[:300]!r}"
        return None
    want = error_code(mlflow.body)
    if want is not None and error_code(gateway.body) != want:
        return f"error_code {error_code(gateway.body)}, mlflow {want}: {gateway.body[:300]!r}"
    return None


def gateway_url(gw, name: str) -> str:
    return f"{gw.url}/models/{name}/invocations"


def batching_of(gw, name: str) -> dict:
    r = httpx.get(f"{gw.url}/admin/state", headers=gw.auth, timeout=30)
    return r.json()["models"][name]["versions"]["1"]["batching"]


def references(url: str, cases: list[tuple[bytes, str]]) -> list[Answer]:
    """mlflow's answers, one request at a time."""
    with requests.Session() as s:
        return [send(s, url, body, ctype) for body, ctype in cases]


@pytest.mark.parametrize("name", KINDS)
def test_sequential_answers_are_mlflows(name, kinds, mlflow_serve, parity_gateway):
    cases = payloads(kinds[name], seed=1, singles=3, multis=3)
    want = references(mlflow_serve[name], cases)
    with requests.Session() as s:
        got = [send(s, gateway_url(parity_gateway, name), b, c) for b, c in cases]
    diffs = [
        (c[1], c[0][:160], d)
        for c, w, g in zip(cases, want, got, strict=True)
        if (d := difference(w, g))
    ]
    statuses = Counter(w.status for w in want)
    assert statuses[200] >= 10 and len(statuses) > 1, statuses  # both kinds of answer checked
    assert not diffs, f"{len(diffs)} of {len(cases)} answers differ: {diffs[:5]}"


def fire(url: str, cases: list[tuple[bytes, str]], clients: int) -> list[Answer]:
    """Send every case from `clients` threads at once (each its own keep-alive session)."""
    local = threading.local()

    def one(case):
        if not hasattr(local, "s"):
            local.s = requests.Session()
        return send(local.s, url, *case)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, cases))


def concurrent_diffs(name: str, model: str, kinds, mlflow_serve, gw) -> tuple[int, list]:
    """Distinct requests, each sent twice in random order by CLIENTS concurrent clients; every
    answer compared with mlflow's answer to that request alone."""
    cases = payloads(kinds[name], seed=2, singles=25, multis=10)
    want = references(mlflow_serve[name], cases)
    order = [i for i in range(len(cases)) for _ in range(2)]
    random.Random(3).shuffle(order)
    got = fire(gateway_url(gw, model), [cases[i] for i in order], CLIENTS)
    diffs = [
        (cases[i][1], cases[i][0][:160], d)
        for i, g in zip(order, got, strict=True)
        if (d := difference(want[i], g))
    ]
    return len(order), diffs


@pytest.mark.parametrize("name", KINDS)
def test_concurrent_answers_are_each_requests_own(name, kinds, mlflow_serve, parity_gateway):
    before = batching_of(parity_gateway, name)
    sent, diffs = concurrent_diffs(name, name, kinds, mlflow_serve, parity_gateway)
    after = batching_of(parity_gateway, name)
    assert not diffs, f"{len(diffs)} of {sent} answers differ: {diffs[:5]}"
    # every answer could be logged (records with integer keys once stopped all store flushes)
    ready = httpx.get(f"{parity_gateway.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    calls = after["predict_calls"] - before["predict_calls"]
    answered = after["requests"] - before["requests"]
    assert answered == sent
    assert after["mode"] == "auto" and after["coalesces"] is kinds[name].shares_calls, after
    shared = after["shared_requests"] - before["shared_requests"]
    if kinds[name].shares_calls:
        assert shared > 0 and calls < answered, "no two requests shared a call: nothing tested"
    else:
        assert calls == answered and shared == 0, after


def test_batching_off_predicts_every_request_alone(kinds, mlflow_serve, parity_gateway):
    before = batching_of(parity_gateway, "iris-off")
    sent, diffs = concurrent_diffs("iris", "iris-off", kinds, mlflow_serve, parity_gateway)
    after = batching_of(parity_gateway, "iris-off")
    assert not diffs, f"{len(diffs)} of {sent} answers differ: {diffs[:5]}"
    assert after["mode"] == "off" and after["coalesces"] is False
    assert after["predict_calls"] - before["predict_calls"] == sent


def test_the_comparison_sees_what_batching_on_changes(kinds, mlflow_serve, parity_gateway):
    """The same comparison catches a coalescing that changes answers: with batching `on`, a
    model whose output depends on the other rows of its call answers with other clients'
    rows mixed in (so a pass above is not for want of looking)."""
    sent, diffs = concurrent_diffs("batch_dep", "batch_dep-on", kinds, mlflow_serve, parity_gateway)
    b = batching_of(parity_gateway, "batch_dep-on")
    assert b["mode"] == "on" and b["shared_requests"] > 0, b
    assert diffs and all(d[2].startswith("body") for d in diffs), diffs[:3]


def test_state_says_how_each_version_batches_and_why(kinds, parity_gateway):
    state = httpx.get(f"{parity_gateway.url}/admin/state", headers=parity_gateway.auth).json()
    for name, kind in kinds.items():
        b = state["models"][name]["versions"]["1"]["batching"]
        assert b["mode"] == "auto" and b["coalesces"] is kind.shares_calls, (name, b)
        assert b["reason"].startswith("auto"), b
    reasons = {n: state["models"][n]["versions"]["1"]["batching"]["reason"] for n in kinds}
    assert "LogisticRegression" in reasons["iris"] and "tie" in reasons["iris"]
    assert "RandomForestRegressor" in reasons["forest"]
    assert "Ridge" in reasons["regressor"] and "BLAS" in reasons["regressor"]
    assert "mlflow.pyfunc.model" in reasons["batch_dep"]


def test_batching_is_set_per_version_and_survives_a_restart(kinds, tmp_path):
    gw = GatewayProcess(tmp_path / "gw").start()
    try:
        check_setting_survives_restart(gw, str(kinds["iris"].path))
    finally:
        gw.stop()


def check_setting_survives_restart(gw, uri: str) -> None:
    with httpx.Client(base_url=gw.url, headers=gw.auth, timeout=120) as c:
        r = c.put("/admin/models/m/versions/1", json={"uri": uri, "batching": "sometimes"})
        assert r.status_code == 422 and "auto, off, on" in r.json()["message"], r.text
        r = c.put(
            "/admin/models/m/versions/1",
            json={"upstream": "http://127.0.0.1:9/x", "batching": "on"},
        )
        assert r.status_code == 422 and "'batching'" in r.json()["message"], r.text
        assert load(c, "m", "1", uri)["status"] == "loaded"
        state = c.get("/admin/state").json()
        assert state["models"]["m"]["versions"]["1"]["batching"]["mode"] == "auto"
        r = c.put("/admin/models/m/versions/1", json={"uri": uri, "batching": "on"})
        assert r.status_code == 200 and r.json()["batching"]["mode"] == "on", r.text
        assert r.json()["batching"]["coalesces"] is True
        assert (
            c.put(
                "/admin/models/m/route", json={"generation": 0, "weights": {"1": 100}}
            ).status_code
            == 200
        )
    gw.restart()
    gw.wait_ready()
    with httpx.Client(base_url=gw.url, headers=gw.auth, timeout=120) as c:
        b = c.get("/admin/state").json()["models"]["m"]["versions"]["1"]["batching"]
        assert b["mode"] == "on", b
        r = c.put("/admin/models/m/versions/1", json={"uri": uri, "batching": "off"})
        assert r.json()["batching"] == {
            "mode": "off",
            "coalesces": False,
            "reason": "off: every request is predicted alone",
            "predict_calls": 0,
            "requests": 0,
            "shared_requests": 0,
            "uncertified": 0,
        }


def iris_rows(n: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[round(rng.uniform(0.1, 8.0), 1) for _ in range(4)] for _ in range(n)]


def test_one_large_request_is_served_like_mlflow(kinds, mlflow_serve, parity_gateway):
    """20,001 rows: more than --max-pending-rows (20,000), which counts rows already waiting."""
    cols = list(kinds["iris"].columns)
    body = json.dumps({"dataframe_split": {"columns": cols, "data": iris_rows(20_001, 5)}}).encode()
    with requests.Session() as s:
        want = send(s, mlflow_serve["iris"], body, "application/json")
        got = send(s, gateway_url(parity_gateway, "iris"), body, "application/json")
    assert want.status == 200 and len(json.loads(want.body)["predictions"]) == 20_001
    assert difference(want, got) is None


def test_a_body_over_the_limit_is_413_naming_the_limit(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", extra_args=["--max-body-size", "1M"]).start()
    try:
        url = gateway_url(gw, "any")
        body = b'{"inputs": [' + b"1.0," * (1 << 18) + b"1.0]}"  # just over 1 MiB
        for chunked in (False, True):  # with a Content-Length, and without (counted as read)
            content = iter([body[: 1 << 19], body[1 << 19 :]]) if chunked else body
            r = httpx.post(url, content=content, timeout=60)
            assert r.status_code == 413, r.text
            assert "1048576 bytes (1 MiB)" in r.json()["message"], r.text
            assert "--max-body-size" in r.json()["message"]
        assert httpx.post(url, content=body[: 1 << 19]).status_code == 404  # under: routed
    finally:
        gw.stop()


def test_model_errors_are_400_like_mlflow_yet_count_against_the_version(kinds, parity_gateway):
    """mlflow answers a model that raised with 400 BAD_REQUEST; for the judge it is the
    version's error, while a request breaking the signature is only 'rejected'."""
    gw = parity_gateway
    with httpx.Client(base_url=gw.url, headers=gw.auth, timeout=120) as c:
        assert load(c, "fo", "1", str(kinds["frame_out"].path))["status"] == "loaded"
        assert (
            c.put(
                "/admin/models/fo/route", json={"generation": 0, "weights": {"1": 100}}
            ).status_code
            == 200
        )
        raises = {"dataframe_split": {"columns": ["n", "x"], "data": [[13, 1.0]]}}
        fine = {"dataframe_split": {"columns": ["n", "x"], "data": [[12, 1.0]]}}
        bad = {"dataframe_split": {"columns": ["n", "y"], "data": [[12, 1.0]]}}
        answers = [
            httpx.post(gateway_url(gw, "fo"), json=doc) for doc in (raises, fine, bad, raises)
        ]
        assert [a.status_code for a in answers] == [400, 200, 400, 400]
        assert error_code(answers[0].content) == "BAD_REQUEST"
        assert error_code(answers[2].content) == "INVALID_PARAMETER_VALUE"
        arm = primary_arm(c, "fo", want_requests=4)
    assert (arm["requests"], arm["errors"], arm["rejected"]) == (4, 2, 1), arm


def primary_arm(client: httpx.Client, model: str, want_requests: int) -> dict:
    """The primary arm of a snapshot once it counts `want_requests` (a flush may lag under load;
    at most 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        snap = client.get(f"/admin/models/{model}/stats", params={"since": 0}).json()
        arms = [a for a in snap["arms"] if a["arm"] == "primary"]
        if arms and arms[0]["requests"] >= want_requests or time.monotonic() > deadline:
            assert arms, snap
            return arms[0]
        time.sleep(0.5)


def test_nulls_and_infinities_are_the_requests_fault_without_named_columns(
    tmp_path, parity_gateway
):
    """A model with a tensor signature that cannot take NaN raises on a null or "Inf": that is
    the request breaking the contract (rejected), not the version failing (error)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    path = tmp_path / "tensor-sklearn"
    mlflow.sklearn.save_model(clf, path, signature=infer_signature(X, clf.predict(X)))
    gw = parity_gateway
    with httpx.Client(base_url=gw.url, headers=gw.auth, timeout=120) as c:
        assert load(c, "ts", "1", str(path))["status"] == "loaded"
        b = c.get("/admin/state").json()["models"]["ts"]["versions"]["1"]["batching"]
        assert b["coalesces"] is False, b
        assert (
            c.put(
                "/admin/models/ts/route", json={"generation": 0, "weights": {"1": 100}}
            ).status_code
            == 200
        )
        bodies = [
            {"inputs": [[5.1, 3.5, 1.4, 0.2]]},
            {"inputs": [[5.1, None, 1.4, 0.2]]},
            {"inputs": [[5.1, "Inf", 1.4, 0.2]]},
        ]
        got = [httpx.post(gateway_url(gw, "ts"), json=b) for b in bodies]
        assert [g.status_code for g in got] == [200, 400, 400], [g.text[:200] for g in got]
        arm = primary_arm(c, "ts", want_requests=3)
    assert (arm["requests"], arm["errors"], arm["rejected"]) == (3, 0, 2), arm
