//! The revocation list an agent reads from `[tls] crl` at start and every second: `Crl::parse`
//! (PEM, then X.509 CRL) and the verifiers built from it (`Revocation::new`, `update`), as the
//! agent's CRL watcher runs them.
//!
//! Invariants: nothing panics.
#![no_main]

use dvrmesh_node::mesh::pki::crl::{Crl, Revocation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(crl) = Crl::parse(data) else {
        return;
    };
    let _ = (crl.number(), crl.len(), crl.is_empty());
    if let Ok(revocation) = Revocation::new(dvrmesh_fuzz::roots(), None) {
        let _ = revocation.update(&crl);
        let cert = dvrmesh_fuzz::credentials()
            .published_cert()
            .expect("fixture cert");
        let der: Vec<u8> = mesh_proto::decode_value(&cert).expect("fixture cert decodes");
        let _ = revocation.is_revoked(&der.into());
    }
    let _ = Revocation::new(dvrmesh_fuzz::roots(), Some(&crl));
});
