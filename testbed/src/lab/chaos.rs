//! Faults a user can inject into a running lab, the same ones the chaos tests use: kill, pause and
//! restart an agent; cut a node's links; partition groups of nodes (both ways or one way, all of
//! the underlay or only the agents' gossip); random loss on every link. Every fault is undone by
//! `heal-all`, which needs no memory of what was done: links up, the lab's nft tables gone, paused
//! agents continued.
//!
//! Partitions and loss are nft rules in the lab's own `bridge dvrlab` table, in the underlay and
//! external bridges' namespaces; nothing outside the lab is touched.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::exec::{output_in, run_in};
use super::Lab;

/// The nft table the lab's faults live in (in `fabric` and `extfab`).
const TABLE: &str = "dvrlab";

impl Lab {
    fn node_index(&self, name: &str) -> Result<usize> {
        self.state
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node named {name}"))
    }

    /// The pid of `name`'s agent; an error when the node is unknown or its agent is not running.
    pub fn agent_pid(&self, name: &str) -> Result<u32> {
        self.state
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node named {name}"))?
            .pid
            .ok_or_else(|| anyhow!("the agent of {name} is not running"))
    }

    fn signal(&self, name: &str, signal: &str) -> Result<()> {
        let pid = self.agent_pid(name)?;
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .context("running kill")?
            .success();
        if !ok {
            bail!("could not send SIG{signal} to the agent of {name} (pid {pid})");
        }
        Ok(())
    }

    /// SIGKILLs a node's agent (its kernel state stays, as after a crash).
    pub fn chaos_kill(&mut self, name: &str) -> Result<()> {
        self.stop_agent(name, "KILL")
    }

    /// SIGSTOPs a node's agent; with `for_time`, SIGCONTs it after that long.
    pub fn chaos_pause(&self, name: &str, for_time: Option<Duration>) -> Result<()> {
        self.signal(name, "STOP")?;
        if let Some(d) = for_time {
            std::thread::sleep(d);
            self.signal(name, "CONT")?;
        }
        Ok(())
    }

    /// SIGCONTs a paused agent.
    pub fn chaos_resume(&self, name: &str) -> Result<()> {
        self.signal(name, "CONT")
    }

    /// Restarts a node's agent: SIGTERM, then start again (a killed agent is just started).
    pub fn chaos_restart(&mut self, name: &str) -> Result<()> {
        if self.agent_pid(name).is_ok() {
            self.stop_agent(name, "TERM")?;
        }
        self.start_agent(name)
    }

    /// The bridge-side ends of a node's links: (namespace, device).
    fn links_of(&self, name: &str) -> Result<Vec<(std::path::PathBuf, String)>> {
        let i = self.node_index(name)?;
        let mut out = vec![(self.ns("fabric"), format!("ul{i}"))];
        if self.state.nodes[i].mode != "dvr_no_external" {
            out.push((self.ns("extfab"), format!("xf{i}")));
        }
        Ok(out)
    }

    /// Cuts a node's underlay and external links (at the bridge side, as a pulled cable).
    pub fn chaos_cut(&self, name: &str) -> Result<()> {
        for (ns, dev) in self.links_of(name)? {
            run_in(&ns, &["ip", "link", "set", &dev, "down"])?;
        }
        Ok(())
    }

    /// Cuts only a node's external link: it still gossips, but cannot reach the upstream router.
    pub fn chaos_cut_external(&self, name: &str) -> Result<()> {
        let links = self.links_of(name)?;
        let Some((ns, dev)) = links.iter().find(|(_, d)| d.starts_with("xf")) else {
            bail!("{name} has no external link");
        };
        run_in(ns, &["ip", "link", "set", dev, "down"])?;
        Ok(())
    }

    /// Restores a node's links.
    pub fn chaos_heal(&self, name: &str) -> Result<()> {
        for (ns, dev) in self.links_of(name)? {
            run_in(&ns, &["ip", "link", "set", &dev, "up"])?;
        }
        Ok(())
    }

    /// Drops underlay traffic from every node of `group` to every node of `from` and, unless
    /// `one_way`, back. Rules add up with earlier partitions.
    pub fn chaos_partition(&self, group: &[String], from: &[String], one_way: bool) -> Result<()> {
        self.partition(group, from, one_way, Dropped::Underlay)
    }

    /// As [`Lab::chaos_partition`], dropping only the agents' gossip (QUIC on the gossip port):
    /// tunnelled tenant traffic still flows, the agents hear each other only through others.
    pub fn chaos_partition_gossip(
        &self,
        group: &[String],
        from: &[String],
        one_way: bool,
    ) -> Result<()> {
        self.partition(group, from, one_way, Dropped::Gossip)
    }

    fn partition(
        &self,
        group: &[String],
        from: &[String],
        one_way: bool,
        dropped: Dropped,
    ) -> Result<()> {
        let what = match dropped {
            Dropped::Underlay => String::new(),
            Dropped::Gossip => format!("meta l4proto udp udp dport {} ", super::GOSSIP_PORT),
        };
        if group.is_empty() || from.is_empty() {
            bail!("a partition needs nodes on both sides");
        }
        let mut rules = Vec::new();
        for a in group {
            for b in from {
                if a == b {
                    bail!("{a} cannot be on both sides of a partition");
                }
                let (ia, ib) = (self.node_index(a)?, self.node_index(b)?);
                rules.push(format!(
                    "add rule bridge {TABLE} forward iifname \"ul{ia}\" oifname \"ul{ib}\" {what}drop"
                ));
                if !one_way {
                    rules.push(format!(
                        "add rule bridge {TABLE} forward iifname \"ul{ib}\" oifname \"ul{ia}\" {what}drop"
                    ));
                }
            }
        }
        self.nft(&self.ns("fabric"), &rules)
    }

    /// Random loss of `percent` % on every link: each frame crossing a bridge is dropped with that
    /// probability once for the sender's link and once for the receiver's. 0 removes it.
    pub fn chaos_loss(&self, percent: u8) -> Result<()> {
        if percent > 100 {
            bail!("loss must be 0..=100 %");
        }
        for ns in [self.ns("fabric"), self.ns("extfab")] {
            self.ensure_table_keep(&ns)?;
            let _ = output_in(&ns, &["nft", "flush", "chain", "bridge", TABLE, "loss"]);
            if percent > 0 {
                let rule =
                    format!("add rule bridge {TABLE} loss numgen random mod 100 < {percent} drop");
                self.nft(&ns, &[rule.clone(), rule])?;
            }
        }
        Ok(())
    }

    /// Undoes every fault: links up, partitions and loss gone, paused agents continued. Killed
    /// agents stay down (`chaos restart` starts them).
    pub fn chaos_heal_all(&self) -> Result<()> {
        for ns in [self.ns("fabric"), self.ns("extfab")] {
            let _ = output_in(&ns, &["nft", "delete", "table", "bridge", TABLE]);
        }
        for n in &self.state.nodes {
            self.chaos_heal(&n.name)?;
            if n.pid.is_some() {
                let _ = self.signal(&n.name, "CONT");
            }
        }
        Ok(())
    }

    fn ensure_table(&self, ns: &Path) -> Result<()> {
        self.nft(
            ns,
            &[
                format!("add table bridge {TABLE}"),
                format!(
                    "add chain bridge {TABLE} forward {{ type filter hook forward priority -10; policy accept; }}"
                ),
                format!("add chain bridge {TABLE} loss"),
                // Loss first: it applies to every frame; partition drops follow.
                format!("flush chain bridge {TABLE} forward"),
                format!("add rule bridge {TABLE} forward jump loss"),
            ],
        )
    }

    fn nft(&self, ns: &Path, commands: &[String]) -> Result<()> {
        if !commands.iter().any(|c| c.contains(" table ")) {
            self.ensure_table_keep(ns)?;
        }
        let file = self.dir.join("chaos.nft");
        std::fs::write(&file, commands.join("\n") + "\n")?;
        run_in(ns, &["nft", "-f", &file.to_string_lossy()])?;
        Ok(())
    }

    /// Creates the table when missing, keeping existing rules.
    fn ensure_table_keep(&self, ns: &Path) -> Result<()> {
        let exists = output_in(ns, &["nft", "list", "table", "bridge", TABLE])
            .map(|o| o.status.success())
            .unwrap_or(false);
        if exists {
            Ok(())
        } else {
            self.ensure_table(ns)
        }
    }
}

/// What a partition drops between its two sides.
#[derive(Clone, Copy)]
enum Dropped {
    /// Every underlay frame: gossip and tunnelled tenant traffic.
    Underlay,
    /// The agents' gossip only.
    Gossip,
}
