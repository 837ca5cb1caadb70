//! `observe`: dump every owned object of the host and of each owned named namespace.
//!
//! The hint is used in three places: it names the sysctls to read; it supplies the text of an nft
//! table whose digest comment matches; and for a link it names, the link fields the hint leaves
//! `None` (attributes dvrmesh does not manage on that link) are reported `None`, and a link the
//! hint calls `External` is reported `External` whatever its kernel type.

use std::collections::BTreeMap;

use mesh_proto::MacAddr;
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::links::{self, is_owned, ByIndex, RawKind, RawLink};
use super::socket::{nl, Conn, NlError};
use super::{addrs_routes, neigh_fdb, netns, nft, rules, sysctl, Pass, OWNED_NAMESPACE_PREFIXES};
use crate::{Desired, Error, LinkKind, LinkSpec, Netns, NftKey, Observed};

/// Reads back everything dvrmesh owns.
pub(crate) fn observe(pass: &mut Pass<'_>, hint: &Desired) -> Result<Observed, Error> {
    let mut out = Observed {
        namespaces: netns::list(pass.netns_dir(), OWNED_NAMESPACE_PREFIXES)?,
        ..Observed::default()
    };
    let all: Vec<Netns> = std::iter::once(Netns::Host)
        .chain(out.namespaces.iter().cloned().map(Netns::Named))
        .collect();

    let mut links_by_ns: Vec<(Netns, ByIndex)> = Vec::with_capacity(all.len());
    for ns in &all {
        let conn = pass.conn(ns)?;
        let by_index: ByIndex = links::dump(conn)
            .map_err(nl(ns, "dump links"))?
            .into_iter()
            .map(|l| (l.index, l))
            .collect();
        out.addrs.extend(
            addrs_routes::dump_addrs(conn, ns, &by_index).map_err(nl(ns, "dump addresses"))?,
        );
        out.routes
            .extend(addrs_routes::dump_routes(conn, ns, &by_index).map_err(nl(ns, "dump routes"))?);
        out.rules
            .extend(rules::dump(conn, ns).map_err(nl(ns, "dump rules"))?);
        out.neighs.extend(
            neigh_fdb::dump_neighs(conn, ns, &by_index).map_err(nl(ns, "dump neighbours"))?,
        );
        out.fdb
            .extend(neigh_fdb::dump_fdb(conn, ns, &by_index).map_err(nl(ns, "dump fdb"))?);
        observe_nft(pass, ns, hint, &mut out)?;
        links_by_ns.push((ns.clone(), by_index));
    }

    for (i, (ns, by_index)) in links_by_ns.iter().enumerate() {
        // Owned links, and devices of others the plan attaches (reported as `External`).
        let hinted_external = |name: &str| {
            matches!(
                hint.links.get(&(ns.clone(), name.to_string())),
                Some(LinkSpec {
                    kind: LinkKind::External,
                    ..
                })
            )
        };
        for link in by_index
            .values()
            .filter(|l| is_owned(&l.name) || hinted_external(&l.name))
        {
            let key = (ns.clone(), link.name.clone());
            let spec = link_spec(pass, &links_by_ns, i, link, hint.links.get(&key));
            out.links.insert(key, spec);
        }
    }

    observe_sysctls(pass, hint, &mut out)?;
    Ok(out)
}

/// The model's view of one owned link.
fn link_spec(
    pass: &mut Pass<'_>,
    all: &[(Netns, ByIndex)],
    at: usize,
    link: &RawLink,
    hint: Option<&LinkSpec>,
) -> LinkSpec {
    let kind = match (&link.kind, hint.map(|h| &h.kind)) {
        (_, Some(LinkKind::External)) | (RawKind::Other, _) => LinkKind::External,
        (RawKind::Bridge, _) => LinkKind::Bridge,
        (RawKind::Vxlan { vni, local, port }, _) => LinkKind::Vxlan {
            vni: *vni,
            local: *local,
            port: *port,
        },
        (RawKind::Veth, _) => {
            let (peer, peer_ns) =
                resolve_peer(pass, all, at, link).unwrap_or((String::new(), Netns::Host));
            LinkKind::Veth { peer, peer_ns }
        }
    };
    let by_index = &all[at].1;
    let mut spec = LinkSpec {
        kind,
        mtu: link.mtu,
        mac: link.mac.and_then(|m| MacAddr::new(m).ok()),
        master: link
            .master
            .and_then(|m| by_index.get(&m))
            .map(|m| m.name.clone()),
        learning: link.learning,
    };
    if let Some(h) = hint {
        if h.mtu.is_none() {
            spec.mtu = None;
        }
        if h.mac.is_none() {
            spec.mac = None;
        }
        if h.master.is_none() {
            spec.master = None;
        }
        if h.learning.is_none() {
            spec.learning = None;
        }
    }
    spec
}

/// The name and namespace of a veth's peer: the link in the namespace the peer's nsid names
/// whose index is the peer index and whose own peer is this link. When several namespaces have
/// such a link (ifindexes are per namespace), the nsid decides.
fn resolve_peer(
    pass: &mut Pass<'_>,
    all: &[(Netns, ByIndex)],
    at: usize,
    link: &RawLink,
) -> Option<(String, Netns)> {
    let (ns, _) = &all[at];
    let peer_index = link.peer_index?;
    let Some(nsid) = link.peer_nsid else {
        let peer = all[at].1.get(&peer_index)?;
        return Some((peer.name.clone(), ns.clone()));
    };
    let candidates: Vec<(&Netns, &RawLink)> = all
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != at)
        .filter_map(|(_, (other, by_index))| {
            by_index
                .get(&peer_index)
                .filter(|p| p.kind == RawKind::Veth && p.peer_index == Some(link.index))
                .map(|p| (other, p))
        })
        .collect();
    if let [(other, peer)] = candidates.as_slice() {
        return Some((peer.name.clone(), (*other).clone()));
    }
    for (other, peer) in candidates {
        let file = pass.open_ns(other).ok()?;
        let conn = pass.conn(ns).ok()?;
        if nsid_of(conn, &file).ok()? == Some(nsid) {
            return Some((peer.name.clone(), other.clone()));
        }
    }
    None
}

/// The id the connection's namespace has for the namespace behind `file`, if any.
fn nsid_of(conn: &mut Conn, file: &std::fs::File) -> Result<Option<i32>, NlError> {
    use std::os::fd::AsRawFd;
    let fd = u32::try_from(file.as_raw_fd()).map_err(|_| NlError {
        errno: libc::EBADF,
        message: "bad fd".into(),
    })?;
    let mut msg = NsidMessage::default();
    msg.attributes.push(NsidAttribute::Fd(fd));
    let replies = conn.request(RouteNetlinkMessage::GetNsId(msg), 0)?;
    Ok(replies.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewNsId(n) => n.attributes.into_iter().find_map(|a| match a {
            NsidAttribute::Id(id) if id >= 0 => Some(id),
            _ => None,
        }),
        _ => None,
    }))
}

/// nft tables named `dvrmesh*` in `ns`: the hint's text when the digest comment matches it, a
/// placeholder otherwise.
fn observe_nft(
    pass: &mut Pass<'_>,
    ns: &Netns,
    hint: &Desired,
    out: &mut Observed,
) -> Result<(), Error> {
    let file = pass.open_ns(ns)?;
    let mut conn = Conn::open(NETLINK_NETFILTER, &file, &ns.to_string())?;
    for table in nft::list_tables(&mut conn).map_err(nl(ns, "list nft tables"))? {
        let key = NftKey {
            ns: ns.clone(),
            family: table.family,
            name: table.name,
        };
        let text = match (hint.nft.get(&key), &table.comment) {
            (Some(body), Some(c)) if *c == nft::comment_for(body) => body.clone(),
            (_, c) => format!("<unknown digest {}>", c.as_deref().unwrap_or("none")),
        };
        out.nft.insert(key, text);
    }
    Ok(())
}

/// The sysctls the hint names, in namespaces that exist; keys whose file is missing are left
/// out.
fn observe_sysctls(pass: &mut Pass<'_>, hint: &Desired, out: &mut Observed) -> Result<(), Error> {
    let mut by_ns: BTreeMap<&Netns, Vec<String>> = BTreeMap::new();
    for (ns, key) in hint.sysctls.keys() {
        let exists = match ns {
            Netns::Host => true,
            Netns::Named(n) => out.namespaces.contains(n),
        };
        if exists {
            by_ns.entry(ns).or_default().push(key.clone());
        }
    }
    for (ns, keys) in by_ns {
        let file = pass.open_ns(ns)?;
        for (key, value) in sysctl::read_all(&file, &ns.to_string(), &keys)? {
            if let Some(value) = value {
                out.sysctls.insert((ns.clone(), key), value);
            }
        }
    }
    Ok(())
}
