#!/usr/bin/env bash
# Development runner: the node of ./wolfscale.toml (or $WOLFSCALE_CONFIG), built on
# demand.
#
#   ./run.sh start              a node that waits to be contacted, or resumes
#   ./run.sh start --bootstrap  the first node of a new cluster
#   ./run.sh proxy              the MySQL proxy alone: in front of the cluster of
#                               [cluster] peers, or of [database] when there are none
#   ./run.sh status             this node's and the cluster's status
#   ./run.sh info               the configuration the node runs with (secrets redacted)
#
# WOLFSCALE_BIN: the wolfscale binary to use (default: target/release/wolfscale, built
# with cargo when missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
config=${WOLFSCALE_CONFIG:-wolfscale.toml}
bin=${WOLFSCALE_BIN:-$here/target/release/wolfscale}

if [ $# -lt 1 ]; then
  echo "usage: $0 start [--bootstrap] | proxy | status | info" >&2
  exit 2
fi
cmd=$1
shift
case "$cmd" in
  start | proxy | status | info) ;;
  *)
    echo "usage: $0 start [--bootstrap] | proxy | status | info" >&2
    exit 2
    ;;
esac
if [ ! -x "$bin" ]; then
  (cd "$here" && cargo build --release --bin wolfscale)
fi
if [ ! -f "$config" ]; then
  echo "no $config: write one with '$bin init --output $config'" >&2
  exit 1
fi
exec "$bin" -c "$config" "$cmd" "$@"
