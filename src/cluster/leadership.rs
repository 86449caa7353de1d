//! Who leads: this node's election timer, the health of its MariaDB, handing
//! leadership over when it should not lead, and moving leadership to the preferred
//! voter.
//!
//! * [`campaign`]: openraft's own election timer is off. A voter that has heard no
//!   leader for a timeout drawn from `[election_timeout_min, election_timeout_max]`
//!   stands, pre-vote first, if it is fit to lead and automatic elections are on.
//! * [`watch_database`]: the local MariaDB is probed every heartbeat; the verdict
//!   changes after three probes in a row.
//! * [`stand_down_when_unhealthy`]: a leader whose MariaDB is unhealthy hands over.
//! * [`prefer_leader`]: the documented rule ("the lowest id leads") as a preference:
//!   once the first voter in the natural order of ids (`node-2` before `node-10`) has
//!   been caught up for a while, the leader transfers leadership to it, with open
//!   transactions drained and a minimum interval between transfers, so it cannot flap.
//! * [`Fitness`]: whether this node may lead now; a leadership transfer to a node that
//!   is not fit is refused (see `network::handle`).

use std::cmp::Ordering;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use tokio::sync::watch;

use super::network;
use super::state_machine::StateMachine;
use super::types::{NodeId, Raft};

/// The local MariaDB, as this node's health check judges it (see `watch_database`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DbHealth {
    Healthy,
    /// Probes fail or time out.
    Unreachable,
    /// `read_only` is on while this node leads and should be writing.
    ReadOnly,
}

/// Consecutive failed probes before the database counts as unhealthy, and good ones
/// before it counts as healthy again.
pub(super) const HEALTH_FAILS: u32 = 3;
pub(super) const HEALTH_OKS: u32 = 3;

/// Probe the local MariaDB every heartbeat on a connection kept for it (a full
/// `max_connections` does not look like death once it is open), reading the marker
/// table so that a stalled InnoDB fails the probe, and checking `read_only` against
/// the role. The verdict changes only after [`HEALTH_FAILS`] bad or [`HEALTH_OKS`]
/// good probes in a row.
pub(super) async fn watch_database(
    db: mysql_async::Opts,
    heartbeat: Duration,
    read_write: Arc<std::sync::atomic::AtomicBool>,
    health: watch::Sender<DbHealth>,
    mut shutdown: watch::Receiver<bool>,
) {
    use mysql_async::prelude::Queryable;
    let limit = (heartbeat * 2).max(Duration::from_secs(1));
    let mut conn: Option<mysql_async::Conn> = None;
    let (mut bad, mut good) = (0u32, 0u32);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(heartbeat) => {}
            _ = shutdown.changed() => return,
        }
        let probe = async {
            if conn.is_none() {
                conn = Some(mysql_async::Conn::new(db.clone()).await?);
            }
            let c = conn.as_mut().expect("connected above");
            c.query_first::<(i64, i64), _>(
                "SELECT @@global.read_only, COUNT(*) FROM wolfscale.applied",
            )
            .await
        };
        let verdict = match tokio::time::timeout(limit, probe).await {
            Ok(Ok(Some((read_only, _)))) => {
                let leading = read_write.load(std::sync::atomic::Ordering::SeqCst);
                if leading && read_only != 0 {
                    Err(DbHealth::ReadOnly)
                } else {
                    Ok(())
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                conn = None;
                Err(DbHealth::Unreachable)
            }
        };
        let current = *health.borrow();
        match verdict {
            Ok(()) => {
                bad = 0;
                good += 1;
                if current != DbHealth::Healthy && good >= HEALTH_OKS {
                    tracing::info!("the local MariaDB is healthy again");
                    health.send_replace(DbHealth::Healthy);
                }
            }
            Err(kind) => {
                good = 0;
                bad += 1;
                if current == DbHealth::Healthy && bad >= HEALTH_FAILS {
                    tracing::error!(health = ?kind, probes = bad, "the local MariaDB is unhealthy: this node takes no writes, serves no local reads and does not stand for election");
                    health.send_replace(kind);
                }
            }
        }
    }
}

/// A leader whose MariaDB is unhealthy hands leadership to the most caught-up other
/// voter, retrying every second while it still leads.
pub(super) async fn stand_down_when_unhealthy(
    raft: Raft<StateMachine>,
    me: NodeId,
    mut health: watch::Receiver<DbHealth>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    let mut last_try: Option<tokio::time::Instant> = None;
    loop {
        let unhealthy = *health.borrow_and_update() != DbHealth::Healthy;
        let m = metrics.borrow_watched().clone();
        let leading = m.current_leader == Some(me) && m.state == ServerState::Leader;
        let due = last_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if unhealthy && leading && due {
            last_try = Some(tokio::time::Instant::now());
            let matched = |id: &NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map_or(0, |l| l.index)
            };
            let to = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|id| *id != me)
                .max_by_key(matched);
            if let Some(to) = to {
                tracing::warn!(
                    to,
                    "the local MariaDB is unhealthy: transferring leadership"
                );
                if let Err(e) = raft.trigger().transfer_leader(to).await {
                    tracing::warn!(error = %e, "cannot transfer leadership");
                }
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            changed = health.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)), if unhealthy && leading => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// This node's election timer. A voter that has heard from no leader (an append it
/// accepted, a vote it granted) for a timeout drawn from `[min, max]` ms stands for
/// election, with a pre-vote first (a node cut off from the others cannot win one, so
/// it never raises the term and disturbs the leader when it returns). The timeout is
/// drawn again after each attempt. The draw starts a little above `min`, the voters'
/// lease (see the openraft config in `Cluster::start`), so that the others' leases
/// have run out too.
pub(super) async fn campaign(
    raft: Raft<StateMachine>,
    me: NodeId,
    contact: Arc<network::Contact>,
    (min, max): (u64, u64),
    fitness: Arc<Fitness>,
    mut shutdown: watch::Receiver<bool>,
) {
    use rand::Rng;
    let margin = (max.saturating_sub(min) / 20).clamp(1, 50);
    let draw = || {
        let low = min + margin;
        Duration::from_millis(rand::rng().random_range(low..=max.max(low)))
    };
    let tick = Duration::from_millis((min / 20).clamp(5, 50));
    let mut timeout = draw();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let (leading, voter) = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == me);
            (m.state == ServerState::Leader, voter)
        };
        // A node that is not fit to lead (its MariaDB unhealthy, its replay diverged,
        // still syncing) does not stand, nor does any with automatic elections off.
        if leading || !voter || !fitness.auto || fitness.refusal().is_some() {
            contact.touch();
            continue;
        }
        let silent = contact.elapsed();
        if silent < timeout {
            continue;
        }
        tracing::info!(
            silent_ms = silent.as_millis() as u64,
            "no leader heard from: standing for election"
        );
        if raft.trigger().elect(true).await.is_err() {
            return;
        }
        contact.touch();
        timeout = draw();
    }
}

/// Whether this node may lead now.
pub struct Fitness {
    /// Cleared for good when replay diverges.
    pub may_lead: Arc<AtomicBool>,
    /// `[cluster] disable_auto_election` is off: this node stands for election, and as
    /// leader moves leadership to the preferred voter, by itself.
    pub auto: bool,
    pub health: watch::Receiver<DbHealth>,
    /// Set while the state machine cannot apply committed entries.
    pub stalled: Arc<AtomicBool>,
    /// Set by an operator's `demote`: leadership transfers to this node are refused
    /// (it still stands for election when no leader is heard).
    pub demoted: AtomicBool,
    /// Set once an operator's `promote` made this node the leader: while it leads, it
    /// does not hand leadership to the preferred voter (the operator chose).
    pub promoted: AtomicBool,
    /// `[node] priority` of each node, as its last handshake with this one presented
    /// it (this node's own included).
    pub priorities: std::sync::Mutex<std::collections::HashMap<NodeId, u8>>,
    /// Set once Raft is up (the network needs this before Raft exists).
    pub raft: OnceLock<Raft<StateMachine>>,
}

/// A node further behind than this in applying what is committed refuses a
/// leadership transfer (a transfer is a choice, not a necessity: it can wait).
pub const TRANSFER_LAG: u64 = 64;

impl Fitness {
    /// A handshake showed `number`'s priority.
    pub fn note_priority(&self, number: u16, priority: u8) {
        self.priorities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(u64::from(number), priority);
    }

    fn priority(&self, id: NodeId) -> u8 {
        self.priorities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(crate::config::DEFAULT_PRIORITY)
    }

    /// Why this node must not take leadership by a transfer now, if it must not: as
    /// [`Self::refusal`], and also while its applier is more than [`TRANSFER_LAG`]
    /// entries behind the commit index.
    pub fn transfer_refusal(&self) -> Option<&'static str> {
        if let Some(why) = self.refusal() {
            return Some(why);
        }
        if self.demoted.load(std::sync::atomic::Ordering::SeqCst) {
            return Some("the operator demoted it");
        }
        (self.replay_lag()? > TRANSFER_LAG).then_some("its replay is behind")
    }

    /// Committed entries not applied here yet (`None` before Raft is up).
    fn replay_lag(&self) -> Option<u64> {
        let raft = self.raft.get()?;
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        let committed = m
            .cluster_committed
            .as_ref()
            .or(m.local_committed.as_ref())
            .map_or(0, |l| l.index);
        let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
        Some(committed.saturating_sub(applied))
    }

    /// Why this node must not lead now, if it must not.
    pub fn refusal(&self) -> Option<&'static str> {
        if !self.may_lead.load(std::sync::atomic::Ordering::SeqCst) {
            return Some("its replay diverged");
        }
        if *self.health.borrow() != DbHealth::Healthy {
            return Some("its MariaDB fails the health check");
        }
        if self.stalled.load(std::sync::atomic::Ordering::SeqCst) {
            return Some("it cannot apply committed entries to its MariaDB");
        }
        if self.replay_lag()? > super::status::LAG_ENTRIES {
            return Some("it is still syncing");
        }
        None
    }
}

/// The voter leadership should rest with: the highest priority, the first in the
/// natural order of ids among equals; never one of priority 0.
fn preferred_voter(voters: impl Iterator<Item = (NodeId, String, u8)>) -> Option<(NodeId, String)> {
    voters
        .filter(|(_, _, p)| *p > 0)
        .min_by(|a, b| b.2.cmp(&a.2).then_with(|| natural_cmp(&a.1, &b.1)))
        .map(|(id, name, _)| (id, name))
}

/// Node ids in their natural order: runs of digits compare as numbers, so `node-2`
/// comes before `node-10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(rb.iter()) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (xt, yt) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ra.len().cmp(&rb.len()).then_with(|| a.cmp(b))
}

/// On the leader: move leadership to the preferred voter (the first in the natural
/// order of ids) once it has been caught up (nothing left to replicate to it, heard
/// from within three heartbeats) for `settle`, with no write transaction open here,
/// and at least `interval` after this node became leader or last transferred; not while
/// it leads because an operator promoted it. A transfer to a node that is not fit to
/// lead (or that an operator demoted) is refused by it.
pub(super) async fn prefer_leader(
    raft: Raft<StateMachine>,
    me: NodeId,
    pending: Arc<crate::apply::PendingCommits>,
    fitness: Arc<Fitness>,
    (heartbeat, settle, interval): (Duration, Duration, Duration),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut caught_up_since: Option<tokio::time::Instant> = None;
    let mut leading_since: Option<tokio::time::Instant> = None;
    let mut last_transfer: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(heartbeat) => {}
            _ = shutdown.changed() => return,
        }
        let m = raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(me) {
            leading_since = None;
            caught_up_since = None;
            fitness
                .promoted
                .store(false, std::sync::atomic::Ordering::SeqCst);
            continue;
        }
        if fitness.promoted.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
        let membership = m.membership_config.membership();
        let preferred = preferred_voter(
            membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|n| (id, n.id.clone())))
                .map(|(id, name)| (id, name, fitness.priority(id))),
        );
        let Some((to, name)) = preferred else {
            continue;
        };
        if to == me {
            caught_up_since = None;
            continue;
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&to).cloned().flatten())
            .map_or(0, |l| l.index);
        let heard = m
            .heartbeat
            .as_ref()
            .and_then(|h| h.get(&to).cloned().flatten())
            .map(|t| openraft::Instant::elapsed(&*t));
        let caught_up = matched >= last && heard.is_some_and(|h| h <= heartbeat * 3);
        if !caught_up {
            caught_up_since = None;
            continue;
        }
        let ready_since = *caught_up_since.get_or_insert_with(tokio::time::Instant::now);
        let quiet = last_transfer.map_or(since, |t| t.max(since));
        if ready_since.elapsed() < settle || quiet.elapsed() < interval || pending.open_len() > 0 {
            continue;
        }
        tracing::info!(to = %name, "the preferred leader is caught up: transferring leadership to it");
        last_transfer = Some(tokio::time::Instant::now());
        caught_up_since = None;
        if let Err(e) = raft.trigger().transfer_leader(to).await {
            tracing::warn!(error = %e, "cannot transfer leadership");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_voter_has_the_highest_priority_then_the_first_id() {
        let pick = |v: &[(u64, &str, u8)]| {
            preferred_voter(v.iter().map(|(i, n, p)| (*i, n.to_string(), *p))).map(|(i, _)| i)
        };
        assert_eq!(
            pick(&[(1, "node-1", 50), (2, "node-2", 50), (10, "node-10", 50)]),
            Some(1)
        );
        assert_eq!(
            pick(&[(1, "node-1", 50), (2, "node-2", 80), (10, "node-10", 80)]),
            Some(2)
        );
        assert_eq!(pick(&[(10, "node-10", 50), (2, "node-2", 50)]), Some(2));
        assert_eq!(pick(&[(1, "node-1", 0), (2, "node-2", 1)]), Some(2));
        assert_eq!(pick(&[(1, "node-1", 0), (2, "node-2", 0)]), None);
    }

    #[test]
    fn ids_sort_naturally() {
        let mut ids = vec![
            "node-10",
            "node-2",
            "node-1",
            "db-dc1-001",
            "node-02b",
            "wolftest1",
        ];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            ids,
            [
                "db-dc1-001",
                "node-1",
                "node-2",
                "node-02b",
                "node-10",
                "wolftest1"
            ]
        );
        assert_eq!(natural_cmp("node-2", "node-10"), Ordering::Less);
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
        assert_eq!(natural_cmp("", "a"), Ordering::Less);
    }
}
