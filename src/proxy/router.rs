//! The router of a follower's session: which backend runs each statement.
//!
//! ```text
//!  statement on a follower ──▶ decide(class, facts)
//!     ├─ Local  ─▶ fresh enough for the session's read consistency?
//!     │             ├─ yes (now, or within read_wait_ms) ─▶ the local MariaDB
//!     │             └─ no ─▶ the leader
//!     ├─ Leader ─▶ the link: a connection to the leader's proxy port, opened lazily,
//!     │             logged in as the same account; the session's index comes back
//!     └─ Both   ─▶ the local MariaDB (its reply to the client), then the link if open
//!                   (its reply drained); remembered in the history for a later link
//! ```
//!
//! # The link
//! The follower logs into the leader's proxy with the client's `SHA1(password)`, as it
//! logs into its own MariaDB. The connect attributes carry the client's address and an
//! HMAC of it under `[cluster] secret`, bound to the leader's greeting scramble, so the
//! leader checks the account (`'app'@'10.0.%'`) against the client's real address and
//! passes that address on to its MariaDB, and no client can claim another address: a
//! wrong proof is refused. A forwarded session is never forwarded again: a node that is
//! not the leader refuses its writes.
//!
//! # The session index
//! After a forwarded statement that may have committed, the follower asks the leader's
//! session for the log index of the session's last write ([`INDEX_QUERY`], pipelined
//! behind the statement, so it costs no round trip). A read in `session` consistency
//! runs locally once the local applier has reached that index.
//!
//! # The history
//! Session statements (`SET`, `SET NAMES`, `USE`) run on every backend the session holds
//! and are remembered, so a link opened later (or re-opened on a new leader) gets them
//! first. A later statement for the same target (the same variable, `NAMES`, `USE`)
//! replaces the earlier one, so a session that sets a variable in a loop keeps one
//! entry. At most [`HISTORY_LIMIT`] entries are kept; a session past that cannot open a
//! new link, and its statements that need the leader get ERR 1235 saying so.

use std::net::SocketAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use super::backend::{self, Backend, Identity};
use super::session::{encode_query, Flow, Session, SessionError};
use crate::config::ReadConsistency;
use crate::protocol::packet::Reader;
use crate::protocol::response::{
    Expect, Outcome, Scanner, Step, SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS,
};
use crate::protocol::{Packet, ServerError};
use crate::sql::{Classification, StatementClass, TxnEffect};

/// Connect attribute: the forwarded client's address, as `ip:port`.
pub const ATTR_CLIENT: &str = "_wolfscale_client";
/// Connect attribute: the address of the follower's proxy the client connected to.
pub const ATTR_LOCAL: &str = "_wolfscale_local";
/// Connect attribute: hex HMAC-SHA256 of both addresses and the leader's scramble.
pub const ATTR_PROOF: &str = "_wolfscale_proof";
/// Asked by a follower on its link, answered by the leader's session with an OK whose
/// affected-rows field is the log index of the session's last write.
pub const INDEX_QUERY: &str = "/* wolfscale */ SHOW WOLFSCALE SESSION INDEX";
/// Asked by a follower on its link: the leader confirms its leadership with a majority
/// and answers with an OK whose affected-rows field is the index a read must see.
pub const READ_INDEX_QUERY: &str = "/* wolfscale */ SHOW WOLFSCALE READ INDEX";
/// Asked by a standalone proxy on the member a session reads from, as
/// `… READABLE <index> SESSION|FRESH`: the member's session answers with an OK whose
/// affected-rows field is 1 when its MariaDB may serve a read that must see `index`
/// (and, for `FRESH`, everything the member knows committed), waiting up to its
/// `read_wait_ms` for that; 0 when not.
pub const READABLE_QUERY: &str = "/* wolfscale */ SHOW WOLFSCALE READABLE";
/// How long a standalone proxy's session whose member connection closed waits for the
/// member to be seen gone before it takes the close as meant for it.
const LOST_MEMBER_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);
/// Distinct session statements a session keeps for replay onto a new link.
pub const HISTORY_LIMIT: usize = 256;

/// The proof a follower gives for a client's address.
pub fn forward_proof(
    secret: &[u8],
    scramble: &[u8],
    client: &SocketAddr,
    local: &SocketAddr,
) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"wolfscale forwarded client v1\0");
    mac.update(scramble);
    mac.update(client.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(local.to_string().as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the connect attributes of a login say about forwarding: `None` when they
/// claim nothing; `Some(Ok((client, local)))` for a valid proof; `Some(Err(why))` for
/// a claim that must be refused.
pub fn forwarded_origin(
    secret: Option<&[u8]>,
    scramble: &[u8],
    attrs: &[(String, String)],
) -> Option<Result<(SocketAddr, SocketAddr), &'static str>> {
    let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (client, local, proof) = (get(ATTR_CLIENT), get(ATTR_LOCAL), get(ATTR_PROOF));
    if client.is_none() && local.is_none() && proof.is_none() {
        return None;
    }
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Some(Err("this node has no cluster secret to check it against"));
    };
    let (Some(client), Some(local), Some(proof)) = (client, local, proof) else {
        return Some(Err("incomplete forwarding attributes"));
    };
    let (Ok(client), Ok(local)) = (client.parse(), local.parse()) else {
        return Some(Err("unreadable forwarded address"));
    };
    let want = forward_proof(secret, scramble, &client, &local);
    // Compare in constant time: the proof is a MAC.
    let same = want.len() == proof.len()
        && want
            .bytes()
            .zip(proof.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    Some(if same {
        Ok((client, local))
    } else {
        Err("wrong proof (another cluster secret?)")
    })
}

/// Where a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Local,
    Leader,
    /// Every backend of the session (session statements).
    Both,
}

/// What the router knows about the session when it decides.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// The session's state lives on the leader: a transaction or autocommit=0 there,
    /// or locks, temporary tables (sticky).
    pub pinned: bool,
    /// A transaction is open on the local MariaDB (START TRANSACTION READ ONLY).
    pub local_txn: bool,
    /// The last statement ran on the leader (for LAST_INSERT_ID() and the like).
    pub last_on_leader: bool,
}

/// The routing rules (ARCHITECTURE §1 and §4).
pub fn decide(class: &Classification, text: &str, facts: Facts) -> Target {
    use StatementClass as C;
    if class.class == C::Session {
        return if is_global_set(text) {
            Target::Local
        } else {
            Target::Both
        };
    }
    if facts.local_txn {
        // A read-only transaction on this node: MariaDB refuses its writes, as it
        // would directly.
        return Target::Local;
    }
    if facts.pinned {
        return Target::Leader;
    }
    match class.class {
        C::Write | C::Ddl | C::Locking => Target::Leader,
        C::Transaction => match class.txn {
            TxnEffect::Begin if !text.to_ascii_uppercase().contains("READ ONLY") => Target::Leader,
            _ => Target::Local,
        },
        C::Read | C::Admin | C::Session => {
            if session_dependent(text) && facts.last_on_leader {
                Target::Leader
            } else {
                Target::Local
            }
        }
    }
}

/// A statement after which the session's state stays on the leader for good (locks
/// held by name, LOCK TABLES, temporary tables).
pub fn makes_sticky(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    upper.contains("GET_LOCK")
        || (upper.trim_start().starts_with("LOCK") && upper.contains("TABLE"))
        || (upper.contains("TEMPORARY") && upper.contains("TABLE"))
}

/// Reads whose answer is the session's own state of its last statement.
fn session_dependent(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    ["LAST_INSERT_ID", "FOUND_ROWS", "ROW_COUNT", "@@IDENTITY"]
        .iter()
        .any(|f| upper.contains(f))
}

fn is_global_set(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    upper.trim_start().starts_with("SET")
        && (upper.contains("GLOBAL") || upper.contains("@@GLOBAL") || upper.contains("PERSIST"))
}

/// A session statement that sets user variables (`SET @a = …`, `SELECT … INTO @a`,
/// `SELECT @a := …`, `GET DIAGNOSTICS … @a = …`): the other backend and the history
/// get the values it produced. PREPARE, EXECUTE and DEALLOCATE only read them and
/// are carried as they are.
///
/// A `SET` counts only when every target it assigns is a user variable: `SET
/// time_zone = @tz` sets a session variable (from a value the other backend has too)
/// and is carried as it is, like `SET @a = 1, sql_mode = …`.
pub fn carries_user_vars(text: &str) -> bool {
    let upper = text.trim_start().to_ascii_uppercase();
    let first = upper.split_whitespace().next().unwrap_or("");
    if matches!(first, "PREPARE" | "EXECUTE" | "DEALLOCATE" | "DROP" | "USE") {
        return false;
    }
    if super::sequencer::user_var_names(text).is_empty() {
        return false;
    }
    if first == "SET" {
        let rest = &text.trim_start()[3..];
        return top_level_items(rest).iter().all(|item| {
            let t = item.trim_start();
            t.starts_with('@') && !t.starts_with("@@")
        });
    }
    true
}

/// A `SET` of session system variables of which at least one value is an expression
/// that may read data or variables (`SET sql_mode = (SELECT …)`, `SET time_zone =
/// @tz`): the names it sets, so that their values, not the statement, reach the other
/// backend. `None` for any other statement, and for plain literals (replaying those
/// gives the same value).
pub fn session_vars_set_by_expression(text: &str) -> Option<Vec<String>> {
    let t = text.trim().trim_end_matches(';').trim();
    let upper = t.to_ascii_uppercase();
    if !upper.starts_with("SET ") {
        return None;
    }
    let mut names = Vec::new();
    let mut computed = false;
    for item in top_level_items(&t[3..]) {
        let item = item.trim();
        let (target, value) = item.split_once(":=").or_else(|| item.split_once('='))?;
        let target = target.trim();
        let lower = target.to_ascii_lowercase();
        let name = lower
            .strip_prefix("@@session.")
            .or_else(|| lower.strip_prefix("@@local."))
            .or_else(|| lower.strip_prefix("session "))
            .or_else(|| lower.strip_prefix("local "))
            .or_else(|| lower.strip_prefix("@@"))
            .unwrap_or(&lower)
            .trim();
        // A user variable (`@a`) or a global keeps the name from being plain.
        let plain = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !lower.starts_with("@@global")
            && !lower.starts_with("global ");
        // Variables whose replay is not a plain value (the transaction, names, roles).
        let special = matches!(
            name,
            "autocommit"
                | "names"
                | "character"
                | "charset"
                | "transaction"
                | "role"
                | "password"
                | "statement"
        );
        if !plain || special {
            return None;
        }
        computed |= value.contains('(') || value.contains('@');
        names.push(name.to_string());
    }
    (computed && !names.is_empty()).then_some(names)
}

/// `SELECT @@session.a, @@session.b, …`.
fn sysvars_query(names: &[String]) -> String {
    let cols: Vec<String> = names.iter().map(|n| format!("@@session.{n}")).collect();
    format!("SELECT {}", cols.join(", "))
}

/// A session system variable's value, as read back in the text protocol, as a
/// literal: numbers as they are, anything else as a hex string.
fn sysvar_literal(value: &Option<Vec<u8>>) -> String {
    match value {
        None => "NULL".into(),
        Some(v) => {
            let text = String::from_utf8_lossy(v);
            if !text.is_empty() && text.parse::<f64>().is_ok() && !text.contains(['e', 'E', ' ']) {
                text.into_owned()
            } else if v.is_empty() {
                "''".into()
            } else {
                let hex: String = v.iter().map(|b| format!("{b:02X}")).collect();
                format!("X'{hex}'")
            }
        }
    }
}

/// `text` split at the commas outside quotes and parentheses.
fn top_level_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<u8>, 0);
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == b'\\' && q != b'`' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'(' => depth += 1,
                b')' => depth -= 1,
                b',' if depth == 0 => {
                    items.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
        i += 1;
    }
    items.push(&text[start..]);
    items
}

/// The target a session statement sets, so that a later one for the same target
/// replaces it in the history; `None` for statements kept as they are.
pub fn history_key(text: &str) -> Option<String> {
    let t = text.trim().trim_end_matches(';').trim();
    let upper = t.to_ascii_uppercase();
    let mut words = upper.split_whitespace();
    match words.next()? {
        "USE" => return Some("use".into()),
        "SET" => {}
        // The latest PREPARE of a name replaces the earlier one.
        "PREPARE" => return prepared_name(t, 1).map(|n| format!("prepare:{n}")),
        _ => return None,
    }
    let rest = upper[3..].trim_start();
    if rest.starts_with("NAMES") || rest.starts_with("CHARACTER SET") || rest.starts_with("CHARSET")
    {
        return Some("names".into());
    }
    if t.contains(',') || t.contains('(') {
        // Several assignments or an expression with a call: kept whole.
        return None;
    }
    let rest = rest
        .strip_prefix("SESSION ")
        .or_else(|| rest.strip_prefix("LOCAL "))
        .unwrap_or(rest);
    let rest = rest
        .strip_prefix("@@SESSION.")
        .or_else(|| rest.strip_prefix("@@LOCAL."))
        .or_else(|| rest.strip_prefix("@@"))
        .unwrap_or(rest);
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '$'))
        .collect();
    let after = rest[name.len()..].trim_start();
    (!name.is_empty() && (after.starts_with('=') || after.starts_with(":=")))
        .then(|| format!("var:{}", name.to_ascii_lowercase()))
}

/// The statement name of `PREPARE name …` / `DEALLOCATE PREPARE name` (the word at
/// `at`), lower-cased, backquotes removed.
fn prepared_name(text: &str, at: usize) -> Option<String> {
    let word = text.split_whitespace().nth(at)?;
    let name = word.trim_matches('`');
    (!name.is_empty()).then(|| name.to_lowercase())
}

/// `DEALLOCATE PREPARE name` / `DROP PREPARE name`: the history key it ends.
pub fn deallocated_key(text: &str) -> Option<String> {
    let upper = text.trim().to_ascii_uppercase();
    let mut words = upper.split_whitespace();
    match (words.next()?, words.next()?) {
        ("DEALLOCATE" | "DROP", "PREPARE") => {
            let t = text.trim().trim_end_matches(';');
            prepared_name(t, 2).map(|n| format!("prepare:{n}"))
        }
        _ => None,
    }
}

/// `PREPARE name FROM @var`: the statement name and the variable.
fn prepare_from_var(text: &str) -> Option<(String, String)> {
    let t = text.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = t.split_whitespace().collect();
    match words.as_slice() {
        [p, name, from, var]
            if p.eq_ignore_ascii_case("PREPARE") && from.eq_ignore_ascii_case("FROM") =>
        {
            let var = var.strip_prefix('@').filter(|v| !v.starts_with('@'))?;
            Some((name.to_string(), var.trim_matches('`').to_string()))
        }
        _ => None,
    }
}

/// Session statements to replay onto a newly opened link (see the module doc).
#[derive(Debug, Default)]
pub struct History {
    entries: Vec<(Option<String>, String)>,
    overflowed: bool,
}

impl History {
    pub fn record(&mut self, text: &str) {
        self.record_keyed(history_key(text), text);
    }

    /// Record `text` under `key` (it replaces an earlier entry of the same key).
    pub fn record_keyed(&mut self, key: Option<String>, text: &str) {
        if let Some(k) = &key {
            self.entries.retain(|(e, _)| e.as_ref() != Some(k));
        }
        if self.entries.len() >= HISTORY_LIMIT {
            self.overflowed = true;
            return;
        }
        self.entries.push((key, text.to_string()));
    }

    /// Drop the entry recorded under `key` (a deallocated prepared statement).
    pub fn forget(&mut self, key: &str) {
        self.entries.retain(|(e, _)| e.as_deref() != Some(key));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.overflowed = false;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn statements(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, s)| s.as_str())
    }
}

/// A session-level override the proxy answers itself:
/// `SET [@@session.|SESSION ]wolfscale_read_consistency = '…'` and
/// `SET [@@session.|SESSION ]wolfscale_session_index = N` (an index passed on from
/// another connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    Consistency(ReadConsistency),
    Index(u64),
    Invalid(String),
}

pub fn parse_override(text: &str) -> Option<Override> {
    let t = text.trim().trim_end_matches(';').trim();
    let lower = t.to_ascii_lowercase();
    let rest = lower.strip_prefix("set")?.trim_start();
    let rest = rest
        .strip_prefix("session ")
        .or_else(|| rest.strip_prefix("@@session."))
        .or_else(|| rest.strip_prefix("@@"))
        .unwrap_or(rest)
        .trim_start();
    let (name, value) = rest.split_once('=')?;
    let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
    match name.trim() {
        "wolfscale_read_consistency" => Some(match ReadConsistency::parse(value) {
            Some(c) => Override::Consistency(c),
            None => Override::Invalid(format!(
                "Variable 'wolfscale_read_consistency' can't be set to the value of '{value}' \
                 (expected one of {})",
                ReadConsistency::NAMES
            )),
        }),
        "wolfscale_session_index" => Some(match value.parse() {
            Ok(n) => Override::Index(n),
            Err(_) => Override::Invalid(format!(
                "Variable 'wolfscale_session_index' can't be set to the value of '{value}'"
            )),
        }),
        _ => None,
    }
}

/// The index and level of a [`READABLE_QUERY`].
pub fn parse_readable(text: &str) -> Option<(u64, bool)> {
    let rest = text.strip_prefix(READABLE_QUERY)?;
    let mut words = rest.split_ascii_whitespace();
    let index = words.next()?.parse().ok()?;
    let fresh = match words.next()? {
        "FRESH" => true,
        "SESSION" => false,
        _ => return None,
    };
    words.next().is_none().then_some((index, fresh))
}

/// `SELECT @@wolfscale_session_index` (or `@@session.…`): the session's index, as a
/// hint a pooled application can pass to another connection.
pub fn asks_index(text: &str) -> bool {
    let lower = text
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "select @@wolfscale_session_index" | "select @@session.wolfscale_session_index"
    )
}

/// The session's routing state (cluster nodes only).
#[derive(Default)]
pub struct RouteState {
    /// The connection to the leader's proxy, once needed.
    pub link: Option<Backend>,
    /// Status flags of the link's last reply.
    pub link_status: u16,
    /// This session came from another node's router (proven): never forwarded again.
    pub forwarded: bool,
    /// Locks or temporary tables live on the leader: everything goes there.
    pub sticky: bool,
    pub history: History,
    /// The log index of this session's last write (on the leader: set by the commit;
    /// on a follower: learned from the leader's session).
    pub index: u64,
    pub last_on_leader: bool,
    /// This session's override of `[proxy] read_consistency`.
    pub consistency: Option<ReadConsistency>,
    /// Counts the links opened: a statement prepared on an earlier link is prepared
    /// again on the current one.
    pub link_gen: u64,
    /// The next id of a statement first prepared on the leader (see `stmt_route`).
    pub next_proxy_id: u32,
    /// The member id of the leader the link goes to.
    pub link_leader: Option<String>,
    /// On a standalone proxy: the member whose proxy the session's backend is.
    pub read_member: Option<String>,
    /// The client's last COM_SET_OPTION, as sent, for a link opened later.
    pub set_option: Option<Vec<u8>>,
    /// The member id of a leader whose proxy `ensure_link` could not reach just now
    /// (it may have died: the statement is held until another leader is known).
    pub unreachable: Option<String>,
    /// On a forwarded session: the request id the current statement carries (see
    /// `super::requests`), and the one the next statement will.
    pub request: Option<u128>,
    pub request_next: Option<u128>,
    /// The leader refused the request stamp of the statement just sent.
    pub stamp_refused: bool,
}

/// What [`Session::replay_onto`] did.
pub(super) struct Replayed {
    /// Statements that failed.
    failed: usize,
    /// The server status after the last one, if any ran.
    status: Option<u16>,
}

/// What [`Session::link_or_hold`] found.
pub(super) enum Linked {
    /// The link to the leader is open.
    Ready,
    /// This node has become the (fenced) leader meanwhile: the statement runs here.
    Here,
    /// The client has been answered (an error), with what the session does next.
    Answered(Flow),
}

impl RouteState {
    fn link_pinned(&self) -> bool {
        self.link.is_some()
            && (self.link_status & SERVER_STATUS_IN_TRANS != 0
                || self.link_status & SERVER_STATUS_AUTOCOMMIT == 0)
    }
}

/// Why a forwarded statement did not complete.
pub(super) enum LinkFailure {
    /// The link broke; what the client got of the reply, if anything.
    Broken {
        sent_any: bool,
        why: String,
    },
    /// The node the link goes to refused the statement as not the leader (it lost
    /// leadership): nothing ran there, and the client has been sent nothing.
    NotLeader,
    Client(SessionError),
}

/// Whether a complete reply is the refusal of a node that is not the leader (see
/// `sequencer::follower_refusal`): an ERR 1290 whose message says so.
fn is_not_leader_refusal(reply: &[u8]) -> bool {
    let Some(payload) = reply.get(4..) else {
        return false;
    };
    if payload.first() != Some(&0xFF) || payload.get(1..3) != Some(&1290u16.to_le_bytes()[..]) {
        return false;
    }
    let text = String::from_utf8_lossy(payload.get(3..).unwrap_or_default());
    text.contains(super::sequencer::NOT_LEADER_TEXT)
}

pub(super) fn lost_leader(why: &str) -> ServerError {
    ServerError::new(
        2013,
        "HY000",
        format!(
            "Lost connection to the WolfScale leader during the statement ({why}); its outcome \
             is unknown: check the data before retrying"
        ),
    )
}

/// How long a held statement leaves alone a leader that could not take it (its proxy
/// unreachable, or it refused as not the leader) before trying it again.
pub(super) const AVOID_FOR: std::time::Duration = std::time::Duration::from_millis(200);

/// The leader changed while a session's state was on the old one.
fn state_lost() -> ServerError {
    ServerError::new(
        1180,
        "HY000",
        "The WolfScale leader changed while this session had a transaction, locks or \
         temporary tables there; they are gone (an open transaction was rolled back): \
         reconnect and retry",
    )
}

/// A statement held for a leader through a failover that was not found in time.
fn no_leader_in_time(wait: std::time::Duration) -> ServerError {
    ServerError::new(
        1290,
        "HY000",
        format!(
            "No WolfScale leader could take this statement within failover_wait_ms ({} ms): \
             nothing was run; retry shortly",
            wait.as_millis()
        ),
    )
}

fn no_leader(why: &str) -> ServerError {
    ServerError::new(
        1290,
        "HY000",
        format!("No WolfScale leader is reachable right now ({why}); retry shortly"),
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The read consistency in force for this session.
    fn consistency(&self) -> ReadConsistency {
        self.route
            .consistency
            .unwrap_or(self.shared.read_consistency)
    }

    pub(super) fn facts(&self) -> Facts {
        let local_autocommit_off = self.status & SERVER_STATUS_AUTOCOMMIT == 0;
        Facts {
            pinned: self.route.sticky || self.route.link_pinned() || local_autocommit_off,
            local_txn: self.status & SERVER_STATUS_IN_TRANS != 0 && !local_autocommit_off,
            last_on_leader: self.route.last_on_leader,
        }
    }

    /// The overrides and the index hint, on any cluster node. `None`: not one of them.
    pub(super) async fn route_intercept(
        &mut self,
        p: &Packet,
        text: &str,
    ) -> Result<Option<Flow>, SessionError> {
        if self.route.forwarded && text == INDEX_QUERY {
            let ok = crate::protocol::codes::ok_payload(self.route.index, 0, self.status, 0);
            self.client
                .send(p.last_seq.wrapping_add(1), &ok)
                .await
                .map_err(SessionError::Client)?;
            return Ok(Some(Flow::Continue));
        }
        if let Some((need, fresh)) = parse_readable(text).filter(|_| self.route.forwarded) {
            let readable = match self.shared.replicator.get().cloned() {
                Some(rep) => {
                    let need = if fresh {
                        need.max(rep.known_committed())
                    } else {
                        need
                    };
                    (!fresh || rep.leader_heard_lately())
                        && rep.local_healthy()
                        && (rep.applied_index() >= need
                            || rep.wait_applied(need, self.shared.read_wait).await)
                }
                None => true,
            };
            let ok = crate::protocol::codes::ok_payload(u64::from(readable), 0, self.status, 0);
            self.client
                .send(p.last_seq.wrapping_add(1), &ok)
                .await
                .map_err(SessionError::Client)?;
            return Ok(Some(Flow::Continue));
        }
        if self.route.forwarded && text == READ_INDEX_QUERY {
            let rep = self.shared.replicator.get().cloned();
            let reply = match rep {
                Some(rep) => rep.read_index().await,
                None => Err("not a cluster node".into()),
            };
            match reply {
                Ok(index) => {
                    let ok = crate::protocol::codes::ok_payload(index, 0, self.status, 0);
                    self.client
                        .send(p.last_seq.wrapping_add(1), &ok)
                        .await
                        .map_err(SessionError::Client)?;
                }
                Err(e) => self.reply_err(p.last_seq, no_leader(&e)).await?,
            }
            return Ok(Some(Flow::Continue));
        }
        if asks_index(text) {
            let sql = format!("SELECT {} AS `@@wolfscale_session_index`", self.route.index);
            let mut raw = bytes::BytesMut::new();
            encode_query(&mut raw, &sql);
            self.send_backend(&raw).await?;
            self.relay(Expect::Query).await?;
            return Ok(Some(Flow::Continue));
        }
        match parse_override(text) {
            None => Ok(None),
            Some(Override::Invalid(msg)) => {
                self.reply_err(p.last_seq, ServerError::new(1231, "42000", msg))
                    .await?;
                Ok(Some(Flow::Continue))
            }
            Some(o) => {
                match o {
                    Override::Consistency(c) => self.route.consistency = Some(c),
                    Override::Index(n) => self.route.index = self.route.index.max(n),
                    Override::Invalid(_) => {}
                }
                let ok = crate::protocol::codes::ok_payload(0, 0, self.status, 0);
                self.client
                    .send(p.last_seq.wrapping_add(1), &ok)
                    .await
                    .map_err(SessionError::Client)?;
                Ok(Some(Flow::Continue))
            }
        }
    }

    /// Whether this session routes (a follower's session, or one whose state is still
    /// on another node's leader).
    pub(super) fn routes(&self) -> bool {
        let Some(rep) = self.shared.replicator.get() else {
            return false;
        };
        if self.route.forwarded {
            return false;
        }
        rep.writable_term().is_none() || self.route.link_pinned() || self.route.sticky
    }

    /// A COM_QUERY on a session that routes.
    pub(super) async fn routed_query(
        &mut self,
        p: &Packet,
        text: &str,
        class: Classification,
    ) -> Result<Flow, SessionError> {
        if let Some(err) = self.refuse_dynamic_sql(text).await? {
            self.reply_err(p.last_seq, err).await?;
            return Ok(Flow::Continue);
        }
        let target = decide(&class, text, self.facts());
        tracing::trace!(id = self.auth.id, ?target, class = %class, "route");
        let label = match target {
            Target::Both => "both",
            Target::Leader => "leader",
            Target::Local => "local",
        };
        metrics::counter!(crate::telemetry::ROUTED, "target" => label).increment(1);
        match target {
            Target::Both => self.on_both(p, text).await,
            Target::Leader => {
                let sticky = makes_sticky(text);
                let flow = self.on_leader(p, Expect::Query, Some(text)).await?;
                if sticky {
                    self.route.sticky = true;
                }
                if class.class == StatementClass::Ddl {
                    self.refresh_catalog_after_ddl().await;
                }
                Ok(flow)
            }
            Target::Local => {
                if self.fresh_enough().await? {
                    self.route.last_on_leader = false;
                    self.forward(p, Some(Expect::Query)).await
                } else {
                    self.on_leader(p, Expect::Query, Some(text)).await
                }
            }
        }
    }

    /// After a DDL this session sent to the leader (its reply is already with the
    /// client): once this node has applied it (waiting up to `read_wait_ms`), re-read
    /// the catalog, so that the session's next statement knows a table's engine or a
    /// stored function it just created, as on the leader.
    async fn refresh_catalog_after_ddl(&mut self) {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return;
        };
        let applied = if rep.standalone() {
            matches!(self.member_reached(self.route.index, false).await, Ok(true))
        } else {
            rep.wait_applied(self.route.index, self.shared.read_wait)
                .await
        };
        if applied {
            if let Err(e) = self.shared.catalog.refresh().await {
                tracing::warn!(error = %e, "cannot re-read the catalog after a DDL");
            }
        }
    }

    /// COM_SET_OPTION (multi-statements on or off) on a cluster node: every backend,
    /// and kept for a link opened later.
    pub(super) async fn routed_set_option(&mut self, p: &Packet) -> Result<Flow, SessionError> {
        self.send_backend(&p.raw).await?;
        let outcome = self.relay(Expect::Single).await?;
        if outcome.error.is_some() {
            return Ok(Flow::Continue);
        }
        self.route.set_option = Some(p.raw.to_vec());
        if self.route.link.is_some() {
            self.drain_on_link(&p.raw, Expect::Single).await;
        }
        Ok(Flow::Continue)
    }

    /// COM_INIT_DB on a session that routes: every backend.
    pub(super) async fn routed_init_db(&mut self, p: &Packet) -> Result<Flow, SessionError> {
        self.send_backend(&p.raw).await?;
        let outcome = self.relay(Expect::Single).await?;
        if outcome.error.is_some() {
            return Ok(Flow::Continue);
        }
        let db = String::from_utf8_lossy(&p.payload[1..]).into_owned();
        let sql = format!("USE `{}`", db.replace('`', "``"));
        self.route.history.record(&sql);
        if self.route.link.is_some() {
            self.drain_on_link(&p.raw, Expect::Single).await;
        }
        Ok(Flow::Continue)
    }

    /// Whether the local MariaDB may answer a read now, waiting up to `read_wait_ms`
    /// for the applier to reach the index the session's consistency needs.
    pub(super) async fn fresh_enough(&mut self) -> Result<bool, SessionError> {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return Ok(true);
        };
        if rep.standalone() {
            let need = match self.consistency() {
                ReadConsistency::Local => 0,
                ReadConsistency::Session => self.route.index,
                ReadConsistency::Fresh => return self.member_reached(self.route.index, true).await,
                ReadConsistency::Linearizable => match self.link_read_index().await {
                    Some(i) => i,
                    None => return Ok(false),
                },
            };
            return self.member_reached(need, false).await;
        }
        if !rep.local_healthy() {
            // Whatever the level: a MariaDB that fails its health check (a stalled
            // InnoDB) answers nothing here.
            return Ok(false);
        }
        let need = match self.consistency() {
            ReadConsistency::Local => return Ok(true),
            ReadConsistency::Session => self.route.index,
            // Everything known committed, the session's own writes included (the
            // follower may not have heard yet that they committed), and only while a
            // leader is heard from: a node that lost it cannot know what it misses.
            ReadConsistency::Fresh if !rep.leader_heard_lately() => return Ok(false),
            ReadConsistency::Fresh => rep.known_committed().max(self.route.index),
            ReadConsistency::Linearizable => match self.link_read_index().await {
                Some(i) => i,
                // No quorum-confirmed index: the leader answers itself.
                None => return Ok(false),
            },
        };
        if rep.applied_index() >= need {
            return Ok(true);
        }
        Ok(rep.wait_applied(need, self.shared.read_wait).await)
    }

    /// On a standalone proxy: whether the member this session reads from may serve a
    /// read that must see `need` (with `fresh`: all it knows committed), asking it
    /// (it waits up to its `read_wait_ms`) unless its last report already says so.
    pub(super) async fn member_reached(
        &mut self,
        need: u64,
        fresh: bool,
    ) -> Result<bool, SessionError> {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return Ok(true);
        };
        let state = self
            .route
            .read_member
            .as_deref()
            .and_then(|id| rep.member_state(id));
        match state {
            // Not heard from lately, or not healthy: the leader answers.
            None | Some((false, _)) => return Ok(false),
            Some((true, applied)) if !fresh && applied >= need => return Ok(true),
            Some(_) => {}
        }
        let mode = if fresh { "FRESH" } else { "SESSION" };
        let (outcome, _) = self
            .run_collect(&format!("{READABLE_QUERY} {need} {mode}"))
            .await?;
        Ok(outcome.error.is_none() && outcome.affected_rows == 1)
    }

    /// On a standalone proxy, before a command: a session whose read member has become
    /// the leader (the member that takes the writes, and whose failure would cut the
    /// session), or has stopped answering or turned unhealthy, moves its reads to
    /// another member, when nothing ties it to the old one: no transaction open there,
    /// no prepared statement (their ids are that member's), no KILL stand-in. The
    /// history is replayed on the new member first, as on a new link. If no member
    /// takes it, the session stays where it is.
    pub(super) async fn move_reads_if_needed(&mut self) {
        self.move_reads(false).await;
    }

    /// [`Self::move_reads_if_needed`]; `lost`: the member's connection just closed,
    /// whatever the view says. Whether the session moved.
    pub(super) async fn move_reads(&mut self, lost: bool) -> bool {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return false;
        };
        if !rep.standalone() {
            return false;
        }
        let Some(member) = self.route.read_member.clone() else {
            return false;
        };
        let healthy = |rep: &crate::proxy::replicate::SharedReplicator| {
            rep.member_state(&member).is_some_and(|(h, _)| h)
        };
        if lost {
            // A connection a member that is still there closed was ended on purpose
            // (KILL CONNECTION, wait_timeout): the session ends with it. A member that
            // died stops answering the proxy's polls at once; wait a little for that.
            let deadline = tokio::time::Instant::now() + LOST_MEMBER_PATIENCE;
            while healthy(&rep) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return false;
                }
                rep.changed(left).await;
            }
        }
        let healthy = healthy(&rep);
        let leads = rep.leads(&member);
        if healthy && !leads {
            return false;
        }
        if self.status & SERVER_STATUS_IN_TRANS != 0
            || !self.stmts.is_empty()
            || !self.text_kills.is_empty()
            || self.route.history.overflowed()
        {
            return false;
        }
        let targets: Vec<_> = rep
            .read_targets()
            .into_iter()
            .filter(|m| m.id != member)
            .collect();
        let mut login = self.auth.login.clone();
        login.identity = Identity::trusted();
        login.forward = Some(backend::Forward {
            secret: rep.secret().to_vec(),
            client: self.auth.origin.peer,
            local: self.auth.origin.local,
        });
        for target in targets {
            // Only a follower is worth moving to from the leader.
            if leads && rep.leads(&target.id) {
                continue;
            }
            let Ok(mut next) =
                backend::connect(&target.proxy_addr, &login, self.shared.max_packet).await
            else {
                continue;
            };
            let status = match self.replay_onto(&mut next, "another member").await {
                Ok(Replayed { failed: 0, status }) => {
                    status.unwrap_or_else(|| super::session::ok_status(&next.login_ok.payload))
                }
                _ => continue,
            };
            let mut old = std::mem::replace(&mut self.backend, next);
            let mut quit = bytes::BytesMut::new();
            quit.extend_from_slice(&[1, 0, 0, 0, crate::protocol::command::COM_QUIT]);
            old.conn.write_raw(&quit).await.ok();
            old.conn.flush().await.ok();
            self.status = status;
            self.vars = None;
            self.registration.update(super::registry::Entry {
                user: self.auth.login.user.clone(),
                backend_thread: self.backend.thread_id,
                running_on_leader: None,
            });
            tracing::info!(id = self.auth.id, from = %member, to = %target.id, leads, healthy, lost, "the session reads from another member now");
            self.route.read_member = Some(target.id);
            return true;
        }
        false
    }

    /// The leader's quorum-confirmed read index, over the link.
    async fn link_read_index(&mut self) -> Option<u64> {
        if self.ensure_link().await.is_err() {
            return None;
        }
        let mut raw = bytes::BytesMut::new();
        encode_query(&mut raw, READ_INDEX_QUERY);
        let outcome = self.drain_on_link(&raw, Expect::Single).await?;
        (outcome.error.is_none()).then_some(outcome.affected_rows)
    }

    /// A session statement: the local MariaDB answers the client; the link, if open,
    /// runs it too; the history keeps it for a later link.
    async fn on_both(&mut self, p: &Packet, text: &str) -> Result<Flow, SessionError> {
        self.vars = None;
        let sysvars = session_vars_set_by_expression(text);
        let by_value = carries_user_vars(text) || sysvars.is_some();
        // One that reads data must see the session's writes, as a read would.
        let on_leader_first = (self.route.link_pinned() && self.facts().pinned)
            || (by_value && !self.fresh_enough().await?);
        if on_leader_first {
            // In a transaction on the leader, the leader's answer is the one that
            // counts (SELECT … INTO @v reads the transaction's view); the local
            // MariaDB follows.
            let flow = self.on_leader(p, Expect::Query, Some(text)).await?;
            if let Some(names) = &sysvars {
                if let Some(set) = self.link_sysvars(names).await {
                    self.internal(&set).await?;
                }
                return Ok(flow);
            }
            if by_value {
                if let Some(vars) = self.link_user_vars(text).await {
                    let set = self.record_user_vars(&vars);
                    if let Some(set) = set {
                        self.internal(&set).await?;
                    }
                }
                return Ok(flow);
            }
            self.send_backend(&p.raw).await?;
            let (outcome, _) = self.collect_reply(Expect::Query).await?;
            if outcome.error.is_none() {
                self.record_session_statement(text).await?;
            }
            return Ok(flow);
        }
        self.send_backend(&p.raw).await?;
        let outcome = self.relay(Expect::Query).await?;
        if outcome.error.is_some() {
            return Ok(Flow::Continue);
        }
        if let Some(names) = &sysvars {
            let (outcome, reply) = self.run_collect(&sysvars_query(names)).await?;
            let values = (outcome.error.is_none())
                .then(|| super::sequencer::first_row_values(&reply))
                .flatten();
            if let Some(set) = values.map(|v| self.record_sysvars(names, &v)) {
                if self.route.link.is_some() {
                    let mut raw = bytes::BytesMut::new();
                    encode_query(&mut raw, &set);
                    self.drain_on_link(&raw, Expect::Query).await;
                }
            }
            return Ok(Flow::Continue);
        }
        if by_value {
            // The values it produced go to the leader, not the statement (which
            // would run again there, on other data: `SET @n = (SELECT COUNT(*) …)`).
            let vars = self.user_vars_of(text).await?;
            if let Some(set) = self.record_user_vars(&vars) {
                if self.route.link.is_some() {
                    let mut raw = bytes::BytesMut::new();
                    encode_query(&mut raw, &set);
                    self.drain_on_link(&raw, Expect::Query).await;
                }
            }
            return Ok(Flow::Continue);
        }
        self.record_session_statement(text).await?;
        if self.route.link.is_some() {
            if let Some(o) = self.drain_on_link(&p.raw, Expect::Query).await {
                if let Some(code) = o.error {
                    tracing::warn!(
                        id = self.auth.id,
                        code,
                        statement = text,
                        "a session statement that ran here failed on the leader"
                    );
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Record a session statement that ran here in the history. `PREPARE s FROM @v`
    /// is recorded with the text `@v` held (the variable may change before a link
    /// replays it); a deallocation drops the statement's entry.
    async fn record_session_statement(&mut self, text: &str) -> Result<(), SessionError> {
        if let Some(key) = deallocated_key(text) {
            self.route.history.forget(&key);
            return Ok(());
        }
        if let Some((name, _)) = prepare_from_var(text) {
            let vars = self.user_vars_of(text).await?;
            if let Some((_, value)) = vars.first() {
                let sql = format!("PREPARE {name} FROM {}", value.literal());
                self.route.history.record_keyed(history_key(text), &sql);
                return Ok(());
            }
        }
        self.route.history.record(text);
        Ok(())
    }

    /// Record user variables in the history, one entry per variable, and return the
    /// one statement that sets them all (`None` if there are none).
    fn record_user_vars(
        &mut self,
        vars: &[(String, crate::apply::entry::Value)],
    ) -> Option<String> {
        let sets: Vec<String> = vars
            .iter()
            .map(|(name, v)| format!("@{} = {}", crate::apply::quote_ident(name), v.literal()))
            .collect();
        for ((name, _), set) in vars.iter().zip(&sets) {
            let key = format!("var:@{}", name.to_lowercase());
            self.route
                .history
                .record_keyed(Some(key), &format!("SET {set}"));
        }
        (!sets.is_empty()).then(|| format!("SET {}", sets.join(", ")))
    }

    /// Record session system variables `names` with `values` in the history, one entry
    /// per variable; the statement that sets them all.
    fn record_sysvars(&mut self, names: &[String], values: &[Option<Vec<u8>>]) -> String {
        let sets: Vec<String> = names
            .iter()
            .zip(values)
            .map(|(n, v)| format!("@@session.{n} = {}", sysvar_literal(v)))
            .collect();
        for (n, set) in names.iter().zip(&sets) {
            self.route
                .history
                .record_keyed(Some(format!("var:{n}")), &format!("SET {set}"));
        }
        format!("SET {}", sets.join(", "))
    }

    /// Session system variables `names` read back from the leader's session and
    /// recorded; the statement that sets them here.
    async fn link_sysvars(&mut self, names: &[String]) -> Option<String> {
        let (outcome, reply) = self.collect_on_link(&sysvars_query(names)).await?;
        if outcome.error.is_some() {
            return None;
        }
        let values = super::sequencer::first_row_values(&reply)?;
        Some(self.record_sysvars(names, &values))
    }

    /// Run one of the proxy's own queries on the link and return its reply. `None`
    /// (and the link dropped) if the link broke.
    pub(super) async fn collect_on_link(&mut self, sql: &str) -> Option<(Outcome, Vec<u8>)> {
        let mut raw = bytes::BytesMut::new();
        encode_query(&mut raw, sql);
        let limit = 2 * self.shared.max_packet;
        let link = self.route.link.as_mut()?;
        let read = async {
            link.conn.write_raw(&raw).await?;
            link.conn.flush().await?;
            super::stmt_route::collect(link, Expect::Query, limit).await
        };
        match read.await {
            Ok(reply) => Some(reply),
            Err(e) => {
                tracing::warn!(id = self.auth.id, error = %e, "the link to the leader broke");
                self.route.link = None;
                None
            }
        }
    }

    /// The user variables `text` names, read back from the leader's session.
    async fn link_user_vars(
        &mut self,
        text: &str,
    ) -> Option<Vec<(String, crate::apply::entry::Value)>> {
        let names = super::sequencer::user_var_names(text);
        if names.is_empty() {
            return Some(vec![]);
        }
        let query = super::sequencer::user_vars_query(&names);
        let (outcome, reply) = self.collect_on_link(&query).await?;
        if outcome.error.is_some() {
            return None;
        }
        match super::sequencer::parse_user_vars(names, &query, &reply) {
            Ok(vars) => Some(vars),
            Err(e) => {
                tracing::warn!(id = self.auth.id, error = %e, "cannot read user variables on the leader");
                None
            }
        }
    }

    /// Open the link if it is not open: log into the leader's proxy as the session's
    /// account, then replay the history.
    pub(super) async fn ensure_link(&mut self) -> Result<(), ServerError> {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return Err(no_leader("not a cluster node"));
        };
        if self.route.link.is_some() {
            let leader = rep.leader().map(|m| m.id);
            if leader.is_none() || leader == self.route.link_leader {
                return Ok(());
            }
            // The leader changed. A session whose state was on the old one (a
            // transaction, locks, temporary tables) cannot go on honestly: it is
            // ended with this error. Any other gets a link to the new leader.
            let pinned = self.route.link_pinned() || self.route.sticky;
            tracing::info!(id = self.auth.id, old = ?self.route.link_leader, new = ?leader, pinned, "the leader changed: re-opening the link");
            self.route.link = None;
            if pinned {
                self.route.sticky = false;
                self.close_after_reply = true;
                return Err(state_lost());
            }
        }
        if self.route.history.overflowed() {
            return Err(ServerError::new(
                1235,
                "42000",
                format!(
                    "This session set more than {HISTORY_LIMIT} distinct session variables; \
                     WolfScale cannot move its state to the leader: reconnect, or connect to the leader"
                ),
            ));
        }
        let Some(leader) = rep.leader() else {
            return Err(no_leader("no leader is elected"));
        };
        if leader.id == rep.me().id {
            return Err(no_leader("this node is becoming the leader"));
        }
        let db = match self.internal_row("SELECT DATABASE()").await {
            Ok(row) => row.into_iter().next().flatten(),
            Err(e) => return Err(no_leader(&e.to_string())),
        };
        let mut login = self.auth.login.clone();
        login.database = db;
        login.identity = Identity::trusted();
        login.forward = Some(backend::Forward {
            secret: rep.secret().to_vec(),
            client: self.auth.origin.peer,
            local: self.auth.origin.local,
        });
        let mut link = backend::connect(&leader.proxy_addr, &login, self.shared.max_packet)
            .await
            .map_err(|e| {
                tracing::warn!(id = self.auth.id, leader = %leader.id, error = %e, "cannot open the link to the leader");
                match e {
                    backend::BackendError::Refused(err) => super::session::err_from_payload(&err.payload),
                    other => {
                        self.route.unreachable = Some(leader.id.clone());
                        no_leader(&other.to_string())
                    }
                }
            })?;
        let status = super::session::ok_status(&link.login_ok.payload);
        if let Err(e) = self.replay_onto(&mut link, "the leader").await {
            return Err(no_leader(&e.to_string()));
        }
        tracing::debug!(id = self.auth.id, leader = %leader.id, replayed = self.route.history.len(), "link to the leader opened");
        self.route.link_status = status;
        self.route.link = Some(link);
        self.route.link_leader = Some(leader.id.clone());
        self.route.link_gen += 1;
        Ok(())
    }

    /// Replay the session's history, then its last COM_SET_OPTION, on `backend`, a
    /// connection just opened for the session (`to` names it in logs). A statement that
    /// fails is logged and counted; a broken connection is an error.
    async fn replay_onto(
        &self,
        backend: &mut Backend,
        to: &str,
    ) -> Result<Replayed, crate::protocol::ProtoError> {
        let mut out = Replayed {
            failed: 0,
            status: None,
        };
        for sql in self.route.history.statements() {
            let mut raw = bytes::BytesMut::new();
            encode_query(&mut raw, sql);
            backend.conn.write_raw(&raw).await?;
            backend.conn.flush().await?;
            let o = drain(backend, Expect::Query).await?;
            out.status = o.status.or(out.status);
            if o.error.is_some() {
                tracing::warn!(id = self.auth.id, code = ?o.error, statement = sql, to, "a session statement failed when replayed");
                out.failed += 1;
            }
        }
        if let Some(raw) = &self.route.set_option {
            backend.conn.write_raw(raw).await?;
            backend.conn.flush().await?;
            let o = drain(backend, Expect::Single).await?;
            if o.error.is_some() {
                out.failed += 1;
            }
        }
        Ok(out)
    }

    /// Run a client command on the leader, relaying its reply; then learn the
    /// session's index. `text`: the statement of a COM_QUERY.
    pub(super) async fn on_leader(
        &mut self,
        p: &Packet,
        expect: Expect,
        text: Option<&str>,
    ) -> Result<Flow, SessionError> {
        // A read may be sent again if the link breaks before any of its reply went
        // out; anything else may have run, and its outcome is unknown.
        let retry_safe = text.is_some_and(|t| {
            matches!(expect, Expect::Query)
                && crate::sql::classify(t).class == StatementClass::Read
                && !t.to_ascii_uppercase().contains("FOR UPDATE")
        });
        let deadline = tokio::time::Instant::now() + self.shared.failover_wait;
        let mut avoid = None;
        // An autocommit write gets a request id, so that if the link breaks before
        // its reply the next leader can say whether it committed (`super::requests`).
        let request = self
            .stamps(text)
            .then(rand::random::<u128>)
            .filter(|_| !(self.route.link_pinned() || self.route.sticky));
        let rep = self.shared.replicator.get().cloned();
        loop {
            match self.link_or_hold(p, deadline, &mut avoid).await? {
                Linked::Ready => {}
                Linked::Here => return Box::pin(self.command(p.clone())).await,
                Linked::Answered(flow) => return Ok(flow),
            }
            let leader = self.route.link_leader.clone();
            // State of the session's on the leader (a transaction, locks): it cannot
            // move to another.
            let pinned = self.route.link_pinned() || self.route.sticky;
            // Any entry for the request comes after what this node knows committed now.
            let since = rep.as_ref().map_or(0, |r| r.known_committed());
            match self.on_link(p, expect, text, request).await? {
                Ok(flow) => return Ok(flow),
                Err(LinkFailure::Broken {
                    sent_any: false,
                    why,
                }) if request.is_some() && !pinned && !self.route.stamp_refused => {
                    tracing::info!(
                        id = self.auth.id,
                        ?leader,
                        why,
                        "the link broke before a write's reply: asking the next leader whether it committed"
                    );
                    self.route.link = None;
                    avoid = leader.map(|l| (l, tokio::time::Instant::now() + AVOID_FOR));
                    let id = request.unwrap_or_default();
                    match self
                        .resolve_request(p, id, since, deadline, &mut avoid)
                        .await?
                    {
                        super::requests::Resolved::Answered(flow) => return Ok(flow),
                        // Never committed: sent again, under the same id.
                        super::requests::Resolved::Absent => continue,
                    }
                }
                Err(LinkFailure::NotLeader) if !pinned => {
                    tracing::debug!(
                        id = self.auth.id,
                        ?leader,
                        "refused as not the leader: held for the next one"
                    );
                    self.route.link = None;
                }
                Err(LinkFailure::Broken {
                    sent_any: false,
                    why,
                }) if retry_safe && !pinned => {
                    tracing::debug!(
                        id = self.auth.id,
                        ?leader,
                        why,
                        "the link broke before a read's reply: held for the next leader"
                    );
                    self.route.link = None;
                }
                Err(failure) => return self.link_failed(p, failure).await,
            }
            // Not this leader again, for a moment: it may be gone, or still fencing.
            avoid = leader.map(|l| (l, tokio::time::Instant::now() + AVOID_FOR));
        }
    }

    /// Hold a statement that needs the leader until there is one this session can
    /// reach, up to `deadline` (`[proxy] failover_wait_ms` from when it arrived), and
    /// open the link to it. A KILL of the session, or the client going away, ends the
    /// wait; nothing is sent anywhere meanwhile.
    pub(super) async fn link_or_hold(
        &mut self,
        p: &Packet,
        deadline: tokio::time::Instant,
        avoid: &mut Option<(String, tokio::time::Instant)>,
    ) -> Result<Linked, SessionError> {
        /// Pipelined bytes read from the client while watching it, at most.
        const WATCH_LIMIT: usize = 64 * 1024;
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return Ok(Linked::Ready);
        };
        let mut held = None;
        let mut watch_client = true;
        loop {
            if rep.writable_term().is_some() {
                if self.route.link.is_some() && (self.route.link_pinned() || self.route.sticky) {
                    // Its transaction, locks or temporary tables were on the old leader.
                    self.route.link = None;
                    self.route.sticky = false;
                    self.close_after_reply = true;
                    self.reply_err(p.last_seq, state_lost()).await?;
                    return Ok(Linked::Answered(Flow::Close));
                }
                self.route.link = None;
                *avoid = None;
                return Ok(Linked::Here);
            }
            let leader = rep.leader().filter(|m| m.id != rep.me().id);
            let usable = leader.as_ref().is_some_and(|m| {
                avoid
                    .as_ref()
                    .is_none_or(|(id, until)| *id != m.id || tokio::time::Instant::now() >= *until)
            });
            if usable && self.link_closed() {
                // The leader's proxy closed it (its process ended): nothing was sent.
                let pinned = self.route.link_pinned() || self.route.sticky;
                tracing::info!(
                    id = self.auth.id,
                    pinned,
                    "the link to the leader was closed by the other side"
                );
                *avoid = self
                    .route
                    .link_leader
                    .clone()
                    .map(|l| (l, tokio::time::Instant::now() + AVOID_FOR));
                self.route.link = None;
                if pinned {
                    self.route.sticky = false;
                    self.reply_err(p.last_seq, state_lost()).await?;
                    return Ok(Linked::Answered(Flow::Close));
                }
                continue;
            }
            if usable {
                self.route.unreachable = None;
                match self.ensure_link().await {
                    Ok(()) => return Ok(Linked::Ready),
                    Err(_) if self.route.unreachable.is_some() && !self.route.link_pinned() => {
                        *avoid = self
                            .route
                            .unreachable
                            .take()
                            .map(|l| (l, tokio::time::Instant::now() + AVOID_FOR));
                        // Its proxy cannot be reached: it may be dead, and an
                        // election under way. Held for the next leader.
                    }
                    Err(e) => {
                        self.reply_err(p.last_seq, e).await?;
                        return Ok(Linked::Answered(Flow::Continue));
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::info!(id = self.auth.id, "no leader within failover_wait_ms");
                self.reply_err(p.last_seq, no_leader_in_time(self.shared.failover_wait))
                    .await?;
                return Ok(Linked::Answered(Flow::Continue));
            }
            let guard = held.get_or_insert_with(|| {
                tracing::debug!(id = self.auth.id, "statement held for a leader");
                self.registration.hold()
            });
            let h = guard.held.clone();
            let poll = (deadline - now).min(std::time::Duration::from_millis(50));
            tokio::select! {
                () = rep.changed(poll) => {}
                connection = h.killed() => {
                    let err = if connection {
                        ServerError::new(1927, "70100", "Connection was killed")
                    } else {
                        ServerError::new(1317, "70100", "Query execution was interrupted")
                    };
                    self.reply_err(p.last_seq, err).await?;
                    return Ok(Linked::Answered(if connection { Flow::Close } else { Flow::Continue }));
                }
                read = self.client.fill(), if watch_client => match read {
                    Ok(true) => watch_client = self.client.read_buffer().len() < WATCH_LIMIT,
                    // Gone: the statement is dropped, never released to a leader.
                    Ok(false) => return Err(SessionError::Client(crate::protocol::ProtoError::Closed)),
                    Err(e) => return Err(SessionError::Client(e)),
                },
            }
        }
    }

    /// Whether the other side has closed the open link (a FIN, an RST, or bytes nobody
    /// asked for, which only a closing server sends). Never waits.
    fn link_closed(&mut self) -> bool {
        let Some(link) = self.route.link.as_mut() else {
            return false;
        };
        // `fill` is cancel-safe: a poll that finds nothing reads nothing.
        futures_util::FutureExt::now_or_never(link.conn.fill()).is_some()
    }

    /// Send a client command on the link (open) and relay its reply; then learn the
    /// session's index.
    async fn on_link(
        &mut self,
        p: &Packet,
        expect: Expect,
        text: Option<&str>,
        request: Option<u128>,
    ) -> Result<Result<Flow, LinkFailure>, SessionError> {
        // The index question rides behind the statement, unless the statement could
        // make the leader ask for a file (LOAD DATA LOCAL), which would take it for
        // the file's contents.
        let pipelined = text.is_some_and(|t| !t.to_ascii_uppercase().contains("INFILE"));
        let mut raw = bytes::BytesMut::new();
        if let Some(id) = request {
            let stamp = format!(
                "{}{}",
                super::requests::STAMP_PREFIX,
                crate::cluster::requests::format_id(id)
            );
            encode_query(&mut raw, &stamp);
        }
        raw.extend_from_slice(&p.raw);
        if pipelined {
            encode_query(&mut raw, INDEX_QUERY);
        }
        let result = self
            .relay_link_after(&raw, usize::from(request.is_some()), expect)
            .await;
        self.route.last_on_leader = true;
        match result {
            Ok(outcome) => {
                if let Some(s) = outcome.status {
                    self.route.link_status = s;
                }
                let index = if pipelined {
                    self.drain_link(Expect::Single).await
                } else {
                    let mut q = bytes::BytesMut::new();
                    encode_query(&mut q, INDEX_QUERY);
                    self.drain_on_link(&q, Expect::Single).await
                };
                if let Some(o) = index.filter(|o| o.error.is_none()) {
                    self.route.index = self.route.index.max(o.affected_rows);
                }
                Ok(Ok(Flow::Continue))
            }
            Err(LinkFailure::Client(e)) => Err(e),
            Err(failure) => Ok(Err(failure)),
        }
    }

    /// A forwarded statement that did not complete, and cannot be sent again.
    pub(super) async fn link_failed(
        &mut self,
        p: &Packet,
        failure: LinkFailure,
    ) -> Result<Flow, SessionError> {
        match failure {
            LinkFailure::Client(e) => Err(e),
            LinkFailure::NotLeader => {
                // Nothing ran, but the session's state there is gone.
                self.route.link = None;
                self.route.sticky = false;
                self.reply_err(p.last_seq, state_lost()).await?;
                Ok(Flow::Close)
            }
            LinkFailure::Broken { sent_any, why } => {
                let pinned = self.route.link_pinned() || self.route.sticky;
                self.route.link = None;
                tracing::warn!(
                    id = self.auth.id,
                    why,
                    pinned,
                    "the link to the leader broke"
                );
                if sent_any || pinned {
                    // Part of a reply went out, or a transaction (locks, temporary
                    // tables) was on that leader: the session cannot go on honestly.
                    if !sent_any {
                        self.reply_err(p.last_seq, lost_leader(&why)).await.ok();
                    }
                    self.client.flush().await.ok();
                    return Ok(Flow::Close);
                }
                self.reply_err(p.last_seq, lost_leader(&why)).await?;
                Ok(Flow::Continue)
            }
        }
    }

    /// Send `raw` on the link and stream the reply to the client.
    pub(super) async fn relay_link(
        &mut self,
        raw: &[u8],
        expect: Expect,
    ) -> Result<Outcome, LinkFailure> {
        self.relay_link_after(raw, 0, expect).await
    }

    /// [`Self::relay_link`] for `raw` that starts with `skip` commands of the proxy's
    /// own, whose single-packet replies are read and dropped first.
    async fn relay_link_after(
        &mut self,
        raw: &[u8],
        skip: usize,
        expect: Expect,
    ) -> Result<Outcome, LinkFailure> {
        let Some(link) = self.route.link.as_mut() else {
            return Err(LinkFailure::Broken {
                sent_any: false,
                why: "no link".into(),
            });
        };
        let broken = |sent_any: bool, e: crate::protocol::ProtoError| LinkFailure::Broken {
            sent_any,
            why: e.to_string(),
        };
        link.conn
            .write_raw(raw)
            .await
            .map_err(|e| broken(false, e))?;
        link.conn.flush().await.map_err(|e| broken(false, e))?;
        self.route.stamp_refused = false;
        for _ in 0..skip {
            match drain(link, Expect::Single).await {
                Ok(o) if o.error.is_none() => {}
                Ok(o) => {
                    // The statement behind it runs all the same, without the stamp.
                    tracing::warn!(code = ?o.error, "the leader refused a request stamp");
                    self.route.stamp_refused = true;
                }
                Err(e) => return Err(broken(false, e)),
            }
        }
        // A KILL of this session meanwhile must reach the leader (see `kill_on_leader`).
        self.registration.running_on_leader(Some(link.thread_id));
        let result = self.relay_link_reply(expect).await;
        self.registration.running_on_leader(None);
        result
    }

    async fn relay_link_reply(&mut self, expect: Expect) -> Result<Outcome, LinkFailure> {
        let broken = |sent_any: bool, e: crate::protocol::ProtoError| LinkFailure::Broken {
            sent_any,
            why: e.to_string(),
        };
        let Some(link) = self.route.link.as_mut() else {
            return Err(broken(false, crate::protocol::ProtoError::Closed));
        };
        let mut scanner = Scanner::new(expect);
        let mut sent_any = false;
        loop {
            let buf = link.conn.read_buffer();
            let (n, step) = scanner.scan(buf).map_err(|e| broken(sent_any, e))?;
            if !sent_any && matches!(step, Step::Done) && is_not_leader_refusal(&buf[..n]) {
                // Lost leadership before running it: held for the next leader.
                bytes::Buf::advance(buf, n);
                return Err(LinkFailure::NotLeader);
            }
            if n > 0 {
                let chunk = buf.split_to(n);
                sent_any = true;
                self.client
                    .write_raw(&chunk)
                    .await
                    .map_err(|e| LinkFailure::Client(SessionError::Client(e)))?;
            }
            match step {
                Step::Done => break,
                Step::LocalInfile => {
                    return Err(LinkFailure::Broken {
                        sent_any,
                        why: "the leader asked for a LOAD DATA LOCAL file".into(),
                    })
                }
                Step::NeedMore => match link.conn.fill().await {
                    Ok(true) => {}
                    Ok(false) => return Err(broken(sent_any, crate::protocol::ProtoError::Closed)),
                    Err(e) => return Err(broken(sent_any, e)),
                },
            }
        }
        self.client
            .flush()
            .await
            .map_err(|e| LinkFailure::Client(SessionError::Client(e)))?;
        if let Some(code) = scanner.outcome.error {
            crate::telemetry::error_sent(code);
        }
        Ok(scanner.outcome)
    }

    /// Send `raw` on the link and read its reply without forwarding it. `None` (and
    /// the link dropped) if the link broke.
    pub(super) async fn drain_on_link(&mut self, raw: &[u8], expect: Expect) -> Option<Outcome> {
        let link = self.route.link.as_mut()?;
        let sent = async {
            link.conn.write_raw(raw).await?;
            link.conn.flush().await
        };
        if let Err(e) = sent.await {
            tracing::warn!(id = self.auth.id, error = %e, "the link to the leader broke");
            self.route.link = None;
            return None;
        }
        self.drain_link(expect).await
    }

    /// Read a reply on the link without forwarding it.
    async fn drain_link(&mut self, expect: Expect) -> Option<Outcome> {
        let link = self.route.link.as_mut()?;
        match drain(link, expect).await {
            Ok(o) => {
                if let Some(s) = o.status {
                    self.route.link_status = s;
                }
                Some(o)
            }
            Err(e) => {
                tracing::warn!(id = self.auth.id, error = %e, "the link to the leader broke");
                self.route.link = None;
                None
            }
        }
    }

    /// A KILL of a session of this node whose statement runs on the leader: relayed
    /// over this session's own link, as this session's account (so MariaDB's rule on
    /// whose connections one may kill holds), to the leader's session of that link.
    /// KILL CONNECTION also ends the session here.
    pub(super) async fn kill_on_leader(
        &mut self,
        p: &Packet,
        mode: Option<&str>,
        query_only: bool,
        link_id: u32,
        local_thread: u32,
    ) -> Result<Flow, SessionError> {
        let verb = if query_only { "QUERY" } else { "CONNECTION" };
        let sql = format!("KILL {} {verb} {link_id}", mode.unwrap_or(""));
        tracing::debug!(
            id = self.auth.id,
            link_id,
            verb,
            "KILL relayed to the leader"
        );
        let mut payload = vec![crate::protocol::command::COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        let mut raw = bytes::BytesMut::new();
        crate::protocol::packet::encode_packet(&mut raw, 0, &payload);
        let relayed = Packet {
            seq: 0,
            last_seq: p.last_seq,
            payload: payload.into(),
            raw: raw.freeze(),
            reservation: None,
        };
        let flow = self.on_leader(&relayed, Expect::Query, Some(&sql)).await?;
        if !query_only {
            // Its connection here ends too (an idle session is ended by this alone).
            let local = format!("KILL CONNECTION {local_thread}");
            if let Err(e) = self.internal(&local).await {
                tracing::debug!(id = self.auth.id, error = %e, "local KILL after a relayed one");
            }
        }
        Ok(flow)
    }

    /// A KILL of a session of another node (its number is in the id, see `registry`):
    /// relayed to that node's proxy over a connection logged in as this session's
    /// account, with its client address proven as for the link, and mapped there as
    /// if it had been sent there. `None`: the id is not another member's.
    pub(super) async fn kill_elsewhere(
        &mut self,
        p: &Packet,
        mode: Option<&str>,
        query_only: bool,
        id: u64,
    ) -> Result<Option<Flow>, SessionError> {
        use super::registry::PROXY_ID_BIT;
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return Ok(None);
        };
        let Ok(id32) = u32::try_from(id) else {
            return Ok(None);
        };
        if id32 & PROXY_ID_BIT == 0 || id32 >> 31 != 0 {
            return Ok(None);
        }
        let number = ((id32 >> 20) & 0x3FF) as u16;
        if number == self.shared.registry.node_number() {
            return Ok(None);
        }
        let Some(member) = rep.member(number) else {
            return Ok(None);
        };
        let verb = if query_only { "QUERY" } else { "CONNECTION" };
        let sql = format!("KILL {} {verb} {id32}", mode.unwrap_or(""));
        tracing::debug!(id = self.auth.id, to = %member.id, target = id32, "KILL relayed to the session's node");
        let mut login = self.auth.login.clone();
        login.database = None;
        login.identity = Identity::trusted();
        login.forward = Some(backend::Forward {
            secret: rep.secret().to_vec(),
            client: self.auth.origin.peer,
            local: self.auth.origin.local,
        });
        let mut conn =
            match backend::connect(&member.proxy_addr, &login, self.shared.max_packet).await {
                Ok(c) => c,
                Err(e) => {
                    let err = no_leader(&format!(
                        "cannot reach node {} to relay the KILL: {e}",
                        member.id
                    ));
                    self.reply_err(p.last_seq, err).await?;
                    return Ok(Some(Flow::Continue));
                }
            };
        let mut raw = bytes::BytesMut::new();
        encode_query(&mut raw, &sql);
        let limit = 2 * self.shared.max_packet;
        let reply = async {
            conn.conn.write_raw(&raw).await?;
            conn.conn.flush().await?;
            super::stmt_route::collect(&mut conn, Expect::Query, limit).await
        }
        .await;
        match reply {
            Ok((_, bytes)) => {
                self.client
                    .write_raw(&bytes)
                    .await
                    .map_err(SessionError::Client)?;
                self.client.flush().await.map_err(SessionError::Client)?;
            }
            Err(e) => {
                let err = lost_leader(&format!("relaying the KILL to node {}: {e}", member.id));
                self.reply_err(p.last_seq, err).await?;
            }
        }
        let mut quit = bytes::BytesMut::new();
        crate::protocol::packet::encode_packet(&mut quit, 0, &[crate::protocol::command::COM_QUIT]);
        conn.conn.write_raw(&quit).await.ok();
        conn.conn.flush().await.ok();
        Ok(Some(Flow::Continue))
    }

    /// COM_CHANGE_USER / COM_RESET_CONNECTION: the link is closed (a new one starts
    /// from the new state), the history and the session's pins forgotten.
    pub(super) fn reset_route(&mut self) {
        self.route.link = None;
        self.route.link_status = 0;
        self.route.sticky = false;
        self.route.history.clear();
        self.route.last_on_leader = false;
        self.route.consistency = None;
    }
}

/// Read one reply from `backend` and throw it away.
async fn drain(
    backend: &mut Backend,
    expect: Expect,
) -> Result<Outcome, crate::protocol::ProtoError> {
    let mut scanner = Scanner::new(expect);
    loop {
        let buf = backend.conn.read_buffer();
        let (n, step) = scanner.scan(buf)?;
        if n > 0 {
            let _ = buf.split_to(n);
        }
        match step {
            Step::Done => return Ok(scanner.outcome),
            Step::LocalInfile => return Err(crate::protocol::ProtoError::Closed),
            Step::NeedMore => {
                if !backend.conn.fill().await? {
                    return Err(crate::protocol::ProtoError::Closed);
                }
            }
        }
    }
}

/// The key/value pairs of a raw connect-attributes block (its length prefix
/// included); empty if it is malformed.
pub fn attr_pairs(raw: &[u8]) -> Vec<(String, String)> {
    let mut r = Reader::new(raw);
    let Some(total) = r.lenenc().and_then(|n| usize::try_from(n).ok()) else {
        return vec![];
    };
    let Some(body) = r.take(total) else {
        return vec![];
    };
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    while !r.is_empty() {
        let (Some(k), Some(v)) = (r.lenenc_bytes(), r.lenenc_bytes()) else {
            return vec![];
        };
        out.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    out
}

/// A raw connect-attributes block of `pairs`, with its length prefix.
pub fn encode_attrs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in pairs {
        crate::protocol::packet::put_lenenc(&mut body, k.len() as u64);
        body.extend_from_slice(k.as_bytes());
        crate::protocol::packet::put_lenenc(&mut body, v.len() as u64);
        body.extend_from_slice(v.as_bytes());
    }
    let mut out = Vec::with_capacity(body.len() + 9);
    crate::protocol::packet::put_lenenc(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::classify;

    fn route(sql: &str, facts: Facts) -> Target {
        decide(&classify(sql), sql, facts)
    }

    #[test]
    fn writes_transactions_and_locks_go_to_the_leader() {
        let f = Facts::default();
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "CREATE TABLE x (a INT)",
            "BEGIN",
            "START TRANSACTION",
            "SELECT * FROM t WHERE id = 1 FOR UPDATE",
            "SELECT * FROM t LOCK IN SHARE MODE",
            "SELECT GET_LOCK('a', 1)",
            "LOCK TABLES t WRITE",
            "CALL p()",
        ] {
            assert_eq!(route(sql, f), Target::Leader, "{sql}");
        }
    }

    #[test]
    fn plain_reads_stay_local_and_session_statements_go_everywhere() {
        let f = Facts::default();
        assert_eq!(route("SELECT * FROM t", f), Target::Local);
        assert_eq!(route("SHOW TABLES", f), Target::Local);
        assert_eq!(
            route("START TRANSACTION READ ONLY", f),
            Target::Local,
            "read-only transactions are served locally"
        );
        for sql in [
            "SET NAMES utf8mb4",
            "SET sql_mode = ''",
            "USE test",
            "SET @a = 1",
        ] {
            assert_eq!(route(sql, f), Target::Both, "{sql}");
        }
        assert_eq!(route("SET GLOBAL max_connections = 10", f), Target::Local);
    }

    #[test]
    fn a_pinned_session_sends_everything_to_the_leader() {
        let f = Facts {
            pinned: true,
            ..Facts::default()
        };
        assert_eq!(route("SELECT * FROM t", f), Target::Leader);
        assert_eq!(route("COMMIT", f), Target::Leader);
        assert_eq!(route("SET @a = 1", f), Target::Both);
    }

    #[test]
    fn session_dependent_reads_follow_the_last_statement() {
        let on_leader = Facts {
            last_on_leader: true,
            ..Facts::default()
        };
        assert_eq!(route("SELECT LAST_INSERT_ID()", on_leader), Target::Leader);
        assert_eq!(route("SELECT ROW_COUNT()", on_leader), Target::Leader);
        assert_eq!(
            route("SELECT LAST_INSERT_ID()", Facts::default()),
            Target::Local
        );
        assert_eq!(route("SELECT * FROM t", on_leader), Target::Local);
    }

    #[test]
    fn a_local_read_only_transaction_keeps_everything_local() {
        let f = Facts {
            local_txn: true,
            ..Facts::default()
        };
        assert_eq!(route("INSERT INTO t VALUES (1)", f), Target::Local);
        assert_eq!(route("COMMIT", f), Target::Local);
    }

    #[test]
    fn history_keeps_one_entry_per_target() {
        let mut h = History::default();
        for i in 0..1000 {
            h.record(&format!("SET @@session.sql_mode = 'M{i}'"));
            h.record(&format!("SET @counter = {i}"));
        }
        h.record("SET NAMES utf8mb4");
        h.record("SET CHARACTER SET latin1");
        h.record("USE a");
        h.record("USE b");
        let all: Vec<&str> = h.statements().collect();
        assert_eq!(
            all,
            [
                "SET @@session.sql_mode = 'M999'",
                "SET @counter = 999",
                "SET CHARACTER SET latin1",
                "USE b"
            ]
        );
        assert!(!h.overflowed());
    }

    #[test]
    fn statements_that_set_user_variables_travel_by_value() {
        assert!(carries_user_vars("SET @a = (SELECT COUNT(*) FROM t)"));
        assert!(carries_user_vars("SET @a = 1, @b := CONCAT('x,y', @a)"));
        assert!(carries_user_vars("SELECT COUNT(*) INTO @n FROM t"));
        assert!(carries_user_vars("SELECT @n := 5"));
        assert!(!carries_user_vars("SET time_zone = @tz"));
        assert!(!carries_user_vars("SET @a = 1, sql_mode = ''"));
        assert!(!carries_user_vars("SET @@session.sql_mode = @m"));
        assert!(!carries_user_vars("PREPARE s FROM @sql"));
        assert!(!carries_user_vars("EXECUTE s USING @a"));
        assert!(!carries_user_vars("SET NAMES utf8mb4"));
        assert_eq!(
            top_level_items("a = f(1, 2), b = 'x,y'"),
            vec!["a = f(1, 2)", " b = 'x,y'"]
        );
    }

    #[test]
    fn session_variables_set_from_expressions_travel_by_value() {
        let names = |t: &str| session_vars_set_by_expression(t);
        assert_eq!(
            names("SET SESSION max_statement_time = (SELECT COUNT(*) FROM t)"),
            Some(vec!["max_statement_time".to_string()])
        );
        assert_eq!(
            names("SET @@session.sql_mode = CONCAT(@@sql_mode, ',ANSI'), time_zone = @tz"),
            Some(vec!["sql_mode".to_string(), "time_zone".to_string()])
        );
        assert_eq!(
            names("SET sql_mode = 'ANSI'"),
            None,
            "a literal replays as it is"
        );
        assert_eq!(names("SET @a = (SELECT 1)"), None, "a user variable");
        assert_eq!(names("SET @a = 1, sql_mode = (SELECT 'x')"), None, "mixed");
        assert_eq!(names("SET GLOBAL max_connections = (SELECT 10)"), None);
        assert_eq!(names("SET autocommit = @x"), None);
        assert_eq!(names("SET NAMES utf8mb4"), None);
        assert_eq!(
            names("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            None
        );
        assert_eq!(sysvar_literal(&Some(b"3".to_vec())), "3");
        assert_eq!(sysvar_literal(&Some(b"+05:00".to_vec())), "X'2B30353A3030'");
        assert_eq!(sysvar_literal(&None), "NULL");
    }

    #[test]
    fn prepared_statement_names_key_the_history() {
        assert_eq!(
            history_key("PREPARE s1 FROM 'SELECT 1'").as_deref(),
            Some("prepare:s1")
        );
        assert_eq!(
            history_key("prepare `S1` from @q").as_deref(),
            Some("prepare:s1")
        );
        assert_eq!(
            deallocated_key("DEALLOCATE PREPARE s1").as_deref(),
            Some("prepare:s1")
        );
        assert_eq!(
            deallocated_key("DROP PREPARE `s1`;").as_deref(),
            Some("prepare:s1")
        );
        assert_eq!(deallocated_key("DROP TABLE t"), None);
        assert_eq!(
            prepare_from_var("PREPARE s FROM @sql"),
            Some(("s".to_string(), "sql".to_string()))
        );
        assert_eq!(prepare_from_var("PREPARE s FROM 'SELECT @x'"), None);
        let mut h = History::default();
        for _ in 0..1000 {
            h.record("PREPARE s FROM 'SELECT 1'");
        }
        assert_eq!(h.len(), 1);
        h.forget("prepare:s");
        assert!(h.is_empty());
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::default();
        for i in 0..HISTORY_LIMIT + 10 {
            h.record(&format!("SET @v{i} = 1, @w{i} = 2"));
        }
        assert_eq!(h.len(), HISTORY_LIMIT);
        assert!(h.overflowed());
        h.clear();
        assert!(h.is_empty() && !h.overflowed());
    }

    #[test]
    fn history_keys() {
        assert_eq!(
            history_key("SET SESSION wait_timeout=5").as_deref(),
            Some("var:wait_timeout")
        );
        assert_eq!(
            history_key("set @@wait_timeout = 5").as_deref(),
            Some("var:wait_timeout")
        );
        assert_eq!(history_key("SET @x := 5").as_deref(), Some("var:@x"));
        assert_eq!(history_key("SET @x = (SELECT 1)"), None);
        assert_eq!(history_key("SET a = 1, b = 2"), None);
        assert_eq!(history_key("SELECT 1"), None);
    }

    #[test]
    fn overrides() {
        assert_eq!(
            parse_override("SET @@session.wolfscale_read_consistency = 'linearizable'"),
            Some(Override::Consistency(ReadConsistency::Linearizable))
        );
        assert_eq!(
            parse_override("set session wolfscale_read_consistency='local';"),
            Some(Override::Consistency(ReadConsistency::Local))
        );
        assert_eq!(
            parse_override("SET wolfscale_session_index = 42"),
            Some(Override::Index(42))
        );
        assert!(matches!(
            parse_override("SET wolfscale_read_consistency = 'eventual'"),
            Some(Override::Invalid(_))
        ));
        assert_eq!(parse_override("SET sql_mode = ''"), None);
        assert!(asks_index("select @@wolfscale_session_index"));
    }

    #[test]
    fn forwarding_proofs() {
        let client: SocketAddr = "10.0.0.7:51000".parse().unwrap();
        let local: SocketAddr = "10.0.0.2:8007".parse().unwrap();
        let scramble = [7u8; 20];
        let proof = forward_proof(b"s3cret", &scramble, &client, &local);
        let attrs = |proof: &str| {
            vec![
                ("_client_name".to_string(), "x".to_string()),
                (ATTR_CLIENT.to_string(), client.to_string()),
                (ATTR_LOCAL.to_string(), local.to_string()),
                (ATTR_PROOF.to_string(), proof.to_string()),
            ]
        };
        assert_eq!(
            forwarded_origin(Some(b"s3cret"), &scramble, &attrs(&proof)),
            Some(Ok((client, local)))
        );
        // Another secret, another scramble (a replayed login), a forged proof.
        assert!(matches!(
            forwarded_origin(Some(b"other"), &scramble, &attrs(&proof)),
            Some(Err(_))
        ));
        assert!(matches!(
            forwarded_origin(Some(b"s3cret"), &[8u8; 20], &attrs(&proof)),
            Some(Err(_))
        ));
        assert!(matches!(
            forwarded_origin(Some(b"s3cret"), &scramble, &attrs(&"0".repeat(64))),
            Some(Err(_))
        ));
        assert!(matches!(
            forwarded_origin(None, &scramble, &attrs(&proof)),
            Some(Err(_))
        ));
        assert_eq!(
            forwarded_origin(Some(b"s3cret"), &scramble, &attrs(&proof)[..1]),
            None
        );
        let raw = encode_attrs(&attrs(&proof));
        assert_eq!(attr_pairs(&raw), attrs(&proof));
        assert!(attr_pairs(&raw[..raw.len() - 1]).is_empty());
    }
}
