//! Choosing when a step goes out: the send window in the lead's local time, its holidays,
//! SMS quiet hours in every zone the lead may be in, the learned best hour, jitter, and the
//! delays between steps (calendar or business days, adapted to the lead's behaviour).
//!
//! Invariants, property-tested over every IANA zone:
//! - a slot from [`choose_slot`] is at or after `earliest`, inside the window in the lead's
//!   local time, on an allowed weekday that is not a holiday, and — for SMS — inside the quiet
//!   hours in the lead's zone and in every zone of its spread;
//! - [`SlotRules::allows`] is the single test both the planner (when choosing) and the
//!   dispatcher (just before sending) apply, so a late or retried SMS is held, never sent at
//!   night.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc, Weekday,
};

use crate::best_time::ScoreTable;
use crate::campaign::Step;
use crate::contact::TimeZone;
use crate::event::EventKind;
use crate::holidays::{add_business_days, Holidays};
use crate::timing::{next_send_slot, resolve_local, SendWindow, WindowError};
use crate::zone::ZoneSpread;

/// The local hours, every day, in which SMS may be sent (TCPA: 08:00–21:00 or stricter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    window: SendWindow,
}

const ALL_DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl QuietHours {
    /// Hours from `start` (inclusive) to `end` (exclusive), local time.
    pub fn new(start: NaiveTime, end: NaiveTime) -> Result<Self, WindowError> {
        Ok(Self {
            window: SendWindow::new(&ALL_DAYS, start, end)?,
        })
    }

    /// Whole hours; an `end_hour` of 24 means until 23:59:59.
    pub fn from_hours(start_hour: u32, end_hour: u32) -> Result<Self, WindowError> {
        let start = NaiveTime::from_hms_opt(start_hour.min(23), 0, 0).unwrap_or(NaiveTime::MIN);
        let end = if end_hour >= 24 {
            NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN)
        } else {
            NaiveTime::from_hms_opt(end_hour, 0, 0).unwrap_or(NaiveTime::MIN)
        };
        Self::new(start, end)
    }

    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("expected HH:MM-HH:MM, got {text:?}"))?;
        let t = |s: &str| {
            NaiveTime::parse_from_str(s.trim(), "%H:%M")
                .map_err(|_| format!("expected HH:MM-HH:MM, got {text:?}"))
        };
        Self::new(t(a)?, t(b)?).map_err(|e| e.to_string())
    }

    /// First allowed local time.
    pub fn start(&self) -> NaiveTime {
        self.window.start()
    }

    /// End (exclusive) local time.
    pub fn end(&self) -> NaiveTime {
        self.window.end()
    }

    /// Whether `at` is inside the hours in `tz`.
    pub fn contains(&self, tz: TimeZone, at: DateTime<Utc>) -> bool {
        self.window.contains(tz, at)
    }

    /// The first instant at or after `at` inside the hours in `tz`.
    pub fn next_open(&self, tz: TimeZone, at: DateTime<Utc>) -> DateTime<Utc> {
        next_send_slot(&self.window, tz, at, 0.0, Duration::zero())
    }

    /// The overlap of two sets of hours; `None` when they do not overlap.
    pub fn narrowed(&self, other: &QuietHours) -> Option<QuietHours> {
        Self::new(self.start().max(other.start()), self.end().min(other.end())).ok()
    }

    /// The hours with the end moved `margin` earlier, when that leaves at least `margin`.
    /// The planner schedules inside the narrowed hours so that a dispatcher running a little
    /// late still finds the message inside the real ones.
    pub fn with_end_margin(&self, margin: Duration) -> QuietHours {
        let end = self.end() - margin;
        if end > self.start() && end - self.start() >= margin {
            Self::new(self.start(), end).unwrap_or(*self)
        } else {
            *self
        }
    }

    /// A send window narrowed to these hours on the same weekdays. When they do not overlap,
    /// the quiet hours on the window's weekdays win (never a send outside them).
    pub fn apply_to(&self, window: &SendWindow) -> SendWindow {
        let start = window.start().max(self.start());
        let end = window.end().min(self.end());
        window
            .with_hours(start, end)
            .or_else(|_| window.with_hours(self.start(), self.end()))
            .unwrap_or(*window)
    }

    /// `08:00-21:00`.
    pub fn describe(&self) -> String {
        format!(
            "{}-{}",
            self.start().format("%H:%M"),
            self.end().format("%H:%M")
        )
    }
}

/// SMS hours: the base window and stricter windows per subdivision (`US-FL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsRules {
    base: QuietHours,
    subdivisions: Vec<(String, QuietHours)>,
}

/// The SMS hours that apply to one lead, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsHours {
    /// The hours.
    pub hours: QuietHours,
    /// The stricter rule applied, if any (`US-FL`, or `strictest of US-FL, US-MD`).
    pub rule: Option<String>,
}

impl SmsRules {
    /// Rules with only the base hours.
    pub fn new(base: QuietHours) -> Self {
        Self {
            base,
            subdivisions: Vec::new(),
        }
    }

    /// The rules with a stricter window for a subdivision (ISO 3166-2, e.g. `US-FL`); the
    /// window is narrowed to the base hours.
    pub fn with_subdivision(mut self, code: &str, hours: QuietHours) -> Self {
        let hours = hours.narrowed(&self.base).unwrap_or(self.base);
        self.subdivisions
            .push((code.trim().to_ascii_uppercase(), hours));
        self.subdivisions.sort_by(|a, b| a.0.cmp(&b.0));
        self
    }

    /// The base hours.
    pub fn base(&self) -> QuietHours {
        self.base
    }

    /// The subdivision rules.
    pub fn subdivisions(&self) -> &[(String, QuietHours)] {
        &self.subdivisions
    }

    /// The hours for a lead in `country` and (when known) `subdivision`. When the
    /// subdivision is unknown and the country has stricter subdivision rules, the strictest
    /// of them applies: the lead might live there.
    pub fn hours_for(&self, country: Option<&str>, subdivision: Option<&str>) -> SmsHours {
        if let Some(sub) = subdivision {
            return match self.subdivisions.iter().find(|(c, _)| c == sub) {
                Some((code, hours)) => SmsHours {
                    hours: *hours,
                    rule: Some(code.clone()),
                },
                None => SmsHours {
                    hours: self.base,
                    rule: None,
                },
            };
        }
        let Some(country) = country else {
            return SmsHours {
                hours: self.base,
                rule: None,
            };
        };
        let mut hours = self.base;
        let mut codes = Vec::new();
        for (code, h) in &self.subdivisions {
            let in_country = code
                .split_once('-')
                .is_some_and(|(c, _)| c.eq_ignore_ascii_case(country));
            if in_country {
                hours = hours.narrowed(h).unwrap_or(hours);
                codes.push(code.as_str());
            }
        }
        SmsHours {
            hours,
            rule: (!codes.is_empty())
                .then(|| format!("strictest of {} (state unknown)", codes.join(", "))),
        }
    }
}

impl Default for SmsRules {
    fn default() -> Self {
        Self::new(QuietHours::from_hours(8, 21).unwrap_or_else(|_| unreachable_hours()))
    }
}

fn unreachable_hours() -> QuietHours {
    QuietHours {
        window: SendWindow::business_hours(),
    }
}

/// Everything a slot must satisfy for one lead and one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRules<'a> {
    /// The send window in the lead's zone (for SMS already narrowed to the quiet hours).
    pub window: SendWindow,
    /// The lead's zone.
    pub zone: TimeZone,
    /// The holidays of the lead's country: no sends on them.
    pub holidays: Holidays<'a>,
    /// SMS only: quiet hours that must also hold in every zone of the spread.
    pub spread_hours: Option<(QuietHours, ZoneSpread)>,
}

/// The first allowed instant and what was skipped to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The instant.
    pub at: DateTime<Utc>,
    /// Holidays on which the window would otherwise have been open.
    pub holidays_skipped: Vec<NaiveDate>,
}

/// How far [`SlotRules::next_open`] searches (days).
const SEARCH_DAYS: usize = 400;

impl SlotRules<'_> {
    /// Rules with only a window and a zone (no holidays, no spread).
    pub fn window_only(window: SendWindow, zone: TimeZone) -> SlotRules<'static> {
        SlotRules {
            window,
            zone,
            holidays: Holidays::none(),
            spread_hours: None,
        }
    }

    /// Whether a send at `at` obeys every rule.
    pub fn allows(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.zone.tz());
        let date = local.date_naive();
        let time = local.time();
        self.window.allows_day(date)
            && time >= self.window.start()
            && time < self.window.end()
            && !self.holidays.contains(date)
            && self
                .spread_hours
                .is_none_or(|(hours, spread)| spread.zones().all(|z| hours.contains(z, at)))
    }

    /// The first instant at or after `earliest` that obeys every rule, or `None` when none
    /// exists within a year (a window whose only days are holidays, SMS hours that never
    /// overlap across the spread).
    pub fn next_open(&self, earliest: DateTime<Utc>) -> Option<Opening> {
        let mut skipped = Vec::new();
        let mut t = earliest;
        for _ in 0..32 {
            t = self.window_open(t, &mut skipped)?;
            let Some((hours, spread)) = self.spread_hours else {
                return Some(Opening {
                    at: t,
                    holidays_skipped: skipped,
                });
            };
            let mut moved = false;
            for z in spread.zones() {
                if !hours.contains(z, t) {
                    t = hours.next_open(z, t);
                    moved = true;
                }
            }
            if !moved && self.allows(t) {
                return Some(Opening {
                    at: t,
                    holidays_skipped: skipped,
                });
            }
        }
        None
    }

    /// The first instant at or after `t` inside the window on a non-holiday in the lead's zone.
    fn window_open(&self, t: DateTime<Utc>, skipped: &mut Vec<NaiveDate>) -> Option<DateTime<Utc>> {
        let w = &self.window;
        let mut date = t.with_timezone(&self.zone.tz()).date_naive();
        for _ in 0..SEARCH_DAYS {
            if w.allows_day(date) {
                let open = resolve_local(self.zone, date, w.start());
                let close = resolve_local(self.zone, date, w.end());
                let start = open.max(t);
                if start < close {
                    if self.holidays.contains(date) {
                        if skipped.len() < 16 && !skipped.contains(&date) {
                            skipped.push(date);
                        }
                    } else if w.contains(self.zone, start) {
                        return Some(start);
                    }
                }
            }
            date = date.succ_opt()?;
        }
        None
    }
}

/// The best-time search: which scores, how far ahead, and how much a later slot must win by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestTime<'a> {
    /// The lead's scores by local weekday and hour.
    pub scores: &'a ScoreTable,
    /// How many open window days (holidays excluded) to consider.
    pub horizon_days: u32,
    /// The share of its score a slot loses per day of waiting (0.1 = a slot one day later
    /// must score 11% higher).
    pub day_penalty: f32,
    /// Never choose a slot after this instant (the step's maximum delay).
    pub latest: Option<DateTime<Utc>>,
}

/// The chosen hour of a best-time search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestPick {
    /// The chosen local start (before jitter).
    pub local: NaiveDateTime,
    /// Its score.
    pub score: f32,
    /// The score of the first open instant, for comparison.
    pub first_score: f32,
    /// Candidate hours considered.
    pub candidates: u32,
}

/// The outcome of [`choose_slot`].
#[derive(Debug, Clone, PartialEq)]
pub struct SlotChoice {
    /// When to send (jitter included).
    pub at: DateTime<Utc>,
    /// The first instant the rules allowed.
    pub first_open: DateTime<Utc>,
    /// Holidays skipped on the way to `first_open`.
    pub holidays_skipped: Vec<NaiveDate>,
    /// What the best-time search chose, when it ran.
    pub pick: Option<BestPick>,
    /// True when no allowed instant exists within a year and the plain window was used.
    pub fallback: bool,
}

/// Chooses when to send: the first instant at or after `earliest` that obeys `rules`, or —
/// with `best` — the best-scoring hour within the horizon (never after `best.latest`), moved
/// later by `jitter` (a fraction in `[0, 1)`) of at most `max_jitter` without leaving the
/// window, the chosen hour or the rules.
pub fn choose_slot(
    rules: &SlotRules<'_>,
    earliest: DateTime<Utc>,
    best: Option<&BestTime<'_>>,
    jitter: f64,
    max_jitter: Duration,
) -> SlotChoice {
    let Some(opening) = rules.next_open(earliest) else {
        let at = next_send_slot(&rules.window, rules.zone, earliest, jitter, max_jitter);
        return SlotChoice {
            at,
            first_open: at,
            holidays_skipped: Vec::new(),
            pick: None,
            fallback: true,
        };
    };
    let first = opening.at;
    let tz = rules.zone.tz();
    let first_local = first.with_timezone(&tz).naive_local();
    let (start, pick) = match best {
        Some(best) => best_start(rules, best, first, first_local),
        None => (first, None),
    };
    let start_local = if start == first {
        first_local
    } else {
        start.with_timezone(&tz).naive_local()
    };
    // Room for jitter: up to the window's end that day, and with a best-time pick up to the
    // end of the chosen hour (the score is per hour).
    let mut room = rules
        .window
        .end()
        .signed_duration_since(start_local.time())
        .min(max_jitter)
        - Duration::seconds(1);
    if pick.is_some() {
        let to_next_hour =
            Duration::seconds(3600 - i64::from(start_local.minute() * 60 + start_local.second()));
        room = room.min(to_next_hour - Duration::seconds(1));
    }
    let offset_ms = (room.num_milliseconds().max(0) as f64 * jitter.clamp(0.0, 1.0)) as i64;
    let jittered = start + Duration::milliseconds(offset_ms);
    let at = if offset_ms == 0 || rules.allows(jittered) {
        jittered
    } else {
        start
    };
    SlotChoice {
        at,
        first_open: first,
        holidays_skipped: opening.holidays_skipped,
        pick,
        fallback: false,
    }
}

/// The best-scoring allowed start within the horizon.
fn best_start(
    rules: &SlotRules<'_>,
    best: &BestTime<'_>,
    first: DateTime<Utc>,
    first_local: NaiveDateTime,
) -> (DateTime<Utc>, Option<BestPick>) {
    let w = &rules.window;
    let tz = rules.zone.tz();
    let first_score = best.scores.score(first_local.weekday(), first_local.hour());
    if best.latest.is_some_and(|l| l <= first) {
        // The first open instant is already as late as the step may go.
        let pick = BestPick {
            local: first_local,
            score: first_score,
            first_score,
            candidates: 1,
        };
        return (first, Some(pick));
    }
    let latest_local = best.latest.map(|l| l.with_timezone(&tz).naive_local());
    let decay_per_hour = (1.0 - best.day_penalty.clamp(0.0, 0.99)).powf(1.0 / 24.0);
    // utility(t) = score(t) × decay_per_hour^(hours from the first open instant), computed
    // without a power per candidate: a factor per hour of day, one per day, and an offset.
    let mut hour_factor = [1.0f32; 24];
    for h in 1..24 {
        hour_factor[h] = hour_factor[h - 1] * decay_per_hour;
    }
    let day_step = hour_factor[23] * decay_per_hour;
    let first_hours = first_local.hour() as f32 + first_local.minute() as f32 / 60.0;
    let offset = decay_per_hour.powf(-first_hours);
    let mut chosen = (first_local, first_score, first_score);
    let mut candidates = 1u32;
    // Candidates needing a check in other zones are resolved and tested as they become best.
    let needs_check = rules.spread_hours.is_some();
    let mut date = first_local.date();
    let mut day_factor = offset;
    let mut open_days = 0u32;
    let horizon = best.horizon_days.max(1);
    let (start_hour, start_mid_hour) = (
        w.start().hour(),
        w.start().minute() != 0 || w.start().second() != 0,
    );
    let end = w.end();
    'days: for _ in 0..(horizon as usize * 3 + 14) {
        if w.allows_day(date) && !rules.holidays.contains(date) {
            open_days += 1;
            if open_days > horizon {
                break;
            }
            let weekday = date.weekday();
            let row = best.scores.row(weekday);
            let mut hour = start_hour;
            if date == first_local.date() {
                hour = hour.max(first_local.hour() + 1);
            } else if start_mid_hour {
                // The window opens mid-hour: its first candidate is the opening itself.
                let t = date.and_time(w.start());
                if latest_local.is_some_and(|l| t > l) {
                    break 'days;
                }
                candidates += 1;
                let hours = (t - first_local).num_minutes() as f32 / 60.0;
                let utility = row[hour as usize] * decay_per_hour.powf(hours);
                consider(
                    rules,
                    t,
                    row[hour as usize],
                    utility,
                    needs_check,
                    &mut chosen,
                );
                hour += 1;
            }
            while hour < 24 {
                let Some(time) = NaiveTime::from_hms_opt(hour, 0, 0) else {
                    break;
                };
                if time >= end {
                    break;
                }
                let t = date.and_time(time);
                if latest_local.is_some_and(|l| t > l) {
                    break 'days;
                }
                candidates += 1;
                let score = row[hour as usize];
                let utility = score * day_factor * hour_factor[hour as usize];
                consider(rules, t, score, utility, needs_check, &mut chosen);
                hour += 1;
            }
        }
        match date.succ_opt() {
            Some(d) => date = d,
            None => break,
        }
        day_factor *= day_step;
    }
    let pick = BestPick {
        local: chosen.0,
        score: chosen.1,
        first_score,
        candidates,
    };
    if chosen.0 == first_local {
        return (first, Some(pick));
    }
    let start = resolve_local(rules.zone, chosen.0.date(), chosen.0.time()).max(first);
    if rules.allows(start) {
        return (start, Some(pick));
    }
    // A DST shift moved the hour out of the window: the first allowed instant after it.
    match rules.next_open(start) {
        Some(o) => (o.at, Some(pick)),
        None => (first, Some(pick)),
    }
}

fn consider(
    rules: &SlotRules<'_>,
    t: NaiveDateTime,
    score: f32,
    utility: f32,
    needs_check: bool,
    chosen: &mut (NaiveDateTime, f32, f32),
) {
    if utility <= chosen.2 + 1e-6 {
        return;
    }
    if needs_check && !rules.allows(resolve_local(rules.zone, t.date(), t.time())) {
        return;
    }
    *chosen = (t, score, utility);
}

// --- delays between steps ------------------------------------------------------------------

/// The instant a step is due `days` days (calendar or business, as the step counts them)
/// after the previous step was sent, plus the step's extra hours. Business days skip
/// weekends and `holidays` in the lead's zone.
pub fn step_due(
    step: &Step,
    previous_sent: DateTime<Utc>,
    days: u32,
    zone: TimeZone,
    holidays: Holidays<'_>,
) -> DateTime<Utc> {
    let extra = step.delay - Duration::days(step.delay.num_days());
    if step.counts_business_days() {
        add_business_days(previous_sent + extra, days, zone, holidays)
    } else {
        previous_sent + Duration::days(i64::from(days)) + extra
    }
}

/// The earliest instant a step can become due after the previous send: its minimum delay
/// when it adapts to behaviour, else its delay. The dispatcher sets this at send time; the
/// planner then applies the behaviour rule.
pub fn earliest_step_due(
    step: &Step,
    previous_sent: DateTime<Utc>,
    zone: TimeZone,
    holidays: Holidays<'_>,
) -> DateTime<Utc> {
    let days = step
        .delay_bounds
        .map_or(step.base_days(), |b| b.min_days.min(step.base_days()));
    step_due(step, previous_sent, days, zone, holidays)
}

/// How a lead reacted to the previous step, as far as follow-ups care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Opened or clicked (a reply would have stopped the sequence).
    Engaged(EventKind),
    /// An email that was not opened.
    Ignored,
    /// A channel that reports no opens (SMS, LinkedIn): nothing to learn.
    Unknown,
}

/// The behaviour-adapted timing of a follow-up step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    /// The days (as the step counts them) chosen.
    pub days: u32,
    /// When the step is due with that delay.
    pub due: DateTime<Utc>,
    /// When to evaluate again if `due` is in the future: the next point at which the
    /// lead's behaviour could change the decision.
    pub recheck: DateTime<Utc>,
    /// Latest allowed send (the maximum delay), for the best-time horizon.
    pub latest: DateTime<Utc>,
    /// Whether to try another channel first (the previous email was ignored).
    pub prefer_other_channel: bool,
    /// A sentence for the trace.
    pub reason: String,
}

/// Adapts a step's delay to the reaction to the previous step, within the step's bounds:
/// engaged → the minimum delay; an ignored email → the maximum delay and another channel
/// first; no signal → the step's own delay. `None` when the step has no bounds.
pub fn follow_up(
    step: &Step,
    previous_sent: DateTime<Utc>,
    reaction: Reaction,
    zone: TimeZone,
    holidays: Holidays<'_>,
) -> Option<FollowUp> {
    let bounds = step.delay_bounds?;
    let unit = if step.counts_business_days() {
        "business days"
    } else {
        "days"
    };
    let base = step.base_days();
    let due_in = |d| step_due(step, previous_sent, d, zone, holidays);
    let latest = due_in(bounds.max_days);
    let (days, recheck_days, prefer_other, why) = match reaction {
        Reaction::Engaged(kind) => (
            bounds.min_days,
            bounds.min_days,
            false,
            format!("previous message {kind}: sooner"),
        ),
        Reaction::Ignored => (
            bounds.max_days,
            // Look again at the usual delay: an open by then brings the step forward.
            if base > bounds.min_days {
                base
            } else {
                bounds.max_days
            },
            true,
            "previous email not opened: later, another channel first".to_owned(),
        ),
        Reaction::Unknown => (
            base,
            base,
            false,
            "no open tracking on the previous channel: the step's delay".to_owned(),
        ),
    };
    let due = due_in(days);
    let recheck = due_in(recheck_days).min(due);
    Some(FollowUp {
        days,
        due,
        recheck,
        latest,
        prefer_other_channel: prefer_other,
        reason: format!(
            "follow-up by behaviour: {why} → {days} {unit} (bounds {}–{})",
            bounds.min_days, bounds.max_days
        ),
    })
}

/// A local weekday's short name.
pub fn weekday_name(day: Weekday) -> &'static str {
    ALL_DAYS[day.num_days_from_monday() as usize]
}

#[cfg(test)]
mod tests;
