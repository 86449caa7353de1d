//! Statement classification: what a COM_QUERY payload does, so the proxy can
//! route it (ARCHITECTURE §1) and the sequencer can tell whether it replays
//! deterministically (§2).
//!
//! # Layout
//!
//! * `versioned.rs` — runs `/*!NNNNN … */` and `/*M!NNNNNN … */` comments the
//!   way MariaDB does: their content is SQL.
//! * `lexer.rs` — a zero-copy MariaDB lexer (strings, quoted identifiers,
//!   `@vars`, comments).
//! * `split.rs` — splits a multi-statement payload at `;`, keeping
//!   `BEGIN … END` bodies of routines, triggers and events whole.
//! * `ast.rs` — parses one statement with sqlparser's `MySqlDialect` and maps
//!   the AST to a class.
//! * `lexical.rs` — the keyword classifier: the fallback for what sqlparser
//!   cannot parse, and the fast path for reads.
//! * `determinism.rs` — constructs that make a write non-replayable.
//! * `kill.rs` — KILL statements that name a connection id, plain or prepared (for id
//!   mapping).
//! * `rewrite.rs` — session functions of a write replaced by their leader-side values.
//! * `stmt.rs` — one statement's tokens and text; `tests.rs` — the
//!   cross-module rules, the fast-path equivalence and the no-panic properties.
//!
//! # How one statement is classified
//!
//! 1. Wrappers are unwrapped: `SET STATEMENT … FOR <s>`, `ANALYZE <s>`,
//!    `EXPLAIN ANALYZE <s>` and `EXECUTE IMMEDIATE '<s>'` take the class of
//!    `<s>`. `EXECUTE IMMEDIATE @var` is a write (we cannot see the text).
//! 2. **Read fast path.** `SELECT`, `WITH … SELECT`, `SHOW`, `DESCRIBE` and
//!    `EXPLAIN` are decided by the keyword classifier without a parse. This
//!    is provably the same answer: on the parsed path the AST mapping hands
//!    exactly these statements to the same keyword classifier (a unit test
//!    checks both paths agree on every fixture). Such statements report
//!    `fallback: false`.
//! 3. Otherwise sqlparser parses the statement (statements over
//!    [`PARSE_LIMIT`] bytes, such as big mysqldump `INSERT`s, skip the parse).
//!    If it parses, the AST variant decides; if not, the keyword classifier
//!    decides and `fallback` is `true`. sqlparser cannot parse stored routine
//!    bodies, `XA`, `LOAD DATA`, `LOCK IN SHARE MODE`, `PREPARE … FROM`,
//!    `HANDLER`, `BACKUP STAGE` and many `SHOW`s, so these are normal there.
//! 4. `determinism.rs` lists the non-replayable constructs of writes.
//!
//! # Classes
//!
//! | class | statements |
//! |---|---|
//! | `read` | `SELECT` (also without tables), `WITH … SELECT`, `VALUES`, `SHOW`, `DESCRIBE`/`EXPLAIN`, `HELP`, `DO`, `CHECKSUM TABLE`, `HANDLER … READ`, `SIGNAL`, and empty or comment-only payloads (the server answers "empty query" and nothing changes) |
//! | `write` | `INSERT`/`REPLACE`/`UPDATE`/`DELETE` (any form, `WITH … UPDATE` too), `LOAD DATA`/`LOAD XML`, `CALL` (the routine may write), `SELECT NEXTVAL(s)`/`SETVAL`/`NEXT VALUE FOR` (they advance a sequence), anonymous compound blocks, `EXECUTE IMMEDIATE` of a non-literal, and **anything unrecognised** (the safe default) |
//! | `ddl` | `CREATE`/`ALTER`/`DROP`/`RENAME`/`TRUNCATE` of anything (tables, databases, views, indexes, routines, triggers, events, sequences, servers, roles, users), `GRANT`, `REVOKE`, `SET PASSWORD`, `SET DEFAULT ROLE` — accounts replicate like DDL |
//! | `transaction` | `BEGIN [WORK]`, `START TRANSACTION […]`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE SAVEPOINT`, `ROLLBACK TO`, `XA …` |
//! | `session` | `SET [SESSION] var`, `SET LOCAL var`, `SET @user`, `SET NAMES`, `SET CHARACTER SET`, `SET [SESSION] TRANSACTION …`, `SET ROLE`, `USE`, `PREPARE`, `EXECUTE`, `DEALLOCATE`/`DROP PREPARE`, `HANDLER … OPEN/CLOSE`, `GET DIAGNOSTICS … @var = …`, `SELECT … INTO @var` and `SELECT @v := …` (they set session variables, like `SET @v = (SELECT …)`) |
//! | `locking` | `LOCK TABLES`, `UNLOCK TABLES`, `SELECT … FOR UPDATE`/`FOR SHARE`/`LOCK IN SHARE MODE`, `GET_LOCK()`, `RELEASE_LOCK()`, `RELEASE_ALL_LOCKS()`, `IS_FREE_LOCK()`, `IS_USED_LOCK()` (named locks live on one server, so even the test must go where the lock is) |
//! | `admin` | `SET GLOBAL`/`@@global.`, `KILL`, `FLUSH`, `ANALYZE`/`OPTIMIZE`/`CHECK`/`REPAIR TABLE`, `SHUTDOWN`, `INSTALL`/`UNINSTALL`, `RESET`, `PURGE … LOGS`, `CHANGE MASTER`, `START`/`STOP SLAVE`, `CACHE INDEX`, `LOAD INDEX`, `BINLOG`, `BACKUP …`, and `SELECT … INTO OUTFILE/DUMPFILE` (it writes a file on that server's disk: a node-local side effect, not a replicable read) |
//!
//! [`Classification::is_write`] is `Write | Ddl`: the statements whose
//! effects go through the replicated log. `Admin` statements act on the node
//! they run on and are never logged — MariaDB's own binlog copies `OPTIMIZE`,
//! `ANALYZE` and `REPAIR`, but they change no data, so each node runs its
//! own.
//!
//! # Transaction effects
//!
//! `Begin` for `BEGIN`, `START TRANSACTION`, `XA START` and `SET
//! autocommit=0` (from then on every statement is in a transaction, so the
//! session is pinned to the leader); `Commit` for `COMMIT` (also `AND
//! CHAIN`), `XA COMMIT` and `SET autocommit=1` (which commits the open
//! transaction); `Rollback` for `ROLLBACK` and `XA ROLLBACK`; `Savepoint` for
//! `SAVEPOINT`, `RELEASE SAVEPOINT` and `ROLLBACK TO`; `ImplicitCommit` for
//! the statements MariaDB commits before running: DDL and account statements
//! (except on `TEMPORARY` tables), `LOCK TABLES`, `UNLOCK TABLES`, `ANALYZE`/
//! `OPTIMIZE`/`CHECK`/`REPAIR TABLE`, `FLUSH`, `RESET` (not `RESET QUERY
//! CACHE`), `CACHE INDEX`, `LOAD INDEX`, `CHANGE MASTER`, `START`/`STOP SLAVE`.
//!
//! # Multi-statement payloads: the most restrictive wins
//!
//! [`classify_each`] gives one [`Classification`] per statement; the proxy
//! should use it for multi-statement payloads. [`classify`] folds them into
//! one:
//!
//! * the class is the most restrictive one, in the order `read < session <
//!   transaction < locking < admin < write < ddl` — roughly, how much the
//!   router must do: anywhere; every backend of the session; the leader for
//!   a while; the leader while locks are held; a node-level side effect;
//!   the leader and the log; the log first, then every node;
//! * the transaction effect is the one that decides whether a transaction is
//!   open once the whole payload ran: the last `Begin`, `Commit`, `Rollback`
//!   or `ImplicitCommit`; `Savepoint` only when there is none of those
//!   (`BEGIN; SAVEPOINT a` is `Begin`, `INSERT …; COMMIT` is `Commit`);
//! * every non-deterministic reason of every statement is kept, in order,
//!   without duplicates;
//! * `fallback` is true when any statement fell back.

mod ast;
mod determinism;
mod kill;
mod lexer;
mod lexical;
mod rewrite;
mod split;
mod stmt;
mod versioned;

use std::fmt;
use std::str::FromStr;

pub use kill::{evaluable, kill_request, statement_names, Kill, KillRequest, NameUse, Target};
use lexical::Inner;
pub use rewrite::{hash_passwords, pin_functions, SessionValues};
use stmt::Stmt;

/// Statements longer than this (in bytes) are not handed to sqlparser: the
/// keyword classifier decides them (with `fallback: true`). A 1 MB mysqldump
/// `INSERT` would otherwise cost milliseconds and megabytes of AST to learn
/// that it is an `INSERT`.
pub const PARSE_LIMIT: usize = 64 * 1024;

/// How deep wrappers (`SET STATEMENT … FOR`, `EXECUTE IMMEDIATE '…'`,
/// `ANALYZE …`) may nest before we give up and call the statement a write.
const MAX_NESTING: u8 = 8;

/// What a statement does, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementClass {
    Read,
    Write,
    Ddl,
    Transaction,
    Session,
    Locking,
    Admin,
}

impl StatementClass {
    const ALL: [StatementClass; 7] = [
        StatementClass::Read,
        StatementClass::Write,
        StatementClass::Ddl,
        StatementClass::Transaction,
        StatementClass::Session,
        StatementClass::Locking,
        StatementClass::Admin,
    ];

    /// The lowercase word used by `Display` and `FromStr`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::Ddl => "ddl",
            StatementClass::Transaction => "transaction",
            StatementClass::Session => "session",
            StatementClass::Locking => "locking",
            StatementClass::Admin => "admin",
        }
    }

    /// Position in the "most restrictive wins" order (see the module doc).
    fn restrictiveness(self) -> u8 {
        match self {
            StatementClass::Read => 0,
            StatementClass::Session => 1,
            StatementClass::Transaction => 2,
            StatementClass::Locking => 3,
            StatementClass::Admin => 4,
            StatementClass::Write => 5,
            StatementClass::Ddl => 6,
        }
    }
}

/// The more restrictive of two classes.
fn most_restrictive(a: StatementClass, b: StatementClass) -> StatementClass {
    if b.restrictiveness() > a.restrictiveness() {
        b
    } else {
        a
    }
}

impl fmt::Display for StatementClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not one of the [`StatementClass`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown statement class {0:?}: expected read, write, ddl, transaction, session, locking or admin"
)]
pub struct ParseClassError(pub String);

impl FromStr for StatementClass {
    type Err = ParseClassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StatementClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseClassError(s.to_string()))
    }
}

/// What a statement does to the transaction state (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnEffect {
    None,
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT`, `RELEASE SAVEPOINT`, `ROLLBACK TO`.
    Savepoint,
    /// MariaDB commits the open transaction before running it: DDL,
    /// `LOCK TABLES`, …
    ImplicitCommit,
}

/// The classification of one statement, or of a whole payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub class: StatementClass,
    pub txn: TxnEffect,
    /// Constructs that make replay non-deterministic per ARCHITECTURE §2,
    /// e.g. "UUID()", "SYSDATE()", "UPDATE ... LIMIT without ORDER BY".
    /// Empty = deterministic, given the pinned context (timestamp, insert
    /// id, rand seeds…). Only writes (`Write`, `Ddl`) are checked.
    pub nondeterministic: Vec<String>,
    /// True when sqlparser could not parse it (or it was over
    /// [`PARSE_LIMIT`]) and the keyword classifier decided. The read fast
    /// path reports false.
    pub fallback: bool,
}

impl Classification {
    /// What an empty or comment-only payload is: a read that does nothing.
    fn empty() -> Self {
        Classification {
            class: StatementClass::Read,
            txn: TxnEffect::None,
            nondeterministic: Vec::new(),
            fallback: false,
        }
    }

    /// What we say about a statement we cannot make sense of: a write.
    fn unknown() -> Self {
        Classification {
            class: StatementClass::Write,
            fallback: true,
            ..Classification::empty()
        }
    }

    /// True for `Write` and `Ddl`: the statements whose effects go through
    /// the replicated log. `Admin` is node-local and never logged.
    pub fn is_write(&self) -> bool {
        matches!(self.class, StatementClass::Write | StatementClass::Ddl)
    }

    /// True when nothing in it defeats the pinned-context replay.
    pub fn is_deterministic(&self) -> bool {
        self.nondeterministic.is_empty()
    }

    /// Folds the next statement of a payload into this one (see "the most
    /// restrictive wins" in the module doc).
    fn absorb(&mut self, next: Classification) {
        self.class = most_restrictive(self.class, next.class);
        self.txn = match (self.txn, next.txn) {
            (acc, TxnEffect::None) => acc,
            (TxnEffect::None, TxnEffect::Savepoint) => TxnEffect::Savepoint,
            (acc, TxnEffect::Savepoint) => acc,
            (_, effect) => effect,
        };
        for reason in next.nondeterministic {
            if !self.nondeterministic.contains(&reason) {
                self.nondeterministic.push(reason);
            }
        }
        self.fallback |= next.fallback;
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.class)?;
        if !self.nondeterministic.is_empty() {
            write!(
                f,
                " (non-deterministic: {})",
                self.nondeterministic.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Classifies one COM_QUERY payload. A multi-statement payload gets the most
/// restrictive combination of its statements (see the module doc); an empty
/// or comment-only one is a `Read`.
pub fn classify(sql: &str) -> Classification {
    combine(classify_nested(sql, 0))
}

/// Classifies each statement of a COM_QUERY payload, in order. An empty or
/// comment-only payload gives an empty list.
pub fn classify_each(sql: &str) -> Vec<Classification> {
    classify_nested(sql, 0)
}

fn combine(parts: Vec<Classification>) -> Classification {
    let mut parts = parts.into_iter();
    let Some(mut acc) = parts.next() else {
        return Classification::empty();
    };
    for next in parts {
        acc.absorb(next);
    }
    acc
}

fn classify_nested(sql: &str, depth: u8) -> Vec<Classification> {
    let src = versioned::expand(sql);
    let toks = lexer::lex(&src);
    split::split(&toks)
        .into_iter()
        .map(|range| {
            let toks = toks.get(range).unwrap_or_default();
            classify_statement(&Stmt::new(&src, toks), depth, Path::Normal)
        })
        .collect()
}

/// Whether the read fast path may be taken (tests turn it off to check it
/// changes nothing).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Normal,
    #[cfg(test)]
    AlwaysParse,
}

fn classify_statement(s: &Stmt<'_>, depth: u8, path: Path) -> Classification {
    if let Some(inner) = lexical::inner(s) {
        if depth >= MAX_NESTING {
            return Classification::unknown();
        }
        return match inner {
            Inner::Tokens(at) => classify_statement(&s.from(at), depth + 1, path),
            Inner::Literal(text) => combine(classify_nested(&text, depth + 1)),
        };
    }
    let (decision, fallback) = decide(s, path);
    Classification {
        class: decision.class,
        txn: decision.txn,
        nondeterministic: determinism::reasons(s, decision.class),
        fallback,
    }
}

/// The class and transaction effect, and whether the fallback decided.
fn decide(s: &Stmt<'_>, path: Path) -> (lexical::Decision, bool) {
    if path == Path::Normal && lexical::is_read_family(s) {
        return (lexical::classify(s), false);
    }
    if s.text().len() > PARSE_LIMIT {
        return (lexical::classify(s), true);
    }
    match ast::classify(s) {
        ast::Parsed::Decided(decision) => (decision, false),
        ast::Parsed::Undecided => (lexical::classify(s), false),
        ast::Parsed::Failed => (lexical::classify(s), true),
    }
}

/// Whether a statement may run a stored procedure (which may change the session's
/// variables or default database): any mention of the word `CALL` counts (a comment
/// before it, a string holding it), since the answer only decides whether session
/// state is read or set again.
pub fn may_call(sql: &str) -> bool {
    sql.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"CALL"))
}

#[cfg(test)]
mod tests;

/// Every name in `sql` that could denote a table: `(schema, name)` for `a.b`, `(None,
/// name)` for a lone identifier (keywords included — the caller matches them against
/// real table names). Backquotes are removed; string literals, variables and comments
/// are not names. Columns qualified as `t.c` or `db.t.c` yield `(t, c)`/`(db, t)` pairs
/// too: a caller that refuses on a match errs on the side of refusing.
pub fn table_names(sql: &str) -> Vec<(Option<String>, String)> {
    use lexer::Kind;
    let text = versioned::expand(sql);
    let tokens = lexer::lex(&text);
    let ident = |i: usize| -> Option<String> {
        let t = tokens.get(i)?;
        match t.kind {
            Kind::Word => Some(t.text.to_string()),
            Kind::QuotedIdent => {
                Some(t.text[1..t.text.len().saturating_sub(1).max(1)].replace("``", "`"))
            }
            _ => None,
        }
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(first) = ident(i) {
            let dotted = tokens.get(i + 1).is_some_and(|t| t.is_punct("."));
            match (dotted, ident(i + 2)) {
                (true, Some(second)) => {
                    out.push((Some(first), second));
                    i += 3;
                    continue;
                }
                _ => out.push((None, first)),
            }
        }
        i += 1;
    }
    out
}

/// SQL text that a statement runs as another statement later or at once: the body of
/// `PREPARE name FROM …` and of `EXECUTE IMMEDIATE …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynamicSql {
    /// Not such a statement.
    None,
    /// `PREPARE name FROM '<text>'`.
    PrepareLiteral(String),
    /// `PREPARE name FROM <expression>` (a variable, a concatenation…), as written.
    PrepareExpr(String),
    /// `EXECUTE IMMEDIATE …`, whatever its argument.
    ExecuteImmediate,
}

/// Finds [`DynamicSql`] in a one-statement payload.
pub fn dynamic_sql(sql: &str) -> DynamicSql {
    let text = versioned::expand(sql);
    let tokens = lexer::lex(&text);
    let s = Stmt::new(&text, &tokens);
    if s.word_at(0, "EXECUTE") && s.word_at(1, "IMMEDIATE") {
        return DynamicSql::ExecuteImmediate;
    }
    if !s.word_at(0, "PREPARE") || !s.word_at(2, "FROM") {
        return DynamicSql::None;
    }
    match tokens.get(3..) {
        Some([t]) if t.kind == lexer::Kind::Str => {
            DynamicSql::PrepareLiteral(lexical::unescape(t.text))
        }
        Some(rest) if !rest.is_empty() => {
            DynamicSql::PrepareExpr(Stmt::new(&text, rest).text().to_string())
        }
        _ => DynamicSql::None,
    }
}

#[cfg(test)]
mod dynamic_tests {
    use super::*;

    #[test]
    fn prepared_text_is_found() {
        assert_eq!(
            dynamic_sql("PREPARE s FROM 'INSERT INTO t VALUES (''a'')'"),
            DynamicSql::PrepareLiteral("INSERT INTO t VALUES ('a')".into())
        );
        assert_eq!(
            dynamic_sql("prepare s from @q"),
            DynamicSql::PrepareExpr("@q".into())
        );
        assert_eq!(
            dynamic_sql("/*!PREPARE s FROM CONCAT('DELETE ', 'FROM t')*/"),
            DynamicSql::PrepareExpr("CONCAT('DELETE ', 'FROM t')".into())
        );
        assert_eq!(
            dynamic_sql("EXECUTE IMMEDIATE 'SELECT 1'"),
            DynamicSql::ExecuteImmediate
        );
        assert_eq!(dynamic_sql("EXECUTE s USING @a"), DynamicSql::None);
        assert_eq!(dynamic_sql("SELECT 'PREPARE s FROM x'"), DynamicSql::None);
    }
}

/// A stored-object DDL (`CREATE VIEW`, `TRIGGER`, `PROCEDURE`, `FUNCTION`, `EVENT`,
/// `ALTER VIEW`, `ALTER EVENT`) that names no `DEFINER`, with `DEFINER = 'user'@'host'`
/// written in: MariaDB takes the definer from the session that runs the statement, and
/// a replay runs as the applier's account, so without this every other node would
/// record a different definer (and run the object with other privileges). `None` when
/// there is nothing to add.
pub fn with_definer(sql: &str, user: &str, host: &str) -> Option<String> {
    let text = versioned::expand(sql);
    let tokens = lexer::lex(&text);
    let s = Stmt::new(&text, &tokens);
    let alter = s.word_at(0, "ALTER");
    if !(s.word_at(0, "CREATE") || alter) {
        return None;
    }
    let mut i = 1;
    if !alter && s.word_at(1, "OR") && s.word_at(2, "REPLACE") {
        i = 3;
    }
    if s.word_at(i, "ALGORITHM") {
        if !s.tok(i + 1).is_some_and(|t| t.is_punct("=")) {
            return None;
        }
        i += 3;
    }
    let at = i;
    if s.word_at(i, "DEFINER") {
        return None;
    }
    if s.word_at(i, "SQL") && s.word_at(i + 1, "SECURITY") {
        i += 3;
    }
    if s.word_at(i, "AGGREGATE") {
        i += 1;
    }
    let object = s.keyword_at(i);
    let takes_definer = if alter {
        matches!(object.as_str(), "VIEW" | "EVENT")
    } else {
        matches!(
            object.as_str(),
            "VIEW" | "TRIGGER" | "PROCEDURE" | "FUNCTION" | "EVENT"
        )
    };
    // A loadable function (`CREATE FUNCTION f RETURNS … SONAME`) has no definer.
    if !takes_definer || tokens.iter().any(|t| t.is_word("SONAME")) {
        return None;
    }
    let pos = tokens.get(at)?.start;
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"));
    Some(format!(
        "{}DEFINER={}@{} {}",
        &text[..pos],
        quote(user),
        quote(host),
        &text[pos..]
    ))
}

#[cfg(test)]
mod definer_tests {
    use super::with_definer;

    #[test]
    fn definer_is_written_where_mariadb_expects_it() {
        let d = |s: &str| with_definer(s, "app", "%");
        assert_eq!(
            d("CREATE VIEW v AS SELECT 1").as_deref(),
            Some("CREATE DEFINER='app'@'%' VIEW v AS SELECT 1")
        );
        assert_eq!(
            d("create or replace algorithm = merge sql security invoker view v as select 1")
                .as_deref(),
            Some("create or replace algorithm = merge DEFINER='app'@'%' sql security invoker view v as select 1")
        );
        assert_eq!(
            d("CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET NEW.a = 1").as_deref(),
            Some(
                "CREATE DEFINER='app'@'%' TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET NEW.a = 1"
            )
        );
        assert_eq!(
            d("CREATE AGGREGATE FUNCTION f() RETURNS INT BEGIN RETURN 1; END").as_deref(),
            Some("CREATE DEFINER='app'@'%' AGGREGATE FUNCTION f() RETURNS INT BEGIN RETURN 1; END")
        );
        assert_eq!(
            d("ALTER EVENT e ON SCHEDULE EVERY 1 DAY").as_deref(),
            Some("ALTER DEFINER='app'@'%' EVENT e ON SCHEDULE EVERY 1 DAY")
        );
        assert_eq!(
            with_definer("CREATE PROCEDURE p() SELECT 1", "o'b\\", "10.%").as_deref(),
            Some("CREATE DEFINER='o''b\\\\'@'10.%' PROCEDURE p() SELECT 1")
        );
        // Already named, or nothing that has a definer.
        assert_eq!(d("CREATE DEFINER=root@localhost VIEW v AS SELECT 1"), None);
        assert_eq!(
            d("/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`a`@`%` SQL SECURITY DEFINER */ /*!50001 VIEW `v` AS select 1 */"),
            None
        );
        assert_eq!(d("CREATE TABLE t (a INT)"), None);
        assert_eq!(d("ALTER PROCEDURE p COMMENT 'x'"), None);
        assert_eq!(d("CREATE FUNCTION udf RETURNS STRING SONAME 'x.so'"), None);
        assert_eq!(d("CREATE USER u"), None);
    }
}

/// `sql` with its `?` placeholders (outside strings, comments and identifiers) replaced,
/// in order, by `literals`. `None` when the counts differ.
pub fn substitute_params(sql: &str, literals: &[String]) -> Option<String> {
    let tokens = lexer::lex(sql);
    let params: Vec<&lexer::Token<'_>> = tokens
        .iter()
        .filter(|t| t.kind == lexer::Kind::Param)
        .collect();
    if params.len() != literals.len() {
        return None;
    }
    let mut out =
        String::with_capacity(sql.len() + literals.iter().map(String::len).sum::<usize>());
    let mut at = 0;
    for (t, lit) in params.iter().zip(literals) {
        out.push_str(sql.get(at..t.start)?);
        out.push_str(lit);
        at = t.start + t.text.len();
    }
    out.push_str(sql.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod substitute_tests {
    use super::substitute_params;

    #[test]
    fn placeholders_outside_strings_and_comments_are_replaced() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            substitute_params(
                "UPDATE t SET c = ?, d = '?' /* ? */ WHERE id = ?",
                &l(&["X'41'", "7"])
            )
            .as_deref(),
            Some("UPDATE t SET c = X'41', d = '?' /* ? */ WHERE id = 7")
        );
        assert_eq!(substitute_params("SELECT ?", &l(&[])), None);
        assert_eq!(
            substitute_params("SELECT 1", &l(&[])).as_deref(),
            Some("SELECT 1")
        );
    }
}

/// `sql` with every call `name()` (no arguments; outside strings and comments) replaced
/// by `literal`; `None` when there is none.
pub fn replace_call(sql: &str, name: &str, literal: &str) -> Option<String> {
    let tokens = lexer::lex(sql);
    let mut out = String::new();
    let mut at = 0;
    let mut i = 0;
    while i + 2 < tokens.len() {
        let (t, open, close) = (&tokens[i], &tokens[i + 1], &tokens[i + 2]);
        let qualified = i > 0 && tokens[i - 1].is_punct(".");
        if t.is_word(name) && open.is_punct("(") && close.is_punct(")") && !qualified {
            out.push_str(sql.get(at..t.start)?);
            out.push_str(literal);
            at = close.start + close.text.len();
            i += 3;
        } else {
            i += 1;
        }
    }
    if at == 0 {
        return None;
    }
    out.push_str(sql.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod replace_call_tests {
    use super::replace_call;

    #[test]
    fn calls_are_replaced_outside_strings() {
        assert_eq!(
            replace_call(
                "SELECT ROW_COUNT(), 'ROW_COUNT()', row_count ( )",
                "ROW_COUNT",
                "2"
            )
            .as_deref(),
            Some("SELECT 2, 'ROW_COUNT()', 2")
        );
        assert_eq!(replace_call("SELECT 1", "ROW_COUNT", "2"), None);
        assert_eq!(
            replace_call("SELECT db.ROW_COUNT()", "ROW_COUNT", "2"),
            None
        );
    }
}

/// What a statement does to one named table, for the temporary-table rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableUse {
    /// `CREATE [OR REPLACE] TEMPORARY TABLE name …`.
    CreateTemporary(Option<String>, String),
    /// `DROP [TEMPORARY] TABLE name` (the first name).
    Drop(Option<String>, String),
    /// The table an INSERT/REPLACE/UPDATE/DELETE/TRUNCATE/ALTER/CREATE INDEX changes.
    Target(Option<String>, String),
}

/// The table a one-statement payload creates as temporary, drops or changes, if any.
pub fn table_use(sql: &str) -> Option<TableUse> {
    use lexer::Kind;
    let text = versioned::expand(sql);
    let tokens = lexer::lex(&text);
    let s = Stmt::new(&text, &tokens);
    let name_at = |i: usize| -> Option<(Option<String>, String, usize)> {
        let ident = |j: usize| -> Option<String> {
            let t = tokens.get(j)?;
            match t.kind {
                Kind::Word => Some(t.text.to_string()),
                Kind::QuotedIdent => {
                    Some(t.text[1..t.text.len().saturating_sub(1).max(1)].replace("``", "`"))
                }
                _ => None,
            }
        };
        let first = ident(i)?;
        if tokens.get(i + 1).is_some_and(|t| t.is_punct(".")) {
            Some((Some(first), ident(i + 2)?, i + 3))
        } else {
            Some((None, first, i + 1))
        }
    };
    let skip = |mut i: usize, words: &[&str]| {
        while words.iter().any(|w| s.word_at(i, w)) {
            i += 1;
        }
        i
    };
    let kw = s.keyword_at(0);
    match kw.as_str() {
        "CREATE" => {
            let mut i = 1;
            if s.word_at(1, "OR") && s.word_at(2, "REPLACE") {
                i = 3;
            }
            if s.word_at(i, "TEMPORARY") && s.word_at(i + 1, "TABLE") {
                i += 2;
                if s.word_at(i, "IF") && s.word_at(i + 1, "NOT") && s.word_at(i + 2, "EXISTS") {
                    i += 3;
                }
                let (db, t, _) = name_at(i)?;
                return Some(TableUse::CreateTemporary(db, t));
            }
            // CREATE [UNIQUE|FULLTEXT|SPATIAL] INDEX i ON t
            let i = skip(i, &["UNIQUE", "FULLTEXT", "SPATIAL", "ONLINE"]);
            if s.word_at(i, "INDEX") {
                let on = (i..tokens.len()).find(|&j| s.word_at(j, "ON"))?;
                let (db, t, _) = name_at(on + 1)?;
                return Some(TableUse::Target(db, t));
            }
            None
        }
        "DROP" => {
            let mut i = skip(1, &["TEMPORARY"]);
            if !s.word_at(i, "TABLE") {
                return None;
            }
            i += 1;
            if s.word_at(i, "IF") && s.word_at(i + 1, "EXISTS") {
                i += 2;
            }
            let (db, t, _) = name_at(i)?;
            Some(TableUse::Drop(db, t))
        }
        "INSERT" | "REPLACE" => {
            let i = skip(
                1,
                &["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"],
            );
            let (db, t, _) = name_at(i)?;
            Some(TableUse::Target(db, t))
        }
        "UPDATE" => {
            let i = skip(1, &["LOW_PRIORITY", "IGNORE"]);
            let (db, t, _) = name_at(i)?;
            Some(TableUse::Target(db, t))
        }
        "DELETE" => {
            let i = skip(1, &["LOW_PRIORITY", "QUICK", "IGNORE"]);
            if !s.word_at(i, "FROM") {
                return None;
            }
            let (db, t, _) = name_at(i + 1)?;
            Some(TableUse::Target(db, t))
        }
        "TRUNCATE" => {
            let i = skip(1, &["TABLE"]);
            let (db, t, _) = name_at(i)?;
            Some(TableUse::Target(db, t))
        }
        "ALTER" => {
            let i = skip(1, &["ONLINE", "IGNORE"]);
            if !s.word_at(i, "TABLE") {
                return None;
            }
            let (db, t, _) = name_at(i + 1)?;
            Some(TableUse::Target(db, t))
        }
        _ => None,
    }
}

/// An `INSERT … ON DUPLICATE KEY UPDATE`: its table and the columns its rows set
/// (`None`: every column, as in `INSERT INTO t VALUES …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert {
    pub db: Option<String>,
    pub table: String,
    pub columns: Option<Vec<String>>,
}

/// The upsert a one-statement payload is, if it is one.
pub fn upsert(sql: &str) -> Option<Upsert> {
    use lexer::Kind;
    // Every replicated write asks: lex only the statements that can be upserts.
    if !sql
        .as_bytes()
        .windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"DUPLICATE"))
    {
        return None;
    }
    let text = versioned::expand(sql);
    let tokens = lexer::lex(&text);
    let s = Stmt::new(&text, &tokens);
    if !s.word_at(0, "INSERT") {
        return None;
    }
    let on_duplicate = (0..tokens.len()).any(|i| {
        s.word_at(i, "ON")
            && s.word_at(i + 1, "DUPLICATE")
            && s.word_at(i + 2, "KEY")
            && s.word_at(i + 3, "UPDATE")
    });
    if !on_duplicate {
        return None;
    }
    let TableUse::Target(db, table) = table_use(sql)? else {
        return None;
    };
    let ident = |t: &lexer::Token<'_>| match t.kind {
        Kind::Word => Some(t.text.to_ascii_lowercase()),
        Kind::QuotedIdent => Some(
            t.text[1..t.text.len().saturating_sub(1).max(1)]
                .replace("``", "`")
                .to_ascii_lowercase(),
        ),
        _ => None,
    };
    // Past INSERT [modifiers] [INTO] [db.]table.
    let mut i = 1;
    while ["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"]
        .iter()
        .any(|w| s.word_at(i, w))
    {
        i += 1;
    }
    i += if tokens.get(i + 1).is_some_and(|t| t.is_punct(".")) {
        3
    } else {
        1
    };
    if s.word_at(i, "PARTITION") {
        // A partition list is not a column list: assume every column.
        return Some(Upsert {
            db,
            table,
            columns: None,
        });
    }
    let columns = if tokens.get(i).is_some_and(|t| t.is_punct("("))
        && !(s.word_at(i + 1, "SELECT") || s.word_at(i + 1, "WITH"))
    {
        // (a, b, …)
        let close = s.skip_parens(i);
        let cols: Option<Vec<String>> = tokens[i + 1..close.saturating_sub(1).max(i + 1)]
            .iter()
            .filter(|t| !t.is_punct(","))
            .map(ident)
            .collect();
        cols
    } else if s.word_at(i, "SET") {
        // SET a = …, b = …: the names at depth 0 after SET and after each comma.
        let mut cols = Vec::new();
        let mut depth = 0usize;
        let mut expect_name = true;
        for t in &tokens[i + 1..] {
            if depth == 0 && t.is_word("ON") {
                break;
            }
            match t.text {
                "(" if t.kind == Kind::Punct => depth += 1,
                ")" if t.kind == Kind::Punct => depth = depth.saturating_sub(1),
                "," if t.kind == Kind::Punct && depth == 0 => expect_name = true,
                _ if expect_name => {
                    cols.push(ident(t)?);
                    expect_name = false;
                }
                _ => {}
            }
        }
        Some(cols)
    } else {
        None
    };
    Some(Upsert { db, table, columns })
}

#[cfg(test)]
mod upsert_tests {
    use super::{upsert, Upsert};

    fn cols(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_table_and_the_columns_set_are_found() {
        assert_eq!(
            upsert("INSERT INTO kv (k, `V`) VALUES (?, ?) ON DUPLICATE KEY UPDATE hits = hits + 1"),
            Some(Upsert {
                db: None,
                table: "kv".into(),
                columns: cols(&["k", "v"])
            })
        );
        assert_eq!(
            upsert("insert ignore into app.kv values (1, 2) on duplicate key update v = 3"),
            Some(Upsert {
                db: Some("app".into()),
                table: "kv".into(),
                columns: None
            })
        );
        assert_eq!(
            upsert("INSERT INTO kv SET k = CONCAT('a', ','), v = (1), hits = 0 ON DUPLICATE KEY UPDATE hits = 1"),
            Some(Upsert { db: None, table: "kv".into(), columns: cols(&["k", "v", "hits"]) })
        );
        assert_eq!(
            upsert("INSERT INTO kv (k) SELECT k FROM src ON DUPLICATE KEY UPDATE hits = hits + 1"),
            Some(Upsert {
                db: None,
                table: "kv".into(),
                columns: cols(&["k"])
            })
        );
        assert_eq!(
            upsert("INSERT INTO kv (k) VALUES ('ON DUPLICATE KEY UPDATE')"),
            None
        );
        assert_eq!(upsert("REPLACE INTO kv (k) VALUES (1)"), None);
        assert_eq!(upsert("UPDATE kv SET v = 1"), None);
    }
}

#[cfg(test)]
mod table_use_tests {
    use super::{table_use, TableUse};

    #[test]
    fn the_changed_table_is_found() {
        let t = |s: &str| Some(TableUse::Target(None, s.to_string()));
        assert_eq!(
            table_use("CREATE TEMPORARY TABLE IF NOT EXISTS tt (a INT)"),
            Some(TableUse::CreateTemporary(None, "tt".into()))
        );
        assert_eq!(
            table_use("create or replace temporary table d.`t t` select 1"),
            Some(TableUse::CreateTemporary(Some("d".into()), "t t".into()))
        );
        assert_eq!(
            table_use("DROP TEMPORARY TABLE IF EXISTS tt"),
            Some(TableUse::Drop(None, "tt".into()))
        );
        assert_eq!(table_use("INSERT IGNORE INTO tt SELECT * FROM r"), t("tt"));
        assert_eq!(table_use("UPDATE LOW_PRIORITY tt SET a = 1"), t("tt"));
        assert_eq!(table_use("DELETE QUICK FROM tt WHERE a = 1"), t("tt"));
        assert_eq!(table_use("TRUNCATE TABLE tt"), t("tt"));
        assert_eq!(table_use("ALTER TABLE tt ADD b INT"), t("tt"));
        assert_eq!(table_use("CREATE UNIQUE INDEX i ON tt (a)"), t("tt"));
        assert_eq!(table_use("CREATE TABLE r (a INT)"), None);
        assert_eq!(table_use("SELECT * FROM tt"), None);
    }
}

/// A `SELECT` that reads `@@socket`, with that variable read as `NULL` under its own
/// column name; `None` when the statement reads no `@@socket`.
///
/// mysql_async (and the `mysql` crate) connected to a loopback address read `@@socket`
/// and reconnect through that Unix socket. Behind the proxy that socket is MariaDB's
/// own: the application would leave the proxy for the local MariaDB, and a follower's
/// MariaDB would take its writes. No socket, no jump.
pub fn hide_socket(sql: &str) -> Option<String> {
    // This runs on every COM_QUERY: lex only a statement that mentions the word.
    if !sql
        .as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"socket"))
    {
        return None;
    }
    let tokens = lexer::lex(sql);
    if !tokens.first()?.is_word("SELECT") {
        return None;
    }
    let is_socket = |t: &lexer::Token<'_>| {
        if t.kind != lexer::Kind::SysVar {
            return false;
        }
        let name = t.text.trim_start_matches('@');
        let name = name.rsplit_once('.').map_or(name, |(_, n)| n);
        name.trim_matches('`').eq_ignore_ascii_case("socket")
    };
    if !tokens.iter().any(is_socket) {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut at = 0;
    for (i, t) in tokens.iter().enumerate() {
        if !is_socket(t) {
            continue;
        }
        out.push_str(&sql[at..t.start]);
        out.push_str("NULL");
        // `@@socket AS x`, `@@socket x`, `@@socket 'x'`: the alias stays.
        const CLAUSES: [&str; 10] = [
            "FROM", "INTO", "WHERE", "UNION", "LIMIT", "ORDER", "GROUP", "HAVING", "FOR", "LOCK",
        ];
        let aliased = tokens.get(i + 1).is_some_and(|n| match n.kind {
            lexer::Kind::QuotedIdent | lexer::Kind::Str => true,
            lexer::Kind::Word => !CLAUSES.iter().any(|c| n.is_word(c)),
            _ => false,
        });
        if !aliased {
            out.push_str(&format!(" AS `{}`", t.text.replace('`', "``")));
        }
        at = t.end();
    }
    out.push_str(&sql[at..]);
    Some(out)
}

#[cfg(test)]
mod socket_tests {
    use super::hide_socket;

    #[test]
    fn socket_reads_become_null_under_their_own_name() {
        assert_eq!(
            hide_socket("SELECT @@max_allowed_packet,@@wait_timeout,@@socket").as_deref(),
            Some("SELECT @@max_allowed_packet,@@wait_timeout,NULL AS `@@socket`")
        );
        assert_eq!(
            hide_socket("select @@GLOBAL.socket").as_deref(),
            Some("select NULL AS `@@GLOBAL.socket`")
        );
        assert_eq!(
            hide_socket("SELECT @@socket AS s, 1").as_deref(),
            Some("SELECT NULL AS s, 1")
        );
        assert_eq!(
            hide_socket("SELECT @@socket s").as_deref(),
            Some("SELECT NULL s")
        );
        assert_eq!(
            hide_socket("SELECT @@socket FROM dual").as_deref(),
            Some("SELECT NULL AS `@@socket` FROM dual")
        );
        assert_eq!(hide_socket("SELECT @@port, '@@socket'"), None);
        assert_eq!(hide_socket("SELECT @@socketx"), None);
        assert_eq!(hide_socket("SET @a = @@socket"), None);
        assert_eq!(hide_socket(""), None);
    }
}
