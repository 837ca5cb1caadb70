//! The metadata service's I/O: a task per network with local ports, each listening on
//! 169.254.169.254:80 inside that network's `qmeta-` namespace, serving hyper's HTTP/1.1 with
//! bounded connections, header size and time, and a rate limit per port; a supervisor that
//! follows the view starts, updates and stops them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use datapath::linux::netns;
use datapath::plan::{metadata_namespace, METADATA_IP};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use mesh_proto::{NodeId, ObjectId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, Instrument};

use super::document::{documents, identify, Holder, NetworkPorts, Refusal};
use super::limit::PortLimits;
use super::paths::{error, respond, Reply};
use crate::http_conn::{serve_bounded, Bounds};
use crate::mesh::view::ViewHandle;
use crate::reconcile::topology_from_view;

/// How often the supervisor looks at the view without a change.
const RESCAN: Duration = Duration::from_secs(2);
/// Pause before a network's task tries its namespace again (not made yet, address missing).
const REOPEN: Duration = Duration::from_millis(500);
/// How often a listener checks that its namespace is still the one of that name.
const RECHECK: Duration = Duration::from_secs(2);
/// Connections served at once per network; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// A client has 5 s to send a request's headers of at most 8 KiB; a connection lasts at most
/// 30 s.
const BOUNDS: Bounds = Bounds {
    header_timeout: Duration::from_secs(5),
    max_buffer: 8192,
    connection_timeout: Duration::from_secs(30),
};
/// The service's port.
const PORT: u16 = 80;

/// Starts the metadata service of node `me`, whose namespaces live in `netns_dir`.
pub fn spawn(me: NodeId, view: ViewHandle, netns_dir: PathBuf) -> JoinHandle<()> {
    tokio::spawn(supervise(me, view, netns_dir).in_current_span())
}

/// A running network task and the ports it answers for.
struct NetworkTask {
    ports: watch::Sender<Arc<NetworkPorts>>,
    task: JoinHandle<()>,
}

impl Drop for NetworkTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(me: NodeId, view: ViewHandle, dir: PathBuf) {
    let mut changes = view.subscribe();
    let mut tasks: BTreeMap<ObjectId, NetworkTask> = BTreeMap::new();
    let mut tick = tokio::time::interval(RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wanted = documents(&topology_from_view(&view.load(), None), &me);
        sync(&mut tasks, wanted, &dir);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return; // the view writer is gone; the agent is stopping
            },
            _ = tick.tick() => {}
        }
    }
}

fn sync(
    tasks: &mut BTreeMap<ObjectId, NetworkTask>,
    wanted: BTreeMap<ObjectId, NetworkPorts>,
    dir: &Path,
) {
    tasks.retain(|net, _| wanted.contains_key(net));
    for (net, ports) in wanted {
        match tasks.get(&net) {
            Some(t) if **t.ports.borrow() == ports => {}
            Some(t) => {
                t.ports.send_replace(Arc::new(ports));
            }
            None => {
                let (tx, rx) = watch::channel(Arc::new(ports));
                let ns = metadata_namespace(&net);
                let task = tokio::spawn(serve_network(dir.to_path_buf(), ns, rx).in_current_span());
                tasks.insert(net, NetworkTask { ports: tx, task });
            }
        }
    }
}

/// Serves one network for as long as it has local ports: (re)opens the listener whenever the
/// namespace or its address is missing, or the namespace was made again.
async fn serve_network(dir: PathBuf, ns: String, ports: watch::Receiver<Arc<NetworkPorts>>) {
    loop {
        match open(&dir, &ns).await {
            Ok((listener, id)) => {
                info!(ns, "metadata service listening on {METADATA_IP}:{PORT}");
                serve_listener(&listener, &ports, || same_namespace(&dir, &ns, id)).await;
                debug!(ns, "metadata namespace replaced or gone; opening again");
            }
            Err(e) => debug!(ns, error = e, "metadata listener not open yet"),
        }
        tokio::time::sleep(REOPEN).await;
    }
}

/// The namespace's identity: device and inode of its file.
type NsId = (u64, u64);

fn same_namespace(dir: &Path, ns: &str, id: NsId) -> bool {
    std::fs::metadata(dir.join(ns)).is_ok_and(|m| (m.dev(), m.ino()) == id)
}

/// A listener on 169.254.169.254:80 inside `ns`, made on a blocking thread (entering a namespace
/// moves the calling thread).
async fn open(dir: &Path, ns: &str) -> Result<(TcpListener, NsId), String> {
    let (dir, name) = (dir.to_path_buf(), ns.to_string());
    let std_listener = tokio::task::spawn_blocking(move || {
        let path = netns::path_of(&dir, &name).map_err(|e| e.to_string())?;
        let file = netns::open(&path, &name).map_err(|e| e.to_string())?;
        let meta = file.metadata().map_err(|e| e.to_string())?;
        let listener = netns::in_netns(&file, &name, || {
            std::net::TcpListener::bind(SocketAddr::from((METADATA_IP, PORT)))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("bind {METADATA_IP}:{PORT}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok::<_, String>((listener, (meta.dev(), meta.ino())))
    })
    .await
    .map_err(|e| e.to_string())??;
    let (l, id) = std_listener;
    Ok((TcpListener::from_std(l).map_err(|e| e.to_string())?, id))
}

/// Accepts and serves connections until the namespace is no longer the one opened.
async fn serve_listener(
    listener: &TcpListener,
    ports: &watch::Receiver<Arc<NetworkPorts>>,
    still_there: impl Fn() -> bool,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let limits = Arc::new(Mutex::new(PortLimits::default()));
    let mut check = tokio::time::interval(RECHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        debug!(%peer, "metadata connection refused: {MAX_CONNECTIONS} already open");
                        continue;
                    };
                    let (ports, limits) = (ports.clone(), limits.clone());
                    tokio::spawn(async move {
                        connection(stream, peer, ports, limits).await;
                        drop(slot);
                    }.in_current_span());
                }
                Err(e) => {
                    debug!(error = %e, "metadata accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = check.tick() => {
                if !still_there() {
                    return;
                }
                let current = ports.borrow().clone();
                if let Ok(mut l) = limits.lock() {
                    l.retain(|p| current.values().any(|h| matches!(h, Holder::One(d) if &d.id == p)));
                }
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ports: watch::Receiver<Arc<NetworkPorts>>,
    limits: Arc<Mutex<PortLimits>>,
) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let reply = answer(
            &ports.borrow(),
            &limits,
            peer,
            req.method(),
            req.uri().path(),
        );
        async move { Ok::<_, Infallible>(response(reply)) }
    });
    if let Some(e) = serve_bounded(stream, service, BOUNDS).await {
        debug!(%peer, error = %e, "metadata connection ended with an error");
    }
}

/// The reply to one request from `peer`: its port's document, or why not.
fn answer(
    ports: &NetworkPorts,
    limits: &Mutex<PortLimits>,
    peer: SocketAddr,
    method: &Method,
    path: &str,
) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return error(405, "only GET and HEAD are served");
    }
    let IpAddr::V4(source) = peer.ip() else {
        return error(403, "IPv4 only");
    };
    let doc = match identify(ports, source) {
        Ok(d) => d,
        Err(Refusal::Unknown) => {
            debug!(%source, path, "metadata request from no local port of this network");
            return error(403, "no port of this node on this network has this address");
        }
        Err(Refusal::Ambiguous) => {
            return error(403, "more than one port holds this address");
        }
    };
    let allowed = limits
        .lock()
        .map(|mut l| l.allow(&doc.id, std::time::Instant::now()))
        .unwrap_or(false);
    if !allowed {
        debug!(port = %doc.id, "metadata request over the port's rate");
        return error(429, "too many requests");
    }
    respond(doc, path)
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(reply.body)));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if reply.status == 405 {
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
    }
    r
}
