"""A whole healthy rollout and a whole rollback, each under constant load of ~200 requests/s.

The load runs in its own process (`python -m model_rollout.loadgen`, so it does not share a
GIL with `dag.test()`), records every answer (time, request id, version) and posts a business
outcome for a quarter of them. Checked per run: no failed request; the gateway's request log holds exactly
the answered request ids (no row lost, none invented); at each traffic step the versions that
answered match the configured weights within binomial tolerance; no answer gap longer than
MAX_GAP (the rate held is reported).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests
from scipy.stats import binomtest
from support.models import iris_rows, register_iris_version, scoring_payload
from support.rollout_env import champion_serving, rollout_env, states, ti_times, version_tags

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RATE = 220.0  # requests/s asked of the generator
# What the rate held depends on the machine (generator, gateway, Airflow and the other test
# group share 2 cores: 161-212 req/s seen), so it is reported, not asserted. What is asserted
# is the contract: no answer waits on a route change, i.e. no gap between consecutive answers
# longer than MAX_GAP while 16 workers keep asking (a stalled data plane shows as one).
MAX_GAP = 5.0
STEPS = [10, 50, 100]
POLICY = """
steps: [10, 50, 100]
step_duration: 12
poll_interval: 2
on_inconclusive: extend
after_max_stage_duration: rollback
task_retries: 0
retry_delay: 1
shadow: {enabled: false}
staging: {sample_requests: 10, latency_budget_p99_ms: 3000}
holdout: {path: data/iris_holdout.csv, target: species, metric: accuracy, tolerance: 0.05}
stability_window: 1
judge:
  alpha: 0.05
  min_samples: 80
  errors: {max_relative_increase: 0.5, min_absolute_increase: 0.05}
  latency: {quantiles: [0.5], tolerance: 3.0}
  latency_tail: {enabled: false}
  kpi: {enabled: false}
"""
MODELS = ("ld_healthy", "ld_slow")


@pytest.fixture(scope="module")
def env(mlflow_server, airflow_db, tmp_path_factory):
    with rollout_env(
        mlflow_server,
        tmp_path_factory.mktemp("policies"),
        tmp_path_factory.mktemp("gateway"),
        dict.fromkeys(MODELS, POLICY),
    ) as e:
        yield e


class Load:
    """`python -m model_rollout.loadgen` in a subprocess; `.result` once stopped."""

    def __init__(self, url: str, model: str, folder, conversion: dict[str, float]):
        payloads = folder / "payloads.json"
        payloads.write_text(json.dumps([scoring_payload([r]) for r in iris_rows(300, seed=3)]))
        self.out = folder / "load.json"
        self.cmd = [
            sys.executable,
            "-m",
            "model_rollout.loadgen",
            url,
            model,
            "--payloads",
            str(payloads),
            "--rate",
            str(RATE),
            "--max-seconds",
            "600",
            "--max-requests",
            str(int(RATE * 600)),
            "--workers",
            "16",
            "--feedback-share",
            "0.25",
            "--record",
            "--out",
            str(self.out),
            *(f"--conversion={v}={p}" for v, p in conversion.items()),
        ]
        self.result: dict = {}

    def __enter__(self) -> Load:
        self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE, text=True)
        time.sleep(3.0)  # both arms' baseline has traffic before the candidate gets any
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        self.result = json.loads(self.out.read_text())


def logged_request_ids(env, model: str) -> set[str]:
    """Primary-arm request ids in the gateway's SQLite request log (after a flush)."""
    requests.get(
        f"{env.gateway.url}/admin/models/{model}/stats",
        params={"since": 0},
        headers=env.gateway.auth,
        timeout=30,
    ).raise_for_status()
    db = sqlite3.connect(f"file:{env.gateway.data_dir / 'gateway.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT request_id FROM gw_requests WHERE model = ? AND arm = 'primary'", (model,)
        ).fetchall()
    finally:
        db.close()
    return {r[0] for r in rows}


def step_windows(dr) -> list[tuple[int, float, float]]:
    """(weight of the candidate, from, to) for each traffic step that ran, in unix time.

    From the end of its set_traffic task (the gateway serves the new split once the admin call
    returned) to the start of the next route change, shrunk by 0.5 s on each side for answers
    already in flight.
    """
    times = ti_times(dr)
    ran = {t for t, state in states(dr).items() if state == "success"}
    changes = sorted(
        (e.timestamp(), t)
        for t, (_, e) in times.items()
        if t in ran and (t.endswith(".set_traffic") or t in ("cutover", "rollback.restore_traffic"))
    )
    out = []
    for i, (end, task) in enumerate(changes):
        if not task.endswith(".set_traffic"):
            continue
        nxt = changes[i + 1][0] if i + 1 < len(changes) else None
        begin = times[changes[i + 1][1]][0].timestamp() if nxt else time.time()
        weight = int(task.split(".")[0].split("_")[1])
        out.append((weight, end + 0.5, begin - 0.5))
    return out


def check_load(env, model: str, v1: str, v2: str, dr, result: dict) -> list[str]:
    """The load assertions shared by both runs; lines for the report."""
    answered = sum(result["answered"].values())
    elapsed = result["stopped"] - result["started"]
    assert result["failed"] == {}, result["failed"]
    assert result["sent"] == answered
    times = sorted(t for t, _, _ in result["answers"])
    gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
    assert gap < MAX_GAP, f"the data plane answered nothing for {gap:.1f} s"
    ids = {rid for _, rid, _ in result["answers"]}
    assert len(ids) == answered
    logged = logged_request_ids(env, model)
    assert logged == ids, f"{len(ids - logged)} answers not logged, {len(logged - ids)} extra rows"
    lines = [
        f"{model}: {answered} requests in {elapsed:.0f} s ({answered / elapsed:.0f} req/s, "
        f"longest gap {gap:.2f} s), "
        f"0 failed, {result['feedback']} feedback, {len(logged)} log rows = answers"
    ]
    for weight, t0, t1 in step_windows(dr):
        served = [v for t, _, v in result["answers"] if t0 <= t <= t1]
        n, k = len(served), sum(1 for v in served if v == v2)
        assert set(served) <= {v1, v2}
        p = binomtest(k, n, weight / 100).pvalue if 0 < weight < 100 else float(k in (0, n))
        if weight == 100:
            assert k == n, f"step 100: {n - k} answers not from v{v2}"
        else:
            assert p > 1e-3, f"step {weight}%: v{v2} answered {k}/{n}, p={p:.2g}"
        lines.append(f"  step {weight}%: v{v2} answered {k}/{n} = {k / n:.3f} (p={p:.2f})")
    print("\n".join(lines))
    return lines


def test_healthy_rollout_under_load(env, tmp_path):
    model = "ld_healthy"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    with Load(env.gateway.url, model, tmp_path, {"*": 0.4}) as load:
        dr = env.dag(model).test(run_conf={"version": v2, "force": False})
        time.sleep(2.0)  # answers under the final route too
    st = states(dr)
    why = version_tags(env, model, v2).get("rollout.reason")
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), (why, sorted(st.items()))
    assert env.route(model)["weights"] == {v2: 100}
    lines = check_load(env, model, v1, v2, dr, load.result)
    assert len(lines) == len(STEPS)  # the rate line, then every step but 100% (the cutover)
    promoted = ti_times(dr)["cutover"][1].timestamp() + 0.5
    after = [v for t, _, v in load.result["answers"] if t > promoted]
    assert after and set(after) == {v2}, f"{len(after)} answers after the cutover"


def test_rollback_under_load(env, tmp_path):
    """A candidate 150 ms slower per call: every request still answered, latency rolls it back."""
    model = "ld_slow"
    v1 = champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="slow", delay_ms=150)
    with Load(env.gateway.url, model, tmp_path, {"*": 0.4}) as load:
        dr = env.dag(model).test(run_conf={"version": v2, "force": False})
        time.sleep(2.0)  # answers under the final route too
    st = states(dr)
    assert st["rollback.restore_traffic"] == "success", sorted(st.items())
    assert env.route(model)["weights"] == {v1: 100}
    lines = check_load(env, model, v1, v2, dr, load.result)
    assert len(lines) >= 2  # at least the first step ran before the rollback
    restored = ti_times(dr)["rollback.restore_traffic"][1].timestamp() + 0.5
    after = [v for t, _, v in load.result["answers"] if t > restored]
    assert after and set(after) == {v1}, f"{len(after)} answers after the rollback"
