//! `apply`: ops in the given order, except that all nft ops of one namespace run as one atomic
//! batch, on a helper thread, from the earliest point its namespace is ready (see
//! [`nft_apply`]).
//!
//! An op the kernel refuses goes to [`ApplyReport::failed`] and the batch goes on; a namespace
//! that cannot be entered ends the pass with an [`Error`].

use std::collections::HashMap;

use super::socket::{nl, NlError};
use super::{addrs_routes, garp, links, neigh_fdb, netns, nft_apply, ns_pool, rules, Pass};
use crate::plan::NAMESPACE_SYSCTLS;
use crate::{ApplyReport, Error, LinkKind, LinkSpec, Netns, Op};

/// Applies `ops` in order; each namespace's nft batch runs beside the others (see
/// [`nft_apply`]).
pub(crate) fn apply(pass: &mut Pass<'_>, ops: &[Op]) -> Result<ApplyReport, Error> {
    let mut report = ApplyReport::default();
    let mut pending_garp = Vec::new();
    // Time per kind of op, logged at debug level: where a slow pass spends its time.
    let mut prof: std::collections::BTreeMap<&'static str, (u32, std::time::Duration)> =
        Default::default();
    let schedule = nft_apply::schedule(ops);
    let starts = &schedule.starts;
    let peers = veth_peer_settings(ops);
    let made = ops
        .iter()
        .filter(|op| matches!(op, Op::AddNamespace { .. }))
        .count();
    let maker = (made >= ns_pool::MAKER_THRESHOLD).then(|| ns_pool::Maker::start(made));
    std::thread::scope(|s| -> Result<(), Error> {
        let mut lane = (!starts.is_empty()).then(|| nft_apply::Lane::start(s, ops));
        let mut launched = 0;
        let mut i = 0;
        while i < ops.len() {
            // Hand over every batch whose namespace is ready before this op.
            for (_, namespaces) in starts.range(launched..=i) {
                for ns in namespaces {
                    if let Some(lane) = lane.as_mut() {
                        lane.send(nft_apply::job(pass, &schedule, ns)?)?;
                    }
                }
            }
            launched = i + 1;
            let op = &ops[i];
            i += 1;
            if nft_apply::is_deletion(op) {
                if let Some(lane) = lane.as_mut() {
                    collect_nft(lane, &mut report, &mut prof)?;
                }
            }
            let t0 = std::time::Instant::now();
            if let Op::SetSysctl { ns, .. } = op {
                // Consecutive sysctls of one namespace are written from one thread inside it.
                let mut run = vec![op];
                while let Some(next @ Op::SetSysctl { ns: n2, .. }) = ops.get(i) {
                    if n2 != ns {
                        break;
                    }
                    run.push(next);
                    i += 1;
                }
                apply_sysctls(pass, ns, &run, &mut report)?;
                let e = prof.entry(op_name(op)).or_default();
                e.0 += run.len() as u32;
                e.1 += t0.elapsed();
                continue;
            }
            if matches!(op, Op::ReplaceNft { .. } | Op::DelNft(_)) {
                continue; // in its namespace's batch
            }
            match apply_one(pass, op, i - 1, &peers, maker.as_ref())? {
                Ok(()) => {
                    report.applied += 1;
                    pending_garp.extend(announcement(op));
                }
                Err(message) => report.failed.push((format!("{op:?}"), message)),
            }
            let took = t0.elapsed();
            tracing::trace!(?op, micros = took.as_micros() as u64, "applied");
            let e = prof.entry(op_name(op)).or_default();
            e.0 += 1;
            e.1 += took;
        }
        match lane.as_mut() {
            Some(lane) => collect_nft(lane, &mut report, &mut prof),
            None => Ok(()),
        }
    })?;
    announce_all(pass, pending_garp);
    ns_pool::refill();
    for (op, (count, took)) in prof {
        report
            .time_by_kind
            .insert(op.to_string(), (count, took.as_micros() as u64));
        tracing::debug!(
            op,
            count,
            millis = took.as_secs_f64() * 1000.0,
            "apply time by kind"
        );
    }
    Ok(report)
}

/// Waits for the nft batches handed over so far and counts what they did (their time is the
/// helper's, spent beside the pass).
fn collect_nft(
    lane: &mut nft_apply::Lane,
    report: &mut ApplyReport,
    prof: &mut std::collections::BTreeMap<&'static str, (u32, std::time::Duration)>,
) -> Result<(), Error> {
    let waiting = std::time::Instant::now();
    let outcomes = lane.wait()?;
    tracing::debug!(
        batches = outcomes.len(),
        millis = waiting.elapsed().as_secs_f64() * 1000.0,
        "waited for nft batches"
    );
    for outcome in outcomes {
        report.applied += outcome.applied;
        report.failed.extend(outcome.failed);
        let e = prof.entry("replace nft table").or_default();
        e.0 += outcome.ops;
        e.1 += outcome.took;
    }
    Ok(())
}

/// The announcement an op calls for, if it makes an address appear on this node: an address on a
/// router gateway, SNAT or FIP gateway device (`qg-`, `sg-`, `fg-`), or a FIP's /32 in a fip
/// namespace (announced from that namespace's `fg-` device, found when sending).
fn announcement(op: &Op) -> Option<(Netns, Option<String>, std::net::Ipv4Addr)> {
    match op {
        Op::AddAddr(a) if ["qg-", "sg-", "fg-"].iter().any(|p| a.dev.starts_with(p)) => {
            Some((a.ns.clone(), Some(a.dev.clone()), a.ip))
        }
        Op::AddRoute(r) if r.dst.prefix() == 32 && crate::plan::names::is_fip_ns(&r.ns) => {
            Some((r.ns.clone(), None, r.dst.network()))
        }
        _ => None,
    }
}

/// Sends the gratuitous ARPs of a pass, after its ops, beside the pass: per namespace one thread
/// that looks the devices up and sends. Announcing runs the receive path of every bridge port
/// inline, which would otherwise hold the pass up by milliseconds per address. A failure is
/// logged, never fatal.
fn announce_all(pass: &mut Pass<'_>, pending: Vec<(Netns, Option<String>, std::net::Ipv4Addr)>) {
    let mut by_ns: std::collections::BTreeMap<Netns, Vec<(Option<String>, std::net::Ipv4Addr)>> =
        Default::default();
    for (ns, dev, ip) in pending {
        by_ns.entry(ns).or_default().push((dev, ip));
    }
    for (ns, items) in by_ns {
        let label = ns.to_string();
        let file = match pass.open_ns(&ns) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(ns = %label, error = %e, "gratuitous ARP failed");
                continue;
            }
        };
        std::thread::spawn(move || match announce_ns(&file, &label, &items) {
            Ok(count) => tracing::debug!(ns = %label, count, "gratuitous ARP sent"),
            Err(e) => tracing::warn!(ns = %label, error = %e, "gratuitous ARP failed"),
        });
    }
}

/// Announces `items` in one namespace: each address from its device, or (no device named) from
/// the namespace's `fg-` device. Returns how many were sent.
fn announce_ns(
    file: &std::fs::File,
    label: &str,
    items: &[(Option<String>, std::net::Ipv4Addr)],
) -> Result<usize, String> {
    let mut conn = super::socket::Conn::open(netlink_sys::protocols::NETLINK_ROUTE, file, label)
        .map_err(|e| e.to_string())?;
    let links = links::dump(&mut conn).map_err(|e| format!("{e:?}"))?;
    let fg = links.iter().find(|l| l.name.starts_with("fg-"));
    let mut frames = Vec::new();
    for (dev, ip) in items {
        let link = match dev {
            Some(d) => links.iter().find(|l| &l.name == d),
            None => fg,
        };
        if let Some((index, mac)) = link.and_then(|l| l.mac.map(|m| (l.index, m))) {
            frames.push((index, mac, *ip));
        }
    }
    garp::announce_all(file, label, &frames)?;
    Ok(frames.len())
}

/// Writes a run of sysctls of one namespace.
fn apply_sysctls(
    pass: &mut Pass<'_>,
    ns: &Netns,
    run: &[&Op],
    report: &mut ApplyReport,
) -> Result<(), Error> {
    // A spare namespace adopted in this pass holds the common sysctls already.
    let preset = pass.is_preset(ns);
    let (done, run): (Vec<&Op>, Vec<&Op>) = run.iter().partition(|op| {
        preset
            && matches!(op, Op::SetSysctl { key, value, .. }
                if NAMESPACE_SYSCTLS.contains(&(key.as_str(), value.as_str())))
    });
    report.applied += done.len();
    if run.is_empty() {
        return Ok(());
    }
    let kvs: Vec<(&str, &str)> = run
        .iter()
        .filter_map(|op| match op {
            Op::SetSysctl { key, value, .. } => Some((key.as_str(), value.as_str())),
            _ => None,
        })
        .collect();
    for (op, result) in run.iter().zip(pass.sysctl_dir(ns)?.write_all(&kvs)?) {
        match result {
            Ok(()) => report.applied += 1,
            Err(message) => report.failed.push((format!("{op:?}"), message)),
        }
    }
    Ok(())
}

/// One non-nft op. The outer error is fatal (a namespace that cannot be entered); the inner one
/// is this op's failure.
fn apply_one<'a>(
    pass: &mut Pass<'_>,
    op: &'a Op,
    at: usize,
    peers: &PeerSettings<'a>,
    maker: Option<&ns_pool::Maker>,
) -> Result<Result<(), String>, Error> {
    let result: Result<(), NlError> = match op {
        Op::AddNamespace { name } => {
            // A spare made ahead of time or beside comes with `lo` up; otherwise create one
            // here.
            if let Some(spare) = maker.and_then(|m| m.next()).or_else(ns_pool::take) {
                match netns::adopt(pass.netns_dir(), name, &spare) {
                    Ok(true) => {
                        pass.created(Netns::Named(name.clone()), true);
                        return Ok(Ok(()));
                    }
                    Ok(false) => {}
                    Err(e) => return Ok(Err(e.to_string())),
                }
            }
            if let Err(e) = netns::create(pass.netns_dir(), name) {
                return Ok(Err(e.to_string()));
            }
            pass.created(Netns::Named(name.clone()), false);
            links::up(pass.conn(&Netns::Named(name.clone()))?, "lo")
        }
        Op::DelNamespace { name } => {
            let ns = Netns::Named(name.clone());
            pass.forget(&ns);
            // Veths whose peers were inside go with it.
            pass.forget_all_links();
            return Ok(netns::delete(pass.netns_dir(), name).map_err(|e| e.to_string()));
        }
        Op::SetSysctl { .. } => return Ok(Err("sysctls are written in runs".into())),
        Op::AddLink { ns, name, spec } => {
            forget_pair(pass, ns, name, spec);
            let peer_file = match &spec.kind {
                LinkKind::Veth { peer_ns, .. } if peer_ns != ns => Some(pass.open_ns(peer_ns)?),
                _ => None,
            };
            // The peer's own attributes (its `SetLink` follows) are given at creation too.
            let peer = match &spec.kind {
                LinkKind::Veth { peer, peer_ns } => peers.after(at, peer_ns, peer),
                _ => None,
            };
            let peer_spec = peer.map(|(_, _, spec)| spec);
            let created = links::add(pass.conn(ns)?, name, spec, peer_file.as_ref(), peer_spec);
            if let (Ok(true), Some((peer_ns, peer, _))) = (&created, peer) {
                pass.fresh_peer(peer_ns, peer);
            }
            match created {
                // Created down: IPv6 off first, then up.
                Ok(true) if spec.ipv6 == Some(false) => {
                    if let Err(e) = disable_ipv6(pass, ns, name)? {
                        return Ok(Err(e));
                    }
                    links::up_created(pass.conn(ns)?, name, spec)
                }
                // It existed and got its other attributes: IPv6 too.
                Ok(false) if spec.ipv6 == Some(false) => {
                    return disable_ipv6(pass, ns, name);
                }
                other => other.map(drop),
            }
        }
        Op::SetLink { ns, name, spec } => {
            // IPv6 goes off before the device comes up (a fresh veth end is still down).
            if spec.ipv6 == Some(false) {
                if let Err(e) = disable_ipv6(pass, ns, name)? {
                    return Ok(Err(e));
                }
            }
            if pass.take_fresh_peer(ns, name) {
                links::set_fresh_peer(pass.conn(ns)?, name, spec)
            } else {
                links::set(pass.conn(ns)?, name, spec)
            }
        }
        Op::DelLink { ns, name } => {
            // Its peer goes with a veth, under a name this op does not know: forget all.
            pass.forget_all_links();
            links::del(pass.conn(ns)?, name)
        }
        Op::AddAddr(a) => addrs_routes::add_addr(pass.conn(&a.ns)?, a),
        Op::DelAddr(a) => addrs_routes::del_addr(pass.conn(&a.ns)?, a),
        Op::AddRoute(r) => addrs_routes::add_route(pass.conn(&r.ns)?, r),
        Op::DelRoute(r) => addrs_routes::del_route(pass.conn(&r.ns)?, r),
        Op::AddRule(r) => rules::add(pass.conn(&r.ns)?, r),
        Op::DelRule(r) => rules::del(pass.conn(&r.ns)?, r),
        Op::AddNeigh(n) => neigh_fdb::add_neigh(pass.conn(&n.ns)?, n),
        Op::DelNeigh(n) => neigh_fdb::del_neigh(pass.conn(&n.ns)?, n),
        Op::AddFdb(f) => neigh_fdb::add_fdb(pass.conn(&f.ns)?, f),
        Op::DelFdb(f) => neigh_fdb::del_fdb(pass.conn(&f.ns)?, f),
        Op::ReplaceNft { .. } | Op::DelNft(_) => Ok(()),
    };
    Ok(match result {
        Ok(()) => Ok(()),
        // Adding what exists counts as success.
        Err(e) if e.is(&[libc::EEXIST]) && is_add(op) => Ok(()),
        Err(e) => Err(nl(&op_ns(op), op_name(op))(e).to_string()),
    })
}

/// The `SetLink` ops of a pass by device, so that creating a veth finds its peer's attributes
/// without scanning the ops (once per veth, that was quadratic in a large pass).
struct PeerSettings<'a>(HashMap<(&'a Netns, &'a str), (usize, &'a LinkSpec)>);

/// [`PeerSettings`] of `ops`.
fn veth_peer_settings(ops: &[Op]) -> PeerSettings<'_> {
    let mut by_device = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::SetLink { ns, name, spec } = op {
            by_device.entry((ns, name.as_str())).or_insert((i, spec));
        }
    }
    PeerSettings(by_device)
}

impl<'a> PeerSettings<'a> {
    /// The `SetLink` of `name` in `ns` that comes after the op at `at`, if any.
    fn after(
        &self,
        at: usize,
        ns: &'a Netns,
        name: &'a str,
    ) -> Option<(&'a Netns, &'a str, &'a LinkSpec)> {
        match self.0.get(&(ns, name)) {
            Some(&(i, spec)) if i > at => Some((ns, name, spec)),
            _ => None,
        }
    }
}

/// Disables IPv6 on the device `name` of `ns` (writing its `disable_ipv6` sysctl from a thread
/// inside the namespace). The outer error ends the pass (the namespace cannot be entered); the
/// inner one is this op's failure.
fn disable_ipv6(pass: &mut Pass<'_>, ns: &Netns, name: &str) -> Result<Result<(), String>, Error> {
    pass.sysctl_dir(ns)?.disable_ipv6(name)
}

/// Forgets the remembered ifindexes of a link about to be created and of its veth peer.
fn forget_pair(pass: &mut Pass<'_>, ns: &Netns, name: &str, spec: &crate::LinkSpec) {
    pass.forget_link(ns, name);
    if let LinkKind::Veth { peer, peer_ns } = &spec.kind {
        pass.forget_link(peer_ns, peer);
    }
}

fn is_add(op: &Op) -> bool {
    matches!(
        op,
        Op::AddLink { .. }
            | Op::AddAddr(_)
            | Op::AddRoute(_)
            | Op::AddRule(_)
            | Op::AddNeigh(_)
            | Op::AddFdb(_)
    )
}

fn op_ns(op: &Op) -> Netns {
    let ns = match op {
        Op::SetSysctl { ns, .. }
        | Op::AddLink { ns, .. }
        | Op::SetLink { ns, .. }
        | Op::DelLink { ns, .. } => ns,
        Op::AddAddr(a) | Op::DelAddr(a) => &a.ns,
        Op::AddRoute(r) | Op::DelRoute(r) => &r.ns,
        Op::AddRule(r) | Op::DelRule(r) => &r.ns,
        Op::AddNeigh(n) | Op::DelNeigh(n) => &n.ns,
        Op::AddFdb(f) | Op::DelFdb(f) => &f.ns,
        Op::ReplaceNft { key, .. } | Op::DelNft(key) => &key.ns,
        Op::AddNamespace { name } | Op::DelNamespace { name } => return Netns::Named(name.clone()),
    };
    ns.clone()
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::AddNamespace { .. } => "add namespace",
        Op::SetSysctl { .. } => "set sysctl",
        Op::AddLink { .. } => "add link",
        Op::SetLink { .. } => "set link",
        Op::AddAddr(_) => "add address",
        Op::AddRoute(_) => "add route",
        Op::AddRule(_) => "add rule",
        Op::AddNeigh(_) => "add neighbour",
        Op::AddFdb(_) => "add fdb entry",
        Op::ReplaceNft { .. } => "replace nft table",
        Op::DelNft(_) => "delete nft table",
        Op::DelFdb(_) => "delete fdb entry",
        Op::DelNeigh(_) => "delete neighbour",
        Op::DelRule(_) => "delete rule",
        Op::DelRoute(_) => "delete route",
        Op::DelAddr(_) => "delete address",
        Op::DelLink { .. } => "delete link",
        Op::DelNamespace { .. } => "delete namespace",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_link(ns: &Netns, name: &str, mtu: u32) -> Op {
        let mut spec = LinkSpec::of(LinkKind::Bridge);
        spec.mtu = Some(mtu);
        Op::SetLink {
            ns: ns.clone(),
            name: name.into(),
            spec,
        }
    }

    #[test]
    fn a_veth_takes_its_peers_attributes_only_from_a_set_link_after_it() {
        let a = Netns::Named("qrouter-a".into());
        let ops = vec![
            set_link(&a, "early", 1400),          // 0
            set_link(&Netns::Host, "qr-1", 1450), // 1: same name, other namespace
            set_link(&a, "qr-1", 1500),           // 2
        ];
        let peers = veth_peer_settings(&ops);
        let found = peers.after(1, &a, "qr-1").map(|(_, _, spec)| spec.mtu);
        assert_eq!(found, Some(Some(1500)));
        assert!(peers.after(2, &a, "qr-1").is_none(), "not the op itself");
        assert!(peers.after(1, &a, "early").is_none(), "not one before");
        assert!(peers.after(0, &a, "missing").is_none());
    }
}
