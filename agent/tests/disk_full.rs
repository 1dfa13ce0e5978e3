//! The agent on a full or failing disk (issue #15). File intake against a spool whose writes
//! fail (ENOSPC, EIO injected through the storage `Disk`), and the real binary with its data
//! directory on a small tmpfs that a ballast file fills: intake pauses (files wait, OTLP senders
//! get retryable errors saying the disk is full), nothing acknowledged is lost, nothing arrives
//! twice under different ids, and it all resumes by itself once the ballast is deleted.

mod support;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codestax_agent::checkpoint::{CheckpointStore, FileKey};
use codestax_agent::metrics::Metrics;
use codestax_agent::quarantine::Quarantine;
use codestax_agent::source::file::{FileServerOptions, FileSettings, FileTailer};
use codestax_agent::spool::{Spool, SpoolOptions};
use codestax_config::FileSourceConfig;
use codestax_harness::{Agent, AgentOptions, Tmpfs, emit_line, wait_for};
use codestax_storage::{Fault, FaultyDisk};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use support::Sink;
use tokio::task::block_in_place;

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn file_line(n: u64) -> String {
    emit_line(None, &format!("n={n}"), "scan.triggered", 0)
}

/// The messages of the records in the spool, in order.
fn spooled(spool: &Spool) -> Vec<String> {
    let mut reader = spool.reader();
    let mut out = Vec::new();
    while let Some(e) = reader.try_next().unwrap() {
        if let Some(record) = e.entry.to_record() {
            out.push(record.unwrap().message.unwrap_or_default());
        }
    }
    out
}

/// The file source against a spool whose writes fail: ENOSPC mid-write, then EIO, then a
/// failed fsync. Each failed round is rewound (the file waits), the checkpoint stays where the
/// spool is durable, the quarantined line is quarantined once, and once the disk takes writes
/// every line is in the spool exactly once; a restart reads nothing again.
#[test]
fn file_intake_waits_on_a_failing_spool_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let options = SpoolOptions {
        max_bytes: 64 << 20,
        segment_bytes: 64 << 10,
    };
    let disk = FaultyDisk::default();
    let open = |disk: Arc<dyn codestax_storage::Disk>| {
        let (spool, recovery) = Spool::open_on(&root.path().join("spool"), options, disk).unwrap();
        let checkpoints = CheckpointStore::open(
            &root.path().join("checkpoints.json"),
            recovery.file_positions,
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let quarantine =
            Quarantine::open(&root.path().join("quarantine"), metrics.clone()).unwrap();
        let config = FileSourceConfig {
            include: vec!["*.log".into()],
            org_id: Some("acme".into()),
            ..Default::default()
        };
        let settings = FileSettings::from_config(&config, &logs, 16 << 10).unwrap();
        let tailer = FileTailer::new(
            vec![settings],
            FileServerOptions::new(Duration::from_secs(10), options.max_bytes),
            spool.clone(),
            checkpoints.clone(),
            quarantine,
            metrics.clone(),
        );
        (tailer, spool, checkpoints, metrics)
    };
    let (mut tailer, spool, checkpoints, metrics) = open(Arc::new(disk.clone()));
    let log = logs.join("a.log");
    append(&log, &(0..100).map(file_line).collect::<String>());
    tailer.discover();
    tailer.drain();
    let meta = fs::metadata(&log).unwrap();
    let key = FileKey {
        dev: std::os::unix::fs::MetadataExt::dev(&meta),
        ino: std::os::unix::fs::MetadataExt::ino(&meta),
    };
    let durable = meta.len();
    assert_eq!(checkpoints.get(key).unwrap().offset, durable);

    // More lines, one of them not a record, and the disk fails three times.
    let mut more: String = (100..150).map(file_line).collect();
    more.push_str("not a record\n");
    more.extend((150..200).map(file_line));
    append(&log, &more);
    disk.arm(Fault::Write(io::ErrorKind::StorageFull));
    disk.arm(Fault::Write(io::ErrorKind::Other));
    disk.arm(Fault::Sync(io::ErrorKind::StorageFull));
    tailer.discover(); // (no watcher here: this is the event that the file grew)
    tailer.round();
    assert!(!tailer.settle(), "the append failed");
    assert_eq!(
        checkpoints.get(key).unwrap().offset,
        durable,
        "the checkpoint stays where the spool is durable"
    );
    assert_eq!(spooled(&spool).len(), 100);
    assert!(spool.write_failure().unwrap().disk_full);
    let text = metrics.render();
    assert!(
        text.contains(
            "codestax_agent_disk_write_errors_total{file=\"spool\",kind=\"disk_full\"} 1"
        ),
        "{text}"
    );

    // The tailer tries again after its pause until the disk takes the append.
    let all: Vec<String> = (0..200).map(|n| format!("n={n}")).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while spooled(&spool) != all {
        assert!(Instant::now() < deadline, "{:?}", spooled(&spool).len());
        std::thread::sleep(Duration::from_millis(50));
        tailer.discover();
        tailer.round();
        tailer.settle();
    }
    assert_eq!(spool.write_failure(), None);
    assert_eq!(
        checkpoints.get(key).unwrap().offset,
        fs::metadata(&log).unwrap().len()
    );
    let text = metrics.render();
    assert!(
        text.contains("codestax_agent_disk_write_errors_total{file=\"spool\",kind=\"io\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "codestax_agent_disk_write_errors_total{file=\"spool\",kind=\"disk_full\"} 2"
        ),
        "{text}"
    );
    let quarantined = fs::read_to_string(root.path().join("quarantine/quarantine.jsonl")).unwrap();
    assert_eq!(quarantined.lines().count(), 1, "{quarantined}");
    assert!(quarantined.contains("not a record"));

    // A restart (without persisting the checkpoints: they are in the spool) reads nothing again.
    drop((tailer, spool, checkpoints));
    let (mut tailer, spool, _, _) = open(Arc::new(codestax_storage::RealDisk));
    tailer.discover();
    tailer.drain();
    assert_eq!(spooled(&spool), all);
}

/// `n` records with their own ids, padded so that a request is larger than a memory page (it
/// cannot slip into the free end of a page the spool's segment already has).
fn otlp_request(tag: &str, n: usize) -> (ExportLogsServiceRequest, Vec<String>) {
    let messages: Vec<String> = (0..n).map(|i| format!("otlp {tag}-{i}")).collect();
    let records = (0..n).map(|i| (format!("o-{tag}-{i}"), messages[i].clone()));
    (support::otlp_request(records, 400), messages)
}

/// How an OTLP request was answered.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Stored,
    /// Refused, retryable, saying the disk is full.
    DiskFull,
}

async fn send_grpc(endpoint: &str, request: &ExportLogsServiceRequest) -> Answer {
    let mut client = LogsServiceClient::connect(endpoint.to_string())
        .await
        .unwrap();
    export(&mut client, request).await
}

async fn export(
    client: &mut LogsServiceClient<tonic::transport::Channel>,
    request: &ExportLogsServiceRequest,
) -> Answer {
    match client.export(request.clone()).await {
        Ok(response) => {
            assert_eq!(response.into_inner().partial_success, None);
            Answer::Stored
        }
        Err(status) => {
            use tonic_types::StatusExt;
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(
                status
                    .message()
                    .contains("disk under the agent's spool is full"),
                "{status:?}"
            );
            let retry = status.get_error_details().retry_info().cloned();
            assert!(
                retry.and_then(|r| r.retry_delay).is_some(),
                "RetryInfo: {status:?}"
            );
            Answer::DiskFull
        }
    }
}

fn send_http(url: &str, request: &ExportLogsServiceRequest) -> Answer {
    let response = reqwest::blocking::Client::new()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let body = response.bytes().unwrap();
    match status {
        200 => Answer::Stored,
        503 => {
            let rpc = <tonic_types::Status as Message>::decode(&body[..]).unwrap();
            assert_eq!(rpc.code, tonic::Code::Unavailable as i32, "{rpc:?}");
            assert!(
                rpc.message.contains("disk under the agent's spool is full"),
                "{rpc:?}"
            );
            assert!(retry_after.is_some(), "Retry-After");
            Answer::DiskFull
        }
        other => panic!("OTLP/HTTP answered {other}: {body:?}"),
    }
}

/// A directory for an agent whose `data/` is a tmpfs of `mib` MiB (its `logs/` on the normal
/// disk); `None`, after a loud SKIPPED line, where mounting is refused.
fn data_on_tmpfs(test: &str, mib: u64) -> Option<(tempfile::TempDir, std::path::PathBuf, Tmpfs)> {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    match Tmpfs::mount(&dir.path().join("data"), mib) {
        Ok(tmpfs) => Some((dir, logs, tmpfs)),
        Err(why) => {
            eprintln!("SKIPPED: {test}: {why} (needs root to mount tmpfs)");
            None
        }
    }
}

/// The real agent, its data directory on a 16 MiB tmpfs, its emit file on the normal disk.
/// A ballast file fills the tmpfs; lines keep being written and OTLP requests keep coming (they
/// get 503 / UNAVAILABLE with a retry hint saying the disk is full, never a success that is
/// then lost); the agent is killed and started again while the disk is full; then the ballast
/// is deleted. Every line written and every record stored reaches the sink, each message under
/// one id; the quarantine holds the one bad line, whole. Prints how long recovery took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_pauses_intake_and_recovers_by_itself() {
    let Some((dir, logs, tmpfs)) =
        data_on_tmpfs("a_full_data_disk_pauses_intake_and_recovers_by_itself", 16)
    else {
        return;
    };
    let sink = Sink::start().await;
    let options = AgentOptions {
        include: vec![format!("{}/app.log", logs.display())],
        spool_max_bytes: 64 << 20, // more than the disk: the disk fills first
        spool_segment_bytes: 1 << 20,
        batch_max_records: 200,
        batch_max_wait: "20ms".into(),
        retry_max_backoff: "200ms".into(),
        bin: Some(env!("CARGO_BIN_EXE_codestax-agent").into()),
        ..AgentOptions::default()
    };
    let mut agent = block_in_place(|| Agent::start(dir.path(), &sink.endpoint(), "t0k", &options));
    let log = logs.join("app.log");
    let mut expected = BTreeSet::new();
    let mut next = 0u64;
    let mut write_lines = |n: u64, expected: &mut BTreeSet<String>| {
        let text: String = (next..next + n)
            .map(|i| {
                expected.insert(format!("n={i}"));
                file_line(i)
            })
            .collect();
        next += n;
        append(&log, &text);
    };

    // Before: everything flows.
    write_lines(100, &mut expected);
    let (request, messages) = otlp_request("before", 5);
    assert_eq!(
        send_grpc(&agent.otlp_grpc_endpoint(), &request).await,
        Answer::Stored
    );
    expected.extend(messages);
    assert!(
        sink.wait_for(Duration::from_secs(20), |s| s.has_all(&expected))
            .await,
        "before the disk fills\n{}",
        agent.stderr()
    );

    // The disk fills up.
    let ballast = block_in_place(|| tmpfs.fill()).unwrap();
    let mut refused = Vec::new();
    for round in 0..12 {
        write_lines(20, &mut expected);
        let (request, messages) = otlp_request(&format!("full-{round}"), 20);
        let answer = if round % 2 == 0 {
            send_grpc(&agent.otlp_grpc_endpoint(), &request).await
        } else {
            block_in_place(|| send_http(&agent.otlp_http_url(), &request))
        };
        match answer {
            Answer::Stored => expected.extend(messages),
            Answer::DiskFull => refused.push((request, messages)),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused.len() >= 10,
        "the full disk refused only {} of 12 OTLP requests",
        refused.len()
    );
    let paused = block_in_place(|| {
        wait_for(Duration::from_secs(10), || {
            agent.health().1["status"] == "spool_disk_full"
        })
    });
    let (status, health) = block_in_place(|| agent.health());
    assert!(paused && status == 503, "{status} {health}");
    assert_eq!(health["spool_write_error"]["disk_full"], true, "{health}");
    let full_errors = |agent: &Agent| {
        agent.metric("codestax_agent_disk_write_errors_total{file=\"spool\",kind=\"disk_full\"}")
    };
    assert!(block_in_place(|| full_errors(&agent)) > 0.0);
    assert!(block_in_place(|| agent.metric("codestax_agent_file_lag_bytes")) > 0.0);
    // A line that is not a record: its quarantine write fails too (a new file page), then lands.
    append(&log, "not a record\n");
    write_lines(20, &mut expected);

    // Killed and started again while the disk is full: it comes up and keeps pushing back.
    agent.kill9();
    block_in_place(|| agent.restart());
    let (request, messages) = otlp_request("restarted", 20);
    match send_grpc(&agent.otlp_grpc_endpoint(), &request).await {
        Answer::Stored => expected.extend(messages),
        Answer::DiskFull => refused.push((request, messages)),
    }
    let paused = block_in_place(|| {
        wait_for(Duration::from_secs(10), || {
            agent.health().1["status"] == "spool_disk_full"
        })
    });
    assert!(paused, "{}", block_in_place(|| agent.health()).1);

    // Space comes back: intake resumes by itself (the tailer's next try), then the refused
    // requests are sent again as a client would.
    let freed = Instant::now();
    tmpfs.free().unwrap();
    let resumed = block_in_place(|| {
        wait_for(Duration::from_secs(20), || {
            agent.health().1["status"] == "ok"
        })
    });
    let resume_time = freed.elapsed();
    assert!(resumed, "{}", block_in_place(|| agent.health()).1);
    for (i, (request, messages)) in refused.drain(..).enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = if i % 2 == 0 {
                send_grpc(&agent.otlp_grpc_endpoint(), &request).await
            } else {
                block_in_place(|| send_http(&agent.otlp_http_url(), &request))
            };
            if answer == Answer::Stored {
                expected.extend(messages);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still refused after the ballast went"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    write_lines(20, &mut expected);
    let complete = sink
        .wait_for(Duration::from_secs(30), |s| s.has_all(&expected))
        .await;
    let all_time = freed.elapsed();

    let stopped = block_in_place(|| agent.stop());
    let stderr = agent.stderr();
    let state = sink.state.lock().unwrap();
    assert!(complete, "not all delivered within 30 s\n{stderr}");
    if let Err(wrong) = state.delivered_once(&expected) {
        panic!("{wrong}\n{stderr}");
    }
    // Whole JSON lines only (the harness parses each), the bad line once.
    let quarantined = agent.quarantine();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0]["line"], "not a record");
    let checkpoints = fs::read(agent.data_dir.join("checkpoints.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&checkpoints).unwrap();
    assert!(stopped, "SIGTERM: exit 0\n{stderr}");
    let logged = stderr.matches("spool write failed").count();
    // Logged once per run of failures (counted each time in disk_write_errors_total).
    let persist_logged = stderr.matches("cannot persist checkpoints").count();
    if std::env::var_os("SHOW_AGENT_STDERR").is_some() {
        eprintln!("{stderr}");
    }
    eprintln!(
        "disk full: ballast {:.2} MiB; {} records expected, {} received ({} replays of the same \
         id after the kill); 'spool write failed' logged {logged} times, 'cannot persist checkpoints' \
         {persist_logged} times; intake resumed {:.0} ms \
         after the ballast was deleted, everything delivered after {:.0} ms",
        ballast as f64 / (1 << 20) as f64,
        expected.len(),
        state.accepted.len(),
        state.accepted.len() - expected.len(),
        resume_time.as_secs_f64() * 1000.0,
        all_time.as_secs_f64() * 1000.0,
    );
    drop(state);
    drop(agent);
    drop(tmpfs);
}

/// The spool fills its own disk: the collector is away, the disk (4 MiB) is smaller than
/// `spool.max_bytes`, lines keep coming, small OTLP requests take what is left. Intake pauses
/// on the full disk; once the collector is back the agent must still be able to persist what
/// was acknowledged (its position, the file checkpoints) before it deletes segments, so the
/// spool leaves room for that: the disk frees itself and every line arrives. (Without that
/// room the acknowledged position could not be written and the agent stayed stuck.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_fills_its_own_disk_frees_it_when_the_collector_is_back() {
    let Some((dir, logs, tmpfs)) = data_on_tmpfs(
        "a_spool_that_fills_its_own_disk_frees_it_when_the_collector_is_back",
        4,
    ) else {
        return;
    };
    let mut sink = Sink::start().await;
    let options = AgentOptions {
        include: vec![format!("{}/app.log", logs.display())],
        spool_max_bytes: 64 << 20,
        spool_segment_bytes: 128 << 10,
        batch_max_records: 500,
        batch_max_wait: "20ms".into(),
        retry_max_backoff: "200ms".into(),
        bin: Some(env!("CARGO_BIN_EXE_codestax-agent").into()),
        ..AgentOptions::default()
    };
    let mut agent = block_in_place(|| Agent::start(dir.path(), &sink.endpoint(), "t0k", &options));
    sink.pause().await;
    let log = logs.join("app.log");
    let mut expected = BTreeSet::new();
    let mut next = 0u64;
    // About 7 MiB of lines for a 4 MiB disk.
    while next < 15_000 {
        let text: String = (next..next + 1000)
            .map(|i| {
                expected.insert(format!("n={i}"));
                emit_line(None, &format!("n={i}"), "scan.triggered", 200)
            })
            .collect();
        next += 1000;
        append(&log, &text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let paused = block_in_place(|| {
        wait_for(Duration::from_secs(30), || {
            agent.health().1["status"] == "spool_disk_full"
        })
    });
    assert!(
        paused,
        "{}\n{}",
        block_in_place(|| agent.health()).1,
        agent.stderr()
    );
    // OTLP requests take what is left, smaller and smaller, to the last page.
    let mut client = LogsServiceClient::connect(agent.otlp_grpc_endpoint())
        .await
        .unwrap();
    for records in [20, 1] {
        for i in 0..2000 {
            let (request, messages) = otlp_request(&format!("last-{records}-{i}"), records);
            match export(&mut client, &request).await {
                Answer::Stored => expected.extend(messages),
                Answer::DiskFull => break,
            }
        }
    }

    let back = Instant::now();
    sink.resume().await;
    let complete = sink
        .wait_for(Duration::from_secs(40), |s| s.has_all(&expected))
        .await;
    let all_time = back.elapsed();
    let health = block_in_place(|| agent.health());
    let stopped = block_in_place(|| agent.stop());
    let stderr = agent.stderr();
    let state = sink.state.lock().unwrap();
    assert!(
        complete,
        "{} of {} delivered; health {health:?}\n{stderr}",
        state.accepted.len(),
        expected.len()
    );
    if let Err(wrong) = state.delivered_once(&expected) {
        panic!("{wrong}\n{stderr}");
    }
    assert!(stopped, "SIGTERM: exit 0\n{stderr}");
    if std::env::var_os("SHOW_AGENT_STDERR").is_some() {
        eprintln!("{stderr}");
    }
    eprintln!(
        "own disk full: {} records through a 4 MiB disk; all delivered {:.0} ms after the \
         collector came back",
        expected.len(),
        all_time.as_secs_f64() * 1000.0
    );
    drop(state);
    drop(agent);
    drop(tmpfs);
}
