//! What the HA task sends and publishes after the election decided: adverts, takeover notices
//! (repeated), releases, the signed claims in gossip, the holders for the reconciler and the
//! status for the API.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::{ElectionMessage, NodeId, ObjectId, Priority, SnatClaim};
use tokio::time::Instant;
use tracing::{info, warn};

use super::election::{ElectionEvent, STALL_CATCH_UP};
use super::input::resolve_holders;
use super::task::{unix_ms, Events, HaTask};
use super::{NOTICE_REPEATS, REPORT_EVERY};
use crate::mesh::keys::{KEY_SNAT_PREFIX, KEY_SNAT_WHY_PREFIX};
use crate::mesh::view::ClusterView;

impl HaTask {
    /// Sends what the election wants sent, publishes claims, reports and recomputes holders.
    pub(super) async fn flush(&mut self, now: Instant) {
        if self.election.stalls() > self.counters.stalls {
            self.counters.stalls = self.election.stalls();
            warn!(
                catch_up_ms = STALL_CATCH_UP.as_millis() as u64,
                "this node stalled (paused or starved) longer than a down interval; it claims no router until its view caught up"
            );
        }
        let view = self.view.load();
        self.send_adverts(&view);
        let events = self.take_events();
        let everyone: Vec<NodeId> = view
            .alive()
            .map(|m| m.facts.node_id().clone())
            .filter(|n| n != &self.me)
            .collect();
        if !events.released.is_empty() {
            for to in &everyone {
                self.send(&view, to, events.released.clone(), ElectionMessage::Release);
            }
        }
        if !events.took.is_empty() {
            for to in &everyone {
                self.send(&view, to, events.took.clone(), ElectionMessage::Takeover);
            }
            let next = now + self.settings.election.advert_interval;
            self.notices.push((next, NOTICE_REPEATS - 1, events.took));
        }
        let mine = self.election.claims();
        self.repeat_notices(&view, &everyone, now, &mine);
        // The datapath first (a takeover reaches the reconciler at once), then gossip, whose
        // signing and lock can wait a few milliseconds.
        self.update_holders(now, &view, &mine, events.any);
        if events.any {
            self.publish_claims(&mine).await;
        }
    }

    /// The election's adverts, grouped per recipient.
    fn send_adverts(&mut self, view: &ClusterView) {
        let mut adverts: BTreeMap<NodeId, Vec<SnatClaim>> = BTreeMap::new();
        while let Some((to, claim)) = self.election.poll_transmit() {
            adverts.entry(to).or_default().push(claim);
        }
        for (to, claims) in adverts {
            self.send(view, &to, claims, ElectionMessage::Advert);
        }
    }

    /// The election's transitions, logged and counted: the claims taken, and the releases to
    /// send for routers given up on purpose (a displaced node sends none: it lost, it did not
    /// let go).
    fn take_events(&mut self) -> Events {
        let mut events = Events::default();
        while let Some(ev) = self.election.poll_event() {
            events.any = true;
            match ev {
                ElectionEvent::Took { claim, reason } => {
                    self.counters.took += 1;
                    info!(router = %claim.router, epoch = claim.epoch, reason = %reason,
                        "took SNAT for router");
                    self.reasons.insert(claim.router.clone(), reason);
                    events.took.push(claim);
                }
                ElectionEvent::Withdrew { router, reason } => {
                    self.counters.withdrew += 1;
                    info!(router = %router, reason = %reason, "gave up SNAT for router");
                    if !reason.contains(" claims it with epoch ") {
                        events.released.push(SnatClaim {
                            router: router.clone(),
                            epoch: self.election.epoch(&router),
                            priority: Priority::LOWEST,
                            node: self.me.clone(),
                        });
                    }
                    self.reasons.insert(router, reason);
                }
            }
        }
        events
    }

    /// Sends the takeover notices that are due again, for the routers this node still holds.
    fn repeat_notices(
        &mut self,
        view: &ClusterView,
        everyone: &[NodeId],
        now: Instant,
        mine: &[SnatClaim],
    ) {
        let (due, later): (Vec<_>, Vec<_>) =
            self.notices.drain(..).partition(|(t, _, _)| *t <= now);
        self.notices = later;
        let interval = self.settings.election.advert_interval;
        for (_, left, claims) in due {
            let still: Vec<SnatClaim> = claims.into_iter().filter(|c| mine.contains(c)).collect();
            if still.is_empty() {
                continue;
            }
            for to in everyone {
                self.send(view, to, still.clone(), ElectionMessage::Takeover);
            }
            if left > 1 {
                self.notices.push((now + interval, left - 1, still));
            }
        }
    }

    /// Resolves the holders from this node's claims, gossip and the datagram claims still fresh;
    /// publishes them when they changed, and the status on a change or now and then.
    fn update_holders(
        &mut self,
        now: Instant,
        view: &ClusterView,
        mine: &[SnatClaim],
        events: bool,
    ) {
        for m in self.recent.values_mut() {
            m.retain(|_, (_, until)| now <= *until);
        }
        self.recent.retain(|_, m| !m.is_empty());
        let recent: BTreeMap<ObjectId, BTreeMap<NodeId, SnatClaim>> = self
            .recent
            .iter()
            .map(|(r, m)| {
                let claims = m.iter().map(|(n, (c, _))| (n.clone(), c.clone())).collect();
                (r.clone(), claims)
            })
            .collect();
        let holders = resolve_holders(&self.me, &self.input, mine, &recent, &self.released);
        self.note_transitions(view, &holders, mine, &recent);
        let changed = self.holders.send_if_modified(|h| {
            let changed = *h != holders;
            if changed {
                *h = holders.clone();
            }
            changed
        });
        let report_due = self
            .last_report
            .is_none_or(|t| now.saturating_duration_since(t) >= REPORT_EVERY);
        if changed || events || report_due {
            self.last_report = Some(now);
            self.report(now, view, &holders, mine);
        }
    }

    pub(super) fn send(
        &self,
        view: &ClusterView,
        to: &NodeId,
        claims: Vec<SnatClaim>,
        make: impl Fn(Vec<SnatClaim>) -> ElectionMessage,
    ) -> usize {
        let Some(m) = view.members.get(to) else {
            return 0;
        };
        let mut sent = 0;
        for gram in ElectionMessage::batch(claims, make) {
            sent += usize::from(self.sender.send(m.gossip_addr, gram));
        }
        sent
    }

    async fn publish_claims(&self, mine: &[SnatClaim]) {
        let at = unix_ms();
        let mut kvs = Vec::new();
        for c in mine {
            let signed = crate::mesh::pki::signing::claim_message(c)
                .and_then(|m| self.settings.signer.sign(&m))
                .and_then(|signature| {
                    Ok(mesh_proto::encode_value(&mesh_proto::SignedClaim {
                        claim: c.clone(),
                        signature,
                    })?)
                });
            match signed {
                Ok(v) => kvs.push((format!("{KEY_SNAT_PREFIX}{}", c.router), v)),
                Err(e) => warn!(error = %e, "cannot sign a SNAT claim"),
            }
            let why = self.reasons.get(&c.router).cloned().unwrap_or_default();
            kvs.push((
                format!("{KEY_SNAT_WHY_PREFIX}{}", c.router),
                format!("{at} {why}"),
            ));
        }
        let held: BTreeSet<String> = mine.iter().map(|c| c.router.to_string()).collect();
        self.own
            .write(|st| {
                let stale: Vec<String> = st
                    .entries()
                    .filter_map(|(k, _)| {
                        let r = k
                            .strip_prefix(KEY_SNAT_PREFIX)
                            .or_else(|| k.strip_prefix(KEY_SNAT_WHY_PREFIX))?;
                        (!held.contains(r)).then(|| k.to_string())
                    })
                    .collect();
                for k in stale {
                    st.delete(&k);
                }
                for (k, v) in kvs {
                    st.set(&k, &v);
                }
            })
            .await;
    }
}
