//! Named network namespaces as bind-mounted files (the `ip netns` convention), and running code
//! on a thread inside a namespace.
//!
//! A namespace is created on a dedicated thread: `unshare(CLONE_NEWNET)` moves that thread (only)
//! into a new namespace, which is then kept alive by bind-mounting `/proc/thread-self/ns/net` onto
//! an empty file. No process is forked. Deleting lazily unmounts the file and removes it; the
//! kernel tears the namespace down once nothing else holds it. Work inside an existing namespace
//! ([`in_netns`]) switches the calling thread there and back.

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

/// Runs `f` with the calling thread inside the namespace `ns`, then moves the thread back to
/// the namespace it was in (also when `f` panics). Switching costs two `setns` calls, where a
/// thread per call cost ~50 µs; nothing `f` does can leave the thread elsewhere. If the way back
/// fails (the original namespace is held open, so it cannot vanish) the process aborts rather
/// than run on in a foreign namespace.
pub fn in_netns<R, F>(ns: &File, label: &str, f: F) -> Result<R, Error>
where
    F: FnOnce() -> R,
{
    let fail = |message: String| Error::Namespace {
        ns: label.to_string(),
        message,
    };
    let home = File::open("/proc/thread-self/ns/net")
        .map_err(|e| fail(format!("open this thread's namespace: {e}")))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| fail(format!("setns: {e}")))?;
    /// Moves the thread home when dropped.
    struct Home(File);
    impl Drop for Home {
        fn drop(&mut self) {
            if setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET).is_err() {
                eprintln!("dvrmesh: cannot return a thread to its network namespace; aborting");
                std::process::abort();
            }
        }
    }
    let _home = Home(home);
    Ok(f())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn inode_of_this_thread() -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/thread-self/ns/net")
            .expect("stat (Linux)")
            .ino()
    }

    #[test]
    fn in_netns_runs_inside_and_comes_back_even_after_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        create(dir.path(), "t").expect("create (needs root)");
        let ns = open(&dir.path().join("t"), "t").expect("open");
        let target = {
            use std::os::unix::fs::MetadataExt;
            ns.metadata().expect("stat").ino()
        };
        let home = inode_of_this_thread();
        assert_ne!(home, target);
        let inside = in_netns(&ns, "t", inode_of_this_thread).expect("enter");
        assert_eq!(inside, target, "f ran inside the namespace");
        assert_eq!(inode_of_this_thread(), home, "and the thread came back");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            in_netns(&ns, "t", || panic!("inside")).ok();
        }));
        assert!(panicked.is_err());
        assert_eq!(inode_of_this_thread(), home, "back after a panic too");
        delete(dir.path(), "t").expect("delete");
    }
}
