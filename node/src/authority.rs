//! The one question tenant rules ask of the cluster PKI, as a trait: is this signature or seal
//! from whom it says? `mesh::pki` answers it; the tenant rules and the view only ask (so the
//! rules need not know the PKI, and the PKI may read tenant records).

use mesh_proto::NodeId;

/// Verifies what other nodes signed, against the certificates they publish.
pub trait ClaimAuthority: Send + Sync {
    /// Whether `sig` is `node`'s signature over `msg`, per the certificate `node` publishes
    /// (`cert`: the certificate it publishes in gossip, PEM).
    fn verify(&self, node: &NodeId, cert: Option<&str>, msg: &[u8], sig: &[u8]) -> bool;

    /// Whether `node` is still a member in good standing: the certificate it publishes chains to
    /// the cluster CA, names it, is not expired and not revoked. Why not, otherwise.
    fn admits(&self, node: &NodeId, cert: Option<&str>) -> Result<(), String> {
        let _ = (node, cert);
        Ok(())
    }

    /// The operator whose seal authorises `record`: its certificate chains to the cluster CA,
    /// carries the operator role, is not expired or revoked, and signed this very record. Why
    /// not, otherwise.
    fn operator_of(&self, record: &mesh_proto::Record) -> Result<String, String> {
        let _ = record;
        Err("operator credentials are not checked here".into())
    }
}
