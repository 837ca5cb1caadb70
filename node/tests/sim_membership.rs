//! In-process simulation: 100 agents' gossip and view code over chitchat's in-memory transport, on
//! a paused tokio clock. Every view must converge on every member and its facts; a stopped node
//! must be marked dead everywhere. Virtual convergence and detection times are printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use chitchat::ChitchatHandle;
use dvrmesh_node::mesh::gossip::{self, GossipSettings};
use dvrmesh_node::mesh::pki::Signer;
use dvrmesh_node::mesh::view::{self, MemberState, ViewHandle};
use mesh_proto::{
    dvr_mac_for, ExternalMapping, InterfaceName, Name, NodeFacts, NodeId, NodeMode, Priority,
};
use tokio::time::Instant;

const NODES: usize = 100;
const GOSSIP: Duration = Duration::from_millis(100);
/// Budgets in virtual time; generous so the test asserts convergence, not speed.
const CONVERGE_BUDGET: Duration = Duration::from_secs(60);
const DETECT_BUDGET: Duration = Duration::from_secs(60);

struct SimNode {
    facts: NodeFacts,
    handle: Option<ChitchatHandle>,
    view: ViewHandle,
}

fn facts_for(i: usize) -> NodeFacts {
    let id = NodeId::new(format!("n{i}")).expect("valid id");
    let mode = match i % 10 {
        0 => NodeMode::DvrSnat,
        9 => NodeMode::DvrNoExternal,
        _ => NodeMode::Dvr,
    };
    let mut external = BTreeMap::new();
    if mode != NodeMode::DvrNoExternal {
        external.insert(
            Name::new("public").expect("name"),
            ExternalMapping {
                interface: InterfaceName::new("eth1").expect("ifname"),
            },
        );
    }
    NodeFacts::new(
        id.clone(),
        mode,
        std::net::Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8),
        dvr_mac_for(&id),
        Priority::new((i % 254 + 1) as u8).expect("priority"),
        external,
    )
    .expect("valid facts")
}

fn addr(i: usize) -> SocketAddr {
    ([127, 0, 0, 1], 20_000 + i as u16).into()
}

fn converged(nodes: &[SimNode], expected: &BTreeMap<NodeId, NodeFacts>) -> bool {
    nodes.iter().filter(|n| n.handle.is_some()).all(|n| {
        let v = n.view.load();
        v.members.len() == expected.len()
            && v.members
                .iter()
                .all(|(id, m)| m.state == MemberState::Alive && expected.get(id) == Some(&m.facts))
    })
}

#[tokio::test(start_paused = true)]
async fn hundred_nodes_converge_and_detect_a_stopped_node() {
    let transport = ChannelTransport::with_mtu(65_507);
    let mut nodes = Vec::with_capacity(NODES);
    let seeds: Vec<String> = (0..3).map(|i| addr(i).to_string()).collect();
    for i in 0..NODES {
        let facts = facts_for(i);
        let settings = GossipSettings {
            node_id: facts.node_id().clone(),
            generation: 1,
            listen: addr(i),
            advertise: addr(i),
            seeds: seeds.clone(),
            cluster_id: "sim".into(),
            gossip_interval: GOSSIP,
            dead_node_grace_period: gossip::DEFAULT_DEAD_NODE_GRACE,
            failure_window: dvrmesh_node::mesh::gossip::DEFAULT_FAILURE_WINDOW,
        };
        // No certificates in the simulation (and no filter on its transport): any key seals.
        let (signer, _) = Signer::generate_for_test();
        let cert = "simulated".to_string();
        let handle = gossip::start(&settings, &signer, cert, &facts, Vec::new(), &transport)
            .await
            .expect("gossip starts");
        let (view, _task) = view::spawn_writer(
            handle.chitchat(),
            facts.node_id().clone(),
            GOSSIP,
            std::sync::Arc::new(dvrmesh_node::mesh::pki::signing::TrustAll),
            Duration::from_secs(10),
            dvrmesh_node::tenant::Writers::AnyNode,
        );
        nodes.push(SimNode {
            facts,
            handle: Some(handle),
            view,
        });
    }
    let expected: BTreeMap<NodeId, NodeFacts> = nodes
        .iter()
        .map(|n| (n.facts.node_id().clone(), n.facts.clone()))
        .collect();

    let start = Instant::now();
    while !converged(&nodes, &expected) {
        assert!(
            start.elapsed() < CONVERGE_BUDGET,
            "views did not converge within {CONVERGE_BUDGET:?}"
        );
        tokio::time::sleep(GOSSIP).await;
    }
    let convergence = start.elapsed();

    // Idle, nothing published changes: a writer builds only on its once-a-second clock, not on
    // every wake-up.
    let builds =
        |nodes: &[SimNode]| -> Vec<u64> { nodes.iter().map(|n| n.view.stats().builds).collect() };
    let before = builds(&nodes);
    let idle = Duration::from_secs(5);
    tokio::time::sleep(idle).await;
    let most = builds(&nodes)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .max()
        .unwrap_or(0);
    let allowed = idle.as_secs() + 2;
    assert!(
        most <= allowed,
        "a writer built {most} views in {idle:?} of idle (at most {allowed}: once a second)"
    );
    assert!(nodes.iter().all(|n| n.view.stats().skipped > 0));

    let victim = 42;
    let victim_id = nodes[victim].facts.node_id().clone();
    let handle = nodes[victim].handle.take().expect("victim running");
    handle.shutdown().await.expect("victim stops");
    let stopped = Instant::now();
    loop {
        let all_see_dead = nodes.iter().filter(|n| n.handle.is_some()).all(|n| {
            n.view.load().members.get(&victim_id).map(|m| m.state) == Some(MemberState::Dead)
        });
        if all_see_dead {
            break;
        }
        assert!(
            stopped.elapsed() < DETECT_BUDGET,
            "stopped node not marked dead everywhere within {DETECT_BUDGET:?}"
        );
        tokio::time::sleep(GOSSIP).await;
    }
    let detection = stopped.elapsed();
    // Everybody else is still alive and unchanged.
    for n in nodes.iter().filter(|n| n.handle.is_some()) {
        let v = n.view.load();
        assert_eq!(v.members.len(), NODES);
        assert_eq!(v.alive().count(), NODES - 1);
    }
    let stats = transport.statistics();
    println!(
        "simulation: {NODES} nodes, gossip every {GOSSIP:?}: all views converged after {convergence:?} (virtual); \
         a stopped node was marked dead on all {} survivors after {detection:?} (virtual); \
         {} messages, {} bytes",
        NODES - 1,
        stats.num_messages_total,
        stats.num_bytes_total
    );
    for n in nodes.iter_mut() {
        if let Some(h) = n.handle.take() {
            let _ = h.shutdown().await;
        }
    }
}
