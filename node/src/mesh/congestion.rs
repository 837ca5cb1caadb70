//! The congestion window of dvrmesh's QUIC connections: fixed, so loss never throttles them.
//!
//! These connections carry control traffic only — gossip (a few kilobytes per round per peer,
//! each message at most 64 KiB) and SNAT adverts (about 100 bytes every 20 ms) — far below any
//! link's capacity. A standard controller (quinn's default is CUBIC) shrinks its window on every
//! loss and falls to two packets on persistent congestion; on a lossy link the window then fills
//! with retransmitted gossip and the adverts queue behind it, so a backup hears silence where the
//! holder is alive and takes over. With a window that does not shrink, a lost packet costs its
//! retransmission and nothing else. The window bounds what one connection may have in flight.

use std::any::Any;
use std::sync::Arc;

use quinn::congestion::{Controller, ControllerFactory};

/// Bytes one connection may have in flight: a few maximal gossip messages.
pub const WINDOW: u64 = 256 * 1024;

/// Builds [`FixedWindow`] controllers.
#[derive(Debug, Clone, Copy)]
pub struct FixedWindowConfig;

impl ControllerFactory for FixedWindowConfig {
    fn build(self: Arc<Self>, _now: std::time::Instant, _mtu: u16) -> Box<dyn Controller> {
        Box::new(FixedWindow)
    }
}

/// A congestion controller whose window is always [`WINDOW`].
#[derive(Debug, Clone, Copy)]
pub struct FixedWindow;

impl Controller for FixedWindow {
    fn on_congestion_event(
        &mut self,
        _now: std::time::Instant,
        _sent: std::time::Instant,
        _is_persistent_congestion: bool,
        _lost_bytes: u64,
    ) {
    }

    fn on_mtu_update(&mut self, _new_mtu: u16) {}

    fn window(&self) -> u64 {
        WINDOW
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(*self)
    }

    fn initial_window(&self) -> u64 {
        WINDOW
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_does_not_shrink_the_window() {
        let now = std::time::Instant::now();
        let mut c = Arc::new(FixedWindowConfig).build(now, 1200);
        assert_eq!(c.window(), WINDOW);
        c.on_congestion_event(now, now, true, 64 * 1024);
        assert_eq!(
            c.window(),
            WINDOW,
            "persistent congestion leaves it as it is"
        );
    }
}
