//! Writes through the leader's proxy reach every node's MariaDB, deterministically.

mod common;

use std::time::Duration;

use common::{full_cluster, leader_of, server_error};
use mysql_async::prelude::*;

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
    // A follower's proxy refuses writes, naming the leader.
    let f = (l + 1) % 3;
    let mut fc = nodes[f].client(Some("test")).await;
    let err = fc
        .query_drop("INSERT INTO t (v) VALUES ('x')")
        .await
        .unwrap_err();
    let (code, _) = server_error(&err).unwrap();
    assert_eq!(code, 1290, "{err}");
    assert!(
        err.to_string().contains(&nodes[l].raft.settings.node_id),
        "{err}"
    );
    // Reads there are local.
    let n: Option<i64> = fc.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(22));
    let _ = Duration::from_secs(0);
}
