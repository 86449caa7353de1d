//! Client authentication against the accounts of the local MariaDB.
//!
//! The proxy reads `mysql.global_priv` and `@@skip_name_resolve` with the `[database]`
//! service account and keeps them as an [`AclTable`], which picks for a client the very
//! account MariaDB would pick (see [`super::acl`]). The client's mysql_native_password
//! reply is checked against that account's hashes, which recovers `SHA1(password)` for
//! the backend login. Privileges are not checked here: the backend login as that same
//! account makes MariaDB enforce them (and [`super::backend`] makes sure the backend
//! chose the same account).
//!
//! # Reloads
//! A client whose user or host is unknown, or whose check fails, asks for a table
//! loaded after its login began, so accounts created or changed after start work
//! without a restart. Reloads are coalesced (every waiter of a wave shares one), spaced
//! at least [`MIN_RELOAD_INTERVAL`] apart, and bounded by [`RELOAD_TIMEOUT`]. The query
//! runs in a task of its own and no lock is held while it runs: a login that needs no
//! reload never waits for one, and a client that gives up does not cancel it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::sync::watch;

use super::acl::{Account, AccountName, AclTable, ClientHost};
use crate::protocol::handshake::{self, Stage1};

/// Reloads start at least this far apart.
pub const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(50);
/// A reload query that takes longer is abandoned (the old table stays).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The verdict on a client's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted as `account`; `stage1` is `SHA1(password)`, `None` for an empty password.
    Ok {
        account: AccountName,
        stage1: Option<Stage1>,
    },
    Denied,
    /// The account uses a plugin the proxy cannot check.
    Unsupported(String),
}

/// The account table, reloadable.
pub struct Accounts {
    /// How the service account connects (a standalone proxy moves it to a live member).
    opts: Mutex<mysql_async::Opts>,
    state: Arc<Mutex<State>>,
    /// Bumped after every reload attempt, successful or not.
    reloaded: watch::Sender<u64>,
}

struct State {
    table: Arc<AclTable>,
    /// When the query that produced `table` started.
    loaded_at: Instant,
    /// Start time of the reload in progress, if any.
    in_flight: Option<Instant>,
    last_start: Instant,
}

impl Accounts {
    /// Load the accounts once; fails when the service account cannot read them.
    pub async fn load(opts: mysql_async::Opts) -> Result<Self, mysql_async::Error> {
        let started = Instant::now();
        let table = fetch(&opts).await?;
        Ok(Accounts {
            opts: Mutex::new(opts),
            state: Arc::new(Mutex::new(State {
                table: Arc::new(table),
                loaded_at: started,
                in_flight: None,
                last_start: started,
            })),
            reloaded: watch::channel(0).0,
        })
    }

    /// How the service account connects (for other probes of the same server).
    pub fn service_opts(&self) -> mysql_async::Opts {
        self.opts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Load from another server from now on.
    pub fn set_service_opts(&self, opts: mysql_async::Opts) {
        *self.opts.lock().unwrap_or_else(|e| e.into_inner()) = opts;
    }

    /// Reload attempts so far.
    pub fn reloads(&self) -> u64 {
        *self.reloaded.borrow()
    }

    /// The current table.
    pub fn table(&self) -> Arc<AclTable> {
        self.lock().table.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether MariaDB would let `client` connect at all (else ERR 1130 before the
    /// greeting), reloading once if that could change the answer.
    pub async fn host_allowed(&self, client: &ClientHost) -> bool {
        let started = Instant::now();
        if self.table().host_allowed(client) {
            return true;
        }
        self.fresh_table(started).await.host_allowed(client)
    }

    /// Check a native-password reply, reloading the table once if that could help.
    pub async fn verify(
        &self,
        user: &str,
        client: &ClientHost,
        scramble: &[u8],
        reply: &[u8],
    ) -> Verdict {
        let started = Instant::now();
        let verdict = check(&self.table(), user, client, scramble, reply);
        if matches!(verdict, Verdict::Ok { .. }) {
            return verdict;
        }
        check(
            &*self.fresh_table(started).await,
            user,
            client,
            scramble,
            reply,
        )
    }

    /// A table loaded after `since`, or the current one if a reload fails.
    async fn fresh_table(&self, since: Instant) -> Arc<AclTable> {
        // At most two rounds: a reload already running may have started before `since`.
        for _ in 0..2 {
            let mut done = self.reloaded.subscribe();
            let seen = *done.borrow_and_update();
            {
                let mut st = self.lock();
                if st.loaded_at >= since {
                    return st.table.clone();
                }
                if st.in_flight.is_none() {
                    self.start_reload(&mut st);
                }
            }
            let wait = done.wait_for(|g| *g > seen);
            if tokio::time::timeout(RELOAD_TIMEOUT + MIN_RELOAD_INTERVAL, wait)
                .await
                .is_err()
            {
                break;
            }
            let st = self.lock();
            if st.loaded_at >= since {
                return st.table.clone();
            }
        }
        self.table()
    }

    /// Spawn a reload (called with the state locked, so at most one runs).
    fn start_reload(&self, st: &mut State) {
        let start = Instant::now().max(st.last_start + MIN_RELOAD_INTERVAL);
        st.in_flight = Some(start);
        st.last_start = start;
        let opts = self.service_opts();
        let state = self.state.clone();
        let reloaded = self.reloaded.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let result = tokio::time::timeout(RELOAD_TIMEOUT, fetch(&opts)).await;
            {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                st.in_flight = None;
                match result {
                    Ok(Ok(table)) => {
                        st.table = Arc::new(table);
                        st.loaded_at = start;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reloading accounts from MariaDB failed")
                    }
                    Err(_) => tracing::warn!("reloading accounts from MariaDB timed out"),
                }
            }
            reloaded.send_modify(|g| *g += 1);
        });
    }
}

/// The verdict of one table on a client's reply to `scramble`.
fn check(
    table: &AclTable,
    user: &str,
    client: &ClientHost,
    scramble: &[u8],
    reply: &[u8],
) -> Verdict {
    let Some(acc) = table.find(user, client) else {
        return Verdict::Denied;
    };
    let ok = |stage1| Verdict::Ok {
        account: acc.name(),
        stage1,
    };
    if reply.is_empty() {
        return if acc.empty_password {
            ok(None)
        } else {
            Verdict::Denied
        };
    }
    if let Some(stage1) = acc
        .native_hashes
        .iter()
        .find_map(|h| handshake::recover_stage1(scramble, reply, h))
    {
        return ok(Some(stage1));
    }
    match &acc.other_plugin {
        Some(p) if acc.native_hashes.is_empty() && !acc.empty_password => {
            Verdict::Unsupported(p.clone())
        }
        _ => Verdict::Denied,
    }
}

async fn fetch(opts: &mysql_async::Opts) -> Result<AclTable, mysql_async::Error> {
    let mut conn = mysql_async::Conn::new(opts.clone()).await?;
    let rows: Vec<(String, String, String)> = conn
        .query("SELECT User, Host, Priv FROM mysql.global_priv")
        .await?;
    let skip: Option<i64> = conn.query_first("SELECT @@skip_name_resolve").await?;
    conn.disconnect().await.ok();
    let accounts: Vec<Account> = rows
        .into_iter()
        .filter_map(|(u, h, p)| Account::from_priv(u, &h, &p))
        .collect();
    Ok(AclTable::new(accounts, skip.unwrap_or(0) != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::{new_scramble, stage2_of_password};

    #[test]
    fn verdicts() {
        let hash: String = stage2_of_password(b"pw")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let priv_json =
            format!(r#"{{"plugin":"mysql_native_password","authentication_string":"*{hash}"}}"#);
        let table = AclTable::new(
            vec![
                Account::from_priv("u".into(), "%", &priv_json).unwrap(),
                Account::from_priv("g".into(), "%", r#"{"plugin":"ed25519"}"#).unwrap(),
            ],
            true,
        );
        let client = ClientHost::new("10.0.0.1".parse().unwrap(), None);
        let s = new_scramble();
        let good =
            mysql_common::auth::plugins::mysql_native_password::scramble_native(&s, b"pw").unwrap();
        match check(&table, "u", &client, &s, &good) {
            Verdict::Ok { account, stage1 } => {
                assert_eq!(account.to_string(), "u@%");
                assert!(stage1.is_some());
            }
            other => panic!("{other:?}"),
        }
        let bad =
            mysql_common::auth::plugins::mysql_native_password::scramble_native(&s, b"no").unwrap();
        assert_eq!(check(&table, "u", &client, &s, &bad), Verdict::Denied);
        assert_eq!(check(&table, "u", &client, &s, &[]), Verdict::Denied);
        assert_eq!(check(&table, "nobody", &client, &s, &good), Verdict::Denied);
        assert_eq!(
            check(&table, "g", &client, &s, &good),
            Verdict::Unsupported("ed25519".into())
        );
    }
}
