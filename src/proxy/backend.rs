//! Backend connections: a TCP or Unix-socket connection to a MariaDB server, logged in
//! as the client's own user with the `SHA1(password)` recovered during the client's
//! handshake.
//!
//! The login reuses the client's negotiated capabilities, collation, max packet size and
//! connect attributes, so every packet the backend sends afterwards has exactly the
//! shape the client expects and can be forwarded unchanged.
//!
//! # The account is MariaDB's choice for the client, not for the proxy
//! MariaDB picks an account by user name *and* client address. Logging in from the
//! proxy's own address (loopback or the socket, which MariaDB calls `localhost`) could
//! give the client another, more privileged account. So a login says which identity it
//! must end up with ([`Identity`]):
//! * a PROXY protocol v1 header carrying the client's address starts the login, so
//!   MariaDB itself matches the account as for a direct connection (needs the proxy's
//!   address in MariaDB's `proxy_protocol_networks`);
//! * and/or, after the login, `CURRENT_USER()` must be the account the proxy matched for
//!   the client; otherwise the login fails with [`BackendError::WrongAccount`] before
//!   the client can run anything. (Over the Unix socket with `skip_name_resolve = ON`,
//!   MariaDB still matches `localhost` accounts despite the header, so there both are
//!   used.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BufMut;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::acl::AccountName;
use crate::protocol::handshake::{self, ServerGreeting, Stage1, NATIVE_PASSWORD};
use crate::protocol::packet::put_lenenc;
use crate::protocol::{Packet, PacketConn, ProtoError};

/// How long opening and logging into a backend may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to MariaDB at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to MariaDB at {0}")]
    Timeout(String),
    /// A standalone proxy found no member to read from.
    #[error("{0}")]
    Unavailable(String),
    #[error("protocol error talking to MariaDB: {0}")]
    Proto(#[from] ProtoError),
    #[error("MariaDB sent an unexpected greeting")]
    BadGreeting,
    /// The backend refused the login; the ERR payload is forwarded to the client.
    #[error("MariaDB refused the login")]
    Refused(Packet),
    #[error("MariaDB asked for auth plugin '{0}', which the proxy cannot speak")]
    Plugin(String),
    /// Without the PROXY protocol, MariaDB matched the proxy's login to another account
    /// than the one it would give the client.
    #[error("MariaDB logged the proxy in as {got} but would give this client {expected}; enable the PROXY protocol (proxy_protocol_networks) so accounts match by the client's address")]
    WrongAccount { expected: AccountName, got: String },
}

/// How a backend login ends up as the account MariaDB gives the client.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Send a PROXY protocol header with the client's address and the address it
    /// connected to: MariaDB matches the account itself.
    pub proxy_header: Option<(SocketAddr, SocketAddr)>,
    /// Check `CURRENT_USER()` after the login, unless the backend connection comes from
    /// the client's own address (then MariaDB sees what it would see directly).
    pub verify: Option<(AccountName, IpAddr)>,
}

impl Identity {
    /// The proxy's own service account, or a login nothing needs to be proven for.
    pub fn trusted() -> Self {
        Identity::default()
    }
}

/// Everything needed to log into a backend as a client's user.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    /// `SHA1(password)`; `None` for an account with an empty password.
    pub stage1: Option<Stage1>,
    pub database: Option<String>,
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
    pub max_packet: u32,
    pub connect_attrs: Option<Vec<u8>>,
    pub identity: Identity,
    /// Set when logging into another node's proxy on the client's behalf: the
    /// client's addresses, proven with the cluster secret (see `router`).
    pub forward: Option<Forward>,
}

/// A forwarded client's addresses and the secret that proves them.
#[derive(Clone)]
pub struct Forward {
    pub secret: Vec<u8>,
    pub client: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("client", &self.client)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// The connect attributes to send to a server whose greeting had `scramble`.
    fn attrs_for(&self, scramble: &[u8]) -> Option<Vec<u8>> {
        let Some(fw) = &self.forward else {
            return self.connect_attrs.clone();
        };
        let mut pairs: Vec<(String, String)> = self
            .connect_attrs
            .as_deref()
            .map(super::router::attr_pairs)
            .unwrap_or_default();
        pairs.retain(|(k, _)| !k.starts_with("_wolfscale_"));
        let proof = super::router::forward_proof(&fw.secret, scramble, &fw.client, &fw.local);
        pairs.push((super::router::ATTR_CLIENT.into(), fw.client.to_string()));
        pairs.push((super::router::ATTR_LOCAL.into(), fw.local.to_string()));
        pairs.push((super::router::ATTR_PROOF.into(), proof));
        Some(super::router::encode_attrs(&pairs))
    }
}

/// A connection to MariaDB: TCP (`host:port`) or a Unix socket (an absolute path).
/// The socket skips the loopback TCP stack, which is most of a local proxy's cost.
pub enum BackendStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl BackendStream {
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        if addr.starts_with('/') {
            Ok(BackendStream::Unix(UnixStream::connect(addr).await?))
        } else {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true).ok();
            Ok(BackendStream::Tcp(s))
        }
    }
}

impl BackendStream {
    /// The local address of a TCP connection (`None` for a Unix socket).
    pub fn local_ip(&self) -> Option<IpAddr> {
        match self {
            BackendStream::Tcp(s) => s
                .local_addr()
                .ok()
                .map(|a| super::acl::canonical_ip(a.ip())),
            BackendStream::Unix(_) => None,
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Login {
    /// The mysql_native_password answer to a server's `scramble` (empty for an empty
    /// password).
    pub fn reply_to(&self, scramble: &[u8]) -> Vec<u8> {
        self.stage1
            .as_ref()
            .map(|s| handshake::reply_from_stage1(scramble, s).to_vec())
            .unwrap_or_default()
    }
}

/// A logged-in backend connection.
pub struct Backend {
    pub conn: PacketConn<BackendStream>,
    /// The backend's own connection (thread) id, the target of a mapped KILL.
    pub thread_id: u32,
    /// The scramble of the backend's greeting; COM_CHANGE_USER answers it again.
    pub scramble: Vec<u8>,
    /// The OK packet that ended the login.
    pub login_ok: Packet,
}

async fn open(
    addr: &str,
    max_packet: usize,
    identity: &Identity,
) -> Result<(PacketConn<BackendStream>, ServerGreeting), BackendError> {
    let stream = BackendStream::connect(addr)
        .await
        .map_err(|source| BackendError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let mut conn = PacketConn::new(stream, max_packet);
    if let Some((client, local)) = identity.proxy_header {
        // MariaDB reads the header before the handshake response, whether it arrives
        // before or after the greeting; sending it first is simplest.
        conn.write_raw(proxy_header(client, local).as_bytes())
            .await?;
    }
    let hello = conn.read_packet().await?;
    if hello.first() == Some(0xFF) {
        return Err(BackendError::Refused(hello));
    }
    let greeting = ServerGreeting::parse(&hello.payload).ok_or(BackendError::BadGreeting)?;
    Ok((conn, greeting))
}

/// Read a backend's greeting and disconnect: used at start to learn its version and
/// capabilities, which the proxy then presents to clients.
pub async fn probe(addr: &str) -> Result<ServerGreeting, BackendError> {
    let fut = async {
        let (_conn, greeting) = open(addr, 1 << 20, &Identity::trusted()).await?;
        Ok(greeting)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| BackendError::Timeout(addr.to_string()))?
}

/// Whether MariaDB takes PROXY protocol headers from a connection made from `from`
/// (`None`: its Unix socket), given its `@@proxy_protocol_networks`: a comma-separated
/// list of `*`, `localhost` (the Unix socket), and IP addresses or networks with an
/// optional `/prefix`.
pub fn proxy_networks_allow(networks: &str, from: Option<IpAddr>) -> bool {
    networks
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .any(|n| match (n, from) {
            ("*", _) => true,
            ("localhost", None) => true,
            (_, None) => false,
            (net, Some(ip)) => network_contains(net, super::acl::canonical_ip(ip)),
        })
}

fn network_contains(net: &str, ip: IpAddr) -> bool {
    let (addr, prefix) = match net.split_once('/') {
        Some((a, p)) => (a, p.parse::<u32>().ok()),
        None => (net, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (super::acl::canonical_ip(addr), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let bits = prefix.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let bits = prefix.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The address this proxy's connections to `addr` come from (`None` for a Unix
/// socket).
pub async fn source_address(addr: &str) -> Result<Option<IpAddr>, BackendError> {
    let stream = BackendStream::connect(addr)
        .await
        .map_err(|source| BackendError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    Ok(stream.local_ip())
}

/// Open a connection to `addr` and log in as `login.user`.
pub async fn connect(
    addr: &str,
    login: &Login,
    max_packet: usize,
) -> Result<Backend, BackendError> {
    let fut = async {
        let (mut conn, greeting) = open(addr, max_packet, &login.identity).await?;
        let caps = backend_capabilities(login, &greeting);
        let reply = login.reply_to(&greeting.scramble);
        let attrs = login.attrs_for(&greeting.scramble);
        let payload = handshake_response(login, caps, &reply, attrs.as_deref());
        conn.send(1, &payload).await?;
        let ok = finish_auth(&mut conn, login).await?;
        verify_account(&mut conn, &login.identity).await?;
        Ok(Backend {
            conn,
            thread_id: greeting.connection_id,
            scramble: greeting.scramble,
            login_ok: ok,
        })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| BackendError::Timeout(addr.to_string()))?
}

/// Read the server's verdict on an authentication attempt, answering one
/// mysql_native_password auth switch if asked.
pub async fn finish_auth(
    conn: &mut PacketConn<BackendStream>,
    login: &Login,
) -> Result<Packet, BackendError> {
    let mut switched = false;
    loop {
        let p = conn.read_packet().await?;
        match p.first() {
            Some(0x00) => return Ok(p),
            Some(0xFF) => return Err(BackendError::Refused(p)),
            Some(0xFE) if !switched => {
                let (plugin, scramble) = handshake::parse_auth_switch(&p.payload)
                    .ok_or(ProtoError::Malformed("auth switch request"))?;
                if plugin != NATIVE_PASSWORD {
                    return Err(BackendError::Plugin(plugin));
                }
                let reply = login.reply_to(&scramble);
                conn.send(p.last_seq.wrapping_add(1), &reply).await?;
                switched = true;
            }
            _ => {
                return Err(ProtoError::Malformed("unexpected packet during authentication").into())
            }
        }
    }
}

/// After a login (or COM_CHANGE_USER) under [`Identity::Verify`], check that MariaDB
/// chose the expected account. The query returns no row when it did, which leaves the
/// session as a fresh one would be (`FOUND_ROWS()` 0, no warnings).
pub async fn verify_account(
    conn: &mut PacketConn<BackendStream>,
    identity: &Identity,
) -> Result<(), BackendError> {
    let Some((expected, client_ip)) = &identity.verify else {
        return Ok(());
    };
    if conn.stream().local_ip() == Some(super::acl::canonical_ip(*client_ip)) {
        return Ok(());
    }
    let name = expected.to_string();
    let hex: String = name.bytes().map(|b| format!("{b:02X}")).collect();
    // A hex literal compares bytes, whatever sql_mode or character set the session has.
    let sql = format!("SELECT CURRENT_USER() FROM DUAL WHERE CURRENT_USER() <> X'{hex}'");
    let rows = query_rows(conn, &sql).await?;
    match rows.into_iter().next() {
        None => Ok(()),
        Some(got) => Err(BackendError::WrongAccount {
            expected: expected.clone(),
            got,
        }),
    }
}

/// Run a text query and return the first column of each row (a small admin helper for
/// replies the proxy reads itself; never used on client traffic).
async fn query_rows(
    conn: &mut PacketConn<BackendStream>,
    sql: &str,
) -> Result<Vec<String>, BackendError> {
    let mut payload = Vec::with_capacity(1 + sql.len());
    payload.push(crate::protocol::command::COM_QUERY);
    payload.extend_from_slice(sql.as_bytes());
    conn.send(0, &payload).await?;
    let first = conn.read_packet().await?;
    match first.first() {
        Some(0xFF) => return Err(BackendError::Refused(first)),
        Some(0x00) => return Ok(vec![]),
        _ => {}
    }
    let columns = crate::protocol::packet::Reader::new(&first.payload)
        .lenenc()
        .ok_or(ProtoError::Malformed("column count"))?;
    for _ in 0..=columns {
        conn.read_packet().await?; // column definitions and their EOF
    }
    let mut rows = Vec::new();
    loop {
        let p = conn.read_packet().await?;
        match p.first() {
            Some(0xFE) if p.payload.len() < 9 => return Ok(rows),
            Some(0xFF) => return Err(BackendError::Refused(p)),
            _ => {
                let mut r = crate::protocol::packet::Reader::new(&p.payload);
                let text = r
                    .lenenc_bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                rows.push(text);
            }
        }
    }
}

/// A PROXY protocol v1 header for a connection from `client` to `local`.
pub fn proxy_header(client: SocketAddr, local: SocketAddr) -> String {
    let client_ip = super::acl::canonical_ip(client.ip());
    let local_ip = super::acl::canonical_ip(local.ip());
    let (family, local_ip) = match (client_ip, local_ip) {
        (IpAddr::V4(_), IpAddr::V4(l)) => ("TCP4", IpAddr::V4(l)),
        (IpAddr::V4(_), IpAddr::V6(_)) => ("TCP4", IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        (IpAddr::V6(_), IpAddr::V6(l)) => ("TCP6", IpAddr::V6(l)),
        (IpAddr::V6(_), IpAddr::V4(l)) => ("TCP6", IpAddr::V6(l.to_ipv6_mapped())),
    };
    format!(
        "PROXY {family} {client_ip} {local_ip} {} {}\r\n",
        client.port(),
        local.port()
    )
}

fn backend_capabilities(login: &Login, greeting: &ServerGreeting) -> CapabilityFlags {
    use CapabilityFlags as C;
    let auth = C::CLIENT_PROTOCOL_41
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
    let mut caps = (login.capabilities & handshake::supported_capabilities()) | auth;
    caps.remove(C::CLIENT_SSL | C::CLIENT_COMPRESS | C::CLIENT_DEPRECATE_EOF);
    caps.set(C::CLIENT_CONNECT_WITH_DB, login.database.is_some());
    caps.set(
        C::CLIENT_CONNECT_ATTRS,
        login.connect_attrs.is_some() || login.forward.is_some(),
    );
    caps & (greeting.capabilities | auth)
}

/// Encode a HandshakeResponse41 for the backend.
fn handshake_response(
    login: &Login,
    caps: CapabilityFlags,
    reply: &[u8],
    attrs: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + login.user.len());
    out.put_u32_le(caps.bits());
    out.put_u32_le(login.max_packet);
    out.put_u8(login.collation);
    out.put_slice(&[0; 19]);
    let ext = if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        0
    } else {
        (login.mariadb_capabilities & handshake::supported_mariadb_capabilities()).bits()
    };
    out.put_u32_le(ext);
    out.put_slice(login.user.as_bytes());
    out.put_u8(0);
    put_lenenc(&mut out, reply.len() as u64);
    out.put_slice(reply);
    if let Some(db) = &login.database {
        out.put_slice(db.as_bytes());
        out.put_u8(0);
    }
    out.put_slice(NATIVE_PASSWORD.as_bytes());
    out.put_u8(0);
    if let Some(attrs) = attrs {
        out.put_slice(attrs);
    }
    out
}

/// Encode a COM_CHANGE_USER for the backend, answering its original scramble.
pub fn change_user_payload(login: &Login, scramble: &[u8]) -> Vec<u8> {
    let reply = login.reply_to(scramble);
    let mut out = Vec::with_capacity(64 + login.user.len());
    out.put_u8(crate::protocol::command::COM_CHANGE_USER);
    out.put_slice(login.user.as_bytes());
    out.put_u8(0);
    out.put_u8(reply.len() as u8);
    out.put_slice(&reply);
    if let Some(db) = &login.database {
        out.put_slice(db.as_bytes());
    }
    out.put_u8(0);
    out.put_u16_le(login.collation as u16);
    out.put_slice(NATIVE_PASSWORD.as_bytes());
    out.put_u8(0);
    if let Some(attrs) = &login.connect_attrs {
        out.put_slice(attrs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::{new_scramble, recover_stage1, stage2_of_password};

    #[test]
    fn secrets_never_print() {
        let stage2 = stage2_of_password(b"hunter2");
        let scramble = new_scramble();
        let reply = mysql_common::auth::plugins::mysql_native_password::scramble_native(
            &scramble, b"hunter2",
        )
        .unwrap();
        let stage1 = recover_stage1(&scramble, &reply, &stage2).unwrap();
        let login = Login {
            user: "u".into(),
            stage1: Some(stage1.clone()),
            database: None,
            capabilities: CapabilityFlags::empty(),
            mariadb_capabilities: MariadbCapabilities::empty(),
            collation: 45,
            max_packet: 1 << 20,
            connect_attrs: None,
            identity: Identity::trusted(),
            forward: None,
        };
        let shown = format!("{login:?} {stage1:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        // SHA1(password) appears neither as bytes nor as hex.
        let secret: [u8; 20] = sha1::Digest::finalize(sha1::Digest::chain_update(
            sha1::Sha1::default(),
            b"hunter2",
        ))
        .into();
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let bytes = format!("{:?}", &secret[..4]);
        assert!(!shown.contains(&hex) && !shown.contains(bytes.trim_end_matches(']')));
        let mut settings = crate::proxy::ProxySettings::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:3306".into(),
            "svc",
        );
        settings.service_password = "sekrit-pw".into();
        assert!(!format!("{settings:?}").contains("sekrit"));
    }
}
