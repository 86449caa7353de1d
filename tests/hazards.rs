//! The hazards of ARCHITECTURE §2 ("Hazards, and the rule for each"), one test each:
//! every test drives the cluster through the leader's proxy (and a follower's where
//! it matters) into the hazard and checks that the three MariaDBs stay identical,
//! that nothing stalls for ever, and that refusals are MariaDB's own or name the
//! construct.

mod common;

use std::time::{Duration, Instant};

use common::{converged_report, full_cluster, leader_of, same_on_all, server_error, FullNode};
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};

async fn cluster() -> (Vec<FullNode>, usize) {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    (nodes, l)
}

async fn q(c: &mut Conn, sql: &str) {
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn text(v: &Value) -> String {
    common::cell_text(v).unwrap_or_else(|| "NULL".into())
}

fn code(e: &mysql_async::Error) -> u16 {
    server_error(e).map_or(0, |(c, _)| c)
}

/// Sessions of a node's MariaDB whose state contains `state`.
async fn sessions_in_state(node: &FullNode, state: &str) -> i64 {
    let mut c = node.raft.db.root().await;
    let n: Option<i64> = c
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE '%{state}%'"
        ))
        .await
        .unwrap();
    c.disconnect().await.ok();
    n.unwrap_or(0)
}

/// Wait until some session of `node`'s MariaDB is in `state`.
async fn wait_for_state(node: &FullNode, state: &str) {
    let ok = common::wait_until(Duration::from_secs(20), || async {
        sessions_in_state(node, state).await > 0
    })
    .await;
    assert!(
        ok,
        "no session of {} reached state {state:?}",
        node.raft.settings.node_id
    );
}

/// InnoDB transactions of `node` waiting for a row lock.
async fn lock_waits(node: &FullNode) -> i64 {
    let mut c = node.raft.db.root().await;
    let n: Option<i64> = c
        .query_first(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'",
        )
        .await
        .unwrap();
    c.disconnect().await.ok();
    n.unwrap_or(0)
}

/// Whether a statement containing `sql` has been running for over 300 ms on the node.
async fn blocked(node: &FullNode, sql: &str) -> bool {
    let mut c = node.raft.db.root().await;
    let n: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE COMMAND = 'Query' AND TIME_MS > 300 AND INFO LIKE CONCAT('%', ?, '%')",
            (sql,),
        )
        .await
        .unwrap();
    c.disconnect().await.ok();
    n.unwrap_or(0) > 0
}

/// What the node's MariaDB is running, for a failure message.
async fn processlist(node: &FullNode) -> String {
    let mut c = node.raft.db.root().await;
    let rows: Vec<mysql_async::Row> = c.query("SHOW FULL PROCESSLIST").await.unwrap_or_default();
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(v) => common::cell_text(v).unwrap_or_else(|| "NULL".into()),
                    None => String::new(),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn last_log_index(node: &FullNode) -> u64 {
    node.cluster.metrics().last_log_index.unwrap_or(0)
}

// --------------------------------------------------------------------------------
// DDL appended while open transactions use the table

/// ALTER TABLE while another session's transaction on the table is open: the ALTER
/// waits for the transaction's COMMIT and then runs (or fails cleanly); nothing
/// deadlocks for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alter_table_waits_for_an_open_transaction_then_runs() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    q(&mut c, "INSERT INTO t VALUES (1, 1)").await;
    let mut txn = nodes[l].client(Some("test")).await;
    q(&mut txn, "BEGIN").await;
    q(&mut txn, "INSERT INTO t VALUES (2, 2)").await;

    let mut ddl = nodes[l].client(Some("test")).await;
    let started = Instant::now();
    let alter = tokio::spawn(async move {
        let r = ddl
            .query_drop("ALTER TABLE t ADD COLUMN w INT NOT NULL DEFAULT 7")
            .await;
        (r, started.elapsed())
    });
    wait_for_state(&nodes[l], "metadata lock").await;
    q(&mut txn, "COMMIT").await;
    let (result, took) = tokio::time::timeout(Duration::from_secs(60), alter)
        .await
        .expect("the ALTER finished")
        .unwrap();
    match result {
        Ok(()) => {}
        Err(e) => panic!("the ALTER failed after the transaction committed ({took:?}): {e}"),
    }
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, v, w FROM t ORDER BY id").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(text(&rows[1][2]), "7");
}

/// The same, but the open transaction writes to the table again after the ALTER
/// began waiting: it already holds the table's metadata lock, so it goes on, and its
/// COMMIT must not wait for the ALTER (which waits for it) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alter_table_and_a_transaction_that_goes_on_writing_do_not_deadlock() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    q(&mut c, "INSERT INTO t VALUES (1, 1)").await;
    let mut txn = nodes[l].client(Some("test")).await;
    q(&mut txn, "BEGIN").await;
    q(&mut txn, "INSERT INTO t VALUES (2, 2)").await;

    let mut ddl = nodes[l].client(Some("test")).await;
    let started = Instant::now();
    let alter = tokio::spawn(async move {
        let r = ddl
            .query_drop("ALTER TABLE t ADD COLUMN w INT NOT NULL DEFAULT 7")
            .await;
        (r, started.elapsed())
    });
    wait_for_state(&nodes[l], "metadata lock").await;
    q(&mut txn, "INSERT INTO t VALUES (3, 3)").await;
    let commit_started = Instant::now();
    let commit = tokio::time::timeout(Duration::from_secs(60), txn.query_drop("COMMIT"))
        .await
        .expect("COMMIT returned within 60 s");
    let commit_took = commit_started.elapsed();
    let (alter_result, alter_took) = tokio::time::timeout(Duration::from_secs(60), alter)
        .await
        .expect("the ALTER finished")
        .unwrap();
    eprintln!(
        "COMMIT: {:?} after {commit_took:?}; ALTER: {:?} after {alter_took:?}",
        commit.as_ref().map_err(|e| e.to_string()),
        alter_result.as_ref().map_err(|e| e.to_string())
    );
    // Either may fail cleanly, but not both, and the outcome is the same everywhere.
    assert!(
        commit.is_ok() || alter_result.is_ok(),
        "both the COMMIT and the ALTER failed"
    );
    converged_report(&nodes, "test").await;
    let cols = same_on_all(
        &nodes,
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'test' AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION",
    )
    .await;
    assert_eq!(cols.len(), if alter_result.is_ok() { 3 } else { 2 });
    let rows = same_on_all(&nodes, "SELECT id FROM t ORDER BY id").await;
    assert_eq!(rows.len(), if commit.is_ok() { 3 } else { 1 });
}

/// A DDL reaches a follower while a local reader there holds the table open in a
/// transaction: the follower's applier must not wait behind it for a day
/// (`lock_wait_timeout`); writes after the DDL must go on being applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_on_a_follower_is_not_stalled_by_a_local_reader() {
    let (nodes, l) = cluster().await;
    let f = (l + 1) % 3;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    q(&mut c, "INSERT INTO t VALUES (1, 1)").await;
    same_on_all(&nodes, "SELECT id FROM t").await;
    // A reader on the follower, through its proxy, with a transaction left open (READ
    // ONLY: a follower serves it locally; a plain BEGIN would go to the leader).
    let mut reader = nodes[f].client(Some("test")).await;
    q(&mut reader, "START TRANSACTION READ ONLY").await;
    let n: Option<i64> = reader.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1));
    q(&mut c, "ALTER TABLE t ADD COLUMN w INT").await;
    q(&mut c, "INSERT INTO t VALUES (2, 2, 2)").await;
    // The follower catches up while the reader still sits in its transaction.
    let caught_up = common::wait_until(Duration::from_secs(30), || async {
        let mut d = nodes[f].raft.db.root().await;
        let n: Option<i64> = d
            .query_first("SELECT COUNT(*) FROM test.t")
            .await
            .unwrap_or(None);
        n == Some(2)
    })
    .await;
    let waiting = sessions_in_state(&nodes[f], "metadata lock").await;
    assert!(
        caught_up,
        "the follower's applier is stuck behind a local reader's metadata lock ({waiting} session(s) waiting); appliers: {:?}",
        common::apply_statuses(&nodes)
    );
    reader.query_drop("ROLLBACK").await.ok();
    converged_report(&nodes, "test").await;
}

// --------------------------------------------------------------------------------
// DDL and account statements run with the client's privileges

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn select_only_user_cannot_drop_grant_or_write() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    q(&mut c, "INSERT INTO t VALUES (1, 1)").await;
    q(&mut c, "CREATE USER 'reader'@'%' IDENTIFIED BY 'reader-pw'").await;
    q(&mut c, "GRANT SELECT ON test.* TO 'reader'@'%'").await;
    converged_report(&nodes, "test").await;
    let grants_before = same_on_all(
        &nodes,
        "SELECT User, Host, Priv FROM mysql.global_priv ORDER BY User, Host",
    )
    .await;
    let db_grants_before =
        same_on_all(&nodes, "SELECT * FROM mysql.db ORDER BY User, Host, Db").await;

    let mut reader = Conn::new(common::opts(
        nodes[l].proxy_port(),
        "reader",
        "reader-pw",
        Some("test"),
    ))
    .await
    .expect("reader logs in through the leader");
    let mut direct = Conn::new(common::opts(
        nodes[l].raft.db.port(),
        "reader",
        "reader-pw",
        Some("test"),
    ))
    .await
    .expect("reader logs in directly");
    let n: Option<i64> = reader.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1));
    let log_before = last_log_index(&nodes[l]);
    for sql in [
        "DROP TABLE t",
        "TRUNCATE TABLE t",
        "ALTER TABLE t ADD COLUMN x INT",
        "CREATE TABLE t2 (x INT)",
        "CREATE INDEX t_v ON t (v)",
        "RENAME TABLE t TO t3",
        "DROP DATABASE test",
        "CREATE DATABASE other",
        "GRANT SELECT ON test.* TO 'app'@'%'",
        "GRANT ALL PRIVILEGES ON *.* TO 'reader'@'%'",
        "REVOKE SELECT ON test.* FROM 'app'@'%'",
        "CREATE USER 'mallory'@'%' IDENTIFIED BY 'x'",
        "DROP USER 'app'@'%'",
        "SET PASSWORD FOR 'app'@'%' = PASSWORD('owned')",
        "INSERT INTO t VALUES (2, 2)",
        "UPDATE t SET v = 9",
        "DELETE FROM t",
        "CREATE PROCEDURE p() SELECT 1",
    ] {
        let ours = reader.query_drop(sql).await;
        let theirs = direct.query_drop(sql).await;
        let ours = ours.expect_err(&format!("refused through the proxy: {sql}"));
        let theirs = theirs.expect_err(&format!("refused by MariaDB directly: {sql}"));
        assert!(
            [1142, 1044, 1227, 1045, 1370, 1410].contains(&code(&ours)),
            "{sql}: {ours}"
        );
        assert_eq!(
            code(&ours),
            code(&theirs),
            "{sql}: through the proxy `{ours}`, directly `{theirs}`"
        );
    }
    assert_eq!(
        last_log_index(&nodes[l]),
        log_before,
        "refused statements appended nothing to the log"
    );
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, v FROM t").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        same_on_all(
            &nodes,
            "SELECT User, Host, Priv FROM mysql.global_priv ORDER BY User, Host"
        )
        .await,
        grants_before
    );
    assert_eq!(
        same_on_all(&nodes, "SELECT * FROM mysql.db ORDER BY User, Host, Db").await,
        db_grants_before
    );
    same_on_all(
        &nodes,
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('test', 'other') ORDER BY 1",
    )
    .await;
}

// --------------------------------------------------------------------------------
// A commit on the leader that bypasses the log

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_of_a_procedure_that_commits_is_refused_or_safe() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE pc (id INT PRIMARY KEY)").await;
    q(
        &mut c,
        "CREATE PROCEDURE p_commit() BEGIN INSERT INTO pc VALUES (1); COMMIT; INSERT INTO pc VALUES (2); END",
    )
    .await;
    q(
        &mut c,
        "CREATE PROCEDURE p_txn() BEGIN START TRANSACTION; INSERT INTO pc VALUES (3); COMMIT; END",
    )
    .await;
    q(
        &mut c,
        "CREATE PROCEDURE p_plain(IN base INT) BEGIN INSERT INTO pc VALUES (base); INSERT INTO pc VALUES (base + 1); END",
    )
    .await;
    // Autocommit CALL.
    let r = c.query_drop("CALL p_commit()").await;
    eprintln!(
        "CALL p_commit(): {:?}",
        r.as_ref().map_err(|e| e.to_string())
    );
    let r = c.query_drop("CALL p_txn()").await;
    eprintln!("CALL p_txn(): {:?}", r.as_ref().map_err(|e| e.to_string()));
    // Inside an explicit transaction, then rolled back: nothing may remain.
    q(&mut c, "BEGIN").await;
    let r = c.query_drop("CALL p_commit()").await;
    eprintln!(
        "BEGIN; CALL p_commit(): {:?}",
        r.as_ref().map_err(|e| e.to_string())
    );
    c.query_drop("ROLLBACK").await.ok();
    // A procedure without COMMIT replicates.
    q(&mut c, "CALL p_plain(10)").await;
    q(&mut c, "BEGIN").await;
    q(&mut c, "CALL p_plain(20)").await;
    q(&mut c, "COMMIT").await;
    q(&mut c, "BEGIN").await;
    q(&mut c, "CALL p_plain(30)").await;
    q(&mut c, "ROLLBACK").await;

    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id FROM pc ORDER BY id").await;
    let ids: Vec<String> = rows.iter().map(|r| text(&r[0])).collect();
    assert!(
        ids.contains(&"10".to_string()) && ids.contains(&"21".to_string()),
        "{ids:?}"
    );
    assert!(!ids.contains(&"30".to_string()), "{ids:?}");
}

// --------------------------------------------------------------------------------
// Savepoints, statement-level rollback, deadlock victims

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn savepoints_cut_the_transaction_back() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE sp (id INT PRIMARY KEY, v VARCHAR(10))",
    )
    .await;
    q(&mut c, "BEGIN").await;
    q(&mut c, "SAVEPOINT a").await;
    q(&mut c, "INSERT INTO sp VALUES (1, 'first')").await;
    q(&mut c, "ROLLBACK TO a").await;
    q(&mut c, "INSERT INTO sp VALUES (2, 'second')").await;
    q(&mut c, "COMMIT").await;
    // Nested savepoints, RELEASE, and ROLLBACK TO SAVEPOINT spelled out.
    q(&mut c, "START TRANSACTION").await;
    q(&mut c, "INSERT INTO sp VALUES (3, 'keep')").await;
    q(&mut c, "SAVEPOINT s1").await;
    q(&mut c, "INSERT INTO sp VALUES (4, 'drop')").await;
    q(&mut c, "SAVEPOINT s2").await;
    q(&mut c, "UPDATE sp SET v = 'changed' WHERE id = 2").await;
    q(&mut c, "ROLLBACK TO SAVEPOINT s1").await;
    q(&mut c, "SAVEPOINT s3").await;
    q(&mut c, "INSERT INTO sp VALUES (5, 'keep')").await;
    q(&mut c, "RELEASE SAVEPOINT s3").await;
    q(&mut c, "UPDATE sp SET v = 'updated' WHERE id = 3").await;
    q(&mut c, "COMMIT").await;

    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, v FROM sp ORDER BY id").await;
    let got: Vec<(String, String)> = rows.iter().map(|r| (text(&r[0]), text(&r[1]))).collect();
    assert_eq!(
        got,
        vec![
            ("2".to_string(), "second".to_string()),
            ("3".to_string(), "updated".to_string()),
            ("5".to_string(), "keep".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadlock_victim_is_rolled_back_and_can_go_on() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE dl (id INT PRIMARY KEY, v INT)").await;
    q(&mut c, "INSERT INTO dl VALUES (1, 0), (2, 0)").await;
    let mut a = nodes[l].client(Some("test")).await;
    let mut b = nodes[l].client(Some("test")).await;
    q(&mut a, "BEGIN").await;
    q(&mut a, "UPDATE dl SET v = v + 1 WHERE id = 1").await;
    q(&mut a, "INSERT INTO dl VALUES (10, 10)").await;
    q(&mut b, "BEGIN").await;
    q(&mut b, "UPDATE dl SET v = v + 100 WHERE id = 2").await;
    q(&mut b, "INSERT INTO dl VALUES (20, 20)").await;
    // A waits for B's row 2 ...
    let a_task = tokio::spawn(async move {
        let r = a.query_drop("UPDATE dl SET v = v + 1 WHERE id = 2").await;
        (a, r)
    });
    // INNODB_TRX does not always show the wait (see the deadlock-session test); the
    // statement still running after 300 ms on this two-row table is the same evidence.
    let ok = common::wait_until(Duration::from_secs(30), || async {
        lock_waits(&nodes[l]).await > 0
            || blocked(&nodes[l], "UPDATE dl SET v = v + 1 WHERE id = 2").await
    })
    .await;
    assert!(
        ok,
        "A waits for B's lock; the leader's MariaDB runs:\n{}",
        processlist(&nodes[l]).await
    );
    // ... and B for A's row 1: one of them is the victim.
    let b_result = b.query_drop("UPDATE dl SET v = v + 100 WHERE id = 1").await;
    let (a, a_result) = a_task.await.unwrap();
    let (mut victim, mut winner, winner_is_a) = match (&a_result, &b_result) {
        (Err(e), Ok(())) => {
            assert_eq!(code(e), 1213, "{e}");
            (a, b, false)
        }
        (Ok(()), Err(e)) => {
            assert_eq!(code(e), 1213, "{e}");
            (b, a, true)
        }
        other => panic!("expected exactly one deadlock victim: {other:?}"),
    };
    q(&mut winner, "COMMIT").await;
    // The victim rolls back as a client does after 1213, and goes on.
    q(&mut victim, "ROLLBACK").await;
    q(&mut victim, "BEGIN").await;
    q(&mut victim, "INSERT INTO dl VALUES (30, 30)").await;
    q(&mut victim, "COMMIT").await;
    q(&mut victim, "INSERT INTO dl VALUES (31, 31)").await;

    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, v FROM dl ORDER BY id").await;
    let got: Vec<(String, String)> = rows.iter().map(|r| (text(&r[0]), text(&r[1]))).collect();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    let want = if winner_is_a {
        vec![
            s("1", "1"),
            s("2", "1"),
            s("10", "10"),
            s("30", "30"),
            s("31", "31"),
        ]
    } else {
        vec![
            s("1", "100"),
            s("2", "100"),
            s("20", "20"),
            s("30", "30"),
            s("31", "31"),
        ]
    };
    assert_eq!(got, want);
}

/// After 1213 MariaDB has rolled the transaction back; a client that goes on without
/// ROLLBACK gets what MariaDB gives it directly (compared on a scratch schema of the
/// leader's MariaDB, outside replication).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_deadlock_the_session_behaves_as_on_mariadb() {
    let (nodes, l) = cluster().await;
    let mut root = nodes[l].raft.db.root().await;
    q(&mut root, "CREATE DATABASE ref").await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE dl (id INT PRIMARY KEY, v INT)").await;
    q(&mut c, "INSERT INTO dl VALUES (1, 0), (2, 0)").await;
    q(&mut root, "CREATE TABLE ref.dl (id INT PRIMARY KEY, v INT)").await;
    q(&mut root, "INSERT INTO ref.dl VALUES (1, 0), (2, 0)").await;

    /// Make `b` the victim of a deadlock with `a` (b closes the cycle), then let b go
    /// on without ROLLBACK: an insert, then ROLLBACK. Returns the ids present after.
    async fn scenario(nodes: &[FullNode], l: usize, mut a: Conn, mut b: Conn) -> String {
        q(&mut a, "BEGIN").await;
        // InnoDB rolls back the lighter transaction of a deadlock: make `a` heavier so
        // that `b` is the victim in both runs.
        q(&mut a, "INSERT INTO dl VALUES (10, 0), (11, 0), (12, 0)").await;
        q(&mut a, "UPDATE dl SET v = 1 WHERE id = 1").await;
        q(&mut b, "BEGIN").await;
        q(&mut b, "UPDATE dl SET v = 2 WHERE id = 2").await;
        let a_task = tokio::spawn(async move {
            let r = a.query_drop("UPDATE dl SET v = 1 WHERE id = 2").await;
            (a, r)
        });
        // a waits for b's row lock. INNODB_TRX does not always report the wait as
        // 'LOCK WAIT' (seen once with the statement 'Updating' for 30 s), so a statement
        // of a's still running after 300 ms on this two-row table counts too.
        let ok = common::wait_until(Duration::from_secs(30), || async {
            lock_waits(&nodes[l]).await > 0
                || blocked(&nodes[l], "UPDATE dl SET v = 1 WHERE id = 2").await
        })
        .await;
        assert!(
            ok,
            "a never waited for b's lock; appliers {:?}; the leader's MariaDB runs:\n{}",
            common::apply_statuses(nodes),
            processlist(&nodes[l]).await
        );
        let r = b.query_drop("UPDATE dl SET v = 2 WHERE id = 1").await;
        let (mut a, ar) = a_task.await.unwrap();
        let mut out = format!(
            "a: {:?}, b: {:?}",
            ar.map_err(|e| code(&e)),
            r.map_err(|e| code(&e))
        );
        q(&mut a, "COMMIT").await;
        let r = b.query_drop("INSERT INTO dl VALUES (3, 3)").await;
        out.push_str(&format!(
            "; insert after 1213: {:?}",
            r.map_err(|e| code(&e))
        ));
        let r = b.query_drop("ROLLBACK").await;
        out.push_str(&format!("; rollback: {:?}", r.map_err(|e| code(&e))));
        let ids: Vec<(i32, i32)> = b.query("SELECT id, v FROM dl ORDER BY id").await.unwrap();
        out.push_str(&format!("; rows: {ids:?}"));
        out
    }
    let through_proxy = scenario(
        &nodes,
        l,
        nodes[l].client(Some("test")).await,
        nodes[l].client(Some("test")).await,
    )
    .await;
    let direct = |db: &str| common::opts(nodes[l].raft.db.port(), "root", "", Some(db));
    let reference = scenario(
        &nodes,
        l,
        Conn::new(direct("ref")).await.unwrap(),
        Conn::new(direct("ref")).await.unwrap(),
    )
    .await;
    assert_eq!(through_proxy, reference, "through the proxy vs MariaDB");
    converged_report(&nodes, "test").await;
}

// --------------------------------------------------------------------------------
// Non-transactional tables

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn myisam_write_inside_a_rolled_back_transaction() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE inno (id INT PRIMARY KEY)").await;
    if let Err(e) = c
        .query_drop("CREATE TABLE my (id INT PRIMARY KEY) ENGINE=MyISAM")
        .await
    {
        // Requiring InnoDB is one of the allowed rules.
        eprintln!("CREATE TABLE … ENGINE=MyISAM refused: {e}");
        converged_report(&nodes, "test").await;
        return;
    }
    let engines = same_on_all(
        &nodes,
        "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'test' ORDER BY 1",
    )
    .await;
    eprintln!("engines: {}", common::show_rows(&engines));
    q(&mut c, "BEGIN").await;
    q(&mut c, "INSERT INTO inno VALUES (1)").await;
    let r = c.query_drop("INSERT INTO my VALUES (1)").await;
    eprintln!(
        "MyISAM write inside a transaction: {:?}",
        r.as_ref().map_err(|e| e.to_string())
    );
    c.query_drop("ROLLBACK").await.ok();
    // Outside a transaction, a statement that fails half way leaves its first rows in
    // MyISAM.
    let r = c.query_drop("INSERT INTO my VALUES (5), (5)").await;
    eprintln!(
        "MyISAM multi-row insert failing at its second row: {:?}",
        r.as_ref().map_err(|e| e.to_string())
    );
    let on_leader: Vec<i32> = nodes[l]
        .raft
        .db
        .root()
        .await
        .query("SELECT id FROM test.my ORDER BY id")
        .await
        .unwrap();
    eprintln!("MyISAM rows on the leader: {on_leader:?}");
    converged_report(&nodes, "test").await;
    same_on_all(&nodes, "SELECT id FROM my ORDER BY id").await;
    same_on_all(&nodes, "SELECT id FROM inno ORDER BY id").await;
}

/// A MyISAM table written by a trigger of an InnoDB table: nothing in the statement
/// text names the MyISAM table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn myisam_written_by_a_trigger_inside_a_rolled_back_transaction() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE inno (id INT PRIMARY KEY)").await;
    if let Err(e) = c
        .query_drop("CREATE TABLE mylog (id INT) ENGINE=MyISAM")
        .await
    {
        eprintln!("CREATE TABLE … ENGINE=MyISAM refused: {e}");
        return;
    }
    q(
        &mut c,
        "CREATE TRIGGER inno_ai AFTER INSERT ON inno FOR EACH ROW INSERT INTO mylog VALUES (NEW.id)",
    )
    .await;
    q(&mut c, "BEGIN").await;
    // Rolled back, the MyISAM row would stay on the leader only: refused, naming both.
    let e = c
        .query_drop("INSERT INTO inno VALUES (1)")
        .await
        .expect_err("a write whose trigger writes MyISAM must be refused");
    assert_eq!(code(&e), 1235, "{e}");
    assert!(e.to_string().contains("`test`.`mylog`"), "{e}");
    c.query_drop("ROLLBACK").await.ok();
    converged_report(&nodes, "test").await;
    same_on_all(&nodes, "SELECT COUNT(*) FROM mylog").await;
}

// --------------------------------------------------------------------------------
// Session variables that change a statement's result

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_auto_increment_increment_and_other_result_changing_variables() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE aii (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40), d DECIMAL(30,20))",
    )
    .await;
    q(&mut c, "INSERT INTO aii (v) VALUES ('before')").await;
    q(&mut c, "SET SESSION auto_increment_increment = 10").await;
    q(&mut c, "INSERT INTO aii (v) VALUES ('a'), ('b'), ('c')").await;
    q(&mut c, "INSERT INTO aii (v) VALUES ('d')").await;
    q(&mut c, "SET SESSION auto_increment_offset = 3").await;
    q(&mut c, "BEGIN").await;
    q(&mut c, "INSERT INTO aii (v) VALUES ('e'), ('f')").await;
    q(&mut c, "COMMIT").await;
    q(
        &mut c,
        "SET SESSION auto_increment_increment = 1, auto_increment_offset = 1",
    )
    .await;
    q(&mut c, "INSERT INTO aii (v) VALUES ('after')").await;
    // Other variables that change what a statement writes.
    q(&mut c, "SET SESSION div_precision_increment = 12").await;
    q(&mut c, "INSERT INTO aii (v, d) VALUES ('div', 1 / 3)").await;
    q(&mut c, "SET SESSION lc_time_names = 'de_DE'").await;
    q(
        &mut c,
        "INSERT INTO aii (v) VALUES (DATE_FORMAT('2024-03-01', '%W %M'))",
    )
    .await;
    q(&mut c, "SET SESSION group_concat_max_len = 4").await;
    q(
        &mut c,
        "UPDATE IGNORE aii SET v = (SELECT GROUP_CONCAT(x ORDER BY x) FROM (SELECT 'abc' AS x UNION SELECT 'def') s) WHERE v = 'd'",
    )
    .await;

    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, v, d FROM aii ORDER BY id").await;
    let got: Vec<(String, String)> = rows.iter().map(|r| (text(&r[0]), text(&r[1]))).collect();
    eprintln!("{got:?}");
    let v_of = |v: &str| got.iter().find(|(_, x)| x == v).map(|(id, _)| id.clone());
    assert_eq!(v_of("a").as_deref(), Some("11"), "{got:?}");
    assert_eq!(v_of("b").as_deref(), Some("21"));
    assert!(got.iter().any(|(_, v)| v == "Freitag März"), "{got:?}");
    assert!(got.iter().any(|(_, v)| v == "abc,"), "{got:?}");
    let div = rows.iter().find(|r| text(&r[1]) == "div").unwrap();
    // What MariaDB itself stores for 1/3 at div_precision_increment = 12 (at the default
    // of 4 it stores 0.33333333300000000000).
    assert_eq!(text(&div[2]), "0.33333333333333333300");
}

// --------------------------------------------------------------------------------
// Non-determinism below the statement text

/// An audit trigger with an AUTO_INCREMENT key, after a rolled-back update on the
/// leader: the leader's counter moved, the followers' did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_increment_inside_a_trigger_after_a_rollback() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE items (id INT PRIMARY KEY, qty INT)").await;
    q(
        &mut c,
        "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item_id INT, qty INT)",
    )
    .await;
    q(
        &mut c,
        "CREATE TRIGGER items_au AFTER UPDATE ON items FOR EACH ROW INSERT INTO audit (item_id, qty) VALUES (NEW.id, NEW.qty)",
    )
    .await;
    // The trigger's AUTO_INCREMENT values on the leader would depend on what rolled-back
    // or concurrent statements consumed there: writes to `items` are refused, naming
    // the trigger; the table it writes stays writable directly.
    q(&mut c, "INSERT INTO audit (item_id, qty) VALUES (0, 0)").await;
    let e = c
        .query_drop("INSERT INTO items VALUES (1, 0)")
        .await
        .expect_err("a write whose trigger generates AUTO_INCREMENT values must be refused");
    assert_eq!(code(&e), 1235, "{e}");
    assert!(e.to_string().contains("items_au"), "{e}");
    q(&mut c, "BEGIN").await;
    q(&mut c, "INSERT INTO audit (item_id, qty) VALUES (1, 1)").await;
    q(&mut c, "ROLLBACK").await;
    q(&mut c, "INSERT INTO audit (item_id, qty) VALUES (2, 2)").await;
    converged_report(&nodes, "test").await;
    same_on_all(&nodes, "SELECT id, item_id FROM audit ORDER BY id").await;
}

// --------------------------------------------------------------------------------
// A follower restarted in the middle of a stream of writes

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_restarted_mid_stream_applies_nothing_twice() {
    let (mut nodes, l) = cluster().await;
    let f = (l + 1) % 3;
    let mut c = nodes[l].client(Some("test")).await;
    // No unique key on `events`: an entry applied twice would show as a duplicate.
    q(&mut c, "CREATE TABLE events (n INT, at DATETIME(6))").await;
    q(&mut c, "CREATE TABLE counter (id INT PRIMARY KEY, n INT)").await;
    q(&mut c, "INSERT INTO counter VALUES (1, 0)").await;
    const TOTAL: i64 = 300;
    let mut writer = nodes[l].client(Some("test")).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let progress = done.clone();
    let stream = tokio::spawn(async move {
        for i in 1..=TOTAL {
            if i % 3 == 0 {
                writer.query_drop("BEGIN").await.unwrap();
                writer
                    .query_drop(format!("INSERT INTO events VALUES ({i}, NOW(6))"))
                    .await
                    .unwrap();
                writer
                    .query_drop("UPDATE counter SET n = n + 1 WHERE id = 1")
                    .await
                    .unwrap();
                writer.query_drop("COMMIT").await.unwrap();
            } else {
                writer
                    .query_drop(format!("INSERT INTO events VALUES ({i}, NOW(6))"))
                    .await
                    .unwrap();
                writer
                    .query_drop("UPDATE counter SET n = n + 1 WHERE id = 1")
                    .await
                    .unwrap();
            }
            progress.store(i, std::sync::atomic::Ordering::SeqCst);
        }
        writer.disconnect().await.ok();
    });
    let reached = |n: i64| {
        let done = done.clone();
        async move {
            common::wait_until(Duration::from_secs(60), || {
                let done = done.clone();
                async move { done.load(std::sync::atomic::Ordering::SeqCst) >= n }
            })
            .await
        }
    };
    assert!(reached(60).await, "the stream started");
    let follower = nodes.remove(f);
    let stopped = common::stop_full_node(follower).await;
    assert!(reached(150).await, "writes go on with one follower down");
    let restarted = common::start_full_node(stopped).await;
    nodes.insert(f, restarted);
    tokio::time::timeout(Duration::from_secs(120), stream)
        .await
        .expect("the stream finished")
        .unwrap();

    converged_report(&nodes, "test").await;
    let rows = same_on_all(
        &nodes,
        "SELECT COUNT(*), COUNT(DISTINCT n), SUM(n), (SELECT n FROM counter WHERE id = 1) FROM events",
    )
    .await;
    let got: Vec<String> = rows[0].iter().map(text).collect();
    assert_eq!(
        got,
        vec![
            TOTAL.to_string(),
            TOTAL.to_string(),
            (TOTAL * (TOTAL + 1) / 2).to_string(),
            TOTAL.to_string()
        ]
    );
    // It still follows: a write after the restart reaches it.
    q(&mut c, "INSERT INTO events VALUES (0, NOW(6))").await;
    converged_report(&nodes, "test").await;
}

// --------------------------------------------------------------------------------
// Followers without their own fsync ([database] follower_innodb_flush = 2)

async fn flush_setting(node: &FullNode) -> String {
    let mut c = node.raft.db.root().await;
    let v: Option<String> = c
        .query_first("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit")
        .await
        .unwrap();
    c.disconnect().await.ok();
    v.unwrap_or_default()
}

/// With `follower_innodb_flush = 2` a follower's MariaDB skips the fsync of each
/// replayed commit, and the leader's stays at 1. What an OS crash takes from such a
/// follower (here made certain to be lost: its MariaDB runs with 0, which keeps commits
/// only in memory for up to a second, and is killed with SIGKILL together with its
/// node) comes back from the log: afterwards all three databases are identical, with
/// every write exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_loses_its_last_commits_replays_them_from_the_log() {
    let mut nodes =
        common::full_cluster_adjusted(3, |s| s.follower_innodb_flush = Some(2), |_| {}).await;
    let l = leader_of(&nodes);
    let f = (l + 1) % 3;
    for (i, node) in nodes.iter().enumerate() {
        let want = if i == l { "1" } else { "2" };
        let settled = common::wait_until(Duration::from_secs(10), || async {
            flush_setting(node).await == want
        })
        .await;
        assert!(
            settled,
            "node {i}: innodb_flush_log_at_trx_commit is {}, expected {want}",
            flush_setting(node).await
        );
    }
    // Stands in for the page cache an OS crash loses (the node only sets the variable
    // when its role changes).
    let mut froot = nodes[f].raft.db.root().await;
    q(&mut froot, "SET GLOBAL innodb_flush_log_at_trx_commit = 0").await;

    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE lost (id INT PRIMARY KEY, v INT)").await;
    const TOTAL: i64 = 200;
    for i in 1..=TOTAL {
        q(&mut c, &format!("INSERT INTO lost VALUES ({i}, {i})")).await;
    }
    // Polled directly, so that the kill follows the last replayed commit at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut applied = false;
    while Instant::now() < deadline {
        let n: Option<i64> = froot
            .query_first("SELECT COUNT(*) FROM test.lost")
            .await
            .unwrap();
        if n == Some(TOTAL) {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(applied, "the follower applied every write");
    // The crash: its MariaDB and its node at once.
    drop(froot);
    let pid = nodes[f].raft.db.server.pid().expect("running") as i32;
    // SAFETY: kill(2) on a child process of this test.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let follower = nodes.remove(f);
    let mut stopped = common::stop_full_node(follower).await;
    stopped.db.server.stop();
    let dir = stopped.db.server.dir().to_path_buf();
    stopped.db.server = tokio::task::spawn_blocking(move || {
        wolfscale::localdb::LocalMariaDb::start(&dir, &Default::default())
    })
    .await
    .unwrap()
    .expect("restart the follower's MariaDB");
    let port = stopped.db.port();
    stopped.settings.database = common::opts(port, "root", "", None);
    let mut direct = stopped.db.root().await;
    let kept: Option<i64> = direct
        .query_first("SELECT COUNT(*) FROM test.lost")
        .await
        .unwrap();
    let lost = TOTAL - kept.unwrap_or(0);
    eprintln!("the crash took {lost} of {TOTAL} committed rows from the follower's MariaDB");
    direct.disconnect().await.ok();
    let restarted = common::start_full_node(stopped).await;
    nodes.insert(f, restarted);

    q(&mut c, "INSERT INTO lost VALUES (0, 0)").await;
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT COUNT(*), SUM(v) FROM lost").await;
    let got: Vec<String> = rows[0].iter().map(text).collect();
    assert_eq!(
        got,
        vec![
            (TOTAL + 1).to_string(),
            (TOTAL * (TOTAL + 1) / 2).to_string()
        ]
    );
}

// --------------------------------------------------------------------------------
// Temporary tables

/// Temporary tables belong to one session of one MariaDB: their writes are not logged
/// (two sessions may use the same name), a logged write that reads one is refused, and
/// with autocommit off a temporary-table write does not let later writes escape the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn temporary_tables_stay_local_and_logged_writes_cannot_read_them() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE base (id INT PRIMARY KEY)").await;
    q(&mut c, "INSERT INTO base VALUES (1), (2)").await;
    q(&mut c, "CREATE TEMPORARY TABLE tt (a INT)").await;
    q(&mut c, "INSERT INTO tt VALUES (10), (20)").await;
    q(&mut c, "INSERT INTO tt SELECT id FROM base").await;
    q(&mut c, "UPDATE tt SET a = a + 1").await;
    let sum: Option<i64> = c.query_first("SELECT SUM(a) FROM tt").await.unwrap();
    assert_eq!(sum, Some(37));
    let e = c
        .query_drop("INSERT INTO base SELECT a FROM tt")
        .await
        .expect_err("a logged write reading a temporary table");
    assert_eq!(code(&e), 1235, "{e}");
    assert!(e.to_string().contains("`test`.`tt`"), "{e}");
    // Another session, the same name: no clash anywhere.
    let mut d = nodes[l].client(Some("test")).await;
    q(&mut d, "CREATE TEMPORARY TABLE tt (b VARCHAR(5))").await;
    q(&mut d, "INSERT INTO tt VALUES ('x')").await;
    // Autocommit off: the temporary write opens the transaction the real write joins.
    q(&mut d, "SET autocommit = 0").await;
    q(&mut d, "INSERT INTO tt VALUES ('y')").await;
    q(&mut d, "INSERT INTO base VALUES (3)").await;
    q(&mut d, "COMMIT").await;
    q(&mut c, "DROP TEMPORARY TABLE tt").await;
    // A follower's session may use temporary tables too; they never leave it.
    let f = (l + 1) % 3;
    let mut r = nodes[f].client(Some("test")).await;
    q(&mut r, "CREATE TEMPORARY TABLE ft (a INT)").await;
    q(&mut r, "INSERT INTO ft VALUES (1)").await;
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id FROM base ORDER BY id").await;
    assert_eq!(rows.len(), 3);
    // Nothing about them reached the log.
    for n in &nodes {
        let mut root = n.raft.db.root().await;
        let tables: Vec<String> = root
            .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'test'")
            .await
            .unwrap();
        assert_eq!(
            tables,
            vec!["base".to_string()],
            "{}",
            n.raft.settings.node_id
        );
    }
}
