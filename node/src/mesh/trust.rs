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
//! Every refusal is counted and logged (at most once a second per peer).

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
}

impl TrustCounters {
    /// Whether something no honest peer sends was refused since `before`.
    fn forged_since(&self, before: &TrustCounters) -> bool {
        self.ghost_entries > before.ghost_entries
            || self.self_deltas > before.self_deltas
            || self.bad_seals > before.bad_seals
            || self.unanchored_deltas > before.unanchored_deltas
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
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    anchors: HashMap<ChitchatId, Anchor>,
    /// Node lives whose certificate is revoked.
    revoked: HashSet<ChitchatId>,
    direct: HashMap<ChitchatId, Direct>,
    checked: HashSet<u64>,
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
        ghosts = c.ghost_entries - before.ghost_entries,
        self_deltas = c.self_deltas - before.self_deltas,
        bad_seals = c.bad_seals - before.bad_seals,
        unanchored = c.unanchored_deltas - before.unanchored_deltas,
        "refused gossip no honest peer sends"
    );
}
