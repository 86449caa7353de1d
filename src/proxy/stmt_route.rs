//! Binary prepared statements on a session that routes (ARCHITECTURE §1, router).
//!
//! A follower's session has two backends, the local MariaDB and, once needed, a link
//! to the leader's proxy, and each numbers its prepared statements its own way. The
//! client sees one id per statement:
//!
//! - a statement prepared on the local MariaDB keeps the id MariaDB gave it, so a
//!   session that never routes sees no change at all;
//! - a statement the local MariaDB cannot prepare yet (the session's own DDL has not
//!   been applied here within `read_wait_ms`) is prepared on the leader and gets an id
//!   of the proxy's, with the high bit set, which MariaDB's own ids never reach.
//!
//! Each execution is routed like its text (`router::decide`): the statement is
//! prepared lazily on the backend that runs it, and the EXECUTE, FETCH, RESET and
//! CLOSE packets are readdressed to that backend's id. Parameter types, which a
//! client sends only with the first execution, are cached and put back into the
//! packet for a backend that has not seen them. COM_STMT_SEND_LONG_DATA is held until
//! the EXECUTE, when the backend is known, and sent there just before it. A link that
//! is re-opened (a new leader) starts without statements: they are prepared again on
//! first use.

use tokio::io::{AsyncRead, AsyncWrite};

use super::router::{decide, lost_leader, Linked, Target};
use super::session::{Flow, Session, SessionError};
use crate::protocol::command::{
    COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_SEND_LONG_DATA,
};
use crate::protocol::packet::encode_packet;
use crate::protocol::params::{execute_binds_types, execute_with_types, readdress};
use crate::protocol::response::{Expect, Outcome, Scanner, Step};
use crate::protocol::{Packet, ProtoError, ServerError};

/// The high bit of ids the proxy gives statements first prepared on the leader.
pub const PROXY_ID_BIT: u32 = 0x8000_0000;

/// Long data is re-sent in pieces of at most this size.
const LONG_DATA_PIECE: usize = 1 << 20;

/// Where one prepared statement lives.
#[derive(Debug, Default, Clone)]
pub struct StmtRoute {
    /// Its id on the local MariaDB, once prepared there.
    pub local: Option<u32>,
    /// `(link generation, id)` on the leader's proxy, once prepared there.
    pub link: Option<(u64, u32)>,
    /// The local MariaDB / the link has the cached parameter types.
    pub local_types: bool,
    pub link_types: bool,
    /// The last execution ran on the leader (a cursor it opened is fetched there).
    pub on_link: bool,
    /// COM_STMT_SEND_LONG_DATA was kept back for the next execution.
    pub long_held: bool,
}

impl StmtRoute {
    /// A statement the local MariaDB prepared as `id`.
    pub fn here(id: u32) -> Self {
        StmtRoute {
            local: Some(id),
            ..StmtRoute::default()
        }
    }
}

/// Which backend runs an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Local,
    Link,
}

fn packet_of(payload: Vec<u8>) -> Packet {
    let mut raw = bytes::BytesMut::new();
    let last_seq = encode_packet(&mut raw, 0, &payload).wrapping_sub(1);
    Packet {
        seq: 0,
        last_seq,
        payload: payload.into(),
        raw: raw.freeze(),
        reservation: None,
    }
}

fn prepare_payload(sql: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + sql.len());
    payload.push(COM_STMT_PREPARE);
    payload.extend_from_slice(sql.as_bytes());
    payload
}

/// Patch the statement id of a PREPARE_OK reply (its first packet) to `id`.
fn patch_prepare_ok(reply: &mut [u8], id: u32) {
    if reply.len() >= 9 && reply[4] == 0x00 {
        reply[5..9].copy_from_slice(&id.to_le_bytes());
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Whether the client's statement `id` needs the mapping (it is not simply the
    /// local MariaDB's statement of the same id).
    pub(super) fn stmt_is_mapped(&self, id: u32) -> bool {
        self.stmts
            .get(&id)
            .is_some_and(|s| s.route.local != Some(id) || s.route.link.is_some())
    }

    /// COM_STMT_PREPARE on a session that routes: on the local MariaDB once it has
    /// applied the session's writes (so that it knows the session's own tables), else
    /// on the leader.
    pub(super) async fn routed_prepare(
        &mut self,
        p: &Packet,
        text: String,
        class: crate::sql::Classification,
    ) -> Result<Flow, SessionError> {
        if self.session_writes_applied().await? {
            self.send_backend(&p.raw).await?;
            let outcome = self.relay(Expect::Prepare).await?;
            if let Some(id) = outcome.stmt_id {
                self.remember(id, text, class, outcome.params, StmtRoute::here(id));
            }
            return Ok(Flow::Continue);
        }
        let deadline = tokio::time::Instant::now() + self.shared.failover_wait;
        match self.link_or_hold(p, deadline, &mut None).await? {
            Linked::Ready => {}
            Linked::Here => return Box::pin(self.command(p.clone())).await,
            Linked::Answered(flow) => return Ok(flow),
        }
        match self.prepare_on_link(&text).await {
            None => {
                self.reply_err(p.last_seq, lost_leader("while preparing"))
                    .await?;
            }
            Some(Err(err)) => self.write_client(&err).await?,
            Some(Ok((link_id, params, mut reply))) => {
                let id = PROXY_ID_BIT | self.route.next_proxy_id;
                self.route.next_proxy_id = (self.route.next_proxy_id + 1) & !PROXY_ID_BIT;
                patch_prepare_ok(&mut reply, id);
                self.write_client(&reply).await?;
                let route = StmtRoute {
                    link: Some((self.route.link_gen, link_id)),
                    ..StmtRoute::default()
                };
                self.remember(id, text, class, params, route);
            }
        }
        Ok(Flow::Continue)
    }

    fn remember(
        &mut self,
        id: u32,
        sql: String,
        class: crate::sql::Classification,
        params: u16,
        route: StmtRoute,
    ) {
        self.stmts.insert(
            id,
            super::session::Prepared {
                class,
                sql,
                params: params as usize,
                types: None,
                long_data: Default::default(),
                kill: None,
                route,
            },
        );
        self.last_prepared = Some(id);
    }

    /// The local MariaDB has applied the session's last write, waiting up to
    /// `read_wait_ms` for it.
    async fn session_writes_applied(&mut self) -> Result<bool, SessionError> {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return Ok(true);
        };
        let need = self.route.index;
        if rep.standalone() {
            return self.member_reached(need, false).await;
        }
        Ok(rep.applied_index() >= need || rep.wait_applied(need, self.shared.read_wait).await)
    }

    /// COM_STMT_EXECUTE of statement `id` on a session that routes.
    pub(super) async fn routed_execute(
        &mut self,
        p: &Packet,
        id: u32,
    ) -> Result<Flow, SessionError> {
        let Some(prep) = self.stmts.get(&id) else {
            return self.forward(p, Some(Expect::execute(&p.payload))).await;
        };
        let target = decide(&prep.class, &prep.sql, self.facts());
        let side = match target {
            Target::Leader => Side::Link,
            Target::Local | Target::Both => {
                if self.fresh_enough().await? {
                    Side::Local
                } else {
                    Side::Link
                }
            }
        };
        tracing::trace!(id = self.auth.id, stmt = id, ?side, "route execute");
        match side {
            Side::Local => {
                let Some(packet) = self.local_execute(p, id).await? else {
                    return Ok(Flow::Continue);
                };
                let flow = self
                    .forward(&packet, Some(Expect::execute(&packet.payload)))
                    .await?;
                self.route.last_on_leader = false;
                if let Some(prep) = self.stmts.get_mut(&id) {
                    prep.route.on_link = false;
                }
                if target == Target::Both && self.route.link.is_some() {
                    // A prepared SET: the leader's session follows (its reply is
                    // not the client's).
                    if let Some(packet) = self.link_execute(p, id).await? {
                        self.drain_on_link(&packet.raw, Expect::execute(&packet.payload))
                            .await;
                    }
                }
                self.clear_long_data(id);
                Ok(flow)
            }
            Side::Link => {
                let Some(packet) = self.link_execute(p, id).await? else {
                    return Ok(Flow::Continue);
                };
                let sql = self.stmts.get(&id).map(|s| s.sql.clone());
                let flow = self
                    .on_leader(&packet, Expect::execute(&packet.payload), sql.as_deref())
                    .await?;
                if let Some(prep) = self.stmts.get_mut(&id) {
                    prep.route.on_link = true;
                }
                self.clear_long_data(id);
                Ok(flow)
            }
        }
    }

    fn clear_long_data(&mut self, id: u32) {
        if let Some(prep) = self.stmts.get_mut(&id) {
            prep.long_data.clear();
            prep.route.long_held = false;
        }
    }

    /// The client's execute packet `p` of statement `id`, made ready for the local
    /// MariaDB: the statement prepared there, held long data sent, the packet
    /// readdressed and carrying the parameter types if that backend lacks them.
    /// `None`: the client was answered (an error).
    pub(super) async fn local_execute(
        &mut self,
        p: &Packet,
        id: u32,
    ) -> Result<Option<Packet>, SessionError> {
        let Some(prep) = self.stmts.get(&id) else {
            return Ok(Some(p.clone()));
        };
        let local = match prep.route.local {
            Some(local) => local,
            None => {
                let sql = prep.sql.clone();
                let mut raw = bytes::BytesMut::new();
                encode_packet(&mut raw, 0, &prepare_payload(&sql));
                self.send_backend(&raw).await?;
                let (outcome, reply) = self.collect_reply(Expect::Prepare).await?;
                let Some(local) = outcome.stmt_id else {
                    self.write_client(&reply).await?;
                    return Ok(None);
                };
                if let Some(prep) = self.stmts.get_mut(&id) {
                    prep.route.local = Some(local);
                }
                local
            }
        };
        let Some(payload) = self.addressed(p, id, local, Side::Local) else {
            self.reply_err(p.last_seq, ServerError::malformed("COM_STMT_EXECUTE"))
                .await?;
            return Ok(None);
        };
        if self.stmts.get(&id).is_some_and(|s| s.route.long_held) {
            let pieces = self.long_data_packets(id, local);
            self.send_backend(&pieces).await?;
        }
        Ok(Some(packet_of(payload)))
    }

    /// The same, for the leader over the link (opened if need be). `None`: the client
    /// was answered.
    async fn link_execute(&mut self, p: &Packet, id: u32) -> Result<Option<Packet>, SessionError> {
        let deadline = tokio::time::Instant::now() + self.shared.failover_wait;
        match self.link_or_hold(p, deadline, &mut None).await? {
            Linked::Ready => {}
            Linked::Here => {
                // This node leads now: the statement runs here.
                if Box::pin(self.command(p.clone())).await? == Flow::Close {
                    self.close_after_reply = true;
                }
                return Ok(None);
            }
            Linked::Answered(flow) => {
                if flow == Flow::Close {
                    self.close_after_reply = true;
                }
                return Ok(None);
            }
        }
        let gen = self.route.link_gen;
        let Some(prep) = self.stmts.get(&id) else {
            return Ok(Some(p.clone()));
        };
        let link_id = match prep.route.link {
            Some((g, link_id)) if g == gen => link_id,
            _ => {
                let sql = prep.sql.clone();
                match self.prepare_on_link(&sql).await {
                    None => {
                        self.reply_err(p.last_seq, lost_leader("while preparing"))
                            .await?;
                        return Ok(None);
                    }
                    Some(Err(err)) => {
                        self.write_client(&err).await?;
                        return Ok(None);
                    }
                    Some(Ok((link_id, _, _))) => {
                        if let Some(prep) = self.stmts.get_mut(&id) {
                            prep.route.link = Some((gen, link_id));
                            prep.route.link_types = false;
                        }
                        link_id
                    }
                }
            }
        };
        let Some(payload) = self.addressed(p, id, link_id, Side::Link) else {
            self.reply_err(p.last_seq, ServerError::malformed("COM_STMT_EXECUTE"))
                .await?;
            return Ok(None);
        };
        if self.stmts.get(&id).is_some_and(|s| s.route.long_held) {
            let pieces = self.long_data_packets(id, link_id);
            let sent = match self.route.link.as_mut() {
                Some(link) => match link.conn.write_raw(&pieces).await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(e),
                },
                None => Err(ProtoError::Closed),
            };
            if let Err(e) = sent {
                self.route.link = None;
                self.reply_err(p.last_seq, lost_leader(&e.to_string()))
                    .await?;
                return Ok(None);
            }
        }
        Ok(Some(packet_of(payload)))
    }

    /// The execute payload addressed to `backend_id` on `side`, with the cached types
    /// put in if that side has not seen them; the cache and the sides' knowledge of it
    /// updated. `None` for a malformed packet.
    fn addressed(&mut self, p: &Packet, id: u32, backend_id: u32, side: Side) -> Option<Vec<u8>> {
        let prep = self.stmts.get_mut(&id)?;
        if p.first() != Some(COM_STMT_EXECUTE) {
            // COM_STMT_BULK_EXECUTE carries its types in each packet.
            return Some(readdress(&p.payload, backend_id));
        }
        let count = prep.params;
        let payload = if execute_binds_types(&p.payload, count)? {
            let long: Vec<bool> = (0..count)
                .map(|i| prep.long_data.contains_key(&(i as u16)))
                .collect();
            let (_, types) =
                crate::protocol::params::decode_execute(&p.payload, count, None, &long)?;
            prep.types = Some(types);
            // The other side has older types, if any.
            prep.route.local_types = side == Side::Local;
            prep.route.link_types = side == Side::Link;
            p.payload.to_vec()
        } else {
            let has = match side {
                Side::Local => prep.route.local_types,
                Side::Link => prep.route.link_types,
            };
            let payload = match (&prep.types, has) {
                (Some(types), false) => execute_with_types(&p.payload, count, types)?,
                _ => p.payload.to_vec(),
            };
            match side {
                Side::Local => prep.route.local_types = true,
                Side::Link => prep.route.link_types = true,
            }
            payload
        };
        Some(readdress(&payload, backend_id))
    }

    /// The held long data of statement `id` as COM_STMT_SEND_LONG_DATA packets for
    /// `backend_id` (they have no reply).
    fn long_data_packets(&self, id: u32, backend_id: u32) -> bytes::BytesMut {
        let mut raw = bytes::BytesMut::new();
        let Some(prep) = self.stmts.get(&id) else {
            return raw;
        };
        for (param, data) in &prep.long_data {
            let pieces: Vec<&[u8]> = if data.is_empty() {
                vec![&[][..]]
            } else {
                data.chunks(LONG_DATA_PIECE).collect()
            };
            for piece in pieces {
                let mut payload = Vec::with_capacity(7 + piece.len());
                payload.push(COM_STMT_SEND_LONG_DATA);
                payload.extend_from_slice(&backend_id.to_le_bytes());
                payload.extend_from_slice(&param.to_le_bytes());
                payload.extend_from_slice(piece);
                encode_packet(&mut raw, 0, &payload);
            }
        }
        raw
    }

    /// Prepare `sql` on the link. `Some(Ok((id, params, reply)))`, or the leader's
    /// ERR reply; `None` (and the link dropped) if the link broke.
    async fn prepare_on_link(&mut self, sql: &str) -> Option<Result<(u32, u16, Vec<u8>), Vec<u8>>> {
        let mut raw = bytes::BytesMut::new();
        encode_packet(&mut raw, 0, &prepare_payload(sql));
        let link = self.route.link.as_mut()?;
        let result = async {
            link.conn.write_raw(&raw).await?;
            link.conn.flush().await?;
            collect(link, Expect::Prepare, 2 * self.shared.max_packet).await
        }
        .await;
        match result {
            Ok((outcome, reply)) => Some(match outcome.stmt_id {
                Some(id) => Ok((id, outcome.params, reply)),
                None => Err(reply),
            }),
            Err(e) => {
                tracing::warn!(id = self.auth.id, error = %e, "the link to the leader broke");
                self.route.link = None;
                None
            }
        }
    }

    async fn write_client(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.client
            .write_raw(bytes)
            .await
            .map_err(SessionError::Client)?;
        self.client.flush().await.map_err(SessionError::Client)
    }

    /// COM_STMT_SEND_LONG_DATA of a mapped statement, or on a session that routes:
    /// held (it was recorded already) until the execution picks a backend.
    pub(super) fn hold_long_data(&mut self, id: u32) {
        if let Some(prep) = self.stmts.get_mut(&id) {
            prep.route.long_held = true;
        }
    }

    /// COM_STMT_CLOSE of a mapped statement: closed on every backend that has it.
    pub(super) async fn close_mapped(&mut self, id: u32) -> Result<Flow, SessionError> {
        let Some(prep) = self.stmts.remove(&id) else {
            return Ok(Flow::Continue);
        };
        if let Some(local) = prep.route.local {
            let mut raw = bytes::BytesMut::new();
            encode_packet(
                &mut raw,
                0,
                &readdress(&[COM_STMT_CLOSE, 0, 0, 0, 0], local),
            );
            self.send_backend(&raw).await?;
        }
        if let (Some((gen, link_id)), Some(link)) = (prep.route.link, self.route.link.as_mut()) {
            if gen == self.route.link_gen {
                let mut raw = bytes::BytesMut::new();
                encode_packet(
                    &mut raw,
                    0,
                    &readdress(&[COM_STMT_CLOSE, 0, 0, 0, 0], link_id),
                );
                if link.conn.write_raw(&raw).await.is_err() {
                    self.route.link = None;
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// COM_STMT_RESET of a mapped statement: every backend that has it is reset; the
    /// client gets the answer of the one that ran it last.
    pub(super) async fn reset_mapped(&mut self, p: &Packet, id: u32) -> Result<Flow, SessionError> {
        self.clear_long_data(id);
        let Some(prep) = self.stmts.get(&id) else {
            return self.forward(p, Some(Expect::Single)).await;
        };
        let route = prep.route.clone();
        let link = route
            .link
            .filter(|(gen, _)| *gen == self.route.link_gen && self.route.link.is_some())
            .map(|(_, link_id)| link_id);
        let local_answers = route.local.is_some() && !(route.on_link && link.is_some());
        if let Some(local) = route.local {
            let packet = packet_of(readdress(&p.payload, local));
            self.send_backend(&packet.raw).await?;
            if local_answers {
                self.relay(Expect::Single).await?;
            } else {
                self.collect_reply(Expect::Single).await?;
            }
        }
        if let Some(link_id) = link {
            let packet = packet_of(readdress(&p.payload, link_id));
            if local_answers {
                self.drain_on_link(&packet.raw, Expect::Single).await;
            } else {
                self.relay_on_link(p, &packet, Expect::Single).await?;
            }
        } else if route.local.is_none() {
            let ok = crate::protocol::codes::ok_payload(0, 0, self.status, 0);
            self.client
                .send(p.last_seq.wrapping_add(1), &ok)
                .await
                .map_err(SessionError::Client)?;
        }
        Ok(Flow::Continue)
    }

    /// COM_STMT_FETCH of a mapped statement: where its last execution opened the
    /// cursor.
    pub(super) async fn fetch_mapped(&mut self, p: &Packet, id: u32) -> Result<Flow, SessionError> {
        let Some(prep) = self.stmts.get(&id) else {
            return self.forward(p, Some(Expect::Fetch)).await;
        };
        let route = prep.route.clone();
        match (route.on_link, route.link, route.local) {
            (true, Some((gen, link_id)), _) if gen == self.route.link_gen => {
                let packet = packet_of(readdress(&p.payload, link_id));
                self.relay_on_link(p, &packet, Expect::Fetch).await
            }
            (false, _, Some(local)) => {
                let packet = packet_of(readdress(&p.payload, local));
                self.forward(&packet, Some(Expect::Fetch)).await
            }
            _ => {
                self.reply_err(
                    p.last_seq,
                    ServerError::new(
                        1421,
                        "HY000",
                        "The statement's cursor is gone: the link to the WolfScale leader was re-opened",
                    ),
                )
                .await?;
                Ok(Flow::Continue)
            }
        }
    }

    async fn relay_on_link(
        &mut self,
        p: &Packet,
        packet: &Packet,
        expect: Expect,
    ) -> Result<Flow, SessionError> {
        match self.relay_link(&packet.raw, expect).await {
            Ok(_) => Ok(Flow::Continue),
            Err(failure) => self.link_failed(p, failure).await,
        }
    }
}

/// Read one reply from `backend` into a buffer (at most `limit` bytes).
pub(super) async fn collect(
    backend: &mut super::backend::Backend,
    expect: Expect,
    limit: usize,
) -> Result<(Outcome, Vec<u8>), ProtoError> {
    let mut scanner = Scanner::new(expect);
    let mut out = Vec::new();
    loop {
        let buf = backend.conn.read_buffer();
        let (n, step) = scanner.scan(buf)?;
        if n > 0 {
            out.extend_from_slice(&buf.split_to(n));
            if out.len() > limit {
                return Err(ProtoError::Malformed("reply too large to hold"));
            }
        }
        match step {
            Step::Done => return Ok((scanner.outcome, out)),
            Step::LocalInfile => return Err(ProtoError::Closed),
            Step::NeedMore => {
                if !backend.conn.fill().await? {
                    return Err(ProtoError::Closed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_ok_gets_the_proxys_id() {
        // Header (4), then 0x00, id 7, 1 column, 2 params, filler, 0 warnings.
        let mut reply = vec![12, 0, 0, 1, 0x00, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        patch_prepare_ok(&mut reply, PROXY_ID_BIT | 3);
        assert_eq!(&reply[5..9], &(PROXY_ID_BIT | 3).to_le_bytes());
        // An ERR reply is left alone.
        let mut err = vec![
            9, 0, 0, 1, 0xFF, 0x7A, 0x04, b'#', b'4', b'2', b'S', b'0', b'2',
        ];
        let before = err.clone();
        patch_prepare_ok(&mut err, 5);
        assert_eq!(err, before);
    }

    #[test]
    fn packets_of_payloads_are_framed_from_zero() {
        let p = packet_of(vec![crate::protocol::command::COM_STMT_RESET, 1, 0, 0, 0]);
        assert_eq!(p.seq, 0);
        assert_eq!(p.last_seq, 0);
        assert_eq!(&p.raw[..4], &[5, 0, 0, 0]);
        assert_eq!(&p.raw[4..], &p.payload[..]);
    }
}
