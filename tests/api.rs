//! The HTTP API's data endpoints (`/write/*`, `/query`) against three `wolfscale start`
//! processes: writes sent to followers reach every MariaDB through the leader's log,
//! names are checked against the live schema, values are bound, and bad input gets
//! the right status and a JSON error.

mod common;

use common::procs::{cluster_of, http, leader_among, settled, ProcNode, Tuning, FAST};
use mysql_async::prelude::*;
use serde_json::{json, Value};

const TOKEN: &str = "api-data-token-91c2";

async fn call(node: &ProcNode, path: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    http(
        node.api_port,
        "POST",
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

/// A call that must succeed.
async fn ok(node: &ProcNode, path: &str, body: Value) -> Value {
    let (status, v) = call(node, path, &body).await;
    assert_eq!(status, 200, "{path} {body}: {v}");
    v
}

/// A call that must fail with `status` and error code `code`.
async fn refused(node: &ProcNode, path: &str, body: Value, status: u16, code: &str) -> Value {
    let (got, v) = call(node, path, &body).await;
    assert_eq!(
        (got, v["error"]["code"].as_str()),
        (status, Some(code)),
        "{path} {body}: {v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

/// Every node's rows of test.items, in key order, as one string.
async fn rows_on(node: &ProcNode) -> String {
    let mut c = node.db.root().await;
    c.query_first::<Option<String>, _>(
        "SELECT GROUP_CONCAT(CONCAT_WS(':', id, name, qty, IFNULL(note, '-')) ORDER BY id SEPARATOR ',') FROM test.items",
    )
    .await
    .unwrap()
    .flatten()
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_writes_reach_every_node_through_the_log() {
    let nodes = cluster_of(
        3,
        Tuning {
            api_token: Some(TOKEN),
            api_extra: "id_column = \"id\"\n",
            ..FAST
        },
    )
    .await;
    let l = leader_among(&nodes, |_| true).await;
    let f1 = (l + 1) % 3;
    let f2 = (l + 2) % 3;

    // DDL through a follower.
    let v = ok(
        &nodes[f1],
        "/write/ddl",
        json!({"ddl": "CREATE TABLE test.items (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT, note JSON NULL, UNIQUE KEY (name))"}),
    )
    .await;
    let ddl_index = v["log_index"].as_u64().expect("a log index");
    assert!(ddl_index > 0, "{v}");

    // An insert with no id: the node fills it with a Snowflake of its own.
    let v = ok(
        &nodes[f2],
        "/write/insert",
        json!({"table": "test.items", "values": {"name": "bolt", "qty": 10}}),
    )
    .await;
    assert_eq!(v["affected_rows"], 1, "{v}");
    let id: u64 = v["id"].as_str().expect("the generated id").parse().unwrap();
    assert_eq!(wolfscale::id::parts(id).node as usize, nodes[f2].n, "{v}");
    assert!(v["log_index"].as_u64().unwrap() > ddl_index, "{v}");

    // Explicit values, a JSON value, a value that looks like SQL.
    ok(
        &nodes[f1],
        "/write/insert",
        json!({"table": "test.items", "values": {"id": 7, "name": "nut'); DROP TABLE test.items; --", "qty": 3, "note": {"k": [1, 2]}}}),
    )
    .await;
    ok(
        &nodes[l],
        "/write/update",
        json!({"table": "test.items", "set": {"qty": 4}, "where_key": {"id": 7}}),
    )
    .await;
    // An upsert takes the proxy's determinism rules: on a table with two unique keys
    // it could update a different row on another node, so it is refused …
    let v = refused(
        &nodes[f2],
        "/write/upsert",
        json!({"table": "test.items", "values": {"id": 8, "name": "washer", "qty": 1}}),
        400,
        "mariadb_error",
    )
    .await;
    assert_eq!(v["error"]["errno"], 1592, "{v}");
    // … and on a table with one it inserts, then updates.
    ok(
        &nodes[l],
        "/write/ddl",
        json!({"ddl": "CREATE TABLE test.stock (sku VARCHAR(20) PRIMARY KEY, qty INT NOT NULL)"}),
    )
    .await;
    let v = ok(
        &nodes[f2],
        "/write/upsert",
        json!({"table": "test.stock", "values": {"sku": "w-1", "qty": 1}}),
    )
    .await;
    assert_eq!(v["affected_rows"], 1, "a fresh row: {v}");
    let v = ok(
        &nodes[f2],
        "/write/upsert",
        json!({"table": "test.stock", "values": {"sku": "w-1", "qty": 2}, "update": ["qty"]}),
    )
    .await;
    assert_eq!(v["affected_rows"], 2, "an updated row: {v}");
    ok(
        &nodes[f1],
        "/write/insert",
        json!({"table": "test.items", "values": {"id": 8, "name": "washer", "qty": 2}}),
    )
    .await;
    settled(
        &nodes,
        "SELECT GROUP_CONCAT(sku, '=', qty) FROM test.stock",
        "w-1=2",
    )
    .await;

    // A batch commits all of its operations in one transaction …
    let v = ok(
        &nodes[f1],
        "/write/batch",
        json!({"operations": [
            {"op": "insert", "table": "test.items", "values": {"id": 9, "name": "gear", "qty": 5}},
            {"op": "update", "table": "test.items", "set": {"qty": 6}, "where_key": {"id": 9}},
            {"op": "delete", "table": "test.items", "where_key": {"id": id}},
        ]}),
    )
    .await;
    assert_eq!(v["results"].as_array().map(Vec::len), Some(3), "{v}");
    let batch_index = v["log_index"].as_u64().unwrap();
    // … or none: the second operation breaks a unique key, the first is undone.
    let v = refused(
        &nodes[f2],
        "/write/batch",
        json!({"operations": [
            {"op": "insert", "table": "test.items", "values": {"id": 10, "name": "spring"}},
            {"op": "insert", "table": "test.items", "values": {"id": 11, "name": "gear"}},
        ]}),
        409,
        "mariadb_error",
    )
    .await;
    assert_eq!(
        (
            v["error"]["errno"].as_u64(),
            v["error"]["sqlstate"].as_str(),
            v["error"]["operation"].as_u64()
        ),
        (Some(1062), Some("23000"), Some(1)),
        "{v}"
    );

    // A read on the other follower with the batch's index sees the batch.
    let v = ok(
        &nodes[f2],
        "/query",
        json!({"sql": "SELECT id, name, qty, note FROM test.items WHERE qty >= ? ORDER BY id", "params": [0], "min_index": batch_index}),
    )
    .await;
    assert_eq!(v["columns"], json!(["id", "name", "qty", "note"]), "{v}");
    assert_eq!(v["row_count"], 3, "{v}");
    assert_eq!(v["rows"][0][0], 7, "{v}");
    assert_eq!(v["rows"][0][1], "nut'); DROP TABLE test.items; --", "{v}");
    assert_eq!(v["rows"][2], json!([9, "gear", 6, null]), "{v}");
    ok(
        &nodes[l],
        "/query",
        json!({"sql": "SELECT COUNT(*) FROM test.items", "consistency": "linearizable"}),
    )
    .await;

    let (status, v) = http(nodes[f2].api_port, "GET", "/cluster/nodes", &[], b"").await;
    assert_eq!((status, v.as_array().map(Vec::len)), (200, Some(3)), "{v}");
    // Every MariaDB holds the same rows.
    let want = "7:nut'); DROP TABLE test.items; --:4:{\"k\":[1,2]},8:washer:2:-,9:gear:6:-";
    settled(&nodes, "SELECT COUNT(*) FROM test.items", "3").await;
    for n in &nodes {
        assert_eq!(rows_on(n).await, want, "node-{}", n.n);
    }

    // Bad input.
    let t = "test.items";
    let (status, v) = http(
        nodes[f1].api_port,
        "POST",
        "/write/insert",
        &[],
        br#"{"table":"test.items","values":{}}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "no token: {v}"
    );
    let (status, v) = http(
        nodes[f1].api_port,
        "POST",
        "/query",
        &[("Authorization", "Bearer wrong")],
        br#"{"sql":"SELECT 1"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "wrong token: {v}"
    );
    let v = refused(
        &nodes[f1],
        "/write/insert",
        json!({"table": "test.nope", "values": {"a": 1}}),
        404,
        "unknown_table",
    )
    .await;
    assert_eq!(
        (
            v["error"]["errno"].as_u64(),
            v["error"]["sqlstate"].as_str()
        ),
        (Some(1146), Some("42S02")),
        "{v}"
    );
    let v = refused(
        &nodes[f1],
        "/write/insert",
        json!({"table": t, "values": {"colour": 1}}),
        400,
        "unknown_column",
    )
    .await;
    assert_eq!(v["error"]["errno"], 1054, "{v}");
    refused(
        &nodes[f1],
        "/write/insert",
        json!({"table": "test.items; DROP TABLE test.items", "values": {"id": 1}}),
        404,
        "unknown_table",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/insert",
        json!({"table": "test.`items`", "values": {"id": 1}}),
        404,
        "unknown_table",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/update",
        json!({"table": t, "set": {"qty = 0, name": 1}, "where_key": {"id": 7}}),
        400,
        "unknown_column",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/update",
        json!({"table": t, "set": {"qty": 0}, "where_key": {"id` = `id` OR 1=1 OR `id": 7}}),
        400,
        "unknown_column",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/update",
        json!({"table": t, "set": {"qty": 0}, "where_key": {}}),
        400,
        "invalid_request",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/delete",
        json!({"table": t, "where_key": {}}),
        400,
        "invalid_request",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/delete",
        json!({"table": "mysql.user", "where_key": {"User": "root"}}),
        403,
        "system_schema",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/insert",
        json!({"table": "items", "values": {"id": 1}}),
        400,
        "invalid_request",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/insert",
        json!({"table": t, "values": {"id": 1}, "extra": true}),
        400,
        "invalid_request",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/ddl",
        json!({"ddl": "DELETE FROM test.items"}),
        400,
        "wrong_statement",
    )
    .await;
    refused(
        &nodes[f1],
        "/write/ddl",
        json!({"ddl": "DROP TABLE test.items; DROP TABLE test.other"}),
        400,
        "invalid_request",
    )
    .await;
    refused(
        &nodes[f1],
        "/query",
        json!({"sql": "UPDATE test.items SET qty = 0"}),
        400,
        "wrong_statement",
    )
    .await;
    refused(
        &nodes[f1],
        "/query",
        json!({"sql": "SELECT * FROM test.items INTO OUTFILE '/tmp/items'"}),
        400,
        "wrong_statement",
    )
    .await;
    refused(
        &nodes[f1],
        "/query",
        json!({"sql": "SELECT 1", "consistency": "eventual"}),
        400,
        "invalid_request",
    )
    .await;
    refused(
        &nodes[f1],
        "/query",
        json!({"sql": "SELECT ? + ?", "params": [1]}),
        400,
        "invalid_request",
    )
    .await;
    let v = refused(
        &nodes[f1],
        "/query",
        json!({"sql": "SELECT nope FROM test.items"}),
        400,
        "mariadb_error",
    )
    .await;
    assert_eq!(
        (
            v["error"]["errno"].as_u64(),
            v["error"]["sqlstate"].as_str()
        ),
        (Some(1054), Some("42S22")),
        "{v}"
    );
    let auth = format!("Bearer {TOKEN}");
    let (status, v) = http(
        nodes[f1].api_port,
        "POST",
        "/write/insert",
        &[("Authorization", &auth)],
        b"{\"table\": ",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    let big = format!(
        r#"{{"table":"{t}","values":{{"name":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let (status, v) = http(
        nodes[f1].api_port,
        "POST",
        "/write/insert",
        &[("Authorization", &auth)],
        big.as_bytes(),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    let (status, v) = http(
        nodes[f1].api_port,
        "GET",
        "/write/insert",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{v}"
    );

    // None of that changed a row, anywhere.
    settled(&nodes, "SELECT COUNT(*) FROM test.items", "3").await;
    for n in &nodes {
        assert_eq!(rows_on(n).await, want, "node-{}", n.n);
    }
}

/// The sum of a metric's samples whose labels contain every one of `labels`
/// (`key="value"`); `None` when the page has no such sample.
fn metric(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut sum = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = series.split_once('{').unwrap_or((series, ""));
        if n != name || !labels.iter().all(|want| l.contains(want)) {
            continue;
        }
        *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
    }
    sum
}

async fn scrape(node: &ProcNode) -> String {
    let (status, v) = http(node.api_port, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200, "{v}");
    v.as_str().expect("the text format").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_with_the_load() {
    let nodes = cluster_of(3, FAST).await;
    let l = leader_among(&nodes, |_| true).await;
    let f = (l + 1) % 3;
    common::procs::write(&nodes[l], "CREATE TABLE test.m (id INT PRIMARY KEY)").await;
    settled(&nodes, "SELECT COUNT(*) FROM test.m", "0").await;
    let (lead0, fol0) = (scrape(&nodes[l]).await, scrape(&nodes[f]).await);

    // 20 writes through the follower's proxy, and one statement that fails.
    let mut c = nodes[f].client().await.unwrap();
    for i in 0..20 {
        c.query_drop(format!("INSERT INTO test.m VALUES ({i})"))
            .await
            .unwrap();
    }
    assert!(c.query_drop("INSERT INTO test.m VALUES (0)").await.is_err());
    let _: Vec<u32> = c.query("SELECT id FROM test.m").await.unwrap();
    drop(c);
    settled(&nodes, "SELECT COUNT(*) FROM test.m", "20").await;
    let (lead1, fol1) = (scrape(&nodes[l]).await, scrape(&nodes[f]).await);

    let moved = |before: &str, after: &str, name: &str, labels: &[&str]| {
        let (b, a) = (
            metric(before, name, labels).unwrap_or(0.0),
            metric(after, name, labels),
        );
        let a = a.unwrap_or_else(|| panic!("{name}{labels:?} missing:\n{after}"));
        assert!(a > b, "{name}{labels:?}: {b} -> {a}");
        a - b
    };
    // The follower's proxy saw the statements and routed the writes to the leader.
    assert!(
        moved(
            &fol0,
            &fol1,
            "wolfscale_proxy_statements_total",
            &["class=\"write\""]
        ) >= 21.0
    );
    assert!(
        moved(
            &fol0,
            &fol1,
            "wolfscale_proxy_routed_total",
            &["target=\"leader\""]
        ) >= 21.0
    );
    moved(
        &fol0,
        &fol1,
        "wolfscale_proxy_routed_total",
        &["target=\"local\""],
    );
    moved(
        &fol0,
        &fol1,
        "wolfscale_proxy_errors_total",
        &["code=\"1062\""],
    );
    moved(
        &fol0,
        &fol1,
        "wolfscale_proxy_statement_seconds_count",
        &["class=\"write\""],
    );
    moved(&fol0, &fol1, "wolfscale_proxy_connections_total", &[]);
    // The leader committed them, synced its log; the follower applied them.
    assert!(moved(&lead0, &lead1, "wolfscale_commit_seconds_count", &[]) >= 20.0);
    moved(&lead0, &lead1, "wolfscale_wal_fsync_seconds_count", &[]);
    moved(&lead0, &lead1, "wolfscale_log_append_entries_count", &[]);
    assert!(moved(&lead0, &lead1, "wolfscale_log_last_index", &[]) >= 20.0);
    assert!(moved(&fol0, &fol1, "wolfscale_applied_entries_total", &[]) >= 20.0);
    assert!(moved(&fol0, &fol1, "wolfscale_applied_index", &[]) >= 20.0);
    // Roles, health, and the followers' lag as the leader sees it.
    assert_eq!(metric(&lead1, "wolfscale_is_leader", &[]), Some(1.0));
    assert_eq!(metric(&fol1, "wolfscale_is_leader", &[]), Some(0.0));
    assert_eq!(metric(&fol1, "wolfscale_database_healthy", &[]), Some(1.0));
    let follower = format!("node=\"node-{}\"", nodes[f].n);
    assert!(
        metric(&lead1, "wolfscale_replication_lag_entries", &[&follower]).is_some(),
        "{lead1}"
    );
    assert!(
        metric(&lead1, "wolfscale_replication_lag_seconds", &[&follower]).is_some(),
        "{lead1}"
    );
    assert!(
        metric(&lead1, "wolfscale_leader_changes_total", &[]).unwrap_or(0.0) >= 1.0,
        "{lead1}"
    );
}

/// schemathesis (pip-installed by scripts/test-deps.sh) against a follower's API with
/// the document it serves: no 5xx, every status and body as documented, and requests
/// the schema forbids refused with a 4xx. The admin endpoints are left out: random
/// promotes, removals and migrations would take the cluster apart under the run (they
/// have their own tests in tests/admin.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_keeps_to_its_openapi_document() {
    let nodes = cluster_of(
        3,
        Tuning {
            api_token: Some(TOKEN),
            ..FAST
        },
    )
    .await;
    let l = leader_among(&nodes, |_| true).await;
    ok(
        &nodes[l],
        "/write/ddl",
        json!({"ddl": "CREATE TABLE test.items (id INT PRIMARY KEY, name VARCHAR(40))"}),
    )
    .await;
    let f = (l + 1) % 3;
    let url = format!("http://127.0.0.1:{}/openapi.json", nodes[f].api_port);
    let report = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("python3")
            .args(["-m", "schemathesis.cli", "run", &url])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection",
            ])
            .args([
                "--exclude-path-regex",
                "^/(cluster/(promote|demote|nodes/|migrate)|snapshot)",
            ])
            .args(["--max-examples", "40", "--seed", "7", "--workers", "2"])
            .args(["--request-timeout", "30", "--no-color", "--report-dir"])
            .arg(report.path())
            // Its example cache (.schemathesis/) goes to the temporary directory, not
            // into the repository: every run starts fresh.
            .current_dir(report.path())
            .output()
            .expect("run schemathesis (scripts/test-deps.sh installs it)")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis.txt");
    std::fs::write(&kept, text.as_bytes()).ok();
    // It ran the generated cases (coverage and fuzzing phases), not nothing.
    assert!(
        text.contains("Fuzzing") && text.contains("passed") && !text.contains("failed"),
        "{text}"
    );
    // And the cluster is whole afterwards.
    settled(&nodes, "SELECT COUNT(*) >= 0 FROM test.items", "1").await;
}

/// The status page in headless Chromium (Debian's package, installed by
/// scripts/test-deps.sh): after its script has run, every node is in the table with
/// its role and status, and the sparklines are drawn. The screenshot is kept in
/// target/status-page.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_page_shows_every_node() {
    let nodes = cluster_of(3, FAST).await;
    let l = leader_among(&nodes, |_| true).await;
    let f = (l + 2) % 3;
    common::procs::write(&nodes[l], "CREATE TABLE test.p (id INT PRIMARY KEY)").await;
    let overview = || async {
        let (status, v) = http(nodes[f].api_port, "GET", "/cluster/overview", &[], b"").await;
        assert_eq!(status, 200, "{v}");
        v
    };
    let leader = format!("node-{}", nodes[l].n);
    // Once the page's sampler has seen every member answer, a burst of statements …
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while overview().await["members"]
        .as_array()
        .map_or(0, |ms| ms.iter().filter(|m| m["reachable"] == true).count())
        < 3
    {
        assert!(std::time::Instant::now() < deadline, "{}", overview().await);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(wolfscale::api::overview::SAMPLE_EVERY).await;
    let mut c = nodes[l].client().await.unwrap();
    for i in 0..200 {
        c.query_drop(format!("INSERT INTO test.p VALUES ({i})"))
            .await
            .unwrap();
    }
    drop(c);
    // … shows in the leader's statement rate within a few samples.
    loop {
        let v = overview().await;
        let peak = v["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["rate"][&leader].as_f64())
            .fold(0.0, f64::max);
        if peak > 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no statement rate for {leader}: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(wolfscale::api::overview::SAMPLE_EVERY).await;
    let url = format!("http://127.0.0.1:{}/", nodes[f].api_port);
    let (status, page) = http(nodes[f].api_port, "GET", "/", &[], b"").await;
    assert_eq!(status, 200);
    let page = page.as_str().unwrap_or_default().to_string();
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "external assets"
    );
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        tokio::task::block_in_place(|| {
            std::process::Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .args(["--window-size=1400,500", "--virtual-time-budget=8000"])
                .args(extra)
                .arg(&url)
                .output()
                .expect("run chromium (scripts/test-deps.sh installs it)")
        })
    };
    let out = chromium(&["--dump-dom"]);
    assert!(out.status.success(), "{out:?}");
    let dom = String::from_utf8_lossy(&out.stdout);
    for n in &nodes {
        assert!(
            dom.contains(&format!("data-node=\"node-{}\"", n.n)),
            "node-{} missing:\n{dom}",
            n.n
        );
    }
    assert!(dom.contains(">leader<"), "{dom}");
    assert!(dom.contains("st-Active"), "{dom}");
    assert!(
        dom.matches("<polyline").count() >= 3,
        "no sparklines:\n{dom}"
    );
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "the page could not refresh:\n{dom}"
    );
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot"
    );
}

/// The README's curl examples (between its `api-examples` markers), run as written
/// against a follower of a live cluster whose `[database] database` is `myapp`: each
/// answers 200 with no error, and every node ends with the rows they leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_api_examples_work_as_written() {
    let nodes = cluster_of(
        3,
        Tuning {
            db_extra: "database = \"myapp\"\n",
            ..FAST
        },
    )
    .await;
    let l = leader_among(&nodes, |_| true).await;
    common::procs::write(&nodes[l], "CREATE DATABASE myapp").await;
    let f = (l + 1) % 3;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- api-examples -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /api-examples -->").next())
        .expect("the README's api-examples block");
    let mut commands: Vec<String> = Vec::new();
    for line in block
        .lines()
        .filter(|l| !l.starts_with("```") && !l.trim().is_empty())
    {
        let line = line.trim_end().trim_end_matches('\\');
        if line.starts_with("curl ") {
            commands.push(line.to_string());
        } else {
            commands.last_mut().expect("a curl first").push_str(line);
        }
    }
    assert!(commands.len() >= 12, "{commands:?}");
    let here = format!("127.0.0.1:{}", nodes[f].api_port);
    for cmd in &commands {
        let run = format!(
            "{} -sS -w '\\n%{{http_code}}'",
            cmd.replace("localhost:8080", &here)
        );
        let out = tokio::task::block_in_place(|| {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(&run)
                .output()
                .unwrap()
        });
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.trim_end().rsplit_once('\n').unwrap_or(("", &text));
        assert!(
            out.status.success() && code == "200",
            "{cmd}\n-> {code}: {body}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{cmd}: {e}: {body}"));
        assert!(v.get("error").is_none(), "{cmd}: {v}");
        if cmd.contains("/query") {
            // After the batch: Bob (updated) and Dan (inserted); Carol deleted.
            assert_eq!(v["rows"], json!([[1, "Bob"], [3, "Dan"]]), "{v}");
        }
    }
    settled(
        &nodes,
        "SELECT GROUP_CONCAT(id, ':', name ORDER BY id) FROM myapp.users",
        "1:Bob",
    )
    .await;
    settled(
        &nodes,
        "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'myapp' AND TABLE_NAME = 'users' AND COLUMN_NAME = 'created'",
        "1",
    )
    .await;
}

/// `examples/`: the three cluster configs and the standalone proxy's load without an
/// error; the Rust client
/// (`examples/follower_client.rs`) writes through a follower and reads its own write on
/// two connections; the HTTP walkthrough script runs to its end against a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_examples_run_against_a_live_cluster() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for i in 1..=3 {
        let path = repo.join(format!("examples/cluster/node-{i}.toml"));
        let (cfg, warnings) = wolfscale::config::Config::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(cfg.node.id, format!("node-{i}"));
        assert_eq!(cfg.cluster.peers.len(), 2);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
    let path = repo.join("examples/cluster/proxy.toml");
    let (cfg, warnings) = wolfscale::config::Config::load_as(&path, wolfscale::config::Role::Proxy)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(cfg.cluster.peers.len(), 3);
    assert!(warnings.is_empty(), "{warnings:?}");
    let nodes = cluster_of(
        3,
        Tuning {
            api_token: Some(TOKEN),
            ..FAST
        },
    )
    .await;
    let l = leader_among(&nodes, |_| true).await;
    let f = (l + 1) % 3;
    let client = std::path::Path::new(env!("CARGO_BIN_EXE_wolfscale"))
        .parent()
        .unwrap()
        .join("examples/follower_client");
    if !client.exists() {
        // A filtered run (`--test api`) builds no examples; the whole suite does.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = tokio::task::block_in_place(|| {
            std::process::Command::new(cargo)
                .args(["build", "--example", "follower_client"])
                .current_dir(repo)
                .status()
        });
        assert!(built.is_ok_and(|s| s.success()), "cannot build the example");
    }
    let url = format!(
        "mysql://app:{}@127.0.0.1:{}/test",
        common::APP_PASSWORD,
        nodes[f].proxy_port
    );
    let out =
        tokio::task::block_in_place(|| std::process::Command::new(&client).arg(&url).output())
            .unwrap_or_else(|e| panic!("{}: {e} (built by the test build)", client.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("ok: id"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    settled(&nodes, "SELECT COUNT(*) FROM test.example_notes", "1").await;

    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("bash")
            .arg(repo.join("examples/api-walkthrough.sh"))
            .env("API", format!("http://127.0.0.1:{}", nodes[f].api_port))
            .env("TOKEN", TOKEN)
            .env("DB", "test")
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(r#""rows":[["bolt",13]]"#), "{text}");
    settled(
        &nodes,
        "SELECT GROUP_CONCAT(item, '=', qty) FROM test.walkthrough",
        "bolt=13",
    )
    .await;
}
