//! The leader's write path: every write runs in an XA transaction on the leader's
//! MariaDB with its context pinned; at COMMIT (or the end of an autocommit write) its
//! statements become one log entry; the client is answered once a majority holds the
//! entry and the applier has had the session commit it, in log order.
//!
//! # The session's transaction state
//! ```text
//!            BEGIN / first write / first statement with autocommit=0
//!   Idle ───────────────────────────────────────────────────────────▶ Xa
//!    ▲  ▲                                                             │
//!    │  └──── COMMIT: XA END, XA PREPARE, append, wait, XA COMMIT ◀───┤
//!    │       ROLLBACK / deadlock / lost leadership: XA ROLLBACK ◀─────┘
//!    │
//!    └── START TRANSACTION READ ONLY ──▶ Plain (passed through, never logged)
//! ```
//! An autocommit write is an `Xa` the proxy opens and closes around that one statement
//! (`implicit`); its reply is held until the commit and its status flags are those of
//! an autocommit statement.
//!
//! # Why XA
//! Inside XA, MariaDB refuses COMMIT and implicit commits (a procedure's own COMMIT,
//! DDL): nothing can commit behind the log's back. A PREPARED transaction keeps its
//! locks across a lost connection or a restart, so the locks that make log order a
//! valid execution order cannot vanish between the append and the commit; and the xid
//! is the per-transaction exactly-once marker (see [`crate::apply`]).
//!
//! # DDL and account statements
//! They cannot be rolled back, and they must run with the client's privileges. So on
//! the leader they run first, on the client's own connection (MariaDB checks the
//! privileges), and are logged once they succeeded; a fence keeps any transaction
//! whose statements ran after the DDL began from being logged before it. A durable
//! intent record before the DDL runs lets a node that crashed in between notice that
//! its MariaDB may be ahead of the log (see `Cluster::ddl_intent`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};

use super::order::{ProposalOrder, Ticket};
use super::session::{Flow, Session, SessionError};
use crate::apply::entry::{Ddl, Pins, RowCounts, SessionVars, Statement, Txn, Value};
use crate::apply::{self, LogEntry, Turn, TxnId, Waiter};
use crate::cluster::{Cluster, ProposeError};
use crate::protocol::command::COM_QUERY;
use crate::protocol::packet::{encode_packet, Reader};
use crate::protocol::response::{
    Expect, Outcome, SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS,
};
use crate::protocol::{Packet, ServerError};
use crate::sql::{Classification, StatementClass, TxnEffect};

/// Session variables whose values a replay must reproduce.
const PINNED_VARS: &[&str] = &[
    "sql_mode",
    "time_zone",
    "foreign_key_checks",
    "unique_checks",
    "auto_increment_increment",
    "auto_increment_offset",
    "div_precision_increment",
    "group_concat_max_len",
    "lc_time_names",
    "explicit_defaults_for_timestamp",
    "check_constraint_checks",
    "sql_auto_is_null",
];
/// Longest a DDL may wait for metadata locks on the leader.
const DDL_LOCK_WAIT_S: u32 = 10;
/// How long a COMMIT waits for the applier's verdict on its log entry (quorum and the
/// applier's turn) before the client is told the outcome is unknown.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a COMMIT keeps waiting once this node no longer takes writes (deposed, or
/// cut off from a majority): a healthy cluster settles an entry well within it, and a
/// leader on the minority side of a partition could wait for the whole partition.
const DEPOSED_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The applier's verdict on a prepared transaction's entry, waited for up to
/// [`COMMIT_WAIT`], or [`DEPOSED_WAIT`] once `writable` has stayed false that long.
async fn wait_verdict(
    mut order: oneshot::Receiver<Turn>,
    writable: impl Fn() -> bool,
) -> Result<Turn, &'static str> {
    let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
    let mut deposed_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            turn = &mut order => return turn.map_err(|_| "the applier dropped the order"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
        let now = tokio::time::Instant::now();
        if writable() {
            deposed_since = None;
        } else if now.duration_since(*deposed_since.get_or_insert(now)) >= DEPOSED_WAIT {
            return Err("this node stopped taking writes");
        }
        if now >= deadline {
            return Err("timed out");
        }
    }
}

/// Node-wide sequencer state, shared by all sessions.
pub struct Sequencing {
    /// Pinned timestamps never go backwards (µs since the epoch).
    clock: AtomicI64,
    /// Transaction counter of this node's producer id.
    seq: AtomicU64,
    /// A DDL in progress: when it started, and a flag raised once it is appended.
    ddl: Mutex<Option<(Instant, watch::Receiver<bool>)>>,
    ddl_turn: tokio::sync::Mutex<()>,
    /// Prepared transactions are proposed in the order they started to prepare.
    order: Arc<ProposalOrder>,
}

impl Default for Sequencing {
    fn default() -> Self {
        Sequencing {
            clock: AtomicI64::new(0),
            // Counting from the clock keeps ids of this producer unique across restarts.
            seq: AtomicU64::new(now_us() as u64),
            ddl: Mutex::new(None),
            ddl_turn: tokio::sync::Mutex::new(()),
            order: Arc::default(),
        }
    }
}

impl Sequencing {
    /// A timestamp for the next statement: the clock, but above the last one this
    /// node pinned and the last one applied from the log (`floor`, set by an earlier
    /// leader whose clock may be ahead of ours).
    fn timestamp(&self, floor: i64) -> i64 {
        let now = now_us().max(floor + 1);
        let mut last = self.clock.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .clock
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    fn next_id(&self, rep: &dyn super::replicate::Replicator) -> TxnId {
        TxnId {
            incarnation: rep.incarnation(),
            seq: rep.seq_base() + self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Wait if a DDL started before this transaction's last statement and is not
    /// logged yet, so the transaction is logged after it.
    async fn wait_for_ddl(&self, last_statement: Instant) {
        let pending = self.ddl.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((started, mut logged)) = pending {
            if last_statement >= started {
                logged.wait_for(|l| *l).await.ok();
            }
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The session's transaction, as the sequencer sees it (see the module doc).
#[derive(Default)]
pub enum TxnState {
    #[default]
    Idle,
    Plain,
    Xa(XaTxn),
}

pub struct XaTxn {
    pub id: TxnId,
    pub term: u64,
    /// Opened by the proxy around one autocommit statement.
    pub implicit: bool,
    pub statements: Vec<Statement>,
    pub savepoints: Vec<(String, usize)>,
    pub vars: SessionVars,
    pub last_statement: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The term in which this node may write. A node just elected leader that is still
    /// applying its predecessors' entries (fencing, see `Cluster::writable_term`) holds
    /// the statement until it may, up to `[proxy] failover_wait_ms`, rather than
    /// refusing it: the follower that sent it would only send it back.
    async fn writable_term(&self, rep: &super::replicate::SharedReplicator) -> Option<u64> {
        if let Some(term) = rep.writable_term() {
            return Some(term);
        }
        if rep.leader().is_some_and(|m| m.id == rep.me().id) {
            return rep.wait_writable(self.shared.failover_wait).await;
        }
        None
    }
}

/// Why the sequencer refuses a statement.
fn refusal(code: u16, state: &'static str, msg: impl Into<String>) -> ServerError {
    ServerError::new(code, state, msg)
}

/// In the refusal of a node that is not the leader; a follower's router that meets it
/// on its link knows the statement did not run, and holds it for the next leader.
pub(super) const NOT_LEADER_TEXT: &str = "is not the leader and does not run writes";

pub(super) fn not_leader_refusal(leader: Option<crate::cluster::Member>, me: &str) -> ServerError {
    let where_ = match leader {
        Some(m) => format!("the leader is {} (MySQL port {})", m.id, m.proxy_addr),
        None => "no leader is known right now; retry shortly".into(),
    };
    refusal(
        1290,
        "HY000",
        format!("WolfScale node {me} {NOT_LEADER_TEXT}: {where_}"),
    )
}

/// Whether a statement must run on the leader (it changes data or schema).
fn needs_leader(class: &Classification) -> bool {
    matches!(class.class, StatementClass::Write | StatementClass::Ddl)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A COM_QUERY on a node that is part of a cluster.
    pub(super) async fn sequenced_query(
        &mut self,
        p: &Packet,
        text: &str,
        class: Classification,
    ) -> Result<Flow, SessionError> {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return self.forward(p, Some(Expect::Query)).await;
        };
        // ROW_COUNT() right after an autocommit write: the write's count, which the XA
        // statements that committed it replaced on the backend.
        if let Some(n) = self.row_count.take() {
            if let Some(sql) = crate::sql::replace_call(text, "ROW_COUNT", &n.to_string()) {
                let mut payload = Vec::with_capacity(1 + sql.len());
                payload.push(COM_QUERY);
                payload.extend_from_slice(sql.as_bytes());
                let mut raw = BytesMut::new();
                encode_packet(&mut raw, 0, &payload);
                let pinned = Packet {
                    seq: 0,
                    last_seq: 0,
                    payload: payload.into(),
                    raw: raw.freeze(),
                    reservation: None,
                };
                return Box::pin(self.sequenced_query(&pinned, &sql, class)).await;
            }
        }
        let term = self.writable_term(&rep).await;
        // A transaction of a term this node no longer leads cannot go on.
        if let TxnState::Xa(x) = &self.txn {
            if term != Some(x.term) {
                self.abort_xa().await?;
                let err = refusal(
                    1180,
                    "HY000",
                    "The transaction was rolled back: this WolfScale node stopped being the leader",
                );
                self.reply_err(p.last_seq, err).await?;
                return Ok(Flow::Continue);
            }
        }
        if needs_leader(&class)
            && std::str::from_utf8(p.payload.get(1..).unwrap_or_default()).is_err()
        {
            // The log and the rewriting work on text: bytes that are not UTF-8 (a latin1
            // client's 'café') would not reach the other nodes unchanged.
            let err = refusal(
                1235,
                "42000",
                "WolfScale replicates write statements whose text is valid UTF-8 only: this one is \
                 not (a latin1 or other 8-bit client?); connect with utf8mb4, or write the \
                 non-ASCII values as hex literals (_latin1 X'...')",
            );
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        if let Some(err) = self.refuse_dynamic_sql(text).await? {
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        if let Some(flow) = self.temporary_tables(p, text, &class, term).await? {
            return Ok(flow);
        }
        let Some(term) = term else {
            if needs_leader(&class) {
                let err = not_leader_refusal(rep.leader(), &rep.me().id);
                self.reply_err(p.last_seq, err).await?;
                return Ok(Flow::Continue);
            }
            return self.forward(p, Some(Expect::Query)).await;
        };
        if crate::sql::classify_each(text).len() > 1
            && (needs_leader(&class) || class.txn != TxnEffect::None)
        {
            let err = refusal(
                1235,
                "42000",
                "WolfScale does not run writes or transaction statements in multi-statement queries yet: send them one by one",
            );
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        if class.class == StatementClass::Session {
            self.vars = None;
        }
        match (class.class, class.txn) {
            (_, TxnEffect::Begin) if is_client_xa(text) || is_client_xa_any(text) => {
                self.refuse_client_xa(p).await
            }
            (StatementClass::Transaction, _) if is_client_xa_any(text) => {
                self.refuse_client_xa(p).await
            }
            (StatementClass::Transaction, TxnEffect::Begin) => self.begin(p, text, term).await,
            (StatementClass::Transaction, TxnEffect::Commit) => self.commit(p, text).await,
            (StatementClass::Transaction, TxnEffect::Rollback) => self.rollback(p).await,
            (StatementClass::Transaction, TxnEffect::Savepoint) => self.savepoint(p, text).await,
            (StatementClass::Ddl, _) => self.ddl(p, text, term).await,
            (StatementClass::Write, _) => {
                let flow = self.write(p, text, &class, term).await;
                if crate::sql::may_call(text) {
                    // A procedure may have set session variables: read them again
                    // before the next transaction is logged.
                    self.vars = None;
                }
                flow
            }
            _ => {
                if class.txn == TxnEffect::ImplicitCommit && matches!(self.txn, TxnState::Xa(_)) {
                    // LOCK TABLES, FLUSH, ANALYZE…: MariaDB commits first; so do we.
                    if let Err(e) = self.commit_xa().await {
                        self.reply_err(p.last_seq, e).await?;
                        return Ok(Flow::Continue);
                    }
                }
                if self.autocommit_off() && matches!(self.txn, TxnState::Idle) && starts_txn(&class)
                {
                    self.open_xa(term, false).await?;
                }
                let flow = self.forward(p, Some(Expect::Query)).await?;
                self.track_plain();
                Ok(flow)
            }
        }
    }

    async fn refuse_client_xa(&mut self, p: &Packet) -> Result<Flow, SessionError> {
        let err = refusal(
            1235,
            "42000",
            "XA transactions of the client's own are not supported through WolfScale (it runs every write transaction as XA itself)",
        );
        self.reply_err(p.last_seq, err).await?;
        Ok(Flow::Continue)
    }

    fn autocommit_off(&self) -> bool {
        self.status & SERVER_STATUS_AUTOCOMMIT == 0
    }

    /// After a passed-through statement: a transaction the proxy did not open.
    fn track_plain(&mut self) {
        let in_trans = self.status & SERVER_STATUS_IN_TRANS != 0;
        match (&self.txn, in_trans) {
            (TxnState::Idle, true) => self.txn = TxnState::Plain,
            (TxnState::Plain, false) => self.txn = TxnState::Idle,
            _ => {}
        }
    }

    /// BEGIN / START TRANSACTION: an XA transaction instead (READ ONLY ones pass).
    async fn begin(&mut self, p: &Packet, text: &str, term: u64) -> Result<Flow, SessionError> {
        let upper = text.to_ascii_uppercase();
        if upper.contains("READ ONLY") || !upper.trim_start().starts_with(['B', 'S']) {
            // START TRANSACTION READ ONLY, or SET autocommit = 0 (a session statement).
            self.vars = None;
            let flow = self.forward(p, Some(Expect::Query)).await?;
            self.track_plain();
            return Ok(flow);
        }
        if matches!(self.txn, TxnState::Xa(_)) {
            // BEGIN inside a transaction commits it first.
            if let Err(e) = self.commit_xa().await {
                self.reply_err(p.last_seq, e).await?;
                return Ok(Flow::Continue);
            }
        }
        if matches!(self.txn, TxnState::Plain) {
            return self.forward(p, Some(Expect::Query)).await;
        }
        if let Some(err) = self.weak_isolation_refusal().await? {
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        let mut ok = self.open_xa(term, false).await?;
        if let Some(warned) = self.isolation_warning().await? {
            ok = warned;
        }
        self.send_held(p.last_seq, &ok, None).await?;
        Ok(Flow::Continue)
    }

    /// With `proxy.refuse_weak_isolation`, the refusal of a write transaction in a
    /// session below REPEATABLE READ.
    async fn weak_isolation_refusal(&mut self) -> Result<Option<ServerError>, SessionError> {
        if !self.shared.refuse_weak_isolation {
            return Ok(None);
        }
        self.session_vars().await?;
        if !self.isolation.starts_with("READ-") {
            return Ok(None);
        }
        Ok(Some(refusal(
            1235,
            "42000",
            format!(
                "WolfScale runs write transactions at REPEATABLE READ and this node refuses weaker \
                 levels (proxy.refuse_weak_isolation); this session is at {}: SET SESSION \
                 TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                self.isolation
            ),
        )))
    }

    /// The first time a session's write transaction is raised to REPEATABLE READ, a
    /// warning the client can read with SHOW WARNINGS; the OK packet that carries it.
    async fn isolation_warning(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        if self.isolation_warned || !self.isolation.starts_with("READ-") {
            return Ok(None);
        }
        let sql = format!(
            "SIGNAL SQLSTATE '01000' SET MESSAGE_TEXT = 'WolfScale runs write transactions at \
             REPEATABLE READ (this session is at {}): statement replay needs its locks'",
            self.isolation
        );
        match self.internal(&sql).await? {
            Internal::Ok(ok) => {
                self.isolation_warned = true;
                Ok(Some(ok))
            }
            Internal::Err(e) => {
                tracing::debug!(error = %e, "cannot raise the isolation warning");
                Ok(None)
            }
        }
    }

    /// `XA START` on the backend; the OK packet it answered.
    async fn open_xa(&mut self, term: u64, implicit: bool) -> Result<Vec<u8>, SessionError> {
        let vars = self.session_vars().await?;
        if self.isolation.starts_with("READ-") {
            // Statement replay needs gap locks and locking reads (ARCHITECTURE §2).
            self.internal("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await?;
        }
        let rep = self
            .shared
            .replicator
            .get()
            .cloned()
            .expect("cluster session");
        let id = self.shared.sequencing.next_id(&*rep);
        let reply = self.internal(&format!("XA START '{}'", id.xid())).await?;
        let ok = match reply {
            Internal::Ok(ok) => ok,
            Internal::Err(e) => {
                return Err(SessionError::Internal(format!("XA START failed: {e}")))
            }
        };
        rep.pending().opened(id, term, self.backend.thread_id);
        self.txn = TxnState::Xa(XaTxn {
            id,
            term,
            implicit,
            statements: Vec::new(),
            savepoints: Vec::new(),
            vars,
            last_statement: Instant::now(),
        });
        Ok(ok)
    }

    /// The timestamp to pin on the next logged statement.
    fn pin_timestamp(&self) -> i64 {
        let floor = self
            .shared
            .replicator
            .get()
            .map_or(0, |rep| rep.pending().timestamp_floor());
        self.shared.sequencing.timestamp(floor)
    }

    /// A data-changing statement.
    async fn write(
        &mut self,
        p: &Packet,
        text: &str,
        class: &Classification,
        term: u64,
    ) -> Result<Flow, SessionError> {
        if matches!(self.txn, TxnState::Plain) {
            // A READ ONLY transaction: MariaDB gives its own refusal.
            return self.forward(p, Some(Expect::Query)).await;
        }
        if let Err(e) = self.shared.catalog.refresh_for_term(term).await {
            let err = refusal(
                1030,
                "HY000",
                format!("WolfScale cannot read the table engines of this node's MariaDB: {e}"),
            );
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        if let Some(err) = self.refuse_write(text) {
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        let sql = match self.pin_functions(text, class.class) {
            Ok(s) => s,
            Err(why) => {
                let err = refusal(
                    1592,
                    "HY000",
                    format!(
                        "WolfScale cannot replicate this statement deterministically ({why}); \
                         rewrite it without that construct"
                    ),
                );
                self.reply_err(p.last_seq, err).await?;
                return Ok(Flow::Continue);
            }
        };
        let Some(implicit) = self.open_write(p, term).await? else {
            return Ok(Flow::Continue);
        };
        let started = Instant::now();
        let (pins, user_vars) = self.pins_for(&sql).await?;
        // LAST_INSERT_ID is pinned for the replay only: here the session already holds
        // that value, and SET STATEMENT would restore it after the statement, losing
        // what `LAST_INSERT_ID(expr)` or a generated id set for the client.
        let sent = with_pins(
            &sql,
            &Pins {
                last_insert_id: None,
                ..pins
            },
        );
        let mut raw = BytesMut::new();
        super::session::encode_query(&mut raw, &sent);
        self.send_backend(&raw).await?;
        let (outcome, held) = if implicit {
            let (o, bytes) = self.collect_reply(Expect::Query).await?;
            (o, Some(bytes))
        } else {
            (self.relay(Expect::Query).await?, None)
        };
        let written = Written {
            sql,
            params: None,
            pins,
            user_vars,
            started,
        };
        self.finish_write(p, outcome, held, written).await
    }

    /// Before a write statement: refuse a weak isolation level when configured to, and
    /// open the XA transaction when none is open. `None`: refused (the client has its
    /// error); else whether the transaction is an implicit one around this statement.
    async fn open_write(&mut self, p: &Packet, term: u64) -> Result<Option<bool>, SessionError> {
        let implicit = matches!(self.txn, TxnState::Idle) && !self.autocommit_off();
        if matches!(self.txn, TxnState::Idle) {
            if let Some(err) = self.weak_isolation_refusal().await? {
                self.reply_err(p.last_seq, err).await?;
                return Ok(None);
            }
            self.open_xa(term, implicit).await?;
        } else if self.vars.is_none() && matches!(self.txn, TxnState::Xa(_)) {
            // A SET (or a CALL) since the transaction began: its entry carries one set
            // of session variables, so they may change only before its first write.
            let vars = self.session_vars().await?;
            if let TxnState::Xa(x) = &mut self.txn {
                if x.vars != vars {
                    if x.statements.is_empty() {
                        x.vars = vars;
                    } else {
                        let err = refusal(
                            1235,
                            "42000",
                            "WolfScale cannot replicate a transaction whose session variables (sql_mode, \
                             time_zone, foreign_key_checks, ...) change after its first write: set them \
                             before the transaction's first write, or commit first",
                        );
                        self.reply_err(p.last_seq, err).await?;
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(implicit))
    }

    /// The pins and user variables a write statement runs with.
    async fn pins_for(&mut self, sql: &str) -> Result<(Pins, Vec<(String, Value)>), SessionError> {
        let mut pins = Pins {
            timestamp_us: self.pin_timestamp(),
            ..Pins::default()
        };
        let upper = sql.to_ascii_uppercase();
        if upper.contains("RAND") {
            pins.rand_seed1 = rand::random::<u32>() >> 2;
            pins.rand_seed2 = rand::random::<u32>() >> 2;
        }
        if upper.contains("LAST_INSERT_ID") {
            pins.last_insert_id = self.scalar_u64("SELECT @@last_insert_id").await?;
        }
        let user_vars = self.user_vars_of(sql).await?;
        Ok((pins, user_vars))
    }

    /// After a write statement ran: a failure ends it as MariaDB would; a success joins
    /// the transaction's entry; an autocommit statement (its reply `held`) is committed
    /// now and answered with its own reply as an autocommit client sees it. (Its
    /// warnings stay MariaDB's to list: the XA statements use no table, so they do not
    /// reset them.)
    async fn finish_write(
        &mut self,
        p: &Packet,
        outcome: Outcome,
        held: Option<Vec<u8>>,
        written: Written,
    ) -> Result<Flow, SessionError> {
        if let Some(code) = outcome.error {
            self.statement_failed(code).await?;
            if let Some(bytes) = held {
                self.client
                    .write_raw(&bytes)
                    .await
                    .map_err(SessionError::Client)?;
                self.client.flush().await.map_err(SessionError::Client)?;
            }
            return Ok(Flow::Continue);
        }
        let db = self.current_db();
        if let TxnState::Xa(x) = &mut self.txn {
            let mut pins = written.pins;
            pins.insert_id = (outcome.last_insert_id > 0).then_some(outcome.last_insert_id);
            x.statements.push(Statement {
                db,
                sql: written.sql,
                params: written.params,
                pins,
                user_vars: written.user_vars,
                expect: expected_counts(&outcome),
            });
            x.last_statement = written.started;
        }
        let Some(mut held) = held else {
            return Ok(Flow::Continue);
        };
        if outcome.warnings == 0 && self.isolation_warning().await?.is_some() {
            // The statement had no warning of its own to lose: the client can read ours.
            held = bump_warnings(&held);
        }
        match self.commit_xa().await {
            Ok(_) => {
                // ROW_COUNT() after a statement that returned rows is -1, as MariaDB says.
                self.row_count = if outcome.result_set {
                    Some(-1)
                } else {
                    i64::try_from(outcome.affected_rows).ok()
                };
                let patched = patch_status(&held, self.status);
                self.client
                    .write_raw(&patched)
                    .await
                    .map_err(SessionError::Client)?;
                self.client.flush().await.map_err(SessionError::Client)?;
            }
            Err(e) => self.reply_err(p.last_seq, e).await?,
        }
        Ok(Flow::Continue)
    }

    /// A statement of an XA transaction failed. Most errors roll back only the
    /// statement; a deadlock or a lock wait that rolls back everything ends it.
    async fn statement_failed(&mut self, code: u16) -> Result<(), SessionError> {
        let implicit = matches!(&self.txn, TxnState::Xa(x) if x.implicit);
        let whole = matches!(code, 1213 | 1614 | 1402);
        if implicit || whole {
            self.abort_xa().await?;
        }
        Ok(())
    }

    /// COMMIT: the collected statements go into the log.
    async fn commit(&mut self, p: &Packet, text: &str) -> Result<Flow, SessionError> {
        if !matches!(self.txn, TxnState::Xa(_)) {
            let flow = self.forward(p, Some(Expect::Query)).await?;
            self.track_plain();
            return Ok(flow);
        }
        let chain = text.to_ascii_uppercase().contains("CHAIN")
            && !text.to_ascii_uppercase().contains("NO CHAIN");
        let term = match &self.txn {
            TxnState::Xa(x) => x.term,
            _ => unreachable!(),
        };
        match self.commit_xa().await {
            Ok(ok) => {
                let ok = if chain {
                    self.open_xa(term, false).await?
                } else {
                    ok
                };
                self.send_held(p.last_seq, &ok, None).await?;
            }
            Err(e) => self.reply_err(p.last_seq, e).await?,
        }
        Ok(Flow::Continue)
    }

    /// ROLLBACK: nothing is logged.
    async fn rollback(&mut self, p: &Packet) -> Result<Flow, SessionError> {
        if !matches!(self.txn, TxnState::Xa(_)) {
            let flow = self.forward(p, Some(Expect::Query)).await?;
            self.track_plain();
            return Ok(flow);
        }
        let ok = self.abort_xa().await?;
        self.send_held(p.last_seq, &ok, None).await?;
        Ok(Flow::Continue)
    }

    /// SAVEPOINT / ROLLBACK TO / RELEASE: passed through; ROLLBACK TO cuts the
    /// collected statements back.
    async fn savepoint(&mut self, p: &Packet, text: &str) -> Result<Flow, SessionError> {
        let outcome = self.forward_outcome(p).await?;
        if outcome.error.is_some() {
            return Ok(Flow::Continue);
        }
        let words: Vec<String> = text
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .map(|w| w.trim_matches('`').to_string())
            .collect();
        let Some(name) = words.last().cloned() else {
            return Ok(Flow::Continue);
        };
        if let TxnState::Xa(x) = &mut self.txn {
            match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
                Some("SAVEPOINT") => {
                    x.savepoints.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                    x.savepoints.push((name, x.statements.len()));
                }
                Some("ROLLBACK") => {
                    if let Some(&(_, at)) = x
                        .savepoints
                        .iter()
                        .rev()
                        .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                    {
                        x.statements.truncate(at);
                        let keep = x
                            .savepoints
                            .iter()
                            .position(|(n, _)| n.eq_ignore_ascii_case(&name))
                            .map_or(x.savepoints.len(), |i| i + 1);
                        x.savepoints.truncate(keep);
                    }
                }
                Some("RELEASE") => x.savepoints.retain(|(n, _)| !n.eq_ignore_ascii_case(&name)),
                _ => {}
            }
        }
        Ok(Flow::Continue)
    }

    /// End the XA transaction without logging anything; the OK of `XA ROLLBACK`.
    pub(super) async fn abort_xa(&mut self) -> Result<Vec<u8>, SessionError> {
        let TxnState::Xa(x) = std::mem::take(&mut self.txn) else {
            return Ok(crate::protocol::codes::ok_payload(0, 0, self.status, 0));
        };
        if let Some(rep) = self.shared.replicator.get() {
            rep.pending().closed(&x.id);
        }
        let xid = x.id.xid();
        self.internal(&format!("XA END '{xid}'")).await?;
        match self.internal(&format!("XA ROLLBACK '{xid}'")).await? {
            Internal::Ok(ok) => Ok(ok),
            Internal::Err(e) => {
                tracing::warn!(xid, error = %e, "XA ROLLBACK failed");
                Ok(crate::protocol::codes::ok_payload(0, 0, self.status, 0))
            }
        }
    }

    /// Commit the open XA transaction: prepare, log, wait for the applier's turn, XA
    /// COMMIT. Returns the OK packet of the commit; on error the transaction is rolled
    /// back (or, once logged, its outcome is reported) and the state is Idle.
    pub(super) async fn commit_xa(&mut self) -> Result<Vec<u8>, ServerError> {
        let TxnState::Xa(x) = std::mem::take(&mut self.txn) else {
            return Ok(crate::protocol::codes::ok_payload(0, 0, self.status, 0));
        };
        self.commit_xa_inner(x).await
    }

    /// No longer an open transaction of this session: prepared (the commit pipeline
    /// has it) or ended. Until then a change of leader kills its connection.
    fn close_open(&self, id: &TxnId) {
        if let Some(rep) = self.shared.replicator.get() {
            rep.pending().closed(id);
        }
    }

    async fn commit_xa_inner(&mut self, x: XaTxn) -> Result<Vec<u8>, ServerError> {
        let xid = x.id.xid();
        if x.statements.is_empty() {
            self.close_open(&x.id);
            // Nothing was written: commit locally, nothing to log.
            let end = format!("XA END '{xid}'");
            let commit = format!("XA COMMIT '{xid}' ONE PHASE");
            let mut replies = self
                .internal_pipelined(&[&end, &commit])
                .await
                .map_err(session_err)?
                .into_iter();
            return match (replies.next(), replies.next()) {
                (Some(Internal::Ok(_)), Some(Internal::Ok(ok))) => Ok(ok),
                (Some(Internal::Err(e)), _) | (_, Some(Internal::Err(e))) => {
                    self.internal(&format!("XA ROLLBACK '{xid}'")).await.ok();
                    Err(e)
                }
                _ => Err(session_err(SessionError::Internal(
                    "XA END / XA COMMIT: missing reply".into(),
                ))),
            };
        }
        let entry = LogEntry::Txn(Txn {
            id: x.id,
            session: x.vars.clone(),
            statements: x.statements,
            // A follower's stamp, on the one write the proxy committed for it.
            request: if x.implicit { self.route.request } else { None },
        });
        if let Err(e) = entry.encode() {
            self.internal(&format!("XA END '{xid}'")).await.ok();
            self.internal(&format!("XA ROLLBACK '{xid}'")).await.ok();
            self.close_open(&x.id);
            return Err(refusal(
                1197,
                "HY000",
                format!("The transaction was rolled back: {e}"),
            ));
        }
        // Logged after a DDL that started before its last statement and is not logged
        // yet. Waited for here, before this transaction takes its place in the order,
        // so that transactions behind it in the order do not wait for the DDL too.
        self.shared.sequencing.wait_for_ddl(x.last_statement).await;
        // Its place in the proposal order, taken while it holds every lock: PREPARE
        // releases the shared and gap locks (see `super::order`).
        let ticket = self.shared.sequencing.order.take();
        // XA END and XA PREPARE in one round trip: a failed END makes PREPARE fail too
        // (the transaction is not idle), and either way it is rolled back below.
        let prepare_started = Instant::now();
        let end = format!("XA END '{xid}'");
        let prepare = format!("XA PREPARE '{xid}'");
        let replies = self
            .internal_pipelined(&[&end, &prepare])
            .await
            .map_err(session_err)?;
        tracing::debug!(target: "wolfscale::timing", us = prepare_started.elapsed().as_micros() as u64, "xa end + prepare");
        self.close_open(&x.id);
        if let Some(e) = replies.into_iter().find_map(|r| match r {
            Internal::Err(e) => Some(e),
            Internal::Ok(_) => None,
        }) {
            self.internal(&format!("XA ROLLBACK '{xid}'")).await.ok();
            return Err(e);
        }
        crate::failpoint::hit("after-prepare");
        crate::failpoint::held("after-prepare").await;
        self.replicate_prepared(entry, x.id, x.term, ticket).await
    }

    /// Log a prepared transaction (when its ticket's turn comes) and commit it when the
    /// applier says so.
    async fn replicate_prepared(
        &mut self,
        entry: LogEntry,
        id: TxnId,
        term: u64,
        ticket: Ticket,
    ) -> Result<Vec<u8>, ServerError> {
        let rep = self
            .shared
            .replicator
            .get()
            .cloned()
            .expect("cluster session");
        let xid = id.xid();
        let (order_tx, order_rx) = oneshot::channel::<Turn>();
        rep.pending().register(
            id,
            Waiter {
                order: order_tx,
                backend_thread: self.backend.thread_id,
                term,
            },
        );
        ticket.turn().await;
        let proposed_at = Instant::now();
        let proposal = rep.propose(entry, term).await;
        // Handed to Raft (or refused): the next ticket may go.
        drop(ticket);
        let proposal = match proposal {
            Ok(p) => p,
            Err(e) => {
                // Refused before it reached the log: nothing can commit it but us.
                rep.pending().withdraw(&id);
                self.internal(&format!("XA ROLLBACK '{xid}'")).await.ok();
                return Err(propose_refusal(e));
            }
        };
        // From here the transaction belongs to the commit pipeline. Even if openraft
        // reports an error (leadership lost), the entry may be in the log and commit
        // under the next leader: only the applier knows, and it answers on `order_rx`,
        // in log order: commit now, or roll back (its term ended without it).
        // What openraft says about the entry, kept for the message if no verdict
        // comes (dropping the receivers early would also make openraft warn).
        let progress = Arc::new(Mutex::new((None::<u64>, None::<String>)));
        let (committed, done) = (proposal.committed, proposal.done);
        let seen = progress.clone();
        tokio::spawn(async move {
            if let Ok(log_id) = committed.await {
                seen.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(log_id.index);
            }
            let outcome = match done.await.map(Cluster::outcome) {
                Ok(Ok(index)) => format!("applied at {index}"),
                Ok(Err(e)) => format!("{e:?}"),
                Err(_) => "no completion notice".into(),
            };
            seen.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(outcome);
        });
        let turn = match wait_verdict(order_rx, || rep.writable_term() == Some(term)).await {
            Ok(turn) => turn,
            Err(waited) => {
                // Leave the prepared transaction to the applier (it finishes it by xid
                // once this connection is closed) and tell the client the truth.
                let (committed_at, raft_outcome) =
                    progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
                tracing::warn!(
                    %id,
                    why = waited,
                    ?committed_at,
                    ?raft_outcome,
                    waiting = rep.pending().len(),
                    "no verdict for a prepared transaction; its outcome is left to the log"
                );
                self.close_after_reply = true;
                return Err(refusal(
                    1180,
                    "HY000",
                    "The outcome of this COMMIT is unknown: its log entry was not applied in time (is a majority of nodes reachable?); \
                     the transaction commits if and only if the entry does; check the data before retrying",
                ));
            }
        };
        let order = match turn {
            Turn::Commit(order) => order,
            Turn::Orphaned(ack) => {
                self.internal(&format!("XA ROLLBACK '{xid}'")).await.ok();
                ack.send(()).ok();
                return Err(refusal(
                    1180,
                    "HY000",
                    "The transaction was rolled back: this node stopped being the leader before a majority stored it",
                ));
            }
        };
        tracing::debug!(target: "wolfscale::timing", us = proposed_at.elapsed().as_micros() as u64, "propose to commit turn");
        metrics::histogram!(crate::telemetry::COMMIT_SECONDS)
            .record(proposed_at.elapsed().as_secs_f64());
        self.route.index = self.route.index.max(order.index);
        crate::failpoint::hit("before-local-commit");
        let commit_started = Instant::now();
        let committed = self.internal(&format!("XA COMMIT '{xid}'")).await;
        tracing::debug!(target: "wolfscale::timing", us = commit_started.elapsed().as_micros() as u64, "xa commit");
        crate::failpoint::hit("after-local-commit");
        let result = match &committed {
            Ok(Internal::Ok(_)) => Ok(()),
            Ok(Internal::Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        order.done.send(result.clone()).ok();
        match committed {
            Ok(Internal::Ok(ok)) => Ok(ok),
            // The applier commits it by xid: the entry is in the log, so it commits.
            _ => Ok(crate::protocol::codes::ok_payload(
                0,
                0,
                SERVER_STATUS_AUTOCOMMIT,
                0,
            )),
        }
    }

    /// DDL and account statements: run first as the client, then logged.
    async fn ddl(&mut self, p: &Packet, text: &str, term: u64) -> Result<Flow, SessionError> {
        if matches!(self.txn, TxnState::Xa(_)) {
            if let Err(e) = self.commit_xa().await {
                self.reply_err(p.last_seq, e).await?;
                return Ok(Flow::Continue);
            }
        }
        if let Err(why) = self.pin_functions(text, StatementClass::Ddl) {
            let err = refusal(
                1592,
                "HY000",
                format!("WolfScale cannot replicate this statement deterministically ({why})"),
            );
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        let sql = match crate::sql::hash_passwords(text) {
            Ok(s) => s,
            Err(why) => {
                self.reply_err(p.last_seq, refusal(1235, "42000", why))
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        // The definer MariaDB would record here, written in so that every node records it.
        let account = &self.auth.account;
        let sql = crate::sql::with_definer(&sql, &account.user, &account.host).unwrap_or(sql);
        let rep = self
            .shared
            .replicator
            .get()
            .cloned()
            .expect("cluster session");
        let vars = self.session_vars().await?;
        let id = self.shared.sequencing.next_id(&*rep);
        let seq = self.shared.clone();
        let _turn = seq.sequencing.ddl_turn.lock().await;
        let (logged_tx, logged_rx) = watch::channel(false);
        *seq.sequencing.ddl.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), logged_rx));
        let clear_fence = || {
            logged_tx.send_replace(true);
            *seq.sequencing.ddl.lock().unwrap_or_else(|e| e.into_inner()) = None;
        };
        if let Err(e) = rep.ddl_intent(id, &sql) {
            clear_fence();
            self.reply_err(
                p.last_seq,
                refusal(
                    1030,
                    "HY000",
                    format!("WolfScale cannot record the DDL: {e}"),
                ),
            )
            .await?;
            return Ok(Flow::Continue);
        }
        let timestamp_us = self.pin_timestamp();
        let pins = Pins {
            timestamp_us,
            ..Pins::default()
        };
        let sent = format!(
            "SET STATEMENT lock_wait_timeout={DDL_LOCK_WAIT_S}, {} FOR {sql}",
            pins_list(&pins).join(", ")
        );
        let (outcome, reply) = self.run_collect(&sent).await?;
        if outcome.error.is_some() {
            clear_fence();
            rep.ddl_done(id);
            self.client
                .write_raw(&reply)
                .await
                .map_err(SessionError::Client)?;
            self.client.flush().await.map_err(SessionError::Client)?;
            return Ok(Flow::Continue);
        }
        crate::failpoint::hit("after-ddl-before-log");
        let entry = LogEntry::Ddl(Ddl {
            id,
            session: vars,
            statement: Statement {
                db: self.current_db(),
                sql,
                params: None,
                pins,
                user_vars: vec![],
                expect: expected_counts(&outcome),
            },
        });
        let proposal = rep.propose(entry, term).await;
        clear_fence();
        let result = match proposal {
            Ok(p) => p.done.await.map(Cluster::outcome),
            Err(e) => Ok(Err(e)),
        };
        match result {
            Ok(Ok(index)) => {
                self.route.index = self.route.index.max(index);
                rep.ddl_done(id);
                if let Err(e) = self.shared.catalog.refresh().await {
                    tracing::warn!(error = %e, "cannot re-read the table engines after a DDL");
                }
                self.client
                    .write_raw(&reply)
                    .await
                    .map_err(SessionError::Client)?;
                self.client.flush().await.map_err(SessionError::Client)?;
            }
            _ => {
                tracing::error!(%id, "a DDL ran on this node but was not replicated: this node's MariaDB may now differ");
                let err = refusal(
                    1180,
                    "HY000",
                    "The DDL ran on the leader but could not be replicated (leadership changed); the cluster may be inconsistent: check this node",
                );
                self.reply_err(p.last_seq, err).await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Writes this build cannot replicate faithfully: LOAD DATA LOCAL (the file would
    /// have to travel in the entry), and writes to tables that cannot roll back
    /// (MyISAM, Aria, MEMORY…: a failed commit would leave the leader ahead).
    fn refuse_write(&self, text: &str) -> Option<ServerError> {
        let upper = text.trim_start().to_ascii_uppercase();
        if upper.starts_with("LOAD") && upper.contains("LOCAL") {
            return Some(refusal(
                1235,
                "42000",
                "WolfScale does not replicate LOAD DATA LOCAL INFILE yet: load the rows with INSERT statements",
            ));
        }
        let catalog = self.shared.catalog.get();
        if let Some((table, why)) = catalog.named_in(text, self.db.as_deref()) {
            use super::catalog::Unsafe;
            let msg = match why {
                Unsafe::Engine => format!(
                    "WolfScale does not replicate writes to {table}: its engine cannot roll back, so a \
                     transaction that fails to commit would leave this node ahead of the others; \
                     convert it to InnoDB (ALTER TABLE … ENGINE=InnoDB)"
                ),
                Unsafe::TriggerWritesNonTransactional { trigger, target } => format!(
                    "WolfScale does not replicate writes to {table}: its trigger {trigger} writes \
                     {target}, whose engine cannot roll back; convert {target} to InnoDB"
                ),
                Unsafe::TriggerAutoIncrement { trigger, target } => format!(
                    "WolfScale does not replicate writes to {table}: its trigger {trigger} inserts \
                     into {target}, whose AUTO_INCREMENT values would differ on replay; give \
                     {target} a key the trigger computes"
                ),
            };
            return Some(refusal(1235, "42000", msg));
        }
        if let Some((table, keys)) = catalog.ambiguous_upsert(text, self.db.as_deref()) {
            return Some(refusal(
                1592,
                "HY000",
                format!(
                    "WolfScale cannot replicate this statement deterministically: INSERT … ON DUPLICATE KEY UPDATE \
                     on {table} can collide through more than one unique key ({}), and which row it updates \
                     then depends on concurrent inserts, so the other nodes could update a different row \
                     (MariaDB marks it unsafe for statement-based replication); set the columns of one \
                     unique key only (an AUTO_INCREMENT key the rows leave out does not count)",
                    keys.join(", ")
                ),
            ));
        }
        None
    }

    /// SQL-level PREPARE and EXECUTE IMMEDIATE on a cluster node. A statement prepared
    /// this way would run at EXECUTE, where the proxy sees only a name: a write there
    /// would commit on this MariaDB alone, outside the log. So only reads may be
    /// prepared (the text is classified at PREPARE; a variable holding it is read
    /// first), and EXECUTE IMMEDIATE, whose text is never pinned, is refused for
    /// anything but a literal read.
    pub(super) async fn refuse_dynamic_sql(
        &mut self,
        text: &str,
    ) -> Result<Option<ServerError>, SessionError> {
        use crate::sql::DynamicSql;
        let body = match crate::sql::dynamic_sql(text) {
            DynamicSql::None => return Ok(None),
            DynamicSql::PrepareLiteral(body) => Some(body),
            DynamicSql::PrepareExpr(expr) => {
                let (outcome, reply) = self.run_collect(&format!("SELECT ({expr})")).await?;
                match typed_first_row(&reply) {
                    // MariaDB's own error comes when the PREPARE itself runs.
                    _ if outcome.error.is_some() => return Ok(None),
                    Some(cells) => cells
                        .into_iter()
                        .next()
                        .and_then(|c| c.value)
                        .map(|b| String::from_utf8_lossy(&b).into_owned()),
                    None => None,
                }
            }
            DynamicSql::ExecuteImmediate => match crate::sql::classify(text) {
                c if needs_leader(&c) || c.txn != TxnEffect::None => None,
                _ if text.contains('@') => None,
                _ => return Ok(None),
            },
        };
        let safe = body.as_deref().is_some_and(|b| {
            let c = crate::sql::classify(b);
            !needs_leader(&c) && c.txn == TxnEffect::None
        });
        if safe {
            return Ok(None);
        }
        Ok(Some(refusal(
            1295,
            "HY000",
            "WolfScale does not replicate writes run through SQL PREPARE/EXECUTE or EXECUTE IMMEDIATE: \
             send the statement itself, or prepare it with the binary protocol (COM_STMT_PREPARE)",
        )))
    }

    /// On a cluster node: a statement that cannot be prepared for replication (its
    /// session functions would have to be pinned at every execution).
    pub(super) fn refuse_prepare(&self, text: &str, class: &Classification) -> Option<ServerError> {
        self.shared.replicator.get()?;
        if !needs_leader(class) {
            return None;
        }
        if class.class == StatementClass::Ddl {
            return Some(refusal(
                1295,
                "HY000",
                "WolfScale does not replicate prepared DDL or account statements: send them as plain queries",
            ));
        }
        match crate::sql::pin_functions(
            text,
            class.class,
            &crate::sql::SessionValues {
                user: "",
                current_user: "",
                connection_id: 0,
            },
            String::new,
            || 0,
        ) {
            Ok(None) => None,
            Ok(Some(_)) => Some(refusal(
                1592,
                "HY000",
                "WolfScale cannot replicate a prepared statement calling UUID(), USER(), CONNECTION_ID() or SYSDATE(): \
                 their value would differ between executions; send it as a plain query",
            )),
            Err(why) => Some(refusal(
                1592,
                "HY000",
                format!("WolfScale cannot replicate this statement deterministically ({why})"),
            )),
        }
    }

    /// COM_STMT_EXECUTE of a prepared write on a cluster node.
    pub(super) async fn sequenced_execute(&mut self, p: &Packet) -> Result<Flow, SessionError> {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return self.forward(p, Some(Expect::execute(&p.payload))).await;
        };
        self.row_count = None;
        let transaction_control = self
            .prepared_id(&p.payload)
            .and_then(|id| self.stmts.get(&id))
            .filter(|s| s.class.class == StatementClass::Transaction)
            .map(|s| (s.class.clone(), s.sql.clone()));
        if let Some((class, sql)) = transaction_control {
            // The same as the text statement (its reply is an OK either way).
            return self.sequenced_query(p, &sql, class).await;
        }
        let term = self.writable_term(&rep).await;
        if let TxnState::Xa(x) = &self.txn {
            if term != Some(x.term) {
                self.abort_xa().await?;
                let err = refusal(
                    1180,
                    "HY000",
                    "The transaction was rolled back: this WolfScale node stopped being the leader",
                );
                self.reply_err(p.last_seq, err).await?;
                return Ok(Flow::Continue);
            }
        }
        let Some(term) = term else {
            let err = not_leader_refusal(rep.leader(), &rep.me().id);
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        };
        if p.first() == Some(crate::protocol::command::COM_STMT_BULK_EXECUTE) {
            let err = refusal(
                1235,
                "42000",
                "WolfScale does not replicate COM_STMT_BULK_EXECUTE yet: execute the statement once per row",
            );
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        if matches!(self.txn, TxnState::Plain) {
            return self.forward(p, Some(Expect::execute(&p.payload))).await;
        }
        let Some(id) = self.prepared_id(&p.payload) else {
            return self.forward(p, Some(Expect::execute(&p.payload))).await;
        };
        let Some(prep) = self.stmts.get(&id) else {
            return self.forward(p, Some(Expect::execute(&p.payload))).await;
        };
        let sql = prep.sql.clone();
        let refused = match self.shared.catalog.refresh_for_term(term).await {
            Err(e) => Some(refusal(
                1030,
                "HY000",
                format!("WolfScale cannot read the table engines of this node's MariaDB: {e}"),
            )),
            Ok(()) => self.refuse_write(&sql),
        };
        if let Some(err) = refused {
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        let Some(prep) = self.stmts.get(&id) else {
            return self.forward(p, Some(Expect::execute(&p.payload))).await;
        };
        let long: Vec<bool> = (0..prep.params)
            .map(|i| prep.long_data.contains_key(&(i as u16)))
            .collect();
        let Some((values, types)) = crate::protocol::params::decode_execute(
            &p.payload,
            prep.params,
            prep.types.as_deref(),
            &long,
        ) else {
            self.reply_err(p.last_seq, ServerError::malformed("COM_STMT_EXECUTE"))
                .await?;
            return Ok(Flow::Continue);
        };
        let params: Vec<Value> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| param_value(v, prep.long_data.get(&(i as u16))))
            .collect();
        if let Some(prep) = self.stmts.get_mut(&id) {
            prep.types = Some(types);
        }
        let Some(implicit) = self.open_write(p, term).await? else {
            return Ok(Flow::Continue);
        };
        let started = Instant::now();
        let (pins, user_vars) = self.pins_for(&sql).await?;
        // A prepared statement cannot be wrapped in SET STATEMENT: set, run, restore,
        // sent at once (one write, one wake-up of the server instead of three round
        // trips); the server still runs them one after the other.
        let mut raw = BytesMut::new();
        super::session::encode_query(&mut raw, &format!("SET {}", pins_list(&pins).join(", ")));
        raw.extend_from_slice(&p.raw);
        super::session::encode_query(&mut raw, "SET timestamp = DEFAULT");
        self.send_backend(&raw).await?;
        // The pins' answer (not checked, as before: a bad pin fails the statement).
        self.collect_reply(Expect::Query).await?;
        let expect = Expect::execute(&p.payload);
        let (outcome, held) = if implicit {
            let (o, bytes) = self.collect_reply(expect).await?;
            (o, Some(bytes))
        } else {
            (self.relay(expect).await?, None)
        };
        self.collect_reply(Expect::Query).await?;
        if let Some(prep) = self.stmts.get_mut(&id) {
            prep.long_data.clear();
        }
        let written = Written {
            sql,
            params: Some(params),
            pins,
            user_vars,
            started,
        };
        self.finish_write(p, outcome, held, written).await
    }

    /// Replace session functions by their values, or say why the statement cannot be
    /// replicated.
    fn pin_functions(&self, text: &str, class: StatementClass) -> Result<String, String> {
        let user = format!(
            "{}@{}",
            self.auth.login.user,
            self.auth.origin.client.shown()
        );
        let current = self.auth.account.to_string();
        let values = crate::sql::SessionValues {
            user: &user,
            current_user: &current,
            connection_id: self.backend.thread_id.into(),
        };
        let number = self.shared.registry.node_number();
        let counter = &self.shared.sequencing.seq;
        let rewritten = crate::sql::pin_functions(text, class, &values, uuid_v4, || {
            (u64::from(number) << 54) | (counter.fetch_add(1, Ordering::Relaxed) & ((1 << 54) - 1))
        })?;
        Ok(rewritten.unwrap_or_else(|| text.to_string()))
    }

    /// The session variables a replay needs (read once, again after a SET or USE).
    async fn session_vars(&mut self) -> Result<SessionVars, SessionError> {
        if let Some(v) = &self.vars {
            return Ok(v.clone());
        }
        let mut cols = vec![
            "@@character_set_client".to_string(),
            "@@collation_connection".to_string(),
            "DATABASE()".to_string(),
            "@@tx_isolation".to_string(),
        ];
        cols.extend(PINNED_VARS.iter().map(|v| format!("@@{v}")));
        let row = self
            .internal_row(&format!("SELECT {}", cols.join(", ")))
            .await?;
        let get = |i: usize| row.get(i).cloned().flatten();
        let vars = SessionVars {
            charset: get(0).unwrap_or_default(),
            collation: get(1).unwrap_or_default(),
            vars: PINNED_VARS
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let v = get(4 + i);
                    let value = match v {
                        None => Value::Null,
                        Some(s) if s.parse::<i64>().is_ok() => Value::Int(s.parse().unwrap_or(0)),
                        Some(s) => Value::Text("utf8mb4".into(), s.into_bytes()),
                    };
                    (name.to_string(), value)
                })
                .collect(),
        };
        self.db = get(2);
        self.isolation = get(3).unwrap_or_default();
        self.vars = Some(vars.clone());
        Ok(vars)
    }

    fn current_db(&self) -> Option<String> {
        self.db.clone()
    }

    /// The values of the user variables a statement reads, typed as MariaDB holds
    /// them: the reply's column types say integer, decimal, double or string, and the
    /// value's bytes are taken as they are (never through text conversion), so that a
    /// binary string is replayed as bytes and can never be read as SQL.
    pub(super) async fn user_vars_of(
        &mut self,
        sql: &str,
    ) -> Result<Vec<(String, Value)>, SessionError> {
        let names = user_var_names(sql);
        if names.is_empty() {
            return Ok(vec![]);
        }
        let query = user_vars_query(&names);
        let (outcome, reply) = self.run_collect(&query).await?;
        if outcome.error.is_some() {
            return Err(SessionError::Internal(format!(
                "{query}: the user variables could not be read"
            )));
        }
        parse_user_vars(names, &query, &reply)
    }

    async fn scalar_u64(&mut self, sql: &str) -> Result<Option<u64>, SessionError> {
        let row = self.internal_row(sql).await?;
        Ok(row.first().cloned().flatten().and_then(|s| s.parse().ok()))
    }

    /// Answer a client command with a payload the proxy holds (an OK of its own
    /// statement), with the client's status.
    async fn send_held(
        &mut self,
        last_seq: u8,
        ok: &[u8],
        _status: Option<u16>,
    ) -> Result<(), SessionError> {
        self.client
            .send(last_seq.wrapping_add(1), ok)
            .await
            .map(|_| ())
            .map_err(SessionError::Client)
    }

    /// Temporary tables live in one session of one MariaDB: creating, changing or
    /// dropping them is not logged (it runs here, on the leader or a follower alike),
    /// and a logged write that reads one is refused, since no other node could replay
    /// it. `None`: the statement is not about a temporary table.
    async fn temporary_tables(
        &mut self,
        p: &Packet,
        text: &str,
        class: &Classification,
        term: Option<u64>,
    ) -> Result<Option<Flow>, SessionError> {
        use crate::sql::TableUse;
        if !needs_leader(class) {
            return Ok(None);
        }
        let use_ = crate::sql::table_use(text);
        if self.temp_tables.is_empty() && !matches!(use_, Some(TableUse::CreateTemporary(..))) {
            return Ok(None);
        }
        self.session_vars().await?;
        let current = self.db.clone();
        let key = |db: &Option<String>, t: &str| {
            db.clone()
                .or_else(|| current.clone())
                .map(|d| (d, t.to_string()))
        };
        let local = match &use_ {
            Some(TableUse::CreateTemporary(db, t)) => key(db, t),
            Some(TableUse::Drop(db, t) | TableUse::Target(db, t)) => {
                key(db, t).filter(|k| self.temp_tables.contains(k))
            }
            None => None,
        };
        let Some(table) = local else {
            let reads = crate::sql::table_names(text)
                .into_iter()
                .filter_map(|(db, t)| key(&db, &t))
                .find(|k| self.temp_tables.contains(k));
            let Some((db, t)) = reads else {
                return Ok(None);
            };
            let err = refusal(
                1235,
                "42000",
                format!(
                    "WolfScale does not replicate writes that read the temporary table `{db}`.`{t}`: \
                     the other nodes do not have it; copy the rows into a regular table first"
                ),
            );
            self.reply_err(p.last_seq, err).await?;
            return Ok(Some(Flow::Continue));
        };
        if matches!(use_, Some(TableUse::Drop(..))) && text.contains(',') {
            let err = refusal(
                1235,
                "42000",
                "WolfScale drops temporary tables one per statement (DROP TEMPORARY TABLE t)",
            );
            self.reply_err(p.last_seq, err).await?;
            return Ok(Some(Flow::Continue));
        }
        if let (TxnState::Idle, true, Some(term)) = (&self.txn, self.autocommit_off(), term) {
            // With autocommit off the statement opens a transaction: make it the XA
            // transaction that later logged writes join (a plain one would let them
            // commit outside the log).
            self.open_xa(term, false).await?;
        }
        let outcome = self.forward_outcome(p).await?;
        if outcome.error.is_none() {
            match use_ {
                Some(TableUse::CreateTemporary(..)) => {
                    self.temp_tables.insert(table);
                }
                Some(TableUse::Drop(..)) => {
                    self.temp_tables.remove(&table);
                }
                _ => {}
            }
        }
        Ok(Some(Flow::Continue))
    }

    /// Forward the client's packet and read the reply's outcome (relayed).
    async fn forward_outcome(&mut self, p: &Packet) -> Result<Outcome, SessionError> {
        self.send_backend(&p.raw).await?;
        self.relay(Expect::Query).await
    }
}

/// A decoded parameter as a log value (long data joined in).
fn param_value(v: crate::protocol::params::ParamValue, long: Option<&Vec<u8>>) -> Value {
    use crate::protocol::params::ParamValue as P;
    match v {
        P::Null => Value::Null,
        P::Int(i) => Value::Int(i),
        P::UInt(u) => Value::UInt(u),
        P::Float(f) => Value::Float(f),
        P::Double(d) => Value::Double(d),
        P::Bytes(b) => Value::Bytes(b),
        P::Date(y, mo, d, h, mi, s, us) => Value::Date(y, mo, d, h, mi, s, us),
        P::Time(n, d, h, mi, s, us) => Value::Time(n, d, h, mi, s, us),
        P::LongData => Value::Bytes(long.cloned().unwrap_or_default()),
    }
}

/// One cell of a result row with its column's type.
struct TypedCell {
    column_type: u8,
    unsigned: bool,
    value: Option<Vec<u8>>,
}

/// The first row of a text-protocol result set (columns, EOF, row), each cell with
/// its column type and its bytes exactly as sent. `None` if the reply is not a
/// result set.
/// The first row of a text-protocol reply as raw cell values (`None` for NULL).
pub(super) fn first_row_values(reply: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    Some(
        typed_first_row(reply)?
            .into_iter()
            .map(|c| c.value)
            .collect(),
    )
}

fn typed_first_row(reply: &[u8]) -> Option<Vec<TypedCell>> {
    let mut packets = Vec::new();
    let mut off = 0;
    while let Some((len, _)) = crate::protocol::packet::peek_header(reply.get(off..)?) {
        let body = reply.get(off + 4..off + 4 + len)?;
        packets.push(body);
        off += 4 + len;
    }
    let count = usize::try_from(Reader::new(packets.first()?).lenenc()?).ok()?;
    let mut types = Vec::with_capacity(count);
    for def in packets.get(1..=count)? {
        let mut r = Reader::new(def);
        for _ in 0..6 {
            r.lenenc_bytes()?;
        }
        r.lenenc()?;
        r.u16()?; // character set
        r.u32()?; // length
        let column_type = r.u8()?;
        let flags = r.u16()?;
        types.push((column_type, flags & 0x20 != 0));
    }
    let row = packets.get(count + 2)?;
    if row.first() == Some(&0xFE) && row.len() < 9 {
        return None;
    }
    let mut r = Reader::new(row);
    types
        .into_iter()
        .map(|(column_type, unsigned)| {
            let value = if r.remaining().first() == Some(&0xFB) {
                r.u8();
                None
            } else {
                Some(r.lenenc_bytes()?.to_vec())
            };
            Some(TypedCell {
                column_type,
                unsigned,
                value,
            })
        })
        .collect()
}

/// A user variable's value for the log. Numbers keep their type (an integer, an exact
/// decimal, a double); strings keep their bytes and character set; anything that does
/// not parse as the number its type claims is carried as bytes, never as SQL text.
fn user_var_value(cell: &TypedCell, charset: &str, raw: Option<Vec<u8>>) -> Value {
    use mysql_common::constants::ColumnType as T;
    let Some(bytes) = &cell.value else {
        return Value::Null;
    };
    // A string's own bytes (HEX), falling back to the value as sent.
    let string_bytes = raw.unwrap_or_else(|| bytes.clone());
    let text = std::str::from_utf8(bytes).ok();
    let kind = T::try_from(cell.column_type).ok();
    match (kind, text) {
        (Some(T::MYSQL_TYPE_LONGLONG | T::MYSQL_TYPE_LONG), Some(t)) => {
            let parsed = if cell.unsigned {
                t.parse::<u64>().ok().map(Value::UInt)
            } else {
                t.parse::<i64>().ok().map(Value::Int)
            };
            parsed.unwrap_or_else(|| Value::Bytes(bytes.clone()))
        }
        (Some(T::MYSQL_TYPE_NEWDECIMAL | T::MYSQL_TYPE_DECIMAL), Some(t)) if is_decimal(t) => {
            Value::Decimal(t.to_string())
        }
        (Some(T::MYSQL_TYPE_DOUBLE | T::MYSQL_TYPE_FLOAT), Some(t)) => t
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite())
            .map(Value::Double)
            .unwrap_or_else(|| Value::Bytes(bytes.clone())),
        _ if charset == "binary" || charset.is_empty() => Value::Bytes(string_bytes),
        _ => Value::Text(charset.to_string(), string_bytes),
    }
}

/// The bytes of `HEX()` output.
fn unhex(h: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    h.chunks(2)
        .map(|p| match p {
            [a, b] => Some(digit(*a)? << 4 | digit(*b)?),
            _ => None,
        })
        .collect()
}

/// An exact decimal as MariaDB prints one: `-?digits(.digits)?`.
fn is_decimal(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    let mut parts = digits.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// A write statement that ran, with what it ran with.
struct Written {
    sql: String,
    params: Option<Vec<Value>>,
    pins: Pins,
    user_vars: Vec<(String, Value)>,
    started: Instant,
}

/// A statement with its pins in `SET STATEMENT … FOR`.
fn with_pins(sql: &str, pins: &Pins) -> String {
    let list = pins_list(pins);
    if list.is_empty() {
        sql.to_string()
    } else {
        format!("SET STATEMENT {} FOR {sql}", list.join(", "))
    }
}

fn pins_list(p: &Pins) -> Vec<String> {
    let mut sets = Vec::new();
    if p.timestamp_us != 0 {
        sets.push(format!(
            "timestamp={}.{:06}",
            p.timestamp_us.div_euclid(1_000_000),
            p.timestamp_us.rem_euclid(1_000_000)
        ));
    }
    if p.rand_seed1 != 0 || p.rand_seed2 != 0 {
        sets.push(format!("rand_seed1={}", p.rand_seed1));
        sets.push(format!("rand_seed2={}", p.rand_seed2));
    }
    if let Some(v) = p.last_insert_id {
        sets.push(format!("last_insert_id={v}"));
    }
    sets
}

/// `@name` user variables a statement mentions (not `@@system` ones), in order.
/// The query that reads user variables `names` with their types (see
/// [`Session::user_vars_of`]): for each, the value (its column type gives the type),
/// its character set, and its bytes as hex (never converted to the session's
/// `character_set_results`).
pub(super) fn user_vars_query(names: &[String]) -> String {
    let select: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let q = apply::quote_ident(n);
            [
                format!("@{q}"),
                format!("CHARSET(@{q})"),
                format!("HEX(@{q})"),
            ]
        })
        .collect();
    format!("SELECT {}", select.join(", "))
}

/// The typed values of [`user_vars_query`]'s reply.
pub(super) fn parse_user_vars(
    names: Vec<String>,
    query: &str,
    reply: &[u8],
) -> Result<Vec<(String, Value)>, SessionError> {
    let cells = typed_first_row(reply)
        .ok_or_else(|| SessionError::Internal(format!("{query}: unexpected reply shape")))?;
    let mut out = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let (Some(cell), Some(charset), Some(hex)) =
            (cells.get(3 * i), cells.get(3 * i + 1), cells.get(3 * i + 2))
        else {
            return Err(SessionError::Internal(format!("{query}: missing columns")));
        };
        let charset = charset
            .value
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let raw = hex.value.as_deref().and_then(unhex);
        out.push((name, user_var_value(cell, &charset, raw)));
    }
    Ok(out)
}

pub(super) fn user_var_names(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'\'' | b'"' | b'`' => quote = Some(c),
            b'@' if b.get(i + 1) != Some(&b'@') && (i == 0 || b[i - 1] != b'@') => {
                let start = i + 1;
                let mut end = start;
                while end < b.len()
                    && (b[end].is_ascii_alphanumeric()
                        || b[end] == b'_'
                        || b[end] == b'$'
                        || b[end] == b'.')
                {
                    end += 1;
                }
                if end > start {
                    let name = sql[start..end].to_string();
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Statements that open a transaction when autocommit is off.
fn starts_txn(class: &Classification) -> bool {
    matches!(class.class, StatementClass::Read | StatementClass::Locking)
}

fn is_client_xa(text: &str) -> bool {
    text.trim_start()
        .get(..2)
        .is_some_and(|w| w.eq_ignore_ascii_case("XA"))
}

fn is_client_xa_any(text: &str) -> bool {
    is_client_xa(text)
}

fn propose_refusal(e: ProposeError) -> ServerError {
    match e {
        ProposeError::NotLeader { leader } => not_leader_refusal(leader, "(this node)"),
        ProposeError::Discarded => refusal(
            1180,
            "HY000",
            "The transaction was rolled back: leadership changed before it was committed",
        ),
        ProposeError::Fatal(e) => refusal(
            1180,
            "HY000",
            format!("The transaction was rolled back: {e}"),
        ),
    }
}

fn session_err(e: SessionError) -> ServerError {
    ServerError::lost_backend(&format!("({e})"))
}

/// A random (version 4) UUID in its text form.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Replace the status flags of the terminal OK/EOF packet of a held reply.
fn patch_status(reply: &[u8], status: u16) -> Vec<u8> {
    let mut out = reply.to_vec();
    let mut off = 0;
    let mut last_terminal: Option<(usize, usize)> = None;
    while off + 4 <= out.len() {
        let len = out[off] as usize | (out[off + 1] as usize) << 8 | (out[off + 2] as usize) << 16;
        let start = off + 4;
        if start + len > out.len() {
            break;
        }
        let first = out.get(start).copied();
        if first == Some(0x00) || (first == Some(0xFE) && len < 9) {
            last_terminal = Some((start, len));
        }
        off = start + len;
    }
    if let Some((start, len)) = last_terminal {
        let p = &out[start..start + len];
        let at = if p[0] == 0xFE {
            Some(start + 3)
        } else {
            let mut r = Reader::new(&p[1..]);
            r.lenenc();
            r.lenenc();
            Some(start + 1 + (p.len() - 1 - r.remaining().len()))
        };
        if let Some(at) = at.filter(|&a| a + 2 <= start + len) {
            let old = u16::from_le_bytes([out[at], out[at + 1]]);
            // Keep what the statement itself reported; fix only the transaction bits.
            let fixed = (old & !(SERVER_STATUS_IN_TRANS | SERVER_STATUS_AUTOCOMMIT))
                | (status & (SERVER_STATUS_IN_TRANS | SERVER_STATUS_AUTOCOMMIT));
            out[at..at + 2].copy_from_slice(&fixed.to_le_bytes());
        }
    }
    out
}

/// An OK packet reply with one more warning (the proxy's own, from SIGNAL).
fn bump_warnings(reply: &[u8]) -> Vec<u8> {
    let mut out = reply.to_vec();
    let Some((len, _)) = crate::protocol::packet::peek_header(reply) else {
        return out;
    };
    let Some(body) = reply.get(4..4 + len) else {
        return out;
    };
    if body.first() != Some(&0x00) {
        return out;
    }
    let mut r = Reader::new(&body[1..]);
    r.lenenc();
    r.lenenc();
    let at = 4 + 1 + (body.len() - 1 - r.remaining().len()) + 2;
    if let Some(w) = out.get_mut(at..at + 2) {
        let n = u16::from_le_bytes([w[0], w[1]]).saturating_add(1);
        w.copy_from_slice(&n.to_le_bytes());
    }
    out
}

/// What one of the proxy's own statements answered.
pub enum Internal {
    /// The OK packet's payload.
    Ok(Vec<u8>),
    Err(ServerError),
}

/// The row counts a follower must see when it replays a statement with this reply.
/// A write that returned rows (`INSERT … RETURNING`, `DELETE … RETURNING`) is counted
/// by the rows it returned: its EOF terminator carries no affected-rows count.
fn expected_counts(outcome: &Outcome) -> RowCounts {
    if outcome.result_set {
        RowCounts {
            affected: outcome.rows,
            matched: None,
        }
    } else {
        RowCounts {
            affected: outcome.affected_rows,
            matched: outcome.info_matched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_variable_values_are_typed_and_never_sql() {
        let cell = |column_type: u8, v: &[u8]| TypedCell {
            column_type,
            unsigned: false,
            value: Some(v.to_vec()),
        };
        // A binary string that reads as SQL is bytes, never pasted text.
        let sql = b"0; CREATE TABLE x (a INT)";
        assert_eq!(
            user_var_value(&cell(0xFB, sql), "binary", Some(sql.to_vec())).literal(),
            "X'303B20435245415445205441424C45207820286120494E5429'"
        );
        // A decimal column whose text is not a decimal is bytes too.
        assert_eq!(
            user_var_value(&cell(0xF6, b"1; DROP"), "binary", None),
            Value::Bytes(b"1; DROP".to_vec())
        );
        assert_eq!(
            user_var_value(&cell(0xF6, b"-1.50"), "binary", None),
            Value::Decimal("-1.50".into())
        );
        assert_eq!(
            user_var_value(&cell(0x08, b"-7"), "binary", None),
            Value::Int(-7)
        );
        // A latin1 string keeps its own bytes (from HEX), not the converted value.
        assert_eq!(
            user_var_value(&cell(0xFD, "é".as_bytes()), "latin1", unhex(b"E9")),
            Value::Text("latin1".into(), vec![0xE9])
        );
        assert_eq!(unhex(b"E9F"), None);
        assert!(!is_decimal("1e5") && !is_decimal(".5") && is_decimal("12.5"));
    }

    #[test]
    fn user_variables_are_found_outside_strings() {
        assert_eq!(
            user_var_names("INSERT INTO t VALUES (@a, '@b', @@session.x, @`c`, @d.e)"),
            vec!["a".to_string(), "d.e".to_string()]
        );
        assert!(user_var_names("INSERT INTO t VALUES (1)").is_empty());
    }

    #[test]
    fn status_patch_touches_only_transaction_bits() {
        let mut wire = BytesMut::new();
        // OK: affected 1, insert id 0, status IN_TRANS|AUTOCOMMIT|0x0400, warnings 0.
        encode_packet(&mut wire, 1, &[0x00, 1, 0, 0x03, 0x04, 0, 0]);
        let out = patch_status(&wire, SERVER_STATUS_AUTOCOMMIT);
        assert_eq!(&out[4..], &[0x00, 1, 0, 0x02, 0x04, 0, 0]);
    }

    #[test]
    fn uuids_look_like_uuids() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
