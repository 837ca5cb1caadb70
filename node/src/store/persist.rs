//! The records this node publishes, kept under `data_dir` so a restarted agent re-announces them
//! in the same breath as it reappears.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_proto::{AddressBlock, Record};
use tracing::warn;

use super::ConfigService;

/// File under `data_dir` holding the records this node publishes.
pub const RECORDS_FILE: &str = "records.json";
/// Largest records file loaded.
const MAX_RECORDS_FILE: u64 = 64 << 20;

/// Group commit of the records file: every caller of [`ConfigService::persist`] has its writes
/// on disk when it returns, and callers that arrive while a write runs share the next one.
#[derive(Default)]
pub(super) struct PersistGate {
    /// Persist calls so far (each after its own writes).
    requested: AtomicU64,
    /// The number of calls the last completed write covered.
    covered: AtomicU64,
    /// One write at a time (a stale snapshot must not overwrite a newer one).
    writing: tokio::sync::Mutex<()>,
}

impl ConfigService {
    /// Writes the records and blocks this node publishes to `data_dir`, atomically; returns once
    /// a write that began after this call's own writes is on disk.
    pub(super) async fn persist(&self) {
        let Some(dir) = &self.settings.data_dir else {
            return;
        };
        let gate = &self.persisting;
        let mine = gate.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _one_at_a_time = gate.writing.lock().await;
        if gate.covered.load(Ordering::SeqCst) >= mine {
            // A write that started after this call was made covered it.
            return;
        }
        // Every call counted so far made its writes before it was counted: this snapshot has them.
        let covers = gate.requested.load(Ordering::SeqCst);
        let entries: Vec<(String, String)> = self
            .own
            .write(|st| {
                st.entries()
                    .filter(|(k, _)| k.starts_with("o/") || k.starts_with("b/"))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .await;
        let data = match serde_json::to_vec(&entries) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "cannot serialise records");
                return;
            }
        };
        let path = dir.join(RECORDS_FILE);
        let written =
            tokio::task::spawn_blocking(move || crate::files::write_atomic(&path, &data)).await;
        match written {
            Ok(Ok(())) => gate.covered.store(covers, Ordering::SeqCst),
            Ok(Err(e)) => warn!(error = %e, "cannot persist records"),
            Err(e) => warn!(error = %e, "the records write did not finish"),
        }
    }
}

/// Loads the records and blocks a node persisted, keeping only entries that decode to a record
/// or a block stored under its own key. Returns them as gossip key/value pairs to publish at
/// start. (A records file written before blocks existed holds records only: nothing to migrate.)
pub fn load_records(data_dir: &Path) -> Result<Vec<(String, String)>, crate::Error> {
    let path = data_dir.join(RECORDS_FILE);
    let Some(data) = crate::files::read_limited("reading records", &path, MAX_RECORDS_FILE)? else {
        return Ok(Vec::new());
    };
    let entries: Vec<(String, String)> =
        serde_json::from_slice(&data).map_err(|e| crate::Error::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(entries
        .into_iter()
        .filter(|(k, v)| {
            let ok = if k.starts_with("b/") {
                mesh_proto::decode_value::<AddressBlock>(v).is_ok_and(|b| &b.key() == k)
            } else {
                mesh_proto::decode_value::<Record>(v).is_ok_and(|r| &r.key() == k)
            };
            if !ok {
                warn!(key = %k, "skipping an unreadable persisted record");
            }
            ok
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{
        BlockSpace, HlcTimestamp, Name, Network, NetworkSpec, NodeId, ObjectId, TenantObject,
        Version,
    };

    fn version() -> Version {
        Version {
            hlc: HlcTimestamp(1 << 20),
            writer: NodeId::new("n1").expect("id"),
        }
    }

    fn network_entry() -> (String, String) {
        let net = Network::new(NetworkSpec {
            id: ObjectId::new("net-1").expect("id"),
            name: Name::new("net1").expect("name"),
            vni: mesh_proto::Vni::new(101).expect("vni"),
            mtu: mesh_proto::Mtu::new(1450).expect("mtu"),
        })
        .expect("network");
        let rec = Record::object(TenantObject::Network(net), version());
        (rec.key(), mesh_proto::encode_value(&rec).expect("encode"))
    }

    fn write(dir: &Path, entries: &[(String, String)]) {
        let data = serde_json::to_vec(entries).expect("json");
        std::fs::write(dir.join(RECORDS_FILE), data).expect("write");
    }

    #[test]
    fn a_records_file_from_before_blocks_loads_as_it_is() {
        let dir = tempfile::tempdir().expect("dir");
        let entries = vec![network_entry()];
        write(dir.path(), &entries);
        assert_eq!(load_records(dir.path()).expect("load"), entries);
    }

    #[test]
    fn blocks_load_under_their_own_key_and_anything_else_is_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        let block = AddressBlock {
            space: BlockSpace::Mac,
            first: 0x100,
            len: 256,
            version: version(),
        };
        let good = (
            block.key(),
            mesh_proto::encode_value(&block).expect("encode"),
        );
        let moved = ("b/mac/000200".to_string(), good.1.clone());
        let garbage = ("o/network/x".to_string(), "not a record".to_string());
        write(dir.path(), &[network_entry(), good.clone(), moved, garbage]);
        assert_eq!(
            load_records(dir.path()).expect("load"),
            vec![network_entry(), good]
        );
    }

    #[test]
    fn an_unreadable_records_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(RECORDS_FILE), b"{ not json").expect("write");
        let e = load_records(dir.path()).expect_err("refused").to_string();
        assert!(e.contains(RECORDS_FILE), "{e}");
        let empty = tempfile::tempdir().expect("dir");
        assert!(load_records(empty.path()).expect("no file").is_empty());
    }
}
