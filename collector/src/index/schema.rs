//! The schema every partition shares, the text analyzer, and how a record becomes a document.

use super::error::IndexError;
use crate::uid::{uid, uid_hash};
use codestax_common::{AuditRecord, Metadata};
use serde_json::Value;
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, TantivyDocument};

/// Name of the analyzer of the full-text fields: split on anything not alphanumeric, drop tokens
/// longer than [`MAX_TOKEN_BYTES`], lowercase.
pub(crate) const TEXT_ANALYZER: &str = "audit_text";
/// Tokens longer than this (in UTF-8 bytes) are not indexed, nor searched for.
pub(crate) const MAX_TOKEN_BYTES: usize = 100;

/// Fast-field (column) names, read by the collectors.
pub(crate) mod col {
    pub const ORG: &str = "org";
    pub const TIME: &str = "time";
    pub const LSN: &str = "lsn";
    pub const SEQ: &str = "seq";
    pub const UID_HASH: &str = "uid_hash";
    pub const ID: &str = "id";
    pub const CATEGORY: &str = "category";
    pub const ACTION: &str = "action";
    pub const USER: &str = "user";
    pub const REPOSITORY: &str = "repository";
    pub const OUTCOME: &str = "outcome";
}

/// The fields of the schema.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    /// Org id: indexed (the tenancy filter of every query) and fast.
    pub org: Field,
    /// [`uid`]: indexed, for `contains` / `get` and idempotent re-adds.
    pub uid: Field,
    /// [`uid_hash`]: fast, streamed to rebuild the dedupe set.
    pub uid_hash: Field,
    /// The write-ahead-log position the record was indexed from: fast, the snapshot of a cursor walk.
    pub lsn: Field,
    /// The record's number in its org's hash chain: fast (chain heads at start, verify order).
    pub seq: Field,
    /// `time` in microseconds since the epoch: fast (sort key, range filter, histogram).
    pub time: Field,
    /// `received_at` in microseconds: fast.
    pub received_at: Field,
    /// Record id: fast (the sort's tie-break).
    pub id: Field,
    pub category: Field,
    pub action: Field,
    pub outcome: Field,
    /// Actor email, else actor id: fast (the `users` facet).
    pub user: Field,
    pub actor_id: Field,
    pub actor_email: Field,
    pub repository: Field,
    pub target_kind: Field,
    pub target_id: Field,
    /// Lowercased `name\x1fvalue` keywords: the exact, case-insensitive filters.
    pub kw: Field,
    /// Full text of everything searchable by a bare word.
    pub text: Field,
    pub actor_text: Field,
    pub target_text: Field,
    pub message_text: Field,
    /// The record's canonical JSON: stored.
    pub doc: Field,
}

/// Builds the schema and its field handles.
pub(crate) fn build_schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fast_str = || TextOptions::default().set_fast("raw");
    let text = || {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TEXT_ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let fields = Fields {
        org: b.add_text_field(col::ORG, STRING | FAST),
        uid: b.add_text_field("uid", STRING),
        uid_hash: b.add_u64_field(col::UID_HASH, FAST),
        lsn: b.add_u64_field(col::LSN, FAST),
        seq: b.add_u64_field(col::SEQ, FAST),
        // Fast only, not indexed: a time range scans the column instead of a term dictionary
        // holding nearly one unique term per record.
        time: b.add_i64_field(col::TIME, FAST),
        received_at: b.add_i64_field("received_at", FAST),
        id: b.add_text_field(col::ID, fast_str()),
        category: b.add_text_field(col::CATEGORY, fast_str()),
        action: b.add_text_field(col::ACTION, fast_str()),
        outcome: b.add_text_field(col::OUTCOME, fast_str()),
        user: b.add_text_field(col::USER, fast_str()),
        actor_id: b.add_text_field("actor_id", fast_str()),
        actor_email: b.add_text_field("actor_email", fast_str()),
        repository: b.add_text_field(col::REPOSITORY, fast_str()),
        target_kind: b.add_text_field("target_kind", fast_str()),
        target_id: b.add_text_field("target_id", fast_str()),
        kw: b.add_text_field("kw", STRING),
        text: b.add_text_field("text", text()),
        actor_text: b.add_text_field("actor_text", text()),
        target_text: b.add_text_field("target_text", text()),
        message_text: b.add_text_field("message_text", text()),
        doc: b.add_bytes_field("doc", STORED),
    };
    (b.build(), fields)
}

/// The analyzer of the full-text fields, used both to index and to parse `q`.
pub(crate) fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES + 1))
        .filter(LowerCaser)
        .build()
}

/// Registers the analyzer on an index; tantivy keeps tokenizers per `Index` value, not on disk.
pub(crate) fn register_tokenizers(index: &Index) {
    index.tokenizers().register(TEXT_ANALYZER, text_analyzer());
}

/// Lowercases a keyword the way both indexing and querying do.
pub(crate) fn fold(value: &str) -> String {
    value.to_lowercase()
}

/// The `kw` term for one keyword: `name`, U+001F, the folded value.
pub(crate) fn kw(name: &str, value: &str) -> String {
    let mut s = String::with_capacity(name.len() + 1 + value.len());
    s.push_str(name);
    s.push('\u{1f}');
    s.push_str(&fold(value));
    s
}

/// The record's category: the stored one, or the part of the action before the dot.
pub(crate) fn category_of(record: &AuditRecord) -> &str {
    if !record.category.is_empty() {
        return &record.category;
    }
    record
        .action
        .split_once('.')
        .map_or(record.action.as_str(), |(c, _)| c)
}

/// Every metadata value as text (not the keys): the named fields, each change's field, old and
/// new values, and the free-form values, walking into arrays and objects. `null` is skipped.
pub(crate) fn metadata_values(meta: &Metadata) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Null => {}
            Value::String(s) => out.push(s.clone()),
            Value::Bool(_) | Value::Number(_) => out.push(v.to_string()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
        }
    }
    let mut out = Vec::new();
    out.extend(meta.ip.iter().cloned());
    out.extend(meta.user_agent.iter().cloned());
    out.extend(meta.scan_type.iter().cloned());
    for change in &meta.changes {
        out.push(change.field.clone());
        walk(&change.old, &mut out);
        walk(&change.new, &mut out);
    }
    for v in meta.extra.values() {
        walk(v, &mut out);
    }
    out
}

/// The values a bare word of `q` is searched in, each a separate value (a phrase never spans two).
pub(crate) fn full_text_values(r: &AuditRecord) -> Vec<String> {
    let mut out = vec![r.actor.id.clone()];
    out.extend(r.actor.name.iter().cloned());
    out.extend(r.actor.email.iter().cloned());
    if let Some(t) = &r.target {
        out.extend(t.id.iter().cloned());
        out.extend(t.name.iter().cloned());
    }
    out.push(r.action.clone());
    out.extend(r.repository.iter().cloned());
    out.extend(r.message.iter().cloned());
    out.extend(metadata_values(&r.metadata));
    out
}

/// The `(name, value)` keywords of a record, before folding: what `field:value` in `q` and the
/// structured filters match exactly (ignoring case).
pub(crate) fn keywords(r: &AuditRecord) -> Vec<(&'static str, &str)> {
    let mut out = vec![
        ("action", r.action.as_str()),
        ("category", category_of(r)),
        ("outcome", r.outcome.as_str()),
        ("user", r.actor.id.as_str()),
    ];
    if let Some(email) = &r.actor.email {
        out.push(("user", email));
    }
    if let Some(repo) = &r.repository {
        out.push(("repository", repo));
    }
    if let Some(ip) = &r.metadata.ip {
        out.push(("ip", ip));
    }
    out
}

/// Builds the document of a record read from the write-ahead log at `lsn`.
pub(crate) fn document(
    f: &Fields,
    lsn: u64,
    r: &AuditRecord,
) -> Result<TantivyDocument, IndexError> {
    let id =
        r.id.as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| IndexError::InvalidRecord("the record has no id".into()))?;
    let mut d = TantivyDocument::new();
    d.add_text(f.org, &r.org_id);
    d.add_text(f.uid, uid(&r.org_id, id));
    d.add_u64(f.uid_hash, uid_hash(&r.org_id, id));
    d.add_u64(f.lsn, lsn);
    if let Some(seq) = r.seq {
        d.add_u64(f.seq, seq);
    }
    d.add_i64(f.time, r.time.timestamp_micros());
    if let Some(t) = r.received_at {
        d.add_i64(f.received_at, t.timestamp_micros());
    }
    d.add_text(f.id, id);
    d.add_text(f.category, category_of(r));
    d.add_text(f.action, &r.action);
    d.add_text(f.outcome, r.outcome.as_str());
    d.add_text(f.user, r.actor_label());
    d.add_text(f.actor_id, &r.actor.id);
    if let Some(email) = &r.actor.email {
        d.add_text(f.actor_email, email);
    }
    if let Some(repo) = &r.repository {
        d.add_text(f.repository, repo);
    }
    if let Some(t) = &r.target {
        d.add_text(f.target_kind, t.kind.as_str());
        if let Some(id) = &t.id {
            d.add_text(f.target_id, id);
        }
        for v in t.name.iter().chain(t.id.iter()) {
            d.add_text(f.target_text, v);
        }
    }
    for (name, value) in keywords(r) {
        d.add_text(f.kw, kw(name, value));
    }
    for v in full_text_values(r) {
        d.add_text(f.text, v);
    }
    if let Some(name) = &r.actor.name {
        d.add_text(f.actor_text, name);
    }
    if let Some(m) = &r.message {
        d.add_text(f.message_text, m);
    }
    d.add_bytes(f.doc, r.canonical_json().as_bytes());
    Ok(d)
}
