"""Airflow side of model_rollout: hooks own connections, tasks act, the monitor waits deferred."""
