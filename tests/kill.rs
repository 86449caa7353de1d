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
    c.query_drop("PREPARE k FROM 'KILL ?'").await.unwrap();
    c.query_drop("PREPARE k0 FROM 'KILL @victim'")
        .await
        .unwrap();
    c.query_drop("USE test").await.unwrap();
    c.query_drop(
        "CREATE PROCEDURE run_k() EXECUTE k USING @victim;
         CREATE PROCEDURE run_k0() EXECUTE k0",
    )
    .await
    .unwrap();
    // Out of the proxy's sight, in a stored procedure, the backend's stand-in for a
    // prepared KILL runs, and fails: a SIGNAL (without parameters, so one bound to
    // `?` is MariaDB's 1210).
    let err = c.query_drop("CALL run_k()").await.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1210), "{err}");
    for sql in [
        format!("KILL {proxy_id}; SELECT 1"),
        format!("SELECT 1; KILL {}", thread.unwrap()),
        "KILL @victim; SELECT 1".to_string(),
        format!("EXECUTE IMMEDIATE 'KILL {proxy_id}'"),
        // An EXECUTE of a prepared KILL must be alone too.
        "SET @x = 1; EXECUTE k USING @victim".to_string(),
        "CALL run_k0()".to_string(),
        // Prepared with `?` inside an expression: no single value to map.
        "PREPARE k2 FROM 'KILL ? + 0'".to_string(),
    ] {
        let err = c.query_drop(&sql).await.unwrap_err();
        assert_eq!(
            server_error(&err),
            Some((1235, "42000".into())),
            "{sql}: {err}"
        );
    }
    let err = c
        .prep("KILL QUERY ? + 0")
        .await
        .expect_err("no single value to map");
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

/// Where a test's connections go: straight to MariaDB, or through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Proxy,
}

async fn connect(node: &Node, via: Via, db: Option<&str>) -> Conn {
    match via {
        Via::Direct => node.db.direct(db).await,
        Via::Proxy => node.client(db).await,
    }
}

/// What a statement did: `Ok`, or a server error's code and message. A connection that
/// was killed under the statement is `KILLED`, however the client learnt it (ERR 1927
/// "Connection was killed", or the connection gone), as either can reach it first.
type Outcome = Result<(), (u16, String)>;
const KILLED: Outcome = Err((1927, String::new()));

fn outcome<T>(r: Result<T, mysql_async::Error>) -> Outcome {
    match r {
        Ok(_) => Ok(()),
        Err(mysql_async::Error::Server(e)) if e.code == 1927 => KILLED,
        Err(mysql_async::Error::Server(e)) => Err((e.code, e.message)),
        Err(_) => KILLED,
    }
}

/// `sql` (which ends the connection it runs on) on a new connection, then whether
/// that connection still answers.
async fn kill_self(node: &Node, via: Via, sql: &str) -> (Outcome, bool) {
    let mut c = connect(node, via, None).await;
    let own: Option<u64> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
    c.query_drop(format!("SET @own = {}", own.unwrap()))
        .await
        .unwrap();
    let r = outcome(c.query_drop(sql).await);
    (r, c.query_drop("SELECT 1").await.is_ok())
}

/// `run` on a killer connection while a victim sleeps (`@victim` holds the victim's
/// CONNECTION_ID() on the killer): what the killer's statement and the victim's sleep
/// each ended with.
struct Pair {
    killer: Conn,
    victim: Option<Conn>,
}

impl Pair {
    async fn new(node: &Node, via: Via) -> Pair {
        let mut victim = connect(node, via, None).await;
        let id: Option<u64> = victim.query_first("SELECT CONNECTION_ID()").await.unwrap();
        let mut killer = connect(node, via, Some("test")).await;
        killer
            .query_drop(format!("SET @victim = {}", id.unwrap()))
            .await
            .unwrap();
        Pair {
            killer,
            victim: Some(victim),
        }
    }

    async fn victim_id(&mut self) -> u64 {
        let id: Option<u64> = self.killer.query_first("SELECT @victim").await.unwrap();
        id.unwrap()
    }

    /// Start the victim's sleep; the killer then runs its statement.
    async fn start(&mut self, node: &Node) -> Sleep {
        sleeping(node, self.victim.take().unwrap()).await
    }

    /// The killer's outcome `k`, and how the victim's sleep ended.
    async fn finish(&mut self, sleep: Sleep, k: Outcome) -> (Outcome, Outcome) {
        let Ok(joined) = tokio::time::timeout(T, sleep).await else {
            panic!("the victim's sleep went on; the killer's statement ended with {k:?}");
        };
        let (r, victim) = joined.unwrap();
        self.victim = Some(victim);
        (k, outcome(r))
    }
}

type Sleep = tokio::task::JoinHandle<(Result<Option<i64>, mysql_async::Error>, Conn)>;

fn interrupted() -> (Outcome, Outcome) {
    (
        Ok(()),
        Err((1317, "Query execution was interrupted".into())),
    )
}

/// `KILL <expression>` through the proxy does what it does on MariaDB: the
/// expression's value names the connection (CONNECTION_ID() one's own, a variable
/// another session's), with MariaDB's own errors for values that name none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_expressions_like_mariadb() {
    let node = Node::start().await;
    let mut seen = Vec::new();
    for via in [Via::Direct, Via::Proxy] {
        let mut got = Vec::new();
        for sql in [
            "KILL CONNECTION_ID()",
            "KILL CONNECTION CONNECTION_ID()",
            "KILL HARD @own + 0",
        ] {
            got.push((sql.to_string(), kill_self(&node, via, sql).await));
        }
        let mut pair = Pair::new(&node, via).await;
        for sql in [
            "KILL QUERY @victim",
            "KILL SOFT QUERY (@victim)",
            "KILL QUERY IF(@victim > 0, CAST(@victim AS CHAR), 0)",
            // A subquery without tables is an expression like another to MariaDB.
            "KILL QUERY (SELECT @victim)",
        ] {
            let (k, v) = {
                let sleep = pair.start(&node).await;
                let c = &mut pair.killer;
                let k = outcome(c.query_drop(sql).await);
                pair.finish(sleep, k).await
            };
            got.push((sql.to_string(), (k, v == interrupted().1)));
        }
        // Values that name no connection, and text that is no KILL MariaDB takes.
        for sql in [
            "KILL NULL",
            "KILL -1",
            "KILL 'abc'",
            "KILL @unset",
            "KILL QUERY 1.5e9",
            "KILL ?",
            "KILL @@no_such_variable",
            "KILL (SELECT 1 UNION SELECT 2)",
        ] {
            let r = outcome(pair.killer.query_drop(sql).await);
            got.push((sql.to_string(), (r, true)));
        }
        // KILL QUERY of one's own statement interrupts the KILL itself.
        let r = outcome(pair.killer.query_drop("KILL QUERY CONNECTION_ID()").await);
        got.push(("KILL QUERY CONNECTION_ID()".into(), (r, true)));
        seen.push(got);
    }
    let (direct, proxied) = (&seen[0], &seen[1]);
    for (want, got) in direct.iter().zip(proxied) {
        assert_eq!(want, got, "through the proxy vs directly");
    }
    assert_eq!(direct.len(), proxied.len());
    // The expectations themselves, so that a MariaDB behaving otherwise shows.
    for (sql, (r, usable)) in &direct[..3] {
        assert_eq!((r, *usable), (&KILLED, false), "{sql}");
    }
    for (sql, (r, killed)) in &direct[3..7] {
        assert_eq!((r, *killed), (&Ok(()), true), "{sql}");
    }
    let code = |i: usize| direct[i].1 .0.as_ref().err().map(|e| e.0);
    assert_eq!(code(7), Some(1094)); // Unknown thread id: 0
    assert_eq!(code(12), Some(1064)); // `?` outside a prepared statement
    assert_eq!(code(14), Some(1242)); // Subquery returns more than 1 row
    assert_eq!(code(15), Some(1317));
}

/// A KILL argument the proxy cannot evaluate without running it (a subquery, a stored
/// function, a sequence) is refused, and never run: MariaDB refuses these in KILL too,
/// with ER_SUBQUERIES_NOT_SUPPORTED, which the proxy answers in the same words where it
/// knows MariaDB would. A call it does not know (a stored function of the current
/// database, or an unlisted built-in) gets the proxy's own refusal naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unevaluable_kill_arguments_are_refused() {
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop(
        "CREATE TABLE test.calls (n INT);
         CREATE FUNCTION test.f() RETURNS BIGINT MODIFIES SQL DATA
           BEGIN INSERT INTO test.calls VALUES (1); RETURN 0; END;
         CREATE SEQUENCE test.s",
    )
    .await
    .unwrap();
    // (statement, whether the proxy answers as MariaDB does)
    let refused = [
        (
            "KILL (SELECT ID FROM information_schema.PROCESSLIST LIMIT 1)",
            true,
        ),
        ("KILL (WITH x AS (SELECT 1) SELECT * FROM x)", true),
        ("KILL QUERY (SELECT test.f())", true),
        ("KILL QUERY test.f()", true),
        ("KILL NEXT VALUE FOR s", true),
        ("KILL LASTVAL(s)", true),
        ("KILL QUERY f()", false),
        ("KILL QUERY 1 + f()", false),
        ("KILL QUERY (SELECT f())", false),
    ];
    let mut seen = Vec::new();
    for via in [Via::Direct, Via::Proxy] {
        let mut c = connect(&node, via, Some("test")).await;
        let mut got = Vec::new();
        for (sql, _) in refused {
            got.push(outcome(c.query_drop(sql).await));
        }
        // The connection is fine.
        let one: Option<i32> = c.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1));
        seen.push(got);
    }
    let mariadb = Err((
        1970,
        "KILL does not support subqueries or stored functions".to_string(),
    ));
    for (i, (sql, same)) in refused.iter().enumerate() {
        assert_eq!(seen[0][i], mariadb, "directly: {sql}");
        if *same {
            assert_eq!(seen[1][i], mariadb, "through the proxy: {sql}");
        } else {
            let (code, msg) = seen[1][i].clone().unwrap_err();
            assert_eq!(code, 1235, "{sql}: {msg}");
            assert!(msg.contains("f()") && msg.contains("side effects"), "{msg}");
        }
    }
    // The stored function never ran, on either side.
    let calls: Option<i64> = root
        .query_first("SELECT COUNT(*) FROM test.calls")
        .await
        .unwrap();
    assert_eq!(calls, Some(0));
}

/// Prepared KILLs, in the binary protocol (COM_STMT_PREPARE + COM_STMT_EXECUTE, with
/// the id bound to `?` as an integer, a string or NULL, or written in the statement)
/// and in the text protocol (PREPARE … FROM 'KILL …', EXECUTE … USING), do through the
/// proxy what they do on MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_kill_like_mariadb() {
    let node = Node::start().await;
    let mut seen = Vec::new();
    for via in [Via::Direct, Via::Proxy] {
        let mut got: Vec<(String, (Outcome, Outcome))> = Vec::new();
        let mut pair = Pair::new(&node, via).await;
        let id = pair.victim_id().await;
        let stmt = pair.killer.prep("KILL QUERY ?").await.unwrap();
        assert_eq!(stmt.num_params(), 1, "{via:?}");
        let s = stmt.clone();
        let r = {
            let sleep = pair.start(&node).await;
            let c = &mut pair.killer;
            let k = outcome(c.exec_drop(&s, (id,)).await);
            pair.finish(sleep, k).await
        };
        got.push(("bound integer".into(), r));
        let s = stmt.clone();
        let r = {
            let sleep = pair.start(&node).await;
            let c = &mut pair.killer;
            let k = outcome(c.exec_drop(&s, (id.to_string(),)).await);
            pair.finish(sleep, k).await
        };
        got.push(("bound string".into(), r));
        let r = {
            let sleep = pair.start(&node).await;
            let c = &mut pair.killer;
            let k = outcome(c.exec_drop(format!("KILL QUERY {id}"), ()).await);
            pair.finish(sleep, k).await
        };
        got.push(("literal".into(), r));
        let r = {
            let sleep = pair.start(&node).await;
            let c = &mut pair.killer;
            let k = outcome(c.exec_drop("KILL QUERY @victim", ()).await);
            pair.finish(sleep, k).await
        };
        got.push(("variable".into(), r));
        let c = &mut pair.killer;
        for (what, r) in [
            ("NULL", outcome(c.exec_drop(&stmt, (None::<u64>,)).await)),
            (
                "unknown",
                outcome(c.exec_drop(&stmt, (0x7FFF_FFF0u64,)).await),
            ),
            ("negative", outcome(c.exec_drop(&stmt, (-5i64,)).await)),
            (
                "own query",
                outcome(c.exec_drop("KILL QUERY CONNECTION_ID()", ()).await),
            ),
        ] {
            got.push((what.into(), (r, Ok(()))));
        }
        c.close(stmt).await.unwrap();
        // The text protocol.
        c.query_drop("PREPARE s FROM 'KILL QUERY ?'").await.unwrap();
        let r = {
            let sleep = pair.start(&node).await;
            let c = &mut pair.killer;
            let k = outcome(c.query_drop("EXECUTE s USING @victim").await);
            pair.finish(sleep, k).await
        };
        got.push(("EXECUTE USING".into(), r));
        let c = &mut pair.killer;
        for sql in [
            "EXECUTE s",
            "EXECUTE s USING @victim, @victim",
            "EXECUTE s USING (SELECT 1)",
            "EXECUTE s USING NULL",
        ] {
            let r = outcome(c.query_drop(sql).await);
            got.push((sql.into(), (r, Ok(()))));
        }
        // A new statement of the name is no KILL any more.
        c.query_drop("PREPARE s FROM 'SELECT ?'").await.unwrap();
        let v: Option<u64> = c.query_first("EXECUTE s USING @victim").await.unwrap();
        assert_eq!(v, Some(id), "{via:?}");
        c.query_drop("PREPARE `S` FROM 'KILL QUERY @victim'")
            .await
            .unwrap();
        let r = {
            let sleep = pair.start(&node).await;
            let c = &mut pair.killer;
            let k = outcome(c.query_drop("EXECUTE s").await);
            pair.finish(sleep, k).await
        };
        got.push(("EXECUTE of a KILL naming a variable".into(), r));
        let c = &mut pair.killer;
        c.query_drop("DEALLOCATE PREPARE s").await.unwrap();
        let r = outcome(c.query_drop("EXECUTE s").await);
        got.push(("after DEALLOCATE".into(), (r, Ok(()))));
        // Killing one's own connection, prepared both ways.
        let mut own = connect(&node, via, None).await;
        let me: Option<u64> = own.query_first("SELECT CONNECTION_ID()").await.unwrap();
        let r = outcome(own.exec_drop("KILL ?", (me.unwrap(),)).await);
        got.push((
            "own connection, bound".into(),
            (r, outcome(own.query_drop("SELECT 1").await)),
        ));
        let mut own = connect(&node, via, None).await;
        own.query_drop("PREPARE k FROM 'KILL CONNECTION_ID()'")
            .await
            .unwrap();
        let r = outcome(own.query_drop("EXECUTE k").await);
        got.push((
            "own connection, text".into(),
            (r, outcome(own.query_drop("SELECT 1").await)),
        ));
        seen.push(got);
    }
    let (direct, proxied) = (&seen[0], &seen[1]);
    assert_eq!(direct.len(), proxied.len());
    for (want, got) in direct.iter().zip(proxied) {
        assert_eq!(want, got, "through the proxy vs directly");
    }
    // What MariaDB does, so that a change there shows.
    for i in [0, 1, 2, 3, 8, 13] {
        assert_eq!(direct[i].1, interrupted(), "{}", direct[i].0);
    }
    let code = |i: usize| direct[i].1 .0.as_ref().err().map(|e| e.0);
    assert_eq!(
        [4, 5, 6, 7, 9, 10, 11, 12, 14].map(code),
        [1094, 1094, 1094, 1317, 1210, 1210, 1970, 1094, 1243].map(Some)
    );
    for i in [15, 16] {
        assert_eq!(direct[i].1 .0, KILLED, "{}", direct[i].0);
        assert!(direct[i].1 .1.is_err(), "{}", direct[i].0);
    }
}

/// KILL CONNECTION of another session in the middle of its statement: the victim learns
/// that its connection was killed (ERR 1927, or the connection gone), as directly, and
/// nothing malformed reaches it (main.lock_kill, main.information_schema).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_connection_mid_statement_like_mariadb() {
    let node = Node::start().await;
    let mut seen = Vec::new();
    for via in [Via::Direct, Via::Proxy] {
        let mut pair = Pair::new(&node, via).await;
        let sleep = pair.start(&node).await;
        let k = outcome(pair.killer.query_drop("KILL CONNECTION @victim").await);
        let (k, v) = pair.finish(sleep, k).await;
        let mut victim = pair.victim.take().unwrap();
        let after = outcome(victim.query_drop("SELECT 1").await);
        seen.push((k, v, after));
    }
    assert_eq!(seen[0], (Ok(()), KILLED, KILLED), "directly");
    assert_eq!(seen[1], seen[0], "through the proxy");
}

/// A client that goes away while its statement waits (here for a user lock) gets that
/// statement stopped, as directly: MariaDB notices the closed connection, and through
/// the proxy the backend connection is closed when the client's is (main.dirty_close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_statement_stops_it() {
    let node = Node::start().await;
    let mut holder = node.client(None).await;
    let got: Option<i32> = holder
        .query_first("SELECT GET_LOCK('dangling', 0)")
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    let waiting = "STATE = 'User lock' AND INFO = \"SELECT GET_LOCK('dangling', 3600)\"";
    for port in [node.db.port(), node.proxy_port()] {
        let mut raw = Raw::login(port, "app", APP_PASSWORD).await;
        raw.send(0, b"\x03SELECT GET_LOCK('dangling', 3600)").await;
        let started = common::wait_until(T, || async { count(&node, waiting).await == 1 }).await;
        assert!(started, "port {port}: the lock wait never started");
        drop(raw); // no COM_QUIT: the socket just closes
        let stopped = common::wait_until(T, || async { count(&node, waiting).await == 0 }).await;
        assert!(
            stopped,
            "port {port}: the lock wait went on after its client left"
        );
    }
}

/// COM_CHANGE_USER to an account MariaDB refuses (locked): the ERR, and the connection
/// goes on as the old account with its session state reset (a user variable gone), as
/// directly (main.lock_user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_user_keeps_the_connection_like_mariadb() {
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop("CREATE USER locked@'%' IDENTIFIED BY 'pw' ACCOUNT LOCK")
        .await
        .unwrap();
    let mut seen = Vec::new();
    for port in [node.db.port(), node.proxy_port()] {
        let mut raw = Raw::login(port, "app", APP_PASSWORD).await;
        raw.query("SET @kept = 1").await.unwrap();
        let refused = raw.change_user("locked", "pw").await;
        let after = raw
            .query("SELECT CURRENT_USER(), @kept IS NULL")
            .await
            .map_err(|e| e.0);
        seen.push((refused.map_err(|e| e.0), after));
    }
    assert_eq!(
        seen[0],
        (
            Err(4151), // ER_ACCOUNT_HAS_BEEN_LOCKED
            Ok(vec![vec![Some("app@%".to_string()), Some("1".to_string())]])
        ),
        "directly"
    );
    assert_eq!(seen[1], seen[0], "through the proxy");
}

/// COM_CHANGE_USER with credentials the proxy refuses: the connection goes on as the
/// old account, MariaDB counts the failure (three per connection, then ERR 1047 for
/// any COM_CHANGE_USER), as directly (main.change_user_notembedded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_change_users_are_counted_like_mariadb() {
    let node = Node::start().await;
    let mut seen = Vec::new();
    for port in [node.db.port(), node.proxy_port()] {
        let mut raw = Raw::login(port, "app", APP_PASSWORD).await;
        raw.query("SET @kept = 1").await.unwrap();
        let mut got = Vec::new();
        for (user, pass) in [
            ("foo", "bar"),
            ("foo", ""),
            ("app", APP_PASSWORD),
            ("foo", "bar"),
            ("foo", "bar"),
            ("app", APP_PASSWORD),
        ] {
            let r = raw.change_user(user, pass).await;
            let who = raw.query("SELECT CURRENT_USER()").await.map_err(|e| e.0);
            got.push((r, who));
        }
        seen.push(got);
    }
    let app = || Ok(vec![vec![Some("app@%".to_string())]]);
    let codes: Vec<_> = seen[0]
        .iter()
        .map(|(r, who)| (r.as_ref().err().map(|e| e.0), who.clone()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (Some(1045), app()),
            (Some(1045), app()),
            (None, app()),
            (Some(1045), app()),
            (Some(1047), app()),
            (Some(1047), app()),
        ],
        "directly"
    );
    // Through the proxy, the same, messages included (the host a client sees).
    for (i, (want, got)) in seen[0].iter().zip(&seen[1]).enumerate() {
        assert_eq!(want, got, "change_user #{i}");
    }
}
