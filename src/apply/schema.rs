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

/// The MariaDB settings statement replay depends on (ARCHITECTURE §2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplaySettings {
    /// `major.minor` of the server version.
    pub version: String,
    pub innodb_autoinc_lock_mode: i64,
    pub event_scheduler: String,
    pub lower_case_table_names: i64,
    pub character_set_server: String,
    pub collation_server: String,
    pub explicit_defaults_for_timestamp: String,
    /// Rows in `mysql.time_zone_name` (0: named time zones are unknown).
    pub time_zone_names: i64,
}

impl ReplaySettings {
    pub async fn read(conn: &mut mysql_async::Conn) -> Result<Self, mysql_async::Error> {
        type Row = (String, i64, String, i64, String, String, String);
        let row: Option<Row> = conn
            .query_first(
                "SELECT @@version, @@innodb_autoinc_lock_mode, @@event_scheduler, \
                 @@lower_case_table_names, @@character_set_server, @@collation_server, \
                 @@explicit_defaults_for_timestamp",
            )
            .await?;
        let (version, autoinc, events, lctn, charset, collation, edft) = row.unwrap_or_default();
        let zones: Option<i64> = conn
            .query_first("SELECT COUNT(*) FROM mysql.time_zone_name")
            .await
            .unwrap_or(Some(0));
        let version = version.split('.').take(2).collect::<Vec<_>>().join(".");
        Ok(ReplaySettings {
            version,
            innodb_autoinc_lock_mode: autoinc,
            event_scheduler: events,
            lower_case_table_names: lctn,
            character_set_server: charset,
            collation_server: collation,
            explicit_defaults_for_timestamp: edft,
            time_zone_names: zones.unwrap_or(0),
        })
    }

    /// Settings that make statement replay unsafe on their own.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.innodb_autoinc_lock_mode > 1 {
            out.push(format!(
                "innodb_autoinc_lock_mode = {} (interleaved): multi-row inserts get ids that \
                 replay cannot reproduce; set innodb_autoinc_lock_mode = 1 in the MariaDB config",
                self.innodb_autoinc_lock_mode
            ));
        }
        if !self.event_scheduler.eq_ignore_ascii_case("OFF")
            && !self.event_scheduler.eq_ignore_ascii_case("DISABLED")
        {
            out.push(format!(
                "event_scheduler = {}: events would write on every node outside the log; \
                 set event_scheduler = OFF",
                self.event_scheduler
            ));
        }
        out
    }

    /// Differences from another node's settings that can make replay differ.
    pub fn differences(&self, other: &ReplaySettings) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: {a} here, {b} there"));
            }
        };
        cmp(
            "MariaDB version",
            self.version.clone(),
            other.version.clone(),
        );
        cmp(
            "lower_case_table_names",
            self.lower_case_table_names.to_string(),
            other.lower_case_table_names.to_string(),
        );
        cmp(
            "character_set_server",
            self.character_set_server.clone(),
            other.character_set_server.clone(),
        );
        cmp(
            "collation_server",
            self.collation_server.clone(),
            other.collation_server.clone(),
        );
        cmp(
            "explicit_defaults_for_timestamp",
            self.explicit_defaults_for_timestamp.clone(),
            other.explicit_defaults_for_timestamp.clone(),
        );
        cmp(
            "time zone tables loaded",
            (self.time_zone_names > 0).to_string(),
            (other.time_zone_names > 0).to_string(),
        );
        out
    }
}
