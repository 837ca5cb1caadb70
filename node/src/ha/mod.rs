//! SNAT high availability: runs this node's [`Election`] against the live cluster.
//!
//! The task wires the sans-IO election to the world and does nothing else:
//! - the view becomes the election's input ([`election_input`], pure);
//! - election datagrams arrive from the transport with the sender's certified id: adverts and
//!   takeover notices feed [`Election::handle_advert`], releases [`Election::handle_release`];
//! - the clock ticks at a quarter of the advert interval;
//! - adverts go out as QUIC datagrams, several claims per datagram;
//! - this node's claims are published in gossip (`snat/<router>`, with `snat-why/<router>`);
//! - on a takeover, a notice goes to every live node (three times, an advert interval apart), so
//!   compute nodes re-point their `sg-` FDB entries at once rather than after gossip;
//! - on a deliberate withdrawal (drain, no longer a candidate, lost majority), a release goes to
//!   every live node so the best backup claims without waiting for silence;
//! - with a restart hold set (`snat_restart_hold_ms`), an agent stopped by a signal first tells
//!   every live node it is restarting and notes the routers it holds in `data_dir`: the nodes
//!   waiting on its adverts keep it as the holder for the hold, compute nodes keep their `sg-`
//!   entries on it, and its next life resumes those routers at once (see [`restart`]);
//! - a `dvr_snat` node probes the gateway of each external network it maps (an ARP probe on its
//!   interface every [`PROBE_INTERVAL`]); after [`DOWN_AFTER`] unanswered probes it publishes
//!   `ext-down/<network>` and stops being a candidate for routers on that network while another
//!   candidate can still reach the gateway, so a holder with a dead external link hands over.
//!
//! The holder of each router, as the datapath should see it, is resolved by [`resolve_holders`]
//! (pure): this node's own claim if it holds one, else the highest-ranked claim among those
//! published in gossip by live nodes and those heard in datagrams lately. Epochs grow with every
//! takeover, so the newest takeover wins everywhere as soon as it is heard by any path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_proto::{NodeFacts, NodeId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::mesh::own::OwnState;
use crate::mesh::transport::DatagramPort;
use crate::mesh::view::{Readiness, ViewHandle};
use election::{Election, ElectionConfig, ElectionInput};

mod announce;
pub mod election;
mod health;
mod input;
mod report;
pub mod restart;
mod status;
pub mod suspicion;
mod task;

pub use health::{DOWN_AFTER, PROBE_INTERVAL};
pub use input::{election_input, resolve_holders, Holders, LocalState};
pub use status::{CandidateStatus, HaCounters, HaStatus, RouterHaStatus, Suspicion, Transition};
use task::HaTask;

/// How many times a takeover notice is sent, an advert interval apart.
const NOTICE_REPEATS: u32 = 3;
/// Commands queued for the task.
const COMMAND_QUEUE: usize = 16;
/// The status is rebuilt at least this often (and on every change).
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// File under `data_dir` marking a drained node, so a restart keeps it drained.
pub const DRAIN_FILE: &str = "draining";

/// What the HA task needs.
#[derive(Clone, Debug)]
pub struct HaSettings {
    /// Election timing.
    pub election: ElectionConfig,
    /// When the election may first claim (a restarted node must learn the claims first).
    pub readiness: Readiness,
    /// How long a claim heard only in a datagram counts, without adverts or gossip behind it.
    pub notice_ttl: Duration,
    /// Where the drain marker lives (`None`: not persisted).
    pub data_dir: Option<PathBuf>,
    /// Signs the claims this node publishes.
    pub signer: Arc<crate::mesh::pki::signing::Signer>,
    /// Whether to probe external gateways: only when this node programs its datapath, so an agent
    /// with `datapath = "off"` never sends on a host interface its configuration merely names.
    pub probe_gateways: bool,
    /// How long the nodes waiting on this node's adverts keep it as the holder while its agent
    /// restarts (`Duration::ZERO`: no restart notice; see [`restart`]).
    pub restart_hold: Duration,
}

enum HaCommand {
    Drain(bool, oneshot::Sender<()>),
    /// The agent is stopping: announce a restart (when a hold is set).
    Restarting(oneshot::Sender<()>),
}

/// The handle the agent, the reconciler and the API hold.
#[derive(Clone)]
pub struct HaHandle {
    holders: watch::Receiver<Holders>,
    status: Arc<Mutex<status::StatusCell>>,
    commands: mpsc::Sender<HaCommand>,
}

impl HaHandle {
    /// A receiver of the current holders, notified on every change.
    pub fn holders(&self) -> watch::Receiver<Holders> {
        self.holders.clone()
    }

    /// The current status (stale, claiming nothing, when the election has not run for longer
    /// than it should: see [`HaStatus::stale_ms`]).
    pub fn status(&self) -> HaStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(tokio::time::Instant::now())
    }

    /// Starts or stops draining: a draining node is no candidate, so it hands every router it
    /// holds to the best backup at once. Returns once the task has applied it.
    pub async fn set_draining(&self, draining: bool) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(HaCommand::Drain(draining, tx))
            .await
            .map_err(|_| "the HA task has stopped".to_string())?;
        rx.await.map_err(|_| "the HA task has stopped".to_string())
    }

    /// The agent is stopping: with a restart hold set, tells every live node this node is
    /// restarting and notes the routers it holds for its next life. Returns once sent.
    pub async fn announce_restart(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(HaCommand::Restarting(tx))
            .await
            .map_err(|_| "the HA task has stopped".to_string())?;
        rx.await.map_err(|_| "the HA task has stopped".to_string())
    }
}

/// Starts the HA task. `facts` are this node's published facts (drain republishes them).
pub fn spawn(
    me: NodeId,
    facts: NodeFacts,
    view: ViewHandle,
    own: OwnState,
    port: DatagramPort,
    settings: HaSettings,
) -> (HaHandle, tokio::task::JoinHandle<()>) {
    let (holders_tx, holders_rx) = watch::channel(Holders::new());
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let draining = facts.draining();
    let (probe_tx, probe_rx) = mpsc::channel(64);
    let status = Arc::new(Mutex::new(status::StatusCell::new(HaStatus {
        draining,
        ..Default::default()
    })));
    let mut election = Election::new(me.clone(), settings.election);
    if let Some(dir) = &settings.data_dir {
        restart::resume_from(dir, &me, &mut election);
    }
    let task = HaTask {
        election,
        me,
        facts,
        view,
        own,
        sender: port.sender,
        settings,
        holders: holders_tx,
        status: status.clone(),
        recent: BTreeMap::new(),
        released: BTreeMap::new(),
        notices: Vec::new(),
        input: ElectionInput::default(),
        ready: false,
        local: LocalState {
            draining,
            external_down: BTreeSet::new(),
        },
        health: BTreeMap::new(),
        probe_tx,
        last: BTreeMap::new(),
        counters: HaCounters::default(),
        last_report: None,
        reasons: BTreeMap::new(),
        refusals: crate::throttle::Throttle::new(Duration::from_secs(1)),
        late_wakes: crate::throttle::Throttle::new(Duration::from_secs(10)),
    };
    let handle = HaHandle {
        holders: holders_rx,
        status,
        commands: cmd_tx,
    };
    let join = tokio::spawn(tracing::Instrument::in_current_span(task.run(
        port.inbound,
        cmd_rx,
        probe_rx,
    )));
    (handle, join)
}
