#!/usr/bin/env bash
# bench/wal.sh: what the write-ahead log does with the disk under it.
#
# Runs `cargo bench --bench wal` (benches/wal.rs, a harness = false main) in one
# scratch directory, so the raw-device numbers (4 KiB write + fdatasync loop,
# 1 MiB sequential writes) and the WAL numbers (fsync'd appends from 1/8/64 concurrent
# appenders x 1/64/1024 entries per append, 64 KiB entries, read-back, open time warm
# and cold, LZ4 ratio on SQL text) all come from the same filesystem. Prints the
# bench's tables and ends with one machine-readable line:
#
#   RESULT entries_per_s_fsync=<n> fsyncs_per_s_raw=<n> single_appends_per_s=<n> single_vs_raw=<ratio> large_write_vs_raw=<ratio> read_mb_s=<n>
#
# entries_per_s_fsync: best of the nine small-entry append runs; fsyncs_per_s_raw: the
# 4 KiB write + fdatasync loop through a preallocated file; single_appends_per_s: one
# appender, one entry per append (one fdatasync each), fsync on; single_vs_raw: the
# two in the same run, single_appends_per_s / fsyncs_per_s_raw (the WAL appends into
# zero-filled, preallocated segments, so near 1 is the target); large_write_vs_raw:
# 64 KiB-entry append MB/s over raw sequential MB/s; read_mb_s: payload MB/s reading
# the large log back (warm).
# The scratch directory is removed on exit.
#
# Usage:
#   bench/wal.sh
#   DURATION_MS=3000 LARGE_MB=512 bench/wal.sh
#   PROFILE_DIR=/tmp/walprof bench/wal.sh      # whole run under perf (cpu-clock)
#
# Environment:
#   BENCH_PARENT  where the scratch directory is made   (default: cargo's target dir)
#   DURATION_MS   length of each fixed-time run, ms      (default 2000)
#   SEQ_MB        raw sequential write size, MiB         (default 1024)
#   LARGE_MB      size of the 64 KiB-entry log, MiB      (default 1024)
#   DROP_CACHES   0: skip the cold open/read (default 1; needs root)
#   PHASES        subset of raw,small,large,compression (default all; RESULT needs all)
#   WAL_BATCH_SIZE, WAL_FLUSH_INTERVAL_US, WAL_COMPRESSION (0/1)
#                 override those WalOptions (default: the [wal] defaults)
#   PROFILE_DIR   if set: run under `perf record -e cpu-clock -g` and write reports here
#   KEEP_TMP=1    keep the scratch directory
#
# Takes about 1.5 minutes after the build on a 2-CPU VM with an SSD; needs
# SEQ_MB + LARGE_MB + about 2 GiB free on the filesystem of BENCH_PARENT.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_PARENT=${BENCH_PARENT:-$TARGET_DIR}
export DURATION_MS=${DURATION_MS:-2000}
export SEQ_MB=${SEQ_MB:-1024}
export LARGE_MB=${LARGE_MB:-1024}
export DROP_CACHES=${DROP_CACHES:-1}
export PHASES=${PHASES:-raw,small,large,compression}
PROFILE_DIR=${PROFILE_DIR:-}

log() { printf '[wal-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

mkdir -p "$BENCH_PARENT"
TMP=$(mktemp -d "$BENCH_PARENT/wal-bench.XXXXXX")
cleanup() {
    local rc=$?
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The run writes SEQ_MB, then LARGE_MB, plus a few hundred MiB per small-entry run.
check_space() {
    local avail_mb need_mb=$((SEQ_MB + LARGE_MB + 2048))
    avail_mb=$(df -Pm "$TMP" | awk 'NR == 2 { print $4 }')
    df -hT "$TMP" | sed 's/^/  /' >&2
    ((avail_mb >= need_mb)) || die "$avail_mb MiB free under $TMP, need $need_mb"
}

check_idle() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
        log "warning: load average is $load before the run; results will be noisy"
    fi
}

# Build first, so compile time stays out of the run, and find the binary for perf.
build() {
    log "cargo bench --bench wal --no-run"
    local out
    out=$(cd "$ROOT" && cargo bench --bench wal --no-run 2>&1) || die "build failed: $out"
    BIN=$(sed -n 's/.*Executable benches\/wal.rs (\(.*\))$/\1/p' <<<"$out" | tail -n 1)
    [[ -n $BIN ]] || die "cannot find the bench executable in cargo's output: $out"
    [[ $BIN == /* ]] || BIN=$ROOT/$BIN
}

run() {
    export WAL_BENCH_DIR=$TMP/data
    log "running in $WAL_BENCH_DIR (DURATION_MS=$DURATION_MS SEQ_MB=$SEQ_MB LARGE_MB=$LARGE_MB)"
    if [[ -z $PROFILE_DIR ]]; then
        (cd "$ROOT" && cargo bench --bench wal)
        return
    fi
    command -v perf >/dev/null || die "PROFILE_DIR set but perf is not installed"
    mkdir -p "$PROFILE_DIR"
    local data=$PROFILE_DIR/wal.perf.data
    perf record -e cpu-clock -F 999 -g -o "$data" -- "$BIN" 2>"$PROFILE_DIR/perf-record.log"
    perf report -i "$data" --no-children --sort symbol --stdio --percent-limit 0.5 -g none \
        >"$PROFILE_DIR/self.txt" 2>/dev/null || true
    perf report -i "$data" --children --sort comm,symbol --stdio --percent-limit 2 -g none \
        >"$PROFILE_DIR/children.txt" 2>/dev/null || true
    log "perf reports in $PROFILE_DIR (self.txt, children.txt)"
}

check_space
check_idle
build
run
