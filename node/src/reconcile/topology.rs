//! The planner's input from the converged view: pure.

use std::collections::BTreeSet;

use datapath::{default_snat_holders, NodeInfo, Topology};
use mesh_proto::{NodeId, ObjectId};

use crate::ha::Holders;
use crate::mesh::view::{ClusterView, MemberState};

/// The planner's input, from the converged view and the SNAT holders the election resolved
/// (`None`: no election runs, as in tests; the best live candidate is taken). Pure.
pub fn topology_from_view(view: &ClusterView, holders: Option<&Holders>) -> Topology {
    let t = &view.tenant;
    let mut topo = Topology {
        nodes: view
            .members
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    NodeInfo {
                        facts: m.facts.clone(),
                        alive: m.state == MemberState::Alive,
                    },
                )
            })
            .collect(),
        networks: t.networks().map(|x| (x.id.clone(), x.clone())).collect(),
        subnets: t.subnets().map(|x| (x.id.clone(), x.clone())).collect(),
        external_networks: t
            .external_networks()
            .map(|x| (x.id.clone(), x.clone()))
            .collect(),
        routers: t.routers().map(|x| (x.id.clone(), x.clone())).collect(),
        ports: t.ports().map(|x| (x.id.clone(), x.clone())).collect(),
        fips: t
            .floating_ips()
            .map(|x| (x.id.clone(), x.clone()))
            .collect(),
        snat_holders: Default::default(),
    };
    topo.snat_holders = match holders {
        Some(h) => h
            .iter()
            .filter(|(r, _)| topo.routers.get(*r).is_some_and(|r| r.gateway.is_some()))
            .map(|(r, n)| (r.clone(), n.clone()))
            .collect(),
        None => default_snat_holders(&topo),
    };
    topo
}

/// External networks on which `me` serves a FIP but has no FIP gateway port yet.
pub fn missing_fip_gateways(t: &Topology, me: &NodeId) -> BTreeSet<ObjectId> {
    let mut out = BTreeSet::new();
    for f in t.fips.values() {
        let Some(port) = f.port.as_ref().and_then(|p| t.ports.get(p)) else {
            continue;
        };
        if &port.host != me {
            continue;
        }
        let has_gateway = t
            .ports
            .values()
            .any(|p| p.network == f.external_network && &p.host == me);
        if !has_gateway {
            out.insert(f.external_network.clone());
        }
    }
    out
}
