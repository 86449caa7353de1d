use super::*;
use std::time::Instant;

fn opts(dir: &Path) -> WalOptions {
    WalOptions {
        segment_size: 1024,
        flush_interval: Duration::ZERO,
        ..WalOptions::new(dir)
    }
}

fn entries(range: Range<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|i| Entry {
            index: i,
            term,
            payload: Bytes::from(format!("INSERT INTO t VALUES ({i}, 'row {i}')")),
        })
        .collect()
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open_blocking(opts(dir.path())).unwrap();
        assert_eq!(wal.state(), LogState::default());
        for chunk in 0..20 {
            wal.append_blocking(entries(1 + chunk * 10..11 + chunk * 10, 1))
                .unwrap();
        }
        assert_eq!(wal.read_blocking(1..201).unwrap(), entries(1..201, 1));
        assert_eq!(wal.read_blocking(55..58).unwrap(), entries(55..58, 1));
        assert_eq!(wal.read_blocking(300..400).unwrap(), vec![]);
        assert!(
            segment_files(&dir.path().join("wal")).unwrap().len() > 1,
            "segments rolled"
        );
    }
    let wal = Wal::open_blocking(opts(dir.path())).unwrap();
    assert_eq!(wal.state().last, Some((200, 1)));
    assert_eq!(wal.state().first_index, Some(1));
    assert_eq!(wal.read_blocking(1..201).unwrap(), entries(1..201, 1));
}

#[test]
fn out_of_order_append_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_blocking(opts(dir.path())).unwrap();
    wal.append_blocking(entries(1..5, 1)).unwrap();
    assert!(matches!(
        wal.append_blocking(entries(6..8, 1)),
        Err(WalError::OutOfOrder {
            expected: 5,
            got: 6
        })
    ));
    let mut gap = entries(5..7, 1);
    gap[1].index = 9;
    assert!(matches!(
        wal.append_blocking(gap),
        Err(WalError::OutOfOrder { .. })
    ));
    wal.append_blocking(entries(5..6, 1)).unwrap();
}

#[test]
fn truncate_suffix_mid_batch_and_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_blocking(opts(dir.path())).unwrap();
    for c in 0..10 {
        wal.append_blocking(entries(1 + c * 20..21 + c * 20, 1))
            .unwrap();
    }
    wal.truncate_from_blocking(133).unwrap();
    assert_eq!(wal.state().last, Some((132, 1)));
    assert_eq!(wal.read_blocking(1..500).unwrap(), entries(1..133, 1));
    wal.append_blocking(entries(133..140, 2)).unwrap();
    drop(wal);
    let wal = Wal::open_blocking(opts(dir.path())).unwrap();
    let mut want = entries(1..133, 1);
    want.extend(entries(133..140, 2));
    assert_eq!(wal.read_blocking(1..500).unwrap(), want);
    wal.truncate_from_blocking(1).unwrap();
    assert_eq!(wal.state().last, None);
    wal.append_blocking(entries(1..3, 3)).unwrap();
    assert_eq!(wal.read_blocking(1..10).unwrap(), entries(1..3, 3));
}

#[test]
fn purge_marker_persists_and_old_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        retention: Duration::ZERO,
        ..opts(dir.path())
    };
    let wal = Wal::open_blocking(o.clone()).unwrap();
    for c in 0..10 {
        wal.append_blocking(entries(1 + c * 20..21 + c * 20, 1))
            .unwrap();
    }
    let before = segment_files(&o.dir).unwrap().len();
    wal.purge_blocking(150, 1).unwrap();
    assert!(matches!(
        wal.read_blocking(100..110),
        Err(WalError::Purged {
            requested: 100,
            purged: 150
        })
    ));
    assert_eq!(wal.read_blocking(151..153).unwrap(), entries(151..153, 1));
    assert!(segment_files(&o.dir).unwrap().len() < before);
    assert!(matches!(
        wal.truncate_from_blocking(120),
        Err(WalError::TruncateBelowPurge { .. })
    ));
    drop(wal);
    let wal = Wal::open_blocking(o.clone()).unwrap();
    assert_eq!(wal.state().purged, Some((150, 1)));
    assert_eq!(wal.state().first_index, Some(151));
    // Purge past the end (a snapshot was installed), then append after it.
    wal.purge_blocking(500, 4).unwrap();
    assert_eq!(wal.state().first_index, None);
    assert_eq!(wal.state().last, Some((500, 4)));
    wal.append_blocking(entries(501..505, 4)).unwrap();
    drop(wal);
    let wal = Wal::open_blocking(o).unwrap();
    assert_eq!(wal.read_blocking(501..600).unwrap(), entries(501..505, 4));
}

#[test]
fn retention_keeps_young_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_blocking(opts(dir.path())).unwrap(); // a week of retention
    for c in 0..10 {
        wal.append_blocking(entries(1 + c * 20..21 + c * 20, 1))
            .unwrap();
    }
    let n = segment_files(&dir.path().join("wal")).unwrap().len();
    wal.purge_blocking(150, 1).unwrap();
    assert_eq!(
        segment_files(&dir.path().join("wal")).unwrap().len(),
        n,
        "too young to delete"
    );
    wal.retain_blocking(SystemTime::now() + Duration::from_secs(8 * 24 * 3600))
        .unwrap();
    assert!(segment_files(&dir.path().join("wal")).unwrap().len() < n);
}

struct FailingSync(std::sync::atomic::AtomicUsize);

impl Syncer for FailingSync {
    fn sync(&self, _: &File) -> io::Result<()> {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 2 {
            Err(io::Error::other("injected EIO"))
        } else {
            Ok(())
        }
    }
}

#[test]
fn sync_failure_is_fatal_and_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let syncer = Arc::new(FailingSync(Default::default()));
    let wal = Wal::open_blocking(WalOptions {
        syncer: syncer.clone(),
        ..opts(dir.path())
    })
    .unwrap();
    wal.append_blocking(entries(1..3, 1)).unwrap();
    wal.append_blocking(entries(3..5, 1)).unwrap();
    let err = wal.append_blocking(entries(5..7, 1)).unwrap_err();
    assert!(err.to_string().contains("injected EIO"), "{err}");
    let calls = syncer.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        wal.append_blocking(entries(5..7, 1)),
        Err(WalError::Fatal(_))
    ));
    assert!(matches!(wal.read_blocking(1..3), Err(WalError::Fatal(_))));
    assert_eq!(
        syncer.0.load(std::sync::atomic::Ordering::SeqCst),
        calls,
        "no retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(
        Wal::open_blocking(WalOptions {
            segment_size: 64 << 20,
            flush_interval: Duration::from_millis(2),
            ..opts(dir.path())
        })
        .unwrap(),
    );
    // Appenders must each continue the log, so they take turns through a lock-free
    // ticket: the index is reserved under a mutex and appended right away.
    let next = Arc::new(tokio::sync::Mutex::new(1u64));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (wal, next) = (wal.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let rx = {
                    let mut n = next.lock().await;
                    let rx = wal.append_with_notice(entries(*n..*n + 2, 1));
                    *n += 2;
                    rx
                };
                rx.await.unwrap().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(wal.read_blocking(1..2000).unwrap(), entries(1..1601, 1));
    let batches: usize = read_lock(&wal.index)
        .segments
        .iter()
        .map(|s| s.batches.len())
        .sum();
    assert!(
        batches < 800,
        "appends were grouped: {batches} frames for 800 appends"
    );
}

/// A syncer that can be held shut: a sync waits while the gate is closed, so a test can
/// keep the writer busy with one command while it queues the next ones.
#[derive(Default)]
struct GateSync {
    closed: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
    blocked: std::sync::atomic::AtomicUsize,
}

impl GateSync {
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.cv.notify_all();
    }

    /// Wait until `n` syncs have been held at the gate.
    fn wait_blocked(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.blocked.load(std::sync::atomic::Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "the writer never reached the gate"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Syncer for GateSync {
    fn sync(&self, file: &File) -> io::Result<()> {
        let mut closed = self.closed.lock().unwrap();
        if *closed {
            self.blocked
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            while *closed {
                closed = self.cv.wait(closed).unwrap();
            }
        }
        drop(closed);
        file.sync_data()
    }
}

fn frames_in(wal: &Wal) -> usize {
    read_lock(&wal.index)
        .segments
        .iter()
        .map(|s| s.batches.len())
        .sum()
}

fn sized(index: u64, len: usize) -> Vec<Entry> {
    vec![Entry {
        index,
        term: 1,
        payload: Bytes::from(vec![b'x'; len]),
    }]
}

/// Appends that fit in a frame one by one but not together are written as separate
/// frames; only one too large by itself fails, and the log carries on after it.
#[test]
fn group_over_the_frame_limit_is_split_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(GateSync::default());
    let o = WalOptions {
        max_frame_bytes: 10_000,
        segment_size: 1 << 20,
        compression: false,
        syncer: gate.clone(),
        ..opts(dir.path())
    };
    let wal = Wal::open_blocking(o.clone()).unwrap();
    wal.append_blocking(entries(1..2, 1)).unwrap();
    // Hold the writer in the sync of entry 2 while entries 3, 4 and 5 (6012 body bytes
    // each; two of them exceed the limit) queue up behind it.
    gate.close();
    let first = wal.append_with_notice(entries(2..3, 1));
    gate.wait_blocked(1);
    let queued: Vec<_> = (3..6)
        .map(|i| wal.append_with_notice(sized(i, 6000)))
        .collect();
    gate.open();
    first.blocking_recv().unwrap().unwrap();
    for (i, rx) in queued.into_iter().enumerate() {
        let r = rx.blocking_recv().unwrap();
        assert!(
            r.is_ok(),
            "append of entry {} fits on its own: {r:?}",
            i + 3
        );
    }
    assert_eq!(
        frames_in(&wal),
        5,
        "3, 4 and 5 each in a frame of their own"
    );
    // Too large on its own: refused, and the next append takes the same index.
    match wal.append_blocking(sized(6, 10_000)) {
        Err(WalError::TooLarge { bytes, max }) => assert_eq!((bytes, max), (10_012, 10_000)),
        other => panic!("want TooLarge, got {other:?}"),
    }
    wal.append_blocking(entries(6..8, 1)).unwrap();
    assert_eq!(wal.state().last, Some((7, 1)));
    drop(wal);
    let wal = Wal::open_blocking(o).unwrap();
    let got = wal.read_blocking(1..100).unwrap();
    assert_eq!(
        got.iter().map(|e| e.index).collect::<Vec<_>>(),
        (1..8).collect::<Vec<_>>()
    );
}

/// The real limit: an append over `MAX_BATCH_BYTES` (payloads share one buffer, so
/// nothing that big is allocated) fails without touching the log.
#[test]
fn append_too_large_by_itself_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_blocking(opts(dir.path())).unwrap();
    wal.append_blocking(entries(1..3, 1)).unwrap();
    let mib = Bytes::from(vec![7u8; 1 << 20]);
    let huge: Vec<Entry> = (3..3 + 257)
        .map(|index| Entry {
            index,
            term: 1,
            payload: mib.clone(),
        })
        .collect();
    assert!(matches!(
        wal.append_blocking(huge),
        Err(WalError::TooLarge {
            max: format::MAX_BATCH_BYTES,
            ..
        })
    ));
    wal.append_blocking(entries(3..5, 1)).unwrap();
    assert_eq!(wal.read_blocking(1..10).unwrap(), entries(1..5, 1));
}

/// Metadata goes through the writer: a save queued behind an append whose sync has not
/// finished is neither visible nor durable until the append is, and resolves after it.
#[test]
fn metadata_is_saved_in_order_with_log_io() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(GateSync::default());
    let o = WalOptions {
        syncer: gate.clone(),
        ..opts(dir.path())
    };
    let wal = Wal::open_blocking(o.clone()).unwrap();
    assert_eq!(wal.meta(MetaKey::Vote), None);
    wal.append_blocking(entries(1..3, 1)).unwrap();
    gate.close();
    let mut append = wal.append_with_notice(entries(3..5, 1));
    gate.wait_blocked(1);
    let mut vote = wal.save_meta_with_notice(MetaKey::Vote, Bytes::from_static(b"vote t2 n1"));
    let mut committed = wal.save_meta_with_notice(MetaKey::Committed, Bytes::from_static(b"4"));
    std::thread::sleep(Duration::from_millis(50));
    assert!(append.try_recv().is_err(), "the append is held at the gate");
    assert!(
        vote.try_recv().is_err(),
        "vote saved before the append was durable"
    );
    assert!(committed.try_recv().is_err());
    assert_eq!(wal.meta(MetaKey::Vote), None);
    let db = StateDb::open(&o.state_dir).unwrap();
    assert_eq!(
        db.get(keys::WAL_VOTE).unwrap(),
        None,
        "vote already in the database"
    );
    gate.open();
    append.blocking_recv().unwrap().unwrap();
    vote.blocking_recv().unwrap().unwrap();
    committed.blocking_recv().unwrap().unwrap();
    assert_eq!(
        db.get(keys::WAL_VOTE).unwrap().as_deref(),
        Some(&b"vote t2 n1"[..])
    );
    // Later saves replace earlier ones; a truncation in between keeps its place.
    wal.save_meta_blocking(MetaKey::Committed, Bytes::from_static(b"2"))
        .unwrap();
    wal.truncate_from_blocking(3).unwrap();
    wal.save_meta_blocking(MetaKey::Membership, Bytes::from_static(b"{1,2,3}"))
        .unwrap();
    assert_eq!(wal.meta(MetaKey::Committed).as_deref(), Some(&b"2"[..]));
    drop(wal);
    let wal = Wal::open_blocking(o).unwrap();
    assert_eq!(wal.meta(MetaKey::Vote).as_deref(), Some(&b"vote t2 n1"[..]));
    assert_eq!(wal.meta(MetaKey::Committed).as_deref(), Some(&b"2"[..]));
    assert_eq!(
        wal.meta(MetaKey::Membership).as_deref(),
        Some(&b"{1,2,3}"[..])
    );
    assert_eq!(wal.state().last, Some((2, 1)));
}

/// Saves queued back to back are one transaction, and the last value of a key wins.
#[test]
fn queued_metadata_saves_share_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(GateSync::default());
    let o = WalOptions {
        syncer: gate.clone(),
        ..opts(dir.path())
    };
    let wal = Wal::open_blocking(o.clone()).unwrap();
    wal.append_blocking(entries(1..2, 1)).unwrap();
    gate.close();
    let append = wal.append_with_notice(entries(2..3, 1));
    gate.wait_blocked(1);
    let saves: Vec<_> = (0..20u8)
        .map(|i| wal.save_meta_with_notice(MetaKey::Committed, Bytes::from(vec![i])))
        .collect();
    gate.open();
    append.blocking_recv().unwrap().unwrap();
    for rx in saves {
        rx.blocking_recv().unwrap().unwrap();
    }
    assert_eq!(wal.meta(MetaKey::Committed).as_deref(), Some(&[19u8][..]));
    drop(wal);
    let wal = Wal::open_blocking(o).unwrap();
    assert_eq!(wal.meta(MetaKey::Committed).as_deref(), Some(&[19u8][..]));
}

/// The async API does its file I/O off the runtime: on a current-thread runtime, the
/// async read leaves this thread's read counter alone, the blocking one does not.
#[tokio::test]
async fn async_calls_do_no_file_io_on_the_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_async(opts(dir.path())).await.unwrap();
    wal.append(entries(1..50, 1)).await.unwrap();
    wal.save_vote(Bytes::from_static(b"v")).await.unwrap();
    wal.save_committed(Bytes::from_static(b"c")).await.unwrap();
    wal.save_membership(Bytes::from_static(b"m")).await.unwrap();
    let reads_here = || RANGE_READS.with(|c| c.get());
    assert_eq!(wal.read(1..50).await.unwrap(), entries(1..50, 1));
    assert_eq!(wal.read(10..12).await.unwrap(), entries(10..12, 1));
    assert_eq!(reads_here(), 0, "async read ran on the runtime thread");
    assert_eq!(wal.read_blocking(1..3).unwrap(), entries(1..3, 1));
    assert_eq!(reads_here(), 1);
    wal.truncate_from(40).await.unwrap();
    wal.purge(10, 1).await.unwrap();
    wal.retain(SystemTime::now()).await.unwrap();
    wal.close().await.unwrap();
    let wal = Wal::open_async(opts(dir.path())).await.unwrap();
    assert_eq!(wal.state().last, Some((39, 1)));
    assert_eq!(wal.meta(MetaKey::Membership).as_deref(), Some(&b"m"[..]));
    wal.close().await.unwrap();
}

/// Records every directory sync.
#[derive(Default)]
struct RecordingSync(std::sync::Mutex<Vec<PathBuf>>);

impl Syncer for RecordingSync {
    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.lock().unwrap().push(dir.to_path_buf());
        File::open(dir)?.sync_all()
    }
}

/// Opening a log in a new data directory syncs every directory whose entries changed:
/// the parents of the created ones (data_dir among them), `wal/` and `state/`; a new
/// segment syncs `wal/` again.
#[test]
fn open_syncs_the_directories_it_creates() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("a").join("data");
    let syncs = Arc::new(RecordingSync::default());
    let o = WalOptions {
        syncer: syncs.clone(),
        ..opts(&data_dir)
    };
    let wal = Wal::open_blocking(o.clone()).unwrap();
    let synced = syncs.0.lock().unwrap().clone();
    for d in [
        root.path().to_path_buf(),
        root.path().join("a"),
        data_dir.clone(),
        o.dir.clone(),
        o.state_dir.clone(),
    ] {
        assert!(synced.contains(&d), "{d:?} not synced: {synced:?}");
    }
    let before = synced.iter().filter(|d| **d == o.dir).count();
    wal.append_blocking(entries(1..3, 1)).unwrap();
    let after = syncs
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|d| **d == o.dir)
        .count();
    assert!(after > before, "the new segment's rename was not synced");
}

/// A `Write` into a shared buffer, for capturing log output.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `*.wal.tmp` files left by a crash (a segment rewrite, the spare) are removed at open,
/// and each removal is logged.
#[test]
fn stale_tmp_files_are_removed_at_open_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    {
        let wal = Wal::open_blocking(o.clone()).unwrap();
        wal.append_blocking(entries(1..30, 1)).unwrap();
    }
    let stale = [
        o.dir.join("00000000000000000007.wal.tmp"),
        o.dir.join("spare.wal.tmp"),
    ];
    std::fs::write(&stale[0], b"half a rewritten segment").unwrap();
    std::fs::write(&stale[1], vec![0u8; 4096]).unwrap();
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .with_ansi(false)
        .finish();
    let wal =
        tracing::subscriber::with_default(subscriber, || Wal::open_blocking(o.clone())).unwrap();
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for f in &stale {
        assert!(!f.exists(), "{f:?} left behind");
        assert!(
            text.contains(&f.display().to_string()),
            "removal of {f:?} not logged: {text}"
        );
    }
    assert!(text.contains("stale temporary"), "{text}");
    assert_eq!(wal.read_blocking(1..30).unwrap(), entries(1..30, 1));
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn last_segment(wal: &Wal) -> (PathBuf, u64) {
    let ix = read_lock(&wal.index);
    let s = ix.segments.last().unwrap();
    (s.path.clone(), s.size)
}

#[track_caller]
fn assert_zero_after(path: &Path, from: u64) {
    let data = std::fs::read(path).unwrap();
    assert!(
        data[from as usize..].iter().all(|&b| b == 0),
        "{path:?}: non-zero bytes after the data end {from}"
    );
}

/// Segments are created at full size and zero-filled, so appends write inside the file
/// and never change its size (an `fdatasync` with no size to commit); the bytes after
/// the data stay zero.
#[test]
fn appends_write_into_the_preallocated_segment() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_size: 64 << 10,
        ..opts(dir.path())
    };
    let wal = Wal::open_blocking(o.clone()).unwrap();
    wal.append_blocking(entries(1..2, 1)).unwrap();
    let (path, _) = last_segment(&wal);
    assert_eq!(file_len(&path), 64 << 10, "created at segment_size");
    for i in 2..100 {
        wal.append_blocking(entries(i..i + 1, 1)).unwrap();
        assert_eq!(
            file_len(&path),
            64 << 10,
            "append {i} changed the file size"
        );
    }
    let (_, size) = last_segment(&wal);
    assert!(size > 4096);
    assert_zero_after(&path, size);
    drop(wal);
    // The zero tail is the normal end of the data: nothing is cut, nothing is lost.
    let wal = Wal::open_blocking(o).unwrap();
    assert_eq!(last_segment(&wal), (path.clone(), size));
    assert_eq!(file_len(&path), 64 << 10);
    assert_eq!(wal.read_blocking(1..100).unwrap(), entries(1..100, 1));
}

/// A sealed segment is cut to its data; the next one is the spare, zero-filled ahead of
/// need once the active segment is half full, and removed when the log closes.
#[test]
fn sealed_segments_are_cut_and_the_spare_is_made_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_size: 8 << 10,
        ..opts(dir.path())
    };
    let wal = Wal::open_blocking(o.clone()).unwrap();
    let spare = spare_path(&o.dir);
    let mut next = 1;
    while last_segment_or_none(&wal).is_none_or(|(_, size)| size * 2 < o.segment_size) {
        wal.append_blocking(entries(next..next + 1, 1)).unwrap();
        next += 1;
    }
    // The writer starts the spare before its next command.
    wal.append_blocking(entries(next..next + 1, 1)).unwrap();
    next += 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(spare.exists() && file_len(&spare) == o.segment_size) {
        assert!(Instant::now() < deadline, "no spare made");
        std::thread::sleep(Duration::from_millis(5));
    }
    while segment_files(&o.dir).unwrap().len() < 4 {
        wal.append_blocking(entries(next..next + 3, 1)).unwrap();
        next += 3;
    }
    {
        let ix = read_lock(&wal.index);
        let (last, sealed) = ix.segments.split_last().unwrap();
        for s in sealed {
            assert_eq!(
                file_len(&s.path),
                s.size,
                "{:?} not cut to its data",
                s.path
            );
        }
        assert_eq!(file_len(&last.path), o.segment_size);
    }
    wal.close_blocking().unwrap();
    assert!(!spare.exists(), "spare left behind by a clean close");
    let wal = Wal::open_blocking(o).unwrap();
    assert_eq!(wal.read_blocking(1..next).unwrap(), entries(1..next, 1));
}

fn last_segment_or_none(wal: &Wal) -> Option<(PathBuf, u64)> {
    let ix = read_lock(&wal.index);
    ix.segments.last().map(|s| (s.path.clone(), s.size))
}

/// A last segment without a zero tail (written before preallocation, or cut by hand)
/// is zero-filled to `segment_size` at open, and appends then stay inside it.
#[test]
fn short_last_segment_is_zero_filled_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_size: 32 << 10,
        ..opts(dir.path())
    };
    let (path, size) = {
        let wal = Wal::open_blocking(o.clone()).unwrap();
        wal.append_blocking(entries(1..20, 1)).unwrap();
        last_segment(&wal)
    };
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let wal = Wal::open_blocking(o.clone()).unwrap();
    assert_eq!(file_len(&path), o.segment_size);
    assert_zero_after(&path, size);
    wal.append_blocking(entries(20..30, 1)).unwrap();
    assert_eq!(file_len(&path), o.segment_size);
    assert_eq!(wal.read_blocking(1..30).unwrap(), entries(1..30, 1));
}

/// Truncation keeps the active segment preallocated and zero after the cut, whether it
/// drops whole frames (the file is cut, then zero-filled again) or part of a batch (the
/// segment is rewritten beside the old one).
#[test]
fn truncation_keeps_the_zero_tail() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_size: 32 << 10,
        ..opts(dir.path())
    };
    let wal = Wal::open_blocking(o.clone()).unwrap();
    for c in 0..10 {
        wal.append_blocking(entries(1 + c * 10..11 + c * 10, 1))
            .unwrap();
    }
    for at in [81, 55] {
        wal.truncate_from_blocking(at).unwrap();
        let (path, size) = last_segment(&wal);
        assert_eq!(file_len(&path), o.segment_size, "truncate_from({at})");
        assert_zero_after(&path, size);
        assert_eq!(wal.read_blocking(1..200).unwrap(), entries(1..at, 1));
    }
    wal.append_blocking(entries(55..60, 2)).unwrap();
    drop(wal);
    let wal = Wal::open_blocking(o).unwrap();
    let mut want = entries(1..55, 1);
    want.extend(entries(55..60, 2));
    assert_eq!(wal.read_blocking(1..200).unwrap(), want);
}
