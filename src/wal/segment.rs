//! Scanning one segment file: verify the header and every frame, build the batch index,
//! and decide whether a bad frame is a torn tail or corruption.
//!
//! Torn-tail rule: frames are written one at a time and each is synced before the
//! next is written, so only the last frame of the last segment can be partly on disk
//! after a crash. A frame that fails to parse or checksum is a torn tail when no valid
//! frame follows it; if one does, the damage is in the middle and is `Corruption`.

use bytes::Bytes;

use super::format::{Batch, FormatError, FrameInfo, SegmentHeader, FRAME_HEADER, SEGMENT_HEADER};

/// Where one batch lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLoc {
    pub first_index: u64,
    pub count: u32,
    pub offset: u64,
    pub len: u32,
}

impl BatchLoc {
    pub fn last_index(&self) -> u64 {
        self.first_index + self.count as u64 - 1
    }
}

/// The first frame that failed, and whether it is a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub error: FormatError,
    pub torn_tail: bool,
}

/// Result of scanning a segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub header: SegmentHeader,
    pub batches: Vec<BatchLoc>,
    /// Length of the valid prefix (header plus whole, valid frames).
    pub valid_len: u64,
    pub damage: Option<Damage>,
    /// Term of the last valid entry (decoded from the last batch), if any.
    pub last_term: Option<u64>,
}

/// Scan a segment held in memory. `Err` only when the header itself is unusable.
pub fn scan(data: &Bytes) -> Result<Scan, FormatError> {
    let header = SegmentHeader::decode(data)?;
    let mut batches = Vec::new();
    let mut off = SEGMENT_HEADER;
    let mut next = header.first_index;
    let mut last_batch = None;
    let mut damage = None;
    while off < data.len() {
        match frame_at(data, off, next) {
            Ok((batch, len)) => {
                batches.push(BatchLoc {
                    first_index: batch.first_index,
                    count: batch.count,
                    offset: off as u64,
                    len,
                });
                next = batch.first_index + batch.count as u64;
                off += len as usize;
                last_batch = Some(batch);
            }
            Err(error) => {
                let torn_tail = !valid_frame_follows(data, off);
                damage = Some(Damage {
                    offset: off as u64,
                    error,
                    torn_tail,
                });
                break;
            }
        }
    }
    let last_term = match last_batch.map(|b| b.entries()) {
        Some(Ok(es)) => es.last().map(|e| e.term),
        Some(Err(e)) => {
            // Checksum-valid but undecodable: corruption, never a torn tail.
            let offset = batches.last().map_or(0, |b| b.offset);
            return Ok(Scan {
                header,
                batches,
                valid_len: offset,
                damage: Some(Damage {
                    offset,
                    error: e,
                    torn_tail: false,
                }),
                last_term: None,
            });
        }
        None => None,
    };
    Ok(Scan {
        header,
        batches,
        valid_len: off as u64,
        damage,
        last_term,
    })
}

/// Parse and verify the frame at `off`, which must start at index `expected`.
fn frame_at(data: &Bytes, off: usize, expected: u64) -> Result<(Batch, u32), FormatError> {
    let info = FrameInfo::decode(&data[off..])?;
    let end = off
        .checked_add(info.total_len())
        .ok_or(FormatError::Invalid("frame length"))?;
    if end > data.len() {
        return Err(FormatError::Truncated("frame runs past end of file"));
    }
    let batch = Batch::from_frame(data.slice(off..end))?;
    if batch.first_index != expected {
        return Err(FormatError::Invalid(
            "batch does not continue the previous one",
        ));
    }
    Ok((batch, info.total_len() as u32))
}

/// Whether a checksum-valid frame starts right after the (bad) frame at `off`.
fn valid_frame_follows(data: &Bytes, off: usize) -> bool {
    let Ok(info) = FrameInfo::decode(&data[off..]) else {
        return false;
    };
    let Some(next) = off.checked_add(info.total_len()) else {
        return false;
    };
    if next + FRAME_HEADER > data.len() {
        return false;
    }
    let Ok(ninfo) = FrameInfo::decode(&data[next..]) else {
        return false;
    };
    let Some(end) = next.checked_add(ninfo.total_len()) else {
        return false;
    };
    end <= data.len() && Batch::from_frame(data.slice(next..end)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::format::{encode_frame, Entry};
    use super::*;

    fn segment(batches: &[(u64, u64)]) -> Vec<u8> {
        let mut out = SegmentHeader {
            first_index: batches[0].0,
            first_term: 1,
        }
        .encode()
        .to_vec();
        for &(first, n) in batches {
            let es: Vec<Entry> = (first..first + n)
                .map(|i| Entry {
                    index: i,
                    term: 1,
                    payload: Bytes::from(vec![i as u8; 30]),
                })
                .collect();
            encode_frame(&es, false, &mut out);
        }
        out
    }

    #[test]
    fn clean_segment() {
        let data = Bytes::from(segment(&[(5, 3), (8, 2)]));
        let s = scan(&data).unwrap();
        assert_eq!(s.batches.len(), 2);
        assert_eq!(s.batches[1].last_index(), 9);
        assert_eq!(s.valid_len, data.len() as u64);
        assert!(s.damage.is_none());
    }

    #[test]
    fn truncated_last_frame_is_torn_tail() {
        let full = segment(&[(1, 3), (4, 3)]);
        for cut in 1..60 {
            let data = Bytes::from(full[..full.len() - cut].to_vec());
            let s = scan(&data).unwrap();
            let d = s.damage.expect("damage");
            assert!(d.torn_tail, "cut {cut}");
            assert_eq!(s.batches.len(), 1);
        }
    }

    #[test]
    fn damage_before_a_valid_frame_is_corruption() {
        let mut data = segment(&[(1, 3), (4, 3), (7, 1)]);
        data[SEGMENT_HEADER + 20] ^= 0x40;
        let s = scan(&Bytes::from(data)).unwrap();
        let d = s.damage.unwrap();
        assert_eq!(d.offset, SEGMENT_HEADER as u64);
        assert!(!d.torn_tail);
        assert_eq!(d.error, FormatError::Checksum);
    }

    #[test]
    fn gap_between_batches_is_caught() {
        let data = Bytes::from(segment(&[(1, 3), (5, 3)]));
        let d = scan(&data).unwrap().damage.unwrap();
        assert!(matches!(d.error, FormatError::Invalid(_)));
    }
}
