//! The collector on a full disk, end to end: the real binary with its write-ahead log or its index
//! on a small tmpfs that the test fills with a ballast file until writes fail with ENOSPC, then
//! frees. Ingest (NDJSON, OTLP/HTTP, OTLP/gRPC) answers 503 with a code and message naming what
//! is full and `Retry-After`; what is committed stays readable; `/readyz` answers 503 with the
//! reason; once the ballast is gone ingest resumes without a restart and every acknowledged
//! record is searchable exactly once, its hash chain intact (`codestax verify` on an export).
//!
//! Mounting needs root (as on CI): elsewhere each test prints `SKIPPED` and returns.

use codestax_tests::{Collector, Tmpfs, now_rfc3339, otlp_json, record, run_cli};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

const ORG: &str = "acme";
/// What `strerror(ENOSPC)` says, as the messages carry it.
const ENOSPC_TEXT: &str = "No space left on device (os error 28)";

/// The collector's data directory with its WAL and its index each on a tmpfs of their own, or
/// why not (not root).
struct Disks {
    // Dropped in this order: the collector first, then the mounts, then the directory.
    collector: Collector,
    wal: Tmpfs,
    index: Tmpfs,
    dir: tempfile::TempDir,
}

fn start() -> Option<Disks> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mount = |name: &str, mib| match Tmpfs::mount(&data.join(name), mib) {
        Ok(fs) => Some(fs),
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs ({why}) (needs root to mount tmpfs)");
            None
        }
    };
    let wal = mount("wal", 16)?;
    let index = mount("index", 48)?;
    // The WAL has a disk of its own here: nothing kept free, so the ballast's ENOSPC is what
    // refuses it (the room kept free has a test of its own below).
    let collector = Collector::start(&data, "[wal]\nkeep_free_bytes = 0\n");
    Some(Disks {
        collector,
        wal,
        index,
        dir,
    })
}

/// `n` records with ids `{prefix}-0..`, each with some bulk, so a batch needs fresh pages.
fn records(prefix: &str, n: usize) -> Vec<Value> {
    records_with(prefix, n, |_| "x".repeat(400))
}

/// As [`records`], with bulk that does not compress (the index's store compresses blocks).
fn incompressible_records(prefix: &str, n: usize) -> Vec<Value> {
    let mut state = prefix.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
    });
    records_with(prefix, n, |_| {
        (0..100)
            .map(|_| {
                // xorshift64: enough entropy that no block compresses.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("{:016x}", state)
            })
            .collect()
    })
}

/// As [`incompressible_records`], dated three weeks ago: a past week, whose records the index
/// stages in memory and indexes in bulk (`index.cold_flush_after`), so it holds them back.
fn past_incompressible_records(prefix: &str, n: usize) -> Vec<Value> {
    let time = (chrono::Utc::now() - chrono::Duration::days(21))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    incompressible_records(prefix, n)
        .into_iter()
        .map(|mut r| {
            r["time"] = json!(time);
            r
        })
        .collect()
}

/// The index directory of the week [`past_incompressible_records`] falls in (`YYYY-Www`).
fn past_week_dir() -> String {
    (chrono::Utc::now() - chrono::Duration::days(21))
        .format("%G-W%V")
        .to_string()
}

/// Bytes of the files in `dir` (not recursive: a partition's directory is flat).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn records_with(prefix: &str, n: usize, mut bulk: impl FnMut(usize) -> String) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut r = record(
                ORG,
                &format!("{prefix}-{i}"),
                "auth.login",
                "ada@acme.example",
                &now_rfc3339(),
            );
            r["metadata"]["note"] = json!(bulk(i));
            r
        })
        .collect()
}

/// A batch of OTLP/JSON logs with ids `{prefix}-0..`, each with some bulk as [`records`].
fn otlp(prefix: &str, n: usize) -> Value {
    let bulk = "x".repeat(400);
    otlp_json(
        ORG,
        prefix,
        n,
        "auth.login",
        &[("audit.metadata.note", &bulk)],
    )
}

/// An answer: status, `Retry-After`, body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

fn answer(r: reqwest::blocking::Response) -> Answer {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = r.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        retry_after,
        body,
    }
}

fn ingest(c: &Collector, token: &str, batch: &[Value]) -> Answer {
    let mut body = Vec::new();
    for r in batch {
        body.extend_from_slice(r.to_string().as_bytes());
        body.push(b'\n');
    }
    answer(c.post("/api/v1/ingest", token, "application/x-ndjson", body))
}

fn readyz(c: &Collector) -> Answer {
    answer(c.client().get(c.url("/readyz")).send().unwrap())
}

/// A body for an assertion message: its start.
fn short(body: &Value) -> String {
    body.to_string().chars().take(600).collect()
}

/// Checks a 503 in the API's error shape: `code`, a message containing each of `says`, and
/// `Retry-After`.
fn assert_unavailable(a: &Answer, code: &str, says: &[&str], what: &str) {
    assert_eq!(a.status, 503, "{what}: {}", short(&a.body));
    assert_eq!(a.body["error"]["code"], code, "{what}: {}", short(&a.body));
    let message = a.body["error"]["message"].as_str().unwrap_or_default();
    for s in says {
        assert!(message.contains(s), "{what}: {message:?} lacks {s:?}");
    }
    assert!(a.retry_after.is_some_and(|s| s >= 1), "{what}: Retry-After");
}

/// Ingests batches of `records(prefix..)` until one is refused; returns the ids acknowledged
/// before and the refusal.
fn ingest_until_refused(c: &Collector, token: &str, prefix: &str) -> (Vec<String>, Answer) {
    ingest_until_refused_within(c, token, prefix, Duration::from_secs(20), records)
}

fn ingest_until_refused_within(
    c: &Collector,
    token: &str,
    prefix: &str,
    within: Duration,
    records: fn(&str, usize) -> Vec<Value>,
) -> (Vec<String>, Answer) {
    let mut acked = Vec::new();
    let deadline = Instant::now() + within;
    for b in 0.. {
        let batch = records(&format!("{prefix}{b}"), 100);
        let a = ingest(c, token, &batch);
        if a.status != 200 {
            return (acked, a);
        }
        assert_eq!(a.body["accepted"], 100, "{}", short(&a.body));
        acked.extend(batch.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        assert!(Instant::now() < deadline, "ingest was never refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!()
}

/// OTLP/HTTP (JSON) and OTLP/gRPC refuse too: 503 with `Retry-After` and a `google.rpc.Status`
/// naming `says`; over gRPC RESOURCE_EXHAUSTED with a retry delay (a full disk, as a full spool).
fn assert_otlp_refused(c: &Collector, token: &str, says: &str) {
    let r = c.post(
        "/v1/logs",
        token,
        "application/json",
        otlp("otlp-refused", 100).to_string().into_bytes(),
    );
    let a = answer(r);
    assert_eq!(a.status, 503, "OTLP/HTTP: {}", short(&a.body));
    assert!(a.retry_after.is_some(), "OTLP/HTTP: Retry-After");
    let message = a.body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "OTLP/HTTP: {}", short(&a.body));

    let request: ExportLogsServiceRequest =
        serde_json::from_value(otlp("grpc-refused", 100)).unwrap();
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = LogsServiceClient::connect(c.grpc_endpoint()).await.unwrap();
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        client.export(request).await.unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(says), "{status:?}");
    use tonic_types::StatusExt;
    assert!(
        status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay)
            .is_some(),
        "gRPC: RetryInfo"
    );
}

/// After the ballast is freed at `freed`: ingests until the first 200, then waits until every
/// id of `acked` (plus that batch) is searchable exactly once; prints and returns the two times.
fn recover(
    c: &Collector,
    token: &str,
    admin: &str,
    acked: &mut Vec<String>,
    freed: Instant,
    what: &str,
) -> (Duration, Duration) {
    let batch = records("after", 100);
    let deadline = freed + Duration::from_secs(30);
    loop {
        let a = ingest(c, token, &batch);
        if a.status == 200 {
            assert_eq!(a.body["accepted"], 100, "{}", short(&a.body));
            break;
        }
        assert_eq!(a.status, 503, "{}", short(&a.body));
        assert!(Instant::now() < deadline, "{what}: ingest never resumed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_ack = freed.elapsed();
    acked.extend(batch.iter().map(|r| r["id"].as_str().unwrap().to_string()));
    let n = acked.len() as u64;
    c.wait_for_total_within(ORG, "action=auth.login", admin, n, Duration::from_secs(30));
    let searchable = freed.elapsed();
    let found: Vec<String> = c
        .search_all(ORG, "action=auth.login", admin)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<&String> = found.iter().collect();
    assert_eq!(unique.len(), found.len(), "{what}: a record is there twice");
    assert_eq!(
        unique,
        acked.iter().collect::<HashSet<_>>(),
        "{what}: searchable = acknowledged"
    );
    println!(
        "{what}: space freed -> first ingest 200 in {:.0} ms; -> all {n} acknowledged records \
         searchable in {:.0} ms",
        first_ack.as_secs_f64() * 1e3,
        searchable.as_secs_f64() * 1e3,
    );
    (first_ack, searchable)
}

/// `/readyz` answers 200 within `within`; returns how long it took.
fn wait_ready(c: &Collector, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let a = readyz(c);
        if a.status == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/readyz still 503: {}",
            short(&a.body)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Exports the whole log with the CLI and verifies its hash chain offline.
fn export_and_verify(c: &Collector, admin: &str, work: &Path) {
    let run = |args: &[&str]| {
        let out = run_cli(work, args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "codestax {args:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let url = c.url("");
    run(&[
        "export",
        "--format",
        "ndjson",
        "--output",
        "all.ndjson",
        "--url",
        &url,
        "--token",
        admin,
    ]);
    let key = c.get_json("/api/v1/signing-key", admin)["verifier_key"]
        .as_str()
        .expect("the collector's verifier key")
        .to_string();
    let summary = run(&["verify", "--input", "all.ndjson", "--public-key", &key]);
    assert!(summary.starts_with("ok: signed by "), "{summary}");
    assert!(summary.contains("unfiltered"), "{summary}");
}

/// Keys (INGEST, ORG_ADMIN) and 300 records acknowledged and searchable while the disks have
/// room; returns the keys and the records' ids.
fn seed(c: &Collector) -> (String, String, Vec<String>) {
    let token = c.create_key(ORG, "INGEST");
    let admin = c.create_key(ORG, "ORG_ADMIN");
    let first = records("first", 300);
    let a = ingest(c, &token, &first);
    assert_eq!(a.status, 200, "{}", short(&a.body));
    c.wait_for_total(ORG, "action=auth.login", &admin, 300);
    let ids = first
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    (token, admin, ids)
}

#[test]
fn a_full_index_refuses_ingest_keeps_serving_reads_and_recovers_by_itself() {
    let Some(disks) = start() else { return };
    let c = &disks.collector;
    let (token, admin, mut acked) = seed(c);

    let ballast = disks.index.fill().unwrap();
    eprintln!("index tmpfs filled with {} KiB of ballast", ballast >> 10);
    // The WAL still takes records: those acknowledged before the index's next commit fails are
    // indexed later; then ingest is refused.
    let (more, refused) = ingest_until_refused(c, &token, "during");
    acked.extend(more);
    assert_unavailable(
        &refused,
        "index_full",
        &["the index cannot be written", ENOSPC_TEXT],
        "ingest",
    );
    assert_otlp_refused(c, &token, "the index cannot be written");
    let r = readyz(c);
    assert_unavailable(
        &r,
        "index_full",
        &["the index cannot be written", ENOSPC_TEXT],
        "/readyz",
    );

    // Reads serve the last commit (their own audit records go to the WAL, indexed later).
    let found = c.search_all(ORG, "action=auth.login", &admin);
    assert!(found.len() >= 300, "{}", found.len());
    assert!(c.total(ORG, "action=auth.login", &admin) >= 300);
    let export = c.get(
        &format!("/api/v1/orgs/{ORG}/audit-log/export?format=ndjson&action=auth.login"),
        &admin,
    );
    assert_eq!(export.status(), 200);
    assert!(export.text().unwrap().lines().count() >= 300);
    let metrics = c.metrics();
    assert!(
        metrics.contains("codestax_collector_writable{part=\"index\"} 0"),
        "{metrics}"
    );

    disks.index.free().unwrap();
    let freed = Instant::now();
    recover(c, &token, &admin, &mut acked, freed, "index full");
    wait_ready(c, Duration::from_secs(5));
    let metrics = c.metrics();
    assert!(
        metrics.contains("codestax_collector_index_recoveries_total 1"),
        "{metrics}"
    );
    export_and_verify(c, &admin, disks.dir.path());
}

#[test]
fn a_full_wal_refuses_ingest_acknowledges_nothing_half_written_and_recovers_by_itself() {
    let Some(disks) = start() else { return };
    let c = &disks.collector;
    let (token, admin, mut acked) = seed(c);
    // A walk started before: its later pages record no read.
    let page = c.get_json(
        &format!("/api/v1/orgs/{ORG}/audit-log?action=auth.login&limit=100"),
        &admin,
    );
    let cursor = page["next_cursor"].as_str().unwrap().to_string();

    disks.wal.fill().unwrap();
    let (more, refused) = ingest_until_refused(c, &token, "during");
    acked.extend(more);
    let says = ["the write-ahead log cannot be written", ENOSPC_TEXT];
    assert_unavailable(&refused, "wal_full", &says, "ingest");
    assert_eq!(refused.retry_after, Some(5));

    // What is committed stays readable where no audit record is needed: facets, later pages.
    c.wait_for_total(ORG, "action=auth.login", &admin, acked.len() as u64);
    let next = c.get_json(
        &format!("/api/v1/orgs/{ORG}/audit-log?action=auth.login&limit=100&cursor={cursor}"),
        &admin,
    );
    assert_eq!(next["entries"].as_array().unwrap().len(), 100);
    // A first page and an export must record themselves in the log first. Such a record is
    // small: it may still fit in what the ballast left of the WAL's last page, and the read is
    // served; once none fits, reads that must record themselves are refused, before any data
    // is handed out.
    let mut served = 0;
    let search = loop {
        let a = answer(c.get(&format!("/api/v1/orgs/{ORG}/audit-log"), &admin));
        if a.status != 200 {
            break a;
        }
        served += 1;
        assert!(served < 20, "first pages are still recorded");
    };
    assert_unavailable(&search, "wal_full", &says, "search");
    let export = answer(c.get(
        &format!("/api/v1/orgs/{ORG}/audit-log/export?format=ndjson"),
        &admin,
    ));
    assert_unavailable(&export, "wal_full", &says, "export");
    assert!(
        export.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("could not record this read in the audit log"),
        "{}",
        short(&export.body)
    );
    assert_otlp_refused(c, &token, "the write-ahead log cannot be written");
    assert_unavailable(&readyz(c), "wal_full", &says, "/readyz");
    let metrics = c.metrics();
    assert!(
        metrics.contains("codestax_collector_writable{part=\"wal\"} 0"),
        "{metrics}"
    );

    // Freed: an idle collector turns ready by itself (the WAL's disk is probed).
    disks.wal.free().unwrap();
    let ready = wait_ready(c, Duration::from_secs(5));
    println!(
        "WAL full: space freed -> /readyz 200 with no ingest meanwhile in {:.0} ms",
        ready.as_secs_f64() * 1e3
    );

    // Full again, then freed with senders retrying: the first retry after the space returns
    // goes through.
    disks.wal.fill().unwrap();
    let (more, refused) = ingest_until_refused(c, &token, "again");
    acked.extend(more);
    assert_unavailable(&refused, "wal_full", &says, "ingest, second time");
    disks.wal.free().unwrap();
    let freed = Instant::now();
    recover(c, &token, &admin, &mut acked, freed, "WAL full");
    wait_ready(c, Duration::from_secs(5));
    export_and_verify(c, &admin, disks.dir.path());
}

/// The collector fills its own disk (WAL, index and trees on one small tmpfs, no ballast): it
/// must stop taking records while the index can still commit what was acknowledged, so every
/// acknowledged record becomes searchable and the WAL's indexed segments are deleted — not a
/// deadlock where the index and the WAL each wait for space the other holds. Space added by the
/// operator (the tmpfs grown in place) lets ingest resume without a restart.
#[test]
fn a_collector_that_fills_its_own_disk_still_indexes_all_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(disk) = own_disk(&data, 24) else {
        return;
    };
    let c = start_logged(
        codestax_tests::CollectorOptions::for_tests(
            &data,
            "[wal]\nsegment_bytes = 1048576\nkeep_free_bytes = 4194304\n",
        ),
        dir.path(),
    );
    let (token, admin, mut acked) = seed(&c);
    let (more, refused) = ingest_until_refused_within(
        &c,
        &token,
        "own",
        Duration::from_secs(120),
        incompressible_records,
    );
    acked.extend(more);
    assert_unavailable(&refused, "wal_full", &["kept free"], "ingest");

    // Everything acknowledged becomes searchable although the disk is "full".
    let n = acked.len() as u64;
    c.wait_for_total_within(ORG, "action=auth.login", &admin, n, Duration::from_secs(60));
    // The WAL's indexed segments are deleted (1 MiB each here): the room they held is free again.
    let wal_segments = || {
        std::fs::read_dir(data.join("wal"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            })
            .count()
    };
    let trimmed = codestax_tests::wait_for(Duration::from_secs(30), || wal_segments() <= 2);
    assert!(trimmed, "{} WAL segments left", wal_segments());

    // The operator adds space: ingest resumes by itself.
    disk.resize(96).unwrap();
    resumes_by_itself(&c, &token, &admin, acked, dir.path(), "own disk");
    drop(c);
    drop(disk);
}

/// A tmpfs of `mib` MiB for the collector's whole data directory `data`, or `None` after saying
/// why not (not root).
fn own_disk(data: &Path, mib: u64) -> Option<Tmpfs> {
    match Tmpfs::mount(data, mib) {
        Ok(fs) => Some(fs),
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs ({why}) (needs root to mount tmpfs)");
            None
        }
    }
}

/// Starts a collector whose stderr goes to a file in `work`, outside the disk under test (the
/// log must not eat it), so that a panic is seen.
fn start_logged(mut options: codestax_tests::CollectorOptions, work: &Path) -> Collector {
    options.stderr = Some(work.join("collector.stderr"));
    let mut c = Collector::configure(options).unwrap();
    c.launch().unwrap();
    c
}

/// Once there is room again, ingest resumes by itself (no restart), every acknowledged record
/// is searchable exactly once, the chain verifies, and the collector never panicked.
fn resumes_by_itself(
    c: &Collector,
    token: &str,
    admin: &str,
    mut acked: Vec<String>,
    work: &Path,
    what: &str,
) {
    recover(c, token, admin, &mut acked, Instant::now(), what);
    wait_ready(c, Duration::from_secs(10));
    export_and_verify(c, admin, work);
    assert_never_panicked(c);
}

/// The index holds back what the WAL acknowledged (a past week's records wait in its stage
/// for `index.cold_flush_after`, as records wait when the indexer lags under load) while the
/// collector fills its own disk. A fixed room kept free is then not enough: indexing the backlog
/// needs more than the room, the index fails with ENOSPC on every retry, no WAL segment is ever
/// deleted, and acknowledged records never become searchable (seen in CI, under load). The WAL
/// must keep free the room its backlog needs: it refuses early, with a clean `wal_full`, every
/// acknowledged record becomes searchable, and once the index caught up ingest is taken again,
/// on the same disk, without a restart.
#[test]
fn a_backlog_the_index_holds_back_still_fits_when_the_collector_fills_its_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(disk) = own_disk(&data, 24) else {
        return;
    };
    const HELD: Duration = Duration::from_secs(30);
    let mut options = codestax_tests::CollectorOptions::for_tests(&data, "");
    // The stage's budget is never reached: only `cold_flush_after` lets the backlog go.
    options.settings = format!(
        "[index]\ncommit_interval = \"200ms\"\nwriter_memory_bytes = 50000000\n\
         cold_stage_bytes = 1073741824\ncold_flush_after = \"{}s\"\n\
         [wal]\nsegment_bytes = 1048576\nkeep_free_bytes = 4194304\n",
        HELD.as_secs()
    );
    let c = start_logged(options, dir.path());
    let (token, admin, mut acked) = seed(&c);

    // The backlog: the first staged record starts the clock, so the whole fill is held at once.
    let started = Instant::now();
    let (more, refused) = ingest_until_refused_within(
        &c,
        &token,
        "held",
        Duration::from_secs(25),
        past_incompressible_records,
    );
    let filled = started.elapsed();
    assert!(
        filled < HELD,
        "the fill took {filled:?}, longer than the index holds the backlog"
    );
    assert!(
        more.len() >= 1000,
        "only {} records acknowledged",
        more.len()
    );
    acked.extend(more);
    assert_unavailable(&refused, "wal_full", &["kept free"], "ingest");
    assert_otlp_refused(&c, &token, "the write-ahead log cannot be written");

    // Every acknowledged record becomes searchable once the stage lets go: no stall.
    let n = acked.len() as u64;
    c.wait_for_total_within(
        ORG,
        "action=auth.login",
        &admin,
        n,
        HELD + Duration::from_secs(20) - started.elapsed().min(HELD),
    );
    let metrics = c.metrics();
    assert!(
        metrics.contains("codestax_collector_index_write_failures_total 0"),
        "the index failed to write: {}",
        codestax_tests::tail(&c.stderr(), 4000)
    );
    // The index's bytes per WAL byte of the backlog (INDEX_BYTES_PER_WAL_BYTE's margin).
    let wal_bytes: usize = c
        .search_all(ORG, "action=auth.login", &admin)
        .iter()
        .filter(|e| e["id"].as_str().is_some_and(|id| id.starts_with("held")))
        .map(|e| e.to_string().len())
        .sum();
    let week_bytes = dir_bytes(&data.join("index").join(past_week_dir()));
    println!(
        "held backlog: {} records acknowledged in {:.1} s, all searchable {:.1} s after the fill \
         began; the past week's index holds {} KiB for ~{} KiB of records ({:.2} per byte)",
        acked.len(),
        filled.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        week_bytes >> 10,
        wal_bytes >> 10,
        week_bytes as f64 / wal_bytes as f64
    );

    // Caught up: the WAL's indexed segments go, and ingest is taken again on the same disk.
    resumes_by_itself(&c, &token, &admin, acked, dir.path(), "backlog indexed");
    drop(c);
    drop(disk);
}

/// The Merkle trees (`data/tree`) on a disk of their own that fills while records come in: each
/// tree write fails with ENOSPC, but ingest and indexing go on (the WAL keeps what the trees
/// lack), and once space returns the trees take it from the WAL: every acknowledged record is
/// searchable once, and an export's proof (a signed tree head over every record) verifies.
#[test]
fn merkle_trees_that_cannot_write_wedge_nothing_and_catch_up_once_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trees = match Tmpfs::mount(&data.join("tree"), 1) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs ({why}) (needs root to mount tmpfs)");
            return;
        }
    };
    let c = start_logged(
        codestax_tests::CollectorOptions::for_tests(&data, ""),
        dir.path(),
    );
    let (token, admin, mut acked) = seed(&c);

    let ballast = trees.fill().unwrap();
    eprintln!("tree tmpfs filled with {} KiB of ballast", ballast >> 10);
    // 2,000 records: ~80 KiB of tree entries, far past the last page the ballast left.
    for b in 0..20 {
        let batch = records(&format!("treeless{b}"), 100);
        let a = ingest(&c, &token, &batch);
        assert_eq!(
            a.status,
            200,
            "ingest with the trees failing: {}",
            short(&a.body)
        );
        acked.extend(batch.iter().map(|r| r["id"].as_str().unwrap().to_string()));
    }
    c.wait_for_total_within(
        ORG,
        "action=auth.login",
        &admin,
        acked.len() as u64,
        Duration::from_secs(30),
    );
    assert!(
        c.stderr().contains("a Merkle tree write failed"),
        "the trees never failed: {}",
        codestax_tests::tail(&c.stderr(), 2000)
    );
    let failures = c
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("codestax_collector_tree_write_failures "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        failures.is_some_and(|n| n >= 1.0),
        "tree_write_failures: {failures:?}"
    );

    trees.free().unwrap();
    resumes_by_itself(&c, &token, &admin, acked, dir.path(), "trees full");
    drop(c);
    drop(trees);
}

/// Key changes while the collector's disk is full: refused with 503 and the disk's code, the
/// key left as it was (a key whose revocation was refused still works); once space returns the
/// same revocation goes through.
#[test]
fn a_key_change_on_a_full_disk_is_refused_with_503_and_made_once_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(disk) = own_disk(&data, 24) else {
        return;
    };
    // Nothing kept free: the ballast's ENOSPC is what refuses.
    let c = start_logged(
        codestax_tests::CollectorOptions::for_tests(&data, "[wal]\nkeep_free_bytes = 0\n"),
        dir.path(),
    );
    let (token, _, _) = seed(&c);
    let owner = c.create_key(ORG, "ORG_OWNER");
    let keys = format!("/api/v1/orgs/{ORG}/keys");
    let created = answer(c.post(
        &keys,
        &owner,
        "application/json",
        br#"{"role": "INGEST", "name": "victim"}"#.to_vec(),
    ));
    assert_eq!(created.status, 201, "{}", short(&created.body));
    let victim_id = created.body["key"]["id"].as_str().unwrap().to_string();
    let victim = created.body["token"].as_str().unwrap().to_string();
    let revoke = || {
        answer(
            c.client()
                .delete(c.url(&format!("{keys}/{victim_id}")))
                .bearer_auth(&owner)
                .send()
                .unwrap(),
        )
    };

    let refused = |a: &Answer, what: &str| {
        assert_eq!(a.status, 503, "{what}: {}", short(&a.body));
        let code = a.body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            ["wal_full", "index_full"].contains(&code),
            "{what}: {}",
            short(&a.body)
        );
        assert!(a.retry_after.is_some(), "{what}: Retry-After");
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(ENOSPC_TEXT), "{what}: {message}");
        assert!(!message.contains("/data"), "{what}: a path in {message}");
    };

    disk.fill().unwrap();
    // The key event's record may still fit in the WAL's last page, and `keys.json` not on the
    // disk; then no record fits any more.
    refused(&revoke(), "revoke, the WAL's last page left");
    ingest_until_refused(&c, &token, "filler");
    refused(&revoke(), "revoke");
    let create = answer(c.post(
        &keys,
        &owner,
        "application/json",
        br#"{"role": "INGEST"}"#.to_vec(),
    ));
    refused(&create, "create");
    // Not revoked: the key still gets past authentication.
    let still = c.get(&format!("/api/v1/orgs/{ORG}/audit-log"), &victim);
    assert_ne!(
        still.status().as_u16(),
        401,
        "the refused revocation was made"
    );

    disk.free().unwrap();
    let done = made_once_space_returns("revoke", 200, revoke);
    assert!(done.body["revoked_at"].is_string(), "{}", short(&done.body));
    let gone = c.get(&format!("/api/v1/orgs/{ORG}/audit-log"), &victim);
    assert_eq!(gone.status().as_u16(), 401, "the revoked key still works");
    // The refused revocations left no record claiming one: the log holds the one that was made.
    recorded_once(&c, &owner, "auth.api_key_revoked");
    assert_never_panicked(&c);
    drop(c);
    drop(disk);
}

/// The collector's log shows no panic (its tail is the failure's message).
fn assert_never_panicked(c: &Collector) {
    assert!(
        !c.stderr().contains("panicked"),
        "{}",
        codestax_tests::tail(&c.stderr(), 4000)
    );
}

/// Asks for a change refused on a full disk again, after the space returned, until it answers
/// `status` (at most 30 s; meanwhile only 503): that answer.
fn made_once_space_returns(what: &str, status: u16, change: impl Fn() -> Answer) -> Answer {
    let started = Instant::now();
    loop {
        let a = change();
        if a.status == status {
            return a;
        }
        assert_eq!(
            a.status,
            503,
            "{what} after space returned: {}",
            short(&a.body)
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} still refused: {}",
            short(&a.body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `action` is in the org's log once, and checks it stays once: a refused change
/// recorded before it failed would show as a second, earlier record (the index takes the WAL in
/// order, so the earlier one is searchable once the later one is).
fn recorded_once(c: &Collector, admin: &str, action: &str) {
    recorded_times(c, admin, action, 1);
}

/// [`recorded_once`] for `n` changes made.
fn recorded_times(c: &Collector, admin: &str, action: &str, n: u64) {
    let query = format!("action={action}");
    c.wait_for_total(ORG, &query, admin, n);
    let total = c.total(ORG, &query, admin);
    assert_eq!(total, n, "{action}: {total} records of {n} changes made");
}

/// Settings changes (saved views, retention) while the collector's disk is full: refused with
/// 503, the disk's code and `Retry-After`, **before** their audit record is written (the new
/// settings file is written first and put in place only once the change is recorded), so the
/// log never claims a change that was not made; once space returns the same changes go through
/// and each is recorded once.
#[test]
fn a_settings_change_on_a_full_disk_is_refused_before_it_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(disk) = own_disk(&data, 24) else {
        return;
    };
    let config =
        format!("[wal]\nkeep_free_bytes = 0\n\n[[orgs]]\nid = \"{ORG}\"\nplan = \"enterprise\"\n");
    let c = start_logged(
        codestax_tests::CollectorOptions::for_tests(&data, &config),
        dir.path(),
    );
    let (_, admin, _) = seed(&c);
    let owner = c.create_key(ORG, "ORG_OWNER");
    let views = format!("/api/v1/orgs/{ORG}/saved-views");
    let retention = format!("/api/v1/orgs/{ORG}/settings/retention");
    let create_view = || {
        answer(c.post(
            &views,
            &admin,
            "application/json",
            br#"{"name": "logins", "filters": {"category": ["auth"]}}"#.to_vec(),
        ))
    };
    let set_retention = || {
        answer(
            c.client()
                .put(c.url(&retention))
                .bearer_auth(&owner)
                .header("content-type", "application/json")
                .body(r#"{"days": 400}"#)
                .send()
                .unwrap(),
        )
    };
    let days = || c.get_json(&retention, &owner)["days"].as_u64();
    let days_before = days();
    assert_ne!(days_before, Some(400));

    // Right after the fill the WAL's last page may still take a record: the settings file,
    // written first, is what must refuse.
    let changes: [(&str, &dyn Fn() -> Answer); 2] =
        [("saved view", &create_view), ("retention", &set_retention)];
    for (what, change) in changes {
        // Topped up right before each change: the index's merges may free space after a fill
        // (CI once saw the saved view written into it).
        disk.fill().unwrap();
        let a = change();
        assert_unavailable(&a, "wal_full", &[ENOSPC_TEXT], what);
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("/data"), "{what}: a path in {message}");
    }
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .chain(std::fs::read_dir(data.join("saved-views")).unwrap())
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".prepared"))
        .collect();
    assert!(leftovers.is_empty(), "prepared files left: {leftovers:?}");

    disk.free().unwrap();
    made_once_space_returns("saved view", 201, create_view);
    made_once_space_returns("retention", 200, set_retention);
    assert_eq!(days(), Some(400));
    recorded_once(&c, &admin, "audit_log.saved_view_created");
    recorded_once(&c, &admin, "settings.retention_changed");
    assert_never_panicked(&c);
    drop(c);
    drop(disk);
}

/// Stream changes (create, pause, delete) while the collector's disk is full: refused with 503
/// `wal_full` and `Retry-After` **before** their audit record is written (the stream's first
/// cursor and the next `definitions.json` are written first, put in place only once the change
/// is recorded), so the log never claims a stream change that was not made; once space returns
/// each is made and recorded once.
#[test]
fn a_stream_change_on_a_full_disk_is_refused_before_it_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(disk) = own_disk(&data, 24) else {
        return;
    };
    // Loopback is refused unless allowed; nothing listens there: the streams retry, harmlessly.
    let config = "[wal]\nkeep_free_bytes = 0\n\n[streams]\nallow_destinations = [\"127.0.0.1\"]\n";
    let c = start_logged(
        codestax_tests::CollectorOptions::for_tests(&data, config),
        dir.path(),
    );
    let (_, admin, _) = seed(&c);
    let owner = c.create_key(ORG, "ORG_OWNER");
    let streams = format!("/api/v1/orgs/{ORG}/streams");
    let address = format!("127.0.0.1:{}", codestax_tests::free_port());
    let create = || {
        let body = json!({
            "name": "siem", "start": "now",
            "destination": {"kind": "syslog", "address": address, "tls": false}
        });
        answer(c.post(
            &streams,
            &owner,
            "application/json",
            body.to_string().into_bytes(),
        ))
    };
    let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = c.client().request(method, c.url(path)).bearer_auth(&owner);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        answer(r.send().unwrap())
    };
    let ids = || -> Vec<String> {
        c.get_json(&streams, &owner)["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    // One stream made while there is room, to change and delete on the full disk.
    let a = create();
    assert_eq!(a.status, 201, "{}", short(&a.body));
    let kept = a.body["id"].as_str().unwrap().to_string();
    let one = format!("{streams}/{kept}");
    let pause = || send(reqwest::Method::PATCH, &one, Some(json!({"paused": true})));
    let delete = || send(reqwest::Method::DELETE, &one, None);

    disk.fill().unwrap();
    // Right after the fill the WAL's last page may still take a record: the stream's files,
    // written first, are what must refuse.
    for (what, a) in [
        ("stream create", create()),
        ("stream pause", pause()),
        ("stream delete", delete()),
    ] {
        assert_unavailable(&a, "wal_full", &[ENOSPC_TEXT], what);
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("/data"), "{what}: a path in {message}");
    }
    assert_eq!(
        ids(),
        vec![kept.clone()],
        "the streams changed on a full disk"
    );
    assert_eq!(
        c.get_json(&one, &owner)["paused"],
        false,
        "paused on a full disk"
    );
    let cursors = data.join("streams/cursors").join(ORG);
    let leftovers: Vec<String> = std::fs::read_dir(data.join("streams"))
        .unwrap()
        .chain(std::fs::read_dir(&cursors).unwrap())
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".prepared") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "files left: {leftovers:?}");
    let cursor_files = std::fs::read_dir(&cursors).unwrap().count();
    assert_eq!(cursor_files, 1, "a refused stream's cursor was left");

    disk.free().unwrap();
    let made = made_once_space_returns("stream create", 201, create);
    let made = made.body["id"].as_str().unwrap().to_string();
    made_once_space_returns("stream pause", 200, pause);
    assert_eq!(c.get_json(&one, &owner)["paused"], true);
    made_once_space_returns("stream delete", 204, delete);
    assert_eq!(ids(), vec![made]);
    recorded_times(&c, &admin, "audit_log.stream_created", 2);
    recorded_once(&c, &admin, "audit_log.stream_changed");
    recorded_once(&c, &admin, "audit_log.stream_deleted");
    assert_never_panicked(&c);
    drop(c);
    drop(disk);
}
