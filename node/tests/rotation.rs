//! Certificate rotation without stopping the node, through the real CLI on two agents: a bad
//! new certificate (a key that does not fit) is refused with the reason and the agent goes on
//! with the old one; a good one is taken by `agent reload-cert` in the same process (same PID),
//! the peer accepts the node's new life, the node's port never leaves the peer's view, and the
//! node stays a member after its old certificate is revoked. SIGHUP takes a third one the same
//! way.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use common::*;

/// The generation and state of `node` in `agent`'s member list.
fn life_of(agent: &Agent, node: &str) -> Option<(u64, String)> {
    members(agent).ok()?.iter().find_map(|m| {
        (m["node_id"] == node).then(|| {
            (
                m["generation"].as_u64().unwrap_or(0),
                m["state"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

fn port_names(agent: &Agent) -> Option<Vec<String>> {
    let v = agent.cli(&["port", "list"]).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect(),
    )
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    // Through a rename, as operations.md says, so the agent never reads half a file.
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

#[test]
fn a_node_takes_a_new_certificate_in_place_and_its_peer_keeps_its_port() -> Result<()> {
    let tmp = pki(&["n1", "n2"])?;
    let dir = tmp.path();
    let mut agents = cluster_with(dir, &["n1", "n2"], |config| {
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str("crl = \"ca/crl.pem\"\n");
        std::fs::write(&config, text).expect("config written");
        config
    })?;
    let must = |a: &Agent, args: &[&str]| {
        a.cli(args)
            .map_err(|e| anyhow!("dvrmesh {args:?} failed: {e}"))
    };
    must(&agents[0], &["network", "create", "net-a", "--vni", "100"])?;
    must(
        &agents[0],
        &[
            "subnet",
            "create",
            "sub-a",
            "--network",
            "net-a",
            "--cidr",
            "10.1.0.0/24",
        ],
    )?;
    wait_until(Duration::from_secs(10), "n2 sees sub-a", || {
        agents[1].cli(&["subnet", "show", "sub-a"]).is_ok()
    })?;
    must(&agents[1], &["port", "create", "vm1", "--network", "net-a"])?;
    wait_until(Duration::from_secs(10), "n1 sees vm1", || {
        port_names(&agents[0]).is_some_and(|p| p == vec!["vm1".to_string()])
    })?;
    let (old_generation, _) = life_of(&agents[0], "n2").context("n2 listed by n1")?;
    let pid = agents[1].child.id();

    let ca = dir.join("ca").to_string_lossy().into_owned();
    let fresh = dir.join("n2-2027");
    ok(&[
        "cert",
        "issue",
        "--ca",
        &ca,
        "--node",
        "n2",
        "--out",
        &fresh.to_string_lossy(),
    ])?;
    std::fs::copy(dir.join("n2/node.pem"), dir.join("n2-old.pem"))?;

    // The new certificate with the old key: refused, nothing changes.
    copy(&fresh.join("node.pem"), &dir.join("n2/node.pem"))?;
    let err = agents[1]
        .cli(&["agent", "reload-cert"])
        .expect_err("a certificate whose key is elsewhere");
    assert!(err.contains("does not belong"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(life_of(&agents[0], "n2").map(|l| l.0), Some(old_generation));
    assert!(agents[1].cli(&["status"]).is_ok(), "n2 still answers");

    // With its key: taken in place.
    copy(&fresh.join("node.key"), &dir.join("n2/node.key"))?;
    let took = must(&agents[1], &["agent", "reload-cert"])?;
    assert_eq!(took["reloading"], true, "{took}");
    assert_eq!(took["node_id"], "n2", "{took}");
    let started = Instant::now();
    let mut samples = 0;
    loop {
        let ports = port_names(&agents[0]);
        assert!(
            ports
                .as_ref()
                .is_none_or(|p| p.contains(&"vm1".to_string())),
            "n1 lost vm1 while n2 took its new certificate: {ports:?}"
        );
        samples += 1;
        let life = life_of(&agents[0], "n2");
        if life
            .as_ref()
            .is_some_and(|(g, s)| *g > old_generation && s == "alive")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "n1 never saw n2's new life: {life:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "n1 saw n2's new life {:.2} s after reload-cert; vm1 listed in all {samples} samples",
        started.elapsed().as_secs_f64()
    );
    assert!(
        agents[1].child.try_wait()?.is_none(),
        "n2's process is still the one that was started (pid {pid})"
    );
    wait_until(Duration::from_secs(10), "n2 answers and sees n1", || {
        life_of(&agents[1], "n1").is_some_and(|(_, s)| s == "alive")
    })?;
    assert_eq!(port_names(&agents[1]), Some(vec!["vm1".to_string()]));

    // The old certificate revoked: n2 stays, on its new one.
    ok(&[
        "cert",
        "revoke",
        "--ca",
        &ca,
        "--cert",
        &dir.join("n2-old.pem").to_string_lossy(),
    ])?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        life_of(&agents[0], "n2").map(|l| l.1),
        Some("alive".to_string()),
        "n2 is alive on its new certificate after the old one was revoked"
    );
    assert_eq!(port_names(&agents[0]), Some(vec!["vm1".to_string()]));

    // SIGHUP (systemd's ExecReload) does the same.
    let (second_generation, _) = life_of(&agents[0], "n2").context("n2 listed by n1")?;
    let third = dir.join("n2-2028");
    ok(&[
        "cert",
        "issue",
        "--ca",
        &ca,
        "--node",
        "n2",
        "--out",
        &third.to_string_lossy(),
    ])?;
    copy(&third.join("node.key"), &dir.join("n2/node.key"))?;
    copy(&third.join("node.pem"), &dir.join("n2/node.pem"))?;
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    assert!(hup.success());
    wait_until(Duration::from_secs(20), "n1 sees n2's third life", || {
        life_of(&agents[0], "n2").is_some_and(|(g, s)| g > second_generation && s == "alive")
    })?;
    assert!(
        agents[1].child.try_wait()?.is_none(),
        "same process after SIGHUP"
    );
    assert_eq!(port_names(&agents[0]), Some(vec!["vm1".to_string()]));
    agents[1].terminate();
    Ok(())
}
