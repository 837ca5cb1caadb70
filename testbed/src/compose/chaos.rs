//! Faults on the compose lab's containers: `docker kill` (a host dies, its kernel state with it),
//! `docker pause` (every process frozen, the kernel still forwards), a cut underlay (the
//! host-side veth of the container's underlay interface set down), and an agent killed inside
//! its container (the entrypoint's supervisor restarts it; the kernel state stays).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::{container, docker, ComposeLab, EXTERNAL, UNDERLAY_CIDR};
use crate::lab::wait;

impl ComposeLab {
    /// `docker kill`: the node's container and everything in its kernel are gone at once.
    pub fn kill_node(&self, node: &str) -> Result<()> {
        docker::run(&["kill", &container(node)]).map(|_| ())
    }

    /// Starts a killed or stopped node's container again and waits for its agent to see all
    /// five nodes alive, then sets its VMs up again.
    pub fn start_node(&self, node: &str) -> Result<()> {
        docker::run(&["start", &container(node)])?;
        self.wait_alive(&[node], super::NODES.len(), Duration::from_secs(60))?;
        self.vm_reattach(node)
    }

    /// `docker pause` / `docker unpause`: freezes every process of the container.
    pub fn pause_node(&self, node: &str, pause: bool) -> Result<()> {
        let verb = if pause { "pause" } else { "unpause" };
        docker::run(&[verb, &container(node)]).map(|_| ())
    }

    /// The host-side veth of a node's underlay interface (its peer's index is the interface's
    /// `iflink` inside the container).
    pub fn underlay_veth(&self, node: &str) -> Result<String> {
        let c = container(node);
        let dev = docker::exec(&c, &["ip", "-o", "-4", "addr", "show", "to", UNDERLAY_CIDR])?;
        let dev = dev
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("{node} has no address in {UNDERLAY_CIDR}"))?
            .to_string();
        let iflink = docker::exec(&c, &["cat", &format!("/sys/class/net/{dev}/iflink")])?;
        let iflink = iflink.trim();
        for e in std::fs::read_dir("/sys/class/net")?.flatten() {
            let index = std::fs::read_to_string(e.path().join("ifindex")).unwrap_or_default();
            if index.trim() == iflink {
                return Ok(e.file_name().to_string_lossy().into_owned());
            }
        }
        bail!("no host interface with index {iflink} ({node}'s {dev})")
    }

    /// Cuts (`up` false) or heals a node's underlay: its host-side veth down or up.
    pub fn set_underlay(&self, node: &str, up: bool) -> Result<()> {
        let veth = self.underlay_veth(node)?;
        let state = if up { "up" } else { "down" };
        let out = std::process::Command::new("ip")
            .args(["link", "set", &veth, state])
            .output()
            .context("running ip")?;
        if !out.status.success() {
            bail!(
                "ip link set {veth} {state}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The pid of a node's agent inside its container (written by the supervisor).
    pub fn agent_pid(&self, node: &str) -> Result<u32> {
        let pid = docker::exec(&container(node), &["cat", "/run/dvrmesh/agent.pid"])?;
        pid.trim()
            .parse()
            .with_context(|| format!("agent pid of {node}: {pid:?}"))
    }

    /// SIGKILLs a node's agent only; waits until the supervisor has started a new one and it
    /// lists all five nodes alive. Returns the new pid.
    pub fn kill_agent(&self, node: &str) -> Result<u32> {
        let old = self.agent_pid(node)?;
        docker::exec(&container(node), &["kill", "-KILL", &old.to_string()])?;
        let mut new = old;
        wait(
            Duration::from_secs(15),
            &format!("a new agent on {node}"),
            || {
                self.agent_pid(node).is_ok_and(|p| {
                    new = p;
                    p != old
                })
            },
        )?;
        self.wait_alive(&[node], super::NODES.len(), Duration::from_secs(30))?;
        Ok(new)
    }

    /// The holder of `router` as `via`'s agent sees it.
    pub fn holder(&self, via: &str, router: &str) -> Option<String> {
        self.cli(via, &["router", "show", router])
            .ok()
            .and_then(|v| v["holder"].as_str().map(String::from))
    }

    /// Whether `node`'s own election holds `router` (false if its agent does not answer).
    pub fn holds(&self, node: &str, router_id: &str) -> bool {
        self.cli(node, &["status"])
            .ok()
            .and_then(|v| v["ha"]["held"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|x| x.as_str() == Some(router_id))
    }

    /// The MACs answering ARP for `ip` on the external network, asked from the upstream router.
    pub fn answering(&self, ip: &str) -> Result<Vec<String>> {
        let up = container("upstream");
        let dev = docker::exec(
            &up,
            &["ip", "-o", "-4", "addr", "show", "to", EXTERNAL.cidr],
        )?;
        let dev = dev
            .split_whitespace()
            .nth(1)
            .context("upstream external device")?
            .to_string();
        let args = [
            "dvrmesh-lab",
            "arp-probe",
            "--dev",
            &dev,
            "--src-ip",
            EXTERNAL.gateway,
            ip,
        ];
        let out = docker::exec(&up, &args)?;
        serde_json::from_str(&out).with_context(|| format!("arp probe output {out:?}"))
    }
}
