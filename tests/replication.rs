//! Writes through the leader's proxy reach every node's MariaDB, deterministically.

mod common;

use std::time::Duration;

use common::{full_cluster, leader_of, server_error};
use mysql_async::prelude::*;
use openraft::async_runtime::watch::WatchReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_the_leader_converge() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40), ts DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), r DOUBLE)")
        .await
        .unwrap();
    for i in 0..20 {
        c.query_drop(format!("INSERT INTO t (v, r) VALUES ('row {i}', RAND())"))
            .await
            .unwrap();
    }
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE t SET v = CONCAT(v, '!') WHERE id % 2 = 0")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (v) VALUES (UUID()), (NOW(6))")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("DELETE FROM t").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(22));
    let sums = common::converged(&nodes, "test").await;
    assert_eq!(sums.len(), 1);
    // Every transaction was prepared or ended: none is still counted as open (an open
    // one's connection is killed when the leader changes).
    use wolfscale::proxy::replicate::Replicator;
    assert_eq!(nodes[l].cluster.pending().open_len(), 0);
    // A follower's proxy sends writes to the leader (tests/routing.rs covers routing).
    let f = (l + 1) % 3;
    let mut fc = nodes[f].client(Some("test")).await;
    fc.query_drop("INSERT INTO t (v) VALUES ('x')")
        .await
        .unwrap();
    let n: Option<i64> = fc.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(23));
    assert_eq!(common::converged(&nodes, "test").await.len(), 1);
    let _ = Duration::from_secs(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_writes_replicate_with_typed_parameters() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop(
        "CREATE TABLE p (id INT AUTO_INCREMENT PRIMARY KEY, n BIGINT, s VARCHAR(20), b LONGBLOB, \
         d DATETIME(6), t TIME(3), x DECIMAL(10,3), f DOUBLE, at DATETIME(6) DEFAULT NOW(6))",
    )
    .await
    .unwrap();
    let blob: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let stmt = c
        .prep("INSERT INTO p (n, s, b, d, t, x, f) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .await
        .unwrap();
    c.exec_drop(
        &stmt,
        (
            -42i64,
            "héllo",
            blob.clone(),
            mysql_async::Value::Date(2024, 2, 29, 23, 59, 58, 123_456),
            mysql_async::Value::Time(true, 1, 2, 3, 4, 500_000),
            "12.345",
            0.1f64,
        ),
    )
    .await
    .unwrap();
    c.exec_drop(
        &stmt,
        (
            mysql_async::Value::NULL,
            mysql_async::Value::NULL,
            mysql_async::Value::NULL,
            mysql_async::Value::NULL,
            mysql_async::Value::NULL,
            mysql_async::Value::NULL,
            mysql_async::Value::NULL,
        ),
    )
    .await
    .unwrap();
    // Inside a transaction, with an UPDATE whose matched rows are checked.
    c.query_drop("BEGIN").await.unwrap();
    c.exec_drop("UPDATE p SET s = ? WHERE id > ?", ("updated", 0))
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    common::converged(&nodes, "test").await;
    for n in &nodes {
        let mut d = n.raft.db.root().await;
        let b: Option<Vec<u8>> = d
            .query_first("SELECT b FROM test.p WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(b.as_deref(), Some(&blob[..]));
    }
}

/// A table that cannot roll back is refused on the leader, from the next statement
/// after the DDL that made it, in text and prepared form; InnoDB writes still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_to_non_transactional_tables_are_refused() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE m (id INT PRIMARY KEY) ENGINE=MyISAM")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE i (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    for sql in [
        "INSERT INTO m VALUES (1)",
        "INSERT INTO test.m VALUES (1)",
        "UPDATE `m` SET id = 2",
        "INSERT INTO i SELECT id FROM m",
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        let (code, _) = server_error(&err).unwrap();
        assert_eq!(code, 1235, "{sql}: {err}");
        assert!(err.to_string().contains("`test`.`m`"), "{err}");
    }
    let err = c
        .exec_drop("INSERT INTO m VALUES (?)", (5,))
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).unwrap().0, 1235, "{err}");
    c.query_drop("INSERT INTO i VALUES (1)").await.unwrap();
    // Converted to InnoDB, it is writable again at once.
    c.query_drop("ALTER TABLE m ENGINE=InnoDB").await.unwrap();
    c.query_drop("INSERT INTO m VALUES (7)").await.unwrap();
    // LOAD DATA LOCAL is not replicated yet: refused, not run on the leader only.
    let err = c
        .query_drop("LOAD DATA LOCAL INFILE '/nonexistent' INTO TABLE i")
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).unwrap().0, 1235, "{err}");
    let rows = common::same_on_all(
        &nodes,
        "SELECT id FROM test.m UNION ALL SELECT id FROM test.i",
    )
    .await;
    assert_eq!(rows.len(), 2);
}

/// The client sees its own statement's counters and warnings, as directly on MariaDB,
/// not those of the proxy's XA statements around an autocommit write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_autocommit_write_keeps_its_own_warnings_and_counters() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let mut direct = nodes[l].raft.db.root().await;
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE w (id INT PRIMARY KEY, v TINYINT)")
        .await
        .unwrap();
    // The same table on the leader's MariaDB directly, outside the replicated schema.
    direct
        .query_drop(
            "CREATE DATABASE scratch; CREATE TABLE scratch.w (id INT PRIMARY KEY, v TINYINT)",
        )
        .await
        .unwrap();
    let sql = "INSERT IGNORE INTO {t} VALUES (1, 1), (1, 2), (2, 3)";
    let mut seen = Vec::new();
    for (conn, table) in [(&mut c, "w"), (&mut direct, "scratch.w")] {
        conn.query_drop(sql.replace("{t}", table)).await.unwrap();
        let counters = (conn.affected_rows(), conn.get_warnings());
        let warnings: Vec<(String, u16, String)> = conn.query("SHOW WARNINGS").await.unwrap();
        let warnings: Vec<(String, u16, String)> = warnings
            .into_iter()
            .map(|(l, c, m)| (l, c, m.replace("scratch.w", "w")))
            .collect();
        seen.push((counters, warnings));
    }
    assert_eq!(seen[0], seen[1], "through the proxy vs directly");
    // ROW_COUNT() right after an autocommit write (and in a write right after it) is the
    // write's, as directly, not that of the proxy's XA COMMIT.
    let mut counts = Vec::new();
    for (conn, table) in [(&mut c, "w"), (&mut direct, "scratch.w")] {
        conn.query_drop(format!("UPDATE {table} SET v = v + 1 WHERE id <= 2"))
            .await
            .unwrap();
        let rc: Option<i64> = conn.query_first("SELECT ROW_COUNT()").await.unwrap();
        conn.query_drop(format!("INSERT INTO {table} VALUES (10, 1), (11, 1)"))
            .await
            .unwrap();
        conn.query_drop(format!("INSERT INTO {table} VALUES (20, ROW_COUNT())"))
            .await
            .unwrap();
        let stored: Option<i64> = conn
            .query_first(format!("SELECT v FROM {table} WHERE id = 20"))
            .await
            .unwrap();
        let again: Option<i64> = conn.query_first("SELECT ROW_COUNT()").await.unwrap();
        counts.push((rc, stored, again));
    }
    assert_eq!(
        counts[0], counts[1],
        "ROW_COUNT() through the proxy vs directly"
    );
    assert_eq!(counts[0].0, Some(2));
    assert_eq!(counts[0].1, Some(2));
    assert_eq!(seen[0].0, (2, 1));
    assert_eq!(seen[0].1.len(), 1);
    assert_eq!(seen[0].1[0].1, 1062);
    // After other statements (one that uses no table keeps them, one that does
    // replaces them), the same as directly.
    for next in ["SELECT 1", "SELECT COUNT(*) FROM {t}"] {
        let mut after = Vec::new();
        for (conn, table) in [(&mut c, "w"), (&mut direct, "scratch.w")] {
            conn.query_drop(next.replace("{t}", table)).await.unwrap();
            let w: Vec<(String, u16, String)> = conn.query("SHOW WARNINGS").await.unwrap();
            after.push(w);
        }
        assert_eq!(
            after[0], after[1],
            "after {next}: through the proxy vs directly"
        );
    }
    common::converged_report(&nodes, "test").await;
}

/// Transaction statements prepared with COM_STMT_PREPARE (as sysbench does) drive the
/// replicated transaction like their text form: the rolled-back one leaves nothing,
/// the committed one reaches every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_begin_commit_and_rollback_drive_the_transaction() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE pt (id INT PRIMARY KEY, k INT)")
        .await
        .unwrap();
    c.exec_drop("INSERT INTO pt VALUES (?, ?)", (1, 0))
        .await
        .unwrap();
    for round in 0..3 {
        c.exec_drop("BEGIN", ()).await.unwrap();
        c.exec_drop("UPDATE pt SET k = k + 1 WHERE id = ?", (1,))
            .await
            .unwrap();
        c.exec_drop("INSERT INTO pt VALUES (?, ?)", (10 + round, round))
            .await
            .unwrap();
        if round == 1 {
            c.exec_drop("ROLLBACK", ()).await.unwrap();
        } else {
            c.exec_drop("COMMIT", ()).await.unwrap();
        }
    }
    let k: Option<i64> = c
        .exec_first("SELECT k FROM pt WHERE id = ?", (1,))
        .await
        .unwrap();
    assert_eq!(k, Some(2));
    common::converged_report(&nodes, "test").await;
    let rows = common::same_on_all(&nodes, "SELECT id, k FROM pt ORDER BY id").await;
    assert_eq!(rows.len(), 3, "{}", common::show_rows(&rows));
}

/// A session at READ COMMITTED (Django's default) gets its write transactions run at
/// REPEATABLE READ, and a warning it can read says so, once; reads keep its level.
/// With `proxy.refuse_weak_isolation` they are refused instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weak_isolation_is_raised_with_a_warning_or_refused() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE iso (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    // An autocommit write: its OK counts one warning, SHOW WARNINGS shows it.
    c.query_drop("INSERT INTO iso VALUES (1)").await.unwrap();
    assert_eq!(c.get_warnings(), 1);
    let w: Vec<(String, u16, String)> = c.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].2.contains("REPEATABLE READ"), "{w:?}");
    // The transaction did run at REPEATABLE READ; the session keeps its own level.
    let level: Option<String> = c.query_first("SELECT @@tx_isolation").await.unwrap();
    assert_eq!(level.as_deref(), Some("READ-COMMITTED"));
    // Once per session: the next ones are quiet.
    c.query_drop("BEGIN").await.unwrap();
    assert_eq!(c.get_warnings(), 0);
    c.query_drop("INSERT INTO iso VALUES (2)").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    // A new session is told again, at BEGIN.
    let mut d = nodes[l].client(Some("test")).await;
    d.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    d.query_drop("BEGIN").await.unwrap();
    assert_eq!(d.get_warnings(), 1);
    d.query_drop("INSERT INTO iso VALUES (3)").await.unwrap();
    d.query_drop("COMMIT").await.unwrap();
    common::converged_report(&nodes, "test").await;
    drop(nodes);

    let nodes = common::full_cluster_with(3, |s| s.refuse_weak_isolation = true).await;
    let l = leader_of(&nodes);
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE iso (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    for sql in ["INSERT INTO iso VALUES (1)", "BEGIN"] {
        let e = c.query_drop(sql).await.expect_err(sql);
        assert_eq!(server_error(&e).map(|(c, _)| c), Some(1235), "{sql}: {e}");
    }
    // Reads are unaffected; at REPEATABLE READ writes go through.
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM iso").await.unwrap();
    assert_eq!(n, Some(0));
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    c.query_drop("INSERT INTO iso VALUES (1)").await.unwrap();
    common::converged_report(&nodes, "test").await;
}

/// A write with RETURNING answers with a result set, whose EOF carries no affected-rows
/// count: the leader counts the rows it returned, and so does each follower, so that
/// the row-count check neither misses a difference nor stops a follower that agrees.
/// (SQLAlchemy 2 inserts this way on MariaDB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_with_returning_replicate_and_are_counted_by_their_rows() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE r (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    // Autocommit, text protocol: the client gets the generated ids.
    let ids: Vec<i64> = c
        .query("INSERT INTO r (v) VALUES ('a'), ('b'), ('c') RETURNING id")
        .await
        .unwrap();
    assert_eq!(ids, vec![1, 2, 3]);
    let rc: Option<i64> = c.query_first("SELECT ROW_COUNT()").await.unwrap();
    assert_eq!(
        rc,
        Some(-1),
        "ROW_COUNT() after a statement that returned rows"
    );
    // In a transaction, prepared, then DELETE and REPLACE with RETURNING.
    c.query_drop("BEGIN").await.unwrap();
    let got: Vec<(i64, String)> = c
        .exec("INSERT INTO r (v) VALUES (?) RETURNING id, v", ("d",))
        .await
        .unwrap();
    assert_eq!(got, vec![(4, "d".to_string())]);
    let gone: Vec<i64> = c
        .query("DELETE FROM r WHERE id <= 2 RETURNING id")
        .await
        .unwrap();
    assert_eq!(gone, vec![1, 2]);
    let replaced: Vec<i64> = c
        .exec("REPLACE INTO r (id, v) VALUES (?, 'z') RETURNING id", (3,))
        .await
        .unwrap();
    assert_eq!(replaced, vec![3]);
    c.query_drop("COMMIT").await.unwrap();
    // A write that returns nothing after them: a follower stopped by a false count
    // would not apply it, and the checksums would differ.
    c.query_drop("DELETE FROM r WHERE id = 4 RETURNING id")
        .await
        .unwrap();
    c.query_drop("INSERT INTO r (v) VALUES ('last')")
        .await
        .unwrap();
    common::converged_report(&nodes, "test").await;
    let rows = common::same_on_all(&nodes, "SELECT id, v FROM test.r ORDER BY id").await;
    assert_eq!(rows.len(), 2, "{}", common::show_rows(&rows));
}

/// A follower whose replay diverges stops applying at that entry but stays in Raft:
/// it still stores entries and votes, so when every follower diverges at once (the
/// likely shape of a determinism slip) the leader keeps its majority and its writes
/// commit. A diverged node reports an applied index below the entry, reads through
/// it go to the leader, and it does not stand for election.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diverged_followers_keep_their_log_and_vote_but_never_lead() {
    let mut nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE d (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO d VALUES (1, 0), (2, 0)")
        .await
        .unwrap();
    common::converged(&nodes, "test").await;
    // Behind the cluster's back, each follower's MariaDB gains a row; an UPDATE of
    // every row then changes 2 rows on the leader and 3 on each follower.
    for &f in &followers {
        let mut d = nodes[f].raft.db.root().await;
        d.query_drop("INSERT INTO test.d VALUES (3, 0)")
            .await
            .unwrap();
    }
    c.query_drop("UPDATE d SET v = 1").await.unwrap();
    let diverged_all = common::wait_until(Duration::from_secs(20), || async {
        followers.iter().all(|&f| nodes[f].cluster.is_diverged())
    })
    .await;
    assert!(diverged_all, "{:?}", common::apply_statuses(&nodes));
    let diverged_at: Vec<u64> = followers
        .iter()
        .map(|&f| nodes[f].cluster.applied_index())
        .collect();
    // The leader still commits: both followers store and acknowledge its entries.
    for i in 0..5 {
        c.query_drop(format!("INSERT INTO d VALUES ({}, 0)", 10 + i))
            .await
            .unwrap();
    }
    let leader_last = nodes[l]
        .cluster
        .raft()
        .metrics()
        .borrow_watched()
        .last_log_index
        .unwrap_or(0);
    let stored = common::wait_until(Duration::from_secs(10), || async {
        followers.iter().all(|&f| {
            nodes[f]
                .cluster
                .raft()
                .metrics()
                .borrow_watched()
                .last_log_index
                >= Some(leader_last)
        })
    })
    .await;
    assert!(stored, "the diverged followers no longer store the log");
    // Nothing after the divergent entry is applied on them.
    for (k, &f) in followers.iter().enumerate() {
        assert_eq!(nodes[f].cluster.applied_index(), diverged_at[k]);
        assert!(diverged_at[k] < leader_last);
        let mut d = nodes[f].raft.db.root().await;
        let n: Option<(i64, i64)> = d
            .query_first("SELECT COUNT(*), SUM(v) FROM test.d")
            .await
            .unwrap();
        assert_eq!(
            n,
            Some((3, 0)),
            "node {f} kept its divergent entry or applied past it"
        );
    }
    // A session through a diverged follower reads its own write (from the leader).
    let mut fc = nodes[followers[0]].client(Some("test")).await;
    fc.query_drop("INSERT INTO d VALUES (100, 0)")
        .await
        .unwrap();
    let n: Option<i64> = fc.query_first("SELECT COUNT(*) FROM d").await.unwrap();
    assert_eq!(n, Some(8));
    drop(fc);
    drop(c);
    // With the leader gone, neither diverged node takes its place.
    let leader = nodes.remove(l);
    let _stopped = common::stop_full_node(leader).await;
    let led = common::wait_until(Duration::from_secs(3), || async {
        nodes.iter().any(|n| {
            let m = n.cluster.raft().metrics().borrow_watched().clone();
            m.current_leader == Some(m.id) || n.is_writable()
        })
    })
    .await;
    assert!(!led, "a diverged node became leader");
}

/// A node that diverges while it leads (replaying an earlier term's entry it had not
/// applied yet when it was elected) hands leadership to another voter and never
/// becomes writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_replay_diverges_hands_leadership_over() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let a = (l + 1) % 3;
    let mut c = nodes[l].client(Some("test")).await;
    c.query_drop("CREATE TABLE d (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO d VALUES (1, 0), (2, 0)")
        .await
        .unwrap();
    common::converged(&nodes, "test").await;
    let mut d = nodes[a].raft.db.root().await;
    d.query_drop("INSERT INTO test.d VALUES (3, 0)")
        .await
        .unwrap();
    // Node `a` replays slowly: it has the UPDATE in its log, not yet in its MariaDB,
    // when leadership is handed to it.
    wolfscale::failpoint::set_replay_delay(
        nodes[a].cluster.incarnation,
        Some(Duration::from_millis(1500)),
    );
    c.query_drop("UPDATE d SET v = 1").await.unwrap();
    drop(c);
    let a_id = nodes[a].cluster.raft().metrics().borrow_watched().id;
    nodes[l]
        .cluster
        .raft()
        .trigger()
        .transfer_leader(a_id)
        .await
        .unwrap();
    let diverged = common::wait_until(Duration::from_secs(20), || async {
        nodes[a].cluster.is_diverged()
    })
    .await;
    wolfscale::failpoint::set_replay_delay(nodes[a].cluster.incarnation, None);
    assert!(diverged, "{:?}", common::apply_statuses(&nodes));
    // Another node leads and takes writes; `a` never became writable.
    let handed = common::wait_until(Duration::from_secs(20), || async {
        nodes
            .iter()
            .enumerate()
            .any(|(i, n)| i != a && n.is_writable())
    })
    .await;
    assert!(handed, "no other node became the writable leader");
    assert!(!nodes[a].is_writable());
    // It learns of the new leader's term (its own view may lag a moment).
    let stepped_down = common::wait_until(Duration::from_secs(10), || async {
        let m = nodes[a].cluster.raft().metrics().borrow_watched().clone();
        m.current_leader != Some(m.id)
    })
    .await;
    assert!(stepped_down, "the diverged node still leads");
    let w = (0..3).find(|&i| nodes[i].is_writable()).unwrap();
    let mut c = nodes[w].client(Some("test")).await;
    c.query_drop("INSERT INTO d VALUES (4, 0)").await.unwrap();
}
