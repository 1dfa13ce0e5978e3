//! The cluster metastore against a real PostgreSQL (started by the harness): migrations that
//! nodes run together, the shard count fixed at creation, leases taken by compare-and-set,
//! taken over after `lease_ttl` under a higher epoch, a stale epoch that can neither renew nor
//! publish, lease keepers that spread shards evenly and take over a dead node's, and old
//! snapshot rows trimmed to the newest by the shard's holder only.
//! No PostgreSQL: SKIPPED outside CI, a failure in CI.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use codestax_collector::cluster::{
    KeeperSettings, Lease, LeaseKeeper, Metastore, MetastoreError, OfferOutcome, SCHEMA_VERSION,
    SnapshotRecord, StreamChanges, StreamOfferRow, shard_of,
};
use codestax_harness::Postgres;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "metastore-test";
const TTL: Duration = Duration::from_secs(1);
/// A lease the test acts under before a takeover: nothing renews it, and under load the
/// queries made under it took over `TTL` (its writes then failed or did nothing). It is
/// renewed for `TTL` (see `short`) when another node is to take it over.
const HOLD: Duration = Duration::from_secs(30);

/// A server, or None (SKIPPED). The temp dir must outlive the server.
fn server(test: &str) -> Option<(tempfile::TempDir, Postgres)> {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start_or_skip(test, dir.path(), PASSWORD)?;
    Some((dir, pg))
}

async fn open(pg: &Postgres, shards: u32) -> Metastore {
    let mut m = Metastore::connect(&pg.url(), Some(PASSWORD)).await.unwrap();
    m.migrate().await.unwrap();
    m.init_shards(shards).await.unwrap();
    m
}

/// `lease` renewed for only `TTL`, so that another node can take it over soon.
async fn short(m: &Metastore, lease: &Lease) -> Lease {
    m.renew(lease, TTL).await.unwrap().expect("still held")
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_migrate_together_and_the_shard_count_is_fixed() {
    let Some((_dir, pg)) = server("metastore migrations") else {
        return;
    };
    let url = pg.url();
    let runs = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut m = Metastore::connect(&url, Some(PASSWORD)).await.unwrap();
            let version = m.migrate().await.unwrap();
            m.init_shards(8).await.unwrap();
            version
        })
    });
    for run in runs {
        assert_eq!(run.await.unwrap(), SCHEMA_VERSION);
    }
    let mut m = Metastore::connect(&url, Some(PASSWORD)).await.unwrap();
    assert_eq!(
        m.migrate().await.unwrap(),
        SCHEMA_VERSION,
        "a second migration is a no-op"
    );
    let err = m.init_shards(16).await.unwrap_err();
    assert!(
        matches!(
            err,
            MetastoreError::ShardsMismatch {
                configured: 16,
                cluster: 8
            }
        ),
        "{err}"
    );
    assert_eq!(m.lease_states().await.unwrap().len(), 8);
    let wrong = Metastore::connect(&url, Some("wrong")).await;
    assert!(matches!(wrong, Err(MetastoreError::Connect { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_is_won_once_taken_over_after_its_ttl_and_the_stale_epoch_is_fenced() {
    let Some((_dir, pg)) = server("metastore leases") else {
        return;
    };
    let a = open(&pg, 4).await;
    let b = open(&pg, 4).await;

    // Both contend for shard 0 at once: exactly one wins. (HOLD: under load the second
    // attempt may come more than a TTL after the first.)
    let (ra, rb) = tokio::join!(a.acquire(0, "a", HOLD), b.acquire(0, "b", HOLD));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.is_some() != rb.is_some(), "{ra:?} {rb:?}");
    let (winner, loser, old, loser_name) = match (ra, rb) {
        (Some(l), None) => (&a, &b, l, "b"),
        (None, Some(l)) => (&b, &a, l, "a"),
        _ => unreachable!(),
    };
    assert_eq!(old.epoch, 1);
    assert_eq!(winner.owner(0).await.unwrap(), Some((old.owner.clone(), 1)));
    let old = winner.renew(&old, HOLD).await.unwrap().expect("renewed");
    let snapshot = SnapshotRecord {
        stream_seq: 10,
        location: "s3://b/p/0/1".into(),
        chain_heads: serde_json::json!({"acme": 3}),
    };
    winner.publish_snapshot(&old, &snapshot).await.unwrap();
    assert!(loser.acquire(0, loser_name, TTL).await.unwrap().is_none());

    // The winner renews for the TTL, then stops renewing (paused); the lease expires and only
    // then can the other node take it, under a higher epoch.
    let old = short(winner, &old).await;
    let new = loop {
        if let Some(l) = loser.acquire(0, loser_name, HOLD).await.unwrap() {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // `valid_until` is the renewal's send time plus the TTL, never after the database's
    // expiry: a takeover seen before it came before the TTL.
    assert!(
        !old.is_valid(),
        "taken before the TTL: the old owner's own clock says its lease still runs"
    );
    assert_eq!(new.epoch, 2);

    // The zombie wakes up: it can neither renew, nor publish, nor release.
    assert_eq!(winner.renew(&old, TTL).await.unwrap(), None);
    let err = winner
        .publish_snapshot(
            &old,
            &SnapshotRecord {
                stream_seq: 99,
                ..snapshot.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MetastoreError::Fenced {
                shard: 0,
                epoch: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(!winner.release(&old).await.unwrap());
    // The new owner can, and its snapshot is the latest.
    loser
        .publish_snapshot(
            &new,
            &SnapshotRecord {
                stream_seq: 20,
                ..snapshot
            },
        )
        .await
        .unwrap();
    assert_eq!(
        loser.latest_snapshot(0).await.unwrap().map(|s| (s.0, s.1)),
        Some((2, 20))
    );
    assert_eq!(
        winner.owner(0).await.unwrap(),
        Some((loser_name.to_string(), 2))
    );
}

fn keeper_settings(pg: &Postgres, node: &str, shards: u32) -> KeeperSettings {
    KeeperSettings {
        node_id: node.into(),
        advertise_url: format!("http://{node}.invalid:8470"),
        shards,
        lease_ttl: TTL,
        postgres_url: pg.url(),
        postgres_password: Some(PASSWORD.into()),
    }
}

/// Waits until `check` holds for the watch's value.
async fn wait_held(
    rx: &mut tokio::sync::watch::Receiver<codestax_collector::cluster::Held>,
    what: &str,
    check: impl Fn(&codestax_collector::cluster::Held) -> bool,
) -> codestax_collector::cluster::Held {
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|h| check(h)))
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 20 s"))
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn keepers_spread_shards_evenly_and_a_survivor_takes_over_a_dead_nodes_shards() {
    let Some((_dir, pg)) = server("lease keepers") else {
        return;
    };
    let shards = 8;
    let (ka, mut rx_a) =
        LeaseKeeper::new(keeper_settings(&pg, "a", shards), open(&pg, shards).await);
    let (kb, mut rx_b) =
        LeaseKeeper::new(keeper_settings(&pg, "b", shards), open(&pg, shards).await);
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let task_a = tokio::spawn(ka.run(stop_a.clone()));
    let task_b = tokio::spawn(kb.run(stop_b.clone()));

    let held_a = wait_held(&mut rx_a, "a holds 4", |h| h.len() == 4).await;
    let held_b = wait_held(&mut rx_b, "b holds 4", |h| h.len() == 4).await;
    let a_shards: BTreeSet<u32> = held_a.keys().copied().collect();
    let b_shards: BTreeSet<u32> = held_b.keys().copied().collect();
    // Disjoint but for a lease of a's that lapsed (a round late by over the TTL under load)
    // before b took the shard, which was before now. a's latest renewal of it counts.
    let latest_a = rx_a.borrow().clone();
    let now = Instant::now();
    for s in a_shards.intersection(&b_shards) {
        let lease = latest_a
            .get(s)
            .filter(|l| l.epoch == held_a[s].epoch)
            .unwrap_or(&held_a[s]);
        assert!(
            lease.valid_until <= now,
            "both hold shard {s}: {a_shards:?} {b_shards:?}"
        );
    }

    // a dies without releasing anything (its task is gone, like a kill -9).
    task_a.abort();
    let _ = task_a.await;
    // What a last published: a renewal it made after this only moves the expiry later.
    let last_a = rx_a.borrow().clone();
    let a_deadline = a_shards
        .iter()
        .map(|s| last_a.get(s).unwrap_or(&held_a[s]).valid_until)
        .max()
        .unwrap();
    let all = wait_held(&mut rx_b, "b holds all 8", |h| h.len() == 8).await;
    assert!(
        Instant::now() >= a_deadline,
        "took over before a's leases expired"
    );
    for shard in &a_shards {
        assert!(
            all[shard].epoch > held_a[shard].epoch,
            "shard {shard}: epoch {} after {}",
            all[shard].epoch,
            held_a[shard].epoch
        );
    }

    // A clean stop releases and leaves: a new node gets every shard.
    stop_b.cancel();
    task_b.await.unwrap();
    let (kc, mut rx_c) =
        LeaseKeeper::new(keeper_settings(&pg, "c", shards), open(&pg, shards).await);
    let stop_c = CancellationToken::new();
    let task_c = tokio::spawn(kc.run(stop_c.clone()));
    wait_held(&mut rx_c, "c holds all 8", |h| h.len() == 8).await;
    stop_c.cancel();
    task_c.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metastore_outage_drops_leases_at_their_deadline_and_they_come_back_after_it() {
    let Some((_dir, mut pg)) = server("metastore outage") else {
        return;
    };
    let shards = 4;
    let (keeper, mut rx) =
        LeaseKeeper::new(keeper_settings(&pg, "a", shards), open(&pg, shards).await);
    let stop = CancellationToken::new();
    let task = tokio::spawn(keeper.run(stop.clone()));
    let before = wait_held(&mut rx, "a holds all 4", |h| h.len() == 4).await;

    // PostgreSQL goes away: renewals fail, and the node stops acting for its shards once their
    // leases could have passed on (their local deadline), not before.
    pg.stop().unwrap();
    let stopped = Instant::now();
    wait_held(&mut rx, "leases dropped during the outage", |h| {
        h.is_empty()
    })
    .await;
    let latest_deadline = before.values().map(|l| l.valid_until).max().unwrap();
    assert!(
        Instant::now() >= latest_deadline,
        "dropped before the deadline ({:?} after the stop)",
        stopped.elapsed()
    );

    // It returns: the keeper connects again and takes the shards back under new epochs.
    pg.restart().unwrap();
    let after = wait_held(&mut rx, "leases back after the outage", |h| h.len() == 4).await;
    for (shard, lease) in &after {
        assert!(lease.epoch > before[shard].epoch, "shard {shard}");
    }
    stop.cancel();
    task.await.unwrap();
}

/// Sealed records `1..=n` of `org`, one chain.
fn sealed(org: &str, n: u64) -> Vec<codestax_common::AuditRecord> {
    use codestax_common::chain::{ChainHead, Unsealed};
    let mut prev = ChainHead::genesis();
    (1..=n)
        .map(|seq| {
            let mut r: codestax_common::AuditRecord = serde_json::from_value(serde_json::json!({
                "org_id": org, "id": format!("{org}-{seq}"), "action": "auth.login",
                "actor": {"id": "ada"}, "time": "2026-12-04T12:00:00Z",
                "received_at": "2026-12-04T12:00:01Z"
            }))
            .unwrap();
            let seal = Unsealed::new(&r).seal(seq, &prev.hash);
            (r.seq, r.prev_hash, r.hash) =
                (Some(seq), Some(prev.hash.clone()), Some(seal.hash.clone()));
            prev = ChainHead {
                seq,
                hash: seal.hash,
            };
            r
        })
        .collect()
}

#[test]
fn snapshots_are_published_incrementally_under_the_lease_and_a_zombies_is_refused() {
    use codestax_collector::cluster::{Manifest, MetastoreLink, SnapshotError, SnapshotStore};
    let what = "metastore snapshots";
    let Some((_dir, pg)) = server(what) else {
        return;
    };
    let s3_dir = tempfile::tempdir().unwrap();
    let Some(s3) = codestax_harness::MotoS3::start_or_skip(what, s3_dir.path()) else {
        return;
    };
    s3.create_bucket("snaps").unwrap();
    let config = codestax_config::ObjectStoreConfig {
        url: "s3://snaps/cluster".into(),
        endpoint: Some(s3.endpoint()),
        region: "us-east-1".into(),
        allow_http: true,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SnapshotStore::with_credentials(&config, "testing", "testing").unwrap();
        let (a, b) = (open(&pg, 2).await, open(&pg, 2).await);
        let link = |m| MetastoreLink::new(&pg.url(), Some(PASSWORD), m);
        let (link_a, link_b) = (link(open(&pg, 2).await), link(open(&pg, 2).await));
        assert_eq!(store.latest(&link_b, 1).await.unwrap(), None);

        // The owner's first snapshot: records 1..=3 through stream sequence 7.
        let old = a.acquire(1, "a", HOLD).await.unwrap().unwrap();
        let records = sealed("acme", 5);
        let mut first = Manifest {
            stream_seq: 7,
            ..Manifest::empty(1, old.epoch)
        };
        store.add_chunk(&mut first, &records[..3]).await.unwrap();
        store.publish(&link_a, &old, &first).await.unwrap();
        assert_eq!((first.epoch, first.stream_seq), (1, 7));
        assert_eq!(first.chain_heads["acme"].seq, 3);
        assert_eq!(
            store.latest(&link_b, 1).await.unwrap().as_ref(),
            Some(&first)
        );
        assert_eq!(
            store.get_chunk(&first.chunks[0]).await.unwrap(),
            records[..3]
        );

        // Its lease expires and another node takes the shard: the old owner's next snapshot
        // (a zombie's) is refused, and the latest stays the first.
        let old = short(&a, &old).await;
        let new = loop {
            if let Some(l) = b.acquire(1, "b", HOLD).await.unwrap() {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let next = |epoch| Manifest {
            epoch,
            stream_seq: 9,
            ..first.clone()
        };
        let mut zombie = next(old.epoch);
        store.add_chunk(&mut zombie, &records[3..]).await.unwrap();
        let err = store.publish(&link_a, &old, &zombie).await.unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::Metastore(MetastoreError::Fenced {
                    shard: 1,
                    epoch: 1,
                    ..
                })
            ),
            "{err}"
        );
        assert_eq!(
            store.latest(&link_b, 1).await.unwrap().as_ref(),
            Some(&first)
        );

        // The new owner's snapshot adds a chunk to the first one's.
        let mut second = next(new.epoch);
        store.add_chunk(&mut second, &records[3..]).await.unwrap();
        store.publish(&link_b, &new, &second).await.unwrap();
        assert_eq!((second.epoch, second.stream_seq), (2, 9));
        assert_eq!(second.chunks[0], first.chunks[0]);
        assert_eq!(second.chunks.len(), 2);
        assert_eq!(second.chain_heads["acme"].seq, 5);
        assert_eq!(
            store.latest(&link_a, 1).await.unwrap().as_ref(),
            Some(&second)
        );
        assert_eq!(
            store.get_chunk(&second.chunks[1]).await.unwrap(),
            records[3..]
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_3_keeps_settings_and_a_zombie_cannot_move_a_stream_cursor() {
    let Some((_dir, pg)) = server("metastore cluster state") else {
        return;
    };
    let (a, b) = (open(&pg, 2).await, open(&pg, 2).await);

    // Retention overrides: an offer never replaces the cluster's value, a change does.
    a.put_retention("acme", 400, true).await.unwrap();
    b.put_retention("acme", 30, true).await.unwrap();
    assert_eq!(b.retention_overrides().await.unwrap()["acme"], 400);
    b.put_retention("acme", 30, false).await.unwrap();
    assert_eq!(a.retention_overrides().await.unwrap()["acme"], 30);
    // The table's own check refuses what the API would (1 to 3650 days).
    assert!(a.put_retention("acme", 9999, false).await.is_err());

    // The signing key: the first offer wins.
    a.offer_signing_key("key-a", "sealed-a").await.unwrap();
    b.offer_signing_key("key-b", "sealed-b").await.unwrap();
    assert_eq!(
        b.signing_key().await.unwrap(),
        Some(("key-a".into(), "sealed-a".into()))
    );

    // Stream cursors: written under the shard's lease; after a takeover the old epoch is
    // fenced and cannot move the cursor back.
    let cursor = |seq: u64| serde_json::json!({ "version": 1, "delivered_seq": seq });
    let old = a.acquire(1, "a", HOLD).await.unwrap().unwrap();
    a.put_stream_cursor(&old, "acme", "s1", &cursor(10))
        .await
        .unwrap();
    a.put_stream_cursor(&old, "acme", "s1", &cursor(20))
        .await
        .unwrap();
    let old = short(&a, &old).await;
    let new = loop {
        if let Some(l) = b.acquire(1, "b", HOLD).await.unwrap() {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(new.epoch > old.epoch);
    assert_eq!(
        b.stream_cursor("acme", "s1").await.unwrap(),
        Some((old.epoch, cursor(20))),
        "the new owner continues from the old owner's cursor"
    );
    b.put_stream_cursor(&new, "acme", "s1", &cursor(25))
        .await
        .unwrap();
    let err = a
        .put_stream_cursor(&old, "acme", "s1", &cursor(15))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MetastoreError::Fenced { shard: 1, .. }),
        "{err}"
    );
    assert_eq!(
        a.stream_cursor("acme", "s1").await.unwrap(),
        Some((new.epoch, cursor(25)))
    );
    // Nor may a zombie create a cursor for another stream of the shard.
    assert!(
        a.put_stream_cursor(&old, "acme", "s2", &cursor(1))
            .await
            .is_err()
    );
    assert_eq!(a.stream_cursor("acme", "s2").await.unwrap(), None);
}

/// Migration 4: a stream change is written only under the org's shard lease (a zombie's is
/// refused, as its cursors are), and a node that reads only what changed since its last read
/// still sees every change — one committed after a later one included — and every delete.
/// A single node's streams offered to the cluster are taken once; an id it has is kept.
#[tokio::test(flavor = "multi_thread")]
async fn stream_changes_are_fenced_and_read_by_change_even_when_they_commit_out_of_order() {
    let Some((_dir, pg)) = server("metastore stream changes") else {
        return;
    };
    let (a, mut b) = (open(&pg, 2).await, open(&pg, 2).await);
    let shard = shard_of("acme", 2);
    let def = |name: &str| serde_json::json!({ "name": name });
    let changed = |c: &StreamChanges| -> Vec<(String, Option<serde_json::Value>)> {
        let mut rows: Vec<_> = c
            .rows
            .iter()
            .map(|(_, id, d)| (id.clone(), d.clone()))
            .collect();
        rows.sort_by(|x, y| x.0.cmp(&y.0));
        rows
    };

    let first = b.stream_changes(0).await.unwrap();
    assert!(first.rows.is_empty());
    let lease = a.acquire(shard, "a", HOLD).await.unwrap().unwrap();
    a.put_stream(&lease, "acme", "s1", &def("one"))
        .await
        .unwrap();
    let c1 = b.stream_changes(first.next).await.unwrap();
    assert_eq!(changed(&c1), vec![("s1".into(), Some(def("one")))]);

    // A writer that took its transaction id first but commits last is still seen: the next
    // read starts at the xmin of a snapshot that missed it, not after the newest change read.
    let (late, conn) = pg
        .url()
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .password(PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    late.batch_execute(
        "BEGIN; INSERT INTO streams (org_id, id, definition) VALUES ('acme', 'late', '{\"name\": \"late\"}')",
    )
    .await
    .unwrap();
    a.put_stream(&lease, "acme", "s2", &def("two"))
        .await
        .unwrap();
    let c2 = b.stream_changes(c1.next).await.unwrap();
    assert_eq!(changed(&c2), vec![("s2".into(), Some(def("two")))]);
    late.batch_execute("COMMIT").await.unwrap();
    let c3 = b.stream_changes(c2.next).await.unwrap();
    assert!(
        changed(&c3).contains(&("late".into(), Some(def("late")))),
        "the late commit was missed: {:?}",
        c3.rows
    );
    // Nothing new: nothing (or only what the last read's snapshot could not rule out) again.
    let c4 = b.stream_changes(c3.next).await.unwrap();
    assert!(c4.rows.len() <= 1, "{:?}", c4.rows);

    // A delete is read as one (the row stays, marked), and the cursor goes with it.
    a.put_stream_cursor(
        &lease,
        "acme",
        "s1",
        &serde_json::json!({ "version": 1, "delivered_seq": 3 }),
    )
    .await
    .unwrap();
    a.delete_stream(&lease, "acme", "s1").await.unwrap();
    let c5 = b.stream_changes(c4.next).await.unwrap();
    assert!(changed(&c5).contains(&("s1".into(), None)), "{:?}", c5.rows);
    assert_eq!(a.stream_cursor("acme", "s1").await.unwrap(), None);

    // After a takeover the old owner (a zombie) can neither change nor delete a stream.
    let lease = short(&a, &lease).await;
    let new = loop {
        if let Some(l) = b.acquire(shard, "b", HOLD).await.unwrap() {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = a
        .put_stream(&lease, "acme", "s2", &def("zombie"))
        .await
        .unwrap_err();
    assert!(matches!(err, MetastoreError::Fenced { .. }), "{err}");
    let err = a.delete_stream(&lease, "acme", "s2").await.unwrap_err();
    assert!(matches!(err, MetastoreError::Fenced { .. }), "{err}");
    let c6 = b.stream_changes(c5.next).await.unwrap();
    assert!(
        !changed(&c6).iter().any(|(id, _)| id == "s2"),
        "a refused write changed nothing: {:?}",
        c6.rows
    );
    b.put_stream(&new, "acme", "s2", &def("two, again"))
        .await
        .unwrap();

    // A single node's streams offered: a new id is taken with its cursor under epoch 0 (which
    // the owner's first write replaces); an id the cluster has, live or deleted, is kept.
    let cursor = serde_json::json!({ "version": 1, "delivered_seq": 0, "after_id": "r-7" });
    let offer = |id: &str, name: &str| StreamOfferRow {
        org: "acme".into(),
        id: id.into(),
        definition: def(name),
        cursor: cursor.clone(),
    };
    let outcomes = b
        .offer_streams(
            2,
            &[
                offer("s2", "mine"),
                offer("s1", "mine"),
                offer("s3", "three"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            OfferOutcome::Exists(Some(def("two, again"))),
            OfferOutcome::Exists(None),
            OfferOutcome::Taken
        ]
    );
    assert_eq!(
        b.stream_cursor("acme", "s3").await.unwrap(),
        Some((0, cursor.clone()))
    );
    let c7 = b.stream_changes(c6.next).await.unwrap();
    assert!(changed(&c7).contains(&("s3".into(), Some(def("three")))));
    let moved = serde_json::json!({ "version": 1, "delivered_seq": 9 });
    b.put_stream_cursor(&new, "acme", "s3", &moved)
        .await
        .unwrap();
    assert_eq!(
        b.stream_cursor("acme", "s3").await.unwrap(),
        Some((new.epoch, moved))
    );
}

/// The stream sequences of `shard`'s snapshot rows, oldest first.
async fn snapshot_seqs(pg: &Postgres, shard: i32) -> Vec<i64> {
    let mut config: tokio_postgres::Config = pg.url().parse().unwrap();
    let (client, connection) = config
        .password(PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query(
            "SELECT stream_seq FROM snapshots WHERE shard = $1 ORDER BY id",
            &[&shard],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn old_snapshot_rows_are_trimmed_to_the_newest_by_the_holder_only() {
    let Some((_dir, pg)) = server("metastore snapshot rows") else {
        return;
    };
    let (a, b) = (open(&pg, 2).await, open(&pg, 2).await);
    let row = |seq: u64| SnapshotRecord {
        stream_seq: seq,
        location: format!("s3://b/p/manifests/{seq}"),
        chain_heads: serde_json::json!({"acme": {"seq": seq, "hash": "h"}}),
    };
    let old = a.acquire(0, "a", HOLD).await.unwrap().unwrap();
    let other = a.acquire(1, "a", HOLD).await.unwrap().unwrap();
    for seq in 1..=5 {
        a.publish_snapshot(&old, &row(seq)).await.unwrap();
    }
    for seq in 1..=2 {
        a.publish_snapshot(&other, &row(seq)).await.unwrap();
    }

    // The newest 3 of shard 0 stay; shard 1's rows are not touched; a second trim finds nothing.
    assert_eq!(a.trim_snapshots(&old, 3).await.unwrap(), 2);
    assert_eq!(snapshot_seqs(&pg, 0).await, [3, 4, 5]);
    assert_eq!(snapshot_seqs(&pg, 1).await, [1, 2]);
    assert_eq!(a.trim_snapshots(&old, 3).await.unwrap(), 0);

    // Shard 0 taken over after the TTL: the old holder (a zombie) trims nothing.
    let old = short(&a, &old).await;
    let new = loop {
        if let Some(l) = b.acquire(0, "b", HOLD).await.unwrap() {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(a.trim_snapshots(&old, 1).await.unwrap(), 0);
    assert_eq!(snapshot_seqs(&pg, 0).await, [3, 4, 5]);

    // The new holder's trim keeps its newest rows; the latest is what a restore reads.
    b.publish_snapshot(&new, &row(6)).await.unwrap();
    assert_eq!(b.trim_snapshots(&new, 3).await.unwrap(), 1);
    assert_eq!(snapshot_seqs(&pg, 0).await, [4, 5, 6]);
    // Keeping 0 keeps 1: the row a restore starts from is never deleted.
    assert_eq!(b.trim_snapshots(&new, 0).await.unwrap(), 2);
    assert_eq!(snapshot_seqs(&pg, 0).await, [6]);
    assert_eq!(
        b.latest_snapshot(0).await.unwrap().map(|s| (s.0, s.1)),
        Some((new.epoch, 6))
    );
}
