//! `wolfscale start` processes, each beside its own throwaway MariaDB, for the tests
//! that must kill a node outright (SIGKILL, a crash point: no destructor runs, its
//! MariaDB connections drop as they would on a real crash).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{opts, Db, APP_PASSWORD};
use mysql_async::prelude::*;
use mysql_async::Conn;
use wolfscale::localdb::free_port;

/// One `wolfscale start` process and its MariaDB.
pub struct ProcNode {
    pub n: usize,
    pub db: Db,
    pub dir: tempfile::TempDir,
    pub proxy_port: u16,
    pub api_port: u16,
    pub cluster_port: u16,
    /// Where its cluster listener binds (and its peer connections come from).
    pub bind_ip: std::net::Ipv4Addr,
    /// The cluster port it advertises (a relay's, or its own).
    pub advertise_port: u16,
    pub child: Option<Child>,
    /// Extra `[cluster]` and `[proxy]` settings (see [`FAST`]).
    pub tuning: Tuning,
}

/// Timeouts of a cluster of process nodes.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub failover_wait_ms: u64,
    /// `[api] token`, if any.
    pub api_token: Option<&'static str>,
    /// More config, appended to the file (whole sections, e.g. `[wal]`).
    pub extra: &'static str,
    /// More `[api]` keys (lines ending in a newline).
    pub api_extra: &'static str,
    /// More `[database]` keys (lines ending in a newline).
    pub db_extra: &'static str,
    /// More `mariadbd` arguments for every node's MariaDB.
    pub db_args: &'static [&'static str],
}

/// Short timeouts: elections within a second.
pub const FAST: Tuning = Tuning {
    heartbeat_ms: 100,
    election_timeout_ms: 500,
    failover_wait_ms: 5000,
    api_token: None,
    extra: "",
    api_extra: "",
    db_extra: "",
    db_args: &[],
};

/// The documented defaults (heartbeat 500 ms, elections after 1.5 to 3 s).
pub const DEFAULTS: Tuning = Tuning {
    heartbeat_ms: 500,
    election_timeout_ms: 1500,
    failover_wait_ms: 5000,
    api_token: None,
    extra: "",
    api_extra: "",
    db_extra: "",
    db_args: &[],
};

impl ProcNode {
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("wolfscale.toml")
    }

    pub fn failpoints(&self) -> PathBuf {
        self.dir.path().join("failpoints")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    pub fn write_config(&self, peers: &[u16]) {
        let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let text = format!(
            "[node]\nid = \"node-{n}\"\nbind_address = \"{ip}:{cp}\"\n\
             advertise_address = \"127.0.0.1:{ap}\"\ndata_dir = \"{data}\"\n\
             [database]\nhost = \"127.0.0.1\"\nport = {db}\nuser = \"root\"\n\
             [cluster]\npeers = [{peers}]\nsecret = \"crash-test-secret\"\n\
             heartbeat_interval_ms = {hb}\nelection_timeout_ms = {et}\n\
             [api]\nbind_address = \"127.0.0.1:{api}\"\n\
             [proxy]\nbind_address = \"127.0.0.1:{proxy}\"\nfailover_wait_ms = {fw}\n",
            hb = self.tuning.heartbeat_ms,
            et = self.tuning.election_timeout_ms,
            fw = self.tuning.failover_wait_ms,
            n = self.n,
            cp = self.cluster_port,
            ip = self.bind_ip,
            ap = self.advertise_port,
            data = self.dir.path().join("data").display(),
            db = self.db.port(),
            peers = peers.join(", "),
            api = self.api_port,
            proxy = self.proxy_port,
        );
        let text = match self.tuning.api_token {
            Some(t) => text.replace("[api]\n", &format!("[api]\ntoken = \"{t}\"\n")),
            None => text,
        };
        let mut text = text
            .replace("[api]\n", &format!("[api]\n{}", self.tuning.api_extra))
            .replace(
                "[database]\n",
                &format!("[database]\n{}", self.tuning.db_extra),
            );
        text.push_str(self.tuning.extra);
        std::fs::write(self.config(), text).unwrap();
    }

    pub fn spawn(&mut self, bootstrap: bool) {
        let args: &[&str] = if bootstrap {
            &["start", "--bootstrap"]
        } else {
            &["start"]
        };
        self.spawn_with(args);
    }

    /// `wolfscale --config … <args>` (`start`, `join HOST:PORT`, …).
    pub fn spawn_with(&mut self, args: &[&str]) {
        std::fs::write(self.failpoints(), "").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wolfscale"));
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .env("WOLFSCALE_FAILPOINT_FILE", self.failpoints())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn wolfscale start"));
    }

    pub fn arm(&self, point: &str) {
        std::fs::write(self.failpoints(), point).unwrap();
    }

    /// Wait for the process to end (it aborted at its crash point).
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        status
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    pub async fn status(&self) -> Option<serde_json::Value> {
        http_get_json(self.api_port, "/status").await
    }

    pub async fn client(&self) -> Result<Conn, mysql_async::Error> {
        Conn::new(opts(self.proxy_port, "app", APP_PASSWORD, Some("test"))).await
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn http_get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    http_json(port, "GET", path).await
}

/// `POST path` with an empty body (from 127.0.0.1: the admin endpoints' local rule).
pub async fn http_post_json(port: u16, path: &str) -> Option<serde_json::Value> {
    http_json(port, "POST", path).await
}

/// An HTTP/1.0 request from 127.0.0.1 with `headers` and `body`: the status and the
/// body (JSON, or the text as a JSON string when it is not JSON).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the API");
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("send the head");
    // A server may answer (413) before it has read the whole body.
    s.write_all(body).await.ok();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .expect("an answer within a minute")
        .ok();
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json =
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.into()));
    (status, json)
}

async fn http_json(port: u16, method: &str, path: &str) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Three process nodes; node 0 bootstraps.
pub async fn cluster() -> Vec<ProcNode> {
    cluster_of(3, FAST).await
}

/// `n` process nodes with `tuning`; node 0 bootstraps.
pub async fn cluster_of(n: usize, tuning: Tuning) -> Vec<ProcNode> {
    start_cluster(n, tuning, |_, port| (std::net::Ipv4Addr::LOCALHOST, port)).await
}

/// `n` process nodes whose peer links each pass a fault-injecting relay: node `i`
/// binds its cluster port on 127.0.0.(10+i), so its outgoing peer connections come
/// from there, and advertises a relay on 127.0.0.1 that forwards to it. Cut a node off
/// with [`partition`].
pub async fn cluster_behind_relays(
    n: usize,
    tuning: Tuning,
) -> (Vec<ProcNode>, Vec<super::relay::Relay>) {
    let relays = std::sync::Mutex::new(Vec::new());
    let nodes = start_cluster(n, tuning, |i, port| {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, 10 + i as u8);
        let relay = super::relay::Relay::to(std::net::SocketAddr::from((ip, port)));
        let at = relay.addr.port();
        relays.lock().unwrap().push(relay);
        (ip, at)
    })
    .await;
    (nodes, relays.into_inner().unwrap())
}

/// Cut `nodes[i]` off from its peers (or heal): its relay drops everything, and the
/// others' relays drop what comes from its address.
pub fn partition(nodes: &[ProcNode], relays: &[super::relay::Relay], i: usize, cut: bool) {
    for (j, relay) in relays.iter().enumerate() {
        if j == i {
            relay.set(if cut {
                super::relay::Mode::Cut
            } else {
                super::relay::Mode::Pass
            });
        } else {
            relay.block(std::net::IpAddr::V4(nodes[i].bind_ip), cut);
        }
    }
}

/// `n` nodes; `place(i, cluster_port)` gives node `i`'s bind address and advertised
/// port.
async fn start_cluster(
    n: usize,
    tuning: Tuning,
    place: impl Fn(usize, u16) -> (std::net::Ipv4Addr, u16),
) -> Vec<ProcNode> {
    let options = || wolfscale::localdb::Options {
        extra_args: tuning.db_args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    let dbs = super::futures_join_all((0..n).map(|_| Db::start_with(options()))).await;
    let mut nodes: Vec<ProcNode> = dbs
        .into_iter()
        .enumerate()
        .map(|(i, db)| {
            let cluster_port = free_port().unwrap();
            let (bind_ip, advertise_port) = place(i, cluster_port);
            ProcNode {
                n: i + 1,
                db,
                dir: tempfile::tempdir().unwrap(),
                proxy_port: free_port().unwrap(),
                api_port: free_port().unwrap(),
                cluster_port,
                bind_ip,
                advertise_port,
                child: None,
                tuning,
            }
        })
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.advertise_port).collect();
    for node in &nodes {
        let peers: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| *p != node.advertise_port)
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
pub async fn leader_among(nodes: &[ProcNode], eligible: impl Fn(usize) -> bool) -> usize {
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
pub async fn write(node: &ProcNode, sql: &str) {
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
pub async fn settled(nodes: &[ProcNode], sql: &str, want: &str) {
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

/// A `wolfscale proxy` process in front of a cluster of process nodes (no MariaDB of
/// its own).
pub struct ProcProxy {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
}

impl ProcProxy {
    /// Start one in front of `nodes`, with `extra` appended to its `[proxy]` section.
    /// Returns once it takes connections (it first learns a leader).
    pub async fn start(nodes: &[ProcNode], extra: &str) -> ProcProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let peers: Vec<String> = nodes
            .iter()
            .map(|n| format!("\"127.0.0.1:{}\"", n.advertise_port))
            .collect();
        let fw = nodes.first().map_or(5000, |n| n.tuning.failover_wait_ms);
        let text = format!(
            "[node]\nid = \"proxy-1\"\nnumber = 900\n\
             [database]\nuser = \"root\"\n\
             [cluster]\npeers = [{}]\nsecret = \"crash-test-secret\"\n\
             [proxy]\nbind_address = \"127.0.0.1:{port}\"\nfailover_wait_ms = {fw}\n{extra}",
            peers.join(", ")
        );
        let config = dir.path().join("wolfscale.toml");
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wolfscale"))
            .arg("--config")
            .arg(&config)
            .arg("proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn wolfscale proxy");
        let p = ProcProxy {
            dir,
            port,
            child: Some(child),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while p.client().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the standalone proxy did not start; its log:\n{}",
                p.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> Result<Conn, mysql_async::Error> {
        Conn::new(opts(self.port, "app", APP_PASSWORD, Some("test"))).await
    }
}

impl Drop for ProcProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}
