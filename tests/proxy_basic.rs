//! The proxy in front of one MariaDB, driven by mysql_async: connection phase, text and
//! prepared queries, session isolation, KILL mapping, COM_CHANGE_USER, LOCAL INFILE,
//! large packets.

mod common;

use std::time::Duration;

use common::{server_error, Node, APP_PASSWORD};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_prepared_queries() {
    let node = Node::start().await;
    let mut c = node.client(Some("test")).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))")
        .await
        .unwrap();
    c.exec_drop("INSERT INTO t (v) VALUES (?)", ("a",))
        .await
        .unwrap();
    assert_eq!(c.last_insert_id(), Some(1));
    c.exec_drop("INSERT INTO t (v) VALUES (?)", ("b",))
        .await
        .unwrap();
    let rows: Vec<(i32, String)> = c
        .exec("SELECT id, v FROM t WHERE id >= ? ORDER BY id", (1,))
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, "a".into()), (2, "b".into())]);
    let v: Option<String> = c.query_first("SELECT v FROM t WHERE id = 2").await.unwrap();
    assert_eq!(v.as_deref(), Some("b"));
    // The data is really in the backend.
    let mut direct = node.db.direct(Some("test")).await;
    let n: Option<i64> = direct.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_1045() {
    let node = Node::start().await;
    for (user, pass) in [("app", "wrong"), ("nobody", "x"), ("app", "")] {
        let err = Conn::new(node.proxy_opts(user, pass, None))
            .await
            .expect_err("must fail");
        let (code, state) = server_error(&err).expect("server error");
        assert_eq!(
            (code, state.as_str()),
            (1045, "28000"),
            "{user}/{pass}: {err}"
        );
        // The same words MariaDB uses, naming the host as MariaDB names it.
        let direct = Conn::new(common::opts(node.db.port(), user, pass, None))
            .await
            .expect_err("must fail directly too");
        assert_eq!(err.to_string(), direct.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_created_after_start_can_log_in() {
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop(
        "CREATE USER 'late'@'%' IDENTIFIED BY 'pw1'; GRANT SELECT ON test.* TO 'late'@'%'",
    )
    .await
    .unwrap();
    let mut c = Conn::new(node.proxy_opts("late", "pw1", Some("test")))
        .await
        .expect("new user");
    let one: Option<i32> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    // MariaDB enforces the user's own privileges.
    let err = c.query_drop("CREATE TABLE nope (a INT)").await.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1142), "{err}");
    // A changed password takes effect too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    root.query_drop("ALTER USER 'late'@'%' IDENTIFIED BY 'pw2'")
        .await
        .unwrap();
    assert!(Conn::new(node.proxy_opts("late", "pw2", None))
        .await
        .is_ok());
    assert!(Conn::new(node.proxy_opts("late", "pw1", None))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statements_and_multi_results() {
    let node = Node::start().await;
    let mut c = node.client(Some("test")).await;
    let mut result = c
        .query_iter("SELECT 1 AS a; SELECT 'x' AS b, 2 AS c; DO 1")
        .await
        .unwrap();
    let first: Vec<i64> = result.collect().await.unwrap();
    let second: Vec<(String, i64)> = result.collect().await.unwrap();
    assert_eq!(first, vec![1]);
    assert_eq!(second, vec![("x".into(), 2)]);
    drop(result);
    c.query_drop("CREATE PROCEDURE two() BEGIN SELECT 1; SELECT 2; END")
        .await
        .unwrap();
    let mut r = c.query_iter("CALL two()").await.unwrap();
    let a: Vec<i64> = r.collect().await.unwrap();
    let b: Vec<i64> = r.collect().await.unwrap();
    assert_eq!((a, b), (vec![1], vec![2]));
    drop(r);
    // Prepared CALL with several result sets.
    let mut r = c.exec_iter("CALL two()", ()).await.unwrap();
    let a: Vec<i64> = r.collect().await.unwrap();
    let b: Vec<i64> = r.collect().await.unwrap();
    assert_eq!((a, b), (vec![1], vec![2]));
    drop(r);
    // An error in the middle of a multi-statement ends it with the server's ERR.
    let err = c
        .query_drop("SELECT 1; SELECT * FROM missing_table; SELECT 3")
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1146));
    let ok: Option<i32> = c.query_first("SELECT 7").await.unwrap();
    assert_eq!(ok, Some(7), "session usable after an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_state_leaks_between_clients() {
    let node = Node::start().await;
    let mut a = node.client(Some("test")).await;
    a.query_drop("SET @secret = 42, SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    a.query_drop("CREATE TEMPORARY TABLE tmp (x INT)")
        .await
        .unwrap();
    a.query_drop("BEGIN").await.unwrap();
    drop(a);
    for _ in 0..3 {
        let mut b = node.client(Some("test")).await;
        let v: Option<Option<i64>> = b.query_first("SELECT @secret").await.unwrap();
        assert_eq!(v, Some(None));
        let mode: Option<String> = b.query_first("SELECT @@SESSION.sql_mode").await.unwrap();
        assert!(!mode.unwrap().contains("ANSI_QUOTES"));
        assert!(b.query_drop("SELECT * FROM tmp").await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_state_is_tracked_and_forwarded() {
    let node = Node::start().await;
    let mut c = node.client(Some("test")).await;
    c.query_drop("CREATE TABLE acc (id INT PRIMARY KEY, bal INT) ENGINE=InnoDB")
        .await
        .unwrap();
    c.query_drop("INSERT INTO acc VALUES (1, 100)")
        .await
        .unwrap();
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("UPDATE acc SET bal = 50 WHERE id = 1")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let bal: Option<i32> = c
        .query_first("SELECT bal FROM acc WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(bal, Some(100));
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("UPDATE acc SET bal = 70 WHERE id = 1")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let bal: Option<i32> = c
        .query_first("SELECT bal FROM acc WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(bal, Some(70));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_uses_proxy_connection_ids() {
    let node = Node::start().await;
    let mut victim = node.client(None).await;
    let victim_id = victim.id();
    let mut killer = node.client(None).await;
    let sleeper = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = victim.query_first("SELECT SLEEP(30)").await;
        (r, victim)
    });
    // Wait until the sleep is running on the backend.
    let mut root = node.db.root().await;
    let mut running = false;
    for _ in 0..500 {
        let n: Option<i64> = root
            .query_first("SELECT COUNT(*) FROM information_schema.processlist WHERE info = 'SELECT SLEEP(30)'")
            .await
            .unwrap();
        if n == Some(1) {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running);
    killer
        .query_drop(format!("KILL QUERY {victim_id}"))
        .await
        .expect("kill query");
    let (r, mut victim) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .unwrap()
        .unwrap();
    // MariaDB answers a SLEEP() stopped by KILL QUERY with ERR 1317.
    let err = r.unwrap_err();
    assert_eq!(server_error(&err), Some((1317, "70100".into())), "{err}");
    let alive: Option<i32> = victim.query_first("SELECT 5").await.unwrap();
    assert_eq!(alive, Some(5), "KILL QUERY keeps the connection");
    // An id the proxy never handed out is unknown, even if it is a backend thread id.
    let err = killer.query_drop("KILL 999999").await.unwrap_err();
    assert_eq!(server_error(&err), Some((1094, "HY000".into())));
    // KILL CONNECTION ends the victim's session.
    killer
        .query_drop(format!("KILL {victim_id}"))
        .await
        .unwrap();
    assert!(victim.query_drop("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_and_reset_connection() {
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop(
        "CREATE USER 'other'@'%' IDENTIFIED BY 'opw'; GRANT SELECT ON *.* TO 'other'@'%'",
    )
    .await
    .unwrap();
    let mut c = node.client(None).await;
    c.query_drop("SET @v = 1").await.unwrap();
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("other".into()))
            .with_pass(Some("opw".into())),
    )
    .await
    .expect("change user");
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("other@%"));
    let v: Option<Option<i64>> = c.query_first("SELECT @v").await.unwrap();
    assert_eq!(v, Some(None), "change user resets session state");
    c.reset().await.expect("reset connection");
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert!(who.is_some());
    let err = c
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some("app".into()))
                .with_pass(Some("bad".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1045));
    let _ = APP_PASSWORD;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_infile() {
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop("SET GLOBAL local_infile = 1")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let body: String = (0..5000).map(|i| format!("{i},name-{i}\n")).collect();
    std::fs::write(&file, &body).unwrap();
    let opts =
        mysql_async::OptsBuilder::from_opts(node.proxy_opts("app", APP_PASSWORD, Some("test")))
            .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new(vec![
                file.clone()
            ])));
    let mut c = Conn::new(opts).await.unwrap();
    c.query_drop("CREATE TABLE li (id INT PRIMARY KEY, name VARCHAR(30))")
        .await
        .unwrap();
    c.query_drop(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE li FIELDS TERMINATED BY ','",
        file.display()
    ))
    .await
    .expect("load data");
    assert_eq!(c.affected_rows(), 5000);
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM li").await.unwrap();
    assert_eq!(n, Some(5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_larger_than_16_mib() {
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop("SET GLOBAL max_allowed_packet = 67108864")
        .await
        .unwrap();
    let mut c = node.client(Some("test")).await;
    c.query_drop("CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    let blob: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.exec_drop("INSERT INTO big VALUES (1, ?)", (blob.clone(),))
        .await
        .expect("20 MiB insert");
    let back: Option<Vec<u8>> = c
        .exec_first("SELECT b FROM big WHERE id = ?", (1,))
        .await
        .unwrap();
    assert!(back.as_ref() == Some(&blob), "binary protocol round trip");
    let back: Option<Vec<u8>> = c
        .query_first("SELECT b FROM big WHERE id = 1")
        .await
        .unwrap();
    assert!(back.as_ref() == Some(&blob), "text protocol round trip");
    // A text query over 16 MiB (split into several packets on the wire).
    let hex: String = blob[..9 * 1024 * 1024]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    c.query_drop(format!("INSERT INTO big VALUES (2, x'{hex}')"))
        .await
        .expect("18 MiB statement");
    let len: Option<i64> = c
        .query_first("SELECT LENGTH(b) FROM big WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(len, Some(9 * 1024 * 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_fetch_and_field_list_and_ping() {
    let node = Node::start().await;
    let mut c = node.client(Some("test")).await;
    c.query_drop("CREATE TABLE f (a INT, b TEXT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO f VALUES (1,'x'),(2,'y')")
        .await
        .unwrap();
    c.ping().await.expect("ping");
    let rows: Vec<Row> = c.exec("SELECT * FROM f ORDER BY a", ()).await.unwrap();
    assert_eq!(rows.len(), 2);
    c.query_drop("USE mysql").await.unwrap();
    let db: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("mysql"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_over_unix_socket() {
    let node = Node::start_over_socket().await;
    let mut c = node.client(Some("test")).await;
    c.query_drop("CREATE TABLE u (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    c.exec_drop("INSERT INTO u VALUES (?, ?)", (1, "over the socket"))
        .await
        .unwrap();
    let v: Option<String> = c
        .exec_first("SELECT v FROM u WHERE id = ?", (1,))
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("over the socket"));
    // The backend session really is a socket connection (MariaDB reports host 'localhost').
    let host: Option<String> = c
        .query_first("SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID()")
        .await
        .unwrap();
    assert_eq!(host.as_deref(), Some("localhost"));
    let err = Conn::new(node.proxy_opts("app", "wrong", None))
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1045));
}
