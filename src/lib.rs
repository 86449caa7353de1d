//! WolfScale: a MariaDB gateway and synchronization manager.
//!
//! # Layout
//! - [`config`]: `wolfscale.toml`, validated into a checked [`config::Config`].
//! - [`protocol`]: MySQL wire protocol: framing, handshake, OK/ERR, reply scanning.
//! - [`proxy`]: the MySQL front end: listener, sessions, backend connections, accounts.
//! - [`sql`]: statement classification and determinism analysis.
//! - [`localdb`]: throwaway `mariadbd` processes for `wolfscale demo` and tests.
pub mod config;
pub mod localdb;
pub mod protocol;
pub mod proxy;
pub mod sql;
