"""The model_rollout Airflow plugin: mounts the MLflow webhook receiver on the api-server.

Every Airflow component imports plugins, so this file stays cheap: no mlflow, no airflow
internals beyond the plugin base; the receiver imports what it needs per request.
Endpoint: POST /model-rollout/webhooks/mlflow (see model_rollout.webhooks.receiver).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from model_rollout.webhooks.receiver import app as webhook_app


class ModelRolloutPlugin(AirflowPlugin):
    """Registers the webhook receiver app under `/model-rollout`."""

    name = "model_rollout"
    fastapi_apps = [{"app": webhook_app, "url_prefix": "/model-rollout", "name": "model_rollout"}]
