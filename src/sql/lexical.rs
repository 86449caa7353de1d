//! The keyword classifier.
//!
//! It decides a statement's class and transaction effect from its leading
//! keywords and a few token patterns (`FOR UPDATE`, `INTO OUTFILE`,
//! `GET_LOCK(`…). It is complete on its own: it is the fallback for whatever
//! sqlparser cannot parse, the read fast path, and the tie-breaker for parsed
//! statements whose class depends on details the AST mapping leaves to it
//! (queries, `SET`, `EXECUTE`). Anything it does not recognise is a write.

use super::lexer::Kind;
use super::stmt::Stmt;
use super::{split, StatementClass as C, TxnEffect as T};

/// A statement's class and transaction effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub class: C,
    pub txn: T,
}

const fn decide(class: C, txn: T) -> Decision {
    Decision { class, txn }
}

const READ: Decision = decide(C::Read, T::None);
const WRITE: Decision = decide(C::Write, T::None);
const SESSION: Decision = decide(C::Session, T::None);
/// An anonymous compound statement runs arbitrary statements: a write.
const COMPOUND: Decision = WRITE;

/// A statement wrapped in another one, classified as the inner statement.
pub(crate) enum Inner {
    /// `SET STATEMENT … FOR <stmt>`, `ANALYZE <stmt>`, `EXPLAIN ANALYZE
    /// <stmt>`: the inner statement starts at this token.
    Tokens(usize),
    /// `EXECUTE IMMEDIATE '<stmt>'`: the unescaped literal.
    Literal(String),
}

/// Classifies one statement by its keywords.
pub(crate) fn classify(s: &Stmt<'_>) -> Decision {
    let Some(first) = s.tok(0) else {
        return READ;
    };
    if first.is_punct("(") {
        return parenthesized(s);
    }
    if split::is_label(s.toks) {
        return COMPOUND;
    }
    match first.keyword().as_str() {
        "SELECT" | "VALUES" | "TABLE" | "DO" => query(s),
        "WITH" => with(s),
        "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" | "HELP" | "CHECKSUM" | "SIGNAL" | "RESIGNAL" => {
            READ
        }
        "INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "CALL" => WRITE,
        "LOAD" => load(s),
        "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE" => ddl(s),
        "GRANT" | "REVOKE" => decide(C::Ddl, T::ImplicitCommit),
        "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "XA" => {
            transaction(s)
        }
        "SET" => set(s),
        // `GET DIAGNOSTICS … @var = …` assigns user variables.
        "USE" | "PREPARE" | "DEALLOCATE" | "GET" => SESSION,
        "EXECUTE" if s.word_at(1, "IMMEDIATE") => WRITE,
        "EXECUTE" => SESSION,
        "LOCK" | "UNLOCK" => decide(C::Locking, T::ImplicitCommit),
        "HANDLER" => handler(s),
        "RESET" if s.word_at(1, "QUERY") => decide(C::Admin, T::None),
        "ANALYZE" | "OPTIMIZE" | "REPAIR" | "CHECK" | "FLUSH" | "RESET" | "CACHE" | "CHANGE"
        | "STOP" => decide(C::Admin, T::ImplicitCommit),
        "KILL" | "SHUTDOWN" | "INSTALL" | "UNINSTALL" | "PURGE" | "BINLOG" | "BACKUP" => {
            decide(C::Admin, T::None)
        }
        "IF" | "CASE" | "WHILE" | "LOOP" | "REPEAT" | "FOR" => COMPOUND,
        _ => WRITE,
    }
}

/// True for statements the read fast path may decide without a parse: the
/// keyword classifier is what decides them on the parsed path too (see
/// `ast::decide`), so skipping the parse cannot change the answer.
pub(crate) fn is_read_family(s: &Stmt<'_>) -> bool {
    match s.keyword_at(0).as_str() {
        "SELECT" | "SHOW" | "DESCRIBE" | "DESC" => true,
        "EXPLAIN" => !s.word_at(1, "ANALYZE"),
        "WITH" => s.keyword_at(after_ctes(s)).as_str() == "SELECT",
        _ => false,
    }
}

/// Finds a wrapped statement (see [`Inner`]).
pub(crate) fn inner(s: &Stmt<'_>) -> Option<Inner> {
    match s.keyword_at(0).as_str() {
        "SET" if s.word_at(1, "STATEMENT") => set_statement_body(s).map(Inner::Tokens),
        "ANALYZE" => analyzed_statement(s).map(Inner::Tokens),
        "EXPLAIN" | "DESCRIBE" | "DESC" if s.word_at(1, "ANALYZE") => Some(Inner::Tokens(1)),
        "EXECUTE" if s.word_at(1, "IMMEDIATE") && s.toks.len() >= 3 => s
            .tok(2)
            .filter(|t| t.kind == Kind::Str)
            .map(|t| Inner::Literal(unescape(t.text))),
        _ => None,
    }
}

/// The statement after `SET STATEMENT var=value[, …] FOR`.
fn set_statement_body(s: &Stmt<'_>) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in s.toks.iter().enumerate().skip(2) {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.is_word("FOR") {
            return Some(i + 1).filter(|&n| n < s.toks.len());
        }
    }
    None
}

/// `ANALYZE [FORMAT=JSON] <stmt>` runs `<stmt>`; `ANALYZE TABLE` does not
/// wrap anything.
fn analyzed_statement(s: &Stmt<'_>) -> Option<usize> {
    let at = if s.word_at(1, "FORMAT") { 4 } else { 1 };
    let t = s.tok(at)?;
    let wraps = t.is_punct("(")
        || matches!(
            t.keyword().as_str(),
            "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "WITH" | "VALUES"
        );
    wraps.then_some(at)
}

/// The text of a string literal, quotes removed and escapes resolved.
pub(crate) fn unescape(lit: &str) -> String {
    let mut chars = lit.chars();
    let quote = chars.next().unwrap_or('\'');
    let body: Vec<char> = chars.collect();
    let body = match body.last() {
        Some(&c) if c == quote => &body[..body.len() - 1],
        _ => &body[..],
    };
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        let next = body.get(i + 1).copied();
        match (c, next) {
            ('\\', Some(n)) => {
                out.push(match n {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    other => other,
                });
                i += 2;
            }
            (q, Some(n)) if q == quote && n == quote => {
                out.push(q);
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `SELECT`, `VALUES`, `DO` and `(…)`: a read unless it locks, selects into
/// something, or advances a sequence.
fn query(s: &Stmt<'_>) -> Decision {
    let class = (0..s.toks.len())
        .filter_map(|i| query_effect(s, i))
        .fold(C::Read, super::most_restrictive);
    decide(class, T::None)
}

/// What the token at `i` adds to a query's class.
fn query_effect(s: &Stmt<'_>, i: usize) -> Option<C> {
    let t = s.tok(i)?;
    if t.kind == Kind::UserVar {
        // `SELECT @n := @n + 1` assigns a session variable.
        return s
            .tok(i + 1)
            .filter(|n| n.is_punct(":="))
            .map(|_| C::Session);
    }
    if !could_affect_query(t.text) {
        return None;
    }
    match t.keyword().as_str() {
        "FOR" if s.word_at(i + 1, "UPDATE") || s.word_at(i + 1, "SHARE") => Some(C::Locking),
        "LOCK" if s.word_at(i + 1, "IN") && s.word_at(i + 2, "SHARE") => Some(C::Locking),
        "INTO" if s.word_at(i + 1, "OUTFILE") || s.word_at(i + 1, "DUMPFILE") => Some(C::Admin),
        "INTO" => Some(C::Session),
        "GET_LOCK" | "RELEASE_LOCK" | "RELEASE_ALL_LOCKS" | "IS_FREE_LOCK" | "IS_USED_LOCK"
            if s.is_call(i) =>
        {
            Some(C::Locking)
        }
        "NEXTVAL" | "SETVAL" if s.is_call(i) => Some(C::Write),
        "NEXT" if s.word_at(i + 1, "VALUE") && s.word_at(i + 2, "FOR") => Some(C::Write),
        _ => None,
    }
}

/// `((SELECT …) UNION (SELECT …))`: a query; anything else in parentheses
/// is not SQL we know.
fn parenthesized(s: &Stmt<'_>) -> Decision {
    let inner = s.toks.iter().find(|t| !t.is_punct("("));
    match inner.map(|t| t.keyword()) {
        Some(k) if matches!(k.as_str(), "SELECT" | "VALUES" | "TABLE" | "WITH") => query(s),
        _ => WRITE,
    }
}

/// A cheap pre-check for [`query_effect`]: every word it looks for starts
/// with one of these letters and has 3 to 17 bytes. Most words of a big ORM
/// query (aliases, column names) are rejected here without upper-casing.
fn could_affect_query(word: &str) -> bool {
    (3..=17).contains(&word.len())
        && word
            .as_bytes()
            .first()
            .is_some_and(|b| b"FLIGRNSfligrns".contains(b))
}

/// `WITH … <main statement>`: a query, or a write when the main statement is
/// one.
fn with(s: &Stmt<'_>) -> Decision {
    let main = after_ctes(s);
    match s.tok(main) {
        Some(t) if t.is_punct("(") => query(s),
        Some(t) if matches!(t.keyword().as_str(), "SELECT" | "VALUES" | "TABLE") => query(s),
        _ => WRITE,
    }
}

/// Index of the main statement after `WITH [RECURSIVE] name [(cols)] AS (…)
/// [, …]`.
pub(crate) fn after_ctes(s: &Stmt<'_>) -> usize {
    let mut i = if s.word_at(1, "RECURSIVE") { 2 } else { 1 };
    loop {
        i += 1; // the name
        if s.tok(i).is_some_and(|t| t.is_punct("(")) {
            i = s.skip_parens(i);
        }
        if s.word_at(i, "AS") {
            i += 1;
        }
        if s.tok(i).is_some_and(|t| t.is_punct("(")) {
            i = s.skip_parens(i);
        }
        if !s.tok(i).is_some_and(|t| t.is_punct(",")) {
            return i;
        }
        i += 1;
    }
}

fn load(s: &Stmt<'_>) -> Decision {
    if s.word_at(1, "INDEX") {
        decide(C::Admin, T::ImplicitCommit)
    } else {
        WRITE
    }
}

/// `CREATE`/`ALTER`/`DROP`/`RENAME`/`TRUNCATE`: DDL, which commits the open
/// transaction, except on temporary tables. `DROP PREPARE` is `DEALLOCATE`.
pub(crate) fn ddl(s: &Stmt<'_>) -> Decision {
    if s.word_at(0, "DROP") && s.word_at(1, "PREPARE") {
        return SESSION;
    }
    let temporary = s.word_at(1, "TEMPORARY")
        || (s.word_at(0, "CREATE") && s.word_at(1, "OR") && s.word_at(3, "TEMPORARY"));
    decide(
        C::Ddl,
        if temporary {
            T::None
        } else {
            T::ImplicitCommit
        },
    )
}

/// `BEGIN`, `START TRANSACTION`, `COMMIT`, `ROLLBACK [TO]`, `SAVEPOINT`,
/// `RELEASE SAVEPOINT`, `XA …`; also `BEGIN NOT ATOMIC` (a compound block)
/// and `START SLAVE` (admin), which share their first word.
fn transaction(s: &Stmt<'_>) -> Decision {
    let txn = match s.keyword_at(0).as_str() {
        "BEGIN" if s.word_at(1, "NOT") => return COMPOUND,
        "START" if !s.word_at(1, "TRANSACTION") => return decide(C::Admin, T::ImplicitCommit),
        "BEGIN" | "START" => T::Begin,
        "COMMIT" => T::Commit,
        "ROLLBACK" if s.find_word(1, "TO").is_some() => T::Savepoint,
        "ROLLBACK" => T::Rollback,
        "XA" => match s.keyword_at(1).as_str() {
            "START" | "BEGIN" => T::Begin,
            "COMMIT" => T::Commit,
            "ROLLBACK" => T::Rollback,
            _ => T::None,
        },
        _ => T::Savepoint,
    };
    decide(C::Transaction, txn)
}

/// `HANDLER t OPEN|CLOSE` keeps a cursor in the session; `HANDLER t READ`
/// reads through it.
fn handler(s: &Stmt<'_>) -> Decision {
    let verb = s.toks.iter().skip(2).find_map(|t| {
        let k = t.keyword();
        matches!(k.as_str(), "OPEN" | "CLOSE" | "READ").then_some(k)
    });
    match verb.as_ref().map(|k| k.as_str()) {
        Some("READ") => READ,
        Some(_) => SESSION,
        None => WRITE,
    }
}

/// `SET`: account statements are DDL, any global assignment makes it admin,
/// everything else is session state. `autocommit=0` opens a transaction
/// context (`Begin`), `autocommit=1` commits (`Commit`).
fn set(s: &Stmt<'_>) -> Decision {
    match s.keyword_at(1).as_str() {
        "PASSWORD" => return decide(C::Ddl, T::ImplicitCommit),
        "DEFAULT" if s.word_at(2, "ROLE") => return decide(C::Ddl, T::None),
        _ => {}
    }
    let mut txn = T::None;
    for start in assignment_starts(s) {
        match assignment(s, start) {
            Assignment::Global => return decide(C::Admin, T::None),
            Assignment::Autocommit(effect) => txn = effect,
            Assignment::Other => {}
        }
    }
    decide(C::Session, txn)
}

enum Assignment {
    Global,
    Autocommit(T),
    Other,
}

/// Token indexes where each comma-separated assignment of a `SET` starts.
fn assignment_starts<'s>(s: &'s Stmt<'_>) -> impl Iterator<Item = usize> + 's {
    let mut depth = 0usize;
    let commas = s.toks.iter().enumerate().filter_map(move |(i, t)| {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.saturating_sub(1);
        }
        (depth == 0 && t.is_punct(",")).then_some(i + 1)
    });
    std::iter::once(1).chain(commas)
}

/// Reads one `[GLOBAL|SESSION|LOCAL] name = value` assignment.
fn assignment(s: &Stmt<'_>, start: usize) -> Assignment {
    let Some(first) = s.tok(start) else {
        return Assignment::Other;
    };
    let (global, name_at) = match first.keyword().as_str() {
        "GLOBAL" | "PERSIST" | "PERSIST_ONLY" => (true, start + 1),
        "SESSION" | "LOCAL" => (false, start + 1),
        _ if first.kind == Kind::SysVar => (has_scope(first.text, "global."), start),
        _ => (false, start),
    };
    if global {
        return Assignment::Global;
    }
    let is_autocommit = s.tok(name_at).is_some_and(|t| match t.kind {
        Kind::Word => t.text.eq_ignore_ascii_case("autocommit"),
        Kind::SysVar => sysvar_name(t.text).eq_ignore_ascii_case("autocommit"),
        _ => false,
    });
    let value = s.tok(name_at + 2).filter(|_| {
        s.tok(name_at + 1)
            .is_some_and(|t| t.is_punct("=") || t.is_punct(":="))
    });
    match (is_autocommit, value) {
        (true, Some(v)) => autocommit_effect(v.text),
        _ => Assignment::Other,
    }
}

fn autocommit_effect(value: &str) -> Assignment {
    let value = value.trim_matches(|c| c == '\'' || c == '"');
    if ["0", "OFF", "FALSE"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
    {
        Assignment::Autocommit(T::Begin)
    } else if ["1", "ON", "TRUE"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
    {
        Assignment::Autocommit(T::Commit)
    } else {
        Assignment::Other
    }
}

/// True when the system variable `@@scope.name` has the given `scope.`
/// prefix.
fn has_scope(sysvar: &str, scope: &str) -> bool {
    sysvar
        .get(2..2 + scope.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(scope))
}

/// The name of `@@[global.|session.|local.]name`.
pub(crate) fn sysvar_name(sysvar: &str) -> &str {
    let bare = sysvar.get(2..).unwrap_or("");
    ["global.", "session.", "local."]
        .iter()
        .find(|p| has_scope(sysvar, p))
        .and_then(|p| bare.get(p.len()..))
        .unwrap_or(bare)
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;

    fn decision(sql: &str) -> Decision {
        let toks = lex(sql);
        classify(&Stmt::new(sql, &toks))
    }

    #[test]
    fn autocommit_assignments() {
        for (sql, txn) in [
            ("SET autocommit=0", T::Begin),
            ("SET @@autocommit = OFF", T::Begin),
            ("SET SESSION autocommit=1", T::Commit),
            ("SET @@session.autocommit = true", T::Commit),
            ("SET NAMES utf8mb4, autocommit = 0", T::Begin),
            ("SET sql_mode='', autocommit_x = 0", T::None),
        ] {
            assert_eq!(decision(sql), decide(C::Session, txn), "{sql}");
        }
        assert_eq!(
            decision("SET GLOBAL autocommit=0"),
            decide(C::Admin, T::None)
        );
        assert_eq!(
            decision("SET @@global.autocommit=0"),
            decide(C::Admin, T::None)
        );
    }

    #[test]
    fn ctes_are_skipped() {
        let sql = "WITH RECURSIVE a (n) AS (SELECT 1), b AS (SELECT 2) DELETE FROM t";
        let toks = lex(sql);
        let s = Stmt::new(sql, &toks);
        assert!(s.word_at(after_ctes(&s), "DELETE"));
        assert_eq!(decision(sql), WRITE);
    }

    #[test]
    fn unescape_literals() {
        assert_eq!(unescape(r"'it''s \'x\' \n'"), "it's 'x' \n");
        assert_eq!(unescape("'"), "");
        assert_eq!(unescape(""), "");
        assert_eq!(unescape("\"a\\"), "a\\");
    }

    #[test]
    fn sysvar_names() {
        assert_eq!(sysvar_name("@@GLOBAL.server_id"), "server_id");
        assert_eq!(sysvar_name("@@server_id"), "server_id");
        assert_eq!(sysvar_name("@@"), "");
    }
}
