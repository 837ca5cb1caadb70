//! A token bucket per port (pure, time passed in): what one VM may ask of the metadata service.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mesh_proto::ObjectId;

/// Requests a port may make at once, and how often it earns one more.
pub const BURST: u32 = 20;
/// One more request per this interval.
pub const REFILL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    since: Instant,
}

/// The buckets of the ports of one network (at most one per local port: the caller forgets
/// ports that left with [`PortLimits::retain`]).
#[derive(Debug, Default)]
pub struct PortLimits {
    buckets: HashMap<ObjectId, Bucket>,
}

impl PortLimits {
    /// Whether `port` may make one more request at `now` (and takes it).
    pub fn allow(&mut self, port: &ObjectId, now: Instant) -> bool {
        let b = self.buckets.entry(port.clone()).or_insert(Bucket {
            tokens: BURST,
            since: now,
        });
        let earned = now.saturating_duration_since(b.since).as_millis() / REFILL.as_millis();
        if earned > 0 {
            b.tokens = BURST.min(
                b.tokens
                    .saturating_add(u32::try_from(earned).unwrap_or(BURST)),
            );
            b.since = now;
        }
        if b.tokens == 0 {
            return false;
        }
        b.tokens -= 1;
        true
    }

    /// Forgets every port for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&ObjectId) -> bool) {
        self.buckets.retain(|p, _| keep(p));
    }

    /// Ports with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no port has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_each_port_alone() {
        let t0 = Instant::now();
        let (a, b) = (
            ObjectId::new("a").expect("id"),
            ObjectId::new("b").expect("id"),
        );
        let mut l = PortLimits::default();
        assert_eq!((0..50).filter(|_| l.allow(&a, t0)).count(), BURST as usize);
        assert!(l.allow(&b, t0), "another port has its own bucket");
        assert!(!l.allow(&a, t0 + REFILL / 2));
        assert!(l.allow(&a, t0 + REFILL));
        assert!(!l.allow(&a, t0 + REFILL));
        let later = t0 + REFILL * 1000;
        assert_eq!(
            (0..50).filter(|_| l.allow(&a, later)).count(),
            BURST as usize
        );
        l.retain(|p| p == &b);
        assert_eq!(l.len(), 1);
    }
}
