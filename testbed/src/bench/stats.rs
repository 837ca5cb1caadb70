//! Summaries of samples the harness reports: medians, nearest-rank percentiles, min and max.

/// A sample's summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median (nearest rank, the lower middle for an even count).
    pub median: f64,
    /// 99th percentile by nearest rank (the largest below 100 samples).
    pub p99: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

/// Nearest-rank percentile `p` of sorted values.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Summary {
    /// The summary of `samples`; `None` when there are none (or one is not a number).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Summary {
            n: s.len(),
            median: nearest_rank(&s, 50.0),
            p99: nearest_rank(&s, 99.0),
            min: s[0],
            max: s[s.len() - 1],
        })
    }
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// Where a median below a target stands against the rounds: both ranges, and whether they
/// overlap ("15.2–18.2 against 15.8–18.8 Gbit/s: the rounds' ranges overlap"), so a miss within
/// the run's spread reads as one.
pub fn ranges_against(ours: &[f64], theirs: &[f64], unit: &str) -> String {
    let (o, t) = (summary(ours), summary(theirs));
    let overlap = if o.max >= t.min {
        "the rounds' ranges overlap"
    } else {
        "every round below the other's slowest"
    };
    format!(
        "{:.2}–{:.2} against {:.2}–{:.2} {unit}: {overlap}",
        o.min, o.max, t.min, t.max
    )
}

/// The summary of `v`, all zeros when it is empty (a case with no sample prints as 0).
pub fn summary(v: &[f64]) -> Summary {
    Summary::of(v).unwrap_or(Summary {
        n: 0,
        median: 0.0,
        p99: 0.0,
        min: 0.0,
        max: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_say_whether_they_overlap() {
        assert_eq!(
            ranges_against(&[15.0, 18.0], &[17.0, 19.0], "Gbit/s"),
            "15.00–18.00 against 17.00–19.00 Gbit/s: the rounds' ranges overlap"
        );
        assert!(ranges_against(&[1.0, 2.0], &[3.0], "x").ends_with("below the other's slowest"));
    }

    #[test]
    fn summaries_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!(
            (s.median, s.p99, s.min, s.max, s.n),
            (10.0, 20.0, 1.0, 20.0, 20)
        );
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.p99), (2.0, 3.0));
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(3.0, 2.0), 1.5);
    }
}
