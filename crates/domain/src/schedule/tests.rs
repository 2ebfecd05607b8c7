use super::*;
use crate::best_time::{BestTimeModel, HourWeights};
use crate::campaign::{DelayBounds, StepTemplate};
use crate::contact::CountryCode;
use crate::history::Engagement;
use crate::holidays::HolidayCalendar;
use chrono::Offset;
use proptest::prelude::*;

fn t(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn zone(name: &str) -> TimeZone {
    TimeZone::parse(name).unwrap()
}

fn local(at: DateTime<Utc>, z: TimeZone) -> NaiveDateTime {
    at.with_timezone(&z.tz()).naive_local()
}

fn prior() -> ScoreTable {
    ScoreTable::prior(&HourWeights::industry_default())
}

fn best(scores: &ScoreTable) -> BestTime<'_> {
    BestTime {
        scores,
        horizon_days: 5,
        day_penalty: 0.1,
        latest: None,
    }
}

/// Opens at the given local times ("2026-03-02 07:30") in `z`.
fn opens(z: TimeZone, times: &[&str]) -> Vec<Engagement> {
    times
        .iter()
        .map(|s| {
            let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
            Engagement {
                at: resolve_local(z, naive.date(), naive.time()),
                kind: EventKind::Opened,
                delivery: None,
            }
        })
        .collect()
}

fn step(delay_days: u32, business: u32, bounds: Option<(u32, u32)>) -> Step {
    Step {
        index: 1,
        name: "follow-up".into(),
        channels: vec![crate::Channel::Email],
        delay: Duration::days(i64::from(if business > 0 { 0 } else { delay_days })),
        business_days: business,
        delay_bounds: bounds.map(|(min_days, max_days)| DelayBounds { min_days, max_days }),
        window: None,
        template: StepTemplate {
            subject: Some("s".into()),
            body: "b".into(),
            html: None,
        },
        fallback_on_failure: None,
        task_deadline: Duration::days(crate::campaign::DEFAULT_TASK_DEADLINE_DAYS),
        on_deadline: crate::campaign::OnDeadline::Skip,
        angle: None,
        variants: Vec::new(),
        experiment: Default::default(),
    }
}

// --- table-driven: the best-time model picks the slot ----------------------------------------

#[test]
fn best_time_slots_by_history() {
    let chicago = zone("America/Chicago");
    let model = BestTimeModel::default();
    let early_bird = model.blend(
        &prior(),
        &opens(
            chicago,
            &[
                "2026-02-02 07:30",
                "2026-02-03 07:28",
                "2026-02-04 07:33",
                "2026-02-05 07:31",
                "2026-02-09 07:30",
                "2026-02-10 07:26",
                "2026-02-11 07:34",
                "2026-02-12 07:29",
            ],
        ),
        chicago,
    );
    let one_open = model.blend(&prior(), &opens(chicago, &["2026-02-03 07:30"]), chicago);
    let none = model.blend(&prior(), &[], chicago);
    let wide = SendWindow::new(&["mon", "tue", "wed", "thu", "fri"], t(7, 0), t(18, 0)).unwrap();
    let office = SendWindow::business_hours();
    // Tuesday 2026-03-03 05:00 Chicago.
    let now = utc("2026-03-03T11:00:00Z");
    struct Case<'a> {
        name: &'a str,
        scores: &'a ScoreTable,
        window: SendWindow,
        want_local: &'a str,
    }
    let cases = [
        Case {
            name: "always opens at 07:30, wide window: an early slot",
            scores: &early_bird,
            window: wide,
            want_local: "2026-03-03 07:00",
        },
        Case {
            name: "always opens at 07:30, office window: the window's first hour",
            scores: &early_bird,
            window: office,
            want_local: "2026-03-03 09:00",
        },
        Case {
            name: "one open at 07:30 does not dominate: the prior's hour",
            scores: &one_open,
            window: wide,
            want_local: "2026-03-03 10:00",
        },
        Case {
            name: "no history: the prior's best hour",
            scores: &none,
            window: wide,
            want_local: "2026-03-03 10:00",
        },
    ];
    for case in cases {
        let rules = SlotRules::window_only(case.window, chicago);
        let choice = choose_slot(&rules, now, Some(&best(case.scores)), 0.0, Duration::zero());
        assert_eq!(
            local(choice.at, chicago)
                .format("%Y-%m-%d %H:%M")
                .to_string(),
            case.want_local,
            "{}: {:?}",
            case.name,
            choice.pick
        );
    }
}

#[test]
fn a_later_day_must_win_by_more_than_the_day_penalty() {
    let ny = zone("America/New_York");
    let office = SendWindow::business_hours();
    let rules = SlotRules::window_only(office, ny);
    let p = prior();
    // Friday 15:00 New York: Friday's 15:00 (0.56) loses to Monday 10:00 (0.9 × 0.9^2.8).
    let choice = choose_slot(
        &rules,
        utc("2026-03-06T20:00:00Z"),
        Some(&best(&p)),
        0.0,
        Duration::zero(),
    );
    assert_eq!(
        local(choice.at, ny).format("%a %H:%M").to_string(),
        "Mon 10:00"
    );
    // With a steep penalty, the first open hour wins.
    let steep = BestTime {
        day_penalty: 0.9,
        ..best(&p)
    };
    let choice = choose_slot(
        &rules,
        utc("2026-03-06T20:00:00Z"),
        Some(&steep),
        0.0,
        Duration::zero(),
    );
    assert_eq!(
        local(choice.at, ny).format("%a %H:%M").to_string(),
        "Fri 15:00"
    );
    // Never after `latest`.
    let capped = BestTime {
        latest: Some(utc("2026-03-09T13:30:00Z")), // Monday 09:30 New York
        ..best(&p)
    };
    let choice = choose_slot(
        &rules,
        utc("2026-03-06T20:00:00Z"),
        Some(&capped),
        0.0,
        Duration::zero(),
    );
    assert!(choice.at <= utc("2026-03-09T13:30:00Z"), "{}", choice.at);
}

#[test]
fn holidays_are_skipped_and_reported() {
    let ny = zone("America/New_York");
    let cal = HolidayCalendar::builtin();
    let rules = SlotRules {
        window: SendWindow::business_hours(),
        zone: ny,
        holidays: cal.for_country(Some("US")),
        spread_hours: None,
    };
    // Wednesday evening before Thanksgiving: Thursday and Friday are holidays.
    let choice = choose_slot(
        &rules,
        utc("2026-11-25T23:00:00Z"),
        None,
        0.0,
        Duration::zero(),
    );
    assert_eq!(choice.at, utc("2026-11-30T14:00:00Z"), "Monday 09:00");
    assert_eq!(
        choice.holidays_skipped,
        vec![
            NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
        ]
    );
}

#[test]
fn a_us_number_without_a_city_gets_the_intersection_of_us_quiet_hours() {
    let ny = zone("America/New_York");
    let hours = QuietHours::from_hours(8, 21).unwrap();
    let spread = crate::zone::ZoneSpread::of(crate::zone::country_zones("US"));
    let all_days = SendWindow::new(&ALL_DAYS, t(0, 0), t(23, 59)).unwrap();
    let rules = SlotRules {
        window: hours.apply_to(&all_days),
        zone: ny,
        holidays: Holidays::none(),
        spread_hours: Some((hours, spread)),
    };
    // 09:00 New York (EDT) is 03:00 in Honolulu: wait until 08:00 Honolulu = 14:00 New York.
    let choice = choose_slot(
        &rules,
        utc("2026-06-02T13:00:00Z"),
        None,
        0.0,
        Duration::zero(),
    );
    assert_eq!(choice.at, utc("2026-06-02T18:00:00Z"));
    // 21:30 New York: wait for the next day's intersection.
    assert!(rules.allows(utc("2026-06-03T00:59:00Z")), "20:59 New York");
    assert!(!rules.allows(utc("2026-06-03T01:00:00Z")), "21:00 New York");
    // Stricter state hours narrow further.
    let florida = SmsRules::default()
        .with_subdivision("US-FL", QuietHours::parse("08:00-20:00").unwrap())
        .with_subdivision("US-MD", QuietHours::parse("08:00-20:00").unwrap());
    assert_eq!(
        florida
            .hours_for(Some("US"), Some("US-FL"))
            .hours
            .describe(),
        "08:00-20:00"
    );
    assert_eq!(
        florida
            .hours_for(Some("US"), Some("US-CA"))
            .hours
            .describe(),
        "08:00-21:00"
    );
    let unknown = florida.hours_for(Some("US"), None);
    assert_eq!(unknown.hours.describe(), "08:00-20:00");
    assert!(unknown.rule.unwrap().contains("US-FL, US-MD"));
    assert_eq!(
        florida.hours_for(Some("DE"), None).hours.describe(),
        "08:00-21:00"
    );
}

#[test]
fn follow_ups_adapt_to_behaviour_within_bounds() {
    let ny = zone("America/New_York");
    let us = HolidayCalendar::builtin();
    let holidays = us.for_country(Some("US"));
    let sent = utc("2026-03-02T15:00:00Z"); // Monday 10:00 New York
    let s = step(3, 0, Some((2, 6)));
    let engaged = follow_up(&s, sent, Reaction::Engaged(EventKind::Opened), ny, holidays).unwrap();
    assert_eq!(engaged.due, sent + Duration::days(2));
    assert!(!engaged.prefer_other_channel);
    let ignored = follow_up(&s, sent, Reaction::Ignored, ny, holidays).unwrap();
    assert_eq!(ignored.due, sent + Duration::days(6));
    assert_eq!(
        ignored.recheck,
        sent + Duration::days(3),
        "look again at the usual delay"
    );
    assert!(ignored.prefer_other_channel && ignored.reason.contains("not opened"));
    let unknown = follow_up(&s, sent, Reaction::Unknown, ny, holidays).unwrap();
    assert_eq!(unknown.due, sent + Duration::days(3));
    assert_eq!(
        earliest_step_due(&s, sent, ny, holidays),
        sent + Duration::days(2)
    );
    assert!(follow_up(&step(3, 0, None), sent, Reaction::Ignored, ny, holidays).is_none());
    // Business days: Wednesday before Thanksgiving + 2 business days = Tuesday.
    let b = step(0, 2, Some((1, 4)));
    let wed = utc("2026-11-25T15:00:00Z");
    assert_eq!(
        follow_up(&b, wed, Reaction::Unknown, ny, holidays)
            .unwrap()
            .due,
        utc("2026-12-01T15:00:00Z")
    );
    assert_eq!(
        earliest_step_due(&b, wed, ny, holidays),
        utc("2026-11-30T15:00:00Z")
    );
}

#[test]
fn a_late_step_shifts_the_steps_after_it() {
    // Delays count from the actual send: a step sent two days late moves the next one too.
    let ny = zone("America/New_York");
    let s = step(0, 3, None);
    let on_time = utc("2026-03-02T15:00:00Z");
    let late = on_time + Duration::days(2);
    let a = earliest_step_due(&s, on_time, ny, Holidays::none());
    let b = earliest_step_due(&s, late, ny, Holidays::none());
    assert_eq!(a, utc("2026-03-05T15:00:00Z"));
    assert_eq!(
        b,
        utc("2026-03-09T14:00:00Z"),
        "Wednesday + 3 business days = Monday"
    );
}

// --- property tests --------------------------------------------------------------------------

/// A UTC instant within two days of a DST (or other offset) transition of `tz` in 2026–2027,
/// when the zone has one; else `fallback`.
fn near_transition(
    tz: TimeZone,
    pick: usize,
    shift_min: i64,
    fallback: DateTime<Utc>,
) -> DateTime<Utc> {
    let z = tz.tz();
    let offset = |t: DateTime<Utc>| t.with_timezone(&z).offset().fix().local_minus_utc();
    let mut transitions = Vec::new();
    let mut day = utc("2026-01-01T00:00:00Z");
    let end = utc("2028-01-01T00:00:00Z");
    while day < end {
        let next = day + Duration::days(1);
        if offset(day) != offset(next) {
            let (mut lo, mut hi) = (day, next);
            while hi - lo > Duration::milliseconds(1) {
                let mid = lo + (hi - lo) / 2;
                if offset(mid) == offset(lo) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            transitions.push(DateTime::from_timestamp(hi.timestamp(), 0).unwrap_or(hi));
        }
        day = next;
    }
    if transitions.is_empty() {
        return fallback;
    }
    transitions[pick % transitions.len()] + Duration::minutes(shift_min)
}

fn window_strategy() -> impl Strategy<Value = SendWindow> {
    (1u8..128, 0u32..23, 1u32..14, prop::bool::ANY).prop_map(|(mask, start_h, len_h, half)| {
        let days: Vec<&str> = (0..7)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| ALL_DAYS[i])
            .collect();
        let start = t(start_h, if half { 30 } else { 0 });
        let end_h = start_h + len_h;
        let end = if end_h >= 24 { t(23, 59) } else { t(end_h, 0) };
        SendWindow::new(&days, start, end).unwrap()
    })
}

fn local_oracle(window: &SendWindow, z: TimeZone, at: DateTime<Utc>) -> bool {
    let l = local(at, z);
    window.allows_day(l.date()) && l.time() >= window.start() && l.time() < window.end()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every scheduled send lies inside its window in the lead's local time, on an allowed
    /// weekday that is not a holiday, at or after `earliest` — for every IANA zone, around
    /// DST transitions, with and without the best-time search and jitter.
    #[test]
    fn every_slot_is_inside_its_window_in_local_time(
        zone_index in 0usize..chrono_tz::TZ_VARIANTS.len(),
        window in window_strategy(),
        pick in 0usize..8,
        shift_min in -2880i64..2880,
        near_dst in prop::bool::ANY,
        secs in 1_767_225_600i64..1_830_297_600i64,
        holiday_offsets in prop::collection::vec(0i64..730, 0..60),
        use_best in prop::bool::ANY,
        horizon in 1u32..8,
        penalty in 0.0f32..0.5,
        jitter in 0.0f64..1.0,
        jitter_min in 0i64..120,
        latest_h in prop::option::of(0i64..400),
        habit_hour in 0u32..24,
        habit_events in 0usize..12,
    ) {
        let tz = TimeZone::from_tz(chrono_tz::TZ_VARIANTS[zone_index]);
        let random = DateTime::from_timestamp(secs, 0).unwrap();
        let earliest = if near_dst { near_transition(tz, pick, shift_min, random) } else { random };
        let base = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let cal = HolidayCalendar::empty().with_dates(
            &CountryCode::parse("US").unwrap(),
            holiday_offsets.iter().map(|d| base + Duration::days(*d)),
        );
        let holidays = cal.for_country(Some("US"));
        let rules = SlotRules { window, zone: tz, holidays, spread_hours: None };
        let events: Vec<Engagement> = (0..habit_events).map(|i| Engagement {
            at: earliest - Duration::days(i as i64 + 1) + Duration::hours(i64::from(habit_hour)),
            kind: EventKind::Clicked,
            delivery: None,
        }).collect();
        let scores = BestTimeModel::default().blend(&prior(), &events, tz);
        let search = BestTime {
            scores: &scores,
            horizon_days: horizon,
            day_penalty: penalty,
            latest: latest_h.map(|h| earliest + Duration::hours(h)),
        };
        let choice = choose_slot(&rules, earliest, use_best.then_some(&search), jitter, Duration::minutes(jitter_min));
        prop_assert!(choice.at >= earliest);
        prop_assert!(local_oracle(&window, tz, choice.at),
            "slot {} local {} window {}", choice.at, local(choice.at, tz), window.describe());
        if !choice.fallback {
            prop_assert!(!holidays.contains(local(choice.at, tz).date()), "holiday {}", local(choice.at, tz));
            prop_assert!(rules.allows(choice.at));
        }
        if let (true, Some(latest)) = (use_best, search.latest) {
            prop_assert!(choice.at <= choice.first_open.max(latest) + Duration::hours(1),
                "{} after latest {}", choice.at, latest);
        }
    }

    /// SMS is never sent outside the quiet hours in any zone the lead may be in: not when
    /// planned, and not when the dispatcher runs late or retries (it holds the message until
    /// the rules allow it, with the same `SlotRules::allows`).
    #[test]
    fn sms_never_leaves_quiet_hours_after_retries_and_delays(
        zone_set in 0usize..6,
        zone_index in 0usize..chrono_tz::TZ_VARIANTS.len(),
        window in window_strategy(),
        start_h in 8u32..12,
        end_h in 17u32..22,
        secs in 1_767_225_600i64..1_830_297_600i64,
        near_dst in prop::bool::ANY,
        pick in 0usize..8,
        shift_min in -2880i64..2880,
        delays in prop::collection::vec(0i64..(36 * 60), 1..8),
        jitter in 0.0f64..1.0,
    ) {
        let spreads: [&'static [chrono_tz::Tz]; 6] = [
            crate::zone::country_zones("US"),
            crate::zone::country_zones("CA"),
            crate::zone::country_zones("AU"),
            crate::zone::country_zones("BR"),
            crate::zone::country_zones("MX"),
            &[],
        ];
        let spread_zones = spreads[zone_set];
        let primary = if spread_zones.is_empty() {
            TimeZone::from_tz(chrono_tz::TZ_VARIANTS[zone_index])
        } else {
            TimeZone::from_tz(spread_zones[zone_index % spread_zones.len()])
        };
        let hours = QuietHours::from_hours(start_h, end_h.min(21)).unwrap();
        let spread = crate::zone::ZoneSpread::of(spread_zones);
        let plan_hours = hours.with_end_margin(Duration::minutes(30));
        let planning = SlotRules {
            window: plan_hours.apply_to(&window),
            zone: primary,
            holidays: Holidays::none(),
            spread_hours: (!spread.is_empty()).then_some((plan_hours, spread)),
        };
        let sending = SlotRules {
            window: hours.apply_to(&window),
            zone: primary,
            holidays: Holidays::none(),
            spread_hours: (!spread.is_empty()).then_some((hours, spread)),
        };
        let random = DateTime::from_timestamp(secs, 0).unwrap();
        let earliest = if near_dst { near_transition(primary, pick, shift_min, random) } else { random };
        // The independent oracle: the local hour in every zone.
        let quiet_ok = |at: DateTime<Utc>| {
            std::iter::once(primary).chain(spread.zones()).all(|z| {
                let l = local(at, z).time();
                l >= hours.start() && l < hours.end()
            })
        };
        let choice = choose_slot(&planning, earliest, None, jitter, Duration::minutes(90));
        if choice.fallback {
            // No common hours across the spread within a year: nothing may be sent, and the
            // dispatcher's rules agree.
            prop_assert!(sending.next_open(earliest).is_none() || !spread.is_empty());
            return Ok(());
        }
        prop_assert!(quiet_ok(choice.at), "planned {} outside quiet hours", choice.at);
        // The dispatcher: at each attempt it sends only if the rules allow it now; otherwise it
        // holds the message until they do. Delays are ticks, retries and backoffs.
        let mut due = choice.at;
        for d in delays {
            let now = due + Duration::minutes(d);
            if sending.allows(now) {
                prop_assert!(quiet_ok(now), "sent at {} outside quiet hours", now);
                // A transient failure: the retry becomes due later, and is checked again.
                due = now;
            } else {
                let Some(o) = sending.next_open(now) else { break };
                prop_assert!(quiet_ok(o.at), "held until {} outside quiet hours", o.at);
                due = o.at;
            }
        }
    }
}

#[test]
fn transitions_are_found_for_the_dst_property_tests() {
    let ny = zone("America/New_York");
    let never = utc("2000-01-01T00:00:00Z");
    assert_eq!(
        near_transition(ny, 0, 0, never),
        utc("2026-03-08T07:00:00Z")
    );
    assert_eq!(
        near_transition(ny, 1, 0, never),
        utc("2026-11-01T06:00:00Z")
    );
    assert_eq!(near_transition(zone("Asia/Kolkata"), 0, 0, never), never);
}
