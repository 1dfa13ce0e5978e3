//! Records as Elastic Common Schema 9.4 documents (<https://www.elastic.co/docs/reference/ecs>).
//!
//! [`TABLE`] gives each catalogue action its `event.category` and `event.type` (values ECS
//! allows, each type one the category expects); [`DEFAULT_ROW`] is what any other action gets.
//! Where each field of the record goes is one exhaustive `match` in [`document`]: the hash chain
//! goes to `event.sequence` / `event.hash` (and `labels.prev_hash`), what ECS has no field for
//! goes to `labels` (string values; structured ones as compact JSON).

use super::Context;
use super::json::{is_ip, plain, put};
use crate::record::{AuditRecord, Outcome, Provenance, TargetKind};
use crate::schema::{Field, FieldValue};
use crate::time::format_rfc3339;
use serde_json::{Map, Value};

/// The ECS version the documents declare (`ecs.version`) and are validated against.
pub const ECS_VERSION: &str = "9.4.0";

/// `event.dataset` of every document.
pub const DATASET: &str = "codestax.audit";

/// One action's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The catalogue action, or `*` for [`DEFAULT_ROW`].
    pub action: &'static str,
    pub category: &'static [&'static str],
    pub types: &'static [&'static str],
}

const fn row(
    action: &'static str,
    category: &'static [&'static str],
    types: &'static [&'static str],
) -> Row {
    Row {
        action,
        category,
        types,
    }
}

const AUTH: &[&str] = &["authentication", "session"];
const IAM: &[&str] = &["iam"];
const CONFIG: &[&str] = &["configuration"];
const VULN: &[&str] = &["vulnerability"];
const API: &[&str] = &["api"];

/// Every catalogue action's `event.category` and `event.type`, in catalogue order.
pub const TABLE: &[Row] = &[
    row("auth.login", AUTH, &["start"]),
    row("auth.logout", AUTH, &["end"]),
    row("auth.api_key_created", IAM, &["creation"]),
    row("auth.api_key_revoked", IAM, &["deletion"]),
    row("repository.connected", CONFIG, &["creation"]),
    row("repository.disconnected", CONFIG, &["deletion"]),
    row("repository.settings_changed", CONFIG, &["change"]),
    row("scan.triggered", VULN, &["info"]),
    row("scan.completed", VULN, &["info"]),
    row("scan.failed", VULN, &["info"]),
    row("scan.cancelled", VULN, &["info"]),
    row("finding.triaged", VULN, &["info"]),
    row("finding.ignored", VULN, &["info"]),
    row("finding.commented", VULN, &["info"]),
    row("team.member_invited", IAM, &["user", "creation"]),
    row("team.role_changed", IAM, &["user", "change"]),
    row("team.member_removed", IAM, &["user", "deletion"]),
    row("settings.org_updated", CONFIG, &["change"]),
    row("settings.webhook_configured", CONFIG, &["change"]),
    row("settings.policy_changed", CONFIG, &["change"]),
    row("settings.retention_changed", CONFIG, &["change"]),
    row("integration.jira_linked", CONFIG, &["creation"]),
    row("integration.oauth_token_refreshed", IAM, &["change"]),
    row("integration.webhook_enabled", CONFIG, &["change"]),
    row("integration.webhook_disabled", CONFIG, &["change"]),
    row("audit_log.viewed", API, &["access"]),
    row("audit_log.exported", API, &["access"]),
    row("audit_log.stream_created", CONFIG, &["creation"]),
    row("audit_log.stream_changed", CONFIG, &["change"]),
    row("audit_log.stream_deleted", CONFIG, &["deletion"]),
    row("audit_log.saved_view_created", CONFIG, &["creation"]),
    row("audit_log.saved_view_changed", CONFIG, &["change"]),
    row("audit_log.saved_view_deleted", CONFIG, &["deletion"]),
    row("audit_log.stream_records_expired", CONFIG, &["info"]),
    row("audit_log.id_conflict", API, &["denied"]),
];

/// What an action outside the catalogue (a custom action) maps to.
pub const DEFAULT_ROW: Row = row("*", API, &["info"]);

/// The row of `action`: its table row, or [`DEFAULT_ROW`].
pub fn row_for(action: &str) -> &'static Row {
    TABLE
        .iter()
        .find(|r| r.action == action)
        .unwrap_or(&DEFAULT_ROW)
}

/// The table as Markdown, as `docs/formats.md` shows it.
pub fn table_markdown() -> String {
    let mut out = String::from("| action | event.category | event.type |\n|---|---|---|\n");
    for r in TABLE.iter().chain([&DEFAULT_ROW]) {
        let action = match r.action {
            "*" => "any other action".to_string(),
            a => format!("`{a}`"),
        };
        out.push_str(&format!(
            "| {action} | {} | {} |\n",
            r.category.join(", "),
            r.types.join(", ")
        ));
    }
    out
}

/// The record `r` as an ECS document.
pub fn document(r: &AuditRecord, cx: &Context) -> Value {
    let row = row_for(&r.action);
    let target_user = r
        .target
        .as_ref()
        .is_some_and(|t| t.kind == TargetKind::User);

    let mut doc = Map::new();
    let mut event = Map::new();
    let mut user = Map::new();
    let mut target = Map::new();
    let mut labels = Map::new();

    for &f in Field::ALL {
        let Some(v) = f.value(r) else { continue };
        match (f, v) {
            (Field::Id, FieldValue::Text(s)) => put(&mut event, "id", s),
            (Field::OrgId, FieldValue::Text(s)) => {
                let mut org = Map::new();
                put(&mut org, "id", s);
                doc.insert("organization".into(), Value::Object(org));
            }
            (Field::Action, FieldValue::Text(s)) => put(&mut event, "action", s),
            (Field::ActorId, FieldValue::Text(s)) => put(&mut user, "id", s),
            (Field::ActorName, FieldValue::Text(s)) => put(&mut user, "name", s),
            (Field::ActorEmail, FieldValue::Text(s)) => put(&mut user, "email", s),
            (Field::TargetId, FieldValue::Text(s)) if target_user => put(&mut target, "id", s),
            (Field::TargetName, FieldValue::Text(s)) if target_user => put(&mut target, "name", s),
            (Field::Outcome, _) => {}
            (Field::Message, FieldValue::Text(s)) => put(&mut doc, "message", s),
            (Field::MetadataIp, FieldValue::Text(s)) if is_ip(s) => {
                let mut source = Map::new();
                put(&mut source, "ip", s);
                doc.insert("source".into(), Value::Object(source));
            }
            (Field::MetadataUserAgent, FieldValue::Text(s)) => {
                let mut ua = Map::new();
                put(&mut ua, "original", s);
                doc.insert("user_agent".into(), Value::Object(ua));
            }
            (Field::Time, FieldValue::Time(t)) => put(&mut doc, "@timestamp", format_rfc3339(&t)),
            (Field::ReceivedAt, FieldValue::Time(t)) => {
                put(&mut event, "created", format_rfc3339(&t))
            }
            (Field::Seq, FieldValue::Count(n)) => put(&mut event, "sequence", n),
            (Field::Hash, FieldValue::Text(s)) => put(&mut event, "hash", s),
            (Field::Provenance, FieldValue::Provenance(p)) => {
                put(&mut labels, "written_by", written_by(p))
            }
            // The rest has no ECS field: a label named after its record path.
            (
                Field::ActorKind
                | Field::TargetKind
                | Field::TargetId
                | Field::TargetName
                | Field::Repository
                | Field::MetadataIp
                | Field::MetadataScanType
                | Field::MetadataChanges
                | Field::Category
                | Field::SchemaVersion
                | Field::PrevHash,
                v,
            ) => label(&mut labels, f, v),
            // Objects carry no value of their own; a value of an unexpected kind is a label.
            (Field::Actor | Field::Target | Field::Metadata, v)
            | (
                Field::Id
                | Field::OrgId
                | Field::Action
                | Field::ActorId
                | Field::ActorName
                | Field::ActorEmail
                | Field::Message
                | Field::MetadataUserAgent
                | Field::Time
                | Field::ReceivedAt
                | Field::Seq
                | Field::Hash
                | Field::Provenance,
                v,
            ) => label(&mut labels, f, v),
        }
    }
    if !r.metadata.extra.is_empty() {
        let extra = serde_json::to_string(&r.metadata.extra).unwrap_or_default();
        put(&mut labels, "metadata", extra);
    }

    put(&mut event, "kind", "event");
    event.insert("category".into(), row.category.into());
    event.insert("type".into(), row.types.into());
    put(
        &mut event,
        "outcome",
        match r.outcome {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        },
    );
    put(&mut event, "dataset", DATASET);
    put(&mut event, "module", "codestax");
    doc.insert("event".into(), Value::Object(event));
    if !target.is_empty() {
        user.insert("target".into(), Value::Object(target));
    }
    doc.insert("user".into(), Value::Object(user));

    let mut observer = Map::new();
    put(&mut observer, "product", cx.product_name.as_str());
    put(&mut observer, "vendor", cx.vendor_name.as_str());
    put(&mut observer, "version", cx.product_version.as_str());
    if let Some(uid) = &cx.collector_uid {
        put(&mut observer, "name", uid.as_str());
    }
    if let Some(host) = &cx.collector_host {
        put(&mut observer, "hostname", host.as_str());
    }
    doc.insert("observer".into(), Value::Object(observer));
    let mut ecs = Map::new();
    put(&mut ecs, "version", ECS_VERSION);
    doc.insert("ecs".into(), Value::Object(ecs));
    if !labels.is_empty() {
        doc.insert("labels".into(), Value::Object(labels));
    }
    Value::Object(doc)
}

/// The record's writer as the CSV export names it: `collector` or `ingest:<key id>`.
fn written_by(p: &Provenance) -> String {
    match p.key_id() {
        Some(key) => format!("{}:{key}", p.writer()),
        None => p.writer().to_string(),
    }
}

/// A field as a label: its record path with `_` for `.` (`target_kind`), the value a string
/// (structured values as compact JSON).
fn label(labels: &mut Map<String, Value>, f: Field, v: FieldValue<'_>) {
    let value = match plain(v) {
        Value::String(s) => s,
        other => other.to_string(),
    };
    labels.insert(f.path().replace('.', "_"), value.into());
}
