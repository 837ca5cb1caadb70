//! Node-affine blocks, pure: which published blocks win, which values of a node's own blocks are
//! free, where a node's next block goes, and which ports hold one address or MAC twice.
//!
//! A node claims a block of a pool (or of the MAC range) once, through the claim window, and then
//! hands out the values inside it with no wait: no other node hands out a value of a block it
//! does not hold. Of two overlapping blocks the older (lower version) wins, on every node alike.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use mesh_proto::{AddressBlock, BlockSpace, Ipv4Range, MacAddr, NodeId, ObjectId, ObjectKind};

use super::{ipam, TenantState};

/// Values in a MAC block.
pub const MAC_BLOCK_LEN: u32 = 256;
/// The MAC range blocks are carved from: `fa:16:3e:00:00:00` to `fa:16:3e:ff:ff:ff`.
const MAC_PREFIX: [u8; 3] = [0xfa, 0x16, 0x3e];
/// The largest address block.
pub const MAX_POOL_BLOCK_LEN: u32 = 16;
/// Most candidate places looked at for a new block (a bound on the work in a huge pool).
const MAX_CANDIDATES: u64 = 4096;

/// The size of a node's next block in a pool of `pool_len` addresses: an eighth of the pool,
/// rounded down to a power of two, between 1 and 16 (a /24 gives 16, a /28 single addresses).
pub fn pool_block_len(pool_len: u64) -> u32 {
    let target = (pool_len / 8).clamp(1, u64::from(MAX_POOL_BLOCK_LEN));
    1 << (63 - target.leading_zeros())
}

/// The MAC a value of the MAC space stands for.
pub fn mac_of(value: u32) -> MacAddr {
    let [_, a, b, c] = value.to_be_bytes();
    // fa:16:3e is unicast and locally administered; the constructor only refuses multicast/zero.
    MacAddr::new([MAC_PREFIX[0], MAC_PREFIX[1], MAC_PREFIX[2], a, b, c])
        .unwrap_or_else(|_| unreachable!())
}

/// The value of the MAC space a MAC is, if it is in the range blocks are carved from.
pub fn mac_value(mac: MacAddr) -> Option<u32> {
    let b = mac.octets();
    (b[..3] == MAC_PREFIX).then(|| u32::from_be_bytes([0, b[3], b[4], b[5]]))
}

/// The values a space spans: a pool's range, or the whole MAC range.
pub fn space_range(state: &TenantState, space: &BlockSpace) -> Option<(u32, u64)> {
    match space {
        BlockSpace::Pool(pool) => {
            let r: Ipv4Range = ipam::pool_range(state, pool)?;
            Some((u32::from(r.first()), r.len()))
        }
        BlockSpace::Mac => Some((0, 1 << 24)),
    }
}

/// The blocks of `space` that win: in version order, each block that overlaps no earlier winner.
pub fn winners<'a>(state: &'a TenantState, space: &BlockSpace) -> Vec<&'a AddressBlock> {
    let mut won: Vec<&AddressBlock> = Vec::new();
    for b in state.blocks.get(space).into_iter().flatten() {
        if !won.iter().any(|w| w.overlaps(b)) {
            won.push(b);
        }
    }
    won
}

/// Whether `block` (this key and version) is among the winners of its space.
pub fn block_won(state: &TenantState, block: &AddressBlock) -> bool {
    winners(state, &block.space)
        .iter()
        .any(|w| w.version == block.version && w.first == block.first)
}

/// The winning blocks of `me` in `space` that it may hand values out of: those it waited the
/// claim window for (`confirmed`, by key) or that are older than `settled_ms` (published before
/// a restart, or seen by every node long since).
pub fn usable_blocks<'a>(
    state: &'a TenantState,
    space: &BlockSpace,
    me: &NodeId,
    now_ms: u64,
    settled_ms: u64,
    confirmed: &BTreeSet<String>,
) -> Vec<&'a AddressBlock> {
    winners(state, space)
        .into_iter()
        .filter(|b| &b.version.writer == me)
        .filter(|b| {
            confirmed.contains(&b.key())
                || now_ms.saturating_sub(b.version.hlc.physical_ms()) >= settled_ms
        })
        .collect()
}

/// The node whose winning block of `space` holds `value`, if it is not `me`: only that node may
/// hand the value out (a claim by anyone else could be handed out by the holder at the same time
/// on the other side of a partition).
pub fn held_by_other_block(
    state: &TenantState,
    space: &BlockSpace,
    value: u32,
    me: &NodeId,
) -> Option<NodeId> {
    winners(state, space)
        .into_iter()
        .find(|b| b.contains(value) && &b.version.writer != me)
        .map(|b| b.version.writer.clone())
}

/// Values of `space` that `holder` may not take: held by a live object (other than `holder`) or
/// freshly claimed by another holder. With no holder, every held or claimed value is taken.
pub fn taken_values(
    state: &TenantState,
    space: &BlockSpace,
    holder: Option<&ObjectId>,
    now_ms: u64,
) -> BTreeSet<u32> {
    let nobody = ObjectId::new("0").unwrap_or_else(|_| unreachable!());
    let holder = holder.unwrap_or(&nobody);
    match space {
        BlockSpace::Pool(pool) => ipam::unavailable(state, pool, holder, now_ms)
            .into_iter()
            .map(u32::from)
            .collect(),
        BlockSpace::Mac => {
            let mut taken: BTreeSet<u32> = state
                .ports()
                .filter(|p| &p.id != holder)
                .map(|p| p.mac)
                .chain(
                    state
                        .routers()
                        .filter(|r| &r.id != holder)
                        .flat_map(|r| r.snat_ports.values().map(|sp| sp.mac)),
                )
                .filter_map(mac_value)
                .collect();
            taken.extend(state.mac_claims.iter().filter_map(|(mac, cs)| {
                let other = cs
                    .iter()
                    .any(|c| &c.holder != holder && ipam::claim_is_fresh(&c.version, now_ms));
                other.then(|| mac_value(*mac)).flatten()
            }));
            taken
        }
    }
}

/// The published blocks of `me` that hold no value a live object holds or another holder
/// freshly claimed (what a draining node gives back: its ports moved away, nothing is lost).
pub fn idle_blocks<'a>(state: &'a TenantState, me: &NodeId, now_ms: u64) -> Vec<&'a AddressBlock> {
    let mut idle = Vec::new();
    for (space, published) in &state.blocks {
        let taken = taken_values(state, space, None, now_ms);
        idle.extend(published.iter().filter(|b| {
            &b.version.writer == me
                && (0..b.len).all(|i| !taken.contains(&b.first.saturating_add(i)))
        }));
    }
    idle
}

/// The published pool blocks of `me` whose pool was deleted (its subnet or external network is a
/// tombstone): nothing can be handed out of them any more, so they are withdrawn. A block whose
/// pool is merely unknown is kept: the pool may not have reached this view yet (a restart, or a
/// subnet claimed together with its first block and published a claim window later).
pub fn orphan_blocks<'a>(state: &'a TenantState, me: &NodeId) -> Vec<&'a AddressBlock> {
    let deleted = |pool: &ObjectId| {
        [ObjectKind::Subnet, ObjectKind::ExternalNetwork]
            .into_iter()
            .any(|k| state.record(k, pool).is_some_and(|r| r.body().is_none()))
    };
    state
        .blocks
        .iter()
        .filter(|(space, _)| matches!(space, BlockSpace::Pool(p) if deleted(p)))
        .flat_map(|(_, published)| published.iter().filter(|b| &b.version.writer == me))
        .collect()
}

/// What other nodes ask to borrow of `me`'s winning pool blocks: per block, the values another
/// node holds a fresh claim on and no live object holds (a node whose pool ran out claims a free
/// value of another node's block; the holder consents by carving it out, see [`carve`]).
pub fn borrow_requests<'a>(
    state: &'a TenantState,
    me: &NodeId,
    now_ms: u64,
) -> Vec<(&'a AddressBlock, BTreeSet<u32>)> {
    let mut out = Vec::new();
    for space in state.blocks.keys() {
        let BlockSpace::Pool(pool) = space else {
            continue;
        };
        let held = ipam::held_addresses(state, pool);
        for b in winners(state, space)
            .into_iter()
            .filter(|b| &b.version.writer == me)
        {
            let (first, last) = (
                Ipv4Addr::from(b.first),
                Ipv4Addr::from(b.first + (b.len - 1)),
            );
            let asked: BTreeSet<u32> = state
                .address_claims
                .range((pool.clone(), first)..=(pool.clone(), last))
                .filter(|((_, ip), claims)| {
                    !held.contains(ip)
                        && claims.iter().any(|c| {
                            &c.version.writer != me && ipam::claim_is_fresh(&c.version, now_ms)
                        })
                })
                .map(|((_, ip), _)| u32::from(*ip))
                .collect();
            if !asked.is_empty() {
                out.push((b, asked));
            }
        }
    }
    out
}

/// The runs of `block` left when `values` are carved out of it, as (first, len), in order.
pub fn carve(block: &AddressBlock, values: &BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut pieces = Vec::new();
    let mut start = block.first;
    let end = u64::from(block.first) + u64::from(block.len);
    for &v in values.iter().filter(|v| block.contains(**v)) {
        if v > start {
            pieces.push((start, v - start));
        }
        start = v.saturating_add(1);
    }
    if u64::from(start) < end && start >= block.first {
        pieces.push((start, (end - u64::from(start)) as u32));
    }
    pieces
}

/// The free values of `blocks` (not in `taken`, inside the space's range), in order.
pub fn free_values<'a>(
    blocks: &'a [&'a AddressBlock],
    range: (u32, u64),
    taken: &'a BTreeSet<u32>,
) -> impl Iterator<Item = u32> + 'a {
    let (first, len) = range;
    let end = u64::from(first) + len;
    blocks
        .iter()
        .flat_map(|b| (0..b.len).map(move |i| b.first.saturating_add(i)))
        .filter(move |v| *v >= first && u64::from(*v) < end && !taken.contains(v))
}

/// Where a new block of `want_len` values (or, when none fits, of the largest smaller power of
/// two) may go in a space spanning `range`: aligned, overlapping no published block (winner or
/// not) nor any of `pending` (picked for the same claim), and with at least one value not in
/// `taken`. Candidates are tried from a place derived from `seed`, so nodes claiming at once
/// start apart. `None`: the space is covered.
pub fn next_block(
    state: &TenantState,
    space: &BlockSpace,
    range: (u32, u64),
    want_len: u32,
    taken: &BTreeSet<u32>,
    pending: &[AddressBlock],
    seed: u64,
) -> Option<(u32, u32)> {
    let published = state.blocks.get(space).map(Vec::as_slice).unwrap_or(&[]);
    let (first, span) = range;
    let mut len = want_len.max(1);
    loop {
        let slots = span / u64::from(len);
        if slots > 0 {
            let tries = slots.min(MAX_CANDIDATES);
            for i in 0..tries {
                let slot = (seed.wrapping_add(i)) % slots;
                let start = u64::from(first) + slot * u64::from(len);
                let Ok(start) = u32::try_from(start) else {
                    continue;
                };
                let overlaps = published
                    .iter()
                    .chain(pending)
                    .any(|b| &b.space == space && b.overlaps_range(start, len));
                let has_free = (0..len).any(|k| !taken.contains(&(start + k)));
                if !overlaps && has_free {
                    return Some((start, len));
                }
            }
        }
        if len == 1 {
            return None;
        }
        len /= 2;
    }
}

/// A port that holds an address or MAC another live port holds too, and must give it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The port that keeps the value (its record is the older).
    pub keeper: ObjectId,
    /// The port that must take another value.
    pub loser: ObjectId,
    /// The loser's host: the only node that may rewrite it.
    pub loser_host: NodeId,
    /// What is held twice.
    pub value: DuplicateValue,
}

/// What two ports hold at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DuplicateValue {
    /// A fixed address on one network.
    Address(Ipv4Addr),
    /// A MAC (unique cluster-wide).
    Mac(MacAddr),
}

/// A port holding a value, with the version of its record.
type Holding<'a> = (Option<mesh_proto::Version>, &'a mesh_proto::Port);

/// Every value two live ports hold at once (e.g. both sides of a partition wrote a port with
/// it): the port whose record is older keeps it, every other one is a loser. Deterministic: every
/// node computes the same list from the same state.
pub fn duplicates(state: &TenantState) -> Vec<Duplicate> {
    let age = |id: &ObjectId| {
        state
            .record(ObjectKind::Port, id)
            .map(|r| r.version().clone())
    };
    let mut by_address: BTreeMap<(ObjectId, Ipv4Addr), Vec<Holding<'_>>> = BTreeMap::new();
    let mut by_mac: BTreeMap<MacAddr, Vec<Holding<'_>>> = BTreeMap::new();
    for p in state.ports() {
        for ip in &p.fixed_ips {
            by_address
                .entry((p.network.clone(), *ip))
                .or_default()
                .push((age(&p.id), p));
        }
        by_mac.entry(p.mac).or_default().push((age(&p.id), p));
    }
    let mut out = Vec::new();
    let groups = by_address
        .into_iter()
        .map(|((_, ip), ps)| (DuplicateValue::Address(ip), ps))
        .chain(
            by_mac
                .into_iter()
                .map(|(mac, ps)| (DuplicateValue::Mac(mac), ps)),
        );
    for (value, mut ports) in groups {
        if ports.len() < 2 {
            continue;
        }
        ports.sort_by(|a, b| (&a.0, &a.1.id).cmp(&(&b.0, &b.1.id)));
        let keeper = ports[0].1.id.clone();
        for (_, p) in &ports[1..] {
            out.push(Duplicate {
                keeper: keeper.clone(),
                loser: p.id.clone(),
                loser_host: p.host.clone(),
                value: value.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
