//! The kernel objects dvrmesh programs, as plain ordered data.
//!
//! [`Desired`] (what `plan` wants) and [`Observed`] (what `observe` found among the objects dvrmesh
//! owns) have the same shape, so `diff` is set difference. Every key type is `Ord`, so two plans of
//! the same view are byte-for-byte equal and iterate in the same order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use mesh_proto::{Ipv4Cidr, MacAddr};
use serde::{Deserialize, Serialize};

/// Route protocol number marking routes (and rules) dvrmesh owns.
pub const ROUTE_PROTOCOL: u8 = 147;
/// Name prefixes of the links dvrmesh owns (and so observes and may delete). A VM's end of a port's
/// veth pair (`ve…`) and devices made by others are deliberately not among them.
pub const OWNED_LINK_PREFIXES: &[&str] = &[
    "br-", "vx-", "tqr", "tsg", "tqg", "tfg", "tap", "qr-", "sg-", "qg-", "rfp-", "fpr-", "fg-",
    "tmd", "md-",
];

/// Whether dvrmesh owns a link of this name.
pub fn owns_link(name: &str) -> bool {
    OWNED_LINK_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Prefix of every nft table dvrmesh owns.
pub const NFT_TABLE_PREFIX: &str = "dvrmesh";

/// A network namespace: the agent's own (the host's), or a named one under `/run/netns`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Netns {
    /// The namespace the agent runs in.
    Host,
    /// A named namespace (`qrouter-…`, `snat-…`, `fip-…`).
    Named(String),
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Netns::Host => f.write_str("host"),
            Netns::Named(n) => f.write_str(n),
        }
    }
}

/// What kind of link.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// A VXLAN device with learning off (`nolearning`), bound to the node's tunnel IP.
    Vxlan {
        /// VNI.
        vni: u32,
        /// Local tunnel endpoint.
        local: Ipv4Addr,
        /// UDP destination port (4789).
        port: u16,
    },
    /// One end of a veth pair; the peer is created with it, in `peer_ns`.
    Veth {
        /// The peer's name.
        peer: String,
        /// The peer's namespace.
        peer_ns: Netns,
    },
    /// A device someone else created (a VM's tap, a physical interface): dvrmesh only sets its
    /// master, MTU and state, and never creates or deletes it.
    External,
}

/// Attributes dvrmesh sets on a link.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct LinkSpec {
    /// Kind.
    pub kind: LinkKind,
    /// MTU, if dvrmesh sets it.
    pub mtu: Option<u32>,
    /// MAC, if dvrmesh sets it.
    pub mac: Option<MacAddr>,
    /// Bridge it is a port of.
    pub master: Option<String>,
    /// Bridge-port learning, for ports of a bridge (`Some(false)` = off).
    pub learning: Option<bool>,
    /// Bridge-port isolation, for ports of a bridge (`Some(true)` = on: the port forwards only
    /// to ports that are not isolated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolated: Option<bool>,
    /// IPv6 on the device (`Some(false)` = disabled before it first comes up). The planner
    /// disables it on every device it makes in the host namespace (see [`crate::plan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
}

impl LinkSpec {
    /// A link of `kind` with no attribute set (each is left as the kernel makes it).
    pub fn of(kind: LinkKind) -> LinkSpec {
        LinkSpec {
            kind,
            mtu: None,
            mac: None,
            master: None,
            learning: None,
            isolated: None,
            ipv6: None,
        }
    }
}

/// An IPv4 address on an interface.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct AddrSpec {
    /// Namespace.
    pub ns: Netns,
    /// Interface.
    pub dev: String,
    /// Address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

/// A unicast route with dvrmesh's protocol number.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Namespace.
    pub ns: Netns,
    /// Routing table.
    pub table: u32,
    /// Destination.
    pub dst: Ipv4Cidr,
    /// Gateway, if any.
    pub via: Option<Ipv4Addr>,
    /// Output interface.
    pub dev: String,
}

/// What a policy rule matches.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSelector {
    /// `from <prefix>`.
    From(Ipv4Cidr),
    /// `fwmark <mark>/<mask>`.
    Fwmark {
        /// Mark.
        mark: u32,
        /// Mask.
        mask: u32,
    },
    /// `iif <dev>`.
    Iif(String),
}

/// A policy-routing rule with action "lookup table" and dvrmesh's protocol number.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct RuleSpec {
    /// Namespace.
    pub ns: Netns,
    /// Priority.
    pub priority: u32,
    /// Match.
    pub selector: RuleSelector,
    /// Table looked up.
    pub table: u32,
}

/// A permanent neighbour (ARP) entry.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct NeighSpec {
    /// Namespace.
    pub ns: Netns,
    /// Interface.
    pub dev: String,
    /// Address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: MacAddr,
}

/// Where a forwarding-database entry sends frames.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdbTarget {
    /// `self dst <vtep> permanent` on a VXLAN device: unicast to this MAC goes to that VTEP.
    Vtep(Ipv4Addr),
    /// `00:00:00:00:00:00 self dst <vtep> permanent` (appended): head-end replication of BUM
    /// traffic to that VTEP. The entry's MAC is ignored.
    Flood(Ipv4Addr),
    /// `master static sticky` on a bridge port: the bridge sends this MAC to this port.
    Bridge,
}

/// A forwarding-database entry.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct FdbSpec {
    /// Namespace.
    pub ns: Netns,
    /// The device (a VXLAN device, or a bridge port).
    pub dev: String,
    /// The MAC (all-zero for flood entries).
    pub mac: [u8; 6],
    /// Target.
    pub target: FdbTarget,
}

/// The device of an interface sysctl (`net.ipv4.conf.<dev>.…`, `net.ipv4.neigh.<dev>.…`).
pub fn sysctl_device(key: &str) -> Option<&str> {
    let mut parts = key.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some("conf" | "neigh"), Some(dev))
            if dev != "all" && dev != "default" =>
        {
            Some(dev)
        }
        _ => None,
    }
}

/// nft table family.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NftFamily {
    /// `ip`.
    Ip,
    /// `netdev`.
    Netdev,
}

impl NftFamily {
    /// The nft keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            NftFamily::Ip => "ip",
            NftFamily::Netdev => "netdev",
        }
    }
}

/// Identifies an nft table.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct NftKey {
    /// Namespace.
    pub ns: Netns,
    /// Family.
    pub family: NftFamily,
    /// Name (always starts with [`NFT_TABLE_PREFIX`]).
    pub name: String,
}

/// An nft table dvrmesh owns: in `Desired`, the table to load; in `Observed`, the same table when
/// the kernel's copy carries that table's digest (the Linux backend stores it in the table's
/// comment, as the kernel cannot give the text back), else what was found instead.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum NftContent {
    /// This table.
    Table(crate::nft::Table),
    /// Something else: a table with another digest (its comment, if any).
    Unknown(Option<String>),
}

impl std::fmt::Display for NftContent {
    /// A table's text, or what stands in its place.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NftContent::Table(t) => write!(f, "{t}"),
            NftContent::Unknown(c) => {
                write!(f, "<unknown digest {}>", c.as_deref().unwrap_or("none"))
            }
        }
    }
}

impl Serialize for NftContent {
    /// A table as the text `nft -f` reads (the printer's output).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NftContent::Table(t) => t.serialize(s),
            NftContent::Unknown(_) => s.collect_str(self),
        }
    }
}

/// Everything dvrmesh wants (or found) in the kernel of one node.
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize)]
pub struct KernelState {
    /// Named namespaces.
    pub namespaces: BTreeSet<String>,
    /// Sysctls by (namespace, dotted key such as `net.ipv4.ip_forward`).
    #[serde(with = "entries")]
    pub sysctls: BTreeMap<(Netns, String), String>,
    /// Links by (namespace, name).
    #[serde(with = "entries")]
    pub links: BTreeMap<(Netns, String), LinkSpec>,
    /// Addresses.
    pub addrs: BTreeSet<AddrSpec>,
    /// Routes.
    pub routes: BTreeSet<RouteSpec>,
    /// Rules.
    pub rules: BTreeSet<RuleSpec>,
    /// Neighbours.
    pub neighs: BTreeSet<NeighSpec>,
    /// FDB entries.
    pub fdb: BTreeSet<FdbSpec>,
    /// nft tables.
    #[serde(with = "entries")]
    pub nft: BTreeMap<NftKey, NftContent>,
}

/// Maps with structured keys serialise as lists of `[key, value]` pairs (JSON keys must be text).
mod entries {
    use std::collections::BTreeMap;

    use serde::{Serialize, Serializer};

    pub(super) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }
}

impl KernelState {
    /// How many objects of each kind, by the kind's name (`namespaces`, `links`, …): for
    /// metrics, progress lines and benchmarks.
    pub fn kind_counts(&self) -> [(&'static str, usize); 9] {
        [
            ("namespaces", self.namespaces.len()),
            ("links", self.links.len()),
            ("addresses", self.addrs.len()),
            ("routes", self.routes.len()),
            ("rules", self.rules.len()),
            ("neighbours", self.neighs.len()),
            ("fdb_entries", self.fdb.len()),
            ("nft_tables", self.nft.len()),
            ("sysctls", self.sysctls.len()),
        ]
    }

    /// [`KernelState::kind_counts`] as one line of text.
    pub fn counts(&self) -> String {
        let parts: Vec<String> = self
            .kind_counts()
            .iter()
            .map(|(kind, n)| format!("{n} {}", kind.replace('_', " ")))
            .collect();
        parts.join(", ")
    }
}

/// What `plan` wants.
pub type Desired = KernelState;
/// What `observe` found among the objects dvrmesh owns.
pub type Observed = KernelState;

/// One change to the kernel. `diff` orders them so that namespaces and links exist before what
/// lives on them, and deletions come after additions (make before break).
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    /// Create a named namespace.
    AddNamespace {
        /// Name.
        name: String,
    },
    /// Write a sysctl.
    SetSysctl {
        /// Namespace.
        ns: Netns,
        /// Dotted key.
        key: String,
        /// Value.
        value: String,
    },
    /// Create a link (and, for a veth, its peer) with its attributes, and set it up.
    AddLink {
        /// Namespace.
        ns: Netns,
        /// Name.
        name: String,
        /// Attributes.
        spec: LinkSpec,
    },
    /// Change MTU, MAC, master or learning of an existing link (kind unchanged) and set it up.
    SetLink {
        /// Namespace.
        ns: Netns,
        /// Name.
        name: String,
        /// Attributes wanted.
        spec: LinkSpec,
    },
    /// Add an address.
    AddAddr(AddrSpec),
    /// Add a route.
    AddRoute(RouteSpec),
    /// Add a rule.
    AddRule(RuleSpec),
    /// Add or replace a neighbour.
    AddNeigh(NeighSpec),
    /// Add an FDB entry.
    AddFdb(FdbSpec),
    /// Create or replace an nft table atomically.
    ReplaceNft {
        /// Table.
        key: NftKey,
        /// Its content (serialised as its text).
        table: crate::nft::Table,
    },
    /// Delete an nft table.
    DelNft(NftKey),
    /// Delete an FDB entry.
    DelFdb(FdbSpec),
    /// Delete a neighbour.
    DelNeigh(NeighSpec),
    /// Delete a rule.
    DelRule(RuleSpec),
    /// Delete a route.
    DelRoute(RouteSpec),
    /// Delete an address.
    DelAddr(AddrSpec),
    /// Delete a link (its veth peer goes with it).
    DelLink {
        /// Namespace.
        ns: Netns,
        /// Name.
        name: String,
    },
    /// Delete a named namespace and everything in it.
    DelNamespace {
        /// Name.
        name: String,
    },
}

/// What applying a batch of ops did.
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Ops applied (including those that were already in effect: EEXIST/ENOENT).
    pub applied: usize,
    /// Ops that failed, with the error; the rest of the batch was still attempted.
    pub failed: Vec<(String, String)>,
    /// Where the backend measures it: per kind of op, how many and how long (microseconds).
    #[serde(default)]
    pub time_by_kind: BTreeMap<String, (u32, u64)>,
}

/// Access to one node's kernel: the Linux backend, or an in-memory fake for tests.
pub trait Kernel {
    /// Reads back the objects dvrmesh owns. `hint` names the sysctls to read (sysctls cannot be
    /// listed by owner).
    fn observe(&mut self, hint: &Desired) -> Result<Observed, crate::Error>;
    /// [`Kernel::observe`] of what `scope` takes only: whole namespaces, and devices and nft
    /// tables of others (see [`crate::reconcile_pass`]). The default observes everything and
    /// keeps the scope.
    fn observe_scoped(
        &mut self,
        hint: &Desired,
        scope: &crate::Scope,
    ) -> Result<Observed, crate::Error> {
        Ok(self.observe(hint)?.restricted_to(scope))
    }
    /// Applies ops in order. Adding what exists and deleting what is gone count as success.
    fn apply(&mut self, ops: &[Op]) -> Result<ApplyReport, crate::Error>;
}
