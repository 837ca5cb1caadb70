//! The records this node publishes, kept under `data_dir` so a restarted agent re-announces them
//! in the same breath as it reappears.

use std::path::Path;

use mesh_proto::Record;
use tracing::warn;

use super::ConfigService;

/// File under `data_dir` holding the records this node publishes.
pub const RECORDS_FILE: &str = "records.json";
/// Largest records file loaded.
const MAX_RECORDS_FILE: u64 = 64 << 20;

impl ConfigService {
    /// Writes the records this node publishes to `data_dir`, atomically.
    pub(super) async fn persist(&self) {
        let Some(dir) = &self.settings.data_dir else {
            return;
        };
        let entries: Vec<(String, String)> = self
            .own
            .write(|st| {
                st.entries()
                    .filter(|(k, _)| k.starts_with("o/"))
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
        if let Err(e) = crate::files::write_atomic(&dir.join(RECORDS_FILE), &data) {
            warn!(error = %e, "cannot persist records");
        }
    }
}

/// Loads the records a node persisted, keeping only entries that decode to a record stored under
/// its own key. Returns them as gossip key/value pairs to publish at start.
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
            let ok = mesh_proto::decode_value::<Record>(v).is_ok_and(|r| &r.key() == k);
            if !ok {
                warn!(key = %k, "skipping an unreadable persisted record");
            }
            ok
        })
        .collect())
}
