//! Exports: the CSV, JSON and NDJSON encodings of audit records (and the OCSF and ECS ones, one
//! event per line, mapped by `codestax_common::format`), and the stream that hands every
//! match of a search, read from one snapshot by
//! [`AuditIndex::scan`](crate::index::AuditIndex::scan), to the client in chunks, whatever the
//! number of records.
//!
//! Records are encoded straight from their stored canonical JSON: JSON and NDJSON write those
//! bytes as they are (a record's line is its canonical JSON, the form its `hash` is over, with
//! `prev_hash` and `hash` in it), reading only its [`RecordHead`] for its `seq`; CSV reads it
//! through [`RecordView`], which borrows its strings from those bytes and keeps free-form values
//! (metadata values, change values) as raw JSON. No `AuditRecord` is built per row; the tests
//! check the output against one built per row.
//!
//! CSV cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab
//! or a carriage return) are prefixed with `'` ([`neutralise`]); see `docs/export.md`.

use crate::index::{IndexError, Scan};
use codestax_common::AuditRecord;
use codestax_common::api::{CSV_CHAIN_COLUMNS, CSV_COLUMNS, ExportFormat};
use codestax_common::export_proof::{FORMAT, NDJSON_PROOF_KEY, ProofBundle};
use codestax_common::format::{Context, ecs, ocsf};
use codestax_common::merkle::Hash;
use codestax_common::record_view::{RecordHead, RecordView, Str};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Encoded bytes are handed on once this many have gathered.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// What can stop an export midway.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The index failed while reading the records.
    #[error("reading the records: {0}")]
    Index(#[from] IndexError),
    /// A record could not be encoded.
    #[error("encoding a record: {0}")]
    Encode(String),
    /// The receiver went away (the client disconnected).
    #[error("the client went away")]
    Gone,
    /// The proof could not be made.
    #[error("{0}")]
    Proof(String),
}

/// The characters that make a spreadsheet read a cell as a formula when it starts with them.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Characters a spreadsheet may skip before it looks for a formula: whitespace (spaces, NBSP,
/// tabs, line breaks) and invisible format characters (zero-width space and joiners, word joiner,
/// BOM, soft hyphen).
fn is_skipped_before_formula(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
        )
}

/// A CSV cell made safe to open in a spreadsheet: prefixed with `'` when it starts with a
/// character that would make it a formula (`=`, `+`, `-`, `@`, tab, carriage return), also
/// behind leading whitespace or invisible characters.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS)
        || cell
            .trim_start_matches(is_skipped_before_formula)
            .starts_with(FORMULA_STARTS)
    {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Encodes records one at a time into an in-memory buffer that the caller drains with
/// [`Encoder::take`].
pub struct Encoder {
    format: ExportFormat,
    with_chain: bool,
    csv: Option<csv::Writer<Vec<u8>>>,
    buf: Vec<u8>,
    /// Scratch for the CSV `metadata` and `seq` cells.
    scratch: Vec<u8>,
    rows: u64,
    /// What OCSF and ECS events say of the product.
    context: Context,
    /// Whether the export carries its proof (`codestax-export/2`): then the `seq` of each
    /// record is kept, in file order, and the bytes of a bytes-only format are hashed.
    proof: bool,
    seqs: Vec<u64>,
    /// Records without a `seq` (stored before chains existed): they cannot be proven.
    unsealed: u64,
    file_hash: Option<Sha256>,
}

impl Encoder {
    /// An encoder that has written the format's opening (the CSV header row, the JSON `[`).
    /// `with_chain` adds the chain columns to CSV; JSON and NDJSON always carry them.
    pub fn new(format: ExportFormat, with_chain: bool) -> Result<Encoder, ExportError> {
        Encoder::with_proof(format, with_chain, false)
    }

    /// An encoder whose export carries its proof (`proof`): the JSON opening is then the
    /// versioned object's, and [`Encoder::trailer`] gives the proof's bytes.
    pub fn with_proof(
        format: ExportFormat,
        with_chain: bool,
        proof: bool,
    ) -> Result<Encoder, ExportError> {
        let mut e = Encoder {
            format,
            with_chain,
            csv: None,
            buf: Vec::with_capacity(CHUNK_BYTES + 4096),
            scratch: Vec::new(),
            rows: 0,
            context: Context::new(env!("CARGO_PKG_VERSION")),
            proof,
            seqs: Vec::new(),
            unsealed: 0,
            file_hash: (proof && !format.recomputes_leaves()).then(Sha256::new),
        };
        match format {
            ExportFormat::Csv => {
                let mut w = csv_writer();
                let mut header: Vec<&str> = CSV_COLUMNS.to_vec();
                if with_chain {
                    header.extend(CSV_CHAIN_COLUMNS);
                }
                w.write_record(&header).map_err(encode)?;
                e.csv = Some(w);
            }
            ExportFormat::Json if proof => {
                e.buf.extend_from_slice(b"{\"format\":\"");
                e.buf.extend_from_slice(FORMAT.as_bytes());
                e.buf.extend_from_slice(b"\",\"records\":[");
            }
            ExportFormat::Json => e.buf.push(b'['),
            ExportFormat::Ndjson | ExportFormat::Ocsf | ExportFormat::Ecs => {}
        }
        Ok(e)
    }

    /// The same encoder naming another product or collector in OCSF and ECS events.
    pub fn with_context(mut self, context: Context) -> Encoder {
        self.context = context;
        self
    }

    /// Appends one record.
    pub fn push(&mut self, r: &AuditRecord) -> Result<(), ExportError> {
        self.push_stored(r.canonical_json().as_bytes())
    }

    /// Appends one record given as its JSON (as the index stores it: canonical JSON).
    pub fn push_stored(&mut self, json: &[u8]) -> Result<(), ExportError> {
        // One UTF-8 check for the whole record, rather than one per string `from_slice` makes.
        let json = std::str::from_utf8(json).map_err(encode)?;
        if let ExportFormat::Ocsf | ExportFormat::Ecs = self.format {
            return self.push_event(json);
        }
        if let ExportFormat::Csv = self.format {
            let view: RecordView = serde_json::from_str(json).map_err(encode)?;
            self.note_seq(view.seq);
            let w = self.csv.as_mut().expect("a CSV encoder has a writer");
            write_csv_row(w, &view, self.with_chain, &mut self.scratch)?;
        } else {
            // Parsed for its `seq`, and so that only a record goes out.
            let head: RecordHead = serde_json::from_str(json).map_err(encode)?;
            self.note_seq(head.seq);
            if let ExportFormat::Json = self.format {
                if self.rows > 0 {
                    self.buf.push(b',');
                }
                self.buf.push(b'\n');
            }
            self.buf.extend_from_slice(json.as_bytes());
            if let ExportFormat::Ndjson = self.format {
                self.buf.push(b'\n');
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends one record as an OCSF event or ECS document line. The mappings read the typed
    /// record (every field through the schema's table), not the borrowed view.
    fn push_event(&mut self, json: &str) -> Result<(), ExportError> {
        let r: AuditRecord = serde_json::from_str(json).map_err(encode)?;
        self.note_seq(r.seq);
        let event = match self.format {
            ExportFormat::Ocsf => ocsf::event(&r, &self.context),
            _ => ecs::document(&r, &self.context),
        };
        serde_json::to_writer(&mut self.buf, &event).map_err(encode)?;
        self.buf.push(b'\n');
        self.rows += 1;
        Ok(())
    }

    /// Keeps the record's `seq` for the proof (an export with proof only).
    fn note_seq(&mut self, seq: Option<u64>) {
        if self.proof {
            match seq {
                Some(seq) => self.seqs.push(seq),
                None => self.unsealed += 1,
            }
        }
    }

    /// Records pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes waiting to be taken (the CSV writer's own small buffer aside).
    pub fn buffered(&self) -> usize {
        match &self.csv {
            Some(w) => w.get_ref().len(),
            None => self.buf.len(),
        }
    }

    /// Takes the bytes encoded so far.
    pub fn take(&mut self) -> Result<Vec<u8>, ExportError> {
        let out = match self.csv.replace(csv_writer()) {
            // csv's writer cannot lend its output: take it whole and start a fresh one.
            Some(w) => w.into_inner().map_err(|e| encode(e.error()))?,
            None => {
                self.csv = None;
                std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096))
            }
        };
        if let Some(h) = &mut self.file_hash {
            h.update(&out);
        }
        Ok(out)
    }

    /// Writes the format's closing (the JSON `]`) and takes the rest.
    pub fn finish(mut self) -> Result<Vec<u8>, ExportError> {
        self.end_records()
    }

    /// Writes the end of the records (the JSON `]`, and for an export without proof the
    /// newline after it) and takes the rest: what follows is only the [`Encoder::trailer`].
    pub fn end_records(&mut self) -> Result<Vec<u8>, ExportError> {
        if self.format == ExportFormat::Json {
            if self.rows > 0 {
                self.buf.push(b'\n');
            }
            self.buf.push(b']');
            if !self.proof {
                self.buf.push(b'\n');
            }
        }
        self.take()
    }

    /// The `seq`s of the records pushed, in order (kept only for an export with proof).
    pub fn seqs(&self) -> &[u64] {
        &self.seqs
    }

    /// Records pushed that have no `seq` and so cannot be proven.
    pub fn unsealed(&self) -> u64 {
        self.unsealed
    }

    /// The SHA-256 of every byte taken, for a bytes-only format with proof.
    pub fn file_sha256(&mut self) -> Option<Hash> {
        self.file_hash.take().map(|h| h.finalize().into())
    }

    /// The proof's bytes after the records: the JSON object's `manifest` and `proof` and its
    /// closing brace, NDJSON's last line; nothing for a bytes-only format (its proof is a
    /// sidecar).
    pub fn trailer(&self, bundle: &ProofBundle) -> Result<Vec<u8>, ExportError> {
        let mut out = Vec::new();
        match self.format {
            ExportFormat::Json => {
                out.extend_from_slice(b",\"manifest\":");
                serde_json::to_writer(&mut out, &bundle.manifest).map_err(encode)?;
                out.extend_from_slice(b",\"proof\":");
                serde_json::to_writer(&mut out, &bundle.proof).map_err(encode)?;
                out.extend_from_slice(b"}\n");
            }
            ExportFormat::Ndjson => {
                out.extend_from_slice(b"{\"");
                out.extend_from_slice(NDJSON_PROOF_KEY.as_bytes());
                out.extend_from_slice(b"\":");
                serde_json::to_writer(&mut out, bundle).map_err(encode)?;
                out.extend_from_slice(b"}\n");
            }
            ExportFormat::Csv | ExportFormat::Ocsf | ExportFormat::Ecs => {}
        }
        Ok(out)
    }
}

/// RFC 4180 output: commas, `"` quoting where needed (doubled `"` inside), CRLF line ends.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .buffer_capacity(64 * 1024)
        .from_writer(Vec::with_capacity(CHUNK_BYTES + 4096))
}

fn encode(e: impl std::fmt::Display) -> ExportError {
    ExportError::Encode(e.to_string())
}

/// The `written_by` cell: the record's provenance as `collector`, `ingest:<key id>`, or `unknown`.
fn written_by(r: &RecordView, out: &mut Vec<u8>) {
    match &r.provenance {
        None => out.extend_from_slice(b"unknown"),
        Some(p) => {
            out.extend_from_slice(p.writer.as_str().as_bytes());
            if let Some(key_id) = &p.key_id {
                out.push(b':');
                out.extend_from_slice(key_id.as_str().as_bytes());
            }
        }
    }
}

/// The `actor_name` cell: the actor's name; for an actor with neither name nor email (the
/// collector's own key events, a key acting through the API) who it is, in the shape of
/// `written_by`: `collector` for the collector's system actor in its own entry, else
/// `<kind>:<id>` (`api_key:key_…`), so that no row leaves "who" empty.
fn actor_name(r: &RecordView, out: &mut Vec<u8>) {
    let actor = &r.actor;
    if let Some(name) = &actor.name {
        out.extend_from_slice(name.as_str().as_bytes());
    } else if actor.email.is_none() {
        let by_collector = r
            .provenance
            .as_ref()
            .is_some_and(|p| p.writer.as_str() == "collector");
        if by_collector && actor.kind.as_str() == "system" {
            written_by(r, out);
        } else {
            out.extend_from_slice(actor.kind.as_str().as_bytes());
            out.push(b':');
            out.extend_from_slice(actor.id.as_str().as_bytes());
        }
    }
}

/// Writes a record's CSV row: the cells of [`CSV_COLUMNS`] (and [`CSV_CHAIN_COLUMNS`]), each
/// neutralised, absent values as empty cells, `metadata` as compact JSON (empty when there is
/// none).
fn write_csv_row(
    w: &mut csv::Writer<Vec<u8>>,
    r: &RecordView,
    with_chain: bool,
    scratch: &mut Vec<u8>,
) -> Result<(), ExportError> {
    fn opt<'s>(v: &'s Option<Str>) -> &'s str {
        v.as_ref().map_or("", |s| s.as_str())
    }
    let target = r.target.as_ref();
    let mut cell = |s: &str| w.write_field(neutralise(s).as_bytes()).map_err(encode);
    cell(&r.time)?;
    scratch.clear();
    actor_name(r, scratch);
    cell(std::str::from_utf8(scratch).map_err(encode)?)?;
    cell(opt(&r.actor.email))?;
    cell(&r.action)?;
    cell(&r.category)?;
    cell(target.map_or("", |t| t.kind.as_str()))?;
    cell(target.map_or("", |t| opt(&t.id)))?;
    cell(target.map_or("", |t| opt(&t.name)))?;
    cell(opt(&r.repository))?;
    cell(&r.outcome)?;
    cell(opt(&r.metadata.ip))?;
    scratch.clear();
    if !r.metadata.is_empty() {
        serde_json::to_writer(&mut *scratch, &r.metadata).map_err(encode)?;
    }
    cell(std::str::from_utf8(scratch).map_err(encode)?)?;
    scratch.clear();
    written_by(r, scratch);
    cell(std::str::from_utf8(scratch).map_err(encode)?)?;
    if with_chain {
        let seq = r.seq.map(|s| s.to_string()).unwrap_or_default();
        cell(&seq)?;
        cell(opt(&r.prev_hash))?;
        cell(opt(&r.hash))?;
    }
    w.write_record(None::<&[u8]>).map_err(encode)
}

/// Makes an export's proof from the `seq`s written (file order) and, for a bytes-only format,
/// the file's SHA-256.
pub type Prove<'a> = Box<dyn FnOnce(&[u64], Option<Hash>) -> Result<ProofBundle, ExportError> + 'a>;

/// Streams every record of `scan` (which fixed the export's snapshot and total): encodes them
/// into chunks of about [`CHUNK_BYTES`] handed to `send`, which returns `false` when nobody is
/// listening any more, then, for an export with proof, makes it with `prove` once the records
/// are written and sends its [`Encoder::trailer`]. Blocking (index reads): run it on a blocking
/// thread. Returns the number of records written, which is `scan.total()`, and the proof.
pub fn stream(
    scan: Scan,
    mut encoder: Encoder,
    prove: Option<Prove<'_>>,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> Result<(u64, Option<ProofBundle>), ExportError> {
    scan.for_each(|json| {
        encoder.push_stored(json)?;
        if encoder.buffered() >= CHUNK_BYTES && !send(encoder.take()?) {
            return Err(ExportError::Gone);
        }
        Ok(())
    })?;
    let rows = encoder.rows();
    let last = encoder.end_records()?;
    let Some(prove) = prove else {
        return if send(last) {
            Ok((rows, None))
        } else {
            Err(ExportError::Gone)
        };
    };
    if encoder.unsealed() > 0 {
        // They stay in the file; the proof covers the others, and a verifier names them.
        tracing::warn!(
            records = encoder.unsealed(),
            "records without a seq (stored before chains existed) are exported unproven"
        );
    }
    // The records' last bytes are held back until the proof is made, so that a failure to
    // make it aborts a response that has not yet been seen to end.
    let file_sha256 = encoder.file_sha256();
    let bundle = prove(encoder.seqs(), file_sha256)?;
    let mut tail = last;
    tail.extend(encoder.trailer(&bundle)?);
    if !send(tail) {
        return Err(ExportError::Gone);
    }
    Ok((rows, Some(bundle)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(name: &str, target: &str, meta: serde_json::Value) -> AuditRecord {
        serde_json::from_value(json!({
            "id": "r1",
            "org_id": "acme",
            "time": "2026-11-27T10:15:30.123456Z",
            "actor": {"id": "u-42", "name": name, "email": "ada@acme.example", "kind": "user"},
            "action": "scan.triggered",
            "category": "scan",
            "target": {"kind": "repository", "id": "r-1", "name": target},
            "repository": "acme/api",
            "metadata": meta,
            "seq": 3,
            "prev_hash": "a".repeat(64),
            "hash": "b".repeat(64)
        }))
        .unwrap()
    }

    fn encode_all(format: ExportFormat, with_chain: bool, records: &[AuditRecord]) -> String {
        let mut e = Encoder::new(format, with_chain).unwrap();
        let mut out = Vec::new();
        for r in records {
            e.push(r).unwrap();
            out.extend(e.take().unwrap());
        }
        out.extend(e.finish().unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formulas_are_neutralised() {
        for bad in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(bad), format!("'{bad}"));
        }
        // Behind whitespace and invisible characters a spreadsheet still finds the formula.
        for bad in [
            " =x",
            "   +1",
            "\u{00A0}=HYPERLINK(\"http://x\")",
            "\u{200B}=1",
            "\u{FEFF}@SUM(A1)",
            "\u{2060}\u{200D}-2",
            "\n=1",
            "\u{3000}=1",
            "\u{00AD}=1",
        ] {
            assert_eq!(neutralise(bad), format!("'{bad}"), "{bad:?}");
        }
        for ok in [
            "",
            "a=b",
            "1-2",
            "acme/api",
            " x =y",
            "\u{200B}a",
            "'quoted",
            "  ",
        ] {
            assert_eq!(neutralise(ok), ok);
        }
    }

    #[test]
    fn csv_has_the_header_quotes_and_is_neutralised() {
        let r = record(
            "=HYPERLINK(\"http://evil\")",
            "Ä, \"quoted\"\nline",
            json!({"ip": "10.0.0.1", "note": "=cmd"}),
        );
        let out = encode_all(ExportFormat::Csv, false, std::slice::from_ref(&r));
        let mut reader = csv::Reader::from_reader(out.as_bytes());
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            CSV_COLUMNS
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(&row[0], "2026-11-27T10:15:30.123456Z");
        assert_eq!(&row[1], "'=HYPERLINK(\"http://evil\")");
        assert_eq!(&row[7], "Ä, \"quoted\"\nline");
        assert_eq!(&row[10], "10.0.0.1");
        let meta: serde_json::Value = serde_json::from_str(&row[11]).unwrap();
        assert_eq!(meta, json!({"ip": "10.0.0.1", "note": "=cmd"}));

        let out = encode_all(ExportFormat::Csv, true, &[r]);
        let mut reader = csv::Reader::from_reader(out.as_bytes());
        assert_eq!(reader.headers().unwrap().len(), 16);
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[12], "unknown", "stored before provenance existed");
        assert_eq!((&row[13], &row[15]), ("3", "b".repeat(64).as_str()));
    }

    #[test]
    fn csv_names_who_when_the_actor_has_no_name_nor_email() {
        use crate::keys::{KeyEvent, KeyEventKind, Role};
        let event = |by: Option<&str>| {
            let mut r = KeyEvent {
                kind: KeyEventKind::Created,
                key_id: "key_new".into(),
                org_id: "acme".into(),
                role: Role::Ingest,
                name: None,
                at: chrono::Utc::now(),
                by: by.map(str::to_string),
            }
            .to_audit_record();
            r.provenance = Some(codestax_common::Provenance::Collector);
            r
        };
        let rows = |records: &[AuditRecord]| -> Vec<(String, String)> {
            let out = encode_all(ExportFormat::Csv, false, records);
            csv::Reader::from_reader(out.as_bytes())
                .records()
                .map(|row| {
                    let row = row.unwrap();
                    (row[1].to_string(), row[12].to_string())
                })
                .collect()
        };
        let by_api = event(Some("key_owner"));
        let by_cli = event(None);
        let mut app = record("Ada", "t", json!({}));
        app.actor.name = None;
        assert_eq!(
            rows(&[by_cli, by_api, app]),
            [
                ("collector".to_string(), "collector".to_string()),
                ("api_key:key_owner".to_string(), "collector".to_string()),
                // An email says who already.
                (String::new(), "unknown".to_string()),
            ]
        );
    }

    #[test]
    fn json_is_one_array_and_ndjson_one_record_a_line() {
        let records: Vec<_> = (0..3)
            .map(|i| record(&format!("n{i}"), "t", json!({})))
            .collect();
        for n in [0, 1, 3] {
            let out = encode_all(ExportFormat::Json, false, &records[..n]);
            let back: Vec<AuditRecord> = serde_json::from_str(&out).unwrap();
            assert_eq!(back, records[..n]);
            let out = encode_all(ExportFormat::Ndjson, false, &records[..n]);
            let back: Vec<AuditRecord> = out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(back, records[..n]);
        }
        // The chain fields are always there.
        let out = encode_all(ExportFormat::Ndjson, false, &records[..1]);
        assert!(out.contains("\"seq\":3") && out.contains("\"prev_hash\""));
    }

    /// The encoding of an `AuditRecord` per row: its canonical JSON (JSON, NDJSON) or cut into
    /// cells (CSV). The reference the encoder must match byte for byte.
    fn reference(format: ExportFormat, with_chain: bool, records: &[AuditRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        match format {
            ExportFormat::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(Vec::new());
                let mut header: Vec<&str> = CSV_COLUMNS.to_vec();
                if with_chain {
                    header.extend(CSV_CHAIN_COLUMNS);
                }
                w.write_record(&header).unwrap();
                for r in records {
                    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
                    let metadata = if r.metadata.is_empty() {
                        String::new()
                    } else {
                        serde_json::to_string(&r.metadata).unwrap()
                    };
                    let t = r.target.as_ref();
                    let mut row = vec![
                        codestax_common::time::format_rfc3339(&r.time),
                        match (&r.actor.name, &r.actor.email, &r.provenance) {
                            (Some(name), _, _) => name.clone(),
                            (None, Some(_), _) => String::new(),
                            (None, None, Some(p))
                                if p.writer() == "collector"
                                    && r.actor.kind == codestax_common::ActorKind::System =>
                            {
                                "collector".to_string()
                            }
                            (None, None, _) => format!("{}:{}", r.actor.kind.as_str(), r.actor.id),
                        },
                        opt(&r.actor.email),
                        r.action.clone(),
                        r.category.clone(),
                        t.map(|t| t.kind.as_str().to_string()).unwrap_or_default(),
                        t.and_then(|t| t.id.clone()).unwrap_or_default(),
                        t.and_then(|t| t.name.clone()).unwrap_or_default(),
                        opt(&r.repository),
                        r.outcome.as_str().to_string(),
                        opt(&r.metadata.ip),
                        metadata,
                        match &r.provenance {
                            None => "unknown".to_string(),
                            Some(p) => match p.key_id() {
                                Some(key_id) => format!("{}:{key_id}", p.writer()),
                                None => p.writer().to_string(),
                            },
                        },
                    ];
                    if with_chain {
                        row.push(r.seq.map(|s| s.to_string()).unwrap_or_default());
                        row.push(opt(&r.prev_hash));
                        row.push(opt(&r.hash));
                    }
                    w.write_record(row.iter().map(|c| neutralise(c).into_owned()))
                        .unwrap();
                }
                out = w.into_inner().unwrap();
            }
            ExportFormat::Json => {
                out.push(b'[');
                for (i, r) in records.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'\n');
                    out.extend_from_slice(r.canonical_json().as_bytes());
                }
                if !records.is_empty() {
                    out.push(b'\n');
                }
                out.extend_from_slice(b"]\n");
            }
            ExportFormat::Ndjson => {
                for r in records {
                    out.extend_from_slice(r.canonical_json().as_bytes());
                    out.push(b'\n');
                }
            }
            ExportFormat::Ocsf | ExportFormat::Ecs => {
                let cx = Context::new(env!("CARGO_PKG_VERSION"));
                for r in records {
                    let event = match format {
                        ExportFormat::Ocsf => ocsf::event(r, &cx),
                        _ => ecs::document(r, &cx),
                    };
                    serde_json::to_writer(&mut out, &event).unwrap();
                    out.push(b'\n');
                }
            }
        }
        out
    }

    /// Records covering every optional field present and absent, escapes, non-ASCII text,
    /// formula starts, nested and odd metadata values, as the collector stores them.
    fn varied_records() -> Vec<AuditRecord> {
        let values = [
            json!({}),
            json!({"ip": "10.0.0.1"}),
            json!({"ip": "=1+1", "user_agent": "Mozilla/5.0 \"quoted\"\n", "scan_type": "sast",
                   "changes": [{"field": "role", "old": "member", "new": {"b": [1, 2.5, null], "a": "é"}},
                               {"field": "x", "old": null, "new": -0.0},
                               {"field": "y"}],
                   "request_id": "0123abcd", "zeta": {"z": 1, "a": {"k": "\u{1}\\"}}, "alpha": true,
                   "big": 18446744073709551615u64, "neg": -9223372036854775808i64, "f": 1e300,
                   "third": 0.30000000000000004, "nul": null, "list": [], "obj": {},
                   "Upper": "sorts first", "ünï": "cödé"}),
            json!({"changes": [], "only_extra": "-5"}),
        ];
        let mut records = Vec::new();
        for (i, meta) in values.iter().enumerate() {
            let mut r = record(
                ["Ada", "=HYPERLINK(\"x\")", "Zoë \"Z\", Jr.", "+tab\there"][i],
                ["acme/api", "Ä, \"quoted\"\nline", "@mention", "\rcarriage"][i],
                meta.clone(),
            );
            r.provenance = match i {
                0 => Some(codestax_common::Provenance::Ingest {
                    key_id: "key_0123456789abcdef".into(),
                }),
                1 => Some(codestax_common::Provenance::Collector),
                _ => None,
            };
            if i == 1 {
                r.actor.email = None;
                r.actor.name = None;
                r.actor.kind = codestax_common::ActorKind::ApiKey;
                r.target = None;
                r.repository = None;
                r.message = Some("a message\twith \u{7f} and \u{2028}".into());
                r.outcome = codestax_common::Outcome::Failure;
                r.seq = None;
                r.prev_hash = None;
                r.hash = None;
            }
            if i == 2 {
                r.received_at = Some(r.time + chrono::Duration::microseconds(1_234_567));
                r.id = None;
                r.message = Some("-starts with a minus".into());
            }
            if i == 3 {
                r.target.as_mut().unwrap().id = None;
                r.time = codestax_common::time::parse_rfc3339("1970-01-01T00:00:00Z").unwrap();
            }
            records.push(r);
        }
        records
    }

    #[test]
    fn stored_records_encode_exactly_as_the_records_do() {
        let records = varied_records();
        for format in ExportFormat::ALL {
            for with_chain in [false, true] {
                for n in [0, 1, records.len()] {
                    let want = reference(format, with_chain, &records[..n]);
                    // As stored: canonical JSON (keys in byte order).
                    let mut e = Encoder::new(format, with_chain).unwrap();
                    let mut got = Vec::new();
                    for r in &records[..n] {
                        e.push_stored(r.canonical_json().as_bytes()).unwrap();
                        got.extend(e.take().unwrap());
                    }
                    got.extend(e.finish().unwrap());
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want),
                        "{format:?}, with_chain {with_chain}, {n} records"
                    );
                    // And through `push`, in one chunk.
                    let got = encode_all(format, with_chain, &records[..n]);
                    assert_eq!(got.as_bytes(), want, "{format:?} via push");
                }
            }
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let json = br#"{"action":"a.b","actor":{"id":"u","name":"N\"q"},"org_id":"o","time":"t"}"#;
        let v: RecordView = serde_json::from_slice(json).unwrap();
        assert!(matches!(v.action.0, Cow::Borrowed(_)));
        assert!(matches!(v.actor.name.as_ref().unwrap().0, Cow::Owned(_)));
        assert_eq!(v.actor.name.as_deref(), Some("N\"q"));
    }
}
