//! Many nodes' gossip in one process on virtual time: dvrmesh's gossip start (its key space with a real
//! certificate, sealed values, its failure detector settings) over chitchat's in-memory transport, on a paused tokio clock, so
//! 1 000 nodes run on one core and their rounds, not the machine, set the figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use chitchat::transport::ChannelTransport;
use chitchat::ChitchatHandle;
use dvrmesh_node::mesh::gossip::{self, GossipSettings};
use dvrmesh_node::mesh::keys::KEY_NODE_FACTS;
use dvrmesh_node::mesh::pki::{init_ca, issue_node_cert, Credentials};
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
    /// Virtual time until every node knows every node alive with its facts.
    pub converged: Duration,
    /// Bytes sent (all nodes) until then, per node.
    pub bytes_to_converge_per_node: f64,
    /// Idle after convergence: bytes sent per node per second.
    pub idle_bytes_per_node_s: f64,
    /// Real time the simulation took.
    pub wall: Duration,
}

/// How long a simulated cluster may take to converge (virtual) before the run fails.
const CONVERGE_BUDGET: Duration = Duration::from_secs(300);
/// Idle window after convergence (virtual).
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// The failure detector's window per peer here: an agent keeps 1 000 intervals (8 KB) for each
/// peer, which 1 000 nodes in one process would hold a million times (8 GB); a window is only
/// read to judge a silent peer, which no simulated node is.
const FAILURE_WINDOW: usize = 50;
/// Seeds every node starts from, as an operator lists a few.
const SEEDS: usize = 3;

/// Runs `nodes` simulated nodes gossiping every `interval` until they converge, then idles them.
pub fn run(nodes: usize, interval: Duration) -> Result<SimFigures> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let wall = Instant::now();
    let mut f = rt.block_on(simulate(nodes, interval))?;
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

async fn simulate(n: usize, interval: Duration) -> Result<SimFigures> {
    let identity = SimIdentity::new()?;
    let transport = ChannelTransport::with_mtu(65_507);
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
    while !converged(&handles, n).await {
        if start.elapsed() > CONVERGE_BUDGET {
            bail!("{n} simulated nodes did not converge within {CONVERGE_BUDGET:?} (virtual)");
        }
        tokio::time::sleep(interval).await;
    }
    let converged_after = start.elapsed();
    let at_convergence = transport.statistics().num_bytes_total;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_bytes = transport.statistics().num_bytes_total - at_convergence;
    for h in handles {
        let _ = h.shutdown().await;
    }
    Ok(SimFigures {
        nodes: n,
        interval,
        converged: converged_after,
        bytes_to_converge_per_node: at_convergence as f64 / n as f64,
        idle_bytes_per_node_s: idle_bytes as f64 / n as f64 / IDLE_WINDOW.as_secs_f64(),
        wall: Duration::ZERO,
    })
}

/// Whether every node counts `n` live nodes and holds every node's facts.
async fn converged(handles: &[ChitchatHandle], n: usize) -> bool {
    for h in handles {
        let chitchat = h.chitchat();
        let cc = chitchat.lock().await;
        if cc.live_nodes().count() != n {
            return false;
        }
        let states = cc.node_states();
        if states.len() < n || states.values().any(|s| s.get(KEY_NODE_FACTS).is_none()) {
            return false;
        }
    }
    true
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
    fn a_small_simulated_cluster_converges_and_counts_its_bytes() {
        let f = run(12, Duration::from_millis(200)).unwrap();
        assert_eq!(f.nodes, 12);
        assert!(f.converged > Duration::ZERO && f.converged < Duration::from_secs(30));
        assert!(f.bytes_to_converge_per_node > 0.0);
        // Idle gossip still moves digests and heartbeats.
        assert!(f.idle_bytes_per_node_s > 0.0);
    }
}
