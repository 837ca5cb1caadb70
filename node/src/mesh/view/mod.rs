//! The converged cluster view: one writer builds an immutable [`ClusterView`] from chitchat state
//! and publishes it; any number of readers load it without locks and wait for changes on a watch
//! channel carrying the view's generation.

mod build;
mod readiness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::tenant::state::Decoded;
use crate::tenant::{Admission, Clock, Merged, Merger, Pass, TenantState, TenantValues, Writers};

/// Payloads of a node life's present keys, by key (seals were checked when the values arrived;
/// tombstones are left out).
pub type Published = BTreeMap<String, String>;

/// One node life as the view reads it: the payloads of its own keys (facts, certificate, SNAT
/// claims: everything but tenant values), and its tenant values decoded, each with its key's
/// version, so that reading the life again decodes only the keys whose version moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Life {
    /// Payloads of the keys that are not tenant values.
    pub published: Published,
    /// Tenant values decoded, by key, with the key's version (shared with the merger, which
    /// keeps what it merged from each life).
    pub tenant: Arc<TenantValues>,
}

impl Life {
    /// Reads a node state's present keys, reusing what `previous` (the same life read before)
    /// decoded for keys whose version has not moved. Returns the life and how many values it
    /// decoded.
    pub fn read(state: &NodeState, previous: Option<&Life>) -> (Life, usize) {
        Life::read_entries(
            state
                .key_values_including_deleted()
                .filter(|(_, v)| !v.is_deleted())
                .map(|(k, v)| (k, v.version, v.value.as_str())),
            previous,
        )
    }

    /// [`Life::read`] of (key, version, sealed value) entries.
    pub fn read_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, u64, &'a str)>,
        previous: Option<&Life>,
    ) -> (Life, usize) {
        let mut life = Life::default();
        let mut tenant = TenantValues::new();
        let mut decoded = 0;
        for (key, version, value) in entries {
            let Some(payload) = sealed::live_payload(value) else {
                continue;
            };
            if !Decoded::is_tenant_key(key) {
                life.published.insert(key.to_string(), payload.to_string());
                continue;
            }
            let kept = previous
                .and_then(|p| p.tenant.get(key))
                .filter(|(v, _)| *v == version)
                .map(|(_, d)| d.clone());
            let value = kept.unwrap_or_else(|| {
                decoded += 1;
                Arc::new(Decoded::of(key, payload))
            });
            tenant.insert(key.to_string(), (version, value));
        }
        life.tenant = Arc::new(tenant);
        (life, decoded)
    }

    /// A life from payloads alone (tests): every tenant value decoded, at version 0.
    pub fn from_published(published: Published) -> Life {
        let (tenant, own): (Published, Published) = published
            .into_iter()
            .partition(|(k, _)| Decoded::is_tenant_key(k));
        Life {
            published: own,
            tenant: Arc::new(
                tenant
                    .into_iter()
                    .map(|(k, v)| {
                        let d = Arc::new(Decoded::of(&k, &v));
                        (k, (0, d))
                    })
                    .collect(),
            ),
        }
    }
}

pub use build::{build_view, build_view_merging, TenantMerge};
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
            && self.tenant.same_content(&other.tenant)
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
    stats: Arc<WriterStats>,
}

/// How much work the view writer has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ViewStats {
    /// Views built (each one merges the tenant values that changed since the last).
    pub builds: u64,
    /// Of those, builds that merged every tenant value again (with `writers = "operators"`
    /// every [`RECHECK_EVERY`], and whenever a node at a cap made the order of values matter).
    pub full_merges: u64,
    /// The last full merge's build time, microseconds.
    pub last_full_merge_micros: u64,
    /// Their total time, microseconds.
    pub build_micros_total: u64,
    /// The last build's time, microseconds.
    pub last_build_micros: u64,
    /// Wake-ups that found no input changed and built nothing.
    pub skipped: u64,
}

#[derive(Default)]
struct WriterStats {
    builds: AtomicU64,
    full_merges: AtomicU64,
    last_full_merge_micros: AtomicU64,
    build_micros_total: AtomicU64,
    last_build_micros: AtomicU64,
    skipped: AtomicU64,
}

impl WriterStats {
    fn built(&self, took: Duration, merged: Merged) {
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        self.builds.fetch_add(1, Ordering::Relaxed);
        if merged == Merged::Everything {
            self.full_merges.fetch_add(1, Ordering::Relaxed);
            self.last_full_merge_micros.store(micros, Ordering::Relaxed);
        }
        self.build_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.last_build_micros.store(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ViewStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ViewStats {
            builds: g(&self.builds),
            full_merges: g(&self.full_merges),
            last_full_merge_micros: g(&self.last_full_merge_micros),
            build_micros_total: g(&self.build_micros_total),
            last_build_micros: g(&self.last_build_micros),
            skipped: g(&self.skipped),
        }
    }
}

/// The longest the writer goes without a build when no input changed: what a view holds also
/// depends on the clock (a value from the future is accepted once its time comes) and on the
/// certificate authority (a revocation, an expiry), which no gossip version shows.
pub const UNCHANGED_REBUILD_EVERY: Duration = Duration::from_secs(1);

/// How often a build rechecks the tenant rules that depend on time for values that did not
/// change ([`Pass::Recheck`]): a value refused as stamped too far ahead is judged again (it is
/// accepted once its time comes), and with `writers = "operators"` every value is merged again
/// (an operator's seal stops counting once its certificate expires or is revoked). A node's own
/// certificate is checked on every build.
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);

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

    /// The writer's builds so far and their time.
    pub fn stats(&self) -> ViewStats {
        self.stats.snapshot()
    }
}

/// Starts the single view writer for a chitchat instance.
///
/// It wakes on every membership notification from chitchat, when poked, and at least every
/// `resync` (liveness changes and key updates do not all notify); it rebuilds when a node life's
/// version, the live set or the once-live set moved, and otherwise at least every
/// [`UNCHANGED_REBUILD_EVERY`]. It publishes only when the content changed.
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
    let stats = Arc::new(WriterStats::default());
    let handle = ViewHandle {
        current: current.clone(),
        changes: rx,
        changed_at: changed_at.clone(),
        rebuild: rebuild.clone(),
        stats: stats.clone(),
    };
    let writer = async move {
        let mut live_watch = chitchat.lock().await.live_nodes_watcher();
        let mut snapshots = Snapshots::default();
        let mut tick = tokio::time::interval(resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_build: Option<tokio::time::Instant> = None;
        let mut last_recheck: Option<tokio::time::Instant> = None;
        let mut merger = Merger::default();
        let mut not_before: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                changed = live_watch.changed() => if changed.is_err() { return },
                _ = tick.tick() => {},
                _ = rebuild.notified() => {},
            }
            // A build costs time in proportion to everything published: after one, the writer
            // keeps twice its time before the next, so however busy gossip or this node's own
            // writes are, building takes at most a third of a core.
            if let Some(at) = not_before {
                tokio::time::sleep_until(at).await;
            }
            let started = tokio::time::Instant::now();
            // Copy out under the lock: only node lives whose state changed, and in them only
            // the keys whose version moved are decoded again.
            let moved = snapshots.refresh(&*chitchat.lock().await);
            let due = last_build.is_none_or(|t| t.elapsed() >= UNCHANGED_REBUILD_EVERY);
            if !moved && !due {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            last_build = Some(started);
            let prev = current.load_full();
            let clock = Clock {
                now_ms: wall_ms(),
                max_skew_ms: max_clock_skew.as_millis() as u64,
            };
            let recheck = last_recheck.is_none_or(|t| t.elapsed() >= RECHECK_EVERY);
            let tenant = TenantMerge {
                merger: &mut merger,
                pass: if recheck {
                    Pass::Recheck
                } else {
                    Pass::Changes
                },
            };
            let (next, merged) = build_view_merging(
                tenant,
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
            if recheck {
                last_recheck = Some(started);
            }
            log_new_problems(&prev, &next);
            log_member_changes(&prev, &next);
            if !next.same_content(&prev) {
                let generation = next.generation;
                // The time first: whoever reads the new view then reads its time, never an older one.
                *changed_at.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                current.store(Arc::new(next));
                let _ = tx.send(generation);
            }
            let took = started.elapsed();
            stats.built(took, merged);
            not_before = build_gap(took).map(|gap| tokio::time::Instant::now() + gap);
        }
    };
    let task = tokio::spawn(writer.in_current_span());
    (handle, task)
}

/// The writer's copy of chitchat's state: each node life as read, refreshed only for the lives
/// whose max version moved (and in them, only the keys whose version moved are decoded again),
/// and the live and once-live sets.
#[derive(Default)]
struct Snapshots {
    nodes: BTreeMap<ChitchatId, (u64, Arc<Life>)>,
    live: BTreeSet<ChitchatId>,
    ever_live: BTreeSet<ChitchatId>,
}

impl Snapshots {
    /// Copies what changed; whether anything did (a life's version, a life gone, the live or
    /// once-live set).
    fn refresh(&mut self, cc: &Chitchat) -> bool {
        let states = cc.node_states();
        let (nodes_before, ever_live_before) = (self.nodes.len(), self.ever_live.len());
        self.nodes.retain(|id, _| states.contains_key(id));
        let mut moved = self.nodes.len() != nodes_before;
        for (id, st) in states {
            let fresh = self
                .nodes
                .get(id)
                .is_some_and(|(v, _)| *v == st.max_version());
            if !fresh {
                let previous = self.nodes.get(id).map(|(_, life)| life.clone());
                let (life, _) = Life::read(st, previous.as_deref());
                self.nodes
                    .insert(id.clone(), (st.max_version(), Arc::new(life)));
                moved = true;
            }
        }
        let live: BTreeSet<ChitchatId> = cc.live_nodes().cloned().collect();
        moved |= live != self.live;
        self.live = live;
        // Forget lives chitchat itself has garbage-collected.
        self.ever_live.retain(|id| states.contains_key(id));
        self.ever_live.extend(self.live.iter().cloned());
        moved | (self.ever_live.len() != ever_live_before)
    }
}

/// The pause to keep after a build that took `took` (none after a quick one).
fn build_gap(took: Duration) -> Option<Duration> {
    (took >= MIN_THROTTLED_BUILD).then(|| took * 2)
}

/// Builds quicker than this are not followed by a pause.
const MIN_THROTTLED_BUILD: Duration = Duration::from_millis(2);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_life_again_decodes_only_the_keys_whose_version_moved() {
        // Values are `<seal>.<payload>`; reading does not check seals (they were checked when
        // the values arrived). Undecodable payloads still decode, as `Malformed`.
        let first = [
            ("node", 1, "s.facts"),
            ("o/port/p1", 2, "s.one"),
            ("o/port/p2", 3, "s.two"),
        ];
        let (a, decoded) = Life::read_entries(first, None);
        assert_eq!(decoded, 2, "two tenant values, both new");
        assert_eq!(a.published.get("node").map(String::as_str), Some("facts"));
        assert!(!a.published.contains_key("o/port/p1"));

        let second = [
            ("node", 1, "s.facts"),
            ("o/port/p1", 2, "s.one"),
            ("o/port/p2", 5, "s.two again"),
            ("a/pool/10.0.0.1", 6, "s.claim"),
            // A tombstone: an empty payload is absent.
            ("o/port/p3", 7, "s."),
        ];
        let (b, decoded) = Life::read_entries(second, Some(&a));
        assert_eq!(
            decoded, 2,
            "p2's version moved and the claim is new; p1 is kept"
        );
        assert!(Arc::ptr_eq(
            &a.tenant["o/port/p1"].1,
            &b.tenant["o/port/p1"].1
        ));
        assert!(!Arc::ptr_eq(
            &a.tenant["o/port/p2"].1,
            &b.tenant["o/port/p2"].1
        ));
        assert_eq!(b.tenant.len(), 3);
        assert!(!b.tenant.contains_key("o/port/p3"));
    }

    #[test]
    fn a_slow_build_is_followed_by_twice_its_time_a_quick_one_by_nothing() {
        assert_eq!(build_gap(Duration::from_micros(500)), None);
        assert_eq!(
            build_gap(Duration::from_millis(10)),
            Some(Duration::from_millis(20))
        );
    }
}
