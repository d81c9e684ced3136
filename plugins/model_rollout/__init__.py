"""model_rollout: safe, statistically judged rollouts of MLflow model versions with Airflow."""
