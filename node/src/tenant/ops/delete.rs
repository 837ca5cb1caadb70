//! Deleting objects: refused while something still depends on the object, so a deletion never
//! leaves a dangling reference.

use mesh_proto::{NodeId, ObjectKind, TenantObject};

use super::lookup::resolve;
use super::{Outcome, TenantState, Write};

pub(super) fn delete(
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
