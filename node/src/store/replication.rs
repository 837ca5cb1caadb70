//! Replication without a central server: on every view change and every resync, this node
//! publishes what rendezvous ranking makes it a replica of and withdraws what it no longer must
//! carry.

use std::collections::BTreeSet;
use std::sync::Arc;

use mesh_proto::{NodeId, Record};
use tracing::warn;

use super::{wall_ms, ConfigService};
use crate::tenant::replicate::{self, Duty};

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
            self.repair_duplicates().await;
            self.release_blocks_if_draining().await;
            self.lend_requested_values().await;
            if self.current_duties().is_empty() {
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
