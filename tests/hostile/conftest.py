"""Fixtures of the hostile-input fuzz tests: one real gateway process serving a real model.

The gateway runs with `--log-level debug` (everything any library logs lands in its log
file) and a distinctive admin token, so the tests can check that the token never reaches the
log; its MLflow tracking URI is the session's real server, which the admin fuzzer's
`models:/...` sources resolve against (and fail: nothing is registered there).
It serves two gateway models from one saved iris model:

- `m`: version 1 live at 100%, version 2 as a shadow (its own worker process), version 3 in
  the staging slot. The invocation, feedback and staging fuzzers hit it; nothing else changes
  its route.
- `adm`: version 1 loaded, not routed. The admin fuzzer may change its route and versions.
"""

from __future__ import annotations

import secrets

import httpx
import pytest
from support.gateway_api import admin_client, load, set_route
from support.models import PIP_REQUIREMENTS as PIP
from support.models import _fitted, iris, iris_rows, scoring_payload
from support.servers import GatewayProcess

ADMIN_TOKEN = f"hostile-admin-{secrets.token_hex(16)}"


@pytest.fixture(scope="session")
def hostile_model_uri(tmp_path_factory) -> str:
    """A real MLflow sklearn model (iris, with its signature) saved to a local folder: the
    gateway loads it like a registry version, without the ~20 s of registering one."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    X, _ = iris()
    clf = _fitted()
    path = tmp_path_factory.mktemp("hostile-model") / "model"
    mlflow.sklearn.save_model(
        clf, str(path), signature=infer_signature(X, clf.predict(X)), pip_requirements=PIP
    )
    return str(path)


@pytest.fixture(scope="session")
def hostile_gw(tmp_path_factory, mlflow_server, hostile_model_uri):
    """The gateway under fuzzing, with `m` routed (live, shadow, staging) and `adm` loaded."""
    gw = GatewayProcess(
        tmp_path_factory.mktemp("hostile-gateway"),
        token=ADMIN_TOKEN,
        tracking_uri=mlflow_server,
        extra_args=["--log-level", "debug"],
    ).start()
    try:
        with admin_client(gw) as admin:
            for model, version in (("m", "1"), ("m", "2"), ("m", "3"), ("adm", "1")):
                doc = load(admin, model, version, hostile_model_uri)
                assert doc["status"] == "loaded", doc
            r = set_route(admin, "m", {"1": 100}, shadows=["2"], staging="3")
            assert r.status_code == 200, r.text
        gw.wait_ready(timeout=120)
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="session")
def answered_ids(hostile_gw) -> list[str]:
    """Request ids of a few real answers of `m` (feedback to them can be accepted)."""
    ids = []
    for i in range(5):
        r = httpx.post(
            f"{hostile_gw.url}/models/m/invocations",
            json=scoring_payload(iris_rows(1, seed=i)),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-request-id"])
    return ids
