//! Campaign definition files (TOML) and their translation into domain campaigns.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveTime};
use engager_domain::campaign::{
    Campaign, CampaignError, Channel, DelayBounds, ExperimentMetric, ExperimentMode,
    ExperimentSettings, OnDeadline, Step, StepTemplate, Variant,
};
use engager_domain::frequency::{BudgetOverrides, ChannelLimits, FrequencyPolicy};
use engager_domain::timing::SendWindow;
use engager_domain::CampaignId;
use serde::Deserialize;

/// Why a campaign file was rejected; the message names the file and the key or step.
#[derive(Debug, thiserror::Error)]
pub enum CampaignFileError {
    /// The TOML does not parse or has an unknown or mistyped key.
    #[error("{origin}: {message}")]
    Toml {
        /// The file.
        origin: String,
        /// The parser's message, with line and column and the key concerned.
        message: String,
    },
    /// A value is invalid.
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// The key, e.g. `window.start` or `steps[2].channels`.
        key: String,
        /// Why.
        reason: String,
    },
    /// The campaign as a whole is invalid.
    #[error("{origin}: {source}")]
    Campaign {
        /// The file.
        origin: String,
        /// The domain's reason.
        source: CampaignError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignSpec {
    slug: String,
    name: String,
    #[serde(default)]
    best_time: Option<bool>,
    #[serde(default)]
    review: bool,
    #[serde(default)]
    window: Option<WindowSpec>,
    #[serde(default)]
    frequency: Option<FrequencySpec>,
    #[serde(default)]
    tracking: Option<TrackingSpec>,
    steps: Vec<StepSpec>,
}

/// `[tracking]` in a campaign file: open pixel and click redirect, both off unless turned on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackingSpec {
    #[serde(default)]
    opens: bool,
    #[serde(default)]
    clicks: bool,
}

/// `[frequency]` in a campaign file: this campaign's changes to the global contact budget.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrequencySpec {
    #[serde(default)]
    min_gap_hours: Option<u32>,
    #[serde(default)]
    max_per_week: Option<u32>,
    #[serde(default)]
    reply_cooldown_days: Option<u32>,
    #[serde(default)]
    channels: BTreeMap<String, ChannelLimitSpec>,
}

/// `[frequency.channels.<channel>]`: a limit counting only that channel's touches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelLimitSpec {
    /// Most touches on the channel in any 7 days.
    pub max_per_week: u32,
    /// Minimum hours between two touches on the channel.
    #[serde(default)]
    pub min_gap_hours: u32,
}

/// Per-channel limits from `channels.<name>` tables; `key` prefixes error keys.
pub fn channel_limits(
    specs: &BTreeMap<String, ChannelLimitSpec>,
    key: &str,
) -> Result<ChannelLimits, (String, String)> {
    let mut limits = ChannelLimits::default();
    for (name, spec) in specs {
        let channel = name
            .parse::<Channel>()
            .map_err(|e| (format!("{key}.{name}"), e.to_string()))?;
        if spec.max_per_week == 0 {
            return Err((
                format!("{key}.{name}.max_per_week"),
                "must be at least 1 (disable the channel instead)".into(),
            ));
        }
        limits = limits.with(
            channel,
            FrequencyPolicy {
                min_gap: Duration::hours(i64::from(spec.min_gap_hours)),
                max_per_week: spec.max_per_week,
            },
        );
    }
    Ok(limits)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowSpec {
    days: Vec<String>,
    start: String,
    end: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    name: String,
    channels: Vec<String>,
    #[serde(default)]
    delay_days: u32,
    #[serde(default)]
    delay_hours: u32,
    #[serde(default)]
    delay_business_days: Option<u32>,
    #[serde(default)]
    min_delay_days: Option<u32>,
    #[serde(default)]
    max_delay_days: Option<u32>,
    #[serde(default)]
    window: Option<WindowSpec>,
    #[serde(default)]
    subject: Option<String>,
    body: String,
    #[serde(default)]
    html: Option<String>,
    /// Whether a permanent failure of the chosen channel tries the step's next channel
    /// (default: yes when `channels` lists several).
    #[serde(default)]
    fallback_on_failure: Option<bool>,
    /// How long a person has to do the task of a LinkedIn step: `"2d"`, `"36h"`, `"90m"`
    /// (default 3 days).
    #[serde(default)]
    task_deadline: Option<String>,
    /// What happens to a task not done by its deadline: `"skip"` (default) or `"fallback"`
    /// (the step's next channel the lead can be reached on).
    #[serde(default)]
    on_deadline: Option<String>,
    /// The angle AI personalization takes for this step.
    #[serde(default)]
    angle: Option<String>,
    /// An A/B experiment: `[[steps.variants]]`, the first is the control.
    #[serde(default)]
    variants: Vec<VariantSpec>,
    /// How the experiment hands out its variants: `[steps.experiment]`.
    #[serde(default)]
    experiment: Option<ExperimentSpec>,
}

/// `[steps.experiment]`: the mode (`fixed` or `bandit`), automatic promotion of a winner,
/// the primary metric and the verdict's rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentSpec {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    auto_promote: Option<bool>,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    min_sample: Option<u64>,
    #[serde(default)]
    alpha: Option<f64>,
    #[serde(default)]
    floor: Option<f64>,
}

/// `[[steps.variants]]`: one arm of a step's experiment. Its subject and body default to the
/// step's, so a subject test names only the subject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantSpec {
    name: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    angle: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// `"2d"`, `"36h"`, `"90m"`, or a combination like `"1d12h"` → a positive duration.
pub fn parse_span(value: &str) -> Result<Duration, String> {
    let text = value.trim();
    let mut total = Duration::zero();
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| {
            format!("expected a duration like \"2d\", \"36h\" or \"90m\", got {value:?}")
        })?;
        digits.clear();
        total += match c {
            'd' => Duration::days(n),
            'h' => Duration::hours(n),
            'm' => Duration::minutes(n),
            _ => {
                return Err(format!(
                    "unknown unit {c:?} in {value:?}: use d (days), h (hours) or m (minutes)"
                ))
            }
        };
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(format!(
            "expected a duration like \"2d\", \"36h\" or \"90m\", got {value:?}"
        ));
    }
    if total <= Duration::zero() {
        return Err(format!("must be longer than zero, got {value:?}"));
    }
    Ok(total)
}

fn parse_time(origin: &str, key: &str, value: &str) -> Result<NaiveTime, CampaignFileError> {
    NaiveTime::parse_from_str(value.trim(), "%H:%M").map_err(|_| CampaignFileError::Invalid {
        origin: origin.to_owned(),
        key: key.to_owned(),
        reason: format!("expected a time like 09:00, got {value:?}"),
    })
}

/// Parses a campaign file. `origin` names the file in error messages.
pub fn parse_campaign(
    source: &str,
    origin: &str,
    id: CampaignId,
) -> Result<Campaign, CampaignFileError> {
    let spec: CampaignSpec = toml::from_str(source).map_err(|e| CampaignFileError::Toml {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let window = match &spec.window {
        None => SendWindow::business_hours(),
        Some(w) => parse_window(origin, "window", w)?,
    };
    let invalid = |key: String, reason: String| CampaignFileError::Invalid {
        origin: origin.to_owned(),
        key,
        reason,
    };
    let budget = match &spec.frequency {
        None => BudgetOverrides::default(),
        Some(f) => {
            if f.max_per_week == Some(0) {
                return Err(invalid(
                    "frequency.max_per_week".into(),
                    "must be at least 1".into(),
                ));
            }
            BudgetOverrides {
                min_gap: f.min_gap_hours.map(|h| Duration::hours(i64::from(h))),
                max_per_week: f.max_per_week,
                reply_cooldown: f.reply_cooldown_days.map(|d| Duration::days(i64::from(d))),
                channels: channel_limits(&f.channels, "frequency.channels")
                    .map_err(|(key, reason)| invalid(key, reason))?,
            }
        }
    };
    let mut steps = Vec::with_capacity(spec.steps.len());
    for (index, s) in spec.steps.into_iter().enumerate() {
        let channels = s
            .channels
            .iter()
            .map(|c| c.parse::<Channel>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CampaignFileError::Invalid {
                origin: origin.to_owned(),
                key: format!("steps[{}].channels", index + 1),
                reason: e.to_string(),
            })?;
        let key = |k: &str| format!("steps[{}].{k}", index + 1);
        let business_days = match s.delay_business_days {
            Some(_) if s.delay_days > 0 => {
                return Err(invalid(
                    key("delay_business_days"),
                    "give either delay_days or delay_business_days, not both".into(),
                ))
            }
            Some(n) => n,
            None => 0,
        };
        let delay_bounds = match (s.min_delay_days, s.max_delay_days) {
            (None, None) => None,
            (Some(min_days), Some(max_days)) => Some(DelayBounds { min_days, max_days }),
            (Some(_), None) => {
                return Err(invalid(
                    key("max_delay_days"),
                    "min_delay_days needs max_delay_days too".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    key("min_delay_days"),
                    "max_delay_days needs min_delay_days too".into(),
                ))
            }
        };
        let step_window = s
            .window
            .as_ref()
            .map(|w| parse_window(origin, &key("window"), w))
            .transpose()?;
        let task_deadline = match s.task_deadline.as_deref() {
            None => Duration::days(engager_domain::campaign::DEFAULT_TASK_DEADLINE_DAYS),
            Some(v) => parse_span(v).map_err(|reason| invalid(key("task_deadline"), reason))?,
        };
        let on_deadline = match s.on_deadline.as_deref() {
            None => OnDeadline::Skip,
            Some(v) => OnDeadline::parse(v).ok_or_else(|| {
                invalid(
                    key("on_deadline"),
                    format!("expected \"skip\" or \"fallback\", got {v:?}"),
                )
            })?,
        };
        let experiment = match &s.experiment {
            None => ExperimentSettings::default(),
            Some(e) => {
                if s.variants.is_empty() {
                    return Err(invalid(
                        key("experiment"),
                        "the step has no [[steps.variants]] to experiment with".into(),
                    ));
                }
                let d = ExperimentSettings::default();
                ExperimentSettings {
                    mode: match e.mode.as_deref().map(str::trim) {
                        None | Some("fixed") => ExperimentMode::Fixed,
                        Some("bandit") => ExperimentMode::Bandit,
                        Some(other) => {
                            return Err(invalid(
                                key("experiment.mode"),
                                format!("expected \"fixed\" or \"bandit\", got {other:?}"),
                            ))
                        }
                    },
                    auto_promote: e.auto_promote.unwrap_or(false),
                    metric: match e.metric.as_deref().map(str::trim) {
                        None | Some("positive-replies") => ExperimentMetric::PositiveReplies,
                        Some("conversions") => ExperimentMetric::Conversions,
                        Some(other) => {
                            return Err(invalid(
                                key("experiment.metric"),
                                format!(
                                "expected \"positive-replies\" or \"conversions\", got {other:?}"
                            ),
                            ))
                        }
                    },
                    min_sample: e.min_sample.unwrap_or(d.min_sample),
                    alpha: e.alpha.unwrap_or(d.alpha),
                    floor: e.floor.unwrap_or(d.floor),
                }
            }
        };
        let variants: Vec<Variant> = s
            .variants
            .into_iter()
            .map(|v| Variant {
                name: v.name.trim().to_owned(),
                weight: v.weight,
                template: StepTemplate {
                    subject: v.subject.or_else(|| s.subject.clone()),
                    body: v.body.unwrap_or_else(|| s.body.clone()),
                    html: v.html.or_else(|| s.html.clone()),
                },
                angle: v
                    .angle
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty()),
            })
            .collect();
        steps.push(Step {
            index,
            name: s.name,
            channels,
            delay: Duration::days(i64::from(s.delay_days))
                + Duration::hours(i64::from(s.delay_hours)),
            business_days,
            delay_bounds,
            window: step_window,
            template: StepTemplate {
                subject: s.subject,
                body: s.body,
                html: s.html,
            },
            fallback_on_failure: s.fallback_on_failure,
            task_deadline,
            on_deadline,
            variants,
            experiment,
            angle: s
                .angle
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty()),
        });
    }
    let campaign = Campaign::new(id, spec.slug, spec.name, steps, window).map_err(|source| {
        CampaignFileError::Campaign {
            origin: origin.to_owned(),
            source,
        }
    })?;
    Ok(Campaign {
        budget,
        best_time: spec.best_time,
        review: spec.review,
        tracking: spec
            .tracking
            .map(|t| engager_domain::tracking::TrackingSettings {
                opens: t.opens,
                clicks: t.clicks,
            })
            .unwrap_or_default(),
        ..campaign
    })
}

fn parse_window(origin: &str, key: &str, w: &WindowSpec) -> Result<SendWindow, CampaignFileError> {
    let start = parse_time(origin, &format!("{key}.start"), &w.start)?;
    let end = parse_time(origin, &format!("{key}.end"), &w.end)?;
    let days: Vec<&str> = w.days.iter().map(String::as_str).collect();
    SendWindow::new(&days, start, end).map_err(|e| CampaignFileError::Invalid {
        origin: origin.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
slug = "intro"
name = "Intro"
[window]
days = ["mon", "tue"]
start = "09:00"
end = "12:00"
[[steps]]
name = "first"
channels = ["email"]
subject = "Hi {{ lead.first_name }}"
body = "Hello"
[[steps]]
name = "nudge"
channels = ["linkedin", "sms"]
delay_days = 3
body = "Hi again"
"#;

    #[test]
    fn variants_inherit_the_step_and_are_checked() {
        let with = |variants: &str| {
            GOOD.replacen(
                "body = \"Hello\"\n",
                &format!("body = \"Hello\"\n{variants}"),
                1,
            )
        };
        let c = parse_campaign(
            &with("[[steps.variants]]\nname = \"a\"\n[[steps.variants]]\nname = \"b\"\nweight = 3\nsubject = \"Other\"\nangle = \" a story \"\n"),
            "intro.toml",
            CampaignId(1),
        )
        .unwrap();
        let v = &c.steps[0].variants;
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].template.subject.as_deref(),
            Some("Hi {{ lead.first_name }}")
        );
        assert_eq!(v[1].template.subject.as_deref(), Some("Other"));
        assert_eq!(
            v[1].template.body, "Hello",
            "the body defaults to the step's"
        );
        assert_eq!((v[0].weight, v[1].weight), (1, 3));
        assert_eq!(v[1].angle.as_deref(), Some("a story"));
        // The same lead always gets the same variant; the weights hold over many leads.
        let step = &c.steps[0];
        let first = step
            .variant_for("intro", engager_domain::LeadId(7))
            .unwrap()
            .name
            .clone();
        assert_eq!(
            step.variant_for("intro", engager_domain::LeadId(7))
                .unwrap()
                .name,
            first
        );
        let b = (0..4000)
            .filter(|i| {
                step.variant_for("intro", engager_domain::LeadId(*i))
                    .unwrap()
                    .name
                    == "b"
            })
            .count();
        assert!((2800..3200).contains(&b), "{b} of 4000 for a 3:1 weight");
        assert!(c.steps[1]
            .variant_for("intro", engager_domain::LeadId(7))
            .is_none());
        for (variants, expected) in [
            (
                "[[steps.variants]]\nname = \"a\"\n",
                "at least two variants",
            ),
            (
                "[[steps.variants]]\nname = \"a\"\n[[steps.variants]]\nname = \"a\"\n",
                "named twice",
            ),
            (
                "[[steps.variants]]\nname = \"A b\"\n[[steps.variants]]\nname = \"c\"\n",
                "variant name \"A b\"",
            ),
            (
                "[[steps.variants]]\nname = \"a\"\nweight = 0\n[[steps.variants]]\nname = \"c\"\n",
                "weight 0",
            ),
            (
                "[[steps.variants]]\nname = \"a\"\ncolour = \"red\"\n",
                "colour",
            ),
        ] {
            let err = parse_campaign(&with(variants), "intro.toml", CampaignId(1))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{variants}: {err}");
        }
    }

    #[test]
    fn parses_a_campaign() {
        let c = parse_campaign(GOOD, "intro.toml", CampaignId(1)).unwrap();
        assert_eq!(c.steps.len(), 2);
        assert_eq!(c.steps[1].channels, vec![Channel::Linkedin, Channel::Sms]);
        assert_eq!(c.steps[1].delay, Duration::days(3));
        assert_eq!(c.window.describe(), "mon,tue 09:00-12:00");
        // A step with several channels falls back after a permanent failure unless told not to.
        assert!(!c.steps[0].falls_back_on_failure());
        assert!(c.steps[1].falls_back_on_failure());
        let no_fallback = GOOD.replace(
            "delay_days = 3",
            "delay_days = 3\nfallback_on_failure = false",
        );
        let c = parse_campaign(&no_fallback, "intro.toml", CampaignId(1)).unwrap();
        assert!(!c.steps[1].falls_back_on_failure());
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let unknown = GOOD.replace("delay_days = 3", "delay_dayz = 3");
        let e = parse_campaign(&unknown, "intro.toml", CampaignId(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("intro.toml:") && e.contains("delay_dayz"),
            "{e}"
        );
        let bad_channel = GOOD.replace("\"sms\"", "\"fax\"");
        let e = parse_campaign(&bad_channel, "intro.toml", CampaignId(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("steps[2].channels") && e.contains("fax"), "{e}");
        let bad_time = GOOD.replace("12:00", "noon");
        let e = parse_campaign(&bad_time, "intro.toml", CampaignId(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("window.end"), "{e}");
        let no_subject = GOOD.replace("subject = \"Hi {{ lead.first_name }}\"\n", "");
        let e = parse_campaign(&no_subject, "intro.toml", CampaignId(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("step 1 (first): an email step needs a subject"),
            "{e}"
        );
    }

    #[test]
    fn task_deadlines_parse_and_bad_ones_name_the_key() {
        let c = parse_campaign(GOOD, "intro.toml", CampaignId(1)).unwrap();
        assert_eq!(c.steps[1].task_deadline, Duration::days(3));
        assert_eq!(c.steps[1].on_deadline, OnDeadline::Skip);
        let with = GOOD.replace(
            "delay_days = 3\n",
            "delay_days = 3\ntask_deadline = \"1d12h\"\non_deadline = \"fallback\"\n",
        );
        let c = parse_campaign(&with, "intro.toml", CampaignId(1)).unwrap();
        assert_eq!(c.steps[1].task_deadline, Duration::hours(36));
        assert_eq!(c.steps[1].on_deadline, OnDeadline::Fallback);
        for (bad, key) in [
            ("task_deadline = \"2 weeks\"", "steps[2].task_deadline"),
            ("task_deadline = \"0d\"", "steps[2].task_deadline"),
            ("task_deadline = \"5\"", "steps[2].task_deadline"),
            ("on_deadline = \"wait\"", "steps[2].on_deadline"),
        ] {
            let text = GOOD.replace("delay_days = 3\n", &format!("delay_days = 3\n{bad}\n"));
            let e = parse_campaign(&text, "intro.toml", CampaignId(1))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("intro.toml:") && e.contains(key),
                "{bad}: {e}"
            );
        }
        assert_eq!(parse_span("90m"), Ok(Duration::minutes(90)));
        assert!(parse_span("").is_err());
        assert!(parse_span("3x").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn experiment_settings_parse_and_bad_ones_name_their_key() {
        let two = "[[steps.variants]]\nname = \"a\"\n[[steps.variants]]\nname = \"b\"\n";
        let with = |extra: &str| {
            GOOD.replacen(
                "body = \"Hello\"\n",
                &format!("body = \"Hello\"\n{two}{extra}"),
                1,
            )
        };
        let c = parse_campaign(
            &with("[steps.experiment]\nmode = \"bandit\"\nauto_promote = true\nmetric = \"conversions\"\nmin_sample = 50\nalpha = 0.01\nfloor = 0.2\n"),
            "intro.toml",
            CampaignId(1),
        )
        .unwrap();
        let e = c.steps[0].experiment;
        assert_eq!(e.mode, ExperimentMode::Bandit);
        assert!(e.auto_promote && e.is_adaptive());
        assert_eq!(e.metric, ExperimentMetric::Conversions);
        assert_eq!((e.min_sample, e.alpha, e.floor), (50, 0.01, 0.2));
        // Without the table: fixed weights, no promotion.
        let plain = parse_campaign(&with(""), "intro.toml", CampaignId(1)).unwrap();
        assert_eq!(plain.steps[0].experiment, ExperimentSettings::default());
        assert!(!plain.steps[0].experiment.is_adaptive());
        for (extra, expected) in [
            (
                "[steps.experiment]\nmode = \"greedy\"\n",
                "steps[1].experiment.mode: expected \"fixed\" or \"bandit\", got \"greedy\"",
            ),
            (
                "[steps.experiment]\nmetric = \"opens\"\n",
                "steps[1].experiment.metric",
            ),
            (
                "[steps.experiment]\nfloor = 0.6\n",
                "experiment.floor 0.6: expected a share from 0 to 0.500",
            ),
            ("[steps.experiment]\nalpha = 0.7\n", "experiment.alpha 0.7"),
            ("[steps.experiment]\nauto_promte = true\n", "auto_promte"),
        ] {
            let err = parse_campaign(&with(extra), "intro.toml", CampaignId(1))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        // An experiment table without variants is an error, not silently ignored.
        let err = parse_campaign(
            &GOOD.replacen(
                "body = \"Hello\"\n",
                "body = \"Hello\"\n[steps.experiment]\nmode = \"bandit\"\n",
                1,
            ),
            "intro.toml",
            CampaignId(1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("steps[1].experiment: the step has no [[steps.variants]]"),
            "{err}"
        );
    }

    #[test]
    fn tracking_is_off_by_default_and_unknown_keys_are_rejected() {
        let parse = |src: &str| parse_campaign(src, "c.toml", CampaignId(1));
        let plain = parse(GOOD).unwrap();
        assert!(!plain.tracking.opens && !plain.tracking.clicks);
        let with = |table: &str| GOOD.replacen("[window]", &format!("{table}\n[window]"), 1);
        let on = parse(&with("[tracking]\nopens = true\nclicks = true")).unwrap();
        assert!(on.tracking.opens && on.tracking.clicks);
        let clicks = parse(&with("[tracking]\nclicks = true")).unwrap();
        assert!(!clicks.tracking.opens && clicks.tracking.clicks);
        let err = parse(&with("[tracking]\npixel = true"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("pixel"), "{err}");
        let err = parse(&with("[tracking]\nopens = \"yes\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("opens") || err.contains("bool"), "{err}");
    }
}
