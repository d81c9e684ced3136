"""Hostile webhooks against the receiver, served over HTTP on loopback as Airflow mounts it
(`/model-rollout/webhooks/mlflow`), with the real migrated metadata DB behind it.

- Validly signed bodies that hypothesis breaks on purpose (wrong JSON shapes and types,
  missing fields, huge fields, non-UTF-8, odd version spellings) get a 4xx and start nothing;
  the unbroken ones get a 202 and start a run exactly when the model's trigger says so.
- A replayed delivery id or a stale timestamp starts nothing; forged signatures get 401.
- Never a 5xx, never a hang (every request has a timeout), and the webhook secret appears
  neither in the receiver's logs (caplog, everything at DEBUG) nor in any answer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
import time
import uuid

import httpx
import pytest
from hostile.fuzzing import Tally, fuzz_settings, mostly, mutated
from hypothesis import example, given
from hypothesis import strategies as st
from support.servers import free_port
from wh_support import garbled, runs_of, signed_headers

from model_rollout.webhooks.signature import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

pytestmark = pytest.mark.timeout(600)

TIMEOUT = httpx.Timeout(20.0)
PATH = "/model-rollout/webhooks/mlflow"
ALIAS, CREATED, TAG = "model_version_alias", "model_version", "model_version_tag"
KINDS = {  # kind -> (entity, action, required data fields besides name and version)
    "alias": (ALIAS, "created", ("alias",)),
    "created": (CREATED, "created", ()),
    "tag": (TAG, "set", ("key",)),
    "alias_deleted": (ALIAS, "deleted", ("alias",)),
}

# what a broken field can be instead (each makes the event malformed)
BAD_TEXT = ["", None, 3.5, True, [], {}, [1], "x\x00y", "\ud800", "n" * 257]
BAD_VERSIONS = [
    "", "²", "١٢", " 3", "3 ", "3\n", "-1", "1.5", "0x1", "1e3", "9" * 20, "9" * 5000,
    1.5, True, None, [], {}, -3, 10**20,
]  # fmt: skip
BAD_BODIES = [
    b"", b"null", b"[]", b'"str"', b"3", b"{not json", b"\xff\xfe\xfd",
    b'{"entity": "model_version", "action": "created", "data": {"name": "\xff", "version": "1"}}',
    b"[" * 100_000, b'{"data": ' + b"9" * 5000 + b"}",
    b'{"entity": "model_version", "action": "created", "data": {"name": "m", "version": NaN}}',
]  # fmt: skip


@contextlib.contextmanager
def serve(app):
    """The receiver mounted at /model-rollout (as the Airflow plugin does) under uvicorn."""
    import uvicorn
    from fastapi import FastAPI

    parent = FastAPI()
    parent.mount("/model-rollout", app)
    config = uvicorn.Config(
        parent, host="127.0.0.1", port=free_port(), log_config=None, log_level="debug"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def receiver(airflow_db, secret, caplog):
    from model_rollout.webhooks.receiver import app

    caplog.set_level(logging.DEBUG)
    with serve(app) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def models(policies, make_rollout_dag, model_name) -> dict[str, str]:
    """trigger -> model: one alias-triggered and one version_created-triggered model."""
    created = f"{model_name}-c"
    policies(model_name)
    policies(created, event="version_created")
    make_rollout_dag(model_name)
    make_rollout_dag(created)
    return {"alias": model_name, "created": created}


@pytest.fixture
def tally(request, tmp_path_factory):
    t = Tally(request.node.name.removeprefix("test_"), tmp_path_factory.getbasetemp())
    yield t
    t.report()


def post(client, body: bytes, headers: dict, tally: Tally) -> httpx.Response:
    r = client.post(PATH, content=body, headers=headers)
    tally.status(r.status_code)
    assert r.status_code < 500, r.text[:500]
    doc = r.json()
    assert isinstance(doc.get("detail") or doc.get("status"), str), r.text[:500]
    return r


def versions_run(model: str) -> list[str]:
    from model_rollout.policy import dag_id_for

    return sorted(r.conf["version"] for r in runs_of(dag_id_for(model)))


def assert_secret_kept(secret: str, caplog, *answers: str) -> None:
    assert any(r.name.startswith("model_rollout.webhooks") for r in caplog.records), (
        "the receiver logged nothing: the secret check below would prove nothing"
    )
    assert secret not in caplog.text
    for text in answers:
        assert secret not in text


@st.composite
def events(draw, models: dict[str, str]) -> tuple[bytes, dict | None]:
    """(signed body, expectation): None when hypothesis broke it on purpose, else the
    unbroken event's kind, model and canonical version."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    entity, action, needs = KINDS[kind]
    model = draw(st.sampled_from([models["alias"], models["created"], "no-such-model"]))
    version = draw(st.integers(1, 60))
    data = {
        "name": model,
        "version": draw(st.sampled_from([str(version), version, f"00{version}"])),
        "alias": draw(st.sampled_from(["challenger", "champion"])),
        "key": "rollout.request",
        "value": "true",
    }
    doc = {"entity": entity, "action": action, "timestamp": "2026-11-28T09:00:00Z", "data": data}
    defect = draw(
        mostly(st.none(), st.sampled_from(["entity", "action", "data", "name", "version", "need"]))
    )
    if defect in ("entity", "action"):
        doc[defect] = draw(st.sampled_from([*BAD_TEXT, "e" * 101]))
    elif defect == "data":
        doc["data"] = draw(st.sampled_from([None, [], "data", 5, [data]]))
    elif defect in ("name", "version"):
        bad = draw(st.sampled_from(BAD_VERSIONS if defect == "version" else BAD_TEXT))
        data[defect] = bad
        if bad is None and draw(st.booleans()):
            del data[defect]
        if bad is None and defect == "version" and kind == "alias_deleted":
            defect = None  # the one kind here whose version is optional
    elif defect == "need":
        if not needs:
            defect = None  # nothing beside name and version is required for this kind
        else:
            data[needs[0]] = draw(st.sampled_from(BAD_TEXT))
            if data[needs[0]] is None and draw(st.booleans()):
                del data[needs[0]]
    body = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if defect is None:
        return body, {"kind": kind, "model": model, "version": str(version), "alias": data["alias"]}
    return body, None


def test_fuzz_signed_events_malformed_ones_are_4xx_and_start_nothing(
    receiver, secret, models, caplog, tally
):
    started = {m: set() for m in models.values()}
    answers: list[str] = []

    def run_one(body: bytes, expect: dict | None) -> None:
        r = post(receiver, body, signed_headers(secret, body), tally)
        answers.append(r.text)
        if expect is None:
            assert r.status_code in (400, 413), (body[:300], r.text[:300])
        else:
            assert r.status_code == 202, (body[:300], r.text[:300])
            model, version, kind = expect["model"], expect["version"], expect["kind"]
            if model == models["alias"]:
                triggered = kind == "alias" and expect["alias"] == "challenger"
            else:
                triggered = model == models["created"] and kind == "created"
            fresh = model in started and version not in started[model]
            want = "started" if triggered and fresh else "ignored"
            assert r.json()["status"] == want, (body[:300], r.text[:300])
            if want == "started":
                started[model].add(version)
        for model, versions in started.items():
            assert versions_run(model) == sorted(versions), model

    @fuzz_settings(250)
    @given(event=events(models))
    def fuzz_events(event):
        run_one(*event)

    @fuzz_settings(120)
    @given(
        body=st.one_of(
            st.sampled_from(BAD_BODIES),
            st.binary(max_size=200),
            mutated(json.dumps({"entity": CREATED, "action": "created", "data": {}}).encode()),
        )
    )
    @example(body=json.dumps({"entity": CREATED, "action": "created", "data": {"name": "n" * 900_000, "version": "1"}}).encode())  # fmt: skip
    @example(body=b'{"entity": "x", "action": "y", "data": {}, "pad": "' + b"p" * 1_100_000 + b'"}')
    def fuzz_bodies(body):
        # anything but a well-formed event object is malformed; an object whose fields are
        # all right can still come out of a mutation: it is then answered 202 like any other
        r = post(receiver, body, signed_headers(secret, body), tally)
        answers.append(r.text)
        assert r.status_code in (202, 400, 413), (body[:300], r.text[:300])
        for model, versions in started.items():
            assert versions_run(model) == sorted(versions), model

    fuzz_events()
    fuzz_bodies()
    tally.note("runs started", sum(len(v) for v in started.values()))
    assert any(started.values()), "no event started a run: the property was never exercised"
    assert_secret_kept(secret, caplog, *answers)


def test_fuzz_replayed_and_stale_deliveries_start_nothing(receiver, secret, models, caplog, tally):
    model = models["created"]
    versions = itertools.count(1000)
    runs: list[str] = []
    answers: list[str] = []

    def body_for(version: int) -> bytes:
        data = {"name": model, "version": str(version)}
        return json.dumps({"entity": CREATED, "action": "created", "data": data}).encode()

    @fuzz_settings(120)
    @given(
        skew=st.one_of(
            st.floats(-280, 280), st.floats(320, 1e10), st.floats(-1e10, -320), st.just(1e300)
        ),
        then=st.sampled_from(["nothing", "replay", "resigned", "stale-replay", "new-id"]),
        ts_format=st.sampled_from(["int", "float"]),
    )
    def run(skew, then, ts_format):
        version = next(versions)
        body = body_for(version)
        ts = time.time() + skew
        ts_text = str(int(ts)) if ts_format == "int" else repr(ts)
        delivery = str(uuid.uuid4())
        headers = {
            DELIVERY_ID_HEADER: delivery,
            TIMESTAMP_HEADER: ts_text,
            SIGNATURE_HEADER: sign(secret, delivery, ts_text, body),
        }
        r = post(receiver, body, headers, tally)
        answers.append(r.text)
        if abs(skew) > 300:
            assert r.status_code == 401, r.text
            assert "window" in r.json()["detail"]
        else:
            assert (r.status_code, r.json()["status"]) == (202, "started"), r.text
            runs.append(str(version))
        if then == "replay":  # the very same request again
            again = post(receiver, body, headers, tally)
        elif then == "resigned":  # same delivery id, fresh timestamp, another version's body
            other = body_for(next(versions))
            again = post(
                receiver, other, signed_headers(secret, other, delivery_id=delivery), tally
            )
        elif then == "stale-replay":  # same id and body, signed as if 10 minutes ago
            old = signed_headers(secret, body, delivery_id=delivery, timestamp=time.time() - 600)
            again = post(receiver, body, old, tally)
        elif then == "new-id":  # a new delivery of the same version
            again = post(receiver, body, signed_headers(secret, body), tally)
        else:
            again = None
        if again is not None:
            answers.append(again.text)
            first_ok = r.status_code == 202
            expected = {
                "replay": 409 if first_ok else 401,
                "resigned": 409 if first_ok else 202,
                "stale-replay": 401,
                "new-id": 202,
            }[then]
            assert again.status_code == expected, (then, again.text)
            if then == "resigned" and not first_ok:  # a fresh id then: its own version runs
                runs.append(json.loads(other)["data"]["version"])
            if then == "new-id" and first_ok:
                assert again.json()["status"] == "ignored"
                assert "already has run" in again.json()["reason"]
            if then == "new-id" and not first_ok:
                runs.append(str(version))
        assert versions_run(model) == sorted(runs)

    run()
    tally.note("runs started", len(runs))
    assert runs, "no delivery started a run: the property was never exercised"
    assert_secret_kept(secret, caplog, *answers)


header_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
)


def test_fuzz_forged_signatures_are_401_and_start_nothing(receiver, secret, models, caplog, tally):
    model = models["created"]
    answers: list[str] = []

    @fuzz_settings(150)
    @given(
        version=st.integers(1, 10**6),
        forge=st.sampled_from(
            ["garbled", "other-secret", "no-signature", "no-id", "no-ts", "long-id", "random"]
        ),
        junk=header_text,
    )
    def run(version, forge, junk):
        data = {"name": model, "version": str(version)}
        body = json.dumps({"entity": CREATED, "action": "created", "data": data}).encode()
        headers = signed_headers(secret, body)
        if forge == "garbled":
            headers[SIGNATURE_HEADER] = garbled(headers[SIGNATURE_HEADER])
        elif forge == "other-secret":
            headers = signed_headers(secret + junk, body)
        elif forge == "long-id":
            delivery = "d" * 129
            headers = signed_headers(secret, body, delivery_id=delivery)
        elif forge == "random":
            headers[SIGNATURE_HEADER] = junk
        else:
            name = {"no-signature": SIGNATURE_HEADER, "no-id": DELIVERY_ID_HEADER}.get(
                forge, TIMESTAMP_HEADER
            )
            del headers[name]
        r = post(receiver, body, headers, tally)
        answers.append(r.text)
        assert r.status_code == 401, (forge, r.text)
        assert versions_run(model) == []

    run()
    assert_secret_kept(secret, caplog, *answers)
