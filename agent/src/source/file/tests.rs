//! File source tests: rotation cases, partial and over-long lines, identity, restarts, and a
//! model-based test of random writes, rotations, truncations, deletions and crashes.

use super::*;
use crate::checkpoint::{CheckpointStore, FileKey, FilePosition, Fingerprint, TailCheck};
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::spool::{Spool, SpoolOptions};
use codestax_common::AuditRecord;
use codestax_config::FileSourceConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Harness {
    _root: tempfile::TempDir,
    logs: PathBuf,
    data: PathBuf,
    config: FileSourceConfig,
    spool: Option<Spool>,
    tailer: Option<FileTailer>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn new(include: &[&str], exclude: &[&str], fingerprint_bytes: usize) -> Harness {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs");
        let data = root.path().join("data");
        fs::create_dir_all(&logs).unwrap();
        let config = FileSourceConfig {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            org_id: Some("acme".into()),
            max_line_bytes: 1024,
            fingerprint_bytes,
        };
        let mut h = Harness {
            _root: root,
            logs,
            data,
            config,
            spool: None,
            tailer: None,
            metrics: Arc::new(Metrics::new()),
        };
        h.start();
        h
    }

    fn start(&mut self) {
        let options = SpoolOptions {
            max_bytes: 64 << 20,
            segment_bytes: 64 << 10,
        };
        let (spool, recovery) = Spool::open(&self.data.join("spool"), options).unwrap();
        let checkpoints =
            CheckpointStore::open(&self.data.join("checkpoints.json"), recovery.file_positions)
                .unwrap();
        let metrics = Arc::new(Metrics::new());
        self.metrics = metrics.clone();
        let quarantine = Quarantine::open(&self.data.join("quarantine"), metrics.clone()).unwrap();
        let settings = FileSettings::from_config(&self.config, &self.logs, usize::MAX).unwrap();
        let mut options = FileServerOptions::new(Duration::from_secs(10), options.max_bytes);
        options.finish_grace = Duration::ZERO;
        options.lost_after = Duration::ZERO;
        options.read_bytes = 700; // Small reads: lines straddle reads.
        self.tailer = Some(FileTailer::new(
            vec![settings],
            options,
            spool.clone(),
            checkpoints,
            quarantine,
            metrics,
        ));
        self.spool = Some(spool);
    }

    /// Stops without persisting anything but what is already in the spool (and the
    /// checkpoint table as last written).
    fn kill(&mut self) {
        self.tailer = None;
        self.spool = None;
    }

    /// [`Self::kill`] and start again.
    fn crash(&mut self) {
        self.kill();
        self.start();
    }

    fn restart(&mut self) {
        self.tailer.as_ref().unwrap().persist();
        self.crash();
    }

    fn tailer(&mut self) -> &mut FileTailer {
        self.tailer.as_mut().unwrap()
    }

    /// Discovers, reads everything, releases finished files, reads again.
    fn step(&mut self) {
        let t = self.tailer();
        t.discover();
        t.drain();
        t.finish();
        t.drain();
        t.finish();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    fn append(&self, name: &str, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn records(&self) -> Vec<AuditRecord> {
        let mut reader = self.spool.as_ref().unwrap().reader();
        let mut out = Vec::new();
        while let Some(e) = reader.try_next().unwrap() {
            if let Some(record) = e.entry.to_record() {
                out.push(record.unwrap());
            }
        }
        out
    }

    fn messages(&self) -> Vec<String> {
        self.records()
            .into_iter()
            .map(|r| r.message.unwrap_or_default())
            .collect()
    }

    fn quarantined(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.data.join("quarantine/quarantine.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A valid emit line; every line begins with the same 60-odd bytes, so files share their
/// fingerprints (identity then rests on the inode and the tail check).
fn line(n: u64) -> String {
    format!(
        r#"{{"action":"scan.triggered","actor":{{"id":"u1","email":"a@b.co"}},"time":"2025-06-01T00:00:00Z","message":"n={n}"}}"#
    ) + "\n"
}

fn lines(range: std::ops::Range<u64>) -> String {
    range.map(line).collect()
}

fn ns(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|n| format!("n={n}")).collect()
}

#[test]
fn reads_lines_with_default_org_and_derived_ids() {
    let mut h = Harness::new(&["*.jsonl"], &[], 256);
    h.append("a.jsonl", &lines(0..3));
    h.append(
        "a.jsonl",
        r#"{"id":"given","org_id":"other","action":"x.y","actor":{"id":"k","kind":"api_key"},"time":"2025-06-01T00:00:00Z"}"#,
    );
    h.append("a.jsonl", "\n\n");
    h.step();
    let records = h.records();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].org_id, "acme");
    assert!(records[0].id().starts_with("f-"), "{:?}", records[0].id);
    assert_ne!(records[0].id, records[1].id);
    assert_eq!(records[3].id(), "given");
    assert_eq!(records[3].org_id, "other");
    // Ids are stable: the same file read again from the start gives the same ones.
    let ids: Vec<_> = records.iter().map(|r| r.id.clone()).collect();
    fs::remove_dir_all(&h.data).unwrap();
    h.crash();
    h.step();
    assert_eq!(
        h.records().iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids
    );
}

#[test]
fn a_partial_line_waits_for_its_newline() {
    let mut h = Harness::new(&["*.jsonl"], &[], 256);
    let l = line(1);
    let (first, rest) = l.split_at(30);
    h.append("a.jsonl", &line(0));
    h.append("a.jsonl", first);
    for _ in 0..3 {
        h.step();
    }
    assert_eq!(h.messages(), ns(0..1));
    // The agent restarts while the line is half written: still nothing of it.
    h.crash();
    h.step();
    assert_eq!(h.messages(), ns(0..1));
    let (middle, end) = rest.split_at(20);
    h.append("a.jsonl", middle);
    h.step();
    assert_eq!(h.messages(), ns(0..1));
    h.append("a.jsonl", end);
    h.step();
    assert_eq!(h.messages(), ns(0..2));
    assert!(h.quarantined().is_empty());
}

#[test]
fn invalid_and_overlong_lines_are_quarantined_and_the_file_goes_on() {
    let mut h = Harness::new(&["*.jsonl"], &[], 256);
    h.append("a.jsonl", &line(0));
    h.append("a.jsonl", "{not json\n");
    h.append(
        "a.jsonl",
        r#"{"action":"x.y","time":"2025-06-01T00:00:00Z"}"#,
    );
    h.append("a.jsonl", "\n");
    h.append(
        "a.jsonl",
        &format!("{{\"pad\":\"{}\"}}\n", "x".repeat(5000)),
    );
    h.append("a.jsonl", &line(1));
    // An over-long line arriving in pieces, across rounds.
    h.append("a.jsonl", &"y".repeat(3000));
    h.step();
    h.append("a.jsonl", &"y".repeat(3000));
    h.step();
    h.append("a.jsonl", "\n");
    h.append("a.jsonl", &line(2));
    h.step();
    assert_eq!(h.messages(), ns(0..3));
    let q = h.quarantined();
    assert_eq!(q.len(), 4, "{q:#?}");
    assert_eq!(q[0]["kind"], "invalid_record");
    assert_eq!(q[0]["line"], "{not json");
    assert_eq!(q[0]["offset"], line(0).len());
    assert!(
        q[1]["reason"].as_str().unwrap().contains("actor: required"),
        "{}",
        q[1]
    );
    assert_eq!(q[2]["kind"], "line_too_long");
    assert_eq!(q[3]["kind"], "line_too_long");
    assert_eq!(q[3]["line_bytes"], 6000);
    assert!(q[3]["reason"].as_str().unwrap().contains("6000 bytes"));
    assert!(
        q.iter()
            .all(|e| e["path"] == h.path("a.jsonl").display().to_string())
    );
    // Quarantined lines are not quarantined again after a restart.
    h.crash();
    h.step();
    assert_eq!(h.quarantined().len(), 4);
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end_then_the_new_one() {
    let mut h = Harness::new(&["app.log"], &[], 256);
    h.append("app.log", &lines(0..5));
    h.step();
    // Written after the last read, then rotated out of the glob, then a new file.
    h.append("app.log", &lines(5..8));
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log", &lines(8..10));
    h.step();
    let mut got = h.messages();
    got.sort_by_key(|m| m[2..].parse::<u64>().unwrap());
    assert_eq!(got, ns(0..10));
    assert_eq!(
        h.tailer().paths(),
        [h.path("app.log")],
        "the rotated file is released"
    );
    // The writer keeps writing to the renamed file for a moment: picked up if not released.
}

#[test]
fn checkpoints_of_finished_files_are_dropped_once_the_files_are_gone() {
    let mut h = Harness::new(&["app.log"], &[], 32);
    let key_of = |path: &std::path::Path| {
        let m = fs::metadata(path).unwrap();
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
        }
    };
    h.append("app.log", &lines(0..5));
    h.step();
    let rotated = key_of(&h.path("app.log"));
    // Renamed out of the globs: finished and released, its checkpoint kept while it is there.
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log", &lines(5..7));
    h.step();
    h.step();
    assert_eq!(h.tailer().paths(), [h.path("app.log")]);
    let kept = h
        .tailer()
        .checkpoints
        .get(rotated)
        .expect("kept while the file is there");
    assert_eq!(
        kept.offset,
        fs::metadata(h.path("app.log.1")).unwrap().len()
    );
    let at = |h: &mut Harness, key| {
        h.tailer()
            .checkpoints
            .all()
            .into_iter()
            .find(|c| c.position.key == key)
            .and_then(|c| c.path)
    };
    assert_eq!(
        at(&mut h, rotated),
        Some(h.path("app.log.1")),
        "where it went"
    );
    // A position read back from the spool for a file released long ago (no path known).
    let stray = FileKey {
        dev: rotated.dev,
        ino: u64::MAX - 7,
    };
    h.tailer().checkpoints.advance(FilePosition {
        key: stray,
        fingerprint: Fingerprint::default(),
        offset: 10,
        tail: TailCheck::default(),
        stamp: 1,
    });
    // The rotated file is deleted: both go when not found at two rescans, and from the
    // persisted table.
    fs::remove_file(h.path("app.log.1")).unwrap();
    h.step();
    assert!(h.tailer().checkpoints.get(rotated).is_some(), "missed once");
    h.step();
    assert_eq!(h.tailer().checkpoints.get(rotated), None);
    assert_eq!(h.tailer().checkpoints.get(stray), None);
    let current = key_of(&h.path("app.log"));
    assert!(
        h.tailer().checkpoints.get(current).is_some(),
        "the tailed file keeps its own"
    );
    h.tailer().persist();
    let persisted = fs::read_to_string(h.data.join("checkpoints.json")).unwrap();
    assert!(
        !persisted.contains(&format!("\"ino\":{}", rotated.ino)),
        "{persisted}"
    );
    assert!(
        persisted.contains(&format!("\"ino\":{}", current.ino)),
        "{persisted}"
    );
    assert_eq!(h.messages(), ns(0..7));
}

#[test]
fn a_renamed_file_inside_the_glob_is_followed_not_reread() {
    let mut h = Harness::new(&["*.log", "*.log.*"], &[], 32);
    h.append("app.log", &lines(0..3));
    h.step();
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log.1", &lines(3..4));
    h.step();
    h.restart();
    h.step();
    assert_eq!(h.messages(), ns(0..4));
}

#[test]
fn copytruncate_restarts_at_zero_and_skips_nothing() {
    let mut h = Harness::new(&["*.log", "*.log.*"], &[], 32);
    h.append("app.log", &lines(0..5));
    h.step();
    h.append("app.log", &lines(5..7));
    // logrotate copytruncate: copy (inside the glob), truncate, the writer goes on at 0.
    fs::copy(h.path("app.log"), h.path("app.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(h.path("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    // More than was there before: the size alone would not show the truncation.
    h.append("app.log", &lines(7..20));
    h.step();
    let records = h.records();
    let by_message: BTreeMap<String, BTreeSet<String>> =
        records.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.message.clone().unwrap())
                .or_default()
                .insert(r.id().to_string());
            m
        });
    assert_eq!(
        by_message.keys().cloned().collect::<BTreeSet<_>>(),
        ns(0..20).into_iter().collect(),
        "every line once at least"
    );
    assert!(
        by_message.values().all(|ids| ids.len() == 1),
        "a line read from the copy has the id it had in the original: {by_message:?}"
    );
}

#[test]
fn a_chunk_committed_after_the_next_read_found_a_truncation_changes_nothing() {
    // Rounds overlap: a round reads while the previous round's append is fsynced, and commits
    // that append afterwards. When the read found the file truncated and rewritten, the older
    // chunk's position (in the old content) must not become the committed one, or the next
    // read would see a "truncation" again and read the new content twice.
    let mut h = Harness::new(&["*.log"], &[], 32);
    h.append("app.log", &lines(0..4));
    let t = h.tailer();
    t.discover();
    assert!(t.round(), "the append of lines 0..4 is on its way");
    OpenOptions::new()
        .write(true)
        .open(h.path("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    h.append("app.log", &lines(100..103));
    let t = h.tailer();
    t.discover();
    // Finds the truncation, reads 100..103, then commits the append of 0..4.
    assert!(t.round());
    h.append("app.log", &lines(103..105));
    let t = h.tailer();
    t.discover();
    // Reads 103..105 before the append of 100..103 is committed.
    assert!(t.round());
    t.drain();
    h.step();
    let mut messages = h.messages();
    messages.sort();
    let mut want: Vec<String> = ns(0..4).into_iter().chain(ns(100..105)).collect();
    want.sort();
    assert_eq!(messages, want, "each line once");
    let size = fs::metadata(h.path("app.log")).unwrap().len();
    let key = {
        let m = fs::metadata(h.path("app.log")).unwrap();
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
        }
    };
    assert_eq!(h.tailer().checkpoints.get(key).unwrap().offset, size);
}

#[test]
fn a_truncation_before_the_first_commit_is_seen_even_when_the_file_grew_back() {
    // Nothing of the file committed yet (its offset is 0, so there are no bytes before it to
    // check) and the first read in flight: copytruncate, then more written than had been read,
    // all between two reads. The bytes before the read position tell.
    let mut h = Harness::new(&["*.log"], &[], 32);
    h.append("app.log", &lines(0..4));
    let t = h.tailer();
    t.discover();
    assert!(t.round(), "the append of lines 0..4 is on its way");
    OpenOptions::new()
        .write(true)
        .open(h.path("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    h.append("app.log", &lines(100..110));
    h.step();
    h.step();
    assert_each_once(&h, ns(0..4).into_iter().chain(ns(100..110)));
    assert!(h.quarantined().is_empty(), "{:?}", h.quarantined());
}

/// Reads `file` to its end, committing every chunk: each record's message and id.
fn read_to_end(file: &mut tailer::TailedFile) -> Vec<(String, String)> {
    let rules = codestax_common::Rules {
        max_record_bytes: usize::MAX,
        allow_custom_actions: true,
        now: chrono::Utc::now(),
        collector_entries: false,
    };
    let mut parser = codestax_common::LineParser::default();
    let mut read = Vec::new();
    for _ in 0..100 {
        let chunk = file.poll(&rules, &mut parser, 1 << 20).unwrap();
        for entry in &chunk.entries {
            let record = entry.to_record().unwrap().unwrap();
            read.push((record.message.clone().unwrap(), record.id().to_string()));
        }
        file.commit(&chunk);
        // A read that found a truncation is followed by one of the new content.
        if !chunk.more && !chunk.truncated && file.at_end() {
            return read;
        }
    }
    panic!("not at the end after 100 reads");
}

#[test]
fn a_truncation_just_after_the_size_was_taken_keeps_the_ids_a_copy_gets() {
    // Seen in CI (agent binary test, copytruncate then kill -9): the size a read is bounded by
    // was taken of the old content, the file truncated, its first bytes read again while it was
    // empty, then the new lines read under ids hashed with no first bytes at all. A copy of the
    // file (the next copytruncate) gave the same lines other ids: duplicates downstream.
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("app.log");
    let config = FileSourceConfig {
        include: vec!["*.log".into()],
        org_id: Some("acme".into()),
        fingerprint_bytes: 64,
        ..Default::default()
    };
    let settings = FileSettings::from_config(&config, root.path(), 16 << 10).unwrap();
    let checkpoints = CheckpointStore::open(&root.path().join("c.json"), []).unwrap();
    fs::write(&path, lines(0..8)).unwrap();
    let mut file = tailer::TailedFile::open(&path, settings.clone(), &checkpoints).unwrap();
    assert_eq!(read_to_end(&mut file).len(), 8);

    // copytruncate right after the size is taken; the app writes on right after the first
    // bytes are read again (fewer bytes than the old content: the old size would cover them).
    let live = path.clone();
    let mut once = (false, false);
    file.between_steps = Some(Box::new(move |step| match step {
        tailer::ReadStep::SizeTaken if !once.0 => {
            once.0 = true;
            let f = OpenOptions::new().write(true).open(&live).unwrap();
            f.set_len(0).unwrap();
        }
        tailer::ReadStep::PrefixTaken if !once.1 => {
            once.1 = true;
            let mut f = OpenOptions::new().append(true).open(&live).unwrap();
            f.write_all(lines(100..104).as_bytes()).unwrap();
        }
        _ => {}
    }));
    let after: BTreeMap<String, String> = read_to_end(&mut file).into_iter().collect();
    assert_eq!(after.keys().cloned().collect::<Vec<_>>(), ns(100..104));

    fs::copy(&path, root.path().join("app.log.1")).unwrap();
    let mut copy =
        tailer::TailedFile::open(&root.path().join("app.log.1"), settings, &checkpoints).unwrap();
    let in_copy: BTreeMap<String, String> = read_to_end(&mut copy).into_iter().collect();
    assert_eq!(
        after, in_copy,
        "the same lines under the same ids in the copy"
    );
}

#[test]
fn a_checkpoint_whose_tail_was_taken_of_a_shorter_file_is_not_trusted() {
    // The tail check of a position used to be read from the file after the lines were parsed:
    // a copytruncate in between gave a tail of 0 bytes, which matched anything, so the rewrite
    // went unseen and reading went on mid-line in the new content with ids derived from the old
    // first bytes (seen end to end: a bogus quarantine entry and records under two ids). Tails
    // are now taken of the bytes read, and a short one never matches.
    let mut h = Harness::new(&["*.log"], &[], 64);
    h.append("a.log", &lines(0..3));
    let meta = fs::metadata(h.path("a.log")).unwrap();
    let prefix = fs::read(h.path("a.log")).unwrap();
    let short_tail = FilePosition {
        key: FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        fingerprint: fingerprint::fingerprint_of(&prefix[..64]),
        offset: 50, // mid-line
        tail: TailCheck::default(),
        stamp: 1,
    };
    h.tailer().checkpoints.advance(short_tail);
    h.step();
    assert_eq!(h.messages(), ns(0..3));
    assert_eq!(h.quarantined(), Vec::<serde_json::Value>::new());
}

#[test]
fn truncation_to_a_smaller_size_is_seen() {
    let mut h = Harness::new(&["app.log"], &[], 32);
    h.append("app.log", &lines(0..5));
    h.step();
    OpenOptions::new()
        .write(true)
        .open(h.path("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    h.append("app.log", &lines(5..6));
    h.step();
    assert_eq!(h.messages(), ns(0..6));
}

#[test]
fn a_deleted_file_is_finished_then_released() {
    let mut h = Harness::new(&["*.log"], &[], 256);
    h.append("a.log", &lines(0..2));
    h.step();
    h.append("a.log", &lines(2..4));
    let key = fs::metadata(h.path("a.log")).unwrap().ino();
    fs::remove_file(h.path("a.log")).unwrap();
    h.step();
    assert_eq!(h.messages(), ns(0..4));
    assert!(h.tailer().paths().is_empty());
    h.restart();
    let checkpoints = CheckpointStore::open(&h.data.join("checkpoints.json"), []).unwrap();
    assert!(
        checkpoints.all().iter().all(|c| c.position.key.ino != key),
        "released with its checkpoint"
    );
}

#[test]
fn files_with_identical_first_lines_are_told_apart() {
    let mut h = Harness::new(&["*.log"], &[], 32);
    // Both files start with the same 60-odd bytes (> the 32-byte fingerprint).
    h.append("a.log", &lines(0..3));
    h.append("b.log", &lines(100..103));
    h.step();
    h.append("a.log", &lines(3..4));
    h.restart();
    h.step();
    let mut got = h.messages();
    got.sort();
    let mut want = [ns(0..4), ns(100..103)].concat();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_reused_inode_with_another_fingerprint_is_read_from_the_start() {
    let mut h = Harness::new(&["*.log"], &[], 256);
    h.append("a.log", &lines(0..2));
    let meta = fs::metadata(h.path("a.log")).unwrap();
    // A stale checkpoint for the same inode, from a file that began differently.
    let stale = FilePosition {
        key: FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        fingerprint: Fingerprint { len: 40, hash: 1 },
        offset: 50,
        tail: TailCheck::default(),
        stamp: 0,
    };
    h.tailer().checkpoints.advance(stale);
    h.step();
    assert_eq!(h.messages(), ns(0..2));
}

#[test]
fn files_shorter_than_the_fingerprint_resume_after_a_restart() {
    let mut h = Harness::new(&["*.log"], &[], 4096);
    h.append("a.log", &lines(0..1));
    h.step();
    h.crash();
    h.append("a.log", &lines(1..2));
    h.step();
    h.restart();
    h.append("a.log", &lines(2..3));
    h.step();
    assert_eq!(h.messages(), ns(0..3), "no line twice, none missing");
}

#[test]
fn checkpoints_are_durable_with_the_records_after_a_crash() {
    let mut h = Harness::new(&["*.log"], &[], 256);
    for round in 0..5 {
        h.append("a.log", &lines(round * 10..round * 10 + 10));
        h.step();
        // The table is written when a file is first opened, before anything of it is read:
        // without it, the positions come from the spool.
        let _ = fs::remove_file(h.data.join("checkpoints.json"));
        h.crash();
    }
    h.step();
    assert_eq!(h.messages(), ns(0..50));
}

fn key_of(path: &Path) -> FileKey {
    let m = fs::metadata(path).unwrap();
    FileKey {
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// Every line of `want` is in the spool, once, and nothing else.
fn assert_each_once(h: &Harness, want: impl IntoIterator<Item = String>) {
    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in h.records() {
        ids.entry(r.message.clone().unwrap())
            .or_default()
            .push(r.id().to_string());
    }
    let want: BTreeSet<String> = want.into_iter().collect();
    let got: BTreeSet<String> = ids.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, never written {extra:?}"
    );
    for (message, ids) in &ids {
        assert_eq!(ids.len(), 1, "{message} spooled under {ids:?}");
    }
}

#[test]
fn files_rotated_out_of_the_globs_while_the_agent_was_down_are_read_to_their_end() {
    // The agent reads app.jsonl, then dies (its table as written at the file's discovery, or
    // written a moment ago, plus the positions in the spool). While it is down the file it was
    // reading is rotated out of the globs with lines it had not read, and a file it never saw
    // is created, written and rotated too; logrotate's way (shifting .1 to .2) or numbered on.
    for (persisted, shift) in [(false, false), (true, true), (false, true)] {
        let context = format!("table persisted: {persisted}, shifting: {shift}");
        let mut h = Harness::new(&["*.jsonl"], &[], 64);
        h.append("app.jsonl", &lines(0..5));
        h.step();
        h.append("app.jsonl", &lines(5..8)); // not read before the crash
        if persisted {
            h.tailer().persist();
        }
        h.kill();
        fs::rename(h.path("app.jsonl"), h.path("app.jsonl.1")).unwrap();
        h.append("app.jsonl.1", &lines(8..9)); // the writer's last line before it reopens
        h.append("app.jsonl", &lines(9..12));
        if shift {
            fs::rename(h.path("app.jsonl.1"), h.path("app.jsonl.2")).unwrap();
            fs::rename(h.path("app.jsonl"), h.path("app.jsonl.1")).unwrap();
        } else {
            fs::rename(h.path("app.jsonl"), h.path("app.jsonl.2")).unwrap();
        }
        h.append("app.jsonl", &lines(12..14));
        h.start();
        h.step();
        h.step();
        assert_each_once(&h, ns(0..14));
        assert_eq!(
            h.tailer().paths(),
            [h.path("app.jsonl")],
            "{context}: the rotated files are released"
        );
        assert_eq!(h.metrics.files_lost.get(), 0, "{context}");
        // Nothing is read again after another restart, nor after a crash.
        h.restart();
        h.step();
        h.crash();
        h.step();
        h.step();
        assert_each_once(&h, ns(0..14));
    }
}

#[test]
fn a_file_gone_before_it_was_read_is_reported_once_with_the_bytes_not_read() {
    let mut h = Harness::new(&["*.jsonl"], &[], 64);
    h.append("app.jsonl", &lines(0..20));
    h.append("done.jsonl", &lines(100..103));
    let size = fs::metadata(h.path("app.jsonl")).unwrap().len();
    let key = key_of(&h.path("app.jsonl"));
    let t = h.tailer();
    t.discover();
    // One round reads 700 bytes of each file (all of done.jsonl) and sees their sizes.
    t.round();
    t.settle();
    let offset = t.checkpoints.get(key).unwrap().offset;
    assert!(offset > 0 && offset < size, "{offset} of {size}");
    t.persist(); // as the file source does every second
    h.kill();
    // Both deleted while the agent is down: one was read to its end, not the other.
    fs::remove_file(h.path("app.jsonl")).unwrap();
    fs::remove_file(h.path("done.jsonl")).unwrap();
    h.start();
    h.step();
    assert_eq!(
        h.metrics.files_lost.get(),
        0,
        "missed once: it may have been renamed while its directory was listed"
    );
    h.step();
    assert_eq!(h.metrics.files_lost.get(), 1);
    assert_eq!(h.metrics.file_bytes_lost.get(), size - offset);
    assert!(
        h.metrics.render().contains(&format!(
            "codestax_agent_file_bytes_lost_total {}",
            size - offset
        )),
        "{}",
        h.metrics.render()
    );
    assert!(h.tailer().checkpoints.all().is_empty(), "forgotten");
    // Once: not again at the next discoveries, nor after a restart (the spool still holds the
    // file's positions, read back without a path or a size).
    h.step();
    assert_eq!(h.metrics.files_lost.get(), 1);
    h.crash();
    for _ in 0..3 {
        h.step();
    }
    assert_eq!(h.metrics.files_lost.get(), 0);
    assert!(h.tailer().checkpoints.all().is_empty());
}

#[test]
fn old_archives_and_compressed_rotations_are_not_read() {
    let mut h = Harness::new(&["*.jsonl"], &[], 64);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    // Archives from before the agent ever ran, under rotated names.
    h.append("app.jsonl.3", &lines(1000..1003));
    h.append("app.jsonl-20200101", &lines(1003..1005));
    for old in ["app.jsonl.3", "app.jsonl-20200101"] {
        let f = OpenOptions::new().append(true).open(h.path(old)).unwrap();
        f.set_modified(an_hour_ago).unwrap();
    }
    h.append("app.jsonl", &lines(0..3));
    h.step();
    h.kill();
    // While the agent is down: a rotation, then logrotate's compression of it.
    fs::rename(h.path("app.jsonl"), h.path("app.jsonl.1")).unwrap();
    h.append("app.jsonl", &lines(3..5));
    fs::rename(h.path("app.jsonl"), h.path("app.jsonl.2")).unwrap();
    fs::write(
        h.path("app.jsonl.2.gz"),
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00junk\n",
    )
    .unwrap();
    fs::remove_file(h.path("app.jsonl.2")).unwrap(); // never read: its lines are lost
    h.append("app.jsonl", &lines(5..7));
    h.start();
    for _ in 0..3 {
        h.step();
    }
    assert_each_once(&h, ns(0..3).into_iter().chain(ns(5..7)));
    assert!(h.quarantined().is_empty(), "{:?}", h.quarantined());
    assert_eq!(
        h.metrics.files_lost.get(),
        0,
        "a file the agent never saw cannot be reported; app.jsonl.1 was read to its end"
    );
}

#[test]
fn a_file_renamed_to_an_excluded_name_is_read_to_its_end() {
    let mut h = Harness::new(&["*.jsonl"], &["*.skip.jsonl"], 64);
    // Renamed while tailed, with lines not read yet, and one more written after the rename.
    h.append("a.jsonl", &lines(0..3));
    h.step();
    h.append("a.jsonl", &lines(3..5));
    fs::rename(h.path("a.jsonl"), h.path("a.skip.jsonl")).unwrap();
    h.append("a.skip.jsonl", &lines(5..6));
    h.step();
    // Renamed while the agent was down.
    h.append("b.jsonl", &lines(10..13));
    h.step();
    h.append("b.jsonl", &lines(13..15));
    h.kill();
    fs::rename(h.path("b.jsonl"), h.path("b.skip.jsonl")).unwrap();
    h.start();
    h.step();
    // Created and renamed between two discoveries: the agent learns of it by the rename event
    // only.
    h.append("c.jsonl", &lines(20..23));
    let (from, to) = (h.path("c.jsonl"), h.path("c.skip.jsonl"));
    fs::rename(&from, &to).unwrap();
    h.tailer().renamed(&from, &to);
    h.step();
    // Excluded from the start: never read.
    h.append("d.skip.jsonl", &lines(30..31));
    h.step();
    assert_each_once(&h, [ns(0..6), ns(10..15), ns(20..23)].concat());
    assert!(h.tailer().paths().is_empty(), "{:?}", h.tailer().paths());
}

#[test]
fn a_file_adopted_out_of_the_globs_is_read_after_a_crash_that_came_first() {
    // Found renamed away before it was opened, then the agent dies before reading it: it is at
    // the path its checkpoint names, out of the globs, not read to its end.
    let mut h = Harness::new(&["*.jsonl"], &[], 64);
    h.append("c.jsonl", &lines(0..3));
    let (from, to) = (h.path("c.jsonl"), h.path("c.jsonl.1"));
    fs::rename(&from, &to).unwrap();
    let t = h.tailer();
    t.renamed(&from, &to);
    t.discover();
    assert_eq!(t.paths(), std::slice::from_ref(&to), "adopted");
    h.kill();
    h.start();
    h.step();
    assert_each_once(&h, ns(0..3));
    assert!(h.tailer().paths().is_empty());
    // Released read to its end: not read again.
    h.restart();
    h.step();
    assert_each_once(&h, ns(0..3));
}

#[test]
fn files_created_and_rotated_between_two_discoveries_are_read() {
    // logrotate shifting twice before the agent handles the events: each rename event names
    // app.jsonl.1, which by then holds the last file rotated; the one before it has moved on to
    // app.jsonl.2. What was renamed away from a watched name is looked for next to it.
    let mut h = Harness::new(&["*.jsonl"], &[], 64);
    h.append("app.jsonl", &lines(0..2));
    h.step();
    let shift = |h: &Harness| {
        for n in (1..3).rev() {
            let from = h.path(&format!("app.jsonl.{n}"));
            if from.exists() {
                fs::rename(from, h.path(&format!("app.jsonl.{}", n + 1))).unwrap();
            }
        }
        fs::rename(h.path("app.jsonl"), h.path("app.jsonl.1")).unwrap();
    };
    shift(&h);
    h.append("app.jsonl", &lines(2..4));
    shift(&h);
    h.append("app.jsonl", &lines(4..6));
    shift(&h);
    h.append("app.jsonl", &lines(6..7));
    let (from, to) = (h.path("app.jsonl"), h.path("app.jsonl.1"));
    for _ in 0..3 {
        h.tailer().renamed(&from, &to);
    }
    h.step();
    h.step();
    assert_each_once(&h, ns(0..7));
    assert_eq!(h.tailer().paths(), [h.path("app.jsonl")]);
}

#[test]
fn a_checkpoint_whose_inode_holds_another_file_is_reported_and_forgotten() {
    let mut h = Harness::new(&["*.jsonl"], &[], 64);
    fs::write(h.path("notes.txt"), "another file under the inode\n").unwrap();
    let key = key_of(&h.path("notes.txt"));
    let prefix = line(0);
    let gone = h.path("gone.jsonl");
    let t = h.tailer();
    t.checkpoints.opened(
        FilePosition {
            key,
            fingerprint: fingerprint::fingerprint_of(&prefix.as_bytes()[..64]),
            offset: 100,
            tail: fingerprint::tail_check_of(&prefix.as_bytes()[36..100]),
            stamp: t.checkpoints.next_stamp(),
        },
        &gone,
        400,
    );
    h.step();
    assert_eq!(
        h.metrics.files_lost.get(),
        1,
        "found, and not the same file"
    );
    assert_eq!(h.metrics.file_bytes_lost.get(), 300);
    assert_eq!(h.tailer().checkpoints.get(key), None);
    assert!(h.records().is_empty(), "notes.txt is not read");
}

/// A tailer of `<root>/logs/*.log` (created) for org acme, outside the [`Harness`], with its
/// spool, checkpoints and quarantine under `root` and server options adjusted by `adjust`.
fn lone_tailer(
    root: &Path,
    spool_options: SpoolOptions,
    adjust: impl FnOnce(&mut FileServerOptions),
) -> (FileTailer, Spool, Arc<Metrics>) {
    let logs = root.join("logs");
    fs::create_dir_all(&logs).unwrap();
    let (spool, recovery) = Spool::open(&root.join("spool"), spool_options).unwrap();
    let checkpoints = CheckpointStore::open(&root.join("c.json"), recovery.file_positions).unwrap();
    let metrics = Arc::new(Metrics::new());
    let quarantine = Quarantine::open(&root.join("q"), metrics.clone()).unwrap();
    let config = FileSourceConfig {
        include: vec!["*.log".into()],
        org_id: Some("acme".into()),
        ..Default::default()
    };
    let settings = FileSettings::from_config(&config, &logs, 16 << 10).unwrap();
    let mut server_options =
        FileServerOptions::new(Duration::from_secs(10), spool_options.max_bytes);
    adjust(&mut server_options);
    let tailer = FileTailer::new(
        vec![settings],
        server_options,
        spool.clone(),
        checkpoints,
        quarantine,
        metrics.clone(),
    );
    (tailer, spool, metrics)
}

#[test]
fn a_finishing_file_makes_no_round_wait_for_the_spool_until_it_can_go() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    let spool_options = SpoolOptions {
        max_bytes: 64 << 20,
        segment_bytes: 1 << 20,
    };
    let (mut t, _, _) = lone_tailer(root.path(), spool_options, |o| {
        o.finish_grace = Duration::from_millis(300)
    });
    fs::write(logs.join("a.log"), lines(0..3)).unwrap();
    fs::write(logs.join("b.log"), lines(10..13)).unwrap();
    t.discover();
    t.drain();
    // a.log leaves the globs: it finishes for the grace period while b.log is read.
    fs::rename(logs.join("a.log"), logs.join("a.old")).unwrap();
    OpenOptions::new()
        .append(true)
        .open(logs.join("b.log"))
        .unwrap()
        .write_all(lines(13..15).as_bytes())
        .unwrap();
    t.discover();
    assert!(t.round(), "b.log's new lines are on their way");
    t.finish();
    assert!(
        t.append_in_flight(),
        "nothing can be released yet: the append is not waited for"
    );
    assert_eq!(t.paths(), [logs.join("a.log"), logs.join("b.log")]);
    std::thread::sleep(Duration::from_millis(350));
    t.drain();
    t.finish();
    assert!(!t.append_in_flight());
    assert_eq!(
        t.paths(),
        [logs.join("b.log")],
        "released after the grace period"
    );
}

#[test]
fn a_full_spool_pauses_reading_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    let spool_options = SpoolOptions {
        max_bytes: 64 << 10,
        segment_bytes: 8 << 10,
    };
    let (mut t, spool, metrics) = lone_tailer(root.path(), spool_options, |o| {
        o.full_pause = Duration::from_millis(1)
    });
    fs::write(logs.join("a.log"), lines(0..2000)).unwrap();
    let mut reader = spool.reader();
    let mut seen = Vec::new();
    t.discover();
    for _ in 0..10_000 {
        if !t.has_work() {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.round();
        // The collector acknowledges what was read, slowly.
        let mut last = None;
        for _ in 0..20 {
            match reader.try_next().unwrap() {
                Some(e) => {
                    if let Some(r) = e.entry.to_record() {
                        seen.push(r.unwrap().message.unwrap());
                    }
                    last = Some(e.end);
                }
                None => break,
            }
        }
        if let Some(end) = last {
            spool.ack(end).unwrap();
            spool.delete_acked().unwrap();
        }
        if seen.len() == 2000 {
            break;
        }
    }
    assert!(
        metrics.spool_full_pauses.get() > 0,
        "the spool filled up: {} seen, {:?}",
        seen.len(),
        spool.stats()
    );
    assert_eq!(seen, ns(0..2000));
}

/// A small deterministic random source for the model test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug)]
enum Action {
    Write {
        lines: u64,
        partial: bool,
    },
    RenameRotate {
        into_glob: bool,
    },
    /// Renamed out of the globs under a rotated name (`app.log-N`), whether the agent has seen
    /// the file or not; the rename event is passed on unless the agent is "down" (a crash
    /// follows at once).
    RenameRotateAway {
        crash: bool,
    },
    CopyTruncate,
    DeleteRotated,
    Step,
    Crash,
    Restart,
}

/// Random writes, rename rotations (into and out of the glob), copytruncates, deletions of
/// rotated files, agent crashes and restarts; then every complete line written must be in the
/// spool, each under one id, exactly once unless it was copied by copytruncate (then only
/// under the same id), and nothing half-written may appear.
#[test]
fn model_random_rotations_truncations_deletions_and_crashes() {
    let seeds: u64 = std::env::var("MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    for seed in 1..=seeds {
        run_model(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    }
}

fn run_model(seed: u64) {
    let mut rng = Rng(seed);
    let mut h = Harness::new(&["*.log", "*.log.*"], &["*.old"], 16);
    let mut next_n = 0u64;
    let mut complete = BTreeSet::new(); // lines fully written
    let mut copied = BTreeSet::new(); // lines that exist in two files
    let mut partial: Option<(u64, String)> = None; // the unfinished line of app.log
    let mut live_lines: Vec<u64> = Vec::new(); // complete lines in the current app.log
    let mut rotated: Vec<(PathBuf, bool)> = Vec::new(); // rotated files, seen by a step
    let mut rotation = 0;
    let mut log = Vec::new();
    let finish_partial = |h: &Harness,
                          partial: &mut Option<(u64, String)>,
                          complete: &mut BTreeSet<u64>,
                          live: &mut Vec<u64>| {
        if let Some((n, rest)) = partial.take() {
            h.append("app.log", &rest);
            complete.insert(n);
            live.push(n);
        }
    };
    for _ in 0..60 {
        let action = match rng.below(20) {
            0..=7 => Action::Write {
                lines: 1 + rng.below(6),
                partial: rng.below(3) == 0,
            },
            8 => Action::RenameRotate {
                into_glob: rng.below(2) == 0,
            },
            9 => Action::RenameRotateAway {
                crash: rng.below(2) == 0,
            },
            10..=11 => Action::CopyTruncate,
            12 => Action::DeleteRotated,
            13..=16 => Action::Step,
            17..=18 => Action::Crash,
            _ => Action::Restart,
        };
        log.push(format!("{action:?}"));
        match action {
            Action::Write {
                lines: k,
                partial: p,
            } => {
                finish_partial(&h, &mut partial, &mut complete, &mut live_lines);
                for _ in 0..k {
                    h.append("app.log", &line(next_n));
                    complete.insert(next_n);
                    live_lines.push(next_n);
                    next_n += 1;
                }
                if p {
                    let l = line(next_n);
                    let cut = 1 + rng.below(l.len() as u64 - 1) as usize;
                    h.append("app.log", &l[..cut]);
                    partial = Some((next_n, l[cut..].to_string()));
                    next_n += 1;
                }
            }
            Action::RenameRotate { into_glob } => {
                if !h.path("app.log").exists() {
                    continue;
                }
                // A writer finishes its line before reopening.
                finish_partial(&h, &mut partial, &mut complete, &mut live_lines);
                rotation += 1;
                let to = if into_glob {
                    h.path(&format!("app.log.{rotation}"))
                } else {
                    h.path(&format!("app.{rotation}.old"))
                };
                if !into_glob {
                    // The tailer must have opened the file before it leaves the glob (no
                    // agent can find a file it never saw under a name it does not watch);
                    // lines written after that are still read from the open descriptor.
                    h.step();
                    for _ in 0..rng.below(4) {
                        h.append("app.log", &line(next_n));
                        complete.insert(next_n);
                        next_n += 1;
                    }
                }
                fs::rename(h.path("app.log"), &to).unwrap();
                live_lines.clear();
                if into_glob {
                    rotated.push((to, false));
                } else {
                    h.step(); // read to its end while the descriptor is open
                }
            }
            Action::RenameRotateAway { crash } => {
                if !h.path("app.log").exists() {
                    continue;
                }
                finish_partial(&h, &mut partial, &mut complete, &mut live_lines);
                rotation += 1;
                let to = h.path(&format!("app.log-{rotation}"));
                if crash {
                    h.kill();
                }
                fs::rename(h.path("app.log"), &to).unwrap();
                // The writer's last line, before it reopens.
                h.append(&format!("app.log-{rotation}"), &line(next_n));
                complete.insert(next_n);
                next_n += 1;
                live_lines.clear();
                if crash {
                    h.start();
                } else {
                    let from = h.path("app.log");
                    h.tailer().renamed(&from, &to);
                }
            }
            Action::CopyTruncate => {
                if !h.path("app.log").exists() {
                    continue;
                }
                finish_partial(&h, &mut partial, &mut complete, &mut live_lines);
                rotation += 1;
                let to = h.path(&format!("app.log.{rotation}"));
                fs::copy(h.path("app.log"), &to).unwrap();
                OpenOptions::new()
                    .write(true)
                    .open(h.path("app.log"))
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                copied.extend(live_lines.drain(..));
                rotated.push((to, false));
            }
            Action::DeleteRotated => {
                // logrotate deletes old rotations; only ones the tailer has opened.
                if let Some(i) = rotated.iter().position(|(_, seen)| *seen) {
                    let (path, _) = rotated.remove(i);
                    fs::remove_file(path).unwrap();
                }
            }
            Action::Step => {
                h.step();
                for r in &mut rotated {
                    r.1 = true;
                }
            }
            Action::Crash => h.crash(),
            Action::Restart => h.restart(),
        }
    }
    finish_partial(&h, &mut partial, &mut complete, &mut live_lines);
    h.step();
    h.step();

    let context = || format!("seed {seed}, actions:\n{}", log.join("\n"));
    let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for r in h.records() {
        let n: u64 = r.message.as_deref().unwrap()[2..].parse().unwrap();
        ids.entry(n).or_default().insert(r.id().to_string());
        *counts.entry(n).or_default() += 1;
    }
    let got: BTreeSet<u64> = ids.keys().copied().collect();
    let missing: Vec<_> = complete.difference(&got).collect();
    let extra: Vec<_> = got.difference(&complete).collect();
    assert!(
        missing.is_empty(),
        "lines missing: {missing:?}\n{}",
        context()
    );
    assert!(
        extra.is_empty(),
        "lines never completed: {extra:?}\n{}",
        context()
    );
    for (n, set) in &ids {
        assert_eq!(
            set.len(),
            1,
            "line {n} under several ids {set:?}\n{}",
            context()
        );
        if !copied.contains(n) {
            assert_eq!(counts[n], 1, "line {n} spooled twice\n{}", context());
        }
    }
    assert!(
        h.quarantined().is_empty(),
        "half lines quarantined: {:?}\n{}",
        h.quarantined(),
        context()
    );
}

/// The thread with real inotify events: appends, a new file and a rename rotation are picked
/// up within moments although the rescan interval is an hour; 1,000 idle files cost no CPU.
#[test]
fn file_server_follows_events_and_idles_cheaply() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    for i in 0..1000 {
        fs::write(logs.join(format!("idle-{i}.log")), "").unwrap();
    }
    let options = SpoolOptions {
        max_bytes: 64 << 20,
        segment_bytes: 1 << 20,
    };
    let (spool, _) = Spool::open(&root.path().join("spool"), options).unwrap();
    let checkpoints = CheckpointStore::open(&root.path().join("c.json"), []).unwrap();
    let metrics = Arc::new(Metrics::new());
    let quarantine = Quarantine::open(&root.path().join("q"), metrics.clone()).unwrap();
    let config = FileSourceConfig {
        include: vec!["*.log".into()],
        org_id: Some("acme".into()),
        ..Default::default()
    };
    let settings = FileSettings::from_config(&config, &logs, usize::MAX).unwrap();
    let mut server_options = FileServerOptions::new(Duration::from_secs(3600), options.max_bytes);
    server_options.finish_grace = Duration::from_millis(100);
    let tailer = FileTailer::new(
        vec![settings],
        server_options,
        spool.clone(),
        checkpoints,
        quarantine,
        metrics.clone(),
    );
    let server = FileServer::start(tailer).unwrap();
    let mut reader = spool.reader();
    let mut seen = Vec::new();
    let mut wait_for = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < n && std::time::Instant::now() < deadline {
            match reader.try_next().unwrap() {
                Some(e) => {
                    if let Some(r) = e.entry.to_record() {
                        seen.push(r.unwrap().message.unwrap());
                    }
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        seen.clone()
    };
    let append = |name: &str, text: &str| {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(name))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    std::thread::sleep(Duration::from_millis(300));
    append("idle-7.log", &lines(0..3));
    assert_eq!(wait_for(3), ns(0..3));
    append("new.log", &lines(3..5));
    assert_eq!(wait_for(5), ns(0..5));
    fs::rename(logs.join("new.log"), logs.join("new.log.1")).unwrap();
    append("new.log.1", &lines(5..6)); // the writer has not reopened yet
    append("new.log", &lines(6..7));
    let mut got = wait_for(7);
    got.sort_by_key(|m| m[2..].parse::<u64>().unwrap());
    assert_eq!(got, ns(0..7));

    // Idle: 1,000 files, no writes. The file source thread's CPU time over a second stays
    // tiny (other tests run in this process, so only that thread is measured).
    std::thread::sleep(Duration::from_millis(300));
    let task = fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == "file-source"))
        .expect("the file-source thread");
    let cpu = || {
        let stat = fs::read_to_string(task.join("stat")).unwrap();
        codestax_harness::stat_cpu_seconds(&stat).unwrap()
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu() - before;
    eprintln!("idle file-source thread with 1001 files: {used:.2} s of CPU in 1 s");
    assert!(used <= 0.05, "{used:.2} s of CPU in one idle second");
    assert_eq!(metrics.files_open.get(), 1001);
    server.stop();
}
