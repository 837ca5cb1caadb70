//! [`KernelState::restricted_to`]: the objects of a [`Scope`], found by range in the ordered
//! collections rather than by testing every object.
//!
//! Every collection is ordered by namespace first, and the by-device ones by device second, so
//! a namespace's objects (and, for addresses, neighbours and FDB entries, one device's) are one
//! contiguous range. A range starts at the least object with that namespace (and device): see
//! [`Least`]. At 1000 routers this reads the few hundred objects of a scoped pass instead of
//! walking all 72 000.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::{rule_device, Part, Scope};
use crate::model::*;
use crate::plan::default_route;
use mesh_proto::MacAddr;

impl KernelState {
    /// Only the objects in `scope`.
    pub fn restricted_to(&self, scope: &Scope) -> KernelState {
        let mut out = KernelState {
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| scope.whole.contains(&Netns::Named((*n).clone())))
                .cloned()
                .collect(),
            ..KernelState::default()
        };
        for ns in &scope.whole {
            out.sysctls.extend(map_of_ns(&self.sysctls, ns));
            out.links.extend(map_of_ns(&self.links, ns));
            out.addrs
                .extend(set_of(&self.addrs, AddrSpec::least(ns, ""), ns, |_| true));
            out.routes
                .extend(set_of(&self.routes, RouteSpec::least(ns, ""), ns, |_| true));
            out.rules
                .extend(set_of(&self.rules, RuleSpec::least(ns, ""), ns, |_| true));
            out.neighs
                .extend(set_of(&self.neighs, NeighSpec::least(ns, ""), ns, |_| true));
            out.fdb
                .extend(set_of(&self.fdb, FdbSpec::least(ns, ""), ns, |_| true));
            out.nft.extend(
                self.nft
                    .range(NftKey::least(ns, "")..)
                    .take_while(|(k, _)| k.ns == *ns)
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        for (ns, part) in &scope.parts {
            if scope.whole.contains(ns) {
                continue;
            }
            restrict_part(self, ns, part, &mut out);
        }
        out
    }
}

/// The objects on `part`'s devices (and its nft tables) in `ns`.
fn restrict_part(state: &KernelState, ns: &Netns, part: &Part, out: &mut KernelState) {
    let on = |dev: &str| part.devices.contains(dev);
    out.sysctls.extend(
        map_of_ns(&state.sysctls, ns)
            .filter(|((_, key), _)| crate::sysctl_device(key).is_some_and(on)),
    );
    for dev in &part.devices {
        let key = (ns.clone(), dev.clone());
        if let Some(spec) = state.links.get(&key) {
            out.links.insert(key, spec.clone());
        }
        // Device second in the order: one range per device.
        let same_dev = |d: &String| d == dev;
        out.addrs
            .extend(set_of(&state.addrs, AddrSpec::least(ns, dev), ns, |a| {
                same_dev(&a.dev)
            }));
        out.neighs
            .extend(set_of(&state.neighs, NeighSpec::least(ns, dev), ns, |n| {
                same_dev(&n.dev)
            }));
        out.fdb
            .extend(set_of(&state.fdb, FdbSpec::least(ns, dev), ns, |f| {
                same_dev(&f.dev)
            }));
    }
    // Device further back: the namespace's range, filtered.
    out.routes.extend(
        set_of(&state.routes, RouteSpec::least(ns, ""), ns, |_| true).filter(|r| on(&r.dev)),
    );
    out.rules.extend(
        set_of(&state.rules, RuleSpec::least(ns, ""), ns, |_| true)
            .filter(|r| rule_device(r).is_some_and(on)),
    );
    for key in &part.tables {
        if let Some(content) = state.nft.get(key).filter(|_| key.ns == *ns) {
            out.nft.insert(key.clone(), content.clone());
        }
    }
}

/// The entries of a map keyed by `(namespace, name)` in `ns`.
fn map_of_ns<'a, V: Clone>(
    map: &'a BTreeMap<(Netns, String), V>,
    ns: &'a Netns,
) -> impl Iterator<Item = ((Netns, String), V)> + 'a {
    map.range((ns.clone(), String::new())..)
        .take_while(move |((n, _), _)| n == ns)
        .map(|(k, v)| (k.clone(), v.clone()))
}

/// The objects of `set` from `least` on while they are in `ns` and `still` holds (a device's
/// range ends where `still` stops holding).
fn set_of<'a, T: Ord + Clone + HasNs>(
    set: &'a BTreeSet<T>,
    least: T,
    ns: &'a Netns,
    still: impl Fn(&T) -> bool + 'a,
) -> impl Iterator<Item = T> + 'a {
    set.range(least..)
        .take_while(move |t| t.ns() == ns && still(t))
        .cloned()
}

/// Objects that live in a namespace.
trait HasNs {
    fn ns(&self) -> &Netns;
}

/// The least object with a given namespace and device: every object of that namespace (and
/// device, where the device comes second in the order) sorts at or after it. The fields after
/// those take their least values: `0`, `""`, `None`, the unspecified address, `0.0.0.0/0` and
/// the first variant of an enum (`tests::least_values_sort_first` checks every variant).
trait Least {
    fn least(ns: &Netns, dev: &str) -> Self;
}

macro_rules! has_ns {
    ($($t:ty),*) => {$(
        impl HasNs for $t {
            fn ns(&self) -> &Netns {
                &self.ns
            }
        }
    )*};
}
has_ns!(AddrSpec, RouteSpec, RuleSpec, NeighSpec, FdbSpec);

impl Least for AddrSpec {
    fn least(ns: &Netns, dev: &str) -> Self {
        AddrSpec {
            ns: ns.clone(),
            dev: dev.to_string(),
            ip: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        }
    }
}

impl Least for RouteSpec {
    /// (`dev` is the last field: only `""` is least.)
    fn least(ns: &Netns, _dev: &str) -> Self {
        RouteSpec {
            ns: ns.clone(),
            table: 0,
            dst: default_route(),
            via: None,
            dev: String::new(),
        }
    }
}

impl Least for RuleSpec {
    fn least(ns: &Netns, _dev: &str) -> Self {
        RuleSpec {
            ns: ns.clone(),
            priority: 0,
            selector: RuleSelector::From(default_route()),
            table: 0,
        }
    }
}

impl Least for NeighSpec {
    /// The least MAC a neighbour can hold is `00:00:00:00:00:01` ([`MacAddr`] refuses the
    /// all-zero one).
    fn least(ns: &Netns, dev: &str) -> Self {
        NeighSpec {
            ns: ns.clone(),
            dev: dev.to_string(),
            ip: Ipv4Addr::UNSPECIFIED,
            mac: least_mac(),
        }
    }
}

impl Least for FdbSpec {
    fn least(ns: &Netns, dev: &str) -> Self {
        FdbSpec {
            ns: ns.clone(),
            dev: dev.to_string(),
            mac: [0; 6],
            target: FdbTarget::Vtep(Ipv4Addr::UNSPECIFIED),
        }
    }
}

impl Least for NftKey {
    fn least(ns: &Netns, _dev: &str) -> Self {
        NftKey {
            ns: ns.clone(),
            family: NftFamily::Ip,
            name: String::new(),
        }
    }
}

/// `00:00:00:00:00:01`, the least MAC [`MacAddr`] accepts.
fn least_mac() -> MacAddr {
    MacAddr::new([0, 0, 0, 0, 0, 1]).unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least values sort at or before every variant of every enum in the keys (a new variant
    /// breaks the `match`es here until it is added).
    #[test]
    fn least_values_sort_first() {
        let cidr = |s: &str| s.parse::<mesh_proto::Ipv4Cidr>().expect("cidr");
        let ns = Netns::Named("n".into());
        for selector in [
            RuleSelector::From(cidr("0.0.0.0/0")),
            RuleSelector::Fwmark { mark: 0, mask: 0 },
            RuleSelector::Iif(String::new()),
        ] {
            match &selector {
                RuleSelector::From(_) | RuleSelector::Fwmark { .. } | RuleSelector::Iif(_) => {}
            }
            let rule = RuleSpec {
                ns: ns.clone(),
                priority: 0,
                selector,
                table: 0,
            };
            assert!(RuleSpec::least(&ns, "") <= rule, "{rule:?}");
        }
        for target in [
            FdbTarget::Vtep(Ipv4Addr::UNSPECIFIED),
            FdbTarget::Flood(Ipv4Addr::UNSPECIFIED),
            FdbTarget::Bridge,
        ] {
            match &target {
                FdbTarget::Vtep(_) | FdbTarget::Flood(_) | FdbTarget::Bridge => {}
            }
            let entry = FdbSpec {
                ns: ns.clone(),
                dev: String::new(),
                mac: [0; 6],
                target,
            };
            assert!(FdbSpec::least(&ns, "") <= entry, "{entry:?}");
        }
        for family in [NftFamily::Ip, NftFamily::Netdev] {
            match family {
                NftFamily::Ip | NftFamily::Netdev => {}
            }
            let key = NftKey {
                ns: ns.clone(),
                family,
                name: String::new(),
            };
            assert!(NftKey::least(&ns, "") <= key);
        }
        assert!(Netns::Host < ns, "the host sorts before named namespaces");
    }
}
