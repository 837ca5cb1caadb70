//! The merged tenant state, its accessors, and published values as merging reads them (the
//! merging itself is [`super::merge`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use mesh_proto::{
    AddressBlock, AddressClaim, BlockSpace, ExternalNetwork, FloatingIp, HlcTimestamp, MacAddr,
    MacClaim, Network, NodeId, ObjectId, ObjectKind, Port, Record, Router, Subnet, TenantObject,
    UniqueClaim, UniqueValue, Version,
};
use serde::Serialize;

use crate::authority::ClaimAuthority;

/// Most problems kept for display.
pub(crate) const MAX_PROBLEMS: usize = 64;
/// Most claims (address, MAC, VNI and name) one node may have published at once: an honest node
/// makes one write at a time and withdraws its claims once the write is published.
pub const MAX_CLAIMS_PER_NODE: usize = 256;
/// Most ports one node may host.
pub const MAX_PORTS_PER_HOST: usize = 4096;
/// Most records (objects and tombstones, its own and those it replicates) one node may publish.
pub const MAX_RECORDS_PER_NODE: usize = 100_000;

/// The merged configuration every node computes from the same published records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantState {
    /// The winning record (object or tombstone) of every object ever written. A persistent map:
    /// a clone shares it, and an update copies only the paths it changes.
    pub records: imbl::OrdMap<(ObjectKind, ObjectId), Arc<Record>>,
    /// Who publishes which version of each object (persistent like `records`).
    pub publishers: imbl::OrdMap<(ObjectKind, ObjectId), BTreeMap<NodeId, Version>>,
    /// Address claims by (pool, address), lowest version first.
    pub address_claims: BTreeMap<(ObjectId, Ipv4Addr), Vec<AddressClaim>>,
    /// MAC claims by MAC, lowest version first.
    pub mac_claims: BTreeMap<MacAddr, Vec<MacClaim>>,
    /// Claims on VNIs and names, lowest version first.
    pub unique_claims: BTreeMap<UniqueValue, Vec<UniqueClaim>>,
    /// Nodes' address and MAC blocks by space, lowest version first (winners and losers: see
    /// [`crate::tenant::blocks`]).
    pub blocks: BTreeMap<BlockSpace, Vec<AddressBlock>>,
    /// The newest timestamp seen anywhere: a node's clock moves past it before writing.
    pub max_hlc: HlcTimestamp,
    /// Published values refused, with the reason (bounded).
    pub problems: Vec<String>,
    /// Values refused because their publisher is over a per-node cap, by publisher.
    pub over_cap: BTreeMap<NodeId, u64>,
}

/// What `view --json` shows of the configuration.
#[derive(Debug, Serialize)]
pub struct TenantSummary<'a> {
    /// Live networks.
    pub networks: Vec<&'a Network>,
    /// Live subnets.
    pub subnets: Vec<&'a Subnet>,
    /// Live external networks.
    pub external_networks: Vec<&'a ExternalNetwork>,
    /// Live routers.
    pub routers: Vec<&'a Router>,
    /// Live ports.
    pub ports: Vec<&'a Port>,
    /// Live floating IPs.
    pub floating_ips: Vec<&'a FloatingIp>,
    /// Port ids by host.
    pub ports_by_host: BTreeMap<String, Vec<String>>,
    /// Floating IPs by the host that serves them (the host of their port).
    pub fips_by_host: BTreeMap<String, Vec<String>>,
}

/// One iterator method per kind over the live objects of that kind.
macro_rules! typed_accessors {
    ($( $(#[$doc:meta])* $fn:ident, $variant:ident, $t:ty; )*) => {
        $(
            $(#[$doc])*
            pub fn $fn(&self) -> impl Iterator<Item = &$t> {
                self.objects(ObjectKind::$variant).filter_map(|o| match o {
                    TenantObject::$variant(x) => Some(x),
                    _ => None,
                })
            }
        )*
    };
}

/// The local wall clock, and how far ahead of it a peer's timestamp may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Unix milliseconds now.
    pub now_ms: u64,
    /// How far ahead of `now_ms` a timestamp may be.
    pub max_skew_ms: u64,
}

impl Clock {
    /// No bound: every timestamp is accepted (tests of other rules).
    pub fn unbounded() -> Clock {
        Clock {
            now_ms: 0,
            max_skew_ms: u64::MAX,
        }
    }

    /// Whether `ts` is not further ahead than the skew allows.
    pub(crate) fn admits(&self, ts: HlcTimestamp) -> bool {
        ts.physical_ms() <= self.now_ms.saturating_add(self.max_skew_ms)
    }
}

/// Who may write tenant configuration (networks, subnets, external networks, routers, floating
/// IPs): every node must use the same setting (`[tenancy] writers` in the node configuration).
/// Ports are always written by their host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Writers {
    /// Any node may (the lab's default): a compromised member can change the configuration,
    /// though every write names its writer and is sealed by it.
    #[default]
    AnyNode,
    /// Only records sealed by an operator credential count.
    Operators,
}

impl Writers {
    /// The configuration's spelling: `any-node` or `operators`.
    pub fn as_str(self) -> &'static str {
        match self {
            Writers::AnyNode => "any-node",
            Writers::Operators => "operators",
        }
    }
}

/// What a published value must satisfy to be merged: the clock bound, and who may write tenant
/// configuration (checked by `authority` when operators only).
#[derive(Clone, Copy)]
pub struct Admission<'a> {
    /// The local clock and its allowed skew.
    pub clock: Clock,
    /// Who may write tenant configuration.
    pub writers: Writers,
    /// Checks operator seals.
    pub authority: &'a dyn ClaimAuthority,
}

impl Admission<'static> {
    /// Any node writes, no clock bound (tests of other rules).
    #[cfg(test)]
    pub fn open() -> Self {
        Admission {
            clock: Clock::unbounded(),
            writers: Writers::AnyNode,
            authority: &crate::mesh::pki::signing::TrustAll,
        }
    }
}

impl TenantState {
    /// Whether two states hold the same content: at once when they share their maps (a state
    /// and its clone, or a [`Merger`]'s state where an update changed nothing), else compared.
    pub fn same_content(&self, other: &TenantState) -> bool {
        let shared =
            self.records.ptr_eq(&other.records) && self.publishers.ptr_eq(&other.publishers);
        if shared {
            self.address_claims == other.address_claims
                && self.mac_claims == other.mac_claims
                && self.unique_claims == other.unique_claims
                && self.blocks == other.blocks
                && self.max_hlc == other.max_hlc
                && self.problems == other.problems
                && self.over_cap == other.over_cap
        } else {
            self == other
        }
    }

    /// Every live (not deleted) object of one kind.
    pub fn objects(&self, kind: ObjectKind) -> impl Iterator<Item = &TenantObject> {
        self.records
            .range((kind, min_id())..)
            .take_while(move |((k, _), _)| *k == kind)
            .filter_map(|(_, r)| r.body())
    }

    /// A live object by kind and id.
    pub fn get(&self, kind: ObjectKind, id: &ObjectId) -> Option<&TenantObject> {
        self.record(kind, id).and_then(|r| r.body())
    }

    /// The winning record of an object, tombstones included.
    pub fn record(&self, kind: ObjectKind, id: &ObjectId) -> Option<&Record> {
        self.records.get(&(kind, id.clone())).map(|r| r.as_ref())
    }

    typed_accessors! {
        /// Live networks.
        networks, Network, Network;
        /// Live subnets.
        subnets, Subnet, Subnet;
        /// Live external networks.
        external_networks, ExternalNetwork, ExternalNetwork;
        /// Live routers.
        routers, Router, Router;
        /// Live ports.
        ports, Port, Port;
        /// Live floating IPs.
        floating_ips, FloatingIp, FloatingIp;
    }

    /// The host serving a floating IP: the host of its port.
    pub fn fip_host(&self, fip: &FloatingIp) -> Option<&NodeId> {
        let port = fip.port.as_ref()?;
        match self.get(ObjectKind::Port, port)? {
            TenantObject::Port(p) => Some(&p.host),
            _ => None,
        }
    }

    /// The summary `view --json` prints.
    pub fn summary(&self) -> TenantSummary<'_> {
        let mut ports_by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in self.ports() {
            ports_by_host
                .entry(p.host.to_string())
                .or_default()
                .push(p.id.to_string());
        }
        let mut fips_by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in self.floating_ips() {
            if let Some(h) = self.fip_host(f) {
                fips_by_host
                    .entry(h.to_string())
                    .or_default()
                    .push(f.id.to_string());
            }
        }
        TenantSummary {
            networks: self.networks().collect(),
            subnets: self.subnets().collect(),
            external_networks: self.external_networks().collect(),
            routers: self.routers().collect(),
            ports: self.ports().collect(),
            floating_ips: self.floating_ips().collect(),
            ports_by_host,
            fips_by_host,
        }
    }
}

/// A published value as merging reads it, decoded from its text once. Decoding is pure: a value
/// decoded for one merge can be merged again while its key's version has not moved, which is
/// what the view writer does ([`crate::mesh::view::Life`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// An object or tombstone (`o/…`).
    Record(Arc<Record>),
    /// An address claim (`a/…`).
    Address(AddressClaim),
    /// A MAC claim (`m/…`).
    Mac(MacClaim),
    /// A VNI or name claim (`u/…`).
    Unique(UniqueClaim),
    /// An address or MAC block (`b/…`).
    Block(AddressBlock),
    /// It does not decode: why (a problem when merged).
    Malformed(String),
    /// Not a tenant key: merging passes over it.
    Ignored,
}

impl Decoded {
    /// Decodes the value published under `key`.
    pub fn of(key: &str, value: &str) -> Decoded {
        fn decode<T: serde::de::DeserializeOwned>(value: &str, wrap: fn(T) -> Decoded) -> Decoded {
            match mesh_proto::decode_value(value) {
                Ok(v) => wrap(v),
                Err(e) => Decoded::Malformed(e.to_string()),
            }
        }
        match key.get(..2) {
            Some("o/") => decode(value, |r| Decoded::Record(Arc::new(r))),
            Some("a/") => decode(value, Decoded::Address),
            Some("m/") => decode(value, Decoded::Mac),
            Some("u/") => decode(value, Decoded::Unique),
            Some("b/") => decode(value, Decoded::Block),
            _ => Decoded::Ignored,
        }
    }

    /// Whether merging reads the value under `key`.
    pub fn is_tenant_key(key: &str) -> bool {
        matches!(key.get(..2), Some("o/" | "a/" | "m/" | "u/" | "b/"))
    }
}

fn min_id() -> ObjectId {
    // "0" is the smallest valid id in byte order among ids ("-" cannot start one).
    ObjectId::new("0").unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{Mtu, Name, Network, NetworkSpec, Record, Vni};

    fn network_record(writer: &NodeId, physical_ms: u64) -> (String, String) {
        let net = Network::new(NetworkSpec {
            id: ObjectId::new("net1").expect("id"),
            name: Name::new("blue").expect("name"),
            vni: Vni::new(100).expect("vni"),
            mtu: Mtu::new(1450).expect("mtu"),
        })
        .expect("network");
        let version = Version {
            hlc: HlcTimestamp(physical_ms << 16),
            writer: writer.clone(),
        };
        let rec = Record::object(TenantObject::Network(net), version);
        (rec.key(), mesh_proto::encode_value(&rec).expect("encode"))
    }

    #[test]
    fn a_node_over_its_port_and_claim_caps_is_refused_the_excess_and_counted() {
        let host = NodeId::new("n1").expect("id");
        let version = Version {
            hlc: HlcTimestamp(1 << 16),
            writer: host.clone(),
        };
        let mut values = Vec::new();
        for i in 0..MAX_PORTS_PER_HOST + 3 {
            let port = mesh_proto::Port::new(mesh_proto::PortSpec {
                id: ObjectId::new(format!("port-{i:012x}")).expect("id"),
                name: Name::new(format!("vm{i}")).expect("name"),
                network: ObjectId::new("net1").expect("id"),
                mac: MacAddr::new([0xfa, 0x16, 0x3e, 0, (i >> 8) as u8, i as u8]).expect("mac"),
                fixed_ips: vec![Ipv4Addr::from(0x0a00_0000 + i as u32 + 1)],
                host: host.clone(),
                device: None,
                allowed_address_pairs: Vec::new(),
                metadata: Default::default(),
            })
            .expect("port");
            let rec = Record::object(TenantObject::Port(port), version.clone());
            values.push((rec.key(), mesh_proto::encode_value(&rec).expect("encode")));
        }
        for i in 0..MAX_CLAIMS_PER_NODE + 5 {
            let claim = AddressClaim {
                pool: ObjectId::new("sub1").expect("id"),
                ip: Ipv4Addr::from(0x0b00_0000 + i as u32),
                holder: ObjectId::new("port-1").expect("id"),
                version: version.clone(),
            };
            values.push((
                claim.key(),
                mesh_proto::encode_value(&claim).expect("encode"),
            ));
        }
        let s = TenantState::merge(
            values.iter().map(|(k, v)| (&host, k.as_str(), v.as_str())),
            &Admission::open(),
        );
        assert_eq!(s.ports().count(), MAX_PORTS_PER_HOST);
        assert_eq!(s.address_claims.len(), MAX_CLAIMS_PER_NODE);
        assert_eq!(s.over_cap.get(&host), Some(&8));
        assert_eq!(s.problems.len(), 1, "one line per node: {:?}", s.problems);
        assert!(s.problems[0].contains("over its caps"), "{:?}", s.problems);
    }

    #[test]
    fn a_record_stamped_beyond_the_allowed_skew_is_refused_and_does_not_move_the_clock() {
        let writer = NodeId::new("n1").expect("id");
        let clock = Clock {
            now_ms: 1_000_000,
            max_skew_ms: 10_000,
        };
        let (key, far) = network_record(&writer, 1_000_000 + 10_001);
        let admission = Admission {
            clock,
            ..Admission::open()
        };
        let s = TenantState::merge([(&writer, key.as_str(), far.as_str())], &admission);
        assert_eq!(
            s.networks().count(),
            0,
            "the far-future record is not merged"
        );
        assert_eq!(
            s.max_hlc,
            HlcTimestamp::default(),
            "the clock is not pinned"
        );
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0].contains("skew"), "{:?}", s.problems);

        let (key, near) = network_record(&writer, 1_000_000 + 10_000);
        let s = TenantState::merge([(&writer, key.as_str(), near.as_str())], &admission);
        assert_eq!(
            s.networks().count(),
            1,
            "a record within the skew is merged"
        );
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }
}
