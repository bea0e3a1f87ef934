#!/bin/bash
# One PostgreSQL server, one database and one login per service. Runs once, when the postgres
# container starts on an empty data volume (/docker-entrypoint-initdb.d), as POSTGRES_USER (the
# superuser, used by nothing else). Passwords come from the container's environment (infra/.env),
# passed to psql as variables (:'name' quotes them): nothing secret is in this file.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v mlflow_pw="${MLFLOW_DB_PASSWORD:?}" -v prefect_pw="${PREFECT_DB_PASSWORD:?}" \
     -v optuna_pw="${OPTUNA_DB_PASSWORD:?}" <<'EOSQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;     -- MLflow tracking + model registry (backend store)
CREATE ROLE prefect LOGIN PASSWORD :'prefect_pw';
CREATE DATABASE prefect OWNER prefect;   -- Prefect server
CREATE ROLE optuna LOGIN PASSWORD :'optuna_pw';
CREATE DATABASE optuna OWNER optuna;     -- Optuna studies shared by the tuning workers (OPTUNA_STORAGE)
REVOKE ALL ON DATABASE mlflow, prefect, optuna FROM PUBLIC;
GRANT CONNECT ON DATABASE mlflow TO mlflow;
GRANT CONNECT ON DATABASE prefect TO prefect;
GRANT CONNECT ON DATABASE optuna TO optuna;
EOSQL
