//! What the backend's unit tests share: running a closure inside a fresh network namespace.

/// Runs `f` on a thread inside a fresh network namespace (needs root).
pub(crate) fn in_fresh_netns<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare (needs root)");
            f()
        })
        .join()
        .expect("thread")
    })
}
