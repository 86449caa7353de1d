//! A fault-injecting TCP relay for the test harness: it listens on one address and
//! pipes each connection to a target, and a test can, at any moment, hold the replies
//! (the target's bytes stay in the kernel's buffers), cut every connection (both
//! sides see it closed, and new ones are closed at once), or cut only the connections
//! that come from given source addresses (a one-way partition between two nodes that
//! dial from their own loopback addresses).

#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Requests pass; replies wait.
    HoldReplies,
    /// Requests are read but not passed on (lost if the connection is cut).
    HoldRequests,
    /// Every connection is closed, and new ones at once.
    Cut,
}

pub struct Relay {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Source IPs whose connections are cut (whatever the mode).
    blocked: Arc<Mutex<HashSet<IpAddr>>>,
    /// Bumped when `blocked` changes, so live connections check again.
    epoch: watch::Sender<u64>,
    /// Connections being relayed now.
    live: Arc<std::sync::atomic::AtomicUsize>,
    /// Request bytes read and held (`HoldRequests`), in total.
    held: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relay from `listener` (already bound) to `target`.
    pub fn start(listener: std::net::TcpListener, target: SocketAddr) -> Relay {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("relay address");
        let (mode, _) = watch::channel(Mode::Pass);
        let (epoch, _) = watch::channel(0u64);
        let blocked: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
        let live: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let held: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let task = {
            let held = held.clone();
            let mode = mode.clone();
            let epoch = epoch.clone();
            let blocked = blocked.clone();
            let live = live.clone();
            tokio::spawn(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let Ok((client, peer)) = listener.accept().await else {
                        return;
                    };
                    let cut =
                        *mode.borrow() == Mode::Cut || blocked.lock().unwrap().contains(&peer.ip());
                    if cut {
                        drop(client);
                        continue;
                    }
                    let mode = mode.subscribe();
                    let epoch = epoch.subscribe();
                    let blocked = blocked.clone();
                    let live = live.clone();
                    let held = held.clone();
                    live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(target).await {
                            let watch = Watch {
                                source: peer.ip(),
                                mode,
                                epoch,
                                blocked,
                                held,
                            };
                            pipe(client, server, watch).await;
                        }
                        live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    });
                }
            })
        };
        Relay {
            addr,
            mode,
            blocked,
            epoch,
            live,
            held,
            task,
        }
    }

    /// Request bytes held so far (`HoldRequests`).
    pub fn held_bytes(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections being relayed now.
    pub fn live(&self) -> usize {
        self.live.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until no connection is being relayed (after a cut, all are closed).
    pub async fn wait_idle(&self) {
        while self.live() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A relay on a free port of 127.0.0.1 to `target`.
    pub fn to(target: SocketAddr) -> Relay {
        Relay::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), target)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Cut (or let through again) connections from `ip`.
    pub fn block(&self, ip: IpAddr, blocked: bool) {
        {
            let mut set = self.blocked.lock().unwrap();
            if blocked {
                set.insert(ip);
            } else {
                set.remove(&ip);
            }
        }
        self.epoch.send_modify(|e| *e += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        self.task.abort();
    }
}

struct Watch {
    source: IpAddr,
    mode: watch::Receiver<Mode>,
    epoch: watch::Receiver<u64>,
    blocked: Arc<Mutex<HashSet<IpAddr>>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
}

async fn pipe(client: TcpStream, server: TcpStream, mut w: Watch) {
    client.set_nodelay(true).ok();
    server.set_nodelay(true).ok();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let current = *w.mode.borrow_and_update();
        w.epoch.borrow_and_update();
        if current == Mode::Cut || w.blocked.lock().unwrap().contains(&w.source) {
            return;
        }
        let replies = current != Mode::HoldReplies;
        let holding = current == Mode::HoldRequests;
        if !holding && !pending.is_empty() {
            if sw.write_all(&pending).await.is_err() {
                return;
            }
            pending.clear();
        }
        tokio::select! {
            _ = w.mode.changed() => {}
            _ = w.epoch.changed() => {}
            n = cr.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) if holding => {
                    pending.extend_from_slice(&up[..n]);
                    w.held.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(n) => if sw.write_all(&up[..n]).await.is_err() { return },
            },
            n = sr.read(&mut down), if replies => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&down[..n]).await.is_err() { return },
            },
        }
    }
}
