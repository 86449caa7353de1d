//! One client session: the connection phase, then the command loop.
//!
//! ```text
//!  [host check: ERR 1130] ──▶ Greeting ──▶ [SslRequest ──▶ TLS] ──▶ HandshakeResponse
//!     ──▶ [AuthSwitch ──▶ reply] ──▶ verify scramble against MariaDB's account choice
//!     ──▶ backend login as that account (PROXY header, or CURRENT_USER() check) ──▶ OK
//!     ──▶ Command loop: read command ─▶ classify ─▶ forward ─▶ relay reply ─▶ …
//!            ├─ COM_QUIT (passed on) / client gone / shutdown while idle ─▶ Closed
//!            └─ backend closes while idle (KILL, wait_timeout, restart) ─▶ Closed
//! ```
//! Before authentication the client may send packets of at most
//! [`super::server::PRE_AUTH_MAX_PACKET`] bytes; after it, up to `max_allowed_packet`,
//! with large packets drawing on the proxy's shared [`PacketBudget`] and each begun
//! packet bounded by `net_read_timeout`.
//! The session owns exactly one backend connection for its whole life, so no session
//! state (variables, temporary tables, prepared statements, transactions) can reach
//! another client. Replies are forwarded byte for byte; the [`Scanner`] only finds
//! where each ends and what the server status became.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mysql_common::constants::CapabilityFlags;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::acl::{AccountName, ClientHost};
use super::auth::Verdict;
use super::backend::{self, Backend, BackendError, Identity, Login};
use super::registry::{Entry, RegistryGuard};
use super::sequencer::Internal;
use super::Shared;
use crate::protocol::command::*;
use crate::protocol::handshake::{self, ChangeUserRequest, ClientHello, Stage1, NATIVE_PASSWORD};
use crate::protocol::packet::{Reader, StreamTracker};
use crate::protocol::params::ParamValue;
use crate::protocol::response::{Expect, Outcome, Scanner, Step};
use crate::protocol::{Packet, PacketConn, ProtoError, ServerError};
use crate::sql::{self, Classification, KillRequest, NameUse};

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
    /// One of the proxy's own statements failed in a way that leaves the session
    /// unusable.
    #[error("{0}")]
    Internal(String),
}

/// What the command loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
}

/// Where a client connects from, as the proxy and MariaDB see it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub peer: SocketAddr,
    /// The proxy's address the client connected to.
    pub local: SocketAddr,
    /// How MariaDB would see the client (address and resolved name).
    pub client: ClientHost,
}

/// What the proxy keeps of a prepared statement.
pub struct Prepared {
    pub class: Classification,
    pub sql: String,
    pub params: usize,
    /// Parameter types of the last execution (clients send them only the first time).
    pub types: Option<Vec<(u8, u8)>>,
    /// COM_STMT_SEND_LONG_DATA bytes by parameter, until the next execution.
    pub long_data: std::collections::BTreeMap<u16, Vec<u8>>,
    /// A prepared KILL: the proxy maps and runs it at each execution, and the backend
    /// holds a stand-in with the same parameters (`DO ?` or `DO 0`) that never runs.
    pub kill: Option<sql::Kill>,
    /// Where the statement is prepared (see `stmt_route`).
    pub route: super::stmt_route::StmtRoute,
}

/// The value bound to a prepared KILL's `?`.
enum Bound {
    /// An integer as text, or `NULL`: mapped as it is.
    Value(String),
    /// SQL for the backend to evaluate: an `EXECUTE … USING` argument, or a
    /// binary-protocol value written as a literal.
    Expr(String),
}

/// MariaDB's ER_SUBQUERIES_NOT_SUPPORTED: `KILL (SELECT …)`, `KILL f()`.
const ER_SUBQUERIES_NOT_SUPPORTED: u16 = 1970;

/// What a text-protocol prepared KILL is on the backend: a statement that fails if it is
/// ever executed there (from a stored procedure, where the proxy cannot map it). It has
/// no parameter (SIGNAL takes none), so an EXECUTE with a value fails with MariaDB's
/// 1210 (wrong number of arguments) instead, a failure all the same.
const TEXT_KILL_STAND_IN: &str = "SIGNAL SQLSTATE ''42000'' SET MYSQL_ERRNO = 1235, \
     MESSAGE_TEXT = ''WolfScale runs a prepared KILL only as an EXECUTE statement of its own''";

/// Connection-phase state that the command phase still needs.
pub struct Authenticated {
    pub id: u32,
    pub scramble: [u8; 20],
    pub login: Login,
    pub origin: Origin,
    /// The account MariaDB gives this client, and the session runs as.
    pub account: AccountName,
}

/// An established session.
pub struct Session<S> {
    pub(super) client: PacketConn<S>,
    pub(super) backend: Backend,
    pub(super) auth: Authenticated,
    /// Server status flags from the last OK/EOF (transaction and autocommit state).
    pub(super) status: u16,
    /// Each prepared statement, by statement id.
    pub(super) stmts: HashMap<u32, Prepared>,
    /// The last statement prepared (MariaDB's statement id 0xFFFFFFFF).
    pub(super) last_prepared: Option<u32>,
    /// While a statement prepared under a proxy id runs under the local MariaDB's id:
    /// (that id, the client's id), so that lookups by the readdressed packet find it.
    exec_alias: Option<(u32, u32)>,
    /// Text-protocol prepared statements (`PREPARE name FROM 'KILL …'`) that are KILLs,
    /// by lower-cased name; the backend holds a stand-in under each name.
    pub(super) text_kills: HashMap<String, sql::Kill>,
    pub(super) shared: Arc<Shared>,
    pub(super) registration: RegistryGuard,
    /// The transaction as the sequencer sees it (cluster nodes only).
    pub(super) txn: super::sequencer::TxnState,
    /// The session variables a replay needs; `None` after a statement that may have
    /// changed them.
    pub(super) vars: Option<crate::apply::entry::SessionVars>,
    /// The default database when `vars` was read.
    pub(super) db: Option<String>,
    /// `@@tx_isolation` when `vars` was read.
    pub(super) isolation: String,
    /// End the session once the current reply is sent: its backend connection holds a
    /// prepared transaction whose fate the applier decides, which it can only finish by
    /// xid once this connection is gone.
    pub(super) close_after_reply: bool,
    /// The session was told once that its write transactions run at REPEATABLE READ.
    pub(super) isolation_warned: bool,
    /// What `ROW_COUNT()` would say after this session's last autocommit write on a
    /// cluster node (the proxy's XA statements after it reset MariaDB's own).
    pub(super) row_count: Option<i64>,
    /// This session's temporary tables on a cluster node, as `(db, table)`: writes to
    /// them stay local, writes that read them are refused (see the sequencer).
    pub(super) temp_tables: std::collections::HashSet<(String, String)>,
    /// Where this session's statements run (cluster nodes; see [`super::router`]).
    pub(super) route: super::router::RouteState,
}

/// Run the rest of the connection phase (after the greeting and the optional TLS
/// upgrade) and return a session ready for commands.
pub async fn establish<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: PacketConn<S>,
    hello: Packet,
    id: u32,
    scramble: [u8; 20],
    origin: Origin,
    shared: Arc<Shared>,
) -> Result<Session<S>, SessionError> {
    let Some(parsed) = ClientHello::parse(&hello.payload)
        .filter(|h| h.capabilities.contains(CapabilityFlags::CLIENT_PROTOCOL_41))
    else {
        return Err(refuse(&mut client, hello.last_seq, ServerError::bad_handshake()).await);
    };
    let (origin, forwarded) = match forwarding(&shared, &scramble, &parsed, origin).await {
        Ok(o) => o,
        Err(refusal) => return Err(refuse(&mut client, hello.last_seq, refusal).await),
    };
    let creds = Credentials {
        user: &parsed.user,
        plugin: parsed.auth_plugin.as_deref(),
        reply: &parsed.auth_response,
        last_seq: hello.last_seq,
    };
    let (account, stage1, seq) =
        authenticate(&mut client, &shared, creds, &scramble, &origin.client).await?;
    let mut login = Login {
        user: parsed.user.clone(),
        stage1,
        database: parsed.database.clone(),
        capabilities: parsed.capabilities & shared.capabilities,
        mariadb_capabilities: parsed.mariadb_capabilities & shared.mariadb_capabilities,
        collation: parsed.collation,
        max_packet: parsed.max_packet,
        connect_attrs: parsed.connect_attrs.clone().map(|raw| {
            if forwarded {
                // The proof was for this proxy; MariaDB has no use for it.
                let mut pairs = super::router::attr_pairs(&raw);
                pairs.retain(|(k, _)| !k.starts_with("_wolfscale_"));
                super::router::encode_attrs(&pairs)
            } else {
                raw
            }
        }),
        identity: Identity::trusted(),
        forward: None,
    };
    let standalone = shared.replicator.get().filter(|r| r.standalone()).cloned();
    let mut read_member = None;
    let login_result = match &standalone {
        Some(rep) => match member_backend(rep.as_ref(), &shared, &mut login, &origin).await {
            Ok((backend, member)) => {
                read_member = Some(member);
                Ok(backend)
            }
            Err(e) => Err(e),
        },
        None => login_backend(&shared, &mut login, &account, &origin).await,
    };
    let backend = match login_result {
        Ok(b) => b,
        Err(e) => {
            let reply = login_refusal(&e, &parsed.user, &origin.client, &parsed.auth_response);
            client.send(seq.wrapping_add(1), &reply).await.ok();
            return Err(e.into());
        }
    };
    client
        .send(seq.wrapping_add(1), &backend.login_ok.payload)
        .await
        .map_err(SessionError::Client)?;
    client.set_max_packet(shared.max_packet);
    client.set_budget(shared.budget.clone());
    client.set_read_timeout(shared.net_read_timeout);
    let status = ok_status(&backend.login_ok.payload);
    let entry = Entry {
        user: login.user.clone(),
        backend_thread: backend.thread_id,
        running_on_leader: None,
    };
    let registration = shared.registry.register(id, entry);
    tracing::debug!(id, %account, peer = %origin.peer, backend_thread = backend.thread_id, "session established");
    Ok(Session {
        client,
        backend,
        auth: Authenticated {
            id,
            scramble,
            login,
            origin,
            account,
        },
        status,
        stmts: HashMap::new(),
        shared,
        registration,
        last_prepared: None,
        exec_alias: None,
        text_kills: HashMap::new(),
        txn: Default::default(),
        vars: None,
        db: None,
        isolation: String::new(),
        close_after_reply: false,
        isolation_warned: false,
        row_count: None,
        temp_tables: Default::default(),
        route: super::router::RouteState {
            forwarded,
            read_member,
            ..Default::default()
        },
    })
}

/// Where a login really comes from. A follower's router proves the address of the
/// client it logs in for (see [`super::router`]); a wrong proof is refused. A member
/// of the cluster skips the host check before the greeting, so a login from a member's
/// address that is not forwarded is checked here instead.
async fn forwarding(
    shared: &Shared,
    scramble: &[u8; 20],
    hello: &ClientHello,
    origin: Origin,
) -> Result<(Origin, bool), ServerError> {
    let Some(rep) = shared.replicator.get() else {
        return Ok((origin, false));
    };
    let attrs = hello
        .connect_attrs
        .as_deref()
        .map(super::router::attr_pairs)
        .unwrap_or_default();
    match super::router::forwarded_origin(Some(rep.secret()), scramble, &attrs) {
        None => {
            if rep.is_member_ip(origin.peer.ip())
                && !shared.accounts.host_allowed(&origin.client).await
            {
                return Err(ServerError::host_not_allowed(&origin.client.shown()));
            }
            Ok((origin, false))
        }
        Some(Ok((client, local))) => {
            let name = if shared.accounts.table().skip_name_resolve {
                None
            } else {
                shared.hosts.name_of(client.ip()).await
            };
            let host = ClientHost::new(client.ip(), name);
            if !shared.accounts.host_allowed(&host).await {
                return Err(ServerError::host_not_allowed(&host.shown()));
            }
            tracing::debug!(via = %origin.peer, %client, "forwarded session");
            Ok((
                Origin {
                    peer: client,
                    local,
                    client: host,
                },
                true,
            ))
        }
        Some(Err(why)) => {
            tracing::warn!(peer = %origin.peer, user = %hello.user, why, "refused a login that claims to come through another WolfScale node");
            Err(ServerError::access_denied(
                &hello.user,
                &origin.client.shown(),
                !hello.auth_response.is_empty(),
            ))
        }
    }
}

/// How a backend login must prove that it runs as `account` (see [`Identity`]).
fn identity_for(shared: &Shared, account: &AccountName, origin: &Origin) -> Identity {
    let proxied = shared.proxy_protocol.load(Ordering::Relaxed);
    // Over the socket with skip_name_resolve, MariaDB keeps calling the client
    // `localhost` despite the header: check the account as well.
    let header_is_enough =
        !shared.backend_addr.starts_with('/') || !shared.accounts.table().skip_name_resolve;
    Identity {
        proxy_header: proxied.then_some((origin.peer, origin.local)),
        verify: (!proxied || !header_is_enough).then(|| (account.clone(), origin.peer.ip())),
    }
}

/// Log into the local MariaDB as `account`. A backend that stopped taking PROXY headers
/// since start is noticed here, and the login retried with the account check.
async fn login_backend(
    shared: &Shared,
    login: &mut Login,
    account: &AccountName,
    origin: &Origin,
) -> Result<Backend, BackendError> {
    login.identity = identity_for(shared, account, origin);
    let first = backend::connect(&shared.backend_addr, login, shared.max_packet).await;
    let maybe_refused = match (&first, &login.identity) {
        (Err(BackendError::Refused(err)), _) => is_proxy_header_refusal(&err.payload),
        // MariaDB answers a header it does not accept with ERR 1130 and closes at once;
        // the reset that our handshake response provokes can overtake the ERR.
        (Err(BackendError::Proto(ProtoError::Io(_))), id) if id.proxy_header.is_some() => {
            let opts = shared.accounts.service_opts();
            !matches!(
                super::server::proxy_protocol_allowed(&opts, &shared.backend_addr).await,
                Ok((true, _, _))
            )
        }
        _ => false,
    };
    if !maybe_refused {
        return first;
    }
    tracing::warn!(
        "MariaDB no longer accepts PROXY protocol headers from this proxy; checking CURRENT_USER() instead"
    );
    shared.proxy_protocol.store(false, Ordering::Relaxed);
    login.identity = identity_for(shared, account, origin);
    backend::connect(&shared.backend_addr, login, shared.max_packet).await
}

/// On a standalone proxy: log into the proxy of a member the session may read from,
/// as the client's account, proving the client's addresses with the cluster secret as
/// a follower's link does (the member checks the account against them). A member that
/// cannot be reached (it may have just died) is passed over for the next one; a
/// refusal is the client's answer. Returns the backend and the member's id.
async fn member_backend(
    rep: &dyn super::replicate::Replicator,
    shared: &Shared,
    login: &mut Login,
    origin: &Origin,
) -> Result<(Backend, String), BackendError> {
    login.identity = Identity::trusted();
    login.forward = Some(super::backend::Forward {
        secret: rep.secret().to_vec(),
        client: origin.peer,
        local: origin.local,
    });
    let mut last = BackendError::Unavailable(
        "no member of the cluster is reachable and healthy to read from".into(),
    );
    for target in rep.read_targets() {
        match backend::connect(&target.proxy_addr, login, shared.max_packet).await {
            Ok(b) => {
                tracing::debug!(member = %target.id, "the session reads from this member");
                return Ok((b, target.id));
            }
            Err(e @ BackendError::Refused(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(member = %target.id, error = %e, "cannot reach a member to read from; trying the next");
                last = e;
            }
        }
    }
    Err(last)
}

fn is_proxy_header_refusal(err: &[u8]) -> bool {
    err.get(1..3) == Some(&1130u16.to_le_bytes()[..])
        && String::from_utf8_lossy(err).contains("Proxy header")
}

/// The ERR payload a client gets when its backend login fails.
fn login_refusal(e: &BackendError, user: &str, client: &ClientHost, reply: &[u8]) -> Vec<u8> {
    let denied = || ServerError::access_denied(user, &client.shown(), !reply.is_empty()).payload();
    match e {
        // MariaDB names the host it saw: the proxy's own, unless the PROXY header told
        // it the client's. Either way the client must see its own host, as directly.
        BackendError::Refused(err) if err.payload.get(1..3) == Some(&1045u16.to_le_bytes()[..]) => {
            denied()
        }
        BackendError::Refused(err) => err.payload.to_vec(),
        BackendError::WrongAccount { .. } => {
            tracing::warn!(error = %e, "session refused");
            denied()
        }
        other => ServerError::backend_unavailable(&other.to_string()).payload(),
    }
}

/// What a client sent to authenticate (in its handshake response or COM_CHANGE_USER).
struct Credentials<'a> {
    user: &'a str,
    plugin: Option<&'a str>,
    reply: &'a [u8],
    /// Sequence id of the client's packet.
    last_seq: u8,
}

/// Check a client's credentials against the account MariaDB would choose, first
/// switching the client to mysql_native_password if it answered with another plugin.
/// Returns the account, `SHA1(password)` (`None` for an empty password) and the client's
/// last sequence id; on refusal the ERR has been sent and the error is
/// `SessionError::Handshake`.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketConn<S>,
    shared: &Shared,
    creds: Credentials<'_>,
    scramble: &[u8; 20],
    host: &ClientHost,
) -> Result<(AccountName, Option<Stage1>, u8), SessionError> {
    match check_credentials(client, shared, creds, scramble, host).await? {
        Ok(ok) => Ok(ok),
        Err((refusal, seq)) => Err(refuse(client, seq, refusal).await),
    }
}

/// [`authenticate`] without answering a refusal: `Err((refusal, last_seq))`.
async fn check_credentials<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketConn<S>,
    shared: &Shared,
    creds: Credentials<'_>,
    scramble: &[u8; 20],
    host: &ClientHost,
) -> Result<Result<(AccountName, Option<Stage1>, u8), (ServerError, u8)>, SessionError> {
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
        .verify(creds.user, host, scramble, &reply)
        .await
    {
        Verdict::Ok { account, stage1 } => return Ok(Ok((account, stage1, seq))),
        Verdict::Denied => ServerError::access_denied(creds.user, &host.shown(), !reply.is_empty()),
        Verdict::Unsupported(p) => ServerError::plugin_unsupported(&p),
    };
    Ok(Err((refusal, seq)))
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

/// The payload of the first packet of a collected reply.
fn first_payload(reply: &[u8]) -> &[u8] {
    match crate::protocol::packet::peek_header(reply) {
        Some((len, _)) if reply.len() >= 4 + len => &reply[4..4 + len],
        _ => &[],
    }
}

/// The payload of the ERR that ended a collected reply: its first packet, or one after a
/// result set's column definitions (an error raised while rows are produced, such as
/// "Subquery returns more than 1 row"). No row packet starts with 0xFF.
fn err_payload(reply: &[u8]) -> &[u8] {
    let mut off = 0;
    let mut err: &[u8] = &[];
    while let Some((len, _)) = crate::protocol::packet::peek_header(&reply[off..]) {
        let Some(p) = reply.get(off + 4..off + 4 + len) else {
            break;
        };
        if p.first() == Some(&0xFF) {
            err = p;
        }
        off += 4 + len;
    }
    err
}

/// A [`ServerError`] from an ERR payload.
/// A COM_QUERY of the proxy's own (sequence 0), appended to `raw`.
pub(super) fn encode_query(raw: &mut bytes::BytesMut, sql: &str) {
    let mut payload = Vec::with_capacity(1 + sql.len());
    payload.push(COM_QUERY);
    payload.extend_from_slice(sql.as_bytes());
    crate::protocol::packet::encode_packet(raw, 0, &payload);
}

impl Internal {
    /// The answer to one of the proxy's own statements, from its collected reply.
    fn of(outcome: &Outcome, reply: &[u8]) -> Internal {
        match outcome.error {
            Some(_) => Internal::Err(err_from_payload(err_payload(reply))),
            None => Internal::Ok(first_payload(reply).to_vec()),
        }
    }
}

pub(super) fn err_from_payload(p: &[u8]) -> ServerError {
    let code = p
        .get(1..3)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .unwrap_or(0);
    let (state, msg) = if p.get(3) == Some(&b'#') && p.len() >= 9 {
        (String::from_utf8_lossy(&p[4..9]).into_owned(), &p[9..])
    } else {
        ("HY000".to_string(), p.get(3..).unwrap_or_default())
    };
    let state: &'static str = match state.as_str() {
        "23000" => "23000",
        "42000" => "42000",
        "42S02" => "42S02",
        "XAE07" => "XAE07",
        "XAE04" => "XAE04",
        "40001" => "40001",
        _ => "HY000",
    };
    ServerError::new(code, state, String::from_utf8_lossy(msg).into_owned())
}

/// The first row of a collected text result set, each column as text or NULL.
fn first_row(reply: &[u8]) -> Vec<Option<String>> {
    let mut packets = Vec::new();
    let mut off = 0;
    while let Some((len, _)) = crate::protocol::packet::peek_header(&reply[off..]) {
        if reply.len() < off + 4 + len {
            break;
        }
        packets.push(&reply[off + 4..off + 4 + len]);
        off += 4 + len;
    }
    let Some(count) = packets.first().and_then(|p| Reader::new(p).lenenc()) else {
        return vec![];
    };
    let Some(row) = packets.get(count as usize + 2) else {
        return vec![];
    };
    if row.first() == Some(&0xFE) && row.len() < 9 {
        return vec![];
    }
    let mut r = Reader::new(row);
    (0..count)
        .map(|_| {
            if r.remaining().first() == Some(&0xFB) {
                r.u8();
                None
            } else {
                r.lenenc_bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
            }
        })
        .collect()
}

/// A COM_CHANGE_USER to `login`'s user that MariaDB must refuse: a random reply to its
/// scramble (never an empty one, which an account without a password would take).
fn failing_change_user(login: &Login) -> Vec<u8> {
    let reply: [u8; 20] = rand::random();
    let mut out = vec![COM_CHANGE_USER];
    out.extend_from_slice(login.user.as_bytes());
    out.push(0);
    out.push(reply.len() as u8);
    out.extend_from_slice(&reply);
    if let Some(db) = &login.database {
        out.extend_from_slice(db.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&(login.collation as u16).to_le_bytes());
    out.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    out.push(0);
    if let Some(attrs) = &login.connect_attrs {
        out.extend_from_slice(attrs);
    }
    out
}

/// MariaDB's ER_WRONG_ARGUMENTS for an EXECUTE with the wrong number of values.
fn wrong_arguments() -> ServerError {
    ServerError::new(1210, "HY000", "Incorrect arguments to EXECUTE")
}

/// What a binary-protocol value bound to a prepared KILL's `?` means to MariaDB, which
/// takes its `val_int()`: integers as they are, other values as literals of their type
/// for the backend to convert (`ty` is the parameter's type, `long` its long data).
fn bound_value(value: ParamValue, ty: u8, long: Option<&[u8]>) -> Result<Bound, &'static str> {
    const DECIMAL: u8 = 0;
    const NEWDECIMAL: u8 = 246;
    let text = |b: &[u8]| {
        let s = std::str::from_utf8(b).unwrap_or("");
        let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
        let decimal = matches!(ty, DECIMAL | NEWDECIMAL)
            && digits.bytes().any(|c| c.is_ascii_digit())
            && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
            && digits.bytes().filter(|&c| c == b'.').count() <= 1;
        if decimal {
            // A decimal rounds (1.5 names 2); its text as a string would truncate.
            Bound::Expr(s.to_string())
        } else {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            Bound::Expr(format!("CAST(X'{hex}' AS CHAR)"))
        }
    };
    Ok(match value {
        ParamValue::Null => Bound::Value("NULL".into()),
        ParamValue::Int(v) => Bound::Value(v.to_string()),
        ParamValue::UInt(v) => Bound::Value(v.to_string()),
        ParamValue::Float(f) if f.is_finite() => Bound::Expr(format!("{:e}", f64::from(f))),
        ParamValue::Double(d) if d.is_finite() => Bound::Expr(format!("{d:e}")),
        ParamValue::Bytes(b) => text(&b),
        ParamValue::LongData => text(long.unwrap_or_default()),
        _ => return Err("a date, a time or an infinite number does not name a connection"),
    })
}

pub(super) fn ok_status(payload: &[u8]) -> u16 {
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
            let next = tokio::select! {
                biased;
                _ = &mut stop => None,
                p = self.client.read_packet() => Some(Ok(p)),
                spoke = self.backend.conn.fill() => Some(Err(spoke)),
            };
            let packet = match next {
                None => {
                    self.quit_backend().await;
                    return Ok(());
                }
                Some(Ok(Ok(p))) => p,
                Some(Ok(Err(e))) => return self.client_failed(e).await,
                Some(Err(spoke)) => {
                    // A standalone proxy's session moves to another member when the
                    // one it read from goes away, if nothing tied it there.
                    if self.route.read_member.is_some() && self.move_reads(true).await {
                        continue;
                    }
                    return self.backend_went_away(spoke).await;
                }
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
            if self.command(packet).await? == Flow::Close || self.close_after_reply {
                return Ok(());
            }
        }
    }

    /// Tell MariaDB we are leaving, so it does not count an aborted client.
    async fn quit_backend(&mut self) {
        let mut raw = bytes::BytesMut::new();
        crate::protocol::packet::encode_packet(&mut raw, 0, &[COM_QUIT]);
        self.backend.conn.write_raw(&raw).await.ok();
    }

    /// The backend sent something, or closed, while no command was running: MariaDB
    /// ended the connection (KILL, `wait_timeout`, shutdown). Pass on whatever it said,
    /// then close the client as a direct connection would be closed.
    async fn backend_went_away(
        &mut self,
        spoke: Result<bool, ProtoError>,
    ) -> Result<(), SessionError> {
        let said = self.backend.conn.read_buffer().split();
        if !said.is_empty() {
            self.client.write_raw(&said).await.ok();
        }
        tracing::debug!(id = self.auth.id, result = ?spoke, "backend connection ended while idle");
        Err(SessionError::Backend(match spoke {
            Err(e) => e,
            Ok(_) => ProtoError::Closed,
        }))
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
            ProtoError::ReadTimeout => ServerError::read_timeout(),
            ProtoError::OutOfMemory { .. } => ServerError::out_of_memory(),
            _ => ServerError::malformed("unreadable packet"),
        };
        self.reply_err(0, reply).await.ok();
        Err(SessionError::Client(e))
    }

    pub(super) async fn command(&mut self, p: Packet) -> Result<Flow, SessionError> {
        // A forwarded session's request stamp covers the one command after it, which
        // counts as running until it ends (see `super::requests`).
        self.route.request = self.route.request_next.take();
        let Some(id) = self.route.request else {
            return self.dispatch(p).await;
        };
        let shared = self.shared.clone();
        let _running = shared.in_flight.enter(id);
        self.dispatch(p).await
    }

    async fn dispatch(&mut self, p: Packet) -> Result<Flow, SessionError> {
        let Some(cmd) = p.first() else {
            self.reply_err(p.last_seq, ServerError::malformed("empty command"))
                .await?;
            return Ok(Flow::Close);
        };
        if cmd != COM_QUIT && self.route.read_member.is_some() {
            self.move_reads_if_needed().await;
        }
        match cmd {
            COM_QUIT => {
                self.backend.conn.write_raw(&p.raw).await.ok();
                if let Some(link) = self.route.link.as_mut() {
                    // The leader's session ends its MariaDB connection cleanly too
                    // (else MariaDB counts an aborted connection there).
                    link.conn.write_raw(&p.raw).await.ok();
                    link.conn.flush().await.ok();
                }
                Ok(Flow::Close)
            }
            COM_QUERY => self.query(p).await,
            COM_STMT_PREPARE => self.prepare(p).await,
            COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => self.execute(p).await,
            COM_STMT_FETCH => match self.prepared_id(&p.payload) {
                Some(id) if self.stmt_is_mapped(id) => self.fetch_mapped(&p, id).await,
                _ => self.forward(&p, Some(Expect::Fetch)).await,
            },
            COM_STMT_SEND_LONG_DATA => {
                let mut kill = false;
                let held = self
                    .prepared_id(&p.payload)
                    .filter(|id| self.routes() || self.stmt_is_mapped(*id));
                if let Some(prep) = self.prepared_mut(&p.payload) {
                    let mut r = Reader::new(p.payload.get(5..).unwrap_or_default());
                    if let Some(param) = r.u16() {
                        prep.long_data
                            .entry(param)
                            .or_default()
                            .extend_from_slice(r.remaining());
                    }
                    kill = prep.kill.is_some();
                }
                if kill {
                    // The stand-in never runs: its backend needs no data.
                    return Ok(Flow::Continue);
                }
                if let Some(id) = held {
                    // Sent where the execution runs, just before it (see `stmt_route`).
                    self.hold_long_data(id);
                    return Ok(Flow::Continue);
                }
                self.forward(&p, None).await
            }
            COM_STMT_CLOSE => {
                if let Some(id) = Reader::new(&p.payload[1..]).u32() {
                    if self.stmt_is_mapped(id) {
                        return self.close_mapped(id).await;
                    }
                    self.stmts.remove(&id);
                }
                self.forward(&p, None).await
            }
            COM_STMT_RESET => {
                if let Some(id) = self.prepared_id(&p.payload) {
                    if self.stmt_is_mapped(id) {
                        return self.reset_mapped(&p, id).await;
                    }
                }
                if let Some(prep) = self.prepared_mut(&p.payload) {
                    prep.long_data.clear();
                }
                self.forward(&p, Some(Expect::Single)).await
            }
            COM_FIELD_LIST => self.forward(&p, Some(Expect::FieldList)).await,
            COM_PROCESS_INFO => self.forward(&p, Some(Expect::Query)).await,
            COM_RESET_CONNECTION => {
                self.reset_route();
                self.stmts.clear();
                self.text_kills.clear();
                // The backend's session variables go back to their defaults.
                self.vars = None;
                self.forward(&p, Some(Expect::Single)).await
            }
            COM_INIT_DB => {
                self.vars = None;
                if self.routes() {
                    return self.routed_init_db(&p).await;
                }
                self.forward(&p, Some(Expect::Single)).await
            }
            COM_SET_OPTION if self.shared.replicator.get().is_some() && !self.route.forwarded => {
                self.routed_set_option(&p).await
            }
            COM_PING | COM_SET_OPTION | COM_STATISTICS | COM_DEBUG | COM_REFRESH | COM_SHUTDOWN
            | COM_CREATE_DB | COM_DROP_DB => self.forward(&p, Some(Expect::Single)).await,
            COM_CHANGE_USER => {
                self.reset_route();
                self.change_user(p).await
            }
            COM_PROCESS_KILL => match Reader::new(&p.payload[1..]).u32() {
                Some(id) => self.kill(&p, None, false, id.into(), None).await,
                None => self.forward(&p, Some(Expect::Single)).await,
            },
            _ => {
                self.reply_err(p.last_seq, ServerError::unknown_command())
                    .await?;
                Ok(Flow::Continue)
            }
        }
    }

    async fn query(&mut self, mut p: Packet) -> Result<Flow, SessionError> {
        if let Some(hidden) = sql::hide_socket(&String::from_utf8_lossy(&p.payload[1..])) {
            // MariaDB's socket path would take the client around the proxy.
            let mut raw = bytes::BytesMut::new();
            encode_query(&mut raw, &hidden);
            let raw = raw.freeze();
            p.payload = raw.slice(crate::protocol::packet::HEADER..);
            p.raw = raw;
        }
        let text = String::from_utf8_lossy(&p.payload[1..]);
        match sql::kill_request(&text) {
            KillRequest::None => {}
            KillRequest::Kill(kill) => return self.kill_statement(&p, &kill, None, true).await,
            KillRequest::Prepare { name, kill } => {
                return self.prepare_text_kill(&p, name, kill).await
            }
            KillRequest::Refused(why) => {
                self.reply_err(p.last_seq, ServerError::kill_not_mappable(why))
                    .await?;
                return Ok(Flow::Continue);
            }
        }
        if !self.text_kills.is_empty() {
            if let Some(flow) = self.text_kill_uses(&p, &text).await? {
                return Ok(flow);
            }
        }
        if self.shared.replicator.get().is_some() {
            if let Some(flow) = self.request_intercept(&p, &text).await? {
                return Ok(flow);
            }
            if let Some(flow) = self.route_intercept(&p, &text).await? {
                return Ok(flow);
            }
        }
        let class = self.with_stored_functions(sql::classify(&text), &text);
        tracing::trace!(id = self.auth.id, class = %class, in_txn = self.in_transaction(), "query");
        let name = class.class.as_str();
        let started = std::time::Instant::now();
        let flow = if self.shared.replicator.get().is_some() {
            if self.routes() {
                self.routed_query(&p, &text, class).await
            } else {
                self.sequenced_query(&p, &text, class).await
            }
        } else {
            self.forward(&p, Some(Expect::Query)).await
        };
        crate::telemetry::statement_done(name, started.elapsed());
        flow
    }

    async fn prepare(&mut self, p: Packet) -> Result<Flow, SessionError> {
        let text = String::from_utf8_lossy(&p.payload[1..]);
        match sql::kill_request(&text) {
            KillRequest::None => {}
            KillRequest::Kill(kill) => return self.prepare_kill(&p, text.into_owned(), kill).await,
            KillRequest::Prepare { .. } | KillRequest::Refused(_) => {
                let why = "this KILL cannot be prepared here";
                self.reply_err(p.last_seq, ServerError::kill_not_mappable(why))
                    .await?;
                return Ok(Flow::Continue);
            }
        }
        let class = self.with_stored_functions(sql::classify(&text), &text);
        if let Some(err) = self.refuse_prepare(&text, &class) {
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        if self.routes() {
            return self.routed_prepare(&p, text.into_owned(), class).await;
        }
        self.send_backend(&p.raw).await?;
        let outcome = self.relay(Expect::Prepare).await?;
        if let Some(id) = outcome.stmt_id {
            self.stmts.insert(
                id,
                Prepared {
                    class,
                    sql: text.into_owned(),
                    params: outcome.params as usize,
                    types: None,
                    long_data: Default::default(),
                    kill: None,
                    route: super::stmt_route::StmtRoute::here(id),
                },
            );
            self.last_prepared = Some(id);
        }
        Ok(Flow::Continue)
    }

    /// On a cluster node, a read that calls a stored function is a write: the function
    /// may write (its declared characteristics are not enforced), and a write that
    /// bypassed the log would exist on one node only. It runs on the leader, in the
    /// log, and is replayed as the statement it is.
    fn with_stored_functions(&self, mut class: Classification, text: &str) -> Classification {
        if self.shared.replicator.get().is_none() || class.class != sql::StatementClass::Read {
            return class;
        }
        if let Some(f) = self.shared.catalog.get().stored_function_in(text) {
            tracing::trace!(id = self.auth.id, function = %f, "a read calling a stored function runs as a write");
            class.class = sql::StatementClass::Write;
        }
        class
    }

    /// The prepared statement a COM_STMT_* packet names (MariaDB's id 0xFFFFFFFF is the
    /// last one prepared).
    pub(super) fn prepared_id(&self, payload: &[u8]) -> Option<u32> {
        let id = Reader::new(payload.get(1..)?).u32()?;
        match self.exec_alias {
            Some((backend, client)) if backend == id => Some(client),
            _ if id == u32::MAX => self.last_prepared,
            _ => Some(id),
        }
    }

    fn prepared_mut(&mut self, payload: &[u8]) -> Option<&mut Prepared> {
        let id = self.prepared_id(payload)?;
        self.stmts.get_mut(&id)
    }

    /// COM_STMT_EXECUTE: writes on a cluster node go through the sequencer.
    async fn execute(&mut self, p: Packet) -> Result<Flow, SessionError> {
        let name = self
            .prepared_id(&p.payload)
            .and_then(|id| self.stmts.get(&id))
            .map_or("unknown", |s| s.class.class.as_str());
        let started = std::time::Instant::now();
        let flow = self.execute_prepared(p).await;
        crate::telemetry::statement_done(name, started.elapsed());
        flow
    }

    async fn execute_prepared(&mut self, mut p: Packet) -> Result<Flow, SessionError> {
        let kill = self.prepared_id(&p.payload).and_then(|id| {
            let kill = self.stmts.get(&id)?.kill.clone()?;
            Some((id, kill))
        });
        if let Some((id, kill)) = kill {
            return self.execute_kill(&p, id, kill).await;
        }
        if let Some(id) = self.prepared_id(&p.payload) {
            if self.routes() {
                return self.routed_execute(&p, id).await;
            }
            if self.stmt_is_mapped(id) || self.stmts.get(&id).is_some_and(|s| s.route.long_held) {
                // Prepared while this session routed (this node has become the
                // leader since): run it here under the local MariaDB's id.
                match self.local_execute(&p, id).await? {
                    Some(local) => p = local,
                    None => return Ok(Flow::Continue),
                }
                if let Some(prep) = self.stmts.get_mut(&id) {
                    prep.route.on_link = false;
                    prep.route.long_held = false;
                    if let Some(local) = prep.route.local {
                        self.exec_alias = Some((local, id));
                    }
                }
                let flow = self.execute_here(p).await;
                self.exec_alias = None;
                return flow;
            }
        }
        self.execute_here(p).await
    }

    /// COM_STMT_EXECUTE on the local MariaDB: writes on a cluster node through the
    /// sequencer.
    async fn execute_here(&mut self, p: Packet) -> Result<Flow, SessionError> {
        let write = self
            .prepared_id(&p.payload)
            .and_then(|id| self.stmts.get(&id))
            .is_some_and(|s| {
                // Prepared BEGIN/COMMIT/ROLLBACK/SAVEPOINT (sysbench prepares them) must
                // drive the replicated transaction just as their text form does.
                s.class.is_write() || s.class.class == sql::StatementClass::Transaction
            });
        if self.shared.replicator.get().is_some() && write {
            return self.sequenced_execute(&p).await;
        }
        let flow = self.forward(&p, Some(Expect::execute(&p.payload))).await?;
        if let Some(prep) = self.prepared_mut(&p.payload) {
            prep.long_data.clear();
        }
        Ok(flow)
    }

    /// Send a client command to the backend unchanged and relay its reply, if any.
    pub(super) async fn forward(
        &mut self,
        p: &Packet,
        expect: Option<Expect>,
    ) -> Result<Flow, SessionError> {
        self.send_backend(&p.raw).await?;
        if let Some(expect) = expect {
            self.relay(expect).await?;
        }
        Ok(Flow::Continue)
    }

    /// Send bytes to the backend. If it is gone, the session ends and the client's
    /// connection is closed without a word, as MariaDB's own would be.
    pub(super) async fn send_backend(&mut self, raw: &[u8]) -> Result<(), SessionError> {
        self.backend
            .conn
            .write_raw(raw)
            .await
            .map_err(SessionError::Backend)
    }

    /// Stream the backend's reply to the client until the scanner says it is complete.
    ///
    /// A backend that goes away mid-reply (KILL, a crash) ends the session: what it
    /// sent whole is passed on and the client's connection closed without a word of
    /// the proxy's, as MariaDB closes a killed connection. On the front end alone
    /// (not a cluster node) a client that goes away while its statement runs ends the
    /// session too, closing the backend connection, so MariaDB stops the statement as
    /// it would for a direct client that left (a SLEEP, a lock wait); bytes the
    /// client sends meanwhile (pipelined commands) are kept, up to a limit.
    pub(super) async fn relay(&mut self, expect: Expect) -> Result<Outcome, SessionError> {
        /// Pipelined bytes read from the client while watching it, at most.
        const WATCH_LIMIT: usize = 64 * 1024;
        let mut scanner = Scanner::new(expect);
        let mut watch_client = self.shared.replicator.get().is_none();
        loop {
            let buf = self.backend.conn.read_buffer();
            let (n, step) = scanner.scan(buf).map_err(SessionError::Backend)?;
            if n > 0 {
                let chunk = buf.split_to(n);
                self.client
                    .write_raw(&chunk)
                    .await
                    .map_err(SessionError::Client)?;
            }
            match step {
                Step::Done => break,
                Step::LocalInfile => {
                    self.client.flush().await.map_err(SessionError::Client)?;
                    self.relay_infile().await?;
                }
                Step::NeedMore => {
                    let filled = tokio::select! {
                        filled = self.backend.conn.fill() => filled,
                        read = self.client.fill(), if watch_client => {
                            match read {
                                Ok(true) => {
                                    watch_client = self.client.read_buffer().len() < WATCH_LIMIT;
                                    continue;
                                }
                                // Gone: nobody is left to answer.
                                Ok(false) => return Err(SessionError::Client(ProtoError::Closed)),
                                Err(e) => return Err(SessionError::Client(e)),
                            }
                        }
                    };
                    match filled {
                        Ok(true) => {}
                        Ok(false) => {
                            self.client.flush().await.ok();
                            return Err(SessionError::Backend(ProtoError::Closed));
                        }
                        Err(e) => {
                            self.client.flush().await.ok();
                            return Err(SessionError::Backend(e));
                        }
                    }
                }
            }
        }
        self.client.flush().await.map_err(SessionError::Client)?;
        if let Some(status) = scanner.outcome.status {
            self.status = status;
        }
        if let Some(code) = scanner.outcome.error {
            crate::telemetry::error_sent(code);
        }
        Ok(scanner.outcome)
    }

    /// Run one of the proxy's own statements on the backend; nothing reaches the client.
    /// An ERR is returned as [`Internal::Err`]; a lost backend is an error.
    pub(super) async fn internal(&mut self, sql: &str) -> Result<Internal, SessionError> {
        let (outcome, reply) = self.run_collect(sql).await?;
        Ok(Internal::of(&outcome, &reply))
    }

    /// Several of the proxy's own statements sent at once (one write, one wake-up of
    /// the server), their answers read in order. The server runs each after the one
    /// before has answered, exactly as if they had been sent one by one.
    pub(super) async fn internal_pipelined(
        &mut self,
        sqls: &[&str],
    ) -> Result<Vec<Internal>, SessionError> {
        let mut raw = bytes::BytesMut::new();
        for sql in sqls {
            encode_query(&mut raw, sql);
        }
        self.send_backend(&raw).await?;
        let mut out = Vec::with_capacity(sqls.len());
        for _ in sqls {
            let (outcome, reply) = self.collect_reply(Expect::Query).await?;
            out.push(Internal::of(&outcome, &reply));
        }
        Ok(out)
    }

    /// The first row of one of the proxy's own queries, as text (`None` for NULL).
    pub(super) async fn internal_row(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Option<String>>, SessionError> {
        let (outcome, reply) = self.run_collect(sql).await?;
        if outcome.error.is_some() {
            let e = err_from_payload(err_payload(&reply));
            return Err(SessionError::Internal(format!("{sql}: {e}")));
        }
        Ok(first_row(&reply))
    }

    /// Send one COM_QUERY of the proxy's own (sequence 0) to the backend.
    async fn send_query(&mut self, sql: &str) -> Result<(), SessionError> {
        let mut raw = bytes::BytesMut::new();
        encode_query(&mut raw, sql);
        self.send_backend(&raw).await
    }

    /// Send a statement of the proxy's own and collect its whole reply.
    pub(super) async fn run_collect(
        &mut self,
        sql: &str,
    ) -> Result<(Outcome, Vec<u8>), SessionError> {
        self.send_query(sql).await?;
        self.collect_reply(Expect::Query).await
    }

    /// Read the backend's reply without forwarding it (bounded by the proxy's packet
    /// limit times two: only the proxy's own statements and single-statement writes
    /// are collected).
    pub(super) async fn collect_reply(
        &mut self,
        expect: Expect,
    ) -> Result<(Outcome, Vec<u8>), SessionError> {
        let mut scanner = Scanner::new(expect);
        let mut out = Vec::new();
        loop {
            let buf = self.backend.conn.read_buffer();
            let (n, step) = scanner.scan(buf).map_err(SessionError::Backend)?;
            if n > 0 {
                out.extend_from_slice(&buf.split_to(n));
                if out.len() > 2 * self.shared.max_packet {
                    return Err(SessionError::Internal("reply too large to hold".into()));
                }
            }
            match step {
                Step::Done => break,
                Step::LocalInfile => {
                    return Err(SessionError::Internal(
                        "LOAD DATA LOCAL is not replicated by this build".into(),
                    ))
                }
                Step::NeedMore => match self.backend.conn.fill().await {
                    Ok(true) => {}
                    Ok(false) => return Err(SessionError::Backend(ProtoError::Closed)),
                    Err(e) => return Err(SessionError::Backend(e)),
                },
            }
        }
        if let Some(status) = scanner.outcome.status {
            self.status = status;
        }
        Ok((scanner.outcome, out))
    }

    /// Pass the client's LOCAL INFILE contents to the backend as they arrive, up to and
    /// including the empty packet that ends them, without buffering whole packets. A
    /// client that stalls longer than `net_read_timeout` ends the session (the backend
    /// has part of a packet, so the connection cannot be reused).
    async fn relay_infile(&mut self) -> Result<(), SessionError> {
        let mut tracker = StreamTracker::default();
        loop {
            let bytes = match self.client.read_some().await {
                Ok(Some(b)) => b,
                Ok(None) => return Err(SessionError::Client(ProtoError::Closed)),
                Err(ProtoError::ReadTimeout) => {
                    self.reply_err(0, ServerError::read_timeout()).await.ok();
                    return Err(SessionError::Client(ProtoError::ReadTimeout));
                }
                Err(e) => return Err(SessionError::Client(e)),
            };
            let (n, done) = tracker.advance(&bytes);
            self.backend
                .conn
                .write_raw(&bytes[..n])
                .await
                .map_err(SessionError::Backend)?;
            if done {
                self.client.unread(&bytes[n..]);
                return Ok(());
            }
        }
    }

    /// Send a proxy-generated ERR following the client's packet `last_seq`.
    pub(super) async fn reply_err(
        &mut self,
        last_seq: u8,
        err: ServerError,
    ) -> Result<(), SessionError> {
        tracing::debug!(id = self.auth.id, error = %err, "error reply");
        crate::telemetry::error_sent(err.code);
        self.client
            .send(last_seq.wrapping_add(1), &err.payload())
            .await
            .map_err(SessionError::Client)?;
        Ok(())
    }

    /// Run a KILL: a literal id is mapped as it is; an expression without side effects
    /// is first evaluated on this session's backend connection (so `CONNECTION_ID()`
    /// names this session's backend thread, which the registry maps back), then its
    /// value mapped like a literal; a prepared KILL's `?` takes the `bound` value.
    /// Anything else is refused rather than guessed. `direct`: `p` is the KILL
    /// statement itself (not an EXECUTE of a prepared one), so it may be forwarded.
    async fn kill_statement(
        &mut self,
        p: &Packet,
        kill: &sql::Kill,
        bound: Option<Bound>,
        direct: bool,
    ) -> Result<Flow, SessionError> {
        let value = match (&kill.target, bound) {
            (sql::Target::Id(id), _) => {
                let literal = (!direct).then(|| kill.with_id(id));
                return self
                    .kill(p, kill.mode, kill.query_only, *id, literal.as_deref())
                    .await;
            }
            // `?` outside a prepared statement: MariaDB's own syntax error; nothing runs.
            _ if direct && kill.placeholders() > 0 => {
                return self.forward(p, Some(Expect::Query)).await
            }
            (sql::Target::Param, Some(Bound::Value(v))) => Some(v),
            (sql::Target::Param, Some(Bound::Expr(e))) => {
                self.evaluate(p, &e, "EXECUTE..USING").await?
            }
            (sql::Target::Param, None) => {
                self.reply_err(p.last_seq, wrong_arguments()).await?;
                return Ok(Flow::Continue);
            }
            (sql::Target::Expr(e), _) => self.evaluate(p, e, "KILL").await?,
        };
        match value {
            Some(v) => self.kill_value(p, kill, &v).await,
            None => Ok(Flow::Continue),
        }
    }

    /// The integer MariaDB's KILL would take from `expr` (its `val_int()`, which
    /// `CAST(… AS SIGNED)` gives too), as text or `NULL`, evaluated on this session's
    /// backend connection. `None` when the client has been answered already: `expr` is
    /// refused (`what` names the statement in MariaDB's own refusal), or its evaluation
    /// failed (the backend's error is passed on).
    async fn evaluate(
        &mut self,
        p: &Packet,
        expr: &str,
        what: &str,
    ) -> Result<Option<String>, SessionError> {
        // MariaDB takes a subquery without tables in KILL, none in EXECUTE … USING.
        if let Err(why) = sql::evaluable(expr, what == "KILL") {
            let err = if why.refused_by_mariadb() {
                ServerError::new(
                    ER_SUBQUERIES_NOT_SUPPORTED,
                    "42000",
                    format!("{what} does not support subqueries or stored functions"),
                )
            } else {
                ServerError::kill_not_mappable(&format!(
                    "it evaluates a KILL's argument only when that cannot have side effects \
                     (literals, variables, arithmetic, CONNECTION_ID() and a few other \
                     built-ins), and `{expr}` may"
                ))
            };
            self.reply_err(p.last_seq, err).await?;
            return Ok(None);
        }
        let (outcome, reply) = self
            .run_collect(&format!("SELECT CAST(({expr}) AS SIGNED)"))
            .await?;
        if outcome.error.is_some() {
            self.client
                .send(p.last_seq.wrapping_add(1), err_payload(&reply))
                .await
                .map_err(SessionError::Client)?;
            return Ok(None);
        }
        let value = first_row(&reply).into_iter().next().flatten();
        Ok(Some(value.unwrap_or_else(|| "NULL".into())))
    }

    /// Run `kill` naming the connection `value` (an integer as text, or `NULL`).
    async fn kill_value(
        &mut self,
        p: &Packet,
        kill: &sql::Kill,
        value: &str,
    ) -> Result<Flow, SessionError> {
        let value = value.trim();
        tracing::debug!(id = self.auth.id, value, "KILL of an evaluated id");
        if let Ok(id) = value.parse::<u64>() {
            let literal = kill.with_id(id);
            return self
                .kill(p, kill.mode, kill.query_only, id, Some(&literal))
                .await;
        }
        if value != "NULL" && value.parse::<i64>().is_err() {
            let why = "its argument did not evaluate to an integer";
            self.reply_err(p.last_seq, ServerError::kill_not_mappable(why))
                .await?;
            return Ok(Flow::Continue);
        }
        // NULL or negative names no connection: MariaDB's own error for that value.
        self.send_query(&kill.with_id(value)).await?;
        self.relay(Expect::Query).await?;
        Ok(Flow::Continue)
    }

    /// COM_STMT_PREPARE of a KILL: the backend prepares a stand-in with as many
    /// parameters (`DO ?`, or `DO 0`), so the client gets MariaDB's own prepare reply;
    /// the session remembers the KILL and runs it at each execution.
    async fn prepare_kill(
        &mut self,
        p: &Packet,
        text: String,
        kill: sql::Kill,
    ) -> Result<Flow, SessionError> {
        if matches!(kill.target, sql::Target::Expr(_)) && kill.placeholders() > 0 {
            let why = "a prepared KILL takes the connection id as one `?` of its own";
            self.reply_err(p.last_seq, ServerError::kill_not_mappable(why))
                .await?;
            return Ok(Flow::Continue);
        }
        let stand_in: &[u8] = if kill.target == sql::Target::Param {
            b"DO ?"
        } else {
            b"DO 0"
        };
        let mut payload = vec![COM_STMT_PREPARE];
        payload.extend_from_slice(stand_in);
        let mut raw = bytes::BytesMut::new();
        crate::protocol::packet::encode_packet(&mut raw, 0, &payload);
        self.send_backend(&raw).await?;
        let outcome = self.relay(Expect::Prepare).await?;
        if let Some(id) = outcome.stmt_id {
            self.stmts.insert(
                id,
                Prepared {
                    class: sql::classify(&text),
                    sql: text,
                    params: outcome.params as usize,
                    types: None,
                    long_data: Default::default(),
                    kill: Some(kill),
                    route: super::stmt_route::StmtRoute::here(id),
                },
            );
            self.last_prepared = Some(id);
        }
        Ok(Flow::Continue)
    }

    /// COM_STMT_EXECUTE of a prepared KILL: the id from the bound parameter (or the
    /// statement's own literal or expression), mapped like a text KILL's.
    async fn execute_kill(
        &mut self,
        p: &Packet,
        id: u32,
        kill: sql::Kill,
    ) -> Result<Flow, SessionError> {
        if p.first() == Some(COM_STMT_BULK_EXECUTE) {
            let why = "a prepared KILL cannot run as COM_STMT_BULK_EXECUTE";
            self.reply_err(p.last_seq, ServerError::kill_not_mappable(why))
                .await?;
            return Ok(Flow::Continue);
        }
        let Some(prep) = self.stmts.get_mut(&id) else {
            return Ok(Flow::Continue);
        };
        let long_data = std::mem::take(&mut prep.long_data);
        let bound = if kill.target == sql::Target::Param {
            let long = [long_data.contains_key(&0)];
            let decoded = crate::protocol::params::decode_execute(
                &p.payload,
                1,
                prep.types.as_deref(),
                &long,
            );
            let Some((values, types)) = decoded else {
                self.reply_err(p.last_seq, ServerError::malformed("COM_STMT_EXECUTE"))
                    .await?;
                return Ok(Flow::Continue);
            };
            let ty = types.first().map_or(0, |t| t.0);
            prep.types = Some(types);
            let value = values.into_iter().next().unwrap_or(ParamValue::Null);
            match bound_value(value, ty, long_data.get(&0).map(Vec::as_slice)) {
                Ok(b) => Some(b),
                Err(why) => {
                    self.reply_err(p.last_seq, ServerError::kill_not_mappable(why))
                        .await?;
                    return Ok(Flow::Continue);
                }
            }
        } else {
            None
        };
        self.kill_statement(p, &kill, bound, false).await
    }

    /// `PREPARE name FROM '<a KILL>'`: the backend prepares a stand-in under that name
    /// (one that fails if it ever runs there), and the session runs the KILL at each
    /// `EXECUTE name`.
    async fn prepare_text_kill(
        &mut self,
        p: &Packet,
        name: String,
        kill: sql::Kill,
    ) -> Result<Flow, SessionError> {
        if matches!(kill.target, sql::Target::Expr(_)) && kill.placeholders() > 0 {
            let why = "a prepared KILL takes the connection id as one `?` of its own";
            self.reply_err(p.last_seq, ServerError::kill_not_mappable(why))
                .await?;
            return Ok(Flow::Continue);
        }
        let ident = format!("`{}`", name.replace('`', "``"));
        self.send_query(&format!("PREPARE {ident} FROM '{TEXT_KILL_STAND_IN}'"))
            .await?;
        let outcome = self.relay(Expect::Query).await?;
        // A failed PREPARE drops an older statement of that name all the same.
        if outcome.error.is_none() {
            self.text_kills.insert(name, kill);
        } else {
            self.text_kills.remove(&name);
        }
        Ok(Flow::Continue)
    }

    /// What a query does with the text-protocol prepared KILLs the session holds: an
    /// `EXECUTE` of one is run here (it must be the query's only statement, like a
    /// KILL); a `PREPARE` or `DEALLOCATE` of the name forgets it. `None`: the query
    /// goes on as usual.
    async fn text_kill_uses(
        &mut self,
        p: &Packet,
        text: &str,
    ) -> Result<Option<Flow>, SessionError> {
        let (uses, count) = sql::statement_names(text);
        let executed = uses.iter().find_map(|u| match u {
            NameUse::Execute(name, args) => {
                Some((self.text_kills.get(name)?.clone(), args.clone()))
            }
            _ => None,
        });
        if let Some((kill, args)) = executed {
            if count != 1 {
                let why = "an EXECUTE of a prepared KILL must be the only statement of its query";
                self.reply_err(p.last_seq, ServerError::kill_not_mappable(why))
                    .await?;
                return Ok(Some(Flow::Continue));
            }
            if args.iter().any(|a| a.trim().is_empty()) {
                // `EXECUTE s USING` and nothing: MariaDB's syntax error; nothing runs.
                return self.forward(p, Some(Expect::Query)).await.map(Some);
            }
            let wanted = usize::from(kill.target == sql::Target::Param);
            if args.len() != wanted {
                self.reply_err(p.last_seq, wrong_arguments()).await?;
                return Ok(Some(Flow::Continue));
            }
            let bound = args.into_iter().next().map(Bound::Expr);
            return self.kill_statement(p, &kill, bound, false).await.map(Some);
        }
        for u in uses {
            if let NameUse::Prepare(name) | NameUse::Deallocate(name) = u {
                self.text_kills.remove(&name);
            }
        }
        Ok(None)
    }

    /// KILL naming connection `id`: a session of this proxy (by proxy id or by its
    /// backend thread) is killed through its backend thread; any other id is passed to
    /// the local MariaDB as it is. Either way MariaDB runs the KILL as the client's
    /// user and decides whether it is allowed.
    async fn kill(
        &mut self,
        p: &Packet,
        mode: Option<&str>,
        query_only: bool,
        id: u64,
        literal: Option<&str>,
    ) -> Result<Flow, SessionError> {
        let target = self.shared.registry.lookup(id);
        if let Some((
            proxy_id,
            Entry {
                running_on_leader: Some(link_id),
                backend_thread,
                ..
            },
        )) = &target
        {
            if *proxy_id != self.auth.id {
                return self
                    .kill_on_leader(p, mode, query_only, *link_id, *backend_thread)
                    .await;
            }
        }
        let Some((proxy_id, entry)) = target else {
            if let Some(flow) = self.kill_elsewhere(p, mode, query_only, id).await? {
                return Ok(flow);
            }
            if let Some(sql) = literal {
                // Evaluated once already: pass the value, not the expression.
                self.send_query(sql).await?;
                self.relay(Expect::Query).await?;
                return Ok(Flow::Continue);
            }
            let expect = if p.first() == Some(COM_PROCESS_KILL) {
                Expect::Single
            } else {
                Expect::Query
            };
            return self.forward(p, Some(expect)).await;
        };
        let verb = if query_only { "QUERY" } else { "CONNECTION" };
        let sql = format!(
            "KILL {} {verb} {}",
            mode.unwrap_or(""),
            entry.backend_thread
        );
        self.send_query(&sql).await?;
        let outcome = self.relay(Expect::Query).await;
        if outcome.as_ref().is_ok_and(|o| o.error.is_none()) {
            // MariaDB let this account kill it: a statement of it held for a leader
            // (a failover) is let go too.
            self.shared.registry.release_held(proxy_id, !query_only);
        }
        // Killing one's own connection ends it, as on MariaDB.
        if proxy_id == self.auth.id && !query_only {
            return Ok(Flow::Close);
        }
        outcome?;
        Ok(Flow::Continue)
    }

    /// COM_CHANGE_USER: verify the new credentials against the session's scramble and
    /// the account MariaDB would choose, then switch the backend connection to it. The
    /// backend part is bounded by the handshake timeout.
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
        let checked = check_credentials(
            &mut self.client,
            &self.shared,
            creds,
            &self.auth.scramble,
            &self.auth.origin.client,
        )
        .await?;
        let (account, stage1, seq) = match checked {
            Ok(ok) => ok,
            Err((refusal, seq)) => return self.change_user_refused(&req, refusal, seq).await,
        };
        let mut login = self.auth.login.clone();
        login.user = req.user.clone();
        login.stage1 = stage1;
        login.database = req.database;
        login.identity = identity_for(&self.shared, &account, &self.auth.origin);
        if let Some(c) = req.collation {
            login.collation = c;
        }
        if req.connect_attrs.is_some() {
            login.connect_attrs = req.connect_attrs;
        }
        let switched = tokio::time::timeout(
            self.shared.handshake_timeout,
            self.switch_backend_user(&login),
        )
        .await;
        match switched {
            Ok(Ok(Ok(ok))) => {
                self.client
                    .send(seq.wrapping_add(1), &ok.payload)
                    .await
                    .map_err(SessionError::Client)?;
                self.status = ok_status(&ok.payload);
                self.stmts.clear();
                self.text_kills.clear();
                let entry = Entry {
                    user: login.user.clone(),
                    backend_thread: self.backend.thread_id,
                    running_on_leader: None,
                };
                self.registration.update(entry);
                self.auth.login = login;
                self.auth.account = account;
                Ok(Flow::Continue)
            }
            // MariaDB refused the account (locked, too many attempts, …) and kept the
            // connection as the old one, its session state reset (prepared statements
            // gone), as a direct client sees it. A cluster node still closes: the
            // sequencer's transaction state would no longer match the backend's.
            Ok(Ok(Err(err))) if self.shared.replicator.get().is_none() => {
                let e = BackendError::Refused(err);
                let reply = login_refusal(&e, &req.user, &self.auth.origin.client, &req.auth);
                self.client
                    .send(seq.wrapping_add(1), &reply)
                    .await
                    .map_err(SessionError::Client)?;
                self.stmts.clear();
                self.text_kills.clear();
                self.last_prepared = None;
                self.vars = None;
                Ok(Flow::Continue)
            }
            Ok(result) => {
                let e = match result {
                    Ok(Err(err)) => BackendError::Refused(err),
                    Err(e) => e,
                    Ok(Ok(_)) => unreachable!("handled above"),
                };
                let reply = login_refusal(&e, &req.user, &self.auth.origin.client, &req.auth);
                self.client
                    .send(seq.wrapping_add(1), &reply)
                    .await
                    .map_err(SessionError::Client)?;
                Ok(Flow::Close)
            }
            Err(_) => {
                let err = ServerError::lost_backend("during COM_CHANGE_USER (timed out)");
                self.client
                    .send(seq.wrapping_add(1), &err.payload())
                    .await
                    .ok();
                Err(BackendError::Timeout(self.shared.backend_addr.clone()).into())
            }
        }
    }

    /// The backend half of COM_CHANGE_USER: re-authenticate and check the account.
    /// COM_CHANGE_USER that the proxy's own check refused. MariaDB keeps a connection
    /// whose COM_CHANGE_USER failed (as the old account, its session state reset), and
    /// counts the failure: three per connection, then ERR 1047 for any COM_CHANGE_USER;
    /// an account's `max_password_errors`. So that all of this happens as for a direct
    /// client, MariaDB is made to fail the same change itself (credentials that cannot
    /// match), and the client gets the proxy's refusal (which names the client's host),
    /// or MariaDB's own when MariaDB refused for another reason. Anything unexpected,
    /// and every refusal on a cluster node, closes the session as before.
    async fn change_user_refused(
        &mut self,
        req: &ChangeUserRequest,
        refusal: ServerError,
        seq: u8,
    ) -> Result<Flow, SessionError> {
        let refuse = async |s: &mut Self, payload: &[u8], flow: Flow| {
            s.client
                .send(seq.wrapping_add(1), payload)
                .await
                .map_err(SessionError::Client)?;
            Ok(flow)
        };
        if self.shared.replicator.get().is_some() {
            return refuse(self, &refusal.payload(), Flow::Close).await;
        }
        let mut login = self.auth.login.clone();
        login.user = req.user.clone();
        login.stage1 = None;
        login.database = req.database.clone();
        let payload = failing_change_user(&login);
        let failed = tokio::time::timeout(self.shared.handshake_timeout, async {
            self.backend.conn.send(0, &payload).await?;
            backend::finish_auth(&mut self.backend.conn, &login).await
        })
        .await;
        match failed {
            Ok(Err(BackendError::Refused(err))) => {
                self.stmts.clear();
                self.text_kills.clear();
                self.last_prepared = None;
                self.vars = None;
                if err.payload.get(1..3) == Some(&1045u16.to_le_bytes()[..]) {
                    refuse(self, &refusal.payload(), Flow::Continue).await
                } else {
                    refuse(self, &err.payload, Flow::Continue).await
                }
            }
            // Logged in after all, half way through an exchange, or stalled: the
            // backend connection is no longer the session's.
            _ => refuse(self, &refusal.payload(), Flow::Close).await,
        }
    }

    /// `Ok(Err(err))`: MariaDB refused the new account (its ERR), and went back to the
    /// session's old one.
    async fn switch_backend_user(
        &mut self,
        login: &Login,
    ) -> Result<Result<Packet, Packet>, BackendError> {
        let payload = backend::change_user_payload(login, &self.backend.scramble);
        self.backend.conn.send(0, &payload).await?;
        let ok = match backend::finish_auth(&mut self.backend.conn, login).await {
            Ok(ok) => ok,
            Err(BackendError::Refused(err)) => return Ok(Err(err)),
            Err(e) => return Err(e),
        };
        backend::verify_account(&mut self.backend.conn, &login.identity).await?;
        Ok(Ok(ok))
    }
}
