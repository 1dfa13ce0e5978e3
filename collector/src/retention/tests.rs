//! The policy and the janitor over a real index: exact at the boundary (one second either side)
//! for the default, a config override and an API override; legal hold; whole partitions dropped
//! versus per-org deletes; space reclaimed; reads hiding what the janitor has not deleted yet;
//! and a WAL replay after a restart that brings nothing deleted back.

use super::*;
use crate::index::{AuditIndex, IndexOptions, Indexer, PartitionScheme, SearchQuery};
use crate::store::{IdLookup, IndexBatch, Store, StoreOptions};
use chrono::{DateTime, Duration, TimeZone, Utc};
use codestax_common::{Actor, ActorKind, AuditRecord, Metadata, Outcome};
use codestax_config::{CollectorConfig, OrgConfig, Plan};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Friday 2026-11-27 12:00 UTC, in ISO week 48 (which starts Monday 11-23).
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn record(org: &str, id: &str, time: DateTime<Utc>) -> AuditRecord {
    AuditRecord {
        id: Some(id.to_string()),
        org_id: org.to_string(),
        time,
        actor: Actor {
            id: "u-1".into(),
            name: Some("Ada".into()),
            email: Some("ada@example.com".into()),
            kind: ActorKind::User,
        },
        action: "scan.triggered".into(),
        category: "scan".into(),
        target: None,
        repository: Some("acme/api".into()),
        outcome: Outcome::Success,
        message: Some(format!(
            "record {id} of {org}, with some words to give it weight"
        )),
        metadata: Metadata::default(),
        schema_version: 1,
        received_at: Some(time),
        seq: None,
        prev_hash: None,
        provenance: None,
        hash: None,
    }
}

fn org(id: &str, plan: Plan, days: Option<u32>, legal_hold: bool) -> OrgConfig {
    OrgConfig {
        id: id.into(),
        name: None,
        plan,
        retention_days: days,
        legal_hold,
    }
}

/// Default 3 days; `ent` keeps 10 (config), `ent2` is enterprise without its own days, `held` is
/// under legal hold; anyone else (`free`) is on the free plan with the default.
fn config() -> CollectorConfig {
    let mut c = CollectorConfig::default();
    c.retention.default_days = 3;
    c.orgs = vec![
        org("ent", Plan::Enterprise, Some(10), false),
        org("ent2", Plan::Enterprise, None, false),
        org("held", Plan::Free, None, true),
    ];
    c
}

fn options() -> IndexOptions {
    IndexOptions {
        writer_memory_bytes: 16_000_000,
        writer_threads: 1,
        merge_threads: 1,
        max_open_writers: 2,
        partition: PartitionScheme::Week,
        ..IndexOptions::default()
    }
}

fn index_all(indexer: &mut Indexer, records: &[AuditRecord]) {
    let batch: Vec<(u64, AuditRecord)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64 + 1, r.clone()))
        .collect();
    indexer.add_batch(&batch).unwrap();
    indexer.commit().unwrap();
}

/// Ids of `org` a read at `now` returns (search with the retention floor), sorted.
fn visible(index: &AuditIndex, policy: &RetentionPolicy, org: &str) -> BTreeSet<String> {
    let q = policy.scope(org, &SearchQuery::default(), now());
    let page = index.search(org, &q, 1000, None).unwrap();
    assert_eq!(
        index.facets(org, &q, 10).unwrap().total,
        page.total,
        "facets and search agree"
    );
    page.entries.iter().map(|r| r.id().to_string()).collect()
}

/// Ids of `org` in the index, whatever their age.
fn stored(index: &AuditIndex, org: &str) -> BTreeSet<String> {
    let page = index
        .search(org, &SearchQuery::default(), 1000, None)
        .unwrap();
    page.entries.iter().map(|r| r.id().to_string()).collect()
}

fn ids(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let m = entry.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&entry.path())
        } else {
            m.len()
        };
    }
    total
}

#[test]
fn exact_at_the_boundary_with_holds_drops_and_per_org_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Arc::new(RetentionPolicy::open(&config(), dir.path()).unwrap());
    // An enterprise override through the API: 2 days for ent2.
    policy.set_days("ent2", 2).unwrap();
    let second = Duration::seconds(1);
    let free_cut = now() - Duration::days(3); // 11-24 12:00, week 48
    let ent_cut = now() - Duration::days(10); // 11-17 12:00, week 47
    let ent2_cut = now() - Duration::days(2); // 11-25 12:00, week 48
    let records = vec![
        // Week 45: everyone's records have expired, but `held` is under legal hold.
        record("free", "f-w45", at(2026, 11, 3, 8, 0, 0)),
        record("ent", "e-w45", at(2026, 11, 4, 8, 0, 0)),
        record("held", "h-w45", at(2026, 11, 5, 8, 0, 0)),
        // Week 46: expired for every org present: dropped whole.
        record("free", "f-w46", at(2026, 11, 10, 8, 0, 0)),
        record("ent", "e-w46", at(2026, 11, 12, 8, 0, 0)),
        // Week 47: ent's boundary, and free's records, all expired.
        record("ent", "e-before", ent_cut - second),
        record("ent", "e-at", ent_cut),
        record("ent", "e-after", ent_cut + second),
        record("free", "f-w47", at(2026, 11, 20, 8, 0, 0)),
        // Week 48: free's and ent2's boundaries.
        record("free", "f-before", free_cut - second),
        record("free", "f-at", free_cut),
        record("free", "f-after", free_cut + second),
        record("ent2", "e2-before", ent2_cut - second),
        record("ent2", "e2-at", ent2_cut),
        record("ent2", "e2-after", ent2_cut + second),
        record("ent", "e-w48", at(2026, 11, 25, 8, 0, 0)),
    ];
    let index_dir = dir.path().join("index");
    let (index, mut indexer) = AuditIndex::open(&index_dir, options()).unwrap();
    index_all(&mut indexer, &records);

    let want_free = ids(&["f-at", "f-after"]);
    let want_ent = ids(&["e-at", "e-after", "e-w48"]);
    let want_ent2 = ids(&["e2-at", "e2-after"]);
    let want_held = ids(&["h-w45"]);
    // Reads hide the expired records before the janitor has run; all are still stored.
    assert_eq!(visible(&index, &policy, "free"), want_free);
    assert_eq!(visible(&index, &policy, "ent"), want_ent);
    assert_eq!(visible(&index, &policy, "ent2"), want_ent2);
    assert_eq!(visible(&index, &policy, "held"), want_held);
    assert_eq!(stored(&index, "free").len(), 6);
    // `get` applies the same floor (the API compares the record's time with it).
    let floor = policy.scope("free", &SearchQuery::default(), now()).floor;
    let before = index.get("free", "f-before").unwrap().unwrap();
    let at_cut = index.get("free", "f-at").unwrap().unwrap();
    assert!(floor.is_some_and(|f| before.time < f && at_cut.time >= f));

    let janitor = Janitor::new(policy.clone(), index.clone());
    let report = janitor.run(&mut indexer, now()).unwrap();
    assert_eq!(
        report.deleted,
        BTreeMap::from([
            ("ent".to_string(), 3),
            ("ent2".to_string(), 1),
            ("free".to_string(), 4)
        ])
    );
    assert_eq!(report.partitions_dropped, vec!["2026-W46".to_string()]);
    assert_eq!(
        report.partitions_purged,
        vec!["2026-W45".to_string(), "2026-W47".into(), "2026-W48".into()]
    );
    assert!(!index_dir.join("2026-W46").exists());
    assert_eq!(
        report.oldest,
        BTreeMap::from([
            ("ent".to_string(), ent_cut),
            ("ent2".to_string(), ent2_cut),
            ("free".to_string(), free_cut),
            ("held".to_string(), at(2026, 11, 5, 8, 0, 0)),
        ])
    );
    // Exactly the records inside their window are left, and reads did not change.
    assert_eq!(stored(&index, "free"), want_free);
    assert_eq!(stored(&index, "ent"), want_ent);
    assert_eq!(stored(&index, "ent2"), want_ent2);
    assert_eq!(stored(&index, "held"), want_held);
    assert_eq!(visible(&index, &policy, "free"), want_free);
    assert!(
        index
            .contains("free", "f-at", at_cut.time.timestamp_micros())
            .unwrap()
    );
    assert!(
        !index
            .contains("free", "f-before", before.time.timestamp_micros())
            .unwrap()
    );

    // A second run finds nothing to do.
    let again = janitor.run(&mut indexer, now()).unwrap();
    assert_eq!(again.total_deleted(), 0);
    assert!(again.partitions_dropped.is_empty() && again.partitions_purged.is_empty());
    assert_eq!(again.oldest, report.oldest);

    // One second later, the records at the cutoffs expire, and only they.
    let later = janitor.run(&mut indexer, now() + second).unwrap();
    assert_eq!(
        later.deleted,
        BTreeMap::from([
            ("ent".to_string(), 1),
            ("ent2".to_string(), 1),
            ("free".to_string(), 1)
        ])
    );
    assert_eq!(stored(&index, "free"), ids(&["f-after"]));
    assert_eq!(stored(&index, "ent"), ids(&["e-after", "e-w48"]));
    assert_eq!(stored(&index, "ent2"), ids(&["e2-after"]));
    assert_eq!(
        stored(&index, "held"),
        want_held,
        "legal hold: nothing deleted"
    );

    // Records keep flowing into a partition the janitor worked on.
    indexer
        .add(100, &record("free", "f-new", now() - Duration::hours(1)))
        .unwrap();
    indexer.commit().unwrap();
    assert!(stored(&index, "free").contains("f-new"));
}

#[test]
fn space_is_reclaimed_by_per_org_deletes_and_partition_drops() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.retention.default_days = 1;
    let policy = Arc::new(RetentionPolicy::open(&c, dir.path()).unwrap());
    let index_dir = dir.path().join("index");
    let (index, mut indexer) = AuditIndex::open(&index_dir, options()).unwrap();
    // Week 48: `free` (1 day) mostly expired, `ent` (10 days) all kept. Week 47: free only.
    let n = 6_000;
    let mut records = Vec::with_capacity(2 * n + 2_000);
    for i in 0..n {
        let t = at(2026, 11, 23, 0, 0, 0) + Duration::seconds(i as i64 * 40);
        records.push(record("free", &format!("f{i}"), t));
        records.push(record("ent", &format!("e{i}"), t));
    }
    for i in 0..2_000 {
        records.push(record(
            "free",
            &format!("old{i}"),
            at(2026, 11, 17, 0, 0, 0) + Duration::seconds(i),
        ));
    }
    let batch: Vec<(u64, AuditRecord)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64 + 1, r.clone()))
        .collect();
    // Several commits, so the partition has several segments.
    for chunk in batch.chunks(2_500) {
        indexer.add_batch(chunk).unwrap();
        indexer.commit().unwrap();
    }
    let w47 = index_dir.join("2026-W47");
    let w48 = index_dir.join("2026-W48");
    let w48_before = dir_bytes(&w48);
    assert!(dir_bytes(&w47) > 0);
    let cutoff = now() - Duration::days(1);
    let expired_free = records
        .iter()
        .filter(|r| r.org_id == "free" && r.time < cutoff)
        .count() as u64;

    let started = Instant::now();
    let report = Janitor::new(policy.clone(), index.clone())
        .run(&mut indexer, now())
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.deleted["free"], expired_free);
    assert!(!report.deleted.contains_key("ent"));
    assert_eq!(report.partitions_dropped, vec!["2026-W47".to_string()]);
    assert!(!w47.exists(), "a dropped partition's directory is gone");
    let w48_after = dir_bytes(&w48);
    let kept = 2 * n as u64 - (expired_free - 2_000);
    eprintln!(
        "janitor: deleted {} records ({} by partition drop, {} per org) in {took:?}; \
         week 48 {w48_before} -> {w48_after} bytes, {kept} records left",
        report.total_deleted(),
        2_000,
        expired_free - 2_000,
    );
    // Most of free's half of week 48 is gone: the bytes must drop well below the start.
    let kept_share = kept as f64 / (2 * n) as f64;
    assert!(
        (w48_after as f64) < w48_before as f64 * (kept_share + 0.15),
        "{w48_before} -> {w48_after} bytes with {kept_share:.2} of the records kept"
    );
    assert_eq!(report.bytes_after, w48_after);
    assert_eq!(index.stats().unwrap().docs, kept);
}

#[test]
fn a_partition_emptied_by_per_org_deletes_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Arc::new(RetentionPolicy::open(&config(), dir.path()).unwrap());
    let index_dir = dir.path().join("index");
    let (index, mut indexer) = AuditIndex::open(&index_dir, options()).unwrap();
    // The cutoff (11-24 12:00) falls inside week 48: no whole drop, but nothing is left after.
    let cut = now() - Duration::days(3);
    index_all(
        &mut indexer,
        &[
            record("free", "a", cut - Duration::seconds(2)),
            record("free", "b", cut - Duration::seconds(1)),
        ],
    );
    let report = Janitor::new(policy, index.clone())
        .run(&mut indexer, now())
        .unwrap();
    assert_eq!(report.deleted["free"], 2);
    assert_eq!(report.partitions_purged, vec!["2026-W48".to_string()]);
    assert!(report.oldest.is_empty());
    assert!(!index_dir.join("2026-W48").exists());
    assert_eq!(index.stats().unwrap().partitions, 0);
    // A record for that week recreates it.
    indexer.add(10, &record("free", "c", now())).unwrap();
    indexer.commit().unwrap();
    let at = now().timestamp_micros();
    assert!(index.contains("free", "c", at).unwrap());
}

/// Opens the index (with `options`) and a store over `dir` as the collector does; returns the
/// WAL replay too.
fn open_all(
    dir: &Path,
    options: IndexOptions,
) -> (
    AuditIndex,
    Indexer,
    Store,
    Vec<(u64, AuditRecord)>,
    mpsc::Receiver<IndexBatch>,
) {
    let (index, indexer) = AuditIndex::open(&dir.join("index"), options).unwrap();
    let mut hashes = Vec::new();
    index.for_each_uid_hash(|h| hashes.push(h)).unwrap();
    let (sink, batches) = mpsc::channel(16);
    let (store, replay) = Store::open(
        &dir.join("wal"),
        StoreOptions::default(),
        Arc::new(index.clone()) as Arc<dyn IdLookup>,
        hashes,
        index.indexed_through(),
        // As the collector does: the higher of the index's heads and retention's checkpoints.
        ChainCheckpoints::open(dir)
            .unwrap()
            .merge_heads(index.chain_heads().unwrap()),
        sink,
        Default::default(),
    )
    .unwrap();
    (index, indexer, store, replay, batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_replay_after_a_restart_does_not_bring_deleted_records_back() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Arc::new(RetentionPolicy::open(&config(), dir.path()).unwrap());
    let (index, mut indexer, store, replay, mut batches) = open_all(dir.path(), options());
    assert!(replay.is_empty());
    let real_now = Utc::now();
    // Records older than the window are accepted (they may be late) — and expired at once.
    let expired: Vec<AuditRecord> = (0..50)
        .map(|i| record("free", &format!("old{i}"), real_now - Duration::days(5)))
        .collect();
    let fresh: Vec<AuditRecord> = (0..50)
        .map(|i| record("free", &format!("new{i}"), real_now - Duration::hours(1)))
        .collect();
    store.submit(expired.clone()).await.unwrap();
    store.submit(fresh.clone()).await.unwrap();
    while let Ok(batch) = batches.try_recv() {
        indexer.add_batch(&batch.records).unwrap();
    }
    // The janitor commits what was added itself, then deletes.
    let report = Janitor::new(policy.clone(), index.clone())
        .run(&mut indexer, Utc::now())
        .unwrap();
    assert_eq!(report.deleted["free"], 50);
    assert_eq!(index.indexed_through(), Some(99));
    store.mark_indexed_through(99);
    // Stop without another commit, as a kill after the janitor's run would.
    store.close().await;
    drop((index, indexer, batches));

    let (index, mut indexer, store, replay, _batches) = open_all(dir.path(), options());
    assert!(
        replay.is_empty(),
        "the replay starts after indexed_through: {} records",
        replay.len()
    );
    indexer.add_batch(&replay).unwrap();
    indexer.commit().unwrap();
    assert_eq!(index.stats().unwrap().docs, 50);
    assert_eq!(stored(&index, "free").len(), 50);
    for r in &expired {
        let at = r.time.timestamp_micros();
        assert!(!index.contains("free", r.id(), at).unwrap());
    }
    // The same expired record sent again is stored again (the index no longer knows it), stays
    // invisible, and goes at the next run.
    let admissions = store.submit(vec![expired[0].clone()]).await.unwrap();
    assert!(matches!(
        admissions[0],
        crate::store::Admission::Stored { .. }
    ));
    store.close().await;
}

/// Stores `records` through the store (which chains them) and indexes them.
async fn store_and_index(
    store: &Store,
    indexer: &mut Indexer,
    batches: &mut mpsc::Receiver<IndexBatch>,
    records: Vec<AuditRecord>,
) {
    store.submit(records).await.unwrap();
    while let Ok(batch) = batches.try_recv() {
        indexer.add_batch(&batch.records).unwrap();
    }
    indexer.commit().unwrap();
}

/// Ids and seqs of `org` in the index.
fn seqs(index: &AuditIndex, org: &str) -> BTreeMap<String, u64> {
    let page = index
        .search(org, &SearchQuery::default(), 1000, None)
        .unwrap();
    page.entries
        .iter()
        .map(|r| (r.id().to_string(), r.seq.unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_verifies_and_continues_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Arc::new(RetentionPolicy::open(&config(), dir.path()).unwrap());
    let (index, mut indexer, store, _, mut batches) = open_all(dir.path(), options());
    let real_now = Utc::now();
    let old = real_now - Duration::days(5);
    let new = real_now - Duration::hours(1);
    // `free`: 3 old, 3 new, a late arrival (old time, seq 7), 2 new. `gone`: only old records.
    let mut free = Vec::new();
    for i in 0..3 {
        free.push(record("free", &format!("old{i}"), old));
    }
    for i in 0..3 {
        free.push(record("free", &format!("new{i}"), new));
    }
    free.push(record("free", "late", old - Duration::days(1)));
    for i in 3..5 {
        free.push(record("free", &format!("new{i}"), new));
    }
    for r in free {
        store_and_index(&store, &mut indexer, &mut batches, vec![r]).await;
    }
    let gone: Vec<AuditRecord> = (0..4)
        .map(|i| record("gone", &format!("g{i}"), old))
        .collect();
    store_and_index(&store, &mut indexer, &mut batches, gone).await;
    assert_eq!(seqs(&index, "free")["late"], 7);
    assert_eq!(seqs(&index, "gone").len(), 4);

    let report = Janitor::new(policy.clone(), index.clone())
        .run(&mut indexer, Utc::now())
        .unwrap();
    assert_eq!(report.deleted["free"], 4);
    assert_eq!(report.deleted["gone"], 4);
    assert_eq!(
        report.checkpoints_saved,
        vec!["free".to_string(), "gone".into()]
    );
    let free_cp = policy.checkpoints().get("free");
    assert_eq!(free_cp.checkpoint.seq, 3);
    assert_eq!(
        free_cp.tombstones.iter().map(|t| t.seq).collect::<Vec<_>>(),
        vec![7]
    );
    // The tombstone keeps the deleted record's time: before the cutoff, so retention's doing.
    assert_eq!(
        free_cp.tombstones[0].time,
        Some(codestax_common::time::truncate_to_micros(
            old - Duration::days(1)
        ))
    );
    assert_eq!(policy.checkpoints().get("gone").checkpoint.seq, 4);
    // What remains verifies from the checkpoint (and not without it).
    let report = index.verify_chain("free", Some(&free_cp)).unwrap();
    assert_eq!(report.error, None);
    assert_eq!(
        (
            report.summary.records,
            report.summary.first_seq,
            report.summary.last_seq
        ),
        (5, Some(4), Some(9))
    );
    assert_eq!(
        index.verify_chain("free", None).unwrap().error.unwrap().seq,
        Some(1)
    );
    // Without its tombstone, the gap left by the late arrival is named.
    let mut no_tomb = free_cp.clone();
    no_tomb.tombstones.clear();
    let err = index.verify_chain("free", Some(&no_tomb)).unwrap();
    assert_eq!(err.error.unwrap().seq, Some(7));
    // A second run deletes nothing and changes nothing.
    let again = Janitor::new(policy.clone(), index.clone())
        .run(&mut indexer, Utc::now())
        .unwrap();
    assert_eq!(again.total_deleted(), 0);
    assert!(again.checkpoints_saved.is_empty());
    let through = index.indexed_through().unwrap();
    store.mark_indexed_through(through);
    store.close().await;
    drop((index, indexer, batches, policy));

    // Restart: `gone` has nothing in the index; its chain continues at 5, not 1.
    let policy = Arc::new(RetentionPolicy::open(&config(), dir.path()).unwrap());
    let (index, mut indexer, store, replay, mut batches) = open_all(dir.path(), options());
    assert!(replay.is_empty());
    let more = vec![
        record("gone", "g-new", Utc::now()),
        record("free", "new-after", Utc::now()),
    ];
    store_and_index(&store, &mut indexer, &mut batches, more).await;
    assert_eq!(
        seqs(&index, "gone"),
        BTreeMap::from([("g-new".to_string(), 5)])
    );
    assert_eq!(seqs(&index, "free")["new-after"], 10);
    for org in ["gone", "free"] {
        let report = index
            .verify_chain(org, Some(&policy.checkpoints().get(org)))
            .unwrap();
        assert_eq!(report.error, None, "{org}");
    }
    let gone = index
        .verify_chain("gone", Some(&policy.checkpoints().get("gone")))
        .unwrap();
    assert_eq!(
        (
            gone.summary.records,
            gone.summary.first_seq,
            gone.summary.last_seq
        ),
        (1, Some(5), Some(5))
    );
    store.close().await;
}

/// A janitor run on a disk that fails (EIO on every partition's writes, which no tmpfs gives)
/// fails whole: nothing is deleted, what is stored stays readable and its chain verifies, and
/// the next run, once writes go through, deletes what has expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_janitor_run_on_a_failing_disk_changes_nothing_and_the_next_run_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Arc::new(RetentionPolicy::open(&config(), dir.path()).unwrap());
    let faults = crate::index::faults::Faults::default();
    let (index, mut indexer, store, _, mut batches) = open_all(
        dir.path(),
        IndexOptions {
            directory: Some(faults.hook(|_| true)),
            ..options()
        },
    );
    // One partition: `free`'s records there have expired, `ent`'s (10 days) have not, so the
    // run deletes inside it (a tantivy write) rather than dropping it whole.
    let old = Utc::now() - Duration::days(5);
    let mut records = Vec::new();
    for i in 0..3 {
        records.push(record("free", &format!("old{i}"), old));
        records.push(record("ent", &format!("e{i}"), old));
    }
    records.push(record("free", "new", Utc::now()));
    store_and_index(&store, &mut indexer, &mut batches, records).await;
    let janitor = Janitor::new(policy.clone(), index.clone());

    const EIO: i32 = 5;
    faults.arm(EIO);
    let err = janitor.run(&mut indexer, Utc::now()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Input/output error"), "{text}");
    assert_eq!(
        stored(&index, "free"),
        ids(&["old0", "old1", "old2", "new"])
    );
    assert_eq!(stored(&index, "ent").len(), 3);
    for org in ["free", "ent"] {
        let report = index
            .verify_chain(org, Some(&policy.checkpoints().get(org)))
            .unwrap();
        assert_eq!(report.error, None, "{org}");
    }

    // Writes go through again: the next run deletes, and the index takes records.
    faults.disarm();
    let report = janitor.run(&mut indexer, Utc::now()).unwrap();
    assert_eq!(report.deleted, BTreeMap::from([("free".to_string(), 3)]));
    assert_eq!(stored(&index, "free"), ids(&["new"]));
    assert_eq!(stored(&index, "ent").len(), 3);
    let report = index
        .verify_chain("free", Some(&policy.checkpoints().get("free")))
        .unwrap();
    assert_eq!(report.error, None);
    store_and_index(
        &store,
        &mut indexer,
        &mut batches,
        vec![record("free", "newer", Utc::now())],
    )
    .await;
    assert_eq!(stored(&index, "free"), ids(&["new", "newer"]));
    store.close().await;
}

/// Informal timings, in release: `CODESTAX_BENCH_RECORDS=400000 cargo test --release -p
/// codestax-collector --lib bench_janitor -- --ignored --nocapture`. Nine weekly partitions: the
/// oldest holds only `free` records (dropped whole); the eight others hold `free` (default 21
/// days) and `ent` (365 days) half and half, so the older ones get per-org deletes and merges.
#[test]
#[ignore]
fn bench_janitor_at_scale() {
    let n: usize = std::env::var("CODESTAX_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.retention.default_days = 21;
    c.orgs[0].retention_days = Some(365);
    let policy = Arc::new(RetentionPolicy::open(&c, dir.path()).unwrap());
    let index_dir = dir.path().join("index");
    let opts = IndexOptions {
        writer_memory_bytes: 64_000_000,
        ..options()
    };
    let (index, mut indexer) = AuditIndex::open(&index_dir, opts).unwrap();
    // Nine weeks ending at now(): week 40's Monday to week 48's Friday noon.
    let start = at(2026, 9, 28, 0, 0, 0);
    let span = (now() - start).num_microseconds().unwrap();
    let week = Duration::days(7).num_microseconds().unwrap();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let offset = span / n as i64 * i as i64;
        let org = if offset < week || i % 2 == 0 {
            "free"
        } else {
            "ent"
        };
        let t = start + Duration::microseconds(offset);
        batch.push((i as u64 + 1, record(org, &format!("r{i:09}"), t)));
        if batch.len() == 10_000 {
            indexer.add_batch(&batch).unwrap();
            batch.clear();
            if i % 50_000 < 10_000 {
                indexer.commit().unwrap();
            }
        }
    }
    indexer.add_batch(&batch).unwrap();
    indexer.commit().unwrap();
    let parts = index.partitions().unwrap();
    eprintln!(
        "indexed {n} records in {:?}: {:?}",
        started.elapsed(),
        parts
            .iter()
            .map(|p| (p.name.as_str(), p.docs, p.bytes_on_disk))
            .collect::<Vec<_>>()
    );

    let oldest = &parts[0];
    let t = Instant::now();
    assert!(indexer.delete_partition(&oldest.name).unwrap());
    eprintln!(
        "drop partition {} ({} records, {} bytes): {:?}",
        oldest.name,
        oldest.docs,
        oldest.bytes_on_disk,
        t.elapsed()
    );
    let mixed = &parts[1];
    let cutoff = policy.for_org("free").expires_before(now()).unwrap();
    let t = Instant::now();
    let purge = indexer
        .delete_older_than(&mixed.name, &[("free".to_string(), cutoff)])
        .unwrap();
    eprintln!(
        "per-org delete in {} ({} records): {:?} deleted, {} -> {} bytes, {:?}",
        mixed.name,
        mixed.docs,
        purge.deleted,
        purge.bytes_before,
        purge.bytes_after,
        t.elapsed()
    );
    let janitor = Janitor::new(policy, index.clone());
    let report = janitor.run(&mut indexer, now()).unwrap();
    eprintln!(
        "janitor run: deleted {:?}, dropped {:?}, purged {:?}, {} -> {} bytes, {:?}",
        report.deleted,
        report.partitions_dropped,
        report.partitions_purged,
        report.bytes_before,
        report.bytes_after,
        report.duration
    );
    let idle = janitor.run(&mut indexer, now()).unwrap();
    assert_eq!(idle.total_deleted(), 0);
    eprintln!(
        "janitor run with nothing to delete ({} records): {:?}",
        index.stats().unwrap().docs,
        idle.duration
    );
}
