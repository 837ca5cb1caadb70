//! Many nodes' gossip in one process on virtual time: dvrmesh's gossip start (its key space with a real
//! certificate, sealed values, its failure detector settings) over an in-memory transport that
//! writes the agents' gossip frames ([`super::frames`]), on a paused tokio clock, so 1 000 nodes
//! run on one core and their rounds, not the machine, set the figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::frames::FrameTransport;
use anyhow::{anyhow, bail, Result};
use chitchat::ChitchatHandle;
use dvrmesh_node::mesh::gossip::{self, GossipSettings};
use dvrmesh_node::mesh::keys::KEY_NODE_FACTS;
use dvrmesh_node::mesh::link::DEFAULT_LINK_BUDGET;
use dvrmesh_node::mesh::pki::{init_ca, issue_node_cert, Credentials};
use dvrmesh_node::mesh::transport::Dialect;
use mesh_proto::{
    dvr_mac_for, ExternalMapping, InterfaceName, Name, NodeFacts, NodeId, NodeMode, Priority,
};

/// One simulated cluster size's figures.
#[derive(Clone, Debug)]
pub struct SimFigures {
    /// Nodes.
    pub nodes: usize,
    /// Gossip interval.
    pub interval: Duration,
    /// How the nodes write their frames.
    pub dialect: Dialect,
    /// Virtual time until every node holds the facts of some other node: the join, when all
    /// start at once and reach the cluster through the seeds.
    pub joined: Duration,
    /// Virtual time until every node knows every node alive with its facts.
    pub converged: Duration,
    /// Bytes sent (all nodes) until then, per node.
    pub bytes_to_converge_per_node: f64,
    /// Idle after convergence: bytes sent per node per second.
    pub idle_bytes_per_node_s: f64,
    /// Real time the simulation took.
    pub wall: Duration,
    /// Digest entries each node's links may keep ([`link_budget`]).
    pub link_budget: usize,
    /// Share of the frames sent idle whose digest went as changes against one the peer kept.
    pub idle_linked_share: f64,
    /// Idle time between convergence and the idle window.
    pub idle_settle: Duration,
    /// Until convergence: the share of SynAcks that filled chitchat's message budget.
    pub full_synacks: f64,
}

/// Digest entries a simulated node's links may keep: an agent's budget up to 300 nodes; an
/// eighth of it at 1 000, where every node of one process keeping an agent's (~16 MiB each)
/// would not fit this machine. With fewer links kept, more digests go whole: the bytes of the
/// largest cluster are the more pessimistic for it.
pub fn link_budget(nodes: usize) -> usize {
    if nodes <= 300 {
        DEFAULT_LINK_BUDGET
    } else {
        DEFAULT_LINK_BUDGET / 8
    }
}

/// How long a simulated cluster may take to converge (virtual) before the run fails.
const CONVERGE_BUDGET: Duration = Duration::from_secs(300);
/// Idle window after convergence (virtual).
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// Idle time before the window up to 300 nodes (virtual): links a node has not yet used since it
/// joined carry whole digests the first time, which a settled cluster no longer does (at 100
/// nodes a node exchanges with a given peer every 3 s or so). At 1 000 nodes the links budget
/// keeps most digests whole anyway, and each virtual second there takes a minute and a half.
fn idle_settle(nodes: usize) -> Duration {
    if nodes <= 300 {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    }
}
/// The failure detector's window per peer here: an agent keeps 1 000 intervals (8 KB) for each
/// peer, which 1 000 nodes in one process would hold a million times (8 GB); a window is only
/// read to judge a silent peer, which no simulated node is.
const FAILURE_WINDOW: usize = 50;
/// Seeds every node starts from, as an operator lists a few.
const SEEDS: usize = 3;

/// Runs `nodes` simulated nodes speaking `dialect`, gossiping every `interval` until they
/// converge, then idles them.
pub fn run(nodes: usize, interval: Duration, dialect: Dialect) -> Result<SimFigures> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let wall = Instant::now();
    let mut f = rt.block_on(simulate(nodes, interval, dialect))?;
    f.wall = wall.elapsed();
    Ok(f)
}

/// A real node certificate and key, which every simulated node publishes and seals with (the
/// in-memory transport checks no identity): the bytes on the wire are a real cluster's.
struct SimIdentity {
    _dir: tempfile::TempDir,
    credentials: Credentials,
    cert_pem: String,
}

impl SimIdentity {
    fn new() -> Result<SimIdentity> {
        let dir = tempfile::tempdir()?;
        let (ca_cert, _) = init_ca(&dir.path().join("ca"), 1)?;
        let node = NodeId::new("sim-node")?;
        let (cert, key) = issue_node_cert(&dir.path().join("ca"), &node, &dir.path().join("n"), 1)?;
        let credentials = Credentials::load(&ca_cert, &cert, &key)?;
        let cert_pem = std::fs::read_to_string(&cert)?;
        Ok(SimIdentity {
            _dir: dir,
            credentials,
            cert_pem,
        })
    }
}

async fn simulate(n: usize, interval: Duration, dialect: Dialect) -> Result<SimFigures> {
    let identity = SimIdentity::new()?;
    let transport = FrameTransport::new(dialect, link_budget(n));
    let seeds: Vec<String> = (0..SEEDS.min(n)).map(|i| addr(i).to_string()).collect();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let facts = facts_for(i)?;
        let settings = GossipSettings {
            node_id: facts.node_id().clone(),
            generation: 1,
            listen: addr(i),
            advertise: addr(i),
            seeds: seeds.clone(),
            cluster_id: "scale-sim".into(),
            gossip_interval: interval,
            dead_node_grace_period: gossip::DEFAULT_DEAD_NODE_GRACE,
            failure_window: FAILURE_WINDOW,
        };
        let signer = identity.credentials.signer()?;
        let cert = identity.cert_pem.clone();
        let handle = gossip::start(&settings, &signer, cert, &facts, vec![], &transport)
            .await
            .map_err(|e| anyhow!("node {i}: {e}"))?;
        handles.push(handle);
    }
    let start = tokio::time::Instant::now();
    let mut joined = None;
    loop {
        let progress = progress(&handles, n).await;
        if progress.joined {
            joined.get_or_insert(start.elapsed());
        }
        if progress.converged {
            break;
        }
        if start.elapsed() > CONVERGE_BUDGET {
            bail!("{n} simulated nodes did not converge within {CONVERGE_BUDGET:?} (virtual)");
        }
        tokio::time::sleep(interval).await;
    }
    let converged_after = start.elapsed();
    let until_converged = transport.counts();
    tokio::time::sleep(idle_settle(n)).await;
    let idle_start = transport.counts();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = transport.counts();
    let idle_bytes = idle.bytes - idle_start.bytes;
    let idle_frames = (idle.frames - idle_start.frames).max(1);
    for h in handles {
        let _ = h.shutdown().await;
    }
    Ok(SimFigures {
        nodes: n,
        interval,
        dialect,
        joined: joined.unwrap_or(converged_after),
        converged: converged_after,
        bytes_to_converge_per_node: until_converged.bytes as f64 / n as f64,
        idle_bytes_per_node_s: idle_bytes as f64 / n as f64 / IDLE_WINDOW.as_secs_f64(),
        wall: Duration::ZERO,
        link_budget: link_budget(n),
        idle_linked_share: (idle.linked - idle_start.linked) as f64 / idle_frames as f64,
        idle_settle: idle_settle(n),
        full_synacks: until_converged.full_synack_share(),
    })
}

/// How far a simulated cluster has come.
struct Progress {
    /// Every node holds the facts of at least one other node.
    joined: bool,
    /// Every node counts `n` live nodes and holds every node's facts.
    converged: bool,
}

async fn progress(handles: &[ChitchatHandle], n: usize) -> Progress {
    let mut p = Progress {
        joined: true,
        converged: true,
    };
    for h in handles {
        let chitchat = h.chitchat();
        let cc = chitchat.lock().await;
        let states = cc.node_states();
        let with_facts = states
            .values()
            .filter(|s| s.get(KEY_NODE_FACTS).is_some())
            .count();
        p.joined &= with_facts >= 2.min(n);
        p.converged &= with_facts == n && states.len() == n && cc.live_nodes().count() == n;
        if !p.joined {
            return p;
        }
    }
    p
}

fn addr(i: usize) -> SocketAddr {
    ([127, 0, 0, 1], 20_000 + i as u16).into()
}

/// A node's facts: every tenth a network node, the rest compute nodes on one external network.
fn facts_for(i: usize) -> Result<NodeFacts> {
    let id = NodeId::new(format!("sim-{i}"))?;
    let mode = if i.is_multiple_of(10) {
        NodeMode::DvrSnat
    } else {
        NodeMode::Dvr
    };
    let external = BTreeMap::from([(
        Name::new("public")?,
        ExternalMapping {
            interface: InterfaceName::new("eth1")?,
        },
    )]);
    Ok(NodeFacts::new(
        id.clone(),
        mode,
        std::net::Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8),
        dvr_mac_for(&id),
        Priority::new((i % 254 + 1) as u8)?,
        external,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_simulated_cluster_converges_and_linked_digests_cut_its_idle_bytes() {
        let every = Duration::from_millis(200);
        let plain = run(12, every, Dialect::PlainOnly).unwrap();
        let linked = run(12, every, Dialect::Linked).unwrap();
        for f in [&plain, &linked] {
            assert_eq!(f.nodes, 12);
            assert!(f.converged > Duration::ZERO && f.converged < Duration::from_secs(30));
            assert!(
                f.joined > Duration::ZERO && f.joined <= f.converged,
                "{f:?}"
            );
            assert!(f.bytes_to_converge_per_node > 0.0);
            // Idle gossip still moves digests and heartbeats.
            assert!(f.idle_bytes_per_node_s > 0.0);
        }
        assert_eq!(plain.idle_linked_share, 0.0);
        // Syns and SynAcks (two of a round's three messages) go linked.
        assert!(linked.idle_linked_share > 0.5, "{linked:?}");
        assert!(
            linked.idle_bytes_per_node_s * 2.0 < plain.idle_bytes_per_node_s,
            "linked {:.0} B/s against plain {:.0} B/s",
            linked.idle_bytes_per_node_s,
            plain.idle_bytes_per_node_s
        );
    }
}
