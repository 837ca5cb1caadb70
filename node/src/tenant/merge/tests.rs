//! Merging only what changed gives what merging everything again gives.

use super::*;
use crate::tenant::Admission;
use mesh_proto::{MacAddr, Mtu, Name, Network, NetworkSpec, Port, PortSpec, Vni};
use proptest::prelude::*;
use std::net::Ipv4Addr;

/// A node life in these tests: (node, generation).
type Life = (u8, u8);

fn node(n: u8) -> NodeId {
    NodeId::new(format!("n{n}")).expect("node id")
}

fn version(writer: u8, hlc: u64) -> Version {
    Version {
        hlc: HlcTimestamp(hlc << 16),
        writer: node(writer),
    }
}

/// One of a small catalogue of values, so that lives publish the same objects and claims: a
/// network (object or tombstone), a port (hosted on `host`), an address claim, or garbage.
fn value(item: u8, writer: u8, host: u8, hlc: u64) -> (String, Decoded) {
    let id = |prefix: &str| ObjectId::new(format!("{prefix}{}", item % 3)).expect("id");
    let rec = match item % 5 {
        0 => Record::object(
            TenantObject::Network(
                Network::new(NetworkSpec {
                    id: id("net"),
                    name: Name::new(format!("blue{hlc}")).expect("name"),
                    vni: Vni::new(100 + u32::from(item % 3)).expect("vni"),
                    mtu: Mtu::new(1450).expect("mtu"),
                })
                .expect("network"),
            ),
            version(writer, hlc),
        ),
        1 => Record::tombstone(ObjectKind::Network, id("net"), version(writer, hlc)),
        2 => Record::object(
            TenantObject::Port(
                Port::new(PortSpec {
                    id: id("port"),
                    name: Name::new("vm").expect("name"),
                    network: ObjectId::new("net0").expect("id"),
                    mac: MacAddr::new([0xfa, 0x16, 0x3e, 0, 0, item]).expect("mac"),
                    fixed_ips: vec![Ipv4Addr::new(10, 0, 0, 10 + item)],
                    host: node(host),
                    device: None,
                    allowed_address_pairs: Vec::new(),
                    metadata: Default::default(),
                })
                .expect("port"),
            ),
            version(writer, hlc),
        ),
        3 => {
            let claim = AddressClaim {
                pool: ObjectId::new("sub1").expect("id"),
                ip: Ipv4Addr::new(10, 0, 0, item % 3),
                holder: id("port"),
                version: version(writer, hlc),
            };
            return (claim.key(), Decoded::Address(claim));
        }
        _ => {
            return (
                format!("o/network/bad{item}"),
                Decoded::Malformed("garbage".into()),
            )
        }
    };
    (rec.key(), Decoded::Record(Arc::new(rec)))
}

/// One change to the published lives.
#[derive(Clone, Debug)]
enum Step {
    /// A life publishes a value (new, or a new version of its key).
    Publish {
        life: Life,
        item: u8,
        writer: u8,
        host: u8,
        hlc: u64,
    },
    /// A life withdraws the `nth` of its keys.
    Withdraw { life: Life, nth: usize },
    /// A life is gone (garbage-collected, or its certificate refused).
    Forget { life: Life },
}

fn step() -> impl Strategy<Value = Step> {
    let life = (0u8..3, 0u8..2);
    prop_oneof![
        4 => (life.clone(), 0u8..15, 0u8..3, 0u8..3, 1u64..6).prop_map(
            |(life, item, writer, host, hlc)| Step::Publish { life, item, writer, host, hlc }
        ),
        2 => (life.clone(), 0usize..8).prop_map(|(life, nth)| Step::Withdraw { life, nth }),
        1 => life.prop_map(|life| Step::Forget { life }),
    ]
}

/// The lives as gossip holds them, with a gossip version counter.
#[derive(Default)]
struct Gossip {
    lives: BTreeMap<Life, Arc<TenantValues>>,
    version: u64,
}

impl Gossip {
    fn apply(&mut self, step: &Step) {
        self.version += 1;
        match step {
            Step::Publish {
                life,
                item,
                writer,
                host,
                hlc,
            } => {
                // Mostly a node publishes what it wrote (claims and ports are only valid so).
                let writer = if item % 2 == 0 { life.0 } else { *writer };
                let (key, decoded) = value(*item, writer, *host, *hlc);
                let mut values = self
                    .lives
                    .get(life)
                    .map(|v| (**v).clone())
                    .unwrap_or_default();
                values.insert(key, (self.version, Arc::new(decoded)));
                self.lives.insert(*life, Arc::new(values));
            }
            Step::Withdraw { life, nth } => {
                if let Some(values) = self.lives.get(life) {
                    let mut values = (**values).clone();
                    if let Some(key) = values.keys().nth(*nth).cloned() {
                        values.remove(&key);
                    }
                    self.lives.insert(*life, Arc::new(values));
                }
            }
            Step::Forget { life } => {
                self.lives.remove(life);
            }
        }
    }

    fn inputs(&self) -> Vec<(Life, NodeId, Arc<TenantValues>)> {
        self.lives
            .iter()
            .map(|(l, v)| (*l, node(l.0), v.clone()))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn merging_changes_gives_what_merging_everything_gives(steps in prop::collection::vec(step(), 1..40)) {
        let admission = Admission::open();
        let mut gossip = Gossip::default();
        let mut merger = Merger::default();
        for (i, s) in steps.iter().enumerate() {
            gossip.apply(s);
            let how = merger.update(gossip.inputs(), &admission, Pass::Changes);
            prop_assert_eq!(how, Merged::Changes, "step {} ({:?}) fell back to a full merge", i, s);
            let mut fresh = Merger::default();
            fresh.update(gossip.inputs(), &admission, Pass::Everything);
            prop_assert_eq!(merger.state(), fresh.state(), "after step {}: {:?}", i, s);
        }
    }
}

#[test]
fn an_update_that_changes_nothing_keeps_the_state_shared() {
    let admission = Admission::open();
    let mut gossip = Gossip::default();
    for item in 0..10 {
        gossip.apply(&Step::Publish {
            life: (item % 3, 0),
            item,
            writer: 0,
            host: item % 3,
            hlc: 1,
        });
    }
    let mut merger = Merger::default();
    merger.update(gossip.inputs(), &admission, Pass::Changes);
    let before = merger.state().clone();
    assert_eq!(
        merger.update(gossip.inputs(), &admission, Pass::Changes),
        Merged::Changes
    );
    assert!(merger.state().records.ptr_eq(&before.records));
    // A full merge finding the same content keeps the old maps too.
    assert_eq!(
        merger.update(gossip.inputs(), &admission, Pass::Everything),
        Merged::Everything
    );
    assert!(merger.state().records.ptr_eq(&before.records));
    assert!(merger.state().same_content(&before));
}

#[test]
fn a_node_reaching_its_claim_cap_is_merged_in_full_with_its_excess_refused() {
    let admission = Admission::open();
    let claim = |i: u32| {
        let c = AddressClaim {
            pool: ObjectId::new("sub1").expect("id"),
            ip: Ipv4Addr::from(0x0b00_0000 + i),
            holder: ObjectId::new("port-1").expect("id"),
            version: version(1, 1 + u64::from(i)),
        };
        (c.key(), (u64::from(i), Arc::new(Decoded::Address(c))))
    };
    let cap = MAX_CLAIMS_PER_NODE as u32;
    let values: TenantValues = (0..cap - 1).map(claim).collect();
    let lives = |v: &TenantValues| vec![((1u8, 0u8), node(1), Arc::new(v.clone()))];
    let mut merger = Merger::default();
    merger.update(lives(&values), &admission, Pass::Changes);
    assert!(merger.state().over_cap.is_empty());

    // Two more claims: the second is over the cap.
    let mut more = values.clone();
    more.extend([claim(cap - 1), claim(cap)]);
    assert_eq!(
        merger.update(lives(&more), &admission, Pass::Changes),
        Merged::Everything
    );
    assert_eq!(merger.state().address_claims.len(), MAX_CLAIMS_PER_NODE);
    assert_eq!(merger.state().over_cap.get(&node(1)), Some(&1));
    let mut fresh = Merger::default();
    fresh.update(lives(&more), &admission, Pass::Everything);
    assert_eq!(merger.state(), fresh.state());

    // Back under the cap: merged in full again, and nothing refused.
    assert_eq!(
        merger.update(lives(&values), &admission, Pass::Changes),
        Merged::Everything
    );
    assert!(
        merger.state().over_cap.is_empty(),
        "{:?}",
        merger.state().problems
    );
    assert_eq!(merger.state().address_claims.len(), MAX_CLAIMS_PER_NODE - 1);
}

#[test]
fn a_recheck_accepts_a_value_refused_for_the_clock_once_its_time_comes_without_merging_everything()
{
    let (key, decoded) = value(0, 1, 1, 100_000);
    let values: TenantValues = [(key, (1, Arc::new(decoded)))].into_iter().collect();
    let lives = vec![((1u8, 0u8), node(1), Arc::new(values))];
    let at = |now_ms: u64| Admission {
        clock: crate::tenant::Clock {
            now_ms,
            max_skew_ms: 1_000,
        },
        ..Admission::open()
    };
    let mut merger = Merger::default();
    // Stamped at 100 000 ms: too far ahead of a clock at 10 000 ms.
    merger.update(lives.clone(), &at(10_000), Pass::Changes);
    assert_eq!(merger.state().networks().count(), 0);
    assert_eq!(merger.state().problems.len(), 1);
    // Time passes; a pass of changes alone does not look at it again.
    merger.update(lives.clone(), &at(99_500), Pass::Changes);
    assert_eq!(merger.state().networks().count(), 0);
    // A recheck does, without merging everything.
    assert_eq!(
        merger.update(lives.clone(), &at(99_500), Pass::Recheck),
        Merged::Changes
    );
    assert_eq!(merger.state().networks().count(), 1);
    assert!(merger.state().problems.is_empty());
    let mut fresh = Merger::default();
    fresh.update(lives, &at(99_500), Pass::Everything);
    assert_eq!(merger.state(), fresh.state());
}
