//! An app that records audit events through the OpenTelemetry logs API and the
//! `opentelemetry-otlp` exporter, the way a CodeStax service would.
//!
//! By default it sends to the agent beside it (OTLP/gRPC on 127.0.0.1:4317; the agent holds the
//! collector's key). It can also send straight to a collector with an INGEST key:
//!
//! ```text
//! cargo run -p codestax-examples --bin otel-audit-app -- --org acme
//! cargo run -p codestax-examples --bin otel-audit-app -- --endpoint http://127.0.0.1:8417 --token "$INGEST_KEY"
//! ```
//!
//! The mapping of attributes to audit record fields is in docs/otlp-mapping.md.

#![forbid(unsafe_code)]

use clap::Parser;
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_otlp::{
    LogExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use std::collections::HashMap;
use std::time::SystemTime;

#[derive(Debug, Parser)]
#[command(version, about = "Emit sample CodeStax audit events over OTLP")]
struct Args {
    /// OTLP endpoint: gRPC (`http://host:4317`) or, with --http, the full `/v1/logs` URL.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Use OTLP/HTTP (protobuf) instead of gRPC.
    #[arg(long)]
    http: bool,
    /// INGEST key, when sending straight to a collector (the agent does not need one).
    #[arg(long, env = "CODESTAX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The org the events belong to (sent as the Resource attribute `audit.org_id`).
    #[arg(long, default_value = "acme")]
    org: String,
    /// A prefix for the events' ids, so a second run sends new events (the same prefix twice is
    /// deduplicated by the collector).
    #[arg(long, default_value = "example")]
    run: String,
}

/// One audit event as the app knows it.
struct Event<'a> {
    action: &'a str,
    message: &'a str,
    target: (&'a str, &'a str, &'a str),
    attributes: &'a [(&'a str, &'a str)],
}

const EVENTS: &[Event] = &[
    Event {
        action: "auth.login",
        message: "Signed in with SSO",
        target: ("user", "u-ada", "ada@acme.example"),
        attributes: &[],
    },
    Event {
        action: "repository.connected",
        message: "Connected acme/payments",
        target: ("repository", "r-17", "acme/payments"),
        attributes: &[("audit.repository", "acme/payments")],
    },
    Event {
        action: "scan.triggered",
        message: "Full scan on main",
        target: ("scan", "s-901", "acme/payments@main"),
        attributes: &[
            ("audit.repository", "acme/payments"),
            ("audit.metadata.scan_type", "sast"),
        ],
    },
    Event {
        action: "finding.triaged",
        message: "Marked as false positive",
        target: ("finding", "F-2231", "Hard-coded secret in config.py"),
        attributes: &[
            ("audit.repository", "acme/payments"),
            (
                "audit.metadata.changes",
                r#"[{"field":"status","old":"open","new":"false_positive"}]"#,
            ),
        ],
    },
    Event {
        action: "settings.webhook_configured",
        message: "Webhook for scan results",
        target: ("webhook", "wh-3", "https://hooks.acme.example/codestax"),
        attributes: &[],
    },
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    // The tonic exporter needs a runtime around it; emitting and shutdown run on this thread.
    let _guard = runtime.enter();
    let exporter = if args.http {
        let mut headers = HashMap::new();
        if let Some(token) = &args.token {
            headers.insert("authorization".to_string(), format!("Bearer {token}"));
        }
        LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&args.endpoint)
            .with_headers(headers)
            .build()?
    } else {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(token) = &args.token {
            metadata.insert("authorization", format!("Bearer {token}").parse()?);
        }
        LogExporter::builder()
            .with_tonic()
            .with_endpoint(&args.endpoint)
            .with_metadata(metadata)
            .build()?
    };
    let provider = SdkLoggerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("payments-api")
                .with_attribute(opentelemetry::KeyValue::new(
                    "audit.org_id",
                    args.org.clone(),
                ))
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let logger = provider.logger("codestax-audit");
    for (i, event) in EVENTS.iter().enumerate() {
        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Info);
        record.set_timestamp(SystemTime::now());
        record.set_body(event.message.to_string().into());
        record.add_attribute("audit.id", format!("{}-{i}", args.run));
        record.add_attribute("audit.action", event.action);
        record.add_attribute("enduser.id", "u-ada");
        record.add_attribute("audit.actor.name", "Ada Lovelace");
        record.add_attribute("audit.actor.email", "ada@acme.example");
        record.add_attribute("audit.target.kind", event.target.0);
        record.add_attribute("audit.target.id", event.target.1);
        record.add_attribute("audit.target.name", event.target.2);
        record.add_attribute("client.address", "203.0.113.10");
        record.add_attribute("user_agent.original", "payments-api/2.4");
        for (key, value) in event.attributes {
            record.add_attribute(*key, *value);
        }
        logger.emit(record);
    }
    let flushed = provider.force_flush();
    provider.shutdown()?;
    flushed?;
    println!("sent {} audit events for org {}", EVENTS.len(), args.org);
    Ok(())
}
