//! UDP probes written in Rust, so scenarios need neither ping nor iperf: an echo server that
//! answers with the source address it saw, and a client that sends a bounded stream and reports
//! what came back.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The UDP port probe servers listen on.
pub const PORT: u16 = 7777;

/// Serves until `for_secs` elapse: every datagram is answered with "<seq> <source ip>".
pub fn serve(port: u16, for_secs: u64) -> Result<()> {
    let sock = UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("binding UDP {port}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let end = Instant::now() + Duration::from_secs(for_secs);
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let seq = String::from_utf8_lossy(&buf[..n])
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .to_string();
            let _ = sock.send_to(format!("{seq} {}", from.ip()).as_bytes(), from);
        }
    }
    Ok(())
}

/// What a probe run saw.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProbeReport {
    /// Datagrams sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Source addresses the server reported (distinct, in order of first sight).
    pub seen_as: Vec<String>,
    /// Sequence numbers never answered.
    pub lost: Vec<u32>,
    /// Longest run of consecutive lost datagrams, in milliseconds of sending time.
    pub longest_gap_ms: u64,
}

/// Sends `count` datagrams to `to`, one every `interval`, and waits up to `wait` after the last
/// for replies.
pub fn probe(
    to: SocketAddr,
    count: u32,
    interval: Duration,
    wait: Duration,
) -> Result<ProbeReport> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(5)))?;
    let mut got = vec![false; count as usize];
    let mut seen_as: Vec<String> = Vec::new();
    let mut buf = [0u8; 256];
    let mut drain = |got: &mut Vec<bool>, seen_as: &mut Vec<String>| {
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let mut parts = text.split_whitespace();
            if let (Some(seq), Some(src)) = (
                parts.next().and_then(|s| s.parse::<usize>().ok()),
                parts.next(),
            ) {
                if let Some(slot) = got.get_mut(seq) {
                    *slot = true;
                }
                if !seen_as.iter().any(|s| s == src) {
                    seen_as.push(src.to_string());
                }
            }
        }
    };
    let start = Instant::now();
    for seq in 0..count {
        let due = start + interval * seq;
        while Instant::now() < due {
            drain(&mut got, &mut seen_as);
        }
        let _ = sock.send_to(seq.to_string().as_bytes(), to);
    }
    let end = Instant::now() + wait;
    while Instant::now() < end && got.iter().any(|g| !g) {
        drain(&mut got, &mut seen_as);
    }
    let lost: Vec<u32> = got
        .iter()
        .enumerate()
        .filter(|(_, g)| !**g)
        .map(|(i, _)| i as u32)
        .collect();
    let mut longest = 0u32;
    let mut run = 0u32;
    for g in &got {
        run = if *g { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    Ok(ProbeReport {
        sent: count,
        received: count - lost.len() as u32,
        seen_as,
        lost,
        longest_gap_ms: u64::from(longest) * interval.as_millis() as u64,
    })
}

/// A probe server running somewhere in a lab; stopped when dropped.
pub struct ServerGuard(Option<Box<dyn FnOnce() + Send>>);

impl ServerGuard {
    /// A guard that runs `stop` when dropped.
    pub fn new(stop: impl FnOnce() + Send + 'static) -> ServerGuard {
        ServerGuard(Some(Box::new(stop)))
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop();
        }
    }
}
