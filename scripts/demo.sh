#!/usr/bin/env bash
# Run a WolfScale node in front of a throwaway local MariaDB (README "Run a node").
# Installs the MariaDB server binaries if they are missing, builds in release mode and
# starts `wolfscale demo`; connect with: mariadb -h127.0.0.1 -P8007 -uroot
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v mariadbd >/dev/null 2>&1 || ! command -v mariadb >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
fi
cargo build --release --bin wolfscale
exec target/release/wolfscale demo "$@"
