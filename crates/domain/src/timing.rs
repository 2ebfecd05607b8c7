//! Send windows in the lead's local time.
//!
//! Invariant: a slot returned by [`next_send_slot`] is at or after the earliest allowed
//! instant, falls on an allowed weekday, and its local wall-clock time lies inside the window
//! — also across daylight-saving gaps and overlaps.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone as _, Utc};
use thiserror::Error;

use crate::contact::TimeZone;

/// Why a send window was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    /// No weekday is allowed.
    #[error("the send window allows no weekday")]
    NoDays,
    /// The window's start is not before its end.
    #[error("the send window must start before it ends (got {start}–{end})")]
    Empty { start: NaiveTime, end: NaiveTime },
    /// A weekday name was not understood.
    #[error("unknown weekday {0:?}: expected mon, tue, wed, thu, fri, sat or sun")]
    UnknownDay(String),
}

/// Allowed weekdays and local hours for sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    days: [bool; 7],
    start: NaiveTime,
    end: NaiveTime,
}

impl SendWindow {
    /// Builds a window from weekday names (`mon`…`sun`) and a local start and end time.
    pub fn new(day_names: &[&str], start: NaiveTime, end: NaiveTime) -> Result<Self, WindowError> {
        let mut days = [false; 7];
        for name in day_names {
            let i = match name.trim().to_ascii_lowercase().get(..3) {
                Some("mon") => 0,
                Some("tue") => 1,
                Some("wed") => 2,
                Some("thu") => 3,
                Some("fri") => 4,
                Some("sat") => 5,
                Some("sun") => 6,
                _ => return Err(WindowError::UnknownDay((*name).to_owned())),
            };
            days[i] = true;
        }
        if !days.iter().any(|d| *d) {
            return Err(WindowError::NoDays);
        }
        if start >= end {
            return Err(WindowError::Empty { start, end });
        }
        Ok(Self { days, start, end })
    }

    /// Monday to Friday, 09:00–17:00.
    pub fn business_hours() -> Self {
        Self {
            days: [true, true, true, true, true, false, false],
            start: NaiveTime::from_hms_opt(9, 0, 0).expect("valid time"),
            end: NaiveTime::from_hms_opt(17, 0, 0).expect("valid time"),
        }
    }

    /// Whether a local date's weekday is allowed.
    pub fn allows_day(&self, date: NaiveDate) -> bool {
        self.days[date.weekday().num_days_from_monday() as usize]
    }

    /// The same weekdays with other hours.
    pub fn with_hours(&self, start: NaiveTime, end: NaiveTime) -> Result<Self, WindowError> {
        if start >= end {
            return Err(WindowError::Empty { start, end });
        }
        Ok(Self {
            days: self.days,
            start,
            end,
        })
    }

    /// Local start time.
    pub fn start(&self) -> NaiveTime {
        self.start
    }

    /// Local end time (exclusive).
    pub fn end(&self) -> NaiveTime {
        self.end
    }

    /// Whether an instant lies inside the window in the given zone.
    pub fn contains(&self, tz: TimeZone, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&tz.tz());
        self.allows_day(local.date_naive()) && {
            let t = local.time();
            t >= self.start && t < self.end
        }
    }

    /// A short description such as `mon-fri 09:00-17:00`.
    pub fn describe(&self) -> String {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let days: Vec<&str> = NAMES
            .iter()
            .zip(self.days)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        format!(
            "{} {}-{}",
            days.join(","),
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// The first instant at or after `earliest` inside `window` in the zone `tz`, moved later by
/// `jitter` (a fraction in `[0, 1)`) of at most `max_jitter`, without leaving the window.
///
/// Jitter spreads a campaign's sends so they do not all fire at 09:00:00. The caller derives
/// it deterministically (e.g. from a hash of lead and step) so simulations are reproducible.
pub fn next_send_slot(
    window: &SendWindow,
    tz: TimeZone,
    earliest: DateTime<Utc>,
    jitter: f64,
    max_jitter: Duration,
) -> DateTime<Utc> {
    let zone = tz.tz();
    let local_earliest = earliest.with_timezone(&zone);
    let mut date = local_earliest.date_naive();
    // Two weeks always contain an allowed day; the bound guards against a logic error only.
    for _ in 0..15 {
        if window.allows_day(date) {
            let open = resolve_local(tz, date, window.start);
            let close = resolve_local(tz, date, window.end);
            let start = open.max(earliest);
            if start < close {
                let room = (close - start - Duration::seconds(1)).min(max_jitter);
                let offset_ms =
                    (room.num_milliseconds().max(0) as f64 * jitter.clamp(0.0, 1.0)) as i64;
                let slot = start + Duration::milliseconds(offset_ms);
                if window.contains(tz, slot) {
                    return slot;
                }
                // A DST shift can put a resolved boundary outside the local window; use the
                // first instant that is inside.
                if window.contains(tz, start) {
                    return start;
                }
            }
        }
        date = date.succ_opt().unwrap_or(date);
    }
    earliest
}

/// Maps a local wall-clock time to an instant: the earlier one in an overlap, and the first
/// valid time after a gap (spring-forward).
pub(crate) fn resolve_local(tz: TimeZone, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let zone = tz.tz();
    let naive = date.and_time(time);
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // Inside a spring-forward gap: the first wall-clock minute that exists is the
            // gap's end. Gaps are at most a few hours, so a minute-by-minute probe is cheap.
            let mut probe = naive;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                if let Some(t) = zone.from_local_datetime(&probe).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&naive)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn friday_evening_moves_to_monday_morning_local() {
        let w = SendWindow::business_hours();
        let berlin = TimeZone::parse("Europe/Berlin").unwrap();
        // Friday 2026-03-06 18:00 Berlin = 17:00Z.
        let slot = next_send_slot(
            &w,
            berlin,
            utc("2026-03-06T17:00:00Z"),
            0.0,
            Duration::zero(),
        );
        assert_eq!(slot, utc("2026-03-09T08:00:00Z"));
    }

    #[test]
    fn inside_the_window_sends_now() {
        let w = SendWindow::business_hours();
        let ny = TimeZone::parse("America/New_York").unwrap();
        let now = utc("2026-03-04T15:00:00Z"); // Wednesday 10:00 EST
        assert_eq!(next_send_slot(&w, ny, now, 0.0, Duration::hours(1)), now);
    }

    #[test]
    fn dst_gap_is_handled() {
        // 2026-03-08 is the US spring-forward Sunday; 02:00-03:00 does not exist.
        let w = SendWindow::new(&["sun"], t(2, 30), t(4, 0)).unwrap();
        let ny = TimeZone::parse("America/New_York").unwrap();
        let slot = next_send_slot(&w, ny, utc("2026-03-08T00:00:00Z"), 0.0, Duration::zero());
        assert!(w.contains(ny, slot), "{slot}");
        assert_eq!(slot, utc("2026-03-08T07:00:00Z")); // 03:00 EDT
    }

    #[test]
    fn window_validation() {
        assert_eq!(
            SendWindow::new(&[], t(9, 0), t(17, 0)),
            Err(WindowError::NoDays)
        );
        assert!(SendWindow::new(&["mon"], t(17, 0), t(9, 0)).is_err());
        assert!(SendWindow::new(&["funday"], t(9, 0), t(17, 0)).is_err());
    }

    proptest! {
        #[test]
        fn slots_are_always_inside_the_window(
            zone_index in 0usize..chrono_tz::TZ_VARIANTS.len(),
            secs in 1_600_000_000i64..1_900_000_000i64,
            start_h in 0u32..23, len_h in 1u32..12, jitter in 0.0f64..1.0,
            day_mask in 1u8..128,
        ) {
            let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            let days: Vec<&str> = (0..7).filter(|i| day_mask & (1 << i) != 0).map(|i| names[i]).collect();
            let end_h = (start_h + len_h).min(24);
            let end = if end_h == 24 { NaiveTime::from_hms_opt(23, 59, 59).unwrap() } else { t(end_h, 0) };
            let w = SendWindow::new(&days, t(start_h, 0), end).unwrap();
            let tz = TimeZone::from_tz(chrono_tz::TZ_VARIANTS[zone_index]);
            let earliest = DateTime::from_timestamp(secs, 0).unwrap();
            let slot = next_send_slot(&w, tz, earliest, jitter, Duration::minutes(90));
            prop_assert!(slot >= earliest);
            prop_assert!(w.contains(tz, slot), "slot {} local {} window {}", slot, slot.with_timezone(&tz.tz()), w.describe());
            prop_assert!(slot - earliest <= Duration::days(15));
        }
    }
}
