//! Network namespaces made ahead of need.
//!
//! Creating a namespace costs about a millisecond of kernel work (every per-namespace subsystem
//! initialises). So a few are made beforehand on a background thread, with `lo` already up, and a
//! pass that needs a namespace only names a spare ([`super::netns::adopt`]). Spares are held by
//! file descriptor only: nothing lists them, nothing else can enter them, and they vanish with the
//! process. When none is left the pass creates its namespace itself, as before. Spares also carry
//! [`crate::plan::NAMESPACE_SYSCTLS`] already, so a pass that adopts one skips those writes.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink_sys::protocols::NETLINK_ROUTE;
use nix::sched::{unshare, CloneFlags};

use super::socket::Conn;
use super::{links, sysctl};
use crate::plan::NAMESPACE_SYSCTLS;

/// How many spares are kept: the namespaces one router with three new networks needs (its
/// `qrouter-` and a `qmeta-` per network).
const SPARES: usize = 4;

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

/// Passes that create at least this many namespaces start a [`Maker`] beside them.
pub(crate) const MAKER_THRESHOLD: usize = 16;

/// A helper thread that makes spares for a pass creating many namespaces, beside the pass's own
/// thread, which creates the others itself meanwhile: between them they make exactly as many as
/// the pass needs. A spare from the maker arrives with `lo` up and its sysctls written, so the
/// pass skips those too.
///
/// Why: with a thousand routers, making namespaces and writing their sysctls was over a third of
/// a cold pass, all of it on one CPU.
pub(crate) struct Maker {
    /// Namespaces neither side has started to make yet.
    left: Arc<AtomicUsize>,
    made: Receiver<File>,
}

impl Maker {
    /// Starts making, on a helper thread, the `count` namespaces a pass needs, as many as it can
    /// while the pass makes the others (it ends once none is left).
    pub(crate) fn start(count: usize) -> Maker {
        let left = Arc::new(AtomicUsize::new(count));
        let (tx, made) = mpsc::channel();
        let theirs = left.clone();
        let spawned = std::thread::Builder::new()
            .name("dvrmesh-nsmaker".into())
            .spawn(move || {
                while claim(&theirs) {
                    match make() {
                        Ok(ns) => {
                            if tx.send(ns).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            // Give the claim back: the pass makes that one itself.
                            theirs.fetch_add(1, Ordering::AcqRel);
                            tracing::debug!(error = %e, "namespace maker stopped");
                            break;
                        }
                    }
                }
            });
        if spawned.is_err() {
            tracing::debug!("namespace maker not started");
        }
        Maker { left, made }
    }

    /// The next namespace for the pass: `Some(spare)` made beside, or `None` when the pass is
    /// to create this one itself. Waits only when the maker holds every remaining claim.
    pub(crate) fn next(&self) -> Option<File> {
        if let Ok(spare) = self.made.try_recv() {
            return Some(spare);
        }
        if claim(&self.left) {
            return None;
        }
        // The maker claimed the rest; it sends each (or, if it failed, gave the claim back).
        loop {
            match self.made.recv_timeout(Duration::from_millis(20)) {
                Ok(spare) => return Some(spare),
                Err(RecvTimeoutError::Timeout) if claim(&self.left) => return None,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

impl Drop for Maker {
    fn drop(&mut self) {
        // Stop the maker; spares it made and nobody took go to the pool (or vanish).
        self.left.store(0, Ordering::Release);
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(spare) = self.made.try_recv() {
            if pool.len() < SPARES {
                pool.push(spare);
            }
        }
    }
}

/// Takes one of the namespaces left to make, if any.
fn claim(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
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

    #[test]
    fn a_maker_and_its_pass_make_exactly_the_namespaces_the_pass_needs() {
        const NEEDED: usize = 6;
        let maker = Maker::start(NEEDED);
        let (mut beside, mut by_pass) = (0, 0);
        for _ in 0..NEEDED {
            match maker.next() {
                Some(spare) => {
                    beside += 1;
                    let keys = vec!["net.ipv4.ip_forward".to_string()];
                    let read = sysctl::read_all(&spare, "spare", &keys).expect("read");
                    assert_eq!(read[0].1.as_deref(), Some("1"), "a made spare is preset");
                }
                // The pass makes this one itself (as `apply` does with `netns::create`).
                None => by_pass += 1,
            }
        }
        assert_eq!(beside + by_pass, NEEDED);
        assert_eq!(
            maker.left.load(Ordering::Acquire),
            0,
            "nothing left to make"
        );
        drop(maker);
    }
}
