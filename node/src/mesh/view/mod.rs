//! The converged cluster view: one writer builds an immutable [`ClusterView`] from chitchat state
//! and publishes it; any number of readers load it without locks and wait for changes on a watch
//! channel carrying the view's generation.

mod build;
mod readiness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chitchat::{Chitchat, ChitchatId, NodeState};
use mesh_proto::{NodeFacts, NodeId, ObjectId, SnatClaim};
use serde::Serialize;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::mesh::pki::sealed;
use crate::mesh::pki::signing::ClaimAuthority;
use crate::tenant::{Admission, Clock, TenantState, Writers};

/// What one node life publishes, as the view reads it: the payload of every present key (seals
/// were checked when the values arrived; tombstones are left out).
pub type Published = BTreeMap<String, String>;

/// The payloads of a node state's present keys.
pub fn published(state: &NodeState) -> Published {
    state
        .key_values()
        .filter_map(|(k, v)| sealed::live_payload(v).map(|p| (k.to_string(), p.to_string())))
        .collect()
}

pub use build::build_view;
pub use readiness::{wait_until_ready, Readiness};

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
    /// The SNAT claims it publishes (see `crate::ha`), by router.
    pub snat_claims: BTreeMap<ObjectId, PublishedClaim>,
    /// External networks whose gateway does not answer this node's probes.
    pub external_down: BTreeSet<ObjectId>,
}

/// A SNAT claim as a node publishes it in gossip, with why and when it was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedClaim {
    /// The claim.
    pub claim: SnatClaim,
    /// Why the node took the router, and when (Unix ms), if it said.
    pub why: Option<(u64, String)>,
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

    pub(super) fn same_content(&self, other: &ClusterView) -> bool {
        self.me == other.me
            && self.members == other.members
            && self.excluded == other.excluded
            && self.tenant == other.tenant
    }
}

/// The reading side of the view: cheap to clone, lock-free to read.
#[derive(Clone)]
pub struct ViewHandle {
    current: Arc<ArcSwap<ClusterView>>,
    changes: watch::Receiver<u64>,
    changed_at: Arc<std::sync::Mutex<tokio::time::Instant>>,
    /// Wakes the writer for a rebuild now (this node wrote to its own key space).
    rebuild: Arc<tokio::sync::Notify>,
}

impl ViewHandle {
    /// Asks the writer to rebuild now rather than at its next tick: this node just wrote to its
    /// own key space, and whoever wrote waits to see it in the view.
    pub fn poke(&self) {
        self.rebuild.notify_one();
    }

    /// The current view.
    pub fn load(&self) -> Arc<ClusterView> {
        self.current.load_full()
    }

    /// A receiver that is notified with the new generation on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// When the current view was published (the writer's start for generation 0).
    pub fn changed_at(&self) -> tokio::time::Instant {
        *self.changed_at.lock().unwrap_or_else(|p| p.into_inner())
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
    max_clock_skew: Duration,
    writers: Writers,
) -> (ViewHandle, JoinHandle<()>) {
    let current = Arc::new(ArcSwap::from_pointee(ClusterView::empty(me.clone())));
    let (tx, rx) = watch::channel(0u64);
    let changed_at = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let rebuild = Arc::new(tokio::sync::Notify::new());
    let handle = ViewHandle {
        current: current.clone(),
        changes: rx,
        changed_at: changed_at.clone(),
        rebuild: rebuild.clone(),
    };
    let writer = async move {
        let mut live_watch = chitchat.lock().await.live_nodes_watcher();
        let mut snapshots = Snapshots::default();
        let mut tick = tokio::time::interval(resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = live_watch.changed() => if changed.is_err() { return },
                _ = tick.tick() => {},
                _ = rebuild.notified() => {},
            }
            // Copy out under the lock (only node lives whose state changed); decode after.
            snapshots.refresh(&*chitchat.lock().await);
            let prev = current.load_full();
            let clock = Clock {
                now_ms: wall_ms(),
                max_skew_ms: max_clock_skew.as_millis() as u64,
            };
            let next = build_view(
                &me,
                prev.generation + 1,
                snapshots.nodes.iter().map(|(id, (_, p))| (id, p.as_ref())),
                &snapshots.live,
                &snapshots.ever_live,
                &Admission {
                    clock,
                    writers,
                    authority: authority.as_ref(),
                },
            );
            log_new_problems(&prev, &next);
            log_member_changes(&prev, &next);
            if !next.same_content(&prev) {
                let generation = next.generation;
                // The time first: whoever reads the new view then reads its time, never an older one.
                *changed_at.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                current.store(Arc::new(next));
                let _ = tx.send(generation);
            }
        }
    };
    let task = tokio::spawn(writer.in_current_span());
    (handle, task)
}

/// The writer's copy of chitchat's state: each node life's payloads, refreshed only for the
/// lives whose max version moved, and the live and once-live sets.
#[derive(Default)]
struct Snapshots {
    nodes: BTreeMap<ChitchatId, (u64, Arc<Published>)>,
    live: BTreeSet<ChitchatId>,
    ever_live: BTreeSet<ChitchatId>,
}

impl Snapshots {
    fn refresh(&mut self, cc: &Chitchat) {
        let states = cc.node_states();
        self.nodes.retain(|id, _| states.contains_key(id));
        for (id, st) in states {
            let fresh = self
                .nodes
                .get(id)
                .is_some_and(|(v, _)| *v == st.max_version());
            if !fresh {
                let snapshot = (st.max_version(), Arc::new(published(st)));
                self.nodes.insert(id.clone(), snapshot);
            }
        }
        self.live = cc.live_nodes().cloned().collect();
        // Forget lives chitchat itself has garbage-collected.
        self.ever_live.retain(|id| states.contains_key(id));
        self.ever_live.extend(self.live.iter().cloned());
    }
}

/// Unix milliseconds now.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Logs the members that joined, left, came back in a new life, or went dead or alive again
/// since the previous view.
fn log_member_changes(prev: &ClusterView, next: &ClusterView) {
    for (id, m) in &next.members {
        match prev.members.get(id) {
            None => tracing::info!(node = %id, generation = m.generation, "member joined the view"),
            Some(p) if p.generation != m.generation => tracing::info!(
                node = %id,
                from = p.generation,
                to = m.generation,
                "member is now known in a new life"
            ),
            Some(p) if p.state != m.state => match m.state {
                MemberState::Dead => tracing::info!(node = %id, "member is dead in this view"),
                MemberState::Alive => tracing::info!(node = %id, "member is alive again"),
            },
            _ => {}
        }
    }
    for id in prev
        .members
        .keys()
        .filter(|id| !next.members.contains_key(*id))
    {
        tracing::info!(node = %id, "member left the view");
    }
}

/// Logs what the merge refused that it did not refuse in the previous view (a value from the
/// future, a port published by another node than its host, …), once.
fn log_new_problems(prev: &ClusterView, next: &ClusterView) {
    for p in next
        .tenant
        .problems
        .iter()
        .filter(|p| !prev.tenant.problems.contains(p))
    {
        tracing::warn!(problem = %p, "a published value was refused");
    }
}
