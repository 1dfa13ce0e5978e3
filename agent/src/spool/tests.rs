use super::*;
use crate::checkpoint::{FileKey, Fingerprint, TailCheck};
use codestax_storage::testing::{SegmentDamage, assert_names, segment_damage, segment_paths};
use codestax_storage::{Checksum, Fault, FaultyDisk};
use segment::FORMAT;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

/// Appends the frame of `entry` to `out`.
fn encode_frame(entry: &SpoolEntry, out: &mut Vec<u8>) {
    let mut frames = Frames::new();
    segment::push_frame(&mut frames, Checksum::LenAndPayload, entry);
    out.extend_from_slice(frames.bytes());
}

const SMALL: SpoolOptions = SpoolOptions {
    max_bytes: 1 << 20,
    segment_bytes: 4096,
};

fn record(i: usize) -> SpoolEntry {
    SpoolEntry::Log(format!(r#"{{"id":"r{i}","pad":"{}"}}"#, "x".repeat(i % 97)).into_bytes())
}

fn position(offset: u64) -> SpoolEntry {
    SpoolEntry::FilePosition(FilePosition {
        key: FileKey { dev: 1, ino: 2 },
        fingerprint: Fingerprint { len: 16, hash: 3 },
        offset,
        tail: TailCheck::default(),
        stamp: offset,
    })
}

fn read_all(spool: &Spool) -> Vec<ReadEntry> {
    let mut reader = spool.reader();
    let mut out = Vec::new();
    while let Some(e) = reader.try_next().unwrap() {
        out.push(e);
    }
    out
}

fn records(entries: &[ReadEntry]) -> Vec<SpoolEntry> {
    entries
        .iter()
        .filter(|e| matches!(e.entry, SpoolEntry::Log(_) | SpoolEntry::Json(_)))
        .map(|e| e.entry.clone())
        .collect()
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_paths(&FORMAT, dir).pop().unwrap()
}

#[test]
fn round_trip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert_eq!(recovery.pending_records, 0);
    let mut written = Vec::new();
    for batch in 0..40 {
        let entries: Vec<_> = (batch * 10..batch * 10 + 10).map(record).collect();
        written.extend(entries.clone());
        let mut with_position = entries;
        with_position.push(position(batch as u64));
        let end = spool.append_blocking(with_position).unwrap();
        assert!(end <= spool.committed());
    }
    assert!(spool.stats().segments > 3, "{:?}", spool.stats());
    let read = read_all(&spool);
    assert_eq!(records(&read), written);
    assert!(
        read.windows(2).all(|w| w[0].end < w[1].end),
        "positions increase"
    );
    drop(spool);

    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert!(recovery.damaged.is_empty(), "{:?}", recovery.damaged);
    assert_eq!(recovery.pending_records, 400);
    assert_eq!(recovery.file_positions.len(), 40);
    assert_eq!(recovery.file_positions.last().unwrap().offset, 39);
    assert_eq!(records(&read_all(&spool)), written);
    // Appends continue after the recovered end.
    spool.append_blocking(vec![record(1000)]).unwrap();
    assert_eq!(records(&read_all(&spool)).len(), 401);
}

#[test]
fn torn_tail_is_cut_off_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SMALL).unwrap();
    spool.append_blocking((0..5).map(record).collect()).unwrap();
    drop(spool);
    let path = last_segment(dir.path());
    let good_len = fs::metadata(&path).unwrap().len();
    // Half of a frame: the writer died mid-write.
    let mut frame = Vec::new();
    encode_frame(&record(99), &mut frame);
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&frame[..frame.len() / 2]).unwrap();
    drop(f);

    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert_eq!(recovery.damaged.len(), 1, "{:?}", recovery.damaged);
    assert!(
        recovery.damaged[0].contains("torn write"),
        "{:?}",
        recovery.damaged
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(
        records(&read_all(&spool)),
        (0..5).map(record).collect::<Vec<_>>()
    );
    spool.append_blocking(vec![record(5)]).unwrap();
    assert_eq!(records(&read_all(&spool)).len(), 6);
    let saved: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.ends_with(".damaged").then_some(name)
        })
        .collect();
    assert_eq!(saved.len(), 1, "the cut bytes are kept for inspection");
}

#[test]
fn corrupt_entry_is_detected_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SMALL).unwrap();
    spool
        .append_blocking((0..10).map(record).collect())
        .unwrap();
    let entries = read_all(&spool);
    drop(spool);
    // Flip one byte inside the payload of the 4th entry.
    let path = last_segment(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let at = entries[2].end.offset as usize + 12;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).unwrap();

    // Opening cuts the segment at the damaged entry and says so; it does not fail.
    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert_eq!(recovery.damaged.len(), 1);
    assert!(
        recovery.damaged[0].contains("checksum mismatch"),
        "{:?}",
        recovery.damaged
    );
    assert_eq!(
        records(&read_all(&spool)),
        (0..3).map(record).collect::<Vec<_>>()
    );
}

#[test]
fn reader_reports_damage_found_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SMALL).unwrap();
    spool.append_blocking((0..3).map(record).collect()).unwrap();
    let path = last_segment(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    bytes[HEADER_LEN as usize + 9] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let mut reader = spool.reader();
    let err = reader.try_next().unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&format!("at offset {HEADER_LEN}")), "{err}");
}

#[test]
fn full_spool_pushes_back_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        max_bytes: 64 * 1024,
        segment_bytes: 8 * 1024,
    };
    let (spool, _) = Spool::open(dir.path(), options).unwrap();
    let mut accepted = 0;
    let err = loop {
        match spool.append_blocking(vec![record(accepted)]) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(err.is_full(), "{err}");
    assert!(spool.stats().used_bytes <= options.max_bytes);
    assert!(!spool.has_room_for(200));
    // Nothing was dropped: every accepted record is there.
    let read = read_all(&spool);
    assert_eq!(records(&read).len(), accepted);
    // Acknowledging the first half frees whole segments.
    let half = &read[accepted / 2];
    spool.ack(half.end).unwrap();
    spool.delete_acked().unwrap();
    assert!(spool.has_room_for(200), "{:?}", spool.stats());
    spool.append_blocking(vec![record(0)]).unwrap();
    // Too large for any spool of this size: refused for good.
    let huge = SpoolEntry::Log(vec![b'x'; 70 * 1024]);
    assert!(matches!(
        spool.append_blocking(vec![huge]),
        Err(SpoolError::TooLarge { .. })
    ));
}

#[test]
fn acknowledged_position_persists_and_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SMALL).unwrap();
    for batch in 0..20 {
        spool
            .append_blocking((batch * 10..batch * 10 + 10).map(record).collect())
            .unwrap();
    }
    let before = spool.stats();
    let read = read_all(&spool);
    let cut = &read[149];
    spool.ack(cut.end).unwrap();
    assert!(spool.has_deletable());
    spool.delete_acked().unwrap();
    assert!(!spool.has_deletable());
    let after = spool.stats();
    assert!(after.segments < before.segments, "{before:?} -> {after:?}");
    assert!(after.used_bytes < before.used_bytes);
    assert_eq!(
        FORMAT.list(dir.path()).unwrap().len() as u64,
        after.segments
    );
    // Acknowledging an older position changes nothing.
    spool.ack(read[10].end).unwrap();
    assert_eq!(spool.acked(), cut.end);
    drop(spool);

    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert_eq!(recovery.pending_records, 50);
    let rest = records(&read_all(&spool));
    assert_eq!(rest, (150..200).map(record).collect::<Vec<_>>());

    // Everything acknowledged: only the active segment remains.
    let end = read_all(&spool).last().unwrap().end;
    spool.ack(end).unwrap();
    spool.delete_acked().unwrap();
    assert_eq!(spool.stats().segments, 1);
    assert!(read_all(&spool).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SMALL).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                spool.append(vec![record(t * 1000 + i)]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut reader = spool.reader();
    let mut n = 0;
    while reader.try_next().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 400);
    // (wait may wake early, e.g. when a segment was sealed; it never misses an append)
    spool.append(vec![record(1)]).await.unwrap();
    assert!(reader.wait(std::time::Duration::from_secs(5)).await);
    assert!(reader.try_next().unwrap().is_some());
}

#[test]
fn a_spool_of_format_1_is_read_and_not_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    // A segment as an agent of format 1 left it: JSON records and a file position.
    let mut bytes = FORMAT.header(1).to_vec();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let json = SpoolEntry::Json(br#"{"id":"old"}"#.to_vec());
    encode_frame(&json, &mut bytes);
    encode_frame(&position(7), &mut bytes);
    fs::write(FORMAT.path(dir.path(), 1), &bytes).unwrap();

    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert!(recovery.damaged.is_empty(), "{:?}", recovery.damaged);
    assert_eq!(recovery.pending_records, 1);
    assert_eq!(recovery.file_positions.len(), 1);
    spool.append_blocking(vec![record(1)]).unwrap();
    assert_eq!(records(&read_all(&spool)), vec![json, record(1)]);
    // The new entry went into a new segment of the current format.
    assert_eq!(FORMAT.list(dir.path()).unwrap(), vec![1, 2]);
    assert_eq!(fs::read(FORMAT.path(dir.path(), 1)).unwrap(), bytes);
    let header = fs::read(FORMAT.path(dir.path(), 2)).unwrap();
    assert_eq!(header[8..12], FORMAT.version.to_le_bytes());
}

/// Every way an append can fail on the disk: ENOSPC or EIO in the middle of the write (half the
/// bytes land), or the fsync failing. Each time: the append is refused with the right error,
/// nothing of it is acknowledged or readable, the segment ends where it did, the failure shows
/// until an append succeeds, and the next append and a reopen see exactly the records
/// acknowledged.
#[test]
fn a_failed_append_leaves_nothing_and_the_next_one_lands() {
    let faults = [
        (Fault::Write(io::ErrorKind::StorageFull), true),
        (Fault::Write(io::ErrorKind::QuotaExceeded), true),
        (Fault::Write(io::ErrorKind::Other), false), // EIO
        (Fault::Sync(io::ErrorKind::StorageFull), true),
        (Fault::Sync(io::ErrorKind::Other), false),
    ];
    for (fault, disk_full) in faults {
        let dir = tempfile::tempdir().unwrap();
        let disk = FaultyDisk::default();
        let (spool, _) = Spool::open_on(dir.path(), SMALL, Arc::new(disk.clone())).unwrap();
        let mut acknowledged: Vec<SpoolEntry> = (0..5).map(record).collect();
        spool.append_blocking(acknowledged.clone()).unwrap();
        let committed = spool.committed();
        let used = spool.stats().used_bytes;
        let segment = last_segment(dir.path());
        let len = fs::metadata(&segment).unwrap().len();

        disk.arm(fault);
        let mut refused: Vec<_> = (100..120).map(record).collect();
        refused.push(position(7));
        let err = spool.append_blocking(refused.clone()).unwrap_err();
        assert_eq!(err.is_disk_full(), disk_full, "{fault:?}: {err}");
        let expected_kind = match fault {
            Fault::Write(kind) | Fault::Sync(kind) | Fault::Truncate(kind) => kind,
        };
        match &err {
            SpoolError::DiskFull { path, source } | SpoolError::Segment { path, source } => {
                assert_eq!(path, &segment, "{fault:?}");
                assert_eq!(source.kind(), expected_kind, "{fault:?}");
            }
            other => panic!("{fault:?}: {other}"),
        }
        if disk_full {
            assert!(err.to_string().contains("disk is full"), "{err}");
        }
        assert_eq!(spool.committed(), committed, "{fault:?}");
        assert_eq!(spool.stats().used_bytes, used, "{fault:?}");
        assert_eq!(
            fs::metadata(&segment).unwrap().len(),
            len,
            "{fault:?}: cut back"
        );
        assert_eq!(records(&read_all(&spool)), acknowledged, "{fault:?}");
        let failure = spool.write_failure().expect("the failure shows");
        assert_eq!(failure.disk_full, disk_full, "{fault:?}");
        assert_eq!(failure.failures, 1);

        // A second failure in a row is counted in the same run.
        disk.arm(fault);
        spool.append_blocking(vec![record(200)]).unwrap_err();
        assert_eq!(spool.write_failure().unwrap().failures, 2);

        // The same append again, once the disk takes it: it lands once.
        spool.append_blocking(refused.clone()).unwrap();
        assert_eq!(spool.write_failure(), None, "{fault:?}: cleared");
        acknowledged.extend(
            refused
                .iter()
                .filter(|e| !matches!(e, SpoolEntry::FilePosition(_)))
                .cloned(),
        );
        assert_eq!(records(&read_all(&spool)), acknowledged, "{fault:?}");
        drop(spool);

        let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
        assert!(
            recovery.damaged.is_empty(),
            "{fault:?}: {:?}",
            recovery.damaged
        );
        assert_eq!(recovery.pending_records, acknowledged.len() as u64);
        assert_eq!(recovery.file_positions.len(), 1, "{fault:?}");
        assert_eq!(records(&read_all(&spool)), acknowledged, "{fault:?}");
    }
}

/// EIO on the write, and on its rollback too: the half-written batch stays in the file past
/// the committed end and the log refuses writes; each later append tries the rollback again,
/// and once it succeeds the spool takes writes. A reader that was reading meanwhile, and a
/// reopen, see exactly the records acknowledged.
#[test]
fn a_failed_rollback_is_tried_again_until_the_spool_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let (spool, _) = Spool::open_on(dir.path(), SMALL, Arc::new(disk.clone())).unwrap();
    let mut acknowledged: Vec<SpoolEntry> = (0..5).map(record).collect();
    spool.append_blocking(acknowledged.clone()).unwrap();
    let mut reader = spool.reader();
    assert_eq!(reader.try_next().unwrap().unwrap().entry, record(0));
    let len = fs::metadata(last_segment(dir.path())).unwrap().len();

    disk.arm(Fault::Write(io::ErrorKind::Other));
    disk.arm(Fault::Truncate(io::ErrorKind::Other));
    disk.arm(Fault::Truncate(io::ErrorKind::Other));
    let batch: Vec<_> = (100..130).map(record).collect();
    let err = spool.append_blocking(batch.clone()).unwrap_err();
    assert!(!err.is_disk_full(), "{err}");
    assert!(
        fs::metadata(last_segment(dir.path())).unwrap().len() > len,
        "the half batch is still there"
    );
    assert_eq!(records(&read_all(&spool)), acknowledged);
    let err = spool.append_blocking(batch.clone()).unwrap_err();
    assert!(
        err.to_string().contains("could not be rolled back"),
        "{err}"
    );
    assert_eq!(spool.write_failure().unwrap().failures, 2);

    spool.append_blocking(batch.clone()).unwrap();
    assert_eq!(spool.write_failure(), None);
    acknowledged.extend(batch);
    let mut rest = Vec::new();
    while let Some(e) = reader.try_next().unwrap() {
        rest.push(e.entry);
    }
    assert_eq!(rest[..], acknowledged[1..]);
    drop((reader, spool));
    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert!(recovery.damaged.is_empty(), "{:?}", recovery.damaged);
    assert_eq!(records(&read_all(&spool)), acknowledged);
}

/// A failed append whose tail the log could not know about: a restart with the half-written
/// bytes still on disk (the agent died between the write and the cut) finds a torn tail, cuts
/// it, and opens with exactly the acknowledged records.
#[test]
fn a_restart_after_a_torn_append_recovers_the_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SMALL).unwrap();
    let acknowledged: Vec<_> = (0..7).map(record).collect();
    spool.append_blocking(acknowledged.clone()).unwrap();
    drop(spool);
    let mut frames = Vec::new();
    for e in (50..60).map(record) {
        encode_frame(&e, &mut frames);
    }
    let path = last_segment(dir.path());
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&frames[..frames.len() / 2 + 3]).unwrap();
    drop(f);
    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert_eq!(recovery.damaged.len(), 1, "{:?}", recovery.damaged);
    // The whole frames of the torn append are on disk with good checksums: they were written
    // but never acknowledged, and recovery keeps them (their senders retry under the same ids,
    // which the collector drops as duplicates). What matters: nothing acknowledged is missing
    // and the torn frame is not read as data.
    let read = records(&read_all(&spool));
    assert_eq!(read[..7], acknowledged[..]);
    assert!(
        read[7..]
            .iter()
            .all(|e| (50..60).map(record).any(|w| &w == e))
    );
    spool.append_blocking(vec![record(99)]).unwrap();
    assert_eq!(records(&read_all(&spool)).last(), Some(&record(99)));
}

/// A disk that stops in the middle of a failing write until the test lets it go on: half the
/// bytes are in the file (where a reader can see them) and the cut has not happened yet.
#[derive(Debug)]
struct GatedDisk {
    armed: std::sync::atomic::AtomicBool,
    reached: std::sync::mpsc::SyncSender<()>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Disk for GatedDisk {
    fn write(&self, file: &mut fs::File, bytes: &[u8]) -> io::Result<()> {
        if self.armed.swap(false, Ordering::AcqRel) {
            file.write_all(&bytes[..bytes.len() / 2])?;
            self.reached.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
            return Err(io::ErrorKind::StorageFull.into());
        }
        RealDisk.write(file, bytes)
    }

    fn sync(&self, file: &fs::File) -> io::Result<()> {
        RealDisk.sync(file)
    }
}

/// A reader that buffered the bytes of a failing write (while they were in the file, before
/// the cut) must not read them once the next append lands at the same place: it reads what was
/// committed, never the cut bytes (whole frames among them would pass their checksums, and a
/// file position among them would move a checkpoint past what is durable).
#[test]
fn a_reader_never_reads_the_bytes_of_a_failed_append() {
    let dir = tempfile::tempdir().unwrap();
    let (reached_tx, reached) = std::sync::mpsc::sync_channel(1);
    let (release, release_rx) = std::sync::mpsc::channel();
    let disk = Arc::new(GatedDisk {
        armed: false.into(),
        reached: reached_tx,
        release: Mutex::new(release_rx),
    });
    let (spool, _) = Spool::open_on(dir.path(), SMALL, disk.clone()).unwrap();
    spool.append_blocking(vec![record(0), record(1)]).unwrap();
    let mut reader = spool.reader();

    disk.armed.store(true, Ordering::Release);
    let failing = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            let mut entries: Vec<_> = (100..140).map(record).collect();
            entries.push(position(9));
            spool.append_blocking(entries)
        })
    };
    reached.recv().unwrap();
    // The reader's first read fills its buffer from the file: the committed entries and the
    // half-written ones after them.
    assert_eq!(reader.try_next().unwrap().unwrap().entry, record(0));
    release.send(()).unwrap();
    assert!(failing.join().unwrap().unwrap_err().is_disk_full());

    spool.append_blocking(vec![record(2), record(3)]).unwrap();
    let mut rest = Vec::new();
    loop {
        match reader.try_next() {
            Ok(Some(e)) => rest.push(e.entry),
            Ok(None) => break,
            Err(e) => panic!("the reader took the cut bytes for data after {rest:?}: {e}"),
        }
    }
    assert_eq!(rest, vec![record(1), record(2), record(3)]);
}

/// A temporary copy of a fixture directory of `storage/tests/fixtures`.
fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    codestax_storage::testing::copy_fixture(name, dir.path());
    dir
}

#[test]
fn a_spool_written_before_the_storage_crate_reads_back_exactly() {
    // Written by the agent before the storage crate: 4 appends of 3 records and a file
    // position, 300-byte segments, acknowledged through the 6th entry.
    let dir = fixture("spool-main");
    let (spool, recovery) = Spool::open(dir.path(), SMALL).unwrap();
    assert!(recovery.damaged.is_empty(), "{:?}", recovery.damaged);
    assert_eq!(recovery.file_positions.len(), 4);
    assert_eq!(recovery.pending_records, 7);
    assert_eq!(
        spool.acked(),
        SpoolPos {
            segment: 1,
            offset: 161
        }
    );
    let expected: Vec<_> = (1..4)
        .flat_map(|b| (0..3).map(move |i| SpoolEntry::Log(format!("log-{b}-{i}").into_bytes())))
        .skip(2)
        .collect();
    let read = read_all(&spool);
    assert_eq!(records(&read), expected);
    assert_eq!(
        read.last().unwrap().end,
        SpoolPos {
            segment: 2,
            offset: 129
        }
    );
    let positions: Vec<_> = read
        .iter()
        .filter_map(|e| match &e.entry {
            SpoolEntry::FilePosition(p) => Some(p.offset),
            _ => None,
        })
        .collect();
    assert_eq!(positions, [1, 2, 3]);
    // It takes appends where it left off.
    spool.append_blocking(vec![record(1)]).unwrap();
    assert_eq!(records(&read_all(&spool)).len(), 8);
    drop(spool);
    let checkpoints =
        crate::checkpoint::CheckpointStore::open(&dir.path().join("checkpoints.json"), []).unwrap();
    let all = checkpoints.all();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].position,
        FilePosition {
            key: FileKey { dev: 7, ino: 9 },
            fingerprint: Fingerprint { len: 16, hash: 42 },
            offset: 1234,
            tail: TailCheck { len: 8, hash: 77 },
            stamp: 3,
        }
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Damage {
        Segment(SegmentDamage),
        /// The acknowledged position's file replaced with any bytes.
        Acked(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            segment_damage().prop_map(Damage::Segment),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                Just(br#"{"version":1,"segment":18446744073709551615,"offset":18446744073709551615}"#.to_vec()),
                Just(br#"{"version":1,"segment":0,"offset":99999999}"#.to_vec()),
                Just(br#"{"version":99}"#.to_vec()),
            ]
            .prop_map(Damage::Acked),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(32)
        ))]

        /// Whatever is flipped, cut or appended in a segment, or written in place of the
        /// acknowledged position: the spool opens and reads records it was given, in order
        /// (damaged parts cut and reported), and takes appends again; or it refuses with an
        /// error naming its directory. Never a panic.
        #[test]
        fn prop_damaged_spool_recovers_or_names_the_file(
            batches in prop::collection::vec(1usize..12, 1..12),
            ack in any::<prop::sample::Index>(),
            damage in damage(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (spool, _) = Spool::open(dir.path(), SMALL).unwrap();
            let mut written = Vec::new();
            let mut ends = Vec::new();
            for n in batches {
                let entries: Vec<_> = (written.len()..written.len() + n).map(record).collect();
                written.extend(entries.clone());
                ends.push(spool.append_blocking(entries).unwrap());
            }
            spool.ack(ends[ack.index(ends.len())]).unwrap();
            drop(spool);
            match &damage {
                Damage::Segment(d) => d.apply(&FORMAT, dir.path()),
                Damage::Acked(bytes) => fs::write(dir.path().join(ACKED_FILE), bytes).unwrap(),
            }
            match Spool::open(dir.path(), SMALL) {
                Ok((spool, _recovery)) => {
                    let mut reader = spool.reader();
                    let mut got = Vec::new();
                    loop {
                        match reader.try_next() {
                            Ok(Some(e)) => got.push(e.entry),
                            Ok(None) => break,
                            Err(e) => {
                                assert_names(dir.path(), &e.to_string(), &damage);
                                break;
                            }
                        }
                    }
                    // Records read are records written, in the order written.
                    let mut rest = written.iter();
                    for e in &got {
                        assert!(rest.any(|w| w == e), "{damage:?}: {e:?} not written, or out of order");
                    }
                    spool.append_blocking(vec![record(10_000)]).unwrap();
                }
                Err(e) => assert_names(dir.path(), &e.to_string(), &damage),
            }
        }
    }
}
