//! This node's own gossip key space. Every write goes through here and is sealed
//! ([`crate::mesh::pki::sealed`]) for the version chitchat will give it, which is known under the
//! chitchat lock: one more than the node's max version. Deletions are sealed tombstones (chitchat's
//! own deletion empties the value, which then could carry no signature).
//!
//! Nothing else in the agent writes to chitchat's self state; the transport drops every delta
//! about this node that arrives from elsewhere, so its max version moves only here.

use std::sync::Arc;

use chitchat::{Chitchat, ChitchatId, NodeState};
use tokio::sync::Mutex;
use tracing::warn;

use super::pki::sealed::{self, Place};
use super::pki::Signer;
use crate::Error;

/// Writes to this node's key space, sealed.
#[derive(Clone)]
pub struct OwnState {
    chitchat: Arc<Mutex<Chitchat>>,
    signer: Arc<Signer>,
    id: ChitchatId,
}

impl OwnState {
    /// Writes through `chitchat`, whose self id is `id`, sealing with `signer`.
    pub fn new(chitchat: Arc<Mutex<Chitchat>>, signer: Arc<Signer>, id: ChitchatId) -> OwnState {
        OwnState {
            chitchat,
            signer,
            id,
        }
    }

    /// Runs `f` with a writer on this node's key space, under the chitchat lock.
    pub async fn write<R>(&self, f: impl FnOnce(&mut OwnWriter<'_>) -> R) -> R {
        let mut cc = self.chitchat.lock().await;
        let mut w = OwnWriter {
            st: cc.self_node_state(),
            signer: &self.signer,
            id: &self.id,
        };
        f(&mut w)
    }
}

/// This node's key space, borrowed under the chitchat lock.
pub struct OwnWriter<'a> {
    st: &'a mut NodeState,
    signer: &'a Signer,
    id: &'a ChitchatId,
}

impl OwnWriter<'_> {
    /// The payload of `key`, unless absent or deleted.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.st.get(key).and_then(sealed::live_payload)
    }

    /// Every present key and its payload.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.st
            .key_values()
            .filter_map(|(k, v)| sealed::live_payload(v).map(|p| (k, p)))
    }

    /// Sets `key` to `payload`; nothing when it already holds that payload. A payload that
    /// cannot be sealed is not written (logged).
    pub fn set(&mut self, key: &str, payload: &str) {
        if self.get(key) == Some(payload) || payload.is_empty() {
            return;
        }
        match self.sealed(key, false, payload) {
            Ok(v) => self.st.set(key, v),
            Err(e) => warn!(key, error = %e, "cannot seal a gossip value; not published"),
        }
    }

    /// Deletes `key` (a sealed tombstone); nothing when it is absent or deleted.
    pub fn delete(&mut self, key: &str) {
        if self.get(key).is_none() {
            return;
        }
        match self.sealed(key, true, "") {
            Ok(v) => self.st.set_with_ttl(key, v),
            Err(e) => warn!(key, error = %e, "cannot seal a deletion; key left as it is"),
        }
    }

    fn sealed(&self, key: &str, tombstone: bool, payload: &str) -> Result<String, Error> {
        let place = Place {
            id: self.id,
            key,
            version: self.st.max_version() + 1,
            tombstone,
        };
        sealed::seal(self.signer, place, payload)
    }
}

/// The keys a node starts with, sealed for the versions chitchat gives initial keys: 1, 2, … in
/// order (duplicates keep their first value). The certificate must come first, at version 1, so
/// that every receiver can verify everything after it.
pub fn initial_values(
    signer: &Signer,
    id: &ChitchatId,
    kvs: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, Error> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(kvs.len());
    for (key, payload) in kvs {
        if payload.is_empty() || out.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let place = Place {
            id,
            key: &key,
            version: out.len() as u64 + 1,
            tombstone: false,
        };
        let value = sealed::seal(signer, place, &payload)?;
        out.push((key, value));
    }
    Ok(out)
}
