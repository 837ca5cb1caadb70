//! An API request as a local client writes it on the socket: `api::protocol::read_frame` (the
//! header byte by byte, kind and 1 MiB bound, then the body) and `AnyRequest::parse` (JSON by
//! `op`, into validated types, with the `operator` field of a client holding a credential), as
//! the server's `serve_one` runs them; and the same body as a client's seals frame
//! (`api::sealing::parse_seals`).
//!
//! Invariants: nothing panics; a parsed request serialises to JSON that parses to the same
//! request.
#![no_main]

use dvrmesh_node::api::{read_frame, AnyRequest, KIND_REQUEST, MAX_REQUEST_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    let read =
        dvrmesh_fuzz::runtime().block_on(read_frame(&mut reader, KIND_REQUEST, MAX_REQUEST_BYTES));
    let Ok(body) = read else {
        return;
    };
    assert!(body.len() as u64 <= MAX_REQUEST_BYTES);
    let _ = dvrmesh_node::api::sealing::parse_seals(&body);
    let Ok((req, _operator)) = AnyRequest::parse_with_operator(&body) else {
        return;
    };
    let json = match &req {
        AnyRequest::Node(r) => serde_json::to_vec(r),
        AnyRequest::Config(r) => serde_json::to_vec(r),
    }
    .expect("a parsed request serialises");
    assert_eq!(
        AnyRequest::parse(&json).as_ref(),
        Ok(&req),
        "the round trip changed the request"
    );
});
