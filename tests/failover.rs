//! Failover as a client sees it (in-process nodes, each with its own MariaDB): a
//! statement that needs the leader is held while there is none, up to
//! `[proxy] failover_wait_ms`, then runs on the new leader or fails with a retryable
//! error; a KILL or a disconnect ends the wait and the statement never runs.

mod common;

use std::time::{Duration, Instant};

use common::{full_cluster_with, leader_of, server_error, FullNode};
use mysql_async::prelude::*;
use mysql_async::Conn;

async fn q(c: &mut Conn, sql: &str) {
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn followers(nodes: &[FullNode]) -> Vec<usize> {
    let l = leader_of(nodes);
    (0..nodes.len()).filter(|&i| i != l).collect()
}

/// The values of `test.fo.n` on each node, sorted.
async fn values_on_each(nodes: &[FullNode]) -> Vec<Vec<i64>> {
    let rows = common::rows_on_each(nodes, "SELECT n FROM test.fo ORDER BY n").await;
    rows.into_iter()
        .map(|node| {
            node.into_iter()
                .map(|r| mysql_async::from_value::<i64>(r[0].clone()))
                .collect()
        })
        .collect()
}

/// The leader's node stops (its proxy closes its sessions, so the follower's link is
/// closed under it). A write through the follower, on the session whose link that
/// was and on a new one, waits out the election and runs once on the new leader.
/// Without the hold it fails with 2013 (outcome unknown) or 1290 (no leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_a_follower_wait_out_an_election() {
    common::init_logging();
    let mut nodes = full_cluster_with(3, |s| s.failover_wait = Duration::from_secs(20)).await;
    let l = leader_of(&nodes);
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    q(&mut c, "INSERT INTO fo (n) VALUES (1)").await;
    let f_name = nodes[f].raft.settings.node_id.clone();
    let old = nodes.remove(l);
    let _stopped = common::stop_full_node(old).await;
    let f = nodes
        .iter()
        .position(|n| n.raft.settings.node_id == f_name)
        .unwrap();
    let started = Instant::now();
    // The session whose link went to the old leader.
    q(&mut c, "INSERT INTO fo (n) VALUES (2)").await;
    let waited = started.elapsed();
    // A new session.
    let mut d = nodes[f].client(Some("test")).await;
    q(&mut d, "INSERT INTO fo (n) VALUES (3)").await;
    // A read on the leader (linearizable) is held and answered too.
    q(
        &mut d,
        "SET @@session.wolfscale_read_consistency = 'linearizable'",
    )
    .await;
    let n: Option<i64> = d.query_first("SELECT COUNT(*) FROM fo").await.unwrap();
    assert_eq!(n, Some(3));
    eprintln!("the first write after the leader stopped waited {waited:?}");
    drop((c, d));
    common::converged(&nodes, "test").await;
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &[1, 2, 3], "node {i}: each write exactly once");
    }
}

/// With no majority there is no leader: a write is held for `failover_wait_ms`, then
/// fails with 1290 saying nothing ran; the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_leader_a_write_fails_after_the_failover_wait() {
    let wait = Duration::from_millis(1500);
    let mut nodes = full_cluster_with(3, |s| s.failover_wait = wait).await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    let f_name = nodes[f].raft.settings.node_id.clone();
    let mut stopped = Vec::new();
    while nodes.len() > 1 {
        let i = nodes
            .iter()
            .position(|n| n.raft.settings.node_id != f_name)
            .unwrap();
        stopped.push(common::stop_full_node(nodes.remove(i)).await);
    }
    let started = Instant::now();
    let err = c
        .query_drop("INSERT INTO fo (n) VALUES (1)")
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let code = server_error(&err).map(|e| e.0);
    let msg = err.to_string();
    assert_eq!(code, Some(1290), "{msg}");
    assert!(msg.contains("failover_wait_ms"), "{msg}");
    assert!(
        waited >= wait - Duration::from_millis(100),
        "failed after {waited:?}"
    );
    // The session is still usable for local reads.
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM fo").await.unwrap();
    assert_eq!(n, Some(0));
    // Once a majority is back, the write that failed is not there, and a new one runs.
    for raft in stopped {
        nodes.push(common::start_full_node(raft).await);
    }
    q(
        &mut c,
        "SET @@session.wolfscale_read_consistency = 'linearizable'",
    )
    .await;
    let mut ok = false;
    for _ in 0..100 {
        if c.query_drop("INSERT INTO fo (n) VALUES (2)").await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "no write accepted once the majority was back");
    drop(c);
    common::converged(&nodes, "test").await;
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &[2], "node {i}");
    }
}

/// A held statement is cancelled by KILL QUERY (the session goes on) and by the
/// client going away; neither is ever released to a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_or_disconnect_cancels_a_held_statement() {
    let mut nodes = full_cluster_with(3, |s| s.failover_wait = Duration::from_secs(60)).await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    let f_name = nodes[f].raft.settings.node_id.clone();
    let mut stopped = Vec::new();
    while nodes.len() > 1 {
        let i = nodes
            .iter()
            .position(|n| n.raft.settings.node_id != f_name)
            .unwrap();
        stopped.push(common::stop_full_node(nodes.remove(i)).await);
    }
    // KILL QUERY from another session of the same account.
    let id = c.id();
    let held = tokio::spawn(async move {
        let r = c.query_drop("INSERT INTO fo (n) VALUES (1)").await;
        (c, r)
    });
    let mut killer = nodes[0].client(Some("test")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    q(&mut killer, &format!("KILL QUERY {id}")).await;
    let (mut c, r) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("KILL QUERY released the held statement")
        .unwrap();
    let err = r.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1317), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM fo").await.unwrap();
    assert_eq!(n, Some(0), "the session goes on after KILL QUERY");
    // A client that goes away while its statement is held.
    let mut gone = nodes[0].client(Some("test")).await;
    let write = gone.query_drop("INSERT INTO fo (n) VALUES (2)");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), write)
            .await
            .is_err(),
        "the statement is held"
    );
    drop(gone);
    // Majority back: neither statement ever ran, and a new one does.
    for raft in stopped {
        nodes.push(common::start_full_node(raft).await);
    }
    q(&mut c, "INSERT INTO fo (n) VALUES (3)").await;
    drop((c, killer));
    common::converged(&nodes, "test").await;
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &[3], "node {i}: a cancelled statement ran");
    }
}
