//! What a node tells the cluster about itself.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, MacAddr, Name, NodeId};

/// The role a node plays, as in Neutron's `agent_mode`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeMode {
    /// Compute node: hosts ports, routes east-west, serves floating IPs of its ports.
    Dvr,
    /// Network node: may hold SNAT for routers; may also host ports.
    DvrSnat,
    /// Compute node without an external interface: its FIPs are served by the SNAT holder.
    DvrNoExternal,
}

impl NodeMode {
    /// The mode's configuration spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeMode::Dvr => "dvr",
            NodeMode::DvrSnat => "dvr_snat",
            NodeMode::DvrNoExternal => "dvr_no_external",
        }
    }
}

impl fmt::Display for NodeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "dvr" => Ok(NodeMode::Dvr),
            "dvr_snat" => Ok(NodeMode::DvrSnat),
            "dvr_no_external" => Ok(NodeMode::DvrNoExternal),
            other => Err(Error::invalid(
                "mode",
                format!("{other:?} is not one of dvr, dvr_snat, dvr_no_external"),
            )),
        }
    }
}

/// A VRRP-style priority, 1 (lowest) to 254 (highest).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    /// Validates a priority.
    pub fn new(p: u8) -> Result<Self, Error> {
        if !(1..=254).contains(&p) {
            return Err(Error::invalid(
                "snat_priority",
                format!("{p} is outside 1..=254"),
            ));
        }
        Ok(Priority(p))
    }

    /// The numeric value.
    pub fn get(&self) -> u8 {
        self.0
    }

    /// The lowest priority, 1.
    pub const LOWEST: Priority = Priority(1);
}

impl TryFrom<u8> for Priority {
    type Error = Error;
    fn try_from(p: u8) -> Result<Self, Error> {
        Priority::new(p)
    }
}
impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}
impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Debug for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Linux interface name: 1–15 bytes, no `/`, `:`, whitespace or control characters, not `.`/`..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName(String);

impl InterfaceName {
    /// Validates an interface name.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if !ok {
            return Err(Error::invalid(
                "interface",
                format!("{name:?} is not a Linux interface name (1-15 printable characters, no '/' or ':')"),
            ));
        }
        Ok(InterfaceName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for InterfaceName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        InterfaceName::new(s)
    }
}
impl From<InterfaceName> for String {
    fn from(n: InterfaceName) -> String {
        n.0
    }
}
impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// How a node reaches one external network.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ExternalMapping {
    /// The node's interface on that external network.
    pub interface: InterfaceName,
}

/// The facts a node publishes about itself under its own gossip key space.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "NodeFactsFields", into = "NodeFactsFields")]
pub struct NodeFacts(NodeFactsFields);

/// The field set behind [`NodeFacts`], as it is encoded; it becomes a `NodeFacts` only through
/// [`NodeFactsFields::check`], whether built in code or decoded.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
struct NodeFactsFields {
    node_id: NodeId,
    mode: NodeMode,
    tunnel_ip: Ipv4Addr,
    dvr_mac: MacAddr,
    snat_priority: Priority,
    external: BTreeMap<Name, ExternalMapping>,
    draining: bool,
}

impl NodeFactsFields {
    /// The tunnel IP must be a unicast host address; the DVR MAC must be locally administered;
    /// a `dvr_no_external` node cannot map external networks.
    fn check(&self) -> Result<(), Error> {
        let ip = self.tunnel_ip;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(Error::invalid(
                "tunnel_ip",
                format!("{ip} is not a unicast host address"),
            ));
        }
        if self.dvr_mac.octets()[0] & 0b10 == 0 {
            return Err(Error::invalid(
                "dvr_mac",
                format!("{} is not a locally administered address", self.dvr_mac),
            ));
        }
        if self.mode == NodeMode::DvrNoExternal && !self.external.is_empty() {
            return Err(Error::invalid(
                "external",
                "a dvr_no_external node cannot map external networks",
            ));
        }
        Ok(())
    }
}

impl TryFrom<NodeFactsFields> for NodeFacts {
    type Error = Error;
    fn try_from(f: NodeFactsFields) -> Result<Self, Error> {
        f.check()?;
        Ok(NodeFacts(f))
    }
}

impl From<NodeFacts> for NodeFactsFields {
    fn from(f: NodeFacts) -> Self {
        f.0
    }
}

impl NodeFacts {
    /// Builds and checks a node's facts.
    ///
    /// The tunnel IP must be a unicast host address; the DVR MAC must be locally administered;
    /// a `dvr_no_external` node cannot map external networks.
    pub fn new(
        node_id: NodeId,
        mode: NodeMode,
        tunnel_ip: Ipv4Addr,
        dvr_mac: MacAddr,
        snat_priority: Priority,
        external: BTreeMap<Name, ExternalMapping>,
    ) -> Result<Self, Error> {
        NodeFacts::try_from(NodeFactsFields {
            node_id,
            mode,
            tunnel_ip,
            dvr_mac,
            snat_priority,
            external,
            draining: false,
        })
    }

    /// Marks the node as draining (no new SNAT holdership) or not.
    pub fn with_draining(mut self, draining: bool) -> Self {
        self.0.draining = draining;
        self
    }

    /// The node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.0.node_id
    }
    /// The node's mode.
    pub fn mode(&self) -> NodeMode {
        self.0.mode
    }
    /// The node's VXLAN tunnel endpoint address.
    pub fn tunnel_ip(&self) -> Ipv4Addr {
        self.0.tunnel_ip
    }
    /// The source MAC of frames this node routes onto the tunnel.
    pub fn dvr_mac(&self) -> MacAddr {
        self.0.dvr_mac
    }
    /// The node's default SNAT priority.
    pub fn snat_priority(&self) -> Priority {
        self.0.snat_priority
    }
    /// External networks this node reaches, by name.
    pub fn external(&self) -> &BTreeMap<Name, ExternalMapping> {
        &self.0.external
    }
    /// Whether the node is handing off SNAT for maintenance.
    pub fn draining(&self) -> bool {
        self.0.draining
    }
}

/// The DVR MAC derived from a node id: `fa:16:3f` followed by 24 bits of the id's FNV-1a hash.
///
/// `fa` has the locally administered bit set and the multicast bit clear. Two ids can hash alike;
/// the cluster view resolves such a clash deterministically.
pub fn dvr_mac_for(node_id: &NodeId) -> MacAddr {
    let [a, b, c] = crate::hash::fnv24(&[node_id.as_str().as_bytes()]);
    // The fixed prefix is unicast and locally administered, so `new` cannot fail; the suffix is
    // never all-zero in the prefix bytes.
    MacAddr::new([0xfa, 0x16, 0x3f, a, b, c]).unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(mode: NodeMode, ext: bool) -> Result<NodeFacts, Error> {
        let id = NodeId::new("c1").unwrap();
        let mut external = BTreeMap::new();
        if ext {
            external.insert(
                Name::new("public").unwrap(),
                ExternalMapping {
                    interface: InterfaceName::new("eth1").unwrap(),
                },
            );
        }
        NodeFacts::new(
            id.clone(),
            mode,
            Ipv4Addr::new(10, 0, 0, 1),
            dvr_mac_for(&id),
            Priority::new(100).unwrap(),
            external,
        )
    }

    #[test]
    fn dvr_no_external_cannot_map_external_networks() {
        assert!(facts(NodeMode::DvrNoExternal, true).is_err());
        assert!(facts(NodeMode::DvrNoExternal, false).is_ok());
        assert!(facts(NodeMode::DvrSnat, true).is_ok());
    }

    #[test]
    fn dvr_mac_is_stable_unicast_and_local() {
        let id = NodeId::new("compute-1").unwrap();
        let mac = dvr_mac_for(&id);
        assert_eq!(mac, dvr_mac_for(&id));
        assert_eq!(mac.octets()[..3], [0xfa, 0x16, 0x3f]);
        assert_ne!(mac, dvr_mac_for(&NodeId::new("compute-2").unwrap()));
    }

    #[test]
    fn priority_bounds() {
        assert!(Priority::new(0).is_err());
        assert!(Priority::new(255).is_err());
        assert!(Priority::new(1).is_ok() && Priority::new(254).is_ok());
    }

    #[test]
    fn interface_names() {
        assert!(InterfaceName::new("eth1").is_ok());
        assert!(InterfaceName::new("x".repeat(16)).is_err());
        assert!(InterfaceName::new("a/b").is_err());
        assert!(InterfaceName::new("").is_err());
        assert!(InterfaceName::new("a b").is_err());
    }
}
