"""Airflow and MLflow settings for the trigger tests (receiver, watcher, webhook delivery).

Airflow runs in the session's one test home (`support.airflow_home`, loaded by tests/conftest.py).

The shared `mlflow_server` fixture (tests/conftest.py) starts `mlflow server` with os.environ:
the MLFLOW_WEBHOOK_* variables set below let it deliver signed webhooks to a loopback http
receiver, and see a new webhook within a second.
"""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # wh_support, whatever pytest's import mode


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(os.urandom(32)).decode()


os.environ.setdefault("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", _fernet_key())
os.environ.setdefault("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
os.environ.setdefault("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
os.environ.setdefault("MLFLOW_WEBHOOK_CACHE_TTL", "1")

SECRET = "test-webhook-secret"


@pytest.fixture(scope="session")
def make_rollout_dag(airflow_db, tmp_path_factory) -> Callable[[str], str]:
    """Put a one-task stand-in `model_rollout__<model>` into the metadata DB; returns its id.

    The receiver only needs the DAG to exist (trigger_dag reads DagModel and the serialized
    DAG), so the tests do not depend on the real rollout DAG files parsing.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    folder = tmp_path_factory.mktemp("stand_in_dags")
    DagBundlesManager().sync_bundles_to_db()

    def make(model: str) -> str:
        from model_rollout.policy import dag_id_for

        dag_id = dag_id_for(model)
        path = folder / f"{dag_id.replace('.', '_').replace('-', '_')}.py"
        path.write_text(
            textwrap.dedent(
                f"""
                from airflow.providers.standard.operators.empty import EmptyOperator
                from airflow.sdk import DAG

                with DAG({dag_id!r}, schedule=None, max_active_runs=1):
                    EmptyOperator(task_id="noop")
                """
            )
        )
        bag = BundleDagBag(dag_folder=str(path), bundle_path=folder, bundle_name="dags-folder")
        assert not bag.import_errors, bag.import_errors
        sync_bag_to_db(bag, "dags-folder", None)
        return dag_id

    return make


@pytest.fixture
def policies(tmp_path, monkeypatch) -> Callable[..., Path]:
    """write(model, **trigger) -> a policy file in a per-test MODEL_ROLLOUT_POLICIES folder."""
    folder = tmp_path / "policies"
    folder.mkdir()
    monkeypatch.setenv("MODEL_ROLLOUT_POLICIES", str(folder))

    def write(model: str, **trigger: str) -> Path:
        lines = [f"model: {model}"]
        if trigger:
            lines.append("trigger:")
            lines += [f"  {k}: {v!r}" for k, v in trigger.items()]
        path = folder / f"{model}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    write.folder = folder  # type: ignore[attr-defined]
    return write


@pytest.fixture
def secret(monkeypatch) -> str:
    from model_rollout.webhooks import settings

    monkeypatch.setenv(settings.SECRET_ENV, SECRET)
    monkeypatch.delenv(settings.PREVIOUS_SECRET_ENV, raising=False)
    settings.clear_cache()
    return SECRET


@pytest.fixture
def model_name() -> str:
    """A model name no other test uses (tests share one metadata DB and MLflow server)."""
    return f"wh-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def mlflow_client(mlflow_server) -> Iterator:
    from mlflow import MlflowClient

    yield MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
