//! One iperf3 measurement between two namespaces (TCP Gbit/s, or 64-byte UDP datagrams received
//! per second), bounded in time: what the data-plane, recipe and FIP-count benchmarks share.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// The port iperf3 serves on.
const IPERF_PORT: &str = "5201";

/// One measured path: a client namespace sending to a server namespace's address.
pub struct Case {
    pub name: &'static str,
    pub client: PathBuf,
    pub server: PathBuf,
    pub to: String,
}

/// The samples of one case: TCP Gbit/s and UDP kpackets/s received, one per round.
#[derive(Default)]
pub struct Samples {
    pub tcp: Vec<f64>,
    pub udp: Vec<f64>,
}

/// One iperf3 run of `secs` seconds: TCP Gbit/s, or with `udp` 64-byte datagrams as fast as
/// the client can send, in thousands received per second.
pub fn iperf(c: &Case, secs: u64, udp: bool) -> Result<f64> {
    let pins = Pins::here();
    let mut server = Command::new("nsenter")
        .arg(format!("--net={}", c.server.display()))
        .args(["iperf3", "-s", "-1", "-p", IPERF_PORT])
        .args(pins.server_args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (is iperf3 installed? scripts/setup.sh installs it)")?;
    std::thread::sleep(Duration::from_millis(200));
    let out = client(c, secs, udp, &pins);
    stop(&mut server);
    let json = out?;
    parse(&json, udp).with_context(|| format!("{}: {}", c.name, first_chars(&json)))
}

/// Where the client and the server run: the same CPUs for every case and round, so no figure
/// depends on where the scheduler happened to put them (on two CPUs, whether they share one
/// moves a stream by more than a path's difference). The client takes the first CPU this process
/// may run on, the server the last; with one (or when the list cannot be read) nothing is pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pins {
    client: Option<usize>,
    server: Option<usize>,
}

impl Pins {
    /// The placement on the CPUs this process may use (its affinity mask, so a cpuset is
    /// respected and no CPU is named that iperf3 cannot use).
    pub fn here() -> Self {
        use nix::sched::{sched_getaffinity, CpuSet};
        let allowed: Vec<usize> = sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| {
                (0..CpuSet::count())
                    .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                    .collect()
            })
            .unwrap_or_default();
        Self::on(&allowed)
    }

    /// The placement on the `allowed` CPUs (ascending).
    pub fn on(allowed: &[usize]) -> Self {
        match (allowed.first(), allowed.last()) {
            (Some(&first), Some(&last)) if first != last => Self {
                client: Some(first),
                server: Some(last),
            },
            _ => Self {
                client: None,
                server: None,
            },
        }
    }

    fn server_args(&self) -> Vec<String> {
        self.server
            .map_or(Vec::new(), |c| vec!["-A".into(), c.to_string()])
    }

    fn client_args(&self) -> Vec<String> {
        self.client
            .map_or(Vec::new(), |c| vec!["-A".into(), c.to_string()])
    }

    /// How the report says it.
    pub fn describe(&self) -> String {
        match (self.client, self.server) {
            (Some(c), Some(s)) => {
                format!("every iperf3 client pinned to CPU {c} and every server to CPU {s} (`-A`)")
            }
            _ => "iperf3 not pinned (one CPU, or the allowed CPUs unknown)".into(),
        }
    }
}

fn client(c: &Case, secs: u64, udp: bool, pins: &Pins) -> Result<String> {
    let secs_s = secs.to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        &c.to,
        "-p",
        IPERF_PORT,
        "-t",
        &secs_s,
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if udp {
        args.extend(["-u", "-b", "0", "-l", "64"]);
    }
    let child = Command::new("nsenter")
        .arg(format!("--net={}", c.client.display()))
        .args(&args)
        .args(pins.client_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -c")?;
    wait_bounded(child, Duration::from_secs(secs + 15))
}

/// The child's stdout once it exits; killed (and an error) after `budget`.
fn wait_bounded(mut child: Child, budget: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            let out = child.wait_with_output()?;
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if start.elapsed() > budget {
            stop(&mut child);
            bail!("iperf3 did not finish within {budget:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn first_chars(s: &str) -> String {
    s.chars().take(300).collect()
}

/// TCP: the receiver's Gbit/s. UDP: datagrams received per second, in thousands.
fn parse(json: &str, udp: bool) -> Result<f64> {
    let v: Value = serde_json::from_str(json).context("iperf3 printed no JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    if udp {
        let s = &end["sum"];
        let sent = s["packets"].as_f64().context("no end.sum.packets")?;
        let lost = s["lost_packets"]
            .as_f64()
            .context("no end.sum.lost_packets")?;
        let secs = s["seconds"]
            .as_f64()
            .filter(|x| *x > 0.0)
            .context("no seconds")?;
        Ok((sent - lost).max(0.0) / secs / 1000.0)
    } else {
        let bps = end["sum_received"]["bits_per_second"]
            .as_f64()
            .context("no end.sum_received.bits_per_second")?;
        Ok(bps / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_get_cpus_of_their_own_when_there_are_two() {
        let two = Pins::on(&[0, 1]);
        assert_eq!(two.client_args(), ["-A", "0"]);
        assert_eq!(two.server_args(), ["-A", "1"]);
        let cpuset = Pins::on(&[2, 3, 6]);
        assert_eq!(cpuset.client_args(), ["-A", "2"]);
        assert_eq!(cpuset.server_args(), ["-A", "6"]);
        for one in [Pins::on(&[3]), Pins::on(&[])] {
            assert!(one.client_args().is_empty() && one.server_args().is_empty());
        }
        assert!(two.describe().contains("client pinned to CPU 0"));
    }

    #[test]
    fn iperf_json_is_read_for_tcp_and_udp() {
        let tcp = r#"{"end":{"sum_received":{"bits_per_second":9.5e9}}}"#;
        assert!((parse(tcp, false).unwrap() - 9.5).abs() < 1e-9);
        let udp = r#"{"end":{"sum":{"packets":1000,"lost_packets":200,"seconds":2.0}}}"#;
        assert!((parse(udp, true).unwrap() - 0.4).abs() < 1e-9);
        assert!(parse(r#"{"error":"unable to connect"}"#, false).is_err());
        assert!(parse("not json", false).is_err());
        assert!(parse(r#"{"end":{}}"#, true).is_err());
    }
}
