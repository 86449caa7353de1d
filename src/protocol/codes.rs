//! Server-generated packets: ERR and OK payloads, and the MariaDB error codes the proxy
//! itself emits. Codes and SQLSTATEs match what MariaDB 10.11 sends for the same cause,
//! so client libraries and ORMs map them to the exceptions they already know.

use bytes::BufMut;

use super::packet::put_lenenc;

/// A MariaDB error: code, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    pub state: &'static str,
    pub message: String,
}

impl ServerError {
    pub fn new(code: u16, state: &'static str, message: impl Into<String>) -> Self {
        ServerError {
            code,
            state,
            message: message.into(),
        }
    }

    /// ERR packet payload: `0xFF | code u16 | '#' | sqlstate[5] | message`.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.message.len());
        out.put_u8(0xFF);
        out.put_u16_le(self.code);
        out.put_u8(b'#');
        out.put_slice(&self.state.as_bytes()[..5.min(self.state.len())]);
        out.put_slice(self.message.as_bytes());
        out
    }

    /// ERR payload without the SQLSTATE marker, for errors sent in place of the
    /// greeting (before the client could announce protocol 4.1).
    pub fn payload_pre_handshake(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.message.len());
        out.put_u8(0xFF);
        out.put_u16_le(self.code);
        out.put_slice(self.message.as_bytes());
        out
    }

    pub fn access_denied(user: &str, host: &str, using_password: bool) -> Self {
        let using = if using_password { "YES" } else { "NO" };
        Self::new(
            ER_ACCESS_DENIED_ERROR,
            "28000",
            format!("Access denied for user '{user}'@'{host}' (using password: {using})"),
        )
    }

    pub fn too_many_connections() -> Self {
        Self::new(ER_CON_COUNT_ERROR, "08004", "Too many connections")
    }

    pub fn bad_handshake() -> Self {
        Self::new(ER_HANDSHAKE_ERROR, "08S01", "Bad handshake")
    }

    pub fn out_of_order() -> Self {
        Self::new(
            ER_NET_PACKETS_OUT_OF_ORDER,
            "08S01",
            "Got packets out of order",
        )
    }

    pub fn packet_too_large() -> Self {
        Self::new(
            ER_NET_PACKET_TOO_LARGE,
            "08S01",
            "Got a packet bigger than 'max_allowed_packet' bytes",
        )
    }

    pub fn unknown_command() -> Self {
        Self::new(ER_UNKNOWN_COM_ERROR, "08S01", "Unknown command")
    }

    pub fn malformed(what: &str) -> Self {
        Self::new(
            ER_MALFORMED_PACKET,
            "HY000",
            format!("Malformed communication packet ({what})"),
        )
    }

    pub fn unknown_thread(id: u64) -> Self {
        Self::new(
            ER_NO_SUCH_THREAD,
            "HY000",
            format!("Unknown thread id: {id}"),
        )
    }

    pub fn backend_unavailable(detail: &str) -> Self {
        Self::new(
            ER_CONNECTION_ERROR,
            "HY000",
            format!("WolfScale: cannot reach the local MariaDB: {detail}"),
        )
    }

    pub fn server_shutdown() -> Self {
        Self::new(ER_SERVER_SHUTDOWN, "08S01", "Server shutdown in progress")
    }

    pub fn plugin_unsupported(plugin: &str) -> Self {
        Self::new(
            ER_PLUGIN_IS_NOT_LOADED,
            "HY000",
            format!(
                "Plugin '{plugin}' is not supported by the WolfScale proxy; \
                 use mysql_native_password for accounts that connect through it"
            ),
        )
    }
}

impl ServerError {
    /// Sent in place of the greeting to a host no account matches (MariaDB's wording).
    pub fn host_not_allowed(host: &str) -> Self {
        Self::new(
            ER_HOST_NOT_PRIVILEGED,
            "HY000",
            format!("Host '{host}' is not allowed to connect to this MariaDB server"),
        )
    }

    pub fn read_timeout() -> Self {
        Self::new(
            ER_NET_READ_INTERRUPTED,
            "08S01",
            "Got timeout reading communication packets",
        )
    }

    pub fn out_of_memory() -> Self {
        Self::new(
            ER_OUT_OF_RESOURCES,
            "HY000",
            "Out of memory: the proxy's memory for large client packets \
             ([proxy] client_buffer_limit_mb) stayed in use by other sessions",
        )
    }

    /// A KILL the proxy cannot rewrite to the right backend thread.
    pub fn kill_not_mappable(why: &str) -> Self {
        Self::new(
            ER_NOT_SUPPORTED_YET,
            "42000",
            format!("WolfScale cannot pass this KILL on: {why}; send KILL [CONNECTION|QUERY] <id> as a statement of its own"),
        )
    }

    /// The backend connection went away mid-command.
    pub fn lost_backend(during: &str) -> Self {
        Self::new(
            CR_SERVER_LOST,
            "HY000",
            format!("Lost connection to the local MariaDB {during}"),
        )
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ERROR {} ({}): {}", self.code, self.state, self.message)
    }
}

/// OK packet payload (protocol 4.1 form, no session-state info).
pub fn ok_payload(affected: u64, insert_id: u64, status: u16, warnings: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(11);
    out.put_u8(0x00);
    put_lenenc(&mut out, affected);
    put_lenenc(&mut out, insert_id);
    out.put_u16_le(status);
    out.put_u16_le(warnings);
    out
}

pub const ER_CON_COUNT_ERROR: u16 = 1040;
pub const ER_OUT_OF_RESOURCES: u16 = 1041;
pub const ER_HANDSHAKE_ERROR: u16 = 1043;
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
pub const ER_SERVER_SHUTDOWN: u16 = 1053;
pub const ER_NO_SUCH_THREAD: u16 = 1094;
pub const ER_HOST_NOT_PRIVILEGED: u16 = 1130;
pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
pub const ER_NET_PACKETS_OUT_OF_ORDER: u16 = 1156;
pub const ER_NET_READ_INTERRUPTED: u16 = 1159;
pub const ER_NOT_SUPPORTED_YET: u16 = 1235;
pub const ER_PLUGIN_IS_NOT_LOADED: u16 = 1524;
pub const ER_MALFORMED_PACKET: u16 = 1835;
pub const ER_CONNECTION_ERROR: u16 = 2002;
pub const CR_SERVER_LOST: u16 = 2013;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_payload_layout() {
        let p = ServerError::access_denied("bob", "localhost", true).payload();
        assert_eq!(p[0], 0xFF);
        assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1045);
        assert_eq!(&p[3..9], b"#28000");
        assert!(p.ends_with(b"(using password: YES)"));
    }
}
