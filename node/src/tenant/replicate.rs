//! Keeping every object alive without a central server: rendezvous-hashed replicas.
//!
//! Each configuration object is published by the `K` live nodes ranked highest by a hash of
//! (object id, node id), and by its writer until those replicas carry its version. When a replica
//! dies, the next node in rank takes its place on the next pass. So an object written at A survives
//! the permanent loss of A and of any other single node as soon as it has reached its replicas.
//! Ports are not replicated: only their host publishes them.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::{NodeId, ObjectKind, Record};

use super::TenantState;

/// How many live nodes publish each configuration object.
pub const REPLICAS: usize = 3;

/// Something this node must change in its own published key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Duty {
    /// Publish this record under its key.
    Publish(Box<Record>),
    /// Stop publishing this key, if what this node publishes there is still no newer than this
    /// version: the duty was computed from a view that may lag a write made since, and deleting
    /// that write before any replica copied it would lose it.
    Withdraw(String, mesh_proto::Version),
}

/// The `k` nodes of `live` ranked highest for `object`.
pub fn replica_set<'a>(object: &str, live: &'a BTreeSet<NodeId>, k: usize) -> Vec<&'a NodeId> {
    let mut ranked: Vec<(u64, &NodeId)> = live
        .iter()
        .map(|n| (rendezvous_weight(object, n.as_str()), n))
        .collect();
    ranked.sort_by(|a, b| b.cmp(a));
    ranked.into_iter().take(k).map(|(_, n)| n).collect()
}

fn rendezvous_weight(object: &str, node: &str) -> u64 {
    // FNV-1a over object and node, then a 64-bit finaliser for good spread.
    let mut h = mesh_proto::hash::fnv1a64(&[object.as_bytes(), node.as_bytes()]);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// What `me` must publish or withdraw, given the merged state, the live members, the keys `me`
/// publishes now (key → version), the wall clock and the tombstone lifetime.
pub fn duties(
    state: &TenantState,
    me: &NodeId,
    live: &BTreeSet<NodeId>,
    now_ms: u64,
    tombstone_ttl_ms: u64,
) -> Vec<Duty> {
    let mut out = Vec::new();
    let empty = BTreeMap::new();
    for ((kind, id), rec) in &state.records {
        let publishers = state.publishers.get(&(*kind, id.clone())).unwrap_or(&empty);
        let mine = publishers.get(me);
        let expired = rec.body().is_none()
            && now_ms.saturating_sub(rec.version().hlc.physical_ms()) > tombstone_ttl_ms;
        if expired {
            if let Some(v) = mine {
                out.push(Duty::Withdraw(rec.key(), v.clone()));
            }
            continue;
        }
        if *kind == ObjectKind::Port {
            // The host keeps publishing its newest port record; nobody else replicates ports.
            if &rec.version().writer == me && mine != Some(rec.version()) {
                out.push(Duty::Publish(Box::new((**rec).clone())));
            }
            continue;
        }
        let replicas = replica_set(id.as_str(), live, REPLICAS);
        if replicas.contains(&me) {
            if mine != Some(rec.version()) {
                out.push(Duty::Publish(Box::new((**rec).clone())));
            }
        } else if let Some(my_version) = mine {
            let covered = !replicas.is_empty()
                && replicas
                    .iter()
                    .all(|r| publishers.get(*r).is_some_and(|v| v >= my_version));
            if covered {
                out.push(Duty::Withdraw(rec.key(), my_version.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> BTreeSet<NodeId> {
        (0..n)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect()
    }

    #[test]
    fn replica_sets_are_stable_and_move_minimally() {
        let live = nodes(20);
        let a = replica_set("net-1", &live, 3);
        assert_eq!(a.len(), 3);
        assert_eq!(a, replica_set("net-1", &live, 3));
        // Removing one replica changes only that slot.
        let mut fewer = live.clone();
        fewer.remove(a[0]);
        let b = replica_set("net-1", &fewer, 3);
        assert!(b.contains(&a[1]) && b.contains(&a[2]));
    }

    #[test]
    fn objects_spread_over_nodes() {
        let live = nodes(10);
        let mut count: BTreeMap<&NodeId, usize> = BTreeMap::new();
        for i in 0..1000 {
            for n in replica_set(&format!("obj-{i}"), &live, 3) {
                *count.entry(n).or_default() += 1;
            }
        }
        assert!(count.values().all(|c| (150..=450).contains(c)), "{count:?}");
    }
}
