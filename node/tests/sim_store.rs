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
    handle: Option<ChitchatHandle>,
    view: ViewHandle,
    store: Arc<ConfigService>,
    tasks: Vec<JoinHandle<()>>,
}

struct Sim {
    nodes: Vec<SimNode>,
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
            );
            let own = OwnState::new(handle.chitchat(), signer, settings.chitchat_id());
            let store = ConfigService::new(
                id.clone(),
                own,
                view.clone(),
                StoreSettings::for_gossip_interval(GOSSIP, None),
            );
            let rt = tokio::spawn(store.clone().run_replication());
            nodes.push(SimNode {
                id,
                handle: Some(handle),
                view,
                store,
                tasks: vec![vt, rt],
            });
        }
        let sim = Sim { nodes };
        sim.wait("all members alive", Duration::from_secs(30), |s| {
            s.running()
                .all(|n| n.view.load().alive().count() == n_alive(s))
        })
        .await;
        sim
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
