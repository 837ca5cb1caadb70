//! The mesh: how nodes find, authenticate and hear each other, and the converged view they build.
//!
//! - [`pki`]: the cluster CA, node certificates, the TLS configurations, owner signatures.
//! - [`transport`]: QUIC under chitchat (one uni stream per gossip message), election datagrams;
//!   [`congestion`]: the fixed congestion window its connections use.
//! - [`wire`] and [`codec`]: gossip frames, and chitchat's messages as plain data, bounded;
//!   [`link`]: digests written as changes against the peer's last digest on a connection.
//! - [`limits`]: what one peer may cost: a frame rate, a share of the inbound queues.
//! - [`trust`]: what a certified peer may tell this node: only owners' sealed values, no resets
//!   or ghosts from relays, capped relayed heartbeats.
//! - [`own`]: this node's own key space, every value sealed.
//! - [`gossip`]: starting chitchat with this node's settings and keys; its generation.
//! - [`keys`]: the names of the gossip keys a node publishes.
//! - [`view`]: the one writer of the immutable [`view::ClusterView`]; readiness of a new view.
//! - [`peers`]: the peers remembered across restarts.
//!
//! It knows nothing of the datapath, the SNAT election or the API, which all read the view.

pub mod codec;
pub mod congestion;
pub mod gossip;
pub mod keys;
pub mod limits;
pub mod link;
pub mod own;
pub mod peers;
pub mod pki;
pub mod transport;
pub mod trust;
pub mod view;
pub mod wire;
