//! Read-only inspection for operators (`wolfctl wal check` and `wolfctl wal dump`):
//! verifies every frame and entry without repairing anything, so it can run against
//! the files of a stopped node, or copies of them.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::Batch;
use super::segment::{self, BatchLoc, Damage};
use super::{segment_files, Entry, WalError};

/// What `check` found in one segment.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    pub path: PathBuf,
    pub first_index: u64,
    pub last_index: Option<u64>,
    pub batches: usize,
    pub entries: u64,
    /// Header and frames: the segment's data, without its zero tail.
    pub bytes: u64,
    /// A torn tail of the last segment (the next open cuts it); anything else is an error.
    pub torn_tail: Option<Damage>,
}

/// The `wal/` directory for a data directory, or the directory itself if it holds
/// segments directly.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    let nested = data_dir.join("wal");
    if nested.is_dir() {
        nested
    } else {
        data_dir.to_path_buf()
    }
}

/// Verify every segment, frame checksum and entry. Corruption is an error naming the
/// file and offset.
pub fn check(dir: &Path) -> Result<Vec<SegmentReport>, WalError> {
    let files = segment_files(dir)?;
    let count = files.len();
    let mut reports: Vec<SegmentReport> = Vec::new();
    for (i, (_, path)) in files.into_iter().enumerate() {
        let (data, scan) = read_segment(&path)?;
        let torn_tail = match scan.damage {
            Some(d) if d.torn_tail && i + 1 == count => Some(d),
            Some(d) => return Err(WalError::from_format(&path, d.offset, d.error)),
            None => None,
        };
        if let Some(prev) = reports.last().and_then(|r| r.last_index) {
            if scan.header.first_index != prev + 1 {
                tracing::warn!(file = %path.display(), expected = prev + 1, found = scan.header.first_index,
                    "segment does not continue the previous one (a gap is normal right after a purge marker)");
            }
        }
        let mut entries = 0;
        for loc in &scan.batches {
            entries += batch_entries(&path, &data, loc)?.len() as u64;
        }
        reports.push(SegmentReport {
            first_index: scan.header.first_index,
            last_index: scan.batches.last().map(|b| b.last_index()),
            batches: scan.batches.len(),
            entries,
            bytes: scan.valid_len,
            torn_tail,
            path,
        });
    }
    Ok(reports)
}

/// Call `f` for every entry with `from <= index <= to`, in order.
pub fn dump(dir: &Path, from: u64, to: u64, mut f: impl FnMut(&Entry)) -> Result<(), WalError> {
    for (_, path) in segment_files(dir)? {
        let (data, scan) = read_segment(&path)?;
        for loc in scan
            .batches
            .iter()
            .filter(|b| b.last_index() >= from && b.first_index <= to)
        {
            batch_entries(&path, &data, loc)?
                .iter()
                .filter(|e| (from..=to).contains(&e.index))
                .for_each(&mut f);
        }
        if let Some(d) = scan.damage.filter(|d| !d.torn_tail) {
            return Err(WalError::from_format(&path, d.offset, d.error));
        }
    }
    Ok(())
}

fn read_segment(path: &Path) -> Result<(Bytes, segment::Scan), WalError> {
    let data = Bytes::from(std::fs::read(path).map_err(WalError::io("read", path))?);
    let scan = segment::scan(&data).map_err(|e| WalError::from_format(path, 0, e))?;
    Ok((data, scan))
}

/// Verify and decode the batch at `loc` of a segment held in memory.
fn batch_entries(path: &Path, data: &Bytes, loc: &BatchLoc) -> Result<Vec<Entry>, WalError> {
    let frame = data.slice(loc.offset as usize..(loc.offset + loc.len as u64) as usize);
    Batch::from_frame(frame)
        .and_then(|b| b.entries())
        .map_err(|e| WalError::from_format(path, loc.offset, e))
}
