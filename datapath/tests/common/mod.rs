//! A hand-built topology shared by the datapath tests: four nodes, one of each mode (and a second
//! compute node), two routers, three subnets, FIPs served locally and centrally.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use datapath::{NodeInfo, Topology};
use mesh_proto::*;

pub fn oid(s: &str) -> ObjectId {
    ObjectId::new(s).expect("valid id")
}
pub fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node id")
}
fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

pub fn facts(id: &str, mode: NodeMode, tip: [u8; 4], prio: u8, ext: bool) -> NodeInfo {
    let id = node(id);
    let mut external = BTreeMap::new();
    if ext {
        external.insert(
            name("public"),
            ExternalMapping {
                interface: InterfaceName::new("eth1").expect("ifname"),
            },
        );
    }
    let f = NodeFacts::new(
        id.clone(),
        mode,
        tip.into(),
        dvr_mac_for(&id),
        Priority::new(prio).expect("prio"),
        external,
    )
    .expect("facts");
    NodeInfo {
        facts: f,
        alive: true,
    }
}

pub fn port(id: &str, host: &str, net: &str, ip: &str, mac: &str) -> Port {
    Port::new(PortSpec {
        id: oid(id),
        name: name(id),
        network: oid(net),
        mac: mac.parse().expect("mac"),
        fixed_ips: vec![ip.parse().expect("ip")],
        host: node(host),
        device: None,
        allowed_address_pairs: vec![],
        metadata: Default::default(),
    })
    .expect("port")
}

fn subnet(id: &str, net: &str, cidr: &str, gw: &str, pool: &str) -> Subnet {
    Subnet::new(SubnetSpec {
        id: oid(id),
        name: name(id),
        network: oid(net),
        cidr: cidr.parse().expect("cidr"),
        gateway: gw.parse().expect("gw"),
        pool: pool.parse().expect("pool"),
        dhcp: mesh_proto::SubnetDhcp::default(),
    })
    .expect("subnet")
}

fn fip(id: &str, ip: &str, port: Option<(&str, &str)>) -> FloatingIp {
    FloatingIp::new(FloatingIpSpec {
        id: oid(id),
        external_network: oid("ext-public"),
        ip: ip.parse().expect("ip"),
        port: port.map(|(p, _)| oid(p)),
        fixed_ip: port.map(|(_, f)| f.parse().expect("ip")),
    })
    .expect("fip")
}

/// c1, c2: dvr; n1: dvr_snat (with a local port); c3: dvr_no_external.
/// r1: sub-a, sub-b, gateway to public (SNAT on n1). r2: sub-c, no gateway.
/// f1 → vm2 on c2 (distributed); f2 → vm4 on c3 (centralized on n1); f3 unassociated.
pub fn topology() -> Topology {
    let mut t = Topology::default();
    for n in [
        facts("c1", NodeMode::Dvr, [192, 0, 2, 11], 100, true),
        facts("c2", NodeMode::Dvr, [192, 0, 2, 12], 100, true),
        facts("n1", NodeMode::DvrSnat, [192, 0, 2, 21], 200, true),
        facts("c3", NodeMode::DvrNoExternal, [192, 0, 2, 13], 100, false),
    ] {
        t.nodes.insert(n.facts.node_id().clone(), n);
    }
    for (id, vni) in [("net-a", 100), ("net-b", 200), ("net-c", 300)] {
        t.networks.insert(
            oid(id),
            Network::new(NetworkSpec {
                id: oid(id),
                name: name(id),
                vni: Vni::new(vni).expect("vni"),
                mtu: Mtu::VXLAN_DEFAULT,
            })
            .expect("net"),
        );
    }
    for s in [
        subnet(
            "sub-a",
            "net-a",
            "10.1.0.0/24",
            "10.1.0.1",
            "10.1.0.2-10.1.0.254",
        ),
        subnet(
            "sub-b",
            "net-b",
            "10.2.0.0/24",
            "10.2.0.1",
            "10.2.0.2-10.2.0.254",
        ),
        subnet(
            "sub-c",
            "net-c",
            "10.3.0.0/24",
            "10.3.0.1",
            "10.3.0.2-10.3.0.254",
        ),
    ] {
        t.subnets.insert(s.id.clone(), s);
    }
    let ext = ExternalNetwork::new(ExternalNetworkSpec {
        id: oid("ext-public"),
        name: name("public"),
        cidr: "203.0.113.0/24".parse().expect("c"),
        gateway: "203.0.113.1".parse().expect("g"),
        pool: "203.0.113.2-203.0.113.254".parse().expect("p"),
    })
    .expect("ext");
    t.external_networks.insert(ext.id.clone(), ext);
    let sp = |ip: &str, mac: &str| SnatPort {
        ip: ip.parse().expect("ip"),
        mac: mac.parse().expect("mac"),
    };
    let r1 = Router::new(RouterSpec {
        id: oid("rtr-one"),
        name: name("r1"),
        interfaces: [oid("sub-a"), oid("sub-b")].into_iter().collect(),
        gateway: Some(RouterGateway {
            external_network: oid("ext-public"),
            enable_snat: true,
            external_ip: Some("203.0.113.5".parse().expect("ip")),
        }),
        routes: BTreeSet::new(),
        ha: HaSettings::default(),
        snat_ports: [
            (oid("sub-a"), sp("10.1.0.3", "fa:16:3e:00:01:03")),
            (oid("sub-b"), sp("10.2.0.3", "fa:16:3e:00:02:03")),
        ]
        .into_iter()
        .collect(),
    })
    .expect("r1");
    let r2 = Router::new(RouterSpec {
        id: oid("rtr-two"),
        name: name("r2"),
        interfaces: [oid("sub-c")].into_iter().collect(),
        gateway: None,
        routes: [ExtraRoute {
            destination: "198.51.100.0/24".parse().expect("d"),
            nexthop: "10.3.0.254".parse().expect("n"),
        }]
        .into_iter()
        .collect(),
        ha: HaSettings::default(),
        snat_ports: BTreeMap::new(),
    })
    .expect("r2");
    t.routers.insert(r1.id.clone(), r1);
    t.routers.insert(r2.id.clone(), r2);
    for p in [
        port("vm1", "c1", "net-a", "10.1.0.10", "fa:16:3e:00:01:10"),
        port("vm2", "c2", "net-b", "10.2.0.20", "fa:16:3e:00:02:20"),
        port("vm3", "c1", "net-c", "10.3.0.30", "fa:16:3e:00:03:30"),
        port("vm4", "c3", "net-a", "10.1.0.40", "fa:16:3e:00:01:40"),
        port("vm5", "n1", "net-b", "10.2.0.50", "fa:16:3e:00:02:50"),
        port(
            "fgw-c1",
            "c1",
            "ext-public",
            "203.0.113.11",
            "fa:16:3e:00:ff:11",
        ),
        port(
            "fgw-c2",
            "c2",
            "ext-public",
            "203.0.113.12",
            "fa:16:3e:00:ff:12",
        ),
    ] {
        t.ports.insert(p.id.clone(), p);
    }
    for f in [
        fip("f1", "203.0.113.50", Some(("vm2", "10.2.0.20"))),
        fip("f2", "203.0.113.51", Some(("vm4", "10.1.0.40"))),
        fip("f3", "203.0.113.52", None),
    ] {
        t.fips.insert(f.id.clone(), f);
    }
    t.snat_holders = datapath::default_snat_holders(&t);
    t
}
