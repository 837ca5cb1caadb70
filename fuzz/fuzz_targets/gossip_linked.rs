//! A linked gossip frame (`mesh::link`) as a certified peer sends it on a connection that
//! negotiated linked digests: decoded against the digests this node sent on that link (here one,
//! of three node lives, which the input may be written against), then as the transport's `admit`
//! goes on.
//!
//! Invariants: nothing panics; a decoded message re-encodes to itself and chitchat accepts it;
//! what this node writes back against the digest the input carried decodes, at a peer holding
//! that digest, to exactly the message written.
#![no_main]

use std::sync::Arc;

use chitchat::ChitchatId;
use dvrmesh_node::mesh::codec::{self, DigestEntry, Message};
use dvrmesh_node::mesh::link::{Link, LinkBudget, Outgoing};
use dvrmesh_node::mesh::wire::to_chitchat;
use libfuzzer_sys::fuzz_target;

fn entry(i: u16) -> DigestEntry {
    DigestEntry {
        id: ChitchatId::new(format!("node-{i}"), 1, ([127, 0, 0, 1], 7000 + i).into()),
        heartbeat: 100 + u64::from(i),
        last_gc_version: 0,
        max_version: 7,
    }
}

fn syn(digest: Vec<DigestEntry>) -> Outgoing {
    let msg = Message::Syn {
        digest,
        cluster_id: "fuzz".into(),
    };
    Outgoing::new(codec::encode(&msg), &mut None::<Arc<[DigestEntry]>>)
}

fuzz_target!(|frame: &[u8]| {
    let mut node = Link::new(LinkBudget::new(1 << 16));
    // The node's digest 1, which the input may be written against.
    node.encode(&syn((0..3).map(entry).collect()));
    let Ok(msg) = node.decode(frame) else {
        return;
    };
    let body = codec::encode(&msg);
    assert_eq!(
        codec::decode(&body).as_ref(),
        Ok(&msg),
        "re-encoding changed the message"
    );
    to_chitchat(&msg).expect("chitchat refused a message our codec accepted");
    let (Message::Syn { digest, .. } | Message::SynAck { digest, .. }) = &msg else {
        return;
    };
    // A peer that sent `digest` (as the input's sequence number says) reads the node's answer.
    let mut peer = Link::new(LinkBudget::new(1 << 16));
    peer.encode(&syn(digest.clone()));
    let answer = Message::SynAck {
        digest: (1..5).map(entry).collect(),
        delta: Vec::new(),
    };
    let written = node.encode(&Outgoing::new(codec::encode(&answer), &mut None));
    match peer.decode(&written) {
        Ok(read) => assert_eq!(read, answer, "the answer read back differs"),
        // Written against the input's sequence number, which the fresh peer gave another digest.
        Err(dvrmesh_node::mesh::wire::GossipFrameError::UnknownBase(_)) => {}
        Err(e) => panic!("the node's own answer was refused: {e}"),
    }
});
