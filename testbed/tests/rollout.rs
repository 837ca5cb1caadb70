//! Rolling out (root): a rolling restart of every agent of a lab under east-west, FIP and SNAT
//! traffic, following the operations guide (network nodes drained first, one node at a time,
//! each back in service before the next), and the metrics a lab node serves while its datapath
//! works.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use testbed::lab::spec::INTERNET_IP;
use testbed::lab::{wait, Lab};

use common::{metrics, reach, reach_within, sample, TestLab};

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

/// Restarts `node`'s agent (SIGTERM, start) and waits until it is back in service: its first
/// datapath pass ran and its metrics endpoint says ready.
fn restart(lab: &mut Lab, node: &str) -> Result<Duration> {
    let start = Instant::now();
    lab.stop_agent(node, "TERM")?;
    lab.start_agent(node)?;
    wait(
        Duration::from_secs(30),
        &format!("{node} ready after its restart"),
        || lab.http_get(node, "/readyz").is_ok_and(|(s, _)| s == 200),
    )?;
    Ok(start.elapsed())
}

/// The rolling restart of the operations guide: each network node drained, restarted, undrained
/// and the router settled on the best node again; then each compute node restarted.
fn rolling_restart(lab: &mut Lab) -> Result<Vec<(String, Duration)>> {
    let mut took = Vec::new();
    for (node, other) in [("network-1", "network-2"), ("network-2", "network-1")] {
        let drained = lab.cli(node, &["agent", "drain"])?;
        if drained["complete"] != Value::Bool(true) {
            bail!("agent drain on {node} did not complete: {drained}");
        }
        wait_holder(lab, other, Duration::from_secs(5))?;
        took.push((node.to_string(), restart(lab, node)?));
        lab.cli(node, &["agent", "undrain"])?;
        // The better node (network-1) takes the router back once undrained.
        wait_holder(lab, "network-1", Duration::from_secs(15))?;
    }
    for node in ["compute-1", "compute-2"] {
        took.push((node.to_string(), restart(lab, node)?));
    }
    Ok(took)
}

#[test]
fn a_rolling_restart_loses_no_east_west_or_fip_packet_and_snat_stays_in_budget() -> Result<()> {
    // Loss-free streams need the CPU: no other lab runs meanwhile.
    let mut t = TestLab::alone(2, 2)?;
    let lab = t.lab();
    lab.vm_create("a-vm1", "compute-1", "a-net1", false)?;
    let vm2 = lab.vm_create("a-vm2", "compute-2", "a-net2", true)?;
    let fip = vm2.fip.clone().context("a-vm2 has a FIP")?;
    let mut servers = vec![
        lab.probe_server("a-vm2", 180)?,
        lab.probe_server("internet", 180)?,
    ];
    wait_holder(lab, "network-1", Duration::from_secs(60))?;
    reach(lab, "a-vm1", &vm2.ip)?;
    reach_within(lab, "internet", &fip, Duration::from_secs(30))?;
    reach_within(lab, "a-vm1", INTERNET_IP, Duration::from_secs(30))?;

    // 50 datagrams a second on each path for 80 s: longer than the whole procedure.
    let (count, interval_ms) = (4000, 20);
    let east_west = lab.probe_stream("a-vm1", &vm2.ip, count, interval_ms)?;
    let fip_in = lab.probe_stream("internet", &fip, count, interval_ms)?;
    let snat = lab.probe_stream("a-vm1", INTERNET_IP, count, interval_ms)?;
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let took = rolling_restart(lab)?;
    let procedure = started.elapsed();
    let stream_time = Duration::from_millis(count as u64 * interval_ms);
    assert!(
        procedure + Duration::from_secs(1) < stream_time,
        "the rolling restart took {procedure:?}, longer than the streams ({stream_time:?}): lengthen them"
    );
    let (east_west, fip_in, snat) = (east_west.finish()?, fip_in.finish()?, snat.finish()?);
    println!("rolling restart of 4 agents in {procedure:?}: {took:?}");
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
        // What the restarted agents did to their datapaths, for a failure's diagnosis.
        for node in ["compute-1", "compute-2"] {
            let log =
                std::fs::read_to_string(lab.node_dir(node).join("agent.log")).unwrap_or_default();
            for l in log.lines().filter(|l| {
                l.contains("datapath")
                    || l.contains("settled")
                    || l.contains("op failed")
                    || l.contains("member")
            }) {
                println!("[{node}] {l}");
            }
        }
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
    let (status, _) = lab.http_get("network-1", "/readyz")?;
    assert_eq!(status, 200, "network-1 not ready");
    Ok(())
}
