//! Asking the operator behind an API request to seal the tenant records the request causes.
//!
//! The agent plans a write, claims what it needs, and only then knows the exact records (ids,
//! versions, allocated addresses). It hands them to the API connection, whose client signs each
//! with its operator credential ([`crate::mesh::pki::operator`]) and answers with the seals.

use mesh_proto::{ObjectKind, OperatorSeal, Record};
use tokio::sync::{mpsc, oneshot};

use super::ConfigService;
use crate::tenant::Writers;

/// Records waiting for an operator's seals, and where the seals (one per record, same order)
/// go.
#[derive(Debug)]
pub struct SealRequest {
    /// What to seal.
    pub records: Vec<Record>,
    /// The seals, or why the client gave none.
    pub reply: oneshot::Sender<Result<Vec<OperatorSeal>, String>>,
}

/// The operator behind one API request, reached through its connection.
#[derive(Clone, Debug)]
pub struct OperatorSession {
    tx: mpsc::Sender<SealRequest>,
}

impl OperatorSession {
    /// A session and the receiving end its API connection serves.
    pub fn channel() -> (Self, mpsc::Receiver<SealRequest>) {
        let (tx, rx) = mpsc::channel(1);
        (OperatorSession { tx }, rx)
    }

    /// `records`, each sealed by the operator.
    async fn seal(&self, records: Vec<Record>) -> Result<Vec<Record>, String> {
        let (reply, answer) = oneshot::channel();
        let n = records.len();
        self.tx
            .send(SealRequest {
                records: records.clone(),
                reply,
            })
            .await
            .map_err(|_| "the operator's connection closed before sealing".to_string())?;
        let seals = answer
            .await
            .map_err(|_| "the operator's connection closed before sealing".to_string())??;
        if seals.len() != n {
            return Err(format!(
                "the operator sent {} seals for {n} records",
                seals.len()
            ));
        }
        Ok(records
            .into_iter()
            .zip(seals)
            .map(|(r, s)| r.with_operator(s))
            .collect())
    }
}

/// Whether a record is tenant configuration (everything but ports, which their host writes).
fn needs_operator(r: &Record) -> bool {
    r.kind() != ObjectKind::Port
}

impl ConfigService {
    /// Publishes records this request caused: tenant configuration sealed by the request's
    /// operator when there is one; refused without one when only operators may write.
    pub(super) async fn publish_authorised(&self, records: &[Record]) -> Result<(), String> {
        let session = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (tenant, ports): (Vec<Record>, Vec<Record>) =
            records.iter().cloned().partition(needs_operator);
        let tenant = match session {
            Some(s) if !tenant.is_empty() => s.seal(tenant).await?,
            None if !tenant.is_empty() && self.settings.writers == Writers::Operators => {
                return Err(operators_only());
            }
            _ => tenant,
        };
        let mut all = ports;
        all.extend(tenant);
        self.publish_records(&all).await
    }
}

/// The error a write without a credential gets when only operators may write.
pub(super) fn operators_only() -> String {
    "this cluster accepts configuration only from operators ([tenancy] writers = \"operators\"): \
     pass --credential FILE (or set DVRMESH_CREDENTIAL) with a credential from \
     `dvrmesh cert issue --operator NAME`"
        .to_string()
}
