//! Who a certificate names: a node (its one DNS subject alternative name, read the same way by
//! the TLS verifiers, the transport and the signature checks) or an operator, and its role.
//!
//! The role is a URI subject alternative name, `dvrmesh:role=node` or `dvrmesh:role=operator`:
//! rcgen writes URI names and x509-parser reads them (both already in the lock file), so no
//! private extension or OID is needed, and `openssl x509 -text` shows it. A certificate without a
//! role URI is a node certificate (issued before roles existed).

use std::path::Path;
use std::sync::Arc;

use mesh_proto::NodeId;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::Error;

/// Prefix of the role URI in a certificate's subject alternative names.
pub const ROLE_URI_PREFIX: &str = "dvrmesh:role=";

/// What a certificate's holder may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A cluster member: joins the mesh, publishes facts, ports, claims and health about itself.
    Node,
    /// An operator: signs tenant configuration; never joins the mesh.
    Operator,
}

impl Role {
    /// The URI naming this role in a certificate.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    /// `node` or `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Operator => "operator",
        }
    }
}

/// The role a parsed certificate carries: its one role URI, or [`Role::Node`] when it has none.
fn role_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<Role, String> {
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
    else {
        return Ok(Role::Node);
    };
    let mut roles = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => u.strip_prefix(ROLE_URI_PREFIX),
        _ => None,
    });
    let role = match roles.next() {
        None => return Ok(Role::Node),
        Some("node") => Role::Node,
        Some("operator") => Role::Operator,
        Some(other) => return Err(format!("unknown role {other:?}")),
    };
    if roles.next().is_some() {
        return Err("more than one role in subjectAltName".into());
    }
    Ok(role)
}

/// The operator a certificate names (its common name), if it carries the operator role.
pub fn operator_from_cert(der: &CertificateDer<'_>) -> Result<String, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable: {e}"))?;
    if role_of(&cert)? != Role::Operator {
        return Err("not an operator certificate (no dvrmesh:role=operator)".into());
    }
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("operator certificate without a common name")?;
    Ok(name.to_string())
}

/// Reads the node id from a certificate: its one DNS subject alternative name. A certificate
/// with another role than `node` names no node.
pub fn node_id_from_cert(der: &CertificateDer<'_>) -> Result<NodeId, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable: {e}"))?;
    let role = role_of(&cert)?;
    if role != Role::Node {
        return Err(format!("a {} certificate names no node", role.as_str()));
    }
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
