//! Links: dump, create (bridge, VXLAN, veth with its peer created directly in another namespace),
//! set MTU/MAC/master/up and bridge-port learning, delete.

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, InfoVxlan,
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, LinkProtoInfoBridge,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{Conn, NlError};
use crate::{LinkKind, LinkSpec};

pub use crate::model::OWNED_LINK_PREFIXES;

/// `IFLA_BRPORT_LEARNING` inside `IFLA_PROTINFO` of an `AF_BRIDGE` setlink.
const IFLA_BRPORT_LEARNING: u16 = 8;

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
    pub(crate) mtu: Option<u32>,
    pub(crate) mac: Option<[u8; 6]>,
    /// Ifindex of the master, in the same namespace.
    pub(crate) master: Option<u32>,
    /// Bridge-port learning (ports of a bridge only).
    pub(crate) learning: Option<bool>,
    /// A veth's peer ifindex (`IFLA_LINK`), in the namespace `peer_nsid` names (or this one).
    pub(crate) peer_index: Option<u32>,
    pub(crate) peer_nsid: Option<i32>,
}

/// Links of one namespace by ifindex.
pub(crate) type ByIndex = HashMap<u32, RawLink>;

/// Every link of the connection's namespace.
pub(crate) fn dump(conn: &mut Conn) -> Result<Vec<RawLink>, NlError> {
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    Ok(conn
        .dump(RouteNetlinkMessage::GetLink(msg))?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(parse(l)),
            _ => None,
        })
        .collect())
}

/// The link called `name`, if it exists.
pub(crate) fn get(conn: &mut Conn, name: &str) -> Result<Option<RawLink>, NlError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    match conn.request(RouteNetlinkMessage::GetLink(msg), 0) {
        Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(parse(l)),
            _ => None,
        })),
        Err(e) if e.is(&[libc::ENODEV]) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The ifindex of `name`, or `ENODEV`.
pub(crate) fn index(conn: &mut Conn, name: &str) -> Result<u32, NlError> {
    get(conn, name)?
        .map(|l| l.index)
        .ok_or_else(|| no_device(name))
}

/// Creates `name` as `spec.kind` says (a veth's peer directly in `peer_ns`), then sets its
/// attributes and brings it up. A link that exists already only gets its attributes set, so a
/// repeated add converges. `External` links are never created: they only get attributes.
pub(crate) fn add(
    conn: &mut Conn,
    name: &str,
    spec: &LinkSpec,
    peer_ns: Option<&File>,
) -> Result<(), NlError> {
    if spec.kind != LinkKind::External && get(conn, name)?.is_none() {
        let mut msg = LinkMessage::default();
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
        // The MTU is set afterwards: an MTU given at creation does not count as set by the user,
        // and a bridge would then follow its ports' MTU.
        if let Some(mac) = &spec.mac {
            msg.attributes
                .push(LinkAttribute::Address(mac.octets().to_vec()));
        }
        match conn.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => {}
            Err(e) if e.is(&[libc::EEXIST]) => {}
            Err(e) => return Err(e),
        }
    }
    set(conn, name, spec)
}

/// Sets what `spec` asks for (MTU, MAC, master, learning; `None` fields are left alone) on the
/// existing link `name` and brings it up. Only what differs is sent.
pub(crate) fn set(conn: &mut Conn, name: &str, spec: &LinkSpec) -> Result<(), NlError> {
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
    if let Some(learning) = spec.learning {
        if new_master.is_some() || link.learning != Some(learning) {
            set_learning(conn, link.index, learning)?;
        }
    }
    Ok(())
}

/// `bridge link set dev X learning on|off`: an `AF_BRIDGE` setlink with `IFLA_PROTINFO`.
fn set_learning(conn: &mut Conn, index: u32, learning: bool) -> Result<(), NlError> {
    let mut msg = LinkMessage::default();
    msg.header.interface_family = AddressFamily::Bridge;
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::ProtoInfoBridge(vec![
        LinkProtoInfoBridge::Other(DefaultNla::new(
            IFLA_BRPORT_LEARNING,
            vec![u8::from(learning)],
        )),
    ]));
    conn.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
}

/// Brings `name` up (used for `lo` of a new namespace).
pub(crate) fn set_up(conn: &mut Conn, name: &str) -> Result<(), NlError> {
    let spec = LinkSpec {
        kind: LinkKind::External,
        mtu: None,
        mac: None,
        master: None,
        learning: None,
    };
    set(conn, name, &spec)
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

fn no_device(name: &str) -> NlError {
    NlError {
        errno: libc::ENODEV,
        message: format!("no link named {name}"),
    }
}

fn parse(msg: LinkMessage) -> RawLink {
    let mut link = RawLink {
        index: msg.header.index,
        name: String::new(),
        kind: RawKind::Other,
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: None,
        mac: None,
        master: None,
        learning: None,
        peer_index: None,
        peer_nsid: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::Address(a) => link.mac = a.try_into().ok(),
            LinkAttribute::Controller(m) => link.master = Some(m),
            LinkAttribute::Link(i) => link.peer_index = Some(i),
            LinkAttribute::LinkNetNsId(id) => link.peer_nsid = Some(id),
            LinkAttribute::LinkInfo(infos) => parse_info(infos, &mut link),
            _ => {}
        }
    }
    if link.kind != RawKind::Veth {
        link.peer_index = None;
        link.peer_nsid = None;
    }
    link
}

fn parse_info(infos: Vec<LinkInfo>, link: &mut RawLink) {
    let mut bridge_port = false;
    let mut learning = None;
    for info in infos {
        match info {
            LinkInfo::Kind(InfoKind::Bridge) => link.kind = RawKind::Bridge,
            LinkInfo::Kind(InfoKind::Veth) => link.kind = RawKind::Veth,
            LinkInfo::Kind(InfoKind::Vxlan) if !matches!(link.kind, RawKind::Vxlan { .. }) => {
                link.kind = RawKind::Vxlan {
                    vni: 0,
                    local: Ipv4Addr::UNSPECIFIED,
                    port: 0,
                };
            }
            LinkInfo::Data(InfoData::Vxlan(data)) => {
                let (mut vni, mut local, mut port) = (0, Ipv4Addr::UNSPECIFIED, 0);
                for d in data {
                    match d {
                        InfoVxlan::Id(v) => vni = v,
                        InfoVxlan::Local(l) => local = l,
                        InfoVxlan::Port(p) => port = p,
                        _ => {}
                    }
                }
                link.kind = RawKind::Vxlan { vni, local, port };
            }
            LinkInfo::PortKind(InfoPortKind::Bridge) => bridge_port = true,
            LinkInfo::PortData(InfoPortData::BridgePort(data)) => {
                for d in data {
                    if let InfoBridgePort::Learning(l) = d {
                        learning = Some(l);
                    }
                }
            }
            _ => {}
        }
    }
    if bridge_port {
        link.learning = learning;
    }
}
