//! Tenant objects: networks, subnets, external networks, routers, ports and floating IPs.
//!
//! Each object is a validated wrapper around a public `*Spec` field set: build the spec, pass it to
//! `new`, and read fields through `Deref`. Decoding goes through the same `new`, so an invalid
//! object cannot exist. Checks that span several objects (duplicate VNI, overlapping subnets on a
//! router) belong to whoever holds the whole configuration, not here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::node::InterfaceName;
use crate::{Error, Ipv4Cidr, Ipv4Range, MacAddr, Mtu, Name, NodeId, ObjectId, Priority, Vni};

/// Most router interfaces one router may have.
pub const MAX_ROUTER_INTERFACES: usize = 64;
/// Most extra routes one router may have.
pub const MAX_ROUTER_ROUTES: usize = 128;
/// Most fixed IPs one port may have.
pub const MAX_FIXED_IPS: usize = 8;
/// Most allowed address pairs one port may have.
pub const MAX_ADDRESS_PAIRS: usize = 16;
/// Longest preemption delay accepted, in milliseconds (one hour).
pub const MAX_PREEMPT_DELAY_MS: u32 = 3_600_000;
/// Most bytes of user data a port may carry: a port record with its metadata must fit one
/// gossip value ([`crate::MAX_ENCODED_BYTES`], 16 KiB), so user data gets half of it.
pub const MAX_USER_DATA_BYTES: usize = 8 * 1024;
/// Most public keys a port may carry.
pub const MAX_SSH_KEYS: usize = 4;
/// Longest public key (one line of `authorized_keys`; a 4096-bit RSA key is about 750 bytes).
pub const MAX_SSH_KEY_BYTES: usize = 1024;
/// Longest host name (one DNS label).
pub const MAX_HOSTNAME_CHARS: usize = 63;

macro_rules! validated {
    ($(#[$doc:meta])* $name:ident, $spec:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
        #[serde(try_from = "Spec", into = "Spec")]
        pub struct $name($spec);

        type Spec = $spec;

        impl Deref for $name {
            type Target = $spec;
            fn deref(&self) -> &$spec {
                &self.0
            }
        }
        impl TryFrom<$spec> for $name {
            type Error = Error;
            fn try_from(spec: $spec) -> Result<Self, Error> {
                $name::new(spec)
            }
        }
        impl From<$name> for $spec {
            fn from(v: $name) -> $spec {
                v.0
            }
        }
        impl $name {
            /// Gives back the field set, e.g. to change it and validate again.
            pub fn into_spec(self) -> $spec {
                self.0
            }
        }
    };
}

// Each `validated!` expansion defines a private `Spec` alias, so each lives in its own module.
mod network {
    use super::*;

    /// The fields of a tenant network.
    #[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
    pub struct NetworkSpec {
        /// Stable id.
        pub id: ObjectId,
        /// Operator's name.
        pub name: Name,
        /// The VXLAN segment carrying it.
        pub vni: Vni,
        /// The MTU of every port and router interface on it.
        pub mtu: Mtu,
    }

    validated!(
        /// A tenant L2 overlay segment.
        Network,
        NetworkSpec
    );

    impl Network {
        /// Validates a network (all its fields are already valid types).
        pub fn new(spec: NetworkSpec) -> Result<Self, Error> {
            Ok(Network(spec))
        }
    }
}

mod subnet {
    use super::*;

    /// The fields of a subnet.
    #[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
    pub struct SubnetSpec {
        /// Stable id.
        pub id: ObjectId,
        /// Operator's name.
        pub name: Name,
        /// The network it lives on.
        pub network: ObjectId,
        /// Its IPv4 prefix.
        pub cidr: Ipv4Cidr,
        /// The router interface address on it.
        pub gateway: Ipv4Addr,
        /// Addresses handed out to ports.
        pub pool: Ipv4Range,
        /// What each node's DHCP server hands out for ports on it.
        #[serde(default)]
        pub dhcp: SubnetDhcp,
    }

    validated!(
        /// An IPv4 subnet of a tenant network.
        Subnet,
        SubnetSpec
    );

    impl Subnet {
        /// Checks prefix length 8 to 29, gateway and pool inside the usable hosts, gateway outside
        /// the pool.
        pub fn new(spec: SubnetSpec) -> Result<Self, Error> {
            check_addressing("subnet", spec.cidr, spec.gateway, spec.pool)?;
            spec.dhcp.check()?;
            Ok(Subnet(spec))
        }
    }
}

/// Most DNS servers a subnet hands out.
pub const MAX_DNS_SERVERS: usize = 4;
/// Longest DNS domain a subnet hands out.
pub const MAX_DOMAIN_CHARS: usize = 253;

/// A subnet's DHCP settings: on by default, with optional DNS servers and domain.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SubnetDhcp {
    /// Whether nodes answer DHCP for ports on the subnet.
    pub enabled: bool,
    /// DNS servers (option 6), at most [`MAX_DNS_SERVERS`].
    pub dns_servers: Vec<Ipv4Addr>,
    /// DNS domain (option 15): dot-separated labels of letters, digits and hyphens.
    pub domain: Option<String>,
}

impl Default for SubnetDhcp {
    fn default() -> Self {
        SubnetDhcp {
            enabled: true,
            dns_servers: Vec::new(),
            domain: None,
        }
    }
}

impl SubnetDhcp {
    fn check(&self) -> Result<(), Error> {
        if self.dns_servers.len() > MAX_DNS_SERVERS {
            return Err(Error::invalid(
                "subnet.dns_servers",
                format!("at most {MAX_DNS_SERVERS}"),
            ));
        }
        if let Some(ip) = self
            .dns_servers
            .iter()
            .find(|ip| ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast())
        {
            return Err(Error::invalid(
                "subnet.dns_servers",
                format!("{ip} is not a unicast address"),
            ));
        }
        if let Some(d) = &self.domain {
            check_domain(d)?;
        }
        Ok(())
    }
}

fn check_domain(d: &str) -> Result<(), Error> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if d.is_empty() || d.len() > MAX_DOMAIN_CHARS || !d.split('.').all(label_ok) {
        return Err(Error::invalid(
            "subnet.domain",
            format!("{d:?} is not a DNS domain (labels of letters, digits, hyphens; at most {MAX_DOMAIN_CHARS} characters)"),
        ));
    }
    Ok(())
}

mod external {
    use super::*;

    /// The fields of an external (provider) network.
    #[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
    pub struct ExternalNetworkSpec {
        /// Stable id.
        pub id: ObjectId,
        /// Operator's name; nodes map it to an interface by this name.
        pub name: Name,
        /// The public prefix.
        pub cidr: Ipv4Cidr,
        /// The upstream router.
        pub gateway: Ipv4Addr,
        /// Addresses for router gateways, FIPs and per-node FIP gateways.
        pub pool: Ipv4Range,
    }

    validated!(
        /// The provider network that routers reach the outside through.
        ExternalNetwork,
        ExternalNetworkSpec
    );

    impl ExternalNetwork {
        /// Same addressing checks as a subnet.
        pub fn new(spec: ExternalNetworkSpec) -> Result<Self, Error> {
            check_addressing("external network", spec.cidr, spec.gateway, spec.pool)?;
            Ok(ExternalNetwork(spec))
        }
    }
}

fn check_addressing(
    what: &'static str,
    cidr: Ipv4Cidr,
    gateway: Ipv4Addr,
    pool: Ipv4Range,
) -> Result<(), Error> {
    if !(8..=29).contains(&cidr.prefix()) {
        return Err(Error::invalid(
            what,
            format!("{cidr}: prefix length must be 8 to 29"),
        ));
    }
    if !cidr.is_usable_host(gateway) {
        return Err(Error::invalid(
            what,
            format!("gateway {gateway} is not a usable host address of {cidr}"),
        ));
    }
    if !cidr.is_usable_host(pool.first()) || !cidr.is_usable_host(pool.last()) {
        return Err(Error::invalid(
            what,
            format!("pool {pool} is not inside the usable hosts of {cidr}"),
        ));
    }
    if pool.contains(gateway) {
        return Err(Error::invalid(
            what,
            format!("pool {pool} contains the gateway {gateway}"),
        ));
    }
    Ok(())
}

/// A router's connection to an external network.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct RouterGateway {
    /// The external network.
    pub external_network: ObjectId,
    /// Whether the router's subnets are source-NATed to its external address.
    pub enable_snat: bool,
    /// The router's address on the external network (`qg-` on the SNAT holder), once allocated.
    pub external_ip: Option<Ipv4Addr>,
}

/// The address and MAC of a router's SNAT port (`sg-`) on one of its subnets. Every node sends
/// that subnet's outbound traffic to it; it lives on whichever node holds SNAT for the router.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct SnatPort {
    /// Address on the subnet (not the gateway).
    pub ip: Ipv4Addr,
    /// MAC.
    pub mac: MacAddr,
}

/// A static route of a router.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ExtraRoute {
    /// Destination prefix.
    pub destination: Ipv4Cidr,
    /// Next hop, on one of the router's subnets.
    pub nexthop: Ipv4Addr,
}

/// SNAT high-availability settings of a router.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HaSettings {
    /// Per-node priority overrides for this router.
    pub priorities: BTreeMap<NodeId, Priority>,
    /// Whether a better candidate takes over from a live holder.
    pub preempt: bool,
    /// How long a better candidate waits before preempting, in milliseconds.
    pub preempt_delay_ms: u32,
}

impl Default for HaSettings {
    fn default() -> Self {
        HaSettings {
            priorities: BTreeMap::new(),
            preempt: true,
            preempt_delay_ms: 0,
        }
    }
}

mod router {
    use super::*;

    /// The fields of a router.
    #[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
    pub struct RouterSpec {
        /// Stable id.
        pub id: ObjectId,
        /// Operator's name.
        pub name: Name,
        /// The subnets it has an interface on.
        pub interfaces: BTreeSet<ObjectId>,
        /// Its external gateway, if any.
        pub gateway: Option<RouterGateway>,
        /// Static routes.
        pub routes: BTreeSet<ExtraRoute>,
        /// SNAT high-availability settings.
        pub ha: HaSettings,
        /// SNAT ports by subnet, allocated when the router has a gateway.
        pub snat_ports: BTreeMap<ObjectId, SnatPort>,
    }

    validated!(
        /// A distributed router.
        Router,
        RouterSpec
    );

    impl Router {
        /// Checks the interface and route counts, the routes' next hops and the HA delay.
        pub fn new(spec: RouterSpec) -> Result<Self, Error> {
            if spec.interfaces.len() > MAX_ROUTER_INTERFACES {
                return Err(Error::invalid(
                    "router.interfaces",
                    format!(
                        "{} interfaces, at most {MAX_ROUTER_INTERFACES}",
                        spec.interfaces.len()
                    ),
                ));
            }
            if spec.routes.len() > MAX_ROUTER_ROUTES {
                return Err(Error::invalid(
                    "router.routes",
                    format!("{} routes, at most {MAX_ROUTER_ROUTES}", spec.routes.len()),
                ));
            }
            for r in &spec.routes {
                if r.nexthop.is_unspecified()
                    || r.nexthop.is_multicast()
                    || r.nexthop.is_broadcast()
                {
                    return Err(Error::invalid(
                        "router.routes",
                        format!(
                            "next hop {} of {} is not a unicast address",
                            r.nexthop, r.destination
                        ),
                    ));
                }
            }
            if let Some(stray) = spec
                .snat_ports
                .keys()
                .find(|s| !spec.interfaces.contains(*s))
            {
                return Err(Error::invalid(
                    "router.snat_ports",
                    format!("SNAT port on subnet {stray}, which is not an interface of the router"),
                ));
            }
            if spec.ha.preempt_delay_ms > MAX_PREEMPT_DELAY_MS {
                return Err(Error::invalid(
                    "router.ha.preempt_delay",
                    format!("{} ms is over one hour", spec.ha.preempt_delay_ms),
                ));
            }
            Ok(Router(spec))
        }
    }
}

/// What the metadata service serves for a port besides its own fields: a host name (the port's
/// name when absent), user data and public keys. All optional, all bounded.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct PortMetadata {
    /// Host name: one DNS label of letters, digits and hyphens.
    #[serde(default)]
    pub hostname: Option<String>,
    /// User data (e.g. a cloud-init file), text of at most [`MAX_USER_DATA_BYTES`].
    #[serde(default)]
    pub user_data: Option<String>,
    /// Public keys, one `authorized_keys` line each, at most [`MAX_SSH_KEYS`].
    #[serde(default)]
    pub ssh_keys: Vec<String>,
}

impl PortMetadata {
    /// Whether nothing is set (the port encodes as before metadata existed).
    pub fn is_empty(&self) -> bool {
        *self == PortMetadata::default()
    }

    /// Checks every field against its limits (what [`Port::new`] checks of it).
    pub fn check(&self) -> Result<(), Error> {
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= MAX_HOSTNAME_CHARS
                && !h.starts_with('-')
                && !h.ends_with('-')
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(Error::invalid(
                    "port.hostname",
                    format!("{h:?} is not a host name (one label of letters, digits, hyphens; at most {MAX_HOSTNAME_CHARS} characters)"),
                ));
            }
        }
        if let Some(u) = &self.user_data {
            if u.len() > MAX_USER_DATA_BYTES {
                return Err(Error::invalid(
                    "port.user_data",
                    format!("{} bytes, at most {MAX_USER_DATA_BYTES}", u.len()),
                ));
            }
        }
        if self.ssh_keys.len() > MAX_SSH_KEYS {
            return Err(Error::invalid(
                "port.ssh_keys",
                format!("{} keys, at most {MAX_SSH_KEYS}", self.ssh_keys.len()),
            ));
        }
        for k in &self.ssh_keys {
            let one_line = !k.is_empty() && !k.chars().any(|c| c.is_control());
            if !one_line || k.len() > MAX_SSH_KEY_BYTES {
                return Err(Error::invalid(
                    "port.ssh_keys",
                    format!(
                        "a key must be one non-empty line of at most {MAX_SSH_KEY_BYTES} bytes"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An extra address a port may use (e.g. a VIP), with an optional MAC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct AddressPair {
    /// The address or prefix.
    pub ip: Ipv4Cidr,
    /// The MAC it is used with; the port's own MAC when absent.
    pub mac: Option<MacAddr>,
}

mod port {
    use super::*;

    /// The fields of a port.
    #[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
    pub struct PortSpec {
        /// Stable id.
        pub id: ObjectId,
        /// Operator's name.
        pub name: Name,
        /// The network it attaches to.
        pub network: ObjectId,
        /// Its MAC.
        pub mac: MacAddr,
        /// Its addresses (1 to 8, distinct).
        pub fixed_ips: Vec<Ipv4Addr>,
        /// The node that hosts it and alone publishes it.
        pub host: NodeId,
        /// The host-side device (tap/veth) if the VM manager named one.
        pub device: Option<InterfaceName>,
        /// Extra addresses the VM may use.
        pub allowed_address_pairs: Vec<AddressPair>,
        /// What the metadata service tells the VM beyond the port itself (absent in records
        /// written before it existed: no host name, user data or keys).
        #[serde(default)]
        pub metadata: PortMetadata,
    }

    validated!(
        /// A VM's attachment to a network.
        Port,
        PortSpec
    );

    impl Port {
        /// Checks fixed IP and address-pair counts and that fixed IPs are distinct unicast hosts.
        pub fn new(spec: PortSpec) -> Result<Self, Error> {
            if spec.fixed_ips.is_empty() || spec.fixed_ips.len() > MAX_FIXED_IPS {
                return Err(Error::invalid(
                    "port.fixed_ips",
                    format!(
                        "{} addresses, need 1 to {MAX_FIXED_IPS}",
                        spec.fixed_ips.len()
                    ),
                ));
            }
            let distinct: BTreeSet<_> = spec.fixed_ips.iter().collect();
            if distinct.len() != spec.fixed_ips.len() {
                return Err(Error::invalid(
                    "port.fixed_ips",
                    "an address is listed twice",
                ));
            }
            for ip in &spec.fixed_ips {
                if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                    return Err(Error::invalid(
                        "port.fixed_ips",
                        format!("{ip} is not a unicast host address"),
                    ));
                }
            }
            if spec.allowed_address_pairs.len() > MAX_ADDRESS_PAIRS {
                return Err(Error::invalid(
                    "port.allowed_address_pairs",
                    format!(
                        "{} pairs, at most {MAX_ADDRESS_PAIRS}",
                        spec.allowed_address_pairs.len()
                    ),
                ));
            }
            spec.metadata.check()?;
            Ok(Port(spec))
        }
    }
}

mod floating_ip {
    use super::*;

    /// The fields of a floating IP.
    #[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
    pub struct FloatingIpSpec {
        /// Stable id.
        pub id: ObjectId,
        /// The external network its address comes from.
        pub external_network: ObjectId,
        /// The external address.
        pub ip: Ipv4Addr,
        /// The port it maps to, if associated.
        pub port: Option<ObjectId>,
        /// Which of the port's fixed IPs it maps to; requires `port`.
        pub fixed_ip: Option<Ipv4Addr>,
    }

    validated!(
        /// An external address mapped 1:1 onto a port's fixed IP.
        FloatingIp,
        FloatingIpSpec
    );

    impl FloatingIp {
        /// Checks the address is unicast and that a fixed IP comes with a port.
        pub fn new(spec: FloatingIpSpec) -> Result<Self, Error> {
            if spec.ip.is_unspecified() || spec.ip.is_multicast() || spec.ip.is_broadcast() {
                return Err(Error::invalid(
                    "fip.ip",
                    format!("{} is not a unicast address", spec.ip),
                ));
            }
            if spec.fixed_ip.is_some() && spec.port.is_none() {
                return Err(Error::invalid("fip.fixed_ip", "a fixed IP needs a port"));
            }
            Ok(FloatingIp(spec))
        }
    }
}

pub use external::{ExternalNetwork, ExternalNetworkSpec};
pub use floating_ip::{FloatingIp, FloatingIpSpec};
pub use network::{Network, NetworkSpec};
pub use port::{Port, PortSpec};
pub use router::{Router, RouterSpec};
pub use subnet::{Subnet, SubnetSpec};

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ObjectId {
        ObjectId::new(s).unwrap()
    }

    fn subnet(cidr: &str, gw: &str, pool: &str) -> Result<Subnet, Error> {
        Subnet::new(SubnetSpec {
            id: id("s1"),
            name: Name::new("s1").unwrap(),
            network: id("n1"),
            cidr: cidr.parse()?,
            gateway: gw.parse().unwrap(),
            pool: pool.parse()?,
            dhcp: SubnetDhcp::default(),
        })
    }

    #[test]
    fn subnet_dhcp_rules() {
        let base = subnet("10.0.0.0/24", "10.0.0.1", "10.0.0.10-10.0.0.200")
            .unwrap()
            .into_spec();
        let with = |dhcp: SubnetDhcp| {
            Subnet::new(SubnetSpec {
                dhcp,
                ..base.clone()
            })
        };
        let dns = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<_>>();
        let domain = |d: &str| SubnetDhcp {
            domain: Some(d.to_string()),
            ..SubnetDhcp::default()
        };
        assert!(with(domain("lab.example")).is_ok());
        for bad in ["", "a..b", "-a.b", "a_b", "a b", &"x".repeat(64)] {
            assert!(with(domain(bad)).is_err(), "{bad:?}");
        }
        let servers = |v: &[&str]| SubnetDhcp {
            dns_servers: dns(v),
            ..SubnetDhcp::default()
        };
        assert!(with(servers(&["10.0.0.2", "9.9.9.9"])).is_ok());
        assert!(with(servers(&["0.0.0.0"])).is_err());
        assert!(with(servers(&["1.1.1.1"; 5])).is_err());
    }

    #[test]
    fn subnet_addressing_rules() {
        assert!(subnet("10.0.0.0/24", "10.0.0.1", "10.0.0.10-10.0.0.200").is_ok());
        // gateway outside the CIDR, or the network/broadcast address
        assert!(subnet("10.0.0.0/24", "10.0.1.1", "10.0.0.10-10.0.0.200").is_err());
        assert!(subnet("10.0.0.0/24", "10.0.0.0", "10.0.0.10-10.0.0.200").is_err());
        assert!(subnet("10.0.0.0/24", "10.0.0.255", "10.0.0.10-10.0.0.200").is_err());
        // pool leaves the CIDR or swallows the gateway
        assert!(subnet("10.0.0.0/24", "10.0.0.1", "10.0.0.10-10.0.1.5").is_err());
        assert!(subnet("10.0.0.0/24", "10.0.0.1", "10.0.0.1-10.0.0.9").is_err());
        // prefix too long for a subnet
        assert!(subnet("10.0.0.0/30", "10.0.0.1", "10.0.0.2-10.0.0.2").is_err());
    }

    #[test]
    fn port_rules() {
        let spec = PortSpec {
            id: id("p1"),
            name: Name::new("vm1").unwrap(),
            network: id("n1"),
            mac: "fa:16:3e:00:00:01".parse().unwrap(),
            fixed_ips: vec!["10.0.0.5".parse().unwrap()],
            host: NodeId::new("c1").unwrap(),
            device: None,
            allowed_address_pairs: vec![],
            metadata: PortMetadata::default(),
        };
        assert!(Port::new(spec.clone()).is_ok());
        let with = |m: PortMetadata| {
            Port::new(PortSpec {
                metadata: m,
                ..spec.clone()
            })
        };
        let host = |h: &str| PortMetadata {
            hostname: Some(h.into()),
            ..PortMetadata::default()
        };
        assert!(with(host("vm-1")).is_ok());
        for bad in ["", "-a", "a.b", "a_b", &"x".repeat(64)] {
            assert!(with(host(bad)).is_err(), "{bad:?}");
        }
        let data = |n: usize| PortMetadata {
            user_data: Some("x".repeat(n)),
            ..PortMetadata::default()
        };
        assert!(with(data(MAX_USER_DATA_BYTES)).is_ok());
        let err = with(data(MAX_USER_DATA_BYTES + 1)).unwrap_err();
        assert!(err.to_string().contains("user_data"), "{err}");
        let keys = |v: Vec<String>| PortMetadata {
            ssh_keys: v,
            ..PortMetadata::default()
        };
        assert!(with(keys(vec!["ssh-ed25519 AAAA k".into()])).is_ok());
        assert!(with(keys(vec!["a\nb".into()])).is_err());
        assert!(with(keys(vec!["k".into(); MAX_SSH_KEYS + 1])).is_err());
        assert!(with(keys(vec!["k".repeat(MAX_SSH_KEY_BYTES + 1)])).is_err());
        let mut none = spec.clone();
        none.fixed_ips.clear();
        assert!(Port::new(none).is_err());
        let mut twice = spec.clone();
        twice.fixed_ips.push("10.0.0.5".parse().unwrap());
        assert!(Port::new(twice).is_err());
    }

    #[test]
    fn fip_fixed_ip_needs_port() {
        let spec = FloatingIpSpec {
            id: id("f1"),
            external_network: id("e1"),
            ip: "203.0.113.10".parse().unwrap(),
            port: None,
            fixed_ip: Some("10.0.0.5".parse().unwrap()),
        };
        assert!(FloatingIp::new(spec).is_err());
    }

    #[test]
    fn router_route_nexthop_must_be_unicast() {
        let mut routes = BTreeSet::new();
        routes.insert(ExtraRoute {
            destination: "192.0.2.0/24".parse().unwrap(),
            nexthop: "0.0.0.0".parse().unwrap(),
        });
        let spec = RouterSpec {
            id: id("r1"),
            name: Name::new("r1").unwrap(),
            interfaces: BTreeSet::new(),
            gateway: None,
            routes,
            ha: HaSettings::default(),
            snat_ports: BTreeMap::new(),
        };
        assert!(Router::new(spec).is_err());
    }
}
