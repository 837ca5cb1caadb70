//! The compose lab's images: the base (`compose/build-base.sh`: Debian packages through
//! mmdebstrap or debootstrap, then `docker import`; no registry; cached) and the lab image
//! (`compose/Dockerfile` on that base, with the prebuilt `dvrmesh` and `dvrmesh-lab` binaries).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::docker;

/// The base image build-base.sh makes.
pub const BASE: &str = "dvrmesh-base:bookworm";
/// The lab image every service runs.
pub const IMAGE: &str = "dvrmesh-lab:dev";
/// Label of the lab image naming what it was built from: the base image's id and the binaries
/// (size and mtime of each).
const STAMP_LABEL: &str = "org.dvrmesh.binaries";

/// The binaries the lab image carries.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The agent and CLI.
    pub dvrmesh: PathBuf,
    /// The lab binary (its hidden `probe`, `probe-serve` and `arp-probe` commands).
    pub lab: PathBuf,
}

impl Binaries {
    /// `$DVRMESH_BIN` or the newest of the release and debug `dvrmesh` of this build tree (the
    /// release one unless it is older: a stale release build is not what was just built); the
    /// running `dvrmesh-lab` (or `$DVRMESH_LAB_BIN`).
    pub fn find() -> Result<Binaries> {
        let lab = crate::lab::find_lab_bin()?;
        if let Some(p) = std::env::var_os("DVRMESH_BIN") {
            return Ok(Binaries {
                dvrmesh: PathBuf::from(p),
                lab,
            });
        }
        let near = crate::lab::find_dvrmesh()?;
        let profile_dir = near.parent().and_then(Path::parent);
        // On a tie `max_by_key` keeps the last: release.
        let newest = ["debug", "release"]
            .iter()
            .filter_map(|p| profile_dir.map(|d| d.join(p).join("dvrmesh")))
            .filter(|p| p.is_file())
            .max_by_key(|p| mtime(p).unwrap_or(0));
        Ok(Binaries {
            dvrmesh: newest.unwrap_or(near),
            lab,
        })
    }

    /// What a lab image built now is made of: the base image's id and this pair of binaries
    /// (size and mtime of each).
    fn stamp(&self) -> Result<String> {
        let one = |p: &Path| -> Result<String> {
            let m = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
            Ok(format!("{}-{}", m.len(), mtime(p)?))
        };
        let base = docker::run(&["image", "inspect", "-f", "{{.Id}}", BASE])?;
        Ok(format!(
            "{}/{}/{}",
            base.trim(),
            one(&self.dvrmesh)?,
            one(&self.lab)?
        ))
    }
}

fn mtime(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)?
        .modified()?
        .duration_since(UNIX_EPOCH)?
        .as_secs())
}

fn exists(image: &str) -> bool {
    docker::output(&["image", "inspect", image]).is_ok_and(|o| o.status.success())
}

/// Builds the base image unless it exists with the package list `build-base.sh` names (or
/// `force`): a minute or so the first time; the script itself checks its cache (the image's
/// `org.dvrmesh.base-packages` label), so an image built from an older list is rebuilt.
pub fn ensure_base(root: &Path, force: bool, progress: &mut dyn FnMut(&str)) -> Result<()> {
    progress(&if exists(BASE) && !force {
        format!("{BASE} exists: checking it was built from the packages build-base.sh names")
    } else {
        format!(
            "building {BASE} from Debian's packages (mmdebstrap or debootstrap, then docker import)"
        )
    });
    let script = root.join("compose/build-base.sh");
    let mut c = Command::new(&script);
    if force {
        c.arg("--force");
    }
    // Its progress goes to our stderr; its stdout (a summary) too.
    let status = c
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// Builds the lab image unless it exists, carries these binaries and is built on the current
/// base; the base first if missing.
pub fn ensure(root: &Path, bins: &Binaries, progress: &mut dyn FnMut(&str)) -> Result<()> {
    ensure_base(root, false, progress)?;
    let stamp = bins.stamp()?;
    let format = format!("{{{{index .Config.Labels \"{STAMP_LABEL}\"}}}}");
    let current = docker::output(&["image", "inspect", "-f", &format, IMAGE])?;
    if current.status.success() && String::from_utf8_lossy(&current.stdout).trim() == stamp {
        progress(&format!("{IMAGE} is up to date"));
        return Ok(());
    }
    build(root, bins, progress)
}

/// Stages the binaries in `compose/bin/` (debug info stripped when `strip` exists) and builds
/// the lab image; the image it replaces is removed.
pub fn build(root: &Path, bins: &Binaries, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let start = Instant::now();
    let context = root.join("compose");
    let staged = context.join("bin");
    std::fs::create_dir_all(&staged)?;
    for (src, name) in [(&bins.dvrmesh, "dvrmesh"), (&bins.lab, "dvrmesh-lab")] {
        progress(&format!("staging {} as compose/bin/{name}", src.display()));
        stage(src, &staged.join(name))?;
    }
    let old = docker::output(&["image", "inspect", "-f", "{{.Id}}", IMAGE])?;
    let stamp = format!("{STAMP_LABEL}={}", bins.stamp()?);
    let base = format!("BASE={BASE}");
    let ctx = context.to_string_lossy();
    progress(&format!("building {IMAGE} (docker build {ctx})"));
    let args = [
        "build",
        "-q",
        "--build-arg",
        &base,
        "--label",
        &stamp,
        "-t",
        IMAGE,
        &ctx,
    ];
    docker::run(&args)?;
    if old.status.success() {
        let old_id = String::from_utf8_lossy(&old.stdout).trim().to_string();
        let new = docker::run(&["image", "inspect", "-f", "{{.Id}}", IMAGE])?;
        if new.trim() != old_id {
            // Untagged now; in use by a running lab it stays (and that is fine).
            let _ = docker::output(&["rmi", &old_id]);
        }
    }
    let size = docker::run(&["image", "inspect", "-f", "{{.Size}}", IMAGE])?;
    let mb = size.trim().parse::<f64>().unwrap_or(0.0) / 1e6;
    progress(&format!(
        "{IMAGE} built in {:.1}s ({mb:.0} MB)",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Copies `src` to `dst` through a temporary file (the source may be rebuilt meanwhile), then
/// strips its debug info if `strip` is installed (a debug dvrmesh shrinks from ~190 to ~45 MB).
fn stage(src: &Path, dst: &Path) -> Result<()> {
    let tmp = dst.with_extension("tmp");
    std::fs::copy(src, &tmp).with_context(|| format!("copying {}", src.display()))?;
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg(&tmp)
        .stderr(Stdio::null())
        .status();
    if !stripped.is_ok_and(|s| s.success()) {
        // No binutils: the image is just bigger.
        std::fs::copy(src, &tmp)?;
    }
    std::fs::rename(&tmp, dst)?;
    Ok(())
}
