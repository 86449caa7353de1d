//! The checked layer: [`RawConfig`] → [`Config`].
//!
//! Fills defaults, enforces bounds, parses addresses, resolves and checks paths, and applies
//! the rules that span several keys. Every helper records its problem and returns `None`
//! instead of stopping, so all problems are reported; a section is built only when all its
//! values are good.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::raw::{RawApi, RawCluster, RawConfig, RawDatabase, RawNode, RawProxy, RawWal};
use super::{
    ApiConfig, ClusterConfig, Config, DatabaseConfig, Diagnostic, NodeConfig, Problem, ProxyConfig,
    Secret, Severity, WalConfig, DEFAULT_CLUSTER_PORT, DEFAULT_DATABASE_PORT, NODE_NUMBER_MAX,
};

const NODE_NUMBER: RangeInclusive<i64> = 0..=NODE_NUMBER_MAX as i64;
const PORT: RangeInclusive<i64> = 1..=65535;
const POOL_SIZE: RangeInclusive<i64> = 1..=1024;
const BATCH_SIZE: RangeInclusive<i64> = 1..=100_000;
const FLUSH_INTERVAL_MS: RangeInclusive<i64> = 0..=10_000;
const SEGMENT_SIZE_MB: RangeInclusive<i64> = 1..=4096;
const RETENTION_HOURS: RangeInclusive<i64> = 0..=87_600;
const SNAPSHOT_ENTRIES: RangeInclusive<i64> = 0..=1_000_000_000;
const HEARTBEAT_MS: RangeInclusive<i64> = 1..=60_000;
const ELECTION_TIMEOUT_MS: RangeInclusive<i64> = 1..=600_000;
/// `election_timeout_ms = N` sets the max to 2N, which must stay in [`ELECTION_TIMEOUT_MS`].
const ELECTION_TIMEOUT_SHORTHAND_MS: RangeInclusive<i64> = 1..=300_000;
const MAX_CONNECTIONS: RangeInclusive<i64> = 1..=100_000;
const MAX_BODY_BYTES: RangeInclusive<i64> = 1024..=64 << 20;
const HANDSHAKE_TIMEOUT_MS: RangeInclusive<i64> = 100..=600_000;
const MAX_ALLOWED_PACKET: RangeInclusive<i64> = 1024..=1_073_741_824;
const SHUTDOWN_TIMEOUT_MS: RangeInclusive<i64> = 0..=3_600_000;
const CLIENT_BUFFER_LIMIT_MB: RangeInclusive<i64> = 1..=1_048_576;
const NET_READ_TIMEOUT_MS: RangeInclusive<i64> = 100..=3_600_000;
const READ_WAIT_MS: RangeInclusive<i64> = 0..=60_000;
const FAILOVER_WAIT_MS: RangeInclusive<i64> = 0..=600_000;

const DEFAULT_DATA_DIR: &str = "./data";
const DEFAULT_DATABASE_HOST: &str = "127.0.0.1";
const DEFAULT_POOL_SIZE: usize = 8;

/// Checks `raw`, appending to `out`. Returns the config when every value could be built
/// (the caller still refuses it if `out` holds an error, such as an unknown key).
pub(crate) fn validate(
    raw: RawConfig,
    file: &Path,
    shadowed: &BTreeSet<String>,
    out: &mut Vec<Diagnostic>,
    role: super::Role,
) -> Option<Config> {
    let mut c = Checker {
        file,
        base_dir: file.parent().unwrap_or(Path::new("")),
        shadowed,
        out,
        listeners: Vec::new(),
    };
    let has_peers = raw.cluster.peers.as_ref().is_some_and(|p| !p.is_empty());
    // Taken from the raw value so that the peer checks run even when [node] has errors.
    let own = raw
        .node
        .advertise_address
        .as_deref()
        .and_then(|a| parse_host_port(a).ok());
    // A standalone proxy is never reached through the cluster port.
    let node = c.node(raw.node, has_peers && role == super::Role::Node);
    let database = c.database(raw.database);
    let wal = c.wal(raw.wal);
    let cluster = c.cluster(raw.cluster, own.as_ref());
    let api = c.api(raw.api);
    let proxy = c.proxy(raw.proxy);
    c.check_listeners();
    Some(Config {
        node: node?,
        database: database?,
        wal: wal?,
        cluster: cluster?,
        api: api?,
        proxy: proxy?,
        source: file.to_path_buf(),
    })
}

struct Checker<'a> {
    file: &'a Path,
    base_dir: &'a Path,
    shadowed: &'a BTreeSet<String>,
    out: &'a mut Vec<Diagnostic>,
    /// Enabled listeners whose address parsed, for the port-clash check: key, address, and
    /// whether the address was written in the file (or is the default).
    listeners: Vec<(&'static str, SocketAddr, bool)>,
}

impl Checker<'_> {
    /// `needs_advertise`: peers must be told where to reach this node (a node with
    /// peers; not a standalone proxy).
    fn node(&mut self, raw: RawNode, needs_advertise: bool) -> Option<NodeConfig> {
        let id = match raw.id {
            Some(id) => match super::validate_node_id(&id) {
                Ok(()) => Some(id),
                Err(why) => {
                    self.error("node.id", Problem::InvalidValue, why);
                    None
                }
            },
            None => {
                self.missing(
                    "node.id",
                    "required: this node's name in the cluster, such as \"node-1\"",
                );
                None
            }
        };
        let number = match raw.number {
            Some(n) => self
                .in_range("node.number", n, NODE_NUMBER)
                .map(|n| (n, true)),
            None => id
                .as_deref()
                .map(|id| (super::derive_node_number(id), false)),
        };
        let default_bind = SocketAddr::from(([0, 0, 0, 0], DEFAULT_CLUSTER_PORT));
        let written = raw.bind_address.is_some();
        let bind_address = self.bind_address("node.bind_address", raw.bind_address, default_bind);
        self.listening("node.bind_address", true, bind_address, written);
        let advertise_address = match raw.advertise_address {
            Some(address) => self
                .endpoint("node.advertise_address", &address)
                .map(|_| address),
            None if needs_advertise => {
                self.missing(
                    "node.advertise_address",
                    "required when cluster.peers is not empty, so peers know how to reach this node",
                );
                None
            }
            None => bind_address.map(|b| format!("127.0.0.1:{}", b.port())),
        };
        let data_dir = match raw.data_dir {
            Some(dir) => self.non_empty("node.data_dir", dir),
            None => Some(DEFAULT_DATA_DIR.to_owned()),
        }
        .map(|dir| self.resolve(&dir));
        let priority = match raw.priority {
            Some(p) => self.in_range("node.priority", p, 0..=100),
            None => Some(crate::config::DEFAULT_PRIORITY),
        };
        let (number, number_explicit) = number?;
        Some(NodeConfig {
            id: id?,
            number,
            number_explicit,
            priority: priority?,
            bind_address: bind_address?,
            advertise_address: advertise_address?,
            data_dir: data_dir?,
        })
    }

    fn database(&mut self, raw: RawDatabase) -> Option<DatabaseConfig> {
        let host = match raw.host {
            Some(host) => self.host("database.host", host),
            None => Some(DEFAULT_DATABASE_HOST.to_owned()),
        };
        let port = self.int("database.port", raw.port, DEFAULT_DATABASE_PORT, PORT);
        let user = match raw.user {
            Some(user) => self.non_empty("database.user", user),
            None => {
                self.missing(
                    "database.user",
                    "required: the account WolfScale uses on MariaDB",
                );
                None
            }
        };
        let database = match raw.database {
            Some(db) => self.non_empty("database.database", db).map(Some),
            None => Some(None),
        };
        let socket = match raw.socket {
            Some(path) => self.absolute_path("database.socket", path).map(Some),
            None => Some(None),
        };
        let pool_size = self.int(
            "database.pool_size",
            raw.pool_size,
            DEFAULT_POOL_SIZE,
            POOL_SIZE,
        );
        // 0 is not offered: it loses commits when mariadbd alone crashes, while this
        // node keeps running and would not replay them.
        let follower_innodb_flush = match raw.follower_innodb_flush {
            None => Some(None),
            Some(v) => self
                .in_range("database.follower_innodb_flush", v, 1..=2)
                .map(Some),
        };
        Some(DatabaseConfig {
            host: host?,
            port: port?,
            user: user?,
            password: raw.password.unwrap_or_default(),
            database: database?,
            socket: socket?,
            pool_size: pool_size?,
            follower_innodb_flush: follower_innodb_flush?,
        })
    }

    fn wal(&mut self, raw: RawWal) -> Option<WalConfig> {
        let d = WalConfig::default();
        let batch_size = self.int("wal.batch_size", raw.batch_size, d.batch_size, BATCH_SIZE);
        let flush_interval_ms = self.int(
            "wal.flush_interval_ms",
            raw.flush_interval_ms,
            d.flush_interval_ms,
            FLUSH_INTERVAL_MS,
        );
        let segment_size_mb = self.int(
            "wal.segment_size_mb",
            raw.segment_size_mb,
            d.segment_size_mb,
            SEGMENT_SIZE_MB,
        );
        let retention_hours = self.int(
            "wal.retention_hours",
            raw.retention_hours,
            d.retention_hours,
            RETENTION_HOURS,
        );
        let snapshot_entries = self.int(
            "wal.snapshot_entries",
            raw.snapshot_entries,
            d.snapshot_entries,
            SNAPSHOT_ENTRIES,
        );
        let fsync = raw.fsync.unwrap_or(d.fsync);
        if !fsync {
            self.warn(
                "wal.fsync",
                "fsync = false: an acknowledged write can be lost if a majority of nodes \
                 loses power at the same time",
            );
        }
        Some(WalConfig {
            batch_size: batch_size?,
            flush_interval_ms: flush_interval_ms?,
            compression: raw.compression.unwrap_or(d.compression),
            segment_size_mb: segment_size_mb?,
            retention_hours: retention_hours?,
            snapshot_entries: snapshot_entries?,
            fsync,
        })
    }

    /// `own` is this node's advertise address, parsed, when it is valid.
    fn cluster(&mut self, raw: RawCluster, own: Option<&(String, u16)>) -> Option<ClusterConfig> {
        let d = ClusterConfig::default();
        let bootstrap = raw.bootstrap.unwrap_or(d.bootstrap);
        if raw.bootstrap == Some(true) {
            self.warn(
                "cluster.bootstrap",
                "bootstrap = true should not stay in the file: pass `--bootstrap` once, on the \
                 first start of the first node; left here, a node restarted with an empty \
                 data_dir would bootstrap a second cluster",
            );
        }
        let peers = self.peers(raw.peers.unwrap_or_default(), own);
        let heartbeat = self.int(
            "cluster.heartbeat_interval_ms",
            raw.heartbeat_interval_ms,
            d.heartbeat_interval_ms,
            HEARTBEAT_MS,
        );
        let (min, max, min_key, mut timing_ok) = self.election_timeout(
            raw.election_timeout_ms,
            raw.election_timeout_min_ms,
            raw.election_timeout_max_ms,
        );
        if let (Some(min), Some(max)) = (min, max) {
            if min >= max {
                self.error(
                    "cluster.election_timeout_min_ms",
                    Problem::OutOfRange,
                    format!("must be less than election_timeout_max_ms ({max}), got {min}"),
                );
                timing_ok = false;
            }
        }
        if let (Some(heartbeat), Some(min)) = (heartbeat, min) {
            if heartbeat >= min {
                self.error(
                    "cluster.heartbeat_interval_ms",
                    Problem::OutOfRange,
                    format!(
                        "must be less than {min_key} ({min}), got {heartbeat}: \
                         followers would start elections between heartbeats"
                    ),
                );
                timing_ok = false;
            }
        }
        let secret = self.optional_secret("cluster.secret", raw.secret);
        if matches!(secret, Some(None)) && peers.as_ref().is_some_and(|p| !p.is_empty()) {
            self.warn(
                "cluster.secret",
                "not set: cluster traffic between peers is not authenticated",
            );
        }
        if !timing_ok {
            return None;
        }
        Some(ClusterConfig {
            bootstrap,
            peers: peers?,
            heartbeat_interval_ms: heartbeat?,
            election_timeout_min_ms: min?,
            election_timeout_max_ms: max?,
            disable_auto_election: raw.disable_auto_election.unwrap_or(d.disable_auto_election),
            secret: secret?,
        })
    }

    /// The election timeout bounds, from `election_timeout_min_ms` / `election_timeout_max_ms`
    /// or from the shorthand `election_timeout_ms = N` (min N, max 2N), which must not be
    /// combined with them. Returns min, max, the key the min came from (for messages), and
    /// `false` when the keys conflict.
    fn election_timeout(
        &mut self,
        shorthand: Option<i64>,
        min: Option<i64>,
        max: Option<i64>,
    ) -> (Option<u64>, Option<u64>, &'static str, bool) {
        let d = ClusterConfig::default();
        let (min_raw, max_raw) = (min, max);
        let min = self.int(
            "cluster.election_timeout_min_ms",
            min_raw,
            d.election_timeout_min_ms,
            ELECTION_TIMEOUT_MS,
        );
        let max = self.int(
            "cluster.election_timeout_max_ms",
            max_raw,
            d.election_timeout_max_ms,
            ELECTION_TIMEOUT_MS,
        );
        let Some(shorthand) = shorthand else {
            return (min, max, "election_timeout_min_ms", true);
        };
        let base: Option<u64> = self.in_range(
            "cluster.election_timeout_ms",
            shorthand,
            ELECTION_TIMEOUT_SHORTHAND_MS,
        );
        let also: Vec<&str> = [
            ("cluster.election_timeout_min_ms", min_raw),
            ("cluster.election_timeout_max_ms", max_raw),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|_| key))
        .collect();
        if !also.is_empty() {
            self.error(
                "cluster.election_timeout_ms",
                Problem::Conflict,
                format!(
                    "cannot be combined with {}: election_timeout_ms = N is shorthand for \
                     election_timeout_min_ms = N and election_timeout_max_ms = 2N; set either \
                     it or the min/max keys",
                    also.join(" and ")
                ),
            );
            return (None, None, "election_timeout_ms", false);
        }
        (base, base.map(|n| 2 * n), "election_timeout_ms", true)
    }

    fn peers(&mut self, peers: Vec<String>, own: Option<&(String, u16)>) -> Option<Vec<String>> {
        let mut ok = true;
        let mut seen: Vec<(String, u16)> = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let key = format!("cluster.peers[{i}]");
            let Some(endpoint) = self.endpoint(&key, peer) else {
                ok = false;
                continue;
            };
            if Some(&endpoint) == own {
                self.error(
                    &key,
                    Problem::Conflict,
                    format!(
                        "`{peer}` is this node's own advertise_address; list only the other nodes"
                    ),
                );
                ok = false;
            } else if let Some(j) = seen.iter().position(|e| *e == endpoint) {
                let first = &peers[j];
                self.error(
                    &key,
                    Problem::Conflict,
                    format!("`{peer}` is listed twice (also cluster.peers[{j}] = `{first}`)"),
                );
                ok = false;
            }
            seen.push(endpoint);
        }
        ok.then_some(peers)
    }

    fn api(&mut self, raw: RawApi) -> Option<ApiConfig> {
        let d = ApiConfig::default();
        let written = raw.bind_address.is_some();
        let bind_address = self.bind_address("api.bind_address", raw.bind_address, d.bind_address);
        let enabled = raw.enabled.unwrap_or(d.enabled);
        self.listening("api.bind_address", enabled, bind_address, written);
        let token = self.optional_secret("api.token", raw.token);
        let max_body_bytes = self.int(
            "api.max_body_bytes",
            raw.max_body_bytes,
            d.max_body_bytes,
            MAX_BODY_BYTES,
        );
        let id_column = match raw.id_column {
            Some(c) => self.non_empty("api.id_column", c).map(Some),
            None => Some(None),
        };
        let user = match raw.user {
            Some(u) => self.non_empty("api.user", u).map(Some),
            None => Some(None),
        };
        let password = match raw.password {
            Some(_) if matches!(user, Some(None)) => {
                self.error(
                    "api.password",
                    Problem::InvalidValue,
                    "needs api.user (without it the API runs as the service account, with database.password)"
                        .to_owned(),
                );
                None
            }
            Some(p) => Some(Some(p)),
            None => Some(None),
        };
        Some(ApiConfig {
            enabled,
            bind_address: bind_address?,
            token: token?,
            max_body_bytes: max_body_bytes?,
            id_column: id_column?,
            user: user?,
            password: password?,
        })
    }

    fn proxy(&mut self, raw: RawProxy) -> Option<ProxyConfig> {
        let d = ProxyConfig::default();
        let written = raw.bind_address.is_some();
        let bind_address =
            self.bind_address("proxy.bind_address", raw.bind_address, d.bind_address);
        let enabled = raw.enabled.unwrap_or(d.enabled);
        self.listening("proxy.bind_address", enabled, bind_address, written);
        let max_connections = self.int(
            "proxy.max_connections",
            raw.max_connections,
            d.max_connections,
            MAX_CONNECTIONS,
        );
        let tls = self.tls(raw.tls_cert, raw.tls_key);
        let handshake_timeout_ms = self.int(
            "proxy.handshake_timeout_ms",
            raw.handshake_timeout_ms,
            d.handshake_timeout_ms,
            HANDSHAKE_TIMEOUT_MS,
        );
        let max_allowed_packet = self.int(
            "proxy.max_allowed_packet",
            raw.max_allowed_packet,
            d.max_allowed_packet,
            MAX_ALLOWED_PACKET,
        );
        let shutdown_timeout_ms = self.int(
            "proxy.shutdown_timeout_ms",
            raw.shutdown_timeout_ms,
            d.shutdown_timeout_ms,
            SHUTDOWN_TIMEOUT_MS,
        );
        let client_buffer_limit_mb: Option<usize> = self.int(
            "proxy.client_buffer_limit_mb",
            raw.client_buffer_limit_mb,
            d.client_buffer_limit_mb,
            CLIENT_BUFFER_LIMIT_MB,
        );
        let net_read_timeout_ms = self.int(
            "proxy.net_read_timeout_ms",
            raw.net_read_timeout_ms,
            d.net_read_timeout_ms,
            NET_READ_TIMEOUT_MS,
        );
        if let (Some(limit), Some(packet)) = (client_buffer_limit_mb, max_allowed_packet) {
            // A packet of several 16 MiB chunks reserves twice the largest packet.
            let needed: usize = packet.saturating_mul(2);
            if limit << 20 < needed {
                self.error(
                    "proxy.client_buffer_limit_mb",
                    Problem::Conflict,
                    format!(
                        "{limit} MiB cannot hold a packet of proxy.max_allowed_packet ({packet} bytes) \
                         twice over; set it to at least {} MiB",
                        needed.div_ceil(1 << 20)
                    ),
                );
            }
        }
        let read_wait_ms = self.int(
            "proxy.read_wait_ms",
            raw.read_wait_ms,
            d.read_wait_ms,
            READ_WAIT_MS,
        );
        let failover_wait_ms = self.int(
            "proxy.failover_wait_ms",
            raw.failover_wait_ms,
            d.failover_wait_ms,
            FAILOVER_WAIT_MS,
        );
        let read_consistency = match raw.read_consistency.as_deref() {
            None => Some(d.read_consistency),
            Some(v) => {
                let parsed = super::ReadConsistency::parse(v);
                if parsed.is_none() {
                    self.error(
                        "proxy.read_consistency",
                        Problem::InvalidValue,
                        format!(
                            "`{v}` is not a read consistency: expected one of {}",
                            super::ReadConsistency::NAMES
                        ),
                    );
                }
                parsed
            }
        };
        let (tls_cert, tls_key) = tls?;
        Some(ProxyConfig {
            enabled,
            bind_address: bind_address?,
            max_connections: max_connections?,
            tls_cert,
            tls_key,
            handshake_timeout_ms: handshake_timeout_ms?,
            max_allowed_packet: max_allowed_packet?,
            shutdown_timeout_ms: shutdown_timeout_ms?,
            client_buffer_limit_mb: client_buffer_limit_mb?,
            net_read_timeout_ms: net_read_timeout_ms?,
            refuse_weak_isolation: raw.refuse_weak_isolation.unwrap_or(d.refuse_weak_isolation),
            read_consistency: read_consistency?,
            read_wait_ms: read_wait_ms?,
            failover_wait_ms: failover_wait_ms?,
        })
    }

    /// Both or neither; each must name an existing file.
    fn tls(
        &mut self,
        cert: Option<String>,
        key: Option<String>,
    ) -> Option<(Option<PathBuf>, Option<PathBuf>)> {
        let pair_ok = match (&cert, &key) {
            (Some(_), None) => {
                self.missing("proxy.tls_key", "required when proxy.tls_cert is set");
                false
            }
            (None, Some(_)) => {
                self.missing("proxy.tls_cert", "required when proxy.tls_key is set");
                false
            }
            _ => true,
        };
        let cert = match cert {
            Some(path) => self.existing_file("proxy.tls_cert", &path).map(Some),
            None => Some(None),
        };
        let key = match key {
            Some(path) => self.existing_file("proxy.tls_key", &path).map(Some),
            None => Some(None),
        };
        if !pair_ok {
            return None;
        }
        Some((cert?, key?))
    }

    fn listening(
        &mut self,
        key: &'static str,
        enabled: bool,
        addr: Option<SocketAddr>,
        written: bool,
    ) {
        if let (true, Some(addr)) = (enabled, addr) {
            self.listeners.push((key, addr, written));
        }
    }

    /// Two enabled listeners on one port collide when their IPs are equal or either is a
    /// wildcard. The error goes to the address written in the file rather than to a
    /// default, and otherwise to the later one (file order: node, api, proxy).
    fn check_listeners(&mut self) {
        let listeners = std::mem::take(&mut self.listeners);
        for (i, later) in listeners.iter().enumerate() {
            let (_, addr, _) = later;
            let clash = listeners[..i].iter().find(|(_, other, _)| {
                other.port() == addr.port()
                    && addr.port() != 0
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
            let Some(earlier) = clash else { continue };
            let (blamed, other) = if later.2 || !earlier.2 {
                (later, earlier)
            } else {
                (earlier, later)
            };
            let (other_key, other_addr, other_written) = other;
            let default = if *other_written { "" } else { "default " };
            self.error(
                blamed.0,
                Problem::Conflict,
                format!(
                    "`{}` uses the same port as {other_key} ({default}`{other_addr}`)",
                    blamed.1
                ),
            );
        }
    }

    // ---- helpers: each reports its own problem and returns None ----

    fn int<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        value: Option<i64>,
        default: T,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        match value {
            Some(value) => self.in_range(key, value, range),
            None => Some(default),
        }
    }

    fn in_range<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        value: i64,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let converted = range
            .contains(&value)
            .then(|| T::try_from(value).ok())
            .flatten();
        if converted.is_none() {
            let message = format!(
                "must be between {} and {}, got {value}",
                range.start(),
                range.end()
            );
            self.error(key, Problem::OutOfRange, message);
        }
        converted
    }

    fn bind_address(
        &mut self,
        key: &str,
        value: Option<String>,
        default: SocketAddr,
    ) -> Option<SocketAddr> {
        let Some(value) = value else {
            return Some(default);
        };
        match value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = format!(
                    "invalid bind address `{value}`: expected IP:port such as `0.0.0.0:{}` or \
                     `[::]:{}` (host names are not allowed here)",
                    default.port(),
                    default.port()
                );
                self.error(key, Problem::InvalidValue, message);
                None
            }
        }
    }

    fn endpoint(&mut self, key: &str, value: &str) -> Option<(String, u16)> {
        match parse_host_port(value) {
            Ok(endpoint) => Some(endpoint),
            Err(why) => {
                self.error(
                    key,
                    Problem::InvalidValue,
                    format!("invalid address `{value}`: {why}"),
                );
                None
            }
        }
    }

    fn host(&mut self, key: &str, host: String) -> Option<String> {
        let host = self.non_empty(key, host)?;
        if valid_host(&host) || host.parse::<IpAddr>().is_ok() {
            Some(host)
        } else {
            self.error(
                key,
                Problem::InvalidValue,
                format!("`{host}` is not a valid host name or IP address"),
            );
            None
        }
    }

    fn non_empty(&mut self, key: &str, value: String) -> Option<String> {
        if value.trim().is_empty() {
            self.error(key, Problem::InvalidValue, "must not be empty".to_owned());
            None
        } else {
            Some(value)
        }
    }

    /// `Some(None)` when absent; `None` (reported) when present but empty.
    fn optional_secret(&mut self, key: &str, value: Option<Secret>) -> Option<Option<Secret>> {
        match value {
            Some(secret) if secret.expose().trim().is_empty() => {
                self.error(
                    key,
                    Problem::InvalidValue,
                    "must not be empty (remove the key to go without one)".to_owned(),
                );
                None
            }
            other => Some(other),
        }
    }

    fn absolute_path(&mut self, key: &str, path: String) -> Option<PathBuf> {
        let path = PathBuf::from(self.non_empty(key, path)?);
        if path.is_absolute() {
            return Some(path);
        }
        let message = format!("must be an absolute path, got `{}`", path.display());
        self.error(key, Problem::InvalidValue, message);
        None
    }

    fn existing_file(&mut self, key: &str, path: &str) -> Option<PathBuf> {
        let path = self.non_empty(key, path.to_owned())?;
        let path = self.resolve(&path);
        let problem = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => return Some(path),
            Ok(_) => format!("`{}` is not a regular file", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("file not found: `{}`", path.display())
            }
            Err(e) => format!("cannot access `{}`: {e}", path.display()),
        };
        self.error(key, Problem::FileNotFound, problem);
        None
    }

    /// Relative paths are anchored at the config file's directory.
    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() || self.base_dir.as_os_str().is_empty() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path.strip_prefix(".").unwrap_or(path))
        }
    }

    fn missing(&mut self, key: &str, why: &str) {
        // A key the user wrote with a typo or a wrong type was already reported as such.
        let section = key.split('.').next().unwrap_or(key);
        if self.shadowed.contains(key) || self.shadowed.contains(section) {
            return;
        }
        self.error(key, Problem::MissingKey, format!("missing: {why}"));
    }

    fn error(&mut self, key: &str, problem: Problem, message: String) {
        self.push(Severity::Error, key, problem, message);
    }

    fn warn(&mut self, key: &str, message: &str) {
        self.push(
            Severity::Warning,
            key,
            Problem::Discouraged,
            message.to_owned(),
        );
    }

    fn push(&mut self, severity: Severity, key: &str, problem: Problem, message: String) {
        self.out.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            key: key.to_owned(),
            message,
            suggestion: None,
            problem,
            location: None,
        });
    }
}

/// Parses `host:port` or `[IPv6]:port` into a lowercased host and a port, with a reason
/// when it does not parse. Port 0 and wildcard IPs are refused: these are addresses to
/// connect to.
pub(crate) fn parse_host_port(value: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:").ok_or("expected `[IPv6]:port`")?;
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{ip}` is not an IPv6 address"));
        }
        (ip, port)
    } else {
        let (host, port) = value
            .rsplit_once(':')
            .ok_or("expected host:port, the port is missing")?;
        if host.contains(':') {
            return Err("an IPv6 address needs brackets, as in `[::1]:7654`".to_owned());
        }
        if !host.is_empty() && !valid_host(host) {
            return Err(format!("`{host}` is not a valid host name or IP address"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("the host is missing".to_owned());
    }
    let port = match port.parse::<u16>() {
        Ok(0) => return Err("port 0 cannot be connected to; use 1-65535".to_owned()),
        Ok(port) => port,
        Err(_) => return Err(format!("`{port}` is not a port number (1-65535)")),
    };
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Err(format!(
            "`{host}` is a wildcard address; other nodes need one they can connect to"
        ));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// Host names and IPv4 literals: letters, digits, `-`, `_` (container names), dots.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::parse_host_port;

    #[test]
    fn host_port() {
        assert_eq!(parse_host_port("db-1:7654"), Ok(("db-1".into(), 7654)));
        assert_eq!(
            parse_host_port("Node.Example:1"),
            Ok(("node.example".into(), 1))
        );
        assert_eq!(
            parse_host_port("10.0.0.2:7654"),
            Ok(("10.0.0.2".into(), 7654))
        );
        assert_eq!(parse_host_port("[::1]:7654"), Ok(("::1".into(), 7654)));
        for bad in [
            "",
            "host",
            ":7654",
            "host:",
            "host:0",
            "host:65536",
            "host:abc",
            "::1:7654",
            "[::1]",
            "[nope]:1",
            "0.0.0.0:7654",
            "[::]:7654",
            "a b:1",
            "host:7654 ",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
