//! Operator requests, validated against the merged state and turned into writes.
//!
//! Every check runs before anything is written, so a refused request changes nothing. Requests
//! carry strings; parsing them here keeps every error message in one place.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use mesh_proto::{
    ExternalNetwork, ExternalNetworkSpec, ExtraRoute, FloatingIp, FloatingIpSpec, HaSettings,
    InterfaceName, Ipv4Cidr, Ipv4Range, MacAddr, Mtu, Name, Network, NetworkSpec, NodeId, ObjectId,
    ObjectKind, Port, Router, RouterGateway, RouterSpec, Subnet, SubnetSpec, TenantObject, Vni,
};
use serde::{Deserialize, Serialize};

use super::TenantState;

/// A request to read or change the tenant configuration. Fields are the CLI's arguments as typed.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConfigRequest {
    /// Create a network.
    NetworkCreate {
        name: String,
        vni: u32,
        mtu: Option<u16>,
    },
    /// Create a subnet on a network.
    SubnetCreate {
        name: String,
        network: String,
        cidr: String,
        gateway: Option<String>,
        pool: Option<String>,
    },
    /// Create an external network.
    ExternalNetworkCreate {
        name: String,
        cidr: String,
        gateway: String,
        pool: Option<String>,
    },
    /// Create a router.
    RouterCreate { name: String },
    /// Attach a subnet to a router.
    RouterAddInterface { router: String, subnet: String },
    /// Detach a subnet from a router.
    RouterRemoveInterface { router: String, subnet: String },
    /// Connect a router to an external network.
    RouterSetGateway {
        router: String,
        external_network: String,
        snat: bool,
    },
    /// Disconnect a router from its external network.
    RouterClearGateway { router: String },
    /// Change a router's SNAT HA settings: `NODE=P` or `NODE=default` overrides, preemption.
    RouterSetHa {
        router: String,
        #[serde(default)]
        priorities: Vec<String>,
        preempt: Option<bool>,
        preempt_delay: Option<String>,
    },
    /// Add a static route.
    RouterAddRoute {
        router: String,
        destination: String,
        nexthop: String,
    },
    /// Remove a static route.
    RouterRemoveRoute {
        router: String,
        destination: String,
        nexthop: String,
    },
    /// Create a port hosted on the node that receives the request.
    PortCreate {
        name: String,
        network: String,
        ip: Option<String>,
        mac: Option<String>,
        device: Option<String>,
    },
    /// Allocate a floating IP.
    FipCreate {
        external_network: String,
        ip: Option<String>,
    },
    /// Map a floating IP onto a port.
    FipAssociate { fip: String, port: String },
    /// Unmap a floating IP.
    FipDisassociate { fip: String },
    /// Delete an object.
    Delete { kind: ObjectKind, reference: String },
    /// List objects of a kind (ports optionally by host).
    List {
        kind: ObjectKind,
        host: Option<String>,
    },
    /// Show one object.
    Show { kind: ObjectKind, reference: String },
    /// The whole converged configuration.
    View,
}

/// What a valid request turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Publish these objects and tombstones.
    Writes(Vec<Write>),
    /// A port that needs an address (and maybe a MAC) claimed first.
    Port(PortPlan),
    /// A floating IP that needs an address claimed first.
    Fip(FipPlan),
    /// A router whose gateway address or SNAT ports must be allocated before it is published.
    Router(RouterSpec),
    /// A read: nothing to write.
    Read(serde_json::Value),
}

/// One change to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace.
    Put(TenantObject),
    /// Delete.
    Delete(ObjectKind, ObjectId),
}

/// A validated port waiting for its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// The port's id.
    pub id: ObjectId,
    /// Its name.
    pub name: Name,
    /// Its network.
    pub network: ObjectId,
    /// The subnet the address comes from.
    pub subnet: ObjectId,
    /// The requested address, if any.
    pub ip: Option<Ipv4Addr>,
    /// The requested MAC, if any.
    pub mac: Option<MacAddr>,
    /// The host device.
    pub device: Option<InterfaceName>,
    /// The host (the node handling the request).
    pub host: NodeId,
}

/// A validated floating IP waiting for its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FipPlan {
    /// Its id.
    pub id: ObjectId,
    /// The external network.
    pub external_network: ObjectId,
    /// The requested address, if any.
    pub ip: Option<Ipv4Addr>,
}

/// Validates a request. `new_id` makes a fresh object id for a kind; `me` is the node handling the
/// request; `now_ms` the wall clock (to judge claims).
pub fn plan(
    state: &TenantState,
    me: &NodeId,
    req: &ConfigRequest,
    new_id: &mut dyn FnMut(ObjectKind) -> ObjectId,
    now_ms: u64,
) -> Result<Outcome, String> {
    use ConfigRequest as R;
    match req {
        R::NetworkCreate { name, vni, mtu } => {
            let name = parse_name(name)?;
            let vni = Vni::new(*vni).map_err(|e| e.to_string())?;
            let mtu = match mtu {
                Some(m) => Mtu::new(*m).map_err(|e| e.to_string())?,
                None => Mtu::VXLAN_DEFAULT,
            };
            unique_name(state, ObjectKind::Network, &name)?;
            if let Some(n) = state.networks().find(|n| n.vni == vni) {
                return Err(format!(
                    "VNI {vni} is already used by network {} ({})",
                    n.name, n.id
                ));
            }
            let net = Network::new(NetworkSpec {
                id: new_id(ObjectKind::Network),
                name,
                vni,
                mtu,
            })
            .map_err(|e| e.to_string())?;
            Ok(Outcome::Writes(vec![Write::Put(TenantObject::Network(
                net,
            ))]))
        }
        R::SubnetCreate {
            name,
            network,
            cidr,
            gateway,
            pool,
        } => {
            let name = parse_name(name)?;
            let net = network_ref(state, network)?;
            let cidr: Ipv4Cidr = cidr.parse().map_err(|e: mesh_proto::Error| e.to_string())?;
            unique_name(state, ObjectKind::Subnet, &name)?;
            let range = cidr.host_range();
            let gateway = match gateway {
                Some(g) => parse_ip("gateway", g)?,
                None => range.first(),
            };
            let pool = match pool {
                Some(p) => p.parse::<Ipv4Range>().map_err(|e| e.to_string())?,
                None => default_pool(cidr, gateway)?,
            };
            if let Some(o) = state
                .subnets()
                .find(|s| s.network == net.id && s.cidr.overlaps(&cidr))
            {
                return Err(format!(
                    "{cidr} overlaps subnet {} ({}) on network {}",
                    o.name, o.cidr, net.name
                ));
            }
            let s = Subnet::new(SubnetSpec {
                id: new_id(ObjectKind::Subnet),
                name,
                network: net.id.clone(),
                cidr,
                gateway,
                pool,
            })
            .map_err(|e| e.to_string())?;
            Ok(Outcome::Writes(vec![Write::Put(TenantObject::Subnet(s))]))
        }
        R::ExternalNetworkCreate {
            name,
            cidr,
            gateway,
            pool,
        } => {
            let name = parse_name(name)?;
            let cidr: Ipv4Cidr = cidr.parse().map_err(|e: mesh_proto::Error| e.to_string())?;
            let gateway = parse_ip("gateway", gateway)?;
            unique_name(state, ObjectKind::ExternalNetwork, &name)?;
            let pool = match pool {
                Some(p) => p.parse::<Ipv4Range>().map_err(|e| e.to_string())?,
                None => default_pool(cidr, gateway)?,
            };
            if let Some(o) = state.external_networks().find(|e| e.cidr.overlaps(&cidr)) {
                return Err(format!(
                    "{cidr} overlaps external network {} ({})",
                    o.name, o.cidr
                ));
            }
            let e = ExternalNetwork::new(ExternalNetworkSpec {
                id: new_id(ObjectKind::ExternalNetwork),
                name,
                cidr,
                gateway,
                pool,
            })
            .map_err(|e| e.to_string())?;
            Ok(Outcome::Writes(vec![Write::Put(
                TenantObject::ExternalNetwork(e),
            )]))
        }
        R::RouterCreate { name } => {
            let name = parse_name(name)?;
            unique_name(state, ObjectKind::Router, &name)?;
            let r = Router::new(RouterSpec {
                id: new_id(ObjectKind::Router),
                name,
                interfaces: BTreeSet::new(),
                gateway: None,
                routes: BTreeSet::new(),
                ha: HaSettings::default(),
                snat_ports: Default::default(),
            })
            .map_err(|e| e.to_string())?;
            Ok(Outcome::Writes(vec![Write::Put(TenantObject::Router(r))]))
        }
        R::RouterAddInterface { router, subnet } => {
            let r = router_ref(state, router)?;
            let s = subnet_ref(state, subnet)?;
            if r.interfaces.contains(&s.id) {
                return Err(format!(
                    "router {} already has an interface on subnet {}",
                    r.name, s.name
                ));
            }
            if let Some(other) = state
                .routers()
                .find(|o| o.id != r.id && o.interfaces.contains(&s.id))
            {
                return Err(format!(
                    "subnet {} is already on router {}",
                    s.name, other.name
                ));
            }
            for sid in &r.interfaces {
                if let Some(TenantObject::Subnet(o)) = state.get(ObjectKind::Subnet, sid) {
                    if o.cidr.overlaps(&s.cidr) {
                        return Err(format!(
                            "subnet {} ({}) overlaps subnet {} ({}) already on router {}",
                            s.name, s.cidr, o.name, o.cidr, r.name
                        ));
                    }
                }
            }
            let mut spec = r.clone().into_spec();
            spec.interfaces.insert(s.id.clone());
            put_router(spec)
        }
        R::RouterRemoveInterface { router, subnet } => {
            let r = router_ref(state, router)?;
            let s = subnet_ref(state, subnet)?;
            if !r.interfaces.contains(&s.id) {
                return Err(format!(
                    "router {} has no interface on subnet {}",
                    r.name, s.name
                ));
            }
            if let Some(f) = fips_through(state, r, &s.id).next() {
                return Err(format!(
                    "floating IP {} is associated with a port on subnet {}; disassociate it first",
                    f.ip, s.name
                ));
            }
            let mut spec = r.clone().into_spec();
            spec.interfaces.remove(&s.id);
            spec.snat_ports.remove(&s.id);
            put_router(spec)
        }
        R::RouterSetGateway {
            router,
            external_network,
            snat,
        } => {
            let r = router_ref(state, router)?;
            let e = extnet_ref(state, external_network)?;
            let mut spec = r.clone().into_spec();
            let kept_ip = r
                .gateway
                .as_ref()
                .filter(|g| g.external_network == e.id)
                .and_then(|g| g.external_ip);
            spec.gateway = Some(RouterGateway {
                external_network: e.id.clone(),
                enable_snat: *snat,
                external_ip: kept_ip,
            });
            put_router(spec)
        }
        R::RouterClearGateway { router } => {
            let r = router_ref(state, router)?;
            if r.gateway.is_none() {
                return Err(format!("router {} has no gateway", r.name));
            }
            if let Some(f) = r
                .interfaces
                .iter()
                .flat_map(|s| fips_through(state, r, s))
                .next()
            {
                return Err(format!(
                    "floating IP {} depends on router {}'s gateway; disassociate it first",
                    f.ip, r.name
                ));
            }
            let mut spec = r.clone().into_spec();
            spec.gateway = None;
            spec.snat_ports.clear();
            put_router(spec)
        }
        R::RouterSetHa {
            router,
            priorities,
            preempt,
            preempt_delay,
        } => {
            let r = router_ref(state, router)?;
            let mut spec = r.clone().into_spec();
            if priorities.is_empty() && preempt.is_none() && preempt_delay.is_none() {
                return Err(
                    "nothing to change: give --priority NODE=P, --preempt/--no-preempt or --preempt-delay"
                        .into(),
                );
            }
            for p in priorities {
                let (node, value) = p
                    .split_once('=')
                    .ok_or_else(|| format!("priority {p:?}: expected NODE=PRIORITY"))?;
                let node = mesh_proto::NodeId::new(node.trim())
                    .map_err(|e| format!("priority {p:?}: {e}"))?;
                if value.trim() == "default" {
                    spec.ha.priorities.remove(&node);
                    continue;
                }
                let prio = value
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .and_then(|v| mesh_proto::Priority::new(v).ok())
                    .ok_or_else(|| {
                        format!("priority {p:?}: {value:?} is not a priority from 1 to 254")
                    })?;
                spec.ha.priorities.insert(node, prio);
            }
            if let Some(p) = preempt {
                spec.ha.preempt = *p;
            }
            if let Some(d) = preempt_delay {
                spec.ha.preempt_delay_ms =
                    parse_duration_ms(d).map_err(|e| format!("preempt delay {d:?}: {e}"))?;
            }
            put_router(spec)
        }
        R::RouterAddRoute {
            router,
            destination,
            nexthop,
        }
        | R::RouterRemoveRoute {
            router,
            destination,
            nexthop,
        } => {
            let r = router_ref(state, router)?;
            let destination: Ipv4Cidr = destination
                .parse()
                .map_err(|e: mesh_proto::Error| e.to_string())?;
            let nexthop = parse_ip("nexthop", nexthop)?;
            let route = ExtraRoute {
                destination,
                nexthop,
            };
            let mut spec = r.clone().into_spec();
            if matches!(req, R::RouterAddRoute { .. }) {
                let on_link = r.interfaces.iter().any(|sid| {
                    matches!(state.get(ObjectKind::Subnet, sid), Some(TenantObject::Subnet(s)) if s.cidr.contains(nexthop))
                });
                if !on_link {
                    return Err(format!(
                        "next hop {nexthop} is not on any subnet of router {}",
                        r.name
                    ));
                }
                if !spec.routes.insert(route) {
                    return Err(format!(
                        "router {} already has route {destination} via {nexthop}",
                        r.name
                    ));
                }
            } else if !spec.routes.remove(&route) {
                return Err(format!(
                    "router {} has no route {destination} via {nexthop}",
                    r.name
                ));
            }
            put_router(spec)
        }
        R::PortCreate {
            name,
            network,
            ip,
            mac,
            device,
        } => {
            let name = parse_name(name)?;
            let net = network_ref(state, network)?;
            unique_name(state, ObjectKind::Port, &name)?;
            let device = device
                .as_ref()
                .map(|d| InterfaceName::new(d.as_str()).map_err(|e| e.to_string()))
                .transpose()?;
            let mac = mac
                .as_ref()
                .map(|m| m.parse::<MacAddr>().map_err(|e| e.to_string()))
                .transpose()?;
            let id = new_id(ObjectKind::Port);
            if let Some(m) = mac {
                if super::ipam::mac_unavailable(state, m, &id, now_ms) {
                    return Err(format!("MAC {m} is already in use"));
                }
            }
            let subnets: Vec<&Subnet> = state.subnets().filter(|s| s.network == net.id).collect();
            if subnets.is_empty() {
                return Err(format!(
                    "network {} has no subnet to take an address from",
                    net.name
                ));
            }
            let (subnet, ip) = match ip {
                Some(ip) => {
                    let ip = parse_ip("ip", ip)?;
                    let s = subnets
                        .iter()
                        .find(|s| s.cidr.contains(ip))
                        .ok_or_else(|| {
                            format!("{ip} is not in any subnet of network {}", net.name)
                        })?;
                    if !s.cidr.is_usable_host(ip) {
                        return Err(format!(
                            "{ip} is the network or broadcast address of {}",
                            s.cidr
                        ));
                    }
                    if super::ipam::unavailable(state, &s.id, &id, now_ms).contains(&ip) {
                        return Err(format!("{ip} is already in use on subnet {}", s.name));
                    }
                    (s.id.clone(), Some(ip))
                }
                None => (subnets[0].id.clone(), None),
            };
            Ok(Outcome::Port(PortPlan {
                id,
                name,
                network: net.id.clone(),
                subnet,
                ip,
                mac,
                device,
                host: me.clone(),
            }))
        }
        R::FipCreate {
            external_network,
            ip,
        } => {
            let e = extnet_ref(state, external_network)?;
            let id = new_id(ObjectKind::FloatingIp);
            let ip = match ip {
                Some(ip) => {
                    let ip = parse_ip("ip", ip)?;
                    if !e.cidr.is_usable_host(ip) {
                        return Err(format!(
                            "{ip} is not a usable address of external network {} ({})",
                            e.name, e.cidr
                        ));
                    }
                    if super::ipam::unavailable(state, &e.id, &id, now_ms).contains(&ip) {
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
        R::FipAssociate { fip, port } => {
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
        R::FipDisassociate { fip } => {
            let f = fip_ref(state, fip)?;
            if f.port.is_none() {
                return Err(format!("floating IP {} is not associated", f.ip));
            }
            let mut spec = f.clone().into_spec();
            spec.port = None;
            spec.fixed_ip = None;
            put_fip(spec)
        }
        R::Delete { kind, reference } => delete(state, me, *kind, reference),
        R::List { kind, host } => {
            let host = host
                .as_ref()
                .map(|h| NodeId::new(h.as_str()).map_err(|e| e.to_string()))
                .transpose()?;
            let items: Vec<&TenantObject> = state
                .objects(*kind)
                .filter(|o| match (o, &host) {
                    (TenantObject::Port(p), Some(h)) => &p.host == h,
                    _ => true,
                })
                .collect();
            Ok(Outcome::Read(
                serde_json::to_value(items.iter().map(|o| object_json(o)).collect::<Vec<_>>())
                    .map_err(|e| e.to_string())?,
            ))
        }
        R::Show { kind, reference } => {
            let o = resolve(state, *kind, reference)?;
            Ok(Outcome::Read(object_json(o)))
        }
        R::View => Ok(Outcome::Read(
            serde_json::to_value(state.summary()).map_err(|e| e.to_string())?,
        )),
    }
}

/// The JSON form of an object: its fields, untagged.
pub fn object_json(o: &TenantObject) -> serde_json::Value {
    let v = match o {
        TenantObject::Network(x) => serde_json::to_value(x),
        TenantObject::Subnet(x) => serde_json::to_value(x),
        TenantObject::ExternalNetwork(x) => serde_json::to_value(x),
        TenantObject::Router(x) => serde_json::to_value(x),
        TenantObject::FloatingIp(x) => serde_json::to_value(x),
        TenantObject::Port(x) => serde_json::to_value(x),
    };
    v.unwrap_or(serde_json::Value::Null)
}

fn delete(
    state: &TenantState,
    me: &NodeId,
    kind: ObjectKind,
    reference: &str,
) -> Result<Outcome, String> {
    let o = resolve(state, kind, reference)?;
    let id = o.id().clone();
    match o {
        TenantObject::Network(n) => {
            if let Some(p) = state.ports().find(|p| p.network == n.id) {
                return Err(format!(
                    "network {} still has port {} ({}); delete it first",
                    n.name, p.name, p.id
                ));
            }
            if let Some(s) = state.subnets().find(|s| s.network == n.id) {
                return Err(format!(
                    "network {} still has subnet {} ({}); delete it first",
                    n.name, s.name, s.id
                ));
            }
        }
        TenantObject::Subnet(s) => {
            if let Some(r) = state.routers().find(|r| r.interfaces.contains(&s.id)) {
                return Err(format!(
                    "subnet {} is still on router {}; remove the interface first",
                    s.name, r.name
                ));
            }
            if let Some(p) = state.ports().find(|p| {
                p.network == s.network && p.fixed_ips.iter().any(|ip| s.cidr.contains(*ip))
            }) {
                return Err(format!(
                    "subnet {} still has port {} ({}); delete it first",
                    s.name, p.name, p.id
                ));
            }
        }
        TenantObject::ExternalNetwork(e) => {
            if let Some(r) = state.routers().find(|r| {
                r.gateway
                    .as_ref()
                    .is_some_and(|g| g.external_network == e.id)
            }) {
                return Err(format!(
                    "router {} still uses external network {}; clear its gateway first",
                    r.name, e.name
                ));
            }
            if let Some(f) = state.floating_ips().find(|f| f.external_network == e.id) {
                return Err(format!(
                    "floating IP {} is still on external network {}; delete it first",
                    f.ip, e.name
                ));
            }
        }
        TenantObject::Router(r) => {
            if !r.interfaces.is_empty() {
                return Err(format!(
                    "router {} still has {} interface(s); remove them first",
                    r.name,
                    r.interfaces.len()
                ));
            }
        }
        TenantObject::Port(p) => {
            if &p.host != me {
                return Err(format!(
                    "port {} is hosted on {}; delete it through that node's agent",
                    p.name, p.host
                ));
            }
            if let Some(f) = state
                .floating_ips()
                .find(|f| f.port.as_ref() == Some(&p.id))
            {
                return Err(format!(
                    "port {} has floating IP {}; disassociate it first",
                    p.name, f.ip
                ));
            }
        }
        TenantObject::FloatingIp(_) => {}
    }
    Ok(Outcome::Writes(vec![Write::Delete(kind, id)]))
}

fn fips_through<'a>(
    state: &'a TenantState,
    r: &'a Router,
    subnet: &'a ObjectId,
) -> impl Iterator<Item = &'a FloatingIp> {
    let gw = r.gateway.as_ref().map(|g| g.external_network.clone());
    state.floating_ips().filter(move |f| {
        Some(&f.external_network) == gw.as_ref()
            && f.port.as_ref().and_then(|p| state.get(ObjectKind::Port, p)).is_some_and(|o| match o {
                TenantObject::Port(p) => matches!(state.get(ObjectKind::Subnet, subnet), Some(TenantObject::Subnet(s)) if s.network == p.network && p.fixed_ips.iter().any(|ip| s.cidr.contains(*ip))),
                _ => false,
            })
    })
}

/// A router change: published at once, or first handed to allocation when it has a gateway and
/// lacks its external address or a SNAT port on one of its subnets.
fn put_router(spec: RouterSpec) -> Result<Outcome, String> {
    if router_needs_allocation(&spec) {
        // Validate what can be validated now; the allocations complete it.
        Router::new(spec.clone()).map_err(|e| e.to_string())?;
        return Ok(Outcome::Router(spec));
    }
    let r = Router::new(spec).map_err(|e| e.to_string())?;
    Ok(Outcome::Writes(vec![Write::Put(TenantObject::Router(r))]))
}

/// Whether a router with a gateway still lacks its external address or a SNAT port.
pub fn router_needs_allocation(spec: &RouterSpec) -> bool {
    spec.gateway.as_ref().is_some_and(|g| {
        g.external_ip.is_none()
            || spec
                .interfaces
                .iter()
                .any(|s| !spec.snat_ports.contains_key(s))
    })
}

fn put_fip(spec: FloatingIpSpec) -> Result<Outcome, String> {
    let f = FloatingIp::new(spec).map_err(|e| e.to_string())?;
    Ok(Outcome::Writes(vec![Write::Put(TenantObject::FloatingIp(
        f,
    ))]))
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

fn parse_name(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| e.to_string())
}

/// Parses `500ms`, `5s`, `2m`, `1h` or a bare number of milliseconds, up to one hour.
fn parse_duration_ms(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number with ms, s or m (e.g. 500ms, 5s)".to_string())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => return Err(format!("unknown unit {other:?}; use ms, s, m or h")),
    };
    ms.filter(|ms| *ms <= u64::from(mesh_proto::MAX_PREEMPT_DELAY_MS))
        .map(|ms| ms as u32)
        .ok_or_else(|| "more than one hour".into())
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("invalid {what}: {s:?} is not an IPv4 address"))
}

fn unique_name(state: &TenantState, kind: ObjectKind, name: &Name) -> Result<(), String> {
    if state.objects(kind).any(|o| name_of(o) == name.as_str()) {
        return Err(format!("a {} named {name} already exists", kind.noun()));
    }
    Ok(())
}

fn name_of(o: &TenantObject) -> String {
    match o {
        TenantObject::Network(x) => x.name.to_string(),
        TenantObject::Subnet(x) => x.name.to_string(),
        TenantObject::ExternalNetwork(x) => x.name.to_string(),
        TenantObject::Router(x) => x.name.to_string(),
        TenantObject::Port(x) => x.name.to_string(),
        TenantObject::FloatingIp(x) => x.ip.to_string(),
    }
}

/// Finds an object by id, or by its unique name (a floating IP by its address).
pub fn resolve<'a>(
    state: &'a TenantState,
    kind: ObjectKind,
    reference: &str,
) -> Result<&'a TenantObject, String> {
    if let Ok(id) = ObjectId::new(reference) {
        if let Some(o) = state.get(kind, &id) {
            return Ok(o);
        }
    }
    let matches: Vec<&TenantObject> = state
        .objects(kind)
        .filter(|o| name_of(o) == reference)
        .collect();
    match matches.as_slice() {
        [] => Err(format!("no {} with name or id {reference:?}", kind.noun())),
        [one] => Ok(one),
        many => Err(format!(
            "{} {}s are named {reference:?}; use an id: {}",
            many.len(),
            kind.noun(),
            many.iter()
                .map(|o| o.id().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

macro_rules! typed_ref {
    ($fn:ident, $kind:ident, $variant:ident, $t:ty) => {
        fn $fn<'a>(state: &'a TenantState, r: &str) -> Result<&'a $t, String> {
            match resolve(state, ObjectKind::$kind, r)? {
                TenantObject::$variant(x) => Ok(x),
                _ => Err(format!("{r:?} is not a {}", ObjectKind::$kind.noun())),
            }
        }
    };
}
typed_ref!(network_ref, Network, Network, Network);
typed_ref!(subnet_ref, Subnet, Subnet, Subnet);
typed_ref!(
    extnet_ref,
    ExternalNetwork,
    ExternalNetwork,
    ExternalNetwork
);
typed_ref!(router_ref, Router, Router, Router);
typed_ref!(port_ref, Port, Port, Port);
typed_ref!(fip_ref, FloatingIp, FloatingIp, FloatingIp);

/// Builds the port once its address and MAC are settled.
pub fn finish_port(plan: &PortPlan, ip: Ipv4Addr, mac: MacAddr) -> Result<Port, String> {
    Port::new(mesh_proto::PortSpec {
        id: plan.id.clone(),
        name: plan.name.clone(),
        network: plan.network.clone(),
        mac,
        fixed_ips: vec![ip],
        host: plan.host.clone(),
        device: plan.device.clone(),
        allowed_address_pairs: Vec::new(),
    })
    .map_err(|e| e.to_string())
}

/// Builds the floating IP once its address is settled.
pub fn finish_fip(plan: &FipPlan, ip: Ipv4Addr) -> Result<FloatingIp, String> {
    FloatingIp::new(FloatingIpSpec {
        id: plan.id.clone(),
        external_network: plan.external_network.clone(),
        ip,
        port: None,
        fixed_ip: None,
    })
    .map_err(|e| e.to_string())
}
