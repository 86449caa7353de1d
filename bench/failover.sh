#!/usr/bin/env bash
# bench/failover.sh: the leader-kill soak (outside CI).
#
# Three `wolfscale start` processes (release build), each beside its own throwaway
# MariaDB, with the documented default timeouts (heartbeat 500 ms, elections after
# 1.5 to 3 s, failover_wait_ms 5000). Six clients insert numbered rows through all
# three nodes, each recording what was acknowledged. The leader is SIGKILLed KILLS
# times; after each kill the others elect a leader, the load goes on, and the killed
# node is restarted and catches up before the next kill. At the end every node must
# hold every acknowledged row exactly once. Then the same again with the six clients
# connected to a standalone `wolfscale proxy` in front of the three nodes. Prints one
# machine-readable line per run:
#
#   RESULT via=nodes|standalone_proxy kills=<n> failover_p50_ms=<n> failover_p99_ms=<n> acked=<n> unknown=<n> lost=<n> duplicated=<n> unaccounted=<n>
#
# failover: from the kill to the first acknowledgement of a write sent after it.
# unknown: writes whose client got an error (their connection went down with the
# node, for instance): each may or may not have committed, none was retried, and a
# row that exists for one is not counted as lost or duplicated. lost, duplicated and
# unaccounted must be 0 (the run fails otherwise).
#
# Usage:
#   bench/failover.sh               # 50 kills each way, about 10 minutes after the build
#   KILLS=200 bench/failover.sh
#
# Environment:
#   KILLS              leader kills (default 50)
#   CARGO_TARGET_DIR   where to build (default: cargo's target dir)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
export WOLFSCALE_SOAK_KILLS="${KILLS:-50}"
cargo test --release --test faults soak_leader_kills -- --ignored --nocapture --test-threads 1 2>&1 \
    | grep -E '^(RESULT|round )|panicked|test result'
