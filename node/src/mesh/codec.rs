//! chitchat 0.11.2's messages as plain data, decoded and encoded here so the transport can check
//! and filter them before chitchat sees them (chitchat keeps its digest and delta types private).
//!
//! The layout (little-endian): magic `45139` (u16), protocol `0` (u8), type (u8); a `Syn` is a
//! digest then the cluster id, a `SynAck` a digest then a delta, an `Ack` a delta. A digest is a
//! u16 count of (chitchat id, heartbeat, last GC version, max version). A delta is a stream of
//! blocks (`0` end, `1` zstd-compressed, `2` plain; u16 length each) whose concatenated content is
//! a sequence of operations: `0` node (id, last GC version, from version excluded), `1` key/value
//! (key, value, version, status `0` set / `1` deleted / `2` delete after TTL), `2` set max version.
//! Strings are a u16 length and UTF-8.
//!
//! Decoding bounds everything: at most [`MAX_BLOCKS`] compressed blocks, each a current-format
//! zstd frame (legacy formats are refused before the decompressor sees them) inflating to at most
//! 64 KiB, and every count checked against the bytes left. Encoding writes plain blocks only, so
//! what chitchat parses is exactly what was checked.

use std::collections::HashSet;
use std::net::SocketAddr;

use chitchat::{ChitchatId, Deserializable, Serializable};

/// chitchat's message magic number.
const MAGIC: u16 = 45_139;
/// The only protocol version chitchat 0.11 speaks.
const PROTOCOL: u8 = 0;
/// Most compressed blocks in one delta (each inflates to at most 64 KiB).
pub const MAX_BLOCKS: usize = 64;
/// Largest content of one block.
const MAX_BLOCK: usize = u16::MAX as usize;
/// The magic number of a current-format zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A decoded chitchat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A digest and the sender's cluster id.
    Syn {
        /// The sender's digest.
        digest: Vec<DigestEntry>,
        /// The sender's cluster id.
        cluster_id: String,
    },
    /// A digest and a delta.
    SynAck {
        /// The sender's digest.
        digest: Vec<DigestEntry>,
        /// What the sender has that the receiver lacks.
        delta: Vec<NodeDelta>,
    },
    /// A delta.
    Ack {
        /// What the sender has that the receiver lacks.
        delta: Vec<NodeDelta>,
    },
    /// The peer belongs to another cluster.
    BadCluster,
}

impl Message {
    /// About how many bytes the message holds once decoded: what it costs to keep it queued.
    pub fn decoded_bytes(&self) -> usize {
        const ENTRY: usize = 64;
        let digest = |d: &[DigestEntry]| d.len() * ENTRY;
        let delta = |d: &[NodeDelta]| {
            d.iter()
                .map(|n| {
                    ENTRY
                        + n.kvs
                            .iter()
                            .map(|kv| 32 + kv.key.len() + kv.value.len())
                            .sum::<usize>()
                })
                .sum::<usize>()
        };
        match self {
            Message::Syn {
                digest: d,
                cluster_id,
            } => digest(d) + cluster_id.len(),
            Message::SynAck {
                digest: d,
                delta: t,
            } => digest(d) + delta(t),
            Message::Ack { delta: t } => delta(t),
            Message::BadCluster => 0,
        }
    }
}

/// One node's entry in a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestEntry {
    /// The node life.
    pub id: ChitchatId,
    /// Its heartbeat as the sender knows it.
    pub heartbeat: u64,
    /// Its last GC version as the sender knows it.
    pub last_gc_version: u64,
    /// Its max version as the sender knows it.
    pub max_version: u64,
}

/// The status of a key in a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvStatus {
    /// Set.
    Set,
    /// Deleted (its value is emptied, so it cannot carry a signature).
    Deleted,
    /// A tombstone that keeps its value until garbage-collected.
    DeleteAfterTtl,
}

/// One key/value of a node delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The node's version of this write.
    pub version: u64,
    /// Set or deleted.
    pub status: KvStatus,
}

/// What a delta says about one node life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDelta {
    /// The node life.
    pub id: ChitchatId,
    /// The sender's last GC version of it.
    pub last_gc_version: u64,
    /// The delta holds what came after this version (`0`: everything; with a newer GC, a reset).
    pub from_version_excluded: u64,
    /// Its key/values, by increasing version.
    pub kvs: Vec<Kv>,
    /// A max version sent without key/values (the node's newest writes were garbage-collected).
    pub set_max_version: Option<u64>,
}

/// Why a message did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gossip message: {0}")]
pub struct CodecError(pub String);

pub(super) fn err(s: impl Into<String>) -> CodecError {
    CodecError(s.into())
}

// === decoding ===

/// Decodes one message; the whole body must be used.
pub fn decode(body: &[u8]) -> Result<Message, CodecError> {
    let mut buf = body;
    let magic = take_u16(&mut buf)?;
    if magic != MAGIC {
        return Err(err("not a chitchat message"));
    }
    if take_u8(&mut buf)? != PROTOCOL {
        return Err(err("unknown chitchat protocol version"));
    }
    let msg = match take_u8(&mut buf)? {
        0 => {
            let digest = decode_digest(&mut buf)?;
            let cluster_id = take::<String>(&mut buf)?;
            Message::Syn { digest, cluster_id }
        }
        1 => {
            let digest = decode_digest(&mut buf)?;
            let delta = decode_delta(&mut buf)?;
            Message::SynAck { digest, delta }
        }
        2 => Message::Ack {
            delta: decode_delta(&mut buf)?,
        },
        3 => Message::BadCluster,
        t => return Err(err(format!("unknown message type {t}"))),
    };
    if !buf.is_empty() {
        return Err(err("bytes after the message"));
    }
    Ok(msg)
}

pub(super) fn decode_digest(buf: &mut &[u8]) -> Result<Vec<DigestEntry>, CodecError> {
    let count = take_u16(buf)? as usize;
    let out = decode_digest_entries(buf, count)?;
    distinct(out.iter().map(|e| &e.id))?;
    Ok(out)
}

/// Smallest encoded digest entry: 2 + 8 + 7 + 24 bytes.
pub(super) const DIGEST_ENTRY_MIN: usize = 41;

/// `count` full digest entries (not checked for repeats: see [`distinct`]).
pub(super) fn decode_digest_entries(
    buf: &mut &[u8],
    count: usize,
) -> Result<Vec<DigestEntry>, CodecError> {
    // No count larger than the bytes left could hold.
    if count > buf.len() / DIGEST_ENTRY_MIN {
        return Err(err("digest claims more entries than it holds"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let id = take::<ChitchatId>(buf)?;
        let (heartbeat, last_gc_version, max_version) =
            (take_u64(buf)?, take_u64(buf)?, take_u64(buf)?);
        out.push(DigestEntry {
            id,
            heartbeat,
            last_gc_version,
            max_version,
        });
    }
    Ok(out)
}

/// An error if a node life appears twice among `ids`.
pub(super) fn distinct<'a>(
    ids: impl ExactSizeIterator<Item = &'a ChitchatId>,
) -> Result<(), CodecError> {
    let mut seen = HashSet::with_capacity(ids.len());
    for id in ids {
        if !seen.insert(id) {
            return Err(err("a node twice in one digest"));
        }
    }
    Ok(())
}

/// The content of a delta's block stream, inflated and bounded.
fn delta_content(buf: &mut &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut content = Vec::new();
    let mut compressed = 0;
    loop {
        match take_u8(buf)? {
            0 => return Ok(content),
            1 => {
                compressed += 1;
                if compressed > MAX_BLOCKS {
                    return Err(err("too many compressed blocks"));
                }
                let block = take_bytes(buf)?;
                // One current-format frame, nothing after it: no legacy or skippable frames.
                let frame_len = zstd::zstd_safe::find_frame_compressed_size(block).ok();
                if !block.starts_with(&ZSTD_MAGIC) || frame_len != Some(block.len()) {
                    return Err(err("a compressed block that is not one current zstd frame"));
                }
                let inflated = zstd_safe_decompress(block)?;
                content.extend_from_slice(&inflated);
            }
            2 => content.extend_from_slice(take_bytes(buf)?),
            t => return Err(err(format!("unknown block type {t}"))),
        }
    }
}

/// Inflates one zstd frame into at most [`MAX_BLOCK`] bytes.
fn zstd_safe_decompress(frame: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0u8; MAX_BLOCK];
    let n = zstd::bulk::decompress_to_buffer(frame, &mut out[..])
        .map_err(|e| err(format!("a compressed block does not inflate: {e}")))?;
    out.truncate(n);
    Ok(out)
}

fn decode_delta(buf: &mut &[u8]) -> Result<Vec<NodeDelta>, CodecError> {
    let content = delta_content(buf)?;
    let mut ops = &content[..];
    let mut out: Vec<NodeDelta> = Vec::new();
    while !ops.is_empty() {
        match take_u8(&mut ops)? {
            0 => {
                let id = take::<ChitchatId>(&mut ops)?;
                if out.iter().any(|d| d.id == id) {
                    return Err(err("a node twice in one delta"));
                }
                out.push(NodeDelta {
                    id,
                    last_gc_version: take_u64(&mut ops)?,
                    from_version_excluded: take_u64(&mut ops)?,
                    kvs: Vec::new(),
                    set_max_version: None,
                });
            }
            1 => {
                let kv = decode_kv(&mut ops)?;
                let node = out.last_mut().ok_or_else(|| err("a key before any node"))?;
                // chitchat's own rule: a key's version is above every version before it in this
                // node's delta, a max version included, and so never 0.
                let floor = node.kvs.last().map_or(0, |last| last.version);
                if kv.version <= floor.max(node.set_max_version.unwrap_or(0)) {
                    return Err(err("key versions not increasing"));
                }
                node.kvs.push(kv);
            }
            2 => {
                let v = take_u64(&mut ops)?;
                let node = out
                    .last_mut()
                    .ok_or_else(|| err("a max version before any node"))?;
                node.set_max_version = Some(v);
            }
            t => return Err(err(format!("unknown delta operation {t}"))),
        }
    }
    Ok(out)
}

fn decode_kv(buf: &mut &[u8]) -> Result<Kv, CodecError> {
    let key = take::<String>(buf)?;
    let value = take::<String>(buf)?;
    let version = take_u64(buf)?;
    let status = match take_u8(buf)? {
        0 => KvStatus::Set,
        1 => KvStatus::Deleted,
        2 => KvStatus::DeleteAfterTtl,
        s => return Err(err(format!("unknown key status {s}"))),
    };
    Ok(Kv {
        key,
        value,
        version,
        status,
    })
}

pub(super) fn take<T: Deserializable>(buf: &mut &[u8]) -> Result<T, CodecError> {
    T::deserialize(buf).map_err(|e| err(e.to_string()))
}

pub(super) fn take_u8(buf: &mut &[u8]) -> Result<u8, CodecError> {
    let (b, rest) = buf.split_first().ok_or_else(|| err("truncated"))?;
    *buf = rest;
    Ok(*b)
}

pub(super) fn take_u16(buf: &mut &[u8]) -> Result<u16, CodecError> {
    take::<u16>(buf)
}

fn take_u64(buf: &mut &[u8]) -> Result<u64, CodecError> {
    take::<u64>(buf)
}

/// A u16 length and that many bytes.
fn take_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let len = take_u16(buf)? as usize;
    if buf.len() < len {
        return Err(err("truncated block"));
    }
    let (bytes, rest) = buf.split_at(len);
    *buf = rest;
    Ok(bytes)
}

// === encoding ===

/// Encodes a message for chitchat: deltas in plain blocks.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    MAGIC.serialize(&mut out);
    out.push(PROTOCOL);
    match msg {
        Message::Syn { digest, cluster_id } => {
            out.push(0);
            encode_digest(digest, &mut out);
            cluster_id.serialize(&mut out);
        }
        Message::SynAck { digest, delta } => {
            out.push(1);
            encode_digest(digest, &mut out);
            encode_delta(delta, &mut out);
        }
        Message::Ack { delta } => {
            out.push(2);
            encode_delta(delta, &mut out);
        }
        Message::BadCluster => out.push(3),
    }
    out
}

pub(super) fn encode_digest(digest: &[DigestEntry], out: &mut Vec<u8>) {
    // Decoding refused more entries than a message can hold, so the count fits.
    (digest.len().min(u16::MAX as usize) as u16).serialize(out);
    for e in digest.iter().take(u16::MAX as usize) {
        encode_digest_entry(e, out);
    }
}

/// One digest entry in full.
pub(super) fn encode_digest_entry(e: &DigestEntry, out: &mut Vec<u8>) {
    e.id.serialize(out);
    e.heartbeat.serialize(out);
    e.last_gc_version.serialize(out);
    e.max_version.serialize(out);
}

fn encode_delta(delta: &[NodeDelta], out: &mut Vec<u8>) {
    let mut ops = Vec::new();
    for d in delta {
        ops.push(0u8);
        d.id.serialize(&mut ops);
        d.last_gc_version.serialize(&mut ops);
        d.from_version_excluded.serialize(&mut ops);
        for kv in &d.kvs {
            ops.push(1);
            kv.key.serialize(&mut ops);
            kv.value.serialize(&mut ops);
            kv.version.serialize(&mut ops);
            ops.push(match kv.status {
                KvStatus::Set => 0,
                KvStatus::Deleted => 1,
                KvStatus::DeleteAfterTtl => 2,
            });
        }
        if let Some(v) = d.set_max_version {
            ops.push(2);
            v.serialize(&mut ops);
        }
    }
    for chunk in ops.chunks(MAX_BLOCK) {
        out.push(2);
        (chunk.len() as u16).serialize(out);
        out.extend_from_slice(chunk);
    }
    out.push(0);
}

/// The sender's own entry in a digest: its node id at `addr`.
pub fn own_entry(digest: &[DigestEntry], addr: SocketAddr) -> Option<&DigestEntry> {
    digest
        .iter()
        .filter(|e| e.id.gossip_advertise_addr == addr)
        .max_by_key(|e| e.id.generation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    use chitchat::ChitchatMessage;

    /// An Ack whose delta content is `ops`, in one plain block.
    fn ack(ops: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        MAGIC.serialize(&mut b);
        b.extend([PROTOCOL, 2, 2]);
        (ops.len() as u16).serialize(&mut b);
        b.extend(ops);
        b.push(0);
        b
    }

    fn node_op(ops: &mut Vec<u8>) {
        ops.push(0);
        ChitchatId::new("a", 1, ([127, 0, 0, 1], 7000).into()).serialize(ops);
        0u64.serialize(ops);
        0u64.serialize(ops);
    }

    fn kv_op(ops: &mut Vec<u8>, version: u64) {
        ops.push(1);
        "k".to_string().serialize(ops);
        "v".to_string().serialize(ops);
        version.serialize(ops);
        ops.push(0);
    }

    fn max_op(ops: &mut Vec<u8>, version: u64) {
        ops.push(2);
        version.serialize(ops);
    }

    fn chitchat_accepts(bytes: &[u8]) -> bool {
        ChitchatMessage::deserialize(&mut &bytes[..]).is_ok()
    }

    #[test]
    fn a_key_at_version_0_or_not_above_a_max_version_is_refused_as_chitchat_refuses_it() {
        let mut zero = Vec::new();
        node_op(&mut zero);
        kv_op(&mut zero, 0);
        let mut below_max = Vec::new();
        node_op(&mut below_max);
        max_op(&mut below_max, 5);
        kv_op(&mut below_max, 5);
        for ops in [zero, below_max] {
            let bytes = ack(&ops);
            assert!(!chitchat_accepts(&bytes));
            let e = decode(&bytes).unwrap_err();
            assert!(e.0.contains("key versions not increasing"), "{e}");
        }
        // Above the max version it is a valid delta for both.
        let mut above = Vec::new();
        node_op(&mut above);
        max_op(&mut above, 5);
        kv_op(&mut above, 6);
        let bytes = ack(&above);
        assert!(chitchat_accepts(&bytes));
        let msg = decode(&bytes).unwrap();
        assert!(to_chitchat_bytes_accepted(&msg));
    }

    fn to_chitchat_bytes_accepted(msg: &Message) -> bool {
        chitchat_accepts(&encode(msg))
    }
}
