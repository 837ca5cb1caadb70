//! What one peer may cost this node: a frame rate (token bucket, time passed in) and a share of
//! the inbound queues (byte and item permits, held until the consumer takes the item).
//!
//! Written by hand: the bucket is a few lines of arithmetic on a caller's clock, which keeps it
//! testable on virtual time; the shares are tokio semaphores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A token bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, per_second: u32) -> Self {
        TokenBucket {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Takes one token at `now`, if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |l| now.saturating_duration_since(l));
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A bounded pool shared by every peer, and each peer's part of it: an item enters a queue only
/// with permits from both, so one peer can fill at most its part and never starve the others.
#[derive(Debug, Clone)]
pub struct Share {
    all: Arc<Semaphore>,
    peer: Arc<Semaphore>,
}

/// Permits held by a queued item; dropping it gives them back.
#[derive(Debug)]
pub struct Held {
    _all: OwnedSemaphorePermit,
    _peer: OwnedSemaphorePermit,
}

/// The pool one kind of queue draws on.
#[derive(Debug, Clone)]
pub struct Pool {
    all: Arc<Semaphore>,
    per_peer: usize,
}

impl Pool {
    /// A pool of `total` units of which one peer may hold `per_peer`.
    pub fn new(total: usize, per_peer: usize) -> Self {
        Pool {
            all: Arc::new(Semaphore::new(total)),
            per_peer: per_peer.min(total),
        }
    }

    /// A new peer's share of the pool.
    pub fn share(&self) -> Share {
        Share {
            all: self.all.clone(),
            peer: Arc::new(Semaphore::new(self.per_peer)),
        }
    }
}

impl Share {
    /// Permits for an item of `units`, if both the peer's part and the pool have room now.
    pub fn try_hold(&self, units: usize) -> Option<Held> {
        let units = u32::try_from(units.max(1)).ok()?;
        let peer = self.peer.clone().try_acquire_many_owned(units).ok()?;
        let all = self.all.clone().try_acquire_many_owned(units).ok()?;
        Some(Held {
            _all: all,
            _peer: peer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 10);
        assert!((0..3).all(|_| b.take(t0)), "the burst");
        assert!(!b.take(t0), "empty after the burst");
        assert!(!b.take(t0 + Duration::from_millis(50)), "half a token");
        assert!(
            b.take(t0 + Duration::from_millis(100)),
            "one token after 100 ms"
        );
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    #[test]
    fn one_peer_fills_only_its_part_of_the_pool() {
        let pool = Pool::new(100, 40);
        let greedy = pool.share();
        let held: Vec<Held> = (0..10).filter_map(|_| greedy.try_hold(10)).collect();
        assert_eq!(held.len(), 4, "the greedy peer stops at its part");
        let other = pool.share();
        let other_held: Vec<Held> = (0..10).filter_map(|_| other.try_hold(10)).collect();
        assert_eq!(other_held.len(), 4, "another peer still gets its part");
        let third = pool.share();
        let third_held: Vec<Held> = (0..10).filter_map(|_| third.try_hold(10)).collect();
        assert_eq!(third_held.len(), 2, "the pool's rest");
        drop(held);
        assert!(
            greedy.try_hold(40).is_some(),
            "consumed items give their permits back"
        );
        assert!(
            greedy.try_hold(41).is_none(),
            "no item above the peer's part"
        );
    }
}
