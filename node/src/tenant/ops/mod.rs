//! Operator requests, validated against the merged state and turned into writes.
//!
//! Every check runs before anything is written, so a refused request changes nothing. Requests
//! carry strings; parsing them here keeps every error message in one place.
//!
//! - [`create`]: networks, subnets and external networks;
//! - [`router`]: routers, their interfaces, gateway, routes and HA settings;
//! - [`port_fip`]: ports and floating IPs;
//! - [`delete`]: deletions, refused while something still depends on the object;
//! - [`lookup`]: finding objects by name or id, and parsing the request's strings.

mod create;
mod delete;
mod lookup;
mod port_fip;
mod router;

use std::net::Ipv4Addr;

use mesh_proto::{
    FloatingIp, FloatingIpSpec, InterfaceName, MacAddr, Name, NodeId, ObjectId, ObjectKind, Port,
    PortMetadata, RouterSpec, TenantObject,
};
use serde::{Deserialize, Serialize};

use super::TenantState;

pub use lookup::resolve;
pub use router::router_needs_allocation;

fn dhcp_default() -> bool {
    true
}

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
        /// Whether nodes answer DHCP for its ports (default on).
        #[serde(default = "dhcp_default")]
        dhcp: bool,
        /// DNS servers handed out by DHCP.
        #[serde(default)]
        dns_servers: Vec<String>,
        /// DNS domain handed out by DHCP.
        #[serde(default)]
        domain: Option<String>,
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
        /// Host name, user data and keys for the metadata service.
        #[serde(default)]
        metadata: PortMetadata,
    },
    /// Change a port's metadata (through its host's agent): each field given replaces the
    /// port's, the others stay.
    PortSet {
        port: String,
        #[serde(default)]
        hostname: Option<String>,
        #[serde(default)]
        user_data: Option<String>,
        #[serde(default)]
        ssh_keys: Option<Vec<String>>,
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

/// Whether a request writes tenant configuration (anything but ports and reads): what only
/// operators may do when the cluster says so.
pub fn writes_configuration(req: &ConfigRequest) -> bool {
    !matches!(
        req,
        ConfigRequest::PortCreate { .. }
            | ConfigRequest::PortSet { .. }
            | ConfigRequest::Delete {
                kind: ObjectKind::Port,
                ..
            }
            | ConfigRequest::List { .. }
            | ConfigRequest::Show { .. }
            | ConfigRequest::View
    )
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
    /// An object whose VNI or name must be claimed (unique cluster-wide) before it is published.
    Unique(UniquePlan),
    /// A read: nothing to write.
    Read(serde_json::Value),
}

/// One change to publish.
// A request makes a handful of writes, short-lived: boxing the object (a port with its
// metadata is the largest) would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace.
    Put(TenantObject),
    /// Delete.
    Delete(ObjectKind, ObjectId),
}

/// A validated object waiting for its unique values to be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniquePlan {
    /// The object, ready to publish once every claim won.
    pub object: TenantObject,
    /// What it holds that no other live object may: its VNI, its name.
    pub values: Vec<mesh_proto::UniqueValue>,
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
    /// Its metadata.
    pub metadata: PortMetadata,
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

/// What validating a request reads besides the request: the merged state, the node handling it
/// (a port's host), where new ids come from, and the wall clock (to judge claims).
pub(crate) struct Ctx<'a> {
    pub(crate) state: &'a TenantState,
    pub(crate) me: &'a NodeId,
    pub(crate) new_id: &'a mut dyn FnMut(ObjectKind) -> ObjectId,
    pub(crate) now_ms: u64,
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
    let mut cx = Ctx {
        state,
        me,
        new_id,
        now_ms,
    };
    let cx = &mut cx;
    match req {
        R::NetworkCreate { .. }
        | R::SubnetCreate { .. }
        | R::ExternalNetworkCreate { .. }
        | R::RouterCreate { .. } => plan_create(cx, req),
        R::RouterAddInterface { .. }
        | R::RouterRemoveInterface { .. }
        | R::RouterSetGateway { .. }
        | R::RouterClearGateway { .. }
        | R::RouterSetHa { .. }
        | R::RouterAddRoute { .. }
        | R::RouterRemoveRoute { .. } => plan_router(state, req),
        R::PortCreate { .. }
        | R::PortSet { .. }
        | R::FipCreate { .. }
        | R::FipAssociate { .. }
        | R::FipDisassociate { .. } => plan_port_or_fip(cx, req),
        R::Delete { kind, reference } => delete::delete(state, me, *kind, reference),
        R::List { kind, host } => list(state, *kind, host.as_deref()),
        R::Show { kind, reference } => Ok(Outcome::Read(object_json(resolve(
            state, *kind, reference,
        )?))),
        R::View => Ok(Outcome::Read(
            serde_json::to_value(state.summary()).map_err(|e| e.to_string())?,
        )),
    }
}

/// A request that creates a named object (network, subnet, external network, router).
fn plan_create(cx: &mut Ctx<'_>, req: &ConfigRequest) -> Result<Outcome, String> {
    use ConfigRequest as R;
    match req {
        R::NetworkCreate { name, vni, mtu } => create::network(cx, name, *vni, *mtu),
        R::SubnetCreate {
            name,
            network,
            cidr,
            gateway,
            pool,
            dhcp,
            dns_servers,
            domain,
        } => create::subnet(
            cx,
            &create::SubnetArgs {
                name,
                network,
                cidr,
                gateway: gateway.as_deref(),
                pool: pool.as_deref(),
                dhcp: *dhcp,
                dns_servers,
                domain: domain.as_deref(),
            },
        ),
        R::ExternalNetworkCreate {
            name,
            cidr,
            gateway,
            pool,
        } => create::external_network(cx, name, cidr, gateway, pool.as_deref()),
        R::RouterCreate { name } => router::create(cx, name),
        other => Err(format!("internal: not a create request: {other:?}")),
    }
}

/// A request that changes a router.
fn plan_router(state: &TenantState, req: &ConfigRequest) -> Result<Outcome, String> {
    use ConfigRequest as R;
    match req {
        R::RouterAddInterface { router, subnet } => router::add_interface(state, router, subnet),
        R::RouterRemoveInterface { router, subnet } => {
            router::remove_interface(state, router, subnet)
        }
        R::RouterSetGateway {
            router,
            external_network,
            snat,
        } => router::set_gateway(state, router, external_network, *snat),
        R::RouterClearGateway { router } => router::clear_gateway(state, router),
        R::RouterSetHa {
            router,
            priorities,
            preempt,
            preempt_delay,
        } => router::set_ha(
            state,
            router,
            priorities,
            *preempt,
            preempt_delay.as_deref(),
        ),
        R::RouterAddRoute {
            router,
            destination,
            nexthop,
        } => router::change_route(state, router, destination, nexthop, router::Change::Add),
        R::RouterRemoveRoute {
            router,
            destination,
            nexthop,
        } => router::change_route(state, router, destination, nexthop, router::Change::Remove),
        other => Err(format!("internal: not a router request: {other:?}")),
    }
}

/// A request about a port or a floating IP.
fn plan_port_or_fip(cx: &mut Ctx<'_>, req: &ConfigRequest) -> Result<Outcome, String> {
    use ConfigRequest as R;
    let (state, me) = (cx.state, cx.me);
    match req {
        R::PortCreate {
            name,
            network,
            ip,
            mac,
            device,
            metadata,
        } => port_fip::create_port(
            cx,
            name,
            network,
            port_fip::Wanted {
                ip: ip.as_deref(),
                mac: mac.as_deref(),
                device: device.as_deref(),
                metadata,
            },
        ),
        R::PortSet {
            port,
            hostname,
            user_data,
            ssh_keys,
        } => port_fip::set_port(
            state,
            me,
            port,
            PortMetadata {
                hostname: hostname.clone(),
                user_data: user_data.clone(),
                ssh_keys: ssh_keys.clone().unwrap_or_default(),
            },
            ssh_keys.is_some(),
        ),
        R::FipCreate {
            external_network,
            ip,
        } => port_fip::create_fip(cx, external_network, ip.as_deref()),
        R::FipAssociate { fip, port } => port_fip::associate(state, fip, port),
        R::FipDisassociate { fip } => port_fip::disassociate(state, fip),
        other => Err(format!("internal: not a port or FIP request: {other:?}")),
    }
}

/// The objects of a kind (ports optionally only those of one host), as JSON.
fn list(state: &TenantState, kind: ObjectKind, host: Option<&str>) -> Result<Outcome, String> {
    let host = host
        .map(|h| NodeId::new(h).map_err(|e| e.to_string()))
        .transpose()?;
    let items: Vec<serde_json::Value> = state
        .objects(kind)
        .filter(|o| match (o, &host) {
            (TenantObject::Port(p), Some(h)) => &p.host == h,
            _ => true,
        })
        .map(object_json)
        .collect();
    Ok(Outcome::Read(serde_json::Value::Array(items)))
}

/// One write that puts `object`.
fn put(object: TenantObject) -> Result<Outcome, String> {
    Ok(Outcome::Writes(vec![Write::Put(object)]))
}

/// A new object whose name (and VNI, for a network) must be unique, planned for claiming before
/// it is published: two concurrent creates on two nodes both pass the view's checks, and the
/// claims settle which wins (a value another node is claiming right now is refused when picked).
fn put_unique(object: TenantObject) -> Result<Outcome, String> {
    use mesh_proto::UniqueValue;
    let mut values = Vec::new();
    if let TenantObject::Network(n) = &object {
        values.push(UniqueValue::Vni(n.vni));
    }
    if let Some(name) = object.name() {
        values.push(UniqueValue::Name(object.kind(), name.clone()));
    }
    Ok(Outcome::Unique(UniquePlan { object, values }))
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
        metadata: plan.metadata.clone(),
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
