//! The metrics read at scrape time from the parts' own state (the view, the election, the
//! transport, the gossip filter, the reconciler's last pass), so no part keeps a second copy of
//! what it already counts.

use std::fmt::Error as FmtError;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;
use serde_json::Value;

use super::health::{self, DatapathState, HealthInputs, Readiness};
use crate::ha::HaHandle;
use crate::mesh::transport::TransportStats;
use crate::mesh::trust::Trust;
use crate::mesh::view::{MemberState, ViewHandle};
use crate::reconcile::{PassReport, Reconciler};

/// What the metrics read, as the agent holds it.
pub struct Sources {
    /// The converged view.
    pub view: ViewHandle,
    /// Transport counters.
    pub stats: Option<Arc<TransportStats>>,
    /// The gossip filter, whose refusals are counted.
    pub trust: Option<Arc<Trust>>,
    /// The SNAT election.
    pub ha: Option<HaHandle>,
    /// The reconciler, when this agent programs its kernel.
    pub reconciler: Option<Arc<Reconciler>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

impl Sources {
    /// Whether the agent is ready, from the same readings the metrics show.
    pub fn readiness(&self) -> Readiness {
        health::verdict(&self.health_inputs())
    }

    fn health_inputs(&self) -> HealthInputs {
        let view = self.view.load();
        HealthInputs {
            in_own_view: view.members.contains_key(&view.me),
            view_generation: view.generation,
            election_ready: self.ha.as_ref().map(|h| h.status().ready),
            datapath: self
                .reconciler
                .as_ref()
                .map(|r| datapath_state(&r.last_report())),
        }
    }

    fn encode_view(&self, enc: &mut DescriptorEncoder) -> Result<(), FmtError> {
        let view = self.view.load();
        let count = |s: MemberState| view.members.values().filter(|m| m.state == s).count();
        let members = [
            ("alive", count(MemberState::Alive)),
            ("dead", count(MemberState::Dead)),
        ];
        gauges(
            enc,
            "dvrmesh_members",
            "Members of this node's view, by state",
            "state",
            &members,
        )?;
        gauge(
            enc,
            "dvrmesh_members_excluded",
            "Nodes seen in gossip but left out of the view (see `dvrmesh status`)",
            view.excluded.len(),
        )?;
        gauge(
            enc,
            "dvrmesh_view_generation",
            "Generation of this node's view; increases on every change",
            view.generation,
        )?;
        let builds = self.view.stats();
        counter(
            enc,
            "dvrmesh_view_builds",
            "Views built from the gossiped state (a build merges the tenant values that changed)",
            builds.builds,
        )?;
        counter(
            enc,
            "dvrmesh_view_build_seconds",
            "Time spent building views",
            builds.build_micros_total as f64 / 1e6,
        )?;
        gauge(
            enc,
            "dvrmesh_view_last_build_seconds",
            "How long the last view build took",
            builds.last_build_micros as f64 / 1e6,
        )?;
        counter(
            enc,
            "dvrmesh_view_full_merges",
            "View builds that merged every tenant value again (periodic, or a node at a cap)",
            builds.full_merges,
        )?;
        let age = self.view.changed_at().elapsed().as_secs_f64();
        gauge(
            enc,
            "dvrmesh_view_age_seconds",
            "Time since this node's view last changed",
            age,
        )?;
        gauge(
            enc,
            "dvrmesh_refused_values",
            "Published values the view refused (see `dvrmesh status`)",
            view.tenant.problems.len(),
        )?;
        let info = [(env!("CARGO_PKG_VERSION"), 1u32)];
        gauges(
            enc,
            "dvrmesh_build_info",
            "The running dvrmesh version",
            "version",
            &info,
        )
    }

    fn encode_datapath(&self, enc: &mut DescriptorEncoder) -> Result<(), FmtError> {
        let Some(reconciler) = &self.reconciler else {
            return Ok(());
        };
        let last = reconciler.last_report();
        let in_sync = datapath_state(&last).in_sync(self.view.load().generation);
        gauge(
            enc,
            "dvrmesh_datapath_in_sync",
            "1 when the last pass programmed the current view with no error",
            u32::from(in_sync),
        )?;
        gauge(
            enc,
            "dvrmesh_datapath_generation",
            "The view generation the last pass programmed",
            last.view_generation,
        )?;
        gauge(
            enc,
            "dvrmesh_datapath_failed_ops",
            "Ops that failed in the last pass",
            last.failed.len(),
        )?;
        gauge(
            enc,
            "dvrmesh_datapath_plan_problems",
            "Problems the planner reported in the last pass",
            last.problems.len(),
        )?;
        let objects: Vec<(&str, usize)> =
            last.objects.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        gauges(
            enc,
            "dvrmesh_kernel_objects",
            "Kernel objects dvrmesh holds on this node, by kind, as of the last clean pass",
            "kind",
            &objects,
        )
    }

    fn encode_ha(&self, enc: &mut DescriptorEncoder) -> Result<(), FmtError> {
        let Some(ha) = &self.ha else {
            return Ok(());
        };
        let s = ha.status();
        let changes: u64 = s.routers.values().map(|r| r.transitions).sum();
        gauge(
            enc,
            "dvrmesh_snat_routers_held",
            "SNAT routers this node holds",
            s.held.len(),
        )?;
        gauge(
            enc,
            "dvrmesh_snat_routers",
            "Routers with SNAT this node's election follows",
            s.routers.len(),
        )?;
        gauge(
            enc,
            "dvrmesh_snat_majority",
            "1 when this node sees a majority of the network nodes (it may take routers)",
            u32::from(s.majority),
        )?;
        gauge(
            enc,
            "dvrmesh_snat_draining",
            "1 when this node is drained",
            u32::from(s.draining),
        )?;
        gauge(
            enc,
            "dvrmesh_snat_holder_changes",
            "Holder changes seen for the routers followed now (elections and failovers)",
            changes,
        )?;
        counter(
            enc,
            "dvrmesh_snat_takeovers",
            "Routers this node took",
            s.counters.took,
        )?;
        counter(
            enc,
            "dvrmesh_snat_withdrawals",
            "Routers this node gave up",
            s.counters.withdrew,
        )?;
        counter(
            enc,
            "dvrmesh_election_rejected_datagrams",
            "Election datagrams refused (not a candidate, bad epoch, undecodable)",
            s.counters.rejected_datagrams,
        )?;
        counter(
            enc,
            "dvrmesh_election_refused_claims",
            "Published SNAT claims refused (bad signature, replay)",
            s.counters.refused_claims,
        )?;
        counter(
            enc,
            "dvrmesh_election_stalls",
            "Times this node found it had stalled longer than a down interval (paused, starved)",
            s.counters.stalls,
        )?;
        counter(
            enc,
            "dvrmesh_election_late_wakes",
            "Times the HA task woke more than an advert interval after an election deadline (starved of CPU)",
            s.counters.late_wakes,
        )
    }

    fn encode_transport(&self, enc: &mut DescriptorEncoder) -> Result<(), FmtError> {
        if let Some(stats) = &self.stats {
            let t = stats.snapshot();
            let h = "Gossip frames, by direction";
            counters(
                enc,
                "dvrmesh_gossip_messages",
                h,
                "direction",
                &[("in", t.received), ("out", t.sent)],
            )?;
            let h = "Bytes of gossip frames, by direction";
            counters(
                enc,
                "dvrmesh_gossip_bytes",
                h,
                "direction",
                &[("in", t.bytes_received), ("out", t.bytes_sent)],
            )?;
            let dropped = [
                ("queue_full", t.dropped_queue_full),
                ("backoff", t.dropped_backoff),
                ("send_error", t.send_errors),
                ("inbound_full", t.dropped_inbound),
                ("rejected_frame", t.rejected_frames),
                ("identity", t.identity_rejections),
                ("rate", t.dropped_rate),
                ("peer_share", t.dropped_share),
                ("stale_digest", t.stale_digests),
            ];
            counters(
                enc,
                "dvrmesh_gossip_dropped",
                "Gossip frames dropped or refused, by reason",
                "reason",
                &dropped,
            )?;
            counter(
                enc,
                "dvrmesh_gossip_linked_messages",
                "Gossip messages sent with their digest written as changes against the peer's",
                t.linked_sent,
            )?;
            counter(
                enc,
                "dvrmesh_tls_handshake_failures",
                "QUIC/TLS handshakes that failed (e.g. a certificate from another CA)",
                t.handshake_failures,
            )?;
            let h = "Election datagrams, by direction";
            counters(
                enc,
                "dvrmesh_election_datagrams",
                h,
                "direction",
                &[("in", t.datagrams_received), ("out", t.datagrams_sent)],
            )?;
            counter(
                enc,
                "dvrmesh_election_datagrams_dropped",
                "Election datagrams dropped",
                t.datagrams_dropped,
            )?;
        }
        if let Some(trust) = &self.trust {
            let refused = counts_of(serde_json::to_value(trust.counters()).unwrap_or_default());
            let refused: Vec<(&str, u64)> = refused.iter().map(|(k, n)| (k.as_str(), *n)).collect();
            counters(
                enc,
                "dvrmesh_gossip_refused",
                "Gossip entries the trust filter refused, by reason",
                "reason",
                &refused,
            )?;
        }
        Ok(())
    }
}

impl Collector for Sources {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), FmtError> {
        self.encode_view(&mut enc)?;
        self.encode_datapath(&mut enc)?;
        self.encode_ha(&mut enc)?;
        self.encode_transport(&mut enc)
    }
}

/// The datapath as readiness judges it, from the reconciler's last pass.
fn datapath_state(last: &PassReport) -> DatapathState {
    DatapathState {
        passes: last.passes,
        generation: last.view_generation,
        error: last.error.clone(),
        failed_ops: last.failed.len(),
    }
}

/// The numeric fields of a serialised counters struct, by name.
fn counts_of(v: Value) -> Vec<(String, u64)> {
    match v {
        Value::Object(map) => map
            .into_iter()
            .filter_map(|(k, v)| v.as_u64().map(|n| (k, n)))
            .collect(),
        _ => Vec::new(),
    }
}

fn gauge<N: EncodeGaugeValue + std::fmt::Debug>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), FmtError> {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter<N: EncodeCounterValue + std::fmt::Debug>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), FmtError> {
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauges<N: EncodeGaugeValue + std::fmt::Debug + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, N)],
) -> Result<(), FmtError> {
    let members = values.iter().map(|(v, n)| (*v, ConstGauge::new(*n)));
    family(enc, (name, help, label), members)
}

fn counters<N: EncodeCounterValue + std::fmt::Debug + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, N)],
) -> Result<(), FmtError> {
    let members = values.iter().map(|(v, n)| (*v, ConstCounter::new(*n)));
    family(enc, (name, help, label), members)
}

/// One metric family: `name` with one sample per value of `label`.
fn family<'a, M: EncodeMetric + TypedMetric>(
    enc: &mut DescriptorEncoder,
    (name, help, label): (&str, &str, &str),
    members: impl Iterator<Item = (&'a str, M)>,
) -> Result<(), FmtError> {
    let mut family = enc.encode_descriptor(name, help, None, M::TYPE)?;
    for (value, metric) in members {
        let labels = [(label, value)];
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
