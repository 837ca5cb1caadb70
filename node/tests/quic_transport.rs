//! The QUIC transport in-process: real endpoints on 127.0.0.1 with mutual TLS.
//!
//! - A node whose gossip claims another id than its certificate never joins.
//! - Malformed, truncated, oversized and terabyte-claiming frames sent over an authenticated
//!   connection are refused and counted; the node goes on gossiping.
//! - Two current nodes send their digests as changes; a node that offers only the plain dialect
//!   (an older version) gossips with both all the same.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dvrmesh_node::mesh::gossip::{self, GossipSettings};
use dvrmesh_node::mesh::pki::{self as tls, Credentials};
use dvrmesh_node::mesh::transport::{Dialect, QuicTransport, TransportStats};
use dvrmesh_node::mesh::view::{self, MemberState, ViewHandle};
use dvrmesh_node::mesh::wire::MAX_GOSSIP_FRAME;
use mesh_proto::{dvr_mac_for, NodeFacts, NodeId, NodeMode, Priority};

struct Node {
    _handle: chitchat::ChitchatHandle,
    view: ViewHandle,
    stats: Arc<TransportStats>,
    addr: SocketAddr,
}

fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
}

fn creds(dir: &Path, cert_id: &str) -> Result<Credentials> {
    let id = NodeId::new(cert_id)?;
    let out = dir.join(cert_id);
    if !out.join(tls::NODE_CERT).exists() {
        tls::issue_node_cert(&dir.join("ca"), &id, &out, 1)?;
    }
    Ok(Credentials::load(
        &dir.join("ca").join(tls::CA_CERT),
        &out.join(tls::NODE_CERT),
        &out.join(tls::NODE_KEY),
    )?)
}

/// A compute node's facts and gossip settings for `id` listening on `addr`, seeded by `seed`.
fn gossip_setup(
    id: &NodeId,
    addr: SocketAddr,
    seed: Option<SocketAddr>,
) -> Result<(NodeFacts, GossipSettings)> {
    let facts = NodeFacts::new(
        id.clone(),
        NodeMode::Dvr,
        "192.0.2.9".parse()?,
        dvr_mac_for(id),
        Priority::new(100)?,
        Default::default(),
    )?;
    let settings = GossipSettings {
        node_id: id.clone(),
        generation: 1,
        listen: addr,
        advertise: addr,
        seeds: seed.into_iter().map(|s| s.to_string()).collect(),
        cluster_id: "test".into(),
        gossip_interval: Duration::from_millis(50),
        dead_node_grace_period: gossip::DEFAULT_DEAD_NODE_GRACE,
        failure_window: dvrmesh_node::mesh::gossip::DEFAULT_FAILURE_WINDOW,
    };
    Ok((facts, settings))
}

async fn start_node(
    dir: &Path,
    cert_id: &str,
    claimed_id: &str,
    seed: Option<SocketAddr>,
) -> Result<Node> {
    start_node_speaking(dir, cert_id, claimed_id, seed, Dialect::Linked).await
}

async fn start_node_speaking(
    dir: &Path,
    cert_id: &str,
    claimed_id: &str,
    seed: Option<SocketAddr>,
    dialect: Dialect,
) -> Result<Node> {
    let creds = creds(dir, cert_id)?;
    let addr = free_addr();
    let id = NodeId::new(claimed_id)?;
    let (facts, settings) = gossip_setup(&id, addr, seed)?;
    let transport = QuicTransport::speaking(&creds, settings.chitchat_id(), dialect)?;
    let signer = creds.signer()?;
    let cert = creds.published_cert()?;
    let handle = gossip::start(&settings, &signer, cert, &facts, Vec::new(), &transport).await?;
    let (view, _task) = view::spawn_writer(
        handle.chitchat(),
        id,
        Duration::from_millis(50),
        std::sync::Arc::new(dvrmesh_node::mesh::pki::signing::TrustAll),
        Duration::from_secs(10),
        dvrmesh_node::tenant::Writers::AnyNode,
    );
    Ok(Node {
        _handle: handle,
        view,
        stats: transport.stats(),
        addr,
    })
}

fn alive_ids(v: &ViewHandle) -> Vec<String> {
    v.load()
        .members
        .values()
        .filter(|m| m.state == MemberState::Alive)
        .map(|m| m.facts.node_id().to_string())
        .collect()
}

async fn wait_for(budget: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < budget {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gossiping_another_id_than_its_certificate_never_joins() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    tls::init_ca(&tmp.path().join("ca"), 1)?;
    let a = start_node(tmp.path(), "a", "a", None).await?;
    let b = start_node(tmp.path(), "b", "b", Some(a.addr)).await?;
    assert!(
        wait_for(Duration::from_secs(5), || alive_ids(&a.view) == ["a", "b"]
            && alive_ids(&b.view) == ["a", "b"])
        .await
    );
    // Certificate for "mallory", gossip as "a-prime"; seeded at a.
    let m = start_node(tmp.path(), "mallory", "a-prime", Some(a.addr)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for v in [&a.view, &b.view] {
        let ids: Vec<String> = v.load().members.keys().map(|k| k.to_string()).collect();
        assert_eq!(ids, ["a", "b"], "an impostor appeared");
    }
    assert_eq!(
        alive_ids(&m.view),
        ["a-prime"],
        "the impostor must learn nothing of the cluster"
    );
    let rejections =
        a.stats.snapshot().identity_rejections + b.stats.snapshot().identity_rejections;
    assert!(rejections > 0, "identity rejections should be counted");
    Ok(())
}

async fn raw_send(conn: &quinn::Connection, bytes: &[u8]) -> Result<()> {
    let mut s = conn.open_uni().await?;
    s.write_all(bytes).await?;
    s.finish()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_refused_and_gossip_goes_on() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    tls::init_ca(&tmp.path().join("ca"), 1)?;
    let a = start_node(tmp.path(), "a", "a", None).await?;

    // A raw client holding a valid certificate.
    let creds = creds(tmp.path(), "raw")?;
    let qcc = quinn::crypto::rustls::QuicClientConfig::try_from(creds.client_config()?)?;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qcc)));
    let conn = ep
        .connect(a.addr, "dvrmesh")?
        .await
        .context("authenticated connection")?;

    let mut terabyte = vec![1u8, 1];
    let mut len: u64 = 1 << 40;
    while len >= 0x80 {
        terabyte.push((len as u8) | 0x80);
        len >>= 7;
    }
    terabyte.push(len as u8);
    terabyte.extend([0u8; 32]);
    let valid_header_truncated = mesh_proto::encode_frame(1, &[0u8; 100])[..50].to_vec();
    let garbage_chitchat = mesh_proto::encode_frame(1, b"\xff\xfe definitely not chitchat");
    let garbage_linked = mesh_proto::encode_frame(2, b"\0\0\0\0\0\0\0\0\xff\xfe not linked either");
    let oversized = vec![0u8; 200_000];
    let hostile: Vec<&[u8]> = vec![
        b"",
        b"\x01",
        b"junk",
        &terabyte,
        &valid_header_truncated,
        &garbage_chitchat,
        &garbage_linked,
        &oversized,
    ];
    for h in &hostile {
        // The node may stop an oversize stream before the client finishes writing it.
        if let Err(e) = raw_send(&conn, h).await {
            assert!(
                h.len() > MAX_GOSSIP_FRAME && e.to_string().contains("stopped"),
                "{} bytes: {e}",
                h.len()
            );
        }
    }
    let n = hostile.len() as u64;
    assert!(
        wait_for(Duration::from_secs(5), || a
            .stats
            .snapshot()
            .rejected_frames
            >= n)
        .await,
        "expected {n} rejected frames, saw {:?}",
        a.stats.snapshot()
    );
    // The node still gossips: a new peer joins it.
    let b = start_node(tmp.path(), "b", "b", Some(a.addr)).await?;
    assert!(
        wait_for(Duration::from_secs(5), || alive_ids(&a.view) == ["a", "b"]
            && alive_ids(&b.view) == ["a", "b"])
        .await
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_another_ca_cannot_connect() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    tls::init_ca(&tmp.path().join("ca"), 1)?;
    let a = start_node(tmp.path(), "a", "a", None).await?;
    let other = tmp.path().join("other");
    tls::init_ca(&other.join("ca"), 1)?;
    let creds = creds(&other, "x")?;
    let qcc = quinn::crypto::rustls::QuicClientConfig::try_from(creds.client_config()?)?;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qcc)));
    // Our side refuses their server certificate outright (it does not chain to our CA).
    let result = ep.connect(a.addr, "dvrmesh")?.await;
    assert!(result.is_err(), "a foreign-CA handshake must fail");
    assert!(
        wait_for(Duration::from_secs(3), || a
            .stats
            .snapshot()
            .handshake_failures
            > 0)
        .await
    );
    Ok(())
}

/// The accept loop is handed to the agent to supervise: it runs while gossip runs, is handed out
/// once, and ends when the endpoint closes (so the agent sees it end, rather than a node silently
/// refusing every inbound peer while its API answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_is_handed_out_once_and_ends_with_the_endpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    tls::init_ca(&dir.path().join("ca"), 1)?;
    let creds = creds(dir.path(), "a")?;
    let (facts, settings) = gossip_setup(&NodeId::new("a")?, free_addr(), None)?;
    let transport = QuicTransport::new(&creds, settings.chitchat_id())?;
    assert!(
        transport.accept_task().is_none(),
        "no accept loop exists before the socket is open"
    );
    let signer = creds.signer()?;
    let cert = creds.published_cert()?;
    let handle = gossip::start(&settings, &signer, cert, &facts, Vec::new(), &transport).await?;
    let accepting = transport
        .accept_task()
        .context("the open socket's accept loop")?;
    assert!(transport.accept_task().is_none(), "handed out twice");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !accepting.is_finished(),
        "the accept loop ended while gossip runs"
    );
    handle.shutdown().await?;
    tokio::time::timeout(Duration::from_secs(5), accepting)
        .await
        .context("the accept loop outlived its endpoint by 5 s")??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_nodes_send_digests_as_changes_and_an_older_node_still_gossips_with_them(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    tls::init_ca(&tmp.path().join("ca"), 1)?;
    let a = start_node_speaking(tmp.path(), "a", "a", None, Dialect::Linked).await?;
    let old =
        start_node_speaking(tmp.path(), "old", "old", Some(a.addr), Dialect::PlainOnly).await?;
    let c = start_node_speaking(tmp.path(), "c", "c", Some(a.addr), Dialect::Linked).await?;
    let nodes = [&a, &old, &c];
    assert!(
        wait_for(Duration::from_secs(10), || nodes.iter().all(|n| alive_ids(
            &n.view
        ) == [
            "a", "c", "old"
        ]))
        .await,
        "not every node sees the three alive: {:?}",
        nodes.map(|n| alive_ids(&n.view))
    );
    assert!(
        wait_for(Duration::from_secs(5), || a.stats.snapshot().linked_sent
            > 20
            && c.stats.snapshot().linked_sent > 20)
        .await,
        "the current nodes wrote no digests as changes: {:?} {:?}",
        a.stats.snapshot(),
        c.stats.snapshot()
    );
    assert_eq!(old.stats.snapshot().linked_sent, 0);
    for n in nodes {
        let s = n.stats.snapshot();
        assert_eq!(s.rejected_frames, 0, "{s:?}");
    }
    Ok(())
}
