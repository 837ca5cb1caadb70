//! nftables tables as typed trees: what the planner builds and what the backends load.
//!
//! A [`Table`] holds named sets and maps and base chains of rules, each rule a list of [`Stmt`]s
//! in nft's order. There is one printer ([`Table`]'s `Display`), which gives the text `nft -f`
//! reads — for `datapath plan`, for the digest the Linux backend stores in each table's comment,
//! and for the libnftables fallback — and one compiler into nfnetlink messages in the Linux backend
//! (`linux::nft_compile`). Only the shapes the DVR recipe needs exist, so every table the planner
//! can build is one both understand.

use std::fmt;
use std::net::Ipv4Addr;

use mesh_proto::{Ipv4Cidr, MacAddr};

use crate::NftFamily;

/// Longest interface name (`IFNAMSIZ` − 1).
const MAX_IFNAME: usize = 15;

/// One whole table, replaced atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// `ip` or `netdev`.
    pub family: NftFamily,
    /// Its name (starts with [`crate::NFT_TABLE_PREFIX`]).
    pub name: String,
    /// Named sets and maps, in the order printed.
    pub sets: Vec<Set>,
    /// Base chains, in the order printed.
    pub chains: Vec<Chain>,
}

/// A named set or map and its elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// Its name, referred to as `@name` by rules.
    pub name: String,
    /// Its elements, which also say its type.
    pub elements: Elements,
}

/// The elements of a set or map, by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Elements {
    /// `type ether_addr`.
    Macs(Vec<MacAddr>),
    /// `type ipv4_addr`.
    Addrs(Vec<Ipv4Addr>),
    /// `type ipv4_addr; flags interval` (prefixes must not overlap).
    Prefixes(Vec<Ipv4Cidr>),
    /// A map `type ipv4_addr : ipv4_addr`.
    AddrMap(Vec<(Ipv4Addr, Ipv4Addr)>),
    /// A map `type ether_addr . ipv4_addr : ether_addr`.
    MacMap(Vec<(EtherIp, MacAddr)>),
    /// A map `type ether_addr . ipv4_addr : iface_index`, the devices by name (the kernel holds
    /// their indexes, resolved when the table is loaded).
    DevMap(Vec<(EtherIp, String)>),
}

/// The key of the fast path's maps: a frame's `ether daddr . ip daddr`.
pub type EtherIp = (MacAddr, Ipv4Addr);

/// A base chain (policy accept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// `filter` or `nat`.
    pub kind: ChainKind,
    /// Where it hooks.
    pub hook: Hook,
    /// Its priority.
    pub priority: Priority,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// The type of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainKind {
    /// `type filter`.
    Filter,
    /// `type nat` (ip family only).
    Nat,
}

/// The hook of a base chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `hook prerouting` (ip).
    Prerouting,
    /// `hook postrouting` (ip).
    Postrouting,
    /// `hook ingress device "…"` (netdev).
    Ingress(String),
    /// `hook egress device "…"` (netdev).
    Egress(String),
}

/// A base chain's priority: a standard name or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// `raw` (−300).
    Raw,
    /// `mangle` (−150).
    Mangle,
    /// `dstnat` (−100).
    DstNat,
    /// `srcnat` (100).
    SrcNat,
    /// A number.
    Value(i32),
}

/// One rule: its statements in order (matches first, then actions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule(pub Vec<Stmt>);

/// The source or destination address field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `saddr`.
    Saddr,
    /// `daddr`.
    Daddr,
}

/// Source or destination NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// `snat`.
    Snat,
    /// `dnat`.
    Dnat,
}

/// What an address is matched against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Against<T> {
    /// One value (for IPv4, a prefix).
    Value(T),
    /// A named set (`@name`).
    Set(String),
}

/// One statement of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stmt {
    /// `ether saddr|daddr <mac>|@set` (netdev).
    Ether(Field, Against<MacAddr>),
    /// `ip saddr|daddr <prefix>|@set`.
    Ip(Field, Against<Ipv4Cidr>),
    /// `arp operation request` (netdev).
    ArpRequest,
    /// `arp daddr ip <addr>` (netdev).
    ArpTargetIp(Ipv4Addr),
    /// `udp dport <port>`.
    UdpDport(u16),
    /// `udp dport <low>-<high>` (both ends in).
    UdpDportRange(u16, u16),
    /// `ether saddr|daddr != <mac>` (netdev).
    EtherIsNot(Field, MacAddr),
    /// `iifname "<dev>"`.
    Iifname(String),
    /// `oifname "<dev>"`.
    Oifname(String),
    /// `counter`.
    Counter,
    /// `drop`.
    Drop,
    /// `accept`: the rest of this chain is skipped (a later base chain on the hook still sees
    /// the packet).
    Accept,
    /// `notrack`.
    Notrack,
    /// `ether saddr set <mac>` (netdev).
    SetEtherSaddr(MacAddr),
    /// `meta mark set <mark>`.
    SetMark(u32),
    /// `snat|dnat to ip saddr|daddr map @map` (ip).
    NatMap(Nat, Field, String),
    /// `snat|dnat to <addr>` (ip).
    NatTo(Nat, Ipv4Addr),
    /// `ip ttl <ttl>`.
    IpTtl(u8),
    /// `ip ttl set <ttl>` (the header checksum fixed up).
    SetIpTtl(u8),
    /// `ether saddr|daddr set ether daddr . ip daddr map @map` (netdev; a [`Elements::MacMap`]).
    /// A frame whose key is not in the map ends the rule before anything is written.
    SetEtherFromMap(Field, String),
    /// `fwd to ether daddr . ip daddr map @map` (netdev; a [`Elements::DevMap`]): the frame leaves
    /// by that device as it is, and the rule set ends for it.
    FwdMap(String),
}

// === impl Table ===

impl Elements {
    /// Each element as nft writes it (`a.b.c.d`, `a.b.c.d/p`, `k : v`, a MAC).
    pub fn texts(&self) -> Vec<String> {
        match self {
            Elements::Macs(v) => v.iter().map(ToString::to_string).collect(),
            Elements::Addrs(v) => v.iter().map(ToString::to_string).collect(),
            Elements::Prefixes(v) => v.iter().map(ToString::to_string).collect(),
            Elements::AddrMap(v) => v.iter().map(|(k, d)| format!("{k} : {d}")).collect(),
            Elements::MacMap(v) => v
                .iter()
                .map(|((m, ip), d)| format!("{m} . {ip} : {d}"))
                .collect(),
            Elements::DevMap(v) => v
                .iter()
                .map(|((m, ip), d)| format!("{m} . {ip} : \"{d}\""))
                .collect(),
        }
    }

    /// The same type with no elements.
    pub fn emptied(&self) -> Elements {
        match self {
            Elements::Macs(_) => Elements::Macs(Vec::new()),
            Elements::Addrs(_) => Elements::Addrs(Vec::new()),
            Elements::Prefixes(_) => Elements::Prefixes(Vec::new()),
            Elements::AddrMap(_) => Elements::AddrMap(Vec::new()),
            Elements::MacMap(_) => Elements::MacMap(Vec::new()),
            Elements::DevMap(_) => Elements::DevMap(Vec::new()),
        }
    }
}

impl Table {
    /// Checks what the printer and the compiler take on trust: names that nft reads as plain
    /// words, device names that fit a Linux interface name, rules that reference sets of the
    /// table, and statements that exist in the table's family.
    pub fn check(&self) -> Result<(), String> {
        check_word("table", &self.name)?;
        for set in &self.sets {
            check_word("set", &set.name)?;
            if let Elements::DevMap(v) = &set.elements {
                for (_, dev) in v {
                    check_ifname(dev)?;
                }
            }
        }
        for chain in &self.chains {
            check_word("chain", &chain.name)?;
            chain.check(self)?;
        }
        Ok(())
    }

    /// Every device the table names: the devices its chains hook and the devices of its maps.
    /// The kernel holds them by index, so a table naming a device made anew must be loaded anew.
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        let hooked = self.chains.iter().filter_map(|c| match &c.hook {
            Hook::Ingress(dev) | Hook::Egress(dev) => Some(dev.as_str()),
            Hook::Prerouting | Hook::Postrouting => None,
        });
        let mapped = self.sets.iter().flat_map(|s| match &s.elements {
            Elements::DevMap(v) => v.iter().map(|(_, dev)| dev.as_str()).collect(),
            _ => Vec::new(),
        });
        hooked.chain(mapped)
    }

    /// The set named `name`.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// The text `nft -f` reads, with `comment` as the table's first statement.
    pub fn text_with_comment(&self, comment: &str) -> String {
        let text = self.to_string();
        match text.split_once('\n') {
            Some((head, rest)) => format!("{head}\n\tcomment \"{comment}\"\n{rest}"),
            None => text,
        }
    }
}

impl Chain {
    fn check(&self, table: &Table) -> Result<(), String> {
        let netdev = table.family == NftFamily::Netdev;
        match &self.hook {
            Hook::Ingress(dev) | Hook::Egress(dev) if netdev => check_ifname(dev)?,
            Hook::Prerouting | Hook::Postrouting if !netdev => {}
            _ => {
                return Err(format!(
                    "chain {}: hook not in its table's family",
                    self.name
                ))
            }
        }
        if self.kind == ChainKind::Nat && netdev {
            return Err(format!(
                "chain {}: nat chains exist in ip tables only",
                self.name
            ));
        }
        for stmt in self.rules.iter().flat_map(|r| &r.0) {
            stmt.check(table)
                .map_err(|e| format!("chain {}: {e}", self.name))?;
        }
        Ok(())
    }
}

impl Stmt {
    fn check(&self, table: &Table) -> Result<(), String> {
        let netdev = table.family == NftFamily::Netdev;
        let set_of = |name: &str| {
            table
                .set(name)
                .map(|s| &s.elements)
                .ok_or_else(|| format!("no set {name}"))
        };
        match self {
            Stmt::Ether(..)
            | Stmt::EtherIsNot(..)
            | Stmt::ArpRequest
            | Stmt::ArpTargetIp(_)
            | Stmt::SetEtherSaddr(_)
            | Stmt::SetEtherFromMap(..)
            | Stmt::FwdMap(_)
                if !netdev =>
            {
                Err("link-layer statements exist in netdev tables only".into())
            }
            Stmt::NatMap(..) | Stmt::NatTo(..) if netdev => {
                Err("nat exists in ip tables only".into())
            }
            Stmt::Ether(_, Against::Set(s)) => match set_of(s)? {
                Elements::Macs(_) => Ok(()),
                _ => Err(format!("set {s} does not hold MAC addresses")),
            },
            Stmt::Ip(_, Against::Set(s)) => match set_of(s)? {
                Elements::Addrs(_) | Elements::Prefixes(_) => Ok(()),
                _ => Err(format!("set {s} does not hold IPv4 addresses")),
            },
            Stmt::NatMap(_, _, m) => match set_of(m)? {
                Elements::AddrMap(_) => Ok(()),
                _ => Err(format!("{m} is not an address map")),
            },
            Stmt::SetEtherFromMap(_, m) => match set_of(m)? {
                Elements::MacMap(_) => Ok(()),
                _ => Err(format!("{m} is not a map to MAC addresses")),
            },
            Stmt::FwdMap(m) => match set_of(m)? {
                Elements::DevMap(_) => Ok(()),
                _ => Err(format!("{m} is not a map to devices")),
            },
            Stmt::Ip(_, Against::Value(p)) if p.prefix() == 0 => {
                Err("a /0 match matches everything; leave it out".into())
            }
            Stmt::UdpDportRange(low, high) if low >= high => {
                Err(format!("udp dport {low}-{high} is not a range"))
            }
            Stmt::Iifname(dev) | Stmt::Oifname(dev) => check_ifname(dev),
            _ => Ok(()),
        }
    }
}

/// A name nft reads as one plain word.
fn check_word(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} name {name:?} is not a plain nft word"))
    }
}

/// A device name that fits a Linux interface name and needs no escaping inside quotes.
fn check_ifname(dev: &str) -> Result<(), String> {
    let ok = !dev.is_empty()
        && dev.len() <= MAX_IFNAME
        && dev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("device name {dev:?} is not a Linux interface name"))
    }
}

// === the printer ===

impl serde::Serialize for Table {
    /// As its text.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table {} {} {{", self.family.keyword(), self.name)?;
        for set in &self.sets {
            writeln!(f, "  {set}")?;
        }
        for chain in &self.chains {
            write!(f, "{chain}")?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (keyword, spec) = match &self.elements {
            Elements::Macs(_) => ("set", "type ether_addr;"),
            Elements::Addrs(_) => ("set", "type ipv4_addr;"),
            Elements::Prefixes(_) => ("set", "type ipv4_addr; flags interval;"),
            Elements::AddrMap(_) => ("map", "type ipv4_addr : ipv4_addr;"),
            Elements::MacMap(_) => ("map", "type ether_addr . ipv4_addr : ether_addr;"),
            Elements::DevMap(_) => ("map", "type ether_addr . ipv4_addr : iface_index;"),
        };
        let items = self.elements.texts();
        write!(f, "{keyword} {} {{ {spec}", self.name)?;
        if !items.is_empty() {
            write!(f, " elements = {{ {} }};", items.join(", "))?;
        }
        write!(f, " }}")
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        };
        let hook = match &self.hook {
            Hook::Prerouting => "prerouting".to_string(),
            Hook::Postrouting => "postrouting".to_string(),
            Hook::Ingress(dev) => format!("ingress device \"{dev}\""),
            Hook::Egress(dev) => format!("egress device \"{dev}\""),
        };
        writeln!(f, "  chain {} {{", self.name)?;
        writeln!(
            f,
            "    type {kind} hook {hook} priority {}; policy accept;",
            self.priority
        )?;
        for rule in &self.rules {
            writeln!(f, "    {rule}")?;
        }
        writeln!(f, "  }}")
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priority::Raw => f.write_str("raw"),
            Priority::Mangle => f.write_str("mangle"),
            Priority::DstNat => f.write_str("dstnat"),
            Priority::SrcNat => f.write_str("srcnat"),
            Priority::Value(v) => write!(f, "{v}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&words.join(" "))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Saddr => "saddr",
            Field::Daddr => "daddr",
        })
    }
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Nat::Snat => "snat",
            Nat::Dnat => "dnat",
        })
    }
}

impl<T: fmt::Display> fmt::Display for Against<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Against::Value(v) => write!(f, "{v}"),
            Against::Set(s) => write!(f, "@{s}"),
        }
    }
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::Ether(field, what) => write!(f, "ether {field} {what}"),
            Stmt::Ip(field, what) => write!(f, "ip {field} {what}"),
            Stmt::ArpRequest => f.write_str("arp operation request"),
            Stmt::ArpTargetIp(ip) => write!(f, "arp daddr ip {ip}"),
            Stmt::UdpDport(port) => write!(f, "udp dport {port}"),
            Stmt::UdpDportRange(low, high) => write!(f, "udp dport {low}-{high}"),
            Stmt::EtherIsNot(field, mac) => write!(f, "ether {field} != {mac}"),
            Stmt::Iifname(dev) => write!(f, "iifname \"{dev}\""),
            Stmt::Oifname(dev) => write!(f, "oifname \"{dev}\""),
            Stmt::Counter => f.write_str("counter"),
            Stmt::Drop => f.write_str("drop"),
            Stmt::Accept => f.write_str("accept"),
            Stmt::Notrack => f.write_str("notrack"),
            Stmt::SetEtherSaddr(mac) => write!(f, "ether saddr set {mac}"),
            Stmt::SetMark(mark) => write!(f, "meta mark set {mark:#x}"),
            Stmt::NatMap(nat, field, map) => write!(f, "{nat} to ip {field} map @{map}"),
            Stmt::NatTo(nat, addr) => write!(f, "{nat} to {addr}"),
            Stmt::IpTtl(ttl) => write!(f, "ip ttl {ttl}"),
            Stmt::SetIpTtl(ttl) => write!(f, "ip ttl set {ttl}"),
            Stmt::SetEtherFromMap(field, map) => {
                write!(f, "ether {field} set ether daddr . ip daddr map @{map}")
            }
            Stmt::FwdMap(map) => write!(f, "fwd to ether daddr . ip daddr map @{map}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("mac")
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().expect("cidr")
    }

    fn vxlan() -> Table {
        Table {
            family: NftFamily::Netdev,
            name: "dvrmesh_vx7".into(),
            sets: vec![Set {
                name: "remote_dvr".into(),
                elements: Elements::Macs(vec![mac("fa:16:3f:00:00:02")]),
            }],
            chains: vec![Chain {
                name: "in".into(),
                kind: ChainKind::Filter,
                hook: Hook::Ingress("vx-7".into()),
                priority: Priority::Value(0),
                rules: vec![Rule(vec![
                    Stmt::Ether(Field::Saddr, Against::Set("remote_dvr".into())),
                    Stmt::Ip(Field::Daddr, Against::Value(cidr("10.0.1.0/24"))),
                    Stmt::Counter,
                    Stmt::SetEtherSaddr(mac("fa:16:3d:00:00:01")),
                ])],
            }],
        }
    }

    #[test]
    fn prints_the_text_nft_reads() {
        assert_eq!(
            vxlan().to_string(),
            "table netdev dvrmesh_vx7 {\n  set remote_dvr { type ether_addr; elements = { fa:16:3f:00:00:02 }; }\n  chain in {\n    type filter hook ingress device \"vx-7\" priority 0; policy accept;\n    ether saddr @remote_dvr ip daddr 10.0.1.0/24 counter ether saddr set fa:16:3d:00:00:01\n  }\n}\n"
        );
        let map = Set {
            name: "fip_dnat".into(),
            elements: Elements::AddrMap(vec![(
                "203.0.113.5".parse().expect("ip"),
                "10.0.0.5".parse().expect("ip"),
            )]),
        };
        assert_eq!(
            map.to_string(),
            "map fip_dnat { type ipv4_addr : ipv4_addr; elements = { 203.0.113.5 : 10.0.0.5 }; }"
        );
        let empty = Set {
            name: "s".into(),
            elements: Elements::Prefixes(vec![]),
        };
        assert_eq!(
            empty.to_string(),
            "set s { type ipv4_addr; flags interval; }"
        );
    }

    #[test]
    fn the_comment_is_the_first_statement_of_the_table() {
        let text = vxlan().text_with_comment("dvrmesh:00ff");
        assert!(text.starts_with("table netdev dvrmesh_vx7 {\n\tcomment \"dvrmesh:00ff\"\n  set"));
    }

    #[test]
    fn check_refuses_what_nft_would_misread_or_the_family_lacks() {
        assert_eq!(vxlan().check(), Ok(()));
        let mut t = vxlan();
        t.chains[0].hook = Hook::Ingress("vx-7\" ; delete table ip filter".into());
        assert!(t.check().is_err(), "a quote in a device name");
        let mut t = vxlan();
        t.name = "dvrmesh x".into();
        assert!(t.check().is_err(), "a blank in a table name");
        let mut t = vxlan();
        t.chains[0].rules[0].0[0] = Stmt::Ether(Field::Saddr, Against::Set("nope".into()));
        assert!(t.check().is_err(), "a rule naming a set the table lacks");
        let mut t = vxlan();
        t.chains[0].rules[0]
            .0
            .push(Stmt::NatTo(Nat::Snat, "1.2.3.4".parse().expect("ip")));
        assert!(t.check().is_err(), "nat in a netdev table");
        let mut t = vxlan();
        t.family = NftFamily::Ip;
        assert!(t.check().is_err(), "a netdev hook in an ip table");
    }
}
