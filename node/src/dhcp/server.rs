//! The DHCP server's I/O: a task per local port device, each with its own packet socket and
//! rate limit, started, updated and stopped by a supervisor that follows the view.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use datapath::linux::dhcp_socket::{DhcpSocket, MAX_FRAME};
use mesh_proto::NodeId;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, Instrument};

use super::answer::answer;
use super::lease::{leases, Lease};
use crate::instruments::Instruments;
use crate::mesh::view::ViewHandle;
use crate::reconcile::topology_from_view;

/// How often the supervisor looks at the view without a change (a port device that appeared
/// after its task gave up opening it is retried by the task itself).
const RESCAN: Duration = Duration::from_secs(2);
/// Pauses before a port task opens its device again (missing device, socket error): short at
/// first, as the task usually starts just before the reconciler creates the device and a VM's
/// first DISCOVER follows at once (a client retries only after a second or more), then doubling.
const REOPEN_FIRST: Duration = Duration::from_millis(10);
const REOPEN_MAX: Duration = Duration::from_millis(500);
/// Requests a port may send at once, and how often it earns one more.
const BURST: u32 = 10;
const REFILL: Duration = Duration::from_millis(200);

/// Starts the DHCP server of node `me`: answers on every local port whose subnet has DHCP on,
/// leases of `lease` length.
pub fn spawn(
    me: NodeId,
    view: ViewHandle,
    lease: Duration,
    instruments: Instruments,
) -> JoinHandle<()> {
    tokio::spawn(supervise(me, view, lease, instruments).in_current_span())
}

/// A running port task and the lease it answers with.
struct PortTask {
    lease: watch::Sender<Lease>,
    task: JoinHandle<()>,
}

impl Drop for PortTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(me: NodeId, view: ViewHandle, lease: Duration, instruments: Instruments) {
    let mut changes = view.subscribe();
    let mut ports: BTreeMap<String, PortTask> = BTreeMap::new();
    let mut tick = tokio::time::interval(RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wanted = leases(&topology_from_view(&view.load(), None), &me, lease);
        sync(&mut ports, wanted, &instruments);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                // The view writer is gone; the agent is stopping.
                return;
            },
            _ = tick.tick() => {}
        }
    }
}

/// Stops the tasks of ports no longer here, gives changed leases to running tasks, starts new
/// ones.
fn sync(
    ports: &mut BTreeMap<String, PortTask>,
    wanted: BTreeMap<String, Lease>,
    instruments: &Instruments,
) {
    ports.retain(|dev, _| wanted.contains_key(dev));
    for (dev, lease) in wanted {
        match ports.get(&dev) {
            Some(p) if *p.lease.borrow() == lease => {}
            Some(p) => {
                p.lease.send_replace(lease);
            }
            None => {
                let (tx, rx) = watch::channel(lease);
                let task = tokio::spawn(
                    serve_port(dev.clone(), rx, instruments.clone()).in_current_span(),
                );
                ports.insert(dev, PortTask { lease: tx, task });
            }
        }
    }
}

/// Serves one port device for as long as the port is here: (re)opens its socket whenever the
/// device is missing or the socket fails (the device was deleted and created again).
async fn serve_port(dev: String, lease: watch::Receiver<Lease>, instruments: Instruments) {
    let mut pause = REOPEN_FIRST;
    loop {
        match DhcpSocket::open(&dev).and_then(register) {
            Ok(fd) => {
                let e = serve_socket(&fd, &lease, &instruments).await;
                debug!(dev, error = %e, "DHCP socket failed; opening it again");
                pause = REOPEN_FIRST;
            }
            Err(e) => debug!(dev, error = %e, "DHCP socket not open yet"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(REOPEN_MAX);
    }
}

/// The socket registered with tokio's reactor. `AsyncFd::new` is deprecated because a caller
/// could close the descriptor under it; a `DhcpSocket` owns its descriptor (`OwnedFd`) for its
/// whole life and always reports that one, which is the condition the unsafe `register` states
/// (this crate forbids `unsafe`).
#[allow(deprecated)]
fn register(sock: DhcpSocket) -> io::Result<AsyncFd<DhcpSocket>> {
    AsyncFd::new(sock)
}

/// Answers requests on one socket until it fails.
async fn serve_socket(
    fd: &AsyncFd<DhcpSocket>,
    lease: &watch::Receiver<Lease>,
    instruments: &Instruments,
) -> io::Error {
    let mut buf = vec![0u8; MAX_FRAME];
    let mut bucket = Bucket::new(Instant::now());
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => return e,
        };
        let received = match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return e,
            Err(_would_block) => continue,
        };
        if received.outgoing {
            continue;
        }
        if !bucket.take(Instant::now()) {
            debug!(port = %lease.borrow().port, "DHCP request over the port's rate; dropped");
            instruments.dhcp_frame("rate_limited");
            continue;
        }
        if received.len > buf.len() {
            instruments.dhcp_frame("refused");
            continue;
        }
        let current = lease.borrow().clone();
        match answer(&current, &buf[..received.len]) {
            Ok(Some(frame)) => {
                instruments.dhcp_frame("answered");
                if let Err(e) = fd.get_ref().send(&frame) {
                    debug!(port = %current.port, error = %e, "DHCP reply not sent");
                }
            }
            Ok(None) => instruments.dhcp_frame("ignored"),
            Err(r) => {
                instruments.dhcp_frame("refused");
                debug!(port = %current.port, reason = r.reason(), "DHCP frame refused");
            }
        }
    }
}

/// A token bucket: [`BURST`] requests at once, one more every [`REFILL`].
struct Bucket {
    tokens: u32,
    since: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Bucket {
            tokens: BURST,
            since: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.since).as_millis() / REFILL.as_millis();
        if earned > 0 {
            self.tokens = BURST.min(self.tokens.saturating_add(earned as u32));
            self.since = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0);
        assert_eq!((0..20).filter(|_| b.take(t0)).count(), BURST as usize);
        assert!(!b.take(t0 + REFILL / 2));
        assert!(b.take(t0 + REFILL));
        assert!(!b.take(t0 + REFILL));
        let later = t0 + REFILL * 100;
        assert_eq!((0..20).filter(|_| b.take(later)).count(), BURST as usize);
    }
}
