//! Compiles a typed table ([`crate::nft::Table`]) into the kernel's form ([`wire::Table`]):
//! nftables VM expressions for every statement, and the implicit dependencies nft adds the way nft
//! adds them (`meta iiftype ether` before the first `ether` field of a netdev rule; then
//! `ether type`, or `meta protocol` when no `ether` field came first, before an `ip` or `arp`
//! field).

use std::net::Ipv4Addr;

use mesh_proto::Ipv4Cidr;

use super::nft_wire::{self as wire, Base, CmpOp, DataType, Element, Expr};
use crate::nft::{Against, ChainKind, Elements, EtherIp, Field, Hook, Nat, Priority, Stmt, Table};
use crate::NftFamily;

/// `NFT_META_PROTOCOL`, `NFT_META_MARK`, `NFT_META_IIFNAME`, `NFT_META_OIFNAME`,
/// `NFT_META_IIFTYPE`.
const META_PROTOCOL: u32 = 1;
const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_IIFTYPE: u32 = 8;
const META_L4PROTO: u32 = 16;
const IPPROTO_UDP: u8 = 17;
/// `ARPHRD_ETHER`, host order, as `meta iiftype` holds it.
const ARPHRD_ETHER: [u8; 2] = 1u16.to_ne_bytes();
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_ARP: [u8; 2] = [0x08, 0x06];
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;
/// Offsets in the IPv4 header: the TTL, the header checksum.
const IP_TTL: u32 = 8;
const IP_CHECKSUM: u32 = 10;
/// `ARPOP_REQUEST`.
const ARP_REQUEST: u16 = 1;

/// The kernel form of `table`, commented with `comment`; `ifindex` gives the index of a device
/// a map names, in the namespace the table is for. Fails on what [`Table::check`] refuses, on
/// overlapping prefixes in an interval set and on a device that does not exist.
pub(crate) fn compile(
    table: &Table,
    comment: String,
    ifindex: &dyn Fn(&str) -> Option<u32>,
) -> Result<wire::Table, String> {
    table.check()?;
    if comment.len() > 127 {
        return Err("comment too long".into());
    }
    let mut sets = Vec::with_capacity(table.sets.len());
    for set in &table.sets {
        sets.push(compile_set(&set.name, &set.elements, ifindex)?);
    }
    for dev in table.devices() {
        if ifindex(dev).is_none() {
            return Err(format!("no device {dev} in the namespace"));
        }
    }
    let chains = table
        .chains
        .iter()
        .map(|c| wire::Chain {
            name: c.name.clone(),
            hook: Some(hook(c.kind, &c.hook, c.priority)),
            rules: c
                .rules
                .iter()
                .map(|r| compile_rule(&r.0, table.family))
                .collect(),
        })
        .collect();
    Ok(wire::Table {
        family: table.family,
        name: table.name.clone(),
        comment: Some(comment),
        sets,
        chains,
    })
}

fn compile_set(
    name: &str,
    elements: &Elements,
    ifindex: &dyn Fn(&str) -> Option<u32>,
) -> Result<wire::Set, String> {
    let plain = |key: Vec<u8>| Element {
        key,
        end: None,
        data: None,
    };
    let mapped = |key: &EtherIp, data: Vec<u8>| Element {
        key: ether_ip_key(key),
        end: None,
        data: Some(data),
    };
    let (key, data, interval, elements) = match elements {
        Elements::Macs(v) => (
            DataType::Ether,
            None,
            false,
            v.iter().map(|m| plain(m.octets().to_vec())).collect(),
        ),
        Elements::Addrs(v) => (
            DataType::Ipv4,
            None,
            false,
            v.iter().map(|a| plain(a.octets().to_vec())).collect(),
        ),
        Elements::Prefixes(v) => (DataType::Ipv4, None, true, ranges(name, v)?),
        Elements::AddrMap(v) => (
            DataType::Ipv4,
            Some(DataType::Ipv4),
            false,
            v.iter()
                .map(|(k, d)| Element {
                    key: k.octets().to_vec(),
                    end: None,
                    data: Some(d.octets().to_vec()),
                })
                .collect(),
        ),
        Elements::MacMap(v) => (
            DataType::EtherIpv4,
            Some(DataType::Ether),
            false,
            v.iter()
                .map(|(k, mac)| mapped(k, mac.octets().to_vec()))
                .collect(),
        ),
        Elements::DevMap(v) => {
            let mut out = Vec::with_capacity(v.len());
            for (k, dev) in v {
                let index =
                    ifindex(dev).ok_or_else(|| format!("no device {dev} in the namespace"))?;
                out.push(mapped(k, index.to_ne_bytes().to_vec()));
            }
            (DataType::EtherIpv4, Some(DataType::IfIndex), false, out)
        }
    };
    Ok(wire::Set {
        name: name.to_string(),
        key,
        data,
        interval,
        elements,
    })
}

/// An `ether_addr . ipv4_addr` key as the kernel holds it: the MAC padded to 8 bytes, then the
/// address.
fn ether_ip_key((mac, ip): &EtherIp) -> Vec<u8> {
    let mut key = mac.octets().to_vec();
    key.extend([0, 0]);
    key.extend(ip.octets());
    key
}

/// Prefixes as sorted ranges `[start, end)`; `end` is `None` for a range that runs to the top of
/// the address space. Overlaps are refused, as nft refuses them.
fn ranges(set: &str, prefixes: &[Ipv4Cidr]) -> Result<Vec<Element>, String> {
    let mut out: Vec<(u32, Option<u32>)> = prefixes
        .iter()
        .map(|c| {
            let start = u32::from(c.network());
            let end = u64::from(start) + (1u64 << (32 - u32::from(c.prefix())));
            (start, u32::try_from(end).ok())
        })
        .collect();
    out.sort();
    for pair in out.windows(2) {
        if pair[0].1.is_none_or(|end| end > pair[1].0) {
            return Err(format!("overlapping prefixes in set {set}"));
        }
    }
    Ok(out
        .into_iter()
        .map(|(start, end)| Element {
            key: start.to_be_bytes().to_vec(),
            end: end.map(|e| e.to_be_bytes().to_vec()),
            data: None,
        })
        .collect())
}

fn hook(kind: ChainKind, hook: &Hook, priority: Priority) -> wire::Hook {
    let (hooknum, device) = match hook {
        Hook::Prerouting => (0, None),
        Hook::Postrouting => (4, None),
        Hook::Ingress(dev) => (0, Some(dev.clone())),
        Hook::Egress(dev) => (1, Some(dev.clone())),
    };
    wire::Hook {
        chain_type: match kind {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        },
        hooknum,
        priority: match priority {
            Priority::Raw => -300,
            Priority::Mangle => -150,
            Priority::DstNat => -100,
            Priority::SrcNat => 100,
            Priority::Value(v) => v,
        },
        device,
        accept: true,
    }
}

/// What a rule has matched so far, for nft's implicit dependencies.
#[derive(Default)]
struct Deps {
    ether: bool,
    l3: Option<[u8; 2]>,
}

impl Deps {
    fn ether(&mut self, out: &mut Vec<Expr>) {
        if !self.ether {
            out.push(Expr::MetaLoad(META_IIFTYPE));
            out.push(Expr::CmpEq(ARPHRD_ETHER.to_vec()));
            self.ether = true;
        }
    }

    /// The protocol check before an `ip` or `arp` field: none in an `ip` table for `ip` (the
    /// family implies it), once per rule elsewhere.
    fn l3(&mut self, family: NftFamily, proto: [u8; 2], out: &mut Vec<Expr>) {
        if (family == NftFamily::Ip && proto == ETH_P_IP) || self.l3 == Some(proto) {
            return;
        }
        if self.ether {
            out.push(Expr::PayloadLoad {
                base: Base::Link,
                offset: 12,
                len: 2,
            });
        } else {
            out.push(Expr::MetaLoad(META_PROTOCOL));
        }
        out.push(Expr::CmpEq(proto.to_vec()));
        self.l3 = Some(proto);
    }
}

/// The expressions of one rule. [`Table::check`] has made sure every statement exists in
/// `family` and names a set of the right type.
fn compile_rule(stmts: &[Stmt], family: NftFamily) -> Vec<Expr> {
    let mut out = Vec::new();
    let mut deps = Deps::default();
    for stmt in stmts {
        match stmt {
            Stmt::Ether(field, what) => {
                deps.ether(&mut out);
                out.push(link_field(ether_offset(*field), 6));
                out.push(match what {
                    Against::Value(mac) => Expr::CmpEq(mac.octets().to_vec()),
                    Against::Set(s) => lookup(s, false),
                });
            }
            Stmt::Ip(field, what) => {
                deps.l3(family, ETH_P_IP, &mut out);
                let offset = ip_offset(*field);
                match what {
                    Against::Value(prefix) => prefix_match(*prefix, offset, &mut out),
                    Against::Set(s) => {
                        out.push(network_field(offset, 4));
                        out.push(lookup(s, false));
                    }
                }
            }
            Stmt::ArpRequest => {
                deps.l3(family, ETH_P_ARP, &mut out);
                out.push(network_field(6, 2));
                out.push(Expr::CmpEq(ARP_REQUEST.to_be_bytes().to_vec()));
            }
            Stmt::ArpTargetIp(ip) => {
                deps.l3(family, ETH_P_ARP, &mut out);
                prefix_match(host(*ip), 24, &mut out);
            }
            Stmt::UdpDport(port) => {
                udp_dport(&mut out);
                out.push(Expr::CmpEq(port.to_be_bytes().to_vec()));
            }
            Stmt::UdpDportRange(low, high) => {
                // As nft compiles `udp dport 67-68`: two comparisons, not a range expression.
                udp_dport(&mut out);
                out.push(Expr::Cmp(CmpOp::Gte, low.to_be_bytes().to_vec()));
                out.push(Expr::Cmp(CmpOp::Lte, high.to_be_bytes().to_vec()));
            }
            Stmt::EtherIsNot(field, mac) => {
                deps.ether(&mut out);
                out.push(link_field(ether_offset(*field), 6));
                out.push(Expr::Cmp(CmpOp::Neq, mac.octets().to_vec()));
            }
            Stmt::Iifname(dev) => if_name(META_IIFNAME, dev, &mut out),
            Stmt::Oifname(dev) => if_name(META_OIFNAME, dev, &mut out),
            Stmt::Counter => out.push(Expr::Counter),
            Stmt::Drop => out.push(Expr::Verdict(0)),
            Stmt::Accept => out.push(Expr::Verdict(1)),
            Stmt::Notrack => out.push(Expr::Notrack),
            Stmt::SetEtherSaddr(mac) => {
                deps.ether(&mut out);
                out.push(Expr::Immediate(mac.octets().to_vec()));
                out.push(Expr::PayloadWrite {
                    base: Base::Link,
                    offset: 6,
                    len: 6,
                    csum: None,
                });
            }
            Stmt::IpTtl(ttl) => {
                deps.l3(family, ETH_P_IP, &mut out);
                out.push(network_field(IP_TTL, 1));
                out.push(Expr::CmpEq(vec![*ttl]));
            }
            Stmt::SetIpTtl(ttl) => {
                // As nft writes a byte inside the checksummed header: the 16-bit word holding
                // it (TTL and protocol), the protocol kept, the checksum fixed up.
                deps.l3(family, ETH_P_IP, &mut out);
                out.push(network_field(IP_TTL, 2));
                out.push(Expr::MaskXor {
                    mask: vec![0x00, 0xff],
                    xor: vec![*ttl, 0x00],
                });
                out.push(Expr::PayloadWrite {
                    base: Base::Network,
                    offset: IP_TTL,
                    len: 2,
                    csum: Some(IP_CHECKSUM),
                });
            }
            Stmt::SetEtherFromMap(field, map) => {
                ether_ip_lookup(map, family, &mut deps, &mut out);
                out.push(Expr::PayloadWrite {
                    base: Base::Link,
                    offset: ether_offset(*field),
                    len: 6,
                    csum: None,
                });
            }
            Stmt::FwdMap(map) => {
                ether_ip_lookup(map, family, &mut deps, &mut out);
                out.push(Expr::Fwd);
            }
            Stmt::SetMark(mark) => {
                out.push(Expr::Immediate(mark.to_ne_bytes().to_vec()));
                out.push(Expr::MetaSet(META_MARK));
            }
            Stmt::NatMap(nat, field, map) => {
                out.push(network_field(ip_offset(*field), 4));
                out.push(lookup(map, true));
                out.push(Expr::Nat {
                    dnat: *nat == Nat::Dnat,
                });
            }
            Stmt::NatTo(nat, addr) => {
                out.push(Expr::Immediate(addr.octets().to_vec()));
                out.push(Expr::Nat {
                    dnat: *nat == Nat::Dnat,
                });
            }
        }
    }
    out
}

/// `udp dport` into register 1, as nft loads it: the layer 4 protocol checked first.
fn udp_dport(out: &mut Vec<Expr>) {
    out.push(Expr::MetaLoad(META_L4PROTO));
    out.push(Expr::CmpEq(vec![IPPROTO_UDP]));
    out.push(Expr::PayloadLoad {
        base: Base::Transport,
        offset: 2,
        len: 2,
    });
}

/// `ether daddr . ip daddr map @map` into register 1, with nft's dependencies.
fn ether_ip_lookup(map: &str, family: NftFamily, deps: &mut Deps, out: &mut Vec<Expr>) {
    deps.ether(out);
    deps.l3(family, ETH_P_IP, out);
    out.push(link_field(0, 6));
    out.push(Expr::PayloadLoadTail {
        base: Base::Network,
        offset: ip_offset(Field::Daddr),
        len: 4,
    });
    out.push(lookup(map, true));
}

fn ether_offset(field: Field) -> u32 {
    match field {
        Field::Daddr => 0,
        Field::Saddr => 6,
    }
}

fn link_field(offset: u32, len: u32) -> Expr {
    Expr::PayloadLoad {
        base: Base::Link,
        offset,
        len,
    }
}

fn network_field(offset: u32, len: u32) -> Expr {
    Expr::PayloadLoad {
        base: Base::Network,
        offset,
        len,
    }
}

fn ip_offset(field: Field) -> u32 {
    match field {
        Field::Saddr => 12,
        Field::Daddr => 16,
    }
}

fn host(ip: Ipv4Addr) -> Ipv4Cidr {
    // A /32 of any address is a valid prefix.
    Ipv4Cidr::new(ip, 32).unwrap_or_else(|_| unreachable!())
}

fn lookup(set: &str, map: bool) -> Expr {
    Expr::Lookup {
        set: set.to_string(),
        map,
    }
}

fn if_name(key: u32, dev: &str, out: &mut Vec<Expr>) {
    out.push(Expr::MetaLoad(key));
    let mut padded = dev.as_bytes().to_vec();
    padded.resize(IFNAMSIZ, 0);
    out.push(Expr::CmpEq(padded));
}

/// Matches the 4-byte field at network `offset` against a prefix, as nft does: the whole bytes of
/// the prefix, masked when it ends inside a byte. (`Table::check` refuses /0.)
fn prefix_match(prefix: Ipv4Cidr, offset: u32, out: &mut Vec<Expr>) {
    let bits = u32::from(prefix.prefix());
    let bytes = bits.div_ceil(8);
    out.push(network_field(offset, bytes));
    let value = prefix.network().octets()[..bytes as usize].to_vec();
    if bits % 8 != 0 {
        let mask = (u32::MAX << (32 - bits)).to_be_bytes()[..bytes as usize].to_vec();
        out.push(Expr::Mask(mask));
    }
    out.push(Expr::CmpEq(value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::{Chain, Rule, Set};

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().expect("cidr")
    }

    fn netdev(rules: Vec<Rule>, sets: Vec<Set>) -> Table {
        Table {
            family: NftFamily::Netdev,
            name: "dvrmesh_vx1".into(),
            sets,
            chains: vec![Chain {
                name: "in".into(),
                kind: ChainKind::Filter,
                hook: Hook::Ingress("vx1".into()),
                priority: Priority::Value(0),
                rules,
            }],
        }
    }

    #[test]
    fn a_netdev_rule_gets_nfts_implicit_dependencies() {
        let t = netdev(
            vec![
                Rule(vec![
                    Stmt::Ether(Field::Saddr, Against::Set("remote_dvr".into())),
                    Stmt::Ip(Field::Daddr, Against::Value(cidr("10.0.1.0/24"))),
                    Stmt::Counter,
                    Stmt::SetEtherSaddr("fa:16:3e:00:00:01".parse().expect("mac")),
                ]),
                Rule(vec![
                    Stmt::ArpRequest,
                    Stmt::ArpTargetIp("10.0.1.1".parse().expect("ip")),
                    Stmt::Drop,
                ]),
            ],
            vec![Set {
                name: "remote_dvr".into(),
                elements: Elements::Macs(vec!["fa:16:3f:00:00:01".parse().expect("mac")]),
            }],
        );
        let w = compile(&t, "dvrmesh:1".into(), &|_| Some(1)).expect("compiles");
        assert_eq!(w.comment.as_deref(), Some("dvrmesh:1"));
        assert_eq!(w.sets[0].elements[0].key, vec![0xfa, 0x16, 0x3f, 0, 0, 1]);
        let hook = w.chains[0].hook.as_ref().expect("hook");
        assert_eq!((hook.hooknum, hook.device.as_deref()), (0, Some("vx1")));
        assert_eq!(
            w.chains[0].rules[0],
            vec![
                Expr::MetaLoad(META_IIFTYPE),
                Expr::CmpEq(ARPHRD_ETHER.to_vec()),
                link_field(6, 6),
                lookup("remote_dvr", false),
                link_field(12, 2),
                Expr::CmpEq(vec![8, 0]),
                network_field(16, 3),
                Expr::CmpEq(vec![10, 0, 1]),
                Expr::Counter,
                Expr::Immediate(vec![0xfa, 0x16, 0x3e, 0, 0, 1]),
                Expr::PayloadWrite {
                    base: Base::Link,
                    offset: 6,
                    len: 6,
                    csum: None,
                },
            ]
        );
        let arp = &w.chains[0].rules[1];
        assert_eq!(arp[0], Expr::MetaLoad(META_PROTOCOL));
        assert_eq!(arp[1], Expr::CmpEq(vec![8, 6]));
        assert_eq!(arp[4], network_field(24, 4), "the ARP target address");
        assert_eq!(arp.last(), Some(&Expr::Verdict(0)));
    }

    /// The fast path's rule, expression for expression as `nft --debug=netlink` shows nft 1.0.6
    /// compiling its text.
    #[test]
    fn a_fast_path_rule_compiles_as_nft_compiles_it() {
        let mac = |s: &str| s.parse::<mesh_proto::MacAddr>().expect("mac");
        let key = (mac("fa:16:3d:00:00:01"), "10.2.0.5".parse().expect("ip"));
        let t = netdev(
            vec![Rule(vec![
                Stmt::IpTtl(64),
                Stmt::SetEtherFromMap(Field::Saddr, "smac".into()),
                Stmt::SetIpTtl(63),
                Stmt::FwdMap("odev".into()),
            ])],
            vec![
                Set {
                    name: "smac".into(),
                    elements: Elements::MacMap(vec![(key, mac("fa:16:3f:00:00:09"))]),
                },
                Set {
                    name: "odev".into(),
                    elements: Elements::DevMap(vec![(key, "vx-2".into())]),
                },
            ],
        );
        let w = compile(&t, "dvrmesh:1".into(), &|dev| {
            [("vx-2", 7), ("vx1", 1)]
                .into_iter()
                .find_map(|(d, i)| (d == dev).then_some(i))
        })
        .expect("compiles");
        let concat = [0xfa, 0x16, 0x3d, 0, 0, 1, 0, 0, 10, 2, 0, 5];
        assert_eq!(
            w.sets[0].elements[0].key, concat,
            "the MAC padded to 8 bytes"
        );
        assert_eq!(
            w.sets[1].elements[0].data,
            Some(7u32.to_ne_bytes().to_vec())
        );
        let key_loads = [
            link_field(0, 6),
            Expr::PayloadLoadTail {
                base: Base::Network,
                offset: 16,
                len: 4,
            },
        ];
        let mut want = vec![
            Expr::MetaLoad(META_PROTOCOL),
            Expr::CmpEq(vec![8, 0]),
            network_field(8, 1),
            Expr::CmpEq(vec![64]),
            Expr::MetaLoad(META_IIFTYPE),
            Expr::CmpEq(ARPHRD_ETHER.to_vec()),
        ];
        want.extend(key_loads.clone());
        want.extend([
            lookup("smac", true),
            Expr::PayloadWrite {
                base: Base::Link,
                offset: 6,
                len: 6,
                csum: None,
            },
            network_field(8, 2),
            Expr::MaskXor {
                mask: vec![0x00, 0xff],
                xor: vec![63, 0x00],
            },
            Expr::PayloadWrite {
                base: Base::Network,
                offset: 8,
                len: 2,
                csum: Some(10),
            },
        ]);
        want.extend(key_loads);
        want.extend([lookup("odev", true), Expr::Fwd]);
        assert_eq!(w.chains[0].rules[0], want);
        let missing = compile(&t, "dvrmesh:1".into(), &|dev| (dev == "vx1").then_some(1))
            .expect_err("no vx-2");
        assert!(missing.contains("no device vx-2"), "{missing}");
        let unhooked = compile(&t, "dvrmesh:1".into(), &|dev| (dev == "vx-2").then_some(7))
            .expect_err("no vx1");
        assert!(unhooked.contains("no device vx1"), "{unhooked}");
    }

    /// A port range and a negated MAC with an early accept, expression for expression as
    /// `nft --debug=netlink` shows nft 1.0.6 compiling `udp dport 67-68 counter drop` and
    /// `ether daddr != fa:16:3d:5b:03:9e accept`.
    #[test]
    fn a_port_range_and_a_mac_mismatch_compile_as_nft_compiles_them() {
        let gw: mesh_proto::MacAddr = "fa:16:3d:5b:03:9e".parse().expect("mac");
        let t = netdev(
            vec![
                Rule(vec![Stmt::UdpDportRange(67, 68), Stmt::Counter, Stmt::Drop]),
                Rule(vec![Stmt::EtherIsNot(Field::Daddr, gw), Stmt::Accept]),
            ],
            vec![],
        );
        let w = compile(&t, "dvrmesh:1".into(), &|_| Some(1)).expect("compiles");
        assert_eq!(
            w.chains[0].rules[0],
            vec![
                Expr::MetaLoad(META_L4PROTO),
                Expr::CmpEq(vec![17]),
                Expr::PayloadLoad {
                    base: Base::Transport,
                    offset: 2,
                    len: 2,
                },
                Expr::Cmp(CmpOp::Gte, vec![0, 67]),
                Expr::Cmp(CmpOp::Lte, vec![0, 68]),
                Expr::Counter,
                Expr::Verdict(0),
            ]
        );
        assert_eq!(
            w.chains[0].rules[1],
            vec![
                Expr::MetaLoad(META_IIFTYPE),
                Expr::CmpEq(ARPHRD_ETHER.to_vec()),
                link_field(0, 6),
                Expr::Cmp(CmpOp::Neq, gw.octets().to_vec()),
                Expr::Verdict(1),
            ]
        );
        let mut reversed = t.clone();
        reversed.chains[0].rules[0].0[0] = Stmt::UdpDportRange(68, 67);
        let err = compile(&reversed, "dvrmesh:1".into(), &|_| Some(1)).expect_err("68-67");
        assert!(err.contains("not a range"), "{err}");
    }

    #[test]
    fn prefix_sets_become_sorted_ranges_and_overlaps_are_refused() {
        let set = |v: &[&str]| Elements::Prefixes(v.iter().map(|c| cidr(c)).collect());
        let s = compile_set(
            "s",
            &set(&["10.0.2.0/23", "10.0.1.0/24", "255.255.255.0/24"]),
            &|_| None,
        )
        .expect("disjoint");
        assert!(s.interval);
        assert_eq!(s.elements[0].key, vec![10, 0, 1, 0]);
        assert_eq!(s.elements[0].end, Some(vec![10, 0, 2, 0]));
        assert_eq!(s.elements[1].end, Some(vec![10, 0, 4, 0]));
        assert_eq!(s.elements[2].end, None, "a range to the top has no end");
        assert!(compile_set("s", &set(&["10.0.0.0/16", "10.0.1.0/24"]), &|_| None).is_err());
    }

    #[test]
    fn a_prefix_ending_inside_a_byte_is_masked() {
        let mut out = Vec::new();
        prefix_match(cidr("10.0.0.0/12"), 12, &mut out);
        assert_eq!(
            out,
            vec![
                network_field(12, 2),
                Expr::Mask(vec![0xff, 0xf0]),
                Expr::CmpEq(vec![10, 0])
            ]
        );
    }

    #[test]
    fn a_table_check_refuses_is_not_compiled() {
        let mut t = netdev(vec![], vec![]);
        t.chains[0].hook = Hook::Ingress("a-very-long-device-name".into());
        assert!(compile(&t, "dvrmesh:1".into(), &|_| None).is_err());
    }
}
