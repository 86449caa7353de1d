//! Classifies every fixture in `sql-fixtures/*.tsv` (format in
//! `sql-fixtures/README.md`) and fails listing every mismatch.

use std::fs;
use std::path::PathBuf;

use wolfscale::sql::{classify, StatementClass, TxnEffect};

struct Fixture {
    place: String,
    class: StatementClass,
    txn: TxnEffect,
    deterministic: bool,
    sql: String,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql-fixtures")
}

/// Resolves `\n`, `\t` and `\\`; keeps any other backslash.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        let resolved = match (c, chars.peek()) {
            ('\\', Some('n')) => Some('\n'),
            ('\\', Some('t')) => Some('\t'),
            ('\\', Some('\\')) => Some('\\'),
            _ => None,
        };
        match resolved {
            Some(r) => {
                out.push(r);
                chars.next();
            }
            None => out.push(c),
        }
    }
    out
}

fn parse_txn(word: &str) -> Result<TxnEffect, String> {
    Ok(match word {
        "none" => TxnEffect::None,
        "begin" => TxnEffect::Begin,
        "commit" => TxnEffect::Commit,
        "rollback" => TxnEffect::Rollback,
        "savepoint" => TxnEffect::Savepoint,
        "implicit_commit" => TxnEffect::ImplicitCommit,
        other => return Err(format!("unknown txn effect {other:?}")),
    })
}

fn parse_line(place: String, line: &str) -> Result<Fixture, String> {
    let fields: Vec<&str> = line.splitn(4, '\t').collect();
    let [class, txn, det, sql] = fields[..] else {
        return Err(format!(
            "{place}: expected 4 TAB-separated fields, got {}",
            fields.len()
        ));
    };
    let deterministic = match det {
        "det" => true,
        "nondet" => false,
        other => {
            return Err(format!(
                "{place}: determinism must be det or nondet, not {other:?}"
            ))
        }
    };
    Ok(Fixture {
        class: class.parse().map_err(|e| format!("{place}: {e}"))?,
        txn: parse_txn(txn).map_err(|e| format!("{place}: {e}"))?,
        deterministic,
        sql: unescape(sql),
        place,
    })
}

fn load() -> Vec<Fixture> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("sql-fixtures/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
        .collect();
    files.sort();
    let mut fixtures = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = fs::read_to_string(&path).expect("fixture file is UTF-8");
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(format!("{name}:{}", n + 1), line) {
                Ok(f) => fixtures.push(f),
                Err(e) => errors.push(e),
            }
        }
    }
    assert!(
        errors.is_empty(),
        "malformed fixtures:\n{}",
        errors.join("\n")
    );
    fixtures
}

fn mismatch(f: &Fixture) -> Option<String> {
    let got = classify(&f.sql);
    let ok = got.class == f.class && got.txn == f.txn && got.is_deterministic() == f.deterministic;
    (!ok).then(|| {
        format!(
            "{}: expected {} / {:?} / {}, got {} / {:?} / {:?} (fallback: {})\n    {}",
            f.place,
            f.class,
            f.txn,
            if f.deterministic { "det" } else { "nondet" },
            got.class,
            got.txn,
            got.nondeterministic,
            got.fallback,
            f.sql.replace('\n', "\n    "),
        )
    })
}

#[test]
fn every_fixture_classifies_as_expected() {
    let fixtures = load();
    assert!(fixtures.len() >= 300, "only {} fixtures", fixtures.len());
    let mismatches: Vec<String> = fixtures.iter().filter_map(mismatch).collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} fixtures mismatch:\n{}",
        mismatches.len(),
        fixtures.len(),
        mismatches.join("\n")
    );
}

#[test]
fn every_class_is_covered() {
    let fixtures = load();
    for class in [
        "read",
        "write",
        "ddl",
        "transaction",
        "session",
        "locking",
        "admin",
    ] {
        let class: StatementClass = class.parse().expect("class name");
        assert!(
            fixtures.iter().any(|f| f.class == class),
            "no fixture for {class}"
        );
    }
    assert!(fixtures.iter().any(|f| !f.deterministic));
}
