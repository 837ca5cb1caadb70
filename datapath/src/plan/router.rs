//! The distributed router on a node with a local port: `qrouter-<id>` with one `qr-` per subnet
//! (the subnet's gateway IP and MAC, identical on every node), permanent neighbours for every
//! endpoint of its subnets, SNAT redirect to the `sg-` port, extra routes, and its nft table.

use mesh_proto::{Ipv4Cidr, Router};

use super::fip::FipLink;
use super::names::{self, FIP_MARK, MAIN_TABLE};
use super::nft::{self, QrouterNft};
use super::{default_route, Builder, Ctx, VethEnd};
use crate::model::*;

pub(super) fn plan_qrouter(ctx: &Ctx<'_>, r: &Router, fip: Option<&FipLink>, b: &mut Builder) {
    let name = names::qrouter_ns(&r.id);
    b.namespace(&name, true);
    let ns = Netns::Named(name);
    let mut cidrs: Vec<Ipv4Cidr> = Vec::new();
    for sid in &r.interfaces {
        let Some(s) = ctx.t.subnets.get(sid) else {
            continue;
        };
        let Some(net) = ctx.t.networks.get(&s.network) else {
            continue;
        };
        let Some(gw_mac) = ctx.gw_mac(sid) else {
            continue;
        };
        cidrs.push(s.cidr);
        let mtu = Some(u32::from(net.mtu.get()));
        let (qr, tqr) = names::qr(sid);
        b.veth(
            (
                &ns,
                &qr,
                VethEnd {
                    mtu,
                    mac: Some(gw_mac),
                    master: None,
                    isolated: false,
                },
            ),
            (
                &Netns::Host,
                &tqr,
                VethEnd {
                    mtu,
                    mac: None,
                    master: Some(names::bridge(net.vni.get())),
                    isolated: false,
                },
            ),
        );
        b.fdb(&tqr, gw_mac.octets(), FdbTarget::Bridge);
        b.addr(&ns, &qr, s.gateway, s.cidr.prefix());
        // Permanent neighbours: no ARP for a router subnet ever crosses the tunnel.
        for p in ctx.ix.ports_on(&s.network) {
            for ip in p.fixed_ips.iter().filter(|ip| s.cidr.contains(**ip)) {
                b.neigh(&ns, &qr, *ip, p.mac);
            }
            for pair in p
                .allowed_address_pairs
                .iter()
                .filter(|a| a.ip.prefix() == 32 && s.cidr.contains(a.ip.network()))
            {
                b.neigh(&ns, &qr, pair.ip.network(), pair.mac.unwrap_or(p.mac));
            }
        }
        if let Some(sp) = r.snat_ports.get(sid) {
            b.neigh(&ns, &qr, sp.ip, sp.mac);
            if r.gateway.is_some() {
                // SNAT redirect: after main (east-west wins there), to the sg- port.
                let table = names::snat_table(s.gateway);
                b.rule(&ns, table, RuleSelector::From(s.cidr), table);
                b.route(&ns, table, default_route(), Some(sp.ip), &qr);
            }
        }
    }
    for route in &r.routes {
        let via = r
            .interfaces
            .iter()
            .filter_map(|sid| ctx.t.subnets.get(sid))
            .find(|s| s.cidr.contains(route.nexthop));
        match via {
            Some(s) => b.route(
                &ns,
                MAIN_TABLE,
                route.destination,
                Some(route.nexthop),
                &names::qr(&s.id).0,
            ),
            None => b.problems.push(format!(
                "router {}: next hop {} of {} is on none of its subnets",
                r.name, route.nexthop, route.destination
            )),
        }
    }
    let q = QrouterNft {
        subnets: cidrs,
        rfp: fip.map(|f| f.rfp.as_str()),
        fips: fip.map(|f| f.fips.clone()).unwrap_or_default(),
        mark: FIP_MARK,
    };
    b.nft(&ns, nft::qrouter_table(names::ROUTER_TABLE, &q));
}
