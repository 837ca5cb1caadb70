//! Port creation latency through the agent's API, in one lab and one run: ports from the node's
//! blocks (the first one in a fresh subnet, which claims the blocks; then one at a time; then
//! 100 at once on one node) against ports with an explicit address, which still claim their value
//! and wait the claim window (what every port paid before blocks).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use dvrmesh_node::tenant::ops::ConfigRequest;

use super::failover::summary;
use super::section::{Context, SectionOut};
use crate::lab::spec::LabSpec;
use crate::lab::Lab;

/// What one run measured, in microseconds.
#[derive(Debug, Default)]
pub struct IpamFigures {
    /// The first port of a fresh subnet on a node (claims an address and a MAC block).
    pub first_port_us: u64,
    /// Ports one at a time from the node's blocks.
    pub sequential_us: Vec<u64>,
    /// Each of 100 ports created at once on one node.
    pub concurrent_us: Vec<u64>,
    /// The 100 at once, first request to last answer.
    pub concurrent_total_us: u64,
    /// Ports with an explicit address (a claim per value), one at a time.
    pub claimed_us: Vec<u64>,
}

/// How many ports each part creates.
#[derive(Clone, Copy, Debug)]
pub struct IpamRounds {
    /// One at a time from blocks.
    pub sequential: usize,
    /// At once on one node.
    pub concurrent: usize,
    /// One at a time with an explicit address.
    pub claimed: usize,
    /// Idle time between the parts (the node refills its blocks ahead of need meanwhile).
    pub pause: std::time::Duration,
}

fn port(name: String, ip: Option<String>) -> ConfigRequest {
    ConfigRequest::PortCreate {
        name,
        network: "ipam-bench".into(),
        ip,
        mac: None,
        device: None,
        metadata: Default::default(),
    }
}

/// One API call, timed.
async fn timed(api: &Path, req: ConfigRequest) -> Result<u64> {
    let t = Instant::now();
    dvrmesh_node::api::call(api, &req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(t.elapsed().as_micros() as u64)
}

/// Runs the parts on `node` of `lab` (a network `ipam-bench` with a /20 is created).
pub fn run(lab: &Lab, node: &str, rounds: IpamRounds) -> Result<IpamFigures> {
    lab.cli(node, &["network", "create", "ipam-bench", "--vni", "3900"])?;
    lab.cli(
        node,
        &[
            "subnet",
            "create",
            "ipam-bench-v4",
            "--network",
            "ipam-bench",
            "--cidr",
            "10.90.0.0/20",
            // The explicit-address part asks for 10.90.15.x: outside the pool, so no block (blocks
            // are carved anywhere in the pool) can have handed it out first.
            "--pool",
            "10.90.0.2-10.90.14.254",
        ],
    )?;
    let api = lab.api(node);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut f = IpamFigures {
            first_port_us: timed(&api, port("first".into(), None)).await?,
            ..IpamFigures::default()
        };
        for i in 0..rounds.sequential {
            f.sequential_us
                .push(timed(&api, port(format!("seq-{i}"), None)).await?);
        }
        tokio::time::sleep(rounds.pause).await;
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..rounds.concurrent {
            let api = api.clone();
            set.spawn(async move { timed(&api, port(format!("burst-{i}"), None)).await });
        }
        while let Some(r) = set.join_next().await {
            f.concurrent_us.push(r.context("a create task")??);
        }
        f.concurrent_total_us = started.elapsed().as_micros() as u64;
        tokio::time::sleep(rounds.pause).await;
        for i in 0..rounds.claimed {
            // 10.90.15.x lies outside the pool (see the subnet above): claimed value by value.
            let ip = format!("10.90.15.{}", 10 + i);
            f.claimed_us
                .push(timed(&api, port(format!("claimed-{i}"), Some(ip))).await?);
        }
        Ok::<_, anyhow::Error>(f)
    })
}

/// A create that took this long waited for a block claim (half the lab's claim window).
const WAITED_US: u64 = 400_000;

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The harness's `ipam` section: the parts on compute-1 of a lab of 2 compute nodes and 1 network
/// node (fewer ports with `--quick`).
pub fn run_section(ctx: &Context) -> Result<SectionOut> {
    let dir = super::section::lab_dir("ipam")?;
    let rounds = IpamRounds {
        sequential: ctx.pick(200, 40),
        concurrent: ctx.pick(100, 100),
        claimed: ctx.pick(20, 3),
        pause: Duration::from_secs(3),
    };
    let result = (|| {
        let lab = Lab::up(dir.path(), &LabSpec::sized(2, 1), &mut |s| ctx.say(s))?;
        ctx.say("creating ports on compute-1");
        run(&lab, "compute-1", rounds)
    })();
    let _ = Lab::down(dir.path());
    Ok(SectionOut {
        markdown: report(&result?)?,
        charts: Vec::new(),
    })
}

/// The report section: medians, p99 and the ratio of the claimed way to blocks.
pub fn report(f: &IpamFigures) -> Result<String> {
    if f.sequential_us.is_empty() || f.claimed_us.is_empty() || f.concurrent_us.is_empty() {
        bail!("an empty part: nothing to report");
    }
    let (s50, s99, smax) = summary(&f.sequential_us);
    let (c50, c99, cmax) = summary(&f.concurrent_us);
    let (k50, k99, kmax) = summary(&f.claimed_us);
    let mut out = String::new();
    out.push_str("## Port creation (IPAM)\n\n");
    out.push_str(
        "Port create through the agent's API on one node of a 3-node namespace lab \
         (datapath on), a /20 subnet; \"address known\" = the API answered with the port; \
         the parts run in this order with an idle pause between them. Measured in one run.\n\n",
    );
    out.push_str("| how | n | p50 | p99 | max |\n|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| first port of a fresh subnet (claims an address block and a MAC block) | 1 | {} | | |\n",
        ms(f.first_port_us)
    ));
    for (what, n, (a, b, c)) in [
        (
            "from the node's blocks, one at a time",
            f.sequential_us.len(),
            (s50, s99, smax),
        ),
        (
            "from the node's blocks, 100 at once on one node (each request)",
            f.concurrent_us.len(),
            (c50, c99, cmax),
        ),
        (
            "explicit address: a claim per value, one at a time (every port before blocks)",
            f.claimed_us.len(),
            (k50, k99, kmax),
        ),
    ] {
        out.push_str(&format!(
            "| {what} | {n} | {} | {} | {} |\n",
            ms(a),
            ms(b),
            ms(c)
        ));
    }
    // The two kinds of create, told apart by latency (the distribution is bimodal: a create
    // that waits for a new block waits at least one claim window, 800 ms in the lab).
    for (what, sample) in [
        ("one at a time", &f.sequential_us),
        ("100 at once", &f.concurrent_us),
    ] {
        let (held, waited): (Vec<u64>, Vec<u64>) = sample.iter().partition(|us| **us < WAITED_US);
        let (h50, h99, _) = summary(&held);
        let (w50, _, wmax) = summary(&waited);
        out.push_str(&format!(
            "| {what}, served while the node held a free value (< {}): {} of {} | {} | {} | {} | |\n",
            ms(WAITED_US),
            held.len(),
            sample.len(),
            held.len(),
            ms(h50),
            ms(h99),
        ));
        if !waited.is_empty() {
            out.push_str(&format!(
                "| {what}, waited for a new block: {} of {} | {} | {} | | {} |\n",
                waited.len(),
                sample.len(),
                waited.len(),
                ms(w50),
                ms(wmax)
            ));
        }
    }
    out.push_str(&format!(
        "\n100 at once finished in {}. One at a time, blocks are {:.0}× faster than a claim per \
         value (p50).\n",
        ms(f.concurrent_total_us),
        k50 as f64 / s50.max(1) as f64
    ));
    Ok(out)
}
