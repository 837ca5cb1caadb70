//! VNIs and names are unique cluster-wide even when two nodes create at the same moment: each
//! create claims its values first, and of two concurrent claims the older wins; the other
//! request is refused with a message naming the value. Real agents on loopback (datapath off).

mod common;

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use common::{cluster, pki, wait_until, Agent};

/// Runs one CLI command on each agent at the same moment; returns their results in order.
fn at_once(agents: &[Agent], args: &[Vec<&str>]) -> Vec<Result<Value, String>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .zip(args)
            .map(|(a, args)| s.spawn(move || a.cli(args)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    })
}

/// The networks one agent lists.
fn networks(a: &Agent) -> Vec<Value> {
    a.cli(&["network", "list"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn two_nodes_creating_one_vni_or_one_name_at_once_leave_exactly_one() -> Result<()> {
    let names = ["u1", "u2"];
    let tmp = pki(&names)?;
    let agents = cluster(tmp.path(), &names)?;

    // The same VNI under two names, from two nodes at once.
    let same_vni = at_once(
        &agents,
        &[
            vec!["network", "create", "red", "--vni", "3001"],
            vec!["network", "create", "blue", "--vni", "3001"],
        ],
    );
    // The same name with two VNIs, from two nodes at once.
    let same_name = at_once(
        &agents,
        &[
            vec!["network", "create", "green", "--vni", "3002"],
            vec!["network", "create", "green", "--vni", "3003"],
        ],
    );
    for (what, results) in [("VNI 3001", &same_vni), ("name green", &same_name)] {
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            ok, 1,
            "{what}: want exactly one create to succeed: {results:?}"
        );
        let refused = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("one refused");
        assert!(
            refused.contains(what.split(' ').next().unwrap_or_default())
                || refused.contains("name"),
            "{what}: the refusal does not name the value: {refused}"
        );
    }
    // Both nodes converge on two networks, one per contested value.
    wait_until(
        Duration::from_secs(10),
        "both nodes list two networks",
        || agents.iter().all(|a| networks(a).len() == 2),
    )?;
    let nets = networks(&agents[0]);
    let vni_3001 = nets.iter().filter(|n| n["vni"] == 3001).count();
    let green = nets.iter().filter(|n| n["name"] == "green").count();
    assert_eq!((vni_3001, green), (1, 1), "{nets:?}");

    // Names are per kind: a router may share a network's name, and a second one may not.
    agents[0]
        .cli(&["router", "create", "green"])
        .map_err(anyhow::Error::msg)?;
    let again = agents[1].cli(&["router", "create", "green"]);
    assert!(again.is_err(), "a second router named green was created");
    Ok(())
}
