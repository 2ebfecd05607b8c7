//! Analytics reports: sent deliveries grouped by a dimension, with counts, rates and their
//! Wilson intervals, the lead funnel, conversions by last touch and time to first reply.
//!
//! Every rate is per message sent (delivery reports exist for some channels only, so "sent"
//! is the one denominator every channel shares).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use engager_domain::stats::Proportion;
use engager_domain::LeadId;
use engager_store::{DeliveryFact, ReportFacts};
use serde::Serialize;

/// What a report's rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Campaign slug.
    Campaign,
    /// Campaign and step (`spring-outreach #2`).
    Step,
    /// Channel.
    Channel,
    /// The lead's country.
    Country,
    /// The lead's industry.
    Industry,
    /// UTC day of sending.
    Day,
    /// Campaign, step and A/B variant (`spring-outreach #1 b`; steps without an experiment
    /// show as `-`).
    Variant,
}

impl Dimension {
    /// Every dimension, for help texts.
    pub const ALL: [Dimension; 7] = [
        Dimension::Campaign,
        Dimension::Step,
        Dimension::Variant,
        Dimension::Channel,
        Dimension::Country,
        Dimension::Industry,
        Dimension::Day,
    ];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Campaign => "campaign",
            Dimension::Step => "step",
            Dimension::Channel => "channel",
            Dimension::Country => "country",
            Dimension::Industry => "industry",
            Dimension::Day => "day",
            Dimension::Variant => "variant",
        }
    }

    fn key(self, fact: &DeliveryFact) -> String {
        let or_unknown = |s: &str| {
            if s.trim().is_empty() {
                "(unknown)".to_owned()
            } else {
                s.to_owned()
            }
        };
        match self {
            Dimension::Campaign => fact.campaign.clone(),
            Dimension::Step => format!("{} #{}", fact.campaign, fact.step_index + 1),
            Dimension::Channel => fact.channel.to_string(),
            Dimension::Country => or_unknown(&fact.country),
            Dimension::Industry => or_unknown(&fact.industry),
            Dimension::Day => fact.sent_at.format("%Y-%m-%d").to_string(),
            Dimension::Variant => format!(
                "{} #{} {}",
                fact.campaign,
                fact.step_index + 1,
                fact.variant.as_deref().unwrap_or("-")
            ),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dimension {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown report dimension {s:?}: expected one of {}",
                    Dimension::ALL.map(Dimension::as_str).join(", ")
                )
            })
    }
}

/// A rate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// The observed rate (0..1).
    pub rate: f64,
    /// Lower bound of the Wilson interval.
    pub low: f64,
    /// Upper bound of the Wilson interval.
    pub high: f64,
}

fn rate(successes: u64, trials: u64, confidence: f64) -> Option<Rate> {
    let p = Proportion::new(successes, trials);
    let interval = p.wilson(confidence)?;
    Some(Rate {
        rate: p.rate()?,
        low: interval.low,
        high: interval.high,
    })
}

/// The counts and rates of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportRow {
    /// The group's key (`(total)` for the total row).
    pub key: String,
    /// Distinct leads reached.
    pub leads: u64,
    /// Messages sent.
    pub sent: u64,
    /// Delivery reported by the provider.
    pub delivered: u64,
    /// Opened by a person.
    pub opened: u64,
    /// Clicked by a person.
    pub clicked: u64,
    /// Replied (any reply).
    pub replied: u64,
    /// Replied, and the reply was not negative.
    pub positive_replies: u64,
    /// Hard bounces.
    pub bounced: u64,
    /// Complaints.
    pub complaints: u64,
    /// Unsubscribes.
    pub unsubscribed: u64,
    /// Conversions attributed to this group (last touch).
    pub conversions: u64,
    /// Their summed value, where recorded.
    pub conversion_value: f64,
    /// Rates per message sent, by name (`open`, `click`, `reply`, `positive_reply`,
    /// `bounce`, `complaint`, `unsubscribe`, `conversion`).
    pub rates: BTreeMap<&'static str, Rate>,
    /// Median hours from a lead's first message in the group to its first reply.
    pub median_hours_to_reply: Option<f64>,
}

/// One stage of the lead funnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelStage {
    /// The stage.
    pub stage: &'static str,
    /// Distinct leads that reached it.
    pub leads: u64,
    /// Share of the leads touched.
    pub share: f64,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The grouping.
    pub by: Dimension,
    /// The confidence of the intervals.
    pub confidence: f64,
    /// One row per group, largest first.
    pub rows: Vec<ReportRow>,
    /// All groups together.
    pub total: ReportRow,
    /// Leads touched → opened → clicked → replied → positive reply → converted.
    pub funnel: Vec<FunnelStage>,
}

#[derive(Default)]
struct Group {
    row: ReportRow,
    leads: HashSet<LeadId>,
    first_sent: HashMap<LeadId, DateTime<Utc>>,
    first_reply: HashMap<LeadId, DateTime<Utc>>,
}

impl Group {
    fn add(&mut self, f: &DeliveryFact) {
        let r = &mut self.row;
        r.sent += 1;
        r.delivered += u64::from(f.delivered);
        r.opened += u64::from(f.opened);
        r.clicked += u64::from(f.clicked);
        r.replied += u64::from(f.replied);
        r.positive_replies += u64::from(f.replied && !f.negative_reply && !f.neutral_reply);
        r.bounced += u64::from(f.bounced);
        r.complaints += u64::from(f.complained);
        r.unsubscribed += u64::from(f.unsubscribed);
        self.leads.insert(f.lead_id);
        let first = self.first_sent.entry(f.lead_id).or_insert(f.sent_at);
        *first = (*first).min(f.sent_at);
        if let Some(at) = f.first_reply_at {
            let reply = self.first_reply.entry(f.lead_id).or_insert(at);
            *reply = (*reply).min(at);
        }
    }

    fn finish(mut self, key: String, confidence: f64) -> ReportRow {
        let r = &mut self.row;
        r.key = key;
        r.leads = self.leads.len() as u64;
        let sent = r.sent;
        for (name, count) in [
            ("open", r.opened),
            ("click", r.clicked),
            ("reply", r.replied),
            ("positive_reply", r.positive_replies),
            ("bounce", r.bounced),
            ("complaint", r.complaints),
            ("unsubscribe", r.unsubscribed),
            ("conversion", r.conversions),
        ] {
            if let Some(rate) = rate(count, sent, confidence) {
                r.rates.insert(name, rate);
            }
        }
        let mut hours: Vec<f64> = self
            .first_reply
            .iter()
            .filter_map(|(lead, reply)| {
                let sent = self.first_sent.get(lead)?;
                Some((*reply - *sent).num_seconds().max(0) as f64 / 3600.0)
            })
            .collect();
        hours.sort_by(f64::total_cmp);
        r.median_hours_to_reply = match hours.len() {
            0 => None,
            n if n % 2 == 1 => Some(hours[n / 2]),
            n => Some((hours[n / 2 - 1] + hours[n / 2]) / 2.0),
        };
        self.row
    }
}

/// Builds a report from the store's facts.
pub fn build(facts: &ReportFacts, by: Dimension, confidence: f64) -> Report {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut total = Group::default();
    let keys: Vec<String> = facts.deliveries.iter().map(|f| by.key(f)).collect();
    for (fact, key) in facts.deliveries.iter().zip(&keys) {
        match groups.get_mut(key) {
            Some(group) => group.add(fact),
            None => groups.entry(key.clone()).or_default().add(fact),
        }
        total.add(fact);
    }
    // Last-touch attribution: each conversion goes to the lead's latest delivery sent at or
    // before it; a conversion before any delivery of the period is not ours to claim.
    let mut by_lead: HashMap<LeadId, Vec<usize>> = HashMap::new();
    for (i, f) in facts.deliveries.iter().enumerate() {
        by_lead.entry(f.lead_id).or_default().push(i);
    }
    let mut converted: HashSet<LeadId> = HashSet::new();
    for c in &facts.conversions {
        let Some(indexes) = by_lead.get(&c.lead_id) else {
            continue;
        };
        let Some(&last) = indexes
            .iter()
            .filter(|&&i| facts.deliveries[i].sent_at <= c.at)
            .max_by_key(|&&i| {
                (
                    facts.deliveries[i].sent_at,
                    facts.deliveries[i].delivery_id.0,
                )
            })
        else {
            continue;
        };
        converted.insert(c.lead_id);
        for group in [groups.get_mut(&keys[last]), Some(&mut total)]
            .into_iter()
            .flatten()
        {
            group.row.conversions += 1;
            group.row.conversion_value += c.value.unwrap_or(0.0);
        }
    }
    let funnel = funnel(facts, &converted);
    let mut rows: Vec<ReportRow> = groups
        .into_iter()
        .map(|(key, g)| g.finish(key, confidence))
        .collect();
    if !matches!(by, Dimension::Day | Dimension::Step | Dimension::Variant) {
        rows.sort_by(|a, b| b.sent.cmp(&a.sent).then_with(|| a.key.cmp(&b.key)));
    }
    Report {
        by,
        confidence,
        rows,
        total: total.finish("(total)".into(), confidence),
        funnel,
    }
}

fn funnel(facts: &ReportFacts, converted: &HashSet<LeadId>) -> Vec<FunnelStage> {
    let mut stages: [(&'static str, HashSet<LeadId>); 5] = Default::default();
    let names = ["touched", "opened", "clicked", "replied", "positive reply"];
    for (stage, name) in stages.iter_mut().zip(names) {
        stage.0 = name;
    }
    for f in &facts.deliveries {
        let reached = [
            true,
            f.opened,
            f.clicked,
            f.replied,
            f.replied && !f.negative_reply && !f.neutral_reply,
        ];
        for (stage, hit) in stages.iter_mut().zip(reached) {
            if hit {
                stage.1.insert(f.lead_id);
            }
        }
    }
    let touched = stages[0].1.len().max(1) as f64;
    stages
        .iter()
        .map(|(name, leads)| (*name, leads.len() as u64))
        .chain(std::iter::once(("converted", converted.len() as u64)))
        .map(|(stage, leads)| FunnelStage {
            stage,
            leads,
            share: leads as f64 / touched,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use engager_domain::{Channel, DeliveryId};
    use engager_store::ConversionFact;

    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    fn fact(
        id: i64,
        lead: i64,
        step: usize,
        channel: Channel,
        sent: DateTime<Utc>,
    ) -> DeliveryFact {
        DeliveryFact {
            delivery_id: DeliveryId(id),
            lead_id: LeadId(lead),
            campaign: "spring".into(),
            step_index: step,
            channel,
            country: if lead % 2 == 0 {
                "DE".into()
            } else {
                "US".into()
            },
            industry: String::new(),
            sent_at: sent,
            delivered: true,
            opened: false,
            clicked: false,
            replied: false,
            negative_reply: false,
            neutral_reply: false,
            bounced: false,
            complained: false,
            unsubscribed: false,
            first_reply_at: None,
            variant: None,
        }
    }

    fn facts() -> ReportFacts {
        let mut deliveries = vec![
            fact(1, 1, 0, Channel::Email, at(2, 9)),
            fact(2, 2, 0, Channel::Email, at(2, 9)),
            fact(3, 3, 0, Channel::Email, at(2, 10)),
            fact(4, 1, 1, Channel::Email, at(5, 9)),
            fact(5, 2, 1, Channel::Sms, at(5, 9)),
        ];
        deliveries[0].opened = true;
        deliveries[3].opened = true;
        deliveries[3].clicked = true;
        deliveries[3].replied = true;
        deliveries[3].first_reply_at = Some(at(5, 15));
        deliveries[4].replied = true;
        deliveries[4].negative_reply = true;
        deliveries[4].first_reply_at = Some(at(6, 9));
        deliveries[2].bounced = true;
        ReportFacts {
            deliveries,
            conversions: vec![
                ConversionFact {
                    lead_id: LeadId(1),
                    at: at(6, 12),
                    value: Some(5_000.0),
                },
                // Before any delivery in the period: not attributed.
                ConversionFact {
                    lead_id: LeadId(3),
                    at: at(1, 12),
                    value: None,
                },
            ],
        }
    }

    #[test]
    fn rows_by_step_count_and_attribute_by_last_touch() {
        let report = build(&facts(), Dimension::Step, 0.95);
        let keys: Vec<&str> = report.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["spring #1", "spring #2"]);
        let first = &report.rows[0];
        assert_eq!(
            (first.sent, first.leads, first.opened, first.bounced),
            (3, 3, 1, 1)
        );
        assert_eq!(first.conversions, 0);
        let second = &report.rows[1];
        assert_eq!(
            (second.sent, second.replied, second.positive_replies),
            (2, 2, 1)
        );
        assert_eq!(
            second.conversions, 1,
            "lead 1's conversion goes to its step 2 email"
        );
        assert_eq!(second.conversion_value, 5_000.0);
        assert_eq!(report.total.conversions, 1);
        let reply = second.rates["reply"];
        assert_eq!(reply.rate, 1.0);
        assert!(reply.low < 1.0 && reply.high == 1.0);
    }

    #[test]
    fn time_to_first_reply_is_measured_from_the_first_message() {
        let report = build(&facts(), Dimension::Campaign, 0.95);
        // Lead 1: first message day 2 09:00, reply day 5 15:00 = 78 h; lead 2: day 2 09:00 to
        // day 6 09:00 = 96 h. Median 87 h.
        assert_eq!(report.total.median_hours_to_reply, Some(87.0));
    }

    #[test]
    fn the_funnel_counts_distinct_leads() {
        let report = build(&facts(), Dimension::Channel, 0.95);
        let funnel: Vec<(&str, u64)> = report.funnel.iter().map(|s| (s.stage, s.leads)).collect();
        assert_eq!(
            funnel,
            [
                ("touched", 3),
                ("opened", 1),
                ("clicked", 1),
                ("replied", 2),
                ("positive reply", 1),
                ("converted", 1)
            ]
        );
        assert_eq!(report.rows[0].key, "email", "largest group first");
    }

    #[test]
    fn dimensions_parse_with_a_clear_error() {
        assert_eq!("Country".parse::<Dimension>(), Ok(Dimension::Country));
        let err = "variants".parse::<Dimension>().unwrap_err();
        assert!(
            err.contains("campaign, step, variant, channel, country, industry, day"),
            "{err}"
        );
    }
}
