//! What the harness and its sections share: the run's context, a section's output, and where a
//! section's lab lives.

use std::time::Instant;

use anyhow::Result;

use super::plot::Chart;

/// What a section needs while it runs: the mode and a progress line printer.
pub struct Context {
    /// Short runs.
    pub quick: bool,
    start: Instant,
}

impl Context {
    /// A context whose progress lines count from now.
    pub fn new(quick: bool) -> Context {
        Context {
            quick,
            start: Instant::now(),
        }
    }

    /// Prints a progress line with the time since the harness started.
    pub fn say(&self, s: &str) {
        eprintln!("[{:>6.1}s] {s}", self.start.elapsed().as_secs_f64());
    }

    /// `full` in a full run, `quick` with `--quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// A section's result: its markdown (without the run line) and its charts.
pub struct SectionOut {
    /// The section's markdown, starting with its `##` title.
    pub markdown: String,
    /// Charts, embedded after the markdown.
    pub charts: Vec<Chart>,
}

/// A fresh temporary directory for a section's lab, named after this process so that
/// the harness (`down_labs`) finds it.
pub fn lab_dir(section: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("{}{section}-", lab_prefix()))
        .tempdir()?)
}

/// The start of every lab directory this process makes.
pub fn lab_prefix() -> String {
    format!("dvrmesh-bench-{}-", std::process::id())
}
