//! Campaigns: sequences of steps, each reaching a lead on one of its preferred channels.

use std::fmt;
use std::str::FromStr;

use chrono::Duration;
use thiserror::Error;

use crate::frequency::BudgetOverrides;
use crate::ids::CampaignId;
use crate::timing::SendWindow;

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Email (outbox, SMTP or Microsoft Graph).
    Email,
    /// SMS (outbox or Twilio).
    Sms,
    /// A LinkedIn task for a person to carry out.
    Linkedin,
}

impl Channel {
    /// All channels, in a stable order.
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Linkedin];

    /// The lower-case name used in files, config and storage.
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Linkedin => "linkedin",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = CampaignError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "email" => Ok(Channel::Email),
            "sms" => Ok(Channel::Sms),
            "linkedin" => Ok(Channel::Linkedin),
            other => Err(CampaignError::UnknownChannel(other.to_owned())),
        }
    }
}

/// Why a campaign definition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CampaignError {
    /// A channel name is not one of email, sms, linkedin.
    #[error("unknown channel {0:?}: expected email, sms or linkedin")]
    UnknownChannel(String),
    /// The campaign has no steps.
    #[error("a campaign needs at least one step")]
    NoSteps,
    /// The slug is not usable as an identifier.
    #[error("invalid slug {0:?}: use 1-64 lower-case letters, digits and dashes")]
    InvalidSlug(String),
    /// A step is invalid.
    #[error("step {step} ({name}): {reason}")]
    InvalidStep {
        step: usize,
        name: String,
        reason: String,
    },
}

/// The message templates of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTemplate {
    /// Email subject template; required for email.
    pub subject: Option<String>,
    /// Plain-text body template (email, SMS, LinkedIn note).
    pub body: String,
    /// Optional HTML body template for email.
    pub html: Option<String>,
}

/// One arm of a step's A/B experiment: its own templates (and AI angle), and its share of
/// the leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// A short name (`a`, `short-subject`), unique in the step.
    pub name: String,
    /// Its share of the leads, relative to the other variants' weights.
    pub weight: u32,
    /// Its templates.
    pub template: StepTemplate,
    /// The angle AI personalization takes for it (else the step's).
    pub angle: Option<String>,
}

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Zero-based position in the sequence.
    pub index: usize,
    /// A short human name ("intro", "follow-up").
    pub name: String,
    /// Channels in order of preference; the first one the lead can be reached on is used.
    pub channels: Vec<Channel>,
    /// Delay after the previous step was sent (or after enrollment for the first step): the
    /// calendar days and hours; with `business_days` only the hours.
    pub delay: Duration,
    /// Business days to wait (weekends and the lead's holidays skipped), when the step counts
    /// in business days; 0 when it counts calendar days.
    pub business_days: u32,
    /// Bounds within which the delay adapts to the lead's behaviour, counted in the step's
    /// kind of day; `None` for a fixed delay.
    pub delay_bounds: Option<DelayBounds>,
    /// A send window for this step only, replacing the campaign's.
    pub window: Option<SendWindow>,
    /// The templates.
    pub template: StepTemplate,
    /// Whether a permanent failure of the chosen channel falls back to the step's next
    /// channel (`None`: yes when the step lists several channels).
    pub fallback_on_failure: Option<bool>,
    /// How long a person has to do this step's task (LinkedIn steps are tasks), counted
    /// from when the task is handed over.
    pub task_deadline: Duration,
    /// What happens to a task not done by its deadline.
    pub on_deadline: OnDeadline,
    /// The angle AI personalization takes for this step ("a customer story", "a question
    /// about their hiring"), given to the model with the brand voice; `None` leaves it free.
    pub angle: Option<String>,
    /// The step's A/B experiment: two or more variants, or none (the step's template for
    /// everyone). The first variant is the control.
    pub variants: Vec<Variant>,
    /// How the experiment hands out its variants and whether it promotes a winner.
    pub experiment: ExperimentSettings,
}

/// How a step's experiment hands out its variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExperimentMode {
    /// A stable hash of (experiment, lead) over the variants' weights.
    #[default]
    Fixed,
    /// Thompson sampling over the primary metric's Beta posteriors, with a floor share per
    /// variant (multi-armed bandit): traffic shifts to the better variant as results come in.
    Bandit,
}

impl ExperimentMode {
    /// The name used in campaign files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentMode::Fixed => "fixed",
            ExperimentMode::Bandit => "bandit",
        }
    }
}

/// What an experiment's variants win by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExperimentMetric {
    /// Positive replies per message sent.
    #[default]
    PositiveReplies,
    /// Conversions (opportunities, meetings) per message sent.
    Conversions,
}

impl ExperimentMetric {
    /// The name used in campaign files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentMetric::PositiveReplies => "positive-replies",
            ExperimentMetric::Conversions => "conversions",
        }
    }
}

/// A step's experiment settings (`[steps.experiment]` in a campaign file).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExperimentSettings {
    /// Fixed weights or a bandit.
    pub mode: ExperimentMode,
    /// Whether a winner declared by the verdict (minimum sample, significance, guardrails)
    /// is promoted automatically: new leads then all get it.
    pub auto_promote: bool,
    /// The primary metric the bandit and the verdict use.
    pub metric: ExperimentMetric,
    /// Sends every variant needs before a verdict (and so before an automatic promotion).
    pub min_sample: u64,
    /// Significance level of the verdict (Bonferroni-corrected over the challengers).
    pub alpha: f64,
    /// In bandit mode, the share of new leads every variant gets at least, whatever its
    /// results (so no arm starves); at most 1 / number of variants.
    pub floor: f64,
}

// The floats are checked finite when a campaign is built.
impl Eq for ExperimentSettings {}

impl Default for ExperimentSettings {
    fn default() -> Self {
        Self {
            mode: ExperimentMode::Fixed,
            auto_promote: false,
            metric: ExperimentMetric::PositiveReplies,
            min_sample: 200,
            alpha: 0.05,
            floor: 0.1,
        }
    }
}

impl ExperimentSettings {
    /// The verdict's rules.
    pub fn rules(&self) -> crate::stats::ExperimentRules {
        crate::stats::ExperimentRules {
            min_sample: self.min_sample,
            alpha: self.alpha,
            confidence: 0.95,
        }
    }

    /// Whether assignment depends on stored state (results or a promotion) rather than the
    /// hash alone.
    pub fn is_adaptive(&self) -> bool {
        self.mode == ExperimentMode::Bandit || self.auto_promote
    }
}

/// The default time a person has to do a task, in days.
pub const DEFAULT_TASK_DEADLINE_DAYS: i64 = 3;

/// What happens to a task (a LinkedIn step) not done by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDeadline {
    /// The step is skipped; the sequence goes on with the next step.
    #[default]
    Skip,
    /// The step is sent on the next channel of the step's list the lead can be reached on.
    Fallback,
}

impl OnDeadline {
    /// The name used in campaign files and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDeadline::Skip => "skip",
            OnDeadline::Fallback => "fallback",
        }
    }

    /// Parses `skip` or `fallback`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "skip" => Some(OnDeadline::Skip),
            "fallback" => Some(OnDeadline::Fallback),
            _ => None,
        }
    }
}

/// The least and most days a follow-up may wait, in the step's kind of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayBounds {
    /// Fewest days (used when the lead engaged with the previous step).
    pub min_days: u32,
    /// Most days (used when the previous email was ignored).
    pub max_days: u32,
}

impl Step {
    /// Whether the delay counts business days.
    pub fn counts_business_days(&self) -> bool {
        self.business_days > 0
    }

    /// The step's own delay in its kind of day (business or calendar days).
    pub fn base_days(&self) -> u32 {
        if self.counts_business_days() {
            self.business_days
        } else {
            u32::try_from(self.delay.num_days()).unwrap_or(0)
        }
    }

    /// The name of this step's experiment in a campaign, stable across processes and runs.
    pub fn experiment(&self, campaign_slug: &str) -> String {
        format!("{campaign_slug}#{}", self.index + 1)
    }

    /// The variant a lead gets: a stable hash of (experiment, lead) over the weights, the
    /// same in every process and run; `None` when the step has no experiment.
    pub fn variant_for(&self, campaign_slug: &str, lead: crate::LeadId) -> Option<&Variant> {
        if self.variants.is_empty() {
            return None;
        }
        let weights: Vec<u32> = self.variants.iter().map(|v| v.weight).collect();
        let i = crate::stats::assign_variant(
            &self.experiment(campaign_slug),
            &lead.0.to_string(),
            &weights,
        );
        self.variants.get(i)
    }

    /// The templates a lead gets: their variant's, or the step's.
    pub fn template_for(&self, campaign_slug: &str, lead: crate::LeadId) -> &StepTemplate {
        self.variant_for(campaign_slug, lead)
            .map_or(&self.template, |v| &v.template)
    }

    /// Whether a permanent failure of a channel makes the step try its next channel: the
    /// step lists several channels and does not say `fallback_on_failure = false`.
    pub fn falls_back_on_failure(&self) -> bool {
        self.channels.len() > 1 && self.fallback_on_failure.unwrap_or(true)
    }

    /// The step's window, or the campaign's when the step has none.
    pub fn window_or(&self, campaign: SendWindow) -> SendWindow {
        self.window.unwrap_or(campaign)
    }
}

/// A campaign: an ordered sequence of steps sent inside a send window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// Stored id.
    pub id: CampaignId,
    /// Stable identifier used on the command line.
    pub slug: String,
    /// Human name.
    pub name: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// When messages may be sent, in each lead's local time.
    pub window: SendWindow,
    /// This campaign's changes to the contact budget (stricter or looser than the global one).
    pub budget: BudgetOverrides,
    /// Whether to pick the learned best hour (`None`: the global setting).
    pub best_time: Option<bool>,
    /// Review mode: AI-written messages wait in `pending_review` until a person approves,
    /// edits or rejects them (`engager review`).
    pub review: bool,
    /// Open and click tracking (`[tracking]`); both off by default.
    pub tracking: crate::tracking::TrackingSettings,
}

impl Campaign {
    /// Builds a campaign, checking that it has steps, a usable slug and complete templates.
    pub fn new(
        id: CampaignId,
        slug: String,
        name: String,
        steps: Vec<Step>,
        window: SendWindow,
    ) -> Result<Self, CampaignError> {
        let slug_ok = !slug.is_empty()
            && slug.len() <= 64
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !slug_ok {
            return Err(CampaignError::InvalidSlug(slug));
        }
        if steps.is_empty() {
            return Err(CampaignError::NoSteps);
        }
        for (i, step) in steps.iter().enumerate() {
            let invalid = |reason: &str| CampaignError::InvalidStep {
                step: i + 1,
                name: step.name.clone(),
                reason: reason.to_owned(),
            };
            if step.index != i {
                return Err(invalid("step indexes must be consecutive from 0"));
            }
            if step.channels.is_empty() {
                return Err(invalid("no channel given"));
            }
            if step.delay < Duration::zero() {
                return Err(invalid("the delay is negative"));
            }
            if let Some(b) = step.delay_bounds {
                if b.min_days > b.max_days {
                    return Err(invalid("min_delay_days is larger than max_delay_days"));
                }
                let base = step.base_days();
                if base < b.min_days || base > b.max_days {
                    return Err(invalid(&format!(
                        "the delay ({base} days) must lie within min_delay_days..max_delay_days ({}..{})",
                        b.min_days, b.max_days
                    )));
                }
            }
            if step.template.body.trim().is_empty() {
                return Err(invalid("the body template is empty"));
            }
            let has_subject = step
                .template
                .subject
                .as_deref()
                .is_some_and(|s| !s.trim().is_empty());
            if step.channels.contains(&Channel::Email) && !has_subject {
                return Err(invalid("an email step needs a subject"));
            }
            if step.variants.len() == 1 {
                return Err(invalid("an experiment needs at least two variants"));
            }
            let e = &step.experiment;
            if !(e.alpha > 0.0 && e.alpha < 0.5) {
                return Err(invalid(&format!(
                    "experiment.alpha {}: expected a value in (0, 0.5)",
                    e.alpha
                )));
            }
            if !step.variants.is_empty() {
                let most = 1.0 / step.variants.len() as f64;
                if !(e.floor >= 0.0 && e.floor <= most) {
                    return Err(invalid(&format!(
                        "experiment.floor {}: expected a share from 0 to {most:.3} (1 / {} variants)",
                        e.floor,
                        step.variants.len()
                    )));
                }
            }
            let mut names = std::collections::HashSet::new();
            for v in &step.variants {
                let name_ok = !v.name.is_empty()
                    && v.name.len() <= 32
                    && v.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !name_ok {
                    return Err(invalid(&format!(
                        "variant name {:?}: expected 1 to 32 of a-z, 0-9 and -",
                        v.name
                    )));
                }
                if !names.insert(v.name.as_str()) {
                    return Err(invalid(&format!("variant {:?} is named twice", v.name)));
                }
                if v.weight == 0 {
                    return Err(invalid(&format!("variant {:?} has weight 0", v.name)));
                }
                if v.template.body.trim().is_empty() {
                    return Err(invalid(&format!("variant {:?} has an empty body", v.name)));
                }
                let has_subject = v
                    .template
                    .subject
                    .as_deref()
                    .is_some_and(|s| !s.trim().is_empty());
                if step.channels.contains(&Channel::Email) && !has_subject {
                    return Err(invalid(&format!(
                        "variant {:?} of an email step needs a subject",
                        v.name
                    )));
                }
            }
        }
        Ok(Self {
            id,
            slug,
            name,
            steps,
            window,
            budget: BudgetOverrides::default(),
            best_time: None,
            review: false,
            tracking: Default::default(),
        })
    }

    /// The step at `index`, if the sequence has one.
    pub fn step(&self, index: usize) -> Option<&Step> {
        self.steps.get(index)
    }
}
