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

impl Raw {
    pub async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
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
        let reply = mysql_common::auth::plugins::mysql_native_password::scramble_native(
            &g.scramble,
            pass.as_bytes(),
        )
        .map(|r| r.to_vec())
        .unwrap_or_default();
        let caps: u32 = 0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0001_0000 | 0x0002_0000;
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
        raw.send(1, &p).await;
        match raw.read(Duration::from_secs(5)).await {
            Reply::Packet(2, ok) if ok.first() == Some(&0) => raw,
            other => panic!("login failed: {other:?}"),
        }
    }
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
