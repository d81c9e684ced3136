"""From an MLflow webhook body and a policy's trigger to "start rollout of version N" or "ignore".

Pure: no Airflow, no MLflow, no I/O. The receiver and the registry watcher share the run id
rule below, so the metadata DB's unique (dag_id, run_id) key stops a version being started
twice whichever path saw it first.
"""

from __future__ import annotations

import json
import re
import reprlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model_rollout.policy pulls the judge (scipy): not on the plugin import path
    from model_rollout.policy import Trigger

ALIAS_CREATED = "model_version_alias.created"
VERSION_CREATED = "model_version.created"
TAG_SET = "model_version_tag.set"

# The webhook events each policy trigger listens to (stage transitions fire none: polled).
EVENTS_FOR_TRIGGER = {"alias": ALIAS_CREATED, "version_created": VERSION_CREATED, "tag": TAG_SET}
_VERSIONED_EVENTS = {ALIAS_CREATED, VERSION_CREATED, TAG_SET, "model_version_tag.deleted"}

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,249}")  # what a policy file name can be
_VERSION = re.compile(r"[0-9]{1,19}")  # a registry version: a positive 64-bit integer, in ASCII
MAX_NAME_LENGTH = 256  # MLflow's registry refuses longer names, aliases and tag keys
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


class MalformedEvent(ValueError):
    """A signed body we cannot read; the message names the field and what was expected."""


@dataclass(frozen=True)
class RegistryEvent:
    """The part of a webhook body that can start a rollout."""

    event: str  # "<entity>.<action>", e.g. "model_version_alias.created"
    model: str
    version: str | None = None
    alias: str | None = None
    key: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class Start:
    """Queue `dag_id` with conf {"version": version} as run `run_id`."""

    model: str
    version: str
    dag_id: str
    run_id: str
    reason: str

    @property
    def conf(self) -> dict[str, str]:
        return {"version": self.version}


@dataclass(frozen=True)
class Ignore:
    """Nothing to start; `reason` is logged and returned to the sender."""

    reason: str


def run_id_for(version: str) -> str:
    """Run id of the automatic rollout of a version: at most one per version and DAG."""
    return f"rollout__v{version}"


def _short(value: object) -> str:
    """A bad value as an error message shows it: recognisable, never megabytes."""
    return _REPR.repr(value)


def _text(field: str, value: object, max_length: int = MAX_NAME_LENGTH) -> str:
    """A non-empty string the metadata DB can store (UTF-8, no NUL, bounded), else
    MalformedEvent."""
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"field '{field}': expected a non-empty string, got {_short(value)}")
    if len(value) > max_length:
        raise MalformedEvent(
            f"field '{field}': longer than {max_length} characters ({len(value)}): "
            f"MLflow sends no such {field.rsplit('.', 1)[-1]}"
        )
    if "\x00" in value:
        raise MalformedEvent(f"field '{field}': contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" escaped in the JSON
        raise MalformedEvent(f"field '{field}': not valid Unicode, got {_short(value)}") from None
    return value


def _str_field(data: dict, field: str, required: bool) -> str | None:
    value = data.get(field)
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _text(f"data.{field}", value)


def parse(body: bytes) -> RegistryEvent:
    """Read a webhook body; MalformedEvent when it is not the JSON object MLflow sends."""
    try:
        doc = json.loads(body)
    except ValueError as e:  # bad JSON, bad UTF-8, or an integer of more than 4300 digits
        raise MalformedEvent(f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise MalformedEvent("body is not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise MalformedEvent(f"body: expected a JSON object, got {type(doc).__name__}")
    entity = _text("entity", doc.get("entity"), 100)
    action = _text("action", doc.get("action"), 100)
    data = doc.get("data")
    if not isinstance(data, dict):
        raise MalformedEvent(f"field 'data': expected a JSON object, got {_short(data)}")
    event = f"{entity}.{action}"
    version = _str_field(data, "version", required=event in _VERSIONED_EVENTS)
    if version is not None:
        if not _VERSION.fullmatch(version):
            raise MalformedEvent(
                f"field 'data.version': expected digits (a registry version number), "
                f"got {_short(version)}"
            )
        version = str(int(version))  # "007" is version 7: one spelling, one run id
    return RegistryEvent(
        event=event,
        model=_str_field(data, "name", required=True),
        version=version,
        alias=_str_field(data, "alias", required=event.startswith("model_version_alias")),
        key=_str_field(data, "key", required=event.startswith("model_version_tag")),
        value=data.get("value") if isinstance(data.get("value"), str) else None,
    )


def is_policy_name(model: str) -> bool:
    """Whether a model name could have a policy file (guards the policy lookup's path)."""
    return bool(_MODEL_NAME.fullmatch(model))


def decide(event: RegistryEvent, trigger: Trigger) -> Start | Ignore:
    """Does this event start a rollout under the model's trigger?"""
    wanted = EVENTS_FOR_TRIGGER.get(trigger.event)
    if wanted is None:
        return Ignore(
            f"model {event.model!r} is triggered by stage {trigger.stage!r}, which MLflow "
            f"sends no webhook for; the registry watcher polls it"
        )
    if event.event != wanted:
        return Ignore(f"event {event.event} is not {wanted}, the trigger of {event.model!r}")
    if trigger.event == "alias" and event.alias != trigger.alias:
        return Ignore(f"alias {event.alias!r} is not the trigger alias {trigger.alias!r}")
    if trigger.event == "tag" and (event.key, event.value) != (trigger.tag_key, trigger.tag_value):
        return Ignore(
            f"tag {event.key}={event.value!r} is not the trigger tag "
            f"{trigger.tag_key}={trigger.tag_value!r}"
        )
    from model_rollout.policy import dag_id_for

    assert event.version is not None  # parse() requires it for the trigger events
    return Start(
        model=event.model,
        version=event.version,
        dag_id=dag_id_for(event.model),
        run_id=run_id_for(event.version),
        reason=f"{event.event} on {event.model!r} version {event.version}",
    )
