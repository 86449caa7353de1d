//! Splitting a multi-statement payload into statements.
//!
//! Statements end at `;`, except inside compound statements: a stored routine,
//! trigger or event sent without `DELIMITER` (`CREATE PROCEDURE p() BEGIN …;
//! …; END`), or an anonymous block (`BEGIN NOT ATOMIC … END`, a top-level
//! `IF … END IF`). There we count `BEGIN`/`CASE` and statement-level
//! `IF`/`WHILE`/`LOOP`/`REPEAT`/`FOR` against their `END`s and only split at
//! depth 0. An unbalanced block runs to the end of the payload.

use std::ops::Range;

use super::lexer::{Kind, Token};

/// The token ranges of the statements in `toks`; empty statements (`;;`) are
/// dropped.
pub(crate) fn split(toks: &[Token<'_>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < toks.len() {
        let end = statement_end(toks, start);
        if end > start {
            out.push(start..end);
        }
        start = end + 1;
    }
    out
}

/// Index of the `;` ending the statement that starts at `start`, or
/// `toks.len()`.
fn statement_end(toks: &[Token<'_>], start: usize) -> usize {
    let rest = toks.get(start..).unwrap_or_default();
    if !is_compound(rest) {
        return rest
            .iter()
            .position(|t| t.is_punct(";"))
            .map_or(toks.len(), |i| start + i);
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(t) = rest.get(i) {
        if t.is_punct(";") && depth == 0 {
            return start + i;
        }
        if t.kind == Kind::Word {
            match t.keyword().as_str() {
                "END" => {
                    depth = depth.saturating_sub(1);
                    // `END IF`, `END CASE`…: the closer's second word is not
                    // an opener.
                    if rest.get(i + 1).is_some_and(closes_block) {
                        i += 1;
                    }
                }
                _ if opens_block(rest, i) => depth += 1,
                _ => {}
            }
        }
        i += 1;
    }
    toks.len()
}

fn closes_block(t: &Token<'_>) -> bool {
    matches!(
        t.keyword().as_str(),
        "IF" | "CASE" | "WHILE" | "LOOP" | "REPEAT" | "FOR"
    )
}

/// Whether the word at `i` opens a block that a later `END` closes.
fn opens_block(toks: &[Token<'_>], i: usize) -> bool {
    let Some(t) = toks.get(i) else { return false };
    match t.keyword().as_str() {
        "BEGIN" | "CASE" => true,
        "WHILE" | "LOOP" | "FOR" => at_statement_start(toks, i),
        "IF" | "REPEAT" => at_statement_start(toks, i) && !is_function_call(toks, i),
        _ => false,
    }
}

/// True when the token before `i` is one after which a statement of a
/// compound body starts.
pub(crate) fn at_statement_start(toks: &[Token<'_>], i: usize) -> bool {
    let Some(prev) = i.checked_sub(1).and_then(|p| toks.get(p)) else {
        return true;
    };
    if prev.is_punct(";") || prev.is_punct(":") {
        return true;
    }
    matches!(
        prev.keyword().as_str(),
        "BEGIN" | "THEN" | "ELSE" | "DO" | "LOOP" | "REPEAT" | "ATOMIC" | "ROW"
    )
}

/// How far [`is_function_call`] looks for the comma, so that hostile input
/// full of `IF (` cannot make splitting quadratic.
const CALL_SCAN_LIMIT: usize = 256;

/// `IF(a, b, c)` and `REPEAT(s, n)` are functions; `IF (a > b) THEN` is not:
/// a function's argument list has a comma at its own depth (within the first
/// [`CALL_SCAN_LIMIT`] tokens).
fn is_function_call(toks: &[Token<'_>], i: usize) -> bool {
    if !toks.get(i + 1).is_some_and(|t| t.is_punct("(")) {
        return false;
    }
    let mut depth = 0usize;
    for t in toks.iter().skip(i + 1).take(CALL_SCAN_LIMIT) {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return false;
            }
        } else if t.is_punct(",") && depth == 1 {
            return true;
        }
    }
    false
}

/// Whether the statement starting at `toks[0]` is (or defines) a compound
/// statement whose body may hold `;`.
pub(crate) fn is_compound(toks: &[Token<'_>]) -> bool {
    let Some(first) = toks.first() else {
        return false;
    };
    match first.keyword().as_str() {
        "CREATE" | "ALTER" => defines_routine(toks),
        "BEGIN" => toks.get(1).is_some_and(|t| t.is_word("NOT")),
        "IF" | "CASE" | "WHILE" | "LOOP" | "REPEAT" | "FOR" => true,
        _ => is_label(toks),
    }
}

/// `label: BEGIN …` / `label: LOOP …`.
pub(crate) fn is_label(toks: &[Token<'_>]) -> bool {
    toks.len() > 2
        && matches!(toks[0].kind, Kind::Word | Kind::QuotedIdent)
        && toks[1].is_punct(":")
}

/// `CREATE [OR REPLACE] [DEFINER=…] [AGGREGATE] PROCEDURE|FUNCTION|TRIGGER|
/// EVENT|PACKAGE …`, and `ALTER EVENT … DO …`: the routine keyword comes
/// before the first parenthesis.
pub(crate) fn defines_routine(toks: &[Token<'_>]) -> bool {
    toks.iter()
        .skip(1)
        .take(16)
        .take_while(|t| !t.is_punct("("))
        .any(|t| {
            matches!(
                t.keyword().as_str(),
                "PROCEDURE" | "FUNCTION" | "TRIGGER" | "EVENT" | "PACKAGE"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;

    fn pieces(sql: &str) -> Vec<String> {
        let toks = lex(sql);
        split(&toks)
            .into_iter()
            .map(|r| {
                let (a, b) = (toks[r.start].start, toks[r.end - 1].end());
                sql[a..b].to_string()
            })
            .collect()
    }

    #[test]
    fn splits_on_semicolons_outside_strings() {
        assert_eq!(
            pieces("SELECT ';'; ; INSERT INTO t VALUES (1);"),
            vec!["SELECT ';'", "INSERT INTO t VALUES (1)"]
        );
        assert!(pieces(" ; -- nothing\n").is_empty());
    }

    #[test]
    fn keeps_routine_bodies_whole() {
        let sql = "CREATE PROCEDURE p() BEGIN DECLARE x INT; IF x THEN SELECT 1; END IF; \
                   CASE x WHEN 1 THEN SET x = IF(x, 1, 2); END CASE; \
                   l: LOOP LEAVE l; END LOOP l; END; SELECT 2";
        let got = pieces(sql);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1], "SELECT 2");
    }

    #[test]
    fn trigger_with_if_body() {
        let sql = "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW IF NEW.a IS NULL THEN \
                   SET NEW.a = 1; END IF; SELECT 1";
        assert_eq!(pieces(sql).len(), 2);
    }

    #[test]
    fn transaction_begin_is_not_a_block() {
        assert_eq!(pieces("BEGIN; INSERT INTO t VALUES (1); COMMIT").len(), 3);
        assert_eq!(
            pieces("BEGIN NOT ATOMIC SELECT 1; SELECT 2; END; COMMIT").len(),
            2
        );
    }

    #[test]
    fn unbalanced_block_runs_to_the_end() {
        assert_eq!(
            pieces("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2").len(),
            1
        );
    }
}
