//! Creating networks, subnets and external networks.

use std::net::Ipv4Addr;

use mesh_proto::{
    ExternalNetwork, ExternalNetworkSpec, Ipv4Cidr, Ipv4Range, Mtu, Network, NetworkSpec,
    ObjectKind, Subnet, SubnetDhcp, SubnetSpec, TenantObject, Vni,
};

use super::lookup::{network_ref, parse_cidr, parse_ip, parse_name, unique_name};
use super::{put_unique, Ctx, Outcome};

/// A network: a unique name and a VNI no other network uses.
pub(super) fn network(
    cx: &mut Ctx<'_>,
    name: &str,
    vni: u32,
    mtu: Option<u16>,
) -> Result<Outcome, String> {
    let name = parse_name(name)?;
    let vni = Vni::new(vni).map_err(|e| e.to_string())?;
    let mtu = match mtu {
        Some(m) => Mtu::new(m).map_err(|e| e.to_string())?,
        None => Mtu::VXLAN_DEFAULT,
    };
    unique_name(cx.state, ObjectKind::Network, &name)?;
    if let Some(n) = cx.state.networks().find(|n| n.vni == vni) {
        return Err(format!(
            "VNI {vni} is already used by network {} ({})",
            n.name, n.id
        ));
    }
    let net = Network::new(NetworkSpec {
        id: (cx.new_id)(ObjectKind::Network),
        name,
        vni,
        mtu,
    })
    .map_err(|e| e.to_string())?;
    put_unique(TenantObject::Network(net))
}

/// A subnet create request's arguments, as typed.
pub(super) struct SubnetArgs<'a> {
    pub(super) name: &'a str,
    pub(super) network: &'a str,
    pub(super) cidr: &'a str,
    pub(super) gateway: Option<&'a str>,
    pub(super) pool: Option<&'a str>,
    pub(super) dhcp: bool,
    pub(super) dns_servers: &'a [String],
    pub(super) domain: Option<&'a str>,
}

/// A subnet of a network: no overlap with the network's other subnets.
pub(super) fn subnet(cx: &mut Ctx<'_>, a: &SubnetArgs<'_>) -> Result<Outcome, String> {
    let SubnetArgs {
        name,
        network,
        cidr,
        gateway,
        pool,
        ..
    } = *a;
    let dhcp = SubnetDhcp {
        enabled: a.dhcp,
        dns_servers: a
            .dns_servers
            .iter()
            .map(|s| parse_ip("DNS server", s))
            .collect::<Result<_, _>>()?,
        domain: a.domain.map(str::to_string),
    };
    let name = parse_name(name)?;
    let net = network_ref(cx.state, network)?;
    let cidr = parse_cidr(cidr)?;
    unique_name(cx.state, ObjectKind::Subnet, &name)?;
    let gateway = match gateway {
        Some(g) => parse_ip("gateway", g)?,
        None => cidr.host_range().first(),
    };
    let pool = pool_or_default(pool, cidr, gateway)?;
    if let Some(o) = cx
        .state
        .subnets()
        .find(|s| s.network == net.id && s.cidr.overlaps(&cidr))
    {
        return Err(format!(
            "{cidr} overlaps subnet {} ({}) on network {}",
            o.name, o.cidr, net.name
        ));
    }
    let s = Subnet::new(SubnetSpec {
        id: (cx.new_id)(ObjectKind::Subnet),
        name,
        network: net.id.clone(),
        cidr,
        gateway,
        pool,
        dhcp,
    })
    .map_err(|e| e.to_string())?;
    put_unique(TenantObject::Subnet(s))
}

/// An external network: no overlap with another external network.
pub(super) fn external_network(
    cx: &mut Ctx<'_>,
    name: &str,
    cidr: &str,
    gateway: &str,
    pool: Option<&str>,
) -> Result<Outcome, String> {
    let name = parse_name(name)?;
    let cidr = parse_cidr(cidr)?;
    let gateway = parse_ip("gateway", gateway)?;
    unique_name(cx.state, ObjectKind::ExternalNetwork, &name)?;
    let pool = pool_or_default(pool, cidr, gateway)?;
    if let Some(o) = cx
        .state
        .external_networks()
        .find(|e| e.cidr.overlaps(&cidr))
    {
        return Err(format!(
            "{cidr} overlaps external network {} ({})",
            o.name, o.cidr
        ));
    }
    let e = ExternalNetwork::new(ExternalNetworkSpec {
        id: (cx.new_id)(ObjectKind::ExternalNetwork),
        name,
        cidr,
        gateway,
        pool,
    })
    .map_err(|e| e.to_string())?;
    put_unique(TenantObject::ExternalNetwork(e))
}

/// The pool asked for, else every usable host of `cidr` but the gateway.
fn pool_or_default(
    pool: Option<&str>,
    cidr: Ipv4Cidr,
    gateway: Ipv4Addr,
) -> Result<Ipv4Range, String> {
    match pool {
        Some(p) => p.parse::<Ipv4Range>().map_err(|e| e.to_string()),
        None => default_pool(cidr, gateway),
    }
}

fn default_pool(cidr: Ipv4Cidr, gateway: Ipv4Addr) -> Result<Ipv4Range, String> {
    if !cidr.is_usable_host(gateway) {
        return Err(format!(
            "gateway {gateway} is not a usable host address of {cidr}"
        ));
    }
    let hosts = cidr.host_range();
    // Everything usable except the gateway: start after it when it sits first, else end before it.
    if gateway == hosts.first() {
        let first = Ipv4Addr::from(u32::from(gateway) + 1);
        Ipv4Range::new(first, hosts.last()).map_err(|e| e.to_string())
    } else {
        let last = Ipv4Addr::from(u32::from(gateway) - 1);
        Ipv4Range::new(hosts.first(), last).map_err(|e| e.to_string())
    }
}
