//! The cluster as a standalone proxy sees it: no log, no MariaDB, only what the members
//! say about themselves.
//!
//! ```text
//!  wolfscale proxy ── one peer connection per member (cluster secret) ──▶ View, every
//!     │               POLL; members learned from the answers             POLL
//!     ├─ leader: the one that says it leads, in the highest term heard
//!     ├─ read targets: members that answered lately and say they are healthy
//!     └─ changed(): woken by any change, so held statements retry at once
//! ```
//!
//! [`RemoteCluster`] implements the proxy's [`Replicator`] as a node that never leads:
//! every session routes, writes and transactions go over the link to the leader's proxy,
//! and each session reads from one member (balanced round-robin, the leader only when no
//! follower is healthy) whose freshness it checks there before every read that needs it
//! (see `proxy::router`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::network::{self, NodeView};
use super::transport::{self, PeerIdentity};
use super::{Member, Proposal, ProposeError};
use crate::apply::{LogEntry, PendingCommits, TxnId};
use crate::proxy::replicate::{BoxFuture, Replicator};

/// How often each member is asked for its view.
pub const POLL: Duration = Duration::from_millis(100);
/// A member whose last answer is older than this is not read from.
pub const STALE_AFTER: Duration = Duration::from_millis(1500);

/// What one cluster address last answered.
#[derive(Debug, Clone)]
struct Heard {
    view: NodeView,
    at: Instant,
}

#[derive(Default)]
struct Known {
    /// By cluster address.
    heard: BTreeMap<String, Heard>,
    /// Addresses polled (seeds and every member named by an answer).
    polled: std::collections::BTreeSet<String>,
    /// What sessions ask about, rebuilt with every answer.
    summary: Arc<Summary>,
}

/// One member as last heard: number, record, healthy, applied index, when.
type HeardMember = (u64, Member, bool, u64, Instant);

/// What the proxy's sessions ask about (several times per statement), rebuilt from the
/// answers whenever one comes or a member is lost, so that a statement reads it without
/// copying views.
#[derive(Default)]
struct Summary {
    leader: Option<(u64, Member)>,
    /// The committed index the leader reported.
    leader_committed: u64,
    /// The members that answered within [`STALE_AFTER`] of the rebuild.
    heard: Vec<HeardMember>,
    /// Every member record an answer names.
    records: Vec<(u64, Member)>,
}

impl Summary {
    fn of(heard: &BTreeMap<String, Heard>) -> Summary {
        let now = Instant::now();
        let recent: Vec<&Heard> = heard
            .values()
            .filter(|h| now.duration_since(h.at) < STALE_AFTER)
            .collect();
        let views: Vec<NodeView> = recent.iter().map(|h| h.view.clone()).collect();
        let leader = RemoteCluster::leader_of(&views);
        let leader_committed = leader
            .as_ref()
            .and_then(|(n, _)| views.iter().find(|v| u64::from(v.number) == *n))
            .map_or(0, |v| v.committed);
        let mut records: Vec<(u64, Member)> = Vec::new();
        for v in &views {
            for (n, m) in &v.members {
                if !records.iter().any(|(k, _)| k == n) {
                    records.push((*n, m.clone()));
                }
            }
        }
        let heard = recent
            .iter()
            .filter_map(|h| {
                let n = u64::from(h.view.number);
                let (_, m) = records.iter().find(|(k, _)| *k == n)?;
                Some((n, m.clone(), h.view.healthy, h.view.applied, h.at))
            })
            .collect();
        Summary {
            leader,
            leader_committed,
            heard,
            records,
        }
    }

    /// The members heard from within [`STALE_AFTER`] of now.
    fn fresh(&self) -> impl Iterator<Item = &HeardMember> {
        let now = Instant::now();
        self.heard
            .iter()
            .filter(move |h| now.duration_since(h.4) < STALE_AFTER)
    }
}

/// The cluster seen from a standalone proxy.
pub struct RemoteCluster {
    me: Member,
    secret: Vec<u8>,
    known: Arc<Mutex<Known>>,
    changes: watch::Receiver<u64>,
    next_target: AtomicUsize,
    pending: PendingCommits,
}

/// What the poller tasks share.
struct Poller {
    identity: PeerIdentity,
    secret: Arc<Vec<u8>>,
    known: Arc<Mutex<Known>>,
    changes: watch::Sender<u64>,
    shutdown: watch::Receiver<bool>,
}

impl RemoteCluster {
    /// Start polling `seeds` (cluster addresses: `[cluster] peers`) as `identity`.
    /// The pollers stop when `shutdown` is raised.
    pub fn start(
        identity: PeerIdentity,
        secret: Vec<u8>,
        seeds: &[String],
        shutdown: watch::Receiver<bool>,
    ) -> Arc<RemoteCluster> {
        let known = Arc::new(Mutex::new(Known::default()));
        let (tx, rx) = watch::channel(0u64);
        let poller = Arc::new(Poller {
            identity: identity.clone(),
            secret: Arc::new(secret.clone()),
            known: known.clone(),
            changes: tx,
            shutdown,
        });
        for seed in seeds {
            poller.clone().watch(seed.clone());
        }
        Arc::new(RemoteCluster {
            me: Member {
                id: identity.node_id.clone(),
                cluster_addr: String::new(),
                proxy_addr: identity.proxy_addr.clone(),
                api_addr: String::new(),
                incarnation: identity.incarnation,
            },
            secret,
            known,
            changes: rx,
            next_target: AtomicUsize::new(0),
            pending: PendingCommits::default(),
        })
    }

    fn summary(&self) -> Arc<Summary> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary
            .clone()
    }

    /// The member record of number `n`, from any of `views`.
    fn record(views: &[NodeView], n: u64) -> Option<Member> {
        views
            .iter()
            .find_map(|v| v.members.iter().find(|(id, _)| *id == n))
            .map(|(_, m)| m.clone())
    }

    /// The leader's number and record: in the highest term heard, the member that says
    /// it leads, or else the leader another member of that term names. A leader of an
    /// older term is not taken for the current one.
    fn leader_of(views: &[NodeView]) -> Option<(u64, Member)> {
        let top = views.iter().map(|v| v.term).max()?;
        let current = || views.iter().filter(|v| v.term == top);
        let n = current()
            .find(|v| v.leading)
            .map(|v| u64::from(v.number))
            .or_else(|| current().find_map(|v| v.leader))?;
        Some((n, Self::record(views, n)?))
    }

    /// Members a new session may read from: healthy and heard from lately; followers
    /// first (the leader carries the writes, and a session reading there would be cut
    /// when it fails), the leader only when no follower qualifies.
    pub fn candidates(&self) -> Vec<Member> {
        let s = self.summary();
        let leader = s.leader.as_ref().map(|(n, _)| *n);
        let healthy: Vec<&HeardMember> = s.fresh().filter(|h| h.2).collect();
        let followers: Vec<Member> = healthy
            .iter()
            .filter(|h| Some(h.0) != leader)
            .map(|h| h.1.clone())
            .collect();
        if !followers.is_empty() {
            return followers;
        }
        healthy.iter().map(|h| h.1.clone()).collect()
    }

    /// Wait until a healthy follower is known too, up to `timeout` (at start, so that
    /// the first sessions are spread over the followers).
    pub async fn wait_follower(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut rx = self.changes.clone();
        loop {
            let leader = Replicator::leader(self).map(|m| m.id);
            if self
                .candidates()
                .iter()
                .any(|m| Some(&m.id) != leader.as_ref())
            {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Wait until a leader is known, up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rx = self.changes.clone();
        loop {
            if Replicator::leader(self).is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}

impl Poller {
    /// Poll `addr` in a task of its own, unless it is polled already.
    fn watch(self: Arc<Self>, addr: String) {
        {
            let mut k = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if !k.polled.insert(addr.clone()) {
                return;
            }
        }
        tokio::spawn(async move { self.poll(addr).await });
    }

    async fn poll(self: Arc<Self>, addr: String) {
        let mut shutdown = self.shutdown.clone();
        let mut conn = None;
        let mut warned = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let answer = async {
                if conn.is_none() {
                    let (c, _) = transport::connect(
                        &addr,
                        None,
                        &self.secret,
                        &self.identity,
                        network::CONNECT_TIMEOUT,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    conn = Some(c);
                }
                let c = conn.as_mut().expect("just opened");
                network::ask_view(c, network::CONNECT_TIMEOUT).await
            };
            match answer.await {
                Ok(view) => {
                    warned = false;
                    self.heard(&addr, view);
                }
                Err(e) => {
                    conn = None;
                    if !warned {
                        tracing::warn!(member = %addr, error = %e, "cannot ask a member for the cluster's state");
                        warned = true;
                    }
                    self.forget(&addr);
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    fn heard(self: &Arc<Self>, addr: &str, view: NodeView) {
        let learned: Vec<String> = view
            .members
            .iter()
            .map(|(_, m)| m.cluster_addr.clone())
            .filter(|a| !a.is_empty())
            .collect();
        let changed = {
            let mut k = self.known.lock().unwrap_or_else(|e| e.into_inner());
            let before = k.heard.get(addr).map(|h| h.view.clone());
            k.heard.insert(
                addr.to_string(),
                Heard {
                    view: view.clone(),
                    at: Instant::now(),
                },
            );
            k.summary = Arc::new(Summary::of(&k.heard));
            before.as_ref() != Some(&view)
        };
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        for a in learned {
            self.clone().watch(a);
        }
    }

    fn forget(&self, addr: &str) {
        let removed = {
            let mut k = self.known.lock().unwrap_or_else(|e| e.into_inner());
            let removed = k.heard.remove(addr).is_some();
            if removed {
                k.summary = Arc::new(Summary::of(&k.heard));
            }
            removed
        };
        if removed {
            self.changes.send_modify(|n| *n += 1);
        }
    }
}

impl Replicator for RemoteCluster {
    fn writable_term(&self) -> Option<u64> {
        None
    }

    fn leader(&self) -> Option<Member> {
        self.summary().leader.as_ref().map(|(_, m)| m.clone())
    }

    fn me(&self) -> &Member {
        &self.me
    }

    fn incarnation(&self) -> u64 {
        self.me.incarnation
    }

    fn seq_base(&self) -> u64 {
        0
    }

    fn pending(&self) -> &PendingCommits {
        &self.pending
    }

    fn propose(
        &self,
        _entry: LogEntry,
        _term: u64,
    ) -> BoxFuture<'_, Result<Proposal, ProposeError>> {
        let leader = Replicator::leader(self);
        Box::pin(async move { Err(ProposeError::NotLeader { leader }) })
    }

    fn wait_writable(&self, timeout: Duration) -> BoxFuture<'_, Option<u64>> {
        // A standalone proxy never takes writes itself.
        Box::pin(async move {
            tokio::time::sleep(timeout).await;
            None
        })
    }

    fn changed(&self, timeout: Duration) -> BoxFuture<'_, ()> {
        let mut rx = self.changes.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, rx.changed()).await.ok();
        })
    }

    fn ddl_intent(&self, _id: TxnId, _sql: &str) -> Result<(), String> {
        Err("a standalone proxy runs no DDL itself".into())
    }

    fn ddl_done(&self, _id: TxnId) {}

    fn secret(&self) -> &[u8] {
        &self.secret
    }

    fn applied_index(&self) -> u64 {
        // There is no local MariaDB: the router asks the session's read member.
        0
    }

    fn known_committed(&self) -> u64 {
        // The leader's committed index as last heard: never above the real one, which
        // is what a request id's `since` needs.
        self.summary().leader_committed
    }

    fn wait_applied(&self, _index: u64, _timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async { false })
    }

    fn read_index(&self) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async { Err("a standalone proxy is not a member".to_string()) })
    }

    fn is_member_ip(&self, _ip: std::net::IpAddr) -> bool {
        // Members never log into a standalone proxy: every client is checked.
        false
    }

    fn member(&self, number: u16) -> Option<Member> {
        let s = self.summary();
        let n = u64::from(number);
        s.records
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, m)| m.clone())
    }

    fn last_log_index(&self) -> u64 {
        0
    }

    fn local_healthy(&self) -> bool {
        true
    }

    fn request_outcome(&self, _id: u128, _since: u64) -> super::requests::Lookup {
        super::requests::Lookup::Unknown
    }

    fn standalone(&self) -> bool {
        true
    }

    fn member_state(&self, id: &str) -> Option<(bool, u64)> {
        self.summary()
            .fresh()
            .find(|h| h.1.id == id)
            .map(|h| (h.2, h.3))
    }

    fn leads(&self, id: &str) -> bool {
        self.summary()
            .leader
            .as_ref()
            .is_some_and(|(_, m)| m.id == id)
    }

    fn read_targets(&self) -> Vec<Member> {
        let mut targets = self.candidates();
        if !targets.is_empty() {
            let i = self.next_target.fetch_add(1, Ordering::Relaxed) % targets.len();
            targets.rotate_left(i);
        }
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u64) -> (u64, Member) {
        (
            n,
            Member {
                id: format!("node-{n}"),
                cluster_addr: format!("127.0.0.1:{}", 7650 + n),
                proxy_addr: format!("127.0.0.1:{}", 8000 + n),
                api_addr: String::new(),
                incarnation: n,
            },
        )
    }

    fn view(number: u16, term: u64, leader: Option<u64>, healthy: bool) -> NodeView {
        NodeView {
            number,
            term,
            leader,
            leading: leader == Some(u64::from(number)),
            committed: 10,
            applied: 10,
            healthy,
            members: (1..=3).map(member).collect(),
        }
    }

    fn cluster_hearing(views: &[(NodeView, Duration)]) -> Arc<RemoteCluster> {
        let identity = PeerIdentity {
            node_id: "proxy-1".into(),
            number: 900,
            incarnation: 1,
            priority: 0,
            cluster_addr: String::new(),
            proxy_addr: "127.0.0.1:8007".into(),
            api_addr: String::new(),
        };
        let (_stop, rx) = watch::channel(false);
        let c = RemoteCluster::start(identity, b"s".to_vec(), &[], rx);
        {
            let mut k = c.known.lock().unwrap();
            for (v, age) in views {
                k.heard.insert(
                    format!("node-{}", v.number),
                    Heard {
                        view: v.clone(),
                        at: Instant::now() - *age,
                    },
                );
            }
            k.summary = Arc::new(Summary::of(&k.heard));
        }
        c
    }

    fn ids(members: Vec<Member>) -> Vec<String> {
        let mut v: Vec<String> = members.into_iter().map(|m| m.id).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn sessions_read_from_healthy_followers_heard_lately() {
        let now = Duration::ZERO;
        // Node 2 leads; node 3 is unhealthy; node 1 is fine.
        let c = cluster_hearing(&[
            (view(1, 4, Some(2), true), now),
            (view(2, 4, Some(2), true), now),
            (view(3, 4, Some(2), false), now),
        ]);
        assert_eq!(ids(c.candidates()), ["node-1"]);
        assert_eq!(c.member_state("node-3"), Some((false, 10)));
        assert_eq!(Replicator::leader(c.as_ref()).unwrap().id, "node-2");
        assert_eq!(c.known_committed(), 10);
        // No healthy follower: the leader serves reads.
        let c = cluster_hearing(&[
            (view(2, 4, Some(2), true), now),
            (view(3, 4, Some(2), false), now),
        ]);
        assert_eq!(ids(c.candidates()), ["node-2"]);
        // A member last heard from too long ago is neither read from nor its word
        // taken for the leader.
        let old = STALE_AFTER + Duration::from_millis(100);
        let c = cluster_hearing(&[
            (view(1, 4, Some(2), true), old),
            (view(2, 4, Some(2), true), now),
            (view(3, 4, Some(2), true), now),
        ]);
        assert_eq!(ids(c.candidates()), ["node-3"]);
        assert_eq!(c.member_state("node-1"), None);
        // The read targets rotate from one session to the next.
        let c = cluster_hearing(&[
            (view(1, 4, Some(2), true), now),
            (view(2, 4, Some(2), true), now),
            (view(3, 4, Some(2), true), now),
        ]);
        let first: Vec<String> = (0..4).map(|_| c.read_targets()[0].id.clone()).collect();
        assert_eq!(first, ["node-1", "node-3", "node-1", "node-3"]);
    }

    #[test]
    fn the_leader_is_the_one_leading_in_the_highest_term() {
        // Node 1 still thinks it leads in term 3; nodes 2 and 3 moved on to term 4
        // under node 2.
        let views = [
            view(1, 3, Some(1), true),
            view(2, 4, Some(2), true),
            view(3, 4, Some(2), true),
        ];
        assert_eq!(RemoteCluster::leader_of(&views).unwrap().0, 2);
        // Mid-election: node 3 is in term 5 with no leader, node 2 leads term 4: a
        // leader of an older term is not taken for the current one.
        let views = [view(2, 4, Some(2), true), view(3, 5, None, true)];
        assert_eq!(RemoteCluster::leader_of(&views), None);
        // Node 3 knows node 2 leads term 5, node 2 did not answer.
        let views = [view(3, 5, Some(2), true)];
        assert_eq!(RemoteCluster::leader_of(&views).unwrap().0, 2);
        assert_eq!(RemoteCluster::leader_of(&[]), None);
    }
}
