//! TLS for clients through rustls, when `tls_cert`/`tls_key` are set.

mod common;

use common::{Node, APP_PASSWORD};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, SslOpts};

fn write_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    (c, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_and_plain_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let node = Node::start_with(|s| s.tls = Some((cert, key))).await;
    let ssl = SslOpts::default()
        .with_danger_accept_invalid_certs(true)
        .with_danger_skip_domain_validation(true);
    let opts = OptsBuilder::from_opts(node.proxy_opts("app", APP_PASSWORD, Some("test")))
        .ssl_opts(Some(ssl));
    let mut c = Conn::new(opts).await.expect("TLS connection");
    c.query_drop("CREATE TABLE s (id INT PRIMARY KEY, v LONGTEXT)")
        .await
        .unwrap();
    let big = "x".repeat(3 << 20);
    c.exec_drop("INSERT INTO s VALUES (1, ?)", (big.clone(),))
        .await
        .unwrap();
    let back: Option<String> = c.query_first("SELECT v FROM s").await.unwrap();
    assert_eq!(back.as_deref(), Some(big.as_str()));
    // TLS is optional: a plain client still gets in.
    let mut plain = node.client(Some("test")).await;
    let n: Option<i64> = plain.query_first("SELECT COUNT(*) FROM s").await.unwrap();
    assert_eq!(n, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_requested_but_not_configured_is_refused() {
    let node = Node::start().await;
    let ssl = SslOpts::default().with_danger_accept_invalid_certs(true);
    let opts =
        OptsBuilder::from_opts(node.proxy_opts("app", APP_PASSWORD, None)).ssl_opts(Some(ssl));
    assert!(
        Conn::new(opts).await.is_err(),
        "no TLS offered, so a TLS-only client must fail"
    );
}
