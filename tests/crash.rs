//! A leader killed at each step of its commit pipeline: the transaction ends applied
//! exactly once on every node, or on none; never on some.
//!
//! The nodes are `wolfscale start` processes (each beside its own throwaway MariaDB),
//! so that a crash point can abort one outright (`WOLFSCALE_FAILPOINT_FILE`, see
//! `src/failpoint.rs`): no destructor runs, no buffer is flushed, its MariaDB
//! connections drop as they would on a SIGKILL.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{opts, Db, APP_PASSWORD};
use mysql_async::prelude::*;
use mysql_async::Conn;
use wolfscale::localdb::free_port;

/// One `wolfscale start` process and its MariaDB.
struct ProcNode {
    n: usize,
    db: Db,
    dir: tempfile::TempDir,
    proxy_port: u16,
    api_port: u16,
    cluster_port: u16,
    child: Option<Child>,
}

impl ProcNode {
    fn config(&self) -> PathBuf {
        self.dir.path().join("wolfscale.toml")
    }

    fn failpoints(&self) -> PathBuf {
        self.dir.path().join("failpoints")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    fn write_config(&self, peers: &[u16]) {
        let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let text = format!(
            "[node]\nid = \"node-{n}\"\nbind_address = \"127.0.0.1:{cp}\"\n\
             advertise_address = \"127.0.0.1:{cp}\"\ndata_dir = \"{data}\"\n\
             [database]\nhost = \"127.0.0.1\"\nport = {db}\nuser = \"root\"\n\
             [cluster]\npeers = [{peers}]\nsecret = \"crash-test-secret\"\n\
             heartbeat_interval_ms = 100\nelection_timeout_ms = 500\n\
             [api]\nbind_address = \"127.0.0.1:{api}\"\n\
             [proxy]\nbind_address = \"127.0.0.1:{proxy}\"\n",
            n = self.n,
            cp = self.cluster_port,
            data = self.dir.path().join("data").display(),
            db = self.db.port(),
            peers = peers.join(", "),
            api = self.api_port,
            proxy = self.proxy_port,
        );
        std::fs::write(self.config(), text).unwrap();
    }

    fn spawn(&mut self, bootstrap: bool) {
        std::fs::write(self.failpoints(), "").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wolfscale"));
        cmd.arg("--config")
            .arg(self.config())
            .arg("start")
            .env("WOLFSCALE_FAILPOINT_FILE", self.failpoints())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if bootstrap {
            cmd.arg("--bootstrap");
        }
        self.child = Some(cmd.spawn().expect("spawn wolfscale start"));
    }

    fn arm(&self, point: &str) {
        std::fs::write(self.failpoints(), point).unwrap();
    }

    /// Wait for the process to end (it aborted at its crash point).
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        status
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    async fn status(&self) -> Option<serde_json::Value> {
        http_get_json(self.api_port, "/status").await
    }

    async fn client(&self) -> Result<Conn, mysql_async::Error> {
        Conn::new(opts(self.proxy_port, "app", APP_PASSWORD, Some("test"))).await
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn http_get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Three process nodes; node 0 bootstraps.
async fn cluster() -> Vec<ProcNode> {
    let dbs = common::futures_join_all((0..3).map(|_| Db::start())).await;
    let mut nodes: Vec<ProcNode> = dbs
        .into_iter()
        .enumerate()
        .map(|(i, db)| ProcNode {
            n: i + 1,
            db,
            dir: tempfile::tempdir().unwrap(),
            proxy_port: free_port().unwrap(),
            api_port: free_port().unwrap(),
            cluster_port: free_port().unwrap(),
            child: None,
        })
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.cluster_port).collect();
    for node in &nodes {
        let peers: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| *p != node.cluster_port)
            .collect();
        node.write_config(&peers);
    }
    for node in nodes.iter_mut().skip(1) {
        node.spawn(false);
    }
    nodes[0].spawn(true);
    nodes
}

/// The node that takes writes among those `eligible`, waiting up to 30 s for one.
async fn leader_among(nodes: &[ProcNode], eligible: impl Fn(usize) -> bool) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if !eligible(i) || n.child.is_none() {
                continue;
            }
            if let Some(s) = n.status().await {
                if s["role"] == "leader" && s["status"] == "Active" {
                    return i;
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(ProcNode::log_text).collect();
            panic!("no leader; logs:\n{}", logs.join("\n----\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run `sql` through `node`'s proxy, retrying while the node is not yet writable.
async fn write(node: &ProcNode, sql: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = match node.client().await {
            Ok(mut c) => match c.query_drop(sql).await {
                Ok(()) => return,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql} through node-{}: {last}",
            node.n
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until every node's MariaDB answers `sql` with `want`, and has no prepared
/// transaction left.
async fn settled(nodes: &[ProcNode], sql: &str, want: &str) {
    for node in nodes {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut c = node.db.root().await;
            // Until the node has replayed the DDL, the table may not exist there.
            let v: Option<String> = c
                .query_first::<Option<String>, _>(sql)
                .await
                .ok()
                .flatten()
                .flatten();
            let prepared: Vec<mysql_async::Row> = c.query("XA RECOVER").await.unwrap();
            if v.as_deref() == Some(want) && prepared.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node-{}: {sql} gave {v:?} with {} prepared, want {want:?} and nothing prepared; its log:\n{}",
                node.n,
                prepared.len(),
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Kill the leader at `point` during one autocommit UPDATE, restart it, and check
/// the row everywhere.
async fn crash_at(point: &str, committed: bool) {
    let mut nodes = cluster().await;
    let l = leader_among(&nodes, |_| true).await;
    write(
        &nodes[l],
        "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)",
    )
    .await;
    write(&nodes[l], "INSERT INTO t VALUES (1, 0), (2, 0)").await;
    settled(
        &nodes,
        "SELECT GROUP_CONCAT(v ORDER BY id) FROM test.t",
        "0,0",
    )
    .await;

    nodes[l].arm(point);
    let mut c = nodes[l].client().await.unwrap();
    let r = c.query_drop("UPDATE t SET v = v + 1 WHERE id = 1").await;
    assert!(
        r.is_err(),
        "the leader answered although it died at {point}"
    );
    let status = nodes[l].wait_exit().await;
    assert!(!status.success(), "{status:?}");
    assert!(nodes[l].log_text().contains(&format!("failpoint {point}")));

    // The others elect a leader and go on.
    let survivors_leader = leader_among(&nodes, |i| i != l).await;
    nodes[l].spawn(false);
    let want = if committed { "1,0" } else { "0,0" };
    settled(
        &nodes,
        "SELECT GROUP_CONCAT(v ORDER BY id) FROM test.t",
        want,
    )
    .await;

    // The same rows take writes again, on every node (no lock left behind by a
    // prepared transaction), and the crashed node's replay agrees.
    write(
        &nodes[survivors_leader],
        "UPDATE t SET v = v + 10 WHERE id IN (1, 2)",
    )
    .await;
    let want = if committed { "11,10" } else { "10,10" };
    settled(
        &nodes,
        "SELECT GROUP_CONCAT(v ORDER BY id) FROM test.t",
        want,
    )
    .await;
    for n in &nodes {
        let s = n.status().await.expect("status");
        assert_ne!(s["status"], "Diverged", "node-{}: {s}", n.n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_dies_after_quorum_before_its_local_commit() {
    crash_at("before-local-commit", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_dies_after_its_local_commit_before_the_marker() {
    crash_at("after-local-commit", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_dies_after_prepare_before_logging() {
    crash_at("after-prepare", false).await;
}

/// The leader runs a DDL on its MariaDB before logging it (so that MariaDB checks the
/// client's privileges): dying in between leaves a change the log does not have. The
/// other two elect a leader and go on without it; the node, restarted, finds its
/// intent record unmatched in its log, reports `Diverged` naming the DDL, and applies
/// nothing on top of a schema that differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_dies_after_running_a_ddl_before_logging_it() {
    let mut nodes = cluster().await;
    let l = leader_among(&nodes, |_| true).await;
    write(&nodes[l], "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let columns = "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'test' AND table_name = 't'";
    settled(&nodes, columns, "1").await;

    nodes[l].arm("after-ddl-before-log");
    let mut c = nodes[l].client().await.unwrap();
    let r = c.query_drop("ALTER TABLE t ADD COLUMN extra INT").await;
    assert!(r.is_err(), "the leader answered although it died");
    let status = nodes[l].wait_exit().await;
    assert!(!status.success(), "{status:?}");
    assert!(nodes[l]
        .log_text()
        .contains("failpoint after-ddl-before-log"));

    let survivors_leader = leader_among(&nodes, |i| i != l).await;
    write(&nodes[survivors_leader], "INSERT INTO t VALUES (1)").await;
    nodes[l].spawn(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        if let Some(s) = nodes[l].status().await {
            if s["status"] == "Diverged" {
                break s;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-{} did not report Diverged; its log:\n{}",
            nodes[l].n,
            nodes[l].log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        s.to_string().contains("ADD COLUMN extra"),
        "the status names the DDL: {s}"
    );
    // The crashed node's MariaDB has the column and nothing after it: the insert that
    // followed was not applied on top of it.
    let mut direct = nodes[l].db.root().await;
    let rows: Option<i64> = direct
        .query_first("SELECT COUNT(*) FROM test.t")
        .await
        .unwrap();
    assert_eq!(rows, Some(0));
    // The others never got it, and go on.
    for (i, n) in nodes.iter().enumerate() {
        if i == l {
            continue;
        }
        let mut c = n.db.root().await;
        let cols: Option<i64> = c.query_first(columns).await.unwrap();
        assert_eq!(cols, Some(1), "node-{} has no extra column", n.n);
        let s = n.status().await.expect("status");
        assert_ne!(s["status"], "Diverged", "node-{}: {s}", n.n);
    }
}
