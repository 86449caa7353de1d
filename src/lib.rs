//! WolfScale: a MariaDB gateway and synchronization manager.
//!
//! # Layout
//! - [`api`]: the HTTP API (status, cluster, admin, data endpoints, metrics).
//! - [`apply`]: committed log entries replayed on the local MariaDB, exactly once.
//! - [`config`]: `wolfscale.toml`, validated into a checked [`config::Config`].
//! - [`id`]: Snowflake ids (`GET /id`).
//! - [`protocol`]: MySQL wire protocol: framing, handshake, OK/ERR, reply scanning.
//! - [`proxy`]: the MySQL front end: listener, sessions, backend connections, accounts.
//! - [`sql`]: statement classification and determinism analysis.
//! - [`wal`]: the segmented, checksummed, group-committed write-ahead log.
//! - [`state`]: the node's SQLite state database (purge marker; later vote, membership).
//! - [`run`]: a whole node (proxy, cluster, API) from its configuration.
//! - [`telemetry`]: Prometheus metrics.
//! - [`localdb`]: throwaway `mariadbd` processes for `wolfscale demo` and tests.
pub mod api;
pub mod apply;
pub mod cluster;
pub mod config;
pub mod failpoint;
pub mod id;
pub mod localdb;
pub mod protocol;
pub mod proxy;
pub mod run;
pub mod sql;
pub mod state;
pub mod telemetry;
pub mod wal;
