//! The I/O shell of the replicated tenant configuration ([`crate::tenant`] is its pure half):
//! requests in, records published in this node's gossip key space.
//!
//! - this module: the service, its clock and ids, publishing and waiting for the view;
//! - [`allocate`]: objects that need addresses or MACs (ports, floating IPs, router gateways, a
//!   node's FIP gateway port);
//! - [`claims`]: claiming addresses and MACs: claim, wait the window, keep or retry;
//! - [`replication`]: publishing and withdrawing what rendezvous ranking asks of this node;
//! - [`persist`]: the records file under `data_dir`, so a restart re-announces them.

mod allocate;
mod claims;
mod persist;
mod replication;

pub use persist::{load_records, RECORDS_FILE};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_proto::{Hlc, NodeId, ObjectId, ObjectKind, Record, Version};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::warn;

use crate::mesh::own::OwnState;
use crate::mesh::view::ViewHandle;
use crate::tenant::ops::{self, ConfigRequest, Outcome, Write};
use crate::tenant::TenantState;

/// How long a write waits to show up in the local view.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Timing of the store.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// How long a claim waits for concurrent claims to arrive before it is decided.
    pub claim_window: Duration,
    /// How long a tombstone is kept (longer than the longest partition tolerated).
    pub tombstone_ttl: Duration,
    /// How often replication duties are re-checked even without a view change.
    pub resync: Duration,
    /// Where published records are persisted; `None` keeps nothing (simulations).
    pub data_dir: Option<PathBuf>,
}

impl StoreSettings {
    /// Settings derived from the gossip interval: the claim window is eight gossip rounds (at
    /// least 500 ms), tombstones live a day.
    pub fn for_gossip_interval(gossip: Duration, data_dir: Option<PathBuf>) -> Self {
        StoreSettings {
            claim_window: (gossip * 8).max(Duration::from_millis(500)),
            tombstone_ttl: Duration::from_secs(24 * 3600),
            resync: gossip,
            data_dir,
        }
    }
}

/// The store of one node.
pub struct ConfigService {
    me: NodeId,
    own: OwnState,
    view: ViewHandle,
    hlc: std::sync::Mutex<Hlc>,
    /// One write at a time on this node (claim windows included).
    writes: Mutex<()>,
    settings: StoreSettings,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ConfigService {
    /// A store publishing in this node's key space (`own`) and reading `view`.
    pub fn new(me: NodeId, own: OwnState, view: ViewHandle, settings: StoreSettings) -> Arc<Self> {
        Arc::new(ConfigService {
            me,
            own,
            view,
            hlc: std::sync::Mutex::new(Hlc::default()),
            writes: Mutex::new(()),
            settings,
        })
    }

    fn version(&self, seen: &TenantState) -> Version {
        let mut hlc = self.hlc.lock().unwrap_or_else(|p| p.into_inner());
        hlc.observe(seen.max_hlc);
        Version {
            hlc: hlc.now(wall_ms()),
            writer: self.me.clone(),
        }
    }

    /// A fresh id: the kind's tag and 48 random bits (not derived from the clock, which a peer's
    /// timestamps move, so two writes never share an id by a clock's doing).
    fn new_id(&self, kind: ObjectKind, _seen: &TenantState) -> ObjectId {
        use ring::rand::SecureRandom as _;
        let mut bytes = [0u8; 8];
        if ring::rand::SystemRandom::new()
            .fill(&mut bytes[2..])
            .is_err()
        {
            // The system RNG does not fail on Linux; should it, the clock still gives an id.
            bytes = wall_ms().to_be_bytes();
        }
        // A tag and 12 hex digits: valid by construction.
        ObjectId::new(format!(
            "{}-{:012x}",
            kind.tag(),
            u64::from_be_bytes(bytes) & 0xffff_ffff_ffff
        ))
        .unwrap_or_else(|_| unreachable!())
    }

    /// Handles one operator request; returns its JSON result or an error message. A refused
    /// request has published nothing.
    pub async fn handle(&self, req: ConfigRequest) -> Result<Value, String> {
        let _one_at_a_time = self.writes.lock().await;
        let view = self.view.load();
        let tenant = &view.tenant;
        let mut new_id = |k| self.new_id(k, tenant);
        match ops::plan(tenant, &self.me, &req, &mut new_id, wall_ms())? {
            Outcome::Read(v) => Ok(v),
            Outcome::Writes(writes) => self.apply_writes(tenant, writes).await,
            Outcome::Port(plan) => self.create_port(plan).await,
            Outcome::Fip(plan) => self.create_fip(plan).await,
            Outcome::Router(spec) => self.allocate_router(spec).await,
        }
    }

    async fn apply_writes(&self, seen: &TenantState, writes: Vec<Write>) -> Result<Value, String> {
        let mut records = Vec::new();
        let mut out = Vec::new();
        for w in writes {
            let v = self.version(seen);
            match w {
                Write::Put(obj) => {
                    out.push(ops::object_json(&obj));
                    records.push(Record::object(obj, v));
                }
                Write::Delete(kind, id) => {
                    out.push(serde_json::json!({"deleted": id.as_str(), "kind": kind}));
                    records.push(Record::tombstone(kind, id, v));
                }
            }
        }
        self.publish_records(&records).await?;
        let want: Vec<(ObjectKind, ObjectId, Version)> = records
            .iter()
            .map(|r| (r.kind(), r.id().clone(), r.version().clone()))
            .collect();
        self.wait_visible(|t| {
            want.iter()
                .all(|(k, id, v)| t.record(*k, id).is_some_and(|r| r.version() >= v))
        })
        .await;
        Ok(if out.len() == 1 {
            out.remove(0)
        } else {
            Value::Array(out)
        })
    }

    /// Publishes records in this node's key space, never replacing a newer version of the same key.
    async fn publish_records(&self, records: &[Record]) -> Result<(), String> {
        let mut encoded = Vec::with_capacity(records.len());
        for r in records {
            encoded.push((r, mesh_proto::encode_value(r).map_err(|e| e.to_string())?));
        }
        self.own
            .write(|st| {
                for (r, value) in encoded {
                    let key = r.key();
                    let current: Option<Record> =
                        st.get(&key).and_then(|v| mesh_proto::decode_value(v).ok());
                    if current.as_ref().is_none_or(|c| c.version() < r.version()) {
                        st.set(&key, &value);
                    }
                }
            })
            .await;
        self.persist().await;
        Ok(())
    }

    async fn set_keys(&self, kvs: &[(String, String)]) {
        self.own
            .write(|st| {
                for (k, v) in kvs {
                    st.set(k, v);
                }
            })
            .await;
    }

    async fn delete_keys(&self, keys: &[String]) {
        self.own
            .write(|st| {
                for k in keys {
                    st.delete(k);
                }
            })
            .await;
    }

    /// Waits until the view has been rebuilt at least once after now.
    async fn next_view(&self) {
        let mut rx = self.view.subscribe();
        rx.borrow_and_update();
        let _ = tokio::time::timeout(self.settings.resync * 3, rx.changed()).await;
    }

    async fn wait_visible(&self, done: impl Fn(&TenantState) -> bool) {
        let mut rx = self.view.subscribe();
        let deadline = tokio::time::Instant::now() + VISIBLE_TIMEOUT;
        loop {
            if done(&self.view.load().tenant) {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                warn!("a write did not show up in the local view in time");
                return;
            }
        }
    }
}
