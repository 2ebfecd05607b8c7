//! The contact budget: a minimum gap between touches and a cap per rolling week, counted
//! across all campaigns and channels of a lead; per-channel limits on top; a cooldown after a
//! reply; fatigue (touches without any engagement lengthen the next gap); and negative
//! signals that pause or end outreach to the lead.
//!
//! Invariant: a touch placed at or after the instant the budget allows never breaks the
//! budget, counting every touch sent or scheduled (property-tested below and in the engine's
//! simulation test).

use chrono::{DateTime, Duration, Utc};

use crate::campaign::Channel;
use crate::event::EventKind;
use crate::history::LeadHistory;

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

/// Limits per channel (each a gap and weekly cap counting that channel's touches only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelLimits([Option<FrequencyPolicy>; 3]);

fn channel_index(channel: Channel) -> usize {
    match channel {
        Channel::Email => 0,
        Channel::Sms => 1,
        Channel::Linkedin => 2,
    }
}

impl ChannelLimits {
    /// The limit of a channel, if any.
    pub fn get(&self, channel: Channel) -> Option<FrequencyPolicy> {
        self.0[channel_index(channel)]
    }

    /// These limits with `limit` for `channel`.
    pub fn with(mut self, channel: Channel, limit: FrequencyPolicy) -> Self {
        self.0[channel_index(channel)] = Some(limit);
        self
    }

    /// These limits with `other`'s limits where it has one.
    pub fn overridden_by(mut self, other: &ChannelLimits) -> Self {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        self
    }
}

/// Fatigue: after `after` touches in a row without any engagement, each further one
/// multiplies the minimum gap by `factor`, up to `max_gap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fatigue {
    /// Unanswered touches tolerated before gaps lengthen.
    pub after: u32,
    /// Multiplier per further unanswered touch (1.0 turns fatigue off).
    pub factor: f64,
    /// The longest gap fatigue produces.
    pub max_gap: Duration,
}

impl Fatigue {
    /// No fatigue.
    pub fn off() -> Self {
        Self {
            after: u32::MAX,
            factor: 1.0,
            max_gap: Duration::zero(),
        }
    }

    /// The gap after `streak` unanswered touches, given the base gap.
    pub fn gap(&self, base: Duration, streak: u32) -> Duration {
        if streak <= self.after || self.factor <= 1.0 {
            return base;
        }
        let n = (streak - self.after).min(64) as i32;
        let ms = base.num_milliseconds() as f64 * self.factor.powi(n);
        let longer = Duration::milliseconds(ms.min(i64::MAX as f64 / 2.0) as i64);
        longer.min(self.max_gap.max(base))
    }
}

/// The budget rules beyond the gap and weekly cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetRules {
    /// Per-channel limits.
    pub channels: ChannelLimits,
    /// No touch within this long after a reply (or a conversion).
    pub reply_cooldown: Duration,
    /// Unanswered touches lengthen the gap.
    pub fatigue: Fatigue,
    /// A "not interested" mark or a negative reply pauses the lead this long.
    pub negative_pause: Duration,
}

impl Default for BudgetRules {
    fn default() -> Self {
        Self {
            channels: ChannelLimits::default(),
            reply_cooldown: Duration::days(30),
            fatigue: Fatigue {
                after: 2,
                factor: 1.5,
                max_gap: Duration::days(14),
            },
            negative_pause: Duration::days(180),
        }
    }
}

/// A campaign's changes to the global budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetOverrides {
    /// Minimum gap.
    pub min_gap: Option<Duration>,
    /// Weekly cap.
    pub max_per_week: Option<u32>,
    /// Cooldown after a reply.
    pub reply_cooldown: Option<Duration>,
    /// Per-channel limits (replacing the global limit of the channels listed).
    pub channels: ChannelLimits,
}

/// The budget that applies to one evaluation: global settings with a campaign's overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContactBudget {
    /// Gap and weekly cap across all campaigns and channels.
    pub policy: FrequencyPolicy,
    /// Channel limits, cooldown, fatigue and negative signals.
    pub rules: BudgetRules,
}

/// What the budget says about a touch now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetVerdict {
    /// A touch fits now.
    Clear(BudgetState),
    /// Wait until `until`.
    Hold {
        /// When to look again.
        until: DateTime<Utc>,
        /// `frequency`, `reply_cooldown` or `paused`.
        code: &'static str,
        /// A sentence for the trace.
        reason: String,
    },
    /// Stop outreach to the lead.
    End {
        /// `negative_signal`.
        code: &'static str,
        /// A sentence for the trace.
        reason: String,
    },
}

/// The budget's state when a touch fits, for the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetState {
    /// Touches in the 7 days before now.
    pub recent: usize,
    /// The weekly cap.
    pub cap: u32,
    /// The minimum gap in force (fatigue included).
    pub gap: Duration,
    /// Touches sent in a row without engagement.
    pub streak: u32,
}

impl BudgetState {
    /// `1 touch(es) in the last 7 days (cap 3), minimum gap 48h respected`.
    pub fn describe(&self) -> String {
        let fatigue = if self.streak > 0 {
            format!("; {} touch(es) since the last engagement", self.streak)
        } else {
            String::new()
        };
        format!(
            "{} touch(es) in the last 7 days (cap {}), minimum gap {}h respected{fatigue}",
            self.recent,
            self.cap,
            self.gap.num_hours()
        )
    }
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

impl ContactBudget {
    /// The global budget with a campaign's overrides.
    pub fn new(policy: FrequencyPolicy, rules: BudgetRules, overrides: &BudgetOverrides) -> Self {
        Self {
            policy: FrequencyPolicy {
                min_gap: overrides.min_gap.unwrap_or(policy.min_gap),
                max_per_week: overrides.max_per_week.unwrap_or(policy.max_per_week),
            },
            rules: BudgetRules {
                reply_cooldown: overrides.reply_cooldown.unwrap_or(rules.reply_cooldown),
                channels: rules.channels.overridden_by(&overrides.channels),
                ..rules
            },
        }
    }

    /// Negative signals, the reply cooldown, fatigue, the gap and the weekly cap, at `now`.
    pub fn check(&self, history: &LeadHistory, now: DateTime<Utc>) -> BudgetVerdict {
        if history.touches.is_empty() && history.events.is_empty() {
            // Most evaluations of a large pass: a lead never touched fits at once.
            return BudgetVerdict::Clear(BudgetState {
                recent: 0,
                cap: self.policy.max_per_week,
                gap: self.policy.min_gap,
                streak: 0,
            });
        }
        if let Some(e) = history.latest_of(
            &[
                EventKind::HardBounce,
                EventKind::Unsubscribed,
                EventKind::Complained,
            ],
            now,
        ) {
            return BudgetVerdict::End {
                code: "negative_signal",
                reason: format!(
                    "negative signal: {} on {}; outreach ends",
                    e.kind,
                    day(e.at)
                ),
            };
        }
        if let Some(e) =
            history.latest_of(&[EventKind::NotInterested, EventKind::NegativeReply], now)
        {
            let until = e.at + self.rules.negative_pause;
            if until > now {
                return BudgetVerdict::Hold {
                    until,
                    code: "paused",
                    reason: format!(
                        "negative signal: {} on {}; the lead is paused until {}",
                        e.kind,
                        day(e.at),
                        day(until)
                    ),
                };
            }
        }
        if let Some(e) = history.latest_of(&[EventKind::Replied, EventKind::Converted], now) {
            let until = e.at + self.rules.reply_cooldown;
            if until > now {
                return BudgetVerdict::Hold {
                    until,
                    code: "reply_cooldown",
                    reason: format!(
                        "{} on {}; cooldown of {} days after a reply, until {}",
                        e.kind,
                        day(e.at),
                        self.rules.reply_cooldown.num_days(),
                        day(until)
                    ),
                };
            }
        }
        let streak = history.unengaged_streak(now);
        let gap = self.rules.fatigue.gap(self.policy.min_gap, streak);
        let effective = FrequencyPolicy {
            min_gap: gap,
            max_per_week: self.policy.max_per_week,
        };
        let times = history.touch_times();
        match effective.earliest_touch(&times, now) {
            Ok(()) => BudgetVerdict::Clear(BudgetState {
                recent: times
                    .iter()
                    .filter(|t| **t > now - Duration::days(7) && **t <= now)
                    .count(),
                cap: effective.max_per_week,
                gap,
                streak,
            }),
            Err(hold) => {
                let fatigue = if gap > self.policy.min_gap {
                    format!(
                        " (lengthened from {}h: {streak} touches in a row without engagement)",
                        self.policy.min_gap.num_hours()
                    )
                } else {
                    String::new()
                };
                BudgetVerdict::Hold {
                    until: hold.until,
                    code: "frequency",
                    reason: format!("{}{fatigue}", hold.reason),
                }
            }
        }
    }

    /// The channel's own limit at `now`, if it has one.
    pub fn channel_check(
        &self,
        channel: Channel,
        history: &LeadHistory,
        now: DateTime<Utc>,
    ) -> Result<(), Hold> {
        match self.rules.channels.get(channel) {
            None => Ok(()),
            Some(limit) => limit.earliest_touch(&history.channel_times(channel), now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Engagement, Touch};
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

    fn engaged(h: &mut LeadHistory, at: DateTime<Utc>, kind: EventKind) {
        h.events.push(Engagement {
            at,
            kind,
            delivery: None,
        });
    }

    #[test]
    fn signals_cooldown_and_fatigue() {
        let budget = ContactBudget::new(
            FrequencyPolicy::default(),
            BudgetRules::default(),
            &BudgetOverrides::default(),
        );
        let code = |v: &BudgetVerdict| match v {
            BudgetVerdict::Clear(_) => "clear",
            BudgetVerdict::Hold { code, .. } | BudgetVerdict::End { code, .. } => code,
        };
        // Three unanswered touches a week apart: the gap grows from 48h to 72h.
        let mut h = LeadHistory::from_times(&[at(0), at(168), at(336)]);
        let v = budget.check(&h, at(336 + 60));
        assert_eq!(code(&v), "frequency", "{v:?}");
        let BudgetVerdict::Hold { until, reason, .. } = v else {
            unreachable!()
        };
        assert_eq!(until, at(336 + 72));
        assert!(
            reason.contains("3 touches in a row without engagement"),
            "{reason}"
        );
        // An open resets the streak.
        engaged(&mut h, at(340), EventKind::Opened);
        assert_eq!(code(&budget.check(&h, at(336 + 60))), "clear");
        // A reply starts the cooldown.
        engaged(&mut h, at(400), EventKind::Replied);
        assert_eq!(code(&budget.check(&h, at(500))), "reply_cooldown");
        assert_eq!(code(&budget.check(&h, at(400 + 30 * 24))), "clear");
        // Not interested pauses; a complaint ends.
        engaged(&mut h, at(1200), EventKind::NotInterested);
        assert_eq!(code(&budget.check(&h, at(1300))), "paused");
        assert_eq!(code(&budget.check(&h, at(1200 + 181 * 24))), "clear");
        engaged(&mut h, at(6000), EventKind::Complained);
        assert_eq!(code(&budget.check(&h, at(6001))), "negative_signal");
    }

    #[test]
    fn channel_limits_and_overrides() {
        let rules = BudgetRules {
            channels: ChannelLimits::default().with(
                Channel::Sms,
                FrequencyPolicy {
                    min_gap: Duration::hours(72),
                    max_per_week: 1,
                },
            ),
            ..BudgetRules::default()
        };
        let strict = BudgetOverrides {
            max_per_week: Some(1),
            channels: ChannelLimits::default().with(
                Channel::Email,
                FrequencyPolicy {
                    min_gap: Duration::hours(96),
                    max_per_week: 1,
                },
            ),
            ..BudgetOverrides::default()
        };
        let budget = ContactBudget::new(FrequencyPolicy::default(), rules, &strict);
        assert_eq!(budget.policy.max_per_week, 1);
        assert_eq!(budget.policy.min_gap, Duration::hours(48));
        assert!(budget.rules.channels.get(Channel::Sms).is_some());
        let mut h = LeadHistory::default();
        h.touches.push(Touch::sent(at(0), Channel::Sms));
        assert!(budget.channel_check(Channel::Sms, &h, at(50)).is_err());
        assert!(budget.channel_check(Channel::Email, &h, at(50)).is_ok());
        assert!(budget.channel_check(Channel::Linkedin, &h, at(1)).is_ok());
    }
}
