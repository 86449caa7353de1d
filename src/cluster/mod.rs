//! The cluster: Raft (openraft, behind this module only) over the WAL, the peer
//! network, and the state machine over the applier.
//!
//! ```text
//!  proxy (leader) ── Cluster::propose ──▶ openraft ── append ──▶ log_store ──▶ wal
//!                                            │  └── AppendEntries ──▶ network ──▶ peers
//!                                            └── committed entries ──▶ state_machine
//!                                                                      └──▶ apply (MariaDB)
//! ```
//!
//! - [`node`]: start-up (bootstrap, resume), the [`Cluster`] handle, proposals.
//! - [`types`]: openraft's type configuration and the [`Member`] record.
//! - [`leadership`]: the election timer, database health, handing leadership over,
//!   the preferred leader.
//! - [`log_store`]: openraft's log storage over [`crate::wal`].
//! - [`state_machine`]: openraft's state machine over [`crate::apply`].
//! - [`network`]: Raft RPCs over the transport, client and server.
//! - [`requests`]: request ids, which make a forwarded autocommit write safe to send
//!   again after a failover.
//! - [`status`]: node and member statuses from Raft progress and heartbeats.
//! - [`transport`]: TCP connections between peers, length-prefixed frames, and the
//!   mutual challenge-response handshake on the shared `[cluster] secret` that every
//!   connection passes before it can carry a single frame. It moves opaque bytes and
//!   knows nothing about Raft.
pub mod leadership;
pub mod log_store;
pub mod network;
pub mod node;
pub mod remote;
pub mod requests;
pub mod snapshot;
pub mod state_machine;
pub mod status;
pub mod transport;
pub mod types;

pub use node::{AdminError, Cluster, ClusterError, ClusterSettings, Proposal, ProposeError};
pub use types::{Member, NodeId};
