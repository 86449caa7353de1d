//! The MySQL-protocol front end: listener, sessions, backend connections, accounts.
//!
//! Data flow: [`server`] accepts a TCP connection, enforces `max_connections` and the
//! handshake timeout, and hands the socket to [`session`], which authenticates the
//! client against [`auth`]'s account table, logs into the local MariaDB as the same
//! user through [`backend`], and then forwards commands and relays replies. Connection
//! ids and KILL mapping live in [`registry`].

pub mod auth;
pub mod backend;
pub mod registry;
pub mod server;
pub mod session;

use std::sync::Arc;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};

pub use server::{Proxy, ProxyError, ProxyHandle, ProxySettings};

/// State shared by every session of one proxy.
pub struct Shared {
    /// `host:port` of the MariaDB that sessions log into.
    pub backend_addr: String,
    /// The backend's greeting, presented to clients (version, collation).
    pub greeting: crate::protocol::handshake::ServerGreeting,
    /// Capabilities offered to clients.
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub max_packet: usize,
    pub accounts: auth::Accounts,
    pub registry: Arc<registry::Registry>,
}
