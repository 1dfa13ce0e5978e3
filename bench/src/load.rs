//! Sending a corpus: batches (NDJSON over HTTP, or OTLP/gRPC with opentelemetry-proto's tonic
//! client) from concurrent clients, each batch acknowledged only once durable; optionally paced, and optionally sampling ack → searchable latency
//! (freshness) by polling `GET /api/v1/orgs/{org}/audit-log/{id}`, which records no read.
//! The same corpus into PostgreSQL with COPY, one transaction per batch.

use crate::collector::{Collector, http_client, process_cpu_seconds};
use crate::data::Corpus;
use crate::error::{BenchError, Result};
use crate::pg::Postgres;
use crate::stats::Latencies;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;

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
    /// Sample the last record of every n-th batch for freshness (and in a scattered corpus the
    /// one before it too: the last is live there, the other of any week); 0: none.
    pub sample_every: usize,
    /// Encode every batch before the clock starts (NDJSON text, or OTLP protobuf bytes), so the
    /// clients spend their CPU on sending only: on two cores, a client building OTLP requests
    /// during the run took ~8 ms of CPU per 1,000 records from the collector it measured. Holds
    /// the whole corpus encoded in memory (~600 bytes a record).
    pub pre_encode: bool,
}

impl LoadOptions {
    /// NDJSON from `clients` clients as fast as acks come, no freshness samples.
    pub fn ndjson(clients: usize, pre_encode: bool) -> LoadOptions {
        LoadOptions {
            protocol: Protocol::Ndjson,
            clients,
            pace: None,
            sample_every: 0,
            pre_encode,
        }
    }
}

/// What a load measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub records: u64,
    /// From the first send to the last ack (the freshness poller may go on after it).
    pub elapsed: Duration,
    /// Request → durable ack, per batch.
    pub ack: Latencies,
    /// Ack → first successful GET, per sampled record of the current ISO week.
    pub freshness: Latencies,
    /// The same for sampled records of past weeks (the collector may index them in bulk).
    pub freshness_past_weeks: Latencies,
    /// Sampled records not found within [`FRESHNESS_GIVE_UP`].
    pub never_found: usize,
    /// GETs the freshness poller sent for current-week and past-week samples: load the
    /// collector served on top of the ingest.
    pub freshness_gets: [u64; 2],
    /// CPU seconds this process used while the clock ran (clients and poller; encoding done
    /// before the clock started is not in it).
    pub client_cpu: f64,
}

impl LoadReport {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// A batch refused with 503 (unavailable, retry) is sent again for this long.
const UNAVAILABLE_GIVE_UP: Duration = Duration::from_secs(60);

/// A sampled record is counted as never found after this long.
pub const FRESHNESS_GIVE_UP: Duration = Duration::from_secs(60);

struct Sample {
    org: String,
    id: String,
    acked: Instant,
    /// The record's time is before the current ISO week.
    past: bool,
}

/// The start of the current ISO week (Monday 00:00 UTC), in µs since the epoch.
fn current_week_start_micros() -> i64 {
    const DAY: i64 = crate::data::DAY_MICROS;
    let days = crate::data::now_micros().div_euclid(DAY);
    // 1970-01-01 was a Thursday: Monday-based weekday = (days + 3) mod 7.
    (days - (days + 3).rem_euclid(7)) * DAY
}

/// Sends every batch of `corpus` to the collector.
pub fn send(c: &Collector, corpus: &Corpus, opts: LoadOptions) -> Result<LoadReport> {
    send_to(&[c], corpus, opts)
}

/// [`send`] spread over `targets` (the nodes of a cluster): client `i` sends to target `i` modulo
/// their number; freshness is polled on the first.
pub fn send_to(targets: &[&Collector], corpus: &Corpus, opts: LoadOptions) -> Result<LoadReport> {
    let c = *targets
        .first()
        .ok_or_else(|| BenchError::Usage("no collector to send to".into()))?;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Sample>();
    let encoded: Vec<Mutex<Option<Request>>> = if opts.pre_encode {
        let mut body = Vec::new();
        (0..corpus.batches.len())
            .map(|b| {
                corpus.ndjson_batch(b, &mut body);
                let org = &corpus.orgs[corpus.batches[b].org as usize].id;
                Ok(Mutex::new(Some(Request::encode(
                    opts.protocol,
                    org,
                    &body,
                )?)))
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let week_start = current_week_start_micros();
    let cpu0 = process_cpu_seconds(std::process::id())?;
    let started = Instant::now();
    let (results, poll, elapsed) = std::thread::scope(|s| {
        let poller = (opts.sample_every > 0).then(|| s.spawn(|| poll_freshness(c, rx)));
        let handles: Vec<_> = (0..opts.clients.max(1))
            .map(|i| {
                let tx = tx.clone();
                let (next, failed, encoded) = (&next, &failed, &encoded);
                let c = targets[i % targets.len()];
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
                        let request = match encoded.get(b) {
                            Some(slot) => slot
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .take()
                                .expect("each batch is sent once"),
                            None => {
                                corpus.ndjson_batch(b, &mut body);
                                Request::encode(opts.protocol, org, &body)?
                            }
                        };
                        let sent = Instant::now();
                        let result = sender.send(c, org, request, corpus.batch_size);
                        if let Err(e) = result {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        let acked = Instant::now();
                        acks.push(acked - sent);
                        if opts.sample_every > 0 && b % opts.sample_every == 0 {
                            // The last record; in a scattered corpus (where that one is live,
                            // of the last minutes) also the one before it, of any week.
                            let last = corpus.batch_size - 1;
                            let sampled = if corpus.scattered && last > 0 {
                                last - 1..=last
                            } else {
                                last..=last
                            };
                            for j in sampled {
                                let _ = tx.send(Sample {
                                    org: org.clone(),
                                    id: corpus.record(b, j).id,
                                    acked,
                                    past: corpus.time(b, j) < week_start,
                                });
                            }
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
        // The last ack: the poller may wait on for the last samples to become searchable, which
        // is freshness, not the rate of durable acks (and a past week's sample waits longest).
        let elapsed = started.elapsed();
        let poll = poller.map(|p| {
            p.join()
                .unwrap_or_else(|_| Err(BenchError::Collector("the poller panicked".into())))
        });
        (results, poll, elapsed)
    });
    let mut report = LoadReport {
        records: corpus.total(),
        elapsed,
        client_cpu: process_cpu_seconds(std::process::id())? - cpu0,
        ..LoadReport::default()
    };
    for r in results {
        report.ack.extend(r?);
    }
    if let Some(p) = poll {
        let (fresh, past, never, gets) = p?;
        report.freshness = fresh;
        report.freshness_past_weeks = past;
        report.never_found = never;
        report.freshness_gets = gets;
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
    client: tonic::client::Grpc<tonic::transport::Channel>,
}

/// A batch encoded for its protocol (encoding is not timed).
enum Request {
    Ndjson(Vec<u8>),
    /// An `ExportLogsServiceRequest`, protobuf-encoded.
    Otlp(Encoded),
}

/// A message already encoded: sent as its bytes, as they are. Never decoded.
#[derive(Debug, Clone, Default, PartialEq)]
struct Encoded(Vec<u8>);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> std::result::Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The gRPC method the OTLP log exporter calls.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

impl Request {
    /// Encodes one NDJSON batch for `protocol`; OTLP carries the org as a resource attribute and
    /// each record in the attributes style, as the agent sends them.
    fn encode(protocol: Protocol, org: &str, ndjson: &[u8]) -> Result<Request> {
        match protocol {
            Protocol::Ndjson => Ok(Request::Ndjson(ndjson.to_vec())),
            Protocol::Grpc => {
                let mut log_records = Vec::new();
                for line in ndjson.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let record: codestax_common::AuditRecord = serde_json::from_slice(line)
                        .map_err(|e| BenchError::http("encode OTLP", e))?;
                    log_records.push(codestax_common::otlp::to_log_record(&record));
                }
                let request = ExportLogsServiceRequest {
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
                };
                Ok(Request::Otlp(Encoded(prost::Message::encode_to_vec(
                    &request,
                ))))
            }
        }
    }
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
                let channel = runtime
                    .block_on(
                        tonic::transport::Endpoint::from_shared(c.grpc_endpoint())
                            .map_err(|e| BenchError::http("gRPC endpoint", e))?
                            .connect(),
                    )
                    .map_err(|e| BenchError::http("gRPC connect", e))?;
                let client = tonic::client::Grpc::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20);
                Sender::Grpc(Box::new(GrpcSender { runtime, client }))
            }
        })
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
                let codec =
                    tonic_prost::ProstCodec::<Encoded, ExportLogsServiceResponse>::default();
                let answer = runtime
                    .block_on(async {
                        client.ready().await.map_err(|e| {
                            tonic::Status::unavailable(format!("gRPC channel not ready: {e}"))
                        })?;
                        client
                            .unary(req, PathAndQuery::from_static(EXPORT_PATH), codec)
                            .await
                    })
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
    let body = bytes::Bytes::from(body);
    let deadline = Instant::now() + UNAVAILABLE_GIVE_UP;
    let (status, text) = loop {
        let r = client
            .post(c.url("/api/v1/ingest"))
            .bearer_auth(&c.keys(org).ingest)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .map_err(|e| BenchError::http("POST /api/v1/ingest", e))?;
        let status = r.status();
        let text = r
            .text()
            .map_err(|e| BenchError::http("POST /api/v1/ingest", e))?;
        // A cluster node answers 503 while the stream elects a leader: the same batch again,
        // as a client does (the ack latency includes the wait).
        if status != 503 || Instant::now() > deadline {
            break (status, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
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

/// How often pending current-week samples are asked for: 0.5 % of the 1 s target.
const POLL_CURRENT: Duration = Duration::from_millis(5);
/// How often pending past-week samples are asked for: 0.5 % of the 5 s target.
const POLL_PAST: Duration = Duration::from_millis(25);

/// Polls each sampled id until the collector serves it; returns the latencies and how many were
/// never found.
///
/// Records become searchable in write-ahead-log order (a commit makes everything indexed so far
/// visible), so each round asks for the pending samples oldest first and stops at the first one
/// not yet served: a poller that asked for every pending sample every round sent thousands of
/// GETs per second and made the ingest it measured pay for them. Rounds are
/// [`POLL_CURRENT`] apart for the current week's samples and [`POLL_PAST`] for past weeks' (0.5 %
/// of their targets): each GET for a past week's record looks it up in every partition, and
/// polling those every 2 ms cost the collector a few ms per 1,000 records of a spread load that
/// an in-order one did not pay. A sample acked out of log order by another client can only be
/// measured later than it became visible, never earlier.
fn poll_freshness(
    c: &Collector,
    rx: mpsc::Receiver<Sample>,
) -> Result<(Latencies, Latencies, usize, [u64; 2])> {
    let client = http_client()?;
    // Current-week and past-week samples in queues of their own: the collector indexes past
    // weeks' records in bulk, later, and one of them at the head must not hold back the others.
    let mut pending: [std::collections::VecDeque<Sample>; 2] = Default::default();
    let mut fresh: [Latencies; 2] = Default::default();
    let mut next_round = [Instant::now(); 2];
    let mut gets = [0u64; 2];
    let mut never = 0;
    let mut open = true;
    while open || pending.iter().any(|q| !q.is_empty()) {
        loop {
            match rx.try_recv() {
                Ok(s) => pending[usize::from(s.past)].push_back(s),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        for (((queue, fresh), (next, every)), gets) in pending
            .iter_mut()
            .zip(fresh.iter_mut())
            .zip(next_round.iter_mut().zip([POLL_CURRENT, POLL_PAST]))
            .zip(gets.iter_mut())
        {
            let now = Instant::now();
            if now < *next {
                continue;
            }
            *next = now + every;
            while let Some(s) = queue.front() {
                let path = format!("/api/v1/orgs/{}/audit-log/{}", s.org, s.id);
                let r = client
                    .get(c.url(&path))
                    .bearer_auth(&c.keys(&s.org).reader)
                    .send()
                    .map_err(|e| BenchError::http(format!("GET {path}"), e))?;
                *gets += 1;
                let status = r.status().as_u16();
                let _ = r.bytes();
                let now = Instant::now();
                match status {
                    200 => {
                        fresh.push(now - s.acked);
                        queue.pop_front();
                    }
                    404 if now - s.acked > FRESHNESS_GIVE_UP => {
                        never += 1;
                        queue.pop_front();
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
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let [current, past] = fresh;
    Ok((current, past, never, gets))
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
