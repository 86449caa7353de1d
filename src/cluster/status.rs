//! Node and member status, derived from Raft progress and heartbeats.
//!
//! | status | meaning |
//! |---|---|
//! | `Active` | healthy: applying, and (for followers) replicated and heard from recently |
//! | `Lagging` | behind the leader by more than [`LAG_ENTRIES`] entries, or not heard from for three heartbeats |
//! | `Dropped` | not heard from for ten heartbeats |
//! | `Joining` | known to the membership but never replicated to yet / no leader known to this node yet |
//! | `Syncing` | catching up: applied index well behind the commit index |
//! | `Offline` | its local MariaDB fails the health check (it takes no writes, serves no local reads, does not stand for election); or, reported by the leader, unreachable since this leader started |
//! | `NeedsMigration` | behind the purged log: it needs a snapshot (reported by the leader), or is installing one |
//! | `Diverged` | the applier stopped at an entry whose replay differed from the leader's |

use std::time::Duration;

use openraft::ServerState;
use serde::Serialize;

use super::node::Cluster;
use crate::apply::ApplyStatus;

/// A follower further behind than this is `Lagging`.
pub const LAG_ENTRIES: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Active,
    Lagging,
    Dropped,
    Joining,
    Syncing,
    Offline,
    NeedsMigration,
    Diverged,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    /// The last entry purged from the log (a node behind it needs a snapshot).
    pub purged_index: Option<u64>,
    /// The position of this node's current snapshot.
    pub snapshot_index: Option<u64>,
    pub number: u16,
    pub role: String,
    pub status: Status,
    pub term: u64,
    pub leader_id: Option<String>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Set when `status` is `Diverged`.
    pub diverged: Option<Divergence>,
    /// The local MariaDB, as the health check judges it.
    pub database: super::leadership::DbHealth,
    pub cluster_addr: String,
    pub proxy_addr: String,
    pub api_addr: String,
    /// Statements this process's proxy has answered since it started.
    pub statements: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    pub index: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub node_id: String,
    pub number: u64,
    pub role: String,
    pub voter: bool,
    pub cluster_addr: String,
    pub proxy_addr: String,
    pub api_addr: String,
    pub status: Status,
    /// Replicated index, as the leader knows it (`None` on a follower's view).
    pub matched_index: Option<u64>,
    /// Entries behind the leader's log.
    pub lag: Option<u64>,
    /// Time since the leader last heard from it, in milliseconds.
    pub last_heard_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub leader_id: Option<String>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
}

impl Cluster {
    /// This node's status.
    pub fn node_status(&self) -> NodeStatus {
        let m = self.metrics();
        let leader = m.current_leader;
        let applied = m.last_applied.map(|l| self.cap_applied(l.index));
        let committed = m.local_committed.map(|l| l.index);
        let diverged = match &*self.apply_status.lock().unwrap_or_else(|e| e.into_inner()) {
            ApplyStatus::Diverged { index, reason } => Some(Divergence {
                index: *index,
                reason: reason.clone(),
            }),
            ApplyStatus::Running => None,
        };
        let database = *self.db_health.borrow();
        let status = if diverged.is_some() {
            Status::Diverged
        } else if database != super::leadership::DbHealth::Healthy {
            Status::Offline
        } else if self.installing.load(std::sync::atomic::Ordering::SeqCst) {
            Status::NeedsMigration
        } else if leader.is_none() || m.state == ServerState::Learner {
            Status::Joining
        } else if committed.unwrap_or(0).saturating_sub(applied.unwrap_or(0)) > LAG_ENTRIES {
            Status::Syncing
        } else {
            Status::Active
        };
        let leader_id = leader.and_then(|id| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.id.clone())
        });
        NodeStatus {
            node_id: self.member.id.clone(),
            number: self.id as u16,
            role: role(m.state),
            status,
            term: m.current_term,
            leader_id,
            last_log_index: m.last_log_index,
            purged_index: m.purged.map(|p| p.index),
            snapshot_index: m.snapshot.map(|s| s.index),
            committed_index: committed,
            applied_index: applied,
            diverged,
            database,
            cluster_addr: self.member.cluster_addr.clone(),
            proxy_addr: self.member.proxy_addr.clone(),
            api_addr: self.member.api_addr.clone(),
            statements: crate::telemetry::statements(),
        }
    }

    /// Every member, as this node sees it (the leader knows each one's progress).
    pub fn cluster_view(&self, heartbeat: Duration) -> ClusterView {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let mut members = Vec::new();
        for (id, node) in membership.nodes() {
            let is_leader = m.current_leader == Some(*id);
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index);
            let heard = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(id).cloned().flatten())
                .map(|t| openraft::Instant::elapsed(&*t));
            let lag = if is_leader {
                Some(0)
            } else {
                matched.map(|i| last.saturating_sub(i))
            };
            let status = if *id == self.id {
                self.node_status().status
            } else if m.state != ServerState::Leader {
                // Only the leader tracks followers.
                if is_leader {
                    Status::Active
                } else {
                    Status::Joining
                }
            } else if !voters.contains(id) {
                // A learner: it joined and is catching up; it becomes a voter then.
                Status::Joining
            } else {
                let purged = m.purged.map(|p| p.index);
                match (matched, heard) {
                    // The entries it needs next are gone from the log: a snapshot.
                    (_, Some(_)) if purged.is_some() && matched < purged => Status::NeedsMigration,
                    (None, _) => Status::Joining,
                    (_, None) => Status::Offline,
                    (_, Some(h)) if h > heartbeat * 10 => Status::Dropped,
                    (_, Some(h)) if h > heartbeat * 3 => Status::Lagging,
                    _ if lag.unwrap_or(0) > LAG_ENTRIES => Status::Lagging,
                    _ => Status::Active,
                }
            };
            members.push(MemberStatus {
                node_id: node.id.clone(),
                number: *id,
                role: if is_leader {
                    "leader".into()
                } else if voters.contains(id) {
                    "follower".into()
                } else {
                    "learner".into()
                },
                voter: voters.contains(id),
                cluster_addr: node.cluster_addr.clone(),
                proxy_addr: node.proxy_addr.clone(),
                api_addr: node.api_addr.clone(),
                status,
                matched_index: matched,
                lag,
                last_heard_ms: heard.map(|h| h.as_millis() as u64),
            });
        }
        ClusterView {
            leader_id: m
                .current_leader
                .and_then(|id| membership.get_node(&id).map(|n| n.id.clone())),
            term: m.current_term,
            members,
        }
    }
}

fn role(state: ServerState) -> String {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
    .into()
}
