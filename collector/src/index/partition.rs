//! Time partitions: one tantivy index per ISO week (or month) under `<dir>/<name>/`, opened lazily.
//!
//! A partition holds exactly the records whose `time` falls in `[start, end)`, so partitions are
//! time-disjoint: a newest-first walk over them in order of `start` is a walk in time order.

use super::error::IndexError;
use super::schema::{UidForm, register_tokenizers};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tantivy::index::SegmentId;
use tantivy::schema::Schema;
use tantivy::{Index, IndexReader, ReloadPolicy};

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

/// An opened partition: its tantivy index and a manually reloaded reader.
pub(crate) struct OpenPartition {
    pub index: Index,
    pub reader: IndexReader,
    /// How the partition finds a record by (org, id) (which schema it was written with).
    pub uid_form: UidForm,
}

/// One partition: known from its directory, opened on first use.
pub(crate) struct Partition {
    pub key: PartitionKey,
    pub dir: PathBuf,
    opened: Mutex<Option<Arc<OpenPartition>>>,
}

/// Blocks of the doc store kept decompressed per segment reader.
const DOC_STORE_CACHE_BLOCKS: usize = 64;

impl Partition {
    /// A partition whose directory holds an index (it is opened later).
    pub fn existing(key: PartitionKey, dir: PathBuf) -> Partition {
        Partition {
            key,
            dir,
            opened: Mutex::new(None),
        }
    }

    /// Creates the partition's index: built in `.tmp-<name>` and renamed into place, so a crash
    /// never leaves a half-created partition under its real name.
    pub fn create(
        root: &Path,
        key: PartitionKey,
        schema: &Schema,
    ) -> Result<Partition, IndexError> {
        let dir = root.join(&key.name);
        let tmp = root.join(format!(".tmp-{}", key.name));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
        let index = Index::create_in_dir(&tmp, schema.clone())
            .map_err(|e| IndexError::tantivy(&tmp, "create the partition index", e))?;
        drop(index);
        std::fs::rename(&tmp, &dir).map_err(|e| IndexError::io(&dir, e))?;
        super::state::sync_dir(root)?;
        Ok(Partition::existing(key, dir))
    }

    /// The opened index and reader, opening them on first use. Refuses a partition written with a
    /// schema this version does not know.
    pub fn open(&self) -> Result<Arc<OpenPartition>, IndexError> {
        let mut slot = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = slot.as_ref() {
            return Ok(open.clone());
        }
        let index = Index::open_in_dir(&self.dir)
            .map_err(|e| IndexError::tantivy(&self.dir, "open the partition index", e))?;
        let Some(uid_form) = UidForm::of(&index.schema()) else {
            return Err(IndexError::State {
                path: self.dir.clone(),
                message: "the partition was written with a schema this version does not know"
                    .into(),
            });
        };
        register_tokenizers(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
            .try_into()
            .map_err(|e| IndexError::tantivy(&self.dir, "open a reader", e))?;
        let open = Arc::new(OpenPartition {
            index,
            reader,
            uid_form,
        });
        *slot = Some(open.clone());
        Ok(open)
    }

    /// The opened index and reader, if the partition is open now (without opening it).
    fn opened_now(&self) -> Option<Arc<OpenPartition>> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes the last commit visible to searchers, if the partition is open (a partition opened
    /// later sees it anyway).
    pub fn reload(&self) -> Result<(), IndexError> {
        match self.opened_now() {
            Some(open) => self.reload_reader(&open),
            None => Ok(()),
        }
    }

    /// Reloads the reader if the partition's segments changed since (a background merge ended),
    /// which costs reading `meta.json`; a reload opens every segment again.
    pub fn reload_if_merged(&self) -> Result<(), IndexError> {
        let Some(open) = self.opened_now() else {
            return Ok(());
        };
        let on_disk: HashSet<SegmentId> = open
            .index
            .searchable_segment_ids()
            .map_err(|e| IndexError::tantivy(&self.dir, "read the segment list", e))?
            .into_iter()
            .collect();
        let searcher = open.reader.searcher();
        let seen = searcher.segment_readers();
        if seen.len() != on_disk.len() || seen.iter().any(|r| !on_disk.contains(&r.segment_id())) {
            self.reload_reader(&open)?;
        }
        Ok(())
    }

    fn reload_reader(&self, open: &OpenPartition) -> Result<(), IndexError> {
        open.reader
            .reload()
            .map_err(|e| IndexError::tantivy(&self.dir, "reload the reader", e))
    }

    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.opened_now().is_some()
    }
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
