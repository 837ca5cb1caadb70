//! Benchmarks (not tests), each against its baseline in the same run, in sealed namespaces, run
//! by one harness (`dvrmesh-lab bench`, [`harness`]): the data plane through dvrmesh's routers
//! against hand-built plain L2, a centralized router and the recipe's DVR ([`dataplane`],
//! [`recipe`], FIP counts in [`fipscale`], each measurement by [`iperf`]), SNAT failover against
//! keepalived VRRP ([`failover`], [`failover_report`]), control-plane latency through the CLI
//! ([`control`]), port creation from node-affine blocks against a claim per value ([`ipam`]), scale with simulated and real agents ([`scale`]), and datapath programming against one
//! `ip`/`nft` process per object ([`programming`], with [`run`], [`shell`], [`topology`]).

pub mod control;
pub mod dataplane;
pub mod failover;
pub mod failover_report;
pub mod fipscale;
pub mod harness;
pub mod ipam;
pub mod iperf;
pub mod plot;
pub mod programming;
pub mod rates;
pub mod recipe;
pub mod report;
pub mod run;
pub mod scale;
pub mod section;
pub mod shell;
pub mod stats;
pub mod topology;
