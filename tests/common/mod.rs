//! Test harness: throwaway MariaDB servers and WolfScale proxies in front of them.
//!
//! Every test gets its own `mariadbd` (installed into a temp dir, on a free port, with
//! a small buffer pool) and its own proxy on `127.0.0.1:0`. Both are torn down when the
//! [`Node`] drops — also when the test panics — and the server dies with the test
//! process if that is killed outright.
#![allow(dead_code)]

pub mod raw;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use wolfscale::localdb::{LocalMariaDb, Options};
use wolfscale::proxy::{Proxy, ProxyHandle, ProxySettings};

/// Password of the `app` account every node has.
pub const APP_PASSWORD: &str = "app-secret";

/// One MariaDB server.
pub struct Db {
    pub server: LocalMariaDb,
    _dir: tempfile::TempDir,
}

impl Db {
    /// Start a server with an `app`@`%` account (all privileges) and a `test` database.
    pub async fn start() -> Db {
        Self::start_with(Options::default()).await
    }

    /// Start a server with `opts` (name resolution, extra arguments).
    pub async fn start_with(opts: Options) -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let server = tokio::task::spawn_blocking(move || LocalMariaDb::start(&path, &opts))
            .await
            .expect("join")
            .expect("start mariadbd");
        let db = Db { server, _dir: dir };
        let mut c = db.root().await;
        c.query_drop(format!(
            "CREATE USER 'app'@'%' IDENTIFIED BY '{APP_PASSWORD}';
             GRANT ALL PRIVILEGES ON *.* TO 'app'@'%' WITH GRANT OPTION;
             CREATE DATABASE IF NOT EXISTS test CHARACTER SET utf8mb4;"
        ))
        .await
        .expect("bootstrap accounts");
        c.disconnect().await.ok();
        db
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.server.dir().join("mariadbd.sock")
    }

    /// A direct connection as root (bypassing any proxy).
    pub async fn root(&self) -> Conn {
        Conn::new(opts(self.port(), "root", "", None))
            .await
            .expect("connect root")
    }

    /// A direct connection as `app`.
    pub async fn direct(&self, db: Option<&str>) -> Conn {
        Conn::new(opts(self.port(), "app", APP_PASSWORD, db))
            .await
            .expect("connect direct")
    }
}

/// A MariaDB with a proxy in front of it.
pub struct Node {
    pub proxy: Option<ProxyHandle>,
    pub db: Db,
}

impl Node {
    pub async fn start() -> Node {
        Self::start_with(|_| {}).await
    }

    /// Start with the proxy talking to MariaDB over its Unix socket instead of TCP.
    pub async fn start_over_socket() -> Node {
        let db = Db::start().await;
        let mut settings = settings_for(db.port());
        settings.backend_addr = db.socket().display().to_string();
        let proxy = Proxy::bind(settings).await.expect("bind proxy").spawn();
        Node {
            proxy: Some(proxy),
            db,
        }
    }

    /// Start with settings adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut ProxySettings)) -> Node {
        let db = Db::start().await;
        let mut settings = settings_for(db.port());
        tweak(&mut settings);
        let proxy = Proxy::bind(settings).await.expect("bind proxy").spawn();
        Node {
            proxy: Some(proxy),
            db,
        }
    }

    /// A proxy in front of an existing server, over TCP or its Unix socket.
    pub async fn proxy_for(db: &Db, over_socket: bool) -> ProxyHandle {
        let mut settings = settings_for(db.port());
        if over_socket {
            settings.backend_addr = db.socket().display().to_string();
        }
        Proxy::bind(settings).await.expect("bind proxy").spawn()
    }

    pub fn proxy_port(&self) -> u16 {
        self.proxy
            .as_ref()
            .expect("proxy running")
            .local_addr
            .port()
    }

    /// Options for connecting through the proxy.
    pub fn proxy_opts(&self, user: &str, pass: &str, db: Option<&str>) -> Opts {
        opts(self.proxy_port(), user, pass, db)
    }

    /// A connection through the proxy as `app`.
    pub async fn client(&self, db: Option<&str>) -> Conn {
        Conn::new(self.proxy_opts("app", APP_PASSWORD, db))
            .await
            .expect("connect through proxy")
    }

    pub async fn shutdown(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
    }
}

/// Log to stderr when `RUST_LOG` is set (e.g. `RUST_LOG=wolfscale=debug`); nextest
/// shows a failing test's output.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("RUST_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init()
                .ok();
        }
    });
}

pub fn settings_for(db_port: u16) -> ProxySettings {
    init_logging();
    let mut s = ProxySettings::new(
        "127.0.0.1:0".parse().expect("addr"),
        format!("127.0.0.1:{db_port}"),
        "root",
    );
    s.max_connections = 200;
    s.max_packet = 64 << 20;
    s.handshake_timeout = Duration::from_secs(5);
    s.shutdown_timeout = Duration::from_secs(5);
    s
}

pub fn opts(port: u16, user: &str, pass: &str, db: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pass))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// Poll `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The MySQL error code and SQLSTATE of a server error.
pub fn server_error(e: &mysql_async::Error) -> Option<(u16, String)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.state.clone())),
        _ => None,
    }
}
