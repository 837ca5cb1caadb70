//! The cluster's PKI: issuing the CA and node certificates, loading them, and the rustls
//! configurations that make every gossip connection mutually authenticated.
//!
//! A node certificate carries exactly one DNS subject alternative name: the node id. Both ends
//! verify the peer's chain against the cluster CA and read the peer's node id from that name; the
//! transport then refuses gossip that claims another id from that peer's address.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_proto::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// File names inside a CA directory and a node credential directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";
/// A node's certificate.
pub const NODE_CERT: &str = "node.pem";
/// A node's private key.
pub const NODE_KEY: &str = "node.key";
/// ALPN protocol id of the gossip transport.
pub const ALPN: &[u8] = b"dvrmesh/1";

/// Creates a cluster CA in `dir` (`ca.pem`, `ca.key` with mode 0600). Refuses to overwrite.
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
    Ok((cert_path, key_path))
}

/// Issues a certificate for `node` signed by the CA in `ca_dir`, into `out` (`node.pem`,
/// `node.key` with mode 0600). Refuses to overwrite.
pub fn issue_node_cert(
    ca_dir: &Path,
    node: &NodeId,
    out: &Path,
    days: u32,
) -> Result<(PathBuf, PathBuf), Error> {
    let cert_path = out.join(NODE_CERT);
    let key_path = out.join(NODE_KEY);
    refuse_existing(&[&cert_path, &key_path])?;
    let ca_cert_pem = read_text("CA certificate", &ca_dir.join(CA_CERT))?;
    let ca_key_pem = read_text("CA key", &ca_dir.join(CA_KEY))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| Error::Tls(format!("CA key {}: {e}", ca_dir.join(CA_KEY).display())))?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_cert_pem).map_err(|e| {
        Error::Tls(format!(
            "CA certificate {}: {e}",
            ca_dir.join(CA_CERT).display()
        ))
    })?;
    // Re-create the issuer from its own parameters and key: the signature on the node
    // certificate is made by the CA key and names the CA's subject, which is all a verifier checks.
    let issuer = ca_params
        .self_signed(&ca_key)
        .map_err(|e| Error::Tls(format!("loading CA: {e}")))?;

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

fn read_text(what: &'static str, path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|e| Error::io(what, path, e))
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

/// A node's loaded credentials.
#[derive(Debug)]
pub struct Credentials {
    /// The node id its certificate is issued to.
    pub node_id: NodeId,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Credentials {
    /// Loads the CA certificate, the node certificate and its key, and reads the node id from the
    /// certificate.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, Error> {
        let ca_der = load_certs(ca)?;
        let mut roots = RootCertStore::empty();
        for c in ca_der {
            roots
                .add(c)
                .map_err(|e| Error::Tls(format!("CA certificate {}: {e}", ca.display())))?;
        }
        let chain = load_certs(cert)?;
        let node_id = node_id_from_cert(&chain[0])
            .map_err(|e| Error::Tls(format!("certificate {}: {e}", cert.display())))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| Error::Tls(format!("private key {}: {e}", key.display())))?;
        Ok(Credentials {
            node_id,
            roots: Arc::new(roots),
            chain,
            key,
        })
    }

    /// A signer with this node's key, for owner-signed gossip values.
    pub fn signer(&self) -> Result<crate::signing::Signer, Error> {
        match &self.key {
            PrivateKeyDer::Pkcs8(k) => crate::signing::Signer::from_pkcs8(k.secret_pkcs8_der()),
            _ => Err(Error::Tls(
                "node key must be PKCS#8 (as `dvrmesh cert issue` writes it) to sign claims".into(),
            )),
        }
    }

    /// Verifies other nodes' signatures against the certificates they publish.
    pub fn peer_certs(&self) -> Result<crate::signing::PeerCerts, Error> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider(),
        )
        .build()
        .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
        Ok(crate::signing::PeerCerts::new(verifier))
    }

    /// This node's certificate as published in gossip.
    pub fn published_cert(&self) -> Result<String, Error> {
        Ok(mesh_proto::encode_value(&self.chain[0].as_ref().to_vec())?)
    }

    /// The rustls server side: TLS 1.3, a client certificate from the cluster CA required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, Error> {
        let provider = provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Tls(format!("node certificate: {e}")))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// The rustls client side: TLS 1.3, presents the node certificate, accepts any server whose
    /// chain leads to the cluster CA and whose certificate names a valid node id.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, Error> {
        let provider = provider();
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::Tls(format!("server verifier: {e}")))?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NodeCertVerifier { inner }))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Tls(format!("node certificate: {e}")))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
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

/// Verifies a server certificate against the cluster CA using the node id it names as the
/// expected server name: the dialer may know only an address, never a name.
#[derive(Debug)]
struct NodeCertVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let node = node_id_from_cert(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(std::io::Error::other(e)),
            )))
        })?;
        let name = ServerName::try_from(node.as_str().to_string()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How long new certificates are valid by default.
pub const DEFAULT_NODE_CERT_DAYS: u32 = 365;
/// How long a new CA is valid by default.
pub const DEFAULT_CA_DAYS: u32 = 3650;
