//! The nft tables the DVR recipe needs, as typed trees ([`crate::nft`]). Each is one whole
//! table, replaced atomically.

use std::net::Ipv4Addr;

use mesh_proto::{Ipv4Cidr, MacAddr, Subnet};

use crate::nft::{
    Against, Chain, ChainKind, Elements, Field, Hook, Nat, Priority, Rule, Set, Stmt, Table,
};
use crate::NftFamily;

/// What a VXLAN device's table keeps to this node.
pub(crate) struct VxlanBarriers<'a> {
    /// Other nodes' DVR MACs.
    pub(crate) remote_dvr: &'a [MacAddr],
    /// Router subnets of the network and their gateway MACs.
    pub(crate) gws: &'a [(&'a Subnet, MacAddr)],
    /// This node's DVR MAC.
    pub(crate) my_dvr: MacAddr,
    /// Whether DHCP is on for a subnet of the network.
    pub(crate) dhcp: bool,
    /// Whether this node serves metadata on the network.
    pub(crate) metadata: bool,
}

/// The DVR MAC rewrite and gateway isolation on one VXLAN device (netdev family).
///
/// Ingress: a frame routed by a remote node carries that node's DVR MAC as source; restore the
/// gateway MAC of the destination subnet. Egress: never send frames to a gateway MAC or ARP for a
/// gateway IP over the tunnel (every node answers its own), and replace the gateway MAC of frames
/// routed here with this node's DVR MAC. With `dhcp`, DHCP (UDP to port 67 or 68) neither leaves
/// nor enters through the tunnel: each node answers its own ports. With `metadata`, nothing from
/// the tunnel is let in for 169.254.169.254 (a remote node could otherwise reach this node's
/// metadata service through the gateway); the metadata interface's own frames are kept off the
/// tunnel by the bridge (it and the VXLAN device are isolated ports, `l2`), not here.
///
/// Every frame that crosses the tunnel walks these rules, so they are few and the cheapest test
/// comes first: an ordinary frame between VMs meets four rules on its way out and three on its
/// way in.
pub(crate) fn vxlan_table(table: &str, dev: &str, v: VxlanBarriers<'_>) -> Table {
    let VxlanBarriers {
        remote_dvr,
        gws,
        my_dvr,
        dhcp,
        metadata,
    } = v;
    let dhcp_drop =
        dhcp.then(|| Rule(vec![Stmt::UdpDportRange(67, 68), Stmt::Counter, Stmt::Drop]));
    let metadata_drop = metadata.then(|| {
        let host = Ipv4Cidr::new(super::names::METADATA_IP, 32).unwrap_or_else(|_| unreachable!());
        Rule(vec![
            Stmt::Ip(Field::Daddr, Against::Value(host)),
            Stmt::Counter,
            Stmt::Drop,
        ])
    });
    let ingress = dhcp_drop
        .clone()
        .into_iter()
        .chain(metadata_drop)
        .chain(gws.iter().map(|(subnet, gw)| {
            Rule(vec![
                Stmt::Ether(Field::Saddr, set("remote_dvr")),
                Stmt::Ip(Field::Daddr, Against::Value(subnet.cidr)),
                Stmt::Counter,
                Stmt::SetEtherSaddr(*gw),
            ])
        }))
        .collect();
    let egress = dhcp_drop
        .into_iter()
        .chain(gws.iter().flat_map(|(subnet, gw)| {
            [
                Rule(vec![
                    Stmt::Ether(Field::Daddr, Against::Value(*gw)),
                    Stmt::Drop,
                ]),
                Rule(vec![
                    Stmt::ArpRequest,
                    Stmt::ArpTargetIp(subnet.gateway),
                    Stmt::Drop,
                ]),
                Rule(vec![
                    Stmt::Ether(Field::Saddr, Against::Value(*gw)),
                    Stmt::Counter,
                    Stmt::SetEtherSaddr(my_dvr),
                ]),
            ]
        }))
        .collect();
    Table {
        family: NftFamily::Netdev,
        name: table.to_string(),
        sets: vec![named("remote_dvr", Elements::Macs(remote_dvr.to_vec()))],
        chains: vec![
            filter(
                "in",
                Hook::Ingress(dev.to_string()),
                Priority::Value(0),
                ingress,
            ),
            filter(
                "out",
                Hook::Egress(dev.to_string()),
                Priority::Value(0),
                egress,
            ),
        ],
    }
}

/// What a qrouter's table needs to know.
pub(crate) struct QrouterNft<'a> {
    pub(crate) subnets: Vec<Ipv4Cidr>,
    /// The `rfp-` device, when this node serves FIPs of the router.
    pub(crate) rfp: Option<&'a str>,
    /// (FIP, fixed IP) pairs served here.
    pub(crate) fips: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub(crate) mark: u32,
}

/// The qrouter table: east-west untracked, FIP'd fixed IPs marked (one set lookup per packet, one
/// fwmark rule, whatever the number of FIPs), DNAT/SNAT through maps on the `rfp-` device.
pub(crate) fn qrouter_table(table: &str, q: &QrouterNft<'_>) -> Table {
    let mut chains = vec![
        filter(
            "raw_pre",
            Hook::Prerouting,
            Priority::Raw,
            vec![Rule(vec![
                Stmt::Ip(Field::Saddr, set("router_subnets")),
                Stmt::Ip(Field::Daddr, set("router_subnets")),
                Stmt::Notrack,
            ])],
        ),
        filter(
            "mangle_pre",
            Hook::Prerouting,
            Priority::Mangle,
            vec![Rule(vec![
                Stmt::Ip(Field::Saddr, set("fip_fixed")),
                Stmt::SetMark(q.mark),
            ])],
        ),
    ];
    if let Some(rfp) = q.rfp {
        chains.push(nat(
            "nat_pre",
            Hook::Prerouting,
            Priority::DstNat,
            vec![Rule(vec![
                Stmt::Iifname(rfp.to_string()),
                Stmt::NatMap(Nat::Dnat, Field::Daddr, "fip_dnat".into()),
            ])],
        ));
        chains.push(nat(
            "nat_post",
            Hook::Postrouting,
            Priority::SrcNat,
            vec![Rule(vec![
                Stmt::Oifname(rfp.to_string()),
                Stmt::NatMap(Nat::Snat, Field::Saddr, "fip_snat".into()),
            ])],
        ));
    }
    Table {
        family: NftFamily::Ip,
        name: table.to_string(),
        sets: vec![
            named("router_subnets", Elements::Prefixes(q.subnets.clone())),
            named(
                "fip_fixed",
                Elements::Addrs(q.fips.iter().map(|(_, f)| *f).collect()),
            ),
            named("fip_dnat", Elements::AddrMap(q.fips.clone())),
            named("fip_snat", Elements::AddrMap(swapped(&q.fips))),
        ],
        chains,
    }
}

/// What a SNAT namespace's table needs to know.
pub(crate) struct SnatNft<'a> {
    /// The `qg-` device.
    pub(crate) qg: &'a str,
    pub(crate) subnets: &'a [Ipv4Cidr],
    pub(crate) external_ip: Ipv4Addr,
    /// Whether source NAT is on (the router's gateway setting).
    pub(crate) snat: bool,
    /// Centralized (FIP, fixed IP) pairs.
    pub(crate) fips: &'a [(Ipv4Addr, Ipv4Addr)],
}

/// The SNAT namespace table: centralized FIPs (for ports on `dvr_no_external` nodes) first, then
/// source NAT of the router's subnets to its external address.
pub(crate) fn snat_table(table: &str, s: &SnatNft<'_>) -> Table {
    let qg = s.qg.to_string();
    let mut post = vec![Rule(vec![
        Stmt::Oifname(qg.clone()),
        Stmt::Ip(Field::Saddr, set("cfip_fixed")),
        Stmt::NatMap(Nat::Snat, Field::Saddr, "cfip_snat".into()),
    ])];
    if s.snat {
        post.push(Rule(vec![
            Stmt::Oifname(qg.clone()),
            Stmt::Ip(Field::Saddr, set("router_subnets")),
            Stmt::NatTo(Nat::Snat, s.external_ip),
        ]));
    }
    let pre = vec![Rule(vec![
        Stmt::Iifname(qg),
        Stmt::Ip(Field::Daddr, set("cfip_fips")),
        Stmt::NatMap(Nat::Dnat, Field::Daddr, "cfip_dnat".into()),
    ])];
    Table {
        family: NftFamily::Ip,
        name: table.to_string(),
        sets: vec![
            named("router_subnets", Elements::Prefixes(s.subnets.to_vec())),
            named(
                "cfip_fips",
                Elements::Addrs(s.fips.iter().map(|(fip, _)| *fip).collect()),
            ),
            named(
                "cfip_fixed",
                Elements::Addrs(s.fips.iter().map(|(_, f)| *f).collect()),
            ),
            named("cfip_dnat", Elements::AddrMap(s.fips.to_vec())),
            named("cfip_snat", Elements::AddrMap(swapped(s.fips))),
        ],
        chains: vec![
            nat("pre", Hook::Prerouting, Priority::DstNat, pre),
            nat("post", Hook::Postrouting, Priority::SrcNat, post),
        ],
    }
}

fn set<T>(name: &str) -> Against<T> {
    Against::Set(name.to_string())
}

fn named(name: &str, elements: Elements) -> Set {
    Set {
        name: name.to_string(),
        elements,
    }
}

fn filter(name: &str, hook: Hook, priority: Priority, rules: Vec<Rule>) -> Chain {
    chain(name, ChainKind::Filter, hook, priority, rules)
}

fn nat(name: &str, hook: Hook, priority: Priority, rules: Vec<Rule>) -> Chain {
    chain(name, ChainKind::Nat, hook, priority, rules)
}

fn chain(name: &str, kind: ChainKind, hook: Hook, priority: Priority, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_string(),
        kind,
        hook,
        priority,
        rules,
    }
}

/// (a, b) pairs as (b, a): the SNAT map of a DNAT map.
fn swapped(pairs: &[(Ipv4Addr, Ipv4Addr)]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    pairs.iter().map(|(a, b)| (*b, *a)).collect()
}
