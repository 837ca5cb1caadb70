//! The dvrmesh agent as a library: configuration, the cluster PKI, the QUIC transport under
//! chitchat, the converged cluster view and the local API. The `dvrmesh` binary only parses the
//! command line and calls into this crate.
//!
//! It does not program the kernel (that is the `datapath` crate) and holds no domain types of its
//! own (those are `mesh-proto`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod config;
pub mod election;
mod error;
pub mod gossip;
pub mod gossip_wire;
pub mod ha;
pub mod logging;
pub mod peers;
pub mod reconcile;
pub mod signing;
pub mod store;
pub mod tls;
pub mod transport;
pub mod view;

pub use error::Error;
