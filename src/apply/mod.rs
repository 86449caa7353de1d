//! The applier: committed log entries applied to the local MariaDB, in log order,
//! exactly once.
//!
//! # Data flow
//! ```text
//! cluster (openraft state machine) ── Vec<Item> in log order ──▶ Applier::apply
//!    ├─ entry produced by this node, its session waiting ─▶ PendingCommits: the session
//!    │     runs XA COMMIT on the connection that ran the transaction
//!    ├─ entry produced by this node, no session (restart) ─▶ XA COMMIT by xid if still
//!    │     prepared (XA RECOVER), else it was committed already
//!    └─ entry from another node ─▶ replay: one MariaDB transaction for a run of entries,
//!          statements sent many per round trip, `wolfscale.applied` moved in the same
//!          transaction
//! ```
//!
//! # Exactly once
//! Replayed entries and the `wolfscale.applied` marker commit in one transaction, so
//! after a crash the marker says exactly which entries are in the database. An entry
//! this node produced ran as an XA transaction that was PREPARED before it was
//! appended; it is committed once (by its session, or by xid) and the marker follows.
//! A crash between the two leaves the xid either still prepared (commit it) or gone
//! (already committed): the xid is the per-transaction marker, and it needs no privilege
//! of the client's (ARCHITECTURE §2, "the exactly-once marker").
//!
//! # Divergence
//! Each statement's affected (and, for UPDATE, matched) row count travels in the entry.
//! A replay that fails with a deterministic error, or changes other rows than the leader
//! did, stops the applier at that entry with [`ApplyError::Diverged`]; it is never
//! skipped. Transient errors (lock waits against local readers, deadlocks, a lost
//! connection, a full disk) are retried with the group shrunk to single entries.

mod committer;
pub mod entry;
pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::oneshot;

pub use entry::{LogEntry, TxnId};

use entry::{SessionVars, Statement, Value};
use schema::AppliedRow;

/// Statements sent in one round trip of a replay.
const ROUND_TRIP_BYTES: usize = 1 << 20;
/// Entries replayed in one MariaDB transaction.
const GROUP_ENTRIES: usize = 512;
/// How long a waiting session gets to commit its transaction.
use committer::{LocalCommit, LOCAL_COMMIT_TIMEOUT};
/// How long a replayed DDL waits for a local reader's metadata lock before the reader's
/// transaction is ended.
const DDL_LOCK_WAIT: Duration = Duration::from_secs(3);
/// How long a replayed statement waits for a row lock before it is retried.
const REPLAY_LOCK_WAIT: Duration = Duration::from_secs(2);
/// How often the marker follows the local commits when only local entries are applied
/// (their xids are their markers; this only shortens the replay after a restart).
const MARKER_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("entry {index} diverged: {reason}")]
    Diverged { index: u64, reason: String },
    #[error("cannot open the applier's connection to MariaDB: {0}")]
    Connect(mysql_async::Error),
    #[error("MariaDB: {0}")]
    Sql(#[from] mysql_async::Error),
    #[error("the local MariaDB's settings make statement replay unsafe: {}", .0.join("; "))]
    Settings(Vec<String>),
}

/// One committed log position, as the state machine hands it over.
#[derive(Debug, Clone)]
pub enum Item {
    Entry {
        index: u64,
        term: u64,
        entry: Box<LogEntry>,
    },
    /// A leader's no-op, or an entry with nothing for MariaDB.
    Blank { index: u64, term: u64 },
    /// A membership change (its encoding, stored with the marker).
    Membership {
        index: u64,
        term: u64,
        membership: Vec<u8>,
    },
}

impl Item {
    pub fn index(&self) -> u64 {
        match self {
            Item::Entry { index, .. }
            | Item::Blank { index, .. }
            | Item::Membership { index, .. } => *index,
        }
    }

    fn term(&self) -> u64 {
        match self {
            Item::Entry { term, .. } | Item::Blank { term, .. } | Item::Membership { term, .. } => {
                *term
            }
        }
    }
}

/// What the applier tells a session whose transaction's turn has come.
pub struct CommitOrder {
    pub index: u64,
    /// The session answers once its connection has run `XA COMMIT`, with the error
    /// text if it could not.
    pub done: oneshot::Sender<Result<(), String>>,
}

/// The applier's verdict on a waiting session's prepared transaction.
pub enum Turn {
    /// Its entry is committed and every earlier one is applied: `XA COMMIT` now.
    Commit(CommitOrder),
    /// Its entry can never commit (the log moved on to a later term without it): `XA
    /// ROLLBACK`, then answer on the channel.
    Orphaned(oneshot::Sender<()>),
}

/// A session of this node waiting for its transaction's turn.
pub struct Waiter {
    pub order: oneshot::Sender<Turn>,
    /// The backend thread holding the prepared transaction, killed if the session
    /// cannot commit in time so that the applier can commit it by xid.
    pub backend_thread: u32,
    /// The term the entry was proposed in: once the applier reaches an entry of a
    /// later term without having met this one, it never will.
    pub term: u64,
}

/// Sessions waiting for their transactions to be applied, by transaction id; and the
/// write transactions open on this node (not yet prepared), with the term they run in
/// and the backend thread that holds their locks.
#[derive(Default)]
pub struct PendingCommits {
    waiting: Mutex<HashMap<TxnId, Waiter>>,
    open: Mutex<HashMap<TxnId, (u64, u32)>>,
    /// The latest pinned timestamp of any applied entry (µs): a new leader's pins
    /// start above it, so logged time never goes backwards across a failover.
    last_timestamp: std::sync::atomic::AtomicI64,
    /// The highest term in which this node opened a write transaction in this run.
    max_term: std::sync::atomic::AtomicU64,
}

impl PendingCommits {
    /// Backend threads of this node's sessions with a write transaction open or
    /// waiting for its commit turn.
    pub fn backend_threads(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.lock().values().map(|w| w.backend_thread).collect();
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(open.values().map(|(_, t)| *t));
        out
    }

    /// The latest timestamp pinned in an applied entry, in µs (0: none yet).
    pub fn timestamp_floor(&self) -> i64 {
        self.last_timestamp
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn note_timestamp(&self, us: i64) {
        self.last_timestamp
            .fetch_max(us, std::sync::atomic::Ordering::AcqRel);
    }

    /// A write transaction started on backend thread `thread` in `term`.
    pub fn opened(&self, id: TxnId, term: u64, thread: u32) {
        self.max_term
            .fetch_max(term, std::sync::atomic::Ordering::AcqRel);
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (term, thread));
    }

    /// The highest term in which this node opened a write transaction in this run.
    pub fn max_term(&self) -> u64 {
        self.max_term.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many write transactions are open (not yet prepared or ended).
    pub fn open_len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// It was prepared (the commit pipeline has it) or rolled back.
    pub fn closed(&self, id: &TxnId) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Remove and return the threads of open transactions from terms before `term`.
    fn stale(&self, term: u64) -> Vec<(TxnId, u32)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<(TxnId, u32)> = open
            .iter()
            .filter(|(_, (t, _))| *t < term)
            .map(|(id, (_, thread))| (*id, *thread))
            .collect();
        for (id, _) in &stale {
            open.remove(id);
        }
        stale
    }

    /// The xids of the transactions whose sessions wait for their commit turn.
    fn xids(&self) -> Vec<String> {
        self.lock().keys().map(TxnId::xid).collect()
    }

    pub fn register(&self, id: TxnId, waiter: Waiter) {
        self.lock().insert(id, waiter);
    }

    /// Withdraw a registration (the entry was discarded, or the session gave up
    /// before appending). True if it was still registered.
    pub fn withdraw(&self, id: &TxnId) -> bool {
        self.lock().remove(id).is_some()
    }

    fn take(&self, id: &TxnId) -> Option<Waiter> {
        self.lock().remove(id)
    }

    /// Remove and return the waiters whose entries were proposed before `term`.
    fn older_than(&self, term: u64) -> Vec<(TxnId, Waiter)> {
        let mut waiting = self.lock();
        let ids: Vec<TxnId> = waiting
            .iter()
            .filter(|(_, w)| w.term < term)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| waiting.remove(&id).map(|w| (id, w)))
            .collect()
    }

    /// The earliest term any waiter proposed in.
    fn min_term(&self) -> Option<u64> {
        self.lock().values().map(|w| w.term).min()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TxnId, Waiter>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the applier runs or has stopped at a divergent entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyStatus {
    Running,
    Diverged { index: u64, reason: String },
}

/// The replay connection's current session state, so that it is only set on change.
#[derive(Default)]
struct ConnState {
    db: Option<String>,
    names: Option<(String, String)>,
    /// The session variables last set with `SET SESSION` (see `push_statement`).
    vars: Option<Vec<(String, Value)>>,
}

pub struct Applier {
    opts: mysql_async::Opts,
    /// The local MariaDB's settings replay depends on (compared with the peers').
    pub settings: schema::ReplaySettings,
    conn: Option<Conn>,
    state: ConnState,
    incarnation: u64,
    pending: Arc<PendingCommits>,
    applied: AppliedRow,
    status: Arc<Mutex<ApplyStatus>>,
    /// The first DDL replayed after opening may have run before a crash.
    ddl_since_open: bool,
    /// Set by [`Applier::halt`]: nothing is applied.
    halted: Option<(u64, String)>,
    /// Transactions this node PREPARED before it last stopped, still prepared at
    /// start, with the highest term their entries can have: those whose entries
    /// are not met before an entry of a later term never commit, and are rolled back.
    recovered: Vec<(String, u64)>,
    /// A connection was open before: the next one reconciles prepared transactions.
    connected_before: bool,
    /// The bound `recover_prepared` was given at start.
    start_bound: u64,
    /// Local entries' commits, pipelined (see [`committer`]).
    committer: committer::Committer,
    marker_written: std::time::Instant,
}

impl Applier {
    /// Connect, create the `wolfscale` schema if needed and read the marker.
    pub async fn open(
        opts: mysql_async::Opts,
        incarnation: u64,
        pending: Arc<PendingCommits>,
    ) -> Result<Self, ApplyError> {
        let mut conn = Conn::new(opts.clone()).await.map_err(ApplyError::Connect)?;
        let settings = schema::ReplaySettings::read(&mut conn).await?;
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(ApplyError::Settings(problems));
        }
        schema::ensure(&mut conn).await?;
        let applied = schema::read_applied(&mut conn).await?;
        conn.query_drop(format!(
            "SET SESSION innodb_lock_wait_timeout = {}",
            REPLAY_LOCK_WAIT.as_secs()
        ))
        .await?;
        let opts_for_committer = opts.clone();
        Ok(Applier {
            opts,
            settings,
            conn: Some(conn),
            state: ConnState::default(),
            incarnation,
            pending,
            applied,
            status: Arc::new(Mutex::new(ApplyStatus::Running)),
            ddl_since_open: false,
            halted: None,
            recovered: Vec::new(),
            connected_before: false,
            start_bound: 0,
            committer: committer::Committer::spawn(opts_for_committer),
            marker_written: std::time::Instant::now(),
        })
    }

    /// Find the transactions this node prepared before it stopped that are still
    /// prepared. `bound` is the highest term this node can have proposed in (its vote
    /// and its last log entry's term, read before Raft starts).
    pub async fn recover_prepared(&mut self, bound: u64) -> Result<usize, ApplyError> {
        self.start_bound = bound;
        let prefix = TxnId {
            incarnation: self.incarnation,
            seq: 0,
        }
        .xid_prefix();
        let conn = self.conn().await?;
        self.recovered = prepared_xids(conn, &prefix)
            .await?
            .into_iter()
            .map(|xid| (xid, bound))
            .collect();
        if !self.recovered.is_empty() {
            tracing::info!(
                count = self.recovered.len(),
                bound,
                "transactions prepared before the restart wait for their log entries"
            );
        }
        Ok(self.recovered.len())
    }

    /// The last entry whose effects are committed here.
    pub fn applied(&self) -> &AppliedRow {
        &self.applied
    }

    pub fn status(&self) -> Arc<Mutex<ApplyStatus>> {
        self.status.clone()
    }

    /// After a snapshot replaced the local databases: a new connection (the old one's
    /// default database and session state may name what was dropped), the schema
    /// checked, and the marker read from the snapshot's data.
    pub async fn after_snapshot(&mut self) -> Result<(), ApplyError> {
        self.reset().await;
        self.recovered.clear();
        let conn = self.conn().await?;
        schema::ensure(conn).await?;
        self.applied = schema::read_applied(conn).await?;
        Ok(())
    }

    /// Apply committed items, in order. Items at or below the marker are skipped
    /// (they are replayed again after a restart). Returns once every item's effects
    /// are committed; a divergent entry stops it with an error that names the entry.
    pub async fn apply(&mut self, items: Vec<Item>) -> Result<(), ApplyError> {
        let result = self.apply_items(items).await;
        self.after_error(&result).await;
        result
    }

    /// An error other than divergence may have left the connection dead (MariaDB
    /// restarted) or mid-transaction: drop it, so that the next attempt connects
    /// afresh and reconciles what the outage left prepared (`reconcile_prepared`).
    async fn after_error<T>(&mut self, result: &Result<T, ApplyError>) {
        if matches!(result, Err(e) if !matches!(e, ApplyError::Diverged { .. })) {
            self.reset().await;
        }
    }

    async fn apply_items(&mut self, items: Vec<Item>) -> Result<(), ApplyError> {
        if let Some((index, reason)) = &self.halted {
            // Stopped at start (see `halt`): nothing is applied on top of a database
            // that differs from the log.
            return Err(ApplyError::Diverged {
                index: *index,
                reason: reason.clone(),
            });
        }
        if let Some(term) = items.iter().map(Item::term).max() {
            self.abort_stale_transactions(term).await;
        }
        let mut seen_term = self.applied.term;
        if self.orphans_before(seen_term) {
            self.resolve_orphans(seen_term).await?;
        }
        let mut group: Vec<Item> = Vec::new();
        let mut local: Vec<Item> = Vec::new();
        for item in items {
            if let Item::Entry { entry, .. } = &item {
                if let Some(us) = entry.latest_timestamp() {
                    self.pending.note_timestamp(us);
                }
            }
            if item.term() > seen_term {
                seen_term = item.term();
                if self.orphans_before(seen_term) {
                    // Everything of the earlier terms is applied first: an entry met
                    // there is committed, not orphaned.
                    self.flush(&mut group).await?;
                    self.commit_local(&mut local).await?;
                    self.resolve_orphans(seen_term).await?;
                }
            }
            if self.applied.index.is_some_and(|a| item.index() <= a) {
                continue;
            }
            let is_local = matches!(&item, Item::Entry { entry, .. } if entry.id().incarnation == self.incarnation);
            let ddl =
                matches!(&item, Item::Entry { entry, .. } if matches!(**entry, LogEntry::Ddl(_)));
            if is_local {
                self.flush(&mut group).await?;
                local.push(item);
                continue;
            }
            self.commit_local(&mut local).await?;
            if ddl || group.len() >= GROUP_ENTRIES {
                self.flush(&mut group).await?;
            }
            if ddl {
                self.apply_ddl(item).await?;
            } else {
                group.push(item);
            }
        }
        self.commit_local(&mut local).await?;
        self.flush(&mut group).await?;
        self.write_marker(false).await
    }

    fn orphans_before(&self, term: u64) -> bool {
        self.recovered.iter().any(|(_, bound)| *bound < term)
            || self.pending.min_term().is_some_and(|t| t < term)
    }

    /// The log reached an entry of `term`: prepared transactions of this node whose
    /// entries belong to earlier terms and were not met can never commit. Their
    /// sessions roll them back (or, gone, the applier does by xid) before anything of
    /// `term` is replayed, so that their locks are released first.
    async fn resolve_orphans(&mut self, term: u64) -> Result<(), ApplyError> {
        self.committer.drain().await;
        let mut acks = Vec::new();
        let mut by_xid = Vec::new();
        for (id, waiter) in self.pending.older_than(term) {
            let (ack_tx, ack_rx) = oneshot::channel();
            if waiter.order.send(Turn::Orphaned(ack_tx)).is_ok() {
                acks.push((id, waiter.backend_thread, ack_rx));
            } else {
                by_xid.push(id.xid());
            }
        }
        let deadline = tokio::time::Instant::now() + LOCAL_COMMIT_TIMEOUT;
        for (id, thread, ack) in acks {
            tracing::info!(%id, term, "a transaction of an earlier term was never committed; rolling it back");
            if !matches!(tokio::time::timeout_at(deadline, ack).await, Ok(Ok(()))) {
                if let Ok(conn) = self.conn().await {
                    conn.query_drop(format!("KILL {thread}")).await.ok();
                }
                by_xid.push(id.xid());
            }
        }
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.recovered)
            .into_iter()
            .partition(|(_, bound)| *bound < term);
        self.recovered = keep;
        for (xid, _) in old {
            tracing::info!(
                xid,
                term,
                "a transaction prepared before the restart was never committed; rolling it back"
            );
            by_xid.push(xid);
        }
        for xid in by_xid {
            self.finish_by_xid(&xid, "ROLLBACK").await?;
        }
        Ok(())
    }

    /// Before another node's entry of `term` is replayed (again, after a failure):
    /// every transaction of this node still prepared in MariaDB that no session waits
    /// on is an orphan. A session whose connection died just after its `XA PREPARE`
    /// (killed as stale, or MariaDB going down) leaves such a transaction detached,
    /// holding its locks, with nothing else tracking it. It cannot commit: the entry
    /// being replayed is of a term another node led, so this node's entries of earlier
    /// terms are all behind it (committed by now: the committer is drained first) and
    /// this node can have led no later term yet, since a leader takes writes only once
    /// it has applied everything committed before its term. Roll them back.
    async fn sweep_prepared(&mut self, term: u64) -> Result<(), ApplyError> {
        self.committer.drain().await;
        let prefix = TxnId {
            incarnation: self.incarnation,
            seq: 0,
        }
        .xid_prefix();
        let held = self.pending.xids();
        let conn = self.conn().await?;
        for xid in prepared_xids(conn, &prefix).await? {
            if !held.contains(&xid) && !self.recovered.iter().any(|(x, _)| *x == xid) {
                tracing::info!(
                    xid,
                    term,
                    "a transaction of this node is prepared with no session: an orphan"
                );
                self.recovered.push((xid, term.saturating_sub(1)));
            }
        }
        if self.orphans_before(term) {
            self.resolve_orphans(term).await?;
        }
        Ok(())
    }

    /// Write transactions this node opened as leader of an earlier term hold locks the
    /// new leader's entries may need, and can never commit: kill their connections
    /// (MariaDB rolls them back) before replaying anything of the new term.
    async fn abort_stale_transactions(&mut self, term: u64) {
        let stale = self.pending.stale(term);
        if stale.is_empty() {
            return;
        }
        let Ok(conn) = self.conn().await else {
            return;
        };
        for (id, thread) in stale {
            tracing::warn!(%id, thread, term, "rolling back a transaction of an earlier term");
            conn.query_drop(format!("KILL {thread}")).await.ok();
        }
    }

    /// Replay a run of entries from other nodes in one transaction, retrying
    /// transient failures one entry at a time.
    async fn flush(&mut self, group: &mut Vec<Item>) -> Result<(), ApplyError> {
        if group.is_empty() {
            return Ok(());
        }
        // Replay sees every earlier entry, local ones included.
        self.committer.drain().await;
        crate::failpoint::replay_delay(self.incarnation).await;
        let items = std::mem::take(group);
        let mut backoff = Duration::from_millis(10);
        let mut size = items.len();
        let mut at = 0;
        let mut retrying = false;
        while at < items.len() {
            if retrying {
                // Transactions of this node left prepared by a session that is gone
                // hold locks this entry may wait for: roll them back before trying it
                // again (see `sweep_prepared`).
                if let Err(e) = self.sweep_prepared(items[at].term()).await {
                    tracing::warn!(error = %e, "cannot roll back orphaned transactions yet");
                }
            }
            let end = (at + size).min(items.len());
            match self.replay_group(&items[at..end]).await {
                Ok(()) => {
                    at = end;
                    backoff = Duration::from_millis(10);
                }
                Err(Failure::Transient(e)) => {
                    tracing::warn!(error = %e, first = items[at].index(), "transient replay error; retrying");
                    size = 1;
                    self.reset().await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    retrying = true;
                }
                Err(Failure::Diverged { index, reason }) => {
                    self.reset().await;
                    return Err(self.diverged(index, reason));
                }
            }
        }
        Ok(())
    }

    /// Stop applying before anything is applied: this node's MariaDB is known to
    /// differ from the log at `index` (see `Cluster::start`, DDL intents).
    /// Replay may go on again (a snapshot replaced a diverged database).
    pub fn resume(&mut self) {
        if self.halted.take().is_some() {
            tracing::info!("the database was replaced by a snapshot: applying resumes");
        }
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = ApplyStatus::Running;
    }

    pub fn halt(&mut self, index: u64, reason: String) {
        tracing::error!(index, %reason, "this node's MariaDB differs from the log; applying stops here");
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = ApplyStatus::Diverged {
            index,
            reason: reason.clone(),
        };
        self.halted = Some((index, reason));
    }

    fn diverged(&mut self, index: u64, reason: String) -> ApplyError {
        tracing::error!(index, %reason, "replay diverged from the leader; applying stops here");
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = ApplyStatus::Diverged {
            index,
            reason: reason.clone(),
        };
        // Nothing is applied after it, in this process or (deterministically) the next.
        self.halted = Some((index, reason.clone()));
        ApplyError::Diverged { index, reason }
    }

    async fn replay_group(&mut self, items: &[Item]) -> Result<(), Failure> {
        let mut script = Script::default();
        script.push_plain("START TRANSACTION".into());
        let mut membership = None;
        for item in items {
            match item {
                Item::Entry { index, entry, .. } => {
                    if let LogEntry::Txn(txn) = &**entry {
                        for st in &txn.statements {
                            self.push_statement(&mut script, *index, &txn.session, st);
                        }
                    }
                }
                Item::Membership { membership: m, .. } => membership = Some(m.clone()),
                Item::Blank { .. } => {}
            }
        }
        let last = items.last().expect("non-empty group");
        script.push_plain(schema::update_applied(
            last.index(),
            last.term(),
            membership.as_deref(),
        ));
        self.run_script(script).await?;
        // Committed only now that every count is checked: sent in the same
        // multi-statement payload, COMMIT would run whatever the counts were, and the
        // divergent entry would be kept with the marker past it.
        let conn = self
            .conn()
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| classify_error(last.index(), "COMMIT", e))?;
        self.applied.index = Some(last.index());
        self.applied.term = last.term();
        if membership.is_some() {
            self.applied.membership = membership;
        }
        Ok(())
    }

    /// Queue what a statement needs: connection state, user variables, the statement
    /// with its pins.
    fn push_statement(
        &mut self,
        script: &mut Script,
        index: u64,
        session: &SessionVars,
        st: &Statement,
    ) {
        if let Some(db) = &st.db {
            if self.state.db.as_deref() != Some(db.as_str()) {
                script.push_plain(format!("USE {}", quote_ident(db)));
                self.state.db = Some(db.clone());
            }
        }
        let names = (session.charset.clone(), session.collation.clone());
        if !names.0.is_empty()
            && self.state.names.as_ref() != Some(&names)
            && is_ident(&names.0)
            && is_ident(&names.1)
        {
            script.push_plain(format!("SET NAMES {} COLLATE {}", names.0, names.1));
            self.state.names = Some(names);
        }
        // The session's variables are set on the connection when they change (most
        // entries share them), rather than with each statement: one `SET STATEMENT`
        // of a dozen variables per statement cost MariaDB more than the statement.
        // A procedure that sets one changes the replay connection as it changed the
        // leader's session, statement for statement; the leader reads them again
        // after a CALL, so the next entry carries what they became.
        let settable = || session.vars.iter().filter(|(name, _)| is_ident(name));
        let unchanged = self
            .state
            .vars
            .as_ref()
            .is_some_and(|set| set.iter().eq(settable()));
        if !unchanged && settable().next().is_some() {
            let vars: Vec<(String, Value)> = settable().cloned().collect();
            let sets: Vec<String> = vars
                .iter()
                .map(|(name, v)| format!("{name}={}", v.literal()))
                .collect();
            script.push_plain(format!("SET SESSION {}", sets.join(", ")));
            self.state.vars = Some(vars);
        }
        if !st.user_vars.is_empty() {
            let sets: Vec<String> = st
                .user_vars
                .iter()
                .map(|(name, v)| format!("@{} = {}", quote_ident(name), v.literal()))
                .collect();
            script.push_plain(format!("SET {}", sets.join(", ")));
        }
        // Parameters that have an exact literal join the text round trip; others keep
        // the statement prepared.
        let inlined = st.params.as_deref().and_then(|params| {
            let literals: Option<Vec<String>> =
                params.iter().map(|v| inline_literal(v, session)).collect();
            crate::sql::substitute_params(&st.sql, &literals?)
        });
        let (text, params) = match inlined {
            Some(sql) => {
                let st = Statement {
                    sql,
                    params: None,
                    ..st.clone()
                };
                (pinned_statement(&SessionVars::default(), &st), None)
            }
            None => (
                pinned_statement(&SessionVars::default(), st),
                st.params.clone(),
            ),
        };
        script.push_checked(Check {
            index,
            sql: text,
            params,
            expect: st.expect,
        });
    }

    async fn run_script(&mut self, script: Script) -> Result<(), Failure> {
        let conn = self
            .conn()
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        for chunk in script.chunks() {
            match chunk {
                Chunk::Text(parts) => run_text(conn, &parts).await?,
                Chunk::Prepared(check) => run_prepared(conn, &check).await?,
            }
        }
        Ok(())
    }

    /// A run of consecutive entries this node produced: tell each waiting session to
    /// commit its prepared transaction, and hand the run to the committer, which
    /// commits by xid what no session does. Returns without waiting (see
    /// [`committer`]: transactions prepared at once cannot conflict).
    async fn commit_local(&mut self, run: &mut Vec<Item>) -> Result<(), ApplyError> {
        for item in std::mem::take(run) {
            let Item::Entry { index, term, entry } = item else {
                continue;
            };
            let mut commit = LocalCommit {
                index,
                term,
                xid: None,
                session: None,
            };
            if let LogEntry::Txn(_) = *entry {
                let id = entry.id();
                let xid = id.xid();
                self.recovered.retain(|(x, _)| *x != xid);
                if let Some(waiter) = self.pending.take(&id) {
                    let (done_tx, done_rx) = oneshot::channel();
                    let order = CommitOrder {
                        index,
                        done: done_tx,
                    };
                    if waiter.order.send(Turn::Commit(order)).is_ok() {
                        commit.session = Some((waiter.backend_thread, done_rx));
                    }
                }
                commit.xid = Some(xid);
            }
            self.committer.send(commit);
        }
        Ok(())
    }

    /// Wait for the local commits handed over, then move the marker to them.
    pub async fn settle(&mut self) -> Result<(), ApplyError> {
        self.committer.drain().await;
        let result = self.write_marker(true).await;
        self.after_error(&result).await;
        result
    }

    /// Move the marker to the local commits once [`MARKER_EVERY`] has passed (or now).
    pub async fn write_marker(&mut self, now: bool) -> Result<(), ApplyError> {
        let Some((index, term)) = self.committer.through() else {
            return Ok(());
        };
        if self.applied.index.is_some_and(|a| a >= index)
            || (!now && self.marker_written.elapsed() < MARKER_EVERY)
        {
            return Ok(());
        }
        let conn = self.conn().await?;
        conn.query_drop(schema::update_applied(index, term, None))
            .await?;
        self.applied.index = Some(index);
        self.applied.term = term;
        self.marker_written = std::time::Instant::now();
        Ok(())
    }

    async fn finish_by_xid(&mut self, xid: &str, verb: &str) -> Result<(), ApplyError> {
        let conn = self.conn().await?;
        committer::finish_by_xid(conn, xid, verb).await?;
        Ok(())
    }

    /// A DDL or account statement from another node: run it alone.
    async fn apply_ddl(&mut self, item: Item) -> Result<(), ApplyError> {
        let Item::Entry { index, term, entry } = &item else {
            unreachable!("only entries are DDL");
        };
        let LogEntry::Ddl(ddl) = &**entry else {
            unreachable!("checked by the caller");
        };
        self.committer.drain().await;
        crate::failpoint::replay_delay(self.incarnation).await;
        let first_since_open = !self.ddl_since_open;
        self.ddl_since_open = true;
        let mut backoff = Duration::from_millis(10);
        loop {
            let mut script = Script::default();
            // Wait briefly for a local reader's metadata lock, then end that reader's
            // transaction instead (see `abort_blockers`), never for a day.
            script.push_plain(format!(
                "SET SESSION lock_wait_timeout = {}",
                DDL_LOCK_WAIT.as_secs()
            ));
            self.push_statement(&mut script, *index, &ddl.session, &ddl.statement);
            match self.run_script(script).await {
                Err(Failure::Transient(e)) if e.contains("1205") => {
                    tracing::warn!(index, error = %e, "a DDL waits for local transactions; ending them");
                    self.abort_blockers().await;
                    // A detached prepared transaction has no connection to kill.
                    if let Err(e) = self.sweep_prepared(*term).await {
                        tracing::warn!(error = %e, "cannot roll back orphaned transactions yet");
                    }
                }
                Ok(()) => break,
                Err(Failure::Diverged { reason, .. })
                    if first_since_open && is_already_done(&reason) =>
                {
                    tracing::info!(index, %reason, "DDL already applied before a restart");
                    break;
                }
                Err(Failure::Diverged { index, reason }) => {
                    self.reset().await;
                    return Err(self.diverged(index, reason));
                }
                Err(Failure::Transient(e)) => {
                    tracing::warn!(index, error = %e, "transient DDL error; retrying");
                    self.reset().await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        let conn = self.conn().await?;
        conn.query_drop(schema::update_applied(*index, *term, None))
            .await?;
        self.applied.index = Some(*index);
        self.applied.term = *term;
        Ok(())
    }

    /// End the local transactions that may hold a metadata lock a replayed DDL waits
    /// for: every open InnoDB transaction on this MariaDB but the applier's own and
    /// those of sessions waiting for their commit turn. On a node replaying another
    /// node's DDL those are readers; their clients get MariaDB's "connection killed"
    /// and may retry, where the alternative is replication stopping behind them.
    async fn abort_blockers(&mut self) {
        let mut spare: Vec<u32> = self.pending.backend_threads();
        let Ok(conn) = self.conn().await else { return };
        spare.push(conn.id());
        let threads: Vec<u64> = conn
            .query("SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX")
            .await
            .unwrap_or_default();
        for t in threads {
            if spare.iter().any(|s| u64::from(*s) == t) {
                continue;
            }
            tracing::warn!(
                thread = t,
                "killing a local connection whose transaction blocks a replayed DDL"
            );
            conn.query_drop(format!("KILL {t}")).await.ok();
        }
    }

    async fn conn(&mut self) -> Result<&mut Conn, ApplyError> {
        if self.conn.is_none() {
            let mut conn = Conn::new(self.opts.clone())
                .await
                .map_err(ApplyError::Connect)?;
            if self.connected_before {
                self.reconcile_prepared(&mut conn).await?;
            }
            // A replayed statement waiting on a lock fails soon, and is retried after
            // `sweep_prepared`, not after InnoDB's default 50 s.
            conn.query_drop(format!(
                "SET SESSION innodb_lock_wait_timeout = {}",
                REPLAY_LOCK_WAIT.as_secs()
            ))
            .await?;
            self.connected_before = true;
            self.conn = Some(conn);
            self.state = ConnState::default();
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// After the connection to MariaDB was lost (a restart of MariaDB, for one), the
    /// sessions that had prepared this node's transactions may be gone with it, and so
    /// may a rollback the applier had begun: every transaction of this node still
    /// prepared is tracked again as at start (`recover_prepared`). Its entry, met later,
    /// commits it; a later term without it rolls it back. Its term is at most the
    /// highest term in which this node opened a write transaction in this run (or,
    /// for one prepared before this run, the bound `recover_prepared` was given).
    async fn reconcile_prepared(&mut self, conn: &mut Conn) -> Result<(), ApplyError> {
        let prefix = TxnId {
            incarnation: self.incarnation,
            seq: 0,
        }
        .xid_prefix();
        let bound = self.pending.max_term().max(self.start_bound);
        let mut added = 0;
        for xid in prepared_xids(conn, &prefix).await? {
            if !self.recovered.iter().any(|(x, _)| *x == xid) {
                self.recovered.push((xid, bound));
                added += 1;
            }
        }
        if added > 0 {
            tracing::info!(
                count = added,
                bound,
                "after reconnecting: transactions of this node still prepared wait for their log entries"
            );
        }
        Ok(())
    }

    /// Drop the connection after a failure (rolling back whatever it had open).
    async fn reset(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.disconnect().await.ok();
        }
        self.state = ConnState::default();
    }
}

/// The xids prepared in this MariaDB that start with `prefix`.
async fn prepared_xids(conn: &mut Conn, prefix: &str) -> Result<Vec<String>, mysql_async::Error> {
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = conn.query("XA RECOVER").await?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, g, _, data)| {
            let xid = std::str::from_utf8(data.get(..usize::try_from(g).ok()?)?).ok()?;
            xid.starts_with(prefix).then(|| xid.to_string())
        })
        .collect())
}

/// Why a replay attempt failed.
enum Failure {
    Transient(String),
    Diverged { index: u64, reason: String },
}

/// MariaDB errors that say nothing about divergence: retry.
fn is_transient(code: u16) -> bool {
    matches!(
        code,
        1205 // lock wait timeout
            | 1213 // deadlock
            | 1021 | 1114 // disk full, table full
            | 1040 | 1053 | 2006 | 2013 // too many connections, shutdown, gone, lost
            | 1927 // connection killed
            | 1637 // too many active concurrent transactions
            | 4031 // client idle too long
    )
}

/// "Already exists" / "already gone" errors of a DDL.
fn is_already_done(reason: &str) -> bool {
    [
        "ERROR 1050",
        "ERROR 1007",
        "ERROR 1051",
        "ERROR 1008",
        "ERROR 1060",
        "ERROR 1061",
        "ERROR 1091",
        "ERROR 1396",
        "ERROR 1304",
        "ERROR 1305",
        "ERROR 1359",
        "ERROR 1360",
        "ERROR 4088",
    ]
    .iter()
    .any(|code| reason.starts_with(code))
}

fn classify_error(index: u64, sql: &str, e: mysql_async::Error) -> Failure {
    match &e {
        mysql_async::Error::Server(s) if is_transient(s.code) => Failure::Transient(e.to_string()),
        mysql_async::Error::Server(s) => Failure::Diverged {
            index,
            reason: format!(
                "ERROR {} ({}): {} in: {}",
                s.code,
                s.state,
                s.message,
                truncate(sql, 300)
            ),
        },
        // Driver, I/O and protocol failures: the connection, not the entry.
        _ => Failure::Transient(e.to_string()),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A statement whose outcome is compared with the leader's.
struct Check {
    index: u64,
    sql: String,
    params: Option<Vec<Value>>,
    expect: entry::RowCounts,
}

enum Part {
    Plain(String),
    Checked(Check),
}

/// The statements of one replay attempt, in order.
#[derive(Default)]
struct Script {
    parts: Vec<Part>,
}

enum Chunk {
    /// Text statements sent as one multi-statement query.
    Text(Vec<Part>),
    /// A statement with typed parameters, run as a prepared statement.
    Prepared(Check),
}

impl Script {
    fn push_plain(&mut self, sql: String) {
        self.parts.push(Part::Plain(sql));
    }

    fn push_checked(&mut self, check: Check) {
        self.parts.push(Part::Checked(check));
    }

    /// Group into round trips: text statements together up to [`ROUND_TRIP_BYTES`],
    /// prepared ones alone.
    fn chunks(self) -> Vec<Chunk> {
        let mut out = Vec::new();
        let mut text: Vec<Part> = Vec::new();
        let mut bytes = 0;
        for part in self.parts {
            match part {
                Part::Checked(c) if c.params.is_some() => {
                    if !text.is_empty() {
                        out.push(Chunk::Text(std::mem::take(&mut text)));
                        bytes = 0;
                    }
                    out.push(Chunk::Prepared(c));
                }
                other => {
                    let len = match &other {
                        Part::Plain(s) => s.len(),
                        Part::Checked(c) => c.sql.len(),
                    };
                    if bytes + len > ROUND_TRIP_BYTES && !text.is_empty() {
                        out.push(Chunk::Text(std::mem::take(&mut text)));
                        bytes = 0;
                    }
                    bytes += len + 1;
                    text.push(other);
                }
            }
        }
        if !text.is_empty() {
            out.push(Chunk::Text(text));
        }
        out
    }
}

/// Send text statements in one query and check each result in turn.
async fn run_text(conn: &mut Conn, parts: &[Part]) -> Result<(), Failure> {
    let sql: Vec<&str> = parts
        .iter()
        .map(|p| match p {
            Part::Plain(s) => s.as_str(),
            Part::Checked(c) => c.sql.as_str(),
        })
        .collect();
    let payload = sql.join(";\n");
    let first_index = parts
        .iter()
        .find_map(|p| match p {
            Part::Checked(c) => Some(c.index),
            Part::Plain(_) => None,
        })
        .unwrap_or(0);
    let mut result = match conn.query_iter(payload).await {
        Ok(r) => r,
        Err(e) => return Err(classify_error(first_index, sql[0], e)),
    };
    for (i, part) in parts.iter().enumerate() {
        let returns_rows = result.columns().is_some_and(|c| !c.is_empty());
        let affected = result.affected_rows();
        let info = result.info().into_owned();
        let drained: Result<Vec<mysql_async::Row>, _> = result.collect().await;
        let rows = match drained {
            Ok(rows) => rows.len() as u64,
            Err(e) => {
                let index = match part {
                    Part::Checked(c) => c.index,
                    Part::Plain(_) => first_index,
                };
                return Err(classify_error(index, sql[i], e));
            }
        };
        if let Part::Checked(c) = part {
            compare_counts(c, counted(returns_rows, affected, rows), &info)?;
        }
    }
    Ok(())
}

async fn run_prepared(conn: &mut Conn, check: &Check) -> Result<(), Failure> {
    let params: Vec<mysql_async::Value> = check
        .params
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(to_driver_value)
        .collect();
    let mut result = conn
        .exec_iter(check.sql.as_str(), params)
        .await
        .map_err(|e| classify_error(check.index, &check.sql, e))?;
    let returns_rows = result.columns().is_some_and(|c| !c.is_empty());
    let affected = result.affected_rows();
    let info = result.info().into_owned();
    let rows: Vec<mysql_async::Row> = result
        .collect()
        .await
        .map_err(|e| classify_error(check.index, &check.sql, e))?;
    compare_counts(
        check,
        counted(returns_rows, affected, rows.len() as u64),
        &info,
    )
}

/// What a statement changed, counted as the leader counts it: a write that returned
/// rows (`… RETURNING`) by the rows it returned, any other by its affected rows.
fn counted(returns_rows: bool, affected: u64, rows: u64) -> u64 {
    if returns_rows {
        rows
    } else {
        affected
    }
}

fn compare_counts(c: &Check, affected: u64, info: &str) -> Result<(), Failure> {
    let matched = parse_matched(info);
    let same = match (c.expect.matched, matched) {
        // UPDATE: both counts are known, whatever CLIENT_FOUND_ROWS the leader had.
        (Some(want), Some(got)) => want == got && c.expect.affected == affected,
        _ => c.expect.affected == affected,
    };
    if same {
        return Ok(());
    }
    Err(Failure::Diverged {
        index: c.index,
        reason: format!(
            "row counts differ from the leader's: leader affected {} (matched {:?}), here {affected} (matched {matched:?}) in: {}",
            c.expect.affected,
            c.expect.matched,
            truncate(&c.sql, 300)
        ),
    })
}

/// `Rows matched: N  Changed: M  Warnings: W` → N.
pub fn parse_matched(info: &str) -> Option<u64> {
    info.strip_prefix("Rows matched: ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The statement text with its session variables and pins in `SET STATEMENT … FOR`,
/// which sets them for this one statement without a statement of its own (so they
/// cannot leak into the next one).
pub fn pinned_statement(session: &SessionVars, st: &Statement) -> String {
    let mut sets: Vec<String> = session
        .vars
        .iter()
        .filter(|(name, _)| is_ident(name))
        .map(|(name, v)| format!("{name}={}", v.literal()))
        .collect();
    let p = &st.pins;
    if p.timestamp_us != 0 {
        let secs = p.timestamp_us.div_euclid(1_000_000);
        let micros = p.timestamp_us.rem_euclid(1_000_000);
        sets.push(format!("timestamp={secs}.{micros:06}"));
    }
    if p.rand_seed1 != 0 || p.rand_seed2 != 0 {
        sets.push(format!("rand_seed1={}", p.rand_seed1));
        sets.push(format!("rand_seed2={}", p.rand_seed2));
    }
    if let Some(v) = p.insert_id {
        sets.push(format!("insert_id={v}"));
    }
    if let Some(v) = p.last_insert_id {
        sets.push(format!("last_insert_id={v}"));
    }
    if sets.is_empty() {
        st.sql.clone()
    } else {
        format!("SET STATEMENT {} FOR {}", sets.join(", "), st.sql)
    }
}

/// A prepared-statement parameter as a literal that MariaDB reads exactly as it reads
/// the parameter, or `None` when there is no such literal here. Numbers and NULL always
/// have one. A string parameter is text in the connection's character set with the
/// connection's collation and coercible derivation; `_charset X'…'` is the same only when
/// that collation is the character set's default (and the bytes are valid in it).
/// Dates and times are left prepared (a literal would not carry the parameter's type).
fn inline_literal(v: &Value, session: &SessionVars) -> Option<String> {
    match v {
        Value::Null | Value::Int(_) | Value::UInt(_) | Value::Double(_) => Some(v.literal()),
        Value::Float(f) => Some(Value::Double(f64::from(*f)).literal()),
        Value::Bytes(b) => {
            let default = match session.charset.as_str() {
                "utf8mb4" => "utf8mb4_general_ci",
                "utf8mb3" | "utf8" => "utf8mb3_general_ci",
                "latin1" => "latin1_swedish_ci",
                "ascii" => "ascii_general_ci",
                "binary" => "binary",
                _ => return None,
            };
            let valid = match session.charset.as_str() {
                "utf8mb4" => std::str::from_utf8(b).is_ok(),
                "utf8mb3" | "utf8" => {
                    std::str::from_utf8(b).is_ok_and(|s| s.chars().all(|c| c.len_utf8() < 4))
                }
                "ascii" => b.is_ascii(),
                _ => true,
            };
            (session.collation == default && valid)
                .then(|| Value::Text(session.charset.clone(), b.clone()).literal())
        }
        Value::Text(..) | Value::Decimal(_) | Value::Date(..) | Value::Time(..) => None,
    }
}

fn to_driver_value(v: &Value) -> mysql_async::Value {
    use mysql_async::Value as V;
    match v {
        Value::Null => V::NULL,
        Value::Int(i) => V::Int(*i),
        Value::UInt(u) => V::UInt(*u),
        Value::Float(f) => V::Float(*f),
        Value::Double(d) => V::Double(*d),
        Value::Bytes(b) | Value::Text(_, b) => V::Bytes(b.clone()),
        Value::Decimal(d) => V::Bytes(d.clone().into_bytes()),
        Value::Date(y, mo, d, h, mi, s, us) => V::Date(*y, *mo, *d, *h, *mi, *s, *us),
        Value::Time(neg, days, h, mi, s, us) => V::Time(*neg, *days, *h, *mi, *s, *us),
    }
}

/// A plain identifier: letters, digits, `_`, `$` (no quoting needed or possible).
fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

/// Backquote an identifier.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use entry::{Pins, RowCounts};

    #[test]
    fn parameters_are_inlined_only_where_the_literal_means_the_same() {
        let session = |charset: &str, collation: &str| SessionVars {
            charset: charset.into(),
            collation: collation.into(),
            vars: vec![],
        };
        let utf8 = session("utf8mb4", "utf8mb4_general_ci");
        assert_eq!(
            inline_literal(&Value::Int(-3), &utf8).as_deref(),
            Some("-3")
        );
        assert_eq!(inline_literal(&Value::Null, &utf8).as_deref(), Some("NULL"));
        assert_eq!(
            inline_literal(&Value::Bytes(b"a'b".to_vec()), &utf8).as_deref(),
            Some("_utf8mb4 X'612762'")
        );
        // A FLOAT parameter is the float's exact value.
        let f = inline_literal(&Value::Float(0.1), &utf8).unwrap();
        assert_eq!(f.parse::<f64>().unwrap(), f64::from(0.1f32));
        // Another collation, invalid bytes, dates: left prepared.
        let bin = session("utf8mb4", "utf8mb4_bin");
        assert_eq!(inline_literal(&Value::Bytes(b"a".to_vec()), &bin), None);
        assert_eq!(inline_literal(&Value::Bytes(vec![0xFF]), &utf8), None);
        assert_eq!(
            inline_literal(&Value::Date(2024, 1, 2, 0, 0, 0, 0), &utf8),
            None
        );
        assert_eq!(
            inline_literal(
                &Value::Bytes(vec![0xE9]),
                &session("latin1", "latin1_swedish_ci")
            )
            .as_deref(),
            Some("_latin1 X'E9'")
        );
    }

    fn st(sql: &str) -> Statement {
        Statement {
            db: None,
            sql: sql.into(),
            params: None,
            pins: Pins::default(),
            user_vars: vec![],
            expect: RowCounts::default(),
        }
    }

    #[test]
    fn pins_go_into_set_statement() {
        let mut s = st("INSERT INTO t VALUES (NOW(6), RAND())");
        s.pins = Pins {
            timestamp_us: 1_700_000_000_000_042,
            rand_seed1: 5,
            rand_seed2: 6,
            insert_id: Some(10),
            last_insert_id: None,
        };
        let session = SessionVars {
            vars: vec![
                (
                    "sql_mode".into(),
                    Value::Text("utf8mb4".into(), b"STRICT_ALL_TABLES".to_vec()),
                ),
                ("bad name".into(), Value::Int(1)),
            ],
            ..SessionVars::default()
        };
        assert_eq!(
            pinned_statement(&session, &s),
            "SET STATEMENT sql_mode=_utf8mb4 X'5354524943545F414C4C5F5441424C4553', \
             timestamp=1700000000.000042, rand_seed1=5, rand_seed2=6, insert_id=10 \
             FOR INSERT INTO t VALUES (NOW(6), RAND())"
        );
        assert_eq!(
            pinned_statement(&SessionVars::default(), &st("DELETE FROM t")),
            "DELETE FROM t"
        );
    }

    #[test]
    fn matched_rows_from_info() {
        assert_eq!(
            parse_matched("Rows matched: 3  Changed: 2  Warnings: 0"),
            Some(3)
        );
        assert_eq!(
            parse_matched("Records: 2  Duplicates: 0  Warnings: 0"),
            None
        );
        assert_eq!(parse_matched(""), None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert!(is_ident("utf8mb4_general_ci"));
        assert!(!is_ident("x; DROP"));
    }
}
