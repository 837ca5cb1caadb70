//! A gossip frame as a certified peer sends it on a QUIC stream, through what the transport's
//! `admit` runs: the frame and chitchat message decoders (`mesh::wire`, `mesh::codec`), the
//! sender's identity check, the trust filter (`mesh::trust`: anchors, seals, relay rules), and the
//! hand-over to chitchat.
//!
//! Invariants: nothing panics; a decoded message encodes and decodes to itself; chitchat's own
//! decoder accepts every message ours accepts and reads the same message from the same bytes; the
//! filtered message is still one chitchat accepts.
#![no_main]

use chitchat::{ChitchatMessage, Deserializable};
use dvrmesh_node::mesh::codec;
use dvrmesh_node::mesh::trust::Sender;
use dvrmesh_node::mesh::wire::{claimed_identity_mismatch, decode_gossip, to_chitchat};
use libfuzzer_sys::fuzz_target;

/// chitchat's message as text, without the byte length its deltas remember from the wire (plain
/// and compressed blocks of the same content differ only there). chitchat never serialises a
/// message it decoded (it asserts that length), so neither does this target.
fn comparable(msg: &ChitchatMessage) -> String {
    let text = format!("{msg:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("serialized_len: ") {
        let (head, tail) = rest.split_at(at + "serialized_len: ".len());
        out.push_str(head);
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

fuzz_target!(|frame: &[u8]| {
    let Ok(msg) = decode_gossip(frame) else {
        return;
    };
    let body = codec::encode(&msg);
    assert_eq!(
        codec::decode(&body).as_ref(),
        Ok(&msg),
        "re-encoding changed the message"
    );
    let theirs = to_chitchat(&msg).expect("chitchat refused a message our codec accepted");
    // chitchat reads the original bytes as the same message (our codec is at most stricter).
    let (_, original) = mesh_proto::decode_frame(frame, u64::MAX).expect("decoded above");
    let direct = ChitchatMessage::deserialize(&mut &original[..])
        .expect("chitchat refused the bytes our codec accepted");
    assert_eq!(
        comparable(&direct),
        comparable(&theirs),
        "chitchat read another message"
    );

    let peer = dvrmesh_fuzz::peer_id();
    let _ = claimed_identity_mismatch(&msg, dvrmesh_fuzz::peer_addr(), peer.as_str());
    let from = Sender {
        node: &peer,
        addr: dvrmesh_fuzz::peer_addr(),
    };
    let filtered = dvrmesh_fuzz::trust().filter(msg, from, std::time::Instant::now());
    to_chitchat(&filtered).expect("chitchat refused a filtered message");
});
