#!/usr/bin/env bash
# Mounted into the postgres image's /docker-entrypoint-initdb.d: runs once, on the first start
# of an empty data volume. One PostgreSQL serves three components; each gets its own role and
# database (the role owns it, so Airflow, MLflow and the gateway can run their own migrations
# and cannot touch each other's tables). Passwords come from <NAME>_DB_PASSWORD in the
# container's environment, never from this file; psql quotes them (:'password').
# Changing a password later needs ALTER ROLE: this script does not run again.
set -eo pipefail

for name in airflow mlflow gateway; do
  var="${name^^}_DB_PASSWORD"
  password="${!var:?set $var (password of the $name database role)}"
  echo "init-databases: role and database $name"
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
    -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
done
