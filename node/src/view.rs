//! The converged cluster view: one writer builds an immutable [`ClusterView`] from chitchat state
//! and publishes it; any number of readers load it without locks and wait for changes on a watch
//! channel carrying the view's generation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chitchat::{Chitchat, ChitchatId, NodeState};
use mesh_proto::{NodeFacts, NodeId, ObjectId, SignedClaim, SnatClaim};
use serde::Serialize;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::gossip::KEY_NODE_FACTS;
use crate::signing::{claim_message, ClaimAuthority, KEY_CERT};
use crate::store::TenantState;

/// Whether a member is currently considered up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// The failure detector hears its heartbeats.
    Alive,
    /// Its heartbeats stopped.
    Dead,
}

/// One node of the cluster as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// What the node published about itself.
    pub facts: NodeFacts,
    /// Up or down.
    pub state: MemberState,
    /// The gossip generation (start time) of the node's current life.
    pub generation: u64,
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// The SNAT claims it publishes (see [`crate::ha`]), by router.
    pub snat_claims: BTreeMap<ObjectId, PublishedClaim>,
    /// External networks whose gateway does not answer this node's probes.
    pub external_down: BTreeSet<ObjectId>,
}

/// Gossip key prefix marking an external network whose gateway a node cannot reach:
/// `ext-down/<external network id>`.
pub const KEY_EXT_DOWN_PREFIX: &str = "ext-down/";

/// The external networks a node reports unreachable.
fn external_down(state: &NodeState) -> BTreeSet<ObjectId> {
    state
        .key_values()
        .filter_map(|(k, _)| k.strip_prefix(KEY_EXT_DOWN_PREFIX))
        .filter_map(|id| ObjectId::new(id).ok())
        .collect()
}

/// A SNAT claim as a node publishes it in gossip, with why and when it was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedClaim {
    /// The claim.
    pub claim: SnatClaim,
    /// Why the node took the router, and when (Unix ms), if it said.
    pub why: Option<(u64, String)>,
}

/// Gossip key prefix of a node's SNAT claims: `snat/<router>`.
pub const KEY_SNAT_PREFIX: &str = "snat/";
/// Gossip key prefix of the reason of each claim: `snat-why/<router>` = `<unix ms> <reason>`.
pub const KEY_SNAT_WHY_PREFIX: &str = "snat-why/";
/// Longest reason kept from gossip.
const MAX_WHY_CHARS: usize = 200;

/// The SNAT claims a node publishes. A claim that does not decode, names another router than its
/// key or another node than its publisher, or whose signature `authority` does not accept for the
/// certificate the node publishes, is ignored: a node can only claim for itself.
fn published_claims(
    node: &NodeId,
    state: &NodeState,
    authority: &dyn ClaimAuthority,
) -> BTreeMap<ObjectId, PublishedClaim> {
    let mut out = BTreeMap::new();
    let cert = state.get(KEY_CERT);
    for (key, value) in state.key_values() {
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

/// An immutable snapshot of the cluster. Built only by the view writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// Increases by one each time the content changes.
    pub generation: u64,
    /// The node that built this view.
    pub me: NodeId,
    /// Every known member, by id.
    pub members: BTreeMap<NodeId, Member>,
    /// Nodes seen in gossip but left out, with the reason (e.g. undecodable facts).
    pub excluded: BTreeMap<String, String>,
    /// The tenant configuration merged from every node's published records.
    pub tenant: TenantState,
}

impl ClusterView {
    /// An empty view for `me`, generation 0.
    pub fn empty(me: NodeId) -> Self {
        ClusterView {
            generation: 0,
            me,
            members: BTreeMap::new(),
            excluded: BTreeMap::new(),
            tenant: TenantState::default(),
        }
    }

    /// Members currently alive.
    pub fn alive(&self) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Alive)
    }

    fn same_content(&self, other: &ClusterView) -> bool {
        self.me == other.me
            && self.members == other.members
            && self.excluded == other.excluded
            && self.tenant == other.tenant
    }
}

/// Builds a view from chitchat's node states and live set. Pure: same input, same view.
///
/// Only node lives that have been alive at least once (`ever_live`) count: chitchat learns of a
/// node from a digest before its failure detector has heard two heartbeats, and such a node is
/// joining, not dead. A node id may appear under several generations (restarts); the live one
/// with the newest generation wins, else the newest. Facts that do not decode, or that name another
/// node than the key space they sit in, exclude the node with a reason.
pub fn build_view<'a>(
    me: &NodeId,
    generation: u64,
    nodes: impl IntoIterator<Item = (&'a ChitchatId, &'a NodeState)>,
    live: &BTreeSet<ChitchatId>,
    ever_live: &BTreeSet<ChitchatId>,
    authority: &dyn ClaimAuthority,
) -> ClusterView {
    let nodes: Vec<(&ChitchatId, &NodeState)> = nodes.into_iter().collect();
    // Records of every life of every node count, dead or joining: that is what keeps an object
    // alive while its replicas move.
    let publishers: Vec<(NodeId, &NodeState)> = nodes
        .iter()
        .filter_map(|(id, st)| NodeId::new(&*id.node_id).ok().map(|n| (n, *st)))
        .collect();
    let tenant = TenantState::merge(
        publishers
            .iter()
            .flat_map(|(n, st)| st.key_values().map(move |(k, v)| (n, k, v))),
    );
    let mut best: BTreeMap<&str, (&ChitchatId, &NodeState, bool)> = BTreeMap::new();
    for (id, state) in nodes {
        if !ever_live.contains(id) && !live.contains(id) {
            continue;
        }
        let is_live = live.contains(id);
        let better = match best.get(&*id.node_id) {
            None => true,
            Some((cur, _, cur_live)) => {
                (is_live, id.generation_id) > (*cur_live, cur.generation_id)
            }
        };
        if better {
            best.insert(&id.node_id, (id, state, is_live));
        }
    }
    let mut members = BTreeMap::new();
    let mut excluded = BTreeMap::new();
    for (name, (id, state, is_live)) in best {
        let Some(text) = state.get(KEY_NODE_FACTS) else {
            // Not yet replicated: the node appears once its facts arrive.
            continue;
        };
        let facts: NodeFacts = match mesh_proto::decode_value(text) {
            Ok(f) => f,
            Err(e) => {
                excluded.insert(name.to_string(), format!("facts do not decode: {e}"));
                continue;
            }
        };
        if facts.node_id().as_str() != name {
            excluded.insert(
                name.to_string(),
                format!("facts name another node ({})", facts.node_id()),
            );
            continue;
        }
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
    ClusterView {
        generation,
        me: me.clone(),
        members,
        excluded,
        tenant,
    }
}

/// The reading side of the view: cheap to clone, lock-free to read.
#[derive(Clone)]
pub struct ViewHandle {
    current: Arc<ArcSwap<ClusterView>>,
    changes: watch::Receiver<u64>,
}

impl ViewHandle {
    /// The current view.
    pub fn load(&self) -> Arc<ClusterView> {
        self.current.load_full()
    }

    /// A receiver that is notified with the new generation on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

/// Starts the single view writer for a chitchat instance.
///
/// It rebuilds on every membership notification from chitchat and at least every `resync`
/// (liveness changes and key updates do not all notify), and publishes only when the content
/// changed.
pub fn spawn_writer(
    chitchat: Arc<Mutex<Chitchat>>,
    me: NodeId,
    resync: Duration,
    authority: Arc<dyn ClaimAuthority>,
) -> (ViewHandle, JoinHandle<()>) {
    let current = Arc::new(ArcSwap::from_pointee(ClusterView::empty(me.clone())));
    let (tx, rx) = watch::channel(0u64);
    let handle = ViewHandle {
        current: current.clone(),
        changes: rx,
    };
    let writer = async move {
        let mut live_watch = chitchat.lock().await.live_nodes_watcher();
        let mut ever_live: BTreeSet<ChitchatId> = BTreeSet::new();
        let mut tick = tokio::time::interval(resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = live_watch.changed() => if changed.is_err() { return },
                _ = tick.tick() => {},
            }
            let prev = current.load_full();
            let next = {
                let guard = chitchat.lock().await;
                let live: BTreeSet<ChitchatId> = guard.live_nodes().cloned().collect();
                // Forget lives chitchat itself has garbage-collected.
                ever_live.retain(|id| guard.node_states().contains_key(id));
                ever_live.extend(live.iter().cloned());
                build_view(
                    &me,
                    prev.generation + 1,
                    guard.node_states(),
                    &live,
                    &ever_live,
                    authority.as_ref(),
                )
            };
            if !next.same_content(&prev) {
                let generation = next.generation;
                current.store(Arc::new(next));
                let _ = tx.send(generation);
            }
        }
    };
    let task = tokio::spawn(writer.in_current_span());
    (handle, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{dvr_mac_for, NodeMode, Priority};

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

    fn state_with(value: &str) -> NodeState {
        let mut s = NodeState::for_test();
        s.set(KEY_NODE_FACTS, value);
        s
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
            &crate::signing::TrustAll,
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
            &crate::signing::TrustAll,
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
            &crate::signing::TrustAll,
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
            &crate::signing::TrustAll,
        );
        assert_eq!(v.members.values().next().unwrap().generation, 1);
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
        let mut s = state_with(&mesh_proto::encode_value(&facts("a")).unwrap());
        s.set(
            "snat/r1",
            mesh_proto::encode_value(&claim("a", "r1")).unwrap(),
        );
        // Names another node, or another router than its key: never counted.
        s.set(
            "snat/r2",
            mesh_proto::encode_value(&claim("b", "r2")).unwrap(),
        );
        s.set(
            "snat/r3",
            mesh_proto::encode_value(&claim("a", "r4")).unwrap(),
        );
        let live: BTreeSet<_> = [a.clone()].into_iter().collect();
        let me = NodeId::new("a").unwrap();
        let v = build_view(&me, 1, [(&a, &s)], &live, &live, &crate::signing::TrustAll);
        let claims = &v.members[&me].snat_claims;
        assert_eq!(
            claims.keys().map(|r| r.as_str()).collect::<Vec<_>>(),
            ["r1"]
        );
        // A signature the authority does not accept: not counted either.
        let v = build_view(&me, 1, [(&a, &s)], &live, &live, &RejectAll);
        assert!(v.members[&me].snat_claims.is_empty());
    }
}
