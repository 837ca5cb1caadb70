//! The framing of every stream (`mesh_proto::frame`): a gossip stream's frame as the transport
//! reads it whole, and the header the API reads byte by byte (`FrameHeader::parse` on each
//! prefix).
//!
//! Invariants: nothing panics; a header never needs more than 12 bytes; a prefix of a header is
//! "read more" (never an error or another header); a decoded frame encodes to a frame that
//! decodes the same; no length over the limit is accepted.
#![no_main]

use dvrmesh_node::mesh::wire::MAX_GOSSIP_FRAME;
use libfuzzer_sys::fuzz_target;
use mesh_proto::{decode_frame, encode_frame, FrameHeader, MAX_FRAME_BYTES};

fuzz_target!(|data: &[u8]| {
    for limit in [MAX_GOSSIP_FRAME as u64, 1 << 20, MAX_FRAME_BYTES, u64::MAX] {
        if let Ok((kind, body)) = decode_frame(data, limit) {
            assert!(body.len() as u64 <= limit.min(MAX_FRAME_BYTES));
            let again = encode_frame(kind, body);
            assert_eq!(decode_frame(&again, limit).ok(), Some((kind, body)));
        }
        match FrameHeader::parse(data, limit) {
            Ok(Some(h)) => {
                assert!(h.header_len <= 12 && h.header_len <= data.len());
                assert!(h.len <= limit.min(MAX_FRAME_BYTES));
                for cut in 0..h.header_len {
                    assert_eq!(FrameHeader::parse(&data[..cut], limit).ok(), Some(None));
                }
            }
            Ok(None) => assert!(data.len() < 12, "an incomplete header of 12 bytes"),
            Err(_) => {}
        }
    }
});
