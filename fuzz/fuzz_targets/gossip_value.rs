//! A gossip value as a peer publishes it (`<seal>.<payload>`), through every decoder a value
//! meets: the seal check (`mesh::pki::sealed`), the published certificate's check
//! (`PeerCerts::public_key`: base64, bincode, X.509 and the chain), and the payload decoders the
//! view, the tenant merge and the election run (`mesh_proto::decode_value` of node facts,
//! records, address, MAC and signed SNAT claims), and the operator checks of a record's seal
//! (`PeerCerts::operator_key` on the bytes as a certificate, `operator_of` on a record).
//!
//! Invariants: nothing panics; every payload that decodes encodes again and decodes to an equal
//! value.
#![no_main]

use std::fmt::Debug;

use dvrmesh_node::mesh::keys::{KEY_CERT, KEY_NODE_FACTS};
use dvrmesh_node::mesh::pki::sealed::{self, Place};
use dvrmesh_node::mesh::pki::signing::ClaimAuthority;
use libfuzzer_sys::fuzz_target;
use mesh_proto::{AddressClaim, MacClaim, NodeFacts, Record, SignedClaim};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(payload: &str) {
    let Ok(value) = mesh_proto::decode_value::<T>(payload) else {
        return;
    };
    let text = mesh_proto::encode_value(&value).expect("a decoded value encodes");
    let again = mesh_proto::decode_value::<T>(&text).expect("an encoded value decodes");
    assert_eq!(again, value, "the round trip changed the value");
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return; // chitchat values are strings: its decoder refuses other bytes
    };
    let id = dvrmesh_fuzz::peer();
    for (key, version, tombstone) in [
        (KEY_CERT, 1, false),
        (KEY_NODE_FACTS, 2, false),
        ("x", 3, true),
    ] {
        let place = Place {
            id: &id,
            key,
            version,
            tombstone,
        };
        let _ = sealed::open(value, place, dvrmesh_fuzz::peer_key());
    }
    let Some(payload) = sealed::live_payload(value) else {
        return;
    };
    let _ = dvrmesh_fuzz::peer_certs().public_key(payload);
    let _ = dvrmesh_fuzz::peer_certs().operator_key(payload.as_bytes());
    if let Ok(rec) = mesh_proto::decode_value::<Record>(payload) {
        let _ = dvrmesh_fuzz::peer_certs().operator_of(&rec);
    }
    round_trip::<Vec<u8>>(payload);
    round_trip::<NodeFacts>(payload);
    round_trip::<Record>(payload);
    round_trip::<AddressClaim>(payload);
    round_trip::<MacClaim>(payload);
    round_trip::<SignedClaim>(payload);
});
