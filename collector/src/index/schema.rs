//! The schema every partition shares, the text analyzer, and how a record becomes a document.

use super::error::IndexError;
use crate::uid::{uid, uid_hash};
use codestax_common::schema::{self, FieldValue};
use codestax_common::{AuditRecord, Metadata};
use serde_json::Value;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, NumericOptions, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, TantivyDocument};

/// Name of the analyzer of the full-text fields: split on anything not alphanumeric, drop tokens
/// longer than [`MAX_TOKEN_BYTES`], lowercase.
pub(crate) const TEXT_ANALYZER: &str = "audit_text";
/// Tokens longer than this (in UTF-8 bytes) are not indexed, nor searched for.
pub(crate) const MAX_TOKEN_BYTES: usize = 100;

/// Fast-field (column) names, read by the collectors: a record field's column is named by the
/// field table ([`schema::Field::column`]); the others are the index's own.
pub(crate) mod col {
    use super::column;
    use codestax_common::schema::Field;

    pub const ORG: &str = column(Field::OrgId);
    pub const TIME: &str = column(Field::Time);
    pub const LSN: &str = "lsn";
    pub const SEQ: &str = column(Field::Seq);
    pub const UID_HASH: &str = "uid_hash";
    pub const ID: &str = column(Field::Id);
    pub const CATEGORY: &str = column(Field::Category);
    pub const ACTION: &str = column(Field::Action);
    /// The actor's email, else its id.
    pub const USER: &str = "user";
    pub const REPOSITORY: &str = column(Field::Repository);
    pub const OUTCOME: &str = column(Field::Outcome);
}

/// The column of a record field that has one (compile time).
const fn column(field: schema::Field) -> &'static str {
    match field.column() {
        Some(name) => name,
        None => panic!("the field has no column"),
    }
}

/// How a partition finds a record by (org, id): the one difference between the two schemas a
/// partition may have been written with. Partitions are created with [`UidForm::Hash`]; those
/// written before it existed use [`UidForm::Text`] and are read and written as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UidForm {
    /// The `uid` field holds [`uid`] (org U+001F id) as one exact term; `uid_hash` is only fast.
    Text,
    /// `uid_hash` is indexed as well as fast, and `uid` stays empty: an 8-byte term instead of
    /// ~45 bytes of text made ingest ~10 % cheaper with random ids (BENCHMARKS.md, session 4).
    /// Two records may share a hash, so a hit is checked against the `org` and `id` columns.
    Hash,
}

impl UidForm {
    /// The form of a partition written with `schema`; `None` for a schema this version does not
    /// know.
    pub(crate) fn of(schema: &Schema) -> Option<UidForm> {
        [
            (UidForm::Hash, Columns::Read),
            (UidForm::Hash, Columns::All),
            (UidForm::Text, Columns::All),
        ]
        .into_iter()
        .find(|&(form, columns)| &build(form, columns).0 == schema)
        .map(|(form, _)| form)
    }
}

/// Which record fields have a column. The columns no read uses cost indexing and merge CPU for
/// nothing: partitions are created with [`Columns::Read`]; those written before keep theirs
/// (tantivy fills a column from the same document values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Columns {
    /// Every field with a column in the field table ([`schema::Field::column`]).
    All,
    /// Only those a read uses: the id (sort tie-break, scans), time, seq, org and the facets'.
    /// The actor's id and email, the target's kind and id and `received_at` keep their field
    /// handles but are not stored in the partition.
    Read,
}

/// The fields of the schema (the same handles in both [`UidForm`]s).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fields {
    /// Org id: indexed (the tenancy filter of every query) and fast.
    pub org: Field,
    /// [`uid`]: indexed in [`UidForm::Text`] partitions, empty in the others.
    pub uid: Field,
    /// [`uid_hash`]: fast, streamed to rebuild the dedupe set; indexed in [`UidForm::Hash`]
    /// partitions (`get`, `contains`, the replay check).
    pub uid_hash: Field,
    /// The write-ahead-log position the record was indexed from: fast, the snapshot of a cursor walk.
    pub lsn: Field,
    /// The record's number in its org's hash chain: fast (chain heads at start, verify order).
    pub seq: Field,
    /// `time` in microseconds since the epoch: fast (sort key, range filter, histogram).
    pub time: Field,
    /// `received_at` in microseconds: a column in [`Columns::All`] partitions only, as are the
    /// actor's id and email and the target's kind and id.
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
    /// Full text of every value a bare word searches but the actor's name, the target and the
    /// message, which have their own fields ([`bare_word_fields`]).
    pub text: Field,
    pub actor_text: Field,
    pub target_text: Field,
    pub message_text: Field,
    /// The record's canonical JSON: stored.
    pub doc: Field,
    /// The column of each record field that has one, by [`schema::Field`].
    columns: [Option<Field>; schema::Field::ALL.len()],
}

impl Fields {
    /// The column holding `field`, if it has one.
    pub(crate) fn column(&self, field: schema::Field) -> Option<Field> {
        self.columns[field as usize]
    }
}

/// Builds the schema of new partitions and its field handles.
pub(crate) fn build_schema() -> (Schema, Fields) {
    schema_for(UidForm::Hash)
}

/// Builds the schema of a new partition of the given form ([`Columns::Read`]; a
/// [`UidForm::Text`] one only exists with [`Columns::All`]).
pub(crate) fn schema_for(form: UidForm) -> (Schema, Fields) {
    match form {
        UidForm::Hash => build(form, Columns::Read),
        UidForm::Text => build(form, Columns::All),
    }
}

/// Builds the schema of a partition of the given form and columns. Fields are added in the same
/// order in all of them, so their handles are the same.
pub(crate) fn build(form: UidForm, columns: Columns) -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fast_str = || TextOptions::default().set_fast("raw");
    // A field no read uses as a column: nothing of it is written.
    let spare_str = || match columns {
        Columns::All => fast_str(),
        Columns::Read => TextOptions::default(),
    };
    let spare_i64 = || match columns {
        Columns::All => NumericOptions::from(FAST),
        Columns::Read => NumericOptions::default(),
    };
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
        uid_hash: match form {
            UidForm::Text => b.add_u64_field(col::UID_HASH, FAST),
            UidForm::Hash => b.add_u64_field(col::UID_HASH, FAST | INDEXED),
        },
        lsn: b.add_u64_field(col::LSN, FAST),
        seq: b.add_u64_field(col::SEQ, FAST),
        // Fast only, not indexed: a time range scans the column instead of a term dictionary
        // holding nearly one unique term per record.
        time: b.add_i64_field(col::TIME, FAST),
        received_at: b.add_i64_field(column(schema::Field::ReceivedAt), spare_i64()),
        id: b.add_text_field(col::ID, fast_str()),
        category: b.add_text_field(col::CATEGORY, fast_str()),
        action: b.add_text_field(col::ACTION, fast_str()),
        outcome: b.add_text_field(col::OUTCOME, fast_str()),
        user: b.add_text_field(col::USER, fast_str()),
        actor_id: b.add_text_field(column(schema::Field::ActorId), spare_str()),
        actor_email: b.add_text_field(column(schema::Field::ActorEmail), spare_str()),
        repository: b.add_text_field(col::REPOSITORY, fast_str()),
        target_kind: b.add_text_field(column(schema::Field::TargetKind), spare_str()),
        target_id: b.add_text_field(column(schema::Field::TargetId), spare_str()),
        kw: b.add_text_field("kw", STRING),
        text: b.add_text_field("text", text()),
        actor_text: b.add_text_field("actor_text", text()),
        target_text: b.add_text_field("target_text", text()),
        message_text: b.add_text_field("message_text", text()),
        doc: b.add_bytes_field("doc", STORED),
        columns: [None; schema::Field::ALL.len()],
    };
    let schema = b.build();
    let columns = std::array::from_fn(|i| {
        let name = schema::Field::ALL[i].column()?;
        Some(
            schema
                .get_field(name)
                .expect("every column of the field table is in the schema"),
        )
    });
    (schema, Fields { columns, ..fields })
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

/// Appends `value` lowercased the way both indexing and querying fold keywords (as
/// [`str::to_lowercase`]); ASCII without a second copy.
fn push_folded(value: &str, out: &mut String) {
    if value.is_ascii() {
        let start = out.len();
        out.push_str(value);
        out[start..].make_ascii_lowercase();
    } else {
        out.push_str(&value.to_lowercase());
    }
}

/// The `kw` term for one keyword: `name`, U+001F, the folded value.
pub(crate) fn kw(name: &str, value: &str) -> String {
    let mut s = String::with_capacity(name.len() + 1 + value.len());
    s.push_str(name);
    s.push('\u{1f}');
    push_folded(value, &mut s);
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

/// Every metadata value as text (not the keys), handed to `out` one by one: the named fields,
/// each change's field, old and new values, and the free-form values, walking into arrays and
/// objects. `null` is skipped.
pub(crate) fn metadata_values(meta: &Metadata, out: &mut impl FnMut(&str)) {
    fn walk(v: &Value, out: &mut impl FnMut(&str)) {
        match v {
            Value::Null => {}
            Value::String(s) => out(s),
            Value::Bool(b) => out(if *b { "true" } else { "false" }),
            Value::Number(n) => out(&n.to_string()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
        }
    }
    for v in [&meta.ip, &meta.user_agent, &meta.scan_type]
        .into_iter()
        .flatten()
    {
        out(v);
    }
    for change in &meta.changes {
        out(&change.field);
        walk(&change.old, out);
        walk(&change.new, out);
    }
    for v in meta.extra.values() {
        walk(v, out);
    }
}

/// The values of the `text` field: those a bare word of `q` is searched in that have no full-text
/// field of their own. The actor's name, the target and the message are indexed once, in
/// `actor_text`, `target_text` and `message_text`, and a bare word searches all four fields (see
/// [`bare_word_fields`]): indexing them in `text` too cost ~5 % of ingest CPU (BENCHMARKS.md).
/// Values are handed to `out` one by one (a phrase never spans two).
pub(crate) fn other_text_values(r: &AuditRecord, out: &mut impl FnMut(&str)) {
    out(&r.actor.id);
    if let Some(email) = &r.actor.email {
        out(email);
    }
    out(&r.action);
    if let Some(repository) = &r.repository {
        out(repository);
    }
    metadata_values(&r.metadata, out);
}

/// The fields a bare word or phrase of `q` is searched in: together they hold every searchable
/// value of a record, each once.
pub(crate) fn bare_word_fields(f: &Fields) -> [Field; 4] {
    [f.text, f.actor_text, f.target_text, f.message_text]
}

/// The `(name, value)` keywords of a record, before folding: what `field:value` in `q` and the
/// structured filters match exactly (ignoring case).
pub(crate) fn keywords(r: &AuditRecord) -> impl Iterator<Item = (&'static str, &str)> {
    [
        Some(("action", r.action.as_str())),
        Some(("category", category_of(r))),
        Some(("outcome", r.outcome.as_str())),
        Some(("user", r.actor.id.as_str())),
        r.actor.email.as_deref().map(|e| ("user", e)),
        r.repository.as_deref().map(|e| ("repository", e)),
        r.metadata.ip.as_deref().map(|e| ("ip", e)),
    ]
    .into_iter()
    .flatten()
}

/// Builds the document of a record read from the write-ahead log at `lsn`, for a partition of
/// `form`; `stored` is its canonical JSON when the caller has it already (the WAL payload), else
/// it is written here.
pub(crate) fn document(
    f: &Fields,
    form: UidForm,
    lsn: u64,
    r: &AuditRecord,
    stored: Option<&str>,
) -> Result<TantivyDocument, IndexError> {
    let id =
        r.id.as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| IndexError::InvalidRecord("the record has no id".into()))?;
    let mut d = TantivyDocument::new();
    if form == UidForm::Text {
        d.add_text(f.uid, uid(&r.org_id, id));
    }
    d.add_u64(f.uid_hash, uid_hash(&r.org_id, id));
    d.add_u64(f.lsn, lsn);
    // The record fields with a column of their own, as the field table says.
    for &field in schema::Field::ALL {
        let Some(column) = f.column(field) else {
            continue;
        };
        match field {
            // Records stored before the category was derived on the way in have none.
            schema::Field::Category => d.add_text(column, category_of(r)),
            _ => match field.value(r) {
                Some(FieldValue::Text(s)) => d.add_text(column, s),
                Some(FieldValue::Time(t)) => d.add_i64(column, t.timestamp_micros()),
                Some(FieldValue::Count(n)) => d.add_u64(column, n),
                _ => {}
            },
        }
    }
    d.add_text(f.user, r.actor_label());
    if let Some(t) = &r.target {
        for v in t.name.iter().chain(t.id.iter()) {
            d.add_text(f.target_text, v);
        }
    }
    let mut term = String::new();
    for (name, value) in keywords(r) {
        term.clear();
        term.push_str(name);
        term.push('\u{1f}');
        push_folded(value, &mut term);
        d.add_text(f.kw, &term);
    }
    other_text_values(r, &mut |v| d.add_text(f.text, v));
    // Words of the action's meaning (`q=triage` finds `finding.triaged`); the schema is the
    // same, so partitions written before open as they are (their records lack these words).
    codestax_common::action_search_words(&r.action, &mut |w| d.add_text(f.text, w));
    if let Some(name) = &r.actor.name {
        d.add_text(f.actor_text, name);
    }
    if let Some(m) = &r.message {
        d.add_text(f.message_text, m);
    }
    match stored {
        Some(json) => d.add_bytes(f.doc, json.as_bytes()),
        None => d.add_bytes(f.doc, r.canonical_json().as_bytes()),
    }
    Ok(d)
}
