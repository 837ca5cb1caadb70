//! Warnings a peer can provoke, rate-limited: at most one per key per interval, carrying how many
//! events it stands for, so no peer can flood the log or slow a task by making it write.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Most keys remembered; past it the memory starts afresh.
const MAX_KEYS: usize = 4096;

/// Per-key rate limit of one kind of warning.
#[derive(Debug)]
pub struct Throttle<K> {
    every: Duration,
    seen: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// At most one warning per key every `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            seen: HashMap::new(),
        }
    }

    /// Records one event for `key` at `now`. Returns how many events the warning to write now
    /// stands for (this one and those held back since the last), or `None` to stay quiet.
    pub fn event(&mut self, key: &K, now: Instant) -> Option<u64> {
        if self.seen.len() >= MAX_KEYS && !self.seen.contains_key(key) {
            self.seen.clear();
        }
        match self.seen.get_mut(key) {
            Some((last, held)) if now.saturating_duration_since(*last) < self.every => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let n = *held + 1;
                *last = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.seen.insert(key.clone(), (now, 0));
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_carries_the_events_held_back() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(1));
        assert_eq!(t.event(&"rogue", t0), Some(1));
        for i in 1..100 {
            assert_eq!(t.event(&"rogue", t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.event(&"other", t0), Some(1), "keys are limited apart");
        assert_eq!(
            t.event(&"rogue", t0 + Duration::from_secs(1)),
            Some(100),
            "99 held back and this one"
        );
    }
}
