//! The OTLP receivers: partial success, all-rejected, spool-full back-pressure, protobuf, JSON
//! and gzip over HTTP, the OTLP/HTTP transport rules (415 for an unknown Content-Encoding,
//! `google.rpc.Status` error bodies, body limits), and gRPC over a real socket.

mod support;

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use codestax_agent::metrics::Metrics;
use codestax_agent::receiver::{MAX_REQUEST_BYTES, OtlpIntake, grpc_service, http_router};
use codestax_agent::spool::{Spool, SpoolEntry, SpoolOptions};
use codestax_common::otlp::to_log_record;
use codestax_common::{AuditRecord, Rules, parse_json_line};
use codestax_harness::emit_line;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use tower::ServiceExt;

fn record(id: Option<&str>, message: &str) -> AuditRecord {
    parse_json_line(
        emit_line(id, message, "scan.triggered", 0).as_bytes(),
        None,
        &Rules::new(),
    )
    .unwrap()
}

fn invalid_log() -> LogRecord {
    LogRecord {
        attributes: vec![KeyValue {
            key: "audit.action".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("scan.triggered".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn request(logs: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: logs,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn spool(dir: &std::path::Path, max_bytes: u64) -> Spool {
    Spool::open(
        dir,
        SpoolOptions {
            max_bytes,
            segment_bytes: 16 << 10,
        },
    )
    .unwrap()
    .0
}

fn spooled(spool: &Spool) -> Vec<AuditRecord> {
    let mut reader = spool.reader();
    let mut out = Vec::new();
    while let Some(e) = reader.try_next().unwrap() {
        if let Some(record) = e.entry.to_record() {
            out.push(record.unwrap());
        }
    }
    out
}

async fn fill(spool: &Spool) {
    for size in [1000, 100, 10, 1] {
        while spool
            .append(vec![SpoolEntry::Log(vec![b'x'; size])])
            .await
            .is_ok()
        {}
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).unwrap();
    enc.finish().unwrap()
}

async fn post(
    router: axum::Router,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let encoding = gzip.then_some("gzip");
    let body = if gzip { self::gzip(&body) } else { body };
    post_encoded(router, content_type, encoding, body).await
}

async fn post_encoded(
    router: axum::Router,
    content_type: &str,
    content_encoding: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut builder = Request::post("/v1/logs").header("content-type", content_type);
    if let Some(encoding) = content_encoding {
        builder = builder.header("content-encoding", encoding);
    }
    let response = router
        .oneshot(builder.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, retry, bytes.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_json_and_gzip_with_partial_success() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool(dir.path(), 1 << 20);
    let router = http_router(OtlpIntake::new(spool.clone(), Arc::new(Metrics::new())));
    let req = request(vec![
        to_log_record(&record(Some("a"), "one")),
        invalid_log(),
        to_log_record(&record(None, "two")),
    ]);

    let (status, _, body) = post(
        router.clone(),
        "application/x-protobuf",
        false,
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let response = ExportLogsServiceResponse::decode(&body[..]).unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.starts_with("record 2: "),
        "{}",
        partial.error_message
    );
    assert!(
        partial.error_message.contains("actor"),
        "{}",
        partial.error_message
    );

    let json = serde_json::to_vec(&req).unwrap();
    let (status, _, body) = post(router.clone(), "application/json", true, json).await;
    assert_eq!(status, StatusCode::OK);
    let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        response["partialSuccess"]["rejectedLogRecords"], 1,
        "{response}"
    );

    let records = spooled(&spool);
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].id(), "a");
    assert!(records[1].id().starts_with("o-"));
    assert_eq!(
        records[1].id, records[3].id,
        "a record sent again without an id gets the same id"
    );

    let (status, _, body) = post(
        router.clone(),
        "application/x-protobuf",
        false,
        request(vec![invalid_log()]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("no record was accepted:\nrecord 1: "));

    let (status, _, _) = post(router.clone(), "text/plain", false, b"hi".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, _) = post(
        router,
        "application/x-protobuf",
        false,
        b"\xff\xff".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Decodes an OTLP/HTTP error body, protobuf or JSON.
fn rpc_status(body: &[u8], protobuf: bool) -> (i32, String) {
    if protobuf {
        let status = <tonic_types::Status as Message>::decode(body).unwrap();
        (status.code, status.message)
    } else {
        let status: serde_json::Value = serde_json::from_slice(body).unwrap();
        (
            status["code"].as_i64().unwrap() as i32,
            status["message"].as_str().unwrap().to_string(),
        )
    }
}

/// The transport rules the agent shares with the collector since the receivers became one:
/// an unknown Content-Encoding is a 415 (it used to be read as uncompressed), the media type
/// is matched without its parameters (not by prefix), and every error body is a
/// `google.rpc.Status` in the request's encoding, the over-limit body included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_follows_the_otlp_transport_rules() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool(dir.path(), 64 << 20);
    let router = http_router(OtlpIntake::new(spool.clone(), Arc::new(Metrics::new())));
    let req = request(vec![to_log_record(&record(Some("enc"), "one"))]).encode_to_vec();

    for encoding in ["br", "deflate", "gzip, br"] {
        let (status, _, body) = post_encoded(
            router.clone(),
            "application/x-protobuf",
            Some(encoding),
            req.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{encoding}");
        let (code, message) = rpc_status(&body, true);
        assert_eq!(code, tonic::Code::InvalidArgument as i32);
        assert!(message.contains("Content-Encoding"), "{message}");
    }
    assert!(
        spooled(&spool).is_empty(),
        "nothing of a refused request is spooled"
    );

    // Known encodings, in any case, and media types with parameters.
    let (status, _, _) = post_encoded(
        router.clone(),
        "application/x-protobuf",
        Some("identity"),
        req.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = post_encoded(
        router.clone(),
        "Application/Protobuf",
        Some("GZIP"),
        gzip(&req),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let json = serde_json::to_vec(&request(vec![to_log_record(&record(Some("j"), "j"))])).unwrap();
    let (status, _, _) = post_encoded(
        router.clone(),
        "application/json; charset=utf-8",
        None,
        json.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = post_encoded(router.clone(), "application/jsonx", None, json).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        rpc_status(&body, false).0,
        tonic::Code::InvalidArgument as i32
    );

    // Errors in the request's encoding.
    let (status, _, body) = post_encoded(
        router.clone(),
        "application/x-protobuf",
        None,
        b"\xff\xff".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (code, message) = rpc_status(&body, true);
    assert_eq!(code, tonic::Code::InvalidArgument as i32);
    assert!(message.contains("malformed OTLP protobuf"), "{message}");
    let (status, _, body) = post_encoded(
        router.clone(),
        "application/json",
        None,
        b"{\"resourceLogs\": 5}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(rpc_status(&body, false).1.contains("malformed OTLP JSON"));
    let (status, _, body) = post_encoded(
        router.clone(),
        "application/x-protobuf",
        Some("gzip"),
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(rpc_status(&body, true).1.contains("gzip"));

    // Over the limit, as sent or inflated: 413 with a Status (it used to be axum's plain text).
    let (status, _, body) = post_encoded(
        router.clone(),
        "application/x-protobuf",
        None,
        vec![0; MAX_REQUEST_BYTES + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        rpc_status(&body, true).0,
        tonic::Code::InvalidArgument as i32
    );
    let (status, _, body) = post(
        router,
        "application/json",
        true,
        vec![b' '; MAX_REQUEST_BYTES + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(rpc_status(&body, false).1.contains("decompressed"));
    assert_eq!(spooled(&spool).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_pushes_back_over_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool(dir.path(), 64 << 10);
    fill(&spool).await;
    let metrics = Arc::new(Metrics::new());
    let intake = OtlpIntake::new(spool.clone(), metrics.clone());
    let req = request(vec![to_log_record(&record(Some("x"), "m"))]);
    let (status, retry, body) = post(
        http_router(intake.clone()),
        "application/x-protobuf",
        false,
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("2"));
    assert_eq!(
        rpc_status(&body, true).0,
        tonic::Code::ResourceExhausted as i32
    );

    let (addr, _server) = grpc_server(intake).await;
    let mut client = LogsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let status = client.export(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let retry = status.get_error_details().retry_info().cloned();
    assert_eq!(
        retry.and_then(|r| r.retry_delay),
        Some(std::time::Duration::from_secs(2))
    );
    assert!(metrics.render().contains("reason=\"spool_full\"} 2"));
}

/// A full disk under the spool (ENOSPC injected into the spool's writes) is not a full spool:
/// HTTP 503 with Retry-After and gRPC UNAVAILABLE with RetryInfo, a message that says the disk
/// is full, nothing stored; the same request is taken once the disk takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_as_unavailable_and_the_retry_lands() {
    use codestax_storage::{Fault, FaultyDisk};
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let (spool, _) = Spool::open_on(
        dir.path(),
        SpoolOptions {
            max_bytes: 1 << 20,
            segment_bytes: 16 << 10,
        },
        Arc::new(disk.clone()),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let intake = OtlpIntake::new(spool.clone(), metrics.clone());
    let req = request(vec![
        to_log_record(&record(Some("d-1"), "one")),
        to_log_record(&record(None, "two")),
    ]);

    disk.arm(Fault::Write(std::io::ErrorKind::StorageFull));
    let (status, retry, body) = post(
        http_router(intake.clone()),
        "application/json",
        false,
        serde_json::to_vec(&req).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("2"));
    let (code, message) = rpc_status(&body, false);
    assert_eq!(code, tonic::Code::Unavailable as i32);
    assert!(
        message.contains("disk under the agent's spool is full"),
        "{message}"
    );
    assert!(!message.contains("max_bytes"), "{message}");

    let (addr, _server) = grpc_server(intake.clone()).await;
    let mut client = LogsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    disk.arm(Fault::Sync(std::io::ErrorKind::StorageFull));
    let status = client.export(req.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("disk"), "{}", status.message());
    use tonic_types::StatusExt;
    let retry = status.get_error_details().retry_info().cloned();
    assert_eq!(
        retry.and_then(|r| r.retry_delay),
        Some(std::time::Duration::from_secs(2))
    );
    // Another disk error is retryable too, and named as such.
    disk.arm(Fault::Write(std::io::ErrorKind::Other));
    let status = client.export(req.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("cannot write its spool"),
        "{}",
        status.message()
    );
    assert!(spooled(&spool).is_empty(), "nothing stored");
    let text = metrics.render();
    for expected in [
        "codestax_agent_otlp_refused_total{reason=\"spool_disk_full\"} 4",
        "codestax_agent_otlp_refused_total{reason=\"spool_write_error\"} 2",
        "codestax_agent_disk_write_errors_total{file=\"spool\",kind=\"disk_full\"} 2",
        "codestax_agent_disk_write_errors_total{file=\"spool\",kind=\"io\"} 1",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }

    // The sender's retry, once the disk takes writes: stored once, the derived id as before.
    let response = client.export(req.clone()).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    let stored = spooled(&spool);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].id(), "d-1");
    assert!(stored[1].id().starts_with("o-"), "{}", stored[1].id());
}

async fn grpc_server(intake: OtlpIntake) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(grpc_service(intake))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_partial_success_and_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool(dir.path(), 1 << 20);
    let (addr, _server) =
        grpc_server(OtlpIntake::new(spool.clone(), Arc::new(Metrics::new()))).await;
    let mut client = LogsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let mut logs: Vec<LogRecord> = (0..60).map(|_| invalid_log()).collect();
    logs.push(to_log_record(&record(Some("ok"), "fine")));
    let response = client.export(request(logs)).await.unwrap().into_inner();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 60);
    let lines: Vec<&str> = partial.error_message.lines().collect();
    assert_eq!(lines.len(), 51);
    assert!(lines[0].starts_with("record 1: "));
    assert_eq!(lines[50], "... and 10 more");

    let status = client
        .export(request(vec![invalid_log(), invalid_log()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("no record was accepted:\nrecord 1: "),
        "{}",
        status.message()
    );
    assert_eq!(spooled(&spool).len(), 1);

    // A large request, gzip-compressed: decoded off the runtime, every record spooled.
    let logs: Vec<LogRecord> = (0..300)
        .map(|i| {
            to_log_record(&record(
                Some(&format!("big-{i}")),
                "a record of a large request",
            ))
        })
        .collect();
    let big = request(logs);
    assert!(big.encoded_len() > 16 * 1024);
    let mut client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let response = client.export(big).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    assert_eq!(spooled(&spool).len(), 301);
}
