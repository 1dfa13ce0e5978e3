//! The quarantine: lines and records that cannot be forwarded (not valid records, over-long
//! lines, records the collector rejected) are kept in `quarantine/quarantine.jsonl`, one JSON
//! object per line, and counted. They never stop a file or the forwarder.
//!
//! Each entry: `time` (RFC 3339), `source` (`file`, `collector`), `path` and `offset` (for file
//! lines), `reason`, `line` (the raw bytes as text, or `line_hex` when not UTF-8; at most
//! [`MAX_KEPT_BYTES`], with `truncated: true` when cut) and `line_bytes` (the full length).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::metrics::Metrics;

/// Longest part of a line kept in the quarantine.
pub const MAX_KEPT_BYTES: usize = 64 * 1024;
const FILE_NAME: &str = "quarantine.jsonl";

/// Why a line or record is quarantined (the `kind` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineKind {
    /// A line over `max_line_bytes`.
    LineTooLong,
    /// A line that is not a valid audit record.
    InvalidRecord,
    /// The last line of a released file had no newline.
    Unterminated,
    /// The collector rejected the record.
    Rejected,
    /// The record can never fit in the spool.
    TooLargeForSpool,
}

impl QuarantineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineKind::LineTooLong => "line_too_long",
            QuarantineKind::InvalidRecord => "invalid_record",
            QuarantineKind::Unterminated => "unterminated",
            QuarantineKind::Rejected => "rejected",
            QuarantineKind::TooLargeForSpool => "too_large_for_spool",
        }
    }
}

/// One quarantined line or record.
#[derive(Debug, Clone)]
pub struct QuarantineEntry {
    pub kind: QuarantineKind,
    pub source: &'static str,
    pub path: Option<PathBuf>,
    pub offset: Option<u64>,
    pub reason: String,
    /// The raw bytes kept (possibly a prefix).
    pub line: Vec<u8>,
    /// The full length of the line.
    pub line_bytes: u64,
}

impl QuarantineEntry {
    /// An entry for a file line, keeping at most [`MAX_KEPT_BYTES`] of it.
    pub fn file_line(
        kind: QuarantineKind,
        path: &Path,
        offset: u64,
        reason: String,
        line: &[u8],
        line_bytes: u64,
    ) -> QuarantineEntry {
        QuarantineEntry {
            kind,
            source: "file",
            path: Some(path.to_path_buf()),
            offset: Some(offset),
            reason,
            line: line[..line.len().min(MAX_KEPT_BYTES)].to_vec(),
            line_bytes,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    kind: &'static str,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line_hex: Option<String>,
    line_bytes: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// A quarantine could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write quarantine file {path}: {source}")]
pub struct QuarantineError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Appends to the quarantine file; clones share it.
#[derive(Clone)]
pub struct Quarantine {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    metrics: Arc<Metrics>,
}

impl Quarantine {
    /// Opens (creating) `dir/quarantine.jsonl` for appending.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<Quarantine, QuarantineError> {
        let path = dir.join(FILE_NAME);
        let err = |source| QuarantineError {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(err)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        Ok(Quarantine {
            path,
            file: Arc::new(Mutex::new(file)),
            metrics,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends entries and fsyncs them (before the positions past them are spooled, so a
    /// crash cannot lose a line both from the file's future and from the quarantine).
    pub fn write(&self, entries: &[QuarantineEntry]) -> Result<(), QuarantineError> {
        if entries.is_empty() {
            return Ok(());
        }
        let time = codestax_common::time::format_rfc3339(&chrono::Utc::now());
        let mut out = Vec::new();
        for e in entries {
            let (line, line_hex) = match std::str::from_utf8(&e.line) {
                Ok(text) => (Some(text), None),
                Err(_) => (None, Some(hex::encode(&e.line))),
            };
            let json = Line {
                time: time.clone(),
                kind: e.kind.as_str(),
                source: e.source,
                path: e.path.as_ref().map(|p| p.display().to_string()),
                offset: e.offset,
                reason: &e.reason,
                line,
                line_hex,
                line_bytes: e.line_bytes,
                truncated: (e.line.len() as u64) < e.line_bytes,
            };
            serde_json::to_writer(&mut out, &json).expect("JSON to a Vec");
            out.push(b'\n');
        }
        let mut file = self.file.lock().expect("quarantine lock");
        if let Err(source) = append_durably(&mut file, &out) {
            drop(file);
            let disk_full = codestax_storage::disk::is_full(source.kind());
            let e = QuarantineError {
                path: self.path.clone(),
                source,
            };
            self.metrics
                .write_failed("quarantine", disk_full, e.to_string());
            return Err(e);
        }
        drop(file);
        for e in entries {
            Metrics::count(&self.metrics.quarantined, "kind", e.kind.as_str(), 1);
            tracing::warn!(
                kind = e.kind.as_str(),
                // Absent ones (a record from OTLP has no file) are left out, not `None`.
                path = e.path.as_ref().map(|p| tracing::field::display(p.display())),
                offset = e.offset,
                reason = %e.reason,
                "quarantined"
            );
        }
        Ok(())
    }
}

/// Appends `bytes` (whole lines) to `file` and fsyncs them. On failure (a full disk mid-write)
/// the file is cut back to where it ended, so a retry neither writes the entries twice nor
/// glues them to half a line; should even the cut fail, the next write starts on a new line.
fn append_durably(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = file.metadata()?.len();
    let mut last = [b'\n'];
    if end > 0 {
        file.read_exact_at(&mut last, end - 1)?;
    }
    let written = (|| {
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
        file.write_all(bytes)?;
        file.sync_data()
    })();
    if written.is_err() {
        let _ = file.set_len(end).and_then(|()| file.sync_data());
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_json_lines_with_raw_text_or_hex() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let q = Quarantine::open(dir.path(), metrics.clone()).unwrap();
        let long = vec![b'a'; MAX_KEPT_BYTES + 10];
        q.write(&[
            QuarantineEntry::file_line(
                QuarantineKind::InvalidRecord,
                Path::new("/l/a.jsonl"),
                42,
                "record: not valid JSON".into(),
                b"{oops",
                5,
            ),
            QuarantineEntry::file_line(
                QuarantineKind::LineTooLong,
                Path::new("/l/a.jsonl"),
                48,
                "too long".into(),
                &long,
                long.len() as u64,
            ),
            QuarantineEntry::file_line(
                QuarantineKind::InvalidRecord,
                Path::new("/l/a.jsonl"),
                99,
                "not UTF-8".into(),
                &[0xff, 0x00],
                2,
            ),
        ])
        .unwrap();
        let text = fs::read_to_string(q.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["path"], "/l/a.jsonl");
        assert_eq!(lines[0]["offset"], 42);
        assert_eq!(lines[0]["line"], "{oops");
        assert_eq!(lines[0]["kind"], "invalid_record");
        assert!(lines[0].get("truncated").is_none());
        assert_eq!(lines[1]["truncated"], true);
        assert_eq!(lines[1]["line"].as_str().unwrap().len(), MAX_KEPT_BYTES);
        assert_eq!(lines[2]["line_hex"], "ff00");
        assert!(metrics.render().contains("kind=\"invalid_record\"} 2"));
    }
}
