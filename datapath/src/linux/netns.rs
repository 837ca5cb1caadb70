//! Named network namespaces as bind-mounted files (the `ip netns` convention), and running code
//! on a thread inside a namespace.
//!
//! A namespace is created on a dedicated thread: `unshare(CLONE_NEWNET)` moves that thread (only)
//! into a new namespace, which is then kept alive by bind-mounting `/proc/thread-self/ns/net` onto
//! an empty file. No process is forked. Deleting lazily unmounts the file and removes it; the
//! kernel tears the namespace down once nothing else holds it.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::Error;

/// How many mounts stacked on one namespace file `delete` removes at most.
const MAX_STACKED_MOUNTS: usize = 8;

/// Runs `f` on a new thread that has entered the namespace `ns` and returns its result. The
/// thread ends afterwards, so no thread is ever left in a foreign namespace.
pub fn in_netns<R, F>(ns: &File, label: &str, f: F) -> Result<R, Error>
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    let fd = ns.as_fd();
    let fail = |message: String| Error::Namespace {
        ns: label.to_string(),
        message,
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("dvrmesh-netns".into())
            .spawn_scoped(scope, move || -> Result<R, Error> {
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| fail(format!("setns: {e}")))?;
                Ok(f())
            })
            .map_err(|e| fail(format!("spawn thread: {e}")))?
            .join()
            .map_err(|_| fail("worker thread panicked".to_string()))?
    })
}

/// Opens a namespace file (a bind mount made by [`create`], or `/proc/…/ns/net`).
pub fn open(path: &Path, label: &str) -> Result<File, Error> {
    File::open(path).map_err(|e| Error::Namespace {
        ns: label.to_string(),
        message: format!("open {}: {e}", path.display()),
    })
}

/// Whether `path` is a namespace file (nsfs), not a stale placeholder.
pub fn is_netns(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

/// The file of the named namespace `name` in `dir`; rejects names that are not one path
/// component.
pub fn path_of(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Namespace {
            ns: name.to_string(),
            message: "invalid namespace name".to_string(),
        });
    }
    Ok(dir.join(name))
}

/// Creates the named namespace `name` as a file in `dir` (created if missing). Creating one that
/// exists is a no-op; a stale placeholder file (left by a crash between creating the file and
/// mounting) is reused.
pub fn create(dir: &Path, name: &str) -> Result<(), Error> {
    let path = path_of(dir, name)?;
    let fail = |message: String| Error::Namespace {
        ns: name.to_string(),
        message,
    };
    if is_netns(&path) {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| fail(format!("create {}: {e}", dir.display())))?;
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("dvrmesh-netns".into())
            .spawn_scoped(scope, || -> Result<(), String> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
                let created = match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(_) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(format!("create {}: {e}", path.display())),
                };
                let bind = mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                );
                if let Err(e) = bind {
                    if created {
                        let _ = fs::remove_file(&path);
                    }
                    return Err(format!("bind-mount onto {}: {e}", path.display()));
                }
                Ok(())
            })
            .map_err(|e| format!("spawn thread: {e}"))?
            .join()
            .map_err(|_| "namespace thread panicked".to_string())?
    });
    result.map_err(fail)
}

/// Names the unnamed namespace behind `spare` (see [`super::ns_pool`]) `name` in `dir`: binds it
/// onto a new file. `Ok(false)` when `name` exists already (the spare is then left unused).
pub(crate) fn adopt(dir: &Path, name: &str, spare: &File) -> Result<bool, Error> {
    use std::os::fd::AsRawFd;
    let path = path_of(dir, name)?;
    let fail = |message: String| Error::Namespace {
        ns: name.to_string(),
        message,
    };
    if is_netns(&path) {
        return Ok(false);
    }
    fs::create_dir_all(dir).map_err(|e| fail(format!("create {}: {e}", dir.display())))?;
    let created = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(fail(format!("create {}: {e}", path.display()))),
    };
    let source = format!("/proc/self/fd/{}", spare.as_raw_fd());
    if let Err(e) = mount(
        Some(source.as_str()),
        &path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        if created {
            let _ = fs::remove_file(&path);
        }
        return Err(fail(format!("bind-mount onto {}: {e}", path.display())));
    }
    Ok(true)
}

/// Deletes the named namespace `name` from `dir`: lazy unmount, then remove the file. Deleting
/// one that does not exist is a no-op.
pub fn delete(dir: &Path, name: &str) -> Result<(), Error> {
    let path = path_of(dir, name)?;
    // Several stacked mounts are possible after races; unmount until the file is plain.
    for _ in 0..MAX_STACKED_MOUNTS {
        if !is_netns(&path) {
            break;
        }
        umount2(&path, MntFlags::MNT_DETACH).map_err(|e| Error::Namespace {
            ns: name.to_string(),
            message: format!("umount {}: {e}", path.display()),
        })?;
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Namespace {
            ns: name.to_string(),
            message: format!("remove {}: {e}", path.display()),
        }),
    }
}

/// Names of the namespace files in `dir` that start with one of `prefixes` and are live
/// namespaces. A missing directory has none.
pub fn list(dir: &Path, prefixes: &[&str]) -> Result<BTreeSet<String>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => {
            return Err(Error::Namespace {
                ns: dir.display().to_string(),
                message: format!("read_dir: {e}"),
            })
        }
    };
    let mut names = BTreeSet::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if prefixes.iter().any(|p| name.starts_with(p)) && is_netns(&entry.path()) {
            names.insert(name);
        }
    }
    Ok(names)
}
