//! The I/O shell of the replicated store: publishing through chitchat, address claims with their
//! waiting window, the replication loop, and persistence under `data_dir`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::Chitchat;
use mesh_proto::{
    AddressClaim, Hlc, MacClaim, NodeId, ObjectId, ObjectKind, Record, TenantObject, Version,
};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::mesh::view::ViewHandle;
use crate::tenant::ipam;
use crate::tenant::ops::{self, ConfigRequest, FipPlan, Outcome, PortPlan, Write};
use crate::tenant::replicate::{self, Duty};
use crate::tenant::TenantState;

/// File under `data_dir` holding the records this node publishes.
pub const RECORDS_FILE: &str = "records.json";
/// Largest records file loaded.
const MAX_RECORDS_FILE: u64 = 64 << 20;
/// How many times an allocation is retried after losing a claim.
const MAX_CLAIM_ATTEMPTS: u64 = 8;
/// How long a write waits to show up in the local view.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One value to allocate.
enum Want {
    /// An address of a subnet or external network pool.
    Address {
        pool: ObjectId,
        explicit: Option<std::net::Ipv4Addr>,
    },
    /// A MAC address.
    Mac {
        explicit: Option<mesh_proto::MacAddr>,
    },
}

/// One allocated value.
enum Got {
    Address(ObjectId, std::net::Ipv4Addr),
    Mac(mesh_proto::MacAddr),
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Got::Address(pool, ip) => write!(f, "{ip} in {pool}"),
            Got::Mac(m) => write!(f, "MAC {m}"),
        }
    }
}

/// What `claim_all` allocated, in the order asked.
struct Claimed(Vec<Got>);

impl Claimed {
    fn address(&self, i: usize) -> Option<std::net::Ipv4Addr> {
        match self.0.get(i) {
            Some(Got::Address(_, ip)) => Some(*ip),
            _ => None,
        }
    }
    fn mac(&self, i: usize) -> Option<mesh_proto::MacAddr> {
        match self.0.get(i) {
            Some(Got::Mac(m)) => Some(*m),
            _ => None,
        }
    }
}

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
    chitchat: Arc<Mutex<Chitchat>>,
    view: ViewHandle,
    hlc: std::sync::Mutex<Hlc>,
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
    /// A store publishing through `chitchat` and reading `view`.
    pub fn new(
        me: NodeId,
        chitchat: Arc<Mutex<Chitchat>>,
        view: ViewHandle,
        settings: StoreSettings,
    ) -> Arc<Self> {
        Arc::new(ConfigService {
            me,
            chitchat,
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

    fn new_id(&self, kind: ObjectKind, seen: &TenantState) -> ObjectId {
        let v = self.version(seen);
        let s = ipam::seed(self.me.as_str(), v.hlc, 0);
        // A tag and 12 hex digits: valid by construction.
        ObjectId::new(format!("{}-{:012x}", kind.tag(), s & 0xffff_ffff_ffff))
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

    async fn create_port(&self, plan: PortPlan) -> Result<Value, String> {
        let wants = [
            Want::Address {
                pool: plan.subnet.clone(),
                explicit: plan.ip,
            },
            Want::Mac { explicit: plan.mac },
        ];
        let (got, claims) = self.claim_all(&plan.id, &wants).await?;
        let (Some(ip), Some(mac)) = (got.address(0), got.mac(1)) else {
            return Err("internal: allocation returned the wrong shape".into());
        };
        let port = ops::finish_port(&plan, ip, mac)?;
        self.publish_after_claims(TenantObject::Port(port.clone()), &claims)
            .await?;
        info!(port = %port.id, ip = %ip, mac = %mac, "port created");
        Ok(ops::object_json(&TenantObject::Port(port)))
    }

    async fn create_fip(&self, plan: FipPlan) -> Result<Value, String> {
        let wants = [Want::Address {
            pool: plan.external_network.clone(),
            explicit: plan.ip,
        }];
        let (got, claims) = self.claim_all(&plan.id, &wants).await?;
        let ip = got
            .address(0)
            .ok_or("internal: allocation returned the wrong shape")?;
        let fip = ops::finish_fip(&plan, ip)?;
        self.publish_after_claims(TenantObject::FloatingIp(fip.clone()), &claims)
            .await?;
        Ok(ops::object_json(&TenantObject::FloatingIp(fip)))
    }

    /// Allocates a router's external address and missing SNAT ports, then publishes it.
    async fn allocate_router(&self, mut spec: mesh_proto::RouterSpec) -> Result<Value, String> {
        let Some(gw) = spec.gateway.clone() else {
            return Err("internal: router without gateway needs no allocation".into());
        };
        let mut wants = Vec::new();
        if gw.external_ip.is_none() {
            wants.push(Want::Address {
                pool: gw.external_network.clone(),
                explicit: None,
            });
        }
        let missing: Vec<ObjectId> = spec
            .interfaces
            .iter()
            .filter(|s| !spec.snat_ports.contains_key(*s))
            .cloned()
            .collect();
        for subnet in &missing {
            wants.push(Want::Address {
                pool: subnet.clone(),
                explicit: None,
            });
            wants.push(Want::Mac { explicit: None });
        }
        let (got, claims) = self.claim_all(&spec.id, &wants).await?;
        let mut i = 0;
        if let Some(g) = spec.gateway.as_mut().filter(|g| g.external_ip.is_none()) {
            g.external_ip = got.address(i);
            i += 1;
        }
        for subnet in missing {
            let (Some(ip), Some(mac)) = (got.address(i), got.mac(i + 1)) else {
                return Err("internal: allocation returned the wrong shape".into());
            };
            spec.snat_ports
                .insert(subnet, mesh_proto::SnatPort { ip, mac });
            i += 2;
        }
        let router = mesh_proto::Router::new(spec).map_err(|e| e.to_string())?;
        self.publish_after_claims(TenantObject::Router(router.clone()), &claims)
            .await?;
        Ok(ops::object_json(&TenantObject::Router(router)))
    }

    /// Makes sure this node has a FIP gateway port (`fg-`) on `external_network`: a port on the
    /// external network hosted here, with an address and MAC claimed like any other. Returns it.
    pub async fn ensure_fip_gateway(
        &self,
        external_network: &ObjectId,
    ) -> Result<mesh_proto::Port, String> {
        let _one_at_a_time = self.writes.lock().await;
        let view = self.view.load();
        if let Some(p) = view
            .tenant
            .ports()
            .find(|p| &p.network == external_network && p.host == self.me)
        {
            return Ok(p.clone());
        }
        if view
            .tenant
            .get(ObjectKind::ExternalNetwork, external_network)
            .is_none()
        {
            return Err(format!("no external network {external_network}"));
        }
        let id = self.new_id(ObjectKind::Port, &view.tenant);
        let wants = [
            Want::Address {
                pool: external_network.clone(),
                explicit: None,
            },
            Want::Mac { explicit: None },
        ];
        let (got, claims) = self.claim_all(&id, &wants).await?;
        let (Some(ip), Some(mac)) = (got.address(0), got.mac(1)) else {
            return Err("internal: allocation returned the wrong shape".into());
        };
        let name = mesh_proto::Name::new(format!("fg.{}.{}", self.me, external_network.short()))
            .map_err(|e| e.to_string())?;
        let port = mesh_proto::Port::new(mesh_proto::PortSpec {
            id,
            name,
            network: external_network.clone(),
            mac,
            fixed_ips: vec![ip],
            host: self.me.clone(),
            device: None,
            allowed_address_pairs: Vec::new(),
        })
        .map_err(|e| e.to_string())?;
        self.publish_after_claims(TenantObject::Port(port.clone()), &claims)
            .await?;
        info!(port = %port.id, ip = %ip, "FIP gateway port created");
        Ok(port)
    }

    /// Publishes an object whose addresses were just claimed, then withdraws the claims (in that
    /// order, so a peer sees the claim or the object, never neither), and waits until the local
    /// view shows it.
    async fn publish_after_claims(
        &self,
        obj: TenantObject,
        claims: &[String],
    ) -> Result<(), String> {
        let (kind, id) = (obj.kind(), obj.id().clone());
        let view = self.view.load();
        let rec = Record::object(obj, self.version(&view.tenant));
        self.publish_records(std::slice::from_ref(&rec)).await?;
        self.delete_keys(claims).await;
        let v = rec.version().clone();
        self.wait_visible(|t| t.record(kind, &id).is_some_and(|r| r.version() >= &v))
            .await;
        Ok(())
    }

    /// Claims addresses and MACs for `holder`: pick what looks free, publish claims, wait the
    /// claim window, and keep them only if every claim won; otherwise withdraw and try again
    /// (an explicitly requested value that lost is an error). Returns what was claimed and the
    /// claim keys, which the caller withdraws once the object holding them is published.
    async fn claim_all(
        &self,
        holder: &ObjectId,
        wants: &[Want],
    ) -> Result<(Claimed, Vec<String>), String> {
        let mut last_reason = String::new();
        for attempt in 0..MAX_CLAIM_ATTEMPTS {
            let view = self.view.load();
            let tenant = &view.tenant;
            let now = wall_ms();
            let v = self.version(tenant);
            let mut got = Vec::with_capacity(wants.len());
            let mut kvs = Vec::with_capacity(wants.len());
            let mut taken_ips: BTreeSet<(ObjectId, std::net::Ipv4Addr)> = BTreeSet::new();
            let mut taken_macs: BTreeSet<mesh_proto::MacAddr> = BTreeSet::new();
            for (i, want) in wants.iter().enumerate() {
                let seed = ipam::seed(self.me.as_str(), v.hlc, attempt * 64 + i as u64);
                match want {
                    Want::Address { pool, explicit } => {
                        let range = ipam::pool_range(tenant, pool)
                            .ok_or_else(|| format!("{pool} was deleted meanwhile"))?;
                        let ip = match explicit {
                            Some(ip) => *ip,
                            None => {
                                let mut used = ipam::unavailable(tenant, pool, holder, now);
                                used.extend(
                                    taken_ips
                                        .iter()
                                        .filter(|(p, _)| p == pool)
                                        .map(|(_, ip)| *ip),
                                );
                                ipam::pick(range, &used, seed)
                                    .ok_or_else(|| format!("no free address left in {pool}"))?
                            }
                        };
                        taken_ips.insert((pool.clone(), ip));
                        let c = AddressClaim {
                            pool: pool.clone(),
                            ip,
                            holder: holder.clone(),
                            version: v.clone(),
                        };
                        kvs.push((
                            c.key(),
                            mesh_proto::encode_value(&c).map_err(|e| e.to_string())?,
                        ));
                        got.push(Got::Address(pool.clone(), ip));
                    }
                    Want::Mac { explicit } => {
                        let mac = match explicit {
                            Some(m) => *m,
                            None => (0..64u64)
                                .map(|k| {
                                    ipam::mac_from_seed(ipam::seed(
                                        self.me.as_str(),
                                        v.hlc,
                                        (attempt * 64 + i as u64) * 64 + k + 1,
                                    ))
                                })
                                .find(|m| {
                                    !taken_macs.contains(m)
                                        && !ipam::mac_unavailable(tenant, *m, holder, now)
                                })
                                .ok_or("no free MAC found")?,
                        };
                        taken_macs.insert(mac);
                        let c = MacClaim {
                            mac,
                            holder: holder.clone(),
                            version: v.clone(),
                        };
                        kvs.push((
                            c.key(),
                            mesh_proto::encode_value(&c).map_err(|e| e.to_string())?,
                        ));
                        got.push(Got::Mac(mac));
                    }
                }
            }
            let keys: Vec<String> = kvs.iter().map(|(k, _)| k.clone()).collect();
            self.set_keys(&kvs).await;
            tokio::time::sleep(self.settings.claim_window).await;
            self.next_view().await;
            let view = self.view.load();
            let now = wall_ms();
            let mut lost_explicit = None;
            let mut all_won = true;
            for (want, g) in wants.iter().zip(&got) {
                let won = match g {
                    Got::Address(pool, ip) => {
                        ipam::address_claim_won(&view.tenant, pool, *ip, holder, now)
                    }
                    Got::Mac(mac) => ipam::mac_claim_won(&view.tenant, *mac, holder, now),
                };
                if !won {
                    all_won = false;
                    let explicit = matches!(
                        want,
                        Want::Address {
                            explicit: Some(_),
                            ..
                        } | Want::Mac { explicit: Some(_) }
                    );
                    last_reason = format!("lost the claim on {g}");
                    if explicit {
                        lost_explicit = Some(format!(
                            "{g} was claimed concurrently by another node; pick another"
                        ));
                    }
                }
            }
            if all_won {
                return Ok((Claimed(got), keys));
            }
            self.delete_keys(&keys).await;
            if let Some(e) = lost_explicit {
                return Err(e);
            }
        }
        Err(format!(
            "could not settle an allocation after {MAX_CLAIM_ATTEMPTS} attempts ({last_reason})"
        ))
    }

    /// Publishes records in this node's key space, never replacing a newer version of the same key.
    async fn publish_records(&self, records: &[Record]) -> Result<(), String> {
        let mut encoded = Vec::with_capacity(records.len());
        for r in records {
            encoded.push((r, mesh_proto::encode_value(r).map_err(|e| e.to_string())?));
        }
        {
            let mut cc = self.chitchat.lock().await;
            let st = cc.self_node_state();
            for (r, value) in encoded {
                let key = r.key();
                let current: Option<Record> =
                    st.get(&key).and_then(|v| mesh_proto::decode_value(v).ok());
                if current.as_ref().is_none_or(|c| c.version() < r.version()) {
                    st.set(key, value);
                }
            }
        }
        self.persist().await;
        Ok(())
    }

    async fn set_keys(&self, kvs: &[(String, String)]) {
        let mut cc = self.chitchat.lock().await;
        let st = cc.self_node_state();
        for (k, v) in kvs {
            st.set(k.clone(), v.clone());
        }
    }

    /// Deletes each key unless this node now publishes a newer record there than the version the
    /// withdrawal was decided on (a write landed after the view it was computed from).
    async fn withdraw_unless_newer(&self, keys: &[(String, mesh_proto::Version)]) {
        let mut cc = self.chitchat.lock().await;
        let st = cc.self_node_state();
        for (k, decided_on) in keys {
            let Some(current) = st.get(k) else { continue };
            let newer =
                mesh_proto::decode_value::<Record>(current).is_ok_and(|r| r.version() > decided_on);
            if newer {
                tracing::debug!(key = %k, "not withdrawn: a newer write landed since the view it was decided on");
            } else {
                st.delete(k);
            }
        }
    }

    async fn delete_keys(&self, keys: &[String]) {
        let mut cc = self.chitchat.lock().await;
        let st = cc.self_node_state();
        for k in keys {
            if st.get(k).is_some() {
                st.delete(k);
            }
        }
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

    /// What this node must publish or withdraw according to the current view (nothing while it
    /// sees no live member).
    fn current_duties(&self) -> Vec<Duty> {
        let view = self.view.load();
        let live: BTreeSet<NodeId> = view.alive().map(|m| m.facts.node_id().clone()).collect();
        if live.is_empty() {
            return Vec::new();
        }
        replicate::duties(
            &view.tenant,
            &self.me,
            &live,
            wall_ms(),
            self.settings.tombstone_ttl.as_millis() as u64,
        )
    }

    /// Runs replication until the task is aborted: on every view change and every resync, publish
    /// or withdraw what rendezvous ranking asks of this node.
    pub async fn run_replication(self: Arc<Self>) {
        let mut rx = self.view.subscribe();
        let mut tick = tokio::time::interval(self.settings.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tick.tick() => {},
            }
            if self.current_duties().is_empty() {
                continue;
            }
            let _one_at_a_time = self.writes.lock().await;
            // A write may have held the lock (claim windows take a while) and landed since that
            // view: decide again from the view as it is now. Withdrawals also re-check the version
            // at delete time, for a write whose view has not caught up yet.
            let duties = self.current_duties();
            let mut publish = Vec::new();
            let mut withdraw = Vec::new();
            for d in duties {
                match d {
                    Duty::Publish(r) => publish.push(*r),
                    Duty::Withdraw(k, v) => withdraw.push((k, v)),
                }
            }
            if !publish.is_empty() {
                if let Err(e) = self.publish_records(&publish).await {
                    warn!(error = %e, "replication publish failed");
                }
            }
            if !withdraw.is_empty() {
                self.withdraw_unless_newer(&withdraw).await;
                self.persist().await;
            }
        }
    }

    /// Writes the records this node publishes to `data_dir`, atomically.
    async fn persist(&self) {
        let Some(dir) = &self.settings.data_dir else {
            return;
        };
        let entries: Vec<(String, String)> = {
            let mut cc = self.chitchat.lock().await;
            cc.self_node_state()
                .key_values()
                .filter(|(k, _)| k.starts_with("o/"))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
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
