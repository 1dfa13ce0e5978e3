//! OTLP into the real collector: the opentelemetry-otlp SDK exporter over gRPC and HTTP/protobuf,
//! raw OTLP/HTTP JSON, and partial success for invalid records.

use chrono::Utc;
use codestax_tests::{Collector, emit_with_sdk};
use opentelemetry_otlp::{
    LogExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use prost::Message;
use serde_json::{Value, json};
use std::collections::HashMap;

#[tokio::test(flavor = "multi_thread")]
async fn opentelemetry_sdk_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let c = tokio::task::block_in_place(|| Collector::start(&dir.path().join("data"), ""));
    let (ingest, admin) = tokio::task::block_in_place(|| {
        (
            c.create_key("acme", "INGEST"),
            c.create_key("acme", "ORG_ADMIN"),
        )
    });

    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {ingest}").parse().unwrap());
    let grpc = LogExporter::builder()
        .with_tonic()
        .with_endpoint(c.grpc_endpoint())
        .with_metadata(metadata)
        .build()
        .unwrap();
    let provider = SdkLoggerProvider::builder()
        .with_batch_exporter(grpc)
        .build();
    tokio::task::spawn_blocking(move || emit_with_sdk(provider, "grpc"))
        .await
        .unwrap();

    let http = LogExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(c.url("/v1/logs"))
        .with_headers(HashMap::from([(
            "authorization".to_string(),
            format!("Bearer {ingest}"),
        )]))
        .build()
        .unwrap();
    let provider = SdkLoggerProvider::builder()
        .with_batch_exporter(http)
        .build();
    tokio::task::spawn_blocking(move || emit_with_sdk(provider, "http"))
        .await
        .unwrap();

    tokio::task::block_in_place(|| c.wait_for_total("acme", "action=scan.triggered", &admin, 10));
    let entries =
        tokio::task::block_in_place(|| c.search_all("acme", "action=scan.triggered", &admin));
    let mut ids: Vec<String> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let want: Vec<String> = ["grpc", "http"]
        .iter()
        .flat_map(|run| (0..5).map(move |i| format!("{run}-{i}")))
        .collect();
    assert_eq!(ids, want);
    let e = &entries[0];
    assert_eq!(e["metadata"]["scan_type"], "sast");
    assert_eq!(e["metadata"]["ip"], "198.51.100.4");
    assert_eq!(e["org_id"], "acme", "the key's org");
    let bad = tokio::task::block_in_place(|| {
        c.get("/api/v1/orgs/acme/audit-log/grpc-bad", &admin)
            .status()
    });
    assert_eq!(bad, 404, "the invalid record was not stored");
}

#[test]
fn otlp_http_json_and_protobuf_partial_success() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), "");
    let ingest = c.create_key("acme", "INGEST");
    let nanos = Utc::now().timestamp_nanos_opt().unwrap().to_string();
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [attr("audit.org_id", "acme")]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": nanos, "attributes": [attr("audit.id", "j1"), attr("audit.action", "team.member_invited"), attr("enduser.id", "u1"), attr("audit.actor.email", "ada@acme.example")]},
            {"timeUnixNano": nanos, "attributes": [attr("audit.id", "j2"), attr("audit.action", "team.member_invited"), attr("enduser.id", "u1"), attr("audit.actor.email", "not-an-email")]}
        ]}]
    }]});
    let r = c.post(
        "/v1/logs",
        &ingest,
        "application/json",
        body.to_string().into_bytes(),
    );
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().unwrap();
    let rejected = &answer["partialSuccess"]["rejectedLogRecords"];
    assert!(rejected == &json!(1) || rejected == &json!("1"), "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        message
            .contains("record 2: actor.email: not a valid email address (OTLP audit.actor.email)"),
        "{message}"
    );

    // The same over protobuf.
    let request: opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest =
        serde_json::from_value(body).unwrap();
    let r = c.post(
        "/v1/logs",
        &ingest,
        "application/x-protobuf",
        request.encode_to_vec(),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let answer =
        opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
            r.bytes().unwrap(),
        )
        .unwrap();
    assert_eq!(answer.partial_success.unwrap().rejected_log_records, 1);
}
