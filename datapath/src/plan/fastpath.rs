//! The routed fast path: a frame a local VM sends to its router's gateway MAC, for a port on
//! another subnet of the same router, is routed on the VM's own device (an nft netdev ingress
//! chain) and sent straight out of the device that leads to that port — the port's own device on
//! this node, or its network's VXLAN device — instead of crossing the bridge, the `qrouter-`
//! namespace's veth pair and the second bridge. It does what the router would: the destination
//! port's MAC, the source MAC the router would use (the destination subnet's gateway MAC here;
//! this node's DVR MAC over the tunnel, as the VXLAN device's egress rewrite would make it) and
//! one less TTL. Everything else (other destinations, ARP, a TTL the rules do not list, a
//! destination a router's extra route covers, a smaller MTU on the way) takes the slow path
//! through the router namespace, which stays complete.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::{MacAddr, Network, Port, Router, Subnet};

use super::names;
use super::{Builder, Ctx};
use crate::model::Netns;
use crate::nft::{
    Chain, ChainKind, Elements, EtherIp, Field, Hook, Priority, Rule, Set, Stmt, Table,
};
use crate::NftFamily;

/// The initial TTLs of common systems (Linux and most Unix 64, Windows 128, network gear 255):
/// a VM's packet reaches its first router with one of these. A packet with another TTL takes
/// the slow path, which decrements and, at 1, answers with time exceeded.
const FIRST_HOP_TTLS: [u8; 3] = [64, 128, 255];

pub(super) fn plan_fast_paths(ctx: &Ctx<'_>, b: &mut Builder) {
    for rid in &ctx.mine().qrouters {
        if let Some(table) = ctx.t.routers.get(rid).and_then(|r| router_table(ctx, r)) {
            b.nft(&Netns::Host, table);
        }
    }
}

/// One subnet of the router as the fast path sees it.
struct Leg<'a> {
    subnet: &'a Subnet,
    net: &'a Network,
    gw: MacAddr,
}

/// Where a routed frame goes: its key (`gateway MAC . destination IP`) maps to the source and
/// destination MACs; `destination MAC . IP` maps to the device.
#[derive(Default)]
struct Maps {
    src: BTreeMap<EtherIp, MacAddr>,
    dst: BTreeMap<EtherIp, MacAddr>,
    /// `None` where two ports share a MAC and an address but not a device: left to the slow path.
    dev: BTreeMap<EtherIp, Option<String>>,
}

/// The fast-path table of router `r` on this node, when a local VM's device has somewhere to go.
fn router_table(ctx: &Ctx<'_>, r: &Router) -> Option<Table> {
    let legs: Vec<Leg<'_>> = r
        .interfaces
        .iter()
        .filter_map(|sid| {
            let subnet = ctx.t.subnets.get(sid)?;
            let net = ctx.t.networks.get(&subnet.network)?;
            let gw = ctx.gw_mac(sid)?;
            ctx.mine()
                .networks
                .contains(&net.id)
                .then_some(Leg { subnet, net, gw })
        })
        .collect();
    // Each local VM device and the gateway MACs its VMs route through.
    let mut devices: BTreeMap<String, BTreeSet<MacAddr>> = BTreeMap::new();
    let mut maps = Maps::default();
    for (i, from) in legs.iter().enumerate() {
        let local: Vec<String> = local_ports(ctx, from.subnet)
            .map(super::port_device)
            .collect();
        if local.is_empty() {
            continue;
        }
        let before = maps.src.len();
        for (_, to) in legs.iter().enumerate().filter(|(j, _)| *j != i) {
            if to.net.mtu < from.net.mtu {
                continue; // the router would fragment or refuse: its business
            }
            destinations(ctx, r, from.gw, to, &mut maps);
        }
        if maps.src.len() > before {
            for dev in local {
                devices.entry(dev).or_default().insert(from.gw);
            }
        }
    }
    maps.drop_shared_keys();
    if devices.is_empty() || maps.src.is_empty() {
        return None;
    }
    Some(table(&names::fast_path_table(&r.id), &devices, maps))
}

/// Ports on this node with an address in `subnet` (on a tap pair dvrmesh makes or a
/// hypervisor's device).
fn local_ports<'a>(ctx: &'a Ctx<'_>, subnet: &'a Subnet) -> impl Iterator<Item = &'a Port> + 'a {
    ctx.ix
        .ports_on(&subnet.network)
        .iter()
        .copied()
        .filter(move |p| {
            &p.host == ctx.me && p.fixed_ips.iter().any(|ip| subnet.cidr.contains(*ip))
        })
}

/// Every port address on leg `to`, reached from the subnet whose gateway MAC is `gw`.
fn destinations(ctx: &Ctx<'_>, r: &Router, gw: MacAddr, to: &Leg<'_>, maps: &mut Maps) {
    let my_vtep = ctx.facts.tunnel_ip();
    let my_dvr = ctx.my_dvr_mac();
    // An extra route at least as specific as the subnet's own route may lead elsewhere.
    let routed_elsewhere = |ip| {
        r.routes.iter().any(|rt| {
            rt.destination.prefix() >= to.subnet.cidr.prefix() && rt.destination.contains(ip)
        })
    };
    for p in ctx.ix.ports_on(&to.net.id) {
        let (dev, src) = if &p.host == ctx.me {
            (super::port_device(p), to.gw)
        } else {
            match ctx.tunnel_ip(&p.host) {
                Some(vtep) if vtep != my_vtep => (names::vxlan(to.net.vni.get()), my_dvr),
                _ => continue, // no tunnel to it: the slow path floods or fails as before
            }
        };
        for ip in p
            .fixed_ips
            .iter()
            .copied()
            .filter(|ip| to.subnet.cidr.contains(*ip) && !routed_elsewhere(*ip))
        {
            maps.src.insert((gw, ip), src);
            maps.dst.insert((gw, ip), p.mac);
            maps.dev
                .entry((p.mac, ip))
                .and_modify(|d| {
                    if d.as_deref() != Some(dev.as_str()) {
                        *d = None;
                    }
                })
                .or_insert_with(|| Some(dev.clone()));
        }
    }
}

impl Maps {
    /// Leaves out every key whose destination MAC and address lead to two devices.
    fn drop_shared_keys(&mut self) {
        let shared: BTreeSet<EtherIp> = self
            .dev
            .iter()
            .filter(|(_, d)| d.is_none())
            .map(|(k, _)| *k)
            .collect();
        if shared.is_empty() {
            return;
        }
        let dst = &self.dst;
        self.src.retain(|(gw, ip), _| {
            dst.get(&(*gw, *ip))
                .is_none_or(|m| !shared.contains(&(*m, *ip)))
        });
        let src = &self.src;
        self.dst.retain(|k, _| src.contains_key(k));
        self.dev.retain(|_, d| d.is_some());
    }
}

/// The table: the three maps, and one ingress chain per local VM device with a rule per
/// first-hop TTL. Every frame the VM sends walks its chain, most of them not for the router: a
/// device whose VMs route through one gateway MAC lets every frame for another MAC go with one
/// comparison.
fn table(name: &str, devices: &BTreeMap<String, BTreeSet<MacAddr>>, maps: Maps) -> Table {
    let routed: Vec<Rule> = FIRST_HOP_TTLS
        .iter()
        .map(|ttl| {
            Rule(vec![
                Stmt::IpTtl(*ttl),
                Stmt::SetEtherFromMap(Field::Saddr, "smac".into()),
                Stmt::SetIpTtl(ttl - 1),
                Stmt::SetEtherFromMap(Field::Daddr, "dmac".into()),
                Stmt::FwdMap("odev".into()),
            ])
        })
        .collect();
    let chains = devices
        .iter()
        .enumerate()
        .map(|(i, (dev, gws))| {
            let mut rules = Vec::with_capacity(routed.len() + 1);
            if let [gw] = gws.iter().collect::<Vec<_>>()[..] {
                rules.push(Rule(vec![
                    Stmt::EtherIsNot(Field::Daddr, *gw),
                    Stmt::Accept,
                ]));
            }
            rules.extend(routed.iter().cloned());
            Chain {
                name: format!("in{i}"),
                kind: ChainKind::Filter,
                hook: Hook::Ingress(dev.clone()),
                priority: Priority::Value(0),
                rules,
            }
        })
        .collect();
    let set = |name: &str, elements| Set {
        name: name.into(),
        elements,
    };
    Table {
        family: NftFamily::Netdev,
        name: name.to_string(),
        sets: vec![
            set("smac", Elements::MacMap(maps.src.into_iter().collect())),
            set("dmac", Elements::MacMap(maps.dst.into_iter().collect())),
            set(
                "odev",
                Elements::DevMap(
                    maps.dev
                        .into_iter()
                        .filter_map(|(k, d)| Some((k, d?)))
                        .collect(),
                ),
            ),
        ],
        chains,
    }
}
