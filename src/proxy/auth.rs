//! Client authentication against the accounts of the local MariaDB.
//!
//! The proxy reads `mysql.global_priv` with the `[database]` service account and keeps,
//! per `user@host`, the mysql_native_password hashes it may check a client's scramble
//! against. A client whose user is unknown, or whose check fails, triggers a reload
//! unless the table was already reloaded after that login began, so accounts created
//! or changed after start work without a restart, and a burst of failed logins costs
//! one reload, not one each. Privileges are not checked here: the backend login as the
//! same user makes MariaDB enforce them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_common::serde_json::{self, Value};
use tokio::sync::{Mutex, RwLock};

use crate::protocol::handshake::{self, NATIVE_PASSWORD};

/// One row of `mysql.global_priv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub host: String,
    /// Accepted `SHA1(SHA1(password))` values (several with `auth_or` chains).
    pub native_hashes: Vec<[u8; 20]>,
    /// An empty password is accepted.
    pub empty_password: bool,
    /// The plugin when it is not one the proxy can check.
    pub other_plugin: Option<String>,
}

impl Account {
    /// Parse from `User`, `Host` and the `Priv` JSON document.
    pub fn from_priv(user: String, host: String, privs: &str) -> Option<Self> {
        let doc: Value = serde_json::from_str(privs).ok()?;
        if doc.get("is_role").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        let mut acc = Account {
            user,
            host,
            native_hashes: vec![],
            empty_password: false,
            other_plugin: None,
        };
        acc.add_method(&doc);
        if let Some(Value::Array(alts)) = doc.get("auth_or") {
            // An empty object in the chain stands for the top-level method, added above.
            for m in alts
                .iter()
                .filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
            {
                acc.add_method(m);
            }
        }
        Some(acc)
    }

    fn add_method(&mut self, m: &Value) {
        // Accounts created by old-style GRANTs carry no plugin: native password.
        let plugin = m
            .get("plugin")
            .and_then(Value::as_str)
            .unwrap_or(NATIVE_PASSWORD);
        let auth = m
            .get("authentication_string")
            .and_then(Value::as_str)
            .unwrap_or("");
        match plugin {
            NATIVE_PASSWORD if auth.is_empty() => self.empty_password = true,
            // A hash that does not parse ("invalid") admits no password at all.
            NATIVE_PASSWORD => self
                .native_hashes
                .extend(handshake::parse_native_hash(auth)),
            // Over TCP, MariaDB itself denies socket-peer logins with a plain ERR 1045.
            "unix_socket" => {}
            other => {
                self.other_plugin.get_or_insert_with(|| other.to_string());
            }
        }
    }
}

/// How well a host pattern matches; lower sorts first (MariaDB's ordering: exact names
/// and addresses before patterns, `%` last).
fn host_rank(pattern: &str) -> u8 {
    match pattern {
        "%" => 2,
        p if p.contains('%') || p.contains('_') => 1,
        _ => 0,
    }
}

/// Whether a `mysql.global_priv` host pattern matches a client address.
pub fn host_matches(pattern: &str, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if pattern.eq_ignore_ascii_case("localhost") {
        return ip.is_loopback();
    }
    if let Some((net, mask)) = pattern.split_once('/') {
        return match (net.parse::<IpAddr>(), mask.parse::<IpAddr>(), ip) {
            (Ok(IpAddr::V4(n)), Ok(IpAddr::V4(m)), IpAddr::V4(a)) => {
                u32::from(a) & u32::from(m) == u32::from(n)
            }
            _ => false,
        };
    }
    like(pattern.as_bytes(), ip.to_string().as_bytes())
}

/// SQL LIKE with `%` and `_`, case-insensitive.
fn like(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'%', rest)) => (0..=s.len()).any(|i| like(rest, &s[i..])),
        Some((b'_', rest)) => !s.is_empty() && like(rest, &s[1..]),
        Some((c, rest)) => {
            s.first().is_some_and(|d| d.eq_ignore_ascii_case(c)) && like(rest, &s[1..])
        }
    }
}

/// The verdict on a client's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted; `Some(stage1)` for a password, `None` for an empty one.
    Ok(Option<[u8; 20]>),
    Denied,
    /// The account uses a plugin the proxy cannot check.
    Unsupported(String),
}

/// The account table, reloadable.
pub struct Accounts {
    opts: mysql_async::Opts,
    table: RwLock<Arc<Vec<Account>>>,
    loaded_at: Mutex<Instant>,
}

impl Accounts {
    /// Load the accounts once; fails when the service account cannot read them.
    pub async fn load(opts: mysql_async::Opts) -> Result<Self, mysql_async::Error> {
        let table = fetch(&opts).await?;
        Ok(Accounts {
            opts,
            table: RwLock::new(Arc::new(table)),
            loaded_at: Mutex::new(Instant::now()),
        })
    }

    /// Check a native-password reply, reloading the table once if that could help.
    pub async fn verify(&self, user: &str, ip: IpAddr, scramble: &[u8], reply: &[u8]) -> Verdict {
        let started = Instant::now();
        let verdict = self.check(user, ip, scramble, reply).await;
        if matches!(verdict, Verdict::Ok(_)) || !self.reload_if_older(started).await {
            return verdict;
        }
        self.check(user, ip, scramble, reply).await
    }

    async fn check(&self, user: &str, ip: IpAddr, scramble: &[u8], reply: &[u8]) -> Verdict {
        let table = self.table.read().await.clone();
        let Some(acc) = best_match(&table, user, ip) else {
            return Verdict::Denied;
        };
        if reply.is_empty() {
            return if acc.empty_password {
                Verdict::Ok(None)
            } else {
                Verdict::Denied
            };
        }
        for h in &acc.native_hashes {
            if let Some(stage1) = handshake::recover_stage1(scramble, reply, h) {
                return Verdict::Ok(Some(stage1));
            }
        }
        match &acc.other_plugin {
            Some(p) if acc.native_hashes.is_empty() && !acc.empty_password => {
                Verdict::Unsupported(p.clone())
            }
            _ => Verdict::Denied,
        }
    }

    /// Reload unless the table was loaded at or after `since`. Returns whether the
    /// table is now newer than `since`.
    async fn reload_if_older(&self, since: Instant) -> bool {
        let mut loaded_at = self.loaded_at.lock().await;
        if *loaded_at >= since {
            return true;
        }
        let now = Instant::now();
        match fetch(&self.opts).await {
            Ok(t) => {
                *self.table.write().await = Arc::new(t);
                *loaded_at = now;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "reloading accounts from MariaDB failed");
                false
            }
        }
    }
}

fn best_match<'a>(table: &'a [Account], user: &str, ip: IpAddr) -> Option<&'a Account> {
    table
        .iter()
        .filter(|a| a.user == user && host_matches(&a.host, ip))
        .min_by_key(|a| host_rank(&a.host))
}

async fn fetch(opts: &mysql_async::Opts) -> Result<Vec<Account>, mysql_async::Error> {
    let mut conn = mysql_async::Conn::new(opts.clone()).await?;
    let rows: Vec<(String, String, String)> = conn
        .query("SELECT User, Host, Priv FROM mysql.global_priv")
        .await?;
    conn.disconnect().await.ok();
    Ok(rows
        .into_iter()
        .filter_map(|(u, h, p)| Account::from_priv(u, h, &p))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_native_and_auth_or() {
        let a = Account::from_priv(
            "app".into(),
            "%".into(),
            r#"{"access":0,"plugin":"mysql_native_password","authentication_string":"*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9"}"#,
        )
        .unwrap();
        assert_eq!(a.native_hashes.len(), 1);
        let root = Account::from_priv(
            "root".into(),
            "localhost".into(),
            r#"{"access":1,"plugin":"mysql_native_password","authentication_string":"invalid","auth_or":[{},{"plugin":"unix_socket"}]}"#,
        )
        .unwrap();
        assert!(root.native_hashes.is_empty());
        assert!(!root.empty_password);
        let legacy =
            Account::from_priv("root".into(), "127.0.0.1".into(), r#"{"access":1}"#).unwrap();
        assert!(legacy.empty_password);
        let role = Account::from_priv("r".into(), "".into(), r#"{"is_role":true}"#);
        assert!(role.is_none());
        let empty = Account::from_priv(
            "e".into(),
            "%".into(),
            r#"{"plugin":"mysql_native_password","authentication_string":""}"#,
        )
        .unwrap();
        assert!(empty.empty_password);
        assert!(Account::from_priv("x".into(), "%".into(), "not json").is_none());
    }

    #[test]
    fn host_patterns() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let ten: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(host_matches("localhost", lo));
        assert!(!host_matches("localhost", ten));
        assert!(host_matches("%", ten));
        assert!(host_matches("10.1.%", ten));
        assert!(!host_matches("10.2.%", ten));
        assert!(host_matches("10.1.2._", ten));
        assert!(host_matches("10.1.0.0/255.255.0.0", ten));
        assert!(host_matches(
            "127.0.0.1",
            "::ffff:127.0.0.1".parse().unwrap()
        ));
    }

    #[test]
    fn exact_host_beats_wildcard() {
        let mk = |h: &str| Account {
            user: "u".into(),
            host: h.into(),
            native_hashes: vec![],
            empty_password: false,
            other_plugin: None,
        };
        let table = vec![mk("%"), mk("127.0.0.1"), mk("127.%")];
        let m = best_match(&table, "u", "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(m.host, "127.0.0.1");
    }
}
