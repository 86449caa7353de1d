//! Which tables cannot roll back: the leader refuses writes to them.
//!
//! A write is replayed inside a transaction that may still fail to commit (a lost
//! quorum, a deadlock at COMMIT). On InnoDB that rolls back cleanly; on MyISAM, Aria
//! or MEMORY the rows stay written on the leader only, and the nodes differ. So the
//! proxy keeps the set of non-transactional tables of the local MariaDB and refuses a
//! write that names one of them.
//!
//! The set is read at start, again after every DDL this node runs (before the client
//! sees the DDL's OK, so `CREATE TABLE t … ENGINE=MyISAM; INSERT INTO t …` is refused
//! even on the next statement), when this node begins a new term as leader (DDL from
//! another leader reached it through the applier), and every [`REFRESH`].
//!
//! The stored functions are read with it: a statement that calls one (`SELECT f()`) is
//! run as a write, since the function may write.
//!
//! Triggers extend the set. A trigger that writes a non-transactional table makes its
//! own table one too (the statement text never names the table the trigger writes).
//! A trigger that inserts into a table with an AUTO_INCREMENT column makes its table
//! unsafe as well: the values it generates on the leader depend on what concurrent,
//! failed or rolled-back statements consumed there, and a replay only pins the
//! statement's own table's first value (MariaDB's statement-based binlog calls the
//! same construct unsafe).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mysql_async::prelude::Queryable;

/// How often the set is re-read regardless of DDL (covers DDL run directly on MariaDB).
pub const REFRESH: Duration = Duration::from_secs(5);

type Table = (String, String);

/// The tables of one MariaDB that a replicated write must not touch, as `(schema,
/// table)`, each with why.
#[derive(Debug, Default)]
pub struct NonTransactional {
    tables: HashMap<Table, Unsafe>,
    /// The unique keys of every table, for [`NonTransactional::ambiguous_upsert`].
    unique_keys: HashMap<Table, Vec<UniqueKey>>,
    /// Stored functions, `(schema, name)` in lower case, for
    /// [`NonTransactional::stored_function_in`].
    functions: HashSet<Table>,
}

/// One unique key (the primary key included) of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    pub name: String,
    /// Lower-case column names.
    pub columns: Vec<String>,
    /// Which of them is AUTO_INCREMENT, if one is.
    pub auto_increment: Option<String>,
}

/// Why writes to a table are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsafe {
    /// Its engine cannot roll back.
    Engine,
    /// A trigger on it writes `target`, which cannot roll back.
    TriggerWritesNonTransactional { trigger: String, target: String },
    /// A trigger on it inserts into `target`, which has an AUTO_INCREMENT column.
    TriggerAutoIncrement { trigger: String, target: String },
}

/// A trigger as information_schema shows it.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub schema: String,
    pub name: String,
    /// The table it is defined on (always in `schema`).
    pub table: String,
    pub body: String,
}

fn show(t: &Table) -> String {
    format!("`{}`.`{}`", t.0, t.1)
}

impl NonTransactional {
    pub fn new(tables: impl IntoIterator<Item = (String, String)>) -> Self {
        Self::with_triggers(tables, [], [])
    }

    /// The set from the non-transactional tables, the tables with an AUTO_INCREMENT
    /// column and the triggers.
    pub fn with_triggers(
        non_transactional: impl IntoIterator<Item = Table>,
        auto_increment: impl IntoIterator<Item = Table>,
        triggers: impl IntoIterator<Item = Trigger>,
    ) -> Self {
        let mut tables: HashMap<Table, Unsafe> = non_transactional
            .into_iter()
            .map(|t| (t, Unsafe::Engine))
            .collect();
        let auto: HashSet<Table> = auto_increment.into_iter().collect();
        for trg in triggers {
            let on = (trg.schema.clone(), trg.table.clone());
            if tables.contains_key(&on) {
                continue;
            }
            let name = show(&(trg.schema.clone(), trg.name.clone()));
            for (schema, table) in crate::sql::table_names(&trg.body) {
                let target = (schema.unwrap_or_else(|| trg.schema.clone()), table);
                let why = if tables.get(&target) == Some(&Unsafe::Engine) {
                    Unsafe::TriggerWritesNonTransactional {
                        trigger: name.clone(),
                        target: show(&target),
                    }
                } else if auto.contains(&target) && target != on {
                    Unsafe::TriggerAutoIncrement {
                        trigger: name.clone(),
                        target: show(&target),
                    }
                } else {
                    continue;
                };
                tables.insert(on.clone(), why);
                break;
            }
        }
        NonTransactional {
            tables,
            unique_keys: HashMap::new(),
            functions: HashSet::new(),
        }
    }

    /// The same set, knowing the stored functions (schema, name).
    pub fn with_functions(mut self, functions: impl IntoIterator<Item = Table>) -> Self {
        self.functions = functions
            .into_iter()
            .map(|(s, n)| (s.to_lowercase(), n.to_lowercase()))
            .collect();
        self
    }

    /// A stored function `sql` may call, as `` `db`.`f` ``: a statement that calls one
    /// has the function's unknown effect (it may write, whatever its declared
    /// characteristics, which MariaDB does not enforce), so it is run as a write. Any
    /// name that matches counts, a column of the same name included, and an
    /// unqualified name matches a function of that name in any schema (the session's
    /// current schema is not always known here): the cost of a false match is a logged
    /// read, never a write missed.
    pub fn stored_function_in(&self, sql: &str) -> Option<String> {
        if self.functions.is_empty() {
            return None;
        }
        crate::sql::table_names(sql)
            .into_iter()
            .find_map(|(schema, name)| {
                let name = name.to_lowercase();
                match schema {
                    Some(schema) => {
                        let key = (schema.to_lowercase(), name);
                        self.functions.contains(&key).then(|| show(&key))
                    }
                    None => self.functions.iter().find(|(_, f)| *f == name).map(show),
                }
            })
    }

    /// The same set, knowing each table's unique keys.
    pub fn with_unique_keys(mut self, keys: HashMap<Table, Vec<UniqueKey>>) -> Self {
        self.unique_keys = keys;
        self
    }

    /// An `INSERT … ON DUPLICATE KEY UPDATE` whose rows may collide with two different
    /// rows through two different unique keys: its table and those keys' names.
    ///
    /// InnoDB inserts into the primary key first and checks the secondary unique keys
    /// after; when a later key collides it removes the row it had just inserted and
    /// updates the row it collided with, and it keeps no lock on the primary key value
    /// it found free. Another transaction may insert that value and commit first, so
    /// the log can hold that insert before the upsert, and every follower's replay
    /// finds the collision on the primary key and updates a different row (MariaDB
    /// marks the statement unsafe for statement-based replication for this reason).
    /// A key the statement cannot collide on is left out: one with an AUTO_INCREMENT
    /// column the statement does not set (the wp_options upsert).
    pub fn ambiguous_upsert(&self, sql: &str, db: Option<&str>) -> Option<(String, Vec<String>)> {
        if self.unique_keys.is_empty() {
            return None;
        }
        let up = crate::sql::upsert(sql)?;
        let schema = up.db.or_else(|| db.map(str::to_string))?;
        let table = (schema, up.table);
        let keys = self.unique_keys.get(&table)?;
        let sets = |col: &str| {
            up.columns
                .as_ref()
                .is_none_or(|c| c.iter().any(|x| x == col))
        };
        let colliding: Vec<String> = keys
            .iter()
            .filter(|k| k.auto_increment.as_deref().is_none_or(sets))
            .map(|k| k.name.clone())
            .collect();
        (colliding.len() >= 2).then(|| (show(&table), colliding))
    }

    /// The first refused table `sql` names, as `` `db`.`t` ``, with why, resolving
    /// unqualified names against `db` (the session's current schema).
    pub fn named_in(&self, sql: &str, db: Option<&str>) -> Option<(String, Unsafe)> {
        if self.tables.is_empty() {
            return None;
        }
        crate::sql::table_names(sql)
            .into_iter()
            .find_map(|(schema, table)| {
                let schema = schema.or_else(|| db.map(str::to_string))?;
                let key = (schema, table);
                self.tables.get(&key).map(|why| (show(&key), why.clone()))
            })
    }
}

/// The shared, refreshable set.
pub struct Catalog {
    /// How the service account connects (a standalone proxy moves it to a live member).
    opts: std::sync::Mutex<mysql_async::Opts>,
    current: RwLock<Arc<NonTransactional>>,
    /// The leader term the set was last read for (0: none yet).
    term: AtomicU64,
}

impl Catalog {
    pub fn new(opts: mysql_async::Opts) -> Self {
        Catalog {
            opts: std::sync::Mutex::new(opts),
            current: RwLock::new(Arc::default()),
            term: AtomicU64::new(0),
        }
    }

    pub fn get(&self) -> Arc<NonTransactional> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Read from another server from now on.
    pub fn set_opts(&self, opts: mysql_async::Opts) {
        *self.opts.lock().unwrap_or_else(|e| e.into_inner()) = opts;
    }

    /// Re-read the set from MariaDB.
    pub async fn refresh(&self) -> Result<(), mysql_async::Error> {
        let opts = self.opts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut conn = mysql_async::Conn::new(opts).await?;
        let rows: Vec<(String, String, String, bool)> = conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE, AUTO_INCREMENT IS NOT NULL \
                 FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'BASE TABLE' AND ENGINE IS NOT NULL \
                 AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys')",
            )
            .await?;
        let triggers: Vec<(String, String, String, String)> = conn
            .query(
                "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT \
                 FROM information_schema.TRIGGERS",
            )
            .await?;
        let key_columns: Vec<(String, String, String, String, bool)> = conn
            .query(
                "SELECT s.TABLE_SCHEMA, s.TABLE_NAME, s.INDEX_NAME, s.COLUMN_NAME, \
                 c.EXTRA LIKE '%auto_increment%' \
                 FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c \
                 ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME \
                 AND c.COLUMN_NAME = s.COLUMN_NAME \
                 WHERE s.NON_UNIQUE = 0 \
                 AND s.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
                 ORDER BY s.TABLE_SCHEMA, s.TABLE_NAME, s.INDEX_NAME <> 'PRIMARY', s.INDEX_NAME, s.SEQ_IN_INDEX",
            )
            .await?;
        let functions: Vec<(String, String)> = conn
            .query(
                "SELECT ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES \
                 WHERE ROUTINE_TYPE = 'FUNCTION'",
            )
            .await?;
        conn.disconnect().await.ok();
        let mut unique_keys: HashMap<Table, Vec<UniqueKey>> = HashMap::new();
        for (schema, table, index, column, auto) in key_columns {
            let keys = unique_keys.entry((schema, table)).or_default();
            let column = column.to_ascii_lowercase();
            if keys.last().is_none_or(|k| k.name != index) {
                keys.push(UniqueKey {
                    name: index,
                    columns: Vec::new(),
                    auto_increment: None,
                });
            }
            if let Some(key) = keys.last_mut() {
                if auto {
                    key.auto_increment = Some(column.clone());
                }
                key.columns.push(column);
            }
        }
        let mut non_transactional = Vec::new();
        let mut auto_increment = Vec::new();
        for (schema, table, engine, auto) in rows {
            if auto {
                auto_increment.push((schema.clone(), table.clone()));
            }
            if !matches!(engine.as_str(), "InnoDB" | "SEQUENCE") {
                non_transactional.push((schema, table));
            }
        }
        let triggers = triggers
            .into_iter()
            .map(|(schema, name, table, body)| Trigger {
                schema,
                name,
                table,
                body,
            });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(
            NonTransactional::with_triggers(non_transactional, auto_increment, triggers)
                .with_unique_keys(unique_keys)
                .with_functions(functions),
        );
        Ok(())
    }

    /// Refresh once per leader term: the first write of a new term waits for it.
    pub async fn refresh_for_term(&self, term: u64) -> Result<(), mysql_async::Error> {
        if self.term.load(Ordering::Acquire) == term {
            return Ok(());
        }
        self.refresh().await?;
        self.term.store(term, Ordering::Release);
        Ok(())
    }

    /// Keep the set fresh until the catalog is dropped by everyone else.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(catalog) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = catalog.refresh().await {
                    tracing::warn!(error = %e, "cannot read the table engines from MariaDB");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> NonTransactional {
        NonTransactional::new([
            ("app".to_string(), "cache".to_string()),
            ("mysql".to_string(), "global_priv".to_string()),
        ])
    }

    #[test]
    fn finds_qualified_and_unqualified_names() {
        let s = set();
        assert_eq!(
            s.named_in("INSERT INTO cache VALUES (1)", Some("app"))
                .map(|t| t.0)
                .as_deref(),
            Some("`app`.`cache`")
        );
        assert_eq!(
            s.named_in("UPDATE `app`.`cache` SET v = 1", None)
                .map(|t| t.0)
                .as_deref(),
            Some("`app`.`cache`")
        );
        assert_eq!(
            s.named_in("DELETE FROM mysql.global_priv", Some("app"))
                .map(|t| t.0)
                .as_deref(),
            Some("`mysql`.`global_priv`")
        );
    }

    #[test]
    fn ignores_other_schemas_strings_and_comments() {
        let s = set();
        assert_eq!(
            s.named_in("INSERT INTO cache VALUES (1)", Some("other")),
            None
        );
        assert_eq!(s.named_in("INSERT INTO cache VALUES (1)", None), None);
        assert_eq!(
            s.named_in("INSERT INTO t VALUES ('cache') /* cache */", Some("app")),
            None
        );
        assert_eq!(s.named_in("INSERT INTO app.t SELECT 1", Some("x")), None);
    }

    #[test]
    fn an_upsert_that_can_collide_on_two_keys_is_found() {
        let key = |name: &str, cols: &[&str], auto: Option<&str>| UniqueKey {
            name: name.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            auto_increment: auto.map(str::to_string),
        };
        let t = |name: &str| ("app".to_string(), name.to_string());
        let s = NonTransactional::default().with_unique_keys(HashMap::from([
            (
                t("kv"),
                vec![key("PRIMARY", &["k"], None), key("v", &["v"], None)],
            ),
            (
                t("options"),
                vec![
                    key("PRIMARY", &["option_id"], Some("option_id")),
                    key("option_name", &["option_name"], None),
                ],
            ),
            (t("plain"), vec![key("PRIMARY", &["id"], None)]),
        ]));
        let found = |sql: &str| s.ambiguous_upsert(sql, Some("app"));
        assert_eq!(
            found("INSERT INTO kv (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE hits = hits + 1"),
            Some(("`app`.`kv`".into(), vec!["PRIMARY".into(), "v".into()]))
        );
        // WordPress: the AUTO_INCREMENT key is not set, only option_name can collide.
        assert_eq!(
            found(
                "INSERT INTO options (option_name, option_value) VALUES ('a', 'b') \
                   ON DUPLICATE KEY UPDATE option_value = VALUES(option_value)"
            ),
            None
        );
        // Setting it, or every column, makes both keys candidates.
        assert!(found(
            "INSERT INTO options VALUES (1, 'a', 'b') ON DUPLICATE KEY UPDATE option_value = 'c'"
        )
        .is_some());
        assert!(found("INSERT INTO options (option_id, option_name) VALUES (1, 'a') ON DUPLICATE KEY UPDATE option_name = 'c'").is_some());
        assert_eq!(
            found("INSERT INTO plain VALUES (1) ON DUPLICATE KEY UPDATE id = 2"),
            None
        );
        assert_eq!(found("INSERT INTO kv (k, v) VALUES ('a', 1)"), None);
        assert_eq!(
            s.ambiguous_upsert(
                "INSERT INTO kv VALUES (1, 2, 3) ON DUPLICATE KEY UPDATE v = 1",
                Some("other")
            ),
            None
        );
    }

    #[test]
    fn triggers_make_their_table_unsafe() {
        let trg = |name: &str, table: &str, body: &str| Trigger {
            schema: "app".into(),
            name: name.into(),
            table: table.into(),
            body: body.into(),
        };
        let s = NonTransactional::with_triggers(
            [("app".to_string(), "mylog".to_string())],
            [("app".to_string(), "audit".to_string())],
            [
                trg("a", "orders", "INSERT INTO mylog VALUES (NEW.id)"),
                trg("b", "items", "INSERT INTO audit (item_id) VALUES (NEW.id)"),
                trg("c", "plain", "SET NEW.slug = LOWER(NEW.name)"),
                trg("d", "other", "INSERT INTO elsewhere.audit VALUES (1)"),
            ],
        );
        assert_eq!(
            s.named_in("INSERT INTO orders VALUES (1)", Some("app")),
            Some((
                "`app`.`orders`".into(),
                Unsafe::TriggerWritesNonTransactional {
                    trigger: "`app`.`a`".into(),
                    target: "`app`.`mylog`".into()
                }
            ))
        );
        assert!(matches!(
            s.named_in("UPDATE items SET qty = 1", Some("app")),
            Some((_, Unsafe::TriggerAutoIncrement { .. }))
        ));
        assert_eq!(
            s.named_in("INSERT INTO plain VALUES (1)", Some("app")),
            None
        );
        assert_eq!(
            s.named_in("INSERT INTO other VALUES (1)", Some("app")),
            None
        );
    }

    #[test]
    fn stored_functions_are_found_qualified_or_not() {
        let s =
            NonTransactional::default().with_functions([("App".to_string(), "Bump".to_string())]);
        assert_eq!(
            s.stored_function_in("SELECT bump()").as_deref(),
            Some("`app`.`bump`")
        );
        assert!(s.stored_function_in("SELECT app.BUMP(1)").is_some());
        assert!(s.stored_function_in("SELECT other.bump(1)").is_none());
        assert!(s.stored_function_in("SELECT 'bump()' FROM t").is_none());
        assert!(s.stored_function_in("SELECT NOW()").is_none());
        assert!(NonTransactional::default()
            .stored_function_in("SELECT bump()")
            .is_none());
    }
}
