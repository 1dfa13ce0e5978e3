//! Records of past partitions: staged, flushed in bulk on a thread of their own, never lost by a
//! crash (staged or in flight), bounded in memory, and deleted with their partition.

use super::*;
use std::collections::BTreeSet;

/// Stage on, flushed only when a test asks (or the budget says so).
fn staging(budget: usize, flush_after: std::time::Duration) -> IndexOptions {
    IndexOptions {
        cold_stage_bytes: budget,
        cold_flush_after: flush_after,
        max_open_writers: 2,
        ..options()
    }
}

/// `n` records of the current week (their ids apart from the corpus's).
fn hot(n: usize) -> Vec<AuditRecord> {
    corpus(77, n)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = Some(format!("hot-{i:05}"));
            r.time = Utc::now() - Duration::milliseconds(i as i64);
            r
        })
        .collect()
}

fn uid_count(index: &AuditIndex) -> usize {
    let mut n = 0;
    index.for_each_uid_hash(|_| n += 1).unwrap();
    n
}

/// Each org's search total is its count among `records`.
fn assert_totals(index: &AuditIndex, records: &[AuditRecord]) {
    for org in ORGS {
        let want = newest_first(records, org, &SearchQuery::default()).len() as u64;
        assert_eq!(total(index, org), want, "{org}");
    }
}

fn total(index: &AuditIndex, org: &str) -> u64 {
    index
        .search(org, &SearchQuery::default(), 1, None)
        .unwrap()
        .total
}

/// A batch mixing this week's records with records of nine past weeks: this week's are
/// searchable at the next commit, the past ones wait in the stage with `indexed_through` below
/// them; a crash then loses nothing (the replay from `indexed_through` adds them again, and
/// the records committed above it are not doubled); once flushed, everything is searchable once.
#[test]
fn spread_batches_are_staged_and_a_crash_loses_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let opts = staging(64 << 20, std::time::Duration::from_secs(3600));
    // Interleaved: past records take LSNs 0, 2, 4…, this week's 1, 3, 5…
    let (cold, now) = (corpus(41, 600), hot(600));
    let mixed: Vec<AuditRecord> = cold
        .iter()
        .zip(&now)
        .flat_map(|(c, h)| [c.clone(), h.clone()])
        .collect();
    let (batch, stored) = numbered(&mixed, 0);
    {
        let (index, mut indexer) = AuditIndex::open(dir.path(), opts.clone()).unwrap();
        for (b, s) in batch.chunks(100).zip(stored.chunks(100)) {
            indexer.add_stored(b, Some(s)).unwrap();
        }
        assert_eq!(indexer.staged().0, cold.len());
        assert_eq!(indexer.commit_due().unwrap(), None, "LSN 0 is staged");
        assert_eq!(indexer.open_writers(), 1, "only this week's writer");
        assert_eq!(uid_count(&index), now.len(), "this week's are searchable");
        let page = index
            .search("acme", &SearchQuery::default(), 1000, None)
            .unwrap();
        assert!(page.total > 0);
        assert!(page.entries.iter().all(|r| r.id().starts_with("hot-")));
        // Dropped without a flush: a crash.
    }
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(index.indexed_through(), None);
    assert_eq!(uid_count(&index), now.len());
    // The WAL gives everything after `indexed_through` again.
    indexer.add_stored(&batch, Some(&stored)).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(mixed.len() as u64 - 1));
    assert!(!indexer.has_staged());
    assert_eq!(uid_count(&index), mixed.len(), "each record once");
    for org in ORGS {
        let q = SearchQuery::default();
        let (got, _) = walk(&index, org, &q, 500, |_| {});
        assert_eq!(ids(&got), ids(&newest_first(&mixed, org, &q)));
    }
    drop((index, indexer));
    let (index, _) = AuditIndex::open(dir.path(), opts).unwrap();
    assert_eq!(index.indexed_through(), Some(mixed.len() as u64 - 1));
}

/// Staged records wait at most `cold_flush_after`: a commit after that flushes them, and the
/// flushed partitions' writers close at once.
#[test]
fn staged_records_are_flushed_once_they_waited_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let wait = std::time::Duration::from_millis(300);
    let (index, mut indexer) = AuditIndex::open(dir.path(), staging(64 << 20, wait)).unwrap();
    let cold = corpus(43, 300);
    let (batch, stored) = numbered(&cold, 0);
    indexer.add_stored(&batch, Some(&stored)).unwrap();
    assert_eq!(indexer.commit_due().unwrap(), None);
    assert_eq!(uid_count(&index), 0);
    std::thread::sleep(wait);
    // The flush runs on a thread of its own: commits go on, and one after it has ended passes
    // its records.
    let mut through = None;
    for _ in 0..1000 {
        through = indexer.commit_due().unwrap();
        if !indexer.has_staged() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(through, Some(299));
    assert_eq!(uid_count(&index), 300);
    assert_eq!(indexer.open_writers(), 0, "cold writers do not stay open");
    assert_eq!(index.indexed_through(), Some(299));
}

/// A stage of 256 KiB over nine weeks: it never holds more than its budget (the largest week
/// is flushed when it would), every record ends up searchable once, and the many small flushes
/// are merged, so a week keeps few segments.
#[test]
fn a_tiny_stage_stays_within_its_budget_and_flushes_merge() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 256 << 10;
    let (index, mut indexer) = AuditIndex::open(
        dir.path(),
        staging(budget, std::time::Duration::from_secs(3600)),
    )
    .unwrap();
    let records = corpus(47, 1_500);
    let (batch, stored) = numbered(&records, 1);
    let mut peak = 0;
    for (b, s) in batch.chunks(50).zip(stored.chunks(50)) {
        indexer.add_stored(b, Some(s)).unwrap();
        peak = peak.max(indexer.staged().1);
        assert!(indexer.staged().1 <= budget, "{:?}", indexer.staged());
        let through = indexer.commit_due().unwrap();
        if let Some(staged) = indexer.staged_min_lsn() {
            assert!(through.is_none_or(|t| t < staged), "{through:?} {staged}");
        }
    }
    assert!(peak > budget / 2, "the budget was used: {peak}");
    assert_eq!(
        indexer.open_writers(),
        0,
        "no week of a spread gets a writer"
    );
    indexer.commit().unwrap();
    indexer.finish_closing_all();
    assert_eq!(uid_count(&index), records.len());
    let parts = index.shared().partitions_newest_first(None, None);
    assert!(parts.len() >= 9);
    for p in &parts {
        p.reload().unwrap();
        let segments = searched_segments(p);
        assert!(segments <= 8, "{}: {segments} segments", p.key.name());
    }
    assert_totals(&index, &records);
}

/// Retention deletes a partition while records for it are staged: they are flushed and deleted
/// with it, `indexed_through` passes them, and a reopen brings none back.
#[test]
fn deleting_a_partition_takes_its_staged_records_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = staging(64 << 20, std::time::Duration::from_secs(3600));
    let records = corpus(53, 400);
    let oldest = PartitionScheme::Week.key_for(t0());
    let (batch, stored) = numbered(&records, 1);
    {
        let (index, mut indexer) = AuditIndex::open(dir.path(), opts.clone()).unwrap();
        indexer.add_stored(&batch, Some(&stored)).unwrap();
        assert!(indexer.has_staged());
        assert!(indexer.delete_partition(oldest.name()).unwrap());
        assert_eq!(index.indexed_through(), Some(400));
        let kept = records.iter().filter(|r| r.time >= oldest.end()).count();
        assert!(kept < records.len());
        assert_eq!(uid_count(&index), kept);
        assert!(!dir.path().join(oldest.name()).exists());
    }
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(400));
    assert!(!dir.path().join(oldest.name()).exists());
    assert!(index.partitions().unwrap()[0].start >= oldest.end());
}

/// A record of this week committed above a past record of the same org still in the stage is
/// searchable at once, but walks by `seq` (streams, `verify`) and export scans stop below the
/// staged one: were they to see seq 2 without seq 1, a stream would take seq 1 for deleted and
/// skip it, and `verify` would report a break.
#[test]
fn walks_and_scans_stop_below_a_staged_record() {
    let dir = tempfile::tempdir().unwrap();
    let opts = staging(64 << 20, std::time::Duration::from_secs(3600));
    let past = corpus(5, 3)
        .into_iter()
        .find(|r| r.org_id == "acme")
        .unwrap();
    let now = hot(3).into_iter().find(|r| r.org_id == "acme").unwrap();
    let records = chained(&[past, now]);
    let (batch, stored) = numbered(&records, 0);
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    indexer.add_stored(&batch, Some(&stored)).unwrap();
    indexer.commit_due().unwrap();
    assert_eq!(indexer.staged().0, 1, "the past record waits");
    assert_eq!(total(&index, "acme"), 1, "this week's record is searchable");

    assert_eq!(
        chain_seqs(&index),
        Vec::<u64>::new(),
        "no walk past the staged seq 1"
    );
    assert_eq!(
        scanned(&index),
        0,
        "an export scan holds nothing past it either"
    );
    assert_eq!(index.verify_chain("acme", None).unwrap().error, None);

    indexer.commit().unwrap();
    assert_eq!(chain_seqs(&index), vec![1, 2]);
    assert_eq!(scanned(&index), 2);
    let report = index.verify_chain("acme", None).unwrap();
    assert_eq!((report.error, report.summary.records), (None, 2));
}

/// Stage on with a short wait, the partitions of past weeks behind `faults` (this week's not).
fn held_past_weeks(faults: &faults::Faults) -> IndexOptions {
    let this_week = PartitionScheme::Week.key_for(Utc::now()).name;
    IndexOptions {
        directory: Some(faults.hook(move |path| !path.ends_with(&this_week))),
        ..staging(64 << 20, std::time::Duration::from_millis(100))
    }
}

/// A flush in flight (its writes held) does not hold back this week's commits, nor does its
/// memory leave the budget's count, and `indexed_through` stays below its records. The process
/// then dies before the flush commits (its writes fail): the replay adds every record once.
#[test]
fn a_flush_in_flight_lets_this_week_commit_and_a_crash_during_it_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let faults = faults::Faults::default();
    let opts = held_past_weeks(&faults);
    // The first 300 past records make the partitions (creating one writes through the hook).
    let (cold, now) = (corpus(59, 900), hot(300));
    let (first, stored_first) = numbered(&cold[..300], 0);
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts.clone()).unwrap();
    indexer.add_stored(&first, Some(&stored_first)).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(299));

    faults.hold();
    let (second, stored_second) = numbered(&cold[300..], 300);
    indexer.add_stored(&second, Some(&stored_second)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    // Due: the flight leaves, and waits in its first write.
    assert_eq!(indexer.commit_due().unwrap(), Some(299));
    assert!(indexer.has_staged());
    assert_eq!(indexer.staged().0, 600, "in flight, still counted");
    let (hot_batch, stored_hot) = numbered(&now, 900);
    for (b, s) in hot_batch.chunks(100).zip(stored_hot.chunks(100)) {
        indexer.add_stored(b, Some(s)).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(indexer.commit_due().unwrap(), Some(299), "below the flight");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "this week's commit waited for the flight"
        );
    }
    assert_eq!(
        uid_count(&index),
        300 + now.len(),
        "this week's are searchable"
    );
    assert_eq!(indexer.staged_min_lsn(), Some(300));

    // The flight's writes fail: as a crash before it committed. The next commit says so.
    faults.arm(5);
    faults.release();
    let failed = (0..1000).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        indexer.commit_due().err()
    });
    assert!(failed.is_some(), "the failed flight was never reported");
    drop((index, indexer));
    faults.disarm();

    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    assert_eq!(index.indexed_through(), Some(299));
    indexer.add_stored(&second, Some(&stored_second)).unwrap();
    indexer.add_stored(&hot_batch, Some(&stored_hot)).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(1199));
    assert_eq!(uid_count(&index), 1200, "each record once");
    let all: Vec<AuditRecord> = cold.iter().chain(&now).cloned().collect();
    assert_totals(&index, &all);
}

/// A flight indexes its partitions on lanes of its own, the largest first: a week whose writes
/// are held does not hold up the flight's other weeks, which become searchable meanwhile. When
/// the held week's writes then fail, the flight reports it once every lane has ended, no writer
/// of it keeps a partition's lock (the replay opens them all again), and the records added again
/// from the WAL are searchable once each.
#[test]
fn a_flight_flushes_weeks_side_by_side_and_one_failing_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let faults = faults::Faults::default();
    let held = PartitionScheme::Week.key_for(t0());
    let opts = IndexOptions {
        directory: Some(faults.hook({
            let name = held.name.clone();
            move |path| path.ends_with(&name)
        })),
        cold_flush_threads: 2,
        ..staging(64 << 20, std::time::Duration::from_millis(100))
    };
    // About a hundred records a week over nine weeks, and 300 more in the held week: the
    // largest, so the first a lane takes.
    let mut cold = corpus(67, 900);
    cold.extend(corpus(71, 300).into_iter().enumerate().map(|(i, mut r)| {
        r.id = Some(format!("held-{i:03}"));
        r.time = held.start() + Duration::minutes(i as i64);
        r
    }));
    let in_held = cold
        .iter()
        .filter(|r| held.start() <= r.time && r.time < held.end())
        .count();
    let (batch, stored) = numbered(&cold, 0);
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts.clone()).unwrap();
    faults.hold();
    for (b, s) in batch.chunks(100).zip(stored.chunks(100)) {
        indexer.add_stored(b, Some(s)).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(indexer.commit_due().unwrap(), None, "the flight has left");
    let started = std::time::Instant::now();
    while uid_count(&index) < cold.len() - in_held {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the other weeks waited for the held one: {} of {} searchable",
            uid_count(&index),
            cold.len() - in_held
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(uid_count(&index), cold.len() - in_held);
    assert!(indexer.has_staged(), "the held week is still in flight");
    assert_eq!(indexer.commit_due().unwrap(), None, "LSN 0 is in flight");

    faults.arm(5);
    faults.release();
    let failed = (0..1000).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        indexer.commit_due().err()
    });
    assert!(failed.is_some(), "the failed lane was never reported");
    drop((index, indexer));
    faults.disarm();

    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    assert_eq!(index.indexed_through(), None);
    indexer.add_stored(&batch, Some(&stored)).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(cold.len() as u64 - 1));
    assert_eq!(uid_count(&index), cold.len(), "each record once");
    for org in ORGS {
        let q = SearchQuery::default();
        let (got, _) = walk(&index, org, &q, 500, |_| {});
        assert_eq!(ids(&got), ids(&newest_first(&cold, org, &q)));
    }
}

/// The process dies after a flight committed but before the indexer saw it land: the replay
/// from `indexed_through` finds its records there and adds none twice.
#[test]
fn a_crash_after_a_flight_committed_adds_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let opts = staging(64 << 20, std::time::Duration::from_millis(100));
    let cold = corpus(61, 600);
    let (batch, stored) = numbered(&cold, 0);
    {
        let (index, mut indexer) = AuditIndex::open(dir.path(), opts.clone()).unwrap();
        indexer.add_stored(&batch, Some(&stored)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        assert_eq!(indexer.commit_due().unwrap(), None, "the flight has left");
        let started = std::time::Instant::now();
        while uid_count(&index) < cold.len() {
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Its writers close (nothing to merge at two segments or fewer); then the crash.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(index.indexed_through(), None);
    }
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    indexer.add_stored(&batch, Some(&stored)).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(599));
    assert_eq!(uid_count(&index), cold.len(), "each record once");
}

/// While a past record of acme is in flight, this week's next record of acme is searchable but
/// walks by `seq` and export scans stop below the flying one; retention deleting the flight's
/// partition waits for it to land, then deletes its records with it, for good.
#[test]
fn walks_stop_below_a_flight_and_retention_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let faults = faults::Faults::default();
    let opts = held_past_weeks(&faults);
    let past = corpus(5, 3)
        .into_iter()
        .find(|r| r.org_id == "acme")
        .unwrap();
    let week = PartitionScheme::Week.key_for(past.time);
    // Another org's record makes the past week's partition.
    let mut other = past.clone();
    other.org_id = "globex".into();
    other.id = Some("globex-first".into());
    let now = hot(3).into_iter().find(|r| r.org_id == "acme").unwrap();
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts.clone()).unwrap();
    let (first, stored_first) = numbered(&[other], 0);
    indexer.add_stored(&first, Some(&stored_first)).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(0));
    assert_eq!(indexer.open_writers(), 0, "flushed by a writer of its own");

    faults.hold();
    let records = chained(&[past, now]);
    let (batch, stored) = numbered(&records, 1);
    indexer.add_stored(&batch, Some(&stored)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(indexer.commit_due().unwrap(), Some(0), "LSN 1 is in flight");
    assert!(indexer.has_staged());
    assert_eq!(total(&index, "acme"), 1, "this week's record is searchable");
    assert_eq!(
        chain_seqs(&index),
        Vec::<u64>::new(),
        "no walk past the flying seq 1"
    );
    assert_eq!(scanned(&index), 0);

    let release = std::thread::spawn({
        let faults = faults.clone();
        move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            faults.release();
        }
    });
    assert!(indexer.delete_partition(week.name()).unwrap());
    release.join().unwrap();
    assert_eq!(index.indexed_through(), Some(2), "past the deleted flight");
    assert!(!dir.path().join(week.name()).exists());
    assert_eq!(chain_seqs(&index), vec![2], "seq 1 went with its partition");
    assert!(!indexer.has_staged());
    drop((index, indexer));

    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(2));
    assert!(!dir.path().join(week.name()).exists());
    assert_eq!(total(&index, "acme"), 1);
    assert_eq!(total(&index, "globex"), 0);
}

/// The seqs a walk by `seq` of acme's chain sees from seq 1.
fn chain_seqs(index: &AuditIndex) -> Vec<u64> {
    let mut seqs = Vec::new();
    index
        .for_each_chained("acme", 1, |r| {
            seqs.push(r.seq.unwrap());
            true
        })
        .unwrap();
    seqs
}

/// How many of acme's records an export's scan sees.
fn scanned(index: &AuditIndex) -> u64 {
    index.scan("acme", &SearchQuery::default()).unwrap().total()
}

/// Staged records are held as their stored JSON only and parsed back on the flight: after the
/// flush every filter and `q` form finds exactly what it finds in the records as added, and each
/// record reads back as it was stored.
#[test]
fn staged_records_parsed_back_index_and_read_as_added() {
    let dir = tempfile::tempdir().unwrap();
    let opts = staging(64 << 20, std::time::Duration::from_secs(3600));
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    let cold = corpus(61, 400);
    let (batch, stored) = numbered(&cold, 0);
    indexer.add_stored(&batch, Some(&stored)).unwrap();
    assert_eq!(indexer.staged().0, cold.len(), "all past weeks: staged");
    assert_eq!(indexer.commit().unwrap(), Some(cold.len() as u64 - 1));
    for org in ORGS {
        for q in queries(org) {
            let (got, _) = walk(&index, org, &q, 100, |_| {});
            assert_eq!(ids(&got), ids(&newest_first(&cold, org, &q)), "{q:?}");
        }
        let (got, _) = walk(&index, org, &SearchQuery::default(), 500, |_| {});
        let json = |rs: &[AuditRecord]| {
            rs.iter()
                .map(AuditRecord::canonical_json)
                .collect::<Vec<_>>()
        };
        let want = newest_first(&cold, org, &SearchQuery::default());
        assert_eq!(json(&got), json(&want));
    }
}

/// A past week with more records than a flight hands its writer at once: fed in chunks, every
/// one is indexed once and reads back as added.
#[test]
fn a_past_week_fed_in_chunks_indexes_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = staging(64 << 20, std::time::Duration::from_secs(3600));
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    let week_ago = Utc::now() - Duration::days(30);
    let cold: Vec<AuditRecord> = corpus(91, 3 * super::super::flight::FEED_CHUNK + 17)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.time = week_ago - Duration::seconds(i as i64);
            r
        })
        .collect();
    let (batch, stored) = numbered(&cold, 0);
    indexer.add_stored(&batch, Some(&stored)).unwrap();
    assert_eq!(indexer.staged().0, cold.len());
    assert_eq!(indexer.commit().unwrap(), Some(cold.len() as u64 - 1));
    assert_eq!(uid_count(&index), cold.len());
    for org in ORGS {
        let (got, _) = walk(&index, org, &SearchQuery::default(), 1000, |_| {});
        let json = |rs: &[AuditRecord]| {
            rs.iter()
                .map(AuditRecord::canonical_json)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            json(&got),
            json(&newest_first(&cold, org, &SearchQuery::default()))
        );
    }
}

/// `add_stored_no_wait` never waits for a flight: with one held in the air, past records take
/// the stage past its budget by one batch at most, `cold_stage_full` says so (the caller then
/// adds no more), this week's records added meanwhile are committed by `commit_due`, and once
/// the flight is landable `commit_due` lands it without waiting; every record ends up
/// searchable once.
#[test]
fn adding_without_waiting_reports_a_full_stage_and_this_week_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    let faults = faults::Faults::default();
    let budget = 256 << 10;
    let opts = IndexOptions {
        cold_stage_bytes: budget,
        ..held_past_weeks(&faults)
    };
    let (cold, now) = (corpus(61, 1500), hot(100));
    let (first, stored_first) = numbered(&cold[..300], 0);
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    indexer.add_stored(&first, Some(&stored_first)).unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(299));

    faults.hold();
    let (rest, stored_rest) = numbered(&cold[300..], 300);
    let chunk = 50;
    let mut added = 0;
    let mut largest_batch = 0;
    for (b, s) in rest.chunks(chunk).zip(stored_rest.chunks(chunk)) {
        let started = std::time::Instant::now();
        indexer.add_stored_no_wait(b, Some(s)).unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "the add waited for the flight"
        );
        largest_batch = largest_batch.max(s.iter().map(|j| j.len() + 64).sum::<usize>());
        added += b.len();
        if indexer.cold_stage_full() {
            break;
        }
    }
    assert!(indexer.cold_stage_full(), "the budget was never reached");
    assert!(
        added < rest.len(),
        "the stage filled before the records ran out"
    );
    assert!(!indexer.flight_landable(), "the flight is held");
    let (_, bytes) = indexer.staged();
    assert!(
        bytes > budget && bytes <= budget + largest_batch,
        "{bytes} against {budget} + {largest_batch}"
    );

    // This week's records, added while the stage is full, are searchable at the next commit.
    let (hot_batch, stored_hot) = numbered(&now, cold.len() as u64);
    indexer
        .add_stored_no_wait(&hot_batch, Some(&stored_hot))
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(indexer.commit_due().unwrap(), Some(299), "below the flight");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(uid_count(&index), 300 + now.len());
    assert!(indexer.cold_stage_full());

    // Released: the flight ends, a commit lands it without waiting and starts the next.
    faults.release();
    let landable = (0..1000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        indexer.flight_landable()
    });
    assert!(landable, "the flight never ended");
    indexer.commit_due().unwrap();
    let last = cold.len() + now.len() - 1;
    assert_eq!(indexer.commit().unwrap(), Some(last as u64));
    let all: Vec<AuditRecord> = cold[..300 + added].iter().chain(&now).cloned().collect();
    assert_eq!(uid_count(&index), all.len(), "each record once");
    assert_totals(&index, &all);
}

/// `count` records of the week `days_ago` days back, in time order, with ids of their own.
fn past_week(seed: u64, count: usize, days_ago: i64) -> Vec<AuditRecord> {
    let week = PartitionScheme::Week.key_for(Utc::now() - Duration::days(days_ago));
    let start = week.start() + Duration::days(1);
    corpus(seed, count)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = Some(format!("past-{days_ago}-{i:05}"));
            r.time = start + Duration::milliseconds(i as i64);
            r
        })
        .collect()
}

/// History brought in, one past week after another: once a week holds most of a due stage it
/// gets a writer of its own, so its later records skip the stage and are searchable at the next
/// commit; when the next past week takes over, that week's writer gives way to it, and this
/// week's writer (the least recently used) stays open throughout.
#[test]
fn a_busy_past_week_gets_a_writer_of_its_own_until_another_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let opts = staging(1 << 20, std::time::Duration::from_secs(3600));
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    let scheme = PartitionScheme::Week;
    let now = hot(50);
    let (hot_batch, stored_hot) = numbered(&now, 0);
    indexer.add_stored(&hot_batch, Some(&stored_hot)).unwrap();
    indexer.commit_due().unwrap();
    let this_week = scheme.key_for(Utc::now()).start;
    assert_eq!(indexer.open_writer_starts(), BTreeSet::from([this_week]));

    let mut all = now.clone();
    for (seed, days_ago) in [(71, 30), (72, 60)] {
        let week = past_week(seed, 3_000, days_ago);
        let start = scheme.key_for(week[0].time).start;
        assert!(week.iter().all(|r| scheme.key_for(r.time).start == start));
        let (batch, stored) = numbered(&week, all.len() as u64);
        all.extend(week);
        let mut staged_peak = 0;
        for (b, s) in batch.chunks(100).zip(stored.chunks(100)) {
            indexer.add_stored(b, Some(s)).unwrap();
            staged_peak = staged_peak.max(indexer.staged().0);
            indexer.commit_due().unwrap();
        }
        assert!(
            staged_peak > 0,
            "the week was staged before it was promoted"
        );
        assert!(!indexer.has_staged(), "the week's last records were staged");
        assert_eq!(
            indexer.open_writer_starts(),
            BTreeSet::from([start, this_week]),
            "{days_ago} days ago"
        );
        assert_eq!(
            index.indexed_through(),
            Some(all.len() as u64 - 1),
            "searchable at the commit"
        );
        assert_eq!(uid_count(&index), all.len(), "each record once");
    }
    assert_totals(&index, &all);
}

/// A spread load flushed in three flights leaves each past week three segments; once the index
/// is quiet, its idle refreshes compact them one week at a time into one segment each, the
/// merged-away files go, and every record reads back once.
#[test]
fn quiet_past_weeks_are_compacted_into_one_segment_each() {
    let dir = tempfile::tempdir().unwrap();
    let opts = staging(64 << 20, std::time::Duration::from_secs(3600));
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    let records = corpus(97, 900);
    let (batch, stored) = numbered(&records, 0);
    for (b, s) in batch.chunks(300).zip(stored.chunks(300)) {
        indexer.add_stored(b, Some(s)).unwrap();
        indexer.commit().unwrap();
    }
    let parts = index.shared().partitions_newest_first(None, None);
    assert!(parts.len() >= 8, "{} weeks", parts.len());
    let most = |parts: &[std::sync::Arc<partition::Partition>]| {
        parts
            .iter()
            .map(|p| {
                p.reload().unwrap();
                searched_segments(p)
            })
            .max()
            .unwrap()
    };
    assert_eq!(most(&parts), 3, "a segment per flight");
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while most(&parts) > 1 && Instant::now() < deadline {
        indexer.refresh().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    indexer.finish_closing_all();
    indexer.refresh().unwrap();
    assert_eq!(most(&parts), 1, "every past week compacted");
    for p in &parts {
        assert_eq!(
            unlisted_segment_files(&p.dir),
            Vec::<String>::new(),
            "{}",
            p.key.name()
        );
    }
    assert_eq!(uid_count(&index), records.len());
    for org in ORGS {
        let q = SearchQuery::default();
        let (got, _) = walk(&index, org, &q, 500, |_| {});
        assert_eq!(ids(&got), ids(&newest_first(&records, org, &q)));
    }
}
