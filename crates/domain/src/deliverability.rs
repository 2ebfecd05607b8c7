//! The deliverability monitor's judgement: rolling bounce, complaint, unsubscribe and reply
//! rates of one sending account against warn and halt thresholds, after a minimum sample.
//! Pure: the engine gathers the counts and acts on the verdict (slow down, halt, alert).

use std::fmt;

use crate::stats::Proportion;

/// What one sending account (or domain) did over the monitor's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendingCounts {
    /// Messages sent.
    pub sent: u64,
    /// Hard bounces.
    pub hard_bounces: u64,
    /// Spam complaints.
    pub complaints: u64,
    /// Unsubscribes.
    pub unsubscribes: u64,
    /// Replies.
    pub replies: u64,
}

/// A warn and a halt level for one rate (fractions: 0.02 is 2%).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// Above this the account slows down and administrators are warned.
    pub warn: f64,
    /// Above this the account stops sending until a person resumes it.
    pub halt: f64,
}

/// The monitor's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Sends needed before any rate is judged.
    pub min_sample: u64,
    /// Hard bounces (defaults: warn above 2%, halt above 5%).
    pub hard_bounces: Levels,
    /// Complaints (defaults: warn above 0.1%, halt above 0.3%, the Gmail/Yahoo bulk-sender
    /// ceiling).
    pub complaints: Levels,
    /// Unsubscribes (defaults: warn above 2%, halt above 5%).
    pub unsubscribes: Levels,
    /// The share of the normal rate an account keeps while a warning stands.
    pub slow_down: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_sample: 100,
            hard_bounces: Levels {
                warn: 0.02,
                halt: 0.05,
            },
            complaints: Levels {
                warn: 0.001,
                halt: 0.003,
            },
            unsubscribes: Levels {
                warn: 0.02,
                halt: 0.05,
            },
            slow_down: 0.5,
        }
    }
}

/// How an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Too few sends to judge.
    Learning,
    /// Every rate under its warn level.
    Healthy,
    /// Some rate above its warn level: send slower, warn administrators.
    Warning,
    /// Some rate above its halt level: stop sending, alert administrators.
    Halted,
}

impl Standing {
    /// The name shown in tables and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Learning => "learning",
            Standing::Healthy => "healthy",
            Standing::Warning => "warning",
            Standing::Halted => "halted",
        }
    }
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rate that crossed a level.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `hard_bounces`, `complaints` or `unsubscribes`.
    pub metric: &'static str,
    /// The observed rate.
    pub rate: f64,
    /// The level it crossed.
    pub level: f64,
    /// `Warning` or `Halted`.
    pub standing: Standing,
    /// The counts behind it.
    pub count: u64,
    /// Out of this many sends.
    pub sent: u64,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:.2}% ({} of {} sent) is above the {} level of {:.2}%",
            self.metric.replace('_', " "),
            self.rate * 100.0,
            self.count,
            self.sent,
            if self.standing == Standing::Halted {
                "halt"
            } else {
                "warn"
            },
            self.level * 100.0
        )
    }
}

/// The verdict on one account.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The worst standing of any rate.
    pub standing: Standing,
    /// Every rate that crossed a level, worst first.
    pub findings: Vec<Finding>,
    /// The share of its configured rate the account may use (1.0, the slow-down while
    /// warned, or 0.0 when halted).
    pub rate_factor: f64,
    /// The reply rate, for display.
    pub reply_rate: Option<f64>,
}

/// Judges an account's counts against the thresholds.
pub fn assess(counts: &SendingCounts, thresholds: &Thresholds) -> Assessment {
    let reply_rate = Proportion::new(counts.replies, counts.sent).rate();
    if counts.sent < thresholds.min_sample {
        return Assessment {
            standing: Standing::Learning,
            findings: Vec::new(),
            rate_factor: 1.0,
            reply_rate,
        };
    }
    let mut findings = Vec::new();
    for (metric, count, levels) in [
        ("hard_bounces", counts.hard_bounces, thresholds.hard_bounces),
        ("complaints", counts.complaints, thresholds.complaints),
        ("unsubscribes", counts.unsubscribes, thresholds.unsubscribes),
    ] {
        let rate = Proportion::new(count, counts.sent).rate().unwrap_or(0.0);
        let (standing, level) = if rate > levels.halt {
            (Standing::Halted, levels.halt)
        } else if rate > levels.warn {
            (Standing::Warning, levels.warn)
        } else {
            continue;
        };
        findings.push(Finding {
            metric,
            rate,
            level,
            standing,
            count: count.min(counts.sent),
            sent: counts.sent,
        });
    }
    findings.sort_by(|a, b| b.standing.cmp(&a.standing));
    let standing = findings.first().map_or(Standing::Healthy, |f| f.standing);
    let rate_factor = match standing {
        Standing::Halted => 0.0,
        Standing::Warning => thresholds.slow_down.clamp(0.0, 1.0),
        Standing::Learning | Standing::Healthy => 1.0,
    };
    Assessment {
        standing,
        findings,
        rate_factor,
        reply_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(sent: u64, hard_bounces: u64, complaints: u64, unsubscribes: u64) -> SendingCounts {
        SendingCounts {
            sent,
            hard_bounces,
            complaints,
            unsubscribes,
            replies: 0,
        }
    }

    #[test]
    fn table_of_verdicts_with_their_reasons() {
        let t = Thresholds::default();
        let cases = [
            (counts(99, 50, 0, 0), Standing::Learning, None),
            (counts(1000, 20, 1, 20), Standing::Healthy, None),
            (
                counts(1000, 21, 0, 0),
                Standing::Warning,
                Some("hard bounces 2.10% (21 of 1000 sent) is above the warn level of 2.00%"),
            ),
            (
                counts(1000, 51, 0, 0),
                Standing::Halted,
                Some("hard bounces 5.10% (51 of 1000 sent) is above the halt level of 5.00%"),
            ),
            (
                counts(10_000, 0, 11, 0),
                Standing::Warning,
                Some("complaints 0.11% (11 of 10000 sent) is above the warn level of 0.10%"),
            ),
            (
                counts(10_000, 300, 31, 0),
                Standing::Halted,
                Some("complaints 0.31% (31 of 10000 sent) is above the halt level of 0.30%"),
            ),
            (
                counts(1000, 0, 0, 60),
                Standing::Halted,
                Some("unsubscribes 6.00% (60 of 1000 sent) is above the halt level of 5.00%"),
            ),
        ];
        for (input, standing, first) in cases {
            let a = assess(&input, &t);
            assert_eq!(a.standing, standing, "{input:?}");
            assert_eq!(
                a.findings.first().map(ToString::to_string).as_deref(),
                first,
                "{input:?}"
            );
        }
    }

    #[test]
    fn the_rate_factor_slows_then_stops() {
        let t = Thresholds::default();
        assert_eq!(assess(&counts(1000, 0, 0, 0), &t).rate_factor, 1.0);
        assert_eq!(assess(&counts(1000, 30, 0, 0), &t).rate_factor, 0.5);
        assert_eq!(assess(&counts(1000, 60, 0, 0), &t).rate_factor, 0.0);
    }

    #[test]
    fn the_worst_finding_comes_first() {
        let a = assess(&counts(1000, 30, 5, 0), &Thresholds::default());
        assert_eq!(a.standing, Standing::Halted);
        assert_eq!(a.findings[0].metric, "complaints");
        assert_eq!(a.findings[1].metric, "hard_bounces");
    }
}
