//! Gateway health: ARP probes of each external network's gateway, and what a lost gateway does
//! to this node's candidacy.

use std::time::Duration;

use mesh_proto::{NodeMode, ObjectId};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::HaTask;
use crate::mesh::keys::KEY_EXT_DOWN_PREFIX;

/// How often each external gateway is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a probe waits for an answer (three requests, a third of this apart).
const PROBE_WAIT: Duration = Duration::from_millis(300);
/// Unanswered probes in a row before a gateway counts as unreachable.
pub const DOWN_AFTER: u32 = 3;
/// Answered probes in a row before it counts as reachable again.
const UP_AFTER: u32 = 2;

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Health {
    fails: u32,
    oks: u32,
    down: bool,
    in_flight: bool,
}

impl HaTask {
    /// Starts one ARP probe per external network this SNAT node maps, beside the task.
    pub(super) fn start_probes(&mut self) {
        if !self.settings.probe_gateways || self.facts.mode() != NodeMode::DvrSnat {
            return;
        }
        let view = self.view.load();
        for ext in view.tenant.external_networks() {
            let Some(mapping) = self.facts.external().get(&ext.name) else {
                continue;
            };
            let h = self.health.entry(ext.id.clone()).or_default();
            if h.in_flight {
                continue;
            }
            h.in_flight = true;
            let (dev, gw, id, tx) = (
                mapping.interface.to_string(),
                ext.gateway,
                ext.id.clone(),
                self.probe_tx.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let r = datapath::linux::arp_probe::answers(&dev, gw, PROBE_WAIT);
                let _ = tx.blocking_send((id, r));
            });
        }
    }

    /// A probe's result: after [`DOWN_AFTER`] misses the gateway is down, after [`UP_AFTER`]
    /// answers up again. A probe that could not run (no such device, no permission) changes
    /// nothing.
    pub(super) async fn on_probe(&mut self, ext: ObjectId, result: Result<bool, String>) {
        let h = self.health.entry(ext.clone()).or_default();
        h.in_flight = false;
        let answered = match result {
            Ok(a) => a,
            Err(e) => {
                debug!(external_network = %ext, error = %e, "gateway probe could not run");
                return;
            }
        };
        if answered {
            h.oks += 1;
            h.fails = 0;
        } else {
            h.fails += 1;
            h.oks = 0;
        }
        let down = if h.down {
            h.oks < UP_AFTER
        } else {
            h.fails >= DOWN_AFTER
        };
        if down == h.down {
            return;
        }
        h.down = down;
        if down {
            warn!(external_network = %ext, misses = DOWN_AFTER,
                "external gateway does not answer: handing its routers to a candidate that reaches it");
            self.local.external_down.insert(ext.clone());
        } else {
            info!(external_network = %ext, "external gateway answers again");
            self.local.external_down.remove(&ext);
        }
        let key = format!("{KEY_EXT_DOWN_PREFIX}{ext}");
        self.own
            .write(|st| {
                if down {
                    st.set(&key, "1");
                } else {
                    st.delete(&key);
                }
            })
            .await;
        self.on_view(Instant::now());
    }
}
