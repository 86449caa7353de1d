//! `wolfctl` against `wolfscale start` processes: `list servers` and `status` (open), and
//! `promote`, `demote` and `remove` through the API's admin endpoints behind
//! `[api] token`.

mod common;

use std::time::{Duration, Instant};

use common::procs::{cluster_of, leader_among, write, ProcNode, Tuning, FAST};
use mysql_async::prelude::*;

const TOKEN: &str = "operator-token-7f3a";

/// `wolfctl -e <node's API> [--token T] args…`: (success, stdout, stderr).
fn wolfctl(node: &ProcNode, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wolfctl"));
    cmd.arg("-e")
        .arg(format!("http://127.0.0.1:{}", node.api_port))
        .env_remove("WOLFSCALE_API_TOKEN")
        .env_remove("WOLFCTL_ENDPOINT")
        .env_remove("WOLFSCALE_CONFIG");
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    let out = tokio::task::block_in_place(|| cmd.args(args).output().expect("run wolfctl"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn leader_id(node: &ProcNode) -> Option<String> {
    let s = node.status().await?;
    s["leader_id"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_promote_demote_and_remove_nodes() {
    let nodes = cluster_of(
        3,
        Tuning {
            api_token: Some(TOKEN),
            ..FAST
        },
    )
    .await;
    let l = leader_among(&nodes, |_| true).await;
    write(&nodes[l], "CREATE TABLE test.admin (id INT PRIMARY KEY)").await;
    // The follower that is not the preferred leader (node-1) where possible.
    let f = (0..3).rev().find(|i| *i != l).unwrap();
    let name = |i: usize| format!("node-{}", nodes[i].n);

    // Snowflake ids: from every node, distinct, each naming its node.
    let mut ids = std::collections::BTreeSet::new();
    for (i, n) in nodes.iter().enumerate() {
        for _ in 0..3 {
            let (ok, out, err) = wolfctl(n, None, &["id"]);
            assert!(ok, "id: {err}");
            let id: u64 = out.trim().parse().expect("a number");
            assert_eq!(wolfscale::id::parts(id).node as usize, nodes[i].n, "{id}");
            assert!(ids.insert(id), "duplicate id {id}");
        }
    }
    // Read-only commands need no token.
    let (ok, out, err) = wolfctl(&nodes[f], None, &["list", "servers"]);
    assert!(ok, "list servers: {err}");
    for i in 0..3 {
        assert!(out.contains(&name(i)), "{out}");
    }
    assert!(out.contains(&format!("leader: {}", name(l))), "{out}");
    for col in ["NODE", "ADDRESS", "ROLE", "STATUS", "LOG", "APPLIED", "LAG"] {
        assert!(
            out.lines().nth(1).is_some_and(|h| h.contains(col)),
            "{col}: {out}"
        );
    }
    let (ok, out, err) = wolfctl(&nodes[f], None, &["list", "servers", "--json"]);
    assert!(ok, "list servers --json: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{v}");
    for m in members {
        // Each member's own indexes, from its own API.
        assert!(m["applied_index"].as_u64().is_some_and(|i| i > 0), "{m}");
        assert!(m["last_log_index"].as_u64().is_some_and(|i| i > 0), "{m}");
    }
    let (ok, out, _) = wolfctl(&nodes[f], None, &["promote", "--json"]);
    assert!(!ok, "promote without the token");
    let v: serde_json::Value = serde_json::from_str(&out).expect("the error as JSON");
    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
    let (ok, out, err) = wolfctl(&nodes[f], None, &["status"]);
    assert!(ok && out.contains(&name(f)), "status: {out} {err}");

    // Admin commands without the token, or with a wrong one, change nothing.
    for token in [None, Some("wrong-token")] {
        let (ok, _, err) = wolfctl(&nodes[f], token, &["promote"]);
        assert!(!ok && err.contains("HTTP 401"), "{token:?}: {err}");
    }
    assert_eq!(leader_id(&nodes[f]).await, Some(name(l)));

    // Promote the follower: it leads when the command returns, and keeps leading past
    // the preferred-leader rule's settle and interval (5 and 10 election timeouts).
    let (ok, out, err) = wolfctl(&nodes[f], Some(TOKEN), &["promote"]);
    assert!(ok, "promote: {err}");
    assert!(out.contains(&format!("{} is the leader", name(f))), "{out}");
    assert_eq!(leader_id(&nodes[l]).await, Some(name(f)));
    write(&nodes[l], "INSERT INTO test.admin VALUES (1)").await;
    let until = Instant::now() + Duration::from_secs(11);
    while Instant::now() < until {
        for n in &nodes {
            let s = n.status().await.expect("status");
            assert_eq!(s["leader_id"], name(f).as_str(), "leadership moved: {s}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Demote is the leader's: elsewhere it is refused, naming the leader.
    let (ok, _, err) = wolfctl(&nodes[l], Some(TOKEN), &["demote"]);
    assert!(
        !ok && err.contains("not the leader") && err.contains(&name(f)),
        "{err}"
    );
    let (ok, out, err) = wolfctl(&nodes[f], Some(TOKEN), &["demote"]);
    assert!(ok, "demote: {err}");
    let new_leader = leader_among(&nodes, |i| i != f).await;
    assert!(
        out.contains(&format!("handed leadership to {}", name(new_leader))),
        "{out}"
    );
    write(&nodes[f], "INSERT INTO test.admin VALUES (2)").await;

    // Remove: unknown nodes and the leader itself are refused; any other node is taken
    // out of the membership (asked through a follower, which names the leader).
    let (ok, _, err) = wolfctl(&nodes[f], Some(TOKEN), &["remove", "node-99"]);
    assert!(!ok && err.contains("no node named node-99"), "{err}");
    let (ok, _, err) = wolfctl(&nodes[f], Some(TOKEN), &["remove", &name(new_leader)]);
    assert!(!ok && err.contains("demote it first"), "{err}");
    let gone = (0..3).find(|i| *i != new_leader && *i != f).unwrap();
    let (ok, out, err) = wolfctl(&nodes[f], Some(TOKEN), &["remove", &name(gone)]);
    assert!(ok, "remove: {err}");
    assert!(out.contains(&format!("{} removed", name(gone))), "{out}");
    let members = |v: &serde_json::Value| -> Vec<String> {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["node_id"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = common::procs::http_get_json(nodes[f].api_port, "/cluster")
            .await
            .expect("/cluster");
        if !members(&v).contains(&name(gone)) {
            assert_eq!(members(&v).len(), 2, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "still a member: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The two that remain take writes (a majority of two is both).
    write(&nodes[f], "INSERT INTO test.admin VALUES (3)").await;
    for i in [f, new_leader] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut c = nodes[i].db.root().await;
            let n: Option<i64> = c
                .query_first("SELECT COUNT(*) FROM test.admin")
                .await
                .unwrap();
            if n == Some(3) {
                break;
            }
            assert!(Instant::now() < deadline, "{}: {n:?} rows", name(i));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A follower whose MariaDB was changed behind the cluster's back diverges (its replay
/// of the next entry fails) and stops applying. `wolfctl migrate --from` replaces its
/// databases with a fresh snapshot of the leader's: it applies again, is Active, and has
/// the cluster's rows, including those written while it was diverged and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_diverged_node_is_migrated_from_a_donor() {
    let nodes = cluster_of(3, FAST).await;
    let l = leader_among(&nodes, |_| true).await;
    write(&nodes[l], "CREATE TABLE test.m (id INT PRIMARY KEY)").await;
    write(&nodes[l], "INSERT INTO test.m VALUES (1)").await;
    let k = (0..3).rev().find(|i| *i != l).unwrap();
    let count = |i: usize| {
        let db = &nodes[i].db;
        async move {
            let mut c = db.root().await;
            c.query_first::<i64, _>("SELECT COUNT(*) FROM test.m")
                .await
                .ok()
                .flatten()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(k).await != Some(1) {
        assert!(Instant::now() < deadline, "the follower never got row 1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Behind the cluster's back: the follower's MariaDB gets row 2 first.
    let mut c = nodes[k].db.root().await;
    c.query_drop(
        "SET GLOBAL read_only = 0; INSERT INTO test.m VALUES (2); SET GLOBAL read_only = 1",
    )
    .await
    .unwrap();
    write(&nodes[l], "INSERT INTO test.m VALUES (2)").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = nodes[k].status().await.expect("status");
        if s["status"] == "Diverged" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not diverge: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write(&nodes[l], "INSERT INTO test.m VALUES (3)").await;
    // The leader refuses to be a donor (its dump would hold every COMMIT): a follower.
    let (ok, _, err) = wolfctl(
        &nodes[k],
        None,
        &[
            "migrate",
            "--from",
            &format!("127.0.0.1:{}", nodes[l].api_port),
        ],
    );
    assert!(!ok && err.contains("migrate from a follower"), "{err}");
    let (ok, out, _) = wolfctl(
        &nodes[k],
        None,
        &[
            "migrate",
            "--json",
            "--from",
            &format!("127.0.0.1:{}", nodes[l].api_port),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("the final status as JSON");
    assert!(!ok && v["phase"] == "failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("migrate from a follower")),
        "{v}"
    );
    let third = (0..3).find(|i| *i != l && *i != k).unwrap();
    let donor = format!("127.0.0.1:{}", nodes[third].api_port);
    let (ok, out, err) = wolfctl(&nodes[k], None, &["migrate", "--from", &donor]);
    assert!(ok, "migrate: {out} {err}");
    assert!(out.contains("migrated from"), "{out}");
    assert!(
        err.contains("100%") || err.contains("loading"),
        "no progress shown: {err}"
    );
    write(&nodes[l], "INSERT INTO test.m VALUES (4)").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = nodes[k].status().await.expect("status");
        if s["status"] == "Active" && count(k).await == Some(4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the migrated node did not recover: {s} with {:?} rows; its log:\n{}",
            count(k).await,
            nodes[k].log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = nodes[k].db.root().await;
    let ids: Vec<i64> = c.query("SELECT id FROM test.m ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

/// A follower whose data directory is replaced comes back under its old id and number
/// with an empty log, an empty MariaDB and no vote. It must not count as the member it was. Here a row is
/// committed by the leader and that follower only (the third node is down). Then the
/// follower is wiped and the leader dies. If the third node could win an election with
/// the wiped node's vote, it would lead without that acknowledged row. Its peers refuse
/// the wiped node by its incarnation, so no leader is elected until the old leader is
/// back. Then an operator removes the wiped node and it joins again as a new member,
/// through a learner, to a voter with every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_cannot_vote_as_its_old_self() {
    let mut nodes = cluster_of(3, FAST).await;
    let l = leader_among(&nodes, |_| true).await;
    write(&nodes[l], "CREATE TABLE test.w (id INT PRIMARY KEY)").await;
    let b = (0..3).rev().find(|i| *i != l).unwrap();
    let c = (0..3).find(|i| *i != l && *i != b).unwrap();
    let b_name = format!("node-{}", nodes[b].n);
    // Wait until the third node has the table, then take it down: row 1 is committed
    // by the leader and `b` alone.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = nodes[c].db.root().await;
        let t: Option<i64> = conn
            .query_first("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'test' AND table_name = 'w'")
            .await
            .unwrap();
        if t == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "no table on the third node");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[c].kill();
    write(&nodes[l], "INSERT INTO test.w VALUES (1)").await;
    // `b` is replaced by a fresh machine under its old name: empty data directory,
    // empty MariaDB.
    nodes[b].kill();
    std::fs::remove_dir_all(nodes[b].dir.path().join("data")).unwrap();
    let mut conn = nodes[b].db.root().await;
    conn.query_drop("DROP DATABASE test; DROP DATABASE wolfscale; CREATE DATABASE test")
        .await
        .unwrap();
    drop(conn);
    nodes[l].kill();
    nodes[c].spawn(false);
    nodes[b].spawn(false);
    // The third node stands for election; the wiped node's vote does not count.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Some(s) = nodes[c].status().await {
            assert_ne!(
                s["role"], "leader",
                "elected with a wiped node's vote, without the acknowledged row: {s}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        nodes[c]
            .log_text()
            .contains("its data directory was replaced"),
        "the third node did not refuse the wiped node; its log:\n{}",
        nodes[c].log_text()
    );
    nodes[l].spawn(false);
    let leader = leader_among(&nodes, |i| i != b).await;
    write(&nodes[leader], "INSERT INTO test.w VALUES (2)").await;
    // The acknowledged row survived.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = nodes[c].db.root().await;
        let ids: Vec<i64> = conn
            .query("SELECT id FROM test.w ORDER BY id")
            .await
            .unwrap();
        if ids == [1, 2] {
            break;
        }
        assert!(Instant::now() < deadline, "rows on the third node: {ids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, out, err) = wolfctl(&nodes[c], None, &["remove", &b_name]);
    assert!(ok, "remove: {out} {err}");
    nodes[b].kill();
    let via = format!("127.0.0.1:{}", nodes[leader].cluster_port);
    nodes[b].spawn_with(&["join", &via]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = common::procs::http_get_json(nodes[leader].api_port, "/cluster").await;
        let voter = v.as_ref().is_some_and(|v| {
            v["members"].as_array().into_iter().flatten().any(|m| {
                m["node_id"] == b_name.as_str() && m["voter"] == true && m["status"] == "Active"
            })
        });
        let mut conn = nodes[b].db.root().await;
        let rows: Option<i64> = conn
            .query_first("SELECT COUNT(*) FROM test.w")
            .await
            .ok()
            .flatten();
        if voter && rows == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wiped node did not join again: {v:?}, {rows:?} rows; its log:\n{}",
            nodes[b].log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
