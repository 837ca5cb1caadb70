//! The cluster CA's directory: its file names, and its certificate and key loaded to sign.

use std::fs;
use std::path::Path;

use rcgen::{Certificate, CertificateParams, KeyPair};

use crate::Error;

/// The CA's certificate in its directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";

/// The CA certificate and key of `ca_dir`, ready to sign.
pub fn load_issuer(ca_dir: &Path) -> Result<(Certificate, KeyPair), Error> {
    let read = |what: &'static str, name: &str| {
        let path = ca_dir.join(name);
        fs::read_to_string(&path).map_err(|e| Error::io(what, &path, e))
    };
    let (cert_pem, key_pem) = (read("CA certificate", CA_CERT)?, read("CA key", CA_KEY)?);
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| Error::Tls(format!("CA key {}: {e}", ca_dir.join(CA_KEY).display())))?;
    let params = CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| {
        Error::Tls(format!(
            "CA certificate {}: {e}",
            ca_dir.join(CA_CERT).display()
        ))
    })?;
    // Re-created from its own parameters and key: a signature made by the CA key naming the
    // CA's subject, which is all a verifier checks.
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::Tls(format!("loading CA: {e}")))?;
    Ok((cert, key))
}
