"""The Rollouts page's "Now:" line: where a running stage stands and what it still needs."""

from __future__ import annotations

import time

from model_rollout.decisions.traffic import Effect, StageStream, Traffic
from model_rollout.ui.data import stage_progress
from model_rollout.ui.page import progress_html


class StagesBackend:
    """Answers snapshots of a rollout whose 5% and 25% steps are done and 50% is running."""

    def __init__(self, starts: dict[int, float], rate: float):
        self.starts = starts
        self.calls: list[tuple] = []
        self.streams = {}
        for step, start in starts.items():
            s = StageStream(Traffic(rate=rate), Effect(), mode="canary", step=step, seed=step)
            end = starts.get({5: 25, 25: 50}.get(step), time.time())
            s.advance(end - start)
            snap = s.snapshot()
            for a in snap["arms"]:  # the stream's versions are 1 and 2; the rollout's 3 and 4
                a["version"] = {"1": "3", "2": "4"}[a["version"]]
            snap["weights"] = {"3": 100 - step, "4": step}
            self.streams[step] = snap

    def snapshot(self, model, since, until=None):
        self.calls.append((model, since, until))
        step = next(s for s, t in self.starts.items() if abs(t - since) < 1e-6)
        return self.streams[step]


def test_a_running_proof_step_says_what_it_still_needs():
    now = time.time()
    starts = {5: now - 1500, 25: now - 900, 50: now - 300}
    tasks = [
        {"task_id": "shadow.start", "state": "success", "end": now - 2100},
        {"task_id": "canary_5.set_traffic", "state": "success", "end": starts[5]},
        {"task_id": "step_25.set_traffic", "state": "success", "end": starts[25]},
        {"task_id": "step_50.set_traffic", "state": "success", "end": starts[50]},
    ]
    backend = StagesBackend(starts, rate=20.0)
    p = stage_progress(backend, "iris", "4", {"champion": "3"}, tasks)
    assert p["stage"] == "step_50" and p["role"] == "proof"
    assert 290 < p["elapsed_seconds"] < 330 and p["window_seconds"] == 600
    assert "errors" in p["missing"] and p["needed_seconds"] > 600
    # the earlier steps were read over their own time ranges, with their own weights
    assert ("iris", starts[5], starts[25]) in backend.calls
    assert ("iris", starts[25], starts[50]) in backend.calls
    html = progress_html(p)
    assert 'data-role="progress"' in html and "Now: 50%" in html
    assert (
        "not yet shown within tolerance: errors" in html and "more min at the observed rate" in html
    )


def test_a_guard_step_and_no_rollout_say_less():
    now = time.time()
    tasks = [{"task_id": "canary_5.set_traffic", "state": "success", "end": now - 60}]
    backend = StagesBackend({5: now - 60}, rate=200.0)
    p = stage_progress(backend, "iris", "4", {"champion": "3"}, tasks)
    assert p["role"] == "guard" and p["missing"] == [] and p["needed_seconds"] is None
    assert "guard: goes on" in progress_html(p)
    assert stage_progress(backend, "iris", "4", {}, tasks) is None  # no incumbent: first rollout
    assert progress_html(None) == ""


def test_a_holding_guard_says_what_it_holds_for():
    now = time.time()
    starts = {5: now - 1260, 25: now - 660}
    tasks = [
        {"task_id": "canary_5.set_traffic", "state": "success", "end": starts[5]},
        {"task_id": "step_25.set_traffic", "state": "success", "end": starts[25]},
    ]
    backend = StagesBackend(starts, rate=200.0)
    p = stage_progress(backend, "iris", "4", {"champion": "3"}, tasks)
    assert p["stage"] == "step_25" and p["role"] == "guard" and p["leaning"] == []
    assert "guard: goes on" in progress_html(p)  # an identical candidate: nothing to hold for
    html = progress_html({**p, "leaning": ["kpi"]})
    assert "nearly shown on kpi" in html and "holds its share" in html
