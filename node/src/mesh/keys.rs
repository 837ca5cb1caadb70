//! The gossip keys a node publishes in its own key space, in one place: every module that writes
//! or reads one names it from here.
//!
//! Tenant records (`o/…`), address claims (`a/…`) and MAC claims (`m/…`) are named by
//! [`mesh_proto::record_key`] and the claim types.

/// The node's [`mesh_proto::NodeFacts`].
pub const KEY_NODE_FACTS: &str = "node";
/// The node's certificate (DER, encoded like every value), against which its signatures are
/// checked.
pub const KEY_CERT: &str = "cert";
/// A SNAT claim, signed: `snat/<router>`.
pub const KEY_SNAT_PREFIX: &str = "snat/";
/// The reason of a SNAT claim: `snat-why/<router>` = `<unix ms> <reason>`.
pub const KEY_SNAT_WHY_PREFIX: &str = "snat-why/";
/// An external network whose gateway the node cannot reach: `ext-down/<external network id>`.
pub const KEY_EXT_DOWN_PREFIX: &str = "ext-down/";
