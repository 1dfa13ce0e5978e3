//! Sending a corpus: batches (NDJSON over HTTP, or OTLP/gRPC with opentelemetry-proto's tonic
//! client) from concurrent clients, each batch acknowledged only once durable; optionally paced, and optionally sampling ack → searchable latency
//! (freshness) by polling `GET /api/v1/orgs/{org}/audit-log/{id}`, which records no read.
//! The same corpus into PostgreSQL with COPY, one transaction per batch.

use crate::collector::{Collector, http_client};
use crate::data::Corpus;
use crate::error::{BenchError, Result};
use crate::pg::Postgres;
use crate::stats::Latencies;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The receiver batches are sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /api/v1/ingest`, one JSON record per line.
    Ndjson,
    /// OTLP/gRPC `LogsService/Export`, records in the attributes style.
    Grpc,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Ndjson => "NDJSON over HTTP",
            Protocol::Grpc => "OTLP/gRPC",
        }
    }
}

/// How to send.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub protocol: Protocol,
    pub clients: usize,
    /// Records per second over all clients; `None`: as fast as acks come.
    pub pace: Option<f64>,
    /// Sample the last record of every n-th batch for freshness; 0: none.
    pub sample_every: usize,
}

/// What a load measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub records: u64,
    pub elapsed: Duration,
    /// Request → durable ack, per batch.
    pub ack: Latencies,
    /// Ack → first successful GET, per sampled record.
    pub freshness: Latencies,
    /// Sampled records not found within [`FRESHNESS_GIVE_UP`].
    pub never_found: usize,
}

impl LoadReport {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// A sampled record is counted as never found after this long.
pub const FRESHNESS_GIVE_UP: Duration = Duration::from_secs(60);

struct Sample {
    org: String,
    id: String,
    acked: Instant,
}

/// Sends every batch of `corpus` to the collector.
pub fn send(c: &Collector, corpus: &Corpus, opts: LoadOptions) -> Result<LoadReport> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Sample>();
    let started = Instant::now();
    let (results, poll) = std::thread::scope(|s| {
        let poller = (opts.sample_every > 0).then(|| s.spawn(|| poll_freshness(c, rx)));
        let handles: Vec<_> = (0..opts.clients.max(1))
            .map(|_| {
                let tx = tx.clone();
                let (next, failed) = (&next, &failed);
                s.spawn(move || -> Result<Latencies> {
                    let mut sender = Sender::new(c, opts.protocol)?;
                    let mut body = Vec::with_capacity(corpus.batch_size * 600);
                    let mut acks = Latencies::default();
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= corpus.batches.len() || failed.load(Ordering::Relaxed) {
                            return Ok(acks);
                        }
                        if let Some(rate) = opts.pace {
                            let due = started
                                + Duration::from_secs_f64((b * corpus.batch_size) as f64 / rate);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let org = &corpus.orgs[corpus.batches[b].org as usize].id;
                        corpus.ndjson_batch(b, &mut body);
                        let request = sender.prepare(org, &body)?;
                        let sent = Instant::now();
                        let result = sender.send(c, org, request, corpus.batch_size);
                        if let Err(e) = result {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        let acked = Instant::now();
                        acks.push(acked - sent);
                        if opts.sample_every > 0 && b % opts.sample_every == 0 {
                            let id = corpus.record(b, corpus.batch_size - 1).id;
                            let _ = tx.send(Sample {
                                org: org.clone(),
                                id,
                                acked,
                            });
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let results: Vec<Result<Latencies>> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BenchError::Collector("a client thread panicked".into()))
                })
            })
            .collect();
        let poll = poller.map(|p| {
            p.join()
                .unwrap_or_else(|_| Err(BenchError::Collector("the poller panicked".into())))
        });
        (results, poll)
    });
    let elapsed = started.elapsed();
    let mut report = LoadReport {
        records: corpus.total(),
        elapsed,
        ..LoadReport::default()
    };
    for r in results {
        report.ack.extend(r?);
    }
    if let Some(p) = poll {
        let (fresh, never) = p?;
        report.freshness = fresh;
        report.never_found = never;
    }
    Ok(report)
}

/// One client's connection, of either protocol.
enum Sender {
    Http(reqwest::blocking::Client),
    Grpc(Box<GrpcSender>),
}

struct GrpcSender {
    runtime: tokio::runtime::Runtime,
    client: LogsServiceClient<tonic::transport::Channel>,
}

/// A batch encoded for its protocol (encoding is not timed).
enum Request {
    Ndjson(Vec<u8>),
    Otlp(ExportLogsServiceRequest),
}

impl Sender {
    fn new(c: &Collector, protocol: Protocol) -> Result<Sender> {
        Ok(match protocol {
            Protocol::Ndjson => Sender::Http(http_client()?),
            Protocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| BenchError::io("start a tokio runtime", "", e))?;
                let client = runtime
                    .block_on(LogsServiceClient::connect(c.grpc_endpoint()))
                    .map_err(|e| BenchError::http("gRPC connect", e))?
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20);
                Sender::Grpc(Box::new(GrpcSender { runtime, client }))
            }
        })
    }

    fn prepare(&self, org: &str, ndjson: &[u8]) -> Result<Request> {
        match self {
            Sender::Http(_) => Ok(Request::Ndjson(ndjson.to_vec())),
            Sender::Grpc(_) => {
                let mut log_records = Vec::new();
                for line in ndjson.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let record: codestax_common::AuditRecord = serde_json::from_slice(line)
                        .map_err(|e| BenchError::http("encode OTLP", e))?;
                    log_records.push(codestax_common::otlp::to_log_record(&record));
                }
                Ok(Request::Otlp(ExportLogsServiceRequest {
                    resource_logs: vec![ResourceLogs {
                        resource: Some(Resource {
                            attributes: vec![KeyValue {
                                key: codestax_common::otlp::ORG_ATTRIBUTE.into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(org.into())),
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        scope_logs: vec![ScopeLogs {
                            log_records,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                }))
            }
        }
    }

    fn send(&mut self, c: &Collector, org: &str, request: Request, expected: usize) -> Result<()> {
        match (self, request) {
            (Sender::Http(client), Request::Ndjson(body)) => {
                post_batch(c, client, org, body, expected)
            }
            (Sender::Grpc(grpc), Request::Otlp(req)) => {
                let GrpcSender { runtime, client } = grpc.as_mut();
                let mut req = tonic::Request::new(req);
                let token = format!("Bearer {}", c.keys(org).ingest);
                req.metadata_mut().insert(
                    "authorization",
                    token
                        .parse()
                        .map_err(|e| BenchError::http("gRPC metadata", e))?,
                );
                let answer = runtime
                    .block_on(client.export(req))
                    .map_err(|e| BenchError::http("gRPC Export", e))?
                    .into_inner();
                match answer.partial_success {
                    Some(p) if p.rejected_log_records > 0 => Err(BenchError::http(
                        "gRPC Export",
                        format!(
                            "{} records rejected: {}",
                            p.rejected_log_records, p.error_message
                        ),
                    )),
                    _ => Ok(()),
                }
            }
            _ => unreachable!("a request is prepared by its own sender"),
        }
    }
}

fn post_batch(
    c: &Collector,
    client: &reqwest::blocking::Client,
    org: &str,
    body: Vec<u8>,
    expected: usize,
) -> Result<()> {
    let r = client
        .post(c.url("/api/v1/ingest"))
        .bearer_auth(&c.keys(org).ingest)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .map_err(|e| BenchError::http("POST /api/v1/ingest", e))?;
    let status = r.status();
    let text = r
        .text()
        .map_err(|e| BenchError::http("POST /api/v1/ingest", e))?;
    if !status.is_success() {
        return Err(BenchError::http(
            "POST /api/v1/ingest",
            format!("{status}: {text}"),
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BenchError::http("POST /api/v1/ingest", e))?;
    if v["accepted"].as_u64() != Some(expected as u64) {
        return Err(BenchError::http(
            "POST /api/v1/ingest",
            format!("expected {expected} accepted: {text}"),
        ));
    }
    Ok(())
}

/// Polls each sampled id until the collector serves it; returns the latencies and how many were
/// never found.
///
/// Records become searchable in write-ahead-log order (a commit makes everything indexed so far
/// visible), so each round (every 2 ms) asks for the pending samples oldest first and stops at the
/// first one not yet served: a poller that asked for every pending sample every round sent
/// thousands of GETs per second and made the ingest it measured pay for them. A sample acked
/// out of log order by another client can only be measured later than it became visible, never
/// earlier.
fn poll_freshness(c: &Collector, rx: mpsc::Receiver<Sample>) -> Result<(Latencies, usize)> {
    let client = http_client()?;
    let mut pending: std::collections::VecDeque<Sample> = std::collections::VecDeque::new();
    let mut fresh = Latencies::default();
    let mut never = 0;
    let mut open = true;
    while open || !pending.is_empty() {
        loop {
            match rx.try_recv() {
                Ok(s) => pending.push_back(s),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        while let Some(s) = pending.front() {
            let path = format!("/api/v1/orgs/{}/audit-log/{}", s.org, s.id);
            let r = client
                .get(c.url(&path))
                .bearer_auth(&c.keys(&s.org).reader)
                .send()
                .map_err(|e| BenchError::http(format!("GET {path}"), e))?;
            let status = r.status().as_u16();
            let _ = r.bytes();
            let now = Instant::now();
            match status {
                200 => {
                    fresh.push(now - s.acked);
                    pending.pop_front();
                }
                404 if now - s.acked > FRESHNESS_GIVE_UP => {
                    never += 1;
                    pending.pop_front();
                }
                404 => break,
                other => {
                    return Err(BenchError::http(
                        format!("GET {path}"),
                        format!("status {other}"),
                    ));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((fresh, never))
}

/// COPYs every batch of `corpus` into PostgreSQL from `clients` connections, `per_txn` batches
/// per transaction (each COPY commits, durably, before the next).
pub fn copy_into_postgres(
    pg: &Postgres,
    corpus: &Corpus,
    clients: usize,
    per_txn: usize,
) -> Result<LoadReport> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let chunks = corpus.batches.len().div_ceil(per_txn.max(1));
    let started = Instant::now();
    let results: Vec<Result<Latencies>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (next, failed) = (&next, &failed);
                s.spawn(move || -> Result<Latencies> {
                    let mut client = pg.connect()?;
                    let mut rows = Vec::new();
                    let mut batch = Vec::new();
                    let mut acks = Latencies::default();
                    loop {
                        let chunk = next.fetch_add(1, Ordering::Relaxed);
                        if chunk >= chunks || failed.load(Ordering::Relaxed) {
                            return Ok(acks);
                        }
                        rows.clear();
                        let first = chunk * per_txn;
                        for b in first..(first + per_txn).min(corpus.batches.len()) {
                            corpus.copy_batch(b, &mut batch);
                            rows.extend_from_slice(&batch);
                        }
                        let sent = Instant::now();
                        if let Err(e) = Postgres::copy(&mut client, &rows) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        acks.push(sent.elapsed());
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BenchError::Postgres("a COPY thread panicked".into())))
            })
            .collect()
    });
    let mut report = LoadReport {
        records: corpus.total(),
        elapsed: started.elapsed(),
        ..LoadReport::default()
    };
    for r in results {
        report.ack.extend(r?);
    }
    Ok(report)
}
