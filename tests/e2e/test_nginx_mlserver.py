"""Whole rollouts on the second serving stack: nginx + MLServer + Prometheus (issue #13).

The same rollout DAG as on the gateway, run with dag.test() against real processes only: the
real MLflow registry; the MLServer deployer downloading each version and starting one
`mlserver` per version (its own venv); nginx splitting, mirroring and staging the traffic,
reloaded gracefully at every step; a real Prometheus scraping every version's server (file_sd
targets the deployer writes) and the judge reading it with the `mlserver` preset. A healthy
candidate ends at 100% on nginx with the registry's aliases moved; one failing 12% of its
requests is rolled back at the canary to 100% on the incumbent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from support.models import iris_rows, register_iris_version, scoring_payload
from support.rollout_env import (
    POLICY,
    canary_exposure,
    iris_traffic,
    live_only_failure_seed,
    states,
)
from support.servers import environment
from support.serving_stack import ServingStack

from model_rollout.backends.mlserver import MLServerDeployer
from model_rollout.backends.nginx import NginxRouter

pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parents[2]
ROWS = iris_rows(500, seed=1)
# MLServer's metrics count no prediction pairs or output values, and no business feedback:
# the shadow is judged on its errors and latency, the canary steps on errors and latency
STACK = """  shadow: {enabled: false}
  output_drift: {enabled: false}
serving:
  router: nginx
  deployer: mlserver
  metrics: prometheus
  metrics_options: {preset: mlserver, scrape_interval: 1}
"""
MODELS = {"nx_healthy": "true", "nx_errors": "false"}


@pytest.fixture(scope="module")
def stack(mlflow_server, airflow_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nx-policies")
    for model, shadow in MODELS.items():
        (folder / f"{model}.yaml").write_text(POLICY.format(shadow=shadow, kpi="false") + STACK)
    s = ServingStack(tmp_path_factory.mktemp("nx-stack")).start()
    env = {
        **s.env(),
        "MODEL_ROLLOUT_POLICIES": str(folder),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_REGISTRY_URI": mlflow_server,
    }
    try:
        with environment(env):
            from airflow.dag_processing.dagbag import DagBag

            bag = DagBag(dag_folder=str(ROOT / "dags"))
            assert not bag.import_errors, bag.import_errors
            s.bag = bag
            s.tracking_uri = mlflow_server
            yield s
    finally:
        s.stop()


def champion(stack, model: str) -> str:
    """v1 registered as champion, served by its MLServer at 100% behind nginx."""
    v1 = register_iris_version(stack.tracking_uri, model, kind="good", alias="champion")
    MLServerDeployer.from_connection().deploy(model, v1)
    router = NginxRouter.from_connection()
    router.set_traffic(model, {v1: 100}, [])
    router.wait_ready(model, timeout=120)
    return v1


def rollout(stack, model: str, version: str):
    """dag.test() of the model's rollout DAG with iris traffic through nginx."""
    with iris_traffic(stack.url, model, max_seconds=300) as t:
        dr = stack.bag.get_dag(f"model_rollout__{model}").test(run_conf={"version": version})
    return dr, states(dr), t.stats


def live_split(stack, model: str, n: int = 40) -> dict[str, int]:
    """Which versions answer `n` requests through nginx now (from each server's counters)."""
    deployer = MLServerDeployer.from_connection()

    def counts() -> dict[str, float]:
        out = {}
        for v, e in deployer.endpoints.of(model).items():
            if e.get("metrics_url"):
                text = requests.get(f"{e['metrics_url']}/metrics", timeout=10).text
                out[v] = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("rest_server_requests_total{") and "/invocations" in line
                )
        return out

    before = counts()
    for i in range(n):
        r = requests.post(
            f"{stack.url}/models/{model}/invocations",
            json=scoring_payload([ROWS[i]]),
            timeout=30,
        )
        assert r.status_code in (200, 400), r.text
    after = counts()
    return {v: int(after[v] - before.get(v, 0)) for v in after if after[v] > before.get(v, 0)}


def test_a_healthy_candidate_on_nginx_and_mlserver_is_promoted(stack):
    model = "nx_healthy"
    v1 = champion(stack, model)
    v2 = register_iris_version(stack.tracking_uri, model, kind="good")
    dr, st, traffic = rollout(stack, model, v2)
    why = version_tags_of(stack, model, v2).get("rollout.reason")
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), (why, sorted(st.items()))
    for task in ("shadow.monitor", "canary_25.monitor", "step_50.monitor", "cutover"):
        assert st[task] == "success", (task, st)
    route = NginxRouter.from_connection().route(model)
    assert route.weights == {v2: 100}, route
    assert stack.served_generation(model) == route.generation  # nginx reloaded onto it
    assert live_split(stack, model) == {v2: 40}
    al = aliases_of(stack, model)
    assert al["champion"] == v2 and al["standby"] == v1, al
    assert traffic.sent > 0


def test_an_error_regression_on_nginx_and_mlserver_rolls_back_at_the_canary(stack):
    model = "nx_errors"
    v1 = champion(stack, model)
    v2 = register_iris_version(
        stack.tracking_uri, model, kind="raises", p=0.12, seed=live_only_failure_seed(0.12)
    )
    dr, st, _ = rollout(stack, model, v2)
    assert str(dr.state) in ("failed", "DagRunState.FAILED"), st
    assert st["canary_25.degraded"] == "success", st
    assert st["rollback.restore_traffic"] == "success", st
    route = NginxRouter.from_connection().route(model)
    assert route.weights == {v1: 100}, route
    assert stack.served_generation(model) == route.generation
    assert live_split(stack, model) == {v1: 40}
    tags = version_tags_of(stack, model, v2)
    assert tags["rollout.state"] == "rolled_back" and "errors" in tags["rollout.verdict"], tags
    judged, exposed = canary_exposure(dr)
    print(
        f"TIMING error regression (nginx + MLServer + Prometheus, 1 s scrapes): degraded "
        f"verdict after {judged:.1f} s, 100% incumbent after {exposed:.1f} s"
    )


def version_tags_of(stack, model: str, version: str) -> dict[str, str]:
    return dict(registry(stack).get_model_version(model, version).tags)


def aliases_of(stack, model: str) -> dict[str, str]:
    return {k: str(v) for k, v in registry(stack).get_registered_model(model).aliases.items()}


def registry(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
