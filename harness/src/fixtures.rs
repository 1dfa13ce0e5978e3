//! The records and emit lines the binaries are fed: one valid API record, one line of the emit
//! format, and OpenTelemetry SDK log records. (The property-test generators in
//! `common/tests/support/records.rs` are a different thing: random records of every shape.)

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

/// A valid record of `org` with id `id`, at `time` (RFC 3339), by `email`.
pub fn record(org: &str, id: &str, action: &str, email: &str, time: &str) -> Value {
    json!({
        "id": id,
        "org_id": org,
        "time": time,
        "actor": {"id": email, "name": "Test User", "email": email, "kind": "user"},
        "action": action,
        "target": {"kind": "repository", "id": "r-1", "name": "acme/api"},
        "repository": "acme/api",
        "metadata": {"ip": "203.0.113.7"}
    })
}

/// The current time in RFC 3339 with microseconds, as records carry it.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An OTLP/JSON logs request of `n` records of `org` at the current time, ids `{prefix}-0..`,
/// `action`, by user `u1` (`ada@example.com`), each also carrying the `extra` attributes
/// (e.g. `("audit.metadata.note", "…")`).
pub fn otlp_json(org: &str, prefix: &str, n: usize, action: &str, extra: &[(&str, &str)]) -> Value {
    let nanos = Utc::now()
        .timestamp_nanos_opt()
        .expect("time within i64 nanoseconds")
        .to_string();
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let logs: Vec<Value> = (0..n)
        .map(|i| {
            let mut attributes = vec![
                attr("audit.id", &format!("{prefix}-{i}")),
                attr("audit.action", action),
                attr("enduser.id", "u1"),
                attr("audit.actor.email", "ada@example.com"),
            ];
            attributes.extend(extra.iter().map(|(k, v)| attr(k, v)));
            json!({"timeUnixNano": nanos, "attributes": attributes})
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [attr("audit.org_id", org)]},
        "scopeLogs": [{"logRecords": logs}]
    }]})
}

/// One line of the emit format, newline included: a valid record of org `acme` at the current
/// time, with `id` if given, `message` and `action`, and `pad` bytes of `metadata.pad` (none if
/// 0) to make lines of a chosen size.
pub fn emit_line(id: Option<&str>, message: &str, action: &str, pad: usize) -> String {
    let mut v = json!({
        "org_id": "acme",
        "time": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        "actor": {"id": "u-1", "email": "ada@acme.example"},
        "action": action,
        "repository": "acme/api",
        "message": message,
    });
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    if pad > 0 {
        v["metadata"] = json!({ "pad": "x".repeat(pad) });
    }
    v.to_string() + "\n"
}

/// Emits, through the OpenTelemetry SDK, five valid records (ids `{run}-0` .. `{run}-4`, bodies
/// `{run} 0` ..) and one well-formed record whose action is outside the catalog (id
/// `{run}-bad`, action `scan.trigered`), then shuts the provider down (flushing the exporter).
pub fn emit_with_sdk(provider: opentelemetry_sdk::logs::SdkLoggerProvider, run: &str) {
    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
    let logger = provider.logger("codestax-test-app");
    for i in 0..5 {
        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Info);
        record.set_timestamp(std::time::SystemTime::now());
        record.set_body(format!("{run} {i}").into());
        record.add_attribute("audit.id", format!("{run}-{i}"));
        record.add_attribute("audit.action", "scan.triggered");
        record.add_attribute("enduser.id", "u-7");
        record.add_attribute("audit.actor.email", "ada@acme.example");
        record.add_attribute("audit.repository", "acme/api");
        record.add_attribute("audit.metadata.scan_type", "sast");
        record.add_attribute("client.address", "198.51.100.4");
        logger.emit(record);
    }
    let mut bad = logger.create_log_record();
    bad.set_timestamp(std::time::SystemTime::now());
    bad.add_attribute("audit.id", format!("{run}-bad"));
    bad.add_attribute("audit.action", "scan.trigered");
    bad.add_attribute("enduser.id", "u-7");
    bad.add_attribute("audit.actor.email", "ada@acme.example");
    logger.emit(bad);
    provider.shutdown().expect("exporter shuts down cleanly");
}
