//! Compiles the nft text the planner writes into [`Table`]s for [`super::nft_wire`].
//!
//! Only the dialect of `plan::nft` is understood: `set`/`map` of `ipv4_addr`/`ether_addr` (with
//! `flags interval`), base chains with `type … hook … [device "…"] priority …; policy …;`, and
//! rules made of the phrases listed at [`compile_rule`]. Anything else is refused with a reason,
//! and the caller hands the text to libnftables instead, so any valid nft still works, only
//! slower. Implicit dependencies are added the way nft adds them (`meta iiftype ether` before the
//! first `ether` field of a netdev rule; then `ether type`, or `meta protocol` when no `ether`
//! field came first, before an `ip` or `arp` field).

use std::net::Ipv4Addr;

use super::nft_wire::{Base, Chain, DataType, Element, Expr, Hook, Set, Table};
use crate::NftFamily;

/// `NFT_META_PROTOCOL`, `NFT_META_MARK`, `NFT_META_IIFNAME`, `NFT_META_OIFNAME`,
/// `NFT_META_IIFTYPE`.
const META_PROTOCOL: u32 = 1;
const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_IIFTYPE: u32 = 8;
/// `ARPHRD_ETHER`, host order, as `meta iiftype` holds it.
const ARPHRD_ETHER: [u8; 2] = 1u16.to_ne_bytes();
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_ARP: [u8; 2] = [0x08, 0x06];
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// Compiles one whole table. `comment` replaces any comment in the text.
pub(crate) fn compile(text: &str, comment: Option<String>) -> Result<Table, String> {
    let toks = tokenize(text)?;
    let mut p = Parser { toks, pos: 0 };
    p.expect("table")?;
    let family = match p.word()? {
        "ip" => NftFamily::Ip,
        "netdev" => NftFamily::Netdev,
        other => return Err(format!("family {other} is not compiled")),
    };
    let name = p.word()?.to_string();
    p.expect("{")?;
    let mut table = Table {
        family,
        name,
        comment: None,
        sets: Vec::new(),
        chains: Vec::new(),
    };
    loop {
        p.skip_separators();
        match p.word()? {
            "}" => break,
            "comment" => table.comment = Some(p.quoted()?),
            "set" => table.sets.push(p.set(false)?),
            "map" => table.sets.push(p.set(true)?),
            "chain" => {
                let chain = p.chain(family)?;
                table.chains.push(chain);
            }
            other => return Err(format!("unexpected `{other}` in table")),
        }
    }
    p.skip_separators();
    if p.pos != p.toks.len() {
        return Err("text after the table".into());
    }
    if let Some(c) = comment {
        table.comment = Some(c);
    }
    if table.comment.as_ref().is_some_and(|c| c.len() > 127) {
        return Err("comment too long".into());
    }
    Ok(table)
}

/// Splits into words, quoted strings (kept with their quotes), newlines (`\n`) and the
/// punctuation `{ } ; , =`. A `:` is a token of its own only between blanks (MAC addresses
/// contain colons).
fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                flush(&mut word, &mut out);
                let mut s = String::from('"');
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\n') | None => return Err("unterminated string".into()),
                        Some(c) => s.push(c),
                    }
                }
                s.push('"');
                out.push(s);
            }
            '#' => return Err("comments are not compiled".into()),
            '\n' => {
                flush(&mut word, &mut out);
                out.push("\n".into());
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            '{' | '}' | ';' | ',' | '=' => {
                flush(&mut word, &mut out);
                out.push(c.to_string());
            }
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

struct Parser {
    toks: Vec<String>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }

    fn word(&mut self) -> Result<&str, String> {
        let t = self
            .toks
            .get(self.pos)
            .ok_or_else(|| "unexpected end of text".to_string())?;
        self.pos += 1;
        Ok(t.as_str())
    }

    fn expect(&mut self, want: &str) -> Result<(), String> {
        match self.word()? {
            w if w == want => Ok(()),
            w => Err(format!("expected `{want}`, found `{w}`")),
        }
    }

    fn quoted(&mut self) -> Result<String, String> {
        let w = self.word()?;
        w.strip_prefix('"')
            .and_then(|w| w.strip_suffix('"'))
            .map(str::to_string)
            .ok_or_else(|| format!("expected a quoted string, found `{w}`"))
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some("\n" | ";")) {
            self.pos += 1;
        }
    }

    /// The words of one statement: up to a `;`, a newline or a `}` (not consumed).
    fn statement(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            if matches!(t, "\n" | ";" | "}") {
                break;
            }
            out.push(t.to_string());
            self.pos += 1;
        }
        out
    }

    /// `<name> { type K [: V]; [flags interval;] [elements = { … };] }`.
    fn set(&mut self, map: bool) -> Result<Set, String> {
        let name = self.word()?.to_string();
        check_name(&name)?;
        self.expect("{")?;
        let (mut key, mut data, mut interval, mut raw) = (None, None, false, Vec::new());
        loop {
            self.skip_separators();
            match self.word()? {
                "}" => break,
                "type" => {
                    key = Some(data_type(self.word()?)?);
                    if map {
                        self.expect(":")?;
                        data = Some(data_type(self.word()?)?);
                    }
                }
                "flags" => match self.word()? {
                    "interval" => interval = true,
                    f => return Err(format!("set flag {f} is not compiled")),
                },
                "elements" => {
                    self.expect("=")?;
                    self.expect("{")?;
                    loop {
                        while self.peek() == Some("\n") {
                            self.pos += 1;
                        }
                        let item = self.statement_until_comma()?;
                        if !item.is_empty() {
                            raw.push(item);
                        }
                        match self.word()? {
                            "," => {}
                            "}" => break,
                            "\n" => {}
                            t => return Err(format!("unexpected `{t}` in elements")),
                        }
                    }
                }
                other => return Err(format!("unexpected `{other}` in set {name}")),
            }
        }
        let key = key.ok_or_else(|| format!("set {name} has no type"))?;
        if interval && (map || key != DataType::Ipv4) {
            return Err("only ipv4_addr interval sets are compiled".into());
        }
        let mut elements = Vec::new();
        for item in raw {
            elements.push(element(&item, key, data, interval)?);
        }
        if interval {
            elements.sort_by(|a, b| a.key.cmp(&b.key));
            for pair in elements.windows(2) {
                match &pair[0].end {
                    Some(end) if *end <= pair[1].key => {}
                    _ => return Err(format!("overlapping intervals in set {name}")),
                }
            }
        }
        Ok(Set {
            name,
            key,
            data,
            interval,
            elements,
        })
    }

    /// Words up to a `,`, `}` or newline (not consumed).
    fn statement_until_comma(&mut self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            if matches!(t, "," | "}" | "\n") {
                return Ok(out);
            }
            out.push(t.to_string());
            self.pos += 1;
        }
        Err("unterminated elements".into())
    }

    fn chain(&mut self, family: NftFamily) -> Result<Chain, String> {
        let name = self.word()?.to_string();
        check_name(&name)?;
        self.expect("{")?;
        let mut chain = Chain {
            name,
            hook: None,
            rules: Vec::new(),
        };
        loop {
            self.skip_separators();
            if self.peek() == Some("}") {
                self.pos += 1;
                break;
            }
            let words = self.statement();
            if words.is_empty() {
                return Err("unexpected end of chain".into());
            }
            let w: Vec<&str> = words.iter().map(String::as_str).collect();
            match w[0] {
                "type" => chain.hook = Some(hook(&w, family)?),
                "policy" => {
                    let hook = chain
                        .hook
                        .as_mut()
                        .ok_or_else(|| "policy on a chain without a hook".to_string())?;
                    hook.accept = match w.get(1..) {
                        Some(["accept"]) => true,
                        Some(["drop"]) => false,
                        _ => return Err("bad policy".into()),
                    };
                }
                _ => chain.rules.push(compile_rule(&w, family)?),
            }
        }
        Ok(chain)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("name {name:?} is not compiled"));
    }
    Ok(())
}

fn data_type(w: &str) -> Result<DataType, String> {
    match w {
        "ipv4_addr" => Ok(DataType::Ipv4),
        "ether_addr" => Ok(DataType::Ether),
        other => Err(format!("type {other} is not compiled")),
    }
}

fn element(
    item: &[String],
    key: DataType,
    data: Option<DataType>,
    interval: bool,
) -> Result<Element, String> {
    let words: Vec<&str> = item.iter().map(String::as_str).collect();
    let (k, d) = match (&words[..], data) {
        ([k], None) => (*k, None),
        ([k, ":", v], Some(dt)) => (*k, Some(value(v, dt)?)),
        _ => return Err(format!("element `{}` is not compiled", words.join(" "))),
    };
    if interval {
        let (net, prefix) = cidr(k)?;
        if prefix == 0 {
            return Err("a /0 interval is not compiled".into());
        }
        let start = u32::from(net);
        let size = 1u64 << (32 - prefix);
        let end = u64::from(start) + size;
        return Ok(Element {
            key: start.to_be_bytes().to_vec(),
            end: u32::try_from(end).ok().map(|e| e.to_be_bytes().to_vec()),
            data: d,
        });
    }
    Ok(Element {
        key: value(k, key)?,
        end: None,
        data: d,
    })
}

fn value(w: &str, t: DataType) -> Result<Vec<u8>, String> {
    match t {
        DataType::Ipv4 => w
            .parse::<Ipv4Addr>()
            .map(|a| a.octets().to_vec())
            .map_err(|_| format!("bad address {w}")),
        DataType::Ether => mac(w).map(|m| m.to_vec()),
    }
}

fn mac(w: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = w.split(':').collect();
    let mut out = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("bad MAC {w}"));
    }
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(format!("bad MAC {w}"));
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {w}"))?;
    }
    Ok(out)
}

/// `a.b.c.d` or `a.b.c.d/p` (host bits must be zero).
fn cidr(w: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = match w.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().map_err(|_| format!("bad prefix {w}"))?),
        None => (w, 32),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("bad address {w}"))?;
    if prefix > 32 {
        return Err(format!("bad prefix {w}"));
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    if u32::from(addr) & !mask != 0 {
        return Err(format!("{w} has host bits set"));
    }
    Ok((addr, prefix))
}

/// `type <filter|nat> hook <hook> [device "<dev>"] priority <p>`.
fn hook(w: &[&str], family: NftFamily) -> Result<Hook, String> {
    let (chain_type, hook_name, rest) = match w {
        ["type", t @ ("filter" | "nat"), "hook", h, rest @ ..] => (*t, *h, rest),
        _ => return Err(format!("chain spec `{}` is not compiled", w.join(" "))),
    };
    let hooknum = match (family, hook_name) {
        (NftFamily::Ip, "prerouting") => 0,
        (NftFamily::Ip, "input") => 1,
        (NftFamily::Ip, "forward") => 2,
        (NftFamily::Ip, "output") => 3,
        (NftFamily::Ip, "postrouting") => 4,
        (NftFamily::Netdev, "ingress") => 0,
        (NftFamily::Netdev, "egress") => 1,
        _ => return Err(format!("hook {hook_name} is not compiled")),
    };
    let (device, rest) = match rest {
        ["device", dev, rest @ ..] => {
            let dev = dev
                .strip_prefix('"')
                .and_then(|d| d.strip_suffix('"'))
                .unwrap_or(dev);
            if dev.is_empty() || dev.len() >= IFNAMSIZ {
                return Err(format!("bad device {dev}"));
            }
            (Some(dev.to_string()), rest)
        }
        _ => (None, rest),
    };
    if (family == NftFamily::Netdev) != device.is_some() {
        return Err("a netdev chain needs a device, and only it".into());
    }
    if chain_type == "nat" && family != NftFamily::Ip {
        return Err("nat chains are compiled for ip only".into());
    }
    let priority = match rest {
        ["priority", p] => match *p {
            "raw" => -300,
            "mangle" => -150,
            "dstnat" => -100,
            "filter" => 0,
            "security" => 50,
            "srcnat" => 100,
            n => n.parse::<i32>().map_err(|_| format!("priority {n}"))?,
        },
        _ => return Err(format!("chain spec `{}` is not compiled", w.join(" "))),
    };
    Ok(Hook {
        chain_type: if chain_type == "nat" { "nat" } else { "filter" },
        hooknum,
        priority,
        device,
        accept: true,
    })
}

/// What a rule has matched so far, for nft's implicit dependencies.
#[derive(Default)]
struct Deps {
    ether: bool,
    l3: Option<[u8; 2]>,
}

impl Deps {
    fn ether(&mut self, family: NftFamily, out: &mut Vec<Expr>) -> Result<(), String> {
        if family != NftFamily::Netdev {
            return Err("ether fields are compiled in netdev tables only".into());
        }
        if !self.ether {
            out.push(Expr::MetaLoad(META_IIFTYPE));
            out.push(Expr::CmpEq(ARPHRD_ETHER.to_vec()));
            self.ether = true;
        }
        Ok(())
    }

    fn l3(&mut self, family: NftFamily, proto: [u8; 2], out: &mut Vec<Expr>) -> Result<(), String> {
        match (family, proto) {
            (NftFamily::Ip, ETH_P_IP) => return Ok(()),
            (NftFamily::Ip, _) => return Err("arp fields are not compiled in ip tables".into()),
            _ => {}
        }
        match self.l3 {
            Some(p) if p == proto => return Ok(()),
            Some(_) => return Err("a rule matching two protocols".into()),
            None => {}
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
        Ok(())
    }
}

/// Compiles one rule made of these phrases:
/// `ether saddr|daddr @set|MAC`, `ether saddr|daddr set MAC`, `ip saddr|daddr @set|ADDR[/P]`,
/// `arp operation request|reply`, `arp saddr|daddr ip ADDR`, `iifname|oifname "NAME"`,
/// `counter`, `accept`, `drop`, `notrack`, `meta mark set N`,
/// `dnat|snat to ip daddr|saddr map @map`, `dnat|snat to ADDR`.
fn compile_rule(w: &[&str], family: NftFamily) -> Result<Vec<Expr>, String> {
    let mut out = Vec::new();
    let mut deps = Deps::default();
    let mut rest = w;
    let unsupported = |w: &[&str]| format!("rule phrase `{}` is not compiled", w.join(" "));
    while !rest.is_empty() {
        rest = match rest {
            ["ether", field @ ("saddr" | "daddr"), tail @ ..] => {
                deps.ether(family, &mut out)?;
                let offset = if *field == "daddr" { 0 } else { 6 };
                let at = Expr::PayloadLoad {
                    base: Base::Link,
                    offset,
                    len: 6,
                };
                match tail {
                    ["set", m, tail @ ..] => {
                        out.push(Expr::Immediate(mac(m)?.to_vec()));
                        out.push(Expr::PayloadWrite {
                            base: Base::Link,
                            offset,
                            len: 6,
                        });
                        tail
                    }
                    [set, tail @ ..] if set.starts_with('@') => {
                        out.push(at);
                        out.push(lookup(set, false)?);
                        tail
                    }
                    [m, tail @ ..] => {
                        out.push(at);
                        out.push(Expr::CmpEq(mac(m)?.to_vec()));
                        tail
                    }
                    [] => return Err(unsupported(rest)),
                }
            }
            ["ip", field @ ("saddr" | "daddr"), v, tail @ ..] => {
                deps.l3(family, ETH_P_IP, &mut out)?;
                let offset = if *field == "saddr" { 12 } else { 16 };
                if v.starts_with('@') {
                    out.push(Expr::PayloadLoad {
                        base: Base::Network,
                        offset,
                        len: 4,
                    });
                    out.push(lookup(v, false)?);
                } else {
                    prefix_match(v, offset, &mut out)?;
                }
                tail
            }
            ["arp", "operation", op @ ("request" | "reply"), tail @ ..] => {
                deps.l3(family, ETH_P_ARP, &mut out)?;
                out.push(Expr::PayloadLoad {
                    base: Base::Network,
                    offset: 6,
                    len: 2,
                });
                let code: u16 = if *op == "request" { 1 } else { 2 };
                out.push(Expr::CmpEq(code.to_be_bytes().to_vec()));
                tail
            }
            ["arp", field @ ("saddr" | "daddr"), "ip", v, tail @ ..] => {
                deps.l3(family, ETH_P_ARP, &mut out)?;
                let offset = if *field == "saddr" { 14 } else { 24 };
                prefix_match(v, offset, &mut out)?;
                tail
            }
            [key @ ("iifname" | "oifname"), name, tail @ ..] => {
                let name = name
                    .strip_prefix('"')
                    .and_then(|n| n.strip_suffix('"'))
                    .ok_or_else(|| unsupported(rest))?;
                if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('*') {
                    return Err(format!("interface name {name:?} is not compiled"));
                }
                out.push(Expr::MetaLoad(if *key == "iifname" {
                    META_IIFNAME
                } else {
                    META_OIFNAME
                }));
                let mut padded = name.as_bytes().to_vec();
                padded.resize(IFNAMSIZ, 0);
                out.push(Expr::CmpEq(padded));
                tail
            }
            ["counter", tail @ ..] => {
                out.push(Expr::Counter);
                tail
            }
            ["accept", tail @ ..] => {
                out.push(Expr::Verdict(1));
                tail
            }
            ["drop", tail @ ..] => {
                out.push(Expr::Verdict(0));
                tail
            }
            ["notrack", tail @ ..] => {
                out.push(Expr::Notrack);
                tail
            }
            ["meta", "mark", "set", v, tail @ ..] => {
                let mark = match v.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => v.parse::<u32>(),
                }
                .map_err(|_| format!("bad mark {v}"))?;
                out.push(Expr::Immediate(mark.to_ne_bytes().to_vec()));
                out.push(Expr::MetaSet(META_MARK));
                tail
            }
            [kind @ ("dnat" | "snat"), "to", tail @ ..] => {
                if family != NftFamily::Ip {
                    return Err("nat is compiled in ip tables only".into());
                }
                let dnat = *kind == "dnat";
                match tail {
                    ["ip", field @ ("saddr" | "daddr"), "map", m, tail @ ..] => {
                        let offset = if *field == "saddr" { 12 } else { 16 };
                        out.push(Expr::PayloadLoad {
                            base: Base::Network,
                            offset,
                            len: 4,
                        });
                        out.push(lookup(m, true)?);
                        out.push(Expr::Nat { dnat });
                        tail
                    }
                    [addr, tail @ ..] => {
                        let a: Ipv4Addr = addr.parse().map_err(|_| unsupported(rest))?;
                        out.push(Expr::Immediate(a.octets().to_vec()));
                        out.push(Expr::Nat { dnat });
                        tail
                    }
                    [] => return Err(unsupported(rest)),
                }
            }
            _ => return Err(unsupported(rest)),
        };
    }
    Ok(out)
}

fn lookup(w: &str, map: bool) -> Result<Expr, String> {
    let set = w
        .strip_prefix('@')
        .ok_or_else(|| format!("expected @set, found {w}"))?;
    check_name(set)?;
    Ok(Expr::Lookup {
        set: set.to_string(),
        map,
    })
}

/// Matches the 4-byte field at network `offset` against an address or prefix, as nft does: the
/// whole bytes of the prefix, masked when it ends inside a byte.
fn prefix_match(v: &str, offset: u32, out: &mut Vec<Expr>) -> Result<(), String> {
    let (addr, prefix) = cidr(v)?;
    if prefix == 0 {
        return Err("a /0 match is not compiled".into());
    }
    let bytes = u32::from(prefix).div_ceil(8);
    out.push(Expr::PayloadLoad {
        base: Base::Network,
        offset,
        len: bytes,
    });
    let value = addr.octets()[..bytes as usize].to_vec();
    if prefix % 8 != 0 {
        let mask = (u32::MAX << (32 - prefix)).to_be_bytes()[..bytes as usize].to_vec();
        out.push(Expr::Mask(mask));
    }
    out.push(Expr::CmpEq(value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_a_netdev_rule_with_nfts_dependencies() {
        let t = compile(
            "table netdev dvrmesh-v {\n  set remote_dvr { type ether_addr; elements = { fa:16:3f:00:00:01 }; }\n  chain in {\n    type filter hook ingress device \"vx1\" priority 0; policy accept;\n    ether saddr @remote_dvr ip daddr 10.0.1.0/24 counter ether saddr set fa:16:3e:00:00:01\n  }\n  chain out {\n    type filter hook egress device \"vx1\" priority 0; policy accept;\n    arp operation request arp daddr ip 10.0.1.1 drop\n  }\n}\n",
            Some("dvrmesh:1".into()),
        )
        .unwrap();
        assert_eq!(t.comment.as_deref(), Some("dvrmesh:1"));
        assert_eq!(t.sets[0].elements[0].key, vec![0xfa, 0x16, 0x3f, 0, 0, 1]);
        let hook = t.chains[0].hook.as_ref().unwrap();
        assert_eq!((hook.hooknum, hook.device.as_deref()), (0, Some("vx1")));
        assert_eq!(
            t.chains[0].rules[0],
            vec![
                Expr::MetaLoad(META_IIFTYPE),
                Expr::CmpEq(ARPHRD_ETHER.to_vec()),
                Expr::PayloadLoad {
                    base: Base::Link,
                    offset: 6,
                    len: 6
                },
                Expr::Lookup {
                    set: "remote_dvr".into(),
                    map: false
                },
                Expr::PayloadLoad {
                    base: Base::Link,
                    offset: 12,
                    len: 2
                },
                Expr::CmpEq(vec![8, 0]),
                Expr::PayloadLoad {
                    base: Base::Network,
                    offset: 16,
                    len: 3
                },
                Expr::CmpEq(vec![10, 0, 1]),
                Expr::Counter,
                Expr::Immediate(vec![0xfa, 0x16, 0x3e, 0, 0, 1]),
                Expr::PayloadWrite {
                    base: Base::Link,
                    offset: 6,
                    len: 6
                },
            ]
        );
        assert_eq!(t.chains[1].rules[0][0], Expr::MetaLoad(META_PROTOCOL));
        assert_eq!(t.chains[1].rules[0][1], Expr::CmpEq(vec![8, 6]));
    }

    #[test]
    fn interval_sets_become_sorted_ranges_and_overlaps_are_refused() {
        let t = compile(
            "table ip dvrmesh-q { set s { type ipv4_addr; flags interval; elements = { 10.0.2.0/23, 10.0.1.0/24, 255.255.255.0/24 }; } }",
            None,
        )
        .unwrap();
        let e = &t.sets[0].elements;
        assert_eq!(e[0].key, vec![10, 0, 1, 0]);
        assert_eq!(e[0].end, Some(vec![10, 0, 2, 0]));
        assert_eq!(e[1].end, Some(vec![10, 0, 4, 0]));
        assert_eq!(e[2].end, None, "a range to the top has no end element");
        assert!(compile(
            "table ip dvrmesh-q { set s { type ipv4_addr; flags interval; elements = { 10.0.0.0/16, 10.0.1.0/24 }; } }",
            None
        )
        .is_err());
        assert!(compile(
            "table ip dvrmesh-q { set s { type ipv4_addr; flags interval; elements = { 10.0.1.1/24 }; } }",
            None
        )
        .is_err());
    }

    #[test]
    fn anything_outside_the_dialect_is_refused_not_guessed() {
        for text in [
            "table inet dvrmesh-x { }",
            "table ip dvrmesh-x { chain c { tcp dport 22 accept } }",
            "table ip dvrmesh-x { chain c { ether saddr 00:00:00:00:00:01 } }",
            "table ip dvrmesh-x { chain c { ip daddr 0.0.0.0/0 accept } }",
            "table ip dvrmesh-x { chain c { iifname \"eth*\" accept } }",
            "table ip dvrmesh-x { chain c { type filter hook ingress priority 0; } }",
            "table netdev dvrmesh-x { chain c { type nat hook ingress device \"a\" priority 0; } }",
            "table ip dvrmesh-x { chain c { accept } } table ip other { }",
            "table ip dvrmesh-x { chain c { accept # x\n } }",
            "table ip dvrmesh-x { set s { type ipv4_addr; elements = { 10.0.0.1/24 }; } }",
            "table ip dvrmesh-x { chain c { snat to 1.2.3 } }",
            "table ip dvrmesh-x { chain c {",
        ] {
            assert!(compile(text, None).is_err(), "{text}");
        }
    }
}
