//! The local API: a unix socket (mode 0600) through which the CLI talks to its agent.
//!
//! - [`protocol`]: the requests, the framing, and the client ([`call`]);
//! - [`server`]: the socket and the handlers, over an [`ApiContext`].
//!
//! One request per connection: the client writes one frame of kind [`KIND_REQUEST`] holding a JSON
//! [`Request`]; the agent answers with one frame of kind [`KIND_RESPONSE`] holding
//! `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`. Requests are capped at
//! [`MAX_REQUEST_BYTES`] and must arrive within [`REQUEST_TIMEOUT`].

mod protocol;
mod server;

pub use protocol::{
    call, read_frame, AnyRequest, MemberInfo, Request, KIND_REQUEST, KIND_RESPONSE,
    MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, REQUEST_TIMEOUT,
};
pub use server::{members, serve, ApiContext, ApiSocketGuard};
