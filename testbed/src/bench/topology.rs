//! Synthetic topologies for the datapath benchmarks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use datapath::{NodeInfo, Topology};
use mesh_proto::*;

/// The node being programmed.
pub const ME: &str = "bench";

fn id(s: String) -> ObjectId {
    ObjectId::new(s).expect("generated ids are valid")
}
fn nm(s: String) -> Name {
    Name::new(s).expect("generated names are valid")
}
fn mac(prefix: u8, n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr::new([0xfa, 0x16, prefix, b[1], b[2], b[3]]).expect("unicast local MAC")
}

fn node(name: &str, mode: NodeMode, tip: Ipv4Addr) -> (NodeId, NodeInfo) {
    let nid = NodeId::new(name).expect("valid node id");
    let mut external = BTreeMap::new();
    if mode != NodeMode::DvrNoExternal {
        external.insert(
            nm("public".into()),
            ExternalMapping {
                interface: InterfaceName::new("eth1").expect("ifname"),
            },
        );
    }
    let facts = NodeFacts::new(
        nid.clone(),
        mode,
        tip,
        dvr_mac_for(&nid),
        Priority::new(100).expect("prio"),
        external,
    )
    .expect("facts");
    (nid, NodeInfo { facts, alive: true })
}

/// `routers` routers on this node, each with `subnets_per_router` subnets (own network each), one
/// local port per subnet (a VM tap `vm<k>` the harness creates, as a hypervisor would),
/// `remote_per_subnet` ports on ten other nodes, a gateway with SNAT held elsewhere, and
/// `fips_per_router` FIPs on its local ports.
pub fn build(
    routers: u32,
    subnets_per_router: u32,
    remote_per_subnet: u32,
    fips_per_router: u32,
) -> Topology {
    let mut b = Builder::new();
    for r in 0..routers {
        b.router(r, subnets_per_router, remote_per_subnet, fips_per_router);
    }
    let mut t = b.t;
    t.snat_holders = datapath::default_snat_holders(&t);
    t
}

/// A topology being built: this node, ten remote compute nodes, a network node, the external
/// network and this node's FIP gateway port.
struct Builder {
    t: Topology,
    me: NodeId,
    remotes: Vec<NodeId>,
    ext: ObjectId,
    /// Ports made so far.
    ports: u32,
}

impl Builder {
    fn new() -> Builder {
        let mut t = Topology::default();
        let (me, info) = node(ME, NodeMode::Dvr, Ipv4Addr::new(192, 0, 2, 1));
        t.nodes.insert(me.clone(), info);
        let remotes: Vec<NodeId> = (0..10)
            .map(|i| {
                let tip = Ipv4Addr::new(192, 0, 2, 10 + i);
                let (n, info) = node(&format!("c{i}"), NodeMode::Dvr, tip);
                t.nodes.insert(n.clone(), info);
                n
            })
            .collect();
        let (snat, info) = node("net1", NodeMode::DvrSnat, Ipv4Addr::new(192, 0, 2, 100));
        t.nodes.insert(snat, info);
        let ext = ExternalNetwork::new(ExternalNetworkSpec {
            id: id("ext-public".into()),
            name: nm("public".into()),
            cidr: "198.18.0.0/15".parse().expect("cidr"),
            gateway: "198.18.0.1".parse().expect("gw"),
            pool: "198.18.0.2-198.19.255.254".parse().expect("pool"),
        })
        .expect("ext");
        let ext_id = ext.id.clone();
        t.external_networks.insert(ext_id.clone(), ext);
        let fg = Port::new(PortSpec {
            id: id("fgw-bench".into()),
            name: nm("fg.bench".into()),
            network: ext_id.clone(),
            mac: mac(0x3b, 1),
            fixed_ips: vec!["198.18.0.2".parse().expect("ip")],
            host: me.clone(),
            device: None,
            allowed_address_pairs: vec![],
            metadata: Default::default(),
        })
        .expect("fg port");
        t.ports.insert(fg.id.clone(), fg);
        Builder {
            t,
            me,
            remotes,
            ext: ext_id,
            ports: 0,
        }
    }

    /// Router `r` with its subnets, ports and FIPs.
    fn router(&mut self, r: u32, subnets: u32, remote_per_subnet: u32, fips: u32) {
        let mut interfaces = BTreeSet::new();
        let mut snat_ports = BTreeMap::new();
        let mut local_ports = Vec::new();
        for s in 0..subnets {
            let k = r * subnets + s;
            let (sub_id, snat_port, local) = self.subnet(k, remote_per_subnet);
            interfaces.insert(sub_id.clone());
            snat_ports.insert(sub_id, snat_port);
            local_ports.push(local);
        }
        let rid = id(format!("rtr-{r:011}"));
        let router = Router::new(RouterSpec {
            id: rid.clone(),
            name: nm(format!("r{r}")),
            interfaces,
            gateway: Some(RouterGateway {
                external_network: self.ext.clone(),
                enable_snat: true,
                external_ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + r)),
            }),
            routes: BTreeSet::new(),
            ha: HaSettings::default(),
            snat_ports,
        })
        .expect("router");
        self.t.routers.insert(rid, router);
        for (f, (pid, fixed)) in local_ports.into_iter().take(fips as usize).enumerate() {
            let n = r * fips + f as u32;
            let fip = FloatingIp::new(FloatingIpSpec {
                id: id(format!("fip-{n:011}")),
                external_network: self.ext.clone(),
                ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + n),
                port: Some(pid),
                fixed_ip: Some(fixed),
            })
            .expect("fip");
            self.t.fips.insert(fip.id.clone(), fip);
        }
    }

    /// Network and subnet `k` (10.0.k.0/24) with one local port and `remote` remote ones:
    /// returns the subnet, the router's SNAT port on it, and the local port with its address.
    fn subnet(&mut self, k: u32, remote: u32) -> (ObjectId, SnatPort, (ObjectId, Ipv4Addr)) {
        let (net_id, sub_id) = (id(format!("net-{k:011}")), id(format!("sub-{k:011}")));
        let net = Network::new(NetworkSpec {
            id: net_id.clone(),
            name: nm(format!("net{k}")),
            vni: Vni::new(1000 + k).expect("vni"),
            mtu: Mtu::VXLAN_DEFAULT,
        })
        .expect("net");
        self.t.networks.insert(net_id.clone(), net);
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (k << 8);
        let ip = |h: u32| Ipv4Addr::from(base + h);
        let subnet = Subnet::new(SubnetSpec {
            id: sub_id.clone(),
            name: nm(format!("sub{k}")),
            network: net_id.clone(),
            cidr: Ipv4Cidr::new(ip(0), 24).expect("cidr"),
            gateway: ip(1),
            pool: Ipv4Range::new(ip(10), ip(250)).expect("pool"),
            dhcp: mesh_proto::SubnetDhcp::default(),
        })
        .expect("subnet");
        self.t.subnets.insert(sub_id.clone(), subnet);
        let mut local = None;
        for p in 0..=remote {
            self.ports += 1;
            let seq = self.ports;
            let host = match p {
                0 => self.me.clone(),
                _ => self.remotes[(p as usize - 1) % self.remotes.len()].clone(),
            };
            let port = Port::new(PortSpec {
                id: id(format!("port-{seq:011}")),
                name: nm(format!("p{seq}")),
                network: net_id.clone(),
                mac: mac(0x3e, seq),
                fixed_ips: vec![ip(10 + p)],
                // A local port is a VM's tap, made by the hypervisor (the harness makes it
                // before timing); dvrmesh only attaches it to its network's bridge.
                device: (p == 0).then(|| InterfaceName::new(format!("vm{k}")).expect("ifname")),
                host,
                allowed_address_pairs: vec![],
                metadata: Default::default(),
            })
            .expect("port");
            if p == 0 {
                local = Some((port.id.clone(), ip(10)));
            }
            self.t.ports.insert(port.id.clone(), port);
        }
        let snat_port = SnatPort {
            ip: ip(3),
            mac: mac(0x3c, k),
        };
        let local = local.expect("the loop makes the local port first");
        (sub_id, snat_port, local)
    }
}

/// [`build`] without its last router and that router's FIPs: the node already has the router's
/// networks and VM ports (a VM booted before the tenant added the router).
pub fn build_before_last_router(
    routers: u32,
    subnets_per_router: u32,
    remote_per_subnet: u32,
    fips_per_router: u32,
) -> Topology {
    let mut t = build(
        routers,
        subnets_per_router,
        remote_per_subnet,
        fips_per_router,
    );
    if let Some(last) = routers.checked_sub(1) {
        t.routers.remove(&id(format!("rtr-{last:011}")));
        for f in 0..fips_per_router {
            t.fips
                .remove(&id(format!("fip-{:011}", last * fips_per_router + f)));
        }
    }
    t.snat_holders = datapath::default_snat_holders(&t);
    t
}

/// The fixed address the FIP benchmark's VM has, and the FIP it is reached by.
pub const FIP_VM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// See [`FIP_VM_IP`].
pub const FIP_VM_FIP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 10);
/// The VM's port MAC in the FIP benchmark.
pub const FIP_VM_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x10];
/// The VM's tap in the FIP benchmark (made by the harness, as a hypervisor would).
pub const FIP_VM_TAP: &str = "vm0";

/// One router on this node with one /16 subnet, one VM port ([`FIP_VM_IP`] on [`FIP_VM_TAP`])
/// and `fips` floating IPs: the VM's ([`FIP_VM_FIP`]) and `fips - 1` more on other fixed
/// addresses of that subnet. The extra FIPs all name the VM's port: the datapath's per-FIP
/// objects (a /32 in the fip namespace, an element in each of three nft sets/maps) are the same
/// as with a port per FIP, without a tap per port.
pub fn fip_node(fips: u32) -> Topology {
    let mut b = Builder::new();
    let net_id = id("net-fipbench".into());
    b.t.networks.insert(
        net_id.clone(),
        Network::new(NetworkSpec {
            id: net_id.clone(),
            name: nm("fipnet".into()),
            vni: Vni::new(1000).expect("vni"),
            mtu: Mtu::VXLAN_DEFAULT,
        })
        .expect("net"),
    );
    let sub_id = id("sub-fipbench".into());
    let subnet = Subnet::new(SubnetSpec {
        id: sub_id.clone(),
        name: nm("fipsub".into()),
        network: net_id.clone(),
        cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 16).expect("cidr"),
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        pool: Ipv4Range::new(Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 255, 250))
            .expect("pool"),
        dhcp: mesh_proto::SubnetDhcp::default(),
    })
    .expect("subnet");
    b.t.subnets.insert(sub_id.clone(), subnet);
    let pid = id("port-fipbench-vm".into());
    let port = Port::new(PortSpec {
        id: pid.clone(),
        name: nm("fipvm".into()),
        network: net_id,
        mac: MacAddr::new(FIP_VM_MAC).expect("mac"),
        fixed_ips: vec![FIP_VM_IP],
        device: Some(InterfaceName::new(FIP_VM_TAP).expect("ifname")),
        host: b.me.clone(),
        allowed_address_pairs: vec![],
        metadata: Default::default(),
    })
    .expect("port");
    b.t.ports.insert(pid.clone(), port);
    let rid = id("rtr-fipbench".into());
    let router = Router::new(RouterSpec {
        id: rid.clone(),
        name: nm("fiprouter".into()),
        interfaces: BTreeSet::from([sub_id.clone()]),
        gateway: Some(RouterGateway {
            external_network: b.ext.clone(),
            enable_snat: true,
            external_ip: Some(Ipv4Addr::new(198, 19, 0, 1)),
        }),
        routes: BTreeSet::new(),
        ha: HaSettings::default(),
        snat_ports: BTreeMap::from([(
            sub_id,
            SnatPort {
                ip: Ipv4Addr::new(10, 0, 0, 3),
                mac: mac(0x3c, 1),
            },
        )]),
    })
    .expect("router");
    b.t.routers.insert(rid, router);
    for n in 0..fips {
        // The VM's FIP first; the others on 10.0.1.0 onwards and 198.18.160.0 onwards.
        let (fip_ip, fixed) = match n {
            0 => (FIP_VM_FIP, FIP_VM_IP),
            _ => (
                Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 160, 0)) + n),
                Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 1, 0)) + n),
            ),
        };
        let fip = FloatingIp::new(FloatingIpSpec {
            id: id(format!("fip-{n:011}")),
            external_network: b.ext.clone(),
            ip: fip_ip,
            port: Some(pid.clone()),
            fixed_ip: Some(fixed),
        })
        .expect("fip");
        b.t.fips.insert(fip.id.clone(), fip);
    }
    let mut t = b.t;
    t.snat_holders = datapath::default_snat_holders(&t);
    t
}

/// The fixed address of extra FIP `n` (1-based) of [`fip_node`], for the `ip rule` baseline.
pub fn fip_node_fixed(n: u32) -> Ipv4Addr {
    match n {
        0 => FIP_VM_IP,
        _ => Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 1, 0)) + n),
    }
}
