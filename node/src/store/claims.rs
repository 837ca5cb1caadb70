//! Claiming addresses and MACs without a central allocator: pick what looks free in the view,
//! publish claims, wait the claim window, and keep them only if every claim won (the oldest fresh
//! claim wins); otherwise withdraw and try again.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use mesh_proto::{
    AddressClaim, BlockSpace, MacAddr, MacClaim, ObjectId, UniqueClaim, UniqueValue, Version,
};

use super::{wall_ms, ConfigService};
use crate::tenant::{blocks, ipam, TenantState};

/// A gossip key and its value.
type KeyValue = (String, String);

/// How many times an allocation is retried after losing a claim.
const MAX_CLAIM_ATTEMPTS: u64 = 8;

/// One value to allocate.
#[derive(Clone)]
pub(super) enum Want {
    /// An address of a subnet or external network pool.
    Address {
        pool: ObjectId,
        explicit: Option<std::net::Ipv4Addr>,
    },
    /// A MAC address.
    Mac {
        explicit: Option<mesh_proto::MacAddr>,
    },
    /// A VNI or a name no other live object may have.
    Unique(UniqueValue),
}

/// One allocated value.
pub(super) enum Got {
    Address(ObjectId, std::net::Ipv4Addr),
    Mac(mesh_proto::MacAddr),
    Unique(UniqueValue),
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Got::Address(pool, ip) => write!(f, "{ip} in {pool}"),
            Got::Mac(m) => write!(f, "MAC {m}"),
            Got::Unique(v) => write!(f, "{v}"),
        }
    }
}

/// What `claim_all` allocated, in the order asked.
pub(super) struct Claimed(pub(super) Vec<Got>);

impl Claimed {
    pub(super) fn address(&self, i: usize) -> Option<std::net::Ipv4Addr> {
        match self.0.get(i) {
            Some(Got::Address(_, ip)) => Some(*ip),
            _ => None,
        }
    }
    pub(super) fn mac(&self, i: usize) -> Option<mesh_proto::MacAddr> {
        match self.0.get(i) {
            Some(Got::Mac(m)) => Some(*m),
            _ => None,
        }
    }
}

impl ConfigService {
    /// Claims addresses and MACs for `holder`: pick what looks free, publish claims, wait the
    /// claim window, and keep them only if every claim won; otherwise withdraw and try again
    /// (an explicitly requested value that lost is an error). Returns what was claimed and the
    /// claim keys, which the caller withdraws once the object holding them is published.
    pub(super) async fn claim_all(
        &self,
        holder: &ObjectId,
        wants: &[Want],
    ) -> Result<(Claimed, Vec<String>), String> {
        let mut last_reason = String::new();
        for attempt in 0..MAX_CLAIM_ATTEMPTS {
            let (got, kvs) = self.pick(holder, wants, attempt)?;
            let keys: Vec<String> = kvs.iter().map(|(k, _)| k.clone()).collect();
            self.set_keys(&kvs).await;
            tokio::time::sleep(self.settings.claim_window).await;
            self.next_view().await;
            let lost = self.lost(holder, wants, &got);
            if lost.is_empty() {
                return Ok((Claimed(got), keys));
            }
            self.delete_keys(&keys).await;
            let refused = lost.iter().find(|l| l.explicit && l.why == Lost::Taken);
            if let Some(l) = refused {
                return Err(format!(
                    "{} is taken, or was claimed concurrently by another node; pick another",
                    l.got
                ));
            }
            if let Some(l) = lost.last() {
                last_reason = match l.why {
                    Lost::Taken => format!("lost the claim on {}", l.got),
                    Lost::NotLent => format!(
                        "{} is still in another node's block (not lent in time)",
                        l.got
                    ),
                };
            }
        }
        Err(format!(
            "could not settle an allocation after {MAX_CLAIM_ATTEMPTS} attempts ({last_reason})"
        ))
    }

    /// One value for each want that looks free in the current view, and the claims on them as
    /// gossip key/value pairs.
    fn pick(
        &self,
        holder: &ObjectId,
        wants: &[Want],
        attempt: u64,
    ) -> Result<(Vec<Got>, Vec<KeyValue>), String> {
        let view = self.view.load();
        let mut picker = Picker {
            tenant: &view.tenant,
            holder,
            me: self.me.as_str(),
            version: self.version(&view.tenant),
            now: wall_ms(),
            taken_ips: BTreeSet::new(),
            taken_macs: BTreeSet::new(),
            lenders: view
                .members
                .iter()
                .filter(|(id, m)| {
                    m.state == crate::mesh::view::MemberState::Alive && *id != &self.me
                })
                .map(|(id, _)| id.clone())
                .collect(),
        };
        let mut got = Vec::with_capacity(wants.len());
        let mut kvs = Vec::with_capacity(wants.len());
        for (i, want) in wants.iter().enumerate() {
            let salt = attempt * 64 + i as u64;
            let (g, kv) = match want {
                Want::Address { pool, explicit } => picker.address(pool, *explicit, salt)?,
                Want::Mac { explicit } => picker.mac(*explicit, salt)?,
                Want::Unique(value) => picker.unique(value)?,
            };
            got.push(g);
            kvs.push(kv);
        }
        Ok((got, kvs))
    }

    /// The values whose claim `holder` lost, each with why and whether it was asked for
    /// explicitly.
    fn lost<'a>(&self, holder: &ObjectId, wants: &[Want], got: &'a [Got]) -> Vec<LostClaim<'a>> {
        let view = self.view.load();
        let t = &view.tenant;
        let now = wall_ms();
        let in_other_block = |space: BlockSpace, v: u32| {
            blocks::held_by_other_block(t, &space, v, &self.me).is_some()
        };
        wants
            .iter()
            .zip(got)
            .filter_map(|(want, g)| {
                let (won, in_block) = match g {
                    Got::Address(pool, ip) => (
                        ipam::address_claim_won(t, pool, *ip, holder, now),
                        in_other_block(BlockSpace::Pool(pool.clone()), u32::from(*ip)),
                    ),
                    Got::Mac(mac) => (
                        ipam::mac_claim_won(t, *mac, holder, now),
                        blocks::mac_value(*mac).is_some_and(|v| in_other_block(BlockSpace::Mac, v)),
                    ),
                    Got::Unique(v) => (ipam::unique_claim_won(t, v, holder, now), false),
                };
                let why = match (won, in_block) {
                    (true, false) => return None,
                    (true, true) => Lost::NotLent,
                    (false, _) => Lost::Taken,
                };
                Some(LostClaim {
                    got: g,
                    explicit: want.is_explicit(),
                    why,
                })
            })
            .collect()
    }
}

/// Why a claim lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    /// A live object holds the value, or an older claim won it.
    Taken,
    /// It won among claims, but the value still lies in another node's block: the holder has
    /// not lent it (yet); the next attempt may find it lent.
    NotLent,
}

/// A value whose claim lost.
struct LostClaim<'a> {
    got: &'a Got,
    explicit: bool,
    why: Lost,
}

impl Want {
    /// Whether a specific value was asked for (then losing its claim is an error).
    fn is_explicit(&self) -> bool {
        matches!(
            self,
            Want::Address {
                explicit: Some(_),
                ..
            } | Want::Mac { explicit: Some(_) }
                | Want::Unique(_)
        )
    }
}

/// Picks values for one attempt, never the same one twice.
struct Picker<'a> {
    tenant: &'a TenantState,
    holder: &'a ObjectId,
    me: &'a str,
    version: Version,
    now: u64,
    taken_ips: BTreeSet<(ObjectId, Ipv4Addr)>,
    taken_macs: BTreeSet<MacAddr>,
    /// Other nodes alive in view (who may lend an address of their blocks).
    lenders: BTreeSet<mesh_proto::NodeId>,
}

impl Picker<'_> {
    /// The address asked for, or one that looks free in `pool`, and its claim.
    fn address(
        &mut self,
        pool: &ObjectId,
        explicit: Option<Ipv4Addr>,
        salt: u64,
    ) -> Result<(Got, KeyValue), String> {
        let range = ipam::pool_range(self.tenant, pool)
            .ok_or_else(|| format!("{pool} was deleted meanwhile"))?;
        let space = BlockSpace::Pool(pool.clone());
        let ip = match explicit {
            Some(ip) => {
                // An address in another node's block is borrowed: the holder, alive, lends it
                // unless it handed it out (see `borrow`).
                match self.other_block(&space, u32::from(ip)) {
                    Some(owner) if !self.lenders.contains(&owner) => {
                        return Err(format!(
                            "{ip} lies in an address block of {owner}, which is not alive in this node's view to lend it: pick an address outside other nodes' blocks"
                        ));
                    }
                    _ => ip,
                }
            }
            None => {
                let mut used = ipam::unavailable(self.tenant, pool, self.holder, self.now);
                // Values in other nodes' blocks are theirs alone to hand out.
                used.extend(
                    blocks::winners(self.tenant, &space)
                        .iter()
                        .filter(|b| b.version.writer.as_str() != self.me)
                        .flat_map(|b| (0..b.len).map(move |i| Ipv4Addr::from(b.first + i))),
                );
                used.extend(
                    self.taken_ips
                        .iter()
                        .filter(|(p, _)| p == pool)
                        .map(|(_, ip)| *ip),
                );
                let seed = ipam::seed(self.me, self.version.hlc, salt);
                match ipam::pick(range, &used, seed) {
                    Some(ip) => ip,
                    None => self.borrow(pool, seed)?,
                }
            }
        };
        self.taken_ips.insert((pool.clone(), ip));
        let c = AddressClaim {
            pool: pool.clone(),
            ip,
            holder: self.holder.clone(),
            version: self.version.clone(),
        };
        let value = mesh_proto::encode_value(&c).map_err(|e| e.to_string())?;
        Ok((Got::Address(pool.clone(), ip), (c.key(), value)))
    }

    /// When every free address of `pool` lies in other nodes' blocks: one of them, in a block
    /// of a node alive in view. The claim wins only if that node consents by carving it out of
    /// its block within the claim window (`store::blocks`, lending); otherwise it loses and
    /// the allocation tries again.
    fn borrow(&self, pool: &ObjectId, seed: u64) -> Result<Ipv4Addr, String> {
        let space = BlockSpace::Pool(pool.clone());
        let mut used = ipam::unavailable(self.tenant, pool, self.holder, self.now);
        used.extend(
            self.taken_ips
                .iter()
                .filter(|(p, _)| p == pool)
                .map(|(_, ip)| *ip),
        );
        let candidates: Vec<Ipv4Addr> = blocks::winners(self.tenant, &space)
            .into_iter()
            .filter(|b| {
                b.version.writer.as_str() != self.me && self.lenders.contains(&b.version.writer)
            })
            .flat_map(|b| (0..b.len).map(move |i| Ipv4Addr::from(b.first + i)))
            .filter(|ip| !used.contains(ip))
            .collect();
        if candidates.is_empty() {
            return Err(format!(
                "no free address left in {pool} (none outside the nodes' blocks, and no node \
                 alive in view holds a free one to lend)"
            ));
        }
        Ok(candidates[(seed % candidates.len() as u64) as usize])
    }

    /// A claim on `value`, unless a live object holds it or another holder claims it.
    fn unique(&mut self, value: &UniqueValue) -> Result<(Got, KeyValue), String> {
        if ipam::unique_holder(self.tenant, value).is_some_and(|h| &h != self.holder) {
            return Err(format!("{value} is already taken"));
        }
        if ipam::unique_claimed_by_other(self.tenant, value, self.holder, self.now) {
            return Err(format!(
                "{value} is being claimed by another node right now; pick another"
            ));
        }
        let c = UniqueClaim {
            value: value.clone(),
            holder: self.holder.clone(),
            version: self.version.clone(),
        };
        let encoded = mesh_proto::encode_value(&c).map_err(|e| e.to_string())?;
        Ok((Got::Unique(value.clone()), (c.key(), encoded)))
    }

    /// The node whose winning block of `space` holds `value`, when it is another node.
    fn other_block(&self, space: &BlockSpace, value: u32) -> Option<mesh_proto::NodeId> {
        let me = mesh_proto::NodeId::new(self.me).ok()?;
        blocks::held_by_other_block(self.tenant, space, value, &me)
    }

    /// Whether a MAC lies in another node's MAC block.
    fn mac_in_other_block(&self, mac: MacAddr) -> Option<mesh_proto::NodeId> {
        blocks::mac_value(mac).and_then(|v| self.other_block(&BlockSpace::Mac, v))
    }

    /// The MAC asked for, or one in `fa:16:3e` that looks free, and its claim.
    fn mac(&mut self, explicit: Option<MacAddr>, salt: u64) -> Result<(Got, KeyValue), String> {
        let mac = match explicit {
            Some(m) => {
                if let Some(owner) = self.mac_in_other_block(m) {
                    return Err(format!(
                        "MAC {m} lies in a MAC block of {owner}: pick another MAC"
                    ));
                }
                m
            }
            None => (0..64u64)
                .map(|k| {
                    let seed = ipam::seed(self.me, self.version.hlc, salt * 64 + k + 1);
                    ipam::mac_from_seed(seed)
                })
                .find(|m| {
                    self.mac_in_other_block(*m).is_none()
                        && !self.taken_macs.contains(m)
                        && !ipam::mac_unavailable(self.tenant, *m, self.holder, self.now)
                })
                .ok_or("no free MAC found")?,
        };
        self.taken_macs.insert(mac);
        let c = MacClaim {
            mac,
            holder: self.holder.clone(),
            version: self.version.clone(),
        };
        let value = mesh_proto::encode_value(&c).map_err(|e| e.to_string())?;
        Ok((Got::Mac(mac), (c.key(), value)))
    }
}
