//! nftables tables as nfnetlink messages: what `nft -f` would send for the tables the planner
//! writes, built here directly so that a pass needs neither the nft parser nor its cache dumps.
//!
//! [`Table`] is the compiled form of one table (see `nft_text` for the dialect it is compiled
//! from); [`Batch`] turns deletions and tables into one atomic nfnetlink batch, sent with
//! [`super::socket::Conn::nft_batch`]. Every expression uses register 1 and the verdict register,
//! as nft does for these rule shapes.

use crate::NftFamily;

/// `NFNL_SUBSYS_NFTABLES`.
const SUBSYS: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;

const NLA_F_NESTED: u16 = 0x8000;
/// `NLM_F_CREATE`.
const CREATE: u16 = 0x400;
/// `NLM_F_APPEND`: rules go after the chain's last rule, in the order given.
const APPEND: u16 = 0x800;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_NETDEV: u8 = 5;

/// Register 1 (128 bits) and the verdict register.
const REG_1: u32 = 1;
/// The 32-bit register 8 bytes into register 1 (`NFT_REG32_02`): where the second part of an
/// `ether_addr . ipv4_addr` key goes, the first padded to 8 bytes.
const REG32_02: u32 = 10;
const REG_VERDICT: u32 = 0;

/// `NFT_SET_INTERVAL`, `NFT_SET_MAP`.
const SET_INTERVAL: u32 = 0x4;
const SET_MAP: u32 = 0x8;
/// `NFT_SET_ELEM_INTERVAL_END`.
const ELEM_INTERVAL_END: u32 = 0x1;
/// libnftnl set user data: key and data byte order, and whether map data are intervals.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
/// nft's `BYTEORDER_HOST_ENDIAN` and `BYTEORDER_BIG_ENDIAN`.
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// libnftnl table user data: the comment.
const UDATA_TABLE_COMMENT: u8 = 0;

/// A value type of nft sets and maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    /// `ipv4_addr` (nft type 7, 4 bytes, network order).
    Ipv4,
    /// `ether_addr` (nft type 9, 6 bytes).
    Ether,
    /// `ether_addr . ipv4_addr` (a concatenation: the MAC padded to 8 bytes, then the address).
    EtherIpv4,
    /// `iface_index` (nft type 20, 4 bytes, host order).
    IfIndex,
}

impl DataType {
    fn id(self) -> u32 {
        match self {
            DataType::Ipv4 => 7,
            DataType::Ether => 9,
            // nft's concatenated type: each part's type shifted in, 6 bits a part.
            DataType::EtherIpv4 => (9 << 6) | 7,
            DataType::IfIndex => 20,
        }
    }

    pub(crate) fn len(self) -> usize {
        match self {
            DataType::Ipv4 => 4,
            DataType::Ether => 6,
            DataType::EtherIpv4 => 12,
            DataType::IfIndex => 4,
        }
    }
}

/// One element: a key (or, in an interval set, a range `[key, end)`; `end` is `None` when the
/// range runs to the top of the key space), and a map's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) key: Vec<u8>,
    pub(crate) end: Option<Vec<u8>>,
    pub(crate) data: Option<Vec<u8>>,
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Set {
    pub(crate) name: String,
    pub(crate) key: DataType,
    /// The data type of a map.
    pub(crate) data: Option<DataType>,
    pub(crate) interval: bool,
    pub(crate) elements: Vec<Element>,
}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hook {
    /// `filter` or `nat`.
    pub(crate) chain_type: &'static str,
    pub(crate) hooknum: u32,
    pub(crate) priority: i32,
    /// The device of a netdev hook.
    pub(crate) device: Option<String>,
    /// `policy accept` (else drop).
    pub(crate) accept: bool,
}

/// A chain and its rules, each a list of expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) name: String,
    pub(crate) hook: Option<Hook>,
    pub(crate) rules: Vec<Vec<Expr>>,
}

/// A table as the kernel keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) family: NftFamily,
    pub(crate) name: String,
    pub(crate) comment: Option<String>,
    pub(crate) sets: Vec<Set>,
    pub(crate) chains: Vec<Chain>,
}

/// Where a payload expression reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    Link,
    Network,
    Transport,
}

/// A comparison other than equality (`enum nft_cmp_ops`; the data compared as big-endian
/// bytes, as nft writes ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Neq = 1,
    Lte = 3,
    Gte = 5,
}

/// One nftables VM expression (register 1 implied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// `meta load <key> => reg 1`.
    MetaLoad(u32),
    /// `meta set <key> with reg 1`.
    MetaSet(u32),
    /// `payload load <len>b @ <base> + <offset> => reg 1`.
    PayloadLoad { base: Base, offset: u32, len: u32 },
    /// `payload load <len>b @ <base> + <offset> => reg 10`: the second part of a concatenated key.
    PayloadLoadTail { base: Base, offset: u32, len: u32 },
    /// `payload write reg 1 => <len>b @ <base> + <offset>`; with `csum`, the internet checksum
    /// at that network offset fixed up.
    PayloadWrite {
        base: Base,
        offset: u32,
        len: u32,
        csum: Option<u32>,
    },
    /// `cmp eq reg 1 <data>`.
    CmpEq(Vec<u8>),
    /// `cmp neq|lte|gte reg 1 <data>`.
    Cmp(CmpOp, Vec<u8>),
    /// `bitwise reg 1 = (reg 1 & mask) ^ 0`.
    Mask(Vec<u8>),
    /// `bitwise reg 1 = (reg 1 & mask) ^ xor` (`mask` and `xor` of one length).
    MaskXor { mask: Vec<u8>, xor: Vec<u8> },
    /// `fwd sreg_dev 1`: out by the device whose index register 1 holds.
    Fwd,
    /// `lookup reg 1 set <name>`, with `dreg 1` for a map.
    Lookup { set: String, map: bool },
    /// `immediate reg 1 <data>`.
    Immediate(Vec<u8>),
    /// `immediate reg 0 <verdict>` (`NF_DROP` 0, `NF_ACCEPT` 1).
    Verdict(u32),
    /// `counter`.
    Counter,
    /// `notrack`.
    Notrack,
    /// `nat snat|dnat ip addr_min reg 1`.
    Nat { dnat: bool },
}

/// Netlink attributes being built.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize((self.0.len() + 3) & !3, 0);
        self
    }

    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    fn nested(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut inner = Attrs::default();
        f(&mut inner);
        self.put(kind | NLA_F_NESTED, &inner.0)
    }

    /// `NFTA_DATA_VALUE` inside a nested data attribute.
    fn data(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.nested(kind, |a| {
            a.put(1, value);
        })
    }
}

/// One message of a batch: nfnetlink type, flags, payload (nfgenmsg and attributes), and what it
/// does, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) msg_type: u16,
    pub(crate) flags: u16,
    pub(crate) payload: Vec<u8>,
    pub(crate) what: String,
}

/// The messages of one transaction, in order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) messages: Vec<Message>,
    next_set_id: u32,
}

fn family_byte(f: NftFamily) -> u8 {
    match f {
        NftFamily::Ip => NFPROTO_IPV4,
        NftFamily::Netdev => NFPROTO_NETDEV,
    }
}

impl Batch {
    fn push(&mut self, family: NftFamily, msg: u16, flags: u16, attrs: Attrs, what: String) {
        let mut payload = vec![family_byte(family), 0, 0, 0];
        payload.extend_from_slice(&attrs.0);
        self.messages.push(Message {
            msg_type: (SUBSYS << 8) | msg,
            flags,
            payload,
            what,
        });
    }

    /// `delete table <family> <name>`.
    pub(crate) fn delete_table(&mut self, family: NftFamily, name: &str) {
        let mut a = Attrs::default();
        a.str(1, name);
        self.push(
            family,
            NFT_MSG_DELTABLE,
            0,
            a,
            format!("delete table {} {name}", family.keyword()),
        );
    }

    /// Creates `table` with its sets, elements, chains and rules.
    pub(crate) fn add_table(&mut self, t: &Table) {
        let fam = t.family;
        let tname = format!("table {} {}", fam.keyword(), t.name);
        let mut a = Attrs::default();
        a.str(1, &t.name).be32(2, 0);
        if let Some(comment) = &t.comment {
            let mut udata = vec![UDATA_TABLE_COMMENT, (comment.len() + 1) as u8];
            udata.extend_from_slice(comment.as_bytes());
            udata.push(0);
            a.put(6, &udata);
        }
        self.push(fam, NFT_MSG_NEWTABLE, CREATE, a, tname.clone());

        let mut set_ids = Vec::new();
        for set in &t.sets {
            self.next_set_id += 1;
            let id = self.next_set_id;
            set_ids.push((set.name.clone(), id));
            self.add_set(fam, &t.name, set, id, &tname);
        }
        for chain in &t.chains {
            let mut a = Attrs::default();
            a.str(1, &t.name).str(3, &chain.name);
            if let Some(h) = &chain.hook {
                a.str(7, h.chain_type)
                    .be32(5, u32::from(h.accept))
                    .nested(4, |n| {
                        n.be32(1, h.hooknum).be32(2, h.priority as u32);
                        if let Some(dev) = &h.device {
                            n.str(3, dev);
                        }
                    });
            }
            self.push(
                fam,
                NFT_MSG_NEWCHAIN,
                CREATE,
                a,
                format!("{tname}: chain {}", chain.name),
            );
            for (i, rule) in chain.rules.iter().enumerate() {
                let mut a = Attrs::default();
                a.str(1, &t.name).str(2, &chain.name).nested(4, |list| {
                    for e in rule {
                        list.nested(1, |el| encode_expr(el, e, &set_ids));
                    }
                });
                self.push(
                    fam,
                    NFT_MSG_NEWRULE,
                    CREATE | APPEND,
                    a,
                    format!("{tname}: chain {}: rule {}", chain.name, i + 1),
                );
            }
        }
    }

    fn add_set(&mut self, fam: NftFamily, table: &str, set: &Set, id: u32, tname: &str) {
        let mut flags = 0;
        if set.interval {
            flags |= SET_INTERVAL;
        }
        if set.data.is_some() {
            flags |= SET_MAP;
        }
        let mut udata = udata_u32(UDATA_SET_KEYBYTEORDER, BYTEORDER_BIG_ENDIAN);
        let mut a = Attrs::default();
        a.str(1, table)
            .str(2, &set.name)
            .be32(3, flags)
            .be32(4, set.key.id())
            .be32(5, set.key.len() as u32);
        if let Some(data) = set.data {
            a.be32(6, data.id()).be32(7, data.len() as u32);
            let order = match data {
                DataType::IfIndex => BYTEORDER_HOST_ENDIAN,
                _ => BYTEORDER_BIG_ENDIAN,
            };
            udata.extend(udata_u32(UDATA_SET_DATABYTEORDER, order));
            udata.extend(udata_u32(UDATA_SET_DATA_INTERVAL, 0));
        }
        a.be32(10, id).put(13, &udata);
        let what = format!("{tname}: set {}", set.name);
        self.push(fam, NFT_MSG_NEWSET, CREATE, a, what.clone());
        if set.elements.is_empty() {
            return;
        }
        for list in chunks(&element_items(set), MAX_ELEMENT_LIST) {
            let mut a = Attrs::default();
            a.str(1, table)
                .str(2, &set.name)
                .be32(4, id)
                .put(3 | NLA_F_NESTED, &list);
            self.push(
                fam,
                NFT_MSG_NEWSETELEM,
                CREATE,
                a,
                format!("{what}: elements"),
            );
        }
    }
}

/// Most bytes of element list in one `NEWSETELEM` message. A netlink attribute's length is 16
/// bits: a set of more (10 000 FIPs' map is about 280 KB) goes in several messages of the same
/// batch, as nft sends it.
const MAX_ELEMENT_LIST: usize = 32 * 1024;

/// The `NFTA_SET_ELEM_LIST_ELEMENTS` items of a set, one entry per element (an interval's start
/// and end together, so no message splits one).
fn element_items(set: &Set) -> Vec<Vec<u8>> {
    let mut items = Vec::new();
    if set.interval {
        // As nft does for an rbtree set: an interval end at zero first, unless the first range
        // starts there.
        if set
            .elements
            .first()
            .is_some_and(|e| e.key.iter().any(|b| *b != 0))
        {
            let mut l = Attrs::default();
            l.nested(1, |el| {
                el.be32(3, ELEM_INTERVAL_END)
                    .data(1, &vec![0; set.key.len()]);
            });
            items.push(l.0);
        }
        for e in &set.elements {
            let mut l = Attrs::default();
            l.nested(1, |el| {
                el.data(1, &e.key);
            });
            if let Some(end) = &e.end {
                l.nested(1, |el| {
                    el.be32(3, ELEM_INTERVAL_END).data(1, end);
                });
            }
            items.push(l.0);
        }
    } else {
        for e in &set.elements {
            let mut l = Attrs::default();
            l.nested(1, |el| {
                el.data(1, &e.key);
                if let Some(d) = &e.data {
                    el.data(2, d);
                }
            });
            items.push(l.0);
        }
    }
    items
}

/// `items` joined into runs of at most `max` bytes each (an item larger than `max` alone).
fn chunks(items: &[Vec<u8>], max: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for item in items {
        match out.last_mut() {
            Some(run) if run.len() + item.len() <= max => run.extend_from_slice(item),
            _ => out.push(item.clone()),
        }
    }
    out
}

fn udata_u32(kind: u8, v: u32) -> Vec<u8> {
    let mut out = vec![kind, 4];
    out.extend_from_slice(&v.to_ne_bytes());
    out
}

/// `NFTA_LIST_ELEM` content of one expression: `NFTA_EXPR_NAME` and `NFTA_EXPR_DATA`.
fn encode_expr(el: &mut Attrs, e: &Expr, set_ids: &[(String, u32)]) {
    let (name, data) = expr_attrs(e, set_ids);
    el.str(1, name);
    if data.0.is_empty() {
        return;
    }
    el.put(2 | NLA_F_NESTED, &data.0);
}

/// `NFT_PAYLOAD_CSUM_INET`.
const CSUM_INET: u32 = 1;

fn base_id(b: Base) -> u32 {
    match b {
        Base::Link => 0,
        Base::Network => 1,
        Base::Transport => 2,
    }
}

/// A payload load into register `reg`.
fn payload_load(reg: u32, b: Base, offset: u32, len: u32) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, reg)
        .be32(2, base_id(b))
        .be32(3, offset)
        .be32(4, len);
    d
}

/// A payload write from register 1, with the internet checksum at `csum` fixed up.
fn payload_write(b: Base, offset: u32, len: u32, csum: Option<u32>) -> Attrs {
    let (csum_type, csum_offset) = csum.map_or((0, 0), |at| (CSUM_INET, at));
    let mut d = Attrs::default();
    d.be32(5, REG_1)
        .be32(2, base_id(b))
        .be32(3, offset)
        .be32(4, len)
        .be32(6, csum_type)
        .be32(7, csum_offset)
        .be32(8, 0);
    d
}

/// One expression's kernel name and its `NFTA_EXPR_DATA` attributes.
fn expr_attrs(e: &Expr, set_ids: &[(String, u32)]) -> (&'static str, Attrs) {
    match e {
        Expr::MetaLoad(key) => {
            let mut d = Attrs::default();
            d.be32(1, REG_1).be32(2, *key);
            ("meta", d)
        }
        Expr::MetaSet(key) => {
            let mut d = Attrs::default();
            d.be32(2, *key).be32(3, REG_1);
            ("meta", d)
        }
        Expr::PayloadLoad { base, offset, len } => {
            ("payload", payload_load(REG_1, *base, *offset, *len))
        }
        Expr::PayloadLoadTail { base, offset, len } => {
            ("payload", payload_load(REG32_02, *base, *offset, *len))
        }
        Expr::PayloadWrite {
            base,
            offset,
            len,
            csum,
        } => ("payload", payload_write(*base, *offset, *len, *csum)),
        Expr::CmpEq(v) => {
            let mut d = Attrs::default();
            d.be32(1, REG_1).be32(2, 0).data(3, v);
            ("cmp", d)
        }
        Expr::Cmp(op, v) => {
            let mut d = Attrs::default();
            d.be32(1, REG_1).be32(2, *op as u32).data(3, v);
            ("cmp", d)
        }
        Expr::Mask(mask) => {
            let mut d = Attrs::default();
            d.be32(1, REG_1)
                .be32(2, REG_1)
                .be32(3, mask.len() as u32)
                .data(4, mask)
                .data(5, &vec![0; mask.len()]);
            ("bitwise", d)
        }
        Expr::MaskXor { mask, xor } => {
            let mut d = Attrs::default();
            d.be32(1, REG_1)
                .be32(2, REG_1)
                .be32(3, mask.len() as u32)
                .data(4, mask)
                .data(5, xor);
            ("bitwise", d)
        }
        Expr::Fwd => {
            let mut d = Attrs::default();
            d.be32(1, REG_1);
            ("fwd", d)
        }
        Expr::Lookup { set, map } => {
            let mut d = Attrs::default();
            d.be32(2, REG_1).str(1, set);
            if let Some((_, id)) = set_ids.iter().find(|(n, _)| n == set) {
                d.be32(4, *id);
            }
            if *map {
                d.be32(3, REG_1);
            }
            ("lookup", d)
        }
        Expr::Immediate(v) => {
            let mut d = Attrs::default();
            d.be32(1, REG_1).data(2, v);
            ("immediate", d)
        }
        Expr::Verdict(code) => {
            let mut d = Attrs::default();
            d.be32(1, REG_VERDICT).nested(2, |data| {
                data.nested(2, |verdict| {
                    verdict.be32(1, *code);
                });
            });
            ("immediate", d)
        }
        Expr::Counter => {
            let mut d = Attrs::default();
            d.put(1, &0u64.to_be_bytes()).put(2, &0u64.to_be_bytes());
            ("counter", d)
        }
        Expr::Notrack => ("notrack", Attrs::default()),
        Expr::Nat { dnat } => {
            let mut d = Attrs::default();
            d.be32(1, u32::from(*dnat))
                .be32(2, u32::from(NFPROTO_IPV4))
                .be32(3, REG_1);
            ("nat", d)
        }
    }
}

/// Frames `batch` as one datagram: `NFNL_MSG_BATCH_BEGIN`, the messages with sequence numbers
/// from `first_seq`, `NFNL_MSG_BATCH_END`. The last message asks for an ack, so a successful batch
/// is confirmed; a failing message is always answered with its error.
pub(crate) fn frame(batch: &Batch, first_seq: u32) -> Vec<u8> {
    const BATCH_BEGIN: u16 = 0x10;
    const BATCH_END: u16 = 0x11;
    const REQUEST: u16 = 0x1;
    const ACK: u16 = 0x4;
    let mut out = Vec::new();
    let mut put = |t: u16, flags: u16, seq: u32, payload: &[u8]| {
        let len = 16 + payload.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&t.to_ne_bytes());
        out.extend_from_slice(&(flags | REQUEST).to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize((out.len() + 3) & !3, 0);
    };
    let batch_hdr = [0u8, 0, (SUBSYS >> 8) as u8, SUBSYS as u8];
    put(BATCH_BEGIN, 0, first_seq, &batch_hdr);
    let last = batch.messages.len().saturating_sub(1);
    for (i, m) in batch.messages.iter().enumerate() {
        let ack = if i == last { ACK } else { 0 };
        put(
            m.msg_type,
            m.flags | ack,
            first_seq + 1 + i as u32,
            &m.payload,
        );
    }
    put(
        BATCH_END,
        0,
        first_seq + 1 + batch.messages.len() as u32,
        &batch_hdr,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut a = Attrs::default();
        a.str(1, "ab").nested(4, |n| {
            n.be32(1, 7);
        });
        assert_eq!(
            a.0,
            vec![
                7, 0, 1, 0, b'a', b'b', 0, 0, // "ab\0" padded
                12, 0, 4, 0x80, 8, 0, 1, 0, 0, 0, 0, 7
            ]
        );
    }

    #[test]
    fn a_large_set_goes_in_several_element_messages_each_within_a_netlink_attribute() {
        let elements: Vec<_> = (0..10_000u32)
            .map(|i| Element {
                key: i.to_be_bytes().to_vec(),
                end: None,
                data: Some((i + 1).to_be_bytes().to_vec()),
            })
            .collect();
        let items = element_items(&Set {
            name: "fip_dnat".into(),
            key: DataType::Ipv4,
            data: Some(DataType::Ipv4),
            interval: false,
            elements,
        });
        assert_eq!(items.len(), 10_000);
        let runs = chunks(&items, MAX_ELEMENT_LIST);
        assert!(runs.len() > 4, "{} runs", runs.len());
        assert!(runs.iter().all(|r| r.len() <= MAX_ELEMENT_LIST));
        let total: usize = runs.iter().map(Vec::len).sum();
        assert_eq!(
            total,
            items.iter().map(Vec::len).sum::<usize>(),
            "nothing lost"
        );
        assert!(
            total > usize::from(u16::MAX),
            "one attribute could not hold them"
        );
        assert_eq!(chunks(&[vec![1; 10], vec![2; 10]], 15).len(), 2);
        assert_eq!(chunks(&[vec![1; 10], vec![2; 5]], 15).len(), 1);
        assert!(chunks(&[], 15).is_empty());
    }

    #[test]
    fn a_batch_is_framed_with_begin_and_end_and_acks_only_its_last_message() {
        let mut b = Batch::default();
        b.delete_table(NftFamily::Ip, "dvrmesh-x");
        b.add_table(&Table {
            family: NftFamily::Ip,
            name: "dvrmesh-x".into(),
            comment: Some("dvrmesh:00".into()),
            sets: vec![],
            chains: vec![],
        });
        let bytes = frame(&b, 100);
        let mut off = 0;
        let mut seen = Vec::new();
        while off < bytes.len() {
            let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            let t = u16::from_ne_bytes([bytes[off + 4], bytes[off + 5]]);
            let flags = u16::from_ne_bytes([bytes[off + 6], bytes[off + 7]]);
            let seq = u32::from_ne_bytes(bytes[off + 8..off + 12].try_into().unwrap());
            seen.push((t, flags & 0x4 != 0, seq));
            off += (len + 3) & !3;
        }
        assert_eq!(
            seen,
            vec![
                (0x10, false, 100),
                ((10 << 8) | 2, false, 101),
                (10 << 8, true, 102),
                (0x11, false, 103)
            ]
        );
    }
}
