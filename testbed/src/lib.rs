//! `testbed` owns dvrmesh's sealed labs and benchmarks: everything that builds namespaces and
//! runs real programs to measure or prove the system. Nothing depends on it.
//!
//! - [`lab`]: the sealed namespace lab behind `dvrmesh-lab` (nodes running real agents, VMs,
//!   an upstream router and an internet host) and its teardown;
//! - [`probe`]: UDP probes written in Rust, so no scenario depends on ping or iperf;
//! - [`demo`]: the README's main job (on either lab);
//! - [`compose`]: the same mesh in Docker containers (`docker-compose.yml`), its demo and faults;
//! - [`bench`]: the benchmark harness behind `dvrmesh-lab bench` (data plane, control-plane
//!   latency, SNAT failover, datapath programming) and its report and plots.
#![forbid(unsafe_code)]

pub mod bench;
pub mod compose;
pub mod demo;
pub mod lab;
pub mod probe;
