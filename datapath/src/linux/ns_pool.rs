//! Network namespaces made ahead of need.
//!
//! Creating a namespace costs about a millisecond of kernel work (every per-namespace subsystem
//! initialises). So a few are made beforehand on a background thread, with `lo` already up, and a
//! pass that needs a namespace only names a spare ([`super::netns::adopt`]). Spares are held by
//! file descriptor only: nothing lists them, nothing else can enter them, and they vanish with the
//! process. When none is left the pass creates its namespace itself, as before. Spares also carry
//! [`crate::plan::NAMESPACE_SYSCTLS`] already, so a pass that adopts one skips those writes.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use netlink_sys::protocols::NETLINK_ROUTE;
use nix::sched::{unshare, CloneFlags};

use super::socket::Conn;
use super::{links, sysctl};
use crate::plan::NAMESPACE_SYSCTLS;

/// How many spares are kept.
const SPARES: usize = 2;

static POOL: Mutex<Vec<File>> = Mutex::new(Vec::new());
static REFILLING: AtomicBool = AtomicBool::new(false);

/// A spare namespace, if one is ready. The pool is topped up after the pass ([`refill`]): making
/// a namespace takes kernel locks the pass needs (the RTNL among them), so a refill running beside
/// the pass would slow it down.
pub(crate) fn take() -> Option<File> {
    POOL.lock().unwrap_or_else(|p| p.into_inner()).pop()
}

/// Tops the pool up to [`SPARES`] on a background thread (one at a time).
pub(crate) fn refill() {
    if POOL.lock().unwrap_or_else(|p| p.into_inner()).len() >= SPARES
        || REFILLING.swap(true, Ordering::AcqRel)
    {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("dvrmesh-nspool".into())
        .spawn(|| {
            while POOL.lock().unwrap_or_else(|p| p.into_inner()).len() < SPARES {
                match make() {
                    Ok(ns) => POOL.lock().unwrap_or_else(|p| p.into_inner()).push(ns),
                    Err(e) => {
                        tracing::debug!(error = %e, "no spare namespace");
                        break;
                    }
                }
            }
            REFILLING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        REFILLING.store(false, Ordering::Release);
    }
}

/// A new namespace with `lo` up and the sysctls every dvrmesh namespace carries, held by its file.
fn make() -> Result<File, String> {
    let file = std::thread::scope(|s| {
        s.spawn(|| -> Result<File, String> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
            File::open("/proc/thread-self/ns/net").map_err(|e| format!("open: {e}"))
        })
        .join()
        .map_err(|_| "namespace thread panicked".to_string())?
    })?;
    let mut conn = Conn::open(NETLINK_ROUTE, &file, "spare").map_err(|e| e.to_string())?;
    links::up(&mut conn, "lo").map_err(|e| e.to_string())?;
    for result in
        sysctl::write_all(&file, "spare", &NAMESPACE_SYSCTLS).map_err(|e| e.to_string())?
    {
        result?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::netns;

    #[test]
    fn a_spare_is_adopted_under_its_name_with_lo_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spare = make().expect("spare namespace (needs root)");
        assert!(netns::adopt(dir.path(), "qrouter-pool", &spare).expect("adopt"));
        drop(spare);
        let path = dir.path().join("qrouter-pool");
        assert!(
            netns::is_netns(&path),
            "named, and alive without the spare's fd"
        );
        let ns = netns::open(&path, "qrouter-pool").expect("open");
        let mut conn = Conn::open(NETLINK_ROUTE, &ns, "qrouter-pool").expect("conn");
        let lo = links::get(&mut conn, "lo").expect("get").expect("lo");
        assert!(lo.up, "lo is up already");
        let keys: Vec<String> = NAMESPACE_SYSCTLS
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        let read = sysctl::read_all(&ns, "qrouter-pool", &keys).expect("read sysctls");
        for ((key, value), (want_key, want)) in read.iter().zip(NAMESPACE_SYSCTLS) {
            assert_eq!(key, want_key);
            assert_eq!(value.as_deref(), Some(want), "{key} is preset");
        }
        let other = make().expect("spare");
        assert!(
            !netns::adopt(dir.path(), "qrouter-pool", &other).expect("adopt"),
            "an existing name is left alone"
        );
        netns::delete(dir.path(), "qrouter-pool").expect("delete");
    }
}
