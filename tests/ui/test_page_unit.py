"""Rollouts page without servers: interval statistics, the data assembly and the HTML."""

from __future__ import annotations

import json
import math
import re

import pytest
from ui_support import FakeGateway, FakeRegistry, judge_verdict

from model_rollout.ui import data, page, series

MODEL = "fraud"
T0 = 1_764_300_000


def test_edges_are_whole_seconds_and_bounded():
    e = series.edges(T0 + 0.4, T0 + 100.2, 24)
    assert e[0] == T0 and e[-1] >= T0 + 100.2
    assert len(e) - 1 <= 24
    assert all(b - a == e[1] - e[0] >= 1 for a, b in zip(e, e[1:], strict=False))
    assert len(series.edges(T0, T0 + 3, 24)) == 4  # 1 s granularity at least


def test_interval_series_differences_of_cumulative_snapshots():
    gw = FakeGateway(MODEL, {"1": 90, "2": 10})
    for t in range(T0, T0 + 40):
        gw.add(t, "1", requests=9, errors=0, latency_ms=5)
        gw.add(t, "2", requests=1, errors=1 if t >= T0 + 20 else 0, latency_ms=20)
    s = series.sample(lambda since: gw.snapshot(MODEL, since), T0, T0 + 40, buckets=4)
    assert s["step"] == 10 and len(s["t"]) == 4
    v1, v2 = s["arms"]
    assert (v1["label"], v2["label"]) == ("v1", "v2")
    assert v1["requests"] == [90] * 4 and v2["requests"] == [10] * 4
    assert v2["errors"] == [0, 0, 10, 10]
    assert v2["error_rate"] == [0, 0, 1, 1]
    assert v1["share"] == [0.9] * 4
    assert v2["p50"][2] is None  # every request failed: no latency in that interval
    assert 3 < v1["p50"][0] < 9 and 12 < v2["p99"][0] < 40
    assert v1["p50"][0] <= v1["p95"][0] <= v1["p99"][0]


def test_interval_series_reads_explicit_latency_bounds():
    """A source with its own buckets (Prometheus `le`): interval quantiles from differences."""
    bounds = [5, 10, 25, 50, None]

    def snap(counts):
        arm = {"version": "1", "arm": "primary", "requests": sum(counts), "errors": 0}
        return {"arms": [{**arm, "latency": {"bounds_ms": bounds, "counts": counts}}]}

    # cumulative at T0, T0+10, T0+20: 10 fast ones, then 10 slow ones (25-50 ms)
    snaps = [snap([10, 0, 0, 10, 0]), snap([0, 0, 0, 10, 0]), snap([0, 0, 0, 0, 0])]
    s = series.interval_series(snaps, [T0, T0 + 10, T0 + 20])
    (v1,) = s["arms"]
    assert v1["requests"] == [10, 10]
    assert v1["p50"][0] == pytest.approx(math.sqrt(2.5 * 5), rel=1e-3)  # first bucket (2.5, 5]
    assert v1["p50"][1] == pytest.approx(math.sqrt(25 * 50), rel=1e-3)


def test_interval_series_empty_intervals_are_gaps():
    gw = FakeGateway(MODEL, {"1": 100})
    gw.add(T0 + 5, "1", requests=3, errors=0, latency_ms=5)
    s = series.sample(lambda since: gw.snapshot(MODEL, since), T0, T0 + 30, buckets=3)
    (arm,) = s["arms"]
    assert arm["requests"] == [3, 0, 0]
    assert arm["error_rate"][1:] == [None, None] and arm["p50"][1:] == [None, None]


@pytest.fixture
def seeded():
    gw = FakeGateway(MODEL, {"1": 90, "2": 10})
    for t in range(T0, T0 + 60):
        gw.add(t, "1", requests=18, errors=0, latency_ms=4)
        gw.add(t, "2", requests=2, errors=1, latency_ms=9)
    verdict = judge_verdict(gw.snapshot(MODEL, T0), "1", "2")
    assert verdict["status"] == "degraded"
    decisions = [
        {"stage": "staging", "outcome": "passed", "reason": "checks passed"},
        {
            "stage": "canary_10",
            "outcome": "degraded",
            "reason": verdict["reason"],
            "verdict": verdict,
        },
    ]
    reason = f"canary_10: {verdict['reason']}"
    tags = {
        "rollout.state": "rolled_back",
        "rollout.stage": "canary_10",
        "rollout.reason": reason,
        "rollout.evidence_run_id": "ev123",
        "rollout.run_id": "rollout__v2",
        "rollout.rolled_back_at": str(T0 + 60),
        "rollout.verdict": json.dumps({"status": "degraded", "errors": "degraded"}),
    }
    reg = FakeRegistry(MODEL, {"1": {"rollout.state": "promoted"}, "2": tags}, {"champion": "1"})
    sources = data.Sources(serving=lambda model: gw, registry=lambda: reg)
    sources.evidence.put(
        "ev123",
        {
            "run_id": "ev123",
            "experiment_id": "7",
            "stage": "rollback",
            "path": "evidence/rollback.json",
            "data": {"decisions": decisions, "reason": reason, "at": T0 + 60},
        },
    )
    return sources, reason


def test_collect_assembles_split_rollout_evidence_and_series(seeded):
    sources, reason = seeded
    d = data.collect(sources, now=T0 + 120)
    assert d["errors"] == []
    (m,) = [m for m in d["models"] if m["name"] == MODEL]
    assert m["route"]["weights"] == {"1": 90, "2": 10}
    r = m["rollout"]
    assert (r["version"], r["state"], r["reason"]) == ("2", "rolled_back", reason)
    assert r["deciding"]["stage"] == "canary_10"
    assert [s["stage"] for s in r["timeline"]] == ["staging", "canary_10", "rollback"]
    # No DAG run known: the chart covers the 15 minutes before the rollback, padded.
    assert m["window"]["end"] == T0 + 120
    total = sum(sum(a["requests"]) for a in m["series"]["arms"])
    assert total == 60 * 20
    assert [x["version"] for x in m["rollouts"]] == ["2", "1"]


def test_render_shows_split_chart_verdict_and_reason(seeded):
    sources, reason = seeded
    d = data.collect(sources, now=T0 + 120)
    html = page.render(d, page.Links("", "/model-rollout-ui/", "http://127.0.0.1:5000"), "admin")
    assert "v1 90%" in html and "v2 10%" in html
    assert reason.split(":")[0] in html and "Rollback reason" in html
    charts = re.findall(r'<svg class="chart" data-chart="(\w+)" data-points="(\d+)"', html)
    assert {name for name, _ in charts} == {"share", "errors", "latency"}
    assert all(int(n) > 0 for _, n in charts)
    assert 'data-metric="errors"' in html and "degraded" in html
    assert "/dags/model_rollout__fraud/runs/rollout__v2" in html
    assert "#/experiments/7/runs/ev123" in html
    assert "nan" not in html.lower().replace("nan-", "")


def test_window_override_and_broken_source():
    def broken(model):
        raise RuntimeError("connection refused")

    d = data.collect(data.Sources(serving=broken), window=300, now=T0)
    assert any("serving stack: connection refused" in e for e in d["errors"])
    html = page.render(d, page.Links("", "/x/", None))
    assert "Some sources did not answer" in html


def test_number_format():
    assert page._num(0.0123) == "0.0123"
    assert page._num(1234.5) == "1,234.5"
    assert page._num(math.nan) == "—"
    assert page._evalue(math.log(40)) == "40"


def test_timeline_from_task_instances():
    tasks = [
        {"task_id": "resolve", "state": "success", "start": T0, "end": T0 + 1},
        {"task_id": "shadow.start", "state": "success", "start": T0 + 2, "end": T0 + 3},
        {"task_id": "canary_5.set_traffic", "state": "success", "start": T0 + 60, "end": None},
        {"task_id": "step_25.set_traffic", "state": "success", "start": T0 + 120, "end": None},
        {"task_id": "step_50.set_traffic", "state": None, "start": None, "end": None},
    ]
    rollout = {
        "state": "rolling_out",
        "decisions": [{"stage": "shadow", "outcome": "healthy"}],
    }
    steps = data.timeline(rollout, tasks)
    assert [(s["label"], s["percent"], s["outcome"]) for s in steps] == [
        ("shadow", 0, "healthy"),
        ("canary 5%", 5, "passed"),
        ("25%", 25, "running"),
    ]
    html = page.timeline_html(steps)
    assert html.count("data-stage=") == 3 and "mirror" in html


def test_one_broken_model_does_not_break_the_page(seeded, monkeypatch):
    sources, _ = seeded

    def boom(*a, **k):
        raise KeyError("odd tag")

    monkeypatch.setattr(data, "timeline", boom)
    d = data.collect(sources, now=T0 + 120)
    assert any(e.startswith(f"model {MODEL}:") for e in d["errors"])
    html = page.render(d, page.Links("", "/x/", None))
    assert f'id="model-{MODEL}"' in html
