//! The metrics endpoint on `metrics_listen`: HTTP/1.1 (hyper) serving `/metrics` (Prometheus),
//! `/healthz` (the process answers) and `/readyz` (view settled, datapath in sync), GET and HEAD
//! only. Whoever can reach it is untrusted: connections, header size and connection time are
//! bounded, and nothing it serves changes the agent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use super::Metrics;
use crate::http_conn::{serve_bounded, Bounds};
use crate::Error;

/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 32;
/// A client has 5 s to send a request's headers of at most 8 KiB; a connection lasts at most
/// 60 s (a scraper reconnects).
const BOUNDS: Bounds = Bounds {
    header_timeout: Duration::from_secs(5),
    max_buffer: 8192,
    connection_timeout: Duration::from_secs(60),
};

/// Binds `listen` (an error names the address, e.g. when another process holds it).
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Metrics(format!("cannot listen on metrics_listen {listen}: {e}")))
}

/// Serves `metrics` on `listener` until the task running it is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(
            async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let reply = respond(&metrics, req.method(), req.uri().path());
                    async move { Ok::<_, Infallible>(reply) }
                });
                if let Some(e) = serve_bounded(stream, service, BOUNDS).await {
                    debug!(%peer, error = %e, "metrics connection ended with an error");
                }
                drop(slot);
            }
            .in_current_span(),
        );
    }
}

/// The reply to `method` on `path`.
pub fn respond(metrics: &Metrics, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n".into(),
        );
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(super::CONTENT_TYPE));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let verdict = metrics.readiness();
            if verdict.ready {
                text(StatusCode::OK, "ready\n".into())
            } else {
                let body = format!("not ready:\n- {}\n", verdict.reasons.join("\n- "));
                text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: this endpoint serves /metrics, /healthz and /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
