//! A leader killed at each step of its commit pipeline: the transaction ends applied
//! exactly once on every node, or on none; never on some.
//!
//! The nodes are `wolfscale start` processes (each beside its own throwaway MariaDB),
//! so that a crash point can abort one outright (`WOLFSCALE_FAILPOINT_FILE`, see
//! `src/failpoint.rs`): no destructor runs, no buffer is flushed, its MariaDB
//! connections drop as they would on a SIGKILL.

mod common;

use std::time::Duration;

use common::procs::{cluster, leader_among, settled, write};
use mysql_async::prelude::*;

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
