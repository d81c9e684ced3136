# syntax=docker/dockerfile:1
# One image for every model_rollout container: Airflow's components, the MLflow server and the
# gateway run the same locked environment (uv.lock), so the versions that talk to each other
# (MLflow client and server, model flavours, psycopg) always match.
FROM python:3.11-slim

ARG UV_VERSION=0.13.9
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow

RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /opt/model_rollout

# Dependencies first, from the lock alone, so a code change does not reinstall them.
# The "distributed" extra brings the Celery provider and redis for the celery profile.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra distributed --no-install-project

COPY dags/ dags/
COPY plugins/ plugins/
COPY include/ include/
COPY docker/airflow-init.sh docker/airflow-init.sh
# imported by every Airflow component at start: preloads what DAG parses and tasks import
COPY docker/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py

# The project itself, editable (uv's default): the console scripts resolve to plugins/, the
# same files Airflow loads from its plugins folder, and include/ stays beside plugins/ where
# model_rollout.policy looks for policies and holdout data.
RUN uv sync --frozen --no-dev --extra distributed

# Non-root, group 0 (OpenShift-style arbitrary uids work too). Named volumes mounted on these
# folders start with this ownership.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --no-create-home --shell /bin/bash airflow \
    && mkdir -p /opt/airflow/logs /opt/airflow/auth /var/lib/mlflow/artifacts /var/lib/model-gateway \
    && chown -R 50000:0 /opt/airflow /var/lib/mlflow /var/lib/model-gateway \
    && chmod -R g+rwX /opt/airflow /var/lib/mlflow /var/lib/model-gateway
USER 50000

CMD ["model-rollout", "--help"]
