//! Multi-process: revoking a node's certificate with `dvrmesh cert revoke` evicts it from every
//! other agent's view within seconds and cuts its connections; the revoked agent cannot start
//! again with that certificate; a new certificate for the same node brings it back.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use serde_json::Value;

/// A configuration with `[tls] crl` pointing at the CA's list (as a configuration-management
/// copy would).
fn with_crl(config: std::path::PathBuf) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(&config).expect("config written");
    // [tls] is the configuration's last table.
    text.push_str("crl = \"ca/crl.pem\"\n");
    std::fs::write(&config, text).expect("config written");
    config
}

fn listed(a: &Agent, node: &str) -> bool {
    states(a).iter().any(|(id, _)| id == node)
}

fn excluded_reason(a: &Agent, node: &str) -> String {
    a.cli(&["status"])
        .ok()
        .and_then(|v| v["excluded"][node].as_str().map(String::from))
        .unwrap_or_default()
}

#[test]
fn a_revoked_node_is_evicted_everywhere_within_seconds() -> Result<()> {
    let tmp = pki(&["n1", "n2", "n3"])?;
    let dir = tmp.path();
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let mut agents = cluster_with(dir, &["n1", "n2", "n3"], with_crl)?;

    // The CLI's contract: unknown nodes are an error that says what to do; revoking records.
    let unknown = dvrmesh(&["cert", "revoke", "--ca", &d("ca"), "--node", "n9"])?;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("--cert FILE"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let revoked_at = Instant::now();
    let out = ok(&["cert", "revoke", "--ca", &d("ca"), "--node", "n3", "--json"])?;
    let v: Value = serde_json::from_str(&out)?;
    assert_eq!(v["serials"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["total"], 1);

    let took = wait_until(Duration::from_secs(10), "n3 gone from n1 and n2", || {
        agents[..2].iter().all(|a| !listed(a, "n3"))
    })?;
    println!("revoked node evicted from every view in {took:?}");
    for a in &agents[..2] {
        let why = excluded_reason(a, "n3");
        assert!(
            why.to_lowercase().contains("revoked"),
            "{}: n3 excluded because {why:?}",
            a.name
        );
    }
    wait_until(Duration::from_secs(15), "n3 sees n1 and n2 no more", || {
        states(&agents[2])
            .iter()
            .all(|(id, st)| id == "n3" || st != "alive")
    })?;
    println!("n3 cut off {:?} after the revocation", revoked_at.elapsed());
    // Revoking again adds nothing.
    let again: Value = serde_json::from_str(&ok(&[
        "cert",
        "revoke",
        "--ca",
        &d("ca"),
        "--node",
        "n3",
        "--json",
    ])?)?;
    assert_eq!(
        again["serials"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );

    // The revoked certificate cannot start an agent.
    agents[2].terminate();
    let cfg = dir.join("n3.toml");
    let refused = std::process::Command::new(BIN)
        .args(["agent", "--config"])
        .arg(&cfg)
        .current_dir(dir)
        .output()
        .context("starting the revoked agent")?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A new certificate for n3 brings it back.
    ok(&[
        "cert",
        "issue",
        "--ca",
        &d("ca"),
        "--node",
        "n3",
        "--out",
        &d("n3-new"),
    ])?;
    let text = std::fs::read_to_string(&cfg)?.replace("\"n3/", "\"n3-new/");
    std::fs::write(&cfg, text)?;
    agents[2] = start(dir, "n3", &cfg)?;
    wait_until(
        Duration::from_secs(15),
        "n3 alive again with a new certificate",
        || {
            agents[..2]
                .iter()
                .all(|a| states(a).iter().any(|(id, st)| id == "n3" && st == "alive"))
        },
    )?;
    Ok(())
}
