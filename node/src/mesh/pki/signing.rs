//! Owner signatures on gossip state whose ownership matters (SNAT claims).
//!
//! Any certified member can write any key through chitchat's deltas, so a claim found in node
//! A's key space proves nothing by itself. A node therefore publishes its certificate (gossip key
//! [`KEY_CERT`]) and signs each claim with the private key of that certificate; a reader accepts a
//! claim only if the certificate chains to the cluster CA, names the claimant, and the signature
//! over the claim verifies. Certificates are checked once and cached.
//!
//! [`KEY_CERT`]: crate::mesh::keys::KEY_CERT

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_proto::NodeId;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use super::crl::Revocation;
use super::identity::node_id_from_cert;
use crate::Error;
/// Most certificates remembered by a verifier.
const MAX_CACHED: usize = 4096;

/// A certificate's check: the node it names and its public key, or why it was refused.
type CertCheck = Result<(NodeId, Vec<u8>), String>;

/// A check, the revocation generation it was made under, when, and the certificate's expiry
/// (a check is never trusted past it).
type CachedCheck = (CertCheck, u64, Instant, Option<SystemTime>);

/// An operator certificate's check: the operator's name and public key, or why it was refused.
type OperatorCheck = Result<(String, Vec<u8>), String>;

/// Operator certificate (DER) → its check, the revocation generation and when it was made.
type OperatorCache = HashMap<Vec<u8>, (OperatorCheck, u64, Instant)>;

/// Signs with this node's key (ECDSA P-256, the key `cert issue` generates).
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

impl Signer {
    /// A signer from a PKCS#8 ECDSA P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, Error> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|e| Error::Tls(format!("node key is not a PKCS#8 ECDSA P-256 key: {e}")))?;
        Ok(Signer { key, rng })
    }

    /// A signer with a fresh key, and its public key: for simulations without certificates.
    #[cfg(any(test, feature = "testsuite"))]
    pub fn generate_for_test() -> (Signer, Vec<u8>) {
        use ring::signature::KeyPair as _;
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("the system RNG works");
        let signer = Signer::from_pkcs8(pkcs8.as_ref()).expect("a key ring just made");
        let public = signer.key.public_key().as_ref().to_vec();
        (signer, public)
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        self.key
            .sign(&self.rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| Error::Tls("signing failed".into()))
    }
}

pub use crate::authority::ClaimAuthority;

/// Accepts everything: for simulations that run without TLS. Only in test builds (the
/// `testsuite` feature).
#[cfg(any(test, feature = "testsuite"))]
#[derive(Debug, Clone, Copy)]
pub struct TrustAll;

#[cfg(any(test, feature = "testsuite"))]
impl ClaimAuthority for TrustAll {
    fn verify(&self, _: &NodeId, _: Option<&str>, _: &[u8], _: &[u8]) -> bool {
        true
    }

    fn operator_of(&self, record: &mesh_proto::Record) -> Result<String, String> {
        record
            .operator()
            .map(|_| "unchecked".to_string())
            .ok_or_else(|| "no operator seal".to_string())
    }
}

/// The real authority: certificates must chain to the cluster CA, name the signer, and not be
/// revoked.
#[derive(Clone)]
pub struct PeerCerts {
    verifier: Arc<dyn ClientCertVerifier>,
    revocation: Option<Arc<Revocation>>,
    /// Gossip text of a certificate → its check, with the revocation generation and the time it
    /// was made (a check is redone after a new list, or after [`RECHECK_AFTER`] for expiry).
    cache: Arc<Mutex<HashMap<String, CachedCheck>>>,
    /// Operator certificate (DER) → its check, kept like `cache`.
    operators: Arc<Mutex<OperatorCache>>,
    /// Fingerprints of (key, message, signature) that verified.
    verified: Arc<Mutex<HashSet<u64>>>,
}

/// Most good signatures remembered.
const MAX_VERIFIED: usize = 65_536;

/// How long a certificate check is trusted before it is redone (expiry is checked then).
const RECHECK_AFTER: Duration = Duration::from_secs(60);

impl PeerCerts {
    /// An authority checking chains with `verifier` (the transport's client verifier), whose
    /// cached checks go stale when `revocation` takes a new list.
    pub fn new(
        verifier: Arc<dyn ClientCertVerifier>,
        revocation: Option<Arc<Revocation>>,
    ) -> PeerCerts {
        PeerCerts {
            verifier,
            revocation,
            cache: Arc::new(Mutex::new(HashMap::new())),
            operators: Arc::new(Mutex::new(HashMap::new())),
            verified: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The node a published certificate names and its public key, if the chain is good.
    pub fn public_key(&self, cert: &str) -> Result<(NodeId, Vec<u8>), String> {
        self.public_key_at(cert, SystemTime::now())
    }

    /// [`Self::public_key`] at wall-clock time `wall`: a cached check is used while it is of
    /// the current revocation list, younger than [`RECHECK_AFTER`] and `wall` is before the
    /// certificate's expiry; otherwise the chain is checked again at `wall`.
    pub fn public_key_at(&self, cert: &str, wall: SystemTime) -> CertCheck {
        let generation = self.revocation.as_ref().map_or(0, |r| r.generation());
        let now = Instant::now();
        if let Some((r, g, at, not_after)) = self.lock().get(cert) {
            let fresh = now.saturating_duration_since(*at) < RECHECK_AFTER;
            let unexpired = not_after.is_none_or(|t| wall < t);
            if *g == generation && fresh && unexpired {
                return r.clone();
            }
        }
        let (r, not_after) = self.check(cert, wall);
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(cert.to_string(), (r.clone(), generation, now, not_after));
        r
    }

    /// The operator an operator certificate (DER) names and its public key, if the chain is good
    /// and the certificate carries the operator role. Cached like node certificates.
    pub fn operator_key(&self, der: &[u8]) -> OperatorCheck {
        let generation = self.revocation.as_ref().map_or(0, |r| r.generation());
        let now = Instant::now();
        let mut cache = self.operators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, g, at)) = cache.get(der) {
            if *g == generation && now.saturating_duration_since(*at) < RECHECK_AFTER {
                return r.clone();
            }
        }
        let r = self.check_operator(der);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(der.to_vec(), (r.clone(), generation, now));
        r
    }

    fn check_operator(&self, der: &[u8]) -> OperatorCheck {
        let der = CertificateDer::from(der.to_vec());
        self.verifier
            .verify_client_cert(&der, &[], UnixTime::now())
            .map_err(|e| format!("operator certificate refused: {e}"))?;
        let name = super::identity::operator_from_cert(&der)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| format!("unparsable: {e}"))?;
        let key = parsed.public_key().subject_public_key.data.to_vec();
        Ok((name, key))
    }

    /// Whether `sig` over `msg` verifies with `key`. Good signatures are remembered (the view
    /// checks every published claim on every rebuild; a claim stays the same for many).
    fn signature_holds(&self, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (key, msg, sig).hash(&mut h);
            h.finish()
        };
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.contains(&fingerprint) {
            return true;
        }
        let ok = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key)
            .verify(msg, sig)
            .is_ok();
        if ok {
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(fingerprint);
        }
        ok
    }

    /// Whether a published certificate is revoked by the current list.
    pub fn is_revoked(&self, cert: &str) -> bool {
        let Some(revocation) = &self.revocation else {
            return false;
        };
        mesh_proto::decode_value::<Vec<u8>>(cert)
            .is_ok_and(|der| revocation.is_revoked(&CertificateDer::from(der)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedCheck>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chain check of a published certificate at `wall`, and the certificate's expiry when
    /// it could be read.
    fn check(&self, cert: &str, wall: SystemTime) -> (CertCheck, Option<SystemTime>) {
        let der = match mesh_proto::decode_value::<Vec<u8>>(cert) {
            Ok(d) => CertificateDer::from(d),
            Err(e) => return (Err(e.to_string()), None),
        };
        let parsed = match x509_parser::parse_x509_certificate(&der) {
            Ok((_, p)) => p,
            Err(e) => return (Err(format!("unparsable: {e}")), None),
        };
        let not_after = u64::try_from(parsed.validity().not_after.timestamp())
            .ok()
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        let at = UnixTime::since_unix_epoch(wall.duration_since(UNIX_EPOCH).unwrap_or_default());
        let checked = self
            .verifier
            .verify_client_cert(&der, &[], at)
            .map_err(|e| format!("certificate refused: {e}"))
            .and_then(|_| node_id_from_cert(&der))
            .map(|node| (node, parsed.public_key().subject_public_key.data.to_vec()));
        (checked, not_after)
    }
}

impl ClaimAuthority for PeerCerts {
    fn admits(&self, node: &NodeId, cert: Option<&str>) -> Result<(), String> {
        let cert = cert.ok_or("publishes no certificate")?;
        match self.public_key(cert)? {
            (named, _) if &named == node => Ok(()),
            (named, _) => Err(format!("publishes the certificate of {named}")),
        }
    }

    fn verify(&self, node: &NodeId, cert: Option<&str>, msg: &[u8], sig: &[u8]) -> bool {
        let Some(cert) = cert else {
            return false;
        };
        match self.public_key(cert) {
            Ok((named, key)) if &named == node => self.signature_holds(&key, msg, sig),
            _ => false,
        }
    }

    fn operator_of(&self, record: &mesh_proto::Record) -> Result<String, String> {
        let seal = record.operator().ok_or("not signed by an operator")?;
        let (name, key) = self.operator_key(&seal.cert)?;
        let msg = record.operator_message().map_err(|e| e.to_string())?;
        if self.signature_holds(&key, &msg, &seal.signature) {
            Ok(name)
        } else {
            Err(format!(
                "operator {name}'s signature does not cover this record"
            ))
        }
    }
}

/// The bytes a SNAT claim's signature covers: a domain tag, then the encoded claim.
pub fn claim_message(claim: &mesh_proto::SnatClaim) -> Result<Vec<u8>, Error> {
    let mut msg = b"dvrmesh snat claim v1\0".to_vec();
    msg.extend(mesh_proto::encode(claim)?);
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::pki::{init_ca, issue_node_cert, Credentials};
    use mesh_proto::{ObjectId, Priority, SnatClaim};

    fn creds(dir: &std::path::Path, ca: &std::path::Path, node: &str) -> Credentials {
        let id = NodeId::new(node).unwrap();
        let (cert, key) = issue_node_cert(ca, &id, &dir.join(node), 30).unwrap();
        Credentials::load(&ca.join("ca.pem"), &cert, &key).unwrap()
    }

    #[test]
    fn only_the_claimant_certified_by_the_cluster_ca_can_sign_its_claim() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, 30).unwrap();
        let other_ca = dir.path().join("other-ca");
        init_ca(&other_ca, 30).unwrap();
        let a = creds(dir.path(), &ca, "a");
        let b = creds(dir.path(), &ca, "b");
        let mallory = creds(&dir.path().join("m"), &other_ca, "a");
        let authority = a.peer_certs().unwrap();
        let claim = SnatClaim {
            router: ObjectId::new("r1").unwrap(),
            epoch: 3,
            priority: Priority::new(200).unwrap(),
            node: NodeId::new("a").unwrap(),
        };
        let msg = claim_message(&claim).unwrap();
        let sig = a.signer().unwrap().sign(&msg).unwrap();
        let a_cert = a.published_cert().unwrap();
        let node_a = NodeId::new("a").unwrap();
        assert!(authority.verify(&node_a, Some(&a_cert), &msg, &sig));
        // Tampered claim, missing certificate, another node's certificate, another CA's.
        let mut other = claim.clone();
        other.epoch = 4;
        let tampered = claim_message(&other).unwrap();
        assert!(!authority.verify(&node_a, Some(&a_cert), &tampered, &sig));
        assert!(!authority.verify(&node_a, None, &msg, &sig));
        let b_sig = b.signer().unwrap().sign(&msg).unwrap();
        let b_cert = b.published_cert().unwrap();
        assert!(!authority.verify(&node_a, Some(&b_cert), &msg, &b_sig));
        let m_sig = mallory.signer().unwrap().sign(&msg).unwrap();
        let m_cert = mallory.published_cert().unwrap();
        assert!(!authority.verify(&node_a, Some(&m_cert), &msg, &m_sig));
        assert!(!authority.verify(&node_a, Some("garbage"), &msg, &sig));
    }

    #[test]
    fn a_revoked_certificate_stops_verifying_even_when_its_checks_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, 30).unwrap();
        let a = creds(dir.path(), &ca, "a");
        let authority = a.peer_certs().unwrap();
        let node_a = NodeId::new("a").unwrap();
        let claim = SnatClaim {
            router: ObjectId::new("r1").unwrap(),
            epoch: 1,
            priority: Priority::new(200).unwrap(),
            node: node_a.clone(),
        };
        let msg = claim_message(&claim).unwrap();
        let sig = a.signer().unwrap().sign(&msg).unwrap();
        let cert = a.published_cert().unwrap();
        assert!(authority.verify(&node_a, Some(&cert), &msg, &sig));
        assert!(authority.verify(&node_a, Some(&cert), &msg, &sig), "cached");
        assert_eq!(authority.admits(&node_a, Some(&cert)), Ok(()));

        crate::mesh::pki::revoke::revoke(&ca, Some(&node_a), None).unwrap();
        let crl = crate::mesh::pki::crl::Crl::load(&ca.join("crl.pem")).unwrap();
        a.revocation().update(&crl).unwrap();
        assert!(!authority.verify(&node_a, Some(&cert), &msg, &sig));
        let why = authority.admits(&node_a, Some(&cert)).unwrap_err();
        assert!(why.contains("Revoked"), "{why}");
        assert!(authority.is_revoked(&cert));
    }

    #[test]
    fn an_expired_certificate_is_refused_even_when_its_check_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, 30).unwrap();
        // The node's certificate is valid for 2 days; the cache would trust a check for 60 s.
        let id = NodeId::new("a").unwrap();
        let (cert, key) = issue_node_cert(&ca, &id, &dir.path().join("a"), 2).unwrap();
        let a = Credentials::load(&ca.join("ca.pem"), &cert, &key).unwrap();
        let authority = a.peer_certs().unwrap();
        let published = a.published_cert().unwrap();
        let now = SystemTime::now();
        assert!(authority.public_key_at(&published, now).is_ok());
        assert!(authority.public_key_at(&published, now).is_ok(), "cached");
        let in_three_days = now + Duration::from_secs(3 * 86_400);
        let why = authority
            .public_key_at(&published, in_three_days)
            .unwrap_err();
        assert!(why.contains("xpired"), "{why}");
    }
}
