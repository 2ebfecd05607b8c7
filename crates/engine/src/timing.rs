//! Timing as the planner and the dispatcher apply it: each lead's slot rules (the step's or
//! campaign's window, the holidays of the lead's country, SMS hours in every zone the lead
//! may be in), its best-time scores, and when a follow-up step falls due. The decisions are
//! `engager-domain`'s pure functions; this module only assembles their inputs from the
//! configuration, the campaign and the lead.

use chrono::{DateTime, Duration, Utc};
use engager_domain::best_time::{BestTimeModel, HourWeights, ScoreTable};
use engager_domain::holidays::{HolidayCalendar, Holidays};
use engager_domain::schedule::{
    choose_slot, earliest_step_due, QuietHours, SlotRules, SmsHours, SmsRules,
};
use engager_domain::timing::SendWindow;
use engager_domain::zone::ZoneResolution;
use engager_domain::{Campaign, Channel, Lead, LeadHistory, Step};

use crate::EngineConfig;

/// The best-time model's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BestTimeSettings {
    /// Whether the planner picks the learned best hour (campaigns may override).
    pub enabled: bool,
    /// How the lead's own history moves the prior.
    pub model: BestTimeModel,
    /// Open window days (holidays excluded) searched for the best hour.
    pub horizon_days: u32,
    /// Share of its score a slot loses per day of waiting.
    pub day_penalty: f32,
    /// The prior scores.
    pub prior: ScoreTable,
    /// Priors per industry (matched case-insensitively against the lead's industry).
    pub industries: Vec<(String, ScoreTable)>,
}

impl Default for BestTimeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            model: BestTimeModel::default(),
            horizon_days: 5,
            day_penalty: 0.1,
            prior: ScoreTable::prior(&HourWeights::industry_default()),
            industries: Vec::new(),
        }
    }
}

impl BestTimeSettings {
    /// The prior for a lead's industry: the industry's table when configured, else the
    /// default one.
    pub fn prior_for(&self, industry: Option<&str>) -> &ScoreTable {
        industry
            .map(str::trim)
            .and_then(|i| {
                self.industries
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(i))
            })
            .map_or(&self.prior, |(_, table)| table)
    }
}

/// Timing rules beyond the window: holidays, stricter SMS hours, the best-time model.
#[derive(Debug, Clone, PartialEq)]
pub struct TimingRules {
    /// Holidays per country.
    pub holidays: HolidayCalendar,
    /// Stricter SMS hours per subdivision (ISO 3166-2, e.g. `US-FL`).
    pub sms_subdivisions: Vec<(String, QuietHours)>,
    /// SMS are planned to leave this much room before the quiet hours end, so that a
    /// dispatcher running a little late does not have to hold them.
    pub sms_margin: Duration,
    /// The best-time model.
    pub best_time: BestTimeSettings,
    /// How far back the planner reads each lead's touches and events.
    pub history: Duration,
}

impl Default for TimingRules {
    fn default() -> Self {
        Self {
            holidays: HolidayCalendar::builtin(),
            sms_subdivisions: vec![
                ("US-FL".into(), default_state_hours()),
                ("US-MD".into(), default_state_hours()),
            ],
            sms_margin: Duration::minutes(30),
            best_time: BestTimeSettings::default(),
            history: Duration::days(90),
        }
    }
}

fn default_state_hours() -> QuietHours {
    QuietHours::from_hours(8, 20).unwrap_or_else(|_| unreachable!("08:00-20:00 is a valid window"))
}

/// The SMS hours rules of the configuration.
pub fn sms_rules(config: &EngineConfig) -> SmsRules {
    let base = QuietHours::from_hours(config.sms_quiet_start_hour, config.sms_quiet_end_hour)
        .unwrap_or_else(|_| SmsRules::default().base());
    config
        .timing
        .sms_subdivisions
        .iter()
        .fold(SmsRules::new(base), |rules, (code, hours)| {
            rules.with_subdivision(code, *hours)
        })
}

/// Where a lead is, for timing: its zone resolution, its holidays and its country.
#[derive(Debug, Clone, Copy)]
pub struct LeadPlace<'a> {
    /// The zone and how it was found.
    pub zone: ZoneResolution,
    /// The holidays of the lead's country.
    pub holidays: Holidays<'a>,
    /// The lead's country (or its phone's region).
    pub country: Option<&'a str>,
}

/// A lead's place.
pub fn lead_place<'a>(config: &'a EngineConfig, lead: &'a Lead) -> LeadPlace<'a> {
    let country = lead.home_country();
    LeadPlace {
        zone: lead.zone(config.default_time_zone),
        holidays: config.timing.holidays.for_country(country),
        country,
    }
}

/// The slot rules for a channel. SMS windows are narrowed to the lead's SMS hours (less the
/// planning margin when `planning`) in its zone and every zone of its spread.
pub fn slot_rules<'a>(
    config: &EngineConfig,
    place: &LeadPlace<'a>,
    window: SendWindow,
    channel: Channel,
    planning: bool,
) -> (SlotRules<'a>, Option<SmsHours>) {
    let mut rules = SlotRules {
        window,
        zone: place.zone.zone,
        holidays: place.holidays,
        spread_hours: None,
    };
    if channel != Channel::Sms {
        return (rules, None);
    }
    let sms = sms_rules(config).hours_for(place.country, place.zone.subdivision);
    let hours = if planning {
        sms.hours.with_end_margin(config.timing.sms_margin)
    } else {
        sms.hours
    };
    rules.window = hours.apply_to(&window);
    if !place.zone.spread.is_empty() {
        rules.spread_hours = Some((hours, place.zone.spread));
    }
    (rules, Some(sms))
}

/// A lead's best-time scores: the prior of its industry, or blended with its history.
#[derive(Debug, Clone, PartialEq)]
pub enum Scores<'a> {
    /// The prior alone (no usable history).
    Prior(&'a ScoreTable),
    /// Blended with the lead's own events.
    Blended(Box<ScoreTable>),
}

impl Scores<'_> {
    /// The table.
    pub fn table(&self) -> &ScoreTable {
        match self {
            Scores::Prior(t) => t,
            Scores::Blended(t) => t,
        }
    }
}

/// The best-time scores of a lead.
pub fn lead_scores<'a>(
    config: &'a EngineConfig,
    lead: &Lead,
    history: &LeadHistory,
    place: &LeadPlace<'_>,
) -> Scores<'a> {
    let settings = &config.timing.best_time;
    let prior = settings.prior_for(lead.profile.industry.as_deref());
    if !history
        .events
        .iter()
        .any(|e| settings.model.weight_of(e.kind) > 0.0)
    {
        return Scores::Prior(prior);
    }
    Scores::Blended(Box::new(settings.model.blend(
        prior,
        &history.events,
        place.zone.zone,
    )))
}

/// Whether the best-time model applies to a campaign.
pub fn best_time_enabled(config: &EngineConfig, campaign: &Campaign) -> bool {
    campaign
        .best_time
        .unwrap_or(config.timing.best_time.enabled)
}

/// The dispatcher's SMS re-check at send time (the real SMS hours, no planning margin):
/// `None` when the message may go now, else when it may go (jittered by `jitter` in `[0, 1)`).
pub fn sms_hold(
    config: &EngineConfig,
    lead: &Lead,
    campaign: &Campaign,
    step_index: usize,
    now: DateTime<Utc>,
    jitter: f64,
) -> Option<DateTime<Utc>> {
    let place = lead_place(config, lead);
    let window = campaign
        .step(step_index)
        .map_or(campaign.window, |s| s.window_or(campaign.window));
    let (rules, _) = slot_rules(config, &place, window, Channel::Sms, false);
    if rules.allows(now) {
        return None;
    }
    Some(choose_slot(&rules, now, None, jitter, config.max_jitter).at)
}

/// When `next` falls due after the previous step was sent at `sent_at`: its delay (or its
/// minimum delay, when it adapts to behaviour), counting business days in the lead's zone
/// and country when the step does. Counting from the actual send means a late step shifts
/// the steps after it.
pub fn next_step_due(
    config: &EngineConfig,
    lead: &Lead,
    next: &Step,
    sent_at: DateTime<Utc>,
) -> DateTime<Utc> {
    let place = lead_place(config, lead);
    earliest_step_due(next, sent_at, place.zone.zone, place.holidays)
}
