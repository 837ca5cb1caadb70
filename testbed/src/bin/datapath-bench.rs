//! `datapath-bench`: time to program one router (3 subnets, 2 FIPs) from nothing, and a cold full
//! reconcile of many routers and ports on one node, with dvrmesh's reconciler and with one
//! `ip`/`bridge`/`nft` process per object (the Neutron agent pattern), side by side in one run.
//! Writes the figures to BENCHMARKS.md. Needs root; everything happens in throwaway namespaces.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use testbed::bench::{run, topology};

#[derive(Parser)]
#[command(about = "Benchmark datapath programming: dvrmesh vs one process per object")]
struct Args {
    /// Routers in the large benchmark (one subnet each, 10 ports per subnet, one FIP each).
    #[arg(long, default_value_t = 1000)]
    routers: u32,
    /// Trials of the one-router benchmark.
    #[arg(long, default_value_t = 20)]
    trials: u32,
    /// Trials of the one-router benchmark for the per-object baseline.
    #[arg(long, default_value_t = 10)]
    baseline_trials: u32,
    /// Skip the per-object baseline of the large benchmark (it takes minutes).
    #[arg(long)]
    skip_large_baseline: bool,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: std::path::PathBuf,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // RUST_LOG=datapath=debug shows where each pass spends its time.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let work = tempfile::tempdir()?;
    let me = mesh_proto::NodeId::new(topology::ME)?;

    eprintln!(
        "== one router, 3 subnets, 2 FIPs, from nothing ({} trials)",
        args.trials
    );
    let small = datapath::plan(&topology::build(1, 3, 1, 2), &me);
    anyhow::ensure!(
        small.problems.is_empty(),
        "plan problems: {:?}",
        small.problems
    );
    let mut ours = Vec::new();
    let mut ops = 0;
    for i in 0..args.trials {
        let r = run::dvrmesh(&small.desired).with_context(|| format!("trial {i}"))?;
        ops = r.ops;
        ours.push(r.cold);
    }
    let mut theirs = Vec::new();
    let mut procs = 0;
    for _ in 0..args.baseline_trials {
        let (d, p) = run::one_process_per_object(&small.desired, work.path())?;
        theirs.push(d);
        procs = p;
    }
    let (ours_min, ours_max) = (
        ours.iter().min().copied().unwrap_or_default(),
        ours.iter().max().copied().unwrap_or_default(),
    );
    let (m_ours, m_theirs) = (run::median(ours), run::median(theirs));
    eprintln!(
        "   dvrmesh {} ({ops} ops) vs per-object {} ({procs} processes)",
        ms(m_ours),
        ms(m_theirs)
    );

    eprintln!(
        "== {} routers / {} ports, cold full reconcile",
        args.routers,
        args.routers * 10
    );
    let built = Instant::now();
    let large = datapath::plan(&topology::build(args.routers, 1, 9, 1), &me);
    eprintln!(
        "   planned in {} : {}",
        ms(built.elapsed()),
        large.desired.counts()
    );
    anyhow::ensure!(
        large.problems.is_empty(),
        "plan problems: {:?}",
        large.problems
    );
    let big = run::dvrmesh(&large.desired)?;
    eprintln!(
        "   dvrmesh: cold {} ({} ops), steady-state pass {}",
        ms(big.cold),
        big.ops,
        ms(big.steady)
    );
    let big_base = if args.skip_large_baseline {
        None
    } else {
        let r = run::one_process_per_object(&large.desired, work.path())?;
        eprintln!("   per-object: {} ({} processes)", ms(r.0), r.1);
        Some(r)
    };

    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str("## Datapath programming (issue 4)\n\n");
    md.push_str("Reproduce (root, 2-core VM; everything happens in throwaway namespaces):\n\n");
    md.push_str("```sh\ncargo run --release -p testbed --bin datapath-bench\n```\n\n");
    md.push_str("dvrmesh = `observe` + `diff` + `apply` of the Linux backend (netlink from a thread inside each namespace, one `nft -f` per namespace). Per-object = the same objects created by one `ip`/`bridge`/`sysctl`/`nft` process each (the Neutron L3 agent pattern), run by `sh` in a private mount and network namespace. Same run, same machine.\n\n");
    md.push_str("| benchmark | dvrmesh | one process per object | ratio | target |\n|---|---|---|---|---|\n");
    md.push_str(&format!(
        "| one router, 3 subnets, 2 FIPs, from nothing (median of {} / {} trials) | **{}** (min {}, max {}; {ops} ops) | {} ({procs} processes) | {:.1}× | ≤ 5 ms |\n",
        args.trials, args.baseline_trials, ms(m_ours), ms(ours_min), ms(ours_max), ms(m_theirs), m_theirs.as_secs_f64() / m_ours.as_secs_f64().max(1e-9)
    ));
    match &big_base {
        Some((d, p)) => md.push_str(&format!(
            "| {} routers / {} ports, cold full reconcile | **{}** ({} ops) | {} ({p} processes) | {:.1}× | ≤ 10 s |\n",
            args.routers, args.routers * 10, ms(big.cold), big.ops, ms(*d), d.as_secs_f64() / big.cold.as_secs_f64().max(1e-9)
        )),
        None => md.push_str(&format!("| {} routers / {} ports, cold full reconcile | **{}** ({} ops) | not run | | ≤ 10 s |\n", args.routers, args.routers * 10, ms(big.cold), big.ops)),
    }
    md.push_str(&format!(
        "| steady-state pass at that scale (observe + diff, nothing to do) | {} | | | |\n\n",
        ms(big.steady)
    ));
    md.push_str(&format!(
        "Objects at the large scale: {}.\n",
        large.desired.counts()
    ));
    std::fs::write(&args.out, md)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
