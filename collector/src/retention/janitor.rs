//! [`Janitor`]: deletes expired records, through the [`Indexer`] (the index's one writer).
//!
//! Per partition, oldest first, from who has records in it ([`AuditIndex::org_spans`]):
//!
//! - every org present has expired the whole partition (its cutoff is at or after the
//!   partition's end, and it is not under legal hold): the partition is deleted, directory and
//!   all ([`Indexer::delete_partition`]). Only orgs with records there can have records there:
//!   the janitor runs on the indexer's task, so none arrive meanwhile. This is the "maximum
//!   window" rule, taken over the orgs actually present rather than every org there is;
//! - otherwise the orgs whose oldest record there is before their cutoff lose the records before
//!   it ([`Indexer::delete_older_than`]: delete, commit, merge, collect the old files).
//!
//! Records inside their window are never touched: the cutoff is
//! [`OrgRetention::expires_before`](super::OrgRetention::expires_before), the very bound reads
//! apply, and only records strictly before it go.

use super::policy::RetentionPolicy;
use crate::index::{AuditIndex, IndexError, Indexer, OrgSpan};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JanitorReport {
    /// The `now` the run judged expiry by.
    pub now: Option<DateTime<Utc>>,
    pub duration: Duration,
    /// Records deleted, per org (only orgs that had some deleted).
    pub deleted: BTreeMap<String, u64>,
    /// Partitions deleted whole.
    pub partitions_dropped: Vec<String>,
    /// Partitions some records were deleted from (and merged).
    pub partitions_purged: Vec<String>,
    /// The oldest record kept, per org that has records.
    pub oldest: BTreeMap<String, DateTime<Utc>>,
    /// Bytes of the index's partitions before and after the run.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl JanitorReport {
    /// Records deleted in all.
    pub fn total_deleted(&self) -> u64 {
        self.deleted.values().sum()
    }
}

/// Deletes what the policy says has expired. Holds no state between runs.
#[derive(Clone)]
pub struct Janitor {
    policy: Arc<RetentionPolicy>,
    index: AuditIndex,
}

impl Janitor {
    pub fn new(policy: Arc<RetentionPolicy>, index: AuditIndex) -> Janitor {
        Janitor { policy, index }
    }

    /// Deletes every record expired at `now`. Blocking, and runs on the task that owns
    /// `indexer`. Commits what was added first: every record deleted is then at or below
    /// `indexed_through`, which a write-ahead-log replay starts after, so no replay brings one
    /// back (the caller should tell the store the new `indexed_through`).
    pub fn run(
        &self,
        indexer: &mut Indexer,
        now: DateTime<Utc>,
    ) -> Result<JanitorReport, IndexError> {
        let started = Instant::now();
        indexer.commit()?;
        let mut report = JanitorReport {
            now: Some(now),
            ..JanitorReport::default()
        };
        // Each org's cutoff, read once per run so every partition is judged alike.
        let mut cutoffs: HashMap<String, Option<DateTime<Utc>>> = HashMap::new();
        let mut cutoff = |org: &str| {
            *cutoffs
                .entry(org.to_string())
                .or_insert_with(|| self.policy.for_org(org).expires_before(now))
        };
        for part in self.index.partitions()? {
            report.bytes_before += part.bytes_on_disk;
            let spans = self.index.org_spans(&part.name)?;
            let whole = spans
                .keys()
                .all(|org| cutoff(org).is_some_and(|c| c >= part.end));
            if whole {
                indexer.delete_partition(&part.name)?;
                add(&mut report.deleted, &spans);
                report.partitions_dropped.push(part.name);
                continue;
            }
            let due: Vec<(String, DateTime<Utc>)> = spans
                .iter()
                .filter_map(|(org, span)| {
                    let c = cutoff(org)?;
                    (span.oldest < c).then(|| (org.clone(), c))
                })
                .collect();
            let kept = if due.is_empty() {
                report.bytes_after += part.bytes_on_disk;
                spans
            } else {
                let purge = indexer.delete_older_than(&part.name, &due)?;
                for (org, n) in purge.deleted {
                    *report.deleted.entry(org).or_default() += n;
                }
                report.bytes_after += purge.bytes_after;
                report.partitions_purged.push(part.name.clone());
                if purge.removed {
                    continue;
                }
                self.index.org_spans(&part.name)?
            };
            // Oldest partitions first: the first span seen of an org holds its oldest record.
            for (org, span) in kept {
                report.oldest.entry(org).or_insert(span.oldest);
            }
        }
        report.duration = started.elapsed();
        tracing::info!(
            deleted = report.total_deleted(),
            partitions_dropped = report.partitions_dropped.len(),
            partitions_purged = report.partitions_purged.len(),
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            seconds = report.duration.as_secs_f64(),
            "retention janitor ran"
        );
        Ok(report)
    }
}

fn add(deleted: &mut BTreeMap<String, u64>, spans: &BTreeMap<String, OrgSpan>) {
    for (org, span) in spans {
        *deleted.entry(org.clone()).or_default() += span.docs;
    }
}
