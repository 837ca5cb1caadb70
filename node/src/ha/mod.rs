//! SNAT high availability: runs this node's [`Election`] against the live cluster.
//!
//! The task wires the sans-IO election to the world and does nothing else:
//! - the view becomes the election's input ([`election_input`], pure);
//! - election datagrams arrive from the transport with the sender's certified id: adverts and
//!   takeover notices feed [`Election::handle_advert`], releases [`Election::handle_release`];
//! - the clock ticks at a quarter of the advert interval;
//! - adverts go out as QUIC datagrams, several claims per datagram;
//! - this node's claims are published in gossip (`snat/<router>`, with `snat-why/<router>`);
//! - on a takeover, a notice goes to every live node (three times, an advert interval apart), so
//!   compute nodes re-point their `sg-` FDB entries at once rather than after gossip;
//! - on a deliberate withdrawal (drain, no longer a candidate, lost majority), a release goes to
//!   every live node so the best backup claims without waiting for silence;
//! - a `dvr_snat` node probes the gateway of each external network it maps (an ARP probe on its
//!   interface every [`PROBE_INTERVAL`]); after [`DOWN_AFTER`] unanswered probes it publishes
//!   `ext-down/<network>` and stops being a candidate for routers on that network while another
//!   candidate can still reach the gateway, so a holder with a dead external link hands over.
//!
//! The holder of each router, as the datapath should see it, is resolved by [`resolve_holders`]
//! (pure): this node's own claim if it holds one, else the highest-ranked claim among those
//! published in gossip by live nodes and those heard in datagrams lately. Epochs grow with every
//! takeover, so the newest takeover wins everywhere as soon as it is heard by any path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::Chitchat;
use mesh_proto::{ElectionMessage, NodeFacts, NodeId, ObjectId, Priority, SnatClaim};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::mesh::keys::{KEY_NODE_FACTS, KEY_SNAT_PREFIX, KEY_SNAT_WHY_PREFIX};
use crate::mesh::transport::{DatagramPort, DatagramSender};
use crate::mesh::view::{wait_until_ready, ClusterView, Readiness, ViewHandle};
use election::{Election, ElectionConfig, ElectionEvent, ElectionInput};

pub mod election;
mod health;
mod input;
mod status;

use health::Health;
pub use health::{DOWN_AFTER, PROBE_INTERVAL};
pub use input::{election_input, resolve_holders, Holders, LocalState};
use status::Seen;
pub use status::{CandidateStatus, HaCounters, HaStatus, RouterHaStatus, Transition};

/// How many times a takeover notice is sent, an advert interval apart.
const NOTICE_REPEATS: u32 = 3;
/// Commands queued for the task.
const COMMAND_QUEUE: usize = 16;
/// The status is rebuilt at least this often (and on every change).
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// File under `data_dir` marking a drained node, so a restart keeps it drained.
pub const DRAIN_FILE: &str = "draining";

/// What the HA task needs.
#[derive(Clone, Debug)]
pub struct HaSettings {
    /// Election timing.
    pub election: ElectionConfig,
    /// When the election may first claim (a restarted node must learn the claims first).
    pub readiness: Readiness,
    /// How long a claim heard only in a datagram counts, without adverts or gossip behind it.
    pub notice_ttl: Duration,
    /// Where the drain marker lives (`None`: not persisted).
    pub data_dir: Option<PathBuf>,
    /// Signs the claims this node publishes.
    pub signer: Arc<crate::mesh::pki::signing::Signer>,
    /// Whether to probe external gateways: only when this node programs its datapath, so an agent
    /// with `datapath = "off"` never sends on a host interface its configuration merely names.
    pub probe_gateways: bool,
}

enum HaCommand {
    Drain(bool, oneshot::Sender<()>),
}

/// The handle the agent, the reconciler and the API hold.
#[derive(Clone)]
pub struct HaHandle {
    holders: watch::Receiver<Holders>,
    status: Arc<Mutex<status::StatusCell>>,
    commands: mpsc::Sender<HaCommand>,
}

impl HaHandle {
    /// A receiver of the current holders, notified on every change.
    pub fn holders(&self) -> watch::Receiver<Holders> {
        self.holders.clone()
    }

    /// The current status (stale, claiming nothing, when the election has not run for longer
    /// than it should: see [`HaStatus::stale_ms`]).
    pub fn status(&self) -> HaStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(tokio::time::Instant::now())
    }

    /// Starts or stops draining: a draining node is no candidate, so it hands every router it
    /// holds to the best backup at once. Returns once the task has applied it.
    pub async fn set_draining(&self, draining: bool) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(HaCommand::Drain(draining, tx))
            .await
            .map_err(|_| "the HA task has stopped".to_string())?;
        rx.await.map_err(|_| "the HA task has stopped".to_string())
    }
}

/// Starts the HA task. `facts` are this node's published facts (drain republishes them).
pub fn spawn(
    me: NodeId,
    facts: NodeFacts,
    view: ViewHandle,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    port: DatagramPort,
    settings: HaSettings,
) -> (HaHandle, tokio::task::JoinHandle<()>) {
    let (holders_tx, holders_rx) = watch::channel(Holders::new());
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let draining = facts.draining();
    let (probe_tx, probe_rx) = mpsc::channel(64);
    let status = Arc::new(Mutex::new(status::StatusCell::new(HaStatus {
        draining,
        ..Default::default()
    })));
    let task = HaTask {
        election: Election::new(me.clone(), settings.election),
        me,
        facts,
        view,
        chitchat,
        sender: port.sender,
        settings,
        holders: holders_tx,
        status: status.clone(),
        recent: BTreeMap::new(),
        released: BTreeMap::new(),
        notices: Vec::new(),
        input: ElectionInput::default(),
        ready: false,
        local: LocalState {
            draining,
            external_down: BTreeSet::new(),
        },
        health: BTreeMap::new(),
        probe_tx,
        last: BTreeMap::new(),
        counters: HaCounters::default(),
        last_report: None,
        reasons: BTreeMap::new(),
    };
    let handle = HaHandle {
        holders: holders_rx,
        status,
        commands: cmd_tx,
    };
    let join = tokio::spawn(tracing::Instrument::in_current_span(task.run(
        port.inbound,
        cmd_rx,
        probe_rx,
    )));
    (handle, join)
}

struct HaTask {
    me: NodeId,
    facts: NodeFacts,
    election: Election,
    view: ViewHandle,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    sender: DatagramSender,
    settings: HaSettings,
    holders: watch::Sender<Holders>,
    status: Arc<Mutex<status::StatusCell>>,
    /// Claims heard in datagrams, with when.
    recent: BTreeMap<ObjectId, BTreeMap<NodeId, (SnatClaim, Instant)>>,
    released: BTreeMap<(ObjectId, NodeId), u64>,
    /// Takeover notices still to repeat: (when, claims).
    notices: Vec<(Instant, u32, Vec<SnatClaim>)>,
    input: ElectionInput,
    ready: bool,
    local: LocalState,
    /// Gateway reachability per external network this node maps.
    health: BTreeMap<ObjectId, Health>,
    probe_tx: mpsc::Sender<(ObjectId, Result<bool, String>)>,
    /// The last holder and transition seen per router.
    last: BTreeMap<ObjectId, Seen>,
    counters: HaCounters,
    last_report: Option<Instant>,
    /// Reasons of this node's own takeovers, for the transition log.
    reasons: BTreeMap<ObjectId, String>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl HaTask {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<(NodeId, Vec<u8>)>,
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
                    while let Ok((from, bytes)) = inbound.try_recv() {
                        self.on_datagram(now, &from, &bytes);
                    }
                }
                _ = probe_tick.tick() => self.start_probes(),
                p = probes.recv() => {
                    let Some((ext, result)) = p else { return };
                    self.on_probe(ext, result).await;
                }
                c = commands.recv() => {
                    let Some(HaCommand::Drain(d, done)) = c else { return };
                    self.set_draining(d).await;
                    let _ = done.send(());
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    while let Ok((from, bytes)) = inbound.try_recv() {
                        self.on_datagram(now, &from, &bytes);
                    }
                    self.election.handle_tick(now);
                }
            }
            self.flush(Instant::now()).await;
        }
    }

    fn on_view(&mut self, now: Instant) {
        let view = self.view.load();
        self.input = election_input(&view, Some(&self.local));
        if self.ready {
            self.election.handle_input(now, self.input.clone());
        }
    }

    fn on_datagram(&mut self, now: Instant, from: &NodeId, bytes: &[u8]) {
        let msg = match ElectionMessage::decode(bytes) {
            Ok(m) if m.claims().iter().all(|c| &c.node == from) => m,
            Ok(_) => {
                self.counters.rejected_datagrams += 1;
                warn!(from = %from, "election datagram claims for another node; ignored");
                return;
            }
            Err(e) => {
                self.counters.rejected_datagrams += 1;
                debug!(from = %from, error = %e, "election datagram refused");
                return;
            }
        };
        match msg {
            ElectionMessage::Advert(claims) | ElectionMessage::Takeover(claims) => {
                for c in claims {
                    if self
                        .released
                        .get(&(c.router.clone(), c.node.clone()))
                        .is_some_and(|e| c.epoch <= *e)
                    {
                        continue;
                    }
                    self.recent
                        .entry(c.router.clone())
                        .or_default()
                        .insert(c.node.clone(), (c.clone(), now));
                    self.election.handle_advert(now, from, c);
                }
            }
            ElectionMessage::Release(claims) => {
                for c in claims {
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
                let mut cc = self.chitchat.lock().await;
                cc.self_node_state().set(KEY_NODE_FACTS, v);
            }
            Err(e) => warn!(error = %e, "cannot publish facts"),
        }
        self.on_view(Instant::now());
    }

    fn draining(&self) -> bool {
        self.local.draining
    }

    /// Sends what the election wants sent, publishes claims, reports and recomputes holders.
    async fn flush(&mut self, now: Instant) {
        let interval = self.settings.election.advert_interval;
        // Adverts, grouped per recipient.
        let mut adverts: BTreeMap<NodeId, Vec<SnatClaim>> = BTreeMap::new();
        while let Some((to, claim)) = self.election.poll_transmit() {
            adverts.entry(to).or_default().push(claim);
        }
        let view = self.view.load();
        for (to, claims) in adverts {
            self.send(&view, &to, claims, ElectionMessage::Advert);
        }
        let mut took = Vec::new();
        let mut released = Vec::new();
        let mut changed_keys = false;
        while let Some(ev) = self.election.poll_event() {
            changed_keys = true;
            match ev {
                ElectionEvent::Took { claim, reason } => {
                    self.counters.took += 1;
                    info!(router = %claim.router, epoch = claim.epoch, reason = %reason,
                        "took SNAT for router");
                    self.reasons.insert(claim.router.clone(), reason);
                    took.push(claim);
                }
                ElectionEvent::Withdrew { router, reason } => {
                    self.counters.withdrew += 1;
                    info!(router = %router, reason = %reason, "gave up SNAT for router");
                    let displaced = reason.contains(" claims it with epoch ");
                    if !displaced {
                        released.push(SnatClaim {
                            router: router.clone(),
                            epoch: self.election.epoch(&router),
                            priority: Priority::new(1).unwrap_or_else(|_| unreachable!()),
                            node: self.me.clone(),
                        });
                    }
                    self.reasons.insert(router, reason);
                }
            }
        }
        let everyone: Vec<NodeId> = view
            .alive()
            .map(|m| m.facts.node_id().clone())
            .filter(|n| n != &self.me)
            .collect();
        if !released.is_empty() {
            for to in &everyone {
                self.send(&view, to, released.clone(), ElectionMessage::Release);
            }
        }
        if !took.is_empty() {
            for to in &everyone {
                self.send(&view, to, took.clone(), ElectionMessage::Takeover);
            }
            self.notices
                .push((now + interval, NOTICE_REPEATS - 1, took));
        }
        // Repeat notices that are due, while they are still ours.
        let due: Vec<(Instant, u32, Vec<SnatClaim>)> = {
            let (due, later): (Vec<_>, Vec<_>) =
                self.notices.drain(..).partition(|(t, _, _)| *t <= now);
            self.notices = later;
            due
        };
        let mine = self.election.claims();
        for (_, left, claims) in due {
            let still: Vec<SnatClaim> = claims.into_iter().filter(|c| mine.contains(c)).collect();
            if still.is_empty() {
                continue;
            }
            for to in &everyone {
                self.send(&view, to, still.clone(), ElectionMessage::Takeover);
            }
            if left > 1 {
                self.notices.push((now + interval, left - 1, still));
            }
        }
        if changed_keys {
            self.publish_claims(&mine).await;
        }
        // Forget datagram claims that nothing refreshed.
        let ttl = self.settings.notice_ttl;
        for m in self.recent.values_mut() {
            m.retain(|_, (_, t)| now.saturating_duration_since(*t) <= ttl);
        }
        self.recent.retain(|_, m| !m.is_empty());
        let recent: BTreeMap<ObjectId, BTreeMap<NodeId, SnatClaim>> = self
            .recent
            .iter()
            .map(|(r, m)| {
                (
                    r.clone(),
                    m.iter().map(|(n, (c, _))| (n.clone(), c.clone())).collect(),
                )
            })
            .collect();
        let holders = resolve_holders(&self.me, &self.input, &mine, &recent, &self.released);
        self.note_transitions(&view, &holders, &mine, &recent);
        let changed = self.holders.send_if_modified(|h| {
            if *h == holders {
                false
            } else {
                *h = holders.clone();
                true
            }
        });
        // The status is for people and the API: refreshed on every change, else now and then.
        if changed
            || changed_keys
            || self
                .last_report
                .is_none_or(|t| now.saturating_duration_since(t) >= REPORT_EVERY)
        {
            self.last_report = Some(now);
            self.report(now, &view, &holders, &mine);
        }
    }

    fn send(
        &self,
        view: &ClusterView,
        to: &NodeId,
        claims: Vec<SnatClaim>,
        make: fn(Vec<SnatClaim>) -> ElectionMessage,
    ) {
        let Some(m) = view.members.get(to) else {
            return;
        };
        for gram in ElectionMessage::batch(claims, make) {
            self.sender.send(m.gossip_addr, gram);
        }
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
        let mut cc = self.chitchat.lock().await;
        let st = cc.self_node_state();
        let stale: Vec<String> = st
            .key_values()
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
            if st.get(&k) != Some(v.as_str()) {
                st.set(k, v);
            }
        }
    }
}
