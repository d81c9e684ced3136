"""Airflow: one rollout DAG per policy in include/policies (or $MODEL_ROLLOUT_POLICIES).

DAG id `model_rollout__<registered model>`; trigger with conf {"version": "<n>"}.
Parsing is cheap: no mlflow import, no model loading here.
"""

from model_rollout.orchestration.dag_factory import build_all

globals().update(build_all())
