//! Tests of the rules that span the submodules, the fast-path equivalence and
//! the never-panic properties.

use proptest::prelude::*;

use super::*;

fn sql_of(fixture_line: &str) -> Option<String> {
    if fixture_line.trim().is_empty() || fixture_line.starts_with('#') {
        return None;
    }
    let sql = fixture_line.splitn(4, '\t').nth(3)?;
    Some(
        sql.replace("\\n", "\n")
            .replace("\\t", "\t")
            .replace("\\\\", "\\"),
    )
}

/// The SQL of every fixture in `sql-fixtures/` (format in its README).
fn fixture_sql() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("sql-fixtures/ exists")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "tsv") {
            let text = std::fs::read_to_string(entry.path()).expect("fixture is UTF-8");
            out.extend(text.lines().filter_map(sql_of));
        }
    }
    assert!(out.len() >= 300);
    out
}

/// Runs `f` on every statement of `sql` as the classifier sees it.
fn for_each_statement(sql: &str, mut f: impl FnMut(&Stmt<'_>)) {
    let src = versioned::expand(sql);
    let toks = lexer::lex(&src);
    for range in split::split(&toks) {
        f(&Stmt::new(&src, &toks[range]));
    }
}

fn same_answer(a: &Classification, b: &Classification) -> bool {
    a.class == b.class && a.txn == b.txn && a.nondeterministic == b.nondeterministic
}

#[test]
fn fast_path_agrees_with_full_parse_on_every_fixture() {
    for sql in fixture_sql() {
        for_each_statement(&sql, |s| {
            let fast = classify_statement(s, 0, Path::Normal);
            let full = classify_statement(s, 0, Path::AlwaysParse);
            assert!(
                same_answer(&fast, &full),
                "{}: {fast:?} vs {full:?}",
                s.text()
            );
        });
    }
}

#[test]
fn ast_and_keyword_classifiers_agree_on_every_fixture() {
    for sql in fixture_sql() {
        for_each_statement(&sql, |s| {
            if let ast::Parsed::Decided(by_ast) = ast::classify(s) {
                assert_eq!(by_ast, lexical::classify(s), "{}", s.text());
            }
        });
    }
}

#[test]
fn class_names_round_trip() {
    for class in StatementClass::ALL {
        assert_eq!(class.to_string().parse::<StatementClass>(), Ok(class));
    }
    let err = "Write".parse::<StatementClass>().unwrap_err();
    assert!(err.to_string().contains("\"Write\""));
}

#[test]
fn display_names_the_reasons() {
    assert_eq!(classify("SELECT 1").to_string(), "read");
    assert_eq!(
        classify("INSERT INTO t VALUES (UUID(), SYSDATE())").to_string(),
        "write (non-deterministic: UUID(), SYSDATE())"
    );
}

#[test]
fn reads_are_never_flagged() {
    let c = classify("SELECT UUID(), SYSDATE(), @@server_id");
    assert_eq!(c.class, StatementClass::Read);
    assert!(c.is_deterministic());
    assert!(!c.is_write());
}

#[test]
fn is_write_covers_write_and_ddl_only() {
    assert!(classify("DELETE FROM t").is_write());
    assert!(classify("DROP TABLE t").is_write());
    assert!(!classify("OPTIMIZE TABLE t").is_write());
    assert!(!classify("LOCK TABLES t WRITE").is_write());
}

#[test]
fn empty_and_comment_only_payloads_are_reads() {
    for sql in [
        "",
        "   ",
        "-- x",
        "/* y */ ;",
        "#z\n",
        "/*M!999999\\- sandbox */",
    ] {
        assert_eq!(classify(sql), Classification::empty(), "{sql:?}");
        assert!(classify_each(sql).is_empty(), "{sql:?}");
    }
}

#[test]
fn garbage_is_a_fallback_write() {
    for sql in ["FOO BAR", "\u{0}\u{1}", "'unterminated", "(((("] {
        let c = classify(sql);
        assert_eq!(c.class, StatementClass::Write, "{sql:?}");
        assert!(c.fallback, "{sql:?}");
    }
}

#[test]
fn parsed_statements_are_not_fallback() {
    assert!(!classify("INSERT INTO t VALUES (1)").fallback);
    assert!(!classify("SELECT * FROM t").fallback);
    assert!(classify("XA START 'x'").fallback);
}

#[test]
fn postgres_end_is_not_a_commit() {
    let c = classify("END");
    assert_eq!((c.class, c.txn), (StatementClass::Write, TxnEffect::None));
}

#[test]
fn most_restrictive_class_wins() {
    let c = classify("SELECT 1; SET NAMES utf8; BEGIN; LOCK TABLES t READ");
    assert_eq!(c.class, StatementClass::Locking);
    assert_eq!(classify("KILL 3; SELECT 1").class, StatementClass::Admin);
    assert_eq!(
        classify("UPDATE t SET a=1; KILL 3").class,
        StatementClass::Write
    );
    assert_eq!(
        classify("UPDATE t SET a=1; DROP TABLE x").class,
        StatementClass::Ddl
    );
}

#[test]
fn the_txn_effect_that_decides_the_end_state_wins() {
    let txn = |sql| classify(sql).txn;
    assert_eq!(txn("BEGIN; SAVEPOINT a"), TxnEffect::Begin);
    assert_eq!(txn("SAVEPOINT a; SELECT 1"), TxnEffect::Savepoint);
    assert_eq!(
        txn("BEGIN; INSERT INTO t VALUES (1); COMMIT"),
        TxnEffect::Commit
    );
    assert_eq!(txn("COMMIT; BEGIN; SELECT 1"), TxnEffect::Begin);
    assert_eq!(
        txn("BEGIN; CREATE TABLE t (a INT)"),
        TxnEffect::ImplicitCommit
    );
}

#[test]
fn reasons_are_collected_once_across_statements() {
    let c = classify("INSERT INTO t VALUES (UUID()); UPDATE t SET a = UUID() LIMIT 1");
    assert_eq!(
        c.nondeterministic,
        ["UUID()", "UPDATE ... LIMIT without ORDER BY"]
    );
}

#[test]
fn classify_each_keeps_order() {
    let classes: Vec<_> = classify_each("BEGIN; INSERT INTO t VALUES (1); COMMIT")
        .into_iter()
        .map(|c| (c.class, c.txn))
        .collect();
    assert_eq!(
        classes,
        [
            (StatementClass::Transaction, TxnEffect::Begin),
            (StatementClass::Write, TxnEffect::None),
            (StatementClass::Transaction, TxnEffect::Commit),
        ]
    );
}

#[test]
fn nested_wrappers_are_bounded() {
    let mut sql = "SELECT 1".to_string();
    for _ in 0..50 {
        sql = format!("SET STATEMENT a=1 FOR {sql}");
    }
    let c = classify(&sql);
    assert_eq!(c.class, StatementClass::Write);
    assert!(c.fallback);

    let inner = "EXECUTE IMMEDIATE 'EXECUTE IMMEDIATE ''SELECT 1'''";
    assert_eq!(classify(inner).class, StatementClass::Read);
}

#[test]
fn huge_statements_skip_the_parser() {
    let rows = vec!["(1,'abc')"; 20_000].join(",");
    let c = classify(&format!("INSERT INTO t VALUES {rows}"));
    assert_eq!(c.class, StatementClass::Write);
    assert!(c.fallback);
}

#[test]
fn deep_nesting_does_not_overflow() {
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(classify(&deep).class, StatementClass::Read);
    let deep_write = format!(
        "INSERT INTO t VALUES ({}1{})",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert_eq!(classify(&deep_write).class, StatementClass::Write);
}

#[test]
fn hostile_compound_input_stays_linear() {
    // Quadratic scans would take minutes on these; linear ones take
    // milliseconds.
    let ifs = format!("BEGIN NOT ATOMIC {}", "THEN IF ( ".repeat(100_000));
    assert_eq!(classify(&ifs).class, StatementClass::Write);
    let updates = format!(
        "CREATE PROCEDURE p() {}",
        "THEN UPDATE t SET a = 1 LIMIT 1 ".repeat(30_000)
    );
    assert!(!classify(&updates).is_deterministic());
}

/// Tokens to build statement-like strings from.
const TOKENS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "PROCEDURE",
    "TRIGGER",
    "BEGIN",
    "END",
    "IF",
    "THEN",
    "CASE",
    "WHEN",
    "ELSE",
    "LOOP",
    "REPEAT",
    "WHILE",
    "DO",
    "FOR",
    "SET",
    "STATEMENT",
    "EXECUTE",
    "IMMEDIATE",
    "ANALYZE",
    "EXPLAIN",
    "WITH",
    "RECURSIVE",
    "AS",
    "LIMIT",
    "ORDER",
    "BY",
    "INTO",
    "OUTFILE",
    "LOCK",
    "IN",
    "SHARE",
    "MODE",
    "UUID",
    "RAND",
    "GET_LOCK",
    "NEXTVAL",
    "XA",
    "START",
    "COMMIT",
    "ROLLBACK",
    "TO",
    "GLOBAL",
    "autocommit",
    "TEMPORARY",
    "TABLE",
    "t",
    "@v",
    "@@server_id",
    "@@global.x",
    "?",
    "1",
    "0",
    "'s'",
    "'it''s'",
    "`q`",
    "(",
    ")",
    ",",
    ";",
    ".",
    "=",
    ":=",
    ":",
    "*",
    "/*!",
    "/*M!100100",
    "*/",
    "/*",
    "--",
    "-- ",
    "#",
    "\n",
    "'",
    "\"",
    "`",
    "\\",
    "é",
    "DEFINER",
    "LOAD",
    "DATA",
    "LOCAL",
    "INFILE",
    "HANDLER",
    "OPEN",
    "READ",
    "NOT",
    "ATOMIC",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn never_panics_on_arbitrary_strings(sql in ".*") {
        let _ = classify(&sql);
        let _ = classify_each(&sql);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let sql = String::from_utf8_lossy(&bytes);
        let _ = classify(&sql);
    }

    #[test]
    fn never_panics_on_token_soup(sql in token_soup()) {
        let combined = classify(&sql);
        let each = classify_each(&sql);
        prop_assert_eq!(combined, combine(each));
    }

    #[test]
    fn fast_path_agrees_with_full_parse_on_token_soup(sql in token_soup()) {
        let mut agree = true;
        for_each_statement(&sql, |s| {
            let fast = classify_statement(s, 0, Path::Normal);
            let full = classify_statement(s, 0, Path::AlwaysParse);
            agree &= same_answer(&fast, &full);
        });
        prop_assert!(agree);
    }
}

#[test]
fn statements_that_may_call_a_procedure() {
    assert!(may_call("CALL p()"));
    assert!(may_call("/* c */ call p()"));
    assert!(may_call("INSERT INTO t SELECT recall FROM u"));
    assert!(!may_call("UPDATE t SET a = 1"));
}

#[test]
fn sequence_functions_in_writes_are_flagged() {
    for sql in [
        "SELECT NEXTVAL(s)",
        "INSERT INTO t VALUES (NEXTVAL(app.s), 1)",
        "INSERT INTO t SELECT NEXT VALUE FOR s",
        "UPDATE t SET a = LASTVAL(s)",
        "INSERT INTO t VALUES (PREVIOUS VALUE FOR s)",
        "SELECT SETVAL(s, 100)",
        "CREATE TABLE t (id INT DEFAULT NEXTVAL(s))",
    ] {
        let c = classify(sql);
        assert!(
            c.to_string()
                .contains("a sequence advances outside transactions"),
            "{sql}: {c}"
        );
    }
    // A column or table merely named like one is not a call.
    assert!(classify("INSERT INTO t (nextval) VALUES (1)").is_deterministic());
    assert!(classify("CREATE SEQUENCE s START WITH 1").is_deterministic());
}
