//! The best-time model: when in the week (local weekday × hour) a lead is most likely to
//! engage.
//!
//! A prior table of weekday × hour weights (an industry's typical pattern) is blended with the
//! lead's own engagement history. Each open, click or reply adds weight around its local hour
//! (a Gaussian kernel, so 07:30 also lends to 07:00–09:00) on its weekday, and half as much
//! on the other weekdays (routines repeat across days). The lead's profile is blended with the
//! prior by shrinkage: with evidence `n` (weighted events) and pseudo-count `k`, the lead's
//! weight is `n / (n + k)`. One event therefore nudges the scores; a consistent habit
//! dominates them.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use thiserror::Error;

use crate::contact::TimeZone;
use crate::event::EventKind;
use crate::history::Engagement;

/// Weekday names in table order (Monday first).
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Why a weight table was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WeightsError {
    /// A row does not have 24 hourly weights.
    #[error("{day}: expected 24 hourly weights (00 to 23), got {got}")]
    RowLength { day: &'static str, got: usize },
    /// A weight is negative or not a number.
    #[error("{day}: weight {value} at hour {hour} must be a number ≥ 0")]
    Negative {
        day: &'static str,
        hour: usize,
        value: String,
    },
    /// Every weight is zero.
    #[error("every weight is zero")]
    AllZero,
}

/// Relative engagement weights by local weekday (Monday first) and hour (0–23).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourWeights {
    rows: [[f32; 24]; 7],
}

/// The built-in B2B prior: mid-morning peaks, a lunch dip, a smaller early-afternoon peak,
/// Tuesday to Thursday best, Friday weaker, weekends low.
const DEFAULT_HOURS: [f32; 24] = [
    2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 8.0, 25.0, 60.0, 85.0, 100.0, 90.0, 60.0, 70.0, 80.0, 70.0, 55.0,
    35.0, 20.0, 15.0, 10.0, 6.0, 4.0, 2.0,
];
const DEFAULT_DAYS: [f32; 7] = [0.9, 1.0, 1.0, 0.95, 0.8, 0.25, 0.2];

impl HourWeights {
    /// The built-in prior (the table `config/engager.example.toml` prints under
    /// `[best_time.prior]`).
    pub fn industry_default() -> Self {
        let mut rows = [[0.0f32; 24]; 7];
        for (d, row) in rows.iter_mut().enumerate() {
            for (h, w) in row.iter_mut().enumerate() {
                *w = (DEFAULT_HOURS[h] * DEFAULT_DAYS[d]).round();
            }
        }
        Self { rows }
    }

    /// A table from seven rows of 24 weights (Monday first); `None` rows take `base`'s row.
    pub fn from_rows(base: &HourWeights, rows: [Option<&[f64]>; 7]) -> Result<Self, WeightsError> {
        let mut out = base.rows;
        for (d, row) in rows.iter().enumerate() {
            let Some(row) = row else { continue };
            if row.len() != 24 {
                return Err(WeightsError::RowLength {
                    day: WEEKDAYS[d],
                    got: row.len(),
                });
            }
            for (h, v) in row.iter().enumerate() {
                if !v.is_finite() || *v < 0.0 {
                    return Err(WeightsError::Negative {
                        day: WEEKDAYS[d],
                        hour: h,
                        value: v.to_string(),
                    });
                }
                out[d][h] = *v as f32;
            }
        }
        if out.iter().flatten().all(|w| *w == 0.0) {
            return Err(WeightsError::AllZero);
        }
        Ok(Self { rows: out })
    }

    /// The weight of a weekday and hour.
    pub fn weight(&self, day: Weekday, hour: u32) -> f32 {
        self.rows[day.num_days_from_monday() as usize][(hour % 24) as usize]
    }

    /// One weekday's row.
    pub fn row(&self, day: Weekday) -> &[f32; 24] {
        &self.rows[day.num_days_from_monday() as usize]
    }
}

/// Scores by local weekday and hour, scaled so that the best cell is 1.0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreTable {
    cells: [[f32; 24]; 7],
    evidence: f32,
    lead_weight: f32,
}

impl ScoreTable {
    /// The scores of a prior table alone.
    pub fn prior(weights: &HourWeights) -> Self {
        let mut cells = weights.rows;
        scale_to_max(&mut cells);
        Self {
            cells,
            evidence: 0.0,
            lead_weight: 0.0,
        }
    }

    /// The score of a local weekday and hour.
    pub fn score(&self, day: Weekday, hour: u32) -> f32 {
        self.cells[day.num_days_from_monday() as usize][(hour % 24) as usize]
    }

    /// One weekday's scores by hour.
    pub fn row(&self, day: Weekday) -> &[f32; 24] {
        &self.cells[day.num_days_from_monday() as usize]
    }

    /// The weighted number of the lead's own events behind the scores.
    pub fn evidence(&self) -> f32 {
        self.evidence
    }

    /// The share of the lead's own history in the scores (0 = prior only).
    pub fn lead_weight(&self) -> f32 {
        self.lead_weight
    }

    /// The best cells, best first: (weekday, hour, score).
    pub fn top(&self, n: usize) -> Vec<(Weekday, u32, f32)> {
        let mut all: Vec<(Weekday, u32, f32)> = (0..7)
            .flat_map(|d| (0..24).map(move |h| (d, h)))
            .map(|(d, h)| (weekday(d), h as u32, self.cells[d][h]))
            .collect();
        all.sort_by(|a, b| b.2.total_cmp(&a.2));
        all.truncate(n);
        all
    }
}

fn weekday(index: usize) -> Weekday {
    match index {
        0 => Weekday::Mon,
        1 => Weekday::Tue,
        2 => Weekday::Wed,
        3 => Weekday::Thu,
        4 => Weekday::Fri,
        5 => Weekday::Sat,
        _ => Weekday::Sun,
    }
}

fn scale_to_max(cells: &mut [[f32; 24]; 7]) {
    let max = cells.iter().flatten().fold(0.0f32, |m, v| m.max(*v));
    if max > 0.0 {
        for v in cells.iter_mut().flatten() {
            *v /= max;
        }
    }
}

/// How strongly the lead's own history moves the prior.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestTimeModel {
    /// Pseudo-count of the prior: with this much weighted evidence the lead's own pattern
    /// and the prior count equally.
    pub pseudo_count: f32,
    /// Weight of an open (opens are noisy: privacy proxies open on delivery).
    pub open_weight: f32,
    /// Weight of a click.
    pub click_weight: f32,
    /// Weight of a reply (or a conversion).
    pub reply_weight: f32,
    /// Width (standard deviation, hours) of the kernel that spreads an event over nearby hours.
    pub bandwidth_hours: f32,
}

impl Default for BestTimeModel {
    fn default() -> Self {
        Self {
            pseudo_count: 4.0,
            open_weight: 1.0,
            click_weight: 1.5,
            reply_weight: 2.0,
            bandwidth_hours: 1.0,
        }
    }
}

impl BestTimeModel {
    /// The weight of an event kind in the model (0 for kinds it ignores).
    pub fn weight_of(&self, kind: EventKind) -> f32 {
        match kind {
            EventKind::Opened => self.open_weight,
            EventKind::Clicked => self.click_weight,
            EventKind::Replied | EventKind::Converted => self.reply_weight,
            _ => 0.0,
        }
    }

    /// The prior blended with the lead's engagement history, read in the lead's zone.
    /// Without usable events this is the prior itself.
    pub fn blend(&self, prior: &ScoreTable, events: &[Engagement], zone: TimeZone) -> ScoreTable {
        let mut own = [[0.0f32; 24]; 7];
        let mut evidence = 0.0f32;
        let tz = zone.tz();
        let two_sigma_sq = 2.0 * self.bandwidth_hours.max(0.1).powi(2);
        for event in events {
            let w = self.weight_of(event.kind);
            if w <= 0.0 {
                continue;
            }
            evidence += w;
            let local = event.at.with_timezone(&tz);
            let day = local.weekday().num_days_from_monday() as usize;
            let x = local.hour() as f32 + local.minute() as f32 / 60.0;
            for (h, _) in DEFAULT_HOURS.iter().enumerate() {
                let dist = (h as f32 + 0.5 - x).abs();
                let k = w * (-(dist * dist) / two_sigma_sq).exp();
                if k < 1e-4 {
                    continue;
                }
                for (d, row) in own.iter_mut().enumerate() {
                    row[h] += if d == day { k } else { 0.5 * k };
                }
            }
        }
        if evidence <= 0.0 {
            return *prior;
        }
        scale_to_max(&mut own);
        let lambda = evidence / (evidence + self.pseudo_count.max(0.0));
        let mut cells = prior.cells;
        for (c, o) in cells.iter_mut().flatten().zip(own.iter().flatten()) {
            *c = (1.0 - lambda) * *c + lambda * *o;
        }
        scale_to_max(&mut cells);
        ScoreTable {
            cells,
            evidence,
            lead_weight: lambda,
        }
    }
}

/// Local weekday and hour of an instant in a zone (for displays and tests).
pub fn local_cell(at: DateTime<Utc>, zone: TimeZone) -> (Weekday, u32) {
    let local = at.with_timezone(&zone.tz());
    (local.weekday(), local.hour())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opens_at(zone: &str, local: &[&str]) -> Vec<Engagement> {
        let tz = TimeZone::parse(zone).unwrap();
        local
            .iter()
            .map(|s| {
                let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
                let at = chrono::TimeZone::from_local_datetime(&tz.tz(), &naive)
                    .unwrap()
                    .with_timezone(&Utc);
                Engagement {
                    at,
                    kind: EventKind::Opened,
                    delivery: None,
                }
            })
            .collect()
    }

    #[test]
    fn the_default_prior_peaks_tuesday_mid_morning() {
        let prior = ScoreTable::prior(&HourWeights::industry_default());
        let top = prior.top(1)[0];
        assert_eq!((top.0, top.1), (Weekday::Tue, 10));
        assert!(prior.score(Weekday::Sun, 3) < 0.05);
    }

    #[test]
    fn weights_tables_are_validated() {
        let base = HourWeights::industry_default();
        let short = [1.0; 23];
        let e = HourWeights::from_rows(&base, [None, Some(&short), None, None, None, None, None])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tue: expected 24 hourly weights (00 to 23), got 23"
        );
        let mut neg = [1.0; 24];
        neg[5] = -1.0;
        assert!(
            HourWeights::from_rows(&base, [Some(&neg), None, None, None, None, None, None])
                .is_err()
        );
        let zero = [0.0; 24];
        assert_eq!(
            HourWeights::from_rows(&base, [Some(&zero); 7]).unwrap_err(),
            WeightsError::AllZero
        );
    }

    #[test]
    fn one_event_nudges_a_habit_dominates() {
        let model = BestTimeModel::default();
        let prior = ScoreTable::prior(&HourWeights::industry_default());
        let zone = "America/Chicago";
        let tz = TimeZone::parse(zone).unwrap();
        // One open at 07:30 on a Tuesday: the best cell is still the prior's.
        let one = model.blend(&prior, &opens_at(zone, &["2026-03-03 07:30"]), tz);
        assert_eq!((one.top(1)[0].0, one.top(1)[0].1), (Weekday::Tue, 10));
        assert!(one.score(Weekday::Tue, 7) > prior.score(Weekday::Tue, 7));
        // Eight opens around 07:30 over two weeks: 07:00 wins.
        let habit = opens_at(
            zone,
            &[
                "2026-03-02 07:31",
                "2026-03-03 07:28",
                "2026-03-04 07:35",
                "2026-03-05 07:30",
                "2026-03-09 07:25",
                "2026-03-10 07:33",
                "2026-03-11 07:29",
                "2026-03-12 07:30",
            ],
        );
        let learned = model.blend(&prior, &habit, tz);
        assert_eq!(learned.top(1)[0].1, 7, "{:?}", learned.top(3));
        assert!(learned.lead_weight() > 0.6);
        // No history: exactly the prior.
        assert_eq!(model.blend(&prior, &[], tz), prior);
    }
}
