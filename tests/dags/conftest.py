"""The DAG tests use the session's Airflow test home (`support.airflow_home`, loaded by
tests/conftest.py): the real dags/ folder parsed with the real plugins/ folder on the path."""
