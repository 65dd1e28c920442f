//! The business calendar: Monday to Friday, 8am to 8pm Eastern with daylight saving, closed on
//! weekends and on U.S. federal holidays' observed days. Instants are given in UTC so a wrong
//! offset (EST vs EDT) shows up as an hour's error at the edges.

use ivr::routing::{Calendar, RoutingConfig, federal_holidays};
use jiff::Timestamp;
use jiff::civil::{Date, date};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test instants are valid RFC 3339")
}

fn cal() -> Calendar {
    Calendar::us_eastern().expect("America/New_York is in the tz database")
}

#[track_caller]
fn assert_open(cal: &Calendar, at: &str, open: bool) {
    assert_eq!(cal.is_open(ts(at)), open, "is_open({at})");
}

#[test]
fn spring_forward_2026_03_08() {
    let cal = cal();
    // Friday before the change: EST, UTC-5.
    assert_open(&cal, "2026-03-06T12:59:59Z", false);
    assert_open(&cal, "2026-03-06T13:00:00Z", true);
    assert_open(&cal, "2026-03-07T00:59:59Z", true);
    assert_open(&cal, "2026-03-07T01:00:00Z", false);
    // The change itself is on a Sunday: closed all day, including around 02:00 local.
    assert_open(&cal, "2026-03-08T07:30:00Z", false);
    assert_open(&cal, "2026-03-08T14:00:00Z", false);
    // Monday after: EDT, UTC-4. 12:00Z is 08:00 EDT (under EST it would be 07:00).
    assert_open(&cal, "2026-03-09T11:59:59Z", false);
    assert_open(&cal, "2026-03-09T12:00:00Z", true);
    assert_open(&cal, "2026-03-09T12:30:00Z", true);
    assert_open(&cal, "2026-03-09T23:59:59Z", true);
    assert_open(&cal, "2026-03-10T00:00:00Z", false);
    // Friday evening to Monday morning across the change: the opening is 08:00 EDT.
    assert_eq!(
        cal.next_open(ts("2026-03-07T01:00:00Z")),
        Some(ts("2026-03-09T12:00:00Z"))
    );
}

#[test]
fn fall_back_2026_11_01() {
    let cal = cal();
    // Friday before: EDT.
    assert_open(&cal, "2026-10-30T11:59:00Z", false);
    assert_open(&cal, "2026-10-30T12:00:00Z", true);
    assert_open(&cal, "2026-10-30T23:59:00Z", true);
    assert_open(&cal, "2026-10-31T00:00:00Z", false);
    // Sunday of the change, in and after the repeated 01:00 hour.
    assert_open(&cal, "2026-11-01T05:30:00Z", false);
    assert_open(&cal, "2026-11-01T06:30:00Z", false);
    assert_open(&cal, "2026-11-01T14:00:00Z", false);
    // Monday after: EST. 12:59Z is 07:59 EST, 13:00Z is 08:00 EST.
    assert_open(&cal, "2026-11-02T12:00:00Z", false);
    assert_open(&cal, "2026-11-02T12:59:00Z", false);
    assert_open(&cal, "2026-11-02T13:00:00Z", true);
    assert_open(&cal, "2026-11-03T00:59:00Z", true);
    assert_open(&cal, "2026-11-03T01:00:00Z", false);
    assert_eq!(
        cal.next_open(ts("2026-10-31T00:00:00Z")),
        Some(ts("2026-11-02T13:00:00Z"))
    );
}

#[test]
fn edges_of_the_day_on_ordinary_days() {
    let cal = cal();
    // A summer Wednesday (EDT) and a winter Wednesday (EST), given in Eastern time.
    for (day, off) in [("2026-06-10", "-04:00"), ("2026-12-09", "-05:00")] {
        assert_open(&cal, &format!("{day}T07:59:00{off}"), false);
        assert_open(&cal, &format!("{day}T07:59:59.999{off}"), false);
        assert_open(&cal, &format!("{day}T08:00:00{off}"), true);
        assert_open(&cal, &format!("{day}T12:00:00{off}"), true);
        assert_open(&cal, &format!("{day}T19:59:00{off}"), true);
        assert_open(&cal, &format!("{day}T19:59:59.999{off}"), true);
        assert_open(&cal, &format!("{day}T20:00:00{off}"), false);
        assert_open(&cal, &format!("{day}T23:00:00{off}"), false);
        assert_open(&cal, &format!("{day}T00:00:00{off}"), false);
    }
    // Before opening, the answer is today's 08:00; while open, now.
    assert_eq!(
        cal.next_open(ts("2026-06-10T05:00:00-04:00")),
        Some(ts("2026-06-10T08:00:00-04:00"))
    );
    assert_eq!(
        cal.next_open(ts("2026-06-10T10:15:00-04:00")),
        Some(ts("2026-06-10T10:15:00-04:00"))
    );
    // After closing, tomorrow's 08:00.
    assert_eq!(
        cal.next_open(ts("2026-06-10T20:00:00-04:00")),
        Some(ts("2026-06-11T08:00:00-04:00"))
    );
}

#[test]
fn weekends_are_closed() {
    let cal = cal();
    for at in [
        "2026-06-13T08:00:00-04:00",
        "2026-06-13T12:00:00-04:00",
        "2026-06-14T12:00:00-04:00",
        "2026-06-14T19:59:00-04:00",
        "2027-01-09T12:00:00-05:00",
        "2027-01-10T12:00:00-05:00",
    ] {
        assert_open(&cal, at, false);
    }
    assert_eq!(
        cal.next_open(ts("2026-06-13T12:00:00-04:00")),
        Some(ts("2026-06-15T08:00:00-04:00"))
    );
}

/// Observed days written out by hand from the calendar (not computed by the code under test).
const OBSERVED_2026: [(i8, i8); 11] = [
    (1, 1),
    (1, 19),
    (2, 16),
    (5, 25),
    (6, 19),
    (7, 3), // July 4 is a Saturday
    (9, 7),
    (10, 12),
    (11, 11),
    (11, 26),
    (12, 25),
];
const OBSERVED_2027: [(i8, i8); 11] = [
    (1, 1),
    (1, 18),
    (2, 15),
    (5, 31),
    (6, 18), // June 19 is a Saturday
    (7, 5),  // July 4 is a Sunday
    (9, 6),
    (10, 11),
    (11, 11),
    (11, 25),
    (12, 24), // December 25 is a Saturday
];

fn observed(year: i16, days: &[(i8, i8)]) -> Vec<Date> {
    days.iter().map(|&(m, d)| date(year, m, d)).collect()
}

#[test]
fn federal_holidays_2026_and_2027_with_observed_days() {
    for (year, days) in [(2026, OBSERVED_2026), (2027, OBSERVED_2027)] {
        let got: Vec<Date> = federal_holidays(year).iter().map(|h| h.observed).collect();
        assert_eq!(got, observed(year, &days), "{year}");
    }
    // New Year's Day 2028 is a Saturday: observed Friday December 31, 2027.
    let ny2028 = &federal_holidays(2028)[0];
    assert_eq!(ny2028.date, date(2028, 1, 1));
    assert_eq!(ny2028.observed, date(2027, 12, 31));
}

#[test]
fn closed_all_day_on_every_observed_holiday() {
    let cal = cal();
    let mut days = observed(2026, &OBSERVED_2026);
    days.extend(observed(2027, &OBSERVED_2027));
    days.push(date(2027, 12, 31));
    for day in days {
        for hour in [8, 12, 19] {
            let at = day
                .at(hour, 30, 0, 0)
                .in_tz("America/New_York")
                .expect("valid civil time")
                .timestamp();
            assert!(!cal.is_open(at), "open at {hour}:30 on holiday {day}");
        }
    }
}

#[test]
fn days_next_to_holidays_stay_open() {
    let cal = cal();
    for at in [
        "2026-07-02T12:00:00-04:00", // Thursday before the observed Friday
        "2026-07-06T12:00:00-04:00", // Monday after Independence Day weekend
        "2027-06-17T12:00:00-04:00",
        "2027-07-06T12:00:00-04:00",
        "2027-12-23T12:00:00-05:00",
        "2027-12-30T12:00:00-05:00",
        "2028-01-03T12:00:00-05:00",
        "2026-11-27T12:00:00-05:00", // the Friday after Thanksgiving is not a federal holiday
        "2026-12-24T12:00:00-05:00",
    ] {
        assert_open(&cal, at, true);
    }
}

#[test]
fn next_open_across_holiday_weekends() {
    let cal = cal();
    let cases = [
        // Thursday evening → Friday Jul 3 observed → weekend → Monday.
        ("2026-07-02T20:00:00-04:00", "2026-07-06T08:00:00-04:00"),
        // Friday evening → weekend → MLK Monday → Tuesday.
        ("2026-01-16T20:00:00-05:00", "2026-01-20T08:00:00-05:00"),
        // Wednesday evening → Thanksgiving → Friday.
        ("2026-11-25T20:00:00-05:00", "2026-11-27T08:00:00-05:00"),
        // Christmas 2027 (Sat, observed Fri Dec 24).
        ("2027-12-23T20:00:00-05:00", "2027-12-27T08:00:00-05:00"),
        // New Year 2028 (Sat, observed Fri Dec 31, 2027).
        ("2027-12-30T20:00:00-05:00", "2028-01-03T08:00:00-05:00"),
        // On the holiday itself, during what would be hours.
        ("2027-07-05T10:00:00-04:00", "2027-07-06T08:00:00-04:00"),
    ];
    for (from, want) in cases {
        assert_eq!(cal.next_open(ts(from)), Some(ts(want)), "from {from}");
    }
}

#[test]
fn configured_dates_close_too() {
    let cfg: RoutingConfig =
        toml::from_str("extra_closed = [\"2026-12-24\", \"2026-12-28\"]").expect("valid section");
    let cal = cfg.calendar().expect("valid settings");
    assert_open(&cal, "2026-12-24T12:00:00-05:00", false);
    assert_open(&cal, "2026-12-23T12:00:00-05:00", true);
    // Wednesday Dec 23 evening → 24 closed, 25 Christmas, weekend, 28 closed → Tuesday 29.
    assert_eq!(
        cal.next_open(ts("2026-12-23T20:00:00-05:00")),
        Some(ts("2026-12-29T08:00:00-05:00"))
    );
}

#[test]
fn every_minute_of_a_dst_week_agrees_with_the_wall_clock() {
    // Over the week of the spring change, open must equal "weekday and 8 <= local hour < 20"
    // computed independently from jiff's zoned view.
    let cal = cal();
    let mut t = ts("2026-03-05T00:00:00Z");
    let end = ts("2026-03-12T00:00:00Z");
    while t < end {
        let local = t.in_tz("America/New_York").expect("zone exists");
        let weekday = local.weekday().to_monday_one_offset() <= 5;
        let want = weekday && (8..20).contains(&local.hour());
        assert_eq!(cal.is_open(t), want, "at {local}");
        t = t
            .checked_add(jiff::SignedDuration::from_mins(1))
            .expect("in range");
    }
}
