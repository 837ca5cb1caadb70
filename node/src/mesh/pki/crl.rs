//! The revocation list an agent honours (`[tls] crl`): the TLS verifiers of every connection and
//! the checks of published certificates read it through one [`Revocation`], which swaps in a new
//! list without rebuilding the endpoint, so a revoked node is refused from the next handshake and
//! the next view on.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::identity::{node_id_from_cert, provider};
use super::revoke::serial_of;
use crate::Error;

/// Largest revocation list read (about 100 000 revoked certificates).
pub const MAX_CRL_BYTES: u64 = 4 << 20;

/// A loaded revocation list.
#[derive(Debug, Clone)]
pub struct Crl {
    der: CertificateRevocationListDer<'static>,
    serials: HashSet<Vec<u8>>,
    number: u64,
}

impl Crl {
    /// Reads and parses a PEM revocation list.
    pub fn load(path: &Path) -> Result<Crl, Error> {
        let pem = crate::files::read_limited("revocation list", path, MAX_CRL_BYTES)?.ok_or_else(
            || Error::Tls(format!("revocation list {} does not exist", path.display())),
        )?;
        Crl::parse(&pem).map_err(|e| Error::Tls(format!("revocation list {}: {e}", path.display())))
    }

    /// Parses a PEM revocation list.
    pub fn parse(pem: &[u8]) -> Result<Crl, String> {
        let der = CertificateRevocationListDer::from_pem_slice(pem).map_err(|e| e.to_string())?;
        let (_, parsed) = x509_parser::parse_x509_crl(&der).map_err(|e| e.to_string())?;
        let serials = parsed
            .iter_revoked_certificates()
            .map(|r| r.user_certificate.to_bytes_be())
            .collect();
        let number = parsed
            .crl_number()
            .and_then(|n| u64::try_from(n.clone()).ok())
            .unwrap_or(0);
        Ok(Crl {
            der,
            serials,
            number,
        })
    }

    /// The list's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// How many certificates it revokes.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// Whether it revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }
}

/// The verifiers built from the cluster CA and the current revocation list.
struct Built {
    client: Arc<dyn ClientCertVerifier>,
    server: Arc<WebPkiServerVerifier>,
    revoked: HashSet<Vec<u8>>,
}

/// The current verifiers; swapped whole when the list changes.
pub struct Revocation {
    roots: Arc<RootCertStore>,
    hints: Vec<DistinguishedName>,
    built: ArcSwap<Built>,
    generation: AtomicU64,
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("generation", &self.generation())
            .finish()
    }
}

impl Revocation {
    /// Verifiers for `roots`, honouring `crl` if given.
    pub fn new(roots: Arc<RootCertStore>, crl: Option<&Crl>) -> Result<Revocation, Error> {
        let built = build(&roots, crl)?;
        let hints = built.client.root_hint_subjects().to_vec();
        Ok(Revocation {
            roots,
            hints,
            built: ArcSwap::from_pointee(built),
            generation: AtomicU64::new(0),
        })
    }

    /// Honours `crl` from the next handshake and certificate check on.
    pub fn update(&self, crl: &Crl) -> Result<(), Error> {
        let built = build(&self.roots, Some(crl))?;
        self.built.store(Arc::new(built));
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Increases with every [`Revocation::update`]: cached checks older than it are stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether the current list revokes this certificate.
    pub fn is_revoked(&self, cert: &CertificateDer<'_>) -> bool {
        serial_of(cert).is_ok_and(|s| self.built.load().revoked.contains(&s))
    }

    /// The client-certificate verifier of the server side (follows updates).
    pub fn client_verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(ClientVerifier(self.clone()))
    }

    /// The server-certificate verifier of the dialing side (follows updates).
    pub fn server_verifier(self: &Arc<Self>) -> Arc<dyn ServerCertVerifier> {
        Arc::new(NodeCertVerifier(self.clone()))
    }
}

fn build(roots: &Arc<RootCertStore>, crl: Option<&Crl>) -> Result<Built, Error> {
    let crls: Vec<CertificateRevocationListDer<'static>> =
        crl.map(|c| c.der.clone()).into_iter().collect();
    let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .with_crls(crls.clone())
        .build()
        .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
    let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .with_crls(crls)
        .build()
        .map_err(|e| Error::Tls(format!("server verifier: {e}")))?;
    Ok(Built {
        client,
        server,
        revoked: crl.map(|c| c.serials.clone()).unwrap_or_default(),
    })
}

/// The server side's check of a dialer's certificate, against the current list.
#[derive(Debug)]
struct ClientVerifier(Arc<Revocation>);

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.0.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .built
            .load()
            .client
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .built
            .load()
            .client
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .built
            .load()
            .client
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.built.load().client.supported_verify_schemes()
    }
}

/// The dialer's check of a server certificate: the node id it names is the expected server name
/// (the dialer may know only an address), against the current list.
#[derive(Debug)]
struct NodeCertVerifier(Arc<Revocation>);

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
        self.0.built.load().server.verify_server_cert(
            end_entity,
            intermediates,
            &name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .built
            .load()
            .server
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .built
            .load()
            .server
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.built.load().server.supported_verify_schemes()
    }
}
