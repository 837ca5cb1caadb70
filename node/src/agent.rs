//! The agent's lifecycle: check identity, publish facts, gossip, keep the view, serve the API.
//!
//! This module only wires the libraries together; each piece lives in its own module.

use std::path::Path;

use mesh_proto::{dvr_mac_for, NodeFacts};
use tracing::{info, info_span, Instrument};

use crate::api::{self, ApiContext};
use crate::config::{Config, DatapathMode};
use crate::ha::election::ElectionConfig;
use crate::ha::{self, HaHandle, HaSettings};
use crate::mesh::gossip::{self, GossipSettings};
use crate::mesh::keys::KEY_CERT;
use crate::mesh::peers;
use crate::mesh::pki::Credentials;
use crate::mesh::transport::QuicTransport;
use crate::mesh::view::{self, Readiness};
use crate::reconcile::{Reconciler, SharedKernel};
use crate::store::{load_records, ConfigService, StoreSettings};
use crate::Error;
use datapath::linux::{HostNs, LinuxConfig, LinuxKernel};

/// Checks that the configuration and the certificate name the same node; loads the credentials.
pub fn verify_identity(config: &Config) -> Result<Credentials, Error> {
    let creds = Credentials::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    if creds.node_id != config.node_id {
        return Err(Error::IdentityMismatch {
            configured: config.node_id.to_string(),
            certified: creds.node_id.to_string(),
        });
    }
    Ok(creds)
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

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), Error> {
    let span = info_span!("node", id = %config.node_id);
    run_inner(config).instrument(span).await
}

async fn run_inner(config: Config) -> Result<(), Error> {
    let creds = verify_identity(&config)?;
    create_private_dir(&config.data_dir)?;
    let draining = config.data_dir.join(ha::DRAIN_FILE).exists();
    let facts = facts_of(&config)?.with_draining(draining);
    if draining {
        info!("this node is drained (agent undrain to take part in SNAT elections again)");
    }
    let generation = gossip::next_generation(&config.data_dir)?;
    let remembered = peers::load(&config.data_dir);
    let transport = QuicTransport::new(&creds)?;
    let datagrams = transport
        .datagrams()
        .ok_or_else(|| Error::Transport("datagram port already taken".into()))?;
    let settings = GossipSettings {
        node_id: config.node_id.clone(),
        generation,
        listen: config.listen,
        advertise: config.advertise,
        seeds: seeds_with(&config, &remembered),
        cluster_id: config.cluster_id.clone(),
        gossip_interval: config.gossip_interval,
        dead_node_grace_period: gossip::DEFAULT_DEAD_NODE_GRACE,
    };
    let records = load_records(&config.data_dir)?;
    let restored = records.len();
    let signer = std::sync::Arc::new(creds.signer()?);
    let mut keys = records;
    keys.push((KEY_CERT.to_string(), creds.published_cert()?));
    let chitchat = gossip::start(&settings, &facts, keys, &transport).await?;
    let (view, view_task) = view::spawn_writer(
        chitchat.chitchat(),
        config.node_id.clone(),
        config.gossip_interval,
        std::sync::Arc::new(creds.peer_certs()?),
    );
    let store = ConfigService::new(
        config.node_id.clone(),
        chitchat.chitchat(),
        view.clone(),
        StoreSettings::for_gossip_interval(config.gossip_interval, Some(config.data_dir.clone())),
    );
    let replication_task = tokio::spawn(store.clone().run_replication().in_current_span());
    let readiness = readiness_of(&config, &remembered);
    let peers_task = peers::spawn_recorder(
        view.clone(),
        config.node_id.clone(),
        config.data_dir.clone(),
    );
    let (ha, ha_task) = ha::spawn(
        config.node_id.clone(),
        facts.clone(),
        view.clone(),
        chitchat.chitchat(),
        datagrams,
        HaSettings {
            election: ElectionConfig {
                advert_interval: config.advert_interval,
                multiplier: config.advert_multiplier,
            },
            readiness: readiness.clone(),
            notice_ttl: (config.gossip_interval * 10).max(std::time::Duration::from_secs(2)),
            data_dir: Some(config.data_dir.clone()),
            signer,
            probe_gateways: config.datapath == DatapathMode::Linux,
        },
    );
    let reconciler = start_datapath(&config, &view, &store, &ha, readiness);
    let ctx = ApiContext {
        view,
        stats: Some(transport.stats()),
        peers: Some(transport.directory()),
        store: Some(store),
        reconciler: reconciler.as_ref().map(|(r, _)| r.clone()),
        ha: Some(ha),
    };
    let (api_task, socket_guard) = match api::serve(&config.api_socket, ctx).await {
        Ok(x) => x,
        Err(e) => {
            view_task.abort();
            replication_task.abort();
            peers_task.abort();
            ha_task.abort();
            if let Some((_, task)) = &reconciler {
                task.abort();
            }
            let _ = chitchat.shutdown().await;
            return Err(e);
        }
    };
    info!(
        listen = %config.listen, advertise = %config.advertise, mode = %config.mode,
        generation, restored, api = %config.api_socket.display(), "agent running"
    );
    wait_for_shutdown_signal().await;
    info!("shutting down");
    api_task.abort();
    replication_task.abort();
    peers_task.abort();
    ha_task.abort();
    view_task.abort();
    // The kernel state stays as it is: a restarted agent finds it in sync and traffic never stops.
    if let Some((_, task)) = &reconciler {
        task.abort();
    }
    drop(socket_guard);
    let _ = chitchat.shutdown().await;
    Ok(())
}

/// How often the reconciler re-checks the kernel without a view change.
const DATAPATH_RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

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
        settle: (config.gossip_interval * 5).max(std::time::Duration::from_secs(1)),
        max_wait: std::time::Duration::from_secs(30),
    }
}

/// Starts the datapath reconciler when this node programs its kernel.
fn start_datapath(
    config: &Config,
    view: &view::ViewHandle,
    store: &std::sync::Arc<ConfigService>,
    ha: &HaHandle,
    readiness: Readiness,
) -> Option<(std::sync::Arc<Reconciler>, tokio::task::JoinHandle<()>)> {
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
            let kernel: SharedKernel =
                std::sync::Arc::new(std::sync::Mutex::new(Box::new(backend)));
            let r = Reconciler::new(
                config.node_id.clone(),
                view.clone(),
                Some(ha.holders()),
                kernel,
                store.clone(),
                DATAPATH_RESYNC,
                readiness,
            );
            let task = tokio::spawn(r.clone().run().in_current_span());
            Some((r, task))
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
