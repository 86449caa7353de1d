//! Prometheus metrics (`GET /metrics`), through the `metrics` crate and its
//! Prometheus exporter.
//!
//! Counters and histograms are recorded where things happen (the proxy, the
//! sequencer, the WAL writer, the Raft log store); gauges that are facts about the
//! node (its log and applied indexes, the lag of each member, its MariaDB's health)
//! are read from the cluster when the page is scraped, so they are never stale.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `wolfscale_proxy_connections_total` | counter | |
//! | `wolfscale_proxy_connections_open` | gauge | |
//! | `wolfscale_proxy_statements_total` | counter | `class` |
//! | `wolfscale_proxy_statement_seconds` | histogram | `class` |
//! | `wolfscale_proxy_routed_total` | counter | `target` (local, leader, both) |
//! | `wolfscale_proxy_errors_total` | counter | `code` (MariaDB error number) |
//! | `wolfscale_commit_seconds` | histogram | (leader: from the append to the commit turn) |
//! | `wolfscale_log_append_entries` | histogram | (entries per Raft log append) |
//! | `wolfscale_wal_fsync_seconds` | histogram | |
//! | `wolfscale_wal_batch_entries` | histogram | (entries per WAL frame) |
//! | `wolfscale_applied_entries_total` | counter | |
//! | `wolfscale_log_last_index`, `wolfscale_applied_index`, `wolfscale_committed_index` | gauge | |
//! | `wolfscale_term`, `wolfscale_is_leader` | gauge | |
//! | `wolfscale_leader_changes_total`, `wolfscale_elections_total` | counter | |
//! | `wolfscale_replication_lag_entries`, `wolfscale_replication_lag_seconds` | gauge | `node` |
//! | `wolfscale_database_healthy` | gauge | |
//!
//! The recorder is global to the process: nodes run in one process (the in-process
//! test clusters) share it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "wolfscale_proxy_connections_total";
pub const CONNECTIONS_OPEN: &str = "wolfscale_proxy_connections_open";
pub const STATEMENTS: &str = "wolfscale_proxy_statements_total";
pub const STATEMENT_SECONDS: &str = "wolfscale_proxy_statement_seconds";
pub const ROUTED: &str = "wolfscale_proxy_routed_total";
pub const ERRORS: &str = "wolfscale_proxy_errors_total";
pub const COMMIT_SECONDS: &str = "wolfscale_commit_seconds";
pub const APPEND_ENTRIES: &str = "wolfscale_log_append_entries";
pub const FSYNC_SECONDS: &str = "wolfscale_wal_fsync_seconds";
pub const WAL_BATCH_ENTRIES: &str = "wolfscale_wal_batch_entries";
pub const APPLIED_ENTRIES: &str = "wolfscale_applied_entries_total";
pub const LEADER_CHANGES: &str = "wolfscale_leader_changes_total";
pub const ELECTIONS: &str = "wolfscale_elections_total";

/// Latency buckets, in seconds: 50 µs to 30 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 30.0,
];
/// Size buckets (entries per batch).
const COUNT_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use. `None` when another recorder was
/// installed first (then `/metrics` says so).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = [
                (STATEMENT_SECONDS, &SECONDS_BUCKETS[..]),
                (COMMIT_SECONDS, &SECONDS_BUCKETS[..]),
                (FSYNC_SECONDS, &SECONDS_BUCKETS[..]),
                (APPEND_ENTRIES, &COUNT_BUCKETS[..]),
                (WAL_BATCH_ENTRIES, &COUNT_BUCKETS[..]),
            ]
            .into_iter()
            .try_fold(builder, |b, (name, buckets)| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(name.to_string()),
                    buckets,
                )
            })
            .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        CONNECTIONS,
        "Client connections accepted by the MySQL proxy"
    );
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open now");
    describe_counter!(STATEMENTS, "Statements received, by class");
    describe_histogram!(
        STATEMENT_SECONDS,
        Unit::Seconds,
        "Time from a statement's arrival to its reply, by class"
    );
    describe_counter!(ROUTED, "Routing decisions of the proxy, by target");
    describe_counter!(
        ERRORS,
        "ERR packets sent to clients, by MariaDB error number"
    );
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Leader: from handing a transaction to Raft to its commit turn (majority stored)"
    );
    describe_histogram!(APPEND_ENTRIES, "Entries per Raft log append");
    describe_histogram!(FSYNC_SECONDS, Unit::Seconds, "Time of one WAL fdatasync");
    describe_histogram!(
        WAL_BATCH_ENTRIES,
        "Entries per WAL frame (one write, one sync)"
    );
    describe_counter!(APPLIED_ENTRIES, "Log entries applied to the local MariaDB");
    describe_counter!(LEADER_CHANGES, "Changes of the leader this node has seen");
    describe_counter!(ELECTIONS, "Elections this node has stood in");
}

/// Counts an open client connection while it lives.
pub struct OpenConnection;

impl OpenConnection {
    pub fn new() -> OpenConnection {
        metrics::counter!(CONNECTIONS).increment(1);
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        OpenConnection
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        OpenConnection::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// Statements this process's proxy has answered (also in
/// `wolfscale_proxy_statements_total`, by class): `/status` carries it so the status
/// page can draw each node's statement rate.
static STATEMENTS_ANSWERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn statements() -> u64 {
    STATEMENTS_ANSWERED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A statement of class `name` was answered in `elapsed`.
pub fn statement_done(name: &'static str, elapsed: Duration) {
    STATEMENTS_ANSWERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!(STATEMENTS, "class" => name).increment(1);
    metrics::histogram!(STATEMENT_SECONDS, "class" => name).record(elapsed.as_secs_f64());
}

/// An ERR packet with `code` went to a client.
pub fn error_sent(code: u16) {
    metrics::counter!(ERRORS, "code" => code.to_string()).increment(1);
}

/// Follow the cluster's view and keep the gauges of leadership and replication, and
/// the leader-change and election counters. Lag in seconds is the time since a
/// member last matched the leader's log (0 while it does).
pub fn watch(cluster: std::sync::Arc<crate::cluster::Cluster>) -> tokio::task::JoinHandle<()> {
    use openraft::async_runtime::watch::WatchReceiver;
    tokio::spawn(async move {
        let mut rx = cluster.raft().metrics();
        let mut leader = None;
        let mut candidate = false;
        let mut caught_up: std::collections::HashMap<String, std::time::Instant> =
            Default::default();
        loop {
            let (now_leader, is_candidate) = {
                let m = rx.borrow_watched();
                (
                    m.current_leader,
                    m.state == openraft::ServerState::Candidate,
                )
            };
            if now_leader != leader {
                if now_leader.is_some() {
                    metrics::counter!(LEADER_CHANGES).increment(1);
                }
                leader = now_leader;
            }
            if is_candidate && !candidate {
                metrics::counter!(ELECTIONS).increment(1);
            }
            candidate = is_candidate;
            record_gauges(&cluster);
            record_lag(&cluster, &mut caught_up);
            if rx.changed().await.is_err() {
                return;
            }
            // At most ten updates a second under load.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Set the node's gauges from its state now.
pub fn record_gauges(cluster: &crate::cluster::Cluster) {
    let s = cluster.node_status();
    metrics::gauge!("wolfscale_log_last_index").set(s.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!("wolfscale_applied_index").set(s.applied_index.unwrap_or(0) as f64);
    metrics::gauge!("wolfscale_committed_index").set(s.committed_index.unwrap_or(0) as f64);
    metrics::gauge!("wolfscale_term").set(s.term as f64);
    metrics::gauge!("wolfscale_is_leader").set(if s.role == "leader" { 1.0 } else { 0.0 });
    let healthy = s.database == crate::cluster::leadership::DbHealth::Healthy;
    metrics::gauge!("wolfscale_database_healthy").set(if healthy { 1.0 } else { 0.0 });
}

/// Set the members' lag gauges (on the leader, which knows them).
fn record_lag(
    cluster: &crate::cluster::Cluster,
    caught_up: &mut std::collections::HashMap<String, std::time::Instant>,
) {
    let view = cluster.cluster_view(Duration::from_millis(500));
    let now = std::time::Instant::now();
    // A member this node no longer knows the lag of (it stopped leading, the member was
    // removed): NaN, not the last value it had, which would read as a lag frozen in time.
    let known: std::collections::HashSet<&str> = view
        .members
        .iter()
        .filter(|m| m.lag.is_some())
        .map(|m| m.node_id.as_str())
        .collect();
    let gone: Vec<String> = caught_up
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    for node in gone {
        caught_up.remove(&node);
        metrics::gauge!("wolfscale_replication_lag_entries", "node" => node.clone()).set(f64::NAN);
        metrics::gauge!("wolfscale_replication_lag_seconds", "node" => node).set(f64::NAN);
    }
    for m in view.members {
        let Some(lag) = m.lag else { continue };
        let since = caught_up.entry(m.node_id.clone()).or_insert(now);
        if lag == 0 {
            *since = now;
        }
        metrics::gauge!("wolfscale_replication_lag_entries", "node" => m.node_id.clone())
            .set(lag as f64);
        metrics::gauge!("wolfscale_replication_lag_seconds", "node" => m.node_id)
            .set(now.duration_since(*since).as_secs_f64());
    }
}
