"""MLflow registry webhooks: signature, event mapping, replay store and the FastAPI receiver.

Split so the pure parts (signature, events) are testable without Airflow, and the receiver
module alone touches Airflow's metadata DB.
"""
