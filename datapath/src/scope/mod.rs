//! Scoped passes: after a pass that applied cleanly, the next one only needs to look at the
//! namespaces whose desired objects changed since, and in the namespaces every router shares (the
//! host, where every network has devices, and each `fip-` namespace, where every router with a
//! FIP has its `fpr-` device) only at the devices whose objects changed. The agent's periodic
//! resync (and any pass after a failure) still observes everything, so drift made by someone else
//! is found within one resync interval; a change of the view reaches the kernel at a cost that grows with the change, not
//! with the number of routers on the node.

mod restrict;

use std::collections::{BTreeMap, BTreeSet};

use crate::model::*;
use crate::{diff, Error};

/// The namespaces whose objects differ between `before` and `after` (including namespaces that
/// appear or disappear).
pub fn changed_namespaces(before: &Desired, after: &Desired) -> BTreeSet<Netns> {
    walk(before, after).changed
}

/// What differs between two desired states, found in one walk over each pair of sorted
/// collections (each object compared once).
struct Differences {
    /// Namespaces with an object that differs (or that appear or disappear).
    changed: BTreeSet<Netns>,
    /// In each shared namespace ([`by_device`]) with a difference, the devices and tables with an
    /// object that differs; `None` once something not on a device differs there (a rule not tied
    /// to an input device, a namespace-wide sysctl) or the namespace itself appears or goes.
    parts: BTreeMap<Netns, Option<Part>>,
}

/// Whether a scoped pass may take `ns` by device: the namespaces shared by every router (the host
/// and the `fip-` namespaces), which grow with the number of routers. A router's own namespaces
/// are small and taken whole.
fn by_device(ns: &Netns) -> bool {
    *ns == Netns::Host || crate::plan::names::is_fip_ns(ns)
}

/// The device a rule is tied to (`iif <dev>`), if any.
pub(crate) fn rule_device(rule: &RuleSpec) -> Option<&str> {
    match &rule.selector {
        RuleSelector::Iif(dev) => Some(dev),
        _ => None,
    }
}

fn walk(before: &Desired, after: &Desired) -> Differences {
    let mut d = Differences {
        changed: BTreeSet::new(),
        parts: BTreeMap::new(),
    };
    // Marks `ns` changed; in a namespace taken by device, what the object sits on goes in its part.
    fn mark(d: &mut Differences, ns: &Netns, on: On<'_>) {
        if !d.changed.contains(ns) {
            d.changed.insert(ns.clone());
        }
        if !by_device(ns) {
            return;
        }
        if !d.parts.contains_key(ns) {
            d.parts.insert(ns.clone(), Some(Part::default()));
        }
        let Some(slot) = d.parts.get_mut(ns) else {
            return;
        };
        match (on, slot.as_mut()) {
            (On::Device(dev), Some(part)) => {
                if !part.devices.contains(dev) {
                    part.devices.insert(dev.to_string());
                }
            }
            (On::Table(key), Some(part)) => {
                part.tables.insert(key.clone());
            }
            (On::Namespace, _) => *slot = None,
            (_, None) => {}
        }
    }
    for n in before.namespaces.symmetric_difference(&after.namespaces) {
        mark(&mut d, &Netns::Named(n.clone()), On::Namespace);
    }
    for ((ns, key), _) in sym_diff_map(&before.sysctls, &after.sysctls) {
        mark(
            &mut d,
            ns,
            sysctl_device(key).map_or(On::Namespace, On::Device),
        );
    }
    for ((ns, name), spec) in sym_diff_map(&before.links, &after.links) {
        mark(&mut d, ns, On::Device(name));
        // A veth pair inside the host is taken with both ends.
        if let LinkKind::Veth { peer, peer_ns } = &spec.kind {
            if *ns == Netns::Host && *peer_ns == Netns::Host {
                mark(&mut d, ns, On::Device(peer));
            }
        }
    }
    for (key, _) in sym_diff_map(&before.nft, &after.nft) {
        mark(&mut d, &key.ns, On::Table(key));
    }
    for a in before.addrs.symmetric_difference(&after.addrs) {
        mark(&mut d, &a.ns, On::Device(&a.dev));
    }
    for r in before.routes.symmetric_difference(&after.routes) {
        mark(&mut d, &r.ns, On::Device(&r.dev));
    }
    for r in before.rules.symmetric_difference(&after.rules) {
        mark(
            &mut d,
            &r.ns,
            rule_device(r).map_or(On::Namespace, On::Device),
        );
    }
    for n in before.neighs.symmetric_difference(&after.neighs) {
        mark(&mut d, &n.ns, On::Device(&n.dev));
    }
    for f in before.fdb.symmetric_difference(&after.fdb) {
        mark(&mut d, &f.ns, On::Device(&f.dev));
    }
    d
}

/// What a differing object sits on.
enum On<'a> {
    /// A device.
    Device(&'a str),
    /// Itself an nft table.
    Table(&'a NftKey),
    /// The namespace as a whole (a rule without an input device, a namespace-wide sysctl, the
    /// namespace itself).
    Namespace,
}

/// What a scoped pass observes and reconciles: whole namespaces, and in others (the host, `fip-`
/// namespaces) only some devices (with the addresses, routes, `iif` rules, neighbours, FDB entries
/// and interface sysctls on them) and some nft tables.
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

/// The scope of a pass from `before` to `after`: every namespace whose objects differ, whole,
/// except the shared ones (the host, `fip-` namespaces), which are taken by device when everything
/// that differs there is on a device or is an nft table (a veth pair inside the host is taken with
/// both ends). A link's master and a veth's peer are looked up by the observer; a device that is
/// only someone's master need not be in scope.
pub fn scope_of(before: &Desired, after: &Desired) -> Scope {
    let Differences { changed, mut parts } = walk(before, after);
    let mut scope = Scope::default();
    for ns in changed {
        match parts.remove(&ns).flatten() {
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

/// Entries of either map that the other lacks or holds with another value (one walk over both,
/// in key order).
fn sym_diff_map<'a, K: Ord, V: PartialEq>(
    a: &'a BTreeMap<K, V>,
    b: &'a BTreeMap<K, V>,
) -> Vec<(&'a K, &'a V)> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let (mut left, mut right) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let order = match (left.peek(), right.peek()) {
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return out,
        };
        match order {
            Ordering::Less => out.extend(left.next()),
            Ordering::Greater => out.extend(right.next()),
            Ordering::Equal => {
                if let (Some(x), Some(y)) = (left.next(), right.next()) {
                    if x.1 != y.1 {
                        out.push(x);
                        out.push(y);
                    }
                }
            }
        }
    }
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
