//! Revocation on the CA's side: the CA directory records every certificate it issues
//! (`issued/<node>.<serial>.pem`) and keeps one certificate revocation list, `crl.pem`, signed by
//! the CA; `dvrmesh cert revoke` adds a node's certificates to it. Agents read it
//! ([`super::crl`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use mesh_proto::NodeId;
use rcgen::{
    Certificate, CertificateRevocationListParams, KeyIdMethod, KeyPair, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use serde::Serialize;

use super::ca::load_issuer;
use crate::Error;

/// The CA directory's revocation list.
pub const CRL: &str = "crl.pem";
/// The CA directory's record of issued certificates.
pub const ISSUED: &str = "issued";

/// What `cert revoke` did.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    /// Serial numbers (hex) revoked by this call.
    pub serials: Vec<String>,
    /// Every serial the list now holds.
    pub total: usize,
    /// The list's number (increases with every change).
    pub crl_number: u64,
    /// Where it was written.
    pub crl: PathBuf,
}

/// A certificate's serial number as minimal big-endian bytes.
pub fn serial_of(der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable: {e}"))?;
    Ok(cert.tbs_certificate.serial.to_bytes_be())
}

/// Lower-case hex of a serial.
pub fn hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records a certificate the CA issued to `node`, so it can be revoked by node id.
pub(super) fn record_issued(ca_dir: &Path, node: &NodeId, cert: &Certificate) -> Result<(), Error> {
    let serial = serial_of(cert.der()).map_err(Error::Tls)?;
    let dir = ca_dir.join(ISSUED);
    fs::create_dir_all(&dir).map_err(|e| Error::io("creating directory", &dir, e))?;
    let path = dir.join(format!("{node}.{}.pem", hex(&serial)));
    crate::files::write_atomic(&path, cert.pem().as_bytes())
}

/// Writes an empty revocation list for a new CA.
pub(super) fn init_crl(ca_dir: &Path) -> Result<(), Error> {
    let (ca, key) = load_issuer(ca_dir)?;
    write_crl(ca_dir, &ca, &key, &BTreeMap::new(), 1)
}

/// Revokes every recorded certificate of `node` and/or the certificate in `cert_file`.
pub fn revoke(
    ca_dir: &Path,
    node: Option<&NodeId>,
    cert_file: Option<&Path>,
) -> Result<Revoked, Error> {
    let mut targets = Vec::new();
    if let Some(node) = node {
        targets.extend(issued_to(ca_dir, node)?);
    }
    if let Some(path) = cert_file {
        let der = CertificateDer::from_pem_file(path)
            .map_err(|e| Error::Tls(format!("certificate {}: {e}", path.display())))?;
        targets.push(serial_of(&der).map_err(Error::Tls)?);
    }
    if targets.is_empty() {
        return Err(Error::Tls(
            "name a node (--node) or a certificate (--cert)".into(),
        ));
    }
    let (ca, key) = load_issuer(ca_dir)?;
    let (mut revoked, number) = read_crl(&ca_dir.join(CRL))?;
    let now = time::OffsetDateTime::now_utc();
    let mut added = Vec::new();
    for serial in targets {
        if let std::collections::btree_map::Entry::Vacant(e) = revoked.entry(serial) {
            added.push(hex(e.key()));
            e.insert(now);
        }
    }
    let crl_number = number + 1;
    write_crl(ca_dir, &ca, &key, &revoked, crl_number)?;
    Ok(Revoked {
        serials: added,
        total: revoked.len(),
        crl_number,
        crl: ca_dir.join(CRL),
    })
}

/// Serials of the certificates recorded as issued to `node`.
fn issued_to(ca_dir: &Path, node: &NodeId) -> Result<Vec<Vec<u8>>, Error> {
    let dir = ca_dir.join(ISSUED);
    let prefix = format!("{node}.");
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || !name.ends_with(".pem") {
                continue;
            }
            let der = CertificateDer::from_pem_file(entry.path())
                .map_err(|e| Error::Tls(format!("{}: {e}", entry.path().display())))?;
            out.push(serial_of(&der).map_err(Error::Tls)?);
        }
    }
    if out.is_empty() {
        return Err(Error::Tls(format!(
            "no certificate issued to {node} is recorded in {}; revoke it with --cert FILE",
            dir.display()
        )));
    }
    Ok(out)
}

/// The serials (with revocation times) and number of an existing list; none for a missing file.
pub(super) fn read_crl(
    path: &Path,
) -> Result<(BTreeMap<Vec<u8>, time::OffsetDateTime>, u64), Error> {
    if !path.exists() {
        return Ok((BTreeMap::new(), 0));
    }
    let der = CertificateRevocationListDer::from_pem_file(path)
        .map_err(|e| Error::Tls(format!("revocation list {}: {e}", path.display())))?;
    let (_, crl) = x509_parser::parse_x509_crl(&der)
        .map_err(|e| Error::Tls(format!("revocation list {}: {e}", path.display())))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| {
            (
                r.user_certificate.to_bytes_be(),
                r.revocation_date.to_datetime(),
            )
        })
        .collect();
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n.clone()).ok())
        .unwrap_or(0);
    Ok((revoked, number))
}

fn write_crl(
    ca_dir: &Path,
    ca: &Certificate,
    key: &KeyPair,
    revoked: &BTreeMap<Vec<u8>, time::OffsetDateTime>,
    number: u64,
) -> Result<(), Error> {
    let now = time::OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now,
        // Agents do not enforce the next update; the list stays valid until replaced.
        next_update: now + time::Duration::days(3650),
        crl_number: SerialNumber::from(number.to_be_bytes().to_vec()),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|(serial, at)| RevokedCertParams {
                serial_number: SerialNumber::from(serial.clone()),
                revocation_time: *at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(ca, key)
        .map_err(|e| Error::Tls(format!("signing the revocation list: {e}")))?;
    let pem = crl
        .pem()
        .map_err(|e| Error::Tls(format!("encoding the revocation list: {e}")))?;
    let path = ca_dir.join(CRL);
    crate::files::write_atomic(&path, pem.as_bytes())?;
    // Every agent reads it; it holds nothing secret.
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| Error::io("setting the mode of", &path, e))
}
