//! Building a [`ClusterView`] from chitchat's node states: pure, the same input gives the same
//! view on every node.

use std::collections::{BTreeMap, BTreeSet};

use chitchat::ChitchatId;
use mesh_proto::{NodeFacts, NodeId, ObjectId, SignedClaim};

use super::{ClusterView, Life, Member, MemberState, Published, PublishedClaim};
use crate::mesh::keys::{
    KEY_CERT, KEY_EXT_DOWN_PREFIX, KEY_NODE_FACTS, KEY_SNAT_PREFIX, KEY_SNAT_WHY_PREFIX,
};
use crate::mesh::pki::signing::{claim_message, ClaimAuthority};
use crate::tenant::{Admission, Merged, Merger, Pass};

/// Builds a view from what each node life publishes and chitchat's live set. Pure: same input,
/// same view.
///
/// Only node lives that have been alive at least once (`ever_live`) count: chitchat learns of a
/// node from a digest before its failure detector has heard two heartbeats, and such a node is
/// joining, not dead. A node id may appear under several generations (restarts): among its lives
/// whose facts have arrived, the live one with the newest generation wins, else the newest; a new
/// life whose facts are still on their way leaves the node as it was. Facts that do not decode,
/// or that name another node than the key space they sit in, exclude that life with a reason
/// (the node is excluded if no other life of it counts).
pub fn build_view<'a>(
    me: &NodeId,
    generation: u64,
    nodes: impl IntoIterator<Item = (&'a ChitchatId, &'a Life)>,
    live: &BTreeSet<ChitchatId>,
    ever_live: &BTreeSet<ChitchatId>,
    admission: &Admission<'_>,
) -> ClusterView {
    let tenant = TenantMerge {
        merger: &mut Merger::default(),
        pass: Pass::Everything,
    };
    build_view_merging(tenant, me, generation, nodes, live, ever_live, admission).0
}

/// The tenant half of a build: the merger kept between builds, and whether this build merges
/// every value again rather than only those that changed.
pub struct TenantMerge<'m> {
    /// The merger, holding what earlier builds merged.
    pub merger: &'m mut Merger<ChitchatId>,
    /// What this build merges: what changed, or a recheck of the rules that depend on time.
    pub pass: Pass,
}

/// [`build_view`] merging the tenant state with a merger kept between builds: the same view,
/// and how the merge went.
pub fn build_view_merging<'a>(
    tenant: TenantMerge<'_>,
    me: &NodeId,
    generation: u64,
    nodes: impl IntoIterator<Item = (&'a ChitchatId, &'a Life)>,
    live: &BTreeSet<ChitchatId>,
    ever_live: &BTreeSet<ChitchatId>,
    admission: &Admission<'_>,
) -> (ClusterView, Merged) {
    let authority = admission.authority;
    let all: Vec<(&ChitchatId, &Life)> = nodes.into_iter().collect();
    // A node whose certificate is refused now (revoked, expired) is out, with everything it
    // published.
    let mut excluded = BTreeMap::new();
    let nodes: Vec<(&ChitchatId, &Life)> = all
        .into_iter()
        .filter(
            |(id, life)| match admitted(id, &life.published, authority) {
                Ok(()) => true,
                Err(why) => {
                    excluded.insert(id.node_id.to_string(), why);
                    false
                }
            },
        )
        .collect();
    // Records of every life of every node count, dead or joining: that is what keeps an object
    // alive while its replicas move.
    let merged = tenant.merger.update(
        nodes.iter().filter_map(|(id, life)| {
            let node = NodeId::new(&*id.node_id).ok()?;
            Some(((*id).clone(), node, life.tenant.clone()))
        }),
        admission,
        tenant.pass,
    );
    let tenant = tenant.merger.state().clone();
    let members = members(&nodes, live, ever_live, authority, &mut excluded);
    // Another life of the node (a new certificate after a rotation) may be fine.
    excluded.retain(|name, _| !members.keys().any(|m: &NodeId| m.as_str() == name));
    let view = ClusterView {
        generation,
        me: me.clone(),
        members,
        excluded,
        tenant,
    };
    (view, merged)
}

/// Each node's member entry, from its best life among those that have said who they are: a
/// restarted node's new life counts once its facts arrive, and until then its previous life
/// stands for it (dropping the node meanwhile would tear down the paths to its ports). Lives
/// whose facts are bad are added to `excluded`.
fn members(
    nodes: &[(&ChitchatId, &Life)],
    live: &BTreeSet<ChitchatId>,
    ever_live: &BTreeSet<ChitchatId>,
    authority: &dyn ClaimAuthority,
    excluded: &mut BTreeMap<String, String>,
) -> BTreeMap<NodeId, Member> {
    let mut best: BTreeMap<&str, (&ChitchatId, &Published, NodeFacts, bool)> = BTreeMap::new();
    for &(id, life) in nodes {
        let state = &life.published;
        if !ever_live.contains(id) && !live.contains(id) {
            continue;
        }
        let facts = match life_facts(&id.node_id, state) {
            Ok(Some(f)) => f,
            // Not yet replicated: this life counts once its facts arrive.
            Ok(None) => continue,
            Err(why) => {
                excluded.insert(id.node_id.to_string(), why);
                continue;
            }
        };
        let is_live = live.contains(id);
        let better = match best.get(&*id.node_id) {
            None => true,
            Some((cur, _, _, cur_live)) => {
                (is_live, id.generation_id) > (*cur_live, cur.generation_id)
            }
        };
        if better {
            best.insert(&id.node_id, (id, state, facts, is_live));
        }
    }
    let mut members = BTreeMap::new();
    for (id, state, facts, is_live) in best.into_values() {
        members.insert(
            facts.node_id().clone(),
            Member {
                state: if is_live {
                    MemberState::Alive
                } else {
                    MemberState::Dead
                },
                generation: id.generation_id,
                gossip_addr: id.gossip_advertise_addr,
                snat_claims: published_claims(facts.node_id(), state, authority),
                external_down: external_down(state),
                facts,
            },
        );
    }
    members
}

/// The facts a node life publishes: `None` while they have not arrived, an error when they do
/// not decode or name another node than the key space they sit in.
fn life_facts(node: &str, state: &Published) -> Result<Option<NodeFacts>, String> {
    let Some(text) = state.get(KEY_NODE_FACTS) else {
        return Ok(None);
    };
    let facts: NodeFacts =
        mesh_proto::decode_value(text).map_err(|e| format!("facts do not decode: {e}"))?;
    if facts.node_id().as_str() != node {
        return Err(format!("facts name another node ({})", facts.node_id()));
    }
    Ok(Some(facts))
}

/// Whether a node life's certificate is still good (`authority`); a life that has published
/// none yet is not judged.
fn admitted(
    id: &ChitchatId,
    state: &Published,
    authority: &dyn ClaimAuthority,
) -> Result<(), String> {
    let Some(cert) = state.get(KEY_CERT) else {
        return Ok(());
    };
    let node = NodeId::new(&*id.node_id).map_err(|e| e.to_string())?;
    authority.admits(&node, Some(cert))
}

/// The external networks a node reports unreachable.
fn external_down(state: &Published) -> BTreeSet<ObjectId> {
    state
        .keys()
        .filter_map(|k| k.strip_prefix(KEY_EXT_DOWN_PREFIX))
        .filter_map(|id| ObjectId::new(id).ok())
        .collect()
}

/// Longest reason kept from gossip.
const MAX_WHY_CHARS: usize = 200;

/// The SNAT claims a node publishes. A claim that does not decode, names another router than its
/// key or another node than its publisher, or whose signature `authority` does not accept for the
/// certificate the node publishes, is ignored: a node can only claim for itself.
fn published_claims(
    node: &NodeId,
    state: &Published,
    authority: &dyn ClaimAuthority,
) -> BTreeMap<ObjectId, PublishedClaim> {
    let mut out = BTreeMap::new();
    let cert = state.get(KEY_CERT).map(String::as_str);
    for (key, value) in state {
        let Some(router) = key.strip_prefix(KEY_SNAT_PREFIX) else {
            continue;
        };
        let Ok(signed) = mesh_proto::decode_value::<SignedClaim>(value) else {
            continue;
        };
        let claim = signed.claim;
        if &claim.node != node || claim.router.as_str() != router {
            continue;
        }
        let Ok(msg) = claim_message(&claim) else {
            continue;
        };
        if !authority.verify(node, cert, &msg, &signed.signature) {
            continue;
        }
        let why = state
            .get(&format!("{KEY_SNAT_WHY_PREFIX}{router}"))
            .and_then(|w| {
                let (at, reason) = w.split_once(' ')?;
                let reason: String = reason.chars().take(MAX_WHY_CHARS).collect();
                Some((at.parse().ok()?, reason))
            });
        out.insert(claim.router.clone(), PublishedClaim { claim, why });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::keys::KEY_NODE_FACTS;
    use crate::tenant::{Clock, Writers};
    use mesh_proto::{dvr_mac_for, NodeMode, Priority, SnatClaim};

    fn facts(id: &str) -> NodeFacts {
        let id = NodeId::new(id).unwrap();
        NodeFacts::new(
            id.clone(),
            NodeMode::Dvr,
            "192.0.2.1".parse().unwrap(),
            dvr_mac_for(&id),
            Priority::new(100).unwrap(),
            BTreeMap::new(),
        )
        .unwrap()
    }

    fn published_with(value: &str) -> Published {
        Published::from([(KEY_NODE_FACTS.to_string(), value.to_string())])
    }

    fn state_with(value: &str) -> Life {
        Life::from_published(published_with(value))
    }

    #[test]
    fn newest_live_generation_wins_and_bad_facts_are_excluded() {
        let a_old = ChitchatId::new("a", 1, ([127, 0, 0, 1], 1).into());
        let a_new = ChitchatId::new("a", 2, ([127, 0, 0, 1], 1).into());
        let b = ChitchatId::new("b", 1, ([127, 0, 0, 1], 2).into());
        let c = ChitchatId::new("c", 1, ([127, 0, 0, 1], 3).into());
        let good_a = mesh_proto::encode_value(&facts("a")).unwrap();
        let lying_b = mesh_proto::encode_value(&facts("z")).unwrap();
        let states = [
            (a_old.clone(), state_with(&good_a)),
            (a_new.clone(), state_with(&good_a)),
            (b.clone(), state_with(&lying_b)),
            (c.clone(), state_with("garbage")),
        ];
        let live: BTreeSet<_> = [a_new.clone()].into_iter().collect();
        let ever: BTreeSet<_> = [a_old.clone(), a_new.clone(), b.clone(), c.clone()]
            .into_iter()
            .collect();
        let me = NodeId::new("a").unwrap();
        let v = build_view(
            &me,
            7,
            states.iter().map(|(i, s)| (i, s)),
            &live,
            &ever,
            &Admission {
                clock: Clock::unbounded(),
                writers: Writers::AnyNode,
                authority: &crate::mesh::pki::signing::TrustAll,
            },
        );
        assert_eq!(v.generation, 7);
        assert_eq!(v.members.len(), 1);
        let a = &v.members[&me];
        assert_eq!((a.generation, a.state), (2, MemberState::Alive));
        assert!(v.excluded["b"].contains("another node"));
        assert!(v.excluded["c"].contains("do not decode"));
    }

    #[test]
    fn a_node_once_alive_and_no_longer_is_dead() {
        let a = ChitchatId::new("a", 1, ([127, 0, 0, 1], 1).into());
        let s = state_with(&mesh_proto::encode_value(&facts("a")).unwrap());
        let ever: BTreeSet<_> = [a.clone()].into_iter().collect();
        let v = build_view(
            &NodeId::new("x").unwrap(),
            1,
            [(&a, &s)],
            &BTreeSet::new(),
            &ever,
            &Admission {
                clock: Clock::unbounded(),
                writers: Writers::AnyNode,
                authority: &crate::mesh::pki::signing::TrustAll,
            },
        );
        assert_eq!(v.members.values().next().unwrap().state, MemberState::Dead);
    }

    #[test]
    fn a_node_never_seen_alive_is_joining_not_listed() {
        let a = ChitchatId::new("a", 1, ([127, 0, 0, 1], 1).into());
        let s = state_with(&mesh_proto::encode_value(&facts("a")).unwrap());
        let v = build_view(
            &NodeId::new("x").unwrap(),
            1,
            [(&a, &s)],
            &BTreeSet::new(),
            &BTreeSet::new(),
            &Admission {
                clock: Clock::unbounded(),
                writers: Writers::AnyNode,
                authority: &crate::mesh::pki::signing::TrustAll,
            },
        );
        assert!(v.members.is_empty());
    }

    #[test]
    fn a_restarted_node_keeps_its_old_life_until_the_new_one_is_alive() {
        let old = ChitchatId::new("a", 1, ([127, 0, 0, 1], 1).into());
        let new = ChitchatId::new("a", 2, ([127, 0, 0, 1], 1).into());
        let s = state_with(&mesh_proto::encode_value(&facts("a")).unwrap());
        let ever: BTreeSet<_> = [old.clone()].into_iter().collect();
        let v = build_view(
            &NodeId::new("x").unwrap(),
            1,
            [(&old, &s), (&new, &s)],
            &BTreeSet::new(),
            &ever,
            &Admission {
                clock: Clock::unbounded(),
                writers: Writers::AnyNode,
                authority: &crate::mesh::pki::signing::TrustAll,
            },
        );
        assert_eq!(v.members.values().next().unwrap().generation, 1);
    }

    #[test]
    fn a_new_life_whose_facts_have_not_arrived_leaves_the_node_as_it_was() {
        // The restart of a node whose ports others route to: its new life is heard alive (a
        // heartbeat in a digest) before its facts arrive. Dropping the node then would remove
        // every path to its ports until they do.
        let old = ChitchatId::new("a", 1, ([127, 0, 0, 1], 1).into());
        let new = ChitchatId::new("a", 2, ([127, 0, 0, 1], 1).into());
        let with_facts = state_with(&mesh_proto::encode_value(&facts("a")).unwrap());
        let nothing_yet = Life::default();
        let ever: BTreeSet<_> = [old.clone(), new.clone()].into_iter().collect();
        let x = NodeId::new("x").unwrap();
        let view = |live: &BTreeSet<ChitchatId>| {
            build_view(
                &x,
                1,
                [(&old, &with_facts), (&new, &nothing_yet)],
                live,
                &ever,
                &Admission {
                    clock: Clock::unbounded(),
                    writers: Writers::AnyNode,
                    authority: &crate::mesh::pki::signing::TrustAll,
                },
            )
        };
        // The old life still alive, or already found dead: the node stays, as its old life.
        for live in [[old.clone(), new.clone()].into(), [new.clone()].into()] {
            let v = view(&live);
            let a = v.members.get(&NodeId::new("a").unwrap());
            assert_eq!(
                a.map(|m| m.generation),
                Some(1),
                "node a vanished or changed life with live = {live:?}"
            );
            assert!(v.excluded.is_empty(), "{:?}", v.excluded);
        }
    }

    struct RejectAll;
    impl ClaimAuthority for RejectAll {
        fn verify(&self, _: &NodeId, _: Option<&str>, _: &[u8], _: &[u8]) -> bool {
            false
        }
    }

    #[test]
    fn only_signed_claims_of_the_publisher_itself_count() {
        let a = ChitchatId::new("a", 1, ([127, 0, 0, 1], 1).into());
        let claim = |node: &str, router: &str| SignedClaim {
            claim: SnatClaim {
                router: ObjectId::new(router).unwrap(),
                epoch: 2,
                priority: Priority::new(100).unwrap(),
                node: NodeId::new(node).unwrap(),
            },
            signature: vec![1; 64],
        };
        let mut s = published_with(&mesh_proto::encode_value(&facts("a")).unwrap());
        let mut set = |k: &str, v: String| s.insert(k.to_string(), v);
        set(
            "snat/r1",
            mesh_proto::encode_value(&claim("a", "r1")).unwrap(),
        );
        // Names another node, or another router than its key: never counted.
        set(
            "snat/r2",
            mesh_proto::encode_value(&claim("b", "r2")).unwrap(),
        );
        set(
            "snat/r3",
            mesh_proto::encode_value(&claim("a", "r4")).unwrap(),
        );
        let s = Life::from_published(s);
        let live: BTreeSet<_> = [a.clone()].into_iter().collect();
        let me = NodeId::new("a").unwrap();
        let v = build_view(
            &me,
            1,
            [(&a, &s)],
            &live,
            &live,
            &Admission {
                clock: Clock::unbounded(),
                writers: Writers::AnyNode,
                authority: &crate::mesh::pki::signing::TrustAll,
            },
        );
        let claims = &v.members[&me].snat_claims;
        assert_eq!(
            claims.keys().map(|r| r.as_str()).collect::<Vec<_>>(),
            ["r1"]
        );
        // A signature the authority does not accept: not counted either.
        let v = build_view(
            &me,
            1,
            [(&a, &s)],
            &live,
            &live,
            &Admission {
                clock: Clock::unbounded(),
                writers: Writers::AnyNode,
                authority: &RejectAll,
            },
        );
        assert!(v.members[&me].snat_claims.is_empty());
    }
}
