//! Links: dump, create (bridge, VXLAN, veth with its peer created directly in another namespace),
//! set MTU/MAC/master/up and bridge-port learning, delete.

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{DefaultNla, Emitable, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    LinkProtoInfoBridge,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{attrs, Conn, NlError};
use crate::{LinkKind, LinkSpec};

pub use crate::model::OWNED_LINK_PREFIXES;

/// `IFLA_BRPORT_LEARNING` inside `IFLA_PROTINFO` of an `AF_BRIDGE` setlink.
const IFLA_BRPORT_LEARNING: u16 = 8;
/// `IFLA_BRPORT_ISOLATED`: an isolated port forwards only to ports that are not.
const IFLA_BRPORT_ISOLATED: u16 = 33;

/// Whether dvrmesh owns a link of this name.
pub fn is_owned(name: &str) -> bool {
    crate::model::owns_link(name)
}

/// What the kernel calls the link's type, as far as dvrmesh cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawKind {
    Bridge,
    Vxlan {
        vni: u32,
        local: Ipv4Addr,
        port: u16,
    },
    Veth,
    /// Anything else (tun/tap, physical, …): dvrmesh never creates or deletes these.
    Other,
}

/// One link as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawLink {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) kind: RawKind,
    pub(crate) up: bool,
    /// The lower layer is up (`IFF_LOWER_UP`: carrier).
    pub(crate) carrier: bool,
    pub(crate) mtu: Option<u32>,
    pub(crate) mac: Option<[u8; 6]>,
    /// Ifindex of the master, in the same namespace.
    pub(crate) master: Option<u32>,
    /// Bridge-port learning (ports of a bridge only).
    pub(crate) learning: Option<bool>,
    /// Bridge-port isolation (ports of a bridge only).
    pub(crate) isolated: Option<bool>,
    /// Whether IPv6 is enabled on it (`None`: the dump did not say).
    pub(crate) ipv6: Option<bool>,
    /// A veth's peer ifindex (`IFLA_LINK`), in the namespace `peer_nsid` names (or this one).
    pub(crate) peer_index: Option<u32>,
    pub(crate) peer_nsid: Option<i32>,
}

/// Links of one namespace by ifindex.
pub(crate) type ByIndex = HashMap<u32, RawLink>;

/// `NLM_F_ECHO`: the kernel also sends the object a request made back to its sender.
const NLM_F_ECHO: u16 = 0x08;
/// `RTM_NEWLINK`, `RTM_GETLINK`.
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
/// `IFLA_*` attributes read here.
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_EXT_MASK: u16 = 29;
/// In `IFLA_AF_SPEC`: `AF_INET6`, its `IFLA_INET6_CONF` (an array of `s32` devconf values), and
/// the index of `disable_ipv6` in it.
const AF_INET6: u16 = 10;
const IFLA_INET6_CONF: u16 = 2;
const DEVCONF_DISABLE_IPV6: usize = 26;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_PORT: u16 = 15;
/// `RTEXT_FILTER_SKIP_STATS`.
const SKIP_STATS: u32 = 1 << 3;
const IFF_UP: u32 = 1;
const IFF_LOWER_UP: u32 = 1 << 16;

/// An `ifinfomsg` (any family, no index) followed by `IFLA_EXT_MASK` skipping statistics, and
/// `extra` attributes.
fn link_request(extra: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; 16];
    out.extend(nested(&[(IFLA_EXT_MASK, &SKIP_STATS.to_ne_bytes())]));
    out.extend(nested(extra));
    out
}

/// Every link of the connection's namespace. Replies are parsed here for just the fields
/// dvrmesh reads: a link dump message carries kilobytes of per-protocol settings that a general
/// parser would decode for nothing.
pub(crate) fn dump(conn: &mut Conn) -> Result<Vec<RawLink>, NlError> {
    Ok(conn
        .raw_dump(RTM_GETLINK, &link_request(&[]))?
        .into_iter()
        .filter(|(t, _)| *t == RTM_NEWLINK)
        .filter_map(|(_, body)| parse_raw(&body))
        .collect())
}

/// The link called `name`, if it exists.
pub(crate) fn get(conn: &mut Conn, name: &str) -> Result<Option<RawLink>, NlError> {
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    get_one(conn, &link_request(&[(IFLA_IFNAME, &ifname)]))
}

/// The link with ifindex `index`, if it exists.
pub(crate) fn get_by_index(conn: &mut Conn, index: u32) -> Result<Option<RawLink>, NlError> {
    let mut request = link_request(&[]);
    request[4..8].copy_from_slice(&index.to_ne_bytes());
    get_one(conn, &request)
}

/// The link a `RTM_GETLINK` request names, or `None` on `ENODEV`.
fn get_one(conn: &mut Conn, request: &[u8]) -> Result<Option<RawLink>, NlError> {
    match conn.raw_request(RTM_GETLINK, 0, request) {
        Ok(replies) => Ok(replies
            .into_iter()
            .filter(|(t, _)| *t == RTM_NEWLINK)
            .find_map(|(_, body)| parse_raw(&body))),
        Err(e) if e.is(&[libc::ENODEV]) => Ok(None),
        Err(e) => Err(e),
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn str_of(v: &[u8]) -> &str {
    let v = v.split(|b| *b == 0).next().unwrap_or_default();
    std::str::from_utf8(v).unwrap_or_default()
}

/// One `RTM_NEWLINK` payload (`ifinfomsg` and attributes); `None` when it is too short or has no
/// name.
fn parse_raw(body: &[u8]) -> Option<RawLink> {
    let header = body.get(..16)?;
    let index = u32_of(&header[4..8])?;
    let flags = u32_of(&header[8..12])?;
    let mut link = RawLink {
        index,
        name: String::new(),
        kind: RawKind::Other,
        up: flags & IFF_UP != 0,
        carrier: flags & IFF_LOWER_UP != 0,
        mtu: None,
        mac: None,
        master: None,
        learning: None,
        isolated: None,
        ipv6: None,
        peer_index: None,
        peer_nsid: None,
    };
    for (kind, value) in attrs(&body[16..]) {
        match kind {
            IFLA_IFNAME => link.name = str_of(value).to_string(),
            IFLA_MTU => link.mtu = u32_of(value),
            IFLA_ADDRESS => link.mac = value.try_into().ok(),
            IFLA_MASTER => link.master = u32_of(value),
            IFLA_LINK => link.peer_index = u32_of(value),
            IFLA_LINK_NETNSID => link.peer_nsid = u32_of(value).map(|v| v as i32),
            IFLA_LINKINFO => parse_raw_info(value, &mut link),
            IFLA_AF_SPEC => link.ipv6 = ipv6_enabled(value),
            _ => {}
        }
    }
    if link.kind != RawKind::Veth {
        link.peer_index = None;
        link.peer_nsid = None;
    }
    (!link.name.is_empty()).then_some(link)
}

/// Whether IPv6 is enabled, from a link's `IFLA_AF_SPEC`: its `AF_INET6` devconf array holds
/// `disable_ipv6`. No `AF_INET6` part at all means no IPv6 on the device (a kernel without IPv6,
/// or a device whose MTU is below IPv6's minimum).
fn ipv6_enabled(af_spec: &[u8]) -> Option<bool> {
    let Some((_, inet6)) = attrs(af_spec).find(|(k, _)| *k == AF_INET6) else {
        return Some(false);
    };
    let (_, conf) = attrs(inet6).find(|(k, _)| *k == IFLA_INET6_CONF)?;
    let at = DEVCONF_DISABLE_IPV6 * 4;
    let value = i32::from_ne_bytes(conf.get(at..at + 4)?.try_into().ok()?);
    Some(value == 0)
}

fn parse_raw_info(info: &[u8], link: &mut RawLink) {
    let (mut kind, mut data, mut port_kind, mut port_data) = ("", None, "", None);
    for (k, v) in attrs(info) {
        match k {
            IFLA_INFO_KIND => kind = str_of(v),
            IFLA_INFO_DATA => data = Some(v),
            IFLA_INFO_SLAVE_KIND => port_kind = str_of(v),
            IFLA_INFO_SLAVE_DATA => port_data = Some(v),
            _ => {}
        }
    }
    link.kind = match kind {
        "bridge" => RawKind::Bridge,
        "veth" => RawKind::Veth,
        "vxlan" => {
            let (mut vni, mut local, mut port) = (0, Ipv4Addr::UNSPECIFIED, 0);
            for (k, v) in attrs(data.unwrap_or_default()) {
                match k {
                    IFLA_VXLAN_ID => vni = u32_of(v).unwrap_or(0),
                    IFLA_VXLAN_LOCAL => {
                        if let Ok(o) = <[u8; 4]>::try_from(v) {
                            local = Ipv4Addr::from(o);
                        }
                    }
                    IFLA_VXLAN_PORT => {
                        if let Ok(o) = <[u8; 2]>::try_from(v) {
                            port = u16::from_be_bytes(o);
                        }
                    }
                    _ => {}
                }
            }
            RawKind::Vxlan { vni, local, port }
        }
        _ => RawKind::Other,
    };
    if port_kind == "bridge" {
        let flag = |kind: u16| {
            attrs(port_data.unwrap_or_default())
                .find(|(k, _)| *k == kind)
                .and_then(|(_, v)| v.first().map(|b| *b != 0))
        };
        link.learning = flag(IFLA_BRPORT_LEARNING);
        link.isolated = flag(IFLA_BRPORT_ISOLATED);
    }
}

/// The ifindex of `name`, or `ENODEV`. Remembered for the rest of the pass: the ops of one pass
/// name the same few devices many times (every FDB entry, address and neighbour names its
/// device), and apply forgets a name whenever a link of that name is created or deleted.
pub(crate) fn index(conn: &mut Conn, name: &str) -> Result<u32, NlError> {
    if let Some(i) = conn.indexes.get(name) {
        return Ok(*i);
    }
    let i = get(conn, name)?
        .map(|l| l.index)
        .ok_or_else(|| no_device(name))?;
    conn.indexes.insert(name.to_string(), i);
    Ok(i)
}

/// Creates `name` as `spec.kind` says (a veth's peer directly in `peer_ns`, with the MAC and MTU
/// of `peer_spec`) with its MAC, MTU, master and up in the same request, then sets bridge-port
/// learning (for a port created down, [`up_created`] does). `Ok(true)` when it was created; a
/// link that exists already only gets its attributes set (`Ok(false)`), so a repeated add
/// converges. `External` links are never created: they only get attributes. (A veth's peer cannot be brought up in the same request: the kernel pairs the
/// two only after both exist, so [`set_fresh_peer`] follows.)
///
/// A link whose spec disables IPv6 is created down: the caller disables IPv6 (a sysctl), then
/// brings it up with [`up_created`]. Disabled before it first comes up, it never gets a
/// link-local address, so no DAD, MLD, router solicitation or IPv6 route is ever made for it.
pub(crate) fn add(
    conn: &mut Conn,
    name: &str,
    spec: &LinkSpec,
    peer_ns: Option<&File>,
    peer_spec: Option<&LinkSpec>,
) -> Result<bool, NlError> {
    if spec.kind == LinkKind::External {
        return set(conn, name, spec).map(|()| false);
    }
    let master = match &spec.master {
        Some(m) => Some(index(conn, m)?),
        None => None,
    };
    let mut msg = LinkMessage::default();
    // A device whose IPv6 is to be disabled stays down: the caller brings it up once it is.
    if spec.ipv6 != Some(false) {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    let info = match &spec.kind {
        LinkKind::Bridge => vec![LinkInfo::Kind(InfoKind::Bridge)],
        LinkKind::Vxlan { vni, local, port } => vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(*vni),
                InfoVxlan::Local(*local),
                InfoVxlan::Port(*port),
                InfoVxlan::Learning(false),
            ])),
        ],
        LinkKind::Veth { peer, .. } => {
            let mut peer_msg = LinkMessage::default();
            peer_msg
                .attributes
                .push(LinkAttribute::IfName(peer.clone()));
            peer_msg.attributes.extend(one_queue());
            msg.attributes.extend(one_queue());
            if let Some(mac) = peer_spec.and_then(|p| p.mac) {
                peer_msg
                    .attributes
                    .push(LinkAttribute::Address(mac.octets().to_vec()));
            }
            if let Some(mtu) = peer_spec.and_then(|p| p.mtu) {
                peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
            }
            if let Some(ns) = peer_ns {
                peer_msg
                    .attributes
                    .push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
            }
            vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
            ]
        }
        LinkKind::External => Vec::new(),
    };
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    if let Some(mac) = &spec.mac {
        msg.attributes
            .push(LinkAttribute::Address(mac.octets().to_vec()));
    }
    // A bridge given its MTU at creation follows its ports' smallest MTU from then on; every
    // port dvrmesh attaches carries the network MTU, so it stays there (and a pass puts it back,
    // as set by the user then, should a foreign port pull it down).
    if let Some(mtu) = spec.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(m) = master {
        msg.attributes.push(LinkAttribute::Controller(m));
    }
    // With NLM_F_ECHO the kernel answers with the new link, so its ifindex is known without
    // asking again (for its port flags below, and for links made later with it as master).
    let mut payload = vec![0u8; msg.buffer_len()];
    msg.emit(&mut payload);
    match conn.raw_request(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
        &payload,
    ) {
        Ok(replies) => {
            let echoed = replies
                .iter()
                .filter(|(t, _)| *t == RTM_NEWLINK)
                .filter_map(|(_, body)| parse_raw(body))
                .find(|l| l.name == name);
            if let Some(link) = echoed {
                conn.indexes.insert(name.to_string(), link.index);
            }
        }
        Err(e) if e.is(&[libc::EEXIST]) => return set(conn, name, spec).map(|()| false),
        Err(e) => return Err(e),
    }
    let flags = port_flags(spec);
    if !flags.is_empty() && !flags_go_up_with(spec) {
        let at = index(conn, name)?;
        set_port_flags(conn, at, &flags)?;
    }
    Ok(true)
}

/// Brings up `name`, which [`add`] created down as `spec` asks, and sets its bridge-port
/// flags in the same request: an `RTM_NEWLINK` on the existing link with the port's
/// settings (`IFLA_INFO_SLAVE_DATA`), which the kernel applies before the flags. Neither the
/// link nor its ifindex is read first.
pub(crate) fn up_created(conn: &mut Conn, name: &str, spec: &LinkSpec) -> Result<(), NlError> {
    let flags = port_flags(spec);
    if flags.is_empty() || !flags_go_up_with(spec) {
        return up(conn, name);
    }
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    let values: Vec<(u16, [u8; 1])> = flags.iter().map(|(k, v)| (*k, [u8::from(*v)])).collect();
    let items: Vec<(u16, &[u8])> = values.iter().map(|(k, v)| (*k, &v[..])).collect();
    let port = nested(&items);
    let info = nested(&[
        (IFLA_INFO_SLAVE_KIND, b"bridge\0"),
        (IFLA_INFO_SLAVE_DATA, &port),
    ]);
    let mut request = link_request(&[(IFLA_IFNAME, &ifname), (IFLA_LINKINFO, &info)]);
    request[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
    request[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
    match conn.raw_request(RTM_NEWLINK, 0, &request) {
        Err(e) if e.is(&[libc::ENODEV]) => Err(no_device(name)),
        other => other.map(drop),
    }
}

/// The bridge-port flags `spec` sets: (`IFLA_BRPORT_*`, on).
fn port_flags(spec: &LinkSpec) -> Vec<(u16, bool)> {
    [
        (IFLA_BRPORT_LEARNING, spec.learning),
        (IFLA_BRPORT_ISOLATED, spec.isolated),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect()
}

/// Whether a link `spec` describes gets its bridge-port flags with its "up" after creation
/// ([`up_created`]) rather than right after [`add`]: a bridge port created down.
fn flags_go_up_with(spec: &LinkSpec) -> bool {
    spec.ipv6 == Some(false) && spec.master.is_some()
}

/// Attributes laid out one after another, each padded to four bytes: the body of a nested
/// attribute.
fn nested(items: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, value) in items {
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

/// Brings up the veth end `name` that [`add`] just created with its MAC and MTU, attaching it to
/// its master and setting its bridge-port flags if `spec` asks, without reading it back.
pub(crate) fn set_fresh_peer(conn: &mut Conn, name: &str, spec: &LinkSpec) -> Result<(), NlError> {
    up_unread(conn, name, None, spec.master.as_deref())?;
    let flags = port_flags(spec);
    if !flags.is_empty() {
        let at = index(conn, name)?;
        set_port_flags(conn, at, &flags)?;
    }
    Ok(())
}

/// Sets what `spec` asks for (MTU, MAC, master, bridge-port flags; `None` fields are left alone)
/// on the existing link `name` and brings it up. Only what differs is sent.
pub(crate) fn set(conn: &mut Conn, name: &str, spec: &LinkSpec) -> Result<(), NlError> {
    let flags = port_flags(spec);
    if spec.mac.is_none() && flags.is_empty() {
        // Nothing that must be compared first: the kernel leaves an MTU, master or up state that
        // is already so as it is (a MAC, by contrast, is set again and flushes the device's
        // neighbours).
        return up_unread(conn, name, spec.mtu, spec.master.as_deref());
    }
    let link = get(conn, name)?.ok_or_else(|| no_device(name))?;
    let master = match &spec.master {
        Some(m) => Some(index(conn, m)?),
        None => None,
    };
    let mut msg = LinkMessage::default();
    msg.header.index = link.index;
    if !link.up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    if let Some(mtu) = spec.mtu.filter(|m| link.mtu != Some(*m)) {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.mac.filter(|m| link.mac != Some(m.octets())) {
        msg.attributes
            .push(LinkAttribute::Address(mac.octets().to_vec()));
    }
    let new_master = master.filter(|m| link.master != Some(*m));
    if let Some(m) = new_master {
        msg.attributes.push(LinkAttribute::Controller(m));
    }
    if !link.up || !msg.attributes.is_empty() {
        conn.request(RouteNetlinkMessage::SetLink(msg), 0)?;
    }
    let differs = (spec.learning.is_some() && link.learning != spec.learning)
        || (spec.isolated.is_some() && link.isolated != spec.isolated);
    if !flags.is_empty() && (new_master.is_some() || differs) {
        set_port_flags(conn, link.index, &flags)?;
    }
    Ok(())
}

/// Brings `name` up with `mtu` and `master` (when given) in one request, without reading it
/// first.
fn up_unread(
    conn: &mut Conn,
    name: &str,
    mtu: Option<u32>,
    master: Option<&str>,
) -> Result<(), NlError> {
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(m) = master {
        msg.attributes
            .push(LinkAttribute::Controller(index(conn, m)?));
    }
    match conn.request(RouteNetlinkMessage::SetLink(msg), 0) {
        Err(e) if e.is(&[libc::ENODEV]) => Err(no_device(name)),
        other => other.map(drop),
    }
}

/// Brings `name` up, without reading it first (a device created down, `lo` of a new namespace).
pub(crate) fn up(conn: &mut Conn, name: &str) -> Result<(), NlError> {
    up_unread(conn, name, None, None)
}

/// `bridge link set dev X learning on|off isolated on|off`: an `AF_BRIDGE` setlink with
/// `IFLA_PROTINFO`.
fn set_port_flags(conn: &mut Conn, index: u32, flags: &[(u16, bool)]) -> Result<(), NlError> {
    let mut msg = LinkMessage::default();
    msg.header.interface_family = AddressFamily::Bridge;
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::ProtoInfoBridge(
        flags
            .iter()
            .map(|(kind, on)| {
                LinkProtoInfoBridge::Other(DefaultNla::new(*kind, vec![u8::from(*on)]))
            })
            .collect(),
    ));
    conn.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
}

/// Deletes `name` (a veth takes its peer with it). A missing link is fine; a link of a kind
/// dvrmesh never creates (a VM's tap, a physical port) is refused.
pub(crate) fn del(conn: &mut Conn, name: &str) -> Result<(), NlError> {
    let Some(link) = get(conn, name)? else {
        return Ok(());
    };
    if link.kind == RawKind::Other {
        return Err(NlError {
            errno: 0,
            message: format!(
                "refusing to delete {name}: dvrmesh does not create links of its kind"
            ),
        });
    }
    let mut msg = LinkMessage::default();
    msg.header.index = link.index;
    match conn.request(RouteNetlinkMessage::DelLink(msg), 0) {
        Err(e) if e.is(&[libc::ENODEV]) => Ok(()),
        other => other.map(drop),
    }
}

/// One transmit and one receive queue, asked for at creation. Left to itself a veth is made
/// with a queue per possible CPU and then cut down to one, and each cut waits for an RCU grace
/// period under the RTNL lock.
fn one_queue() -> [LinkAttribute; 2] {
    [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)]
}

fn no_device(name: &str) -> NlError {
    NlError {
        errno: libc::ENODEV,
        message: format!("no link named {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        nested(&[(kind, value)])
    }

    fn vxlan_message() -> Vec<u8> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&7u32.to_ne_bytes());
        body[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        body.extend(attr(IFLA_IFNAME, b"vx-100\0"));
        body.extend(attr(IFLA_MTU, &1450u32.to_ne_bytes()));
        body.extend(attr(IFLA_MASTER, &3u32.to_ne_bytes()));
        let mut data = attr(IFLA_VXLAN_ID, &100u32.to_ne_bytes());
        data.extend(attr(IFLA_VXLAN_LOCAL, &[192, 0, 2, 1]));
        data.extend(attr(IFLA_VXLAN_PORT, &4789u16.to_be_bytes()));
        let mut info = attr(IFLA_INFO_KIND, b"vxlan\0");
        info.extend(attr(IFLA_INFO_DATA, &data));
        info.extend(attr(IFLA_INFO_SLAVE_KIND, b"bridge\0"));
        info.extend(attr(
            IFLA_INFO_SLAVE_DATA,
            &attr(IFLA_BRPORT_LEARNING, &[0]),
        ));
        body.extend(attr(IFLA_LINKINFO, &info));
        // IPv6 disabled: `disable_ipv6` = 1 in the `AF_INET6` devconf array (forwarding = 1 first,
        // so the index matters).
        let mut conf = vec![0u8; 4 * (DEVCONF_DISABLE_IPV6 + 4)];
        conf[..4].copy_from_slice(&1i32.to_ne_bytes());
        let at = 4 * DEVCONF_DISABLE_IPV6;
        conf[at..at + 4].copy_from_slice(&1i32.to_ne_bytes());
        let inet6 = attr(AF_INET6, &attr(IFLA_INET6_CONF, &conf));
        body.extend(attr(IFLA_AF_SPEC, &inet6));
        body
    }

    #[test]
    fn parses_the_fields_dvrmesh_reads() {
        let link = parse_raw(&vxlan_message()).expect("parsed");
        assert_eq!(link.index, 7);
        assert_eq!(link.name, "vx-100");
        assert!(link.up);
        assert_eq!(link.mtu, Some(1450));
        assert_eq!(link.master, Some(3));
        assert_eq!(link.learning, Some(false));
        assert_eq!(link.ipv6, Some(false));
        assert_eq!(
            link.kind,
            RawKind::Vxlan {
                vni: 100,
                local: Ipv4Addr::new(192, 0, 2, 1),
                port: 4789
            }
        );
    }

    #[test]
    fn truncated_or_corrupted_messages_never_panic() {
        let good = vxlan_message();
        for cut in 0..good.len() {
            let _ = parse_raw(&good[..cut]);
        }
        let mut x: u32 = 0x9e37_79b9;
        for i in 0..good.len() {
            let mut bad = good.clone();
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            bad[i] = (x >> 24) as u8;
            let _ = parse_raw(&bad);
        }
        assert!(parse_raw(&[0u8; 16]).is_none(), "no name, no link");
    }
}
