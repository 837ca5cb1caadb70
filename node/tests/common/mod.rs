//! Helpers for tests that run real `dvrmesh` processes on 127.0.0.1.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_dvrmesh");

/// A running agent; killed when dropped.
pub struct Agent {
    pub name: String,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// The `--api` arguments that reach this agent.
    pub fn api(&self) -> [String; 2] {
        ["--api".into(), self.socket.to_string_lossy().into_owned()]
    }

    /// Runs a dvrmesh command against this agent with `--json`; returns the parsed output or the
    /// error text.
    pub fn cli(&self, args: &[&str]) -> Result<Value, String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(self.api());
        all.push("--json".into());
        let out = Command::new(BIN)
            .args(&all)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON: {e}"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Stops the agent with SIGTERM and waits for it.
    pub fn terminate(&mut self) {
        // SAFETY-free: the `kill` binary sends SIGTERM so the agent shuts down cleanly.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

pub fn dvrmesh(args: &[&str]) -> Result<Output> {
    Command::new(BIN)
        .args(args)
        .output()
        .context("running dvrmesh")
}

pub fn ok(args: &[&str]) -> Result<String> {
    let out = dvrmesh(args)?;
    if !out.status.success() {
        bail!(
            "dvrmesh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port on loopback")
}

pub fn write_config(
    dir: &Path,
    name: &str,
    cert_dir: &str,
    ca_dir: &str,
    port: u16,
    seed: u16,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"node_id = "{name}"
mode = "dvr"
listen = "127.0.0.1:{port}"
seeds = ["127.0.0.1:{seed}"]
tunnel_ip = "127.0.0.1"
snat_priority = 100
api_socket = "{name}.sock"
data_dir = "data-{name}"
gossip_interval_ms = 100
datapath = "off"

[tls]
ca = "{ca_dir}/ca.pem"
cert = "{cert_dir}/node.pem"
key = "{cert_dir}/node.key"
"#
    );
    std::fs::write(&path, text).expect("config written");
    path
}

pub fn start(dir: &Path, name: &str, config: &Path) -> Result<Agent> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let child = Command::new(BIN)
        .args(["agent", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting agent")?;
    Ok(Agent {
        name: name.to_string(),
        socket: dir.join(format!("{name}.sock")),
        config: config.to_path_buf(),
        child,
    })
}

pub fn members(agent: &Agent) -> Result<Vec<Value>> {
    let v = agent.cli(&["members"]).map_err(anyhow::Error::msg)?;
    Ok(v.as_array().context("members --json is an array")?.clone())
}

pub fn states(agent: &Agent) -> Vec<(String, String)> {
    members(agent)
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["node_id"].as_str().unwrap_or("").to_string(),
                        m["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn wait_until(budget: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < budget {
        if f() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} not reached within {budget:?}")
}

/// A CA plus certificates for `names` in a fresh temporary directory.
pub fn pki(names: &[&str]) -> Result<tempfile::TempDir> {
    let tmp = tempfile::tempdir()?;
    let d = |p: &str| tmp.path().join(p).to_string_lossy().into_owned();
    ok(&["ca", "init", "--dir", &d("ca")])?;
    for n in names {
        ok(&[
            "cert",
            "issue",
            "--ca",
            &d("ca"),
            "--node",
            n,
            "--out",
            &d(n),
        ])?;
    }
    Ok(tmp)
}

/// Starts agents `names` (certificates already issued) seeded at the first; waits until every one
/// lists all alive.
pub fn cluster(dir: &Path, names: &[&str]) -> Result<Vec<Agent>> {
    cluster_with(dir, names, |config| config)
}

/// [`cluster`], with each configuration file passed through `tweak` before its agent starts.
pub fn cluster_with(
    dir: &Path,
    names: &[&str],
    tweak: impl Fn(PathBuf) -> PathBuf,
) -> Result<Vec<Agent>> {
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut agents = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let cfg = tweak(write_config(dir, n, n, "ca", ports[i], ports[0]));
        agents.push(start(dir, n, &cfg)?);
    }
    wait_until(
        Duration::from_secs(10),
        "every agent lists all alive",
        || {
            agents.iter().all(|a| {
                let s = states(a);
                s.len() == names.len() && s.iter().all(|(_, st)| st == "alive")
            })
        },
    )?;
    Ok(agents)
}
