//! The raw layer: TOML text → `toml::Table` → schema walk → [`RawConfig`].
//!
//! The walk, not serde, decides what is an unknown key or a wrongly typed value, because
//! serde stops at the first problem and an operator should see all of them in one run. Every
//! key the walk accepts has the TOML type its raw field wants, so the final serde step into
//! [`RawConfig`] cannot fail on user input. Raw fields are `Option`s with no defaults and no
//! bounds: those belong to the checked layer (`check.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::{Spanned, Table, Value};

use super::diagnostic::{closest, Diagnostic, Location, Problem, Severity};
use super::secret::Secret;

/// The TOML type a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Integer,
    Boolean,
    String,
    StringArray,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Integer => "integer",
            Kind::Boolean => "boolean",
            Kind::String => "string",
            Kind::StringArray => "array of strings",
        }
    }

    /// Empty when `value` fits; otherwise, for each misfit, the key suffix (`[2]` for a bad
    /// array element), the expected type and the type found.
    fn mismatches(self, value: &Value) -> Vec<(String, &'static str, &'static str)> {
        let fits = match (self, value) {
            (Kind::Integer, Value::Integer(_))
            | (Kind::Boolean, Value::Boolean(_))
            | (Kind::String, Value::String(_)) => true,
            (Kind::StringArray, Value::Array(items)) => {
                return items
                    .iter()
                    .enumerate()
                    .filter(|(_, item)| !item.is_str())
                    .map(|(i, item)| (format!("[{i}]"), "string", item.type_str()))
                    .collect();
            }
            _ => false,
        };
        if fits {
            Vec::new()
        } else {
            vec![(String::new(), self.name(), value.type_str())]
        }
    }
}

/// Every section and key WolfScale knows, with its TOML type. A unit test checks this list
/// against the fields of the raw structs, in both directions.
pub(crate) const SCHEMA: &[(&str, &[(&str, Kind)])] = &[
    (
        "node",
        &[
            ("id", Kind::String),
            ("number", Kind::Integer),
            ("priority", Kind::Integer),
            ("bind_address", Kind::String),
            ("advertise_address", Kind::String),
            ("data_dir", Kind::String),
        ],
    ),
    (
        "database",
        &[
            ("host", Kind::String),
            ("port", Kind::Integer),
            ("user", Kind::String),
            ("password", Kind::String),
            ("database", Kind::String),
            ("socket", Kind::String),
            ("pool_size", Kind::Integer),
            ("follower_innodb_flush", Kind::Integer),
        ],
    ),
    (
        "wal",
        &[
            ("batch_size", Kind::Integer),
            ("flush_interval_ms", Kind::Integer),
            ("compression", Kind::Boolean),
            ("segment_size_mb", Kind::Integer),
            ("retention_hours", Kind::Integer),
            ("snapshot_entries", Kind::Integer),
            ("fsync", Kind::Boolean),
        ],
    ),
    (
        "cluster",
        &[
            ("bootstrap", Kind::Boolean),
            ("peers", Kind::StringArray),
            ("heartbeat_interval_ms", Kind::Integer),
            ("election_timeout_ms", Kind::Integer),
            ("election_timeout_min_ms", Kind::Integer),
            ("election_timeout_max_ms", Kind::Integer),
            ("disable_auto_election", Kind::Boolean),
            ("secret", Kind::String),
        ],
    ),
    (
        "api",
        &[
            ("enabled", Kind::Boolean),
            ("bind_address", Kind::String),
            ("token", Kind::String),
            ("max_body_bytes", Kind::Integer),
            ("id_column", Kind::String),
            ("user", Kind::String),
            ("password", Kind::String),
        ],
    ),
    (
        "proxy",
        &[
            ("enabled", Kind::Boolean),
            ("bind_address", Kind::String),
            ("max_connections", Kind::Integer),
            ("tls_cert", Kind::String),
            ("tls_key", Kind::String),
            ("handshake_timeout_ms", Kind::Integer),
            ("max_allowed_packet", Kind::Integer),
            ("shutdown_timeout_ms", Kind::Integer),
            ("client_buffer_limit_mb", Kind::Integer),
            ("net_read_timeout_ms", Kind::Integer),
            ("refuse_weak_isolation", Kind::Boolean),
            ("read_consistency", Kind::String),
            ("read_wait_ms", Kind::Integer),
            ("failover_wait_ms", Kind::Integer),
        ],
    ),
];

fn section_keys(section: &str) -> Option<&'static [(&'static str, Kind)]> {
    SCHEMA
        .iter()
        .find(|(name, _)| *name == section)
        .map(|(_, keys)| *keys)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub node: RawNode,
    pub database: RawDatabase,
    pub wal: RawWal,
    pub cluster: RawCluster,
    pub api: RawApi,
    pub proxy: RawProxy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawNode {
    pub id: Option<String>,
    pub number: Option<i64>,
    pub priority: Option<i64>,
    pub bind_address: Option<String>,
    pub advertise_address: Option<String>,
    pub data_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawDatabase {
    pub host: Option<String>,
    pub port: Option<i64>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub database: Option<String>,
    pub socket: Option<String>,
    pub pool_size: Option<i64>,
    pub follower_innodb_flush: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawWal {
    pub batch_size: Option<i64>,
    pub flush_interval_ms: Option<i64>,
    pub compression: Option<bool>,
    pub segment_size_mb: Option<i64>,
    pub retention_hours: Option<i64>,
    pub snapshot_entries: Option<i64>,
    pub fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub bootstrap: Option<bool>,
    pub peers: Option<Vec<String>>,
    pub heartbeat_interval_ms: Option<i64>,
    /// Shorthand for `election_timeout_min_ms = N`, `election_timeout_max_ms = 2N`.
    pub election_timeout_ms: Option<i64>,
    pub election_timeout_min_ms: Option<i64>,
    pub election_timeout_max_ms: Option<i64>,
    pub disable_auto_election: Option<bool>,
    pub secret: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawApi {
    pub enabled: Option<bool>,
    pub bind_address: Option<String>,
    pub token: Option<Secret>,
    pub max_body_bytes: Option<i64>,
    pub id_column: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawProxy {
    pub enabled: Option<bool>,
    pub bind_address: Option<String>,
    pub max_connections: Option<i64>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub handshake_timeout_ms: Option<i64>,
    pub max_allowed_packet: Option<i64>,
    pub shutdown_timeout_ms: Option<i64>,
    pub client_buffer_limit_mb: Option<i64>,
    pub net_read_timeout_ms: Option<i64>,
    pub refuse_weak_isolation: Option<bool>,
    pub read_consistency: Option<String>,
    pub read_wait_ms: Option<i64>,
    pub failover_wait_ms: Option<i64>,
}

/// The outcome of the raw layer.
pub(crate) struct Parsed {
    /// `None` only for a TOML syntax error (or an internal error, reported as a diagnostic).
    pub raw: Option<RawConfig>,
    /// Dotted keys (or whole sections) the user did write, but misspelled or with the wrong
    /// type. The checked layer does not also call them missing.
    pub shadowed: BTreeSet<String>,
    pub spans: Spans,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses `text` and walks it against [`SCHEMA`].
pub(crate) fn parse(text: &str, file: &Path) -> Parsed {
    let mut parsed = Parsed {
        raw: None,
        shadowed: BTreeSet::new(),
        spans: Spans::default(),
        diagnostics: Vec::new(),
    };
    let table = match text.parse::<Table>() {
        Ok(table) => table,
        Err(e) => {
            parsed.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: file.to_path_buf(),
                key: String::new(),
                message: format!(
                    "TOML syntax error: {}",
                    e.message().trim().replace('\n', "; ")
                ),
                suggestion: None,
                problem: Problem::Syntax,
                location: e.span().map(|s| Location::of_offset(text, s.start)),
            });
            return parsed;
        }
    };
    parsed.spans = Spans::collect(text);
    let mut walk = Walk {
        file,
        parsed: &mut parsed,
    };
    let clean = walk.tables(table);
    parsed.raw = match Value::Table(clean).try_into::<RawConfig>() {
        Ok(raw) => Some(raw),
        Err(e) => {
            // Unreachable if SCHEMA matches the raw structs (a unit test checks that), but a
            // bug here must still refuse the file, not panic.
            parsed.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: file.to_path_buf(),
                key: String::new(),
                message: format!("internal error reading config: {e}"),
                suggestion: None,
                problem: Problem::InvalidValue,
                location: None,
            });
            None
        }
    };
    parsed
}

struct Walk<'a> {
    file: &'a Path,
    parsed: &'a mut Parsed,
}

impl Walk<'_> {
    /// Returns the part of `table` that matches the schema, reporting everything else.
    fn tables(&mut self, table: Table) -> Table {
        let mut clean = Table::new();
        for (section, value) in table {
            let Some(keys) = section_keys(&section) else {
                self.unknown_top_level(&section);
                continue;
            };
            match value {
                Value::Table(entries) => {
                    let entries = self.section(&section, keys, entries);
                    clean.insert(section, Value::Table(entries));
                }
                other => {
                    self.wrong_type(section.clone(), "table", other.type_str(), None);
                    self.parsed.shadowed.insert(section);
                }
            }
        }
        clean
    }

    fn section(&mut self, section: &str, keys: &[(&str, Kind)], entries: Table) -> Table {
        let mut clean = Table::new();
        for (key, value) in entries {
            let dotted = format!("{section}.{key}");
            match keys.iter().find(|(name, _)| *name == key) {
                Some((_, kind)) => {
                    let mismatches = kind.mismatches(&value);
                    if mismatches.is_empty() {
                        clean.insert(key, value);
                    } else {
                        let hint = type_hint(&dotted, &value);
                        for (suffix, expected, found) in mismatches {
                            let key = format!("{dotted}{suffix}");
                            self.wrong_type(key, expected, found, hint.as_deref());
                        }
                        self.parsed.shadowed.insert(dotted);
                    }
                }
                None => {
                    let suggestion = closest(&key, keys.iter().map(|(name, _)| *name));
                    let suggestion = match suggestion {
                        Some(name) => {
                            self.parsed.shadowed.insert(format!("{section}.{name}"));
                            Some(name.to_owned())
                        }
                        // A key that exists, but in another section: `[node] peers = ...`.
                        None => key_elsewhere(&key, Some(section)),
                    };
                    self.unknown(dotted, suggestion);
                }
            }
        }
        clean
    }

    /// A top-level name that is not a section: a misspelled section (`[databse]`) or a key
    /// written above the first section header (`id = 3`).
    fn unknown_top_level(&mut self, name: &str) {
        let suggestion = match closest(name, SCHEMA.iter().map(|(s, _)| *s)) {
            Some(section) => {
                self.parsed.shadowed.insert(section.to_owned());
                Some(section.to_owned())
            }
            None => key_elsewhere(name, None),
        };
        let what = if suggestion.as_deref().is_some_and(|s| s.contains('.')) {
            "unknown top-level key, keys belong in a section"
        } else {
            "unknown section"
        };
        self.push(
            name.to_owned(),
            Problem::UnknownKey,
            what.to_owned(),
            suggestion,
        );
    }

    fn unknown(&mut self, key: String, suggestion: Option<String>) {
        self.push(
            key,
            Problem::UnknownKey,
            "unknown key".to_owned(),
            suggestion,
        );
    }

    fn wrong_type(&mut self, key: String, expected: &str, found: &str, hint: Option<&str>) {
        let mut message = format!("expected {expected}, found {found}");
        if let Some(hint) = hint {
            message += ": ";
            message += hint;
        }
        self.push(key, Problem::WrongType, message, None);
    }

    fn push(&mut self, key: String, problem: Problem, message: String, suggestion: Option<String>) {
        self.parsed.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: self.file.to_path_buf(),
            key,
            message,
            suggestion,
            problem,
            location: None,
        });
    }
}

/// Advice for a wrongly typed value that has an obvious fix. Earlier builds took `node.id`
/// as an integer; a quoted id keeps the same node number (see `derive_node_number`).
fn type_hint(dotted: &str, value: &Value) -> Option<String> {
    match (dotted, value) {
        ("node.id", Value::Integer(n)) if (0..=1023).contains(n) => Some(format!(
            "a node id is a string such as \"node-1\"; write id = \"{n}\" to keep node number {n}"
        )),
        ("node.id", _) => Some("a node id is a string such as \"node-1\"".to_owned()),
        _ => None,
    }
}

/// `section.key` for a key that exists (exactly or nearly) in a section other than `not_in`.
fn key_elsewhere(key: &str, not_in: Option<&str>) -> Option<String> {
    let dotted: Vec<String> = SCHEMA
        .iter()
        .filter(|(section, _)| Some(*section) != not_in)
        .flat_map(|(section, keys)| keys.iter().map(move |(k, _)| format!("{section}.{k}")))
        .collect();
    let names = dotted
        .iter()
        .map(|d| d.split_once('.').map_or(d.as_str(), |(_, k)| k));
    let best = closest(key, names)?;
    dotted
        .iter()
        .find(|d| d.split_once('.').is_some_and(|(_, k)| k == best))
        .cloned()
}

/// Byte spans of the section names and of the keys in each section, so a diagnostic can
/// point at a line. Best effort: if this second parse fails, diagnostics go without a line.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    /// Section name → (span of the name, its keys).
    sections: BTreeMap<String, (Range<usize>, KeyMap)>,
}

/// Key name → span of the name.
type KeyMap = BTreeMap<String, Range<usize>>;

impl Spans {
    fn collect(text: &str) -> Spans {
        let Ok(top) = toml::from_str::<BTreeMap<Spanned<String>, KeySpans>>(text) else {
            return Spans::default();
        };
        let sections = top
            .into_iter()
            .map(|(name, keys)| {
                let span = name.span();
                (name.into_inner(), (span, keys.0))
            })
            .collect();
        Spans { sections }
    }

    /// The span of a dotted key such as `cluster.peers[1]` (the `peers` key), falling back to
    /// its section header.
    pub(crate) fn find(&self, dotted: &str) -> Option<Range<usize>> {
        let dotted = dotted.split('[').next().unwrap_or(dotted);
        let (section, key) = dotted.split_once('.').unwrap_or((dotted, ""));
        let (section_span, keys) = self.sections.get(section)?;
        Some(keys.get(key).unwrap_or(section_span).clone())
    }
}

/// The keys (with spans) of one top-level entry; empty for anything that is not a table.
struct KeySpans(KeyMap);

impl<'de> Deserialize<'de> for KeySpans {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeySpansVisitor)
    }
}

struct KeySpansVisitor;

impl<'de> Visitor<'de> for KeySpansVisitor {
    type Value = KeySpans;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeySpans, A::Error> {
        let mut keys = BTreeMap::new();
        while let Some((key, IgnoredAny)) = map.next_entry::<Spanned<String>, IgnoredAny>()? {
            let span = key.span();
            keys.insert(key.into_inner(), span);
        }
        Ok(KeySpans(keys))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeySpans, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KeySpans(BTreeMap::new()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeySpans, E> {
        Ok(KeySpans(BTreeMap::new()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeySpans, E> {
        Ok(KeySpans(BTreeMap::new()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeySpans, E> {
        Ok(KeySpans(BTreeMap::new()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeySpans, E> {
        Ok(KeySpans(BTreeMap::new()))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<KeySpans, E> {
        Ok(KeySpans(BTreeMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind) -> Value {
        match kind {
            Kind::Integer => Value::Integer(1),
            Kind::Boolean => Value::Boolean(true),
            Kind::String => Value::String("x".into()),
            Kind::StringArray => Value::Array(vec![Value::String("x".into())]),
        }
    }

    /// SCHEMA and the raw structs describe the same keys: every schema key deserializes
    /// (`deny_unknown_fields` would reject one the structs lack), and setting every schema key
    /// leaves no raw field `None` (so no struct field is missing from the schema).
    #[test]
    fn schema_matches_raw_structs() {
        let mut top = Table::new();
        for (section, keys) in SCHEMA {
            let table = keys
                .iter()
                .map(|(k, kind)| (k.to_string(), sample(*kind)))
                .collect();
            top.insert(section.to_string(), Value::Table(table));
        }
        let raw: RawConfig = Value::Table(top)
            .try_into()
            .expect("schema key not in raw structs");
        let debug = format!("{raw:?}");
        assert!(
            !debug.contains("None"),
            "raw field missing from SCHEMA: {debug}"
        );
    }

    #[test]
    fn walk_reports_every_problem_and_keeps_the_rest() {
        let text = "id = 1\n[node]\nid = \"n2\"\ndvertise_address = \"a:1\"\npeers = []\n\
                    [databse]\nuser = \"u\"\n[database]\nport = \"abc\"\nuser = \"u\"\n\
                    [cluster]\npeers = [\"a:1\", 2]\n[wal]\nfsync = 1.5\n";
        let parsed = parse(text, Path::new("w.toml"));
        let keys: Vec<_> = parsed
            .diagnostics
            .iter()
            .map(|d| (d.key.as_str(), d.suggestion.as_deref()))
            .collect();
        assert!(keys.contains(&("id", Some("node.id"))), "{keys:?}");
        assert!(keys.contains(&("node.dvertise_address", Some("advertise_address"))));
        assert!(keys.contains(&("node.peers", Some("cluster.peers"))));
        assert!(keys.contains(&("databse", Some("database"))));
        assert!(keys.contains(&("database.port", None)));
        assert!(keys.contains(&("cluster.peers[1]", None)));
        assert!(keys.contains(&("wal.fsync", None)));
        assert_eq!(parsed.diagnostics.len(), 7);
        let raw = parsed.raw.unwrap();
        assert_eq!(raw.node.id.as_deref(), Some("n2"));
        assert_eq!(raw.database.user.as_deref(), Some("u"));
        assert_eq!(raw.database.port, None);
        assert!(parsed.shadowed.contains("database.port"));
        assert!(parsed.shadowed.contains("node.advertise_address"));
    }

    #[test]
    fn spans_point_at_keys() {
        let text = "[node]\nid = \"node-1\"\n\n[cluster]\npeers = [\"a:1\"]\n";
        let spans = Spans::collect(text);
        let at = |key| spans.find(key).map(|s| Location::of_offset(text, s.start));
        assert_eq!(at("node"), Some(Location { line: 1, column: 2 }));
        assert_eq!(at("node.id"), Some(Location { line: 2, column: 1 }));
        assert_eq!(
            at("cluster.peers[0]"),
            Some(Location { line: 5, column: 1 })
        );
        assert_eq!(at("cluster.secret"), Some(Location { line: 4, column: 2 }));
        assert_eq!(at("api.token"), None);
    }
}
