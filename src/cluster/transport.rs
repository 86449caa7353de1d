//! Peer transport: authenticated, framed TCP connections between cluster nodes.
//!
//! Everything a peer sends is hostile until it has proven that it knows the shared
//! `[cluster] secret`. [`connect`] and [`accept`] run the handshake below and return a
//! [`PeerConn`] only once it has succeeded, so no frame from an unauthenticated peer can
//! ever reach the caller: there is no value to read it from. The transport moves opaque
//! frames; what they mean (Raft RPCs, snapshots) is the caller's business.
//!
//! # Frames
//!
//! Every byte on the connection, handshake included, travels in frames:
//!
//! ```text
//! +----------------+---------------------+
//! | len: u32 BE    | payload: len bytes  |
//! +----------------+---------------------+
//! ```
//!
//! `len` is checked against a cap *before* anything is allocated for the payload: during
//! the handshake the cap is [`HANDSHAKE_MAX`] (4 KiB), afterwards [`MAX_FRAME`] (64 MiB)
//! unless changed with [`PeerConn::set_max_frame`]. A frame over the cap is
//! [`TransportError::FrameTooLarge`] and the connection is dropped. Reads are two-phase
//! and cancel-safe ([`decode_frame`] takes bytes out of the connection's buffer only once
//! a whole frame is there), so a `read_frame` dropped inside `select!` loses nothing.
//!
//! # Handshake
//!
//! Five kinds of message, each the payload of one frame, all with the same prefix:
//!
//! ```text
//! message   = magic "WSCL" (4) | version: u8 (= 1) | kind: u8 | body
//!
//! kind 1  Hello     client -> server   nonce_c: [u8; 32] | identity
//! kind 2  Challenge server -> client   nonce_s: [u8; 32] | identity | mac_s: [u8; 32]
//! kind 3  Proof     client -> server   mac_c: [u8; 32]
//! kind 4  Welcome   server -> client   (empty)
//! kind 5  Reject    either way         reason: u8 (1 auth failed, 2 unsupported
//!                                      version, 3 malformed, 4 unexpected message)
//!
//! identity  = node_id: str (1..=64 bytes)
//!           | number: u16 BE (0..=1023)
//!           | incarnation: u64 BE
//!           | priority: u8 (0..=100)
//!           | cluster_addr: str | proxy_addr: str | api_addr: str   (0..=512 bytes each)
//! str       = len: u16 BE | UTF-8 bytes
//! ```
//!
//! The prefix (magic, version, kind) is the one part that never changes between
//! versions, so a node can always tell a peer of another version apart from garbage and
//! answer it with a `Reject` it can read. A message is decoded strictly: wrong magic,
//! unknown kind, a field over its bound, invalid UTF-8, a truncated field or trailing
//! bytes are all [`TransportError::BadHandshake`]. So the encoding is canonical: a message
//! that decodes re-encodes to the same bytes, which the MACs rely on.
//!
//! The MACs are HMAC-SHA256 keyed with the secret over the whole transcript:
//!
//! ```text
//! mac_s = HMAC(secret, "wolfscale-peer-v1 server proof\0" | 1 | nonce_c | nonce_s
//!                      | identity_c | identity_s)
//! mac_c = HMAC(secret, "wolfscale-peer-v1 client proof\0" | 1 | nonce_c | nonce_s
//!                      | identity_c | identity_s)
//! ```
//!
//! where the identities are their encodings above. Each side's nonce is 32 fresh random
//! bytes, so a `Proof` recorded from one session is worthless in the next (the server's
//! nonce differs); the direction label means a `mac_s` reflected back as a `Proof` fails;
//! and both identities are bound in, so a relay cannot swap who claims to be whom. The
//! server proves itself first and the client only sends its `Proof` after checking
//! `mac_s`; MACs are compared in constant time (`verify_slice`). A side whose check fails
//! sends `Reject(auth failed)` so that both ends report [`TransportError::AuthFailed`].
//! An empty secret is allowed and means "no authentication configured": the handshake
//! still runs (and still exchanges identities), but anyone can compute the MACs.
//!
//! The whole handshake, TCP connect included for [`connect`], runs under one deadline;
//! a peer that misses it is dropped with [`TransportError::Timeout`].
//!
//! # What this does not protect
//!
//! The handshake authenticates the peer when the connection opens. Frames after it are
//! neither encrypted nor MACed: someone able to inject packets into an established TCP
//! connection (on the path between two nodes) could still forge frames. Cluster traffic
//! belongs on a network where that is not possible, or under TLS.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Default cap on the payload of one frame after the handshake: 64 MiB.
pub const MAX_FRAME: usize = 64 << 20;
/// Cap on the payload of one handshake frame: 4 KiB (the largest message is ~1.7 KiB).
pub const HANDSHAKE_MAX: usize = 4096;
/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 4;
/// Handshake protocol version spoken by this build.
pub const VERSION: u8 = 1;
/// First bytes of every handshake message.
pub const MAGIC: [u8; 4] = *b"WSCL";
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// Longest `node_id`, in bytes.
pub const MAX_NODE_ID: usize = 64;
/// Largest node number (a 10-bit Snowflake node id).
pub const MAX_NUMBER: u16 = 1023;
/// Longest address in an identity, in bytes.
pub const MAX_ADDR: usize = 512;

/// Payloads up to this size are copied into the write queue; larger ones are written
/// straight from the caller's slice, vectored behind their header.
const COPY_LIMIT: usize = 16 * 1024;
/// Initial size of a connection's read buffer.
const INITIAL_BUFFER: usize = 8 * 1024;

const SERVER_LABEL: &[u8; 31] = b"wolfscale-peer-v1 server proof\0";
const CLIENT_LABEL: &[u8; 31] = b"wolfscale-peer-v1 client proof\0";

/// Errors of the peer transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by peer")]
    Closed,
    #[error("frame of {len} bytes exceeds the cap of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("bad handshake: {0}")]
    BadHandshake(String),
    #[error("peer speaks peer protocol version {got}, this node speaks {ours}")]
    UnsupportedVersion { got: u8, ours: u8 },
    #[error("authentication failed: the peer and this node do not share the cluster secret")]
    AuthFailed,
    #[error("handshake did not finish within {0:?}")]
    Timeout(Duration),
    #[error("invalid local identity: {0}")]
    InvalidIdentity(String),
    #[error("an earlier write stopped in the middle of a frame; the connection is unusable")]
    WriteInterrupted,
}

impl TransportError {
    /// True when the peer failed to prove the secret (or we failed to prove ours): the
    /// secrets differ, or someone is guessing. Worth a louder log line than a timeout.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, TransportError::AuthFailed)
    }

    /// True when the peer is simply gone (closed, reset), as opposed to misbehaving.
    pub fn is_disconnect(&self) -> bool {
        match self {
            TransportError::Closed => true,
            TransportError::Io(e) => matches!(
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

fn bad(reason: impl Into<String>) -> TransportError {
    TransportError::BadHandshake(reason.into())
}

// ---------------------------------------------------------------------------------------
// Frames

/// Take the frame at the start of `buf` if it is complete; `Ok(None)` if more bytes are
/// needed. Fails as soon as the header declares more than `max` bytes, before anything
/// is allocated for them. Nothing is consumed unless a whole frame is returned.
pub fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, TransportError> {
    let Some(len) = frame_len(buf, max)? else {
        return Ok(None);
    };
    if buf.len() - FRAME_HEADER < len {
        return Ok(None);
    }
    buf.advance(FRAME_HEADER);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The payload length declared by the header at the start of `buf`, checked against
/// `max`; `None` until four bytes are there.
fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, TransportError> {
    let Some(header) = buf.get(..FRAME_HEADER) else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    // A u32 that does not fit in usize (16-bit targets) is over any cap anyway.
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > max {
        return Err(TransportError::FrameTooLarge { len, max });
    }
    Ok(Some(len))
}

/// The header of a frame of `len` bytes; fails when `len` is over `max`.
fn frame_header(len: usize, max: usize) -> Result<[u8; FRAME_HEADER], TransportError> {
    match u32::try_from(len) {
        Ok(n) if len <= max => Ok(n.to_be_bytes()),
        _ => Err(TransportError::FrameTooLarge { len, max }),
    }
}

/// Append `payload` as one frame to `out`.
pub fn encode_frame(out: &mut BytesMut, payload: &[u8], max: usize) -> Result<(), TransportError> {
    let header = frame_header(payload.len(), max)?;
    out.reserve(FRAME_HEADER + payload.len());
    out.put_slice(&header);
    out.put_slice(payload);
    Ok(())
}

/// The reading half of a peer connection: the socket plus its owned read buffer.
pub struct PeerReader {
    half: OwnedReadHalf,
    rbuf: BytesMut,
    max_frame: usize,
}

impl PeerReader {
    fn new(half: OwnedReadHalf, max_frame: usize) -> Self {
        PeerReader {
            half,
            rbuf: BytesMut::with_capacity(INITIAL_BUFFER),
            max_frame,
        }
    }

    /// Change the largest frame accepted.
    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }

    /// Read one whole frame. Cancel-safe: a partly received frame stays buffered for
    /// the next call. [`TransportError::Closed`] when the peer closes between frames.
    pub async fn read_frame(&mut self) -> Result<Bytes, TransportError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.rbuf, self.max_frame)? {
                return Ok(frame);
            }
            // The header has been checked against the cap, so reserving for the whole
            // frame at once is bounded and saves regrowing a large buffer step by step.
            let want = match frame_len(&self.rbuf, self.max_frame)? {
                Some(len) => FRAME_HEADER + len - self.rbuf.len(),
                None => INITIAL_BUFFER,
            };
            self.rbuf.reserve(want.max(1024));
            if self.half.read_buf(&mut self.rbuf).await? == 0 {
                if self.rbuf.is_empty() {
                    return Err(TransportError::Closed);
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "peer closed with {} bytes of a frame unread",
                        self.rbuf.len()
                    ),
                )
                .into());
            }
        }
    }
}

/// The writing half of a peer connection. Frames are queued and written vectored.
pub struct PeerWriter {
    half: OwnedWriteHalf,
    queued: BytesMut,
    max_frame: usize,
    /// Set while bytes of a frame may be half on the wire; a write future dropped then
    /// leaves the stream out of step, and every later write refuses.
    in_flight: bool,
}

impl PeerWriter {
    fn new(half: OwnedWriteHalf, max_frame: usize) -> Self {
        PeerWriter {
            half,
            queued: BytesMut::with_capacity(INITIAL_BUFFER),
            max_frame,
            in_flight: false,
        }
    }

    /// Change the largest frame sent (it should match what the peer accepts).
    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }

    /// Add a frame to the queue without writing anything; [`flush`](Self::flush) sends
    /// every queued frame in one write.
    pub fn queue_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        encode_frame(&mut self.queued, payload, self.max_frame)
    }

    /// Write out every queued frame.
    ///
    /// Not cancel-safe: a flush dropped halfway leaves part of a frame on the wire, and
    /// the writer then fails every later call with [`TransportError::WriteInterrupted`].
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.write_vectored_all(&[]).await
    }

    /// Queue one frame and flush. Large payloads are not copied: they are written from
    /// `payload` itself, vectored behind whatever was queued and their header. Not
    /// cancel-safe, like [`flush`](Self::flush).
    pub async fn write_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        if payload.len() <= COPY_LIMIT {
            self.queue_frame(payload)?;
            return self.flush().await;
        }
        let header = frame_header(payload.len(), self.max_frame)?;
        self.queued.put_slice(&header);
        self.write_vectored_all(payload).await
    }

    /// Write the queue followed by `tail`, then clear the queue.
    async fn write_vectored_all(&mut self, tail: &[u8]) -> Result<(), TransportError> {
        if self.in_flight {
            return Err(TransportError::WriteInterrupted);
        }
        self.in_flight = true;
        let mut slices = [IoSlice::new(&self.queued), IoSlice::new(tail)];
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            let n = self.half.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        self.half.flush().await?;
        self.queued.clear();
        self.in_flight = false;
        Ok(())
    }

    /// Flush, then close the sending direction (the peer reads [`TransportError::Closed`]).
    pub async fn shutdown(&mut self) -> Result<(), TransportError> {
        self.flush().await?;
        self.half.shutdown().await?;
        Ok(())
    }
}

/// An authenticated connection to a peer. Only [`connect`] and [`accept`] make one, and
/// only after the handshake has succeeded.
pub struct PeerConn {
    reader: PeerReader,
    writer: PeerWriter,
    peer_addr: SocketAddr,
}

impl PeerConn {
    /// Read one frame; cancel-safe (see [`PeerReader::read_frame`]).
    pub async fn read_frame(&mut self) -> Result<Bytes, TransportError> {
        self.reader.read_frame().await
    }

    /// Send one frame now (see [`PeerWriter::write_frame`]).
    pub async fn write_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        self.writer.write_frame(payload).await
    }

    /// Queue a frame for the next [`flush`](Self::flush).
    pub fn queue_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        self.writer.queue_frame(payload)
    }

    /// Write every queued frame.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.writer.flush().await
    }

    /// Change the largest frame accepted and sent (default [`MAX_FRAME`]).
    pub fn set_max_frame(&mut self, max: usize) {
        self.reader.set_max_frame(max);
        self.writer.set_max_frame(max);
    }

    /// Separate halves, so one task can read while another writes. Bytes already
    /// buffered stay with the reader.
    pub fn into_split(self) -> (PeerReader, PeerWriter) {
        (self.reader, self.writer)
    }

    /// The peer's socket address (for an accepted connection, its ephemeral port, not its
    /// advertised `cluster_addr`).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
}

// ---------------------------------------------------------------------------------------
// Handshake messages

/// Who a node is, as told to each peer in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Stable name of the node: 1..=64 bytes of UTF-8.
    pub node_id: String,
    /// The node's number, 0..=1023 (its Snowflake node id). The caller checks that no two
    /// nodes share one.
    pub number: u16,
    /// Chosen at random when the node's data directory is created, and kept across
    /// restarts: a node whose data directory was replaced has another one.
    pub incarnation: u64,
    /// `[node] priority`: how much it is preferred as leader (0..=100).
    pub priority: u8,
    /// Where the node takes cluster connections (its advertise address). At most
    /// [`MAX_ADDR`] bytes, like the other addresses; an empty address means "none".
    pub cluster_addr: String,
    /// Where the node's MySQL front end listens.
    pub proxy_addr: String,
    /// Where the node's HTTP API listens.
    pub api_addr: String,
}

impl PeerIdentity {
    /// Check the bounds the wire format imposes; the reason names the field and value.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.node_id.len();
        if n == 0 || n > MAX_NODE_ID {
            return Err(format!("node_id is {n} bytes, must be 1..={MAX_NODE_ID}"));
        }
        if self.number > MAX_NUMBER {
            return Err(format!("number {} is over {MAX_NUMBER}", self.number));
        }
        for (name, addr) in self.addrs() {
            if addr.len() > MAX_ADDR {
                return Err(format!("{name} is {} bytes, limit {MAX_ADDR}", addr.len()));
            }
        }
        Ok(())
    }

    fn addrs(&self) -> [(&'static str, &str); 3] {
        [
            ("cluster_addr", &self.cluster_addr),
            ("proxy_addr", &self.proxy_addr),
            ("api_addr", &self.api_addr),
        ]
    }

    /// Append the identity's encoding. The caller has validated it (every constructor of
    /// a message on the sending side does), so the lengths fit their prefixes.
    pub fn encode(&self, out: &mut BytesMut) {
        put_str(out, &self.node_id);
        out.put_u16(self.number);
        out.put_u64(self.incarnation);
        out.put_u8(self.priority);
        for (_, addr) in self.addrs() {
            put_str(out, addr);
        }
    }

    /// Decode an identity from the front of `r`, checking every bound.
    fn decode_from(r: &mut Reader<'_>) -> Result<PeerIdentity, TransportError> {
        let node_id = r.str("node_id", MAX_NODE_ID)?;
        if node_id.is_empty() {
            return Err(bad("node_id is empty"));
        }
        let number = r.u16("number")?;
        if number > MAX_NUMBER {
            return Err(bad(format!("node number {number} is over {MAX_NUMBER}")));
        }
        let incarnation = r.u64("incarnation")?;
        let priority = r.u8("priority")?;
        if priority > 100 {
            return Err(bad(format!("priority {priority} is over 100")));
        }
        Ok(PeerIdentity {
            node_id,
            number,
            incarnation,
            priority,
            cluster_addr: r.str("cluster_addr", MAX_ADDR)?,
            proxy_addr: r.str("proxy_addr", MAX_ADDR)?,
            api_addr: r.str("api_addr", MAX_ADDR)?,
        })
    }

    /// Decode exactly one identity (no trailing bytes); for tests and fuzzing.
    pub fn decode(buf: &[u8]) -> Result<PeerIdentity, TransportError> {
        let mut r = Reader(buf);
        let id = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(id)
    }

    fn encoded(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(64);
        self.encode(&mut out);
        out
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Bounds are checked by `validate` before anything is encoded; saturate rather than
    // wrap should that ever be skipped (the peer then rejects the message).
    out.put_u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
    out.put_slice(s.as_bytes());
}

/// Why a handshake was refused, as sent in a `Reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    AuthFailed = 1,
    UnsupportedVersion = 2,
    Malformed = 3,
    Unexpected = 4,
}

impl RejectReason {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => RejectReason::AuthFailed,
            2 => RejectReason::UnsupportedVersion,
            3 => RejectReason::Malformed,
            4 => RejectReason::Unexpected,
            _ => return None,
        })
    }

    /// The reason a side answers a failure with.
    fn for_error(e: &TransportError) -> Option<Self> {
        match e {
            TransportError::AuthFailed => Some(RejectReason::AuthFailed),
            TransportError::UnsupportedVersion { .. } => Some(RejectReason::UnsupportedVersion),
            TransportError::BadHandshake(_) | TransportError::FrameTooLarge { .. } => {
                Some(RejectReason::Malformed)
            }
            _ => None,
        }
    }

    /// The error a side reports when its peer rejected it.
    fn into_error(self) -> TransportError {
        match self {
            RejectReason::AuthFailed => TransportError::AuthFailed,
            RejectReason::UnsupportedVersion => bad(format!(
                "peer does not speak peer protocol version {VERSION}"
            )),
            RejectReason::Malformed => bad("peer found our handshake message malformed"),
            RejectReason::Unexpected => bad("peer did not expect our handshake message"),
        }
    }
}

/// One handshake message (the payload of one frame); see the module doc for the layout.
/// Public so the fuzz target and tests can reach the decoder; callers use [`connect`]
/// and [`accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeMessage {
    Hello {
        nonce: [u8; NONCE_LEN],
        identity: PeerIdentity,
    },
    Challenge {
        nonce: [u8; NONCE_LEN],
        identity: PeerIdentity,
        mac: [u8; MAC_LEN],
    },
    Proof {
        mac: [u8; MAC_LEN],
    },
    Welcome,
    Reject(RejectReason),
}

impl HandshakeMessage {
    const HELLO: u8 = 1;
    const CHALLENGE: u8 = 2;
    const PROOF: u8 = 3;
    const WELCOME: u8 = 4;
    const REJECT: u8 = 5;

    fn kind(&self) -> u8 {
        match self {
            HandshakeMessage::Hello { .. } => Self::HELLO,
            HandshakeMessage::Challenge { .. } => Self::CHALLENGE,
            HandshakeMessage::Proof { .. } => Self::PROOF,
            HandshakeMessage::Welcome => Self::WELCOME,
            HandshakeMessage::Reject(_) => Self::REJECT,
        }
    }

    /// Name for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            HandshakeMessage::Hello { .. } => "Hello",
            HandshakeMessage::Challenge { .. } => "Challenge",
            HandshakeMessage::Proof { .. } => "Proof",
            HandshakeMessage::Welcome => "Welcome",
            HandshakeMessage::Reject(_) => "Reject",
        }
    }

    /// Append the message's encoding (without the frame header). Identities must have
    /// been validated.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u8(self.kind());
        match self {
            HandshakeMessage::Hello { nonce, identity } => {
                out.put_slice(nonce);
                identity.encode(out);
            }
            HandshakeMessage::Challenge {
                nonce,
                identity,
                mac,
            } => {
                out.put_slice(nonce);
                identity.encode(out);
                out.put_slice(mac);
            }
            HandshakeMessage::Proof { mac } => out.put_slice(mac),
            HandshakeMessage::Welcome => {}
            HandshakeMessage::Reject(reason) => out.put_u8(*reason as u8),
        }
    }

    /// Decode one message, strictly (see the module doc). Never panics.
    pub fn decode(buf: &[u8]) -> Result<HandshakeMessage, TransportError> {
        let mut r = Reader(buf);
        if r.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(bad("not a WolfScale peer (bad magic)"));
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(TransportError::UnsupportedVersion {
                got: version,
                ours: VERSION,
            });
        }
        let msg = match r.u8("kind")? {
            Self::HELLO => HandshakeMessage::Hello {
                nonce: r.array("nonce")?,
                identity: PeerIdentity::decode_from(&mut r)?,
            },
            Self::CHALLENGE => HandshakeMessage::Challenge {
                nonce: r.array("nonce")?,
                identity: PeerIdentity::decode_from(&mut r)?,
                mac: r.array("mac")?,
            },
            Self::PROOF => HandshakeMessage::Proof {
                mac: r.array("mac")?,
            },
            Self::WELCOME => HandshakeMessage::Welcome,
            Self::REJECT => {
                let code = r.u8("reason")?;
                HandshakeMessage::Reject(
                    RejectReason::from_code(code)
                        .ok_or_else(|| bad(format!("unknown reject reason {code}")))?,
                )
            }
            kind => return Err(bad(format!("unknown message kind {kind}"))),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Big-endian reader over a handshake message; every read is checked and names the
/// field it was reading when it fails.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], TransportError> {
        if self.0.len() < n {
            return Err(bad(format!(
                "truncated {field}: needs {n} bytes, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], TransportError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn u8(&mut self, field: &str) -> Result<u8, TransportError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &str) -> Result<u16, TransportError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64, TransportError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn str(&mut self, field: &str, max: usize) -> Result<String, TransportError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(bad(format!("{field} is {len} bytes, limit {max}")));
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| bad(format!("{field} is not UTF-8")))
    }

    fn finish(&self) -> Result<(), TransportError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad(format!(
                "{} bytes of trailing garbage after the message",
                self.0.len()
            )))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Handshake

/// What both MACs of one session cover; only the label differs between them.
struct Transcript<'a> {
    nonce_c: &'a [u8; NONCE_LEN],
    nonce_s: &'a [u8; NONCE_LEN],
    client: &'a PeerIdentity,
    server: &'a PeerIdentity,
}

impl Transcript<'_> {
    fn hmac(&self, secret: &[u8], label: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length (an empty one included), so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of any length");
        mac.update(label);
        mac.update(&[VERSION]);
        mac.update(self.nonce_c);
        mac.update(self.nonce_s);
        mac.update(&self.client.encoded());
        mac.update(&self.server.encoded());
        mac
    }

    fn mac(&self, secret: &[u8], label: &[u8]) -> [u8; MAC_LEN] {
        self.hmac(secret, label).finalize().into_bytes().into()
    }

    /// Constant-time check of a MAC the peer sent.
    fn verify(&self, secret: &[u8], label: &[u8], mac: &[u8]) -> Result<(), TransportError> {
        self.hmac(secret, label)
            .verify_slice(mac)
            .map_err(|_| TransportError::AuthFailed)
    }
}

fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut n);
    n
}

/// A connection during the handshake: frames capped at [`HANDSHAKE_MAX`], carrying only
/// [`HandshakeMessage`]s. It becomes a [`PeerConn`] only through [`Handshaking::finish`].
struct Handshaking {
    reader: PeerReader,
    writer: PeerWriter,
    peer_addr: SocketAddr,
}

impl Handshaking {
    fn new(stream: TcpStream) -> Result<Self, TransportError> {
        stream.set_nodelay(true)?;
        let peer_addr = stream.peer_addr()?;
        let (r, w) = stream.into_split();
        Ok(Handshaking {
            reader: PeerReader::new(r, HANDSHAKE_MAX),
            writer: PeerWriter::new(w, HANDSHAKE_MAX),
            peer_addr,
        })
    }

    async fn send(&mut self, msg: &HandshakeMessage) -> Result<(), TransportError> {
        let mut payload = BytesMut::with_capacity(256);
        msg.encode(&mut payload);
        self.writer.write_frame(&payload).await
    }

    async fn recv(&mut self) -> Result<HandshakeMessage, TransportError> {
        let frame = self.reader.read_frame().await?;
        HandshakeMessage::decode(&frame)
    }

    /// Receive the next message; a `Reject` from the peer becomes its error.
    async fn recv_expecting(&mut self) -> Result<HandshakeMessage, TransportError> {
        match self.recv().await? {
            HandshakeMessage::Reject(reason) => Err(reason.into_error()),
            msg => Ok(msg),
        }
    }

    /// Tell the peer why we are giving up, best effort, and hand the error back.
    async fn fail(&mut self, e: TransportError) -> TransportError {
        if let Some(reason) = RejectReason::for_error(&e) {
            let _ = self.send(&HandshakeMessage::Reject(reason)).await;
        }
        e
    }

    fn finish(self) -> PeerConn {
        let mut conn = PeerConn {
            reader: self.reader,
            writer: self.writer,
            peer_addr: self.peer_addr,
        };
        conn.set_max_frame(MAX_FRAME);
        conn
    }

    /// The client's side: Hello, check the Challenge, Proof, wait for Welcome.
    async fn client(
        &mut self,
        secret: &[u8],
        me: &PeerIdentity,
    ) -> Result<PeerIdentity, TransportError> {
        let nonce_c = nonce();
        self.send(&HandshakeMessage::Hello {
            nonce: nonce_c,
            identity: me.clone(),
        })
        .await?;
        let (nonce_s, server, mac_s) = match self.recv_expecting().await {
            Ok(HandshakeMessage::Challenge {
                nonce,
                identity,
                mac,
            }) => (nonce, identity, mac),
            Ok(other) => {
                let e = bad(format!("expected Challenge, got {}", other.name()));
                return Err(self.unexpected(e).await);
            }
            Err(e) => return Err(self.fail(e).await),
        };
        let transcript = Transcript {
            nonce_c: &nonce_c,
            nonce_s: &nonce_s,
            client: me,
            server: &server,
        };
        if let Err(e) = transcript.verify(secret, SERVER_LABEL, &mac_s) {
            return Err(self.fail(e).await);
        }
        let mac_c = transcript.mac(secret, CLIENT_LABEL);
        self.send(&HandshakeMessage::Proof { mac: mac_c }).await?;
        match self.recv_expecting().await {
            Ok(HandshakeMessage::Welcome) => Ok(server),
            Ok(other) => {
                let e = bad(format!("expected Welcome, got {}", other.name()));
                Err(self.unexpected(e).await)
            }
            Err(e) => Err(self.fail(e).await),
        }
    }

    /// The server's side: Hello, Challenge, check the Proof, Welcome.
    async fn server(
        &mut self,
        secret: &[u8],
        me: &PeerIdentity,
    ) -> Result<PeerIdentity, TransportError> {
        let (nonce_c, client) = match self.recv_expecting().await {
            Ok(HandshakeMessage::Hello { nonce, identity }) => (nonce, identity),
            Ok(other) => {
                let e = bad(format!("expected Hello, got {}", other.name()));
                return Err(self.unexpected(e).await);
            }
            Err(e) => return Err(self.fail(e).await),
        };
        let nonce_s = nonce();
        let transcript = Transcript {
            nonce_c: &nonce_c,
            nonce_s: &nonce_s,
            client: &client,
            server: me,
        };
        self.send(&HandshakeMessage::Challenge {
            nonce: nonce_s,
            identity: me.clone(),
            mac: transcript.mac(secret, SERVER_LABEL),
        })
        .await?;
        let mac_c = match self.recv_expecting().await {
            Ok(HandshakeMessage::Proof { mac }) => mac,
            Ok(other) => {
                let e = bad(format!("expected Proof, got {}", other.name()));
                return Err(self.unexpected(e).await);
            }
            Err(e) => return Err(self.fail(e).await),
        };
        if let Err(e) = transcript.verify(secret, CLIENT_LABEL, &mac_c) {
            return Err(self.fail(e).await);
        }
        self.send(&HandshakeMessage::Welcome).await?;
        Ok(client)
    }

    async fn unexpected(&mut self, e: TransportError) -> TransportError {
        let _ = self
            .send(&HandshakeMessage::Reject(RejectReason::Unexpected))
            .await;
        e
    }
}

/// Connect to a peer's cluster address and run the client side of the handshake.
///
/// `secret` is the shared `[cluster] secret` (empty: no authentication configured).
/// `deadline` bounds everything, the TCP connect included. Returns the connection and
/// the identity the peer proved, or the reason it failed (the caller logs it).
pub async fn connect(
    addr: &str,
    source: Option<std::net::IpAddr>,
    secret: &[u8],
    me: &PeerIdentity,
    deadline: Duration,
) -> Result<(PeerConn, PeerIdentity), TransportError> {
    me.validate().map_err(TransportError::InvalidIdentity)?;
    let attempt = async {
        let mut hs = Handshaking::new(dial(addr, source).await?)?;
        let peer = hs.client(secret, me).await?;
        Ok((hs.finish(), peer))
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .map_err(|_| TransportError::Timeout(deadline))?
}

/// A TCP connection to `addr`, from `source` when given (a node whose `[node]
/// bind_address` names one address of a multi-homed host talks to its peers from it).
async fn dial(addr: &str, source: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        if target.is_ipv4() != ip.is_ipv4() {
            continue;
        }
        let socket = if ip.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} has no address of the family of {ip}"),
        )
    }))
}

/// Run the server side of the handshake on a freshly accepted connection.
///
/// Nothing but handshake messages is read from `stream` until the peer has proven the
/// secret; on any failure (timeout after `deadline`, malformed message, wrong secret) the
/// stream is dropped and the reason returned.
pub async fn accept(
    stream: TcpStream,
    secret: &[u8],
    me: &PeerIdentity,
    deadline: Duration,
) -> Result<(PeerConn, PeerIdentity), TransportError> {
    me.validate().map_err(TransportError::InvalidIdentity)?;
    let attempt = async {
        let mut hs = Handshaking::new(stream)?;
        let peer = hs.server(secret, me).await?;
        Ok((hs.finish(), peer))
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .map_err(|_| TransportError::Timeout(deadline))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    const SECRET: &[u8] = b"correct horse battery staple";
    const DEADLINE: Duration = Duration::from_secs(10);

    fn ident(number: u16) -> PeerIdentity {
        PeerIdentity {
            node_id: format!("node-{number}"),
            number,
            incarnation: 1000 + u64::from(number),
            priority: 50,
            cluster_addr: format!("127.0.0.1:{}", 7000 + number),
            proxy_addr: format!("127.0.0.1:{}", 8000 + number),
            api_addr: format!("127.0.0.1:{}", 9000 + number),
        }
    }

    async fn listen() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (l, addr)
    }

    type Outcome = Result<(PeerConn, PeerIdentity), TransportError>;

    /// Accept one connection on `l` and run the server side on it.
    fn serve_one(
        l: TcpListener,
        secret: &'static [u8],
        me: PeerIdentity,
        deadline: Duration,
    ) -> JoinHandle<Outcome> {
        tokio::spawn(async move {
            let (stream, _) = l.accept().await.unwrap();
            accept(stream, secret, &me, deadline).await
        })
    }

    /// A handshake between a real client and a real server.
    async fn pair(
        client_secret: &'static [u8],
        server_secret: &'static [u8],
    ) -> (Outcome, Outcome) {
        let (l, addr) = listen().await;
        let server = serve_one(l, server_secret, ident(2), DEADLINE);
        let client = connect(&addr, None, client_secret, &ident(1), DEADLINE).await;
        (client, server.await.unwrap())
    }

    async fn connected() -> (PeerConn, PeerConn) {
        let (c, s) = pair(SECRET, SECRET).await;
        (c.unwrap().0, s.unwrap().0)
    }

    fn payload(msg: &HandshakeMessage) -> Vec<u8> {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        out.to_vec()
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(&mut out, payload, usize::MAX).unwrap();
        out.to_vec()
    }

    /// A hand-driven peer that speaks raw bytes, to play the attacker.
    struct Raw {
        stream: TcpStream,
        buf: BytesMut,
    }

    impl Raw {
        async fn connect(addr: &str) -> Raw {
            Raw {
                stream: TcpStream::connect(addr).await.unwrap(),
                buf: BytesMut::new(),
            }
        }

        async fn send_bytes(&mut self, bytes: &[u8]) {
            // The server may already have dropped us; that is what some tests expect.
            let _ = self.stream.write_all(bytes).await;
        }

        async fn send(&mut self, msg: &HandshakeMessage) {
            self.send_bytes(&framed(&payload(msg))).await;
        }

        /// The next message, or `None` once the connection ends.
        async fn recv(&mut self) -> Option<HandshakeMessage> {
            loop {
                if let Some(f) = decode_frame(&mut self.buf, HANDSHAKE_MAX).unwrap() {
                    return Some(HandshakeMessage::decode(&f).unwrap());
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        }

        async fn challenge(&mut self) -> ([u8; NONCE_LEN], PeerIdentity, [u8; MAC_LEN]) {
            match self.recv().await {
                Some(HandshakeMessage::Challenge {
                    nonce,
                    identity,
                    mac,
                }) => (nonce, identity, mac),
                other => panic!("expected Challenge, got {other:?}"),
            }
        }
    }

    fn hello(nonce: [u8; NONCE_LEN], number: u16) -> HandshakeMessage {
        HandshakeMessage::Hello {
            nonce,
            identity: ident(number),
        }
    }

    #[test]
    fn decode_frame_is_two_phase() {
        let mut wire = BytesMut::new();
        encode_frame(&mut wire, b"first", MAX_FRAME).unwrap();
        encode_frame(&mut wire, b"", MAX_FRAME).unwrap();
        encode_frame(&mut wire, &[7u8; 300], MAX_FRAME).unwrap();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for &b in wire.iter() {
            buf.put_u8(b);
            let before = buf.len();
            match decode_frame(&mut buf, 1024).unwrap() {
                Some(f) => frames.push(f),
                None => assert_eq!(buf.len(), before, "nothing taken from a partial frame"),
            }
        }
        assert!(buf.is_empty());
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"first");
        assert!(frames[1].is_empty());
        assert_eq!(&frames[2][..], &[7u8; 300][..]);
    }

    #[test]
    fn oversize_header_is_rejected_before_allocating() {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);
        let cap = buf.capacity();
        match decode_frame(&mut buf, 1 << 20) {
            Err(TransportError::FrameTooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, 1 << 20);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(buf.capacity(), cap);
        assert_eq!(buf.len(), 7, "nothing consumed");
        // Exactly at the cap is fine.
        let mut ok = BytesMut::from(&[0, 0, 0, 3, 1, 2, 3][..]);
        assert_eq!(&decode_frame(&mut ok, 3).unwrap().unwrap()[..], &[1, 2, 3]);
        // And the sending side refuses to produce one.
        assert!(matches!(
            encode_frame(&mut BytesMut::new(), &[0u8; 5], 4),
            Err(TransportError::FrameTooLarge { len: 5, max: 4 })
        ));
    }

    #[tokio::test]
    async fn frames_round_trip_over_tcp() {
        let (mut a, mut b) = connected().await;
        let sizes = [0, 1, 100, COPY_LIMIT, COPY_LIMIT + 1, 1 << 20, 5 << 20];
        let make = |n: usize| (0..n).map(|i| (i * 31 + n) as u8).collect::<Vec<u8>>();
        // One direction with one write per frame, read concurrently (the large frames
        // do not fit the socket buffers).
        let writer = tokio::spawn(async move {
            for n in sizes {
                a.write_frame(&make(n)).await.unwrap();
            }
            a
        });
        for n in sizes {
            assert_eq!(b.read_frame().await.unwrap(), make(n), "size {n}");
        }
        let mut a = writer.await.unwrap();
        // The other direction queued and flushed at once.
        for n in [0, 3, 0, 4096] {
            b.queue_frame(&make(n)).unwrap();
        }
        b.flush().await.unwrap();
        for n in [0, 3, 0, 4096] {
            assert_eq!(a.read_frame().await.unwrap(), make(n));
        }
        // Split halves in two tasks.
        let (mut ar, mut aw) = a.into_split();
        let echo = tokio::spawn(async move {
            for _ in 0..100 {
                let f = b.read_frame().await.unwrap();
                b.write_frame(&f).await.unwrap();
            }
        });
        let sender = tokio::spawn(async move {
            for i in 0..100u32 {
                aw.write_frame(&i.to_be_bytes()).await.unwrap();
            }
            aw
        });
        for i in 0..100u32 {
            assert_eq!(&ar.read_frame().await.unwrap()[..], &i.to_be_bytes());
        }
        echo.await.unwrap();
        let mut aw = sender.await.unwrap();
        aw.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_clean_close_reads_as_closed() {
        let (a, mut b) = connected().await;
        drop(a);
        let e = b.read_frame().await.unwrap_err();
        assert!(matches!(e, TransportError::Closed), "{e:?}");
        assert!(e.is_disconnect());
    }

    #[tokio::test]
    async fn oversize_frame_from_an_authenticated_peer_drops_the_connection() {
        let (a, mut b) = connected().await;
        b.set_max_frame(1 << 20);
        let (_ar, mut aw) = a.into_split();
        // A header claiming 4 GiB, written past the sender's own check.
        aw.half
            .write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 0])
            .await
            .unwrap();
        match b.read_frame().await {
            Err(TransportError::FrameTooLarge { len, max }) => {
                assert_eq!((len, max), (u32::MAX as usize, 1 << 20));
            }
            other => panic!("expected FrameTooLarge, got {:?}", other.map(|f| f.len())),
        }
        assert!(
            b.reader.rbuf.capacity() < 1 << 20,
            "no room made for the frame"
        );
        // The sending side checks its own cap too.
        aw.set_max_frame(10);
        assert!(matches!(
            aw.write_frame(&[0; 11]).await,
            Err(TransportError::FrameTooLarge { len: 11, max: 10 })
        ));
    }

    #[tokio::test]
    async fn oversize_handshake_frame_is_refused() {
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, ident(2), DEADLINE);
        let mut raw = Raw::connect(&addr).await;
        raw.send_bytes(&[0xFF, 0xFF, 0xFF, 0xFF]).await;
        match server.await.unwrap() {
            Err(TransportError::FrameTooLarge { max, .. }) => assert_eq!(max, HANDSHAKE_MAX),
            other => panic!("expected FrameTooLarge, got {:?}", other.map(|r| r.1)),
        }
        // A plain HTTP request looks like a 1.2 GB frame: dropped the same way.
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, ident(2), DEADLINE);
        let mut raw = Raw::connect(&addr).await;
        raw.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(matches!(
            server.await.unwrap(),
            Err(TransportError::FrameTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn read_frame_is_cancel_safe() {
        let (mut a, mut b) = connected().await;
        let wire = framed(b"split across two writes");
        a.writer.half.write_all(&wire[..6]).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(100), b.read_frame()).await;
        assert!(early.is_err(), "half a frame is not a frame");
        a.writer.half.write_all(&wire[6..]).await.unwrap();
        assert_eq!(
            &b.read_frame().await.unwrap()[..],
            b"split across two writes"
        );
    }

    #[tokio::test]
    async fn an_interrupted_write_poisons_the_writer() {
        let (mut a, _b) = connected().await;
        // Nobody reads, so a large frame cannot be written whole.
        let big = vec![0u8; 32 << 20];
        let cut = tokio::time::timeout(Duration::from_millis(200), a.write_frame(&big)).await;
        assert!(cut.is_err(), "the write should have blocked");
        assert!(matches!(
            a.write_frame(b"x").await,
            Err(TransportError::WriteInterrupted)
        ));
    }

    #[tokio::test]
    async fn identities_arrive_intact() {
        let client_id = PeerIdentity {
            node_id: "ñode-ü-".to_string() + &"x".repeat(MAX_NODE_ID - "ñode-ü-".len()),
            number: MAX_NUMBER,
            incarnation: u64::MAX,
            priority: 50,
            cluster_addr: "[::1]:7654".into(),
            proxy_addr: "h".repeat(MAX_ADDR),
            api_addr: String::new(),
        };
        assert_eq!(client_id.node_id.len(), MAX_NODE_ID);
        let server_id = PeerIdentity {
            node_id: "s".into(),
            number: 0,
            incarnation: 0,
            priority: 50,
            cluster_addr: "db-2.example.internal:7654".into(),
            proxy_addr: "0.0.0.0:8007".into(),
            api_addr: "10.1.2.3:8080".into(),
        };
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, server_id.clone(), DEADLINE);
        let (conn, seen_by_client) = connect(&addr, None, SECRET, &client_id, DEADLINE)
            .await
            .unwrap();
        let (sconn, seen_by_server) = server.await.unwrap().unwrap();
        assert_eq!(seen_by_client, server_id);
        assert_eq!(seen_by_server, client_id);
        assert_eq!(sconn.peer_addr(), conn.writer.half.local_addr().unwrap());
    }

    #[tokio::test]
    async fn invalid_local_identity_is_refused() {
        let mut me = ident(1);
        me.node_id = "n".repeat(MAX_NODE_ID + 1);
        let e = connect("127.0.0.1:1", None, SECRET, &me, DEADLINE)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, TransportError::InvalidIdentity(_)), "{e}");
        let mut me = ident(1);
        me.number = MAX_NUMBER + 1;
        assert!(me.validate().unwrap_err().contains("1024"));
    }

    #[tokio::test]
    async fn wrong_secret_fails_on_both_sides() {
        let cases: [(&'static [u8], &'static [u8]); 4] = [
            (SECRET, b"another secret"),
            (b"another secret", SECRET),
            (b"", SECRET),
            (SECRET, b""),
        ];
        for (cs, ss) in cases {
            let (client, server) = pair(cs, ss).await;
            let c = client.err().expect("client must fail");
            let s = server.err().expect("server must fail");
            assert!(c.is_auth_failure(), "client: {c}");
            assert!(s.is_auth_failure(), "server: {s}");
        }
        // Same (empty) secret on both sides: no authentication configured, still works.
        let (client, server) = pair(b"", b"").await;
        assert_eq!(client.unwrap().1, ident(2));
        assert_eq!(server.unwrap().1, ident(1));
    }

    #[tokio::test]
    async fn a_forged_proof_delivers_no_frame() {
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, ident(2), DEADLINE);
        let mut raw = Raw::connect(&addr).await;
        raw.send(&hello(nonce(), 1)).await;
        raw.challenge().await;
        // A guessed proof, with an application frame right behind it.
        let mut wire = framed(&payload(&HandshakeMessage::Proof {
            mac: [0x42; MAC_LEN],
        }));
        wire.extend(framed(b"append entries"));
        raw.send_bytes(&wire).await;
        let e = server.await.unwrap().err().expect("no connection");
        assert!(e.is_auth_failure(), "{e}");
        assert_eq!(
            raw.recv().await,
            Some(HandshakeMessage::Reject(RejectReason::AuthFailed))
        );
        assert_eq!(raw.recv().await, None);
    }

    #[tokio::test]
    async fn replayed_or_reflected_proof_fails() {
        // Session 1: a legitimate client, driven by hand so its messages can be recorded.
        let (l, addr) = listen().await;
        let server_id = ident(2);
        let server = {
            let id = server_id.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for _ in 0..3 {
                    let (s, _) = l.accept().await.unwrap();
                    results.push(accept(s, SECRET, &id, DEADLINE).await.map(|r| r.1));
                }
                results
            })
        };
        let nonce_c = nonce();
        let hello = hello(nonce_c, 1);
        let mut raw = Raw::connect(&addr).await;
        raw.send(&hello).await;
        let (nonce_s, identity, mac_s) = raw.challenge().await;
        let transcript = Transcript {
            nonce_c: &nonce_c,
            nonce_s: &nonce_s,
            client: &ident(1),
            server: &identity,
        };
        transcript.verify(SECRET, SERVER_LABEL, &mac_s).unwrap();
        let proof = HandshakeMessage::Proof {
            mac: transcript.mac(SECRET, CLIENT_LABEL),
        };
        raw.send(&proof).await;
        assert_eq!(raw.recv().await, Some(HandshakeMessage::Welcome));

        // Session 2: the same Hello and the recorded Proof. The server's nonce is new.
        let mut replay = Raw::connect(&addr).await;
        replay.send(&hello).await;
        let (nonce_s2, _, mac_s2) = replay.challenge().await;
        assert_ne!(nonce_s2, nonce_s);
        replay.send(&proof).await;
        assert_eq!(
            replay.recv().await,
            Some(HandshakeMessage::Reject(RejectReason::AuthFailed))
        );

        // Session 3: the server's own MAC reflected back as the Proof.
        let mut reflect = Raw::connect(&addr).await;
        reflect.send(&hello).await;
        let (_, _, mac_s3) = reflect.challenge().await;
        reflect.send(&HandshakeMessage::Proof { mac: mac_s3 }).await;
        assert_eq!(
            reflect.recv().await,
            Some(HandshakeMessage::Reject(RejectReason::AuthFailed))
        );
        let _ = mac_s2;

        let results = server.await.unwrap();
        assert_eq!(results[0].as_ref().unwrap(), &ident(1));
        assert!(results[1].as_ref().unwrap_err().is_auth_failure());
        assert!(results[2].as_ref().unwrap_err().is_auth_failure());
    }

    #[tokio::test]
    async fn a_frame_before_the_handshake_is_dropped() {
        // Straight in with an application frame instead of a Hello.
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, ident(2), DEADLINE);
        let mut raw = Raw::connect(&addr).await;
        raw.send_bytes(&framed(b"\x01append entries: term 7")).await;
        let e = server.await.unwrap().err().unwrap();
        assert!(matches!(e, TransportError::BadHandshake(_)), "{e}");
        assert_eq!(
            raw.recv().await,
            Some(HandshakeMessage::Reject(RejectReason::Malformed))
        );
        assert_eq!(raw.recv().await, None);

        // A Hello, then an application frame instead of the Proof.
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, ident(2), DEADLINE);
        let mut raw = Raw::connect(&addr).await;
        raw.send(&hello(nonce(), 1)).await;
        raw.challenge().await;
        raw.send_bytes(&framed(b"vote for me")).await;
        let e = server.await.unwrap().err().unwrap();
        assert!(matches!(e, TransportError::BadHandshake(_)), "{e}");

        // A well-formed message, but out of order (Welcome from the client).
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, ident(2), DEADLINE);
        let mut raw = Raw::connect(&addr).await;
        raw.send(&HandshakeMessage::Welcome).await;
        let e = server.await.unwrap().err().unwrap();
        assert!(e.to_string().contains("expected Hello, got Welcome"), "{e}");
        assert_eq!(
            raw.recv().await,
            Some(HandshakeMessage::Reject(RejectReason::Unexpected))
        );
    }

    #[tokio::test]
    async fn garbage_truncated_or_silent_clients_are_dropped() {
        let full_hello = payload(&hello(nonce(), 1));
        let mut trailing = full_hello.clone();
        trailing.push(0);
        let mut version2 = full_hello.clone();
        version2[4] = 2;
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("garbage", vec![0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], true),
            ("truncated frame", framed(&full_hello)[..40].to_vec(), false),
            (
                "truncated hello",
                framed(&full_hello[..full_hello.len() - 1]),
                true,
            ),
            ("trailing garbage", framed(&trailing), true),
            ("other version", framed(&version2), true),
            ("empty frame", framed(b""), true),
        ];
        for (name, bytes, keep_open) in cases {
            let (l, addr) = listen().await;
            let server = serve_one(l, SECRET, ident(2), Duration::from_secs(5));
            let mut raw = Raw::connect(&addr).await;
            raw.send_bytes(&bytes).await;
            if !keep_open {
                raw.stream.shutdown().await.unwrap();
            }
            let e = server
                .await
                .unwrap()
                .err()
                .unwrap_or_else(|| panic!("{name}: accepted"));
            match name {
                "truncated frame" => assert!(e.is_disconnect(), "{name}: {e}"),
                "other version" => assert!(
                    matches!(e, TransportError::UnsupportedVersion { got: 2, ours: 1 }),
                    "{name}: {e}"
                ),
                _ => assert!(matches!(e, TransportError::BadHandshake(_)), "{name}: {e}"),
            }
        }
        // Says nothing at all: dropped at the deadline.
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, ident(2), Duration::from_millis(200));
        let mut raw = Raw::connect(&addr).await;
        let e = server.await.unwrap().err().unwrap();
        assert!(matches!(e, TransportError::Timeout(_)), "{e}");
        assert_eq!(raw.recv().await, None, "the server hung up");
        // Sends the Hello but never the Proof.
        let (l, addr) = listen().await;
        let server = serve_one(l, SECRET, ident(2), Duration::from_millis(200));
        let mut raw = Raw::connect(&addr).await;
        raw.send(&hello(nonce(), 1)).await;
        let e = server.await.unwrap().err().unwrap();
        assert!(matches!(e, TransportError::Timeout(_)), "{e}");
    }

    #[tokio::test]
    async fn garbage_or_silent_servers_are_dropped() {
        // Accepts and says nothing.
        let (l, addr) = listen().await;
        let hold = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
        let e = connect(&addr, None, SECRET, &ident(1), Duration::from_millis(200))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, TransportError::Timeout(_)), "{e}");
        hold.await.unwrap();

        // Answers the Hello with garbage, then with a Challenge for some other client.
        for answer in [
            framed(b"HTTP/1.1 400 Bad Request"),
            framed(&payload(&HandshakeMessage::Challenge {
                nonce: nonce(),
                identity: ident(2),
                mac: [0; MAC_LEN],
            })),
        ] {
            let (l, addr) = listen().await;
            let fake = tokio::spawn(async move {
                let (s, _) = l.accept().await.unwrap();
                let mut raw = Raw {
                    stream: s,
                    buf: BytesMut::new(),
                };
                assert!(matches!(
                    raw.recv().await,
                    Some(HandshakeMessage::Hello { .. })
                ));
                raw.send_bytes(&answer).await;
                raw.recv().await
            });
            let e = connect(&addr, None, SECRET, &ident(1), DEADLINE)
                .await
                .err()
                .unwrap();
            let told = fake.await.unwrap();
            match told {
                Some(HandshakeMessage::Reject(RejectReason::Malformed)) => {
                    assert!(matches!(e, TransportError::BadHandshake(_)), "{e}")
                }
                Some(HandshakeMessage::Reject(RejectReason::AuthFailed)) => {
                    assert!(e.is_auth_failure(), "{e}")
                }
                other => panic!("client answered {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn many_concurrent_handshakes() {
        const N: u16 = 64;
        let (l, addr) = listen().await;
        let server = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..N {
                let (s, _) = l.accept().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    let (mut conn, peer) = accept(s, SECRET, &ident(1000), DEADLINE).await?;
                    let f = conn.read_frame().await?;
                    conn.write_frame(&f).await?;
                    Ok::<_, TransportError>(peer.number)
                }));
            }
            let mut numbers = Vec::new();
            for t in tasks {
                numbers.push(t.await.unwrap().unwrap());
            }
            numbers
        });
        let clients: Vec<_> = (0..N)
            .map(|i| {
                let addr = addr.clone();
                tokio::spawn(async move {
                    let (mut conn, peer) = connect(&addr, None, SECRET, &ident(i), DEADLINE)
                        .await
                        .unwrap();
                    assert_eq!(peer, ident(1000));
                    conn.write_frame(&i.to_be_bytes()).await.unwrap();
                    assert_eq!(&conn.read_frame().await.unwrap()[..], &i.to_be_bytes());
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        let mut numbers = server.await.unwrap();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..N).collect::<Vec<_>>());
    }

    #[test]
    fn messages_round_trip_and_decode_strictly() {
        let messages = [
            hello([1; NONCE_LEN], 5),
            HandshakeMessage::Challenge {
                nonce: [2; NONCE_LEN],
                identity: ident(6),
                mac: [3; MAC_LEN],
            },
            HandshakeMessage::Proof { mac: [4; MAC_LEN] },
            HandshakeMessage::Welcome,
            HandshakeMessage::Reject(RejectReason::AuthFailed),
            HandshakeMessage::Reject(RejectReason::UnsupportedVersion),
            HandshakeMessage::Reject(RejectReason::Malformed),
            HandshakeMessage::Reject(RejectReason::Unexpected),
        ];
        for m in &messages {
            let bytes = payload(m);
            assert!(bytes.len() <= HANDSHAKE_MAX);
            assert_eq!(&HandshakeMessage::decode(&bytes).unwrap(), m);
            for cut in 0..bytes.len() {
                assert!(
                    HandshakeMessage::decode(&bytes[..cut]).is_err(),
                    "{} cut at {cut}",
                    m.name()
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(HandshakeMessage::decode(&longer).is_err(), "{}", m.name());
        }
        // The largest possible message still fits a handshake frame.
        let biggest = HandshakeMessage::Challenge {
            nonce: [0; NONCE_LEN],
            identity: PeerIdentity {
                node_id: "n".repeat(MAX_NODE_ID),
                number: MAX_NUMBER,
                incarnation: 0,
                priority: 50,
                cluster_addr: "a".repeat(MAX_ADDR),
                proxy_addr: "a".repeat(MAX_ADDR),
                api_addr: "a".repeat(MAX_ADDR),
            },
            mac: [0; MAC_LEN],
        };
        assert!(payload(&biggest).len() <= HANDSHAKE_MAX);

        let base = payload(&hello([1; NONCE_LEN], 5));
        let id_at = MAGIC.len() + 2 + NONCE_LEN;
        let mutate = |at: usize, bytes: &[u8]| {
            let mut b = base.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            HandshakeMessage::decode(&b).unwrap_err().to_string()
        };
        assert!(mutate(0, b"XSCL").contains("magic"));
        assert!(mutate(5, &[9]).contains("kind 9"));
        // node_id "node-5" is 6 bytes; an invalid UTF-8 byte in it.
        assert!(mutate(id_at + 2, &[0xFF]).contains("UTF-8"));
        // number 1024.
        assert!(mutate(id_at + 2 + 6, &[0x04, 0x00]).contains("1024"));
        // node_id declared 65 bytes long.
        assert!(mutate(id_at, &[0, 65]).contains("limit 64"));
        // Empty node_id (and the rest shifted: rejected either way, never a panic).
        assert!(
            HandshakeMessage::decode(&[&MAGIC[..], &[1, 1], &[0; 32], &[0, 0]].concat()).is_err()
        );
        assert!(matches!(
            HandshakeMessage::decode(&[&MAGIC[..], &[1, 5, 99]].concat()),
            Err(TransportError::BadHandshake(_))
        ));
    }

    #[test]
    fn macs_bind_labels_nonces_and_identities() {
        let (a, b) = ([1; NONCE_LEN], [2; NONCE_LEN]);
        let (c, s) = (ident(1), ident(2));
        let t = Transcript {
            nonce_c: &a,
            nonce_s: &b,
            client: &c,
            server: &s,
        };
        let base = t.mac(SECRET, SERVER_LABEL);
        assert_ne!(base, t.mac(SECRET, CLIENT_LABEL));
        assert_ne!(base, t.mac(b"other", SERVER_LABEL));
        let swapped = Transcript {
            nonce_c: &b,
            nonce_s: &a,
            client: &c,
            server: &s,
        };
        assert_ne!(base, swapped.mac(SECRET, SERVER_LABEL));
        let mut c2 = c.clone();
        c2.incarnation += 1;
        let other_id = Transcript { client: &c2, ..t };
        assert_ne!(base, other_id.mac(SECRET, SERVER_LABEL));
        assert!(t.verify(SECRET, SERVER_LABEL, &base).is_ok());
        assert!(t.verify(SECRET, SERVER_LABEL, &base[..31]).is_err());
    }
}
