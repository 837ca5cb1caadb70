//! Ports and floating IPs: validated here, then handed to allocation (their address and MAC are
//! claimed before they are published).

use mesh_proto::{
    FloatingIp, FloatingIpSpec, InterfaceName, MacAddr, NodeId, ObjectKind, PortMetadata, Subnet,
    TenantObject,
};

use super::lookup::{
    extnet_ref, fip_ref, network_ref, parse_ip, parse_name, port_ref, unique_name,
};
use super::{put, Ctx, FipPlan, Outcome, PortPlan, TenantState};
use crate::tenant::ipam;

/// What a port create asks for beyond its name and network.
pub(super) struct Wanted<'a> {
    pub(super) ip: Option<&'a str>,
    pub(super) mac: Option<&'a str>,
    pub(super) device: Option<&'a str>,
    pub(super) metadata: &'a PortMetadata,
}

/// A port hosted on the node handling the request: its address from the first subnet of its
/// network unless one is asked for (and free), its MAC allocated unless given (and free).
pub(super) fn create_port(
    cx: &mut Ctx<'_>,
    name: &str,
    network: &str,
    wanted: Wanted<'_>,
) -> Result<Outcome, String> {
    let state = cx.state;
    let name = parse_name(name)?;
    wanted.metadata.check().map_err(|e| e.to_string())?;
    let net = network_ref(state, network)?;
    unique_name(state, ObjectKind::Port, &name)?;
    let hosted = state.ports().filter(|p| &p.host == cx.me).count();
    if hosted >= crate::tenant::state::MAX_PORTS_PER_HOST {
        return Err(format!(
            "this node hosts {hosted} ports, the most one node may (other nodes would refuse more)"
        ));
    }
    let device = wanted
        .device
        .map(|d| InterfaceName::new(d).map_err(|e| e.to_string()))
        .transpose()?;
    let mac = wanted
        .mac
        .map(|m| m.parse::<MacAddr>().map_err(|e| e.to_string()))
        .transpose()?;
    let id = (cx.new_id)(ObjectKind::Port);
    if let Some(m) = mac {
        if ipam::mac_unavailable(state, m, &id, cx.now_ms) {
            return Err(format!("MAC {m} is already in use"));
        }
    }
    let subnets: Vec<&Subnet> = state.subnets().filter(|s| s.network == net.id).collect();
    let Some(first) = subnets.first() else {
        return Err(format!(
            "network {} has no subnet to take an address from",
            net.name
        ));
    };
    let (subnet, ip) = match wanted.ip {
        Some(ip) => {
            let ip = parse_ip("ip", ip)?;
            let s = subnets
                .iter()
                .find(|s| s.cidr.contains(ip))
                .ok_or_else(|| format!("{ip} is not in any subnet of network {}", net.name))?;
            if !s.cidr.is_usable_host(ip) {
                return Err(format!(
                    "{ip} is the network or broadcast address of {}",
                    s.cidr
                ));
            }
            if ipam::unavailable(state, &s.id, &id, cx.now_ms).contains(&ip) {
                return Err(format!("{ip} is already in use on subnet {}", s.name));
            }
            (s.id.clone(), Some(ip))
        }
        None => (first.id.clone(), None),
    };
    Ok(Outcome::Port(PortPlan {
        id,
        name,
        network: net.id.clone(),
        subnet,
        ip,
        mac,
        device,
        host: cx.me.clone(),
        metadata: wanted.metadata.clone(),
    }))
}

/// A port hosted here with the metadata fields given replaced (keys only when `keys_given`).
pub(super) fn set_port(
    state: &TenantState,
    me: &NodeId,
    port: &str,
    given: PortMetadata,
    keys_given: bool,
) -> Result<Outcome, String> {
    let p = port_ref(state, port)?;
    if &p.host != me {
        return Err(format!(
            "port {} is hosted on {}; change it through that node's agent",
            p.name, p.host
        ));
    }
    let mut spec = p.clone().into_spec();
    let m = &mut spec.metadata;
    if given.hostname.is_some() {
        m.hostname = given.hostname;
    }
    if given.user_data.is_some() {
        m.user_data = given.user_data;
    }
    if keys_given {
        m.ssh_keys = given.ssh_keys;
    }
    let port = mesh_proto::Port::new(spec).map_err(|e| e.to_string())?;
    put(TenantObject::Port(port))
}

/// A floating IP on an external network: its address allocated unless one is asked for (and
/// free).
pub(super) fn create_fip(
    cx: &mut Ctx<'_>,
    external_network: &str,
    ip: Option<&str>,
) -> Result<Outcome, String> {
    let e = extnet_ref(cx.state, external_network)?;
    let id = (cx.new_id)(ObjectKind::FloatingIp);
    let ip = match ip {
        Some(ip) => {
            let ip = parse_ip("ip", ip)?;
            if !e.cidr.is_usable_host(ip) {
                return Err(format!(
                    "{ip} is not a usable address of external network {} ({})",
                    e.name, e.cidr
                ));
            }
            if ipam::unavailable(cx.state, &e.id, &id, cx.now_ms).contains(&ip) {
                return Err(format!(
                    "{ip} is already in use on external network {}",
                    e.name
                ));
            }
            Some(ip)
        }
        None => None,
    };
    Ok(Outcome::Fip(FipPlan {
        id,
        external_network: e.id.clone(),
        ip,
    }))
}

/// Maps a free floating IP onto a port without one, when a router connects the port's subnet to
/// the floating IP's external network.
pub(super) fn associate(state: &TenantState, fip: &str, port: &str) -> Result<Outcome, String> {
    let f = fip_ref(state, fip)?;
    let p = port_ref(state, port)?;
    if let Some(cur) = &f.port {
        return Err(format!(
            "floating IP {} is already associated with port {cur}",
            f.ip
        ));
    }
    if let Some(other) = state
        .floating_ips()
        .find(|o| o.port.as_ref() == Some(&p.id))
    {
        return Err(format!(
            "port {} already has floating IP {}",
            p.name, other.ip
        ));
    }
    let fixed = p.fixed_ips[0];
    let subnet = state
        .subnets()
        .find(|s| s.network == p.network && s.cidr.contains(fixed))
        .ok_or_else(|| format!("port {}'s address {fixed} is in no subnet", p.name))?;
    let routed = state.routers().any(|r| {
        r.interfaces.contains(&subnet.id)
            && r.gateway
                .as_ref()
                .is_some_and(|g| g.external_network == f.external_network)
    });
    if !routed {
        return Err(format!(
            "no router connects subnet {} to external network {}: add the subnet to a router and set its gateway first",
            subnet.name, f.external_network
        ));
    }
    let mut spec = f.clone().into_spec();
    spec.port = Some(p.id.clone());
    spec.fixed_ip = Some(fixed);
    put_fip(spec)
}

/// Unmaps a floating IP.
pub(super) fn disassociate(state: &TenantState, fip: &str) -> Result<Outcome, String> {
    let f = fip_ref(state, fip)?;
    if f.port.is_none() {
        return Err(format!("floating IP {} is not associated", f.ip));
    }
    let mut spec = f.clone().into_spec();
    spec.port = None;
    spec.fixed_ip = None;
    put_fip(spec)
}

fn put_fip(spec: FloatingIpSpec) -> Result<Outcome, String> {
    let f = FloatingIp::new(spec).map_err(|e| e.to_string())?;
    put(TenantObject::FloatingIp(f))
}
