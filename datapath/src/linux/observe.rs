//! `observe`: dump every owned object of the host and of each owned named namespace (or of those
//! a scoped pass names).
//!
//! The hint is used in three places: it names the sysctls to read; it supplies the text of an nft
//! table whose digest comment matches; and for a link it names, the link fields the hint leaves
//! `None` (attributes dvrmesh does not manage on that link) are reported `None`, and a link the
//! hint calls `External` is reported `External` whatever its kernel type.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::MacAddr;
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};

use super::links::{self, is_owned, ByIndex, RawKind, RawLink};
use super::socket::{nl, Conn, NlError};
use super::{addrs_routes, neigh_fdb, netns, nft, rules, sysctl, Pass, OWNED_NAMESPACE_PREFIXES};
use crate::{Desired, Error, LinkKind, LinkSpec, Netns, NftContent, NftKey, Observed, Scope};

/// Reads back everything dvrmesh owns, or (`scope`) what a scoped pass takes: whole namespaces,
/// and in a namespace taken in part only its scoped devices (fetched by name, with their masters
/// and same-namespace veth peers fetched by index to name them) and scoped nft tables.
///
/// A veth whose peer lies in a namespace outside the scope is reported with the hinted peer (see
/// `resolve_peer`).
pub(crate) fn observe(
    pass: &mut Pass<'_>,
    hint: &Desired,
    scope: Option<&Scope>,
) -> Result<Observed, Error> {
    let takes = |ns: &Netns| scope.is_none_or(|s| s.whole.contains(ns) || s.parts.contains_key(ns));
    // A scoped pass only looks for the namespaces it takes (a full one lists them all).
    let namespaces = match scope {
        None => netns::list(pass.netns_dir(), OWNED_NAMESPACE_PREFIXES)?,
        Some(s) => s
            .whole
            .iter()
            .filter_map(|ns| match ns {
                Netns::Named(n) if OWNED_NAMESPACE_PREFIXES.iter().any(|p| n.starts_with(p)) => {
                    netns::path_of(pass.netns_dir(), n)
                        .is_ok_and(|path| netns::is_netns(&path))
                        .then(|| n.clone())
                }
                _ => None,
            })
            .collect(),
    };
    let mut out = Observed {
        namespaces,
        ..Observed::default()
    };
    // Named namespaces taken by device (a scoped pass's `fip-` namespaces) are read too, but not
    // listed: their existence is not in question.
    let parts_named = scope
        .into_iter()
        .flat_map(|s| s.parts.keys())
        .filter(|ns| match ns {
            Netns::Named(n) => {
                netns::path_of(pass.netns_dir(), n).is_ok_and(|p| netns::is_netns(&p))
            }
            Netns::Host => false,
        });
    let all: Vec<Netns> = std::iter::once(Netns::Host)
        .filter(|h| takes(h))
        .chain(out.namespaces.iter().cloned().map(Netns::Named))
        .chain(parts_named.cloned())
        .collect();
    // Whether an object of `ns` on `dev` is reported.
    let reports = |ns: &Netns, dev: Option<&str>| scope.is_none_or(|s| s.holds(ns, dev));

    // Each namespace is read on its own socket; two threads share the work (the kernel answers
    // dumps without the RTNL, so they do not wait for each other).
    let jobs: Vec<(Netns, std::fs::File)> = all
        .iter()
        .map(|ns| Ok((ns.clone(), pass.open_ns(ns)?)))
        .collect::<Result<_, Error>>()?;
    let sysctl_keys = sysctl_keys(hint, &all, scope);
    let read = |(ns, file): &(Netns, std::fs::File)| {
        let keys = sysctl_keys.get(ns).map(Vec::as_slice).unwrap_or_default();
        observe_ns(ns, file, hint, scope, keys)
    };
    let mut links_by_ns: Vec<(Netns, ByIndex)> = Vec::with_capacity(all.len());
    for (ns, seen) in all.iter().zip(on_two_threads(&jobs, read)) {
        let seen = seen?;
        out.addrs.extend(seen.addrs);
        out.routes.extend(seen.routes);
        out.rules.extend(seen.rules);
        out.neighs.extend(seen.neighs);
        out.fdb.extend(seen.fdb);
        out.nft.extend(seen.nft);
        out.sysctls.extend(seen.sysctls);
        links_by_ns.push((ns.clone(), seen.by_index));
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
        for link in by_index.values().filter(|l| {
            (is_owned(&l.name) || hinted_external(&l.name)) && reports(ns, Some(&l.name))
        }) {
            let key = (ns.clone(), link.name.clone());
            let spec = link_spec(
                pass,
                &links_by_ns,
                i,
                link,
                hint.links.get(&key),
                scope.is_none(),
            );
            out.links.insert(key, spec);
        }
    }
    Ok(out)
}

/// What one namespace holds (of what the pass looks at).
struct NsObserved {
    by_index: ByIndex,
    addrs: Vec<crate::AddrSpec>,
    routes: Vec<crate::RouteSpec>,
    rules: Vec<crate::RuleSpec>,
    neighs: Vec<crate::NeighSpec>,
    fdb: Vec<crate::FdbSpec>,
    nft: Vec<(NftKey, NftContent)>,
    sysctls: Vec<((Netns, String), String)>,
}

/// Runs `f` on every item, on this thread and one more, each taking the next item not taken;
/// the results come back in the items' order.
fn on_two_threads<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let (mut all, theirs) = std::thread::scope(|s| {
        let helper = s.spawn(work);
        let mine = work();
        (mine, helper.join())
    });
    // A panic on the helper is resumed here, as it would have been on one thread.
    all.extend(theirs.unwrap_or_else(|p| std::panic::resume_unwind(p)));
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// Reads one namespace on a socket of its own.
fn observe_ns(
    ns: &Netns,
    file: &std::fs::File,
    hint: &Desired,
    scope: Option<&Scope>,
    sysctl_keys: &[String],
) -> Result<NsObserved, Error> {
    let started = std::time::Instant::now();
    let reports = |dev: Option<&str>| scope.is_none_or(|s| s.holds(ns, dev));
    let part = scope.and_then(|s| s.parts.get(ns));
    let mut conn = Conn::open(NETLINK_ROUTE, file, &ns.to_string())?;
    let conn = &mut conn;
    let by_index: ByIndex = match part {
        None => links::dump(conn)
            .map_err(nl(ns, "dump links"))?
            .into_iter()
            .map(|l| (l.index, l))
            .collect(),
        Some(part) => links_of(conn, &part.devices).map_err(nl(ns, "get links"))?,
    };
    // Taken by device: each scoped device that exists is dumped on its own, the kernel
    // filtering, instead of the whole namespace (a `fip-` namespace holds an address and two
    // routes per router).
    let devices: Option<Vec<u32>> = part.map(|part| {
        by_index
            .values()
            .filter(|l| part.devices.contains(&l.name))
            .map(|l| l.index)
            .collect()
    });
    let devices = devices.as_deref();
    let addrs = each_device(devices, |d| {
        addrs_routes::dump_addrs(conn, ns, &by_index, d)
    })
    .map_err(nl(ns, "dump addresses"))?
    .into_iter()
    .filter(|a| reports(Some(&a.dev)))
    .collect();
    let routes = each_device(devices, |d| {
        addrs_routes::dump_routes(conn, ns, &by_index, d)
    })
    .map_err(nl(ns, "dump routes"))?
    .into_iter()
    .filter(|r| reports(Some(&r.dev)))
    .collect();
    let rules = rules::dump(conn, ns)
        .map_err(nl(ns, "dump rules"))?
        .into_iter()
        .filter(|r| reports(crate::scope::rule_device(r)))
        .collect();
    let neighs = each_device(devices, |d| neigh_fdb::dump_neighs(conn, ns, &by_index, d))
        .map_err(nl(ns, "dump neighbours"))?
        .into_iter()
        .filter(|n| reports(Some(&n.dev)))
        .collect();
    let fdb = each_device(devices, |d| {
        neigh_fdb::dump_fdb(conn, ns, &by_index, &hint.fdb, d)
    })
    .map_err(nl(ns, "dump fdb"))?
    .into_iter()
    .filter(|f| reports(Some(&f.dev)))
    .collect();
    let nft = observe_nft(ns, file, hint, scope)?;
    let mut sysctls = Vec::new();
    if !sysctl_keys.is_empty() {
        for (key, value) in sysctl::read_all(file, &ns.to_string(), sysctl_keys)? {
            if let Some(value) = value {
                sysctls.push(((ns.clone(), key), value));
            }
        }
    }
    tracing::debug!(
        ns = %ns,
        links = by_index.len(),
        millis = started.elapsed().as_secs_f64() * 1000.0,
        "observed"
    );
    Ok(NsObserved {
        by_index,
        addrs,
        routes,
        rules,
        neighs,
        fdb,
        nft,
        sysctls,
    })
}

/// `dump(None)` for the whole namespace, or (`devices`: a namespace taken by device) `dump` of
/// each of those devices in turn.
fn each_device<T>(
    devices: Option<&[u32]>,
    mut dump: impl FnMut(Option<u32>) -> Result<Vec<T>, NlError>,
) -> Result<Vec<T>, NlError> {
    match devices {
        None => dump(None),
        Some(list) => {
            let mut out = Vec::new();
            for index in list {
                out.extend(dump(Some(*index))?);
            }
            Ok(out)
        }
    }
}

/// The links named `devices` that exist, with what naming them needs: their masters and their
/// veth peers in the same namespace (fetched by index).
fn links_of(conn: &mut Conn, devices: &BTreeSet<String>) -> Result<ByIndex, NlError> {
    let mut by_index = ByIndex::new();
    for name in devices {
        if let Some(link) = links::get(conn, name)? {
            by_index.insert(link.index, link);
        }
    }
    let wanted: Vec<u32> = by_index
        .values()
        .flat_map(|l| {
            let peer = l.peer_index.filter(|_| l.peer_nsid.is_none());
            l.master.into_iter().chain(peer)
        })
        .collect();
    for index in wanted {
        if let std::collections::hash_map::Entry::Vacant(slot) = by_index.entry(index) {
            if let Some(link) = links::get_by_index(conn, index)? {
                slot.insert(link);
            }
        }
    }
    Ok(by_index)
}

/// The model's view of one owned link.
fn link_spec(
    pass: &mut Pass<'_>,
    all: &[(Netns, ByIndex)],
    at: usize,
    link: &RawLink,
    hint: Option<&LinkSpec>,
    complete: bool,
) -> LinkSpec {
    let kind = match (&link.kind, hint.map(|h| &h.kind)) {
        (_, Some(LinkKind::External)) | (RawKind::Other, _) => LinkKind::External,
        (RawKind::Bridge, _) => LinkKind::Bridge,
        (RawKind::Vxlan { vni, local, port }, _) => LinkKind::Vxlan {
            vni: *vni,
            local: *local,
            port: *port,
        },
        (RawKind::Veth, hinted) => {
            let (peer, peer_ns) = resolve_peer(pass, all, at, link, hinted, complete)
                .unwrap_or((String::new(), Netns::Host));
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
        isolated: link.isolated,
        ipv6: link.ipv6,
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
        if h.isolated.is_none() {
            spec.isolated = None;
        }
        if h.ipv6.is_none() {
            spec.ipv6 = None;
        }
    }
    spec
}

/// The name and namespace of a veth's peer: the link in the namespace the peer's nsid names
/// whose index is the peer index and whose own peer is this link. When several namespaces have
/// such a link (ifindexes are per namespace), the nsid decides.
///
/// A scoped pass (`complete` false) trusts the namespaces it does not observe to hold what the
/// last clean pass left there, as it trusts everything else in them: a veth whose peer is in
/// another namespace and whose hinted peer namespace is not observed is reported with the hinted
/// peer. The periodic full pass checks those too.
fn resolve_peer(
    pass: &mut Pass<'_>,
    all: &[(Netns, ByIndex)],
    at: usize,
    link: &RawLink,
    hinted: Option<&LinkKind>,
    complete: bool,
) -> Option<(String, Netns)> {
    let (ns, _) = &all[at];
    let peer_index = link.peer_index?;
    let Some(nsid) = link.peer_nsid else {
        let peer = all[at].1.get(&peer_index)?;
        return Some((peer.name.clone(), ns.clone()));
    };
    let hinted = match hinted {
        Some(LinkKind::Veth { peer, peer_ns }) => Some((peer, peer_ns)),
        _ => None,
    };
    if !complete {
        if let Some((peer, peer_ns)) = hinted {
            if peer_ns != ns && !all.iter().any(|(o, _)| o == peer_ns) {
                return Some((peer.clone(), peer_ns.clone()));
            }
        }
    }
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
    // With every namespace observed a single candidate must be the peer; in a scoped pass it
    // must also be where the plan put it.
    if let [(other, peer)] = candidates.as_slice() {
        if complete || hinted.is_some_and(|(_, peer_ns)| peer_ns == *other) {
            return Some((peer.name.clone(), (*other).clone()));
        }
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
    ns: &Netns,
    file: &std::fs::File,
    hint: &Desired,
    scope: Option<&Scope>,
) -> Result<Vec<(NftKey, NftContent)>, Error> {
    if scope.is_some_and(|s| {
        !s.whole.contains(ns) && s.parts.get(ns).is_none_or(|p| p.tables.is_empty())
    }) {
        return Ok(Vec::new());
    }
    let mut conn = Conn::open(NETLINK_NETFILTER, file, &ns.to_string())?;
    let mut out = Vec::new();
    for table in nft::list_tables(&mut conn).map_err(nl(ns, "list nft tables"))? {
        let key = NftKey {
            ns: ns.clone(),
            family: table.family,
            name: table.name,
        };
        if scope.is_some_and(|s| !s.holds_table(&key)) {
            continue;
        }
        let content = match (hint.nft.get(&key), table.comment) {
            (Some(NftContent::Table(t)), Some(c)) if c == nft::comment_for(t) => {
                NftContent::Table(t.clone())
            }
            (_, comment) => NftContent::Unknown(comment),
        };
        out.push((key, content));
    }
    Ok(out)
}

/// The sysctls the hint names, by namespace, in the namespaces observed (and the scope).
fn sysctl_keys(
    hint: &Desired,
    observed: &[Netns],
    scope: Option<&Scope>,
) -> BTreeMap<Netns, Vec<String>> {
    let mut by_ns: BTreeMap<Netns, Vec<String>> = BTreeMap::new();
    for (ns, key) in hint.sysctls.keys() {
        if observed.contains(ns) && scope.is_none_or(|s| s.holds_sysctl(ns, key)) {
            by_ns.entry(ns.clone()).or_default().push(key.clone());
        }
    }
    by_ns
}
