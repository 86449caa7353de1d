//! Operator actions on the cluster (`wolfctl promote`, `demote`, `remove`, through the
//! API's admin endpoints).
//!
//! - **promote**: this node asks the leader for leadership; the leader hands it over
//!   with a Raft leadership transfer, which this node accepts only if it is fit to lead
//!   (healthy database, replay caught up, not diverged). It answers once this node takes
//!   writes, and keeps leadership while it leads (the preferred-leader rule leaves it
//!   be: the operator chose).
//! - **demote**: the leader hands leadership to the most caught-up voter that accepts
//!   it. A demoted node then refuses leadership transfers, so the preferred-leader rule
//!   does not give it leadership straight back; it still stands for election when there
//!   is no leader at all, and `promote` (or a restart) ends the demotion.
//! - **remove**: the leader takes a node out of the membership (a joint-consensus change
//!   through openraft). The leader itself is not removed: demote it first.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, ServerState};

use super::Cluster;
use crate::cluster::network;
use crate::cluster::types::{Member, NodeId};

/// Why an operator action was refused or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The action is the leader's to take.
    #[error("this node is not the leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<Member> },
    #[error("no node named {0} is a member of the cluster")]
    UnknownNode(String),
    /// The action makes no sense in the cluster's current state.
    #[error("{0}")]
    Refused(String),
    /// It was started and did not finish in time.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Failed(String),
}

fn leader_hint(leader: &Option<Member>) -> String {
    match leader {
        Some(m) => format!(" (the leader is {} at {})", m.id, m.api_addr),
        None => " and no leader is elected".into(),
    }
}

impl Cluster {
    /// How long an operator action waits for leadership to move.
    fn admin_wait(&self) -> Duration {
        Duration::from_millis(self.quorum_window_ms * 4).max(Duration::from_secs(5))
    }

    /// Make this node the leader. Returns the term in which it takes writes.
    pub async fn promote(&self) -> Result<u64, AdminError> {
        self.auth.fitness.demoted.store(false, Ordering::SeqCst);
        if let Some(term) = self.writable_term() {
            self.auth.fitness.promoted.store(true, Ordering::SeqCst);
            return Ok(term);
        }
        let voter = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        if !voter {
            return Err(AdminError::Refused(
                "this node is not a voter yet (a learner is promoted once it has caught up)".into(),
            ));
        }
        if let Some(why) = self.auth.fitness.transfer_refusal() {
            return Err(AdminError::Refused(format!(
                "this node cannot lead now: {why}"
            )));
        }
        let Some((_, leader)) = self.leader() else {
            return Err(AdminError::NotLeader { leader: None });
        };
        let mut target = leader.cluster_addr;
        for _ in 0..3 {
            match network::ask_promote(&target, &self.auth).await {
                Ok(None) => break,
                Ok(Some(next)) if next != target => target = next,
                Ok(Some(_)) => return Err(AdminError::Failed("the leader keeps changing".into())),
                Err(e) => return Err(AdminError::Failed(format!("the leader refused: {e}"))),
            }
        }
        let wait = self.admin_wait();
        let term = self.wait_writable(wait).await.ok_or_else(|| {
            AdminError::Timeout(format!(
                "leadership did not reach this node within {} ms",
                wait.as_millis()
            ))
        })?;
        self.auth.fitness.promoted.store(true, Ordering::SeqCst);
        Ok(term)
    }

    /// Hand leadership to another voter. Returns the new leader's record.
    pub async fn demote(&self) -> Result<Member, AdminError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(self.id) {
            return Err(AdminError::NotLeader {
                leader: self.leader().map(|(_, l)| l),
            });
        }
        let matched = |id: &NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map_or(0, |l| l.index)
        };
        let mut candidates: Vec<NodeId> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.id)
            .collect();
        if candidates.is_empty() {
            return Err(AdminError::Refused(
                "this node is the only voter: there is no one to hand leadership to".into(),
            ));
        }
        candidates.sort_by_key(|id| std::cmp::Reverse(matched(id)));
        self.auth.fitness.demoted.store(true, Ordering::SeqCst);
        self.auth.fitness.promoted.store(false, Ordering::SeqCst);
        let per_try = Duration::from_millis(self.quorum_window_ms * 2).max(Duration::from_secs(2));
        for to in candidates {
            tracing::info!(to, "demoted by the operator: transferring leadership");
            if let Err(e) = self.raft.trigger().transfer_leader(to).await {
                tracing::warn!(error = %e, "cannot transfer leadership");
                continue;
            }
            if let Some(leader) = self.wait_other_leader(per_try).await {
                return Ok(leader);
            }
        }
        if let Some(leader) = self.wait_other_leader(Duration::ZERO).await {
            return Ok(leader);
        }
        self.auth.fitness.demoted.store(false, Ordering::SeqCst);
        Err(AdminError::Timeout(
            "no other voter took leadership (each may refuse: behind, unhealthy or diverged)"
                .into(),
        ))
    }

    /// Wait until another node leads, up to `timeout`.
    async fn wait_other_leader(&self, timeout: Duration) -> Option<Member> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leader = metrics.borrow_watched().current_leader;
            if leader.is_some_and(|l| l != self.id) {
                if let Some((_, member)) = self.leader() {
                    return Some(member);
                }
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Take the node named `node_id` out of the cluster.
    pub async fn remove(&self, node_id: &str) -> Result<(), AdminError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(self.id) {
            return Err(AdminError::NotLeader {
                leader: self.leader().map(|(_, l)| l),
            });
        }
        let membership = m.membership_config.membership();
        let Some((id, _)) = membership.nodes().find(|(_, n)| n.id == node_id) else {
            return Err(AdminError::UnknownNode(node_id.into()));
        };
        let id = *id;
        if id == self.id {
            return Err(AdminError::Refused(
                "this node is the leader: demote it first, then remove it through the new leader"
                    .into(),
            ));
        }
        let ids: BTreeSet<NodeId> = [id].into_iter().collect();
        let change = if membership.voter_ids().any(|v| v == id) {
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        tracing::info!(
            node = node_id,
            number = id,
            "removing a node from the cluster"
        );
        match tokio::time::timeout(
            self.admin_wait(),
            self.raft.change_membership(change, false),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(AdminError::Failed(format!(
                "the membership change failed: {e}"
            ))),
            Err(_) => Err(AdminError::Timeout(
                "the membership change was not committed in time (is a majority reachable?)".into(),
            )),
        }
    }
}

/// A `wolfctl migrate`: this node's databases replaced by a fresh snapshot of another
/// node's, fetched from its API (`GET /snapshot`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Migration {
    /// `idle`, `waiting` (the donor builds its snapshot), `downloading`, `loading`,
    /// `done` or `failed`.
    pub phase: &'static str,
    pub from: Option<String>,
    pub bytes: u64,
    pub total: Option<u64>,
    /// The snapshot's position, once known.
    pub index: Option<u64>,
    pub error: Option<String>,
}

impl Cluster {
    /// The last migration's state, as `GET /cluster/migrate` shows it.
    pub fn migration_status(&self) -> Migration {
        self.migration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A snapshot at or past `min_index` for another node's migration: the current one
    /// if it is recent enough, else a new one (once this node has applied that far).
    pub async fn snapshot_at_least(
        &self,
        min_index: u64,
    ) -> Result<(crate::cluster::snapshot::Meta, std::path::PathBuf), AdminError> {
        let current = |s: &crate::cluster::snapshot::Snapshots| {
            s.current()
                .ok()
                .flatten()
                .filter(|(m, _)| m.last_log_id.is_some_and(|l| l.index >= min_index))
        };
        if let Some(found) = current(&self.snapshots) {
            return Ok(found);
        }
        if self.read_write.load(Ordering::SeqCst) {
            return Err(AdminError::Refused(
                "this node leads, and a leader builds no snapshot (the dump would hold every \
                 COMMIT): migrate from a follower"
                    .into(),
            ));
        }
        if !self.wait_applied(min_index, Duration::from_secs(30)).await {
            return Err(AdminError::Refused(format!(
                "this node has not applied entry {min_index} yet: pick a caught-up donor"
            )));
        }
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| AdminError::Failed(format!("cannot start a snapshot: {e}")))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(found) = current(&self.snapshots) {
                return Ok(found);
            }
            let wait = tokio::time::timeout(Duration::from_millis(200), metrics.changed());
            if tokio::time::Instant::now() > deadline {
                return Err(AdminError::Timeout("the snapshot took over an hour".into()));
            }
            wait.await.ok();
        }
    }

    /// Replace this node's databases with a snapshot fetched from the API at `from`
    /// (a donor's `HOST:PORT`), reporting progress in [`Cluster::migration`]. A diverged
    /// node applies again afterwards.
    pub async fn migrate_from(&self, from: &str, token: Option<&str>) -> Result<u64, AdminError> {
        let result = self.migrate_inner(from, token).await;
        let mut m = self.migration.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => m.phase = "done",
            Err(e) => {
                m.phase = "failed";
                m.error = Some(e.to_string());
            }
        }
        result
    }

    async fn migrate_inner(&self, from: &str, token: Option<&str>) -> Result<u64, AdminError> {
        if self.read_write.load(Ordering::SeqCst) {
            return Err(AdminError::Refused(
                "this node is the leader: demote it first (its databases cannot be replaced \
                 while it takes writes)"
                    .into(),
            ));
        }
        if self.installing() {
            return Err(AdminError::Refused(
                "a snapshot is being installed here already".into(),
            ));
        }
        let set = |f: &dyn Fn(&mut Migration)| {
            f(&mut self.migration.lock().unwrap_or_else(|e| e.into_inner()));
        };
        let min_index = self
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map_or(0, |l| l.index);
        set(&|m| {
            *m = Migration {
                phase: "waiting",
                from: Some(from.to_string()),
                ..Migration::default()
            }
        });
        let part = self.snapshots.dir.join("migrate.part");
        let meta =
            super::super::snapshot::download(from, token, min_index, &part, |bytes, total| {
                set(&|m| {
                    m.phase = "downloading";
                    m.bytes = bytes;
                    m.total = total;
                })
            })
            .await
            .map_err(|e| AdminError::Failed(format!("fetching the snapshot from {from}: {e}")))?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        set(&|m| {
            m.phase = "loading";
            m.index = Some(index);
        });
        self.installing.store(true, Ordering::SeqCst);
        let result = async {
            let mut applier = self.applier.lock().await;
            // openraft has handed the applier everything up to its last applied entry:
            // a snapshot behind that would leave entries nobody replays again.
            let handed = self
                .raft
                .metrics()
                .borrow_watched()
                .last_applied
                .map_or(0, |l| l.index);
            if index < handed {
                return Err(AdminError::Refused(format!(
                    "the snapshot is at {index}, behind entry {handed} this node has already been given"
                )));
            }
            tracing::info!(from, index, "migrating: replacing the local databases with a snapshot");
            crate::cluster::snapshot::install(
                &self.snapshots,
                &mut applier,
                &self.requests,
                &meta,
                &part,
            )
            .await
            .map_err(|e| AdminError::Failed(e.to_string()))?;
            applier.resume();
            self.may_lead.store(true, Ordering::SeqCst);
            Ok(index)
        }
        .await;
        self.installing.store(false, Ordering::SeqCst);
        std::fs::remove_file(&part).ok();
        result
    }
}
