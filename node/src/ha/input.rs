//! Pure functions of the HA task: the election's input from the view, and the holder of each
//! router as the datapath should see it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mesh_proto::{NodeId, NodeMode, ObjectId, SnatClaim};

use super::election::{ElectionInput, RouterInput};
use crate::mesh::view::{ClusterView, Member, MemberState};

/// The SNAT holder of each router with a gateway.
pub type Holders = BTreeMap<ObjectId, NodeId>;

/// What this node knows of itself before its facts and keys have gone round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalState {
    /// Whether it is draining.
    pub draining: bool,
    /// External networks whose gateway it cannot reach.
    pub external_down: BTreeSet<ObjectId>,
}

/// The election's input from a view. Pure. `local` replaces what the view says of this node
/// itself (a drain or a lost gateway takes effect here before gossip has carried it).
///
/// Candidates of a router are the live `dvr_snat` nodes mapping its external network, not
/// draining, with their effective priority (per-router override first). Nodes that cannot reach
/// the external gateway are left out while at least one candidate can.
pub fn election_input(view: &ClusterView, local: Option<&LocalState>) -> ElectionInput {
    let alive = view.alive().count();
    let majority = alive * 2 > view.members.len();
    let mut routers = Vec::new();
    for r in view.tenant.routers() {
        let Some(gw) = &r.gateway else { continue };
        let Some(ext) = view
            .tenant
            .external_networks()
            .find(|e| e.id == gw.external_network)
        else {
            continue;
        };
        let mine = |id: &NodeId| local.filter(|_| *id == view.me);
        let eligible: Vec<(&NodeId, &Member)> = view
            .members
            .iter()
            .filter(|(id, m)| {
                let draining = mine(id).map_or(m.facts.draining(), |l| l.draining);
                m.state == MemberState::Alive
                    && m.facts.mode() == NodeMode::DvrSnat
                    && !draining
                    && m.facts.external().contains_key(&ext.name)
            })
            .collect();
        let reaches = |id: &NodeId, m: &Member| {
            !mine(id)
                .map_or(&m.external_down, |l| &l.external_down)
                .contains(&ext.id)
        };
        let any_reaches = eligible.iter().any(|(id, m)| reaches(id, m));
        let candidates: Vec<(NodeId, mesh_proto::Priority)> = eligible
            .into_iter()
            .filter(|(id, m)| !any_reaches || reaches(id, m))
            .map(|(id, m)| {
                let p =
                    r.ha.priorities
                        .get(id)
                        .copied()
                        .unwrap_or(m.facts.snat_priority());
                (id.clone(), p)
            })
            .collect();
        let listeners = view
            .members
            .iter()
            .filter(|(id, m)| {
                **id != view.me
                    && m.facts.mode() == NodeMode::DvrSnat
                    && m.facts.external().contains_key(&ext.name)
            })
            .map(|(id, _)| id.clone())
            .collect();
        // Only candidates' claims count: any other node's claim is one it may not make.
        let claims = view
            .alive()
            .filter_map(|m| m.snat_claims.get(&r.id))
            .map(|p| p.claim.clone())
            .filter(|c| candidates.iter().any(|(n, _)| *n == c.node))
            .collect();
        routers.push(RouterInput {
            router: r.id.clone(),
            candidates,
            preempt: r.ha.preempt,
            preempt_delay: Duration::from_millis(u64::from(r.ha.preempt_delay_ms)),
            claims,
            listeners,
        });
    }
    ElectionInput { majority, routers }
}

/// The holder of every router in `input`, as the datapath should see it. Pure.
///
/// `mine` are this node's claims; `recent` claims heard in datagrams that still count; `released`
/// the highest epoch each node has released per router. This node's gossip claims are ignored (the
/// election alone says whether it holds).
pub fn resolve_holders(
    me: &NodeId,
    input: &ElectionInput,
    mine: &[SnatClaim],
    recent: &BTreeMap<ObjectId, BTreeMap<NodeId, SnatClaim>>,
    released: &BTreeMap<(ObjectId, NodeId), u64>,
) -> Holders {
    let mut out = Holders::new();
    for ri in &input.routers {
        if let Some(c) = mine.iter().find(|c| c.router == ri.router) {
            out.insert(ri.router.clone(), c.node.clone());
            continue;
        }
        let not_released = |c: &&SnatClaim| {
            released
                .get(&(c.router.clone(), c.node.clone()))
                .is_none_or(|e| c.epoch > *e)
        };
        let best = ri
            .claims
            .iter()
            .chain(recent.get(&ri.router).into_iter().flat_map(|m| m.values()))
            .filter(|c| &c.node != me)
            .filter(not_released)
            .fold(None::<&SnatClaim>, |best, c| match best {
                Some(b) if !c.outranks(b) => Some(b),
                _ => Some(c),
            });
        if let Some(c) = best {
            out.insert(ri.router.clone(), c.node.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::Priority;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }
    fn claim(r: &str, node: &str, epoch: u64) -> SnatClaim {
        SnatClaim {
            router: ObjectId::new(r).unwrap(),
            epoch,
            priority: Priority::new(100).unwrap(),
            node: n(node),
        }
    }
    fn input(claims: Vec<SnatClaim>) -> ElectionInput {
        ElectionInput {
            majority: true,
            routers: vec![RouterInput {
                router: ObjectId::new("r1").unwrap(),
                candidates: vec![(n("a"), Priority::new(200).unwrap())],
                preempt: true,
                preempt_delay: Duration::ZERO,
                claims,
                listeners: Vec::new(),
            }],
        }
    }

    #[test]
    fn the_newest_claim_heard_by_any_path_is_the_holder() {
        let r1 = ObjectId::new("r1").unwrap();
        let gossip = input(vec![claim("r1", "a", 3)]);
        let mut recent = BTreeMap::new();
        recent.insert(
            r1.clone(),
            [(n("b"), claim("r1", "b", 4))].into_iter().collect(),
        );
        let h = resolve_holders(&n("c"), &gossip, &[], &recent, &BTreeMap::new());
        assert_eq!(h.get(&r1), Some(&n("b")));
        // Gossip alone: the gossiped claim.
        let h = resolve_holders(&n("c"), &gossip, &[], &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(h.get(&r1), Some(&n("a")));
    }

    #[test]
    fn released_and_own_gossip_claims_do_not_count() {
        let r1 = ObjectId::new("r1").unwrap();
        let gossip = input(vec![claim("r1", "a", 3), claim("r1", "me", 9)]);
        let released = [((r1.clone(), n("a")), 3)].into_iter().collect();
        let h = resolve_holders(&n("me"), &gossip, &[], &BTreeMap::new(), &released);
        assert_eq!(h.get(&r1), None, "a released and my stale claim ignored");
        // This node's own live claim always wins on this node.
        let mine = [claim("r1", "me", 2)];
        let h = resolve_holders(&n("me"), &gossip, &mine, &BTreeMap::new(), &released);
        assert_eq!(h.get(&r1), Some(&n("me")));
    }
}
