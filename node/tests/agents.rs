//! Multi-process: real `dvrmesh agent` processes on 127.0.0.1 with certificates made by the CLI.
//!
//! Three agents list each other alive within 5 s; an agent whose certificate comes from another CA
//! never appears in any member list; an agent whose configuration claims a node id its certificate
//! does not carry is refused at start; a killed agent is marked dead by the others.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use serde_json::Value;

#[test]
fn three_agents_form_a_cluster_and_keep_strangers_out() -> Result<()> {
    let tmp = pki(&["n1", "n2", "n3", "n4"])?;
    let dir = tmp.path();
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    ok(&["ca", "init", "--dir", &d("other-ca")])?;
    ok(&[
        "cert",
        "issue",
        "--ca",
        &d("other-ca"),
        "--node",
        "rogue",
        "--out",
        &d("rogue"),
    ])?;

    // The CLI's contract: exact file names, private keys unreadable by others.
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca/ca.pem", "ca/ca.key", "n1/node.pem", "n1/node.key"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::metadata(dir.join("n1/node.key"))?
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Issuing twice refuses to overwrite.
    assert!(!dvrmesh(&[
        "cert",
        "issue",
        "--ca",
        &d("ca"),
        "--node",
        "n1",
        "--out",
        &d("n1")
    ])?
    .status
    .success());

    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let seed = ports[0];
    let mut agents = Vec::new();
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        let cfg = write_config(dir, n, n, "ca", ports[i], seed);
        agents.push(start(dir, n, &cfg)?);
    }
    let all_alive = |a: &Agent| {
        let s = states(a);
        s.len() == 3 && s.iter().all(|(_, st)| st == "alive")
    };
    let took = wait_until(
        Duration::from_secs(5),
        "all three agents alive in every member list",
        || agents.iter().all(all_alive),
    )?;
    println!("three agents listed each other alive after {took:?}");

    // The member objects carry the documented fields.
    let m = members(&agents[0])?;
    for key in ["node_id", "mode", "tunnel_ip", "state", "snat_priority"] {
        assert!(m[0].get(key).is_some(), "members --json lacks {key}");
    }
    // --config finds the socket, and so does DVRMESH_API.
    let cfg1 = dir.join("n1.toml");
    let via_config = ok(&[
        "--config",
        cfg1.to_str().context("path")?,
        "members",
        "--json",
    ])?;
    assert_eq!(
        serde_json::from_str::<Value>(&via_config)?
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let env_out = Command::new(BIN)
        .args(["members", "--json"])
        .env("DVRMESH_API", &agents[1].socket)
        .output()?;
    assert!(env_out.status.success());

    // A stranger with a certificate from another CA, seeded at n1.
    let rogue_cfg = write_config(dir, "rogue", "rogue", "other-ca", ports[3], seed);
    let rogue = start(dir, "rogue", &rogue_cfg)?;
    // An agent whose config claims n5 while its certificate says n4 is refused at start.
    let liar_cfg = write_config(dir, "n5", "n4", "ca", ports[4], seed);
    let liar = Command::new(BIN)
        .args(["agent", "--config"])
        .arg(&liar_cfg)
        .output()?;
    assert!(
        !liar.status.success(),
        "an agent with a mismatched node id must not start"
    );
    let err = String::from_utf8_lossy(&liar.stderr);
    assert!(
        err.contains("does not match the certificate"),
        "unexpected error: {err}"
    );

    // For three seconds, nobody ever lists the stranger (or n5).
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        for a in &agents {
            for (id, _) in states(a) {
                assert!(id != "rogue" && id != "n5", "{} lists {id}", a.name);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rogue_sees: Vec<String> = states(&rogue).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        rogue_sees,
        vec!["rogue".to_string()],
        "the stranger must not learn of the cluster"
    );
    let status: Value = serde_json::from_str(&ok(&[
        "status",
        "--json",
        "--api",
        agents[0].socket.to_str().context("path")?,
    ])?)?;
    assert!(
        status["transport"]["handshake_failures"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "n1 should have refused the stranger's handshakes: {status}"
    );

    // Kill n3: the others mark it dead.
    let mut n3 = agents.pop().context("n3")?;
    n3.child.kill()?;
    let _ = n3.child.wait();
    let took = wait_until(
        Duration::from_secs(10),
        "n3 marked dead by n1 and n2",
        || {
            agents
                .iter()
                .all(|a| states(a).iter().any(|(id, st)| id == "n3" && st == "dead"))
        },
    )?;
    println!("a killed agent was marked dead after {took:?}");
    assert!(agents
        .iter()
        .all(|a| states(a).iter().filter(|(_, st)| st == "alive").count() == 2));
    drop(rogue);
    Ok(())
}

#[test]
fn the_cli_explains_itself_and_rejects_bad_input() -> Result<()> {
    let help = ok(&["--help"])?;
    for cmd in ["ca", "cert", "agent", "members", "status"] {
        assert!(help.contains(cmd), "--help lacks {cmd}");
    }
    // --api is accepted after the subcommand too; with no agent there, a clear error.
    let out = dvrmesh(&["members", "--api", "/nonexistent/dvrmesh.sock"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent"));
    // No socket given at all.
    let out = Command::new(BIN)
        .arg("members")
        .env_remove("DVRMESH_API")
        .output()?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api"));
    // A bad node id.
    let tmp = tempfile::tempdir()?;
    let d = |p: &str| tmp.path().join(p).to_string_lossy().into_owned();
    ok(&["ca", "init", "--dir", &d("ca")])?;
    let out = dvrmesh(&[
        "cert",
        "issue",
        "--ca",
        &d("ca"),
        "--node",
        "Bad_Name",
        "--out",
        &d("x"),
    ])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_id"));
    // A config with an unknown key names it.
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "node_id = \"a\"\nmode = \"dvr\"\nbogus = 1\n")?;
    let out = dvrmesh(&["agent", "--config", cfg.to_str().context("path")?])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bogus: unknown key") && err.contains("listen: missing"),
        "{err}"
    );
    Ok(())
}
