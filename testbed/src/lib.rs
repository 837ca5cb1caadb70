//! `testbed` owns dvrmesh's sealed labs and benchmarks: everything that builds namespaces and
//! runs real programs to measure or prove the system. Nothing depends on it.
//!
//! Today it holds the datapath programming benchmark (`datapath-bench`); the namespace lab
//! (`dvrmesh-lab`) comes with the testbed work item.
#![forbid(unsafe_code)]

pub mod bench;
