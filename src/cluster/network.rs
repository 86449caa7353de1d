//! Raft RPCs over the peer transport.
//!
//! A request is one frame `postcard(Request)`, its answer one frame `postcard(Response)`.
//! Each openraft network client keeps one authenticated connection to its target and
//! sends one request at a time on it (openraft sends one append at a time per
//! follower); the server answers the requests of each connection in order. A
//! connection that fails is dropped and opened again on the next request, so a peer
//! that restarts is reached again without anything else noticing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::SnapshotOf;
use openraft::OptionalSend;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::state_machine::{Dump, StateMachine};
use super::transport::{self, PeerConn, PeerIdentity, TransportError};
use super::types::{Member, NodeId, Raft, TypeConfig, Vote};
use crate::apply::schema::ReplaySettings;

/// How long opening a connection (TCP and handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Serialize, Deserialize)]
pub enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// The MariaDB settings replay depends on, to compare nodes.
    Settings,
    /// Add the sender (as the handshake named it) to the cluster, as a learner first.
    Join,
    /// Hand leadership to the sender (an operator's `promote` on it).
    Promote,
    /// A piece of the leader's snapshot, in order; the last one installs it.
    Snapshot {
        vote: Vote,
        meta: super::snapshot::Meta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    /// What this node knows of the cluster, for a standalone proxy (see
    /// [`super::remote`]).
    View,
}

#[derive(Serialize, Deserialize)]
pub enum Response {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Settings(ReplaySettings),
    /// The receiver could not handle it (its Raft stopped, or the request is not for
    /// it).
    Failed(String),
    /// The sender is (now) a member: a learner until it has caught up.
    Joined,
    /// Ask the leader, at this cluster address.
    Redirect(String),
    /// Done as asked.
    Done,
    /// The snapshot is installed.
    Snapshot(SnapshotResponse<TypeConfig>),
    View(NodeView),
}

/// One node's view of the cluster, as it answers [`Request::View`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The answering node's number.
    pub number: u16,
    pub term: u64,
    /// The leader's number, as this node knows it.
    pub leader: Option<u64>,
    /// This node is that leader.
    pub leading: bool,
    /// The highest index this node knows committed.
    pub committed: u64,
    /// The last index applied to this node's MariaDB.
    pub applied: u64,
    /// Its MariaDB passes the health check, replay has not diverged or stalled, and no
    /// snapshot is being installed: it may serve reads.
    pub healthy: bool,
    /// The members by number.
    pub members: Vec<(u64, Member)>,
}

/// Who this node is and how it proves it, for both directions of the transport.
#[derive(Clone)]
pub struct PeerAuth {
    pub me: PeerIdentity,
    pub secret: Arc<Vec<u8>>,
    /// This node's MariaDB settings, for peers that compare.
    pub settings: Arc<ReplaySettings>,
    /// When this node last heard from a leader, for its election timer.
    pub contact: Arc<Contact>,
    /// When this node last accepted an append (a heartbeat included) from a leader:
    /// whether it still hears one, for `fresh` reads.
    pub leader_heard: Arc<Contact>,
    /// Whether this node may lead now (a leadership transfer to it is refused if not).
    pub fitness: Arc<super::leadership::Fitness>,
    /// The address peer connections are made from: `[node] bind_address`'s, unless
    /// that is the unspecified address.
    pub source: Option<std::net::IpAddr>,
    /// Where snapshots streamed to this node are received.
    pub snapshots: super::snapshot::Snapshots,
    /// Set while a snapshot is being installed here.
    pub installing: Arc<std::sync::atomic::AtomicBool>,
}

/// When this node last accepted an append from a leader or granted a vote: what its
/// election timer (see `node::campaign`) counts from.
pub struct Contact {
    at: std::sync::Mutex<tokio::time::Instant>,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            at: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl Contact {
    pub fn touch(&self) {
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
    }

    pub fn elapsed(&self) -> Duration {
        self.at.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

/// openraft's network factory: one [`PeerClient`] per target.
pub struct Network {
    pub auth: PeerAuth,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: node.cluster_addr.clone(),
            auth: self.auth.clone(),
            conn: None,
        }
    }
}

/// A connection to one peer, opened on first use and after a failure.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    auth: PeerAuth,
    conn: Option<PeerConn>,
}

impl PeerClient {
    async fn call(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, RPCError<TypeConfig>> {
        let body =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if self.conn.is_none() {
            let (conn, peer) = transport::connect(
                &self.addr,
                self.auth.source,
                &self.auth.secret,
                &self.auth.me,
                CONNECT_TIMEOUT.min(timeout.max(Duration::from_millis(200))),
            )
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            if u64::from(peer.number) != self.target {
                let e = TransportError::BadHandshake(format!(
                    "{} answered as node {} ({}), expected node {}",
                    self.addr, peer.number, peer.node_id, self.target
                ));
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            self.auth.fitness.note_priority(peer.number, peer.priority);
            // Neither its appends' acknowledgements nor its votes may count for a
            // member it is not (a replaced data directory).
            if let Some(raft) = self.auth.fitness.raft.get() {
                if let Err(reason) = check_peer(raft, &self.auth.me, &peer) {
                    tracing::warn!(peer = %self.addr, %reason, "not talking to a peer");
                    let e = TransportError::BadHandshake(reason);
                    return Err(RPCError::Unreachable(Unreachable::new(&e)));
                }
            }
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("just opened");
        let exchange = async {
            conn.write_frame(&body).await?;
            conn.read_frame().await
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => {
                self.conn = None;
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Err(_) => {
                // The answer may still arrive: the connection cannot be reused.
                self.conn = None;
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "RPC timed out");
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let response: Response = postcard::from_bytes(&answer).map_err(|e| {
            self.conn = None;
            RPCError::Network(NetworkError::new(&e))
        })?;
        if let Response::Failed(reason) = &response {
            let e = std::io::Error::other(reason.clone());
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        Ok(response)
    }
}

/// Bytes of a snapshot per frame.
const SNAPSHOT_CHUNK: usize = 4 << 20;
/// How long the receiver may take to load a snapshot and answer.
const SNAPSHOT_INSTALL_TIMEOUT: Duration = Duration::from_secs(3600);

fn unexpected() -> RPCError<TypeConfig> {
    let e = std::io::Error::other("peer answered with the wrong kind of response");
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Dump;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Request::Append(rpc), option.hard_ttl()).await? {
            Response::Append(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await? {
            Response::Vote(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Request::PreVote(rpc), option.hard_ttl()).await? {
            Response::Vote(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// The dump is sent in [`SNAPSHOT_CHUNK`] pieces, each answered; the last one is
    /// answered once the receiver has installed it (loading a dump takes a while, so
    /// that answer may take up to [`SNAPSHOT_INSTALL_TIMEOUT`]).
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, Dump>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        use tokio::io::AsyncReadExt;
        let storage = |e: std::io::Error| StreamingError::Unreachable(Unreachable::new(&e));
        let mut file = tokio::fs::File::open(&snapshot.snapshot.path)
            .await
            .map_err(storage)?;
        let len = file.metadata().await.map_err(storage)?.len();
        tracing::info!(
            target = self.target,
            bytes = len,
            snapshot = %super::snapshot::name(&snapshot.meta),
            "sending a snapshot to a node behind the purged log"
        );
        tokio::pin!(cancel);
        let mut offset = 0u64;
        loop {
            let mut data = Vec::with_capacity(SNAPSHOT_CHUNK);
            (&mut file)
                .take(SNAPSHOT_CHUNK as u64)
                .read_to_end(&mut data)
                .await
                .map_err(storage)?;
            let done = offset + data.len() as u64 >= len;
            let sent = data.len() as u64;
            let req = Request::Snapshot {
                vote,
                meta: snapshot.meta.clone(),
                offset,
                data,
                done,
            };
            let ttl = if done {
                SNAPSHOT_INSTALL_TIMEOUT
            } else {
                option.hard_ttl().max(Duration::from_secs(10))
            };
            let answer = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                r = self.call(&req, ttl) => r?,
            };
            match answer {
                Response::Snapshot(r) if done => return Ok(r),
                Response::Done if !done => offset += sent,
                Response::Failed(why) => {
                    let e = std::io::Error::other(format!("the node refused the snapshot: {why}"));
                    return Err(StreamingError::Unreachable(Unreachable::new(&e)));
                }
                _ => return Err(unexpected().into()),
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&Request::TransferLeader(req), option.hard_ttl())
            .await?
        {
            Response::TransferLeader(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }
}

/// Accepts peers on `listener` and answers their requests with `raft`, until
/// `shutdown` is raised. `known` tells which node holds a number, to refuse a peer
/// that claims another node's number.
pub async fn serve(
    listener: TcpListener,
    raft: Raft<StateMachine>,
    auth: PeerAuth,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let raft = raft.clone();
        let auth = auth.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let conn = match transport::accept(stream, &auth.secret, &auth.me, CONNECT_TIMEOUT).await {
                Ok(c) => c,
                Err(e) if e.is_auth_failure() => {
                    tracing::warn!(peer = %addr, error = %e, "peer dropped: it could not prove the cluster secret");
                    return;
                }
                Err(e) => {
                    tracing::debug!(peer = %addr, error = %e, "peer handshake failed");
                    return;
                }
            };
            if let Err(reason) = check_peer(&raft, &auth.me, &conn.1) {
                tracing::error!(peer = %addr, %reason, "peer refused");
                return;
            }
            auth.fitness.note_priority(conn.1.number, conn.1.priority);
            answer(conn.0, conn.1, raft, auth.clone(), shutdown).await;
        });
    }
    connections.shutdown().await;
}

/// A peer must not claim this node's number, nor a number the membership gives to a
/// node of another name.
pub fn check_peer(
    raft: &Raft<StateMachine>,
    me: &PeerIdentity,
    peer: &PeerIdentity,
) -> Result<(), String> {
    if peer.number == me.number {
        return Err(format!(
            "node '{}' uses node number {}, which is this node's ('{}'): set [node] number on one of them",
            peer.node_id, peer.number, me.node_id
        ));
    }
    let metrics = raft.metrics().borrow_watched().clone();
    if let Some(member) = metrics
        .membership_config
        .membership()
        .get_node(&u64::from(peer.number))
    {
        if member.id != peer.node_id {
            return Err(format!(
                "node '{}' claims node number {}, which belongs to member '{}'",
                peer.node_id, peer.number, member.id
            ));
        }
        if member.incarnation != 0 && member.incarnation != peer.incarnation {
            return Err(format!(
                "node '{}' presents incarnation {:016x}, but the membership knows it as {:016x}:                  its data directory was replaced, so it has forgotten its log and its vote and                  must not count as that member; remove it (wolfctl remove {}) and join it again                  (wolfscale join)",
                peer.node_id, peer.incarnation, member.incarnation, peer.node_id
            ));
        }
    }
    Ok(())
}

async fn answer(
    mut conn: PeerConn,
    peer: PeerIdentity,
    raft: Raft<StateMachine>,
    auth: PeerAuth,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let frame = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            f = conn.read_frame() => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                if !e.is_disconnect() {
                    tracing::debug!(error = %e, "peer connection failed");
                }
                return;
            }
        };
        let response = match postcard::from_bytes::<Request>(&frame) {
            Ok(Request::Settings) => Response::Settings((*auth.settings).clone()),
            Ok(Request::Join) => join(&raft, &peer, &auth).await,
            Ok(Request::Promote) => promote(&raft, &peer, &auth).await,
            Ok(Request::View) => Response::View(view(&raft, &auth)),
            Ok(req) => handle(&raft, req, &auth).await,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable request from peer; dropping the connection");
                return;
            }
        };
        let Ok(body) = postcard::to_allocvec(&response) else {
            return;
        };
        if conn.write_frame(&body).await.is_err() {
            return;
        }
    }
}

async fn handle(raft: &Raft<StateMachine>, req: Request, auth: &PeerAuth) -> Response {
    let contact = &auth.contact;
    match req {
        Request::Append(rpc) => match raft.append_entries(rpc).await {
            Ok(r) => {
                if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                    contact.touch();
                    auth.leader_heard.touch();
                }
                Response::Append(r)
            }
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::Vote(rpc) => match raft.vote(rpc).await {
            Ok(r) => {
                if r.vote_granted {
                    contact.touch();
                }
                Response::Vote(r)
            }
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::PreVote(rpc) => match raft.pre_vote(rpc).await {
            Ok(r) => Response::Vote(r),
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::TransferLeader(_) if auth.fitness.transfer_refusal().is_some() => {
            let why = auth.fitness.transfer_refusal().unwrap_or_default();
            tracing::warn!(why, "refusing a leadership transfer to this node");
            Response::Failed(format!("this node refuses leadership: {why}"))
        }
        Request::TransferLeader(rpc) => match raft.handle_transfer_leader(rpc).await {
            Ok(r) => Response::TransferLeader(r),
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::Snapshot {
            vote,
            meta,
            offset,
            data,
            done,
        } => match receive_snapshot(raft, auth, vote, meta, offset, &data, done).await {
            Ok(r) => r,
            Err(e) => Response::Failed(format!("cannot receive the snapshot: {e}")),
        },
        Request::Settings | Request::Join | Request::Promote | Request::View => {
            Response::Failed("answered by the connection".into())
        }
    }
}

/// A piece of a snapshot from the leader: written at its offset in the incoming file
/// (a piece at 0 starts it afresh), and the last one installed through openraft.
async fn receive_snapshot(
    raft: &Raft<StateMachine>,
    auth: &PeerAuth,
    vote: Vote,
    meta: super::snapshot::Meta,
    offset: u64,
    data: &[u8],
    done: bool,
) -> std::io::Result<Response> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    // A leader that gave up waiting sends the snapshot again: not into the file an
    // install still reads.
    if auth.installing.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Response::Failed(
            "a snapshot is being installed here: try again later".into(),
        ));
    }
    let path = auth.snapshots.incoming_path(&meta);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(offset == 0)
        .open(&path)
        .await?;
    let have = file.metadata().await?.len();
    if have != offset {
        return Err(std::io::Error::other(format!(
            "a piece at offset {offset}, but {have} bytes have arrived"
        )));
    }
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    file.write_all(data).await?;
    if !done {
        return Ok(Response::Done);
    }
    file.sync_all().await?;
    drop(file);
    let snapshot = openraft::storage::Snapshot {
        meta,
        snapshot: Dump { path },
    };
    match raft.install_full_snapshot(vote, snapshot).await {
        Ok(r) => Ok(Response::Snapshot(r)),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// This node's view of the cluster.
fn view(raft: &Raft<StateMachine>, auth: &PeerAuth) -> NodeView {
    use std::sync::atomic::Ordering;
    let m = raft.metrics().borrow_watched().clone();
    let me = u64::from(auth.me.number);
    let f = &auth.fitness;
    let healthy = *f.health.borrow() == super::leadership::DbHealth::Healthy
        && f.may_lead.load(Ordering::Relaxed)
        && !f.stalled.load(Ordering::Relaxed)
        && !auth.installing.load(Ordering::Relaxed);
    NodeView {
        number: auth.me.number,
        term: m.current_term,
        leader: m.current_leader,
        leading: m.current_leader == Some(me) && m.state == openraft::ServerState::Leader,
        committed: m
            .cluster_committed
            .or(m.local_committed)
            .map_or(0, |l| l.index),
        applied: m.last_applied.map_or(0, |l| l.index),
        healthy,
        members: m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, member)| (*id, member.clone()))
            .collect(),
    }
}

/// Ask the node at the other end of `conn` for its view of the cluster.
pub async fn ask_view(conn: &mut PeerConn, timeout: Duration) -> Result<NodeView, String> {
    let body = postcard::to_allocvec(&Request::View).map_err(|e| e.to_string())?;
    let exchange = async {
        conn.write_frame(&body).await?;
        conn.read_frame().await
    };
    let frame = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    match postcard::from_bytes::<Response>(&frame).map_err(|e| e.to_string())? {
        Response::View(v) => Ok(v),
        Response::Failed(why) => Err(why),
        _ => Err("unexpected answer".into()),
    }
}

/// Where the leader is, for a request only the leader answers; `None` on the leader.
fn not_leader(raft: &Raft<StateMachine>, auth: &PeerAuth) -> Option<Response> {
    let m = raft.metrics().borrow_watched().clone();
    let me = u64::from(auth.me.number);
    if m.current_leader == Some(me) && m.state == openraft::ServerState::Leader {
        return None;
    }
    let leader = m
        .current_leader
        .and_then(|id| m.membership_config.membership().get_node(&id).cloned());
    Some(match leader {
        Some(l) => Response::Redirect(l.cluster_addr),
        None => Response::Failed("no leader is elected yet".into()),
    })
}

/// A voter asks for leadership (an operator promotes it): on the leader, a leadership
/// transfer to it, which it accepts only if fit to lead.
async fn promote(raft: &Raft<StateMachine>, peer: &PeerIdentity, auth: &PeerAuth) -> Response {
    if let Some(r) = not_leader(raft, auth) {
        return r;
    }
    let id = u64::from(peer.number);
    let voter = raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id);
    if !voter {
        return Response::Failed(format!("{} is not a voter", peer.node_id));
    }
    tracing::info!(to = %peer.node_id, "an operator promotes a node: transferring leadership");
    match raft.trigger().transfer_leader(id).await {
        Ok(()) => Response::Done,
        Err(e) => Response::Failed(format!("cannot transfer leadership: {e}")),
    }
}

/// A node asks to join: on the leader it becomes a learner at once, and a voter (joint
/// consensus, through openraft's membership change) once it has caught up; any other
/// node points it to the leader.
async fn join(raft: &Raft<StateMachine>, peer: &PeerIdentity, auth: &PeerAuth) -> Response {
    if let Some(r) = not_leader(raft, auth) {
        return r;
    }
    let m = raft.metrics().borrow_watched().clone();
    let id = u64::from(peer.number);
    let membership = m.membership_config.membership();
    if let Some(known) = membership.get_node(&id) {
        if known.incarnation != peer.incarnation {
            return Response::Failed(format!(
                "{} is a member with another data directory (incarnation {:016x}, this one has {:016x}):                  remove it first (wolfctl remove {}), then join again",
                peer.node_id, known.incarnation, peer.incarnation, peer.node_id
            ));
        }
        return Response::Joined;
    }
    let member = Member {
        id: peer.node_id.clone(),
        cluster_addr: peer.cluster_addr.clone(),
        proxy_addr: peer.proxy_addr.clone(),
        api_addr: peer.api_addr.clone(),
        incarnation: peer.incarnation,
    };
    tracing::info!(node = %peer.node_id, number = id, "a node joins: adding it as a learner");
    if let Err(e) = raft.add_learner(id, member, false).await {
        return Response::Failed(format!("cannot add the node as a learner: {e}"));
    }
    tokio::spawn(promote_when_caught_up(
        raft.clone(),
        u64::from(auth.me.number),
        id,
    ));
    Response::Joined
}

/// On the leader: make learner `id` a voter once it has every entry of the log.
async fn promote_when_caught_up(raft: Raft<StateMachine>, me: NodeId, id: NodeId) {
    let mut metrics = raft.metrics();
    loop {
        let m = metrics.borrow_watched().clone();
        if m.current_leader != Some(me) {
            // The next leader promotes it when the node asks again (it retries its
            // join until it is a voter).
            return;
        }
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|v| v == id) {
            return;
        }
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |l| l.index);
        if matched >= m.last_log_index.unwrap_or(0) {
            tracing::info!(number = id, "the learner has caught up: making it a voter");
            let change = openraft::ChangeMembers::AddVoterIds([id].into_iter().collect());
            match raft.change_membership(change, true).await {
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, "cannot make the learner a voter yet"),
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Ask the node at `addr` to add this one to its cluster. Whom it named as leader, if
/// it redirected.
pub async fn ask_join(addr: &str, auth: &PeerAuth) -> Result<Option<String>, String> {
    ask_leader(addr, auth, &Request::Join).await
}

/// Ask the leader at `addr` to hand leadership to this node. Whom it named as leader,
/// if it redirected.
pub async fn ask_promote(addr: &str, auth: &PeerAuth) -> Result<Option<String>, String> {
    ask_leader(addr, auth, &Request::Promote).await
}

/// Send a request only the leader answers.
async fn ask_leader(
    addr: &str,
    auth: &PeerAuth,
    request: &Request,
) -> Result<Option<String>, String> {
    let (mut conn, _) =
        transport::connect(addr, auth.source, &auth.secret, &auth.me, CONNECT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
    let body = postcard::to_allocvec(request).map_err(|e| e.to_string())?;
    let exchange = async {
        conn.write_frame(&body).await?;
        conn.read_frame().await
    };
    let frame = tokio::time::timeout(CONNECT_TIMEOUT * 2, exchange)
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    match postcard::from_bytes::<Response>(&frame).map_err(|e| e.to_string())? {
        Response::Joined | Response::Done => Ok(None),
        Response::Redirect(leader) => Ok(Some(leader)),
        Response::Failed(why) => Err(why),
        _ => Err("unexpected answer".into()),
    }
}

impl PeerClient {
    /// A peer's MariaDB settings.
    pub async fn settings(&mut self) -> Result<ReplaySettings, RPCError<TypeConfig>> {
        match self.call(&Request::Settings, CONNECT_TIMEOUT).await? {
            Response::Settings(s) => Ok(s),
            _ => Err(unexpected()),
        }
    }
}
