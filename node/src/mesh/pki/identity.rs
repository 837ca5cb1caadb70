//! A node's identity in a certificate: the one DNS subject alternative name, read the same way
//! by the TLS verifiers, the transport and the signature checks.

use std::path::Path;
use std::sync::Arc;

use mesh_proto::NodeId;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::Error;

/// Reads the node id from a certificate: its one DNS subject alternative name.
pub fn node_id_from_cert(der: &CertificateDer<'_>) -> Result<NodeId, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or("no subjectAltName naming the node")?;
    let mut names = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(*d),
        _ => None,
    });
    let first = names.next().ok_or("no DNS name in subjectAltName")?;
    if names.next().is_some() {
        return Err("more than one DNS name in subjectAltName".into());
    }
    NodeId::new(first).map_err(|e| e.to_string())
}

/// Reads the node id from the certificate chain a QUIC peer presented.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_from_cert(chain.first()?).ok()
}

/// The one crypto provider dvrmesh uses (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; an error when there is none.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("certificate {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("certificate {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "certificate {}: no certificate in file",
            path.display()
        )));
    }
    Ok(certs)
}
