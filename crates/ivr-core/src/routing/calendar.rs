//! The contact center's business calendar: when live help is available.
//!
//! Hours are civil times in the center's time zone (America/New_York by default), so "8am
//! Eastern" stays 8am across the daylight-saving changes: the UTC instant moves, the wall clock
//! does not. All arithmetic is on civil dates in that zone; jiff's tz database supplies the
//! offsets. Closed: weekends (days not in `weekdays`), U.S. federal holidays on their observed
//! dates (5 U.S.C. 6103), and the configured extra dates.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;

/// How many days `next_open` looks ahead before giving up. A year and a bit covers any real
/// holiday cluster; it only runs out when the config closes (nearly) every day.
const NEXT_OPEN_HORIZON_DAYS: u32 = 400;

/// Why a calendar cannot be built from its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CalendarError {
    /// jiff could not find the zone in the tz database.
    UnknownTimeZone(String),
    /// `open` is not before `close` (overnight hours are not supported).
    EmptyHours { open: Time, close: Time },
    /// No weekday is open: there would never be live help.
    NoWeekdays,
}

impl std::fmt::Display for CalendarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalendarError::UnknownTimeZone(name) => {
                write!(f, "unknown time zone {name:?} (not in the tz database)")
            }
            CalendarError::EmptyHours { open, close } => {
                write!(f, "opening time {open} is not before closing time {close}")
            }
            CalendarError::NoWeekdays => f.write_str("no weekday is open"),
        }
    }
}

impl std::error::Error for CalendarError {}

/// One federal holiday of a year: the date the law names and the day offices close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holiday {
    pub name: &'static str,
    /// The legal date (e.g. July 4).
    pub date: Date,
    /// The day off: Saturday → the Friday before, Sunday → the Monday after. May fall in the
    /// previous year (New Year's Day on a Saturday is observed Friday December 31).
    pub observed: Date,
}

/// The legal public holidays of 5 U.S.C. 6103(a) for `year`, with observed days per 6103(b)
/// (as OPM applies it to full-time employees on a Monday–Friday schedule). Inauguration Day
/// (6103(c)) is left out: it closes only offices in the Washington, D.C. area.
///
/// Years outside jiff's civil range (−9999..=9999, minus the edge years) yield fewer entries
/// instead of panicking.
pub fn federal_holidays(year: i16) -> Vec<Holiday> {
    use Weekday::{Monday, Thursday};
    // (name, month, rule): a fixed day, or the nth weekday of the month (−1 = last).
    enum Rule {
        Fixed(i8),
        Nth(i8, Weekday),
    }
    const RULES: [(&str, i8, Rule); 11] = [
        ("New Year's Day", 1, Rule::Fixed(1)),
        (
            "Birthday of Martin Luther King, Jr.",
            1,
            Rule::Nth(3, Monday),
        ),
        ("Washington's Birthday", 2, Rule::Nth(3, Monday)),
        ("Memorial Day", 5, Rule::Nth(-1, Monday)),
        ("Juneteenth National Independence Day", 6, Rule::Fixed(19)),
        ("Independence Day", 7, Rule::Fixed(4)),
        ("Labor Day", 9, Rule::Nth(1, Monday)),
        ("Columbus Day", 10, Rule::Nth(2, Monday)),
        ("Veterans Day", 11, Rule::Fixed(11)),
        ("Thanksgiving Day", 11, Rule::Nth(4, Thursday)),
        ("Christmas Day", 12, Rule::Fixed(25)),
    ];
    let mut out = Vec::with_capacity(RULES.len());
    for (name, month, rule) in RULES {
        let date = match rule {
            Rule::Fixed(day) => Date::new(year, month, day),
            Rule::Nth(nth, wd) => {
                Date::new(year, month, 1).and_then(|d| d.nth_weekday_of_month(nth, wd))
            }
        };
        let Ok(date) = date else { continue };
        let observed = match date.weekday() {
            Weekday::Saturday => date.yesterday(),
            Weekday::Sunday => date.tomorrow(),
            _ => Ok(date),
        };
        let Ok(observed) = observed else { continue };
        out.push(Holiday {
            name,
            date,
            observed,
        });
    }
    out
}

/// The federal holiday observed on `date`, if any. Looks at the next year's list too, for
/// New Year's Day observed on December 31.
pub fn observed_holiday(date: Date) -> Option<Holiday> {
    let year = date.year();
    let this_year = federal_holidays(year);
    let next_year = if date.month() == 12 {
        year.checked_add(1)
            .map(federal_holidays)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    this_year
        .into_iter()
        .chain(next_year)
        .find(|h| h.observed == date)
}

/// When live help is open. Built once from `RoutingConfig`; queries are pure.
#[derive(Clone, Debug)]
pub struct Calendar {
    tz: TimeZone,
    open: Time,
    close: Time,
    /// Open weekdays, indexed by `Weekday::to_monday_zero_offset`.
    weekdays: [bool; 7],
    extra_closed: BTreeSet<Date>,
}

impl Calendar {
    /// A calendar in `tz`, open `open..close` (wall clock, close exclusive) on `weekdays`,
    /// closed on federal holidays and `extra_closed`.
    pub fn new(
        tz: TimeZone,
        open: Time,
        close: Time,
        weekdays: &[Weekday],
        extra_closed: impl IntoIterator<Item = Date>,
    ) -> Result<Calendar, CalendarError> {
        if open >= close {
            return Err(CalendarError::EmptyHours { open, close });
        }
        let mut days = [false; 7];
        for wd in weekdays {
            // 0..=6: always in bounds.
            days[usize::from(wd.to_monday_zero_offset().unsigned_abs())] = true;
        }
        if !days.contains(&true) {
            return Err(CalendarError::NoWeekdays);
        }
        Ok(Calendar {
            tz,
            open,
            close,
            weekdays: days,
            extra_closed: extra_closed.into_iter().collect(),
        })
    }

    /// The contact center of the page: Monday–Friday 08:00–20:00 America/New_York, federal
    /// holidays closed, no extra dates. Reads the zone from the tz database.
    pub fn us_eastern() -> Result<Calendar, CalendarError> {
        let tz = time_zone("America/New_York")?;
        Calendar::new(
            tz,
            Time::constant(8, 0, 0, 0),
            Time::constant(20, 0, 0, 0),
            &[
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ],
            [],
        )
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Whether `date` (a civil date in the calendar's zone) has opening hours at all.
    pub fn is_business_day(&self, date: Date) -> bool {
        // to_monday_zero_offset is 0..=6: the index is always in bounds.
        let wd = usize::from(date.weekday().to_monday_zero_offset().unsigned_abs());
        self.weekdays[wd] && !self.extra_closed.contains(&date) && observed_holiday(date).is_none()
    }

    /// Whether live help is open at `ts`: a business day and `open <= wall clock < close`.
    pub fn is_open(&self, ts: Timestamp) -> bool {
        let local = self.tz.to_datetime(ts);
        let t = local.time();
        self.is_business_day(local.date()) && self.open <= t && t < self.close
    }

    /// The earliest instant at or after `ts` when live help is open: `ts` itself while open,
    /// else the next business day's opening time. `None` when no business day falls within
    /// the look-ahead horizon (only possible with a config that closes nearly every day) or
    /// at the edge of jiff's time range.
    pub fn next_open(&self, ts: Timestamp) -> Option<Timestamp> {
        if self.is_open(ts) {
            return Some(ts);
        }
        let local = self.tz.to_datetime(ts);
        let mut date = local.date();
        // Today still counts when we are before opening time.
        if !(self.is_business_day(date) && local.time() < self.open) {
            date = date.tomorrow().ok()?;
        }
        for _ in 0..NEXT_OPEN_HORIZON_DAYS {
            if self.is_business_day(date) {
                // A DST gap at opening time resolves to the first instant after the gap.
                let zdt = self
                    .tz
                    .to_zoned_datetime(date.to_datetime(self.open))
                    .ok()?;
                return Some(zdt.timestamp());
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// When live help opens next after `now`, as a caller hears it in `lang`: "Monday,
    /// December 1, at 8 a.m." / "el lunes 1 de diciembre a las 8 a.m.", with "today" /
    /// "tomorrow" when it is. `None` while open or when nothing opens within the horizon.
    pub fn spoken_next_open(&self, now: Timestamp, lang: crate::types::Lang) -> Option<String> {
        use crate::types::Lang;
        if self.is_open(now) {
            return None;
        }
        let at = self.tz.to_datetime(self.next_open(now)?);
        let today = self.tz.to_datetime(now).date();
        let days = (at.date() - today).get_days();
        let (hour, minute) = (at.hour(), at.minute());
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let ampm = if hour < 12 { "a.m." } else { "p.m." };
        let clock = if minute == 0 {
            format!("{h12} {ampm}")
        } else {
            format!("{h12}:{minute:02} {ampm}")
        };
        let weekday = at.weekday().to_monday_zero_offset() as usize;
        let month = at.month() as usize - 1;
        const EN_DAYS: [&str; 7] = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        const ES_DAYS: [&str; 7] = [
            "lunes",
            "martes",
            "miércoles",
            "jueves",
            "viernes",
            "sábado",
            "domingo",
        ];
        const EN_MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        const ES_MONTHS: [&str; 12] = [
            "enero",
            "febrero",
            "marzo",
            "abril",
            "mayo",
            "junio",
            "julio",
            "agosto",
            "septiembre",
            "octubre",
            "noviembre",
            "diciembre",
        ];
        Some(match (lang, days) {
            (Lang::En, 0) => format!("today at {clock}"),
            (Lang::En, 1) => format!("tomorrow, {}, at {clock}", EN_DAYS[weekday]),
            (Lang::En, _) => format!(
                "{}, {} {}, at {clock}",
                EN_DAYS[weekday],
                EN_MONTHS[month],
                at.day()
            ),
            (Lang::Es, 0) => format!("hoy a las {clock}"),
            (Lang::Es, 1) => format!("mañana, {}, a las {clock}", ES_DAYS[weekday]),
            (Lang::Es, _) => format!(
                "el {} {} de {} a las {clock}",
                ES_DAYS[weekday],
                at.day(),
                ES_MONTHS[month]
            ),
        })
    }

    /// `ts` as RFC 3339 with the calendar zone's offset at that instant (e.g.
    /// `2026-03-09T08:00:00-04:00`): what ops read and prompts speak.
    pub fn format_local(&self, ts: Timestamp) -> String {
        let offset = self.tz.to_offset(ts);
        ts.display_with_offset(offset).to_string()
    }
}

/// Looks `name` up in the tz database (jiff caches it after the first read).
pub fn time_zone(name: &str) -> Result<TimeZone, CalendarError> {
    TimeZone::get(name).map_err(|_| CalendarError::UnknownTimeZone(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamps are valid RFC 3339")
    }

    #[test]
    fn observed_rules_move_weekend_holidays() {
        // 2026-07-04 is a Saturday: observed Friday July 3.
        let h = federal_holidays(2026);
        let july4 = h.iter().find(|h| h.name == "Independence Day").unwrap();
        assert_eq!(july4.date.weekday(), Weekday::Saturday);
        assert_eq!(july4.observed, date(2026, 7, 3));
        // 2027-07-04 is a Sunday: observed Monday July 5.
        let h = federal_holidays(2027);
        let july4 = h.iter().find(|h| h.name == "Independence Day").unwrap();
        assert_eq!(july4.observed, date(2027, 7, 5));
        // New Year's 2028 (Saturday) is observed in 2027.
        let ny = &federal_holidays(2028)[0];
        assert_eq!(ny.observed, date(2027, 12, 31));
        assert_eq!(
            observed_holiday(date(2027, 12, 31)).map(|h| h.name),
            Some("New Year's Day")
        );
    }

    #[test]
    fn extreme_years_do_not_panic() {
        for y in [i16::MIN, -9999, 0, 9999, i16::MAX] {
            let _ = federal_holidays(y);
        }
        let _ = observed_holiday(date(9999, 12, 31));
        let cal = Calendar::us_eastern().unwrap();
        // jiff's last instant is a Thursday 17:00 in New York: open, so it is its own answer.
        assert_eq!(cal.next_open(Timestamp::MAX), Some(Timestamp::MAX));
        // Its first instant is in year -9999; whatever jiff resolves, nothing panics.
        let _ = cal.next_open(Timestamp::MIN);
        let _ = cal.is_open(Timestamp::MIN);
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let tz = time_zone("America/New_York").unwrap();
        let eight = Time::constant(8, 0, 0, 0);
        assert_eq!(
            Calendar::new(tz.clone(), eight, eight, &[Weekday::Monday], []).unwrap_err(),
            CalendarError::EmptyHours {
                open: eight,
                close: eight
            }
        );
        assert_eq!(
            Calendar::new(tz, eight, Time::constant(9, 0, 0, 0), &[], []).unwrap_err(),
            CalendarError::NoWeekdays
        );
        assert!(matches!(
            time_zone("Mars/Olympus_Mons"),
            Err(CalendarError::UnknownTimeZone(_))
        ));
    }

    #[test]
    fn all_days_closed_gives_no_next_open() {
        let tz = time_zone("UTC").unwrap();
        let start = date(2026, 1, 1);
        let closed = (0..500).filter_map(|i| start.checked_add(jiff::Span::new().days(i)).ok());
        let cal = Calendar::new(
            tz,
            Time::constant(8, 0, 0, 0),
            Time::constant(9, 0, 0, 0),
            &[Weekday::Wednesday],
            closed,
        )
        .unwrap();
        assert_eq!(cal.next_open(ts("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn formats_with_the_local_offset() {
        let cal = Calendar::us_eastern().unwrap();
        assert_eq!(
            cal.format_local(ts("2026-03-09T12:00:00Z")),
            "2026-03-09T08:00:00-04:00"
        );
        assert_eq!(
            cal.format_local(ts("2026-01-05T13:00:00Z")),
            "2026-01-05T08:00:00-05:00"
        );
    }

    #[test]
    fn next_opening_is_said_as_callers_say_it() {
        use crate::types::Lang;
        let cal = Calendar::us_eastern().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        // Friday 2026-11-27 21:00 EST (the day after Thanksgiving is a workday): Monday.
        assert_eq!(
            cal.spoken_next_open(at("2026-11-28T02:00:00Z"), Lang::En)
                .as_deref(),
            Some("Monday, November 30, at 8 a.m.")
        );
        assert_eq!(
            cal.spoken_next_open(at("2026-11-28T02:00:00Z"), Lang::Es)
                .as_deref(),
            Some("el lunes 30 de noviembre a las 8 a.m.")
        );
        // Tuesday 2026-12-01 06:00 EST: today; 21:00 EST: tomorrow.
        assert_eq!(
            cal.spoken_next_open(at("2026-12-01T11:00:00Z"), Lang::En)
                .as_deref(),
            Some("today at 8 a.m.")
        );
        assert_eq!(
            cal.spoken_next_open(at("2026-12-02T02:00:00Z"), Lang::Es)
                .as_deref(),
            Some("mañana, miércoles, a las 8 a.m.")
        );
        // Christmas Day 2026 is a Friday: from Thursday evening, Monday the 28th.
        assert_eq!(
            cal.spoken_next_open(at("2026-12-25T01:30:00Z"), Lang::En)
                .as_deref(),
            Some("Monday, December 28, at 8 a.m.")
        );
        // Open now: nothing to say.
        assert_eq!(
            cal.spoken_next_open(at("2026-12-01T15:00:00Z"), Lang::En),
            None
        );
    }
}
