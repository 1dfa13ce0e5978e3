//! What a stream is: its name, format, start point, filters and destination, as the API takes
//! them (`POST .../streams`), checked field by field, and as stored and shown. Secrets (the HTTPS
//! HMAC secret, header values) live in [`Secrets`], which has no `Serialize` and a redacting
//! `Debug`: they cannot reach an answer or a log line by accident.

use chrono::{DateTime, Utc};
use codestax_common::AuditRecord;
use codestax_common::format::{Context, ecs, ocsf};
use codestax_common::record_view::RecordHead;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest syslog message by default (what syslog receivers accept by default).
pub const DEFAULT_SYSLOG_MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Bounds of a syslog destination's `max_message_bytes`.
pub const SYSLOG_MAX_MESSAGE_BYTES_RANGE: (usize, usize) = (480, 1024 * 1024);
/// Longest stream name.
const MAX_NAME_CHARS: usize = 200;
/// Most values per filter, and headers per destination.
const MAX_LIST: usize = 100;
/// Largest filter set through the API, in bytes of JSON: a change's record holds the old and
/// the new set (see [`check_recordable`]).
pub const MAX_FILTERS_BYTES: usize = 8 * 1024;
/// Largest destination through the API, in bytes of JSON as shown (without secrets; a `ca_pem`
/// of a few certificates): a change's record holds the old and the new one.
pub const MAX_DESTINATION_BYTES: usize = 20 * 1024;

/// A field of a stream definition that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    /// The JSON path of the field (`destination.url`).
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field: field.into(),
        message: message.into(),
    }
}

/// The form records are sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The record's canonical JSON as stored (every field, chain fields included): the
    /// export's NDJSON line, byte for byte.
    Native,
    /// OCSF 1.x events (`codestax_common::format::ocsf`, the export's mapping).
    Ocsf,
    /// Elastic Common Schema documents (`codestax_common::format::ecs`).
    Ecs,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "native" => Some(Format::Native),
            "ocsf" => Some(Format::Ocsf),
            "ecs" => Some(Format::Ecs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Ocsf => "ocsf",
            Format::Ecs => "ecs",
        }
    }

    /// One record in this format, as one line of JSON; `cx` names the product and the
    /// collector in OCSF and ECS (the same mappings as the export's).
    pub fn encode(self, record: &AuditRecord, cx: &Context) -> Result<Vec<u8>, String> {
        let json = match self {
            Format::Native => Ok(record.canonical_json().into_bytes()),
            Format::Ocsf => serde_json::to_vec(&ocsf::event(record, cx)),
            Format::Ecs => serde_json::to_vec(&ecs::document(record, cx)),
        };
        json.map_err(|e| e.to_string())
    }

    /// [`Self::encode`] of a record as stored (its canonical JSON): `native` passes the bytes
    /// on as they are (`shared`, the same bytes already shared, without a copy); OCSF and ECS
    /// map the typed record.
    pub fn encode_stored(
        self,
        stored: &[u8],
        shared: Option<&Arc<[u8]>>,
        cx: &Context,
    ) -> Result<Arc<[u8]>, String> {
        match self {
            Format::Native => Ok(shared.map_or_else(|| Arc::from(stored), Arc::clone)),
            Format::Ocsf | Format::Ecs => {
                let record: AuditRecord =
                    serde_json::from_slice(stored).map_err(|e| e.to_string())?;
                self.encode(&record, cx).map(Arc::from)
            }
        }
    }
}

/// Where a new stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After the org's newest record stored when the stream is created.
    Now,
    /// From the oldest record retention keeps.
    Beginning,
    /// From the first record received at or after this time.
    Time(DateTime<Utc>),
}

impl Start {
    pub fn parse(s: &str) -> Option<Start> {
        match s {
            "now" => Some(Start::Now),
            "beginning" => Some(Start::Beginning),
            t => DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| Start::Time(t.with_timezone(&Utc))),
        }
    }
}

impl Serialize for Start {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Start::Now => s.serialize_str("now"),
            Start::Beginning => s.serialize_str("beginning"),
            Start::Time(t) => {
                s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Start, D::Error> {
        let s = String::deserialize(d)?;
        Start::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad start {s:?}")))
    }
}

/// The search filters: values within one filter are ORed, filters are ANDed, values match
/// exactly ignoring case (as the audit-log search's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action: Vec<String>,
    /// Actor ids or emails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository: Vec<String>,
    /// `success` or `failure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcome: Vec<String>,
}

impl Filters {
    /// Whether `record` passes every filter (the typed oracle [`Self::matches_view`] is
    /// tested against; delivery reads records as stored).
    #[cfg(test)]
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.matches_fields(
            &r.category,
            &r.action,
            &r.actor.id,
            r.actor.email.as_deref(),
            r.repository.as_deref(),
            r.outcome.as_str(),
        )
    }

    /// Whether no filter is set: every record passes, and none needs to be looked into.
    pub fn is_empty(&self) -> bool {
        let Filters {
            category,
            action,
            actor,
            repository,
            outcome,
        } = self;
        category.is_empty()
            && action.is_empty()
            && actor.is_empty()
            && repository.is_empty()
            && outcome.is_empty()
    }

    /// Whether `r`, a record read as stored, passes every filter (as the test-only
    /// `Self::matches` does for a parsed one).
    pub fn matches_view(&self, r: &RecordHead) -> bool {
        self.matches_fields(
            &r.category,
            &r.action,
            &r.actor.id,
            r.actor.email.as_deref(),
            r.repository.as_deref(),
            &r.outcome,
        )
    }

    fn matches_fields(
        &self,
        category: &str,
        action: &str,
        actor_id: &str,
        actor_email: Option<&str>,
        repository: Option<&str>,
        outcome: &str,
    ) -> bool {
        fn any(values: &[String], candidates: &[Option<&str>]) -> bool {
            values.is_empty()
                || values.iter().any(|v| {
                    candidates
                        .iter()
                        .flatten()
                        .any(|c| c.eq_ignore_ascii_case(v))
                })
        }
        any(&self.category, &[Some(category)])
            && any(&self.action, &[Some(action)])
            && any(&self.actor, &[Some(actor_id), actor_email])
            && any(&self.repository, &[repository])
            && any(&self.outcome, &[Some(outcome)])
    }

    fn from_value(v: &Value) -> Result<Filters, DefinitionError> {
        let Value::Object(map) = v else {
            return Err(bad("filters", "must be an object of lists of strings"));
        };
        let mut f = Filters::default();
        for (k, v) in map {
            let field = format!("filters.{k}");
            let list = match k.as_str() {
                "category" => &mut f.category,
                "action" => &mut f.action,
                "actor" | "user" => &mut f.actor,
                "repository" => &mut f.repository,
                "outcome" => &mut f.outcome,
                _ => {
                    return Err(bad(
                        field,
                        "unknown filter; expected category, action, actor, repository or outcome",
                    ));
                }
            };
            let values = match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(&field, "must be a list of strings"))?,
                _ => return Err(bad(&field, "must be a list of strings")),
            };
            if values.len() > MAX_LIST || values.iter().any(|s| s.is_empty() || s.len() > 512) {
                return Err(bad(
                    &field,
                    format!("at most {MAX_LIST} values, each 1 to 512 bytes"),
                ));
            }
            if k == "category" {
                for c in &values {
                    if codestax_common::Category::parse(c).is_none() {
                        return Err(bad(&field, format!("unknown category {c:?}")));
                    }
                }
            }
            list.extend(values);
        }
        // Categories compare by canonical name, as search resolves aliases.
        f.category = f
            .category
            .iter()
            .filter_map(|c| codestax_common::Category::parse(c))
            .map(|c| c.as_str().to_string())
            .collect();
        Ok(f)
    }
}

/// Where a stream sends, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    /// POST NDJSON batches to `url`, signed with the stream's secret.
    Https {
        url: String,
        /// PEM of the CA to trust instead of the system roots.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
    },
    /// RFC 5424 messages over TCP (RFC 6587 octet counting), TLS optional (RFC 5425).
    Syslog {
        address: String,
        #[serde(default)]
        tls: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
        #[serde(default = "default_max_message")]
        max_message_bytes: usize,
    },
    /// Splunk HTTP Event Collector: batches of HEC events POSTed to
    /// `<url>/services/collector/event` with the stream's token (in [`Secrets`]).
    SplunkHec {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<String>,
        #[serde(default = "default_sourcetype")]
        sourcetype: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
    },
    /// Gzip NDJSON objects in an S3-compatible bucket, per org and receive hour; the keys are
    /// in [`Secrets`].
    S3 {
        bucket: String,
        /// Key prefix, without leading or trailing `/` (may be empty).
        #[serde(default)]
        prefix: String,
        region: String,
        /// An S3-compatible endpoint (`http(s)://host[:port]`), path-style; AWS when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
    },
}

/// The region of an S3 destination that names none.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// The HEC `sourcetype` when the stream names none.
pub const DEFAULT_HEC_SOURCETYPE: &str = "codestax:audit";

fn default_sourcetype() -> String {
    DEFAULT_HEC_SOURCETYPE.to_string()
}

fn default_max_message() -> usize {
    DEFAULT_SYSLOG_MAX_MESSAGE_BYTES
}

impl Destination {
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Https { .. } => "https",
            Destination::Syslog { .. } => "syslog",
            Destination::SplunkHec { .. } => "splunk_hec",
            Destination::S3 { .. } => "s3",
        }
    }

    /// The host and port it connects to.
    pub fn host_port(&self) -> Result<(String, u16), DefinitionError> {
        match self {
            Destination::S3 {
                endpoint: None,
                region,
                ..
            } => Ok((format!("s3.{region}.amazonaws.com"), 443)),
            Destination::S3 {
                endpoint: Some(url),
                ..
            } => url_host_port("destination.endpoint", url),
            Destination::Https { url, .. } | Destination::SplunkHec { url, .. } => {
                url_host_port("destination.url", url)
            }
            Destination::Syslog { address, .. } => split_host_port(address)
                .ok_or_else(|| bad("destination.address", "must be host:port")),
        }
    }
}

/// The host and port of an `http(s)://` URL given in `field`, which must not hold credentials.
fn url_host_port(field: &str, url: &str) -> Result<(String, u16), DefinitionError> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| bad(field, format!("not a URL: {e}")))?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => return Err(bad(field, "must be an https:// or http:// URL")),
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // The URL is shown by the API: credentials go in the write-only fields.
        return Err(bad(
            field,
            "must not hold credentials (user:password@); put them in headers or the key fields",
        ));
    }
    let host = unbracket(uri.host().ok_or_else(|| bad(field, "has no host"))?).to_string();
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

/// A host as a URI or `host:port` writes it, without the brackets of an IPv6 address.
pub(crate) fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `host:port` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = unbracket(host);
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_string(), port))
}

/// A destination's secrets: written through the API or the TOML, sealed at rest, never shown.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// The HTTPS HMAC-SHA256 key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Extra HTTPS request headers (values may be credentials).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The Splunk HEC token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The S3 access key id and secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// The S3 session token of temporary credentials (STS), sent as `x-amz-security-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A stream as stored and shown (secrets apart, in [`Secrets`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDef {
    pub id: String,
    pub org: String,
    pub name: String,
    pub format: Format,
    pub start: Start,
    #[serde(default)]
    pub filters: Filters,
    pub destination: Destination,
    /// Declared in the collector's TOML: read-only through the API.
    #[serde(default)]
    pub declared: bool,
    #[serde(default)]
    pub paused: bool,
    pub created_at: DateTime<Utc>,
}

/// The body of `POST .../streams` (and the fields a `PATCH` may change), checked.
#[derive(Debug, Clone)]
pub struct StreamInput {
    pub name: String,
    pub format: Format,
    pub start: Start,
    pub filters: Filters,
    pub destination: Destination,
    pub secrets: Secrets,
}

impl StreamInput {
    /// Reads a `POST` body: every field checked, each problem naming its field.
    pub fn from_json(v: &Value) -> Result<StreamInput, DefinitionError> {
        let Value::Object(map) = v else {
            return Err(bad("body", "expected a JSON object"));
        };
        known(
            map,
            "",
            &["name", "format", "start", "filters", "destination"],
        )?;
        let name = map
            .get("name")
            .ok_or_else(|| bad("name", "is required"))?
            .as_str()
            .ok_or_else(|| bad("name", "must be a string"))?;
        let name = check_name(name)?;
        let format = match map.get("format") {
            None => Format::Native,
            Some(f) => f
                .as_str()
                .and_then(Format::parse)
                .ok_or_else(|| bad("format", "must be \"native\", \"ocsf\" or \"ecs\""))?,
        };
        let start = match map.get("start") {
            None => Start::Now,
            Some(s) => s.as_str().and_then(Start::parse).ok_or_else(|| {
                bad(
                    "start",
                    "must be \"now\", \"beginning\" or an RFC 3339 time",
                )
            })?,
        };
        let filters = match map.get("filters") {
            None | Some(Value::Null) => Filters::default(),
            Some(f) => Filters::from_value(f)?,
        };
        let (destination, secrets) = destination_from_json(
            map.get("destination")
                .ok_or_else(|| bad("destination", "is required"))?,
        )?;
        Ok(StreamInput {
            name,
            format,
            start,
            filters,
            destination,
            secrets,
        })
    }

    /// A stream declared in the collector's TOML, in the same terms.
    pub fn from_declared(
        d: &codestax_config::DeclaredStream,
    ) -> Result<StreamInput, DefinitionError> {
        let mut dest = Map::new();
        dest.insert("kind".into(), d.destination.kind.clone().into());
        let dd = &d.destination;
        if let Some(u) = &dd.url {
            dest.insert("url".into(), u.clone().into());
        }
        if !dd.headers.is_empty() {
            dest.insert(
                "headers".into(),
                serde_json::to_value(&dd.headers).unwrap_or_default(),
            );
        }
        if let Some(s) = &dd.secret {
            dest.insert("secret".into(), s.clone().into());
        }
        if let Some(a) = &dd.address {
            dest.insert("address".into(), a.clone().into());
        }
        if dd.kind == "syslog" {
            dest.insert("tls".into(), dd.tls.into());
        }
        for (k, v) in [
            ("token", &dd.token),
            ("index", &dd.index),
            ("sourcetype", &dd.sourcetype),
            ("bucket", &dd.bucket),
            ("prefix", &dd.prefix),
            ("region", &dd.region),
            ("endpoint", &dd.endpoint),
            ("access_key_id", &dd.access_key_id),
            ("secret_access_key", &dd.secret_access_key),
            ("session_token", &dd.session_token),
        ] {
            if let Some(v) = v {
                dest.insert(k.into(), v.clone().into());
            }
        }
        if let Some(m) = dd.max_message_bytes {
            dest.insert("max_message_bytes".into(), m.into());
        }
        if let Some(file) = &dd.ca_file {
            let pem = std::fs::read_to_string(file).map_err(|e| {
                bad(
                    "destination.ca_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            dest.insert("ca_pem".into(), pem.into());
        }
        let body = serde_json::json!({
            "name": d.name,
            "format": d.format,
            "start": d.start,
            "filters": d.filters,
            "destination": Value::Object(dest),
        });
        StreamInput::from_json(&body)
    }

    /// [`check_recordable`] of the new stream's filters and destination, so a later change of
    /// either can be recorded.
    pub fn check_recordable(&self) -> Result<(), DefinitionError> {
        check_recordable(Some(&self.filters), Some(&self.destination))
    }
}

/// Refuses filters over [`MAX_FILTERS_BYTES`] and a destination over [`MAX_DESTINATION_BYTES`]
/// (as JSON, as a change's record holds them), naming the field, so the collector's record of
/// a change always fits its entry limit. The API's only: a stream declared in the TOML is never
/// changed through it, and keeps whatever CA file its operator names.
pub fn check_recordable(
    filters: Option<&Filters>,
    destination: Option<&Destination>,
) -> Result<(), DefinitionError> {
    let size = |v: Result<Value, serde_json::Error>| {
        v.map_or(0, |v| codestax_common::to_canonical_json(&v).len())
    };
    for (field, size, max) in [
        (
            "filters",
            filters.map(|f| size(serde_json::to_value(f))),
            MAX_FILTERS_BYTES,
        ),
        (
            "destination",
            destination.map(|d| size(serde_json::to_value(d))),
            MAX_DESTINATION_BYTES,
        ),
    ] {
        if let Some(size) = size.filter(|s| *s > max) {
            return Err(bad(
                field,
                format!("{size} bytes of JSON, over the limit of {max}"),
            ));
        }
    }
    Ok(())
}

/// `PATCH .../streams/{id}`: what changes.
#[derive(Debug, Clone, Default)]
pub struct StreamPatch {
    pub name: Option<String>,
    pub format: Option<Format>,
    pub filters: Option<Filters>,
    /// A new destination replaces the old one whole, secrets included.
    pub destination: Option<(Destination, Secrets)>,
    pub paused: Option<bool>,
}

impl StreamPatch {
    pub fn from_json(v: &Value) -> Result<StreamPatch, DefinitionError> {
        let Value::Object(map) = v else {
            return Err(bad("body", "expected a JSON object"));
        };
        known(
            map,
            "",
            &["name", "format", "filters", "destination", "paused"],
        )?;
        let mut p = StreamPatch::default();
        if let Some(n) = map.get("name") {
            p.name = Some(check_name(
                n.as_str().ok_or_else(|| bad("name", "must be a string"))?,
            )?);
        }
        if let Some(f) = map.get("format") {
            p.format = Some(
                f.as_str()
                    .and_then(Format::parse)
                    .ok_or_else(|| bad("format", "must be \"native\", \"ocsf\" or \"ecs\""))?,
            );
        }
        if let Some(f) = map.get("filters") {
            p.filters = Some(if f.is_null() {
                Filters::default()
            } else {
                Filters::from_value(f)?
            });
        }
        if let Some(d) = map.get("destination") {
            p.destination = Some(destination_from_json(d)?);
        }
        if let Some(b) = map.get("paused") {
            p.paused = Some(
                b.as_bool()
                    .ok_or_else(|| bad("paused", "must be true or false"))?,
            );
        }
        Ok(p)
    }

    /// [`check_recordable`] of what it sets.
    pub fn check_recordable(&self) -> Result<(), DefinitionError> {
        check_recordable(
            self.filters.as_ref(),
            self.destination.as_ref().map(|(d, _)| d),
        )
    }

    /// Whether it changes the definition (not only `paused`).
    pub fn changes_definition(&self) -> bool {
        self.name.is_some()
            || self.format.is_some()
            || self.filters.is_some()
            || self.destination.is_some()
    }
}

/// S3's bucket naming rules: 3 to 63 lowercase letters, digits, '.' and '-', starting and
/// ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), DefinitionError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket
            .bytes()
            .next()
            .zip(bucket.bytes().last())
            .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(bad(
            "destination.bucket",
            "must be an S3 bucket name: 3 to 63 lowercase letters, digits, '.' or '-'",
        ))
    }
}

/// A key prefix without leading or trailing `/`: segments of S3's safe characters (others
/// would be escaped in the key, which then would not be the documented one).
fn check_prefix(prefix: &str) -> Result<String, DefinitionError> {
    let prefix = prefix.trim_matches('/');
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_.=!*'()".contains(c);
    let ok = prefix.len() <= 512
        && (prefix.is_empty()
            || prefix
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".." && s.chars().all(safe)));
    if ok {
        Ok(prefix.to_string())
    } else {
        Err(bad(
            "destination.prefix",
            "must be at most 512 bytes of '/'-separated segments of letters, digits and \
             -_.=!*'() (no empty, '.' or '..' segment)",
        ))
    }
}

fn known(map: &Map<String, Value>, prefix: &str, allowed: &[&str]) -> Result<(), DefinitionError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(
            format!("{prefix}{k}"),
            format!("unknown field; expected one of {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn check_name(name: &str) -> Result<String, DefinitionError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(codestax_common::is_refused_in_names)
    {
        return Err(bad(
            "name",
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters, without control or bidirectional \
                 formatting characters"
            ),
        ));
    }
    Ok(name.to_string())
}

fn destination_from_json(v: &Value) -> Result<(Destination, Secrets), DefinitionError> {
    let Value::Object(map) = v else {
        return Err(bad("destination", "must be an object with a \"kind\""));
    };
    let str_field = |k: &str| -> Result<Option<String>, DefinitionError> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("destination.{k}"), "must be a string")),
        }
    };
    let ca_pem = str_field("ca_pem")?;
    if let Some(pem) = &ca_pem {
        crate::stream::tls::parse_ca(pem).map_err(|e| bad("destination.ca_pem", e))?;
    }
    let kind = str_field("kind")?.ok_or_else(|| bad("destination.kind", "is required"))?;
    let mut secrets = Secrets::default();
    let dest = match kind.as_str() {
        "https" => {
            known(
                map,
                "destination.",
                &["kind", "url", "headers", "secret", "ca_pem"],
            )?;
            let url = str_field("url")?.ok_or_else(|| bad("destination.url", "is required"))?;
            secrets.secret = str_field("secret")?;
            if let Some(s) = &secrets.secret
                && (s.len() < 16 || s.len() > 1024)
            {
                return Err(bad("destination.secret", "must be 16 to 1024 bytes"));
            }
            if let Some(h) = map.get("headers") {
                let Value::Object(h) = h else {
                    return Err(bad("destination.headers", "must be an object of strings"));
                };
                if h.len() > MAX_LIST {
                    return Err(bad("destination.headers", format!("at most {MAX_LIST}")));
                }
                for (k, v) in h {
                    let field = format!("destination.headers.{k}");
                    let v = v.as_str().ok_or_else(|| bad(&field, "must be a string"))?;
                    axum::http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| bad(&field, "not a valid header name"))?;
                    axum::http::HeaderValue::from_str(v)
                        .map_err(|_| bad(&field, "not a valid header value"))?;
                    let lower = k.to_ascii_lowercase();
                    if matches!(
                        lower.as_str(),
                        "host"
                            | "content-length"
                            | "content-type"
                            | "transfer-encoding"
                            | "connection"
                    ) || lower.starts_with("x-codestax-")
                    {
                        return Err(bad(&field, "is set by the collector"));
                    }
                    secrets.headers.insert(k.clone(), v.to_string());
                }
            }
            Destination::Https { url, ca_pem }
        }
        "syslog" => {
            known(
                map,
                "destination.",
                &["kind", "address", "tls", "ca_pem", "max_message_bytes"],
            )?;
            let address =
                str_field("address")?.ok_or_else(|| bad("destination.address", "is required"))?;
            let tls = match map.get("tls") {
                None => false,
                Some(b) => b
                    .as_bool()
                    .ok_or_else(|| bad("destination.tls", "must be true or false"))?,
            };
            let (lo, hi) = SYSLOG_MAX_MESSAGE_BYTES_RANGE;
            let max_message_bytes = match map.get("max_message_bytes") {
                None => DEFAULT_SYSLOG_MAX_MESSAGE_BYTES,
                Some(m) => m
                    .as_u64()
                    .map(|m| m as usize)
                    .filter(|m| (lo..=hi).contains(m))
                    .ok_or_else(|| {
                        bad(
                            "destination.max_message_bytes",
                            format!("must be a whole number from {lo} to {hi}"),
                        )
                    })?,
            };
            Destination::Syslog {
                address,
                tls,
                ca_pem,
                max_message_bytes,
            }
        }
        "splunk_hec" => {
            known(
                map,
                "destination.",
                &["kind", "url", "token", "index", "sourcetype", "ca_pem"],
            )?;
            let url = str_field("url")?.ok_or_else(|| bad("destination.url", "is required"))?;
            let token =
                str_field("token")?.ok_or_else(|| bad("destination.token", "is required"))?;
            // Sent as a header value: printable ASCII, no spaces.
            if token.is_empty()
                || token.len() > 1024
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(bad(
                    "destination.token",
                    "must be 1 to 1024 printable ASCII characters without spaces",
                ));
            }
            secrets.token = Some(token);
            let word = |k: &str| -> Result<Option<String>, DefinitionError> {
                let v = str_field(k)?;
                if let Some(v) = &v
                    && (v.is_empty() || v.len() > 256 || v.chars().any(char::is_control))
                {
                    return Err(bad(
                        format!("destination.{k}"),
                        "must be 1 to 256 bytes without control characters",
                    ));
                }
                Ok(v)
            };
            let index = word("index")?;
            let sourcetype = word("sourcetype")?.unwrap_or_else(default_sourcetype);
            Destination::SplunkHec {
                url,
                index,
                sourcetype,
                ca_pem,
            }
        }
        "s3" => {
            known(
                map,
                "destination.",
                &[
                    "kind",
                    "bucket",
                    "prefix",
                    "region",
                    "endpoint",
                    "access_key_id",
                    "secret_access_key",
                    "session_token",
                    "ca_pem",
                ],
            )?;
            let bucket =
                str_field("bucket")?.ok_or_else(|| bad("destination.bucket", "is required"))?;
            check_bucket(&bucket)?;
            let prefix = check_prefix(str_field("prefix")?.as_deref().unwrap_or(""))?;
            let region = str_field("region")?.unwrap_or_else(|| DEFAULT_S3_REGION.into());
            if region.is_empty()
                || region.len() > 64
                || !region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(bad(
                    "destination.region",
                    "must be 1 to 64 lowercase letters, digits or '-' (e.g. eu-west-1)",
                ));
            }
            let endpoint = str_field("endpoint")?.map(|e| e.trim_end_matches('/').to_string());
            if let Some(e) = &endpoint {
                let uri: axum::http::Uri = e
                    .parse()
                    .map_err(|err| bad("destination.endpoint", format!("not a URL: {err}")))?;
                if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
                    return Err(bad(
                        "destination.endpoint",
                        "must be scheme://host[:port] only; the bucket goes in \"bucket\"",
                    ));
                }
            }
            for (k, slot, max, required) in [
                ("access_key_id", &mut secrets.access_key_id, 128, true),
                (
                    "secret_access_key",
                    &mut secrets.secret_access_key,
                    256,
                    true,
                ),
                // STS session tokens run to a few KiB.
                ("session_token", &mut secrets.session_token, 8192, false),
            ] {
                let field = format!("destination.{k}");
                let Some(v) = str_field(k)? else {
                    if required {
                        return Err(bad(&field, "is required"));
                    }
                    continue;
                };
                // Signed into a header: printable ASCII, no spaces.
                if v.is_empty() || v.len() > max || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad(
                        &field,
                        format!("must be 1 to {max} printable ASCII characters without spaces"),
                    ));
                }
                *slot = Some(v);
            }
            Destination::S3 {
                bucket,
                prefix,
                region,
                endpoint,
                ca_pem,
            }
        }
        other => {
            return Err(bad(
                "destination.kind",
                format!("unknown kind {other:?}; expected https, splunk_hec, s3 or syslog"),
            ));
        }
    };
    dest.host_port()?;
    Ok((dest, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::api::ExportFormat;
    use serde_json::json;

    #[test]
    fn a_full_https_stream_reads_and_its_secrets_stay_apart() {
        let input = StreamInput::from_json(&json!({
            "name": "siem", "format": "native", "start": "2026-12-03T10:00:00Z",
            "filters": {"category": ["auth"], "repository": ["acme/api"]},
            "destination": {"kind": "https", "url": "https://siem.example.com/in",
                "headers": {"Authorization": "Bearer x"}, "secret": "0123456789abcdef"}
        }))
        .unwrap();
        assert_eq!(input.filters.category, vec!["auth"]);
        assert!(matches!(input.start, Start::Time(_)));
        assert_eq!(input.secrets.secret.as_deref(), Some("0123456789abcdef"));
        let debug = format!("{:?}", input.secrets);
        assert!(
            !debug.contains("0123456789abcdef") && !debug.contains("Bearer"),
            "{debug}"
        );
        let shown = serde_json::to_string(&input.destination).unwrap();
        assert!(
            !shown.contains("0123") && !shown.contains("Bearer"),
            "{shown}"
        );
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases = [
            (json!({"format": "native"}), "name"),
            (
                json!({"name": "a", "format": "xml", "destination": {}}),
                "format",
            ),
            (
                json!({"name": "a", "start": "yesterday", "destination": {}}),
                "start",
            ),
            (
                json!({"name": "a", "destination": {"kind": "ftp"}}),
                "destination.kind",
            ),
            (
                json!({"name": "a", "destination": {"kind": "syslog"}}),
                "destination.address",
            ),
            (
                json!({"name": "a", "destination": {"kind": "syslog", "address": "h:1", "max_message_bytes": 10}}),
                "destination.max_message_bytes",
            ),
            (
                json!({"name": "a", "filters": {"colour": ["x"]}, "destination": {"kind": "syslog", "address": "h:1"}}),
                "filters.colour",
            ),
            (
                json!({"name": "a", "destination": {"kind": "https", "url": "ftp://x/"}}),
                "destination.url",
            ),
            (
                json!({"name": "a", "destination": {"kind": "https", "url": "https://u:p@x/"}}),
                "destination.url",
            ),
            (json!({"name": "a", "extra": 1}), "extra"),
        ];
        for (body, field) in cases {
            let e = StreamInput::from_json(&body).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }

    /// A change's record holds the old and the new filters and destination: through the API
    /// each is bounded, so the record always fits; a stream declared in the TOML is not.
    #[test]
    fn filters_and_destinations_over_their_bounds_are_refused_naming_them() {
        let actors = |n: usize| Value::from(vec!["a".repeat(500); n]);
        let url = |n: usize| format!("https://siem.example.com/{}", "p".repeat(n));
        let body = |actors: Value, url: String| {
            json!({"name": "a", "filters": {"actor": actors},
                "destination": {"kind": "https", "url": url}})
        };
        let fits = StreamInput::from_json(&body(actors(16), url(20_000))).unwrap();
        assert!(serde_json::to_string(&fits.filters).unwrap().len() > MAX_FILTERS_BYTES - 600);
        let shown = serde_json::to_string(&fits.destination).unwrap().len();
        assert!(shown > MAX_DESTINATION_BYTES - 600, "{shown}");
        fits.check_recordable().unwrap();
        for (body, field) in [
            (body(actors(17), url(10)), "filters"),
            (body(actors(1), url(21_000)), "destination"),
        ] {
            let input = StreamInput::from_json(&body).unwrap();
            assert_eq!(input.check_recordable().unwrap_err().field, field);
            let patch = StreamPatch::from_json(&json!({field: body[field]})).unwrap();
            assert_eq!(patch.check_recordable().unwrap_err().field, field);
        }
        StreamPatch::from_json(&json!({"paused": true}))
            .unwrap()
            .check_recordable()
            .unwrap();
    }

    #[test]
    fn filters_match_as_search_does() {
        let f = Filters::from_value(&json!({"category": ["authentication"], "outcome": "FAILURE"}))
            .unwrap();
        let mut r: AuditRecord = serde_json::from_value(json!({
            "id": "r1", "org_id": "acme", "time": Utc::now(),
            "actor": {"id": "u-42", "email": "ada@acme.example", "kind": "user"},
            "action": "auth.login", "category": "auth",
        }))
        .unwrap();
        r.outcome = codestax_common::Outcome::Failure;
        assert!(f.matches(&r));
        r.outcome = codestax_common::Outcome::Success;
        assert!(!f.matches(&r));
    }

    #[test]
    fn a_stored_record_filters_and_encodes_as_its_typed_record() {
        let cx = Context::new("test");
        let filters = [
            json!({}),
            json!({"category": ["AUTH"], "outcome": ["failure"]}),
            json!({"actor": ["ada@acme.example"]}),
            json!({"actor": ["u-43"]}),
            json!({"repository": ["acme/api"], "action": ["auth.login"]}),
        ];
        for outcome in ["success", "failure"] {
            let r: AuditRecord = serde_json::from_value(json!({
                "id": "r1", "org_id": "acme", "time": "2026-12-04T10:00:00.123456Z",
                "actor": {"id": "u-42", "email": "ada@acme.example", "kind": "user"},
                "action": "auth.login", "category": "auth", "repository": "acme/api",
                "outcome": outcome, "metadata": {"ip": "10.0.0.1", "b": [1, 2], "a": {"x": "é\n"}},
                "received_at": "2026-12-04T10:00:01Z", "seq": 7,
            }))
            .unwrap();
            let stored = r.canonical_json().into_bytes();
            let head: RecordHead = serde_json::from_slice(&stored).unwrap();
            for f in &filters {
                let f = Filters::from_value(f).unwrap();
                assert_eq!(f.matches_view(&head), f.matches(&r), "{f:?} {outcome}");
            }
            // `native` is the export's NDJSON line, byte for byte (docs/streams.md).
            let mut export = crate::export::Encoder::new(ExportFormat::Ndjson, false).unwrap();
            export.push_stored(&stored).unwrap();
            let mut line = export.take().unwrap();
            assert_eq!(line.pop(), Some(b'\n'));
            assert_eq!(
                *Format::Native.encode_stored(&stored, None, &cx).unwrap(),
                line
            );
            let shared: Arc<[u8]> = Arc::from(&stored[..]);
            for format in [Format::Native, Format::Ocsf, Format::Ecs] {
                let encoded = format.encode(&r, &cx).unwrap();
                assert_eq!(*format.encode_stored(&stored, None, &cx).unwrap(), encoded);
                assert_eq!(
                    *format.encode_stored(&stored, Some(&shared), &cx).unwrap(),
                    encoded,
                    "{format:?}"
                );
            }
            // `native` hands the shared bytes on, not a copy.
            let passed = Format::Native
                .encode_stored(&stored, Some(&shared), &cx)
                .unwrap();
            assert!(Arc::ptr_eq(&passed, &shared));
        }
    }
}
