//! Units in proxy.toml, spelled the way PostgreSQL spells them: durations ("250ms", "5s", "1min") and sizes
//! ("16MB" = 16 × 1024 × 1024 bytes). Pure string → number functions; knows nothing about keys or positions.

use std::time::Duration;

/// The duration units we accept, for error messages.
pub(super) const DURATION_UNITS: &str = "us, ms, s, min, h, d";
/// The size units we accept, for error messages.
pub(super) const SIZE_UNITS: &str = "B, kB (or KB), MB, GB, TB";

/// Parses "250ms", "5 s", "1min": a whole number, an optional space, and one of [`DURATION_UNITS`]. Public so the
/// command line reads durations the way proxy.toml does.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split(text).ok_or_else(|| {
        format!("\"{text}\" is not a duration; write a whole number and a unit ({DURATION_UNITS}), e.g. \"5s\"")
    })?;
    let seconds_per = match unit {
        "us" => return Ok(Duration::from_micros(number)),
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "min" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        "" => {
            return Err(format!(
                "\"{text}\" has no unit; add one of {DURATION_UNITS}, e.g. \"{number}ms\" or \"{number}s\""
            ));
        }
        other => {
            return Err(format!(
                "\"{text}\": unknown duration unit \"{other}\"; use one of {DURATION_UNITS}"
            ));
        }
    };
    number
        .checked_mul(seconds_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("\"{text}\" is too long a duration"))
}

/// Parses "16MB", "512 kB", "1024": a whole number, an optional space, and one of [`SIZE_UNITS`] (1024-based, as
/// PostgreSQL counts). No unit means bytes.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split(text).ok_or_else(|| {
        format!("\"{text}\" is not a size; write a whole number and a unit ({SIZE_UNITS}), e.g. \"16MB\"")
    })?;
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        other => {
            return Err(format!(
                "\"{text}\": unknown size unit \"{other}\"; use one of {SIZE_UNITS}"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("\"{text}\" is too large a size"))
}

/// Splits "16 MB" into (16, "MB"). `None` when the text does not start with a whole number that fits a u64.
fn split(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number = text[..digits].parse().ok()?;
    let rest = &text[digits..];
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    Some((number, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_postgres_units() {
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1min"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn duration_allows_one_space_before_the_unit() {
        assert_eq!(parse_duration("5 s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250 ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5  s").is_err());
    }

    #[test]
    fn duration_without_unit_names_the_allowed_units() {
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("us, ms, s, min, h, d"), "{err}");
    }

    #[test]
    fn duration_rejects_unknown_units_and_non_numbers() {
        for bad in ["5sec", "5S", "5m", "ms", "", "-5s", "1.5s", "five seconds"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn duration_overflow_is_an_error_not_a_panic() {
        assert!(parse_duration("18446744073709551615d").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn sizes_are_1024_based_like_postgres() {
        assert_eq!(parse_size("16MB"), Ok(16 * 1024 * 1024));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("1kB"), Ok(1024));
        assert_eq!(parse_size("1KB"), Ok(1024));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("1TB"), Ok(1 << 40));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("512 kB"), Ok(512 * 1024));
        assert_eq!(parse_size("4096"), Ok(4096));
    }

    #[test]
    fn size_rejects_unknown_units() {
        for bad in ["16mb", "16MiB", "16 M", "MB", "", "-1MB", "1.5MB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        let err = parse_size("16mb").unwrap_err();
        assert!(err.contains("kB"), "{err}");
    }

    #[test]
    fn size_overflow_is_an_error_not_a_panic() {
        assert!(parse_size("99999999TB").is_err());
    }
}
