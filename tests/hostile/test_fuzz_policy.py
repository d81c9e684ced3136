"""Hostile policy files: the loader answers a valid Policy or a PolicyError, nothing else.

Inputs: random YAML documents, random bytes, and the shipped policy with one field replaced by
a hostile YAML value (NaN, 10^400, dates, aliases, tags, deep nesting...), a field removed or
an unknown one added. A PolicyError must say where the problem is: the field, or for YAML that
does not parse, the line. A Policy that loads must be usable: every duration fits a timedelta.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hostile.fuzzing import Tally, fuzz_settings, json_values, mostly, mutated
from hypothesis import example, given
from hypothesis import strategies as st

from model_rollout.policy import Policy, PolicyError, load_policy

pytestmark = pytest.mark.timeout(300)

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "policies" / "iris.yaml"
BASE = yaml.safe_load(SHIPPED.read_text())
SENTINEL = "__HOSTILE_VALUE__"
DURATIONS = (
    "step_duration",
    "poll_interval",
    "max_stage_duration",
    "stability_window",
    "retry_delay",
    "task_timeout",
)

# YAML values written as YAML text: what a person (or an attacker) can put in the file
RAW_VALUES = [
    "~", "yes", "no", "on", "off", "''", "'\\u0000'", "[]", "{}", "[[]]",
    ".nan", ".inf", "-.inf", "1.0e+400", "-1.0e+400", "9" * 400, "-" + "9" * 40,
    "0x" + "f" * 2000, "9" * 5000, "0o17", "1_000", "1:30:00", "2001-12-14",
    "2001-13-45", "2001-12-14t21:59:43.10-05:00", "!!binary aGVsbG8=", "!!set {a, b}",
    "!!python/object/apply:os.system [echo]", "!!float abc", "!!int 1.5", "*undefined",
    "'10m'", "'-5s'", "'1.5h'", "'30 s'", "'1e3s'", "'10m\\n'", "'999999999999d'", "'0.5ms'",
    "[5, 25, 50, 100]", "[100]", "[50, 25, 100]", "[0, 100]", "{5: 10s, 7: 1m}",
    "{" * 2000 + "}" * 2000, "[" * 5000 + "]" * 5000,
]  # fmt: skip


def paths(doc, prefix=()) -> list[tuple]:
    """Every key path of the shipped policy (nested mappings included)."""
    out = []
    for k, v in doc.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += paths(v, (*prefix, k))
    return out


# fields a policy may have but iris.yaml leaves out, so mutations reach them too
FIELDS = paths(BASE) + [
    ("step_durations",),
    ("retry_delay",),
    ("task_timeout",),
    ("task_retries",),
    ("first_rollout",),
    ("max_stage_duration",),
    ("after_max_stage_duration",),
    ("approval", "timeout"),
    ("shadow", "judge_latency"),
    ("staging", "require_signature_compatible"),
    ("judge", "min_samples"),
    ("judge", "latency", "quantiles"),
    ("judge", "kpi", "enabled"),
    ("judge", "errors", "enabled"),
]


@st.composite
def one_field_changed(draw) -> tuple[bytes, str]:
    """(policy text, top-level field) with one field set, removed or added."""
    doc = yaml.safe_load(SHIPPED.read_text())
    path = draw(st.sampled_from(FIELDS))
    op = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
    parent = doc
    for k in path[:-1]:
        parent = parent.setdefault(k, {})
        if not isinstance(parent, dict):
            return SHIPPED.read_bytes(), path[0]
    if op == "delete":
        parent.pop(path[-1], None)
        return yaml.safe_dump(doc).encode(), path[0]
    key = path[-1] if op == "set" else draw(st.text(min_size=1, max_size=12))
    parent[key] = SENTINEL
    field = key if len(path) == 1 else path[0]
    text = yaml.safe_dump(doc, width=10**9)
    value = draw(
        mostly(
            st.sampled_from(RAW_VALUES),
            json_values(8).map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
            in_ten=6,
        )
    )
    if "\n" in value or value.startswith(("{", "[", "!", "*", "&")):
        value = value.replace("\n...", "").replace("\n", " ")
    return text.replace(SENTINEL, value, 1).encode(), field


documents = st.one_of(
    one_field_changed(),
    mutated(SHIPPED.read_bytes()).map(lambda b: (b, None)),
    json_values().map(lambda v: (yaml.safe_dump(v).encode(), None)),
    st.binary(max_size=200).map(lambda b: (b, None)),
    st.text(max_size=200).map(lambda t: (t.encode(), None)),
)

BILLION_LAUGHS = (
    b"a: &a [x, x, x, x, x, x, x, x, x]\n"
    + b"".join(
        b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n"
        % ((ord("b") + i,) * 2 + (ord("a") + i,) * 9)
        for i in range(9)
    )
    + b"model: *j\n"
)


def test_fuzz_policy_loader(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policies")
    tally = Tally("policy loader", tmp_path_factory.getbasetemp())

    @fuzz_settings(600)
    @given(doc=documents)
    @example(doc=(BILLION_LAUGHS, "model"))
    @example(doc=(b"\xff\xfe\xfa not utf-8 \x80", None))
    @example(doc=(b"model: iris\nsteps: " + b"[" * 5000 + b"]" * 5000, None))
    @example(doc=(b"model: iris\njudge: &a {errors: *a}\n", "judge"))
    @example(doc=(b"step_duration: .nan\n", "step_duration"))
    @example(doc=(b"step_duration: " + b"9" * 400 + b"\n", "step_duration"))
    @example(doc=(b"task_timeout: 1.0e+300\n", "task_timeout"))
    def run(doc):
        text, field = doc
        path = folder / "iris.yaml"
        path.write_bytes(text)
        try:
            policy = load_policy(path)
        except PolicyError as e:
            tally.outcome("PolicyError")
            check_error(str(e), text, field)
        else:
            tally.outcome("valid Policy")
            check_usable(policy, text)

    try:
        run()
    finally:
        tally.report()
    assert tally.outcomes["PolicyError"] and tally.outcomes["valid Policy"]


def check_error(message: str, text: bytes, field: str | None) -> None:
    """The message says where: the field (a mapping was read) or the YAML line."""
    assert len(message) < 20_000, message[:500]
    try:
        parsed = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - not YAML (or not buildable): the loader must say so
        assert "not valid YAML" in message, message
        where = ("line ", "position ", "nested too deeply")
        assert any(w in message for w in where), message
        return
    if not isinstance(parsed, dict) and parsed is not None:
        assert "expected a mapping of policy fields" in message, message
        return
    assert "field '" in message, message
    if field is not None:  # one field was changed: the error names it
        assert str(field) in message, (field, message)


def check_usable(policy: Policy, text: bytes) -> None:
    """Only a mapping (or an empty file) is a policy, and every duration fits a timedelta."""
    parsed = yaml.safe_load(text)
    assert parsed is None or isinstance(parsed, dict), parsed
    for name in DURATIONS:
        seconds = getattr(policy, name)
        if seconds is None:  # max_stage_duration: 3x each window by default
            continue
        assert math.isfinite(seconds) and seconds >= 0, (name, seconds)
        timedelta(seconds=seconds)  # what the DAG factory builds from it
    for seconds in (policy.shadow.duration, policy.approval.timeout):
        timedelta(seconds=seconds)
    for step in policy.steps:
        timedelta(seconds=policy.window_for(step))
        timedelta(seconds=policy.max_duration_for(policy.window_for(step)))
    assert policy.steps[-1] == 100
