//! `plan(topology, me) -> Plan`: every kernel object of the DVR recipe for one node. Pure and
//! deterministic: ordered collections in, ordered collections out, no I/O.

mod fastpath;
mod fip;
mod l2;
mod metadata;
pub(crate) mod names;
mod nft;
mod router;
mod snat;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use mesh_proto::{
    ExternalNetwork, FloatingIp, MacAddr, Network, NodeFacts, NodeId, NodeMode, ObjectId, Port,
    Router, Subnet,
};
use serde::{Deserialize, Serialize};

use crate::model::*;

/// The VM end of the veth pair dvrmesh creates for a port that names no device of its own: the
/// host's VM manager moves it into the VM.
pub fn vm_device(port: &ObjectId) -> String {
    names::tap(port).1
}

/// The namespace in which node serves metadata to its ports on `network` (the listener's home).
pub fn metadata_namespace(network: &ObjectId) -> String {
    names::metadata_ns(network)
}

pub use names::METADATA_IP;

/// The metadata namespace's interface on `network` (`md-`) and its host end, a port of the
/// network's bridge.
pub fn metadata_veth(network: &ObjectId) -> (String, String) {
    names::md(network)
}

/// The bridge-side device of a local port: the device it names, or the host end of the veth
/// pair dvrmesh creates for it.
pub fn port_device(port: &Port) -> String {
    match &port.device {
        Some(dev) => dev.to_string(),
        None => names::tap(&port.id).0,
    }
}

/// The router-interface ("gateway") MAC of every subnet of `t`, by subnet id, as the planner
/// assigns them.
pub fn gateway_macs(t: &Topology) -> BTreeMap<String, MacAddr> {
    names::gateway_macs(t.subnets.keys())
}

/// One node as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// What it published.
    pub facts: NodeFacts,
    /// Whether it is up.
    pub alive: bool,
}

/// Everything the planner reads: members and the tenant configuration, plus the SNAT holder of
/// each router (chosen by the election, or by [`default_snat_holders`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Tenant networks.
    pub networks: BTreeMap<ObjectId, Network>,
    /// Subnets.
    pub subnets: BTreeMap<ObjectId, Subnet>,
    /// External networks.
    pub external_networks: BTreeMap<ObjectId, ExternalNetwork>,
    /// Routers.
    pub routers: BTreeMap<ObjectId, Router>,
    /// Ports, including nodes' FIP gateway ports (whose network is an external network).
    pub ports: BTreeMap<ObjectId, Port>,
    /// Floating IPs.
    pub fips: BTreeMap<ObjectId, FloatingIp>,
    /// SNAT holder of each router with a gateway.
    pub snat_holders: BTreeMap<ObjectId, NodeId>,
}

/// The plan for one node: desired kernel state, and what could not be planned and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Desired kernel state.
    pub desired: Desired,
    /// Things left out, each with its reason (e.g. a FIP whose external network this node has no
    /// interface on).
    pub problems: Vec<String>,
}

/// Until the HA election exists: the SNAT holder of each router with a gateway is the alive,
/// not draining `dvr_snat` node that maps the router's external network, with the highest
/// priority (per-router override first), ties to the smaller node id.
pub fn default_snat_holders(t: &Topology) -> BTreeMap<ObjectId, NodeId> {
    let mut out = BTreeMap::new();
    for r in t.routers.values() {
        let Some(gw) = &r.gateway else { continue };
        let Some(ext) = t.external_networks.get(&gw.external_network) else {
            continue;
        };
        let best = t
            .nodes
            .iter()
            .filter(|(_, n)| n.alive && n.facts.mode() == NodeMode::DvrSnat && !n.facts.draining())
            .filter(|(_, n)| n.facts.external().contains_key(&ext.name))
            .map(|(id, n)| {
                let prio =
                    r.ha.priorities
                        .get(id)
                        .copied()
                        .unwrap_or(n.facts.snat_priority());
                (prio, std::cmp::Reverse(id))
            })
            .max();
        if let Some((_, std::cmp::Reverse(id))) = best {
            out.insert(r.id.clone(), id.clone());
        }
    }
    out
}

/// Where a node has something to program.
#[derive(Clone, Debug, Default)]
pub(crate) struct Presence {
    pub(crate) networks: BTreeSet<ObjectId>,
    pub(crate) qrouters: BTreeSet<ObjectId>,
    pub(crate) snat: BTreeSet<ObjectId>,
}

/// Lookups the planner needs many times, built once per plan so planning stays near-linear.
pub(crate) struct Index<'a> {
    pub(crate) ports_by_network: BTreeMap<&'a ObjectId, Vec<&'a Port>>,
    pub(crate) subnets_by_network: BTreeMap<&'a ObjectId, Vec<&'a Subnet>>,
    pub(crate) routers_by_subnet: BTreeMap<&'a ObjectId, Vec<&'a Router>>,
}

impl<'a> Index<'a> {
    fn new(t: &'a Topology) -> Self {
        let mut ports_by_network: BTreeMap<&ObjectId, Vec<&Port>> = BTreeMap::new();
        for p in t.ports.values() {
            ports_by_network.entry(&p.network).or_default().push(p);
        }
        let mut subnets_by_network: BTreeMap<&ObjectId, Vec<&Subnet>> = BTreeMap::new();
        for s in t.subnets.values() {
            subnets_by_network.entry(&s.network).or_default().push(s);
        }
        let mut routers_by_subnet: BTreeMap<&ObjectId, Vec<&Router>> = BTreeMap::new();
        for r in t.routers.values() {
            for sid in &r.interfaces {
                routers_by_subnet.entry(sid).or_default().push(r);
            }
        }
        Index {
            ports_by_network,
            subnets_by_network,
            routers_by_subnet,
        }
    }

    pub(crate) fn ports_on(&self, network: &ObjectId) -> &[&'a Port] {
        self.ports_by_network
            .get(network)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub(crate) fn subnets_on(&self, network: &ObjectId) -> &[&'a Subnet] {
        self.subnets_by_network
            .get(network)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub(crate) fn routers_of(&self, subnet: &ObjectId) -> &[&'a Router] {
        self.routers_by_subnet
            .get(subnet)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The subnet of `port` that holds its first fixed IP.
    pub(crate) fn subnet_of(&self, port: &Port) -> Option<&'a Subnet> {
        let ip = *port.fixed_ips.first()?;
        self.subnets_on(&port.network)
            .iter()
            .copied()
            .find(|s| s.cidr.contains(ip))
    }
}

/// Read-only context shared by the planner's parts.
pub(crate) struct Ctx<'a> {
    pub(crate) t: &'a Topology,
    pub(crate) ix: Index<'a>,
    pub(crate) me: &'a NodeId,
    pub(crate) facts: &'a NodeFacts,
    pub(crate) presence: BTreeMap<NodeId, Presence>,
    pub(crate) gw_macs: BTreeMap<String, MacAddr>,
    pub(crate) dvr_macs: BTreeMap<NodeId, MacAddr>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn mine(&self) -> &Presence {
        // `plan` inserts an entry for `me` before building.
        &self.presence[self.me]
    }

    /// The subnet of `port` that holds its first fixed IP.
    pub(crate) fn subnet_of(&self, port: &Port) -> Option<&'a Subnet> {
        self.ix.subnet_of(port)
    }

    pub(crate) fn gw_mac(&self, subnet: &ObjectId) -> Option<MacAddr> {
        self.gw_macs.get(subnet.as_str()).copied()
    }

    /// This node's DVR MAC as every node derives it (its published one unless that clashed).
    pub(crate) fn my_dvr_mac(&self) -> MacAddr {
        self.dvr_macs
            .get(self.me)
            .copied()
            .unwrap_or(self.facts.dvr_mac())
    }

    pub(crate) fn tunnel_ip(&self, node: &NodeId) -> Option<Ipv4Addr> {
        self.t.nodes.get(node).map(|n| n.facts.tunnel_ip())
    }
}

/// Where every node has something to program, in one walk over ports and SNAT holders.
fn presence_of_all(t: &Topology, ix: &Index<'_>) -> BTreeMap<NodeId, Presence> {
    let mut all: BTreeMap<NodeId, Presence> = t
        .nodes
        .keys()
        .map(|n| (n.clone(), Presence::default()))
        .collect();
    for port in t.ports.values() {
        if !t.networks.contains_key(&port.network) {
            continue; // a FIP gateway port on an external network
        }
        let Some(p) = all.get_mut(&port.host) else {
            continue;
        };
        p.networks.insert(port.network.clone());
        for s in ix.subnets_on(&port.network) {
            if port.fixed_ips.iter().any(|ip| s.cidr.contains(*ip)) {
                p.qrouters
                    .extend(ix.routers_of(&s.id).iter().map(|r| r.id.clone()));
            }
        }
    }
    for (rid, holder) in &t.snat_holders {
        if let (Some(p), Some(true)) = (
            all.get_mut(holder),
            t.routers.get(rid).map(|r| r.gateway.is_some()),
        ) {
            p.snat.insert(rid.clone());
        }
    }
    for p in all.values_mut() {
        let routers: Vec<ObjectId> = p.qrouters.iter().chain(&p.snat).cloned().collect();
        for rid in routers {
            let Some(r) = t.routers.get(&rid) else {
                continue;
            };
            for sid in &r.interfaces {
                if let Some(s) = t
                    .subnets
                    .get(sid)
                    .filter(|s| t.networks.contains_key(&s.network))
                {
                    p.networks.insert(s.network.clone());
                }
            }
        }
    }
    all
}

/// Plans the kernel state of node `me`.
pub fn plan(t: &Topology, me: &NodeId) -> Plan {
    let mut b = Builder::default();
    let unshared;
    let t = match without_shared_vnis(t, &mut b.problems) {
        Some(fixed) => {
            unshared = fixed;
            &unshared
        }
        None => t,
    };
    let Some(me_info) = t.nodes.get(me) else {
        b.problems.push(format!("node {me} is not in the view yet"));
        return b.finish();
    };
    let ix = Index::new(t);
    let presence = presence_of_all(t, &ix);
    let ctx = Ctx {
        t,
        ix,
        me,
        facts: &me_info.facts,
        presence,
        gw_macs: names::gateway_macs(t.subnets.keys()),
        dvr_macs: names::dvr_macs(t.nodes.iter().map(|(id, n)| (id, n.facts.dvr_mac()))),
    };
    l2::plan_networks(&ctx, &mut b);
    l2::plan_ports(&ctx, &mut b);
    metadata::plan_metadata(&ctx, &mut b);
    let fip_links = fip::plan_fips(&ctx, &mut b);
    for rid in &ctx.mine().qrouters {
        if let Some(r) = t.routers.get(rid) {
            router::plan_qrouter(&ctx, r, fip_links.get(rid), &mut b);
        }
    }
    for rid in &ctx.mine().snat {
        if let Some(r) = t.routers.get(rid) {
            snat::plan_snat(&ctx, r, &mut b);
        }
    }
    fastpath::plan_fast_paths(&ctx, &mut b);
    b.finish()
}

/// When networks share a VNI (concurrent creates), a copy of the topology in which only the
/// lowest network id keeps it and the others are left out with their subnets and ports, one
/// problem each: two tenants must never share one VXLAN segment. `None` when every VNI is unique.
fn without_shared_vnis(t: &Topology, problems: &mut Vec<String>) -> Option<Topology> {
    let mut by_vni: BTreeMap<u32, &ObjectId> = BTreeMap::new();
    let mut refused: BTreeSet<ObjectId> = BTreeSet::new();
    for (id, n) in &t.networks {
        let vni = n.vni.get();
        match by_vni.get(&vni) {
            None => {
                by_vni.insert(vni, id);
            }
            Some(first) => {
                problems.push(format!(
                    "network {id} has VNI {vni}, already network {first}'s: left out"
                ));
                refused.insert(id.clone());
            }
        }
    }
    if refused.is_empty() {
        return None;
    }
    let mut fixed = t.clone();
    fixed.networks.retain(|id, _| !refused.contains(id));
    fixed.subnets.retain(|_, s| !refused.contains(&s.network));
    fixed.ports.retain(|_, p| !refused.contains(&p.network));
    Some(fixed)
}

/// The sysctls every namespace dvrmesh makes carries: forwarding on, no reverse-path filter, no
/// ICMP redirects, no IPv6 (the `default` ones also cover interfaces made afterwards). The Linux
/// backend sets them on spare namespaces ahead of need.
pub const NAMESPACE_SYSCTLS: [(&str, &str); 7] = [
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
];

/// Accumulates desired objects.
#[derive(Default)]
pub(crate) struct Builder {
    pub(crate) d: Desired,
    pub(crate) problems: Vec<String>,
}

impl Builder {
    fn finish(self) -> Plan {
        Plan {
            desired: self.d,
            problems: self.problems,
        }
    }

    pub(crate) fn namespace(&mut self, name: &str, router: bool) {
        if !self.d.namespaces.insert(name.to_string()) {
            return;
        }
        let ns = Netns::Named(name.to_string());
        let mut set = |k: &str, v: &str| {
            self.d
                .sysctls
                .insert((ns.clone(), k.to_string()), v.to_string());
        };
        for (k, v) in NAMESPACE_SYSCTLS {
            set(k, v);
        }
        if router {
            set("net.ipv4.conf.all.arp_ignore", "1");
            set("net.ipv4.conf.all.arp_announce", "2");
        }
    }

    pub(crate) fn sysctl(&mut self, ns: &Netns, key: String, value: &str) {
        self.d.sysctls.insert((ns.clone(), key), value.to_string());
    }

    /// A link. Every device dvrmesh makes in the host namespace (bridges, VXLAN devices, the
    /// host ends of veths) has IPv6 disabled: they carry no addresses, and with IPv6 each would
    /// send DAD, MLD and router solicitations from a link-local address into its tenant network
    /// (over the tunnel to every node), and grow the host's IPv6 routing table, which the kernel
    /// walks on every device that comes up. Devices of dvrmesh's own namespaces need nothing:
    /// those namespaces disable IPv6 by default ([`NAMESPACE_SYSCTLS`]).
    pub(crate) fn link(&mut self, ns: &Netns, name: &str, mut spec: LinkSpec) {
        if *ns == Netns::Host && spec.kind != LinkKind::External {
            spec.ipv6 = Some(false);
        }
        let key = (ns.clone(), name.to_string());
        match self.d.links.get(&key) {
            None => {
                self.d.links.insert(key, spec);
            }
            Some(first) if *first == spec => {}
            Some(_) => self.problems.push(format!(
                "two objects need link {name} in {ns:?} with different settings (a shared VNI or \
                 id prefix); the first planned is kept"
            )),
        }
    }

    /// A veth pair: `a` in `ns_a` with `spec_a`, `b` in `ns_b` with `spec_b` (kinds filled in).
    pub(crate) fn veth(
        &mut self,
        (ns_a, a, spec_a): (&Netns, &str, VethEnd),
        (ns_b, b, spec_b): (&Netns, &str, VethEnd),
    ) {
        self.link(ns_a, a, spec_a.into_spec(b, ns_b));
        self.link(ns_b, b, spec_b.into_spec(a, ns_a));
    }

    pub(crate) fn addr(&mut self, ns: &Netns, dev: &str, ip: Ipv4Addr, prefix: u8) {
        self.d.addrs.insert(AddrSpec {
            ns: ns.clone(),
            dev: dev.to_string(),
            ip,
            prefix,
        });
    }

    pub(crate) fn route(
        &mut self,
        ns: &Netns,
        table: u32,
        dst: mesh_proto::Ipv4Cidr,
        via: Option<Ipv4Addr>,
        dev: &str,
    ) {
        self.d.routes.insert(RouteSpec {
            ns: ns.clone(),
            table,
            dst,
            via,
            dev: dev.to_string(),
        });
    }

    pub(crate) fn rule(&mut self, ns: &Netns, priority: u32, selector: RuleSelector, table: u32) {
        self.d.rules.insert(RuleSpec {
            ns: ns.clone(),
            priority,
            selector,
            table,
        });
    }

    pub(crate) fn neigh(&mut self, ns: &Netns, dev: &str, ip: Ipv4Addr, mac: MacAddr) {
        self.d.neighs.insert(NeighSpec {
            ns: ns.clone(),
            dev: dev.to_string(),
            ip,
            mac,
        });
    }

    pub(crate) fn fdb(&mut self, dev: &str, mac: [u8; 6], target: FdbTarget) {
        self.d.fdb.insert(FdbSpec {
            ns: Netns::Host,
            dev: dev.to_string(),
            mac,
            target,
        });
    }

    pub(crate) fn nft(&mut self, ns: &Netns, table: crate::nft::Table) {
        let key = NftKey {
            ns: ns.clone(),
            family: table.family,
            name: table.name.clone(),
        };
        self.d.nft.insert(key, NftContent::Table(table));
    }
}

/// The attributes of one end of a veth pair.
#[derive(Default)]
pub(crate) struct VethEnd {
    pub(crate) mtu: Option<u32>,
    pub(crate) mac: Option<MacAddr>,
    pub(crate) master: Option<String>,
    /// An isolated bridge port ([`LinkSpec::isolated`]).
    pub(crate) isolated: bool,
}

impl VethEnd {
    fn into_spec(self, peer: &str, peer_ns: &Netns) -> LinkSpec {
        LinkSpec {
            kind: LinkKind::Veth {
                peer: peer.to_string(),
                peer_ns: peer_ns.clone(),
            },
            mtu: self.mtu,
            mac: self.mac,
            master: self.master,
            learning: None,
            isolated: self.isolated.then_some(true),
            ipv6: None,
        }
    }
}

/// A /32 CIDR.
pub(crate) fn host_route(ip: Ipv4Addr) -> mesh_proto::Ipv4Cidr {
    // A /32 has no host bits.
    mesh_proto::Ipv4Cidr::new(ip, 32).unwrap_or_else(|_| unreachable!())
}

/// 0.0.0.0/0.
pub(crate) fn default_route() -> mesh_proto::Ipv4Cidr {
    mesh_proto::Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap_or_else(|_| unreachable!())
}
