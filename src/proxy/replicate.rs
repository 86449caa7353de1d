//! What the proxy needs from the cluster to replicate writes, as a trait: the
//! [`crate::cluster::Cluster`] implements it, and the sequencer's tests use a fake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::apply::{LogEntry, PendingCommits, TxnId};
use crate::cluster::{Cluster, Member, Proposal, ProposeError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The proxy's view of the cluster.
pub trait Replicator: Send + Sync + 'static {
    /// `Some(term)` when this node leads and may take writes (fenced) in that term.
    fn writable_term(&self) -> Option<u64>;
    /// The current leader's record, for a follower's "send writes there" error.
    fn leader(&self) -> Option<Member>;
    /// This node's record.
    fn me(&self) -> &Member;
    /// This node's producer id for [`TxnId`]s.
    fn incarnation(&self) -> u64;
    /// Where this run's [`TxnId`] sequence numbers start (above every earlier run's).
    fn seq_base(&self) -> u64;
    /// Sessions waiting for the applier to reach their transactions.
    fn pending(&self) -> &PendingCommits;
    /// Append an entry if this node still leads in `term`.
    fn propose(&self, entry: LogEntry, term: u64) -> BoxFuture<'_, Result<Proposal, ProposeError>>;
    /// Wait until this node may take writes, up to `timeout`.
    fn wait_writable(&self, timeout: Duration) -> BoxFuture<'_, Option<u64>>;
    /// Wait for the next change of this node's view of the cluster (its role, the
    /// leader, the applied index), up to `timeout`.
    fn changed(&self, timeout: Duration) -> BoxFuture<'_, ()>;
    /// Durably note that DDL `id` is about to run here before it is logged (crash
    /// detection), and forget it once it is applied.
    fn ddl_intent(&self, id: TxnId, sql: &str) -> Result<(), String>;
    fn ddl_done(&self, id: TxnId);
    /// `[cluster] secret`, which proves a forwarded client's address to the leader.
    fn secret(&self) -> &[u8];
    /// The last index applied to the local MariaDB.
    fn applied_index(&self) -> u64;
    /// The highest index this node knows to be committed.
    fn known_committed(&self) -> u64;
    /// Wait until the local MariaDB has applied `index`, up to `timeout`.
    fn wait_applied(&self, index: u64, timeout: Duration) -> BoxFuture<'_, bool>;
    /// On the leader: confirm leadership with a majority; the index a read must see.
    fn read_index(&self) -> BoxFuture<'_, Result<u64, String>>;
    /// Whether `ip` belongs to a member of the cluster.
    fn is_member_ip(&self, ip: std::net::IpAddr) -> bool;
    /// The record of the member whose node number is `number`.
    fn member(&self, number: u16) -> Option<Member>;
    /// The last index in this node's log.
    fn last_log_index(&self) -> u64;
    /// Whether the local MariaDB passes the node's health check (else it serves no
    /// local reads).
    fn local_healthy(&self) -> bool;
    /// Whether forwarded request `id`, sent when its sender knew `since` committed,
    /// committed (see [`crate::cluster::requests`]).
    fn request_outcome(&self, id: u128, since: u64) -> crate::cluster::requests::Lookup;
    /// Whether this node has heard from a leader lately (see
    /// [`Cluster::leader_heard_lately`]): a `fresh` read needs it.
    fn leader_heard_lately(&self) -> bool {
        true
    }
    /// A standalone proxy (`wolfscale proxy` in front of a cluster): no local MariaDB;
    /// each session's "local" backend is a member's proxy ([`Replicator::read_target`]),
    /// whose freshness the router asks that member about.
    fn standalone(&self) -> bool {
        false
    }
    /// On a standalone proxy: the members a new session may read from, in the order
    /// to try them (rotated from one session to the next, to spread the load).
    fn read_targets(&self) -> Vec<Member> {
        Vec::new()
    }
    /// On a standalone proxy: whether member `id` said lately that it is healthy, and
    /// the index it had applied then (`None`: not heard from lately).
    fn member_state(&self, _id: &str) -> Option<(bool, u64)> {
        None
    }
    /// On a standalone proxy: whether member `id` is the leader.
    fn leads(&self, _id: &str) -> bool {
        false
    }
}

impl Replicator for Cluster {
    fn writable_term(&self) -> Option<u64> {
        Cluster::writable_term(self)
    }

    fn leader(&self) -> Option<Member> {
        Cluster::leader(self).map(|(_, m)| m)
    }

    fn me(&self) -> &Member {
        &self.member
    }

    fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn seq_base(&self) -> u64 {
        self.seq_base
    }

    fn pending(&self) -> &PendingCommits {
        &self.pending
    }

    fn propose(&self, entry: LogEntry, term: u64) -> BoxFuture<'_, Result<Proposal, ProposeError>> {
        Box::pin(Cluster::propose(self, entry, term))
    }

    fn wait_writable(&self, timeout: Duration) -> BoxFuture<'_, Option<u64>> {
        Box::pin(Cluster::wait_writable(self, timeout))
    }

    fn changed(&self, timeout: Duration) -> BoxFuture<'_, ()> {
        use openraft::async_runtime::watch::WatchReceiver;
        let mut metrics = self.raft().metrics();
        Box::pin(async move {
            tokio::time::timeout(timeout, metrics.changed()).await.ok();
        })
    }

    fn ddl_intent(&self, id: TxnId, sql: &str) -> Result<(), String> {
        Cluster::ddl_intent(self, id, sql).map_err(|e| e.to_string())
    }

    fn ddl_done(&self, id: TxnId) {
        Cluster::ddl_done(self, id)
    }

    fn secret(&self) -> &[u8] {
        &self.secret
    }

    fn applied_index(&self) -> u64 {
        Cluster::applied_index(self)
    }

    fn known_committed(&self) -> u64 {
        Cluster::known_committed(self)
    }

    fn wait_applied(&self, index: u64, timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(Cluster::wait_applied(self, index, timeout))
    }

    fn read_index(&self) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(Cluster::read_index(self))
    }

    fn is_member_ip(&self, ip: std::net::IpAddr) -> bool {
        Cluster::is_member_ip(self, ip)
    }

    fn member(&self, number: u16) -> Option<Member> {
        use openraft::async_runtime::watch::WatchReceiver;
        let metrics = self.raft().metrics();
        let m = metrics.borrow_watched();
        m.membership_config
            .membership()
            .get_node(&u64::from(number))
            .cloned()
    }

    fn last_log_index(&self) -> u64 {
        use openraft::async_runtime::watch::WatchReceiver;
        self.raft()
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0)
    }

    fn local_healthy(&self) -> bool {
        *self.db_health.borrow() == crate::cluster::leadership::DbHealth::Healthy
            && !self.installing()
    }

    fn request_outcome(&self, id: u128, since: u64) -> crate::cluster::requests::Lookup {
        self.requests.lookup(id, since)
    }

    fn leader_heard_lately(&self) -> bool {
        Cluster::leader_heard_lately(self)
    }
}

impl std::fmt::Debug for dyn Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replicator({})", self.me())
    }
}

/// A shared replicator.
pub type SharedReplicator = Arc<dyn Replicator>;
