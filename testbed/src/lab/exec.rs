//! Running commands inside the lab's namespaces (setup and probes only; the agents program their
//! own datapath through netlink).

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs `args` inside the network namespace file `ns`; fails with its stderr.
pub fn run_in(ns: &Path, args: &[&str]) -> Result<String> {
    let out = output_in(ns, args)?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `args` inside `ns` and returns its output whatever its status.
pub fn output_in(ns: &Path, args: &[&str]) -> Result<Output> {
    Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .output()
        .with_context(|| format!("running {} in {}", args.join(" "), ns.display()))
}

/// A command that will run inside `ns`.
pub fn command_in(ns: &Path, program: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.display())).arg(program);
    c
}

/// Runs `args` in the lab's own namespace-less context (e.g. `ip link set X netns Y` from the
/// namespace holding X).
pub fn run_many(ns: &Path, cmds: &[Vec<String>]) -> Result<()> {
    for c in cmds {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        run_in(ns, &args)?;
    }
    Ok(())
}
