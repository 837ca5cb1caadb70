//! Running one programming benchmark: dvrmesh's reconciler against one process per object, each in
//! its own sealed namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use datapath::linux::sandbox::Sandbox;
use datapath::{diff, Desired, Kernel};

/// One cold programming by dvrmesh: observe, diff, apply from nothing; then the steady-state pass.
pub struct DvrmeshRun {
    /// Observe + diff + apply from an empty sandbox.
    pub cold: Duration,
    /// Ops applied.
    pub ops: usize,
    /// A second observe + diff (must find nothing to do).
    pub steady: Duration,
}

/// Lets the kernel finish tearing down the previous trial's namespaces (it does so
/// asynchronously, and its RCU work would land in the next measurement).
pub fn settle() {
    std::thread::sleep(Duration::from_millis(400));
}

/// Programs `desired` into a fresh sandbox with the Linux backend.
pub fn dvrmesh(desired: &Desired) -> Result<DvrmeshRun> {
    let sandbox = Sandbox::new(&["eth1"])?;
    settle();
    let mut k = sandbox.kernel();
    let start = Instant::now();
    let observed = k.observe(desired)?;
    let ops = diff(desired, &observed);
    let report = k.apply(&ops)?;
    let cold = start.elapsed();
    if !report.failed.is_empty() {
        bail!(
            "{} ops failed, first: {:?}",
            report.failed.len(),
            report.failed.first()
        );
    }
    let start = Instant::now();
    let again = diff(desired, &k.observe(desired)?);
    let steady = start.elapsed();
    if !again.is_empty() {
        bail!(
            "second pass not empty: {} ops, first {:?}",
            again.len(),
            again.first()
        );
    }
    Ok(DvrmeshRun {
        cold,
        ops: ops.len(),
        steady,
    })
}

/// One cold programming with one process per object, in a private mount and network namespace.
/// Returns the time the commands took and how many there were.
pub fn one_process_per_object(desired: &Desired, work: &Path) -> Result<(Duration, usize)> {
    let ops = diff(desired, &Desired::default());
    let lines = super::shell::commands(&ops);
    let processes = lines.iter().filter(|l| !l.starts_with("cat >")).count();
    let script: PathBuf = work.join("per-object.sh");
    let mut text =
        String::from("set -e\nip link add eth1 type veth peer name eth1p\nstart=$(date +%s%N)\n");
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str("end=$(date +%s%N)\necho $((end - start))\n");
    std::fs::write(&script, text)?;
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && W={} sh {}",
            work.display(),
            script.display()
        ))
        .output()
        .context("running unshare")?;
    if !out.status.success() {
        bail!(
            "per-object script failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let nanos: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .parse()
        .context("script timing")?;
    Ok((Duration::from_nanos(nanos), processes))
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
