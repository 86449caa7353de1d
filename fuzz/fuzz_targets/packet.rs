//! Every decoder of bytes that arrive from a client or a server: packet framing, the
//! client's handshake response, a server greeting, auth switch, COM_CHANGE_USER, the
//! reply scanner in every mode, KILL parsing and the account JSON.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mysql_common::constants::CapabilityFlags;
use wolfscale::protocol::handshake::{self, ChangeUserRequest, ClientHello, ServerGreeting};
use wolfscale::protocol::packet::try_take_packet;
use wolfscale::protocol::response::{Expect, Scanner};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = try_take_packet(&mut buf, 1 << 20) {
        let _ = ClientHello::parse(&p.payload);
        let _ = handshake::is_ssl_request(&p.payload);
        let _ = Expect::execute(&p.payload);
    }
    let _ = ClientHello::parse(data);
    let _ = ServerGreeting::parse(data);
    let _ = handshake::parse_auth_switch(data);
    for caps in [CapabilityFlags::empty(), CapabilityFlags::CLIENT_SECURE_CONNECTION] {
        let _ = ChangeUserRequest::parse(data, caps);
    }
    for expect in [
        Expect::Query,
        Expect::Execute { cursor: false },
        Expect::Execute { cursor: true },
        Expect::Prepare,
        Expect::Fetch,
        Expect::FieldList,
        Expect::Single,
    ] {
        let mut s = Scanner::new(expect);
        let mut rest = data;
        // Feed in two uneven pieces, as reads would.
        let cut = rest.len() / 3;
        if let Ok((n, _)) = s.scan(&rest[..cut]) {
            rest = &rest[n..];
            let _ = s.scan(rest);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wolfscale::proxy::registry::parse_kill(text);
        let _ = wolfscale::proxy::auth::Account::from_priv("u".into(), "%".into(), text);
    }
});
