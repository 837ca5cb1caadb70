//! The offline side of the cluster PKI: `dvrmesh ca init` and `dvrmesh cert issue`.
//!
//! A node certificate carries exactly one DNS subject alternative name, the node id, the role URI
//! `dvrmesh:role=node`, and both the server and the client extended key usages: every node both
//! accepts and dials. An operator credential (`cert issue --operator NAME`) carries the role URI
//! `dvrmesh:role=operator`, its name as common name and no DNS name, so it can sign tenant
//! configuration but never stands for a node.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mesh_proto::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::identity::Role;

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
    params.subject_alt_names.push(role_san(Role::Node)?);
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

/// An operator credential's file name for `name`: `operator-NAME.pem`.
pub fn operator_credential_file(name: &str) -> String {
    format!("operator-{name}.pem")
}

/// Issues an operator credential for `name`, signed by the CA in `ca_dir`: one file
/// `out/operator-NAME.pem` (mode 0600) holding the certificate and its key, which the CLI reads
/// with `--credential`. Recorded in the CA's `issued/` as `operator-NAME`, so `cert revoke --node
/// operator-NAME` revokes it. Refuses to overwrite.
pub fn issue_operator_cert(
    ca_dir: &Path,
    name: &str,
    out: &Path,
    days: u32,
) -> Result<PathBuf, Error> {
    // Operator names follow the node id rules (short, printable, no separators).
    let recorded = NodeId::new(format!("operator-{name}"))
        .map_err(|e| Error::Tls(format!("operator name {name:?}: {e}")))?;
    let path = out.join(operator_credential_file(name));
    refuse_existing(&[&path])?;
    let (issuer, ca_key) = super::ca::load_issuer(ca_dir)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![role_san(Role::Operator)?];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Client authentication only so the cluster's certificate verifier (and its revocation
    // list) checks it; it names no node, so the transport refuses it as a peer.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut params, days);
    let key =
        KeyPair::generate().map_err(|e| Error::Tls(format!("generating operator key: {e}")))?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(|e| Error::Tls(format!("signing operator certificate: {e}")))?;
    fs::create_dir_all(out).map_err(|e| Error::io("creating directory", out, e))?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    write_file(&path, pem.as_bytes(), 0o600)?;
    super::revoke::record_issued(ca_dir, &recorded, &cert)?;
    Ok(path)
}

fn role_san(role: Role) -> Result<SanType, Error> {
    let uri = role
        .uri()
        .try_into()
        .map_err(|e| Error::Tls(format!("role URI: {e}")))?;
    Ok(SanType::URI(uri))
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
