-- One PostgreSQL server, one database per service. Runs once, when the postgres container
-- starts on an empty data volume (/docker-entrypoint-initdb.d), as POSTGRES_USER (owner of all three).
CREATE DATABASE mlflow;   -- MLflow tracking + model registry (backend store)
CREATE DATABASE prefect;  -- Prefect server
CREATE DATABASE optuna;   -- Optuna studies shared by the tuning workers (OPTUNA_STORAGE)
