//! SNAT failover, end to end: the longest gap in a VM's 200 packets/s UDP stream to the internet
//! host when the node serving its way out dies hard (frozen, links cut, killed).
//!
//! Both systems run in the same lab, one after the other, with the same stream, the same fault and
//! the same kill phase (uniform over one advert interval):
//! - dvrmesh: the demo configuration on 1 compute and 2 network nodes; the VM's router is SNATed
//!   by the elected holder; `--no-preempt`, so each trial kills whichever node holds.
//! - keepalived (Debian package) on the same two network nodes, protecting an equivalent pair of
//!   addresses: a gateway address on the underlay for a VM namespace there, and an address on the
//!   external network the upstream router routes the VM's subnet to. VRRP adverts on the underlay.
//!   Each trial kills the master; the dvrmesh agents are stopped meanwhile so both runs have the
//!   machine to themselves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use datapath::linux::netns;

use crate::lab::exec::{output_in, run_in};
use crate::lab::spec::INTERNET_IP;
use crate::lab::{wait, Lab, ProbeStream};
use crate::probe::ProbeReport;

/// Stream interval: 200 packets/s, so outages resolve to 5 ms.
const INTERVAL_MS: u64 = 5;
/// How long the stream runs after the fault at least.
const AFTER_FAULT: Duration = Duration::from_secs(2);
/// When the fault hits, after the stream starts (plus a random phase).
const KILL_AFTER: Duration = Duration::from_millis(700);

/// One keepalived setting compared.
#[derive(Clone, Copy, Debug)]
pub struct KaSetting {
    /// Label.
    pub name: &'static str,
    /// VRRP version.
    pub version: u8,
    /// Advert interval in seconds.
    pub advert_int: f64,
}

/// keepalived at dvrmesh's advert interval (VRRPv3, 20 ms), at its defaults (VRRPv2, 1 s
/// adverts), and at VRRPv3 with 0.1 s adverts (the earlier comparison).
pub const KA_SETTINGS: [KaSetting; 3] = [
    KaSetting {
        name: "keepalived VRRPv3, advert_int 0.02 (dvrmesh's interval)",
        version: 3,
        advert_int: 0.02,
    },
    KaSetting {
        name: "keepalived defaults (VRRPv2, advert_int 1)",
        version: 2,
        advert_int: 1.0,
    },
    KaSetting {
        name: "keepalived VRRPv3, advert_int 0.1",
        version: 3,
        advert_int: 0.1,
    },
];

/// A small deterministic generator for kill phases (no dependency, reproducible per seed).
pub struct Phase(u64);

impl Phase {
    /// Seeded from the clock.
    pub fn new() -> Phase {
        Phase(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1,
        )
    }

    /// Uniform in [0, max).
    pub fn next(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 % 10_000) as f64 / 10_000.0)
    }
}

impl Default for Phase {
    fn default() -> Self {
        Phase::new()
    }
}

/// Starts the stream from namespace `ns` to the internet host's echo server, long enough to
/// cover the fault, an outage of up to twice `expected_outage`, and the recovery.
fn stream(ns: &Path, expected_outage: Duration, phase_max: Duration) -> Result<ProbeStream> {
    let span = KILL_AFTER + phase_max + expected_outage * 2 + AFTER_FAULT;
    let count = (span.as_millis() as u64 / INTERVAL_MS) as u32;
    ProbeStream::start(ns, INTERNET_IP, count, INTERVAL_MS)
}

/// The stream's report; an error when the stream never recovered (the outage would be cut short).
fn finish(s: ProbeStream) -> Result<ProbeReport> {
    let r = s.finish()?;
    if r.lost.last() == Some(&(r.sent - 1)) || r.received == 0 {
        bail!(
            "the stream had not recovered when it ended ({} of {} lost)",
            r.lost.len(),
            r.sent
        );
    }
    Ok(r)
}

/// The holder of `router` as `via` sees it.
fn holder(lab: &Lab, via: &str, router: &str) -> Option<String> {
    lab.cli(via, &["router", "show", router])
        .ok()
        .and_then(|v| v["holder"].as_str().map(String::from))
}

/// Waits for one holder of `router` and a ready backup (its election running, the holder's
/// claim known, its datapath in sync: a restarted agent is none of these for its first
/// seconds); returns the holder.
fn wait_ready_pair(lab: &Lab, router: &str) -> Result<String> {
    let mut current = String::new();
    wait(
        Duration::from_secs(30),
        "a holder and a ready backup",
        || {
            let Some(h) = holder(lab, "compute-1", router) else {
                return false;
            };
            let v = match lab.cli(&h, &["router", "show", router]) {
                Ok(v) => v,
                Err(_) => return false,
            };
            let backups = v["ha_status"]["candidates"]
                .as_array()
                .map(|c| c.iter().filter(|x| x["state"] == "backup").count())
                .unwrap_or(0);
            current = h;
            backups == 1
        },
    )?;
    let backup = if current == "network-1" {
        "network-2"
    } else {
        "network-1"
    };
    wait(Duration::from_secs(30), "the backup ready", || {
        let ready = lab
            .cli(backup, &["status"])
            .map(|v| v["ha"]["ready"] == true)
            .unwrap_or(false);
        let knows = holder(lab, backup, router).as_deref() == Some(current.as_str());
        let in_sync = lab
            .cli(backup, &["datapath", "diff"])
            .map(|v| v["ops"].as_array().is_some_and(|o| o.is_empty()))
            .unwrap_or(false);
        ready && knows && in_sync
    })?;
    Ok(current)
}

/// SNAT takeovers on both network nodes so far (the agents' own counters).
fn takeovers(lab: &Lab) -> Result<u64> {
    let mut sum = 0;
    for n in ["network-1", "network-2"] {
        let v = lab.cli(n, &["status"])?;
        sum += v["ha"]["counters"]["took"]
            .as_u64()
            .ok_or_else(|| anyhow!("{n}: status has no ha.counters.took"))?;
    }
    Ok(sum)
}

/// False failovers of dvrmesh under `percent` % random loss on every link for `span`, after
/// [`dvrmesh_trials`] (the router set up, every agent running): takeovers counted by the
/// agents, nobody killed.
pub fn dvrmesh_false_failovers(lab: &mut Lab, percent: u8, span: Duration) -> Result<u64> {
    wait_ready_pair(lab, "a-router")?;
    let before = takeovers(lab)?;
    lab.chaos_loss(percent)?;
    std::thread::sleep(span);
    lab.chaos_loss(0)?;
    // Counters read after the loss ends: a takeover in flight has finished.
    std::thread::sleep(Duration::from_secs(1));
    Ok(takeovers(lab)?.saturating_sub(before))
}

/// dvrmesh trials on a lab built with `LabSpec::sized(1, 2)` and the demo configuration.
pub fn dvrmesh_trials(
    lab: &mut Lab,
    trials: usize,
    advert_interval: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<u64>> {
    let router = "a-router";
    lab.cli("compute-1", &["router", "set-ha", router, "--no-preempt"])?;
    lab.vm_create("bench-vm", "compute-1", "a-net1", false)?;
    let vm = lab.member_ns("bench-vm")?;
    let mut phase = Phase::new();
    let mut out = Vec::new();
    for i in 0..trials {
        let current = wait_ready_pair(lab, router)?;
        wait(
            Duration::from_secs(20),
            "the VM reaching the internet",
            || {
                lab.probe("bench-vm", INTERNET_IP, 1, 10)
                    .map(|r| r.received == 1)
                    .unwrap_or(false)
            },
        )?;
        std::thread::sleep(Duration::from_millis(500));
        let s = stream(&vm, advert_interval * 10, advert_interval)?;
        std::thread::sleep(KILL_AFTER + phase.next(advert_interval));
        lab.chaos_pause(&current, None)?;
        lab.chaos_cut(&current)?;
        lab.chaos_kill(&current)?;
        let r = finish(s)?;
        progress(&format!(
            "dvrmesh trial {}/{trials}: killed {current}, outage {} ms",
            i + 1,
            r.longest_gap_ms
        ));
        out.push(r.longest_gap_ms);
        lab.chaos_heal(&current)?;
        lab.start_agent(&current)?;
    }
    Ok(out)
}

/// Datagrams of the VM's stream lost while one agent restarts (SIGTERM, then started again, as
/// `systemctl restart` does), after [`dvrmesh_trials`] made the VM: per trial, the restarted
/// node and the datagrams lost. Odd trials restart the VM's own node (its east-west and the way
/// to the SNAT holder), even ones the SNAT holder itself, without a drain first.
pub fn dvrmesh_restart_impact(
    lab: &mut Lab,
    trials: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<(String, u64)>> {
    let vm = lab.member_ns("bench-vm")?;
    let mut out = Vec::new();
    for i in 0..trials {
        let holder = wait_ready_pair(lab, "a-router")?;
        let node = if i % 2 == 0 {
            "compute-1".to_string()
        } else {
            holder
        };
        std::thread::sleep(Duration::from_millis(500));
        // The restart itself takes about a second; the stream covers it and two more.
        let s = ProbeStream::start(&vm, INTERNET_IP, 1000, INTERVAL_MS)?;
        std::thread::sleep(KILL_AFTER);
        lab.chaos_restart(&node)?;
        let r = s.finish()?;
        let lost = r.lost.len() as u64;
        progress(&format!(
            "dvrmesh restart {}/{trials}: {node}'s agent restarted, {lost} of {} datagrams lost",
            i + 1,
            r.sent
        ));
        out.push((node, lost));
    }
    Ok(out)
}

/// The restart hold the bench sets for its second series of restarts (`snat_restart_hold_ms`).
pub const RESTART_HOLD_MS: u64 = 5_000;

/// Sets `snat_restart_hold_ms` on every agent of the lab (rewriting its configuration and
/// restarting it, one at a time, each time once a holder is ready again): the restarts after it
/// announce themselves, and the holder's next life resumes its routers.
pub fn enable_restart_hold(lab: &mut Lab, hold_ms: u64) -> Result<()> {
    for node in lab.running_nodes() {
        wait_ready_pair(lab, "a-router")?;
        let path = lab.node_dir(&node).join("agent.toml");
        let config = std::fs::read_to_string(&path)?;
        // A top-level key goes before the first table.
        std::fs::write(&path, format!("snat_restart_hold_ms = {hold_ms}\n{config}"))?;
        lab.chaos_restart(&node)?;
    }
    lab.state.restart_hold_ms = Some(hold_ms);
    lab.save()?;
    Ok(())
}

/// The keepalived side: addresses and the VM namespace.
const KA_VIP_LAN: &str = "10.99.0.1";
const KA_VIP_WAN: &str = "203.0.113.5";
const KA_VM_IP: &str = "10.99.0.100";
const KA_NODES: [(&str, u8); 2] = [("network-1", 150), ("network-2", 100)];

struct Keepalived {
    parent: Child,
    child: u32,
}

/// Prepares the lab for keepalived: stops the dvrmesh agents, adds the VM namespace on the
/// underlay and the upstream route. Installs keepalived when missing.
pub fn keepalived_prepare(lab: &mut Lab) -> Result<PathBuf> {
    install_keepalived()?;
    for n in lab.running_nodes() {
        lab.stop_agent(&n, "TERM")?;
    }
    netns::create(&lab.dir.join("ns"), "ka-vm")?;
    let vm = lab.ns("ka-vm");
    let fabric = lab.ns("fabric");
    let vm_path = vm.to_string_lossy().to_string();
    run_line(
        &fabric,
        &format!("ip link add kavm type veth peer name eth0 netns {vm_path}"),
    )?;
    run_line(&fabric, "ip link set kavm master br-ul up")?;
    run_line(&vm, "ip link set lo up")?;
    run_line(&vm, &format!("ip addr add {KA_VM_IP}/24 dev eth0"))?;
    run_line(&vm, "ip link set eth0 up")?;
    run_line(&vm, &format!("ip route add default via {KA_VIP_LAN}"))?;
    let upstream = lab.ns("upstream");
    run_line(
        &upstream,
        &format!("ip route replace 10.99.0.0/24 via {KA_VIP_WAN}"),
    )?;
    for (i, (n, _)) in KA_NODES.iter().enumerate() {
        let ns = lab.node_ns(n);
        // The stopped agent had made eth1 a port of its external bridge: give it back, with an
        // address of its own (a device losing its last address loses its routes).
        run_line(&ns, "ip link set eth1 nomaster")?;
        run_line(
            &ns,
            &format!("ip addr replace 203.0.113.{}/24 dev eth1", 2 + i),
        )?;
        let gw = crate::lab::spec::EXT_GATEWAY;
        run_line(
            &ns,
            &format!("ip route replace 198.51.100.0/24 via {gw} dev eth1"),
        )?;
        run_line(
            &ns,
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
             net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.ul0.rp_filter=0 \
             net.ipv4.conf.eth1.rp_filter=0",
        )?;
    }
    Ok(vm)
}

/// Installs keepalived from Debian's packages unless it is there.
fn install_keepalived() -> Result<()> {
    if Command::new("keepalived").arg("--version").output().is_ok() {
        return Ok(());
    }
    let ok = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq keepalived",
        ])
        .status()?
        .success();
    if !ok {
        bail!("keepalived is not installed and apt-get could not install it");
    }
    Ok(())
}

/// Runs one command line (words split on blanks, no quoting) in a namespace.
fn run_line(ns: &Path, line: &str) -> Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    run_in(ns, &words)?;
    Ok(())
}

fn ka_conf(s: &KaSetting, node: &str, prio: u8) -> String {
    let version = if s.version == 3 {
        "    vrrp_version 3\n"
    } else {
        ""
    };
    format!(
        "global_defs {{\n    router_id ka-{node}\n{version}}}\nvrrp_instance VR_1 {{\n    state {}\n    interface ul0\n    virtual_router_id 51\n    priority {prio}\n    advert_int {}\n    virtual_ipaddress {{\n        {KA_VIP_LAN}/24 dev ul0\n        {KA_VIP_WAN}/24 dev eth1\n    }}\n}}\n",
        if prio == 150 { "MASTER" } else { "BACKUP" },
        s.advert_int
    )
}

fn ka_start(lab: &Lab, s: &KaSetting, node: &str, prio: u8) -> Result<Keepalived> {
    let dir = lab.dir.join("keepalived");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join(format!("{node}.conf"));
    std::fs::write(&conf, ka_conf(s, node, prio))?;
    let pid = |k: &str| dir.join(format!("{node}-{k}.pid"));
    for k in ["main", "vrrp", "chk"] {
        let _ = std::fs::remove_file(pid(k));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{node}.log")))?;
    let parent = Command::new("nsenter")
        .arg(format!("--net={}", lab.node_ns(node).display()))
        .args(["keepalived", "-n", "-l", "-D", "-G", "-P", "-f"])
        .arg(&conf)
        .arg("-p")
        .arg(pid("main"))
        .arg("-r")
        .arg(pid("vrrp"))
        .arg("-c")
        .arg(pid("chk"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .context("starting keepalived")?;
    let start = Instant::now();
    loop {
        if let Some(child) = std::fs::read_to_string(pid("vrrp"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            return Ok(Keepalived { parent, child });
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!("keepalived on {node} did not start; see {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn vip_holders(lab: &Lab) -> Vec<&'static str> {
    KA_NODES
        .iter()
        .filter(|(n, _)| {
            output_in(
                &lab.node_ns(n),
                &["ip", "-4", "-o", "addr", "show", "dev", "ul0"],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {KA_VIP_LAN}/")))
            .unwrap_or(false)
        })
        .map(|(n, _)| *n)
        .collect()
}

fn drop_vips(lab: &Lab, node: &str) {
    for (vip, dev) in [(KA_VIP_LAN, "ul0"), (KA_VIP_WAN, "eth1")] {
        let _ = output_in(
            &lab.node_ns(node),
            &["ip", "addr", "del", &format!("{vip}/24"), "dev", dev],
        );
    }
}

/// keepalived trials for one setting, after [`keepalived_prepare`].
pub fn keepalived_trials(
    lab: &mut Lab,
    vm: &Path,
    s: &KaSetting,
    trials: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<u64>> {
    let mut kas: Vec<(String, u8, Option<Keepalived>)> = KA_NODES
        .iter()
        .map(|(n, p)| (n.to_string(), *p, None))
        .collect();
    for (n, p, k) in kas.iter_mut() {
        drop_vips(lab, n);
        *k = Some(ka_start(lab, s, n, *p)?);
    }
    let mut phase = Phase::new();
    let mut out = Vec::new();
    let result = (|| -> Result<()> {
        for i in 0..trials {
            // One master, stable for longer than a master-down interval (a restarted node has
            // settled into its state: the kill hits a steady pair), and the VM's traffic flowing.
            let stable = Duration::from_secs_f64(4.0 * s.advert_int + 1.0);
            let mut since: Option<Instant> = None;
            wait(Duration::from_secs(60), "one stable VRRP master", || {
                if vip_holders(lab).len() == 1 {
                    let t = *since.get_or_insert_with(Instant::now);
                    t.elapsed() >= stable
                } else {
                    since = None;
                    false
                }
            })?;
            let master = vip_holders(lab)[0];
            let adv = Duration::from_secs_f64(s.advert_int);
            let st = stream(vm, adv * 4, adv)?;
            std::thread::sleep(KILL_AFTER + phase.next(adv));
            let slot = kas
                .iter_mut()
                .find(|(n, _, _)| n == master)
                .ok_or_else(|| anyhow!("no keepalived for {master}"))?;
            let k = slot
                .2
                .take()
                .ok_or_else(|| anyhow!("keepalived not running"))?;
            // Frozen first, so it cannot react to the cut by giving the addresses up.
            signal(k.child, "STOP");
            signal(k.parent.id(), "STOP");
            lab.chaos_cut(master)?;
            signal(k.parent.id(), "KILL");
            signal(k.child, "KILL");
            let mut parent = k.parent;
            let _ = parent.wait();
            let r = finish(st)?;
            progress(&format!(
                "{} trial {}/{trials}: killed {master}, outage {} ms",
                s.name,
                i + 1,
                r.longest_gap_ms
            ));
            out.push(r.longest_gap_ms);
            // Reboot the dead node: no addresses left, links up, keepalived again.
            drop_vips(lab, master);
            lab.chaos_heal(master)?;
            std::thread::sleep(Duration::from_millis(300));
            slot.2 = Some(ka_start(lab, s, &slot.0, slot.1)?);
        }
        Ok(())
    })();
    for (n, _, k) in kas.iter_mut() {
        if let Some(mut k) = k.take() {
            signal(k.child, "KILL");
            let _ = k.parent.kill();
            let _ = k.parent.wait();
        }
        drop_vips(lab, n);
    }
    result.map(|_| out)
}

/// "Entering MASTER STATE" lines keepalived logged on the network nodes so far.
fn ka_masterships(lab: &Lab) -> usize {
    KA_NODES
        .iter()
        .map(|(n, _)| {
            std::fs::read_to_string(lab.dir.join("keepalived").join(format!("{n}.log")))
                .map(|t| t.matches("Entering MASTER STATE").count())
                .unwrap_or(0)
        })
        .sum()
}

/// False failovers of keepalived (setting `s`) under `percent` % random loss on every link for
/// `span`, after [`keepalived_prepare`]: both instances started, one stable master, then the
/// loss; every further "Entering MASTER STATE" in their logs is a false failover.
pub fn keepalived_false_failovers(
    lab: &mut Lab,
    s: &KaSetting,
    percent: u8,
    span: Duration,
) -> Result<u64> {
    let mut kas = Vec::new();
    for (n, p) in KA_NODES {
        drop_vips(lab, n);
        kas.push(ka_start(lab, s, n, p)?);
    }
    let result = (|| -> Result<u64> {
        let stable = Duration::from_secs_f64(4.0 * s.advert_int + 1.0);
        let mut since: Option<Instant> = None;
        wait(Duration::from_secs(60), "one stable VRRP master", || {
            if vip_holders(lab).len() == 1 {
                let t = *since.get_or_insert_with(Instant::now);
                t.elapsed() >= stable
            } else {
                since = None;
                false
            }
        })?;
        let before = ka_masterships(lab);
        // The count rests on keepalived logging its transitions: the master's start is one.
        if before == 0 {
            bail!(
                "keepalived logged no \"Entering MASTER STATE\": false failovers cannot be counted"
            );
        }
        lab.chaos_loss(percent)?;
        std::thread::sleep(span);
        lab.chaos_loss(0)?;
        std::thread::sleep(Duration::from_secs(1));
        Ok(ka_masterships(lab).saturating_sub(before) as u64)
    })();
    for mut k in kas {
        signal(k.child, "KILL");
        let _ = k.parent.kill();
        let _ = k.parent.wait();
    }
    for (n, _) in KA_NODES {
        drop_vips(lab, n);
    }
    result
}

/// Percentile by nearest rank of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// (p50, p99, max) of a sample.
pub fn summary(samples: &[u64]) -> (u64, u64, u64) {
    let mut s = samples.to_vec();
    s.sort_unstable();
    (
        percentile(&s, 50.0),
        percentile(&s, 99.0),
        s.last().copied().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(summary(&v), (10, 20, 20));
        assert_eq!(summary(&[7]), (7, 7, 7));
        let mut p = Phase(42);
        for _ in 0..100 {
            assert!(p.next(Duration::from_millis(20)) < Duration::from_millis(20));
        }
    }
}
