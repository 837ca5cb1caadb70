//! `dvrmesh-lab bench`: runs the benchmark sections (data plane, failover, datapath programming)
//! in one process, and writes each one's figures, its run conditions and its plots into
//! BENCHMARKS.md (one marked section each; sections not run keep their last figures).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use super::plot::Chart;
use super::report::write_section;
use super::section::Context;

/// The sections, in the order they run: the name `--only` takes and the BENCHMARKS.md section.
pub const SECTIONS: [&str; 7] = [
    "dataplane",
    "control",
    "ipam",
    "failover",
    "datapath",
    "sim",
    "agents",
];

/// What to run and where to write it.
#[derive(Clone, Debug)]
pub struct Options {
    /// Short runs (a few samples each) for CI: the whole harness in under 5 minutes.
    pub quick: bool,
    /// Sections to run (all when empty).
    pub only: Vec<String>,
    /// The report.
    pub out: PathBuf,
    /// Where the plots go (SVG).
    pub plots: PathBuf,
    /// The command line, as the report quotes it.
    pub command: String,
}

/// Runs the selected sections and writes their reports. A failed section is written as failed
/// (with its error) and makes the whole run fail after the others ran.
pub fn run(o: &Options) -> Result<()> {
    for n in &o.only {
        if !SECTIONS.contains(&n.as_str()) {
            bail!("no bench section {n} (sections: {})", SECTIONS.join(", "));
        }
    }
    let ctx = Context::new(o.quick);
    let conditions = conditions();
    write_section(&o.out, "about", ABOUT)?;
    let mut failed = Vec::new();
    for name in SECTIONS
        .iter()
        .filter(|n| o.only.is_empty() || o.only.iter().any(|x| x == *n))
    {
        ctx.say(&format!("== {name}"));
        let started = Instant::now();
        let result = match *name {
            "dataplane" => super::dataplane::run(&ctx),
            "control" => super::control::run(&ctx),
            "ipam" => super::ipam::run_section(&ctx),
            "failover" => super::failover_report::run(&ctx),
            "sim" => super::scale::run_simulated(&ctx),
            "agents" => super::scale::run_agents(&ctx),
            _ => super::programming::run(&ctx),
        };
        let took = started.elapsed().as_secs_f64();
        let run_line = format!(
            "_Measured {} with `{}` ({} run, {}, this section {:.0} s). {conditions}_\n\n",
            utc_now(),
            o.command,
            if o.quick { "quick" } else { "full" },
            BUILD,
            took
        );
        let md = match result {
            Ok(out) => {
                let mut md = insert_after_title(&out.markdown, &run_line);
                md.push_str(&embed_charts(&out.charts, &o.plots, &o.out)?);
                md
            }
            Err(e) => {
                ctx.say(&format!("{name} failed: {e:#}"));
                failed.push(format!("{name}: {e:#}"));
                format!("## {name}\n\n{run_line}**This section failed in this run:** {e:#}\n")
            }
        };
        write_section(&o.out, name, &md)?;
        ctx.say(&format!("wrote section {name} of {}", o.out.display()));
    }
    if !failed.is_empty() {
        bail!("bench sections failed: {}", failed.join("; "));
    }
    Ok(())
}

/// Tears down every lab this process made (on an interrupt: their namespaces and agents).
pub fn down_labs() {
    let prefix = super::section::lab_prefix();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = crate::lab::Lab::down(&e.path());
        }
    }
}

/// How the report is made and what it does not hold yet; written by every run.
/// Which build measured: dvrmesh's own figures (programming, the agents in the labs) depend on it.
const BUILD: &str = if cfg!(debug_assertions) {
    "debug build: dvrmesh unoptimized"
} else {
    "release build"
};

const ABOUT: &str = "## How these figures are made\n\nEvery section below is written by one harness, `dvrmesh-lab bench` (root; it builds and removes its own labs of namespaces on this machine, installs nothing; iperf3 and keepalived come from Debian's packages, `scripts/setup.sh`). `dvrmesh-lab bench` runs every section at full size (about 70 minutes on a 2-core machine); `--quick` runs each with a few samples in under 5 minutes (CI runs it in `scripts/test.sh`, into a temporary file); `--only NAME[,NAME]` runs some (`dataplane`, `control`, `ipam`, `failover`, `datapath`, `sim`, `agents`) and leaves the others' figures as they were. Each section opens with when, on what machine and by which command it was measured; ratios are between figures of the same run. Plots are drawn by the harness (`plotters`, SVG) into `docs/bench/`.\n";

/// `md` with `line` placed after its first line (the title).
fn insert_after_title(md: &str, line: &str) -> String {
    match md.split_once("\n\n") {
        Some((title, rest)) => format!("{title}\n\n{line}{rest}"),
        None => format!("{md}\n\n{line}"),
    }
}

/// Draws the charts and returns the markdown embedding them (paths relative to the report).
fn embed_charts(charts: &[Chart], plots: &Path, out: &Path) -> Result<String> {
    let mut md = String::new();
    for c in charts {
        c.draw(plots)?;
        let file = plots.join(format!("{}.svg", c.file));
        let shown = relative_to_report(&file, out);
        md.push_str(&format!("\n![{}]({})\n", c.title, shown.display()));
    }
    Ok(md)
}

/// `file` relative to the directory of `report` when it lies under it, else absolute.
fn relative_to_report(file: &Path, report: &Path) -> PathBuf {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let base = abs(report)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let f = abs(file);
    f.strip_prefix(&base).map(Path::to_path_buf).unwrap_or(f)
}

/// The machine and its load as the run starts: CPU model and count, memory, kernel, load.
fn conditions() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "Machine: {cpus} × {model}, {mem_gib:.1} GiB, Linux {}; load average at the start {} (the machine is shared: other builds and tests ran beside this one).",
        kernel.trim(),
        load.join(" ")
    )
}

/// The current UTC time, as `date -u` prints it.
fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "an unknown time".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_line_follows_the_title() {
        let md = insert_after_title("## T\n\nbody\n", "_run_\n\n");
        assert_eq!(md, "## T\n\n_run_\n\nbody\n");
    }

    #[test]
    fn plots_under_the_report_are_linked_relatively() {
        let r = relative_to_report(Path::new("/a/docs/bench/x.svg"), Path::new("/a/B.md"));
        assert_eq!(r, PathBuf::from("docs/bench/x.svg"));
        let r = relative_to_report(Path::new("/tmp/x.svg"), Path::new("/a/B.md"));
        assert_eq!(r, PathBuf::from("/tmp/x.svg"));
    }

    #[test]
    fn unknown_sections_are_refused() {
        let o = Options {
            quick: true,
            only: vec!["nope".into()],
            out: PathBuf::from("/nonexistent/B.md"),
            plots: PathBuf::from("/nonexistent"),
            command: String::new(),
        };
        assert!(run(&o).is_err());
    }
}
