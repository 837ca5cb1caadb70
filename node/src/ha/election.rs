//! The SNAT election: which `dvr_snat` node holds each router's SNAT. Sans-IO: the agent feeds it
//! the view ([`Election::handle_input`]), the holders' adverts ([`Election::handle_advert`]) and the
//! clock ([`Election::handle_tick`]); it returns adverts to send ([`Election::poll_transmit`]),
//! transitions ([`Election::poll_event`]) and the claims to publish in gossip
//! ([`Election::claims`]). Time is always passed in.
//!
//! Rules (VRRP-like, with epochs and fencing):
//! - Candidates for a router are live `dvr_snat` nodes mapped to its external network and not
//!   draining, with their effective priority (per-router override first). The best candidate is the
//!   highest priority, ties to the smaller node id.
//! - A holder sends an advert every `advert_interval` to the other candidates (and to every other
//!   `dvr_snat` node of the external network its view counts out), on a grid of whole intervals.
//!   A backup declares the holder down when it has heard from it before and then nothing (no
//!   advert, no new claim in gossip) for `m × interval`, plus a quarter interval for a late
//!   advert ([`late_allowance`]), plus its rank skew (the best backup moves first). `m` adapts
//!   to the advert loss this backup measured from that holder (see [`super::suspicion`]):
//!   `min_multiplier` on a clean path, up to `multiplier` when adverts are being lost.
//! - With no live holder, the best candidate that is not itself silent claims, with an epoch one
//!   above every epoch it has seen. With `preempt`, a better candidate takes over from a live holder
//!   after `preempt_delay`.
//! - A node displaced by a higher claim while alive does not preempt again for a hold-down
//!   ([`DISPLACED_HOLDDOWN`], doubling on each repeat up to [`MAX_HOLDDOWN`], or the preemption
//!   delay if longer): a holder that was paused or could not be heard was taken over for a
//!   reason, and one-way loss of adverts must not make two nodes trade the router back and forth.
//!   Being preempted by a candidate this view ranks above it is no such reason (the preferred
//!   node came back, as configured): that displacement starts no hold-down, so the backup is
//!   ready for a fast takeover at once. The doubling is forgotten once [`HOLDDOWN_MEMORY`] has
//!   passed since the last hold-down ended.
//! - A release (a holder giving a router up on purpose) lets the best backup claim at once: the
//!   releaser is not counted as a candidate by the others for [`STOOD_DOWN`] unless it claims
//!   again, so they need not wait for its drain or lost gateway to arrive by gossip.
//! - A holder whose agent restarts (its datapath stays in the kernel) may say so first
//!   ([`Election::handle_restarting`]): the nodes that hear its adverts keep it as the holder,
//!   without adverts, for the hold it asks ([`MAX_RESTART_HOLD`] at most), and its next life
//!   resumes the router at once ([`Election::resume`]) with a higher epoch, whatever its rank,
//!   when nobody holds it. A notice from a node that is not the holder heard is ignored.
//! - A node that stalled (a paused process, a starved task: longer without running than the
//!   longest down interval) claims nothing for [`STALL_CATCH_UP`]: the silence it finds is its
//!   own, and its view has not yet caught up with who is alive and what they claim.
//! - Fencing: a node claims only while a majority of the cluster is alive in its view, and a holder
//!   that loses the majority, stops being a candidate, or sees a claim that outranks its own
//!   withdraws at once. See `docs/architecture.md` for the safety argument.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mesh_proto::{NodeId, ObjectId, Priority, SnatClaim};
use tokio::time::Instant;

use super::suspicion::Arrivals;

/// After being taken over while alive (displaced while some claim outranking its own comes
/// from a node not ranked above it) or cut off from the majority, a node does not preempt for
/// this long (or the preemption delay, if longer); the hold-down doubles on each further one
/// while remembered ([`HOLDDOWN_MEMORY`]).
pub const DISPLACED_HOLDDOWN: Duration = Duration::from_secs(30);
/// The longest hold-down.
pub const MAX_HOLDDOWN: Duration = Duration::from_secs(480);
/// How long after its last hold-down ended a node remembers it: displaced again within this, its
/// next hold-down doubles; later, it starts from [`DISPLACED_HOLDDOWN`] again (a flap long past
/// says nothing about this node now).
pub const HOLDDOWN_MEMORY: Duration = MAX_HOLDDOWN;
/// How long a node that released a router is not counted as a candidate for it by others, unless
/// it claims again: long enough for its drain or lost gateway to reach every view by gossip.
pub const STOOD_DOWN: Duration = Duration::from_secs(5);
/// How far above the highest epoch this node has seen for a router a claim's epoch may be (an
/// honest takeover adds one). A claim beyond is refused: no member can push a router's epoch to
/// where it overflows or no honest node can ever outrank it.
pub const MAX_EPOCH_JUMP: u64 = 1_000_000;
/// After this node itself stalled (no input, advert or tick for longer than the longest down
/// interval: a paused process or VM, a starved task), it claims nothing for this long. Its
/// silence timers ran while it could hear nothing, and its view needs a few gossip rounds to
/// learn again who is alive and what they claim; a vacancy it sees meanwhile is most likely its
/// own deafness.
pub const STALL_CATCH_UP: Duration = Duration::from_secs(1);

/// The longest a restarting holder is kept without adverts, whatever it asks: its routers are
/// without a working holder for this long if it never comes back.
pub const MAX_RESTART_HOLD: Duration = Duration::from_secs(30);

/// Timing of the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// How often a holder advertises.
    pub advert_interval: Duration,
    /// The most intervals of silence that declare a holder down (before the priority skew): what
    /// a backup waits when it measures heavy advert loss from the holder.
    pub multiplier: u32,
    /// The fewest: what it waits on a clean path. Equal to `multiplier`, detection does not adapt.
    pub min_multiplier: u32,
}

/// What the election needs to know about one router, from the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterInput {
    /// The router.
    pub router: ObjectId,
    /// Candidates and their effective priorities.
    pub candidates: Vec<(NodeId, Priority)>,
    /// Whether a better candidate takes over from a live holder.
    pub preempt: bool,
    /// How long a better candidate waits before preempting.
    pub preempt_delay: Duration,
    /// Claims for this router published in gossip by live nodes.
    pub claims: Vec<SnatClaim>,
    /// Nodes a holder adverts to besides the candidates: every `dvr_snat` member mapped to the
    /// router's external network, whatever this node's view says of its liveness, drain or
    /// gateway. A node this view counts out for a moment (a late heartbeat on a busy machine)
    /// may still count itself a candidate and be waiting on the adverts; an advert to a node
    /// that is really dead costs one datagram.
    pub listeners: Vec<NodeId>,
}

/// What the election needs from the view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElectionInput {
    /// Whether more than half of the cluster's members are alive in this node's view.
    pub majority: bool,
    /// Routers that have SNAT, with their candidates.
    pub routers: Vec<RouterInput>,
}

/// A transition of this node for one router, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionEvent {
    /// This node now holds the router.
    Took {
        /// The claim made.
        claim: SnatClaim,
        /// Why.
        reason: String,
    },
    /// This node no longer holds the router.
    Withdrew {
        /// The router.
        router: ObjectId,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct RouterState {
    mine: Option<SnatClaim>,
    max_epoch: u64,
    /// Latest claim heard from each node (gossip or advert) and, once it has adverted here, when
    /// its last advert arrived or a newer claim of it was first seen in gossip.
    heard: BTreeMap<NodeId, (SnatClaim, Option<Instant>)>,
    /// The adverts received from each node that adverted, for how long its silence is waited on.
    arrivals: BTreeMap<NodeId, Arrivals>,
    better_since: Option<Instant>,
    last_sent: Option<Instant>,
    /// No preemption before this: set when this node was taken over or lost the majority (see
    /// [`DISPLACED_HOLDDOWN`]), so two nodes that hear each other only one way do not take the
    /// router back and forth.
    holddown_until: Option<Instant>,
    /// How many hold-downs this node remembers (see [`HOLDDOWN_MEMORY`]).
    displaced: u32,
    /// Epochs released by each node: gossip still carrying such a claim is stale.
    released: BTreeMap<NodeId, u64>,
    /// The last node that released the router, for the next claim's reason.
    released_by: Option<NodeId>,
    /// Nodes that released the router, and until when they are not counted as candidates here
    /// (their drain or lost gateway may not have reached this node's view yet).
    stood_down: BTreeMap<NodeId, Instant>,
    /// Holders that said they are restarting: the epoch they held, and until when they count as
    /// alive without adverts (an advert of a higher epoch, from the next life, ends it).
    restarting: BTreeMap<NodeId, (u64, Instant)>,
    /// This node held the router before its agent restarted: until when it resumes it at once
    /// when nobody holds it.
    resume_until: Option<Instant>,
}

/// The election of one node over every router.
#[derive(Debug)]
pub struct Election {
    me: NodeId,
    cfg: ElectionConfig,
    input: ElectionInput,
    routers: BTreeMap<ObjectId, RouterState>,
    outbox: VecDeque<(NodeId, SnatClaim)>,
    events: VecDeque<ElectionEvent>,
    /// Claims refused as implausible, or for routers this node does not know.
    refused: u64,
    /// When this node last decided (see [`STALL_CATCH_UP`]).
    last_run: Option<Instant>,
    /// After a stall, no claim before this.
    catch_up_until: Option<Instant>,
    /// Stalls noticed.
    stalls: u64,
    /// Routers this node held in its previous life, with their epochs and until when it may
    /// resume them (taken into a router's state when the router appears in the input).
    resume: BTreeMap<ObjectId, (u64, Instant)>,
}

/// Whether a claim's epoch is within [`MAX_EPOCH_JUMP`] of the highest this node has seen.
fn plausible(st: &RouterState, epoch: u64) -> bool {
    epoch <= st.max_epoch.saturating_add(MAX_EPOCH_JUMP)
}

fn better(a: &(NodeId, Priority), b: &(NodeId, Priority)) -> bool {
    (a.1, std::cmp::Reverse(&a.0)) > (b.1, std::cmp::Reverse(&b.0))
}

impl Election {
    /// A new election for node `me`.
    pub fn new(me: NodeId, cfg: ElectionConfig) -> Self {
        Election {
            me,
            cfg,
            input: ElectionInput::default(),
            routers: BTreeMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            refused: 0,
            last_run: None,
            catch_up_until: None,
            stalls: 0,
            resume: BTreeMap::new(),
        }
    }

    /// The routers this node held (with their epochs) when its previous life announced a
    /// restart: until `until`, it claims each at once when nobody holds it, with an epoch above
    /// the one it held, so the candidates waiting on it and the datapath it left in place carry
    /// on. A node restarted for good (no notice, or past `until`) waits its turn like any other.
    pub fn resume(&mut self, held: impl IntoIterator<Item = (ObjectId, u64)>, until: Instant) {
        for (router, epoch) in held {
            self.resume.insert(router, (epoch, until));
        }
    }

    /// A restart notice from `from` for `claim`: when `from` is the holder this node hears
    /// adverts from, with this very claim, it counts as alive without adverts for `hold` (at most
    /// [`MAX_RESTART_HOLD`]) or until it adverts again. Anything else is ignored.
    pub fn handle_restarting(
        &mut self,
        now: Instant,
        from: &NodeId,
        claim: SnatClaim,
        hold: Duration,
    ) {
        if &claim.node != from || from == &self.me {
            return;
        }
        let Some(st) = self.routers.get_mut(&claim.router) else {
            return;
        };
        let holds = st
            .heard
            .get(from)
            .is_some_and(|(c, advert)| *c == claim && advert.is_some());
        if holds {
            let until = now + hold.min(MAX_RESTART_HOLD);
            st.restarting.insert(from.clone(), (claim.epoch, until));
            self.decide(now);
        }
    }

    /// How many times this node noticed it had stalled (see [`STALL_CATCH_UP`]).
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Notes a stall of this node: longer without running than a backup at the lowest priority
    /// waits on a silent holder.
    fn notice_stall(&mut self, now: Instant) {
        let longest_down = self.cfg.advert_interval * (self.cfg.multiplier + 1);
        if self
            .last_run
            .is_some_and(|t| now.saturating_duration_since(t) > longest_down)
        {
            self.stalls += 1;
            self.catch_up_until = Some(now + STALL_CATCH_UP);
        }
        self.last_run = Some(self.last_run.map_or(now, |t| t.max(now)));
    }

    /// The input's entry for `router`.
    fn router_input(&self, router: &ObjectId) -> Option<&RouterInput> {
        self.input.routers.iter().find(|r| &r.router == router)
    }

    /// How long this node waits on `holder` gone silent on `router`, and the advert loss it
    /// measured from it; `None` when it never adverted here.
    pub fn suspicion(&self, router: &ObjectId, holder: &NodeId) -> Option<(Duration, f64)> {
        let st = self.routers.get(router)?;
        let arrivals = st.arrivals.get(holder)?;
        let skew = skew(&self.cfg, self.router_input(router), &self.me, holder);
        Some((down_for(&self.cfg, st, holder, skew), arrivals.loss()))
    }

    /// A new view. Claims in it are remembered; routers that disappeared are released.
    pub fn handle_input(&mut self, now: Instant, input: ElectionInput) {
        let present: Vec<ObjectId> = input.routers.iter().map(|r| r.router.clone()).collect();
        let gone: Vec<ObjectId> = self
            .routers
            .keys()
            .filter(|r| !present.contains(r))
            .cloned()
            .collect();
        for r in gone {
            if let Some(st) = self.routers.remove(&r) {
                if st.mine.is_some() {
                    self.events.push_back(ElectionEvent::Withdrew {
                        router: r,
                        reason: "router has no SNAT any more".into(),
                    });
                }
            }
        }
        for ri in &input.routers {
            let st = self.routers.entry(ri.router.clone()).or_default();
            if let Some((epoch, until)) = self.resume.remove(&ri.router) {
                st.max_epoch = st.max_epoch.max(epoch);
                st.resume_until = Some(until);
            }
            st.restarting.retain(|_, (_, until)| now < *until);
            for c in &ri.claims {
                if !plausible(st, c.epoch) {
                    self.refused += 1;
                    continue;
                }
                st.max_epoch = st.max_epoch.max(c.epoch);
                if c.node == self.me || st.released.get(&c.node).is_some_and(|e| c.epoch <= *e) {
                    continue;
                }
                let entry = st.heard.entry(c.node.clone()).or_insert((c.clone(), None));
                if c.outranks(&entry.0) {
                    // A new claim is a sign of life: its silence is timed from now, not from the
                    // last advert of its previous tenure (a preempting node's first adverts may
                    // arrive after its claim in gossip).
                    entry.1 = entry.1.map(|_| now);
                    entry.0 = c.clone();
                } else if entry.0 == *c {
                    entry.0 = c.clone();
                }
            }
            // A node that withdrew (its claim left gossip) and sends no adverts is forgotten.
            st.heard.retain(|n, (_, advert)| {
                advert.is_some() || ri.claims.iter().any(|c| &c.node == n)
            });
            // Loss measured from a node is kept while it is a candidate or still heard.
            let heard = &st.heard;
            st.arrivals
                .retain(|n, _| heard.contains_key(n) || ri.candidates.iter().any(|(c, _)| c == n));
        }
        self.input = input;
        self.decide(now);
    }

    /// An advert from `from`. Adverts whose claimant is not the sender are ignored.
    pub fn handle_advert(&mut self, now: Instant, from: &NodeId, claim: SnatClaim) {
        if &claim.node != from || from == &self.me {
            return;
        }
        let (interval, most) = (self.cfg.advert_interval, self.cfg.multiplier);
        let Some(st) = self.router_state(&claim) else {
            return;
        };
        st.max_epoch = st.max_epoch.max(claim.epoch);
        st.stood_down.remove(from);
        // The next life's claim ends a restart; a late advert of the old life does not.
        if st
            .restarting
            .get(from)
            .is_some_and(|(epoch, _)| claim.epoch > *epoch)
        {
            st.restarting.remove(from);
        }
        let entry = st
            .heard
            .entry(from.clone())
            .or_insert((claim.clone(), Some(now)));
        if claim.outranks(&entry.0) || entry.0 == claim || entry.0.epoch < claim.epoch {
            entry.0 = claim;
        }
        entry.1 = Some(now);
        st.arrivals
            .entry(from.clone())
            .or_default()
            .record(now, interval, most);
        self.decide(now);
    }

    /// A release from `from`: it gave the router up on purpose, so its claim no longer counts
    /// and the best backup may claim at once. Releases whose claimant is not the sender are ignored.
    pub fn handle_release(&mut self, now: Instant, from: &NodeId, claim: SnatClaim) {
        if &claim.node != from || from == &self.me {
            return;
        }
        let Some(st) = self.router_state(&claim) else {
            return;
        };
        st.max_epoch = st.max_epoch.max(claim.epoch);
        let released = st.released.entry(from.clone()).or_insert(0);
        *released = (*released).max(claim.epoch);
        st.released_by = Some(from.clone());
        st.stood_down.insert(from.clone(), now + STOOD_DOWN);
        if st
            .heard
            .get(from)
            .is_some_and(|(c, _)| c.epoch <= claim.epoch)
        {
            st.heard.remove(from);
        }
        self.decide(now);
    }

    /// The state of the claim's router, when the router is one this node knows (its last input
    /// names it, or it heard of it before) and the claim's epoch is plausible; else the claim is
    /// counted as refused.
    fn router_state(&mut self, claim: &SnatClaim) -> Option<&mut RouterState> {
        let known = self.routers.contains_key(&claim.router)
            || self.input.routers.iter().any(|r| r.router == claim.router);
        let st = known.then(|| self.routers.entry(claim.router.clone()).or_default());
        match st {
            Some(st) if plausible(st, claim.epoch) => Some(st),
            _ => {
                self.refused += 1;
                None
            }
        }
    }

    /// Claims refused so far: implausible epochs, unknown routers.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The highest epoch this node has seen for `router`.
    pub fn epoch(&self, router: &ObjectId) -> u64 {
        self.routers.get(router).map_or(0, |s| s.max_epoch)
    }

    /// The claims heard from other nodes for `router`, each with how long ago its last advert
    /// arrived or a newer claim of it was seen in gossip (`None`: known from gossip only).
    pub fn heard(&self, now: Instant, router: &ObjectId) -> Vec<(SnatClaim, Option<Duration>)> {
        self.routers.get(router).map_or_else(Vec::new, |s| {
            s.heard
                .values()
                .map(|(c, t)| (c.clone(), t.map(|t| now.saturating_duration_since(t))))
                .collect()
        })
    }

    /// Until when this node will not preempt `router`, if held down.
    pub fn holddown(&self, now: Instant, router: &ObjectId) -> Option<Duration> {
        self.routers
            .get(router)?
            .holddown_until
            .filter(|t| *t > now)
            .map(|t| t - now)
    }

    /// The first instant after `now` at which a decision can change with no new input: an advert
    /// due, a silent node's wait running out, a preemption delay, a hold-down, a stand-down or
    /// the stall catch-up ending. The I/O loop wakes then, so a takeover is not late by a tick.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        due.extend(self.catch_up_until);
        // A router has state only while the input has it (`handle_input`).
        for ri in &self.input.routers {
            let Some(st) = self.routers.get(&ri.router) else {
                continue;
            };
            if st.mine.is_some() {
                due.extend(st.last_sent.map(|t| t + self.cfg.advert_interval));
            }
            // Alive while `now - t <= down`: silent from the instant just past it.
            due.extend(st.heard.iter().filter_map(|(n, (_, t))| {
                let down = down_for(&self.cfg, st, n, skew(&self.cfg, Some(ri), &self.me, n));
                t.map(|t| t + down + Duration::from_micros(1))
            }));
            due.extend(st.better_since.map(|since| since + ri.preempt_delay));
            due.extend(st.holddown_until);
            due.extend(st.stood_down.values().copied());
            // A restarting holder's hold running out is a silence like any other.
            due.extend(
                st.restarting
                    .values()
                    .map(|(_, t)| *t + Duration::from_micros(1)),
            );
        }
        due.into_iter().filter(|t| *t > now).min()
    }

    /// The clock moved.
    pub fn handle_tick(&mut self, now: Instant) {
        self.decide(now);
    }

    /// The next advert to send: (recipient, claim).
    pub fn poll_transmit(&mut self) -> Option<(NodeId, SnatClaim)> {
        self.outbox.pop_front()
    }

    /// The next transition of this node.
    pub fn poll_event(&mut self) -> Option<ElectionEvent> {
        self.events.pop_front()
    }

    /// The claims this node holds, to publish in gossip.
    pub fn claims(&self) -> Vec<SnatClaim> {
        self.routers
            .values()
            .filter_map(|s| s.mine.clone())
            .collect()
    }

    /// Who this node believes holds `router` right now: itself, or the best live claimant heard.
    pub fn holder(&self, now: Instant, router: &ObjectId) -> Option<NodeId> {
        let st = self.routers.get(router)?;
        if let Some(m) = &st.mine {
            return Some(m.node.clone());
        }
        let ri = self.router_input(router);
        st.heard
            .iter()
            .filter(|(n, (_, t))| {
                restarting(st, n, now)
                    || t.is_none_or(|t| {
                        let down = down_for(&self.cfg, st, n, skew(&self.cfg, ri, &self.me, n));
                        now.saturating_duration_since(t) <= down
                    })
            })
            .map(|(_, (c, _))| c)
            .fold(None::<&SnatClaim>, |best, c| match best {
                Some(b) if !c.outranks(b) => Some(b),
                _ => Some(c),
            })
            .map(|c| c.node.clone())
    }

    fn decide(&mut self, now: Instant) {
        self.notice_stall(now);
        let routers = self.input.routers.clone();
        for ri in &routers {
            self.decide_router(now, ri);
        }
    }

    fn decide_router(&mut self, now: Instant, ri: &RouterInput) {
        let my_prio = ri
            .candidates
            .iter()
            .find(|(n, _)| *n == self.me)
            .map(|(_, p)| *p);
        let d = Decision {
            now,
            me: &self.me,
            ri,
            my_prio,
            cfg: self.cfg,
            majority: self.input.majority,
            catching_up: self.catch_up_until.is_some_and(|t| now < t),
        };
        let Some(st) = self.routers.get_mut(&ri.router) else {
            return;
        };
        let mut out = Outputs {
            adverts: &mut self.outbox,
            events: &mut self.events,
        };
        match st.mine.clone() {
            Some(mine) => d.hold_or_withdraw(st, mine, &mut out),
            None => {
                if let Some(reason) = d.reason_to_claim(st) {
                    d.claim(st, reason, &mut out);
                }
            }
        }
    }
}

/// Whether `node` said it is restarting and its hold has not run out.
fn restarting(st: &RouterState, node: &NodeId, now: Instant) -> bool {
    st.restarting
        .get(node)
        .is_some_and(|(_, until)| now < *until)
}

/// How much longer than the intervals its silence calls for `me` waits on `silent` on the router
/// of `ri`. VRRP waits `(256 − priority) / 256` of an interval so that the best backup moves
/// first, even the best one; this node knows the candidates, so it ranks them instead: the best
/// candidate other than `silent` waits nothing more, each candidate better than `me` (other than
/// `silent`) adds half an interval, time enough for the better one's takeover to arrive. A node
/// that is no candidate (or a router it does not know) waits one whole interval more.
fn skew(cfg: &ElectionConfig, ri: Option<&RouterInput>, me: &NodeId, silent: &NodeId) -> Duration {
    let mine = ri.and_then(|ri| ri.candidates.iter().find(|(n, _)| n == me));
    let (Some(ri), Some(mine)) = (ri, mine) else {
        return cfg.advert_interval;
    };
    let ahead = ri
        .candidates
        .iter()
        .filter(|c| &c.0 != silent && &c.0 != me && better(c, mine))
        .count();
    (cfg.advert_interval / 2).saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX))
}

/// How late an advert may arrive and still not count as missing: a quarter of an interval. The
/// holder's timer and scheduler, and the path, delay each advert by a little; without this
/// allowance the advert due just as the wait runs out races the backup's own timer, and `m − 1`
/// lost adverts in a row would be enough to take over a live holder.
pub fn late_allowance(cfg: &ElectionConfig) -> Duration {
    cfg.advert_interval / 4
}

/// How long a silent `node` is still taken to be alive on the router of `st`: the intervals its
/// measured advert loss calls for, the allowance for a late advert, and this node's skew.
fn down_for(cfg: &ElectionConfig, st: &RouterState, node: &NodeId, skew: Duration) -> Duration {
    let m = st.arrivals.get(node).map_or(cfg.min_multiplier, |a| {
        a.multiplier(cfg.min_multiplier, cfg.multiplier)
    });
    cfg.advert_interval * m + late_allowance(cfg) + skew
}

/// Where a decision's results go.
struct Outputs<'a> {
    adverts: &'a mut VecDeque<(NodeId, SnatClaim)>,
    events: &'a mut VecDeque<ElectionEvent>,
}

/// What deciding one router at one instant reads.
struct Decision<'a> {
    now: Instant,
    me: &'a NodeId,
    ri: &'a RouterInput,
    /// This node's priority, when it is a candidate.
    my_prio: Option<Priority>,
    cfg: ElectionConfig,
    majority: bool,
    /// This node stalled a moment ago and claims nothing yet (see [`STALL_CATCH_UP`]).
    catching_up: bool,
}

impl Decision<'_> {
    /// Whether this node is held down (taken over, or cut off from the majority, lately).
    fn held_down(&self, st: &RouterState) -> bool {
        st.holddown_until.is_some_and(|t| self.now < t)
    }

    /// Whether a node heard at `t` counts as alive. Held down (taken over, or cut off, lately),
    /// this node may be hearing the holder one way only: its adverts do not arrive, yet its
    /// claim is refreshed in gossip. Then silence of adverts is no proof of death; the holder
    /// counts as alive while a live node publishes its claim.
    fn alive(&self, st: &RouterState, n: &NodeId, t: &Option<Instant>) -> bool {
        let in_gossip = || self.held_down(st) && self.ri.claims.iter().any(|c| &c.node == n);
        let down = || down_for(&self.cfg, st, n, skew(&self.cfg, Some(self.ri), self.me, n));
        restarting(st, n, self.now)
            || t.is_none_or(|t| self.now.saturating_duration_since(t) <= down())
            || in_gossip()
    }

    /// The best live claim of another node.
    fn live_holder(&self, st: &RouterState) -> Option<SnatClaim> {
        st.heard
            .iter()
            .filter(|(n, (_, t))| self.alive(st, n, t))
            .map(|(_, (c, _))| c)
            .fold(None::<&SnatClaim>, |best, c| match best {
                Some(b) if !c.outranks(b) => Some(b),
                _ => Some(c),
            })
            .cloned()
    }

    /// This node holds the router: it withdraws when it lost the majority, is no candidate any
    /// more, or sees a claim that outranks its own; else it adverts when an interval has passed.
    fn hold_or_withdraw(&self, st: &mut RouterState, mine: SnatClaim, out: &mut Outputs<'_>) {
        let outranking: Vec<SnatClaim> = st
            .heard
            .values()
            .map(|(c, _)| c)
            .filter(|c| c.outranks(&mine))
            .cloned()
            .collect();
        let displaced_by = outranking.first();
        let reason = if !self.majority {
            Some("lost the majority of the cluster".to_string())
        } else if self.my_prio.is_none() {
            Some("no longer a candidate".to_string())
        } else {
            displaced_by.map(|c| format!("{} claims it with epoch {}", c.node, c.epoch))
        };
        let Some(reason) = reason else {
            let interval = self.cfg.advert_interval;
            if st
                .last_sent
                .is_none_or(|t| self.now.saturating_duration_since(t) >= interval)
            {
                st.last_sent = Some(advert_slot(st.last_sent, self.now, interval));
                self.advert(&mine, out);
            }
            return;
        };
        st.mine = None;
        st.last_sent = None;
        // Taken over, or cut off from the majority (paused, partitioned): either way this node
        // was unreliable, so it does not take the router back at once. Preempted by nodes this
        // view ranks above it (every claim that outranks its own), it was not: the preferred
        // node came back.
        let preempted = self.majority
            && displaced_by.is_some()
            && outranking.iter().all(|c| self.ranks_above_me(&c.node));
        if (displaced_by.is_some() || !self.majority) && !preempted {
            self.hold_down(st);
        }
        out.events.push_back(ElectionEvent::Withdrew {
            router: self.ri.router.clone(),
            reason,
        });
    }

    /// Whether `node` is a candidate of this view ranked above this node (a candidate itself).
    fn ranks_above_me(&self, node: &NodeId) -> bool {
        let Some(my_prio) = self.my_prio else {
            return false;
        };
        self.ri
            .candidates
            .iter()
            .find(|(n, _)| n == node)
            .is_some_and(|(n, p)| better(&(n.clone(), *p), &(self.me.clone(), my_prio)))
    }

    /// Starts a hold-down: [`DISPLACED_HOLDDOWN`] doubled for each displacement remembered (see
    /// [`HOLDDOWN_MEMORY`]), at most [`MAX_HOLDDOWN`], or the preemption delay if longer.
    fn hold_down(&self, st: &mut RouterState) {
        let forgotten = st
            .holddown_until
            .is_some_and(|t| self.now.saturating_duration_since(t) > HOLDDOWN_MEMORY);
        if forgotten {
            st.displaced = 0;
        }
        let hold = DISPLACED_HOLDDOWN
            .saturating_mul(1 << st.displaced.min(4))
            .min(MAX_HOLDDOWN);
        st.displaced = st.displaced.saturating_add(1);
        st.holddown_until = Some(self.now + self.ri.preempt_delay.max(hold));
    }

    /// Why this node should claim the router now, if it should: it is a candidate with the
    /// majority, and either no live holder exists and it is the best candidate that is not
    /// silent, or it preempts a worse holder after the preemption delay.
    fn reason_to_claim(&self, st: &mut RouterState) -> Option<String> {
        let Some(my_prio) = self.my_prio.filter(|_| self.majority && !self.catching_up) else {
            st.better_since = None;
            return None;
        };
        let Some(h) = self.live_holder(st) else {
            st.better_since = None;
            if st.resume_until.take().is_some_and(|t| self.now < t) {
                return Some("resumed the router it held before its agent restarted".into());
            }
            return self.is_best_awake(st).then(|| vacancy_reason(st));
        };
        let i_am_better = better(&(self.me.clone(), my_prio), &(h.node.clone(), h.priority));
        if !(self.ri.preempt && i_am_better && !self.held_down(st)) {
            st.better_since = None;
            return None;
        }
        let since = *st.better_since.get_or_insert(self.now);
        (self.now.saturating_duration_since(since) >= self.ri.preempt_delay).then(|| {
            format!(
                "preempting {} (priority {} over {})",
                h.node, my_prio, h.priority
            )
        })
    }

    /// Whether this node is the best candidate among those that are neither silent nor standing
    /// down after a release.
    fn is_best_awake(&self, st: &RouterState) -> bool {
        let silent = |n: &NodeId| st.heard.get(n).is_some_and(|(_, t)| !self.alive(st, n, t));
        let stood_down = |n: &NodeId| st.stood_down.get(n).is_some_and(|t| self.now < *t);
        let best = self
            .ri
            .candidates
            .iter()
            .filter(|(n, _)| n == self.me || (!silent(n) && !stood_down(n)))
            .fold(None::<&(NodeId, Priority)>, |b, c| match b {
                Some(b) if !better(c, b) => Some(b),
                _ => Some(c),
            });
        best.map(|b| &b.0) == Some(self.me)
    }

    /// Claims the router with an epoch above every epoch seen, and adverts it at once.
    fn claim(&self, st: &mut RouterState, reason: String, out: &mut Outputs<'_>) {
        let Some(priority) = self.my_prio else {
            return;
        };
        let claim = SnatClaim {
            router: self.ri.router.clone(),
            epoch: st.max_epoch.saturating_add(1),
            priority,
            node: self.me.clone(),
        };
        st.max_epoch = claim.epoch;
        st.mine = Some(claim.clone());
        st.better_since = None;
        st.last_sent = Some(self.now);
        self.advert(&claim, out);
        out.events.push_back(ElectionEvent::Took { claim, reason });
    }

    /// The claim, to every other candidate and listener.
    fn advert(&self, claim: &SnatClaim, out: &mut Outputs<'_>) {
        let to: std::collections::BTreeSet<&NodeId> = (self.ri.candidates.iter().map(|(n, _)| n))
            .chain(&self.ri.listeners)
            .filter(|n| *n != self.me)
            .collect();
        for n in to {
            out.adverts.push_back((n.clone(), claim.clone()));
        }
    }
}

/// The slot an advert sent at `now` stands for: the one due after `last`, so that adverts keep
/// to a grid of whole intervals and a timer that fires a little late each time does not make
/// them drift later and later behind what the backups expect; `now` itself when this node is an
/// interval or more behind (it stalled).
fn advert_slot(last: Option<Instant>, now: Instant, interval: Duration) -> Instant {
    match last.map(|t| t + interval) {
        Some(due) if now.saturating_duration_since(due) < interval => due,
        _ => now,
    }
}

/// Why a router without a live holder is claimed: its last holder went silent or released it.
fn vacancy_reason(st: &RouterState) -> String {
    match (
        st.heard.values().max_by_key(|(c, _)| c.epoch),
        &st.released_by,
    ) {
        (Some((c, _)), _) => format!("holder {} went silent", c.node),
        (None, Some(n)) => format!("holder {n} released it"),
        (None, None) => "no holder".to_string(),
    }
}
