//! The applier against a real MariaDB: pinned replay, batching, the exactly-once marker,
//! XA commits of this node's own transactions, and divergence detection.

mod common;

use std::sync::Arc;

use common::Db;
use mysql_async::prelude::*;
use wolfscale::apply::entry::{
    Ddl, LogEntry, Pins, RowCounts, SessionVars, Statement, Txn, TxnId, Value,
};
use wolfscale::apply::{Applier, ApplyError, Item, PendingCommits, Turn, Waiter};

const ME: u64 = 0xAAAA;
const OTHER: u64 = 0xBBBB;

fn service_opts(db: &Db) -> mysql_async::Opts {
    common::opts(db.port(), "root", "", None)
}

fn session() -> SessionVars {
    SessionVars {
        charset: "utf8mb4".into(),
        collation: "utf8mb4_general_ci".into(),
        vars: vec![(
            "sql_mode".into(),
            Value::Text("utf8mb4".into(), b"STRICT_ALL_TABLES".to_vec()),
        )],
    }
}

fn stmt(sql: &str, affected: u64) -> Statement {
    Statement {
        db: Some("test".into()),
        sql: sql.into(),
        params: None,
        pins: Pins::default(),
        user_vars: vec![],
        expect: RowCounts {
            affected,
            matched: None,
        },
    }
}

fn txn(origin: u64, seq: u64, statements: Vec<Statement>) -> Box<LogEntry> {
    Box::new(LogEntry::Txn(Txn {
        id: TxnId {
            incarnation: origin,
            seq,
        },
        session: session(),
        statements,
        request: None,
    }))
}

fn item(index: u64, entry: Box<LogEntry>) -> Item {
    Item::Entry {
        index,
        term: 1,
        entry,
    }
}

async fn setup(db: &Db) {
    let mut c = db.root().await;
    c.query_drop("CREATE TABLE test.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), ts DATETIME(6), r DOUBLE)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_with_pins_in_one_transaction_and_exactly_once() {
    let db = Db::start().await;
    setup(&db).await;
    let pending = Arc::new(PendingCommits::default());
    let mut a = Applier::open(service_opts(&db), ME, pending.clone())
        .await
        .unwrap();
    assert_eq!(a.applied().index, None);
    let mut pinned = stmt(
        "INSERT INTO t (v, ts, r) VALUES ('x', NOW(6), RAND()), ('y', NOW(6), RAND())",
        2,
    );
    pinned.pins = Pins {
        timestamp_us: 1_600_000_000_250_000,
        rand_seed1: 11,
        rand_seed2: 22,
        insert_id: Some(100),
        last_insert_id: None,
    };
    let mut update = stmt("UPDATE t SET v = CONCAT(v, '!') WHERE id >= 100", 2);
    update.expect.matched = Some(2);
    let mut typed = stmt("INSERT INTO t (v, r) VALUES (?, ?)", 1);
    typed.params = Some(vec![Value::Bytes(b"typed".to_vec()), Value::Double(2.5)]);
    let mut from_var = stmt("INSERT INTO t (v) VALUES (@who)", 1);
    from_var.user_vars = vec![(
        "who".into(),
        Value::Text("utf8mb4".into(), "zoë".as_bytes().to_vec()),
    )];
    let items = vec![
        item(1, txn(OTHER, 1, vec![pinned])),
        Item::Blank { index: 2, term: 1 },
        item(3, txn(OTHER, 2, vec![update, typed, from_var])),
    ];
    a.apply(items.clone()).await.unwrap();
    assert_eq!(a.applied().index, Some(3));
    let mut c = db.root().await;
    let rows: Vec<(i64, String, Option<String>)> = c
        .query("SELECT id, v, CAST(ts AS CHAR) FROM test.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        rows[0],
        (100, "x!".into(), Some("2020-09-13 12:26:40.250000".into()))
    );
    assert_eq!(rows[1].0, 101);
    assert_eq!(rows[2].1, "typed");
    assert_eq!(rows[3].1, "zoë");
    // RAND() with the pinned seeds gives what MariaDB gives for those seeds.
    let r: Vec<f64> = c
        .query("SELECT r FROM test.t WHERE id IN (100, 101) ORDER BY id")
        .await
        .unwrap();
    let want: Vec<f64> = c
        .query("SET STATEMENT rand_seed1=11, rand_seed2=22 FOR SELECT RAND() UNION ALL SELECT 0")
        .await
        .unwrap();
    assert_eq!(r[0], want[0]);
    let marker: Option<(Option<u64>, u64)> = c
        .query_first("SELECT log_index, log_term FROM wolfscale.applied")
        .await
        .unwrap();
    assert_eq!(marker, Some((Some(3), 1)));
    // Re-applying after a "restart" changes nothing.
    drop(a);
    let mut b = Applier::open(service_opts(&db), ME, pending).await.unwrap();
    assert_eq!(b.applied().index, Some(3));
    b.apply(items).await.unwrap();
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM test.t").await.unwrap();
    assert_eq!(n, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergence_stops_the_applier() {
    let db = Db::start().await;
    setup(&db).await;
    let mut a = Applier::open(service_opts(&db), ME, Arc::new(PendingCommits::default()))
        .await
        .unwrap();
    a.apply(vec![item(
        1,
        txn(
            OTHER,
            1,
            vec![stmt("INSERT INTO t (id, v) VALUES (1, 'a')", 1)],
        ),
    )])
    .await
    .unwrap();
    // The leader changed 1 row; here 0 rows match.
    let err = a
        .apply(vec![item(
            2,
            txn(OTHER, 2, vec![stmt("UPDATE t SET v = 'b' WHERE id = 7", 1)]),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Diverged { index: 2, .. }),
        "{err}"
    );
    // It stays stopped there: a later run (a leader's further entries) applies nothing.
    let err = a
        .apply(vec![item(
            3,
            txn(
                OTHER,
                3,
                vec![stmt("INSERT INTO t (id, v) VALUES (9, 'z')", 1)],
            ),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Diverged { index: 2, .. }),
        "{err}"
    );
    // A deterministic error is divergence too, never skipped (a fresh applier, as
    // after a restart, whose marker is still 1).
    drop(a);
    let mut a = Applier::open(service_opts(&db), ME, Arc::new(PendingCommits::default()))
        .await
        .unwrap();
    assert_eq!(
        a.applied().index,
        Some(1),
        "the divergent entry was committed"
    );
    let err = a
        .apply(vec![item(
            2,
            txn(
                OTHER,
                2,
                vec![stmt("INSERT INTO t (id, v) VALUES (1, 'dup')", 1)],
            ),
        )])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1062"), "{err}");
    // Nothing of the failed entries was committed, and the marker did not move.
    let mut c = db.root().await;
    let v: Option<String> = c
        .query_first("SELECT v FROM test.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("a"));
    let z: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM test.t WHERE id = 9")
        .await
        .unwrap();
    assert_eq!(z, Some(0));
    assert_eq!(a.applied().index, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_transactions_commit_through_their_session_or_by_xid() {
    let db = Db::start().await;
    setup(&db).await;
    let pending = Arc::new(PendingCommits::default());
    let mut a = Applier::open(service_opts(&db), ME, pending.clone())
        .await
        .unwrap();
    // A "session" prepared its transaction and waits for its turn.
    let id = TxnId {
        incarnation: ME,
        seq: 1,
    };
    let mut session = db.root().await;
    let thread = session.id();
    session
        .query_drop(format!(
            "XA START '{x}'; INSERT INTO test.t (id, v) VALUES (1, 'mine'); XA END '{x}'; XA PREPARE '{x}'",
            x = id.xid()
        ))
        .await
        .unwrap();
    let (order_tx, order_rx) = tokio::sync::oneshot::channel::<Turn>();
    pending.register(
        id,
        Waiter {
            order: order_tx,
            backend_thread: thread,
            term: 1,
        },
    );
    let xid = id.xid();
    let waiter = tokio::spawn(async move {
        let Turn::Commit(order) = order_rx.await.unwrap() else {
            panic!("expected the commit order");
        };
        let r = session.query_drop(format!("XA COMMIT '{xid}'")).await;
        order.done.send(r.map_err(|e| e.to_string())).ok();
        order.index
    });
    a.apply(vec![item(
        1,
        txn(
            ME,
            1,
            vec![stmt("INSERT INTO t (id, v) VALUES (1, 'mine')", 1)],
        ),
    )])
    .await
    .unwrap();
    assert_eq!(waiter.await.unwrap(), 1);
    // A prepared transaction whose session is gone: committed by xid.
    let id2 = TxnId {
        incarnation: ME,
        seq: 2,
    };
    let mut gone = db.root().await;
    gone.query_drop(format!(
        "XA START '{x}'; INSERT INTO test.t (id, v) VALUES (2, 'orphan'); XA END '{x}'; XA PREPARE '{x}'",
        x = id2.xid()
    ))
    .await
    .unwrap();
    drop(gone);
    // An entry of ours whose xid is no longer prepared was committed already: skipped.
    let id3 = TxnId {
        incarnation: ME,
        seq: 3,
    };
    a.apply(vec![
        item(
            2,
            txn(
                ME,
                2,
                vec![stmt("INSERT INTO t (id, v) VALUES (2, 'orphan')", 1)],
            ),
        ),
        item(
            3,
            txn(
                ME,
                3,
                vec![stmt("INSERT INTO t (id, v) VALUES (3, 'never')", 1)],
            ),
        ),
    ])
    .await
    .unwrap();
    // Local commits run in the background: wait for them (and the marker).
    a.settle().await.unwrap();
    let _ = id3;
    let mut c = db.root().await;
    let rows: Vec<(i64, String)> = c
        .query("SELECT id, v FROM test.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, "mine".into()), (2, "orphan".into())]);
    let prepared: Vec<mysql_async::Row> = c.query("XA RECOVER").await.unwrap();
    assert!(prepared.is_empty());
    assert_eq!(a.applied().index, Some(3));
}

/// A session of this node whose connection died just after its XA PREPARE (killed as
/// stale, or its MariaDB going down) leaves a detached prepared transaction that no
/// session and no start-up recovery tracks. Its locks must not hold replay up: an
/// entry of a later term from another node that needs them is applied, and the orphan
/// is rolled back (it can never commit: its entry is not before the replayed one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_prepared_orphan_does_not_block_replay() {
    let db = Db::start().await;
    setup(&db).await;
    let pending = Arc::new(PendingCommits::default());
    let mut a = Applier::open(service_opts(&db), ME, pending.clone())
        .await
        .unwrap();
    let orphan = TxnId {
        incarnation: ME,
        seq: 7,
    };
    let mut gone = db.root().await;
    gone.query_drop(format!(
        "XA START '{x}'; INSERT INTO test.t (id, v) VALUES (5, 'orphan'); XA END '{x}'; XA PREPARE '{x}'",
        x = orphan.xid()
    ))
    .await
    .unwrap();
    drop(gone);
    // The new leader (another node, term 2) assigned id 5 to another row.
    let started = std::time::Instant::now();
    let entry = Item::Entry {
        index: 1,
        term: 2,
        entry: txn(
            OTHER,
            1,
            vec![stmt("INSERT INTO t (id, v) VALUES (5, 'theirs')", 1)],
        ),
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), a.apply(vec![entry]))
        .await
        .expect("replay waited on the orphan's lock")
        .unwrap();
    eprintln!("applied past the orphan after {:?}", started.elapsed());
    let mut c = db.root().await;
    let rows: Vec<(i64, String)> = c.query("SELECT id, v FROM test.t").await.unwrap();
    assert_eq!(rows, vec![(5, "theirs".into())]);
    let prepared: Vec<mysql_async::Row> = c.query("XA RECOVER").await.unwrap();
    assert!(prepared.is_empty(), "the orphan is still prepared");
    assert_eq!(a.applied().index, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_from_another_node_runs_and_a_repeat_after_restart_is_done() {
    let db = Db::start().await;
    let ddl = |seq, sql: &str| {
        Box::new(LogEntry::Ddl(Ddl {
            id: TxnId {
                incarnation: OTHER,
                seq,
            },
            session: session(),
            statement: stmt(sql, 0),
        }))
    };
    let mut a = Applier::open(service_opts(&db), ME, Arc::new(PendingCommits::default()))
        .await
        .unwrap();
    a.apply(vec![item(1, ddl(1, "CREATE TABLE d (a INT)"))])
        .await
        .unwrap();
    // The marker write after a DDL can be lost in a crash: the DDL comes again.
    let mut c = db.root().await;
    c.query_drop("UPDATE wolfscale.applied SET log_index = NULL")
        .await
        .unwrap();
    let mut b = Applier::open(service_opts(&db), ME, Arc::new(PendingCommits::default()))
        .await
        .unwrap();
    b.apply(vec![item(1, ddl(1, "CREATE TABLE d (a INT)"))])
        .await
        .unwrap();
    assert_eq!(b.applied().index, Some(1));
    // Later, the same error is divergence.
    let err = b
        .apply(vec![item(2, ddl(2, "CREATE TABLE d (a INT)"))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Diverged { index: 2, .. }),
        "{err}"
    );
}
