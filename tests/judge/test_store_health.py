"""A snapshot taken while the gateway's store failed writes is never judged healthy."""

from __future__ import annotations

import json

import pytest

from model_rollout.judge import JudgeConfig, evaluate

from .helpers import arm, canary_snapshot, shadow_snapshot

FAILING = {
    "kind": "sqlite",
    "writable": False,
    "failing_since": 540.0,
    "last_error": "OperationalError: disk I/O error",
    "flush_errors": 240,
    "unflushed_rows": 1234,
    "dropped_log_rows": 0,
}
WRITABLE = {**FAILING, "writable": True, "failing_since": None, "last_error": None}


def healthy_canary(store=None) -> dict:
    snap = canary_snapshot(arm("1", 9_500_000, 95_000), arm("2", 500_000, 5_000))
    if store is not None:
        snap["store"] = store
    return snap


def canary(snap):
    return evaluate(snap, baseline="1", candidate="2", mode="canary", config=JudgeConfig())


def test_failing_store_turns_healthy_into_inconclusive_naming_the_store():
    assert canary(healthy_canary()).status == "healthy"  # the same counts, no store field
    v = canary(healthy_canary(FAILING))
    assert v.status == "inconclusive"
    assert not v.invalid  # not a broken experiment: the monitor keeps waiting
    assert "sqlite store has been failing writes for 60 s" in v.reason
    assert "1234 request-log rows" in v.reason and "disk I/O error" in v.reason
    # the per-metric evidence is still there, and healthy on its own
    assert {m.status for m in v.metrics.values()} == {"healthy", "not_applicable"}  # no KPI
    data = v.to_json()
    json.dumps(data, allow_nan=False)
    assert data["checks"]["store"] == {"complete": False, "reason": v.reason}


def test_writable_store_or_no_store_field_changes_nothing():
    for snap in (healthy_canary(WRITABLE), healthy_canary()):
        v = canary(snap)
        assert v.status == "healthy", v.reason
        assert "store" not in v.checks


def test_failing_store_is_the_reason_even_when_other_metrics_wait():
    snap = canary_snapshot(arm("1", 1_900, 19), arm("2", 100, 1))  # far too few requests
    assert "Not yet conclusive" in canary(snap).reason
    snap["store"] = FAILING
    v = canary(snap)
    assert v.status == "inconclusive" and "store has been failing writes" in v.reason


def test_degraded_stands_while_the_store_fails():
    # Counts up to the failure are an earlier look: evidence of degradation in it is valid.
    snap = canary_snapshot(arm("1", 190_000, 1_900), arm("2", 10_000, 200))
    snap["store"] = FAILING
    v = canary(snap)
    assert v.status == "degraded"
    assert v.checks["store"]["complete"] is False


@pytest.mark.parametrize("store", ["broken", {}, {"writable": "no"}, {"writable": None}])
def test_unreadable_store_health_is_not_healthy(store):
    v = canary(healthy_canary(store))
    assert v.status == "inconclusive"
    assert "store health is unreadable" in v.reason


def test_shadow_mode_too():
    out = {"kind": "categorical", "counts": {"a": 120_000, "b": 60_000, "c": 20_000}}
    base = arm("1", 200_000, 0, outputs=out)
    shadow = arm("2", 200_000, 0, arm_kind="shadow", outputs=out)
    snap = shadow_snapshot(base, shadow, 200_000, 198_000)
    cfg = JudgeConfig()
    assert evaluate(snap, baseline="1", candidate="2", mode="shadow", config=cfg).status == (
        "healthy"
    )
    snap["store"] = {**FAILING, "kind": "postgresql", "failing_since": None}
    v = evaluate(snap, baseline="1", candidate="2", mode="shadow", config=cfg)
    assert v.status == "inconclusive"
    assert v.reason.startswith("The gateway's postgresql store has been failing writes, 1234")
