//! Byte layouts of segment headers and batch frames, and their encoders/decoders.
//!
//! ```text
//! segment file <first_index:020>.wal
//!   0            header       32 bytes, below
//!   32           frames       batch frames back to back, below
//!   data end     zero tail    zero bytes up to the preallocated length (segment_size)
//!
//! segment header (32 bytes)
//!   0  magic        8  b"WOLFWAL\0"
//!   8  version      2  u16 LE (= 1)
//!  10  reserved     2  zero
//!  12  header_crc   4  crc32c of bytes 0..12 and 16..32
//!  16  first_index  8  u64 LE, index of the segment's first entry
//!  24  first_term   8  u64 LE, term of that entry
//!
//! batch frame (9-byte frame header + payload)
//!   0  len          4  u32 LE, payload length
//!   4  crc          4  crc32c of bytes 0..4, byte 8 and the payload
//!   8  flags        1  bit 0: body is LZ4-compressed; other bits zero
//!   9  payload      len bytes:
//!        first_index 8  u64 LE
//!        count       4  u32 LE, entries in the batch (indexes first_index..+count)
//!        raw_len     4  u32 LE, length of the uncompressed body
//!        body        the body, LZ4 block-compressed when flags bit 0 is set
//!
//! body: count × entry
//!   term        8  u64 LE
//!   data_len    4  u32 LE
//!   data        data_len bytes (opaque)
//! ```
//! The payload's first 16 bytes are never compressed, so the index can be rebuilt
//! from frame headers alone. Every length is checked against the bytes present and
//! against [`MAX_BATCH_BYTES`] before anything is allocated.
//!
//! # Zero tail
//! A segment is created at its full `segment_size`, zero-filled (real zero bytes, not
//! a sparse or `fallocate`d range, so that writing into it allocates nothing), and
//! frames are written into it in place: an append's `fdatasync` then has no file size
//! or extent to commit. The end of the data is where the bytes stop forming valid
//! frames *and every byte after that is zero*; a zero length field can never start a
//! frame (`len` is at least 16). A frame larger than the room left extends the file
//! past `segment_size`. When a segment is sealed (the next one starts) it is cut to
//! its data, so only the active (last) segment normally has a zero tail; a zero tail
//! is accepted after the last frame of any segment. Non-zero bytes after the last
//! valid frame are a torn tail or corruption, decided by the rule in
//! [`super::segment`]. Older logs without a zero tail read the same way, and the
//! version is still 1: a file ending right after its last frame is the same layout
//! with an empty zero tail.
//!
//! # Other files in `wal/`
//! `<first_index:020>.wal.tmp` is a segment being rewritten (a truncation inside a
//! batch) and `spare.wal.tmp` the next segment being zero-filled ahead of need; both
//! are renamed into place only once complete and synced, and any `*.wal.tmp` found at
//! open is a leftover of a crash and is removed.

use bytes::{BufMut, Bytes};

pub const MAGIC: &[u8; 8] = b"WOLFWAL\0";
pub const VERSION: u16 = 1;
pub const SEGMENT_HEADER: usize = 32;
pub const FRAME_HEADER: usize = 9;
/// Fixed, uncompressed part of a payload: first_index, count, raw_len.
pub const PAYLOAD_PREFIX: usize = 16;
const ENTRY_HEADER: usize = 12;
/// Largest batch (uncompressed body) the log writes or accepts.
pub const MAX_BATCH_BYTES: usize = 256 << 20;
pub const FLAG_LZ4: u8 = 0x01;
/// Bodies smaller than this are stored raw: LZ4 would not pay for itself.
pub const COMPRESS_MIN: usize = 512;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub payload: Bytes,
}

/// Why bytes are not a valid header or frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported format version {0}")]
    Version(u16),
    #[error("checksum mismatch")]
    Checksum,
    #[error("truncated ({0})")]
    Truncated(&'static str),
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// A segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_index: u64,
    pub first_term: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER] {
        let mut h = [0u8; SEGMENT_HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        h[24..32].copy_from_slice(&self.first_term.to_le_bytes());
        let crc = header_crc(&h);
        h[12..16].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SEGMENT_HEADER {
            return Err(FormatError::Truncated("segment header"));
        }
        if &b[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        if u32_at(b, 12) != header_crc(b) {
            return Err(FormatError::Checksum);
        }
        Ok(SegmentHeader {
            first_index: u64_at(b, 16),
            first_term: u64_at(b, 24),
        })
    }
}

fn header_crc(h: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&h[..12]), &h[16..SEGMENT_HEADER])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// What a frame header and payload prefix say, before the body is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Payload length.
    pub len: u32,
    pub crc: u32,
    pub flags: u8,
}

impl FrameInfo {
    pub fn total_len(&self) -> usize {
        FRAME_HEADER + self.len as usize
    }

    /// Parse a frame header; checks what can be checked without the payload.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < FRAME_HEADER {
            return Err(FormatError::Truncated("frame header"));
        }
        let info = FrameInfo {
            len: u32_at(b, 0),
            crc: u32_at(b, 4),
            flags: b[8],
        };
        if info.flags & !FLAG_LZ4 != 0 {
            return Err(FormatError::Invalid("unknown frame flags"));
        }
        if (info.len as usize) < PAYLOAD_PREFIX
            || info.len as usize > MAX_BATCH_BYTES + PAYLOAD_PREFIX
        {
            return Err(FormatError::Invalid("frame length"));
        }
        Ok(info)
    }
}

/// A verified frame: where its entries are, and its (possibly compressed) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub first_index: u64,
    pub count: u32,
    pub raw_len: u32,
    pub flags: u8,
    pub body: Bytes,
}

impl Batch {
    pub fn last_index(&self) -> u64 {
        self.first_index + self.count as u64 - 1
    }

    /// Verify the checksum of a whole frame (`frame` = header + payload) and split it.
    pub fn from_frame(frame: Bytes) -> Result<Self, FormatError> {
        let head = verify(&frame)?;
        Ok(Batch {
            first_index: head.first_index,
            count: head.count,
            raw_len: head.raw_len,
            flags: head.flags,
            body: frame.slice(FRAME_HEADER + PAYLOAD_PREFIX..head.total_len),
        })
    }

    /// Decode the entries.
    pub fn entries(&self) -> Result<Vec<Entry>, FormatError> {
        let body: Bytes = if self.flags & FLAG_LZ4 != 0 {
            let mut out = vec![0u8; self.raw_len as usize];
            let n = lz4_flex::block::decompress_into(&self.body, &mut out)
                .map_err(|_| FormatError::Invalid("lz4 body"))?;
            if n != out.len() {
                return Err(FormatError::Invalid("lz4 body length"));
            }
            out.into()
        } else {
            self.body.clone()
        };
        let mut entries =
            Vec::with_capacity((self.count as usize).min(body.len() / ENTRY_HEADER + 1));
        let mut off = 0;
        for i in 0..self.count as u64 {
            if body.len() - off < ENTRY_HEADER {
                return Err(FormatError::Truncated("entry header"));
            }
            let term = u64_at(&body, off);
            let len = u32_at(&body, off + 8) as usize;
            off += ENTRY_HEADER;
            if body.len() - off < len {
                return Err(FormatError::Truncated("entry data"));
            }
            entries.push(Entry {
                index: self.first_index + i,
                term,
                payload: body.slice(off..off + len),
            });
            off += len;
        }
        if off != body.len() {
            return Err(FormatError::Invalid("trailing bytes in batch body"));
        }
        Ok(entries)
    }
}

/// What a verified frame holds, without its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub first_index: u64,
    pub count: u32,
    pub raw_len: u32,
    pub flags: u8,
    /// Header plus payload.
    pub total_len: usize,
}

/// Check the frame at the start of `frame` (its checksum and fields) without copying.
pub fn verify(frame: &[u8]) -> Result<FrameHead, FormatError> {
    let info = FrameInfo::decode(frame)?;
    let total_len = info.total_len();
    let frame = frame
        .get(..total_len)
        .ok_or(FormatError::Truncated("frame payload"))?;
    if frame_crc(frame) != info.crc {
        return Err(FormatError::Checksum);
    }
    let p = &frame[FRAME_HEADER..];
    let head = FrameHead {
        first_index: u64_at(p, 0),
        count: u32_at(p, 8),
        raw_len: u32_at(p, 12),
        flags: info.flags,
        total_len,
    };
    if head.count == 0 || head.raw_len as usize > MAX_BATCH_BYTES {
        return Err(FormatError::Invalid("batch count or size"));
    }
    if head.first_index.checked_add(head.count as u64).is_none() {
        return Err(FormatError::Invalid("batch index overflow"));
    }
    if head.flags & FLAG_LZ4 == 0
        && total_len - FRAME_HEADER - PAYLOAD_PREFIX != head.raw_len as usize
    {
        return Err(FormatError::Invalid("raw body length"));
    }
    Ok(head)
}

fn frame_crc(frame: &[u8]) -> u32 {
    let c = crc32c::crc32c(&frame[..4]);
    let c = crc32c::crc32c_append(c, &frame[8..9]);
    crc32c::crc32c_append(c, &frame[FRAME_HEADER..])
}

/// Size of the uncompressed body for `entries`.
pub fn body_len(entries: &[Entry]) -> usize {
    entries.iter().map(|e| ENTRY_HEADER + e.payload.len()).sum()
}

/// Reusable buffers for encoding frames, so a busy writer does not allocate (and
/// page-fault in) fresh multi-MiB buffers for every group.
#[derive(Default)]
pub struct Scratch {
    body: Vec<u8>,
    packed: Vec<u8>,
}

/// Encode consecutive entries as one frame, compressing when asked and worthwhile.
pub fn encode_frame(entries: &[Entry], compress: bool, out: &mut Vec<u8>) {
    encode_frame_with(entries, compress, out, &mut Scratch::default());
}

/// [`encode_frame`] with caller-owned scratch buffers.
pub fn encode_frame_with(
    entries: &[Entry],
    compress: bool,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) {
    let raw_len = body_len(entries);
    let start = out.len();
    out.reserve(FRAME_HEADER + PAYLOAD_PREFIX + raw_len);
    out.put_u32_le(0); // len, patched below
    out.put_u32_le(0); // crc, patched below
    out.put_u8(0); // flags, patched below
    out.put_u64_le(entries.first().map_or(0, |e| e.index));
    out.put_u32_le(entries.len() as u32);
    out.put_u32_le(raw_len as u32);
    let body_at = out.len();
    let mut flags = 0;
    if compress && raw_len >= COMPRESS_MIN && worth_compressing(entries) {
        let body = &mut scratch.body;
        body.clear();
        put_body(entries, body);
        let packed = &mut scratch.packed;
        packed.resize(lz4_flex::block::get_maximum_output_size(raw_len), 0);
        if let Ok(n) = lz4_flex::block::compress_into(body, packed) {
            if n < raw_len - raw_len / 10 {
                out.extend_from_slice(&packed[..n]);
                flags = FLAG_LZ4;
            }
        }
        if flags == 0 {
            out.extend_from_slice(body);
        }
    } else {
        put_body(entries, out);
    }
    let len = (out.len() - body_at + PAYLOAD_PREFIX) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 8] = flags;
    let crc = frame_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_body(entries: &[Entry], out: &mut Vec<u8>) {
    for e in entries {
        out.put_u64_le(e.term);
        out.put_u32_le(e.payload.len() as u32);
        out.put_slice(&e.payload);
    }
}

/// Cheap guess whether LZ4 will pay: compress a sample of the first entry's payload.
/// Small bodies are always tried; large incompressible ones (already-compressed blobs)
/// skip the work.
fn worth_compressing(entries: &[Entry]) -> bool {
    const SAMPLE: usize = 4096;
    let Some(first) = entries.first() else {
        return false;
    };
    if body_len(entries) < 4 * SAMPLE || first.payload.len() < SAMPLE {
        return true;
    }
    let sample = &first.payload[..SAMPLE];
    lz4_flex::block::compress(sample).len() < SAMPLE - SAMPLE / 10
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u64, size: usize) -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry {
                index: 10 + i,
                term: 3,
                payload: Bytes::from(format!("{i:0size$}")),
            })
            .collect()
    }

    #[test]
    fn frame_round_trip_raw_and_compressed() {
        for compress in [false, true] {
            let es = entries(50, 100);
            let mut buf = Vec::new();
            encode_frame(&es, compress, &mut buf);
            let b = Batch::from_frame(Bytes::from(buf)).unwrap();
            assert_eq!(b.flags & FLAG_LZ4 != 0, compress);
            assert_eq!(b.entries().unwrap(), es);
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let es = entries(3, 40);
        let mut buf = Vec::new();
        encode_frame(&es, true, &mut buf);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                let r = Batch::from_frame(Bytes::from(bad)).and_then(|b| b.entries());
                assert!(r.is_err(), "flip at byte {i} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn header_round_trip_and_errors() {
        let h = SegmentHeader {
            first_index: 42,
            first_term: 7,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(FormatError::BadMagic));
        let mut bad = b;
        bad[8] = 9;
        assert_eq!(SegmentHeader::decode(&bad), Err(FormatError::Version(9)));
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(FormatError::Checksum));
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        // A frame claiming a 4 GiB payload is refused from its header alone.
        let mut f = vec![0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0];
        f.extend_from_slice(&[0; 16]);
        assert!(FrameInfo::decode(&f).is_err());
    }
}
