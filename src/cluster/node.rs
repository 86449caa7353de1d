//! One node's part of the cluster: the WAL, the applier, openraft, the peer listener,
//! start-up (bootstrap, resume) and the handle the proxy writes through.
//!
//! # Start-up
//! * `--bootstrap` on a node whose log is empty: contact every peer in `[cluster]
//!   peers` (they must be running; the handshake tells each one's number and
//!   addresses), then initialize the cluster with this node and them as voters.
//! * Without it, a node with an empty log waits to be contacted by a leader that has it
//!   in its membership.
//! * A node with a log resumes from it (and from `wolfscale.applied`) whatever the flag
//!   says; bootstrapping twice is not possible.
//!
//! # Writing
//! [`Cluster::propose`] appends an entry on the leader and returns its commit and
//! completion notices. It only proposes for a given term (`with_leader`), so a node
//! that lost leadership since the transaction ran refuses to append it (§4 hazard "a
//! node that is not leader for the request's term refuses it").

mod admin;

pub use admin::AdminError;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::network::RaftNetworkFactory;
use openraft::raft::ClientWriteResult;
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Mutex};

use super::leadership::{self, DbHealth};
use super::log_store::LogStore;
use super::network::{self, Network, PeerAuth};
use super::state_machine::StateMachine;
use super::transport::{self, PeerIdentity};
use super::types::{LogId, Member, NodeId, Raft, TypeConfig};
use crate::apply::{Applier, ApplyError, ApplyStatus, LogEntry, PendingCommits, TxnId};
use crate::state::StateDb;
use crate::wal::{Wal, WalError, WalOptions};

/// How long `--bootstrap` keeps trying to reach every peer.
const BOOTSTRAP_PATIENCE: Duration = Duration::from_secs(120);

/// What a node needs to join the cluster.
#[derive(Clone)]
pub struct ClusterSettings {
    pub node_id: String,
    pub number: u16,
    /// Where the peer listener binds (port 0: any free port).
    pub bind: SocketAddr,
    /// How peers reach this node; a port of 0 is replaced by the bound port.
    pub advertise: String,
    pub proxy_addr: String,
    pub api_addr: String,
    pub wal: WalOptions,
    pub peers: Vec<String>,
    pub bootstrap: bool,
    pub secret: Vec<u8>,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub disable_auto_election: bool,
    /// The service account's connection to the local MariaDB (for the applier).
    pub database: mysql_async::Opts,
    /// `[database] follower_innodb_flush`: the local MariaDB's
    /// `innodb_flush_log_at_trx_commit` while a follower (1 while the leader); `None`
    /// leaves it alone.
    pub follower_innodb_flush: Option<u8>,
    /// `[wal] snapshot_entries` (0: no snapshots).
    pub snapshot_entries: u64,
    /// `[node] priority`.
    pub priority: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("node state in {path}: {source}")]
    State {
        path: PathBuf,
        source: crate::state::StateError,
    },
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    #[error("applier: {0}")]
    Apply(#[from] ApplyError),
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error("bootstrap: {0}")]
    Bootstrap(String),
}

/// Why a proposal was not appended, or its fate is unknown.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader for the term (or at all); nothing was appended.
    #[error("not the leader{}", .leader.as_ref().map(|m| format!(" (the leader is {m})")).unwrap_or_default())]
    NotLeader { leader: Option<Member> },
    /// The entry was appended but then removed from the log by a new leader: it will
    /// never be applied.
    #[error("the entry was discarded by a change of leader")]
    Discarded,
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// Notices about a proposed entry.
pub struct Proposal {
    /// The entry's log id once a majority holds it.
    pub committed: oneshot::Receiver<LogId>,
    /// Once it is applied (or discarded).
    pub done: oneshot::Receiver<ClientWriteResult<TypeConfig>>,
}

/// A node's handle on the cluster.
pub struct Cluster {
    raft: Raft<StateMachine>,
    pub id: NodeId,
    pub member: Member,
    /// This node's producer id (see [`crate::apply::TxnId`]).
    pub incarnation: u64,
    /// The first transaction sequence number of this run: the run counter, kept in the
    /// state database, times 2^40, so that no xid is ever reused after a restart.
    pub seq_base: u64,
    pub pending: Arc<PendingCommits>,
    pub apply_status: Arc<std::sync::Mutex<ApplyStatus>>,
    applier: Arc<Mutex<Applier>>,
    /// Request ids of the entries applied in this run (see [`super::requests`]).
    pub requests: Arc<super::requests::Requests>,
    /// The node's own handle on its state database (DDL intents).
    state: std::sync::Mutex<StateDb>,
    /// The local MariaDB has been made writable for this term (see `guard_read_only`).
    read_write: Arc<std::sync::atomic::AtomicBool>,
    /// How long a leader may go without hearing from a majority and still take
    /// writes: `[cluster]` election_timeout_max.
    quorum_window_ms: u64,
    /// Cleared when replay diverges: this node must never lead (see
    /// `leadership::Fitness`).
    may_lead: Arc<std::sync::atomic::AtomicBool>,
    /// The local MariaDB's health, probed every heartbeat.
    pub db_health: watch::Receiver<DbHealth>,
    /// How this node proves itself to peers (kept for `join`).
    auth: PeerAuth,
    /// `[cluster] secret`: also proves a forwarded client's address to another node's
    /// proxy (see `proxy::router`).
    pub secret: Arc<Vec<u8>>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    /// Set while a snapshot is being installed.
    pub(super) installing: Arc<std::sync::atomic::AtomicBool>,
    /// Where snapshots live.
    pub(super) snapshots: super::snapshot::Snapshots,
    /// The last `wolfctl migrate` on this node, and how far it has got.
    pub migration: Arc<std::sync::Mutex<admin::Migration>>,
    /// This node's Snowflake ids.
    pub ids: crate::id::Generator,
}

impl Cluster {
    pub async fn start(s: ClusterSettings) -> Result<Cluster, ClusterError> {
        let incarnation = incarnation(&s.wal.state_dir)?;
        let seq_base = next_run(&s.wal.state_dir)? << 40;
        let state = StateDb::open(&s.wal.state_dir).map_err(|source| ClusterError::State {
            path: s.wal.state_dir.clone(),
            source,
        })?;
        let wal = Arc::new(Wal::open_async(s.wal.clone()).await?);
        let pending = Arc::new(PendingCommits::default());
        let mut applier = Applier::open(s.database.clone(), incarnation, pending.clone()).await?;
        // Transactions prepared in an earlier run whose entries may still commit: the
        // applier commits them when it meets their entries, and rolls back the rest
        // once the log reaches a term after every term this node could have led.
        let vote_term = wal
            .meta(crate::wal::MetaKey::Vote)
            .and_then(|b| postcard::from_bytes::<super::types::Vote>(&b).ok())
            .map_or(0, |v| v.leader_id.term);
        let log_term = wal.state().last.map_or(0, |(_, t)| t);
        applier.recover_prepared(vote_term.max(log_term)).await?;
        let intents = state
            .with_prefix(INTENT_PREFIX)
            .map_err(|source| ClusterError::State {
                path: s.wal.state_dir.clone(),
                source,
            })?;
        let (unlogged, logged) = unlogged_ddl(intents, &wal).await?;
        for key in logged {
            if let Err(e) = state.delete(&key) {
                tracing::warn!(error = %e, key, "cannot clear a DDL intent record");
            }
        }
        if let Some((index, reason)) = unlogged {
            applier.halt(index, reason);
        }
        let apply_status = applier.status();
        let requests = Arc::new(super::requests::Requests::new(
            applier.applied().index.map_or(0, |i| i + 1),
        ));
        let settings = Arc::new(applier.settings.clone());
        let applier = Arc::new(Mutex::new(applier));
        spawn_marker_ticker(Arc::downgrade(&applier));
        let listener = TcpListener::bind(s.bind)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: s.bind,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| ClusterError::Bind {
            addr: s.bind,
            source,
        })?;
        let advertise = fill_port(&s.advertise, bound.port());
        let member = Member {
            id: s.node_id.clone(),
            cluster_addr: advertise.clone(),
            proxy_addr: s.proxy_addr.clone(),
            api_addr: s.api_addr.clone(),
            incarnation,
        };
        let me = PeerIdentity {
            node_id: s.node_id.clone(),
            number: s.number,
            incarnation,
            priority: s.priority,
            cluster_addr: advertise,
            proxy_addr: s.proxy_addr.clone(),
            api_addr: s.api_addr.clone(),
        };
        let contact = Arc::new(network::Contact::default());
        let halted = matches!(
            &*apply_status.lock().unwrap_or_else(|e| e.into_inner()),
            ApplyStatus::Diverged { .. }
        );
        let (health_tx, db_health) = watch::channel(DbHealth::Healthy);
        let data_dir = s
            .wal
            .state_dir
            .parent()
            .map_or_else(|| s.wal.state_dir.clone(), std::path::Path::to_path_buf);
        let snapshots =
            super::snapshot::Snapshots::new(data_dir.join("snapshots"), s.database.clone())
                .map_err(|e| ClusterError::Raft(format!("snapshot directory: {e}")))?;
        let installing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let read_write = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fitness = Arc::new(leadership::Fitness {
            may_lead: Arc::new(std::sync::atomic::AtomicBool::new(!halted)),
            auto: !s.disable_auto_election,
            health: db_health.clone(),
            stalled: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            demoted: std::sync::atomic::AtomicBool::new(false),
            promoted: std::sync::atomic::AtomicBool::new(false),
            priorities: std::sync::Mutex::new(
                [(u64::from(s.number), s.priority)].into_iter().collect(),
            ),
            raft: std::sync::OnceLock::new(),
        });
        let auth = PeerAuth {
            me,
            secret: Arc::new(s.secret.clone()),
            settings,
            contact: contact.clone(),
            leader_heard: Arc::new(network::Contact::default()),
            fitness: fitness.clone(),
            source: Some(s.bind.ip()).filter(|ip| !ip.is_unspecified()),
            snapshots: snapshots.clone(),
            installing: installing.clone(),
        };
        // Elections are started by this node's own timer (`campaign`), not openraft's:
        // openraft's leader lease is its `election_timeout_max`, and a voter refuses
        // every vote until its lease has run out, so with openraft's timer a candidate
        // whose timeout fell early in [min, max] is refused and waits a second timeout
        // (5 s and more with the defaults). Here the lease is the lowest election
        // timeout, and `campaign` stands only once it has run out everywhere.
        let lease = s.election_timeout_min_ms;
        let config = Config {
            cluster_name: "wolfscale".into(),
            heartbeat_interval: s.heartbeat_ms,
            election_timeout_min: (lease * 3 / 4).max(s.heartbeat_ms + 1).min(lease - 1),
            election_timeout_max: lease,
            snapshot_policy: match s.snapshot_entries {
                0 => SnapshotPolicy::Never,
                n => SnapshotPolicy::LogsSinceLast(n),
            },
            // The purge floor: entries behind the snapshot stay in the log, so a node
            // that is briefly behind catches up from it instead of a snapshot.
            max_in_snapshot_log_to_keep: s.snapshot_entries.max(1000),
            enable_elect: false,
            // A node that led before it stopped comes back as a follower, and the
            // cluster elects a leader in a new term: only an entry of a later term
            // settles which of its prepared transactions' entries survived (see
            // `Applier::recover_prepared`), and a returning node syncs before it leads.
            enable_leader_restore: Some(false),
            // Appends are sent as soon as they are submitted, not once flushed here.
            max_payload_entries: 1024,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let id = u64::from(s.number);
        let (diverged, on_diverged) = watch::channel(halted);
        let sm = StateMachine {
            applier: applier.clone(),
            diverged: Arc::new(diverged),
            stalled: fitness.stalled.clone(),
            requests: requests.clone(),
            snapshots,
            installing: installing.clone(),
            leading: read_write.clone(),
        };
        let raft = Raft::new(
            id,
            Arc::new(config),
            Network { auth: auth.clone() },
            LogStore::new(wal),
            sm,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        fitness.raft.set(raft.clone()).ok();
        let (shutdown, rx) = watch::channel(false);
        let server = tokio::spawn(network::serve(listener, raft.clone(), auth.clone(), rx));
        let cluster = Cluster {
            raft,
            id,
            member,
            incarnation,
            seq_base,
            pending,
            apply_status,
            applier,
            requests,
            state: std::sync::Mutex::new(state),
            read_write,
            quorum_window_ms: s.election_timeout_max_ms,
            may_lead: fitness.may_lead.clone(),
            db_health,
            secret: auth.secret.clone(),
            auth: auth.clone(),
            shutdown,
            server,
            installing,
            snapshots: auth.snapshots.clone(),
            migration: Arc::default(),
            ids: crate::id::Generator::new(s.number),
        };
        if s.bootstrap {
            cluster.bootstrap(&auth, &s.peers).await?;
        }
        tokio::spawn(leadership::campaign(
            cluster.raft.clone(),
            cluster.id,
            contact,
            (s.election_timeout_min_ms, s.election_timeout_max_ms),
            fitness.clone(),
            cluster.shutdown.subscribe(),
        ));
        if fitness.auto {
            let max = Duration::from_millis(s.election_timeout_max_ms);
            tokio::spawn(leadership::prefer_leader(
                cluster.raft.clone(),
                cluster.id,
                cluster.pending.clone(),
                fitness.clone(),
                (Duration::from_millis(s.heartbeat_ms), max * 5, max * 10),
                cluster.shutdown.subscribe(),
            ));
        }
        tokio::spawn(leadership::watch_database(
            s.database.clone(),
            Duration::from_millis(s.heartbeat_ms),
            cluster.read_write.clone(),
            health_tx,
            cluster.shutdown.subscribe(),
        ));
        tokio::spawn(leadership::stand_down_when_unhealthy(
            cluster.raft.clone(),
            cluster.id,
            cluster.db_health.clone(),
            cluster.shutdown.subscribe(),
        ));
        tokio::spawn(compare_settings(cluster.raft.clone(), auth));
        tokio::spawn(stand_down_when_diverged(
            cluster.raft.clone(),
            cluster.id,
            cluster.may_lead.clone(),
            on_diverged,
            cluster.shutdown.subscribe(),
        ));
        tokio::spawn(guard_read_only(
            cluster.raft.clone(),
            cluster.id,
            cluster.db_health.clone(),
            s.database.clone(),
            s.follower_innodb_flush,
            cluster.read_write.clone(),
            cluster.shutdown.subscribe(),
        ));
        Ok(cluster)
    }

    /// Initialize a new cluster of this node and `peers`, unless this node already
    /// has a log.
    async fn bootstrap(&self, auth: &PeerAuth, peers: &[String]) -> Result<(), ClusterError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if initialized {
            tracing::info!("--bootstrap: this node already belongs to a cluster; resuming");
            return Ok(());
        }
        let mut members = BTreeMap::new();
        members.insert(self.id, self.member.clone());
        for addr in peers {
            let peer = discover(addr, auth).await?;
            if u64::from(peer.number) == self.id || members.contains_key(&u64::from(peer.number)) {
                return Err(ClusterError::Bootstrap(format!(
                    "peer {addr} ('{}') has node number {}, which another member already has: set [node] number",
                    peer.node_id, peer.number
                )));
            }
            members.insert(
                u64::from(peer.number),
                Member {
                    id: peer.node_id,
                    cluster_addr: addr.clone(),
                    proxy_addr: peer.proxy_addr,
                    api_addr: peer.api_addr,
                    incarnation: peer.incarnation,
                },
            );
        }
        tracing::info!(members = members.len(), "bootstrapping a new cluster");
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => {
                tracing::info!(reason = %e, "cluster already initialized");
                Ok(())
            }
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    pub fn raft(&self) -> &Raft<StateMachine> {
        &self.raft
    }

    /// Join an established cluster through any of its nodes (`wolfscale join`): the
    /// leader adds this node as a learner and makes it a voter once it has caught up.
    /// Returns once it is a member; asks again in the background, of whichever node
    /// leads, until it is a voter.
    pub async fn join(&self, addr: &str) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + BOOTSTRAP_PATIENCE;
        let mut target = addr.to_string();
        let mut backoff = Duration::from_millis(100);
        loop {
            match network::ask_join(&target, &self.auth).await {
                Ok(None) => break,
                Ok(Some(leader)) if leader != target => {
                    tracing::info!(%leader, "joining through the leader");
                    target = leader;
                }
                Ok(Some(_)) | Err(_) if tokio::time::Instant::now() > deadline => {
                    return Err(ClusterError::Bootstrap(format!(
                        "cannot join the cluster through {addr} within {}s",
                        BOOTSTRAP_PATIENCE.as_secs()
                    )))
                }
                Ok(Some(_)) => tokio::time::sleep(backoff).await,
                Err(e) => {
                    tracing::info!(peer = %target, error = %e, "waiting to join the cluster");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    target = addr.to_string();
                }
            }
        }
        tracing::info!(through = %target, "joined the cluster as a learner");
        tokio::spawn(keep_joining(
            self.raft.clone(),
            self.id,
            self.auth.clone(),
            self.shutdown.subscribe(),
        ));
        Ok(())
    }

    /// The current leader and its record, if known.
    pub fn leader(&self) -> Option<(NodeId, Member)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, member))
    }

    /// The term in which this node leads and may accept writes: it is the leader and
    /// has applied every entry committed before its term (fenced: its own no-op of this
    /// term is applied). `None` otherwise.
    pub fn writable_term(&self) -> Option<u64> {
        // Called for every statement: read the metrics in place, not a clone of them
        // (the membership alone is several maps).
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state != ServerState::Leader || m.current_leader != Some(self.id) {
            return None;
        }
        let applied_term = m.last_applied.map(|l| l.leader_id.term)?;
        // A leader that has not heard from a majority for an election timeout may
        // have been deposed on the other side of a partition: it takes no new writes
        // (they are held for a leader, then refused), rather than letting them wait
        // for a commit that cannot come.
        let acked = m
            .last_quorum_acked
            .as_ref()
            .map(|t| openraft::Instant::elapsed(&**t));
        let alone = || {
            m.membership_config
                .membership()
                .voter_ids()
                .all(|v| v == self.id)
        };
        if acked.is_none_or(|d| d > Duration::from_millis(self.quorum_window_ms)) && !alone() {
            return None;
        }
        if self.is_diverged() {
            // Its database is not the log's: it must not take writes (it is handing
            // leadership over, see `stand_down_when_diverged`).
            return None;
        }
        let ready = self.read_write.load(std::sync::atomic::Ordering::SeqCst)
            && *self.db_health.borrow() == DbHealth::Healthy;
        (applied_term == m.current_term && ready).then_some(m.current_term)
    }

    /// Wait until this node may accept writes, up to `timeout`.
    pub async fn wait_writable(&self, timeout: Duration) -> Option<u64> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = self.writable_term() {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// The last log index applied to the local MariaDB. openraft's own count runs on
    /// past an entry that diverged (see `StateMachine::apply`); the database stopped
    /// just before it.
    pub fn applied_index(&self) -> u64 {
        let applied = self.raft.metrics().borrow_watched().last_applied;
        self.cap_applied(applied.map_or(0, |l| l.index))
    }

    /// `applied`, capped below the entry at which replay diverged, if it did.
    pub(super) fn cap_applied(&self, applied: u64) -> u64 {
        match &*self.apply_status.lock().unwrap_or_else(|e| e.into_inner()) {
            ApplyStatus::Diverged { index, .. } => applied.min(index.saturating_sub(1)),
            ApplyStatus::Running => applied,
        }
    }

    /// Whether a snapshot is replacing the local databases now.
    pub fn installing(&self) -> bool {
        self.installing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether replay has stopped at a divergent entry.
    pub fn is_diverged(&self) -> bool {
        matches!(
            &*self.apply_status.lock().unwrap_or_else(|e| e.into_inner()),
            ApplyStatus::Diverged { .. }
        )
    }

    /// The highest index this node knows to be committed by the cluster.
    pub fn known_committed(&self) -> u64 {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.cluster_committed
            .or(m.local_committed)
            .map_or(0, |l| l.index)
    }

    /// Whether this node has heard from a leader within an election timeout (the
    /// leader itself always has). A follower that has not may have lost its leader, and
    /// serves no `fresh` read.
    pub fn leader_heard_lately(&self) -> bool {
        self.writable_term().is_some()
            || self.auth.leader_heard.elapsed() < Duration::from_millis(self.quorum_window_ms)
    }

    /// Wait until the local MariaDB has applied `index`, up to `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let applied = metrics.borrow_watched().last_applied.map_or(0, |l| l.index);
            if self.cap_applied(applied) >= index {
                return true;
            }
            if self.is_diverged() {
                // Replay has stopped for good: waiting cannot help.
                return false;
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .map_or(true, |r| r.is_err())
            {
                return false;
            }
        }
    }

    /// A linearizable read index: this node confirms with a majority that it still
    /// leads (Raft's ReadIndex) and returns the index a read must see applied.
    pub async fn read_index(&self) -> Result<u64, String> {
        let (read, _) = self
            .raft
            .get_read_log_id(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map_err(|e| e.to_string())?;
        Ok(read.index())
    }

    /// Whether `ip` is the address of a member of the cluster (its cluster or proxy
    /// address), from which a forwarded client may come.
    pub fn is_member_ip(&self, ip: std::net::IpAddr) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let ip = ip.to_canonical();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| n.clone())
            .collect::<Vec<_>>();
        members.iter().any(|n| {
            [&n.cluster_addr, &n.proxy_addr].iter().any(|a| {
                a.parse::<std::net::SocketAddr>()
                    .is_ok_and(|s| s.ip().to_canonical() == ip)
            })
        })
    }

    /// Append `entry` if this node still leads in `term`.
    pub async fn propose(&self, entry: LogEntry, term: u64) -> Result<Proposal, ProposeError> {
        let (responder, committed, done) =
            ProgressResponder::<TypeConfig, ClientWriteResult<TypeConfig>>::new();
        self.raft
            .write(entry)
            .responder(responder)
            .with_leader(term)
            .await
            .map_err(|e| ProposeError::Fatal(e.to_string()))?;
        Ok(Proposal { committed, done })
    }

    /// What a finished proposal amounts to.
    pub fn outcome(done: ClientWriteResult<TypeConfig>) -> Result<u64, ProposeError> {
        match done {
            Ok(r) => Ok(r.log_id.index),
            Err(ClientWriteError::ForwardToLeader(f)) => Err(ProposeError::NotLeader {
                leader: f.leader_node,
            }),
            Err(ClientWriteError::LogEntryDiscarded(_)) => Err(ProposeError::Discarded),
            Err(e) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// Durably note that DDL `id` runs here before it is logged: if this node dies
    /// before the entry is applied, the next start finds the note and checks the log.
    pub fn ddl_intent(&self, id: TxnId, sql: &str) -> Result<(), crate::state::StateError> {
        let last = self.metrics().last_log_index.unwrap_or(0);
        let value = format!("{last}\n{sql}");
        self.state().set(&intent_key(id), value.as_bytes())
    }

    pub fn ddl_done(&self, id: TxnId) {
        if let Err(e) = self.state().delete(&intent_key(id)) {
            tracing::warn!(error = %e, %id, "cannot clear a DDL intent record");
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StateDb> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    pub fn applier(&self) -> &Arc<Mutex<Applier>> {
        &self.applier
    }

    /// Stop Raft and the peer listener.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        self.raft.shutdown().await.ok();
        self.server.await.ok();
    }
}

/// Until this node is a voter, ask the current leader every two seconds to add it
/// (a leader that changed before promoting it does so then).
async fn keep_joining(
    raft: Raft<StateMachine>,
    me: NodeId,
    auth: PeerAuth,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
        let (voter, leader) = {
            let m = raft.metrics().borrow_watched().clone();
            let membership = m.membership_config.membership();
            let voter = membership.voter_ids().any(|v| v == me);
            let leader = m
                .current_leader
                .and_then(|id| membership.get_node(&id).map(|n| n.cluster_addr.clone()));
            (voter, leader)
        };
        if voter {
            tracing::info!("this node is a voter now");
            return;
        }
        if let Some(addr) = leader {
            if let Err(e) = network::ask_join(&addr, &auth).await {
                tracing::debug!(error = %e, "asking the leader to make this node a voter");
            }
        }
    }
}

/// Keep the local MariaDB `read_only` unless this node is the fenced leader, so that
/// nothing but the applier (whose account has READ ONLY ADMIN) writes to a follower's
/// MariaDB, even a client that reaches it directly. With `follower_flush`, also set
/// `innodb_flush_log_at_trx_commit`: that value while a follower, 1 before taking
/// writes (the leader's prepared transactions must survive an OS crash: nothing else
/// holds their effects).
/// Once replay has diverged this node must not lead: its MariaDB no longer matches
/// the log, so as leader it could neither run writes on the log's state nor order
/// their commits. It stops campaigning (it still stores entries and votes, so the
/// others keep their majority) and, if it leads, hands leadership to another voter.
async fn stand_down_when_diverged(
    raft: Raft<StateMachine>,
    me: NodeId,
    may_lead: Arc<std::sync::atomic::AtomicBool>,
    mut diverged: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        changed = diverged.wait_for(|d| *d) => if changed.is_err() { return },
        _ = shutdown.changed() => return,
    }
    tracing::error!("replay diverged: this node no longer stands for election");
    may_lead.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut metrics = raft.metrics();
    let mut last_try: Option<tokio::time::Instant> = None;
    loop {
        let m = metrics.borrow_watched().clone();
        let due = last_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if m.current_leader == Some(me) && due {
            last_try = Some(tokio::time::Instant::now());
            let other = m
                .membership_config
                .membership()
                .voter_ids()
                .find(|id| *id != me);
            if let Some(to) = other {
                tracing::warn!(to, "diverged leader: transferring leadership");
                if let Err(e) = raft.trigger().transfer_leader(to).await {
                    tracing::warn!(error = %e, "cannot transfer leadership");
                }
            }
        }
        let leading = m.current_leader == Some(me);
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)), if leading => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn guard_read_only(
    raft: Raft<StateMachine>,
    me: NodeId,
    mut health: watch::Receiver<DbHealth>,
    db: mysql_async::Opts,
    follower_flush: Option<u8>,
    read_write: Arc<std::sync::atomic::AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    let mut metrics = raft.metrics();
    let mut current: Option<bool> = None;
    loop {
        let m = metrics.borrow_watched().clone();
        let writable = m.state == ServerState::Leader
            && m.current_leader == Some(me)
            && m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term);
        if current != Some(writable) {
            if !writable {
                // Stop taking writes before the database refuses them.
                read_write.store(false, Ordering::SeqCst);
            }
            let read_only = format!(
                "SET GLOBAL read_only = {}",
                if writable { "OFF" } else { "ON" }
            );
            // Made durable before it is writable; relaxed once it is read-only.
            let mut sqls = vec![read_only];
            if let Some(flush) = follower_flush {
                let flush = if writable { 1 } else { flush };
                let sql = format!("SET GLOBAL innodb_flush_log_at_trx_commit = {flush}");
                if writable {
                    sqls.insert(0, sql);
                } else {
                    sqls.push(sql);
                }
            }
            match mysql_async::Conn::new(db.clone()).await {
                Ok(mut conn) => match run_all(&mut conn, &sqls).await {
                    Ok(()) => {
                        tracing::info!(read_only = !writable, statements = %sqls.join("; "), "local MariaDB role set");
                        read_write.store(writable, Ordering::SeqCst);
                        current = Some(writable);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot set read_only on the local MariaDB")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the local MariaDB to set read_only")
                }
            }
            if current != Some(writable) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            changed = metrics.changed() => if changed.is_err() { return },
            changed = health.changed() => {
                if changed.is_err() {
                    return;
                }
                if *health.borrow_and_update() == DbHealth::Healthy {
                    // Back after an outage (a restarted MariaDB starts with the
                    // read_only of its own configuration): set the role again.
                    current = None;
                }
            }
        }
    }
}

async fn run_all(conn: &mut mysql_async::Conn, sqls: &[String]) -> Result<(), mysql_async::Error> {
    use mysql_async::prelude::Queryable;
    for sql in sqls {
        conn.query_drop(sql).await?;
    }
    Ok(())
}

/// Once the cluster has a leader, ask every member for its MariaDB settings and warn
/// about differences that can make statement replay differ.
async fn compare_settings(raft: Raft<StateMachine>, auth: PeerAuth) {
    let mut metrics = raft.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while metrics.borrow_watched().current_leader.is_none() {
        if tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .is_err()
        {
            return;
        }
    }
    let m = metrics.borrow_watched().clone();
    let me = u64::from(auth.me.number);
    for (id, member) in m.membership_config.membership().nodes() {
        if *id == me {
            continue;
        }
        let mut client = Network { auth: auth.clone() }.new_client(*id, member).await;
        match client.settings().await {
            Ok(theirs) => {
                for d in auth.settings.differences(&theirs) {
                    tracing::warn!(peer = %member.id, difference = %d, "MariaDB settings differ between nodes: replay may not give the same results");
                }
            }
            Err(e) => {
                tracing::debug!(peer = %member.id, error = %e, "could not compare MariaDB settings")
            }
        }
    }
}

/// Learn a peer's identity from the handshake, retrying until it answers.
async fn discover(addr: &str, auth: &PeerAuth) -> Result<PeerIdentity, ClusterError> {
    let deadline = tokio::time::Instant::now() + BOOTSTRAP_PATIENCE;
    let mut backoff = Duration::from_millis(100);
    loop {
        match transport::connect(
            addr,
            auth.source,
            &auth.secret,
            &auth.me,
            network::CONNECT_TIMEOUT,
        )
        .await
        {
            Ok((_conn, peer)) => return Ok(peer),
            Err(e) if e.is_auth_failure() => {
                return Err(ClusterError::Bootstrap(format!(
                    "peer {addr} refused the cluster secret (or has another): {e}"
                )))
            }
            Err(e) if tokio::time::Instant::now() + backoff > deadline => {
                return Err(ClusterError::Bootstrap(format!(
                    "peer {addr} did not answer within {}s: {e}",
                    BOOTSTRAP_PATIENCE.as_secs()
                )))
            }
            Err(e) => {
                tracing::info!(peer = addr, error = %e, "waiting for peer to bootstrap the cluster");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

const INTENT_PREFIX: &str = "ddl.intent.";

fn intent_key(id: TxnId) -> String {
    format!("{INTENT_PREFIX}{id}")
}

/// A DDL this node ran (or was about to run) on its MariaDB before it last stopped,
/// whose entry is not in its log: the database may hold a change the other nodes never
/// get. Intents whose entries are in the log are cleared (the applier counts a local
/// DDL entry as done). Returns the first log index the DDL could have had and why
/// applying must stop, and the keys of the intents found logged.
async fn unlogged_ddl(
    intents: Vec<(String, Vec<u8>)>,
    wal: &Wal,
) -> Result<(Option<(u64, String)>, Vec<String>), ClusterError> {
    let mut logged = Vec::new();
    let log = wal.state();
    let end = log.last.map_or(0, |(i, _)| i + 1);
    let first = log.first_index.unwrap_or(end);
    let mut unlogged = None;
    for (key, value) in intents {
        let id = &key[INTENT_PREFIX.len()..];
        let text = String::from_utf8_lossy(&value);
        let (last, sql) = text.split_once('\n').unwrap_or(("0", &text));
        let from = last.parse::<u64>().unwrap_or(0);
        let mut found = false;
        let mut at = from.max(first);
        while at < end && !found {
            let upto = (at + 1024).min(end);
            for e in wal.read(at..upto).await? {
                let entry =
                    super::log_store::decode(&e).map_err(|e| ClusterError::Raft(e.to_string()))?;
                if let openraft::EntryPayload::Normal(LogEntry::Ddl(d)) = &entry.payload {
                    found |= d.id.to_string() == id;
                }
            }
            at = upto;
        }
        if found {
            logged.push(key);
        } else if unlogged.is_none() {
            unlogged = Some((
                from + 1,
                format!(
                    "a DDL may have run on this node's MariaDB before it stopped, and it is not in the \
                     log (id {id}): {sql}; compare this node's schema with the others' and rebuild it \
                     from a healthy node if they differ"
                ),
            ));
        }
    }
    Ok((unlogged, logged))
}

/// `host:0` with the bound port filled in.
fn fill_port(addr: &str, port: u16) -> String {
    match addr.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{port}"),
        _ => addr.to_string(),
    }
}

/// While only local entries are applied, the applier moves its marker when it runs;
/// this moves it when the log goes quiet too, so a restart replays little.
fn spawn_marker_ticker(applier: std::sync::Weak<Mutex<Applier>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(applier) = applier.upgrade() else {
                return;
            };
            let mut a = applier.lock().await;
            if let Err(e) = a.write_marker(false).await {
                tracing::debug!(error = %e, "cannot move the applied marker yet");
            }
        }
    });
}

/// Count this run of the node, durably, before anything is produced in it.
fn next_run(state_dir: &std::path::Path) -> Result<u64, ClusterError> {
    let err = |source| ClusterError::State {
        path: state_dir.to_path_buf(),
        source,
    };
    let db = StateDb::open(state_dir).map_err(err)?;
    let last = db
        .get("node.runs")
        .map_err(err)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_le_bytes);
    let run = last + 1;
    db.set("node.runs", &run.to_le_bytes()).map_err(err)?;
    Ok(run)
}

/// This node's producer id: random, made once, kept in the state database.
fn incarnation(state_dir: &std::path::Path) -> Result<u64, ClusterError> {
    let err = |source| ClusterError::State {
        path: state_dir.to_path_buf(),
        source,
    };
    let db = StateDb::open(state_dir).map_err(err)?;
    if let Some(v) = db.get("node.incarnation").map_err(err)? {
        if let Ok(bytes) = <[u8; 8]>::try_from(v.as_slice()) {
            return Ok(u64::from_le_bytes(bytes));
        }
    }
    let v = rand::random::<u64>() | 1;
    db.set("node.incarnation", &v.to_le_bytes()).map_err(err)?;
    Ok(v)
}
