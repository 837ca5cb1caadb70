//! A request path a VM sends to 169.254.169.254, through what the metadata service runs on it:
//! hyper parses the request line (its own, widely fuzzed parser) and `metadata::paths::respond`
//! answers `req.uri().path()` for the port the request came from (a fixed port with every
//! optional field set).
//!
//! Invariants: nothing panics; only 200 and 404 come back; a path with a `..` or an empty
//! segment is not served; a 200 body is bounded (the port's own data and a few lines) and a JSON
//! document parses.
#![no_main]

use dvrmesh_node::metadata::paths::respond;
use libfuzzer_sys::fuzz_target;

/// A reply's largest body: user data is at most 8 KiB and keys 4 × 1 KiB; the JSON around them
/// is far smaller.
const BODY_MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let doc = dvrmesh_fuzz::metadata_doc();
    let reply = respond(&doc, path);
    assert!(
        reply.status == 200 || reply.status == 404,
        "status {}",
        reply.status
    );
    if reply.status == 200 {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        assert!(
            !segments.contains(&"..") && (segments == [""] || !segments.contains(&"")),
            "served {path:?}"
        );
        assert!(reply.body.len() <= BODY_MAX, "a body of {} bytes", reply.body.len());
        if reply.content_type == "application/json" {
            serde_json::from_str::<serde_json::Value>(&reply.body).expect("a JSON document");
        }
    }
});
