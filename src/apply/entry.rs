//! What one replicated log entry holds: a write transaction, or a DDL / account
//! statement, with everything its replay needs to give the same result on every node
//! (ARCHITECTURE §2).
//!
//! # Encoding
//! `[version: u8 = 2][postcard(LogEntry)]`. postcard is compact (varints, no field
//! names), and the version byte lets a later format be told apart. Decoding never
//! panics: bytes from the log or a peer that do not decode are an error.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Format version of the encoding (the first byte).
pub const FORMAT_VERSION: u8 = 2;
/// Largest encoded entry: a transaction beyond this gets a clear error at COMMIT.
pub const MAX_ENTRY_BYTES: usize = 32 << 20;

/// Who produced a transaction: the producing node's incarnation (a random 64-bit id
/// its state database got when it was created, so a wiped node is a new producer) and
/// a counter. It names the XA transaction on the producer's MariaDB, and it is how
/// the applier matches an entry to the session waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnId {
    pub incarnation: u64,
    pub seq: u64,
}

impl TxnId {
    /// The XA transaction id (gtrid) on the producing node's MariaDB.
    pub fn xid(&self) -> String {
        format!("{}{}", self.xid_prefix(), self.seq)
    }

    /// What every xid of this producer starts with.
    pub fn xid_prefix(&self) -> String {
        format!("wolfscale-{:016x}-", self.incarnation)
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{}", self.incarnation, self.seq)
    }
}

/// A replicated command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogEntry {
    /// DML statements that commit together.
    Txn(Txn),
    /// A statement that commits implicitly (DDL, accounts), alone.
    Ddl(Ddl),
}

impl LogEntry {
    /// The latest pinned timestamp of its statements (µs).
    pub fn latest_timestamp(&self) -> Option<i64> {
        match self {
            LogEntry::Txn(t) => t.statements.iter().map(|s| s.pins.timestamp_us).max(),
            LogEntry::Ddl(d) => Some(d.statement.pins.timestamp_us),
        }
    }

    pub fn id(&self) -> TxnId {
        match self {
            LogEntry::Txn(t) => t.id,
            LogEntry::Ddl(d) => d.id,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        let mut out = vec![FORMAT_VERSION];
        postcard::to_io(self, &mut out).map_err(|e| EntryError::Encode(e.to_string()))?;
        if out.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge {
                bytes: out.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        match bytes.split_first() {
            Some((&FORMAT_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| EntryError::Decode(e.to_string()))
            }
            Some((&v, _)) => Err(EntryError::Version(v)),
            None => Err(EntryError::Decode("empty entry".into())),
        }
    }
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogEntry::Txn(t) => write!(f, "txn {} ({} statements)", t.id, t.statements.len()),
            LogEntry::Ddl(d) => write!(f, "ddl {}", d.id),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("cannot encode log entry: {0}")]
    Encode(String),
    #[error("cannot decode log entry: {0}")]
    Decode(String),
    #[error("log entry format version {0} is not supported by this build")]
    Version(u8),
    #[error("transaction of {bytes} bytes exceeds the {max}-byte log entry limit")]
    TooLarge { bytes: usize, max: usize },
}

/// A write transaction as it ran on the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Txn {
    pub id: TxnId,
    /// The session settings in force (captured at the first write).
    pub session: SessionVars,
    pub statements: Vec<Statement>,
    /// The request id a follower stamped on a forwarded autocommit write (see
    /// `cluster::requests`): how it learns, after losing the leader, whether the write
    /// committed.
    pub request: Option<u128>,
}

/// A DDL or account statement, already run on the leader as the client's user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ddl {
    pub id: TxnId,
    pub session: SessionVars,
    pub statement: Statement,
}

/// Session settings a statement's result depends on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionVars {
    /// `character_set_client`, `collation_connection` (set with `SET NAMES`).
    pub charset: String,
    pub collation: String,
    /// Other variables, set per statement with `SET STATEMENT name=value FOR`.
    pub vars: Vec<(String, Value)>,
}

/// One statement and what pins its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The default database it ran in.
    pub db: Option<String>,
    /// The text (non-deterministic functions already replaced by their values).
    pub sql: String,
    /// Typed parameters when it ran as a prepared statement.
    pub params: Option<Vec<Value>>,
    /// `SET STATEMENT` values: timestamp, RAND() seeds, the auto-increment and
    /// LAST_INSERT_ID() values it used.
    pub pins: Pins,
    /// User variables it reads, with the values they had.
    pub user_vars: Vec<(String, Value)>,
    /// What it did on the leader; a replay that does otherwise has diverged.
    pub expect: RowCounts,
}

/// The values that make a statement deterministic on replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// `@@timestamp` in microseconds since the epoch.
    pub timestamp_us: i64,
    pub rand_seed1: u32,
    pub rand_seed2: u32,
    /// First auto-increment value it generated (`INSERT_ID`).
    pub insert_id: Option<u64>,
    /// The value `LAST_INSERT_ID()` returned inside it.
    pub last_insert_id: Option<u64>,
}

/// Rows a statement changed (and matched, for UPDATE: `Rows matched: N`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    pub affected: u64,
    pub matched: Option<u64>,
}

/// A typed value: a prepared-statement parameter, a user variable, a session variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// Bytes, interpreted in the connection's character set (prepared-statement
    /// parameters) or binary.
    Bytes(Vec<u8>),
    /// Text in a named character set (user variables keep theirs).
    Text(String, Vec<u8>),
    /// `DECIMAL`, as its exact text.
    Decimal(String),
    /// year, month, day, hour, minute, second, microsecond.
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// negative, days, hours, minutes, seconds, microseconds.
    Time(bool, u32, u8, u8, u8, u32),
}

impl Value {
    /// The value as a SQL literal that means the same in any `sql_mode` and character
    /// set (strings as hex, so no escaping is involved).
    pub fn literal(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Int(v) => v.to_string(),
            Value::UInt(v) => v.to_string(),
            Value::Float(v) => format!("{v:e}"),
            Value::Double(v) => format!("{v:e}"),
            Value::Bytes(b) if b.is_empty() => "''".into(),
            Value::Bytes(b) => hex(b),
            Value::Text(charset, b) if is_charset_name(charset) && b.is_empty() => {
                format!("_{charset}''")
            }
            Value::Text(charset, b) if is_charset_name(charset) => format!("_{charset} {}", hex(b)),
            Value::Text(_, b) => hex(b),
            Value::Decimal(d) => d.clone(),
            Value::Date(y, mo, d, h, mi, s, us) => {
                format!("'{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}'")
            }
            Value::Time(neg, days, h, mi, s, us) => {
                let hours = u64::from(*days) * 24 + u64::from(*h);
                let sign = if *neg { "-" } else { "" };
                format!("'{sign}{hours:02}:{mi:02}:{s:02}.{us:06}'")
            }
        }
    }
}

/// `X'…'` for non-empty bytes.
fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(3 + 2 * b.len());
    s.push_str("X'");
    for byte in b {
        s.push_str(&format!("{byte:02X}"));
    }
    s.push('\'');
    s
}

/// A character set name that can follow `_` as an introducer (never quoted text).
fn is_charset_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LogEntry {
        LogEntry::Txn(Txn {
            id: TxnId {
                incarnation: 0xABCD,
                seq: 7,
            },
            session: SessionVars {
                charset: "utf8mb4".into(),
                collation: "utf8mb4_general_ci".into(),
                vars: vec![(
                    "sql_mode".into(),
                    Value::Bytes(b"STRICT_ALL_TABLES".to_vec()),
                )],
            },
            statements: vec![Statement {
                db: Some("app".into()),
                sql: "INSERT INTO t VALUES (?, NOW(6))".into(),
                params: Some(vec![
                    Value::Int(-3),
                    Value::Null,
                    Value::Bytes(vec![0, 255]),
                ]),
                pins: Pins {
                    timestamp_us: 1_700_000_000_123_456,
                    rand_seed1: 1,
                    rand_seed2: 2,
                    insert_id: Some(41),
                    last_insert_id: None,
                },
                user_vars: vec![("x".into(), Value::Decimal("1.50".into()))],
                expect: RowCounts {
                    affected: 1,
                    matched: None,
                },
            }],
            request: None,
        })
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let bytes = e.encode().unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let bytes = sample().encode().unwrap();
        assert_eq!(
            LogEntry::decode(&[]).unwrap_err(),
            EntryError::Decode("empty entry".into())
        );
        assert_eq!(
            LogEntry::decode(&[9, 1, 2]).unwrap_err(),
            EntryError::Version(9)
        );
        for cut in 1..bytes.len() {
            assert!(LogEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn literals_need_no_escaping() {
        assert_eq!(Value::Bytes(b"a'b\\".to_vec()).literal(), "X'6127625C'");
        assert_eq!(Value::Bytes(vec![]).literal(), "''");
        assert_eq!(
            Value::Text("utf8mb4".into(), "é".as_bytes().to_vec()).literal(),
            "_utf8mb4 X'C3A9'"
        );
        // A name that is not a plain identifier is never pasted into SQL.
        assert_eq!(Value::Text("x' OR 1".into(), vec![1]).literal(), "X'01'");
        assert_eq!(Value::Int(-5).literal(), "-5");
        assert_eq!(
            Value::Date(2024, 2, 29, 23, 59, 58, 120).literal(),
            "'2024-02-29 23:59:58.000120'"
        );
        assert_eq!(
            Value::Time(true, 1, 2, 3, 4, 5).literal(),
            "'-26:03:04.000005'"
        );
        assert_eq!(Value::Double(0.1).literal().parse::<f64>().unwrap(), 0.1);
    }
}
