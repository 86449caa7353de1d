//! Scanning one segment file: verify the header and every frame, build the batch index,
//! and decide whether a bad frame is a torn tail or corruption.
//!
//! End of data: after the last valid frame, a segment either ends or continues with a
//! zero tail (the preallocated, zero-filled rest of the file; see [`super::format`]).
//! A position where no valid frame starts and every byte from there on is zero is the
//! normal end of the data.
//!
//! Torn-tail rule: frames are written one at a time and each is synced before the
//! next is written, so only the last frame of the last segment can be partly on disk
//! after a crash, and any of its pages may be missing (read back as the zeros that were
//! there before). Non-zero bytes where a valid frame should start are a torn tail when
//! no checksum-valid frame continuing the log starts anywhere after them (the frame's
//! own length field may be the damaged part, so it is not trusted); if one does, the
//! damage is in the middle and is `Corruption`. So a zeroed-out stretch followed by a
//! valid frame (a lost write) is corruption too, while a zero tail after the last
//! frame is not damage at all.

use bytes::Bytes;

use super::format::{
    self, Batch, FormatError, FrameInfo, SegmentHeader, FRAME_HEADER, SEGMENT_HEADER,
};

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
    /// End of the damaged bytes: one past the last non-zero byte of the segment. A
    /// torn tail is cut by zeroing `offset..end` (the rest is zero already).
    pub end: u64,
    pub error: FormatError,
    pub torn_tail: bool,
}

/// Result of scanning a segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub header: SegmentHeader,
    pub batches: Vec<BatchLoc>,
    /// Length of the valid prefix (header plus whole, valid frames): where the next
    /// frame goes. Everything after it is zero unless `damage` says otherwise.
    pub valid_len: u64,
    pub damage: Option<Damage>,
    /// Term of the last valid entry (decoded from the last batch), if any.
    pub last_term: Option<u64>,
}

/// Scan a segment held in memory. `Err` only when the header itself is unusable.
pub fn scan(data: &[u8]) -> Result<Scan, FormatError> {
    let header = SegmentHeader::decode(data)?;
    let mut batches = Vec::new();
    let mut off = SEGMENT_HEADER;
    let mut next = header.first_index;
    let mut damage = None;
    while off < data.len() {
        match frame_at(data, off, next) {
            Ok(head) => {
                let len = head.total_len as u32;
                batches.push(BatchLoc {
                    first_index: head.first_index,
                    count: head.count,
                    offset: off as u64,
                    len,
                });
                next = head.first_index + head.count as u64;
                off += head.total_len;
            }
            Err(error) => {
                let end = off + nonzero_len(&data[off..]);
                if end == off {
                    break; // a zero tail: the normal end of the data
                }
                let torn_tail = !valid_frame_follows(&data[..end], off, next);
                damage = Some(Damage {
                    offset: off as u64,
                    end: end as u64,
                    error,
                    torn_tail,
                });
                break;
            }
        }
    }
    // The last entry's term needs the last batch decoded (one frame per segment).
    let last_term = match batches.last() {
        None => None,
        Some(b) => {
            let frame = &data[b.offset as usize..(b.offset + b.len as u64) as usize];
            match Batch::from_frame(Bytes::copy_from_slice(frame)).and_then(|b| b.entries()) {
                Ok(es) => es.last().map(|e| e.term),
                Err(error) => {
                    // Checksum-valid but undecodable: corruption, never a torn tail.
                    let offset = b.offset;
                    let damage = Some(Damage {
                        offset,
                        end: nonzero_len(data) as u64,
                        error,
                        torn_tail: false,
                    });
                    return Ok(Scan {
                        header,
                        batches,
                        valid_len: offset,
                        damage,
                        last_term: None,
                    });
                }
            }
        }
    };
    Ok(Scan {
        header,
        batches,
        valid_len: off as u64,
        damage,
        last_term,
    })
}

/// Verify the frame at `off`, which must start at index `expected`.
fn frame_at(data: &[u8], off: usize, expected: u64) -> Result<format::FrameHead, FormatError> {
    let head = format::verify(&data[off..])?;
    if head.first_index != expected {
        return Err(FormatError::Invalid(
            "batch does not continue the previous one",
        ));
    }
    Ok(head)
}

/// Length of `data` without its trailing zero bytes (0 when it is all zeros). Works a
/// block at a time, since a fresh segment's zero tail is most of the file.
pub fn nonzero_len(data: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let mut end = data.len();
    // The partial block at the end first, then whole blocks, OR-folded (vectorizes).
    while end > 0 {
        let start = end - ((end - 1) % BLOCK + 1);
        let block = &data[start..end];
        if block.iter().fold(0u8, |a, &b| a | b) != 0 {
            return start + block.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        }
        end = start;
    }
    0
}

/// Whether a checksum-valid frame continuing the log (first index at least `next`)
/// starts anywhere after `off`. The damaged frame's own length field cannot be trusted,
/// so every later position is tried; a cheap header and index check comes before the
/// checksum, so garbage costs little.
fn valid_frame_follows(data: &[u8], off: usize, next: u64) -> bool {
    (off + 1
        ..data
            .len()
            .saturating_sub(FRAME_HEADER + format::PAYLOAD_PREFIX - 1))
        .any(|at| {
            let rest = &data[at..];
            let Ok(info) = FrameInfo::decode(rest) else {
                return false;
            };
            let first = u64::from_le_bytes(
                rest[FRAME_HEADER..FRAME_HEADER + 8]
                    .try_into()
                    .unwrap_or([0; 8]),
            );
            first >= next && info.total_len() <= rest.len() && format::verify(rest).is_ok()
        })
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
        let data = segment(&[(5, 3), (8, 2)]);
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
            let data = full[..full.len() - cut].to_vec();
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
        let s = scan(&data).unwrap();
        let d = s.damage.unwrap();
        assert_eq!(d.offset, SEGMENT_HEADER as u64);
        assert!(!d.torn_tail);
        assert_eq!(d.error, FormatError::Checksum);
    }

    #[test]
    fn zero_tail_is_the_normal_end() {
        let data = segment(&[(5, 3), (8, 2)]);
        let clean = scan(&data).unwrap();
        for tail in [1, 8, 9, 100, 5000] {
            let mut d = data.clone();
            d.resize(data.len() + tail, 0);
            let s = scan(&d).unwrap();
            assert_eq!(s.damage, None, "tail {tail}");
            assert_eq!(s.batches, clean.batches);
            assert_eq!(s.valid_len, data.len() as u64);
        }
        // A header and nothing but zeros: an empty, preallocated segment.
        let mut empty = data[..SEGMENT_HEADER].to_vec();
        empty.resize(4096, 0);
        let s = scan(&empty).unwrap();
        assert!(s.batches.is_empty() && s.damage.is_none());
        assert_eq!(s.valid_len, SEGMENT_HEADER as u64);
    }

    #[test]
    fn torn_frame_in_zero_tail_is_torn_and_bounded() {
        let full = segment(&[(1, 3), (4, 3)]);
        let two = segment(&[(1, 3)]);
        for cut in (two.len() + 1..full.len()).step_by(3) {
            let mut d = full[..cut].to_vec();
            d.resize(full.len() + 3000, 0);
            let s = scan(&d).unwrap();
            let dmg = s.damage.expect("damage");
            assert!(dmg.torn_tail, "cut {cut}");
            assert_eq!(dmg.offset, two.len() as u64);
            assert_eq!(dmg.end, nonzero_len(&full[..cut]) as u64);
            assert_eq!(s.valid_len, two.len() as u64);
        }
    }

    #[test]
    fn zeros_then_a_valid_frame_is_corruption() {
        let mut data = segment(&[(1, 3), (4, 3), (7, 1)]);
        let s = scan(&data).unwrap();
        let b = s.batches[1];
        data[b.offset as usize..(b.offset + b.len as u64) as usize].fill(0);
        let d = scan(&data).unwrap().damage.unwrap();
        assert_eq!(d.offset, b.offset);
        assert!(!d.torn_tail);
    }

    #[test]
    fn nonzero_len_finds_the_last_nonzero_byte() {
        for len in [0usize, 1, 4095, 4096, 4097, 10_000] {
            let mut d = vec![0u8; len];
            assert_eq!(nonzero_len(&d), 0);
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at < len {
                    d[at] = 1;
                    assert_eq!(nonzero_len(&d), at + 1, "len {len}, at {at}");
                    d[at] = 0;
                }
            }
        }
    }

    #[test]
    fn gap_between_batches_is_caught() {
        let data = segment(&[(1, 3), (5, 3)]);
        let d = scan(&data).unwrap().damage.unwrap();
        assert!(matches!(d.error, FormatError::Invalid(_)));
    }
}
