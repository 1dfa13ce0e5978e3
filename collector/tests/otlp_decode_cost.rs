//! What decoding one LogRecord at a time costs against decoding the whole request first (what
//! the receivers did before): CPU per record of both over the same requests, alternating.
//! A measurement, not a check: `cargo test --release -p codestax-collector --test
//! otlp_decode_cost -- --ignored --nocapture`.

use codestax_collector::ingest::{Batch, decode_otlp};
use codestax_common::otlp::{record_from_log, to_log_record};
use codestax_common::{Rules, parse_json_line};
use codestax_otlp_receiver::Logs;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use prost::Message;
use std::time::Instant;

/// 1,000 records of the shape the bench sends (an actor, a target, metadata), as one request.
fn request() -> ExportLogsServiceRequest {
    let now = chrono::Utc::now().to_rfc3339();
    let rules = Rules::new();
    let log_records = (0..1000)
        .map(|i| {
            let line = format!(
                r#"{{"id":"req-{i:08}","time":"{now}","org_id":"acme","actor":{{"kind":"user","id":"u{}","email":"u{}@acme.example","name":"User {}"}},"action":"scan.triggered","target":{{"kind":"repository","id":"r{}","name":"acme/repo-{}"}},"repository":"acme/repo-{}","outcome":"success","metadata":{{"scan_type":"full","branch":"main","commit":"{:040x}"}}}}"#,
                i % 50, i % 50, i % 50, i % 30, i % 30, i % 30, i * 7919
            );
            to_log_record(&parse_json_line(line.as_bytes(), None, &rules).unwrap())
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

/// The receivers before: the whole request decoded, then every LogRecord converted.
fn whole(request: &ExportLogsServiceRequest, rules: &Rules) -> Batch {
    let mut batch = Batch::default();
    let mut position = 0;
    for resource_logs in &request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        for scope_logs in &resource_logs.scope_logs {
            for log in &scope_logs.log_records {
                position += 1;
                let decoded = record_from_log(log, resource, Some("acme"), rules);
                batch.push(position, decoded, || None);
            }
        }
    }
    batch
}

/// This process's CPU time, in milliseconds.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    codestax_harness::stat_cpu_seconds(&stat).unwrap() * 1e3
}

#[test]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
fn cost_of_decoding_one_record_at_a_time() {
    let rules = Rules::new();
    let bytes = request().encode_to_vec();
    let json = serde_json::to_vec(&ExportLogsServiceRequest::decode(&bytes[..]).unwrap()).unwrap();
    let rounds: u32 = 300;
    for round in 0..4 {
        let mut figures = Vec::new();
        let runs: [(&str, &dyn Fn() -> Batch); 4] = [
            ("whole protobuf", &|| {
                whole(
                    &ExportLogsServiceRequest::decode(&bytes[..]).unwrap(),
                    &rules,
                )
            }),
            ("walked protobuf", &|| {
                decode_otlp(Logs::Protobuf(&bytes), "acme", &rules).unwrap()
            }),
            ("whole JSON", &|| {
                whole(&serde_json::from_slice(&json).unwrap(), &rules)
            }),
            ("walked JSON", &|| {
                decode_otlp(Logs::Json(&json), "acme", &rules).unwrap()
            }),
        ];
        for (name, run) in runs {
            let (cpu, wall) = (cpu_ms(), Instant::now());
            for _ in 0..rounds {
                assert_eq!(run().records.len(), 1000);
            }
            let per_1000 = (cpu_ms() - cpu) / f64::from(rounds);
            let wall = wall.elapsed().as_secs_f64() * 1e3 / f64::from(rounds);
            figures.push(format!("{name} {per_1000:.2} ms ({wall:.2} wall)"));
        }
        eprintln!(
            "round {round}, CPU per 1,000 records: {}",
            figures.join(" · ")
        );
    }
}
