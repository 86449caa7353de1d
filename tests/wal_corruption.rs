//! Damaged WAL files: every case opens (or reads) to the documented outcome and never
//! panics.
//!
//! A log of several segments is written and closed, then files are damaged and the log
//! reopened. Sealed (non-last) segments tolerate nothing: any damage is an error naming
//! the file and the offset of the damaged frame. The last segment may have a torn tail
//! (a partly written last frame, or a header that was never completed), which is cut:
//! its bytes are zeroed (the segment keeps its preallocated length) or, for a header,
//! the file is removed. The last segment is preallocated: zeros follow its last frame up
//! to `segment_size`, and that zero tail is the normal end of the data.
//! Expected offsets are computed by walking frames with the layout documented in
//! `wal::format` (32-byte segment header, then frames of a 9-byte header
//! `len u32 | crc u32 | flags u8` and `len` payload bytes, then zeros), independently
//! of the code.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use wolfscale::wal::{segment_files, Entry, Wal, WalError, WalOptions};

const SEGMENT_HEADER: usize = 32;
const FRAME_HEADER: usize = 9;
const ENTRIES: u64 = 90;
const SEGMENT_SIZE: u64 = 1024;

fn options(dir: &Path) -> WalOptions {
    WalOptions {
        segment_size: SEGMENT_SIZE,
        flush_interval: Duration::ZERO,
        compression: true,
        fsync: false,
        ..WalOptions::new(dir)
    }
}

fn entry(index: u64) -> Entry {
    let len = 40 + (index * 37 % 150) as usize;
    let text = format!("INSERT INTO t VALUES ({index}, 'row {index}'); ");
    Entry {
        index,
        term: 1 + index / 40,
        payload: text.bytes().cycle().take(len).collect::<Vec<u8>>().into(),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(entry).collect()
}

/// One frame as found on disk.
#[derive(Debug, Clone, Copy)]
struct Frame {
    offset: u64,
    total: u64,
    first: u64,
    count: u64,
}

impl Frame {
    fn end(&self) -> u64 {
        self.offset + self.total
    }
    fn last(&self) -> u64 {
        self.first + self.count - 1
    }
}

/// Walk the frames of an intact segment by the documented layout, up to the end of the
/// file or a zero tail (a zero length field, and only zeros after it).
fn frames(data: &[u8]) -> Vec<Frame> {
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) as u64;
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER;
    while off < data.len() {
        if data[off..].iter().all(|&b| b == 0) {
            return out;
        }
        let total = FRAME_HEADER as u64 + u32_at(off);
        out.push(Frame {
            offset: off as u64,
            total,
            first: u64_at(off + FRAME_HEADER),
            count: u32_at(off + FRAME_HEADER + 8),
        });
        off += total as usize;
    }
    assert_eq!(off, data.len(), "frames tile the segment");
    out
}

/// A closed log on disk and a pristine copy of its segment files, restored between cases.
struct Fixture {
    _dir: tempfile::TempDir,
    opts: WalOptions,
    segments: Vec<Seg>,
}

struct Seg {
    first: u64,
    path: PathBuf,
    data: Vec<u8>,
    frames: Vec<Frame>,
}

impl Seg {
    fn last(&self) -> u64 {
        self.frames.last().unwrap().last()
    }

    /// End of the frames; zeros follow up to `data.len()`.
    fn data_end(&self) -> u64 {
        self.frames.last().unwrap().end()
    }
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        {
            let wal = Wal::open_blocking(opts.clone()).unwrap();
            let mut next = 1;
            while next <= ENTRIES {
                let end = (next + next % 3).min(ENTRIES);
                wal.append_blocking(entries(next..=end)).unwrap();
                next = end + 1;
            }
        }
        let segments: Vec<Seg> = segment_files(&opts.dir)
            .unwrap()
            .into_iter()
            .map(|(first, path)| {
                let data = std::fs::read(&path).unwrap();
                let frames = frames(&data);
                Seg {
                    first,
                    path,
                    data,
                    frames,
                }
            })
            .collect();
        assert!(segments.len() >= 5, "{} segments", segments.len());
        for s in &segments {
            assert!(
                s.frames.len() >= 3,
                "{} frames in {:?}",
                s.frames.len(),
                s.path
            );
        }
        assert_eq!(segments.last().unwrap().last(), ENTRIES);
        let (last, sealed) = segments.split_last().unwrap();
        for s in sealed {
            assert_eq!(
                s.data_end(),
                s.data.len() as u64,
                "sealed {:?} is cut",
                s.path
            );
        }
        assert!(
            last.data.len() as u64 == SEGMENT_SIZE && last.data_end() < SEGMENT_SIZE,
            "the last segment has a zero tail: {} of {} bytes",
            last.data_end(),
            last.data.len()
        );
        Fixture {
            _dir: dir,
            opts,
            segments,
        }
    }

    /// Put every segment back as written, and remove any other segment file.
    fn restore(&self) {
        for (_, path) in segment_files(&self.opts.dir).unwrap() {
            if !self.segments.iter().any(|s| s.path == path) {
                std::fs::remove_file(path).unwrap();
            }
        }
        for s in &self.segments {
            std::fs::write(&s.path, &s.data).unwrap();
        }
    }

    fn last_seg(&self) -> &Seg {
        self.segments.last().unwrap()
    }

    /// Write `data` in place of segment `i`.
    fn damage(&self, i: usize, data: &[u8]) {
        std::fs::write(&self.segments[i].path, data).unwrap();
    }

    /// Open, never panicking.
    fn open(&self, what: &str) -> Result<Wal, WalError> {
        catch_unwind(AssertUnwindSafe(|| Wal::open_blocking(self.opts.clone())))
            .unwrap_or_else(|_| panic!("Wal::open_blocking panicked: {what}"))
    }

    fn open_err(&self, what: &str) -> WalError {
        match self.open(what) {
            Ok(wal) => panic!("{what}: opened with last {:?}", wal.state().last),
            Err(e) => e,
        }
    }
}

fn flipped(data: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut d = data.to_vec();
    d[at] ^= mask;
    d
}

fn header_crc(h: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&h[..12]), &h[16..32])
}

/// A header with the checksum recomputed after an edit.
fn with_fixed_crc(mut data: Vec<u8>) -> Vec<u8> {
    let crc = header_crc(&data[..32]);
    data[12..16].copy_from_slice(&crc.to_le_bytes());
    data
}

#[track_caller]
fn assert_corruption(e: &WalError, file: &Path, offset: u64, what: &str) {
    match e {
        WalError::Corruption {
            file: f, offset: o, ..
        } if f == file && *o == offset => {}
        other => panic!("{what}: want Corruption in {file:?} at {offset}, got {other:?}"),
    }
}

/// The error a damaged byte of a sealed segment must give.
fn check_sealed_flip(fx: &Fixture, i: usize, at: usize, mask: u8) {
    let seg = &fx.segments[i];
    let damaged = flipped(&seg.data, at, mask);
    fx.damage(i, &damaged);
    let what = format!("segment {i} byte {at} ^ {mask:#04x}");
    let e = fx.open_err(&what);
    // A refused open leaves the evidence alone.
    for (j, s) in fx.segments.iter().enumerate() {
        let want = if j == i { &damaged } else { &s.data };
        assert!(
            std::fs::read(&s.path).unwrap() == *want,
            "{what}: segment {j} changed"
        );
    }
    match at {
        0..8 => assert!(
            matches!(&e, WalError::BadMagic { file } if *file == seg.path),
            "{what}: {e:?}"
        ),
        8..10 => {
            let d = flipped(&seg.data, at, mask);
            let version = u16::from_le_bytes([d[8], d[9]]);
            assert!(
                matches!(&e, WalError::UnsupportedVersion { file, version: v } if *file == seg.path && *v == version),
                "{what}: {e:?}"
            );
        }
        // Reserved bytes, the checksum, first index and term: a bad header checksum.
        10..32 => assert_corruption(&e, &seg.path, 0, &what),
        _ => {
            let frame = seg.frames.iter().find(|f| f.end() > at as u64).unwrap();
            assert_corruption(&e, &seg.path, frame.offset, &what);
        }
    }
    fx.restore();
}

/// (a) A flipped byte of a sealed segment, anywhere in its header or in any field of any
/// frame, is refused, naming the file and the damaged frame's offset.
#[test]
fn flipped_byte_in_sealed_segment_is_corruption_at_its_frame() {
    let fx = Fixture::new();
    for i in [0, 2] {
        for at in 0..SEGMENT_HEADER {
            for mask in [0x01, 0x80] {
                check_sealed_flip(&fx, i, at, mask);
            }
        }
        for frame in &fx.segments[i].frames {
            for rel in positions(frame) {
                let masks: &[u8] = if rel < FRAME_HEADER {
                    &[0x01, 0x10, 0x80]
                } else {
                    &[0x04]
                };
                for &mask in masks {
                    check_sealed_flip(&fx, i, frame.offset as usize + rel, mask);
                }
            }
        }
    }
    // Undamaged again, the log opens whole.
    let wal = fx.open("restored").unwrap();
    assert_eq!(
        wal.read_blocking(1..ENTRIES + 1).unwrap(),
        entries(1..=ENTRIES)
    );
}

/// Byte positions in a frame worth damaging, relative to the frame start: every byte of
/// the frame header and the payload prefix, the first body bytes, and a few more.
fn positions(frame: &Frame) -> Vec<usize> {
    let total = frame.total as usize;
    let mut p: Vec<usize> = (0..FRAME_HEADER + 20).collect();
    p.extend([total / 3, total / 2, total - 2, total - 1]);
    p.sort_unstable();
    p.dedup();
    p
}

/// Lengths to cut a segment to: every length inside the header, around every frame
/// boundary, and a stride through the rest.
fn cut_lengths(seg: &Seg) -> Vec<usize> {
    let len = seg.data.len();
    let mut l: Vec<usize> = (0..=SEGMENT_HEADER + FRAME_HEADER + 2).collect();
    for f in &seg.frames {
        let end = f.end() as usize;
        l.extend(end.saturating_sub(FRAME_HEADER + 2)..=(end + FRAME_HEADER + 2).min(len));
    }
    l.extend((0..len).step_by(11));
    l.retain(|&x| x <= len);
    l.sort_unstable();
    l.dedup();
    l
}

/// (b) A damaged frame of the last segment that is followed by a valid frame is not a
/// torn tail: checksum, flags (the compression bit) and payload damage.
#[test]
fn flipped_byte_in_middle_frame_of_last_segment_is_corruption() {
    let fx = Fixture::new();
    let last = fx.segments.len() - 1;
    let seg = fx.last_seg();
    for frame in &seg.frames[..seg.frames.len() - 1] {
        for rel in positions(frame) {
            // The length field and the unused flag bits are `length_or_flags_...` below.
            let masks: &[u8] = match rel {
                0..4 => continue,
                8 => &[0x01],
                _ => &[0x01, 0x80],
            };
            for &mask in masks {
                let at = frame.offset as usize + rel;
                fx.damage(last, &flipped(&seg.data, at, mask));
                let what = format!("last segment byte {at} ^ {mask:#04x}");
                let e = fx.open_err(&what);
                assert_corruption(&e, &seg.path, frame.offset, &what);
                assert_eq!(
                    std::fs::read(&seg.path).unwrap().len(),
                    seg.data.len(),
                    "{what}: nothing cut"
                );
                fx.restore();
            }
        }
    }
}

/// (b) The same for damage to a middle frame's length field or unused flag bits. The
/// scanner decides "torn tail" by looking for a valid frame right after the bad one,
/// which it locates with the damaged length (or gives up on when the header does not
/// parse), so it finds none, calls valid data after it a torn tail, and truncates the
/// file: acknowledged entries are silently destroyed.
#[test]
fn length_or_flags_damage_in_middle_frame_of_last_segment_is_corruption() {
    let fx = Fixture::new();
    let last = fx.segments.len() - 1;
    let seg = fx.last_seg();
    let mut failures = Vec::new();
    for frame in &seg.frames[..seg.frames.len() - 1] {
        for (rel, mask) in [
            (0, 0x01),
            (0, 0x10),
            (1, 0x01),
            (2, 0x01),
            (3, 0x80),
            (8, 0x02),
            (8, 0x80),
        ] {
            let at = frame.offset as usize + rel;
            fx.damage(last, &flipped(&seg.data, at, mask));
            let what = format!(
                "last segment byte {at} (frame at {}) ^ {mask:#04x}",
                frame.offset
            );
            match fx.open(&what) {
                Err(WalError::Corruption { file, offset, .. })
                    if file == seg.path && offset == frame.offset => {}
                Err(e) => failures.push(format!("{what}: {e}")),
                Ok(wal) => failures.push(format!(
                    "{what}: opened, last {:?} (was {ENTRIES}), file cut to {} of {} bytes",
                    wal.state().last,
                    std::fs::read(&seg.path).unwrap().len(),
                    seg.data.len()
                )),
            }
            fx.restore();
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// (b) Damage in the very last frame is indistinguishable from a torn write: the frame
/// is cut and everything before it survives.
#[test]
fn damaged_last_frame_is_cut_as_torn_tail() {
    let fx = Fixture::new();
    let last = fx.segments.len() - 1;
    let seg = fx.last_seg();
    let frame = *seg.frames.last().unwrap();
    for rel in positions(&frame) {
        let at = frame.offset as usize + rel;
        fx.damage(last, &flipped(&seg.data, at, 0x01));
        let what = format!("last frame byte {at}");
        let wal = fx.open(&what).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            wal.state().last,
            Some((frame.first - 1, entry(frame.first - 1).term)),
            "{what}"
        );
        assert_eq!(
            wal.read_blocking(1..u64::MAX).unwrap(),
            entries(1..=frame.first - 1),
            "{what}"
        );
        drop(wal);
        assert_cut_at(&seg.path, &seg.data, frame.offset, &what);
        fx.restore();
    }
}

/// After a torn tail was cut: the file holds `original[..at]`, then only zeros, and is
/// at least `segment_size` long (the zero tail is refilled).
#[track_caller]
fn assert_cut_at(path: &Path, original: &[u8], at: u64, what: &str) {
    let data = std::fs::read(path).unwrap();
    let at = at as usize;
    assert!(
        data.len() >= at.max(SEGMENT_SIZE as usize),
        "{what}: {} bytes on disk, want at least {}",
        data.len(),
        at.max(SEGMENT_SIZE as usize)
    );
    assert!(
        data[..at] == original[..at],
        "{what}: the kept prefix changed"
    );
    if let Some(p) = data[at..].iter().position(|&b| b != 0) {
        panic!("{what}: non-zero byte at {} after the cut at {at}", at + p);
    }
}

/// What opening a log whose last segment was cut to `len` bytes must give: the longest
/// whole prefix.
fn expected_after_tail_cut(fx: &Fixture, len: u64) -> (u64, Option<u64>) {
    let seg = fx.last_seg();
    if len < SEGMENT_HEADER as u64 {
        return (seg.first - 1, None);
    }
    let whole: Vec<&Frame> = seg.frames.iter().filter(|f| f.end() <= len).collect();
    let last = whole.last().map_or(seg.first - 1, |f| f.last());
    let size = whole.last().map_or(SEGMENT_HEADER as u64, |f| f.end());
    (last, Some(size))
}

fn check_tail_cuts(append_after: bool) {
    let fx = Fixture::new();
    let last = fx.segments.len() - 1;
    let seg = fx.last_seg();
    for len in cut_lengths(seg) {
        fx.damage(last, &seg.data[..len]);
        let what = format!("last segment cut to {len} of {} bytes", seg.data.len());
        let (want_last, want_size) = expected_after_tail_cut(&fx, len as u64);
        let wal = fx.open(&what).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            wal.state().last,
            Some((want_last, entry(want_last).term)),
            "{what}"
        );
        assert_eq!(wal.state().first_index, Some(1), "{what}");
        assert_eq!(
            wal.read_blocking(1..u64::MAX).unwrap(),
            entries(1..=want_last),
            "{what}"
        );
        match want_size {
            Some(size) => assert_cut_at(&seg.path, &seg.data, size, &what),
            None => assert!(!seg.path.exists(), "{what}: headerless segment kept"),
        }
        let mut want_all = want_last;
        if append_after {
            let more = entries(want_last + 1..=want_last + 3);
            let r = wal.append_blocking(more);
            assert!(r.is_ok(), "{what}: append after recovery: {r:?}");
            want_all += 3;
            assert_eq!(
                wal.read_blocking(1..u64::MAX).unwrap(),
                entries(1..=want_all),
                "{what}"
            );
        }
        drop(wal);
        let wal = fx
            .open(&what)
            .unwrap_or_else(|e| panic!("{what}: second open: {e}"));
        assert_eq!(
            wal.state().last,
            Some((want_all, entry(want_all).term)),
            "{what}: reopened"
        );
        assert_eq!(
            wal.read_blocking(1..u64::MAX).unwrap(),
            entries(1..=want_all),
            "{what}: reopened"
        );
        drop(wal);
        fx.restore();
    }
}

/// (c) The last segment cut at every length, including inside its header: the log opens
/// with the longest whole prefix, the torn bytes are gone from disk, and a second open
/// agrees.
#[test]
fn truncated_last_segment_opens_with_longest_whole_prefix() {
    check_tail_cuts(false);
}

/// (c) As above, then appending continues the log. Recovered segments are opened with
/// `File::open` (read-only) in `recover`, so the first write to the recovered last
/// segment fails with EBADF and the log turns fatal.
#[test]
fn truncated_last_segment_then_append_continues() {
    check_tail_cuts(true);
}

/// (d) A sealed segment cut short. Inside its header or a frame: `Corruption` naming it
/// and the cut frame's offset. At a frame boundary there is no bad frame in it, and the
/// gap shows up at the next segment as `MissingSegment` (which names the next file,
/// not the short one).
#[test]
fn truncated_sealed_segment_is_refused() {
    let fx = Fixture::new();
    let i = 2;
    let seg = &fx.segments[i];
    let next = &fx.segments[i + 1];
    for len in cut_lengths(seg).into_iter().filter(|&l| l < seg.data.len()) {
        fx.damage(i, &seg.data[..len]);
        let what = format!("segment {i} cut to {len} of {} bytes", seg.data.len());
        let e = fx.open_err(&what);
        if len < SEGMENT_HEADER {
            assert_corruption(&e, &seg.path, 0, &what);
        } else if let Some(f) = seg
            .frames
            .iter()
            .find(|f| f.offset < len as u64 && f.end() > len as u64)
        {
            assert_corruption(&e, &seg.path, f.offset, &what);
        } else {
            let kept = seg
                .frames
                .iter()
                .rev()
                .find(|f| f.end() <= len as u64)
                .map_or(seg.first - 1, |f| f.last());
            match &e {
                WalError::MissingSegment {
                    file,
                    expected,
                    found,
                } if *file == next.path && *expected == kept + 1 && *found == next.first => {}
                // What a fix naming the short segment would give.
                WalError::Corruption { file, offset, .. }
                    if *file == seg.path && *offset == len as u64 => {}
                other => panic!("{what}: {other:?}"),
            }
        }
        fx.restore();
    }
}

/// (d) The first segment cut to its bare header opens without error and the log starts
/// at the next segment: every entry of the first segment silently disappears while
/// `state().first_index` still says 1. `recover` only checks continuity against the last
/// entry seen, and an empty segment leaves none.
#[test]
fn first_segment_cut_to_its_header_is_refused() {
    let fx = Fixture::new();
    fx.damage(0, &fx.segments[0].data[..SEGMENT_HEADER]);
    match fx.open("first segment cut to its header") {
        Err(_) => {}
        Ok(wal) => panic!(
            "opened: state {:?}, read(1..) starts at {:?}",
            wal.state(),
            wal.read_blocking(1..u64::MAX)
                .unwrap()
                .first()
                .map(|e| e.index)
        ),
    }
}

/// (e) A missing middle segment.
#[test]
fn missing_middle_segment_is_missing_segment() {
    let fx = Fixture::new();
    for i in 1..fx.segments.len() - 1 {
        std::fs::remove_file(&fx.segments[i].path).unwrap();
        let e = fx.open_err(&format!("segment {i} removed"));
        let next = &fx.segments[i + 1];
        assert!(
            matches!(&e, WalError::MissingSegment { file, expected, found }
                if *file == next.path && *expected == fx.segments[i].first && *found == next.first),
            "segment {i} removed: {e:?}"
        );
        fx.restore();
    }
}

/// (f) Header checks: magic, version (with or without a fixed-up checksum: the version
/// is checked first, since another version may lay out its header differently),
/// checksum, and a first index that disagrees with the file name.
#[test]
fn bad_headers_have_their_own_errors() {
    let fx = Fixture::new();
    for i in [1, fx.segments.len() - 1] {
        let seg = &fx.segments[i];
        let mut d = seg.data.clone();
        d[..8].copy_from_slice(b"NOTAWAL\0");
        fx.damage(i, &d);
        let e = fx.open_err("bad magic");
        assert!(
            matches!(&e, WalError::BadMagic { file } if *file == seg.path),
            "{e:?}"
        );

        for fix_crc in [true, false] {
            let mut d = seg.data.clone();
            d[8..10].copy_from_slice(&2u16.to_le_bytes());
            let d = if fix_crc { with_fixed_crc(d) } else { d };
            fx.damage(i, &d);
            let e = fx.open_err("version 2");
            assert!(
                matches!(&e, WalError::UnsupportedVersion { file, version: 2 } if *file == seg.path),
                "version 2 (crc fixed: {fix_crc}): {e:?}"
            );
        }

        let mut d = seg.data.clone();
        d[24] ^= 1; // first_term, checksum not fixed
        fx.damage(i, &d);
        assert_corruption(
            &fx.open_err("bad header crc"),
            &seg.path,
            0,
            "bad header crc",
        );

        let mut d = seg.data.clone();
        d[16..24].copy_from_slice(&(seg.first + 1).to_le_bytes());
        fx.damage(i, &with_fixed_crc(d));
        assert_corruption(
            &fx.open_err("first index vs name"),
            &seg.path,
            16,
            "first index vs name",
        );
        fx.restore();
    }
}

/// (g) Garbage files named like segments, in the middle of the log or after its end:
/// always an error, never a panic, except a last file shorter than a header, which is
/// an uncompleted segment and is removed. A valid header followed by garbage at the end
/// of the log is a torn tail.
#[test]
fn garbage_segment_files_are_refused() {
    let fx = Fixture::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let end = ENTRIES + 1;
    for round in 0..300 {
        let len = match round % 6 {
            0 => rng.random_range(0..32),
            1 => 32,
            2 => rng.random_range(33..64),
            _ => rng.random_range(64..5000),
        };
        let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let style = round % 4;
        let at_end = (round / 4) % 2 == 0;
        let first = if at_end {
            end
        } else {
            fx.segments[2].first + 1
        };
        if len >= 32 {
            match style {
                1 => data[..8].copy_from_slice(b"WOLFWAL\0"),
                2 | 3 => {
                    data[..8].copy_from_slice(b"WOLFWAL\0");
                    data[8..10].copy_from_slice(&1u16.to_le_bytes());
                    data[10..12].fill(0);
                    data[16..24].copy_from_slice(&first.to_le_bytes());
                    data = with_fixed_crc(data);
                }
                _ => {}
            }
        }
        let path = fx.opts.dir.join(format!("{first:020}.wal"));
        std::fs::write(&path, &data).unwrap();
        let what = format!("round {round}: {len} garbage bytes (style {style}) as {path:?}");
        let r = fx.open(&what);
        if !at_end {
            assert!(r.is_err(), "{what}: opened");
        } else if len < 32 {
            let wal = r.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                wal.state().last,
                Some((ENTRIES, entry(ENTRIES).term)),
                "{what}"
            );
            assert!(!path.exists(), "{what}: uncompleted segment removed");
        } else if style >= 2 {
            // A valid header: whatever follows it is a torn first frame, or a valid frame
            // of the right index (practically impossible for random bytes).
            let wal = r.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                wal.read_blocking(1..end).unwrap(),
                entries(1..=ENTRIES),
                "{what}"
            );
            assert_eq!(
                wal.state().last,
                Some((ENTRIES, entry(ENTRIES).term)),
                "{what}"
            );
            drop(wal);
            assert_cut_at(&path, &data, 32, &format!("{what}: torn tail cut"));
        } else {
            assert!(r.is_err(), "{what}: opened");
        }
        fx.restore();
    }
}

/// (g) Random bit flips anywhere in any segment: opening and reading never panic, and
/// whatever the log still returns is exactly what was written (a torn-tail cut may lose
/// a suffix, nothing may come back garbled).
#[test]
fn random_damage_never_panics_or_returns_garbled_entries() {
    let fx = Fixture::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..400 {
        let i = rng.random_range(0..fx.segments.len());
        let mut d = fx.segments[i].data.clone();
        let flips = rng.random_range(1..4);
        for _ in 0..flips {
            let at = rng.random_range(0..d.len());
            d[at] ^= 1 << rng.random_range(0..8);
        }
        fx.damage(i, &d);
        let what = format!("round {round}: {flips} flips in segment {i}");
        match fx.open(&what) {
            Err(_) => *outcomes.entry("refused").or_default() += 1,
            Ok(wal) => {
                *outcomes.entry("opened").or_default() += 1;
                let got = catch_unwind(AssertUnwindSafe(|| wal.read_blocking(1..u64::MAX)))
                    .unwrap_or_else(|_| panic!("{what}: read panicked"));
                let got = got.unwrap_or_else(|e| panic!("{what}: opened but read failed: {e}"));
                let n = got.len() as u64;
                assert_eq!(got, entries(1..=n), "{what}: entries garbled");
                assert_eq!(wal.state().last.map(|l| l.0), Some(n), "{what}");
            }
        }
        fx.restore();
    }
    assert!(
        outcomes.get("refused").copied().unwrap_or(0) > 100,
        "{outcomes:?}"
    );
}

/// (h) Damage that appears after the log was opened is caught when the batch is read:
/// `Corruption` naming the file and the frame's offset, while other ranges stay readable.
#[test]
fn read_of_damaged_batch_is_corruption() {
    let fx = Fixture::new();
    let wal = fx.open("clean").unwrap();
    let seg = &fx.segments[1];
    let frame = seg.frames[1];
    for (rel, mask) in [
        (4usize, 0x01u8),
        (8, 0x01),
        (FRAME_HEADER + 17, 0x20),
        (frame.total as usize - 1, 0x80),
    ] {
        fx.damage(1, &flipped(&seg.data, frame.offset as usize + rel, mask));
        let what = format!("frame at {} byte {rel} ^ {mask:#04x}", frame.offset);
        let e = wal.read_blocking(frame.first..frame.first + 1).unwrap_err();
        assert_corruption(&e, &seg.path, frame.offset, &what);
        let e = wal.read_blocking(1..u64::MAX).unwrap_err();
        assert_corruption(&e, &seg.path, frame.offset, &what);
        assert_eq!(
            wal.read_blocking(frame.last() + 1..frame.last() + 4)
                .unwrap(),
            entries(frame.last() + 1..=frame.last() + 3),
            "{what}"
        );
        assert_eq!(
            wal.read_blocking(1..seg.first).unwrap(),
            entries(1..=seg.first - 1),
            "{what}"
        );
        fx.restore();
    }
    assert_eq!(
        wal.read_blocking(1..u64::MAX).unwrap(),
        entries(1..=ENTRIES)
    );
}

/// (i) The zero tail after the last frame is the normal end of the data: the log opens
/// whole and nothing on disk changes.
#[test]
fn zero_tail_after_the_last_frame_is_the_normal_end() {
    let fx = Fixture::new();
    let wal = fx.open("clean").unwrap();
    assert_eq!(wal.state().last, Some((ENTRIES, entry(ENTRIES).term)));
    assert_eq!(
        wal.read_blocking(1..u64::MAX).unwrap(),
        entries(1..=ENTRIES)
    );
    drop(wal);
    for s in &fx.segments {
        assert!(
            std::fs::read(&s.path).unwrap() == s.data,
            "{:?} changed",
            s.path
        );
    }
}

/// The frame a crash could have torn: the next entries, encoded as the writer would.
fn next_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    wolfscale::wal::format::encode_frame(&entries(ENTRIES + 1..=ENTRIES + 3), true, &mut frame);
    frame
}

/// `data` with its zero tail extended to at least `len` bytes (a frame larger than the
/// room left extends the file).
fn with_room(data: &[u8], len: usize) -> Vec<u8> {
    let mut d = data.to_vec();
    d.resize(d.len().max(len), 0);
    d
}

/// (i) A frame torn while being written into the zero tail, in any of the ways a power
/// cut leaves one (any prefix of it; its first part missing and only a later part on
/// disk; a stretch in its middle missing): a torn tail, zeroed, and the entries before
/// it all survive; a second open agrees.
#[test]
fn torn_frame_in_the_zero_tail_is_cut() {
    let fx = Fixture::new();
    let last = fx.segments.len() - 1;
    let seg = fx.last_seg();
    let at = seg.data_end() as usize;
    let frame = next_frame();
    let n = frame.len();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for keep in (1..n).step_by(7).chain([n - 1]) {
        let mut torn = vec![0u8; n];
        torn[..keep].copy_from_slice(&frame[..keep]);
        cases.push((format!("first {keep} of {n} bytes"), torn));
        let mut late = frame.clone();
        late[..keep].fill(0);
        cases.push((format!("bytes {keep}.. only"), late));
    }
    for hole in [(0, 9), (9, 25), (n / 3, n / 2), (n - 10, n - 1)] {
        let mut holed = frame.clone();
        holed[hole.0..hole.1].fill(0);
        cases.push((format!("bytes {}..{} missing", hole.0, hole.1), holed));
    }
    for (what, torn) in cases {
        let mut data = with_room(&seg.data, at + n);
        data[at..at + n].copy_from_slice(&torn);
        fx.damage(last, &data);
        let what = format!("torn next frame, {what}");
        for pass in 0..2 {
            let wal = fx
                .open(&what)
                .unwrap_or_else(|e| panic!("{what}: open {pass}: {e}"));
            assert_eq!(
                wal.state().last,
                Some((ENTRIES, entry(ENTRIES).term)),
                "{what}"
            );
            assert_eq!(
                wal.read_blocking(1..u64::MAX).unwrap(),
                entries(1..=ENTRIES),
                "{what}"
            );
            drop(wal);
            assert_cut_at(&seg.path, &seg.data, at as u64, &what);
        }
        fx.restore();
    }
}

/// (i) Stray bits anywhere in the zero tail: cut like a torn tail, nothing lost.
#[test]
fn flipped_byte_in_the_zero_tail_is_cut() {
    let fx = Fixture::new();
    let last = fx.segments.len() - 1;
    let seg = fx.last_seg();
    let end = seg.data_end() as usize;
    for at in [
        end,
        end + 1,
        end + 8,
        (end + seg.data.len()) / 2,
        seg.data.len() - 1,
    ] {
        fx.damage(last, &flipped(&seg.data, at, 0x10));
        let what = format!("zero tail byte {at} ^ 0x10");
        let wal = fx.open(&what).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            wal.read_blocking(1..u64::MAX).unwrap(),
            entries(1..=ENTRIES),
            "{what}"
        );
        drop(wal);
        assert_cut_at(&seg.path, &seg.data, end as u64, &what);
        fx.restore();
    }
}

/// (i) Zeros where a frame should be, followed by a valid frame that continues the log,
/// are a lost write, not the end of the data: corruption at the zeros, and nothing is
/// cut. Both a zeroed-out middle frame, and the next frame written after a zero gap.
#[test]
fn valid_frame_after_zeros_is_corruption() {
    let fx = Fixture::new();
    let last = fx.segments.len() - 1;
    let seg = fx.last_seg();
    let mut cases = Vec::new();
    for f in &seg.frames[..seg.frames.len() - 1] {
        let mut d = seg.data.clone();
        d[f.offset as usize..f.end() as usize].fill(0);
        cases.push((format!("frame at {} zeroed", f.offset), d, f.offset));
    }
    let end = seg.data_end() as usize;
    let frame = next_frame();
    for gap in [1, 9, 100] {
        let mut d = with_room(&seg.data, end + gap + frame.len());
        d[end + gap..end + gap + frame.len()].copy_from_slice(&frame);
        cases.push((format!("next frame after {gap} zeros"), d, end as u64));
    }
    for (what, data, offset) in cases {
        fx.damage(last, &data);
        let e = fx.open_err(&what);
        assert_corruption(&e, &seg.path, offset, &what);
        assert!(
            std::fs::read(&seg.path).unwrap() == data,
            "{what}: the refused open changed the file"
        );
        fx.restore();
    }
}
