//! Decoding gossip frames from the network, with the checks chitchat itself does not make.
//!
//! A gossip frame is a `mesh-proto` frame of kind [`KIND_GOSSIP`] holding one serialized chitchat
//! message. Before chitchat parses it we bound its size and its decompressed size (chitchat inflates
//! each zstd block into up to 64 KiB, so a small frame of many tiny blocks could otherwise allocate
//! hundreds of megabytes), and we read the node ids the sender's digest claims so the transport can
//! hold them against the sender's certificate.

use std::net::SocketAddr;

use chitchat::{ChitchatId, ChitchatMessage, Deserializable, Serializable};

/// Frame kind of a chitchat message.
pub const KIND_GOSSIP: u8 = 1;
/// Chitchat's own message budget (the UDP payload limit it was built for).
pub const MAX_CHITCHAT_MESSAGE: usize = 65_507;
/// Largest gossip frame accepted: the chitchat budget plus the frame header.
pub const MAX_GOSSIP_FRAME: usize = MAX_CHITCHAT_MESSAGE + 16;
/// Most zstd frames accepted in one message; each may inflate to 64 KiB, so this bounds what
/// decoding a message can allocate to 4 MiB.
pub const MAX_COMPRESSED_BLOCKS: usize = 64;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const CHITCHAT_MAGIC: u16 = 45_139;
const NODE_DIGEST_LEN: usize = 24;

/// Why a gossip frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GossipFrameError {
    /// The envelope is malformed, oversize, or of another kind.
    #[error("frame: {0}")]
    Frame(String),
    /// Too many compressed blocks: decoding could allocate too much.
    #[error("{0} compressed blocks, at most {MAX_COMPRESSED_BLOCKS}")]
    TooManyBlocks(usize),
    /// Chitchat could not parse the message.
    #[error("chitchat message: {0}")]
    Message(String),
}

/// Wraps a chitchat message in a gossip frame.
pub fn encode_gossip(msg: &ChitchatMessage) -> Vec<u8> {
    let mut body = Vec::with_capacity(msg.serialized_len());
    msg.serialize(&mut body);
    mesh_proto::encode_frame(KIND_GOSSIP, &body)
}

/// A decoded gossip frame: the message, and the chitchat ids its digest lists.
#[derive(Debug)]
pub struct GossipFrame {
    /// The chitchat message.
    pub message: ChitchatMessage,
    /// Every node id and address in the message's digest (Syn and SynAck carry one).
    pub digest_ids: Vec<ChitchatId>,
}

/// Decodes a gossip frame received from the network.
pub fn decode_gossip(frame: &[u8]) -> Result<GossipFrame, GossipFrameError> {
    if frame.len() > MAX_GOSSIP_FRAME {
        return Err(GossipFrameError::Frame(format!(
            "{} bytes, over {MAX_GOSSIP_FRAME}",
            frame.len()
        )));
    }
    let (kind, body) = mesh_proto::decode_frame(frame, MAX_GOSSIP_FRAME as u64)
        .map_err(|e| GossipFrameError::Frame(e.to_string()))?;
    if kind != KIND_GOSSIP {
        return Err(GossipFrameError::Frame(format!(
            "kind {kind} is not gossip"
        )));
    }
    let blocks = body.windows(4).filter(|w| *w == ZSTD_MAGIC).count();
    if blocks > MAX_COMPRESSED_BLOCKS {
        return Err(GossipFrameError::TooManyBlocks(blocks));
    }
    let digest_ids = digest_ids(body).map_err(GossipFrameError::Message)?;
    let mut cursor = body;
    let message = ChitchatMessage::deserialize(&mut cursor)
        .map_err(|e| GossipFrameError::Message(format!("{e:#}")))?;
    if !cursor.is_empty() {
        return Err(GossipFrameError::Message(format!(
            "{} trailing bytes",
            cursor.len()
        )));
    }
    Ok(GossipFrame {
        message,
        digest_ids,
    })
}

/// Reads the chitchat ids of the digest in a Syn (type 0) or SynAck (type 1) message.
fn digest_ids(body: &[u8]) -> Result<Vec<ChitchatId>, String> {
    if body.len() < 4 {
        return Err("shorter than a message header".into());
    }
    if u16::from_le_bytes([body[0], body[1]]) != CHITCHAT_MAGIC {
        return Err("bad magic number".into());
    }
    if body[3] > 1 {
        return Ok(Vec::new());
    }
    let mut cur = &body[4..];
    let n = u16::deserialize(&mut cur).map_err(|e| format!("digest: {e}"))?;
    let mut ids = Vec::with_capacity(usize::from(n).min(cur.len() / 16));
    for _ in 0..n {
        let id = ChitchatId::deserialize(&mut cur).map_err(|e| format!("digest: {e}"))?;
        cur = cur
            .get(NODE_DIGEST_LEN..)
            .ok_or_else(|| "digest: truncated node digest".to_string())?;
        ids.push(id);
    }
    Ok(ids)
}

/// Checks what a peer says about itself against its certificate.
///
/// The peer's own entry is the digest entry at the peer's address with the newest generation
/// (older generations at that address may be relayed history of a node that lived there before).
/// It must carry the node id of the certificate. Returns the id it claimed when it does not.
pub fn claimed_identity_mismatch(
    digest_ids: &[ChitchatId],
    peer_addr: SocketAddr,
    certified: &str,
) -> Option<String> {
    digest_ids
        .iter()
        .filter(|id| id.gossip_advertise_addr == peer_addr)
        .max_by_key(|id| id.generation_id)
        .filter(|id| &*id.node_id != certified)
        .map(|id| id.node_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn_bytes(ids: &[(&str, u64, u16)]) -> Vec<u8> {
        // Build a Syn by hand in chitchat 0.11.2's layout: magic, version 0, type 0, digest, cluster.
        let mut b = Vec::new();
        b.extend(CHITCHAT_MAGIC.to_le_bytes());
        b.push(0);
        b.push(0);
        (ids.len() as u16).serialize(&mut b);
        for (name, gen, port) in ids {
            ChitchatId::new(*name, *gen, ([127, 0, 0, 1], *port).into()).serialize(&mut b);
            b.extend([0u8; NODE_DIGEST_LEN]);
        }
        "cluster".serialize(&mut b);
        b
    }

    #[test]
    fn a_valid_syn_decodes_with_its_digest_ids() {
        let frame =
            mesh_proto::encode_frame(KIND_GOSSIP, &syn_bytes(&[("a", 1, 7101), ("b", 2, 7102)]));
        let f = decode_gossip(&frame).unwrap();
        assert!(matches!(f.message, ChitchatMessage::Syn { .. }));
        assert_eq!(f.digest_ids.len(), 2);
        // re-encoding gives the same bytes
        assert_eq!(encode_gossip(&f.message), frame);
    }

    #[test]
    fn identity_is_the_newest_entry_at_the_peer_address() {
        let ids: Vec<ChitchatId> = [("old", 1, 7101), ("new", 5, 7101), ("other", 9, 7102)]
            .iter()
            .map(|(n, g, p)| ChitchatId::new(*n, *g, ([127, 0, 0, 1], *p).into()))
            .collect();
        let addr: SocketAddr = ([127, 0, 0, 1], 7101).into();
        assert_eq!(claimed_identity_mismatch(&ids, addr, "new"), None);
        assert_eq!(
            claimed_identity_mismatch(&ids, addr, "old").as_deref(),
            Some("new")
        );
        let nobody: SocketAddr = ([127, 0, 0, 1], 9).into();
        assert_eq!(claimed_identity_mismatch(&ids, nobody, "x"), None);
    }

    #[test]
    fn malformed_truncated_and_oversized_frames_are_errors() {
        let good = mesh_proto::encode_frame(KIND_GOSSIP, &syn_bytes(&[("a", 1, 7101)]));
        for cut in 0..good.len() {
            assert!(decode_gossip(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_kind = good.clone();
        wrong_kind[1] = 9;
        assert!(decode_gossip(&wrong_kind).is_err());
        let huge = vec![0u8; MAX_GOSSIP_FRAME + 1];
        assert!(matches!(
            decode_gossip(&huge),
            Err(GossipFrameError::Frame(_))
        ));
        let garbage = mesh_proto::encode_frame(KIND_GOSSIP, b"not chitchat at all");
        assert!(matches!(
            decode_gossip(&garbage),
            Err(GossipFrameError::Message(_))
        ));
    }

    #[test]
    fn a_digest_claiming_more_entries_than_bytes_is_an_error_not_an_allocation() {
        let mut b = Vec::new();
        b.extend(CHITCHAT_MAGIC.to_le_bytes());
        b.extend([0, 0]);
        u16::MAX.serialize(&mut b);
        let frame = mesh_proto::encode_frame(KIND_GOSSIP, &b);
        assert!(matches!(
            decode_gossip(&frame),
            Err(GossipFrameError::Message(_))
        ));
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_inflating() {
        let mut b = Vec::new();
        b.extend(CHITCHAT_MAGIC.to_le_bytes());
        b.extend([0, 2]); // Ack
        for _ in 0..=MAX_COMPRESSED_BLOCKS {
            b.push(1);
            b.extend(ZSTD_MAGIC);
        }
        let frame = mesh_proto::encode_frame(KIND_GOSSIP, &b);
        assert!(matches!(
            decode_gossip(&frame),
            Err(GossipFrameError::TooManyBlocks(_))
        ));
    }

    #[test]
    fn a_terabyte_length_claim_is_refused_from_the_header() {
        let mut frame = vec![1u8, KIND_GOSSIP];
        let mut len: u64 = 1 << 40;
        while len >= 0x80 {
            frame.push((len as u8) | 0x80);
            len >>= 7;
        }
        frame.push(len as u8);
        frame.extend([0u8; 64]);
        let err = decode_gossip(&frame).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }
}
