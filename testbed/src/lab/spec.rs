//! What a lab is made of: nodes with modes, and the default topology of the demo.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One node of the lab.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node id (also the agent's certificate name).
    pub name: String,
    /// `dvr`, `dvr_snat` or `dvr_no_external`.
    pub mode: String,
    /// SNAT priority.
    pub priority: u8,
}

/// A lab's nodes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabSpec {
    /// Nodes, in order; the first is every agent's seed.
    pub nodes: Vec<NodeSpec>,
    /// The binary every agent starts from when it is not this build's `dvrmesh`: an older
    /// release, for an upgrade test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_bin: Option<PathBuf>,
    /// `snat_advert_multiplier_min` for every agent, when not the default: how many silent
    /// advert intervals a backup waits on a holder on a clean path. The lab tests raise it: on a
    /// small shared machine an agent is at times starved of CPU for longer than the default
    /// 3 × 20 ms, and its backup then rightly takes over a holder that only looks dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advert_multiplier_min: Option<u32>,
    /// `snat_restart_hold_ms` for every agent, when set: a holder's agent stopped by a signal
    /// is waited for this long while it restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_hold_ms: Option<u64>,
}

impl LabSpec {
    /// `compute` dvr nodes and `snat` dvr_snat nodes (priorities 200, 150, …).
    pub fn sized(compute: usize, snat: usize) -> LabSpec {
        let mut nodes = Vec::new();
        for i in 1..=compute {
            nodes.push(NodeSpec {
                name: format!("compute-{i}"),
                mode: "dvr".into(),
                priority: 100,
            });
        }
        for i in 1..=snat {
            nodes.push(NodeSpec {
                name: format!("network-{i}"),
                mode: "dvr_snat".into(),
                priority: (250 - 50 * i.min(4)) as u8,
            });
        }
        LabSpec {
            nodes,
            agent_bin: None,
            advert_multiplier_min: None,
            restart_hold_ms: None,
        }
    }
}

/// Underlay (tunnel) address of the node at `index`.
pub fn tunnel_ip(index: usize) -> String {
    format!("192.168.90.{}", 10 + index)
}

/// The external network's prefix, its upstream router and the "internet" host behind it.
pub const EXT_CIDR: &str = "203.0.113.0/24";
/// Upstream router on the external network.
pub const EXT_GATEWAY: &str = "203.0.113.1";
/// The internet host.
pub const INTERNET_IP: &str = "198.51.100.10";
