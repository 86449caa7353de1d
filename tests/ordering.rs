//! The leader's log order against MariaDB's lock release at `XA PREPARE`.
//!
//! `XA PREPARE` releases a transaction's shared and gap locks. A transaction T that
//! read rows under shared locks (`INSERT … SELECT` at REPEATABLE READ) is prepared;
//! another transaction U then changes one of those rows and inserts into the range T
//! read, and prepares too. Followers replay the log in order: if U's entry came
//! before T's, T's `SELECT` would read U's changes there and not on the leader. The
//! randomized differential test found this as a rare `INSERT … SELECT` row that
//! differed; this test holds T right after its PREPARE (a failpoint hold), so the
//! window is as wide as the test wants.
//!
//! Its own test binary: a hold catches the first session of the process that reaches
//! the point, so no other test may run beside it.

mod common;

use std::time::Duration;

use common::{converged_report, full_cluster, leader_of, same_on_all, FullNode};
use mysql_async::prelude::*;
use mysql_async::Conn;

async fn q(c: &mut Conn, sql: &str) {
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Transactions prepared (and not yet committed) on a node's MariaDB.
async fn prepared(node: &FullNode) -> usize {
    let mut c = node.raft.db.root().await;
    let rows: Vec<mysql_async::Row> = c.query("XA RECOVER").await.unwrap();
    c.disconnect().await.ok();
    rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_that_changes_what_a_prepared_one_read_is_logged_after_it() {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    let mut setup = nodes[l].client(Some("test")).await;
    q(
        &mut setup,
        "CREATE TABLE acct (id INT PRIMARY KEY, bal INT NOT NULL)",
    )
    .await;
    q(
        &mut setup,
        "CREATE TABLE summary (id INT AUTO_INCREMENT PRIMARY KEY, total INT, n INT)",
    )
    .await;
    q(&mut setup, "INSERT INTO acct VALUES (1, 1000), (9, 50)").await;

    // T reads acct 1..10 under shared next-key locks and is held after its PREPARE.
    let hold = wolfscale::failpoint::hold("after-prepare");
    let mut t = nodes[l].client(Some("test")).await;
    q(&mut t, "BEGIN").await;
    q(
        &mut t,
        "INSERT INTO summary (total, n) SELECT SUM(bal), COUNT(*) FROM acct WHERE id BETWEEN 1 AND 10",
    )
    .await;
    let t_commit = tokio::spawn(async move {
        let r = t.query_drop("COMMIT").await;
        (t, r)
    });
    tokio::time::timeout(Duration::from_secs(20), hold.reached())
        .await
        .expect("T reached its PREPARE");

    // U changes a row T read and inserts into the range T read. Both would wait for
    // T's locks before its PREPARE; after it they go through.
    let mut u = nodes[l].client(Some("test")).await;
    q(&mut u, "BEGIN").await;
    q(&mut u, "UPDATE acct SET bal = bal - 24 WHERE id = 1").await;
    q(&mut u, "INSERT INTO acct VALUES (5, 7)").await;
    let mut u_commit = tokio::spawn(async move {
        let r = u.query_drop("COMMIT").await;
        (u, r)
    });
    // U prepares too, and then must wait for T to be proposed first. Give it a second
    // to do the wrong thing (commit ahead of T) once both are prepared.
    let both_prepared = common::wait_until(Duration::from_secs(20), || async {
        u_commit.is_finished() || prepared(&nodes[l]).await >= 2
    })
    .await;
    assert!(both_prepared, "U neither prepared nor committed");
    let overtook = tokio::time::timeout(Duration::from_secs(1), &mut u_commit).await;
    assert!(
        overtook.is_err(),
        "U committed while T, prepared before it, had not been proposed: {:?}",
        overtook.map(|r| r.map(|(_, r)| r))
    );

    hold.release();
    let (_t, r) = t_commit.await.unwrap();
    r.expect("T commits");
    let (_u, r) = u_commit.await.unwrap();
    r.expect("U commits");

    // T read the rows as they were before U, on the leader and so on every node.
    let rows = same_on_all(&nodes, "SELECT total, n FROM summary").await;
    let row: Vec<Option<String>> = rows[0].iter().map(common::cell_text).collect();
    assert_eq!(row, [Some("1050".to_string()), Some("2".to_string())]);
    let accts = same_on_all(&nodes, "SELECT id, bal FROM acct ORDER BY id").await;
    assert_eq!(accts.len(), 3);
    converged_report(&nodes, "test").await;
}
