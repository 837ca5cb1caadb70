//! Replication without a central server: on every view change and every resync, this node
//! publishes what rendezvous ranking makes it a replica of and withdraws what it no longer must
//! carry. A pass that found nothing to do is not repeated while the tenant state and the live
//! members stay as they were, except every [`SETTLED_RESYNC`] for what time alone changes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::{NodeId, Record};
use tokio::time::Instant;
use tracing::warn;

use super::{wall_ms, ConfigService};
use crate::mesh::view::ClusterView;
use crate::tenant::replicate::{self, Duty};

/// How often a pass runs again while nothing it reads changed and the last one found nothing to
/// do: for what only time changes (tombstones expiring, claims going stale). Each pass reads
/// every record and port (at 10 000 ports, the idle agent's largest cost when it ran every
/// resync, 5 times a second).
pub const SETTLED_RESYNC: Duration = Duration::from_secs(5);

/// What a replication pass decided from.
pub(super) struct PassInputs {
    view: Arc<ClusterView>,
    live: BTreeSet<NodeId>,
}

impl PassInputs {
    pub(super) fn of(view: Arc<ClusterView>) -> PassInputs {
        let live = view.alive().map(|m| m.facts.node_id().clone()).collect();
        PassInputs { view, live }
    }

    fn same_as(&self, other: &PassInputs) -> bool {
        self.live == other.live && self.view.tenant.same_content(&other.view.tenant)
    }
}

/// A pass that found nothing to do, and when it ran.
pub(super) struct SettledPass {
    inputs: PassInputs,
    at: Instant,
}

/// Whether a pass must run on `now`'s inputs at `at`, after the last pass that found nothing to
/// do (`None`: the last one did something, or none ran yet).
pub(super) fn pass_needed(settled: Option<&SettledPass>, now: &PassInputs, at: Instant) -> bool {
    settled.is_none_or(|s| {
        !s.inputs.same_as(now) || at.saturating_duration_since(s.at) >= SETTLED_RESYNC
    })
}

impl ConfigService {
    /// What this node must publish or withdraw according to the current view (nothing while it
    /// sees no live member).
    pub(super) fn current_duties(&self) -> Vec<Duty> {
        let view = self.view.load();
        let live: BTreeSet<NodeId> = view.alive().map(|m| m.facts.node_id().clone()).collect();
        if live.is_empty() {
            return Vec::new();
        }
        replicate::duties(
            &view.tenant,
            &self.me,
            &live,
            wall_ms(),
            self.settings.tombstone_ttl.as_millis() as u64,
        )
    }

    /// Runs replication until the task is aborted: on every view change and every resync, publish
    /// or withdraw what rendezvous ranking asks of this node. The block refill runs beside it and
    /// is supervised with it: if the refill ends (it never should) or panics, so does this task,
    /// with the refill's panic, and the agent stops naming it rather than run on without refills.
    pub async fn run_replication(self: Arc<Self>) {
        let mut refill = AbortOnDrop(tokio::spawn(self.clone().run_block_refill()));
        let mut rx = self.view.subscribe();
        let mut tick = tokio::time::interval(self.settings.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut settled: Option<SettledPass> = None;
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tick.tick() => {},
                ended = &mut refill.0 => {
                    match ended {
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        _ => {
                            tracing::error!("the block refill task ended; replication stops with it");
                            return;
                        }
                    }
                }
            }
            let inputs = PassInputs::of(self.view.load());
            if !pass_needed(settled.as_ref(), &inputs, Instant::now()) {
                continue;
            }
            self.repair_duplicates().await;
            self.release_blocks_if_draining().await;
            self.release_orphan_blocks().await;
            self.lend_requested_values().await;
            let nothing_to_do = self.current_duties().is_empty();
            // What the pass wrote changes the view, so the next one runs on it. (Time is tokio's,
            // so that a simulation on a paused clock sees the settled resync come.)
            settled = nothing_to_do.then(|| SettledPass {
                inputs,
                at: Instant::now(),
            });
            if nothing_to_do {
                continue;
            }
            let _one_at_a_time = self.writes.lock().await;
            // A write may have held the lock (claim windows take a while) and landed since that
            // view: decide again from the view as it is now. Withdrawals also re-check the version
            // at delete time, for a write whose view has not caught up yet.
            let duties = self.current_duties();
            let mut publish = Vec::new();
            let mut withdraw = Vec::new();
            for d in duties {
                match d {
                    Duty::Publish(r) => publish.push(*r),
                    Duty::Withdraw(k, v) => withdraw.push((k, v)),
                }
            }
            if !publish.is_empty() {
                if let Err(e) = self.publish_records(&publish).await {
                    warn!(error = %e, "replication publish failed");
                }
            }
            if !withdraw.is_empty() {
                self.withdraw_unless_newer(&withdraw).await;
                self.persist().await;
            }
        }
    }
}

/// Aborts a task when dropped (the refill task ends with the replication task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ConfigService {
    /// Deletes each key unless this node now publishes a newer record there than the version the
    /// withdrawal was decided on (a write landed after the view it was computed from).
    pub(super) async fn withdraw_unless_newer(&self, keys: &[(String, mesh_proto::Version)]) {
        self.own
            .write(|st| {
                for (k, decided_on) in keys {
                    let Some(current) = st.get(k) else { continue };
                    let newer = mesh_proto::decode_value::<Record>(current)
                        .is_ok_and(|r| r.version() > decided_on);
                    if newer {
                        tracing::debug!(key = %k, "not withdrawn: a newer write landed since the view it was decided on");
                    } else {
                        st.delete(k);
                    }
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mesh::view::ClusterView;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn inputs(view: &Arc<ClusterView>, live: &[&str]) -> PassInputs {
        PassInputs {
            view: view.clone(),
            live: live.iter().map(|n| node(n)).collect(),
        }
    }

    #[test]
    fn a_settled_pass_is_repeated_only_on_change_or_after_the_settled_resync() {
        let view = Arc::new(ClusterView::empty(node("a")));
        let t0 = Instant::now();
        let settled = SettledPass {
            inputs: inputs(&view, &["a", "b"]),
            at: t0,
        };
        let same = inputs(&view, &["a", "b"]);
        assert!(pass_needed(None, &same, t0), "no settled pass: run");
        assert!(!pass_needed(
            Some(&settled),
            &same,
            t0 + Duration::from_secs(1)
        ));
        assert!(pass_needed(Some(&settled), &same, t0 + SETTLED_RESYNC));
        let member_gone = inputs(&view, &["a"]);
        assert!(pass_needed(Some(&settled), &member_gone, t0));
        let mut changed = ClusterView::empty(node("a"));
        changed.tenant.max_hlc = mesh_proto::HlcTimestamp(1 << 16);
        let changed = inputs(&Arc::new(changed), &["a", "b"]);
        assert!(pass_needed(Some(&settled), &changed, t0));
        // An equal state rebuilt into another view is the same input.
        let rebuilt = inputs(&Arc::new(ClusterView::empty(node("a"))), &["a", "b"]);
        assert!(!pass_needed(Some(&settled), &rebuilt, t0));
    }
}
