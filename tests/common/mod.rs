//! Test harness: throwaway MariaDB servers and WolfScale proxies in front of them.
//!
//! Every test gets its own `mariadbd` (installed into a temp dir, on a free port, with
//! a small buffer pool) and its own proxy on `127.0.0.1:0`. Both are torn down when the
//! [`Node`] drops — also when the test panics — and the server dies with the test
//! process if that is killed outright.
#![allow(dead_code)]

pub mod procs;
pub mod raw;
pub mod relay;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use wolfscale::localdb::{LocalMariaDb, Options};
use wolfscale::proxy::{Proxy, ProxyHandle, ProxySettings};

/// Password of the `app` account every node has.
pub const APP_PASSWORD: &str = "app-secret";

/// One MariaDB server.
pub struct Db {
    pub server: LocalMariaDb,
    _dir: tempfile::TempDir,
}

impl Db {
    /// Start a server with an `app`@`%` account (all privileges) and a `test` database.
    pub async fn start() -> Db {
        Self::start_with(Options::default()).await
    }

    /// Start a server with `opts` (name resolution, extra arguments).
    pub async fn start_with(opts: Options) -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let server = tokio::task::spawn_blocking(move || LocalMariaDb::start(&path, &opts))
            .await
            .expect("join")
            .expect("start mariadbd");
        let db = Db { server, _dir: dir };
        let mut c = db.root().await;
        // A fixed timestamp, so that the account (its password_last_changed) is the
        // same on every node of a cluster whatever second each server started in.
        c.query_drop(format!(
            "SET timestamp = 1767225600;
             CREATE USER 'app'@'%' IDENTIFIED BY '{APP_PASSWORD}';
             GRANT ALL PRIVILEGES ON *.* TO 'app'@'%' WITH GRANT OPTION;
             CREATE DATABASE IF NOT EXISTS test CHARACTER SET utf8mb4;
             SET timestamp = DEFAULT;"
        ))
        .await
        .expect("bootstrap accounts");
        c.disconnect().await.ok();
        db
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.server.dir().join("mariadbd.sock")
    }

    /// A direct connection as root (bypassing any proxy).
    pub async fn root(&self) -> Conn {
        Conn::new(opts(self.port(), "root", "", None))
            .await
            .expect("connect root")
    }

    /// A direct connection as `app`.
    pub async fn direct(&self, db: Option<&str>) -> Conn {
        Conn::new(opts(self.port(), "app", APP_PASSWORD, db))
            .await
            .expect("connect direct")
    }
}

/// A MariaDB with a proxy in front of it.
pub struct Node {
    pub proxy: Option<ProxyHandle>,
    pub db: Db,
}

impl Node {
    pub async fn start() -> Node {
        Self::start_with(|_| {}).await
    }

    /// Start with the proxy talking to MariaDB over its Unix socket instead of TCP.
    pub async fn start_over_socket() -> Node {
        let db = Db::start().await;
        let mut settings = settings_for(db.port());
        settings.backend_addr = db.socket().display().to_string();
        let proxy = Proxy::bind(settings).await.expect("bind proxy").spawn();
        Node {
            proxy: Some(proxy),
            db,
        }
    }

    /// Start with settings adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut ProxySettings)) -> Node {
        let db = Db::start().await;
        let mut settings = settings_for(db.port());
        tweak(&mut settings);
        let proxy = Proxy::bind(settings).await.expect("bind proxy").spawn();
        Node {
            proxy: Some(proxy),
            db,
        }
    }

    /// A proxy in front of an existing server, over TCP or its Unix socket.
    pub async fn proxy_for(db: &Db, over_socket: bool) -> ProxyHandle {
        let mut settings = settings_for(db.port());
        if over_socket {
            settings.backend_addr = db.socket().display().to_string();
        }
        Proxy::bind(settings).await.expect("bind proxy").spawn()
    }

    pub fn proxy_port(&self) -> u16 {
        self.proxy
            .as_ref()
            .expect("proxy running")
            .local_addr
            .port()
    }

    /// Options for connecting through the proxy.
    pub fn proxy_opts(&self, user: &str, pass: &str, db: Option<&str>) -> Opts {
        opts(self.proxy_port(), user, pass, db)
    }

    /// A connection through the proxy as `app`.
    pub async fn client(&self, db: Option<&str>) -> Conn {
        Conn::new(self.proxy_opts("app", APP_PASSWORD, db))
            .await
            .expect("connect through proxy")
    }

    pub async fn shutdown(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
    }
}

/// Log to stderr when `RUST_LOG` is set (e.g. `RUST_LOG=wolfscale=debug`); nextest
/// shows a failing test's output.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("RUST_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init()
                .ok();
        }
    });
}

pub fn settings_for(db_port: u16) -> ProxySettings {
    init_logging();
    let mut s = ProxySettings::new(
        "127.0.0.1:0".parse().expect("addr"),
        format!("127.0.0.1:{db_port}"),
        "root",
    );
    s.max_connections = 200;
    s.max_packet = 64 << 20;
    s.handshake_timeout = Duration::from_secs(5);
    s.shutdown_timeout = Duration::from_secs(5);
    s
}

pub fn opts(port: u16, user: &str, pass: &str, db: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pass))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// Poll `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The MySQL error code and SQLSTATE of a server error.
pub fn server_error(e: &mysql_async::Error) -> Option<(u16, String)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.state.clone())),
        _ => None,
    }
}

/// A cluster node without a proxy: its MariaDB and its [`wolfscale::cluster::Cluster`].
pub struct RaftNode {
    pub cluster: Option<wolfscale::cluster::Cluster>,
    pub settings: wolfscale::cluster::ClusterSettings,
    pub db: Db,
    pub dir: tempfile::TempDir,
}

/// Cluster settings for node `number` with its data under `dir`, peers filled in later.
pub fn cluster_settings(
    number: u16,
    db: &Db,
    dir: &std::path::Path,
    port: u16,
) -> wolfscale::cluster::ClusterSettings {
    init_logging();
    wolfscale::cluster::ClusterSettings {
        node_id: format!("node-{number}"),
        number,
        bind: format!("127.0.0.1:{port}").parse().unwrap(),
        advertise: format!("127.0.0.1:{port}"),
        proxy_addr: String::new(),
        api_addr: String::new(),
        wal: wolfscale::wal::WalOptions::new(dir),
        peers: vec![],
        bootstrap: false,
        secret: b"test-secret".to_vec(),
        heartbeat_ms: 100,
        election_timeout_min_ms: 400,
        election_timeout_max_ms: 800,
        disable_auto_election: false,
        database: opts(db.port(), "root", "", None),
        follower_innodb_flush: None,
        snapshot_entries: 100_000,
        priority: wolfscale::config::DEFAULT_PRIORITY,
    }
}

/// Start `n` Raft nodes (numbers 1..=n), the first bootstrapping the others.
pub async fn raft_cluster(n: u16) -> Vec<RaftNode> {
    raft_cluster_with(n, |_| {}).await
}

/// [`raft_cluster`] with every node's settings adjusted by `adjust` before it starts.
pub async fn raft_cluster_with(
    n: u16,
    adjust: impl Fn(&mut wolfscale::cluster::ClusterSettings),
) -> Vec<RaftNode> {
    raft_cluster_on(n, Options::default, adjust).await
}

/// [`raft_cluster_with`] with each MariaDB started with `db()`.
pub async fn raft_cluster_on(
    n: u16,
    db: impl Fn() -> Options,
    adjust: impl Fn(&mut wolfscale::cluster::ClusterSettings),
) -> Vec<RaftNode> {
    let dbs = futures_join_all((0..n).map(|_| Db::start_with(db()))).await;
    let ports: Vec<u16> = (0..n)
        .map(|_| wolfscale::localdb::free_port().unwrap())
        .collect();
    let mut nodes = Vec::new();
    for (i, db) in dbs.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = cluster_settings(i as u16 + 1, &db, dir.path(), ports[i]);
        // The member record names the proxy port a follower forwards to; the proxy
        // binds it once the node is up (full nodes).
        s.proxy_addr = format!("127.0.0.1:{}", wolfscale::localdb::free_port().unwrap());
        adjust(&mut s);
        if i == 0 {
            s.bootstrap = true;
            s.peers = ports[1..]
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
        }
        nodes.push(RaftNode {
            cluster: None,
            settings: s,
            db,
            dir,
        });
    }
    // Followers first, so the bootstrapping node finds them listening.
    let starts: Vec<_> = nodes
        .iter()
        .rev()
        .map(|n| wolfscale::cluster::Cluster::start(n.settings.clone()))
        .collect();
    let mut started = Vec::new();
    for s in starts {
        started.push(tokio::spawn(s));
    }
    let mut clusters = Vec::new();
    for h in started {
        clusters.push(h.await.unwrap().expect("start cluster node"));
    }
    clusters.reverse();
    for (node, c) in nodes.iter_mut().zip(clusters) {
        node.cluster = Some(c);
    }
    nodes
}

/// `join_all` for a handful of futures, without a futures dependency.
pub async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// Index of the node that is leader and writable, waiting up to `timeout`.
pub async fn writable_leader(nodes: &[RaftNode], timeout: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if n.cluster
                .as_ref()
                .is_some_and(|c| c.writable_term().is_some())
            {
                return i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no writable leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A full node: MariaDB, Raft, and a proxy writing through the cluster.
pub struct FullNode {
    pub raft: RaftNode,
    pub cluster: std::sync::Arc<wolfscale::cluster::Cluster>,
    pub proxy: Option<ProxyHandle>,
}

impl FullNode {
    pub fn proxy_port(&self) -> u16 {
        self.proxy.as_ref().expect("proxy").local_addr.port()
    }

    pub async fn client(&self, db: Option<&str>) -> Conn {
        Conn::new(opts(self.proxy_port(), "app", APP_PASSWORD, db))
            .await
            .expect("connect through proxy")
    }

    pub fn is_writable(&self) -> bool {
        self.cluster.writable_term().is_some()
    }
}

/// `n` full nodes; waits until one is the writable leader.
pub async fn full_cluster(n: u16) -> Vec<FullNode> {
    full_cluster_with(n, |_| {}).await
}

/// [`full_cluster`] with every proxy's settings adjusted by `adjust`.
pub async fn full_cluster_with(n: u16, adjust: impl Fn(&mut ProxySettings)) -> Vec<FullNode> {
    full_cluster_adjusted(n, |_| {}, adjust).await
}

/// [`full_cluster`] with every node's cluster and proxy settings adjusted.
pub async fn full_cluster_adjusted(
    n: u16,
    cluster: impl Fn(&mut wolfscale::cluster::ClusterSettings),
    adjust: impl Fn(&mut ProxySettings),
) -> Vec<FullNode> {
    full_cluster_on(n, Options::default, cluster, adjust).await
}

/// [`full_cluster_adjusted`] with each MariaDB started with `db()`.
pub async fn full_cluster_on(
    n: u16,
    db: impl Fn() -> Options,
    cluster: impl Fn(&mut wolfscale::cluster::ClusterSettings),
    adjust: impl Fn(&mut ProxySettings),
) -> Vec<FullNode> {
    let nodes = raft_cluster_on(n, db, cluster).await;
    let mut out = Vec::new();
    for mut node in nodes {
        let cluster = std::sync::Arc::new(node.cluster.take().expect("started"));
        let mut settings = settings_for(node.db.port());
        settings.node_number = node.settings.number;
        settings.replicator = Some(cluster.clone());
        settings.listen = node.settings.proxy_addr.parse().expect("proxy address");
        adjust(&mut settings);
        let proxy = Proxy::bind(settings).await.expect("bind proxy").spawn();
        out.push(FullNode {
            raft: node,
            cluster,
            proxy: Some(proxy),
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !out.iter().any(FullNode::is_writable) {
        assert!(tokio::time::Instant::now() < deadline, "no writable leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

pub fn leader_of(nodes: &[FullNode]) -> usize {
    nodes
        .iter()
        .position(FullNode::is_writable)
        .expect("a leader")
}

/// `CHECKSUM TABLE` of every table in `db` on each node's MariaDB, as text.
pub async fn checksums(nodes: &[FullNode], db: &str) -> Vec<Vec<(String, Option<i64>)>> {
    let mut out = Vec::new();
    for n in nodes {
        let mut c = n.raft.db.root().await;
        let tables: Vec<String> = c
            .query(format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' ORDER BY TABLE_NAME"
            ))
            .await
            .unwrap();
        let mut sums = Vec::new();
        for t in tables {
            let row: Option<(String, Option<i64>)> = c
                .query_first(format!("CHECKSUM TABLE `{db}`.`{t}`"))
                .await
                .unwrap();
            sums.push((t, row.and_then(|r| r.1)));
        }
        out.push(sums);
    }
    out
}

/// Wait until every node's MariaDB has applied what the leader committed so far, then
/// compare checksums; returns them.
pub async fn converged(nodes: &[FullNode], db: &str) -> Vec<(String, Option<i64>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sums = checksums(nodes, db).await;
        if sums.windows(2).all(|w| w[0] == w[1]) {
            return sums.into_iter().next().unwrap_or_default();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes did not converge: {sums:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------
// Helpers of tests/determinism.rs and tests/hazards.rs.

/// What each node's applier says (running, or diverged at which entry and why).
pub fn apply_statuses(nodes: &[FullNode]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| {
            let status = n
                .cluster
                .apply_status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            format!("{}: {status:?}", n.raft.settings.node_id)
        })
        .collect()
}

/// Like [`converged`], with a shorter patience and the appliers' status in the panic
/// message, so that a divergence names the entry and the error that stopped it.
pub async fn converged_report(nodes: &[FullNode], db: &str) -> Vec<(String, Option<i64>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sums = checksums(nodes, db).await;
        if sums.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes did not converge on `{db}`:\n  checksums per node: {sums:?}\n  appliers: {:?}",
            apply_statuses(nodes)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    converged(nodes, db).await
}

/// The rows `sql` returns on each node's MariaDB (as root, directly), as values.
pub async fn rows_on_each(nodes: &[FullNode], sql: &str) -> Vec<Vec<Vec<mysql_async::Value>>> {
    let mut out = Vec::new();
    for n in nodes {
        // Unqualified names are in `test`, which every node has.
        let mut c = Conn::new(opts(n.raft.db.port(), "root", "", Some("test")))
            .await
            .expect("connect root");
        let rows: Vec<mysql_async::Row> = c
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", n.raft.settings.node_id));
        out.push(rows.into_iter().map(|r| r.unwrap()).collect());
        c.disconnect().await.ok();
    }
    out
}

/// Wait until `sql` returns the same rows on every node's MariaDB; those rows. Panics
/// with each node's rows and the appliers' status if they stay different.
pub async fn same_on_all(nodes: &[FullNode], sql: &str) -> Vec<Vec<mysql_async::Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let each = rows_on_each(nodes, sql).await;
        if each.windows(2).all(|w| w[0] == w[1]) {
            return each.into_iter().next().unwrap_or_default();
        }
        if tokio::time::Instant::now() > deadline {
            let shown: Vec<String> = nodes
                .iter()
                .zip(&each)
                .map(|(n, rows)| format!("{}: {}", n.raft.settings.node_id, show_rows(rows)))
                .collect();
            panic!(
                "`{sql}` differs between nodes:\n  {}\n  appliers: {:?}",
                shown.join("\n  "),
                apply_statuses(nodes)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One value of a single-row, single-column result, as text (None for NULL).
pub fn cell_text(v: &mysql_async::Value) -> Option<String> {
    match v {
        mysql_async::Value::NULL => None,
        mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// The node's data directory (the parent of its `wal/` directory).
pub fn data_dir(node: &FullNode) -> std::path::PathBuf {
    node.raft
        .settings
        .wal
        .dir
        .parent()
        .expect("wal dir has a parent")
        .to_path_buf()
}

/// Stop a full node: its proxy, then its Raft node (its MariaDB keeps running).
pub async fn stop_full_node(mut node: FullNode) -> RaftNode {
    if let Some(p) = node.proxy.take() {
        p.shutdown().await;
    }
    let mut cluster = node.cluster;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let cluster = loop {
        match std::sync::Arc::try_unwrap(cluster) {
            Ok(c) => break c,
            Err(still_shared) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the cluster handle is still shared after the proxy stopped"
                );
                cluster = still_shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    cluster.shutdown().await;
    node.raft
}

/// Start a stopped node again from its data directory, with a new proxy.
pub async fn start_full_node(mut raft: RaftNode) -> FullNode {
    let mut settings = raft.settings.clone();
    // It rejoins an existing cluster: never bootstrap again.
    settings.bootstrap = false;
    settings.peers = vec![];
    let cluster = std::sync::Arc::new(
        wolfscale::cluster::Cluster::start(settings)
            .await
            .expect("restart cluster node"),
    );
    raft.cluster = None;
    let mut proxy_settings = settings_for(raft.db.port());
    proxy_settings.node_number = raft.settings.number;
    proxy_settings.replicator = Some(cluster.clone());
    if let Ok(addr) = raft.settings.proxy_addr.parse() {
        proxy_settings.listen = addr;
    }
    let proxy = Proxy::bind(proxy_settings)
        .await
        .expect("bind proxy")
        .spawn();
    FullNode {
        raft,
        cluster,
        proxy: Some(proxy),
    }
}

/// Rows in full (the driver's `Debug` cuts values at 8 bytes): text as text, other
/// bytes as hex.
pub fn show_rows(rows: &[Vec<mysql_async::Value>]) -> String {
    let cell = |v: &mysql_async::Value| match v {
        mysql_async::Value::NULL => "NULL".to_string(),
        mysql_async::Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!(
                "x'{}'",
                b.iter().map(|x| format!("{x:02X}")).collect::<String>()
            ),
        },
        other => format!("{other:?}"),
    };
    let rows: Vec<String> = rows
        .iter()
        .map(|r| format!("({})", r.iter().map(cell).collect::<Vec<_>>().join(", ")))
        .collect();
    format!("[{}]", rows.join(", "))
}

/// Run an external tool a test needs (sysbench, a Python client, the mariadb CLI):
/// its output, or a panic with both streams if it failed or is missing.
pub fn run(cmd: &mut std::process::Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}); run scripts/test-deps.sh first"));
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
