//! The forwarder against an in-test OTLP sink: delivery, gzip and token, rejections to the
//! quarantine, retries through outages, and nothing lost or doubled.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use codestax_agent::checkpoint::CheckpointStore;
use codestax_agent::forward::{Backoff, BatchLimits, Compression, Forwarder, Upstream};
use codestax_agent::metrics::Metrics;
use codestax_agent::quarantine::Quarantine;
use codestax_agent::spool::{Spool, SpoolEntry, SpoolOptions};
use codestax_common::{AuditRecord, Rules, parse_json_line};
use codestax_harness::emit_line;
use support::{Reply, Sink};
use tokio::sync::watch;

struct Rig {
    spool: Spool,
    metrics: Arc<Metrics>,
    quarantine: Quarantine,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn open_spool(dir: &Path) -> Spool {
    let options = SpoolOptions {
        max_bytes: 64 << 20,
        segment_bytes: 256 << 10,
    };
    Spool::open(&dir.join("spool"), options).unwrap().0
}

async fn spool_records(spool: &Spool, ids: impl IntoIterator<Item = (String, String)>) {
    spool_as(spool, ids, SpoolEntry::record).await;
}

/// Records as JSON entries: what an agent of spool format 1 left behind.
async fn spool_json_records(spool: &Spool, ids: impl IntoIterator<Item = (String, String)>) {
    spool_as(spool, ids, |r| {
        SpoolEntry::Json(serde_json::to_vec(r).unwrap())
    })
    .await;
}

async fn spool_as(
    spool: &Spool,
    ids: impl IntoIterator<Item = (String, String)>,
    entry: impl Fn(&AuditRecord) -> SpoolEntry,
) {
    let entries: Vec<SpoolEntry> = ids
        .into_iter()
        .map(|(id, message)| {
            let line = emit_line(Some(&id), &message, "scan.triggered", 0);
            entry(&parse_json_line(line.as_bytes(), None, &Rules::new()).unwrap())
        })
        .collect();
    spool.append(entries).await.unwrap();
}

fn start(dir: &Path, spool: Spool, sink: &Sink, token: Option<&str>, max_records: usize) -> Rig {
    let upstream = Upstream::new(&sink.endpoint(), token, None).unwrap();
    start_with(dir, spool, upstream, max_records)
}

fn start_with(dir: &Path, spool: Spool, upstream: Upstream, max_records: usize) -> Rig {
    let metrics = Arc::new(Metrics::new());
    let quarantine = Quarantine::open(&dir.join("quarantine"), metrics.clone()).unwrap();
    let checkpoints = CheckpointStore::open(&dir.join("checkpoints.json"), []).unwrap();
    let forwarder = Forwarder::new(
        upstream,
        BatchLimits {
            max_records,
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(20),
        },
        Backoff::new(Duration::from_millis(5), Duration::from_millis(100)),
        spool.clone(),
        checkpoints,
        quarantine.clone(),
        metrics.clone(),
    );
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(forwarder.run(rx));
    Rig {
        spool,
        metrics,
        quarantine,
        stop,
        task,
    }
}

impl Rig {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the forwarder stops")
            .unwrap();
    }

    async fn wait_acked(&self) {
        for _ in 0..500 {
            if self.spool.unacked_bytes() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "spool never fully acknowledged: {:?} of {:?}",
            self.spool.acked(),
            self.spool.committed()
        );
    }

    fn quarantined(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.quarantine.path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn ids(range: std::ops::Range<u32>) -> Vec<(String, String)> {
    range
        .map(|i| (format!("id-{i}"), format!("m{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_everything_once_with_gzip_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.require_token("s3cret");
    let spool = open_spool(dir.path());
    spool_records(&spool, ids(0..2500)).await;
    let upstream = Upstream::new(&sink.endpoint(), Some("s3cret"), None)
        .unwrap()
        .with_compression(Compression::Gzip);
    let rig = start_with(dir.path(), spool, upstream, 1000);
    rig.wait_acked().await;
    spool_records(&rig.spool, ids(2500..2600)).await;
    rig.wait_acked().await;
    assert_eq!(sink.accepted_count(), 2600, "each record once");
    assert_eq!(sink.ids().len(), 2600);
    let encodings = sink.state.lock().unwrap().encodings.clone();
    assert!(encodings.contains("gzip"), "{encodings:?}");
    assert!(
        sink.calls() >= 4 && sink.calls() <= 6,
        "batched: {} calls",
        sink.calls()
    );
    assert_eq!(rig.metrics.records_acknowledged.get(), 2600);
    assert!(
        rig.spool.stats().segments <= 2,
        "acknowledged segments deleted"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_go_to_the_quarantine_with_the_collectors_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let spool = open_spool(dir.path());
    // A batch with some rejections (partial success), one with only rejections
    // (INVALID_ARGUMENT), and one with more than 50 rejections (the message names 50).
    let mut records = Vec::new();
    for i in 0..300u32 {
        let reject = (i < 100 && i % 10 == 3) || (100..110).contains(&i) || (200..280).contains(&i);
        let message = if reject {
            format!("reject {i}")
        } else {
            format!("m{i}")
        };
        records.push((format!("id-{i}"), message));
    }
    spool_records(&spool, records[..100].to_vec()).await;
    let rig = start(dir.path(), spool, &sink, None, 100);
    rig.wait_acked().await;
    spool_records(&rig.spool, records[100..110].to_vec()).await;
    rig.wait_acked().await;
    spool_records(&rig.spool, records[110..].to_vec()).await;
    rig.wait_acked().await;

    let rejected: Vec<String> = records
        .iter()
        .filter(|(_, m)| m.starts_with("reject"))
        .map(|(id, _)| id.clone())
        .collect();
    let quarantined = rig.quarantined();
    let mut q_ids: Vec<String> = quarantined
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "collector");
            assert_eq!(e["reason"], "message: refused by the sink", "{e}");
            let record: serde_json::Value =
                serde_json::from_str(e["line"].as_str().unwrap()).unwrap();
            record["id"].as_str().unwrap().to_string()
        })
        .collect();
    q_ids.sort();
    let mut want = rejected.clone();
    want.sort();
    assert_eq!(q_ids, want, "every rejected record quarantined once");
    let accepted = sink.ids();
    assert_eq!(accepted.len(), 300 - rejected.len());
    assert!(rejected.iter().all(|id| !accepted.contains(id)));
    assert_eq!(rig.metrics.records_rejected.get(), rejected.len() as u64);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_errors_and_outages_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = Sink::start().await;
    sink.require_token("k");
    sink.script(&[
        Reply::Unavailable,
        Reply::ResourceExhausted,
        Reply::Unauthenticated,
        Reply::PermissionDenied,
        Reply::Unavailable,
    ]);
    let spool = open_spool(dir.path());
    spool_records(&spool, ids(0..500)).await;
    let rig = start(dir.path(), spool, &sink, Some("k"), 200);
    rig.wait_acked().await;
    assert!(rig.metrics.retries.get() >= 5);
    assert!(rig.metrics.last_error().is_some());

    // The collector goes away for a while; records keep coming.
    sink.pause().await;
    for chunk in 0..5 {
        spool_records(&rig.spool, ids(500 + chunk * 100..600 + chunk * 100)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rig.spool.unacked_bytes() > 0,
        "nothing acknowledged while down"
    );
    sink.resume().await;
    rig.wait_acked().await;
    assert_eq!(sink.ids().len(), 1000);
    rig.stop().await;

    // A restart of the agent sends nothing again: all was acknowledged.
    let calls = sink.calls();
    let spool = open_spool(dir.path());
    let rig = start(dir.path(), spool, &sink, Some("k"), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.calls(), calls);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_retry_leaves_the_batch_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.script(&[Reply::Unavailable; 1000]);
    let spool = open_spool(dir.path());
    spool_records(&spool, ids(0..10)).await;
    let rig = start(dir.path(), spool, &sink, None, 100);
    sink.wait_for(Duration::from_secs(5), |s| s.calls >= 3)
        .await;
    rig.stop().await;
    sink.state.lock().unwrap().script.clear();
    let spool = open_spool(dir.path());
    let rig = start(dir.path(), spool, &sink, None, 100);
    rig.wait_acked().await;
    assert_eq!(sink.ids().len(), 10);
    rig.stop().await;
}

/// TLS through rustls with a private CA (`collector.tls.ca_file`) and a server name that
/// differs from the endpoint's host (`collector.tls.server_name`). Needs the openssl CLI to
/// make the certificates; skipped without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=collector.test",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]) && std::fs::write(d.join("ext.cnf"), "subjectAltName=DNS:collector.test\n")
        .is_ok()
        && openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
    if !made {
        eprintln!("openssl is not available; skipping the TLS test");
        return;
    }
    let sink = Sink::start_tls(
        std::fs::read(d.join("server.pem")).unwrap(),
        std::fs::read(d.join("server.key")).unwrap(),
    )
    .await;
    sink.require_token("tls-token");
    let spool = open_spool(d);
    spool_records(&spool, ids(0..50)).await;
    let ca = Some(d.join("ca.pem"));
    let name = Some("collector.test".to_string());
    let upstream = Upstream::new(&sink.endpoint(), Some("tls-token"), Some((&ca, &name))).unwrap();
    let rig = start_with(d, spool, upstream, 100);
    rig.wait_acked().await;
    assert_eq!(sink.ids().len(), 50);
    rig.stop().await;

    // Without the CA the server is not trusted: nothing is delivered, everything is kept.
    let other = tempfile::tempdir().unwrap();
    let spool = open_spool(other.path());
    spool_records(&spool, ids(100..110)).await;
    let none = None;
    let upstream =
        Upstream::new(&sink.endpoint(), Some("tls-token"), Some((&none, &name))).unwrap();
    let rig = start_with(other.path(), spool, upstream, 100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rig.spool.unacked_bytes() > 0);
    assert!(rig.metrics.retries.get() > 0);
    assert_eq!(sink.ids().len(), 50);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collectors_retry_hint_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.script(&[Reply::BusyFor(400)]);
    let spool = open_spool(dir.path());
    spool_records(&spool, ids(0..5)).await;
    let rig = start(dir.path(), spool, &sink, None, 100);
    rig.wait_acked().await;
    let times = sink.state.lock().unwrap().call_times.clone();
    assert_eq!(times.len(), 2);
    let waited = times[1] - times[0];
    assert!(
        waited >= Duration::from_millis(400),
        "retried after {waited:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_left_by_an_older_agent_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let spool = open_spool(dir.path());
    spool_json_records(&spool, ids(0..150)).await;
    spool_records(&spool, ids(150..300)).await;
    let rig = start(dir.path(), spool, &sink, None, 100);
    rig.wait_acked().await;
    let want: std::collections::BTreeSet<String> = (0..300).map(|i| format!("id-{i}")).collect();
    assert_eq!(sink.ids(), want);
    let messages: Vec<_> = sink
        .state
        .lock()
        .unwrap()
        .accepted
        .iter()
        .map(|r| r.message.clone().unwrap())
        .collect();
    assert!(messages.contains(&"m0".to_string()) && messages.contains(&"m299".to_string()));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_when_compression_is_none_or_auto_on_loopback() {
    for compression in [None, Some(Compression::None), Some(Compression::Auto)] {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::start().await;
        let spool = open_spool(dir.path());
        spool_records(&spool, ids(0..300)).await;
        let mut upstream = Upstream::new(&sink.endpoint(), None, None).unwrap();
        if let Some(c) = compression {
            upstream = upstream.with_compression(c);
        }
        let rig = start_with(dir.path(), spool, upstream, 100);
        rig.wait_acked().await;
        assert_eq!(sink.ids().len(), 300);
        let encodings = sink.state.lock().unwrap().encodings.clone();
        assert!(encodings.is_empty(), "{compression:?}: {encodings:?}");
        rig.stop().await;
    }
}
