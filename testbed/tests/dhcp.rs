//! DHCP in the lab (root): VMs configure themselves with busybox `udhcpc`, answered by the agent
//! of the node that hosts them; they renew, also across a restart of that agent; a subnet with
//! DHCP off gets no answer; a port deleted and recreated on another node is served there.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use testbed::demo;
use testbed::lab::exec::run_in;
use testbed::lab::spec::{LabSpec, NodeSpec};
use testbed::lab::{wait, Addressing, Lab};

use common::{reach, reach_within, TestLab};

/// (address/prefix, MTU, default route's gateway) of the VM's `eth0`, read from its kernel.
fn vm_interface(lab: &Lab, vm: &str) -> Result<(String, u64, String)> {
    let ns = lab.vm_ns(vm);
    let addr: Value =
        serde_json::from_str(&run_in(&ns, &["ip", "-j", "-4", "addr", "show", "eth0"])?)?;
    let a = &addr[0]["addr_info"][0];
    let cidr = format!(
        "{}/{}",
        a["local"].as_str().context("address")?,
        a["prefixlen"]
    );
    let mtu = addr[0]["mtu"].as_u64().context("mtu")?;
    let routes: Value = serde_json::from_str(&run_in(
        &ns,
        &["ip", "-j", "-4", "route", "show", "default"],
    )?)?;
    let gw = routes[0]["gateway"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((cidr, mtu, gw))
}

/// Packets counted by the `udp dport 67-68` rule (DHCP, both ports) of `chain` (`in` or `out`)
/// in the VXLAN table of network `vni` on `node`.
fn vxlan_dhcp_drops(lab: &Lab, node: &str, vni: u32, chain: &str) -> Result<u64> {
    let table = format!("dvrmesh_vx{vni}");
    let text = run_in(
        &lab.node_ns(node),
        &["nft", "list", "table", "netdev", &table],
    )?;
    let body = text
        .split(&format!("chain {chain} {{"))
        .nth(1)
        .and_then(|b| b.split('}').next())
        .with_context(|| format!("no chain {chain} in {table} on {node}"))?;
    body.lines()
        .find(|l| l.contains("udp dport 67-68 counter"))
        .and_then(|l| l.split("counter packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no udp dport 67-68 counter in {table} on {node}"))
}

#[test]
fn vms_boot_by_dhcp_from_their_node_and_renew_across_an_agent_restart() -> Result<()> {
    let mut t = TestLab::new(2, 1)?;
    let lab = t.lab();
    let n = lab.state.nodes[0].name.clone();
    for args in [
        &[
            "network", "create", "c-net", "--vni", "301", "--mtu", "1400",
        ][..],
        &[
            "subnet",
            "create",
            "c-sub",
            "--network",
            "c-net",
            "--cidr",
            "10.30.0.0/24",
            "--dns-server",
            "10.30.0.2",
            "--domain",
            "lab.example",
        ],
        &["router", "add-interface", "a-router", "--subnet", "c-sub"],
    ] {
        lab.cli(&n, args)?;
    }
    let a = lab.vm_create("a-vm1", "compute-1", "a-net1", false)?;
    let c = lab.vm_create("c-vm1", "compute-2", "c-net", false)?;

    // What c-vm1 was told, and what its kernel holds.
    let client = lab.dhcp_client("c-vm1");
    let told = |k: &str| client.lease_value(k).unwrap_or_default();
    assert_eq!(told("ip"), c.ip);
    assert_eq!(told("mask"), "24");
    assert_eq!(told("router"), "10.30.0.1");
    assert_eq!(told("serverid"), "10.30.0.1");
    assert_eq!(told("mtu"), "1400");
    assert_eq!(
        told("staticroutes"),
        "0.0.0.0/0 10.30.0.1 169.254.169.254/32 0.0.0.0"
    );
    assert_eq!(told("dns"), "10.30.0.2");
    assert_eq!(told("domain"), "lab.example");
    assert_eq!(told("hostname"), "c-vm1");
    assert_eq!(told("lease"), testbed::lab::DHCP_LEASE_SECONDS.to_string());
    assert_eq!(
        vm_interface(lab, "c-vm1")?,
        (format!("{}/24", c.ip), 1400, "10.30.0.1".into())
    );
    assert_eq!(vm_interface(lab, "a-vm1")?.0, format!("{}/24", a.ip));

    // c-vm1's broadcasts were flooded towards compute-1 (a-router is there too) but the VXLAN
    // device dropped its DHCP: nothing arrived on compute-1.
    assert!(vxlan_dhcp_drops(lab, "compute-2", 301, "out")? > 0);
    assert_eq!(vxlan_dhcp_drops(lab, "compute-1", 301, "in")?, 0);

    // Both reach each other through the distributed router, across hosts.
    let mut servers = vec![
        lab.probe_server("a-vm1", 120)?,
        lab.probe_server("c-vm1", 120)?,
    ];
    reach(lab, "a-vm1", &c.ip)?;
    reach(lab, "c-vm1", &a.ip)?;

    // Renewal, then a restart of the agent that answers: the lease is the port, so the VM
    // renews again with the same address.
    let lease = Duration::from_secs(u64::from(testbed::lab::DHCP_LEASE_SECONDS));
    wait(lease * 2, "c-vm1 renewing", || client.renewals() >= 1)?;
    lab.stop_agent("compute-2", "KILL")?;
    lab.start_agent("compute-2")?;
    let before = client.renewals();
    wait(
        lease * 2,
        "c-vm1 renewing after its agent restarted",
        || client.renewals() > before,
    )?;
    assert_eq!(told("ip"), c.ip);
    reach(lab, "a-vm1", &c.ip)?;
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}

#[test]
fn no_answer_without_dhcp_and_a_recreated_port_is_served_by_its_new_node() -> Result<()> {
    let mut t = TestLab::new(2, 1)?;
    let lab = t.lab();
    let n = lab.state.nodes[0].name.clone();
    lab.cli(&n, &["network", "create", "d-net", "--vni", "401"])?;
    lab.cli(
        &n,
        &[
            "subnet",
            "create",
            "d-sub",
            "--network",
            "d-net",
            "--cidr",
            "10.40.0.0/24",
            "--no-dhcp",
        ],
    )?;
    let refused = lab.vm_create("d-vm1", "compute-1", "d-net", false);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no lease")),
        "{refused:?}"
    );
    lab.vm_create_with("d-vm2", "compute-1", "d-net", false, Addressing::Static)?;

    let other = lab.vm_create("a-vm2", "compute-1", "a-net2", false)?;
    let first = lab.vm_create("a-vm1", "compute-1", "a-net1", false)?;
    assert_eq!(lab.dhcp_client("a-vm1").lease_value("ip"), Some(first.ip));
    lab.vm_delete("a-vm1")?;
    // The deletion must have reached compute-2 before compute-1 goes away (the name is reused).
    wait(
        Duration::from_secs(15),
        "compute-2 seeing a-vm1's port deleted",
        || lab.cli("compute-2", &["port", "show", "a-vm1"]).is_err(),
    )?;
    // Nobody but compute-2 can answer now: compute-1's agent is gone.
    lab.stop_agent("compute-1", "KILL")?;
    let moved = lab.vm_create("a-vm1", "compute-2", "a-net1", false)?;
    assert_eq!(
        lab.dhcp_client("a-vm1").lease_value("ip"),
        Some(moved.ip.clone())
    );
    assert_eq!(vm_interface(lab, "a-vm1")?.0, format!("{}/24", moved.ip));
    lab.start_agent("compute-1")?;
    let _server = lab.probe_server("a-vm2", 90)?;
    // compute-1's agent waits for a settled view before it programs again (up to 30 s).
    reach_within(lab, "a-vm1", &other.ip, Duration::from_secs(60))?;
    Ok(())
}

#[test]
fn the_demo_matrix_passes_with_every_vm_booted_by_dhcp() -> Result<()> {
    // The demo's lab: 2 compute nodes, 1 without external access, 1 network node.
    let mut spec = LabSpec::sized(2, 1);
    spec.nodes.insert(
        2,
        NodeSpec {
            name: "compute-3".into(),
            mode: "dvr_no_external".into(),
            priority: 100,
        },
    );
    let mut t = TestLab::of(&spec)?;
    let lab = t.lab();
    let start = std::time::Instant::now();
    lab.vm_create_many(&demo::VMS)?;
    assert!(lab.state.vms.iter().all(|v| v.dhcp));
    // Overlapping tenants: a-vm1 and b-vm1 both live in 10.1.0.0/24; each has its own lease.
    let timing = demo::Timing {
        start,
        requested: start,
    };
    demo::matrix(lab, timing).map(|_| ())
}

#[test]
fn hostile_dhcp_frames_get_no_answer_and_break_nothing() -> Result<()> {
    let mut t = TestLab::new(1, 1)?;
    let lab = t.lab();
    let vm = lab.vm_create("a-vm1", "compute-1", "a-net1", false)?;
    let pid = lab.state.nodes[0].pid.context("compute-1's agent pid")?;
    let junk = testbed::lab::find_lab_bin()?;
    let out = run_in(
        &lab.vm_ns("a-vm1"),
        &[
            &junk.to_string_lossy(),
            "dhcp-junk",
            "--dev",
            "eth0",
            "--count",
            "3000",
        ],
    )?;
    // The agent lives, and the VM still renews (the flood only spent its rate for a moment).
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "{out}"
    );
    let client = lab.dhcp_client("a-vm1");
    let before = client.renewals();
    wait(
        Duration::from_secs(10),
        "a-vm1 renewing after the flood",
        || {
            let _ = client.renew_now();
            std::thread::sleep(Duration::from_millis(500));
            client.renewals() > before
        },
    )?;
    assert_eq!(client.lease_value("ip"), Some(vm.ip));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The operator sees it in the metrics: answers, and the flood refused or rate-limited.
    let (code, text) = lab.http_get("compute-1", "/metrics")?;
    assert_eq!(code, 200, "{text}");
    let count = |outcome: &str| -> u64 {
        let series = format!("dvrmesh_dhcp_frames_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(count("answered") >= 2, "{text}");
    // Not all 3000: the kernel drops what overflows the socket's buffer before it is read.
    assert!(
        count("refused") + count("rate_limited") >= 10,
        "the flood does not show: {text}"
    );
    Ok(())
}
