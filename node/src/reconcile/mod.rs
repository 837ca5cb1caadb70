//! The agent's reconcile loop: converged view → `datapath::plan` → observe → diff → apply.
//!
//! Level-triggered: it runs on every view change and at least every `resync`, never two passes at
//! once, and after a pass with errors it retries with exponential back-off (100 ms doubling to
//! 10 s). Kernel calls block, so each pass runs on the blocking pool.
//!
//! A pass woken by a change of the view or of the SNAT holders observes only the namespaces whose
//! plan changed since the last clean pass (`datapath::reconcile_pass`), so its cost follows the
//! change, not the number of routers on the node. The first pass, every resync and every pass
//! after a failure observe everything, which finds drift made by anyone else within one resync.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datapath::{diff, plan, reconcile_pass, Desired, Kernel, Op, PassOutcome, Plan};
use mesh_proto::NodeId;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::ha::Holders;
use crate::instruments::Instruments;
use crate::mesh::view::{wait_until_ready, Readiness, ViewHandle};
use crate::store::ConfigService;

mod topology;

pub use topology::{missing_fip_gateways, topology_from_view};

/// What the last pass did, for `dvrmesh status` and `datapath diff`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    /// View generation the pass planned from.
    pub view_generation: u64,
    /// Ops computed.
    pub ops: usize,
    /// Ops that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Problems the planner reported.
    pub problems: Vec<String>,
    /// Wall time of the pass in milliseconds.
    pub millis: u64,
    /// Passes run since start.
    pub passes: u64,
    /// An error that stopped the pass (observe or apply failed entirely).
    pub error: Option<String>,
    /// The kernel objects dvrmesh holds on this node by kind, as of the last clean pass.
    pub objects: BTreeMap<String, usize>,
}

/// A kernel shared between the loop and the API (for `datapath diff`).
pub type SharedKernel = Arc<Mutex<Box<dyn Kernel + Send>>>;

/// What a reconciler reads and drives.
pub struct ReconcilerParts {
    /// This node.
    pub me: NodeId,
    /// The converged view.
    pub view: ViewHandle,
    /// The SNAT holders the election resolved (`None`: no election; the best live candidate).
    pub holders: Option<tokio::sync::watch::Receiver<Holders>>,
    /// The kernel it programs.
    pub kernel: SharedKernel,
    /// The store, which allocates this node's FIP gateway ports.
    pub store: Arc<ConfigService>,
    /// How often everything is observed again without a change.
    pub resync: Duration,
    /// When the first pass may run.
    pub readiness: Readiness,
    /// Where passes and convergence times are recorded.
    pub instruments: Instruments,
}

/// The ops of a pass, one short line each (an nft table by its key, not its content), for the
/// debug log that says what a pass changed.
fn op_list(ops: &[Op]) -> String {
    ops.iter()
        .map(|op| match op {
            Op::ReplaceNft { key, .. } => format!("ReplaceNft({key:?})"),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The reconciler of one node.
pub struct Reconciler {
    parts: ReconcilerParts,
    last: Mutex<PassReport>,
    /// The plan of the last pass that applied cleanly: what the kernel is taken to hold.
    last_clean: Mutex<Option<Box<Desired>>>,
    /// The highest view generation a clean pass programmed (its convergence time is recorded).
    converged: AtomicU64,
}

impl Reconciler {
    /// A reconciler programming `parts.kernel` from `parts.view`.
    pub fn new(parts: ReconcilerParts) -> Arc<Self> {
        Arc::new(Reconciler {
            parts,
            last: Mutex::new(PassReport::default()),
            last_clean: Mutex::new(None),
            converged: AtomicU64::new(0),
        })
    }

    /// The SNAT holders to plan with.
    fn current_holders(&self) -> Option<Holders> {
        self.parts.holders.as_ref().map(|h| h.borrow().clone())
    }

    /// The plan for the current view.
    pub fn plan(&self) -> Plan {
        let holders = self.current_holders();
        plan(
            &topology_from_view(&self.parts.view.load(), holders.as_ref()),
            &self.parts.me,
        )
    }

    /// The ops the next pass would apply (observes the kernel; changes nothing).
    pub async fn pending(&self) -> Result<Vec<Op>, String> {
        let desired = self.plan().desired;
        let kernel = self.parts.kernel.clone();
        tokio::task::spawn_blocking(move || {
            let mut k = kernel.lock().unwrap_or_else(|p| p.into_inner());
            k.observe(&desired)
                .map(|o| diff(&desired, &o))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The last pass's report.
    pub fn last_report(&self) -> PassReport {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        wait_until_ready(
            &self.parts.view,
            &self.parts.me,
            &self.parts.readiness,
            "reconciling the datapath",
        )
        .await;
        let mut changes = self.parts.view.subscribe();
        let mut holders = self.parts.holders.clone();
        if let Some(h) = holders.as_mut() {
            // The election announces its first holders once it is ready; planning before would
            // tear down a SNAT namespace this node is about to claim again.
            let _ = tokio::time::timeout(self.parts.readiness.max_wait, h.changed()).await;
        }
        let mut backoff = Duration::from_millis(100);
        // The first pass, the periodic resync and any pass after a failure observe everything; a
        // pass woken by a change observes only the namespaces whose plan changed.
        let mut full = true;
        loop {
            let ok = self.pass(full).await;
            let wait = if ok {
                backoff = Duration::from_millis(100);
                self.parts.resync
            } else {
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                w
            };
            full = tokio::select! {
                r = changes.changed() => if r.is_err() { return } else { !ok },
                r = async { match holders.as_mut() {
                    Some(h) => h.changed().await,
                    None => std::future::pending().await,
                } } => if r.is_err() { return } else { !ok },
                _ = tokio::time::sleep(wait) => true,
            };
        }
    }

    /// One pass (scoped to what changed since the last clean pass unless `full`); true when
    /// everything applied.
    async fn pass(&self, full: bool) -> bool {
        let view = self.parts.view.load();
        let view_changed_at = self.parts.view.changed_at();
        let holders = self.current_holders();
        let topo = topology_from_view(&view, holders.as_ref());
        for ext in missing_fip_gateways(&topo, &self.parts.me) {
            // Allocation waits a claim window: do it beside the loop; the next view change
            // brings the port into the plan.
            let store = self.parts.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.ensure_fip_gateway(&ext).await {
                    warn!(external_network = %ext, error = %e, "cannot allocate the FIP gateway port");
                }
            });
        }
        let Plan { desired, problems } = plan(&topo, &self.parts.me);
        let kernel = self.parts.kernel.clone();
        // Taken, so that a pass that fails leaves the next one nothing to trust.
        let last_clean = self
            .last_clean
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let since = if full { None } else { last_clean };
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let mut k = kernel.lock().unwrap_or_else(|p| p.into_inner());
            let out = reconcile_pass(&mut **k, &desired, since.as_ref().map(|d| d.as_ref()))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((out, desired))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the pass panicked: {e}")));
        let took = started.elapsed();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.passes += 1;
        last.view_generation = view.generation;
        // What the plan leaves out (a VNI two networks share, a FIP with no way out here, a
        // link planned twice): logged once when it appears, listed in status all along.
        for p in problems.iter().filter(|p| !last.problems.contains(p)) {
            warn!(problem = %p, "the datapath plan leaves this out");
        }
        last.problems = problems;
        last.millis = took.as_millis() as u64;
        let ok = match result {
            Ok((out, desired)) => self.applied(&mut last, out, desired, took),
            Err(e) => {
                warn!(error = %e, "datapath pass failed");
                last.error = Some(e);
                false
            }
        };
        self.parts.instruments.pass(ok, took);
        // The first clean pass after start waited for the view to settle: not a convergence time.
        let before = ok.then(|| self.converged.fetch_max(view.generation, Ordering::Relaxed));
        if before.is_some_and(|b| b > 0 && b < view.generation) {
            self.parts.instruments.converged(view_changed_at.elapsed());
        }
        ok
    }

    /// Logs and records a pass that ran (some of its ops may have failed); true when every op
    /// applied.
    fn applied(
        &self,
        last: &mut PassReport,
        out: PassOutcome,
        desired: Desired,
        took: Duration,
    ) -> bool {
        let millis = took.as_millis() as u64;
        let PassOutcome {
            ops,
            report,
            observed_namespaces,
        } = out;
        let scope = observed_namespaces.map_or("all".to_string(), |n| n.to_string());
        if !ops.is_empty() {
            info!(
                op = ops.len(),
                failed = report.failed.len(),
                millis,
                observed_namespaces = %scope,
                "datapath reconciled"
            );
            debug!(ops = %op_list(&ops), "datapath ops applied");
        } else {
            debug!(millis, observed_namespaces = %scope, "datapath in sync");
        }
        for (op, err) in &report.failed {
            warn!(op = %op, error = %err, "datapath op failed");
        }
        last.ops = ops.len();
        last.error = None;
        let ok = report.failed.is_empty();
        last.failed = report.failed;
        if ok {
            last.objects = desired
                .kind_counts()
                .iter()
                .map(|(kind, n)| (kind.to_string(), *n))
                .collect();
            *self.last_clean.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(desired));
        }
        ok
    }
}
