//! KILL with every id a client can learn (the greeting, `CONNECTION_ID()`, the
//! processlist), KILLs the proxy cannot map refused rather than misdirected, and clean
//! disconnects that MariaDB does not count as aborted clients.

mod common;

use std::time::Duration;

use common::raw::Raw;
use common::{server_error, Node, APP_PASSWORD};
use mysql_async::prelude::*;
use mysql_async::Conn;

const T: Duration = Duration::from_secs(10);

/// Start `SELECT SLEEP(30)` on `victim` and wait until it runs on the backend.
async fn sleeping(
    node: &Node,
    mut victim: Conn,
) -> tokio::task::JoinHandle<(Result<Option<i64>, mysql_async::Error>, Conn)> {
    let task = tokio::spawn(async move {
        let r = victim.query_first("SELECT SLEEP(30)").await;
        (r, victim)
    });
    let running = common::wait_until(T, || async {
        count(node, "INFO = 'SELECT SLEEP(30)'").await == 1
    })
    .await;
    assert!(running, "the sleep never started");
    task
}

/// Rows of the backend's processlist matching `filter`.
async fn count(node: &Node, filter: &str) -> i64 {
    let mut root = node.db.root().await;
    let sql = format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE {filter}");
    let n: Option<i64> = root.query_first(sql).await.unwrap();
    root.disconnect().await.ok();
    n.unwrap_or(0)
}

async fn aborted_clients(node: &Node) -> u64 {
    let mut root = node.db.root().await;
    let row: Option<(String, u64)> = root
        .query_first("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")
        .await
        .unwrap();
    root.disconnect().await.ok();
    row.unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_works_with_connection_id_and_the_processlist() {
    let node = Node::start().await;
    let mut victim = node.client(None).await;
    let thread: Option<u64> = victim.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let thread = thread.unwrap();
    // The processlist and CONNECTION_ID() agree, as on a direct connection.
    let own: Option<i64> = victim
        .query_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
        )
        .await
        .unwrap();
    assert_eq!(own, Some(1));
    let shown: Vec<(u64, String)> = victim
        .query_map("SHOW PROCESSLIST", |row: mysql_async::Row| {
            (
                row.get::<u64, _>(0).unwrap(),
                row.get::<String, _>(1).unwrap(),
            )
        })
        .await
        .unwrap();
    assert!(shown
        .iter()
        .any(|(id, user)| *id == thread && user == "app"));
    let mut killer = node.client(None).await;
    // KILL QUERY with the id CONNECTION_ID() gave.
    let sleep = sleeping(&node, victim).await;
    killer
        .query_drop(format!("KILL QUERY {thread}"))
        .await
        .expect("KILL QUERY <CONNECTION_ID()>");
    let (r, victim) = tokio::time::timeout(T, sleep).await.unwrap().unwrap();
    assert_eq!(server_error(&r.unwrap_err()), Some((1317, "70100".into())));
    // A comment in front is no reason to refuse: the greeting's id, mapped.
    let proxy_id = victim.id();
    let sleep = sleeping(&node, victim).await;
    killer
        .query_drop(format!("/* from the app */ KILL QUERY {proxy_id}"))
        .await
        .expect("KILL QUERY <greeting id>");
    let (r, mut victim) = tokio::time::timeout(T, sleep).await.unwrap().unwrap();
    assert_eq!(server_error(&r.unwrap_err()), Some((1317, "70100".into())));
    // KILL CONNECTION_ID() of one's own session ends it, as directly.
    let err = victim
        .query_drop(format!("KILL {thread}"))
        .await
        .unwrap_err();
    assert!(
        matches!(server_error(&err), Some((1927, _))) || server_error(&err).is_none(),
        "{err}"
    );
    assert!(victim.query_drop("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_that_cannot_be_mapped_are_refused() {
    let node = Node::start().await;
    let mut victim = node.client(None).await;
    let thread: Option<u64> = victim.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let proxy_id = victim.id();
    let mut c = node.client(None).await;
    c.query_drop(format!("SET @victim = {proxy_id}"))
        .await
        .unwrap();
    for sql in [
        format!("KILL {proxy_id}; SELECT 1"),
        format!("SELECT 1; KILL {}", thread.unwrap()),
        "KILL @victim".to_string(),
        format!("EXECUTE IMMEDIATE 'KILL {proxy_id}'"),
    ] {
        let err = c.query_drop(&sql).await.unwrap_err();
        assert_eq!(
            server_error(&err),
            Some((1235, "42000".into())),
            "{sql}: {err}"
        );
    }
    let err = c
        .prep(format!("KILL {proxy_id}"))
        .await
        .expect_err("KILL cannot be prepared through the proxy");
    assert_eq!(server_error(&err).map(|e| e.0), Some(1235));
    // Nothing was killed.
    let alive: Option<i32> = victim.query_first("SELECT 7").await.unwrap();
    assert_eq!(alive, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_disconnects_are_not_aborted_clients() {
    let node = Node::start().await;
    let before = aborted_clients(&node).await;
    for _ in 0..10 {
        let mut c = node.client(None).await;
        c.query_drop("SELECT 1").await.unwrap();
        c.disconnect().await.unwrap(); // COM_QUIT
    }
    let mut raw = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    raw.send(0, &[0x01]).await;
    assert_eq!(raw.read(T).await, common::raw::Reply::Closed);
    let gone = common::wait_until(T, || async {
        node.proxy.as_ref().unwrap().stats().sessions == 0
    })
    .await;
    assert!(gone);
    // The backend connections are gone too.
    let settled = common::wait_until(T, || async { count(&node, "USER = 'app'").await == 0 }).await;
    assert!(settled);
    assert_eq!(aborted_clients(&node).await, before);
}
