//! The MySQL/MariaDB wire protocol, as far as the proxy needs it.
//!
//! This module knows bytes, not policy: it frames packets ([`packet`]), builds and
//! parses the connection phase ([`handshake`]), emits the proxy's own OK/ERR packets
//! ([`codes`]) and finds where a server's reply ends ([`response`]). Routing, sessions
//! and authentication decisions live in `proxy`. Packet codecs for the handshake come
//! from `mysql_common`; the hot path (command in, reply out) only looks at headers and
//! first bytes, so result sets are forwarded exactly as the server wrote them.

pub mod codes;
pub mod handshake;
pub mod packet;
pub mod params;
pub mod response;

pub use codes::ServerError;
pub use packet::{Packet, PacketConn, ProtoError};
pub use response::execute_requests_cursor;

/// Command bytes (first payload byte of a client command packet).
pub mod command {
    pub const COM_SLEEP: u8 = 0x00;
    pub const COM_QUIT: u8 = 0x01;
    pub const COM_INIT_DB: u8 = 0x02;
    pub const COM_QUERY: u8 = 0x03;
    pub const COM_FIELD_LIST: u8 = 0x04;
    pub const COM_CREATE_DB: u8 = 0x05;
    pub const COM_DROP_DB: u8 = 0x06;
    pub const COM_REFRESH: u8 = 0x07;
    pub const COM_SHUTDOWN: u8 = 0x08;
    pub const COM_STATISTICS: u8 = 0x09;
    pub const COM_PROCESS_INFO: u8 = 0x0A;
    pub const COM_PROCESS_KILL: u8 = 0x0C;
    pub const COM_DEBUG: u8 = 0x0D;
    pub const COM_PING: u8 = 0x0E;
    pub const COM_CHANGE_USER: u8 = 0x11;
    pub const COM_STMT_PREPARE: u8 = 0x16;
    pub const COM_STMT_EXECUTE: u8 = 0x17;
    pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const COM_STMT_CLOSE: u8 = 0x19;
    pub const COM_STMT_RESET: u8 = 0x1A;
    pub const COM_SET_OPTION: u8 = 0x1B;
    pub const COM_STMT_FETCH: u8 = 0x1C;
    pub const COM_RESET_CONNECTION: u8 = 0x1F;
    pub const COM_STMT_BULK_EXECUTE: u8 = 0xFA;
}
