//! How many silent advert intervals a backup waits before it declares a holder dead: suspicion
//! that adapts to the advert loss it has measured on that holder's path.
//!
//! A fixed count is a trade: VRRP's 3 intervals fail over fast but take over from a live holder
//! whenever 3 adverts in a row are lost (every few minutes at 50 adverts/s and 5 % loss); 8
//! almost never do, but make every real failure 8 intervals long. Here each backup counts, per
//! holder and router, the adverts that did not arrive (a gap of k intervals between two arrivals
//! is k − 1 lost, late adverts count as lost), keeps an estimate of the loss rate that forgets
//! with a horizon of about [`HORIZON`] adverts, and waits the fewest intervals `m` (between the
//! configured least and most) for which `m` losses in a row are rarer than
//! [`FALSE_SUSPICION_PER_ADVERT`]. On a clean path that is the least (3, as VRRP); at 5 % loss 6;
//! at 8 % 7; from about 13 % the most (8 by default). The estimate starts as if [`PRIOR_ADVERTS`] adverts had been sent at
//! [`PRIOR_LOSS`], a prior that is forgotten like any other advert: a holder with no history is
//! waited on for the least count, and the first few losses move it up at once.
//!
//! Loss often starts all at once (a link degrades, a switch queue fills), and a path clean for
//! minutes has a long estimate near zero that takes hundreds of adverts to move. A second
//! estimate with a horizon of [`ONSET_HORIZON`] adverts catches the onset: the wait follows the
//! higher of the two, so the first lost advert after a clean stretch raises it (to 6 intervals by
//! default) for the next few dozen adverts. What is left is the chance that the very first loss
//! is already a run as long as the clean-path wait (about `p²` at loss `p` for 3 intervals).
//!
//! Pure: arrival times are passed in.

use std::time::Duration;

use tokio::time::Instant;

/// Roughly how many adverts the loss estimate remembers: each advert sent weighs `1 − 1/HORIZON`
/// of the one before.
pub const HORIZON: f64 = 256.0;
/// How often a backup may wrongly declare a live holder dead, per advert interval.
pub const FALSE_SUSPICION_PER_ADVERT: f64 = 1e-7;
/// The prior's weight, in adverts.
pub const PRIOR_ADVERTS: f64 = 64.0;
/// The prior's loss rate.
pub const PRIOR_LOSS: f64 = 1.0 / 256.0;
/// Roughly how many adverts the onset estimate remembers.
pub const ONSET_HORIZON: f64 = 16.0;

/// The adverts a backup received from one holder for one router, as a decaying loss estimate.
#[derive(Clone, Debug)]
pub struct Arrivals {
    last: Option<Instant>,
    /// Adverts sent (received plus lost), decayed.
    sent: f64,
    /// Adverts lost, decayed.
    lost: f64,
    /// The same over the last [`ONSET_HORIZON`] adverts or so (no prior: it starts clean).
    recent_sent: f64,
    recent_lost: f64,
}

impl Default for Arrivals {
    fn default() -> Self {
        Arrivals {
            last: None,
            sent: PRIOR_ADVERTS,
            lost: PRIOR_LOSS * PRIOR_ADVERTS,
            recent_sent: ONSET_HORIZON,
            recent_lost: 0.0,
        }
    }
}

impl Arrivals {
    /// An advert arrived at `now`. Arrivals closer than half an interval to the last one (a
    /// takeover notice repeated, several claims at once) add nothing; a gap longer than
    /// `max_missed` intervals is not counted either: the holder was dead or restarting, or this
    /// node stalled, and that is no loss on the path.
    pub fn record(&mut self, now: Instant, interval: Duration, max_missed: u32) {
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let gap = now.saturating_duration_since(last);
        if interval.is_zero() || gap < interval / 2 {
            return;
        }
        let intervals = (gap.as_secs_f64() / interval.as_secs_f64())
            .round()
            .max(1.0);
        let missed = intervals - 1.0;
        if missed > f64::from(max_missed) {
            return;
        }
        let keep = (1.0 - 1.0 / HORIZON).powf(intervals);
        self.sent = self.sent * keep + intervals;
        self.lost = self.lost * keep + missed;
        let keep = (1.0 - 1.0 / ONSET_HORIZON).powf(intervals);
        self.recent_sent = self.recent_sent * keep + intervals;
        self.recent_lost = self.recent_lost * keep + missed;
    }

    /// The estimated chance that one advert is lost: the higher of the long and the onset
    /// estimate.
    pub fn loss(&self) -> f64 {
        (self.lost / self.sent).max(self.recent_lost / self.recent_sent)
    }

    /// How many silent intervals to wait, between `least` and `most`: the fewest whose run of
    /// losses is rarer than [`FALSE_SUSPICION_PER_ADVERT`], or `most` when none is.
    pub fn multiplier(&self, least: u32, most: u32) -> u32 {
        multiplier_for(self.loss(), least, most)
    }
}

/// The fewest intervals `m` in `least..=most` with `loss^m ≤` [`FALSE_SUSPICION_PER_ADVERT`];
/// `most` when none is (and `least` when `most` is smaller).
pub fn multiplier_for(loss: f64, least: u32, most: u32) -> u32 {
    let most = most.max(least);
    (least..=most)
        .find(|m| loss.powi(*m as i32) <= FALSE_SUSPICION_PER_ADVERT)
        .unwrap_or(most)
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(20);

    /// Feeds `count` adverts, dropping those for which `lost(i)` is true.
    fn feed(a: &mut Arrivals, start: Instant, count: u32, lost: impl Fn(u32) -> bool) -> Instant {
        let mut t = start;
        for i in 0..count {
            t += I;
            if !lost(i) {
                a.record(t, I, 8);
            }
        }
        t
    }

    #[test]
    fn a_holder_with_no_history_is_waited_on_for_the_least_count() {
        let a = Arrivals::default();
        assert!((a.loss() - PRIOR_LOSS).abs() < 1e-12);
        assert_eq!(a.multiplier(3, 8), 3);
    }

    #[test]
    fn a_clean_path_keeps_the_least_count() {
        let mut a = Arrivals::default();
        feed(&mut a, Instant::now(), 5_000, |_| false);
        assert!(a.loss() < 0.001, "loss {}", a.loss());
        assert_eq!(a.multiplier(3, 8), 3);
    }

    #[test]
    fn the_count_grows_with_the_loss_measured() {
        // Every 20th advert lost (5 %), then every 12th (8.3 %).
        let mut a = Arrivals::default();
        let t = feed(&mut a, Instant::now(), 3_000, |i| i % 20 == 7);
        assert!((a.loss() - 0.05).abs() < 0.01, "loss {}", a.loss());
        assert_eq!(a.multiplier(3, 8), 6);
        feed(&mut a, t, 3_000, |i| i % 12 == 3);
        assert!((a.loss() - 0.083).abs() < 0.01, "loss {}", a.loss());
        assert_eq!(a.multiplier(3, 8), 7);
        // Beyond what `most` allows, `most` is the answer.
        assert_eq!(multiplier_for(0.5, 3, 8), 8);
    }

    #[test]
    fn the_first_losses_raise_the_count_at_once() {
        let mut a = Arrivals::default();
        feed(&mut a, Instant::now(), 20, |i| i == 10);
        assert!(a.multiplier(3, 8) >= 4, "loss {}", a.loss());
    }

    #[test]
    fn the_first_loss_after_a_long_clean_stretch_raises_the_count_at_once() {
        // Minutes of clean adverts: the long estimate is near zero.
        let mut a = Arrivals::default();
        let t = feed(&mut a, Instant::now(), 20_000, |_| false);
        assert_eq!(a.multiplier(3, 8), 3);
        // One advert lost: the wait goes up at once, not after hundreds of adverts.
        let t = feed(&mut a, t, 2, |i| i == 0);
        assert!(a.multiplier(3, 8) >= 6, "loss {}", a.loss());
        // And comes back to the least once the path has been clean for a while.
        feed(&mut a, t, 200, |_| false);
        assert_eq!(a.multiplier(3, 8), 3, "loss {}", a.loss());
    }

    #[test]
    fn bursts_and_long_silences_are_not_counted_as_loss() {
        let mut a = Arrivals::default();
        let t0 = Instant::now();
        a.record(t0, I, 8);
        // A repeated notice 1 ms later adds nothing.
        a.record(t0 + Duration::from_millis(1), I, 8);
        assert_eq!(a.sent, PRIOR_ADVERTS);
        // A 2-second silence (holder restarted, or this node stalled) is not 99 lost adverts.
        a.record(t0 + Duration::from_secs(2), I, 8);
        assert_eq!(a.lost, PRIOR_LOSS * PRIOR_ADVERTS);
        // A late advert (1.6 intervals) counts as one lost.
        a.record(t0 + Duration::from_secs(2) + I * 8 / 5, I, 8);
        assert!(a.lost > 1.0 && a.sent > PRIOR_ADVERTS + 1.0, "{a:?}");
    }

    #[test]
    fn the_loss_estimate_forgets_an_old_burst() {
        let mut a = Arrivals::default();
        let t = feed(&mut a, Instant::now(), 400, |i| i % 4 == 0);
        assert_eq!(a.multiplier(3, 8), 8, "loss {}", a.loss());
        feed(&mut a, t, 3_000, |_| false);
        assert_eq!(a.multiplier(3, 8), 3, "loss {}", a.loss());
    }
}
