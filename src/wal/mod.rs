//! The write-ahead log: segmented, checksummed, optionally LZ4-compressed, group-committed.
//!
//! It is the Raft log storage of the cluster. Its API is what openraft's log store needs,
//! without depending on openraft (entries and metadata are opaque bytes and `u64`s):
//! [`Wal::append`] (resolves once the entries are durable), [`Wal::read`] by index
//! range, [`Wal::truncate_from`] (drop a conflicting suffix), [`Wal::purge`] (drop a
//! prefix), [`Wal::state`] (first, last and purged positions), and the small values
//! that must be durable in order with the log: [`Wal::save_vote`],
//! [`Wal::save_committed`], [`Wal::save_membership`] (read back with [`Wal::meta`]).
//!
//! # Async and blocking
//! Every method that does file I/O is either `async` (the work runs on the writer
//! thread or in `spawn_blocking`, never on the runtime's threads) or named
//! `_blocking` (for tests, tools and threads outside a runtime). [`Wal::state`] and
//! [`Wal::meta`] only read memory. Dropping a [`Wal`] waits for the writer to finish
//! what is queued, like [`Wal::close_blocking`]; async code should
//! [`close`](Wal::close) it instead.
//!
//! # Files
//! `data_dir/wal/<first_index:020>.wal` segments, each a 32-byte header followed by batch
//! frames and a zero-filled tail; the byte layouts are in [`format`]. Segments are
//! created at their full `segment_size`, zero-filled, one ahead of need
//! (`spare.wal.tmp`, filled on a helper thread once the active segment is half full),
//! and renamed into place with their header written and synced, so a segment file never
//! exists without a complete header. The purge marker and the metadata live in the
//! node's SQLite state database (`data_dir/state/`, see [`crate::state`]). `data_dir`,
//! `wal/` and `state/` are fsynced when opened (so their creation is durable), and
//! `wal/` again after every file created, renamed or removed in it.
//!
//! # Writing
//! One writer thread owns every mutation, and runs them in the order they were
//! submitted. Appenders queue their entries; the writer takes everything already queued
//! (up to `batch_size` entries, 16 MiB, or `flush_interval` of gathering; it never
//! sleeps waiting for more, so appends that arrive during a sync form the next group),
//! writes it as one frame and syncs once (`fdatasync`), then answers every appender of
//! the group. A group that would exceed the frame limit (`max_frame_bytes`) is split;
//! only an append too large on its own fails (`TooLarge`), and nothing else with it.
//! A failed write or sync is fatal: the log refuses all further
//! work and reports the error; it never retries, since a failed fsync may have dropped
//! the dirty pages it was meant to persist. Truncation, purge and metadata saves run on
//! the same thread, in order with appends: each is durable before the next command
//! starts, so after a crash the log and the metadata always reflect a prefix of the
//! submitted commands.
//!
//! # Opening
//! Leftover `*.wal.tmp` files are removed (and logged). Every segment is read and every
//! frame's checksum verified, which rebuilds the index of batches (measured 0.2 s per
//! GiB from the page cache, 0.6 s cold; see `bench/wal.sh`). A zero tail after the last
//! frame is the normal end of the data. A torn last frame of the last segment is zeroed
//! out (logged with what was cut). Any other bad frame is [`WalError::Corruption`]
//! naming the file and offset; a wrong magic or version, or a missing segment, has its
//! own error. Nothing is skipped. The last segment is zero-filled up to `segment_size`
//! if it is shorter (a log written before preallocation, or cut by hand).
//!
//! # Reading
//! Readers take a shared lock on the index, then read and verify the batches they need
//! without holding it. A read that starts at or below the purge marker is
//! [`WalError::Purged`]: that node needs a snapshot.
//!
//! # Retention
//! `purge(index)` moves the purge marker (persisted first). Whole segments whose entries
//! are all at or below it are deleted once they are also older than `retention`.

pub mod format;
pub mod inspect;
pub mod segment;
mod writer;

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use format::Entry;
use format::{Batch, SegmentHeader, SEGMENT_HEADER};
use segment::BatchLoc;
use writer::{Command, Writer};

use crate::state::{keys, StateDb, StateError};

/// How the log syncs files and directories; a seam for tests that inject sync failures
/// or record what was synced.
pub trait Syncer: Send + Sync + 'static {
    /// Make what was written to a segment durable (after every group of appends).
    fn sync(&self, file: &File) -> io::Result<()>;

    /// Make a directory's entries durable (after files in it were created, renamed or
    /// removed, and when the log's directories are opened).
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// `fdatasync(2)`.
pub struct DataSync;

impl Syncer for DataSync {
    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// Log settings.
#[derive(Clone)]
pub struct WalOptions {
    /// The `wal/` directory.
    pub dir: PathBuf,
    /// The node state directory (`state/`), where the purge marker and metadata live.
    pub state_dir: PathBuf,
    /// Size a segment is created (zero-filled) at; the next one starts once the data
    /// reaches it.
    pub segment_size: u64,
    /// Most entries in one group (one frame, one sync).
    pub batch_size: usize,
    /// How long a group waits for more entries before it is written.
    pub flush_interval: Duration,
    pub compression: bool,
    /// Sync after every group. Off: acknowledged entries can be lost on power failure.
    pub fsync: bool,
    pub retention: Duration,
    /// Largest uncompressed batch body in one frame (at most
    /// [`format::MAX_BATCH_BYTES`], the default). A group that would be larger is
    /// split; a single append that is larger fails with [`WalError::TooLarge`].
    pub max_frame_bytes: usize,
    pub syncer: Arc<dyn Syncer>,
}

impl WalOptions {
    /// Defaults matching `[wal]`'s, under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        WalOptions {
            dir: data_dir.join("wal"),
            state_dir: data_dir.join("state"),
            segment_size: 64 << 20,
            batch_size: 1000,
            flush_interval: Duration::from_millis(2),
            compression: true,
            fsync: true,
            retention: Duration::from_secs(168 * 3600),
            max_frame_bytes: format::MAX_BATCH_BYTES,
            syncer: Arc::new(DataSync),
        }
    }

    pub fn from_config(c: &crate::config::Config) -> Self {
        WalOptions {
            segment_size: c.wal.segment_size_mb << 20,
            batch_size: c.wal.batch_size,
            flush_interval: Duration::from_millis(c.wal.flush_interval_ms),
            compression: c.wal.compression,
            fsync: c.wal.fsync,
            retention: Duration::from_secs(c.wal.retention_hours * 3600),
            ..WalOptions::new(&c.node.data_dir)
        }
    }

    /// The length segments are created at.
    fn prealloc_len(&self) -> u64 {
        self.segment_size.max(SEGMENT_HEADER as u64)
    }

    fn frame_limit(&self) -> usize {
        self.max_frame_bytes.min(format::MAX_BATCH_BYTES)
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), WalError> {
        self.syncer
            .sync_dir(dir)
            .map_err(WalError::io("sync directory", dir))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{file}: not a WolfScale WAL segment (bad magic)")]
    BadMagic { file: PathBuf },
    #[error("{file}: unsupported WAL format version {version}")]
    UnsupportedVersion { file: PathBuf, version: u16 },
    #[error("missing WAL segment: {file} starts at index {found}, expected {expected}")]
    MissingSegment {
        file: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("entries up to {purged} were purged; index {requested} needs a snapshot")]
    Purged { requested: u64, purged: u64 },
    #[error("append out of order: expected index {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("cannot truncate at {index}: at or below the purge marker {purged}")]
    TruncateBelowPurge { index: u64, purged: u64 },
    #[error("append of {bytes} bytes exceeds the {max}-byte frame limit")]
    TooLarge { bytes: usize, max: usize },
    #[error("the log stopped after a failed write or sync: {0}")]
    Fatal(String),
    #[error(transparent)]
    State(#[from] StateError),
}

impl WalError {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
        move |source| WalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn from_format(file: &Path, offset: u64, e: format::FormatError) -> WalError {
        match e {
            format::FormatError::BadMagic => WalError::BadMagic {
                file: file.to_path_buf(),
            },
            format::FormatError::Version(version) => WalError::UnsupportedVersion {
                file: file.to_path_buf(),
                version,
            },
            other => WalError::Corruption {
                file: file.to_path_buf(),
                offset,
                reason: other.to_string(),
            },
        }
    }
}

/// First/last/purged positions, as openraft's `get_log_state` wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogState {
    /// `(index, term)` of the last purged entry.
    pub purged: Option<(u64, u64)>,
    /// `(index, term)` of the last entry, or the purged one when nothing is after it.
    pub last: Option<(u64, u64)>,
    /// First readable index, if any entry is readable.
    pub first_index: Option<u64>,
}

/// Small opaque values kept beside the log and saved in order with it (openraft's vote,
/// committed log id and membership, encoded however its adapter likes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    Vote,
    Committed,
    Membership,
}

impl MetaKey {
    pub const ALL: [MetaKey; 3] = [MetaKey::Vote, MetaKey::Committed, MetaKey::Membership];

    fn state_key(self) -> &'static str {
        match self {
            MetaKey::Vote => keys::WAL_VOTE,
            MetaKey::Committed => keys::WAL_COMMITTED,
            MetaKey::Membership => keys::WAL_MEMBERSHIP,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Resolves when a queued command is done (durable, for writes): the shape of
/// openraft's `IOFlushed` callback.
pub type Notice = tokio::sync::oneshot::Receiver<Result<(), WalError>>;

struct Segment {
    path: PathBuf,
    header: SegmentHeader,
    file: Arc<File>,
    batches: Vec<BatchLoc>,
    /// End of the data (header and frames); the zero tail follows.
    size: u64,
}

impl Segment {
    fn last_index(&self) -> Option<u64> {
        self.batches.last().map(BatchLoc::last_index)
    }
}

#[derive(Default)]
struct Index {
    segments: Vec<Segment>,
    purged: Option<(u64, u64)>,
    last: Option<(u64, u64)>,
    /// Durable metadata values, by [`MetaKey::slot`].
    meta: [Option<Bytes>; 3],
    fatal: Option<String>,
}

impl Index {
    fn next_index(&self) -> Option<u64> {
        match (self.last, self.purged) {
            (Some((l, _)), Some((p, _))) => Some(l.max(p) + 1),
            (Some((l, _)), None) => Some(l + 1),
            (None, Some((p, _))) => Some(p + 1),
            (None, None) => None,
        }
    }
}

/// The log. Cheap to share behind an `Arc`; dropping it stops the writer after it has
/// finished what was queued (blocking; see [`Wal::close`]).
pub struct Wal {
    index: Arc<RwLock<Index>>,
    tx: Option<mpsc::Sender<Command>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Wal {
    /// Open (or create) the log: recover, verify, rebuild the index, start the writer.
    /// The recovery (which reads every segment) runs in `spawn_blocking`.
    pub async fn open_async(opts: WalOptions) -> Result<Wal, WalError> {
        tokio::task::spawn_blocking(move || Wal::open_blocking(opts))
            .await
            .map_err(|e| WalError::Fatal(format!("opening the log failed: {e}")))?
    }

    /// Old name of [`open_blocking`](Self::open_blocking), kept only because
    /// `examples/wal_fuzz_seeds.rs` still calls it; new code uses `open_blocking` or
    /// [`open_async`](Self::open_async).
    #[doc(hidden)]
    pub fn open(opts: WalOptions) -> Result<Wal, WalError> {
        Wal::open_blocking(opts)
    }

    /// [`open_async`](Self::open_async) on the calling thread.
    pub fn open_blocking(opts: WalOptions) -> Result<Wal, WalError> {
        create_dir_durable(&opts, &opts.dir)?;
        create_dir_durable(&opts, &opts.state_dir)?;
        let state = StateDb::open(&opts.state_dir)?;
        opts.sync_dir(&opts.state_dir)?;
        let purged = state.get_pair(keys::WAL_PURGED)?;
        let mut index = recover(&opts, purged.map(|(p, _)| p))?;
        index.purged = purged;
        for key in MetaKey::ALL {
            index.meta[key.slot()] = state.get(key.state_key())?.map(Bytes::from);
        }
        let index = Arc::new(RwLock::new(index));
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(opts, index.clone(), state, rx);
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| WalError::Io {
                op: "spawn writer for",
                path: PathBuf::from("wal"),
                source,
            })?;
        Ok(Wal {
            index,
            tx: Some(tx),
            writer: Some(handle),
        })
    }

    fn submit(&self, make: impl FnOnce(writer::Reply) -> Command) -> Notice {
        let (reply, rx) = tokio::sync::oneshot::channel();
        // If the writer is gone the command (and its reply sender) is dropped, and the
        // receiver reports that as `Fatal("writer thread is gone")`.
        if let Some(tx) = &self.tx {
            tx.send(make(reply)).ok();
        }
        rx
    }

    async fn wait(rx: Notice) -> Result<(), WalError> {
        rx.await
            .unwrap_or_else(|_| Err(WalError::Fatal("writer thread is gone".into())))
    }

    fn wait_blocking(rx: Notice) -> Result<(), WalError> {
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(WalError::Fatal("writer thread is gone".into())))
    }

    /// Append consecutive entries; resolves once they are durable (synced, or written
    /// when `fsync` is off). The first must follow the last entry (or the purge marker).
    pub async fn append(&self, entries: Vec<Entry>) -> Result<(), WalError> {
        Self::wait(self.append_with_notice(entries)).await
    }

    /// [`append`](Self::append) for threads outside an async runtime.
    pub fn append_blocking(&self, entries: Vec<Entry>) -> Result<(), WalError> {
        Self::wait_blocking(self.append_with_notice(entries))
    }

    /// Queue an append and get the receiver that resolves when it is durable (the shape
    /// of openraft's `IOFlushed` callback). Queuing never blocks.
    pub fn append_with_notice(&self, entries: Vec<Entry>) -> Notice {
        self.submit(|r| Command::Append(entries, r))
    }

    /// Delete entries from `index` on (Raft conflict resolution).
    pub async fn truncate_from(&self, index: u64) -> Result<(), WalError> {
        Self::wait(self.submit(|r| Command::Truncate(index, r))).await
    }

    pub fn truncate_from_blocking(&self, index: u64) -> Result<(), WalError> {
        Self::wait_blocking(self.submit(|r| Command::Truncate(index, r)))
    }

    /// Mark entries up to `index` (whose term is `term`) as purged, persist the marker,
    /// and delete whole segments below it that are older than the retention period.
    pub async fn purge(&self, index: u64, term: u64) -> Result<(), WalError> {
        Self::wait(self.submit(|r| Command::Purge(index, term, r))).await
    }

    pub fn purge_blocking(&self, index: u64, term: u64) -> Result<(), WalError> {
        Self::wait_blocking(self.submit(|r| Command::Purge(index, term, r)))
    }

    /// Apply the retention rule as of `now` (the node calls this periodically).
    pub async fn retain(&self, now: SystemTime) -> Result<(), WalError> {
        Self::wait(self.submit(|r| Command::Retain(now, r))).await
    }

    pub fn retain_blocking(&self, now: SystemTime) -> Result<(), WalError> {
        Self::wait_blocking(self.submit(|r| Command::Retain(now, r)))
    }

    /// Persist `value` under `key`, in order with the log's other commands: everything
    /// submitted before it is durable first, and it is durable before anything
    /// submitted after it runs. Resolves once it is durable (an SQLite commit; saves
    /// queued back to back share one transaction).
    pub async fn save_meta(&self, key: MetaKey, value: Bytes) -> Result<(), WalError> {
        Self::wait(self.save_meta_with_notice(key, value)).await
    }

    pub fn save_meta_blocking(&self, key: MetaKey, value: Bytes) -> Result<(), WalError> {
        Self::wait_blocking(self.save_meta_with_notice(key, value))
    }

    /// Queue a [`save_meta`](Self::save_meta); queuing never blocks.
    pub fn save_meta_with_notice(&self, key: MetaKey, value: Bytes) -> Notice {
        self.submit(|r| Command::SaveMeta(key, value, r))
    }

    /// [`save_meta`](Self::save_meta) of [`MetaKey::Vote`].
    pub async fn save_vote(&self, vote: Bytes) -> Result<(), WalError> {
        self.save_meta(MetaKey::Vote, vote).await
    }

    /// [`save_meta`](Self::save_meta) of [`MetaKey::Committed`].
    pub async fn save_committed(&self, committed: Bytes) -> Result<(), WalError> {
        self.save_meta(MetaKey::Committed, committed).await
    }

    /// [`save_meta`](Self::save_meta) of [`MetaKey::Membership`].
    pub async fn save_membership(&self, membership: Bytes) -> Result<(), WalError> {
        self.save_meta(MetaKey::Membership, membership).await
    }

    /// The last durable value saved under `key` (read back from the state database at
    /// open). Memory only.
    pub fn meta(&self, key: MetaKey) -> Option<Bytes> {
        read_lock(&self.index).meta[key.slot()].clone()
    }

    /// Memory only.
    pub fn state(&self) -> LogState {
        let ix = read_lock(&self.index);
        let first_index = ix
            .segments
            .first()
            .map(|s| s.header.first_index)
            .and_then(|first| {
                let first = ix.purged.map_or(first, |(p, _)| first.max(p + 1));
                ix.last.filter(|(l, _)| *l >= first).map(|_| first)
            });
        let last = match (ix.last, ix.purged) {
            (Some(l), Some(p)) if p.0 >= l.0 => Some(p),
            (None, p) => p,
            (l, _) => l,
        };
        LogState {
            purged: ix.purged,
            last,
            first_index,
        }
    }

    /// Bytes of segment headers and frames: the log's data, without zero tails and the
    /// spare segment. Memory only.
    pub fn log_bytes(&self) -> u64 {
        read_lock(&self.index).segments.iter().map(|s| s.size).sum()
    }

    /// Entries with indexes in `range` that exist (the range may run past the end). The
    /// file reads run in `spawn_blocking`.
    pub async fn read(&self, range: Range<u64>) -> Result<Vec<Entry>, WalError> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || read_range(&index, range))
            .await
            .map_err(|e| WalError::Fatal(format!("read task failed: {e}")))?
    }

    /// [`read`](Self::read) on the calling thread.
    pub fn read_blocking(&self, range: Range<u64>) -> Result<Vec<Entry>, WalError> {
        read_range(&self.index, range)
    }

    /// Stop the writer once it has finished what was queued, without blocking the
    /// runtime.
    pub async fn close(mut self) -> Result<(), WalError> {
        let handle = self.stop();
        tokio::task::spawn_blocking(move || join_writer(handle))
            .await
            .map_err(|e| WalError::Fatal(format!("close task failed: {e}")))?
    }

    /// [`close`](Self::close) on the calling thread.
    pub fn close_blocking(mut self) -> Result<(), WalError> {
        join_writer(self.stop())
    }

    fn stop(&mut self) -> Option<std::thread::JoinHandle<()>> {
        drop(self.tx.take());
        self.writer.take()
    }
}

fn join_writer(handle: Option<std::thread::JoinHandle<()>>) -> Result<(), WalError> {
    match handle.map(|h| h.join()) {
        Some(Err(_)) => Err(WalError::Fatal("the writer thread panicked".into())),
        _ => Ok(()),
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        join_writer(self.stop()).ok();
    }
}

fn read_lock(ix: &RwLock<Index>) -> std::sync::RwLockReadGuard<'_, Index> {
    ix.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock(ix: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    ix.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
thread_local! {
    /// Reads done by this thread through `read_range`: lets tests see where file reads run.
    static RANGE_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn read_range(index: &RwLock<Index>, range: Range<u64>) -> Result<Vec<Entry>, WalError> {
    #[cfg(test)]
    RANGE_READS.with(|c| c.set(c.get() + 1));
    let wanted = {
        let ix = read_lock(index);
        if let Some(f) = &ix.fatal {
            return Err(WalError::Fatal(f.clone()));
        }
        if let Some((p, _)) = ix.purged {
            if range.start <= p && range.start < range.end {
                return Err(WalError::Purged {
                    requested: range.start,
                    purged: p,
                });
            }
        }
        locate(&ix, &range)
    };
    let mut out = Vec::new();
    for (path, file, loc) in wanted {
        let entries = read_entries(&path, &file, &loc)?;
        out.extend(entries.into_iter().filter(|e| range.contains(&e.index)));
    }
    Ok(out)
}

/// Batches overlapping `range`, with their files.
fn locate(ix: &Index, range: &Range<u64>) -> Vec<(PathBuf, Arc<File>, BatchLoc)> {
    let mut out = Vec::new();
    for seg in &ix.segments {
        if seg.last_index().is_none_or(|l| l < range.start) || seg.header.first_index >= range.end {
            continue;
        }
        let from = seg
            .batches
            .partition_point(|b| b.last_index() < range.start);
        for b in seg.batches[from..]
            .iter()
            .take_while(|b| b.first_index < range.end)
        {
            out.push((seg.path.clone(), seg.file.clone(), *b));
        }
    }
    out
}

/// Read, verify and decode one batch.
fn read_entries(path: &Path, file: &File, loc: &BatchLoc) -> Result<Vec<Entry>, WalError> {
    let mut buf = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut buf, loc.offset)
        .map_err(WalError::io("read", path))?;
    Batch::from_frame(Bytes::from(buf))
        .and_then(|b| b.entries())
        .map_err(|e| WalError::from_format(path, loc.offset, e))
}

/// Segment files in `dir`, sorted by the first index in their names.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(WalError::io("list", dir))? {
        let path = entry.map_err(WalError::io("list", dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            files.push((first, path));
        }
    }
    files.sort();
    Ok(files)
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.wal"))
}

/// Where the next segment is zero-filled ahead of need.
fn spare_path(dir: &Path) -> PathBuf {
    dir.join("spare.wal.tmp")
}

/// Create `dir` (and missing parents), then fsync it and its parent: the entry for a
/// new directory is only durable once its parent is synced, and it is done on every open
/// since an earlier run may have crashed between the `mkdir` and the sync. Parents that
/// had to be created are synced too.
fn create_dir_durable(opts: &WalOptions, dir: &Path) -> Result<(), WalError> {
    let mut created = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        created.push(d.to_path_buf());
        p = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(WalError::io("create", dir))?;
    let mut to_sync = vec![dir.to_path_buf(), parent_dir(dir)];
    to_sync.extend(created.iter().map(|c| parent_dir(c)));
    to_sync.sort();
    to_sync.dedup();
    for d in to_sync {
        opts.sync_dir(&d)?;
    }
    Ok(())
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Remove `*.wal.tmp` files: segments being rewritten or zero-filled when an earlier run
/// stopped. They were never renamed into place, so nothing in them is part of the log.
fn remove_stale_tmp(opts: &WalOptions) -> Result<(), WalError> {
    let dir = &opts.dir;
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(WalError::io("list", dir))? {
        let path = entry.map_err(WalError::io("list", dir))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".wal.tmp"))
        {
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            tracing::warn!(file = %path.display(), bytes, "removing a stale temporary WAL file left by an interrupted run");
            std::fs::remove_file(&path).map_err(WalError::io("remove", &path))?;
            removed = true;
        }
    }
    if removed {
        opts.sync_dir(dir)?;
    }
    Ok(())
}

/// Read every segment, verify it, cut a torn tail, and build the index. Segments must
/// continue one another, except that one may start right after the purge marker.
fn recover(opts: &WalOptions, purged: Option<u64>) -> Result<Index, WalError> {
    let dir = &opts.dir;
    remove_stale_tmp(opts)?;
    let files = segment_files(dir)?;
    let mut index = Index::default();
    let count = files.len();
    // One buffer for every segment: a fresh 64 MiB allocation per file costs more in
    // page faults than reading it.
    let mut data = Vec::new();
    let mut expected_next: Option<u64> = None;
    for (i, (named_first, path)) in files.into_iter().enumerate() {
        let is_last = i + 1 == count;
        read_into(&path, &mut data)?;
        if is_last && data.len() < SEGMENT_HEADER {
            // Not written by this version (which renames segments into place with their
            // header), but a log from an earlier one may end like this.
            tracing::warn!(file = %path.display(), bytes = data.len(), "removing a segment whose header was never completed");
            std::fs::remove_file(&path).map_err(WalError::io("remove", &path))?;
            opts.sync_dir(dir)?;
            continue;
        }
        let scan = segment::scan(&data).map_err(|e| WalError::from_format(&path, 0, e))?;
        if scan.header.first_index != named_first {
            return Err(WalError::Corruption {
                file: path,
                offset: 16,
                reason: format!(
                    "header says first index {}, file name says {named_first}",
                    scan.header.first_index
                ),
            });
        }
        if let Some(expected) = expected_next {
            let found = scan.header.first_index;
            // A gap is allowed only over entries that are all purged (the first append
            // after a snapshot install starts a segment at purged + 1).
            let purged_gap = found > expected && purged.is_some_and(|p| found <= p + 1);
            if found != expected && !purged_gap {
                return Err(WalError::MissingSegment {
                    file: path,
                    expected,
                    found,
                });
            }
        }
        if scan.batches.is_empty() && !is_last && scan.damage.is_none() {
            return Err(WalError::Corruption {
                file: path,
                offset: SEGMENT_HEADER as u64,
                reason: "sealed segment holds no entries".into(),
            });
        }
        expected_next = Some(
            scan.batches
                .last()
                .map_or(scan.header.first_index, |b| b.last_index() + 1),
        );
        if let Some(d) = &scan.damage {
            if !(is_last && d.torn_tail) {
                return Err(WalError::from_format(&path, d.offset, d.error.clone()));
            }
        }
        if let (Some(b), Some(term)) = (scan.batches.last(), scan.last_term) {
            index.last = Some((b.last_index(), term));
        }
        // Writable: after a truncation an older segment becomes the active one again.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(WalError::io("open", &path))?;
        if let Some(d) = &scan.damage {
            // Zeroing the torn bytes in place keeps the preallocation. A crash halfway
            // leaves some of them, still with no valid frame after: a torn tail again.
            tracing::warn!(file = %path.display(), offset = d.offset, bytes = d.end - d.offset, reason = %d.error, "cutting torn tail");
            zero_fill(&file, &path, d.offset, d.end)?;
            file.sync_data().map_err(WalError::io("sync", &path))?;
        }
        if is_last {
            preallocate(opts, &file, &path, data.len() as u64, scan.valid_len)?;
        }
        index.segments.push(Segment {
            path,
            header: scan.header,
            file: Arc::new(file),
            batches: scan.batches,
            size: scan.valid_len,
        });
    }
    Ok(index)
}

/// Zero-fill the active segment from its current length `file_len` up to the
/// preallocated length, unless its data already reaches that.
fn preallocate(
    opts: &WalOptions,
    file: &File,
    path: &Path,
    file_len: u64,
    data_len: u64,
) -> Result<(), WalError> {
    let want = opts.prealloc_len();
    if file_len >= want || data_len >= want {
        return Ok(());
    }
    zero_fill(file, path, file_len, want)?;
    file.sync_all().map_err(WalError::io("sync", path))
}

/// Write zero bytes over `from..to` (real writes, so the blocks are allocated and
/// written, not holes or unwritten extents).
fn zero_fill(file: &File, path: &Path, from: u64, to: u64) -> Result<(), WalError> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
    let mut off = from;
    while off < to {
        let n = CHUNK.min(to - off) as usize;
        file.write_all_at(&zeros[..n], off)
            .map_err(WalError::io("write", path))?;
        off += n as u64;
    }
    Ok(())
}

/// Write `file[..prefix_len] ++ tail` and a zero tail up to `prealloc_len` to
/// `path.tmp`, sync it, and rename it over `path`. Returns the new file, open for
/// reading and writing. The caller syncs the directory.
fn rewrite_prefix(
    path: &Path,
    file: &File,
    prefix_len: u64,
    tail: &[u8],
    prealloc_len: u64,
) -> Result<File, WalError> {
    let tmp = path.with_extension("wal.tmp");
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(WalError::io("create", &tmp))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < prefix_len {
        let n = buf.len().min((prefix_len - off) as usize);
        file.read_exact_at(&mut buf[..n], off)
            .map_err(WalError::io("read", path))?;
        out.write_all_at(&buf[..n], off)
            .map_err(WalError::io("write", &tmp))?;
        off += n as u64;
    }
    out.write_all_at(tail, prefix_len)
        .map_err(WalError::io("write", &tmp))?;
    let end = prefix_len + tail.len() as u64;
    zero_fill(&out, &tmp, end, prealloc_len.max(end))?;
    out.sync_all().map_err(WalError::io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(WalError::io("rename", &tmp))?;
    Ok(out)
}

fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<(), WalError> {
    use std::io::Read;
    buf.clear();
    let mut f = File::open(path).map_err(WalError::io("open", path))?;
    f.read_to_end(buf).map_err(WalError::io("read", path))?;
    Ok(())
}

/// Errors are not `Clone` (they hold `io::Error`); a group's appenders each get a copy
/// that keeps the message.
fn clone_error(e: &WalError) -> WalError {
    match e {
        WalError::Fatal(m) => WalError::Fatal(m.clone()),
        other => WalError::Fatal(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
