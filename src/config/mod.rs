//! Configuration: `wolfscale.toml`, its defaults, and its validation.
//!
//! # Data flow
//!
//! ```text
//! text ──toml──▶ toml::Table ──schema walk──▶ RawConfig ──check──▶ Config
//!                    │              │                      │
//!               syntax error   unknown keys,          missing keys, bounds,
//!               (line:col)     wrong types            addresses, files, conflicts
//!                                   └───────────┬──────────┘
//!                                        Vec<Diagnostic>
//! ```
//!
//! Every stage keeps going after a problem, so one run reports everything that is wrong with
//! a file: each [`Diagnostic`] names the file, the dotted key and the reason, and, for a
//! misspelled key, the closest known one. Errors refuse the file; warnings (such as
//! `bootstrap = true`) are returned next to the loaded [`Config`].
//!
//! # Layout
//!
//! * `mod.rs`: the checked [`Config`] (what the rest of the crate uses), loading, and
//!   [`resolve_path`].
//! * `raw.rs`: the schema (every known section and key with its TOML type), the walk that
//!   checks a parsed table against it, and the `Option`-only serde structs it fills.
//! * `check.rs`: raw → checked: defaults, bounds, addresses, paths, cross-field rules.
//! * `diagnostic.rs`: [`Diagnostic`], [`ConfigError`], did-you-mean matching.
//! * `secret.rs`: [`Secret`], a string that redacts itself.
//! * `template.rs`: [`template`], the commented file `wolfscale init` writes.
//!
//! # Paths
//!
//! Relative paths in the file (`node.data_dir`, `proxy.tls_cert`, `proxy.tls_key`) are
//! resolved against the directory that contains the config file, not the working directory,
//! so a node behaves the same whichever directory it is started from. For text loaded with
//! [`Config::from_toml_str`] and a path without a directory part (such as `<memory>`), they
//! stay relative, that is, relative to the working directory.
//!
//! # Finding the file
//!
//! `-c/--config PATH`, else `$WOLFSCALE_CONFIG`, else `./wolfscale.toml`; see [`resolve_path`].

mod check;
mod diagnostic;
mod info;
mod raw;
mod secret;
mod template;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use diagnostic::{ConfigError, Diagnostic, Location, Problem, Severity};
pub use info::{exposure_warnings, render as render_info, REDACTED};
pub use secret::Secret;
pub use template::template;

/// The file looked for in the working directory when neither `--config` nor
/// [`ENV_VAR`] names one.
pub const DEFAULT_FILE: &str = "wolfscale.toml";
/// Environment variable naming the config file.
pub const ENV_VAR: &str = "WOLFSCALE_CONFIG";
/// The `source` of a [`Config`] that did not come from a file.
pub const MEMORY_SOURCE: &str = "<memory>";

/// Default port of the cluster (Raft) listener, `node.bind_address`.
pub const DEFAULT_CLUSTER_PORT: u16 = 7654;
/// Default port of the HTTP API, `api.bind_address`.
pub const DEFAULT_API_PORT: u16 = 8080;
/// Default port of the MySQL-protocol proxy, `proxy.bind_address`.
pub const DEFAULT_PROXY_PORT: u16 = 8007;
/// Default port of the local MariaDB, `database.port`.
pub const DEFAULT_DATABASE_PORT: u16 = 3306;

/// Longest `node.id`, in characters.
pub const NODE_ID_MAX_LEN: usize = 64;
/// Largest `node.number`: node numbers are 10 bits.
pub const NODE_NUMBER_MAX: u16 = 1023;
/// `[node] priority` when the file does not set it.
pub const DEFAULT_PRIORITY: u8 = 50;

/// The rule for `node.id`, as stated in diagnostics.
const NODE_ID_RULE: &str =
    "a node id is 1 to 64 characters, each an ASCII letter, digit, `.`, `_` or `-`";

/// Checks a node id against the rule of `node.id`: 1 to [`NODE_ID_MAX_LEN`] characters,
/// each an ASCII letter or digit, `.`, `_` or `-`. The error is a one-line reason that
/// states the rule (for ids from the file, and from peers).
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("must not be empty: {NODE_ID_RULE}"));
    }
    let len = id.chars().count();
    if len > NODE_ID_MAX_LEN {
        return Err(format!("too long ({len} characters): {NODE_ID_RULE}"));
    }
    match id
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(bad) => {
            // Control characters escaped, so the diagnostic stays on one line.
            let shown: String = id
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_debug().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            Err(format!(
                "`{shown}` contains {bad:?}, which is not allowed: {NODE_ID_RULE}"
            ))
        }
        None => Ok(()),
    }
}

/// The node number a node gets when its file sets `node.id` but not `node.number`.
///
/// * An id that ends in decimal digits gets that number modulo 1024: `"node-1"` → 1,
///   `"wolftest3"` → 3, `"db-dc1-002"` → 2, `"7"` → 7, `"node-1025"` → 1.
/// * Any other id gets the CRC-32C (Castagnoli) of its UTF-8 bytes, modulo 1024.
///
/// The mapping is part of the configuration format and stays the same across WolfScale
/// versions: CRC-32C is a fixed, standardized function (not a seeded or
/// implementation-defined hash such as std's `DefaultHasher`), and the tests pin its
/// values. Changing it would renumber running nodes.
///
/// Two ids can map to the same number (`"node-1"` and `"node-1025"`, or two names whose
/// hashes collide). Numbers must be unique in a cluster, which is checked when nodes
/// meet, not here; setting `node.number` explicitly on one of the two resolves it.
pub fn derive_node_number(id: &str) -> u16 {
    const MODULUS: u32 = NODE_NUMBER_MAX as u32 + 1;
    let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let number = if digits > 0 {
        // Digit by digit, so a run of any length cannot overflow.
        id.as_bytes()[id.len() - digits..]
            .iter()
            .fold(0, |n, d| (n * 10 + u32::from(d - b'0')) % MODULUS)
    } else {
        crc32c::crc32c(id.as_bytes()) % MODULUS
    };
    // Below 1024, so it fits.
    number as u16
}

/// The config file to use: `cli` (`-c/--config PATH`) if given, else `$WOLFSCALE_CONFIG` if
/// set and not empty, else `./wolfscale.toml`.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    resolve_path_from(cli, std::env::var_os(ENV_VAR))
}

fn resolve_path_from(cli: Option<&Path>, env: Option<OsString>) -> PathBuf {
    match (cli, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => PathBuf::from(DEFAULT_FILE),
    }
}

/// A validated configuration. Every value is within its documented bounds, and relative
/// paths have been resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: NodeConfig,
    pub database: DatabaseConfig,
    pub wal: WalConfig,
    pub cluster: ClusterConfig,
    pub api: ApiConfig,
    pub proxy: ProxyConfig,
    /// The file this came from, or `<memory>` ([`MEMORY_SOURCE`]).
    pub source: PathBuf,
}

/// `[node]`: who this node is and where it listens for peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `id`: this node's name in the cluster, such as `"node-1"` or `"db-dc1-001"`.
    /// **Required.** 1 to 64 characters, each an ASCII letter, digit, `.`, `_` or `-`
    /// ([`validate_node_id`]). Unique in the cluster.
    pub id: String,
    /// `number`: this node's 10-bit number, 0..=1023 ([`NODE_NUMBER_MAX`]). It is the node
    /// field of Snowflake ids and of connection ids, and will be the Raft node id, so it must
    /// be unique in the cluster (checked when nodes meet, not here). When the file does not
    /// set it, it is [`derive_node_number`] of `id`.
    pub number: u16,
    /// Whether `number` was written in the file (`false`: derived from `id`).
    pub number_explicit: bool,
    /// `priority`: how much this node is preferred as leader, 0..=100, default 50. The
    /// leader hands leadership to the caught-up, healthy voter with the highest
    /// priority, the first in the natural order of ids among equals; 0 is never
    /// preferred (it still stands for election when there is no leader).
    pub priority: u8,
    /// `bind_address`: where the cluster (Raft) listener binds, as `IP:port` (no host
    /// names). Default `0.0.0.0:7654`. Port 0 asks the OS for a free port (tests).
    pub bind_address: SocketAddr,
    /// `advertise_address`: how peers reach this node, as `host:port` (`[v6]:port` for IPv6),
    /// port 1..=65535, not a wildcard address. **Required when `cluster.peers` is not
    /// empty**; otherwise defaults to `127.0.0.1:<port of bind_address>`.
    pub advertise_address: String,
    /// `data_dir`: WAL segments and node state (`data_dir/state/`). Default `./data`,
    /// resolved against the config file's directory. Must not be empty.
    pub data_dir: PathBuf,
}

/// `[database]`: the local MariaDB this node replays the log on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `host`. Default `127.0.0.1`. A host name or IP, not empty.
    pub host: String,
    /// `port`. Default 3306, 1..=65535.
    pub port: u16,
    /// `user`: the service account. **Required**, not empty.
    pub user: String,
    /// `password`. Default empty.
    pub password: Secret,
    /// `database`: the service account's default database. Optional, no default; not empty
    /// when set. Which databases are replicated does not depend on it.
    pub database: Option<String>,
    /// `socket`: the MariaDB Unix socket, an absolute path. Optional, no default. When set,
    /// connections to the local MariaDB use it instead of `host`/`port` (cheaper than
    /// loopback TCP).
    pub socket: Option<PathBuf>,
    /// `pool_size`: connections to the local MariaDB. Default 8, 1..=1024.
    pub pool_size: usize,
    /// `follower_innodb_flush`: the `innodb_flush_log_at_trx_commit` WolfScale sets on
    /// the local MariaDB while this node is a follower, 1 or 2. Optional, no default
    /// (the setting is left alone). With 2, replayed commits skip their fsync: every
    /// entry is in the fsynced log and the applied marker commits with its effects, so
    /// replay restores whatever an OS crash takes. When set, the node sets 1 before it
    /// takes writes as leader (a leader's prepared transactions must be durable).
    pub follower_innodb_flush: Option<u8>,
}

/// `[wal]`: the replicated write-ahead log on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// `batch_size`: most entries written under one fsync. Default 1000, 1..=100000.
    pub batch_size: usize,
    /// `flush_interval_ms`: the longest a group keeps gathering appends that are already
    /// queued before it is written. The writer never sleeps waiting for more: appends
    /// that arrive during a sync form the next group. Default 2, 0..=10000.
    pub flush_interval_ms: u64,
    /// `compression`: lz4 for batch payloads. Default true.
    pub compression: bool,
    /// `segment_size_mb`: size at which a segment file is closed and a new one started.
    /// Default 64, 1..=4096.
    pub segment_size_mb: u64,
    /// `retention_hours`: how long segments a snapshot covers are kept before they are
    /// deleted. Default 168 (a week), 0..=87600 (ten years); 0 deletes them as soon as
    /// a snapshot covers them.
    pub retention_hours: u64,
    /// `snapshot_entries`: a snapshot (a logical dump of the local MariaDB) is built
    /// every this many applied entries, and the log below it, less as many entries
    /// again, may then be purged. Default 100000, 0..=1000000000; 0 never builds one
    /// (the log is never purged).
    pub snapshot_entries: u64,
    /// `fsync`: fdatasync each batch. Default true. `false` gives a warning: an
    /// acknowledged write can then be lost if a majority loses power at once.
    pub fsync: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            batch_size: 1000,
            flush_interval_ms: 2,
            compression: true,
            segment_size_mb: 64,
            retention_hours: 168,
            snapshot_entries: 100_000,
            fsync: true,
        }
    }
}

/// `[cluster]`: Raft membership and timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `bootstrap`: initialize a new cluster with this node as its first member. Default
    /// false. Setting it in the file gives a warning: pass `--bootstrap` once on the command
    /// line instead, so a later restart cannot bootstrap a second cluster.
    pub bootstrap: bool,
    /// `peers`: the other nodes' advertise addresses, `host:port` each, port 1..=65535.
    /// Default empty (a single node). Must not contain this node's own advertise address or
    /// the same address twice.
    pub peers: Vec<String>,
    /// `heartbeat_interval_ms`: leader heartbeat. Default 500, 1..=60000, less than
    /// `election_timeout_min_ms`.
    pub heartbeat_interval_ms: u64,
    /// `election_timeout_min_ms`: lower bound of the randomized election timeout. Default
    /// 1500, 1..=600000, less than `election_timeout_max_ms`.
    ///
    /// The file may instead set `election_timeout_ms = N` (1..=300000), shorthand for
    /// `election_timeout_min_ms = N` and `election_timeout_max_ms = 2N`; setting it together
    /// with either of those is an error. Only the two bounds are kept here.
    pub election_timeout_min_ms: u64,
    /// `election_timeout_max_ms`: upper bound of the randomized election timeout. Default
    /// 3000, 1..=600000.
    pub election_timeout_max_ms: u64,
    /// `disable_auto_election`: never start an election on its own (leadership only through
    /// `wolfctl`). Default false.
    pub disable_auto_election: bool,
    /// `secret`: shared secret that authenticates cluster traffic. Optional, no default; not
    /// empty when set. Peers without a secret give a warning.
    pub secret: Option<Secret>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            bootstrap: false,
            peers: Vec::new(),
            heartbeat_interval_ms: 500,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            disable_auto_election: false,
            secret: None,
        }
    }
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// `enabled`. Default true.
    pub enabled: bool,
    /// `bind_address`: `IP:port`. Default `0.0.0.0:8080`. Port 0 asks the OS for a free port.
    /// Must not share a port with another enabled listener.
    pub bind_address: SocketAddr,
    /// `token`: bearer token required by the API. Optional, no default; not empty when set.
    pub token: Option<Secret>,
    /// `max_body_bytes`: the largest request body accepted; a larger one gets 413.
    /// Default 1048576 (1 MiB), 1024..=67108864.
    pub max_body_bytes: usize,
    /// `id_column`: the column `POST /write/insert` fills with a Snowflake id when a
    /// table has it and the request gives no value for it. Optional, no default; not
    /// empty when set.
    pub id_column: Option<String>,
    /// `user`: the MariaDB account the write and query endpoints run as (through this
    /// node's proxy, so every write takes the proxy's path to the leader). Optional;
    /// default the service account (`[database] user`). Not empty when set.
    pub user: Option<String>,
    /// `password`: `user`'s password. Optional; needs `user`.
    pub password: Option<Secret>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            bind_address: SocketAddr::from(([0, 0, 0, 0], DEFAULT_API_PORT)),
            token: None,
            max_body_bytes: 1 << 20,
            id_column: None,
            user: None,
            password: None,
        }
    }
}

/// `[proxy]`: the MySQL-protocol front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `enabled`. Default true.
    pub enabled: bool,
    /// `bind_address`: `IP:port`. Default `0.0.0.0:8007`. Port 0 asks the OS for a free port.
    /// Must not share a port with another enabled listener.
    pub bind_address: SocketAddr,
    /// `max_connections`: client connections at once; more wait to be accepted. Default
    /// 1000, 1..=100000.
    pub max_connections: usize,
    /// `tls_cert`: PEM certificate chain; enables TLS. Optional, no default. Needs `tls_key`;
    /// the file must exist. Resolved against the config file's directory.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: PEM private key for `tls_cert`. Optional, no default. Needs `tls_cert`; the
    /// file must exist. Resolved against the config file's directory.
    pub tls_key: Option<PathBuf>,
    /// `handshake_timeout_ms`: a client that has not finished the handshake (TLS and
    /// authentication) by then is dropped. Default 10000, 100..=600000.
    pub handshake_timeout_ms: u64,
    /// `max_allowed_packet`: largest logical packet accepted from a client, in bytes.
    /// Default 16777216 (16 MiB), 1024..=1073741824 (1 GiB).
    pub max_allowed_packet: usize,
    /// `shutdown_timeout_ms`: on SIGTERM, how long in-flight statements get to finish before
    /// their connections are closed. Default 10000, 0..=3600000.
    pub shutdown_timeout_ms: u64,
    /// `client_buffer_limit_mb`: memory for client packets larger than 64 KiB, shared by
    /// all sessions, in MiB. A session whose packet does not fit waits up to
    /// `net_read_timeout_ms` for others to finish, then gets ERR 1041. Packets of up to
    /// 64 KiB need no share, so the proxy holds at most `max_connections × 128 KiB` plus
    /// this for client packets. Default 256, 1..=1048576, at least twice
    /// `max_allowed_packet`.
    pub client_buffer_limit_mb: usize,
    /// `net_read_timeout_ms`: once a client has begun a packet (or LOAD DATA LOCAL file
    /// contents), each further read must arrive within this, else ERR 1159 and the
    /// connection is closed, as MariaDB's `net_read_timeout`. Default 30000,
    /// 100..=3600000.
    pub net_read_timeout_ms: u64,
    /// `refuse_weak_isolation`: on a cluster node, a write transaction of a session at
    /// READ COMMITTED or READ UNCOMMITTED is refused (ERR 1235) instead of being run at
    /// REPEATABLE READ with a warning. Default false.
    pub refuse_weak_isolation: bool,
    /// `read_consistency`: how fresh a read a follower serves from its own MariaDB
    /// must be: `local`, `session` (read your writes), `fresh` or `linearizable`.
    /// Default `session`. A session overrides it with
    /// `SET @@session.wolfscale_read_consistency = '…'`.
    pub read_consistency: ReadConsistency,
    /// `read_wait_ms`: how long a follower's read waits for its applier to reach the
    /// index it needs before it runs on the leader instead. Default 1000, 0..=60000.
    pub read_wait_ms: u64,
    /// `failover_wait_ms`: how long a statement that needs the leader is held while
    /// there is none (an election), before it fails with a retryable error. Default
    /// 5000, 0..=600000.
    pub failover_wait_ms: u64,
}

/// `[proxy] read_consistency`: which reads a follower serves from its own MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadConsistency {
    /// Always the local MariaDB, whatever its lag.
    Local,
    /// Read your writes: local once the applier has reached the session's last write.
    #[default]
    Session,
    /// Local only when the node has applied everything it knows the leader committed.
    Fresh,
    /// The leader confirms its leadership with a quorum; the read runs where that
    /// commit index is applied.
    Linearizable,
}

impl ReadConsistency {
    pub const NAMES: &'static str = "local, session, fresh, linearizable";

    pub fn parse(s: &str) -> Option<ReadConsistency> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Some(ReadConsistency::Local),
            "session" => Some(ReadConsistency::Session),
            "fresh" => Some(ReadConsistency::Fresh),
            "linearizable" => Some(ReadConsistency::Linearizable),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ReadConsistency::Local => "local",
            ReadConsistency::Session => "session",
            ReadConsistency::Fresh => "fresh",
            ReadConsistency::Linearizable => "linearizable",
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            enabled: true,
            bind_address: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PROXY_PORT)),
            max_connections: 1000,
            tls_cert: None,
            tls_key: None,
            handshake_timeout_ms: 10_000,
            max_allowed_packet: 16 * 1024 * 1024,
            shutdown_timeout_ms: 10_000,
            client_buffer_limit_mb: 256,
            net_read_timeout_ms: 30_000,
            refuse_weak_isolation: false,
            read_consistency: ReadConsistency::Session,
            read_wait_ms: 1000,
            failover_wait_ms: 5000,
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`. `Ok` carries the warnings too; any error
    /// diagnostic gives [`ConfigError::Invalid`] with all diagnostics.
    pub fn load(path: &Path) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
        Config::load_as(path, Role::Node)
    }

    /// Like [`Config::load`], for what `role` needs.
    pub fn load_as(path: &Path, role: Role) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str_as(&text, path, role)
    }

    /// Like [`Config::load`], from text. `path` names the file in diagnostics, becomes
    /// `source`, and its directory anchors relative paths; pass `Path::new("<memory>")`
    /// ([`MEMORY_SOURCE`]) for text that has no file.
    pub fn from_toml_str(
        text: &str,
        path: &Path,
    ) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
        Config::from_toml_str_as(text, path, Role::Node)
    }

    fn from_toml_str_as(
        text: &str,
        path: &Path,
        role: Role,
    ) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
        let (config, diagnostics) = diagnose(text, path, role);
        match config {
            Some(config) if !diagnostics.iter().any(Diagnostic::is_error) => {
                Ok((config, diagnostics))
            }
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                diagnostics,
            }),
        }
    }
}

/// What a file is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `wolfscale start` / `join`: a member of the cluster.
    Node,
    /// `wolfscale proxy`: a standalone proxy, which peers never connect to (it needs no
    /// `[node] advertise_address`).
    Proxy,
}

/// Every diagnostic, errors and warnings, for the file at `path`, in file order. An
/// unreadable file gives one error diagnostic. For `wolfscale validate` and
/// `wolfctl check-config`.
pub fn check_file(path: &Path) -> Vec<Diagnostic> {
    check_file_as(path, Role::Node)
}

/// Like [`check_file`], for what `role` needs.
pub fn check_file_as(path: &Path, role: Role) -> Vec<Diagnostic> {
    match std::fs::read_to_string(path) {
        Ok(text) => diagnose(&text, path, role).1,
        Err(e) => vec![Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read config file: {e}"),
            suggestion: None,
            problem: Problem::Unreadable,
            location: None,
        }],
    }
}

/// Runs both layers and returns the config (if it could be built) with every diagnostic,
/// located and in file order.
fn diagnose(text: &str, path: &Path, role: Role) -> (Option<Config>, Vec<Diagnostic>) {
    let mut parsed = raw::parse(text, path);
    let mut diagnostics = std::mem::take(&mut parsed.diagnostics);
    let config = match parsed.raw.take() {
        Some(raw) => check::validate(raw, path, &parsed.shadowed, &mut diagnostics, role),
        None => None,
    };
    for d in &mut diagnostics {
        if d.location.is_none() && !d.key.is_empty() {
            d.location = parsed
                .spans
                .find(&d.key)
                .map(|span| Location::of_offset(text, span.start));
        }
    }
    diagnostics.sort_by_key(|d| {
        d.location
            .map_or((usize::MAX, usize::MAX), |l| (l.line, l.column))
    });
    (config, diagnostics)
}

#[cfg(test)]
mod tests;
