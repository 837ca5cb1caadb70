//! Gossip frames on the wire: a `mesh-proto` frame of kind [`KIND_GOSSIP`] holding one chitchat
//! message, bounded in size, decoded by [`codec`](super::codec) (which bounds decompression), and
//! held against the sender's certificate before it is filtered ([`super::trust`]) and handed to
//! chitchat.

use std::net::SocketAddr;

use chitchat::{ChitchatMessage, Deserializable};

use super::codec::{self, Message};

/// Frame kind of a chitchat message.
pub const KIND_GOSSIP: u8 = 1;
/// Frame kind of a chitchat message whose digest is written as changes against a digest the
/// receiver sent before on the same connection ([`super::link`]).
pub const KIND_GOSSIP_LINKED: u8 = 2;
/// Chitchat's own message budget (the UDP payload limit it was built for).
pub const MAX_CHITCHAT_MESSAGE: usize = 65_507;
/// Largest gossip frame accepted: the chitchat budget plus the frame header.
pub const MAX_GOSSIP_FRAME: usize = MAX_CHITCHAT_MESSAGE + 16;

/// Why a gossip frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GossipFrameError {
    /// The envelope is malformed, oversize, or of another kind.
    #[error("frame: {0}")]
    Frame(String),
    /// The message does not decode (malformed, oversize, or a decompression bomb).
    #[error("{0}")]
    Message(#[from] codec::CodecError),
    /// chitchat refused the checked message (a bug in the codec if it ever happens).
    #[error("chitchat refused a checked message: {0}")]
    Chitchat(String),
    /// A linked digest written against a digest of this node's that it no longer keeps (the
    /// connection lost or reordered several messages): dropped like a lost message.
    #[error("digest written against this node's digest {0}, which it no longer keeps")]
    UnknownBase(u32),
}

/// Decodes a gossip frame received from the network.
pub fn decode_gossip(frame: &[u8]) -> Result<Message, GossipFrameError> {
    match open_frame(frame)? {
        (KIND_GOSSIP, body) => Ok(codec::decode(body)?),
        (kind, _) => Err(not_gossip(kind)),
    }
}

/// A frame's kind and body, its size bounded.
pub fn open_frame(frame: &[u8]) -> Result<(u8, &[u8]), GossipFrameError> {
    if frame.len() > MAX_GOSSIP_FRAME {
        return Err(GossipFrameError::Frame(format!(
            "{} bytes, over {MAX_GOSSIP_FRAME}",
            frame.len()
        )));
    }
    mesh_proto::decode_frame(frame, MAX_GOSSIP_FRAME as u64)
        .map_err(|e| GossipFrameError::Frame(e.to_string()))
}

/// The error for a frame of a kind that is not gossip here.
pub fn not_gossip(kind: u8) -> GossipFrameError {
    GossipFrameError::Frame(format!("kind {kind} is not gossip"))
}

/// The message as chitchat's own type, from the checked form.
pub fn to_chitchat(msg: &Message) -> Result<ChitchatMessage, GossipFrameError> {
    let bytes = codec::encode(msg);
    let mut cursor = &bytes[..];
    let out = ChitchatMessage::deserialize(&mut cursor)
        .map_err(|e| GossipFrameError::Chitchat(format!("{e:#}")))?;
    if !cursor.is_empty() {
        return Err(GossipFrameError::Chitchat("trailing bytes".into()));
    }
    Ok(out)
}

/// Checks what a peer says about itself against its certificate.
///
/// The peer's own entry is the digest entry at the peer's address with the newest generation
/// (older generations at that address may be relayed history of a node that lived there before).
/// It must carry the node id of the certificate. Returns the id it claimed when it does not.
pub fn claimed_identity_mismatch(
    msg: &Message,
    peer_addr: SocketAddr,
    certified: &str,
) -> Option<String> {
    let digest = match msg {
        Message::Syn { digest, .. } | Message::SynAck { digest, .. } => digest,
        _ => return None,
    };
    codec::own_entry(digest, peer_addr)
        .filter(|e| &*e.id.node_id != certified)
        .map(|e| e.id.node_id.to_string())
}

/// Whether the message carries a digest (an Ack does not).
pub fn has_digest(msg: &Message) -> bool {
    matches!(msg, Message::Syn { .. } | Message::SynAck { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    use chitchat::{ChitchatId, Serializable};

    fn syn(ids: &[(&str, u64, u16)]) -> Message {
        Message::Syn {
            digest: ids
                .iter()
                .map(|(name, gen, port)| codec::DigestEntry {
                    id: ChitchatId::new(*name, *gen, ([127, 0, 0, 1], *port).into()),
                    heartbeat: 3,
                    last_gc_version: 0,
                    max_version: 7,
                })
                .collect(),
            cluster_id: "cluster".into(),
        }
    }

    /// Wraps a chitchat message in a gossip frame as chitchat writes it (the transport sends
    /// frames through `link::Outgoing`).
    fn encode_gossip(msg: &ChitchatMessage) -> Vec<u8> {
        let mut body = Vec::with_capacity(msg.serialized_len());
        msg.serialize(&mut body);
        mesh_proto::encode_frame(KIND_GOSSIP, &body)
    }

    fn syn_bytes(ids: &[(&str, u64, u16)]) -> Vec<u8> {
        codec::encode(&syn(ids))
    }

    #[test]
    fn a_valid_syn_decodes_and_chitchat_reads_the_same_bytes() {
        let msg = syn(&[("a", 1, 7101), ("b", 2, 7102)]);
        let frame = mesh_proto::encode_frame(KIND_GOSSIP, &codec::encode(&msg));
        let decoded = decode_gossip(&frame).unwrap();
        assert_eq!(decoded, msg);
        let theirs = to_chitchat(&decoded).unwrap();
        assert!(matches!(theirs, ChitchatMessage::Syn { .. }));
        // What chitchat writes back decodes to the same message.
        assert_eq!(decode_gossip(&encode_gossip(&theirs)).unwrap(), msg);
    }

    #[test]
    fn identity_is_the_newest_entry_at_the_peer_address() {
        let msg = syn(&[("old", 1, 7101), ("new", 5, 7101), ("other", 9, 7102)]);
        let addr: SocketAddr = ([127, 0, 0, 1], 7101).into();
        assert_eq!(claimed_identity_mismatch(&msg, addr, "new"), None);
        assert_eq!(
            claimed_identity_mismatch(&msg, addr, "old").as_deref(),
            Some("new")
        );
        let nobody: SocketAddr = ([127, 0, 0, 1], 9).into();
        assert_eq!(claimed_identity_mismatch(&msg, nobody, "x"), None);
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
        b.extend(45_139u16.to_le_bytes());
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
        // A tiny zstd frame of 64 KiB of zeros, many times over: refused after MAX_BLOCKS.
        let bomb = zstd::bulk::compress(&vec![0u8; 65_535], 19).unwrap();
        let mut b = Vec::new();
        b.extend(45_139u16.to_le_bytes());
        b.extend([0, 2]); // Ack
        for _ in 0..=codec::MAX_BLOCKS {
            b.push(1);
            (bomb.len() as u16).serialize(&mut b);
            b.extend(&bomb);
        }
        b.push(0);
        let frame = mesh_proto::encode_frame(KIND_GOSSIP, &b);
        let err = decode_gossip(&frame).unwrap_err();
        assert!(
            err.to_string().contains("too many compressed blocks"),
            "{err}"
        );
        // A block in zstd's legacy format, or with a second frame behind the first, is refused
        // before the decompressor sees it.
        for block in [
            [&[0x27u8, 0xb5, 0x2f, 0xfd][..], &bomb[4..]].concat(),
            [&bomb[..], &bomb[..]].concat(),
        ] {
            let mut b = Vec::new();
            b.extend(45_139u16.to_le_bytes());
            b.extend([0, 2, 1]);
            (block.len() as u16).serialize(&mut b);
            b.extend(&block);
            b.push(0);
            let frame = mesh_proto::encode_frame(KIND_GOSSIP, &b);
            assert!(decode_gossip(&frame).is_err());
        }
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
