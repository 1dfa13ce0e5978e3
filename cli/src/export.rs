//! `codestax export`: streams an export from the collector to a file or stdout.
//!
//! A file is written as `.<name>.<random>.partial` beside the output, checked to be complete (the
//! transfer ended cleanly and holds as many records as the collector said it would), synced, and
//! only then renamed to the output name: a failed or interrupted export never leaves a file that
//! looks complete (a killed process may leave the hidden `.partial` file behind).
//!
//! JSON and NDJSON exports carry their proof at their end. A CSV export's proof is fetched once
//! its bytes are in (the collector names it in `x-codestax-export-proof: sidecar <id>`) and
//! written beside the file as `FILE.proof.json`, before the file is renamed into place.

use crate::client::{Client, ClientError};
use codestax_common::api::{EXPORT_PROOF_HEADER, EXPORT_TOTAL_HEADER, ExportFormat, SearchFilters};
use codestax_common::export_proof::ProofBundle;
use codestax_storage::{AtomicFile, StateFileError};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub org: String,
    pub filters: SearchFilters,
    pub format: ExportFormat,
    /// Adds the chain columns to CSV (JSON and NDJSON always carry them).
    pub with_chain: bool,
}

/// Where the export goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

impl Output {
    /// `-` is stdout, anything else a file.
    pub fn from_arg(path: &Path) -> Output {
        if path.as_os_str() == "-" {
            Output::Stdout
        } else {
            Output::File(path.to_path_buf())
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records, as the collector counted them for the export's snapshot.
    pub records: u64,
    pub bytes: u64,
    /// The sidecar proof written beside the file (CSV, OCSF, ECS), if any.
    pub proof: Option<PathBuf>,
}

impl ExportSummary {
    /// What was written to `path`, for the user: `exported 12 records (3.4 KiB, 3481 bytes) to
    /// audit-log.csv, its proof to audit-log.csv.proof.json`.
    pub fn describe(&self, path: &Path) -> String {
        let mut line = format!(
            "exported {} record{} ({}, {} bytes) to {}",
            self.records,
            if self.records == 1 { "" } else { "s" },
            HumanBytes(self.bytes),
            self.bytes,
            path.display()
        );
        if let Some(proof) = &self.proof {
            line.push_str(&format!(", its proof to {}", proof.display()));
        }
        line
    }
}

/// Why an export failed. Nothing that looks complete is left behind.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the transfer broke off after {bytes} bytes")]
    Transfer {
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("the export is incomplete: the collector announced {expected} records, {got} arrived")]
    Incomplete { expected: u64, got: u64 },
    #[error("the export's proof: {0}")]
    Proof(String),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs an export. Shows a progress bar (records and bytes) on stderr when `progress` is set and
/// stderr is a terminal.
pub fn export(
    client: &Client,
    request: &ExportRequest,
    output: &Output,
    progress: bool,
) -> Result<ExportSummary, ExportError> {
    let mut query = request.filters.to_query_pairs();
    query.push(("format", request.format.as_str().to_string()));
    if request.with_chain {
        query.push(("with_chain", "true".to_string()));
    }
    let path = format!("/api/v1/orgs/{}/audit-log/export", request.org);
    // Errors (auth, filters) come before anything is created.
    let response = client.get_stream(&path, &query)?;
    let expected = response
        .headers()
        .get(EXPORT_TOTAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let proof = Where::of(
        response
            .headers()
            .get(EXPORT_PROOF_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let trailer_lines =
        u64::from(proof == Where::Included && request.format == ExportFormat::Ndjson);
    let sidecar = |c: Counted| -> Result<(Counted, Option<ProofBundle>), ExportError> {
        match &proof {
            Where::Sidecar(id) => {
                let path = format!("/api/v1/orgs/{}/audit-log/export/proof", request.org);
                let bundle = client.get_json(&path, &[("id", id.clone())])?;
                Ok((c, Some(bundle)))
            }
            _ => Ok((c, None)),
        }
    };
    let bar = progress_bar(progress, expected);
    let result = match output {
        Output::Stdout => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if matches!(proof, Where::Sidecar(_)) {
                eprintln!(
                    "codestax: the proof of a {} export is written beside its file: use --output \
                     FILE to have FILE.proof.json",
                    request.format.as_str()
                );
            }
            copy(response, &mut out, request.format, &bar)
                .and_then(|c| check_complete(c, expected, request.format, trailer_lines))
                .and_then(|s| {
                    out.flush().map_err(|source| ExportError::Io {
                        what: "write to",
                        path: "stdout".into(),
                        source,
                    })?;
                    Ok(s)
                })
        }
        Output::File(path) => to_file(
            response,
            path,
            request.format,
            expected,
            trailer_lines,
            &bar,
            sidecar,
        ),
    };
    bar.finish_and_clear();
    result
}

/// Where the collector said the export's proof is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Where {
    /// At the end of the body (JSON, NDJSON).
    Included,
    /// To fetch under this id once the body has ended (CSV, OCSF, ECS).
    Sidecar(String),
    /// None: an older collector, or an org whose tree cannot prove.
    None,
}

impl Where {
    fn of(header: Option<&str>) -> Where {
        match header {
            Some("included") => Where::Included,
            Some(h) => match h.strip_prefix("sidecar ") {
                Some(id) => Where::Sidecar(id.to_string()),
                None => Where::None,
            },
            None => Where::None,
        }
    }
}

/// Writes to a temporary file beside `path` and renames it into place once complete (and its
/// sidecar proof, if any, fetched and written beside it first).
#[allow(clippy::too_many_arguments)]
fn to_file<'a>(
    response: impl Read,
    path: &Path,
    format: ExportFormat,
    expected: Option<u64>,
    trailer_lines: u64,
    bar: &ProgressBar,
    sidecar: impl FnOnce(Counted) -> Result<(Counted, Option<ProofBundle>), ExportError> + 'a,
) -> Result<ExportSummary, ExportError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let io = |what, source| ExportError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    // Unique per process, so two exports to one name never share a temporary file.
    let temp = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let mut tmp = AtomicFile::create(path, &temp)
        .map_err(|e| state_io("create a temporary file beside", path, e))?;
    let counted = {
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, tmp.file());
        let counted = copy(response, &mut w, format, bar)?;
        w.flush().map_err(|e| io("write", e))?;
        counted
    };
    let (counted, bundle) = sidecar(counted)?;
    let mut summary = check_complete(counted, expected, format, trailer_lines)?;
    if let Some(bundle) = bundle {
        let proof_path = crate::verify::sidecar_path(path);
        let name = proof_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.{}.partial", std::process::id()));
        let mut proof = AtomicFile::create(&proof_path, &temp)
            .map_err(|e| state_io("create a temporary file beside", &proof_path, e))?;
        serde_json::to_writer_pretty(proof.file(), &bundle)
            .map_err(|e| ExportError::Proof(e.to_string()))?;
        proof
            .commit()
            .map_err(|e| state_io("sync and rename the proof to", &proof_path, e))?;
        summary.proof = Some(proof_path);
    }
    // fsync, rename, fsync of the directory; dropped before this, the temporary file is removed.
    tmp.commit()
        .map_err(|e| state_io("sync and rename the finished export to", path, e))?;
    Ok(summary)
}

fn state_io(what: &'static str, path: &Path, e: StateFileError) -> ExportError {
    let source = e.into_io_error();
    ExportError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What arrived: bytes and newlines.
struct Counted {
    bytes: u64,
    newlines: u64,
}

fn copy(
    mut from: impl Read,
    to: &mut impl Write,
    format: ExportFormat,
    bar: &ProgressBar,
) -> Result<Counted, ExportError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut c = Counted {
        bytes: 0,
        newlines: 0,
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ExportError::Transfer {
                    bytes: c.bytes,
                    source,
                });
            }
        };
        to.write_all(&buf[..n]).map_err(|source| ExportError::Io {
            what: "write the export to",
            path: "the output".into(),
            source,
        })?;
        c.bytes += n as u64;
        c.newlines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        bar.set_position(rows_so_far(format, c.newlines));
        bar.set_message(HumanBytes(c.bytes).to_string());
    }
    Ok(c)
}

/// Records seen, from the newlines: NDJSON (and OCSF, ECS) ends each record with one; JSON puts one before each
/// record and two around the closing `]`; CSV ends the header and each record with one (a cell
/// with a line break makes this an estimate).
fn rows_so_far(format: ExportFormat, newlines: u64) -> u64 {
    if format.is_lines() {
        return newlines;
    }
    newlines.saturating_sub(1)
}

/// Checks that everything announced arrived: NDJSON and JSON exactly (`[]` alone for an empty
/// JSON export), CSV at least (cells may hold line breaks).
fn check_complete(
    c: Counted,
    expected: Option<u64>,
    format: ExportFormat,
    trailer_lines: u64,
) -> Result<ExportSummary, ExportError> {
    // The proof line of an NDJSON export is not a record.
    let c = Counted {
        newlines: c.newlines.saturating_sub(trailer_lines),
        ..c
    };
    let Some(expected) = expected else {
        return Ok(ExportSummary {
            records: rows_so_far(format, c.newlines),
            bytes: c.bytes,
            proof: None,
        });
    };
    let lines_needed = match format {
        ExportFormat::Ndjson | ExportFormat::Ocsf | ExportFormat::Ecs => expected,
        ExportFormat::Json if expected == 0 => 1,
        ExportFormat::Json => expected + 2,
        ExportFormat::Csv => expected + 1,
    };
    let complete = match format {
        ExportFormat::Csv => c.newlines >= lines_needed,
        _ => c.newlines == lines_needed,
    };
    if !complete {
        let got = match format {
            ExportFormat::Json => c.newlines.saturating_sub(2),
            _ => rows_so_far(format, c.newlines),
        };
        return Err(ExportError::Incomplete { expected, got });
    }
    Ok(ExportSummary {
        records: expected,
        bytes: c.bytes,
        proof: None,
    })
}

fn progress_bar(wanted: bool, total: Option<u64>) -> ProgressBar {
    let template = if total.is_some() {
        "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} records, {msg}"
    } else {
        "{spinner} {elapsed_precise} {human_pos} records, {msg}"
    };
    terminal_bar(wanted, total, template)
}

/// A progress bar on stderr drawn with `template`, when `wanted` and stderr is a terminal;
/// else a hidden one.
pub(crate) fn terminal_bar(wanted: bool, total: Option<u64>, template: &str) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completeness_is_checked_per_format() {
        let c = |newlines| Counted {
            bytes: 10,
            newlines,
        };
        assert!(check_complete(c(3), Some(3), ExportFormat::Ndjson, 0).is_ok());
        assert!(check_complete(c(2), Some(3), ExportFormat::Ndjson, 0).is_err());
        assert!(check_complete(c(5), Some(3), ExportFormat::Json, 0).is_ok());
        assert!(check_complete(c(1), Some(0), ExportFormat::Json, 0).is_ok());
        assert!(check_complete(c(4), Some(3), ExportFormat::Json, 0).is_err());
        assert!(check_complete(c(6), Some(3), ExportFormat::Json, 0).is_err());
        assert!(check_complete(c(6), Some(3), ExportFormat::Csv, 0).is_ok());
        assert!(check_complete(c(3), Some(3), ExportFormat::Csv, 0).is_err());
    }

    #[test]
    fn a_broken_transfer_leaves_no_file() {
        struct Breaks(u8);
        impl Read for Breaks {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("connection reset"));
                }
                self.0 -= 1;
                buf[..2].copy_from_slice(b"{\n");
                Ok(2)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("audit.ndjson");
        let e = to_file(
            Breaks(3),
            &out,
            ExportFormat::Ndjson,
            Some(10),
            0,
            &ProgressBar::hidden(),
            |c| Ok((c, None)),
        )
        .unwrap_err();
        assert!(matches!(e, ExportError::Transfer { bytes: 6, .. }), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        // A clean end with fewer records than announced is no better.
        let e = to_file(
            &b"{}\n{}\n"[..],
            &out,
            ExportFormat::Ndjson,
            Some(3),
            0,
            &ProgressBar::hidden(),
            |c| Ok((c, None)),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            ExportError::Incomplete {
                expected: 3,
                got: 2
            }
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let s = to_file(
            &b"{}\n{}\n"[..],
            &out,
            ExportFormat::Ndjson,
            Some(2),
            0,
            &ProgressBar::hidden(),
            |c| Ok((c, None)),
        )
        .unwrap();
        assert_eq!(s.records, 2);
        assert_eq!(std::fs::read(&out).unwrap(), b"{}\n{}\n");
    }
}
