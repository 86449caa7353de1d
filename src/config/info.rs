//! `wolfscale info`: the configuration a node runs with (every key, defaults filled
//! in), as TOML, with each secret shown only as set or not.

use toml::{Table, Value};

use super::{Config, Secret};

/// What stands for a secret that is set.
pub const REDACTED: &str = "<redacted>";

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn text(s: impl ToString) -> Value {
    Value::String(s.to_string())
}

fn secret(s: Option<&Secret>) -> Option<Value> {
    s.map(|_| text(REDACTED))
}

fn put(t: &mut Table, key: &str, v: impl Into<Option<Value>>) {
    if let Some(v) = v.into() {
        t.insert(key.to_string(), v);
    }
}

/// The effective configuration as TOML. Optional keys that are not set are left out.
pub fn render(cfg: &Config) -> String {
    let mut node = Table::new();
    put(&mut node, "id", text(&cfg.node.id));
    put(&mut node, "number", int(cfg.node.number));
    put(&mut node, "priority", int(cfg.node.priority));
    put(&mut node, "bind_address", text(cfg.node.bind_address));
    put(
        &mut node,
        "advertise_address",
        text(&cfg.node.advertise_address),
    );
    put(&mut node, "data_dir", text(cfg.node.data_dir.display()));

    let d = &cfg.database;
    let mut database = Table::new();
    put(&mut database, "host", text(&d.host));
    put(&mut database, "port", int(d.port));
    put(&mut database, "user", text(&d.user));
    put(&mut database, "password", text(REDACTED));
    put(&mut database, "database", d.database.as_ref().map(text));
    put(
        &mut database,
        "socket",
        d.socket.as_ref().map(|p| text(p.display())),
    );
    put(&mut database, "pool_size", int(d.pool_size));
    put(
        &mut database,
        "follower_innodb_flush",
        d.follower_innodb_flush.map(int),
    );

    let w = &cfg.wal;
    let mut wal = Table::new();
    put(&mut wal, "batch_size", int(w.batch_size));
    put(&mut wal, "flush_interval_ms", int(w.flush_interval_ms));
    put(&mut wal, "compression", Value::Boolean(w.compression));
    put(&mut wal, "segment_size_mb", int(w.segment_size_mb));
    put(&mut wal, "retention_hours", int(w.retention_hours));
    put(&mut wal, "snapshot_entries", int(w.snapshot_entries));
    put(&mut wal, "fsync", Value::Boolean(w.fsync));

    let c = &cfg.cluster;
    let mut cluster = Table::new();
    put(&mut cluster, "bootstrap", Value::Boolean(c.bootstrap));
    put(
        &mut cluster,
        "peers",
        Value::Array(c.peers.iter().map(text).collect()),
    );
    put(
        &mut cluster,
        "heartbeat_interval_ms",
        int(c.heartbeat_interval_ms),
    );
    put(
        &mut cluster,
        "election_timeout_min_ms",
        int(c.election_timeout_min_ms),
    );
    put(
        &mut cluster,
        "election_timeout_max_ms",
        int(c.election_timeout_max_ms),
    );
    put(
        &mut cluster,
        "disable_auto_election",
        Value::Boolean(c.disable_auto_election),
    );
    put(&mut cluster, "secret", secret(c.secret.as_ref()));

    let a = &cfg.api;
    let mut api = Table::new();
    put(&mut api, "enabled", Value::Boolean(a.enabled));
    put(&mut api, "bind_address", text(a.bind_address));
    put(&mut api, "token", secret(a.token.as_ref()));
    put(&mut api, "max_body_bytes", int(a.max_body_bytes));
    put(&mut api, "id_column", a.id_column.as_ref().map(text));
    put(&mut api, "user", a.user.as_ref().map(text));
    put(&mut api, "password", secret(a.password.as_ref()));

    let p = &cfg.proxy;
    let mut proxy = Table::new();
    put(&mut proxy, "enabled", Value::Boolean(p.enabled));
    put(&mut proxy, "bind_address", text(p.bind_address));
    put(&mut proxy, "max_connections", int(p.max_connections));
    put(
        &mut proxy,
        "tls_cert",
        p.tls_cert.as_ref().map(|x| text(x.display())),
    );
    put(
        &mut proxy,
        "tls_key",
        p.tls_key.as_ref().map(|x| text(x.display())),
    );
    put(
        &mut proxy,
        "handshake_timeout_ms",
        int(p.handshake_timeout_ms),
    );
    put(&mut proxy, "max_allowed_packet", int(p.max_allowed_packet));
    put(
        &mut proxy,
        "shutdown_timeout_ms",
        int(p.shutdown_timeout_ms),
    );
    put(
        &mut proxy,
        "client_buffer_limit_mb",
        int(p.client_buffer_limit_mb),
    );
    put(
        &mut proxy,
        "net_read_timeout_ms",
        int(p.net_read_timeout_ms),
    );
    put(
        &mut proxy,
        "refuse_weak_isolation",
        Value::Boolean(p.refuse_weak_isolation),
    );
    put(
        &mut proxy,
        "read_consistency",
        text(p.read_consistency.name()),
    );
    put(&mut proxy, "read_wait_ms", int(p.read_wait_ms));
    put(&mut proxy, "failover_wait_ms", int(p.failover_wait_ms));

    let mut all = Table::new();
    for (name, section) in [
        ("node", node),
        ("database", database),
        ("wal", wal),
        ("cluster", cluster),
        ("api", api),
        ("proxy", proxy),
    ] {
        all.insert(name.into(), Value::Table(section));
    }
    toml::to_string(&all).unwrap_or_default()
}

/// Settings that work but expose more than they should: `wolfscale validate` and
/// `start` say so.
pub fn exposure_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.api.enabled && cfg.api.token.is_none() && !cfg.api.bind_address.ip().is_loopback() {
        out.push(format!(
            "{}: api.bind_address = \"{}\" serves beyond this host with no [api] token: anyone who \
             can reach it reads the cluster's status and metrics, and the write, query and admin \
             endpoints accept only clients on this host until a token is set",
            cfg.source.display(),
            cfg.api.bind_address
        ));
    }
    out
}
