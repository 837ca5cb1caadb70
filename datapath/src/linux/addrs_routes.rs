//! IPv4 addresses on owned links, and routes carrying dvrmesh's protocol number in any table.

use std::net::{IpAddr, Ipv4Addr};

use mesh_proto::Ipv4Cidr;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::links::{self, is_owned, ByIndex};
use super::socket::{Conn, NlError};
use crate::{AddrSpec, Netns, RouteSpec, ROUTE_PROTOCOL};

/// IPv4 addresses on owned links; with `device`, only that link's (the kernel filters).
pub(crate) fn dump_addrs(
    conn: &mut Conn,
    ns: &Netns,
    by_index: &ByIndex,
    device: Option<u32>,
) -> Result<Vec<AddrSpec>, NlError> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    let replies = match device {
        None => conn.dump(RouteNetlinkMessage::GetAddress(msg))?,
        Some(index) => {
            msg.header.index = index;
            conn.filtered_dump(RouteNetlinkMessage::GetAddress(msg))?
        }
    };
    let mut out = Vec::new();
    for m in replies {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        if device.is_some_and(|i| i != a.header.index) {
            continue;
        }
        let Some(link) = by_index.get(&a.header.index).filter(|l| is_owned(&l.name)) else {
            continue;
        };
        if a.header.family != AddressFamily::Inet {
            continue;
        }
        let mut local = None;
        let mut address = None;
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
                AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
                _ => {}
            }
        }
        if let Some(ip) = local.or(address) {
            out.push(AddrSpec {
                ns: ns.clone(),
                dev: link.name.clone(),
                ip,
                prefix: a.header.prefix_len,
            });
        }
    }
    Ok(out)
}

/// Adds an address (`EEXIST` if present).
pub(crate) fn add_addr(conn: &mut Conn, a: &AddrSpec) -> Result<(), NlError> {
    let msg = addr_message(conn, a)?;
    conn.request(
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map(drop)
}

/// Deletes an address; a missing address or link is fine.
pub(crate) fn del_addr(conn: &mut Conn, a: &AddrSpec) -> Result<(), NlError> {
    let msg = match addr_message(conn, a) {
        Ok(msg) => msg,
        Err(e) if e.is(&[libc::ENODEV]) => return Ok(()),
        Err(e) => return Err(e),
    };
    match conn.request(RouteNetlinkMessage::DelAddress(msg), 0) {
        Err(e) if e.is(&[libc::EADDRNOTAVAIL, libc::ENOENT, libc::ENODEV]) => Ok(()),
        other => other.map(drop),
    }
}

fn addr_message(conn: &mut Conn, a: &AddrSpec) -> Result<AddressMessage, NlError> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = a.prefix;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = links::index(conn, &a.dev)?;
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V4(a.ip)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(a.ip)));
    Ok(msg)
}

/// Unicast IPv4 routes with protocol [`ROUTE_PROTOCOL`], in every table; with `device`, only
/// those through that link (the kernel filters).
pub(crate) fn dump_routes(
    conn: &mut Conn,
    ns: &Netns,
    by_index: &ByIndex,
    device: Option<u32>,
) -> Result<Vec<RouteSpec>, NlError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    let replies = match device {
        None => conn.dump(RouteNetlinkMessage::GetRoute(msg))?,
        Some(index) => {
            msg.attributes.push(RouteAttribute::Oif(index));
            conn.filtered_dump(RouteNetlinkMessage::GetRoute(msg))?
        }
    };
    let mut out = Vec::new();
    for m in replies {
        let RouteNetlinkMessage::NewRoute(r) = m else {
            continue;
        };
        if r.header.address_family != AddressFamily::Inet
            || u8::from(r.header.protocol) != ROUTE_PROTOCOL
            || r.header.kind != RouteType::Unicast
        {
            continue;
        }
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut via = None;
        let mut oif = None;
        let mut table = u32::from(r.header.table);
        for attr in &r.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Table(t) => table = *t,
                _ => {}
            }
        }
        let Some(link) = oif
            .filter(|i| device.is_none_or(|d| d == *i))
            .and_then(|i| by_index.get(&i))
        else {
            continue;
        };
        let Some(dst) = cidr(dst, r.header.destination_prefix_length) else {
            continue;
        };
        out.push(RouteSpec {
            ns: ns.clone(),
            table,
            dst,
            via,
            dev: link.name.clone(),
        });
    }
    Ok(out)
}

/// Adds a route. Only `NLM_F_CREATE`: an identical route answers `EEXIST`; a route to the same
/// destination with another gateway is put in front of the old one (which a later `DelRoute`
/// removes), so a changed gateway takes effect before the old one goes.
pub(crate) fn add_route(conn: &mut Conn, r: &RouteSpec) -> Result<(), NlError> {
    let scope = if r.via.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    let msg = route_message(conn, r, scope)?;
    conn.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE)
        .map(drop)
}

/// Deletes exactly this route (protocol, table, gateway and device must match); a missing route
/// or link is fine.
pub(crate) fn del_route(conn: &mut Conn, r: &RouteSpec) -> Result<(), NlError> {
    let msg = match route_message(conn, r, RouteScope::NoWhere) {
        Ok(msg) => msg,
        Err(e) if e.is(&[libc::ENODEV]) => return Ok(()),
        Err(e) => return Err(e),
    };
    match conn.request(RouteNetlinkMessage::DelRoute(msg), 0) {
        Err(e) if e.is(&[libc::ESRCH, libc::ENOENT, libc::ENODEV]) => Ok(()),
        other => other.map(drop),
    }
}

fn route_message(
    conn: &mut Conn,
    r: &RouteSpec,
    scope: RouteScope,
) -> Result<RouteMessage, NlError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = r.dst.prefix();
    msg.header.table = u8::try_from(r.table).unwrap_or(0);
    msg.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    msg.header.scope = scope;
    msg.header.kind = RouteType::Unicast;
    if r.dst.prefix() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                r.dst.network(),
            )));
    }
    if let Some(via) = r.via {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
    }
    msg.attributes
        .push(RouteAttribute::Oif(links::index(conn, &r.dev)?));
    msg.attributes.push(RouteAttribute::Table(r.table));
    Ok(msg)
}

/// The CIDR of `ip/prefix` with host bits cleared (`None` for an impossible prefix).
pub(crate) fn cidr(ip: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX.checked_shl(32u32.checked_sub(u32::from(prefix))?)?
    };
    Ipv4Cidr::new(Ipv4Addr::from(u32::from(ip) & mask), prefix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::sandbox::Sandbox;
    use crate::{Kernel, LinkKind, LinkSpec, Op};

    /// Filtered dumps come back filtered by the kernel: with two owned devices holding an address
    /// and a route each, asking for one device returns that device's only. (Needs root.)
    #[test]
    fn a_dump_for_one_device_returns_only_that_device() {
        let sandbox = Sandbox::new(&[]).expect("sandbox");
        let veth = |name: &str, peer: &str| Op::AddLink {
            ns: Netns::Host,
            name: name.into(),
            spec: LinkSpec::of(LinkKind::Veth {
                peer: peer.into(),
                peer_ns: Netns::Host,
            }),
        };
        let addr = |dev: &str, ip: [u8; 4]| {
            Op::AddAddr(AddrSpec {
                ns: Netns::Host,
                dev: dev.into(),
                ip: Ipv4Addr::from(ip),
                prefix: 24,
            })
        };
        let route = |dev: &str, dst: [u8; 4], via: [u8; 4]| {
            Op::AddRoute(RouteSpec {
                ns: Netns::Host,
                table: 254,
                dst: Ipv4Cidr::new(Ipv4Addr::from(dst), 24).expect("cidr"),
                via: Some(Ipv4Addr::from(via)),
                dev: dev.into(),
            })
        };
        let ops = [
            veth("fpr-a", "rfp-a"),
            veth("fpr-b", "rfp-b"),
            addr("fpr-a", [10, 1, 0, 1]),
            addr("fpr-b", [10, 2, 0, 1]),
            route("fpr-a", [10, 8, 1, 0], [10, 1, 0, 2]),
            route("fpr-b", [10, 8, 2, 0], [10, 2, 0, 2]),
        ];
        let report = sandbox.kernel().apply(&ops).expect("apply");
        assert!(report.failed.is_empty(), "{:?}", report.failed);

        let file = crate::linux::netns::open(&sandbox.ns_path(&Netns::Host), "host").expect("ns");
        let mut conn =
            Conn::open(netlink_sys::protocols::NETLINK_ROUTE, &file, "host").expect("conn");
        let a = links::index(&mut conn, "fpr-a").expect("index");
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.index = a;
        let replies = conn
            .filtered_dump(RouteNetlinkMessage::GetAddress(msg))
            .expect("dump");
        let indexes: Vec<u32> = replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(x) => Some(x.header.index),
                _ => None,
            })
            .collect();
        assert_eq!(indexes, vec![a], "the kernel sent only fpr-a's address");
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.attributes.push(RouteAttribute::Oif(a));
        let routes = conn
            .filtered_dump(RouteNetlinkMessage::GetRoute(msg))
            .expect("dump");
        assert!(!routes.is_empty());
        assert!(
            routes
                .iter()
                .all(|m| matches!(m, RouteNetlinkMessage::NewRoute(r)
                if r.attributes.contains(&RouteAttribute::Oif(a)))),
            "the kernel sent only routes through fpr-a: {routes:?}"
        );

        // What observing by device reads: each device's own objects, nothing of the other's.
        let by_index: ByIndex = links::dump(&mut conn)
            .expect("links")
            .into_iter()
            .map(|l| (l.index, l))
            .collect();
        let addrs = dump_addrs(&mut conn, &Netns::Host, &by_index, Some(a)).expect("addrs");
        assert_eq!(
            addrs.iter().map(|x| x.dev.as_str()).collect::<Vec<_>>(),
            ["fpr-a"]
        );
        // And a later request on the same socket is not checked strictly (an FDB dump's legacy
        // header would be refused).
        assert_eq!(
            dump_addrs(&mut conn, &Netns::Host, &by_index, None)
                .expect("all")
                .len(),
            2
        );
    }
}
