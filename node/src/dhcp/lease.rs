//! What each local port's DHCP answers carry, from the planner's topology: pure.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use datapath::plan::{gateway_macs, port_device};
use datapath::Topology;
use mesh_proto::{Ipv4Cidr, MacAddr, NodeId, ObjectId, Port, Router, Subnet};

/// Everything one port's DHCP answers carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The port.
    pub port: ObjectId,
    /// The port's MAC: the only client hardware address answered on its device.
    pub mac: MacAddr,
    /// The port's fixed address (its first).
    pub ip: Ipv4Addr,
    /// The subnet holding it (mask and broadcast address).
    pub cidr: Ipv4Cidr,
    /// The server identifier and source of the answers: the subnet's gateway address.
    pub server_ip: Ipv4Addr,
    /// The source MAC of the answers: the subnet's gateway MAC.
    pub server_mac: MacAddr,
    /// The default gateway (option 3), when a router serves the subnet.
    pub router: Option<Ipv4Addr>,
    /// Classless static routes (option 121): with a router, the default route through it first
    /// (RFC 3442: a client given option 121 ignores option 3); then 169.254.169.254/32 on the
    /// link (next hop 0.0.0.0), where this node's metadata namespace answers; then the router's
    /// extra routes whose next hop is on the subnet.
    pub routes: Vec<(Ipv4Cidr, Ipv4Addr)>,
    /// The network's MTU (option 26).
    pub mtu: u16,
    /// DNS servers (option 6).
    pub dns_servers: Vec<Ipv4Addr>,
    /// DNS domain (option 15).
    pub domain: Option<String>,
    /// Host name (option 12): the port's host name, or else its name.
    pub hostname: String,
    /// Lease time (option 51); renewal at half, rebinding at seven eighths.
    pub lease_secs: u32,
}

/// The lease of every port hosted by `me` whose subnet has DHCP on, by the port's bridge-side
/// device.
pub fn leases(t: &Topology, me: &NodeId, lease: Duration) -> BTreeMap<String, Lease> {
    let gw_macs = gateway_macs(t);
    let lease_secs = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX);
    t.ports
        .values()
        .filter(|p| &p.host == me)
        .filter_map(|p| {
            let l = lease_of(t, p, &gw_macs, lease_secs)?;
            Some((port_device(p), l))
        })
        .collect()
}

fn lease_of(
    t: &Topology,
    port: &Port,
    gw_macs: &BTreeMap<String, MacAddr>,
    lease_secs: u32,
) -> Option<Lease> {
    // FIP gateway ports live on external networks, which are not in `networks`.
    let net = t.networks.get(&port.network)?;
    let ip = *port.fixed_ips.first()?;
    let subnet = t
        .subnets
        .values()
        .find(|s| s.network == port.network && s.cidr.contains(ip))?;
    if !subnet.dhcp.enabled {
        return None;
    }
    let router = t
        .routers
        .values()
        .find(|r| r.interfaces.contains(&subnet.id));
    Some(Lease {
        port: port.id.clone(),
        mac: port.mac,
        ip,
        cidr: subnet.cidr,
        server_ip: subnet.gateway,
        server_mac: *gw_macs.get(subnet.id.as_str())?,
        router: router.map(|_| subnet.gateway),
        routes: routes_of(router, subnet),
        mtu: net.mtu.get(),
        dns_servers: subnet.dhcp.dns_servers.clone(),
        domain: subnet.dhcp.domain.clone(),
        hostname: port
            .metadata
            .hostname
            .clone()
            .unwrap_or_else(|| port.name.to_string()),
        lease_secs,
    })
}

/// With a router, the default route through the subnet's gateway; the metadata address on the
/// link; then the router's extra routes reachable on the subnet.
fn routes_of(router: Option<&Router>, subnet: &Subnet) -> Vec<(Ipv4Cidr, Ipv4Addr)> {
    let default = Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).ok();
    let metadata = Ipv4Cidr::new(datapath::plan::METADATA_IP, 32).ok();
    let extra = router.into_iter().flat_map(|r| {
        r.routes
            .iter()
            .filter(|x| subnet.cidr.contains(x.nexthop))
            .map(|x| (x.destination, x.nexthop))
    });
    default
        .filter(|_| router.is_some())
        .map(|d| (d, subnet.gateway))
        .into_iter()
        .chain(metadata.map(|m| (m, Ipv4Addr::UNSPECIFIED)))
        .chain(extra)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{
        ExtraRoute, HaSettings, Mtu, Name, Network, NetworkSpec, PortSpec, RouterSpec, SubnetDhcp,
        SubnetSpec, Vni,
    };

    fn id(s: &str) -> ObjectId {
        ObjectId::new(s).expect("id")
    }

    fn topology() -> Topology {
        let mut t = Topology::default();
        for (n, vni) in [("n1", 10), ("n2", 20)] {
            let net = Network::new(NetworkSpec {
                id: id(n),
                name: Name::new(n).expect("name"),
                vni: Vni::new(vni).expect("vni"),
                mtu: Mtu::new(1400).expect("mtu"),
            })
            .expect("net");
            t.networks.insert(id(n), net);
        }
        for (s, n, cidr, enabled) in [("s1", "n1", "10.1.0", true), ("s2", "n2", "10.2.0", false)] {
            let subnet = Subnet::new(SubnetSpec {
                id: id(s),
                name: Name::new(s).expect("name"),
                network: id(n),
                cidr: format!("{cidr}.0/24").parse().expect("cidr"),
                gateway: format!("{cidr}.1").parse().expect("gw"),
                pool: format!("{cidr}.10-{cidr}.200").parse().expect("pool"),
                dhcp: SubnetDhcp {
                    enabled,
                    ..SubnetDhcp::default()
                },
            })
            .expect("subnet");
            t.subnets.insert(id(s), subnet);
        }
        for (p, n, ip, host) in [
            ("p1", "n1", "10.1.0.10", "c1"),
            ("p2", "n1", "10.1.0.11", "c2"),
            ("p3", "n2", "10.2.0.10", "c1"),
        ] {
            let port = Port::new(PortSpec {
                id: id(p),
                name: Name::new(format!("vm-{p}")).expect("name"),
                network: id(n),
                mac: format!("fa:16:3e:00:00:0{}", &p[1..]).parse().expect("mac"),
                fixed_ips: vec![ip.parse().expect("ip")],
                host: NodeId::new(host).expect("node"),
                device: None,
                allowed_address_pairs: vec![],
                metadata: Default::default(),
            })
            .expect("port");
            t.ports.insert(id(p), port);
        }
        t
    }

    fn with_router(mut t: Topology) -> Topology {
        let router = Router::new(RouterSpec {
            id: id("r1"),
            name: Name::new("r1").expect("name"),
            interfaces: [id("s1")].into_iter().collect(),
            gateway: None,
            routes: [
                ("192.0.2.0/24", "10.1.0.254"),
                ("198.51.100.0/24", "10.9.0.1"),
            ]
            .into_iter()
            .map(|(d, n)| ExtraRoute {
                destination: d.parse().expect("dst"),
                nexthop: n.parse().expect("nexthop"),
            })
            .collect(),
            ha: HaSettings::default(),
            snat_ports: BTreeMap::new(),
        })
        .expect("router");
        t.routers.insert(id("r1"), router);
        t
    }

    #[test]
    fn only_local_ports_of_subnets_with_dhcp_have_leases() {
        let c1 = NodeId::new("c1").expect("node");
        let l = leases(&topology(), &c1, Duration::from_secs(120));
        let ports: Vec<&str> = l.values().map(|x| x.port.as_str()).collect();
        assert_eq!(ports, ["p1"], "p2 is on c2, p3's subnet has DHCP off");
        let (dev, lease) = l.iter().next().expect("one");
        assert_eq!(dev, &port_device(&topology().ports[&id("p1")]));
        assert_eq!(lease.ip, "10.1.0.10".parse::<Ipv4Addr>().expect("ip"));
        assert_eq!((lease.mtu, lease.lease_secs), (1400, 120));
        assert_eq!(lease.router, None, "no router serves the subnet");
        let routes: Vec<String> = lease
            .routes
            .iter()
            .map(|(d, n)| format!("{d} via {n}"))
            .collect();
        assert_eq!(
            routes,
            ["169.254.169.254/32 via 0.0.0.0"],
            "metadata, on the link"
        );
    }

    #[test]
    fn a_router_gives_the_gateway_and_its_reachable_extra_routes() {
        let c1 = NodeId::new("c1").expect("node");
        let l = leases(&with_router(topology()), &c1, Duration::from_secs(120));
        let lease = l.values().next().expect("one");
        assert_eq!(lease.router, Some("10.1.0.1".parse().expect("gw")));
        let routes: Vec<String> = lease
            .routes
            .iter()
            .map(|(d, n)| format!("{d} via {n}"))
            .collect();
        assert_eq!(
            routes,
            [
                "0.0.0.0/0 via 10.1.0.1",
                "169.254.169.254/32 via 0.0.0.0",
                "192.0.2.0/24 via 10.1.0.254"
            ],
            "the route whose next hop is off the subnet is left out"
        );
    }
}
