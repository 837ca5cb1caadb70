//! What the HA task reports: transitions of each router's holder (logged once each, kept for
//! `router show`) and the status snapshot the API reads.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::{NodeId, NodeMode, ObjectId, SnatClaim};
use tokio::time::Instant;
use tracing::info;

use super::election::RouterInput;
use super::status::{CandidateStatus, HaCounters, HaStatus, RouterHaStatus, Suspicion, Transition};
use super::task::{unix_ms, HaTask};
use super::Holders;
use crate::mesh::view::{ClusterView, MemberState};

impl HaTask {
    pub(super) fn note_transitions(
        &mut self,
        view: &ClusterView,
        holders: &Holders,
        mine: &[SnatClaim],
        recent: &BTreeMap<ObjectId, BTreeMap<NodeId, SnatClaim>>,
    ) {
        for ri in &self.input.routers {
            let now_holder = holders.get(&ri.router).cloned();
            let entry = self.last.entry(ri.router.clone()).or_default();
            if entry.holder == now_holder && entry.transition.is_some() {
                // The holder's own reason arrives by gossip after its notice: prefer it.
                let published = now_holder
                    .as_ref()
                    .filter(|h| *h != &self.me)
                    .and_then(|h| view.members.get(h))
                    .and_then(|m| m.snat_claims.get(&ri.router))
                    .and_then(|p| p.why.as_ref().map(|(_, w)| (p.claim.epoch, w.clone())));
                if let (Some(t), Some((epoch, why))) = (entry.transition.as_mut(), published) {
                    if t.epoch == epoch && t.reason != why && !why.is_empty() {
                        t.reason = why;
                    }
                }
                continue;
            }
            if entry.holder == now_holder && now_holder.is_none() {
                continue;
            }
            let epoch = now_holder
                .as_ref()
                .and_then(|h| {
                    mine.iter()
                        .chain(ri.claims.iter())
                        .chain(recent.get(&ri.router).into_iter().flat_map(|m| m.values()))
                        .filter(|c| &c.node == h)
                        .map(|c| c.epoch)
                        .max()
                })
                .unwrap_or(0);
            let reason = match &now_holder {
                Some(h) if h == &self.me => self
                    .reasons
                    .get(&ri.router)
                    .cloned()
                    .unwrap_or_else(|| "took over".into()),
                Some(h) => view
                    .members
                    .get(h)
                    .and_then(|m| m.snat_claims.get(&ri.router))
                    .and_then(|p| p.why.as_ref().map(|(_, w)| w.clone()))
                    .unwrap_or_else(|| format!("{h} took over with epoch {epoch}")),
                None => self
                    .reasons
                    .get(&ri.router)
                    .cloned()
                    .unwrap_or_else(|| "no candidate holds it".into()),
            };
            info!(router = %ri.router, from = ?entry.holder, to = ?now_holder, epoch, reason = %reason,
                "SNAT holder changed");
            entry.transition = Some(Transition {
                at_unix_ms: unix_ms(),
                from: entry.holder.clone().or(entry.last_holder.clone()),
                to: now_holder.clone(),
                epoch,
                reason,
            });
            // After a gap with no holder, the next transition still names the one that let go.
            if entry.holder.is_some() {
                entry.last_holder = entry.holder.take();
            }
            entry.holder = now_holder;
            entry.count += 1;
        }
        let present: BTreeSet<&ObjectId> = self.input.routers.iter().map(|r| &r.router).collect();
        self.last.retain(|r, _| present.contains(r));
    }

    /// How this node waits on `holder` of `router`, when it is another node it heard adverts from.
    fn suspicion(&self, router: &ObjectId, holder: &NodeId) -> Option<Suspicion> {
        let (down, loss) = self.election.suspicion(router, holder)?;
        Some(Suspicion {
            holder: holder.clone(),
            down_after_ms: down.as_millis() as u64,
            advert_loss_permille: (loss * 1000.0).round() as u32,
        })
    }

    /// The candidates of `ri` as the status shows them, best first: the election's candidates
    /// (holder or backup), then the `dvr_snat` nodes mapping the router's external network that
    /// are not candidates now (dead, draining or unhealthy).
    fn candidates(
        &self,
        ri: &RouterInput,
        view: &ClusterView,
        holder: Option<&NodeId>,
    ) -> Vec<CandidateStatus> {
        let mut candidates: Vec<CandidateStatus> = ri
            .candidates
            .iter()
            .map(|(n, p)| CandidateStatus {
                node: n.clone(),
                priority: *p,
                state: if Some(n) == holder {
                    "holder"
                } else {
                    "backup"
                },
            })
            .collect();
        // Draining or dead SNAT nodes that would otherwise be candidates.
        let router = view.tenant.routers().find(|r| r.id == ri.router);
        let ext = router.and_then(|r| r.gateway.as_ref()).and_then(|g| {
            view.tenant
                .external_networks()
                .find(|e| e.id == g.external_network)
        });
        if let (Some(ext), Some(r)) = (ext, router) {
            for (id, m) in &view.members {
                if m.facts.mode() != NodeMode::DvrSnat
                    || !m.facts.external().contains_key(&ext.name)
                    || ri.candidates.iter().any(|(n, _)| n == id)
                {
                    continue;
                }
                candidates.push(CandidateStatus {
                    node: id.clone(),
                    priority: r
                        .ha
                        .priorities
                        .get(id)
                        .copied()
                        .unwrap_or(m.facts.snat_priority()),
                    state: if m.state != MemberState::Alive {
                        "dead"
                    } else if m.facts.draining() || (id == &self.me && self.local.draining) {
                        "draining"
                    } else {
                        "unhealthy"
                    },
                });
            }
        }
        candidates.sort_by(|a, b| {
            (b.priority, std::cmp::Reverse(&b.node)).cmp(&(a.priority, std::cmp::Reverse(&a.node)))
        });
        candidates
    }

    pub(super) fn report(
        &self,
        now: Instant,
        view: &ClusterView,
        holders: &Holders,
        mine: &[SnatClaim],
    ) {
        let mut routers = BTreeMap::new();
        for ri in &self.input.routers {
            let holder = holders.get(&ri.router).cloned();
            let candidates = self.candidates(ri, view, holder.as_ref());
            let seen = self.last.get(&ri.router).cloned().unwrap_or_default();
            let (last_transition, transitions) = (seen.transition, seen.count);
            routers.insert(
                ri.router.clone(),
                RouterHaStatus {
                    suspicion: holder.as_ref().and_then(|h| self.suspicion(&ri.router, h)),
                    epoch: last_transition.as_ref().map_or(0, |t| t.epoch),
                    holder,
                    preempt: ri.preempt,
                    preempt_delay_ms: ri.preempt_delay.as_millis() as u64,
                    candidates,
                    last_transition,
                    transitions,
                    holddown_ms: self
                        .election
                        .holddown(now, &ri.router)
                        .map(|d| d.as_millis() as u64),
                },
            );
        }
        let status = HaStatus {
            ready: self.ready,
            draining: self.local.draining,
            external_down: self.local.external_down.iter().cloned().collect(),
            majority: self.input.majority,
            held: mine.iter().map(|c| c.router.clone()).collect(),
            routers,
            counters: HaCounters {
                refused_claims: self.election.refused(),
                stalls: self.election.stalls(),
                ..self.counters.clone()
            },
            stale_ms: None,
        };
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(status, tokio::time::Instant::now());
    }
}
