//! The agent's lifecycle: check identity, publish facts, gossip, keep the view, run the store,
//! the SNAT election and the datapath, serve the API, and stop them all together.
//!
//! This module only wires the libraries together; each piece lives in its own module. Every
//! long-lived task is supervised: if one ends or panics, the agent logs which and why and exits
//! with an error (so systemd restarts it) rather than serving an API while nothing programs the
//! kernel or answers elections.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use mesh_proto::{dvr_mac_for, NodeFacts};
use tokio::task::JoinHandle;
use tracing::{error, info, info_span, warn, Instrument};

use crate::api::{self, ApiContext};
use crate::config::{Config, DatapathMode};
use crate::ha::election::ElectionConfig;
use crate::ha::{self, HaHandle, HaSettings};
use crate::instruments::Instruments;
use crate::mesh::gossip::{self, GossipSettings};
use crate::mesh::own::OwnState;
use crate::mesh::peers;
use crate::mesh::pki::crl::{Crl, Revocation, MAX_CRL_BYTES};
use crate::mesh::pki::Credentials;
use crate::mesh::transport::{DatagramPort, Evictor, QuicTransport};
use crate::mesh::view::{self, Readiness, ViewHandle};
use crate::metrics;
use crate::reconcile::{Reconciler, ReconcilerParts, SharedKernel};
use crate::reload::CertReload;
use crate::store::{load_records, ConfigService, StoreSettings};
use crate::Error;
use datapath::linux::{HostNs, LinuxConfig, LinuxKernel};

/// How long a stopping agent gives its HA task to send the restart notice.
const RESTART_NOTICE_WITHIN: Duration = Duration::from_secs(1);

/// How long a restarted agent waits, before its first datapath pass and election, for the peers
/// its last life saw alive to be alive in its view again (see [`Readiness`]).
const REMEMBERED_PEERS_WAIT: Duration = Duration::from_secs(10);

/// How often the reconciler re-checks the kernel without a view change.
const DATAPATH_RESYNC: Duration = Duration::from_secs(30);

pub use crate::reload::verify_identity;

/// How often the revocation list file is looked at.
const CRL_POLL: Duration = Duration::from_secs(1);

/// Re-reads the revocation list when its file changes; applies it to every verifier, closes the
/// revoked peers' connections and stops accepting their gossip (the view then excludes them). A
/// list that does not parse is logged and the previous one kept.
async fn watch_crl(path: PathBuf, revocation: Arc<Revocation>, evictor: Evictor) {
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(CRL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::files::read_limited("revocation list", &path, MAX_CRL_BYTES)
            .ok()
            .flatten();
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        let crl = match Crl::parse(last.as_deref().unwrap_or_default()) {
            Ok(c) => c,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "revocation list unreadable; keeping the previous one");
                continue;
            }
        };
        if let Err(e) = revocation.update(&crl) {
            warn!(error = %e, "revocation list refused; keeping the previous one");
            continue;
        }
        let cut = evictor.evict(&revocation);
        info!(number = crl.number(), revoked = crl.len(), closed = ?cut.connections,
            node_lives = cut.node_lives.len(), "revocation list applied");
    }
}

/// The facts this node publishes.
pub fn facts_of(config: &Config) -> Result<NodeFacts, Error> {
    Ok(NodeFacts::new(
        config.node_id.clone(),
        config.mode,
        config.tunnel_ip,
        dvr_mac_for(&config.node_id),
        config.snat_priority,
        config.external.clone(),
    )?)
}

/// How the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGINT or SIGTERM.
    Stopped,
    /// A new certificate was checked and asked for (`agent reload-cert`, SIGHUP): the caller
    /// re-executes the agent ([`crate::reload::reexec`]).
    Reload,
}

/// Runs the agent until SIGINT or SIGTERM, or a certificate reload (`Ok`), or until one of its
/// tasks ends (`Err`).
pub async fn run(config: Config) -> Result<Exit, Error> {
    let span = info_span!("node", id = %config.node_id);
    run_inner(config).instrument(span).await
}

async fn run_inner(config: Config) -> Result<Exit, Error> {
    let creds = verify_identity(&config)?;
    create_private_dir(&config.data_dir)?;
    let draining = config.data_dir.join(ha::DRAIN_FILE).exists();
    let facts = facts_of(&config)?.with_draining(draining);
    if draining {
        info!("this node is drained (agent undrain to take part in SNAT elections again)");
    }
    let remembered = peers::load(&config.data_dir);
    let mut tasks = Tasks::default();
    let mesh = start_mesh(&config, &creds, &facts, &remembered, &mut tasks).await?;
    let readiness = readiness_of(&config, &remembered);
    let (ha, ha_task) = ha::spawn(
        config.node_id.clone(),
        facts,
        mesh.view.clone(),
        mesh.own.clone(),
        mesh.datagrams,
        ha_settings(&config, &creds, readiness.clone())?,
    );
    tasks.add("SNAT election", ha_task);
    let instruments = Instruments::default();
    let datapath_parts = DatapathParts {
        view: &mesh.view,
        store: &mesh.store,
        ha: &ha,
        readiness,
        instruments: &instruments,
    };
    let reconciler = start_datapath(&config, datapath_parts).map(|(reconciler, task)| {
        tasks.add("datapath reconciler", task);
        reconciler
    });
    if config.datapath == DatapathMode::Linux {
        let server = crate::dhcp::spawn(
            config.node_id.clone(),
            mesh.view.clone(),
            config.dhcp_lease,
            instruments.clone(),
        );
        tasks.add("DHCP server", server);
        let metadata = crate::metadata::spawn(
            config.node_id.clone(),
            mesh.view.clone(),
            config.netns_dir.clone(),
        );
        tasks.add("metadata service", metadata);
    }
    let ctx = ApiContext {
        view: mesh.view.clone(),
        stats: Some(mesh.transport.stats()),
        peers: Some(mesh.transport.directory()),
        trust: Some(mesh.transport.trust()),
        store: Some(mesh.store.clone()),
        reconciler,
        ha: Some(ha.clone()),
        instruments: instruments.clone(),
        reload: Some(CertReload::new(config.clone())),
    };
    let reload = ctx.reload.clone();
    if let Err(e) = start_metrics(&config, &ctx, &instruments, &mut tasks).await {
        tasks.abort_all();
        let _ = mesh.chitchat.shutdown().await;
        return Err(e);
    }
    let served = api::serve(&config.api_socket, ctx).await;
    let (api_task, socket_guard) = match served {
        Ok(x) => x,
        Err(e) => {
            tasks.abort_all();
            let _ = mesh.chitchat.shutdown().await;
            return Err(e);
        }
    };
    tasks.add("API server", api_task);
    info!(
        listen = %config.listen, advertise = %config.advertise, mode = %config.mode,
        generation = mesh.generation, restored = mesh.restored,
        api = %config.api_socket.display(), "agent running"
    );
    let outcome = tokio::select! {
        _ = wait_for_shutdown_signal() => {
            info!("shutting down");
            // With a restart hold, the routers this node holds stay with it while it restarts.
            if tokio::time::timeout(RESTART_NOTICE_WITHIN, ha.announce_restart()).await.is_err() {
                warn!("the restart notice was not sent in time");
            }
            Ok(Exit::Stopped)
        }
        () = wait_for_reload(reload) => {
            info!("re-executing with the new certificate");
            Ok(Exit::Reload)
        }
        (name, why) = tasks.first_to_end() => {
            error!(task = name, reason = %why, "a task of the agent ended; stopping");
            Err(Error::TaskEnded { task: name, reason: why })
        }
    };
    // The kernel state stays as it is: a restarted agent finds it in sync and traffic never stops.
    tasks.abort_all();
    drop(socket_guard);
    let _ = mesh.chitchat.shutdown().await;
    mesh.transport.close().await;
    outcome
}

/// The running mesh: transport, gossip, the view and the store on top of it.
struct Mesh {
    transport: QuicTransport,
    datagrams: DatagramPort,
    chitchat: chitchat::ChitchatHandle,
    own: OwnState,
    view: ViewHandle,
    store: Arc<ConfigService>,
    generation: u64,
    restored: usize,
}

/// Starts the transport, gossip (with this node's facts, certificate and persisted records), the
/// view writer, replication and the peer recorder.
async fn start_mesh(
    config: &Config,
    creds: &Credentials,
    facts: &NodeFacts,
    remembered: &[String],
    tasks: &mut Tasks,
) -> Result<Mesh, Error> {
    let generation = gossip::next_generation(&config.data_dir)?;
    let settings = GossipSettings {
        node_id: config.node_id.clone(),
        generation,
        listen: config.listen,
        advertise: config.advertise,
        seeds: seeds_with(config, remembered),
        cluster_id: config.cluster_id.clone(),
        gossip_interval: config.gossip_interval,
        dead_node_grace_period: gossip::DEFAULT_DEAD_NODE_GRACE,
        failure_window: gossip::DEFAULT_FAILURE_WINDOW,
    };
    let transport = QuicTransport::new(creds, settings.chitchat_id())?;
    let datagrams = transport
        .datagrams()
        .ok_or_else(|| Error::Transport("datagram port already taken".into()))?;
    let records = load_records(&config.data_dir)?;
    let restored = records.len();
    let signer = Arc::new(creds.signer()?);
    let cert = creds.published_cert()?;
    let chitchat = gossip::start(&settings, &signer, cert, facts, records, &transport).await?;
    if let Some(accepting) = transport.accept_task() {
        tasks.add("gossip accept loop", accepting);
    }
    let own = OwnState::new(chitchat.chitchat(), signer, settings.chitchat_id());
    let (view, view_task) = view::spawn_writer(
        chitchat.chitchat(),
        config.node_id.clone(),
        config.gossip_interval,
        Arc::new(creds.peer_certs()?),
        config.max_clock_skew,
        config.tenancy_writers,
    );
    tasks.add("view writer", view_task);
    let store = ConfigService::new(
        config.node_id.clone(),
        own.clone(),
        view.clone(),
        StoreSettings {
            writers: config.tenancy_writers,
            ..StoreSettings::for_gossip_interval(
                config.gossip_interval,
                Some(config.data_dir.clone()),
            )
        },
    );
    let replication = tokio::spawn(store.clone().run_replication().in_current_span());
    tasks.add("replication", replication);
    let recorder = peers::spawn_recorder(
        view.clone(),
        config.node_id.clone(),
        config.data_dir.clone(),
    );
    tasks.add("peer recorder", recorder);
    if let Some(path) = &config.tls.crl {
        let watcher = watch_crl(path.clone(), creds.revocation(), transport.evictor());
        tasks.add(
            "revocation list watcher",
            tokio::spawn(watcher.in_current_span()),
        );
    }
    Ok(Mesh {
        transport,
        datagrams,
        chitchat,
        own,
        view,
        store,
        generation,
        restored,
    })
}

/// The election's settings from the configuration.
fn ha_settings(
    config: &Config,
    creds: &Credentials,
    readiness: Readiness,
) -> Result<HaSettings, Error> {
    Ok(HaSettings {
        election: ElectionConfig {
            advert_interval: config.advert_interval,
            multiplier: config.advert_multiplier,
            min_multiplier: config.advert_multiplier_min,
        },
        readiness,
        notice_ttl: (config.gossip_interval * 10).max(Duration::from_secs(2)),
        data_dir: Some(config.data_dir.clone()),
        signer: Arc::new(creds.signer()?),
        probe_gateways: config.datapath == DatapathMode::Linux,
        restart_hold: config.snat_restart_hold,
    })
}

/// The agent's long-lived tasks, by name.
#[derive(Default)]
struct Tasks {
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    fn add(&mut self, name: &'static str, task: JoinHandle<()>) {
        self.running.push((name, task));
    }

    /// The first task to end, and why (a panic's message, or that it returned). Pending while
    /// all run. Called once: the agent stops after it.
    async fn first_to_end(&mut self) -> (&'static str, String) {
        std::future::poll_fn(|cx| {
            for (name, task) in self.running.iter_mut() {
                if let Poll::Ready(result) = Pin::new(task).poll(cx) {
                    let why = match result {
                        Ok(()) => "it returned".to_string(),
                        Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e)),
                        Err(e) => format!("it was cancelled: {e}"),
                    };
                    return Poll::Ready((*name, why));
                }
            }
            Poll::Pending
        })
        .await
    }

    fn abort_all(&self) {
        for (_, t) in &self.running {
            t.abort();
        }
    }
}

/// The message a panicking task left, if it was text.
fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// The configured seeds plus the peers remembered from the last life (see [`peers`]).
fn seeds_with(config: &Config, remembered: &[String]) -> Vec<String> {
    let mut seeds = config.seeds.clone();
    let me = config.advertise.to_string();
    for p in remembered {
        if *p != me && !seeds.contains(p) {
            seeds.push(p.clone());
        }
    }
    seeds
}

/// When the reconciler and the election may act on the view (see [`Readiness`]): peers are
/// expected when a seed other than this node is configured, or when the last life saw some.
fn readiness_of(config: &Config, remembered: &[String]) -> Readiness {
    let me = config.advertise.to_string();
    Readiness {
        expect_peers: config.seeds.iter().chain(remembered).any(|s| *s != me),
        remembered: remembered
            .iter()
            .filter_map(|p| p.parse::<std::net::SocketAddr>().ok())
            .filter(|p| *p != config.advertise)
            .collect(),
        remembered_wait: REMEMBERED_PEERS_WAIT,
        settle: (config.gossip_interval * 5).max(Duration::from_secs(1)),
        max_wait: Duration::from_secs(30),
    }
}

/// What the datapath reconciler is started with, besides the configuration.
struct DatapathParts<'a> {
    view: &'a ViewHandle,
    store: &'a Arc<ConfigService>,
    ha: &'a HaHandle,
    readiness: Readiness,
    instruments: &'a Instruments,
}

/// Starts the datapath reconciler when this node programs its kernel.
fn start_datapath(
    config: &Config,
    parts: DatapathParts<'_>,
) -> Option<(Arc<Reconciler>, JoinHandle<()>)> {
    match config.datapath {
        DatapathMode::Off => {
            info!("datapath = off: not programming the kernel");
            None
        }
        DatapathMode::Linux => {
            let backend = LinuxKernel::new(LinuxConfig {
                host: HostNs::Current,
                netns_dir: config.netns_dir.clone(),
                ..LinuxConfig::default()
            });
            let kernel: SharedKernel = Arc::new(std::sync::Mutex::new(Box::new(backend)));
            let r = Reconciler::new(ReconcilerParts {
                me: config.node_id.clone(),
                view: parts.view.clone(),
                holders: Some(parts.ha.holders()),
                kernel,
                store: parts.store.clone(),
                resync: DATAPATH_RESYNC,
                readiness: parts.readiness,
                instruments: parts.instruments.clone(),
            });
            let task = tokio::spawn(r.clone().run().in_current_span());
            Some((r, task))
        }
    }
}

/// Serves metrics and health on `metrics_listen`, when it is set; a port that cannot be bound
/// stops the start (an operator who asked for metrics would otherwise scrape nothing).
async fn start_metrics(
    config: &Config,
    ctx: &ApiContext,
    instruments: &Instruments,
    tasks: &mut Tasks,
) -> Result<(), Error> {
    let Some(listen) = config.metrics_listen else {
        return Ok(());
    };
    let listener = metrics::http::bind(listen).await?;
    let sources = metrics::Sources {
        view: ctx.view.clone(),
        stats: ctx.stats.clone(),
        trust: ctx.trust.clone(),
        ha: ctx.ha.clone(),
        reconciler: ctx.reconciler.clone(),
    };
    let metrics = Arc::new(metrics::Metrics::new(sources, instruments));
    tasks.add(
        "metrics endpoint",
        tokio::spawn(metrics::http::serve(listener, metrics).in_current_span()),
    );
    Ok(())
}

/// Resolves when a new certificate was checked and asked for: through the API, or by SIGHUP
/// (whose certificate is checked here; a bad one is logged and the agent goes on with the old).
async fn wait_for_reload(reload: Option<CertReload>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Some(reload) = reload else {
        return std::future::pending().await;
    };
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => Some(h),
        Err(e) => {
            warn!(error = %e, "SIGHUP cannot be watched; reload-cert works through the API only");
            None
        }
    };
    loop {
        let hup_received = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = reload.requested() => return,
            Some(()) = hup_received => match reload.check() {
                Ok(c) => {
                    info!(serial = %c.serial, "SIGHUP: new certificate checked");
                    return;
                }
                Err(e) => error!(error = %e, "SIGHUP: the new certificate is refused; keeping the running one"),
            },
        }
    }
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating data_dir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_named_with_why() {
        let mut tasks = Tasks::default();
        tasks.add(
            "sleeper",
            tokio::spawn(tokio::time::sleep(Duration::from_secs(60))),
        );
        tasks.add(
            "crasher",
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                panic!("boom");
            }),
        );
        let (name, why) = tokio::time::timeout(Duration::from_secs(5), tasks.first_to_end())
            .await
            .expect("a task ended");
        assert_eq!(name, "crasher");
        assert_eq!(why, "it panicked: boom");
        tasks.abort_all();
        let mut quiet = Tasks::default();
        quiet.add("returner", tokio::spawn(async {}));
        assert_eq!(
            quiet.first_to_end().await,
            ("returner", "it returned".into())
        );
    }
}
