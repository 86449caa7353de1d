//! The leader's local commits, pipelined.
//!
//! When the applier reaches entries this node produced, their transactions are already
//! PREPARED, each holding all its locks. Transactions that are prepared at the same
//! time cannot conflict, so the order in which they commit cannot change the data:
//! the applier hands each one its commit order and moves on, and the sessions' `XA
//! COMMIT`s share MariaDB's group commit instead of queueing one fsync after another
//! behind the applier. This task follows them in log order: it waits for each
//! session's answer, commits by xid what a session could not (gone, failed, too
//! slow — its connection is killed first), and publishes how far the log is committed
//! locally. The applier waits for that before it replays anything else (another
//! node's entries, DDL), so replay still sees every earlier entry.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::{mpsc, oneshot, watch};

/// How long a session may take to run `XA COMMIT` once told to.
pub(super) const LOCAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// One local entry to see committed.
pub(super) struct LocalCommit {
    pub index: u64,
    pub term: u64,
    /// The transaction's xid; `None` for an entry with nothing to commit here (a DDL
    /// this node ran before logging it).
    pub xid: Option<String>,
    /// The session's answer, when a session was told to commit.
    pub session: Option<(u32, oneshot::Receiver<Result<(), String>>)>,
}

/// The applier's handle on the task.
pub(super) struct Committer {
    tx: mpsc::UnboundedSender<LocalCommit>,
    through: watch::Receiver<Option<(u64, u64)>>,
    /// The last entry handed over.
    sent: Option<u64>,
}

impl Committer {
    pub fn spawn(opts: mysql_async::Opts) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (through_tx, through) = watch::channel(None);
        tokio::spawn(run(opts, rx, through_tx));
        Committer {
            tx,
            through,
            sent: None,
        }
    }

    pub fn send(&mut self, c: LocalCommit) {
        self.sent = Some(c.index);
        // The task only ends when this handle is dropped.
        self.tx.send(c).ok();
    }

    /// `(index, term)` of the last local entry known committed here.
    pub fn through(&self) -> Option<(u64, u64)> {
        *self.through.borrow()
    }

    /// Wait until every entry handed over is committed here.
    pub async fn drain(&mut self) {
        let Some(sent) = self.sent else { return };
        self.through
            .wait_for(|t| t.is_some_and(|(i, _)| i >= sent))
            .await
            .ok();
    }
}

async fn run(
    opts: mysql_async::Opts,
    mut rx: mpsc::UnboundedReceiver<LocalCommit>,
    through: watch::Sender<Option<(u64, u64)>>,
) {
    let mut conn: Option<Conn> = None;
    while let Some(c) = rx.recv().await {
        let committed = match c.session {
            None => false,
            Some((thread, answer)) => {
                match tokio::time::timeout(LOCAL_COMMIT_TIMEOUT, answer).await {
                    Ok(Ok(Ok(()))) => true,
                    Ok(Ok(Err(e))) => {
                        tracing::warn!(index = c.index, error = %e, "a session could not commit its transaction; committing by xid");
                        false
                    }
                    Ok(Err(_)) => false,
                    Err(_) => {
                        tracing::warn!(index = c.index, thread, "a session did not commit in time; killing its connection to commit by xid");
                        with_conn(&opts, &mut conn, |conn| {
                            Box::pin(async move {
                                conn.query_drop(format!("KILL {thread}")).await?;
                                Ok(())
                            })
                        })
                        .await;
                        false
                    }
                }
            }
        };
        if let (false, Some(xid)) = (committed, &c.xid) {
            // The entry is committed in the log: it must commit here, whatever it takes.
            let mut backoff = Duration::from_millis(50);
            loop {
                let ok = with_conn(&opts, &mut conn, |conn| {
                    let xid = xid.clone();
                    Box::pin(async move { finish_by_xid(conn, &xid, "COMMIT").await })
                })
                .await;
                if ok {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        through.send_replace(Some((c.index, c.term)));
    }
}

type ConnFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), mysql_async::Error>> + Send + 'a>,
>;

/// Run `f` on the task's connection (made on first use, dropped after an error).
async fn with_conn<F>(opts: &mysql_async::Opts, conn: &mut Option<Conn>, f: F) -> bool
where
    F: for<'a> FnOnce(&'a mut Conn) -> ConnFuture<'a>,
{
    if conn.is_none() {
        match Conn::new(opts.clone()).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "local commits: cannot connect to MariaDB");
                return false;
            }
        }
    }
    let c = conn.as_mut().expect("just set");
    match f(c).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "local commits: MariaDB error");
            *conn = None;
            false
        }
    }
}

/// `XA COMMIT` (or `XA ROLLBACK`) a prepared transaction left by a session that is
/// gone. If the xid is not prepared any more, it was finished already: a session only
/// rolls back a transaction whose entry cannot commit, so a committed entry's missing
/// xid means it committed.
pub(super) async fn finish_by_xid(
    conn: &mut Conn,
    xid: &str,
    verb: &str,
) -> Result<(), mysql_async::Error> {
    // The connection that prepared it may still be closing: give it a moment.
    for attempt in 0..50 {
        let present = super::prepared_xids(conn, xid)
            .await?
            .iter()
            .any(|x| x == xid);
        if !present {
            return Ok(());
        }
        match conn.query_drop(format!("XA {verb} '{xid}'")).await {
            Ok(()) => return Ok(()),
            // XAER_RMFAIL / XAER_NOTA while the old connection still holds it.
            Err(e) if attempt < 49 => {
                tracing::debug!(error = %e, xid, verb, "not possible yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
