//! MariaDB's choice of account, reproduced: which `user@host` row of
//! `mysql.global_priv` a client connecting directly would be logged in as.
//!
//! MariaDB (10.11, `sql_acl.cc`) keeps the accounts sorted by user name, then by how
//! specific the host pattern is, then by host text in reverse byte order, and picks for
//! a client the first account of its user name whose host matches, unless an
//! *anonymous* account (empty user name) with a strictly more specific host also
//! matches. This module does the same, so that the proxy checks a client's password
//! against the very account MariaDB would, and names it the way MariaDB does:
//!
//! * **Specificity** of a host pattern: a pattern without wildcards (a name, an IP, or
//!   an IPv4 `address/netmask`) ranks highest; a pattern with wildcards ranks by the
//!   position of its first `%` (or of its last `_` before that): the later, the more
//!   specific; `%` alone ranks 1. An empty host means `%`.
//! * **Matching**: `address/netmask` compares the client's IPv4 address under the mask;
//!   otherwise the pattern is matched (`%`, `_`, `\` escapes) case-insensitively against
//!   the client's host *name*, when it has one, and case-sensitively against its IP text.
//! * **Host names**: with `skip_name_resolve = OFF` a client has a name: `localhost`
//!   for 127.0.0.1 and ::1 (not for other loopback addresses), else the reverse-DNS name
//!   confirmed by a forward lookup (see [`super::hostname`]). With it ON, only the IP
//!   takes part, so `localhost` accounts are never chosen over TCP.
//!
//! The rules were checked against a live MariaDB 10.11 (`tests/accounts.rs` compares the
//! proxy's choice with MariaDB's for every account and client address of its matrix).

use std::net::IpAddr;

use mysql_common::serde_json::{self, Value};

use crate::protocol::handshake::{self, NATIVE_PASSWORD};

/// How the client appears to MariaDB: its address, and its host name when MariaDB
/// would resolve one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHost {
    /// IPv4-mapped IPv6 addresses are reduced to IPv4, as MariaDB shows them.
    pub ip: IpAddr,
    pub name: Option<String>,
}

impl ClientHost {
    pub fn new(ip: IpAddr, name: Option<String>) -> Self {
        ClientHost {
            ip: canonical_ip(ip),
            name,
        }
    }

    /// The host MariaDB names in its messages (`'user'@'<this>'`): the name if the
    /// client has one, else the address.
    pub fn shown(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.ip.to_string())
    }
}

/// An IPv4-mapped IPv6 address as plain IPv4; anything else unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A `Host` value of `mysql.global_priv`, prepared for matching and sorting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// As stored (this is what `CURRENT_USER()` shows).
    pub text: String,
    /// `address/netmask` (IPv4 only, as in MariaDB).
    mask: Option<(u32, u32)>,
    /// MariaDB's specificity rank (see the module doc); higher sorts first.
    rank: u8,
}

impl HostPattern {
    pub fn new(text: &str) -> Self {
        // An empty host is historical shorthand for '%'.
        let effective = if text.is_empty() { "%" } else { text };
        HostPattern {
            text: text.to_string(),
            mask: parse_netmask(effective),
            rank: specificity(effective),
        }
    }

    fn effective(&self) -> &str {
        if self.text.is_empty() {
            "%"
        } else {
            &self.text
        }
    }

    /// Whether a client matches this host pattern.
    pub fn matches(&self, client: &ClientHost) -> bool {
        if let Some((net, mask)) = self.mask {
            if let IpAddr::V4(v4) = client.ip {
                return u32::from(v4) & mask == net;
            }
        }
        let pattern = self.effective().as_bytes();
        client
            .name
            .as_deref()
            .is_some_and(|n| wild_match(n.as_bytes(), pattern, true))
            || wild_match(client.ip.to_string().as_bytes(), pattern, false)
    }
}

/// MariaDB's specificity of a host (or user) string: 128 without wildcards, else the
/// 1-based position of the first `%`, or of the last `_` before it, capped at 127; 0
/// for an empty string.
fn specificity(s: &str) -> u8 {
    let b = s.as_bytes();
    let mut chars = 0u8;
    let mut wild_pos = 0usize;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
        } else if b[i] == b'%' || b[i] == b'_' {
            wild_pos = i + 1;
            if b[i] == b'%' {
                break;
            }
        }
        chars = 128;
        i += 1;
    }
    if wild_pos > 0 {
        wild_pos.min(127) as u8
    } else {
        chars
    }
}

/// `a.b.c.d/m.m.m.m` as (address, mask), when both halves are dotted IPv4.
fn parse_netmask(s: &str) -> Option<(u32, u32)> {
    let (net, mask) = s.split_once('/')?;
    let dotted = |p: &str| -> Option<u32> {
        let parts: Vec<&str> = p.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        parts.iter().try_fold(0u32, |acc, part| {
            if part.is_empty() || part.len() > 3 || !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let v: u32 = part.parse().ok()?;
            (v <= 255).then_some(acc << 8 | v)
        })
    };
    Some((dotted(net)?, dotted(mask)?))
}

/// SQL wildcard match: `%` any run, `_` one character, `\` escapes the next one.
fn wild_match(s: &[u8], p: &[u8], case_insensitive: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if case_insensitive {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    // Iterative with one backtrack point for the last '%': linear in practice.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'%') => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            Some(b'_') => {
                si += 1;
                pi += 1;
                continue;
            }
            Some(&c) => {
                let (lit, width) = if c == b'\\' && pi + 1 < p.len() {
                    (p[pi + 1], 2)
                } else {
                    (c, 1)
                };
                if eq(s[si], lit) {
                    si += 1;
                    pi += width;
                    continue;
                }
            }
            None => {}
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'%')
}

/// One account: a row of `mysql.global_priv` that can log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Empty for an anonymous account.
    pub user: String,
    pub host: HostPattern,
    /// Accepted `SHA1(SHA1(password))` values (several with `auth_or` chains).
    pub native_hashes: Vec<[u8; 20]>,
    /// An empty password is accepted.
    pub empty_password: bool,
    /// The plugin when it is not one the proxy can check.
    pub other_plugin: Option<String>,
}

impl Account {
    /// Parse from `User`, `Host` and the `Priv` JSON document; roles give `None`.
    pub fn from_priv(user: String, host: &str, privs: &str) -> Option<Self> {
        let doc: Value = serde_json::from_str(privs).ok()?;
        if doc.get("is_role").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        let mut acc = Account {
            user,
            host: HostPattern::new(host),
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

    /// `user@host`, the form `CURRENT_USER()` returns.
    pub fn name(&self) -> AccountName {
        AccountName {
            user: self.user.clone(),
            host: self.host.text.clone(),
        }
    }

    /// The sort key of the whole entry, user part included (anonymous users rank
    /// below named ones on the same host).
    fn sort(&self) -> u16 {
        (self.host.rank as u16) << 8 | specificity(&self.user) as u16
    }
}

/// An account's identity, as `CURRENT_USER()` shows it (`user@host`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountName {
    pub user: String,
    pub host: String,
}

impl std::fmt::Display for AccountName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

/// The accounts in MariaDB's order, and whether MariaDB resolves client host names.
#[derive(Debug, Clone, Default)]
pub struct AclTable {
    accounts: Vec<Account>,
    /// `@@skip_name_resolve` of the server the table came from.
    pub skip_name_resolve: bool,
}

impl AclTable {
    pub fn new(mut accounts: Vec<Account>, skip_name_resolve: bool) -> Self {
        accounts.sort_by(|a, b| {
            a.user
                .as_bytes()
                .cmp(b.user.as_bytes())
                .then(b.sort().cmp(&a.sort()))
                .then(b.host.text.as_bytes().cmp(a.host.text.as_bytes()))
        });
        AclTable {
            accounts,
            skip_name_resolve,
        }
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The account MariaDB would log `user` in as, connecting from `client`.
    pub fn find(&self, user: &str, client: &ClientHost) -> Option<&Account> {
        let named = if user.is_empty() {
            None
        } else {
            self.accounts
                .iter()
                .filter(|a| a.user == user)
                .find(|a| a.host.matches(client))
        };
        // Anonymous accounts sort first (empty name); one wins only with a strictly
        // more specific host than the named match.
        let anonymous = self
            .accounts
            .iter()
            .take_while(|a| a.user.is_empty())
            .take_while(|a| named.is_none_or(|n| a.sort() > n.sort()))
            .find(|a| a.host.matches(client));
        anonymous.or(named)
    }

    /// Whether any account's host matches the client: MariaDB refuses other hosts with
    /// ERR 1130 before its greeting.
    pub fn host_allowed(&self, client: &ClientHost) -> bool {
        self.accounts.iter().any(|a| a.host.matches(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(user: &str, host: &str) -> Account {
        Account {
            user: user.into(),
            host: HostPattern::new(host),
            native_hashes: vec![],
            empty_password: true,
            other_plugin: None,
        }
    }

    fn client(ip: &str, name: Option<&str>) -> ClientHost {
        ClientHost::new(ip.parse().unwrap(), name.map(String::from))
    }

    fn pick(table: &AclTable, user: &str, c: &ClientHost) -> Option<String> {
        table.find(user, c).map(|a| a.name().to_string())
    }

    #[test]
    fn parses_native_and_auth_or() {
        let a = Account::from_priv(
            "app".into(),
            "%",
            r#"{"access":0,"plugin":"mysql_native_password","authentication_string":"*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9"}"#,
        )
        .unwrap();
        assert_eq!(a.native_hashes.len(), 1);
        let root = Account::from_priv(
            "root".into(),
            "localhost",
            r#"{"access":1,"plugin":"mysql_native_password","authentication_string":"invalid","auth_or":[{},{"plugin":"unix_socket"}]}"#,
        )
        .unwrap();
        assert!(root.native_hashes.is_empty());
        assert!(!root.empty_password);
        let legacy = Account::from_priv("root".into(), "127.0.0.1", r#"{"access":1}"#).unwrap();
        assert!(legacy.empty_password);
        assert!(Account::from_priv("r".into(), "", r#"{"is_role":true}"#).is_none());
        assert!(Account::from_priv("x".into(), "%", "not json").is_none());
    }

    #[test]
    fn specificity_follows_mariadb() {
        assert_eq!(specificity("localhost"), 128);
        assert_eq!(specificity("10.0.0.0/255.0.0.0"), 128);
        assert_eq!(specificity("%"), 1);
        assert_eq!(specificity("10.%"), 4);
        assert_eq!(specificity("10.0.0._"), 8);
        // The last '_' before the first '%' counts.
        assert_eq!(specificity("1_._.%"), 6);
        assert_eq!(specificity("a\\%b"), 128);
        assert_eq!(specificity(""), 0);
    }

    #[test]
    fn wildcards_and_escapes() {
        assert!(wild_match(b"10.1.2.3", b"10.1.%", false));
        assert!(wild_match(b"10.1.2.3", b"10.1.2._", false));
        assert!(!wild_match(b"10.1.2.34", b"10.1.2._", false));
        assert!(wild_match(b"db-1.example", b"DB-%", true));
        assert!(!wild_match(b"db-1.example", b"DB-%", false));
        assert!(wild_match(b"a%b", b"a\\%b", false));
        assert!(!wild_match(b"axb", b"a\\%b", false));
        assert!(wild_match(b"", b"%", false));
        assert!(wild_match(b"abcabd", b"%abd", false));
        assert!(!wild_match(b"abc", b"", false));
    }

    #[test]
    fn netmask_hosts() {
        let p = HostPattern::new("10.1.0.0/255.255.0.0");
        assert!(p.matches(&client("10.1.200.3", None)));
        assert!(!p.matches(&client("10.2.0.1", None)));
        // The address must already be masked: MariaDB compares it as written.
        let unmasked = HostPattern::new("10.1.0.1/255.255.0.0");
        assert!(!unmasked.matches(&client("10.1.0.1", None)));
        assert!(HostPattern::new("127.0.0.1").matches(&client("::ffff:127.0.0.1", None)));
    }

    #[test]
    fn localhost_needs_a_resolved_name() {
        let t = AclTable::new(vec![acc("u", "localhost"), acc("u", "%")], false);
        assert_eq!(
            pick(&t, "u", &client("127.0.0.1", Some("localhost"))).as_deref(),
            Some("u@localhost")
        );
        // skip_name_resolve: no name, so 'localhost' cannot match over TCP.
        assert_eq!(
            pick(&t, "u", &client("127.0.0.1", None)).as_deref(),
            Some("u@%")
        );
    }

    /// The cases observed on MariaDB 10.11 (skip_name_resolve OFF, clients from
    /// 127.0.0.1, which resolves to localhost, and 127.0.0.2, which has no name).
    #[test]
    fn observed_mariadb_choices() {
        let t = AclTable::new(
            vec![
                acc("u", "localhost"),
                acc("u", "127.0.0.1"),
                acc("u", "%"),
                acc("u", "127.%"),
                acc("u", "127.0.0.0/255.255.255.0"),
                acc("u", "127.0.0._"),
                acc("", "localhost"),
                acc("", "%"),
                acc("", "127.0.0.2"),
                acc("", "127.0.%"),
                acc("v", "%"),
                acc("v", "127.0.0.%"),
                acc("x", "127.0.0.0/255.0.0.0"),
                acc("x", "127.%"),
            ],
            false,
        );
        let one = client("127.0.0.1", Some("localhost"));
        let two = client("127.0.0.2", None);
        let one_nr = client("127.0.0.1", None);
        assert_eq!(pick(&t, "u", &one).as_deref(), Some("u@localhost"));
        assert_eq!(
            pick(&t, "u", &two).as_deref(),
            Some("u@127.0.0.0/255.255.255.0")
        );
        assert_eq!(pick(&t, "u", &one_nr).as_deref(), Some("u@127.0.0.1"));
        assert_eq!(pick(&t, "v", &one).as_deref(), Some("@localhost"));
        assert_eq!(pick(&t, "v", &two).as_deref(), Some("@127.0.0.2"));
        assert_eq!(pick(&t, "v", &one_nr).as_deref(), Some("v@127.0.0.%"));
        assert_eq!(pick(&t, "w", &one_nr).as_deref(), Some("@127.0.%"));
        assert_eq!(
            pick(&t, "x", &two).as_deref(),
            Some("x@127.0.0.0/255.0.0.0")
        );
        // An anonymous account on an equally specific host loses to the named one.
        let t = AclTable::new(vec![acc("", "%"), acc("y", "%")], true);
        assert_eq!(pick(&t, "y", &two).as_deref(), Some("y@%"));
        assert_eq!(pick(&t, "z", &two).as_deref(), Some("@%"));
    }

    #[test]
    fn host_allowed_checks_every_account() {
        let t = AclTable::new(vec![acc("u", "10.%")], true);
        assert!(t.host_allowed(&client("10.0.0.1", None)));
        assert!(!t.host_allowed(&client("127.0.0.1", None)));
    }
}
