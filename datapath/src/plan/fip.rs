//! Floating IPs served on this node: the `fip-<extnet>` namespace with `fg-` on the external
//! network and proxy ARP, and per router the `rfp-`/`fpr-` link-local pair with its routes and
//! rules. Per-FIP cost: one /32 route in the fip namespace and one element in each of three nft
//! sets/maps in the qrouter; the per-packet rule count does not grow with FIPs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use mesh_proto::{ExternalNetwork, NodeMode, ObjectId};

use super::names::{
    self, FIP_MARK, FIP_NS_EXT_TABLE, FIP_TABLE, MAIN_TABLE, PRIO_FPR, PRIO_FWMARK, PRIO_IIF_LO,
};
use super::{default_route, host_route, Builder, Ctx, VethEnd};
use crate::model::*;

/// A router's link to the FIP namespace on this node and the FIPs it serves.
pub(crate) struct FipLink {
    pub(crate) rfp: String,
    /// (FIP, fixed IP).
    pub(crate) fips: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// Plans every FIP namespace of this node and both ends of each router's link to it. Returns the
/// link of each router that serves FIPs here, for the qrouter's nft table.
pub(super) fn plan_fips(ctx: &Ctx<'_>, b: &mut Builder) -> BTreeMap<ObjectId, FipLink> {
    let mut out = BTreeMap::new();
    if ctx.facts.mode() == NodeMode::DvrNoExternal {
        return out; // served centrally by the SNAT holder
    }
    // (router, external network) → FIPs served here.
    let mut served: BTreeMap<(ObjectId, ObjectId), Vec<(Ipv4Addr, Ipv4Addr)>> = BTreeMap::new();
    for f in ctx.t.fips.values() {
        let (Some(pid), Some(fixed)) = (&f.port, f.fixed_ip) else {
            continue;
        };
        let Some(port) = ctx.t.ports.get(pid).filter(|p| &p.host == ctx.me) else {
            continue;
        };
        let Some(subnet) = ctx.subnet_of(port) else {
            continue;
        };
        let router = ctx.ix.routers_of(&subnet.id).iter().find(|r| {
            r.gateway
                .as_ref()
                .is_some_and(|g| g.external_network == f.external_network)
                && ctx.mine().qrouters.contains(&r.id)
        });
        if let Some(r) = router {
            served
                .entry((r.id.clone(), f.external_network.clone()))
                .or_default()
                .push((f.ip, fixed));
        }
    }
    let routers: Vec<&ObjectId> = served.keys().map(|(r, _)| r).collect();
    let wanted = routers.len();
    let pairs = names::link_local_pairs(routers);
    if pairs.len() < wanted {
        b.problems.push(format!(
            "{wanted} routers serve floating IPs on this node; only {} fit 169.254.64.0/18, the \
             other {} get no floating-IP path",
            names::LINK_LOCAL_SLOTS,
            wanted - pairs.len()
        ));
    }
    let mut ready_ext: BTreeMap<ObjectId, Option<String>> = BTreeMap::new();
    for ((rid, eid), mut fips) in served {
        let Some(ext) = ctx.t.external_networks.get(&eid) else {
            continue;
        };
        let fip_ns = ready_ext
            .entry(eid.clone())
            .or_insert_with(|| plan_fip_namespace(ctx, ext, b))
            .clone();
        let Some(fip_ns_name) = fip_ns else { continue };
        let Some(&(rfp_ip, fpr_ip)) = pairs.get(&rid) else {
            continue;
        };
        fips.sort();
        let fns = Netns::Named(fip_ns_name);
        let qns = Netns::Named(names::qrouter_ns(&rid));
        let (rfp, fpr) = names::rfp(&rid);
        b.veth(
            (&qns, &rfp, VethEnd::default()),
            (&fns, &fpr, VethEnd::default()),
        );
        b.addr(&qns, &rfp, rfp_ip, 31);
        b.addr(&fns, &fpr, fpr_ip, 31);
        // qrouter: marked traffic and router-originated packets (PMTU errors) go to the fip ns.
        b.route(&qns, FIP_TABLE, default_route(), Some(fpr_ip), &rfp);
        b.rule(&qns, PRIO_IIF_LO, RuleSelector::Iif("lo".into()), FIP_TABLE);
        b.rule(
            &qns,
            PRIO_FWMARK,
            RuleSelector::Fwmark {
                mark: FIP_MARK,
                mask: 0xff,
            },
            FIP_TABLE,
        );
        // fip ns: the router's traffic leaves through the external gateway; each FIP is a /32
        // towards the router, which fg- answers ARP for (proxy ARP).
        b.rule(
            &fns,
            PRIO_FPR,
            RuleSelector::Iif(fpr.clone()),
            FIP_NS_EXT_TABLE,
        );
        for (fip, _) in &fips {
            b.route(&fns, MAIN_TABLE, host_route(*fip), Some(rfp_ip), &fpr);
        }
        out.insert(rid, FipLink { rfp, fips });
    }
    out
}

/// The fip namespace of one external network, if this node can serve it: it needs an interface on
/// that network and its FIP gateway port. Returns the namespace name.
fn plan_fip_namespace(ctx: &Ctx<'_>, ext: &ExternalNetwork, b: &mut Builder) -> Option<String> {
    let Some(gw_port) = ctx
        .t
        .ports
        .values()
        .find(|p| p.network == ext.id && &p.host == ctx.me)
    else {
        b.problems.push(format!(
            "FIPs on {} wait for this node's FIP gateway port",
            ext.name
        ));
        return None;
    };
    let bridge = external_uplink(ctx, ext, b)?;
    let name = names::fip_ns(&ext.id);
    b.namespace(&name, false);
    let ns = Netns::Named(name.clone());
    let (fg, tfg) = names::fg(&ext.id);
    b.veth(
        (
            &ns,
            &fg,
            VethEnd {
                mac: Some(gw_port.mac),
                ..VethEnd::default()
            },
        ),
        (
            &Netns::Host,
            &tfg,
            VethEnd {
                master: Some(bridge),
                ..VethEnd::default()
            },
        ),
    );
    b.fdb(&tfg, gw_port.mac.octets(), FdbTarget::Bridge);
    let ip = *gw_port.fixed_ips.first()?;
    b.addr(&ns, &fg, ip, ext.cidr.prefix());
    b.sysctl(&ns, format!("net.ipv4.conf.{fg}.proxy_arp"), "1");
    b.sysctl(&ns, format!("net.ipv4.neigh.{fg}.proxy_delay"), "0");
    b.route(&ns, FIP_NS_EXT_TABLE, ext.cidr, None, &fg);
    b.route(
        &ns,
        FIP_NS_EXT_TABLE,
        default_route(),
        Some(ext.gateway),
        &fg,
    );
    Some(name)
}

/// The host's bridge on an external network with the node's interface on it. Returns the bridge,
/// or records a problem when the node maps no interface to that network.
pub(super) fn external_uplink(
    ctx: &Ctx<'_>,
    ext: &ExternalNetwork,
    b: &mut Builder,
) -> Option<String> {
    let Some(mapping) = ctx.facts.external().get(&ext.name) else {
        b.problems.push(format!(
            "node {} has no interface on external network {}",
            ctx.me, ext.name
        ));
        return None;
    };
    let bridge = names::ext_bridge(&ext.id);
    b.link(&Netns::Host, &bridge, LinkSpec::of(LinkKind::Bridge));
    b.link(
        &Netns::Host,
        mapping.interface.as_str(),
        LinkSpec {
            master: Some(bridge.clone()),
            ..LinkSpec::of(LinkKind::External)
        },
    );
    Some(bridge)
}
