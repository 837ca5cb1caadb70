//! What a certified peer may tell this node about the cluster: the checks every gossip message
//! passes between the transport and chitchat.
//!
//! A valid certificate proves who the sender is, not that what it relays is true. So:
//! - **Values**: a node delta about node life X enters only as X's own sealed values
//!   ([`crate::mesh::pki::sealed`]), checked against X's key. X's key comes from X's certificate,
//!   published as X's first value (`cert`, version 1, sealed by itself) and checked against the
//!   cluster CA and X's node id once; then it is X's *anchor*. The values of a delta are checked
//!   in version order and the delta is cut at the first one that fails.
//! - **No resets, no frozen versions from relays**: a delta relayed by another node than X cannot
//!   reset X's state (its GC version is cleared, so chitchat applies it without a reset) and cannot
//!   set X's max version without values; only X itself can.
//! - **Nothing about this node** from anyone: its own deltas are dropped (chitchat would apply
//!   them to its self state).
//! - **No ghosts**: a digest entry creates a node in chitchat, so entries are kept only for the
//!   sender itself, this node, and anchored node lives.
//! - **Heartbeats** drive liveness and travel unsigned in digests. A relayed heartbeat of X is
//!   capped at what X itself last said plus a bounded lead that grows with the time since, and
//!   is ignored when X was never heard directly: a liar can keep a dead node looking alive for
//!   at most [`RELAY_WINDOW`], or make it look dead for about as long as the lead it can add.
//!
//! - **Caps per node life**: at most [`MAX_KEYS_PER_LIFE`] live keys and [`MAX_BYTES_PER_LIFE`]
//!   bytes of live values (tombstones free their key); a delta is cut at the first value past a
//!   cap, as at a bad seal, so chitchat never holds more of one member's key space.
//!
//! Every refusal is counted; what no honest peer sends is also logged (at most once a second per
//! peer).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chitchat::ChitchatId;
use mesh_proto::NodeId;
use serde::Serialize;
use tracing::warn;

use super::codec::{DigestEntry, KvStatus, Message, NodeDelta};
use super::keys::KEY_CERT;
use super::pki::sealed::{self, Place};
use super::pki::PeerCerts;

/// After this long without hearing X directly, relays cannot move X's heartbeat.
pub const RELAY_WINDOW: Duration = Duration::from_secs(30);
/// A relayed heartbeat may lead the last direct one by this much, plus [`LEAD_PER_SECOND`] per
/// second since.
const LEAD: u64 = 100;
/// More than a node gains per second: one heartbeat per gossip round and per message it handles
/// (about 100 a second at a 100 ms gossip interval).
const LEAD_PER_SECOND: u64 = 400;
/// Most node lives anchored (a bound on memory; a cluster has far fewer).
const MAX_ANCHORS: usize = 16_384;
/// Most sealed values remembered as checked.
const MAX_CHECKED: usize = 65_536;
/// Most live keys one node life may hold: its facts and health, its claims, and every record it
/// publishes or replicates (the tenant caps allow 100 000 records and 256 claims).
pub const MAX_KEYS_PER_LIFE: usize = 150_000;
/// Most bytes of live keys and values one node life may hold.
pub const MAX_BYTES_PER_LIFE: usize = 128 << 20;

/// The caps on one node life's key space.
#[derive(Clone, Copy, Debug)]
struct LifeCaps {
    keys: usize,
    bytes: usize,
}

/// What one node life holds in chitchat's state, as far as this filter let it in.
#[derive(Default)]
struct Usage {
    /// The newest version let in (chitchat ignores older ones).
    max_version: u64,
    /// Live keys and the bytes of key and value.
    keys: HashMap<String, usize>,
    bytes: usize,
}

impl Usage {
    /// How many of `kvs` (in version order) fit the caps; counts them in.
    fn admit(&mut self, kvs: &[super::codec::Kv], caps: LifeCaps) -> usize {
        for (i, kv) in kvs.iter().enumerate() {
            if kv.version <= self.max_version {
                continue;
            }
            let old = self.keys.get(&kv.key).copied();
            let new = (kv.status == KvStatus::Set).then(|| kv.key.len() + kv.value.len());
            let keys_after = self.keys.len() + usize::from(old.is_none() && new.is_some())
                - usize::from(old.is_some() && new.is_none());
            let bytes_after = self.bytes - old.unwrap_or(0) + new.unwrap_or(0);
            if new.is_some() && (keys_after > caps.keys || bytes_after > caps.bytes) {
                return i;
            }
            match new {
                Some(n) => self.keys.insert(kv.key.clone(), n),
                None => self.keys.remove(&kv.key),
            };
            self.bytes = bytes_after;
            self.max_version = kv.version;
        }
        kvs.len()
    }
}

/// What the filter refused, for `dvrmesh status`.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct TrustCounters {
    /// Digest entries for node lives without a verified certificate (ghosts), dropped.
    pub ghost_entries: u64,
    /// Node deltas about this node, dropped.
    pub self_deltas: u64,
    /// Values whose seal did not verify (the delta was cut there).
    pub bad_seals: u64,
    /// Node deltas about node lives without a verified certificate, dropped.
    pub unanchored_deltas: u64,
    /// Relayed node deltas setting a max version without values, dropped (honest relays send
    /// them too, after a garbage collection; the node itself brings its receivers up to date).
    pub relayed_max_versions: u64,
    /// Relayed deltas that would have reset a node's state, applied without the reset.
    pub resets_refused: u64,
    /// Relayed heartbeats capped or ignored.
    pub heartbeats_capped: u64,
    /// Digest entries and deltas of node lives whose certificate is revoked, dropped (honest
    /// peers relay them until they forget the node).
    pub revoked_lives: u64,
    /// Deltas cut because their node life would hold more keys or bytes than it may.
    pub over_cap_deltas: u64,
}

impl TrustCounters {
    /// Whether something no honest peer sends was refused since `before`. Ghost entries are
    /// not: while a node joins, honest peers relay digest entries of node lives whose
    /// certificate has not reached this node yet (they are counted, not logged).
    fn forged_since(&self, before: &TrustCounters) -> bool {
        self.self_deltas > before.self_deltas
            || self.bad_seals > before.bad_seals
            || self.unanchored_deltas > before.unanchored_deltas
            || self.over_cap_deltas > before.over_cap_deltas
    }
}

/// A node life's anchor: the public key of its verified certificate.
#[derive(Clone)]
struct Anchor {
    /// The public key its values are sealed with.
    key: Vec<u8>,
    /// The certificate as published, to check again when the revocation list changes.
    cert: String,
}

/// The last heartbeat a node life sent about itself, and when.
#[derive(Clone, Copy)]
struct Direct {
    heartbeat: u64,
    at: Instant,
}

/// The filter of one agent.
pub struct Trust {
    me: ChitchatId,
    certs: PeerCerts,
    caps: LifeCaps,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    anchors: HashMap<ChitchatId, Anchor>,
    /// Node lives whose certificate is revoked.
    revoked: HashSet<ChitchatId>,
    direct: HashMap<ChitchatId, Direct>,
    checked: HashSet<u64>,
    usage: HashMap<ChitchatId, Usage>,
    counters: TrustCounters,
    last_log: HashMap<SocketAddr, Instant>,
}

/// The peer a message came from: its certified node id and address.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    /// The node id of its certificate.
    pub node: &'a NodeId,
    /// Where it sends from (its gossip address).
    pub addr: SocketAddr,
}

impl Trust {
    /// A filter for the node life `me`, checking certificates with `certs`.
    pub fn new(me: ChitchatId, certs: PeerCerts) -> Trust {
        Trust {
            me,
            certs,
            caps: LifeCaps {
                keys: MAX_KEYS_PER_LIFE,
                bytes: MAX_BYTES_PER_LIFE,
            },
            state: Mutex::new(State::default()),
        }
    }

    /// Checks every anchor's certificate again (after a new revocation list) and drops those
    /// refused now: from then on their node lives' values and digest entries are refused.
    /// Returns the node lives dropped.
    pub fn recheck_anchors(&self) -> Vec<ChitchatId> {
        let mut st = self.lock();
        let mut dropped = Vec::new();
        st.anchors.retain(|id, a| {
            let good = self
                .certs
                .public_key(&a.cert)
                .is_ok_and(|(node, _)| *node.as_str() == *id.node_id);
            if !good {
                dropped.push(id.clone());
            }
            good
        });
        st.checked.clear();
        if st.revoked.len() + dropped.len() > MAX_ANCHORS {
            st.revoked.clear();
        }
        st.revoked.extend(dropped.iter().cloned());
        dropped
    }

    /// What was refused so far.
    pub fn counters(&self) -> TrustCounters {
        self.lock().counters.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The message as chitchat may see it. A delta is checked before the digest beside it, so a
    /// node met for the first time is anchored by its values and then kept in the digest.
    pub fn filter(&self, msg: Message, from: Sender<'_>, now: Instant) -> Message {
        let mut st = self.lock();
        let before = st.counters.clone();
        let msg = match msg {
            Message::Syn { digest, cluster_id } => Message::Syn {
                digest: self.digest(&mut st, digest, from, now),
                cluster_id,
            },
            Message::SynAck { digest, delta } => {
                let delta = self.delta(&mut st, delta, from);
                Message::SynAck {
                    digest: self.digest(&mut st, digest, from, now),
                    delta,
                }
            }
            Message::Ack { delta } => Message::Ack {
                delta: self.delta(&mut st, delta, from),
            },
            Message::BadCluster => Message::BadCluster,
        };
        if st.counters.forged_since(&before) {
            log_refusals(&mut st, &before, from, now);
        }
        msg
    }

    fn digest(
        &self,
        st: &mut State,
        digest: Vec<DigestEntry>,
        from: Sender<'_>,
        now: Instant,
    ) -> Vec<DigestEntry> {
        let mut out = Vec::with_capacity(digest.len());
        for mut e in digest {
            let own = *e.id.node_id == *from.node.as_str();
            if e.id == self.me {
                out.push(e);
            } else if own {
                let direct = Direct {
                    heartbeat: e.heartbeat,
                    at: now,
                };
                if st.direct.len() < MAX_ANCHORS || st.direct.contains_key(&e.id) {
                    st.direct.insert(e.id.clone(), direct);
                }
                out.push(e);
            } else if *e.id.node_id != *self.me.node_id && st.anchors.contains_key(&e.id) {
                let cap = relayed_heartbeat_cap(st.direct.get(&e.id), now);
                if e.heartbeat > cap {
                    e.heartbeat = cap;
                    st.counters.heartbeats_capped += 1;
                }
                out.push(e);
            } else if st.revoked.contains(&e.id) {
                st.counters.revoked_lives += 1;
            } else {
                st.counters.ghost_entries += 1;
            }
        }
        out
    }

    fn delta(&self, st: &mut State, delta: Vec<NodeDelta>, from: Sender<'_>) -> Vec<NodeDelta> {
        let mut out = Vec::with_capacity(delta.len());
        for d in delta {
            if *d.id.node_id == *self.me.node_id {
                st.counters.self_deltas += 1;
                continue;
            }
            if let Some(d) = self.node_delta(st, d, from) {
                out.push(d);
            }
        }
        out
    }

    /// One node delta as it may enter: sealed values up to the first bad one; from a relay, no
    /// reset and no bare max version.
    fn node_delta(&self, st: &mut State, mut d: NodeDelta, from: Sender<'_>) -> Option<NodeDelta> {
        let from_owner = *d.id.node_id == *from.node.as_str();
        if st.revoked.contains(&d.id) {
            st.counters.revoked_lives += 1;
            return None;
        }
        if !st.anchors.contains_key(&d.id) {
            self.anchor(st, &d);
        }
        if st.revoked.contains(&d.id) {
            st.counters.revoked_lives += 1;
            return None;
        }
        let Some(key) = st.anchors.get(&d.id).map(|a| a.key.clone()) else {
            st.counters.unanchored_deltas += 1;
            return None;
        };
        if !from_owner && d.last_gc_version != 0 && d.from_version_excluded == 0 {
            st.counters.resets_refused += 1;
        }
        let had_values = !d.kvs.is_empty();
        let good = d
            .kvs
            .iter()
            .take_while(|kv| check_value(st, &d.id, kv, &key))
            .count();
        if good < d.kvs.len() {
            st.counters.bad_seals += 1;
            d.kvs.truncate(good);
        }
        self.hold_to_caps(st, &mut d, from_owner);
        if d.kvs.is_empty() {
            if !had_values && !from_owner && d.set_max_version.is_some() {
                st.counters.relayed_max_versions += 1;
            }
            if had_values || !from_owner || d.set_max_version.is_none() {
                return None;
            }
        }
        if !d.kvs.is_empty() {
            d.set_max_version = None;
        }
        if !from_owner {
            d.last_gc_version = 0;
        }
        Some(d)
    }

    /// Cuts `d` at the first value that would take its node life past a cap. A delta from the
    /// node itself from version 0 under a newer garbage collection resets its state: its usage
    /// starts again.
    fn hold_to_caps(&self, st: &mut State, d: &mut NodeDelta, from_owner: bool) {
        if from_owner && d.last_gc_version != 0 && d.from_version_excluded == 0 {
            st.usage.remove(&d.id);
        }
        if !st.usage.contains_key(&d.id) && st.usage.len() >= MAX_ANCHORS {
            st.usage.clear();
        }
        let within = st
            .usage
            .entry(d.id.clone())
            .or_default()
            .admit(&d.kvs, self.caps);
        if within < d.kvs.len() {
            st.counters.over_cap_deltas += 1;
            d.kvs.truncate(within);
        }
    }

    /// Anchors a node life from its own first value: its certificate at version 1, chained to
    /// the cluster CA, naming the node, and sealed with that certificate's key.
    fn anchor(&self, st: &mut State, d: &NodeDelta) {
        let Some(kv) = d
            .kvs
            .first()
            .filter(|kv| kv.key == KEY_CERT && kv.version == 1 && kv.status == KvStatus::Set)
        else {
            return;
        };
        let Some(cert) = sealed::payload(&kv.value) else {
            return;
        };
        let Ok((node, key)) = self.certs.public_key(cert) else {
            if self.certs.is_revoked(cert) && st.revoked.len() < MAX_ANCHORS {
                st.revoked.insert(d.id.clone());
            }
            return;
        };
        let place = Place {
            id: &d.id,
            key: KEY_CERT,
            version: 1,
            tombstone: false,
        };
        if node.as_str() == &*d.id.node_id && sealed::open(&kv.value, place, &key).is_some() {
            if st.anchors.len() >= MAX_ANCHORS {
                st.anchors.clear();
            }
            let cert = cert.to_string();
            st.anchors.insert(d.id.clone(), Anchor { key, cert });
        }
    }
}

/// Whether one value of node life `id` is sealed by its anchor; remembered when it is.
fn check_value(st: &mut State, id: &ChitchatId, kv: &super::codec::Kv, key: &[u8]) -> bool {
    let tombstone = match kv.status {
        KvStatus::Set => false,
        KvStatus::DeleteAfterTtl => true,
        KvStatus::Deleted => return false,
    };
    let fingerprint = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (id, &kv.key, kv.version, tombstone, &kv.value).hash(&mut h);
        h.finish()
    };
    if st.checked.contains(&fingerprint) {
        return true;
    }
    let place = Place {
        id,
        key: &kv.key,
        version: kv.version,
        tombstone,
    };
    let ok = sealed::open(&kv.value, place, key).is_some();
    if ok {
        if st.checked.len() >= MAX_CHECKED {
            st.checked.clear();
        }
        st.checked.insert(fingerprint);
    }
    ok
}

/// The highest heartbeat of a node life a relay may report: none beyond what the node itself
/// said when it was never heard directly or not for [`RELAY_WINDOW`]; else that plus a lead that
/// grows with the time since.
fn relayed_heartbeat_cap(direct: Option<&Direct>, now: Instant) -> u64 {
    let Some(d) = direct else {
        return 0;
    };
    let since = now.saturating_duration_since(d.at).min(RELAY_WINDOW);
    d.heartbeat
        .saturating_add(LEAD)
        .saturating_add(LEAD_PER_SECOND.saturating_mul(since.as_secs()))
}

/// Logs what this message had refused, at most once a second per peer.
fn log_refusals(st: &mut State, before: &TrustCounters, from: Sender<'_>, now: Instant) {
    if st
        .last_log
        .get(&from.addr)
        .is_some_and(|t| now.saturating_duration_since(*t) < Duration::from_secs(1))
    {
        return;
    }
    if st.last_log.len() >= MAX_ANCHORS {
        st.last_log.clear();
    }
    st.last_log.insert(from.addr, now);
    let c = &st.counters;
    warn!(
        peer = %from.addr, node = %from.node,
        self_deltas = c.self_deltas - before.self_deltas,
        bad_seals = c.bad_seals - before.bad_seals,
        unanchored = c.unanchored_deltas - before.unanchored_deltas,
        over_cap = c.over_cap_deltas - before.over_cap_deltas,
        "refused gossip no honest peer sends"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::codec::Kv;
    use crate::mesh::pki::{init_ca, issue_node_cert, Credentials, Signer};

    fn creds(dir: &std::path::Path, node: &str) -> Credentials {
        let id = NodeId::new(node).expect("id");
        let (cert, key) =
            issue_node_cert(&dir.join("ca"), &id, &dir.join(node), 30).expect("issued");
        Credentials::load(&dir.join("ca/ca.pem"), &cert, &key).expect("loaded")
    }

    fn kv(signer: &Signer, id: &ChitchatId, key: &str, version: u64, payload: &str) -> Kv {
        let tombstone = payload.is_empty();
        let place = Place {
            id,
            key,
            version,
            tombstone,
        };
        Kv {
            key: key.into(),
            value: sealed::seal(signer, place, payload).expect("sealed"),
            version,
            status: if tombstone {
                KvStatus::DeleteAfterTtl
            } else {
                KvStatus::Set
            },
        }
    }

    fn delta(id: &ChitchatId, kvs: Vec<Kv>) -> Message {
        Message::Ack {
            delta: vec![NodeDelta {
                id: id.clone(),
                last_gc_version: 0,
                from_version_excluded: kvs.first().map_or(0, |k| k.version - 1),
                kvs,
                set_max_version: None,
            }],
        }
    }

    fn kept(msg: Message) -> Vec<String> {
        match msg {
            Message::Ack { delta } => delta
                .into_iter()
                .flat_map(|d| d.kvs.into_iter().map(|k| k.key))
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_node_life_past_its_key_cap_is_cut_and_a_tombstone_frees_a_key() {
        let dir = tempfile::tempdir().expect("tmp");
        init_ca(&dir.path().join("ca"), 30).expect("ca");
        let me = creds(dir.path(), "me");
        let x = creds(dir.path(), "x");
        let addr: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let me_id = ChitchatId::new("me", 1, "127.0.0.1:7001".parse().expect("addr"));
        let mut trust = Trust::new(me_id, me.peer_certs().expect("certs"));
        trust.caps = LifeCaps {
            keys: 5,
            bytes: 1 << 20,
        };
        let x_id = ChitchatId::new("x", 1, addr);
        let signer = x.signer().expect("signer");
        let node = NodeId::new("x").expect("id");
        let from = Sender { node: &node, addr };
        let now = Instant::now();

        let mut kvs = vec![kv(
            &signer,
            &x_id,
            KEY_CERT,
            1,
            &x.published_cert().expect("cert"),
        )];
        kvs.extend((2..=8).map(|v| kv(&signer, &x_id, &format!("k{v}"), v, "value")));
        let first = kept(trust.filter(delta(&x_id, kvs), from, now));
        assert_eq!(
            first,
            ["cert", "k2", "k3", "k4", "k5"],
            "cut at the sixth key"
        );
        assert_eq!(trust.counters().over_cap_deltas, 1);

        // Rewriting a key it holds is fine; a new key is not, until a tombstone frees one.
        let rewrite = kept(trust.filter(
            delta(&x_id, vec![kv(&signer, &x_id, "k2", 6, "new value")]),
            from,
            now,
        ));
        assert_eq!(rewrite, ["k2"]);
        let more = vec![
            kv(&signer, &x_id, "k9", 7, "value"),
            kv(&signer, &x_id, "k10", 8, "value"),
        ];
        assert!(kept(trust.filter(delta(&x_id, more), from, now)).is_empty());
        assert_eq!(trust.counters().over_cap_deltas, 2);
        let freed = vec![
            kv(&signer, &x_id, "k3", 7, ""),
            kv(&signer, &x_id, "k9", 8, "value"),
        ];
        assert_eq!(
            kept(trust.filter(delta(&x_id, freed), from, now)),
            ["k3", "k9"]
        );
    }
}
