//! Property: from any state the fake kernel can be in (the result of programming another
//! topology), `apply(diff(desired, observe()))` reaches the desired state, with no failed op, and a
//! second pass finds nothing to do.

mod common;

use common::*;
use datapath::fake::FakeKernel;
use datapath::{diff, plan, Desired, Kernel, Netns, Topology};
use proptest::prelude::*;

/// A variation of the fixture: ports moved or removed, router interfaces and gateway toggled,
/// FIPs re-associated, nodes down, a different SNAT holder.
#[derive(Debug, Clone)]
struct Variation {
    port_hosts: Vec<Option<usize>>,
    r1_has_sub_b: bool,
    r1_gateway: bool,
    f1_on_vm1: bool,
    drop_f2: bool,
    dead: Vec<bool>,
}

const NODES: [&str; 4] = ["c1", "c2", "n1", "c3"];
const VMS: [&str; 5] = ["vm1", "vm2", "vm3", "vm4", "vm5"];

fn variation() -> impl Strategy<Value = Variation> {
    (
        proptest::collection::vec(proptest::option::weighted(0.8, 0usize..4), 5),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(proptest::bool::weighted(0.15), 4),
    )
        .prop_map(
            |(port_hosts, r1_has_sub_b, r1_gateway, f1_on_vm1, drop_f2, dead)| Variation {
                port_hosts,
                r1_has_sub_b,
                r1_gateway,
                f1_on_vm1,
                drop_f2,
                dead,
            },
        )
}

fn apply_variation(v: &Variation) -> Topology {
    let mut t = topology();
    for (vm, host) in VMS.iter().zip(&v.port_hosts) {
        let id = oid(vm);
        match host {
            None => {
                t.ports.remove(&id);
                t.fips.retain(|_, f| f.port.as_ref() != Some(&id));
            }
            Some(h) => {
                if let Some(p) = t.ports.get(&id) {
                    let mut spec = p.clone().into_spec();
                    spec.host = node(NODES[*h]);
                    t.ports
                        .insert(id, mesh_proto::Port::new(spec).expect("port"));
                }
            }
        }
    }
    let r1 = oid("rtr-one");
    if let Some(r) = t.routers.get(&r1) {
        let mut spec = r.clone().into_spec();
        if !v.r1_has_sub_b {
            spec.interfaces.remove(&oid("sub-b"));
            spec.snat_ports.remove(&oid("sub-b"));
            t.fips.retain(|_, f| {
                f.fixed_ip
                    .map(|ip| !ip.to_string().starts_with("10.2."))
                    .unwrap_or(true)
            });
        }
        if !v.r1_gateway {
            spec.gateway = None;
            spec.snat_ports.clear();
            t.fips.retain(|_, f| f.port.is_none());
        }
        t.routers
            .insert(r1, mesh_proto::Router::new(spec).expect("router"));
    }
    if v.f1_on_vm1 && t.ports.contains_key(&oid("vm1")) {
        if let Some(f) = t.fips.get(&oid("f1")) {
            let mut spec = f.clone().into_spec();
            spec.port = Some(oid("vm1"));
            spec.fixed_ip = Some("10.1.0.10".parse().expect("ip"));
            t.fips
                .insert(oid("f1"), mesh_proto::FloatingIp::new(spec).expect("fip"));
        }
    }
    if v.drop_f2 {
        t.fips.remove(&oid("f2"));
    }
    for (n, d) in NODES.iter().zip(&v.dead) {
        if let Some(info) = t.nodes.get_mut(&node(n)) {
            info.alive = !d;
        }
    }
    t.snat_holders = datapath::default_snat_holders(&t);
    t
}

fn fresh_kernel() -> FakeKernel {
    let mut k = FakeKernel::default();
    k.add_external_device(Netns::Host, "eth1");
    k
}

fn converge(k: &mut FakeKernel, desired: &Desired) -> Result<(), TestCaseError> {
    let observed = k.observe(desired).expect("observe");
    let ops = diff(desired, &observed);
    let report = k.apply(&ops).expect("apply");
    prop_assert!(report.failed.is_empty(), "failed ops: {:?}", report.failed);
    let after = k.observe(desired).expect("observe");
    prop_assert_eq!(&after, desired);
    let again = diff(desired, &after);
    prop_assert!(again.is_empty(), "second pass not empty: {:?}", again);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn apply_of_diff_reaches_desired_and_a_second_pass_is_empty(a in variation(), b in variation(), me in 0usize..4) {
        let me = node(NODES[me]);
        let mut k = fresh_kernel();
        let first = plan(&apply_variation(&a), &me).desired;
        converge(&mut k, &first)?;
        let second = plan(&apply_variation(&b), &me).desired;
        converge(&mut k, &second)?;
        // And back to nothing: everything dvrmesh made goes away.
        converge(&mut k, &Desired::default())?;
        let left = k.observe(&Desired::default()).expect("observe");
        prop_assert!(left.links.is_empty() && left.namespaces.is_empty() && left.nft.is_empty());
    }

    /// Restricting a state to a scope (by ranges of the ordered collections) keeps exactly the
    /// objects the scope holds, tested object by object.
    #[test]
    fn restricting_to_a_scope_keeps_exactly_what_it_holds(a in variation(), b in variation(), me in 0usize..4) {
        let me = node(NODES[me]);
        let first = plan(&apply_variation(&a), &me).desired;
        let second = plan(&apply_variation(&b), &me).desired;
        let scope = datapath::scope_of(&first, &second);
        for state in [&first, &second] {
            prop_assert_eq!(state.restricted_to(&scope), held(state, &scope));
        }
        // The host and every namespace whole, and each namespace by its first device.
        let mut wide = datapath::Scope::default();
        wide.whole.insert(Netns::Host);
        wide.whole.extend(second.namespaces.iter().cloned().map(Netns::Named));
        prop_assert_eq!(second.restricted_to(&wide), held(&second, &wide));
        prop_assert_eq!(second.restricted_to(&wide), second.clone());
        let mut narrow = datapath::Scope::default();
        for (ns, name) in second.links.keys() {
            narrow.parts.entry(ns.clone()).or_default().devices.insert(name.clone());
            if narrow.parts.len() > 3 { break; }
        }
        prop_assert_eq!(second.restricted_to(&narrow), held(&second, &narrow));
    }

    /// A pass scoped to the namespaces that changed since a clean pass reaches the same state as
    /// a full one, observes only those namespaces, and the next scoped pass reads nothing.
    #[test]
    fn a_scoped_pass_reaches_what_a_full_pass_reaches(a in variation(), b in variation(), me in 0usize..4) {
        let me = node(NODES[me]);
        let mut k = fresh_kernel();
        let first = plan(&apply_variation(&a), &me).desired;
        converge(&mut k, &first)?;
        let second = plan(&apply_variation(&b), &me).desired;
        let scope = datapath::scope_of(&first, &second);
        let full_ops = diff(&second, &k.observe(&second).expect("observe"));
        let out = datapath::reconcile_pass(&mut k, &second, Some(&first)).expect("pass");
        prop_assert_eq!(&out.ops, &full_ops, "the scoped pass does what a full pass would");
        prop_assert!(out.report.failed.is_empty(), "failed ops: {:?}", out.report.failed);
        prop_assert_eq!(out.observed_namespaces, Some(scope.namespaces()));
        let full = k.observe(&second).expect("observe");
        prop_assert_eq!(&full, &second);
        let again = datapath::reconcile_pass(&mut k, &second, Some(&second)).expect("pass");
        prop_assert!(again.ops.is_empty());
        prop_assert_eq!(again.observed_namespaces, Some(0));
    }
}

#[test]
fn changed_namespaces_names_exactly_the_namespaces_that_differ() {
    let me = node("c1");
    let t = topology();
    let full = plan(&t, &me).desired;
    assert!(datapath::changed_namespaces(&full, &full).is_empty());
    let mut without = t.clone();
    without.routers.remove(&oid("rtr-two"));
    let smaller = plan(&without, &me).desired;
    let changed = datapath::changed_namespaces(&full, &smaller);
    assert!(
        changed.contains(&Netns::Named("qrouter-rtr-two".into())),
        "{changed:?}"
    );
    assert!(changed.contains(&Netns::Host), "{changed:?}");
    assert!(
        !changed.contains(&Netns::Named("qrouter-rtr-one".into())),
        "rtr-one is untouched: {changed:?}"
    );
    let scope = datapath::scope_of(&full, &smaller);
    assert!(
        scope
            .whole
            .contains(&Netns::Named("qrouter-rtr-two".into())),
        "{scope:?}"
    );
    let host = scope
        .parts
        .get(&Netns::Host)
        .expect("the host is taken by device");
    assert!(host.devices.contains("tqrsub-c"), "{host:?}");
    assert!(
        !host.devices.contains("tqrsub-a"),
        "rtr-one's port is untouched: {host:?}"
    );
    let restricted = smaller.restricted_to(&scope);
    assert!(restricted
        .links
        .keys()
        .all(|(ns, name)| scope.holds(ns, Some(name))));
    assert!(!restricted.namespaces.contains("qrouter-rtr-one"));
}

#[test]
fn deleting_a_router_removes_everything_it_owned() {
    let mut k = fresh_kernel();
    let t = topology();
    let me = node("c1");
    let full = plan(&t, &me).desired;
    let ops = diff(&full, &k.observe(&full).expect("observe"));
    assert!(k.apply(&ops).expect("apply").failed.is_empty());
    let mut without = t.clone();
    without.routers.remove(&oid("rtr-two"));
    let smaller = plan(&without, &me).desired;
    let ops = diff(&smaller, &k.observe(&smaller).expect("observe"));
    assert!(k.apply(&ops).expect("apply").failed.is_empty());
    let state = k.state();
    assert!(!state.namespaces.contains("qrouter-rtr-two"));
    assert!(!state.links.keys().any(|(_, n)| n == "tqrsub-c"));
    assert!(!state
        .rules
        .iter()
        .chain(std::iter::empty())
        .any(|r| r.ns == Netns::Named("qrouter-rtr-two".into())));
    assert!(!state
        .nft
        .keys()
        .any(|k| k.ns == Netns::Named("qrouter-rtr-two".into())));
}

/// The objects of `state` that `scope` holds, tested one by one (what `restricted_to` must keep).
fn held(state: &Desired, scope: &datapath::Scope) -> Desired {
    let on = |ns: &Netns, dev: &str| scope.holds(ns, Some(dev));
    Desired {
        namespaces: state
            .namespaces
            .iter()
            .filter(|n| scope.whole.contains(&Netns::Named((*n).clone())))
            .cloned()
            .collect(),
        sysctls: state
            .sysctls
            .iter()
            .filter(|((ns, key), _)| scope.holds_sysctl(ns, key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        links: state
            .links
            .iter()
            .filter(|((ns, name), _)| on(ns, name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        addrs: state
            .addrs
            .iter()
            .filter(|a| on(&a.ns, &a.dev))
            .cloned()
            .collect(),
        routes: state
            .routes
            .iter()
            .filter(|r| on(&r.ns, &r.dev))
            .cloned()
            .collect(),
        rules: state
            .rules
            .iter()
            .filter(|r| match &r.selector {
                datapath::RuleSelector::Iif(dev) => on(&r.ns, dev),
                _ => scope.holds(&r.ns, None),
            })
            .cloned()
            .collect(),
        neighs: state
            .neighs
            .iter()
            .filter(|n| on(&n.ns, &n.dev))
            .cloned()
            .collect(),
        fdb: state
            .fdb
            .iter()
            .filter(|f| on(&f.ns, &f.dev))
            .cloned()
            .collect(),
        nft: state
            .nft
            .iter()
            .filter(|(k, _)| scope.holds_table(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}
