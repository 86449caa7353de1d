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

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mysql_async::prelude::Queryable;

/// How often the set is re-read regardless of DDL (covers DDL run directly on MariaDB).
pub const REFRESH: Duration = Duration::from_secs(5);

/// The non-transactional tables of one MariaDB, as `(schema, table)`.
#[derive(Debug, Default)]
pub struct NonTransactional {
    tables: HashSet<(String, String)>,
}

impl NonTransactional {
    pub fn new(tables: impl IntoIterator<Item = (String, String)>) -> Self {
        NonTransactional {
            tables: tables.into_iter().collect(),
        }
    }

    /// The first non-transactional table `sql` names, as `` `db`.`t` ``, resolving
    /// unqualified names against `db` (the session's current schema).
    pub fn named_in(&self, sql: &str, db: Option<&str>) -> Option<String> {
        if self.tables.is_empty() {
            return None;
        }
        crate::sql::table_names(sql)
            .into_iter()
            .find_map(|(schema, table)| {
                let schema = schema.or_else(|| db.map(str::to_string))?;
                let key = (schema, table);
                self.tables
                    .contains(&key)
                    .then(|| format!("`{}`.`{}`", key.0, key.1))
            })
    }
}

/// The shared, refreshable set.
pub struct Catalog {
    opts: mysql_async::Opts,
    current: RwLock<Arc<NonTransactional>>,
    /// The leader term the set was last read for (0: none yet).
    term: AtomicU64,
}

impl Catalog {
    pub fn new(opts: mysql_async::Opts) -> Self {
        Catalog {
            opts,
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

    /// Re-read the set from MariaDB.
    pub async fn refresh(&self) -> Result<(), mysql_async::Error> {
        let mut conn = mysql_async::Conn::new(self.opts.clone()).await?;
        let rows: Vec<(String, String)> = conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'BASE TABLE' AND ENGINE IS NOT NULL \
                 AND ENGINE NOT IN ('InnoDB', 'SEQUENCE') \
                 AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys')",
            )
            .await?;
        conn.disconnect().await.ok();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(NonTransactional::new(rows));
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
                .as_deref(),
            Some("`app`.`cache`")
        );
        assert_eq!(
            s.named_in("UPDATE `app`.`cache` SET v = 1", None)
                .as_deref(),
            Some("`app`.`cache`")
        );
        assert_eq!(
            s.named_in("DELETE FROM mysql.global_priv", Some("app"))
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
}
