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
