//! Backend connections: a TCP connection to a MariaDB server, logged in as the client's
//! own user with the `SHA1(password)` recovered during the client's handshake.
//!
//! The login reuses the client's negotiated capabilities, collation, max packet size and
//! connect attributes, so every packet the backend sends afterwards has exactly the
//! shape the client expects and can be forwarded unchanged.

use std::time::Duration;

use bytes::BufMut;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::protocol::handshake::{self, ServerGreeting, NATIVE_PASSWORD};
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
    #[error("protocol error talking to MariaDB: {0}")]
    Proto(#[from] ProtoError),
    #[error("MariaDB sent an unexpected greeting")]
    BadGreeting,
    /// The backend refused the login; the ERR payload is forwarded to the client.
    #[error("MariaDB refused the login")]
    Refused(Packet),
    #[error("MariaDB asked for auth plugin '{0}', which the proxy cannot speak")]
    Plugin(String),
}

/// Everything needed to log into a backend as a client's user.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    /// `SHA1(password)`; `None` for an account with an empty password.
    pub stage1: Option<[u8; 20]>,
    pub database: Option<String>,
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
    pub max_packet: u32,
    pub connect_attrs: Option<Vec<u8>>,
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
            .map(|s| handshake::reply_from_stage1(scramble, &s).to_vec())
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
) -> Result<(PacketConn<BackendStream>, ServerGreeting), BackendError> {
    let stream = BackendStream::connect(addr)
        .await
        .map_err(|source| BackendError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let mut conn = PacketConn::new(stream, max_packet);
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
        let (_conn, greeting) = open(addr, 1 << 20).await?;
        Ok(greeting)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| BackendError::Timeout(addr.to_string()))?
}

/// Open a connection to `addr` and log in as `login.user`.
pub async fn connect(
    addr: &str,
    login: &Login,
    max_packet: usize,
) -> Result<Backend, BackendError> {
    let fut = async {
        let (mut conn, greeting) = open(addr, max_packet).await?;
        let caps = backend_capabilities(login, &greeting);
        let reply = login.reply_to(&greeting.scramble);
        let payload = handshake_response(login, caps, &reply);
        conn.send(1, &payload).await?;
        let ok = finish_auth(&mut conn, login).await?;
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

fn backend_capabilities(login: &Login, greeting: &ServerGreeting) -> CapabilityFlags {
    use CapabilityFlags as C;
    let auth = C::CLIENT_PROTOCOL_41
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
    let mut caps = (login.capabilities & handshake::supported_capabilities()) | auth;
    caps.remove(C::CLIENT_SSL | C::CLIENT_COMPRESS | C::CLIENT_DEPRECATE_EOF);
    caps.set(C::CLIENT_CONNECT_WITH_DB, login.database.is_some());
    caps.set(C::CLIENT_CONNECT_ATTRS, login.connect_attrs.is_some());
    caps & (greeting.capabilities | auth)
}

/// Encode a HandshakeResponse41 for the backend.
fn handshake_response(login: &Login, caps: CapabilityFlags, reply: &[u8]) -> Vec<u8> {
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
    if let Some(attrs) = &login.connect_attrs {
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
