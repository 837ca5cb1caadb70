//! What travels on the API socket: one request frame (JSON) and one response frame per
//! connection, and the client side of it.

use std::path::Path;
use std::time::Duration;

use mesh_proto::FrameHeader;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::tenant::ops::ConfigRequest;
use crate::Error;

/// Frame kind of a request.
pub const KIND_REQUEST: u8 = 1;
/// Frame kind of a response.
pub const KIND_RESPONSE: u8 = 2;
/// Largest request accepted.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Largest response a client accepts.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("bad request: {e}"))?;
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
        ) {
            serde_json::from_value(v).map(AnyRequest::Node)
        } else {
            serde_json::from_value(v).map(AnyRequest::Config)
        }
        .map_err(|e| format!("bad request: {e}"))
    }
}

/// Reads one frame of `kind` with a payload of at most `limit` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    kind: u8,
    limit: u64,
) -> Result<Vec<u8>, Error> {
    let mut header = Vec::with_capacity(12);
    let parsed = loop {
        if let Some(h) = FrameHeader::parse(&header, limit)? {
            break h;
        }
        let mut b = [0u8; 1];
        let n = r
            .read(&mut b)
            .await
            .map_err(|e| Error::Api(format!("reading frame: {e}")))?;
        if n == 0 {
            return Err(Error::Api("connection closed before a whole frame".into()));
        }
        header.push(b[0]);
    };
    if parsed.kind != kind {
        return Err(Error::Api(format!(
            "frame kind {} where {kind} was expected",
            parsed.kind
        )));
    }
    // `parse` bounded the length by `limit`, which is at most MAX_FRAME_BYTES.
    let len = usize::try_from(parsed.len).map_err(|_| Error::Api("frame too large".into()))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .await
        .map_err(|e| Error::Api(format!("reading frame body: {e}")))?;
    Ok(body)
}

/// Sends one request to the agent at `path` and returns its result.
pub async fn call(path: &Path, req: &impl Serialize) -> Result<Value, Error> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        Error::Api(format!(
            "cannot reach the agent at {}: {e} (is `dvrmesh agent` running?)",
            path.display()
        ))
    })?;
    let body = serde_json::to_vec(req).map_err(|e| Error::Api(e.to_string()))?;
    stream
        .write_all(&mesh_proto::encode_frame(KIND_REQUEST, &body))
        .await
        .map_err(|e| Error::Api(format!("sending request: {e}")))?;
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        read_frame(&mut stream, KIND_RESPONSE, MAX_RESPONSE_BYTES),
    )
    .await
    .map_err(|_| Error::Api("the agent did not answer within 30 s".into()))??;
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
