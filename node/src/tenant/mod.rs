//! The replicated tenant configuration, as pure functions over what nodes publish.
//!
//! - [`state`] is the merged [`TenantState`] and its accessors; [`merge`] merges every node's
//!   published records into it (last writer wins, tombstones, ports only from their host, tenant
//!   configuration only from operators when the cluster says so), again only where values changed.
//! - [`replicate`] decides what this node must publish or withdraw so every object lives on the
//!   k live nodes ranked highest by rendezvous hashing.
//! - [`ipam`] picks free addresses and decides address and MAC claims.
//! - [`blocks`] decides node-affine blocks: winners, free values, the next block, duplicates.
//! - [`ops`] validates operator requests against the state and turns them into writes.
//!
//! No I/O and no clock: the time is passed in. The I/O shell that publishes is [`crate::store`].

pub mod blocks;
pub mod ipam;
pub mod merge;
pub mod ops;
pub mod replicate;
pub mod state;

pub use merge::{Merged, Merger, Pass, TenantValues};
pub use state::{Admission, Clock, TenantState, Writers};
