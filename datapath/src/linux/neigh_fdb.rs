//! Permanent IPv4 neighbours, and forwarding-database entries (`AF_BRIDGE` neighbour messages)
//! on VXLAN devices (`self`) and bridge ports (`master`).

use std::net::Ipv4Addr;

use mesh_proto::MacAddr;
use netlink_packet_core::{ParseableParametrized, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::links::{self, is_owned, ByIndex, RawKind};
use super::socket::{Conn, NlError};
use crate::{FdbSpec, FdbTarget, NeighSpec, Netns};

const NUD_PERMANENT: u16 = 0x80;

/// Permanent IPv4 neighbours on owned links; with `device`, only that link's (the kernel
/// filters).
pub(crate) fn dump_neighs(
    conn: &mut Conn,
    ns: &Netns,
    by_index: &ByIndex,
    device: Option<u32>,
) -> Result<Vec<NeighSpec>, NlError> {
    let mut out = Vec::new();
    for n in dump(conn, AddressFamily::Inet, device)? {
        let Some(link) = Some(n.header.ifindex)
            .filter(|i| device.is_none_or(|d| d == *i))
            .and_then(|i| by_index.get(&i))
            .filter(|l| is_owned(&l.name))
        else {
            continue;
        };
        if u16::from(n.header.state) & NUD_PERMANENT == 0 {
            continue;
        }
        let (Some(ip), Some(mac)) = (ipv4_dst(&n), lladdr(&n).and_then(|m| MacAddr::new(m).ok()))
        else {
            continue;
        };
        out.push(NeighSpec {
            ns: ns.clone(),
            dev: link.name.clone(),
            ip,
            mac,
        });
    }
    Ok(out)
}

/// Adds or replaces a permanent neighbour.
pub(crate) fn add_neigh(conn: &mut Conn, n: &NeighSpec) -> Result<(), NlError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = links::index(conn, &n.dev)?;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            n.ip,
        )));
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(
        n.mac.octets().to_vec(),
    ));
    conn.request(
        RouteNetlinkMessage::NewNeighbour(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(drop)
}

/// Deletes the neighbour, but only while it still has `n.mac`: the kernel deletes by address
/// alone, and an `AddNeigh` earlier in the batch may have replaced the MAC.
pub(crate) fn del_neigh(conn: &mut Conn, n: &NeighSpec) -> Result<(), NlError> {
    let index = match links::index(conn, &n.dev) {
        Ok(i) => i,
        Err(e) if e.is(&[libc::ENODEV]) => return Ok(()),
        Err(e) => return Err(e),
    };
    let current = dump(conn, AddressFamily::Inet, Some(index))?
        .into_iter()
        .find(|m| {
            m.header.ifindex == index
                && ipv4_dst(m) == Some(n.ip)
                && u16::from(m.header.state) & NUD_PERMANENT != 0
        });
    if current.as_ref().and_then(lladdr) != Some(n.mac.octets()) {
        return Ok(());
    }
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            n.ip,
        )));
    match conn.request(RouteNetlinkMessage::DelNeighbour(msg), 0) {
        Err(e) if e.is(&[libc::ENOENT, libc::ESRCH, libc::ENODEV]) => Ok(()),
        other => other.map(drop),
    }
}

/// FDB entries dvrmesh owns (of the device with ifindex `port` only, when given): on owned VXLAN
/// devices the `self` entries with a destination
/// (all-zero MAC → `Flood`, else `Vtep`); on owned bridge ports the sticky `master` entries. On a
/// device someone else made that the plan attaches (a VM's tap), only the sticky entries `wanted`
/// names are reported: other entries there are not dvrmesh's to judge.
pub(crate) fn dump_fdb(
    conn: &mut Conn,
    ns: &Netns,
    by_index: &ByIndex,
    wanted: &std::collections::BTreeSet<FdbSpec>,
    port: Option<u32>,
) -> Result<Vec<FdbSpec>, NlError> {
    let mut out = Vec::new();
    let messages = match port {
        None => dump(conn, AddressFamily::Bridge, None)?,
        Some(index) => dump_fdb_of(conn, index)?,
    };
    for n in messages {
        let Some(link) = by_index.get(&n.header.ifindex) else {
            continue;
        };
        let owned = is_owned(&link.name);
        let foreign_but_wanted = |mac: [u8; 6]| {
            wanted.contains(&FdbSpec {
                ns: ns.clone(),
                dev: link.name.clone(),
                mac,
                target: FdbTarget::Bridge,
            })
        };
        let Some(mac) = lladdr(&n) else {
            continue;
        };
        if !owned && !foreign_but_wanted(mac) {
            continue;
        }
        let flags = n.header.flags;
        let has_master = n
            .attributes
            .iter()
            .any(|a| matches!(a, NeighbourAttribute::Controller(_)));
        let target = if flags.contains(NeighbourFlags::Own) {
            match (&link.kind, bridge_dst(&n)) {
                (RawKind::Vxlan { .. }, Some(dst)) if mac == [0; 6] => FdbTarget::Flood(dst),
                (RawKind::Vxlan { .. }, Some(dst)) => FdbTarget::Vtep(dst),
                _ => continue,
            }
        } else if flags.contains(NeighbourFlags::Sticky) && has_master {
            FdbTarget::Bridge
        } else {
            continue;
        };
        out.push(FdbSpec {
            ns: ns.clone(),
            dev: link.name.clone(),
            mac,
            target,
        });
    }
    Ok(out)
}

/// Adds an FDB entry: `Vtep` = `fdb replace MAC dev vx self permanent dst IP`; `Flood` =
/// `fdb append 00:…:00 dev vx self permanent dst IP`; `Bridge` = `fdb replace MAC dev PORT
/// master static sticky`.
pub(crate) fn add_fdb(conn: &mut Conn, f: &FdbSpec) -> Result<(), NlError> {
    let msg = fdb_message(conn, f)?;
    let flags = match f.target {
        FdbTarget::Flood(_) => NLM_F_CREATE | NLM_F_APPEND,
        _ => NLM_F_CREATE | NLM_F_REPLACE,
    };
    conn.request(RouteNetlinkMessage::NewNeighbour(msg), flags)
        .map(drop)
}

/// Deletes an FDB entry. On a VXLAN device the destination is part of the request, so only that
/// remote goes (one flood entry of several, or a unicast entry not since moved elsewhere).
pub(crate) fn del_fdb(conn: &mut Conn, f: &FdbSpec) -> Result<(), NlError> {
    let msg = match fdb_message(conn, f) {
        Ok(msg) => msg,
        Err(e) if e.is(&[libc::ENODEV]) => return Ok(()),
        Err(e) => return Err(e),
    };
    match conn.request(RouteNetlinkMessage::DelNeighbour(msg), 0) {
        Err(e) if e.is(&[libc::ENOENT, libc::ESRCH, libc::ENODEV]) => Ok(()),
        other => other.map(drop),
    }
}

fn fdb_message(conn: &mut Conn, f: &FdbSpec) -> Result<NeighbourMessage, NlError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = links::index(conn, &f.dev)?;
    let mac = match f.target {
        FdbTarget::Flood(_) => [0; 6],
        _ => f.mac,
    };
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    match f.target {
        FdbTarget::Vtep(dst) | FdbTarget::Flood(dst) => {
            msg.header.state = NeighbourState::Permanent;
            msg.header.flags = NeighbourFlags::Own;
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        }
        FdbTarget::Bridge => {
            msg.header.state = NeighbourState::Noarp;
            msg.header.flags = NeighbourFlags::Controller | NeighbourFlags::Sticky;
        }
    }
    Ok(msg)
}

fn dump(
    conn: &mut Conn,
    family: AddressFamily,
    device: Option<u32>,
) -> Result<Vec<NeighbourMessage>, NlError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family;
    let replies = match device {
        None => conn.dump(RouteNetlinkMessage::GetNeighbour(msg))?,
        Some(index) => {
            msg.attributes.push(NeighbourAttribute::IfIndex(index));
            conn.filtered_dump(RouteNetlinkMessage::GetNeighbour(msg))?
        }
    };
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.family == family => Some(n),
            _ => None,
        })
        .collect())
}

/// The FDB entries of one device: its own (`self`) and its bridge's for it (`master`). The
/// request carries an `ifinfomsg` naming the port, which the kernel reads as a filter, so the
/// cost follows that device's entries, not the namespace's.
fn dump_fdb_of(conn: &mut Conn, index: u32) -> Result<Vec<NeighbourMessage>, NlError> {
    const RTM_NEWNEIGH: u16 = 28;
    const RTM_GETNEIGH: u16 = 30;
    const AF_BRIDGE: u8 = 7;
    let mut request = vec![0u8; 16];
    request[0] = AF_BRIDGE;
    request[4..8].copy_from_slice(&index.to_ne_bytes());
    Ok(conn
        .raw_dump(RTM_GETNEIGH, &request)?
        .into_iter()
        .filter(|(t, _)| *t == RTM_NEWNEIGH)
        .filter_map(
            |(t, body)| match RouteNetlinkMessage::parse_with_param(&body[..], t) {
                Ok(RouteNetlinkMessage::NewNeighbour(n)) if n.header.ifindex == index => Some(n),
                _ => None,
            },
        )
        .collect())
}

fn ipv4_dst(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// `NDA_DST` of an `AF_BRIDGE` message (the library leaves it as raw bytes).
fn bridge_dst(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn lladdr(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok(),
        _ => None,
    })
}
