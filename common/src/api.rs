//! Types of the collector's HTTP API, shared with the CLI and the tests.

use crate::record::AuditRecord;
use crate::validate::FieldError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The body of every API error: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_parameter`, `unauthorized`, `not_found`.
    pub code: String,
    /// A sentence for a person.
    pub message: String,
    /// The parameter or field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Filters of a search, a facet query or an export. Repeated filters of one kind are ORed; filters
/// of different kinds are ANDed. Serialised as query-string pairs by the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchFilters {
    /// Actor id or email.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<String>,
    /// Exact action names (`scan.triggered`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action: Vec<String>,
    /// Categories or their aliases (`triage`, `auth`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<String>,
    /// Repository names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository: Vec<String>,
    /// `success` or `failure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcome: Vec<String>,
    /// Inclusive lower time bound: RFC 3339, a date, or relative (`7d`, `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Exclusive upper time bound, same forms as `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Full-text query: words, "phrases", `field:value`, `-word`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
}

impl SearchFilters {
    /// The filters as query-string pairs, repeated keys for repeated filters.
    pub fn to_query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        for (key, values) in [
            ("user", &self.user),
            ("action", &self.action),
            ("category", &self.category),
            ("repository", &self.repository),
            ("outcome", &self.outcome),
        ] {
            pairs.extend(values.iter().map(|v| (key, v.clone())));
        }
        for (key, value) in [
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ] {
            if let Some(v) = value {
                pairs.push((key, v.clone()));
            }
        }
        pairs
    }
}

/// `GET /api/v1/orgs/{org}/audit-log`: one page of matching records, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    pub entries: Vec<AuditRecord>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Exact number of records matching the filters.
    pub total: u64,
}

/// How many matching records have one value of a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

/// Width of a histogram bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistogramInterval {
    Hour,
    Day,
}

/// Matching records per time bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramBucket {
    #[serde(with = "crate::time::micros")]
    pub start: DateTime<Utc>,
    pub count: u64,
}

/// Counts over the matching records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    pub interval: HistogramInterval,
    pub buckets: Vec<HistogramBucket>,
}

/// `GET /api/v1/orgs/{org}/audit-log/facets`: top values per field and a histogram over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetResponse {
    pub total: u64,
    pub categories: Vec<FacetCount>,
    pub actions: Vec<FacetCount>,
    pub users: Vec<FacetCount>,
    pub repositories: Vec<FacetCount>,
    pub outcomes: Vec<FacetCount>,
    pub histogram: Histogram,
}

/// Why one line (or record) of an ingest request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    /// 1-based line number in an NDJSON body, or 1-based position in an OTLP request.
    pub line: usize,
    /// The record's id, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub errors: Vec<FieldError>,
}

/// How the reason of a record refused for being older than its org's retention begins.
pub const EXPIRED_ON_ARRIVAL: &str = "expired on arrival";

/// `POST /api/v1/ingest`: what was accepted (fsynced) and what was not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Records now durable, including ones already stored before (`duplicates`).
    pub accepted: u64,
    /// Of `accepted`, records whose (org, id) was already stored: acknowledged, not stored twice.
    pub duplicates: u64,
    /// Every rejected line, listed or not.
    pub rejected: u64,
    /// Of `rejected`, records older than the org's retention (an import only): each listed with
    /// a reason starting [`EXPIRED_ON_ARRIVAL`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expired: u64,
    /// The first rejected lines (at most 50), each with its line number and reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RejectedRecord>,
    /// Rejected lines past those in `errors`: counted in `rejected`, not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_errors: u64,
    /// Asked with `?refresh=wait_for`: whether everything stored before the answer was
    /// searchable when it was given (false: the wait's bound passed first; still durable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searchable: Option<bool>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `GET /api/v1/orgs/{org}/audit-log/verify`: whether the org's stored hash chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// Every record's hash recomputes, every link holds, no `seq` is missing.
    pub ok: bool,
    /// Records checked (up to the first break).
    pub records: u64,
    pub first_seq: Option<u64>,
    /// The last `seq` checked: with `last_hash`, what an export's newest chain fields must match.
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// The first place the chain breaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::chain::ChainBreak>,
    /// The org's current signed tree head (its Merkle tree over every record stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_head: Option<TreeHead>,
    /// Why there is no signed head, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_error: Option<String>,
}

/// An org's signed tree head: `GET /api/v1/orgs/{org}/audit-log/checkpoint`, and part of the
/// verify and proof answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHead {
    pub org: String,
    /// The checkpoint's origin line: `<key name>/orgs/<org>`.
    pub origin: String,
    /// Records the tree holds: `seq` 1 to `tree_size`.
    pub tree_size: u64,
    /// The RFC 9162 root hash, lowercase hex (the checkpoint has it in base64).
    pub root_hash: String,
    /// When the collector signed it.
    #[serde(with = "crate::time::micros")]
    pub time: DateTime<Utc>,
    /// The signed note: a C2SP checkpoint (origin, size, base64 root, `time ...`) and the
    /// collector's Ed25519 signature. Verify it with the collector's public key obtained apart.
    pub checkpoint: String,
}

/// `GET /api/v1/orgs/{org}/audit-log/proof/inclusion`: record `seq` is leaf `seq - 1` of the
/// tree of `tree_size` leaves (RFC 9162 §2.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub seq: u64,
    pub tree_size: u64,
    /// The record's leaf hash, lowercase hex.
    pub leaf_hash: String,
    /// From the leaf up, lowercase hex.
    pub proof: Vec<String>,
    /// The signed head of `tree_size`, when the request named no size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_head: Option<TreeHead>,
}

/// `GET /api/v1/orgs/{org}/audit-log/proof/consistency`: the tree of `to` leaves extends the
/// tree of `from` (RFC 9162 §2.1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// The root of the tree of `from` leaves, lowercase hex.
    pub from_root: String,
    /// The root of the tree of `to` leaves, lowercase hex.
    pub to_root: String,
    pub proof: Vec<String>,
    /// The signed head of `to`, when the request named no `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_head: Option<TreeHead>,
}

/// `GET /api/v1/signing-key`: the collector's public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// In the signed-note verifier form: `<name>+<key id>+<base64(0x01 ‖ key)>`.
    pub verifier_key: String,
    pub name: String,
    /// `ed25519`.
    pub algorithm: String,
    /// The raw 32-byte public key, base64.
    pub public_key: String,
}

/// `GET /api/v1/whoami`: the key a request is made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// Public id of the key (`key_...`).
    pub key_id: String,
    /// The org the key acts for.
    pub org_id: String,
    /// `ORG_OWNER`, `ORG_ADMIN`, `MEMBER` or `INGEST`.
    pub role: String,
    /// The label given at the key's creation.
    #[serde(default)]
    pub name: Option<String>,
}

/// Formats of `GET /api/v1/orgs/{org}/audit-log/export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Comma-separated values with a header row ([`CSV_COLUMNS`]).
    #[default]
    Csv,
    /// One JSON array of full records.
    Json,
    /// One full record per line.
    Ndjson,
    /// One OCSF event per line ([`crate::format::ocsf`]).
    Ocsf,
    /// One ECS document per line ([`crate::format::ecs`]).
    Ecs,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 5] = [
        ExportFormat::Csv,
        ExportFormat::Json,
        ExportFormat::Ndjson,
        ExportFormat::Ocsf,
        ExportFormat::Ecs,
    ];

    /// The name used in the `format` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Ocsf => "ocsf",
            ExportFormat::Ecs => "ecs",
        }
    }

    /// The file extension of an export in this format.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Ocsf => "ocsf.ndjson",
            ExportFormat::Ecs => "ecs.ndjson",
            f => f.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<ExportFormat> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Whether the export is one line per record, and nothing else (NDJSON and the SIEM formats).
    pub fn is_lines(self) -> bool {
        matches!(
            self,
            ExportFormat::Ndjson | ExportFormat::Ocsf | ExportFormat::Ecs
        )
    }

    /// The names [`parse`](Self::parse) takes, for error messages: `csv, json, ...`.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// Whether a record in this format can be read back whole, so its leaf hash recomputes
    /// from the file (the proof then rides in the file). Otherwise the format is "bytes-only"
    /// (CSV, and OCSF and ECS, which map the record into another schema): its proof is a
    /// sidecar whose signed manifest binds the file's SHA-256.
    pub fn recomputes_leaves(self) -> bool {
        match self {
            ExportFormat::Json | ExportFormat::Ndjson => true,
            ExportFormat::Csv | ExportFormat::Ocsf | ExportFormat::Ecs => false,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/json",
            ExportFormat::Ndjson | ExportFormat::Ocsf | ExportFormat::Ecs => "application/x-ndjson",
        }
    }
}

/// The header row of a CSV export. With `with_chain=true`, [`CSV_CHAIN_COLUMNS`] follow.
/// `written_by` is the record's provenance: `collector`, `ingest:<key id>`, or `unknown` for
/// records stored before provenance existed.
pub const CSV_COLUMNS: [&str; 13] = [
    "timestamp",
    "actor_name",
    "actor_email",
    "action",
    "category",
    "target_kind",
    "target_id",
    "target_name",
    "repository",
    "outcome",
    "ip",
    "metadata",
    "written_by",
];

/// The extra columns of a CSV export with `with_chain=true`.
pub const CSV_CHAIN_COLUMNS: [&str; 3] = ["seq", "prev_hash", "hash"];

/// Response header of an export: the exact number of records it holds (its snapshot's total),
/// sent before the body so a client can show progress.
pub const EXPORT_TOTAL_HEADER: &str = "x-codestax-export-total";
/// Where an export's proof is: `included` (JSON, NDJSON: at the end of the body),
/// `sidecar <id>` (CSV: `GET …/audit-log/export/proof?id=<id>` once the body has ended), or
/// `unavailable` (the org's Merkle tree cannot prove its records).
pub const EXPORT_PROOF_HEADER: &str = "x-codestax-export-proof";
