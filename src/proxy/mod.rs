//! The MySQL-protocol front end: listener, sessions, backend connections, accounts.
//!
//! Data flow: [`server`] accepts a TCP connection, enforces `max_connections` and the
//! handshake timeout, finds how MariaDB would see the client ([`hostname`], [`acl`]),
//! and hands the socket to [`session`], which authenticates the client against
//! [`auth`]'s account table, logs into the local MariaDB as the very account MariaDB
//! would give that client through [`backend`], and then forwards commands and relays
//! replies. Connection ids and KILL mapping live in [`registry`].

pub mod acl;
pub mod auth;
pub mod backend;
pub mod catalog;
pub mod hostname;
pub mod order;
pub mod registry;
pub mod replicate;
pub mod requests;
pub mod router;
pub mod sequencer;
pub mod server;
pub mod session;
pub mod stmt_route;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};

pub use server::{Proxy, ProxyError, ProxyHandle, ProxySettings, ProxyStats};

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
    /// The backend accepts PROXY protocol headers from us (detected at start; cleared
    /// if MariaDB later refuses one).
    pub proxy_protocol: AtomicBool,
    pub hosts: hostname::HostCache,
    /// Memory for large client packets, shared by all sessions.
    pub budget: Arc<crate::protocol::packet::PacketBudget>,
    pub net_read_timeout: Duration,
    /// Also bounds the backend part of COM_CHANGE_USER.
    pub handshake_timeout: Duration,
    /// The cluster this node writes through; unset for a proxy in front of a single
    /// MariaDB. Set once, before the proxy serves (the cluster's member record needs
    /// the proxy's bound address first).
    pub replicator: std::sync::OnceLock<replicate::SharedReplicator>,
    pub sequencing: sequencer::Sequencing,
    /// Tables whose engine cannot roll back (writes to them are refused on a cluster).
    pub catalog: Arc<catalog::Catalog>,
    /// See [`server::ProxySettings::refuse_weak_isolation`].
    pub refuse_weak_isolation: bool,
    /// `[proxy] read_consistency`.
    pub read_consistency: crate::config::ReadConsistency,
    /// `[proxy] read_wait_ms`.
    pub read_wait: Duration,
    /// `[proxy] failover_wait_ms`.
    pub failover_wait: Duration,
    /// Forwarded requests whose statements run on this node's sessions now.
    pub in_flight: requests::InFlight,
}

impl Shared {
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            sessions: self.registry.len(),
            account_reloads: self.accounts.reloads(),
            packet_budget_free_kib: self.budget.available_kib(),
            proxy_protocol: self
                .proxy_protocol
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}
