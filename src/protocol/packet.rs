//! Packet framing: `[len: u24 LE | seq: u8 | payload]`, split at 0xFFFFFF.
//!
//! A *physical* packet carries at most `MAX_CHUNK` payload bytes. A *logical* packet
//! whose payload is `MAX_CHUNK` bytes or more continues in the next physical packet,
//! and ends with a physical packet shorter than `MAX_CHUNK` (possibly empty).
//!
//! [`PacketConn`] owns the read buffer of one connection. Reads are two-phase and
//! cancel-safe: bytes are only taken from the buffer once a whole logical packet is
//! there, so a `read_packet` future dropped inside `select!` loses nothing. Every
//! length is checked against the connection's `max_packet` before the buffer grows.
//!
//! # Memory held for client packets
//! A connection buffers packets of up to [`ALLOWANCE`] bytes on its own. A larger packet
//! first reserves its size from a [`PacketBudget`] shared by all connections (waiting
//! for others to release theirs, up to the budget's wait), and the reservation lives as
//! long as the [`Packet`] does; the connection's buffer shrinks back once such a packet
//! has been taken. So the memory held for client packets is at most
//! `connections × 2 × ALLOWANCE + budget`. A packet that has begun must be completed
//! within the connection's read timeout (MariaDB's `net_read_timeout`), so a client
//! cannot hold a reservation by stalling.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest payload of one physical packet.
pub const MAX_CHUNK: usize = 0xFF_FFFF;
/// Bytes of a packet header.
pub const HEADER: usize = 4;

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by peer")]
    Closed,
    #[error("packet of {len} bytes exceeds max_allowed_packet ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("packets out of order: expected sequence id {expected}, got {got}")]
    OutOfOrder { expected: u8, got: u8 },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("timed out reading the rest of a packet")]
    ReadTimeout,
    #[error("no memory for a {len}-byte packet: the client packet budget stayed full")]
    OutOfMemory { len: usize },
}

impl ProtoError {
    /// True when the peer is gone, so there is nobody to send an error to.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProtoError::Closed => true,
            ProtoError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// One logical packet as received.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Sequence id of the first physical packet.
    pub seq: u8,
    /// Sequence id of the last physical packet; a reply continues from `last_seq + 1`.
    pub last_seq: u8,
    /// The joined payload.
    pub payload: Bytes,
    /// The packet exactly as it came off the wire, headers included, for forwarding.
    pub raw: Bytes,
    /// The share of the [`PacketBudget`] this packet's bytes hold, released on drop.
    pub reservation: Option<Arc<OwnedSemaphorePermit>>,
}

impl Packet {
    /// The first payload byte (the command byte of a client command), if any.
    pub fn first(&self) -> Option<u8> {
        self.payload.first().copied()
    }
}

/// Header of the physical packet at the start of `buf`, if four bytes are there.
#[inline]
pub fn peek_header(buf: &[u8]) -> Option<(usize, u8)> {
    if buf.len() < HEADER {
        return None;
    }
    let len = buf[0] as usize | (buf[1] as usize) << 8 | (buf[2] as usize) << 16;
    Some((len, buf[3]))
}

/// Length in `buf` of the complete logical packet at its start, or `None` if it is not
/// all buffered yet. Fails once the declared payload exceeds `max`.
fn logical_len(buf: &[u8], max: usize) -> Result<Option<usize>, ProtoError> {
    let mut off = 0;
    let mut payload = 0usize;
    loop {
        let Some((len, _)) = peek_header(&buf[off..]) else {
            return Ok(None);
        };
        payload += len;
        if payload > max {
            return Err(ProtoError::TooLarge { len: payload, max });
        }
        off += HEADER + len;
        if buf.len() < off {
            return Ok(None);
        }
        if len < MAX_CHUNK {
            return Ok(Some(off));
        }
    }
}

/// Split the first `total` buffered bytes (a whole logical packet) into a [`Packet`],
/// checking that continuation chunks carry consecutive sequence ids.
fn take_packet(buf: &mut BytesMut, total: usize) -> Result<Packet, ProtoError> {
    let raw = buf.split_to(total).freeze();
    let (len, seq) = peek_header(&raw).ok_or(ProtoError::Malformed("short header"))?;
    if len < MAX_CHUNK {
        return Ok(Packet {
            seq,
            last_seq: seq,
            payload: raw.slice(HEADER..),
            raw,
            reservation: None,
        });
    }
    let mut payload = BytesMut::with_capacity(total);
    let mut off = 0;
    let mut expected = seq;
    let mut last_seq = seq;
    while off < raw.len() {
        let (len, s) = peek_header(&raw[off..]).ok_or(ProtoError::Malformed("short header"))?;
        if s != expected {
            return Err(ProtoError::OutOfOrder { expected, got: s });
        }
        payload.extend_from_slice(&raw[off + HEADER..off + HEADER + len]);
        last_seq = s;
        expected = s.wrapping_add(1);
        off += HEADER + len;
    }
    Ok(Packet {
        seq,
        last_seq,
        payload: payload.freeze(),
        raw,
        reservation: None,
    })
}

/// Take the logical packet at the start of `buf` if it is complete; `Ok(None)` if more
/// bytes are needed. Nothing is consumed unless a whole packet is returned.
pub fn try_take_packet(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, ProtoError> {
    match logical_len(buf, max)? {
        Some(total) => take_packet(buf, total).map(Some),
        None => Ok(None),
    }
}

/// Append `payload` framed as one logical packet starting at sequence id `seq`.
/// Returns the sequence id the next packet should carry.
pub fn encode_packet(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.reserve(HEADER + n);
        out.put_uint_le(n as u64, 3);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_CHUNK {
            return seq;
        }
    }
}

/// Follows packet boundaries in a byte stream without buffering it: used to pass a
/// client's LOAD DATA LOCAL file contents through as they arrive, up to the empty
/// packet that ends them.
#[derive(Debug, Default)]
pub struct StreamTracker {
    header: [u8; HEADER],
    have: usize,
    remaining: usize,
    /// The last packet was a full chunk: the next one continues it, even if empty.
    continued: bool,
}

impl StreamTracker {
    /// Consume `buf`: how many of its bytes belong to the stream, and whether they
    /// complete it (the empty terminating packet was among them).
    pub fn advance(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < buf.len() {
            if self.remaining > 0 {
                let n = self.remaining.min(buf.len() - i);
                self.remaining -= n;
                i += n;
                continue;
            }
            self.header[self.have] = buf[i];
            self.have += 1;
            i += 1;
            if self.have == HEADER {
                self.have = 0;
                let (len, _) = peek_header(&self.header).unwrap_or((0, 0));
                if len == 0 && !self.continued {
                    return (i, true);
                }
                self.continued = len == MAX_CHUNK;
                self.remaining = len;
            }
        }
        (buf.len(), false)
    }
}

/// Bytes of packet a connection buffers without reserving from a [`PacketBudget`].
pub const ALLOWANCE: usize = 64 * 1024;
/// Initial and shrunk-back size of a connection's read buffer.
const INITIAL_BUFFER: usize = 16 * 1024;

/// Memory for client packets larger than [`ALLOWANCE`], shared by all connections of a
/// proxy, in KiB units.
pub struct PacketBudget {
    permits: Arc<Semaphore>,
    total: usize,
    wait: Duration,
}

impl PacketBudget {
    /// A budget of `bytes`; a packet waits at most `wait` for its share.
    pub fn new(bytes: usize, wait: Duration) -> Arc<Self> {
        let kib = bytes.div_ceil(1024).min(Semaphore::MAX_PERMITS);
        Arc::new(PacketBudget {
            permits: Arc::new(Semaphore::new(kib)),
            total: kib,
            wait,
        })
    }

    /// KiB not reserved right now.
    pub fn available_kib(&self) -> usize {
        self.permits.available_permits()
    }

    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ProtoError> {
        let kib = bytes.div_ceil(1024);
        if kib > self.total {
            return Err(ProtoError::OutOfMemory { len: bytes });
        }
        let n = u32::try_from(kib).map_err(|_| ProtoError::OutOfMemory { len: bytes })?;
        let acquire = self.permits.clone().acquire_many_owned(n);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ProtoError::OutOfMemory { len: bytes }),
        }
    }
}

/// A framed connection: a stream plus its owned read buffer.
pub struct PacketConn<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    max_packet: usize,
    budget: Option<Arc<PacketBudget>>,
    /// Reserved for the packet being read.
    reserved: Option<OwnedSemaphorePermit>,
    read_timeout: Option<Duration>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketConn<S> {
    pub fn new(stream: S, max_packet: usize) -> Self {
        Self::with_buffer(stream, max_packet, BytesMut::with_capacity(INITIAL_BUFFER))
    }

    /// Wrap a stream whose first bytes were already read into `rbuf`.
    pub fn with_buffer(stream: S, max_packet: usize, rbuf: BytesMut) -> Self {
        PacketConn {
            stream,
            rbuf,
            wbuf: BytesMut::with_capacity(INITIAL_BUFFER),
            max_packet,
            budget: None,
            reserved: None,
            read_timeout: None,
        }
    }

    /// Change the largest logical packet accepted (e.g. once the client is
    /// authenticated).
    pub fn set_max_packet(&mut self, max_packet: usize) {
        self.max_packet = max_packet;
    }

    /// Packets over [`ALLOWANCE`] reserve their size from `budget` first.
    pub fn set_budget(&mut self, budget: Arc<PacketBudget>) {
        self.budget = Some(budget);
    }

    /// Once a packet has begun, each further read must arrive within `timeout`.
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.read_timeout = Some(timeout);
    }

    /// The underlying stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Give back the stream and whatever was read beyond the last packet.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// Buffered, unparsed input.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }

    /// Read more bytes into the buffer. `Ok(false)` on a clean end of stream.
    pub async fn fill(&mut self) -> Result<bool, ProtoError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.rbuf).await? > 0)
    }

    /// Read one whole logical packet. Cancel-safe (a reservation made for a packet
    /// still arriving is kept for the next call).
    pub async fn read_packet(&mut self) -> Result<Packet, ProtoError> {
        loop {
            if let Some(mut p) = try_take_packet(&mut self.rbuf, self.max_packet)? {
                if let Some(permit) = self.reserved.take() {
                    p.reservation = Some(Arc::new(permit));
                    self.shrink();
                }
                return Ok(p);
            }
            self.reserve_for_partial().await?;
            if !self.fill_within_timeout().await? {
                return Err(ProtoError::Closed);
            }
        }
    }

    /// Reserve budget for the packet at the head of the buffer once it is known to be
    /// larger than the allowance. A packet of several chunks reserves for the largest
    /// packet allowed, twice (the chunks and the joined payload).
    async fn reserve_for_partial(&mut self) -> Result<(), ProtoError> {
        let (Some(budget), None) = (&self.budget, &self.reserved) else {
            return Ok(());
        };
        let Some((len, _)) = peek_header(&self.rbuf) else {
            return Ok(());
        };
        let need = if len < MAX_CHUNK {
            HEADER + len
        } else {
            2 * (self.max_packet + HEADER * (self.max_packet / MAX_CHUNK + 1))
        };
        if need <= ALLOWANCE {
            return Ok(());
        }
        self.reserved = Some(budget.reserve(need).await?);
        Ok(())
    }

    /// Give a buffer that grew for a large packet back to the allocator.
    fn shrink(&mut self) {
        if self.rbuf.capacity() > 2 * ALLOWANCE {
            let mut fresh = BytesMut::with_capacity(INITIAL_BUFFER.max(self.rbuf.len()));
            fresh.extend_from_slice(&self.rbuf);
            self.rbuf = fresh;
        }
    }

    /// `fill`, bounded by the read timeout when part of a packet is already buffered.
    async fn fill_within_timeout(&mut self) -> Result<bool, ProtoError> {
        match self.read_timeout {
            Some(t) if !self.rbuf.is_empty() => tokio::time::timeout(t, self.fill())
                .await
                .map_err(|_| ProtoError::ReadTimeout)?,
            _ => self.fill().await,
        }
    }

    /// Read whatever bytes arrive next (at least one, or `None` at the end of the
    /// stream), bounded by the read timeout; used to stream LOAD DATA file contents
    /// through without buffering whole packets.
    pub async fn read_some(&mut self) -> Result<Option<Bytes>, ProtoError> {
        if self.rbuf.is_empty() {
            let filled = match self.read_timeout {
                Some(t) => tokio::time::timeout(t, self.fill())
                    .await
                    .map_err(|_| ProtoError::ReadTimeout)?,
                None => self.fill().await,
            }?;
            if !filled {
                return Ok(None);
            }
        }
        let n = self.rbuf.len();
        Ok(Some(self.rbuf.split_to(n).freeze()))
    }

    /// Put back bytes taken by [`read_some`](Self::read_some) that belong to what
    /// comes after the streamed data.
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut fresh = BytesMut::with_capacity(bytes.len() + self.rbuf.len());
        fresh.extend_from_slice(bytes);
        fresh.extend_from_slice(&self.rbuf);
        self.rbuf = fresh;
    }

    /// Queue a payload as a packet with sequence id `seq`; returns the next sequence id.
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        encode_packet(&mut self.wbuf, seq, payload)
    }

    /// Write out everything queued.
    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Write framed bytes straight through, bypassing the queue.
    pub async fn write_raw(&mut self, raw: &[u8]) -> Result<(), ProtoError> {
        if !self.wbuf.is_empty() {
            self.wbuf.extend_from_slice(raw);
            return self.flush().await;
        }
        self.stream.write_all(raw).await?;
        Ok(())
    }

    /// Send one packet now.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<u8, ProtoError> {
        let next = self.queue(seq, payload);
        self.flush().await?;
        Ok(next)
    }
}

/// Little-endian reader over a payload that never panics: every read is checked.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// A length-encoded integer. `None` on a truncated value or the 0xFF marker.
    pub fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            b @ 0..=0xFA => Some(b as u64),
            0xFC => self.u16().map(u64::from),
            0xFD => self
                .take(3)
                .map(|b| b[0] as u64 | (b[1] as u64) << 8 | (b[2] as u64) << 16),
            0xFE => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Some(u64::from_le_bytes(a))
            }
            _ => None,
        }
    }

    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.take(n)
    }

    /// Bytes up to a NUL (consumed, not returned); `None` without a NUL.
    pub fn null_str(&mut self) -> Option<&'a [u8]> {
        let pos = self.buf.iter().position(|&b| b == 0)?;
        let s = &self.buf[..pos];
        self.buf = &self.buf[pos + 1..];
        Some(s)
    }

    /// Bytes up to a NUL, or to the end when there is none.
    pub fn null_str_or_rest(&mut self) -> &'a [u8] {
        match self.null_str() {
            Some(s) => s,
            None => {
                let s = self.buf;
                self.buf = &[];
                s
            }
        }
    }
}

/// Append a length-encoded integer.
pub fn put_lenenc(out: &mut impl BufMut, v: u64) {
    match v {
        0..=0xFA => out.put_u8(v as u8),
        0xFB..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(v as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_uint_le(v, 3);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn encode_splits_at_max_chunk() {
        let payload = vec![7u8; MAX_CHUNK + 10];
        let mut out = BytesMut::new();
        let next = encode_packet(&mut out, 3, &payload);
        assert_eq!(next, 5);
        assert_eq!(out.len(), payload.len() + 2 * HEADER);
        assert_eq!(peek_header(&out), Some((MAX_CHUNK, 3)));
        assert_eq!(peek_header(&out[HEADER + MAX_CHUNK..]), Some((10, 4)));
    }

    #[test]
    fn exact_multiple_ends_with_empty_chunk() {
        let payload = vec![1u8; MAX_CHUNK];
        let mut out = BytesMut::new();
        assert_eq!(encode_packet(&mut out, 0, &payload), 2);
        assert_eq!(peek_header(&out[HEADER + MAX_CHUNK..]), Some((0, 1)));
        let total = logical_len(&out, usize::MAX).unwrap().unwrap();
        let p = take_packet(&mut out, total).unwrap();
        assert_eq!(p.payload.len(), MAX_CHUNK);
        assert_eq!(p.last_seq, 1);
    }

    #[test]
    fn oversize_is_refused_before_buffering() {
        let buf = [0xFF, 0xFF, 0xFF, 0x00];
        assert!(matches!(
            logical_len(&buf, 1024),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[test]
    fn continuation_sequence_is_checked() {
        let mut out = BytesMut::new();
        encode_packet(&mut out, 0, &vec![0u8; MAX_CHUNK + 1]);
        out[HEADER + MAX_CHUNK + 3] = 9; // corrupt second chunk's seq
        let total = logical_len(&out, usize::MAX).unwrap().unwrap();
        assert!(matches!(
            take_packet(&mut out, total),
            Err(ProtoError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn reader_never_panics_on_truncation() {
        let mut r = Reader::new(&[0xFE, 1, 2]);
        assert_eq!(r.lenenc(), None);
        let mut r = Reader::new(&[0xFC, 0x10, 0x00, 1]);
        assert_eq!(r.lenenc_bytes(), None);
        let mut r = Reader::new(b"abc");
        assert_eq!(r.null_str(), None);
        assert_eq!(r.null_str_or_rest(), b"abc");
    }

    #[test]
    fn stream_tracker_finds_the_terminator_across_reads() {
        let mut wire = BytesMut::new();
        encode_packet(&mut wire, 2, &vec![9u8; 70_000]);
        encode_packet(&mut wire, 4, b"tail");
        encode_packet(&mut wire, 5, b"");
        let end = wire.len();
        wire.extend_from_slice(b"next command");
        for step in [1, 3, 4, 7, 4096, wire.len()] {
            let mut t = StreamTracker::default();
            let mut consumed = 0;
            let mut done = false;
            for piece in wire.chunks(step) {
                let (n, d) = t.advance(piece);
                consumed += n;
                if d {
                    done = true;
                    break;
                }
            }
            assert!(done, "step {step}");
            assert_eq!(consumed, end, "step {step}");
        }
    }

    /// Two connections whose large packets do not fit the budget together: the second
    /// waits for the first packet to be dropped, and gives up after the budget's wait.
    #[tokio::test]
    async fn large_packets_share_the_budget() {
        let budget = PacketBudget::new(1 << 20, Duration::from_millis(300));
        let packet = |n: usize| {
            let mut wire = BytesMut::new();
            encode_packet(&mut wire, 0, &vec![b'x'; n]);
            wire
        };
        let (mut a_client, a_server) = tokio::io::duplex(4 << 20);
        let (mut b_client, b_server) = tokio::io::duplex(4 << 20);
        let mut a = PacketConn::new(a_server, 2 << 20);
        let mut b = PacketConn::new(b_server, 2 << 20);
        a.set_budget(budget.clone());
        b.set_budget(budget.clone());
        a_client.write_all(&packet(700 << 10)).await.unwrap();
        b_client.write_all(&packet(700 << 10)).await.unwrap();
        let first = a.read_packet().await.unwrap();
        assert!(first.reservation.is_some());
        assert!(budget.available_kib() < 400);
        // B cannot get 700 KiB while A's packet lives.
        assert!(matches!(
            b.read_packet().await,
            Err(ProtoError::OutOfMemory { .. })
        ));
        drop(first);
        assert_eq!(budget.available_kib(), 1024);
        let second = b.read_packet().await.unwrap();
        assert_eq!(second.payload.len(), 700 << 10);
        // Small packets need no share at all.
        drop(second);
        a_client.write_all(&packet(1000)).await.unwrap();
        assert!(a.read_packet().await.unwrap().reservation.is_none());
        // A packet larger than the whole budget is refused outright.
        let mut c = PacketConn::new(tokio::io::duplex(64).1, 4 << 20);
        c.set_budget(budget.clone());
        c.rbuf.extend_from_slice(&[0, 0, 0x18, 0]); // declares 1.5 MiB
        assert!(matches!(
            c.reserve_for_partial().await,
            Err(ProtoError::OutOfMemory { .. })
        ));
    }

    #[tokio::test]
    async fn a_stalled_packet_times_out() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut conn = PacketConn::new(server, 1 << 20);
        conn.set_read_timeout(Duration::from_millis(100));
        client.write_all(&[100, 0, 0, 0, 1, 2, 3]).await.unwrap();
        assert!(matches!(
            conn.read_packet().await,
            Err(ProtoError::ReadTimeout)
        ));
        // Waiting for the *next* packet is not bounded by it (that is wait_timeout's
        // business, on the server).
        let (_client, server) = tokio::io::duplex(64);
        let mut idle = PacketConn::new(server, 1 << 20);
        idle.set_read_timeout(Duration::from_millis(50));
        let waited = tokio::time::timeout(Duration::from_millis(300), idle.read_packet()).await;
        assert!(waited.is_err(), "an idle connection must keep waiting");
    }

    #[test]
    fn lenenc_round_trip() {
        for v in [
            0u64,
            250,
            251,
            65535,
            65536,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_lenenc(&mut b, v);
            assert_eq!(Reader::new(&b).lenenc(), Some(v));
        }
    }
}
