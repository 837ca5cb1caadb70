//! The HA status types: what `router show` and `status` show, the transitions seen, the counters,
//! and the cell the API reads them from.

use std::collections::BTreeMap;

use mesh_proto::{NodeId, ObjectId, Priority};
use serde::Serialize;

/// Candidate state shown by `router show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CandidateStatus {
    /// The node.
    pub node: NodeId,
    /// Its effective priority for this router.
    pub priority: Priority,
    /// `holder`, `backup`, `draining`, `unhealthy` (its external gateway does not answer) or
    /// `dead`.
    pub state: &'static str,
}

/// A change of holder as this node saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// The previous holder.
    pub from: Option<NodeId>,
    /// The new holder (none: nobody holds the router).
    pub to: Option<NodeId>,
    /// The new holder's epoch.
    pub epoch: u64,
    /// Why.
    pub reason: String,
}

/// One router's HA state as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouterHaStatus {
    /// The holder.
    pub holder: Option<NodeId>,
    /// The holder's epoch.
    pub epoch: u64,
    /// Whether a better candidate takes over from a live holder.
    pub preempt: bool,
    /// How long it waits, in ms.
    pub preempt_delay_ms: u64,
    /// Candidates, best first.
    pub candidates: Vec<CandidateStatus>,
    /// The last change of holder seen here.
    pub last_transition: Option<Transition>,
    /// Changes of holder seen here since the agent started.
    pub transitions: u64,
    /// If this node is held down from preempting, for how many more ms.
    pub holddown_ms: Option<u64>,
    /// How long this node waits on the holder's silence, when it is another node that adverts
    /// to it.
    pub suspicion: Option<Suspicion>,
}

/// How long a backup waits on a silent holder, from the advert loss it measured (see
/// `ha::suspicion`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suspicion {
    /// The holder.
    pub holder: NodeId,
    /// The silence after which this node declares it dead, in ms (priority skew included).
    pub down_after_ms: u64,
    /// The share of its adverts this node estimates lost, in thousandths.
    pub advert_loss_permille: u32,
}

/// Counters of this node's own transitions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HaCounters {
    /// Routers taken.
    pub took: u64,
    /// Routers given up.
    pub withdrew: u64,
    /// Election datagrams refused (undecodable, claims not of their sender, or from a node that
    /// is no candidate for the router).
    pub rejected_datagrams: u64,
    /// Claims the election refused: epochs far beyond any seen, routers this node does not know.
    pub refused_claims: u64,
    /// Times this node found it had stalled (paused, starved) and claimed nothing while it
    /// caught up.
    pub stalls: u64,
    /// Times the HA task woke more than an advert interval after an election deadline.
    pub late_wakes: u64,
}

/// Everything `router show` and `status` report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HaStatus {
    /// Whether the election runs yet (it waits for a settled view).
    pub ready: bool,
    /// Whether this node is draining.
    pub draining: bool,
    /// External networks whose gateway this node cannot reach.
    pub external_down: Vec<ObjectId>,
    /// Whether this node sees a majority of the cluster alive.
    pub majority: bool,
    /// Routers held by this node.
    pub held: Vec<ObjectId>,
    /// By router.
    pub routers: BTreeMap<ObjectId, RouterHaStatus>,
    /// Counters.
    pub counters: HaCounters,
    /// How long ago the election last ran, when that is longer than it ever should be (the agent
    /// was paused or starved), or, for [`CATCH_UP`] after such a stall, how long the stall was.
    /// Other nodes may have taken its routers meanwhile, so `held` is then empty until the
    /// election catches up: it hears the others' newer claims within an advert interval or two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_ms: Option<u64>,
}

/// A status older than this is stale: the task refreshes it every 100 ms, and the other nodes
/// declare a silent holder down after 8 advert intervals (160 ms by default).
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_millis(400);

/// How long a status written after a stall still claims nothing: the election runs every
/// 100 ms and hears the other nodes' adverts every 20 ms (by default), so by then it has met any
/// newer claim made while this node was stalled and given its own up.
pub const CATCH_UP: std::time::Duration = STALE_AFTER;

/// The status as the HA task last wrote it, and when.
#[derive(Debug)]
pub struct StatusCell {
    status: HaStatus,
    written: tokio::time::Instant,
    /// After a stall: how long it was, and until when the status claims nothing.
    catching_up: Option<(std::time::Duration, tokio::time::Instant)>,
}

impl StatusCell {
    /// A first status, written now.
    pub fn new(status: HaStatus) -> StatusCell {
        StatusCell {
            status,
            written: tokio::time::Instant::now(),
            catching_up: None,
        }
    }

    /// Replaces the status, written at `now`. If the election was running and the last write is
    /// older than [`STALE_AFTER`], the node was stalled: the new status claims nothing for
    /// [`CATCH_UP`].
    pub fn write(&mut self, status: HaStatus, now: tokio::time::Instant) {
        let gap = now.saturating_duration_since(self.written);
        if self.status.ready && status.ready && gap > STALE_AFTER {
            self.catching_up = Some((gap, now + CATCH_UP));
        }
        self.status = status;
        self.written = now;
    }

    /// The status as of `now`: stale (see [`HaStatus::stale_ms`]) when it was written longer than
    /// [`STALE_AFTER`] ago by an election that was running, or when it is catching up after such
    /// a stall.
    pub fn read(&self, now: tokio::time::Instant) -> HaStatus {
        let mut status = self.status.clone();
        let age = now.saturating_duration_since(self.written);
        if status.ready && age > STALE_AFTER {
            status.stale_ms = Some(age.as_millis() as u64);
            status.held.clear();
        } else if let Some((stall, _)) = self.catching_up.filter(|(_, until)| now < *until) {
            status.stale_ms = Some(stall.as_millis() as u64);
            status.held.clear();
        }
        status
    }
}

/// What this node saw of one router's holders.
#[derive(Clone, Debug, Default)]
pub(super) struct Seen {
    /// The holder now (none between a release and the next claim).
    pub(super) holder: Option<NodeId>,
    /// The last holder there was, for the next transition's `from`.
    pub(super) last_holder: Option<NodeId>,
    pub(super) transition: Option<Transition>,
    pub(super) count: u64,
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_status_not_refreshed_for_long_claims_nothing() {
        let cell = StatusCell::new(HaStatus {
            ready: true,
            held: vec![ObjectId::new("r1".to_string()).expect("id")],
            ..HaStatus::default()
        });
        let fresh = cell.read(tokio::time::Instant::now());
        assert_eq!(fresh.held.len(), 1);
        assert_eq!(fresh.stale_ms, None);
        tokio::time::advance(STALE_AFTER + std::time::Duration::from_millis(100)).await;
        let stale = cell.read(tokio::time::Instant::now());
        assert!(stale.held.is_empty(), "a stalled election claims nothing");
        assert_eq!(stale.stale_ms, Some(500));
    }

    fn holding() -> HaStatus {
        HaStatus {
            ready: true,
            held: vec![ObjectId::new("r1".to_string()).expect("id")],
            ..HaStatus::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_stall_the_status_claims_nothing_until_the_election_caught_up() {
        use std::time::Duration;
        let mut cell = StatusCell::new(holding());
        // Paused for a second; the first write after it still holds (nothing heard yet).
        tokio::time::advance(Duration::from_secs(1)).await;
        cell.write(holding(), tokio::time::Instant::now());
        let resumed = cell.read(tokio::time::Instant::now());
        assert!(
            resumed.held.is_empty(),
            "not confirmed right after the stall"
        );
        assert_eq!(
            resumed.stale_ms,
            Some(1000),
            "reports how long the stall was"
        );
        // Written every 100 ms as usual: still catching up within CATCH_UP.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(100)).await;
            cell.write(holding(), tokio::time::Instant::now());
            assert!(cell.read(tokio::time::Instant::now()).held.is_empty());
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        cell.write(holding(), tokio::time::Instant::now());
        let caught_up = cell.read(tokio::time::Instant::now());
        assert_eq!(caught_up.held.len(), 1, "held again once caught up");
        assert_eq!(caught_up.stale_ms, None);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_on_time_never_hide_what_is_held() {
        use std::time::Duration;
        let mut cell = StatusCell::new(holding());
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(150)).await;
            cell.write(holding(), tokio::time::Instant::now());
            let s = cell.read(tokio::time::Instant::now());
            assert_eq!((s.held.len(), s.stale_ms), (1, None));
        }
        // An election that was not running yet has nothing to catch up on.
        let mut waiting = StatusCell::new(HaStatus::default());
        tokio::time::advance(Duration::from_secs(2)).await;
        waiting.write(holding(), tokio::time::Instant::now());
        assert_eq!(waiting.read(tokio::time::Instant::now()).held.len(), 1);
    }
}
