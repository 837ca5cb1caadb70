//! Chaos tests of SNAT high availability (root): each builds a lab with two compute nodes and two
//! network nodes (network-1 priority 200, network-2 priority 150), runs a 100 packets/s UDP stream
//! from a VM through SNAT to the internet host, injects a fault with the same verbs as
//! `dvrmesh-lab chaos`, prints the measured outage, and checks from the external side (ARP from
//! the upstream router) that at most one node answers for the router's external IP once the
//! window has passed. The tests run one at a time (`TestLab::alone`): their timings must not
//! compete for 2 cores.

mod common;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use testbed::lab::spec::{EXT_GATEWAY, INTERNET_IP};
use testbed::lab::{find_lab_bin, wait, Lab, ProbeStream};
use testbed::probe::ProbeReport;

use common::{metrics, reach_within, sample, TestLab};

const ROUTER: &str = "a-router";
const VM: &str = "a-vm1";

/// Prints the network nodes' election log lines (a failing test shows what the election did).
fn election_log(lab: &Lab) {
    for n in ["network-1", "network-2", "compute-1"] {
        let log = std::fs::read_to_string(lab.node_dir(n).join("agent.log")).unwrap_or_default();
        for l in log.lines().filter(|l| {
            [
                "SNAT",
                "gateway",
                "settled",
                "stalled",
                "starved",
                "WARN",
                "dial",
                "gossip write",
                "datagram not sent",
                "adopted",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            println!("[{n}] {l}");
        }
        if let Ok(m) = metrics(lab, n) {
            for k in [
                "dvrmesh_election_stalls",
                "dvrmesh_election_late_wakes",
                "dvrmesh_election_datagrams",
                "dvrmesh_gossip_dropped",
                "dvrmesh_tls_handshake_failures",
            ] {
                for l in m.lines().filter(|l| l.starts_with(k)) {
                    println!("[{n}] {l}");
                }
            }
        }
    }
}

/// A lab with the demo configuration, a VM reaching the internet through SNAT, and an echo server.
fn setup() -> Result<(TestLab, std::process::Child)> {
    let mut t = TestLab::alone(2, 2)?;
    let lab = t.lab();
    lab.vm_create(VM, "compute-1", "a-net1", false)?;
    let server = lab.probe_server("internet", 180)?;
    // A fresh agent elects only once its view has been quiet for a second, and the demo
    // configuration keeps views busy for a while; a loaded CI machine needs the margin.
    wait_holder(lab, "network-1", Duration::from_secs(60))?;
    reach_within(lab, VM, INTERNET_IP, Duration::from_secs(30))?;
    Ok((t, server))
}

/// The holder of the router as `via`'s agent sees it.
fn holder(lab: &Lab, via: &str) -> Option<String> {
    lab.cli(via, &["router", "show", ROUTER])
        .ok()
        .and_then(|v| v["holder"].as_str().map(String::from))
}

/// Waits until both compute nodes and every running network node agree on `want`.
fn wait_holder(lab: &Lab, want: &str, budget: Duration) -> Result<()> {
    let viewers = lab.running_nodes();
    let r = wait(
        budget,
        &format!("every node naming {want} the holder"),
        || {
            viewers
                .iter()
                .all(|v| holder(lab, v).as_deref() == Some(want))
        },
    );
    if r.is_err() {
        // Say what each node sees, so a failure in CI explains itself.
        for v in &viewers {
            let status = lab.cli(v, &["status"]).map(|s| s["ha"].clone());
            let show = lab.cli(v, &["router", "show", ROUTER]);
            println!(
                "[{v}] holder {:?}; ha {:?}; ha_status {:?}",
                holder(lab, v),
                status.ok(),
                show.ok().map(|s| s["ha_status"].clone())
            );
        }
        election_log(lab);
    }
    r
}

/// Whether this node's election holds the test's router.
fn holds(lab: &Lab, node: &str) -> bool {
    let Ok(id) = router_id(lab) else {
        return false;
    };
    lab.cli(node, &["status"])
        .ok()
        .and_then(|v| v["ha"]["held"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|x| x.as_str() == Some(id.as_str()))
}

/// Changes of the router's holder `via` has seen since its agent started.
fn holder_changes(lab: &Lab, via: &str) -> Result<u64> {
    lab.cli(via, &["router", "show", ROUTER])?["ha_status"]["transitions"]
        .as_u64()
        .context("transitions")
}

/// (took, withdrew) transitions of a node's election since its agent started.
fn transitions(lab: &Lab, node: &str) -> Result<(u64, u64)> {
    let v = lab.cli(node, &["status"])?;
    let c = &v["ha"]["counters"];
    Ok((
        c["took"].as_u64().context("took")?,
        c["withdrew"].as_u64().context("withdrew")?,
    ))
}

fn external_ip(lab: &Lab) -> Result<String> {
    let v = lab.cli("compute-1", &["router", "show", ROUTER])?;
    v["gateway"]["external_ip"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("router has no external IP: {v}"))
}

/// MACs answering ARP for the router's external IP, asked from the upstream router.
fn answering(lab: &Lab) -> Result<Vec<String>> {
    let ns = lab.member_ns("upstream")?;
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg(find_lab_bin()?)
        .args([
            "arp-probe",
            "--dev",
            "ext0",
            "--src-ip",
            EXT_GATEWAY,
            &external_ip(lab)?,
        ])
        .output()?;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("arp probe: {}", String::from_utf8_lossy(&out.stderr)))
}

fn assert_one_answers(lab: &Lab) -> Result<()> {
    // Two answers is the fault this checks for; none is a holder still programming (a pass).
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let macs = answering(lab)?;
        if macs.len() > 1 {
            bail!("two nodes answer for the external IP: {macs:?}");
        }
        if macs.len() == 1 {
            println!("external side: exactly one answer for the external IP: {macs:?}");
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("nobody answers for the external IP");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lets a running stream carry traffic for `d` before the fault: the outage is measured against
/// a path that was flowing, not one just opened.
fn traffic_flows_for(d: Duration) {
    std::thread::sleep(d);
}

/// Waits until both network nodes see the router's HA setting `key` at `want`.
fn wait_ha_setting(lab: &Lab, key: &str, want: &Value) -> Result<()> {
    wait(
        Duration::from_secs(5),
        &format!("the network nodes seeing {key} = {want}"),
        || {
            ["network-1", "network-2"].iter().all(|n| {
                lab.cli(n, &["router", "show", ROUTER])
                    .is_ok_and(|v| &v["ha"][key] == want)
            })
        },
    )
}

/// Whether `f` holds at any sample within `d` (sampled every 50 ms).
fn within(d: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Starts a 100 packets/s stream of `count` datagrams from the VM to the internet host.
fn stream(lab: &Lab, count: u32) -> Result<ProbeStream> {
    lab.probe_stream(VM, INTERNET_IP, count, 10)
}

fn finish(s: ProbeStream) -> Result<ProbeReport> {
    s.finish()
}

fn router_id(lab: &Lab) -> Result<String> {
    lab.cli("compute-1", &["router", "show", ROUTER])?["id"]
        .as_str()
        .map(String::from)
        .context("router id")
}

#[test]
fn hard_failure_of_the_holder_fails_over_within_a_second() -> Result<()> {
    let (mut t, mut server) = setup()?;
    let lab = t.lab();
    let backup_before = metrics(lab, "network-2")?;
    let observer_before = metrics(lab, "compute-1")?;
    let holder_held = sample(&metrics(lab, "network-1")?, "dvrmesh_snat_routers_held")
        .context("network-1's dvrmesh_snat_routers_held")?;
    assert!(
        holder_held >= 1.0,
        "network-1 holds no router before the kill"
    );
    let s = stream(lab, 300)?;
    traffic_flows_for(Duration::from_secs(1));
    lab.chaos_kill("network-1")?;
    lab.chaos_cut("network-1")?;
    let r = finish(s)?;
    println!(
        "hard kill + cut of the holder: outage {} ms ({} of {} datagrams lost)",
        r.longest_gap_ms,
        r.sent - r.received,
        r.sent
    );
    assert!(r.received > 0);
    assert!(
        r.longest_gap_ms < 1000,
        "outage {} ms is over the 1 s budget",
        r.longest_gap_ms
    );
    wait_holder(lab, "network-2", Duration::from_secs(5))?;
    assert_one_answers(lab)?;
    failover_in_metrics(lab, &backup_before, &observer_before, holder_held)?;
    let _ = server.kill();
    Ok(())
}

/// The failover shows in the metrics an operator alerts on: the backup holds and counts as taken
/// every router the dead holder held (`taken`); the compute node saw the holder change.
fn failover_in_metrics(
    lab: &Lab,
    backup_before: &str,
    observer_before: &str,
    taken: f64,
) -> Result<()> {
    let (backup, observer) = (metrics(lab, "network-2")?, metrics(lab, "compute-1")?);
    let moved = |what: &str, before: &str, after: &str, series: &str| -> Result<(f64, f64)> {
        let before = sample(before, series).with_context(|| format!("no {series}"))?;
        let after = sample(after, series).with_context(|| format!("no {series}"))?;
        println!("{what} ({series}): {before} -> {after}");
        Ok((before, after))
    };
    for (what, series) in [
        ("network-2 routers held", "dvrmesh_snat_routers_held"),
        ("network-2 takeovers", "dvrmesh_snat_takeovers_total"),
    ] {
        let (before, after) = moved(what, backup_before, &backup, series)?;
        assert_eq!(
            after,
            before + taken,
            "{what} ({series}) after the failover"
        );
    }
    // An observer may pass through "no holder" between the two: it moved, by one or more.
    let (what, series) = ("compute-1 holder changes", "dvrmesh_snat_holder_changes");
    let (before, after) = moved(what, observer_before, &observer, series)?;
    assert!(after > before, "{what} ({series}) did not move");
    Ok(())
}

#[test]
fn a_paused_holder_is_replaced_once_and_does_not_take_the_router_back() -> Result<()> {
    let (mut t, mut server) = setup()?;
    let lab = t.lab();
    let before = transitions(lab, "network-2")?;
    let seen_before = holder_changes(lab, "compute-1")?;
    let s = stream(lab, 600)?;
    traffic_flows_for(Duration::from_secs(1));
    lab.chaos_pause("network-1", Some(Duration::from_secs(2)))?;
    // Watch both network nodes for 2.5 s after the pause: one handover, no flapping back.
    let both = both_holding_ms(lab, Duration::from_millis(2500));
    let r = finish(s)?;
    let after = transitions(lab, "network-2")?;
    let seen = holder_changes(lab, "compute-1")? - seen_before;
    println!(
        "holder paused 2 s: outage {} ms; compute-1 saw {seen} change(s) of holder; network-2 gave up {} times; both holding for {both} ms after resume",
        r.longest_gap_ms,
        after.1 - before.1
    );
    assert!(r.longest_gap_ms < 1000, "outage {} ms", r.longest_gap_ms);
    election_log(lab);
    assert_eq!(seen, 1, "exactly one handover");
    assert_eq!(after.1 - before.1, 0, "no flapping back to network-1");
    assert_eq!(both, 0, "two holders after the paused node resumed");
    wait_holder(lab, "network-2", Duration::from_secs(3))?;
    assert_one_answers(lab)?;
    let _ = server.kill();
    Ok(())
}

/// Watches both network nodes for `dur`; returns how long both held the router at once (ms):
/// the real time between a sample that saw both holding and the next sample, summed (each
/// sample asks both agents, which takes what it takes).
fn both_holding_ms(lab: &Lab, dur: Duration) -> u64 {
    let end = Instant::now() + dur;
    let mut both = Duration::ZERO;
    let mut last: Option<(Instant, bool)> = None;
    while Instant::now() < end {
        let now_both = holds(lab, "network-1") && holds(lab, "network-2");
        let at = Instant::now();
        if let Some((then, true)) = last {
            both += at - then;
        }
        last = Some((at, now_both));
        std::thread::sleep(Duration::from_millis(25));
    }
    if let Some((then, true)) = last {
        both += Instant::now() - then;
    }
    both.as_millis() as u64
}

#[test]
fn asymmetric_advert_loss_and_a_split_in_halves_never_keep_two_holders() -> Result<()> {
    let (mut t, mut server) = setup()?;
    let lab = t.lab();
    // The holder's packets to the backup are lost; the backup's reach the holder.
    let s = stream(lab, 500)?;
    traffic_flows_for(Duration::from_millis(500));
    lab.chaos_partition(&["network-1".into()], &["network-2".into()], true)?;
    let both = both_holding_ms(lab, Duration::from_secs(4));
    let r = finish(s)?;
    println!(
        "one-way loss from the holder: outage {} ms; both held for ~{both} ms in 4 s",
        r.longest_gap_ms
    );
    election_log(lab);
    assert!(
        both <= 500,
        "two holders for {both} ms: beyond the bounded window"
    );
    lab.chaos_heal_all()?;
    wait(Duration::from_secs(10), "one holder after healing", || {
        holds(lab, "network-1") != holds(lab, "network-2")
    })?;
    // Halves: 2 of 4 nodes on each side; neither has a majority, so nobody holds.
    lab.chaos_partition(
        &["compute-1".into(), "network-1".into()],
        &["compute-2".into(), "network-2".into()],
        false,
    )?;
    let both = both_holding_ms(lab, Duration::from_secs(6));
    println!("split in halves: both held for ~{both} ms in 6 s");
    assert!(both <= 500, "two holders for {both} ms across a split");
    assert!(
        !(holds(lab, "network-1") && holds(lab, "network-2")),
        "two holders at the end of the split"
    );
    lab.chaos_heal_all()?;
    wait(Duration::from_secs(10), "one holder after healing", || {
        holds(lab, "network-1") != holds(lab, "network-2")
    })?;
    assert_one_answers(lab)?;
    let _ = server.kill();
    Ok(())
}

/// Note: in about one set-up in three on this machine, network-2 used to take the second router
/// over ("holder network-1 went silent") some 70 ms after network-1 first claimed it, with no
/// loss injected yet: network-1's adverts for that router did not arrive. The likeliest reason,
/// fixed since: a holder adverted only to the candidates of its own view, which can count a
/// busy backup out for a moment. The failure output prints each node's stall and late-wake
/// counters and transport drops, should it come back.
#[test]
fn five_percent_loss_on_every_link_for_a_minute_causes_no_failover() -> Result<()> {
    let (mut t, mut server) = setup()?;
    let lab = t.lab();
    let nodes = ["network-1", "network-2"];
    // Start from a steady election: network-1 holds both routers. A takeover during set-up (see
    // the function's note) leaves network-1 in its 30 s hold-down, and its preemption would then
    // fall inside the minute of loss and be counted as a failover the loss caused.
    wait(
        Duration::from_secs(45),
        "network-1 holding every router",
        || {
            let held = |n| {
                metrics(lab, n)
                    .ok()
                    .and_then(|m| sample(&m, "dvrmesh_snat_routers_held"))
            };
            held("network-1") == Some(2.0) && held("network-2") == Some(0.0)
        },
    )?;
    let before: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| transitions(lab, n))
        .collect::<Result<_>>()?;
    lab.chaos_loss(5)?;
    let s = stream(lab, 6000)?;
    let r = finish(s)?;
    lab.chaos_loss(0)?;
    let after: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| transitions(lab, n))
        .collect::<Result<_>>()?;
    println!(
        "5% loss per link for 60 s: {} of {} datagrams through; transitions before {before:?} after {after:?}",
        r.received, r.sent
    );
    println!(
        "longest gap under loss (loss, not a failover): {} ms",
        r.longest_gap_ms
    );
    if before != after {
        election_log(lab);
    }
    assert_eq!(before, after, "a failover happened under 5% loss");
    wait_holder(lab, "network-1", Duration::from_secs(3))?;
    assert_one_answers(lab)?;
    let _ = server.kill();
    Ok(())
}

#[test]
fn a_graceful_drain_hands_over_within_200_ms() -> Result<()> {
    let (mut t, mut server) = setup()?;
    let lab = t.lab();
    let s = stream(lab, 300)?;
    traffic_flows_for(Duration::from_secs(1));
    let d = lab.cli("network-1", &["agent", "drain"])?;
    let r = finish(s)?;
    println!(
        "drain: outage {} ms ({} lost); agent drain said {d}",
        r.longest_gap_ms,
        r.sent - r.received
    );
    assert_eq!(d["complete"], Value::Bool(true));
    assert!(
        r.longest_gap_ms < 200,
        "drain outage {} ms is not under 200 ms",
        r.longest_gap_ms
    );
    wait_holder(lab, "network-2", Duration::from_secs(3))?;
    assert_one_answers(lab)?;
    // Undrained, the better node preempts again.
    lab.cli("network-1", &["agent", "undrain"])?;
    wait_holder(lab, "network-1", Duration::from_secs(5))?;
    let _ = server.kill();
    Ok(())
}

#[test]
fn a_returning_better_node_preempts_after_the_delay_or_not_at_all() -> Result<()> {
    let (mut t, mut server) = setup()?;
    let lab = t.lab();
    lab.cli(
        "compute-1",
        &["router", "set-ha", ROUTER, "--preempt-delay", "2s"],
    )?;
    wait_ha_setting(lab, "preempt_delay_ms", &Value::from(2000))?;
    lab.chaos_kill("network-1")?;
    wait_holder(lab, "network-2", Duration::from_secs(5))?;
    let s = stream(lab, 800)?;
    lab.chaos_restart("network-1")?;
    let restarted = Instant::now();
    wait(Duration::from_secs(15), "network-1 holding again", || {
        holds(lab, "network-1")
    })?;
    let took = restarted.elapsed();
    let r = finish(s)?;
    println!(
        "preempt delay 2 s: network-1 took the router back {} ms after its agent started; outage of the handover {} ms",
        took.as_millis(),
        r.longest_gap_ms
    );
    assert!(
        r.longest_gap_ms < 1000,
        "preemption outage {} ms",
        r.longest_gap_ms
    );
    assert_one_answers(lab)?;
    election_log(lab);
    assert!(took >= Duration::from_secs(2), "preempted before the delay");
    wait_holder(lab, "network-1", Duration::from_secs(5))?;
    // No preemption: the returning node stays a backup.
    lab.cli("compute-1", &["router", "set-ha", ROUTER, "--no-preempt"])?;
    wait_ha_setting(lab, "preempt", &Value::Bool(false))?;
    lab.chaos_kill("network-1")?;
    wait_holder(lab, "network-2", Duration::from_secs(5))?;
    lab.chaos_restart("network-1")?;
    let preempted = within(Duration::from_secs(5), || holds(lab, "network-1"));
    assert!(!preempted, "network-1 preempted with preemption off");
    assert_eq!(holder(lab, "compute-1").as_deref(), Some("network-2"));
    let show = lab.cli("network-1", &["router", "show", ROUTER])?;
    println!(
        "router show after no-preempt return: holder {} epoch {} candidates {}",
        show["holder"], show["ha_status"]["epoch"], show["ha_status"]["candidates"]
    );
    assert_eq!(router_id(lab)?, show["id"].as_str().unwrap_or_default());
    assert_one_answers(lab)?;
    let _ = server.kill();
    Ok(())
}

#[test]
fn a_holder_whose_external_gateway_stops_answering_hands_over() -> Result<()> {
    let (mut t, mut server) = setup()?;
    let lab = t.lab();
    let s = stream(lab, 600)?;
    traffic_flows_for(Duration::from_secs(1));
    // Only the external link: the holder still gossips and adverts, but its SNAT leads nowhere.
    lab.chaos_cut_external("network-1")?;
    let r = finish(s)?;
    println!(
        "external link of the holder cut: outage {} ms ({} lost)",
        r.longest_gap_ms,
        r.sent - r.received
    );
    assert!(
        r.longest_gap_ms < 3000,
        "the holder did not hand over: outage {} ms",
        r.longest_gap_ms
    );
    wait_holder(lab, "network-2", Duration::from_secs(3))?;
    let show = lab.cli("compute-1", &["router", "show", ROUTER])?;
    let states = show["ha_status"]["candidates"].to_string();
    println!("candidates while network-1 cannot reach the gateway: {states}");
    assert!(states.contains("unhealthy"), "{states}");
    assert_one_answers(lab)?;
    // Link back: network-1 is healthy again and, better, preempts; unless it was displaced or
    // cut off from the majority during the cut (a stalled agent on a loaded machine is), in which
    // case it is held down by design and preempts once the hold-down it reports is over.
    lab.chaos_heal("network-1")?;
    let show = lab.cli("network-1", &["router", "show", ROUTER])?;
    let held_down = show["ha_status"]["holddown_ms"].as_u64().unwrap_or(0);
    if held_down > 0 {
        println!(
            "network-1 is held down for {held_down} ms after the cut (it withdrew more than once); transitions: {}",
            show["ha_status"]["transitions"]
        );
    }
    wait_holder(
        lab,
        "network-1",
        Duration::from_secs(10) + Duration::from_millis(held_down),
    )?;
    let _ = server.kill();
    Ok(())
}
