//! The metadata namespace of a network on a node with a local port of it: `qmeta-<network>`,
//! holding 169.254.169.254 on one veth into the network's bridge, a link route to each subnet
//! and a permanent neighbour for each local port's address. The agent's metadata listener sits
//! in it. Its bridge port and the VXLAN device are isolated ports, so the bridge never forwards
//! between them; the VXLAN table refuses 169.254.169.254 from the tunnel.

use mesh_proto::{Ipv4Cidr, Network};

use super::names::{self, MAIN_TABLE};
use super::{Builder, Ctx, VethEnd};
use crate::model::*;

pub(super) fn plan_metadata(ctx: &Ctx<'_>, b: &mut Builder) {
    for nid in &ctx.mine().networks {
        let Some(net) = ctx.t.networks.get(nid) else {
            continue;
        };
        if !serves_metadata(ctx, net) {
            continue;
        }
        plan_one(ctx, net, b);
    }
}

/// Whether this node serves metadata on `net`: it hosts a port of it.
pub(super) fn serves_metadata(ctx: &Ctx<'_>, net: &Network) -> bool {
    ctx.ix.ports_on(&net.id).iter().any(|p| &p.host == ctx.me)
}

fn plan_one(ctx: &Ctx<'_>, net: &Network, b: &mut Builder) {
    let name = names::metadata_ns(&net.id);
    b.namespace(&name, false);
    let ns = Netns::Named(name);
    // One interface, nothing to forward: a VM cannot use the namespace as a router.
    b.sysctl(&ns, "net.ipv4.ip_forward".into(), "0");
    let (md, tmd) = names::md(&net.id);
    let mac = names::metadata_mac(&net.id);
    let mtu = Some(u32::from(net.mtu.get()));
    b.veth(
        (
            &ns,
            &md,
            VethEnd {
                mtu,
                mac: Some(mac),
                master: None,
                isolated: false,
            },
        ),
        (
            &Netns::Host,
            &tmd,
            VethEnd {
                mtu,
                mac: None,
                master: Some(names::bridge(net.vni.get())),
                // Isolated, as the VXLAN device is: nothing of the metadata service crosses
                // the tunnel, either way (`l2`).
                isolated: true,
            },
        ),
    );
    b.fdb(&tmd, mac.octets(), FdbTarget::Bridge);
    b.addr(&ns, &md, names::METADATA_IP, 32);
    let subnets: Vec<Ipv4Cidr> = ctx.ix.subnets_on(&net.id).iter().map(|s| s.cidr).collect();
    for cidr in &subnets {
        b.route(&ns, MAIN_TABLE, *cidr, None, &md);
    }
    // Replies go to the port's own MAC whatever a request claimed: a VM that sends from another
    // VM's address never sees the answer to its SYN, so a connection that is established came
    // from the port that holds the address (the listener's identity check rests on this).
    for p in ctx
        .ix
        .ports_on(&net.id)
        .iter()
        .filter(|p| &p.host == ctx.me)
    {
        for ip in p
            .fixed_ips
            .iter()
            .filter(|ip| subnets.iter().any(|c| c.contains(**ip)))
        {
            b.neigh(&ns, &md, *ip, p.mac);
        }
    }
}
