//! Address and MAC management without a central allocator.
//!
//! A node that needs an address picks one that looks free, publishes a claim, waits one claim
//! window (long enough for any concurrent claim to reach it), and keeps the address only if its
//! claim is the oldest (lowest version) fresh claim on it and no live object holds it. Losers pick
//! again. See `docs/architecture.md` for the timing argument.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use mesh_proto::{HlcTimestamp, Ipv4Range, MacAddr, ObjectId, TenantObject, UniqueValue, Version};

use super::TenantState;

/// Claims older than this are ignored (a node that died mid-claim must not block an address).
pub const CLAIM_TTL_MS: u64 = 60_000;

/// Addresses of `pool` (a subnet or an external network id) held by live objects.
pub fn held_addresses(state: &TenantState, pool: &ObjectId) -> BTreeSet<Ipv4Addr> {
    let mut used = BTreeSet::new();
    if let Some(TenantObject::Subnet(s)) = state.get(mesh_proto::ObjectKind::Subnet, pool) {
        used.insert(s.gateway);
        for p in state.ports().filter(|p| p.network == s.network) {
            used.extend(p.fixed_ips.iter().filter(|ip| s.cidr.contains(**ip)));
        }
        for r in state.routers() {
            used.extend(r.snat_ports.get(pool).map(|sp| sp.ip));
        }
    }
    if let Some(TenantObject::ExternalNetwork(e)) =
        state.get(mesh_proto::ObjectKind::ExternalNetwork, pool)
    {
        used.insert(e.gateway);
        for f in state.floating_ips().filter(|f| &f.external_network == pool) {
            used.insert(f.ip);
        }
        for r in state.routers() {
            if let Some(g) = r.gateway.as_ref().filter(|g| &g.external_network == pool) {
                used.extend(g.external_ip);
            }
        }
        // FIP gateway ports of nodes (`fg-`) are ports on the external network.
        for p in state.ports().filter(|p| &p.network == pool) {
            used.extend(p.fixed_ips.iter().copied());
        }
    }
    used
}

/// Who holds `ip` of `pool`, if a live object does: its id.
pub fn holder_of(state: &TenantState, pool: &ObjectId, ip: Ipv4Addr) -> Option<ObjectId> {
    if let Some(TenantObject::Subnet(s)) = state.get(mesh_proto::ObjectKind::Subnet, pool) {
        if s.gateway == ip {
            return Some(s.id.clone());
        }
        if let Some(r) = state
            .routers()
            .find(|r| r.snat_ports.get(pool).is_some_and(|sp| sp.ip == ip))
        {
            return Some(r.id.clone());
        }
        return state
            .ports()
            .find(|p| p.network == s.network && p.fixed_ips.contains(&ip))
            .map(|p| p.id.clone());
    }
    if let Some(TenantObject::ExternalNetwork(e)) =
        state.get(mesh_proto::ObjectKind::ExternalNetwork, pool)
    {
        if e.gateway == ip {
            return Some(e.id.clone());
        }
        if let Some(r) = state.routers().find(|r| {
            r.gateway
                .as_ref()
                .is_some_and(|g| &g.external_network == pool && g.external_ip == Some(ip))
        }) {
            return Some(r.id.clone());
        }
        if let Some(p) = state
            .ports()
            .find(|p| &p.network == pool && p.fixed_ips.contains(&ip))
        {
            return Some(p.id.clone());
        }
        return state
            .floating_ips()
            .find(|f| &f.external_network == pool && f.ip == ip)
            .map(|f| f.id.clone());
    }
    None
}

/// Whether any live object other than `holder` uses `mac` (ports and routers' SNAT ports).
fn mac_held_by_other(state: &TenantState, mac: MacAddr, holder: &ObjectId) -> bool {
    state.ports().any(|p| p.mac == mac && &p.id != holder)
        || state
            .routers()
            .any(|r| &r.id != holder && r.snat_ports.values().any(|sp| sp.mac == mac))
}

/// Whether a claim stamped `v` still counts at `now_ms` (claims last [`CLAIM_TTL_MS`]).
pub fn claim_is_fresh(v: &Version, now_ms: u64) -> bool {
    now_ms.saturating_sub(v.hlc.physical_ms()) <= CLAIM_TTL_MS
}

/// Addresses of `pool` that are held or freshly claimed by someone other than `holder`.
pub fn unavailable(
    state: &TenantState,
    pool: &ObjectId,
    holder: &ObjectId,
    now_ms: u64,
) -> BTreeSet<Ipv4Addr> {
    let mut used = held_addresses(state, pool);
    for ((p, ip), claims) in state
        .address_claims
        .range((pool.clone(), Ipv4Addr::UNSPECIFIED)..)
    {
        if p != pool {
            break;
        }
        if claims
            .iter()
            .any(|c| &c.holder != holder && claim_is_fresh(&c.version, now_ms))
        {
            used.insert(*ip);
        }
    }
    used
}

/// The allocation pool of a subnet or external network.
pub fn pool_range(state: &TenantState, pool: &ObjectId) -> Option<Ipv4Range> {
    match state.get(mesh_proto::ObjectKind::Subnet, pool) {
        Some(TenantObject::Subnet(s)) => Some(s.pool),
        _ => match state.get(mesh_proto::ObjectKind::ExternalNetwork, pool) {
            Some(TenantObject::ExternalNetwork(e)) => Some(e.pool),
            _ => None,
        },
    }
}

/// Picks an address of `range` not in `used`, starting from a point derived from `seed` so that
/// nodes allocating at the same time start in different places.
pub fn pick(range: Ipv4Range, used: &BTreeSet<Ipv4Addr>, seed: u64) -> Option<Ipv4Addr> {
    let len = range.len();
    let first = u64::from(u32::from(range.first()));
    let start = seed % len;
    (0..len)
        .map(|i| Ipv4Addr::from(((first + (start + i) % len) & 0xffff_ffff) as u32))
        .find(|ip| !used.contains(ip))
}

/// Whether `holder`'s claim on `ip` of `pool` won: no other live object holds the address, and
/// among fresh claims on it the oldest is `holder`'s.
pub fn address_claim_won(
    state: &TenantState,
    pool: &ObjectId,
    ip: Ipv4Addr,
    holder: &ObjectId,
    now_ms: u64,
) -> bool {
    if holder_of(state, pool, ip).is_some_and(|h| &h != holder) {
        return false;
    }
    state
        .address_claims
        .get(&(pool.clone(), ip))
        .and_then(|cs| cs.iter().find(|c| claim_is_fresh(&c.version, now_ms)))
        .is_some_and(|c| &c.holder == holder)
}

/// Whether `holder`'s claim on `mac` won: no other live port uses it and the oldest fresh claim on
/// it is `holder`'s.
pub fn mac_claim_won(state: &TenantState, mac: MacAddr, holder: &ObjectId, now_ms: u64) -> bool {
    if mac_held_by_other(state, mac, holder) {
        return false;
    }
    state
        .mac_claims
        .get(&mac)
        .and_then(|cs| cs.iter().find(|c| claim_is_fresh(&c.version, now_ms)))
        .is_some_and(|c| &c.holder == holder)
}

/// Whether a MAC is used by a live port or freshly claimed by another holder.
pub fn mac_unavailable(state: &TenantState, mac: MacAddr, holder: &ObjectId, now_ms: u64) -> bool {
    mac_held_by_other(state, mac, holder)
        || state.mac_claims.get(&mac).is_some_and(|cs| {
            cs.iter()
                .any(|c| &c.holder != holder && claim_is_fresh(&c.version, now_ms))
        })
}

/// A MAC in Neutron's `fa:16:3e` range from a seed.
pub fn mac_from_seed(seed: u64) -> MacAddr {
    let b = seed.to_be_bytes();
    // fa:16:3e is unicast and locally administered; the constructor only rejects multicast/zero.
    MacAddr::new([0xfa, 0x16, 0x3e, b[5], b[6], b[7]]).unwrap_or_else(|_| unreachable!())
}

/// A seed from a node id, a timestamp and an attempt number (splitmix64).
pub fn seed(node: &str, ts: HlcTimestamp, attempt: u64) -> u64 {
    let mut x = ts.0 ^ attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in node.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The live object that holds `value`, if one does: the network with that VNI, the object of
/// that kind with that name.
pub fn unique_holder(state: &TenantState, value: &UniqueValue) -> Option<ObjectId> {
    match value {
        UniqueValue::Vni(vni) => state
            .networks()
            .find(|n| n.vni == *vni)
            .map(|n| n.id.clone()),
        UniqueValue::Name(kind, name) => state
            .objects(*kind)
            .find(|o| o.name() == Some(name))
            .map(|o| o.id().clone()),
    }
}

/// Whether another holder has a fresh claim on `value`.
pub fn unique_claimed_by_other(
    state: &TenantState,
    value: &UniqueValue,
    holder: &ObjectId,
    now_ms: u64,
) -> bool {
    state.unique_claims.get(value).is_some_and(|cs| {
        cs.iter()
            .any(|c| &c.holder != holder && claim_is_fresh(&c.version, now_ms))
    })
}

/// Whether `holder`'s claim on `value` won: no other live object holds it and the oldest fresh
/// claim on it is `holder`'s.
pub fn unique_claim_won(
    state: &TenantState,
    value: &UniqueValue,
    holder: &ObjectId,
    now_ms: u64,
) -> bool {
    if unique_holder(state, value).is_some_and(|h| &h != holder) {
        return false;
    }
    state
        .unique_claims
        .get(value)
        .and_then(|cs| cs.iter().find(|c| claim_is_fresh(&c.version, now_ms)))
        .is_some_and(|c| &c.holder == holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_skips_used_and_wraps() {
        let r: Ipv4Range = "10.0.0.2-10.0.0.5".parse().unwrap();
        let used: BTreeSet<Ipv4Addr> = ["10.0.0.4", "10.0.0.5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(pick(r, &used, 2), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(pick(r, &used, 1), Some("10.0.0.3".parse().unwrap()));
        let all: BTreeSet<Ipv4Addr> = (2..=5).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        assert_eq!(pick(r, &all, 0), None);
    }

    #[test]
    fn seeds_differ_by_node_and_attempt() {
        let t = HlcTimestamp(123 << 16);
        assert_ne!(seed("a", t, 0), seed("b", t, 0));
        assert_ne!(seed("a", t, 0), seed("a", t, 1));
    }
}
