//! Trends, anomalies and recommendations over the report facts: what changed significantly
//! lately, and what to do about what the figures say. Every finding carries its numbers and
//! its test, so a person can check it; nothing is claimed on a small sample.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use engager_domain::stats::{two_proportion_test, Proportion};
use engager_store::{DeliveryFact, ReportFacts};
use serde::Serialize;

/// A rate watched for anomalies, and which way is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Replies per message (bad when it drops).
    Reply,
    /// Hard bounces per message (bad when it rises).
    Bounce,
    /// Unsubscribes per message (bad when it rises).
    Unsubscribe,
    /// Complaints per message (bad when it rises).
    Complaint,
    /// Human opens per message (bad when it drops).
    Open,
}

impl Metric {
    const ALL: [Metric; 5] = [
        Metric::Reply,
        Metric::Bounce,
        Metric::Unsubscribe,
        Metric::Complaint,
        Metric::Open,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Reply => "reply rate",
            Metric::Bounce => "bounce rate",
            Metric::Unsubscribe => "unsubscribe rate",
            Metric::Complaint => "complaint rate",
            Metric::Open => "open rate",
        }
    }

    fn bad_when_higher(self) -> bool {
        matches!(
            self,
            Metric::Bounce | Metric::Unsubscribe | Metric::Complaint
        )
    }

    /// Whether a fact counts, given how long its outcome had to show (replies only count
    /// when they came within the maturity, so young and old sends are compared alike).
    fn hit(self, f: &DeliveryFact, maturity: Duration) -> bool {
        match self {
            Metric::Reply => f
                .first_reply_at
                .is_some_and(|at| at - f.sent_at <= maturity),
            Metric::Bounce => f.bounced,
            Metric::Unsubscribe => f.unsubscribed,
            Metric::Complaint => f.complained,
            Metric::Open => f.opened,
        }
    }
}

/// How anomalies are looked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyRules {
    /// The recent period judged.
    pub recent: Duration,
    /// The baseline before it.
    pub baseline: Duration,
    /// How long a send's outcome is given to show before it is judged (sends younger than
    /// this are left out of both periods).
    pub maturity: Duration,
    /// Sends the recent period needs.
    pub min_recent: u64,
    /// Sends the baseline needs.
    pub min_baseline: u64,
    /// Significance level.
    pub alpha: f64,
}

impl Default for AnomalyRules {
    fn default() -> Self {
        Self {
            recent: Duration::days(1),
            baseline: Duration::days(14),
            maturity: Duration::days(2),
            min_recent: 50,
            min_baseline: 200,
            alpha: 0.01,
        }
    }
}

impl AnomalyRules {
    /// The periods for `now`: (baseline start, recent start, recent end).
    pub fn periods(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) {
        let end = now - self.maturity;
        let recent_start = end - self.recent;
        (recent_start - self.baseline, recent_start, end)
    }
}

/// A rate that moved significantly the bad way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// `campaign <slug>` or `channel <name>`.
    pub scope: String,
    /// The rate.
    pub metric: Metric,
    /// Baseline rate and sends.
    pub baseline_rate: f64,
    /// Baseline sends.
    pub baseline_sent: u64,
    /// Recent rate.
    pub recent_rate: f64,
    /// Recent sends.
    pub recent_sent: u64,
    /// Two-sided p-value of the two-proportion test.
    pub p_value: f64,
}

impl Anomaly {
    /// One sentence for an alert.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} {} from {:.2}% ({} sends) to {:.2}% ({} sends), p = {:.4}",
            self.scope,
            self.metric.as_str(),
            if self.recent_rate > self.baseline_rate {
                "rose"
            } else {
                "fell"
            },
            self.baseline_rate * 100.0,
            self.baseline_sent,
            self.recent_rate * 100.0,
            self.recent_sent,
            self.p_value
        )
    }
}

/// Looks for significant bad moves per campaign and per channel. `facts` must cover the
/// baseline start to the recent end.
pub fn anomalies(facts: &ReportFacts, rules: &AnomalyRules, now: DateTime<Utc>) -> Vec<Anomaly> {
    let (base_start, recent_start, end) = rules.periods(now);
    let mut scopes: BTreeMap<String, (Vec<&DeliveryFact>, Vec<&DeliveryFact>)> = BTreeMap::new();
    for f in &facts.deliveries {
        let recent = if f.sent_at >= recent_start && f.sent_at < end {
            true
        } else if f.sent_at >= base_start && f.sent_at < recent_start {
            false
        } else {
            continue;
        };
        for scope in [
            format!("campaign {}", f.campaign),
            format!("channel {}", f.channel),
        ] {
            let entry = scopes.entry(scope).or_default();
            if recent {
                entry.1.push(f);
            } else {
                entry.0.push(f);
            }
        }
    }
    let mut out = Vec::new();
    for (scope, (base, recent)) in scopes {
        if (base.len() as u64) < rules.min_baseline || (recent.len() as u64) < rules.min_recent {
            continue;
        }
        for metric in Metric::ALL {
            let count = |set: &[&DeliveryFact]| {
                Proportion::new(
                    set.iter().filter(|f| metric.hit(f, rules.maturity)).count() as u64,
                    set.len() as u64,
                )
            };
            let (b, r) = (count(&base), count(&recent));
            let Some(test) = two_proportion_test(b, r) else {
                continue;
            };
            let worse = if metric.bad_when_higher() {
                test.z > 0.0
            } else {
                test.z < 0.0
            };
            if worse && test.p_value < rules.alpha {
                out.push(Anomaly {
                    scope: scope.clone(),
                    metric,
                    baseline_rate: b.rate().unwrap_or(0.0),
                    baseline_sent: b.trials,
                    recent_rate: r.rate().unwrap_or(0.0),
                    recent_sent: r.trials,
                    p_value: test.p_value,
                });
            }
        }
    }
    out.sort_by(|a, b| a.p_value.total_cmp(&b.p_value));
    out
}

/// A concrete suggestion with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// `channel`, `stop_segment`, `weak_step`.
    pub kind: &'static str,
    /// What to do.
    pub action: String,
    /// Why: the figures and the test.
    pub evidence: String,
    /// The test's p-value, or the interval bound it rests on.
    pub strength: f64,
}

/// How recommendations are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecommendationRules {
    /// Sends a group needs before it is compared.
    pub min_sample: u64,
    /// Significance level.
    pub alpha: f64,
}

impl Default for RecommendationRules {
    fn default() -> Self {
        Self {
            min_sample: 100,
            alpha: 0.05,
        }
    }
}

fn positive(f: &DeliveryFact) -> bool {
    f.replied && !f.negative_reply && !f.neutral_reply
}

fn proportion<'a>(
    set: impl Iterator<Item = &'a DeliveryFact>,
    hit: fn(&DeliveryFact) -> bool,
) -> Proportion {
    let (mut n, mut k) = (0, 0);
    for f in set {
        n += 1;
        k += u64::from(hit(f));
    }
    Proportion::new(k, n)
}

fn pct(p: Proportion) -> String {
    format!(
        "{:.1}% ({} of {})",
        p.rate().unwrap_or(0.0) * 100.0,
        p.successes,
        p.trials
    )
}

/// Evidence-backed suggestions from the facts of a period: the channel that works best for a
/// segment, a segment to stop contacting, and the step that loses leads.
pub fn recommendations(facts: &ReportFacts, rules: &RecommendationRules) -> Vec<Recommendation> {
    let mut out = Vec::new();
    let all = proportion(facts.deliveries.iter(), positive);
    // 1. The best channel per industry and per country.
    for (dimension, key) in [
        (
            "industry",
            (|f: &DeliveryFact| f.industry.clone()) as fn(&DeliveryFact) -> String,
        ),
        ("country", |f: &DeliveryFact| f.country.clone()),
    ] {
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<&DeliveryFact>>> = BTreeMap::new();
        for f in &facts.deliveries {
            let k = key(f);
            if k.trim().is_empty() {
                continue;
            }
            groups
                .entry(k)
                .or_default()
                .entry(f.channel.to_string())
                .or_default()
                .push(f);
        }
        for (segment, channels) in groups {
            let mut rated: Vec<(String, Proportion)> = channels
                .iter()
                .map(|(c, set)| (c.clone(), proportion(set.iter().copied(), positive)))
                .filter(|(_, p)| p.trials >= rules.min_sample)
                .collect();
            if rated.len() < 2 {
                continue;
            }
            rated.sort_by(|a, b| {
                b.1.rate()
                    .unwrap_or(0.0)
                    .total_cmp(&a.1.rate().unwrap_or(0.0))
            });
            let (best, runner) = (&rated[0], &rated[1]);
            if let Some(t) = two_proportion_test(runner.1, best.1) {
                if t.z > 0.0 && t.p_value < rules.alpha {
                    out.push(Recommendation {
                        kind: "channel",
                        action: format!(
                            "Put {} first for leads with {dimension} {segment}",
                            best.0
                        ),
                        evidence: format!(
                            "positive replies: {} {} vs {} {} (p = {:.3})",
                            best.0,
                            pct(best.1),
                            runner.0,
                            pct(runner.1),
                            t.p_value
                        ),
                        strength: t.p_value,
                    });
                }
            }
        }
    }
    // 2. A segment to stop contacting: even the upper bound of its positive-reply rate is
    //    below the overall rate, and it draws unsubscribes or bounces.
    if let Some(overall) = all.rate() {
        for (dimension, key) in [
            (
                "industry",
                (|f: &DeliveryFact| f.industry.clone()) as fn(&DeliveryFact) -> String,
            ),
            ("country", |f: &DeliveryFact| f.country.clone()),
        ] {
            let mut groups: BTreeMap<String, Vec<&DeliveryFact>> = BTreeMap::new();
            for f in &facts.deliveries {
                let k = key(f);
                if !k.trim().is_empty() {
                    groups.entry(k).or_default().push(f);
                }
            }
            for (segment, set) in groups {
                let p = proportion(set.iter().copied(), positive);
                if p.trials < rules.min_sample {
                    continue;
                }
                let Some(interval) = p.wilson(1.0 - rules.alpha) else {
                    continue;
                };
                let harm = proportion(set.iter().copied(), |f| {
                    f.unsubscribed || f.bounced || f.complained
                });
                if interval.high < overall && harm.successes > p.successes {
                    out.push(Recommendation {
                        kind: "stop_segment",
                        action: format!("Stop contacting leads with {dimension} {segment}"),
                        evidence: format!(
                            "positive replies {} (at most {:.1}% at {:.0}% confidence) vs {:.1}% overall, while {} unsubscribed, bounced or complained",
                            pct(p),
                            interval.high * 100.0,
                            (1.0 - rules.alpha) * 100.0,
                            overall * 100.0,
                            harm.successes
                        ),
                        strength: interval.high,
                    });
                }
            }
        }
    }
    // 3. The step that loses leads: per campaign, the step whose unsubscribes most exceed
    //    its positive replies, when significantly worse than the campaign's other steps.
    let mut campaigns: BTreeMap<String, BTreeMap<usize, Vec<&DeliveryFact>>> = BTreeMap::new();
    for f in &facts.deliveries {
        campaigns
            .entry(f.campaign.clone())
            .or_default()
            .entry(f.step_index)
            .or_default()
            .push(f);
    }
    for (campaign, steps) in campaigns {
        if steps.len() < 2 {
            continue;
        }
        let mut worst: Option<(usize, Proportion, Proportion, f64)> = None;
        for (&step, set) in &steps {
            let mine = proportion(set.iter().copied(), |f| f.unsubscribed || f.complained);
            if mine.trials < rules.min_sample {
                continue;
            }
            let rest = proportion(
                steps
                    .iter()
                    .filter(|(s, _)| **s != step)
                    .flat_map(|(_, v)| v.iter().copied()),
                |f| f.unsubscribed || f.complained,
            );
            if let Some(t) = two_proportion_test(rest, mine) {
                if t.z > 0.0 && t.p_value < rules.alpha && worst.is_none_or(|w| t.p_value < w.3) {
                    worst = Some((step, mine, rest, t.p_value));
                }
            }
        }
        if let Some((step, mine, rest, p)) = worst {
            let replies = proportion(steps[&step].iter().copied(), positive);
            out.push(Recommendation {
                kind: "weak_step",
                action: format!("Rewrite or remove step {} of {campaign}", step + 1),
                evidence: format!(
                    "opt-outs {} vs {} on the other steps (p = {:.3}); positive replies {}",
                    pct(mine),
                    pct(rest),
                    p,
                    pct(replies)
                ),
                strength: p,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use engager_domain::{Channel, DeliveryId, LeadId};

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap()
    }

    fn fact(i: i64, sent: DateTime<Utc>) -> DeliveryFact {
        DeliveryFact {
            delivery_id: DeliveryId(i),
            lead_id: LeadId(i),
            campaign: "spring".into(),
            step_index: 0,
            channel: Channel::Email,
            country: "US".into(),
            industry: "SaaS".into(),
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

    /// `n` sends spread over a period, every `every`-th bounced / replied (within 1 h).
    fn period(
        start: DateTime<Utc>,
        len: Duration,
        n: i64,
        first_id: i64,
        bounce_every: i64,
        reply_every: i64,
    ) -> Vec<DeliveryFact> {
        (0..n)
            .map(|i| {
                let mut f = fact(first_id + i, start + len * (i as i32) / (n as i32));
                f.bounced = bounce_every > 0 && i % bounce_every == 0;
                if reply_every > 0 && i % reply_every == 0 {
                    f.replied = true;
                    f.first_reply_at = Some(f.sent_at + Duration::hours(1));
                }
                f
            })
            .collect()
    }

    #[test]
    fn a_bounce_spike_is_an_anomaly_and_a_steady_rate_is_not() {
        let rules = AnomalyRules::default();
        let (base_start, recent_start, _) = rules.periods(now());
        let mut deliveries = period(base_start, rules.baseline, 1_000, 0, 50, 20);
        deliveries.extend(period(recent_start, rules.recent, 200, 10_000, 5, 20));
        let found = anomalies(
            &ReportFacts {
                deliveries,
                conversions: vec![],
            },
            &rules,
            now(),
        );
        let bounce: Vec<_> = found
            .iter()
            .filter(|a| a.metric == Metric::Bounce)
            .collect();
        assert_eq!(bounce.len(), 2, "campaign and channel: {found:?}");
        assert!(bounce[0]
            .summary()
            .contains("bounce rate rose from 2.00% (1000 sends) to 20.00% (200 sends)"));
        assert!(found.iter().all(|a| a.metric != Metric::Reply), "{found:?}");

        let mut steady = period(base_start, rules.baseline, 1_000, 0, 50, 20);
        steady.extend(period(recent_start, rules.recent, 200, 10_000, 50, 20));
        assert!(anomalies(
            &ReportFacts {
                deliveries: steady,
                conversions: vec![]
            },
            &rules,
            now()
        )
        .is_empty());
    }

    #[test]
    fn young_sends_are_not_judged_and_late_replies_do_not_count() {
        let rules = AnomalyRules::default();
        let (base_start, recent_start, end) = rules.periods(now());
        let mut deliveries = period(base_start, rules.baseline, 1_000, 0, 0, 10);
        // Baseline replies that came after the maturity do not raise the baseline.
        for f in deliveries.iter_mut().filter(|f| f.delivery_id.0 % 10 == 5) {
            f.replied = true;
            f.first_reply_at = Some(f.sent_at + Duration::days(5));
        }
        deliveries.extend(period(recent_start, rules.recent, 200, 10_000, 0, 10));
        // Sends of the last two days (no replies yet) are outside both periods.
        deliveries.extend(period(end, Duration::days(2), 500, 20_000, 0, 0));
        assert!(anomalies(
            &ReportFacts {
                deliveries,
                conversions: vec![]
            },
            &rules,
            now()
        )
        .is_empty());
    }

    #[test]
    fn a_reply_drop_is_found() {
        let rules = AnomalyRules::default();
        let (base_start, recent_start, _) = rules.periods(now());
        let mut deliveries = period(base_start, rules.baseline, 2_000, 0, 0, 10);
        deliveries.extend(period(recent_start, rules.recent, 300, 10_000, 0, 100));
        let found = anomalies(
            &ReportFacts {
                deliveries,
                conversions: vec![],
            },
            &rules,
            now(),
        );
        assert!(
            found
                .iter()
                .any(|a| a.metric == Metric::Reply && a.scope == "campaign spring"),
            "{found:?}"
        );
    }

    #[test]
    fn recommends_the_better_channel_a_segment_to_stop_and_a_weak_step() {
        let t = now();
        let mut deliveries = Vec::new();
        let mut id = 0;
        let mut add = |channel: Channel,
                       industry: &str,
                       step: usize,
                       n: i64,
                       reply_every: i64,
                       unsub_every: i64| {
            for i in 0..n {
                id += 1;
                let mut f = fact(id, t);
                f.channel = channel;
                f.industry = industry.into();
                f.step_index = step;
                f.replied = reply_every > 0 && i % reply_every == 0;
                f.unsubscribed = unsub_every > 0 && i % unsub_every == 1;
                deliveries.push(f);
            }
        };
        add(Channel::Email, "SaaS", 0, 300, 30, 0); // 3.3%
        add(Channel::Sms, "SaaS", 1, 300, 8, 0); // 12.5%
        add(Channel::Email, "Mining", 0, 300, 0, 20); // no replies, 5% unsubscribes
        add(Channel::Email, "Retail", 2, 300, 12, 6); // a step that drives opt-outs
        let recs = recommendations(
            &ReportFacts {
                deliveries,
                conversions: vec![],
            },
            &RecommendationRules::default(),
        );
        let kinds: Vec<(&str, &str)> = recs.iter().map(|r| (r.kind, r.action.as_str())).collect();
        assert!(
            kinds.contains(&("channel", "Put sms first for leads with industry SaaS")),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("stop_segment", "Stop contacting leads with industry Mining")),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("weak_step", "Rewrite or remove step 3 of spring")),
            "{kinds:?}"
        );
        let channel = recs.iter().find(|r| r.kind == "channel").unwrap();
        assert!(
            channel
                .evidence
                .starts_with("positive replies: sms 12.7% (38 of 300) vs email 3.3% (10 of 300)"),
            "{}",
            channel.evidence
        );
    }
}
