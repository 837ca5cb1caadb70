//! Routers: creation, interfaces, the gateway, static routes and SNAT HA settings.

use std::collections::BTreeSet;

use mesh_proto::{
    ExtraRoute, FloatingIp, HaSettings, NodeId, ObjectId, ObjectKind, Priority, Router,
    RouterGateway, RouterSpec, TenantObject,
};

use super::lookup::{
    extnet_ref, parse_cidr, parse_duration_ms, parse_ip, parse_name, router_ref, subnet_ref,
    unique_name,
};
use super::{put, put_unique, Ctx, Outcome, TenantState};

/// Whether a route is added or removed.
pub(super) enum Change {
    Add,
    Remove,
}

/// A router with no interfaces, no gateway and default HA settings.
pub(super) fn create(cx: &mut Ctx<'_>, name: &str) -> Result<Outcome, String> {
    let name = parse_name(name)?;
    unique_name(cx.state, ObjectKind::Router, &name)?;
    let r = Router::new(RouterSpec {
        id: (cx.new_id)(ObjectKind::Router),
        name,
        interfaces: BTreeSet::new(),
        gateway: None,
        routes: BTreeSet::new(),
        ha: HaSettings::default(),
        snat_ports: Default::default(),
    })
    .map_err(|e| e.to_string())?;
    put_unique(TenantObject::Router(r))
}

/// Attaches a subnet that is on no other router and overlaps none of this router's subnets.
pub(super) fn add_interface(
    state: &TenantState,
    router: &str,
    subnet: &str,
) -> Result<Outcome, String> {
    let (r, s) = (router_ref(state, router)?, subnet_ref(state, subnet)?);
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

/// Detaches a subnet no floating IP depends on.
pub(super) fn remove_interface(
    state: &TenantState,
    router: &str,
    subnet: &str,
) -> Result<Outcome, String> {
    let (r, s) = (router_ref(state, router)?, subnet_ref(state, subnet)?);
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

/// Connects the router to an external network (keeping its address when the network is the same).
pub(super) fn set_gateway(
    state: &TenantState,
    router: &str,
    external_network: &str,
    snat: bool,
) -> Result<Outcome, String> {
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
        enable_snat: snat,
        external_ip: kept_ip,
    });
    put_router(spec)
}

/// Disconnects the router from its external network, when no floating IP depends on it.
pub(super) fn clear_gateway(state: &TenantState, router: &str) -> Result<Outcome, String> {
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

/// Changes SNAT HA settings: `NODE=P` or `NODE=default` priority overrides, preemption and its
/// delay.
pub(super) fn set_ha(
    state: &TenantState,
    router: &str,
    priorities: &[String],
    preempt: Option<bool>,
    preempt_delay: Option<&str>,
) -> Result<Outcome, String> {
    let r = router_ref(state, router)?;
    if priorities.is_empty() && preempt.is_none() && preempt_delay.is_none() {
        return Err(
            "nothing to change: give --priority NODE=P, --preempt/--no-preempt or --preempt-delay"
                .into(),
        );
    }
    let mut spec = r.clone().into_spec();
    for p in priorities {
        match parse_priority(p)? {
            (node, Some(prio)) => spec.ha.priorities.insert(node, prio),
            (node, None) => spec.ha.priorities.remove(&node),
        };
    }
    if let Some(p) = preempt {
        spec.ha.preempt = p;
    }
    if let Some(d) = preempt_delay {
        spec.ha.preempt_delay_ms =
            parse_duration_ms(d).map_err(|e| format!("preempt delay {d:?}: {e}"))?;
    }
    put_router(spec)
}

/// `NODE=P` (1..254) or `NODE=default` (no override: `None`).
fn parse_priority(p: &str) -> Result<(NodeId, Option<Priority>), String> {
    let (node, value) = p
        .split_once('=')
        .ok_or_else(|| format!("priority {p:?}: expected NODE=PRIORITY"))?;
    let node = NodeId::new(node.trim()).map_err(|e| format!("priority {p:?}: {e}"))?;
    if value.trim() == "default" {
        return Ok((node, None));
    }
    let prio = value
        .trim()
        .parse::<u8>()
        .ok()
        .and_then(|v| Priority::new(v).ok())
        .ok_or_else(|| format!("priority {p:?}: {value:?} is not a priority from 1 to 254"))?;
    Ok((node, Some(prio)))
}

/// Adds a static route (its next hop on one of the router's subnets) or removes one.
pub(super) fn change_route(
    state: &TenantState,
    router: &str,
    destination: &str,
    nexthop: &str,
    change: Change,
) -> Result<Outcome, String> {
    let r = router_ref(state, router)?;
    let destination = parse_cidr(destination)?;
    let nexthop = parse_ip("nexthop", nexthop)?;
    let route = ExtraRoute {
        destination,
        nexthop,
    };
    let mut spec = r.clone().into_spec();
    match change {
        Change::Add => {
            let on_link = r.interfaces.iter().any(|sid| {
                matches!(state.get(ObjectKind::Subnet, sid),
                    Some(TenantObject::Subnet(s)) if s.cidr.contains(nexthop))
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
        }
        Change::Remove => {
            if !spec.routes.remove(&route) {
                return Err(format!(
                    "router {} has no route {destination} via {nexthop}",
                    r.name
                ));
            }
        }
    }
    put_router(spec)
}

/// The floating IPs that reach ports on `subnet` through the router's gateway.
pub(super) fn fips_through<'a>(
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
    put(TenantObject::Router(r))
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
