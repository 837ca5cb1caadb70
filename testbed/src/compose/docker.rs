//! Running docker and docker-compose: errors carry the command and what it printed.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

use super::PROJECT;

/// Fails with a clear reason unless the docker daemon answers.
pub fn available() -> Result<()> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
        .context("running `docker info` (is docker installed? apt-get install docker.io)")?;
    if !out.status.success() {
        bail!(
            "the docker daemon does not answer (`docker info`: {}); start it (service docker start) and run as root",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `docker ARGS` and returns its stdout; fails with its stderr.
pub fn run(args: &[&str]) -> Result<String> {
    checked(
        Command::new("docker").args(args),
        &format!("docker {}", args.join(" ")),
    )
}

/// Runs `docker ARGS` and returns its output whatever its status.
pub fn output(args: &[&str]) -> Result<Output> {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))
}

/// Runs `args` inside a running container and returns its stdout; fails with its stderr.
pub fn exec(container: &str, args: &[&str]) -> Result<String> {
    let mut c = Command::new("docker");
    c.args(["exec", container]).args(args);
    checked(&mut c, &format!("{container}: {}", args.join(" ")))
}

/// Whether `args` succeed inside a container (for polling).
pub fn exec_ok(container: &str, args: &[&str]) -> bool {
    let mut c = Command::new("docker");
    c.args(["exec", container]).args(args);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn checked(c: &mut Command, what: &str) -> Result<String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The lab's containers (ids), running or not, found by their compose project label.
pub fn lab_containers(extra_filter: Option<&str>) -> Result<Vec<String>> {
    let label = format!("label=com.docker.compose.project={PROJECT}");
    let mut args = vec!["ps", "-aq", "--filter", &label];
    if let Some(f) = extra_filter {
        args.extend(["--filter", f]);
    }
    Ok(run(&args)?.split_whitespace().map(String::from).collect())
}

/// Which Compose: `docker-compose` (1.29 in Debian) or the `docker compose` plugin (v2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The standalone `docker-compose`.
    V1,
    /// The `docker compose` CLI plugin.
    V2,
}

impl Tool {
    /// The Compose installed here, preferring `docker-compose` (what the lab was built with);
    /// `DVRMESH_COMPOSE=v1` or `v2` picks one (and fails if that one does not work).
    pub fn detect() -> Result<Tool> {
        let works = |c: &mut Command| {
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let v1 = || works(Command::new("docker-compose").arg("version"));
        let v2 = || works(Command::new("docker").args(["compose", "version"]));
        match std::env::var("DVRMESH_COMPOSE").ok().as_deref() {
            Some("v1") if v1() => return Ok(Tool::V1),
            Some("v1") => bail!("DVRMESH_COMPOSE=v1, and `docker-compose version` fails"),
            Some("v2") if v2() => return Ok(Tool::V2),
            Some("v2") => bail!("DVRMESH_COMPOSE=v2, and `docker compose version` fails"),
            Some(other) => bail!("DVRMESH_COMPOSE={other}: want v1 or v2"),
            None => {}
        }
        if v1() {
            return Ok(Tool::V1);
        }
        if v2() {
            return Ok(Tool::V2);
        }
        bail!("neither docker-compose nor `docker compose` works here (apt-get install docker-compose)")
    }

    /// Runs Compose on the repository's `docker-compose.yml` with `args`; returns its stdout.
    pub fn run(self, root: &Path, args: &[&str]) -> Result<String> {
        let mut c = match self {
            Tool::V1 => Command::new("docker-compose"),
            Tool::V2 => {
                let mut c = Command::new("docker");
                c.arg("compose");
                c
            }
        };
        let file = root.join("docker-compose.yml");
        c.current_dir(root)
            .arg("-p")
            .arg(PROJECT)
            .arg("-f")
            .arg(&file)
            .args(args);
        checked(&mut c, &format!("compose {}", args.join(" ")))
    }
}
