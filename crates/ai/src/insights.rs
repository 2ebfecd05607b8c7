//! Behaviour insights: what a lead's history (all campaigns, all channels) says about how to
//! write to them. Pure: computed from the history and the earlier messages, with no clock
//! beyond the `now` passed in, and with absolute dates only so that the same history always
//! gives the same insights (and the same prompt, and the same cache key).

use chrono::{DateTime, Timelike, Utc};
use engager_domain::{Channel, EventKind, LeadHistory, TimeZone};
use serde::{Deserialize, Serialize};

/// A message sent to the lead earlier, as the personalizer may reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierMessage {
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// Its channel.
    pub channel: Channel,
    /// Its subject, if any.
    pub subject: Option<String>,
    /// Its text body.
    pub body: String,
    /// The ledger row it came from, to match events.
    pub delivery: Option<engager_domain::DeliveryId>,
}

/// What the history says, as a typed value shown by `explain` and `preview` and fed to the
/// prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insights {
    /// Messages sent so far.
    pub messages_sent: u32,
    /// Opens, clicks, replies.
    pub opens: u32,
    /// Clicks.
    pub clicks: u32,
    /// Replies (and conversions).
    pub replies: u32,
    /// Channels the lead engaged on (opened, clicked, replied), in `Channel::ALL` order.
    pub channels_engaged: Vec<String>,
    /// The local hour (lead's zone) of most engagement, when there is any.
    pub engaged_hour: Option<u32>,
    /// Median hours from a send to the first engagement with it.
    pub hours_to_engage: Option<u32>,
    /// Negative signals seen (unsubscribe, complaint, negative reply, ...).
    pub negative_signals: Vec<String>,
    /// The last interaction: `<kind> on <date>`.
    pub last_interaction: Option<String>,
    /// Sent messages since the last engagement.
    pub unengaged_streak: u32,
    /// Earlier subjects, oldest first, each with what happened to it.
    pub earlier_subjects: Vec<String>,
    /// Whether the next message should reference an earlier one (it was opened or clicked,
    /// not answered).
    pub reference_previous: bool,
    /// The tone to take, within the brand voice.
    pub tone: String,
}

impl Insights {
    /// One line per fact, for `explain` and `preview`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{} message(s) sent; {} open(s), {} click(s), {} reply(ies)",
            self.messages_sent, self.opens, self.clicks, self.replies
        )];
        if !self.channels_engaged.is_empty() {
            out.push(format!("engages on: {}", self.channels_engaged.join(", ")));
        }
        if let Some(h) = self.engaged_hour {
            out.push(format!("usually engages around {h:02}:00 local time"));
        }
        if let Some(h) = self.hours_to_engage {
            out.push(format!("typically engages {h} hour(s) after a send"));
        }
        if !self.negative_signals.is_empty() {
            out.push(format!(
                "negative signals: {}",
                self.negative_signals.join(", ")
            ));
        }
        if let Some(last) = &self.last_interaction {
            out.push(format!("last interaction: {last}"));
        }
        if self.unengaged_streak > 0 {
            out.push(format!(
                "{} message(s) without any reaction since the last engagement",
                self.unengaged_streak
            ));
        }
        for s in &self.earlier_subjects {
            out.push(format!("earlier: {s}"));
        }
        if self.reference_previous {
            out.push("reference the previous message naturally".to_owned());
        }
        out.push(format!("tone: {}", self.tone));
        out
    }
}

/// Computes the insights from the history, the earlier messages and the lead's zone.
pub fn analyse(
    history: &LeadHistory,
    earlier: &[EarlierMessage],
    zone: TimeZone,
    now: DateTime<Utc>,
) -> Insights {
    let events: Vec<_> = history.events.iter().filter(|e| e.at <= now).collect();
    let count =
        |kinds: &[EventKind]| events.iter().filter(|e| kinds.contains(&e.kind)).count() as u32;
    let opens = count(&[EventKind::Opened]);
    let clicks = count(&[EventKind::Clicked]);
    let replies = count(&[EventKind::Replied, EventKind::Converted]);
    let messages_sent = history
        .touches
        .iter()
        .filter(|t| t.sent && t.at <= now)
        .count()
        .max(earlier.len()) as u32;

    // Channels engaged on: the channel of the touch an engagement concerns.
    let mut engaged = Vec::new();
    for e in events.iter().filter(|e| e.kind.is_engagement()) {
        let channel = e
            .delivery
            .and_then(|d| history.touches.iter().find(|t| t.delivery == Some(d)))
            .or_else(|| history.touches.iter().rfind(|t| t.sent && t.at <= e.at))
            .map(|t| t.channel);
        if let Some(c) = channel {
            if !engaged.contains(&c) {
                engaged.push(c);
            }
        }
    }
    let channels_engaged = Channel::ALL
        .iter()
        .filter(|c| engaged.contains(c))
        .map(|c| c.as_str().to_owned())
        .collect();

    let mut hours = [0u32; 24];
    let mut delays = Vec::new();
    for e in events.iter().filter(|e| e.kind.is_engagement()) {
        hours[e.at.with_timezone(&zone.tz()).hour() as usize] += 1;
        if let Some(touch) = history
            .touches
            .iter()
            .rfind(|t| t.sent && t.at <= e.at && (e.delivery.is_none() || t.delivery == e.delivery))
        {
            delays.push((e.at - touch.at).num_hours().max(0) as u32);
        }
    }
    let engaged_hour = (0..24u32)
        .filter(|h| hours[*h as usize] > 0)
        .max_by_key(|h| (hours[*h as usize], std::cmp::Reverse(*h)));
    delays.sort_unstable();
    let hours_to_engage = delays.get(delays.len().saturating_sub(1) / 2).copied();

    let mut negative_signals: Vec<String> = Vec::new();
    for e in events.iter().filter(|e| e.kind.is_negative_signal()) {
        let kind = e.kind.as_str().to_owned();
        if !negative_signals.contains(&kind) {
            negative_signals.push(kind);
        }
    }
    let last_interaction = events
        .iter()
        .filter(|e| e.kind != EventKind::Sent && e.kind != EventKind::Delivered)
        .max_by_key(|e| e.at)
        .map(|e| format!("{} on {}", e.kind, e.at.format("%Y-%m-%d")));

    let reaction = |m: &EarlierMessage| -> Option<EventKind> {
        let touch = engager_domain::Touch {
            at: m.at,
            channel: m.channel,
            sent: true,
            delivery: m.delivery,
            step: None,
        };
        history.reaction_to(&touch, now)
    };
    let earlier_subjects = earlier
        .iter()
        .map(|m| {
            let what = m.subject.clone().unwrap_or_else(|| first_words(&m.body, 8));
            let outcome = match reaction(m) {
                Some(k) => k.as_str(),
                None => "no reaction",
            };
            format!(
                "{} {} \"{}\" ({outcome})",
                m.at.format("%Y-%m-%d"),
                m.channel,
                what
            )
        })
        .collect();
    let reference_previous = earlier
        .last()
        .and_then(reaction)
        .is_some_and(|k| matches!(k, EventKind::Opened | EventKind::Clicked));
    let unengaged_streak = history.unengaged_streak(now);
    let tone = if !negative_signals.is_empty() {
        "brief and respectful; offer an easy way out"
    } else if clicks > 0 || replies > 0 {
        "warm and specific; build on their interest"
    } else if unengaged_streak >= 2 {
        "short and low-pressure; a new angle, no guilt"
    } else {
        "friendly and concise"
    }
    .to_owned();
    Insights {
        messages_sent,
        opens,
        clicks,
        replies,
        channels_engaged,
        engaged_hour,
        hours_to_engage,
        negative_signals,
        last_interaction,
        unengaged_streak,
        earlier_subjects,
        reference_previous,
        tone,
    }
}

fn first_words(text: &str, n: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().take(n).collect();
    let mut s = words.join(" ");
    if text.split_whitespace().count() > n {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use engager_domain::history::{Engagement, Touch};
    use engager_domain::DeliveryId;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn opens_and_clicks_give_timing_channels_and_a_reference() {
        let sent = at("2026-03-02T15:00:00Z");
        let history = LeadHistory {
            touches: vec![Touch {
                at: sent,
                channel: Channel::Email,
                sent: true,
                delivery: Some(DeliveryId(7)),
                step: None,
            }],
            events: vec![
                Engagement {
                    at: at("2026-03-02T17:00:00Z"),
                    kind: EventKind::Opened,
                    delivery: Some(DeliveryId(7)),
                },
                Engagement {
                    at: at("2026-03-02T18:30:00Z"),
                    kind: EventKind::Clicked,
                    delivery: Some(DeliveryId(7)),
                },
            ],
            consents: Vec::new(),
        };
        let earlier = vec![EarlierMessage {
            at: sent,
            channel: Channel::Email,
            subject: Some("A question about Northwind".into()),
            body: "Hi Jane".into(),
            delivery: Some(DeliveryId(7)),
        }];
        let zone = TimeZone::parse("America/Denver").unwrap();
        let i = analyse(&history, &earlier, zone, at("2026-03-05T12:00:00Z"));
        assert_eq!(
            (i.messages_sent, i.opens, i.clicks, i.replies),
            (1, 1, 1, 0)
        );
        assert_eq!(i.channels_engaged, vec!["email".to_owned()]);
        assert_eq!(i.engaged_hour, Some(10));
        assert_eq!(i.hours_to_engage, Some(2));
        assert!(i.reference_previous);
        assert_eq!(
            i.earlier_subjects,
            vec!["2026-03-02 email \"A question about Northwind\" (clicked)".to_owned()]
        );
        assert_eq!(i.last_interaction.as_deref(), Some("clicked on 2026-03-02"));
        assert!(i.tone.starts_with("warm"));
    }

    #[test]
    fn a_new_lead_has_neutral_insights() {
        let zone = TimeZone::parse("UTC").unwrap();
        let i = analyse(
            &LeadHistory::default(),
            &[],
            zone,
            at("2026-03-05T12:00:00Z"),
        );
        assert_eq!(i.messages_sent, 0);
        assert!(!i.reference_previous);
        assert_eq!(i.tone, "friendly and concise");
    }
}
