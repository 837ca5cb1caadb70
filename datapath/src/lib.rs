//! `datapath` owns the lower half of dvrmesh: turning the converged view into kernel state on one
//! node.
//!
//! - [`plan`] (pure): the view and this node's id → [`Desired`], every kernel object of the DVR
//!   recipe for this node's mode.
//! - [`diff`] (pure): desired and observed → ordered [`Op`]s, adds before deletes.
//! - [`Kernel`]: `observe` reads back only objects dvrmesh owns (name prefixes, route protocol
//!   [`ROUTE_PROTOCOL`], nft tables named `dvrmesh*`); `apply` is idempotent. [`fake::FakeKernel`]
//!   keeps ordered maps for tests; the Linux backend ([`linux::LinuxKernel`]) talks netlink from
//!   inside each namespace and loads one atomic nft batch per namespace per pass.
//! - [`reconcile_pass`]: observe, diff, apply; scoped ([`Scope`]) to the namespaces, and the host
//!   devices, whose desired objects changed since the last clean pass, or everything.
//!
//! It does not know about gossip or the agent: it depends on `mesh-proto` only.

mod diff;
mod error;
pub mod fake;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod model;
pub mod nft;
pub mod plan;
mod scope;

pub use diff::diff;
pub use error::Error;
pub use model::*;
pub use plan::{default_snat_holders, plan, NodeInfo, Plan, Topology};
pub use scope::{changed_namespaces, reconcile_pass, scope_of, Part, PassOutcome, Scope};
