#!/usr/bin/env bash
# The container's entry point: writes /var/lib/wolfscale/wolfscale.toml from the
# environment on first start (unless WOLFSCALE_CONFIG names a file), then runs the node
# (or, with MODE=proxy, a standalone proxy in front of the nodes).
#
#   MODE          node (default) or proxy
#   NODE_ID       node id, or the proxy's own id (required)
#   ADVERTISE     host:port the other nodes reach this one at (default: $NODE_ID:7654)
#   PEERS         the other nodes (for a proxy: the nodes), comma-separated host:port
#   BOOTSTRAP=1   found the cluster on the first start (one node only)
#   DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME   the node's MariaDB
#   CLUSTER_SECRET API_TOKEN   shared by every node
#   DRY_RUN=1     print the command instead of running it (the checks in tests/cli.rs)
set -euo pipefail

home=${WOLFSCALE_HOME:-/var/lib/wolfscale}
config=${WOLFSCALE_CONFIG:-$home/wolfscale.toml}
: "${NODE_ID:?NODE_ID is required}"

toml_string() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

mode=${MODE:-node}
case "$mode" in
  node | proxy) ;;
  *) echo "error: MODE must be node or proxy, not '$mode'" >&2; exit 2 ;;
esac
peers=()
IFS=',' read -r -a list <<<"${PEERS:-}"
for p in "${list[@]}"; do
  [ -n "$p" ] && peers+=("$(toml_string "$p")")
done
peer_list=$(IFS=,; echo "${peers[*]:-}")

if [ ! -f "$config" ] && [ "$mode" = proxy ]; then
  {
    echo "[node]"
    echo "id = $(toml_string "$NODE_ID")"
    echo "[database]"
    echo "user = $(toml_string "${DB_USER:-root}")"
    echo "password = $(toml_string "${DB_PASSWORD:-}")"
    echo "[cluster]"
    echo "peers = [${peer_list}]"
    echo "secret = $(toml_string "${CLUSTER_SECRET:-}")"
    echo "[proxy]"
    echo "bind_address = \"0.0.0.0:8007\""
  } >"$config"
elif [ ! -f "$config" ]; then
  {
    echo "[node]"
    echo "id = $(toml_string "$NODE_ID")"
    echo "bind_address = \"0.0.0.0:7654\""
    echo "advertise_address = $(toml_string "${ADVERTISE:-$NODE_ID:7654}")"
    echo "data_dir = $(toml_string "$home/data")"
    echo "[database]"
    echo "host = $(toml_string "${DB_HOST:-127.0.0.1}")"
    echo "port = ${DB_PORT:-3306}"
    echo "user = $(toml_string "${DB_USER:-root}")"
    echo "password = $(toml_string "${DB_PASSWORD:-}")"
    if [ -n "${DB_NAME:-}" ]; then
      echo "database = $(toml_string "$DB_NAME")"
    fi
    echo "[cluster]"
    echo "peers = [${peer_list}]"
    if [ -n "${CLUSTER_SECRET:-}" ]; then
      echo "secret = $(toml_string "$CLUSTER_SECRET")"
    fi
    echo "[api]"
    echo "bind_address = \"0.0.0.0:8080\""
    if [ -n "${API_TOKEN:-}" ]; then
      echo "token = $(toml_string "$API_TOKEN")"
    fi
    echo "[proxy]"
    echo "bind_address = \"0.0.0.0:8007\""
  } >"$config"
fi

if [ "$mode" = proxy ]; then
  args=(wolfscale -c "$config" proxy)
else
  args=(wolfscale -c "$config" start)
  # Found the cluster only on the very first start: a node with a log resumes from it.
  if [ "${BOOTSTRAP:-0}" = 1 ] && [ ! -d "$home/data/wal" ]; then
    args+=(--bootstrap)
  fi
fi
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "${args[*]}"
  exit 0
fi
exec "${args[@]}"
