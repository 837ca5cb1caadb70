//! Scenario tests (root): each builds its own sealed lab with real agents and proves a DVR path
//! with real packets from the Rust probes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use testbed::lab::exec::run_in;
use testbed::lab::spec::{LabSpec, INTERNET_IP};
use testbed::lab::{wait, Lab};

use common::{east_west_pair, reach, TestLab};

fn node_counter(ns: &Path, table: &str, rule_has: &str) -> u64 {
    // Packets of the counter on the rule containing `rule_has` in an nft table of `ns`.
    let out = run_in(ns, &["nft", "list", "table", "netdev", table]).unwrap_or_default();
    out.lines()
        .find(|l| l.contains(rule_has) && l.contains("counter packets"))
        .and_then(|l| l.split("counter packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn tx_packets(ns: &Path, dev: &str) -> u64 {
    // Through netlink: /sys inside `nsenter --net` still shows the host's devices.
    run_in(ns, &["ip", "-s", "-j", "link", "show", "dev", dev])
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v[0]["stats64"]["tx"]["packets"].as_u64())
        .unwrap_or(0)
}

/// Probes until the destination sees the source as `want` (e.g. a FIP once it is programmed).
fn reach_as(lab: &Lab, from: &str, to: &str, want: &str) -> Result<()> {
    wait(
        Duration::from_secs(15),
        &format!("{from} reaching {to} seen as {want}"),
        || {
            lab.probe(from, to, 1, 10)
                .map(|r| r.received > 0 && r.seen_as == [want.to_string()])
                .unwrap_or(false)
        },
    )
}

fn id_of(lab: &Lab, kind: &str, name: &str) -> Result<String> {
    let v = lab.cli(&lab.state.nodes[0].name, &[kind, "show", name])?;
    v["id"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("{kind} {name} has no id"))
}

/// The short form of an object id that device names embed.
fn short(id: &str) -> Result<String> {
    Ok(mesh_proto::ObjectId::new(id)?.short().to_string())
}

fn vni_of(lab: &Lab, net: &str) -> Result<u64> {
    lab.cli(&lab.state.nodes[0].name, &["network", "show", net])?["vni"]
        .as_u64()
        .context("vni")
}

#[test]
fn east_west_snat_fip_and_tenant_isolation() -> Result<()> {
    let mut t = TestLab::new(2, 1)?;
    let lab = t.lab();
    let vm1 = lab.vm_create("a-vm1", "compute-1", "a-net1", true)?;
    let vm2 = lab.vm_create("a-vm2", "compute-2", "a-net2", false)?;
    let vm3 = lab.vm_create("a-vm3", "compute-1", "a-net2", false)?;
    let b1 = lab.vm_create("b-vm1", "compute-2", "b-net1", false)?;
    let mut servers = Vec::new();
    for m in ["a-vm1", "a-vm2", "a-vm3", "b-vm1", "internet"] {
        servers.push(lab.probe_server(m, 120)?);
    }

    // East-west on one host.
    let r = reach(lab, "a-vm1", &vm3.ip)?;
    assert_eq!(
        r.seen_as,
        std::slice::from_ref(&vm1.ip),
        "routed, not NATed"
    );

    // Across hosts, both directions, routed on the sending host and tunnelled with its DVR MAC:
    // by the fast path on the VM's own device, so neither node's qrouter sees the traffic.
    reach(lab, "a-vm1", &vm2.ip)?;
    reach(lab, "a-vm2", &vm1.ip)?;
    let router = id_of(lab, "router", "a-router")?;
    let (sub1, sub2) = (
        short(&id_of(lab, "subnet", "a-net1-sub")?)?,
        short(&id_of(lab, "subnet", "a-net2-sub")?)?,
    );
    let q1 = lab.agent_ns("compute-1", &format!("qrouter-{router}"));
    let q2 = lab.agent_ns("compute-2", &format!("qrouter-{router}"));
    let vx1 = format!("dvrmesh_vx{}", vni_of(lab, "a-net1")?);
    let vx2 = format!("dvrmesh_vx{}", vni_of(lab, "a-net2")?);
    let (n1, n2) = (lab.node_ns("compute-1"), lab.node_ns("compute-2"));
    let counters = || {
        (
            tx_packets(&q1, &format!("qr-{sub2}")),
            tx_packets(&q2, &format!("qr-{sub2}")),
            tx_packets(&q2, &format!("qr-{sub1}")),
            node_counter(&n2, &vx2, "@remote_dvr"),
            node_counter(&n1, &vx1, "@remote_dvr"),
        )
    };
    let before = counters();
    let r = lab.probe("a-vm1", &vm2.ip, 20, 10)?;
    assert_eq!(r.received, 20, "{r:?}");
    assert_eq!(r.seen_as, std::slice::from_ref(&vm1.ip));
    let after = counters();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (0, 0, 0),
        "no qrouter routes east-west between ports of its subnets (the fast path does): {before:?} → {after:?}"
    );
    assert!(after.3 - before.3 >= 20, "compute-2 received the requests with compute-1's DVR MAC and restored the gateway MAC: {before:?} → {after:?}");
    assert!(
        after.4 - before.4 >= 20,
        "compute-1 received the replies with compute-2's DVR MAC: {before:?} → {after:?}"
    );

    // SNAT: the internet sees the router's external address.
    let snat_ip = lab.cli("compute-1", &["router", "show", "a-router"])?["gateway"]["external_ip"]
        .as_str()
        .context("snat ip")?
        .to_string();
    assert_eq!(reach(lab, "a-vm2", INTERNET_IP)?.seen_as, [snat_ip]);
    // FIP: outbound seen as the FIP, inbound reaches the VM.
    let fip = vm1.fip.clone().context("fip")?;
    reach_as(lab, "a-vm1", INTERNET_IP, &fip)?;
    assert_eq!(
        reach(lab, "internet", &fip)?.seen_as,
        [INTERNET_IP.to_string()]
    );

    // Isolation: same CIDR, other tenant: never reached, in either direction.
    assert!(b1.ip.starts_with("10.1.0.") && vm1.ip.starts_with("10.1.0."));
    for (from, to) in [("a-vm1", b1.ip.as_str()), ("b-vm1", vm1.ip.as_str())] {
        let r = lab.probe(from, to, 5, 20)?;
        assert_eq!(r.received, 0, "{from} reached {to} across tenants: {r:?}");
    }
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}

#[test]
fn a_fip_moved_to_a_port_on_another_node_follows() -> Result<()> {
    let mut t = TestLab::new(2, 1)?;
    let lab = t.lab();
    let vm1 = lab.vm_create("a-vm1", "compute-1", "a-net1", true)?;
    let vm4 = lab.vm_create("a-vm4", "compute-2", "a-net1", false)?;
    let fip = vm1.fip.clone().context("fip")?;
    let mut s1 = lab.probe_server("a-vm1", 60)?;
    reach(lab, "internet", &fip)?;
    let _ = s1.kill();
    let _ = s1.wait();
    let mut s4 = lab.probe_server("a-vm4", 60)?;
    let moved = Instant::now();
    lab.cli("compute-1", &["fip", "disassociate", &fip])?;
    lab.cli(
        "compute-1",
        &["fip", "associate", &fip, "--port", &vm4.port],
    )?;
    reach(lab, "internet", &fip).context("the FIP did not follow its new port")?;
    let took = moved.elapsed();
    println!("a FIP moved to a port on another node answered again after {took:?}");
    assert!(took < Duration::from_secs(10), "FIP move took {took:?}");
    let mut si = lab.probe_server("internet", 60)?;
    reach_as(lab, "a-vm4", INTERNET_IP, &fip).context("the new port leaves through the FIP")?;
    for s in [&mut s4, &mut si] {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}

#[test]
fn a_deleted_port_and_a_removed_router_interface_leave_nothing_behind() -> Result<()> {
    let mut t = TestLab::new(2, 1)?;
    let lab = t.lab();
    let vm1 = lab.vm_create("a-vm1", "compute-1", "a-net1", false)?;
    let vm2 = lab.vm_create("a-vm2", "compute-2", "a-net2", false)?;
    let mut servers = vec![
        lab.probe_server("a-vm1", 60)?,
        lab.probe_server("a-vm2", 60)?,
        lab.probe_server("internet", 60)?,
    ];
    reach(lab, "a-vm1", &vm2.ip)?;
    lab.cli("compute-2", &["port", "delete", &vm2.port])?;
    let nodes: Vec<String> = lab.state.nodes.iter().map(|n| n.name.clone()).collect();
    wait(
        Duration::from_secs(15),
        "the port's kernel state gone on every node",
        || {
            nodes.iter().all(|n| {
                run_in(&lab.node_ns(n), &["bridge", "fdb", "show"])
                    .map(|o| !o.contains(&vm2.mac))
                    .unwrap_or(false)
            })
        },
    )?;
    let r = lab.probe("a-vm1", &vm2.ip, 5, 20)?;
    assert_eq!(r.received, 0, "a deleted port must be unreachable: {r:?}");
    let router = id_of(lab, "router", "a-router")?;
    let q = lab.agent_ns("compute-1", &format!("qrouter-{router}"));
    assert!(
        !run_in(&q, &["ip", "neigh", "show", "nud", "permanent"])?.contains(&vm2.ip),
        "compute-1's router still has the deleted port's permanent neighbour"
    );

    // Remove a-net1's interface: a-vm1 loses its router (and so the internet), and compute-1 drops
    // the router namespace (no local port on the router's other subnet).
    reach(lab, "a-vm1", INTERNET_IP)?;
    lab.cli(
        "compute-1",
        &[
            "router",
            "remove-interface",
            "a-router",
            "--subnet",
            "a-net1-sub",
        ],
    )?;
    wait(
        Duration::from_secs(15),
        "compute-1 drops the router namespace",
        || !q.exists(),
    )?;
    let r = lab.probe("a-vm1", INTERNET_IP, 5, 20)?;
    assert_eq!(r.received, 0, "no router, no way out: {r:?}");
    let _ = vm1;
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}

#[test]
fn a_node_joining_a_running_lab_serves_new_vms() -> Result<()> {
    let mut t = TestLab::new(1, 1)?;
    let lab = t.lab();
    let vm1 = lab.vm_create("a-vm1", "compute-1", "a-net1", false)?;
    let index = lab.state.nodes.len();
    lab.add_node(index, "compute-9", "dvr", 100)?;
    lab.wait_members(Duration::from_secs(20))?;
    let vm9 = lab.vm_create("a-vm9", "compute-9", "a-net2", true)?;
    let mut servers = vec![
        lab.probe_server("a-vm1", 60)?,
        lab.probe_server("a-vm9", 60)?,
        lab.probe_server("internet", 60)?,
    ];
    reach(lab, "a-vm9", &vm1.ip)?;
    reach(lab, "a-vm1", &vm9.ip)?;
    reach_as(lab, "a-vm9", INTERNET_IP, &vm9.fip.clone().context("fip")?)?;
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}

#[test]
fn restarting_agents_under_a_100_pps_stream_loses_nothing() -> Result<()> {
    // A stream that must lose nothing needs the CPU: no other lab runs meanwhile.
    let mut t = TestLab::alone(2, 1)?;
    let lab = t.lab();
    let (vm2_ip, mut server) = east_west_pair(lab, 60)?;
    let stream = lab.probe_stream("a-vm1", &vm2_ip, 800, 10)?;
    for node in ["compute-1", "compute-2"] {
        lab.stop_agent(node, "TERM")?;
        lab.start_agent(node)?;
        // Restarted: its first datapath pass has run (the one that could have broken the path).
        wait(
            Duration::from_secs(30),
            &format!("{node}'s first datapath pass"),
            || {
                lab.cli(node, &["status"])
                    .is_ok_and(|s| s["datapath"]["passes"].as_u64().is_some_and(|p| p >= 1))
            },
        )?;
    }
    let report = stream.finish()?;
    println!(
        "stream through two agent restarts: {} sent, {} received, lost {:?}",
        report.sent, report.received, report.lost
    );
    // What the restarted agents did to their datapaths, for a failure's diagnosis.
    common::print_datapath_logs(lab);
    assert_eq!(
        report.received, report.sent,
        "packets lost while agents restarted: {:?}",
        report.lost
    );
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}

#[test]
fn a_fip_of_a_port_on_a_node_without_external_access_is_served_centrally() -> Result<()> {
    let spec = LabSpec {
        nodes: vec![
            testbed::lab::spec::NodeSpec {
                name: "compute-1".into(),
                mode: "dvr".into(),
                priority: 100,
            },
            testbed::lab::spec::NodeSpec {
                name: "compute-3".into(),
                mode: "dvr_no_external".into(),
                priority: 100,
            },
            testbed::lab::spec::NodeSpec {
                name: "network-1".into(),
                mode: "dvr_snat".into(),
                priority: 200,
            },
        ],
        agent_bin: None,
        advert_multiplier_min: None,
        restart_hold_ms: None,
    };
    let mut t = TestLab::of(&spec)?;
    let lab = t.lab();
    let vm = lab.vm_create("a-vm5", "compute-3", "a-net1", true)?;
    let other = lab.vm_create("a-vm1", "compute-1", "a-net2", false)?;
    let fip = vm.fip.clone().context("fip")?;
    let mut servers = vec![
        lab.probe_server("a-vm5", 60)?,
        lab.probe_server("internet", 60)?,
        lab.probe_server("a-vm1", 60)?,
    ];
    // East-west from the node without external access still routes locally.
    reach(lab, "a-vm5", &other.ip)?;
    // Its FIP lives on the SNAT holder: inbound reaches it, outbound leaves as the FIP.
    assert_eq!(
        reach(lab, "internet", &fip)?.seen_as,
        [INTERNET_IP.to_string()]
    );
    reach_as(lab, "a-vm5", INTERNET_IP, &fip)?;
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}
