//! `wolfscale proxy` in front of a 3-node cluster: the router with no MariaDB of its
//! own (ARCHITECTURE §1). It learns the members and the leader from the nodes, writes
//! through the leader, reads from followers fresh enough for the session, and refuses
//! a peer without the cluster secret. The leader kill under load through it is in
//! `faults.rs`.

mod common;

use std::collections::BTreeSet;

use common::procs::{cluster_of, leader_among, settled, write, ProcProxy, FAST};
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_reach_every_node_and_reads_come_from_followers() {
    let nodes = cluster_of(3, FAST).await;
    let l = leader_among(&nodes, |_| true).await;
    write(
        &nodes[l],
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
    )
    .await;
    let proxy = ProcProxy::start(&nodes, "").await;
    let mut c = proxy
        .client()
        .await
        .expect("login through the standalone proxy");

    // Read-your-writes: each autocommit insert is visible to the next read at once,
    // wherever that read runs.
    for i in 1..=30 {
        c.query_drop(format!("INSERT INTO t VALUES ({i}, 'v{i}')"))
            .await
            .unwrap();
        let n: i64 = c
            .query_first("SELECT COUNT(*) FROM t")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, i, "the read after insert {i} did not see it");
    }
    // A transaction runs on the leader, and sees its own uncommitted row.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE t SET v = 'in-txn' WHERE id = 1")
        .await
        .unwrap();
    let v: String = c
        .query_first("SELECT v FROM t WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "in-txn");
    c.query_drop("COMMIT").await.unwrap();
    // Prepared statements with parameters, both ways.
    c.exec_drop("INSERT INTO t VALUES (?, ?)", (100, "prepared"))
        .await
        .unwrap();
    let v: Option<String> = c
        .exec_first("SELECT v FROM t WHERE id = ?", (100,))
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("prepared"));
    settled(&nodes, "SELECT COUNT(*) FROM test.t", "31").await;
    settled(&nodes, "SELECT v FROM test.t WHERE id = 1", "in-txn").await;

    // Sessions are spread over the followers; none reads from the leader while both
    // followers are healthy. `@@port` is answered by the MariaDB that served the read.
    let followers: BTreeSet<u16> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != l)
        .map(|(_, n)| n.db.port())
        .collect();
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let mut s = proxy.client().await.unwrap();
        let port: u16 = s.query_first("SELECT @@port").await.unwrap().unwrap();
        seen.insert(port);
        s.disconnect().await.ok();
    }
    assert_eq!(
        seen, followers,
        "reads came from {seen:?}, followers are {followers:?}"
    );

    // A session variable runs on the member and, once a write opens the link, on the
    // leader too.
    let mut s = proxy.client().await.unwrap();
    s.query_drop("SET @x = 1").await.unwrap();
    let x: i64 = s.query_first("SELECT @x").await.unwrap().unwrap();
    assert_eq!(x, 1, "a user variable set through the proxy is read back");
    s.query_drop("INSERT INTO t VALUES (200, CAST(@x AS CHAR))")
        .await
        .unwrap();
    let v: String = s
        .query_first("SELECT v FROM t WHERE id = 200")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "1", "the leader did not get the session's variable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_without_the_secret_learns_nothing() {
    let nodes = cluster_of(3, FAST).await;
    leader_among(&nodes, |_| true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wolfscale.toml");
    let peers: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"127.0.0.1:{}\"", n.advertise_port))
        .collect();
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"proxy-x\"\n[database]\nuser = \"root\"\n\
             [cluster]\npeers = [{}]\nsecret = \"not-the-secret\"\n\
             [proxy]\nbind_address = \"127.0.0.1:{}\"\n",
            peers.join(", "),
            wolfscale::localdb::free_port().unwrap()
        ),
    )
    .unwrap();
    // It gives up after its start-up patience with an error naming the peers; the
    // nodes log the refused handshake.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wolfscale"))
            .arg("--config")
            .arg(&config)
            .arg("proxy")
            .env("WOLFSCALE_STANDALONE_PATIENCE_MS", "1500")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "it started without the secret: {stderr}"
    );
    assert!(stderr.contains("no leader learned"), "{stderr}");
    let logged = nodes
        .iter()
        .any(|n| n.log_text().contains("could not prove the cluster secret"));
    assert!(logged, "no node logged the refused proxy");
}

/// Every read level gives read-your-writes through the proxy; KILL QUERY of a read that
/// runs on a member stops it; when a follower goes away, new sessions read from the
/// other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_levels_kill_and_a_lost_follower() {
    let mut nodes = cluster_of(3, FAST).await;
    let l = leader_among(&nodes, |_| true).await;
    write(&nodes[l], "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let proxy = ProcProxy::start(&nodes, "").await;
    let mut c = proxy.client().await.unwrap();
    let mut id = 0;
    for level in ["fresh", "linearizable", "session", "local"] {
        c.query_drop(format!("SET wolfscale_read_consistency = '{level}'"))
            .await
            .unwrap();
        // Enough rounds that a level that misses the session's writes is caught.
        for _ in 0..25 {
            id += 1;
            c.query_drop(format!("INSERT INTO t VALUES ({id})"))
                .await
                .unwrap();
            if level == "local" {
                continue;
            }
            let n: i64 = c
                .query_first("SELECT COUNT(*) FROM t")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, id, "{level}: the read did not see insert {id}");
        }
    }

    // KILL QUERY from another session of the proxy stops a read running on a member.
    let mut sleeper = proxy.client().await.unwrap();
    // The id the proxy's greeting gave: the one KILL takes.
    let victim = sleeper.id();
    assert_eq!(
        (victim >> 20) & 0x3ff,
        900,
        "connection ids carry the proxy's node number"
    );
    let started = std::time::Instant::now();
    let sleep = tokio::spawn(async move {
        sleeper
            .query_first::<i64, _>("SELECT SLEEP(20)")
            .await
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut killer = proxy.client().await.unwrap();
    killer
        .query_drop(format!("KILL QUERY {victim}"))
        .await
        .unwrap();
    let r = sleep.await.unwrap();
    assert!(
        matches!(&r, Err(e) if e.contains("1317")),
        "the killed SLEEP gave {r:?}, not ERR 1317 (query execution was interrupted)"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the killed read ran on for {:?}",
        started.elapsed()
    );

    // KILL CONNECTION ends the session: it is not taken for a member that died.
    let mut doomed = proxy.client().await.unwrap();
    doomed.query_drop("SELECT 1").await.unwrap();
    killer
        .query_drop(format!("KILL CONNECTION {}", doomed.id()))
        .await
        .unwrap();
    let after = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        doomed.query_drop("SELECT 1"),
    )
    .await
    .expect("a killed session answers at once");
    assert!(after.is_err(), "a killed session still runs statements");

    // A follower goes away (the one the proxy reads accounts through, if it is a
    // follower): new sessions read from the one left.
    let log = proxy.log_text();
    let service = log
        .lines()
        .rfind(|l| l.contains("reading accounts and table engines through this member"))
        .and_then(|l| l.split("proxy=127.0.0.1:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("the proxy names the member it reads accounts through:\n{log}"));
    let gone = (0..3)
        .find(|i| *i != l && nodes[*i].proxy_port == service)
        .or_else(|| (0..3).find(|i| *i != l))
        .unwrap();
    let left = (0..3).find(|i| *i != l && *i != gone).unwrap();
    // A session that reads from it, with state of its own.
    let gone_port = nodes[gone].db.port();
    let mut stays = None;
    for _ in 0..6 {
        let mut s = proxy.client().await.unwrap();
        let port: u16 = s.query_first("SELECT @@port").await.unwrap().unwrap();
        if port == gone_port {
            stays = Some(s);
            break;
        }
    }
    let mut stays = stays.expect("a session reads from every follower");
    stays
        .query_drop("SET @kept = 41, @@session.sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    nodes[gone].kill();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut ports = BTreeSet::new();
        for _ in 0..4 {
            let mut s = proxy.client().await.unwrap();
            let port: u16 = s.query_first("SELECT @@port").await.unwrap().unwrap();
            ports.insert(port);
        }
        if ports == BTreeSet::from([nodes[left].db.port()]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions still read from {ports:?} after node-{} went away",
            nodes[gone].n
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The session that read from it moved to the member left, with its variables.
    let (kept, mode, port): (i64, String, u16) = stays
        .query_first("SELECT @kept, @@sql_mode, @@port")
        .await
        .expect("a session whose read member died moves to another")
        .unwrap();
    assert_eq!((kept, mode.as_str()), (41, "ANSI_QUOTES"));
    assert_eq!(port, nodes[left].db.port());
    // An account created now logs in through the proxy: its accounts are read through
    // a member that is still there.
    c.query_drop("CREATE USER 'late'@'%' IDENTIFIED BY 'late-pw'")
        .await
        .unwrap();
    c.query_drop("GRANT SELECT ON test.* TO 'late'@'%'")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match mysql_async::Conn::new(common::opts(proxy.port, "late", "late-pw", Some("test")))
            .await
        {
            Ok(mut late) => {
                let n: i64 = late
                    .query_first("SELECT COUNT(*) FROM t")
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(n, id);
                break;
            }
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "a new account cannot log in through the proxy: {e}; its log:\n{}",
                proxy.log_text()
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// COM_CHANGE_USER and COM_RESET_CONNECTION through the proxy reach the member and the
/// leader: the new account reads and writes as itself, and the old session state is
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_user_and_reset_through_the_proxy() {
    let nodes = cluster_of(3, FAST).await;
    let l = leader_among(&nodes, |_| true).await;
    write(
        &nodes[l],
        "CREATE TABLE t (id INT PRIMARY KEY, who VARCHAR(80))",
    )
    .await;
    write(&nodes[l], "CREATE USER 'other'@'%' IDENTIFIED BY 'opw'").await;
    write(&nodes[l], "GRANT SELECT, INSERT ON test.* TO 'other'@'%'").await;
    let proxy = ProcProxy::start(&nodes, "").await;
    let mut c = proxy.client().await.unwrap();
    c.query_drop("SET @v = 1").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, CURRENT_USER())")
        .await
        .unwrap();
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("other".into()))
            .with_pass(Some("opw".into()))
            .with_db_name(Some("test".into())),
    )
    .await
    .expect("change user through the standalone proxy");
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("other@%"));
    let v: Option<Option<i64>> = c.query_first("SELECT @v").await.unwrap();
    assert_eq!(v, Some(None), "change user resets session state");
    c.query_drop("INSERT INTO t VALUES (2, CURRENT_USER())")
        .await
        .unwrap();
    let err = c
        .query_drop("CREATE TABLE nope (id INT)")
        .await
        .expect_err("other may not create tables");
    assert!(err.to_string().contains("1142"), "{err}");
    c.reset().await.expect("reset connection");
    let n: i64 = c
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    settled(
        &nodes,
        "SELECT GROUP_CONCAT(who ORDER BY id) FROM test.t",
        "app@%,other@%",
    )
    .await;
}

/// Through the proxy a client runs as exactly the account MariaDB gives its own
/// address, on the member it reads from and on the leader it writes through: the proxy
/// proves the client's address to both, never its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_run_as_the_account_of_their_own_address() {
    // The nodes' MariaDBs take PROXY headers from them, so a node logs a client in
    // as the account of the client's address (else it refuses one that would get
    // another account than from the node's own address).
    let tuning = common::procs::Tuning {
        db_args: &["--proxy-protocol-networks=127.0.0.0/8,localhost"],
        ..FAST
    };
    let nodes = cluster_of(3, tuning).await;
    let l = leader_among(&nodes, |_| true).await;
    write(
        &nodes[l],
        "CREATE TABLE t (id INT PRIMARY KEY, who VARCHAR(80))",
    )
    .await;
    write(
        &nodes[l],
        "CREATE USER 'h'@'127.0.0.2' IDENTIFIED BY 'h-two'",
    )
    .await;
    write(
        &nodes[l],
        "GRANT SELECT, INSERT ON test.* TO 'h'@'127.0.0.2'",
    )
    .await;
    write(&nodes[l], "CREATE USER 'h'@'%' IDENTIFIED BY 'h-any'").await;
    write(&nodes[l], "GRANT SELECT ON test.* TO 'h'@'%'").await;
    let proxy = ProcProxy::start(&nodes, "").await;
    let two: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let one: std::net::IpAddr = "127.0.0.1".parse().unwrap();

    let mut c = common::raw::Raw::try_login_from(proxy.port, two, "h", "h-two")
        .await
        .expect("h from 127.0.0.2 with its password");
    let who = c.query("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who[0][0].as_deref(), Some("h@127.0.0.2"), "the read member");
    c.query("INSERT INTO test.t VALUES (1, CURRENT_USER())")
        .await
        .expect("h@127.0.0.2 may insert");
    settled(&nodes, "SELECT who FROM test.t WHERE id = 1", "h@127.0.0.2").await;

    // From 127.0.0.1 the same name is h@'%': the other password, and no INSERT.
    assert!(
        common::raw::Raw::try_login_from(proxy.port, one, "h", "h-two")
            .await
            .is_err(),
        "h from 127.0.0.1 logged in with h@127.0.0.2's password"
    );
    let mut c = common::raw::Raw::try_login_from(proxy.port, one, "h", "h-any")
        .await
        .expect("h from 127.0.0.1 with h@%'s password");
    let who = c.query("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who[0][0].as_deref(), Some("h@%"));
    let err = c
        .query("INSERT INTO test.t VALUES (2, CURRENT_USER())")
        .await
        .expect_err("h@% may not insert");
    assert_eq!(err.0, 1142, "{err:?}");
}
