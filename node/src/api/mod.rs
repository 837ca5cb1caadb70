//! The local API: a unix socket (mode 0600) through which the CLI talks to its agent.
//!
//! - [`frames`]: frame kinds, limits and reading one frame;
//! - [`protocol`]: the requests and the client ([`call`]);
//! - [`server`]: the socket and the handlers, over an [`ApiContext`].
//!
//! One request per connection: the client writes one frame of kind [`KIND_REQUEST`] holding a JSON
//! [`Request`]; the agent answers with one frame of kind [`KIND_RESPONSE`] holding
//! `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`. Requests are capped at
//! [`MAX_REQUEST_BYTES`] and must arrive within [`REQUEST_TIMEOUT`]. A request that carries an
//! `operator` field comes from a client holding an operator credential: before answering, the
//! agent may ask it to seal the records the request causes ([`sealing`]).

mod frames;
mod protocol;
pub mod sealing;
mod server;

pub use frames::{
    read_any_frame, read_frame, KIND_REQUEST, KIND_RESPONSE, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    REQUEST_TIMEOUT,
};
pub use protocol::{call, call_as, AnyRequest, MemberInfo, Request};
pub use server::{members, serve, ApiContext, ApiSocketGuard};
