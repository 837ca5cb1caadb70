//! When a freshly started node may act on its view. A restarted agent starts with a view holding
//! little more than itself; planning its datapath or claiming routers from it would tear down
//! what is carrying traffic. Both the reconciler and the SNAT election wait here first.

use std::time::Duration;

use mesh_proto::NodeId;
use tracing::{info, warn};

use super::ViewHandle;

/// When a node may first act on its view: it waits until this node is a member, sees a peer (when it was given seeds), and the view has not
/// changed for `settle` — or until `max_wait`, after which it goes ahead with what it has.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Whether other nodes are expected (the agent has seeds other than itself).
    pub expect_peers: bool,
    /// How long the view must be unchanged.
    pub settle: Duration,
    /// The longest wait.
    pub max_wait: Duration,
}

/// Waits until the view is ready for a first pass or a first claim (see [`Readiness`]).
pub async fn wait_until_ready(view: &ViewHandle, me: &NodeId, readiness: &Readiness, what: &str) {
    let start = tokio::time::Instant::now();
    let mut changes = view.subscribe();
    let mut last_change = tokio::time::Instant::now();
    loop {
        let v = view.load();
        let me_known = v.members.contains_key(me);
        let peers_ok = !readiness.expect_peers || v.alive().any(|m| m.facts.node_id() != me);
        if me_known && peers_ok && last_change.elapsed() >= readiness.settle {
            info!(
                waited_ms = start.elapsed().as_millis() as u64,
                members = v.members.len(),
                alive = v.alive().count(),
                "view settled; {what}"
            );
            return;
        }
        if start.elapsed() >= readiness.max_wait {
            warn!(
                me_known,
                peers_ok, "view did not settle in time; {what} with what it holds"
            );
            return;
        }
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() { return; }
                last_change = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}
