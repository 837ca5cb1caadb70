//! IPv4 policy rules carrying dvrmesh's protocol number, always with action "lookup table".
//!
//! The action must be `FR_ACT_TO_TBL`: a rule left at `FR_ACT_UNSPEC` is accepted by the kernel
//! but every lookup that reaches it fails with `EINVAL`.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::addrs_routes::cidr;
use super::socket::{Conn, NlError};
use crate::{Netns, RuleSelector, RuleSpec, ROUTE_PROTOCOL};

/// Rules with protocol [`ROUTE_PROTOCOL`]. A rule matching on more than the model can say is
/// reported by its first selector (fwmark, then iif, then source).
pub(crate) fn dump(conn: &mut Conn, ns: &Netns) -> Result<Vec<RuleSpec>, NlError> {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    let mut out = Vec::new();
    for m in conn.dump(RouteNetlinkMessage::GetRule(msg))? {
        let RouteNetlinkMessage::NewRule(r) = m else {
            continue;
        };
        if r.header.family != AddressFamily::Inet {
            continue;
        }
        let mut ours = false;
        let mut priority = 0;
        let mut table = u32::from(r.header.table);
        let mut src = Ipv4Addr::UNSPECIFIED;
        let (mut mark, mut mask, mut iif) = (None, None, None);
        for attr in &r.attributes {
            match attr {
                RuleAttribute::Protocol(p) => ours = u8::from(*p) == ROUTE_PROTOCOL,
                RuleAttribute::Priority(p) => priority = *p,
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Source(IpAddr::V4(ip)) => src = *ip,
                RuleAttribute::FwMark(m) => mark = Some(*m),
                RuleAttribute::FwMask(m) => mask = Some(*m),
                RuleAttribute::Iifname(n) => iif = Some(n.clone()),
                _ => {}
            }
        }
        if !ours || r.header.action != RuleAction::ToTable {
            continue;
        }
        let selector = if let Some(mark) = mark {
            RuleSelector::Fwmark {
                mark,
                mask: mask.unwrap_or(u32::MAX),
            }
        } else if let Some(dev) = iif {
            RuleSelector::Iif(dev)
        } else if let Some(from) = cidr(src, r.header.src_len) {
            RuleSelector::From(from)
        } else {
            continue;
        };
        out.push(RuleSpec {
            ns: ns.clone(),
            priority,
            selector,
            table,
        });
    }
    Ok(out)
}

/// Adds a rule (`NLM_F_EXCL`, so an identical rule answers `EEXIST` instead of being doubled).
pub(crate) fn add(conn: &mut Conn, r: &RuleSpec) -> Result<(), NlError> {
    conn.request(
        RouteNetlinkMessage::NewRule(message(r)),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map(drop)
}

/// Deletes exactly this rule; a missing one is fine.
pub(crate) fn del(conn: &mut Conn, r: &RuleSpec) -> Result<(), NlError> {
    match conn.request(RouteNetlinkMessage::DelRule(message(r)), 0) {
        Err(e) if e.is(&[libc::ENOENT, libc::ESRCH]) => Ok(()),
        other => other.map(drop),
    }
}

fn message(r: &RuleSpec) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.table = u8::try_from(r.table).unwrap_or(0);
    msg.header.action = RuleAction::ToTable;
    msg.attributes.push(RuleAttribute::Priority(r.priority));
    msg.attributes.push(RuleAttribute::Table(r.table));
    msg.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(ROUTE_PROTOCOL)));
    match &r.selector {
        RuleSelector::From(from) => {
            msg.header.src_len = from.prefix();
            if from.prefix() > 0 {
                msg.attributes
                    .push(RuleAttribute::Source(IpAddr::V4(from.network())));
            }
        }
        RuleSelector::Fwmark { mark, mask } => {
            msg.attributes.push(RuleAttribute::FwMark(*mark));
            msg.attributes.push(RuleAttribute::FwMask(*mask));
        }
        RuleSelector::Iif(dev) => msg.attributes.push(RuleAttribute::Iifname(dev.clone())),
    }
    msg
}
