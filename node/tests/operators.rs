//! Roles, through the real CLI on two agents: with `[tenancy] writers = "operators"`, tenant
//! configuration counts only when an operator credential (`cert issue --operator`) sealed it.
//! A write without a credential is refused with a clear error; a network a node publishes on its
//! own (here: from an agent left in "any-node" mode) is refused by the operators-only agent and
//! reported; writes sealed through `--credential` are accepted everywhere, whichever agent takes
//! them; ports stay node-writable.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use common::*;
use serde_json::Value;

fn names(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn with_credential<'a>(args: &[&'a str], credential: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--credential", credential]);
    all
}

#[test]
fn only_operator_sealed_configuration_counts_when_the_cluster_says_so() -> Result<()> {
    let tmp = pki(&["n1", "n2"])?;
    let dir = tmp.path();
    let ca = dir.join("ca").to_string_lossy().into_owned();
    let ops_dir = dir.join("ops").to_string_lossy().into_owned();
    ok(&[
        "cert",
        "issue",
        "--ca",
        &ca,
        "--operator",
        "alice",
        "--out",
        &ops_dir,
    ])?;
    let credential = dir.join("ops/operator-alice.pem");
    let credential = credential.to_string_lossy().into_owned();
    // n2 takes configuration only from operators; n1 is left in "any-node" mode to play a node
    // that publishes configuration on its own.
    let agents = cluster_with(dir, &["n1", "n2"], |config: PathBuf| {
        if config.ends_with("n2.toml") {
            let mut text = std::fs::read_to_string(&config).expect("config");
            text.push_str("\n[tenancy]\nwriters = \"operators\"\n");
            std::fs::write(&config, text).expect("config written");
        }
        config
    })?;
    let (n1, n2) = (&agents[0], &agents[1]);

    // No credential: refused by the operators-only agent before anything is claimed.
    let err = n2
        .cli(&["network", "create", "red", "--vni", "100"])
        .expect_err("a write without a credential");
    assert!(err.contains("only from operators"), "{err}");
    assert!(err.contains("--credential"), "{err}");

    // A node-written network (n1 publishes it in its own name) is refused by n2 and reported.
    n1.cli(&["network", "create", "red", "--vni", "100"])
        .map_err(|e| anyhow!("n1 network create: {e}"))?;
    wait_until(Duration::from_secs(10), "n2 reports refusing red", || {
        n2.cli(&["status"]).is_ok_and(|s| {
            s["refused_values"].as_array().is_some_and(|r| {
                r.iter().any(|p| {
                    p.as_str()
                        .is_some_and(|p| p.contains("Network record refused"))
                })
            })
        })
    })?;
    let listed = n2.cli(&["network", "list"]).map_err(anyhow::Error::msg)?;
    assert!(!names(&listed).contains(&"red".to_string()), "{listed}");
    let log = std::fs::read_to_string(dir.join("n2.log"))?;
    assert!(
        log.contains("Network record refused"),
        "n2 logs the refusal"
    );

    // Sealed by alice, through either agent: accepted by both.
    let sealed = |a: &Agent, args: &[&str]| {
        a.cli(&with_credential(args, &credential))
            .map_err(|e| anyhow!("dvrmesh {args:?} --credential: {e}"))
    };
    sealed(n2, &["network", "create", "blue", "--vni", "200"])?;
    // n1 checks the seal of what n2 published, then takes the next sealed write itself.
    wait_until(Duration::from_secs(10), "n1 shows blue", || {
        n1.cli(&["network", "list"])
            .is_ok_and(|v| names(&v).contains(&"blue".to_string()))
    })?;
    sealed(
        n1,
        &[
            "subnet",
            "create",
            "sub-blue",
            "--network",
            "blue",
            "--cidr",
            "10.9.0.0/24",
        ],
    )?;
    sealed(n2, &["router", "create", "r1"])?;
    sealed(
        n2,
        &["router", "add-interface", "r1", "--subnet", "sub-blue"],
    )?;
    // Ports are their host's to write: no credential needed.
    n2.cli(&["port", "create", "vm1", "--network", "blue"])
        .map_err(|e| anyhow!("port create: {e}"))?;
    for a in [n1, n2] {
        wait_until(
            Duration::from_secs(10),
            "both agents show the sealed objects",
            || {
                let nets = a.cli(&["network", "list"]).map(|v| names(&v));
                let routers = a.cli(&["router", "show", "r1"]);
                let ports = a.cli(&["port", "list"]).map(|v| names(&v));
                nets.is_ok_and(|n| n.contains(&"blue".to_string()))
                    && routers
                        .is_ok_and(|r| r["interfaces"].as_array().is_some_and(|i| i.len() == 1))
                    && ports.is_ok_and(|p| p == vec!["vm1".to_string()])
            },
        )?;
    }
    // A deletion is configuration too.
    let err = n2
        .cli(&["router", "delete", "r1"])
        .expect_err("a deletion without a credential");
    assert!(err.contains("only from operators"), "{err}");
    sealed(
        n2,
        &["router", "remove-interface", "r1", "--subnet", "sub-blue"],
    )?;
    sealed(n2, &["router", "delete", "r1"])?;
    wait_until(Duration::from_secs(10), "r1 is gone on n2", || {
        n2.cli(&["router", "list"])
            .is_ok_and(|v| names(&v).is_empty())
    })?;
    Ok(())
}
