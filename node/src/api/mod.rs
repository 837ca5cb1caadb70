//! The local API: a unix socket (mode 0600) through which the CLI talks to its agent.
//!
//! One request per connection: the client writes one frame of kind [`KIND_REQUEST`] holding a JSON
//! [`Request`]; the agent answers with one frame of kind [`KIND_RESPONSE`] holding
//! `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`. Requests are capped at
//! [`MAX_REQUEST_BYTES`] and must arrive within [`REQUEST_TIMEOUT`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::FrameHeader;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::ha::HaHandle;
use crate::mesh::transport::{PeerDirectory, TransportStats};
use crate::mesh::view::{MemberState, ViewHandle};
use crate::reconcile::Reconciler;
use crate::store::ConfigService;
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

/// What the API handlers read.
#[derive(Clone)]
pub struct ApiContext {
    /// The converged view.
    pub view: ViewHandle,
    /// Transport counters, when running over QUIC.
    pub stats: Option<Arc<TransportStats>>,
    /// Peers the transport authenticated, when running over QUIC.
    pub peers: Option<PeerDirectory>,
    /// The replicated configuration store.
    pub store: Option<Arc<ConfigService>>,
    /// The datapath reconciler, when this agent programs the kernel.
    pub reconciler: Option<Arc<Reconciler>>,
    /// The SNAT election.
    pub ha: Option<HaHandle>,
}

/// How long `agent drain` waits for the routers to be taken by backups.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

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

impl ApiContext {
    async fn handle_any(&self, req: AnyRequest) -> Result<Value, String> {
        match req {
            AnyRequest::Node(Request::DatapathPlan) => {
                let plan = match &self.reconciler {
                    Some(r) => r.plan(),
                    None => {
                        let view = self.view.load();
                        let holders = self.ha.as_ref().map(|h| h.holders().borrow().clone());
                        datapath::plan(
                            &crate::reconcile::topology_from_view(&view, holders.as_ref()),
                            &view.me,
                        )
                    }
                };
                serde_json::to_value(plan).map_err(|e| e.to_string())
            }
            AnyRequest::Node(Request::Drain) | AnyRequest::Node(Request::Undrain) => {
                let ha = self.ha.as_ref().ok_or("this agent runs no SNAT election")?;
                let drain = matches!(req, AnyRequest::Node(Request::Drain));
                let before = ha.status();
                ha.set_draining(drain).await?;
                if !drain {
                    return Ok(json!({ "draining": false, "held": before.held }));
                }
                let started = tokio::time::Instant::now();
                loop {
                    let st = ha.status();
                    let handed: Vec<Value> = before
                        .held
                        .iter()
                        .map(|r| {
                            json!({
                                "router": r,
                                "holder": st.routers.get(r).and_then(|x| x.holder.clone()),
                            })
                        })
                        .collect();
                    let done = before.held.iter().all(|r| {
                        st.routers
                            .get(r)
                            .and_then(|x| x.holder.as_ref())
                            .is_some_and(|h| h != &self.view.load().me)
                    });
                    if done || started.elapsed() >= DRAIN_WAIT {
                        return Ok(json!({
                            "draining": true,
                            "complete": done,
                            "waited_ms": started.elapsed().as_millis() as u64,
                            "routers": handed,
                        }));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            AnyRequest::Node(Request::HaStatus) => match &self.ha {
                Some(ha) => serde_json::to_value(ha.status()).map_err(|e| e.to_string()),
                None => Err("this agent runs no SNAT election".into()),
            },
            AnyRequest::Config(ConfigRequest::Show {
                kind: mesh_proto::ObjectKind::Router,
                reference,
            }) => {
                let store = self
                    .store
                    .as_ref()
                    .ok_or("this agent has no configuration store")?;
                let mut v = store
                    .handle(ConfigRequest::Show {
                        kind: mesh_proto::ObjectKind::Router,
                        reference,
                    })
                    .await?;
                let id = v.get("id").and_then(Value::as_str).map(str::to_string);
                let ha = self.ha.as_ref().map(|h| h.status());
                if let (Some(obj), Some(id), Some(ha)) = (v.as_object_mut(), id, ha) {
                    let st = mesh_proto::ObjectId::new(&id)
                        .ok()
                        .and_then(|id| ha.routers.get(&id).cloned());
                    obj.insert(
                        "holder".into(),
                        json!(st.as_ref().and_then(|s| s.holder.clone())),
                    );
                    obj.insert("ha_status".into(), json!(st));
                }
                Ok(v)
            }
            AnyRequest::Node(Request::DatapathDiff) => match &self.reconciler {
                Some(r) => {
                    let ops = r.pending().await?;
                    Ok(json!({ "ops": ops, "last_pass": r.last_report() }))
                }
                None => Err(
                    "this agent runs with datapath = \"off\": there is no kernel to diff against"
                        .into(),
                ),
            },
            AnyRequest::Node(r) => self.handle(r),
            AnyRequest::Config(r) => match &self.store {
                Some(store) => store.handle(r).await,
                None => Err("this agent has no configuration store".into()),
            },
        }
    }

    fn handle(&self, req: Request) -> Result<Value, String> {
        match req {
            Request::Members => Ok(json!(members(&self.view))),
            Request::DatapathPlan
            | Request::DatapathDiff
            | Request::Drain
            | Request::Undrain
            | Request::HaStatus => Err("handled asynchronously".into()),
            Request::Status => {
                let v = self.view.load();
                Ok(json!({
                    "node_id": v.me.as_str(),
                    "view_generation": v.generation,
                    "members": v.members.len(),
                    "alive": v.alive().count(),
                    "excluded": v.excluded,
                    "transport": self.stats.as_ref().map(|s| s.snapshot()),
                    "datapath": self.reconciler.as_ref().map(|r| r.last_report()),
                    "ha": self.ha.as_ref().map(|h| {
                        let s = h.status();
                        json!({"ready": s.ready, "draining": s.draining, "majority": s.majority,
                            "held": s.held, "counters": s.counters, "stale_ms": s.stale_ms})
                    }),
                    "peers": self.peers.as_ref().map(|p| p.snapshot().into_iter()
                        .map(|(addr, r)| json!({"addr": addr.to_string(), "certified": r.certified.as_str(), "refused_claim": r.refused_claim}))
                        .collect::<Vec<_>>()),
                }))
            }
        }
    }
}

/// The member list of a view, sorted by node id.
pub fn members(view: &ViewHandle) -> Vec<MemberInfo> {
    let v = view.load();
    v.members
        .values()
        .map(|m| MemberInfo {
            node_id: m.facts.node_id().to_string(),
            mode: m.facts.mode().to_string(),
            tunnel_ip: m.facts.tunnel_ip().to_string(),
            state: match m.state {
                MemberState::Alive => "alive",
                MemberState::Dead => "dead",
            }
            .to_string(),
            snat_priority: m.facts.snat_priority().get(),
            dvr_mac: m.facts.dvr_mac().to_string(),
            gossip_addr: m.gossip_addr.to_string(),
            generation: m.generation,
            draining: m.facts.draining(),
            external: m
                .facts
                .external()
                .iter()
                .map(|(k, v)| (k.to_string(), v.interface.to_string()))
                .collect(),
        })
        .collect()
}

/// Binds the API socket and serves it until the task is aborted.
///
/// A stale socket file left by a dead agent is replaced; a socket another live agent answers on is
/// an error. The file is made mode 0600 and its directory is created if missing.
pub async fn serve(
    path: &Path,
    ctx: ApiContext,
) -> Result<(JoinHandle<()>, ApiSocketGuard), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("creating API socket directory", dir, e))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(Error::Api(format!(
                "{} is in use by a running agent",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| Error::io("removing stale API socket", path, e))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| Error::io("binding API socket", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("setting API socket mode", path, e))?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(stream, &ctx).await {
                            debug!(error = %e, "API request failed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((
        task,
        ApiSocketGuard {
            path: path.to_path_buf(),
        },
    ))
}

/// Removes the API socket file when dropped.
pub struct ApiSocketGuard {
    path: PathBuf,
}

impl Drop for ApiSocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_one(mut stream: UnixStream, ctx: &ApiContext) -> Result<(), Error> {
    let reply = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame(&mut stream, KIND_REQUEST, MAX_REQUEST_BYTES),
    )
    .await
    {
        Err(_) => json!({"ok": false, "error": "request not received in time"}),
        Ok(Err(e)) => json!({"ok": false, "error": e.to_string()}),
        Ok(Ok(body)) => match AnyRequest::parse(&body) {
            Err(e) => json!({"ok": false, "error": e}),
            Ok(req) => match ctx.handle_any(req).await {
                Ok(result) => json!({"ok": true, "result": result}),
                Err(e) => json!({"ok": false, "error": e}),
            },
        },
    };
    let body = serde_json::to_vec(&reply).map_err(|e| Error::Api(e.to_string()))?;
    stream
        .write_all(&mesh_proto::encode_frame(KIND_RESPONSE, &body))
        .await
        .map_err(|e| Error::Api(format!("writing response: {e}")))?;
    Ok(())
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
