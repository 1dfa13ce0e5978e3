//! Exports: the CSV, JSON and NDJSON encodings of audit records, and the walk that streams every
//! match of a search from one snapshot in bounded chunks, whatever the number of records.
//!
//! CSV cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab
//! or a carriage return) are prefixed with `'` ([`neutralise`]); see `docs/export.md`.

use crate::index::{AuditIndex, IndexError, MAX_PAGE_SIZE, SearchPage, SearchQuery};
use codestax_common::AuditRecord;
use codestax_common::api::{CSV_CHAIN_COLUMNS, CSV_COLUMNS, ExportFormat};
use std::borrow::Cow;

/// Encoded bytes are handed on once this many have gathered.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// What can stop an export midway.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The index failed on a later page.
    #[error("reading the next page: {0}")]
    Index(#[from] IndexError),
    /// A record could not be encoded.
    #[error("encoding a record: {0}")]
    Encode(String),
    /// The receiver went away (the client disconnected).
    #[error("the client went away")]
    Gone,
}

/// The characters that make a spreadsheet read a cell as a formula when it starts with them.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A CSV cell made safe to open in a spreadsheet: prefixed with `'` when it starts with a
/// character that would make it a formula (`=`, `+`, `-`, `@`, tab, carriage return).
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
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
    rows: u64,
}

impl Encoder {
    /// An encoder that has written the format's opening (the CSV header row, the JSON `[`).
    /// `with_chain` adds the chain columns to CSV; JSON and NDJSON always carry them.
    pub fn new(format: ExportFormat, with_chain: bool) -> Result<Encoder, ExportError> {
        let mut e = Encoder {
            format,
            with_chain,
            csv: None,
            buf: Vec::with_capacity(CHUNK_BYTES + 4096),
            rows: 0,
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
            ExportFormat::Json => e.buf.push(b'['),
            ExportFormat::Ndjson => {}
        }
        Ok(e)
    }

    /// Appends one record.
    pub fn push(&mut self, r: &AuditRecord) -> Result<(), ExportError> {
        match self.format {
            ExportFormat::Csv => {
                let row = csv_row(r, self.with_chain)?;
                let w = self.csv.as_mut().expect("a CSV encoder has a writer");
                w.write_record(row.iter().map(|c| neutralise(c).into_owned()))
                    .map_err(encode)?;
            }
            ExportFormat::Json => {
                if self.rows > 0 {
                    self.buf.push(b',');
                }
                self.buf.push(b'\n');
                serde_json::to_writer(&mut self.buf, r).map_err(encode)?;
            }
            ExportFormat::Ndjson => {
                serde_json::to_writer(&mut self.buf, r).map_err(encode)?;
                self.buf.push(b'\n');
            }
        }
        self.rows += 1;
        Ok(())
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
        match self.csv.replace(csv_writer()) {
            // csv's writer cannot lend its output: take it whole and start a fresh one.
            Some(w) => w.into_inner().map_err(|e| encode(e.error())),
            None => {
                self.csv = None;
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }

    /// Writes the format's closing (the JSON `]`) and takes the rest.
    pub fn finish(mut self) -> Result<Vec<u8>, ExportError> {
        if self.format == ExportFormat::Json {
            if self.rows > 0 {
                self.buf.push(b'\n');
            }
            self.buf.extend_from_slice(b"]\n");
        }
        self.take()
    }
}

/// RFC 4180 output: commas, `"` quoting where needed (doubled `"` inside), CRLF line ends.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(CHUNK_BYTES + 4096))
}

fn encode(e: impl std::fmt::Display) -> ExportError {
    ExportError::Encode(e.to_string())
}

/// The cells of a record's CSV row, before neutralising, in the order of [`CSV_COLUMNS`] (and
/// [`CSV_CHAIN_COLUMNS`]).
pub fn csv_row(r: &AuditRecord, with_chain: bool) -> Result<Vec<String>, ExportError> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let metadata = if r.metadata.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&r.metadata).map_err(encode)?
    };
    let mut row = vec![
        codestax_common::time::format_rfc3339(&r.time),
        opt(&r.actor.name),
        opt(&r.actor.email),
        r.action.clone(),
        r.category.clone(),
        r.target
            .as_ref()
            .map(|t| t.kind.as_str().to_string())
            .unwrap_or_default(),
        r.target
            .as_ref()
            .and_then(|t| t.id.clone())
            .unwrap_or_default(),
        r.target
            .as_ref()
            .and_then(|t| t.name.clone())
            .unwrap_or_default(),
        opt(&r.repository),
        r.outcome.as_str().to_string(),
        opt(&r.metadata.ip),
        metadata,
    ];
    if with_chain {
        row.push(r.seq.map(|s| s.to_string()).unwrap_or_default());
        row.push(opt(&r.prev_hash));
        row.push(opt(&r.hash));
    }
    Ok(row)
}

/// Streams every match of a search walk whose first page is `first` (which fixed the walk's
/// snapshot): encodes its records and the following pages' into chunks of about
/// [`CHUNK_BYTES`] handed to `send`, which returns `false` when nobody is listening any more.
/// Blocking (index reads): run it on a blocking thread. Returns the number of records written,
/// which is `first.total`.
pub fn stream(
    index: &AuditIndex,
    org: &str,
    q: &SearchQuery,
    first: SearchPage,
    mut encoder: Encoder,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> Result<u64, ExportError> {
    let mut page = first;
    loop {
        for r in &page.entries {
            encoder.push(r)?;
            if encoder.buffered() >= CHUNK_BYTES && !send(encoder.take()?) {
                return Err(ExportError::Gone);
            }
        }
        let Some(cursor) = page.next_cursor.take() else {
            break;
        };
        page = index.search(org, q, MAX_PAGE_SIZE, Some(&cursor))?;
    }
    let rows = encoder.rows();
    if !send(encoder.finish()?) {
        return Err(ExportError::Gone);
    }
    Ok(rows)
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
        for ok in ["", "a=b", "1-2", "acme/api", " =x", "'quoted"] {
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
        assert_eq!(reader.headers().unwrap().len(), 15);
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!((&row[12], &row[14]), ("3", "b".repeat(64).as_str()));
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
}
