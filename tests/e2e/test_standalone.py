"""The demo's scenario end to end through `airflow standalone` and its REST API.

Real processes only: `mlflow server` (SQLite), the `model-gateway` CLI and `airflow standalone`
(scheduler, dag-processor, triggerer, api-server with the plugin), started by the demo's own
code (`model_rollout.demo.scenario.Demo`) on free loopback ports with shorter windows. Every
rollout is started by MLflow itself: setting the `challenger` alias makes the MLflow server
send its signed webhook to the receiver in Airflow's api-server; the legacy stage transition
is found by the registry watcher DAG. The tests run in file order on one stack (~5 min).
"""

from __future__ import annotations

import json
import sys
import time

import pytest
import requests
from support.servers import free_port

from model_rollout.demo import models as demo_models
from model_rollout.demo.scenario import DAG_ID, MODEL, POLICY, WATCHER_DAG_ID, Demo, Ports
from model_rollout.webhooks.signature import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

# The demo's policy with one live traffic step fewer and shorter windows.
E2E_POLICY = (
    POLICY.replace("steps: [20, 50, 100]", "steps: [25, 100]")
    .replace("step_duration: 25", "step_duration: 20")
    .replace("duration: 20}", "duration: 15}")
)
LEGACY = "iris_legacy"
LEGACY_DAG_ID = f"model_rollout__{LEGACY}"
# A model rolled out by a legacy stage transition (no webhook): the watcher must find it.
LEGACY_POLICY = f"""\
model: {LEGACY}
trigger: {{event: stage, stage: Staging}}
first_rollout: smoke_then_promote
steps: [100]
step_duration: 10
poll_interval: 5
shadow: {{enabled: false}}
staging: {{sample_requests: 10, latency_budget_p99_ms: 2000}}
holdout: {{path: data/iris_holdout.csv, target: species, metric: accuracy, tolerance: 0.05}}
"""
# A model whose stages outlast the test: a human ends them with "Mark success" (issue #14).
MANUAL = "iris_manual"
MANUAL_DAG_ID = f"model_rollout__{MANUAL}"
MANUAL_POLICY = f"""\
model: {MANUAL}
trigger: {{event: alias, alias: challenger_manual}}
steps: [25, 50, 75, 100]
step_duration: 900
poll_interval: 5
shadow: {{enabled: false}}
staging: {{sample_requests: 10, latency_budget_p99_ms: 2000}}
holdout: {{path: data/iris_holdout.csv, target: species, metric: accuracy, tolerance: 0.05}}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """MLflow + gateway + airflow standalone up, v1 serving, the webhook checked, traffic on."""
    assert E2E_POLICY != POLICY and "steps: [25, 100]" in E2E_POLICY
    ports = Ports(mlflow=free_port(), gateway=free_port(), airflow=free_port())
    demo = Demo(
        tmp_path_factory.mktemp("e2e"),
        ports=ports,
        policies={MODEL: E2E_POLICY, LEGACY: LEGACY_POLICY, MANUAL: MANUAL_POLICY},
    )
    try:
        demo.start()
        yield demo
    finally:
        if demo.traffic is not None:
            demo.traffic.stop()
        demo.services.stop_all()


def _runs(demo: Demo, dag_id: str) -> list[dict]:
    r = demo.api._call("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})
    return (r.json().get("dag_runs") or []) if r else []


def _route(demo: Demo, model: str) -> dict:
    r = requests.get(
        f"{demo.ports.gateway_url}/admin/models/{model}/route",
        headers={"Authorization": f"Bearer {demo.sec.gateway_token}"},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()


def _live_weights(route: dict) -> dict[str, int]:
    return {v: w for v, w in (route.get("weights") or {}).items() if w}


def _mlflow(demo: Demo):
    from mlflow import MlflowClient

    return MlflowClient(demo.ports.mlflow_url, demo.ports.mlflow_url)


def _post_webhook(demo: Demo, body: bytes, secret: str, **overrides: str) -> requests.Response:
    delivery, stamp = f"e2e-{time.time_ns()}", str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        DELIVERY_ID_HEADER: delivery,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, delivery, stamp, body),
    }
    headers.update(overrides)
    return requests.post(demo.ports.webhook_url, data=body, headers=headers, timeout=30)


def test_bad_signature_starts_nothing(stack):
    healthy = stack.models["healthy"][0]
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-11-28T09:00:00+00:00",
            "data": {"name": MODEL, "alias": "challenger", "version": healthy},
        }
    ).encode()
    wrong_secret = _post_webhook(stack, body, "not-the-secret")
    assert wrong_secret.status_code == 401, wrong_secret.text
    stale = str(int(time.time()) - 3600)
    old = _post_webhook(
        stack,
        body,
        stack.sec.webhook_secret,
        **{
            TIMESTAMP_HEADER: stale,
            DELIVERY_ID_HEADER: "e2e-stale",
            SIGNATURE_HEADER: sign(stack.sec.webhook_secret, "e2e-stale", stale, body),
        },
    )
    assert old.status_code == 401, old.text
    time.sleep(3.0)  # a run the receiver queued would be visible by now
    assert _runs(stack, DAG_ID) == []
    assert "challenger" not in _mlflow(stack).get_registered_model(MODEL).aliases


def test_healthy_candidate_ends_champion(stack):
    incumbent, healthy = stack.models["incumbent"][0], stack.models["healthy"][0]
    report = stack.rollout("healthy", stack.sec.gateway_token)

    assert report.state == "success", report
    runs = _runs(stack, DAG_ID)
    assert [r["dag_run_id"] for r in runs] == [f"rollout__v{healthy}"]
    assert runs[0]["triggering_user_name"] == "mlflow-webhook"
    assert runs[0]["conf"]["version"] == healthy
    aliases = _mlflow(stack).get_registered_model(MODEL).aliases
    assert aliases.get("champion") == healthy
    assert aliases.get("standby") == incumbent
    assert "challenger" not in aliases
    assert _live_weights(_route(stack, MODEL)) == {healthy: 100}
    # it went through every configured step on live traffic, not straight to 100%
    assert report.answered.get(f"{healthy} primary", 0) > 0
    assert {d.get("stage") for d in report.decisions} >= {"shadow", "canary_25"}
    assert stack.traffic.stats.failed == {} or sum(stack.traffic.stats.failed.values()) == 0


def test_degraded_candidate_rolled_back_incumbent_at_100(stack):
    champion, degraded = stack.models["healthy"][0], stack.models["degraded"][0]
    report = stack.rollout("degraded", stack.sec.gateway_token)

    assert report.state == "failed", report
    assert report.reason, "a rollback must say why"
    assert _live_weights(_route(stack, MODEL)) == {champion: 100}
    route = _route(stack, MODEL)
    assert degraded not in (route.get("shadows") or []) and route.get("staging") in (None, "")
    client = _mlflow(stack)
    assert client.get_registered_model(MODEL).aliases.get("champion") == champion
    tags = client.get_model_version(MODEL, degraded).tags
    assert tags.get("rollout.state") == "rolled_back", tags
    assert any(d.get("outcome") == "degraded" for d in report.decisions), report.decisions
    # caught before users saw it: the crashing version only ever answered mirrored copies
    assert report.answered.get(f"{degraded} primary", 0) == 0
    assert report.answered.get(f"{degraded} shadow", 0) > 0
    assert sum(stack.traffic.stats.failed.values()) == 0, stack.traffic.stats.failed


def test_stage_transition_found_by_watcher_starts_a_run(stack):
    """A legacy transition to Staging fires no webhook; the watcher DAG must start the run."""
    version = demo_models.register_sklearn(
        stack.ports.mlflow_url, 1.0, "legacy-stage model", model=LEGACY
    ).version
    deadline = time.monotonic() + 300
    while stack.api.dag(LEGACY_DAG_ID) is None and time.monotonic() < deadline:
        time.sleep(2.0)
    stack.api.unpause(LEGACY_DAG_ID)
    assert _runs(stack, LEGACY_DAG_ID) == []
    _mlflow(stack).transition_model_version_stage(LEGACY, version, "Staging")
    stack.api.set_paused(WATCHER_DAG_ID, False)

    run_id = f"rollout__v{version}"
    run = None
    deadline = time.monotonic() + 240
    while run is None and time.monotonic() < deadline:
        run = stack.api.run(LEGACY_DAG_ID, run_id)
        time.sleep(2.0)
    assert run is not None, f"the watcher started no run {run_id} within 240 s"
    assert run["conf"]["version"] == version
    while run["state"] not in ("success", "failed") and time.monotonic() < deadline + 240:
        time.sleep(3.0)
        run = stack.api.run(LEGACY_DAG_ID, run_id)
    # no champion yet: the staging checks alone promote it (first_rollout: smoke_then_promote)
    assert run["state"] == "success", run
    assert _mlflow(stack).get_registered_model(LEGACY).aliases.get("champion") == version
    assert _live_weights(_route(stack, LEGACY)) == {version: 100}
    # the watcher keeps polling; the version it handled is never started a second time
    time.sleep(8.0)
    assert [r["dag_run_id"] for r in _runs(stack, LEGACY_DAG_ID)] == [run_id]
    assert len([r for r in _runs(stack, DAG_ID)]) == 2


def _wait_state(demo: Demo, run_id: str, task_id: str, states: tuple, budget: float = 300.0):
    deadline = time.monotonic() + budget
    seen = None
    while time.monotonic() < deadline:
        tis = {t["task_id"]: t["state"] for t in demo.api.task_instances(MANUAL_DAG_ID, run_id)}
        seen = tis.get(task_id)
        if seen in states:
            return tis
        time.sleep(2.0)
    raise AssertionError(f"{task_id} not in {states} within {budget:.0f} s (last: {seen})")


@pytest.fixture
def cli(stack, monkeypatch, capsys):
    """`model-rollout` as an operator runs it: Airflow's REST API with the admin login, MLflow,
    the gateway and the policies from the environment; returns (exit code, stdout)."""
    from model_rollout import cli as cli_module

    monkeypatch.setenv("AIRFLOW_API_URL", stack.ports.airflow_url)
    monkeypatch.setenv("AIRFLOW_API_USERNAME", "admin")
    monkeypatch.setenv("AIRFLOW_API_PASSWORD", stack.api.password())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.ports.mlflow_url)
    monkeypatch.setenv("MODEL_GATEWAY_URL", stack.ports.gateway_url)
    monkeypatch.setenv("MODEL_GATEWAY_TOKEN", stack.sec.gateway_token)
    monkeypatch.setenv("MODEL_ROLLOUT_POLICIES", str(stack.workdir / "policies"))

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = cli_module.main(list(argv))
        out = capsys.readouterr()
        return code, out.out if code == 0 else out.out + out.err

    return run


def test_mark_success_on_a_monitor_passes_the_stage(stack, cli):
    """Airflow's own "Mark success" on a waiting monitor means "this stage passed": the
    rollout goes on to the next stage (before, the gate saw no outcome and rolled back).
    `model-rollout promote --full` does the same and skips the later stages to the cutover;
    `status` shows where the rollout is."""
    from model_rollout.backends.gateway import GatewayBackend

    url = stack.ports.mlflow_url
    v1 = demo_models.register_sklearn(url, 1.0, "manual incumbent", model=MANUAL).version
    _mlflow(stack).set_registered_model_alias(MANUAL, "champion", v1)
    gw = GatewayBackend(stack.ports.gateway_url, stack.sec.gateway_token)
    gw.deploy(MANUAL, v1)
    gw.set_traffic(MANUAL, {v1: 100}, [])
    v2 = demo_models.register_sklearn(url, 0.9, "manual candidate", model=MANUAL).version
    deadline = time.monotonic() + 300
    while stack.api.dag(MANUAL_DAG_ID) is None and time.monotonic() < deadline:
        time.sleep(2.0)
    stack.api.unpause(MANUAL_DAG_ID)
    run_id = f"manual__v{v2}"
    stack.api._call(
        "POST",
        f"/api/v2/dags/{MANUAL_DAG_ID}/dagRuns",
        json={"dag_run_id": run_id, "logical_date": None, "conf": {"version": v2}},
    )
    code, out = cli("promote", MANUAL)
    assert code == 1 and "waiting for a verdict" in out, out  # nothing to promote yet
    for stage in ("canary_25", "step_50"):
        _wait_state(stack, run_id, f"{stage}.monitor", ("deferred",))
        code, out = cli("status", MANUAL, "--json")
        assert code == 0, out
        st = json.loads(out)
        assert st["run_id"] == run_id and st["stage"] == stage and st["version"] == v2, st
        assert st["weights"] == ({v1: 75, v2: 25} if stage == "canary_25" else {v1: 50, v2: 50})
        if stage == "canary_25":  # Airflow's own move
            stack.api.set_task_state(MANUAL_DAG_ID, run_id, f"{stage}.monitor", "success")
        else:  # and every later stage: step_75 passes at its first look
            code, out = cli("promote", MANUAL, "--full", "--user", "e2e-operator")
            assert code == 0 and f"{stage}.monitor" in out, out
        tis = _wait_state(stack, run_id, f"{stage}.gate", ("success", "failed"))
        assert tis[f"{stage}.gate"] == "success", tis
        assert tis.get(f"{stage}.degraded") != "success", tis
    tis = _wait_state(stack, run_id, "cutover", ("success", "failed", "upstream_failed"))
    assert tis["cutover"] == "success", tis
    deadline = time.monotonic() + 120
    while stack.api.run(MANUAL_DAG_ID, run_id)["state"] != "success":
        assert time.monotonic() < deadline, stack.api.run(MANUAL_DAG_ID, run_id)
        time.sleep(2.0)
    decision = stack.api.xcom(MANUAL_DAG_ID, run_id, "canary_25.gate", key="decision")
    assert decision["outcome"] == "passed" and decision["manual"] is True, decision
    skipped = stack.api.xcom(MANUAL_DAG_ID, run_id, "step_75.gate", key="decision")
    assert skipped["reason"] == "promoted to cutover by e2e-operator", skipped
    tags = _mlflow(stack).get_model_version(MANUAL, v2).tags
    assert "marked success" in tags.get("rollout.manual_decision", ""), tags
    assert _mlflow(stack).get_registered_model(MANUAL).aliases.get("champion") == v2
    assert _live_weights(_route(stack, MANUAL)) == {v2: 100}


def test_abort_with_the_dag_paused_restores_the_incumbent_at_once(stack, cli):
    """`retry` starts a version; `pause` holds it (and says so in `status`); `abort` during
    the healthy canary puts 100% back on the incumbent through the router itself — the DAG
    paused, so no task could do it — then the run ends rolled back with the operator named
    as the reason."""
    url = stack.ports.mlflow_url
    champion = _mlflow(stack).get_registered_model(MANUAL).aliases["champion"]
    v3 = demo_models.register_sklearn(url, 0.8, "manual candidate 2", model=MANUAL).version
    code, out = cli("retry", MANUAL, v3)
    assert code == 0, out
    run_id = out.strip().split("run_id: ", 1)[1]
    _wait_state(stack, run_id, "canary_25.monitor", ("deferred",))
    assert _live_weights(_route(stack, MANUAL)) == {champion: 75, v3: 25}
    code, out = cli("pause", MANUAL, "--user", "e2e-operator")
    assert code == 0, out
    code, _ = cli("pause", MANUAL)
    assert code == 1  # already held
    code, out = cli("status", MANUAL)
    assert code == 0 and "paused by e2e-operator" in out, out
    stack.api.set_paused(MANUAL_DAG_ID, True)
    t0 = time.monotonic()
    code, out = cli("abort", MANUAL, "--user", "e2e-operator", "--json")
    took = time.monotonic() - t0
    assert code == 0, out
    assert _live_weights(_route(stack, MANUAL)) == {champion: 100}
    assert took < 5.0, f"abort took {took:.1f} s"
    print(  # past capsys: the figure for docs/operations.md
        f"ABORT 100% incumbent after {took:.2f} s (router: {json.loads(out)['restored_in_s']} s)",
        file=sys.__stderr__,
    )
    done = json.loads(out)
    assert done["monitor_failed"] == "canary_25.monitor" and done["candidate"] == v3, done
    tags = _mlflow(stack).get_model_version(MANUAL, v3).tags
    assert tags.get("rollout.aborted_by") == "e2e-operator", tags
    stack.api.set_paused(MANUAL_DAG_ID, False)
    deadline = time.monotonic() + 300
    while stack.api.run(MANUAL_DAG_ID, run_id)["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, "the aborted run did not end within 300 s"
        time.sleep(2.0)
    assert stack.api.run(MANUAL_DAG_ID, run_id)["state"] == "failed"
    tags = _mlflow(stack).get_model_version(MANUAL, v3).tags
    assert tags.get("rollout.state") == "rolled_back", tags
    assert tags.get("rollout.reason") == "aborted by e2e-operator", tags
    assert _live_weights(_route(stack, MANUAL)) == {champion: 100}
    code, out = cli("abort", MANUAL)
    assert code == 1  # nothing running any more
