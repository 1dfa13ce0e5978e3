//! UTC timestamps: microsecond precision, RFC 3339 with a `Z`, and the time bounds that filters accept.

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, TimeZone, Utc};

/// Cuts a timestamp to whole microseconds, the precision every stored time has.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_micros();
    Utc.timestamp_micros(micros).single().unwrap_or(t)
}

/// Formats a time as RFC 3339 in UTC with six fractional digits: `2026-11-27T13:53:46.123456Z`.
pub fn format_rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an RFC 3339 time with any offset and returns it in UTC, cut to microseconds.
pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| truncate_to_micros(t.with_timezone(&Utc)))
        .map_err(|e| format!("not an RFC 3339 time ({e}): {s:?}"))
}

/// Which end of a time range a bound closes; a bare date means the start of that day for `Since`
/// and the start of the next day (exclusive) for `Until`, so `until=2026-11-27` includes that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Since,
    Until,
}

/// Parses a filter's time bound: RFC 3339 (`2026-11-27T10:00:00Z`), a date (`2026-11-27`),
/// or a time relative to `now` (`30m`, `24h`, `7d`, `2w`).
pub fn parse_time_bound(
    s: &str,
    bound: Bound,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if let Some(rel) = parse_relative(s) {
        return rel.and_then(|d| {
            now.checked_sub_signed(d)
                .map(truncate_to_micros)
                .ok_or_else(|| format!("{s:?} before {} is out of range", format_rfc3339(&now)))
        });
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let day = match bound {
            Bound::Since => date,
            Bound::Until => date
                .succ_opt()
                .ok_or_else(|| format!("date out of range: {s:?}"))?,
        };
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(Utc.from_utc_datetime(&midnight));
    }
    parse_rfc3339(s).map_err(|_| {
        format!("expected an RFC 3339 time, a date (YYYY-MM-DD) or a relative time like 7d or 24h, got {s:?}")
    })
}

fn parse_relative(s: &str) -> Option<Result<Duration, String>> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = match digits.parse() {
        Ok(n) => n,
        Err(_) => return Some(Err(format!("number too large in {s:?}"))),
    };
    let per_unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    // Bound the look-back to 100 years so the subtraction can never overflow.
    const MAX_SECONDS: i64 = 100 * 366 * 86_400;
    match n.checked_mul(per_unit) {
        Some(secs) if secs <= MAX_SECONDS => Some(Ok(Duration::seconds(secs))),
        _ => Some(Err(format!("relative time {s:?} is more than 100 years"))),
    }
}

/// Serde for `DateTime<Utc>` as RFC 3339 with microseconds; input with any offset is turned into UTC.
pub mod micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_rfc3339(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde for `Option<DateTime<Utc>>`, as [`micros`].
pub mod micros_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_rfc3339(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| super::parse_rfc3339(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_rfc3339("2026-11-27T12:00:00Z").unwrap()
    }

    #[test]
    fn offsets_become_utc_and_precision_is_micros() {
        let t = parse_rfc3339("2026-11-27T14:00:00.123456789+02:00").unwrap();
        assert_eq!(format_rfc3339(&t), "2026-11-27T12:00:00.123456Z");
    }

    #[test]
    fn time_bounds() {
        let n = now();
        assert_eq!(
            parse_time_bound("7d", Bound::Since, n).unwrap(),
            n - Duration::days(7)
        );
        assert_eq!(
            parse_time_bound("24h", Bound::Since, n).unwrap(),
            n - Duration::hours(24)
        );
        assert_eq!(
            format_rfc3339(&parse_time_bound("2026-11-20", Bound::Since, n).unwrap()),
            "2026-11-20T00:00:00.000000Z"
        );
        assert_eq!(
            format_rfc3339(&parse_time_bound("2026-11-20", Bound::Until, n).unwrap()),
            "2026-11-21T00:00:00.000000Z"
        );
        assert!(parse_time_bound("yesterday", Bound::Since, n).is_err());
        assert!(parse_time_bound("99999999999999d", Bound::Since, n).is_err());
        assert!(parse_time_bound("2026-13-01", Bound::Since, n).is_err());
        // Found by the query-string property test: a look-back from the earliest time chrono
        // holds overflowed (a panic) instead of being an error.
        assert!(parse_time_bound("7d", Bound::Since, DateTime::<Utc>::MIN_UTC).is_err());
    }
}
