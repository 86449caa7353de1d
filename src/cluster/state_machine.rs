//! openraft's state machine over the applier: the local MariaDB is the state, and
//! `wolfscale.applied` says how far it has got.
//!
//! `apply` receives a run of committed entries; they go to [`Applier::apply`] in one
//! call (so a follower that is behind replays many entries per MariaDB transaction),
//! and each proposer's responder is answered once that call has committed them.
//! Membership changes are stored with the marker, so the applied position and the
//! membership it implies are always read back together.
//!
//! Snapshots are logical dumps carrying their `wolfscale.applied` row (see
//! [`super::snapshot`]): built every `[wal] snapshot_entries` applied entries, after
//! which openraft may purge the log below them; a node behind the purged log is sent
//! the leader's current snapshot and installs it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::Mutex;

use super::snapshot::{self, Snapshots};
use super::types::{log_id, Applied, LogId, StoredMembership, TypeConfig};
use crate::apply::{Applier, ApplyError, Item};

/// A snapshot: a dump file.
#[derive(Debug)]
pub struct Dump {
    pub path: PathBuf,
}

/// The state machine handle openraft owns; the applier is shared with the node so
/// that status and recovery code can read it.
#[derive(Clone)]
pub struct StateMachine {
    pub applier: Arc<Mutex<Applier>>,
    /// Set once replay has diverged: the node stops campaigning for leadership.
    pub diverged: Arc<tokio::sync::watch::Sender<bool>>,
    /// Set while committed entries cannot be applied (the local MariaDB is out of
    /// reach): the node does not stand for leadership meanwhile.
    pub stalled: Arc<std::sync::atomic::AtomicBool>,
    /// Request ids of the applied entries that carry one.
    pub requests: Arc<super::requests::Requests>,
    pub snapshots: Snapshots,
    /// Set while a snapshot is being installed (status NeedsMigration).
    pub installing: Arc<std::sync::atomic::AtomicBool>,
    /// Set while this node takes writes (see `guard_read_only`): it builds no
    /// snapshot then, since the dump holds its local commits.
    pub leading: Arc<std::sync::atomic::AtomicBool>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Dump;
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applier = self.applier.lock().await;
        let row = applier.applied();
        let last = row.index.map(|i| log_id(i, row.term));
        let membership = match &row.membership {
            Some(bytes) => postcard::from_bytes(bytes).map_err(io_err)?,
            None => StoredMembership::default(),
        };
        Ok((last, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut items = Vec::new();
        let mut responders = Vec::new();
        let mut requests = Vec::new();
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            let index = entry.log_id.index;
            let term = entry.log_id.leader_id.term;
            if let EntryPayload::Normal(crate::apply::LogEntry::Txn(t)) = &entry.payload {
                if let Some(id) = t.request {
                    let first = t.statements.first();
                    let done = super::requests::Done {
                        index,
                        affected: t.statements.iter().map(|s| s.expect.affected).sum(),
                        last_insert_id: first.and_then(|s| s.pins.insert_id).unwrap_or(0),
                    };
                    requests.push((id, done));
                }
            }
            items.push(match entry.payload {
                EntryPayload::Blank => Item::Blank { index, term },
                EntryPayload::Normal(data) => Item::Entry {
                    index,
                    term,
                    entry: Box::new(data),
                },
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    Item::Membership {
                        index,
                        term,
                        membership: postcard::to_allocvec(&stored).map_err(io_err)?,
                    }
                }
            });
            if let Some(r) = responder {
                responders.push((index, r));
            }
        }
        // An error returned to openraft ends this node's Raft for good. A failure to
        // reach the local MariaDB (an outage, a restart) is waited out instead: the
        // batch is offered again (the applier skips what it has already applied, and
        // its commits by xid are idempotent) until it applies or diverges.
        let mut backoff = std::time::Duration::from_millis(50);
        let result = loop {
            let attempt = self.applier.lock().await.apply(items.clone()).await;
            match attempt {
                Ok(()) | Err(ApplyError::Diverged { .. }) => {
                    self.stalled
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                    if attempt.is_ok() {
                        metrics::counter!(crate::telemetry::APPLIED_ENTRIES)
                            .increment(items.len() as u64);
                    }
                    break attempt;
                }
                Err(e) => {
                    self.stalled
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::warn!(error = %e, "cannot apply committed entries yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                }
            }
        };
        let applied_below = match result {
            Ok(()) => u64::MAX,
            // An error returned to openraft stops this node's Raft altogether: it
            // would no longer store entries or vote, so divergent replay on a majority
            // (a determinism slip shows on every follower at once) would stop the
            // cluster's writes. Instead openraft is told the run is done while the
            // applier stays halted at the entry: the node keeps its log and its vote,
            // reports Diverged, and no longer campaigns (see `Cluster::start`);
            // `Cluster::applied_index` reads the real position from the status.
            Err(ApplyError::Diverged { index, .. }) => {
                self.diverged.send_replace(true);
                index
            }
            Err(e) => return Err(io_err(e)),
        };
        for (id, done) in requests {
            if done.index < applied_below {
                self.requests.record(id, done);
            }
        }
        for (index, r) in responders {
            if index < applied_below {
                r.send(Applied { index });
            }
        }
        Ok(())
    }

    /// Snapshots are built on followers only: the dump holds the applier, and on the
    /// leader that would hold every COMMIT. A leader keeps its log (it purges nothing
    /// new) and sends the snapshot it last built as a follower. An operator's request
    /// (`force`, e.g. a migration asking this node) is honoured anyway.
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        if !force && self.leading.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::debug!("the leader builds no snapshot");
            return None;
        }
        Some(self.get_snapshot_builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            applier: self.applier.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    /// An error here would end this node's Raft: a failed load (its MariaDB away, a
    /// statement refused) is logged and tried again; the node reports NeedsMigration
    /// meanwhile.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        dump: Dump,
    ) -> Result<(), io::Error> {
        use std::sync::atomic::Ordering;
        self.installing.store(true, Ordering::SeqCst);
        let mut backoff = std::time::Duration::from_millis(500);
        loop {
            match self.try_install(meta, &dump).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot install the snapshot");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
                }
            }
        }
        self.installing.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Dump>>, io::Error> {
        Ok(self
            .snapshots
            .current()?
            .map(|(meta, path)| openraft::storage::Snapshot {
                meta,
                snapshot: Dump { path },
            }))
    }
}

impl StateMachine {
    async fn try_install(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        dump: &Dump,
    ) -> Result<(), io::Error> {
        let mut applier = self.applier.lock().await;
        tracing::info!(snapshot = %snapshot::name(meta), "installing a snapshot: replacing the local databases");
        let started = std::time::Instant::now();
        snapshot::install(
            &self.snapshots,
            &mut applier,
            &self.requests,
            meta,
            &dump.path,
        )
        .await?;
        tracing::info!(
            snapshot = %snapshot::name(meta),
            ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
        Ok(())
    }
}

/// Builds a snapshot with the applier held (see [`super::snapshot`]).
pub struct Builder {
    applier: Arc<Mutex<Applier>>,
    snapshots: Snapshots,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    type SnapshotData = Dump;

    /// An error here would end this node's Raft (openraft treats it as fatal): a
    /// failed dump is logged and tried again, with the applier released in between.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Dump>, io::Error> {
        let mut backoff = std::time::Duration::from_millis(500);
        loop {
            match self.try_build().await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot build a snapshot");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
                }
            }
        }
    }
}

impl Builder {
    async fn try_build(&mut self) -> Result<SnapshotOf<TypeConfig, Dump>, io::Error> {
        let started = std::time::Instant::now();
        let mut applier = self.applier.lock().await;
        // Every local commit handed over is done and the marker names it: the dump's
        // marker is exactly what its data holds.
        applier.settle().await.map_err(io_err)?;
        let row = applier.applied().clone();
        let Some(index) = row.index else {
            return Err(io_err("nothing is applied yet: no snapshot to build"));
        };
        let last_membership = match &row.membership {
            Some(bytes) => postcard::from_bytes(bytes).map_err(io_err)?,
            None => StoredMembership::default(),
        };
        let meta = snapshot::Meta {
            last_log_id: Some(log_id(index, row.term)),
            last_membership,
        };
        let tmp = self
            .snapshots
            .dir
            .join(format!("{}.sql.tmp", snapshot::name(&meta)));
        let dumped = self.snapshots.dump(&tmp).await;
        drop(applier);
        if let Err(e) = dumped {
            std::fs::remove_file(&tmp).ok();
            return Err(e);
        }
        let path = self.snapshots.keep(&meta, &tmp)?;
        tracing::info!(
            snapshot = %snapshot::name(&meta),
            ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        Ok(openraft::storage::Snapshot {
            meta,
            snapshot: Dump { path },
        })
    }
}
