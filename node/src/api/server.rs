//! The API server: the socket, and a handler for every request, reading the agent's parts
//! through an [`ApiContext`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::frames::{read_frame, KIND_REQUEST, KIND_RESPONSE, MAX_REQUEST_BYTES, REQUEST_TIMEOUT};
use super::protocol::{AnyRequest, MemberInfo, Request};
use super::sealing::ask_seals;
use crate::ha::HaHandle;
use crate::instruments::Instruments;
use crate::mesh::transport::{PeerDirectory, TransportStats};
use crate::mesh::trust::Trust;
use crate::mesh::view::{MemberState, ViewHandle};
use crate::reconcile::Reconciler;
use crate::reload::CertReload;
use crate::store::{ConfigService, OperatorSession};
use crate::tenant::ops::{writes_configuration, ConfigRequest};
use crate::Error;

/// What the API handlers read.
#[derive(Clone)]
pub struct ApiContext {
    /// The converged view.
    pub view: ViewHandle,
    /// Transport counters, when running over QUIC.
    pub stats: Option<Arc<TransportStats>>,
    /// Peers the transport authenticated, when running over QUIC.
    pub peers: Option<PeerDirectory>,
    /// The gossip filter, when running over QUIC.
    pub trust: Option<Arc<Trust>>,
    /// The replicated configuration store.
    pub store: Option<Arc<ConfigService>>,
    /// The datapath reconciler, when this agent programs the kernel.
    pub reconciler: Option<Arc<Reconciler>>,
    /// The SNAT election.
    pub ha: Option<HaHandle>,
    /// Where requests are counted.
    pub instruments: Instruments,
    /// Taking a new certificate, when this is a running agent.
    pub reload: Option<CertReload>,
}

/// How long a reload waits after answering before the agent re-executes.
const RELOAD_ANSWER_DELAY: Duration = Duration::from_millis(200);

/// How long `agent drain` waits for the routers to be taken by backups.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

impl ApiContext {
    async fn handle_any(&self, req: AnyRequest) -> Result<Value, String> {
        match req {
            AnyRequest::Node(Request::Members) => Ok(json!(members(&self.view))),
            AnyRequest::Node(Request::Status) => Ok(self.status()),
            AnyRequest::Node(Request::DatapathPlan) => self.datapath_plan(),
            AnyRequest::Node(Request::DatapathDiff) => self.datapath_diff().await,
            AnyRequest::Node(Request::Drain) => self.drain().await,
            AnyRequest::Node(Request::Undrain) => self.undrain().await,
            AnyRequest::Node(Request::ReloadCert) => {
                let reload = self
                    .reload
                    .as_ref()
                    .ok_or("this agent cannot reload its certificate")?;
                let found = reload
                    .request(RELOAD_ANSWER_DELAY)
                    .map_err(|e| format!("the new certificate is refused: {e}"))?;
                serde_json::to_value(found).map_err(|e| e.to_string())
            }
            AnyRequest::Node(Request::HaStatus) => {
                serde_json::to_value(self.ha()?.status()).map_err(|e| e.to_string())
            }
            AnyRequest::Config(ConfigRequest::Show {
                kind: mesh_proto::ObjectKind::Router,
                reference,
            }) => self.router_show(reference).await,
            AnyRequest::Config(r) => self.store()?.handle(r).await,
        }
    }

    fn ha(&self) -> Result<&HaHandle, String> {
        self.ha
            .as_ref()
            .ok_or_else(|| "this agent runs no SNAT election".to_string())
    }

    fn store(&self) -> Result<&ConfigService, String> {
        self.store
            .as_deref()
            .ok_or_else(|| "this agent has no configuration store".to_string())
    }

    /// This agent's own state: view, transport, datapath, election, peers.
    fn status(&self) -> Value {
        let v = self.view.load();
        json!({
            "node_id": v.me.as_str(),
            "view_generation": v.generation,
            "view_builds": self.view.stats(),
            "members": v.members.len(),
            "alive": v.alive().count(),
            "excluded": v.excluded,
            "transport": self.stats.as_ref().map(|s| s.snapshot()),
            "trust": self.trust.as_ref().map(|t| t.counters()),
            "refused_values": v.tenant.problems,
            "readdressed": self.store.as_ref().map(|s| s.readdressed()).unwrap_or_default(),
            "refused_over_cap": v.tenant.over_cap,
            "datapath": self.reconciler.as_ref().map(|r| r.last_report()),
            "ha": self.ha.as_ref().map(|h| {
                let s = h.status();
                json!({"ready": s.ready, "draining": s.draining, "majority": s.majority,
                    "held": s.held, "counters": s.counters, "stale_ms": s.stale_ms})
            }),
            "peers": self.peers.as_ref().map(|p| p.snapshot().into_iter()
                .map(|(addr, r)| json!({"addr": addr.to_string(), "certified": r.certified.as_str(), "refused_claim": r.refused_claim}))
                .collect::<Vec<_>>()),
        })
    }

    /// The plan for this node: the reconciler's, or computed from the view when the datapath is
    /// off.
    fn datapath_plan(&self) -> Result<Value, String> {
        let plan = match &self.reconciler {
            Some(r) => r.plan(),
            None => {
                let view = self.view.load();
                let holders = self.ha.as_ref().map(|h| h.holders().borrow().clone());
                let topology = crate::reconcile::topology_from_view(&view, holders.as_ref());
                datapath::plan(&topology, &view.me)
            }
        };
        serde_json::to_value(plan).map_err(|e| e.to_string())
    }

    /// What the next reconcile pass would change.
    async fn datapath_diff(&self) -> Result<Value, String> {
        let r = self
            .reconciler
            .as_ref()
            .ok_or("this agent runs with datapath = \"off\": there is no kernel to diff against")?;
        let ops = r.pending().await?;
        Ok(json!({ "ops": ops, "last_pass": r.last_report() }))
    }

    /// Starts draining and waits (up to [`DRAIN_WAIT`]) until every router this node held has
    /// another holder.
    async fn drain(&self) -> Result<Value, String> {
        let ha = self.ha()?;
        let before = ha.status();
        ha.set_draining(true).await?;
        let me = self.view.load().me.clone();
        let started = tokio::time::Instant::now();
        loop {
            let st = ha.status();
            let holder = |r| st.routers.get(r).and_then(|x| x.holder.clone());
            let done = before
                .held
                .iter()
                .all(|r| holder(r).is_some_and(|h| h != me));
            if done || started.elapsed() >= DRAIN_WAIT {
                let routers: Vec<Value> = before
                    .held
                    .iter()
                    .map(|r| json!({ "router": r, "holder": holder(r) }))
                    .collect();
                return Ok(json!({
                    "draining": true,
                    "complete": done,
                    "waited_ms": started.elapsed().as_millis() as u64,
                    "routers": routers,
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes part in elections again.
    async fn undrain(&self) -> Result<Value, String> {
        let ha = self.ha()?;
        let before = ha.status();
        ha.set_draining(false).await?;
        Ok(json!({ "draining": false, "held": before.held }))
    }

    /// A router, with its SNAT holder and election status as this node sees them.
    async fn router_show(&self, reference: String) -> Result<Value, String> {
        let mut v = self
            .store()?
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

/// Handles a configuration request from a client holding an operator credential: the store's
/// requests for seals are relayed to the client on `stream` while the request runs.
async fn handle_as_operator(
    ctx: &ApiContext,
    req: ConfigRequest,
    stream: &mut UnixStream,
) -> Result<Value, String> {
    let (session, mut asks) = OperatorSession::channel();
    let work = ctx.store()?.handle_as(req, Some(session));
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            Some(ask) = asks.recv() => {
                let seals = ask_seals(stream, &ask.records).await;
                let _ = ask.reply.send(seals);
            }
        }
    }
}

async fn serve_one(mut stream: UnixStream, ctx: &ApiContext) -> Result<(), Error> {
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame(&mut stream, KIND_REQUEST, MAX_REQUEST_BYTES),
    )
    .await;
    let (op, outcome) = match read {
        Err(_) => (None, Err("request not received in time".to_string())),
        Ok(Err(e)) => (None, Err(e.to_string())),
        Ok(Ok(body)) => match AnyRequest::parse_with_operator(&body) {
            Err(e) => (None, Err(e)),
            Ok((AnyRequest::Config(req), Some(_))) if writes_configuration(&req) => {
                let op = AnyRequest::Config(req.clone()).op();
                (Some(op), handle_as_operator(ctx, req, &mut stream).await)
            }
            Ok((req, _)) => (Some(req.op()), ctx.handle_any(req).await),
        },
    };
    ctx.instruments.api_request(op.as_deref(), outcome.is_ok());
    let reply = match outcome {
        Ok(result) => json!({"ok": true, "result": result}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let body = serde_json::to_vec(&reply).map_err(|e| Error::Api(e.to_string()))?;
    stream
        .write_all(&mesh_proto::encode_frame(KIND_RESPONSE, &body))
        .await
        .map_err(|e| Error::Api(format!("writing response: {e}")))?;
    // Closing with unread bytes would reset the connection before a client that sent more than
    // one frame (or no frame at all) reads the reply: end our side, then discard what is left.
    let _ = stream.shutdown().await;
    let mut rest = (&mut stream).take(MAX_REQUEST_BYTES);
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
    Ok(())
}
