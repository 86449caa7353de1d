//! Exactly-once retry of a forwarded autocommit write whose link broke (ARCHITECTURE
//! §4, first failover row). The design is in [`crate::cluster::requests`]; this is the
//! proxy's side of it.
//!
//! ```text
//!  follower                                   leader's proxy (forwarded session)
//!  SET WOLFSCALE REQUEST <id>   ───────────▶  the next statement carries <id>: an
//!  INSERT …                                   autocommit write logs it in its entry
//!  SHOW WOLFSCALE SESSION INDEX
//!     … the link breaks before the reply …
//!  (waits for a leader, opens a link)
//!  SHOW WOLFSCALE REQUEST <id> SINCE <n> ──▶  fenced; waits until <id> is no longer
//!                                             running here and the log is applied:
//!     ◀── OK (affected, insert id, "Rows matched: <index>")   committed
//!     ◀── ERR 1290 … not the leader …                          ask the next one
//!     ◀── ERR 1105 [wolfscale:absent] …                        send the write again
//!     ◀── ERR 1105 …                                           outcome unknown
//! ```
//!
//! A write is stamped only when it is autocommit, outside any transaction, and returns
//! no rows (a `RETURNING` result cannot be given back from a record).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::router::Linked;
use super::session::{Flow, Session, SessionError};
use crate::cluster::requests::{format_id, parse_id, Done, Lookup};
use crate::protocol::{Packet, ServerError};

/// Sent before a stamped statement on the link.
pub const STAMP_PREFIX: &str = "/* wolfscale */ SET WOLFSCALE REQUEST ";
/// Asked of the next leader after the link broke: `<id> SINCE <index>`.
pub const ASK_PREFIX: &str = "/* wolfscale */ SHOW WOLFSCALE REQUEST ";
/// In the ERR of a fenced leader that has every entry since the request and not it.
const ABSENT_TAG: &str = "[wolfscale:absent]";

/// Requests whose statement runs on this node's sessions now, with how many times.
#[derive(Default)]
pub struct InFlight {
    running: Mutex<HashMap<u128, usize>>,
    changed: tokio::sync::Notify,
}

/// Marks a request as running while it lives.
pub struct Running<'a> {
    set: &'a InFlight,
    id: u128,
}

impl InFlight {
    pub fn enter(&self, id: u128) -> Running<'_> {
        *self.lock().entry(id).or_default() += 1;
        Running { set: self, id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, usize>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until `id` is not running here, up to `timeout`; whether it is not.
    pub async fn wait_gone(&self, id: u128, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if !self.lock().contains_key(&id) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut map = self.set.lock();
        if let Some(n) = map.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.id);
            }
        }
        drop(map);
        self.set.changed.notify_waiters();
    }
}

/// What asking the next leader about a request found.
pub(super) enum Resolved {
    /// The client has been answered (the stored OK, or an error).
    Answered(Flow),
    /// It never committed: send it again.
    Absent,
}

fn outcome_unknown(why: &str) -> ServerError {
    ServerError::new(
        2013,
        "HY000",
        format!(
            "Lost connection to the WolfScale leader during the statement, and whether it \
             committed cannot be told ({why}): check the data before retrying"
        ),
    )
}

/// The ASK reply of a committed request: an OK with its affected rows and insert id,
/// and its log index as `Rows matched: N`.
fn committed_reply(affected: u64, insert_id: u64, index: u64, status: u16) -> Vec<u8> {
    let mut ok = crate::protocol::codes::ok_payload(affected, insert_id, status, 0);
    ok.extend_from_slice(format!("Rows matched: {index}").as_bytes());
    ok
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Whether a statement sent on the link gets a request id: an autocommit write,
    /// outside any transaction, that returns no rows.
    pub(super) fn stamps(&self, text: Option<&str>) -> bool {
        use crate::protocol::response::{SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS};
        let Some(text) = text else {
            return false;
        };
        let autocommit = self.status & SERVER_STATUS_AUTOCOMMIT != 0
            && self.status & SERVER_STATUS_IN_TRANS == 0;
        autocommit
            && crate::sql::classify(text).class == crate::sql::StatementClass::Write
            && !text.to_ascii_uppercase().contains("RETURNING")
    }

    /// On the leader, a forwarded session's `SET WOLFSCALE REQUEST` and `SHOW
    /// WOLFSCALE REQUEST`. `None`: not one of them.
    pub(super) async fn request_intercept(
        &mut self,
        p: &Packet,
        text: &str,
    ) -> Result<Option<Flow>, SessionError> {
        if !self.route.forwarded {
            return Ok(None);
        }
        if let Some(rest) = text.strip_prefix(STAMP_PREFIX) {
            let Some(id) = parse_id(rest.trim()) else {
                self.reply_err(p.last_seq, ServerError::malformed("request id"))
                    .await?;
                return Ok(Some(Flow::Continue));
            };
            self.route.request_next = Some(id);
            let ok = crate::protocol::codes::ok_payload(0, 0, self.status, 0);
            self.client
                .send(p.last_seq.wrapping_add(1), &ok)
                .await
                .map_err(SessionError::Client)?;
            return Ok(Some(Flow::Continue));
        }
        let Some(rest) = text.strip_prefix(ASK_PREFIX) else {
            return Ok(None);
        };
        let parsed = rest.split_once(" SINCE ").and_then(|(id, since)| {
            Some((parse_id(id.trim())?, since.trim().parse::<u64>().ok()?))
        });
        let Some((id, since)) = parsed else {
            self.reply_err(p.last_seq, ServerError::malformed("request question"))
                .await?;
            return Ok(Some(Flow::Continue));
        };
        match self.answer_request(id, since).await {
            Ok(d) => {
                let ok = committed_reply(d.affected, d.last_insert_id, d.index, self.status);
                self.client
                    .send(p.last_seq.wrapping_add(1), &ok)
                    .await
                    .map_err(SessionError::Client)?;
            }
            Err(e) => self.reply_err(p.last_seq, e).await?,
        }
        Ok(Some(Flow::Continue))
    }

    /// Whether request `id` committed, asked of this node as leader.
    async fn answer_request(&self, id: u128, since: u64) -> Result<Done, ServerError> {
        let Some(rep) = self.shared.replicator.get().cloned() else {
            return Err(ServerError::new(1105, "HY000", "not a cluster node"));
        };
        let wait = self.shared.failover_wait;
        if rep.writable_term().is_none() && rep.wait_writable(wait).await.is_none() {
            return Err(super::sequencer::not_leader_refusal(
                rep.leader(),
                &rep.me().id,
            ));
        }
        // Still running on one of this node's sessions (the link broke but the
        // leader did not): its outcome is known once it ends.
        if !self.shared.in_flight.wait_gone(id, wait).await {
            return Err(ServerError::new(
                1105,
                "HY000",
                "the request is still running on the leader",
            ));
        }
        // An entry appended for it (its session may be gone; the commit pipeline
        // finishes it) is applied, and recorded, once the log is.
        let last = rep.last_log_index();
        if !rep.wait_applied(last, wait).await {
            return Err(ServerError::new(
                1105,
                "HY000",
                "the leader has not applied its log yet",
            ));
        }
        match rep.request_outcome(id, since) {
            Lookup::Committed(d) => Ok(d),
            Lookup::Absent => Err(ServerError::new(
                1105,
                "HY000",
                format!("{ABSENT_TAG} request {} is not in the log", format_id(id)),
            )),
            Lookup::Unknown => Err(ServerError::new(
                1105,
                "HY000",
                "the leader has no record reaching back to when the request was sent",
            )),
        }
    }

    /// After the link broke before any reply to stamped request `id` (sent when this
    /// node knew `since` committed): ask the next leader whether it committed, up to
    /// `deadline`. Answers the client unless the request is to be sent again.
    pub(super) async fn resolve_request(
        &mut self,
        p: &Packet,
        id: u128,
        since: u64,
        deadline: tokio::time::Instant,
        avoid: &mut Option<(String, tokio::time::Instant)>,
    ) -> Result<Resolved, SessionError> {
        let ask = format!("{ASK_PREFIX}{} SINCE {since}", format_id(id));
        loop {
            match self.link_or_hold(p, deadline, avoid).await? {
                Linked::Answered(flow) => return Ok(Resolved::Answered(flow)),
                Linked::Here => {
                    // This node leads now: it answers itself.
                    return match self.answer_request(id, since).await {
                        Ok(d) => self.committed(p, d).await,
                        Err(e) if e.message.contains(ABSENT_TAG) => Ok(Resolved::Absent),
                        Err(e) => {
                            self.reply_err(p.last_seq, outcome_unknown(&e.message))
                                .await?;
                            Ok(Resolved::Answered(Flow::Continue))
                        }
                    };
                }
                Linked::Ready => {}
            }
            let leader = self.route.link_leader.clone();
            let Some((outcome, reply)) = self.collect_on_link(&ask).await else {
                // Broke again: ask the next one.
                *avoid =
                    leader.map(|l| (l, tokio::time::Instant::now() + super::router::AVOID_FOR));
                continue;
            };
            match outcome.error {
                None => {
                    let d = Done {
                        index: outcome.info_matched.unwrap_or(0),
                        affected: outcome.affected_rows,
                        last_insert_id: outcome.last_insert_id,
                    };
                    return self.committed(p, d).await;
                }
                Some(_) => {
                    let err = super::session::err_from_payload(reply.get(4..).unwrap_or_default());
                    if err.message.contains(ABSENT_TAG) {
                        return Ok(Resolved::Absent);
                    }
                    if err.message.contains(super::sequencer::NOT_LEADER_TEXT) {
                        self.route.link = None;
                        *avoid = leader
                            .map(|l| (l, tokio::time::Instant::now() + super::router::AVOID_FOR));
                        continue;
                    }
                    self.reply_err(p.last_seq, outcome_unknown(&err.message))
                        .await?;
                    return Ok(Resolved::Answered(Flow::Continue));
                }
            }
        }
    }

    /// The request committed: the client gets its OK (affected rows, insert id), and
    /// the session's index moves to the entry.
    async fn committed(&mut self, p: &Packet, d: Done) -> Result<Resolved, SessionError> {
        let reply =
            crate::protocol::codes::ok_payload(d.affected, d.last_insert_id, self.status, 0);
        self.route.index = self.route.index.max(d.index);
        tracing::info!(
            id = self.auth.id,
            index = d.index,
            "a write whose link broke had committed: its stored outcome is the reply"
        );
        self.client
            .send(p.last_seq.wrapping_add(1), &reply)
            .await
            .map_err(SessionError::Client)?;
        Ok(Resolved::Answered(Flow::Continue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_flight_ends_when_every_runner_has() {
        let set = InFlight::default();
        let a = set.enter(7);
        let b = set.enter(7);
        drop(a);
        assert!(!set.wait_gone(7, Duration::from_millis(20)).await);
        drop(b);
        assert!(set.wait_gone(7, Duration::from_millis(20)).await);
        assert!(set.wait_gone(8, Duration::from_millis(1)).await);
    }
}
