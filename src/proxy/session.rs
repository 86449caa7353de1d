//! One client session: the connection phase, then the command loop.
//!
//! ```text
//!  Greeting ──▶ [SslRequest ──▶ TLS] ──▶ HandshakeResponse ──▶ [AuthSwitch ──▶ reply]
//!     ──▶ verify scramble (accounts) ──▶ backend login as the same user ──▶ OK
//!     ──▶ Command loop: read command ─▶ classify ─▶ forward ─▶ relay reply ─▶ …
//!                              └─ COM_QUIT / client gone / shutdown while idle ─▶ Closed
//! ```
//! The session owns exactly one backend connection for its whole life, so no session
//! state (variables, temporary tables, prepared statements, transactions) can reach
//! another client. Replies are forwarded byte for byte; the [`Scanner`] only finds
//! where each ends and what the server status became.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use mysql_common::constants::CapabilityFlags;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::auth::Verdict;
use super::backend::{self, Backend, BackendError, Login};
use super::registry::{self, Entry, RegistryGuard};
use super::Shared;
use crate::protocol::command::*;
use crate::protocol::handshake::{self, ChangeUserRequest, ClientHello, NATIVE_PASSWORD};
use crate::protocol::packet::Reader;
use crate::protocol::response::{Expect, Outcome, Scanner, Step};
use crate::protocol::{Packet, PacketConn, ProtoError, ServerError};
use crate::sql::{self, Classification};

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client: {0}")]
    Client(ProtoError),
    #[error("backend: {0}")]
    Backend(ProtoError),
    #[error("backend login: {0}")]
    Login(#[from] BackendError),
    #[error("handshake: {0}")]
    Handshake(ServerError),
}

/// What the command loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Connection-phase state that the command phase still needs.
pub struct Authenticated {
    pub id: u32,
    pub scramble: [u8; 20],
    pub login: Login,
    pub peer: SocketAddr,
}

/// An established session.
pub struct Session<S> {
    client: PacketConn<S>,
    backend: Backend,
    auth: Authenticated,
    /// Server status flags from the last OK/EOF (transaction and autocommit state).
    status: u16,
    /// Classification of each prepared statement, by statement id.
    stmts: HashMap<u32, Classification>,
    shared: Arc<Shared>,
    registration: RegistryGuard,
}

/// Run the rest of the connection phase (after the greeting and the optional TLS
/// upgrade) and return a session ready for commands.
pub async fn establish<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: PacketConn<S>,
    hello: Packet,
    id: u32,
    scramble: [u8; 20],
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Session<S>, SessionError> {
    let Some(parsed) = ClientHello::parse(&hello.payload)
        .filter(|h| h.capabilities.contains(CapabilityFlags::CLIENT_PROTOCOL_41))
    else {
        return Err(refuse(&mut client, hello.last_seq, ServerError::bad_handshake()).await);
    };
    let (stage1, seq) = authenticate(
        &mut client,
        &shared,
        Credentials {
            user: &parsed.user,
            plugin: parsed.auth_plugin.as_deref(),
            reply: &parsed.auth_response,
            last_seq: hello.last_seq,
        },
        &scramble,
        peer,
    )
    .await?;
    let login = Login {
        user: parsed.user.clone(),
        stage1,
        database: parsed.database.clone(),
        capabilities: parsed.capabilities & shared.capabilities,
        mariadb_capabilities: parsed.mariadb_capabilities & shared.mariadb_capabilities,
        collation: parsed.collation,
        max_packet: parsed.max_packet,
        connect_attrs: parsed.connect_attrs.clone(),
    };
    let backend = match backend::connect(&shared.backend_addr, &login, shared.max_packet).await {
        Ok(b) => b,
        Err(BackendError::Refused(err)) => {
            client.send(seq.wrapping_add(1), &err.payload).await.ok();
            return Err(BackendError::Refused(err).into());
        }
        Err(e) => {
            let se = ServerError::backend_unavailable(&e.to_string());
            client.send(seq.wrapping_add(1), &se.payload()).await.ok();
            return Err(e.into());
        }
    };
    client
        .send(seq.wrapping_add(1), &backend.login_ok.payload)
        .await
        .map_err(SessionError::Client)?;
    let status = ok_status(&backend.login_ok.payload);
    let entry = Entry {
        user: login.user.clone(),
        backend_thread: backend.thread_id,
    };
    let registration = shared.registry.register(id, entry);
    tracing::debug!(id, user = %login.user, %peer, backend_thread = backend.thread_id, "session established");
    Ok(Session {
        client,
        backend,
        auth: Authenticated {
            id,
            scramble,
            login,
            peer,
        },
        status,
        stmts: HashMap::new(),
        shared,
        registration,
    })
}

/// What a client sent to authenticate (in its handshake response or COM_CHANGE_USER).
struct Credentials<'a> {
    user: &'a str,
    plugin: Option<&'a str>,
    reply: &'a [u8],
    /// Sequence id of the client's packet.
    last_seq: u8,
}

/// Check a client's credentials against the account table, first switching the client
/// to mysql_native_password if it answered with another plugin. Returns `SHA1(password)`
/// (`None` for an empty password) and the client's last sequence id; on refusal the ERR
/// has been sent and the error is `SessionError::Handshake`.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketConn<S>,
    shared: &Shared,
    creds: Credentials<'_>,
    scramble: &[u8; 20],
    peer: SocketAddr,
) -> Result<(Option<[u8; 20]>, u8), SessionError> {
    let (reply, seq) = if creds.plugin.is_none_or(|p| p == NATIVE_PASSWORD) {
        (creds.reply.to_vec(), creds.last_seq)
    } else {
        let seq = creds.last_seq.wrapping_add(1);
        client
            .send(seq, &handshake::auth_switch_payload(scramble))
            .await
            .map_err(SessionError::Client)?;
        let answer = client.read_packet().await.map_err(SessionError::Client)?;
        (answer.payload.to_vec(), answer.last_seq)
    };
    let refusal = match shared
        .accounts
        .verify(creds.user, peer.ip(), scramble, &reply)
        .await
    {
        Verdict::Ok(stage1) => return Ok((stage1, seq)),
        Verdict::Denied => {
            ServerError::access_denied(creds.user, &client_host(peer), !reply.is_empty())
        }
        Verdict::Unsupported(p) => ServerError::plugin_unsupported(&p),
    };
    Err(refuse(client, seq, refusal).await)
}

/// Send an ERR during the connection phase and produce the matching error.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketConn<S>,
    last_seq: u8,
    err: ServerError,
) -> SessionError {
    client
        .send(last_seq.wrapping_add(1), &err.payload())
        .await
        .ok();
    SessionError::Handshake(err)
}

/// How MariaDB names a client host in messages (`localhost` for loopback, as name
/// resolution would give).
fn client_host(peer: SocketAddr) -> String {
    if peer.ip().is_loopback() {
        "localhost".into()
    } else {
        peer.ip().to_string()
    }
}

fn ok_status(payload: &[u8]) -> u16 {
    let mut r = Reader::new(payload.get(1..).unwrap_or_default());
    r.lenenc();
    r.lenenc();
    r.u16().unwrap_or(0)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Serve commands until the client leaves, the backend fails, or `shutdown` is
    /// raised while the session is between statements.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), SessionError> {
        // One waiter for the whole session, not one per command.
        let stop = shutdown.wait_for(|stop| *stop);
        tokio::pin!(stop);
        loop {
            let packet = tokio::select! {
                biased;
                _ = &mut stop => return Ok(()),
                p = self.client.read_packet() => p,
            };
            let packet = match packet {
                Ok(p) => p,
                Err(e) => return self.client_failed(e).await,
            };
            if packet.seq != 0 {
                self.reply_err(packet.last_seq, ServerError::out_of_order())
                    .await
                    .ok();
                return Err(SessionError::Client(ProtoError::OutOfOrder {
                    expected: 0,
                    got: packet.seq,
                }));
            }
            if self.command(packet).await? == Flow::Close {
                return Ok(());
            }
        }
    }

    /// Whether a transaction is open on the backend (from the last server status);
    /// routing keeps such a session on one backend.
    fn in_transaction(&self) -> bool {
        self.status & crate::protocol::response::SERVER_STATUS_IN_TRANS != 0
            || self.status & crate::protocol::response::SERVER_STATUS_AUTOCOMMIT == 0
    }

    async fn client_failed(&mut self, e: ProtoError) -> Result<(), SessionError> {
        let reply = match &e {
            _ if e.is_disconnect() => return Ok(()),
            ProtoError::TooLarge { .. } => ServerError::packet_too_large(),
            ProtoError::OutOfOrder { .. } => ServerError::out_of_order(),
            _ => ServerError::malformed("unreadable packet"),
        };
        self.reply_err(0, reply).await.ok();
        Err(SessionError::Client(e))
    }

    async fn command(&mut self, p: Packet) -> Result<Flow, SessionError> {
        let Some(cmd) = p.first() else {
            self.reply_err(p.last_seq, ServerError::malformed("empty command"))
                .await?;
            return Ok(Flow::Close);
        };
        match cmd {
            COM_QUIT => Ok(Flow::Close),
            COM_QUERY => self.query(p).await,
            COM_STMT_PREPARE => self.prepare(p).await,
            COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => {
                self.forward(&p, Some(Expect::Execute)).await
            }
            COM_STMT_FETCH => self.forward(&p, Some(Expect::Fetch)).await,
            COM_STMT_SEND_LONG_DATA => self.forward(&p, None).await,
            COM_STMT_CLOSE => {
                if let Some(id) = Reader::new(&p.payload[1..]).u32() {
                    self.stmts.remove(&id);
                }
                self.forward(&p, None).await
            }
            COM_FIELD_LIST => self.forward(&p, Some(Expect::FieldList)).await,
            COM_PROCESS_INFO => self.forward(&p, Some(Expect::Query)).await,
            COM_RESET_CONNECTION => {
                self.stmts.clear();
                self.forward(&p, Some(Expect::Single)).await
            }
            COM_INIT_DB | COM_PING | COM_STMT_RESET | COM_SET_OPTION | COM_STATISTICS
            | COM_DEBUG | COM_REFRESH | COM_SHUTDOWN | COM_CREATE_DB | COM_DROP_DB => {
                self.forward(&p, Some(Expect::Single)).await
            }
            COM_CHANGE_USER => self.change_user(p).await,
            COM_PROCESS_KILL => {
                let id = Reader::new(&p.payload[1..]).u32().unwrap_or(0);
                self.kill(
                    &p,
                    registry::Kill {
                        query_only: false,
                        id: id as u64,
                    },
                )
                .await
            }
            _ => {
                self.reply_err(p.last_seq, ServerError::unknown_command())
                    .await?;
                Ok(Flow::Continue)
            }
        }
    }

    async fn query(&mut self, p: Packet) -> Result<Flow, SessionError> {
        let text = String::from_utf8_lossy(&p.payload[1..]);
        if let Some(kill) = registry::parse_kill(&text) {
            return self.kill(&p, kill).await;
        }
        let class = sql::classify(&text);
        tracing::trace!(id = self.auth.id, class = %class, in_txn = self.in_transaction(), "query");
        self.forward(&p, Some(Expect::Query)).await
    }

    async fn prepare(&mut self, p: Packet) -> Result<Flow, SessionError> {
        let class = sql::classify(&String::from_utf8_lossy(&p.payload[1..]));
        self.send_backend(&p.raw).await?;
        let outcome = self.relay(Expect::Prepare).await?;
        if let Some(id) = outcome.stmt_id {
            self.stmts.insert(id, class);
        }
        Ok(Flow::Continue)
    }

    /// Send a client command to the backend unchanged and relay its reply, if any.
    async fn forward(&mut self, p: &Packet, expect: Option<Expect>) -> Result<Flow, SessionError> {
        self.send_backend(&p.raw).await?;
        if let Some(expect) = expect {
            self.relay(expect).await?;
        }
        Ok(Flow::Continue)
    }

    async fn send_backend(&mut self, raw: &[u8]) -> Result<(), SessionError> {
        if let Err(e) = self.backend.conn.write_raw(raw).await {
            let lost = ServerError::new(2013, "HY000", "Lost connection to the local MariaDB");
            self.reply_err(0, lost).await.ok();
            return Err(SessionError::Backend(e));
        }
        Ok(())
    }

    /// Stream the backend's reply to the client until the scanner says it is complete.
    async fn relay(&mut self, expect: Expect) -> Result<Outcome, SessionError> {
        let mut scanner = Scanner::new(expect);
        let mut forwarded = false;
        loop {
            let buf = self.backend.conn.read_buffer();
            let (n, step) = scanner.scan(buf).map_err(SessionError::Backend)?;
            if n > 0 {
                let chunk = buf.split_to(n);
                self.client
                    .write_raw(&chunk)
                    .await
                    .map_err(SessionError::Client)?;
                forwarded = true;
            }
            match step {
                Step::Done => break,
                Step::LocalInfile => {
                    self.client.flush().await.map_err(SessionError::Client)?;
                    self.relay_infile().await?;
                }
                Step::NeedMore => match self.backend.conn.fill().await {
                    Ok(true) => {}
                    Ok(false) | Err(_) if !forwarded => {
                        let lost = ServerError::new(
                            2013,
                            "HY000",
                            "Lost connection to the local MariaDB during query",
                        );
                        self.reply_err(0, lost).await.ok();
                        return Err(SessionError::Backend(ProtoError::Closed));
                    }
                    Ok(false) => return Err(SessionError::Backend(ProtoError::Closed)),
                    Err(e) => return Err(SessionError::Backend(e)),
                },
            }
        }
        self.client.flush().await.map_err(SessionError::Client)?;
        if let Some(status) = scanner.outcome.status {
            self.status = status;
        }
        Ok(scanner.outcome)
    }

    /// Pass the client's LOCAL INFILE contents to the backend, chunk by chunk, up to
    /// and including the empty packet that ends them.
    async fn relay_infile(&mut self) -> Result<(), SessionError> {
        loop {
            let chunk = self
                .client
                .read_chunk()
                .await
                .map_err(SessionError::Client)?;
            let last = chunk.len() == crate::protocol::packet::HEADER;
            self.backend
                .conn
                .write_raw(&chunk)
                .await
                .map_err(SessionError::Backend)?;
            if last {
                return Ok(());
            }
        }
    }

    /// Send a proxy-generated ERR following the client's packet `last_seq`.
    async fn reply_err(&mut self, last_seq: u8, err: ServerError) -> Result<(), SessionError> {
        tracing::debug!(id = self.auth.id, error = %err, "error reply");
        self.client
            .send(last_seq.wrapping_add(1), &err.payload())
            .await
            .map_err(SessionError::Client)?;
        Ok(())
    }

    /// KILL naming a proxy connection id: rewrite it to the backend thread id.
    async fn kill(&mut self, p: &Packet, kill: registry::Kill) -> Result<Flow, SessionError> {
        let Some(target) = self.shared.registry.lookup(kill.id) else {
            self.reply_err(p.last_seq, ServerError::unknown_thread(kill.id))
                .await?;
            return Ok(Flow::Continue);
        };
        let verb = if kill.query_only {
            "QUERY"
        } else {
            "CONNECTION"
        };
        let sql = format!("KILL {verb} {}", target.backend_thread);
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(COM_QUERY);
        payload.extend_from_slice(sql.as_bytes());
        let mut raw = bytes::BytesMut::new();
        crate::protocol::packet::encode_packet(&mut raw, 0, &payload);
        self.send_backend(&raw).await?;
        let outcome = self.relay(Expect::Query).await;
        // Killing one's own connection ends it, as on MariaDB.
        if kill.id == self.auth.id as u64 && !kill.query_only {
            return Ok(Flow::Close);
        }
        outcome?;
        Ok(Flow::Continue)
    }

    /// COM_CHANGE_USER: verify the new credentials against the session's scramble, then
    /// switch the backend connection to that user.
    async fn change_user(&mut self, p: Packet) -> Result<Flow, SessionError> {
        let Some(req) = ChangeUserRequest::parse(&p.payload, self.auth.login.capabilities) else {
            self.reply_err(p.last_seq, ServerError::malformed("COM_CHANGE_USER"))
                .await?;
            return Ok(Flow::Close);
        };
        let creds = Credentials {
            user: &req.user,
            plugin: req.plugin.as_deref(),
            reply: &req.auth,
            last_seq: p.last_seq,
        };
        let (stage1, seq) = match authenticate(
            &mut self.client,
            &self.shared,
            creds,
            &self.auth.scramble,
            self.auth.peer,
        )
        .await
        {
            Ok(ok) => ok,
            // Refused: MariaDB closes the connection after a failed COM_CHANGE_USER too.
            Err(SessionError::Handshake(_)) => return Ok(Flow::Close),
            Err(e) => return Err(e),
        };
        let mut login = self.auth.login.clone();
        login.user = req.user;
        login.stage1 = stage1;
        login.database = req.database;
        if let Some(c) = req.collation {
            login.collation = c;
        }
        if req.connect_attrs.is_some() {
            login.connect_attrs = req.connect_attrs;
        }
        let payload = backend::change_user_payload(&login, &self.backend.scramble);
        self.backend
            .conn
            .send(0, &payload)
            .await
            .map_err(SessionError::Backend)?;
        match backend::finish_auth(&mut self.backend.conn, &login).await {
            Ok(ok) => {
                self.client
                    .send(seq.wrapping_add(1), &ok.payload)
                    .await
                    .map_err(SessionError::Client)?;
                self.status = ok_status(&ok.payload);
                self.stmts.clear();
                let entry = Entry {
                    user: login.user.clone(),
                    backend_thread: self.backend.thread_id,
                };
                self.registration.update(entry);
                self.auth.login = login;
                Ok(Flow::Continue)
            }
            Err(BackendError::Refused(err)) => {
                self.client
                    .send(seq.wrapping_add(1), &err.payload)
                    .await
                    .map_err(SessionError::Client)?;
                Ok(Flow::Close)
            }
            Err(e) => Err(e.into()),
        }
    }
}
