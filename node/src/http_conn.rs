//! One HTTP/1 connection served within bounds (the metrics endpoint and the metadata service
//! both serve this way): the request headers within a time limit, a read buffer that caps their
//! size, and the whole connection within a time limit.

use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// The bounds of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// How long a client has to send a request's headers.
    pub header_timeout: Duration,
    /// The read buffer (hyper's smallest is 8192), which bounds a request's headers.
    pub max_buffer: usize,
    /// The longest the connection stays open.
    pub connection_timeout: Duration,
}

/// Serves `service` on `stream` until the client closes, a bound is hit, or the connection
/// fails; returns the connection's error, if it ended with one (a timeout is no error here).
pub async fn serve_bounded<S, B>(
    stream: TcpStream,
    service: S,
    bounds: Bounds,
) -> Option<hyper::Error>
where
    S: HttpService<Incoming, ResBody = B>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .max_buf_size(bounds.max_buffer)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(bounds.connection_timeout, conn).await {
        Ok(Err(e)) => Some(e),
        _ => None,
    }
}
