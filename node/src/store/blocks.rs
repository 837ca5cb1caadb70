//! This node's blocks ([`crate::tenant::blocks`] is the pure half): values handed out of its own
//! blocks with no wait, a new block claimed through the claim window when they run low (only with
//! a majority of the members alive in view), and ports that hold a value twice after a partition
//! given a new one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::{AddressBlock, BlockSpace, ObjectId, ObjectKind, Port, TenantObject};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{wall_ms, ConfigService};
use crate::tenant::blocks::{self, DuplicateValue, MAC_BLOCK_LEN};
use crate::tenant::ipam;

/// How long a value handed out stays reserved here (until its object shows in the view).
const RESERVED_FOR: Duration = Duration::from_secs(30);
/// How many blocks one allocation may claim before it gives up (others kept winning).
const MAX_BLOCK_ATTEMPTS: u64 = 6;
/// Most blocks claimed in one claim window.
const MAX_BATCH: u32 = 16;
/// Most hand-outs remembered per space for the refill's size.
const MAX_DEMAND_SAMPLES: usize = 4096;

/// A request counted as waiting for a block while this lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting(counter)
    }

    /// Requests waiting now, this one included.
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What the store keeps about its blocks between calls.
#[derive(Default)]
pub(super) struct BlockBook {
    /// Values handed out whose object may not be in the view yet.
    reserved: std::sync::Mutex<BTreeMap<(BlockSpace, u32), Instant>>,
    /// Keys of this node's blocks it waited the claim window for.
    confirmed: std::sync::Mutex<BTreeSet<String>>,
    /// One block claim at a time per space on this node.
    claiming: std::sync::Mutex<BTreeMap<BlockSpace, Arc<tokio::sync::Mutex<()>>>>,
    /// Spaces whose free values ran low, for the refill task.
    low: std::sync::Mutex<BTreeSet<BlockSpace>>,
    refill: tokio::sync::Notify,
    /// Requests waiting for a new block now.
    waiting: std::sync::atomic::AtomicUsize,
    /// Per space: when values were handed out lately (for the refill's size).
    demand: std::sync::Mutex<BTreeMap<BlockSpace, std::collections::VecDeque<Instant>>>,
    /// Keys of blocks this node gave back (never handed out of again, whatever the view says
    /// while their deletion spreads).
    released: std::sync::Mutex<BTreeSet<String>>,
    /// Ports re-addressed here, with what they gave up (newest last, bounded).
    readdressed: std::sync::Mutex<Vec<Readdressed>>,
}

/// A port this node gave a new value because another port held its old one.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Readdressed {
    /// The port.
    pub port: ObjectId,
    /// The value it gave up and the one it took.
    pub from: String,
    /// The value it took.
    pub to: String,
    /// The port that kept the value.
    pub kept_by: ObjectId,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// Most re-addressing events kept for `status`.
const MAX_READDRESSED: usize = 64;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConfigService {
    /// A value of `space` for `holder` out of this node's own blocks, claiming a block first
    /// when they hold none free. `Ok(None)`: no block fits any more (a single-value claim may still find one).
    pub(super) async fn take_from_blocks(
        &self,
        space: &BlockSpace,
        holder: &ObjectId,
    ) -> Result<Option<u32>, String> {
        for _ in 0..MAX_BLOCK_ATTEMPTS {
            if let Some(v) = self.take_local(space, holder) {
                return Ok(Some(v));
            }
            let waiting = Waiting::enter(&self.blocks.waiting);
            let _one_claim = self.claim_lock(space).lock_owned().await;
            // Another request may have claimed a block while this one waited.
            if let Some(v) = self.take_local(space, holder) {
                return Ok(Some(v));
            }
            // Enough blocks for every request waiting now, in one claim window.
            let len = self.block_len(space).max(1);
            let count = (waiting.count() as u32).div_ceil(len).clamp(1, MAX_BATCH);
            if self.claim_blocks(space, count).await? == 0 {
                return Ok(None);
            }
        }
        Err(format!(
            "no free value in this node's blocks of {space} after {MAX_BLOCK_ATTEMPTS} new blocks"
        ))
    }

    /// How long after its claim a block of this node counts as seen by all, without this life
    /// having waited for it (a block published before a restart).
    fn settled_ms(&self) -> u64 {
        (self.settings.claim_window * 2).as_millis() as u64
    }

    /// Reserves and returns a free value of this node's usable blocks of `space`, and asks for a
    /// refill when few are left.
    fn take_local(&self, space: &BlockSpace, holder: &ObjectId) -> Option<u32> {
        let mut reserved = lock(&self.blocks.reserved);
        let now_i = Instant::now();
        reserved.retain(|_, at| now_i.duration_since(*at) < RESERVED_FOR);
        let (free, space_len) = self.free_values_here(space, Some(holder), &reserved)?;
        let (&value, rest) = free.split_first()?;
        let left = rest.len() as u32;
        reserved.insert((space.clone(), value), now_i);
        drop(reserved);
        let demand = self.recent_demand_with(space, true) as u32;
        // A pool handed out one address at a time is claimed on demand only: claiming ahead
        // would hold addresses of a small pool that other nodes then cannot get.
        let single = self.block_len(space) == 1;
        if !single && left < low_water(space, space_len).max(demand) {
            lock(&self.blocks.low).insert(space.clone());
            self.blocks.refill.notify_one();
        }
        Some(value)
    }

    /// Claims up to `count` new blocks of `space` in one claim window: publish them, wait the
    /// window, keep those that won. Returns how many it kept; 0: no place is left for a block.
    async fn claim_blocks(&self, space: &BlockSpace, count: u32) -> Result<u32, String> {
        self.require_majority(&format!("claim a new block of {space}"))?;
        for attempt in 0..MAX_BLOCK_ATTEMPTS {
            let picked = self.pick_blocks(space, count, attempt)?;
            if picked.is_empty() {
                return Ok(0);
            }
            self.publish_blocks(&picked).await?;
            tokio::time::sleep(self.settings.claim_window).await;
            self.next_view().await;
            let won = self.keep_won_blocks(&picked).await;
            if won > 0 {
                return Ok(won);
            }
        }
        Err(format!(
            "could not claim a block of {space} after {MAX_BLOCK_ATTEMPTS} attempts (other nodes kept claiming the same places)"
        ))
    }

    /// Publishes block claims in this node's key space.
    pub(super) async fn publish_blocks(&self, picked: &[AddressBlock]) -> Result<(), String> {
        let mut kvs = Vec::with_capacity(picked.len());
        for b in picked {
            kvs.push((
                b.key(),
                mesh_proto::encode_value(b).map_err(|e| e.to_string())?,
            ));
        }
        self.set_keys(&kvs).await;
        Ok(())
    }

    /// Once `picked` has been published for a whole claim window: keeps those that won as
    /// usable at once and withdraws the rest. Returns how many it kept.
    pub(super) async fn keep_won_blocks(&self, picked: &[AddressBlock]) -> u32 {
        let view = self.view.load();
        let (won, lost): (Vec<&AddressBlock>, Vec<&AddressBlock>) = picked
            .iter()
            .partition(|b| blocks::block_won(&view.tenant, b));
        lock(&self.blocks.confirmed).extend(won.iter().map(|b| b.key()));
        lock(&self.blocks.released).retain(|k| !won.iter().any(|b| &b.key() == k));
        if !lost.is_empty() {
            debug!(
                lost = lost.len(),
                "lost block claims; the places go to older claims"
            );
            self.delete_keys(&lost.iter().map(|b| b.key()).collect::<Vec<_>>())
                .await;
        }
        if let Some(first) = won.first() {
            self.persist().await;
            let values: u32 = won.iter().map(|b| b.len).sum();
            info!(space = %first.space, blocks = won.len(), values, "address blocks claimed");
        }
        won.len() as u32
    }

    /// Up to `count` places for new blocks of `space`, apart from each other and from every
    /// published block.
    fn pick_blocks(
        &self,
        space: &BlockSpace,
        count: u32,
        attempt: u64,
    ) -> Result<Vec<AddressBlock>, String> {
        let view = self.view.load();
        let t = &view.tenant;
        let range = blocks::space_range(t, space).ok_or_else(|| format!("{space} was deleted"))?;
        let want = match space {
            BlockSpace::Pool(_) => blocks::pool_block_len(range.1),
            BlockSpace::Mac => MAC_BLOCK_LEN,
        };
        let taken = blocks::taken_values(t, space, None, wall_ms());
        let mut picked: Vec<AddressBlock> = Vec::new();
        for k in 0..u64::from(count.max(1)) {
            let version = self.version(t);
            let seed = ipam::seed(self.me.as_str(), version.hlc, attempt * 64 + k);
            let Some((first, len)) =
                blocks::next_block(t, space, range, want, &taken, &picked, seed)
            else {
                break;
            };
            picked.push(AddressBlock {
                space: space.clone(),
                first,
                len,
                version,
            });
        }
        Ok(picked)
    }

    /// A first block for `subnet`, which this node is creating, to be published before the
    /// subnet's own claims so that it waits out the same claim window: the first port or router
    /// SNAT port made through this node on the new subnet then needs no wait (its MAC comes from
    /// this node's MAC blocks, claimed with its first port ever). None for a pool handed out one
    /// address at a time (claiming ahead would hold a small pool's addresses), nor without a
    /// majority in view. (A MAC block is not claimed here: a port created at the same time may
    /// be claiming one, and two claims of one place by one node share a gossip key.)
    pub(super) fn first_block_for(&self, subnet: &mesh_proto::Subnet) -> Option<AddressBlock> {
        let range = (u32::from(subnet.pool.first()), subnet.pool.len());
        let want = blocks::pool_block_len(range.1);
        if want == 1 || self.require_majority("claim a first block").is_err() {
            return None;
        }
        let view = self.view.load();
        let space = BlockSpace::Pool(subnet.id.clone());
        let version = self.version(&view.tenant);
        let seed = ipam::seed(self.me.as_str(), version.hlc, 0);
        let none = BTreeSet::new();
        let (first, len) = blocks::next_block(&view.tenant, &space, range, want, &none, &[], seed)?;
        Some(AddressBlock {
            space,
            first,
            len,
            version,
        })
    }

    /// Withdraws this node's blocks of deleted pools ([`blocks::orphan_blocks`]).
    pub(super) async fn release_orphan_blocks(&self) {
        let keys: Vec<String> = {
            let view = self.view.load();
            blocks::orphan_blocks(&view.tenant, &self.me)
                .into_iter()
                .map(AddressBlock::key)
                .collect()
        };
        if keys.is_empty() {
            return;
        }
        self.delete_keys(&keys).await;
        lock(&self.blocks.confirmed).retain(|k| !keys.contains(k));
        self.persist().await;
        debug!(
            blocks = keys.len(),
            "withdrew the address blocks of deleted pools"
        );
    }

    /// An error unless this node sees a majority of the members it knows alive: a claim made on
    /// a minority side of a partition could give away what the other side also gives away.
    pub(super) fn require_majority(&self, what: &str) -> Result<(), String> {
        let view = self.view.load();
        let alive = view.alive().count();
        let all = view.members.len();
        if alive * 2 > all {
            return Ok(());
        }
        Err(format!(
            "cannot {what}: this node sees {alive} of {all} members alive, and a claim needs a \
             majority in view (a partitioned minority must not hand out what the other side may \
             also hand out); the free values of the blocks this node holds can still be used"
        ))
    }

    /// Claims blocks ahead of need: whenever a space's free values in this node's blocks run
    /// low, one more block (never while a majority is not in view).
    pub(super) async fn run_block_refill(self: Arc<Self>) {
        loop {
            self.blocks.refill.notified().await;
            let spaces = std::mem::take(&mut *lock(&self.blocks.low));
            for space in spaces {
                if self.draining() {
                    // A draining node gives blocks back; it claims only what a request needs.
                    continue;
                }
                let _one_claim = self.claim_lock(&space).lock_owned().await;
                let low = low_water(&space, self.space_len(&space))
                    .max(self.recent_demand(&space) as u32);
                if self.free_here(&space) >= low {
                    continue;
                }
                let count = self.refill_batch(&space);
                if let Err(e) = self.claim_blocks(&space, count).await {
                    debug!(space = %space, error = %e, "no block claimed ahead of need");
                }
            }
        }
    }

    /// The lock that lets one block claim of `space` run at a time here.
    fn claim_lock(&self, space: &BlockSpace) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.blocks.claiming)
            .entry(space.clone())
            .or_default()
            .clone()
    }

    /// How many blocks a refill claims: enough for twice the values handed out of the space in
    /// the last four claim windows (a burst of creates keeps going), at least one, at most
    /// [`MAX_BATCH`].
    fn refill_batch(&self, space: &BlockSpace) -> u32 {
        let recent = self.recent_demand(space) as u32;
        (recent * 2)
            .div_ceil(self.block_len(space).max(1))
            .clamp(1, MAX_BATCH)
    }

    /// Values of `space` handed out here in the last four claim windows (recording one more
    /// when `record`).
    fn recent_demand_with(&self, space: &BlockSpace, record: bool) -> usize {
        let now = Instant::now();
        let horizon = self.settings.claim_window * 4;
        let mut demand = lock(&self.blocks.demand);
        let times = demand.entry(space.clone()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > horizon)
        {
            times.pop_front();
        }
        if record && times.len() < MAX_DEMAND_SAMPLES {
            times.push_back(now);
        }
        times.len()
    }

    fn recent_demand(&self, space: &BlockSpace) -> usize {
        self.recent_demand_with(space, false)
    }

    /// The size of a new block of `space`.
    fn block_len(&self, space: &BlockSpace) -> u32 {
        match space {
            BlockSpace::Pool(_) => blocks::pool_block_len(self.space_len(space)),
            BlockSpace::Mac => MAC_BLOCK_LEN,
        }
    }

    fn space_len(&self, space: &BlockSpace) -> u64 {
        blocks::space_range(&self.view.load().tenant, space).map_or(0, |r| r.1)
    }

    /// Free values left in this node's usable blocks of `space`.
    fn free_here(&self, space: &BlockSpace) -> u32 {
        let reserved = lock(&self.blocks.reserved);
        self.free_values_here(space, None, &reserved)
            .map_or(0, |(free, _)| free.len() as u32)
    }

    /// The free values of this node's usable blocks of `space` for `holder` (not held, not
    /// claimed by others, not `reserved`), in order, and the size of the space; `None` when the
    /// space is gone.
    fn free_values_here(
        &self,
        space: &BlockSpace,
        holder: Option<&ObjectId>,
        reserved: &BTreeMap<(BlockSpace, u32), Instant>,
    ) -> Option<(Vec<u32>, u64)> {
        let view = self.view.load();
        let t = &view.tenant;
        let range = blocks::space_range(t, space)?;
        let now = wall_ms();
        let confirmed = lock(&self.blocks.confirmed).clone();
        let released = lock(&self.blocks.released).clone();
        let mine: Vec<&AddressBlock> =
            blocks::usable_blocks(t, space, &self.me, now, self.settled_ms(), &confirmed)
                .into_iter()
                .filter(|b| !released.contains(&b.key()))
                .collect();
        let taken = blocks::taken_values(t, space, holder, now);
        let free = blocks::free_values(&mine, range, &taken)
            .filter(|v| !reserved.contains_key(&(space.clone(), *v)))
            .collect();
        Some((free, range.1))
    }

    /// Whether this node is draining (its published facts say so).
    fn draining(&self) -> bool {
        let view = self.view.load();
        view.members
            .get(&self.me)
            .is_some_and(|m| m.facts.draining())
    }

    /// While this node drains, gives back each of its blocks that no longer holds a value in use
    /// (its ports moved away) and holds none it handed out lately: other nodes may then claim
    /// the place. Values its remaining ports hold stay theirs (their blocks stay).
    pub(super) async fn release_blocks_if_draining(&self) {
        if !self.draining() {
            return;
        }
        let view = self.view.load();
        let idle: Vec<&AddressBlock> = blocks::idle_blocks(&view.tenant, &self.me, wall_ms());
        let keys: Vec<String> = {
            // Under the hand-out lock: once a block is marked released here, no request takes
            // a value of it, and none holds one reserved.
            let reserved = lock(&self.blocks.reserved);
            let now = Instant::now();
            let keys: Vec<String> = idle
                .into_iter()
                .filter(|b| {
                    !reserved.iter().any(|((space, v), at)| {
                        space == &b.space
                            && b.contains(*v)
                            && now.duration_since(*at) < RESERVED_FOR
                    })
                })
                .map(|b| b.key())
                .collect();
            lock(&self.blocks.released).extend(keys.iter().cloned());
            keys
        };
        let mine = self
            .own
            .write(|st| keys.iter().filter(|k| st.get(k).is_some()).count())
            .await;
        if mine == 0 {
            return;
        }
        self.delete_keys(&keys).await;
        lock(&self.blocks.confirmed).retain(|k| !keys.contains(k));
        self.persist().await;
        info!(
            blocks = mine,
            "draining: gave back the address blocks no port here uses any more"
        );
    }

    /// Consents to borrowing: each value of this node's blocks that another node claims (its
    /// pool ran out elsewhere) and that was not handed out here is carved out of the block, so
    /// the claim wins at the end of its window. The value is reserved here first, under the
    /// hand-out lock, so no request takes it while the smaller blocks spread; a value handed out
    /// here is kept, and the borrower's claim loses.
    pub(super) async fn lend_requested_values(&self) {
        let view = self.view.load();
        let requests = blocks::borrow_requests(&view.tenant, &self.me, wall_ms());
        if requests.is_empty() {
            return;
        }
        let mut writes: Vec<(String, Option<String>)> = Vec::new();
        let mut lent = 0;
        for (block, asked) in requests {
            let granted: BTreeSet<u32> = {
                let mut reserved = lock(&self.blocks.reserved);
                let now = Instant::now();
                let granted: BTreeSet<u32> = asked
                    .into_iter()
                    .filter(|v| {
                        reserved
                            .get(&(block.space.clone(), *v))
                            .is_none_or(|at| now.duration_since(*at) >= RESERVED_FOR)
                    })
                    .collect();
                for v in &granted {
                    reserved.insert((block.space.clone(), *v), now);
                }
                granted
            };
            if granted.is_empty() {
                continue;
            }
            lent += granted.len();
            let mut keys_left = BTreeSet::new();
            // The pieces keep the block's version: they are what is left of it, as old as it
            // was, and win where it won.
            for (first, len) in blocks::carve(block, &granted) {
                let piece = AddressBlock {
                    space: block.space.clone(),
                    first,
                    len,
                    version: block.version.clone(),
                };
                let value = mesh_proto::encode_value(&piece).map_err(|e| e.to_string());
                match value {
                    Ok(v) => {
                        keys_left.insert(piece.key());
                        writes.push((piece.key(), Some(v)));
                    }
                    Err(e) => warn!(error = %e, "cannot encode a block"),
                }
            }
            if !keys_left.contains(&block.key()) {
                writes.push((block.key(), None));
            }
        }
        if writes.is_empty() {
            return;
        }
        self.own
            .write(|st| {
                for (k, v) in &writes {
                    match v {
                        Some(v) => st.set(k, v),
                        None => st.delete(k),
                    }
                }
            })
            .await;
        self.view.poke();
        self.persist().await;
        info!(
            values = lent,
            "lent addresses of this node's blocks to nodes whose pool ran out"
        );
    }

    /// Gives every port hosted here that holds an address or MAC another port kept (the older
    /// record keeps it; see [`blocks::duplicates`]) new ones, in one write per port, and says so.
    pub(super) async fn repair_duplicates(&self) {
        let mut losers: BTreeMap<ObjectId, Vec<(DuplicateValue, ObjectId)>> = BTreeMap::new();
        for d in blocks::duplicates(&self.view.load().tenant) {
            if d.loser_host == self.me {
                losers.entry(d.loser).or_default().push((d.value, d.keeper));
            }
        }
        for (id, values) in losers {
            let view = self.view.load();
            let Some(TenantObject::Port(port)) = view.tenant.get(ObjectKind::Port, &id) else {
                continue;
            };
            match self.readdress(port, &values).await {
                Ok(changes) => self.record_readdressed(&id, changes),
                Err(e) => debug!(port = %id, error = %e, "cannot re-address a port yet"),
            }
        }
    }

    fn record_readdressed(&self, port: &ObjectId, changes: Vec<(String, String, ObjectId)>) {
        let mut events = lock(&self.blocks.readdressed);
        for (from, to, kept_by) in changes {
            warn!(port = %port, %from, %to, %kept_by,
                "a port held a value another port holds too (written on both sides of a partition): it takes another");
            if events.len() >= MAX_READDRESSED {
                events.remove(0);
            }
            events.push(Readdressed {
                port: port.clone(),
                from,
                to,
                kept_by,
                at_ms: wall_ms(),
            });
        }
    }

    /// Publishes `port` with new values in place of `values`; returns (old, new, kept by) each.
    async fn readdress(
        &self,
        port: &Port,
        values: &[(DuplicateValue, ObjectId)],
    ) -> Result<Vec<(String, String, ObjectId)>, String> {
        let mut spec = port.clone().into_spec();
        let mut changes = Vec::new();
        for (value, keeper) in values {
            let (from, to) = match value {
                DuplicateValue::Address(ip) => {
                    let new = self.new_address_for(port, *ip).await?;
                    spec.fixed_ips
                        .iter_mut()
                        .filter(|x| *x == ip)
                        .for_each(|x| *x = new);
                    (ip.to_string(), new.to_string())
                }
                DuplicateValue::Mac(old) => {
                    let new = self
                        .take_from_blocks(&BlockSpace::Mac, &port.id)
                        .await?
                        .map(blocks::mac_of)
                        .ok_or("no free MAC")?;
                    spec.mac = new;
                    (old.to_string(), new.to_string())
                }
            };
            changes.push((from, to, keeper.clone()));
        }
        let updated = Port::new(spec).map_err(|e| e.to_string())?;
        self.publish_after_claims(TenantObject::Port(updated), &[])
            .await?;
        Ok(changes)
    }

    /// A new address for `port` in the subnet that holds `ip`, out of this node's blocks.
    async fn new_address_for(
        &self,
        port: &Port,
        ip: std::net::Ipv4Addr,
    ) -> Result<std::net::Ipv4Addr, String> {
        let view = self.view.load();
        let subnet = view
            .tenant
            .subnets()
            .find(|s| s.network == port.network && s.cidr.contains(ip))
            .ok_or_else(|| format!("no subnet holds {ip}"))?;
        self.take_from_blocks(&BlockSpace::Pool(subnet.id.clone()), &port.id)
            .await?
            .map(std::net::Ipv4Addr::from)
            .ok_or_else(|| format!("no free address in {}", subnet.id))
    }

    /// The ports this node re-addressed (newest last).
    pub fn readdressed(&self) -> Vec<Readdressed> {
        lock(&self.blocks.readdressed).clone()
    }

    /// A port as `port show` gives it, with what this node re-addressed of it (`readdressed`:
    /// only the port's host re-addresses it, so the list is empty when asked elsewhere).
    pub(super) fn with_readdressed(&self, mut port: serde_json::Value) -> serde_json::Value {
        let id = port.get("id").and_then(|v| v.as_str()).map(str::to_string);
        if let (Some(obj), Some(id)) = (port.as_object_mut(), id) {
            let events: Vec<Readdressed> = lock(&self.blocks.readdressed)
                .iter()
                .filter(|r| r.port.as_str() == id)
                .cloned()
                .collect();
            obj.insert("readdressed".into(), serde_json::json!(events));
        }
        port
    }
}

/// Below this many free values in its blocks of a space, a node claims the next block ahead of
/// need: half a block (none for spaces handed out one value at a time).
fn low_water(space: &BlockSpace, space_len: u64) -> u32 {
    match space {
        BlockSpace::Pool(_) => blocks::pool_block_len(space_len) / 2,
        BlockSpace::Mac => MAC_BLOCK_LEN / 2,
    }
}
