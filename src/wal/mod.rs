//! The write-ahead log: segmented, checksummed, optionally LZ4-compressed, group-committed.
//!
//! It is the Raft log storage of the cluster. Its API is what openraft's log store needs:
//! [`Wal::append`] (resolves once the entries are durable), [`Wal::read`] by index
//! range, [`Wal::truncate_from`] (drop a conflicting suffix), [`Wal::purge`] (drop a
//! prefix), and [`Wal::state`] (first, last and purged positions).
//!
//! # Files
//! `data_dir/wal/<first_index:020>.wal` segments, each a 32-byte header followed by batch
//! frames; the byte layouts are in [`format`]. A new segment is started once the active
//! one reaches `segment_size`. The purge marker lives in the node's SQLite state database
//! (`data_dir/state/`, see [`crate::state`]).
//!
//! # Writing
//! One writer thread owns every mutation. Appenders queue their entries; the writer takes
//! everything already queued (up to `batch_size` entries, 16 MiB, or `flush_interval`
//! of gathering; it never sleeps waiting for more, so appends that arrive during a sync
//! form the next group), writes it as one frame and syncs once (`fdatasync`), then
//! answers every appender of the group. A failed write or sync is fatal: the log refuses all further
//! work and reports the error; it never retries, since a failed fsync may have dropped
//! the dirty pages it was meant to persist. Truncation and purge run on the same thread,
//! in order with appends.
//!
//! # Opening
//! Every segment is read and every frame's checksum verified, which rebuilds the
//! index of batches (measured 0.2 s per GiB from the page cache, 0.6 s cold; see
//! `bench/wal.sh`).
//! A torn last frame of the last segment is cut off (logged with what was cut). Any other
//! bad frame is [`WalError::Corruption`] naming the file and offset; a wrong magic or
//! version, or a missing segment, has its own error. Nothing is skipped.
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

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

pub use format::Entry;
use format::{Batch, SegmentHeader, SEGMENT_HEADER};
use segment::BatchLoc;

use crate::state::{keys, StateDb, StateError};

/// How the log syncs a file; a seam for tests that inject sync failures.
pub trait Syncer: Send + Sync + 'static {
    fn sync(&self, file: &File) -> io::Result<()>;
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
    /// The node state directory (`state/`), where the purge marker lives.
    pub state_dir: PathBuf,
    pub segment_size: u64,
    /// Most entries in one group (one frame, one sync).
    pub batch_size: usize,
    /// How long a group waits for more entries before it is written.
    pub flush_interval: Duration,
    pub compression: bool,
    /// Sync after every group. Off: acknowledged entries can be lost on power failure.
    pub fsync: bool,
    pub retention: Duration,
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
    #[error("batch of {bytes} bytes exceeds the {max}-byte limit")]
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

struct Segment {
    path: PathBuf,
    header: SegmentHeader,
    file: Arc<File>,
    batches: Vec<BatchLoc>,
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

type Reply = tokio::sync::oneshot::Sender<Result<(), WalError>>;

/// A group stops gathering at this many body bytes (besides `batch_size` entries).
const GROUP_BYTES: usize = 16 << 20;
/// Gathering always gets at least this long, even with `flush_interval = 0`.
const MIN_GATHER: Duration = Duration::from_micros(200);

enum Command {
    Append(Vec<Entry>, Reply),
    Truncate(u64, Reply),
    Purge(u64, u64, Reply),
    Retain(SystemTime, Reply),
}

/// The log. Cheap to share behind an `Arc`; dropping it stops the writer after it has
/// finished what was queued.
pub struct Wal {
    index: Arc<RwLock<Index>>,
    tx: Option<mpsc::Sender<Command>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Wal {
    /// Open (or create) the log: recover, verify, rebuild the index, start the writer.
    pub fn open(opts: WalOptions) -> Result<Wal, WalError> {
        std::fs::create_dir_all(&opts.dir).map_err(WalError::io("create", &opts.dir))?;
        let state = StateDb::open(&opts.state_dir)?;
        let purged = state.get_pair(keys::WAL_PURGED)?;
        let mut index = recover(&opts.dir, purged.map(|(p, _)| p))?;
        index.purged = purged;
        let index = Arc::new(RwLock::new(index));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            opts,
            index: index.clone(),
            state,
            frame: Vec::new(),
            scratch: format::Scratch::default(),
            rx,
            parked: None,
        };
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

    fn submit(
        &self,
        make: impl FnOnce(Reply) -> Command,
    ) -> tokio::sync::oneshot::Receiver<Result<(), WalError>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        // If the writer is gone the command (and its reply sender) is dropped, and the
        // receiver reports that as `Fatal("writer thread is gone")`.
        if let Some(tx) = &self.tx {
            tx.send(make(reply)).ok();
        }
        rx
    }

    async fn wait(
        rx: tokio::sync::oneshot::Receiver<Result<(), WalError>>,
    ) -> Result<(), WalError> {
        rx.await
            .unwrap_or_else(|_| Err(WalError::Fatal("writer thread is gone".into())))
    }

    fn wait_blocking(
        rx: tokio::sync::oneshot::Receiver<Result<(), WalError>>,
    ) -> Result<(), WalError> {
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(WalError::Fatal("writer thread is gone".into())))
    }

    /// Append consecutive entries; resolves once they are durable (synced, or written
    /// when `fsync` is off). The first must follow the last entry (or the purge marker).
    pub async fn append(&self, entries: Vec<Entry>) -> Result<(), WalError> {
        Self::wait(self.submit(|r| Command::Append(entries, r))).await
    }

    /// [`append`](Self::append) for threads outside an async runtime.
    pub fn append_blocking(&self, entries: Vec<Entry>) -> Result<(), WalError> {
        Self::wait_blocking(self.submit(|r| Command::Append(entries, r)))
    }

    /// Queue an append and get the receiver that resolves when it is durable (the shape
    /// of openraft's `IOFlushed` callback).
    pub fn append_with_notice(
        &self,
        entries: Vec<Entry>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), WalError>> {
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
    pub fn retain_blocking(&self, now: SystemTime) -> Result<(), WalError> {
        Self::wait_blocking(self.submit(|r| Command::Retain(now, r)))
    }

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

    /// Entries with indexes in `range` that exist (the range may run past the end).
    pub fn read(&self, range: Range<u64>) -> Result<Vec<Entry>, WalError> {
        let wanted = {
            let ix = read_lock(&self.index);
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
}

impl Drop for Wal {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.writer.take() {
            h.join().ok();
        }
    }
}

fn read_lock(ix: &RwLock<Index>) -> std::sync::RwLockReadGuard<'_, Index> {
    ix.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock(ix: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    ix.write().unwrap_or_else(|e| e.into_inner())
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

/// Read every segment, verify it, cut a torn tail, and build the index. Segments must
/// continue one another, except that one may start right after the purge marker.
fn recover(dir: &Path, purged: Option<u64>) -> Result<Index, WalError> {
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
            tracing::warn!(file = %path.display(), bytes = data.len(), "removing a segment whose header was never completed");
            std::fs::remove_file(&path).map_err(WalError::io("remove", &path))?;
            sync_dir(dir)?;
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
        let mut size = scan.valid_len;
        if let Some(d) = &scan.damage {
            if !(is_last && d.torn_tail) {
                return Err(WalError::from_format(&path, d.offset, d.error.clone()));
            }
            let cut = data.len() as u64 - d.offset;
            tracing::warn!(file = %path.display(), offset = d.offset, bytes = cut, reason = %d.error, "cutting torn tail");
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(WalError::io("open", &path))?;
            f.set_len(d.offset)
                .map_err(WalError::io("truncate", &path))?;
            f.sync_all().map_err(WalError::io("sync", &path))?;
            size = d.offset;
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
        let file = Arc::new(file);
        index.segments.push(Segment {
            path,
            header: scan.header,
            file,
            batches: scan.batches,
            size,
        });
    }
    Ok(index)
}

/// Write `file[..prefix_len] ++ tail` to `path.tmp`, sync it, and rename it over `path`.
/// Returns the new file, open for reading and writing.
fn rewrite_prefix(
    path: &Path,
    file: &File,
    prefix_len: u64,
    tail: &[u8],
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

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WalError::io("sync", dir))
}

/// The single writer: owns the active segment and every mutation.
struct Writer {
    opts: WalOptions,
    index: Arc<RwLock<Index>>,
    state: StateDb,
    rx: mpsc::Receiver<Command>,
    /// A non-append command that arrived while a group was being gathered.
    parked: Option<Command>,
    /// Reused frame buffer and encoder scratch.
    frame: Vec<u8>,
    scratch: format::Scratch,
}

impl Writer {
    fn run(mut self) {
        loop {
            let cmd = match self.parked.take() {
                Some(c) => c,
                None => match self.rx.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            match cmd {
                Command::Append(entries, reply) => self.group(entries, reply),
                Command::Truncate(at, reply) => {
                    let r = self.guarded(|w| w.truncate(at));
                    reply.send(r).ok();
                }
                Command::Purge(at, term, reply) => {
                    let r = self.guarded(|w| w.purge(at, term));
                    reply.send(r).ok();
                }
                Command::Retain(now, reply) => {
                    let r = self.guarded(|w| w.retain(now));
                    reply.send(r).ok();
                }
            }
        }
    }

    /// Run a mutation unless the log is already dead; an I/O failure kills it.
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), WalError>,
    ) -> Result<(), WalError> {
        if let Some(e) = &read_lock(&self.index).fatal {
            return Err(WalError::Fatal(e.clone()));
        }
        let r = f(self);
        if let Err(e @ WalError::Io { .. }) = &r {
            tracing::error!(error = %e, "WAL write failed; the log is stopped");
            write_lock(&self.index).fatal = Some(e.to_string());
        }
        r
    }

    /// Gather a group starting with `entries`, write it as one frame, sync once.
    fn group(&mut self, entries: Vec<Entry>, reply: Reply) {
        let started = Instant::now();
        let mut group = Group {
            next: read_lock(&self.index).next_index(),
            ..Group::default()
        };
        group.take(entries, reply);
        // Gather only what is already queued: appenders that arrive while this group is
        // being synced form the next one, so the writer never sleeps with work pending.
        while group.entries.len() < self.opts.batch_size
            && group.bytes < GROUP_BYTES
            && started.elapsed() < self.opts.flush_interval.max(MIN_GATHER)
        {
            match self.rx.try_recv() {
                Ok(Command::Append(e, r)) => group.take(e, r),
                Ok(other) => {
                    self.parked = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let result = if group.entries.is_empty() {
            Ok(())
        } else {
            self.guarded(|w| w.write_group(&group.entries))
        };
        for r in group.replies {
            r.send(result.as_ref().map(|_| ()).map_err(clone_error))
                .ok();
        }
    }

    fn write_group(&mut self, batch: &[Entry]) -> Result<(), WalError> {
        let first = batch.first().map_or(0, |e| e.index);
        let needs_roll = {
            let ix = read_lock(&self.index);
            // A new segment also when the entries do not continue the active one (the
            // first append after a purge past the end).
            ix.segments.last().is_none_or(|s| {
                s.size >= self.opts.segment_size
                    || s.last_index().map_or(s.header.first_index, |l| l + 1) != first
            })
        };
        if needs_roll {
            self.roll(first, batch.first().map_or(0, |e| e.term))?;
        }
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        format::encode_frame_with(batch, self.opts.compression, &mut frame, &mut self.scratch);
        let written = self.append_frame(&frame, first, batch);
        self.frame = frame;
        written
    }

    /// Write an encoded frame at the end of the active segment, sync, and publish it.
    fn append_frame(&mut self, frame: &[u8], first: u64, batch: &[Entry]) -> Result<(), WalError> {
        let (path, file, offset) = {
            let ix = read_lock(&self.index);
            let seg = ix
                .segments
                .last()
                .ok_or_else(|| WalError::Fatal("no active segment".into()))?;
            (seg.path.clone(), seg.file.clone(), seg.size)
        };
        file.write_all_at(frame, offset)
            .map_err(WalError::io("write", &path))?;
        if self.opts.fsync {
            self.opts
                .syncer
                .sync(&file)
                .map_err(WalError::io("sync", &path))?;
        }
        let last = batch.last().map(|e| (e.index, e.term));
        let mut ix = write_lock(&self.index);
        if let Some(seg) = ix.segments.last_mut() {
            seg.batches.push(BatchLoc {
                first_index: first,
                count: batch.len() as u32,
                offset,
                len: frame.len() as u32,
            });
            seg.size = offset + frame.len() as u64;
        }
        ix.last = last;
        Ok(())
    }

    /// Start a new segment whose first entry is `first_index`. An active segment that
    /// holds no entries is replaced rather than left behind.
    fn roll(&mut self, first_index: u64, first_term: u64) -> Result<(), WalError> {
        let empty = {
            let ix = read_lock(&self.index);
            ix.segments
                .last()
                .filter(|s| s.batches.is_empty())
                .map(|s| s.path.clone())
        };
        if let Some(old) = empty {
            std::fs::remove_file(&old).map_err(WalError::io("remove", &old))?;
            write_lock(&self.index).segments.pop();
        }
        let path = segment_path(&self.opts.dir, first_index);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(WalError::io("create", &path))?;
        let header = SegmentHeader {
            first_index,
            first_term,
        };
        file.write_all_at(&header.encode(), 0)
            .map_err(WalError::io("write", &path))?;
        file.sync_all().map_err(WalError::io("sync", &path))?;
        sync_dir(&self.opts.dir)?;
        let seg = Segment {
            path,
            header,
            file: Arc::new(file),
            batches: Vec::new(),
            size: SEGMENT_HEADER as u64,
        };
        write_lock(&self.index).segments.push(seg);
        Ok(())
    }

    fn truncate(&mut self, at: u64) -> Result<(), WalError> {
        let purged = read_lock(&self.index).purged;
        if let Some((p, _)) = purged {
            if at <= p {
                return Err(WalError::TruncateBelowPurge {
                    index: at,
                    purged: p,
                });
            }
        }
        // Whole segments at or after `at` go first, newest first.
        loop {
            let doomed = {
                let ix = read_lock(&self.index);
                ix.segments
                    .last()
                    .filter(|s| s.header.first_index >= at)
                    .map(|s| s.path.clone())
            };
            let Some(path) = doomed else { break };
            std::fs::remove_file(&path).map_err(WalError::io("remove", &path))?;
            sync_dir(&self.opts.dir)?;
            let mut ix = write_lock(&self.index);
            ix.segments.pop();
            ix.last = None;
        }
        self.cut_active(at)?;
        let last = self.last_of_active()?;
        write_lock(&self.index).last = last;
        Ok(())
    }

    /// Within the active segment, drop every entry from `at` on.
    fn cut_active(&mut self, at: u64) -> Result<(), WalError> {
        let (path, file, keep_from) = {
            let ix = read_lock(&self.index);
            let Some(seg) = ix.segments.last() else {
                return Ok(());
            };
            let pos = seg.batches.partition_point(|b| b.last_index() < at);
            let Some(b) = seg.batches.get(pos) else {
                return Ok(());
            };
            (seg.path.clone(), seg.file.clone(), (pos, *b))
        };
        let (pos, loc) = keep_from;
        let kept: Vec<Entry> = if loc.first_index < at {
            let entries = read_entries(&path, &file, &loc)?;
            entries.into_iter().filter(|e| e.index < at).collect()
        } else {
            Vec::new()
        };
        if kept.is_empty() {
            file.set_len(loc.offset)
                .map_err(WalError::io("truncate", &path))?;
            file.sync_all().map_err(WalError::io("sync", &path))?;
            let mut ix = write_lock(&self.index);
            if let Some(seg) = ix.segments.last_mut() {
                seg.batches.truncate(pos);
                seg.size = loc.offset;
            }
            return Ok(());
        }
        // Part of a batch survives. Cutting the file and rewriting that part in place
        // would lose acknowledged entries to a crash in between, so the new segment is
        // built beside the old one and renamed over it.
        let mut frame = Vec::new();
        format::encode_frame(&kept, self.opts.compression, &mut frame);
        let new_file = rewrite_prefix(&path, &file, loc.offset, &frame)?;
        sync_dir(&self.opts.dir)?;
        let mut ix = write_lock(&self.index);
        if let Some(seg) = ix.segments.last_mut() {
            seg.batches.truncate(pos);
            seg.batches.push(BatchLoc {
                first_index: loc.first_index,
                count: kept.len() as u32,
                offset: loc.offset,
                len: frame.len() as u32,
            });
            seg.size = loc.offset + frame.len() as u64;
            seg.file = Arc::new(new_file);
        }
        Ok(())
    }

    /// `(index, term)` of the last entry now in the log.
    fn last_of_active(&self) -> Result<Option<(u64, u64)>, WalError> {
        let found = {
            let ix = read_lock(&self.index);
            ix.segments.iter().rev().find_map(|s| {
                s.batches
                    .last()
                    .map(|b| (s.path.clone(), s.file.clone(), *b))
            })
        };
        let Some((path, file, loc)) = found else {
            return Ok(None);
        };
        let entries = read_entries(&path, &file, &loc)?;
        Ok(entries.last().map(|e| (e.index, e.term)))
    }

    fn purge(&mut self, at: u64, term: u64) -> Result<(), WalError> {
        let current = read_lock(&self.index).purged;
        if current.is_some_and(|(p, _)| p >= at) {
            return Ok(());
        }
        self.state.set_pair(keys::WAL_PURGED, (at, term))?;
        write_lock(&self.index).purged = Some((at, term));
        self.retain(SystemTime::now())
    }

    /// Delete whole segments that are fully purged and older than the retention period.
    /// The active (last) segment is never deleted.
    fn retain(&mut self, now: SystemTime) -> Result<(), WalError> {
        loop {
            let doomed = {
                let ix = read_lock(&self.index);
                let Some((purged, _)) = ix.purged else {
                    return Ok(());
                };
                match ix.segments.first() {
                    Some(s)
                        if ix.segments.len() > 1 && s.last_index().is_some_and(|l| l <= purged) =>
                    {
                        let age = s
                            .file
                            .metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|m| now.duration_since(m).ok())
                            .unwrap_or_default();
                        (age >= self.opts.retention).then(|| s.path.clone())
                    }
                    _ => None,
                }
            };
            let Some(path) = doomed else { return Ok(()) };
            std::fs::remove_file(&path).map_err(WalError::io("remove", &path))?;
            sync_dir(&self.opts.dir)?;
            tracing::info!(file = %path.display(), "purged WAL segment");
            write_lock(&self.index).segments.remove(0);
        }
    }
}

/// Appends gathered into one frame.
#[derive(Default)]
struct Group {
    entries: Vec<Entry>,
    replies: Vec<Reply>,
    /// The index the next accepted append must start at (`None`: empty log).
    next: Option<u64>,
    bytes: usize,
}

impl Group {
    /// Accept an append into the group, or answer it with its error right away.
    fn take(&mut self, entries: Vec<Entry>, reply: Reply) {
        let size = format::body_len(&entries);
        match check_append(&entries, self.next, self.bytes + size) {
            Ok(()) => {
                self.next = entries.last().map(|e| e.index + 1).or(self.next);
                self.bytes += size;
                self.entries.extend(entries);
                self.replies.push(reply);
            }
            Err(e) => {
                reply.send(Err(e)).ok();
            }
        }
    }
}

/// Entries must be consecutive, start at `next` (any start on an empty log), and fit.
fn check_append(entries: &[Entry], next: Option<u64>, total_bytes: usize) -> Result<(), WalError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if let Some(expected) = next {
        if first.index != expected {
            return Err(WalError::OutOfOrder {
                expected,
                got: first.index,
            });
        }
    }
    for w in entries.windows(2) {
        if w[1].index != w[0].index + 1 {
            return Err(WalError::OutOfOrder {
                expected: w[0].index + 1,
                got: w[1].index,
            });
        }
    }
    if total_bytes > format::MAX_BATCH_BYTES {
        return Err(WalError::TooLarge {
            bytes: total_bytes,
            max: format::MAX_BATCH_BYTES,
        });
    }
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
