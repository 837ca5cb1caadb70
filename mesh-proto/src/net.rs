//! Addressing types: IPv4 CIDRs and ranges, MAC addresses, VNIs and MTUs.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// An IPv4 network in CIDR form whose host bits are zero, e.g. `10.0.1.0/24`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// Builds a CIDR; `network` must have no bits set beyond `prefix`.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        if prefix > 32 {
            return Err(Error::invalid(
                "cidr",
                format!("prefix length {prefix} is over 32"),
            ));
        }
        let cidr = Ipv4Cidr { network, prefix };
        if u32::from(network) & !cidr.mask() != 0 {
            return Err(Error::invalid(
                "cidr",
                format!(
                    "{network}/{prefix} has host bits set (did you mean {}/{prefix}?)",
                    Ipv4Addr::from(u32::from(network) & cidr.mask())
                ),
            ));
        }
        Ok(cidr)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask as an integer.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The last address of the network (the broadcast address for prefixes up to /30).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// Whether `ip` can be given to a host: inside, and for prefixes up to /30 neither the network
    /// nor the broadcast address.
    pub fn is_usable_host(&self, ip: Ipv4Addr) -> bool {
        if !self.contains(ip) {
            return false;
        }
        self.prefix >= 31 || (ip != self.network && ip != self.last())
    }

    /// The usable host range: `.1` to the address before broadcast for prefixes up to /30.
    pub fn host_range(&self) -> Ipv4Range {
        let (first, last) = if self.prefix >= 31 {
            (self.network, self.last())
        } else {
            (
                Ipv4Addr::from(u32::from(self.network) + 1),
                Ipv4Addr::from(u32::from(self.last()) - 1),
            )
        };
        Ipv4Range { first, last }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| Error::invalid("cidr", format!("{s:?} is not of the form A.B.C.D/N")))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| Error::invalid("cidr", format!("{addr:?} is not an IPv4 address")))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| Error::invalid("cidr", format!("{prefix:?} is not a prefix length")))?;
        Ipv4Cidr::new(network, prefix)
    }
}

/// An inclusive range of IPv4 addresses, `first-last`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Range {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

impl Ipv4Range {
    /// Builds a range; `first` must not come after `last`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Result<Self, Error> {
        if u32::from(first) > u32::from(last) {
            return Err(Error::invalid(
                "range",
                format!("{first} comes after {last}"),
            ));
        }
        Ok(Ipv4Range { first, last })
    }

    /// The first address.
    pub fn first(&self) -> Ipv4Addr {
        self.first
    }

    /// The last address.
    pub fn last(&self) -> Ipv4Addr {
        self.last
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }

    /// How many addresses the range holds.
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last) - u32::from(self.first)) + 1
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for Ipv4Range {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (a, b) = s.split_once('-').ok_or_else(|| {
            Error::invalid("range", format!("{s:?} is not of the form FIRST-LAST"))
        })?;
        let parse = |x: &str| {
            x.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| Error::invalid("range", format!("{x:?} is not an IPv4 address")))
        };
        Ipv4Range::new(parse(a)?, parse(b)?)
    }
}

/// A unicast Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// Builds a MAC; multicast/broadcast and all-zero addresses are rejected.
    pub fn new(octets: [u8; 6]) -> Result<Self, Error> {
        if octets[0] & 1 == 1 {
            return Err(Error::invalid(
                "mac",
                format!("{} is a multicast address", MacAddr(octets)),
            ));
        }
        if octets == [0; 6] {
            return Err(Error::invalid(
                "mac",
                "00:00:00:00:00:00 is not a host address",
            ));
        }
        Ok(MacAddr(octets))
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The next address under the same three-octet prefix: the low 24 bits plus one, wrapping
    /// within the prefix. Used to resolve clashes of MACs derived from hashes.
    pub fn next_in_prefix(&self) -> MacAddr {
        let o = self.0;
        let mut n = (u32::from_be_bytes([0, o[3], o[4], o[5]]).wrapping_add(1)) & 0xff_ffff;
        if n == 0 && o[..3] == [0, 0, 0] {
            n = 1; // never the all-zero address
        }
        let [_, a, b, c] = n.to_be_bytes();
        // The prefix is unchanged, so the address stays unicast.
        MacAddr([o[0], o[1], o[2], a, b, c])
    }
}

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::invalid("mac", format!("{s:?} is not of the form aa:bb:cc:dd:ee:ff"));
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        MacAddr::new(octets)
    }
}

/// A VXLAN network identifier, 1 to 16 777 215.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Vni(u32);

impl Vni {
    /// Largest VNI (24 bits).
    pub const MAX: u32 = (1 << 24) - 1;

    /// Validates a VNI.
    pub fn new(v: u32) -> Result<Self, Error> {
        if v == 0 || v > Self::MAX {
            return Err(Error::invalid(
                "vni",
                format!("{v} is outside 1..={}", Self::MAX),
            ));
        }
        Ok(Vni(v))
    }

    /// The numeric value.
    pub fn get(&self) -> u32 {
        self.0
    }
}

/// A link MTU in bytes, 576 to 9000 (IPv4's minimum reassembly size to jumbo frames).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Mtu(u16);

impl Mtu {
    /// The tenant MTU that fits a 1500-byte underlay after 50 bytes of VXLAN overhead.
    pub const VXLAN_DEFAULT: Mtu = Mtu(1450);

    /// Validates an MTU.
    pub fn new(v: u16) -> Result<Self, Error> {
        if !(576..=9000).contains(&v) {
            return Err(Error::invalid("mtu", format!("{v} is outside 576..=9000")));
        }
        Ok(Mtu(v))
    }

    /// The numeric value.
    pub fn get(&self) -> u16 {
        self.0
    }
}

macro_rules! text_impls {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}
macro_rules! int_impls {
    ($t:ident, $int:ty) => {
        impl TryFrom<$int> for $t {
            type Error = Error;
            fn try_from(v: $int) -> Result<Self, Error> {
                $t::new(v)
            }
        }
        impl From<$t> for $int {
            fn from(v: $t) -> $int {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let v: $int = s.parse().map_err(|_| {
                    Error::invalid(stringify!($t), format!("{s:?} is not a number"))
                })?;
                $t::new(v)
            }
        }
    };
}
text_impls!(Ipv4Cidr);
text_impls!(Ipv4Range);
text_impls!(MacAddr);
int_impls!(Vni, u32);
int_impls!(Mtu, u16);

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}
impl fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}
impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_rejects_host_bits_and_long_prefixes() {
        assert!("10.0.0.0/24".parse::<Ipv4Cidr>().is_ok());
        let err = "10.0.0.1/24".parse::<Ipv4Cidr>().unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.0.0.0/24"),
            "{err}"
        );
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0/24".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn cidr_host_arithmetic() {
        let c: Ipv4Cidr = "192.0.2.0/28".parse().unwrap();
        assert_eq!(c.last(), Ipv4Addr::new(192, 0, 2, 15));
        assert!(c.is_usable_host(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!c.is_usable_host(Ipv4Addr::new(192, 0, 2, 0)));
        assert!(!c.is_usable_host(Ipv4Addr::new(192, 0, 2, 15)));
        assert_eq!(c.host_range().len(), 14);
        let other: Ipv4Cidr = "192.0.2.8/29".parse().unwrap();
        assert!(c.overlaps(&other) && other.overlaps(&c));
        let apart: Ipv4Cidr = "192.0.2.16/28".parse().unwrap();
        assert!(!c.overlaps(&apart));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }

    #[test]
    fn mac_parsing() {
        let m: MacAddr = "fa:16:3e:00:00:01".parse().unwrap();
        assert_eq!(m.to_string(), "fa:16:3e:00:00:01");
        for bad in [
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "fa:16:3e:00:00",
            "fa:16:3e:00:00:01:02",
            "zz:16:3e:00:00:01",
            "fa:16:3e:0:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn vni_and_mtu_bounds() {
        assert!(Vni::new(0).is_err());
        assert!(Vni::new(1).is_ok());
        assert!(Vni::new(Vni::MAX).is_ok());
        assert!(Vni::new(Vni::MAX + 1).is_err());
        assert!(Mtu::new(575).is_err());
        assert!(Mtu::new(1450).is_ok());
        assert!(Mtu::new(9001).is_err());
    }

    #[test]
    fn range_order() {
        assert!("10.0.0.5-10.0.0.9".parse::<Ipv4Range>().is_ok());
        assert!("10.0.0.9-10.0.0.5".parse::<Ipv4Range>().is_err());
    }
}
