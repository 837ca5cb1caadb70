//! Restarting a holder without a takeover: the notice an agent stopped by a signal sends to every
//! live node, the note of the routers it held that its next life reads from `data_dir`, and what
//! a node does with a notice it hears.
//!
//! The datapath stays in the kernel while the agent is away, so the holder keeps forwarding; a
//! takeover by a backup would only move the traffic and lose what is in flight meanwhile. The
//! price is the hold itself: a node that never comes back leaves its routers without a working
//! holder until the hold runs out (bounded by [`MAX_RESTART_HOLD`]), which is why the hold is
//! off unless configured (`snat_restart_hold_ms`).

use std::path::Path;
use std::time::Duration;

use mesh_proto::{ElectionMessage, NodeId, RestartNotice, SnatClaim};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::election::{Election, MAX_RESTART_HOLD};
use super::task::{unix_ms, HaTask};

/// The note of the routers held, under `data_dir`.
pub const RESUME_FILE: &str = "snat-resume.json";
/// Largest note read back.
const MAX_NOTE_BYTES: u64 = 1 << 20;
/// How long the task waits after sending the notice, so the transport puts it on the wire
/// before the agent closes its endpoint.
const FLUSH: Duration = Duration::from_millis(50);
/// How many times the notice is sent (datagrams may be lost).
const SENDS: usize = 2;

/// What a restarting agent leaves for its next life.
#[derive(Debug, Serialize, Deserialize)]
struct ResumeNote {
    /// Until when (Unix ms) the next life may resume the routers.
    until_unix_ms: u64,
    /// The claims it held.
    claims: Vec<SnatClaim>,
}

/// Reads and removes the note a previous life of `me` left in `dir`; while its hold has not run
/// out, `election` resumes the routers it names. A missing note is the usual case; a bad one is
/// logged and ignored.
pub fn resume_from(dir: &Path, me: &NodeId, election: &mut Election) {
    let path = dir.join(RESUME_FILE);
    let note = match read_note(&path) {
        Ok(Some(note)) => note,
        Ok(None) => return,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "ignoring the SNAT resume note");
            let _ = std::fs::remove_file(&path);
            return;
        }
    };
    if let Err(e) = std::fs::remove_file(&path) {
        warn!(file = %path.display(), error = %e, "cannot remove the SNAT resume note");
    }
    let now_ms = unix_ms();
    if note.until_unix_ms <= now_ms {
        info!("the previous life's restart hold has run out: resuming no router");
        return;
    }
    let left = Duration::from_millis(note.until_unix_ms - now_ms).min(MAX_RESTART_HOLD);
    let held: Vec<_> = note
        .claims
        .iter()
        .filter(|c| &c.node == me)
        .map(|c| (c.router.clone(), c.epoch))
        .collect();
    info!(
        routers = held.len(),
        left_ms = left.as_millis() as u64,
        "resuming the routers held before the restart"
    );
    election.resume(held, Instant::now() + left);
}

fn read_note(path: &Path) -> Result<Option<ResumeNote>, String> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut text = String::new();
    file.take(MAX_NOTE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_NOTE_BYTES {
        return Err(format!("larger than {MAX_NOTE_BYTES} bytes"));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl HaTask {
    /// The agent is stopping: with a hold set and routers held, notes them for the next life and
    /// tells every live node to keep this node as their holder for the hold.
    pub(super) async fn announce_restart(&mut self) {
        let hold = self.settings.restart_hold.min(MAX_RESTART_HOLD);
        let mine = self.election.claims();
        if hold.is_zero() || mine.is_empty() {
            return;
        }
        if let Some(dir) = &self.settings.data_dir {
            let note = ResumeNote {
                until_unix_ms: unix_ms() + hold.as_millis() as u64,
                claims: mine.clone(),
            };
            let written = serde_json::to_vec(&note)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    crate::files::write_atomic(&dir.join(RESUME_FILE), &b)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = written {
                warn!(error = %e, "cannot note the routers held for the next life");
            }
        }
        let view = self.view.load();
        let hold_ms = u32::try_from(hold.as_millis()).unwrap_or(u32::MAX);
        let everyone: Vec<NodeId> = view
            .alive()
            .map(|m| m.facts.node_id().clone())
            .filter(|n| n != &self.me)
            .collect();
        for _ in 0..SENDS {
            for to in &everyone {
                let sent = self.send(&view, to, mine.clone(), |claims| {
                    ElectionMessage::Restarting(RestartNotice { claims, hold_ms })
                });
                debug!(to = %to, sent, "restart notice");
            }
        }
        info!(
            routers = mine.len(),
            hold_ms, "restarting: told every live node to keep this node as the holder meanwhile"
        );
        tokio::time::sleep(FLUSH).await;
    }

    /// A restart notice from a holder: the election keeps it alive for the hold when it is the
    /// holder it hears, and the datapath keeps pointing at it when it is the holder resolved
    /// here (a notice from any other node changes nothing).
    pub(super) fn on_restarting(&mut self, now: Instant, claims: Vec<SnatClaim>, hold: Duration) {
        let until = now + hold.min(MAX_RESTART_HOLD);
        let holders = self.holders.borrow().clone();
        for c in claims {
            debug!(from = %c.node, router = %c.router, epoch = c.epoch, hold_ms = hold.as_millis() as u64,
                resolved = ?holders.get(&c.router), heard = ?self.election.heard(now, &c.router), "restart notice");
            if holders.get(&c.router) == Some(&c.node) {
                self.recent
                    .entry(c.router.clone())
                    .or_default()
                    .insert(c.node.clone(), (c.clone(), until));
            }
            let from = c.node.clone();
            self.election.handle_restarting(now, &from, c, hold);
        }
    }
}
