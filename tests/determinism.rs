//! Deterministic replay (ARCHITECTURE §2): writes through the leader's proxy whose
//! results depend on the clock, RAND, auto-increment counters, LAST_INSERT_ID,
//! UUID(), user variables, triggers, prepared-statement parameters, transactions,
//! DDL and accounts must leave the three MariaDBs identical.
//!
//! Every scenario writes through the leader, then asserts that the checksums of
//! every table agree (`converged_report`) and compares the values that matter
//! directly on each node's MariaDB (`same_on_all`).

mod common;

use std::time::Duration;

use common::{converged_report, full_cluster, leader_of, same_on_all, server_error, FullNode};
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};

async fn cluster() -> (Vec<FullNode>, usize) {
    let nodes = full_cluster(3).await;
    let l = leader_of(&nodes);
    (nodes, l)
}

async fn q(c: &mut Conn, sql: &str) {
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn text(v: &Value) -> String {
    common::cell_text(v).unwrap_or_else(|| "NULL".into())
}

/// The leader's MariaDB, directly (what the client's statements did there).
async fn leader_rows(nodes: &[FullNode], l: usize, sql: &str) -> Vec<Vec<Value>> {
    let mut c = Conn::new(common::opts(
        nodes[l].raft.db.port(),
        "root",
        "",
        Some("test"),
    ))
    .await
    .unwrap();
    let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap();
    rows.into_iter().map(|r| r.unwrap()).collect()
}

// --------------------------------------------------------------------------------
// Clock

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn now_and_current_timestamp_defaults_and_on_update() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE ts (
            id INT PRIMARY KEY,
            a DATETIME(6) DEFAULT NOW(6),
            b TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
            e DATETIME DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
            c DATETIME(6),
            d TIMESTAMP(6) NULL,
            s VARCHAR(80),
            v INT)",
    )
    .await;
    q(
        &mut c,
        "INSERT INTO ts (id, c, d, s, v) VALUES
           (1, NOW(6), CURRENT_TIMESTAMP(6), CONCAT(CURDATE(), ' ', CURTIME(6)), 0),
           (2, UTC_TIMESTAMP(6), LOCALTIMESTAMP(6), UNIX_TIMESTAMP(NOW(6)), 0)",
    )
    .await;
    q(&mut c, "INSERT INTO ts (id, v) VALUES (3, 0)").await;
    q(&mut c, "BEGIN").await;
    q(
        &mut c,
        "INSERT INTO ts (id, c, v) VALUES (4, CURRENT_TIMESTAMP(6), 0)",
    )
    .await;
    q(&mut c, "UPDATE ts SET v = v + 1 WHERE id = 1").await;
    q(&mut c, "COMMIT").await;
    // A session time zone changes NOW() into a DATETIME: it is pinned too.
    q(&mut c, "SET time_zone = '+05:30'").await;
    q(
        &mut c,
        "INSERT INTO ts (id, c, s, v) VALUES (5, NOW(6), @@session.time_zone, 0)",
    )
    .await;
    q(&mut c, "UPDATE ts SET v = v + 1 WHERE id IN (2, 5)").await;

    converged_report(&nodes, "test").await;
    let rows = same_on_all(
        &nodes,
        "SELECT id, a, b, e, c, d, s, v, UNIX_TIMESTAMP(b) FROM ts ORDER BY id",
    )
    .await;
    assert_eq!(rows.len(), 5);
    // The defaults were filled, and ON UPDATE moved `b` of the updated rows.
    for r in &rows {
        assert_ne!(r[1], Value::NULL, "default NOW(6) filled: {r:?}");
        assert_ne!(r[2], Value::NULL);
    }
    let b_of = |id: usize| text(&rows[id - 1][2]);
    assert!(
        b_of(1) > b_of(3),
        "ON UPDATE CURRENT_TIMESTAMP moved row 1 after row 3's insert: {rows:?}"
    );
    assert_eq!(text(&rows[4][6]), "+05:30");
}

// --------------------------------------------------------------------------------
// RAND()

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rand_in_insert_values_and_update_of_the_whole_table() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE r (id INT PRIMARY KEY, x DOUBLE, y DOUBLE, z INT)",
    )
    .await;
    let values: Vec<String> = (1..=40)
        .map(|i| format!("({i}, RAND(), RAND(), FLOOR(RAND() * 1000000))"))
        .collect();
    q(
        &mut c,
        &format!("INSERT INTO r (id, x, y, z) VALUES {}", values.join(", ")),
    )
    .await;
    q(&mut c, "BEGIN").await;
    q(
        &mut c,
        "INSERT INTO r (id, x, y) VALUES (41, RAND(), RAND(3))",
    )
    .await;
    q(&mut c, "UPDATE r SET y = RAND() WHERE id <= 10").await;
    q(&mut c, "COMMIT").await;
    q(&mut c, "UPDATE r SET z = FLOOR(RAND() * 1000) ORDER BY id").await;
    // A whole-table UPDATE with a per-row RAND(): the rows are visited in primary-key
    // order by InnoDB on every node. ARCHITECTURE §2 allows refusing it ("per-row
    // RAND() ... refused unless ordered by a unique key"); if it runs, it must
    // replay identically.
    match c.query_drop("UPDATE r SET x = RAND()").await {
        Ok(()) => eprintln!("UPDATE r SET x = RAND() was accepted"),
        Err(e) => {
            let (code, _) = server_error(&e).unwrap_or_else(|| panic!("{e}"));
            assert_eq!(code, 1592, "{e}");
            assert!(e.to_string().contains("RAND"), "{e}");
            eprintln!("UPDATE r SET x = RAND() was refused: {e}");
        }
    }
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, x, y, z FROM r ORDER BY id").await;
    assert_eq!(rows.len(), 41);
    let mut xs: Vec<String> = rows.iter().map(|r| text(&r[1])).collect();
    xs.sort();
    xs.dedup();
    assert!(xs.len() > 35, "RAND() gave random values: {xs:?}");
}

// --------------------------------------------------------------------------------
// AUTO_INCREMENT

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_increment_multi_row_and_concurrent_inserts() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE ai (id BIGINT AUTO_INCREMENT PRIMARY KEY, who INT, n INT)",
    )
    .await;
    q(
        &mut c,
        "INSERT INTO ai (who, n) VALUES (0, 1), (0, 2), (0, 3), (0, 4), (0, 5)",
    )
    .await;
    // Explicit ids among generated ones.
    q(
        &mut c,
        "INSERT INTO ai (id, who, n) VALUES (NULL, 0, 6), (100, 0, 7), (NULL, 0, 8)",
    )
    .await;
    // A rolled-back insert consumes ids on the leader only: the next ids must still
    // be the leader's on every node.
    let max_before = leader_rows(&nodes, l, "SELECT MAX(id) FROM ai").await;
    let max_before: u64 = text(&max_before[0][0]).parse().unwrap();
    q(&mut c, "BEGIN").await;
    q(&mut c, "INSERT INTO ai (who, n) VALUES (0, -1), (0, -2)").await;
    q(&mut c, "ROLLBACK").await;
    q(&mut c, "INSERT INTO ai (who, n) VALUES (0, 9), (0, 10)").await;
    let leader_ids = leader_rows(
        &nodes,
        l,
        "SELECT id FROM ai WHERE n IN (9, 10) ORDER BY id",
    )
    .await;
    let leader_ids: Vec<u64> = leader_ids
        .iter()
        .map(|r| text(&r[0]).parse().unwrap())
        .collect();
    assert!(
        leader_ids[0] >= max_before + 3 && leader_ids[1] == leader_ids[0] + 1,
        "the leader skipped the two rolled-back ids after {max_before}: {leader_ids:?}"
    );

    // Four clients at once: autocommit single- and multi-row inserts, and explicit
    // transactions whose commit order need not be their id order.
    let mut tasks = Vec::new();
    for who in 1..=4 {
        let mut conn = nodes[l].client(Some("test")).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                match i % 3 {
                    0 => conn
                        .query_drop(format!("INSERT INTO ai (who, n) VALUES ({who}, {i})"))
                        .await
                        .unwrap(),
                    1 => conn
                        .query_drop(format!(
                            "INSERT INTO ai (who, n) VALUES ({who}, {i}), ({who}, {i}), ({who}, {i})"
                        ))
                        .await
                        .unwrap(),
                    _ => {
                        conn.query_drop("BEGIN").await.unwrap();
                        conn.query_drop(format!(
                            "INSERT INTO ai (who, n) VALUES ({who}, {i}), ({who}, {i})"
                        ))
                        .await
                        .unwrap();
                        conn.query_drop(format!("INSERT INTO ai (who, n) VALUES ({who}, {i})"))
                            .await
                            .unwrap();
                        conn.query_drop("COMMIT").await.unwrap();
                    }
                }
            }
            conn.disconnect().await.ok();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, who, n FROM ai ORDER BY id").await;
    // Per client: 5 single-row inserts, 5 three-row inserts, 5 transactions of 3 rows.
    assert_eq!(rows.len(), 10 + 4 * 35);
}

// --------------------------------------------------------------------------------
// LAST_INSERT_ID()

/// Steps of two sessions (0 and 1) around LAST_INSERT_ID().
const LII_STEPS: &[(usize, &str)] = &[
    (0, "CREATE TABLE parent (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))"),
    (0, "CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, parent_id BIGINT, v VARCHAR(20))"),
    (0, "CREATE TABLE seq (name VARCHAR(10) PRIMARY KEY, n BIGINT)"),
    (0, "INSERT INTO seq VALUES ('a', 100)"),
    // A gap on the leader only, so that ids differ from a fresh counter's.
    (0, "BEGIN"),
    (0, "INSERT INTO parent (name) VALUES ('gone')"),
    (0, "ROLLBACK"),
    (0, "INSERT INTO parent (name) VALUES ('p1')"),
    (0, "INSERT INTO child (parent_id, v) VALUES (LAST_INSERT_ID(), 'c1'), (LAST_INSERT_ID(), 'c2')"),
    (0, "BEGIN"),
    (0, "INSERT INTO parent (name) VALUES ('p2')"),
    (0, "INSERT INTO child (parent_id, v) VALUES (LAST_INSERT_ID(), 'c3')"),
    (0, "COMMIT"),
    // Another session's inserts in between must not matter.
    (1, "INSERT INTO parent (name) VALUES ('other')"),
    (0, "INSERT INTO parent (name) VALUES ('p3')"),
    (0, "INSERT INTO child (parent_id, v) VALUES (LAST_INSERT_ID(), 'c4')"),
    // LAST_INSERT_ID(expr): a sequence in a table, as MariaDB's manual suggests.
    (0, "UPDATE seq SET n = LAST_INSERT_ID(n + 1) WHERE name = 'a'"),
    (0, "INSERT INTO child (parent_id, v) VALUES (LAST_INSERT_ID(), 'from-seq')"),
    (0, "INSERT INTO child (parent_id, v) VALUES (LAST_INSERT_ID(555), 'expr')"),
    (0, "INSERT INTO child (parent_id, v) VALUES (LAST_INSERT_ID(), 'after-expr')"),
    (0, "INSERT INTO parent (id, name) VALUES (LAST_INSERT_ID() + 1000, 'explicit')"),
];

/// Run [`LII_STEPS`] on two connections; LAST_INSERT_ID() of session 0 after each.
async fn run_lii_steps(s0: &mut Conn, s1: &mut Conn) -> Vec<(String, u64)> {
    let mut seen = Vec::new();
    for (who, sql) in LII_STEPS {
        let c = if *who == 0 { &mut *s0 } else { &mut *s1 };
        q(c, sql).await;
        let id: Option<u64> = s0.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
        seen.push((sql.to_string(), id.unwrap_or(0)));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_insert_id_in_following_inserts_and_last_insert_id_expr() {
    let (nodes, l) = cluster().await;
    let mut s0 = nodes[l].client(Some("test")).await;
    let mut s1 = nodes[l].client(Some("test")).await;
    run_lii_steps(&mut s0, &mut s1).await;
    converged_report(&nodes, "test").await;
    let rows = same_on_all(
        &nodes,
        "SELECT c.id, c.v, c.parent_id, p.name FROM child c LEFT JOIN parent p ON p.id = c.parent_id ORDER BY c.id",
    )
    .await;
    let parent_of = |v: &str| -> String {
        rows.iter()
            .find(|r| text(&r[1]) == v)
            .map(|r| text(&r[3]))
            .unwrap_or_default()
    };
    assert_eq!(parent_of("c1"), "p1", "{}", common::show_rows(&rows));
    assert_eq!(parent_of("c2"), "p1");
    assert_eq!(parent_of("c3"), "p2");
    same_on_all(&nodes, "SELECT id, name FROM parent ORDER BY id").await;
    same_on_all(&nodes, "SELECT name, n FROM seq").await;
}

/// What the client sees of LAST_INSERT_ID() through the proxy is what MariaDB gives
/// a direct client: the same steps in a scratch schema on the leader's MariaDB,
/// directly (never replicated, and not compared between nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_insert_id_seen_by_the_client_is_mariadbs() {
    let (nodes, l) = cluster().await;
    let mut s0 = nodes[l].client(Some("test")).await;
    let mut s1 = nodes[l].client(Some("test")).await;
    let through_proxy = run_lii_steps(&mut s0, &mut s1).await;
    let mut root = nodes[l].raft.db.root().await;
    q(&mut root, "CREATE DATABASE lii_reference").await;
    let direct = |db: &str| common::opts(nodes[l].raft.db.port(), "root", "", Some(db));
    let mut d0 = Conn::new(direct("lii_reference")).await.unwrap();
    let mut d1 = Conn::new(direct("lii_reference")).await.unwrap();
    let reference = run_lii_steps(&mut d0, &mut d1).await;
    for (p, r) in through_proxy.iter().zip(&reference) {
        assert_eq!(
            p, r,
            "LAST_INSERT_ID() after the step, through the proxy vs MariaDB"
        );
    }
    let ours = leader_rows(
        &nodes,
        l,
        "SELECT id, parent_id, v FROM test.child ORDER BY id",
    )
    .await;
    let theirs = leader_rows(
        &nodes,
        l,
        "SELECT id, parent_id, v FROM lii_reference.child ORDER BY id",
    )
    .await;
    assert_eq!(common::show_rows(&ours), common::show_rows(&theirs));
    converged_report(&nodes, "test").await;
}

/// LAST_INSERT_ID() read below the statement text (inside a procedure): nothing in
/// the CALL's text mentions it, so it is not pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_insert_id_read_inside_a_procedure() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE parent (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))",
    )
    .await;
    q(
        &mut c,
        "CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, parent_id BIGINT, v VARCHAR(20))",
    )
    .await;
    q(
        &mut c,
        "CREATE PROCEDURE add_child(IN v VARCHAR(20)) INSERT INTO child (parent_id, v) VALUES (LAST_INSERT_ID(), v)",
    )
    .await;
    q(&mut c, "BEGIN").await;
    q(&mut c, "INSERT INTO parent (name) VALUES ('gone')").await;
    q(&mut c, "ROLLBACK").await;
    q(&mut c, "INSERT INTO parent (name) VALUES ('p1')").await;
    match c.query_drop("CALL add_child('c1')").await {
        Ok(()) => {}
        Err(e) => eprintln!("CALL refused: {e}"),
    }
    converged_report(&nodes, "test").await;
}

// --------------------------------------------------------------------------------
// INSERT … ON DUPLICATE KEY UPDATE (WordPress wp_options)

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insert_on_duplicate_key_update_wp_options() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE wp_options (
            option_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
            option_name VARCHAR(191) NOT NULL DEFAULT '',
            option_value LONGTEXT NOT NULL,
            autoload VARCHAR(20) NOT NULL DEFAULT 'yes',
            PRIMARY KEY (option_id),
            UNIQUE KEY option_name (option_name),
            KEY autoload (autoload)
        ) DEFAULT CHARSET=utf8mb4",
    )
    .await;
    let upsert = |name: &str, value: &str| {
        format!(
            "INSERT INTO `wp_options` (`option_name`, `option_value`, `autoload`) VALUES ('{name}', '{value}', 'yes') \
             ON DUPLICATE KEY UPDATE `option_name` = VALUES(`option_name`), `option_value` = VALUES(`option_value`), `autoload` = VALUES(`autoload`)"
        )
    };
    let mut affected = Vec::new();
    for (name, value) in [
        ("siteurl", "http://a.example"),
        ("home", "http://a.example"),
        ("siteurl", "http://b.example"),
        ("siteurl", "http://b.example"),
        ("_transient_x", "1"),
    ] {
        c.query_drop(upsert(name, value)).await.unwrap();
        affected.push(c.affected_rows());
    }
    // A gap on the leader only.
    q(&mut c, "BEGIN").await;
    q(&mut c, &upsert("rolled_back", "x")).await;
    q(&mut c, "ROLLBACK").await;
    q(&mut c, "BEGIN").await;
    q(&mut c, &upsert("_transient_x", "2")).await;
    q(&mut c, &upsert("blogname", "WolfScale")).await;
    q(&mut c, "COMMIT").await;
    q(&mut c, &upsert("admin_email", "a@example.com")).await;
    q(
        &mut c,
        "INSERT INTO wp_options (option_name, option_value) VALUES ('cron', 'a'), ('home', 'http://c.example') \
         ON DUPLICATE KEY UPDATE option_value = VALUES(option_value)",
    )
    .await;
    assert_eq!(affected, vec![1, 1, 2, 0, 1], "ODKU affected rows");

    converged_report(&nodes, "test").await;
    let rows = same_on_all(
        &nodes,
        "SELECT option_id, option_name, option_value, autoload FROM wp_options ORDER BY option_id",
    )
    .await;
    assert_eq!(rows.len(), 6, "{}", common::show_rows(&rows));

    // Two unique keys the rows set: InnoDB keeps no lock on the primary key value it
    // found free when the second key collides, so a concurrent insert of that value can
    // be logged first and the followers would update another row (tests/ordering.rs
    // shows the race). Refused, text and prepared, and nothing is logged.
    q(
        &mut c,
        "CREATE TABLE kv (k VARCHAR(16) PRIMARY KEY, v INT NOT NULL, hits INT NOT NULL DEFAULT 0, UNIQUE KEY by_v (v))",
    )
    .await;
    q(&mut c, "INSERT INTO kv (k, v) VALUES ('a', 1)").await;
    let text = c
        .query_drop("INSERT INTO kv (k, v) VALUES ('b', 1) ON DUPLICATE KEY UPDATE hits = hits + 1")
        .await
        .unwrap_err();
    let msg = text.to_string();
    assert_eq!(server_error(&text).map(|e| e.0), Some(1592), "{msg}");
    assert!(
        msg.contains("ON DUPLICATE KEY UPDATE") && msg.contains("PRIMARY, by_v"),
        "{msg}"
    );
    q(&mut c, "BEGIN").await;
    let prepared = c
        .exec_drop(
            "INSERT INTO kv (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE hits = hits + 1",
            ("a", 2),
        )
        .await
        .unwrap_err();
    assert_eq!(server_error(&prepared).map(|e| e.0), Some(1592));
    // The transaction goes on; an upsert on the one key the rows set is accepted.
    q(&mut c, "INSERT INTO kv (k, v) VALUES ('c', 3)").await;
    q(&mut c, "COMMIT").await;
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT k, v, hits FROM kv ORDER BY k").await;
    assert_eq!(
        common::show_rows(&rows),
        r#"[("a", "1", "0"), ("c", "3", "0")]"#
    );
}

// --------------------------------------------------------------------------------
// UUID()

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uuid_in_insert_is_the_same_on_every_node() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE u (id INT PRIMARY KEY, a CHAR(36), b VARCHAR(40), s BIGINT UNSIGNED)",
    )
    .await;
    q(
        &mut c,
        "INSERT INTO u VALUES (1, UUID(), UUID(), UUID_SHORT()), (2, UUID(), 'x', UUID_SHORT())",
    )
    .await;
    q(&mut c, "BEGIN").await;
    q(
        &mut c,
        "INSERT INTO u (id, a, b) VALUES (3, UUID(), CONCAT('k-', UUID()))",
    )
    .await;
    q(&mut c, "UPDATE u SET b = UUID() WHERE id = 2").await;
    q(&mut c, "COMMIT").await;
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, a, b, s FROM u ORDER BY id").await;
    let mut all: Vec<String> = rows
        .iter()
        .flat_map(|r| [text(&r[1]), text(&r[2])])
        .collect();
    for u in &all {
        let bare = u.trim_start_matches("k-");
        assert_eq!(bare.len(), 36, "looks like a UUID: {u}");
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "every UUID() call gave its own value");
    assert_ne!(rows[0][3], rows[1][3], "UUID_SHORT() values differ per row");
}

/// A column default that is evaluated on each node (`DEFAULT (UUID())`) would
/// diverge at every insert: it must be refused at the DDL, or replay the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uuid_column_default_is_refused_or_replays_the_same() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    match c
        .query_drop("CREATE TABLE ud (id INT PRIMARY KEY, u CHAR(36) DEFAULT (UUID()))")
        .await
    {
        Err(e) => {
            let (code, _) = server_error(&e).unwrap_or_else(|| panic!("{e}"));
            assert_eq!(code, 1592, "{e}");
            assert!(e.to_string().contains("UUID()"), "{e}");
        }
        Ok(()) => {
            q(&mut c, "INSERT INTO ud (id) VALUES (1), (2)").await;
            converged_report(&nodes, "test").await;
        }
    }
    converged_report(&nodes, "test").await;
}

// --------------------------------------------------------------------------------
// User variables

const UV_TABLE: &str = "CREATE TABLE uv (
    id INT PRIMARY KEY, i BIGINT, d DECIMAL(12,3), f DOUBLE,
    s VARCHAR(60) CHARACTER SET utf8mb4, l VARCHAR(60) CHARACTER SET latin1,
    b VARBINARY(60), n INT)";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_variables_are_carried_with_the_statement() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, UV_TABLE).await;
    q(
        &mut c,
        "SET @i = 42, @neg = -7, @d = 3.125, @f = 1.5e10, @s = 'Grüße, café ☃ 🐺', @l = 'Grüße, café', @nothing = NULL",
    )
    .await;
    q(
        &mut c,
        "INSERT INTO uv (id, i, d, f, s, l, n) VALUES (1, @i, @d, @f, @s, @l, @nothing)",
    )
    .await;
    q(&mut c, "INSERT INTO uv (id, i) VALUES (2, @neg)").await;
    q(&mut c, "SET @x = @i + 1").await;
    q(&mut c, "BEGIN").await;
    q(&mut c, "INSERT INTO uv (id, i, s) VALUES (3, @x, @s)").await;
    q(
        &mut c,
        "UPDATE uv SET s = CONCAT(@s, '!') WHERE id = @i - 40",
    )
    .await;
    q(&mut c, "COMMIT").await;
    // A variable changed after being used: each statement carries its own value.
    q(&mut c, "SET @i = 1000").await;
    q(&mut c, "INSERT INTO uv (id, i) VALUES (4, @i)").await;

    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, i, d, f, s, l, b, n FROM uv ORDER BY id").await;
    assert_eq!(text(&rows[0][1]), "42");
    assert_eq!(text(&rows[0][2]), "3.125");
    assert_eq!(text(&rows[0][4]), "Grüße, café ☃ 🐺");
    assert_eq!(text(&rows[0][5]), "Grüße, café");
    assert_eq!(rows[0][7], Value::NULL);
    assert_eq!(text(&rows[1][1]), "-7");
    assert_eq!(text(&rows[1][4]), "Grüße, café ☃ 🐺!");
    assert_eq!(text(&rows[2][1]), "43");
    assert_eq!(text(&rows[3][1]), "1000");
}

/// A latin1 user variable, from a latin1 client (`SET NAMES latin1`) and from a
/// utf8mb4 client (`CONVERT(… USING latin1)`), into a latin1 and a utf8mb4 column.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latin1_user_variables_with_non_ascii_text() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, UV_TABLE).await;
    // utf8mb4 client, a variable whose charset is latin1.
    q(&mut c, "SET @lat = CONVERT('Grüße, café' USING latin1)").await;
    q(&mut c, "INSERT INTO uv (id, s, l) VALUES (1, @lat, @lat)").await;
    // latin1 client: the variable's text arrives as latin1 bytes.
    let mut latin = nodes[l].client(Some("test")).await;
    q(&mut latin, "SET NAMES latin1").await;
    latin
        .query_drop(&b"SET @v = 'Gr\xfc\xdfe, caf\xe9'"[..])
        .await
        .unwrap();
    q(&mut latin, "INSERT INTO uv (id, s, l) VALUES (2, @v, @v)").await;

    let want = "Grüße, café";
    let on_leader = leader_rows(&nodes, l, "SELECT id, s, l FROM uv ORDER BY id").await;
    assert_eq!(on_leader.len(), 2);
    for r in &on_leader {
        assert_eq!(
            (text(&r[1]), text(&r[2])),
            (want.to_string(), want.to_string()),
            "on the leader: {on_leader:?}"
        );
    }
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, s, l, HEX(l) FROM uv ORDER BY id").await;
    assert_eq!(rows.len(), 2);
}

/// A latin1 client sending non-ASCII string literals (not variables): the statement
/// text is not UTF-8. It must never be stored altered: this build refuses it (the log
/// carries text), and the same values written as hex literals replicate unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latin1_client_literals_are_stored_unchanged() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, UV_TABLE).await;
    q(&mut c, "SET NAMES latin1").await;
    let e = c
        .query_drop(&b"INSERT INTO uv (id, s, l) VALUES (1, 'caf\xe9', 'caf\xe9')"[..])
        .await
        .expect_err("non-UTF-8 statement text must be refused, not altered");
    assert_eq!(code_of(&e), 1235, "{e}");
    q(
        &mut c,
        "INSERT INTO uv (id, s, l) VALUES (2, _latin1 X'636166E9', _latin1 X'636166E9')",
    )
    .await;
    // Plain ASCII text from a latin1 client is UTF-8 too: it goes through.
    q(
        &mut c,
        "INSERT INTO uv (id, s, l) VALUES (3, 'plain', 'plain')",
    )
    .await;
    let on_leader = leader_rows(&nodes, l, "SELECT id, HEX(s), HEX(l) FROM uv ORDER BY id").await;
    assert_eq!(on_leader.len(), 2, "{}", common::show_rows(&on_leader));
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, HEX(s), HEX(l) FROM uv ORDER BY id").await;
    // 'café' converted into the utf8mb4 column and kept as latin1 in the latin1 one.
    assert_eq!(
        (text(&rows[0][1]), text(&rows[0][2])),
        ("636166C3A9".to_string(), "636166E9".to_string())
    );
}

fn code_of(e: &mysql_async::Error) -> u16 {
    server_error(e).map_or(0, |(c, _)| c)
}

/// A binary user variable with bytes that are not UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_user_variable_with_non_utf8_bytes() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, UV_TABLE).await;
    q(&mut c, "SET @b = X'FF00FE80C3'").await;
    q(&mut c, "INSERT INTO uv (id, b) VALUES (1, @b)").await;
    let on_leader = leader_rows(&nodes, l, "SELECT HEX(b) FROM uv").await;
    assert_eq!(text(&on_leader[0][0]), "FF00FE80C3");
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, HEX(b) FROM uv ORDER BY id").await;
    assert_eq!(text(&rows[0][1]), "FF00FE80C3");
}

/// A binary-charset user variable whose bytes are SQL text must stay a value: it
/// must never be pasted into the replayed statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_user_variable_holding_sql_is_a_value_not_sql() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, UV_TABLE).await;
    q(
        &mut c,
        "SET @inj = CAST('0; CREATE TABLE test.injected (x INT); SET @z = 0' AS BINARY)",
    )
    .await;
    q(&mut c, "INSERT INTO uv (id, b) VALUES (1, @inj)").await;
    q(&mut c, "INSERT INTO uv (id, i) VALUES (2, 2)").await;
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, b, i FROM uv ORDER BY id").await;
    assert_eq!(
        text(&rows[0][1]),
        "0; CREATE TABLE test.injected (x INT); SET @z = 0"
    );
    let injected = same_on_all(
        &nodes,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'test' AND TABLE_NAME = 'injected'",
    )
    .await;
    assert_eq!(text(&injected[0][0]), "0");
}

// --------------------------------------------------------------------------------
// Triggers

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triggers_fire_the_same_on_every_node() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(30), slug VARCHAR(40), qty INT, created DATETIME(6))",
    )
    .await;
    q(
        &mut c,
        "CREATE TABLE audit (item_id INT, old_qty INT, new_qty INT, at DATETIME(6), PRIMARY KEY (item_id, at, new_qty))",
    )
    .await;
    q(
        &mut c,
        "CREATE TRIGGER items_bi BEFORE INSERT ON items FOR EACH ROW \
         SET NEW.slug = LOWER(REPLACE(NEW.name, ' ', '-')), NEW.created = NOW(6)",
    )
    .await;
    q(
        &mut c,
        "CREATE TRIGGER items_au AFTER UPDATE ON items FOR EACH ROW \
         INSERT INTO audit (item_id, old_qty, new_qty, at) VALUES (NEW.id, OLD.qty, NEW.qty, NOW(6))",
    )
    .await;
    q(
        &mut c,
        "INSERT INTO items (name, qty) VALUES ('Big Box', 1), ('Small Box', 2)",
    )
    .await;
    q(&mut c, "UPDATE items SET qty = qty + 10").await;
    q(&mut c, "BEGIN").await;
    q(
        &mut c,
        "INSERT INTO items (name, qty) VALUES ('Red Hat', 3)",
    )
    .await;
    q(&mut c, "UPDATE items SET qty = 0 WHERE id = 1").await;
    q(&mut c, "COMMIT").await;

    converged_report(&nodes, "test").await;
    let items = same_on_all(
        &nodes,
        "SELECT id, name, slug, qty, created FROM items ORDER BY id",
    )
    .await;
    assert_eq!(text(&items[0][2]), "big-box");
    assert_eq!(text(&items[2][2]), "red-hat");
    let audit = same_on_all(
        &nodes,
        "SELECT item_id, old_qty, new_qty, at FROM audit ORDER BY at, item_id",
    )
    .await;
    assert_eq!(audit.len(), 3, "{audit:?}");
    // The triggers themselves, with their definer, are the same everywhere.
    let triggers = same_on_all(
        &nodes,
        "SELECT TRIGGER_NAME, DEFINER, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT, SQL_MODE \
         FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'test' ORDER BY TRIGGER_NAME",
    )
    .await;
    assert_eq!(triggers.len(), 2);
    assert_eq!(text(&triggers[0][1]), "app@%", "definer is the client");
}

// --------------------------------------------------------------------------------
// Prepared statements (binary protocol)

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_statements_with_typed_parameters() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE ps (id INT PRIMARY KEY, n BIGINT, u BIGINT UNSIGNED, s VARCHAR(60),
            b LONGBLOB, d DATE, dt DATETIME(6), t TIME(6), de DECIMAL(20,6), f DOUBLE)",
    )
    .await;
    let blob: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(std::str::from_utf8(&blob).is_err(), "the blob is not UTF-8");
    let insert =
        "INSERT INTO ps (id, n, u, s, b, d, dt, t, de, f) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let result = c
        .exec_drop(
            insert,
            vec![
                Value::Int(1),
                Value::Int(-9_000_000_000),
                Value::UInt(u64::MAX),
                Value::Bytes("héllo 🐺".as_bytes().to_vec()),
                Value::Bytes(blob.clone()),
                Value::Date(2024, 2, 29, 0, 0, 0, 0),
                Value::Date(1999, 12, 31, 23, 59, 58, 123_456),
                Value::Time(true, 1, 2, 3, 4, 5),
                Value::Bytes(b"-12345678.901234".to_vec()),
                Value::Double(-0.1),
            ],
        )
        .await;
    if let Err(e) = &result {
        panic!(
            "prepared INSERT through the leader failed: {e} ({:?})",
            server_error(e)
        );
    }
    c.exec_drop(
        insert,
        vec![
            Value::Int(2),
            Value::NULL,
            Value::NULL,
            Value::NULL,
            Value::NULL,
            Value::NULL,
            Value::NULL,
            Value::NULL,
            Value::NULL,
            Value::NULL,
        ],
    )
    .await
    .unwrap();
    c.exec_drop(
        insert,
        (
            3,
            -1i64,
            0u64,
            "",
            b"\x00\xff".to_vec(),
            Value::NULL,
            Value::NULL,
            Value::NULL,
            "0.5",
            1e300f64,
        ),
    )
    .await
    .unwrap();
    c.exec_drop(
        "UPDATE ps SET s = ?, n = n - ? WHERE id = ?",
        ("updated", 5i64, 1),
    )
    .await
    .unwrap();
    c.exec_drop("DELETE FROM ps WHERE id = ?", (3,))
        .await
        .unwrap();
    // Inside a transaction too.
    q(&mut c, "BEGIN").await;
    c.exec_drop(
        insert,
        (
            4,
            4i64,
            4u64,
            "four",
            vec![4u8; 10],
            Value::NULL,
            Value::NULL,
            Value::NULL,
            "4",
            4.0f64,
        ),
    )
    .await
    .unwrap();
    q(&mut c, "COMMIT").await;

    converged_report(&nodes, "test").await;
    let rows = same_on_all(
        &nodes,
        "SELECT id, n, u, s, MD5(b), LENGTH(b), d, dt, t, de, f FROM ps ORDER BY id",
    )
    .await;
    assert_eq!(rows.len(), 3);
    assert_eq!(text(&rows[0][1]), "-9000000005");
    assert_eq!(text(&rows[0][3]), "updated");
    assert_eq!(text(&rows[0][5]), "70000");
    assert_eq!(text(&rows[0][8]), "-26:03:04.000005");
    assert_eq!(text(&rows[0][9]), "-12345678.901234");
}

/// `PREPARE … FROM` / `EXECUTE` in SQL: the write the EXECUTE does must be logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_prepare_and_execute_of_a_write() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE pe (id INT PRIMARY KEY, v VARCHAR(10))",
    )
    .await;
    // EXECUTE would run the write where the proxy sees only a name: refused at PREPARE,
    // whether the text is a literal or in a variable, and so is EXECUTE IMMEDIATE.
    for sql in [
        "PREPARE ins FROM 'INSERT INTO pe VALUES (?, ?)'",
        "EXECUTE IMMEDIATE 'INSERT INTO pe VALUES (7, ''seven'')'",
    ] {
        let e = c.query_drop(sql).await.expect_err(sql);
        assert_eq!(server_error(&e).map(|(c, _)| c), Some(1295), "{sql}: {e}");
    }
    q(&mut c, "SET @q = 'DELETE FROM pe'").await;
    let e = c.query_drop("PREPARE del FROM @q").await.expect_err("@q");
    assert_eq!(server_error(&e).map(|(c, _)| c), Some(1295), "{e}");
    // A prepared read works as on MariaDB, on the leader and on a follower.
    q(&mut c, "INSERT INTO pe VALUES (1, 'one')").await;
    for n in [l, (l + 1) % 3] {
        let mut r = nodes[n].client(Some("test")).await;
        q(&mut r, "PREPARE sel FROM 'SELECT v FROM pe WHERE id = ?'").await;
        q(&mut r, "SET @id = 1").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let v: Option<String> = loop {
            let v = r.query_first("EXECUTE sel USING @id").await.unwrap();
            if v.is_some() || std::time::Instant::now() > deadline {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(v.as_deref(), Some("one"));
        let e = r
            .query_drop("PREPARE bad FROM 'UPDATE pe SET v = 2'")
            .await
            .expect_err("a follower must not prepare a write either");
        assert!(matches!(server_error(&e), Some((1295 | 1290, _))), "{e}");
    }
    converged_report(&nodes, "test").await;
    same_on_all(&nodes, "SELECT id, v FROM pe ORDER BY id").await;
}

// --------------------------------------------------------------------------------
// Transactions

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_commit_rollback_and_a_failed_statement() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE acct (id INT PRIMARY KEY, bal INT)").await;
    q(&mut c, "INSERT INTO acct VALUES (1, 100), (2, 100)").await;
    // Several statements, one commit.
    q(&mut c, "BEGIN").await;
    q(&mut c, "UPDATE acct SET bal = bal - 30 WHERE id = 1").await;
    q(&mut c, "UPDATE acct SET bal = bal + 30 WHERE id = 2").await;
    q(&mut c, "INSERT INTO acct VALUES (3, 0)").await;
    q(&mut c, "COMMIT").await;
    // ROLLBACK leaves no trace.
    q(&mut c, "START TRANSACTION").await;
    q(&mut c, "DELETE FROM acct").await;
    q(&mut c, "INSERT INTO acct VALUES (9, 9)").await;
    q(&mut c, "ROLLBACK").await;
    // A failed statement inside a transaction: only the others are committed.
    q(&mut c, "BEGIN").await;
    q(&mut c, "INSERT INTO acct VALUES (4, 4)").await;
    let err = c
        .query_drop("INSERT INTO acct VALUES (1, 1)")
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1062), "{err}");
    // A multi-row insert failing at its second row is rolled back as a whole.
    let err = c
        .query_drop("INSERT INTO acct VALUES (8, 8), (2, 2)")
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1062), "{err}");
    q(&mut c, "INSERT INTO acct VALUES (5, 5)").await;
    q(&mut c, "COMMIT").await;
    // autocommit = 0: statements form transactions until COMMIT / ROLLBACK.
    q(&mut c, "SET autocommit = 0").await;
    q(&mut c, "INSERT INTO acct VALUES (6, 6)").await;
    q(&mut c, "COMMIT").await;
    q(&mut c, "INSERT INTO acct VALUES (7, 7)").await;
    q(&mut c, "ROLLBACK").await;
    q(&mut c, "SET autocommit = 1").await;
    // A failed autocommit statement changes nothing.
    let err = c
        .query_drop("UPDATE acct SET id = 2 WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1062), "{err}");

    let want = vec![(1, 70), (2, 130), (3, 0), (4, 4), (5, 5), (6, 6)];
    let on_leader: Vec<(i32, i32)> = nodes[l]
        .raft
        .db
        .root()
        .await
        .query("SELECT id, bal FROM test.acct ORDER BY id")
        .await
        .unwrap();
    assert_eq!(on_leader, want, "on the leader");
    converged_report(&nodes, "test").await;
    for n in &nodes {
        let got: Vec<(i32, i32)> = n
            .raft
            .db
            .root()
            .await
            .query("SELECT id, bal FROM test.acct ORDER BY id")
            .await
            .unwrap();
        assert_eq!(got, want, "on {}", n.raft.settings.node_id);
    }
}

// --------------------------------------------------------------------------------
// DDL

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_replicates_to_every_node() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE d1 (id INT PRIMARY KEY, a INT)").await;
    q(&mut c, "INSERT INTO d1 VALUES (1, 1), (2, 2)").await;
    q(
        &mut c,
        "ALTER TABLE d1 ADD COLUMN b VARCHAR(10) NOT NULL DEFAULT 'x', MODIFY a BIGINT, COMMENT = 'altered'",
    )
    .await;
    q(&mut c, "CREATE INDEX d1_a ON d1 (a)").await;
    q(&mut c, "CREATE UNIQUE INDEX d1_ab ON d1 (a, b)").await;
    q(&mut c, "RENAME TABLE d1 TO d2").await;
    q(&mut c, "CREATE TABLE d3 LIKE d2").await;
    q(&mut c, "CREATE TABLE d4 (x INT)").await;
    q(&mut c, "DROP TABLE d3, d4").await;
    q(&mut c, "DROP INDEX d1_ab ON d2").await;
    q(&mut c, "CREATE VIEW v2 AS SELECT id, a FROM d2").await;
    q(&mut c, "TRUNCATE TABLE d2").await;
    q(&mut c, "INSERT INTO d2 (id, a) VALUES (10, 10)").await;
    q(&mut c, "CREATE DATABASE newdb CHARACTER SET latin1").await;
    q(&mut c, "USE newdb").await;
    q(&mut c, "CREATE TABLE t (x INT PRIMARY KEY, s VARCHAR(5))").await;
    q(&mut c, "INSERT INTO t VALUES (1, 'é')").await;
    q(&mut c, "CREATE DATABASE dropme").await;
    q(&mut c, "CREATE TABLE dropme.t (x INT)").await;
    q(&mut c, "DROP DATABASE dropme").await;
    q(&mut c, "USE test").await;
    // A failing DDL fails on the leader and is not replicated.
    let err = c.query_drop("CREATE TABLE d2 (x INT)").await.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1050), "{err}");

    converged_report(&nodes, "test").await;
    converged_report(&nodes, "newdb").await;
    let schemata = same_on_all(
        &nodes,
        "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA \
         WHERE SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys', 'wolfscale') ORDER BY 1",
    )
    .await;
    let names: Vec<String> = schemata.iter().map(|r| text(&r[0])).collect();
    assert_eq!(names, vec!["newdb", "test"]);
    let tables = same_on_all(
        &nodes,
        "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_COMMENT FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA IN ('test', 'newdb', 'dropme') ORDER BY 1, 2",
    )
    .await;
    let names: Vec<String> = tables
        .iter()
        .map(|r| format!("{}.{}", text(&r[0]), text(&r[1])))
        .collect();
    assert_eq!(names, vec!["newdb.t", "test.d2", "test.v2"]);
    same_on_all(
        &nodes,
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, CHARACTER_SET_NAME \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ('test', 'newdb') ORDER BY 1, 2, 4",
    )
    .await;
    let indexes = same_on_all(
        &nodes,
        "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = 'test' ORDER BY 1, 2, 3",
    )
    .await;
    let mut names: Vec<String> = indexes.iter().map(|r| text(&r[1])).collect();
    names.sort();
    assert_eq!(names, vec!["PRIMARY", "d1_a"]);
    let rows = same_on_all(&nodes, "SELECT x, s, HEX(s) FROM newdb.t").await;
    assert_eq!(text(&rows[0][1]), "é");
    same_on_all(
        &nodes,
        "SELECT TABLE_NAME, VIEW_DEFINITION, DEFINER, SECURITY_TYPE FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'test'",
    )
    .await;
}

// --------------------------------------------------------------------------------
// Accounts

const CAROL_PW: &str = "carol-clear-text-Pw-9f8e7d6c5b4a3928-wolfscale-never-logs-this";
const CAROL_PW2: &str = "carol-second-password-1a2b3c4d5e6f7a8b-also-never-logged";
const CAROL_PW3: &str = "carol-third-password-0f1e2d3c4b5a6978-set-password-form";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_replicate_and_passwords_never_reach_the_log() {
    let (nodes, l) = cluster().await;
    let f = (l + 1) % 3;
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE acc (id INT PRIMARY KEY, v VARCHAR(10))",
    )
    .await;
    q(&mut c, "INSERT INTO acc VALUES (1, 'one')").await;
    q(&mut c, "CREATE TABLE secret (id INT PRIMARY KEY)").await;
    q(
        &mut c,
        &format!("CREATE USER 'carol'@'%' IDENTIFIED BY '{CAROL_PW}'"),
    )
    .await;
    q(&mut c, "GRANT SELECT, INSERT ON test.acc TO 'carol'@'%'").await;

    // The account reached the follower: carol logs in through the follower's proxy.
    let carol_opts =
        |node: &FullNode, pw: &str| common::opts(node.proxy_port(), "carol", pw, Some("test"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Conn::new(carol_opts(&nodes[f], CAROL_PW)).await {
            Ok(conn) => {
                conn.disconnect().await.ok();
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "carol cannot log in through the follower: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut on_f = Conn::new(carol_opts(&nodes[f], CAROL_PW)).await.unwrap();
    let rows: Vec<(i32, String)> = on_f.query("SELECT id, v FROM acc").await.unwrap();
    assert_eq!(rows, vec![(1, "one".to_string())]);
    let err = on_f.query_drop("SELECT * FROM secret").await.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1142), "{err}");
    let grants: Vec<String> = on_f.query("SHOW GRANTS").await.unwrap();
    assert!(
        grants
            .iter()
            .any(|g| g.contains("GRANT SELECT, INSERT ON `test`.`acc` TO `carol`@`%`")),
        "{grants:?}"
    );
    // Her grants through the leader: INSERT yes, DELETE no.
    let mut on_l = Conn::new(carol_opts(&nodes[l], CAROL_PW)).await.unwrap();
    q(&mut on_l, "INSERT INTO acc VALUES (2, 'two')").await;
    let err = on_l.query_drop("DELETE FROM acc").await.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1142), "{err}");
    on_l.disconnect().await.ok();
    on_f.disconnect().await.ok();

    // Password changes replicate too, still never in clear text.
    q(
        &mut c,
        &format!("ALTER USER 'carol'@'%' IDENTIFIED BY '{CAROL_PW2}'"),
    )
    .await;
    q(
        &mut c,
        &format!("SET PASSWORD FOR 'carol'@'%' = PASSWORD('{CAROL_PW3}')"),
    )
    .await;
    let ok = common::wait_until(Duration::from_secs(20), || {
        let opts = carol_opts(&nodes[f], CAROL_PW3);
        async move { Conn::new(opts).await.is_ok() }
    })
    .await;
    assert!(ok, "the new password works through the follower");

    converged_report(&nodes, "test").await;
    same_on_all(
        &nodes,
        "SELECT User, Host, Priv FROM mysql.global_priv WHERE User IN ('carol', 'app') ORDER BY 1, 2",
    )
    .await;
    same_on_all(
        &nodes,
        "SELECT User, Host, Db, Table_name, Table_priv FROM mysql.tables_priv WHERE User = 'carol'",
    )
    .await;

    // No clear-text password anywhere in any node's log.
    for n in &nodes {
        let data_dir = common::data_dir(n);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wolfctl"))
            .args(["wal", "dump", "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "wolfctl wal dump: {out:?}");
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(dump.lines().count() > 5, "the dump lists entries: {dump}");
        for pw in [CAROL_PW, CAROL_PW2, CAROL_PW3] {
            assert!(!dump.contains(pw), "wolfctl wal dump shows a password");
        }
        // The files' bytes (the WAL, and the node's state database with its DDL
        // intent records).
        for file in files_under(&data_dir) {
            let bytes = std::fs::read(&file).unwrap();
            for pw in [CAROL_PW, CAROL_PW2, CAROL_PW3] {
                assert!(
                    !contains(&bytes, pw.as_bytes()),
                    "{} holds a clear-text password",
                    file.display()
                );
            }
        }
        // The entries decoded (the WAL may be compressed).
        let mut decoded = 0;
        let mut saw_create_user = false;
        wolfscale::wal::inspect::dump(
            &wolfscale::wal::inspect::wal_dir(&data_dir),
            0,
            u64::MAX,
            |e| {
                for pw in [CAROL_PW, CAROL_PW2, CAROL_PW3] {
                    assert!(
                        !contains(&e.payload, pw.as_bytes()),
                        "entry {} holds a password",
                        e.index
                    );
                }
                let entry = wolfscale::cluster::log_store::decode(e).expect("decode entry");
                let shown = format!("{entry:?}");
                for pw in [CAROL_PW, CAROL_PW2, CAROL_PW3] {
                    assert!(
                        !shown.contains(pw),
                        "entry {} holds a password: {shown}",
                        e.index
                    );
                }
                saw_create_user |= shown.contains("CREATE USER");
                decoded += 1;
            },
        )
        .unwrap();
        assert!(decoded > 5);
        assert!(saw_create_user, "the CREATE USER entry was decoded");
    }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    // The WAL's segments are preallocated (tens of MiB each): a naive scan of every
    // window took most of this test's 40 s in a debug build.
    memchr::memmem::find(hay, needle).is_some()
}

/// Two sessions with different session variables, their writes interleaved: each
/// replayed statement runs with its own session's time zone and sql_mode, never with
/// those of the entry replayed before it (replay sets them on its connection only when
/// they change, and again after a CALL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_sessions_keep_their_own_session_variables() {
    let (nodes, l) = cluster().await;
    let mut a = nodes[l].client(Some("test")).await;
    let mut b = nodes[l].client(Some("test")).await;
    q(
        &mut a,
        "CREATE TABLE mix (id INT PRIMARY KEY, t DATETIME, s VARCHAR(3), who CHAR(1))",
    )
    .await;
    q(
        &mut a,
        "CREATE PROCEDURE tz3() SET SESSION time_zone = '+03:00'",
    )
    .await;
    q(&mut a, "SET time_zone = '+05:30', sql_mode = ''").await;
    for i in 0..20 {
        // Not strict: the value is cut to 'abc' (with a warning); B's mode would refuse.
        q(
            &mut a,
            &format!(
                "INSERT INTO mix VALUES ({}, FROM_UNIXTIME(1700000000), 'abcdef', 'a')",
                2 * i
            ),
        )
        .await;
        q(
            &mut b,
            &format!(
                "INSERT INTO mix VALUES ({}, FROM_UNIXTIME(1700000000), 'xyz', 'b')",
                2 * i + 1
            ),
        )
        .await;
        if i == 10 {
            // A procedure that changes B's time zone, on the leader and on the replay
            // connections: B's next writes run at +03:00 there, and must be logged so.
            q(&mut b, "CALL tz3()").await;
            q(
                &mut b,
                "INSERT INTO mix VALUES (100, FROM_UNIXTIME(1700000000), 'xyz', 'c')",
            )
            .await;
            q(&mut b, "SET time_zone = SYSTEM").await;
        }
    }
    converged_report(&nodes, "test").await;
    let rows = same_on_all(
        &nodes,
        "SELECT who, COUNT(*), COUNT(DISTINCT t), MIN(CAST(t AS CHAR)), MIN(s) FROM mix GROUP BY who ORDER BY who",
    )
    .await;
    let leader = leader_rows(
        &nodes,
        l,
        "SELECT who, COUNT(*), COUNT(DISTINCT t), MIN(CAST(t AS CHAR)), MIN(s) FROM mix GROUP BY who ORDER BY who",
    )
    .await;
    assert_eq!(rows, leader);
    let got: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(text).collect()).collect();
    assert_eq!(got[0][..3], ["a", "20", "1"]);
    assert_eq!(got[0][4], "abc");
    assert_eq!(got[1][..3], ["b", "20", "1"]);
    assert_eq!(got[1][4], "xyz");
    assert_ne!(
        got[0][3], got[1][3],
        "the two time zones give two local times"
    );
}

/// A transaction's entry carries one set of session variables: a SET before its first
/// write is taken (the entry replays with it); one after a write would leave the
/// earlier and later statements needing different settings, and the write that
/// follows it is refused with 1235, the transaction still open and committable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_variables_change_only_before_a_transactions_first_write() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE TABLE tzx (id INT PRIMARY KEY, t DATETIME)").await;
    q(&mut c, "BEGIN").await;
    q(&mut c, "SET time_zone = '+05:30'").await;
    q(
        &mut c,
        "INSERT INTO tzx VALUES (1, FROM_UNIXTIME(1700000000))",
    )
    .await;
    q(&mut c, "SET time_zone = '+01:00'").await;
    let e = c
        .query_drop("INSERT INTO tzx VALUES (2, FROM_UNIXTIME(1700000000))")
        .await
        .unwrap_err();
    assert_eq!(server_error(&e).map(|(code, _)| code), Some(1235), "{e}");
    q(&mut c, "COMMIT").await;
    converged_report(&nodes, "test").await;
    let rows = same_on_all(&nodes, "SELECT id, CAST(t AS CHAR) FROM tzx ORDER BY id").await;
    let got: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(text).collect()).collect();
    assert_eq!(
        got,
        vec![vec!["1".to_string(), "2023-11-15 03:43:20".to_string()]]
    );
}

// --------------------------------------------------------------------------------
// Sequences

/// A sequence is not rolled back with the transaction that advanced it: after a
/// rollback on the leader its next value would be ahead of every follower's, and rows
/// written with it would differ. Writes that use one are refused, naming the function;
/// the sequence itself (DDL) replicates and stays identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequence_functions_in_writes_are_refused() {
    let (nodes, l) = cluster().await;
    let mut c = nodes[l].client(Some("test")).await;
    q(&mut c, "CREATE SEQUENCE s START WITH 1 INCREMENT BY 1").await;
    q(&mut c, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    q(&mut c, "BEGIN").await;
    for sql in [
        "SELECT NEXTVAL(s)",
        "INSERT INTO t VALUES (NEXTVAL(s), 1)",
        "INSERT INTO t VALUES (NEXT VALUE FOR s, 2)",
        "UPDATE t SET v = LASTVAL(s)",
        "SELECT SETVAL(s, 100)",
    ] {
        let e = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_error(&e).map(|e| e.0), Some(1592), "{sql}: {e}");
        assert!(e.to_string().contains("sequence"), "{sql}: {e}");
    }
    q(&mut c, "ROLLBACK").await;
    let e = c
        .query_drop("CREATE TABLE d (id INT DEFAULT NEXTVAL(s))")
        .await
        .unwrap_err();
    assert_eq!(server_error(&e).map(|e| e.0), Some(1592), "{e}");
    q(&mut c, "INSERT INTO t VALUES (1, 1)").await;
    converged_report(&nodes, "test").await;
    let seq = same_on_all(&nodes, "SELECT next_not_cached_value FROM s").await;
    assert_eq!(common::cell_text(&seq[0][0]).as_deref(), Some("1"));
}
