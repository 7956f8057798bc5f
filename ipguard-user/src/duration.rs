//! Lengths of time as an operator writes them in the config and on the command line:
//! a whole number and one unit (`500ms`, `90s`, `15m`, `24h`, `30d`), or `forever`
//! where a ban may be permanent.
//!
//! Deliberately strict: no combinations (`1h30m`), no fractions, no spaces, no
//! upper-case units. Every duration has exactly one spelling per unit, so what the
//! daemon prints ([`format_duration`]) can be pasted back into the file.

use std::fmt;
use std::time::Duration;

/// The units, largest first (the order [`format_duration`] tries them in), with
/// their length in milliseconds.
const UNITS: [(&str, u128); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// The keyword for a duration without end.
const FOREVER: &str = "forever";

/// The longest finite duration accepted anywhere (config, API, CLI): 36500 days, about a
/// century. Longer is `forever`: every expiry then stays far inside the times that RFC 3339
/// and the wall clock can write.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// How long something lasts: a finite [`Duration`] or [`Lifetime::Forever`].
///
/// Ordered by length, `Forever` after every finite duration, so `min`/`max` and
/// comparisons work directly (e.g. capping a grown ban at `max_ban`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lifetime {
    /// Ends after this long.
    For(Duration),
    /// Never ends.
    Forever,
}

impl Lifetime {
    /// The finite duration, or `None` for [`Lifetime::Forever`].
    pub const fn duration(self) -> Option<Duration> {
        match self {
            Lifetime::For(duration) => Some(duration),
            Lifetime::Forever => None,
        }
    }
}

impl From<Duration> for Lifetime {
    fn from(duration: Duration) -> Self {
        Lifetime::For(duration)
    }
}

impl fmt::Display for Lifetime {
    /// `forever`, or the duration as [`format_duration`] writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lifetime::For(duration) => f.write_str(&format_duration(*duration)),
            Lifetime::Forever => f.write_str(FOREVER),
        }
    }
}

/// Why a string is not a duration.
///
/// The messages are written to follow a config key (`rate_limit[0].window: ...`), so
/// they quote the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not `<digits><unit>`: empty, an unknown or missing unit, a sign, a fraction, a
    /// combination like `1h30m`, inner spaces.
    #[error(
        "{given:?} is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\"){}",
        if *.forever_allowed { ", or \"forever\"" } else { "" }
    )]
    Invalid {
        /// The text as given.
        given: String,
        /// Whether `forever` would have been accepted here (it is then suggested).
        forever_allowed: bool,
    },
    /// `forever` where only a finite duration makes sense (a window, a graylisting).
    #[error("\"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")")]
    ForeverNotAllowed,
    /// The text starts or ends with whitespace. Rejected rather than trimmed, like
    /// addresses (see `net::parse_net`).
    #[error("{given:?} has leading or trailing whitespace; write the duration without it")]
    Whitespace {
        /// The text as given.
        given: String,
    },
    /// A length of zero: a zero window or ban means nothing, so it is taken for a typo.
    #[error("must be longer than 0, got {given:?}")]
    Zero {
        /// The text as given.
        given: String,
    },
    /// Longer than [`MAX_DURATION`].
    #[error("{given:?} is longer than 36500d (about a century); use \"forever\" for no end")]
    Overflow {
        /// The text as given.
        given: String,
    },
}

/// Parses a length of time written as `<integer><unit>`, unit one of `ms`, `s`, `m`,
/// `h`, `d` (e.g. `"500ms"`, `"90s"`, `"24h"`, `"30d"`). Zero is rejected.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s == FOREVER {
        return Err(DurationError::ForeverNotAllowed);
    }
    parse_finite(s, false)
}

/// Like [`parse_duration`], but also accepts `"forever"`.
pub fn parse_lifetime(s: &str) -> Result<Lifetime, DurationError> {
    if s == FOREVER {
        return Ok(Lifetime::Forever);
    }
    parse_finite(s, true).map(Lifetime::For)
}

fn parse_finite(s: &str, forever_allowed: bool) -> Result<Duration, DurationError> {
    let given = || crate::model::excerpt(s);
    if s.trim() != s {
        return Err(DurationError::Whitespace { given: given() });
    }
    let invalid = || DurationError::Invalid {
        given: given(),
        forever_allowed,
    };
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let (_, unit_ms) = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(invalid)?;
    // Digits only, so a parse failure means more than u128 can hold: too long.
    let total_ms = digits
        .parse::<u128>()
        .ok()
        .and_then(|count| count.checked_mul(*unit_ms))
        .ok_or_else(|| DurationError::Overflow { given: given() })?;
    if total_ms == 0 {
        return Err(DurationError::Zero { given: given() });
    }
    if total_ms > MAX_DURATION.as_millis() {
        return Err(DurationError::Overflow { given: given() });
    }
    // At most MAX_DURATION: both parts fit.
    let secs = (total_ms / 1000) as u64;
    let millis = (total_ms % 1000) as u32;
    Ok(Duration::new(secs, millis * 1_000_000))
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest unit that
/// divides it exactly: `"90s"`, `"2h"`, `"1500ms"`. Round-trips for every duration
/// [`parse_duration`] returns.
///
/// Durations are whole milliseconds in ipguard; a sub-millisecond remainder (which
/// `parse_duration` never produces) is dropped. Zero is written `"0s"`.
pub fn format_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".to_owned();
    }
    // The last unit is 1 ms, which divides every whole number of milliseconds.
    let (unit, unit_ms) = UNITS
        .iter()
        .find(|(_, unit_ms)| total_ms.checked_rem(*unit_ms) == Some(0))
        .unwrap_or(&("ms", 1));
    format!("{}{unit}", total_ms / unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn invalid(given: &str, forever_allowed: bool) -> DurationError {
        DurationError::Invalid {
            given: given.into(),
            forever_allowed,
        }
    }

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(15 * 60)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(24 * 3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * DAY)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        // Leading zeros are harmless here (unlike in addresses, no octal reading exists).
        assert_eq!(parse_duration("007s"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn forever_only_where_allowed() {
        assert_eq!(parse_lifetime("forever"), Ok(Lifetime::Forever));
        assert_eq!(
            parse_lifetime("30d"),
            Ok(Lifetime::For(Duration::from_secs(30 * DAY)))
        );
        assert_eq!(
            parse_duration("forever"),
            Err(DurationError::ForeverNotAllowed)
        );
        assert_eq!(
            parse_duration("forever").unwrap_err().to_string(),
            r#""forever" is not allowed here: use a whole number with ms, s, m, h or d (e.g. "90s", "24h")"#
        );
        for bad in ["Forever", "FOREVER", "ever", "forever ", "inf"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn invalid_text_mentions_forever_only_where_accepted() {
        assert_eq!(
            parse_duration("10x").unwrap_err().to_string(),
            r#""10x" is not a duration: use a whole number with ms, s, m, h or d (e.g. "90s", "24h")"#
        );
        assert_eq!(
            parse_lifetime("ever").unwrap_err().to_string(),
            r#""ever" is not a duration: use a whole number with ms, s, m, h or d (e.g. "90s", "24h"), or "forever""#
        );
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in [
            "", "s", "ms", "10", "10x", "1h30m", "1.5h", "0.5s", ".5s", "1,5s", "-5s", "+5s",
            "5 s", "5S", "5H", "5sec", "5min", "5mss", "5 ", "1e3s", "5w", "5y", "5us", "٣s",
        ] {
            let expected = if bad.trim() != bad {
                DurationError::Whitespace { given: bad.into() }
            } else {
                invalid(bad, false)
            };
            assert_eq!(parse_duration(bad), Err(expected), "{bad:?}");
            let expected = if bad.trim() != bad {
                DurationError::Whitespace { given: bad.into() }
            } else {
                invalid(bad, true)
            };
            assert_eq!(parse_lifetime(bad), Err(expected), "{bad:?}");
        }
    }

    #[test]
    fn surrounding_whitespace_is_rejected_not_trimmed() {
        for bad in [" 5s", "5s ", "\t5s", "5s\n", " forever"] {
            assert_eq!(
                parse_lifetime(bad),
                Err(DurationError::Whitespace { given: bad.into() }),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_duration(" 5s").unwrap_err().to_string(),
            r#"" 5s" has leading or trailing whitespace; write the duration without it"#
        );
    }

    #[test]
    fn zero_is_rejected_in_every_unit() {
        for zero in ["0ms", "0s", "0m", "0h", "0d", "000s"] {
            assert_eq!(
                parse_duration(zero),
                Err(DurationError::Zero { given: zero.into() }),
                "{zero:?}"
            );
            assert_eq!(
                parse_lifetime(zero),
                Err(DurationError::Zero { given: zero.into() })
            );
        }
        assert_eq!(
            parse_duration("0s").unwrap_err().to_string(),
            r#"must be longer than 0, got "0s""#
        );
    }

    #[test]
    fn durations_past_a_century_are_refused_and_the_longest_accepted() {
        // A bound, not a representation limit: an expiry past the year 9999 cannot be
        // written (RFC 3339) and must never be computed from operator input.
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration(&format!("{}ms", MAX_DURATION.as_millis())),
            Ok(MAX_DURATION)
        );
        assert_eq!(parse_lifetime("36500d"), Ok(Lifetime::For(MAX_DURATION)));
        for too_long in [
            "36501d".to_owned(),
            format!("{}ms", MAX_DURATION.as_millis() + 1),
            "3000000d".to_owned(),
            "213503982334d".to_owned(),
            format!("{}s", u128::from(u64::MAX) + 1),
            format!("{}ms", u128::MAX),
            "1000000000000000000000000000000000000000000000000s".to_owned(),
        ] {
            assert_eq!(
                parse_duration(&too_long),
                Err(DurationError::Overflow {
                    given: too_long.clone()
                }),
                "{too_long}"
            );
            assert!(parse_lifetime(&too_long).is_err(), "{too_long}");
        }
        assert_eq!(
            parse_duration("3000000d").unwrap_err().to_string(),
            r#""3000000d" is longer than 36500d (about a century); use "forever" for no end"#
        );
    }

    #[test]
    fn format_uses_the_largest_exact_unit() {
        for (millis, text) in [
            (1, "1ms"),
            (999, "999ms"),
            (1_500, "1500ms"),
            (1_000, "1s"),
            (90_000, "90s"),
            (60_000, "1m"),
            (5 * 60_000, "5m"),
            (90 * 60_000, "90m"),
            (2 * 3_600_000, "2h"),
            (36 * 3_600_000, "36h"),
            (86_400_000, "1d"),
            (365 * 86_400_000, "365d"),
        ] {
            assert_eq!(format_duration(Duration::from_millis(millis)), text);
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
        // Sub-millisecond parts are dropped.
        assert_eq!(format_duration(Duration::from_micros(2_500)), "2ms");
    }

    #[test]
    fn format_round_trips() {
        let samples = [
            Duration::from_millis(1),
            Duration::from_millis(1_001),
            Duration::from_millis(86_400_001),
            Duration::from_secs(59),
            Duration::from_secs(61),
            Duration::from_secs(3_600),
            Duration::from_secs(7 * DAY),
            MAX_DURATION,
            MAX_DURATION - Duration::from_millis(1),
        ];
        for duration in samples {
            assert_eq!(
                parse_duration(&format_duration(duration)),
                Ok(duration),
                "{duration:?}"
            );
        }
        for text in ["500ms", "90s", "23h", "30d", "1500ms", "7d"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        // Other spellings come back in the largest exact unit.
        assert_eq!(format_duration(parse_duration("24h").unwrap()), "1d");
        assert_eq!(format_duration(parse_duration("120s").unwrap()), "2m");
        assert_eq!(format_duration(parse_duration("3000ms").unwrap()), "3s");
    }

    #[test]
    fn lifetime_display_and_order() {
        assert_eq!(Lifetime::Forever.to_string(), "forever");
        assert_eq!(
            Lifetime::For(Duration::from_secs(30 * DAY)).to_string(),
            "30d"
        );
        for text in ["forever", "365d", "90s", "1500ms"] {
            assert_eq!(parse_lifetime(text).unwrap().to_string(), text);
        }
        let year = Lifetime::For(Duration::from_secs(365 * DAY));
        assert!(Lifetime::For(Duration::from_secs(u64::MAX)) < Lifetime::Forever);
        assert!(year < Lifetime::Forever);
        assert!(Lifetime::For(Duration::from_secs(1)) < year);
        assert_eq!(year.min(Lifetime::Forever), year);
        assert_eq!(year.duration(), Some(Duration::from_secs(365 * DAY)));
        assert_eq!(Lifetime::Forever.duration(), None);
        assert_eq!(
            Lifetime::from(Duration::from_secs(1)),
            Lifetime::For(Duration::from_secs(1))
        );
    }
}
