//! The dvrmesh agent as a library. The `dvrmesh` binary parses the command line and calls in.
//!
//! The modules, from the wire up (each depends only on those above it):
//!
//! - [`config`]: the agent's configuration file, parsed into validated types.
//! - [`files`]: atomic writes and bounded reads of the files under `data_dir`.
//! - [`authority`]: the trait through which tenant rules ask whether a signature or seal is
//!   genuine (answered by `mesh::pki`).
//! - [`throttle`]: warnings a peer can provoke, at most one per peer and second.
//! - [`http_conn`]: one HTTP/1 connection served within time and size bounds.
//! - [`mesh`]: the cluster PKI, the QUIC transport under chitchat, gossip, and the one writer of
//!   the converged [`mesh::view::ClusterView`].
//! - [`tenant`]: the replicated tenant configuration as pure functions: merge, IPAM, operator
//!   requests, replica duties.
//! - [`store`]: the I/O shell of the tenant configuration: publishing, address claims,
//!   replication, persistence.
//! - [`ha`]: the SNAT election (a sans-IO state machine, [`ha::election`]) and the task that runs
//!   it against the view and the transport's datagrams.
//! - [`reconcile`]: the view and the SNAT holders → `datapath::plan` → the kernel, level-triggered.
//! - [`dhcp`]: DHCPv4 for this node's own ports, answered from the view (a socket per port).
//! - [`metadata`]: the metadata service (169.254.169.254) for this node's own ports, from the
//!   view (a listener per network in its metadata namespace).
//! - [`api`]: the local API: its protocol, and the server the CLI talks to.
//! - [`instruments`]: the counters and histograms the reconciler and the API record into.
//! - [`metrics`]: Prometheus metrics and `/healthz`/`/readyz` on `metrics_listen`, read from the
//!   parts above and the instruments.
//! - [`agent`]: wires all of the above into one running node, and nothing more.
//! - [`doctor`]: the preflight of a node: kernel features (probed in a throwaway namespace),
//!   interfaces, configuration, certificates, API socket, gossip port, clock.
//!
//! Domain types and the wire format are `mesh-proto`'s; the kernel is `datapath`'s.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod authority;
pub mod config;
pub mod dhcp;
pub mod doctor;
mod error;
pub mod files;
pub mod ha;
pub mod http_conn;
pub mod instruments;
pub mod logging;
pub mod mesh;
pub mod metadata;
pub mod metrics;
pub mod reconcile;
pub mod reload;
pub mod store;
pub mod tenant;
pub mod throttle;

pub use error::Error;
