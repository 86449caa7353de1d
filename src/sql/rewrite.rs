//! Making a write replayable by replacing the functions whose value differs from node
//! to node with the value they have on the leader (as rqlite does for `RANDOM()`).
//!
//! `UUID()`, `UUID_SHORT()`, `CONNECTION_ID()`, `USER()`, `SESSION_USER()`,
//! `SYSTEM_USER()` and `CURRENT_USER[()]` become literals; `SYSDATE([n])` becomes
//! `NOW([n])`, which the replay pins (so it is the statement's start time rather than
//! the moment of evaluation, a difference no replica can reproduce anyway). Every other
//! reason the determinism analysis finds (`LOAD_FILE()`, `@@server_id`, `LIMIT` without
//! `ORDER BY`, …) is a refusal, whose text names the construct.

use super::determinism;
use super::lexer::{self, Kind};
use super::split;
use super::stmt::Stmt;
use super::{versioned, StatementClass};

/// The leader-side values of the session functions.
pub struct SessionValues<'a> {
    /// `USER()`: `user@client-host`.
    pub user: &'a str,
    /// `CURRENT_USER()`: the account, `user@host-pattern`.
    pub current_user: &'a str,
    pub connection_id: u64,
}

/// The statement with its non-replayable function calls replaced, or why it cannot
/// be replicated. `None` when nothing needed replacing.
pub fn pin_functions(
    sql: &str,
    class: StatementClass,
    values: &SessionValues<'_>,
    mut uuid: impl FnMut() -> String,
    mut uuid_short: impl FnMut() -> u64,
) -> Result<Option<String>, String> {
    let src = versioned::expand(sql);
    let toks = lexer::lex(&src);
    let ranges = split::split(&toks);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for range in ranges {
        let stmt_toks = toks.get(range.clone()).unwrap_or_default();
        let s = Stmt::new(&src, stmt_toks);
        let reasons = determinism::reasons(&s, class);
        if reasons.is_empty() {
            continue;
        }
        // Inside a routine, trigger or event body, or in DDL, the value must stay a
        // call: it runs later, elsewhere.
        let rewritable = class == StatementClass::Write && !split::is_compound(stmt_toks);
        let mut refused: Vec<String> = Vec::new();
        for reason in &reasons {
            let pinnable = matches!(
                reason.as_str(),
                "UUID()"
                    | "UUID_SHORT()"
                    | "SYSDATE()"
                    | "CONNECTION_ID()"
                    | "USER()"
                    | "SESSION_USER()"
                    | "SYSTEM_USER()"
                    | "CURRENT_USER()"
            );
            if !(pinnable && rewritable) {
                refused.push(reason.clone());
            }
        }
        if !refused.is_empty() {
            return Err(refused.join(", "));
        }
        for i in 0..s.toks.len() {
            let t = &s.toks[i];
            if t.kind != Kind::Word {
                continue;
            }
            let name = t.keyword();
            let call_end = if s.is_call(i) {
                Some(s.skip_parens(i + 1))
            } else {
                None
            };
            let end_of = |j: usize| s.tok(j).map(|t| t.end());
            let literal = match (name.as_str(), call_end) {
                ("UUID", Some(_)) => Some(quote(&uuid())),
                ("UUID_SHORT", Some(_)) => Some(uuid_short().to_string()),
                ("CONNECTION_ID", Some(_)) => Some(values.connection_id.to_string()),
                ("USER" | "SESSION_USER" | "SYSTEM_USER", Some(_)) => Some(quote(values.user)),
                ("CURRENT_USER", _) => Some(quote(values.current_user)),
                ("SYSDATE", Some(_)) => {
                    // Keep the argument (precision): NOW(<same args>).
                    edits.push((t.start, t.end(), "NOW".into()));
                    None
                }
                _ => None,
            };
            let Some(literal) = literal else {
                continue;
            };
            if !is_function_position(&s, i) {
                continue;
            }
            let end = match call_end {
                // skip_parens gives the index just past the closing parenthesis.
                Some(past) => end_of(past.saturating_sub(1)).unwrap_or(t.end()),
                None => t.end(),
            };
            edits.push((t.start, end, literal));
        }
    }
    if edits.is_empty() {
        return Ok(None);
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(src.len() + 64);
    let mut at = 0;
    for (start, end, text) in edits {
        if start < at {
            continue;
        }
        out.push_str(&src[at..start]);
        out.push_str(&text);
        at = end;
    }
    out.push_str(&src[at..]);
    Ok(Some(out))
}

/// A name used as a function here (not a column, table or `DEFINER =` value).
fn is_function_position(s: &Stmt<'_>, i: usize) -> bool {
    let after_definer =
        i >= 2 && s.tok(i - 1).is_some_and(|t| t.is_punct("=")) && s.word_at(i - 2, "DEFINER");
    let qualified = i >= 1 && s.tok(i - 1).is_some_and(|t| t.is_punct("."));
    !after_definer && !qualified
}

/// A string literal that means the same in every sql_mode (only characters that need no
/// escaping reach here: UUIDs and `user@host` are quoted with quotes doubled).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(sql: &str) -> Result<Option<String>, String> {
        let mut n = 0;
        pin_functions(
            sql,
            StatementClass::Write,
            &SessionValues {
                user: "app@10.0.0.5",
                current_user: "app@%",
                connection_id: 77,
            },
            || {
                n += 1;
                format!("uuid-{n}")
            },
            || 9,
        )
    }

    #[test]
    fn functions_become_values() {
        assert_eq!(
            pin("INSERT INTO t VALUES (UUID(), uuid(), CONNECTION_ID())")
                .unwrap()
                .unwrap(),
            "INSERT INTO t VALUES ('uuid-1', 'uuid-2', 77)"
        );
        assert_eq!(
            pin("UPDATE t SET who = CURRENT_USER, u = USER() WHERE id = 1")
                .unwrap()
                .unwrap(),
            "UPDATE t SET who = 'app@%', u = 'app@10.0.0.5' WHERE id = 1"
        );
        assert_eq!(
            pin("INSERT INTO t VALUES (SYSDATE(6), UUID_SHORT())")
                .unwrap()
                .unwrap(),
            "INSERT INTO t VALUES (NOW(6), 9)"
        );
        assert_eq!(pin("INSERT INTO t VALUES (NOW(), 'UUID()')").unwrap(), None);
        assert_eq!(pin("INSERT INTO t (uuid) VALUES (1)").unwrap(), None);
    }

    #[test]
    fn what_cannot_be_pinned_is_refused_by_name() {
        assert_eq!(
            pin("INSERT INTO t VALUES (LOAD_FILE('/etc/passwd'))").unwrap_err(),
            "LOAD_FILE()"
        );
        assert!(pin("UPDATE t SET a = 1 LIMIT 1")
            .unwrap_err()
            .contains("LIMIT"));
        assert_eq!(
            pin("INSERT INTO t VALUES (@@server_id)").unwrap_err(),
            "@@server_id"
        );
        // In a routine body the call runs later: refused, not pinned now.
        let body = "CREATE PROCEDURE p() BEGIN INSERT INTO t VALUES (UUID()); END";
        let r = pin_functions(
            body,
            StatementClass::Ddl,
            &SessionValues {
                user: "u@h",
                current_user: "u@%",
                connection_id: 1,
            },
            || "x".into(),
            || 1,
        );
        assert_eq!(r.unwrap_err(), "UUID()");
    }
}

/// Account statements with clear-text passwords rewritten to their
/// mysql_native_password hash (`IDENTIFIED BY 'pw'` → `IDENTIFIED BY PASSWORD
/// '*HASH'`, `PASSWORD('pw')` → `'*HASH'`), as MariaDB's binlog does, so that no
/// clear-text password reaches the log. A clear-text password for another
/// authentication plugin is refused (its stored form is not computed here).
pub fn hash_passwords(sql: &str) -> Result<String, String> {
    let src = versioned::expand(sql);
    let toks = lexer::lex(&src);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let next = |k: usize| toks.get(i + k);
        if t.is_word("IDENTIFIED") && next(1).is_some_and(|n| n.is_word("BY")) {
            if let Some(lit) = next(2).filter(|n| n.kind == Kind::Str) {
                let hash = native_hash(&super::lexical::unescape(lit.text));
                edits.push((lit.start, lit.end(), format!("PASSWORD '{hash}'")));
                i += 3;
                continue;
            }
        }
        if t.is_word("PASSWORD")
            && next(1).is_some_and(|n| n.is_punct("("))
            && next(2).is_some_and(|n| n.kind == Kind::Str)
            && next(3).is_some_and(|n| n.is_punct(")"))
        {
            let via_other_plugin = toks[..i]
                .iter()
                .any(|p| p.is_word("VIA") || p.is_word("WITH"))
                && !toks[..i]
                    .iter()
                    .any(|p| p.text.eq_ignore_ascii_case("mysql_native_password"));
            if via_other_plugin {
                return Err(
                    "WolfScale replicates clear-text passwords only for mysql_native_password: \
                     give the plugin's hashed value instead"
                        .into(),
                );
            }
            let lit = &toks[i + 2];
            let hash = native_hash(&super::lexical::unescape(lit.text));
            edits.push((t.start, toks[i + 3].end(), format!("'{hash}'")));
            i += 4;
            continue;
        }
        i += 1;
    }
    if edits.is_empty() {
        return Ok(src.into_owned());
    }
    let mut out = String::with_capacity(src.len() + 48);
    let mut at = 0;
    for (start, end, text) in edits {
        out.push_str(&src[at..start]);
        out.push_str(&text);
        at = end;
    }
    out.push_str(&src[at..]);
    Ok(out)
}

/// `*` and the upper-case hex of SHA1(SHA1(password)).
fn native_hash(password: &str) -> String {
    use sha1::{Digest, Sha1};
    let stage1 = Sha1::digest(password.as_bytes());
    let stage2 = Sha1::digest(stage1);
    let hex: String = stage2.iter().map(|b| format!("{b:02X}")).collect();
    format!("*{hex}")
}

#[cfg(test)]
mod password_tests {
    use super::*;

    #[test]
    fn clear_text_passwords_become_hashes() {
        // SELECT PASSWORD('pw') on MariaDB gives this.
        let h = "*D821809F681A40A6E379B50D0463EFAE20BDD122";
        assert_eq!(native_hash("pw"), h);
        assert_eq!(
            hash_passwords("CREATE USER 'u'@'%' IDENTIFIED BY 'pw'").unwrap(),
            format!("CREATE USER 'u'@'%' IDENTIFIED BY PASSWORD '{h}'")
        );
        assert_eq!(
            hash_passwords("SET PASSWORD FOR u = PASSWORD('pw')").unwrap(),
            format!("SET PASSWORD FOR u = '{h}'")
        );
        assert_eq!(
            hash_passwords(
                "ALTER USER u IDENTIFIED VIA mysql_native_password USING PASSWORD('pw')"
            )
            .unwrap(),
            format!("ALTER USER u IDENTIFIED VIA mysql_native_password USING '{h}'")
        );
        let already = format!("CREATE USER u IDENTIFIED BY PASSWORD '{h}'");
        assert_eq!(hash_passwords(&already).unwrap(), already);
        assert!(
            hash_passwords("CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD('x')").is_err()
        );
        assert_eq!(hash_passwords("DROP TABLE t").unwrap(), "DROP TABLE t");
    }
}
