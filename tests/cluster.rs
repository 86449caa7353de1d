//! Raft over the WAL with the applier: three nodes, each with its own MariaDB.

mod common;

use std::time::Duration;

use mysql_async::prelude::*;
use wolfscale::apply::entry::{LogEntry, Pins, RowCounts, SessionVars, Statement, Txn, TxnId};
use wolfscale::cluster::Cluster;

fn insert(seq: u64, id: i64) -> LogEntry {
    LogEntry::Txn(Txn {
        // A producer id that is none of the nodes': every node replays it.
        id: TxnId {
            incarnation: 42,
            seq,
        },
        session: SessionVars::default(),
        statements: vec![Statement {
            db: Some("test".into()),
            sql: format!("INSERT INTO kv VALUES ({id}, 'v{id}')"),
            params: None,
            pins: Pins::default(),
            user_vars: vec![],
            expect: RowCounts {
                affected: 1,
                matched: None,
            },
        }],
        request: None,
    })
}

async fn count(db: &common::Db) -> i64 {
    let mut c = db.root().await;
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM test.kv").await.unwrap();
    n.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_entries_to_every_mariadb() {
    let mut nodes = common::raft_cluster(3).await;
    for n in &nodes {
        let mut c = n.db.root().await;
        c.query_drop("CREATE TABLE test.kv (k INT PRIMARY KEY, v VARCHAR(10))")
            .await
            .unwrap();
    }
    let leader = common::writable_leader(&nodes, Duration::from_secs(20)).await;
    let c: &Cluster = nodes[leader].cluster.as_ref().unwrap();
    let term = c.writable_term().unwrap();
    for i in 0..50 {
        let p = c.propose(insert(i, i as i64), term).await.unwrap();
        Cluster::outcome(p.done.await.unwrap()).unwrap();
    }
    for n in &nodes {
        let ok = common::wait_until(Duration::from_secs(10), || async {
            count(&n.db).await == 50
        })
        .await;
        assert!(ok, "{} did not converge", n.settings.node_id);
    }
    // A follower restarted resumes from its log and its marker, applying nothing twice.
    let follower = (leader + 1) % 3;
    let stopped = nodes[follower].cluster.take().unwrap();
    stopped.shutdown().await;
    let c: &Cluster = nodes[leader].cluster.as_ref().unwrap();
    for i in 50..80 {
        let p = c.propose(insert(i, i as i64), term).await.unwrap();
        Cluster::outcome(p.done.await.unwrap()).unwrap();
    }
    let restarted = Cluster::start(nodes[follower].settings.clone())
        .await
        .unwrap();
    nodes[follower].cluster = Some(restarted);
    let f = &nodes[follower];
    let ok = common::wait_until(Duration::from_secs(20), || async {
        count(&f.db).await == 80
    })
    .await;
    assert!(ok, "restarted follower did not catch up");
}
