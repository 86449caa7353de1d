//! The node's durable bookkeeping in SQLite (`data_dir/state/state.db`): the WAL purge
//! marker now, the Raft vote and membership later. Small values, written rarely,
//! each write its own transaction (SQLite's journal makes it atomic and durable).

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
}

pub struct StateDb {
    conn: Connection,
    path: PathBuf,
}

impl StateDb {
    /// Open (creating if needed) `dir/state.db`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join("state.db");
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
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
}
