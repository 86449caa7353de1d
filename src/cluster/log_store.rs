//! openraft's log storage over the WAL.
//!
//! * Entries are stored as WAL entries `(index, term, [version | postcard(Entry)])`:
//!   with standard Raft log ids (one leader per term) the WAL's `(index, term)` is the
//!   whole log id.
//! * `append` queues the entries on the WAL writer and returns at once; the writer's
//!   notice completes openraft's `IOFlushed` callback when they are durable, so appends
//!   pipeline and concurrent ones share an fsync. Until then (and for a while after) the
//!   entries are served from a cache of recent entries, so a reader sees an entry as
//!   soon as `append` returns, as openraft requires, and replication to followers reads
//!   fresh entries from memory.
//! * The vote is saved through the same writer, so it is durable, and ordered with the
//!   log IO, before `save_vote` returns. The committed log id is queued the same way but
//!   not awaited, and at most once per [`COMMITTED_EVERY`]: it only saves re-applying at
//!   start-up (an older value is always valid), and saving it at every commit advance
//!   put a state-database transaction and its fsync between every two appends of the
//!   writer (12% of all CPU under sysbench, profiled).
//! * Truncation and purge also go through the writer, in order with appends.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::types::{log_id, term_of, Entry, LogId, TypeConfig, Vote};
use crate::wal::{self, MetaKey, Wal};

/// Entries kept in memory after they are durable, for replication reads.
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 64 << 20;
/// 2: `Member` carries its incarnation.
const ENCODING_VERSION: u8 = 2;

/// The log: cheap to clone (readers are clones).
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    cache: Arc<Mutex<Cache>>,
    /// When the committed log id was last queued for saving.
    committed_saved: Arc<Mutex<Option<std::time::Instant>>>,
}

/// How often the committed log id is saved at most.
pub const COMMITTED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Default)]
struct Cache {
    /// Recent entries by index, with their encoded size.
    entries: BTreeMap<u64, (Entry, usize)>,
    bytes: usize,
    /// Entries at or below this are durable (may be evicted).
    durable: u64,
}

impl Cache {
    fn evict(&mut self) {
        while self.entries.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES {
            let Some((&first, _)) = self.entries.first_key_value() else {
                return;
            };
            if first > self.durable {
                return;
            }
            if let Some((_, size)) = self.entries.remove(&first) {
                self.bytes -= size;
            }
        }
    }

    fn remove_from(&mut self, index: u64) {
        let tail = self.entries.split_off(&index);
        self.bytes -= tail.values().map(|(_, s)| s).sum::<usize>();
        self.durable = self.durable.min(index.saturating_sub(1));
    }

    fn remove_through(&mut self, index: u64) {
        let keep = self.entries.split_off(&(index + 1));
        self.bytes -= self.entries.values().map(|(_, s)| s).sum::<usize>();
        self.entries = keep;
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl LogStore {
    pub fn new(wal: Arc<Wal>) -> Self {
        LogStore {
            wal,
            cache: Arc::new(Mutex::new(Cache::default())),
            committed_saved: Arc::new(Mutex::new(None)),
        }
    }

    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries of `range` that exist, from the cache where possible.
    async fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        if start >= end {
            return Ok(vec![]);
        }
        // The cache holds a suffix of the log: find where it starts within the range.
        let (cached, cache_start) = {
            let cache = self.cache();
            let cached: Vec<Entry> = cache
                .entries
                .range(start..end)
                .map(|(_, (e, _))| e.clone())
                .collect();
            let cache_start = cached.first().map(|e| e.log_id.index).unwrap_or(end);
            (cached, cache_start)
        };
        if cache_start <= start {
            return Ok(cached);
        }
        let mut out = Vec::new();
        for e in self.wal.read(start..cache_start).await.map_err(io_err)? {
            out.push(decode(&e)?);
        }
        out.extend(cached);
        Ok(out)
    }
}

pub fn encode(entry: &Entry) -> Result<wal::Entry, io::Error> {
    let mut payload = vec![ENCODING_VERSION];
    postcard::to_io(entry, &mut payload).map_err(io_err)?;
    Ok(wal::Entry {
        index: entry.log_id.index,
        term: term_of(&entry.log_id),
        payload: Bytes::from(payload),
    })
}

pub fn decode(e: &wal::Entry) -> Result<Entry, io::Error> {
    match e.payload.split_first() {
        Some((&ENCODING_VERSION, body)) => {
            let entry: Entry = postcard::from_bytes(body).map_err(io_err)?;
            if entry.log_id.index != e.index || term_of(&entry.log_id) != e.term {
                return Err(io_err(format!(
                    "log entry at index {} term {} holds log id {}",
                    e.index, e.term, entry.log_id
                )));
            }
            Ok(entry)
        }
        Some((v, _)) => Err(io_err(format!(
            "log entry {} has unknown encoding version {v}",
            e.index
        ))),
        None => Err(io_err(format!("log entry {} is empty", e.index))),
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        self.read(start, end).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.wal.meta(MetaKey::Vote) {
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(io_err),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.wal.state();
        let purged = state.purged.map(|(i, t)| log_id(i, t));
        let wal_last = state.last.map(|(i, t)| log_id(i, t));
        let cached_last = self
            .cache()
            .entries
            .last_key_value()
            .map(|(_, (e, _))| e.log_id);
        let last = match (wal_last, cached_last) {
            (Some(a), Some(b)) => Some(if b.index > a.index { b } else { a }),
            (a, b) => a.or(b),
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = postcard::to_allocvec(vote).map_err(io_err)?;
        self.wal.save_vote(Bytes::from(bytes)).await.map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        {
            let mut last = self
                .committed_saved
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < COMMITTED_EVERY) {
                return Ok(());
            }
            *last = Some(std::time::Instant::now());
        }
        let bytes = postcard::to_allocvec(&committed).map_err(io_err)?;
        // Ordered with the log IO by the writer; not awaited (see the module doc).
        drop(
            self.wal
                .save_meta_with_notice(MetaKey::Committed, Bytes::from(bytes)),
        );
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        match self.wal.meta(MetaKey::Committed) {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(io_err),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        {
            let mut cache = self.cache();
            for entry in entries {
                let e = encode(&entry)?;
                let size = e.payload.len();
                if let Some((_, old)) = cache.entries.insert(e.index, (entry, size)) {
                    cache.bytes -= old;
                }
                cache.bytes += size;
                encoded.push(e);
            }
        }
        let Some(last) = encoded.last().map(|e| e.index) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        metrics::histogram!(crate::telemetry::APPEND_ENTRIES).record(encoded.len() as f64);
        let notice = self.wal.append_with_notice(encoded);
        let cache = self.cache.clone();
        tokio::spawn(async move {
            let result = notice
                .await
                .unwrap_or_else(|_| Err(wal::WalError::Fatal("writer thread is gone".into())));
            if result.is_ok() {
                let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                c.durable = c.durable.max(last);
                c.evict();
            }
            callback.io_completed(result.map_err(io_err));
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.cache().remove_from(from);
        self.wal.truncate_from(from).await.map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.cache().remove_through(log_id.index);
        self.wal
            .purge(log_id.index, term_of(&log_id))
            .await
            .map_err(io_err)
    }
}
