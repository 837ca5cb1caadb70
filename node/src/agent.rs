//! The agent's lifecycle: check identity, publish facts, gossip, keep the view, serve the API.
//!
//! This module only wires the libraries together; each piece lives in its own module.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_proto::{dvr_mac_for, NodeFacts};
use tracing::{info, info_span, Instrument};

use crate::api::{self, ApiContext};
use crate::config::{Config, DatapathMode};
use crate::election::ElectionConfig;
use crate::gossip::{self, GossipSettings};
use crate::ha::{self, HaHandle, HaSettings};
use crate::peers;
use crate::reconcile::{Readiness, Reconciler, SharedKernel};
use crate::signing::KEY_CERT;
use crate::store::service::{load_records, ConfigService, StoreSettings};
use crate::tls::Credentials;
use crate::transport::QuicTransport;
use crate::{view, Error};
use datapath::linux::{HostNs, LinuxConfig, LinuxKernel};

/// File under `data_dir` holding the last gossip generation used.
const GENERATION_FILE: &str = "generation";

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
    let generation = next_generation(&config.data_dir)?;
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

/// A gossip generation larger than any this node used before: the wall clock in milliseconds, or
/// one more than the last one persisted if the clock went backwards.
fn next_generation(data_dir: &Path) -> Result<u64, Error> {
    let path = data_dir.join(GENERATION_FILE);
    let last = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let generation = now.max(last + 1);
    write_atomic(&path, generation.to_string().as_bytes())?;
    Ok(generation)
}

/// Writes a file through a temporary file and a rename, so readers see the old or the new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("writing", &tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_increase_even_if_the_clock_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = next_generation(dir.path()).unwrap();
        std::fs::write(
            dir.path().join(GENERATION_FILE),
            (a + 1_000_000).to_string(),
        )
        .unwrap();
        let b = next_generation(dir.path()).unwrap();
        assert_eq!(b, a + 1_000_001);
    }
}
