//! A throwaway host namespace and namespace directory, for tests, benchmarks and labs: everything
//! the backend does in it stays inside, and dropping it removes it all.

use std::path::PathBuf;
use std::process::Command;

use super::{netns, HostNs, LinuxConfig, LinuxKernel, OWNED_NAMESPACE_PREFIXES};
use crate::{Error, Kernel, LinkKind, LinkSpec, Netns, Op};

/// A sealed host namespace with its own namespace directory.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// Where a backend working in the sandbox works.
    pub config: LinuxConfig,
}

/// A temporary directory for the sandbox's namespace files: in `/dev/shm` where there is one, a
/// memory file system as `/run` (where `/run/netns` lives) is on a real host. On a disk file
/// system, creating and removing thousands of namespace files makes the kernel search the inode
/// bitmap for every new one (6–10 % of a 1 000-router pass, profiled on this machine's ext4).
fn namespace_tempdir() -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("dvrmesh-sandbox")
            .tempdir_in(shm)
        {
            return Ok(dir);
        }
    }
    tempfile::tempdir()
}

impl Sandbox {
    /// A fresh sandbox whose host namespace has `external` veths (each with a peer named
    /// `<name>p`) to stand in for external interfaces.
    pub fn new(external: &[&str]) -> Result<Sandbox, Error> {
        let dir = namespace_tempdir().map_err(|e| Error::Namespace {
            ns: "sandbox".into(),
            message: e.to_string(),
        })?;
        netns::create(dir.path(), "host")?;
        let config = LinuxConfig {
            host: HostNs::Path(dir.path().join("host")),
            netns_dir: dir.path().join("ns"),
            nft: Default::default(),
        };
        let sandbox = Sandbox { dir, config };
        let ops: Vec<Op> = external
            .iter()
            .map(|name| Op::AddLink {
                ns: Netns::Host,
                name: name.to_string(),
                spec: LinkSpec::of(LinkKind::Veth {
                    peer: format!("{name}p"),
                    peer_ns: Netns::Host,
                }),
            })
            .collect();
        let report = sandbox.kernel().apply(&ops)?;
        if let Some((op, e)) = report.failed.first() {
            return Err(Error::Namespace {
                ns: "sandbox".into(),
                message: format!("{op}: {e}"),
            });
        }
        Ok(sandbox)
    }

    /// A backend working in the sandbox.
    pub fn kernel(&self) -> LinuxKernel {
        LinuxKernel::new(self.config.clone())
    }

    /// The file of a namespace of the sandbox.
    pub fn ns_path(&self, ns: &Netns) -> PathBuf {
        match ns {
            Netns::Host => self.dir.path().join("host"),
            Netns::Named(n) => self.config.netns_dir.join(n),
        }
    }

    /// Runs a command inside one of the sandbox's namespaces (setup and inspection only) and
    /// returns its stdout, or its stderr as the error.
    pub fn sh(&self, ns: &Netns, args: &[&str]) -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path(ns).display()))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(names) = netns::list(&self.config.netns_dir, OWNED_NAMESPACE_PREFIXES) {
            for n in names {
                let _ = netns::delete(&self.config.netns_dir, &n);
            }
        }
        let _ = netns::delete(self.dir.path(), "host");
    }
}
