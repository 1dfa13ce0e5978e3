//! How records are split into time partitions: the scheme (ISO week or month), each partition's
//! key (name and `[start, end)` in microseconds) and the names of their directories. Pure time
//! arithmetic; the opened partitions are in `partition.rs`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use serde::{Deserialize, Serialize};

/// How records are split into partitions by their `time` (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionScheme {
    /// One partition per ISO week (Monday 00:00 UTC to the next), named `2026-W48`.
    #[default]
    Week,
    /// One partition per calendar month, named `2026-11`.
    Month,
}

/// A partition's name and time range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// Inclusive start, microseconds since the epoch (the sort key: partitions order by time).
    pub(crate) start: i64,
    /// Exclusive end, microseconds since the epoch.
    pub(crate) end: i64,
    /// Directory name.
    pub(crate) name: String,
}

impl PartitionKey {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn start(&self) -> DateTime<Utc> {
        micros_to_time(self.start)
    }

    pub fn end(&self) -> DateTime<Utc> {
        micros_to_time(self.end)
    }

    /// Whether the partition may hold records of `[since, until)`.
    pub(crate) fn overlaps(&self, since: Option<i64>, until: Option<i64>) -> bool {
        since.is_none_or(|s| self.end > s) && until.is_none_or(|u| self.start < u)
    }
}

pub(crate) fn micros_to_time(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(if micros > 0 {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        })
}

fn midnight_micros(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

impl PartitionScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionScheme::Week => "week",
            PartitionScheme::Month => "month",
        }
    }

    /// The partition of a record time.
    pub fn key_for(self, t: DateTime<Utc>) -> PartitionKey {
        let date = t.date_naive();
        match self {
            PartitionScheme::Week => {
                let week = date.iso_week();
                let back = chrono::Days::new(u64::from(date.weekday().num_days_from_monday()));
                // Only the first days chrono can represent have no Monday before them.
                let monday = date.checked_sub_days(back).unwrap_or(NaiveDate::MIN);
                let start = midnight_micros(monday);
                PartitionKey {
                    start,
                    end: start + Duration::days(7).num_microseconds().expect("fits"),
                    name: format!("{:04}-W{:02}", week.year(), week.week()),
                }
            }
            PartitionScheme::Month => {
                let first = date.with_day(1).expect("day 1 exists");
                // The last month chrono can represent ends beyond it.
                let end = first
                    .checked_add_months(chrono::Months::new(1))
                    .map_or(i64::MAX, midnight_micros);
                PartitionKey {
                    start: midnight_micros(first),
                    end,
                    name: format!("{:04}-{:02}", first.year(), first.month()),
                }
            }
        }
    }

    /// The partition a directory name stands for, if it is one of this scheme's names.
    pub fn parse_name(self, name: &str) -> Option<PartitionKey> {
        let key = match self {
            PartitionScheme::Week => {
                let (year, week) = name.rsplit_once("-W")?;
                let date = NaiveDate::from_isoywd_opt(
                    year.parse().ok()?,
                    week.parse().ok()?,
                    Weekday::Mon,
                )?;
                self.key_for(midnight(date))
            }
            PartitionScheme::Month => {
                let (year, month) = name.rsplit_once('-')?;
                let date = NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)?;
                self.key_for(midnight(date))
            }
        };
        // Only the canonical spelling (so `2026-W048` is not a second name for a partition).
        (key.name == name).then_some(key)
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_and_month_keys_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 13, 53, 46).unwrap();
        let w = PartitionScheme::Week.key_for(t);
        assert_eq!(w.name, "2026-W48");
        assert_eq!(
            w.start(),
            Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
        );
        assert_eq!(
            w.end(),
            Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()
        );
        assert_eq!(PartitionScheme::Week.parse_name("2026-W48"), Some(w));
        // ISO week-year differs from the calendar year at the edges.
        let jan1 = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(PartitionScheme::Week.key_for(jan1).name, "2026-W53");
        let m = PartitionScheme::Month.key_for(t);
        assert_eq!(m.name, "2026-11");
        assert_eq!(m.end(), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(PartitionScheme::Month.parse_name("2026-11"), Some(m));
        for bad in [
            "2026-W48x",
            "2026-W048",
            "x-W1",
            "2026-W54",
            "",
            "-W",
            ".tmp-2026-W48",
        ] {
            assert_eq!(PartitionScheme::Week.parse_name(bad), None, "{bad}");
        }
        assert_eq!(PartitionScheme::Month.parse_name("2026-W48"), None);
        // Any representable time has a partition whose name reads back (no panic at the edges).
        for scheme in [PartitionScheme::Week, PartitionScheme::Month] {
            for t in [
                DateTime::<Utc>::MIN_UTC,
                DateTime::<Utc>::MAX_UTC,
                Utc.with_ymd_and_hms(-1, 3, 4, 0, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(10_000, 3, 4, 0, 0, 0).unwrap(),
            ] {
                let key = scheme.key_for(t);
                assert!(key.start <= t.timestamp_micros() && t.timestamp_micros() < key.end);
                if t != DateTime::<Utc>::MIN_UTC && t != DateTime::<Utc>::MAX_UTC {
                    assert_eq!(scheme.parse_name(&key.name), Some(key), "{t}");
                }
            }
        }
        assert_eq!(PartitionScheme::Week.parse_name("2026-11"), None);
    }
}
