//! Request ids: what makes a forwarded autocommit write safe to send again.
//!
//! A follower that forwards an autocommit write stamps it with a random request id;
//! the leader puts the id in the write's log entry. If the follower's link to the
//! leader breaks before the reply, the write may or may not be in the log. The
//! follower asks the next fenced leader, which has applied every entry committed before
//! its term (ARCHITECTURE §4):
//!
//! * **found**: the write committed; its stored outcome (affected rows, insert id) is
//!   the client's reply;
//! * **absent**, and this node has seen every entry applied since before the request
//!   was sent: it never committed and never will (an entry not in the new leader's log
//!   is discarded), so it is sent again;
//! * otherwise the outcome is unknown, and the client is told so.
//!
//! Every node records the ids of the entries it applies, in memory, for the last
//! [`KEEP`] requests: the question comes within a failover wait of the failure.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Request ids remembered, at most (oldest forgotten first).
pub const KEEP: usize = 100_000;

/// What a committed request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub index: u64,
    pub affected: u64,
    pub last_insert_id: u64,
}

/// The answer to "did request R commit?", given the index the sender knew committed
/// when it sent R.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Committed(Done),
    /// It did not commit, and cannot any more (asked of a fenced leader).
    Absent,
    /// This node has not seen every entry since the request was sent.
    Unknown,
}

/// Request ids of applied entries.
pub struct Requests {
    inner: Mutex<Inner>,
}

struct Inner {
    done: HashMap<u128, Done>,
    order: VecDeque<u128>,
    /// Every entry from this index on that carried a request id is (or was, before
    /// it was forgotten) in `done`.
    seen_from: u64,
    /// The oldest index whose request id has been forgotten, if any was.
    forgotten_through: u64,
}

impl Requests {
    /// Records for a node whose next applied entry will be `next_index`.
    pub fn new(next_index: u64) -> Self {
        Requests {
            inner: Mutex::new(Inner {
                done: HashMap::new(),
                order: VecDeque::new(),
                seen_from: next_index,
                forgotten_through: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot replaced the database through `index`: the request ids of the
    /// entries it covers were never seen here, so nothing at or below it can be
    /// answered `Absent` (it may be in the snapshot).
    pub fn covered_through(&self, index: u64) {
        let mut inner = self.lock();
        inner.forgotten_through = inner.forgotten_through.max(index);
        inner.seen_from = inner.seen_from.max(index.saturating_add(1));
    }

    /// Request `id` committed at `done.index`.
    pub fn record(&self, id: u128, done: Done) {
        let mut inner = self.lock();
        if inner.done.insert(id, done).is_none() {
            inner.order.push_back(id);
        }
        while inner.order.len() > KEEP {
            if let Some(old) = inner.order.pop_front() {
                if let Some(d) = inner.done.remove(&old) {
                    inner.forgotten_through = inner.forgotten_through.max(d.index);
                }
            }
        }
    }

    /// Whether request `id`, sent when its sender knew index `since` committed, has
    /// committed. Only a fenced leader's `Absent` is final.
    pub fn lookup(&self, id: u128, since: u64) -> Lookup {
        let inner = self.lock();
        if let Some(d) = inner.done.get(&id) {
            return Lookup::Committed(*d);
        }
        // Its entry, if any, came after `since`: it was appended after the request
        // left the sender, and the sender had seen `since` committed.
        let first_possible = since.saturating_add(1);
        if inner.seen_from <= first_possible && inner.forgotten_through < first_possible {
            Lookup::Absent
        } else {
            Lookup::Unknown
        }
    }
}

/// A request id as text (32 hex digits).
pub fn format_id(id: u128) -> String {
    format!("{id:032x}")
}

pub fn parse_id(text: &str) -> Option<u128> {
    (text.len() == 32)
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(index: u64) -> Done {
        Done {
            index,
            affected: 1,
            last_insert_id: 7,
        }
    }

    #[test]
    fn found_absent_or_unknown() {
        let r = Requests::new(10);
        r.record(1, done(12));
        assert_eq!(r.lookup(1, 11), Lookup::Committed(done(12)));
        // Sent after index 9 was known committed: every later entry was seen here.
        assert_eq!(r.lookup(2, 9), Lookup::Absent);
        // Sent when only index 5 was known: entries 6..=9 were applied before this
        // node's records began, so it cannot tell.
        assert_eq!(r.lookup(2, 5), Lookup::Unknown);
    }

    #[test]
    fn forgetting_an_id_makes_older_questions_unknown() {
        let r = Requests::new(1);
        for i in 0..(KEEP as u128 + 1) {
            r.record(i, done(i as u64 + 1));
        }
        // Request 0 (index 1) was forgotten: a question about anything that could be
        // at index 1 or later cannot be answered "absent" any more.
        assert_eq!(r.lookup(0, 0), Lookup::Unknown);
        assert_eq!(r.lookup(u128::MAX, 0), Lookup::Unknown);
        assert_eq!(r.lookup(u128::MAX, 5), Lookup::Absent);
        assert!(matches!(r.lookup(5, 0), Lookup::Committed(_)));
    }

    #[test]
    fn ids_round_trip_as_text() {
        let id = 0x0123_4567_89ab_cdef_0011_2233_4455_6677u128;
        assert_eq!(parse_id(&format_id(id)), Some(id));
        assert_eq!(parse_id("12"), None);
        assert_eq!(parse_id(&"g".repeat(32)), None);
    }
}
