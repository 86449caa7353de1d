//! Recognising KILL statements that name a connection id, so the proxy can map the id
//! (see `proxy::registry`) or refuse what it cannot map exactly.
//!
//! MariaDB takes `KILL [HARD | SOFT] [CONNECTION | QUERY] <expr>`. A literal id is
//! known here; any other argument ([`Target::Expr`]) is evaluated by the session on its
//! own backend connection first (when [`evaluable`] says that has no side effect), and
//! the value mapped like a literal. The same KILL may also be prepared
//! (COM_STMT_PREPARE, or `PREPARE s FROM '…'`), with `?` for the id; the session
//! remembers which prepared statements are KILLs and maps them when they execute.

use super::lexer::{self, Kind, Token};
use super::lexical::{self, Inner};
use super::split;
use super::stmt::Stmt;
use super::versioned;

/// A `KILL` of a connection (or of its running query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// `HARD` or `SOFT` when given.
    pub mode: Option<&'static str>,
    pub query_only: bool,
    pub target: Target,
}

/// What a KILL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A literal connection id.
    Id(u64),
    /// One `?` placeholder (a prepared KILL).
    Param,
    /// Any other expression, as written.
    Expr(String),
}

impl Kill {
    /// How many `?` the KILL holds: a text KILL with any is a syntax error; a prepared
    /// one can be mapped only with one `?` as its whole argument ([`Target::Param`]).
    pub fn placeholders(&self) -> usize {
        match &self.target {
            Target::Id(_) => 0,
            Target::Param => 1,
            Target::Expr(e) => lexer::lex(e)
                .iter()
                .filter(|t| t.kind == Kind::Param)
                .count(),
        }
    }

    /// The same KILL naming connection `id` literally (an integer, or `NULL`).
    pub fn with_id(&self, id: impl std::fmt::Display) -> String {
        let verb = if self.query_only {
            "QUERY"
        } else {
            "CONNECTION"
        };
        match self.mode {
            Some(mode) => format!("KILL {mode} {verb} {id}"),
            None => format!("KILL {verb} {id}"),
        }
    }
}

/// What a COM_QUERY (or COM_STMT_PREPARE) payload asks of KILL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillRequest {
    /// No KILL that names a connection id: forward as usual. (`KILL QUERY ID n` and
    /// `KILL USER u` name a query id or an account, which mean the same on the backend.)
    None,
    /// A KILL of a connection id, alone in its payload.
    Kill(Kill),
    /// `PREPARE name FROM '<a KILL>'`, alone in its payload; `name` is lower-cased.
    Prepare { name: String, kill: Kill },
    /// A KILL of a connection id that cannot be rewritten exactly (inside a
    /// multi-statement payload, run through EXECUTE IMMEDIATE, …).
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
    if let Some(Inner::Literal(text)) = lexical::inner(s) {
        return match kill_request(&text) {
            KillRequest::None => KillRequest::None,
            _ => KillRequest::Refused("KILL cannot be run through EXECUTE IMMEDIATE here"),
        };
    }
    if !s.word_at(0, "PREPARE") || !s.word_at(2, "FROM") {
        return KillRequest::None;
    }
    // Text that will run later as a statement: the session must know it is a KILL.
    let (Some(name), Some(body)) = (s.tok(1).and_then(statement_name), s.tok(3)) else {
        return KillRequest::None;
    };
    if body.kind != Kind::Str || s.toks.len() != 4 {
        return KillRequest::None;
    }
    match kill_request(&lexical::unescape(body.text)) {
        KillRequest::None => KillRequest::None,
        KillRequest::Kill(kill) => KillRequest::Prepare { name, kill },
        _ => KillRequest::Refused("this KILL cannot be prepared here"),
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
    let args = s.toks.get(i..).unwrap_or_default();
    let target = match args {
        // Nothing to kill: MariaDB's own syntax error.
        [] => return KillRequest::None,
        [t] if t.kind == Kind::Number && t.text.bytes().all(|b| b.is_ascii_digit()) => {
            match t.text.parse::<u64>() {
                Ok(id) => Target::Id(id),
                Err(_) => Target::Expr(t.text.to_string()),
            }
        }
        [t] if t.kind == Kind::Param => Target::Param,
        _ => Target::Expr(Stmt::new(s.src(), args).text().to_string()),
    };
    KillRequest::Kill(Kill {
        mode,
        query_only,
        target,
    })
}

/// A prepared statement's name as MariaDB compares it (case-insensitively).
fn statement_name(t: &Token<'_>) -> Option<String> {
    match t.kind {
        Kind::Word => Some(t.text.to_ascii_lowercase()),
        Kind::QuotedIdent => Some(
            t.text
                .trim_matches('`')
                .replace("``", "`")
                .to_ascii_lowercase(),
        ),
        _ => None,
    }
}

/// Functions a KILL argument may call and still be evaluated by the proxy: built-ins
/// without side effects. Anything else is refused rather than run twice (see
/// [`evaluable`]).
const PURE_FUNCTIONS: &[&str] = &[
    "CONNECTION_ID",
    "CAST",
    "CONVERT",
    "ABS",
    "COALESCE",
    "IFNULL",
    "NULLIF",
    "IF",
    "GREATEST",
    "LEAST",
    "FLOOR",
    "CEIL",
    "CEILING",
    "ROUND",
    "TRUNCATE",
    "MOD",
    "SIGN",
    "CONV",
    "CONCAT",
    "SUBSTRING",
    "SUBSTR",
    "TRIM",
    "LENGTH",
];

/// Keywords that a `(` may follow without being called: operators and clauses.
const NOT_CALLS: &[&str] = &[
    "AND", "OR", "XOR", "NOT", "IN", "IS", "LIKE", "RLIKE", "REGEXP", "BETWEEN", "CASE", "WHEN",
    "THEN", "ELSE", "DIV", "MOD", "EXISTS", "ANY", "ALL", "SOME", "ESCAPE", "BINARY", "DISTINCT",
    "UNION", "WHERE", "HAVING", "AS", "ROW", "INTERVAL", "BY", "LIMIT", "OFFSET",
];

/// Calls that read a sequence: MariaDB refuses them in KILL (a table is used).
const SEQUENCE_FUNCTIONS: &[&str] = &["NEXTVAL", "LASTVAL", "SETVAL"];

/// Why the proxy does not evaluate a KILL argument itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotEvaluable {
    /// A `?`: a syntax error in a text statement, a second placeholder in a prepared one.
    Placeholder,
    /// A subquery, a stored function of a named schema or a sequence: MariaDB refuses
    /// these in KILL and in EXECUTE … USING itself (ER_SUBQUERIES_NOT_SUPPORTED).
    MariaDbRefuses,
    /// An assignment, a function the proxy does not know to be free of side effects
    /// (a stored function of the current database, or a built-in not in its list), or
    /// text it cannot enclose in parentheses safely.
    Unknown,
}

/// Whether `expr` can be evaluated with `SELECT CAST((expr) AS SIGNED)` with no effect
/// beyond its value: no assignment, placeholder, sequence or table, only the built-ins
/// of [`PURE_FUNCTIONS`], and balanced parentheses (so that it cannot close the ones
/// around it). A subquery without tables (`(SELECT @a)`, `(VALUES (1))`) is evaluated
/// when `subqueries` allows it, as MariaDB's KILL does; MariaDB refuses any subquery in
/// `EXECUTE … USING`.
pub fn evaluable(expr: &str, subqueries: bool) -> Result<(), NotEvaluable> {
    let toks = lexer::lex(expr);
    let s = Stmt::new(expr, &toks);
    if toks.is_empty() {
        return Err(NotEvaluable::Unknown);
    }
    // A refusal MariaDB would give itself wins (its error is then the exact one), then
    // a placeholder, then the proxy's own refusal.
    let rank = |w: NotEvaluable| match w {
        NotEvaluable::MariaDbRefuses => 2,
        NotEvaluable::Placeholder => 1,
        NotEvaluable::Unknown => 0,
    };
    let mut worst: Option<NotEvaluable> = None;
    let mut note = |why: NotEvaluable| {
        if worst.is_none_or(|w| rank(why) > rank(w)) {
            worst = Some(why);
        }
    };
    // Whether each level of parentheses is a SELECT (its FROM names a table).
    let mut selects = vec![false];
    for (i, t) in toks.iter().enumerate() {
        let call = s.tok(i + 1).is_some_and(|n| n.is_punct("("));
        let after_dot = i
            .checked_sub(1)
            .and_then(|p| s.tok(p))
            .is_some_and(|p| p.is_punct("."));
        match t.kind {
            Kind::Param => note(NotEvaluable::Placeholder),
            Kind::Punct if t.is_punct("(") => selects.push(false),
            Kind::Punct if t.is_punct(")") => {
                selects.pop();
                if selects.is_empty() {
                    note(NotEvaluable::Unknown);
                    selects.push(false);
                }
            }
            Kind::Punct if t.is_punct(":=") || t.is_punct(";") => note(NotEvaluable::Unknown),
            Kind::Word if t.is_word("SELECT") || t.is_word("VALUES") => {
                if !subqueries {
                    note(NotEvaluable::MariaDbRefuses);
                }
                if let Some(level) = selects.last_mut() {
                    *level = true;
                }
            }
            // A table (`FROM DUAL` is none), or a common table expression.
            Kind::Word
                if (t.is_word("FROM")
                    && selects.last() == Some(&true)
                    && !s.word_at(i + 1, "DUAL"))
                    || t.is_word("WITH") =>
            {
                note(NotEvaluable::MariaDbRefuses)
            }
            // NEXT VALUE FOR s, PREVIOUS VALUE FOR s.
            Kind::Word if t.is_word("VALUE") && s.word_at(i + 1, "FOR") => {
                note(NotEvaluable::MariaDbRefuses)
            }
            Kind::Word | Kind::QuotedIdent if call && after_dot => {
                // `schema.f(…)`: a stored function.
                note(NotEvaluable::MariaDbRefuses)
            }
            Kind::Word if call && SEQUENCE_FUNCTIONS.iter().any(|f| t.is_word(f)) => {
                note(NotEvaluable::MariaDbRefuses)
            }
            Kind::Word
                if call && (PURE_FUNCTIONS.iter().chain(NOT_CALLS).any(|f| t.is_word(f))) => {}
            Kind::Word | Kind::QuotedIdent if call => note(NotEvaluable::Unknown),
            _ => {}
        }
    }
    if selects.len() != 1 {
        note(NotEvaluable::Unknown);
    }
    worst.map_or(Ok(()), Err)
}

impl NotEvaluable {
    /// MariaDB refuses the argument too (ER_SUBQUERIES_NOT_SUPPORTED), so its error
    /// is the exact answer.
    pub fn refused_by_mariadb(self) -> bool {
        self == NotEvaluable::MariaDbRefuses
    }

    /// The argument holds a `?`.
    pub fn is_placeholder(self) -> bool {
        self == NotEvaluable::Placeholder
    }
}

/// How one statement of a payload uses a text-protocol prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameUse {
    /// `PREPARE name FROM …` (which first drops an older statement of that name).
    Prepare(String),
    /// `EXECUTE name [USING expr, …]`: the name and the text of each argument.
    Execute(String, Vec<String>),
    /// `DEALLOCATE PREPARE name` or `DROP PREPARE name`.
    Deallocate(String),
}

/// The prepared-statement names a payload's statements use, and how many statements it
/// has (the session needs this only while it holds a prepared KILL).
pub fn statement_names(sql: &str) -> (Vec<NameUse>, usize) {
    let src = versioned::expand(sql);
    let toks = lexer::lex(&src);
    let stmts = split::split(&toks);
    let mut uses = Vec::new();
    for range in &stmts {
        let s = Stmt::new(&src, toks.get(range.clone()).unwrap_or_default());
        let name_at = |i: usize| s.tok(i).and_then(statement_name);
        let used = match s.keyword_at(0).as_str() {
            "PREPARE" => name_at(1).map(NameUse::Prepare),
            "EXECUTE" if !s.word_at(1, "IMMEDIATE") => {
                name_at(1).map(|name| NameUse::Execute(name, using_args(&s)))
            }
            "DEALLOCATE" | "DROP" if s.word_at(1, "PREPARE") => name_at(2).map(NameUse::Deallocate),
            _ => None,
        };
        uses.extend(used);
    }
    (uses, stmts.len())
}

/// The arguments of `EXECUTE name USING a, b, …`, each as written.
fn using_args(s: &Stmt<'_>) -> Vec<String> {
    if !s.word_at(2, "USING") {
        return vec![];
    }
    let mut args = Vec::new();
    let mut start = 3;
    let mut depth = 0usize;
    for (i, t) in s.toks.iter().enumerate().skip(3) {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.is_punct(",") {
            args.push(Stmt::new(s.src(), &s.toks[start..i]).text().to_string());
            start = i + 1;
        }
    }
    args.push(
        Stmt::new(s.src(), s.toks.get(start..).unwrap_or_default())
            .text()
            .to_string(),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(query_only: bool, target: Target) -> KillRequest {
        KillRequest::Kill(Kill {
            mode: None,
            query_only,
            target,
        })
    }

    fn conn(query_only: bool, id: u64) -> KillRequest {
        kill(query_only, Target::Id(id))
    }

    fn expr(query_only: bool, text: &str) -> KillRequest {
        kill(query_only, Target::Expr(text.into()))
    }

    #[test]
    fn plain_forms() {
        assert_eq!(kill_request("KILL 5"), conn(false, 5));
        assert_eq!(kill_request(" kill query 7 ;"), conn(true, 7));
        assert_eq!(kill_request("KILL CONNECTION 9"), conn(false, 9));
        assert_eq!(
            kill_request("KILL HARD QUERY 9"),
            KillRequest::Kill(Kill {
                mode: Some("HARD"),
                query_only: true,
                target: Target::Id(9),
            })
        );
        // Comments are no reason to refuse: the lexer drops them.
        assert_eq!(kill_request("/* app */ KILL 5"), conn(false, 5));
        assert_eq!(kill_request("-- x\nKILL QUERY 5"), conn(true, 5));
        assert_eq!(kill_request("/*!50000 KILL 5 */"), conn(false, 5));
    }

    #[test]
    fn expressions_and_placeholders() {
        assert_eq!(kill_request("KILL @id"), expr(false, "@id"));
        assert_eq!(kill_request("KILL QUERY @id;"), expr(true, "@id"));
        assert_eq!(
            kill_request("KILL CONNECTION_ID()"),
            expr(false, "CONNECTION_ID()")
        );
        assert_eq!(kill_request("KILL (1+2)"), expr(false, "(1+2)"));
        assert_eq!(kill_request("KILL 2+3"), expr(false, "2+3"));
        assert_eq!(kill_request("KILL 0x10"), expr(false, "0x10"));
        assert_eq!(kill_request("KILL ?"), kill(false, Target::Param));
        assert_eq!(kill_request("KILL QUERY ?"), kill(true, Target::Param));
        assert_eq!(kill_request("KILL"), KillRequest::None);
    }

    #[test]
    fn what_is_evaluated() {
        for e in [
            "@id",
            "CONNECTION_ID()",
            "connection_id ( )",
            "(1+2)",
            "0x10",
            "X'35'",
            "cast(@a as unsigned)",
            "CONV('ff', 16, 10)",
            "IF(@a > 0, @a, CONNECTION_ID())",
            "'(' ",
            "@@pseudo_thread_id",
            "TRIM(LEADING '0' FROM '007')",
            // Subqueries without tables, as MariaDB's KILL takes them.
            "(SELECT 1)",
            "(SELECT @a FROM DUAL)",
            "(VALUES (3))",
            "(SELECT TRIM(LEADING '0' FROM @a))",
            "(SELECT 1 UNION SELECT 2)",
            // Operators before a parenthesis are no calls (main.sp-bugs).
            "(('x' IN ( SELECT 1)) MOD 44)",
            "@a AND (1) OR NOT (0)",
            "EXISTS (SELECT 1)",
        ] {
            assert_eq!(evaluable(e, true), Ok(()), "{e}");
        }
        use NotEvaluable::*;
        for (e, why) in [
            ("(SELECT 1 FROM t)", MariaDbRefuses),
            ("(SELECT (SELECT 2) FROM t)", MariaDbRefuses),
            (
                "(SELECT 1 FROM DUAL WHERE 1 IN (SELECT a FROM t))",
                MariaDbRefuses,
            ),
            ("(WITH x AS (SELECT 1) SELECT * FROM x)", MariaDbRefuses),
            ("LASTVAL(s)", MariaDbRefuses),
            ("nextval(s)", MariaDbRefuses),
            ("NEXT VALUE FOR s", MariaDbRefuses),
            ("PREVIOUS VALUE FOR s", MariaDbRefuses),
            ("db.f(1)", MariaDbRefuses),
            ("`db`.`f`(1)", MariaDbRefuses),
            // A stored function of the current database, or a built-in not listed.
            ("f(1)", Unknown),
            ("`f`(1)", Unknown),
            ("(SELECT f(1))", Unknown),
            ("SLEEP(1)", Unknown),
            ("RAND()", Unknown),
            ("LAST_INSERT_ID(5)", Unknown),
            ("@a := 5", Unknown),
            ("", Unknown),
            ("1; DROP TABLE t", Unknown),
            // It could close the parentheses it is evaluated in.
            ("1) AS SIGNED), (1", Unknown),
            ("(1", Unknown),
            ("?", Placeholder),
            ("? + 1", Placeholder),
            // The refusal MariaDB gives itself wins over the proxy's own.
            ("f(1) + (SELECT 1 FROM t)", MariaDbRefuses),
            ("(SELECT ? FROM t)", MariaDbRefuses),
        ] {
            assert_eq!(evaluable(e, true), Err(why), "{e}");
        }
        // EXECUTE … USING takes no subquery at all.
        assert_eq!(evaluable("(SELECT 1)", false), Err(MariaDbRefuses));
        assert_eq!(evaluable("@a + 1", false), Ok(()));
        assert!(MariaDbRefuses.refused_by_mariadb() && !Unknown.refused_by_mariadb());
        assert!(Placeholder.is_placeholder() && !MariaDbRefuses.is_placeholder());
    }

    #[test]
    fn literal_form_of_a_kill() {
        let k = |mode, query_only| Kill {
            mode,
            query_only,
            target: Target::Param,
        };
        assert_eq!(k(None, false).with_id(7), "KILL CONNECTION 7");
        assert_eq!(k(None, true).with_id(7), "KILL QUERY 7");
        assert_eq!(k(Some("SOFT"), true).with_id(0), "KILL SOFT QUERY 0");
        assert_eq!(
            k(Some("HARD"), false).with_id(u64::MAX),
            "KILL HARD CONNECTION 18446744073709551615"
        );
        let placeholders = |sql: &str| match kill_request(sql) {
            KillRequest::Kill(k) => k.placeholders(),
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(placeholders("KILL 5"), 0);
        assert_eq!(placeholders("KILL ?"), 1);
        assert_eq!(placeholders("KILL @a"), 0);
        assert_eq!(placeholders("KILL ? + ?"), 2);
        assert_eq!(placeholders("KILL (SELECT '?' FROM t WHERE a = ?)"), 1);
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
    fn text_prepare() {
        assert_eq!(
            kill_request("PREPARE Stmt1 FROM ' KILL 0 '"),
            KillRequest::Prepare {
                name: "stmt1".into(),
                kill: Kill {
                    mode: None,
                    query_only: false,
                    target: Target::Id(0)
                }
            }
        );
        assert!(matches!(
            kill_request("PREPARE `s` FROM 'KILL QUERY ?'"),
            KillRequest::Prepare { name, kill } if name == "s" && kill.target == Target::Param
        ));
        assert_eq!(kill_request("PREPARE s FROM 'SELECT 1'"), KillRequest::None);
        assert_eq!(kill_request("PREPARE s FROM @sql"), KillRequest::None);
        let (uses, n) = statement_names("EXECUTE S USING @a, (1+2); DEALLOCATE PREPARE s");
        assert_eq!(n, 2);
        assert_eq!(
            uses,
            vec![
                NameUse::Execute("s".into(), vec!["@a".into(), "(1+2)".into()]),
                NameUse::Deallocate("s".into())
            ]
        );
        let (uses, _) = statement_names("PREPARE x FROM 'SELECT 1'; DROP PREPARE `y`");
        assert_eq!(
            uses,
            vec![
                NameUse::Prepare("x".into()),
                NameUse::Deallocate("y".into())
            ]
        );
    }

    #[test]
    fn unmappable_forms_are_refused() {
        for sql in [
            "KILL 5; SELECT 1",
            "SELECT 1; KILL 5",
            "KILL @id; SELECT 1",
            "PREPARE s FROM 'KILL 5'; EXECUTE s",
            "PREPARE s FROM 'KILL 5; SELECT 1'",
            "EXECUTE IMMEDIATE 'KILL QUERY 5'",
        ] {
            assert!(
                matches!(kill_request(sql), KillRequest::Refused(_)),
                "{sql}"
            );
        }
    }
}
