//! An in-process gossip transport for the simulation that carries each chitchat message as the
//! agents' QUIC transport writes it between two current nodes (a gossip frame, its digest written
//! as changes on the link of that pair of nodes, [`dvrmesh_node::mesh::link`]), decodes it as the
//! receiver would, and counts the frames' bytes. No loss, no reordering; QUIC's own framing and
//! the UDP and IP headers are not counted. In [`Dialect::PlainOnly`] every frame is plain, as
//! between nodes from before linked digests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context as _, Result};
use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Serializable};
use dvrmesh_node::mesh::codec::DigestEntry;
use dvrmesh_node::mesh::link::{Link, LinkBudget, Outgoing};
use dvrmesh_node::mesh::transport::{Dialect, INBOUND_QUEUE};
use dvrmesh_node::mesh::wire::{open_frame, to_chitchat, KIND_GOSSIP_LINKED, MAX_GOSSIP_FRAME};
use tokio::sync::mpsc;

/// Messages queued for one node before new ones are dropped: an agent's queue toward chitchat.
pub const INBOX: usize = INBOUND_QUEUE;

/// Byte and message counts of every frame sent so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameCounts {
    /// Bytes of the frames.
    pub bytes: u64,
    /// Frames.
    pub frames: u64,
    /// Frames whose digest went as changes against a digest the peer kept (the rest of those
    /// carrying a digest went whole: a first exchange, or a budget spent on either side).
    pub linked: u64,
    /// SynAcks sent (each the responder's whole digest as chitchat counts it, then a delta).
    pub synacks: u64,
    /// SynAcks that filled chitchat's message budget (within [`FULL_SLACK`] of it): their delta
    /// was cut to fit beside the digest.
    pub full_synacks: u64,
}

/// chitchat's message budget (its UDP payload limit, private to the crate): a SynAck's delta
/// gets this less one byte and the digest.
pub const CHITCHAT_BUDGET: usize = 65_507;
/// How close to [`CHITCHAT_BUDGET`] a SynAck counts as full: a little more than one node's
/// delta (its certificate and facts, sealed), which is where chitchat stops adding.
pub const FULL_SLACK: usize = 4096;

impl FrameCounts {
    /// Share of the SynAcks that were full.
    pub fn full_synack_share(&self) -> f64 {
        self.full_synacks as f64 / self.synacks.max(1) as f64
    }
}

/// The transport: one per simulated cluster.
#[derive(Clone)]
pub struct FrameTransport {
    inner: Arc<Mutex<Inner>>,
    dialect: Dialect,
    link_budget: usize,
}

#[derive(Default)]
struct Inner {
    inboxes: HashMap<SocketAddr, mpsc::Sender<(SocketAddr, ChitchatMessage)>>,
    budgets: HashMap<SocketAddr, LinkBudget>,
    /// (this node, its peer) → this node's end of their link.
    links: HashMap<(SocketAddr, SocketAddr), Link>,
    counts: FrameCounts,
}

impl Inner {
    fn link(&mut self, me: SocketAddr, peer: SocketAddr) -> Result<&mut Link> {
        let budget = self
            .budgets
            .get(&me)
            .ok_or_else(|| anyhow!("{me} has no socket open"))?
            .clone();
        Ok(self
            .links
            .entry((me, peer))
            .or_insert_with(|| Link::new(budget)))
    }
}

impl FrameTransport {
    /// A transport whose nodes speak `dialect`, each keeping at most `link_budget` digest
    /// entries for its links.
    pub fn new(dialect: Dialect, link_budget: usize) -> FrameTransport {
        FrameTransport {
            inner: Arc::default(),
            dialect,
            link_budget,
        }
    }

    /// What was sent so far.
    pub fn counts(&self) -> FrameCounts {
        lock(&self.inner).counts
    }

    fn carry(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        out: &Outgoing,
        synack_len: Option<usize>,
    ) -> Result<()> {
        let mut inner = lock(&self.inner);
        if let Some(len) = synack_len {
            inner.counts.synacks += 1;
            if len + FULL_SLACK >= CHITCHAT_BUDGET {
                inner.counts.full_synacks += 1;
            }
        }
        let linked = self.dialect == Dialect::Linked;
        let frame = match linked {
            true => inner.link(from, to)?.encode(out),
            false => out.plain_frame(),
        };
        if frame.len() > MAX_GOSSIP_FRAME {
            bail!("a frame of {} bytes from {from}", frame.len());
        }
        inner.counts.bytes += frame.len() as u64;
        inner.counts.frames += 1;
        inner.counts.linked += u64::from(linked && written_as_changes(&frame));
        let Some(inbox) = inner.inboxes.get(&to).cloned() else {
            return Ok(());
        };
        let message = inner
            .link(to, from)?
            .decode(&frame)
            .with_context(|| format!("{to} refused a frame from {from}"))?;
        let message = to_chitchat(&message)?;
        // A full inbox drops the message, as a full queue does in the agent.
        let _ = inbox.try_send((from, message));
        Ok(())
    }
}

/// Whether `frame` is linked and written against a digest of the receiver's (its base sequence
/// number, after its own, is not 0).
fn written_as_changes(frame: &[u8]) -> bool {
    match open_frame(frame) {
        Ok((KIND_GOSSIP_LINKED, body)) => body.get(4..8).is_some_and(|b| b != [0; 4]),
        _ => false,
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Transport for FrameTransport {
    async fn open(&self, listen_addr: SocketAddr) -> Result<Box<dyn Socket>> {
        let (tx, rx) = mpsc::channel(INBOX);
        let mut inner = lock(&self.inner);
        if inner.inboxes.contains_key(&listen_addr) {
            bail!("address {listen_addr} is taken");
        }
        inner.inboxes.insert(listen_addr, tx);
        inner
            .budgets
            .insert(listen_addr, LinkBudget::new(self.link_budget));
        Ok(Box::new(FrameSocket {
            me: listen_addr,
            transport: self.clone(),
            inbox: rx,
            recent_digest: None,
        }))
    }
}

struct FrameSocket {
    me: SocketAddr,
    transport: FrameTransport,
    inbox: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
    recent_digest: Option<Arc<[DigestEntry]>>,
}

#[async_trait]
impl Socket for FrameSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> Result<()> {
        let synack_len =
            matches!(message, ChitchatMessage::SynAck { .. }).then(|| message.serialized_len());
        let out = Outgoing::new(message.serialize_to_vec(), &mut self.recent_digest);
        self.transport.carry(self.me, to, &out, synack_len)
    }

    async fn recv(&mut self) -> Result<(SocketAddr, ChitchatMessage)> {
        self.inbox.recv().await.context("transport closed")
    }
}

impl Drop for FrameSocket {
    fn drop(&mut self) {
        let mut inner = lock(&self.transport.inner);
        inner.inboxes.remove(&self.me);
        let me = self.me;
        inner.links.retain(|(a, b), _| *a != me && *b != me);
    }
}
