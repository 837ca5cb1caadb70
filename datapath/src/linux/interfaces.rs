//! Every interface of a namespace with its state, MTU and IPv4 addresses, read (never changed)
//! for preflight checks: `dvrmesh doctor` finds the underlay interface holding the tunnel IP and
//! the external interfaces here. Unlike `observe`, this reports links dvrmesh does not own.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::links;
use super::socket::{nl, Conn};
use crate::{Error, Netns};

/// One interface of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Name.
    pub name: String,
    /// Administratively up.
    pub up: bool,
    /// Carrier (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// MTU, when the kernel reported it.
    pub mtu: Option<u32>,
    /// Its IPv4 addresses.
    pub addrs: Vec<Ipv4Addr>,
}

/// Every interface of the namespace behind `ns` (e.g. `/proc/thread-self/ns/net`).
pub fn interfaces(ns: &File, label: &str) -> Result<Vec<InterfaceInfo>, Error> {
    let host = Netns::Host;
    let mut conn = Conn::open(NETLINK_ROUTE, ns, label)?;
    let raw = links::dump(&mut conn).map_err(nl(&host, "dump links"))?;
    let mut out: Vec<(u32, InterfaceInfo)> = raw
        .into_iter()
        .map(|l| {
            let info = InterfaceInfo {
                name: l.name,
                up: l.up,
                carrier: l.carrier,
                mtu: l.mtu,
                addrs: Vec::new(),
            };
            (l.index, info)
        })
        .collect();
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    let replies = conn
        .dump(RouteNetlinkMessage::GetAddress(msg))
        .map_err(nl(&host, "dump addresses"))?;
    for m in replies {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        let ip = a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let ip = ip.or_else(|| {
            a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        });
        if let (Some(ip), Some((_, info))) =
            (ip, out.iter_mut().find(|(i, _)| *i == a.header.index))
        {
            info.addrs.push(ip);
        }
    }
    Ok(out.into_iter().map(|(_, i)| i).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::sandbox::Sandbox;

    #[test]
    fn every_interface_is_listed_with_its_state_mtu_and_addresses() {
        let sandbox = Sandbox::new(&["eth1"]).expect("sandbox (needs root)");
        let host = sandbox.ns_path(&Netns::Host);
        sandbox
            .sh(
                &Netns::Host,
                &["ip", "addr", "add", "192.0.2.7/24", "dev", "eth1"],
            )
            .expect("address");
        let ns = File::open(&host).expect("open");
        let all = interfaces(&ns, "sandbox").expect("interfaces");
        let eth1 = all.iter().find(|i| i.name == "eth1").expect("eth1 listed");
        assert!(eth1.up && !eth1.carrier, "up, its peer down: {eth1:?}");
        assert_eq!(eth1.mtu, Some(1500));
        assert_eq!(eth1.addrs, vec![Ipv4Addr::new(192, 0, 2, 7)]);
        let lo = all.iter().find(|i| i.name == "lo").expect("lo listed");
        assert!(lo.addrs.is_empty(), "lo is down in a new namespace: {lo:?}");
        assert!(all.iter().any(|i| i.name == "eth1p"), "{all:?}");
        sandbox
            .sh(&Netns::Host, &["ip", "link", "set", "eth1p", "up"])
            .expect("peer up");
        let all = interfaces(&ns, "sandbox").expect("interfaces");
        let eth1 = all.iter().find(|i| i.name == "eth1").expect("eth1 listed");
        assert!(eth1.carrier, "carrier once its peer is up: {eth1:?}");
    }
}
