//! The node's own bookkeeping schema in its MariaDB, `wolfscale`, never replicated.
//!
//! `wolfscale.applied` has one row: the last log entry whose effects are committed in
//! this MariaDB (index and term; NULL before the first, since the log starts at index
//! 0), and the cluster membership as of that entry. Replay
//! updates it in the same transaction as the entries' effects, so it is exactly as
//! durable as they are.

use mysql_async::prelude::Queryable;

pub const SCHEMA: &str = "wolfscale";

const CREATE: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS wolfscale CHARACTER SET utf8mb4",
    "CREATE TABLE IF NOT EXISTS wolfscale.applied (
        id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
        log_index BIGINT UNSIGNED NULL,
        log_term BIGINT UNSIGNED NOT NULL,
        membership LONGBLOB NULL,
        updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
     ) ENGINE=InnoDB",
    "INSERT IGNORE INTO wolfscale.applied (id, log_index, log_term) VALUES (1, NULL, 0)",
];

/// The position recorded in `wolfscale.applied`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedRow {
    /// `None` before the first entry.
    pub index: Option<u64>,
    pub term: u64,
    pub membership: Option<Vec<u8>>,
}

/// Create the schema if it is missing (idempotent).
pub async fn ensure(conn: &mut mysql_async::Conn) -> Result<(), mysql_async::Error> {
    for sql in CREATE {
        conn.query_drop(*sql).await?;
    }
    Ok(())
}

pub async fn read_applied(conn: &mut mysql_async::Conn) -> Result<AppliedRow, mysql_async::Error> {
    let row: Option<(Option<u64>, u64, Option<Vec<u8>>)> = conn
        .query_first("SELECT log_index, log_term, membership FROM wolfscale.applied WHERE id = 1")
        .await?;
    Ok(row
        .map(|(index, term, membership)| AppliedRow {
            index,
            term,
            membership,
        })
        .unwrap_or_default())
}

/// The statement that moves the marker; `membership` is kept when `None`.
pub fn update_applied(index: u64, term: u64, membership: Option<&[u8]>) -> String {
    let membership = match membership {
        Some(m) => crate::apply::entry::Value::Bytes(m.to_vec()).literal(),
        None => "membership".into(),
    };
    format!(
        "UPDATE wolfscale.applied SET log_index = {index}, log_term = {term}, membership = {membership}, \
         updated_at = CURRENT_TIMESTAMP(6) WHERE id = 1"
    )
}
