//! [`template`]: the commented `wolfscale.toml` that `wolfscale init` writes.

/// A complete `wolfscale.toml` for the node named `node_id`: every key with its default and
/// a comment giving its meaning and bounds. Optional keys without a default, and keys that
/// are alternatives to others, are present but commented out. `database.user` is set to
/// `wolfscale`, a placeholder to replace.
///
/// The id is written as a TOML string exactly as given (quoted and escaped), so the result
/// passes validation without warnings when `node_id` is a valid id
/// ([`super::validate_node_id`]), and an invalid one is reported, at `node.id`, when the file
/// is loaded. The commented-out `number` shows the number derived from the id
/// ([`super::derive_node_number`]).
pub fn template(node_id: &str) -> String {
    let quoted = toml::Value::String(node_id.to_owned()).to_string();
    TEMPLATE
        .replace(
            "{node_number}",
            &super::derive_node_number(node_id).to_string(),
        )
        .replace("{node_id}", &quoted)
}

const TEMPLATE: &str = r#"# wolfscale.toml: configuration of one WolfScale node.
#
# Every key is shown with its default value. Commented-out keys are optional:
# they have no fixed default, or they stand in for other keys, as their
# comments say. Relative paths are resolved against the directory that
# contains this file. Check the file with `wolfscale validate`.

[node]
# This node's name, unique in the cluster, such as "node-1" or "db-dc1-001":
# 1 to 64 characters, each a letter (A-Z, a-z), digit, ".", "_" or "-".
# Required.
id = {node_id}
# This node's number, 0..=1023, unique in the cluster: it goes into the
# Snowflake ids and connection ids this node makes (and will be its Raft
# node id).
# Default: taken from the id. An id ending in digits gets that number modulo
# 1024 ("node-1" is 1, "db-dc1-002" is 2); any other id gets a fixed hash of
# itself (CRC-32C modulo 1024, the same in every version). Set it when two
# ids would get the same number.
# number = {node_number}
# How much this node is preferred as leader, 0..=100: the leader hands
# leadership to the healthy, caught-up voter with the highest priority (the
# first id in natural order among equals); 0 is never preferred. Default 50.
# priority = 50
# Where the cluster (Raft) listener binds, as IP:port. Default "0.0.0.0:7654".
bind_address = "0.0.0.0:7654"
# How the other nodes reach this one, as host:port (IPv6 as [addr]:port), not
# a wildcard address. Required when cluster.peers is not empty; otherwise
# defaults to "127.0.0.1:<port of bind_address>".
advertise_address = "127.0.0.1:7654"
# WAL segments and node state. Default "./data".
data_dir = "./data"

[database]
# The local MariaDB server. Default "127.0.0.1".
host = "127.0.0.1"
# 1..=65535. Default 3306.
port = 3306
# Account WolfScale uses on MariaDB. Required: replace this placeholder.
user = "wolfscale"
# Its password. Default "" (empty).
password = ""
# Default database of that account. Optional, no default. Which databases are
# replicated does not depend on it.
# database = "app"
# The MariaDB Unix socket, an absolute path. Optional, no default. When set,
# WolfScale connects through it instead of host/port (faster than TCP).
# socket = "/run/mysqld/mysqld.sock"
# Connections to the local MariaDB: 1..=1024. Default 8.
pool_size = 8
# innodb_flush_log_at_trx_commit WolfScale sets on this MariaDB while the node is a
# follower: 1 or 2. Optional; unset leaves the setting alone. 2 skips the fsync of
# each replayed commit (the fsynced log restores what an OS crash takes); the
# leader is then always set to 1.
# follower_innodb_flush = 2

[wal]
# Most log entries written under one fsync: 1..=100000. Default 1000.
batch_size = 1000
# Longest a group keeps gathering appends that are already queued, in ms:
# 0..=10000. The writer never sleeps waiting for more. Default 2.
flush_interval_ms = 2
# lz4-compress log batches. Default true.
compression = true
# Size of a log segment file in MiB: 1..=4096. Default 64.
segment_size_mb = 64
# How long log segments a snapshot covers are kept, in hours: 0..=87600.
# Default 168 (a week).
retention_hours = 168
# Build a snapshot (a logical dump of the local MariaDB) every N applied entries;
# the log below it may then be purged. 0 never builds one. Default 100000.
snapshot_entries = 100000
# fdatasync every batch. Default true. With false, an acknowledged write can
# be lost if a majority of nodes loses power at once.
fsync = true

[cluster]
# Create a new cluster with this node as its first member. Default false.
# Prefer passing `--bootstrap` once on the command line: left in this file, a
# node restarted with an empty data_dir would start a second cluster.
bootstrap = false
# The other nodes' advertise addresses, as "host:port". Not this node's own
# address. Default [] (a single node).
peers = []
# Leader heartbeat in ms: 1..=60000, less than election_timeout_min_ms.
# Default 500.
heartbeat_interval_ms = 500
# The election timeout is random between min and max, in ms: 1..=600000 each,
# min less than max. Defaults 1500 and 3000.
election_timeout_min_ms = 1500
election_timeout_max_ms = 3000
# Shorthand for the two keys above: election_timeout_ms = N means min N and
# max 2N, N in 1..=300000. Use either it or the min/max keys, not both.
# election_timeout_ms = 1500
# Never start an election on its own; leadership changes only through
# wolfctl. Default false.
disable_auto_election = false
# Shared secret that authenticates cluster traffic; the same on every node.
# Optional, no default, not empty when set.
# secret = "change-me"

[api]
# Serve the HTTP API. Default true.
enabled = true
# IP:port. Default "0.0.0.0:8080".
bind_address = "0.0.0.0:8080"
# Bearer token the write, query and admin endpoints require. Optional, no default,
# not empty when set. Without one, those endpoints accept only clients on this host.
# token = "change-me"
# Largest request body in bytes; a larger one gets 413. Default 1048576, 1024..=67108864.
max_body_bytes = 1048576
# Column POST /write/insert fills with a Snowflake id when the table has it and the
# request gives no value. Optional, no default.
# id_column = "id"
# MariaDB account the write and query endpoints run as. Optional; default the service
# account (database.user). A least-privileged account is better when others hold the token.
# user = "api"
# password = "change-me"

[proxy]
# Serve the MySQL protocol. Default true.
enabled = true
# IP:port. Default "0.0.0.0:8007".
bind_address = "0.0.0.0:8007"
# Client connections at once: 1..=100000. Default 1000.
max_connections = 1000
# PEM certificate chain and private key; setting both enables TLS. Optional,
# no default; both or neither, and the files must exist.
# tls_cert = "tls/server.crt"
# tls_key = "tls/server.key"
# A client that has not finished the handshake by then is dropped, in ms:
# 100..=600000. Default 10000.
handshake_timeout_ms = 10000
# Largest packet accepted from a client, in bytes: 1024..=1073741824.
# Default 16777216 (16 MiB).
max_allowed_packet = 16777216
# On SIGTERM, how long in-flight statements get to finish, in ms:
# 0..=3600000. Default 10000.
shutdown_timeout_ms = 10000
# Memory for client packets over 64 KiB, shared by all sessions, in MiB; a
# packet that does not fit waits for others (then ERR 1041): 1..=1048576, at
# least twice max_allowed_packet. Default 256.
client_buffer_limit_mb = 256
# A client that stalls in the middle of a packet (or of LOAD DATA LOCAL file
# contents) for this long is dropped with ERR 1159, in ms: 100..=3600000.
# Default 30000 (MariaDB's net_read_timeout).
net_read_timeout_ms = 30000
# Cluster writes run at REPEATABLE READ (statement replay needs its locks); a
# session at READ COMMITTED gets its write transactions raised, with a warning.
# true refuses them instead (ERR 1235). Default false.
refuse_weak_isolation = false
# Which reads a follower serves from its own MariaDB: local (whatever its lag),
# session (after the session's own last write is applied here), fresh (once
# everything the leader committed is applied here) or linearizable (the leader
# confirms its commit index with a majority first). Otherwise the read runs on
# the leader. Per session: SET @@session.wolfscale_read_consistency = 'fresh'.
# Default session.
read_consistency = "session"
# How long such a read waits for this node's applier before it goes to the
# leader, in ms: 0..=60000. Default 1000.
read_wait_ms = 1000
# How long a statement that needs the leader is held while there is none (an
# election, a partition), before it fails with a retryable error (1290), in ms:
# 0..=600000. Default 5000.
failover_wait_ms = 5000
"#;
