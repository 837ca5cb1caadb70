//! What travels on the API socket: one request frame (JSON) and one response frame per
//! connection, and the client side of it.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::frames::{read_any_frame, KIND_REQUEST, KIND_RESPONSE, MAX_RESPONSE_BYTES};
use super::sealing::{answer_ask, KIND_SEAL_ASK, OPERATOR_FIELD};
use crate::mesh::pki::operator::OperatorCredential;
use crate::tenant::ops::ConfigRequest;
use crate::Error;

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every member of the cluster as this agent sees it.
    Members,
    /// This agent's own state: id, view generation, transport counters, peers.
    Status,
    /// The datapath plan for this node.
    DatapathPlan,
    /// The ops the next reconcile pass would apply.
    DatapathDiff,
    /// Hand every SNAT router this node holds to the best backup, and stay out of elections.
    Drain,
    /// Take part in SNAT elections again.
    Undrain,
    /// The SNAT election as this node sees it.
    HaStatus,
    /// Check the certificate and key `[tls]` names and, when good, re-execute with them.
    ReloadCert,
}

/// One member, as `members --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub node_id: String,
    /// `dvr`, `dvr_snat` or `dvr_no_external`.
    pub mode: String,
    /// VXLAN tunnel endpoint.
    pub tunnel_ip: String,
    /// `alive` or `dead`.
    pub state: String,
    /// Default SNAT priority.
    pub snat_priority: u8,
    /// The node's DVR MAC.
    pub dvr_mac: String,
    /// Gossip address.
    pub gossip_addr: String,
    /// Gossip generation of its current life.
    pub generation: u64,
    /// Whether it is draining SNAT.
    pub draining: bool,
    /// External networks it reaches: name → interface.
    pub external: std::collections::BTreeMap<String, String>,
}

/// Any request the API understands: the agent's own (`Request`) or the configuration's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyRequest {
    /// About the agent and membership.
    Node(Request),
    /// About the tenant configuration.
    Config(ConfigRequest),
}

impl AnyRequest {
    /// Parses a JSON request by its `op`.
    pub fn parse(body: &[u8]) -> Result<AnyRequest, String> {
        Self::parse_with_operator(body).map(|(r, _)| r)
    }

    /// Parses a JSON request by its `op`, and the operator whose credential the client holds
    /// (the `operator` field), if any.
    pub fn parse_with_operator(body: &[u8]) -> Result<(AnyRequest, Option<String>), String> {
        let mut v: Value = serde_json::from_slice(body).map_err(|e| format!("bad request: {e}"))?;
        let operator = match v.as_object_mut().and_then(|o| o.remove(OPERATOR_FIELD)) {
            None => None,
            Some(Value::String(name)) => Some(name),
            Some(_) => return Err(format!("bad request: {OPERATOR_FIELD} must be a string")),
        };
        Self::parse_value(v).map(|r| (r, operator))
    }

    fn parse_value(v: Value) -> Result<AnyRequest, String> {
        let op = v.get("op").and_then(Value::as_str).unwrap_or_default();
        if matches!(
            op,
            "members"
                | "status"
                | "datapath_plan"
                | "datapath_diff"
                | "drain"
                | "undrain"
                | "ha_status"
                | "reload_cert"
        ) {
            serde_json::from_value(v).map(AnyRequest::Node)
        } else {
            serde_json::from_value(v).map(AnyRequest::Config)
        }
        .map_err(|e| format!("bad request: {e}"))
    }

    /// The request's `op`, as the client sent it (one of the API's known operations).
    pub fn op(&self) -> String {
        let value = match self {
            AnyRequest::Node(r) => serde_json::to_value(r),
            AnyRequest::Config(r) => serde_json::to_value(r),
        };
        value
            .ok()
            .and_then(|v| v.get("op").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string())
    }
}

/// Sends one request to the agent at `path` and returns its result.
pub async fn call(path: &Path, req: &impl Serialize) -> Result<Value, Error> {
    call_as(path, req, None).await
}

/// Sends one request to the agent at `path`, sealing the tenant records it causes with
/// `credential` when given, and returns its result.
pub async fn call_as(
    path: &Path,
    req: &impl Serialize,
    credential: Option<&OperatorCredential>,
) -> Result<Value, Error> {
    let mut req = serde_json::to_value(req).map_err(|e| Error::Api(e.to_string()))?;
    let op = req
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let (Some(c), Some(obj)) = (credential, req.as_object_mut()) {
        obj.insert(OPERATOR_FIELD.into(), Value::String(c.name.clone()));
    }
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        Error::Api(format!(
            "cannot reach the agent at {}: {e} (is `dvrmesh agent` running?)",
            path.display()
        ))
    })?;
    let body = serde_json::to_vec(&req).map_err(|e| Error::Api(e.to_string()))?;
    stream
        .write_all(&mesh_proto::encode_frame(KIND_REQUEST, &body))
        .await
        .map_err(|e| Error::Api(format!("sending request: {e}")))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let (kind, body) =
            tokio::time::timeout_at(deadline, read_any_frame(&mut stream, MAX_RESPONSE_BYTES))
                .await
                .map_err(|_| Error::Api("the agent did not answer within 30 s".into()))??;
        match (kind, credential) {
            (KIND_RESPONSE, _) => break body,
            (KIND_SEAL_ASK, Some(c)) => answer_ask(&mut stream, &body, &op, c).await?,
            (KIND_SEAL_ASK, None) => {
                return Err(Error::Api(
                    "the agent asked for an operator's seal but no credential was given".into(),
                ))
            }
            (other, _) => {
                return Err(Error::Api(format!(
                    "frame kind {other} where {KIND_RESPONSE} was expected"
                )))
            }
        }
    };
    let mut v: Value =
        serde_json::from_slice(&reply).map_err(|e| Error::Api(format!("bad response: {e}")))?;
    if v.get("ok") == Some(&Value::Bool(true)) {
        Ok(v.get_mut("result").map(Value::take).unwrap_or(Value::Null))
    } else {
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("malformed response")
            .to_string();
        Err(Error::Api(msg))
    }
}
