//! Hostile and broken clients: the proxy answers with MariaDB's errors or closes the
//! connection, never panics, never allocates what a length field claims, and keeps
//! serving everyone else.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::raw::{Raw, Reply};
use common::{server_error, Node, APP_PASSWORD};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use rand::{Rng, SeedableRng};

static PANICKED: AtomicBool = AtomicBool::new(false);

/// Record a panic inside a proxy task (tokio worker threads; test threads are named
/// after their test and a failing assertion there is not a proxy panic).
fn watch_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("tokio-runtime-worker"))
        {
            PANICKED.store(true, Ordering::SeqCst);
        }
        previous(info);
    }));
}

async fn still_serves(node: &Node) {
    let mut c = node.client(None).await;
    let one: Option<i32> = c.query_first("SELECT 1").await.expect("proxy still serves");
    assert_eq!(one, Some(1));
    assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked");
}

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_and_during_handshake() {
    watch_panics();
    // Junk that declares a long packet leaves the proxy waiting for the rest, as MariaDB
    // would, until the handshake timeout.
    let node = Node::start_with(|s| s.handshake_timeout = Duration::from_millis(300)).await;
    let port = node.proxy_port();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..100 {
        let mut raw = Raw::connect(port).await;
        if i % 2 == 0 {
            // Before reading the greeting.
            let junk: Vec<u8> = (0..rng.random_range(1..300))
                .map(|_| rng.random())
                .collect();
            raw.write(&junk).await;
        } else {
            assert!(matches!(raw.read(T).await, Reply::Packet(0, _)));
            let junk: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            raw.send(1, &junk).await;
        }
        loop {
            match raw.read(T).await {
                Reply::Packet(_, p) if p.first() == Some(&0xFF) || p.first() == Some(&10) => {
                    continue
                }
                Reply::Closed => break,
                other => panic!("expected an ERR and a close, got {other:?}"),
            }
        }
    }
    // A well-formed response that is not protocol 4.1 gets "Bad handshake".
    let mut raw = Raw::connect(port).await;
    raw.read(T).await;
    raw.send(1, &[0u8; 40]).await;
    assert_eq!(raw.read(T).await.err_code(), Some(1043));
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_lengths_are_refused_before_allocation() {
    watch_panics();
    let node = Node::start_with(|s| s.max_packet = 1 << 20).await;
    let port = node.proxy_port();
    // In the handshake: a header claiming 16 MiB against a 1 MiB limit.
    let mut raw = Raw::connect(port).await;
    raw.read(T).await;
    raw.write(&[0xFF, 0xFF, 0xFF, 1]).await;
    assert_eq!(raw.read(T).await.err_code(), Some(1153));
    assert_eq!(raw.read(T).await, Reply::Closed);
    // After login: a chain of full chunks claiming more than max_allowed_packet.
    let mut raw = Raw::login(port, "app", APP_PASSWORD).await;
    raw.write(&[0xFF, 0xFF, 0xFF, 0]).await;
    assert_eq!(raw.read(T).await.err_code(), Some(1153));
    assert_eq!(raw.read(T).await, Reply::Closed);
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sequence_ids_get_packets_out_of_order() {
    watch_panics();
    let node = Node::start().await;
    let mut raw = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    raw.send(5, b"\x03SELECT 1").await;
    assert_eq!(raw.read(T).await.err_code(), Some(1156));
    assert_eq!(raw.read(T).await, Reply::Closed);
    // A continuation chunk with a wrong sequence id.
    let mut raw = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    let mut bytes = vec![0xFF, 0xFF, 0xFF, 0];
    bytes.extend(std::iter::repeat_n(b' ', 0xFF_FFFF));
    bytes.extend_from_slice(&[1, 0, 0, 9, b'1']);
    raw.write(&bytes).await;
    assert_eq!(raw.read(T).await.err_code(), Some(1156));
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_commands_after_login() {
    watch_panics();
    let node = Node::start().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..300 {
        let mut raw = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
        let cmd: u8 = *[
            0x03, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C, 0x11, 0x04, 0x0C, 0x1B, 0xFA, 0x55,
        ]
        .get(rng.random_range(0..13))
        .unwrap();
        let mut p = vec![cmd];
        p.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>()));
        raw.send(0, &p).await;
        if matches!(cmd, 0x18 | 0x19) {
            // These commands have no reply: ask for one with a ping.
            raw.send(0, &[0x0E]).await;
        }
        // Any reply or a close is fine; a hang is not.
        let r = raw.read(T).await;
        assert_ne!(r, Reply::Timeout, "no answer to command {cmd:#x}");
    }
    // Empty command packet.
    let mut raw = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    raw.send(0, &[]).await;
    assert_eq!(raw.read(T).await.err_code(), Some(1835));
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_times_out() {
    let node = Node::start_with(|s| s.handshake_timeout = Duration::from_millis(500)).await;
    let mut raw = Raw::connect(node.proxy_port()).await;
    assert!(matches!(raw.read(T).await, Reply::Packet(0, _)));
    let started = std::time::Instant::now();
    // Send nothing: the proxy gives up with ERR 1043 and closes.
    assert_eq!(raw.read(T).await.err_code(), Some(1043));
    assert_eq!(raw.read(T).await, Reply::Closed);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Half a packet and then silence is the same.
    let mut raw = Raw::connect(node.proxy_port()).await;
    raw.read(T).await;
    raw.write(&[50, 0, 0, 1, 1, 2]).await;
    assert_eq!(raw.read(T).await.err_code(), Some(1043));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_gives_1040() {
    let node = Node::start_with(|s| s.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(node.client(None).await);
    }
    let err = Conn::new(node.proxy_opts("app", APP_PASSWORD, None))
        .await
        .unwrap_err();
    // Sent in place of the greeting, before any SQLSTATE can be negotiated (as MariaDB
    // does), so the client reports the generic HY000.
    assert_eq!(server_error(&err).map(|e| e.0), Some(1040), "{err}");
    assert!(err.to_string().contains("Too many connections"), "{err}");
    // A slot frees when a client leaves.
    held.pop().unwrap().disconnect().await.unwrap();
    let ok = common::wait_until(Duration::from_secs(5), || async {
        Conn::new(node.proxy_opts("app", APP_PASSWORD, None))
            .await
            .is_ok()
    })
    .await;
    assert!(ok);
}
