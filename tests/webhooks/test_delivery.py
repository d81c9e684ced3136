"""A real MLflow server delivers a real signed webhook to the receiver, which queues the run."""

from __future__ import annotations

import threading
import time

import pytest
from wh_support import new_version, runs_of, wait_for

from model_rollout.cli import main


@pytest.fixture
def receiver_url(airflow_db, secret):
    """The receiver app served over HTTP on 127.0.0.1 by uvicorn, in this process's DB setup."""
    import uvicorn

    from model_rollout.webhooks.receiver import app

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, timeout=30), "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/webhooks/mlflow"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def registered_webhook(mlflow_server, receiver_url, model_name, monkeypatch):
    """`model-rollout register-webhook` pointing MLflow at the receiver; deleted afterwards."""
    from mlflow import MlflowClient

    name = f"rollout-{model_name}"
    rc = main(
        [
            "register-webhook",
            "--url",
            receiver_url,
            "--name",
            name,
            "--tracking-uri",
            mlflow_server,
            "--events",
            "model_version_alias.created",
            "--test",  # MLflow's sample payload: signed, unknown model -> 202 ignored
        ]
    )
    assert rc == 0
    yield name
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    for w in client.list_webhooks(max_results=100):
        if w.name == name:
            client.delete_webhook(w.webhook_id)


def test_mlflow_delivers_a_signed_alias_event_that_queues_the_rollout(
    mlflow_client, policies, make_rollout_dag, model_name, registered_webhook
):
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from model_rollout.webhooks.dedupe import deliveries

    policies(model_name)
    dag_id = make_rollout_dag(model_name)
    version = new_version(mlflow_client, model_name)
    time.sleep(1.5)  # MLFLOW_WEBHOOK_CACHE_TTL=1: the server sees the new webhook
    mlflow_client.set_registered_model_alias(model_name, "challenger", version)

    runs = wait_for(lambda: runs_of(dag_id), timeout=60)
    assert [(r.run_id, r.conf, r.state) for r in runs] == [
        (f"rollout__v{version}", {"version": version}, "queued")
    ]
    with create_session() as session:
        rows = session.execute(
            select(deliveries.c.outcome, deliveries.c.version).where(
                deliveries.c.model == model_name
            )
        ).all()
    assert [tuple(r) for r in rows] == [("started", version)]

    # setting the alias again (a new delivery) does not start the version twice
    mlflow_client.delete_registered_model_alias(model_name, "challenger")
    mlflow_client.set_registered_model_alias(model_name, "challenger", version)

    def two_deliveries():
        with create_session() as session:
            return (
                len(
                    session.execute(
                        select(deliveries).where(deliveries.c.model == model_name)
                    ).all()
                )
                >= 2
            )

    assert wait_for(two_deliveries, timeout=60)
    assert len(runs_of(dag_id)) == 1
