//! Recognising KILL statements that name a connection id, so the proxy can map the id
//! (see `proxy::registry`) or refuse what it cannot map exactly.

use super::lexer::{self, Kind};
use super::lexical::{self, Inner};
use super::split;
use super::stmt::Stmt;
use super::versioned;

/// What a COM_QUERY (or COM_STMT_PREPARE) payload asks of KILL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillRequest {
    /// No KILL that names a connection id: forward as usual. (`KILL QUERY ID n` and
    /// `KILL USER u` name a query id or an account, which mean the same on the backend.)
    None,
    /// `KILL [HARD | SOFT] [CONNECTION | QUERY] <number>`, alone in its payload.
    Connection {
        /// `HARD` or `SOFT` when given.
        mode: Option<&'static str>,
        query_only: bool,
        id: u64,
    },
    /// A KILL of a connection id that cannot be rewritten exactly (inside a
    /// multi-statement payload, with an expression for the id, prepared, …).
    Refused(&'static str),
}

/// Classify a payload's KILL statements.
pub fn kill_request(sql: &str) -> KillRequest {
    let src = versioned::expand(sql);
    let toks = lexer::lex(&src);
    let stmts = split::split(&toks);
    let mut found = Vec::new();
    for range in &stmts {
        let s = Stmt::new(&src, toks.get(range.clone()).unwrap_or_default());
        match one(&s) {
            KillRequest::None => {}
            other => found.push(other),
        }
    }
    match (found.len(), stmts.len()) {
        (0, _) => KillRequest::None,
        (1, 1) => found.remove(0),
        _ => KillRequest::Refused(
            "a KILL that names a connection id must be the only statement of its query",
        ),
    }
}

fn one(s: &Stmt<'_>) -> KillRequest {
    if s.word_at(0, "KILL") {
        return kill_statement(s);
    }
    // Text that will run later as a statement: refuse a KILL in it, since the proxy
    // would not see it when it runs.
    let literal = match lexical::inner(s) {
        Some(Inner::Literal(text)) => Some(text),
        _ if s.word_at(0, "PREPARE") => s
            .find_word(1, "FROM")
            .and_then(|i| s.tok(i + 1))
            .filter(|t| t.kind == Kind::Str)
            .map(|t| lexical::unescape(t.text)),
        _ => None,
    };
    match literal.map(|text| kill_request(&text)) {
        Some(KillRequest::None) | None => KillRequest::None,
        Some(_) => {
            KillRequest::Refused("KILL cannot be prepared or run through EXECUTE IMMEDIATE here")
        }
    }
}

fn kill_statement(s: &Stmt<'_>) -> KillRequest {
    let mut i = 1;
    let mode = match s.keyword_at(i).as_str() {
        "HARD" => Some("HARD"),
        "SOFT" => Some("SOFT"),
        _ => None,
    };
    if mode.is_some() {
        i += 1;
    }
    let mut query_only = false;
    match s.keyword_at(i).as_str() {
        "CONNECTION" => i += 1,
        "QUERY" => {
            query_only = true;
            i += 1;
        }
        _ => {}
    }
    if s.word_at(i, "USER") || (query_only && s.word_at(i, "ID")) {
        return KillRequest::None;
    }
    let id = s
        .tok(i)
        .filter(|t| t.kind == Kind::Number && s.toks.len() == i + 1)
        .and_then(|t| t.text.parse::<u64>().ok());
    match id {
        Some(id) => KillRequest::Connection {
            mode,
            query_only,
            id,
        },
        None => KillRequest::Refused("KILL needs a literal connection id here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(query_only: bool, id: u64) -> KillRequest {
        KillRequest::Connection {
            mode: None,
            query_only,
            id,
        }
    }

    #[test]
    fn plain_forms() {
        assert_eq!(kill_request("KILL 5"), conn(false, 5));
        assert_eq!(kill_request(" kill query 7 ;"), conn(true, 7));
        assert_eq!(kill_request("KILL CONNECTION 9"), conn(false, 9));
        assert_eq!(
            kill_request("KILL HARD QUERY 9"),
            KillRequest::Connection {
                mode: Some("HARD"),
                query_only: true,
                id: 9
            }
        );
        // Comments are no reason to refuse: the lexer drops them.
        assert_eq!(kill_request("/* app */ KILL 5"), conn(false, 5));
        assert_eq!(kill_request("-- x\nKILL QUERY 5"), conn(true, 5));
        assert_eq!(kill_request("/*!50000 KILL 5 */"), conn(false, 5));
    }

    #[test]
    fn ids_of_other_kinds_pass() {
        assert_eq!(kill_request("KILL QUERY ID 9"), KillRequest::None);
        assert_eq!(kill_request("KILL USER bob"), KillRequest::None);
        assert_eq!(kill_request("KILL USER bob; SELECT 1"), KillRequest::None);
        assert_eq!(kill_request("SELECT 'KILL 5'"), KillRequest::None);
        assert_eq!(kill_request("SELECT 1"), KillRequest::None);
    }

    #[test]
    fn unmappable_forms_are_refused() {
        for sql in [
            "KILL 5; SELECT 1",
            "SELECT 1; KILL 5",
            "KILL @id",
            "KILL 2+3",
            "KILL",
            "KILL CONNECTION_ID()",
            "PREPARE s FROM 'KILL 5'",
            "EXECUTE IMMEDIATE 'KILL QUERY 5'",
        ] {
            assert!(
                matches!(kill_request(sql), KillRequest::Refused(_)),
                "{sql}"
            );
        }
        assert_eq!(kill_request("PREPARE s FROM 'SELECT 1'"), KillRequest::None);
    }
}
