"""Whole rollouts through the real decision code, and the planner, on the shipped policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model_rollout.decisions import monitor as monitor_module
from model_rollout.decisions.planner import plan_rollout
from model_rollout.decisions.simulate import simulate, simulate_rollout, summarise
from model_rollout.decisions.traffic import Effect, Traffic, parse_effects
from model_rollout.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = load_policy(ROOT / "include" / "policies" / "iris.yaml")


def test_identical_candidates_are_promoted_after_the_windows():
    results = simulate(SHIPPED, Traffic(rate=200), Effect(), runs=12, seed=100, jobs=2)
    s = summarise(results)
    assert s.promoted == 1.0, s.example_reasons
    assert s.median_decision_minutes == pytest.approx(40.0, abs=1.0)  # the windows, no more
    assert all("within tolerance" in r.reason for r in results)


@pytest.mark.parametrize(
    ("effects", "traffic", "stages"),
    [
        (["errors=2x"], Traffic(rate=200, error_rate=0.01), {"shadow"}),
        (["crash=8%"], Traffic(rate=200), {"shadow"}),
        (["latency=+20%"], Traffic(rate=200), {"canary_5", "step_25"}),
        (["tail=+200ms@3%"], Traffic(rate=200), {"canary_5", "step_25"}),
        (["kpi=-15%"], Traffic(rate=200, feedback_share=1.0), {"canary_5", "step_25"}),
    ],
)
def test_bad_candidates_are_rolled_back_before_the_50_percent_step(effects, traffic, stages):
    results = simulate(SHIPPED, traffic, parse_effects(effects), runs=6, seed=200, jobs=2)
    assert {r.outcome for r in results} == {"rolled_back"}, [r.reason for r in results]
    assert {r.stage for r in results} <= stages


def test_at_two_requests_a_second_nothing_is_promoted_and_the_pause_says_how_long():
    for seed in (1, 2, 3):
        r = simulate_rollout(SHIPPED, Traffic(rate=2), Effect(), seed=seed)
        assert r.outcome == "paused", r
        assert r.needed_seconds and r.needed_seconds > 3600, r
        assert "min more traffic" in r.reason


def test_the_simulator_runs_the_monitor_the_dag_runs(monkeypatch):
    """Break StageMonitor.look and the simulation's outcome follows: no copy of the logic."""
    real = monitor_module.StageMonitor.look

    def always_degraded(self, snapshot, earlier=(), *, now):
        out = real(self, snapshot, earlier, now=now)
        return out or {"outcome": "degraded", "reason": "patched", "needed_seconds": None}

    monkeypatch.setattr(monitor_module.StageMonitor, "look", always_degraded)
    r = simulate_rollout(SHIPPED, Traffic(rate=200), Effect(), seed=1)
    assert r.outcome == "rolled_back" and r.stage == "shadow" and "patched" in r.reason


def test_effects_parse_and_bad_ones_say_what_is_expected():
    e = parse_effects(["errors=2x", "latency=+20%", "tail=+200ms@3%", "kpi=-15%", "flips=5%"])
    assert (e.error_factor, e.latency_factor, e.tail_ms, e.tail_share) == (2.0, 1.2, 200.0, 0.03)
    assert (e.kpi_factor, e.flip_rate) == (pytest.approx(0.85), 0.05)
    with pytest.raises(ValueError, match="tail=\\+200ms@3%"):
        parse_effects(["tail=200ms"])
    with pytest.raises(ValueError, match="unknown effect 'speed=2x'"):
        parse_effects(["speed=2x"])


def test_the_plan_warns_where_a_window_is_too_short_and_recommends_one():
    busy = plan_rollout(SHIPPED, Traffic(rate=200))
    assert not any("too short" in w for w in busy.warnings)
    assert busy.expected_minutes == pytest.approx(40.0)
    quiet = plan_rollout(SHIPPED, Traffic(rate=20))
    assert any("step_50: its 10 min window is too short" in w for w in quiet.warnings)
    proof = quiet.stages[-1]
    assert proof.role == "proof" and proof.decides_minutes > 30
    assert quiet.recommended_proof_window_minutes >= proof.decides_minutes - 1
    assert quiet.recommended_max_stage_minutes > quiet.recommended_proof_window_minutes
    # more traffic never needs more time
    times = [plan_rollout(SHIPPED, Traffic(rate=r)).stages[-1].decides_minutes for r in (50, 500)]
    assert times[0] >= times[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "model_rollout.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"MODEL_ROLLOUT_POLICIES": str(ROOT / "include" / "policies"), "PATH": ""},
        cwd=ROOT,
    )


def test_cli_simulate_json_has_the_promised_fields():
    p = cli("simulate", "iris", "--rate", "200", "--runs", "4", "--json", "--effect", "crash=8%")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    for key in ("runs", "promoted", "rolled_back", "paused", "median_decision_minutes"):
        assert key in doc, key
    assert doc["runs"] == 4 and doc["rolled_back"] == 1.0 and doc["effect"] == "crash=0.08"
    assert "4/4 rollouts" in p.stderr  # progress


def test_cli_plan_and_bad_input(tmp_path):
    (tmp_path / "iris.yaml").write_text("steps: [10, 100]\n")
    p = cli("plan", "iris", "--rate", "20", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["stages"][-1]["role"] == "proof" and doc["warnings"]
    bad = cli("simulate", "iris", "--rate", "20", "--effect", "errors=twice")
    assert bad.returncode == 2 and "errors=2x" in bad.stderr
    assert SHIPPED.expected_traffic is not None  # the shipped policy says its traffic
    assert cli("plan", "iris").returncode == 0
    missing = cli("plan", "iris", "--policies", str(tmp_path))
    assert missing.returncode == 2 and "--rate" in missing.stderr
    unknown = cli("plan", "nope", "--rate", "1")
    assert unknown.returncode == 2 and "no rollout policy for model 'nope'" in unknown.stderr
