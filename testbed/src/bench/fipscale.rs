//! FIP throughput against the number of FIPs on a node: dvrmesh's datapath (per packet one nft
//! set lookup and one fwmark rule, whatever the count) with 1, 1 000 and 10 000 FIPs, against
//! one `ip rule from <fixed> lookup 16` per FIP (the Neutron L3 agent's way) in the same router
//! namespace, in one run.
//!
//! The node is one of dvrmesh's, programmed by its Linux backend into a sandbox (no agent): one
//! router, one /16 subnet, one VM whose tap the harness makes, and an "upstream" namespace on
//! the external interface standing for the internet's first router. iperf3 runs only between the
//! VM's and upstream's namespaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use datapath::linux::netns;
use datapath::linux::sandbox::Sandbox;
use datapath::{Desired, Netns};

use super::iperf::{iperf, Case, Samples};
use super::plot::{Bar, Chart};
use super::section::Context;
use super::stats::ratio;
use super::stats::{ranges_against, summary};
use super::topology::{self, FIP_VM_FIP, FIP_VM_IP, FIP_VM_MAC, FIP_VM_TAP};
use crate::lab::exec::run_in;

/// The upstream router's address on the external network (the network's gateway).
const UPSTREAM_IP: &str = "198.18.0.1";
/// First priority of the extra rules of the `ip rule` baseline; the VM's own rule comes after
/// them all ([`VM_RULE_PRIORITY`]), so its packets walk every other rule first.
const EXTRA_RULES_FROM: u32 = 40_000;
/// See [`EXTRA_RULES_FROM`].
const VM_RULE_PRIORITY: u32 = 60_000;
/// The priority of dvrmesh's one fwmark rule (`datapath::plan`'s `PRIO_FWMARK`).
const FWMARK_PRIORITY: &str = "32769";

/// One configuration's samples: FIP out (VM to upstream) and FIP in (upstream to the FIP).
pub(super) struct FipRow {
    /// What was set up.
    pub(super) label: String,
    /// FIPs programmed (dvrmesh) or `ip rule`s added (baseline).
    pub(super) count: u32,
    /// dvrmesh's way (one set lookup, one fwmark rule) or the baseline's.
    pub(super) dvrmesh: bool,
    pub(super) out: Samples,
    pub(super) inbound: Samples,
}

/// The part's result: its rows and the time dvrmesh took to program each FIP count.
pub(super) struct FipOut {
    pub(super) rows: Vec<FipRow>,
    pub(super) programmed: Vec<(u32, Duration)>,
    pub(super) rounds: usize,
}

/// The sandboxed node and the two namespaces traffic runs between.
struct Bed {
    sandbox: Sandbox,
    k: datapath::linux::LinuxKernel,
    prev: Option<Desired>,
    dir: tempfile::TempDir,
    vm: PathBuf,
    upstream: PathBuf,
}

/// Runs the part: 1, 1 000 and 10 000 FIPs (1 and 1 000 with `--quick`), then the `ip rule`
/// baseline with 1 rule and with one per FIP of the largest count; every configuration once per
/// round, the rounds interleaved (the machine's load drifts).
pub(super) fn run(ctx: &Context) -> Result<FipOut> {
    let counts: Vec<u32> = ctx.pick(vec![1, 1_000, 10_000], vec![1, 1_000]);
    let most = counts.iter().copied().max().unwrap_or(1);
    let mut rows: Vec<FipRow> = counts
        .iter()
        .map(|&n| FipRow::new(format!("dvrmesh, {n} FIP(s)"), n, true))
        .collect();
    rows.push(FipRow::new("one ip rule per FIP: 1 rule".into(), 1, false));
    rows.push(FipRow::new(
        format!("one ip rule per FIP: {most} rules"),
        most,
        false,
    ));
    // Five rounds, as the data-plane section: with three, one slow stream moved a median by
    // more than the target's 10 %.
    let rounds = ctx.pick(5, 1);
    let secs = ctx.pick((5, 3), (2, 1));
    let mut bed = Bed::new()?;
    let result = (|| -> Result<Vec<(u32, Duration)>> {
        let mut programmed = Vec::new();
        for round in 1..=rounds {
            for row in rows.iter_mut() {
                if row.dvrmesh {
                    // After a baseline the router's rules were changed by hand: a full pass.
                    let took = bed.program(row.count, round > 1)?;
                    if round == 1 {
                        ctx.say(&format!(
                            "FIPs: {} programmed by dvrmesh in {:.0} ms",
                            row.count,
                            took.as_secs_f64() * 1000.0
                        ));
                        programmed.push((row.count, took));
                    }
                } else {
                    bed.rules(row.count, most)?;
                }
                bed.measure(ctx, row, (round, rounds), secs)?;
            }
        }
        Ok(programmed)
    })();
    bed.down();
    Ok(FipOut {
        rows,
        programmed: result?,
        rounds,
    })
}

impl FipRow {
    fn new(label: String, count: u32, dvrmesh: bool) -> FipRow {
        FipRow {
            label,
            count,
            dvrmesh,
            out: Samples::default(),
            inbound: Samples::default(),
        }
    }
}

impl Bed {
    /// A sandbox with the external interface and the VM's tap, the VM on the tap's peer and the
    /// upstream router on the external interface's peer.
    fn new() -> Result<Bed> {
        let sandbox = Sandbox::new(&["eth1", FIP_VM_TAP])?;
        let dir = tempfile::tempdir()?;
        netns::create(dir.path(), "vm")?;
        netns::create(dir.path(), "upstream")?;
        let (vm, upstream) = (dir.path().join("vm"), dir.path().join("upstream"));
        let host = sandbox.ns_path(&Netns::Host);
        let s = |p: &Path| p.display().to_string();
        let tap_peer = format!("{FIP_VM_TAP}p");
        run_in(&host, &["ip", "link", "set", &tap_peer, "netns", &s(&vm)])?;
        run_in(
            &host,
            &["ip", "link", "set", "eth1p", "netns", &s(&upstream)],
        )?;
        let mac = FIP_VM_MAC.map(|b| format!("{b:02x}")).join(":");
        let vm_addr = format!("{FIP_VM_IP}/16");
        let vm_lines: [&[&str]; 4] = [
            &["ip", "link", "set", "lo", "up"],
            &[
                "ip", "link", "set", &tap_peer, "address", &mac, "mtu", "1450", "up",
            ],
            &["ip", "addr", "add", &vm_addr, "dev", &tap_peer],
            &["ip", "route", "add", "default", "via", "10.0.0.1"],
        ];
        for l in vm_lines {
            run_in(&vm, l)?;
        }
        let up_addr = format!("{UPSTREAM_IP}/15");
        let up_lines: [&[&str]; 3] = [
            &["ip", "link", "set", "lo", "up"],
            &["ip", "link", "set", "eth1p", "up"],
            &["ip", "addr", "add", &up_addr, "dev", "eth1p"],
        ];
        for l in up_lines {
            run_in(&upstream, l)?;
        }
        let k = sandbox.kernel();
        Ok(Bed {
            sandbox,
            k,
            prev: None,
            dir,
            vm,
            upstream,
        })
    }

    /// Programs the node with `fips` FIPs as the agent would (a pass scoped to what changed since
    /// the last, or with `full` a pass over everything, which also undoes the baseline's changes
    /// to the router's rules); the time it took.
    fn program(&mut self, fips: u32, full: bool) -> Result<Duration> {
        self.clear_rules()?;
        let me = mesh_proto::NodeId::new(topology::ME)?;
        let plan = datapath::plan(&topology::fip_node(fips), &me);
        if !plan.problems.is_empty() {
            bail!("plan problems: {:?}", plan.problems);
        }
        let start = Instant::now();
        let since = if full { None } else { self.prev.as_ref() };
        let pass = datapath::reconcile_pass(&mut self.k, &plan.desired, since)?;
        let took = start.elapsed();
        if let Some((op, e)) = pass.report.failed.first() {
            let op: String = op.chars().take(200).collect();
            bail!("{} ops failed, first {op}…: {e}", pass.report.failed.len());
        }
        self.prev = Some(plan.desired);
        Ok(took)
    }

    /// The router's namespace.
    fn qrouter(&self) -> Result<PathBuf> {
        let names = netns::list(&self.sandbox.config.netns_dir, &["qrouter-"])?;
        let name = names
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("dvrmesh made no qrouter namespace"))?;
        Ok(self.sandbox.ns_path(&Netns::Named(name)))
    }

    /// Removes the baseline's rules from the router, if any.
    fn clear_rules(&self) -> Result<()> {
        let Ok(q) = self.qrouter() else {
            return Ok(()); // nothing programmed yet
        };
        let batch: String = run_in(&q, &["ip", "rule", "show"])?
            .lines()
            .filter(|l| is_fip_rule(l))
            .filter_map(|l| l.split(':').next())
            .map(|prio| format!("rule del priority {}\n", prio.trim()))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        self.batch(&q, &batch)
    }

    /// Runs `ip -batch` with `lines` in the namespace `ns`.
    fn batch(&self, ns: &Path, lines: &str) -> Result<()> {
        let file = self.dir.path().join("rules.batch");
        std::fs::write(&file, lines)?;
        run_in(ns, &["ip", "-batch", &file.display().to_string()])?;
        Ok(())
    }

    /// The `ip rule` baseline in dvrmesh's router namespace (programmed with `fips` FIPs): its
    /// fwmark rule removed, then `wanted` rules `from <fixed> lookup 16`, the VM's last, added
    /// by one `ip -batch`.
    fn rules(&mut self, wanted: u32, fips: u32) -> Result<()> {
        if self.prev.as_ref() != Some(&self.plan_of(fips)?) {
            self.program(fips, true)?;
        }
        self.clear_rules()?;
        let q = self.qrouter()?;
        if run_in(&q, &["ip", "rule", "show"])?.contains("fwmark") {
            run_in(&q, &["ip", "rule", "del", "priority", FWMARK_PRIORITY])?;
        }
        let mut batch =
            format!("rule add from {FIP_VM_IP} lookup 16 priority {VM_RULE_PRIORITY}\n");
        for i in 1..wanted.min(fips) {
            let fixed = topology::fip_node_fixed(i);
            let prio = EXTRA_RULES_FROM + i;
            batch.push_str(&format!(
                "rule add from {fixed} lookup 16 priority {prio}\n"
            ));
        }
        self.batch(&q, &batch)?;
        let count = run_in(&q, &["ip", "rule", "show"])?
            .lines()
            .filter(|l| is_fip_rule(l))
            .count();
        if count != wanted as usize {
            bail!("{count} FIP rules in the router, expected {wanted}");
        }
        Ok(())
    }

    /// The desired state with `fips` FIPs.
    fn plan_of(&self, fips: u32) -> Result<Desired> {
        let me = mesh_proto::NodeId::new(topology::ME)?;
        Ok(datapath::plan(&topology::fip_node(fips), &me).desired)
    }

    /// One round of FIP out and FIP in, TCP and 64-byte UDP each, into `row`.
    fn measure(
        &self,
        ctx: &Context,
        row: &mut FipRow,
        (round, rounds): (usize, usize),
        (tcp_secs, udp_secs): (u64, u64),
    ) -> Result<()> {
        let out = Case {
            name: "FIP out",
            client: self.vm.clone(),
            server: self.upstream.clone(),
            to: UPSTREAM_IP.into(),
        };
        let inbound = Case {
            name: "FIP in",
            client: self.upstream.clone(),
            server: self.vm.clone(),
            to: FIP_VM_FIP.to_string(),
        };
        for (c, s) in [(&out, &mut row.out), (&inbound, &mut row.inbound)] {
            let tcp = iperf(c, tcp_secs, false)?;
            let udp = iperf(c, udp_secs, true)?;
            ctx.say(&format!(
                "round {round}/{rounds} {}, {}: TCP {tcp:.2} Gbit/s, UDP 64 B {udp:.0} kpps",
                row.label, c.name
            ));
            s.tcp.push(tcp);
            s.udp.push(udp);
        }
        Ok(())
    }

    /// Removes the VM's and upstream's namespaces (the sandbox removes itself when dropped).
    fn down(&self) {
        for n in ["vm", "upstream"] {
            let _ = netns::delete(self.dir.path(), n);
        }
    }
}

/// Whether a line of `ip rule show` is a FIP rule of the baseline: `from <address> lookup 16`.
fn is_fip_rule(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).any(|w| w[0] == "lookup" && w[1] == "16")
        && words.windows(2).any(|w| w[0] == "from" && w[1] != "all")
}

/// The part's markdown (a subsection of the data plane) and its chart.
pub(super) fn report(out: &FipOut, suffix: &str) -> (String, Chart) {
    let mut md = String::from(
        "\n### Floating IPs: 1 to 10 000 on a node, against one `ip rule` per FIP\n\n",
    );
    md.push_str(&format!("One dvrmesh node programmed by its Linux backend (`datapath::reconcile_pass`, no agent) into a sandbox: one router, one /16 subnet, one VM namespace on its tap, and an upstream namespace on the external interface (the external network's gateway, {UPSTREAM_IP}). FIP out = VM → upstream (the VM's packets are classified as FIP traffic in the router), FIP in = upstream → the VM's FIP {FIP_VM_FIP}. The VM's FIP is always programmed; the others name other fixed addresses of the same port (per FIP the datapath holds the same objects as with a port each: a /32 in the fip namespace and an element in each of three nft sets/maps). Baseline, in the same router namespace with the largest count of FIPs still in the sets and maps: dvrmesh's fwmark rule removed and one `ip rule from <fixed> lookup 16` per FIP instead, the VM's rule last (its packets walk every other rule, as the recipe measured); 1 rule, then one per FIP. iperf3 as above, {} round(s), every configuration once per round (interleaved). After a baseline row, dvrmesh's next row starts with a full pass, which puts its fwmark rule back.\n\n", out.rounds));
    md.push_str("| configuration | FIP out TCP Gbit/s | FIP out UDP 64 B kpps | FIP in TCP Gbit/s | FIP in UDP 64 B kpps |\n|---|---|---|---|---|\n");
    for r in &out.rows {
        let (a, b, c, d) = (
            summary(&r.out.tcp),
            summary(&r.out.udp),
            summary(&r.inbound.tcp),
            summary(&r.inbound.udp),
        );
        md.push_str(&format!(
            "| {} | **{:.2}** ({:.2}–{:.2}) | **{:.0}** ({:.0}–{:.0}) | **{:.2}** | **{:.0}** |\n",
            r.label, a.median, a.min, a.max, b.median, b.min, b.max, c.median, d.median
        ));
    }
    let times: Vec<String> = out
        .programmed
        .iter()
        .map(|(n, d)| format!("{n}: {:.0} ms", d.as_secs_f64() * 1000.0))
        .collect();
    md.push_str(&format!(
        "\nProgramming each count (one pass from the previous count): {}.\n",
        times.join(", ")
    ));
    md.push_str(&fip_targets(&out.rows));
    let bars = out
        .rows
        .iter()
        .map(|r| {
            let s = summary(&r.out.tcp);
            Bar {
                label: r.label.clone(),
                value: s.median,
                spread: (s.n > 1).then_some((s.min, s.max)),
            }
        })
        .collect();
    let chart = Chart {
        file: format!("dataplane-fips{suffix}"),
        title: "FIP out, TCP, by FIP count (median, min–max)".into(),
        unit: "Gbit/s".into(),
        bars,
    };
    (md, chart)
}

/// The targets, judged on FIP out (the direction the rules classify): the largest count at least
/// 90 % of 1 FIP, and at least 2.5× the `ip rule` way at that count.
fn fip_targets(rows: &[FipRow]) -> String {
    let med = |r: &FipRow, udp: bool| summary(if udp { &r.out.udp } else { &r.out.tcp }).median;
    let ours: Vec<&FipRow> = rows.iter().filter(|r| r.dvrmesh).collect();
    let (Some(one), Some(most)) = (
        ours.iter().find(|r| r.count == 1),
        ours.iter().max_by_key(|r| r.count),
    ) else {
        return String::new();
    };
    let Some(theirs) = rows
        .iter()
        .find(|r| !r.dvrmesh && r.count == most.count && most.count > 1)
    else {
        return String::new();
    };
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    let flat = ratio(med(most, false), med(one, false));
    let vs = ratio(med(most, false), med(theirs, false));
    let (flat_u, vs_u) = (
        ratio(med(most, true), med(one, true)),
        ratio(med(most, true), med(theirs, true)),
    );
    let spread = if flat < 0.9 {
        let per_packet = if flat_u >= 0.9 {
            format!("; per packet, where a lookup that grew with the count would show first, the rate held at {flat_u:.2}×")
        } else {
            String::new()
        };
        format!(
            ", TCP {}{per_packet}",
            ranges_against(&most.out.tcp, &one.out.tcp, "Gbit/s")
        )
    } else {
        String::new()
    };
    format!(
        "\nFIP out, from this run's medians: {} FIPs run at **{:.2}×** the rate of 1 FIP (target ≥ 0.90×: {}{spread}) and **{:.2}×** one `ip rule` per FIP at the same count (target ≥ 2.5×: {}); per packet (64-byte UDP) {flat_u:.2}× and {vs_u:.2}×. FIP in: the VM's replies leave as FIP traffic and walk the rules like FIP out (TCP in waits for its ACKs); the 64-byte UDP rate in fell with the rules as well in a full run, which the forward lookup (the main table matches before the rules) does not explain: not yet profiled.\n",
        most.count,
        flat,
        verdict(flat >= 0.9),
        vs,
        verdict(vs >= 2.5)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, count: u32, dvrmesh: bool, tcp: f64, udp: f64) -> FipRow {
        FipRow {
            label: label.into(),
            count,
            dvrmesh,
            out: Samples {
                tcp: vec![tcp],
                udp: vec![udp],
            },
            inbound: Samples::default(),
        }
    }

    #[test]
    fn fip_targets_compare_the_largest_count_with_one_fip_and_with_the_rules() {
        let rows = [
            row("a", 1, true, 10.0, 100.0),
            row("b", 10_000, true, 9.5, 95.0),
            row("c", 1, false, 10.0, 100.0),
            row("d", 10_000, false, 3.0, 20.0),
        ];
        let t = fip_targets(&rows);
        assert!(t.contains("10000 FIPs run at **0.95×**"), "{t}");
        assert!(t.contains("(target ≥ 0.90×: met)"), "{t}");
        assert!(t.contains("**3.17×** one `ip rule`"), "{t}");
        assert!(
            t.contains("(target ≥ 2.5×: met)") && t.contains("4.75×"),
            "{t}"
        );
        let slow = [
            row("a", 1, true, 10.0, 100.0),
            row("b", 1_000, true, 8.0, 95.0),
            row("d", 1_000, false, 4.0, 20.0),
        ];
        let t = fip_targets(&slow);
        assert!(
            t.contains("0.80×") && t.contains("0.90×: **not met**, TCP 8.00–8.00 against 10.00–10.00 Gbit/s: every round below"),
            "{t}"
        );
        assert!(t.contains("2.5×: **not met**"), "{t}");
        assert!(
            t.contains("per packet, where a lookup that grew with the count would show first, the rate held at 0.95×"),
            "{t}"
        );
        let both = [
            row("a", 1, true, 10.0, 100.0),
            row("b", 1_000, true, 8.0, 80.0),
            row("d", 1_000, false, 4.0, 20.0),
        ];
        assert!(
            !fip_targets(&both).contains("the rate held"),
            "per packet fell too"
        );
        assert_eq!(fip_targets(&slow[..1]), "", "nothing to compare");
    }

    #[test]
    fn only_the_baselines_from_rules_into_table_16_count() {
        assert!(is_fip_rule("60000:\tfrom 10.0.0.10 lookup 16"));
        assert!(!is_fip_rule("32768:\tfrom all iif lo lookup 16 proto 147"));
        assert!(!is_fip_rule(
            "167772161:\tfrom 10.0.0.0/16 lookup 167772161 proto 147"
        ));
        assert!(!is_fip_rule("32766:\tfrom all lookup main"));
    }

    #[test]
    fn the_fip_node_plans_every_fip_with_one_fwmark_rule() {
        let me = mesh_proto::NodeId::new(topology::ME).unwrap();
        let plan = datapath::plan(&topology::fip_node(1_000), &me);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let d = &plan.desired;
        let host_routes = d
            .routes
            .iter()
            .filter(|r| matches!(&r.ns, Netns::Named(n) if n.starts_with("fip-")))
            .filter(|r| r.dst.prefix() == 32)
            .count();
        assert_eq!(host_routes, 1_000, "one /32 per FIP in the fip namespace");
        let fwmark = d
            .rules
            .iter()
            .filter(|r| matches!(r.selector, datapath::RuleSelector::Fwmark { .. }))
            .count();
        assert_eq!(fwmark, 1, "one fwmark rule whatever the count");
    }
}
