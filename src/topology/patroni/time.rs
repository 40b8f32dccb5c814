//! Wall-clock timestamps as Patroni writes and reads them (ISO 8601 / RFC 3339 with an offset, e.g.
//! `2026-12-04T22:17:33.761719+00:00`): parsed into a [`SystemTime`] and written in UTC. Pure; no time zone
//! database is needed because Patroni always gives the offset (it refuses a `scheduled_at` without one).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO 8601 timestamp with an offset: {0:?}")]
pub struct BadTimestamp(pub String);

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction](Z|±HH:MM|±HHMM)`.
pub fn parse(text: &str) -> Result<SystemTime, BadTimestamp> {
    parse_inner(text.trim()).ok_or_else(|| BadTimestamp(text.to_owned()))
}

fn parse_inner(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos: i64 = 0;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let fraction = &text[start..at];
        if fraction.is_empty() {
            return None;
        }
        // Nanoseconds: the first nine digits count, the rest is below what a SystemTime compares here.
        let kept: String = fraction.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = kept.parse().ok()?;
    }
    let offset_seconds = match &text[at..] {
        "Z" | "z" => 0,
        zone => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let rest = zone[1..].replace(':', "");
            if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hours: i64 = rest[..2].parse().ok()?;
            let minutes: i64 = rest[2..].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, u32::try_from(nanos).ok()?))
}

/// `at` in UTC with microseconds, as Python's `isoformat()` writes it: `2026-12-04T22:17:33.761719+00:00`.
pub fn format_utc(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() as i64;
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(seconds: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(seconds, micros * 1000)
    }

    #[test]
    fn patronis_isoformat_is_read_with_its_offset() {
        // 2026-12-04T22:17:33Z = 1796422653 (date -d @1796422653 -u).
        assert_eq!(
            parse("2026-12-04T22:17:33.761719+00:00"),
            Ok(unix(1_796_422_653, 761_719))
        );
        assert_eq!(
            parse("2026-12-04T23:17:33.761719+01:00"),
            Ok(unix(1_796_422_653, 761_719))
        );
        assert_eq!(
            parse("2026-12-04T17:47:33.761719-04:30"),
            Ok(unix(1_796_422_653, 761_719))
        );
        assert_eq!(parse("2026-12-04T22:17:33Z"), Ok(unix(1_796_422_653, 0)));
        assert_eq!(parse("2026-12-04 22:17:33+0000"), Ok(unix(1_796_422_653, 0)));
        assert_eq!(parse("1970-01-01T00:00:00+00:00"), Ok(UNIX_EPOCH));
        assert_eq!(parse("2024-02-29T00:00:00Z"), Ok(unix(1_709_164_800, 0)), "a leap day");
    }

    #[test]
    fn a_timestamp_without_offset_or_malformed_is_an_error() {
        for bad in [
            "",
            "2026-12-04T22:17:33",
            "2026-12-04T22:17:33.+00:00",
            "2026-13-04T22:17:33Z",
            "2026-12-04T25:17:33Z",
            "2026-12-04T22:17:33+0:00",
            "yesterday",
            "2026-12-04T22:17:33Zjunk",
            "1969-12-31T23:59:59Z",
            "２026-12-04T22:17:33Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formatting_round_trips_in_utc() {
        let at = unix(1_796_422_653, 761_719);
        assert_eq!(format_utc(at), "2026-12-04T22:17:33.761719+00:00");
        assert_eq!(parse(&format_utc(at)), Ok(at));
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000+00:00");
        let leap = unix(1_709_164_800, 1);
        assert_eq!(parse(&format_utc(leap)), Ok(leap));
    }
}
