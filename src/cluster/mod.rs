//! Cluster traffic between WolfScale nodes: how nodes find, authenticate and talk to
//! each other on the cluster port (7654).
//!
//! - [`transport`]: TCP connections between peers, length-prefixed frames, and the
//!   mutual challenge-response handshake on the shared `[cluster] secret` that every
//!   connection passes before it can carry a single frame. It moves opaque bytes and
//!   knows nothing about Raft.
pub mod transport;
