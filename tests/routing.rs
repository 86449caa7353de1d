//! Any node is the database: a follower's proxy routes writes and transactions to the
//! leader, carries the session's state there, and reads its own writes.

mod common;

use std::time::Duration;

use common::{full_cluster, full_cluster_with, leader_of, server_error, FullNode};
use mysql_async::prelude::*;
use mysql_async::Conn;

async fn q(c: &mut Conn, sql: &str) {
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(c: &mut Conn, sql: &str) -> i64 {
    c.query_first::<i64, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row")
}

fn followers(nodes: &[FullNode]) -> Vec<usize> {
    let l = leader_of(nodes);
    (0..nodes.len()).filter(|&i| i != l).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_and_transactions_through_every_node_converge() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let f = followers(&nodes);
    // DDL through a follower.
    let mut a = nodes[f[0]].client(Some("test")).await;
    q(
        &mut a,
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, node INT, v VARCHAR(10))",
    )
    .await;
    // Autocommit writes through every node, each read back at once on the same
    // connection (read-your-writes).
    let mut conns = Vec::new();
    for n in &nodes {
        conns.push(n.client(Some("test")).await);
    }
    for round in 0..5 {
        for (i, c) in conns.iter_mut().enumerate() {
            q(
                c,
                &format!("INSERT INTO t (node, v) VALUES ({i}, 'r{round}')"),
            )
            .await;
            let id: u64 = c
                .query_first("SELECT LAST_INSERT_ID()")
                .await
                .unwrap()
                .unwrap();
            assert!(
                id > 0,
                "LAST_INSERT_ID() after a forwarded insert is its id"
            );
            let mine = count(c, &format!("SELECT COUNT(*) FROM t WHERE id = {id}")).await;
            assert_eq!(mine, 1, "node {i} must read its own write {id}");
        }
    }
    // A transaction through a follower: its reads see its own uncommitted rows (it runs
    // on the leader), other sessions do not, and it commits as one.
    let mut b = nodes[f[1]].client(Some("test")).await;
    q(&mut b, "BEGIN").await;
    q(&mut b, "INSERT INTO t (node, v) VALUES (9, 'txn')").await;
    assert_eq!(
        count(&mut b, "SELECT COUNT(*) FROM t WHERE node = 9").await,
        1
    );
    assert_eq!(
        count(&mut a, "SELECT COUNT(*) FROM t WHERE node = 9").await,
        0
    );
    q(&mut b, "UPDATE t SET v = 'txn2' WHERE node = 9").await;
    q(&mut b, "COMMIT").await;
    assert_eq!(
        count(&mut b, "SELECT COUNT(*) FROM t WHERE v = 'txn2'").await,
        1
    );
    // A rolled-back transaction through a follower leaves nothing.
    q(&mut b, "START TRANSACTION").await;
    q(&mut b, "DELETE FROM t").await;
    assert_eq!(count(&mut b, "SELECT COUNT(*) FROM t").await, 0);
    q(&mut b, "ROLLBACK").await;
    assert_eq!(count(&mut b, "SELECT COUNT(*) FROM t").await, 16);
    // autocommit = 0 through a follower: a transaction until COMMIT.
    q(&mut a, "SET autocommit = 0").await;
    q(&mut a, "INSERT INTO t (node, v) VALUES (8, 'ac0')").await;
    assert_eq!(
        count(&mut a, "SELECT COUNT(*) FROM t WHERE node = 8").await,
        1
    );
    assert_eq!(
        count(&mut b, "SELECT COUNT(*) FROM t WHERE node = 8").await,
        0
    );
    q(&mut a, "COMMIT").await;
    q(&mut a, "SET autocommit = 1").await;
    // Another session's write: `session` consistency does not promise it (b's node may
    // not have applied it yet); a linearizable read does.
    q(&mut b, "SET wolfscale_read_consistency = 'linearizable'").await;
    assert_eq!(
        count(&mut b, "SELECT COUNT(*) FROM t WHERE node = 8").await,
        1
    );
    q(&mut b, "SET wolfscale_read_consistency = 'session'").await;
    // A locking read goes to the leader and takes its lock there: a writer through
    // the leader waits for it.
    q(&mut b, "BEGIN").await;
    let v: Option<String> = b
        .query_first("SELECT v FROM t WHERE node = 9 FOR UPDATE")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("txn2"));
    let mut lc = nodes[l].client(Some("test")).await;
    q(&mut lc, "SET innodb_lock_wait_timeout = 1").await;
    let err = lc
        .query_drop("UPDATE t SET v = 'lw' WHERE node = 9")
        .await
        .expect_err("the follower session's FOR UPDATE holds the row on the leader");
    assert_eq!(server_error(&err).map(|e| e.0), Some(1205), "{err}");
    q(&mut b, "COMMIT").await;
    drop((a, b, lc, conns));
    let sums = common::converged(&nodes, "test").await;
    assert_eq!(sums.len(), 1);
    common::same_on_all(&nodes, "SELECT id, node, v FROM test.t ORDER BY id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_state_reaches_the_leader() {
    let nodes = full_cluster(3).await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(None).await;
    // Session state set before the session ever needed the leader: replayed when the
    // link opens.
    q(&mut c, "USE test").await;
    q(&mut c, "SET sql_mode = 'NO_ENGINE_SUBSTITUTION'").await;
    q(&mut c, "SET NAMES utf8mb4").await;
    q(&mut c, "SET @tag = 'tagged'").await;
    for i in 0..50 {
        // A variable set in a loop keeps one history entry.
        q(
            &mut c,
            &format!("SET @@session.group_concat_max_len = {}", 1024 + i),
        )
        .await;
    }
    q(
        &mut c,
        "CREATE TABLE s (id INT PRIMARY KEY, v VARCHAR(4), g INT)",
    )
    .await;
    // Not strict: the leader truncates with a warning instead of refusing (1406).
    q(
        &mut c,
        "INSERT INTO s VALUES (1, 'toolong', @@group_concat_max_len)",
    )
    .await;
    q(&mut c, "INSERT INTO s VALUES (2, @tag, 0)").await;
    // A variable set once the link is open reaches both backends.
    q(&mut c, "SET @tag = 'late'").await;
    q(&mut c, "INSERT INTO s VALUES (3, @tag, 0)").await;
    let local: Option<String> = c.query_first("SELECT @tag").await.unwrap();
    assert_eq!(local.as_deref(), Some("late"));
    let rows: Vec<(i32, String, i32)> =
        c.query("SELECT id, v, g FROM s ORDER BY id").await.unwrap();
    assert_eq!(
        rows,
        vec![
            (1, "tool".to_string(), 1073),
            (2, "tagg".to_string(), 0),
            (3, "late".to_string(), 0)
        ]
    );
    // A temporary table lives on the leader from then on, with everything after it.
    q(&mut c, "CREATE TEMPORARY TABLE tmp (a INT)").await;
    q(&mut c, "INSERT INTO tmp VALUES (1), (2)").await;
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM tmp").await, 2);
    // COM_INIT_DB through a follower with a link open.
    c.query_drop("USE mysql").await.unwrap();
    let db: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("mysql"));
    // The index hint a pooled application can pass on.
    let index: u64 = c
        .query_first("SELECT @@wolfscale_session_index")
        .await
        .unwrap()
        .unwrap();
    assert!(index > 0, "the session's last write has an index");
    drop(c);
    common::converged(&nodes, "test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_wait_for_the_sessions_writes_on_a_slow_follower() {
    let nodes = full_cluster_with(3, |s| s.read_wait = Duration::from_millis(200)).await;
    let l = leader_of(&nodes);
    let f = followers(&nodes)[0];
    let mut setup = nodes[l].client(Some("test")).await;
    q(&mut setup, "CREATE TABLE r (id INT PRIMARY KEY)").await;
    let mut c = nodes[f].client(Some("test")).await;
    // The follower's applier is made slow: it replays 3 s behind.
    wolfscale::failpoint::set_replay_delay(
        nodes[f].cluster.incarnation,
        Some(Duration::from_secs(3)),
    );
    q(&mut c, "INSERT INTO r VALUES (1)").await;
    // Default (session): the follower has not applied it within read_wait_ms, so the
    // read goes to the leader and sees the write.
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM r").await, 1);
    // `local` reads the follower's own MariaDB, which is behind: this is what the
    // session rule protects against (and proves the follower really lags).
    q(&mut c, "SET @@session.wolfscale_read_consistency = 'local'").await;
    q(&mut setup, "INSERT INTO r VALUES (2)").await;
    q(&mut c, "INSERT INTO r VALUES (3)").await;
    let local = count(&mut c, "SELECT COUNT(*) FROM r").await;
    assert!(
        local < 3,
        "a local read on the slow follower saw {local} rows"
    );
    // Another connection that was handed the session index reads the write.
    let index: u64 = c
        .query_first("SELECT @@wolfscale_session_index")
        .await
        .unwrap()
        .unwrap();
    let mut other = nodes[f].client(Some("test")).await;
    q(
        &mut other,
        &format!("SET wolfscale_session_index = {index}"),
    )
    .await;
    assert_eq!(count(&mut other, "SELECT COUNT(*) FROM r").await, 3);
    // A linearizable read after a write through another node sees it.
    let mut lin = nodes[f].client(Some("test")).await;
    q(
        &mut lin,
        "SET SESSION wolfscale_read_consistency = 'linearizable'",
    )
    .await;
    q(&mut setup, "INSERT INTO r VALUES (4)").await;
    assert_eq!(count(&mut lin, "SELECT COUNT(*) FROM r").await, 4);
    // `fresh` too: the follower knows the leader committed entries it has not applied.
    let mut fresh = nodes[f].client(Some("test")).await;
    q(&mut fresh, "SET wolfscale_read_consistency = 'fresh'").await;
    q(&mut setup, "INSERT INTO r VALUES (5)").await;
    let behind = common::wait_until(Duration::from_secs(5), || {
        let known = nodes[f].cluster.known_committed();
        let applied = nodes[f].cluster.applied_index();
        async move { known > applied }
    })
    .await;
    assert!(
        behind,
        "the slow follower should know of commits it has not applied"
    );
    assert_eq!(count(&mut fresh, "SELECT COUNT(*) FROM r").await, 5);
    // And it reads its own writes: `fresh` includes the session's index. (Here the
    // follower is on the write's path and has mostly heard of the commit by then;
    // through a standalone proxy it has not, and `tests/standalone.rs` caught reads
    // that missed the session's write before the rule took the index.)
    for n in 6..=10 {
        q(&mut fresh, &format!("INSERT INTO r VALUES ({n})")).await;
        assert_eq!(
            count(&mut fresh, "SELECT COUNT(*) FROM r").await,
            n,
            "a fresh read missed the session's own insert"
        );
    }
    let err = fresh
        .query_drop("SET wolfscale_read_consistency = 'eventual'")
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1231), "{err}");
    wolfscale::failpoint::set_replay_delay(nodes[f].cluster.incarnation, None);
    drop((c, other, lin, fresh, setup));
    common::converged(&nodes, "test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_sees_the_clients_own_address() {
    use common::raw::Raw;
    // MariaDB takes the client's address from the proxy's PROXY header.
    let nodes = common::full_cluster_on(
        3,
        || wolfscale::localdb::Options {
            extra_args: vec!["--proxy-protocol-networks=127.0.0.1".into()],
            ..Default::default()
        },
        |_| {},
        |_| {},
    )
    .await;
    let l = leader_of(&nodes);
    let f = followers(&nodes)[0];
    let mut lc = nodes[l].client(None).await;
    // An account that exists only for the client's own address.
    q(&mut lc, "CREATE DATABASE hr").await;
    q(
        &mut lc,
        "CREATE TABLE hr.t (id INT PRIMARY KEY, who VARCHAR(80))",
    )
    .await;
    q(&mut lc, "CREATE USER 'hr'@'127.0.0.2' IDENTIFIED BY 'pw'").await;
    q(&mut lc, "GRANT ALL ON hr.* TO 'hr'@'127.0.0.2'").await;
    common::converged(&nodes, "hr").await;
    // Wait until the follower's proxy knows the account.
    let port = nodes[f].proxy_port();
    let source: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut raw = None;
    for _ in 0..100 {
        match Raw::try_login_from(port, source, "hr", "pw").await {
            Ok(r) => {
                raw = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut raw = raw.expect("hr logs in from 127.0.0.2 through the follower");
    raw.query("INSERT INTO hr.t VALUES (1, CURRENT_USER())")
        .await
        .expect("the leader runs it as 'hr'@'127.0.0.2'");
    raw.query("BEGIN").await.unwrap();
    let rows = raw
        .query("SELECT CURRENT_USER(), @@hostname")
        .await
        .unwrap();
    raw.query("COMMIT").await.unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("hr@127.0.0.2"));
    common::converged(&nodes, "hr").await;
    let who = common::same_on_all(&nodes, "SELECT who FROM hr.t").await;
    assert_eq!(
        common::cell_text(&who[0][0]).as_deref(),
        Some("hr@127.0.0.2")
    );
    // From 127.0.0.1 the account does not exist, through any node.
    let denied = Raw::try_login_from(port, "127.0.0.1".parse().unwrap(), "hr", "pw").await;
    assert!(matches!(denied, Err((1045, _))), "{:?}", denied.err());
}

/// Log into `port` claiming, in the connect attributes, to be forwarding a client
/// from 127.0.0.2, with the proof `proof(scramble)`; the reply's first byte and
/// payload.
async fn claim_forwarded(port: u16, proof: impl Fn(&[u8]) -> String) -> Vec<u8> {
    use common::raw::{handshake_response, Raw, Reply};
    use wolfscale::protocol::handshake::ServerGreeting;
    let mut raw = Raw::connect(port).await;
    let Reply::Packet(0, greeting) = raw.read(Duration::from_secs(5)).await else {
        panic!("no greeting");
    };
    let g = ServerGreeting::parse(&greeting).expect("greeting");
    let mut p = handshake_response(&g.scramble, "app", common::APP_PASSWORD, 0);
    // CLIENT_CONNECT_ATTRS
    let caps = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) | 0x0010_0000;
    p[..4].copy_from_slice(&caps.to_le_bytes());
    let attrs = vec![
        (
            wolfscale::proxy::router::ATTR_CLIENT.to_string(),
            "127.0.0.2:40000".to_string(),
        ),
        (
            wolfscale::proxy::router::ATTR_LOCAL.to_string(),
            "127.0.0.1:8007".to_string(),
        ),
        (
            wolfscale::proxy::router::ATTR_PROOF.to_string(),
            proof(&g.scramble),
        ),
    ];
    p.extend_from_slice(&wolfscale::proxy::router::encode_attrs(&attrs));
    raw.send(1, &p).await;
    match raw.read(Duration::from_secs(5)).await {
        Reply::Packet(_, reply) => reply,
        other => panic!("login: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_cannot_claim_another_address() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let port = nodes[l].proxy_port();
    let client: std::net::SocketAddr = "127.0.0.2:40000".parse().unwrap();
    let local: std::net::SocketAddr = "127.0.0.1:8007".parse().unwrap();
    // Forged, with another secret, or bound to another scramble: refused (1045).
    for (what, reply) in [
        ("forged", claim_forwarded(port, |_| "00".repeat(32)).await),
        (
            "another secret",
            claim_forwarded(port, |s| {
                wolfscale::proxy::router::forward_proof(b"not-the-secret", s, &client, &local)
            })
            .await,
        ),
        (
            "replayed",
            claim_forwarded(port, |_| {
                wolfscale::proxy::router::forward_proof(b"test-secret", &[0; 20], &client, &local)
            })
            .await,
        ),
    ] {
        assert_eq!(reply[0], 0xFF, "{what}: {reply:?}");
        assert_eq!(u16::from_le_bytes([reply[1], reply[2]]), 1045, "{what}");
    }
    // The cluster's own proof is taken.
    let reply = claim_forwarded(port, |s| {
        wolfscale::proxy::router::forward_proof(b"test-secret", s, &client, &local)
    })
    .await;
    assert_eq!(reply[0], 0x00, "{reply:?}");
}

/// Run `cmd`; its stdout, or a panic with everything it printed.
/// The tool's standard output (see [`common::run`]).
fn run(cmd: &mut std::process::Command, what: &str) -> String {
    String::from_utf8_lossy(&common::run(cmd, what).stdout).into_owned()
}

/// SQLAlchemy over PyMySQL (which turns autocommit off) through a follower's port,
/// with a connection pool. SQLAlchemy 2 inserts with `INSERT … RETURNING`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orm_through_a_follower() {
    use std::process::Command;
    let nodes = full_cluster(3).await;
    let f = followers(&nodes)[0];
    let port = nodes[f].proxy_port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/orm_test.py");
    let orm = tokio::task::block_in_place(|| {
        run(
            Command::new("python3").args([script, &port, "app", common::APP_PASSWORD, "test"]),
            "orm_test.py through a follower",
        )
    });
    assert!(orm.contains("orm ok"), "{orm}");
    common::converged(&nodes, "test").await;
}

/// sysbench oltp_read_write through a follower's port, with the text protocol and
/// with prepared statements (sysbench's default); every database ends identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sysbench_read_write_through_a_follower() {
    use std::process::Command;
    let nodes = full_cluster(3).await;
    let f = followers(&nodes)[0];
    let port = nodes[f].proxy_port().to_string();
    let args = |cmd: &mut Command| {
        cmd.args([
            "oltp_read_write",
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=app",
            &format!("--mysql-password={}", common::APP_PASSWORD),
            "--mysql-db=test",
            "--tables=2",
            "--table-size=1000",
        ]);
    };
    tokio::task::block_in_place(|| {
        let mut prepare = Command::new("sysbench");
        args(&mut prepare);
        run(
            prepare.arg("prepare"),
            "sysbench prepare through a follower",
        );
    });
    for ps_mode in ["disable", "auto"] {
        let out = tokio::task::block_in_place(|| {
            let mut bench = Command::new("sysbench");
            args(&mut bench);
            run(
                bench.args([
                    &format!("--db-ps-mode={ps_mode}"),
                    "--threads=4",
                    "--time=4",
                    "run",
                ]),
                &format!("sysbench oltp_read_write through a follower, --db-ps-mode={ps_mode}"),
            )
        });
        let field = |label: &str, at: usize| {
            out.lines()
                .find(|l| l.trim_start().starts_with(label))
                .and_then(|l| l.split_whitespace().nth(at))
                .and_then(|n| n.parse::<u64>().ok())
        };
        assert!(
            field("transactions:", 1).unwrap_or(0) > 0,
            "{ps_mode}: {out}"
        );
        // Ignored errors are deadlocks between sysbench's own threads, retried by it
        // (as against MariaDB directly); the databases must still end identical.
        assert!(field("ignored errors:", 2).is_some(), "{ps_mode}: {out}");
        assert!(!common::converged(&nodes, "test").await.is_empty());
    }
}

/// Binary prepared statements through a follower: writes and transactions run on the
/// leader (prepared there lazily), reads on the local MariaDB, and a statement whose
/// table the follower has not applied yet is prepared on the leader under an id of
/// the proxy's (high bit set).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_statements_through_a_follower() {
    let nodes = full_cluster_with(3, |s| s.read_wait = Duration::from_millis(200)).await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE p (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), n BIGINT)",
    )
    .await;
    let ins = c.prep("INSERT INTO p (v, n) VALUES (?, ?)").await.unwrap();
    assert_eq!(
        ins.id() & 0x8000_0000,
        0,
        "prepared on the follower's MariaDB"
    );
    for i in 0..5i64 {
        c.exec_drop(&ins, (format!("row {i}"), i * 10))
            .await
            .unwrap();
    }
    // LAST_INSERT_ID() of the forwarded insert.
    assert_eq!(count(&mut c, "SELECT LAST_INSERT_ID()").await, 5);
    let sel = c.prep("SELECT n FROM p WHERE id = ?").await.unwrap();
    let n: Option<i64> = c.exec_first(&sel, (3,)).await.unwrap();
    assert_eq!(n, Some(20));
    // In a transaction everything runs on the leader: its own uncommitted write is
    // visible to the same prepared read, which now runs there.
    q(&mut c, "BEGIN").await;
    c.exec_drop("UPDATE p SET n = ? WHERE id = ?", (99, 3))
        .await
        .unwrap();
    let n: Option<i64> = c.exec_first(&sel, (3,)).await.unwrap();
    assert_eq!(n, Some(99));
    q(&mut c, "COMMIT").await;
    let n: Option<i64> = c.exec_first(&sel, (3,)).await.unwrap();
    assert_eq!(n, Some(99), "read your own committed write");

    // The follower falls behind: a table the session just created is not there yet,
    // so the statement is prepared on the leader.
    wolfscale::failpoint::set_replay_delay(
        nodes[f].cluster.incarnation,
        Some(Duration::from_secs(3)),
    );
    q(&mut c, "CREATE TABLE late (id INT PRIMARY KEY)").await;
    let late = c.prep("INSERT INTO late VALUES (?)").await.unwrap();
    assert_ne!(late.id() & 0x8000_0000, 0, "prepared on the leader");
    c.exec_drop(&late, (1,)).await.unwrap();
    c.exec_drop(&late, (2,)).await.unwrap();
    let read = c.prep("SELECT COUNT(*) FROM late").await.unwrap();
    let n: Option<i64> = c.exec_first(&read, ()).await.unwrap();
    assert_eq!(n, Some(2));
    wolfscale::failpoint::set_replay_delay(nodes[f].cluster.incarnation, None);
    // Caught up, the same statements run here, prepared locally on first use.
    common::converged(&nodes, "test").await;
    q(&mut c, "SET wolfscale_read_consistency = 'local'").await;
    let n: Option<i64> = c.exec_first(&read, ()).await.unwrap();
    assert_eq!(n, Some(2));
    c.close(late).await.unwrap();
    c.close(read).await.unwrap();
    drop(c);
    let rows = common::same_on_all(&nodes, "SELECT id, v, n FROM test.p ORDER BY id").await;
    assert_eq!(rows.len(), 5);
}

/// The packets drivers rarely send, on a follower: an execution without parameter
/// types after the statement moved to the leader (the proxy puts the cached types
/// back), long data held until the execution and sent where it runs, MariaDB's
/// "last prepared statement" id, RESET and CLOSE on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raw_prepared_packets_follow_the_statement_to_the_leader() {
    use common::raw::Raw;
    use wolfscale::protocol::response::Expect;
    let nodes = full_cluster(3).await;
    let f = followers(&nodes)[0];
    let mut setup = nodes[f].client(Some("test")).await;
    q(&mut setup, "CREATE TABLE k (id INT PRIMARY KEY, s TEXT)").await;
    q(&mut setup, "INSERT INTO k VALUES (1, 'one')").await;
    drop(setup);
    common::converged(&nodes, "test").await;
    let mut raw = Raw::login(nodes[f].proxy_port(), "app", common::APP_PASSWORD).await;
    let query = |sql: &str| [&[0x03][..], sql.as_bytes()].concat();
    assert!(raw.exchange(&query("USE test"), Some(Expect::Query)).await[0].1[0] == 0);
    let prep = raw
        .exchange(
            b"\x16INSERT INTO k VALUES (?, CONCAT(?, '!'))",
            Some(Expect::Prepare),
        )
        .await;
    assert_eq!(prep[0].1[0], 0, "{prep:?}");
    let id = [prep[0].1[1], prep[0].1[2], prep[0].1[3], prep[0].1[4]];
    let exec = |id: [u8; 4], key: i32, bound: bool| {
        let mut e = vec![0x17];
        e.extend_from_slice(&id);
        e.push(0);
        e.extend_from_slice(&1u32.to_le_bytes());
        e.push(0); // null bitmap
        if bound {
            e.extend_from_slice(&[1, 3, 0, 0xFE, 0]); // LONG, STRING (as long data)
        } else {
            e.push(0);
        }
        e.extend_from_slice(&key.to_le_bytes());
        e
    };
    let long = |id: [u8; 4], piece: &[u8]| {
        let mut l = vec![0x18];
        l.extend_from_slice(&id);
        l.extend_from_slice(&[1, 0]);
        l.extend_from_slice(piece);
        l
    };
    // First execution with types; the long data is held, then sent to the leader.
    raw.exchange(&long(id, b"held "), None).await;
    raw.exchange(&long(id, b"data"), None).await;
    let e = exec(id, 2, true);
    let r = raw.exchange(&e, Some(Expect::execute(&e))).await;
    assert_eq!(r[0].1[0], 0, "{r:?}");
    // Again without types, through the "last prepared" id.
    raw.exchange(&long([0xFF; 4], b"again"), None).await;
    let e = exec([0xFF; 4], 3, false);
    let r = raw.exchange(&e, Some(Expect::execute(&e))).await;
    assert_eq!(r[0].1[0], 0, "{r:?}");
    // A local read, prepared here; then, in a transaction on the leader, the same
    // statement without types: the leader's side gets the cached ones.
    let sel = raw
        .exchange(b"\x16SELECT s FROM k WHERE id = ?", Some(Expect::Prepare))
        .await;
    let sid = [sel[0].1[1], sel[0].1[2], sel[0].1[3], sel[0].1[4]];
    let read = |id: [u8; 4], key: i32, bound: bool| {
        let mut e = vec![0x17];
        e.extend_from_slice(&id);
        e.push(0);
        e.extend_from_slice(&1u32.to_le_bytes());
        e.push(0);
        if bound {
            e.extend_from_slice(&[1, 3, 0]);
        } else {
            e.push(0);
        }
        e.extend_from_slice(&key.to_le_bytes());
        e
    };
    let text_of = |reply: &[(u8, Vec<u8>)]| -> String {
        // Binary row: 0x00, null bitmap (1 byte for one column), lenenc string.
        let row = &reply[3].1;
        assert_eq!(row[0], 0, "{reply:?}");
        let len = row[2] as usize;
        String::from_utf8_lossy(&row[3..3 + len]).into_owned()
    };
    let e = read(sid, 1, true);
    assert_eq!(
        text_of(&raw.exchange(&e, Some(Expect::execute(&e))).await),
        "one"
    );
    assert_eq!(
        raw.exchange(&query("BEGIN"), Some(Expect::Query)).await[0].1[0],
        0
    );
    let e = read(sid, 2, false);
    let r = raw.exchange(&e, Some(Expect::execute(&e))).await;
    assert_eq!(text_of(&r), "held data!");
    let e = read(sid, 3, false);
    assert_eq!(
        text_of(&raw.exchange(&e, Some(Expect::execute(&e))).await),
        "again!"
    );
    assert_eq!(
        raw.exchange(&query("COMMIT"), Some(Expect::Query)).await[0].1[0],
        0
    );
    // RESET answers once; CLOSE has no answer, and the next command works.
    let mut reset = vec![0x1A];
    reset.extend_from_slice(&sid);
    let r = raw.exchange(&reset, Some(Expect::Single)).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1[0], 0, "{r:?}");
    let mut close = vec![0x19];
    close.extend_from_slice(&sid);
    raw.exchange(&close, None).await;
    let e = read(sid, 1, true);
    let r = raw.exchange(&e, Some(Expect::execute(&e))).await;
    assert_eq!(r[0].1[0], 0xFF, "a closed statement: {r:?}");
    let r = raw
        .exchange(&query("SELECT COUNT(*) FROM k"), Some(Expect::Query))
        .await;
    assert_eq!(r.last().unwrap().1[0], 0xFE);
    common::converged(&nodes, "test").await;
    let rows = common::same_on_all(&nodes, "SELECT id, s FROM test.k ORDER BY id").await;
    assert_eq!(common::show_rows(&rows).matches('!').count(), 2);
}

/// KILL QUERY and KILL of a session whose statement runs on the leader, issued on the
/// follower with the id its greeting gave: relayed to the leader's session of that
/// link, so the statement stops there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_reaches_a_statement_forwarded_to_the_leader() {
    let nodes = full_cluster(3).await;
    let f = followers(&nodes)[0];
    for query_only in [true, false] {
        let mut a = nodes[f].client(Some("test")).await;
        let victim = a.id();
        q(&mut a, "BEGIN").await;
        let started = std::time::Instant::now();
        let running = tokio::spawn(async move {
            let r: Result<Option<i64>, _> = a.query_first("SELECT SLEEP(30)").await;
            (r, a)
        });
        // Wait until the statement runs on the leader.
        let on_leader = common::wait_until(Duration::from_secs(10), || async {
            let mut d = nodes[leader_of(&nodes)].raft.db.root().await;
            let n: Option<i64> = d
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(30)'",
                )
                .await
                .unwrap();
            n == Some(1)
        })
        .await;
        assert!(on_leader, "the statement never ran on the leader");
        let mut b = nodes[f].client(Some("test")).await;
        let kill = if query_only {
            format!("KILL QUERY {victim}")
        } else {
            format!("KILL {victim}")
        };
        q(&mut b, &kill).await;
        let (r, mut a) = tokio::time::timeout(Duration::from_secs(15), running)
            .await
            .expect("the killed statement kept running")
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{kill}: the statement ran to its end"
        );
        if query_only {
            // SLEEP interrupted returns 1; the session goes on.
            assert!(matches!(r, Ok(Some(1))) || r.is_err(), "{r:?}");
            q(&mut a, "ROLLBACK").await;
            assert_eq!(count(&mut a, "SELECT 7").await, 7);
        } else {
            let after = a.query_drop("SELECT 1").await;
            assert!(r.is_err() || after.is_err(), "{kill}: the session lives on");
        }
    }
}

/// User variables travel by value (ARCHITECTURE §4): a statement that sets one runs
/// once, and the other backend gets the value it produced, never the statement
/// (which would read other data there). One that reads data sees the session's own
/// writes, like any read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_variables_move_by_value() {
    let nodes = full_cluster_with(3, |s| s.read_wait = Duration::from_millis(200)).await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(&mut c, "CREATE TABLE u (id INT PRIMARY KEY)").await;
    q(&mut c, "INSERT INTO u VALUES (1), (2), (3)").await;
    common::converged(&nodes, "test").await;
    wolfscale::failpoint::set_replay_delay(
        nodes[f].cluster.incarnation,
        Some(Duration::from_secs(3)),
    );
    q(&mut c, "INSERT INTO u VALUES (4)").await;
    // Read-your-writes: the follower lags, so the leader computes it.
    q(&mut c, "SET @n = (SELECT COUNT(*) FROM u)").await;
    assert_eq!(count(&mut c, "SELECT @n").await, 4, "the local copy");
    // `local` computes on the lagging follower: 3. In a transaction (on the leader,
    // where the table has 4 rows) the variable must still be 3.
    q(&mut c, "SET wolfscale_read_consistency = 'local'").await;
    q(&mut c, "SELECT COUNT(*) INTO @m FROM u").await;
    assert_eq!(
        count(&mut c, "SELECT @m").await,
        3,
        "computed on the follower"
    );
    q(&mut c, "SET @s = CONCAT('x', @m), @t := 7").await;
    // A session variable set from a user variable, or from data: its value.
    q(&mut c, "SET @tz = '+05:00'").await;
    q(&mut c, "SET time_zone = @tz").await;
    q(
        &mut c,
        "SET SESSION max_statement_time = (SELECT COUNT(*) FROM u)",
    )
    .await;
    q(&mut c, "BEGIN").await;
    let tz: Option<String> = c.query_first("SELECT @@time_zone").await.unwrap();
    assert_eq!(tz.as_deref(), Some("+05:00"), "on the leader");
    let mst: Option<f64> = c.query_first("SELECT @@max_statement_time").await.unwrap();
    assert_eq!(
        mst,
        Some(3.0),
        "computed on the follower, not again on the leader"
    );
    assert_eq!(
        count(&mut c, "SELECT COUNT(*) FROM u").await,
        4,
        "on the leader"
    );
    assert_eq!(
        count(&mut c, "SELECT @m").await,
        3,
        "the value, not the statement"
    );
    let s: Option<String> = c.query_first("SELECT @s").await.unwrap();
    assert_eq!(s.as_deref(), Some("x3"));
    assert_eq!(count(&mut c, "SELECT @t").await, 7);
    // Set on the leader inside the transaction: the local copy follows.
    q(&mut c, "SELECT COUNT(*) INTO @k FROM u").await;
    q(&mut c, "COMMIT").await;
    assert_eq!(count(&mut c, "SELECT @k").await, 4);
    wolfscale::failpoint::set_replay_delay(nodes[f].cluster.incarnation, None);
    drop(c);
    common::converged(&nodes, "test").await;
}

/// When the leader changes, a follower's session re-opens its link on the new leader
/// and goes on; one whose transaction was on the old leader is ended with an error
/// rather than continuing half a transaction elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_session_follows_a_new_leader() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let fs = followers(&nodes);
    let (f, g) = (fs[0], fs[1]);
    let mut c = nodes[f].client(Some("test")).await;
    q(&mut c, "CREATE TABLE nl (id INT PRIMARY KEY)").await;
    q(&mut c, "INSERT INTO nl VALUES (1)").await;
    let mut t = nodes[f].client(Some("test")).await;
    q(&mut t, "BEGIN").await;
    q(&mut t, "INSERT INTO nl VALUES (100)").await;
    let g_id = {
        use openraft::async_runtime::watch::WatchReceiver;
        nodes[g].cluster.raft().metrics().borrow_watched().id
    };
    let g_name = nodes[g].raft.settings.node_id.clone();
    nodes[l]
        .cluster
        .raft()
        .trigger()
        .transfer_leader(g_id)
        .await
        .unwrap();
    let moved = common::wait_until(Duration::from_secs(20), || async {
        nodes[g].is_writable()
            && nodes[f]
                .cluster
                .leader()
                .is_some_and(|(_, m)| m.id == g_name)
    })
    .await;
    assert!(moved, "leadership did not move to {g_name}");
    // The open transaction on the old leader is gone: its session ends with 1180.
    let err = t
        .query_drop("INSERT INTO nl VALUES (101)")
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1180), "{err}");
    assert!(
        t.query_drop("SELECT 1").await.is_err(),
        "the session was ended"
    );
    // The other session writes through the new leader.
    q(&mut c, "INSERT INTO nl VALUES (2)").await;
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM nl").await, 2);
    drop(c);
    common::converged(&nodes, "test").await;
    let rows = common::same_on_all(&nodes, "SELECT id FROM test.nl ORDER BY id").await;
    assert_eq!(rows.len(), 2, "{}", common::show_rows(&rows));
}

/// A read that calls a stored function runs as a write: the function may write, and
/// a write outside the log would exist on one node only. Through the leader it is
/// logged and replayed; through a follower it goes to the leader (the follower's
/// MariaDB is read-only and would refuse the function's insert).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_calling_a_stored_function_runs_as_a_write() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE cnt (id INT AUTO_INCREMENT PRIMARY KEY)",
    )
    .await;
    q(
        &mut c,
        "CREATE FUNCTION bump() RETURNS INT MODIFIES SQL DATA \
         BEGIN INSERT INTO cnt VALUES (NULL); RETURN (SELECT COUNT(*) FROM cnt); END",
    )
    .await;
    assert_eq!(
        count(&mut c, "SELECT bump()").await,
        1,
        "through the follower"
    );
    let mut lc = nodes[l].client(Some("test")).await;
    assert_eq!(
        count(&mut lc, "SELECT bump()").await,
        2,
        "through the leader"
    );
    // In a prepared statement too.
    let n: Option<i64> = lc.exec_first("SELECT bump() + ?", (0,)).await.unwrap();
    assert_eq!(n, Some(3));
    drop((c, lc));
    common::converged(&nodes, "test").await;
    let rows = common::same_on_all(&nodes, "SELECT COUNT(*) FROM test.cnt").await;
    assert_eq!(common::cell_text(&rows[0][0]).as_deref(), Some("3"));
}

/// A KILL sent to another node than the session's (a load balancer in front of all
/// of them) is relayed to the session's node, named by the id's node number, and
/// mapped there: to the leader if the statement runs there, else locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_sent_to_another_node_is_relayed_to_the_sessions_node() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let fs = followers(&nodes);
    let (f, g) = (fs[0], fs[1]);
    // (on f, killer's node, the statement runs on the leader)
    for (killer, on_leader) in [(g, true), (l, false)] {
        let mut a = nodes[f].client(Some("test")).await;
        let victim = a.id();
        let begin = if on_leader {
            "BEGIN"
        } else {
            "START TRANSACTION READ ONLY"
        };
        q(&mut a, begin).await;
        let started = std::time::Instant::now();
        let running = tokio::spawn(async move {
            let r: Result<Option<i64>, _> = a.query_first("SELECT SLEEP(30)").await;
            (r, a)
        });
        let where_ = if on_leader { l } else { f };
        let seen = common::wait_until(Duration::from_secs(10), || async {
            let mut d = nodes[where_].raft.db.root().await;
            let n: Option<i64> = d
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(30)'",
                )
                .await
                .unwrap();
            n == Some(1)
        })
        .await;
        assert!(seen, "the statement never ran on node {where_}");
        let mut b = nodes[killer].client(Some("test")).await;
        q(&mut b, &format!("KILL QUERY {victim}")).await;
        let (r, mut a) = tokio::time::timeout(Duration::from_secs(15), running)
            .await
            .expect("the killed statement kept running")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(matches!(r, Ok(Some(1))) || r.is_err(), "{r:?}");
        q(&mut a, "ROLLBACK").await;
    }
    // An id no member has: MariaDB's own error, as for any unknown thread.
    let mut b = nodes[g].client(Some("test")).await;
    let err = b.query_drop("KILL QUERY 1").await.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1094), "{err}");
}

/// COM_SET_OPTION reaches the leader too, and a link opened after it: with
/// multi-statements turned off, a multi-statement query routed to the leader is a
/// syntax error there, as it is on MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_option_follows_the_session_to_the_leader() {
    use common::raw::Raw;
    use wolfscale::protocol::response::Expect;
    let nodes = full_cluster(3).await;
    let f = followers(&nodes)[0];
    let mut raw = Raw::login(nodes[f].proxy_port(), "app", common::APP_PASSWORD).await;
    let query = |sql: &str| [&[0x03][..], sql.as_bytes()].concat();
    let off = raw.exchange(&[0x1B, 1, 0], Some(Expect::Single)).await;
    assert_eq!(off[0].1[0], 0xFE, "{off:?}"); // MariaDB answers COM_SET_OPTION with EOF
                                              // The link opens now, after the option was set.
    let r = raw.exchange(&query("BEGIN"), Some(Expect::Query)).await;
    assert_eq!(r[0].1[0], 0, "{r:?}");
    let r = raw
        .exchange(&query("SELECT 1; SELECT 2"), Some(Expect::Query))
        .await;
    assert_eq!(r[0].1[0], 0xFF, "{r:?}");
    assert_eq!(u16::from_le_bytes([r[0].1[1], r[0].1[2]]), 1064);
    assert_eq!(
        raw.exchange(&query("ROLLBACK"), Some(Expect::Query)).await[0].1[0],
        0
    );
}

/// A text `PREPARE s FROM @q` reaches a link opened later as the text `@q` held when
/// it ran, even after `@q` changed; a prepared name prepared again replaces the earlier
/// entry of the history, and `DEALLOCATE` drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_prepare_from_a_variable_reaches_a_later_link() {
    let nodes = full_cluster(3).await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(&mut c, "SET @q = 'SELECT 42'").await;
    q(&mut c, "PREPARE s FROM @q").await;
    q(&mut c, "SET @q = 'SELECT 43'").await;
    q(&mut c, "PREPARE t FROM 'SELECT 7'").await;
    q(&mut c, "DEALLOCATE PREPARE t").await;
    assert_eq!(count(&mut c, "EXECUTE s").await, 42, "here");
    // The link opens now, in a transaction: EXECUTE runs on the leader.
    q(&mut c, "BEGIN").await;
    assert_eq!(count(&mut c, "EXECUTE s").await, 42, "on the leader");
    let err = c.query_drop("EXECUTE t").await.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1243), "{err}");
    q(&mut c, "ROLLBACK").await;
}
