//! The rogue member: it holds a valid node certificate from the cluster CA and speaks the real
//! wire. One half is an ordinary member (the library's gossip, its own key space sealed by its
//! own key), through which it publishes lies about itself; the other half is a raw QUIC
//! connection to one honest node, on which it sends gossip messages and election datagrams no
//! honest node sends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chitchat::ChitchatId;
use dvrmesh_node::mesh::codec::{self, DigestEntry, Kv, KvStatus, Message, NodeDelta};
use dvrmesh_node::mesh::gossip::{self, GossipSettings};
use dvrmesh_node::mesh::link::{Link, LinkBudget, DEFAULT_LINK_BUDGET};
use dvrmesh_node::mesh::own::OwnState;
use dvrmesh_node::mesh::pki::sealed::{self, Place};
use dvrmesh_node::mesh::pki::{Credentials, Signer};
use dvrmesh_node::mesh::transport::QuicTransport;
use dvrmesh_node::mesh::wire::KIND_GOSSIP;
use mesh_proto::{dvr_mac_for, ElectionMessage, NodeFacts, NodeId, NodeMode, Priority};

/// The rogue's certificate names it so.
pub const ROGUE: &str = "rogue";

/// What the rogue learned of one honest node life from its gossip.
#[derive(Clone, Debug)]
pub struct Learned {
    /// Its digest entry (node life, heartbeat, versions).
    pub entry: DigestEntry,
    /// Its values as the honest node relayed them (sealed by their owner).
    pub kvs: Vec<Kv>,
}

/// A member with a valid certificate that attacks the cluster.
pub struct Rogue {
    signer: Signer,
    /// Its own key space, written through the library (sealed, legitimate on the wire).
    pub own: OwnState,
    _gossip: chitchat::ChitchatHandle,
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    heard: Arc<Mutex<Vec<Message>>>,
}

impl Rogue {
    /// Joins through `seed` as an ordinary member, then opens a raw connection to `target`.
    pub async fn join(dir: &Path, seed: SocketAddr, target: SocketAddr) -> Result<Rogue> {
        let creds = Credentials::load(
            &dir.join("ca/ca.pem"),
            &dir.join(ROGUE).join("node.pem"),
            &dir.join(ROGUE).join("node.key"),
        )?;
        let listen = free_addr()?;
        let id = NodeId::new(ROGUE)?;
        let facts = NodeFacts::new(
            id.clone(),
            NodeMode::Dvr,
            "127.0.0.9".parse()?,
            dvr_mac_for(&id),
            Priority::new(100)?,
            Default::default(),
        )?;
        let settings = GossipSettings {
            node_id: id,
            generation: 1,
            listen,
            advertise: listen,
            seeds: vec![seed.to_string()],
            cluster_id: "dvrmesh".into(),
            gossip_interval: Duration::from_millis(100),
            dead_node_grace_period: gossip::DEFAULT_DEAD_NODE_GRACE,
            failure_window: dvrmesh_node::mesh::gossip::DEFAULT_FAILURE_WINDOW,
        };
        let transport = QuicTransport::new(&creds, settings.chitchat_id())?;
        let signer = creds.signer()?;
        let cert = creds.published_cert()?;
        let handle = gossip::start(&settings, &signer, cert, &facts, Vec::new(), &transport)
            .await
            .context("the rogue's ordinary gossip")?;
        let own = OwnState::new(
            handle.chitchat(),
            Arc::new(creds.signer()?),
            settings.chitchat_id(),
        );
        let (endpoint, conn) = raw_connection(&creds, target).await?;
        let heard = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(collect_replies(conn.clone(), heard.clone()));
        Ok(Rogue {
            signer,
            own,
            _gossip: handle,
            conn,
            _endpoint: endpoint,
            heard,
        })
    }

    /// Sends one chitchat message on the raw connection, as a gossip frame.
    pub async fn send(&self, msg: &Message) -> Result<()> {
        self.send_bytes(&mesh_proto::encode_frame(KIND_GOSSIP, &codec::encode(msg)))
            .await
    }

    /// Sends raw bytes as one gossip stream. The target may stop a stream it refuses.
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        let mut s = self.conn.open_uni().await?;
        s.write_all(bytes).await?;
        s.finish()?;
        Ok(())
    }

    /// Sends one election datagram.
    pub fn datagram(&self, msg: &ElectionMessage) -> Result<()> {
        self.conn.send_datagram(msg.encode()?.into())?;
        Ok(())
    }

    /// Asks the target for everything (a digest that knows nothing) and returns what it says of
    /// node `node`.
    pub async fn learn(&self, node: &str) -> Result<Learned> {
        for _ in 0..50 {
            self.send(&Message::Syn {
                digest: Vec::new(),
                cluster_id: "dvrmesh".into(),
            })
            .await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(l) = self.find(node) {
                return Ok(l);
            }
        }
        bail!("the target never told the rogue about {node}")
    }

    fn find(&self, node: &str) -> Option<Learned> {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.iter().rev().find_map(|m| {
            let Message::SynAck { digest, delta } = m else {
                return None;
            };
            let entry = digest.iter().find(|e| &*e.id.node_id == node)?.clone();
            let kvs = delta
                .iter()
                .find(|d| d.id == entry.id)
                .map(|d| d.kvs.clone())?;
            Some(Learned { entry, kvs })
        })
    }

    /// A value for `key` in `victim`'s key space at `version`, sealed with the rogue's own key
    /// (the only key it has).
    pub fn forge(&self, victim: &ChitchatId, key: &str, version: u64, payload: &str) -> Kv {
        let place = Place {
            id: victim,
            key,
            version,
            tombstone: false,
        };
        Kv {
            key: key.into(),
            value: sealed::seal(&self.signer, place, payload).expect("sealing"),
            version,
            status: KvStatus::Set,
        }
    }

    /// Signs bytes with the rogue's key.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

/// A delta that appends `kvs` to what `victim` last published, as a relay would send it.
pub fn append_to(victim: &Learned, kvs: Vec<Kv>) -> Message {
    Message::Ack {
        delta: vec![NodeDelta {
            id: victim.entry.id.clone(),
            last_gc_version: victim.entry.last_gc_version,
            from_version_excluded: victim.entry.max_version,
            kvs,
            set_max_version: None,
        }],
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

async fn raw_connection(
    creds: &Credentials,
    target: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(creds.client_config()?)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(target, "dvrmesh")?
        .await
        .context("the rogue's raw connection")?;
    Ok((endpoint, conn))
}

/// Keeps every gossip message the target sends back on the raw connection, plain or linked (the
/// rogue's client offers the current ALPN, so the target writes its digests as changes).
async fn collect_replies(conn: quinn::Connection, heard: Arc<Mutex<Vec<Message>>>) {
    let mut link = Link::new(LinkBudget::new(DEFAULT_LINK_BUDGET));
    while let Ok(mut stream) = conn.accept_uni().await {
        let Ok(bytes) = stream.read_to_end(1 << 20).await else {
            continue;
        };
        if let Ok(msg) = link.decode(&bytes) {
            let mut h = heard.lock().unwrap_or_else(|p| p.into_inner());
            if h.len() < 1000 {
                h.push(msg);
            }
        }
    }
}
