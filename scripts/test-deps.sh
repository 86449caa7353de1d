#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust: the MariaDB server binaries, the
# mariadb CLI, sysbench, shellcheck, docker-compose, Chromium (the status page test), and the Python packages
# (PyMySQL, SQLAlchemy, schemathesis for the API's OpenAPI test).
# Safe to run repeatedly; it only installs what is missing.
set -euo pipefail

need_apt=()
command -v mariadb-install-db >/dev/null 2>&1 || need_apt+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need_apt+=(mariadb-client)
# Snapshots (the pruned-log fault test) dump with it.
command -v mariadb-dump >/dev/null 2>&1 || need_apt+=(mariadb-client)
command -v sysbench >/dev/null 2>&1 || need_apt+=(sysbench)
# docker/check.sh resolves the compose file with it (no Docker engine here).
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need_apt+=(docker-compose)
# The install scripts are checked with it (tests/cli.rs).
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
# The status page is loaded in headless Chromium (tests/api.rs).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import pymysql, sqlalchemy, schemathesis' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
