//! Holiday calendars per country and business-day arithmetic in a lead's local time.
//!
//! Invariant: [`add_business_days`] with `n ≥ 1` lands on a Monday–Friday local date that is
//! not a holiday of the given calendar, exactly `n` such days after the start's local date,
//! at the start's local wall-clock time (the first valid time after a DST gap).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc, Weekday};

use crate::contact::{CountryCode, TimeZone};
use crate::timing::resolve_local;

/// Public holidays per country (ISO 3166-1 alpha-2), as local dates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HolidayCalendar {
    by_country: BTreeMap<String, Vec<NaiveDate>>,
}

/// The holidays of one country (sorted), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holidays<'a>(&'a [NaiveDate]);

impl<'a> Holidays<'a> {
    /// No holidays.
    pub fn none() -> Self {
        Self(&[])
    }

    /// Holidays from a sorted list of dates.
    pub fn from_sorted(dates: &'a [NaiveDate]) -> Self {
        debug_assert!(dates.windows(2).all(|w| w[0] <= w[1]));
        Self(dates)
    }

    /// Whether the date is a holiday.
    pub fn contains(&self, date: NaiveDate) -> bool {
        !self.0.is_empty() && self.0.binary_search(&date).is_ok()
    }

    /// The dates.
    pub fn dates(&self) -> &'a [NaiveDate] {
        self.0
    }
}

impl HolidayCalendar {
    /// A calendar without holidays.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in national holidays of the example countries (AU, BR, CA, DE, ES, FR, GB,
    /// IN, JP, NL, SG, US) for 2026 and 2027: fixed and well-established dates including
    /// observed substitutes; regional holidays are not included.
    pub fn builtin() -> Self {
        let mut cal = Self::empty();
        for (country, dates) in BUILTIN {
            let list = cal.by_country.entry((*country).to_owned()).or_default();
            list.extend(
                dates
                    .iter()
                    .filter_map(|(y, m, d)| NaiveDate::from_ymd_opt(*y, *m, *d)),
            );
        }
        cal.normalize();
        cal
    }

    /// The calendar with `dates` added to `country`'s holidays.
    pub fn with_dates(
        mut self,
        country: &CountryCode,
        dates: impl IntoIterator<Item = NaiveDate>,
    ) -> Self {
        self.by_country
            .entry(country.as_str().to_owned())
            .or_default()
            .extend(dates);
        self.normalize();
        self
    }

    fn normalize(&mut self) {
        for dates in self.by_country.values_mut() {
            dates.sort_unstable();
            dates.dedup();
        }
    }

    /// The holidays of a country (by ISO code); none when the country is unknown.
    pub fn for_country(&self, country: Option<&str>) -> Holidays<'_> {
        country
            .and_then(|c| self.by_country.get(c))
            .map_or(Holidays::none(), |d| Holidays(d))
    }

    /// The countries that have holidays, with how many.
    pub fn countries(&self) -> impl Iterator<Item = (&str, usize)> {
        self.by_country.iter().map(|(c, d)| (c.as_str(), d.len()))
    }
}

/// Whether a local date is a business day: Monday to Friday and not a holiday.
pub fn is_business_day(date: NaiveDate, holidays: Holidays<'_>) -> bool {
    !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !holidays.contains(date)
}

/// The instant `n` business days after `start` in the zone `tz`, at the same local wall-clock
/// time. Weekends and `holidays` are skipped; `n = 0` returns `start` unchanged.
pub fn add_business_days(
    start: DateTime<Utc>,
    n: u32,
    tz: TimeZone,
    holidays: Holidays<'_>,
) -> DateTime<Utc> {
    if n == 0 {
        return start;
    }
    let local = start.with_timezone(&tz.tz()).naive_local();
    let mut date = local.date();
    let mut left = n;
    // A year always holds `n` business days for sane calendars; the bound guards against a
    // calendar that lists every day as a holiday.
    for _ in 0..(n as usize * 7 + 400) {
        date = match date.succ_opt() {
            Some(d) => d,
            None => return start,
        };
        if is_business_day(date, holidays) {
            left -= 1;
            if left == 0 {
                return resolve_local(tz, date, local.time());
            }
        }
    }
    start
}

type Ymd = (i32, u32, u32);

/// National holidays for 2026–2027 (observed substitutes included where the law moves them).
const BUILTIN: &[(&str, &[Ymd])] = &[
    (
        "US",
        &[
            (2026, 1, 1),
            (2026, 1, 19),
            (2026, 2, 16),
            (2026, 5, 25),
            (2026, 6, 19),
            (2026, 7, 3),
            (2026, 9, 7),
            (2026, 11, 26),
            (2026, 11, 27),
            (2026, 12, 25),
            (2027, 1, 1),
            (2027, 1, 18),
            (2027, 2, 15),
            (2027, 5, 31),
            (2027, 6, 18),
            (2027, 7, 5),
            (2027, 9, 6),
            (2027, 11, 25),
            (2027, 11, 26),
            (2027, 12, 24),
            (2027, 12, 31),
        ],
    ),
    (
        "CA",
        &[
            (2026, 1, 1),
            (2026, 4, 3),
            (2026, 5, 18),
            (2026, 7, 1),
            (2026, 9, 7),
            (2026, 9, 30),
            (2026, 10, 12),
            (2026, 12, 25),
            (2026, 12, 28),
            (2027, 1, 1),
            (2027, 3, 26),
            (2027, 5, 24),
            (2027, 7, 1),
            (2027, 9, 6),
            (2027, 9, 30),
            (2027, 10, 11),
            (2027, 12, 27),
            (2027, 12, 28),
        ],
    ),
    (
        "AU",
        &[
            (2026, 1, 1),
            (2026, 1, 26),
            (2026, 4, 3),
            (2026, 4, 6),
            (2026, 12, 25),
            (2026, 12, 28),
            (2027, 1, 1),
            (2027, 1, 26),
            (2027, 3, 26),
            (2027, 3, 29),
            (2027, 12, 27),
            (2027, 12, 28),
        ],
    ),
    (
        "BR",
        &[
            (2026, 1, 1),
            (2026, 2, 16),
            (2026, 2, 17),
            (2026, 4, 3),
            (2026, 4, 21),
            (2026, 5, 1),
            (2026, 6, 4),
            (2026, 9, 7),
            (2026, 10, 12),
            (2026, 11, 2),
            (2026, 11, 20),
            (2026, 12, 25),
            (2027, 1, 1),
            (2027, 2, 8),
            (2027, 2, 9),
            (2027, 3, 26),
            (2027, 4, 21),
            (2027, 5, 27),
            (2027, 9, 7),
            (2027, 10, 12),
            (2027, 11, 2),
            (2027, 11, 15),
        ],
    ),
    (
        "DE",
        &[
            (2026, 1, 1),
            (2026, 4, 3),
            (2026, 4, 6),
            (2026, 5, 1),
            (2026, 5, 14),
            (2026, 5, 25),
            (2026, 12, 25),
            (2027, 1, 1),
            (2027, 3, 26),
            (2027, 3, 29),
            (2027, 5, 6),
            (2027, 5, 17),
        ],
    ),
    (
        "ES",
        &[
            (2026, 1, 1),
            (2026, 1, 6),
            (2026, 4, 3),
            (2026, 5, 1),
            (2026, 10, 12),
            (2026, 12, 8),
            (2026, 12, 25),
            (2027, 1, 1),
            (2027, 1, 6),
            (2027, 3, 26),
            (2027, 10, 12),
            (2027, 11, 1),
            (2027, 12, 6),
            (2027, 12, 8),
        ],
    ),
    (
        "FR",
        &[
            (2026, 1, 1),
            (2026, 4, 6),
            (2026, 5, 1),
            (2026, 5, 8),
            (2026, 5, 14),
            (2026, 5, 25),
            (2026, 7, 14),
            (2026, 11, 11),
            (2026, 12, 25),
            (2027, 1, 1),
            (2027, 3, 29),
            (2027, 5, 6),
            (2027, 5, 17),
            (2027, 7, 14),
            (2027, 11, 1),
            (2027, 11, 11),
        ],
    ),
    (
        "GB",
        &[
            (2026, 1, 1),
            (2026, 4, 3),
            (2026, 4, 6),
            (2026, 5, 4),
            (2026, 5, 25),
            (2026, 8, 31),
            (2026, 12, 25),
            (2026, 12, 28),
            (2027, 1, 1),
            (2027, 3, 26),
            (2027, 3, 29),
            (2027, 5, 3),
            (2027, 5, 31),
            (2027, 8, 30),
            (2027, 12, 27),
            (2027, 12, 28),
        ],
    ),
    ("IN", &[(2026, 1, 26), (2026, 10, 2), (2027, 1, 26)]),
    (
        "JP",
        &[
            (2026, 1, 1),
            (2026, 1, 2),
            (2026, 1, 12),
            (2026, 2, 11),
            (2026, 2, 23),
            (2026, 3, 20),
            (2026, 4, 29),
            (2026, 5, 4),
            (2026, 5, 5),
            (2026, 5, 6),
            (2026, 7, 20),
            (2026, 8, 11),
            (2026, 9, 21),
            (2026, 9, 22),
            (2026, 9, 23),
            (2026, 10, 12),
            (2026, 11, 3),
            (2026, 11, 23),
            (2026, 12, 31),
            (2027, 1, 1),
            (2027, 1, 11),
            (2027, 2, 11),
            (2027, 2, 23),
            (2027, 3, 22),
            (2027, 4, 29),
            (2027, 5, 3),
            (2027, 5, 4),
            (2027, 5, 5),
            (2027, 7, 19),
            (2027, 8, 11),
            (2027, 9, 20),
            (2027, 9, 23),
            (2027, 10, 11),
            (2027, 11, 3),
            (2027, 11, 23),
            (2027, 12, 31),
        ],
    ),
    (
        "NL",
        &[
            (2026, 1, 1),
            (2026, 4, 6),
            (2026, 4, 27),
            (2026, 5, 14),
            (2026, 5, 25),
            (2026, 12, 25),
            (2027, 1, 1),
            (2027, 3, 29),
            (2027, 4, 27),
            (2027, 5, 6),
            (2027, 5, 17),
        ],
    ),
    (
        "SG",
        &[
            (2026, 1, 1),
            (2026, 2, 17),
            (2026, 2, 18),
            (2026, 4, 3),
            (2026, 5, 1),
            (2026, 5, 27),
            (2026, 6, 1),
            (2026, 8, 10),
            (2026, 11, 9),
            (2026, 12, 25),
            (2027, 1, 1),
            (2027, 2, 8),
            (2027, 3, 26),
            (2027, 8, 9),
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn builtin_holidays_are_weekdays_of_2026_and_2027() {
        let cal = HolidayCalendar::builtin();
        let countries: Vec<&str> = cal.countries().map(|(c, _)| c).collect();
        assert_eq!(
            countries,
            ["AU", "BR", "CA", "DE", "ES", "FR", "GB", "IN", "JP", "NL", "SG", "US"]
        );
        for (country, _) in cal.countries() {
            for d in cal.for_country(Some(country)).dates() {
                assert!((2026..=2027).contains(&d.year()), "{country} {d}");
                assert!(
                    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun),
                    "{country} {d} falls on a weekend; list the observed day instead"
                );
            }
        }
        let us = cal.for_country(Some("US"));
        assert!(us.contains(NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()));
        assert!(!cal
            .for_country(None)
            .contains(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()));
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        let ny = TimeZone::parse("America/New_York").unwrap();
        let cal = HolidayCalendar::builtin();
        let us = cal.for_country(Some("US"));
        let cases = [
            // Friday 10:00 + 1 → Monday 10:00.
            ("2026-03-06T15:00:00Z", 1, "2026-03-09T14:00:00Z"),
            // Saturday + 1 → Monday.
            ("2026-03-07T15:00:00Z", 1, "2026-03-09T14:00:00Z"),
            // Wednesday before Thanksgiving + 1 → Monday (Thu and Fri are holidays).
            ("2026-11-25T15:00:00Z", 1, "2026-11-30T15:00:00Z"),
            // Thursday 2 July + 1 → Monday 6 July (3 July is the observed Independence Day).
            ("2026-07-02T14:00:00Z", 1, "2026-07-06T14:00:00Z"),
            ("2026-03-02T15:00:00Z", 0, "2026-03-02T15:00:00Z"),
            ("2026-03-02T15:00:00Z", 5, "2026-03-09T14:00:00Z"),
        ];
        for (start, n, want) in cases {
            assert_eq!(
                add_business_days(utc(start), n, ny, us),
                utc(want),
                "{start} + {n}"
            );
        }
    }

    proptest! {
        #[test]
        fn business_day_arithmetic_never_lands_on_a_weekend_or_holiday(
            zone_index in 0usize..chrono_tz::TZ_VARIANTS.len(),
            secs in 1_767_225_600i64..1_830_297_600i64, // 2026-01-01 .. 2028-01-01
            n in 1u32..25,
            extra in proptest::collection::vec(0i64..730, 0..40),
            country in prop::sample::select(vec!["US", "GB", "JP", "BR", "DE", "XX"]),
        ) {
            let tz = TimeZone::from_tz(chrono_tz::TZ_VARIANTS[zone_index]);
            let base = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
            let mut cal = HolidayCalendar::builtin();
            if let Ok(code) = CountryCode::parse(country) {
                cal = cal.with_dates(&code, extra.iter().map(|d| base + Duration::days(*d)));
            }
            let holidays = cal.for_country(Some(country));
            let start = DateTime::from_timestamp(secs, 0).unwrap();
            let due = add_business_days(start, n, tz, holidays);
            let local = due.with_timezone(&tz.tz()).date_naive();
            prop_assert!(due > start);
            prop_assert!(is_business_day(local, holidays), "{} is not a business day", local);
            // Exactly n business days after the start's local date.
            let mut count = 0;
            let mut d = start.with_timezone(&tz.tz()).date_naive();
            while d < local {
                d = d.succ_opt().unwrap();
                if is_business_day(d, holidays) { count += 1; }
            }
            prop_assert_eq!(count, n);
        }
    }
}
