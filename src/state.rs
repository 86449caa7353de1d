//! The node's durable bookkeeping in SQLite (`data_dir/state/state.db`): the WAL purge
//! marker and the log's metadata (vote, committed position, membership; opaque bytes
//! for the Raft layer). Small values; each write is its own transaction, or one
//! transaction for several ([`StateDb::set_many`]); SQLite's journal makes it atomic,
//! and `synchronous = FULL` durable when it returns.
//!
//! The WAL writes these values from its writer thread, in order with the log's own
//! I/O (see [`crate::wal`]); nothing else should write the WAL's keys.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("node state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node state database {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// Keys of the values kept.
pub mod keys {
    /// `index:term` of the last purged log entry.
    pub const WAL_PURGED: &str = "wal.purged";
    /// The log's metadata ([`crate::wal::MetaKey`]), opaque bytes.
    pub const WAL_VOTE: &str = "wal.vote";
    pub const WAL_COMMITTED: &str = "wal.committed";
    pub const WAL_MEMBERSHIP: &str = "wal.membership";
}

pub struct StateDb {
    conn: Connection,
    path: PathBuf,
}

impl StateDb {
    /// Open (creating if needed) `dir/state.db`. The directory and its parent are
    /// fsynced once the database files exist, so a new database survives a power cut.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join("state.db");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let err = |source| StateError::Sql {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )
        .map_err(err)?;
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        for d in [dir, parent] {
            std::fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(io_err(d))?;
        }
        Ok(StateDb { conn, path })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.conn
            .query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|source| StateError::Sql {
                path: self.path.clone(),
                source,
            })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|source| StateError::Sql {
                path: self.path.clone(),
                source,
            })
    }

    /// Set several keys in one transaction: all of them are durable, or none.
    pub fn set_many(&mut self, values: &[(&str, &[u8])]) -> Result<(), StateError> {
        let err = |source| StateError::Sql {
            path: self.path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for (key, value) in values {
            tx.execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    pub fn delete(&self, key: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM kv WHERE key = ?1", params![key])
            .map(|_| ())
            .map_err(|source| StateError::Sql {
                path: self.path.clone(),
                source,
            })
    }

    /// Every `(key, value)` whose key starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let err = |source| StateError::Sql {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")
            .map_err(err)?;
        let rows = stmt
            .query_map(params![prefix], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// A `(u64, u64)` pair stored as 16 little-endian bytes.
    pub fn get_pair(&self, key: &str) -> Result<Option<(u64, u64)>, StateError> {
        Ok(self.get(key)?.and_then(|v| {
            let a: [u8; 8] = v.get(..8)?.try_into().ok()?;
            let b: [u8; 8] = v.get(8..16)?.try_into().ok()?;
            Some((u64::from_le_bytes(a), u64::from_le_bytes(b)))
        }))
    }

    pub fn set_pair(&self, key: &str, (a, b): (u64, u64)) -> Result<(), StateError> {
        let mut v = a.to_le_bytes().to_vec();
        v.extend_from_slice(&b.to_le_bytes());
        self.set(key, &v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open(dir.path()).unwrap();
            assert_eq!(db.get_pair(keys::WAL_PURGED).unwrap(), None);
            db.set_pair(keys::WAL_PURGED, (10, 2)).unwrap();
            db.set_pair(keys::WAL_PURGED, (20, 3)).unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.get_pair(keys::WAL_PURGED).unwrap(), Some((20, 3)));
    }

    #[test]
    fn set_many_is_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut db = StateDb::open(dir.path()).unwrap();
            db.set_many(&[(keys::WAL_VOTE, b"v1"), (keys::WAL_COMMITTED, b"c1")])
                .unwrap();
            // The same key twice: the later value wins.
            db.set_many(&[(keys::WAL_VOTE, b"v2"), (keys::WAL_VOTE, b"v3")])
                .unwrap();
            // A failing statement rolls back the whole transaction: a value that is
            // not a blob, text or number cannot be bound, so fail through a trigger.
            db.conn
                .execute_batch(
                    "CREATE TRIGGER no_membership BEFORE INSERT ON kv
                     WHEN NEW.key = 'wal.membership' BEGIN SELECT RAISE(ABORT, 'no'); END;",
                )
                .unwrap();
            let r = db.set_many(&[(keys::WAL_COMMITTED, b"c2"), (keys::WAL_MEMBERSHIP, b"m")]);
            assert!(r.is_err());
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.get(keys::WAL_VOTE).unwrap().as_deref(), Some(&b"v3"[..]));
        assert_eq!(
            db.get(keys::WAL_COMMITTED).unwrap().as_deref(),
            Some(&b"c1"[..])
        );
        assert_eq!(db.get(keys::WAL_MEMBERSHIP).unwrap(), None);
    }
}
