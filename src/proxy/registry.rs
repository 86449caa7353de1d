//! Proxy connection ids and KILL.
//!
//! Clients see the proxy's own connection ids (in the greeting), never the backend's
//! thread ids. `KILL [CONNECTION|QUERY] n` and COM_PROCESS_KILL name a proxy id; the
//! registry maps it to the backend thread that serves that session, and the session
//! sends the rewritten KILL to MariaDB *as the client's user*, so MariaDB's own rule
//! applies: a user may kill its own connections, others need CONNECTION ADMIN.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: String,
    pub backend_thread: u32,
}

/// Live sessions by proxy connection id.
#[derive(Default)]
pub struct Registry {
    next: AtomicU32,
    sessions: Mutex<HashMap<u32, Entry>>,
}

impl Registry {
    /// A new proxy connection id (never 0).
    pub fn allocate(&self) -> u32 {
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 {
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

    pub fn lookup(&self, id: u64) -> Option<Entry> {
        let id = u32::try_from(id).ok()?;
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
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
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A KILL statement that names a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub query_only: bool,
    pub id: u64,
}

/// Parse `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`. `KILL QUERY ID <qid>` and
/// `KILL USER <name>` name no connection id and return `None` (they pass through).
pub fn parse_kill(sql: &str) -> Option<Kill> {
    let sql = sql.trim().trim_end_matches(';').trim();
    let mut words = sql.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    let mut query_only = false;
    for w in words.by_ref() {
        match w.to_ascii_lowercase().as_str() {
            "hard" | "soft" | "connection" => {}
            "query" => query_only = true,
            _ => {
                let id = w.parse().ok()?;
                return Some(Kill { query_only, id });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_forms() {
        assert_eq!(
            parse_kill("KILL 5"),
            Some(Kill {
                query_only: false,
                id: 5
            })
        );
        assert_eq!(
            parse_kill(" kill query 7 ;"),
            Some(Kill {
                query_only: true,
                id: 7
            })
        );
        assert_eq!(
            parse_kill("KILL HARD CONNECTION 9"),
            Some(Kill {
                query_only: false,
                id: 9
            })
        );
        assert_eq!(parse_kill("KILL QUERY ID 9"), None);
        assert_eq!(parse_kill("KILL USER bob"), None);
        assert_eq!(parse_kill("SELECT 1"), None);
        assert_eq!(parse_kill("KILL"), None);
    }

    #[test]
    fn guard_unregisters() {
        let r = Arc::new(Registry::default());
        let id = r.allocate();
        {
            let _g = r.register(
                id,
                Entry {
                    user: "u".into(),
                    backend_thread: 3,
                },
            );
            assert_eq!(r.lookup(id as u64).unwrap().backend_thread, 3);
        }
        assert!(r.lookup(id as u64).is_none());
    }
}
