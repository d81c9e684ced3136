"""The model_rollout Airflow plugin: the MLflow webhook receiver and the Rollouts page.

Every Airflow component imports plugins, so this file stays cheap: no mlflow, no airflow
internals beyond the plugin base; the receiver imports what it needs per request, the page
builds its app on its first request.
Endpoints: POST /model-rollout/webhooks/mlflow (see model_rollout.webhooks.receiver);
GET /model-rollout-ui/ (see model_rollout.ui.app), in Airflow's nav as "Rollouts".
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from model_rollout.ui import URL_PREFIX as UI_PREFIX
from model_rollout.ui import app as ui_app
from model_rollout.webhooks.receiver import app as webhook_app


class ModelRolloutPlugin(AirflowPlugin):
    """Registers the webhook receiver under `/model-rollout` and the Rollouts page."""

    name = "model_rollout"
    fastapi_apps = [
        {"app": webhook_app, "url_prefix": "/model-rollout", "name": "model_rollout"},
        {"app": ui_app, "url_prefix": UI_PREFIX, "name": "model_rollout_ui"},
    ]
    # Shown in Airflow's nav; url_route embeds the page in the UI at /plugin/rollouts.
    external_views = [
        {
            "name": "Rollouts",
            "href": f"{UI_PREFIX}/",
            "destination": "nav",
            "url_route": "rollouts",
            "icon": f"{UI_PREFIX}/icon.svg",
        }
    ]
