//! Failover as a client sees it (in-process nodes, each with its own MariaDB): a
//! statement that needs the leader is held while there is none, up to
//! `[proxy] failover_wait_ms`, then runs on the new leader or fails with a retryable
//! error; a KILL or a disconnect ends the wait and the statement never runs.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{full_cluster_with, leader_of, server_error, FullNode};
use mysql_async::prelude::*;
use mysql_async::Conn;

async fn q(c: &mut Conn, sql: &str) {
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn followers(nodes: &[FullNode]) -> Vec<usize> {
    let l = leader_of(nodes);
    (0..nodes.len()).filter(|&i| i != l).collect()
}

/// The values of `test.fo.n` on each node, sorted.
async fn values_on_each(nodes: &[FullNode]) -> Vec<Vec<i64>> {
    let rows = common::rows_on_each(nodes, "SELECT n FROM test.fo ORDER BY n").await;
    rows.into_iter()
        .map(|node| {
            node.into_iter()
                .map(|r| mysql_async::from_value::<i64>(r[0].clone()))
                .collect()
        })
        .collect()
}

/// The leader's node stops (its proxy closes its sessions, so the follower's link is
/// closed under it). A write through the follower, on the session whose link that
/// was and on a new one, waits out the election and runs once on the new leader.
/// Without the hold it fails with 2013 (outcome unknown) or 1290 (no leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_a_follower_wait_out_an_election() {
    common::init_logging();
    let mut nodes = full_cluster_with(3, |s| s.failover_wait = Duration::from_secs(20)).await;
    let l = leader_of(&nodes);
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    q(&mut c, "INSERT INTO fo (n) VALUES (1)").await;
    let f_name = nodes[f].raft.settings.node_id.clone();
    let old = nodes.remove(l);
    let _stopped = common::stop_full_node(old).await;
    let f = nodes
        .iter()
        .position(|n| n.raft.settings.node_id == f_name)
        .unwrap();
    let started = Instant::now();
    // The session whose link went to the old leader.
    q(&mut c, "INSERT INTO fo (n) VALUES (2)").await;
    let waited = started.elapsed();
    // A new session.
    let mut d = nodes[f].client(Some("test")).await;
    q(&mut d, "INSERT INTO fo (n) VALUES (3)").await;
    // A read on the leader (linearizable) is held and answered too.
    q(
        &mut d,
        "SET @@session.wolfscale_read_consistency = 'linearizable'",
    )
    .await;
    let n: Option<i64> = d.query_first("SELECT COUNT(*) FROM fo").await.unwrap();
    assert_eq!(n, Some(3));
    eprintln!("the first write after the leader stopped waited {waited:?}");
    drop((c, d));
    common::converged(&nodes, "test").await;
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &[1, 2, 3], "node {i}: each write exactly once");
    }
}

/// With no majority there is no leader: a write is held for `failover_wait_ms`, then
/// fails with 1290 saying nothing ran; the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_leader_a_write_fails_after_the_failover_wait() {
    let wait = Duration::from_millis(1500);
    let mut nodes = full_cluster_with(3, |s| s.failover_wait = wait).await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    let f_name = nodes[f].raft.settings.node_id.clone();
    let mut stopped = Vec::new();
    while nodes.len() > 1 {
        let i = nodes
            .iter()
            .position(|n| n.raft.settings.node_id != f_name)
            .unwrap();
        stopped.push(common::stop_full_node(nodes.remove(i)).await);
    }
    let started = Instant::now();
    let err = c
        .query_drop("INSERT INTO fo (n) VALUES (1)")
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let code = server_error(&err).map(|e| e.0);
    let msg = err.to_string();
    assert_eq!(code, Some(1290), "{msg}");
    assert!(msg.contains("failover_wait_ms"), "{msg}");
    assert!(
        waited >= wait - Duration::from_millis(100),
        "failed after {waited:?}"
    );
    // The session is still usable for local reads.
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM fo").await.unwrap();
    assert_eq!(n, Some(0));
    // But not for `fresh` ones: a node that has lost its leader cannot know what it
    // has not heard of, so the read waits for a leader, then fails.
    q(&mut c, "SET wolfscale_read_consistency = 'fresh'").await;
    let err = c
        .query_first::<i64, _>("SELECT COUNT(*) FROM fo")
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1290), "{err}");
    q(&mut c, "SET wolfscale_read_consistency = 'session'").await;
    // Once a majority is back, the write that failed is not there, and a new one runs.
    for raft in stopped {
        nodes.push(common::start_full_node(raft).await);
    }
    q(
        &mut c,
        "SET @@session.wolfscale_read_consistency = 'linearizable'",
    )
    .await;
    let mut ok = false;
    for _ in 0..100 {
        if c.query_drop("INSERT INTO fo (n) VALUES (2)").await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "no write accepted once the majority was back");
    drop(c);
    common::converged(&nodes, "test").await;
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &[2], "node {i}");
    }
}

/// A held statement is cancelled by KILL QUERY (the session goes on) and by the
/// client going away; neither is ever released to a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_or_disconnect_cancels_a_held_statement() {
    let mut nodes = full_cluster_with(3, |s| s.failover_wait = Duration::from_secs(60)).await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    let f_name = nodes[f].raft.settings.node_id.clone();
    let mut stopped = Vec::new();
    while nodes.len() > 1 {
        let i = nodes
            .iter()
            .position(|n| n.raft.settings.node_id != f_name)
            .unwrap();
        stopped.push(common::stop_full_node(nodes.remove(i)).await);
    }
    // KILL QUERY from another session of the same account.
    let id = c.id();
    let held = tokio::spawn(async move {
        let r = c.query_drop("INSERT INTO fo (n) VALUES (1)").await;
        (c, r)
    });
    let mut killer = nodes[0].client(Some("test")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    q(&mut killer, &format!("KILL QUERY {id}")).await;
    let (mut c, r) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("KILL QUERY released the held statement")
        .unwrap();
    let err = r.unwrap_err();
    assert_eq!(server_error(&err).map(|e| e.0), Some(1317), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM fo").await.unwrap();
    assert_eq!(n, Some(0), "the session goes on after KILL QUERY");
    // A client that goes away while its statement is held.
    let mut gone = nodes[0].client(Some("test")).await;
    let write = gone.query_drop("INSERT INTO fo (n) VALUES (2)");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), write)
            .await
            .is_err(),
        "the statement is held"
    );
    drop(gone);
    // Majority back: neither statement ever ran, and a new one does.
    for raft in stopped {
        nodes.push(common::start_full_node(raft).await);
    }
    q(&mut c, "INSERT INTO fo (n) VALUES (3)").await;
    drop((c, killer));
    common::converged(&nodes, "test").await;
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &[3], "node {i}: a cancelled statement ran");
    }
}

/// A cluster whose proxies sit behind relays: the member records (which a follower's
/// link dials) name the relays, while tests' own clients reach the proxies directly.
async fn cluster_behind_relays() -> (
    Vec<FullNode>,
    Arc<Mutex<HashMap<u16, common::relay::Relay>>>,
) {
    let relays: Arc<Mutex<HashMap<u16, common::relay::Relay>>> = Arc::default();
    let r = relays.clone();
    let nodes = full_cluster_with(3, move |s| {
        let advertised = s.listen;
        let real: std::net::SocketAddr =
            format!("127.0.0.1:{}", wolfscale::localdb::free_port().unwrap())
                .parse()
                .unwrap();
        let listener = std::net::TcpListener::bind(advertised).unwrap();
        r.lock()
            .unwrap()
            .insert(s.node_number, common::relay::Relay::start(listener, real));
        s.listen = real;
        s.failover_wait = Duration::from_secs(20);
    })
    .await;
    (nodes, relays)
}

fn number(node: &FullNode) -> u16 {
    node.raft.settings.number
}

/// The leader runs and commits a forwarded autocommit write, but its reply is lost
/// with the link. The follower asks the leader (once it can reach it again) whether
/// the write's request id is in the log: it is, so the client gets the stored OK (its
/// affected rows and insert id), and the write exists once. Without request ids the
/// client gets 2013, outcome unknown; a blind retry would insert it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_reply_was_lost_gets_its_stored_outcome() {
    let (nodes, relays) = cluster_behind_relays().await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    q(&mut c, "INSERT INTO fo (n) VALUES (1)").await;
    // If an election moves leadership before the write reaches the leader whose
    // replies are held (a starved machine: elections here come after 400 to 800 ms),
    // the old leader's refusal is held too. It is let through (the follower then sends
    // the write to the new leader, as nothing ran), and the scenario is played again
    // with the next value.
    let mut n = 1;
    loop {
        n += 1;
        let l = leader_of(&nodes);
        let ln = number(&nodes[l]);
        relays.lock().unwrap()[&ln].set(common::relay::Mode::HoldReplies);
        let write = tokio::spawn(async move {
            let r = c
                .query_drop(format!("INSERT INTO fo (n) VALUES ({n})"))
                .await;
            let counts = (c.affected_rows(), c.last_insert_id());
            (c, r, counts)
        });
        // Committed on the leader; its reply is held in the relay.
        let mut direct = nodes[l].raft.db.direct(Some("test")).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut committed = true;
        loop {
            let k: Option<i64> = direct
                .query_first(format!("SELECT COUNT(*) FROM fo WHERE n = {n}"))
                .await
                .unwrap();
            if k == Some(1) {
                break;
            }
            if leader_of(&nodes) != l || Instant::now() > deadline {
                committed = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(direct);
        if !committed {
            relays.lock().unwrap()[&ln].set(common::relay::Mode::Pass);
            assert_ne!(
                leader_of(&nodes),
                l,
                "the write did not commit on the leader"
            );
            assert!(n < 5, "leadership kept moving");
            let (back, r, _) = tokio::time::timeout(Duration::from_secs(30), write)
                .await
                .expect("the write was answered")
                .unwrap();
            r.unwrap_or_else(|e| panic!("the write through the new leader: {e}"));
            c = back;
            continue;
        }
        relays.lock().unwrap()[&ln].set(common::relay::Mode::Cut);
        wait_relay_idle(&relays, ln).await;
        relays.lock().unwrap()[&ln].set(common::relay::Mode::Pass);
        let (mut back, r, (affected, insert_id)) =
            tokio::time::timeout(Duration::from_secs(30), write)
                .await
                .expect("the write was answered")
                .unwrap();
        r.unwrap_or_else(|e| panic!("the write whose reply was lost: {e}"));
        assert_eq!(affected, 1);
        // The session reads its own write, under the id its OK gave.
        let k: Option<i64> = back.query_first("SELECT COUNT(*) FROM fo").await.unwrap();
        assert_eq!(k, Some(n));
        let id: Option<u64> = back
            .query_first(format!("SELECT id FROM fo WHERE n = {n}"))
            .await
            .unwrap();
        assert_eq!(insert_id, id);
        drop(back);
        break;
    }
    common::converged(&nodes, "test").await;
    let want: Vec<i64> = (1..=n).collect();
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &want, "node {i}: each write exactly once");
    }
}

/// The link breaks after a forwarded autocommit write was sent but before the leader
/// read it. The leader, asked, has every entry since the write was sent and not its
/// request id: the follower sends it again, and it exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_lost_on_its_way_is_sent_again() {
    let (nodes, relays) = cluster_behind_relays().await;
    let f = followers(&nodes)[0];
    let mut c = nodes[f].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    q(&mut c, "INSERT INTO fo (n) VALUES (1)").await;
    // If an election moves leadership before the write reaches the held link (a
    // starved machine), the write goes to the new leader instead: it is let through,
    // and the scenario is played again with the next value.
    let mut n = 1;
    loop {
        n += 1;
        let l = leader_of(&nodes);
        let ln = number(&nodes[l]);
        relays.lock().unwrap()[&ln].set(common::relay::Mode::HoldRequests);
        let write = tokio::spawn(async move {
            let r = c
                .query_drop(format!("INSERT INTO fo (n) VALUES ({n})"))
                .await;
            (c, r)
        });
        // The statement has reached the relay, which holds it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut held = true;
        while relays.lock().unwrap()[&ln].held_bytes() == 0 {
            if Instant::now() > deadline {
                held = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !held {
            relays.lock().unwrap()[&ln].set(common::relay::Mode::Pass);
            assert_ne!(leader_of(&nodes), l, "the write never reached the relay");
            assert!(n < 5, "leadership kept moving");
            let (back, r) = write.await.unwrap();
            r.unwrap_or_else(|e| panic!("the write through the new leader: {e}"));
            c = back;
            continue;
        }
        relays.lock().unwrap()[&ln].set(common::relay::Mode::Cut);
        wait_relay_idle(&relays, ln).await;
        relays.lock().unwrap()[&ln].set(common::relay::Mode::Pass);
        let (back, r) = tokio::time::timeout(Duration::from_secs(30), write)
            .await
            .expect("the write was answered")
            .unwrap();
        r.unwrap_or_else(|e| panic!("the write lost on its way: {e}"));
        drop(back);
        break;
    }
    common::converged(&nodes, "test").await;
    let want: Vec<i64> = (1..=n).collect();
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &want, "node {i}: each write exactly once");
    }
}

async fn wait_relay_idle(relays: &Mutex<HashMap<u16, common::relay::Relay>>, n: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while relays.lock().unwrap()[&n].live() > 0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not close its connections"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn raft_id(node: &FullNode) -> u64 {
    use openraft::async_runtime::watch::WatchReceiver;
    node.cluster.raft().metrics().borrow_watched().id
}

/// The documented rule ("the lowest id leads") as a preference: after leadership
/// moved to node-3, the leader hands it back to node-1 once node-1 has been caught up
/// for a while, by a leadership transfer. With `disable_auto_election` it stays put.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_returns_to_the_preferred_node() {
    for auto in [true, false] {
        let nodes =
            common::full_cluster_adjusted(3, |s| s.disable_auto_election = !auto, |_| {}).await;
        let first = nodes
            .iter()
            .position(|n| n.raft.settings.node_id == "node-1")
            .unwrap();
        let third = nodes
            .iter()
            .position(|n| n.raft.settings.node_id == "node-3")
            .unwrap();
        let l = leader_of(&nodes);
        assert_eq!(l, first, "node-1 bootstraps and leads");
        nodes[l]
            .cluster
            .raft()
            .trigger()
            .transfer_leader(raft_id(&nodes[third]))
            .await
            .unwrap();
        let moved = common::wait_until(Duration::from_secs(10), || async {
            nodes[third].is_writable()
        })
        .await;
        assert!(moved, "the transfer to node-3 did not happen");
        // Settle (5 election timeouts) plus the minimum interval: 8 s here.
        let wait = Duration::from_secs(if auto { 20 } else { 10 });
        let back = common::wait_until(wait, || async { nodes[first].is_writable() }).await;
        assert_eq!(
            back, auto,
            "auto elections {auto}: leadership back on node-1: {back}"
        );
    }
}

/// `[node] priority` outranks the order of ids: with node-2 at priority 90 (the others
/// at the default 50), the leader node-1 hands leadership to node-2 once it has been
/// caught up for a while, and it stays there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_moves_to_the_highest_priority() {
    let nodes = common::full_cluster_adjusted(
        3,
        |s| {
            if s.node_id == "node-2" {
                s.priority = 90;
            }
        },
        |_| {},
    )
    .await;
    let second = nodes
        .iter()
        .position(|n| n.raft.settings.node_id == "node-2")
        .unwrap();
    let moved = common::wait_until(Duration::from_secs(20), || async {
        nodes[second].is_writable()
    })
    .await;
    assert!(moved, "leadership did not move to the priority-90 node");
    // It stays (nothing outranks it): a settle and an interval later it still leads.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        nodes[second].is_writable(),
        "leadership moved away from node-2"
    );
}

/// A node whose MariaDB fails the health check refuses a leadership transfer; the
/// cluster keeps (or gets) a writable leader that is not it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_an_unhealthy_database_refuses_leadership() {
    let mut nodes = common::full_cluster(3).await;
    let l = leader_of(&nodes);
    let f = followers(&nodes)[0];
    tokio::task::block_in_place(|| nodes[f].raft.db.server.stop());
    let offline = common::wait_until(Duration::from_secs(10), || async {
        nodes[f].cluster.node_status().status == wolfscale::cluster::status::Status::Offline
    })
    .await;
    assert!(offline, "the node did not notice its MariaDB stopped");
    let target = raft_id(&nodes[f]);
    nodes[l]
        .cluster
        .raft()
        .trigger()
        .transfer_leader(target)
        .await
        .ok();
    // Whatever happens to the old leader, some other node leads, and never f.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert!(
            !nodes[f].is_writable(),
            "the unhealthy node took leadership"
        );
        let m = nodes[f].cluster.metrics();
        assert_ne!(
            m.current_leader,
            Some(m.id),
            "the unhealthy node became leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let led = common::wait_until(Duration::from_secs(10), || async {
        nodes
            .iter()
            .enumerate()
            .any(|(i, n)| i != f && n.is_writable())
    })
    .await;
    assert!(led, "no writable leader");
    // Back: healthy, and it follows.
    tokio::task::block_in_place(|| {
        nodes[f]
            .raft
            .db
            .server
            .restart(&wolfscale::localdb::Options::default())
            .unwrap()
    });
    let healthy = common::wait_until(Duration::from_secs(20), || async {
        nodes[f].cluster.node_status().status == wolfscale::cluster::status::Status::Active
    })
    .await;
    assert!(healthy, "{:?}", nodes[f].cluster.node_status());
    drop(nodes.drain(..));
}

/// A cluster whose peer traffic runs through relays: node n listens on 127.0.0.(10+n)
/// and talks to its peers from that address, and the address the others dial (its
/// member record) is a relay in front of it. So a test can cut one node off from the
/// others in both directions: its relay closes everything, and the others' relays
/// close what comes from its address.
async fn cluster_with_peer_relays() -> (
    Vec<FullNode>,
    Arc<Mutex<HashMap<u16, common::relay::Relay>>>,
) {
    let relays: Arc<Mutex<HashMap<u16, common::relay::Relay>>> = Arc::default();
    let r = relays.clone();
    let nodes = common::full_cluster_adjusted(
        3,
        move |s| {
            let advertised: std::net::SocketAddr = s.advertise.parse().unwrap();
            let ip = std::net::Ipv4Addr::new(127, 0, 0, 10 + s.number as u8);
            let real = std::net::TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap();
            let listener = std::net::TcpListener::bind(advertised).unwrap();
            r.lock()
                .unwrap()
                .insert(s.number, common::relay::Relay::start(listener, real));
            s.bind = real;
        },
        |_| {},
    )
    .await;
    (nodes, relays)
}

fn node_ip(node: &FullNode) -> std::net::IpAddr {
    node.raft.settings.bind.ip()
}

fn partition(relays: &Mutex<HashMap<u16, common::relay::Relay>>, node: &FullNode, cut: bool) {
    let relays = relays.lock().unwrap();
    for (n, relay) in relays.iter() {
        if *n == number(node) {
            relay.set(if cut {
                common::relay::Mode::Cut
            } else {
                common::relay::Mode::Pass
            });
        } else {
            relay.block(node_ip(node), cut);
        }
    }
}

/// The leader is cut off from the other two. It stops taking writes once it has not
/// heard from a majority for an election timeout, and a write sent to it is never
/// acknowledged. The majority elects a leader and takes writes. After healing, every
/// node has the majority's writes and not the minority's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_leader_accepts_no_write_and_the_majority_goes_on() {
    let (nodes, relays) = cluster_with_peer_relays().await;
    let l = leader_of(&nodes);
    let mut cl = nodes[l].client(Some("test")).await;
    q(
        &mut cl,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    q(&mut cl, "INSERT INTO fo (n) VALUES (1)").await;
    common::converged(&nodes, "test").await;

    partition(&relays, &nodes[l], true);
    let minority = tokio::spawn(async move {
        let r = cl.query_drop("INSERT INTO fo (n) VALUES (100)").await;
        (cl, r)
    });
    let deposed = common::wait_until(Duration::from_secs(10), || async {
        !nodes[l].is_writable()
    })
    .await;
    assert!(deposed, "the cut-off leader still takes writes");
    let majority = common::wait_until(Duration::from_secs(20), || async {
        nodes
            .iter()
            .enumerate()
            .any(|(i, n)| i != l && n.is_writable())
    })
    .await;
    assert!(majority, "the majority elected no leader");
    let m = (0..nodes.len())
        .find(|i| *i != l && nodes[*i].is_writable())
        .unwrap();
    let mut cm = nodes[m].client(Some("test")).await;
    q(&mut cm, "INSERT INTO fo (n) VALUES (200)").await;
    if minority.is_finished() {
        let (_, r) = minority.await.unwrap();
        eprintln!("the minority's write, before healing: {r:?}");
        assert!(r.is_err(), "the minority acknowledged a write");
    } else {
        partition(&relays, &nodes[l], false);
        let (_, r) = tokio::time::timeout(Duration::from_secs(90), minority)
            .await
            .expect("the minority's write was answered after healing")
            .unwrap();
        eprintln!("the minority's write, after healing: {r:?}");
        assert!(r.is_err(), "the minority acknowledged a write");
    }
    partition(&relays, &nodes[l], false);
    drop(cm);
    common::converged(&nodes, "test").await;
    for (i, v) in values_on_each(&nodes).await.iter().enumerate() {
        assert_eq!(v, &[1, 200], "node {i}");
    }
}

/// A leader takes writes only while a majority has acknowledged it within an election
/// timeout; alone in its cluster it is its own majority, also when idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_node_cluster_stays_writable_when_idle() {
    let nodes = common::full_cluster(1).await;
    let mut c = nodes[0].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    // Idle for twice the election timeout (max 800 ms here).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        nodes[0].is_writable(),
        "an idle single node stopped taking writes"
    );
    q(&mut c, "INSERT INTO fo (n) VALUES (1)").await;
}

/// A fresh node with an empty MariaDB joins an established cluster through a
/// follower (which points it to the leader): it becomes a learner, replays the log,
/// and is made a voter once caught up; later writes reach it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_node_joins_and_becomes_a_voter() {
    let nodes = common::full_cluster(3).await;
    let l = leader_of(&nodes);
    let f = followers(&nodes)[0];
    let mut c = nodes[l].client(Some("test")).await;
    q(
        &mut c,
        "CREATE TABLE fo (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
    )
    .await;
    for n in 1..=50 {
        q(&mut c, &format!("INSERT INTO fo (n) VALUES ({n})")).await;
    }
    let db = common::Db::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = wolfscale::localdb::free_port().unwrap();
    let mut s = common::cluster_settings(4, &db, dir.path(), port);
    s.proxy_addr = format!("127.0.0.1:{}", wolfscale::localdb::free_port().unwrap());
    let fresh = wolfscale::cluster::Cluster::start(s)
        .await
        .expect("start the new node");
    fresh
        .join(&nodes[f].raft.settings.advertise)
        .await
        .expect("join through a follower");
    let voter = common::wait_until(Duration::from_secs(30), || async {
        let m = nodes[l].cluster.metrics();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        voters.contains(&4)
    })
    .await;
    assert!(voter, "the new node was not made a voter");
    let view = nodes[l].cluster.cluster_view(Duration::from_millis(100));
    let member = view
        .members
        .iter()
        .find(|m| m.node_id == "node-4")
        .expect("the new node is in /cluster");
    assert!(member.voter, "{member:?}");
    q(&mut c, "INSERT INTO fo (n) VALUES (51)").await;
    let mut direct = db.direct(Some("test")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: Option<i64> = direct
            .query_first("SELECT COUNT(*) FROM fo")
            .await
            .unwrap_or(None);
        if n == Some(51) {
            break;
        }
        assert!(Instant::now() < deadline, "the new node has {n:?} rows");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sum: Option<i64> = direct.query_first("SELECT SUM(n) FROM fo").await.unwrap();
    assert_eq!(sum, Some(51 * 52 / 2), "each row exactly once");
    drop(direct);
    fresh.shutdown().await;
}
