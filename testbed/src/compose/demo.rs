//! The namespace demo on the compose lab: the same tenants, routers, VMs and FIPs, made through
//! `dvrmesh` inside the containers, and the same traffic matrix.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::image::Binaries;
use super::{progress_since, ComposeLab};
use crate::demo::{configure_on, matrix, Timing, VMS};

/// Brings the compose lab up with the demo's configuration and VMs; `start` is when the run
/// began (for progress). Returns the lab and the demo's timing (when its VMs were requested).
pub fn build(root: &Path, bins: &Binaries, start: Instant) -> Result<(ComposeLab, Timing)> {
    let mut step = progress_since(start);
    let mut lab = ComposeLab::up(root, bins, &mut step)?;
    step(
        "creating 2 tenants (overlapping 10.1.0.0/24), 2 routers, 4 subnets, the external network",
    );
    configure_on(&lab)?;
    let requested = Instant::now();
    for (name, node, net, fip) in VMS {
        let with = if fip { ", with a FIP" } else { "" };
        step(&format!("creating VM {name} on {node} ({net}{with})"));
        lab.vm_create(name, node, net, fip)?;
    }
    Ok((lab, Timing { start, requested }))
}

/// `dvrmesh-lab compose demo`: builds what is missing, brings the lab up, configures it, runs
/// and prints the traffic matrix, and tears down unless `keep`.
pub fn run(root: &Path, bins: &Binaries, keep: bool) -> Result<()> {
    let start = Instant::now();
    let result = build(root, bins, start).and_then(|(lab, timing)| matrix(&lab, timing));
    let mut step = progress_since(start);
    if keep {
        step("lab kept: docker exec dvrmesh-compute-1 dvrmesh members; dvrmesh-lab compose down");
    } else {
        ComposeLab::down(root)?;
        step("lab torn down");
    }
    result.map(|_| ())
}
