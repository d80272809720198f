#!/bin/sh
# PostgreSQL init script (mounted into /docker-entrypoint-initdb.d; runs once, on an empty data
# volume). Creates the two databases of the deployment, each owned by its own login role:
#   tuner   the jobs table and the Optuna studies (TUNER_DB_URL)
#   mlflow  the MLflow tracking store (mlflow server --backend-store-uri)
# Passwords come from the environment (.env); psql variables quote them, nothing is spliced
# into SQL text by the shell.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v tuner_password="$TUNER_DB_PASSWORD" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE tuner LOGIN PASSWORD :'tuner_password';
CREATE DATABASE tuner OWNER tuner;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE tuner FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
SQL
