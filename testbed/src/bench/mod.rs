//! Benchmarks (not tests), each against its baseline in the same run, in sealed namespaces:
//! datapath programming (dvrmesh's reconciler against one `ip`/`nft` process per object) and SNAT
//! failover (dvrmesh's election against keepalived VRRP, in the same lab).

pub mod failover;
pub mod report;
pub mod run;
pub mod shell;
pub mod topology;
