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
//! Before deleting anything, the run records what each org's hash chain loses
//! ([`ChainCheckpoints`](super::ChainCheckpoints): the checkpoint and tombstones of
//! `chain-checkpoints.json`), so that what remains still verifies and the chain continues after
//! a restart even if nothing of the org is left.
//!
//! Records inside their window are never touched: the cutoff is
//! [`OrgRetention::expires_before`](super::OrgRetention::expires_before), the very bound reads
//! apply, and only records strictly before it go.

use super::error::RetentionError;
use super::policy::RetentionPolicy;
use crate::index::{AuditIndex, Indexer, OrgSpan, PartitionInfo};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Orgs whose chain checkpoint changed (saved before the deletes).
    pub checkpoints_saved: Vec<String>,
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
    ) -> Result<JanitorReport, RetentionError> {
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
        // What to do with each partition, decided before anything is deleted.
        let mut plan: Vec<(PartitionInfo, Step)> = Vec::new();
        for part in self.index.partitions()? {
            report.bytes_before += part.bytes_on_disk;
            let spans = self.index.org_spans(&part.name)?;
            let whole = spans
                .keys()
                .all(|org| cutoff(org).is_some_and(|c| c >= part.end));
            if whole {
                plan.push((part, Step::Drop(spans)));
                continue;
            }
            let due: Vec<(String, DateTime<Utc>)> = spans
                .iter()
                .filter_map(|(org, span)| {
                    let c = cutoff(org)?;
                    (span.oldest < c).then(|| (org.clone(), c))
                })
                .collect();
            if due.is_empty() {
                plan.push((part, Step::Keep(spans)));
            } else {
                plan.push((part, Step::Purge(due)));
            }
        }
        let cutoffs: HashMap<String, DateTime<Utc>> = cutoffs
            .into_iter()
            .filter_map(|(org, c)| Some((org, c?)))
            .collect();
        report.checkpoints_saved = self.save_checkpoints(&plan, &cutoffs)?;

        for (part, step) in plan {
            let kept = match step {
                Step::Drop(spans) => {
                    indexer.delete_partition(&part.name)?;
                    add(&mut report.deleted, &spans);
                    report.partitions_dropped.push(part.name);
                    continue;
                }
                Step::Keep(spans) => {
                    report.bytes_after += part.bytes_on_disk;
                    spans
                }
                Step::Purge(due) => {
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
                }
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
            checkpoints_saved = report.checkpoints_saved.len(),
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            seconds = report.duration.as_secs_f64(),
            "retention janitor ran"
        );
        Ok(report)
    }

    /// Records, durably and before anything is deleted, what each org's chain is about to lose:
    /// the `seq`s of its records with a `time` before its cutoff in the partitions the plan
    /// touches, moved into its checkpoint and tombstones. Returns the orgs whose checkpoint
    /// changed.
    fn save_checkpoints(
        &self,
        plan: &[(PartitionInfo, Step)],
        cutoffs: &HashMap<String, DateTime<Utc>>,
    ) -> Result<Vec<String>, RetentionError> {
        let touched: HashSet<String> = plan
            .iter()
            .filter(|(_, step)| !matches!(step, Step::Keep(_)))
            .map(|(part, _)| part.name.clone())
            .collect();
        if touched.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let expiring = self.index.expiring_chains(&touched, cutoffs)?;
        let store = self.policy.checkpoints();
        let mut changed = BTreeMap::new();
        let mut hashes_read = 0u64;
        for org in expiring.orgs() {
            let before = store.get(org);
            let mut after = before.clone();
            after.advance(&expiring.seqs(org), |seq| {
                hashes_read += 1;
                expiring.about(org, seq)
            })?;
            if after != before {
                changed.insert(org.to_string(), after);
            }
        }
        drop(expiring);
        let orgs: Vec<String> = changed.keys().cloned().collect();
        store.save(changed)?;
        tracing::debug!(
            orgs = orgs.len(),
            hashes_read,
            seconds = started.elapsed().as_secs_f64(),
            "saved chain checkpoints before deleting"
        );
        Ok(orgs)
    }
}

/// What a run does with one partition.
enum Step {
    /// Delete it whole (every org present has expired all of it).
    Drop(BTreeMap<String, OrgSpan>),
    /// Delete these orgs' records before their cutoff.
    Purge(Vec<(String, DateTime<Utc>)>),
    /// Nothing to delete.
    Keep(BTreeMap<String, OrgSpan>),
}

fn add(deleted: &mut BTreeMap<String, u64>, spans: &BTreeMap<String, OrgSpan>) {
    for (org, span) in spans {
        *deleted.entry(org.clone()).or_default() += span.docs;
    }
}
