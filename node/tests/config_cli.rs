//! Multi-process, through the real CLI, on three agents: objects created through one agent are
//! listed by the others; allocation fills in router gateways and ports; a table of bad inputs is
//! refused with a clear message and changes nothing; an agent restarted with its data_dir keeps
//! its ports, which the others never see disappear. Each test starts its own cluster.

mod common;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use common::*;
use serde_json::Value;

fn must(a: &Agent, args: &[&str]) -> Result<Value> {
    a.cli(args)
        .map_err(|e| anyhow!("dvrmesh {args:?} failed: {e}"))
}

/// The strings of a JSON array.
fn names_of_plain(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The values of `field` in a JSON array of objects, sorted (lists come in id order).
fn names(v: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o[field].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The base configuration, written through different agents: networks and subnets (two with
/// overlapping CIDRs on different networks), an external network, router `r1` on `sub-a` with a
/// gateway, ports `vm1` (10.1.0.10) and `vm2` on n2 and `vm-b` on n1, and two FIPs, the first
/// associated with `vm1`. Returns r1 and vm1 as created.
fn base(agents: &[Agent]) -> Result<(Value, Value)> {
    base_networks(agents)?;
    let r1 = must(&agents[0], &["router", "show", "r1"])?;
    let vm1 = base_ports(agents)?;
    Ok((r1, vm1))
}

/// Networks, subnets, the external network and router r1 with its gateway. The addresses the
/// tests ask for by hand (10.1.0.10, 203.0.113.50 and .51) lie outside the pools the agents
/// allocate from: inside, a router's gateway or SNAT port may already hold one of them (each node
/// hands out its block from its first value), and the test would fail at random.
fn base_networks(agents: &[Agent]) -> Result<()> {
    let (n1, n3) = (&agents[0], &agents[2]);
    must(n1, &["network", "create", "net-a", "--vni", "100"])?;
    must(
        n1,
        &[
            "subnet",
            "create",
            "sub-a",
            "--network",
            "net-a",
            "--cidr",
            "10.1.0.0/24",
            "--pool",
            "10.1.0.100-10.1.0.254",
        ],
    )?;
    must(n3, &["network", "create", "net-b", "--vni", "200"])?;
    must(
        n3,
        &[
            "subnet",
            "create",
            "sub-b",
            "--network",
            "net-b",
            "--cidr",
            "10.2.0.0/24",
        ],
    )?;
    must(n1, &["network", "create", "net-c", "--vni", "300"])?;
    must(
        n1,
        &[
            "subnet",
            "create",
            "sub-c",
            "--network",
            "net-c",
            "--cidr",
            "10.1.0.0/24",
        ],
    )?;
    must(n1, &["network", "create", "net-d", "--vni", "400"])?;
    must(
        n1,
        &[
            "external-network",
            "create",
            "public",
            "--cidr",
            "203.0.113.0/24",
            "--gateway",
            "203.0.113.1",
            "--pool",
            "203.0.113.100-203.0.113.254",
        ],
    )?;
    must(n1, &["router", "create", "r1"])?;
    must(n1, &["router", "add-interface", "r1", "--subnet", "sub-a"])?;
    must(
        n1,
        &[
            "router",
            "set-gateway",
            "r1",
            "--external-network",
            "public",
        ],
    )?;
    Ok(())
}

/// The ports and FIPs of the base configuration; returns vm1.
fn base_ports(agents: &[Agent]) -> Result<Value> {
    let (n1, n3) = (&agents[0], &agents[2]);
    let vm1 = must(
        &agents[1],
        &[
            "port",
            "create",
            "vm1",
            "--network",
            "net-a",
            "--ip",
            "10.1.0.10",
        ],
    )?;
    assert_eq!(vm1["host"], "n2");
    assert_eq!(vm1["fixed_ips"][0], "10.1.0.10");
    let auto = must(&agents[1], &["port", "create", "vm2", "--network", "net-a"])?;
    assert!(auto["mac"]
        .as_str()
        .is_some_and(|m| m.starts_with("fa:16:3e")));
    must(n1, &["port", "create", "vm-b", "--network", "net-b"])?;
    must(
        n3,
        &[
            "fip",
            "create",
            "--external-network",
            "public",
            "--ip",
            "203.0.113.50",
        ],
    )?;
    must(
        n3,
        &[
            "fip",
            "create",
            "--external-network",
            "public",
            "--ip",
            "203.0.113.51",
        ],
    )?;
    must(n1, &["fip", "associate", "203.0.113.50", "--port", "vm1"])?;

    Ok(vm1)
}

/// Three agents with the base configuration, once every agent sees all of it (so a test that
/// compares views compares settled ones).
fn cluster_with_base() -> Result<(tempfile::TempDir, Vec<Agent>, Value, Value)> {
    let tmp = pki(&["n1", "n2", "n3"])?;
    let agents = cluster(tmp.path(), &["n1", "n2", "n3"])?;
    let (r1, vm1) = base(&agents)?;
    wait_until(
        Duration::from_secs(10),
        "every agent sees the whole configuration",
        || {
            agents.iter().all(|a| {
                a.cli(&["port", "list"])
                    .map(|v| names(&v, "name").len() == 3)
                    .unwrap_or(false)
                    && a.cli(&["network", "list"])
                        .map(|v| names(&v, "name").len() == 4)
                        .unwrap_or(false)
                    && a.cli(&["fip", "show", "203.0.113.50"])
                        .map(|v| v["port"] == vm1["id"])
                        .unwrap_or(false)
                    && a.cli(&["fip", "show", "203.0.113.51"]).is_ok()
            })
        },
    )?;
    Ok((tmp, agents, r1, vm1))
}

#[test]
fn objects_written_through_different_agents_are_listed_by_all() -> Result<()> {
    // cluster_with_base waits until every agent lists every port, network and the FIP's port.
    let (_tmp, agents, _r1, _vm1) = cluster_with_base()?;
    let n3 = &agents[2];
    let by_host = must(n3, &["port", "list", "--host", "n2"])?;
    assert_eq!(names(&by_host, "name"), ["vm1", "vm2"]);
    let view = must(n3, &["view"])?;
    assert_eq!(
        view["fips_by_host"]["n2"].as_array().map(Vec::len),
        Some(1),
        "FIP served by its port's host"
    );

    Ok(())
}

#[test]
fn a_router_gateway_allocates_its_external_address_and_a_snat_port_per_subnet() -> Result<()> {
    let (_tmp, agents, r1, _vm1) = cluster_with_base()?;
    let n1 = &agents[0];
    let ext_ip = r1["gateway"]["external_ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ext_ip.starts_with("203.0.113."),
        "no external address: {r1}"
    );
    let sub_a = must(n1, &["subnet", "show", "sub-a"])?;
    let sg = &r1["snat_ports"][sub_a["id"].as_str().unwrap_or_default()];
    assert!(
        sg["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.1.0.") && ip != "10.1.0.1"),
        "no SNAT port: {r1}"
    );
    Ok(())
}

#[test]
fn ports_get_their_host_and_an_allocated_mac() -> Result<()> {
    let (_tmp, agents, _r1, vm1) = cluster_with_base()?;
    assert_eq!(vm1["host"], "n2");
    assert_eq!(vm1["fixed_ips"][0], "10.1.0.10");
    let vm2 = must(&agents[1], &["port", "show", "vm2"])?;
    assert!(
        vm2["mac"]
            .as_str()
            .is_some_and(|m| m.starts_with("fa:16:3e")),
        "{vm2}"
    );
    assert!(
        vm2["fixed_ips"][0]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.1.0.")),
        "{vm2}"
    );
    Ok(())
}

#[test]
fn the_datapath_plan_of_a_ports_host_holds_its_router() -> Result<()> {
    let (_tmp, agents, r1, _vm1) = cluster_with_base()?;
    let r1_id = r1["id"].as_str().unwrap_or_default().to_string();
    let plan = must(&agents[1], &["datapath", "plan"])?;
    let namespaces = names_of_plain(&plan["desired"]["namespaces"]);
    assert!(
        namespaces.contains(&format!("qrouter-{r1_id}")),
        "no qrouter in {namespaces:?}"
    );
    assert!(plan["desired"]["addrs"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["ip"] == "10.1.0.1")));
    let diff = agents[1].cli(&["datapath", "diff"]);
    assert!(
        diff.is_err_and(|e| e.contains("datapath = \"off\"")),
        "an agent that does not program the kernel has nothing to diff"
    );

    Ok(())
}

#[test]
fn bad_inputs_are_refused_with_their_reason_and_change_nothing() -> Result<()> {
    let (_tmp, agents, _r1, vm1) = cluster_with_base()?;
    let n1 = &agents[0];
    let mac1 = vm1["mac"].as_str().unwrap_or_default().to_string();
    let bad = bad_inputs(&mac1);
    assert!(bad.len() >= 25);
    let before = must(n1, &["view"])?;
    for (args, expect) in &bad {
        match n1.cli(args) {
            Ok(v) => panic!("dvrmesh {args:?} was accepted: {v}"),
            Err(e) => assert!(
                e.to_lowercase().contains(&expect.to_lowercase()),
                "dvrmesh {args:?}: expected {expect:?} in: {e}"
            ),
        }
        let after = must(n1, &["view"])?;
        assert_eq!(after, before, "dvrmesh {args:?} changed the configuration");
    }
    println!(
        "{} bad inputs refused, configuration unchanged after each",
        bad.len()
    );

    Ok(())
}

#[test]
fn ha_settings_land_on_the_router() -> Result<()> {
    let (_tmp, agents, _r1, _vm1) = cluster_with_base()?;
    let n1 = &agents[0];
    let r = must(
        n1,
        &[
            "router",
            "set-ha",
            "r1",
            "--priority",
            "n2=250",
            "--no-preempt",
            "--preempt-delay",
            "1500ms",
        ],
    )?;
    assert_eq!(r["ha"]["priorities"]["n2"], 250, "{r}");
    assert_eq!(r["ha"]["preempt"], false, "{r}");
    assert_eq!(r["ha"]["preempt_delay_ms"], 1500, "{r}");
    Ok(())
}

#[test]
fn a_restarted_host_keeps_its_ports_and_the_others_never_lose_them() -> Result<()> {
    let (tmp, mut agents, _r1, _vm1) = cluster_with_base()?;
    // Restart n2 (host of vm1, vm2): n1 never sees its ports disappear, and n2 still has them.
    agents[1].terminate();
    let cfg = agents[1].config.clone();
    let restarted_at = Instant::now();
    let mut checks = 0;
    while restarted_at.elapsed() < Duration::from_millis(1500) {
        let ports = names(&must(&agents[0], &["port", "list"])?, "name");
        assert!(
            ports.contains(&"vm1".to_string()) && ports.contains(&"vm2".to_string()),
            "ports vanished while their host was down: {ports:?}"
        );
        checks += 1;
    }
    agents[1] = start(tmp.path(), "n2", &cfg)?;
    wait_until(
        Duration::from_secs(10),
        "n2 back and listing its ports",
        || {
            agents[1]
                .cli(&["port", "list", "--host", "n2"])
                .map(|v| names(&v, "name") == ["vm1", "vm2"])
                .unwrap_or(false)
        },
    )?;
    while restarted_at.elapsed() < Duration::from_secs(4) {
        let ports = names(&must(&agents[0], &["port", "list"])?, "name");
        assert!(
            ports.contains(&"vm1".to_string()),
            "vm1 vanished after its host restarted: {ports:?}"
        );
        checks += 1;
    }
    // The restarted host can still manage its port.
    must(&agents[1], &["port", "show", "vm2"])?;
    must(&agents[1], &["port", "delete", "vm2"])?;
    wait_until(Duration::from_secs(10), "vm2 deleted everywhere", || {
        agents.iter().all(|a| {
            a.cli(&["port", "list"])
                .map(|v| !names(&v, "name").contains(&"vm2".to_string()))
                .unwrap_or(false)
        })
    })?;
    println!("restart: ports present in {checks} checks while their host restarted");
    Ok(())
}

/// Commands that must be refused, each with a word of the reason it must give (`mac1`: vm1's MAC,
/// already in use).
fn bad_inputs(mac1: &str) -> Vec<(Vec<&str>, &'static str)> {
    vec![
        (vec!["network", "create", "x", "--vni", "0"], "vni"),
        (vec!["network", "create", "x", "--vni", "16777216"], "vni"),
        (
            vec!["network", "create", "x", "--vni", "100"],
            "already used",
        ),
        (
            vec!["network", "create", "net-a", "--vni", "301"],
            "already exists",
        ),
        (
            vec!["network", "create", "bad name", "--vni", "302"],
            "name",
        ),
        (
            vec!["network", "create", "x", "--vni", "303", "--mtu", "100"],
            "mtu",
        ),
        (
            vec![
                "subnet",
                "create",
                "s",
                "--network",
                "nope",
                "--cidr",
                "10.3.0.0/24",
            ],
            "no network",
        ),
        (
            vec![
                "subnet",
                "create",
                "s",
                "--network",
                "net-d",
                "--cidr",
                "10.3.0.0/33",
            ],
            "prefix",
        ),
        (
            vec![
                "subnet",
                "create",
                "s",
                "--network",
                "net-d",
                "--cidr",
                "10.3.0.1/24",
            ],
            "host bits",
        ),
        (
            vec![
                "subnet",
                "create",
                "s",
                "--network",
                "net-d",
                "--cidr",
                "banana",
            ],
            "cidr",
        ),
        (
            vec![
                "subnet",
                "create",
                "s",
                "--network",
                "net-d",
                "--cidr",
                "10.3.0.0/24",
                "--gateway",
                "10.4.0.1",
            ],
            "gateway",
        ),
        (
            vec![
                "subnet",
                "create",
                "s",
                "--network",
                "net-d",
                "--cidr",
                "10.3.0.0/24",
                "--pool",
                "10.3.0.10-10.3.1.5",
            ],
            "pool",
        ),
        (
            vec![
                "subnet",
                "create",
                "s",
                "--network",
                "net-d",
                "--cidr",
                "10.3.0.0/24",
                "--gateway",
                "10.3.0.1",
                "--pool",
                "10.3.0.1-10.3.0.20",
            ],
            "contains the gateway",
        ),
        (
            vec![
                "subnet",
                "create",
                "sub-a",
                "--network",
                "net-d",
                "--cidr",
                "10.3.0.0/24",
            ],
            "already exists",
        ),
        (
            vec![
                "subnet",
                "create",
                "s",
                "--network",
                "net-a",
                "--cidr",
                "10.1.0.0/25",
            ],
            "overlaps",
        ),
        (
            vec!["router", "add-interface", "r1", "--subnet", "sub-c"],
            "overlaps",
        ),
        (
            vec!["router", "add-interface", "r1", "--subnet", "nope"],
            "no subnet",
        ),
        (
            vec!["router", "add-interface", "r1", "--subnet", "sub-a"],
            "already has",
        ),
        (
            vec!["router", "set-gateway", "r1", "--external-network", "nope"],
            "no external network",
        ),
        (
            vec![
                "router",
                "add-route",
                "r1",
                "--destination",
                "192.0.2.0/24",
                "--nexthop",
                "10.9.9.9",
            ],
            "not on any subnet",
        ),
        (
            vec![
                "router",
                "add-route",
                "r1",
                "--destination",
                "192.0.2.0",
                "--nexthop",
                "10.1.0.9",
            ],
            "cidr",
        ),
        (vec!["router", "delete", "r1"], "interface"),
        (vec!["router", "show", "nope"], "no router"),
        (vec!["router", "set-ha", "r1"], "nothing to change"),
        (
            vec!["router", "set-ha", "r1", "--priority", "n1=300"],
            "not a priority",
        ),
        (
            vec!["router", "set-ha", "r1", "--priority", "n1"],
            "expected node=priority",
        ),
        (
            vec!["router", "set-ha", "r1", "--priority", "Bad_Node=10"],
            "priority",
        ),
        (
            vec!["router", "set-ha", "r1", "--preempt-delay", "2h"],
            "more than one hour",
        ),
        (
            vec!["router", "set-ha", "r1", "--preempt-delay", "5 parsecs"],
            "preempt delay",
        ),
        (
            vec!["router", "set-ha", "nope", "--no-preempt"],
            "no router",
        ),
        (
            vec!["port", "create", "p", "--network", "nope"],
            "no network",
        ),
        (
            vec![
                "port",
                "create",
                "p",
                "--network",
                "net-a",
                "--ip",
                "10.7.0.5",
            ],
            "not in any subnet",
        ),
        (
            vec![
                "port",
                "create",
                "p",
                "--network",
                "net-a",
                "--ip",
                "10.1.0.10",
            ],
            "already in use",
        ),
        (
            vec![
                "port",
                "create",
                "p",
                "--network",
                "net-a",
                "--ip",
                "10.1.0.999",
            ],
            "not an IPv4 address",
        ),
        (
            vec![
                "port",
                "create",
                "p",
                "--network",
                "net-a",
                "--mac",
                "zz:zz:zz:zz:zz:zz",
            ],
            "mac",
        ),
        (
            vec![
                "port",
                "create",
                "p",
                "--network",
                "net-a",
                "--mac",
                "01:00:5e:00:00:01",
            ],
            "multicast",
        ),
        (
            vec!["port", "create", "p", "--network", "net-a", "--mac", mac1],
            "already in use",
        ),
        (
            vec!["port", "create", "p", "--network", "net-d"],
            "no subnet",
        ),
        (
            vec!["port", "create", "vm1", "--network", "net-a"],
            "already exists",
        ),
        (vec!["port", "delete", "vm1"], "hosted on n2"),
        (vec!["port", "list", "--host", "Bad_Host"], "node_id"),
        (
            vec!["fip", "create", "--external-network", "nope"],
            "no external network",
        ),
        (
            vec![
                "fip",
                "create",
                "--external-network",
                "public",
                "--ip",
                "198.51.100.5",
            ],
            "not a usable address",
        ),
        (
            vec![
                "fip",
                "create",
                "--external-network",
                "public",
                "--ip",
                "203.0.113.50",
            ],
            "already in use",
        ),
        (
            vec!["fip", "associate", "203.0.113.50", "--port", "vm2"],
            "already associated",
        ),
        (
            vec!["fip", "associate", "203.0.113.51", "--port", "vm1"],
            "already has floating IP",
        ),
        (
            vec!["fip", "associate", "203.0.113.51", "--port", "vm-b"],
            "no router connects",
        ),
        (vec!["network", "delete", "net-a"], "still has port"),
        (vec!["network", "delete", "net-c"], "still has subnet"),
        (vec!["subnet", "delete", "sub-a"], "still on router"),
        (
            vec!["external-network", "delete", "public"],
            "clear its gateway",
        ),
        (
            vec!["router", "clear-gateway", "r1"],
            "disassociate it first",
        ),
    ]
}
