"""The receiver against a real migrated Airflow metadata DB: signed events queue runs, nothing else does."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fastapi.testclient import TestClient
from wh_support import alias_body, garbled, runs_of, signed_headers

from model_rollout.webhooks.signature import SIGNATURE_HEADER

URL = "/webhooks/mlflow"


@pytest.fixture
def client(airflow_db, secret):
    from model_rollout.webhooks.receiver import app

    with TestClient(app) as c:
        yield c


@pytest.fixture
def rollout(policies, make_rollout_dag, model_name):
    """A model with an alias-triggered policy and a (stand-in) rollout DAG in the DB."""
    policies(model_name)
    return model_name, make_rollout_dag(model_name)


def post(client, body: bytes, headers: dict[str, str]):
    return client.post(URL, content=body, headers=headers)


def test_a_signed_alias_event_queues_one_run_with_the_version(client, secret, rollout):
    model, dag_id = rollout
    body = alias_body(model, "3")
    r = post(client, body, signed_headers(secret, body))
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "started"
    assert (r.json()["dag_id"], r.json()["run_id"]) == (dag_id, "rollout__v3")
    [run] = runs_of(dag_id)
    assert run.run_id == "rollout__v3"
    assert run.conf == {"version": "3"}
    assert run.state == "queued"
    assert str(run.triggered_by).endswith("REST_API")
    assert run.triggering_user_name == "mlflow-webhook"


def test_a_bad_signature_is_401_and_starts_nothing(client, secret, rollout):
    model, dag_id = rollout
    body = alias_body(model, "3")
    headers = signed_headers(secret, body)
    headers[SIGNATURE_HEADER] = garbled(headers[SIGNATURE_HEADER])
    assert post(client, body, headers).status_code == 401
    wrong_key = signed_headers("not-the-secret", body)
    assert post(client, body, wrong_key).status_code == 401
    unsigned = {k: v for k, v in signed_headers(secret, body).items() if k != SIGNATURE_HEADER}
    r = post(client, body, unsigned)
    assert r.status_code == 401
    assert "missing header" in r.json()["detail"]
    assert runs_of(dag_id) == []


def test_a_replayed_delivery_id_starts_nothing(client, secret, rollout):
    model, dag_id = rollout
    body = alias_body(model, "3")
    headers = signed_headers(secret, body)
    assert post(client, body, headers).status_code == 202
    r = post(client, body, headers)
    assert r.status_code == 409
    assert "already received" in r.json()["detail"]
    # even re-signed with a fresh timestamp, the same delivery id is refused
    again = signed_headers(
        secret, alias_body(model, "4"), delivery_id=headers["X-MLflow-Delivery-Id"]
    )
    assert post(client, alias_body(model, "4"), again).status_code == 409
    assert [r.run_id for r in runs_of(dag_id)] == ["rollout__v3"]


@pytest.mark.parametrize("skew", [-330, 330, -3600])  # 30 s of slack for a slow machine
def test_a_stale_or_future_timestamp_starts_nothing(client, secret, rollout, skew):
    model, dag_id = rollout
    body = alias_body(model, "3")
    r = post(client, body, signed_headers(secret, body, timestamp=time.time() + skew))
    assert r.status_code == 401
    assert "outside the 300 s window" in r.json()["detail"]
    assert runs_of(dag_id) == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json.dumps({"entity": "model_version_alias", "action": "created"}).encode(),
    ],
)
def test_signed_malformed_json_is_400_and_starts_nothing(client, secret, rollout, body):
    _, dag_id = rollout
    r = post(client, body, signed_headers(secret, body))
    assert r.status_code == 400
    assert r.json()["detail"]
    assert runs_of(dag_id) == []


def test_an_unknown_model_is_accepted_ignored_and_logged(client, secret, policies, caplog):
    body = alias_body("no-such-model", "1")
    with caplog.at_level(logging.INFO, logger="model_rollout.webhooks"):
        r = post(client, body, signed_headers(secret, body))
    assert r.status_code == 202
    assert r.json()["status"] == "ignored"
    assert "unknown model 'no-such-model'" in r.json()["reason"]
    assert "unknown model 'no-such-model'" in caplog.text
    assert runs_of("model_rollout__no-such-model") == []


def test_an_event_that_is_not_the_models_trigger_is_ignored(client, secret, rollout):
    model, dag_id = rollout
    body = alias_body(model, "3", alias="champion")
    r = post(client, body, signed_headers(secret, body))
    assert (r.status_code, r.json()["status"]) == (202, "ignored")
    assert "not the trigger alias" in r.json()["reason"]
    assert runs_of(dag_id) == []


def test_version_created_and_tag_triggers(client, secret, policies, make_rollout_dag, model_name):
    policies(model_name, event="version_created")
    dag_id = make_rollout_dag(model_name)
    created = json.dumps(
        {
            "entity": "model_version",
            "action": "created",
            "data": {"name": model_name, "version": "8"},
        }
    ).encode()
    assert post(client, created, signed_headers(secret, created)).json()["status"] == "started"

    tag_model = model_name + "-tag"
    policies(tag_model, event="tag", tag_key="deploy", tag_value="yes")
    tag_dag = make_rollout_dag(tag_model)
    tag = json.dumps(
        {
            "entity": "model_version_tag",
            "action": "set",
            "data": {"name": tag_model, "version": "2", "key": "deploy", "value": "yes"},
        }
    ).encode()
    assert post(client, tag, signed_headers(secret, tag)).json()["status"] == "started"
    assert [(r.run_id, r.conf) for r in runs_of(dag_id)] == [("rollout__v8", {"version": "8"})]
    assert [(r.run_id, r.conf) for r in runs_of(tag_dag)] == [("rollout__v2", {"version": "2"})]


def test_a_version_that_already_has_a_run_is_not_started_again(client, secret, rollout):
    """A second delivery (new id) for the same version, and a version a human already started."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    model, dag_id = rollout
    body = alias_body(model, "3")
    assert post(client, body, signed_headers(secret, body)).json()["status"] == "started"
    r = post(client, body, signed_headers(secret, body))
    assert (r.status_code, r.json()["status"]) == (202, "ignored")
    assert "already has run rollout__v3" in r.json()["reason"]

    trigger_dag(dag_id, conf={"version": "5"}, triggered_by=DagRunTriggeredByType.UI)
    body5 = alias_body(model, "5")
    r = post(client, body5, signed_headers(secret, body5))
    assert r.json()["status"] == "ignored"
    assert "already has run manual__" in r.json()["reason"]
    assert sorted(r.conf["version"] for r in runs_of(dag_id)) == ["3", "5"]


def test_dag_not_in_airflow_yet_is_503_and_the_retry_succeeds(
    client, secret, policies, make_rollout_dag, model_name
):
    """Nothing is recorded on 503, so MLflow's retry (same delivery id) still starts the run."""
    policies(model_name)
    body = alias_body(model_name, "2")
    headers = signed_headers(secret, body)
    r = post(client, body, headers)
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    dag_id = make_rollout_dag(model_name)
    r = post(client, body, headers)
    assert (r.status_code, r.json()["status"]) == (202, "started")
    assert [r.run_id for r in runs_of(dag_id)] == ["rollout__v2"]


def test_no_secret_configured_refuses_everything(client, monkeypatch, rollout):
    from model_rollout.webhooks import settings

    monkeypatch.delenv(settings.SECRET_ENV)
    settings.clear_cache()
    model, dag_id = rollout
    body = alias_body(model, "3")
    r = post(client, body, signed_headers("", body))
    assert r.status_code == 503
    assert "not configured" in r.json()["detail"]
    assert runs_of(dag_id) == []


def test_secret_from_an_airflow_variable_and_rotation(client, monkeypatch, rollout):
    from airflow.models.variable import Variable

    from model_rollout.webhooks import settings

    model, dag_id = rollout
    monkeypatch.delenv(settings.SECRET_ENV)
    Variable.set(settings.SECRET_VARIABLE, "from-variable")
    settings.clear_cache()
    try:
        body = alias_body(model, "3")
        assert post(client, body, signed_headers("from-variable", body)).status_code == 202
        monkeypatch.setenv(settings.PREVIOUS_SECRET_ENV, "old-secret")
        body4 = alias_body(model, "4", alias="champion")
        assert post(client, body4, signed_headers("old-secret", body4)).status_code == 202
    finally:
        Variable.delete(settings.SECRET_VARIABLE)
        settings.clear_cache()


def test_an_oversized_body_is_413(client, secret):
    body = b"{" + b" " * 1_000_001 + b"}"
    assert post(client, body, signed_headers(secret, body)).status_code == 413


def test_the_plugin_mounts_the_receiver_on_airflows_api_server(
    airflow_db, secret, rollout, monkeypatch
):
    """Through Airflow's own api-server app: plugin discovered in the plugins folder, no JWT needed."""
    from airflow.api_fastapi.app import create_app

    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "test-jwt-secret")
    model, dag_id = rollout
    body = alias_body(model, "6")
    with TestClient(create_app()) as api:
        r = api.post(f"/model-rollout{URL}", content=body, headers=signed_headers("wrong", body))
        assert r.status_code == 401
        r = api.post(f"/model-rollout{URL}", content=body, headers=signed_headers(secret, body))
        assert r.status_code == 202, r.text
        assert r.json()["run_id"] == "rollout__v6"
    assert [r.run_id for r in runs_of(dag_id)] == ["rollout__v6"]
