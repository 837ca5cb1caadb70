//! The offline side of the cluster PKI: `dvrmesh ca init` and `dvrmesh cert issue`.
//!
//! A node certificate carries exactly one DNS subject alternative name, the node id, and both the
//! server and the client extended key usages: every node both accepts and dials.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mesh_proto::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

pub use super::ca::{CA_CERT, CA_KEY};

/// A node's certificate.
pub const NODE_CERT: &str = "node.pem";
/// A node's private key.
pub const NODE_KEY: &str = "node.key";
/// How long new certificates are valid by default.
pub const DEFAULT_NODE_CERT_DAYS: u32 = 365;
/// How long a new CA is valid by default.
pub const DEFAULT_CA_DAYS: u32 = 3650;

/// Creates a cluster CA in `dir` (`ca.pem`, `ca.key` with mode 0600, and an empty revocation
/// list `crl.pem`). Refuses to overwrite.
pub fn init_ca(dir: &Path, days: u32) -> Result<(PathBuf, PathBuf), Error> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    refuse_existing(&[&cert_path, &key_path])?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "dvrmesh cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, days);
    let key = KeyPair::generate().map_err(|e| Error::Tls(format!("generating CA key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::Tls(format!("signing CA certificate: {e}")))?;
    fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    super::revoke::init_crl(dir)?;
    Ok((cert_path, key_path))
}

/// Issues a certificate for `node` signed by the CA in `ca_dir`, into `out` (`node.pem`,
/// `node.key` with mode 0600), and records it in the CA's `issued/`. Refuses to overwrite.
pub fn issue_node_cert(
    ca_dir: &Path,
    node: &NodeId,
    out: &Path,
    days: u32,
) -> Result<(PathBuf, PathBuf), Error> {
    let cert_path = out.join(NODE_CERT);
    let key_path = out.join(NODE_KEY);
    refuse_existing(&[&cert_path, &key_path])?;
    let (issuer, ca_key) = super::ca::load_issuer(ca_dir)?;

    let mut params = CertificateParams::new(vec![node.as_str().to_string()])
        .map_err(|e| Error::Tls(format!("node certificate parameters: {e}")))?;
    params
        .distinguished_name
        .push(DnType::CommonName, node.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params, days);
    let key = KeyPair::generate().map_err(|e| Error::Tls(format!("generating node key: {e}")))?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(|e| Error::Tls(format!("signing node certificate: {e}")))?;
    fs::create_dir_all(out).map_err(|e| Error::io("creating directory", out, e))?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    super::revoke::record_issued(ca_dir, node, &cert)?;
    Ok((cert_path, key_path))
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn refuse_existing(paths: &[&Path]) -> Result<(), Error> {
    for p in paths {
        if p.exists() {
            return Err(Error::AlreadyExists(p.to_path_buf()));
        }
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("writing", path, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing", path, e))
}
