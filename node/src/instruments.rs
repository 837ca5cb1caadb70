//! The counters and histograms the agent's parts record into as they work (reconcile passes, the
//! time from a view change to the kernel, API requests). Read only by [`crate::metrics`]; kept
//! apart from it so the parts that record depend on nothing they are read by.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// The outcome label of a reconcile pass or an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The labels of an API request: which operation (only the operations the API knows, or
/// `invalid`, so a client cannot create series at will) and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The request's `op`, e.g. `status`, `port_create`; `invalid` when it did not parse.
    pub op: String,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// What became of a DHCP frame a local port sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DhcpLabels {
    /// `answered`, `ignored` (a valid request needing no answer, e.g. RELEASE), `refused`
    /// (malformed, or not the port's own MAC) or `rate_limited`.
    pub outcome: &'static str,
}

/// What the agent's parts record; cheap to clone (every metric is shared inside).
#[derive(Clone, Debug)]
pub struct Instruments {
    /// Reconcile passes by result.
    pub reconcile_passes: Family<ResultLabel, Counter>,
    /// Wall time of reconcile passes, in seconds.
    pub reconcile_seconds: Histogram,
    /// From a view change to the end of the first clean pass that programmed it, in seconds.
    pub convergence_seconds: Histogram,
    /// API requests by operation and result.
    pub api_requests: Family<ApiLabels, Counter>,
    /// DHCP frames from local ports, by outcome.
    pub dhcp_frames: Family<DhcpLabels, Counter>,
}

impl Default for Instruments {
    fn default() -> Self {
        // 1 ms to about 16 s, doubling: a scoped pass takes milliseconds, a cold one seconds.
        let buckets = || exponential_buckets(0.001, 2.0, 15);
        Instruments {
            reconcile_passes: Family::default(),
            reconcile_seconds: Histogram::new(buckets()),
            convergence_seconds: Histogram::new(buckets()),
            api_requests: Family::default(),
            dhcp_frames: Family::default(),
        }
    }
}

impl Instruments {
    /// Records one reconcile pass.
    pub fn pass(&self, ok: bool, took: Duration) {
        self.reconcile_passes
            .get_or_create(&ResultLabel {
                result: result_of(ok),
            })
            .inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    /// Records that a view change reached the kernel after `lag`.
    pub fn converged(&self, lag: Duration) {
        self.convergence_seconds.observe(lag.as_secs_f64());
    }

    /// Records what became of one DHCP frame (`outcome` as [`DhcpLabels`] lists).
    pub fn dhcp_frame(&self, outcome: &'static str) {
        self.dhcp_frames
            .get_or_create(&DhcpLabels { outcome })
            .inc();
    }

    /// Records one API request (`op` is `None` when the request did not parse).
    pub fn api_request(&self, op: Option<&str>, ok: bool) {
        self.api_requests
            .get_or_create(&ApiLabels {
                op: op.unwrap_or("invalid").to_string(),
                result: result_of(ok),
            })
            .inc();
    }
}

fn result_of(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}
