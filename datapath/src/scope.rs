//! Scoped passes: after a pass that applied cleanly, the next one only needs to look at the
//! namespaces whose desired objects changed since, and in the host namespace (where every network
//! has devices) only at the devices whose objects changed. The agent's periodic resync (and any pass after
//! a failure) still observes everything, so drift made by someone else is found within one resync
//! interval; a change of the view reaches the kernel at a cost that grows with the change, not
//! with the number of routers on the node.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::*;
use crate::{diff, Error};

/// The objects of one namespace, borrowed, in a form that compares cheaply.
#[derive(Default, PartialEq, Eq)]
struct Slice<'a> {
    exists: bool,
    sysctls: Vec<(&'a String, &'a String)>,
    links: Vec<(&'a String, &'a LinkSpec)>,
    addrs: Vec<&'a AddrSpec>,
    routes: Vec<&'a RouteSpec>,
    rules: Vec<&'a RuleSpec>,
    neighs: Vec<&'a NeighSpec>,
    fdb: Vec<&'a FdbSpec>,
    nft: Vec<(&'a NftKey, &'a String)>,
}

fn slices(s: &KernelState) -> BTreeMap<Netns, Slice<'_>> {
    let mut out: BTreeMap<Netns, Slice<'_>> = BTreeMap::new();
    out.entry(Netns::Host).or_default().exists = true;
    for n in &s.namespaces {
        out.entry(Netns::Named(n.clone())).or_default().exists = true;
    }
    for ((ns, k), v) in &s.sysctls {
        out.entry(ns.clone()).or_default().sysctls.push((k, v));
    }
    for ((ns, k), v) in &s.links {
        out.entry(ns.clone()).or_default().links.push((k, v));
    }
    for a in &s.addrs {
        out.entry(a.ns.clone()).or_default().addrs.push(a);
    }
    for r in &s.routes {
        out.entry(r.ns.clone()).or_default().routes.push(r);
    }
    for r in &s.rules {
        out.entry(r.ns.clone()).or_default().rules.push(r);
    }
    for n in &s.neighs {
        out.entry(n.ns.clone()).or_default().neighs.push(n);
    }
    for f in &s.fdb {
        out.entry(f.ns.clone()).or_default().fdb.push(f);
    }
    for (k, v) in &s.nft {
        out.entry(k.ns.clone()).or_default().nft.push((k, v));
    }
    out
}

/// The namespaces whose objects differ between `before` and `after` (including namespaces that
/// appear or disappear).
pub fn changed_namespaces(before: &Desired, after: &Desired) -> BTreeSet<Netns> {
    let (a, b) = (slices(before), slices(after));
    let empty = Slice::default();
    a.keys()
        .chain(b.keys())
        .filter(|ns| a.get(*ns).unwrap_or(&empty) != b.get(*ns).unwrap_or(&empty))
        .cloned()
        .collect()
}

/// What a scoped pass observes and reconciles: whole namespaces, and in others (the host) only
/// some devices (with the addresses, routes, neighbours, FDB entries and interface sysctls on
/// them) and some nft tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Namespaces taken whole.
    pub whole: BTreeSet<Netns>,
    /// Namespaces of which only these devices and tables are taken.
    pub parts: BTreeMap<Netns, Part>,
}

/// The devices and nft tables of one namespace a scoped pass takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    /// Device names.
    pub devices: BTreeSet<String>,
    /// nft tables.
    pub tables: BTreeSet<NftKey>,
}

impl Scope {
    /// Whether nothing is in scope.
    pub fn is_empty(&self) -> bool {
        self.whole.is_empty() && self.parts.is_empty()
    }

    /// How many namespaces it touches, whole or in part.
    pub fn namespaces(&self) -> usize {
        self.whole.len() + self.parts.len()
    }

    /// Whether an object of `ns` on device `dev` (`None`: not on a device) is in scope.
    pub fn holds(&self, ns: &Netns, dev: Option<&str>) -> bool {
        self.whole.contains(ns)
            || dev.is_some_and(|d| self.parts.get(ns).is_some_and(|p| p.devices.contains(d)))
    }

    /// Whether the nft table `key` is in scope.
    pub fn holds_table(&self, key: &NftKey) -> bool {
        self.whole.contains(&key.ns)
            || self
                .parts
                .get(&key.ns)
                .is_some_and(|p| p.tables.contains(key))
    }

    /// Whether a sysctl of `ns` is in scope (an interface sysctl goes with its device).
    pub fn holds_sysctl(&self, ns: &Netns, key: &str) -> bool {
        self.holds(ns, sysctl_device(key))
    }
}

/// The device of an interface sysctl (`net.ipv4.conf.<dev>.…`, `net.ipv4.neigh.<dev>.…`).
pub fn sysctl_device(key: &str) -> Option<&str> {
    let mut parts = key.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some("conf" | "neigh"), Some(dev))
            if dev != "all" && dev != "default" =>
        {
            Some(dev)
        }
        _ => None,
    }
}

/// The scope of a pass from `before` to `after`: every namespace whose objects differ, whole,
/// except the host, which is taken by device when everything that differs there is on a device
/// or is an nft table (a veth pair inside the host is taken with both ends).
pub fn scope_of(before: &Desired, after: &Desired) -> Scope {
    let mut scope = Scope::default();
    for ns in changed_namespaces(before, after) {
        if ns != Netns::Host {
            scope.whole.insert(ns);
            continue;
        }
        match host_part(before, after) {
            Some(part) => {
                scope.parts.insert(ns, part);
            }
            None => {
                scope.whole.insert(ns);
            }
        }
    }
    scope
}

/// The devices and tables of the host whose objects differ; `None` when something not on a
/// device differs (a rule, a namespace-wide sysctl).
fn host_part(before: &Desired, after: &Desired) -> Option<Part> {
    let host = Netns::Host;
    let mut part = Part::default();
    let mut dev = |d: &str| {
        part.devices.insert(d.to_string());
    };
    for ((ns, name), spec) in sym_diff_map(&before.links, &after.links) {
        if *ns == host {
            dev(name);
            if let LinkKind::Veth { peer, peer_ns } = &spec.kind {
                if *peer_ns == host {
                    dev(peer);
                }
            }
        }
    }
    for a in sym_diff_set(&before.addrs, &after.addrs).filter(|a| a.ns == host) {
        dev(&a.dev);
    }
    for r in sym_diff_set(&before.routes, &after.routes).filter(|r| r.ns == host) {
        dev(&r.dev);
    }
    for n in sym_diff_set(&before.neighs, &after.neighs).filter(|n| n.ns == host) {
        dev(&n.dev);
    }
    for f in sym_diff_set(&before.fdb, &after.fdb).filter(|f| f.ns == host) {
        dev(&f.dev);
    }
    for ((ns, key), _) in sym_diff_map(&before.sysctls, &after.sysctls) {
        if *ns == host {
            dev(sysctl_device(key)?);
        }
    }
    if sym_diff_set(&before.rules, &after.rules).any(|r| r.ns == host) {
        return None;
    }
    for (key, _) in sym_diff_map(&before.nft, &after.nft) {
        if key.ns == host {
            part.tables.insert(key.clone());
        }
    }
    // A link's master and a veth's peer are looked up by the observer; a device that is only
    // someone's master need not be in scope.
    Some(part)
}

/// Entries of either map that the other lacks or holds with another value.
fn sym_diff_map<'a, K: Ord, V: PartialEq>(
    a: &'a BTreeMap<K, V>,
    b: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = (&'a K, &'a V)> {
    let left = a.iter().filter(move |(k, v)| b.get(k) != Some(*v));
    let right = b.iter().filter(move |(k, v)| a.get(k) != Some(*v));
    left.chain(right)
}

fn sym_diff_set<'a, T: Ord>(a: &'a BTreeSet<T>, b: &'a BTreeSet<T>) -> impl Iterator<Item = &'a T> {
    a.symmetric_difference(b)
}

impl KernelState {
    /// Only the objects in `scope`.
    pub fn restricted_to(&self, scope: &Scope) -> KernelState {
        KernelState {
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| scope.whole.contains(&Netns::Named((*n).clone())))
                .cloned()
                .collect(),
            sysctls: filter_map(&self.sysctls, |(ns, k)| scope.holds_sysctl(ns, k)),
            links: filter_map(&self.links, |(ns, name)| scope.holds(ns, Some(name))),
            addrs: filter_set(&self.addrs, |a| scope.holds(&a.ns, Some(&a.dev))),
            routes: filter_set(&self.routes, |r| scope.holds(&r.ns, Some(&r.dev))),
            rules: filter_set(&self.rules, |r| scope.holds(&r.ns, None)),
            neighs: filter_set(&self.neighs, |n| scope.holds(&n.ns, Some(&n.dev))),
            fdb: filter_set(&self.fdb, |f| scope.holds(&f.ns, Some(&f.dev))),
            nft: filter_map(&self.nft, |k| scope.holds_table(k)),
        }
    }
}

fn filter_map<K: Ord + Clone, V: Clone>(
    m: &BTreeMap<K, V>,
    keep: impl Fn(&K) -> bool,
) -> BTreeMap<K, V> {
    m.iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn filter_set<T: Ord + Clone>(s: &BTreeSet<T>, keep: impl Fn(&T) -> bool) -> BTreeSet<T> {
    s.iter().filter(|t| keep(t)).cloned().collect()
}

/// What one reconcile pass did.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// The ops it applied (or tried to).
    pub ops: Vec<Op>,
    /// What the kernel said.
    pub report: ApplyReport,
    /// How many namespaces it observed, whole or in part; `None` when it observed everything.
    pub observed_namespaces: Option<usize>,
}

/// One reconcile pass: observe, diff, apply. With `since` (the desired state of the last pass that
/// applied cleanly, which the kernel is taken to still hold), only [`scope_of`] the change is
/// observed and reconciled, and nothing at all is read when nothing changed; without it,
/// everything is.
pub fn reconcile_pass(
    kernel: &mut (impl Kernel + ?Sized),
    desired: &Desired,
    since: Option<&Desired>,
) -> Result<PassOutcome, Error> {
    let (observed, wanted, scope) = match since {
        None => (kernel.observe(desired)?, None, None),
        Some(before) => {
            let started = std::time::Instant::now();
            let scope = scope_of(before, desired);
            tracing::debug!(
                whole = scope.whole.len(),
                devices = scope.parts.values().map(|p| p.devices.len()).sum::<usize>(),
                millis = started.elapsed().as_secs_f64() * 1000.0,
                "scope of the pass"
            );
            if scope.is_empty() {
                return Ok(PassOutcome {
                    observed_namespaces: Some(0),
                    ..PassOutcome::default()
                });
            }
            let observing = std::time::Instant::now();
            let observed = kernel.observe_scoped(desired, &scope)?;
            let observe_ms = observing.elapsed().as_secs_f64() * 1000.0;
            let restricting = std::time::Instant::now();
            let wanted = desired.restricted_to(&scope);
            tracing::debug!(
                observe_ms,
                restrict_ms = restricting.elapsed().as_secs_f64() * 1000.0,
                "observed the scope"
            );
            (observed, Some(wanted), Some(scope))
        }
    };
    let diffed = std::time::Instant::now();
    let ops = diff(wanted.as_ref().unwrap_or(desired), &observed);
    let diff_ms = diffed.elapsed().as_secs_f64() * 1000.0;
    let applied = std::time::Instant::now();
    let report = if ops.is_empty() {
        ApplyReport::default()
    } else {
        kernel.apply(&ops)?
    };
    tracing::debug!(
        ops = ops.len(),
        diff_ms,
        apply_ms = applied.elapsed().as_secs_f64() * 1000.0,
        "pass applied"
    );
    Ok(PassOutcome {
        ops,
        report,
        observed_namespaces: scope.map(|s| s.namespaces()),
    })
}
