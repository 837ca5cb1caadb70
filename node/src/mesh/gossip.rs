//! Starting chitchat for a node: its settings, the keys it publishes, and failure detection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::Transport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use mesh_proto::{NodeFacts, NodeId};

use crate::mesh::keys::{KEY_CERT, KEY_NODE_FACTS};
use crate::mesh::own::initial_values;
use crate::mesh::pki::Signer;
use crate::Error;

/// File under `data_dir` holding the last gossip generation used.
const GENERATION_FILE: &str = "generation";

/// What chitchat needs to run one node.
#[derive(Clone, Debug)]
pub struct GossipSettings {
    /// The node's id.
    pub node_id: NodeId,
    /// Increases on every start, so peers tell a restarted node from its previous life.
    pub generation: u64,
    /// Where the transport binds.
    pub listen: SocketAddr,
    /// Where peers reach the node.
    pub advertise: SocketAddr,
    /// Peers to contact first.
    pub seeds: Vec<String>,
    /// Shared by every node of the cluster.
    pub cluster_id: String,
    /// Gossip round interval.
    pub gossip_interval: Duration,
    /// How long a dead node's state is kept before it is forgotten.
    pub dead_node_grace_period: Duration,
    /// Heartbeat intervals the failure detector keeps per peer (each peer's window is
    /// allocated whole: 8 bytes an interval).
    pub failure_window: usize,
}

/// How long the agent keeps a dead node's state by default.
pub const DEFAULT_DEAD_NODE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The agent's failure detector window: 1 000 heartbeat intervals per peer (8 KB each).
pub const DEFAULT_FAILURE_WINDOW: usize = 1_000;

impl GossipSettings {
    /// This node life's chitchat id.
    pub fn chitchat_id(&self) -> ChitchatId {
        ChitchatId::new(self.node_id.as_str(), self.generation, self.advertise)
    }

    fn chitchat_config(&self) -> ChitchatConfig {
        ChitchatConfig {
            chitchat_id: self.chitchat_id(),
            cluster_id: self.cluster_id.clone(),
            gossip_interval: self.gossip_interval,
            listen_addr: self.listen,
            seed_nodes: self.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                sampling_window_size: self.failure_window,
                max_interval: self.gossip_interval * 20,
                initial_interval: self.gossip_interval,
                dead_node_grace_period: self.dead_node_grace_period,
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        }
    }
}

/// Starts gossip for a node that publishes its certificate `cert` (first, so that receivers can
/// check every other value against it), its `facts`, and the `extra` keys it persisted (its
/// records, as payloads), so a restarted node re-announces them in the same breath as it
/// reappears. Every value is sealed with `signer` for this life.
pub async fn start(
    settings: &GossipSettings,
    signer: &Signer,
    cert: String,
    facts: &NodeFacts,
    extra: Vec<(String, String)>,
    transport: &dyn Transport,
) -> Result<ChitchatHandle, Error> {
    let mut keys = vec![
        (KEY_CERT.to_string(), cert),
        (KEY_NODE_FACTS.to_string(), mesh_proto::encode_value(facts)?),
    ];
    keys.extend(extra);
    let keys = initial_values(signer, &settings.chitchat_id(), keys)?;
    spawn_chitchat(settings.chitchat_config(), keys, transport)
        .await
        .map_err(|e| Error::Transport(format!("{e:#}")))
}

/// A gossip generation larger than any this node used before: the wall clock in milliseconds, or
/// one more than the last one persisted if the clock went backwards.
pub fn next_generation(data_dir: &Path) -> Result<u64, Error> {
    let path = data_dir.join(GENERATION_FILE);
    let last = crate::files::read_limited("reading the last generation", &path, 64)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let generation = now.max(last.saturating_add(1));
    crate::files::write_atomic(&path, generation.to_string().as_bytes())?;
    Ok(generation)
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
