//! Connection phase: the server greeting, the client's handshake response, and the
//! mysql_native_password arithmetic that lets the proxy log into a backend as the
//! client's own user.
//!
//! mysql_native_password: the server stores `stage2 = SHA1(SHA1(password))`; the client
//! answers a 20-byte scramble `s` with `reply = SHA1(password) XOR SHA1(s || stage2)`.
//! Knowing `stage2`, the proxy recovers `stage1 = SHA1(password)` as
//! `reply XOR SHA1(s || stage2)` and checks `SHA1(stage1) == stage2`. With `stage1` it can
//! answer any other server's scramble for that user, without ever seeing the password.

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use rand::Rng;
use sha1::{Digest, Sha1};

use super::packet::Reader;

pub const NATIVE_PASSWORD: &str = "mysql_native_password";
pub const SCRAMBLE_LEN: usize = 20;

/// Capabilities the proxy passes between client and backend unchanged. Compression,
/// `CLIENT_DEPRECATE_EOF` (see `response`), metadata caching and query attributes are
/// not offered; TLS is added only when the proxy has a certificate.
pub fn supported_capabilities() -> CapabilityFlags {
    use CapabilityFlags as C;
    C::CLIENT_LONG_PASSWORD
        | C::CLIENT_FOUND_ROWS
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_CONNECT_WITH_DB
        | C::CLIENT_NO_SCHEMA
        | C::CLIENT_ODBC
        | C::CLIENT_LOCAL_FILES
        | C::CLIENT_IGNORE_SPACE
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_IGNORE_SIGPIPE
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_RESERVED
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_CONNECT_ATTRS
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | C::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
        | C::CLIENT_SESSION_TRACK
        | C::CLIENT_PROGRESS_OBSOLETE
}

/// MariaDB extended capabilities passed through.
pub fn supported_mariadb_capabilities() -> MariadbCapabilities {
    MariadbCapabilities::MARIADB_CLIENT_PROGRESS
        | MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS
        | MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
}

/// What a backend announced in its greeting.
#[derive(Debug, Clone)]
pub struct ServerGreeting {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    pub scramble: Vec<u8>,
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
    pub status: u16,
    pub auth_plugin: Vec<u8>,
}

impl ServerGreeting {
    /// Parse a greeting; an ERR packet in its place (e.g. "too many connections") is
    /// returned as `Err(payload)` by the caller before this is reached.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        if payload.first() != Some(&10) {
            return None;
        }
        let hs: HandshakePacket<'_> = ParseBuf(payload).parse(()).ok()?;
        let mut scramble = hs.scramble_1_ref().to_vec();
        if let Some(s2) = hs.scramble_2_ref() {
            // The second part is NUL-terminated on the wire.
            scramble.extend_from_slice(s2.strip_suffix(&[0]).unwrap_or(s2));
        }
        Some(ServerGreeting {
            server_version: hs.server_version_ref().to_vec(),
            connection_id: hs.connection_id(),
            scramble,
            capabilities: hs.capabilities(),
            mariadb_capabilities: hs.mariadb_ext_capabilities(),
            collation: hs.default_collation(),
            status: hs.status_flags().bits(),
            auth_plugin: hs.auth_plugin_name_ref().unwrap_or_default().to_vec(),
        })
    }
}

/// A fresh scramble: printable, NUL-free bytes, as MariaDB generates them.
pub fn new_scramble() -> [u8; SCRAMBLE_LEN] {
    let mut rng = rand::rng();
    let mut s = [0u8; SCRAMBLE_LEN];
    for b in &mut s {
        *b = rng.random_range(33u8..127);
    }
    s
}

/// Encode the greeting the proxy sends a client.
pub fn greeting_payload(
    backend: &ServerGreeting,
    connection_id: u32,
    scramble: &[u8; SCRAMBLE_LEN],
    capabilities: CapabilityFlags,
    mariadb_capabilities: MariadbCapabilities,
) -> Vec<u8> {
    let mut part2 = scramble[8..].to_vec();
    part2.push(0);
    let mut s1 = [0u8; 8];
    s1.copy_from_slice(&scramble[..8]);
    let hs = HandshakePacket::new(
        10,
        backend.server_version.as_slice(),
        connection_id,
        s1,
        Some(part2),
        capabilities,
        backend.collation,
        StatusFlags::from_bits_truncate(backend.status),
        Some(NATIVE_PASSWORD.as_bytes()),
    )
    .with_mariadb_ext_capabilities(mariadb_capabilities);
    let mut out = Vec::with_capacity(128);
    hs.serialize(&mut out);
    out
}

/// The parts of a client's handshake response the proxy uses.
#[derive(Debug, Clone)]
pub struct ClientHello {
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub max_packet: u32,
    pub collation: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    /// The raw connect-attributes block (length prefix included), forwarded as is.
    pub connect_attrs: Option<Vec<u8>>,
}

/// Whether a first client packet is an SSLRequest (a truncated response with CLIENT_SSL).
pub fn is_ssl_request(payload: &[u8]) -> bool {
    let caps = Reader::new(payload).u32().unwrap_or(0);
    payload.len() == 32 && caps & CapabilityFlags::CLIENT_SSL.bits() != 0
}

impl ClientHello {
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let resp: HandshakeResponse<'_> = ParseBuf(payload).parse(()).ok()?;
        let caps = resp.capabilities();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let connect_attrs = if caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) {
            raw_connect_attrs(payload, caps)
        } else {
            None
        };
        Some(ClientHello {
            capabilities: caps,
            mariadb_capabilities: resp.mariadb_ext_capabilities(),
            max_packet: Reader::new(payload.get(4..).unwrap_or_default())
                .u32()
                .unwrap_or(0),
            collation: resp.collation(),
            user: text(resp.user()),
            auth_response: resp.scramble_buf().to_vec(),
            database: resp.db_name().filter(|d| !d.is_empty()).map(text),
            auth_plugin: resp.auth_plugin().map(|p| text(p.as_bytes())),
            connect_attrs,
        })
    }
}

/// Locate the connect-attributes block by walking the response's fields.
fn raw_connect_attrs(payload: &[u8], caps: CapabilityFlags) -> Option<Vec<u8>> {
    let mut r = Reader::new(payload);
    r.take(32)?;
    r.null_str()?;
    if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
        r.lenenc_bytes()?;
    } else if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let n = r.u8()? as usize;
        r.take(n)?;
    } else {
        r.null_str()?;
    }
    if caps.contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB) {
        r.null_str()?;
    }
    if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
        r.null_str()?;
    }
    let rest = r.remaining();
    let mut probe = Reader::new(rest);
    let len = usize::try_from(probe.lenenc()?).ok()?;
    let header = rest.len() - probe.remaining().len();
    rest.get(..header + len).map(<[u8]>::to_vec)
}

/// Parse an AuthSwitchRequest payload (`0xFE plugin NUL data`).
pub fn parse_auth_switch(payload: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut r = Reader::new(payload.get(1..)?);
    let plugin = String::from_utf8_lossy(r.null_str()?).into_owned();
    let data = r.remaining();
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    Some((plugin, data.to_vec()))
}

/// AuthSwitchRequest payload asking for mysql_native_password over `scramble`.
pub fn auth_switch_payload(scramble: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + NATIVE_PASSWORD.len() + scramble.len() + 1);
    out.push(0xFE);
    out.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    out.push(0);
    out.extend_from_slice(scramble);
    out.push(0);
    out
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `SHA1(SHA1(password))`, the form MariaDB stores (as `*HEX`).
pub fn stage2_of_password(password: &[u8]) -> [u8; 20] {
    sha1(&[&sha1(&[password])])
}

/// `SHA1(password)`, recovered from a client's reply: enough to log in as that user
/// anywhere, so it is treated like the password itself. `Debug` prints `[redacted]`
/// and the bytes are zeroed when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Stage1([u8; 20]);

impl Stage1 {
    /// The 20 bytes, for computing a reply.
    fn bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl Drop for Stage1 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Stage1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage1([redacted])")
    }
}

/// Recover `SHA1(password)` from a client's reply, or `None` if it does not match.
pub fn recover_stage1(scramble: &[u8], reply: &[u8], stage2: &[u8; 20]) -> Option<Stage1> {
    if reply.len() != 20 {
        return None;
    }
    let mask = sha1(&[scramble, stage2]);
    let mut stage1 = Stage1([0u8; 20]);
    for i in 0..20 {
        stage1.0[i] = reply[i] ^ mask[i];
    }
    (sha1(&[stage1.bytes()]) == *stage2).then_some(stage1)
}

/// The reply to `scramble` for a user whose `SHA1(password)` is `stage1`.
pub fn reply_from_stage1(scramble: &[u8], stage1: &Stage1) -> [u8; 20] {
    let stage2 = sha1(&[stage1.bytes()]);
    let mask = sha1(&[scramble, &stage2]);
    let mut out = [0u8; 20];
    for i in 0..20 {
        out[i] = stage1.0[i] ^ mask[i];
    }
    out
}

/// Parse MariaDB's `*HEX40` hash form into `stage2`.
pub fn parse_native_hash(s: &str) -> Option<[u8; 20]> {
    let hex = s.strip_prefix('*')?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The fields of a COM_CHANGE_USER request (after the command byte: user NUL, auth
/// data, database NUL, collation u16, plugin NUL, connect attributes).
pub struct ChangeUserRequest {
    pub user: String,
    pub auth: Vec<u8>,
    pub database: Option<String>,
    pub collation: Option<u8>,
    pub plugin: Option<String>,
    pub connect_attrs: Option<Vec<u8>>,
}

impl ChangeUserRequest {
    pub fn parse(payload: &[u8], caps: CapabilityFlags) -> Option<Self> {
        let mut r = Reader::new(payload.get(1..)?);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let user = text(r.null_str()?);
        let auth = if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
            let n = r.u8()? as usize;
            r.take(n)?.to_vec()
        } else {
            r.null_str()?.to_vec()
        };
        let database = Some(text(r.null_str_or_rest())).filter(|d| !d.is_empty());
        let collation = r.u16().map(|c| c as u8);
        let plugin = (!r.is_empty())
            .then(|| text(r.null_str_or_rest()))
            .filter(|p| !p.is_empty());
        let connect_attrs = (!r.is_empty()).then(|| r.remaining().to_vec());
        Some(ChangeUserRequest {
            user,
            auth,
            database,
            collation,
            plugin,
            connect_attrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_round_trip() {
        let stage2 = stage2_of_password(b"s3cret");
        let scramble = new_scramble();
        let reply = mysql_common::auth::plugins::mysql_native_password::scramble_native(
            &scramble, b"s3cret",
        )
        .unwrap();
        let stage1 = recover_stage1(&scramble, &reply, &stage2).expect("matches");
        let other = new_scramble();
        let expected =
            mysql_common::auth::plugins::mysql_native_password::scramble_native(&other, b"s3cret")
                .unwrap();
        assert_eq!(reply_from_stage1(&other, &stage1), expected);
        let wrong =
            mysql_common::auth::plugins::mysql_native_password::scramble_native(&scramble, b"nope")
                .unwrap();
        assert!(recover_stage1(&scramble, &wrong, &stage2).is_none());
    }

    #[test]
    fn hash_parse() {
        // SELECT PASSWORD('s3cret')
        let h = stage2_of_password(b"s3cret");
        let hex: String = h.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_native_hash(&format!("*{hex}")), Some(h));
        assert_eq!(parse_native_hash("invalid"), None);
        assert_eq!(parse_native_hash("*ZZ"), None);
    }

    #[test]
    fn greeting_round_trips_through_parser() {
        let backend = ServerGreeting {
            server_version: b"5.5.5-10.11.19-MariaDB".to_vec(),
            connection_id: 1,
            scramble: vec![1; 20],
            capabilities: supported_capabilities(),
            mariadb_capabilities: supported_mariadb_capabilities(),
            collation: 45,
            status: 2,
            auth_plugin: NATIVE_PASSWORD.into(),
        };
        let scramble = new_scramble();
        let p = greeting_payload(
            &backend,
            77,
            &scramble,
            supported_capabilities(),
            MariadbCapabilities::empty(),
        );
        let g = ServerGreeting::parse(&p).expect("parses");
        assert_eq!(g.connection_id, 77);
        assert_eq!(g.scramble, scramble);
        assert_eq!(g.auth_plugin, NATIVE_PASSWORD.as_bytes());
    }

    #[test]
    fn garbage_hello_is_none() {
        assert!(ClientHello::parse(b"").is_none());
        assert!(ClientHello::parse(&[0xFF; 10]).is_none());
        assert!(ServerGreeting::parse(&[10, 0xFF]).is_none());
    }
}
