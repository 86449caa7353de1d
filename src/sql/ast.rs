//! The sqlparser path: parse one statement with `MySqlDialect` and map the
//! AST to a class.
//!
//! A successful parse is what makes a classification "not fallback". Where
//! the AST variant alone settles the class it decides here; where the answer
//! depends on details sqlparser does not keep for MySQL (the `TEMPORARY` of a
//! `DROP`, a query's `LOCK IN SHARE MODE`, a `SET`'s scope), the keyword
//! classifier decides, so the two paths cannot disagree on those.

use sqlparser::ast::Statement as S;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::lexical::{self, Decision};
use super::stmt::Stmt;
use super::{StatementClass as C, TxnEffect as T};

/// The outcome of handing a statement to sqlparser.
pub(crate) enum Parsed {
    /// It parsed and the AST settles the class.
    Decided(Decision),
    /// It parsed; the keyword classifier settles the details.
    Undecided,
    /// sqlparser rejected it (or saw more than one statement in it).
    Failed,
}

/// Parses `s` and classifies the AST.
pub(crate) fn classify(s: &Stmt<'_>) -> Parsed {
    match Parser::parse_sql(&MySqlDialect {}, s.text()).as_deref() {
        Ok([stmt]) => decide(stmt, s).map_or(Parsed::Undecided, Parsed::Decided),
        _ => Parsed::Failed,
    }
}

const fn d(class: C, txn: T) -> Decision {
    Decision { class, txn }
}

/// The class the AST variant implies, or `None` when the keyword classifier
/// must decide (queries and `SHOW`/`DESCRIBE` — see
/// `lexical::is_read_family` —, `SET`, `EXECUTE`, and variants that
/// MySQL syntax does not produce).
fn decide(stmt: &S, s: &Stmt<'_>) -> Option<Decision> {
    Some(match stmt {
        S::Insert(_)
        | S::Update(_)
        | S::Delete(_)
        | S::Merge(_)
        | S::LoadData { .. }
        | S::Call(_) => d(C::Write, T::None),
        S::CreateTable(_)
        | S::CreateView(_)
        | S::CreateIndex(_)
        | S::CreateDatabase { .. }
        | S::CreateSchema { .. }
        | S::CreateFunction(_)
        | S::CreateProcedure { .. }
        | S::CreateTrigger(_)
        | S::CreateSequence { .. }
        | S::CreateRole(_)
        | S::CreateServer(_)
        | S::AlterTable(_)
        | S::AlterView(_)
        | S::AlterIndex { .. }
        | S::AlterSchema(_)
        | S::Drop { .. }
        | S::DropFunction(_)
        | S::DropProcedure { .. }
        | S::DropTrigger(_)
        | S::Truncate(_)
        | S::RenameTable(_) => lexical::ddl(s),
        S::Grant(_) | S::Revoke(_) | S::CreateUser(_) | S::AlterUser(_) => {
            d(C::Ddl, T::ImplicitCommit)
        }
        S::StartTransaction { .. } => d(C::Transaction, T::Begin),
        // sqlparser also reads PostgreSQL's bare `END` as a commit; MariaDB
        // does not, so that one is left to the keyword classifier.
        S::Commit { end: false, .. } => d(C::Transaction, T::Commit),
        S::Rollback {
            savepoint: Some(_), ..
        }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. } => d(C::Transaction, T::Savepoint),
        S::Rollback { .. } => d(C::Transaction, T::Rollback),
        S::Use(_) | S::Deallocate { .. } => d(C::Session, T::None),
        S::LockTables { .. } | S::UnlockTables => d(C::Locking, T::ImplicitCommit),
        S::Kill { .. } => d(C::Admin, T::None),
        S::Flush { .. } | S::OptimizeTable { .. } | S::Analyze(_) => d(C::Admin, T::ImplicitCommit),
        _ => return None,
    })
}
