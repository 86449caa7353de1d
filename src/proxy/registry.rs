//! Connection ids and KILL.
//!
//! # Ids
//! A client can learn a connection id three ways: the greeting (the id drivers use to
//! cancel a query, shown by the `mariadb` CLI), `CONNECTION_ID()`, and `SHOW
//! PROCESSLIST` / `information_schema.PROCESSLIST`. The last two come from MariaDB and
//! give the backend thread id; the greeting gives the proxy's own id. KILL works with
//! all of them:
//!
//! * **Proxy ids** (in the greeting) are `2^30 | node << 20 | n`: unique in the cluster
//!   (the node's 10-bit number in the high bits) and far above any thread id a MariaDB
//!   hands out, so the two id spaces never meet. `KILL <proxy id>` is mapped to the
//!   backend thread of that session.
//! * **Backend thread ids** (`CONNECTION_ID()`, the processlist) are passed to the local
//!   MariaDB as they are, so `KILL CONNECTION_ID()`-style code, `SHOW PROCESSLIST` and
//!   `information_schema.PROCESSLIST` all agree, and `WHERE ID = CONNECTION_ID()` finds
//!   the session's own row, exactly as on a direct connection.
//!
//! We keep `CONNECTION_ID()` and the processlist as MariaDB reports them rather than
//! rewriting them to proxy ids: rewriting would mean decoding result sets and would
//! still miss joins against `information_schema.PROCESSLIST`. The one visible
//! difference is that the greeting's id is not `CONNECTION_ID()`.
//!
//! Either way the rewritten KILL runs on the backend *as the client's user*, so
//! MariaDB's own rule applies: a user may kill its own connections, others need
//! CONNECTION ADMIN.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Bit that marks a proxy id.
pub const PROXY_ID_BIT: u32 = 1 << 30;
/// Ids per node before the counter wraps (live ids are skipped).
const COUNTER_MASK: u32 = (1 << 20) - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: String,
    pub backend_thread: u32,
    /// While the session runs a statement on the leader: the leader's proxy id of
    /// its link there, to which a KILL is relayed.
    pub running_on_leader: Option<u32>,
}

/// Live sessions of one proxy by id, and by backend thread.
pub struct Registry {
    node: u32,
    next: AtomicU32,
    maps: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<u32, Entry>,
    by_thread: HashMap<u32, u32>,
    /// Sessions whose statement is held for a leader (a failover), by proxy id.
    held: HashMap<u32, Arc<Held>>,
}

/// A statement held for a leader; a KILL of its session releases it.
#[derive(Default)]
pub struct Held {
    notify: tokio::sync::Notify,
    /// The KILL was of the connection, not only of the query.
    connection: std::sync::atomic::AtomicBool,
}

impl Held {
    /// Resolves once a KILL names the session: `true` for KILL CONNECTION.
    pub async fn killed(&self) -> bool {
        self.notify.notified().await;
        self.connection.load(Ordering::SeqCst)
    }
}

/// Marks a session's statement as held while it lives.
pub struct HeldGuard {
    registry: Arc<Registry>,
    id: u32,
    pub held: Arc<Held>,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.registry.lock().held.remove(&self.id);
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(0)
    }
}

impl Registry {
    /// A registry for the node numbered `node` (its low 10 bits are used).
    pub fn new(node: u16) -> Self {
        Registry {
            node: u32::from(node) & 0x3FF,
            next: AtomicU32::new(0),
            maps: Mutex::new(Maps::default()),
        }
    }

    /// The node number in this registry's ids.
    pub fn node_number(&self) -> u16 {
        self.node as u16
    }

    /// A new proxy connection id, not used by a live session.
    pub fn allocate(&self) -> u32 {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed) & COUNTER_MASK;
            let id = PROXY_ID_BIT | self.node << 20 | n;
            if !self.lock().sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Record a session; the guard removes it when dropped.
    pub fn register(self: &Arc<Self>, id: u32, entry: Entry) -> RegistryGuard {
        self.lock().insert(id, entry);
        RegistryGuard {
            registry: self.clone(),
            id,
        }
    }

    /// The session a KILL names: by proxy id, or by the backend thread id of one of
    /// this proxy's sessions. `None` for anything else (a thread of the local MariaDB
    /// that is not a session of ours, or no thread at all).
    pub fn lookup(&self, id: u64) -> Option<(u32, Entry)> {
        let id = u32::try_from(id).ok()?;
        let maps = self.lock();
        let proxy_id = if maps.sessions.contains_key(&id) {
            id
        } else {
            *maps.by_thread.get(&id)?
        };
        maps.sessions.get(&proxy_id).map(|e| (proxy_id, e.clone()))
    }

    /// Release the held statement of session `proxy_id`, if it has one (a KILL of it
    /// ran). Whether there was one.
    pub fn release_held(&self, proxy_id: u32, connection: bool) -> bool {
        let Some(held) = self.lock().held.get(&proxy_id).cloned() else {
            return false;
        };
        if connection {
            held.connection.store(true, Ordering::SeqCst);
        }
        // A stored permit: a KILL between the check and the wait is not lost.
        held.notify.notify_one();
        true
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding this lock cannot leave the maps inconsistent.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Maps {
    fn insert(&mut self, id: u32, entry: Entry) {
        self.remove(id);
        self.by_thread.insert(entry.backend_thread, id);
        self.sessions.insert(id, entry);
    }

    fn remove(&mut self, id: u32) {
        self.held.remove(&id);
        if let Some(old) = self.sessions.remove(&id) {
            if self.by_thread.get(&old.backend_thread) == Some(&id) {
                self.by_thread.remove(&old.backend_thread);
            }
        }
    }
}

/// Removes a session from the registry on drop.
pub struct RegistryGuard {
    registry: Arc<Registry>,
    id: u32,
}

impl RegistryGuard {
    pub fn update(&self, entry: Entry) {
        self.registry.lock().insert(self.id, entry);
    }

    /// The session starts (`Some(link id)`) or ends (`None`) running a statement on
    /// the leader.
    pub fn running_on_leader(&self, link: Option<u32>) {
        if let Some(e) = self.registry.lock().sessions.get_mut(&self.id) {
            e.running_on_leader = link;
        }
    }
}

impl RegistryGuard {
    /// The session's statement is held for a leader until the guard is dropped.
    pub fn hold(&self) -> HeldGuard {
        let held = Arc::new(Held::default());
        self.registry.lock().held.insert(self.id, held.clone());
        HeldGuard {
            registry: self.registry.clone(),
            id: self.id,
            held,
        }
    }
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(thread: u32) -> Entry {
        Entry {
            user: "u".into(),
            backend_thread: thread,
            running_on_leader: None,
        }
    }

    #[test]
    fn ids_carry_the_node_and_never_look_like_threads() {
        let r = Registry::new(5);
        let a = r.allocate();
        let b = r.allocate();
        assert_ne!(a, b);
        assert_eq!(a & PROXY_ID_BIT, PROXY_ID_BIT);
        assert_eq!((a >> 20) & 0x3FF, 5);
        assert!(a < 1 << 31, "fits a signed 32-bit int too");
    }

    #[test]
    fn lookup_by_proxy_id_or_backend_thread() {
        let r = Arc::new(Registry::new(1));
        let id = r.allocate();
        {
            let g = r.register(id, entry(3));
            assert_eq!(r.lookup(id as u64).unwrap(), (id, entry(3)));
            assert_eq!(r.lookup(3).unwrap(), (id, entry(3)));
            assert!(r.lookup(4).is_none());
            g.update(entry(9)); // COM_CHANGE_USER keeps the id, the thread may change
            assert!(r.lookup(3).is_none());
            assert_eq!(r.lookup(9).unwrap().0, id);
        }
        assert!(r.lookup(id as u64).is_none());
        assert!(r.lookup(9).is_none());
        assert!(r.is_empty());
    }

    #[test]
    fn allocation_skips_live_ids() {
        let r = Arc::new(Registry::new(0));
        let first = r.allocate();
        let _g = r.register(first, entry(1));
        r.next.store(first & COUNTER_MASK, Ordering::Relaxed); // force a wrap onto it
        assert_ne!(r.allocate(), first);
    }

    #[tokio::test]
    async fn a_kill_releases_a_held_statement_once_and_only_while_held() {
        let r = Arc::new(Registry::new(0));
        let id = r.allocate();
        let g = r.register(id, entry(1));
        assert!(!r.release_held(id, false), "nothing is held yet");
        let held = g.hold();
        // Released before the session waits: the permit is kept.
        assert!(r.release_held(id, true));
        let connection =
            tokio::time::timeout(std::time::Duration::from_secs(5), held.held.killed())
                .await
                .expect("the release reaches the waiter");
        assert!(connection, "KILL CONNECTION is told apart");
        drop(held);
        assert!(!r.release_held(id, false), "the guard's drop ends the hold");
    }
}
