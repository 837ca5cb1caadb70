//! Keeping the merged [`TenantState`] up to date from what changed: each node life's tenant
//! values are compared with what was merged from that life before, and only the objects and
//! claims the changed values touch are merged again.
//!
//! The rules are those of a merge from nothing ([`Merger::update`] with `full`), which is the
//! specification: a value breaking a rule is refused with a problem; a node's values beyond its
//! caps are refused in the order lives and keys come. An update falls back to a full merge
//! whenever the caps could make the order matter (a node at or over a cap), so merging
//! incrementally gives exactly what merging everything again would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_proto::{
    AddressBlock, AddressClaim, HlcTimestamp, MacClaim, NodeId, ObjectId, ObjectKind, Record,
    TenantObject, UniqueClaim, Version,
};

use super::state::{
    Admission, Clock, Decoded, TenantState, Writers, MAX_CLAIMS_PER_NODE, MAX_PORTS_PER_HOST,
    MAX_PROBLEMS, MAX_RECORDS_PER_NODE,
};

/// One node life's tenant values, decoded, by key, each with its key's gossip version (a value
/// is the same while its version is).
pub type TenantValues = BTreeMap<String, (u64, Arc<Decoded>)>;

/// An object: its kind and id.
type ObjectKey = (ObjectKind, ObjectId);

/// The merged state and what it was merged from, kept between updates. `L` names a node life
/// (the view uses chitchat's id of the life); lives are merged in `L`'s order.
pub struct Merger<L> {
    state: TenantState,
    /// Each life merged: the node it speaks for and its values.
    lives: BTreeMap<L, (NodeId, Arc<TenantValues>)>,
    /// Every accepted record, by object and by the life publishing it.
    contributions: BTreeMap<ObjectKey, BTreeMap<L, Arc<Record>>>,
    /// Accepted claims by (key, version), with how many lives publish each.
    claims: BTreeMap<(String, Version), usize>,
    /// Values refused as breaking a rule, by (life, key): the problem line.
    refused: BTreeMap<(L, String), String>,
    /// The timestamps of accepted values, counted (the newest is the state's `max_hlc`).
    stamps: BTreeMap<HlcTimestamp, usize>,
    /// What each node has had accepted, to hold it to its caps.
    counts: BTreeMap<NodeId, NodeCounts>,
    /// Values refused because their node is over a cap, by node (full merges only).
    over_cap: BTreeMap<NodeId, u64>,
}

impl<L: Ord + Clone> Default for Merger<L> {
    fn default() -> Self {
        Merger {
            state: TenantState::default(),
            lives: BTreeMap::new(),
            contributions: BTreeMap::new(),
            claims: BTreeMap::new(),
            refused: BTreeMap::new(),
            stamps: BTreeMap::new(),
            counts: BTreeMap::new(),
            over_cap: BTreeMap::new(),
        }
    }
}

/// What an update merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The values that changed since the last update.
    Changes,
    /// The values that changed, and again every value a rule that depends on time may now
    /// judge otherwise: the values refused (one stamped too far ahead is accepted once its time
    /// comes), and with [`Writers::Operators`] every value (an operator's seal stops counting
    /// once its certificate expires or is revoked), which is a merge of everything.
    Recheck,
    /// Every value again.
    Everything,
}

/// How an update merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    /// Only what changed.
    Changes,
    /// Everything again (asked for, or a node at a cap).
    Everything,
}

/// An update cannot be merged incrementally: merge everything.
struct NeedsFull;

/// A value to take out or put in.
type Change<L> = (L, NodeId, String, Arc<Decoded>);

/// What one node has had accepted.
#[derive(Default)]
struct NodeCounts {
    /// Objects it publishes, with how many of its lives publish each.
    records: BTreeMap<ObjectKey, usize>,
    /// How many of those are ports.
    ports: usize,
    /// Distinct claims it publishes.
    claims: usize,
}

impl NodeCounts {
    /// Counts one more life publishing `key`; false when a new object would exceed a cap.
    fn admit_record(&mut self, key: &ObjectKey) -> bool {
        if let Some(n) = self.records.get_mut(key) {
            *n += 1;
            return true;
        }
        if self.records.len() >= MAX_RECORDS_PER_NODE
            || (key.0 == ObjectKind::Port && self.ports >= MAX_PORTS_PER_HOST)
        {
            return false;
        }
        self.records.insert(key.clone(), 1);
        self.ports += usize::from(key.0 == ObjectKind::Port);
        true
    }

    fn release_record(&mut self, key: &ObjectKey) {
        if let Some(n) = self.records.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.records.remove(key);
                self.ports -= usize::from(key.0 == ObjectKind::Port);
            }
        }
    }

    /// Whether one more object or claim could hit a cap: the order of values would matter.
    fn near_caps(&self) -> bool {
        self.records.len() >= MAX_RECORDS_PER_NODE
            || self.ports >= MAX_PORTS_PER_HOST
            || self.claims >= MAX_CLAIMS_PER_NODE
    }
}

impl<L: Ord + Clone> Merger<L> {
    /// The merged state.
    pub fn state(&self) -> &TenantState {
        &self.state
    }

    /// The merged state, taken.
    pub fn into_state(self) -> TenantState {
        self.state
    }

    /// Merges `lives` (life, the node it speaks for, its values) as `pass` says. A life's values
    /// are the same while their `Arc` is; a value is the same while its version and `Arc` are.
    /// When the result equals the previous state, the previous state is kept (clones of it stay
    /// shared).
    pub fn update(
        &mut self,
        lives: impl IntoIterator<Item = (L, NodeId, Arc<TenantValues>)>,
        admission: &Admission<'_>,
        pass: Pass,
    ) -> Merged {
        let next: BTreeMap<L, (NodeId, Arc<TenantValues>)> =
            lives.into_iter().map(|(l, n, v)| (l, (n, v))).collect();
        let everything = match pass {
            Pass::Everything => true,
            Pass::Recheck => admission.writers == Writers::Operators,
            Pass::Changes => false,
        };
        let retry_refused = pass == Pass::Recheck;
        if !everything && self.merge_changes(&next, admission, retry_refused).is_ok() {
            return Merged::Changes;
        }
        self.merge_everything(next, admission);
        Merged::Everything
    }

    fn merge_changes(
        &mut self,
        next: &BTreeMap<L, (NodeId, Arc<TenantValues>)>,
        admission: &Admission<'_>,
        retry_refused: bool,
    ) -> Result<(), NeedsFull> {
        let (mut removals, mut additions) = changes(&self.lives, next);
        if retry_refused {
            self.retry_refused(next, &mut removals, &mut additions);
        }
        let touched = removals.iter().chain(&additions).map(|(_, n, _, _)| n);
        if touched.into_iter().any(|n| {
            self.over_cap.contains_key(n) || self.counts.get(n).is_some_and(NodeCounts::near_caps)
        }) {
            return Err(NeedsFull);
        }
        let mut dirty = BTreeSet::new();
        for (life, node, key, value) in removals {
            self.remove(&life, &node, key, &value, &mut dirty)?;
        }
        self.lives = next.clone();
        for (life, node, key, value) in additions {
            match self.add(&life, &node, &key, &value, admission, &mut dirty) {
                Ok(()) => {}
                Err(Refusal::OverCap) => return Err(NeedsFull),
                Err(Refusal::Invalid(why)) => {
                    self.refused
                        .insert((life, key.clone()), format!("{node} {key}: {why}"));
                }
            }
        }
        self.finish(dirty);
        Ok(())
    }

    /// Adds to the changes every refused value the changes do not already touch, out and in
    /// again: it is judged anew (removing a refused value only forgets its refusal).
    fn retry_refused(
        &self,
        next: &BTreeMap<L, (NodeId, Arc<TenantValues>)>,
        removals: &mut Vec<Change<L>>,
        additions: &mut Vec<Change<L>>,
    ) {
        let touched: BTreeSet<(&L, &String)> = removals
            .iter()
            .chain(additions.iter())
            .map(|(l, _, k, _)| (l, k))
            .collect();
        let mut retries = Vec::new();
        for (life, key) in self.refused.keys() {
            if touched.contains(&(life, key)) {
                continue;
            }
            let Some((node, values)) = next.get(life) else {
                continue;
            };
            if let Some((_, value)) = values.get(key) {
                retries.push((life.clone(), node.clone(), key.clone(), value.clone()));
            }
        }
        removals.extend(retries.iter().cloned());
        additions.extend(retries);
    }

    fn merge_everything(
        &mut self,
        next: BTreeMap<L, (NodeId, Arc<TenantValues>)>,
        admission: &Admission<'_>,
    ) {
        let previous = std::mem::take(self);
        self.lives = next;
        let lives: Vec<(L, NodeId, Arc<TenantValues>)> = self
            .lives
            .iter()
            .map(|(l, (n, v))| (l.clone(), n.clone(), v.clone()))
            .collect();
        let mut dirty = BTreeSet::new();
        for (life, node, values) in lives {
            for (key, (_, value)) in values.iter() {
                match self.add(&life, &node, key, value, admission, &mut dirty) {
                    Ok(()) => {}
                    Err(Refusal::OverCap) => *self.over_cap.entry(node.clone()).or_default() += 1,
                    Err(Refusal::Invalid(why)) => {
                        self.refused
                            .insert((life.clone(), key.clone()), format!("{node} {key}: {why}"));
                    }
                }
            }
        }
        self.finish(dirty);
        if self.state.same_content(&previous.state) {
            self.state = previous.state;
        }
    }

    /// Takes out a value merged before; `NeedsFull` when it was not (refused over a cap).
    fn remove(
        &mut self,
        life: &L,
        node: &NodeId,
        key: String,
        value: &Decoded,
        dirty: &mut BTreeSet<ObjectKey>,
    ) -> Result<(), NeedsFull> {
        if self.refused.remove(&(life.clone(), key.clone())).is_some() {
            return Ok(());
        }
        match value {
            Decoded::Record(rec) => {
                let object = (rec.kind(), rec.id().clone());
                let published = self.contributions.get_mut(&object).ok_or(NeedsFull)?;
                published.remove(life).ok_or(NeedsFull)?;
                if published.is_empty() {
                    self.contributions.remove(&object);
                }
                if let Some(c) = self.counts.get_mut(node) {
                    c.release_record(&object);
                }
                self.unstamp(rec.version().hlc);
                dirty.insert(object);
                Ok(())
            }
            Decoded::Address(c) => self.remove_claim(node, key, c),
            Decoded::Mac(c) => self.remove_claim(node, key, c),
            Decoded::Unique(c) => self.remove_claim(node, key, c),
            Decoded::Block(c) => self.remove_claim(node, key, c),
            Decoded::Malformed(_) => Err(NeedsFull),
            Decoded::Ignored => Ok(()),
        }
    }

    fn remove_claim<C: Claim>(
        &mut self,
        node: &NodeId,
        key: String,
        c: &C,
    ) -> Result<(), NeedsFull> {
        let id = (key, c.version().clone());
        let n = self.claims.get_mut(&id).ok_or(NeedsFull)?;
        *n -= 1;
        if *n == 0 {
            self.claims.remove(&id);
            if let Some(counts) = self.counts.get_mut(node) {
                counts.claims -= 1;
            }
            self.unstamp(c.version().hlc);
            c.unfile(&mut self.state);
        }
        Ok(())
    }

    /// Puts in one value of `life`, checked against the rules and `node`'s caps.
    fn add(
        &mut self,
        life: &L,
        node: &NodeId,
        key: &str,
        value: &Decoded,
        admission: &Admission<'_>,
        dirty: &mut BTreeSet<ObjectKey>,
    ) -> Result<(), Refusal> {
        let clock = admission.clock;
        match value {
            Decoded::Record(rec) => {
                check_record(node, key, rec, admission)?;
                let object = (rec.kind(), rec.id().clone());
                if !self
                    .counts
                    .entry(node.clone())
                    .or_default()
                    .admit_record(&object)
                {
                    return Err(Refusal::OverCap);
                }
                self.stamp(rec.version().hlc);
                self.contributions
                    .entry(object.clone())
                    .or_default()
                    .insert(life.clone(), rec.clone());
                dirty.insert(object);
                Ok(())
            }
            Decoded::Address(c) => self.add_claim(node, key, c, clock),
            Decoded::Mac(c) => self.add_claim(node, key, c, clock),
            Decoded::Unique(c) => self.add_claim(node, key, c, clock),
            Decoded::Block(c) => self.add_claim(node, key, c, clock),
            Decoded::Malformed(why) => Err(Refusal::Invalid(why.clone())),
            Decoded::Ignored => Ok(()),
        }
    }

    /// Checks a claim sits under its own key in its writer's key space, and files it unless
    /// already filed (same key and version, e.g. from another life of the node): each claim
    /// counts once.
    fn add_claim<C: Claim>(
        &mut self,
        node: &NodeId,
        key: &str,
        c: &C,
        clock: Clock,
    ) -> Result<(), Refusal> {
        let version = c.version();
        if c.own_key() != key || &version.writer != node {
            return Err("claim stored under another key or by another node".into());
        }
        c.check()?;
        check_clock(version, clock)?;
        let id = (key.to_string(), version.clone());
        if let Some(n) = self.claims.get_mut(&id) {
            *n += 1;
            return Ok(());
        }
        let counts = self.counts.entry(node.clone()).or_default();
        if counts.claims >= MAX_CLAIMS_PER_NODE {
            return Err(Refusal::OverCap);
        }
        counts.claims += 1;
        self.claims.insert(id, 1);
        self.stamp(version.hlc);
        c.clone().file(&mut self.state);
        Ok(())
    }

    fn stamp(&mut self, hlc: HlcTimestamp) {
        *self.stamps.entry(hlc).or_default() += 1;
    }

    fn unstamp(&mut self, hlc: HlcTimestamp) {
        if let Some(n) = self.stamps.get_mut(&hlc) {
            *n -= 1;
            if *n == 0 {
                self.stamps.remove(&hlc);
            }
        }
    }

    /// Settles the objects touched, the newest timestamp and the problems.
    fn finish(&mut self, dirty: BTreeSet<ObjectKey>) {
        for object in dirty {
            self.settle(object);
        }
        self.state.max_hlc = self.stamps.keys().next_back().copied().unwrap_or_default();
        let mut problems: Vec<String> = self.refused.values().take(MAX_PROBLEMS).cloned().collect();
        for (node, n) in &self.over_cap {
            if problems.len() < MAX_PROBLEMS {
                problems.push(format!(
                    "{node}: {n} values refused over its caps (at most {MAX_CLAIMS_PER_NODE} claims, {MAX_PORTS_PER_HOST} ports, {MAX_RECORDS_PER_NODE} records per node)"
                ));
            }
        }
        if problems != self.state.problems {
            self.state.problems = problems;
        }
        if self.over_cap != self.state.over_cap {
            self.state.over_cap = self.over_cap.clone();
        }
    }

    /// One object's winning record (the newest version; the first life's among equals) and its
    /// publishers (each node's version from its last life publishing it), written to the state
    /// only where they changed.
    fn settle(&mut self, object: ObjectKey) {
        let Some(published) = self.contributions.get(&object) else {
            self.state.records.remove(&object);
            self.state.publishers.remove(&object);
            return;
        };
        let mut winner: Option<&Arc<Record>> = None;
        let mut publishers = BTreeMap::new();
        for (life, rec) in published {
            if let Some((node, _)) = self.lives.get(life) {
                publishers.insert(node.clone(), rec.version().clone());
            }
            if winner.is_none_or(|w| w.version() < rec.version()) {
                winner = Some(rec);
            }
        }
        let Some(winner) = winner else {
            return;
        };
        let same = |cur: &Arc<Record>| Arc::ptr_eq(cur, winner) || cur == winner;
        if !self.state.records.get(&object).is_some_and(same) {
            self.state.records.insert(object.clone(), winner.clone());
        }
        if self.state.publishers.get(&object) != Some(&publishers) {
            self.state.publishers.insert(object, publishers);
        }
    }
}

impl TenantState {
    /// Merges everything published. `entries` yields (publisher, key, value): each run of
    /// entries from one publisher counts as one node life. Keys outside the tenant prefixes are
    /// ignored. A record or claim stamped further ahead of `clock` than its skew allows is
    /// refused (a problem): one such timestamp would otherwise pin every node's clock.
    ///
    /// With [`Writers::Operators`], a record of anything but a port counts only when an operator
    /// credential sealed it (a problem otherwise). The rules are [`Merger`]'s.
    pub fn merge<'a>(
        entries: impl IntoIterator<Item = (&'a NodeId, &'a str, &'a str)>,
        admission: &Admission<'_>,
    ) -> Self {
        let mut lives: Vec<(usize, NodeId, TenantValues)> = Vec::new();
        for (node, key, value) in entries {
            if !Decoded::is_tenant_key(key) {
                continue;
            }
            if lives.last().is_none_or(|(_, n, _)| n != node) {
                lives.push((lives.len(), node.clone(), TenantValues::new()));
            }
            if let Some((_, _, values)) = lives.last_mut() {
                values.insert(key.to_string(), (0, Arc::new(Decoded::of(key, value))));
            }
        }
        let mut merger = Merger::default();
        merger.update(
            lives.into_iter().map(|(l, n, v)| (l, n, Arc::new(v))),
            admission,
            Pass::Everything,
        );
        merger.into_state()
    }
}

/// The values to take out of lives that changed or went, and to put in from lives that changed
/// or came, in (life, key) order.
fn changes<L: Ord + Clone>(
    before: &BTreeMap<L, (NodeId, Arc<TenantValues>)>,
    after: &BTreeMap<L, (NodeId, Arc<TenantValues>)>,
) -> (Vec<Change<L>>, Vec<Change<L>>) {
    let empty = TenantValues::new();
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    let lives: BTreeSet<&L> = before.keys().chain(after.keys()).collect();
    for life in lives {
        let old = before.get(life);
        let new = after.get(life);
        if let (Some((_, a)), Some((_, b))) = (old, new) {
            if Arc::ptr_eq(a, b) {
                continue;
            }
        }
        let old_values = old.map_or(&empty, |(_, v)| v.as_ref());
        let new_values = new.map_or(&empty, |(_, v)| v.as_ref());
        let same = |a: &(u64, Arc<Decoded>), b: &(u64, Arc<Decoded>)| {
            a.0 == b.0 && Arc::ptr_eq(&a.1, &b.1)
        };
        if let Some((node, _)) = old {
            for (key, value) in old_values {
                if !new_values.get(key).is_some_and(|v| same(v, value)) {
                    removals.push((life.clone(), node.clone(), key.clone(), value.1.clone()));
                }
            }
        }
        if let Some((node, _)) = new {
            for (key, value) in new_values {
                if !old_values.get(key).is_some_and(|v| same(v, value)) {
                    additions.push((life.clone(), node.clone(), key.clone(), value.1.clone()));
                }
            }
        }
    }
    (removals, additions)
}

/// The rules a record must satisfy before caps: its key, the clock bound, who may write it, and
/// for a port, that its host publishes it.
fn check_record(
    publisher: &NodeId,
    key: &str,
    rec: &Record,
    admission: &Admission<'_>,
) -> Result<(), Refusal> {
    if rec.key() != key {
        return Err("record stored under another key".into());
    }
    check_clock(rec.version(), admission.clock)?;
    if admission.writers == Writers::Operators && rec.kind() != ObjectKind::Port {
        admission.authority.operator_of(rec).map_err(|why| {
            format!(
                "{:?} record refused: [tenancy] writers = \"operators\" and {why}",
                rec.kind()
            )
        })?;
    }
    if rec.kind() == ObjectKind::Port {
        // Only a port's host publishes it, and only the host writes it.
        if &rec.version().writer != publisher {
            return Err("port record published by a node other than its writer".into());
        }
        if let Some(TenantObject::Port(p)) = rec.body() {
            if &p.host != publisher {
                return Err(Refusal::Invalid(format!(
                    "port hosted on {} published by {publisher}",
                    p.host
                )));
            }
        }
    }
    Ok(())
}

/// Why a published value was not merged.
enum Refusal {
    /// It breaks a rule (a problem with the reason).
    Invalid(String),
    /// Its publisher is over a per-node cap (counted, reported once per publisher).
    OverCap,
}

impl From<String> for Refusal {
    fn from(why: String) -> Self {
        Refusal::Invalid(why)
    }
}

impl From<&str> for Refusal {
    fn from(why: &str) -> Self {
        Refusal::Invalid(why.to_string())
    }
}

/// Refuses a version stamped further ahead of the local clock than the skew allows.
fn check_clock(v: &Version, clock: Clock) -> Result<(), String> {
    if clock.admits(v.hlc) {
        Ok(())
    } else {
        Err(format!(
            "stamped ahead of this node's clock by more than the {} ms skew allowed",
            clock.max_skew_ms
        ))
    }
}

/// What merging needs of a claim: the key it must sit under, its version, and where it goes.
/// Each list of claims is kept in (version, key) order, whatever order they came in.
trait Claim: Clone + PartialEq {
    /// Whether the claim's own fields make sense (beyond decoding).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn own_key(&self) -> String;
    fn version(&self) -> &Version;
    /// The list it goes in.
    fn list<'s>(&self, state: &'s mut TenantState) -> &'s mut Vec<Self>;
    /// Whether the list is empty once the claim is taken out: the entry is then dropped.
    fn drop_list_if_empty(&self, state: &mut TenantState);

    fn file(self, state: &mut TenantState) {
        let at = (self.version().clone(), self.own_key());
        let list = self.list(state);
        let pos = list.partition_point(|c| (c.version().clone(), c.own_key()) <= at);
        list.insert(pos, self);
    }

    fn unfile(&self, state: &mut TenantState) {
        let list = self.list(state);
        if let Some(pos) = list.iter().position(|c| c == self) {
            list.remove(pos);
        }
        self.drop_list_if_empty(state);
    }
}

impl Claim for AddressClaim {
    fn own_key(&self) -> String {
        self.key()
    }
    fn version(&self) -> &Version {
        &self.version
    }
    fn list<'s>(&self, state: &'s mut TenantState) -> &'s mut Vec<Self> {
        state
            .address_claims
            .entry((self.pool.clone(), self.ip))
            .or_default()
    }
    fn drop_list_if_empty(&self, state: &mut TenantState) {
        let at = (self.pool.clone(), self.ip);
        if state.address_claims.get(&at).is_some_and(Vec::is_empty) {
            state.address_claims.remove(&at);
        }
    }
}

impl Claim for AddressBlock {
    fn check(&self) -> Result<(), String> {
        self.last().map(|_| ()).map_err(|e| e.to_string())
    }
    fn own_key(&self) -> String {
        self.key()
    }
    fn version(&self) -> &Version {
        &self.version
    }
    fn list<'s>(&self, state: &'s mut TenantState) -> &'s mut Vec<Self> {
        state.blocks.entry(self.space.clone()).or_default()
    }
    fn drop_list_if_empty(&self, state: &mut TenantState) {
        if state.blocks.get(&self.space).is_some_and(Vec::is_empty) {
            state.blocks.remove(&self.space);
        }
    }
}

impl Claim for MacClaim {
    fn own_key(&self) -> String {
        self.key()
    }
    fn version(&self) -> &Version {
        &self.version
    }
    fn list<'s>(&self, state: &'s mut TenantState) -> &'s mut Vec<Self> {
        state.mac_claims.entry(self.mac).or_default()
    }
    fn drop_list_if_empty(&self, state: &mut TenantState) {
        if state.mac_claims.get(&self.mac).is_some_and(Vec::is_empty) {
            state.mac_claims.remove(&self.mac);
        }
    }
}

impl Claim for UniqueClaim {
    fn own_key(&self) -> String {
        self.key()
    }
    fn version(&self) -> &Version {
        &self.version
    }
    fn list<'s>(&self, state: &'s mut TenantState) -> &'s mut Vec<Self> {
        state.unique_claims.entry(self.value.clone()).or_default()
    }
    fn drop_list_if_empty(&self, state: &mut TenantState) {
        if state
            .unique_claims
            .get(&self.value)
            .is_some_and(Vec::is_empty)
        {
            state.unique_claims.remove(&self.value);
        }
    }
}

#[cfg(test)]
mod tests;
