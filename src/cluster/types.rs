//! The openraft type configuration, and the member record every node of the cluster
//! knows about every other.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::apply::LogEntry;

/// A member of the cluster, as recorded in the Raft membership: its name and the
/// addresses of its three listeners, so any node can reach any other's proxy and API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `[node] id`.
    pub id: String,
    /// Where it takes cluster connections (its advertise address).
    pub cluster_addr: String,
    /// Its MySQL front end.
    pub proxy_addr: String,
    /// Its HTTP API.
    pub api_addr: String,
    /// Chosen when its data directory was created (see [`super::transport::PeerIdentity`]):
    /// a node that comes back with a replaced data directory under the same id and
    /// number has another, and is not taken for the member it was (it forgot its log
    /// and its vote). 0: not known.
    pub incarnation: u64,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.cluster_addr)
    }
}

/// What applying an entry returns to the writer that proposed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
}

openraft::declare_raft_types!(
    /// WolfScale's Raft: node ids are the nodes' 10-bit numbers, entries are
    /// [`LogEntry`]s, and log ids are standard Raft's `(term, index)` (one leader per
    /// term), which the WAL stores as they are.
    pub TypeConfig:
        D = LogEntry,
        R = Applied,
        NodeId = u64,
        Node = Member,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

pub type NodeId = u64;
pub type Raft<SM> = openraft::Raft<TypeConfig, SM>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Member>;

/// A log id from the WAL's `(index, term)`.
pub fn log_id(index: u64, term: u64) -> LogId {
    openraft::LogId::new_term_index(term, index)
}

/// The term of a log id.
pub fn term_of(id: &LogId) -> u64 {
    id.leader_id.term
}
