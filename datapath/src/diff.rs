//! `diff(desired, observed) -> Vec<Op>`: pure set difference, ordered make-before-break.
//!
//! Order: namespaces; namespace-wide sysctls (before any interface exists, so `send_redirects=0`
//! applies to every interface); links (bridges, then VXLAN, then veth pairs, then external
//! devices); interface sysctls; addresses; routes; rules; neighbours; FDB; nft tables; then every
//! deletion, innermost first. Objects inside a namespace being deleted are not deleted one by one.

use std::collections::BTreeSet;

use crate::model::*;

/// The ops that take `observed` to `desired`: every addition in dependency order, then every
/// deletion, innermost first.
pub fn diff(desired: &Desired, observed: &Observed) -> Vec<Op> {
    let mut ops = Vec::new();
    add_ops(desired, observed, &mut ops);
    delete_ops(desired, observed, &mut ops);
    ops
}

/// What `desired` has and `observed` lacks (or holds differently), namespaces first.
fn add_ops(desired: &Desired, observed: &Observed, ops: &mut Vec<Op>) {
    for name in desired.namespaces.difference(&observed.namespaces) {
        ops.push(Op::AddNamespace { name: name.clone() });
    }
    let (early, late): (Vec<_>, Vec<_>) = desired
        .sysctls
        .iter()
        .filter(|(k, v)| observed.sysctls.get(*k) != Some(*v))
        .partition(|((_, key), _)| !is_interface_sysctl(key));
    let set_sysctl = |((ns, key), value): (&(Netns, String), &String)| Op::SetSysctl {
        ns: ns.clone(),
        key: key.clone(),
        value: value.clone(),
    };
    ops.extend(early.into_iter().map(set_sysctl));
    link_ops(desired, observed, ops);
    ops.extend(late.into_iter().map(set_sysctl));
    ops.extend(added(&desired.addrs, &observed.addrs).map(Op::AddAddr));
    ops.extend(added(&desired.routes, &observed.routes).map(Op::AddRoute));
    ops.extend(added(&desired.rules, &observed.rules).map(Op::AddRule));
    neigh_ops(desired, observed, ops);
    ops.extend(added(&desired.fdb, &observed.fdb).map(Op::AddFdb));
    let created = created_links(ops);
    let mut tables = Vec::new();
    for (key, content) in &desired.nft {
        let NftContent::Table(table) = content else {
            continue; // nothing to load: a plan only holds tables
        };
        // The kernel holds a table's devices by index: one made anew needs the table anew.
        let names_new_device = || table.devices().any(|dev| created.contains(&(&key.ns, dev)));
        if observed.nft.get(key) != Some(content) || names_new_device() {
            tables.push(Op::ReplaceNft {
                key: key.clone(),
                table: table.clone(),
            });
        }
    }
    ops.extend(tables);
}

/// The devices the link ops in `ops` make (both ends of a veth pair).
fn created_links(ops: &[Op]) -> BTreeSet<(&Netns, &str)> {
    let mut out = BTreeSet::new();
    for op in ops {
        if let Op::AddLink { ns, name, spec } = op {
            out.insert((ns, name.as_str()));
            if let LinkKind::Veth { peer, peer_ns } = &spec.kind {
                out.insert((peer_ns, peer.as_str()));
            }
        }
    }
    out
}

/// What `want` has and `have` lacks.
fn added<'a, T: Ord + Clone>(
    want: &'a BTreeSet<T>,
    have: &'a BTreeSet<T>,
) -> impl Iterator<Item = T> + 'a {
    want.difference(have).cloned()
}

/// Neighbours to add: missing ones, and every one on a device whose MAC changes (the kernel
/// flushes a device's neighbours, permanent ones included, when its MAC changes).
fn neigh_ops(desired: &Desired, observed: &Observed, ops: &mut Vec<Op>) {
    let mac_changed: BTreeSet<(Netns, String)> = desired
        .links
        .iter()
        .filter(|(k, want)| {
            observed
                .links
                .get(*k)
                .is_some_and(|have| want.mac.is_some() && want.mac != have.mac)
        })
        .map(|(k, _)| k.clone())
        .collect();
    ops.extend(
        desired
            .neighs
            .iter()
            .filter(|n| {
                !observed.neighs.contains(*n)
                    || mac_changed.contains(&(n.ns.clone(), n.dev.clone()))
            })
            .cloned()
            .map(Op::AddNeigh),
    );
}

/// What `observed` has and `desired` lacks, innermost first. Nothing inside a namespace that goes
/// away is deleted on its own, nor anything on a link that goes away.
fn delete_ops(desired: &Desired, observed: &Observed, ops: &mut Vec<Op>) {
    let dying: BTreeSet<Netns> = observed
        .namespaces
        .difference(&desired.namespaces)
        .map(|n| Netns::Named(n.clone()))
        .collect();
    let keep = |ns: &Netns| !dying.contains(ns);
    for key in observed
        .nft
        .keys()
        .filter(|k| !desired.nft.contains_key(*k) && keep(&k.ns))
    {
        ops.push(Op::DelNft(key.clone()));
    }
    let gone_links: BTreeSet<(Netns, String)> = observed
        .links
        .keys()
        .filter(|k| !desired.links.contains_key(*k))
        .cloned()
        .collect();
    let on_kept_link =
        |ns: &Netns, dev: &str| keep(ns) && !gone_links.contains(&(ns.clone(), dev.to_string()));
    ops.extend(
        added(&observed.fdb, &desired.fdb)
            .filter(|f| on_kept_link(&f.ns, &f.dev))
            .map(Op::DelFdb),
    );
    ops.extend(
        added(&observed.neighs, &desired.neighs)
            .filter(|n| on_kept_link(&n.ns, &n.dev))
            .map(Op::DelNeigh),
    );
    ops.extend(
        added(&observed.rules, &desired.rules)
            .filter(|r| keep(&r.ns))
            .map(Op::DelRule),
    );
    ops.extend(
        added(&observed.routes, &desired.routes)
            .filter(|r| on_kept_link(&r.ns, &r.dev))
            .map(Op::DelRoute),
    );
    ops.extend(
        added(&observed.addrs, &desired.addrs)
            .filter(|a| on_kept_link(&a.ns, &a.dev))
            .map(Op::DelAddr),
    );
    link_deletions(observed, &gone_links, &keep, ops);
    for name in observed.namespaces.difference(&desired.namespaces) {
        ops.push(Op::DelNamespace { name: name.clone() });
    }
}

/// Deletes of links that go away in namespaces that stay: never an external device (not
/// dvrmesh's), and a veth once (its peer goes with it).
fn link_deletions(
    observed: &Observed,
    gone_links: &BTreeSet<(Netns, String)>,
    keep: &dyn Fn(&Netns) -> bool,
    ops: &mut Vec<Op>,
) {
    let mut deleted: BTreeSet<(Netns, String)> = BTreeSet::new();
    for (ns, name) in gone_links {
        let key = (ns.clone(), name.clone());
        if !keep(ns) || deleted.contains(&key) {
            continue;
        }
        match observed.links.get(&key).map(|l| &l.kind) {
            Some(LinkKind::External) => continue,
            Some(LinkKind::Veth { peer, peer_ns }) => {
                deleted.insert((peer_ns.clone(), peer.clone()));
            }
            _ => {}
        }
        deleted.insert(key);
        ops.push(Op::DelLink {
            ns: ns.clone(),
            name: name.clone(),
        });
    }
}

/// Interface-specific sysctls (`net.ipv4.conf.<dev>.…`, `net.ipv4.neigh.<dev>.…`) need the
/// interface; namespace-wide ones (`all`, `default`, or no interface part) must come before it.
fn is_interface_sysctl(key: &str) -> bool {
    sysctl_device(key).is_some()
}

fn kind_rank(k: &LinkKind) -> u8 {
    match k {
        LinkKind::Bridge => 0,
        LinkKind::Vxlan { .. } => 1,
        LinkKind::Veth { .. } => 2,
        LinkKind::External => 3,
    }
}

fn same_kind(a: &LinkKind, b: &LinkKind) -> bool {
    match (a, b) {
        // The kernel may not tell a veth's peer once it moved; the pair is the same object.
        (LinkKind::Veth { .. }, LinkKind::Veth { .. }) => true,
        _ => a == b,
    }
}

/// Whether `have` already carries every attribute `want` sets.
fn attrs_match(want: &LinkSpec, have: &LinkSpec) -> bool {
    (want.mtu.is_none() || want.mtu == have.mtu)
        && (want.mac.is_none() || want.mac == have.mac)
        && want.master == have.master
        && (want.learning.is_none() || want.learning == have.learning)
        && (want.isolated.is_none() || want.isolated == have.isolated)
        && (want.ipv6.is_none() || want.ipv6 == have.ipv6)
}

fn link_ops(desired: &Desired, observed: &Observed, ops: &mut Vec<Op>) {
    let mut wanted: Vec<(&(Netns, String), &LinkSpec)> = desired.links.iter().collect();
    wanted.sort_by_key(|(key, spec)| (kind_rank(&spec.kind), (*key).clone()));
    let mut created: BTreeSet<(Netns, String)> = BTreeSet::new();
    let mut pre_deletes = Vec::new();
    let mut adds = Vec::new();
    let mut sets = Vec::new();
    for (key, spec) in wanted {
        let (ns, name) = key;
        match observed.links.get(key) {
            Some(have) if same_kind(&spec.kind, &have.kind) => {
                if !attrs_match(spec, have) {
                    sets.push(Op::SetLink {
                        ns: ns.clone(),
                        name: name.clone(),
                        spec: spec.clone(),
                    });
                }
            }
            Some(_) if spec.kind == LinkKind::External => {
                sets.push(Op::SetLink {
                    ns: ns.clone(),
                    name: name.clone(),
                    spec: spec.clone(),
                });
            }
            Some(_) => {
                // Same name, other kind: replace it.
                pre_deletes.push(Op::DelLink {
                    ns: ns.clone(),
                    name: name.clone(),
                });
                adds.push(Op::AddLink {
                    ns: ns.clone(),
                    name: name.clone(),
                    spec: spec.clone(),
                });
            }
            None if spec.kind == LinkKind::External => {
                // Someone else's device: only attach it, when it exists.
                sets.push(Op::SetLink {
                    ns: ns.clone(),
                    name: name.clone(),
                    spec: spec.clone(),
                });
            }
            None => {
                if let LinkKind::Veth { peer, peer_ns } = &spec.kind {
                    let peer_key = (peer_ns.clone(), peer.clone());
                    if created.contains(&peer_key) {
                        // Created with its peer: only its own attributes remain to set.
                        sets.push(Op::SetLink {
                            ns: ns.clone(),
                            name: name.clone(),
                            spec: spec.clone(),
                        });
                        continue;
                    }
                    if observed.links.contains_key(&peer_key) {
                        // Half a pair survived: remove it so the pair can be made whole.
                        pre_deletes.push(Op::DelLink {
                            ns: peer_ns.clone(),
                            name: peer.clone(),
                        });
                        if let Some(peer_spec) = desired.links.get(&peer_key) {
                            sets.push(Op::SetLink {
                                ns: peer_ns.clone(),
                                name: peer.clone(),
                                spec: peer_spec.clone(),
                            });
                        }
                    }
                    created.insert(key.clone());
                }
                adds.push(Op::AddLink {
                    ns: ns.clone(),
                    name: name.clone(),
                    spec: spec.clone(),
                });
            }
        }
    }
    ops.extend(pre_deletes);
    ops.extend(adds);
    ops.extend(sets);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_re_added_when_their_device_changes_mac() {
        let ns = Netns::Named("qrouter-x".into());
        let link = |mac: &str| LinkSpec {
            kind: LinkKind::Veth {
                peer: "tqrx".into(),
                peer_ns: Netns::Host,
            },
            mtu: None,
            mac: Some(mac.parse().expect("mac")),
            master: None,
            learning: None,
            isolated: None,
            ipv6: None,
        };
        let neigh = NeighSpec {
            ns: ns.clone(),
            dev: "qr-x".into(),
            ip: "10.0.0.5".parse().expect("ip"),
            mac: "fa:16:3e:00:00:05".parse().expect("mac"),
        };
        let mut desired = Desired::default();
        desired.namespaces.insert("qrouter-x".into());
        desired
            .links
            .insert((ns.clone(), "qr-x".into()), link("fa:16:3d:00:00:01"));
        desired.neighs.insert(neigh.clone());
        let mut observed = desired.clone();
        assert!(diff(&desired, &observed).is_empty());
        observed
            .links
            .insert((ns.clone(), "qr-x".into()), link("fa:16:3d:00:00:02"));
        let ops = diff(&desired, &observed);
        assert!(ops.iter().any(|o| matches!(o, Op::SetLink { .. })));
        assert!(ops.contains(&Op::AddNeigh(neigh)), "{ops:?}");
    }

    #[test]
    fn a_table_naming_a_device_made_anew_is_loaded_anew() {
        use crate::nft::{Chain, ChainKind, Hook, Priority, Table};
        let table = |dev: &str| Table {
            family: crate::NftFamily::Netdev,
            name: "dvrmesh_vx7".into(),
            sets: vec![],
            chains: vec![Chain {
                name: "in".into(),
                kind: ChainKind::Filter,
                hook: Hook::Ingress(dev.into()),
                priority: Priority::Value(0),
                rules: vec![],
            }],
        };
        let key = NftKey {
            ns: Netns::Host,
            family: crate::NftFamily::Netdev,
            name: "dvrmesh_vx7".into(),
        };
        let vxlan = LinkSpec {
            kind: LinkKind::Vxlan {
                vni: 7,
                local: "192.0.2.1".parse().expect("ip"),
                port: 4789,
            },
            mtu: None,
            mac: None,
            master: None,
            learning: None,
            isolated: None,
            ipv6: None,
        };
        let mut desired = Desired::default();
        desired.links.insert((Netns::Host, "vx-7".into()), vxlan);
        desired
            .nft
            .insert(key.clone(), NftContent::Table(table("vx-7")));
        let replaced = |ops: &[Op]| ops.iter().any(|o| matches!(o, Op::ReplaceNft { .. }));
        assert!(diff(&desired, &desired.clone()).is_empty());
        // The same table, its device gone (deleted behind our back): made again, and the table
        // reloaded though its text is the same.
        let mut observed = desired.clone();
        observed.links.clear();
        let ops = diff(&desired, &observed);
        assert!(ops.iter().any(|o| matches!(o, Op::AddLink { .. })));
        assert!(replaced(&ops), "{ops:?}");
        // A device the table does not name is made: the table stays.
        let mut other = desired.clone();
        other.nft.insert(key, NftContent::Table(table("vx-8")));
        let mut observed = other.clone();
        observed.links.clear();
        assert!(!replaced(&diff(&other, &observed)));
    }

    #[test]
    fn interface_sysctls_are_told_apart() {
        assert!(!is_interface_sysctl("net.ipv4.ip_forward"));
        assert!(!is_interface_sysctl("net.ipv4.conf.all.rp_filter"));
        assert!(!is_interface_sysctl("net.ipv4.conf.default.send_redirects"));
        assert!(is_interface_sysctl("net.ipv4.conf.fg-abc.proxy_arp"));
        assert!(is_interface_sysctl("net.ipv4.neigh.fg-abc.proxy_delay"));
    }
}
