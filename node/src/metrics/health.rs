//! The readiness verdict behind `/readyz`: a pure function of what the agent's parts report, so
//! every reason a node is not ready is written (and tested) in one place.

use serde::Serialize;

/// What readiness is decided from.
#[derive(Clone, Debug)]
pub struct HealthInputs {
    /// Whether this node is a member of its own view (its own gossip state is published).
    pub in_own_view: bool,
    /// The view's generation.
    pub view_generation: u64,
    /// Whether the SNAT election has started (it waits for the view to settle); `None` without
    /// an election.
    pub election_ready: Option<bool>,
    /// The datapath's last pass; `None` when this agent does not program its kernel.
    pub datapath: Option<DatapathState>,
}

/// The datapath as its last pass left it.
#[derive(Clone, Debug)]
pub struct DatapathState {
    /// Passes run since start.
    pub passes: u64,
    /// The view generation the last pass programmed.
    pub generation: u64,
    /// Why the last pass stopped, if it did.
    pub error: Option<String>,
    /// Ops of the last pass that failed.
    pub failed_ops: usize,
}

impl DatapathState {
    /// Whether the last pass programmed the view of `generation` and everything applied.
    pub fn in_sync(&self, generation: u64) -> bool {
        self.passes > 0
            && self.error.is_none()
            && self.failed_ops == 0
            && self.generation >= generation
    }
}

/// The verdict: ready, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// True when nothing below holds the node back.
    pub ready: bool,
    /// Every reason it is not ready, one sentence each.
    pub reasons: Vec<String>,
}

/// Ready when this node is in its own view, its election (if any) has started, and its datapath
/// (if it programs one) applied the current view with no error.
pub fn verdict(i: &HealthInputs) -> Readiness {
    let mut reasons = Vec::new();
    if !i.in_own_view {
        reasons.push("this node is not in its own view yet (gossip has not started)".to_string());
    }
    if i.election_ready == Some(false) {
        reasons.push("the SNAT election waits for the view to settle".to_string());
    }
    if let Some(d) = &i.datapath {
        if d.passes == 0 {
            reasons.push("no datapath pass yet (it waits for the view to settle)".to_string());
        } else if let Some(e) = &d.error {
            reasons.push(format!("the last datapath pass failed: {e}"));
        } else if d.failed_ops > 0 {
            reasons.push(format!(
                "{} datapath ops failed in the last pass (see `dvrmesh datapath diff`)",
                d.failed_ops
            ));
        } else if d.generation < i.view_generation {
            reasons.push(format!(
                "the datapath is behind the view (programmed generation {}, view generation {})",
                d.generation, i.view_generation
            ));
        }
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled() -> HealthInputs {
        HealthInputs {
            in_own_view: true,
            view_generation: 7,
            election_ready: Some(true),
            datapath: Some(DatapathState {
                passes: 3,
                generation: 7,
                error: None,
                failed_ops: 0,
            }),
        }
    }

    #[test]
    fn a_settled_node_in_sync_is_ready() {
        assert_eq!(
            verdict(&settled()),
            Readiness {
                ready: true,
                reasons: vec![]
            }
        );
        let no_datapath = HealthInputs {
            datapath: None,
            election_ready: None,
            ..settled()
        };
        assert!(
            verdict(&no_datapath).ready,
            "a node without datapath or election is ready once in its view"
        );
    }

    #[test]
    fn each_way_of_not_being_ready_is_named() {
        let cases: Vec<(HealthInputs, &str)> = vec![
            (
                HealthInputs {
                    in_own_view: false,
                    ..settled()
                },
                "not in its own view",
            ),
            (
                HealthInputs {
                    election_ready: Some(false),
                    ..settled()
                },
                "election waits",
            ),
            (
                HealthInputs {
                    view_generation: 8,
                    ..settled()
                },
                "behind the view (programmed generation 7, view generation 8)",
            ),
        ];
        for (inputs, reason) in cases {
            let v = verdict(&inputs);
            assert!(!v.ready, "{reason}: should not be ready");
            assert!(
                v.reasons.iter().any(|r| r.contains(reason)),
                "{reason} not in {:?}",
                v.reasons
            );
        }
        let datapath = |passes, error: Option<&str>, failed_ops| HealthInputs {
            datapath: Some(DatapathState {
                passes,
                generation: 7,
                error: error.map(str::to_string),
                failed_ops,
            }),
            ..settled()
        };
        let cases = [
            (datapath(0, None, 0), "no datapath pass yet"),
            (
                datapath(2, Some("netlink: EPERM"), 0),
                "failed: netlink: EPERM",
            ),
            (datapath(2, None, 3), "3 datapath ops failed"),
        ];
        for (inputs, reason) in cases {
            let v = verdict(&inputs);
            assert!(
                !v.ready && v.reasons.len() == 1 && v.reasons[0].contains(reason),
                "{reason}: {v:?}"
            );
        }
    }
}
