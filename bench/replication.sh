#!/usr/bin/env bash
# What replication costs: sysbench writes through the leader of a three-node WolfScale
# cluster (each node with its own MariaDB, all on this machine) against the same load on
# one MariaDB alone, plus how far behind the followers are when the load stops and
# whether the three MariaDBs end up identical. The same run also puts a follower's proxy
# next to the leader's (oltp_read_write: the follower sends its transactions to the
# leader) and next to a direct connection to that follower's own MariaDB
# (oltp_point_select: the follower serves reads locally).
#
#   bash bench/replication.sh
#   DURATION=60 THREADS=16 bash bench/replication.sh
#
# Needs root for apt-get (sysbench and jq are installed when missing) and mariadb-server
# (mariadbd, mariadb-install-db); never touches a server on 3306. Settings:
#
#   DURATION=30        seconds per measured run
#   THREADS=8          sysbench threads for the throughput runs (the latency run uses 1)
#   TABLES=4 TABLE_SIZE=10000
#   WARMUP=5           seconds of oltp_write_only on each target before measuring (0: none)
#   BUFFER_POOL=256M   innodb_buffer_pool_size of every MariaDB
#   INNODB_FLUSH=1     innodb_flush_log_at_trx_commit of every MariaDB (1 = durable commits)
#   CLUSTER_INNODB_FLUSH=$INNODB_FLUSH   the same for the cluster's MariaDBs only (an
#                      experiment: the baseline keeps INNODB_FLUSH)
#   FOLLOWER_FLUSH=2   the nodes' [database] follower_innodb_flush (empty: unset, every
#                      cluster MariaDB keeps CLUSTER_INNODB_FLUSH); the leader runs with 1
#   PS_MODE=probe      probe: try sysbench's prepared statements through the leader first
#                      and fall back to --db-ps-mode=disable (both sides) if they are
#                      refused or not replicated; auto: always prepared; disable: never
#   LAG_CAP=60         seconds to wait for a follower to catch up before giving up
#   WOLFSCALE_LOG=info,wolfscale::proxy::server=debug
#                      --log-level of the nodes (info, plus one line per ended session
#                      with its error, which is how a dropped client shows up)
#   SKIP_BUILD=1       use the existing target/release/wolfscale
#   KEEP_TMP=1         keep the temporary directory (data, configs, logs)
#
# Output: a table (oltp_write_only, oltp_insert and oltp_write_only 1 thread through the
#   leader against the single MariaDB; oltp_read_write through a follower against the
#   leader; oltp_point_select through a follower against its MariaDB directly; all with
#   THREADS except the 1-thread run), a CONVERGED/DIVERGED line (exit 1 when diverged) and
#   RESULT write_only_vs_single=<r> insert_vs_single=<r> max_lag_s=<s> \
#          follower_rw_vs_leader=<r> follower_point_select_vs_direct=<r>
#   (the ratios are TPS over TPS; max_lag_s covers every run that wrote)
set -euo pipefail

DURATION=${DURATION:-30}
THREADS=${THREADS:-8}
TABLES=${TABLES:-4}
TABLE_SIZE=${TABLE_SIZE:-10000}
WARMUP=${WARMUP:-5}
BUFFER_POOL=${BUFFER_POOL:-256M}
INNODB_FLUSH=${INNODB_FLUSH:-1}
CLUSTER_INNODB_FLUSH=${CLUSTER_INNODB_FLUSH:-$INNODB_FLUSH}
FOLLOWER_FLUSH=${FOLLOWER_FLUSH-2}
PS_MODE=${PS_MODE:-probe}
LAG_CAP=${LAG_CAP:-60}
WOLFSCALE_LOG=${WOLFSCALE_LOG:-info,wolfscale::proxy::server=debug}
NODES=3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wolfscale-repl-bench.XXXXXX")
PIDS=()

log() { printf '[repl %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Print the tail of every node's and server's log, keep the logs, and exit 1.
die() {
    log "error: $*"
    dump_logs
    exit 1
}

dump_logs() {
    local f keep
    for f in "$TMP"/node-*/wolfscale.log "$TMP"/*/mariadbd.err; do
        [[ -f $f ]] || continue
        printf '\n----- tail of %s -----\n' "${f#"$TMP"/}" >&2
        sed 's/\x1b\[[0-9;]*m//g' "$f" | tail -n 25 >&2
    done
    keep=$(mktemp -d "${TMPDIR:-/tmp}/wolfscale-repl-logs.XXXXXX")
    (cd "$TMP" && find . \( -name '*.log' -o -name '*.err' -o -name '*.toml' \) -print0 |
        xargs -0 -r cp --parents -t "$keep")
    log "logs kept in $keep"
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
    command -v jq >/dev/null || missing+=(jq)
    command -v curl >/dev/null || missing+=(curl)
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
    # A private copy: a concurrent cargo build cannot swap the binary under the run.
    WOLFSCALE=$TMP/wolfscale
    cp "$ROOT/target/release/wolfscale" "$WOLFSCALE"
}

check_idle() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
        log "warning: load average is $load before the run; results will be noisy"
    fi
}

# free_port VAR: set VAR to a TCP port that no socket uses (listening or connected) and
# that this script has not handed out yet. Ports come from below the kernel's ephemeral
# range, so outgoing connections (a busy machine has thousands) cannot take one between
# this check and the bind. Not run in a subshell, so the list of handed-out ports
# survives.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
PORT_LOW=10000
((EPHEMERAL_LOW - PORT_LOW > 2000)) || PORT_LOW=$((EPHEMERAL_LOW / 2))
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 500); do
        p=$((PORT_LOW + RANDOM % (EPHEMERAL_LOW - PORT_LOW)))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if [[ -z $(ss -Htan "( sport = :$p )") ]]; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
    die "no free port found"
}

# Run SQL as root on 127.0.0.1:<port>; extra mariadb options go before -e.
sql() {
    local port=$1
    shift
    mariadb -h127.0.0.1 -P"$port" -uroot --connect-timeout=5 "$@"
}

# Wait until `mariadb` can log in as root on 127.0.0.1:$1, or fail after $2 seconds.
wait_sql() {
    local port=$1 deadline=$((SECONDS + $2)) what=$3 pid=$4 logf=$5
    until sql "$port" -e 'SELECT 1' >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || die "$what exited; log: $(tail -n 20 "$logf")"
        ((SECONDS < deadline)) || die "$what not answering on port $port after $2 s"
        sleep 0.2
    done
}

# ---------------------------------------------------------------- MariaDB servers

# One mariadb-install-db, copied for every server (an install takes seconds, a copy
# a fraction of one).
install_template() {
    log "mariadb-install-db (one template for all four servers)"
    mariadb-install-db --no-defaults --datadir="$TMP/template" --user=root \
        --auth-root-authentication-method=normal --skip-test-db >"$TMP/install-db.log" 2>&1 ||
        die "mariadb-install-db failed: $(tail -n 20 "$TMP/install-db.log")"
}

# start_mariadb <name> [extra mariadbd args...]; sets DB_PORT[<name>].
declare -A DB_PORT DB_PID
start_mariadb() {
    local name=$1 dir=$TMP/$1 port flush=$INNODB_FLUSH
    shift
    [[ $name == node-* ]] && flush=$CLUSTER_INNODB_FLUSH
    free_port port
    mkdir -p "$dir/tmp"
    cp -a "$TMP/template" "$dir/data"
    "$MARIADBD" --no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp" --user=root \
        --port="$port" --bind-address=127.0.0.1 --socket="$dir/mariadbd.sock" \
        --pid-file="$dir/mariadbd.pid" --log-error="$dir/mariadbd.err" \
        --skip-log-bin --skip-name-resolve --max-connections=1000 \
        --innodb-buffer-pool-size="$BUFFER_POOL" --innodb-log-file-size=256M \
        --innodb-flush-log-at-trx-commit="$flush" "$@" \
        >"$dir/mariadbd.out" 2>&1 &
    DB_PID[$name]=$!
    PIDS+=($!)
    DB_PORT[$name]=$port
    wait_sql "$port" 60 "mariadbd $name" "${DB_PID[$name]}" "$dir/mariadbd.err"
    log "mariadbd $name on 127.0.0.1:$port"
}

# ---------------------------------------------------------------- WolfScale nodes

declare -A PROXY_PORT API_PORT CLUSTER_PORT NODE_PID

write_configs() {
    local i j peers
    for ((i = 1; i <= NODES; i++)); do
        free_port "CLUSTER_PORT[$i]"
        free_port "PROXY_PORT[$i]"
        free_port "API_PORT[$i]"
    done
    for ((i = 1; i <= NODES; i++)); do
        peers=()
        for ((j = 1; j <= NODES; j++)); do
            ((j == i)) || peers+=("\"127.0.0.1:${CLUSTER_PORT[$j]}\"")
        done
        cat >"$TMP/node-$i/wolfscale.toml" <<EOF
[node]
id = "node-$i"
bind_address = "127.0.0.1:${CLUSTER_PORT[$i]}"
advertise_address = "127.0.0.1:${CLUSTER_PORT[$i]}"
data_dir = "$TMP/node-$i/wolfscale-data"

[database]
host = "127.0.0.1"
port = ${DB_PORT[node-$i]}
user = "root"
password = ""
$([[ -n $FOLLOWER_FLUSH ]] && echo "follower_innodb_flush = $FOLLOWER_FLUSH")

[cluster]
peers = [$(
            IFS=,
            echo "${peers[*]}"
        )]
secret = "replication-bench-secret"

[api]
bind_address = "127.0.0.1:${API_PORT[$i]}"

[proxy]
bind_address = "127.0.0.1:${PROXY_PORT[$i]}"
EOF
    done
}

start_node() {
    local i=$1
    shift
    "$WOLFSCALE" -c "$TMP/node-$i/wolfscale.toml" --log-level "$WOLFSCALE_LOG" start "$@" \
        >"$TMP/node-$i/wolfscale.log" 2>&1 &
    NODE_PID[$i]=$!
    PIDS+=($!)
}

# Node i's log without colour codes.
plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$TMP/node-$1/wolfscale.log"; }

api() { curl -fsS --max-time 2 "http://127.0.0.1:${API_PORT[$1]}$2"; }

# Followers first, then node 1 with --bootstrap (it contacts them); then wait until
# node 1 leads and has applied its whole log.
start_cluster() {
    local i deadline j
    write_configs
    for ((i = 2; i <= NODES; i++)); do start_node "$i"; done
    for ((i = 2; i <= NODES; i++)); do
        deadline=$((SECONDS + 30))
        until api "$i" /status >/dev/null 2>&1; do
            kill -0 "${NODE_PID[$i]}" 2>/dev/null || die "node-$i exited"
            ((SECONDS < deadline)) || die "node-$i: no API on port ${API_PORT[$i]} after 30 s"
            sleep 0.2
        done
    done
    start_node 1 --bootstrap
    deadline=$((SECONDS + 60))
    while :; do
        kill -0 "${NODE_PID[1]}" 2>/dev/null || die "node-1 exited"
        j=$(api 1 /cluster 2>/dev/null || true)
        if [[ -n $j ]] && jq -e --argjson n "$NODES" '.role == "leader"
                and .applied_index != null and .applied_index >= .last_log_index
                and (.members | length) == $n' <<<"$j" >/dev/null; then
            break
        fi
        ((SECONDS < deadline)) || die "node-1 not leader with its log applied after 60 s: ${j:-no answer}"
        sleep 0.2
    done
    wait_sql "${PROXY_PORT[1]}" 30 node-1 "${NODE_PID[1]}" "$TMP/node-1/wolfscale.log"
    log "cluster up: leader node-1 proxy 127.0.0.1:${PROXY_PORT[1]}, API ports ${API_PORT[*]}"
    api 1 /cluster | jq -c '{term, last_log_index, applied_index, members: [.members[] | {node_id, role, status}]}' >&2
}

# ---------------------------------------------------------------- follower lag

# <index> of node i's /status field, or empty.
status_field() { api "$1" /status 2>/dev/null | jq -r ".$2 // empty" 2>/dev/null || true; }

# Seconds (2 decimals) until each follower's applied_index reaches the leader's
# last_log_index as read now; polled every 50 ms, capped at LAG_CAP. Sets LAG[i] (the
# seconds) and BEHIND[i] (entries behind at the first poll).
declare -A LAG BEHIND
measure_lag() {
    local target t0 now i applied pending
    target=$(status_field 1 last_log_index)
    [[ -n $target ]] || die "cannot read node-1's last_log_index"
    t0=$EPOCHREALTIME
    pending=" "
    for ((i = 2; i <= NODES; i++)); do
        pending+="$i "
        LAG[$i]=""
        BEHIND[$i]=""
    done
    while [[ $pending != " " ]]; do
        now=$EPOCHREALTIME
        for i in $pending; do
            kill -0 "${NODE_PID[$i]}" 2>/dev/null || die "node-$i exited while catching up to index $target"
            applied=$(status_field "$i" applied_index)
            [[ -n ${BEHIND[$i]} ]] || BEHIND[$i]=$((target > ${applied:-0} ? target - ${applied:-0} : 0))
            if [[ -n $applied ]] && ((applied >= target)); then
                LAG[$i]=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.2f", b - a }')
                pending=${pending/ $i / }
            fi
        done
        if awk -v a="$t0" -v b="$EPOCHREALTIME" -v c="$LAG_CAP" 'BEGIN { exit !(b - a >= c) }'; then
            for i in $pending; do
                LAG[$i]=">$LAG_CAP"
                log "node-$i still behind after ${LAG_CAP}s: applied $(status_field "$i" applied_index) of $target; status $(api "$i" /status 2>/dev/null | jq -c '{status, diverged}')"
            done
            break
        fi
        [[ $pending == " " ]] || sleep 0.05
    done
    log "  leader last_log_index $target; follower lag node-2 ${LAG[2]} s (${BEHIND[2]} entries behind), node-3 ${LAG[3]} s (${BEHIND[3]} entries behind)"
}

# Every node still running and none diverged.
check_nodes() {
    local i s
    for ((i = 1; i <= NODES; i++)); do
        kill -0 "${NODE_PID[$i]}" 2>/dev/null || die "node-$i exited"
        s=$(status_field "$i" status)
        [[ $s != Diverged ]] || die "node-$i diverged: $(api "$i" /status | jq -c .diverged)"
    done
}

# ---------------------------------------------------------------- sysbench

SB_PS=()
# sb <workload> <port> <command> [extra options...]
sb() {
    local workload=$1 port=$2 cmd=$3
    shift 3
    sysbench "$workload" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" \
        --mysql-user=root --mysql-password= --mysql-db=sbtest --mysql-ssl=off \
        --tables="$TABLES" --table-size="$TABLE_SIZE" "${SB_PS[@]}" "$@" "$cmd"
}

prepare() {
    local port=$1 what=$2
    log "sysbench prepare: $TABLES tables x $TABLE_SIZE rows ($what)"
    sql "$port" -e 'CREATE DATABASE sbtest' 2>"$TMP/createdb.$what.log" ||
        die "CREATE DATABASE through $what failed: $(cat "$TMP/createdb.$what.log")"
    sb oltp_common "$port" prepare --threads="$TABLES" >"$TMP/prepare.$what.log" 2>&1 ||
        die "sysbench prepare ($what) failed: $(tail -n 20 "$TMP/prepare.$what.log")"
}

# Do prepared-statement writes through the leader work and reach the followers?
# sysbench's oltp_write_only uses server-side prepared statements (COM_STMT_EXECUTE)
# for BEGIN, its writes and COMMIT; oltp_insert always sends plain text queries. The
# probe runs 20 oltp_write_only transactions in a database of its own (dropped
# afterwards, so sbtest is never affected) and compares its CHECKSUM TABLE on the
# three MariaDBs. Sets PS_NOTE and SB_PS.
PS_PROBE=""
probe_prepared() {
    local out=$TMP/ps-probe.log i sums=() rc=0
    case $PS_MODE in
    auto)
        PS_NOTE="server-side prepared statements for oltp_write_only (sysbench default; PS_MODE=auto)"
        return
        ;;
    disable)
        SB_PS=(--db-ps-mode=disable)
        PS_NOTE="--db-ps-mode=disable on both sides (PS_MODE=disable)"
        return
        ;;
    probe) ;;
    *) die "PS_MODE must be probe, auto or disable" ;;
    esac
    log "probe: 20 oltp_write_only transactions with prepared statements through the leader (database psprobe)"
    sql "${PROXY_PORT[1]}" -e 'CREATE DATABASE psprobe' || die "CREATE DATABASE psprobe through the leader failed"
    sysbench oltp_common --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="${PROXY_PORT[1]}" \
        --mysql-user=root --mysql-password= --mysql-db=psprobe --mysql-ssl=off \
        --tables=1 --table-size=10 prepare >"$out.prepare" 2>&1 ||
        die "probe prepare failed: $(tail -n 20 "$out.prepare")"
    measure_lag 2>/dev/null
    sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="${PROXY_PORT[1]}" \
        --mysql-user=root --mysql-password= --mysql-db=psprobe --mysql-ssl=off \
        --tables=1 --table-size=10 --threads=1 --events=20 --time=0 run >"$out" 2>&1 || rc=$?
    measure_lag 2>/dev/null
    for ((i = 1; i <= NODES; i++)); do
        sums+=("$(sql "${DB_PORT[node-$i]}" -N -e 'CHECKSUM TABLE psprobe.sbtest1' 2>&1 | awk '{ print $NF }')")
    done
    if ((rc != 0)); then
        PS_PROBE="refused: $(grep -m1 -E 'FATAL|error' "$out" || tail -n 1 "$out")"
        log "probe: sysbench output:"
        grep -E 'FATAL|error|warning' "$out" | head -n 10 >&2 || true
        log "probe: node-1's log (warnings, errors, ended sessions):"
        plain_log 1 | grep -E 'WARN|ERROR|session ended' | tail -n 15 >&2 || true
    elif [[ ${sums[*]} == "${sums[0]} ${sums[0]} ${sums[0]}" ]]; then
        PS_PROBE="replicated (CHECKSUM TABLE psprobe.sbtest1 on node-1/2/3: ${sums[*]})"
    else
        PS_PROBE="NOT REPLICATED: prepared-statement writes succeed on the leader but never reach the followers (CHECKSUM TABLE psprobe.sbtest1 on node-1/2/3: ${sums[*]})"
    fi
    log "probe: $PS_PROBE"
    sql "${PROXY_PORT[1]}" -e 'DROP DATABASE psprobe' || die "DROP DATABASE psprobe through the leader failed"
    measure_lag 2>/dev/null
    check_nodes
    if [[ $PS_PROBE == replicated* ]]; then
        PS_NOTE="server-side prepared statements for oltp_write_only (sysbench default); probe: $PS_PROBE"
    else
        SB_PS=(--db-ps-mode=disable)
        PS_NOTE="--db-ps-mode=disable on both sides, because prepared statements through the leader are $PS_PROBE"
    fi
}

# run_one <key> <workload> <threads> <target>; target is cluster (the leader's proxy),
# single (the MariaDB alone), follower (node $FOLLOWER's proxy) or follower_db (node
# $FOLLOWER's MariaDB directly). After a run through a proxy, waits for the followers.
declare -A TPS P95 ERRS LAGS LAGTXT
run_one() {
    local key=$1 workload=$2 threads=$3 target=$4 port out
    case $target in
    cluster) port=${PROXY_PORT[1]} ;;
    single) port=${DB_PORT[single]} ;;
    follower) port=${PROXY_PORT[$FOLLOWER]} ;;
    follower_db) port=${DB_PORT[node-$FOLLOWER]} ;;
    *) die "run_one: unknown target $target" ;;
    esac
    out=$TMP/$key.$target.log
    log "$workload, $threads thread(s) -> $(target_name "$target") (${DURATION}s)"
    sb "$workload" "$port" run --threads="$threads" --time="$DURATION" \
        --report-interval=0 --percentile=95 >"$out" 2>&1 ||
        die "sysbench $workload ($threads threads) against $target failed: $(tail -n 20 "$out")"
    read -r "TPS[$key.$target]" "P95[$key.$target]" "ERRS[$key.$target]" < <(awk '
        /^ *transactions:/ { gsub(/[()]/, "", $3); tps = $3 }
        /^ *ignored errors:/ { gsub(/[()]/, "", $4); errs = $4 }
        /95th percentile:/ { p95 = $3 }
        END { if (tps == "" || p95 == "") exit 1; print tps, p95, errs }' "$out") ||
        die "cannot parse $out"
    log "  tps=${TPS[$key.$target]} p95=${P95[$key.$target]}ms ignored errors/s=${ERRS[$key.$target]}"
    if [[ $target == cluster || $target == follower ]]; then
        measure_lag
        LAGS[$key.$target]="${LAG[2]} ${LAG[3]}"
        LAGTXT[$key.$target]="${LAG[2]} (${BEHIND[2]}), ${LAG[3]} (${BEHIND[3]})"
        check_nodes
    fi
}

target_name() {
    case $1 in
    cluster) echo "3-node via leader" ;;
    single) echo "single MariaDB" ;;
    follower) echo "3-node via follower" ;;
    follower_db) echo "follower's MariaDB" ;;
    esac
}

warmup() {
    ((WARMUP > 0)) || return 0
    log "${WARMUP}s oltp_write_only warm-up on each target (not measured)"
    sb oltp_write_only "${PROXY_PORT[1]}" run --threads="$THREADS" --time="$WARMUP" \
        >"$TMP/warmup.cluster.log" 2>&1 || die "warm-up through the leader failed: $(tail -n 20 "$TMP/warmup.cluster.log")"
    measure_lag 2>/dev/null
    check_nodes
    sb oltp_write_only "${DB_PORT[single]}" run --threads="$THREADS" --time="$WARMUP" \
        >"$TMP/warmup.single.log" 2>&1 || die "warm-up on the single MariaDB failed: $(tail -n 20 "$TMP/warmup.single.log")"
}

RUNS=("write_only oltp_write_only $THREADS" "insert oltp_insert $THREADS" "write_only_1t oltp_write_only 1")

# <key> <workload> <threads> <baseline target> <measured target>
FOLLOWER_RUNS=("read_write oltp_read_write $THREADS cluster follower"
    "point_select oltp_point_select $THREADS follower_db follower")

# FOLLOWER: a node other than node-1 that reports itself as an active follower. Every
# run here goes through node-1 as the leader (start_cluster waited for it), so check
# that it still is.
pick_follower() {
    local i role
    role=$(status_field 1 role)
    [[ $role == leader ]] || die "node-1 is no longer the leader (role ${role:-unknown}): $(api 1 /cluster 2>/dev/null | jq -c '{leader_id, term}')"
    FOLLOWER=""
    for ((i = 2; i <= NODES; i++)); do
        if [[ $(status_field "$i" role) == follower && $(status_field "$i" status) == Active ]]; then
            FOLLOWER=$i
            break
        fi
    done
    [[ -n $FOLLOWER ]] || die "no active follower: $(for ((i = 2; i <= NODES; i++)); do api "$i" /status 2>/dev/null | jq -c '{node_id, role, status}'; done)"
    log "follower runs through node-$FOLLOWER (proxy 127.0.0.1:${PROXY_PORT[$FOLLOWER]}, MariaDB 127.0.0.1:${DB_PORT[node-$FOLLOWER]})"
}

run_all() {
    local r key workload threads base measured
    for r in "${RUNS[@]}"; do
        read -r key workload threads <<<"$r"
        run_one "$key" "$workload" "$threads" cluster
        run_one "$key" "$workload" "$threads" single
    done
    # The sbtest tables prepared through the leader; every run through a proxy above
    # ended with measure_lag, so the followers hold them and are caught up.
    pick_follower
    for r in "${FOLLOWER_RUNS[@]}"; do
        read -r key workload threads base measured <<<"$r"
        run_one "$key" "$workload" "$threads" "$base"
        run_one "$key" "$workload" "$threads" "$measured"
    done
}

# ---------------------------------------------------------------- convergence

CONVERGED=1
check_converged() {
    local i tables list sums=() first
    tables=$(sql "${DB_PORT[node-1]}" -N -e "SELECT GROUP_CONCAT(CONCAT('sbtest.', table_name) ORDER BY table_name)
        FROM information_schema.tables WHERE table_schema = 'sbtest'")
    [[ -n $tables && $tables != NULL ]] || die "no sbtest tables on node-1's MariaDB"
    echo
    echo "convergence: CHECKSUM TABLE $tables"
    for ((i = 1; i <= NODES; i++)); do
        list=$(sql "${DB_PORT[node-$i]}" -N -e "SELECT GROUP_CONCAT(table_name ORDER BY table_name)
            FROM information_schema.tables WHERE table_schema = 'sbtest'")
        sums[i]="$list | $(sql "${DB_PORT[node-$i]}" -N -e "CHECKSUM TABLE $tables" | awk '{ printf "%s%s=%s", sep, $1, $2; sep=" " }')"
        echo "  node-$i: ${sums[i]}"
    done
    first=${sums[1]}
    for ((i = 2; i <= NODES; i++)); do
        [[ ${sums[i]} == "$first" ]] || CONVERGED=0
    done
    if ((CONVERGED)); then
        echo CONVERGED
    else
        echo "DIVERGED"
        for ((i = 1; i <= NODES; i++)); do
            echo "  node-$i: $(sql "${DB_PORT[node-$i]}" -N -e "SELECT GROUP_CONCAT(CONCAT(t, '=', n) SEPARATOR ' ') FROM (
                $(for t in ${tables//,/ }; do printf "SELECT '%s' t, COUNT(*) n FROM %s UNION ALL " "${t#sbtest.}" "$t"; done | sed 's/ UNION ALL $//')) c") (row counts)"
        done
    fi
}

# ---------------------------------------------------------------- report

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# row <workload name> <key> <target> <baseline target>
ROW_FMT='%-22s | %-20s | %9s | %7s | %9s | %8s | %s\n'
row() {
    local name=$1 key=$2 t=$3 base=$4 l
    # shellcheck disable=SC2059
    printf "$ROW_FMT" "$name" "$(target_name "$t")" "${TPS[$key.$t]}" "${P95[$key.$t]}" \
        "$(ratio "${TPS[$key.$t]}" "${TPS[$key.$base]}")" "${ERRS[$key.$t]}" "${LAGTXT[$key.$t]:--}"
    for l in ${LAGS[$key.$t]:-}; do
        [[ $l == ">"* ]] && l=${l#>}
        MAX_LAG=$(awk -v a="$MAX_LAG" -v b="$l" 'BEGIN { printf "%.2f", (b > a ? b : a) }')
    done
}

report() {
    local r key workload threads name base measured
    MAX_LAG=0
    echo
    echo "sysbench: ${DURATION}s per run, $TABLES x $TABLE_SIZE rows, $(nproc) CPUs, innodb_flush_log_at_trx_commit=$INNODB_FLUSH (cluster: $CLUSTER_INNODB_FLUSH, follower_innodb_flush=${FOLLOWER_FLUSH:-unset}), load avg now $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "statements: $PS_NOTE"
    echo "leader node-1, follower node-$FOLLOWER; vs base: TPS over the TPS of the same workload's 1.00 row"
    # shellcheck disable=SC2059
    printf "$ROW_FMT" workload target TPS "p95 ms" "vs base" "errors/s" "follower lag s (entries behind): node-2, node-3"
    printf '%s\n' "-----------------------+----------------------+-----------+---------+-----------+----------+-----------------------------------------------"
    for r in "${RUNS[@]}"; do
        read -r key workload threads <<<"$r"
        name="${workload#oltp_} ${threads}t"
        row "$name" "$key" cluster single
        row "$name" "$key" single single
    done
    for r in "${FOLLOWER_RUNS[@]}"; do
        read -r key workload threads base measured <<<"$r"
        name="${workload#oltp_} ${threads}t"
        row "$name" "$key" "$base" "$base"
        row "$name" "$key" "$measured" "$base"
    done
}

need_packages
build
check_idle
install_template
for ((n = 1; n <= NODES; n++)); do
    start_mariadb "node-$n" --proxy-protocol-networks=127.0.0.0/8,localhost
done
start_mariadb single
start_cluster
probe_prepared
log "statements: $PS_NOTE"
prepare "${PROXY_PORT[1]}" cluster
measure_lag
check_nodes
prepare "${DB_PORT[single]}" single
warmup
run_all
report
check_converged
echo
echo "RESULT write_only_vs_single=$(ratio "${TPS[write_only.cluster]}" "${TPS[write_only.single]}")" \
    "insert_vs_single=$(ratio "${TPS[insert.cluster]}" "${TPS[insert.single]}") max_lag_s=$MAX_LAG" \
    "follower_rw_vs_leader=$(ratio "${TPS[read_write.follower]}" "${TPS[read_write.cluster]}")" \
    "follower_point_select_vs_direct=$(ratio "${TPS[point_select.follower]}" "${TPS[point_select.follower_db]}")"
if ((!CONVERGED)); then
    dump_logs
    exit 1
fi
