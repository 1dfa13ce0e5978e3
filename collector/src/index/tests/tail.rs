//! The tail of followed orgs (`tail.rs`): what a walk by `seq` reads from it is what the index
//! holds — committed records only, in `seq` order, none missing when the tail evicted some or a
//! reader is behind it, none deleted by retention.

use super::*;
use crate::index::tail::TailRead;

/// `n` chained records of the current week over the corpus's orgs, `i` milliseconds before `now`.
fn newest(n: usize, now: DateTime<Utc>) -> Vec<AuditRecord> {
    let records: Vec<AuditRecord> = corpus(91, n)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = Some(format!("tail-{i:05}"));
            r.time = now - Duration::milliseconds(i as i64);
            r
        })
        .collect();
    chained(&records)
}

/// `org`'s records from `seq` `from` on, as stored, by a walk; and its bound.
fn walk(index: &AuditIndex, org: &str, from: u64, since: u64) -> (Vec<String>, u64) {
    let mut out = Vec::new();
    let bound = index
        .for_each_chained_stored(org, from, since, |_, json, from_tail| {
            // What the tail kept of a record is what its JSON says.
            if let Some(t) = from_tail {
                let r: AuditRecord = serde_json::from_slice(json).unwrap();
                assert_eq!(Some(t.seq), r.seq);
                assert_eq!(&*t.json, json);
                assert_eq!(t.head.id.as_deref(), r.id.as_deref());
                assert_eq!((t.head.time, t.head.received_at), (r.time, r.received_at));
            }
            out.push(String::from_utf8(json.to_vec()).unwrap());
            Ok(true)
        })
        .unwrap();
    (out, bound)
}

fn expected(records: &[AuditRecord], org: &str, from: u64, through: usize) -> Vec<String> {
    records[..through]
        .iter()
        .filter(|r| r.org_id == org && r.seq.unwrap() >= from)
        .map(AuditRecord::canonical_json)
        .collect()
}

fn served_by_tail(index: &AuditIndex, org: &str, from: u64) -> bool {
    matches!(
        index.shared().tail.read(org, from, u64::MAX, 1),
        TailRead::Records(_)
    )
}

#[test]
fn a_followed_org_reads_what_the_index_holds_through_eviction_and_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let opts = IndexOptions {
        // About 60 records: the tail evicts while a reader is behind.
        tail_bytes: 60 * 800,
        ..options()
    };
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    let records = newest(900, Utc::now());
    let (numbered, stored) = numbered(&records, 1);
    let org = "acme";
    let follow = index.follow_tail(org);
    // A reader as a stream is: from after what it read, from the bound it read below.
    let (mut next, mut since) = (1, 0);
    let mut tail_reads = 0;
    for (k, chunk) in (0..numbered.len())
        .collect::<Vec<_>>()
        .chunks(30)
        .enumerate()
    {
        let (a, b) = (chunk[0], chunk[chunk.len() - 1] + 1);
        indexer
            .add_stored(&numbered[a..b], Some(&stored[a..b]))
            .unwrap();
        // Added, not committed: not read.
        assert_eq!(
            walk(&index, org, next, since).0,
            expected(&records, org, next, a)
        );
        indexer.commit().unwrap();
        if k % 7 == 6 {
            // Behind by a few commits: past what the tail keeps.
            continue;
        }
        tail_reads += usize::from(served_by_tail(&index, org, next));
        let (got, bound) = walk(&index, org, next, since);
        assert_eq!(got, expected(&records, org, next, b), "chunk {k}");
        next += got.len() as u64;
        since = bound;
        // From the start: the index, whole.
        if k % 10 == 0 {
            assert_eq!(walk(&index, org, 1, 0).0, expected(&records, org, 1, b));
        }
    }
    assert!(tail_reads > 10, "{tail_reads} reads from the tail");
    assert!(index.shared().tail.bytes() <= 60 * 800);

    // The indexer drops what it added since its last commit: the tail forgets too, and the
    // records added again read once.
    let more = newest(60, Utc::now() + Duration::seconds(1))
        .into_iter()
        .map(|mut r| {
            r.id = Some(format!("again-{}", r.id.unwrap()));
            r
        })
        .collect::<Vec<_>>();
    let all: Vec<AuditRecord> = records.iter().chain(&more).cloned().collect();
    let rechained = chained(&all);
    let extra: Vec<(u64, AuditRecord)> = rechained[900..]
        .iter()
        .enumerate()
        .map(|(i, r)| (901 + i as u64, r.clone()))
        .collect();
    let extra_json: Vec<String> = extra.iter().map(|(_, r)| r.canonical_json()).collect();
    indexer.add_stored(&extra, Some(&extra_json)).unwrap();
    indexer.reset().unwrap();
    assert!(!served_by_tail(&index, org, next));
    indexer.add_stored(&extra, Some(&extra_json)).unwrap();
    indexer.commit().unwrap();
    let (got, _) = walk(&index, org, next, since);
    assert_eq!(got, expected(&rechained, org, next, 960));
    drop(follow);
    assert_eq!(index.shared().tail.bytes(), 0);
}

#[test]
fn records_retention_deletes_are_not_read_from_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    let now = Utc::now();
    let records = newest(300, now);
    let _follow = index.follow_tail("acme");
    for (i, r) in records.iter().enumerate() {
        indexer.add(i as u64 + 1, r).unwrap();
    }
    indexer.commit().unwrap();
    assert!(served_by_tail(&index, "acme", 1));
    // The later records are the older ones: deleting those older than 100 ms before `now`
    // leaves a chain whose newest seqs are gone.
    let cutoff = now - Duration::milliseconds(100);
    let name = index.partition_of(now).name().to_string();
    let purge = indexer
        .delete_older_than(&name, &[("acme".to_string(), cutoff)])
        .unwrap();
    assert!(purge.deleted["acme"] > 50, "{purge:?}");
    let kept: Vec<String> = records
        .iter()
        .filter(|r| r.org_id == "acme" && r.time >= cutoff)
        .map(AuditRecord::canonical_json)
        .collect();
    assert_eq!(walk(&index, "acme", 1, 0).0, kept);
    assert!(!served_by_tail(&index, "acme", 1));
}

/// A walk below an LSN (a cluster snapshot taken while its owner consumes on) sees each org's
/// chain up to the last record stored below it, from the tail and from the index alike.
#[test]
fn a_walk_below_an_lsn_sees_the_chain_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    let records = newest(300, Utc::now());
    let (numbered, stored) = numbered(&records, 1);
    let follow = index.follow_tail("acme");
    indexer.add_stored(&numbered, Some(&stored)).unwrap();
    indexer.commit().unwrap();
    assert!(
        served_by_tail(&index, "acme", 1),
        "acme is read from the tail"
    );
    assert!(!served_by_tail(&index, "globex", 1));
    for org in ["acme", "globex"] {
        for below in [1, 2, 57, 150, 301, u64::MAX] {
            let mut seqs = Vec::new();
            index
                .for_each_chained_below(org, 1, below, |r| {
                    seqs.push(r.seq.unwrap());
                    true
                })
                .unwrap();
            // LSN i + 1 is records[i].
            let through = (below.min(301) - 1) as usize;
            let want: Vec<u64> = records[..through]
                .iter()
                .filter(|r| r.org_id == org)
                .map(|r| r.seq.unwrap())
                .collect();
            assert_eq!(seqs, want, "{org} below LSN {below}");
            assert!(
                below < 57 || !want.is_empty(),
                "{org} has records below {below}"
            );
        }
    }
    drop(follow);
}
