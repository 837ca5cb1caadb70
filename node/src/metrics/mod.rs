//! Prometheus metrics and health probes of one agent: the registry ([`Metrics`]) that joins what
//! the parts record ([`crate::instruments`]) with what is read from them at scrape time
//! ([`collect`]), the readiness verdict ([`health`]), and the HTTP endpoint serving both
//! ([`http`]).

mod collect;
pub mod health;
pub mod http;

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::instruments::Instruments;

pub use collect::Sources;
pub use health::Readiness;

/// The content type of [`Metrics::render`]: the OpenMetrics text format, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of one agent, ready to render.
pub struct Metrics {
    registry: Registry,
    sources: Arc<Sources>,
}

impl Metrics {
    /// The registry over `sources` (read at each scrape) and `instruments` (recorded by the
    /// parts).
    pub fn new(sources: Sources, instruments: &Instruments) -> Metrics {
        let sources = Arc::new(sources);
        let mut registry = Registry::default();
        registry.register(
            "dvrmesh_reconcile_passes",
            "Datapath reconcile passes, by result (error: a pass stopped or an op failed)",
            instruments.reconcile_passes.clone(),
        );
        registry.register(
            "dvrmesh_reconcile_duration_seconds",
            "Wall time of a datapath reconcile pass",
            instruments.reconcile_seconds.clone(),
        );
        registry.register(
            "dvrmesh_convergence_seconds",
            "From a change of this node's view to the end of the first clean pass that programmed it (not counted for the first pass after start, which waits for the view to settle)",
            instruments.convergence_seconds.clone(),
        );
        registry.register(
            "dvrmesh_api_requests",
            "Local API requests, by operation and result",
            instruments.api_requests.clone(),
        );
        registry.register(
            "dvrmesh_dhcp_frames",
            "DHCP frames from local ports, by outcome (answered, ignored, refused, rate_limited)",
            instruments.dhcp_frames.clone(),
        );
        registry.register_collector(Box::new(sources.clone()));
        Metrics { registry, sources }
    }

    /// Every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector's own error would leave a partial page.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        out
    }

    /// Whether this agent is ready (its view settled and its datapath in sync), with the reasons
    /// when it is not.
    pub fn readiness(&self) -> Readiness {
        self.sources.readiness()
    }
}
