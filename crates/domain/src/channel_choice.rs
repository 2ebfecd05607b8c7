//! Which of a step's channels to try first for one lead: each channel the step allows is
//! scored by the step's own order, the lead's stated preference, the lead's engagement on it,
//! and how well it works for similar leads (same industry, else country). The planner tries
//! channels in score order and falls back down the list; the trace shows the scores.
//!
//! The weights keep the step's order unless the evidence is clear: a stated preference or a
//! lead who answers on another channel moves it, a small difference in effectiveness does not.

use std::collections::HashMap;

use crate::{Channel, EventKind, LeadHistory};

/// What similar leads did on one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelEvidence {
    /// Messages sent.
    pub sent: u64,
    /// Positive replies (replies not marked negative).
    pub positive: u64,
}

/// One channel's score and what it is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelScore {
    /// The channel.
    pub channel: Channel,
    /// The sum of the parts.
    pub total: f64,
    /// (part, value): `order`, `preferred`, `engaged`, `similar leads`, `not opened`.
    pub parts: Vec<(&'static str, f64)>,
}

impl ChannelScore {
    /// `sms 1.35 (order 0.85, preferred +0.50)`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, v)| v.abs() >= 0.005)
            .map(|(name, v)| {
                if *name == "order" {
                    format!("{name} {v:.2}")
                } else {
                    format!("{name} {v:+.2}")
                }
            })
            .collect();
        format!("{} {:.2} ({})", self.channel, self.total, parts.join(", "))
    }
}

/// How much each kind of evidence weighs.
const ORDER_STEP: f64 = 0.15;
const PREFERRED: f64 = 0.5;
const ENGAGED_REPLY: f64 = 0.25;
const ENGAGED_CLICK: f64 = 0.1;
const ENGAGED_OPEN: f64 = 0.03;
const ENGAGED_CAP: f64 = 0.6;
/// Sends of prior pulling each channel's rate toward the pooled rate of the step's channels.
const PRIOR_SENDS: f64 = 20.0;
/// Rate difference (fraction) to score: 3 × 0.05 = 0.15, one step of order.
const SIMILAR_WEIGHT: f64 = 3.0;
/// An ignored email moves email below the others.
const NOT_OPENED: f64 = -0.5;

/// Scores the step's channels for a lead, best first (ties keep the step's order).
/// `similar` is what similar leads did per channel; `demote_email` says the lead ignored the
/// previous email.
pub fn score_channels(
    step_channels: &[Channel],
    preferred: Option<Channel>,
    history: &LeadHistory,
    similar: &HashMap<Channel, ChannelEvidence>,
    demote_email: bool,
) -> Vec<ChannelScore> {
    // The lead's engagement per channel: events tied to a delivery whose touch says its
    // channel.
    let mut engaged: HashMap<Channel, f64> = HashMap::new();
    for e in &history.events {
        let Some(channel) = e.delivery.and_then(|d| {
            history
                .touches
                .iter()
                .find(|t| t.delivery == Some(d))
                .map(|t| t.channel)
        }) else {
            continue;
        };
        let w = match e.kind {
            EventKind::Replied => ENGAGED_REPLY,
            EventKind::Clicked => ENGAGED_CLICK,
            EventKind::Opened => ENGAGED_OPEN,
            _ => 0.0,
        };
        *engaged.entry(channel).or_default() += w;
    }
    let pooled = {
        let (s, p) = step_channels
            .iter()
            .filter_map(|c| similar.get(c))
            .fold((0u64, 0u64), |(s, p), e| {
                (s + e.sent, p + e.positive.min(e.sent))
            });
        if s == 0 {
            0.0
        } else {
            p as f64 / s as f64
        }
    };
    let smoothed = |c: &Channel| {
        let e = similar.get(c).copied().unwrap_or_default();
        (e.positive.min(e.sent) as f64 + PRIOR_SENDS * pooled) / (e.sent as f64 + PRIOR_SENDS)
    };
    let mean = if step_channels.is_empty() {
        0.0
    } else {
        step_channels.iter().map(smoothed).sum::<f64>() / step_channels.len() as f64
    };
    let mut scores: Vec<(usize, ChannelScore)> = step_channels
        .iter()
        .enumerate()
        .map(|(i, &channel)| {
            let mut parts = vec![("order", 1.0 - ORDER_STEP * i as f64)];
            if preferred == Some(channel) {
                parts.push(("preferred", PREFERRED));
            }
            let e = engaged
                .get(&channel)
                .copied()
                .unwrap_or(0.0)
                .min(ENGAGED_CAP);
            if e > 0.0 {
                parts.push(("engaged", e));
            }
            if pooled > 0.0 {
                parts.push((
                    "similar leads",
                    SIMILAR_WEIGHT * (smoothed(&channel) - mean),
                ));
            }
            if demote_email && channel == Channel::Email {
                parts.push(("not opened", NOT_OPENED));
            }
            let total = parts.iter().map(|(_, v)| v).sum();
            (
                i,
                ChannelScore {
                    channel,
                    total,
                    parts,
                },
            )
        })
        .collect();
    scores.sort_by(|a, b| b.1.total.total_cmp(&a.1.total).then(a.0.cmp(&b.0)));
    scores.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;
    use crate::{DeliveryId, Engagement, Touch};

    fn order(scores: &[ChannelScore]) -> Vec<Channel> {
        scores.iter().map(|s| s.channel).collect()
    }

    #[test]
    fn without_evidence_the_step_order_holds() {
        let s = score_channels(
            &[Channel::Linkedin, Channel::Sms],
            None,
            &LeadHistory::default(),
            &HashMap::new(),
            false,
        );
        assert_eq!(order(&s), [Channel::Linkedin, Channel::Sms]);
        assert_eq!(s[0].describe(), "linkedin 1.00 (order 1.00)");
    }

    #[test]
    fn a_stated_preference_and_engagement_move_a_channel_up() {
        let steps = [Channel::Email, Channel::Sms];
        let s = score_channels(
            &steps,
            Some(Channel::Sms),
            &LeadHistory::default(),
            &HashMap::new(),
            false,
        );
        assert_eq!(order(&s), [Channel::Sms, Channel::Email]);
        assert!(s[0].describe().contains("preferred +0.50"));
        // A lead who replied by SMS before.
        let t = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap();
        let history = LeadHistory {
            touches: vec![Touch {
                at: t,
                channel: Channel::Sms,
                sent: true,
                delivery: Some(DeliveryId(9)),
                step: None,
            }],
            events: vec![Engagement {
                at: t,
                kind: EventKind::Replied,
                delivery: Some(DeliveryId(9)),
            }],
            consents: Vec::new(),
        };
        let s = score_channels(&steps, None, &history, &HashMap::new(), false);
        assert_eq!(order(&s), [Channel::Sms, Channel::Email], "{s:?}");
        // An ignored email also demotes email.
        let s = score_channels(&steps, None, &LeadHistory::default(), &HashMap::new(), true);
        assert_eq!(order(&s), [Channel::Sms, Channel::Email]);
    }

    #[test]
    fn only_clear_evidence_from_similar_leads_changes_the_order() {
        let steps = [Channel::Linkedin, Channel::Sms];
        let small: HashMap<_, _> = [
            (
                Channel::Linkedin,
                ChannelEvidence {
                    sent: 100,
                    positive: 5,
                },
            ),
            (
                Channel::Sms,
                ChannelEvidence {
                    sent: 100,
                    positive: 7,
                },
            ),
        ]
        .into();
        let s = score_channels(&steps, None, &LeadHistory::default(), &small, false);
        assert_eq!(order(&s), [Channel::Linkedin, Channel::Sms], "{s:?}");
        let clear: HashMap<_, _> = [
            (
                Channel::Linkedin,
                ChannelEvidence {
                    sent: 300,
                    positive: 6,
                },
            ),
            (
                Channel::Sms,
                ChannelEvidence {
                    sent: 300,
                    positive: 45,
                },
            ),
        ]
        .into();
        let s = score_channels(&steps, None, &LeadHistory::default(), &clear, false);
        assert_eq!(order(&s), [Channel::Sms, Channel::Linkedin], "{s:?}");
        assert!(s[0].describe().contains("similar leads +"));
    }
}
