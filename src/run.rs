//! A whole node from its configuration: the MySQL proxy, the cluster (Raft, WAL,
//! applier) and the HTTP API, started in the order their records need (the proxy and
//! API listeners are bound first, so the member record carries their real addresses),
//! and stopped together. `wolfscale start` and `wolfscale demo` run this.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiHandle};
use crate::cluster::{Cluster, ClusterError, ClusterSettings};
use crate::config::Config;
use crate::proxy::{Proxy, ProxyError, ProxySettings};
use crate::wal::WalOptions;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Standalone(String),
    #[error("cannot listen for the HTTP API on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running node.
pub struct RunningNode {
    pub cluster: Arc<Cluster>,
    pub proxy_addr: SocketAddr,
    pub api_addr: Option<SocketAddr>,
    proxy_stop: watch::Sender<bool>,
    proxy: tokio::task::JoinHandle<()>,
    api: Option<ApiHandle>,
    telemetry: tokio::task::JoinHandle<()>,
}

/// `host:port` with the host of `advertise` and `port`.
fn advertised(advertise: &str, port: u16) -> String {
    let host = advertise.rsplit_once(':').map_or(advertise, |(h, _)| h);
    format!("{host}:{port}")
}

/// The cluster settings of a configuration.
pub fn cluster_settings(
    cfg: &Config,
    bootstrap: bool,
    proxy_addr: String,
    api_addr: String,
) -> ClusterSettings {
    let proxy = ProxySettings::from_config(cfg);
    let database = crate::proxy::server::service_opts(&proxy);
    ClusterSettings {
        node_id: cfg.node.id.clone(),
        number: cfg.node.number,
        bind: cfg.node.bind_address,
        advertise: cfg.node.advertise_address.clone(),
        proxy_addr,
        api_addr,
        wal: WalOptions::from_config(cfg),
        peers: cfg.cluster.peers.clone(),
        bootstrap: bootstrap || cfg.cluster.bootstrap,
        secret: cfg
            .cluster
            .secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .unwrap_or_default(),
        heartbeat_ms: cfg.cluster.heartbeat_interval_ms,
        election_timeout_min_ms: cfg.cluster.election_timeout_min_ms,
        election_timeout_max_ms: cfg.cluster.election_timeout_max_ms,
        disable_auto_election: cfg.cluster.disable_auto_election,
        database,
        follower_innodb_flush: cfg.database.follower_innodb_flush,
        snapshot_entries: cfg.wal.snapshot_entries,
        priority: cfg.node.priority,
    }
}

/// The API's settings: its data endpoints connect to this node's proxy (on loopback
/// when it listens on every address) as `[api] user`, else the service account.
pub fn api_settings(cfg: &Config, proxy_addr: SocketAddr) -> api::ApiSettings {
    let pool = cfg.proxy.enabled.then(|| {
        let ip = match proxy_addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
            ip => ip,
        };
        let (user, password) = match &cfg.api.user {
            Some(u) => (
                u.clone(),
                cfg.api
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            ),
            None => (
                cfg.database.user.clone(),
                cfg.database.password.expose().to_string(),
            ),
        };
        let size = cfg.database.pool_size.max(1);
        let constraints = mysql_async::PoolConstraints::new(0, size)
            .unwrap_or_else(|| mysql_async::PoolConstraints::new(0, 1).expect("0 <= 1"));
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(ip.to_string())
            .tcp_port(proxy_addr.port())
            .prefer_socket(false)
            .user(Some(user))
            .pass(Some(password))
            // Unqualified names in /write/ddl and /query, as in a client's session.
            .db_name(cfg.database.database.clone())
            .pool_opts(mysql_async::PoolOpts::default().with_constraints(constraints));
        mysql_async::Pool::new(opts)
    });
    api::ApiSettings {
        token: cfg.api.token.clone(),
        max_body_bytes: cfg.api.max_body_bytes,
        pool,
        database: cfg.database.database.clone(),
        id_column: cfg.api.id_column.clone(),
        consistency: cfg.proxy.read_consistency,
    }
}

impl RunningNode {
    pub async fn start(cfg: &Config, bootstrap: bool) -> Result<RunningNode, RunError> {
        // Before anything records a metric.
        crate::telemetry::handle();
        let proxy = Proxy::bind(ProxySettings::from_config(cfg)).await?;
        let proxy_addr = proxy.local_addr();
        let api_listener = if cfg.api.enabled {
            let addr = cfg.api.bind_address;
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| RunError::Api { addr, source })?,
            )
        } else {
            None
        };
        let api_port = api_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());
        let advertise = &cfg.node.advertise_address;
        let settings = cluster_settings(
            cfg,
            bootstrap,
            advertised(advertise, proxy_addr.port()),
            api_port
                .map(|p| advertised(advertise, p))
                .unwrap_or_default(),
        );
        let cluster = Arc::new(Cluster::start(settings).await?);
        proxy.set_replicator(cluster.clone());
        let (proxy_stop, rx) = watch::channel(false);
        let proxy_task = tokio::spawn(proxy.serve(rx));
        let api = match api_listener {
            Some(l) => {
                let addr = l.local_addr().ok();
                let handle = api::serve(l, cluster.clone(), api_settings(cfg, proxy_addr))
                    .map_err(|source| RunError::Api {
                        addr: addr.unwrap_or(cfg.api.bind_address),
                        source,
                    })?;
                Some(handle)
            }
            None => None,
        };
        let telemetry = crate::telemetry::watch(cluster.clone());
        Ok(RunningNode {
            telemetry,
            api_addr: api.as_ref().map(|a| a.local_addr),
            cluster,
            proxy_addr,
            proxy_stop,
            proxy: proxy_task,
            api,
        })
    }

    /// Stop the proxy (draining sessions), the API and the cluster.
    pub async fn shutdown(self) {
        self.telemetry.abort();
        self.telemetry.await.ok();
        self.proxy_stop.send_replace(true);
        self.proxy.await.ok();
        if let Some(api) = self.api {
            api.shutdown().await;
        }
        match Arc::try_unwrap(self.cluster) {
            Ok(cluster) => cluster.shutdown().await,
            Err(shared) => {
                // Something still holds it (a session that did not drain): stop Raft.
                shared.raft().shutdown().await.ok();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// How long a standalone proxy waits at start to learn a leader from `[cluster] peers`
/// (`WOLFSCALE_STANDALONE_PATIENCE_MS` sets another).
pub const STANDALONE_PATIENCE: Duration = Duration::from_secs(30);

/// `wolfscale proxy` in front of a cluster: the router with no local MariaDB (see
/// [`crate::cluster::remote`]).
pub struct StandaloneProxy {
    pub cluster: Arc<crate::cluster::remote::RemoteCluster>,
    pub proxy_addr: SocketAddr,
    stop: watch::Sender<bool>,
    proxy: tokio::task::JoinHandle<()>,
}

impl StandaloneProxy {
    /// Learn the cluster from `[cluster] peers`, then listen on `listen` (default:
    /// `[proxy] bind_address`).
    pub async fn start(cfg: &Config, listen: Option<SocketAddr>) -> Result<Self, RunError> {
        let secret = cfg
            .cluster
            .secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .unwrap_or_default();
        if secret.is_empty() || cfg.cluster.peers.is_empty() {
            return Err(RunError::Standalone(format!(
                "{}: a proxy in front of a cluster needs [cluster] peers and [cluster] secret",
                cfg.source.display()
            )));
        }
        let mut settings = ProxySettings::from_config(cfg);
        if let Some(l) = listen {
            settings.listen = l;
        }
        let (stop, stop_rx) = watch::channel(false);
        let identity = crate::cluster::transport::PeerIdentity {
            node_id: cfg.node.id.clone(),
            number: cfg.node.number,
            // A proxy keeps nothing across restarts: a new one every run.
            incarnation: rand::random::<u64>() | 1,
            priority: 0,
            cluster_addr: String::new(),
            proxy_addr: settings.listen.to_string(),
            api_addr: String::new(),
        };
        let cluster = crate::cluster::remote::RemoteCluster::start(
            identity,
            secret,
            &cfg.cluster.peers,
            stop_rx,
        );
        let patience = std::env::var("WOLFSCALE_STANDALONE_PATIENCE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(STANDALONE_PATIENCE, Duration::from_millis);
        if !cluster.wait_leader(patience).await {
            stop.send_replace(true);
            return Err(RunError::Standalone(format!(
                "no leader learned from [cluster] peers {:?} within {:.1} s (are they running, \
                 with the same [cluster] secret?)",
                cfg.cluster.peers,
                patience.as_secs_f64()
            )));
        }
        cluster.wait_follower(Duration::from_secs(2)).await;
        // Accounts, the catalog and the greeting come from one member's proxy, as the
        // service account.
        let first = cluster
            .candidates()
            .into_iter()
            .next()
            .or_else(|| crate::proxy::replicate::Replicator::leader(cluster.as_ref()))
            .ok_or_else(|| RunError::Standalone("no member is reachable".into()))?;
        settings.backend_addr = first.proxy_addr.clone();
        settings.replicator = Some(cluster.clone());
        tracing::info!(member = %first.id, proxy = %first.proxy_addr, "reading accounts and table engines through this member");
        let proxy = match Proxy::bind(settings.clone()).await {
            Ok(p) => p,
            Err(e) => {
                stop.send_replace(true);
                return Err(e.into());
            }
        };
        tokio::spawn(follow_live_member(
            cluster.clone(),
            proxy.shared(),
            settings,
            stop.subscribe(),
        ));
        let proxy_addr = proxy.local_addr();
        let task = tokio::spawn(proxy.serve(stop.subscribe()));
        Ok(StandaloneProxy {
            cluster,
            proxy_addr,
            stop,
            proxy: task,
        })
    }

    /// Stop listening, drain the sessions, stop polling the members.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        self.proxy.await.ok();
    }
}

/// A standalone proxy reads accounts and table engines through one member's proxy:
/// when that member stops answering or turns unhealthy, move to one that is healthy,
/// so that accounts created later can still log in.
async fn follow_live_member(
    cluster: Arc<crate::cluster::remote::RemoteCluster>,
    shared: Arc<crate::proxy::Shared>,
    mut settings: ProxySettings,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let live = cluster.candidates();
        if live.is_empty() || live.iter().any(|m| m.proxy_addr == settings.backend_addr) {
            continue;
        }
        let next = live[0].clone();
        tracing::info!(from = %settings.backend_addr, member = %next.id, proxy = %next.proxy_addr, "reading accounts and table engines through this member");
        settings.backend_addr = next.proxy_addr;
        let opts = crate::proxy::server::service_opts(&settings);
        shared.accounts.set_service_opts(opts.clone());
        shared.catalog.set_opts(opts);
    }
}
