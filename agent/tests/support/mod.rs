//! Test support: an in-test OTLP sink that plays the collector, and OTLP requests of emit
//! lines. (Emit lines, waiting and the agent process come from `codestax-harness`.)
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codestax_common::otlp::{record_from_log, to_log_record};
use codestax_common::{AuditRecord, Rules, parse_json_line};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use tokio::sync::oneshot;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

/// An OTLP request of one record per `(id, message)`: emit lines (with `pad` bytes of metadata)
/// as LogRecords.
pub fn otlp_request(
    records: impl IntoIterator<Item = (String, String)>,
    pad: usize,
) -> ExportLogsServiceRequest {
    let log_records = records
        .into_iter()
        .map(|(id, message)| {
            let line = codestax_harness::emit_line(Some(&id), &message, "scan.triggered", pad);
            to_log_record(&parse_json_line(line.as_bytes(), None, &Rules::new()).unwrap())
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// What the sink answers to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Accept (rejecting records whose message starts with `reject`, per the contract).
    Normal,
    Unavailable,
    ResourceExhausted,
    Unauthenticated,
    PermissionDenied,
    /// RESOURCE_EXHAUSTED with a `RetryInfo` asking for this many milliseconds.
    BusyFor(u64),
}

#[derive(Default)]
pub struct SinkState {
    /// When each call arrived.
    pub call_times: Vec<std::time::Instant>,
    /// Every accepted record, in arrival order (duplicates included).
    pub accepted: Vec<AuditRecord>,
    /// Records rejected, by id, with the reason given.
    pub rejected: BTreeMap<String, String>,
    pub calls: u64,
    pub script: VecDeque<Reply>,
    pub token: Option<String>,
    pub encodings: BTreeSet<String>,
    pub largest_request: usize,
}

impl SinkState {
    /// The ids each message arrived under.
    pub fn ids_by_message(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in &self.accepted {
            ids.entry(r.message.clone().unwrap_or_default())
                .or_default()
                .insert(r.id().to_string());
        }
        ids
    }

    /// Whether every message of `expected` was accepted.
    pub fn has_all(&self, expected: &BTreeSet<String>) -> bool {
        let got: BTreeSet<&String> = self
            .accepted
            .iter()
            .filter_map(|r| r.message.as_ref())
            .collect();
        expected.iter().all(|m| got.contains(m))
    }

    /// Whether the messages accepted are the `expected` ones, each under one id (replays of
    /// the same id allowed); else what is wrong.
    pub fn delivered_once(&self, expected: &BTreeSet<String>) -> Result<(), String> {
        let ids = self.ids_by_message();
        let got: BTreeSet<String> = ids.keys().cloned().collect();
        let missing: Vec<_> = expected.difference(&got).take(20).collect();
        if !missing.is_empty() {
            return Err(format!("missing {missing:?}"));
        }
        let unexpected: Vec<_> = got.difference(expected).take(20).collect();
        if !unexpected.is_empty() {
            return Err(format!("never written: {unexpected:?}"));
        }
        match ids.iter().find(|(_, ids)| ids.len() > 1) {
            Some((message, ids)) => Err(format!("{message} arrived under several ids {ids:?}")),
            None => Ok(()),
        }
    }
}

/// The collector's contract for rejections: per-record lines, at most 50, then `... and N more`.
fn rejection_lines(rejects: &[(usize, String)]) -> String {
    let mut lines: Vec<String> = rejects
        .iter()
        .take(50)
        .map(|(pos, reason)| format!("record {pos}: {reason}"))
        .collect();
    if rejects.len() > 50 {
        lines.push(format!("... and {} more", rejects.len() - 50));
    }
    lines.join("\n")
}

#[derive(Clone)]
struct Service(Arc<Mutex<SinkState>>);

#[tonic::async_trait]
impl LogsService for Service {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        state.call_times.push(std::time::Instant::now());
        if let Some(enc) = request.metadata().get("grpc-encoding") {
            let enc = enc.to_str().unwrap_or("?").to_string();
            state.encodings.insert(enc);
        }
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match state.script.pop_front().unwrap_or(Reply::Normal) {
            Reply::Normal => {}
            Reply::Unavailable => return Err(Status::unavailable("sink is down for a moment")),
            Reply::ResourceExhausted => {
                return Err(Status::resource_exhausted("sink is busy; retry later"));
            }
            Reply::Unauthenticated => return Err(Status::unauthenticated("bad key")),
            Reply::PermissionDenied => return Err(Status::permission_denied("no")),
            Reply::BusyFor(ms) => {
                use tonic_types::{ErrorDetails, StatusExt};
                return Err(Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    "busy",
                    ErrorDetails::with_retry_info(Some(Duration::from_millis(ms))),
                ));
            }
        }
        if let Some(token) = &state.token
            && auth.as_deref() != Some(&format!("Bearer {token}"))
        {
            return Err(Status::unauthenticated("missing or wrong bearer token"));
        }
        let request = request.into_inner();
        let size = prost::Message::encoded_len(&request);
        state.largest_request = state.largest_request.max(size);
        let mut position = 0;
        let mut rejects = Vec::new();
        let mut accepted = Vec::new();
        for rl in &request.resource_logs {
            let resource = rl
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            for sl in &rl.scope_logs {
                for log in &sl.log_records {
                    position += 1;
                    let record = match record_from_log(log, resource, None, &Rules::new()) {
                        Ok(r) => r,
                        Err(e) => {
                            rejects.push((position, e.to_string()));
                            continue;
                        }
                    };
                    if record.id.is_none() {
                        rejects.push((position, "id: required by the sink".into()));
                    } else if record
                        .message
                        .as_deref()
                        .is_some_and(|m| m.starts_with("reject"))
                    {
                        state.rejected.insert(
                            record.id().to_string(),
                            "message: refused by the sink".into(),
                        );
                        rejects.push((position, "message: refused by the sink".into()));
                    } else {
                        accepted.push(record);
                    }
                }
            }
        }
        if position > 0 && rejects.len() == position {
            return Err(Status::invalid_argument(format!(
                "no record was accepted:\n{}",
                rejection_lines(&rejects)
            )));
        }
        state.accepted.extend(accepted);
        let partial_success = (!rejects.is_empty()).then(|| ExportLogsPartialSuccess {
            rejected_log_records: rejects.len() as i64,
            error_message: rejection_lines(&rejects),
        });
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

/// A tiny OTLP/gRPC LogsService that records what it gets; it can be scripted to fail and be
/// stopped and started again on the same port.
pub struct Sink {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<SinkState>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// PEM certificate and key when serving TLS.
    tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl Sink {
    pub async fn start() -> Sink {
        Self::start_with(None).await
    }

    /// A sink serving TLS with this PEM certificate and key.
    pub async fn start_tls(cert: Vec<u8>, key: Vec<u8>) -> Sink {
        Self::start_with(Some((cert, key))).await
    }

    async fn start_with(tls: Option<(Vec<u8>, Vec<u8>)>) -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sink = Sink {
            addr,
            state: Arc::new(Mutex::new(SinkState::default())),
            shutdown: None,
            task: None,
            tls,
        };
        sink.serve(listener);
        sink
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let service = LogsServiceServer::new(Service(self.state.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(64 << 20);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = &self.tls {
            let identity = tonic::transport::Identity::from_pem(cert, key);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap();
        }
        self.task = Some(tokio::spawn(async move {
            let _ = builder
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        }));
        self.shutdown = Some(tx);
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops listening (connections are refused until `resume`).
    pub async fn pause(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    pub async fn resume(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    pub fn script(&self, replies: &[Reply]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(replies.iter().copied());
    }

    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.to_string());
    }

    /// Distinct ids accepted.
    pub fn ids(&self) -> BTreeSet<String> {
        self.state
            .lock()
            .unwrap()
            .accepted
            .iter()
            .map(|r| r.id().to_string())
            .collect()
    }

    pub fn accepted_count(&self) -> usize {
        self.state.lock().unwrap().accepted.len()
    }

    pub fn calls(&self) -> u64 {
        self.state.lock().unwrap().calls
    }

    /// Waits until `check` holds or `timeout` passes; returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&SinkState) -> bool) -> bool {
        codestax_harness::wait_for_async(timeout, || check(&self.state.lock().unwrap())).await
    }
}
