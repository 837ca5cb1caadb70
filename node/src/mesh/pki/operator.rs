//! Operator credentials: loading one (`--credential FILE`), sealing the tenant records an agent
//! asks it to authorise, and the check every node makes of such a seal.

use std::path::Path;

use mesh_proto::{OperatorSeal, Record};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::identity::{load_certs, operator_from_cert};
use super::signing::Signer;
use crate::Error;

/// Environment variable naming the credential file when `--credential` is not given.
pub const CREDENTIAL_ENV: &str = "DVRMESH_CREDENTIAL";

/// An operator's certificate and key, as `cert issue --operator` writes them (one PEM file).
#[derive(Debug)]
pub struct OperatorCredential {
    /// The operator's name (the certificate's common name).
    pub name: String,
    cert: CertificateDer<'static>,
    signer: Signer,
}

impl OperatorCredential {
    /// Reads a credential file: an operator certificate and its PKCS#8 key.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let cert = load_certs(path)?.swap_remove(0);
        let name = operator_from_cert(&cert)
            .map_err(|e| Error::Tls(format!("credential {}: {e}", path.display())))?;
        let key = PrivateKeyDer::from_pem_file(path)
            .map_err(|e| Error::Tls(format!("credential {} key: {e}", path.display())))?;
        let PrivateKeyDer::Pkcs8(key) = key else {
            return Err(Error::Tls(format!(
                "credential {}: the key must be PKCS#8, as `cert issue --operator` writes it",
                path.display()
            )));
        };
        let signer = Signer::from_pkcs8(key.secret_pkcs8_der())?;
        Ok(OperatorCredential { name, cert, signer })
    }

    /// The seal authorising `record`.
    pub fn seal(&self, record: &Record) -> Result<OperatorSeal, Error> {
        Ok(OperatorSeal {
            cert: self.cert.as_ref().to_vec(),
            signature: self.signer.sign(&record.operator_message()?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::pki::signing::ClaimAuthority;
    use crate::mesh::pki::{init_ca, issue_node_cert, issue_operator_cert, Credentials};
    use mesh_proto::{HlcTimestamp, NodeId, ObjectId, ObjectKind, Version};

    #[test]
    fn an_operator_seal_verifies_and_binds_the_whole_record_and_a_node_key_cannot_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, 30).unwrap();
        let file = issue_operator_cert(&ca, "alice", &dir.path().join("ops"), 30).unwrap();
        let alice = OperatorCredential::load(&file).unwrap();
        assert_eq!(alice.name, "alice");
        let node = NodeId::new("n1").unwrap();
        let (cert, key) = issue_node_cert(&ca, &node, &dir.path().join("n1"), 30).unwrap();
        let creds = Credentials::load(&ca.join("ca.pem"), &cert, &key).unwrap();
        let authority = creds.peer_certs().unwrap();
        let version = Version {
            hlc: HlcTimestamp(7 << 16),
            writer: node.clone(),
        };
        let rec = Record::tombstone(ObjectKind::Network, ObjectId::new("net1").unwrap(), version);
        let sealed = rec.clone().with_operator(alice.seal(&rec).unwrap());
        assert_eq!(authority.operator_of(&sealed), Ok("alice".to_string()));
        // Moved to another object: refused.
        let moved = Record::tombstone(
            ObjectKind::Network,
            ObjectId::new("net2").unwrap(),
            rec.version().clone(),
        )
        .with_operator(sealed.operator().unwrap().clone());
        assert!(authority.operator_of(&moved).is_err());
        // A node certificate is no operator credential, even with a good signature.
        let node_seal = OperatorSeal {
            cert: rustls::pki_types::CertificateDer::from_pem_file(&cert)
                .unwrap()
                .as_ref()
                .to_vec(),
            signature: creds
                .signer()
                .unwrap()
                .sign(&rec.operator_message().unwrap())
                .unwrap(),
        };
        let why = authority
            .operator_of(&rec.clone().with_operator(node_seal))
            .unwrap_err();
        assert!(why.contains("not an operator"), "{why}");
        assert!(authority.operator_of(&rec).is_err(), "no seal");
        // An operator credential is no node: it cannot be loaded as a node's credentials.
        assert!(crate::mesh::pki::node_id_from_cert(&alice.cert).is_err());
        // Revoked: refused.
        let recorded = NodeId::new("operator-alice").unwrap();
        crate::mesh::pki::revoke::revoke(&ca, Some(&recorded), None).unwrap();
        let crl = crate::mesh::pki::crl::Crl::load(&ca.join("crl.pem")).unwrap();
        creds.revocation().update(&crl).unwrap();
        assert!(authority.operator_of(&sealed).is_err());
    }
}
