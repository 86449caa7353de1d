#!/usr/bin/env bash
# bench/proxy.sh: what WolfScale's proxy costs, measured against MariaDB itself and
# against HAProxy (TCP mode) in front of the same server.
#
# Starts its own throwaway mariadbd on a free port (never the system server on 3306),
# an HAProxy and a WolfScale node (`wolfscale start`, release build) in front of it,
# prepares sysbench's OLTP tables once through a direct connection, then runs each
# workload against the three targets in the order direct, haproxy, wolfscale, ROUNDS
# times, and prints one table plus a machine-readable last line:
#
#   RESULT point_select_vs_haproxy=<ratio> read_write_vs_haproxy=<ratio>
#
# where a ratio is WolfScale's QPS over HAProxy's (mean over rounds). Everything it
# starts is stopped, and its temporary directory removed, on exit.
#
# Usage (as root; installs sysbench and haproxy with apt-get when missing):
#   bench/proxy.sh
#   DURATION=60 THREADS=16 ROUNDS=3 bench/proxy.sh
#
# Environment:
#   DURATION     seconds per sysbench run                    (default 20)
#   THREADS      sysbench client threads (connections)       (default 8)
#   ROUNDS       repetitions of direct/haproxy/wolfscale     (default 1)
#   WARMUP       seconds of an unmeasured direct run per workload before the rounds (default 5)
#   TABLES       sysbench tables                             (default 4)
#   TABLE_SIZE   rows per table                              (default 10000)
#   WORKLOADS    sysbench scripts to run   (default "oltp_point_select oltp_read_write")
#   BUFFER_POOL  mariadbd --innodb-buffer-pool-size          (default 256M)
#   WOLFSCALE_LOG  wolfscale --log-level                     (default info)
#   WS_BACKEND   how WolfScale reaches MariaDB: tcp (like haproxy) or socket
#                ([database] socket)                          (default tcp)
#   TOKIO_WORKER_THREADS  read by WolfScale's runtime: its worker threads (default: CPUs)
#   HAPROXY_THREADS  haproxy nbthread                        (default: haproxy's, = CPUs)
#   PROFILE_DIR  if set: afterwards, one more point_select run through WolfScale under
#                `perf record` (cpu-clock, DWARF call graphs); perf.data and a
#                report of the top symbols are written to this directory
#   NICE         niceness for everything started after the build, e.g. -10 to keep
#                unrelated work on a shared machine from skewing the numbers (default: unchanged)
#   KEEP_TMP=1   keep the temporary directory (logs, configs) for inspection
#   SKIP_BUILD=1 use the existing target/release/wolfscale
#
# The machine's cores are shared by sysbench, mariadbd and the proxy under test, so
# every CPU cycle a proxy spends shows up as lost QPS: that is the point of the
# comparison, but absolute numbers only compare within one run.

set -euo pipefail

DURATION=${DURATION:-20}
THREADS=${THREADS:-8}
ROUNDS=${ROUNDS:-1}
WARMUP=${WARMUP:-5}
TABLES=${TABLES:-4}
TABLE_SIZE=${TABLE_SIZE:-10000}
WORKLOADS=${WORKLOADS:-"oltp_point_select oltp_read_write"}
BUFFER_POOL=${BUFFER_POOL:-256M}
WOLFSCALE_LOG=${WOLFSCALE_LOG:-info}
PROFILE_DIR=${PROFILE_DIR:-}
TARGETS="direct haproxy wolfscale"
WS_BACKEND=${WS_BACKEND:-tcp}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wolfscale-bench.XXXXXX")
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Stop, newest first, only the processes this script started, then remove $TMP.
cleanup() {
    local rc=$? i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- prerequisites

need_packages() {
    local missing=()
    command -v sysbench >/dev/null || missing+=(sysbench)
    command -v haproxy >/dev/null || missing+=(haproxy)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    local bin
    for bin in mariadb mariadb-install-db ss; do
        command -v "$bin" >/dev/null || die "$bin not found (apt-get install mariadb-server iproute2)"
    done
    MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    [[ -x $MARIADBD ]] || die "mariadbd not found in PATH or /usr/sbin"
}

build() {
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "cargo build --release --bin wolfscale"
        (cd "$ROOT" && cargo build --release --bin wolfscale --quiet)
    fi
    [[ -x $ROOT/target/release/wolfscale ]] || die "$ROOT/target/release/wolfscale missing"
    # A private copy: a concurrent cargo build cannot swap the binary under the run or
    # under perf's symbol lookup.
    WOLFSCALE=$TMP/wolfscale
    cp "$ROOT/target/release/wolfscale" "$WOLFSCALE"
}

# Other work on the machine skews every number; say so rather than hide it.
check_idle() {
    local load
    if [[ -n ${NICE:-} ]]; then
        renice -n "$NICE" -p $$ >/dev/null || die "renice -n $NICE failed"
        log "running at niceness $NICE"
    fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
        log "warning: load average is $load before the run; results will be noisy"
    fi
}

# A TCP port nothing listens on and that this script has not handed out yet.
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if [[ -z $(ss -Htln "sport = :$p") ]]; then
            USED_PORTS+="$p "
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# Wait until `mariadb` can log in as root on 127.0.0.1:$1, or fail after $2 seconds.
wait_sql() {
    local port=$1 deadline=$((SECONDS + $2)) what=$3 pid=$4
    until mariadb -h127.0.0.1 -P"$port" -uroot --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || die "$what exited; log: $(tail -n 20 "$TMP/$what.log")"
        ((SECONDS < deadline)) || die "$what not answering on port $port after $2 s"
        sleep 0.2
    done
}

# ---------------------------------------------------------------- servers

start_mariadb() {
    DB_PORT=$(free_port)
    local datadir=$TMP/db
    log "mariadb-install-db into $datadir"
    mariadb-install-db --no-defaults --datadir="$datadir" --user=root \
        --auth-root-authentication-method=normal --skip-test-db >"$TMP/install-db.log" 2>&1 ||
        die "mariadb-install-db failed: $(tail -n 20 "$TMP/install-db.log")"
    "$MARIADBD" --no-defaults --datadir="$datadir" --user=root \
        --port="$DB_PORT" --bind-address=127.0.0.1 --socket="$TMP/mariadb.sock" \
        --pid-file="$TMP/mariadbd.pid" --skip-log-bin \
        --innodb-buffer-pool-size="$BUFFER_POOL" --innodb-log-file-size=64M \
        --innodb-flush-log-at-trx-commit=2 --max-connections=500 \
        >"$TMP/mariadbd.log" 2>&1 &
    PIDS+=($!)
    wait_sql "$DB_PORT" 60 mariadbd $!
    log "mariadbd on 127.0.0.1:$DB_PORT"
}

start_haproxy() {
    HA_PORT=$(free_port)
    cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 2000
$([[ -n ${HAPROXY_THREADS:-} ]] && echo "    nbthread $HAPROXY_THREADS")

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend mysql
    bind 127.0.0.1:$HA_PORT
    default_backend mariadb

backend mariadb
    server db 127.0.0.1:$DB_PORT
EOF
    haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
    HA_PID=$!
    PIDS+=("$HA_PID")
    wait_sql "$HA_PORT" 30 haproxy $!
    log "haproxy on 127.0.0.1:$HA_PORT"
}

start_wolfscale() {
    WS_PORT=$(free_port)
    cat >"$TMP/wolfscale.toml" <<EOF
[node]
id = "node-1"
data_dir = "$TMP/wolfscale-data"

[database]
host = "127.0.0.1"
port = $DB_PORT
user = "root"
password = ""
$([[ $WS_BACKEND == socket ]] && echo "socket = \"$TMP/mariadb.sock\"")

[api]
enabled = false

[proxy]
bind_address = "127.0.0.1:$WS_PORT"
EOF
    "$WOLFSCALE" -c "$TMP/wolfscale.toml" --log-level "$WOLFSCALE_LOG" start \
        >"$TMP/wolfscale.log" 2>&1 &
    WS_PID=$!
    PIDS+=("$WS_PID")
    wait_sql "$WS_PORT" 30 wolfscale "$WS_PID"
    log "wolfscale on 127.0.0.1:$WS_PORT (pid $WS_PID)"
}

pid_of() {
    case $1 in
    haproxy) echo "$HA_PID" ;;
    wolfscale) echo "$WS_PID" ;;
    *) echo "" ;;
    esac
}

# CPU time (user + system) a process has used so far, in clock ticks.
cpu_ticks() {
    [[ -n $1 ]] || {
        echo 0
        return
    }
    # Fields after the ")" that closes the command name: utime and stime are 12 and 13.
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

port_of() {
    case $1 in
    direct) echo "$DB_PORT" ;;
    haproxy) echo "$HA_PORT" ;;
    wolfscale) echo "$WS_PORT" ;;
    esac
}

# ---------------------------------------------------------------- sysbench

# sysbench <workload> <port> <command> [extra options...]
sb() {
    local workload=$1 port=$2 cmd=$3
    shift 3
    sysbench "$workload" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" \
        --mysql-user=root --mysql-password= --mysql-db=sbtest --mysql-ssl=off \
        --tables="$TABLES" --table-size="$TABLE_SIZE" "$@" "$cmd"
}

prepare() {
    log "sysbench prepare: $TABLES tables x $TABLE_SIZE rows (direct)"
    mariadb -h127.0.0.1 -P"$DB_PORT" -uroot -e 'CREATE DATABASE sbtest'
    sb oltp_common "$DB_PORT" prepare --threads="$TABLES" >"$TMP/prepare.log" 2>&1 ||
        die "sysbench prepare failed: $(tail -n 20 "$TMP/prepare.log")"
}

# Run one measurement; prints "<qps> <p95 ms> <proxy CPU ticks> <queries>".
measure() {
    local workload=$1 target=$2 round=$3 out pid t0 t1
    out=$TMP/$workload.$target.$round.log
    pid=$(pid_of "$target")
    t0=$(cpu_ticks "$pid")
    sb "$workload" "$(port_of "$target")" run --threads="$THREADS" --time="$DURATION" \
        --report-interval=0 --percentile=95 >"$out" 2>&1 ||
        die "sysbench $workload against $target failed: $(tail -n 20 "$out")"
    t1=$(cpu_ticks "$pid")
    awk -v ticks=$((t1 - t0)) '
        /^ *queries:/ { total = $2; gsub(/[()]/, "", $3); qps = $3 }
        /95th percentile:/ { p95 = $3 }
        END {
            if (qps == "" || p95 == "") exit 1
            print qps, p95, ticks, total
        }' "$out" || die "cannot parse $out"
}

declare -A QPS_SUM P95_SUM TICKS_SUM QUERIES_SUM
HZ=$(getconf CLK_TCK)

run_all() {
    local workload target round qps p95 ticks queries res
    for workload in $WORKLOADS; do
        if ((WARMUP > 0)); then
            log "$workload: ${WARMUP}s warm-up (direct, not measured)"
            sb "$workload" "$DB_PORT" run --threads="$THREADS" --time="$WARMUP" \
                >"$TMP/$workload.warmup.log" 2>&1 || die "warm-up failed: $(tail -n 20 "$TMP/$workload.warmup.log")"
        fi
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        for workload in $WORKLOADS; do
            for target in $TARGETS; do
                log "round $round/$ROUNDS: $workload -> $target (${DURATION}s, $THREADS threads)"
                res=$(measure "$workload" "$target" "$round")
                read -r qps p95 ticks queries <<<"$res"
                log "  qps=$qps p95=${p95}ms proxy_cpu=$(awk -v t="$ticks" -v hz="$HZ" 'BEGIN { printf "%.1f", t / hz }')s"
                TICKS_SUM[$workload.$target]=$((${TICKS_SUM[$workload.$target]:-0} + ticks))
                QUERIES_SUM[$workload.$target]=$((${QUERIES_SUM[$workload.$target]:-0} + queries))
                QPS_SUM[$workload.$target]=$(awk -v a="${QPS_SUM[$workload.$target]:-0}" -v b="$qps" 'BEGIN { printf "%.4f", a + b }')
                P95_SUM[$workload.$target]=$(awk -v a="${P95_SUM[$workload.$target]:-0}" -v b="$p95" 'BEGIN { printf "%.4f", a + b }')
            done
        done
    done
}

mean_qps() { awk -v s="${QPS_SUM[$1.$2]:-0}" -v n="$ROUNDS" 'BEGIN { printf "%.2f", s / n }'; }
mean_p95() { awk -v s="${P95_SUM[$1.$2]:-0}" -v n="$ROUNDS" 'BEGIN { printf "%.2f", s / n }'; }
# Proxy CPU time per query in microseconds ("-" for the direct connection).
cpu_per_query() {
    [[ $2 == direct ]] && {
        echo -
        return
    }
    awk -v t="${TICKS_SUM[$1.$2]:-0}" -v q="${QUERIES_SUM[$1.$2]:-0}" -v hz="$HZ" \
        'BEGIN { if (q > 0) printf "%.1f", t / hz * 1e6 / q; else print "n/a" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

report() {
    local workload target qps ha direct
    echo
    echo "sysbench: $THREADS threads, ${DURATION}s per run, $ROUNDS round(s), $TABLES x $TABLE_SIZE rows; $(nproc) CPUs, load avg now $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-14s | %-9s | %10s | %7s | %14s | %13s | %14s\n' workload target QPS "p95 ms" \
        "QPS vs haproxy" "QPS vs direct" "proxy CPU us/q"
    printf '%s\n' "---------------+-----------+------------+---------+----------------+---------------+---------------"
    for workload in $WORKLOADS; do
        ha=$(mean_qps "$workload" haproxy)
        direct=$(mean_qps "$workload" direct)
        for target in $TARGETS; do
            qps=$(mean_qps "$workload" "$target")
            printf '%-14s | %-9s | %10s | %7s | %14s | %13s | %14s\n' "${workload#oltp_}" "$target" "$qps" \
                "$(mean_p95 "$workload" "$target")" "$(ratio "$qps" "$ha")" "$(ratio "$qps" "$direct")" \
                "$(cpu_per_query "$workload" "$target")"
        done
    done
    echo
    local ps rw
    ps=$(ratio "$(mean_qps oltp_point_select wolfscale)" "$(mean_qps oltp_point_select haproxy)")
    rw=$(ratio "$(mean_qps oltp_read_write wolfscale)" "$(mean_qps oltp_read_write haproxy)")
    echo "RESULT point_select_vs_haproxy=$ps read_write_vs_haproxy=$rw"
}

# One more point_select run through WolfScale with perf sampling the proxy.
profile() {
    [[ -n $PROFILE_DIR ]] || return 0
    command -v perf >/dev/null || die "PROFILE_DIR set but perf is not installed"
    mkdir -p "$PROFILE_DIR"
    local data=$PROFILE_DIR/wolfscale.perf.data
    log "profiling wolfscale (pid $WS_PID) during oltp_point_select -> $PROFILE_DIR"
    perf record -e cpu-clock -F 2000 --call-graph dwarf,32768 -p "$WS_PID" -o "$data" \
        >"$TMP/perf-record.log" 2>&1 &
    local perf_pid=$!
    PIDS+=("$perf_pid")
    sleep 1
    measure oltp_point_select wolfscale profile >"$PROFILE_DIR/qps-under-perf.txt"
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null || true
    perf report -i "$data" --no-children --sort symbol --stdio --percent-limit 0.5 -g none \
        >"$PROFILE_DIR/self.txt" 2>/dev/null || true
    perf report -i "$data" --children --sort symbol --stdio --percent-limit 2 -g none \
        >"$PROFILE_DIR/children.txt" 2>/dev/null || true
    perf report -i "$data" --no-children --sort dso --stdio -g none \
        >"$PROFILE_DIR/dso.txt" 2>/dev/null || true
    log "perf reports in $PROFILE_DIR (self.txt, children.txt, dso.txt)"
}

need_packages
build
check_idle
start_mariadb
start_haproxy
start_wolfscale
prepare
run_all
profile
report
