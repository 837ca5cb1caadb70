//! Chitchat's transport over QUIC with mutual TLS.
//!
//! One quinn endpoint per node both accepts and dials, so the address a peer is seen from is its
//! gossip address. Each chitchat message travels on its own unidirectional stream as one gossip
//! frame (QUIC datagrams are too small for a 64 KB message and are never fragmented).
//!
//! `send` never waits on the network: it puts the frame on a bounded per-peer queue and returns,
//! dropping the frame when the queue is full, as UDP would. A task per peer owns dialing (with a
//! timeout and a back-off after failures) and writing, so a dead peer never stalls the gossip loop.
//! Every connection, dialed or accepted, gets a reader task that bounds, decodes and checks each
//! frame, and hands the message to chitchat through a bounded queue.
//!
//! Peers that both offer ALPN [`ALPN_LINKED`] write digests as changes against the last digest the
//! other sent on the same connection ([`super::link`]); with an older peer the connection
//! negotiates [`ALPN`] and every frame is plain.
//!
//! The same connections carry the SNAT election's datagrams ([`DatagramPort`]): unreliable,
//! unordered, never retransmitted, so a lost advert is simply lost, as VRRP's would be. Each
//! received datagram is handed on with the node id of the certificate it arrived under.

use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatId, ChitchatMessage, Serializable};
use mesh_proto::NodeId;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn, Instrument};

use crate::mesh::codec::{DigestEntry, Message};
use crate::mesh::limits::{Held, Pool, TokenBucket};
use crate::mesh::link::{Link, LinkBudget, Outgoing, DEFAULT_LINK_BUDGET};
use crate::mesh::pki::crl::Revocation;
use crate::mesh::pki::{peer_node_id, Credentials, ALPN, ALPN_LINKED};
use crate::mesh::trust::{Sender, Trust};
use crate::mesh::wire::{
    claimed_identity_mismatch, decode_gossip, has_digest, to_chitchat, GossipFrameError,
    MAX_GOSSIP_FRAME,
};
use crate::throttle::Throttle;
use crate::Error;

/// Frames queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 64;
/// Messages queued for chitchat before new ones are dropped (the scale simulation gives each
/// simulated node the same).
pub const INBOUND_QUEUE: usize = 1024;
/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed dial, frames to that peer are dropped for this long.
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// How long opening and writing one stream may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer may take to deliver one whole frame.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no traffic for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive on idle connections.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Close code sent to a peer whose gossip contradicts its certificate.
const CLOSE_IDENTITY: u32 = 0x1d;
/// Close code: the peer's certificate was revoked.
const CLOSE_REVOKED: u32 = 0x1e;
/// Most peers tracked at once; beyond that the least recently used queue is dropped.
const MAX_PEERS: usize = 4096;
/// How soon after a connection to a peer was adopted a second one counts as crossed (both
/// nodes dialed at once) rather than as the peer reconnecting (after a restart, say).
const CROSSED_WITHIN: Duration = Duration::from_secs(2);
/// How long a stopping node lets its endpoint send the peers its close, so that they drop their
/// connections to it at once instead of writing into them until the idle timeout.
const CLOSE_FLUSH: Duration = Duration::from_millis(200);
/// Election datagrams queued for the election before new ones are dropped.
const DATAGRAM_QUEUE: usize = 4096;
/// Largest datagram accepted from a peer.
const MAX_DATAGRAM: usize = mesh_proto::MAX_ELECTION_DATAGRAM;
/// Decoded gossip bytes queued for chitchat, from all peers and from one.
const INBOUND_BYTES: usize = 64 << 20;
const INBOUND_BYTES_PER_PEER: usize = 8 << 20;
/// Of the datagram queue, what one peer may fill.
const DATAGRAMS_PER_PEER: usize = DATAGRAM_QUEUE / 4;
/// Gossip frames one peer may send: a burst, then a rate. Honest gossip sends a pair of nodes
/// at most three frames per gossip round each way (≥ 10 ms a round).
const FRAME_BURST: u32 = 600;
const FRAMES_PER_SECOND: u32 = 400;
/// Bytes a connection may have in flight towards this node (QUIC flow control).
const RECEIVE_WINDOW: u32 = 4 << 20;

/// Counters of the transport, for operators and tests.
#[derive(Debug, Default)]
pub struct TransportStats {
    sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_backoff: AtomicU64,
    send_errors: AtomicU64,
    received: AtomicU64,
    dropped_inbound: AtomicU64,
    rejected_frames: AtomicU64,
    identity_rejections: AtomicU64,
    handshake_failures: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_received: AtomicU64,
    datagrams_dropped: AtomicU64,
    dropped_rate: AtomicU64,
    dropped_share: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    linked_sent: AtomicU64,
    stale_digests: AtomicU64,
}

/// A copy of [`TransportStats`] at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TransportStatsSnapshot {
    /// Frames written to a stream.
    pub sent: u64,
    /// Frames dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Frames dropped while a failed peer was backed off.
    pub dropped_backoff: u64,
    /// Stream writes that failed.
    pub send_errors: u64,
    /// Frames received and handed to chitchat.
    pub received: u64,
    /// Frames dropped because chitchat's queue was full.
    pub dropped_inbound: u64,
    /// Frames refused as malformed or oversize.
    pub rejected_frames: u64,
    /// Connections closed because gossip contradicted the certificate.
    pub identity_rejections: u64,
    /// Dials or accepts whose TLS handshake failed (e.g. a certificate from another CA).
    pub handshake_failures: u64,
    /// Election datagrams sent.
    pub datagrams_sent: u64,
    /// Election datagrams received and handed on.
    pub datagrams_received: u64,
    /// Election datagrams dropped: no connection yet, a full queue, or oversize.
    pub datagrams_dropped: u64,
    /// Gossip frames dropped because their peer sent faster than [`FRAMES_PER_SECOND`].
    pub dropped_rate: u64,
    /// Frames or datagrams dropped because their peer already filled its share of the queue.
    pub dropped_share: u64,
    /// Bytes of the gossip frames written (as on the wire, before QUIC's own framing).
    pub bytes_sent: u64,
    /// Bytes of the gossip frames received and handed to chitchat.
    pub bytes_received: u64,
    /// Frames sent with their digest written as changes ([`super::link`]).
    pub linked_sent: u64,
    /// Linked frames dropped because they were written against a digest this node no longer
    /// keeps (several messages lost or reordered on the connection).
    pub stale_digests: u64,
}

impl TransportStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> TransportStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStatsSnapshot {
            sent: g(&self.sent),
            dropped_queue_full: g(&self.dropped_queue_full),
            dropped_backoff: g(&self.dropped_backoff),
            send_errors: g(&self.send_errors),
            received: g(&self.received),
            dropped_inbound: g(&self.dropped_inbound),
            rejected_frames: g(&self.rejected_frames),
            identity_rejections: g(&self.identity_rejections),
            handshake_failures: g(&self.handshake_failures),
            datagrams_sent: g(&self.datagrams_sent),
            datagrams_received: g(&self.datagrams_received),
            datagrams_dropped: g(&self.datagrams_dropped),
            dropped_rate: g(&self.dropped_rate),
            dropped_share: g(&self.dropped_share),
            bytes_sent: g(&self.bytes_sent),
            bytes_received: g(&self.bytes_received),
            linked_sent: g(&self.linked_sent),
            stale_digests: g(&self.stale_digests),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// What the transport knows of one peer address.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerRecord {
    /// The node id its certificate carries.
    pub certified: NodeId,
    /// If its gossip claimed another id, that id (the peer is refused).
    pub refused_claim: Option<String>,
}

/// Peers seen by address, with the node id their certificate proved. Shared with the view.
#[derive(Debug, Clone, Default)]
pub struct PeerDirectory {
    inner: Arc<Mutex<BTreeMap<SocketAddr, PeerRecord>>>,
}

impl PeerDirectory {
    fn record(&self, addr: SocketAddr, certified: NodeId) {
        let mut map = lock(&self.inner);
        if map.len() >= MAX_PEERS && !map.contains_key(&addr) {
            return;
        }
        map.insert(
            addr,
            PeerRecord {
                certified,
                refused_claim: None,
            },
        );
    }

    fn refuse(&self, addr: SocketAddr, claim: String) {
        if let Some(r) = lock(&self.inner).get_mut(&addr) {
            r.refused_claim = Some(claim);
        }
    }

    /// Clears a refusal once the peer's digest agrees with its certificate again.
    fn clear_refusal(&self, addr: SocketAddr) {
        if let Some(r) = lock(&self.inner).get_mut(&addr) {
            r.refused_claim = None;
        }
    }

    fn is_refused(&self, addr: SocketAddr) -> bool {
        lock(&self.inner)
            .get(&addr)
            .is_some_and(|r| r.refused_claim.is_some())
    }

    /// Everything known, by address.
    pub fn snapshot(&self) -> BTreeMap<SocketAddr, PeerRecord> {
        lock(&self.inner).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short critical sections leaves plain data behind.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The QUIC transport factory handed to chitchat.
pub struct QuicTransport {
    trust: Arc<Trust>,
    revocation: Arc<Revocation>,
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
    directory: PeerDirectory,
    stats: Arc<TransportStats>,
    shared: Arc<OnceLock<Arc<Shared>>>,
    datagrams_tx: mpsc::Sender<QueuedDatagram>,
    datagrams_rx: Mutex<Option<DatagramInbound>>,
    datagram_pool: Pool,
    /// The loop accepting inbound connections, until the agent takes it to supervise.
    accept_task: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// This node's id, to settle crossed connections.
    me: String,
}

/// A datagram waiting for the election, holding its peer's share of the queue.
type QueuedDatagram = (NodeId, Vec<u8>, Held);

/// A gossip message waiting for chitchat, holding its peer's share of the queue.
type QueuedMessage = (SocketAddr, ChitchatMessage, Held);

/// Received datagrams with the sender's certified node id.
pub struct DatagramInbound {
    queue: mpsc::Receiver<QueuedDatagram>,
}

impl DatagramInbound {
    /// The next datagram; `None` once the transport is gone.
    pub async fn recv(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.queue
            .recv()
            .await
            .map(|(from, bytes, _)| (from, bytes))
    }

    /// A datagram already queued, if any.
    pub fn try_recv(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.queue
            .try_recv()
            .ok()
            .map(|(from, bytes, _)| (from, bytes))
    }
}

/// Sends datagrams to peers on the gossip connections. Cheap to clone.
#[derive(Clone)]
pub struct DatagramSender {
    shared: Arc<OnceLock<Arc<Shared>>>,
}

impl DatagramSender {
    /// Sends one datagram to the node gossiping at `to`; never waits. Without a live connection
    /// the datagram is dropped and a dial is started, so the next one goes through.
    pub fn send(&self, to: SocketAddr, payload: Vec<u8>) -> bool {
        let Some(shared) = self.shared.get() else {
            return false;
        };
        match shared.live_connection(to) {
            Some(conn) => match conn.send_datagram(payload.into()) {
                Ok(()) => {
                    bump(&shared.stats.datagrams_sent);
                    true
                }
                Err(e) => {
                    bump(&shared.stats.datagrams_dropped);
                    debug!(peer = %to, error = %e, "datagram not sent");
                    false
                }
            },
            None => {
                bump(&shared.stats.datagrams_dropped);
                shared.dial_in_background(to);
                false
            }
        }
    }
}

/// Cuts off peers whose certificates a new revocation list revokes. Cheap to clone.
#[derive(Clone)]
pub struct Evictor {
    shared: Arc<OnceLock<Arc<Shared>>>,
    trust: Arc<Trust>,
}

/// Who a new revocation list cut off.
#[derive(Debug, Default)]
pub struct Evicted {
    /// Nodes whose connections were closed.
    pub connections: Vec<NodeId>,
    /// Node lives whose gossip is refused from now on.
    pub node_lives: Vec<ChitchatId>,
}

impl Evictor {
    /// Closes the connections of revoked peers (new handshakes are refused by the verifiers) and
    /// stops accepting their gossip.
    pub fn evict(&self, revoked: &Revocation) -> Evicted {
        Evicted {
            connections: self.close_revoked(revoked),
            node_lives: self.trust.recheck_anchors(),
        }
    }

    /// Closes every connection whose peer presented a certificate `revoked` says is revoked now
    /// (new handshakes are refused by the verifiers). Returns the nodes cut off.
    fn close_revoked(&self, revoked: &Revocation) -> Vec<NodeId> {
        let Some(shared) = self.shared.get() else {
            return Vec::new();
        };
        let mut cut = Vec::new();
        lock(&shared.conns).retain(|_, Adopted { conn, .. }| {
            if !peer_revoked(conn, revoked) {
                return true;
            }
            conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
            cut.extend(peer_node_id(conn));
            false
        });
        cut
    }
}

/// What a transport offers its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Linked digests where the peer speaks them too ([`ALPN_LINKED`]), plain frames otherwise.
    Linked,
    /// Plain frames only ([`ALPN`]): what a node from before linked digests offers (tests of a
    /// cluster of mixed versions).
    PlainOnly,
}

/// The election's end of the transport: a sender, and received datagrams with the sender's
/// certified node id.
pub struct DatagramPort {
    /// Sends datagrams.
    pub sender: DatagramSender,
    /// Datagrams received, each at most [`mesh_proto::MAX_ELECTION_DATAGRAM`] bytes.
    pub inbound: DatagramInbound,
}

impl QuicTransport {
    /// Builds the transport of node life `me` from its credentials.
    pub fn new(creds: &Credentials, me: ChitchatId) -> Result<Self, Error> {
        Self::speaking(creds, me, Dialect::Linked)
    }

    /// Builds a transport that offers `dialect` to its peers.
    pub fn speaking(creds: &Credentials, me: ChitchatId, dialect: Dialect) -> Result<Self, Error> {
        let transport = Arc::new(transport_config());
        let mut server_tls = creds.server_config()?;
        let mut client_tls = creds.client_config()?;
        if dialect == Dialect::PlainOnly {
            server_tls.alpn_protocols = vec![ALPN.to_vec()];
            client_tls.alpn_protocols = vec![ALPN.to_vec()];
        }
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|e| Error::Tls(format!("QUIC server: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
            .map_err(|e| Error::Tls(format!("QUIC client: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let (datagrams_tx, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
        Ok(QuicTransport {
            trust: Arc::new(Trust::new(me.clone(), creds.peer_certs()?)),
            revocation: creds.revocation(),
            server,
            client,
            directory: PeerDirectory::default(),
            stats: Arc::new(TransportStats::default()),
            shared: Arc::new(OnceLock::new()),
            datagrams_tx,
            datagrams_rx: Mutex::new(Some(DatagramInbound {
                queue: datagrams_rx,
            })),
            datagram_pool: Pool::new(DATAGRAM_QUEUE, DATAGRAMS_PER_PEER),
            accept_task: Arc::new(Mutex::new(None)),
            me: me.node_id.to_string(),
        })
    }

    /// The task accepting inbound connections, once the socket is open; `None` before and after
    /// the first call. It ends only when the endpoint closes: the agent supervises it, so a node
    /// that stopped accepting peers stops rather than gossiping one-way.
    pub fn accept_task(&self) -> Option<JoinHandle<()>> {
        lock(&self.accept_task).take()
    }

    /// The datagram port; `None` after the first call.
    pub fn datagrams(&self) -> Option<DatagramPort> {
        let inbound = lock(&self.datagrams_rx).take()?;
        Some(DatagramPort {
            sender: DatagramSender {
                shared: self.shared.clone(),
            },
            inbound,
        })
    }

    /// The peer directory this transport fills.
    pub fn directory(&self) -> PeerDirectory {
        self.directory.clone()
    }

    /// The transport's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    /// A handle that cuts off revoked peers.
    pub fn evictor(&self) -> Evictor {
        Evictor {
            shared: self.shared.clone(),
            trust: self.trust.clone(),
        }
    }

    /// The gossip filter, whose counters say what peers relayed or forged that was refused.
    pub fn trust(&self) -> Arc<Trust> {
        self.trust.clone()
    }

    /// Closes every connection and gives the endpoint `CLOSE_FLUSH` to tell the peers, so that a
    /// restarting node's peers drop their connections to it at once: one they kept would swallow
    /// what they send until its idle timeout, and take the place of the restarted node's new one.
    pub async fn close(&self) {
        if let Some(shared) = self.shared.get() {
            shared.endpoint.close(0u32.into(), b"shutdown");
            let _ = timeout(CLOSE_FLUSH, shared.endpoint.wait_idle()).await;
        }
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // IDLE_TIMEOUT is far below the VarInt limit.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_bidi_streams(0u32.into());
    t.max_concurrent_uni_streams(256u32.into());
    t.receive_window(RECEIVE_WINDOW.into());
    t.stream_receive_window((MAX_GOSSIP_FRAME as u32).into());
    t.datagram_receive_buffer_size(Some(DATAGRAMS_PER_PEER * MAX_DATAGRAM));
    t.congestion_controller_factory(std::sync::Arc::new(super::congestion::FixedWindowConfig));
    t
}

#[async_trait]
impl Transport for QuicTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let mut endpoint = quinn::Endpoint::server(self.server.clone(), listen_addr)
            .map_err(|e| anyhow::anyhow!("binding QUIC endpoint on {listen_addr}: {e}"))?;
        endpoint.set_default_client_config(self.client.clone());
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let shared = Arc::new(Shared {
            endpoint,
            conns: Mutex::new(HashMap::new()),
            inbound: inbound_tx,
            directory: self.directory.clone(),
            stats: self.stats.clone(),
            datagrams: self.datagrams_tx.clone(),
            datagram_pool: self.datagram_pool.clone(),
            gossip_pool: Pool::new(INBOUND_BYTES, INBOUND_BYTES_PER_PEER),
            dialing: Mutex::new(HashSet::new()),
            trust: self.trust.clone(),
            revocation: self.revocation.clone(),
            links: Mutex::new(HashMap::new()),
            link_budget: LinkBudget::new(DEFAULT_LINK_BUDGET),
            me: self.me.clone(),
            adopted: Notify::new(),
        });
        // A transport is opened once per agent; a second socket keeps the first one's port.
        let _ = self.shared.set(shared.clone());
        let accepting = tokio::spawn(accept_loop(shared.clone()).in_current_span());
        *lock(&self.accept_task) = Some(accepting);
        Ok(Box::new(QuicSocket {
            shared,
            inbound: inbound_rx,
            peers: HashMap::new(),
            recent_digest: None,
        }))
    }
}

struct Shared {
    endpoint: quinn::Endpoint,
    conns: Mutex<HashMap<SocketAddr, Adopted>>,
    inbound: mpsc::Sender<QueuedMessage>,
    directory: PeerDirectory,
    stats: Arc<TransportStats>,
    datagrams: mpsc::Sender<QueuedDatagram>,
    datagram_pool: Pool,
    gossip_pool: Pool,
    dialing: Mutex<HashSet<SocketAddr>>,
    trust: Arc<Trust>,
    revocation: Arc<Revocation>,
    /// The linked-digest state of each connection that negotiated [`ALPN_LINKED`], by the
    /// connection's stable id; removed when its reader ends.
    links: Mutex<HashMap<usize, Arc<Mutex<Link>>>>,
    link_budget: LinkBudget,
    me: String,
    /// Woken whenever a connection is adopted: a sender waiting on its own dial takes a
    /// connection the peer dialed meanwhile.
    adopted: Notify,
}

/// The connection messages to a peer go out on.
struct Adopted {
    conn: quinn::Connection,
    /// Whether the node with the smaller id dialed it: of two connections dialed at once, both
    /// ends keep that one, so that each hears the other on the connection it writes on (linked
    /// digests are kept per connection).
    preferred: bool,
    at: Instant,
    /// When a gossip frame last arrived on it.
    heard: Option<Instant>,
    /// The other half of a crossed dial, kept aside: sent on instead if the peer writes there
    /// and not here ([`peer_left_kept`]).
    standby: Option<(quinn::Connection, Instant)>,
}

impl Adopted {
    /// `conn`, sent on from `at`, not heard from yet and with no standby.
    fn new(conn: quinn::Connection, preferred: bool, at: Instant) -> Adopted {
        Adopted {
            conn,
            preferred,
            at,
            heard: None,
            standby: None,
        }
    }

    /// Whether `new`, adopted now, takes this one's place ([`keeps_first_of_crossed`]).
    fn gives_way_to(&self, new: &Adopted) -> bool {
        !keeps_first_of_crossed(
            self.preferred,
            self.conn.close_reason().is_none(),
            new.preferred,
            new.at.saturating_duration_since(self.at),
        )
    }
}

/// Whether a peer's connection adopted `since` ago stays the one to send on when another one
/// from the same peer is adopted: only when it is alive, preferred, the new one is not, and it
/// is so recent that the new one is the other half of a crossed dial. Otherwise the new one
/// wins, as a peer that restarted reconnects with a new connection.
fn keeps_first_of_crossed(
    first_preferred: bool,
    first_alive: bool,
    new_preferred: bool,
    since: Duration,
) -> bool {
    first_preferred && first_alive && !new_preferred && since <= CROSSED_WITHIN
}

/// Whether the peer of a crossed pair writes on the standby connection and not on the one kept:
/// nothing arrived on the kept one since the standby was adopted, `CROSSED_WITHIN` ago or more.
/// Both ends of a real crossed dial write on the kept one by then; a peer that does not has
/// restarted (its end of the kept connection died without a close) or runs a release that keeps
/// the newest connection. Either way the kept one is then the wrong one to write on: a dead one
/// swallows everything until its idle timeout.
fn peer_left_kept(kept_heard: Option<Instant>, standby_at: Instant, now: Instant) -> bool {
    kept_heard.is_none_or(|h| h < standby_at)
        && now.saturating_duration_since(standby_at) >= CROSSED_WITHIN
}

impl Shared {
    fn link(&self, conn: &quinn::Connection) -> Option<Arc<Mutex<Link>>> {
        lock(&self.links).get(&conn.stable_id()).cloned()
    }

    /// The frame of `out` for this connection: linked when the peer speaks it.
    fn frame_for(&self, conn: &quinn::Connection, out: &Outgoing) -> Vec<u8> {
        match self.link(conn) {
            Some(link) => {
                if out.has_digest() {
                    bump(&self.stats.linked_sent);
                }
                lock(&link).encode(out)
            }
            None => out.plain_frame(),
        }
    }

    /// Dials `addr` beside the caller, once at a time per address.
    fn dial_in_background(self: &Arc<Self>, addr: SocketAddr) {
        {
            let mut dialing = lock(&self.dialing);
            if dialing.len() >= MAX_PEERS || !dialing.insert(addr) {
                return;
            }
        }
        let shared = self.clone();
        tokio::spawn(
            async move {
                if let Err(e) = dial(&shared, addr).await {
                    debug!(peer = %addr, error = %e, "dial for datagrams failed");
                    // Keep the address marked a little, as the gossip sender backs off.
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
                lock(&shared.dialing).remove(&addr);
            }
            .in_current_span(),
        );
    }

    fn live_connection(&self, addr: SocketAddr) -> Option<quinn::Connection> {
        let conns = lock(&self.conns);
        conns
            .get(&addr)
            .map(|a| &a.conn)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    fn forget(&self, addr: SocketAddr, conn: &quinn::Connection) {
        let mut conns = lock(&self.conns);
        if conns
            .get(&addr)
            .is_some_and(|a| a.conn.stable_id() == conn.stable_id())
        {
            conns.remove(&addr);
        }
    }

    /// Registers an established connection (`dialed` by this node, or accepted): records the
    /// peer's certified id, starts reading, and sends on it from now on unless it is the losing
    /// half of a crossed dial ([`Adopted::gives_way_to`]).
    fn adopt(self: &Arc<Self>, conn: quinn::Connection, dialed: bool) -> Option<NodeId> {
        let addr = conn.remote_address();
        let Some(peer) = peer_node_id(&conn) else {
            warn!(peer = %addr, "peer certificate names no valid node id; closing");
            conn.close(CLOSE_IDENTITY.into(), b"no node id in certificate");
            bump(&self.stats.handshake_failures);
            return None;
        };
        debug!(peer = %addr, node = %peer, id = conn.stable_id(), "connection adopted");
        self.directory.record(addr, peer.clone());
        if negotiated_alpn(&conn).as_deref() == Some(ALPN_LINKED) {
            lock(&self.links).insert(
                conn.stable_id(),
                Arc::new(Mutex::new(Link::new(self.link_budget.clone()))),
            );
        }
        {
            let smaller_dialed = (peer.as_str() > self.me.as_str()) == dialed;
            let new = Adopted::new(conn.clone(), smaller_dialed, Instant::now());
            let mut conns = lock(&self.conns);
            let room = conns.len() < MAX_PEERS;
            match conns.get_mut(&addr) {
                Some(old) if !old.gives_way_to(&new) => {
                    debug!(peer = %addr, "crossed connection: keeping the one the smaller id dialed");
                    old.standby = Some((new.conn, new.at));
                }
                Some(old) => *old = new,
                None if room => {
                    conns.insert(addr, new);
                }
                None => {}
            }
        }
        self.adopted.notify_waiters();
        tokio::spawn(read_loop(self.clone(), conn.clone(), peer.clone()).in_current_span());
        tokio::spawn(datagram_loop(self.clone(), conn, peer.clone()).in_current_span());
        Some(peer)
    }

    /// A gossip frame arrived on `conn`: noted on the connection sent on, or, when it is that
    /// connection's standby and the peer has left the kept one ([`peer_left_kept`]), the standby
    /// becomes the connection sent on.
    fn heard(&self, addr: SocketAddr, conn: &quinn::Connection) {
        let now = Instant::now();
        let mut conns = lock(&self.conns);
        let Some(kept) = conns.get_mut(&addr) else {
            return;
        };
        if kept.conn.stable_id() == conn.stable_id() {
            kept.heard = Some(now);
            return;
        }
        let Some((standby, at)) = &kept.standby else {
            return;
        };
        if standby.stable_id() == conn.stable_id() && peer_left_kept(kept.heard, *at, now) {
            debug!(peer = %addr, "the peer writes on the other half of a crossed dial; sending there");
            *kept = Adopted::new(conn.clone(), false, now);
            kept.heard = Some(now);
        }
    }

    /// A connection to `addr` to send on: the live one, else one this sender dials; when the peer's
    /// own dial is adopted before that dial completes (a dial whose first packet found the peer not
    /// yet listening waits a whole retransmission), that connection.
    async fn connection(self: &Arc<Self>, addr: SocketAddr) -> anyhow::Result<quinn::Connection> {
        let dialing = dial(self, addr);
        tokio::pin!(dialing);
        loop {
            let adopted = self.adopted.notified();
            tokio::pin!(adopted);
            adopted.as_mut().enable();
            if let Some(c) = self.live_connection(addr) {
                return Ok(c);
            }
            tokio::select! {
                r = &mut dialing => return r,
                () = &mut adopted => {}
            }
        }
    }
}

struct QuicSocket {
    shared: Arc<Shared>,
    inbound: mpsc::Receiver<QueuedMessage>,
    peers: HashMap<SocketAddr, mpsc::Sender<Outgoing>>,
    /// The digest of the last message sent, shared by the next ones while it is the same.
    recent_digest: Option<Arc<[DigestEntry]>>,
}

impl Drop for QuicSocket {
    fn drop(&mut self) {
        self.shared.endpoint.close(0u32.into(), b"shutdown");
    }
}

#[async_trait]
impl Socket for QuicSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let frame = Outgoing::new(msg.serialize_to_vec(), &mut self.recent_digest);
        if let Some(q) = self.peers.get(&to) {
            if !q.is_closed() {
                if q.try_send(frame).is_err() {
                    bump(&self.shared.stats.dropped_queue_full);
                }
                return Ok(());
            }
        }
        if self.peers.len() >= MAX_PEERS {
            self.peers.retain(|_, q| !q.is_closed());
            if self.peers.len() >= MAX_PEERS {
                bump(&self.shared.stats.dropped_queue_full);
                return Ok(());
            }
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        // A fresh queue has room for one frame.
        let _ = tx.try_send(frame);
        self.peers.insert(to, tx);
        tokio::spawn(peer_sender(self.shared.clone(), to, rx).in_current_span());
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.inbound
            .recv()
            .await
            .map(|(addr, message, _)| (addr, message))
            .ok_or_else(|| anyhow::anyhow!("QUIC transport closed"))
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        let task = async move {
            let from = incoming.remote_address();
            match timeout(CONNECT_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => {
                    if let Some(peer) = shared.adopt(conn, false) {
                        debug!(peer = %from, node = %peer, "accepted gossip connection");
                    }
                }
                Ok(Err(e)) => {
                    bump(&shared.stats.handshake_failures);
                    warn!(peer = %from, error = %e, "refused gossip connection (TLS handshake failed)");
                }
                Err(_) => {
                    bump(&shared.stats.handshake_failures);
                    debug!(peer = %from, "gossip handshake timed out");
                }
            }
        };
        tokio::spawn(task.in_current_span());
    }
}

async fn peer_sender(shared: Arc<Shared>, addr: SocketAddr, mut queue: mpsc::Receiver<Outgoing>) {
    let mut backoff_until: Option<Instant> = None;
    while let Some(out) = queue.recv().await {
        let conn = match shared.live_connection(addr) {
            Some(c) => c,
            None => {
                if backoff_until.is_some_and(|t| Instant::now() < t) {
                    bump(&shared.stats.dropped_backoff);
                    continue;
                }
                match shared.connection(addr).await {
                    Ok(c) => {
                        backoff_until = None;
                        c
                    }
                    Err(e) => {
                        debug!(peer = %addr, error = %e, "dial failed");
                        backoff_until = Some(Instant::now() + CONNECT_BACKOFF);
                        bump(&shared.stats.dropped_backoff);
                        continue;
                    }
                }
            }
        };
        let frame = shared.frame_for(&conn, &out);
        let write = async {
            let mut stream = conn.open_uni().await?;
            stream.write_all(&frame).await?;
            stream.finish()?;
            anyhow::Ok(())
        };
        match timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => {
                bump(&shared.stats.sent);
                add(&shared.stats.bytes_sent, frame.len());
            }
            Ok(Err(e)) => {
                bump(&shared.stats.send_errors);
                debug!(peer = %addr, error = %e, "gossip write failed");
                shared.forget(addr, &conn);
            }
            Err(_) => {
                bump(&shared.stats.send_errors);
                debug!(peer = %addr, "gossip write timed out");
                shared.forget(addr, &conn);
                conn.close(0u32.into(), b"write timeout");
            }
        }
    }
}

async fn dial(shared: &Arc<Shared>, addr: SocketAddr) -> anyhow::Result<quinn::Connection> {
    let connecting = shared.endpoint.connect(addr, "dvrmesh")?;
    let conn = match timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if matches!(
                e,
                quinn::ConnectionError::TransportError(_)
                    | quinn::ConnectionError::ConnectionClosed(_)
            ) {
                bump(&shared.stats.handshake_failures);
                warn!(peer = %addr, error = %e, "gossip handshake refused");
            }
            return Err(e.into());
        }
        Err(_) => anyhow::bail!("dial timed out after {CONNECT_TIMEOUT:?}"),
    };
    shared
        .adopt(conn.clone(), true)
        .ok_or_else(|| anyhow::anyhow!("peer certificate names no node id"))?;
    Ok(conn)
}

/// The ALPN protocol the handshake settled on.
fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

async fn read_loop(shared: Arc<Shared>, conn: quinn::Connection, certified: NodeId) {
    let addr = conn.remote_address();
    let link = shared.link(&conn);
    let mut rate = TokenBucket::new(FRAME_BURST, FRAMES_PER_SECOND);
    let share = shared.gossip_pool.share();
    let mut refusals = Throttle::new(Duration::from_secs(1));
    let mut standing = Standing::new(&shared.revocation);
    let mut refuse = |why: &dyn std::fmt::Display| {
        bump(&shared.stats.rejected_frames);
        if let Some(n) = refusals.event(&(), std::time::Instant::now()) {
            warn!(peer = %addr, node = %certified, frames = n, "gossip frames refused: {why}");
        }
    };
    while let Ok(mut stream) = conn.accept_uni().await {
        if !standing.holds(&conn) {
            break;
        }
        if !rate.take(std::time::Instant::now()) {
            bump(&shared.stats.dropped_rate);
            // Refuse the stream unread: its bytes are never buffered.
            let _ = stream.stop(0u32.into());
            continue;
        }
        let bytes = match timeout(READ_TIMEOUT, stream.read_to_end(MAX_GOSSIP_FRAME)).await {
            Ok(Ok(b)) => {
                shared.heard(addr, &conn);
                b
            }
            Ok(Err(e)) => {
                refuse(&e);
                continue;
            }
            Err(_) => {
                refuse(&"not completed in time");
                continue;
            }
        };
        let decoded = match &link {
            Some(link) => lock(link).decode(&bytes),
            None => decode_gossip(&bytes),
        };
        match admit(&shared, decoded, bytes.len(), addr, &certified) {
            Admit::Message(message, weight) => {
                let Some(held) = share.try_hold(weight) else {
                    bump(&shared.stats.dropped_share);
                    continue;
                };
                if shared.inbound.try_send((addr, message, held)).is_err() {
                    bump(&shared.stats.dropped_inbound);
                } else {
                    bump(&shared.stats.received);
                    add(&shared.stats.bytes_received, bytes.len());
                }
            }
            Admit::Refused(why) => refuse(&why),
            Admit::Stale => bump(&shared.stats.stale_digests),
            Admit::Impostor(claim) => {
                bump(&shared.stats.identity_rejections);
                warn!(peer = %addr, certified = %certified, claimed = %claim,
                    "peer gossips under a node id its certificate does not carry; closing");
                shared.directory.refuse(addr, claim);
                conn.close(
                    CLOSE_IDENTITY.into(),
                    b"gossiped node id differs from certificate",
                );
                break;
            }
        }
    }
    lock(&shared.links).remove(&conn.stable_id());
    shared.forget(addr, &conn);
}

/// Whether a connection's peer is still in good standing: checked again whenever the revocation
/// list changed since the last look; a revoked peer's connection is closed.
struct Standing {
    revocation: Arc<Revocation>,
    generation: u64,
}

impl Standing {
    fn new(revocation: &Arc<Revocation>) -> Standing {
        Standing {
            revocation: revocation.clone(),
            generation: revocation.generation(),
        }
    }

    fn holds(&mut self, conn: &quinn::Connection) -> bool {
        let now = self.revocation.generation();
        if now == self.generation {
            return true;
        }
        self.generation = now;
        if peer_revoked(conn, &self.revocation) {
            info!(peer = %conn.remote_address(), "closing the connection of a revoked peer");
            conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
            return false;
        }
        true
    }
}

/// Whether the certificate a peer presented is revoked now.
fn peer_revoked(conn: &quinn::Connection, revocation: &Revocation) -> bool {
    conn.peer_identity()
        .and_then(|i| {
            i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().map(|c| revocation.is_revoked(c)))
        .unwrap_or(false)
}

/// What becomes of one received gossip frame.
enum Admit {
    /// The checked and filtered message, for chitchat, and about how many bytes it holds.
    Message(ChitchatMessage, usize),
    /// Malformed, or from a peer under refusal: why.
    Refused(String),
    /// Written against a digest of this node's no longer kept: dropped like a lost message.
    Stale,
    /// The peer's digest claims another node id than its certificate (the id it claims).
    Impostor(String),
}

/// Takes a decoded frame of `len` bytes, holds the sender's own digest entry against its
/// certificate, and filters what it relays ([`Trust`]).
fn admit(
    shared: &Shared,
    decoded: Result<Message, GossipFrameError>,
    len: usize,
    addr: SocketAddr,
    certified: &NodeId,
) -> Admit {
    let message = match decoded {
        Ok(m) => m,
        Err(GossipFrameError::UnknownBase(_)) => return Admit::Stale,
        Err(e) => return Admit::Refused(e.to_string()),
    };
    if let Some(claim) = claimed_identity_mismatch(&message, addr, certified.as_str()) {
        return Admit::Impostor(claim);
    }
    if has_digest(&message) {
        shared.directory.clear_refusal(addr);
    } else if shared.directory.is_refused(addr) {
        // An Ack carries no digest: accept it only from a peer not under refusal.
        return Admit::Refused("an ack from a peer under refusal".into());
    }
    let from = Sender {
        node: certified,
        addr,
    };
    let filtered = shared
        .trust
        .filter(message, from, std::time::Instant::now());
    match to_chitchat(&filtered) {
        Ok(m) => Admit::Message(m, filtered.decoded_bytes().max(len)),
        Err(e) => Admit::Refused(format!("checked gossip: {e}")),
    }
}

async fn datagram_loop(shared: Arc<Shared>, conn: quinn::Connection, certified: NodeId) {
    let share = shared.datagram_pool.share();
    let mut standing = Standing::new(&shared.revocation);
    while let Ok(bytes) = conn.read_datagram().await {
        if !standing.holds(&conn) {
            break;
        }
        if bytes.len() > MAX_DATAGRAM {
            bump(&shared.stats.datagrams_dropped);
            continue;
        }
        let Some(held) = share.try_hold(1) else {
            bump(&shared.stats.dropped_share);
            continue;
        };
        if shared
            .datagrams
            .try_send((certified.clone(), bytes.to_vec(), held))
            .is_err()
        {
            bump(&shared.stats.datagrams_dropped);
        } else {
            bump(&shared.stats.datagrams_received);
        }
    }
}

#[cfg(test)]
mod crossed_tests {
    use super::*;

    #[test]
    fn of_crossed_connections_both_ends_keep_the_one_the_smaller_id_dialed() {
        let now = Duration::from_millis(30);
        // The preferred one came first: the other half of the crossing does not replace it.
        assert!(keeps_first_of_crossed(true, true, false, now));
        // The preferred one comes second: it replaces the first.
        assert!(!keeps_first_of_crossed(false, true, true, now));
        // A reconnect long after, or after the first died, always replaces it.
        assert!(!keeps_first_of_crossed(
            true,
            true,
            false,
            CROSSED_WITHIN + Duration::from_millis(1)
        ));
        assert!(!keeps_first_of_crossed(true, false, false, now));
        // Two preferred ones (a reconnect dialed the same way) : the newer wins.
        assert!(!keeps_first_of_crossed(true, true, true, now));
    }

    #[test]
    fn a_peer_writing_only_on_the_standby_half_of_a_crossed_dial_is_sent_to_there() {
        let standby_at = Instant::now();
        let later = |ms| standby_at + Duration::from_millis(ms);
        let settled = later(CROSSED_WITHIN.as_millis() as u64);
        // The kept connection never heard from since the standby came: the peer left it.
        assert!(peer_left_kept(None, standby_at, settled));
        assert!(peer_left_kept(
            Some(standby_at - Duration::from_millis(5)),
            standby_at,
            settled
        ));
        // While both ends may still be settling a real crossing, the kept one stays.
        assert!(!peer_left_kept(None, standby_at, later(100)));
        // The peer wrote on the kept one after the standby came: it is the one both use.
        assert!(!peer_left_kept(Some(later(50)), standby_at, settled));
    }
}
