//! What happened to a lead before an evaluation: its touches (deliveries sent or scheduled,
//! across all campaigns and channels) and its engagement events. The contact budget, fatigue,
//! negative signals, follow-ups by behaviour and the best-time model all read it.

use chrono::{DateTime, Utc};

use crate::campaign::Channel;
use crate::event::EventKind;
use crate::ids::{DeliveryId, EnrollmentId};

/// One touch of a lead: a delivery that was sent or is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// When it was sent, or when it is scheduled.
    pub at: DateTime<Utc>,
    /// Its channel.
    pub channel: Channel,
    /// Whether it was sent (as opposed to still scheduled).
    pub sent: bool,
    /// The ledger row, when known.
    pub delivery: Option<DeliveryId>,
    /// The enrollment and step it belongs to, when known.
    pub step: Option<(EnrollmentId, usize)>,
}

impl Touch {
    /// A sent touch with no ledger reference (tests, projections).
    pub fn sent(at: DateTime<Utc>, channel: Channel) -> Self {
        Self {
            at,
            channel,
            sent: true,
            delivery: None,
            step: None,
        }
    }
}

/// One engagement event of a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engagement {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
    /// The delivery it concerns, when known.
    pub delivery: Option<DeliveryId>,
}

/// A lead's recent touches and events, each list oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadHistory {
    /// Touches, oldest first.
    pub touches: Vec<Touch>,
    /// Engagement events, oldest first.
    pub events: Vec<Engagement>,
    /// Consent evidence (stored records and the lead's own fields), oldest first; filled by
    /// the planner for the compliance gate.
    pub consents: Vec<crate::compliance::ConsentRecord>,
}

impl LeadHistory {
    /// A history of sent touches of unknown channel mix, given as email (tests).
    pub fn from_times(times: &[DateTime<Utc>]) -> Self {
        let mut touches: Vec<Touch> = times
            .iter()
            .map(|t| Touch::sent(*t, Channel::Email))
            .collect();
        touches.sort_by_key(|t| t.at);
        Self {
            touches,
            events: Vec::new(),
            consents: Vec::new(),
        }
    }

    /// The instants of every touch.
    pub fn touch_times(&self) -> Vec<DateTime<Utc>> {
        self.touches.iter().map(|t| t.at).collect()
    }

    /// The instants of the touches on one channel.
    pub fn channel_times(&self, channel: Channel) -> Vec<DateTime<Utc>> {
        self.touches
            .iter()
            .filter(|t| t.channel == channel)
            .map(|t| t.at)
            .collect()
    }

    /// The latest engagement (open, click, reply, conversion) at or before `now`.
    pub fn last_engagement(&self, now: DateTime<Utc>) -> Option<&Engagement> {
        self.events
            .iter()
            .filter(|e| e.kind.is_engagement() && e.at <= now)
            .max_by_key(|e| e.at)
    }

    /// How many touches were sent since the lead last engaged (all of them if it never did):
    /// the length of the current streak of unanswered touches.
    pub fn unengaged_streak(&self, now: DateTime<Utc>) -> u32 {
        let since = self.last_engagement(now).map(|e| e.at);
        self.touches
            .iter()
            .filter(|t| t.sent && t.at <= now && since.is_none_or(|s| t.at > s))
            .count() as u32
    }

    /// The sent touch of a step of an enrollment.
    pub fn step_touch(&self, enrollment: EnrollmentId, step_index: usize) -> Option<&Touch> {
        self.touches
            .iter()
            .filter(|t| t.sent && t.step == Some((enrollment, step_index)))
            .max_by_key(|t| t.at)
    }

    /// The strongest reaction to a touch up to `now`: a reply beats a click beats an open.
    /// Events name their delivery when known; events without one count when they follow the
    /// touch.
    pub fn reaction_to(&self, touch: &Touch, now: DateTime<Utc>) -> Option<EventKind> {
        let rank = |k: EventKind| match k {
            EventKind::Replied | EventKind::Converted => 3,
            EventKind::Clicked => 2,
            EventKind::Opened => 1,
            _ => 0,
        };
        self.events
            .iter()
            .filter(|e| e.at <= now && rank(e.kind) > 0)
            .filter(|e| match (e.delivery, touch.delivery) {
                (Some(d), Some(t)) => d == t,
                _ => e.at >= touch.at,
            })
            .map(|e| e.kind)
            .max_by_key(|k| rank(*k))
    }

    /// The latest event of one of `kinds` at or before `now`.
    pub fn latest_of(&self, kinds: &[EventKind], now: DateTime<Utc>) -> Option<&Engagement> {
        self.events
            .iter()
            .filter(|e| e.at <= now && kinds.contains(&e.kind))
            .max_by_key(|e| e.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_772_000_000 + h * 3600, 0).unwrap()
    }

    #[test]
    fn streaks_and_reactions() {
        let mut h = LeadHistory::from_times(&[at(0), at(50), at(100)]);
        assert_eq!(h.unengaged_streak(at(200)), 3);
        h.events.push(Engagement {
            at: at(60),
            kind: EventKind::Opened,
            delivery: None,
        });
        assert_eq!(h.unengaged_streak(at(200)), 1);
        assert_eq!(
            h.unengaged_streak(at(55)),
            2,
            "the open had not happened yet"
        );
        assert_eq!(
            h.reaction_to(&h.touches[1], at(200)),
            Some(EventKind::Opened)
        );
        assert_eq!(h.reaction_to(&h.touches[2], at(200)), None);
        h.events.push(Engagement {
            at: at(101) + Duration::minutes(5),
            kind: EventKind::Clicked,
            delivery: None,
        });
        assert_eq!(
            h.reaction_to(&h.touches[2], at(200)),
            Some(EventKind::Clicked)
        );
    }
}
