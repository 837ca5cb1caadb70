//! The compose lab: the whole mesh in Docker containers (`docker-compose.yml` at the repository
//! root, the image's files in `compose/`), one real agent per node container, driven from the
//! host through docker and Compose: images, up and down (with the host firewall rules the lab's
//! own bridges need), VMs as namespaces inside node containers, probes and faults on containers.

pub mod chaos;
pub mod demo;
pub mod docker;
pub mod image;
pub mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::demo::External;
use crate::lab::{wait, VmPort, VmState};

use self::docker::Tool;

/// The Compose project (also in the repository's `.env`).
pub const PROJECT: &str = "dvrmesh-lab";
/// The node services, each running an agent.
pub const NODES: [&str; 5] = [
    "compute-1",
    "compute-2",
    "compute-3",
    "network-1",
    "network-2",
];
/// The underlay network (VXLAN and gossip).
pub const UNDERLAY_CIDR: &str = "172.31.0.0/24";
/// The external network (Docker hands out only 198.51.100.0/27) and the internet host.
pub const EXTERNAL: External = External {
    cidr: "198.51.100.0/24",
    gateway: "198.51.100.1",
    pool: "198.51.100.64-198.51.100.250",
    internet_ip: "203.0.113.10",
};
/// The budget for every agent to list every node alive.
const MEMBERS_BUDGET: Duration = Duration::from_secs(60);

/// The container of a service (`container_name` in docker-compose.yml).
pub fn container(service: &str) -> String {
    format!("dvrmesh-{service}")
}

/// The repository holding `docker-compose.yml` and `compose/`: `$DVRMESH_REPO`, the current
/// directory or one above it, or the tree this binary was built from.
pub fn find_root() -> Result<PathBuf> {
    let is_root = |d: &Path| d.join("docker-compose.yml").is_file() && d.join("compose").is_dir();
    if let Some(d) = std::env::var_os("DVRMESH_REPO") {
        let d = PathBuf::from(d);
        if is_root(&d) {
            return Ok(d);
        }
        bail!(
            "DVRMESH_REPO={}: no docker-compose.yml and compose/ there",
            d.display()
        );
    }
    let cwd = std::env::current_dir()?;
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cwd.ancestors()
        .map(Path::to_path_buf)
        .chain([built_from])
        .find(|d| is_root(d))
        .context("no docker-compose.yml with compose/ in this directory or above: run from the dvrmesh repository or set DVRMESH_REPO")
}

/// A running compose lab and the VMs made in it.
pub struct ComposeLab {
    /// The repository (where docker-compose.yml is).
    pub root: PathBuf,
    /// The Compose in use.
    pub tool: Tool,
    /// VMs made so far.
    pub vms: Vec<VmState>,
    /// Their ports, to set a VM up again after its node's container restarted.
    ports: BTreeMap<String, VmPort>,
}

impl ComposeLab {
    /// Builds what is missing, replaces any earlier compose lab, starts this one, opens the lab's
    /// bridges to routed traffic and waits until every agent lists every node alive.
    pub fn up(
        root: &Path,
        bins: &image::Binaries,
        progress: &mut dyn FnMut(&str),
    ) -> Result<ComposeLab> {
        docker::available()?;
        let tool = Tool::detect()?;
        image::ensure(root, bins, progress)?;
        if !docker::lab_containers(None)?.is_empty() {
            progress("removing the previous compose lab");
            ComposeLab::down(root)?;
        }
        progress(&format!("starting the lab ({tool:?} up -d)"));
        tool.run(root, &["up", "-d"])?;
        progress("host firewall: accepting traffic within the lab's external and internet bridges");
        host_fw(root, "add")?;
        let lab = ComposeLab {
            root: root.to_path_buf(),
            tool,
            vms: Vec::new(),
            ports: BTreeMap::new(),
        };
        progress("waiting for every agent to list all 5 nodes alive");
        lab.wait_members(MEMBERS_BUDGET)?;
        Ok(lab)
    }

    /// Removes the lab's containers, networks, volumes (CA and certificates) and host firewall
    /// rules, whatever state a crash left them in. Images are kept.
    pub fn down(root: &Path) -> Result<()> {
        docker::available()?;
        // A paused container cannot be stopped.
        for c in docker::lab_containers(Some("status=paused"))? {
            let _ = docker::output(&["unpause", &c]);
        }
        let compose = Tool::detect()
            .and_then(|t| t.run(root, &["down", "-v", "--remove-orphans", "-t", "10"]));
        // Whatever Compose left (or could not reach): by the project label.
        let label = format!("label=com.docker.compose.project={PROJECT}");
        for c in docker::lab_containers(None)? {
            let _ = docker::output(&["rm", "-f", "-v", &c]);
        }
        for kind in ["network", "volume"] {
            let ids = docker::run(&[kind, "ls", "-q", "--filter", &label])?;
            for id in ids.split_whitespace() {
                if let Err(e) = docker::run(&[kind, "rm", id]) {
                    // Seen once: dockerd keeping a stale endpoint ("has active endpoints" with no
                    // container). The next `up` reuses the network; a dockerd restart clears it.
                    eprintln!("warning: {kind} {id} stays: {e:#}");
                }
            }
        }
        host_fw(root, "del")?;
        if !docker::lab_containers(None)?.is_empty() {
            bail!("lab containers remain after down: {:?}", compose.err());
        }
        Ok(())
    }

    /// Waits until every agent lists every node alive.
    pub fn wait_members(&self, budget: Duration) -> Result<()> {
        self.wait_alive(&NODES, NODES.len(), budget)
    }

    /// Waits until each agent of `viewers` lists `want` nodes alive.
    pub fn wait_alive(&self, viewers: &[&str], want: usize, budget: Duration) -> Result<()> {
        let what = format!("{} agent(s) listing {want} nodes alive", viewers.len());
        wait(budget, &what, || {
            viewers.iter().all(|n| self.alive_seen_by(n) == Some(want))
        })
    }

    /// How many nodes `node`'s agent lists alive.
    pub fn alive_seen_by(&self, node: &str) -> Option<usize> {
        let v = self.cli(node, &["members"]).ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter(|m| m["state"] == "alive")
                .count(),
        )
    }

    /// Runs `dvrmesh ARGS --json` in a node's container (it reaches that node's agent).
    pub fn cli(&self, node: &str, args: &[&str]) -> Result<Value> {
        let mut full = vec!["dvrmesh"];
        full.extend_from_slice(args);
        full.push("--json");
        let out = docker::exec(&container(node), &full)?;
        serde_json::from_str(&out).with_context(|| format!("dvrmesh {} output", args.join(" ")))
    }

    /// The container of a member (a VM, a node, `upstream` or `internet`) and, for a VM, the
    /// namespace inside it.
    pub fn member(&self, name: &str) -> Result<(String, Option<String>)> {
        if let Some(v) = self.vms.iter().find(|v| v.name == name) {
            return Ok((container(&v.node), Some(format!("/run/netns/{name}"))));
        }
        if NODES.contains(&name) || ["upstream", "internet"].contains(&name) {
            return Ok((container(name), None));
        }
        bail!("no VM, node, upstream or internet named {name}")
    }

    /// `docker exec` arguments running `args` in a member (through nsenter for a VM).
    fn member_args(&self, name: &str, args: &[&str]) -> Result<Vec<String>> {
        let (c, ns) = self.member(name)?;
        let mut v = vec!["exec".to_string(), c];
        if let Some(ns) = ns {
            v.extend(["nsenter".to_string(), format!("--net={ns}")]);
        }
        v.extend(args.iter().map(|a| a.to_string()));
        Ok(v)
    }
}

/// Runs `compose/host-fw.sh add|del`.
fn host_fw(root: &Path, verb: &str) -> Result<()> {
    let script = root.join("compose/host-fw.sh");
    let out = Command::new(&script)
        .arg(verb)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {verb}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Progress on stderr, in seconds since `start`.
pub fn progress_since(start: Instant) -> impl FnMut(&str) {
    move |s: &str| eprintln!("[{:>5.1}s] {s}", start.elapsed().as_secs_f64())
}
