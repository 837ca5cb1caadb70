//! Address management in the namespace lab (root): the partition scenario of the IPAM issue —
//! compute-1 cut off from every other node while ports are created on both sides of a /29 —
//! ends, after the heal, with no address held twice and every created port in every view.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use testbed::lab::{wait, Lab};

use common::TestLab;

/// Ports of network `net` in `node`'s view: name → fixed address.
fn ports_of(lab: &Lab, node: &str, net_id: &str) -> Result<BTreeMap<String, String>> {
    let list = lab.cli(node, &["port", "list"])?;
    Ok(list
        .as_array()
        .context("port list is an array")?
        .iter()
        .filter(|p| p["network"].as_str() == Some(net_id))
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["fixed_ips"][0].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

#[test]
fn ports_created_on_both_sides_of_a_partition_hold_distinct_addresses_after_the_heal() -> Result<()>
{
    let mut t = TestLab::new(3, 1)?;
    let lab = t.lab();
    let net: Value = lab.cli("compute-2", &["network", "create", "p29", "--vni", "2900"])?;
    let net_id = net["id"].as_str().context("network id")?.to_string();
    lab.cli(
        "compute-2",
        &[
            "subnet",
            "create",
            "p29-v4",
            "--network",
            "p29",
            "--cidr",
            "10.77.7.0/29",
        ],
    )?;
    wait(Duration::from_secs(10), "the /29 on compute-1", || {
        lab.cli("compute-1", &["subnet", "show", "p29-v4"]).is_ok()
    })?;
    // compute-1 takes one address before the cut: a /29 is handed out one address at a time.
    lab.cli(
        "compute-1",
        &["port", "create", "c1-before", "--network", "p29"],
    )?;
    let others: Vec<String> = ["compute-2", "compute-3", "network-1"]
        .map(String::from)
        .to_vec();
    lab.chaos_partition(&["compute-1".into()], &others, false)?;
    wait(
        Duration::from_secs(20),
        "compute-1 alone in its view",
        || {
            lab.cli("compute-1", &["status"])
                .is_ok_and(|s| s["alive"].as_u64() == Some(1))
        },
    )?;
    let mut created = BTreeSet::from(["c1-before".to_string()]);
    let mut refused = Vec::new();
    for i in 0..3 {
        for node in ["compute-1", "compute-2"] {
            let name = format!("{node}-{i}");
            match lab.cli(node, &["port", "create", &name, "--network", "p29"]) {
                Ok(_) => {
                    created.insert(name);
                }
                Err(e) => refused.push(format!("{name}: {e}")),
            }
        }
    }
    println!("created {created:?}; refused {refused:#?}");
    // A /29 is handed out one address at a time, claimed on demand only: the minority holds no
    // free address, may not claim one, and says why; the majority gets what the pool has left.
    assert!(
        refused
            .iter()
            .filter(|r| r.starts_with("compute-1"))
            .all(|r| r.contains("majority")),
        "{refused:#?}"
    );
    assert!(
        !created.iter().any(|n| n.starts_with("compute-1-")),
        "the minority handed out an address it did not hold: {created:?}"
    );
    assert_eq!(
        created
            .iter()
            .filter(|n| n.starts_with("compute-2-"))
            .count(),
        3,
        "{refused:#?}"
    );
    println!(
        "during the cut: compute-1 sees {:?}, compute-2 sees {:?}",
        ports_of(lab, "compute-1", &net_id)?,
        ports_of(lab, "compute-2", &net_id)?
    );
    lab.chaos_heal_all()?;
    let nodes = ["compute-1", "compute-2", "compute-3", "network-1"];
    wait(Duration::from_secs(30), "every port in every view", || {
        nodes.iter().all(|n| {
            ports_of(lab, n, &net_id)
                .is_ok_and(|p| p.keys().cloned().collect::<BTreeSet<_>>() == created)
        })
    })?;
    for n in nodes {
        let ports = ports_of(lab, n, &net_id)?;
        let addresses: BTreeSet<&String> = ports.values().collect();
        assert_eq!(
            addresses.len(),
            ports.len(),
            "{n} sees an address held twice: {ports:?}"
        );
    }
    Ok(())
}
