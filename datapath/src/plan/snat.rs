//! The SNAT holder's part of a router: `snat-<id>` with one `sg-` port per subnet and `qg-` on the
//! external network with the router's external address, source NAT of the router's subnets, and
//! the FIPs of ports on `dvr_no_external` nodes (served here, centrally).

use std::net::Ipv4Addr;

use mesh_proto::{Ipv4Cidr, NodeMode, Router};

use super::fip::external_uplink;
use super::names::{self, MAIN_TABLE};
use super::{default_route, nft, Builder, Ctx, VethEnd};
use crate::model::*;

pub(super) fn plan_snat(ctx: &Ctx<'_>, r: &Router, b: &mut Builder) {
    let Some(gw) = &r.gateway else { return };
    let Some(ext) = ctx.t.external_networks.get(&gw.external_network) else {
        return;
    };
    let Some(external_ip) = gw.external_ip else {
        b.problems
            .push(format!("router {} waits for its external address", r.name));
        return;
    };
    let Some(bridge) = external_uplink(ctx, ext, b) else {
        return;
    };
    let name = names::snat_ns(&r.id);
    b.namespace(&name, true);
    let ns = Netns::Named(name);
    let mut cidrs: Vec<Ipv4Cidr> = Vec::new();
    for (sid, sp) in &r.snat_ports {
        let Some(s) = ctx.t.subnets.get(sid) else {
            continue;
        };
        let Some(net) = ctx.t.networks.get(&s.network) else {
            continue;
        };
        cidrs.push(s.cidr);
        let mtu = Some(u32::from(net.mtu.get()));
        let (sg, tsg) = names::sg(sid);
        b.veth(
            (
                &ns,
                &sg,
                VethEnd {
                    mtu,
                    mac: Some(sp.mac),
                    master: None,
                    isolated: false,
                },
            ),
            (
                &Netns::Host,
                &tsg,
                VethEnd {
                    mtu,
                    mac: None,
                    master: Some(names::bridge(net.vni.get())),
                    isolated: false,
                },
            ),
        );
        b.fdb(&tsg, sp.mac.octets(), FdbTarget::Bridge);
        b.addr(&ns, &sg, sp.ip, s.cidr.prefix());
        for p in ctx.ix.ports_on(&s.network) {
            for ip in p.fixed_ips.iter().filter(|ip| s.cidr.contains(**ip)) {
                b.neigh(&ns, &sg, *ip, p.mac);
            }
        }
    }
    let (qg, tqg) = names::qg(&r.id);
    let qg_mac = names::qg_mac(&r.id);
    b.veth(
        (
            &ns,
            &qg,
            VethEnd {
                mac: Some(qg_mac),
                ..VethEnd::default()
            },
        ),
        (
            &Netns::Host,
            &tqg,
            VethEnd {
                master: Some(bridge),
                ..VethEnd::default()
            },
        ),
    );
    b.fdb(&tqg, qg_mac.octets(), FdbTarget::Bridge);
    b.addr(&ns, &qg, external_ip, ext.cidr.prefix());
    b.route(&ns, MAIN_TABLE, default_route(), Some(ext.gateway), &qg);
    let central = central_fips(ctx, r);
    for (fip, _) in &central {
        b.addr(&ns, &qg, *fip, 32);
    }
    let table = nft::snat_table(
        names::ROUTER_TABLE,
        &nft::SnatNft {
            qg: &qg,
            subnets: &cidrs,
            external_ip,
            snat: gw.enable_snat,
            fips: &central,
        },
    );
    b.nft(&ns, table);
}

/// FIPs of the router's subnets whose port lives on a `dvr_no_external` node: (FIP, fixed IP).
fn central_fips(ctx: &Ctx<'_>, r: &Router) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut out: Vec<(Ipv4Addr, Ipv4Addr)> = ctx
        .t
        .fips
        .values()
        .filter_map(|f| {
            let port = ctx.t.ports.get(f.port.as_ref()?)?;
            let host = ctx.t.nodes.get(&port.host)?;
            let subnet = ctx.subnet_of(port)?;
            let on_router = r.interfaces.contains(&subnet.id);
            let same_ext = r
                .gateway
                .as_ref()
                .is_some_and(|g| g.external_network == f.external_network);
            (host.facts.mode() == NodeMode::DvrNoExternal && on_router && same_ext)
                .then_some((f.ip, f.fixed_ip?))
        })
        .collect();
    out.sort();
    out
}
