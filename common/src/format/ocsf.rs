//! Records as OCSF 1.8 events (Open Cybersecurity Schema Framework, <https://schema.ocsf.io>).
//!
//! [`TABLE`] maps each catalogue action to an event class and activity; [`DEFAULT_ROW`] is what
//! any other (custom) action gets. A class needs its subject (Account Change a `user`, Scan
//! Activity a `scan`): when the record does not name one (no target of the right kind), the
//! event is an Entity Management event with the row's `fallback` activity, whose `entity` can
//! always be named (the target, else the repository, else the org).
//!
//! Where each field of the record goes is one exhaustive `match` over
//! [`Field`] in [`event`]: fields OCSF has no attribute for (the hash
//! chain, provenance, the category, free-form metadata) go to `unmapped`, under their record
//! path, so a receiver can still dedupe on (`metadata.tenant_uid`, `metadata.uid`) or on
//! `unmapped.seq`, and check `unmapped.hash`.

use super::Context;
use super::json::{is_ip, plain, put};
use crate::record::{ActorKind, AuditRecord, Outcome, TargetKind};
use crate::schema::{Field, FieldValue};
use crate::time::format_rfc3339;
use serde_json::{Map, Value};

/// The OCSF version the events declare (`metadata.version`) and are validated against.
pub const OCSF_VERSION: &str = "1.8.0";

/// The event classes the table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    AccountChange,
    Authentication,
    EntityManagement,
    ScanActivity,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::AccountChange,
        Class::Authentication,
        Class::EntityManagement,
        Class::ScanActivity,
    ];

    /// `class_uid`: the category's uid times 1000 plus the class's number in it.
    pub const fn uid(self) -> u32 {
        match self {
            Class::AccountChange => 3001,
            Class::Authentication => 3002,
            Class::EntityManagement => 3004,
            Class::ScanActivity => 6007,
        }
    }

    /// `class_name`, the class's caption.
    pub const fn name(self) -> &'static str {
        match self {
            Class::AccountChange => "Account Change",
            Class::Authentication => "Authentication",
            Class::EntityManagement => "Entity Management",
            Class::ScanActivity => "Scan Activity",
        }
    }

    /// The class's name in the schema's files (`events/<category>/<file>.json`).
    pub const fn schema_name(self) -> &'static str {
        match self {
            Class::AccountChange => "account_change",
            Class::Authentication => "authentication",
            Class::EntityManagement => "entity_management",
            Class::ScanActivity => "scan_activity",
        }
    }

    pub const fn category_uid(self) -> u32 {
        self.uid() / 1000
    }

    pub const fn category_name(self) -> &'static str {
        match self.category_uid() {
            3 => "Identity & Access Management",
            _ => "Application Activity",
        }
    }

    /// The profiles an event of this class declares in `metadata.profiles`: Scan Activity has
    /// its `actor` only through the `host` profile.
    pub const fn profiles(self) -> &'static [&'static str] {
        match self {
            Class::ScanActivity => &["host"],
            _ => &[],
        }
    }

    /// Whether the class has `src_endpoint` and `http_request` (the IAM classes do).
    const fn has_endpoint(self) -> bool {
        self.category_uid() == 3
    }
}

/// An `activity_id` and its caption in the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub id: u8,
    pub name: &'static str,
}

const fn act(id: u8, name: &'static str) -> Activity {
    Activity { id, name }
}

/// `severity_id` 1.
pub const INFORMATIONAL: u8 = 1;
/// `severity_id` 2.
pub const LOW: u8 = 2;
/// `severity_id` 3.
pub const MEDIUM: u8 = 3;

/// The caption of a `severity_id` the table uses.
pub const fn severity_name(id: u8) -> &'static str {
    match id {
        INFORMATIONAL => "Informational",
        LOW => "Low",
        MEDIUM => "Medium",
        _ => "Other",
    }
}

/// One action's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The catalogue action, or `*` for [`DEFAULT_ROW`].
    pub action: &'static str,
    pub class: Class,
    pub activity: Activity,
    /// The Entity Management activity used when the record does not name the class's subject
    /// (Account Change and Scan Activity only).
    pub fallback: Option<Activity>,
    /// `severity_id` when the outcome is a failure; a success is Informational.
    pub failure_severity: u8,
}

const fn row(
    action: &'static str,
    class: Class,
    activity: Activity,
    fallback: Option<Activity>,
    failure_severity: u8,
) -> Row {
    Row {
        action,
        class,
        activity,
        fallback,
        failure_severity,
    }
}

use Class::{AccountChange as AC, Authentication as AUTH, EntityManagement as EM, ScanActivity};

const CREATE: Activity = act(1, "Create");
const READ: Activity = act(2, "Read");
const UPDATE: Activity = act(3, "Update");
const EM_DELETE: Activity = act(4, "Delete");
const ENROLL: Activity = act(6, "Enroll");
const UNENROLL: Activity = act(7, "Unenroll");
const ENABLE: Activity = act(8, "Enable");
const DISABLE: Activity = act(9, "Disable");
const OTHER: Activity = act(99, "Other");

/// Every catalogue action's OCSF class and activity, in catalogue order.
pub const TABLE: &[Row] = &[
    row("auth.login", AUTH, act(1, "Logon"), None, MEDIUM),
    row("auth.logout", AUTH, act(2, "Logoff"), None, LOW),
    row("auth.api_key_created", EM, CREATE, None, LOW),
    row("auth.api_key_revoked", EM, EM_DELETE, None, LOW),
    row("repository.connected", EM, ENROLL, None, LOW),
    row("repository.disconnected", EM, UNENROLL, None, LOW),
    row("repository.settings_changed", EM, UPDATE, None, LOW),
    row(
        "scan.triggered",
        ScanActivity,
        act(1, "Started"),
        Some(CREATE),
        LOW,
    ),
    row(
        "scan.completed",
        ScanActivity,
        act(2, "Completed"),
        Some(UPDATE),
        LOW,
    ),
    row(
        "scan.failed",
        ScanActivity,
        act(6, "Error"),
        Some(UPDATE),
        LOW,
    ),
    row(
        "scan.cancelled",
        ScanActivity,
        act(3, "Cancelled"),
        Some(UPDATE),
        LOW,
    ),
    row("finding.triaged", EM, UPDATE, None, LOW),
    row("finding.ignored", EM, UPDATE, None, LOW),
    row("finding.commented", EM, UPDATE, None, LOW),
    row(
        "team.member_invited",
        AC,
        act(1, "Create"),
        Some(CREATE),
        LOW,
    ),
    row("team.role_changed", AC, act(99, "Other"), Some(UPDATE), LOW),
    row(
        "team.member_removed",
        AC,
        act(6, "Delete"),
        Some(EM_DELETE),
        LOW,
    ),
    row("settings.org_updated", EM, UPDATE, None, LOW),
    row("settings.webhook_configured", EM, UPDATE, None, LOW),
    row("settings.policy_changed", EM, UPDATE, None, LOW),
    row("settings.retention_changed", EM, UPDATE, None, LOW),
    row("integration.jira_linked", EM, CREATE, None, LOW),
    row("integration.oauth_token_refreshed", EM, UPDATE, None, LOW),
    row("integration.webhook_enabled", EM, ENABLE, None, LOW),
    row("integration.webhook_disabled", EM, DISABLE, None, LOW),
    row("audit_log.viewed", EM, READ, None, LOW),
    row("audit_log.exported", EM, READ, None, LOW),
    row("audit_log.stream_created", EM, CREATE, None, LOW),
    row("audit_log.stream_changed", EM, UPDATE, None, LOW),
    row("audit_log.stream_deleted", EM, EM_DELETE, None, LOW),
    row("audit_log.saved_view_created", EM, CREATE, None, LOW),
    row("audit_log.saved_view_changed", EM, UPDATE, None, LOW),
    row("audit_log.saved_view_deleted", EM, EM_DELETE, None, LOW),
    row("audit_log.stream_records_expired", EM, OTHER, None, MEDIUM),
    row("audit_log.id_conflict", EM, OTHER, None, MEDIUM),
];

/// What an action outside the catalogue (a custom action) maps to: Entity Management, activity
/// Other; the action itself is in `metadata.event_code`.
pub const DEFAULT_ROW: Row = row("*", EM, OTHER, None, LOW);

/// The row of `action`: its table row, or [`DEFAULT_ROW`].
pub fn row_for(action: &str) -> &'static Row {
    TABLE
        .iter()
        .find(|r| r.action == action)
        .unwrap_or(&DEFAULT_ROW)
}

/// The table as Markdown, as `docs/formats.md` shows it.
pub fn table_markdown() -> String {
    let mut out = String::from(
        "| action | class (class_uid) | activity (activity_id) | type_uid | without a subject | severity_id on failure |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in TABLE.iter().chain([&DEFAULT_ROW]) {
        let action = match r.action {
            "*" => "any other action".to_string(),
            a => format!("`{a}`"),
        };
        let fallback = match r.fallback {
            Some(f) => format!("{} {} ({})", EM.name(), f.name, type_uid(EM, f)),
            None => "—".into(),
        };
        out.push_str(&format!(
            "| {action} | {} ({}) | {} ({}) | {} | {fallback} | {} ({}) |\n",
            r.class.name(),
            r.class.uid(),
            r.activity.name,
            r.activity.id,
            type_uid(r.class, r.activity),
            severity_name(r.failure_severity),
            r.failure_severity,
        ));
    }
    out
}

/// `type_uid` = `class_uid` * 100 + `activity_id`.
pub fn type_uid(class: Class, activity: Activity) -> u64 {
    u64::from(class.uid()) * 100 + u64::from(activity.id)
}

/// Whether `s` is an `email_t` of OCSF (its dictionary's pattern, written out:
/// `^[a-zA-Z0-9!#$%&'*+-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$`). An email that is not
/// goes to `unmapped` rather than `email_addr`.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+,-./=?^_`{|}~".contains(&b));
    let domain_ok = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && matches!(domain.find('.'), Some(i) if i > 0 && i + 1 < domain.len());
    local_ok && domain_ok
}

/// The record `r` as an OCSF event of the class its action maps to.
pub fn event(r: &AuditRecord, cx: &Context) -> Value {
    let row = row_for(&r.action);
    let subject = subject(row.class, r);
    let (class, activity) = match (&subject, row.fallback) {
        (Some(_), _) => (row.class, row.activity),
        (None, fallback) => (EM, fallback.unwrap_or(OTHER)),
    };
    let subject = subject.unwrap_or_else(|| Subject::Entity(entity(r)));
    let target_used = subject.uses_target();

    let mut e = Map::new();
    let mut meta = Map::new();
    let mut user = Map::new();
    let mut unmapped = Map::new();
    let mut endpoint = Map::new();
    let mut http = Map::new();

    for &f in Field::ALL {
        let Some(v) = f.value(r) else { continue };
        match (f, v) {
            (Field::Id, FieldValue::Text(s)) => put(&mut meta, "uid", s),
            (Field::OrgId, FieldValue::Text(s)) => put(&mut meta, "tenant_uid", s),
            (Field::Action, FieldValue::Text(s)) => put(&mut meta, "event_code", s),
            (Field::ActorId, FieldValue::Text(s)) => put(&mut user, "uid", s),
            (Field::ActorName, FieldValue::Text(s)) => put(&mut user, "name", s),
            (Field::ActorEmail, FieldValue::Text(s)) if is_email(s) => {
                put(&mut user, "email_addr", s)
            }
            (Field::ActorKind, _) => {
                let (id, name) = user_type(r.actor.kind);
                user.insert("type_id".into(), id.into());
                put(&mut user, "type", name);
            }
            (Field::TargetKind | Field::TargetId | Field::TargetName, _) if target_used => {}
            (Field::Outcome, _) => {}
            (Field::Message, FieldValue::Text(s)) => put(&mut e, "message", s),
            (Field::MetadataIp, FieldValue::Text(s)) if class.has_endpoint() && is_ip(s) => {
                put(&mut endpoint, "ip", s)
            }
            (Field::MetadataUserAgent, FieldValue::Text(s)) if class.has_endpoint() => {
                put(&mut http, "user_agent", s)
            }
            (Field::MetadataScanType, _) if matches!(subject, Subject::Scan(_)) => {}
            (Field::SchemaVersion, FieldValue::Count(n)) => {
                put(&mut meta, "log_version", n.to_string())
            }
            (Field::Time, FieldValue::Time(t)) => {
                e.insert("time".into(), t.timestamp_millis().into());
                put(&mut meta, "original_time", format_rfc3339(&t));
            }
            (Field::ReceivedAt, FieldValue::Time(t)) => {
                meta.insert("logged_time".into(), t.timestamp_millis().into());
                put_path(&mut unmapped, f.path(), format_rfc3339(&t).into());
            }
            (Field::MetadataChanges, FieldValue::Changes(c)) => {
                let changes = serde_json::to_value(c).unwrap_or(Value::Null);
                put_path(&mut unmapped, f.path(), changes);
            }
            (Field::Provenance, FieldValue::Provenance(p)) => {
                let p = serde_json::to_value(p).unwrap_or(Value::Null);
                put_path(&mut unmapped, f.path(), p);
            }
            (Field::Seq, FieldValue::Count(n)) => put_path(&mut unmapped, f.path(), n.into()),
            // The rest has no OCSF attribute: kept under its record path.
            (
                Field::ActorEmail
                | Field::TargetKind
                | Field::TargetId
                | Field::TargetName
                | Field::Repository
                | Field::MetadataIp
                | Field::MetadataUserAgent
                | Field::MetadataScanType
                | Field::Category
                | Field::Hash
                | Field::PrevHash,
                v,
            ) => put_path(&mut unmapped, f.path(), plain(v)),
            // Objects carry no value of their own; a value of an unexpected kind is kept as is.
            (Field::Actor | Field::Target | Field::Metadata, v)
            | (
                Field::Id
                | Field::OrgId
                | Field::Action
                | Field::ActorId
                | Field::ActorName
                | Field::Message
                | Field::SchemaVersion
                | Field::Time
                | Field::ReceivedAt
                | Field::MetadataChanges
                | Field::Provenance
                | Field::Seq,
                v,
            ) => put_path(&mut unmapped, f.path(), plain(v)),
        }
    }
    if !r.metadata.extra.is_empty() {
        let extra = r.metadata.extra.clone().into_iter().collect::<Map<_, _>>();
        unmapped.insert("metadata".into(), merged(unmapped.get("metadata"), extra));
    }

    e.insert("activity_id".into(), activity.id.into());
    put(&mut e, "activity_name", activity.name);
    e.insert("category_uid".into(), class.category_uid().into());
    put(&mut e, "category_name", class.category_name());
    e.insert("class_uid".into(), class.uid().into());
    put(&mut e, "class_name", class.name());
    e.insert("type_uid".into(), type_uid(class, activity).into());
    put(
        &mut e,
        "type_name",
        format!("{}: {}", class.name(), activity.name),
    );
    let (status_id, status, severity) = match r.outcome {
        Outcome::Success => (1, "Success", INFORMATIONAL),
        Outcome::Failure => (2, "Failure", row.failure_severity),
    };
    e.insert("status_id".into(), status_id.into());
    put(&mut e, "status", status);
    e.insert("severity_id".into(), severity.into());
    put(&mut e, "severity", severity_name(severity));

    let mut actor = Map::new();
    let user = Value::Object(user);
    match subject {
        Subject::Actor => {
            e.insert("user".into(), user.clone());
            let mut service = Map::new();
            put(&mut service, "name", cx.product_name.as_str());
            e.insert("service".into(), Value::Object(service));
        }
        Subject::User(u) => {
            e.insert("user".into(), Value::Object(u));
        }
        Subject::Entity(en) => {
            e.insert("entity".into(), Value::Object(en));
        }
        Subject::Scan(s) => {
            e.insert("scan".into(), Value::Object(s));
        }
    }
    actor.insert("user".into(), user);
    e.insert("actor".into(), Value::Object(actor));
    if !endpoint.is_empty() {
        e.insert("src_endpoint".into(), Value::Object(endpoint));
    }
    if !http.is_empty() {
        e.insert("http_request".into(), Value::Object(http));
    }

    put(&mut meta, "version", OCSF_VERSION);
    put(&mut meta, "log_name", "audit");
    let mut product = Map::new();
    put(&mut product, "name", cx.product_name.as_str());
    put(&mut product, "vendor_name", cx.vendor_name.as_str());
    put(&mut product, "version", cx.product_version.as_str());
    meta.insert("product".into(), Value::Object(product));
    let mut reporter = Map::new();
    if let Some(uid) = &cx.collector_uid {
        put(&mut reporter, "uid", uid.as_str());
    }
    if let Some(host) = &cx.collector_host {
        put(&mut reporter, "hostname", host.as_str());
    }
    if !reporter.is_empty() {
        meta.insert("reporter".into(), Value::Object(reporter));
    }
    if !class.profiles().is_empty() {
        meta.insert("profiles".into(), class.profiles().into());
    }
    e.insert("metadata".into(), Value::Object(meta));
    if !unmapped.is_empty() {
        e.insert("unmapped".into(), Value::Object(unmapped));
    }
    Value::Object(e)
}

/// What the event is about, per class.
enum Subject {
    /// Authentication: the actor authenticates (`user` is the actor's user).
    Actor,
    /// Account Change: the target user.
    User(Map<String, Value>),
    /// Entity Management: the `entity`.
    Entity(Map<String, Value>),
    /// Scan Activity: the `scan`.
    Scan(Map<String, Value>),
}

impl Subject {
    /// Whether the subject carries the record's target (so `unmapped` need not).
    fn uses_target(&self) -> bool {
        match self {
            Subject::Actor => false,
            Subject::User(_) | Subject::Scan(_) => true,
            Subject::Entity(e) => e.contains_key("type") && !e.contains_key("org"),
        }
    }
}

/// The subject `class` needs, or `None` when the record does not name it.
fn subject(class: Class, r: &AuditRecord) -> Option<Subject> {
    let named = |kind: TargetKind| {
        r.target
            .as_ref()
            .filter(|t| t.kind == kind && (t.id.is_some() || t.name.is_some()))
    };
    match class {
        Class::Authentication => Some(Subject::Actor),
        Class::EntityManagement => Some(Subject::Entity(entity(r))),
        Class::AccountChange => named(TargetKind::User).map(|t| {
            let mut u = Map::new();
            if let Some(id) = &t.id {
                put(&mut u, "uid", id.as_str());
            }
            if let Some(name) = &t.name {
                put(&mut u, "name", name.as_str());
                if is_email(name) {
                    put(&mut u, "email_addr", name.as_str());
                }
            }
            Subject::User(u)
        }),
        Class::ScanActivity => named(TargetKind::Scan).map(|t| {
            let mut s = Map::new();
            if let Some(id) = &t.id {
                put(&mut s, "uid", id.as_str());
            }
            if let Some(name) = &t.name {
                put(&mut s, "name", name.as_str());
            }
            match &r.metadata.scan_type {
                Some(ty) => {
                    s.insert("type_id".into(), 99.into());
                    put(&mut s, "type", ty.as_str());
                }
                None => {
                    s.insert("type_id".into(), 0.into());
                }
            }
            Subject::Scan(s)
        }),
    }
}

/// The managed entity: the target when it names one; else the repository; else the org (an
/// entity of the org, unnamed), so that an Entity Management event can always be written.
fn entity(r: &AuditRecord) -> Map<String, Value> {
    let mut en = Map::new();
    match &r.target {
        Some(t) if t.id.is_some() || t.name.is_some() => {
            put(&mut en, "type", t.kind.as_str());
            if let Some(id) = &t.id {
                put(&mut en, "uid", id.as_str());
            }
            if let Some(name) = &t.name {
                put(&mut en, "name", name.as_str());
            }
        }
        None if r.repository.is_some() => {
            put(&mut en, "type", TargetKind::Repository.as_str());
            put(&mut en, "name", r.repository.as_deref().unwrap_or_default());
            // The repository also stays in `unmapped`, as in every other event.
        }
        _ => {
            en.insert("org".into(), org(r));
        }
    }
    en
}

fn org(r: &AuditRecord) -> Value {
    let mut o = Map::new();
    put(&mut o, "uid", r.org_id.as_str());
    Value::Object(o)
}

/// `user.type_id` and `user.type` of an actor kind.
fn user_type(kind: ActorKind) -> (u8, &'static str) {
    match kind {
        ActorKind::User => (1, "User"),
        ActorKind::System => (3, "System"),
        ActorKind::ApiKey => (99, "api_key"),
    }
}

/// Puts `v` at the dotted `path` in `m`, making the objects on the way.
fn put_path(m: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            m.insert(path.into(), v);
        }
        Some((head, rest)) => {
            let inner = m.entry(head).or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            if let Value::Object(inner) = inner {
                put_path(inner, rest, v);
            }
        }
    }
}

/// `extra` merged into an object that may already hold some of the record's metadata fields;
/// the named fields win (free-form keys never shadow them: the record cannot hold both).
fn merged(existing: Option<&Value>, mut extra: Map<String, Value>) -> Value {
    if let Some(Value::Object(named)) = existing {
        for (k, v) in named {
            extra.insert(k.clone(), v.clone());
        }
    }
    Value::Object(extra)
}
