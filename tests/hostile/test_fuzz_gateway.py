"""Hostile input against the real gateway process over HTTP (loopback).

Every fuzzer sends what hypothesis draws to the running `model-gateway` and asserts: an answer
within the timeout, never a 5xx (bad input is the client's fault: a 4xx with a JSON error that
says what was wrong), and afterwards the process alive, `/healthz` and `/readyz` answering and
neither the admin token in its log file nor in any answer.
"""

from __future__ import annotations

import urllib.parse

import httpx
import orjson
import pytest
from hostile.conftest import ADMIN_TOKEN
from hostile.fuzzing import Tally, fuzz_settings, json_values, mostly, mutated
from hypothesis import example, given
from hypothesis import strategies as st
from support.models import IRIS_COLUMNS, iris_rows, scoring_payload

pytestmark = pytest.mark.timeout(600)

TIMEOUT = httpx.Timeout(20.0)
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# every admin route (with placeholders), plus paths under /admin that match no route
ADMIN_PATHS = (
    "/admin/state",
    "/admin/models/{model}/versions/{version}",
    "/admin/models/{model}/route",
    "/admin/models/{model}/staging/invocations",
    "/admin/models/{model}/stats",
    "/admin",
    "/admin/",
    "/admin/{model}",
    "/admin/models/{model}/versions",
)

# header values: printable latin-1 without edge whitespace (what HTTP allows), sent as bytes
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
).map(lambda v: v.strip(" \t"))
names = st.sampled_from(["m", "adm", "no-such-model", "M", "m.", "-m"]) | st.text(max_size=40)
# `adm` has no route (503 is its honest answer whatever the body): not an invocation target
served = mostly(st.just("m"), names.filter(lambda n: n != "adm"), 9)


def quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="") or "%20"


def valid_body(rows: int = 2, fmt: str = "dataframe_split") -> bytes:
    return orjson.dumps(scoring_payload(iris_rows(rows, seed=rows), fmt))


cells = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=10)
    | st.none()
    | st.booleans()
    | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2)
)
columns = st.lists(st.sampled_from(IRIS_COLUMNS) | st.text(max_size=12), max_size=6)


@st.composite
def scoring_documents(draw) -> dict:
    """MLflow-protocol-shaped bodies with wrong columns, widths, cell types and extra fields."""
    fmt = draw(st.sampled_from(FORMATS))
    cols = draw(st.just(list(IRIS_COLUMNS)) | columns)
    row = st.lists(cells, min_size=0, max_size=6) | st.just(iris_rows(1)[0])
    rows = st.lists(row, max_size=5)
    if fmt == "dataframe_split":
        data = {"columns": cols, "data": draw(rows)}
        if draw(st.booleans()):
            data["index"] = draw(json_values(5))
        if draw(st.booleans()):
            data = {**data, **draw(st.dictionaries(st.text(max_size=8), json_values(5)))}
    elif fmt == "dataframe_records":
        data = draw(st.lists(st.fixed_dictionaries({c: cells for c in cols}), max_size=5))
    elif fmt == "instances":
        data = draw(
            st.lists(st.fixed_dictionaries({c: cells for c in cols}), max_size=5)
            | rows
            | st.dictionaries(st.sampled_from(cols or ["x"]), st.lists(cells, max_size=4))
        )
    else:
        data = draw(
            st.dictionaries(st.sampled_from(cols or ["x"]), st.lists(cells, max_size=4))
            | rows
            | json_values(8)
        )
    doc = {fmt: data}
    if draw(st.booleans()):
        doc["params"] = draw(json_values(5))
    if draw(st.integers(0, 4)) == 0:
        doc[draw(st.sampled_from(FORMATS) | st.text(max_size=8))] = draw(json_values(5))
    return doc


@st.composite
def near_valid_documents(draw) -> dict:
    """Real iris rows in any format with a few cells replaced by hostile ones (null, text,
    lists, 64-bit edges...), sometimes with a field dropped or `params` added."""
    fmt = draw(st.sampled_from(FORMATS))
    n = draw(st.integers(1, 6))
    rows = iris_rows(n, seed=draw(st.integers(0, 999)))
    for _ in range(draw(st.integers(0, 2))):
        rows[draw(st.integers(0, n - 1))][draw(st.integers(0, 3))] = draw(cells)
    doc = scoring_payload(rows, fmt)
    if fmt in ("dataframe_records", "instances") and draw(st.integers(0, 3)) == 0:
        del doc[fmt][draw(st.integers(0, n - 1))][draw(st.sampled_from(IRIS_COLUMNS))]
    if draw(st.integers(0, 4)) == 0:
        doc["params"] = draw(json_values(4))
    return doc


invocation_bodies = mostly(
    st.one_of(near_valid_documents(), scoring_documents()).map(orjson.dumps),
    st.one_of(
        st.binary(max_size=300),
        json_values().map(orjson.dumps),
        mutated(valid_body()),
        mutated(valid_body(3, "dataframe_records")),
        mutated(valid_body(2, "inputs")),
    ),
    in_ten=6,
)
content_types = mostly(
    st.sampled_from([None, "application/json", "application/json; charset=utf-8"]),
    st.sampled_from(["APPLICATION/JSON", ";", "", "text/csv"]) | header_text,
)


def request_headers(draw, ctype) -> dict[str, bytes]:
    headers: dict[str, bytes] = {}
    if ctype is not None:
        headers["Content-Type"] = ctype.encode("latin-1")
    for name in ("X-Routing-Key", "X-Request-Id"):
        value = draw(st.none() | header_text)
        if value is not None:
            headers[name] = value.encode("latin-1")
    return headers


@st.composite
def invocations(draw) -> tuple[str, bytes, dict]:
    model = draw(served)
    headers = request_headers(draw, draw(content_types))
    return f"/models/{quoted(model)}/invocations", draw(invocation_bodies), headers


def check_answer(r: httpx.Response, tally: Tally, *, allowed=None) -> None:
    """No 5xx; an error is a JSON object naming the problem; the token is never echoed."""
    tally.status(r.status_code)
    assert r.status_code < 500, (r.request.method, r.request.url, r.text[:500])
    if allowed is not None:
        assert r.status_code in allowed, (r.request.method, r.request.url, r.text[:500])
    assert ADMIN_TOKEN not in r.text
    if r.status_code >= 400 and r.request.method != "HEAD":
        doc = r.json()
        assert isinstance(doc.get("message") or doc.get("detail"), str), r.text[:500]


def assert_gateway_alive(gw) -> None:
    """The process still runs, answers health and readiness, and never logged the token."""
    assert gw.proc.poll() is None, gw.log.read_text()[-3000:]
    assert httpx.get(f"{gw.url}/healthz", timeout=TIMEOUT).status_code == 200
    gw.wait_ready(timeout=60)
    r = httpx.post(
        f"{gw.url}/models/m/invocations", content=valid_body(), timeout=TIMEOUT
    )  # still serving the real model
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text
    assert httpx.get(f"{gw.url}/metrics", timeout=TIMEOUT).status_code == 200
    log = gw.log.read_bytes()
    assert log, "the gateway wrote no log at all: the token check below would prove nothing"
    assert ADMIN_TOKEN.encode() not in log


@pytest.fixture
def tally(request, tmp_path_factory):
    t = Tally(request.node.name.removeprefix("test_"), tmp_path_factory.getbasetemp())
    yield t
    t.report()


def test_fuzz_invocations(hostile_gw, tally):
    with httpx.Client(base_url=hostile_gw.url, timeout=TIMEOUT) as client:

        @fuzz_settings(400)
        @given(inv=invocations())
        @example(inv=("/models/m/invocations", b"[" * 100_000, {}))
        @example(inv=("/models/m/invocations", b'{"inputs": [' + b"1" * 40 + b"]}", {}))
        @example(inv=("/models/m/invocations", b"\xff\xfe" + valid_body(), {}))
        @example(inv=("/models/m/invocations", valid_body(20_000), {}))
        def run(inv):
            path, body, headers = inv
            check_answer(client.post(path, content=body, headers=headers), tally)

        run()
        # the statistics agree: rejected requests, no errors, in the primary and the shadow
        # (which predicted the same inputs in its own worker process) alike
        snap = client.get("/admin/models/m/stats", headers=hostile_gw.auth).json()
        assert {a["arm"] for a in snap["arms"]} >= {"primary", "shadow"}, snap
        for a in snap["arms"]:
            assert a["errors"] == 0, a
        primary = next(a for a in snap["arms"] if a["arm"] == "primary")
        assert primary["rejected"] > 0 and primary["requests"] > primary["rejected"], primary
        shadow = next(a for a in snap["arms"] if a["arm"] == "shadow")
        tally.note("shadow copies predicted", shadow["requests"])
        tally.note("shadow copies rejected", shadow["rejected"])
    assert_gateway_alive(hostile_gw)


def test_fuzz_staging_invocations(hostile_gw, tally):
    with httpx.Client(base_url=hostile_gw.url, headers=hostile_gw.auth, timeout=TIMEOUT) as c:

        @fuzz_settings(150)
        @given(inv=invocations())
        def run(inv):
            path, body, headers = inv
            path = "/admin" + path.replace("/invocations", "/staging/invocations")
            check_answer(c.post(path, content=body, headers=headers), tally)

        run()
    assert_gateway_alive(hostile_gw)


@st.composite
def feedback_bodies(draw, known: list[str]) -> bytes:
    rid = mostly(st.sampled_from(known) | st.text(max_size=40), json_values(3))
    outcome = (
        st.booleans()
        | st.floats()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | json_values(3)
    )
    keys = st.sampled_from(["request_id", "outcome", "feedback", "extra"]) | st.text(max_size=8)
    item = st.fixed_dictionaries({"request_id": rid, "outcome": outcome}) | st.dictionaries(
        keys, rid | outcome, max_size=4
    )
    doc = draw(
        item
        | st.fixed_dictionaries({"feedback": st.lists(item | json_values(3), max_size=8)})
        | st.dictionaries(keys, st.lists(item, max_size=3) | json_values(3), max_size=3)
        | json_values()
    )
    # orjson refuses NaN/Infinity; json.dumps writes them (not JSON: the gateway must say so)
    try:
        raw = orjson.dumps(doc)
    except orjson.JSONEncodeError:
        import json

        raw = json.dumps(doc).encode()
    return draw(mostly(st.just(raw), mutated(raw) | st.binary(max_size=100)))


def test_fuzz_feedback(hostile_gw, answered_ids, tally):
    with httpx.Client(base_url=hostile_gw.url, timeout=TIMEOUT) as client:
        many = {"feedback": [{"request_id": f"nope-{i}", "outcome": 1} for i in range(5000)]}

        @fuzz_settings(300)
        @given(model=served, body=feedback_bodies(answered_ids))
        @example(model="m", body=orjson.dumps(many))
        @example(model="m", body=b'{"request_id": "x", "outcome": NaN}')
        @example(model="m", body=b'{"request_id": "\\u0000", "outcome": 1}')
        def run(model, body):
            r = client.post(f"/models/{quoted(model)}/feedback", content=body)
            check_answer(r, tally, allowed={200, 400, 404, 409, 413, 422})

        run()
    assert_gateway_alive(hostile_gw)


bad_auth = st.one_of(
    st.just(None),
    st.sampled_from(
        [
            "",
            "Bearer",
            ADMIN_TOKEN,  # no scheme
            f"Basic {ADMIN_TOKEN}",
            f"Token {ADMIN_TOKEN}",
            f"Bearer {ADMIN_TOKEN}x",  # near misses still contain the token: a log of the
            f"Bearer x{ADMIN_TOKEN}",  # header would be caught below
            f"Bearer {ADMIN_TOKEN[:-1]}",
            f"Bearer {ADMIN_TOKEN.upper()}",
            f"Bearer{ADMIN_TOKEN}",
            f"Bearer {ADMIN_TOKEN} {ADMIN_TOKEN}",
            f"Bearer {ADMIN_TOKEN},",
        ]
    ),
    header_text.filter(lambda v: v.strip() != f"Bearer {ADMIN_TOKEN}"),
)


@st.composite
def admin_calls(draw) -> tuple[str, str, dict, bytes]:
    path = draw(st.sampled_from(ADMIN_PATHS)).format(
        model=quoted(draw(names)), version=quoted(draw(st.sampled_from(["1", "2"]) | names))
    )
    headers = {}
    auth = draw(bad_auth)
    if auth is not None:
        headers["Authorization"] = auth.encode("latin-1")
    body = draw(st.just(b"") | json_values().map(orjson.dumps) | st.binary(max_size=50))
    return draw(st.sampled_from(METHODS)), path, headers, body


def test_fuzz_admin_without_the_token_is_401_on_every_route_and_method(hostile_gw, tally):
    with httpx.Client(base_url=hostile_gw.url, timeout=TIMEOUT) as client:
        # first each (route, method) once with no Authorization at all, then fuzz
        for path in ADMIN_PATHS:
            for method in METHODS:
                r = client.request(method, path.format(model="m", version="1"))
                check_answer(r, tally, allowed={401})
                assert r.headers["www-authenticate"].startswith("Bearer")

        @fuzz_settings(300)
        @given(call=admin_calls())
        def run(call):
            method, path, headers, body = call
            r = client.request(method, path, headers=headers, content=body)
            check_answer(r, tally, allowed={401})

        run()
    assert_gateway_alive(hostile_gw)


# what `PUT /admin/models/<m>/versions/<v>` may be asked to load: sources that fail fast on
# loopback (never the network, never the real model: each real load costs a second and RAM)
model_sources = st.one_of(
    st.builds(lambda n, v: f"models:/{n}/{v}", st.text(max_size=12), st.integers(-1, 99)),
    st.builds(lambda t: f"/nonexistent-hostile/{t}", st.text(max_size=20)),
    st.builds(lambda t: f"runs:/{t}/model", st.text("0123456789abcdef", max_size=32)),
    st.builds(lambda t: f"http://127.0.0.1:9/{t}", st.text(max_size=20)),
    json_values(4),
)


@st.composite
def authorised_calls(draw) -> tuple[str, str, dict | None, bytes | None, dict]:
    model = draw(st.sampled_from(["adm", "adm", "m"]) | names)
    version = draw(st.sampled_from(["1", "2", "3", "9"]) | names)
    versions = st.sampled_from(["1", "2", "9"]) | st.text(max_size=6) | json_values(2)
    route_doc = st.fixed_dictionaries(
        {
            # m's route is at generation 1: a call naming it is an authorised replacement,
            # so m only gets stale ones (409); the data-plane fuzzers need its route
            "generation": (st.integers(-1, 4) | json_values(2)).filter(
                lambda g: model != "m" or g != 1
            ),
            "weights": st.dictionaries(
                st.sampled_from(["1", "2", "9"]) | st.text(max_size=6),
                st.sampled_from([0, 50, 100, 100.0]) | json_values(2),
                max_size=3,
            )
            | json_values(3),
        },
        optional={"shadows": st.lists(versions, max_size=3) | json_values(2), "staging": versions},
    )
    kind = draw(st.sampled_from(["load", "unload", "route", "get", "stats"]))
    body = json = None
    params: dict = {}
    if kind == "load":
        method, path = "PUT", f"/admin/models/{quoted(model)}/versions/{quoted(version)}"
        spec = st.fixed_dictionaries({}, optional={"uri": model_sources, "upstream": model_sources})
        json = draw(spec | json_values(4))
        if draw(st.booleans()):
            body, json = draw(st.binary(max_size=40) | mutated(orjson.dumps(json))), None
    elif kind == "unload":
        # never the routed versions of `m`: the data-plane fuzzers need them (409 anyway)
        method, path = "DELETE", f"/admin/models/{quoted(model)}/versions/{quoted(version)}"
    elif kind == "route":
        method, path = "PUT", f"/admin/models/{quoted(model)}/route"
        json = draw(route_doc | json_values(4))
        if draw(st.integers(0, 3)) == 0:
            body, json = draw(st.binary(max_size=40) | mutated(orjson.dumps(json))), None
    elif kind == "get":
        method = "GET"
        path = draw(st.sampled_from(["/admin/state", f"/admin/models/{quoted(model)}/route"]))
    else:
        method, path = "GET", f"/admin/models/{quoted(model)}/stats"
        since = draw(st.none() | st.text(max_size=20) | st.floats().map(repr))
        if since is not None:
            params["since"] = since
    return method, path, json, body, params


def test_fuzz_admin_with_the_token(hostile_gw, tally):
    """Authorised but hostile admin calls: 4xx for bad ones, the routed model untouched."""
    with httpx.Client(base_url=hostile_gw.url, headers=hostile_gw.auth, timeout=TIMEOUT) as c:

        @fuzz_settings(250)
        @given(call=authorised_calls())
        @example(call=("PUT", "/admin/models/adm/route", None, b"[" * 50_000, {}))
        @example(call=("GET", "/admin/models/adm/stats", None, None, {"since": "1e400"}))
        @example(call=("GET", "/admin/models/adm/stats", None, None, {"since": "9.2e18"}))
        def run(call):
            method, path, json, body, params = call
            if json is not None:
                r = c.request(method, path, content=orjson.dumps(json), params=params)
            else:
                r = c.request(method, path, content=body, params=params)
            check_answer(r, tally)
            if method == "PUT" and path == "/admin/models/m/route" and r.status_code == 200:
                pytest.fail(f"a fuzzed route replaced the route of m: {json!r}")

        run()
        assert c.get("/admin/models/m/route").json()["weights"] == {"1": 100}
        assert c.get("/admin/state").status_code == 200
    assert_gateway_alive(hostile_gw)
