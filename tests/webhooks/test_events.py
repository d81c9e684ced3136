"""Webhook body + policy trigger -> start a rollout of version N, or ignore with a reason."""

from __future__ import annotations

import json

import pytest

from model_rollout.policy import Trigger
from model_rollout.webhooks.events import (
    Ignore,
    MalformedEvent,
    Start,
    decide,
    is_policy_name,
    parse,
    run_id_for,
)


def body(entity: str, action: str, **data) -> bytes:
    return json.dumps({"entity": entity, "action": action, "timestamp": "t", "data": data}).encode()


ALIAS = body("model_version_alias", "created", name="iris", alias="challenger", version="3")
CREATED = body("model_version", "created", name="iris", version="4", source="s", tags={})
TAG = body(
    "model_version_tag", "set", name="iris", version="5", key="rollout.request", value="true"
)


@pytest.mark.parametrize(
    "raw, trigger, version",
    [
        (ALIAS, Trigger(), "3"),
        (CREATED, Trigger(event="version_created"), "4"),
        (TAG, Trigger(event="tag"), "5"),
        (
            body("model_version_alias", "created", name="iris", alias="candidate", version="7"),
            Trigger(event="alias", alias="candidate"),
            "7",
        ),
    ],
)
def test_the_models_trigger_starts_its_dag(raw, trigger, version):
    d = decide(parse(raw), trigger)
    assert isinstance(d, Start)
    assert (d.dag_id, d.version, d.conf) == ("model_rollout__iris", version, {"version": version})
    assert d.run_id == run_id_for(version) == f"rollout__v{version}"


@pytest.mark.parametrize(
    "raw, trigger, reason",
    [
        (ALIAS, Trigger(event="version_created"), "is not model_version.created"),
        (CREATED, Trigger(), "is not model_version_alias.created"),
        (
            body("model_version_alias", "created", name="iris", alias="champion", version="3"),
            Trigger(),
            "not the trigger alias",
        ),
        (
            body(
                "model_version_tag",
                "set",
                name="iris",
                version="5",
                key="rollout.request",
                value="no",
            ),
            Trigger(event="tag"),
            "not the trigger tag",
        ),
        (
            body("model_version_alias", "deleted", name="iris", alias="challenger"),
            Trigger(),
            "is not",
        ),
        (ALIAS, Trigger(event="stage"), "registry watcher polls it"),
        (body("registered_model", "created", name="iris", tags={}), Trigger(), "is not"),
    ],
)
def test_other_events_are_ignored_with_a_reason(raw, trigger, reason):
    d = decide(parse(raw), trigger)
    assert isinstance(d, Ignore)
    assert reason in d.reason


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (json.dumps({"action": "created", "data": {}}).encode(), "'entity'"),
        (
            json.dumps({"entity": "model_version", "action": "created", "data": []}).encode(),
            "'data'",
        ),
        (body("model_version", "created", version="1"), "'data.name'"),
        (body("model_version", "created", name="m"), "'data.version'"),
        (body("model_version", "created", name="m", version="1; drop"), "expected digits"),
        (body("model_version_alias", "created", name="m", version="1"), "'data.alias'"),
    ],
)
def test_malformed_bodies_name_the_field(raw, field):
    with pytest.raises(MalformedEvent, match=field):
        parse(raw)


def test_numeric_versions_are_accepted_as_strings():
    assert parse(body("model_version", "created", name="m", version=12)).version == "12"


@pytest.mark.parametrize(
    "name, ok",
    [("iris", True), ("fraud-v2.1_x", True), ("../etc/passwd", False), ("a/b", False), ("", False)],
)
def test_only_policy_file_names_reach_the_policy_lookup(name, ok):
    assert is_policy_name(name) is ok
