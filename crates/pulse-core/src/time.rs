//! Calendar days in the configured time zone.
//!
//! A day is the calendar date of an instant in the zone, numbered as days since
//! 1970-01-01 ([`Day`]). Looking a zone up per event is slow, so [`Calendar`] remembers the
//! bounds of the last day it resolved: events arrive in roughly time order, so nearly every
//! lookup is two comparisons. UTC needs no lookup at all.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Days since 1970-01-01 in the configured zone.
pub type Day = i32;

const MS_PER_DAY: i64 = 86_400_000;

/// Maps instants to days in one zone; clone it per thread (the cache is per instance).
#[derive(Debug, Clone)]
pub struct Calendar {
    zone: TimeZone,
    is_utc: bool,
    /// The last resolved day: `[start_ms, end_ms)` is `day`.
    cached: Option<(i64, i64, Day)>,
}

impl Calendar {
    pub fn new(zone: TimeZone) -> Calendar {
        let is_utc = zone.iana_name() == Some("UTC") || zone == TimeZone::UTC;
        Calendar {
            zone,
            is_utc,
            cached: None,
        }
    }

    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The day of an instant. `ms` must be within jiff's range (the decoder ensures it).
    pub fn day_of(&mut self, ms: i64) -> Day {
        if self.is_utc {
            return ms.div_euclid(MS_PER_DAY) as Day;
        }
        if let Some((start, end, day)) = self.cached
            && (start..end).contains(&ms)
        {
            return day;
        }
        let (start, end, day) = self.resolve(ms);
        self.cached = Some((start, end, day));
        day
    }

    fn resolve(&self, ms: i64) -> (i64, i64, Day) {
        let Ok(ts) = Timestamp::from_millisecond(ms) else {
            // Outside jiff's range: fall back to UTC days rather than fail.
            let day = ms.div_euclid(MS_PER_DAY);
            return (day * MS_PER_DAY, (day + 1) * MS_PER_DAY, day as Day);
        };
        let date = ts.to_zoned_datetime(self.zone.clone()).date();
        let start = self.start_of(date).unwrap_or(ms);
        let end = date
            .checked_add(1.day())
            .ok()
            .and_then(|next| self.start_of(next))
            .unwrap_or(ms + 1);
        (start, end, day_number(date))
    }

    fn start_of(&self, date: Date) -> Option<i64> {
        date.to_zoned_datetime(self.zone.clone())
            .ok()
            .map(|z| z.timestamp().as_millisecond())
    }

    /// The first instant of a day (midnight, or the first instant after a DST gap).
    pub fn day_start_ms(&self, day: Day) -> i64 {
        self.start_of(date_of(day))
            .unwrap_or(i64::from(day) * MS_PER_DAY)
    }
}

/// Days since 1970-01-01 of a civil date.
pub fn day_number(date: Date) -> Day {
    // Howard Hinnant's days_from_civil: exact for every proleptic Gregorian date.
    let (y, m, d) = (
        i64::from(date.year()),
        i64::from(date.month()),
        i64::from(date.day()),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as Day
}

/// The civil date of a day number.
pub fn date_of(day: Day) -> Date {
    let epoch = jiff::civil::date(1970, 1, 1);
    epoch.checked_add(i64::from(day).days()).unwrap_or(epoch)
}

/// RFC 3339 text of an instant, in UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utc_days() {
        let mut cal = Calendar::new(TimeZone::UTC);
        assert_eq!(cal.day_of(0), 0);
        assert_eq!(cal.day_of(-1), -1);
        assert_eq!(cal.day_of(MS_PER_DAY), 1);
        assert_eq!(
            date_of(cal.day_of(1_772_359_200_000)),
            jiff::civil::date(2026, 3, 1)
        );
    }

    #[test]
    fn zone_days_follow_local_midnight() {
        let zone = TimeZone::get("America/New_York").unwrap();
        let mut cal = Calendar::new(zone);
        // 2026-03-01T04:59:59.999Z is still Feb 28 in New York (UTC-5).
        let feb28 = day_number(jiff::civil::date(2026, 2, 28));
        assert_eq!(cal.day_of(1_772_341_199_999), feb28);
        assert_eq!(cal.day_of(1_772_341_200_000), feb28 + 1);
        assert_eq!(cal.day_start_ms(feb28 + 1), 1_772_341_200_000);
    }

    #[test]
    fn dst_days_are_23_and_25_hours() {
        let zone = TimeZone::get("Europe/Berlin").unwrap();
        let cal = Calendar::new(zone);
        let spring = day_number(jiff::civil::date(2026, 3, 29));
        let autumn = day_number(jiff::civil::date(2026, 10, 25));
        let hours = |d: Day| (cal.day_start_ms(d + 1) - cal.day_start_ms(d)) / 3_600_000;
        assert_eq!(hours(spring), 23);
        assert_eq!(hours(autumn), 25);
    }

    #[test]
    fn rfc3339_has_milliseconds() {
        assert_eq!(rfc3339(1_772_359_200_250), "2026-03-01T10:00:00.250Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    proptest! {
        #[test]
        fn cached_lookup_equals_fresh_lookup(
            times in proptest::collection::vec(-2_000_000_000_000i64..4_000_000_000_000, 1..50),
            zone in prop_oneof![Just("UTC"), Just("Asia/Kolkata"), Just("America/Los_Angeles"), Just("Australia/Lord_Howe")],
        ) {
            let zone = TimeZone::get(zone).unwrap();
            let mut cached = Calendar::new(zone.clone());
            for ms in times {
                let fresh = Calendar::new(zone.clone()).resolve(ms).2;
                let expected = day_number(Timestamp::from_millisecond(ms).unwrap().to_zoned_datetime(zone.clone()).date());
                prop_assert_eq!(fresh, expected);
                prop_assert_eq!(cached.day_of(ms), expected);
            }
        }

        #[test]
        fn day_number_round_trips(day in -700_000i32..700_000) {
            prop_assert_eq!(day_number(date_of(day)), day);
        }
    }
}
