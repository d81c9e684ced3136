"""The Rollouts page end to end, in headless Chromium behind Airflow's login.

Seeds what a rollout leaves behind, with real services: an MLflow server (versions, aliases,
`rollout.*` tags, an evidence run), the gateway with live traffic (95/5, then 90/10, then a
rollback for one model; 90/10 still running for the other), the judge's verdict on the real
snapshot, and DAG runs with task instances in Airflow's metadata DB. Airflow's api-server runs
in-process; the browser is redirected to the login page, signs in, and checks the page.
Saves docs/rollouts-page.png.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from ui_support import PASSWORD, USER, judge_verdict, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "rollouts-page.png"
A, B = "iris-classifier", "iris-ranker"  # A: rolled back; B: rolling out at 90/10
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.timeout(600)


def _stand_in_dag(folder: Path, dag_id: str) -> None:
    """A DAG with the rollout DAG's traffic task ids (no real work) in the metadata DB."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    path = folder / f"{dag_id.replace('-', '_')}.py"
    path.write_text(
        textwrap.dedent(
            f"""
            from airflow.providers.standard.operators.empty import EmptyOperator
            from airflow.sdk import DAG, TaskGroup

            with DAG({dag_id!r}, schedule=None, max_active_runs=1):
                resolve = EmptyOperator(task_id="resolve")
                with TaskGroup("canary_5"):
                    c5 = EmptyOperator(task_id="set_traffic")
                    c5 >> EmptyOperator(task_id="gate")
                with TaskGroup("step_10"):
                    s10 = EmptyOperator(task_id="set_traffic")
                    s10 >> EmptyOperator(task_id="gate")
                with TaskGroup("rollback"):
                    rb = EmptyOperator(task_id="restore_traffic")
                resolve >> c5 >> s10 >> rb
            """
        )
    )
    bag = BundleDagBag(dag_folder=str(path), bundle_path=folder, bundle_name="dags-folder")
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)


def _seed_run(dag_id, version, state, start, end, tasks, decisions=None) -> str:
    """Run `rollout__v<version>` with task instances {task_id: (state, start unix s)} and
    gate decisions {gate task_id: decision} in XCom, as the rollout DAG's gates push them."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    def dt(t):
        return datetime.fromtimestamp(t, tz=UTC) if t else None

    run_id = f"rollout__v{version}"
    trigger_dag(
        dag_id,
        run_id=run_id,
        conf={"version": version},
        triggered_by=DagRunTriggeredByType.TEST,
        run_after=dt(start),
    )
    with create_session() as s:
        dr = s.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        dr.state, dr.start_date, dr.end_date = state, dt(start), dt(end)
        for ti in dr.get_task_instances(session=s):
            if ti.task_id in tasks:
                ti.state, at = tasks[ti.task_id]
                ti.start_date, ti.end_date = dt(at), dt(at + 0.5)
        for task_id, decision in (decisions or {}).items():
            XComModel.set(
                "decision", decision, dag_id=dag_id, task_id=task_id, run_id=run_id, session=s
            )
    return run_id


def test_rollouts_page_behind_login(
    chromium, mlflow_server, gateway_factory, airflow_api, tmp_path, monkeypatch
):
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright
    from support.models import iris_rows, register_iris_version, scoring_payload

    from model_rollout.backends.gateway import GatewayBackend
    from model_rollout.loadgen import Traffic
    from model_rollout.orchestration.tasks import _verdict_summary
    from model_rollout.registry import Registry

    t_test = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - t_test - sum(phases.values()), 1)
        print(f"ui test phases (s): {phases}")

    # --- registry: A v1 good, v2 fails on 40% of rows; B reuses A's good model twice ---------
    a1 = register_iris_version(mlflow_server, A, kind="good")
    a2 = register_iris_version(mlflow_server, A, kind="raises", p=0.4, delay_ms=3)
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    client.create_registered_model(B)
    b1, b2 = (str(client.create_model_version(B, f"models:/{A}/{a1}").version) for _ in range(2))
    reg = Registry(mlflow_server)

    # --- gateway with live traffic ----------------------------------------------------------
    phase("registry")
    gw = gateway_factory()
    backend = GatewayBackend(gw.url, gw.token)
    with ThreadPoolExecutor(4) as pool:  # the gateway loads versions concurrently
        loads = [(A, a1), (A, a2), (B, b1), (B, b2)]
        list(pool.map(lambda mv: backend.deploy(*mv), loads))
    phase("gateway")
    rows = iris_rows(150, seed=3)

    def payload(i):
        return scoring_payload([rows[i % len(rows)]]), None

    t_start = time.time()
    for model, (v1, v2) in ((A, (a1, a2)), (B, (b1, b2))):
        backend.set_traffic(model, {v1: 95, v2: 5})
    traffic = [
        Traffic(gw.url, m, payload, rate=40, max_requests=2000, max_seconds=45, workers=2).start()
        for m in (A, B)
    ]
    try:
        time.sleep(5)
        verdict_b = judge_verdict(backend.snapshot(B, t_start), b1, b2)
        t_step = time.time()
        for model, (v1, v2) in ((A, (a1, a2)), (B, (b1, b2))):
            backend.set_traffic(model, {v1: 90, v2: 10})

        def degraded():
            time.sleep(1)
            v = judge_verdict(backend.snapshot(A, t_step), a1, a2)
            return v if v["status"] == "degraded" and time.time() - t_step > 6 else None

        verdict = wait_until(degraded, 30, "a degraded verdict on the failing candidate")
        t_rb = time.time()
        backend.set_traffic(A, {a1: 100})  # what rollback.restore_traffic does
        time.sleep(3)
    finally:
        stats = [t.stop() for t in traffic]
    sent_a = stats[0].sent
    assert stats[0].failed and stats[1].ok > 200, stats

    # --- what the rollout DAG records -------------------------------------------------------
    phase("traffic")
    reason = f"step_10: {verdict['reason']}"
    decision = {
        "stage": "step_10",
        "outcome": "degraded",
        "reason": verdict["reason"],
        "looks": 3,
        "verdict": verdict,
    }
    decisions = [
        {"stage": "staging", "outcome": "passed", "reason": "staging checks passed"},
        {"stage": "canary_5", "outcome": "healthy", "reason": "healthy"},
        decision,
    ]
    evidence = {"model": A, "candidate": a2, "incumbent": a1, "reason": reason}
    evidence_run = reg.record_evidence(
        A, a2, "rollback", {**evidence, "decisions": decisions, "at": t_rb}
    )
    reg.set_alias(A, "champion", a1)
    reg.set_tags(
        A,
        a2,
        {
            "state": "rolled_back",
            "stage": "step_10",
            "traffic_percent": "10",
            "run_id": f"rollout__v{a2}",
            "reason": reason,
            "evidence_run_id": evidence_run,
            "rolled_back_at": str(t_rb),
            "verdict": json.dumps(_verdict_summary(verdict)),
        },
    )
    reg.set_alias(B, "champion", b1)
    reg.set_alias(B, "challenger", b2)
    reg.set_tags(
        B,
        b2,
        {
            "state": "rolling_out",
            "stage": "step_10",
            "traffic_percent": "10",
            "run_id": f"rollout__v{b2}",
        },
    )
    folder = tmp_path / "dags"
    folder.mkdir()
    for model in (A, B):
        _stand_in_dag(folder, f"model_rollout__{model}")
    steps = {
        "resolve": ("success", t_start - 2),
        "canary_5.set_traffic": ("success", t_start),
        "step_10.set_traffic": ("success", t_step),
    }
    run_a = _seed_run(
        f"model_rollout__{A}",
        a2,
        "failed",
        t_start - 2,
        t_rb + 1,
        {**steps, "rollback.restore_traffic": ("success", t_rb)},
    )
    gate_b = {
        "stage": "canary_5",
        "outcome": verdict_b["status"],
        "reason": verdict_b["reason"],
        "looks": 2,
        "verdict": verdict_b,
    }
    _seed_run(
        f"model_rollout__{B}",
        b2,
        "running",
        t_start - 2,
        None,
        {**steps, "canary_5.gate": ("success", t_step - 0.5)},
        {"canary_5.gate": gate_b},
    )

    # --- Airflow's api-server and the browser -----------------------------------------------
    monkeypatch.setenv("MODEL_GATEWAY_URL", gw.url)
    monkeypatch.setenv("MODEL_GATEWAY_TOKEN", gw.token)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    phase("records")
    api = airflow_api
    page_url = f"{api}/model-rollout-ui/"
    assert httpx.get(f"{page_url}api/rollouts", timeout=30).status_code == 401
    r = httpx.get(page_url, timeout=30)
    assert r.status_code == 303 and r.headers["location"].startswith("/auth/login?next=")
    _check_plugin_registered(api)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(page_url, timeout=60_000)
            page.wait_for_url(re.compile(r"/auth/login"), timeout=30_000)
            page.fill('input[name="username"]', USER)
            page.fill('input[name="password"]', PASSWORD)
            page.click('button[type="submit"]')
            page.wait_for_url(re.compile(r"/model-rollout-ui/"), timeout=60_000)
            page.wait_for_selector(f"section#model-{A}", timeout=90_000)

            row_a = page.locator(f'tr[data-model="{A}"]').inner_text()
            row_b = page.locator(f'tr[data-model="{B}"]').inner_text()
            assert f"v{a1} 100%" in row_a and "rolled back" in row_a and "degraded" in row_a
            assert f"v{b1} 90%" in row_b and f"v{b2} 10%" in row_b and "rolling out" in row_b
            assert verdict_b["status"] in row_b  # the gate decision read from XCom

            sec = page.locator(f"section#model-{A}")
            assert reason[:60] in sec.locator('[data-role="reason"]').inner_text()
            assert "degraded" in sec.locator('tr[data-metric="errors"]').inner_text()
            stages = sec.locator(".steps .step").evaluate_all(
                "els => els.map(e => e.dataset.stage)"
            )
            assert stages == ["canary_5", "step_10", "rollback"]
            for name in ("share", "errors", "latency"):
                chart = sec.locator(f'svg.chart[data-chart="{name}"]')
                assert int(chart.get_attribute("data-points")) > 4, name
                assert chart.locator("polyline").count() >= 2, name
            href = f"/dags/model_rollout__{A}/runs/{run_a}"
            assert sec.locator(f'a[href="{href}"]').count() >= 1

            # The JSON endpoint with the browser's cookie: the chart's numbers.
            data = page.request.get(f"{page_url}api/rollouts?model={A}").json()
            arms = {a["version"]: a for a in data["models"][0]["series"]["arms"]}
            total = sum(sum(a["requests"]) for a in arms.values())
            assert 0.9 * sent_a <= total <= sent_a + 5, (total, sent_a)
            assert sum(arms[a2]["errors"]) > 0 and sum(arms[a1]["errors"]) == 0

            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            phase("page")

            # Airflow's own UI: the nav entry embeds the page (external_views url_route).
            page.goto(f"{api}/plugin/rollouts", timeout=60_000)
            frame = page.frame_locator('iframe[src*="/model-rollout-ui/"]')
            frame.locator(f"section#model-{A}").wait_for(timeout=90_000)
            page.screenshot(path=str(tmp_path / "rollouts-in-airflow.png"))
        finally:
            browser.close()
    phase("airflow ui")


def _check_plugin_registered(api: str) -> None:
    """Nav entry in /api/v2/plugins; the webhook receiver still mounted next to the page."""
    token = httpx.post(
        f"{api}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=30
    ).json()["access_token"]
    plugins = httpx.get(
        f"{api}/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "model_rollout"]
    assert {v["name"]: v["href"] for v in ours["external_views"]} == {
        "Rollouts": "/model-rollout-ui/"
    }
    assert {a["url_prefix"] for a in ours["fastapi_apps"]} == {
        "/model-rollout",
        "/model-rollout-ui",
    }
    hook = httpx.post(f"{api}/model-rollout/webhooks/mlflow", content=b"{}", timeout=30)
    assert hook.status_code in (400, 401, 503), hook.text
