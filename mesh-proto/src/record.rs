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
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
}

/// One published write: an object at a version, or its tombstone.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "RecordFields", into = "RecordFields")]
pub struct Record(RecordFields);

/// The field set behind [`Record`], as it is encoded: a header that names the object even for a
/// tombstone, and the body, which must match the header.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
struct RecordFields {
    kind: ObjectKind,
    id: ObjectId,
    version: Version,
    body: Option<TenantObject>,
}

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
        })
    }

    /// The deletion of an object at `version`.
    pub fn tombstone(kind: ObjectKind, id: ObjectId, version: Version) -> Self {
        Record(RecordFields {
            kind,
            id,
            version,
            body: None,
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
