"""Rollback time per serving stack: the runs behind `bench/rollback_time.py` (issue #13).

Not collected by `make test` (the file name does not start with test_); the bench runs it with
pytest so that it gets the suite's real MLflow server and Airflow database. Each run is the
whole rollout DAG under dag.test() with a candidate that fails 12% of its requests (never on
the holdout or staging rows, so only live traffic shows it), traffic at 150 req/s, the test
policy's compressed windows, and shadow off so that the canary (25%) catches it. Stacks:

- gateway: the embedded gateway routes and its own statistics judge (no scrape);
- gateway+prometheus: the gateway routes, Prometheus (1 s scrapes) judges;
- nginx: nginx routes, one MLServer per version serves, Prometheus (1 s scrapes) judges.

Each run appends {stack, run, judged_s, exposed_s} to the JSON-lines file named by
ROLLBACK_TIMES_OUT: `judged_s` from the canary's traffic applied to the degraded verdict,
`exposed_s` to 100% back on the incumbent (the router confirmed the route live; the
candidate's retirement after that is not counted).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.models import register_iris_version
from support.rollout_env import (
    POLICY,
    canary_exposure,
    champion_serving,
    iris_traffic,
    live_only_failure_seed,
    rollout_env,
    states,
)
from support.servers import environment
from support.serving_stack import ServingStack

from model_rollout.backends.mlserver import MLServerDeployer
from model_rollout.backends.nginx import NginxRouter

RUNS = int(os.environ.get("ROLLBACK_RUNS", "3"))
OUT = Path(os.environ.get("ROLLBACK_TIMES_OUT", "rollback_times.jsonl"))
SERVING = {
    "gateway": "",
    "gateway+prometheus": (
        "serving:\n  metrics: prometheus\n  metrics_options: {scrape_interval: 1}\n"
    ),
    "nginx": (
        "serving:\n  router: nginx\n  deployer: mlserver\n  metrics: prometheus\n"
        "  metrics_options: {preset: mlserver, scrape_interval: 1}\n"
    ),
}
NO_PAIRS = "  shadow: {enabled: false}\n  output_drift: {enabled: false}\n"


def model_name(stack: str, run: int) -> str:
    return f"rt_{stack.replace('+', '_')}_{run}"


@pytest.fixture(scope="module")
def env(mlflow_server, airflow_db, tmp_path_factory):
    policies = {
        model_name(stack, i): POLICY.format(shadow="false", kpi="false") + NO_PAIRS + serving
        for stack, serving in SERVING.items()
        for i in range(RUNS)
    }
    with rollout_env(
        mlflow_server,
        tmp_path_factory.mktemp("rt-policies"),
        tmp_path_factory.mktemp("rt-gateway"),
        policies,
    ) as e:
        s = ServingStack(
            tmp_path_factory.mktemp("rt-stack"), targets=[f"127.0.0.1:{e.gateway.port}"]
        ).start()
        try:
            with environment(s.env()):
                e.stack = s
                yield e
        finally:
            s.stop()


@pytest.mark.parametrize("stack", list(SERVING))
@pytest.mark.parametrize("run", range(RUNS))
def test_rollback_time(env, stack, run):
    model = model_name(stack, run)
    if stack == "nginx":
        v1 = register_iris_version(env.tracking_uri, model, kind="good", alias="champion")
        MLServerDeployer.from_connection().deploy(model, v1)
        router = NginxRouter.from_connection()
        router.set_traffic(model, {v1: 100}, [])
        router.wait_ready(model, timeout=120)
        url = env.stack.url
    else:
        champion_serving(env, model)
        url = env.gateway.url
    v2 = register_iris_version(
        env.tracking_uri, model, kind="raises", p=0.12, seed=live_only_failure_seed(0.12)
    )
    with iris_traffic(url, model, max_seconds=300):
        dr = env.dag(model).test(run_conf={"version": v2})
    st = states(dr)
    assert st["canary_25.degraded"] == "success", st
    assert st["rollback.restore_traffic"] == "success", st
    judged, exposed = canary_exposure(dr)
    row = {"stack": stack, "run": run, "judged_s": judged, "exposed_s": exposed}
    with open(OUT, "a") as f:
        f.write(json.dumps(row) + "\n")
    print("ROLLBACK", json.dumps(row))
