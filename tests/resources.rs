//! What a client can make the proxy hold: unauthenticated clients get a small packet
//! cap, large packets share a bounded budget, stalls in the middle of a packet or of a
//! LOAD DATA LOCAL file are bounded, an idle session whose backend dies frees its
//! slot, COM_CHANGE_USER's backend half is bounded, and account reloads neither block
//! other logins nor multiply under load.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::{Raw, Reply};
use common::{Db, Node, APP_PASSWORD};
use mysql_async::prelude::*;
use mysql_async::Conn;

const WOLFSCALE: &str = env!("CARGO_BIN_EXE_wolfscale");
const T: Duration = Duration::from_secs(10);

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A `wolfscale start` process in front of `db`; killed on drop.
struct Process {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

async fn start_binary(db: &Db) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let port = wolfscale::localdb::free_port().unwrap();
    let cfg = dir.path().join("wolfscale.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nid = \"node-1\"\ndata_dir = \"data\"\n[database]\nhost = \"127.0.0.1\"\nport = {}\n\
             user = \"root\"\npassword = \"\"\n[api]\nenabled = false\n[proxy]\n\
             bind_address = \"127.0.0.1:{port}\"\n",
            db.port()
        ),
    )
    .unwrap();
    let child = Command::new(WOLFSCALE)
        .args([
            "--log-level",
            &std::env::var("WS_LOG").unwrap_or("warn".into()),
            "-c",
        ])
        .arg(&cfg)
        .arg("start")
        .stdout(Stdio::null())
        .stderr(match std::env::var("WS_LOG_FILE") {
            Ok(f) => Stdio::from(std::fs::File::create(f).unwrap()),
            Err(_) => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let opts = common::opts(port, "app", APP_PASSWORD, None);
    let up = common::wait_until(Duration::from_secs(20), || async {
        Conn::new(opts.clone()).await.is_ok()
    })
    .await;
    assert!(up, "proxy did not come up");
    Process {
        child,
        port,
        _dir: dir,
    }
}

/// 100 clients each start a 16 MiB handshake packet and send 8 MiB of it. Before the
/// cap the proxy buffered it all (833 MB resident); now each is refused after the
/// header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_clients_cannot_make_the_proxy_buffer() {
    let db = Db::start().await;
    let proxy = start_binary(&db).await;
    let pid = proxy.child.id();
    let (before, _) = memory_kib(pid);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let port = proxy.port;
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(port).await;
            assert!(matches!(raw.read(T).await, Reply::Packet(0, _)));
            let mut bytes = vec![0xFF, 0xFF, 0xFF, 1];
            bytes.extend(std::iter::repeat_n(b'a', 8 << 20));
            raw.write(&bytes).await; // the proxy may hang up part way: that is the point
            loop {
                match raw.read(T).await {
                    // Too large, or (on a loaded machine) the handshake timeout first.
                    Reply::Packet(_, p) if p.starts_with(&[0xFF]) => {
                        let code = u16::from_le_bytes([p[1], p[2]]);
                        assert!(code == 1153 || code == 1043, "ERR {code}");
                    }
                    Reply::Closed => return,
                    other => panic!("expected ERR 1153 and a close, got {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, peak) = memory_kib(pid);
    eprintln!("proxy resident before: {before} KiB, peak: {peak} KiB");
    assert!(
        peak < before + 64 * 1024,
        "peak {peak} KiB vs {before} KiB before"
    );
    // And it still serves.
    let mut c = Conn::new(common::opts(proxy.port, "app", APP_PASSWORD, None))
        .await
        .unwrap();
    assert_eq!(c.query_first::<i32, _>("SELECT 1").await.unwrap(), Some(1));
}

/// Two clients that begin 15 MiB packets and stall hold the whole 32 MiB budget: a
/// third client's large query waits, the stallers are dropped with ERR 1159 after
/// net_read_timeout, and the third then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_packets_wait_for_a_bounded_budget() {
    let node = Node::start_with(|s| {
        s.max_packet = 16 << 20;
        s.client_buffer_limit = 32 << 20;
        s.net_read_timeout = Duration::from_millis(1500);
    })
    .await;
    let port = node.proxy_port();
    let full_kib = node.proxy.as_ref().unwrap().stats().packet_budget_free_kib;
    let big = 15 << 20;
    let mut stallers = Vec::new();
    for _ in 0..2 {
        let mut raw = Raw::login(port, "app", APP_PASSWORD).await;
        let len = (big as u32).to_le_bytes();
        let mut start = vec![len[0], len[1], len[2], 0, 0x03];
        start.extend(std::iter::repeat_n(b' ', 1 << 20));
        raw.write(&start).await;
        stallers.push(raw);
    }
    let held = common::wait_until(T, || async {
        node.proxy.as_ref().unwrap().stats().packet_budget_free_kib < 4 << 10
    })
    .await;
    assert!(held, "the stallers should hold the budget");
    let started = Instant::now();
    let mut c = node.client(None).await;
    let sql = format!("SELECT LENGTH('{}')", "x".repeat(big - 100));
    let n: Option<i64> = c
        .query_first(sql)
        .await
        .expect("runs once the budget frees");
    assert_eq!(n, Some(big as i64 - 100));
    assert!(started.elapsed() >= Duration::from_millis(500));
    for mut s in stallers {
        assert_eq!(s.read(T).await.err_code(), Some(1159));
    }
    let back = common::wait_until(T, || async {
        node.proxy.as_ref().unwrap().stats().packet_budget_free_kib == full_kib
    })
    .await;
    assert!(back, "the budget must come back whole");
}

/// A client that stops in the middle of LOAD DATA LOCAL file contents is dropped with
/// ERR 1159 after net_read_timeout (MariaDB's own default would wait 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_local_infile_is_bounded() {
    let node = Node::start_with(|s| s.net_read_timeout = Duration::from_millis(500)).await;
    let mut c = node.client(Some("test")).await;
    c.query_drop("CREATE TABLE li (a INT)").await.unwrap();
    let mut raw = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    raw.send(0, b"\x03LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE test.li")
        .await;
    let Reply::Packet(seq, req) = raw.read(T).await else {
        panic!("no LOCAL INFILE request")
    };
    assert!(req.starts_with(&[0xFB]), "{req:?}");
    // One packet of the file, then silence (no terminating empty packet).
    raw.send(seq.wrapping_add(1), b"1\n2\n").await;
    let started = Instant::now();
    assert_eq!(raw.read(T).await.err_code(), Some(1159));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(raw.read(T).await, Reply::Closed);
    // Nothing half-loaded is left behind.
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM li").await.unwrap();
    assert_eq!(n, Some(0));
}

/// Idle sessions whose backend connection ends (KILL from elsewhere, wait_timeout, a
/// MariaDB stop) are closed as MariaDB closes them, and free their slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_notice_their_backend_ended() {
    let mut node = Node::start_with(|s| s.max_connections = 2).await;
    let port = node.proxy_port();
    let mut a = Raw::login(port, "app", APP_PASSWORD).await;
    let mut b = Raw::login(port, "app", APP_PASSWORD).await;
    let thread = a.query("SELECT CONNECTION_ID()").await.unwrap()[0][0]
        .clone()
        .unwrap();
    // KILL from a direct connection.
    let mut root = node.db.root().await;
    root.query_drop(format!("KILL {thread}")).await.unwrap();
    assert_eq!(a.read(T).await, Reply::Closed);
    // wait_timeout on the backend.
    b.query("SET SESSION wait_timeout = 1").await.unwrap();
    assert_eq!(b.read(T).await, Reply::Closed);
    // Both slots are free again.
    let freed = common::wait_until(T, || async {
        node.proxy.as_ref().unwrap().stats().sessions == 0
    })
    .await;
    assert!(freed);
    let mut c = Raw::login(port, "app", APP_PASSWORD).await;
    let _d = Raw::login(port, "app", APP_PASSWORD).await;
    // MariaDB stopping closes idle sessions too.
    node.db.server.stop();
    assert_eq!(c.read(T).await, Reply::Closed);
    node.shutdown().await;
}

/// COM_CHANGE_USER waits for the backend at most the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_on_a_stalled_backend_is_bounded() {
    let node = Node::start_with(|s| s.handshake_timeout = Duration::from_millis(800)).await;
    let mut raw = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    let pid = node.db.server.pid().unwrap() as i32;
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // The stop takes effect asynchronously: wait until every thread is stopped, or a
    // loaded machine lets the server answer first.
    let stopped = common::wait_until(Duration::from_secs(10), || async move {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat"))
                        .ok()
                        .and_then(|st| {
                            st.rsplit(')')
                                .next()
                                .map(|r| r.trim_start().starts_with('T'))
                        })
                        .unwrap_or(true)
                })
            })
            .unwrap_or(false)
    })
    .await;
    assert!(stopped, "mariadbd did not stop");
    let started = Instant::now();
    let result = raw.change_user("app", APP_PASSWORD).await;
    let took = started.elapsed();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let (code, _) = result.expect_err("a stalled backend cannot complete it");
    assert_eq!(code, 2013);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(raw.read(T).await, Reply::Closed);
}

/// A reload stuck behind a table lock blocks neither logins that need no reload nor
/// the proxy; the failed logins waiting for it share one reload, and once the lock is
/// gone a user created after start logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_reloads_hold_no_lock_and_coalesce() {
    let node = Node::start().await;
    let proxy = node.proxy.as_ref().unwrap();
    let mut root = node.db.root().await;
    root.query_drop("CREATE USER late@'%' IDENTIFIED BY 'late-pw'")
        .await
        .unwrap();
    root.query_drop("LOCK TABLES mysql.global_priv WRITE")
        .await
        .unwrap();
    let reloads_before = proxy.stats().account_reloads;
    // Twenty logins the current table does not know, all waiting for a reload.
    let mut waiting = Vec::new();
    for _ in 0..20 {
        let opts = node.proxy_opts("late", "late-pw", None);
        waiting.push(tokio::spawn(async move { Conn::new(opts).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A known account is not held up by the stuck reload.
    let started = Instant::now();
    let mut app = node.client(None).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        app.query_first::<i32, _>("SELECT 1").await.unwrap(),
        Some(1)
    );
    root.query_drop("UNLOCK TABLES").await.unwrap();
    let mut ok = 0;
    for w in waiting {
        if let Ok(Ok(c)) = w.await {
            ok += 1;
            c.disconnect().await.ok();
        }
    }
    assert_eq!(
        ok, 20,
        "every waiting login succeeds once the table is readable"
    );
    let reloads = proxy.stats().account_reloads - reloads_before;
    assert!(
        reloads <= 3,
        "{reloads} reloads for one wave of unknown logins"
    );
}
