"""`make demo`: MLflow, the gateway and Airflow on this machine, two real rollouts, a summary.

Run it as `python -m model_rollout.demo [--exit | --stop]`. Kept import-light (no mlflow, no
airflow here): the gateway and Airflow import `model_rollout.demo.models` when they load the
demo's degraded model, and nothing else of this package.
"""
