//! The peers this node last saw alive, remembered across restarts in `data_dir/peers.json`.
//!
//! They serve twice when the agent starts again: as extra gossip seeds (a node whose configured
//! seed is itself, like the first node of a cluster, still finds its peers at once), and as the
//! reason to wait for them (each of them, for a while) before the first datapath pass and
//! election. A restarted node whose view holds only itself, or lacks one of them, would otherwise
//! plan as if they were gone and tear down the tunnels, flood entries and remote MACs its previous
//! life programmed towards them, until gossip caught up.

use std::collections::BTreeSet;
use std::path::Path;

use tracing::{debug, warn};

use crate::mesh::view::ViewHandle;
use mesh_proto::NodeId;

/// File under `data_dir`.
pub const PEERS_FILE: &str = "peers.json";
/// A larger file is not read (it is not one dvrmesh wrote).
const MAX_FILE: u64 = 256 * 1024;
/// At most this many peers are remembered.
const MAX_PEERS: usize = 4096;

/// The gossip addresses remembered in `data_dir`; none when the file is missing, too large or
/// not a list of addresses (a warning says which).
pub fn load(data_dir: &Path) -> Vec<String> {
    let path = data_dir.join(PEERS_FILE);
    let parsed = match crate::files::read_limited("reading remembered peers", &path, MAX_FILE) {
        Ok(None) => return Vec::new(),
        Ok(Some(b)) => serde_json::from_slice::<Vec<String>>(&b).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match parsed {
        Ok(mut peers) => {
            peers.retain(|p| p.parse::<std::net::SocketAddr>().is_ok());
            peers.truncate(MAX_PEERS);
            peers
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "remembered peers unreadable; ignored");
            Vec::new()
        }
    }
}

/// Writes the gossip addresses of the live peers in `data_dir` whenever that set changes.
pub fn spawn_recorder(
    view: ViewHandle,
    me: NodeId,
    data_dir: std::path::PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = view.subscribe();
        let mut last: BTreeSet<String> = load(&data_dir).into_iter().collect();
        loop {
            let now: BTreeSet<String> = view
                .load()
                .alive()
                .filter(|m| *m.facts.node_id() != me)
                .map(|m| m.gossip_addr.to_string())
                .take(MAX_PEERS)
                .collect();
            // Forget nobody while alone: a node cut off keeps the addresses it will need.
            if now != last && !now.is_empty() {
                let list: Vec<&String> = now.iter().collect();
                match serde_json::to_vec(&list) {
                    Ok(data) => match crate::files::write_atomic(&data_dir.join(PEERS_FILE), &data)
                    {
                        Ok(()) => debug!(peers = now.len(), "remembered the live peers"),
                        Err(e) => warn!(error = %e, "cannot remember the live peers"),
                    },
                    Err(e) => warn!(error = %e, "cannot encode the live peers"),
                }
                last = now;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_peers_load_and_junk_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).is_empty(), "nothing remembered yet");
        let path = dir.path().join(PEERS_FILE);
        std::fs::write(
            &path,
            r#"["10.0.0.2:7000", "not an address", "10.0.0.3:7000"]"#,
        )
        .expect("write");
        assert_eq!(load(dir.path()), vec!["10.0.0.2:7000", "10.0.0.3:7000"]);
        std::fs::write(&path, "{ this is not json").expect("write");
        assert!(load(dir.path()).is_empty());
        std::fs::write(&path, vec![b' '; (MAX_FILE + 1) as usize]).expect("write");
        assert!(load(dir.path()).is_empty(), "an oversized file is not read");
    }
}
