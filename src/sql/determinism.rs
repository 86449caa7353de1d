//! Constructs that make a write non-replayable (ARCHITECTURE §2).
//!
//! The replay pins the timestamp, the insert ids, the RAND seeds and the user
//! variables a statement reads, so `NOW()`, `CURRENT_TIMESTAMP`, top-level
//! `RAND()` and `LAST_INSERT_ID()` replay the same. What it cannot pin:
//!
//! * the functions `UUID()`, `UUID_SHORT()`, `SYSDATE()`, `USER()`,
//!   `CURRENT_USER[()]`, `SESSION_USER()`, `SYSTEM_USER()`, `CURRENT_ROLE()`,
//!   `CONNECTION_ID()`, `LOAD_FILE()`, and `RAND()` inside a stored routine,
//!   trigger, event or compound block;
//! * the sequence functions `NEXTVAL()`, `LASTVAL()`, `SETVAL()`, `NEXT VALUE FOR`
//!   and `PREVIOUS VALUE FOR`: a sequence is not rolled back with the transaction
//!   that advanced it, so after a rollback the leader's next value is ahead of every
//!   follower's (a column `DEFAULT NEXTVAL(s)` is refused with its DDL);
//! * `@@server_id` and `@@hostname`, in any scope;
//! * `UPDATE`/`DELETE … LIMIT` without `ORDER BY` (which rows change is up to
//!   the storage engine), and likewise `INSERT|REPLACE … SELECT … LIMIT`
//!   (which rows are copied) — checked at the statement's own level and on
//!   each statement of a routine body; subqueries are not checked;
//! * `LOAD DATA INFILE` without `LOCAL` (the file is on the leader's disk,
//!   the proxy never sees it) and `SET PASSWORD` without `FOR` (it changes
//!   whoever runs it, which on replay is the applier).
//!
//! Function names are matched only as calls (`name(`), never in strings, in
//! identifiers such as `uuid_col`, in `schema.name(` (a stored function), or
//! where a table or index name stands (`INSERT INTO user (…)`).
//! `DEFINER = CURRENT_USER` is left to the rewriter. Only writes (`Write`,
//! `Ddl`) are checked; DDL is checked too because a column default, view or
//! routine body holding these would make later writes diverge.

use super::lexer::Kind;
use super::stmt::Stmt;
use super::{lexical, split, StatementClass};

/// The reasons `s` cannot be replayed as is; empty for deterministic
/// statements and for anything that is not a write.
pub(crate) fn reasons(s: &Stmt<'_>, class: StatementClass) -> Vec<String> {
    if !matches!(class, StatementClass::Write | StatementClass::Ddl) {
        return Vec::new();
    }
    let in_routine = split::is_compound(s.toks);
    let mut out: Vec<String> = Vec::new();
    let mut add = |r: String| {
        if !out.contains(&r) {
            out.push(r);
        }
    };
    for i in 0..s.toks.len() {
        if let Some(r) = reason_at(s, i, in_routine) {
            add(r);
        }
    }
    for r in limit_reasons(s, in_routine) {
        add(r.to_string());
    }
    if let Some(r) = statement_reason(s) {
        add(r.to_string());
    }
    out
}

/// The `… LIMIT without ORDER BY` reasons of the statement, or of each
/// statement of a routine body. Each data-changing statement is scanned once,
/// from its keyword to its `;`, so this stays linear.
fn limit_reasons(s: &Stmt<'_>, in_routine: bool) -> Vec<&'static str> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.toks.len() {
        let starts = i == 0 || (in_routine && split::at_statement_start(s.toks, i));
        let changes_rows = matches!(
            s.keyword_at(i).as_str(),
            "UPDATE" | "DELETE" | "INSERT" | "REPLACE"
        );
        if !(starts && changes_rows) {
            i += 1;
            continue;
        }
        let (end, reason) = limit_reason(s, i);
        found.extend(reason);
        i = end.max(i + 1);
    }
    found
}

/// The reason the token at `i` makes the statement non-deterministic.
fn reason_at(s: &Stmt<'_>, i: usize, in_routine: bool) -> Option<String> {
    let t = s.tok(i)?;
    match t.kind {
        Kind::SysVar => {
            let name = lexical::sysvar_name(t.text);
            ["server_id", "hostname"]
                .iter()
                .find(|n| name.eq_ignore_ascii_case(n))
                .map(|n| format!("@@{n}"))
        }
        Kind::Word => word_reason(s, i, in_routine),
        // `UPDATE t SET a = (@v := @v + 1)`: the value depends on the order rows are
        // visited in. (Inside a routine `:=` is the usual local assignment.)
        Kind::Punct if t.is_punct(":=") && !in_routine => {
            Some("assignment to a user variable (:=) inside a write".into())
        }
        _ => None,
    }
}

fn word_reason(s: &Stmt<'_>, i: usize, in_routine: bool) -> Option<String> {
    let kw = s.keyword_at(i);
    let name = kw.as_str();
    match name {
        "CURRENT_USER" | "CURRENT_ROLE" if !after_definer(s, i) => Some(format!("{name}()")),
        "UUID" | "UUID_SHORT" | "SYSDATE" | "USER" | "SESSION_USER" | "SYSTEM_USER"
        | "CONNECTION_ID" | "LOAD_FILE"
            if is_builtin_call(s, i) =>
        {
            Some(format!("{name}()"))
        }
        "RAND" if in_routine && is_builtin_call(s, i) => Some("RAND() in a stored routine".into()),
        // A sequence moves outside transactions: the values a rolled-back or failed
        // statement took stay taken on the leader only, and LASTVAL is per connection.
        "NEXTVAL" | "LASTVAL" | "SETVAL" if is_builtin_call(s, i) => Some(format!(
            "{name}() (a sequence advances outside transactions)"
        )),
        "NEXT" | "PREVIOUS" if s.word_at(i + 1, "VALUE") && s.word_at(i + 2, "FOR") => Some(
            format!("{name} VALUE FOR (a sequence advances outside transactions)"),
        ),
        // Its order follows the plan unless it says otherwise.
        "GROUP_CONCAT" if !in_routine && is_builtin_call(s, i) => {
            let end = s.skip_parens(i + 1);
            let ordered = (i + 1..end).any(|j| s.word_at(j, "ORDER"));
            (!ordered).then(|| "GROUP_CONCAT() without ORDER BY".into())
        }
        _ => None,
    }
}

/// `name(` where a function can stand, not a table or index name that
/// happens to be followed by a column list.
fn is_builtin_call(s: &Stmt<'_>, i: usize) -> bool {
    let names_object = i.checked_sub(1).and_then(|p| s.tok(p)).is_some_and(|t| {
        matches!(
            t.keyword().as_str(),
            "INTO"
                | "INSERT"
                | "REPLACE"
                | "IGNORE"
                | "LOW_PRIORITY"
                | "DELAYED"
                | "HIGH_PRIORITY"
                | "TABLE"
                | "EXISTS"
                | "REFERENCES"
                | "KEY"
                | "INDEX"
                | "UNIQUE"
                | "FULLTEXT"
                | "SPATIAL"
                | "PROCEDURE"
                | "FUNCTION"
                | "VIEW"
                | "TRIGGER"
                | "EVENT"
                | "CONSTRAINT"
        )
    });
    s.is_call(i) && !names_object
}

/// `DEFINER = CURRENT_USER` names the definer; the rewriter handles it.
fn after_definer(s: &Stmt<'_>, i: usize) -> bool {
    i >= 2 && s.tok(i - 1).is_some_and(|t| t.is_punct("=")) && s.word_at(i - 2, "DEFINER")
}

/// Whether the `UPDATE`/`DELETE`/`INSERT`/`REPLACE` starting at `at` has a
/// `LIMIT` but no `ORDER BY` at its own level; also where it ends.
fn limit_reason(s: &Stmt<'_>, at: usize) -> (usize, Option<&'static str>) {
    let (mut depth, mut ordered, mut limited) = (0usize, false, false);
    let mut end = s.toks.len();
    for (i, t) in s.toks.iter().enumerate().skip(at + 1) {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.is_punct(";") {
            end = i;
            break;
        } else if depth == 0 && t.is_word("ORDER") && s.word_at(i + 1, "BY") {
            ordered = true;
        } else if depth == 0 && t.is_word("LIMIT") {
            limited = true;
        }
    }
    if !limited || ordered {
        return (end, None);
    }
    let reason = match s.keyword_at(at).as_str() {
        "UPDATE" => "UPDATE ... LIMIT without ORDER BY",
        "DELETE" => "DELETE ... LIMIT without ORDER BY",
        _ => "INSERT ... SELECT ... LIMIT without ORDER BY",
    };
    (end, Some(reason))
}

/// Reasons that belong to the statement as a whole.
fn statement_reason(s: &Stmt<'_>) -> Option<&'static str> {
    match s.keyword_at(0).as_str() {
        "LOAD" if s.word_at(1, "DATA") || s.word_at(1, "XML") => {
            let infile = s.find_word(1, "INFILE")?;
            let local = s.toks[..infile].iter().any(|t| t.is_word("LOCAL"));
            (!local).then_some("LOAD DATA INFILE (a file on the server)")
        }
        "SET" if s.word_at(1, "PASSWORD") && s.find_word(2, "FOR").is_none() => {
            Some("SET PASSWORD for the current user")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;

    fn why(sql: &str) -> Vec<String> {
        let toks = lex(sql);
        reasons(&Stmt::new(sql, &toks), StatementClass::Write)
    }

    #[test]
    fn plan_dependent_values() {
        assert_eq!(
            why("UPDATE t SET a = (@v := @v + 1)"),
            ["assignment to a user variable (:=) inside a write"]
        );
        assert_eq!(
            why("UPDATE t SET v = (SELECT GROUP_CONCAT(x) FROM u)"),
            ["GROUP_CONCAT() without ORDER BY"]
        );
        assert!(why("UPDATE t SET v = (SELECT GROUP_CONCAT(x ORDER BY x) FROM u)").is_empty());
        assert!(why("CREATE PROCEDURE p() BEGIN DECLARE v INT; SET v := 1; END").is_empty());
        // A table that is merely named like the function.
        assert!(why("INSERT INTO group_concat (a) VALUES (1)").is_empty());
    }

    #[test]
    fn calls_not_names() {
        assert_eq!(why("INSERT INTO t (id) VALUES (uuid())"), ["UUID()"]);
        assert!(why("INSERT INTO t (uuid_col, u) VALUES ('UUID()', `uuid`)").is_empty());
        assert!(why("INSERT INTO user (name) VALUES ('x')").is_empty());
        assert!(why("INSERT INTO t VALUES (db.uuid())").is_empty());
        assert!(why("CREATE TABLE t (uuid CHAR(36), KEY uuid (uuid))").is_empty());
    }

    #[test]
    fn pinned_functions_are_fine() {
        assert!(
            why("INSERT INTO t VALUES (NOW(), RAND(), LAST_INSERT_ID(), CURRENT_TIMESTAMP)")
                .is_empty()
        );
    }

    #[test]
    fn rand_only_in_routines() {
        let sql = "CREATE PROCEDURE p() BEGIN INSERT INTO t VALUES (RAND()); END";
        assert_eq!(why(sql), ["RAND() in a stored routine"]);
    }

    #[test]
    fn limit_needs_order_by() {
        assert_eq!(
            why("UPDATE t SET a=1 LIMIT 1"),
            ["UPDATE ... LIMIT without ORDER BY"]
        );
        assert!(why("DELETE FROM t ORDER BY id LIMIT 10").is_empty());
        assert!(why("UPDATE t SET a=(SELECT b FROM s LIMIT 1)").is_empty());
        let body = "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t LIMIT 5";
        assert_eq!(why(body), ["DELETE ... LIMIT without ORDER BY"]);
    }

    #[test]
    fn definer_is_not_flagged() {
        assert!(why("CREATE DEFINER=CURRENT_USER PROCEDURE p() SELECT 1").is_empty());
        assert_eq!(
            why("INSERT INTO t VALUES (CURRENT_USER)"),
            ["CURRENT_USER()"]
        );
    }

    #[test]
    fn server_variables() {
        assert_eq!(
            why("INSERT INTO t VALUES (@@GLOBAL.server_id, @@hostname)"),
            ["@@server_id", "@@hostname"]
        );
    }
}
