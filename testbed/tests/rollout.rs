//! Rolling out (root): a rolling restart, and a rolling upgrade from the previous release, of
//! every agent of a lab under east-west, FIP and SNAT traffic, following the operations guide
//! (network nodes drained first, one node at a time, each back in service before the next); a
//! restart while one peer can be heard only through others; and the metrics a lab node serves
//! while its datapath works.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use testbed::lab::spec::{LabSpec, INTERNET_IP};
use testbed::lab::{wait, Lab, ProbeStream};

use common::{east_west_pair, metrics, print_datapath_logs, reach, reach_within, sample, TestLab};

const ROUTER: &str = "a-router";

/// The holder of the router as `via` sees it.
fn holder(lab: &Lab, via: &str) -> Option<String> {
    lab.cli(via, &["router", "show", ROUTER])
        .ok()
        .and_then(|v| v["holder"].as_str().map(String::from))
}

/// Waits until every running node names `want` the router's holder.
fn wait_holder(lab: &Lab, want: &str, budget: Duration) -> Result<()> {
    let viewers = lab.running_nodes();
    wait(
        budget,
        &format!("every node naming {want} the holder"),
        || {
            viewers
                .iter()
                .all(|v| holder(lab, v).as_deref() == Some(want))
        },
    )
    .map(|_| ())
}

/// How the walk brings each agent back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// The same binary again: a rolling restart.
    Restart,
    /// This build's `dvrmesh` in place of the release the lab started from: a rolling upgrade.
    Upgrade,
}

/// Restarts `node`'s agent (SIGTERM, start; on this build's binary for an upgrade) and waits until
/// it is back in service: its first datapath pass ran and its metrics endpoint says ready.
fn restart(lab: &mut Lab, node: &str, walk: Walk) -> Result<Duration> {
    let start = Instant::now();
    lab.stop_agent(node, "TERM")?;
    if walk == Walk::Upgrade {
        lab.set_agent_bin(node, None)?;
    }
    lab.start_agent(node)?;
    wait(
        Duration::from_secs(30),
        &format!("{node} ready after its restart"),
        || lab.http_get(node, "/readyz").is_ok_and(|(s, _)| s == 200),
    )?;
    Ok(start.elapsed())
}

/// The rolling restart of the operations guide: each network node drained, restarted, undrained
/// and the router settled on the best node again; then each compute node restarted. After each
/// node, `between` checks the cluster as it is then (mixed versions, in an upgrade).
fn rolling_restart(
    lab: &mut Lab,
    walk: Walk,
    between: &mut dyn FnMut(&mut Lab, &str) -> Result<()>,
) -> Result<Vec<(String, Duration)>> {
    let mut took = Vec::new();
    for (node, other) in [("network-1", "network-2"), ("network-2", "network-1")] {
        let drained = lab.cli(node, &["agent", "drain"])?;
        if drained["complete"] != Value::Bool(true) {
            bail!("agent drain on {node} did not complete: {drained}");
        }
        wait_holder(lab, other, Duration::from_secs(5))?;
        took.push((node.to_string(), restart(lab, node, walk)?));
        lab.cli(node, &["agent", "undrain"])?;
        // The better node (network-1) takes the router back once undrained.
        wait_holder(lab, "network-1", Duration::from_secs(15))?;
        between(lab, node)?;
    }
    for node in ["compute-1", "compute-2"] {
        took.push((node.to_string(), restart(lab, node, walk)?));
        between(lab, node)?;
    }
    Ok(took)
}

/// The three streams the walk runs under, and the servers they talk to.
struct Traffic {
    east_west: ProbeStream,
    fip_in: ProbeStream,
    snat: ProbeStream,
    servers: Vec<Child>,
    /// How long the streams run.
    duration: Duration,
}

/// Two VMs (a-vm2 with a FIP) on two compute nodes, the router settled on network-1, and 50
/// datagrams a second for 80 s (longer than the whole walk) on east-west, FIP-in and SNAT paths.
fn start_traffic(lab: &mut Lab) -> Result<Traffic> {
    lab.vm_create("a-vm1", "compute-1", "a-net1", false)?;
    let vm2 = lab.vm_create("a-vm2", "compute-2", "a-net2", true)?;
    let fip = vm2.fip.clone().context("a-vm2 has a FIP")?;
    let servers = vec![
        lab.probe_server("a-vm2", 180)?,
        lab.probe_server("internet", 180)?,
    ];
    wait_holder(lab, "network-1", Duration::from_secs(60))?;
    reach(lab, "a-vm1", &vm2.ip)?;
    reach_within(lab, "internet", &fip, Duration::from_secs(30))?;
    reach_within(lab, "a-vm1", INTERNET_IP, Duration::from_secs(30))?;
    let (count, interval_ms) = (4000, 20);
    let traffic = Traffic {
        east_west: lab.probe_stream("a-vm1", &vm2.ip, count, interval_ms)?,
        fip_in: lab.probe_stream("internet", &fip, count, interval_ms)?,
        snat: lab.probe_stream("a-vm1", INTERNET_IP, count, interval_ms)?,
        servers,
        duration: Duration::from_millis(count as u64 * interval_ms),
    };
    std::thread::sleep(Duration::from_secs(1));
    Ok(traffic)
}

/// Waits for the streams to end and asserts the walk's promise: east-west and FIP lost nothing,
/// SNAT's longest gap within the 1 s failover budget. On a loss, prints what the compute nodes'
/// agents did to their datapaths.
fn check_traffic(lab: &Lab, traffic: Traffic, walk_took: Duration) -> Result<()> {
    assert!(
        walk_took + Duration::from_secs(1) < traffic.duration,
        "the walk took {walk_took:?}, longer than the streams ({:?}): lengthen them",
        traffic.duration
    );
    let Traffic {
        east_west,
        fip_in,
        snat,
        mut servers,
        ..
    } = traffic;
    let (east_west, fip_in, snat) = (east_west.finish()?, fip_in.finish()?, snat.finish()?);
    for (path, r) in [
        ("east-west", &east_west),
        ("FIP in", &fip_in),
        ("SNAT", &snat),
    ] {
        println!(
            "{path}: {} sent, {} received, longest gap {} ms, lost {:?}",
            r.sent, r.received, r.longest_gap_ms, r.lost
        );
    }
    if east_west.received != east_west.sent || fip_in.received != fip_in.sent {
        print_datapath_logs(lab);
    }
    assert_eq!(
        east_west.received, east_west.sent,
        "east-west packets lost: {:?} (longest gap {} ms)",
        east_west.lost, east_west.longest_gap_ms
    );
    assert_eq!(
        fip_in.received, fip_in.sent,
        "FIP packets lost: {:?}",
        fip_in.lost
    );
    assert!(
        snat.longest_gap_ms < 1000,
        "SNAT outage {} ms over the 1 s failover budget",
        snat.longest_gap_ms
    );
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}

#[test]
fn a_rolling_restart_loses_no_east_west_or_fip_packet_and_snat_stays_in_budget() -> Result<()> {
    // Loss-free streams need the CPU: no other lab runs meanwhile.
    let mut t = TestLab::alone(2, 2)?;
    let lab = t.lab();
    let traffic = start_traffic(lab)?;
    let started = Instant::now();
    let took = rolling_restart(lab, Walk::Restart, &mut |_, _| Ok(()))?;
    let walk_took = started.elapsed();
    println!("rolling restart of 4 agents in {walk_took:?}: {took:?}");
    check_traffic(lab, traffic, walk_took)
}

/// The baseline release's agent, built by `scripts/upgrade-baseline.sh` (`scripts/test.sh` runs
/// it first), or `$DVRMESH_UPGRADE_FROM`.
fn baseline_agent() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DVRMESH_UPGRADE_FROM") {
        return Ok(PathBuf::from(p));
    }
    // The script alone reads scripts/upgrade-baseline.commit; asked for the path, it builds nothing.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/upgrade-baseline.sh");
    let out = std::process::Command::new(&script).arg("--path").output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !bin.is_file() {
        bail!(
            "the upgrade baseline's agent {} is not built: run scripts/upgrade-baseline.sh",
            bin.display()
        );
    }
    Ok(bin)
}

/// The binary `node`'s running agent was started from.
fn running_binary(lab: &Lab, node: &str) -> Result<PathBuf> {
    let pid = lab.agent_pid(node)?;
    Ok(std::fs::read_link(format!("/proc/{pid}/exe"))?)
}

/// Every node runs the binary the lab says it does, and no node refused a value another node
/// published: the versions side by side read each other.
fn check_mixed_cluster(lab: &Lab, after: &str) -> Result<()> {
    let mut versions = Vec::new();
    for node in lab.running_nodes() {
        let want = lab.agent_bin(&node).canonicalize()?;
        let runs = running_binary(lab, &node)?;
        assert_eq!(
            runs, want,
            "{node} runs {runs:?}, the lab started it from {want:?}"
        );
        let page = metrics(lab, &node)?;
        assert_eq!(
            sample(&page, "dvrmesh_refused_values"),
            Some(0.0),
            "{node} refuses values published by the other version (after {after}): {}",
            lab.cli(&node, &["status"])?["refused_values"]
        );
        versions.push(format!(
            "{node}: {}",
            runs.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    println!("after {after}: {}", versions.join(", "));
    Ok(())
}

#[test]
fn a_rolling_upgrade_from_the_previous_release_loses_no_east_west_or_fip_packet() -> Result<()> {
    let old = baseline_agent()?.canonicalize()?;
    let mut spec = LabSpec::sized(2, 2);
    spec.agent_bin = Some(old.clone());
    let mut t = TestLab::alone_of(&spec)?;
    let lab = t.lab();
    check_mixed_cluster(lab, "the start")?;
    let traffic = start_traffic(lab)?;
    let started = Instant::now();
    let took = rolling_restart(lab, Walk::Upgrade, &mut |lab, node| {
        check_mixed_cluster(lab, node)?;
        // Half the cluster upgraded: a port bound on an old node, configured through a new one,
        // reaches a VM of a new node.
        if node == "compute-1" {
            lab.vm_create("a-vm3", "compute-2", "a-net2", false)?;
            let vm3 = lab.vm("a-vm3")?.ip.clone();
            let mut server = lab.probe_server("a-vm3", 30)?;
            let reached = reach(lab, "a-vm1", &vm3);
            let _ = server.kill();
            let _ = server.wait();
            reached?;
        }
        Ok(())
    })?;
    let walk_took = started.elapsed();
    println!("rolling upgrade of 4 agents from {old:?} in {walk_took:?}: {took:?}");
    check_traffic(lab, traffic, walk_took)?;
    for node in lab.running_nodes() {
        assert_ne!(
            running_binary(lab, &node)?,
            old,
            "{node} still runs the old release"
        );
        // The new agent adopted what the old one programmed: nothing left to change.
        let empty = |lab: &Lab| {
            lab.cli(&node, &["datapath", "diff"])
                .is_ok_and(|v| v["ops"].as_array().is_some_and(|o| o.is_empty()))
        };
        if wait(Duration::from_secs(10), "an empty datapath diff", || {
            empty(lab)
        })
        .is_err()
        {
            bail!(
                "{node}'s datapath is not in sync after the upgrade: {}",
                lab.cli(&node, &["datapath", "diff"])?
            );
        }
    }
    Ok(())
}

/// A restarted agent that can hear one of its peers only through others (their direct gossip
/// dropped, the tunnels between them untouched) must not plan its datapath without that peer: its
/// first pass would delete the tunnel entries to the peer's VMs. It waits for the peers its last
/// life saw alive, and the east-west stream between the two nodes loses nothing.
#[test]
fn a_restarted_agent_that_hears_a_peer_only_through_others_keeps_the_tunnels_to_it() -> Result<()> {
    let mut t = TestLab::alone(2, 1)?;
    let lab = t.lab();
    let (vm2_ip, mut server) = east_west_pair(lab, 60)?;
    let stream = lab.probe_stream("a-vm1", &vm2_ip, 600, 20)?;
    std::thread::sleep(Duration::from_secs(1));
    let (c1, c2) = (vec!["compute-1".to_string()], vec!["compute-2".to_string()]);
    lab.chaos_partition_gossip(&c2, &c1, false)?;
    lab.stop_agent("compute-2", "TERM")?;
    lab.start_agent("compute-2")?;
    // Without compute-1 in its view compute-2 would be ready within about 1.5 s.
    std::thread::sleep(Duration::from_secs(4));
    let early = lab.http_get("compute-2", "/readyz").map(|(s, _)| s);
    lab.chaos_heal_all()?;
    wait(Duration::from_secs(20), "compute-2 ready", || {
        lab.http_get("compute-2", "/readyz")
            .is_ok_and(|(s, _)| s == 200)
    })?;
    let east_west = stream.finish()?;
    let _ = server.kill();
    let _ = server.wait();
    println!(
        "east-west: {} sent, {} received, longest gap {} ms",
        east_west.sent, east_west.received, east_west.longest_gap_ms
    );
    if east_west.received != east_west.sent {
        print_datapath_logs(lab);
    }
    assert_ne!(
        early.ok(),
        Some(200),
        "compute-2 was ready while it could not hear compute-1 directly"
    );
    assert_eq!(
        east_west.received, east_west.sent,
        "east-west packets lost: {:?} (longest gap {} ms)",
        east_west.lost, east_west.longest_gap_ms
    );
    Ok(())
}

#[test]
fn a_lab_node_reports_its_datapath_in_metrics() -> Result<()> {
    let mut t = TestLab::new(2, 1)?;
    let lab = t.lab();
    wait(Duration::from_secs(30), "compute-1 ready", || {
        lab.http_get("compute-1", "/readyz")
            .is_ok_and(|(s, _)| s == 200)
    })?;
    let objects = |page: &str, kind: &str| {
        sample(page, &format!("dvrmesh_kernel_objects{{kind=\"{kind}\"}}")).unwrap_or(0.0)
    };
    let converged = |page: &str| sample(page, "dvrmesh_convergence_seconds_count").unwrap_or(0.0);
    let before = metrics(lab, "compute-1")?;
    assert_eq!(
        sample(&before, "dvrmesh_datapath_in_sync"),
        Some(1.0),
        "{before}"
    );
    let ok_passes =
        |page: &str| sample(page, "dvrmesh_reconcile_passes_total{result=\"ok\"}").unwrap_or(0.0);
    assert!(ok_passes(&before) >= 1.0, "{before}");
    // A VM on the node brings its router there (DVR: a node hosts a router only for its own
    // ports): namespaces and links appear, and the change is timed to the kernel.
    lab.vm_create("a-vm1", "compute-1", "a-net1", false)?;
    wait(
        Duration::from_secs(15),
        "compute-1's metrics to show the VM",
        || {
            metrics(lab, "compute-1").is_ok_and(|p| {
                objects(&p, "namespaces") > objects(&before, "namespaces")
                    && objects(&p, "links") > objects(&before, "links")
                    && converged(&p) > converged(&before)
                    && ok_passes(&p) > ok_passes(&before)
                    && sample(&p, "dvrmesh_datapath_in_sync") == Some(1.0)
            })
        },
    )?;
    let page = metrics(lab, "compute-1")?;
    println!(
        "compute-1: namespaces {} -> {}, links {} -> {}, convergences {} -> {}",
        objects(&before, "namespaces"),
        objects(&page, "namespaces"),
        objects(&before, "links"),
        objects(&page, "links"),
        converged(&before),
        converged(&page)
    );
    // The VM changed the view network-1 programs too (it holds the router's SNAT side): its
    // `/readyz` says 503 "behind the view" until its next pass lands, which is the endpoint doing
    // its job, so the test waits for ready and names the agent's reasons if it never comes.
    let mut last = String::new();
    wait(Duration::from_secs(15), "network-1 ready", || {
        match lab.http_get("network-1", "/readyz") {
            Ok((200, _)) => true,
            Ok((status, body)) => {
                last = format!("{status}: {body}");
                false
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        }
    })
    .with_context(|| format!("network-1 not ready; its last answer: {last}"))?;
    Ok(())
}
