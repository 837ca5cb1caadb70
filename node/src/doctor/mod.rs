//! `dvrmesh doctor`: the preflight of a node. Each check explains one thing the agent needs —
//! kernel features ([`kernel`]), host interfaces ([`host`]), configuration and certificates
//! ([`files`]), the API socket, the gossip port and the clock ([`services`]) — with a verdict
//! and, when not ok, a one-line fix. Nothing here changes the host: kernel features are probed
//! inside a throwaway namespace that is removed afterwards (also on error or panic).
//!
//! This module holds the types and the pure aggregation; each group is one file.

pub mod files;
pub mod host;
pub mod kernel;
pub mod services;

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{Config, DatapathMode};

/// How one check went. Ordered from best to worst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The node has what it needs.
    #[default]
    Ok,
    /// The agent can run, but something is degraded or could not be checked.
    Warn,
    /// The agent cannot do its job until this is fixed.
    Fail,
}

impl Verdict {
    /// The word printed for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// Which part of the node a check looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Kernel features, probed in a throwaway namespace.
    Kernel,
    /// The host's interfaces.
    Host,
    /// The configuration file and the TLS material.
    Files,
    /// The API socket, the gossip port, the clock.
    Services,
}

impl Group {
    /// The word printed for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Group::Kernel => "kernel",
            Group::Host => "host",
            Group::Files => "files",
            Group::Services => "services",
        }
    }
}

/// One check: what was looked at, the verdict, what was found, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id, e.g. `kernel.vxlan`.
    pub id: String,
    /// Its group.
    pub group: Group,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found, one line.
    pub detail: String,
    /// One line that fixes it (none when ok).
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn ok(group: Group, id: &str, detail: impl Into<String>) -> Check {
        Check::new(group, id, Verdict::Ok, detail, None::<String>)
    }

    /// A warning with its fix.
    pub fn warn(
        group: Group,
        id: &str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(group, id, Verdict::Warn, detail, Some(fix))
    }

    /// A failure with its fix.
    pub fn fail(
        group: Group,
        id: &str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(group, id, Verdict::Fail, detail, Some(fix))
    }

    fn new(
        group: Group,
        id: &str,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: Option<impl Into<String>>,
    ) -> Check {
        Check {
            id: format!("{}.{id}", group.as_str()),
            group,
            verdict,
            detail: one_line(&detail.into()),
            fix: fix.map(|f| one_line(&f.into())),
        }
    }
}

/// Multi-line text (a configuration's problems) as one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every check of one run, in the order they ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The worst verdict of all checks (ok when there are none).
    pub verdict: Verdict,
    /// How many checks had each verdict.
    pub counts: Counts,
    /// The checks.
    pub checks: Vec<Check>,
}

/// How many checks had each verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Passed.
    pub ok: usize,
    /// Warnings.
    pub warn: usize,
    /// Failures.
    pub fail: usize,
}

impl Report {
    /// A report of `checks`, with its worst verdict and counts.
    pub fn new(checks: Vec<Check>) -> Report {
        let mut counts = Counts::default();
        for c in &checks {
            match c.verdict {
                Verdict::Ok => counts.ok += 1,
                Verdict::Warn => counts.warn += 1,
                Verdict::Fail => counts.fail += 1,
            }
        }
        let verdict = checks
            .iter()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(Verdict::Ok);
        Report {
            verdict,
            counts,
            checks,
        }
    }

    /// Whether any check failed (the command then exits non-zero).
    pub fn failed(&self) -> bool {
        self.verdict == Verdict::Fail
    }
}

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The agent's configuration file; without it only the kernel and the clock are checked.
    pub config: Option<PathBuf>,
    /// The API socket, when not the configuration's.
    pub api: Option<PathBuf>,
}

/// What every group reads: the configuration (if it loaded), the privileges, and the running
/// agent's answer (if one answers).
pub struct Ctx {
    /// The loaded configuration.
    pub config: Option<Config>,
    /// Whether this process may create namespaces and program them.
    pub privileged: Privileges,
    /// The API socket to ask.
    pub api: Option<PathBuf>,
    /// The running agent's `status`, if it answered.
    pub agent: Option<serde_json::Value>,
}

/// Runs every check.
pub fn run(opts: &Options) -> Report {
    let mut checks = Vec::new();
    let config = match &opts.config {
        None => {
            checks.push(files::no_config());
            None
        }
        Some(path) => {
            let (check, config) = files::config_check(path);
            checks.push(check);
            config
        }
    };
    let api = opts
        .api
        .clone()
        .or_else(|| config.as_ref().map(|c| c.api_socket.clone()));
    let agent = api.as_deref().and_then(services::ask_status);
    let ctx = Ctx {
        config,
        privileged: Privileges::of_this_process(),
        api,
        agent,
    };
    let mut kernel = kernel::checks(&ctx);
    if ctx
        .config
        .as_ref()
        .is_some_and(|c| c.datapath == DatapathMode::Off)
    {
        soften(&mut kernel, "the configuration has datapath = \"off\"");
    }
    checks.extend(kernel);
    if let Some(config) = &ctx.config {
        checks.extend(host::checks(config));
        checks.extend(files::cert_checks(config));
    }
    checks.extend(services::checks(&ctx));
    Report::new(checks)
}

/// Failures that do not stop this agent (e.g. kernel features when it does not program the
/// kernel) become warnings, saying why.
pub fn soften(checks: &mut [Check], why: &str) {
    for c in checks.iter_mut().filter(|c| c.verdict == Verdict::Fail) {
        c.verdict = Verdict::Warn;
        c.detail = format!("{} (not needed: {why})", c.detail);
    }
}

// === privileges ===

/// What this process may do to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// `CAP_NET_ADMIN`: links, addresses, routes, nftables.
    pub net_admin: bool,
    /// `CAP_SYS_ADMIN`: `setns`, `unshare`, bind-mounting namespaces.
    pub sys_admin: bool,
}

impl Privileges {
    /// This process's effective capabilities (from `/proc/self/status`).
    pub fn of_this_process() -> Privileges {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Privileges::from_status(&status)
    }

    /// Parses the `CapEff:` line of a `/proc/<pid>/status`.
    pub fn from_status(status: &str) -> Privileges {
        const CAP_NET_ADMIN: u32 = 12;
        const CAP_SYS_ADMIN: u32 = 21;
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        Privileges {
            net_admin: eff & (1 << CAP_NET_ADMIN) != 0,
            sys_admin: eff & (1 << CAP_SYS_ADMIN) != 0,
        }
    }

    /// Whether the kernel probes can run.
    pub fn can_probe(&self) -> bool {
        self.net_admin && self.sys_admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: Verdict) -> Check {
        Check::new(Group::Kernel, "x", v, "d", Some("f"))
    }

    #[test]
    fn the_report_takes_the_worst_verdict_and_counts_each() {
        let r = Report::new(vec![c(Verdict::Ok), c(Verdict::Warn), c(Verdict::Ok)]);
        assert_eq!(r.verdict, Verdict::Warn);
        assert!(!r.failed(), "warnings alone do not fail the run");
        assert_eq!((r.counts.ok, r.counts.warn, r.counts.fail), (2, 1, 0));
        let r = Report::new(vec![c(Verdict::Warn), c(Verdict::Fail), c(Verdict::Ok)]);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.failed());
        assert_eq!(Report::new(vec![]).verdict, Verdict::Ok);
    }

    #[test]
    fn checks_are_one_line_and_named_by_group() {
        let k = Check::fail(
            Group::Files,
            "config",
            "a: missing\n\nb: bad\n",
            "edit it\n",
        );
        assert_eq!(k.id, "files.config");
        assert_eq!(k.detail, "a: missing; b: bad");
        assert_eq!(k.fix.as_deref(), Some("edit it"));
        assert_eq!(Check::ok(Group::Host, "u", "fine").fix, None);
    }

    #[test]
    fn softened_failures_become_warnings_that_say_why() {
        let mut v = vec![c(Verdict::Fail), c(Verdict::Ok)];
        soften(&mut v, "datapath off");
        assert_eq!(v[0].verdict, Verdict::Warn);
        assert!(v[0].detail.contains("datapath off"));
        assert_eq!(v[1].verdict, Verdict::Ok);
    }

    #[test]
    fn capabilities_are_read_from_the_status_file() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(Privileges::from_status(root).can_probe());
        let user = "CapEff:\t0000000000000000\n";
        assert!(!Privileges::from_status(user).can_probe());
        let net_only = "CapEff:\t0000000000001000\n";
        let p = Privileges::from_status(net_only);
        assert!(p.net_admin && !p.sys_admin);
    }

    #[test]
    fn json_names_every_field() {
        let r = Report::new(vec![c(Verdict::Fail)]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "fail");
        let item = &v["checks"][0];
        for k in ["id", "group", "verdict", "detail", "fix"] {
            assert!(item.get(k).is_some(), "{k} missing in {item}");
        }
        assert_eq!(item["group"], "kernel");
    }
}
