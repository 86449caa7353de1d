//! A minimal raw MySQL client for feeding the proxy bytes no real driver would send.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wolfscale::protocol::handshake::{ServerGreeting, NATIVE_PASSWORD};
use wolfscale::protocol::packet::{encode_packet, peek_header, HEADER};
use wolfscale::protocol::response::{Expect, Scanner};

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The greeting's scramble, once logged in (COM_CHANGE_USER answers it again).
    pub scramble: Vec<u8>,
}

/// What the peer did next.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A packet: (sequence id, payload).
    Packet(u8, Vec<u8>),
    Closed,
    Timeout,
}

impl Reply {
    /// The error code if this is an ERR packet.
    pub fn err_code(&self) -> Option<u16> {
        match self {
            Reply::Packet(_, p) if p.first() == Some(&0xFF) && p.len() >= 3 => {
                Some(u16::from_le_bytes([p[1], p[2]]))
            }
            _ => None,
        }
    }
}

/// A server's verdict on a login or a statement: `(code, message)` of its ERR.
pub type ServerErr = (u16, String);

impl Raw {
    pub async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
            scramble: vec![],
        }
    }

    /// Connect from a chosen local address (any 127.x.y.z works on Linux loopback).
    pub async fn connect_from(port: u16, source: std::net::IpAddr) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .expect("bind source address");
        let stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
            scramble: vec![],
        }
    }

    /// Log in from `source`; the server's ERR (code and message) if it refuses, also
    /// when it refuses in place of its greeting.
    pub async fn try_login_from(
        port: u16,
        source: std::net::IpAddr,
        user: &str,
        pass: &str,
    ) -> Result<Raw, ServerErr> {
        let mut raw = Raw::connect_from(port, source).await;
        let greeting = match raw.read(Duration::from_secs(10)).await {
            Reply::Packet(0, g) if g.first() == Some(&0xFF) => return Err(err_of(&g)),
            Reply::Packet(0, g) => g,
            other => panic!("no greeting: {other:?}"),
        };
        let g = ServerGreeting::parse(&greeting).expect("greeting");
        raw.send(1, &handshake_response(&g.scramble, user, pass, 0))
            .await;
        raw.scramble = g.scramble;
        match raw.read(Duration::from_secs(10)).await {
            Reply::Packet(_, ok) if ok.first() == Some(&0) => Ok(raw),
            Reply::Packet(_, err) if err.first() == Some(&0xFF) => Err(err_of(&err)),
            other => panic!("login: unexpected {other:?}"),
        }
    }

    /// COM_CHANGE_USER with a native-password answer to the session's scramble.
    pub async fn change_user(&mut self, user: &str, pass: &str) -> Result<(), ServerErr> {
        let answer = |scramble: &[u8]| {
            mysql_common::auth::plugins::mysql_native_password::scramble_native(
                scramble,
                pass.as_bytes(),
            )
            .map(|r| r.to_vec())
            .unwrap_or_default()
        };
        let reply = answer(&self.scramble);
        let mut p = vec![0x11];
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        p.push(reply.len() as u8);
        p.extend_from_slice(&reply);
        p.push(0); // no database
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(NATIVE_PASSWORD.as_bytes());
        p.push(0);
        self.send(0, &p).await;
        loop {
            match self.read(Duration::from_secs(10)).await {
                Reply::Packet(_, ok) if ok.first() == Some(&0) => return Ok(()),
                Reply::Packet(_, err) if err.first() == Some(&0xFF) => return Err(err_of(&err)),
                Reply::Packet(seq, switch) if switch.first() == Some(&0xFE) => {
                    let (_, scramble) =
                        wolfscale::protocol::handshake::parse_auth_switch(&switch).expect("switch");
                    self.send(seq.wrapping_add(1), &answer(&scramble)).await;
                }
                other => panic!("change user: unexpected {other:?}"),
            }
        }
    }

    /// Run a text query: its rows as text (NULL as `None`), or its ERR.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ServerErr> {
        let payload = [&[0x03][..], sql.as_bytes()].concat();
        let reply = self.exchange(&payload, Some(Expect::Query)).await;
        let first = &reply.first().expect("a reply").1;
        match first.first() {
            Some(0xFF) => return Err(err_of(first)),
            Some(0x00) => return Ok(vec![]),
            _ => {}
        }
        let columns = first[0] as usize;
        let mut rows = Vec::new();
        for (_, p) in &reply[columns + 2..] {
            if p.first() == Some(&0xFE) && p.len() < 9 {
                break;
            }
            if p.first() == Some(&0xFF) {
                return Err(err_of(p));
            }
            let mut r = wolfscale::protocol::packet::Reader::new(p);
            let row = (0..columns)
                .map(|_| {
                    if r.remaining().first() == Some(&0xFB) {
                        r.u8();
                        None
                    } else {
                        r.lenenc_bytes()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                    }
                })
                .collect();
            rows.push(row);
        }
        Ok(rows)
    }

    pub async fn read(&mut self, timeout: Duration) -> Reply {
        let fut = async {
            loop {
                if let Some((len, seq)) = peek_header(&self.buf) {
                    if self.buf.len() >= HEADER + len {
                        let p = self.buf.split_to(HEADER + len);
                        return Reply::Packet(seq, p[HEADER..].to_vec());
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return Reply::Closed,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Reply::Timeout)
    }

    pub async fn send(&mut self, seq: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_packet(&mut out, seq, payload);
        self.write(&out).await;
    }

    /// Write bytes; a peer that already hung up is not an error here.
    pub async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Complete a native-password login. Panics if it fails.
    pub async fn login(port: u16, user: &str, pass: &str) -> Raw {
        Self::login_with(port, user, pass, 0).await
    }

    /// Log in announcing MariaDB extended capabilities `ext` (e.g. 0x4, bulk operations).
    pub async fn login_with(port: u16, user: &str, pass: &str, ext: u32) -> Raw {
        let mut raw = Raw::connect(port).await;
        let Reply::Packet(0, greeting) = raw.read(Duration::from_secs(5)).await else {
            panic!("no greeting");
        };
        let g = ServerGreeting::parse(&greeting).expect("greeting");
        raw.send(1, &handshake_response(&g.scramble, user, pass, ext))
            .await;
        raw.scramble = g.scramble;
        match raw.read(Duration::from_secs(5)).await {
            Reply::Packet(2, ok) if ok.first() == Some(&0) => raw,
            other => panic!("login failed: {other:?}"),
        }
    }
}

/// `(code, message)` of an ERR payload.
pub fn err_of(p: &[u8]) -> ServerErr {
    let code = u16::from_le_bytes([p[1], p[2]]);
    let text = if p.get(3) == Some(&b'#') {
        &p[9..]
    } else {
        &p[3..]
    };
    (code, String::from_utf8_lossy(text).into_owned())
}

/// A HandshakeResponse41 for a native-password login (multi-statements and multi-results
/// on, protocol 4.1, MariaDB extended capabilities `ext`).
pub fn handshake_response(scramble: &[u8], user: &str, pass: &str, ext: u32) -> Vec<u8> {
    let reply = mysql_common::auth::plugins::mysql_native_password::scramble_native(
        scramble,
        pass.as_bytes(),
    )
    .map(|r| r.to_vec())
    .unwrap_or_default();
    // PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, MULTI_STATEMENTS, MULTI_RESULTS,
    // LOCAL_FILES.
    let caps: u32 =
        0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0001_0000 | 0x0002_0000 | 0x0000_0080;
    let mut p = Vec::new();
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 19]);
    p.extend_from_slice(&ext.to_le_bytes());
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(reply.len() as u8);
    p.extend_from_slice(&reply);
    p.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    p.push(0);
    p
}

impl Raw {
    /// Send a command (seq 0) and collect its reply packets, up to where the reply
    /// scanner says it ends (`None`: a command with no reply).
    pub async fn exchange(&mut self, payload: &[u8], expect: Option<Expect>) -> Vec<(u8, Vec<u8>)> {
        self.send(0, payload).await;
        let mut out = Vec::new();
        let Some(expect) = expect else {
            return out;
        };
        let mut scanner = Scanner::new(expect);
        while !scanner.is_done() {
            match self.read(Duration::from_secs(10)).await {
                Reply::Packet(seq, p) => {
                    let mut framed = BytesMut::new();
                    encode_packet(&mut framed, seq, &p);
                    scanner.scan(&framed).expect("scannable reply");
                    out.push((seq, p));
                }
                other => panic!("reply cut short: {other:?} after {out:?}"),
            }
        }
        out
    }
}
