//! Simulation of the replicated store: 20 nodes in one process over chitchat's in-memory transport
//! on a paused clock, each running the real gossip, view, store and replication code.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use chitchat::ChitchatHandle;
use dvrmesh_node::mesh::gossip::{self, GossipSettings};
use dvrmesh_node::mesh::own::OwnState;
use dvrmesh_node::mesh::pki::Signer;
use dvrmesh_node::mesh::view::{self, ViewHandle};
use dvrmesh_node::store::{ConfigService, StoreSettings};
use dvrmesh_node::tenant::ops::ConfigRequest;
use dvrmesh_node::tenant::replicate::{replica_set, REPLICAS};
use mesh_proto::{
    dvr_mac_for, NodeFacts, NodeId, NodeMode, ObjectId, ObjectKind, Priority, Record, TenantObject,
};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NODES: usize = 20;
const GOSSIP: Duration = Duration::from_millis(100);
const DEAD_GRACE: Duration = Duration::from_secs(10);

struct SimNode {
    id: NodeId,
    own: OwnState,
    handle: Option<ChitchatHandle>,
    view: ViewHandle,
    store: Arc<ConfigService>,
    tasks: Vec<JoinHandle<()>>,
}

struct Sim {
    nodes: Vec<SimNode>,
    transport: ChannelTransport,
}

fn addr(i: usize) -> SocketAddr {
    ([127, 0, 0, 1], 30_000 + i as u16).into()
}

impl Sim {
    async fn start(n: usize) -> Sim {
        let transport = ChannelTransport::with_mtu(65_507);
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = NodeId::new(format!("n{i}")).expect("id");
            let facts = NodeFacts::new(
                id.clone(),
                NodeMode::Dvr,
                std::net::Ipv4Addr::new(10, 0, 0, i as u8 + 1),
                dvr_mac_for(&id),
                Priority::new(100).expect("p"),
                BTreeMap::new(),
            )
            .expect("facts");
            let settings = GossipSettings {
                node_id: id.clone(),
                generation: 1,
                listen: addr(i),
                advertise: addr(i),
                seeds: (0..3).map(|s| addr(s).to_string()).collect(),
                cluster_id: "sim".into(),
                gossip_interval: GOSSIP,
                dead_node_grace_period: DEAD_GRACE,
                failure_window: dvrmesh_node::mesh::gossip::DEFAULT_FAILURE_WINDOW,
            };
            // No certificates in the simulation (and no filter on its transport): any key seals.
            let (signer, _) = Signer::generate_for_test();
            let signer = std::sync::Arc::new(signer);
            let cert = "simulated".to_string();
            let handle = gossip::start(&settings, &signer, cert, &facts, Vec::new(), &transport)
                .await
                .expect("gossip");
            let (view, vt) = view::spawn_writer(
                handle.chitchat(),
                id.clone(),
                GOSSIP,
                std::sync::Arc::new(dvrmesh_node::mesh::pki::signing::TrustAll),
                Duration::from_secs(10),
                dvrmesh_node::tenant::Writers::AnyNode,
            );
            let own = OwnState::new(handle.chitchat(), signer, settings.chitchat_id());
            let store = ConfigService::new(
                id.clone(),
                own.clone(),
                view.clone(),
                StoreSettings::for_gossip_interval(GOSSIP, None),
            );
            let rt = tokio::spawn(store.clone().run_replication());
            nodes.push(SimNode {
                id,
                own,
                handle: Some(handle),
                view,
                store,
                tasks: vec![vt, rt],
            });
        }
        let sim = Sim { nodes, transport };
        sim.wait("all members alive", Duration::from_secs(30), |s| {
            s.running()
                .all(|n| n.view.load().alive().count() == n_alive(s))
        })
        .await;
        sim
    }

    /// Cuts every link between the two sides (both ways), or heals them.
    async fn partition(&self, a: &[usize], b: &[usize], cut: bool) {
        for i in a {
            for j in b {
                if cut {
                    self.transport.remove_link(addr(*i), addr(*j)).await;
                } else {
                    self.transport.add_link(addr(*i), addr(*j)).await;
                }
            }
        }
    }

    fn running(&self) -> impl Iterator<Item = &SimNode> {
        self.nodes.iter().filter(|n| n.handle.is_some())
    }

    async fn wait(&self, what: &str, budget: Duration, f: impl Fn(&Sim) -> bool) -> Duration {
        let start = Instant::now();
        while !f(self) {
            assert!(
                start.elapsed() < budget,
                "{what}: not reached within {budget:?} (virtual)"
            );
            tokio::time::sleep(GOSSIP).await;
        }
        start.elapsed()
    }

    async fn call(&self, i: usize, req: ConfigRequest) -> Result<Value, String> {
        self.nodes[i].store.handle(req).await
    }

    async fn stop(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].handle.take() {
            for t in &self.nodes[i].tasks {
                t.abort();
            }
            let _ = h.shutdown().await;
        }
    }
}

fn n_alive(s: &Sim) -> usize {
    s.running().count()
}

fn net_req(name: &str, vni: u32) -> ConfigRequest {
    ConfigRequest::NetworkCreate {
        name: name.into(),
        vni,
        mtu: None,
    }
}

fn oid(v: &Value) -> ObjectId {
    ObjectId::new(v["id"].as_str().expect("id in result")).expect("valid id")
}

#[tokio::test(start_paused = true)]
async fn an_object_survives_the_loss_of_its_writer_and_one_more_node() {
    let mut sim = Sim::start(NODES).await;
    let writer = 4;
    let net = oid(&sim
        .call(writer, net_req("durable", 500))
        .await
        .expect("created"));
    let took = sim
        .wait(
            "every node sees the network",
            Duration::from_secs(30),
            |s| {
                s.running().all(|n| {
                    n.view
                        .load()
                        .tenant
                        .get(ObjectKind::Network, &net)
                        .is_some()
                })
            },
        )
        .await;
    // Replicas settle: the writer withdraws its copy once the three replicas carry it (unless it is one).
    let live: BTreeSet<NodeId> = sim.nodes.iter().map(|n| n.id.clone()).collect();
    let replicas: Vec<NodeId> = replica_set(net.as_str(), &live, REPLICAS)
        .into_iter()
        .cloned()
        .collect();
    sim.wait(
        "replicas publish the network",
        Duration::from_secs(30),
        |s| {
            let t = &s.nodes[0].view.load().tenant;
            let pubs = &t.publishers[&(ObjectKind::Network, net.clone())];
            replicas.iter().all(|r| pubs.contains_key(r))
        },
    )
    .await;
    // Kill the writer and the top replica that is not the writer, for good.
    let victim_replica = replicas
        .iter()
        .find(|r| r.as_str() != format!("n{writer}"))
        .expect("a replica");
    let victim = sim
        .nodes
        .iter()
        .position(|n| &n.id == victim_replica)
        .expect("replica is a node");
    sim.stop(writer).await;
    sim.stop(victim).await;
    let gone = [
        NodeId::new(format!("n{writer}")).expect("id"),
        victim_replica.clone(),
    ];
    // Wait until every survivor has forgotten both nodes' state entirely.
    let forgotten = sim
        .wait(
            "dead nodes' state garbage-collected everywhere",
            Duration::from_secs(120),
            |s| {
                s.running().all(|n| {
                    let v = n.view.load();
                    gone.iter().all(|g| !v.members.contains_key(g))
                })
            },
        )
        .await;
    for n in sim.running() {
        let t = &n.view.load().tenant;
        assert!(
            t.get(ObjectKind::Network, &net).is_some(),
            "{} lost the network",
            n.id
        );
        let pubs = &t.publishers[&(ObjectKind::Network, net.clone())];
        assert!(
            gone.iter().all(|g| !pubs.contains_key(g)),
            "state of a dead node still present"
        );
    }
    // And the survivors restore three live replicas.
    let survivors: BTreeSet<NodeId> = sim.running().map(|n| n.id.clone()).collect();
    let new_replicas: Vec<NodeId> = replica_set(net.as_str(), &survivors, REPLICAS)
        .into_iter()
        .cloned()
        .collect();
    sim.wait("three live replicas again", Duration::from_secs(30), |s| {
        let t = &s.running().next().expect("survivor").view.load().tenant;
        let pubs = &t.publishers[&(ObjectKind::Network, net.clone())];
        new_replicas.iter().all(|r| pubs.contains_key(r))
    })
    .await;
    println!("durability: visible everywhere after {took:?}; writer and a replica dead and forgotten after {forgotten:?}; object kept by {new_replicas:?}");
}

#[tokio::test(start_paused = true)]
async fn concurrent_conflicting_updates_converge_to_one_value() {
    let sim = Sim::start(NODES).await;
    let net = oid(&sim.call(0, net_req("n", 10)).await.expect("net"));
    sim.call(
        0,
        ConfigRequest::SubnetCreate {
            name: "s".into(),
            network: net.to_string(),
            cidr: "10.5.0.0/24".into(),
            gateway: None,
            pool: None,
            dhcp: true,
            dns_servers: vec![],
            domain: None,
        },
    )
    .await
    .expect("subnet");
    let r = oid(&sim
        .call(0, ConfigRequest::RouterCreate { name: "r".into() })
        .await
        .expect("router"));
    sim.call(
        0,
        ConfigRequest::RouterAddInterface {
            router: "r".into(),
            subnet: "s".into(),
        },
    )
    .await
    .expect("iface");
    sim.wait("router everywhere with its interface", Duration::from_secs(30), |s| {
        s.running().all(|n| matches!(n.view.load().tenant.get(ObjectKind::Router, &r), Some(TenantObject::Router(x)) if x.interfaces.len() == 1))
    })
    .await;
    // Two nodes change the same router at the same moment, differently.
    let route = |dest: &str| ConfigRequest::RouterAddRoute {
        router: "r".into(),
        destination: dest.into(),
        nexthop: "10.5.0.9".into(),
    };
    let (a, b) = tokio::join!(
        sim.call(7, route("192.0.2.0/24")),
        sim.call(13, route("198.51.100.0/24"))
    );
    a.expect("write at n7");
    b.expect("write at n13");
    sim.wait(
        "every node holds the same router record",
        Duration::from_secs(30),
        |s| {
            let recs: BTreeSet<String> = s
                .running()
                .map(|n| format!("{:?}", n.view.load().tenant.record(ObjectKind::Router, &r)))
                .collect();
            recs.len() == 1
        },
    )
    .await;
    let t = &sim.nodes[0].view.load().tenant;
    let rec = t.record(ObjectKind::Router, &r).expect("router record");
    let Some(TenantObject::Router(router)) = rec.body() else {
        panic!("router deleted")
    };
    assert_eq!(
        router.routes.len(),
        1,
        "last writer wins: exactly one of the two routes"
    );
    println!(
        "conflict: both writes accepted, all {NODES} nodes settled on the one by {} (version {:?})",
        rec.version().writer,
        rec.version().hlc
    );
}

#[tokio::test(start_paused = true)]
async fn five_nodes_allocating_at_once_in_a_slash_28_get_distinct_addresses() {
    let sim = Sim::start(NODES).await;
    sim.call(0, net_req("small", 20)).await.expect("net");
    sim.call(
        0,
        ConfigRequest::SubnetCreate {
            name: "tiny".into(),
            network: "small".into(),
            cidr: "10.9.0.0/28".into(),
            gateway: None,
            pool: None,
            dhcp: true,
            dns_servers: vec![],
            domain: None,
        },
    )
    .await
    .expect("subnet");
    sim.wait("subnet everywhere", Duration::from_secs(30), |s| {
        s.running()
            .all(|n| n.view.load().tenant.subnets().count() == 1)
    })
    .await;
    let req = |i: usize| ConfigRequest::PortCreate {
        name: format!("vm-{i}"),
        network: "small".into(),
        ip: None,
        mac: None,
        device: None,
        metadata: Default::default(),
    };
    let (r1, r2, r3, r4, r5) = tokio::join!(
        sim.call(1, req(1)),
        sim.call(5, req(5)),
        sim.call(9, req(9)),
        sim.call(12, req(12)),
        sim.call(17, req(17))
    );
    let results: Vec<Value> = [r1, r2, r3, r4, r5]
        .into_iter()
        .map(|r| r.expect("port created"))
        .collect();
    let ips: BTreeSet<String> = results
        .iter()
        .map(|p| p["fixed_ips"][0].as_str().expect("ip").to_string())
        .collect();
    let macs: BTreeSet<String> = results
        .iter()
        .map(|p| p["mac"].as_str().expect("mac").to_string())
        .collect();
    assert_eq!(ips.len(), 5, "addresses collide: {ips:?}");
    assert_eq!(macs.len(), 5, "MACs collide: {macs:?}");
    sim.wait("all five ports everywhere", Duration::from_secs(30), |s| {
        s.running()
            .all(|n| n.view.load().tenant.ports().count() == 5)
    })
    .await;
    for n in sim.running() {
        let t = n.view.load();
        let seen: BTreeSet<String> = t
            .tenant
            .ports()
            .map(|p| p.fixed_ips[0].to_string())
            .collect();
        assert_eq!(seen, ips);
    }
    println!("ipam: 5 concurrent ports in 10.9.0.0/28 got {ips:?}");
}

#[tokio::test(start_paused = true)]
async fn a_tombstone_wins_over_an_older_write() {
    let sim = Sim::start(NODES).await;
    let created = sim.call(2, net_req("doomed", 30)).await.expect("net");
    let net = oid(&created);
    sim.wait("network everywhere", Duration::from_secs(30), |s| {
        s.running().all(|n| {
            n.view
                .load()
                .tenant
                .get(ObjectKind::Network, &net)
                .is_some()
        })
    })
    .await;
    let old: Record = sim.nodes[0]
        .view
        .load()
        .tenant
        .record(ObjectKind::Network, &net)
        .expect("record")
        .clone();
    sim.call(
        11,
        ConfigRequest::Delete {
            kind: ObjectKind::Network,
            reference: "doomed".into(),
        },
    )
    .await
    .expect("deleted");
    sim.wait("deletion everywhere", Duration::from_secs(30), |s| {
        s.running().all(|n| {
            n.view
                .load()
                .tenant
                .get(ObjectKind::Network, &net)
                .is_none()
        })
    })
    .await;
    // A stale node re-publishes the old write.
    {
        let cc = sim.nodes[19].handle.as_ref().expect("running").chitchat();
        let mut cc = cc.lock().await;
        cc.self_node_state()
            .set(old.key(), mesh_proto::encode_value(&old).expect("encodes"));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in sim.running() {
        let t = &n.view.load().tenant;
        assert!(
            t.get(ObjectKind::Network, &net).is_none(),
            "{} resurrected the network",
            n.id
        );
        assert!(t
            .record(ObjectKind::Network, &net)
            .is_some_and(|r| r.body().is_none()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_landing_while_its_writer_hands_off_to_the_replicas_is_kept() {
    // The writer of a router is not one of its replicas. It adds an interface, then at once sets
    // the gateway, whose address claims hold the write lock for a claim window. Meanwhile the
    // replicas copy the interface version, and the writer's replication pass decides, from that
    // view, to stop publishing the router. That decision must not delete the newer write.
    let sim = Sim::start(NODES).await;
    sim.call(
        0,
        ConfigRequest::ExternalNetworkCreate {
            name: "public".into(),
            cidr: "203.0.113.0/24".into(),
            gateway: "203.0.113.1".into(),
            pool: None,
        },
    )
    .await
    .expect("external network");
    for i in 0..4u32 {
        let net = oid(&sim
            .call(0, net_req(&format!("n{i}"), 20 + i))
            .await
            .expect("net"));
        sim.call(
            0,
            ConfigRequest::SubnetCreate {
                name: format!("s{i}"),
                network: net.to_string(),
                cidr: format!("10.7.{i}.0/24"),
                gateway: None,
                pool: None,
                dhcp: true,
                dns_servers: vec![],
                domain: None,
            },
        )
        .await
        .expect("subnet");
    }
    sim.wait("subnets everywhere", Duration::from_secs(30), |s| {
        s.running()
            .all(|n| n.view.load().tenant.subnets().count() == 4)
    })
    .await;
    let live: BTreeSet<NodeId> = sim.nodes.iter().map(|n| n.id.clone()).collect();
    let mut tried = 0;
    for attempt in 0..4 {
        let name = format!("r{attempt}");
        let r = oid(&sim
            .call(0, ConfigRequest::RouterCreate { name: name.clone() })
            .await
            .expect("router"));
        let replicas = replica_set(r.as_str(), &live, REPLICAS);
        let Some(writer) = (1..NODES).find(|i| !replicas.contains(&&sim.nodes[*i].id)) else {
            continue;
        };
        sim.wait("router at the writer", Duration::from_secs(30), |s| {
            s.nodes[writer]
                .view
                .load()
                .tenant
                .get(ObjectKind::Router, &r)
                .is_some()
        })
        .await;
        sim.call(
            writer,
            ConfigRequest::RouterAddInterface {
                router: name.clone(),
                subnet: format!("s{attempt}"),
            },
        )
        .await
        .expect("iface");
        sim.call(
            writer,
            ConfigRequest::RouterSetGateway {
                router: name.clone(),
                external_network: "public".into(),
                snat: true,
            },
        )
        .await
        .expect("gateway");
        tried += 1;
        tokio::time::sleep(Duration::from_secs(10)).await;
        for n in sim.running() {
            let v = n.view.load();
            let Some(TenantObject::Router(x)) = v.tenant.get(ObjectKind::Router, &r) else {
                panic!("{}: router {name} missing", n.id)
            };
            assert!(
                x.gateway.as_ref().is_some_and(|g| g.external_ip.is_some()),
                "{}: router {name} lost its gateway (written at {})",
                n.id,
                sim.nodes[writer].id
            );
        }
    }
    assert!(tried > 0);
}

fn subnet_req(name: &str, network: &str, cidr: &str) -> ConfigRequest {
    ConfigRequest::SubnetCreate {
        name: name.into(),
        network: network.into(),
        cidr: cidr.into(),
        gateway: None,
        pool: None,
        dhcp: true,
        dns_servers: vec![],
        domain: None,
    }
}

fn port_req(name: &str, network: &str) -> ConfigRequest {
    ConfigRequest::PortCreate {
        name: name.into(),
        network: network.into(),
        ip: None,
        mac: None,
        device: None,
        metadata: Default::default(),
    }
}

/// Creates a network with one subnet through node 0 and waits until every running node has it.
async fn network_with_subnet(sim: &Sim, name: &str, vni: u32, cidr: &str) -> ObjectId {
    let net = oid(&sim.call(0, net_req(name, vni)).await.expect("network"));
    sim.call(0, subnet_req(&format!("{name}-v4"), name, cidr))
        .await
        .expect("subnet");
    sim.wait("subnet everywhere", Duration::from_secs(30), |s| {
        s.running()
            .all(|n| n.view.load().tenant.subnets().any(|x| x.network == net))
    })
    .await;
    net
}

/// Every (network, address) and every MAC held by two live ports in any running node's view.
fn duplicates_anywhere(sim: &Sim) -> Vec<String> {
    let mut out = Vec::new();
    for n in sim.running() {
        let v = n.view.load();
        let mut addrs = BTreeSet::new();
        let mut macs = BTreeSet::new();
        for p in v.tenant.ports() {
            for ip in &p.fixed_ips {
                if !addrs.insert((p.network.clone(), *ip)) {
                    out.push(format!("{}: {ip} twice", n.id));
                }
            }
            if !macs.insert(p.mac) {
                out.push(format!("{}: {} twice", n.id, p.mac));
            }
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_hundred_ports_created_at_once_on_one_node_get_distinct_addresses_and_macs() {
    let sim = Sim::start(5).await;
    network_with_subnet(&sim, "wide", 30, "10.30.0.0/24").await;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let store = sim.nodes[2].store.clone();
        set.spawn(async move { store.handle(port_req(&format!("p{i}"), "wide")).await });
    }
    let mut ports = Vec::new();
    while let Some(r) = set.join_next().await {
        ports.push(r.expect("task").expect("port created"));
    }
    let took = started.elapsed();
    let ips: BTreeSet<&str> = ports
        .iter()
        .map(|p| p["fixed_ips"][0].as_str().expect("ip"))
        .collect();
    let macs: BTreeSet<&str> = ports
        .iter()
        .map(|p| p["mac"].as_str().expect("mac"))
        .collect();
    assert_eq!(
        (ips.len(), macs.len()),
        (100, 100),
        "values handed out twice"
    );
    // One at a time, each port waited a claim window (800 ms here): 80 s. From blocks, the
    // waiting requests share a few claim windows (blocks of 16 addresses and of 256 MACs,
    // claimed several at once).
    println!("ipam: 100 ports at once on one node: {took:?} of virtual time");
    assert!(
        took < Duration::from_secs(10),
        "100 ports took {took:?}: they did not come from blocks"
    );
    sim.wait("100 ports everywhere", Duration::from_secs(30), |s| {
        s.running()
            .all(|n| n.view.load().tenant.ports().count() == 100)
    })
    .await;
    assert_eq!(duplicates_anywhere(&sim), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_minority_hands_out_only_what_its_blocks_hold_and_the_heal_leaves_no_duplicate(
) {
    let sim = Sim::start(5).await;
    network_with_subnet(&sim, "big", 31, "10.31.0.0/24").await;
    network_with_subnet(&sim, "tiny", 32, "10.32.0.0/29").await;
    // Before the cut, node 0 holds a block of the /24 (its first port) and none of the /29.
    sim.call(0, port_req("before", "big"))
        .await
        .expect("port before the cut");
    let (minority, majority) = ([0usize], [1usize, 2, 3, 4]);
    sim.partition(&minority, &majority, true).await;
    sim.wait(
        "each side sees the other dead",
        Duration::from_secs(60),
        |s| {
            s.nodes[0].view.load().alive().count() == 1
                && s.nodes[1].view.load().alive().count() == 4
        },
    )
    .await;
    let mut created = vec!["before".to_string()];
    for i in 0..3 {
        for (node, net) in [(0, "big"), (1, "big"), (2, "tiny")] {
            let name = format!("{net}-{node}-{i}");
            sim.call(node, port_req(&name, net))
                .await
                .unwrap_or_else(|e| panic!("{name} on node {node}: {e}"));
            created.push(name);
        }
    }
    // The minority holds no block of the /29: it may not claim one, nor a single address.
    let refused = sim
        .call(0, port_req("tiny-minority", "tiny"))
        .await
        .expect_err("a minority claimed an address");
    assert!(refused.contains("majority"), "{refused}");
    sim.partition(&minority, &majority, false).await;
    sim.wait("every port everywhere", Duration::from_secs(60), |s| {
        s.running()
            .all(|n| n.view.load().tenant.ports().count() == created.len())
    })
    .await;
    assert_eq!(duplicates_anywhere(&sim), Vec::<String>::new());
    let names: BTreeSet<String> = sim.nodes[3]
        .view
        .load()
        .tenant
        .ports()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, created.into_iter().collect::<BTreeSet<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_port_holding_an_address_another_port_kept_is_readdressed_by_its_host() {
    let sim = Sim::start(5).await;
    let net = network_with_subnet(&sim, "dup", 33, "10.33.0.0/24").await;
    let kept = sim.call(1, port_req("kept", "dup")).await.expect("port");
    let ip: std::net::Ipv4Addr = kept["fixed_ips"][0]
        .as_str()
        .expect("ip")
        .parse()
        .expect("ip");
    let mac = kept["mac"].as_str().expect("mac").parse().expect("mac");
    // What a configuration written on both sides of a partition leaves: node 3 hosts a younger
    // port with the same address and MAC.
    let copy = mesh_proto::Port::new(mesh_proto::PortSpec {
        id: ObjectId::new("port-00000000dup0").expect("id"),
        name: mesh_proto::Name::new("copy").expect("name"),
        network: net,
        mac,
        fixed_ips: vec![ip],
        host: sim.nodes[3].id.clone(),
        device: None,
        allowed_address_pairs: Vec::new(),
        metadata: Default::default(),
    })
    .expect("port");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let rec = Record::object(
        TenantObject::Port(copy),
        mesh_proto::Version {
            hlc: mesh_proto::HlcTimestamp(now_ms << 16),
            writer: sim.nodes[3].id.clone(),
        },
    );
    let value = mesh_proto::encode_value(&rec).expect("encode");
    sim.nodes[3]
        .own
        .write(|st| st.set(&rec.key(), &value))
        .await;
    sim.wait(
        "the copy re-addressed on every node, the older port unchanged",
        Duration::from_secs(30),
        |s| {
            s.running().all(|n| {
                let v = n.view.load();
                let port = |name: &str| v.tenant.ports().find(|p| p.name.as_str() == name).cloned();
                match (port("kept"), port("copy")) {
                    (Some(k), Some(c)) => {
                        k.fixed_ips == [ip] && k.mac == mac && c.fixed_ips != [ip] && c.mac != mac
                    }
                    _ => false,
                }
            })
        },
    )
    .await;
    assert_eq!(duplicates_anywhere(&sim), Vec::<String>::new());
    let events = sim.nodes[3].store.readdressed();
    assert_eq!(events.len(), 2, "one address and one MAC: {events:?}");
    // The operator sees it in `port show` on the port's host (its host re-addressed it).
    let show = |node: usize| {
        sim.call(
            node,
            ConfigRequest::Show {
                kind: ObjectKind::Port,
                reference: "copy".into(),
            },
        )
    };
    let shown = show(3).await.expect("port show");
    let seen = shown["readdressed"].as_array().expect("readdressed list");
    let from: Vec<&str> = seen.iter().filter_map(|e| e["from"].as_str()).collect();
    assert!(
        from.contains(&ip.to_string().as_str()) && from.contains(&mac.to_string().as_str()),
        "port show on its host names the address and MAC it gave up: {shown}"
    );
    assert!(seen.iter().all(|e| e["kept_by"] == kept["id"]), "{shown}");
    let elsewhere = show(1).await.expect("port show");
    assert_eq!(
        elsewhere["readdressed"],
        serde_json::json!([]),
        "{elsewhere}"
    );
}

/// A draining node gives back each of its blocks once no port of it is left there (its ports
/// moved away), and not before: the place is then free for other nodes' blocks.
#[tokio::test(start_paused = true)]
async fn a_draining_node_gives_back_its_blocks_once_its_ports_are_gone() {
    let sim = Sim::start(5).await;
    let net = network_with_subnet(&sim, "drn", 34, "10.34.0.0/24").await;
    let pool = sim.nodes[0]
        .view
        .load()
        .tenant
        .subnets()
        .find(|s| s.network == net)
        .expect("subnet")
        .id
        .clone();
    let space = mesh_proto::BlockSpace::Pool(pool);
    let blocks_of = |sim: &Sim, node: usize| -> usize {
        let me = sim.nodes[node].id.clone();
        sim.nodes[0]
            .view
            .load()
            .tenant
            .blocks
            .get(&space)
            .map_or(0, |bs| bs.iter().filter(|b| b.version.writer == me).count())
    };
    let p1 = oid(&sim.call(2, port_req("d1", "drn")).await.expect("port"));
    let p2 = oid(&sim.call(2, port_req("d2", "drn")).await.expect("port"));
    sim.wait("node 0 sees n2's block", Duration::from_secs(10), |s| {
        blocks_of(s, 2) > 0
    })
    .await;
    // n2 drains (as `agent drain` publishes it).
    let facts = NodeFacts::new(
        sim.nodes[2].id.clone(),
        NodeMode::Dvr,
        std::net::Ipv4Addr::new(10, 0, 0, 3),
        dvr_mac_for(&sim.nodes[2].id),
        Priority::new(100).expect("p"),
        BTreeMap::new(),
    )
    .expect("facts")
    .with_draining(true);
    let value = mesh_proto::encode_value(&facts).expect("facts");
    sim.nodes[2]
        .own
        .write(|st| st.set(dvrmesh_node::mesh::keys::KEY_NODE_FACTS, &value))
        .await;
    // Its ports still hold addresses of the block: it keeps it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(blocks_of(&sim, 2) > 0, "a block in use was given back");
    for p in [&p1, &p2] {
        sim.call(
            2,
            ConfigRequest::Delete {
                kind: ObjectKind::Port,
                reference: p.to_string(),
            },
        )
        .await
        .expect("delete");
    }
    let drained = sim.nodes[2].id.clone();
    sim.wait(
        "every node sees n2's idle blocks gone",
        Duration::from_secs(30),
        |s| s.running().all(|n| !sees_a_block_of(n, &drained)),
    )
    .await;
    // Another node's port is served as before.
    sim.call(3, port_req("after", "drn"))
        .await
        .expect("port on another node");
}

/// A node that died without draining keeps its blocks (it may come back and its ports still
/// hold addresses there) until the others forget it (`dead_node_grace_period`); then its blocks
/// are gone from every view with its ports, and the place is free for new blocks.
#[tokio::test(start_paused = true)]
async fn a_dead_node_s_blocks_are_freed_when_it_is_forgotten() {
    let mut sim = Sim::start(5).await;
    network_with_subnet(&sim, "ded", 35, "10.35.0.0/24").await;
    sim.call(2, port_req("gone", "ded")).await.expect("port");
    let has_blocks_of = |s: &Sim, who: &NodeId| s.running().all(|n| sees_a_block_of(n, who));
    let dead = sim.nodes[2].id.clone();
    sim.wait(
        "every node sees n2's blocks",
        Duration::from_secs(10),
        |s| has_blocks_of(s, &dead),
    )
    .await;
    sim.stop(2).await;
    // Still held a while after its death: a node that restarts keeps its addresses.
    tokio::time::sleep(DEAD_GRACE / 2).await;
    assert!(
        has_blocks_of(&sim, &dead),
        "blocks of a node just dead were dropped"
    );
    sim.wait(
        "no node holds a block of the forgotten n2",
        DEAD_GRACE * 6,
        |s| s.running().all(|n| !sees_a_block_of(n, &dead)),
    )
    .await;
}

/// When a pool's last free addresses all lie in another node's blocks, a node still gets them:
/// it claims one, the holder lends it (carves it out of its block), and the claim wins. The pool
/// fills up to its last address with no address handed out twice.
#[tokio::test(start_paused = true)]
async fn a_node_borrows_the_last_free_addresses_from_another_node_s_blocks() {
    let sim = Sim::start(5).await;
    let net = network_with_subnet(&sim, "brw", 36, "10.36.0.0/26").await;
    let pool_len = {
        let v = sim.nodes[0].view.load();
        let len = v
            .tenant
            .subnets()
            .find(|s| s.network == net)
            .expect("subnet")
            .pool
            .len() as usize;
        len
    };
    // Node 1 takes most of the pool; its blocks (claimed ahead of need) cover the rest.
    let mut made = 0;
    for i in 0..pool_len - 6 {
        sim.call(1, port_req(&format!("a{i}"), "brw"))
            .await
            .expect("port on n1");
        made += 1;
    }
    // Node 2 creates ports until the pool is full.
    let mut borrowed = 0;
    let error = loop {
        match sim.call(2, port_req(&format!("b{borrowed}"), "brw")).await {
            Ok(_) => borrowed += 1,
            Err(e) => break e,
        }
        assert!(borrowed <= pool_len, "more ports than addresses");
    };
    assert!(borrowed > 0, "node 2 got no address at all: {error}");
    assert!(error.contains("no free address"), "{error}");
    sim.wait("every node sees every port", Duration::from_secs(10), |s| {
        s.running().all(|n| {
            n.view
                .load()
                .tenant
                .ports()
                .filter(|p| p.network == net)
                .count()
                == made + borrowed
        })
    })
    .await;
    assert_eq!(
        made + borrowed,
        pool_len,
        "every address of the pool went to a port (node 2 got {borrowed})"
    );
    assert_eq!(duplicates_anywhere(&sim), Vec::<String>::new());
}

/// Whether `n`'s view holds any block published by `who`.
fn sees_a_block_of(n: &SimNode, who: &NodeId) -> bool {
    n.view
        .load()
        .tenant
        .blocks
        .values()
        .flatten()
        .any(|b| &b.version.writer == who)
}

/// An address asked for explicitly that lies in another node's block is lent by that node when
/// it is free there, and refused when a port holds it.
#[tokio::test(start_paused = true)]
async fn an_explicit_address_in_another_node_s_block_is_lent_unless_taken() {
    let sim = Sim::start(5).await;
    let net = network_with_subnet(&sim, "xpl", 37, "10.37.0.0/24").await;
    let first = sim
        .call(1, port_req("held", "xpl"))
        .await
        .expect("port on n1");
    let held: std::net::Ipv4Addr = first["fixed_ips"][0]
        .as_str()
        .expect("ip")
        .parse()
        .expect("ip");
    let n1 = sim.nodes[1].id.clone();
    sim.wait(
        "node 2 sees n1's block and port",
        Duration::from_secs(10),
        |s| {
            sees_a_block_of(&s.nodes[2], &n1)
                && s.nodes[2]
                    .view
                    .load()
                    .tenant
                    .ports()
                    .any(|p| p.network == net)
        },
    )
    .await;
    // A free address of n1's block, as node 2 sees it.
    let free = {
        let v = sim.nodes[2].view.load();
        let block = v
            .tenant
            .blocks
            .values()
            .flatten()
            .find(|b| b.version.writer == n1 && matches!(&b.space, mesh_proto::BlockSpace::Pool(_)))
            .expect("n1's pool block")
            .clone();
        let taken: Vec<std::net::Ipv4Addr> = v
            .tenant
            .ports()
            .filter(|p| p.network == net)
            .flat_map(|p| p.fixed_ips.clone())
            .collect();
        (0..block.len)
            .map(|i| std::net::Ipv4Addr::from(block.first + i))
            .find(|ip| !taken.contains(ip))
            .expect("a free address in n1's block")
    };
    let explicit = |name: &str, ip: std::net::Ipv4Addr| ConfigRequest::PortCreate {
        name: name.into(),
        network: "xpl".into(),
        ip: Some(ip.to_string()),
        mac: None,
        device: None,
        metadata: Default::default(),
    };
    let lent = sim
        .call(2, explicit("lent", free))
        .await
        .expect("an explicit address of n1's block, lent");
    assert_eq!(lent["fixed_ips"][0], free.to_string());
    let refused = sim
        .call(2, explicit("clash", held))
        .await
        .expect_err("n1's port holds it");
    assert!(
        refused.contains("in use") || refused.contains("taken"),
        "{refused}"
    );
    sim.wait("every node sees both ports", Duration::from_secs(10), |s| {
        s.running().all(|n| {
            n.view
                .load()
                .tenant
                .ports()
                .filter(|p| p.network == net)
                .count()
                == 2
        })
    })
    .await;
    assert_eq!(duplicates_anywhere(&sim), Vec::<String>::new());
}

/// The node that creates a subnet claims its first block of the pool in the subnet's own claim
/// window: the first port made there on the new subnet gets its address with no wait. Deleting
/// the subnet withdraws the block from every view.
#[tokio::test(start_paused = true)]
async fn a_subnet_s_creator_hands_out_its_first_address_with_no_wait() {
    let sim = Sim::start(5).await;
    let window = StoreSettings::for_gossip_interval(GOSSIP, None).claim_window;
    // Node 0 gets its MAC block (and a block of the first pool) with a first port.
    network_with_subnet(&sim, "fst-a", 38, "10.38.0.0/24").await;
    sim.call(0, port_req("first-ever", "fst-a"))
        .await
        .expect("first port");
    let net = oid(&sim.call(0, net_req("fst-b", 39)).await.expect("network"));
    let subnet = oid(&sim
        .call(0, subnet_req("fst-b-v4", "fst-b", "10.39.0.0/24"))
        .await
        .expect("subnet"));
    let space = mesh_proto::BlockSpace::Pool(subnet.clone());
    let me = sim.nodes[0].id.clone();
    let holds_block = |n: &SimNode| {
        n.view
            .load()
            .tenant
            .blocks
            .get(&space)
            .is_some_and(|bs| bs.iter().any(|b| b.version.writer == me))
    };
    assert!(
        holds_block(&sim.nodes[0]),
        "the subnet's creator published no block of its pool with it"
    );
    let started = Instant::now();
    let port = sim
        .call(0, port_req("on-new-subnet", "fst-b"))
        .await
        .expect("port on the new subnet");
    let took = started.elapsed();
    assert!(
        took < window,
        "the first port on a new subnet took {took:?} (claim window {window:?}): it waited for a block"
    );
    assert!(port["fixed_ips"][0]
        .as_str()
        .expect("ip")
        .starts_with("10.39.0."));
    sim.wait("every node sees the block", Duration::from_secs(10), |s| {
        s.running().all(holds_block)
    })
    .await;
    sim.call(
        0,
        ConfigRequest::Delete {
            kind: ObjectKind::Port,
            reference: oid(&port).to_string(),
        },
    )
    .await
    .expect("delete the port");
    sim.call(
        0,
        ConfigRequest::Delete {
            kind: ObjectKind::Subnet,
            reference: subnet.to_string(),
        },
    )
    .await
    .expect("delete the subnet");
    sim.wait(
        "the deleted pool's block withdrawn everywhere",
        Duration::from_secs(30),
        |s| s.running().all(|n| !holds_block(n)),
    )
    .await;
    assert!(sim.nodes[0]
        .view
        .load()
        .tenant
        .networks()
        .any(|n| n.id == net));
}
