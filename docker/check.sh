#!/usr/bin/env bash
# What can be checked of docker/ without a Docker engine (tests/cli.rs runs this):
#   1. the compose file parses and resolves (docker compose or docker-compose config);
#   2. the build stage's command, with --locked (Cargo.lock is current), in debug mode;
#   3. the runtime stage's entry point: the config it writes from the environment
#      validates, and it bootstraps on the first start only; with MODE=proxy it writes
#      a standalone proxy's config, which validates, and runs the proxy.
# Not checked: building the image, pulling mariadb:10.11, the containers' network.
#
# WOLFSCALE_BIN_DIR: where built wolfscale binaries are (default: target/debug).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bins=${WOLFSCALE_BIN_DIR:-$repo/target/debug}

if docker compose version >/dev/null 2>&1; then
  docker compose -f "$here/compose.yaml" config -q
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f "$here/compose.yaml" config -q
else
  echo "error: neither docker compose nor docker-compose is installed" >&2
  exit 1
fi
echo "compose file: ok"

(cd "$repo" && cargo build --locked --bins --quiet)
echo "build stage (cargo build --locked --bins): ok"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run_entry() {
  env PATH="$bins:$PATH" WOLFSCALE_HOME="$tmp" NODE_ID=node-1 BOOTSTRAP=1 \
    PEERS=node-2:7654,node-3:7654 DB_HOST=db1 DB_PASSWORD='ex"ample' \
    CLUSTER_SECRET=s API_TOKEN=t DRY_RUN=1 bash "$here/entrypoint.sh"
}
first=$(run_entry)
case "$first" in
  *"start --bootstrap") ;;
  *) echo "error: the first start does not bootstrap: $first" >&2; exit 1 ;;
esac
"$bins/wolfscale" -c "$tmp/wolfscale.toml" validate --offline >/dev/null
mkdir -p "$tmp/data/wal"
again=$(run_entry)
case "$again" in
  *"--bootstrap"*) echo "error: a restart bootstraps again: $again" >&2; exit 1 ;;
esac
echo "entry point: config validates, bootstraps on the first start only: ok"

proxy_home="$tmp/proxy"
mkdir -p "$proxy_home"
proxy=$(env PATH="$bins:$PATH" WOLFSCALE_HOME="$proxy_home" MODE=proxy NODE_ID=proxy-1 \
  PEERS=node-1:7654,node-2:7654,node-3:7654 DB_PASSWORD=example CLUSTER_SECRET=s \
  DRY_RUN=1 bash "$here/entrypoint.sh")
case "$proxy" in
  *" proxy") ;;
  *) echo "error: MODE=proxy does not run a proxy: $proxy" >&2; exit 1 ;;
esac
"$bins/wolfscale" -c "$proxy_home/wolfscale.toml" validate --offline --proxy >/dev/null
echo "entry point, MODE=proxy: the standalone proxy's config validates: ok"
