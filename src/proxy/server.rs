//! The listener: accepts clients, applies the connection limit and the handshake
//! timeout, upgrades to TLS on request, and drains sessions on shutdown.
//!
//! Shutdown is one `watch` flag. When it is raised the listener closes at once; idle
//! sessions end immediately and busy ones after their current statement; whatever is
//! still running after `shutdown_timeout` is aborted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_common::constants::CapabilityFlags;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::acl::ClientHost;
use super::backend::{self, BackendError};
use super::session::{self, SessionError};
use super::{auth, hostname, registry, Shared};
use crate::config::{Config, Secret};
use crate::protocol::handshake::{self, is_ssl_request};
use crate::protocol::packet::{PacketBudget, ALLOWANCE};
use crate::protocol::{PacketConn, ProtoError, ServerError};

/// Largest packet a client may send before it is authenticated: enough for a handshake
/// response with connection attributes, small enough that unauthenticated clients
/// cannot make the proxy buffer much.
pub const PRE_AUTH_MAX_PACKET: usize = ALLOWANCE;

/// What the proxy needs to run; built from [`Config`] or directly by tests.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// `host:port`, or an absolute path for a Unix socket.
    pub backend_addr: String,
    pub service_user: String,
    pub service_password: Secret,
    pub max_connections: usize,
    pub max_packet: usize,
    pub handshake_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Certificate chain and private key (PEM) for client TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// This node's 10-bit number (the high bits of its connection ids).
    pub node_number: u16,
    /// Memory for client packets over [`ALLOWANCE`], all sessions together.
    pub client_buffer_limit: usize,
    /// MariaDB's `net_read_timeout`: how long the rest of a begun packet may take.
    pub net_read_timeout: Duration,
    /// The cluster writes go through (`None`: a single node, writes run directly).
    pub replicator: Option<super::replicate::SharedReplicator>,
    /// Refuse write transactions of sessions below REPEATABLE READ instead of raising.
    pub refuse_weak_isolation: bool,
    /// `[proxy] read_consistency`: which reads a follower serves locally.
    pub read_consistency: crate::config::ReadConsistency,
    /// `[proxy] read_wait_ms`.
    pub read_wait: Duration,
    /// `[proxy] failover_wait_ms`.
    pub failover_wait: Duration,
}

impl ProxySettings {
    /// Settings for a proxy in front of `backend_addr` with every other value at its
    /// default (tests and `wolfscale demo` adjust what they need).
    pub fn new(listen: SocketAddr, backend_addr: String, service_user: &str) -> Self {
        let d = crate::config::ProxyConfig::default();
        ProxySettings {
            listen,
            backend_addr,
            service_user: service_user.to_string(),
            service_password: Secret::default(),
            max_connections: d.max_connections,
            max_packet: d.max_allowed_packet,
            handshake_timeout: Duration::from_millis(d.handshake_timeout_ms),
            shutdown_timeout: Duration::from_millis(d.shutdown_timeout_ms),
            tls: None,
            node_number: 0,
            client_buffer_limit: d.client_buffer_limit_mb << 20,
            net_read_timeout: Duration::from_millis(d.net_read_timeout_ms),
            replicator: None,
            refuse_weak_isolation: d.refuse_weak_isolation,
            read_consistency: d.read_consistency,
            read_wait: Duration::from_millis(d.read_wait_ms),
            failover_wait: Duration::from_millis(d.failover_wait_ms),
        }
    }
}

impl ProxySettings {
    pub fn from_config(c: &Config) -> Self {
        ProxySettings {
            listen: c.proxy.bind_address,
            backend_addr: match &c.database.socket {
                Some(path) => path.display().to_string(),
                None => format!("{}:{}", c.database.host, c.database.port),
            },
            service_user: c.database.user.clone(),
            service_password: c.database.password.clone(),
            max_connections: c.proxy.max_connections,
            max_packet: c.proxy.max_allowed_packet,
            handshake_timeout: Duration::from_millis(c.proxy.handshake_timeout_ms),
            shutdown_timeout: Duration::from_millis(c.proxy.shutdown_timeout_ms),
            tls: c.proxy.tls_cert.clone().zip(c.proxy.tls_key.clone()),
            node_number: c.node.number,
            client_buffer_limit: c.proxy.client_buffer_limit_mb << 20,
            net_read_timeout: Duration::from_millis(c.proxy.net_read_timeout_ms),
            replicator: None,
            refuse_weak_isolation: c.proxy.refuse_weak_isolation,
            read_consistency: c.proxy.read_consistency,
            read_wait: Duration::from_millis(c.proxy.read_wait_ms),
            failover_wait: Duration::from_millis(c.proxy.failover_wait_ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot reach the local MariaDB ([database] host/port): {0}")]
    Backend(#[from] BackendError),
    #[error("cannot load accounts from mysql.global_priv as [database] user '{user}': {source}")]
    Accounts {
        user: String,
        source: mysql_async::Error,
    },
    #[error(
        "cannot read table engines from information_schema as [database] user '{user}': {source}"
    )]
    Catalog {
        user: String,
        source: mysql_async::Error,
    },
    #[error("TLS setup failed for {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound, ready proxy.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
    settings: ProxySettings,
    tls: Option<TlsAcceptor>,
}

/// A proxy running in the background (for tests and embedding).
pub struct ProxyHandle {
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

/// Counters of a running proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Established sessions.
    pub sessions: usize,
    /// Times the account table was reloaded (attempts, successful or not).
    pub account_reloads: u64,
    /// KiB of the client packet budget not reserved right now.
    pub packet_budget_free_kib: usize,
    pub proxy_protocol: bool,
}

impl ProxyHandle {
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats()
    }

    /// Raise the shutdown flag and wait for the drain to finish.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        self.task.await.ok();
    }
}

impl Proxy {
    /// Probe the backend, load accounts, detect PROXY protocol support, prepare TLS and
    /// bind the listener.
    pub async fn bind(settings: ProxySettings) -> Result<Self, ProxyError> {
        let greeting = backend::probe(&settings.backend_addr).await?;
        let opts = service_opts(&settings);
        let accounts = auth::Accounts::load(opts)
            .await
            .map_err(|source| ProxyError::Accounts {
                user: settings.service_user.clone(),
                source,
            })?;
        // A standalone proxy's backends are members' proxies: they learn the client's
        // address from the forwarding proof, not from a PROXY header.
        let standalone = settings.replicator.as_ref().is_some_and(|r| r.standalone());
        let proxy_protocol = !standalone && detect_proxy_protocol(&settings).await?;
        let catalog = Arc::new(super::catalog::Catalog::new(service_opts(&settings)));
        catalog
            .refresh()
            .await
            .map_err(|source| ProxyError::Catalog {
                user: settings.service_user.clone(),
                source,
            })?;
        if settings.replicator.is_some() {
            catalog.spawn_refresher();
        }
        let tls = settings
            .tls
            .as_ref()
            .map(|(c, k)| tls_acceptor(c, k))
            .transpose()?;
        let mut capabilities = greeting.capabilities & handshake::supported_capabilities();
        capabilities.set(CapabilityFlags::CLIENT_SSL, tls.is_some());
        let shared = Arc::new(Shared {
            backend_addr: settings.backend_addr.clone(),
            capabilities,
            mariadb_capabilities: greeting.mariadb_capabilities
                & handshake::supported_mariadb_capabilities(),
            greeting,
            max_packet: settings.max_packet,
            accounts,
            registry: Arc::new(registry::Registry::new(settings.node_number)),
            proxy_protocol: std::sync::atomic::AtomicBool::new(proxy_protocol),
            hosts: hostname::HostCache::default(),
            budget: PacketBudget::new(settings.client_buffer_limit, settings.net_read_timeout),
            net_read_timeout: settings.net_read_timeout,
            handshake_timeout: settings.handshake_timeout,
            replicator: settings
                .replicator
                .clone()
                .map(std::sync::OnceLock::from)
                .unwrap_or_default(),
            sequencing: Default::default(),
            catalog,
            refuse_weak_isolation: settings.refuse_weak_isolation,
            read_consistency: settings.read_consistency,
            read_wait: settings.read_wait,
            failover_wait: settings.failover_wait,
            in_flight: Default::default(),
        });
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        Ok(Proxy {
            listener,
            shared,
            settings,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// What every session of this proxy shares.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Write through `replicator` (set once, before serving).
    pub fn set_replicator(&self, replicator: super::replicate::SharedReplicator) {
        if self.shared.replicator.set(replicator).is_ok() {
            self.shared.catalog.spawn_refresher();
        }
    }

    /// Run in a background task.
    pub fn spawn(self) -> ProxyHandle {
        let (tx, rx) = watch::channel(false);
        let local_addr = self.local_addr();
        let shared = self.shared.clone();
        let task = tokio::spawn(self.serve(rx));
        ProxyHandle {
            local_addr,
            shutdown: tx,
            task,
            shared,
        }
    }

    /// Accept clients until `shutdown` is raised, then drain.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections));
        let mut sessions = JoinSet::new();
        let mut backoff = Duration::from_millis(5);
        tracing::info!(addr = %self.local_addr(), backend = %self.settings.backend_addr, "MySQL proxy listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                a = self.listener.accept() => a,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(5);
            let conn = Connection {
                shared: self.shared.clone(),
                tls: self.tls.clone(),
                handshake_timeout: self.settings.handshake_timeout,
                shutdown: shutdown.clone(),
            };
            let permit = limit.clone().try_acquire_owned().ok();
            sessions.spawn(async move {
                let _permit = permit.as_ref();
                let _open = crate::telemetry::OpenConnection::new();
                conn.handle(stream, peer, permit.is_some()).await;
            });
        }
        drop(self.listener);
        let open = sessions.len();
        tracing::info!(open, "shutting down: listener closed, draining sessions");
        let drained = tokio::time::timeout(self.settings.shutdown_timeout, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = sessions.len(),
                "shutdown timeout: aborting remaining sessions"
            );
            sessions.shutdown().await;
        }
    }
}

/// One accepted client socket.
struct Connection {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn handle(self, stream: TcpStream, peer: SocketAddr, admitted: bool) {
        stream.set_nodelay(true).ok();
        let mut conn = PacketConn::new(stream, PRE_AUTH_MAX_PACKET);
        if !admitted {
            conn.send(0, &ServerError::too_many_connections().payload())
                .await
                .ok();
            return;
        }
        let id = self.shared.registry.allocate();
        let span = tracing::info_span!("session", id, %peer);
        let served = self.serve(conn, id, peer).instrument(span.clone()).await;
        if let Err(e) = served {
            span.in_scope(|| tracing::debug!(error = %e, "session ended"));
        }
    }

    async fn serve(
        &self,
        mut conn: PacketConn<TcpStream>,
        id: u32,
        peer: SocketAddr,
    ) -> Result<(), SessionError> {
        // One deadline for the whole connection phase, TLS upgrade included.
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let local = conn.stream().local_addr().unwrap_or(peer);
        let Ok(client) = tokio::time::timeout_at(deadline, self.client_host(peer)).await else {
            return Err(self.timed_out(&mut conn).await);
        };
        let from_member = self
            .shared
            .replicator
            .get()
            .is_some_and(|r| r.is_member_ip(peer.ip()));
        if !from_member && !self.shared.accounts.host_allowed(&client).await {
            // MariaDB refuses such a host in place of its greeting.
            let err = ServerError::host_not_allowed(&client.shown());
            conn.send(0, &err.payload_pre_handshake()).await.ok();
            return Err(SessionError::Handshake(err));
        }
        let scramble = handshake::new_scramble();
        let greeting = handshake::greeting_payload(
            &self.shared.greeting,
            id,
            &scramble,
            self.shared.capabilities,
            self.shared.mariadb_capabilities,
        );
        let phase = async {
            conn.send(0, &greeting).await?;
            conn.read_packet().await
        };
        let hello = match tokio::time::timeout_at(deadline, phase).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                return Err(self
                    .handshake_failed(&mut conn, SessionError::Client(e))
                    .await)
            }
            Err(_) => return Err(self.timed_out(&mut conn).await),
        };
        match (&self.tls, is_ssl_request(&hello.payload)) {
            (Some(acceptor), true) => {
                // Clients may send their TLS ClientHello right behind the SSLRequest, so
                // bytes already buffered belong to the TLS stream.
                let (tcp, rest) = conn.into_parts();
                let upgrade = async {
                    let io = Prefixed {
                        prefix: rest,
                        inner: tcp,
                    };
                    let tls = acceptor.accept(io).await?;
                    let mut conn = PacketConn::new(tls, PRE_AUTH_MAX_PACKET);
                    let hello = conn.read_packet().await?;
                    Ok::<_, ProtoError>((conn, hello))
                };
                let (conn, hello) = tokio::time::timeout_at(deadline, upgrade)
                    .await
                    .map_err(|_| handshake_timeout())?
                    .map_err(SessionError::Client)?;
                self.establish_and_run(conn, hello, id, scramble, (peer, local, client), deadline)
                    .await
            }
            (None, true) => {
                let err = ServerError::new(
                    1043,
                    "08S01",
                    "Bad handshake: TLS is not configured on this proxy",
                );
                conn.send(2, &err.payload()).await.ok();
                Err(SessionError::Handshake(err))
            }
            (_, false) => {
                self.establish_and_run(conn, hello, id, scramble, (peer, local, client), deadline)
                    .await
            }
        }
    }

    /// How MariaDB would see this client: its address, and its host name unless the
    /// server skips name resolution.
    async fn client_host(&self, peer: SocketAddr) -> ClientHost {
        let name = if self.shared.accounts.table().skip_name_resolve {
            None
        } else {
            self.shared.hosts.name_of(peer.ip()).await
        };
        ClientHost::new(peer.ip(), name)
    }

    /// Authenticate and log into the backend by `deadline`, then serve commands.
    async fn establish_and_run<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: PacketConn<S>,
        hello: crate::protocol::Packet,
        id: u32,
        scramble: [u8; 20],
        (peer, local, client): (SocketAddr, SocketAddr, ClientHost),
        deadline: tokio::time::Instant,
    ) -> Result<(), SessionError> {
        let origin = session::Origin {
            peer,
            local,
            client,
        };
        let establish = session::establish(conn, hello, id, scramble, origin, self.shared.clone());
        let session = tokio::time::timeout_at(deadline, establish)
            .await
            .map_err(|_| handshake_timeout())??;
        session.run(self.shutdown.clone()).await
    }

    async fn handshake_failed(
        &self,
        conn: &mut PacketConn<TcpStream>,
        e: SessionError,
    ) -> SessionError {
        if let SessionError::Client(p) = &e {
            if !p.is_disconnect() {
                let reply = match p {
                    ProtoError::TooLarge { .. } => ServerError::packet_too_large(),
                    _ => ServerError::bad_handshake(),
                };
                conn.send(2, &reply.payload()).await.ok();
            }
        }
        e
    }

    async fn timed_out(&self, conn: &mut PacketConn<TcpStream>) -> SessionError {
        let err = ServerError::bad_handshake();
        conn.send(2, &err.payload()).await.ok();
        SessionError::Handshake(err)
    }
}

fn handshake_timeout() -> SessionError {
    SessionError::Client(ProtoError::Malformed("handshake timeout"))
}

/// A stream whose first bytes were already read into a buffer.
struct Prefixed<S> {
    prefix: bytes::BytesMut,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether the backend takes PROXY protocol headers from us (its
/// `proxy_protocol_networks` covers the address our connections come from); logged
/// either way.
pub async fn detect_proxy_protocol(s: &ProxySettings) -> Result<bool, ProxyError> {
    let (accepted, networks, from) = proxy_protocol_allowed(&service_opts(s), &s.backend_addr)
        .await
        .map_err(|e| match e {
            ProbeError::Sql(source) => ProxyError::Accounts {
                user: s.service_user.clone(),
                source,
            },
            ProbeError::Backend(b) => ProxyError::Backend(b),
        })?;
    let from_text = from.map_or("the Unix socket".to_string(), |ip| ip.to_string());
    if accepted {
        tracing::info!(
            backend = %s.backend_addr,
            "MariaDB accepts the PROXY protocol from {from_text} (proxy_protocol_networks = '{networks}'): \
             backend logins carry each client's address"
        );
    } else {
        tracing::warn!(
            backend = %s.backend_addr,
            "MariaDB does not accept the PROXY protocol from {from_text} (proxy_protocol_networks = '{networks}'): \
             a client whose account differs from the one MariaDB gives the proxy's own address is refused"
        );
    }
    Ok(accepted)
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Sql(#[from] mysql_async::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Read `@@proxy_protocol_networks` with the service account and check it against the
/// address our backend connections come from. Returns the verdict, the setting, and
/// that address (`None` for a Unix socket).
pub async fn proxy_protocol_allowed(
    opts: &mysql_async::Opts,
    backend_addr: &str,
) -> Result<(bool, String, Option<std::net::IpAddr>), ProbeError> {
    let mut conn = mysql_async::Conn::new(opts.clone()).await?;
    let networks: Option<String> = conn.query_first("SELECT @@proxy_protocol_networks").await?;
    conn.disconnect().await.ok();
    let from = backend::source_address(backend_addr).await?;
    let networks = networks.unwrap_or_default();
    Ok((
        backend::proxy_networks_allow(&networks, from),
        networks,
        from,
    ))
}

/// How the service account connects to the backend.
pub fn service_opts(s: &ProxySettings) -> mysql_async::Opts {
    let builder = mysql_async::OptsBuilder::default()
        .user(Some(s.service_user.clone()))
        .pass(Some(s.service_password.expose().to_string()));
    let builder = if s.backend_addr.starts_with('/') {
        builder
            .socket(Some(s.backend_addr.clone()))
            .prefer_socket(true)
    } else {
        let (host, port) = s
            .backend_addr
            .rsplit_once(':')
            .unwrap_or((&s.backend_addr, "3306"));
        builder
            .ip_or_hostname(host.to_string())
            .tcp_port(port.parse().unwrap_or(3306))
            .prefer_socket(false)
    };
    builder.into()
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, ProxyError> {
    let err = |path: &PathBuf, reason: String| ProxyError::Tls {
        path: path.clone(),
        reason,
    };
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| err(p, e.to_string()));
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(cert, "no certificate found in PEM file".into()));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| err(key, e.to_string()))?
        .ok_or_else(|| err(key, "no private key found in PEM file".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| err(cert, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
