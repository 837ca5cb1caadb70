//! Replicated records: what nodes publish about tenant objects, and how versions order them.
//!
//! Every write carries a [`Version`]: a hybrid logical clock timestamp and the writer's node id.
//! Versions are totally ordered (timestamp, then node id), so "last writer wins" picks the same
//! record on every node. A deletion is a record without a body (a tombstone).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{
    Error, ExternalNetwork, FloatingIp, MacAddr, Network, NodeId, ObjectId, Port, Router, Subnet,
};

/// A hybrid logical clock timestamp: 48 bits of Unix milliseconds, 16 bits of logical counter.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct HlcTimestamp(pub u64);

impl HlcTimestamp {
    /// The wall-clock part, in Unix milliseconds.
    pub fn physical_ms(&self) -> u64 {
        self.0 >> 16
    }
}

/// A hybrid logical clock: never goes backwards, stays close to the wall clock, and moves past
/// every timestamp it has observed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A new timestamp, later than every one issued or observed, given the wall clock.
    pub fn now(&mut self, wall_ms: u64) -> HlcTimestamp {
        let physical = (wall_ms & ((1 << 48) - 1)) << 16;
        self.last = physical.max(self.last.saturating_add(1));
        HlcTimestamp(self.last)
    }

    /// Moves the clock past a timestamp seen from another node.
    pub fn observe(&mut self, ts: HlcTimestamp) {
        self.last = self.last.max(ts.0);
    }
}

/// The version of a write: ordered by timestamp, ties broken by writer id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Version {
    /// When, in hybrid logical time.
    pub hlc: HlcTimestamp,
    /// Which node wrote it.
    pub writer: NodeId,
}

/// The kinds of tenant object.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A tenant network.
    Network,
    /// A subnet.
    Subnet,
    /// An external network.
    ExternalNetwork,
    /// A router.
    Router,
    /// A floating IP.
    FloatingIp,
    /// A port (published by its host only).
    Port,
}

impl ObjectKind {
    /// Every kind, in dependency order (what others refer to first).
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Network,
        ObjectKind::Subnet,
        ObjectKind::ExternalNetwork,
        ObjectKind::Router,
        ObjectKind::Port,
        ObjectKind::FloatingIp,
    ];

    /// The short tag used in gossip keys and generated ids.
    pub fn tag(&self) -> &'static str {
        match self {
            ObjectKind::Network => "net",
            ObjectKind::Subnet => "sub",
            ObjectKind::ExternalNetwork => "ext",
            ObjectKind::Router => "rtr",
            ObjectKind::FloatingIp => "fip",
            ObjectKind::Port => "port",
        }
    }

    /// The word operators use.
    pub fn noun(&self) -> &'static str {
        match self {
            ObjectKind::Network => "network",
            ObjectKind::Subnet => "subnet",
            ObjectKind::ExternalNetwork => "external network",
            ObjectKind::Router => "router",
            ObjectKind::FloatingIp => "floating IP",
            ObjectKind::Port => "port",
        }
    }

    /// The kind whose tag is `tag`.
    pub fn from_tag(tag: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// A tenant object of any kind.
///
/// Text formats (JSON) carry it as written here. The binary wire keeps subnets encoded before
/// they had DHCP settings, and ports encoded before they had metadata, decodable: a subnet with
/// the default settings (a port without metadata) is encoded as before, one with settings of its
/// own (metadata) as a variant added at the end ([`wire`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[serde(remote = "Self")]
pub enum TenantObject {
    /// A tenant network.
    Network(Network),
    /// A subnet.
    Subnet(Subnet),
    /// An external network.
    ExternalNetwork(ExternalNetwork),
    /// A router.
    Router(Router),
    /// A floating IP.
    FloatingIp(FloatingIp),
    /// A port.
    Port(Port),
}

impl Serialize for TenantObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            TenantObject::serialize(self, s)
        } else {
            wire::WireObject::from(self.clone()).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for TenantObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            TenantObject::deserialize(d)
        } else {
            wire::WireObject::deserialize(d)?
                .try_into()
                .map_err(serde::de::Error::custom)
        }
    }
}

mod wire {
    //! The binary form of [`TenantObject`]: the six variants as first encoded, then subnets that
    //! carry DHCP settings of their own, then ports that carry metadata.

    use super::*;
    use crate::{PortSpec, SubnetDhcp, SubnetSpec};

    /// A port's fields as encoded before ports had metadata.
    #[derive(Serialize, Deserialize)]
    pub(super) struct LegacyPort {
        id: ObjectId,
        name: crate::Name,
        network: ObjectId,
        mac: crate::MacAddr,
        fixed_ips: Vec<std::net::Ipv4Addr>,
        host: crate::NodeId,
        device: Option<crate::InterfaceName>,
        allowed_address_pairs: Vec<crate::AddressPair>,
    }

    /// A subnet's fields as encoded before DHCP settings existed.
    #[derive(Serialize, Deserialize)]
    pub(super) struct LegacySubnet {
        id: ObjectId,
        name: crate::Name,
        network: ObjectId,
        cidr: crate::Ipv4Cidr,
        gateway: std::net::Ipv4Addr,
        pool: crate::Ipv4Range,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) enum WireObject {
        Network(Network),
        Subnet(LegacySubnet),
        ExternalNetwork(ExternalNetwork),
        Router(Router),
        FloatingIp(FloatingIp),
        Port(LegacyPort),
        SubnetWithDhcp(Subnet),
        PortWithMetadata(Port),
    }

    impl From<TenantObject> for WireObject {
        fn from(o: TenantObject) -> Self {
            match o {
                TenantObject::Network(v) => WireObject::Network(v),
                TenantObject::Subnet(v) if v.dhcp == SubnetDhcp::default() => {
                    let s = v.into_spec();
                    WireObject::Subnet(LegacySubnet {
                        id: s.id,
                        name: s.name,
                        network: s.network,
                        cidr: s.cidr,
                        gateway: s.gateway,
                        pool: s.pool,
                    })
                }
                TenantObject::Subnet(v) => WireObject::SubnetWithDhcp(v),
                TenantObject::ExternalNetwork(v) => WireObject::ExternalNetwork(v),
                TenantObject::Router(v) => WireObject::Router(v),
                TenantObject::FloatingIp(v) => WireObject::FloatingIp(v),
                TenantObject::Port(v) if v.metadata.is_empty() => {
                    let p = v.into_spec();
                    WireObject::Port(LegacyPort {
                        id: p.id,
                        name: p.name,
                        network: p.network,
                        mac: p.mac,
                        fixed_ips: p.fixed_ips,
                        host: p.host,
                        device: p.device,
                        allowed_address_pairs: p.allowed_address_pairs,
                    })
                }
                TenantObject::Port(v) => WireObject::PortWithMetadata(v),
            }
        }
    }

    impl TryFrom<WireObject> for TenantObject {
        type Error = Error;
        fn try_from(o: WireObject) -> Result<Self, Error> {
            Ok(match o {
                WireObject::Network(v) => TenantObject::Network(v),
                WireObject::Subnet(s) => TenantObject::Subnet(Subnet::new(SubnetSpec {
                    id: s.id,
                    name: s.name,
                    network: s.network,
                    cidr: s.cidr,
                    gateway: s.gateway,
                    pool: s.pool,
                    dhcp: SubnetDhcp::default(),
                })?),
                WireObject::SubnetWithDhcp(v) => TenantObject::Subnet(v),
                WireObject::ExternalNetwork(v) => TenantObject::ExternalNetwork(v),
                WireObject::Router(v) => TenantObject::Router(v),
                WireObject::FloatingIp(v) => TenantObject::FloatingIp(v),
                WireObject::Port(p) => TenantObject::Port(Port::new(PortSpec {
                    id: p.id,
                    name: p.name,
                    network: p.network,
                    mac: p.mac,
                    fixed_ips: p.fixed_ips,
                    host: p.host,
                    device: p.device,
                    allowed_address_pairs: p.allowed_address_pairs,
                    metadata: crate::PortMetadata::default(),
                })?),
                WireObject::PortWithMetadata(v) => TenantObject::Port(v),
            })
        }
    }
}

impl TenantObject {
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            TenantObject::Network(_) => ObjectKind::Network,
            TenantObject::Subnet(_) => ObjectKind::Subnet,
            TenantObject::ExternalNetwork(_) => ObjectKind::ExternalNetwork,
            TenantObject::Router(_) => ObjectKind::Router,
            TenantObject::FloatingIp(_) => ObjectKind::FloatingIp,
            TenantObject::Port(_) => ObjectKind::Port,
        }
    }

    /// The object's id.
    pub fn id(&self) -> &ObjectId {
        match self {
            TenantObject::Network(o) => &o.id,
            TenantObject::Subnet(o) => &o.id,
            TenantObject::ExternalNetwork(o) => &o.id,
            TenantObject::Router(o) => &o.id,
            TenantObject::FloatingIp(o) => &o.id,
            TenantObject::Port(o) => &o.id,
        }
    }

    /// The object's name; floating IPs have none (their address names them).
    pub fn name(&self) -> Option<&crate::Name> {
        match self {
            TenantObject::Network(o) => Some(&o.name),
            TenantObject::Subnet(o) => Some(&o.name),
            TenantObject::ExternalNetwork(o) => Some(&o.name),
            TenantObject::Router(o) => Some(&o.name),
            TenantObject::Port(o) => Some(&o.name),
            TenantObject::FloatingIp(_) => None,
        }
    }
}

/// One published write: an object at a version, or its tombstone.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "RecordFields", into = "RecordFields")]
pub struct Record(RecordFields);

/// The field set behind [`Record`], as it is encoded: a header that names the object even for a
/// tombstone, and the body, which must match the header. The operator seal comes last and only
/// when there is one, so a record without one encodes as before seals existed: nodes of both
/// versions read each other's unsealed records (a rolling upgrade), and a record persisted before
/// still loads.
#[derive(Clone, PartialEq, Eq, Debug)]
struct RecordFields {
    kind: ObjectKind,
    id: ObjectId,
    version: Version,
    body: Option<TenantObject>,
    /// The operator credential that authorised this write, when one did.
    operator: Option<OperatorSeal>,
}

/// The field set with names, as text formats (JSON) carry it; the seal only when there is one.
#[derive(Serialize, Deserialize)]
struct NamedFields {
    kind: ObjectKind,
    id: ObjectId,
    version: Version,
    body: Option<TenantObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    operator: Option<OperatorSeal>,
}

impl Serialize for RecordFields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        if s.is_human_readable() {
            return NamedFields {
                kind: self.kind,
                id: self.id.clone(),
                version: self.version.clone(),
                body: self.body.clone(),
                operator: self.operator.clone(),
            }
            .serialize(s);
        }
        let mut t = s.serialize_tuple(if self.operator.is_some() { 5 } else { 4 })?;
        t.serialize_element(&self.kind)?;
        t.serialize_element(&self.id)?;
        t.serialize_element(&self.version)?;
        t.serialize_element(&self.body)?;
        if let Some(seal) = &self.operator {
            t.serialize_element(seal)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for RecordFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RecordFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a record: kind, id, version, body and an optional operator seal")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RecordFields, A::Error> {
                use serde::de::Error as _;
                let missing = |i| A::Error::invalid_length(i, &self);
                let kind = seq.next_element()?.ok_or_else(|| missing(0))?;
                let id = seq.next_element()?.ok_or_else(|| missing(1))?;
                let version = seq.next_element()?.ok_or_else(|| missing(2))?;
                let body = seq.next_element()?.ok_or_else(|| missing(3))?;
                // The input may end here (no seal). Bytes that do not decode as a seal leave the
                // record unsealed, which gives them no power: anyone may publish unsealed.
                let operator = seq.next_element::<OperatorSeal>().ok().flatten();
                Ok(RecordFields {
                    kind,
                    id,
                    version,
                    body,
                    operator,
                })
            }
        }
        if d.is_human_readable() {
            let n = NamedFields::deserialize(d)?;
            return Ok(RecordFields {
                kind: n.kind,
                id: n.id,
                version: n.version,
                body: n.body,
                operator: n.operator,
            });
        }
        d.deserialize_tuple(5, Fields)
    }
}

/// An operator's signature on a record: the operator's certificate (DER, issued by the cluster
/// CA with the `operator` role) and its signature over [`Record::operator_message`]. It travels
/// inside the record, so every node verifies it against the CA itself, whichever replica
/// republishes the record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OperatorSeal {
    /// The operator's certificate, DER.
    pub cert: Vec<u8>,
    /// ECDSA P-256 (ASN.1) signature over [`Record::operator_message`].
    pub signature: Vec<u8>,
}

/// Domain tag of what an operator signs.
const OPERATOR_TAG: &[u8] = b"dvrmesh operator record v1\0";

impl TryFrom<RecordFields> for Record {
    type Error = Error;
    fn try_from(f: RecordFields) -> Result<Self, Error> {
        if let Some(body) = &f.body {
            if body.kind() != f.kind || body.id() != &f.id {
                return Err(Error::invalid("record", "header does not match its body"));
            }
        }
        Ok(Record(f))
    }
}

impl From<Record> for RecordFields {
    fn from(r: Record) -> Self {
        r.0
    }
}

impl Record {
    /// A write of `body` at `version`.
    pub fn object(body: TenantObject, version: Version) -> Self {
        Record(RecordFields {
            kind: body.kind(),
            id: body.id().clone(),
            version,
            body: Some(body),
            operator: None,
        })
    }

    /// The deletion of an object at `version`.
    pub fn tombstone(kind: ObjectKind, id: ObjectId, version: Version) -> Self {
        Record(RecordFields {
            kind,
            id,
            version,
            body: None,
            operator: None,
        })
    }

    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        self.0.kind
    }
    /// The object's id.
    pub fn id(&self) -> &ObjectId {
        &self.0.id
    }
    /// The write's version.
    pub fn version(&self) -> &Version {
        &self.0.version
    }
    /// The object, or `None` for a tombstone.
    pub fn body(&self) -> Option<&TenantObject> {
        self.0.body.as_ref()
    }

    /// The gossip key this record lives under: `o/<kind tag>/<id>`.
    pub fn key(&self) -> String {
        record_key(self.0.kind, &self.0.id)
    }

    /// The operator seal, if an operator authorised this write.
    pub fn operator(&self) -> Option<&OperatorSeal> {
        self.0.operator.as_ref()
    }

    /// This record with an operator's seal.
    pub fn with_operator(mut self, seal: OperatorSeal) -> Self {
        self.0.operator = Some(seal);
        self
    }

    /// The bytes an operator signs: a domain tag and the encoded record without any seal, so the
    /// signature covers kind, id, version (time and writer) and body.
    pub fn operator_message(&self) -> Result<Vec<u8>, Error> {
        let mut unsealed = self.0.clone();
        unsealed.operator = None;
        let mut m = OPERATOR_TAG.to_vec();
        m.extend(crate::encode(&unsealed)?);
        Ok(m)
    }
}

/// The gossip key of an object's record.
pub fn record_key(kind: ObjectKind, id: &ObjectId) -> String {
    format!("o/{}/{}", kind.tag(), id)
}

/// A node's claim on an address of a pool (a subnet or an external network) for an object, made
/// before the object is published. The claim with the lowest version wins.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AddressClaim {
    /// The subnet or external network the address comes from.
    pub pool: ObjectId,
    /// The address.
    pub ip: Ipv4Addr,
    /// The port or floating IP that would hold it.
    pub holder: ObjectId,
    /// When and by whom it was claimed.
    pub version: Version,
}

impl AddressClaim {
    /// The gossip key: `a/<pool>/<ip>`.
    pub fn key(&self) -> String {
        format!("a/{}/{}", self.pool, self.ip)
    }
}

/// A node's claim on a MAC address for a port. The claim with the lowest version wins.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MacClaim {
    /// The MAC.
    pub mac: MacAddr,
    /// The port that would hold it.
    pub holder: ObjectId,
    /// When and by whom it was claimed.
    pub version: Version,
}

impl MacClaim {
    /// The gossip key: `m/<mac>`.
    pub fn key(&self) -> String {
        format!("m/{}", self.mac)
    }
}

/// Where a block of values is carved from.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum BlockSpace {
    /// Addresses of a subnet's or an external network's pool (values are IPv4 addresses as
    /// integers).
    Pool(ObjectId),
    /// Port MACs in `fa:16:3e:xx:xx:xx` (values are the low 24 bits).
    Mac,
}

impl std::fmt::Display for BlockSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockSpace::Pool(p) => write!(f, "{p}"),
            BlockSpace::Mac => write!(f, "mac"),
        }
    }
}

/// The most values one block may hold (a larger one is refused on decode's check).
pub const MAX_BLOCK_LEN: u32 = 256;

/// A node's block: `len` consecutive values from `first` that the node (the version's writer)
/// hands out locally, with no claim per value. Published in the node's own key space; of two
/// overlapping blocks the one with the lower version wins.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AddressBlock {
    /// What the values are.
    pub space: BlockSpace,
    /// The first value.
    pub first: u32,
    /// How many values (1 to [`MAX_BLOCK_LEN`]).
    pub len: u32,
    /// When the block was claimed, and by which node (its holder).
    pub version: Version,
}

impl AddressBlock {
    /// The gossip key: `b/<pool>/<first address>` or `b/mac/<first value in hex>`.
    pub fn key(&self) -> String {
        match &self.space {
            BlockSpace::Pool(p) => format!("b/{p}/{}", Ipv4Addr::from(self.first)),
            BlockSpace::Mac => format!("b/mac/{:06x}", self.first),
        }
    }

    /// The last value, or an error when the block is empty, too long or runs past the space.
    pub fn last(&self) -> Result<u32, Error> {
        let limit = match self.space {
            BlockSpace::Pool(_) => u32::MAX,
            BlockSpace::Mac => 0x00ff_ffff,
        };
        if self.len == 0 || self.len > MAX_BLOCK_LEN {
            return Err(Error::invalid(
                "block.len",
                format!(
                    "a block holds 1 to {MAX_BLOCK_LEN} values, not {}",
                    self.len
                ),
            ));
        }
        self.first
            .checked_add(self.len - 1)
            .filter(|l| *l <= limit)
            .ok_or_else(|| {
                Error::invalid("block.first", "the block runs past the end of its space")
            })
    }

    /// Whether `value` is in the block.
    pub fn contains(&self, value: u32) -> bool {
        value >= self.first && value - self.first < self.len
    }

    /// Whether the two blocks share a value (same space).
    pub fn overlaps(&self, other: &AddressBlock) -> bool {
        self.space == other.space && self.overlaps_range(other.first, other.len)
    }

    /// Whether the block shares a value with the `len` values from `first` (of its space).
    pub fn overlaps_range(&self, first: u32, len: u32) -> bool {
        self.first < first.saturating_add(len) && first < self.first.saturating_add(self.len)
    }
}

/// A value only one live object may have cluster-wide.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum UniqueValue {
    /// A network's VXLAN segment: two tenants on one segment would share their layer 2.
    Vni(crate::Vni),
    /// An object's name within its kind (names are how operators refer to objects).
    Name(ObjectKind, crate::Name),
}

impl std::fmt::Display for UniqueValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UniqueValue::Vni(v) => write!(f, "VNI {v}"),
            UniqueValue::Name(kind, name) => write!(f, "{} name {name}", kind.tag()),
        }
    }
}

/// A node's claim on a [`UniqueValue`] for the object that would hold it, made before the object
/// is published (as for addresses). The claim with the lowest version wins.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct UniqueClaim {
    /// What must be unique.
    pub value: UniqueValue,
    /// The object that would hold it.
    pub holder: ObjectId,
    /// When and by whom it was claimed.
    pub version: Version,
}

impl UniqueClaim {
    /// The gossip key: `u/vni/<vni>` or `u/name/<kind tag>/<name>`.
    pub fn key(&self) -> String {
        match &self.value {
            UniqueValue::Vni(v) => format!("u/vni/{v}"),
            UniqueValue::Name(kind, name) => format!("u/name/{}/{name}", kind.tag()),
        }
    }
}

/// A node's claim to hold SNAT for a router: published in gossip under [`SnatClaim::key`] while
/// held, and sent as the holder's advert. Claims rank by epoch, then priority, then the smaller
/// node id.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SnatClaim {
    /// The router.
    pub router: ObjectId,
    /// Increases with every takeover of this router.
    pub epoch: u64,
    /// The claimant's effective priority for this router.
    pub priority: crate::Priority,
    /// The claimant.
    pub node: NodeId,
}

impl SnatClaim {
    /// The gossip key: `snat/<router>`.
    pub fn key(&self) -> String {
        format!("snat/{}", self.router)
    }

    /// Whether `self` outranks `other`.
    pub fn outranks(&self, other: &SnatClaim) -> bool {
        (self.epoch, self.priority, std::cmp::Reverse(&self.node))
            > (other.epoch, other.priority, std::cmp::Reverse(&other.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_rank_by_epoch_then_priority_then_smaller_node() {
        let c = |e: u64, p: u8, n: &str| SnatClaim {
            router: ObjectId::new("r").unwrap(),
            epoch: e,
            priority: crate::Priority::new(p).unwrap(),
            node: NodeId::new(n).unwrap(),
        };
        assert!(c(2, 1, "z").outranks(&c(1, 254, "a")));
        assert!(c(1, 200, "z").outranks(&c(1, 100, "a")));
        assert!(c(1, 100, "a").outranks(&c(1, 100, "b")));
        assert!(!c(1, 100, "a").outranks(&c(1, 100, "a")));
    }

    #[test]
    fn a_record_whose_header_names_another_object_than_its_body_does_not_decode() {
        let net = crate::Network::new(crate::NetworkSpec {
            id: ObjectId::new("net-1").unwrap(),
            name: crate::Name::new("n").unwrap(),
            vni: crate::Vni::new(7).unwrap(),
            mtu: crate::Mtu::VXLAN_DEFAULT,
        })
        .unwrap();
        let version = Version {
            hlc: HlcTimestamp(1),
            writer: NodeId::new("a").unwrap(),
        };
        let good = Record::object(TenantObject::Network(net), version);
        let text = crate::encode_value(&good).unwrap();
        assert_eq!(crate::decode_value::<Record>(&text).unwrap(), good);
        let mut forged = good.0.clone();
        forged.id = ObjectId::new("net-2").unwrap();
        let text = crate::encode_value(&forged).unwrap();
        assert!(crate::decode_value::<Record>(&text).is_err());
        forged.id = good.id().clone();
        forged.kind = ObjectKind::Router;
        let text = crate::encode_value(&forged).unwrap();
        assert!(crate::decode_value::<Record>(&text).is_err());
    }

    #[test]
    fn hlc_is_monotonic_and_follows_observations() {
        let mut c = Hlc::default();
        let a = c.now(1000);
        let b = c.now(1000);
        assert!(b > a);
        let c2 = c.now(900); // clock went backwards
        assert!(c2 > b);
        c.observe(HlcTimestamp(5000 << 16));
        assert!(c.now(1000) > HlcTimestamp(5000 << 16));
        assert_eq!(c.now(10_000).physical_ms(), 10_000);
    }

    #[test]
    fn versions_order_by_time_then_writer() {
        let v = |t: u64, w: &str| Version {
            hlc: HlcTimestamp(t),
            writer: NodeId::new(w).unwrap(),
        };
        assert!(v(1, "b") < v(2, "a"));
        assert!(v(1, "a") < v(1, "b"));
    }
}
