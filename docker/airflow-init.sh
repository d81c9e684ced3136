#!/usr/bin/env bash
# airflow-init: runs once before the Airflow components start (they wait for it to exit 0),
# so a wrong database URL, connection or policy stops the stack here with one clear message
# instead of surfacing in the first rollout.
set -euo pipefail

echo "airflow-init: migrating the metadata database"
airflow db migrate

echo "airflow-init: checking what the project's hooks resolve"
python - <<'PY'
"""The connections exactly as the rollout tasks will read them (hooks, env fallbacks)."""

import sys

from model_rollout.orchestration.hooks import GatewayHook, MlflowRegistryHook

tracking_uri = MlflowRegistryHook().tracking_uri()
gateway_url = GatewayHook().endpoint().url
problems = []
if not tracking_uri:
    problems.append("no MLflow tracking URI: set AIRFLOW_CONN_MLFLOW_DEFAULT or MLFLOW_TRACKING_URI")
if not gateway_url:
    problems.append("no gateway URL: set AIRFLOW_CONN_MODEL_GATEWAY_DEFAULT or MODEL_GATEWAY_URL")
for p in problems:
    print(f"airflow-init: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"airflow-init: mlflow_default -> {tracking_uri}; model_gateway_default -> {gateway_url}")
PY

echo "airflow-init: validating rollout policies"
model-rollout validate-policies

# SimpleAuthManager logins: the admin password comes from AIRFLOW_ADMIN_PASSWORD instead of
# being generated and printed in the api-server's log. (Production: a real auth manager.)
passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}"
if [[ -n "$passwords_file" ]]; then
  echo "airflow-init: writing the admin login to $passwords_file"
  python - "$passwords_file" <<'PY'
"""Write {user: password} with mode 0600 (first user of SIMPLE_AUTH_MANAGER_USERS), atomically."""

import json
import os
import sys

path = sys.argv[1]
password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
if not password:
    sys.exit("airflow-init: AIRFLOW_ADMIN_PASSWORD is empty")
users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS") or "admin:admin"
user = users.split(",")[0].split(":")[0].strip()
tmp = f"{path}.tmp"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump({user: password}, f)
os.replace(tmp, path)
PY
fi
echo "airflow-init: done"
