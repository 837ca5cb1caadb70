//! What the metadata service tells each local port, from the planner's topology (pure), and who
//! a request comes from: the network whose metadata namespace it arrived in and its source
//! address, which must be the fixed address of exactly one port this node hosts there.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use datapath::Topology;
use mesh_proto::{Ipv4Cidr, MacAddr, NodeId, ObjectId, Port};
use serde::Serialize;

/// Everything one port's documents carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortDoc {
    /// The port id: OpenStack's `uuid`, EC2's `instance-id`.
    pub id: ObjectId,
    /// The port's name.
    pub name: String,
    /// Its host name (the port's own, else its name).
    pub hostname: String,
    /// The node that hosts it: the availability zone.
    pub node: NodeId,
    /// Its MAC.
    pub mac: MacAddr,
    /// The fixed address the request came from.
    pub ip: Ipv4Addr,
    /// The subnet of that address.
    pub cidr: Ipv4Cidr,
    /// The subnet's gateway, when a router serves the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// The network id and MTU.
    pub network: ObjectId,
    /// The network's MTU.
    pub mtu: u16,
    /// DNS servers of the subnet.
    pub dns_servers: Vec<Ipv4Addr>,
    /// The floating IP mapped onto this address, if any.
    pub public_ip: Option<Ipv4Addr>,
    /// User data, when set.
    pub user_data: Option<String>,
    /// Public keys, when set.
    pub ssh_keys: Vec<String>,
}

/// Who holds an address on one network of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Exactly one local port.
    One(Box<PortDoc>),
    /// More than one local port (duplicates written on both sides of a partition, until they
    /// are re-addressed): no one is answered.
    Several,
}

/// The local ports of one network, by fixed address.
pub type NetworkPorts = BTreeMap<Ipv4Addr, Holder>;

/// Why a request gets no document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The source is no local port's address on this network.
    Unknown,
    /// Several local ports hold the source address.
    Ambiguous,
}

/// The documents of every port `me` hosts, by network, then by fixed address.
pub fn documents(t: &Topology, me: &NodeId) -> BTreeMap<ObjectId, NetworkPorts> {
    let mut out: BTreeMap<ObjectId, NetworkPorts> = BTreeMap::new();
    for port in t.ports.values().filter(|p| &p.host == me) {
        // FIP gateway ports live on external networks, which are not in `networks`.
        let Some(net) = t.networks.get(&port.network) else {
            continue;
        };
        let by_ip = out.entry(net.id.clone()).or_default();
        for ip in &port.fixed_ips {
            let Some(doc) = doc_of(t, port, *ip, net.mtu.get()) else {
                continue;
            };
            by_ip
                .entry(*ip)
                .and_modify(|h| *h = Holder::Several)
                .or_insert_with(|| Holder::One(Box::new(doc)));
        }
    }
    out
}

fn doc_of(t: &Topology, port: &Port, ip: Ipv4Addr, mtu: u16) -> Option<PortDoc> {
    let subnet = t
        .subnets
        .values()
        .find(|s| s.network == port.network && s.cidr.contains(ip))?;
    let routed = t
        .routers
        .values()
        .any(|r| r.interfaces.contains(&subnet.id));
    let public_ip = t
        .fips
        .values()
        .find(|f| {
            f.port.as_ref() == Some(&port.id) && f.fixed_ip.unwrap_or(port.fixed_ips[0]) == ip
        })
        .map(|f| f.ip);
    let m = &port.metadata;
    Some(PortDoc {
        id: port.id.clone(),
        name: port.name.to_string(),
        hostname: m.hostname.clone().unwrap_or_else(|| port.name.to_string()),
        node: port.host.clone(),
        mac: port.mac,
        ip,
        cidr: subnet.cidr,
        gateway: routed.then_some(subnet.gateway),
        network: port.network.clone(),
        mtu,
        dns_servers: subnet.dhcp.dns_servers.clone(),
        public_ip,
        user_data: m.user_data.clone(),
        ssh_keys: m.ssh_keys.clone(),
    })
}

/// The port a request from `source` on a network with `ports` comes from. The address alone
/// names it: the network is the namespace the connection arrived in (two tenants with one CIDR
/// never share one), and the connection is established, which the permanent neighbour of each
/// local address (the port's MAC) and the bridge's static entry for that MAC (the port's device)
/// allow only for the VM on that port: a VM sending from another's address never receives the
/// answer to its SYN.
pub fn identify(ports: &NetworkPorts, source: Ipv4Addr) -> Result<&PortDoc, Refusal> {
    match ports.get(&source) {
        Some(Holder::One(doc)) => Ok(doc),
        Some(Holder::Several) => Err(Refusal::Ambiguous),
        None => Err(Refusal::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{
        FloatingIp, FloatingIpSpec, Mtu, Name, Network, NetworkSpec, PortMetadata, PortSpec,
        Subnet, SubnetDhcp, SubnetSpec, Vni,
    };

    fn id(s: &str) -> ObjectId {
        ObjectId::new(s).expect("id")
    }

    fn port(name: &str, net: &str, ip: &str, host: &str, mac: u8) -> Port {
        Port::new(PortSpec {
            id: id(name),
            name: Name::new(name).expect("name"),
            network: id(net),
            mac: format!("fa:16:3e:00:00:{mac:02x}").parse().expect("mac"),
            fixed_ips: vec![ip.parse().expect("ip")],
            host: NodeId::new(host).expect("node"),
            device: None,
            allowed_address_pairs: vec![],
            metadata: PortMetadata::default(),
        })
        .expect("port")
    }

    /// Two tenants' networks with the same CIDR, a port of each on c1, one on c2.
    fn topology() -> Topology {
        let mut t = Topology::default();
        for (n, vni) in [("red", 10), ("blue", 20)] {
            let net = Network::new(NetworkSpec {
                id: id(n),
                name: Name::new(n).expect("name"),
                vni: Vni::new(vni).expect("vni"),
                mtu: Mtu::new(1400).expect("mtu"),
            })
            .expect("net");
            t.networks.insert(id(n), net);
            let s = format!("{n}-s");
            let subnet = Subnet::new(SubnetSpec {
                id: id(&s),
                name: Name::new(&s).expect("name"),
                network: id(n),
                cidr: "10.0.0.0/24".parse().expect("cidr"),
                gateway: "10.0.0.1".parse().expect("gw"),
                pool: "10.0.0.10-10.0.0.200".parse().expect("pool"),
                dhcp: SubnetDhcp::default(),
            })
            .expect("subnet");
            t.subnets.insert(id(&s), subnet);
        }
        for p in [
            port("r1", "red", "10.0.0.10", "c1", 1),
            port("b1", "blue", "10.0.0.10", "c1", 2),
            port("r2", "red", "10.0.0.11", "c2", 3),
        ] {
            t.ports.insert(p.id.clone(), p);
        }
        t
    }

    #[test]
    fn each_network_knows_only_its_own_local_ports() {
        let c1 = NodeId::new("c1").expect("node");
        let docs = documents(&topology(), &c1);
        let ip: Ipv4Addr = "10.0.0.10".parse().expect("ip");
        let red = identify(&docs[&id("red")], ip).expect("red port");
        let blue = identify(&docs[&id("blue")], ip).expect("blue port");
        assert_eq!((red.id.as_str(), blue.id.as_str()), ("r1", "b1"));
        assert_eq!(red.node, c1);
        assert_eq!(red.gateway, None, "no router");
        // r2 is on c2: c1 does not answer for it, whatever address asks.
        let other: Ipv4Addr = "10.0.0.11".parse().expect("ip");
        assert_eq!(identify(&docs[&id("red")], other), Err(Refusal::Unknown));
    }

    #[test]
    fn an_address_held_twice_answers_no_one() {
        let mut t = topology();
        let dup = port("r3", "red", "10.0.0.10", "c1", 4);
        t.ports.insert(dup.id.clone(), dup);
        let docs = documents(&t, &NodeId::new("c1").expect("node"));
        let ip: Ipv4Addr = "10.0.0.10".parse().expect("ip");
        assert_eq!(identify(&docs[&id("red")], ip), Err(Refusal::Ambiguous));
        assert!(identify(&docs[&id("blue")], ip).is_ok());
    }

    #[test]
    fn the_fip_and_the_metadata_reach_the_document() {
        let mut t = topology();
        let mut spec = t.ports[&id("r1")].clone().into_spec();
        spec.metadata = PortMetadata {
            hostname: Some("web".into()),
            user_data: Some("#cloud-config\n".into()),
            ssh_keys: vec!["ssh-ed25519 AAAA k".into()],
        };
        t.ports.insert(id("r1"), Port::new(spec).expect("port"));
        let fip = FloatingIp::new(FloatingIpSpec {
            id: id("f1"),
            external_network: id("ext"),
            ip: "203.0.113.5".parse().expect("ip"),
            port: Some(id("r1")),
            fixed_ip: None,
        })
        .expect("fip");
        t.fips.insert(id("f1"), fip);
        let docs = documents(&t, &NodeId::new("c1").expect("node"));
        let d = identify(&docs[&id("red")], "10.0.0.10".parse().expect("ip")).expect("doc");
        assert_eq!(d.public_ip, Some("203.0.113.5".parse().expect("ip")));
        assert_eq!(d.hostname, "web");
        assert_eq!(d.user_data.as_deref(), Some("#cloud-config\n"));
        assert_eq!(d.ssh_keys.len(), 1);
    }
}
