#!/usr/bin/env bash
# Differential run of MariaDB's own test suite (mysql-test-run test files) directly
# against a throwaway mariadbd and through wolfscale in front of it (`wolfscale proxy`
# by default, the front end alone; `--cluster` for a one-node cluster), in the text,
# prepared-statement and cursor protocols (README "Fidelity: MariaDB's own test suite").
# Not part of CI. Installs what it needs (mariadb-test, the server, the client),
# builds the release binary, then runs scripts/mtr-diff/driver.py on
# scripts/mtr-diff/tests.txt. Exits 1 when any test differs or hangs.
#
#   bash scripts/mtr-diff.sh                      # whole list, all three protocols
#   bash scripts/mtr-diff.sh --tests kill,sp-cursor --protocols ps
#   bash scripts/mtr-diff.sh --out /tmp/mtr-out --timeout 60
#   bash scripts/mtr-diff.sh --cluster            # a one-node cluster (start --bootstrap)
#                                                 # instead of the front end alone (proxy)
#   MTR_DIFF_KEEP=1 ...                           # keep the server/proxy directory
#   MTR_DIFF_WOLFSCALE=path/to/wolfscale ...      # skip the build, use this binary
#
# Any other argument goes to the driver (python3 scripts/mtr-diff/driver.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

need=()
[ -x /usr/bin/mariadb-test ] && [ -d /usr/share/mysql/mysql-test/main ] || need+=(mariadb-test)
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

bin="${MTR_DIFF_WOLFSCALE:-}"
if [ -z "$bin" ]; then
  cargo build --release --bin wolfscale
  bin="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/wolfscale"
fi

exec python3 scripts/mtr-diff/driver.py --wolfscale "$bin" \
  --list scripts/mtr-diff/tests.txt "$@"
