//! The writer thread: owns the active segment, the spare and every mutation, and runs
//! the commands in the order they were submitted.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::format::{self, Entry, SegmentHeader, SEGMENT_HEADER};
use super::segment::BatchLoc;
use super::{
    clone_error, read_entries, read_lock, rewrite_prefix, segment_path, spare_path, write_lock,
    zero_fill, Index, MetaKey, Segment, WalError, WalOptions,
};
use crate::state::{keys, StateDb};

pub(super) type Reply = tokio::sync::oneshot::Sender<Result<(), WalError>>;

/// A group stops gathering at this many body bytes (besides `batch_size` entries).
const GROUP_BYTES: usize = 16 << 20;
/// Gathering always gets at least this long, even with `flush_interval = 0`.
const MIN_GATHER: Duration = Duration::from_micros(200);

pub(super) enum Command {
    Append(Vec<Entry>, Reply),
    Truncate(u64, Reply),
    Purge(u64, u64, Reply),
    Retain(SystemTime, Reply),
    SaveMeta(MetaKey, Bytes, Reply),
}

/// The next segment, being zero-filled on a helper thread.
struct Spare {
    handle: JoinHandle<Result<File, WalError>>,
    cancel: Arc<AtomicBool>,
}

pub(super) struct Writer {
    opts: WalOptions,
    index: Arc<RwLock<Index>>,
    state: StateDb,
    rx: mpsc::Receiver<Command>,
    /// A command that arrived while a group (of appends, or of metadata saves) was being
    /// gathered and did not belong in it; it runs next.
    parked: Option<Command>,
    /// Reused frame buffer and encoder scratch.
    frame: Vec<u8>,
    scratch: format::Scratch,
    spare: Option<Spare>,
}

impl Writer {
    pub(super) fn new(
        opts: WalOptions,
        index: Arc<RwLock<Index>>,
        state: StateDb,
        rx: mpsc::Receiver<Command>,
    ) -> Writer {
        Writer {
            opts,
            index,
            state,
            rx,
            parked: None,
            frame: Vec::new(),
            scratch: format::Scratch::default(),
            spare: None,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            self.prepare_spare();
            let cmd = match self.parked.take() {
                Some(c) => c,
                None => match self.rx.recv() {
                    Ok(c) => c,
                    Err(_) => break,
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
                Command::SaveMeta(key, value, reply) => self.save_meta(key, value, reply),
            }
        }
        self.discard_spare();
    }

    /// Run a mutation unless the log is already dead; an I/O or state database failure
    /// kills it (the state database's commit is an fsync like any other).
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), WalError>,
    ) -> Result<(), WalError> {
        if let Some(e) = &read_lock(&self.index).fatal {
            return Err(WalError::Fatal(e.clone()));
        }
        let r = f(self);
        if let Err(e @ (WalError::Io { .. } | WalError::State(_))) = &r {
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
            limit: self.opts.frame_limit(),
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
                // Too big to join this frame, but maybe not on its own: the next group.
                Ok(Command::Append(e, r)) if group.overflows(&e) => {
                    self.parked = Some(Command::Append(e, r));
                    break;
                }
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

    /// Write an encoded frame at the end of the active segment's data (into its zero
    /// tail, so the file size does not change), sync, and publish it.
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
            let started = std::time::Instant::now();
            self.opts
                .syncer
                .sync(&file)
                .map_err(WalError::io("sync", &path))?;
            metrics::histogram!(crate::telemetry::FSYNC_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
        metrics::histogram!(crate::telemetry::WAL_BATCH_ENTRIES).record(batch.len() as f64);
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

    /// Start zero-filling the next segment on a helper thread, once the active one is
    /// half full (or there is none), so that rolling over rarely waits for it.
    fn prepare_spare(&mut self) {
        if self.spare.is_some() {
            return;
        }
        let due = {
            let ix = read_lock(&self.index);
            ix.fatal.is_none()
                && ix
                    .segments
                    .last()
                    .is_none_or(|s| s.size.saturating_mul(2) >= self.opts.segment_size)
        };
        if !due {
            return;
        }
        let path = spare_path(&self.opts.dir);
        let len = self.opts.prealloc_len();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("wal-prealloc".into())
            .spawn(move || make_spare(&path, len, &stop));
        match spawned {
            Ok(handle) => self.spare = Some(Spare { handle, cancel }),
            // The roll makes it on the writer thread instead.
            Err(e) => tracing::warn!(error = %e, "cannot start the WAL preallocation thread"),
        }
    }

    /// The zero-filled spare, waiting for the helper if it is not done, or made here.
    fn take_spare(&mut self) -> Result<File, WalError> {
        let path = spare_path(&self.opts.dir);
        if let Some(spare) = self.spare.take() {
            match spare.handle.join() {
                Ok(Ok(file)) => return Ok(file),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "preallocating the next WAL segment failed; retrying")
                }
                Err(_) => tracing::warn!("the WAL preallocation thread panicked; retrying"),
            }
        }
        make_spare(&path, self.opts.prealloc_len(), &AtomicBool::new(false))
    }

    /// Stop and remove the spare (the writer is exiting).
    fn discard_spare(&mut self) {
        if let Some(spare) = self.spare.take() {
            spare.cancel.store(true, Ordering::Relaxed);
            spare.handle.join().ok();
            std::fs::remove_file(spare_path(&self.opts.dir)).ok();
        }
    }

    /// Start a new segment whose first entry is `first_index`. The active segment is
    /// cut to its data (sealed), or removed if it holds no entries. The new one is the
    /// zero-filled spare with its header written and synced, renamed into place: a
    /// crash at any point leaves either no new segment or a complete one.
    fn roll(&mut self, first_index: u64, first_term: u64) -> Result<(), WalError> {
        let active = {
            let ix = read_lock(&self.index);
            ix.segments
                .last()
                .map(|s| (s.path.clone(), s.file.clone(), s.size, s.batches.is_empty()))
        };
        match active {
            Some((old, _, _, true)) => {
                std::fs::remove_file(&old).map_err(WalError::io("remove", &old))?;
                self.opts.sync_dir(&self.opts.dir)?;
                write_lock(&self.index).segments.pop();
            }
            Some((old, file, size, false)) => {
                let len = file.metadata().map_err(WalError::io("stat", &old))?.len();
                if len > size {
                    file.set_len(size).map_err(WalError::io("truncate", &old))?;
                    file.sync_all().map_err(WalError::io("sync", &old))?;
                }
            }
            None => {}
        }
        let file = self.take_spare()?;
        let spare = spare_path(&self.opts.dir);
        let header = SegmentHeader {
            first_index,
            first_term,
        };
        file.write_all_at(&header.encode(), 0)
            .map_err(WalError::io("write", &spare))?;
        file.sync_data().map_err(WalError::io("sync", &spare))?;
        let path = segment_path(&self.opts.dir, first_index);
        std::fs::rename(&spare, &path).map_err(WalError::io("rename", &spare))?;
        self.opts.sync_dir(&self.opts.dir)?;
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
            self.opts.sync_dir(&self.opts.dir)?;
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
                // Nothing to cut; the segment may be a sealed one that is active again.
                let (path, file, size) = (seg.path.clone(), seg.file.clone(), seg.size);
                drop(ix);
                return self.repreallocate(&path, &file, size);
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
            // Cutting the file is atomic; zeroing the dropped frames in place is not (a
            // crash could leave a dropped frame after zeros, which reads as corruption).
            // The zero tail is filled in again afterwards.
            file.set_len(loc.offset)
                .map_err(WalError::io("truncate", &path))?;
            file.sync_all().map_err(WalError::io("sync", &path))?;
            let mut ix = write_lock(&self.index);
            if let Some(seg) = ix.segments.last_mut() {
                seg.batches.truncate(pos);
                seg.size = loc.offset;
            }
            drop(ix);
            return self.repreallocate(&path, &file, loc.offset);
        }
        // Part of a batch survives. Cutting the file and rewriting that part in place
        // would lose acknowledged entries to a crash in between, so the new segment is
        // built beside the old one and renamed over it.
        let mut frame = Vec::new();
        format::encode_frame(&kept, self.opts.compression, &mut frame);
        let new_file = rewrite_prefix(&path, &file, loc.offset, &frame, self.opts.prealloc_len())?;
        self.opts.sync_dir(&self.opts.dir)?;
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

    /// Zero-fill the (new) active segment up to the preallocated length again.
    fn repreallocate(
        &self,
        path: &std::path::Path,
        file: &File,
        size: u64,
    ) -> Result<(), WalError> {
        let len = file.metadata().map_err(WalError::io("stat", path))?.len();
        super::preallocate(&self.opts, file, path, len, size)
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
            self.opts.sync_dir(&self.opts.dir)?;
            tracing::info!(file = %path.display(), "purged WAL segment");
            write_lock(&self.index).segments.remove(0);
        }
    }

    /// Save `key` and every other metadata save queued right behind it, in one state
    /// database transaction, then answer them all.
    fn save_meta(&mut self, key: MetaKey, value: Bytes, reply: Reply) {
        let mut values = vec![(key, value)];
        let mut replies = vec![reply];
        loop {
            match self.rx.try_recv() {
                Ok(Command::SaveMeta(k, v, r)) => {
                    values.push((k, v));
                    replies.push(r);
                }
                Ok(other) => {
                    self.parked = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let result = self.guarded(|w| {
            let rows: Vec<(&str, &[u8])> = values
                .iter()
                .map(|(k, v)| (k.state_key(), &v[..]))
                .collect();
            w.state.set_many(&rows)?;
            let mut ix = write_lock(&w.index);
            for (k, v) in &values {
                ix.meta[k.slot()] = Some(v.clone());
            }
            Ok(())
        });
        for r in replies {
            r.send(result.as_ref().map(|_| ()).map_err(clone_error))
                .ok();
        }
    }
}

/// Create `path` and zero-fill it to `len`, synced. Stops early (with an error) when
/// `cancel` is set.
fn make_spare(path: &std::path::Path, len: u64, cancel: &AtomicBool) -> Result<File, WalError> {
    const STEP: u64 = 8 << 20;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(WalError::io("create", path))?;
    let mut off = 0;
    while off < len {
        if cancel.load(Ordering::Relaxed) {
            return Err(WalError::Fatal("preallocation cancelled".into()));
        }
        let to = (off + STEP).min(len);
        zero_fill(&file, path, off, to)?;
        off = to;
    }
    file.sync_all().map_err(WalError::io("sync", path))?;
    Ok(file)
}

/// Appends gathered into one frame.
#[derive(Default)]
struct Group {
    entries: Vec<Entry>,
    replies: Vec<Reply>,
    /// The index the next accepted append must start at (`None`: empty log).
    next: Option<u64>,
    bytes: usize,
    /// Most body bytes in the frame.
    limit: usize,
}

impl Group {
    /// Whether `entries` would take a non-empty group past the frame limit.
    fn overflows(&self, entries: &[Entry]) -> bool {
        !self.entries.is_empty() && self.bytes + format::body_len(entries) > self.limit
    }

    /// Accept an append into the group, or answer it with its error right away. The
    /// caller has checked that it fits with what the group holds ([`Self::overflows`]),
    /// so `TooLarge` here means it is too large on its own.
    fn take(&mut self, entries: Vec<Entry>, reply: Reply) {
        let size = format::body_len(&entries);
        match check_append(&entries, self.next, size, self.limit) {
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
fn check_append(
    entries: &[Entry],
    next: Option<u64>,
    bytes: usize,
    limit: usize,
) -> Result<(), WalError> {
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
    if bytes > limit {
        return Err(WalError::TooLarge { bytes, max: limit });
    }
    Ok(())
}
