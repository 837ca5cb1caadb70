//! The metadata service for this node's own ports: OpenStack- and EC2-style documents at
//! `http://169.254.169.254/`, served in each network's metadata namespace, from the converged
//! view.
//!
//! - [`document`] (pure): what each local port's documents say (id, name, host name, this node
//!   as availability zone, addresses, FIP, network configuration, user data, keys), grouped by
//!   network and keyed by fixed address; who a request comes from.
//! - [`paths`] (pure): one path in, one reply out.
//! - [`limit`] (pure): a token bucket per port.
//! - `server`: a listener per network in its `qmeta-` namespace (made by the datapath planner),
//!   hyper's HTTP/1.1 on each connection, a supervisor that follows the view. Nothing is stored:
//!   a restarted agent serves exactly what it served before.

pub mod document;
pub mod limit;
pub mod paths;
mod server;

pub use server::spawn;
