//! The order in which the leader proposes prepared transactions to the log.
//!
//! MariaDB's `XA PREPARE` releases a transaction's shared and gap locks, keeping only
//! the exclusive locks on the rows it changed (InnoDB does this so that a prepared
//! transaction blocks as little as possible). Once T is prepared, another transaction
//! U may change a row that T read under a shared lock (`INSERT … SELECT`, a foreign
//! key or duplicate-key check) or insert into a gap T had locked, and then prepare
//! too. If U's entry reached the log before T's, every follower would replay U first
//! and T's read would see U's change: a divergence that no row count catches when the
//! read only feeds values.
//!
//! So each transaction takes a [`Ticket`] while it still holds every lock, before
//! `XA END`/`XA PREPARE` is sent, and entries are proposed in ticket order. Whatever
//! U did after T released a lock happened after T's ticket was taken, so U's ticket,
//! taken later still, comes after T's and so does its entry. A ticket is resolved when
//! its entry is handed to Raft or when the transaction gives up (a failed PREPARE, a
//! dropped session): dropping it is enough, so no path can leave the queue stuck.
//!
//! The cost is small: a later ticket waits only for earlier `XA PREPARE`s to return
//! (the proposal itself is a channel send to openraft), and concurrent PREPAREs share
//! InnoDB's group commit.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The queue of tickets. Proposals go out in ticket order.
pub struct ProposalOrder {
    inner: Mutex<Inner>,
    /// The lowest ticket not yet resolved.
    turn: watch::Sender<u64>,
}

struct Inner {
    next: u64,
    turn: u64,
    /// Tickets resolved before their turn (gave up early).
    resolved: BTreeSet<u64>,
}

impl Default for ProposalOrder {
    fn default() -> Self {
        ProposalOrder {
            inner: Mutex::new(Inner {
                next: 0,
                turn: 0,
                resolved: BTreeSet::new(),
            }),
            turn: watch::Sender::new(0),
        }
    }
}

impl ProposalOrder {
    /// A place in the order, after every ticket taken so far.
    pub fn take(self: &Arc<Self>) -> Ticket {
        let mut inner = self.lock();
        let n = inner.next;
        inner.next += 1;
        Ticket {
            order: self.clone(),
            n,
        }
    }

    /// Tickets taken and not yet resolved.
    pub fn outstanding(&self) -> u64 {
        let inner = self.lock();
        inner.next - inner.turn - inner.resolved.len() as u64
    }

    fn resolve(&self, n: u64) {
        let mut inner = self.lock();
        inner.resolved.insert(n);
        let before = inner.turn;
        while inner.resolved.first() == Some(&inner.turn) {
            let t = inner.turn;
            inner.resolved.remove(&t);
            inner.turn += 1;
        }
        if inner.turn != before {
            self.turn.send_replace(inner.turn);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One transaction's place in the order; resolved when dropped.
pub struct Ticket {
    order: Arc<ProposalOrder>,
    n: u64,
}

impl Ticket {
    /// Wait until every earlier ticket is resolved: this one may propose now.
    pub async fn turn(&self) {
        let mut rx = self.order.turn.subscribe();
        // The sender lives in `self.order`, so the channel cannot close under us.
        rx.wait_for(|t| *t >= self.n).await.ok();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.order.resolve(self.n);
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({})", self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn is_ready(fut: impl std::future::Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(fut);
        fut.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_ticket_waits_for_every_earlier_one() {
        let order = Arc::new(ProposalOrder::default());
        let a = order.take();
        let b = order.take();
        let c = order.take();
        assert!(is_ready(a.turn()));
        assert!(!is_ready(b.turn()));
        assert!(!is_ready(c.turn()));
        // c gives up first: b still waits for a, and c's place is kept resolved.
        drop(c);
        assert!(!is_ready(b.turn()));
        assert_eq!(order.outstanding(), 2);
        drop(a);
        assert!(is_ready(b.turn()));
        drop(b);
        assert_eq!(order.outstanding(), 0);
        assert!(is_ready(order.take().turn()));
    }

    #[tokio::test]
    async fn proposals_leave_in_ticket_order_whatever_order_they_are_ready_in() {
        let order = Arc::new(ProposalOrder::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Tickets 0..8 are taken in order; their holders become ready in reverse.
        for i in 0..8u64 {
            let ticket = order.take();
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5 * (8 - i))).await;
                ticket.turn().await;
                log.lock().unwrap().push(i);
                // A holder that gives up without proposing frees its place too.
                drop(ticket);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_block_later_tickets() {
        let order = Arc::new(ProposalOrder::default());
        let first = order.take();
        let second = order.take();
        let third = order.take();
        let waiting = tokio::spawn(async move { second.turn().await });
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), third.turn())
            .await
            .expect("the cancelled ticket was resolved when its task was dropped");
    }
}
