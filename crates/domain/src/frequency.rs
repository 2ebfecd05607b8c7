//! The contact budget: a minimum gap between touches and a cap per rolling week, counted
//! across all campaigns and channels of a lead.

use chrono::{DateTime, Duration, Utc};

/// The frequency rules for one lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyPolicy {
    /// Minimum time between two touches.
    pub min_gap: Duration,
    /// Maximum touches in any rolling 7-day window.
    pub max_per_week: u32,
}

impl Default for FrequencyPolicy {
    fn default() -> Self {
        Self {
            min_gap: Duration::days(2),
            max_per_week: 3,
        }
    }
}

/// Why and until when the budget holds a touch back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The earliest instant a touch fits the budget.
    pub until: DateTime<Utc>,
    /// A sentence for the trace.
    pub reason: String,
}

impl FrequencyPolicy {
    /// The earliest instant at or after `now` at which one more touch fits the budget, given
    /// the lead's other touches (sent and already scheduled). `Ok(())` means `now` fits.
    pub fn earliest_touch(
        &self,
        touches: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Result<(), Hold> {
        let mut sorted: Vec<DateTime<Utc>> = touches.to_vec();
        sorted.sort();
        let mut at = now;
        let mut reasons = Vec::new();
        if let Some(last) = sorted.last() {
            let gap_end = *last + self.min_gap;
            if gap_end > at {
                at = gap_end;
                reasons.push(format!(
                    "last touch at {} and the minimum gap is {}h",
                    last.format("%Y-%m-%d %H:%M UTC"),
                    self.min_gap.num_hours()
                ));
            }
        }
        let week = Duration::days(7);
        loop {
            let in_window: Vec<&DateTime<Utc>> = sorted
                .iter()
                .filter(|t| **t > at - week && **t <= at)
                .collect();
            if (in_window.len() as u32) < self.max_per_week {
                break;
            }
            at = *in_window[0] + week;
            reasons.push(format!(
                "{} touches in the 7 days before, cap is {}",
                in_window.len(),
                self.max_per_week
            ));
        }
        if at == now {
            Ok(())
        } else {
            Err(Hold {
                until: at,
                reason: reasons.join("; "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_770_000_000 + h * 3600, 0).unwrap()
    }

    #[test]
    fn gap_and_cap() {
        let p = FrequencyPolicy {
            min_gap: Duration::hours(48),
            max_per_week: 2,
        };
        assert!(p.earliest_touch(&[], at(0)).is_ok());
        assert_eq!(
            p.earliest_touch(&[at(0)], at(10)).unwrap_err().until,
            at(48)
        );
        assert!(p.earliest_touch(&[at(0)], at(48)).is_ok());
        let hold = p.earliest_touch(&[at(0), at(50)], at(100)).unwrap_err();
        assert_eq!(hold.until, at(168));
        assert!(hold.reason.contains("cap is 2"), "{}", hold.reason);
    }

    proptest! {
        /// Adding touches at the instants the budget proposes never breaks the budget.
        #[test]
        fn proposed_touches_respect_the_budget(
            gap_h in 0i64..96, cap in 1u32..6, tries in proptest::collection::vec(0i64..72, 1..30)
        ) {
            let p = FrequencyPolicy { min_gap: Duration::hours(gap_h), max_per_week: cap };
            let mut touches: Vec<DateTime<Utc>> = Vec::new();
            let mut now = at(0);
            for step in tries {
                now += Duration::hours(step);
                let t = match p.earliest_touch(&touches, now) { Ok(()) => now, Err(h) => h.until };
                prop_assert!(p.earliest_touch(&touches, t).is_ok());
                touches.push(t);
                now = t;
            }
            touches.sort();
            for w in touches.windows(2) { prop_assert!(w[1] - w[0] >= p.min_gap); }
            for (i, t) in touches.iter().enumerate() {
                let n = touches[..=i].iter().filter(|x| **x > *t - Duration::days(7)).count();
                prop_assert!(n as u32 <= cap);
            }
        }
    }
}
