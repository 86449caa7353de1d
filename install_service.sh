#!/usr/bin/env bash
# Install WolfScale as a systemd service.
#
#   sudo ./install_service.sh node     # a cluster node (wolfscale start)
#   sudo ./install_service.sh proxy    # a standalone proxy in front of a cluster (wolfscale proxy)
#
# Installs the binaries to /opt/wolfscale (wolfctl also to /usr/local/bin), creates
# /var/lib/wolfscale and /var/log/wolfscale, and writes /etc/systemd/system/wolfscale.service
# (wolfscale-proxy.service for a proxy). When /opt/wolfscale/wolfscale.toml does not
# exist it asks for the settings (answers on standard input, one per line; an empty
# answer takes the default shown) and writes it, then validates it.
#
# Environment:
#   ROOT=/             install under this directory instead of / (a test's throwaway root);
#                      with another ROOT no user is created and systemd is not touched
#   WOLFSCALE_BIN_DIR  where the built wolfscale and wolfctl are (default: target/release,
#                      built with cargo when missing)
set -euo pipefail

usage() {
  echo "usage: $0 node|proxy" >&2
  exit 2
}

[ $# -eq 1 ] || usage
mode=$1
case "$mode" in
  node) unit_name=wolfscale ;;
  proxy) unit_name=wolfscale-proxy ;;
  *) usage ;;
esac

root=${ROOT:-/}
root=${root%/}
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${WOLFSCALE_BIN_DIR:-$here/target/release}

if [ ! -x "$bin_dir/wolfscale" ] || [ ! -x "$bin_dir/wolfctl" ]; then
  if [ -z "${WOLFSCALE_BIN_DIR:-}" ] && command -v cargo >/dev/null 2>&1; then
    echo "building the release binaries"
    (cd "$here" && cargo build --release --bins)
  else
    echo "error: no wolfscale and wolfctl in $bin_dir (build them, or set WOLFSCALE_BIN_DIR)" >&2
    exit 1
  fi
fi

opt=$root/opt/wolfscale
config=$opt/wolfscale.toml
data=$root/var/lib/wolfscale
logs=$root/var/log/wolfscale
units=$root/etc/systemd/system

mkdir -p "$opt" "$data" "$logs" "$root/usr/local/bin" "$units"
install -m 0755 "$bin_dir/wolfscale" "$opt/wolfscale"
install -m 0755 "$bin_dir/wolfctl" "$opt/wolfctl"
install -m 0755 "$bin_dir/wolfctl" "$root/usr/local/bin/wolfctl"

# Ask a question on stderr; the answer, or the default, on stdout.
ask() {
  local prompt=$1 default=$2 answer=""
  if [ -n "$default" ]; then
    printf '%s [%s]: ' "$prompt" "$default" >&2
  else
    printf '%s: ' "$prompt" >&2
  fi
  IFS= read -r answer || true
  printf '%s' "${answer:-$default}"
}

# A TOML basic string: backslashes and quotes escaped.
toml_string() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# Peer addresses, one per line up to an empty line, as a TOML list body.
ask_peers() {
  local prompt=$1 peer peers=()
  echo "$prompt, one per line, an empty line to end:" >&2
  while IFS= read -r peer && [ -n "$peer" ]; do
    peers+=("$(toml_string "$peer")")
  done
  (IFS=,; echo "${peers[*]:-}")
}

if [ -f "$config" ]; then
  echo "keeping the existing $config"
elif [ "$mode" = node ]; then
  echo "no $config: answer a few questions (empty takes the default)" >&2
  host=$(hostname 2>/dev/null || echo node-1)
  node_id=$(ask "Node id" "$host")
  bind=$(ask "Cluster bind address" "0.0.0.0:7654")
  advertise=$(ask "Address other nodes reach this one at" "$host:${bind##*:}")
  bootstrap=$(ask "Is this the first node of a new cluster (y/n)" "n")
  peer_list=$(ask_peers "Peer addresses (host:port)")
  secret=$(ask "Cluster secret (the same on every node and proxy)" "")
  db_host=$(ask "MariaDB host" "localhost")
  db_port=$(ask "MariaDB port" "3306")
  db_name=$(ask "MariaDB database (empty: none)" "")
  db_user=$(ask "MariaDB user" "wolfscale")
  db_password=$(ask "MariaDB password" "")
  api_port=$(ask "HTTP API port" "8080")
  {
    echo "# Written by install_service.sh; every key is in 'wolfscale init'."
    echo "[node]"
    echo "id = $(toml_string "$node_id")"
    echo "bind_address = $(toml_string "$bind")"
    echo "advertise_address = $(toml_string "$advertise")"
    echo "data_dir = \"/var/lib/wolfscale/data\""
    echo
    echo "[database]"
    echo "host = $(toml_string "$db_host")"
    echo "port = $db_port"
    echo "user = $(toml_string "$db_user")"
    echo "password = $(toml_string "$db_password")"
    if [ -n "$db_name" ]; then
      echo "database = $(toml_string "$db_name")"
    fi
    echo
    echo "[cluster]"
    echo "peers = [${peer_list}]"
    if [ -n "$secret" ]; then
      echo "secret = $(toml_string "$secret")"
    fi
    echo
    echo "[api]"
    echo "bind_address = \"0.0.0.0:$api_port\""
  } >"$config"
  chmod 0600 "$config"
  case "$bootstrap" in
    y | Y | yes) first_start_note="first start: /opt/wolfscale/wolfscale -c /opt/wolfscale/wolfscale.toml start --bootstrap (once), then use the service" ;;
    *) first_start_note="" ;;
  esac
else
  echo "no $config: answer a few questions (empty takes the default)" >&2
  host=$(hostname 2>/dev/null || echo proxy)
  proxy_id=$(ask "Proxy id (unique among the cluster's nodes and proxies)" "$host-proxy")
  listen=$(ask "MySQL listen address" "0.0.0.0:8007")
  peer_list=$(ask_peers "Cluster addresses of the nodes (host:7654)")
  secret=$(ask "Cluster secret (the nodes' [cluster] secret)" "")
  db_user=$(ask "Service account on the nodes' MariaDB (reads accounts and table engines)" "wolfscale")
  db_password=$(ask "Its password" "")
  {
    echo "# Written by install_service.sh for a standalone proxy (wolfscale proxy)."
    echo "[node]"
    echo "id = $(toml_string "$proxy_id")"
    echo
    echo "[database]"
    echo "user = $(toml_string "$db_user")"
    echo "password = $(toml_string "$db_password")"
    echo
    echo "[cluster]"
    echo "peers = [${peer_list}]"
    echo "secret = $(toml_string "$secret")"
    echo
    echo "[proxy]"
    echo "bind_address = $(toml_string "$listen")"
  } >"$config"
  chmod 0600 "$config"
fi

if [ "$mode" = node ]; then
  "$opt/wolfscale" -c "$config" validate --offline
else
  "$opt/wolfscale" -c "$config" validate --offline --proxy
fi

case "$mode" in
  node) exec_start="/opt/wolfscale/wolfscale -c /opt/wolfscale/wolfscale.toml start" ;;
  proxy) exec_start="/opt/wolfscale/wolfscale -c /opt/wolfscale/wolfscale.toml proxy" ;;
esac

cat >"$units/$unit_name.service" <<EOF
[Unit]
Description=WolfScale $mode (MariaDB gateway and synchronization manager)
After=network-online.target mariadb.service
Wants=network-online.target

[Service]
Type=simple
User=wolfscale
Group=wolfscale
ExecStart=$exec_start
Restart=on-failure
RestartSec=2
# SIGTERM drains sessions, then exits.
KillSignal=SIGTERM
TimeoutStopSec=60
LimitNOFILE=65536
StandardOutput=append:/var/log/wolfscale/$unit_name.log
StandardError=append:/var/log/wolfscale/$unit_name.log
ReadWritePaths=/var/lib/wolfscale /var/log/wolfscale
NoNewPrivileges=true
ProtectSystem=full

[Install]
WantedBy=multi-user.target
EOF

if [ -z "$root" ]; then
  if ! id wolfscale >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /var/lib/wolfscale --shell /usr/sbin/nologin wolfscale
  fi
  chown -R wolfscale:wolfscale /var/lib/wolfscale /var/log/wolfscale "$config"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload
    echo "installed: systemctl enable --now $unit_name; journalctl -u $unit_name -f"
  else
    echo "installed; systemd is not running here: start it with $exec_start"
  fi
else
  echo "installed under $root (no user created, systemd not touched)"
fi
if [ -n "${first_start_note:-}" ]; then
  echo "$first_start_note"
fi
