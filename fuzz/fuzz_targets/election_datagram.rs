//! An election datagram as a peer sends it on its QUIC connection, through what the transport and
//! the HA task run before the election sees it: the size bound, `ElectionMessage::decode` (version
//! byte, bincode, claim checks) and the sender check (every claim names the certified sender).
//!
//! Invariants: nothing panics; a decoded message carries 1 to 16 claims of one node, encodes
//! within the datagram bound and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::{ElectionMessage, MAX_CLAIMS_PER_DATAGRAM, MAX_ELECTION_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ElectionMessage::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_ELECTION_DATAGRAM);
    let claims = msg.claims();
    assert!((1..=MAX_CLAIMS_PER_DATAGRAM).contains(&claims.len()));
    assert!(claims.iter().all(|c| c.node == claims[0].node));
    let bytes = msg.encode().expect("a decoded message encodes");
    assert!(bytes.len() <= MAX_ELECTION_DATAGRAM);
    assert_eq!(ElectionMessage::decode(&bytes).as_ref(), Ok(&msg));
    let sender = dvrmesh_fuzz::peer_id();
    let _ = claims.iter().all(|c| c.node == sender);
});
