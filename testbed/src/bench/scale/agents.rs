//! Real `dvrmesh agent` processes on loopback with the datapath off: a cluster started with
//! certificates from the CLI, and what each process costs (CPU, resident memory, gossip bytes,
//! view builds) read from `/proc` and from each agent's API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use dvrmesh_node::api::Request;
use serde_json::Value;

use crate::lab::cli_ok;

/// A running cluster of agents; dropping it kills them and removes their files.
pub struct Cluster {
    /// Their certificates, configurations, logs, sockets and data.
    dir: Option<tempfile::TempDir>,
    /// The agents, in start order (the first three are everyone's seeds).
    pub agents: Vec<Agent>,
}

/// One agent process.
pub struct Agent {
    /// Node id.
    pub name: String,
    /// API socket.
    pub api: PathBuf,
    child: Child,
}

impl Agent {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let _ = a.child.kill();
        }
        for a in &mut self.agents {
            let _ = a.child.wait();
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            let kept = self.dir.take().map(|d| d.keep());
            eprintln!("{KEEP_ENV}: the agents' files kept in {kept:?}");
        }
    }
}

/// Set to keep the agents' files (configurations, logs) after the run.
const KEEP_ENV: &str = "DVRMESH_BENCH_KEEP";

/// How many agents everyone seeds from.
const SEEDS: usize = 3;

impl Cluster {
    /// Issues certificates for `n` agents named `{prefix}-{i}` and starts them on loopback
    /// (datapath off, the default gossip interval), seeded at the first three.
    pub fn start(n: usize, prefix: &str, dvrmesh: &Path) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&super::super::section::lab_prefix())
            .tempdir()?;
        let d = dir.path();
        let path = |p: &str| d.join(p).to_string_lossy().into_owned();
        cli_ok(dvrmesh, &["ca", "init", "--dir", &path("ca")])?;
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        for name in &names {
            let out = path(name);
            cli_ok(
                dvrmesh,
                &[
                    "cert",
                    "issue",
                    "--ca",
                    &path("ca"),
                    "--node",
                    name,
                    "--out",
                    &out,
                ],
            )?;
        }
        let ports: Vec<u16> = (0..n).map(|_| free_udp_port()).collect::<Result<_>>()?;
        let seeds: Vec<String> = ports
            .iter()
            .take(SEEDS)
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let mut agents = Vec::with_capacity(n);
        for (name, port) in names.iter().zip(&ports) {
            let config = d.join(format!("{name}.toml"));
            std::fs::write(&config, config_text(name, *port, &seeds.join(", ")))?;
            let log = std::fs::File::create(d.join(format!("{name}.log")))?;
            let child = Command::new(dvrmesh)
                .args(["agent", "--config"])
                .arg(&config)
                .current_dir(d)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting agent {name}"))?;
            agents.push(Agent {
                name: name.clone(),
                api: d.join(format!("{name}.sock")),
                child,
            });
        }
        Ok(Cluster {
            dir: Some(dir),
            agents,
        })
    }

    /// Waits until every agent lists every agent alive; the time from the call.
    pub async fn converge(&mut self, budget: Duration) -> Result<Duration> {
        let started = Instant::now();
        let n = self.agents.len();
        let mut waiting: Vec<usize> = (0..n).collect();
        while !waiting.is_empty() {
            self.check_running()?;
            let mut still = Vec::new();
            for &i in &waiting {
                if alive_count(&self.agents[i].api).await != Some(n) {
                    still.push(i);
                }
            }
            waiting = still;
            if started.elapsed() > budget {
                bail!(
                    "{} of {n} agents did not list all {n} alive within {budget:?} (first: {})",
                    waiting.len(),
                    waiting
                        .first()
                        .map_or("-", |i| self.agents[*i].name.as_str())
                );
            }
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(started.elapsed())
    }

    /// Fails when an agent exited (its log says why).
    pub fn check_running(&mut self) -> Result<()> {
        for a in &mut self.agents {
            if let Some(status) = a.child.try_wait()? {
                bail!("agent {} exited ({status}) during the run", a.name);
            }
        }
        Ok(())
    }

    /// Every agent's counters now.
    pub async fn sample(&self) -> Result<Vec<Sample>> {
        let mut out = Vec::with_capacity(self.agents.len());
        for a in &self.agents {
            out.push(Sample::of(a).await?);
        }
        Ok(out)
    }
}

fn config_text(name: &str, port: u16, seeds: &str) -> String {
    format!(
        "node_id = \"{name}\"\nmode = \"dvr\"\nlisten = \"127.0.0.1:{port}\"\nseeds = [{seeds}]\n\
         tunnel_ip = \"127.0.0.1\"\nsnat_priority = 100\napi_socket = \"{name}.sock\"\n\
         data_dir = \"data-{name}\"\ndatapath = \"off\"\n\n[tls]\nca = \"ca/ca.pem\"\n\
         cert = \"{name}/node.pem\"\nkey = \"{name}/node.key\"\n"
    )
}

fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How many members `api`'s agent lists alive (`None` while it does not answer).
async fn alive_count(api: &Path) -> Option<usize> {
    let v = dvrmesh_node::api::call(api, &Request::Members).await.ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter(|m| m["state"] == "alive")
            .count(),
    )
}

/// One agent's counters at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// CPU time used (user + system), clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Gossip bytes sent and received.
    pub bytes_out: u64,
    /// …
    pub bytes_in: u64,
    /// Views built and their total time (µs), and wake-ups that built nothing.
    pub builds: u64,
    /// …
    pub build_micros: u64,
    /// …
    pub last_build_micros: u64,
    /// …
    pub skipped: u64,
    /// Builds that merged every tenant value again, and the last one's time (µs).
    pub full_merges: u64,
    /// …
    pub last_full_merge_micros: u64,
    /// When it was taken.
    pub at: Option<Instant>,
}

impl Sample {
    async fn of(a: &Agent) -> Result<Sample> {
        let status = dvrmesh_node::api::call(&a.api, &Request::Status)
            .await
            .map_err(|e| anyhow!("status of {}: {e}", a.name))?;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let (t, b) = (&status["transport"], &status["view_builds"]);
        Ok(Sample {
            cpu_ticks: cpu_ticks(a.pid())?,
            rss_kib: rss_kib(a.pid())?,
            bytes_out: n(&t["bytes_sent"]),
            bytes_in: n(&t["bytes_received"]),
            builds: n(&b["builds"]),
            build_micros: n(&b["build_micros_total"]),
            last_build_micros: n(&b["last_build_micros"]),
            skipped: n(&b["skipped"]),
            full_merges: n(&b["full_merges"]),
            last_full_merge_micros: n(&b["last_full_merge_micros"]),
            at: Some(Instant::now()),
        })
    }
}

/// What one agent did between two samples.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    /// CPU, percent of one core.
    pub cpu_percent: f64,
    /// Gossip bytes sent per second.
    pub bytes_out_s: f64,
    /// Gossip bytes received per second.
    pub bytes_in_s: f64,
    /// Views built per second.
    pub builds_s: f64,
    /// Mean build time in the window, ms (0 without builds).
    pub mean_build_ms: f64,
}

impl Rates {
    /// The rates between `a` and a later `b` of the same agent.
    pub fn between(a: &Sample, b: &Sample, clock_ticks: f64) -> Rates {
        let secs = match (a.at, b.at) {
            (Some(x), Some(y)) => y.duration_since(x).as_secs_f64().max(1e-3),
            _ => 1.0,
        };
        let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
        let builds = d(a.builds, b.builds);
        Rates {
            cpu_percent: d(a.cpu_ticks, b.cpu_ticks) / clock_ticks / secs * 100.0,
            bytes_out_s: d(a.bytes_out, b.bytes_out) / secs,
            bytes_in_s: d(a.bytes_in, b.bytes_in) / secs,
            builds_s: builds / secs,
            mean_build_ms: if builds > 0.0 {
                d(a.build_micros, b.build_micros) / builds / 1000.0
            } else {
                0.0
            },
        }
    }
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat`, fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat has no command field"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/stat: field {} unreadable", i + 3))
    };
    // After the name: state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    Ok(field(11)? + field(12)?)
}

/// Resident memory of a process, KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("/proc/{pid}/status has no VmRSS"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot say).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_resident_memory() {
        let me = std::process::id();
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(rss_kib(me).unwrap() > 0);
        // 50 ms spinning is at least a tick or two at 100 Hz.
        assert!(cpu_ticks(me).unwrap() > 0);
        assert!(clock_ticks() >= 100.0);
    }

    #[test]
    fn rates_divide_by_the_window() {
        let t = Instant::now();
        let a = Sample {
            at: Some(t),
            ..Sample::default()
        };
        let b = Sample {
            cpu_ticks: 50,
            bytes_out: 2_000,
            builds: 4,
            build_micros: 8_000,
            at: Some(t + Duration::from_secs(2)),
            ..Sample::default()
        };
        let r = Rates::between(&a, &b, 100.0);
        assert!((r.cpu_percent - 25.0).abs() < 1e-9);
        assert!((r.bytes_out_s - 1_000.0).abs() < 1e-9);
        assert!((r.builds_s - 2.0).abs() < 1e-9);
        assert!((r.mean_build_ms - 2.0).abs() < 1e-9);
    }
}
