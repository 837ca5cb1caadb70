//! Layer 2 on the host: a bridge and a VXLAN device per network with local presence, static FDB
//! (l2population) for every remote endpoint, head-end replication to nodes on the same network,
//! the DVR MAC rewrite and the DHCP and metadata barriers on the VXLAN device, and local ports on
//! the bridge.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use mesh_proto::{MacAddr, Network, NodeId, Subnet};

use super::names;
use super::nft;
use super::{Builder, Ctx};
use crate::model::*;

/// VXLAN UDP port.
const VXLAN_PORT: u16 = 4789;

pub(super) fn plan_networks(ctx: &Ctx<'_>, b: &mut Builder) {
    let my_ip = ctx.facts.tunnel_ip();
    for nid in &ctx.mine().networks {
        let Some(net) = ctx.t.networks.get(nid) else {
            continue;
        };
        let vni = net.vni.get();
        let (br, vx) = (names::bridge(vni), names::vxlan(vni));
        let mtu = Some(u32::from(net.mtu.get()));
        b.link(
            &Netns::Host,
            &br,
            LinkSpec {
                kind: LinkKind::Bridge,
                mtu,
                mac: None,
                master: None,
                learning: None,
                isolated: None,
                ipv6: None,
            },
        );
        b.link(
            &Netns::Host,
            &vx,
            LinkSpec {
                kind: LinkKind::Vxlan {
                    vni,
                    local: my_ip,
                    port: VXLAN_PORT,
                },
                mtu,
                mac: None,
                master: Some(br.clone()),
                learning: Some(false),
                isolated: Some(true),
                ipv6: None,
            },
        );
        tunnel_fdb(ctx, b, net, &vx);
        vxlan_barriers(ctx, b, net, &vx);
    }
}

/// The VXLAN device's static FDB: each remote endpoint of `net` at its node's tunnel address
/// (and on the bridge), and head-end replication to every other node with presence on it.
fn tunnel_fdb(ctx: &Ctx<'_>, b: &mut Builder, net: &Network, vx: &str) {
    let my_ip = ctx.facts.tunnel_ip();
    for (mac, host) in endpoints(ctx, net) {
        if &host == ctx.me {
            continue;
        }
        let Some(vtep) = ctx.tunnel_ip(&host).filter(|ip| *ip != my_ip) else {
            continue;
        };
        b.fdb(vx, mac.octets(), FdbTarget::Vtep(vtep));
        b.fdb(vx, mac.octets(), FdbTarget::Bridge);
    }
    let flood: BTreeSet<Ipv4Addr> = ctx
        .presence
        .iter()
        .filter(|(n, p)| *n != ctx.me && p.networks.contains(&net.id))
        .filter_map(|(n, _)| ctx.tunnel_ip(n))
        .filter(|ip| *ip != my_ip)
        .collect();
    for vtep in flood {
        b.fdb(vx, [0; 6], FdbTarget::Flood(vtep));
    }
}

/// The nft table on `net`'s VXLAN device, when it needs one: the DVR MAC rewrite for routed
/// subnets, and the barriers that keep DHCP and metadata traffic on its node.
fn vxlan_barriers(ctx: &Ctx<'_>, b: &mut Builder, net: &Network, vx: &str) {
    let router_subnets: Vec<&Subnet> = ctx
        .ix
        .subnets_on(&net.id)
        .iter()
        .copied()
        .filter(|s| !ctx.ix.routers_of(&s.id).is_empty())
        .collect();
    // DHCP stays on the node that hosts the port: every node answers its own (`dvrmesh`'s
    // DHCP server), so requests and replies never cross the tunnel.
    let dhcp = ctx.ix.subnets_on(&net.id).iter().any(|s| s.dhcp.enabled);
    // Metadata too: every node serves its own ports at 169.254.169.254 (`metadata`).
    let metadata = super::metadata::serves_metadata(ctx, net);
    if router_subnets.is_empty() && !dhcp && !metadata {
        return;
    }
    let remote_dvr: Vec<MacAddr> = ctx
        .dvr_macs
        .iter()
        .filter(|(n, _)| *n != ctx.me)
        .map(|(_, m)| *m)
        .collect();
    let gws: Vec<(&Subnet, MacAddr)> = router_subnets
        .iter()
        .filter_map(|s| ctx.gw_mac(&s.id).map(|m| (*s, m)))
        .collect();
    let my_dvr = ctx.my_dvr_mac();
    b.nft(
        &Netns::Host,
        nft::vxlan_table(
            &names::vx_table(net.vni.get()),
            vx,
            nft::VxlanBarriers {
                remote_dvr: &remote_dvr,
                gws: &gws,
                my_dvr,
                dhcp,
                metadata,
            },
        ),
    );
}

/// Every MAC that lives on `net` and the node it lives on: ports, their allowed address pairs, and
/// routers' SNAT ports (on the router's SNAT holder).
fn endpoints(ctx: &Ctx<'_>, net: &Network) -> BTreeSet<(MacAddr, NodeId)> {
    let mut out = BTreeSet::new();
    for p in ctx.ix.ports_on(&net.id) {
        out.insert((p.mac, p.host.clone()));
        for pair in &p.allowed_address_pairs {
            if let Some(m) = pair.mac {
                out.insert((m, p.host.clone()));
            }
        }
    }
    for s in ctx.ix.subnets_on(&net.id) {
        for r in ctx.ix.routers_of(&s.id) {
            if let (Some(holder), Some(sp)) =
                (ctx.t.snat_holders.get(&r.id), r.snat_ports.get(&s.id))
            {
                out.insert((sp.mac, holder.clone()));
            }
        }
    }
    out
}

pub(super) fn plan_ports(ctx: &Ctx<'_>, b: &mut Builder) {
    for port in ctx.t.ports.values().filter(|p| &p.host == ctx.me) {
        let Some(net) = ctx.t.networks.get(&port.network) else {
            continue;
        };
        let br = names::bridge(net.vni.get());
        let mtu = Some(u32::from(net.mtu.get()));
        let dev = match &port.device {
            Some(dev) => {
                b.link(
                    &Netns::Host,
                    dev.as_str(),
                    LinkSpec {
                        kind: LinkKind::External,
                        mtu,
                        mac: None,
                        master: Some(br),
                        learning: None,
                        isolated: None,
                        ipv6: None,
                    },
                );
                dev.to_string()
            }
            None => {
                let (tap, vm_end) = names::tap(&port.id);
                b.link(
                    &Netns::Host,
                    &tap,
                    LinkSpec {
                        kind: LinkKind::Veth {
                            peer: vm_end,
                            peer_ns: Netns::Host,
                        },
                        mtu,
                        mac: None,
                        master: Some(br),
                        learning: None,
                        isolated: None,
                        ipv6: None,
                    },
                );
                tap
            }
        };
        b.fdb(&dev, port.mac.octets(), FdbTarget::Bridge);
    }
}
