//! Claiming addresses and MACs without a central allocator: pick what looks free in the view,
//! publish claims, wait the claim window, and keep them only if every claim won (the oldest fresh
//! claim wins); otherwise withdraw and try again.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use mesh_proto::{AddressClaim, MacAddr, MacClaim, ObjectId, Version};

use super::{wall_ms, ConfigService};
use crate::tenant::{ipam, TenantState};

/// A gossip key and its value.
type KeyValue = (String, String);

/// How many times an allocation is retried after losing a claim.
const MAX_CLAIM_ATTEMPTS: u64 = 8;

/// One value to allocate.
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
}

/// One allocated value.
pub(super) enum Got {
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
pub(super) struct Claimed(Vec<Got>);

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
            if let Some((g, _)) = lost.iter().find(|(_, explicit)| *explicit) {
                return Err(format!(
                    "{g} was claimed concurrently by another node; pick another"
                ));
            }
            if let Some((g, _)) = lost.last() {
                last_reason = format!("lost the claim on {g}");
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
        };
        let mut got = Vec::with_capacity(wants.len());
        let mut kvs = Vec::with_capacity(wants.len());
        for (i, want) in wants.iter().enumerate() {
            let salt = attempt * 64 + i as u64;
            let (g, kv) = match want {
                Want::Address { pool, explicit } => picker.address(pool, *explicit, salt)?,
                Want::Mac { explicit } => picker.mac(*explicit, salt)?,
            };
            got.push(g);
            kvs.push(kv);
        }
        Ok((got, kvs))
    }

    /// The values whose claim `holder` lost, each with whether it was asked for explicitly.
    fn lost<'a>(&self, holder: &ObjectId, wants: &[Want], got: &'a [Got]) -> Vec<(&'a Got, bool)> {
        let view = self.view.load();
        let now = wall_ms();
        wants
            .iter()
            .zip(got)
            .filter(|(_, g)| match g {
                Got::Address(pool, ip) => {
                    !ipam::address_claim_won(&view.tenant, pool, *ip, holder, now)
                }
                Got::Mac(mac) => !ipam::mac_claim_won(&view.tenant, *mac, holder, now),
            })
            .map(|(want, g)| (g, want.is_explicit()))
            .collect()
    }
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
        let ip = match explicit {
            Some(ip) => ip,
            None => {
                let mut used = ipam::unavailable(self.tenant, pool, self.holder, self.now);
                used.extend(
                    self.taken_ips
                        .iter()
                        .filter(|(p, _)| p == pool)
                        .map(|(_, ip)| *ip),
                );
                let seed = ipam::seed(self.me, self.version.hlc, salt);
                ipam::pick(range, &used, seed)
                    .ok_or_else(|| format!("no free address left in {pool}"))?
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

    /// The MAC asked for, or one in `fa:16:3e` that looks free, and its claim.
    fn mac(&mut self, explicit: Option<MacAddr>, salt: u64) -> Result<(Got, KeyValue), String> {
        let mac = match explicit {
            Some(m) => m,
            None => (0..64u64)
                .map(|k| {
                    let seed = ipam::seed(self.me, self.version.hlc, salt * 64 + k + 1);
                    ipam::mac_from_seed(seed)
                })
                .find(|m| {
                    !self.taken_macs.contains(m)
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
