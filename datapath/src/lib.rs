//! `datapath` will own the lower half of dvrmesh: planning the Linux DVR datapath for one node
//! from the converged view (`plan`), reading back only the kernel objects dvrmesh owns
//! (`observe`), the pure `diff` between the two, and the idempotent `apply` through netlink and one
//! nft batch per namespace.
//!
//! Nothing is implemented here yet: the planner and reconciler are the subject of the datapath
//! work item, which builds on the replicated configuration. The crate exists now so the workspace
//! layout, and the rule that `datapath` depends on `mesh-proto` only, are fixed from the start.
#![forbid(unsafe_code)]
