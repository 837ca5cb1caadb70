//! A node's loaded credentials and the rustls configurations that make every gossip connection
//! mutually authenticated: both ends verify the peer's chain against the cluster CA and read the
//! peer's node id from its certificate; the transport then refuses gossip that claims another id
//! from that peer's connection.

use std::path::Path;
use std::sync::Arc;

use mesh_proto::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::crl::Revocation;
use super::identity::{load_certs, node_id_from_cert, provider};
use super::signing::{PeerCerts, Signer};
use crate::Error;

/// ALPN protocol id of the gossip transport.
pub const ALPN: &[u8] = b"dvrmesh/1";
/// ALPN protocol id of the gossip transport whose digests may travel as changes
/// ([`crate::mesh::link`]); offered first, so two nodes that both speak it use it and an older
/// peer settles on [`ALPN`].
pub const ALPN_LINKED: &[u8] = b"dvrmesh/2";

/// A node's loaded credentials.
#[derive(Debug)]
pub struct Credentials {
    /// The node id its certificate is issued to.
    pub node_id: NodeId,
    revocation: Arc<Revocation>,
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
            revocation: Arc::new(Revocation::new(Arc::new(roots), None)?),
            chain,
            key,
        })
    }

    /// A signer with this node's key, for owner-signed gossip values.
    pub fn signer(&self) -> Result<Signer, Error> {
        match &self.key {
            PrivateKeyDer::Pkcs8(k) => Signer::from_pkcs8(k.secret_pkcs8_der()),
            _ => Err(Error::Tls(
                "node key must be PKCS#8 (as `dvrmesh cert issue` writes it) to sign claims".into(),
            )),
        }
    }

    /// Verifies other nodes' signatures against the certificates they publish (following the
    /// revocation list).
    pub fn peer_certs(&self) -> Result<PeerCerts, Error> {
        Ok(PeerCerts::new(
            self.revocation.client_verifier(),
            Some(self.revocation.clone()),
        ))
    }

    /// Checks that the private key belongs to the certificate: a signature made with it verifies
    /// with the certificate's public key.
    pub fn check_key_matches(&self) -> Result<(), Error> {
        let msg = b"dvrmesh key check";
        let sig = self.signer()?.sign(msg)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&self.chain[0])
            .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
        let public = cert.public_key().subject_public_key.data.to_vec();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public)
            .verify(msg, &sig)
            .map_err(|_| Error::Tls("the private key does not belong to the certificate".into()))
    }

    /// The certificate's serial number, hex.
    pub fn serial_hex(&self) -> String {
        super::revoke::serial_of(&self.chain[0])
            .map(|s| super::revoke::hex(&s))
            .unwrap_or_default()
    }

    /// Whether the revocation list revokes this node's own certificate.
    pub fn own_cert_revoked(&self) -> bool {
        self.revocation.is_revoked(&self.chain[0])
    }

    /// The revocation list every verifier of these credentials follows.
    pub fn revocation(&self) -> Arc<Revocation> {
        self.revocation.clone()
    }

    /// This node's certificate as published in gossip.
    pub fn published_cert(&self) -> Result<String, Error> {
        Ok(mesh_proto::encode_value(&self.chain[0].as_ref().to_vec())?)
    }

    /// The rustls server side: TLS 1.3, a client certificate from the cluster CA required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, Error> {
        let provider = provider();
        let verifier = self.revocation.client_verifier();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Tls(format!("node certificate: {e}")))?;
        cfg.alpn_protocols = vec![ALPN_LINKED.to_vec(), ALPN.to_vec()];
        // No resumption: a resumed session skips the certificate check, so a revoked peer could
        // come back on an old ticket.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(cfg)
    }

    /// The rustls client side: TLS 1.3, presents the node certificate, accepts any server whose
    /// chain leads to the cluster CA and whose certificate names a valid node id.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, Error> {
        let provider = provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(self.revocation.server_verifier())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Tls(format!("node certificate: {e}")))?;
        cfg.alpn_protocols = vec![ALPN_LINKED.to_vec(), ALPN.to_vec()];
        // No resumption (see the server side): every handshake checks the certificate.
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(cfg)
    }
}
