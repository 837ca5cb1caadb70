//! DHCPv4 for this node's own ports: every node answers the VMs it hosts, from the converged
//! view, and no other.
//!
//! - [`lease`] (pure): what each local port's answers carry (address, mask, gateway, MTU,
//!   routes, DNS), from the planner's topology. The lease *is* the port: nothing is allocated or
//!   remembered, so a restarted agent answers exactly as before and a port recreated on another
//!   node is served there.
//! - [`answer`] (pure): one request frame in, at most one reply frame out, built and parsed with
//!   `dhcproto` (DHCP) and `etherparse` (Ethernet, IPv4, UDP).
//! - `server`: one packet socket per local port device ([`datapath::linux::dhcp_socket`]), a
//!   task per port, a supervisor that follows the view, and a rate limit per port.

pub mod answer;
pub mod lease;
mod server;

pub use server::spawn;
