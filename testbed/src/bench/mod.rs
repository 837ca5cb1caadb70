//! Datapath programming benchmarks (not tests): dvrmesh's reconciler against one `ip`/`nft`
//! process per object, in the same run, in sealed namespaces.

pub mod run;
pub mod shell;
pub mod topology;
