//! Digests as changes on one connection: a chitchat digest written against the last digest the
//! peer sent on the same connection, which the peer still keeps.
//!
//! Every Syn and SynAck carries the sender's digest of every node it knows, about 47 bytes a
//! node, so idle gossip grows with the cluster and the rounds per second. Two nodes of a settled
//! cluster know the same node lives with the same versions; their digests differ in heartbeats,
//! a few rounds apart. Written against the peer's own digest, an entry takes 2 or 3 bytes.
//!
//! A frame of kind [`KIND_GOSSIP_LINKED`] holds: `seq` (u32 LE; `0`: this digest is not kept, do
//! not write against it), `base` (u32 LE: the receiver's `seq` it is written against; `0`: none),
//! chitchat's 4-byte header, the changes, and the rest of the message as chitchat wrote it. The
//! changes: for each entry of the base, in the base's order, one byte, `0` gone or `0x80` with bit
//! 0/1/2 set when the heartbeat / last GC version / max version changed, each change a zigzag
//! LEB128 of the wrapping difference; then a u16 count of entries not in the base, in full.
//!
//! The receiver rebuilds the plain message and decodes it with [`codec`], so a linked frame meets
//! every check a plain one does. A frame written against a digest no longer kept is dropped, and
//! its receiver sends its next digest whole, so two sides that lost each other's recent digests
//! (a partition, a pause) do not keep writing against them. What a link keeps is bounded per
//! transport ([`LinkBudget`]); past the budget a link sends digests unkept and whole.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chitchat::{ChitchatId, Serializable};

use super::codec::{self, err, take_u16, take_u8, CodecError, DigestEntry, Message};
use super::wire::{
    not_gossip, open_frame, GossipFrameError, KIND_GOSSIP, KIND_GOSSIP_LINKED, MAX_CHITCHAT_MESSAGE,
};

/// Own digests a link keeps for the peer to write against (the newest the peer heard is one of
/// the last few this node sent, unless the connection lost or reordered that many).
const SENT_KEPT: usize = 3;
/// chitchat's header: magic (u16), protocol (u8), message type (u8).
const HEADER: usize = 4;
/// An entry that is still there.
const PRESENT: u8 = 0x80;
/// Change bits of an entry still there.
const HEARTBEAT: u8 = 1;
const LAST_GC: u8 = 2;
const MAX_VERSION: u8 = 4;

/// Digest entries the links of one agent keep by default (about 130 bytes each held: ~16 MiB at
/// most; a 100-node cluster needs 400 an active link).
pub const DEFAULT_LINK_BUDGET: usize = 131_072;

/// How many digest entries the links of one transport may keep between them. A digest this
/// node sent is one allocation shared by every link that keeps it ([`Outgoing::new`]), so it is
/// charged once, while any link keeps it; a digest heard is one link's own.
#[derive(Clone, Debug)]
pub struct LinkBudget {
    held: Arc<AtomicUsize>,
    limit: usize,
    /// Own digests kept, by address: how many keeps of each (charged on the first, given back
    /// on the last). An address stays taken while an entry names it, as a keeper holds it.
    sent: Arc<Mutex<HashMap<usize, usize>>>,
}

impl LinkBudget {
    /// A budget of `limit` digest entries.
    pub fn new(limit: usize) -> LinkBudget {
        LinkBudget {
            held: Arc::new(AtomicUsize::new(0)),
            limit,
            sent: Arc::default(),
        }
    }

    /// Entries held now, by every link of this budget.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                h.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }

    /// One more keep of an own digest: charged only when no link keeps it yet. False when it
    /// does not fit.
    fn keep_sent(&self, entries: &Arc<[DigestEntry]>) -> bool {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keeps) = sent.get_mut(&address(entries)) {
            *keeps += 1;
            return true;
        }
        if !self.try_take(entries.len()) {
            return false;
        }
        sent.insert(address(entries), 1);
        true
    }

    /// One keep of an own digest less: given back with the last.
    fn release_sent(&self, entries: &Arc<[DigestEntry]>) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let key = address(entries);
        match sent.get_mut(&key) {
            Some(keeps) if *keeps > 1 => *keeps -= 1,
            Some(_) => {
                sent.remove(&key);
                self.give_back(entries.len());
            }
            None => {}
        }
    }
}

/// Where a shared digest lives: the same for every clone of one `Arc`.
fn address(entries: &Arc<[DigestEntry]>) -> usize {
    Arc::as_ptr(entries) as *const DigestEntry as usize
}

/// One outgoing chitchat message as chitchat wrote it, its digest split out.
#[derive(Clone, Debug)]
pub struct Outgoing {
    body: Vec<u8>,
    digest: Option<Split>,
}

#[derive(Clone, Debug)]
struct Split {
    entries: Arc<[DigestEntry]>,
    rest_at: usize,
}

impl Outgoing {
    /// Splits chitchat's bytes of one message. `recent` is the digest of the message before: an
    /// equal digest shares it (the digests of one round's messages are the same), so the links
    /// that keep it keep one copy.
    pub fn new(body: Vec<u8>, recent: &mut Option<Arc<[DigestEntry]>>) -> Outgoing {
        let digest = split_digest(&body).map(|(entries, rest_at)| {
            let entries = match recent {
                Some(r) if r[..] == entries[..] => r.clone(),
                _ => {
                    let shared: Arc<[DigestEntry]> = entries.into();
                    *recent = Some(shared.clone());
                    shared
                }
            };
            Split { entries, rest_at }
        });
        Outgoing { body, digest }
    }

    /// Whether the message carries a digest (a Syn or a SynAck).
    pub fn has_digest(&self) -> bool {
        self.digest.is_some()
    }

    /// The message as a plain gossip frame, for a peer that does not speak linked digests.
    pub fn plain_frame(&self) -> Vec<u8> {
        mesh_proto::encode_frame(KIND_GOSSIP, &self.body)
    }
}

/// The digest of a Syn or a SynAck and where the rest of the message starts.
fn split_digest(body: &[u8]) -> Option<(Vec<DigestEntry>, usize)> {
    if body.len() < HEADER || !carries_digest(body[HEADER - 1]) {
        return None;
    }
    let mut buf = &body[HEADER..];
    let entries = codec::decode_digest(&mut buf).ok()?;
    Some((entries, body.len() - buf.len()))
}

/// chitchat's Syn (0) and SynAck (1) carry a digest.
fn carries_digest(message_type: u8) -> bool {
    matches!(message_type, 0 | 1)
}

/// The state of one connection: the digests this node sent that the peer may write against, and
/// the newest the peer sent that this node writes against.
#[derive(Debug)]
pub struct Link {
    budget: LinkBudget,
    next_seq: u32,
    sent: VecDeque<(u32, Arc<[DigestEntry]>)>,
    heard: Option<(u32, Arc<[DigestEntry]>)>,
    held: usize,
}

impl Drop for Link {
    fn drop(&mut self) {
        for (_, sent) in &self.sent {
            self.budget.release_sent(sent);
        }
        if let Some((_, heard)) = &self.heard {
            self.budget.give_back(heard.len());
        }
    }
}

impl Link {
    /// A fresh link drawing on `budget`.
    pub fn new(budget: LinkBudget) -> Link {
        Link {
            budget,
            next_seq: 1,
            sent: VecDeque::new(),
            heard: None,
            held: 0,
        }
    }

    /// The frame for `out`: linked when it carries a digest, plain otherwise.
    pub fn encode(&mut self, out: &Outgoing) -> Vec<u8> {
        let Some(split) = &out.digest else {
            return out.plain_frame();
        };
        let seq = self.keep_sent(&split.entries);
        let (base_seq, base) = match &self.heard {
            Some((s, d)) => (*s, d.clone()),
            None => (0, Arc::from(Vec::new())),
        };
        let rest = &out.body[split.rest_at..];
        let mut body = Vec::with_capacity(8 + HEADER + 3 * split.entries.len() + rest.len());
        body.extend(seq.to_le_bytes());
        body.extend(base_seq.to_le_bytes());
        body.extend(&out.body[..HEADER]);
        write_changes(&base, &split.entries, &mut body);
        body.extend(rest);
        mesh_proto::encode_frame(KIND_GOSSIP_LINKED, &body)
    }

    /// Decodes a frame received on this connection, plain or linked.
    pub fn decode(&mut self, frame: &[u8]) -> Result<Message, GossipFrameError> {
        match open_frame(frame)? {
            (KIND_GOSSIP, body) => Ok(codec::decode(body)?),
            (KIND_GOSSIP_LINKED, body) => self.decode_linked(body),
            (kind, _) => Err(not_gossip(kind)),
        }
    }

    fn decode_linked(&mut self, body: &[u8]) -> Result<Message, GossipFrameError> {
        let mut buf = body;
        let seq = take_u32(&mut buf)?;
        let base_seq = take_u32(&mut buf)?;
        if buf.len() < HEADER || !carries_digest(buf[HEADER - 1]) {
            return Err(err("a linked frame holds no Syn or SynAck").into());
        }
        let (header, mut buf) = buf.split_at(HEADER);
        let base = match base_seq {
            0 => Arc::from(Vec::new()),
            s => match self.sent_digest(s) {
                Some(d) => d,
                None => {
                    // The peer has not heard this node's recent digests (messages lost, a pause,
                    // a partition): what this node heard of it is likely as old on its side. Its
                    // next digest goes whole, so that neither side keeps writing against what
                    // the other no longer keeps.
                    self.forget_heard();
                    return Err(GossipFrameError::UnknownBase(s));
                }
            },
        };
        let entries = read_changes(&base, &mut buf)?;
        let size = HEADER + 2 + entries.iter().map(entry_len).sum::<usize>() + buf.len();
        if size > MAX_CHITCHAT_MESSAGE {
            return Err(err(format!("rebuilt message of {size} bytes is over the limit")).into());
        }
        let mut plain = Vec::with_capacity(size);
        plain.extend(header);
        codec::encode_digest(&entries, &mut plain);
        plain.extend(buf);
        let message = codec::decode(&plain)?;
        self.remember_heard(seq, entries);
        Ok(message)
    }

    /// Entries this link keeps now (a digest it sent counts here in full, though the budget
    /// charges it once for every link that keeps it).
    pub fn held(&self) -> usize {
        self.held
    }

    fn sent_digest(&self, seq: u32) -> Option<Arc<[DigestEntry]>> {
        self.sent
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, d)| d.clone())
    }

    /// Keeps `entries` for the peer to write against, if the budget allows: its sequence number,
    /// or `0` (not kept).
    fn keep_sent(&mut self, entries: &Arc<[DigestEntry]>) -> u32 {
        if !self.budget.keep_sent(entries) {
            return 0;
        }
        self.held += entries.len();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        self.sent.push_back((seq, entries.clone()));
        while self.sent.len() > SENT_KEPT {
            if let Some((_, old)) = self.sent.pop_front() {
                self.held -= old.len();
                self.budget.release_sent(&old);
            }
        }
        seq
    }

    fn forget_heard(&mut self) {
        if let Some((_, old)) = self.heard.take() {
            self.give_back(old.len());
        }
    }

    /// Writes against the peer's digest `seq` from now on, if it is newer than the one kept. An
    /// unkept digest (`0`, the peer's budget is spent) means what was heard before may be gone
    /// too: the next digest goes whole.
    fn remember_heard(&mut self, seq: u32, entries: Vec<DigestEntry>) {
        if seq == 0 {
            self.forget_heard();
            return;
        }
        if self.heard.as_ref().is_some_and(|(s, _)| !is_newer(seq, *s)) {
            return;
        }
        self.forget_heard();
        if self.take(entries.len()) {
            self.heard = Some((seq, entries.into()));
        }
    }

    fn take(&mut self, n: usize) -> bool {
        let ok = self.budget.try_take(n);
        if ok {
            self.held += n;
        }
        ok
    }

    fn give_back(&mut self, n: usize) {
        self.held -= n;
        self.budget.give_back(n);
    }
}

/// Whether sequence number `a` comes after `b` (serial number arithmetic: a link sends fewer
/// than 2^31 digests between two the peer hears).
fn is_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// Bytes of one entry in full.
fn entry_len(e: &DigestEntry) -> usize {
    e.id.serialized_len() + 24
}

/// Writes `now` as changes against `base`.
fn write_changes(base: &[DigestEntry], now: &[DigestEntry], out: &mut Vec<u8>) {
    let index: HashMap<&ChitchatId, &DigestEntry> = now.iter().map(|e| (&e.id, e)).collect();
    let mut kept: HashSet<&ChitchatId> = HashSet::with_capacity(base.len());
    for old in base {
        let Some(new) = index.get(&old.id) else {
            out.push(0);
            continue;
        };
        kept.insert(&old.id);
        let fields = [
            (HEARTBEAT, old.heartbeat, new.heartbeat),
            (LAST_GC, old.last_gc_version, new.last_gc_version),
            (MAX_VERSION, old.max_version, new.max_version),
        ];
        let flags = fields
            .iter()
            .filter(|(_, a, b)| a != b)
            .fold(PRESENT, |f, (bit, _, _)| f | bit);
        out.push(flags);
        for (_, a, b) in fields.iter().filter(|(_, a, b)| a != b) {
            put_varint(zigzag(b.wrapping_sub(*a) as i64), out);
        }
    }
    let added: Vec<&DigestEntry> = now
        .iter()
        .filter(|e| !kept.contains(&e.id))
        .take(u16::MAX as usize)
        .collect();
    (added.len() as u16).serialize(out);
    for e in added {
        codec::encode_digest_entry(e, out);
    }
}

/// Reads changes against `base` (this node's own digest, whose entries are distinct).
fn read_changes(base: &[DigestEntry], buf: &mut &[u8]) -> Result<Vec<DigestEntry>, CodecError> {
    let mut out = Vec::with_capacity(base.len());
    for old in base {
        let op = take_u8(buf)?;
        if op == 0 {
            continue;
        }
        if op & PRESENT == 0 || op & !(PRESENT | HEARTBEAT | LAST_GC | MAX_VERSION) != 0 {
            return Err(err(format!("unknown digest change {op:#04x}")));
        }
        let mut e = old.clone();
        for (bit, field) in [
            (HEARTBEAT, &mut e.heartbeat),
            (LAST_GC, &mut e.last_gc_version),
            (MAX_VERSION, &mut e.max_version),
        ] {
            if op & bit != 0 {
                *field = field.wrapping_add(unzigzag(take_varint(buf)?) as u64);
            }
        }
        out.push(e);
    }
    let added = take_u16(buf)? as usize;
    if out.len() + added > u16::MAX as usize {
        return Err(err("digest of more entries than a message holds"));
    }
    out.extend(codec::decode_digest_entries(buf, added)?);
    // The base's entries are distinct; an added one may repeat one of them or another.
    codec::distinct(out.iter().map(|e| &e.id))?;
    // In the order chitchat writes a digest (its digest is a map by node life).
    out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A LEB128 u64: at most 10 bytes, the tenth holding one bit.
fn take_varint(buf: &mut &[u8]) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = take_u8(buf)?;
        if i == 9 && b > 1 {
            return Err(err("varint over 64 bits"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(err("varint over 64 bits"))
}

fn take_u32(buf: &mut &[u8]) -> Result<u32, CodecError> {
    if buf.len() < 4 {
        return Err(err("truncated"));
    }
    let (b, rest) = buf.split_at(4);
    *buf = rest;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests;
