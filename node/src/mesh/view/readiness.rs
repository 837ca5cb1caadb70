//! When a freshly started node may act on its view. A restarted agent starts with a view holding
//! little more than itself; planning its datapath or claiming routers from it would tear down
//! what is carrying traffic. Both the reconciler and the election wait here first.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_proto::NodeId;
use tracing::{info, warn};

use super::ViewHandle;

/// When a node may first act on its view: it waits until this node is a member, sees a peer (when
/// it was given seeds), sees alive again the peers its last life saw alive (for at most
/// `remembered_wait`), and the view has not changed for `settle` — or until `max_wait`, after
/// which it goes ahead with what it has.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Whether other nodes are expected (the agent has seeds other than itself).
    pub expect_peers: bool,
    /// The gossip addresses of the peers the last life saw alive (`peers.json`), this node's own
    /// left out. A view without one of them would plan as if its ports were gone: the first pass
    /// would delete the tunnel entries towards them.
    pub remembered: BTreeSet<SocketAddr>,
    /// How long to wait for remembered peers: one that died meanwhile delays the first pass by
    /// this much, no more.
    pub remembered_wait: Duration,
    /// How long the view must be unchanged.
    pub settle: Duration,
    /// The longest wait.
    pub max_wait: Duration,
}

/// One look at the view, as the wait judges it.
#[derive(Debug)]
struct Look<'a> {
    /// Whether this node is a member of its own view yet.
    me_known: bool,
    /// The gossip addresses of the other members alive in the view.
    alive_peers: &'a BTreeSet<SocketAddr>,
    /// Since the wait began.
    waited: Duration,
    /// Since the view last changed.
    quiet: Duration,
}

/// What the wait does after a look.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not yet.
    Wait,
    /// Act on the view; `missing` are remembered peers not alive in it (waited for in vain).
    Ready { missing: Vec<SocketAddr> },
    /// `max_wait` is over: act on what the view holds.
    GiveUp,
}

/// The readiness rule on one look. Pure.
fn judge(r: &Readiness, look: &Look<'_>) -> Verdict {
    let missing: Vec<SocketAddr> = r
        .remembered
        .iter()
        .filter(|p| !look.alive_peers.contains(p))
        .copied()
        .collect();
    let peers_ok = !r.expect_peers || !look.alive_peers.is_empty();
    let remembered_ok = missing.is_empty() || look.waited >= r.remembered_wait;
    if look.me_known && peers_ok && remembered_ok && look.quiet >= r.settle {
        Verdict::Ready { missing }
    } else if look.waited >= r.max_wait {
        Verdict::GiveUp
    } else {
        Verdict::Wait
    }
}

/// Waits until the view is ready for a first pass or a first claim (see [`Readiness`]).
pub async fn wait_until_ready(view: &ViewHandle, me: &NodeId, readiness: &Readiness, what: &str) {
    let start = tokio::time::Instant::now();
    let mut changes = view.subscribe();
    let mut last_change = tokio::time::Instant::now();
    loop {
        let v = view.load();
        let alive_peers: BTreeSet<SocketAddr> = v
            .alive()
            .filter(|m| m.facts.node_id() != me)
            .map(|m| m.gossip_addr)
            .collect();
        let look = Look {
            me_known: v.members.contains_key(me),
            alive_peers: &alive_peers,
            waited: start.elapsed(),
            quiet: last_change.elapsed(),
        };
        let waited_ms = look.waited.as_millis() as u64;
        match judge(readiness, &look) {
            Verdict::Wait => {}
            Verdict::Ready { missing } => {
                if !missing.is_empty() {
                    warn!(
                        waited_ms,
                        missing = ?missing,
                        "peers the last life saw alive are not back in the view; {what} without them"
                    );
                }
                info!(
                    waited_ms,
                    members = v.members.len(),
                    alive = v.alive().count(),
                    "view settled; {what}"
                );
                return;
            }
            Verdict::GiveUp => {
                warn!(
                    me_known = look.me_known,
                    alive_peers = alive_peers.len(),
                    "view did not settle in time; {what} with what it holds"
                );
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 7100))
    }

    fn readiness(remembered: &[SocketAddr]) -> Readiness {
        Readiness {
            expect_peers: true,
            remembered: remembered.iter().copied().collect(),
            remembered_wait: Duration::from_secs(10),
            settle: Duration::from_secs(1),
            max_wait: Duration::from_secs(30),
        }
    }

    fn look(alive: &BTreeSet<SocketAddr>, waited_s: u64, quiet_s: u64) -> Look<'_> {
        Look {
            me_known: true,
            alive_peers: alive,
            waited: Duration::from_secs(waited_s),
            quiet: Duration::from_secs(quiet_s),
        }
    }

    #[test]
    fn a_quiet_view_missing_a_remembered_peer_waits_for_it() {
        let r = readiness(&[addr(1), addr(2)]);
        let one = BTreeSet::from([addr(1)]);
        assert_eq!(
            judge(&r, &look(&one, 2, 2)),
            Verdict::Wait,
            "a view without a peer the last life saw alive must not be planned from"
        );
        let both = BTreeSet::from([addr(1), addr(2)]);
        assert_eq!(
            judge(&r, &look(&both, 2, 1)),
            Verdict::Ready { missing: vec![] }
        );
    }

    #[test]
    fn a_remembered_peer_that_stays_away_delays_the_first_pass_by_the_remembered_wait_only() {
        let r = readiness(&[addr(1), addr(2)]);
        let one = BTreeSet::from([addr(1)]);
        assert_eq!(judge(&r, &look(&one, 9, 9)), Verdict::Wait);
        assert_eq!(
            judge(&r, &look(&one, 10, 9)),
            Verdict::Ready {
                missing: vec![addr(2)]
            }
        );
    }

    #[test]
    fn the_view_must_be_quiet_and_hold_this_node_and_a_peer() {
        let r = readiness(&[]);
        let none = BTreeSet::new();
        let one = BTreeSet::from([addr(1)]);
        assert_eq!(judge(&r, &look(&one, 5, 0)), Verdict::Wait, "not quiet");
        assert_eq!(judge(&r, &look(&none, 5, 5)), Verdict::Wait, "no peer");
        let mut me_unknown = look(&one, 5, 5);
        me_unknown.me_known = false;
        assert_eq!(judge(&r, &me_unknown), Verdict::Wait, "not a member");
        assert_eq!(judge(&r, &look(&none, 30, 5)), Verdict::GiveUp);
        let alone = Readiness {
            expect_peers: false,
            ..r
        };
        assert_eq!(
            judge(&alone, &look(&none, 1, 1)),
            Verdict::Ready { missing: vec![] }
        );
    }
}
