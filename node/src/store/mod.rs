//! The I/O shell of the replicated tenant configuration ([`crate::tenant`] is its pure half):
//! requests in, records published in this node's gossip key space.
//!
//! - this module: the service, its clock and ids, publishing and waiting for the view;
//! - [`allocate`]: objects that need addresses or MACs (ports, floating IPs, router gateways, a
//!   node's FIP gateway port);
//! - [`blocks`]: this node's address and MAC blocks: values handed out with no wait, new blocks
//!   claimed ahead of need with a majority in view, duplicates after a partition re-addressed;
//! - [`claims`]: claiming single values (explicit ones, ones outside every block, VNIs and names): claim,
//!   wait the window, keep or retry;
//! - [`authorise`]: sealing tenant records by the operator behind a request;
//! - [`replication`]: publishing and withdrawing what rendezvous ranking asks of this node;
//! - [`persist`]: the records file under `data_dir`, so a restart re-announces them.

mod allocate;
mod authorise;
mod blocks;
mod claims;
mod persist;
mod replication;

pub use authorise::{OperatorSession, SealRequest};
pub use blocks::Readdressed;
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
use crate::tenant::{TenantState, Writers};

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
    /// Who may write tenant configuration.
    pub writers: Writers,
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
            writers: Writers::AnyNode,
        }
    }
}

/// The store of one node.
pub struct ConfigService {
    me: NodeId,
    own: OwnState,
    view: ViewHandle,
    hlc: std::sync::Mutex<Hlc>,
    /// One write at a time on this node (claim windows included), except port creation, which
    /// allocates from this node's blocks and runs concurrently.
    writes: Mutex<()>,
    /// This node's blocks: reservations, confirmations, the refill queue.
    blocks: blocks::BlockBook,
    /// The records file's group commit.
    persisting: persist::PersistGate,
    /// The operator behind the write in progress, if it came with a credential (set and cleared
    /// under `writes`).
    session: std::sync::Mutex<Option<OperatorSession>>,
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
            blocks: blocks::BlockBook::default(),
            persisting: persist::PersistGate::default(),
            session: std::sync::Mutex::new(None),
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

    /// Handles one request without an operator credential; returns its JSON result or an error
    /// message. A refused request has published nothing.
    pub async fn handle(&self, req: ConfigRequest) -> Result<Value, String> {
        self.handle_as(req, None).await
    }

    /// Handles one request; the tenant records it causes are sealed by `operator` when given.
    /// When only operators may write, a request that writes configuration without one is
    /// refused before anything is claimed.
    pub async fn handle_as(
        &self,
        req: ConfigRequest,
        operator: Option<OperatorSession>,
    ) -> Result<Value, String> {
        if operator.is_none()
            && self.settings.writers == Writers::Operators
            && ops::writes_configuration(&req)
        {
            return Err(authorise::operators_only());
        }
        // A port is written by its own node and sealed by nobody else: it takes values from this
        // node's blocks, and many run at once, outside the write lock.
        if matches!(req, ConfigRequest::PortCreate { .. }) {
            return self.handle_locked(req).await;
        }
        if let ConfigRequest::Show {
            kind: ObjectKind::Port,
            ..
        } = &req
        {
            return self
                .handle_locked(req)
                .await
                .map(|port| self.with_readdressed(port));
        }
        let _one_at_a_time = self.writes.lock().await;
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = operator;
        let result = self.handle_locked(req).await;
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
        result
    }

    /// Plans and carries out one request (under the write lock, except port creation).
    async fn handle_locked(&self, req: ConfigRequest) -> Result<Value, String> {
        let view = self.view.load();
        let tenant = &view.tenant;
        let mut new_id = |k| self.new_id(k, tenant);
        match ops::plan(tenant, &self.me, &req, &mut new_id, wall_ms())? {
            Outcome::Read(v) => Ok(v),
            Outcome::Writes(writes) => self.apply_writes(tenant, writes).await,
            Outcome::Port(plan) => self.create_port(plan).await,
            Outcome::Fip(plan) => self.create_fip(plan).await,
            Outcome::Router(spec) => self.allocate_router(spec).await,
            Outcome::Unique(plan) => self.create_unique(plan).await,
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
        self.publish_authorised(&records).await?;
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
        self.view.poke();
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
        self.view.poke();
    }

    async fn delete_keys(&self, keys: &[String]) {
        self.own
            .write(|st| {
                for k in keys {
                    st.delete(k);
                }
            })
            .await;
        self.view.poke();
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
