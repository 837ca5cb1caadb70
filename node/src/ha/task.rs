//! The HA task's state and its event loop: the view, datagrams, probes, drain commands and the
//! clock go in; the election decides; [`HaTask::flush`] sends and publishes what it decided.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_proto::{ElectionMessage, NodeFacts, NodeId, ObjectId, SnatClaim};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::election::{Election, ElectionInput};
use super::health::{Health, PROBE_INTERVAL};
use super::input::{election_input, Holders, LocalState};
use super::status::{HaCounters, Seen, StatusCell};
use super::{HaCommand, HaSettings, DRAIN_FILE};
use crate::mesh::keys::KEY_NODE_FACTS;
use crate::mesh::own::OwnState;
use crate::mesh::transport::{DatagramInbound, DatagramSender};
use crate::mesh::view::{wait_until_ready, ViewHandle};
use crate::throttle::Throttle;

/// What the election did since the last flush.
#[derive(Default)]
pub(super) struct Events {
    /// Routers this node took.
    pub(super) took: Vec<SnatClaim>,
    /// Routers this node gave up on purpose.
    pub(super) released: Vec<SnatClaim>,
    /// Whether anything happened (so the published claims change).
    pub(super) any: bool,
}

pub(super) struct HaTask {
    pub(super) me: NodeId,
    pub(super) facts: NodeFacts,
    pub(super) election: Election,
    pub(super) view: ViewHandle,
    pub(super) own: OwnState,
    pub(super) sender: DatagramSender,
    pub(super) settings: HaSettings,
    pub(super) holders: watch::Sender<Holders>,
    pub(super) status: Arc<Mutex<StatusCell>>,
    /// Claims heard in datagrams, with until when they count (the notice lifetime after an
    /// advert or takeover; a restarting holder's hold).
    pub(super) recent: BTreeMap<ObjectId, BTreeMap<NodeId, (SnatClaim, Instant)>>,
    pub(super) released: BTreeMap<(ObjectId, NodeId), u64>,
    /// Takeover notices still to repeat: (when, claims).
    pub(super) notices: Vec<(Instant, u32, Vec<SnatClaim>)>,
    pub(super) input: ElectionInput,
    pub(super) ready: bool,
    pub(super) local: LocalState,
    /// Gateway reachability per external network this node maps.
    pub(super) health: BTreeMap<ObjectId, Health>,
    pub(super) probe_tx: mpsc::Sender<(ObjectId, Result<bool, String>)>,
    /// The last holder and transition seen per router.
    pub(super) last: BTreeMap<ObjectId, Seen>,
    pub(super) counters: HaCounters,
    pub(super) last_report: Option<Instant>,
    /// Reasons of this node's own takeovers, for the transition log.
    pub(super) reasons: BTreeMap<ObjectId, String>,
    /// Warnings about refused datagrams, per sender.
    pub(super) refusals: Throttle<NodeId>,
    /// Warnings about waking late for a deadline (this node starved of CPU).
    pub(super) late_wakes: Throttle<()>,
}

/// A sleep's end when there is nothing to wait for (the branch is disabled then).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl HaTask {
    pub(super) async fn run(
        mut self,
        mut inbound: DatagramInbound,
        mut commands: mpsc::Receiver<HaCommand>,
        mut probes: mpsc::Receiver<(ObjectId, Result<bool, String>)>,
    ) {
        let mut probe_tick = tokio::time::interval(PROBE_INTERVAL);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.view.subscribe();
        let tick_every = (self.settings.election.advert_interval / 4).max(Duration::from_millis(2));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let view = self.view.clone();
        let me = self.me.clone();
        let readiness = self.settings.readiness.clone();
        let ready = wait_until_ready(&view, &me, &readiness, "electing SNAT holders");
        tokio::pin!(ready);
        loop {
            // Wake exactly when a silent holder's wait runs out (or an advert is due), not at the
            // next tick after it; the tick stays as the floor for everything else.
            let deadline = self.election.next_deadline(Instant::now());
            let at_deadline = tokio::time::sleep_until(deadline.unwrap_or_else(far_future));
            tokio::select! {
                _ = &mut ready, if !self.ready => {
                    self.ready = true;
                    self.on_view(Instant::now());
                    self.flush(Instant::now()).await;
                    // Tell the reconciler the holders are known now, changed or not.
                    self.holders.send_modify(|_| {});
                    continue;
                }
                r = changes.changed() => {
                    if r.is_err() { return; }
                    self.on_view(Instant::now());
                }
                d = inbound.recv() => {
                    let Some((from, bytes)) = d else { return };
                    let now = Instant::now();
                    self.on_datagram(now, &from, &bytes);
                    // Take everything queued before deciding on silence.
                    while let Some((from, bytes)) = inbound.try_recv() {
                        self.on_datagram(now, &from, &bytes);
                    }
                }
                _ = probe_tick.tick() => self.start_probes(),
                p = probes.recv() => {
                    let Some((ext, result)) = p else { return };
                    self.on_probe(ext, result).await;
                }
                c = commands.recv() => match c {
                    Some(HaCommand::Drain(d, done)) => {
                        self.set_draining(d).await;
                        let _ = done.send(());
                    }
                    Some(HaCommand::Restarting(done)) => {
                        self.announce_restart().await;
                        let _ = done.send(());
                        // The agent is stopping: no more adverts (one after the notice would
                        // tell the others this life is still there).
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => self.on_clock(&mut inbound),
                _ = at_deadline, if deadline.is_some() => {
                    if let Some(due) = deadline {
                        self.note_late_wake(due);
                    }
                    self.on_clock(&mut inbound);
                }
            }
            self.flush(Instant::now()).await;
        }
    }

    /// Warns (at most every 10 s) when this task woke for a deadline more than an advert interval
    /// late: the node is starved of CPU, so its adverts go out late and a backup may take over
    /// from it, or, as a backup, its takeovers are late.
    fn note_late_wake(&mut self, deadline: Instant) {
        let now = Instant::now();
        let late = now.saturating_duration_since(deadline);
        if late <= self.settings.election.advert_interval {
            return;
        }
        self.counters.late_wakes += 1;
        if let Some(n) = self.late_wakes.event(&(), now.into_std()) {
            warn!(
                late_ms = late.as_millis() as u64,
                times = n,
                "the HA task woke late for an election deadline: this node is starved of CPU"
            );
        }
    }

    /// The clock moved: datagrams queued so far first, then the election decides.
    fn on_clock(&mut self, inbound: &mut DatagramInbound) {
        let now = Instant::now();
        while let Some((from, bytes)) = inbound.try_recv() {
            self.on_datagram(now, &from, &bytes);
        }
        self.election.handle_tick(now);
    }

    pub(super) fn on_view(&mut self, now: Instant) {
        let view = self.view.load();
        self.input = election_input(&view, Some(&self.local));
        // Releases and datagram claims of routers that are gone are forgotten.
        let known: std::collections::BTreeSet<&ObjectId> =
            self.input.routers.iter().map(|r| &r.router).collect();
        self.released.retain(|(r, _), _| known.contains(r));
        self.recent.retain(|r, _| known.contains(r));
        if self.ready {
            self.election.handle_input(now, self.input.clone());
        }
    }

    fn on_datagram(&mut self, now: Instant, from: &NodeId, bytes: &[u8]) {
        let msg = match ElectionMessage::decode(bytes) {
            Ok(m) if m.claims().iter().all(|c| &c.node == from) => m,
            Ok(_) => {
                self.counters.rejected_datagrams += 1;
                if let Some(n) = self.refusals.event(from, now.into_std()) {
                    warn!(from = %from, datagrams = n,
                        "election datagrams with claims for another node; ignored");
                }
                return;
            }
            Err(e) => {
                self.counters.rejected_datagrams += 1;
                debug!(from = %from, error = %e, "election datagram refused");
                return;
            }
        };
        let release = matches!(msg, ElectionMessage::Release(_));
        let (counted, refused): (Vec<SnatClaim>, Vec<SnatClaim>) = msg
            .claims()
            .iter()
            .cloned()
            .partition(|c| self.may_speak_for(from, &c.router, release));
        if !refused.is_empty() {
            self.counters.rejected_datagrams += 1;
            if let Some(n) = self.refusals.event(from, now.into_std()) {
                warn!(from = %from, datagrams = n, routers = refused.len(),
                    "election datagrams from a node that is no candidate for those routers; ignored");
            }
        }
        match msg {
            ElectionMessage::Advert(_) | ElectionMessage::Takeover(_) => {
                for c in counted {
                    if self
                        .released
                        .get(&(c.router.clone(), c.node.clone()))
                        .is_some_and(|e| c.epoch <= *e)
                    {
                        continue;
                    }
                    let until = now + self.settings.notice_ttl;
                    self.recent
                        .entry(c.router.clone())
                        .or_default()
                        .insert(c.node.clone(), (c.clone(), until));
                    self.election.handle_advert(now, from, c);
                }
            }
            ElectionMessage::Restarting(notice) => {
                let hold = Duration::from_millis(u64::from(notice.hold_ms));
                self.on_restarting(now, counted, hold);
            }
            ElectionMessage::Release(_) => {
                for c in counted {
                    let key = (c.router.clone(), c.node.clone());
                    let e = self.released.entry(key).or_insert(0);
                    *e = (*e).max(c.epoch);
                    if let Some(m) = self.recent.get_mut(&c.router) {
                        m.remove(&c.node);
                    }
                    self.election.handle_release(now, from, c);
                }
            }
        }
    }

    async fn set_draining(&mut self, draining: bool) {
        if draining == self.draining() {
            return;
        }
        self.local.draining = draining;
        info!(
            draining,
            "SNAT drain {}",
            if draining { "on" } else { "off" }
        );
        if let Some(dir) = &self.settings.data_dir {
            let path = dir.join(DRAIN_FILE);
            let r = if draining {
                crate::files::write_atomic(&path, b"1\n").map_err(|e| e.to_string())
            } else {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                }
            };
            if let Err(e) = r {
                warn!(error = %e, "cannot persist the drain state");
            }
        }
        self.facts = self.facts.clone().with_draining(draining);
        match mesh_proto::encode_value(&self.facts) {
            Ok(v) => {
                self.own.write(|st| st.set(KEY_NODE_FACTS, &v)).await;
            }
            Err(e) => warn!(error = %e, "cannot publish facts"),
        }
        self.on_view(Instant::now());
    }

    fn draining(&self) -> bool {
        self.local.draining
    }

    /// Whether `from` may advert, take over or (with `release`) release `router`: it is a
    /// candidate for it in this node's view; a release also counts from a node this election
    /// has heard claim the router (a node that gives a router up may have just stopped being a
    /// candidate). Anything else, including routers this node does not know, is ignored, so
    /// datagrams cannot grow this node's memory.
    fn may_speak_for(&self, from: &NodeId, router: &ObjectId, release: bool) -> bool {
        let candidate = self
            .input
            .routers
            .iter()
            .any(|r| &r.router == router && r.candidates.iter().any(|(n, _)| n == from));
        candidate
            || (release
                && self
                    .election
                    .heard(Instant::now(), router)
                    .iter()
                    .any(|(c, _)| &c.node == from))
    }
}
