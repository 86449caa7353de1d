//! [`template`]: the commented `wolfscale.toml` that `wolfscale init` writes.

/// A complete `wolfscale.toml` for node `node_id`: every key with its default and a comment
/// giving its meaning and bounds. Optional keys without a default are present but commented
/// out. `database.user` is set to `wolfscale`, a placeholder to replace.
///
/// The result passes validation without warnings when `node_id` is in 1..=1023; the id is
/// written as given, so an out-of-range one is reported when the file is loaded.
pub fn template(node_id: u16) -> String {
    TEMPLATE.replace("{node_id}", &node_id.to_string())
}

const TEMPLATE: &str = r#"# wolfscale.toml: configuration of one WolfScale node.
#
# Every key is shown with its default value. Commented-out keys are optional
# and have no default. Relative paths are resolved against the directory that
# contains this file. Check the file with `wolfscale validate`.

[node]
# This node's id, unique in the cluster: 1..=1023 (it is the 10-bit node
# field of Snowflake ids). Required.
id = {node_id}
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
# How long applied segments are kept, in hours: 1..=87600. Default 168 (a week).
retention_hours = 168
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
# Bearer token the API requires. Optional, no default, not empty when set.
# token = "change-me"

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
"#;
