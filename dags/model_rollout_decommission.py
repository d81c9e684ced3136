"""Airflow DAG that retires standby versions whose stability window has passed (hourly; dry-run param)."""

from model_rollout.orchestration.decommission import build_decommission_dag

dag = build_decommission_dag()
