//! `codestax import`: brings an existing audit trail into an org's log through
//! `POST /api/v1/import` with an INGEST key — this project's NDJSON or JSON exports (the proof
//! left out) and emit-file JSON lines — streamed in batches, a few in flight, in bounded memory.
//!
//! A file's import is resumable: after each batch the collector acknowledged (durable there),
//! the checkpoint beside the input moves past it ([`checkpoint`]); a rerun continues from it,
//! and what a lost batch had already stored comes back as duplicates (ids dedupe). Every refused
//! record goes to the rejects file with its input line; the import goes on.

pub mod checkpoint;
pub mod input;

use crate::client::{Client, ClientError};
use checkpoint::{Checkpoint, CheckpointFile, Counts, Fingerprint};
use codestax_common::FieldError;
use codestax_common::api::{EXPIRED_ON_ARRIVAL, IngestResponse, RejectedRecord};
use indicatif::ProgressBar;
use input::{Element, InputFormat, Position, Reader};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Most records in one request, by default.
pub const MAX_BATCH_RECORDS: usize = 1000;
/// Most bytes in one request (the collector takes 16 MiB by default).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Requests in flight at once, by default: the collector parses one while it syncs another.
pub const IN_FLIGHT: usize = 3;
/// How long a batch the collector cannot take now (429, 503, unreachable) is retried.
const RETRY_FOR: Duration = Duration::from_secs(120);
/// The route.
const IMPORT_PATH: &str = "/api/v1/import";
/// First lines of expired records the summary names.
const LINES_NAMED: usize = 5;

/// Where the records come from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// Not resumable: there is nothing to seek back to.
    Stdin,
}

impl Source {
    pub fn from_arg(path: &Path) -> Source {
        if path.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(path.to_path_buf())
        }
    }

    /// The source the records' provenance names unless `--source` says: the input file's
    /// name; none for stdin.
    pub fn default_name(&self) -> Option<String> {
        match self {
            Source::File(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
            Source::Stdin => None,
        }
    }

    /// The rejects file unless `--rejects` names one: beside the input, or in the current
    /// directory for stdin.
    pub fn default_rejects(&self) -> PathBuf {
        match self {
            Source::File(path) => {
                let mut name = path.as_os_str().to_owned();
                name.push(".rejects.ndjson");
                PathBuf::from(name)
            }
            Source::Stdin => PathBuf::from("codestax-import.rejects.ndjson"),
        }
    }
}

/// An import to run.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub source: Source,
    /// Where the records come from, as their provenance names it (`--source`).
    pub source_name: Option<String>,
    pub format: InputFormat,
    pub rejects: PathBuf,
    /// Show a progress bar (when stderr is a terminal).
    pub progress: bool,
    pub pacing: Pacing,
}

/// How the records go out: batch size and requests in flight (tunable for benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Most records in one request; a batch also stops at [`MAX_BATCH_BYTES`].
    pub batch_records: usize,
    /// Requests in flight at once (at least 1).
    pub in_flight: usize,
}

impl Default for Pacing {
    fn default() -> Pacing {
        Pacing {
            batch_records: MAX_BATCH_RECORDS,
            in_flight: IN_FLIGHT,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    pub counts: Counts,
    /// Where a rerun continued from (line), if it did.
    pub resumed_at_line: Option<u64>,
    pub rejects: Option<PathBuf>,
    pub first_expired_lines: Vec<u64>,
    pub first_rejected_lines: Vec<u64>,
    pub elapsed: Duration,
}

impl ImportSummary {
    /// The closing lines, for stderr.
    pub fn describe(&self) -> String {
        let c = &self.counts;
        let mut s = format!(
            "imported {} records ({} were already stored), {} rejected, {} expired on arrival",
            c.imported, c.duplicates, c.rejected, c.expired
        );
        let secs = self.elapsed.as_secs_f64();
        let done = c.records();
        if secs > 0.0 && done > 0 {
            s += &format!(
                "; {done} read in {secs:.1} s ({:.0} records/s)",
                done as f64 / secs
            );
        }
        if let Some(line) = self.resumed_at_line {
            s += &format!("; this run continued from line {line}");
        }
        if let Some(path) = &self.rejects {
            s += &format!("\nrejected records, each with its line: {}", path.display());
            if !self.first_rejected_lines.is_empty() {
                s += &format!(" (first at lines {})", join(&self.first_rejected_lines));
            }
        }
        if !self.first_expired_lines.is_empty() {
            s += &format!(
                "\nexpired on arrival (older than the org's retention, not stored): lines {}{}",
                join(&self.first_expired_lines),
                if c.expired > self.first_expired_lines.len() as u64 {
                    ", …"
                } else {
                    ""
                }
            );
        }
        s
    }
}

fn join(lines: &[u64]) -> String {
    lines
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs an import to its end (or its first failure: what was acknowledged is in the
/// checkpoint).
pub fn import(client: &Client, request: &ImportRequest) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    let source_name = request.source_name.as_deref();
    let query: Vec<(&str, String)> = source_name
        .map(|name| ("source", name.to_string()))
        .into_iter()
        .collect();
    match &request.source {
        Source::File(path) => {
            let fingerprint = Fingerprint::of(path)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
            let checkpoints = CheckpointFile::beside(path);
            let resumed = checkpoints.load(&fingerprint, request.format, source_name)?;
            let mut file = BufReader::with_capacity(
                256 * 1024,
                File::open(path)
                    .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?,
            );
            let (reader, rejects, counts) = match &resumed {
                Some(c) => {
                    file.seek(SeekFrom::Start(c.offset))?;
                    let rejects = Rejects::resume(&request.rejects, c.rejects_len)?;
                    (
                        Reader::resumed(file, request.format, c.position()),
                        rejects,
                        c.counts,
                    )
                }
                None => (
                    Reader::new(file, request.format),
                    Rejects::fresh(&request.rejects)?,
                    Counts::default(),
                ),
            };
            let bar = progress_bar(request.progress, Some(fingerprint.len));
            let run = Run {
                client,
                reader,
                rejects,
                counts,
                bar: &bar,
                query: &query,
                source_name,
                checkpoint: Some((&checkpoints, &fingerprint, request.format)),
                pacing: request.pacing,
                resumed_records: counts.records(),
                summary: ImportSummary {
                    resumed_at_line: resumed.as_ref().map(|c| c.line),
                    ..ImportSummary::default()
                },
            };
            let result = run.run();
            bar.finish_and_clear();
            let mut summary = result.map_err(|e| {
                e.context(format!(
                    "what the collector acknowledged is kept in {}: run the same command again to \
                     continue from there",
                    checkpoints.path().display()
                ))
            })?;
            checkpoints.remove()?;
            summary.elapsed = started.elapsed();
            Ok(summary)
        }
        Source::Stdin => {
            let stdin = std::io::stdin().lock();
            let bar = progress_bar(request.progress, None);
            let run = Run {
                client,
                reader: Reader::new(BufReader::with_capacity(256 * 1024, stdin), request.format),
                rejects: Rejects::fresh(&request.rejects)?,
                counts: Counts::default(),
                bar: &bar,
                query: &query,
                source_name,
                checkpoint: None,
                pacing: request.pacing,
                resumed_records: 0,
                summary: ImportSummary::default(),
            };
            let result = run.run();
            bar.finish_and_clear();
            let mut summary = result?;
            summary.elapsed = started.elapsed();
            Ok(summary)
        }
    }
}

/// One request's records: the NDJSON body, the input line of each of its lines, where the
/// input stands after it, and what was refused before sending (too large).
#[derive(Debug, Default)]
struct Batch {
    body: Vec<u8>,
    lines: Vec<u64>,
    end: Position,
    refused: Vec<RejectedRecord>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.refused.is_empty()
    }
}

/// An import under way.
struct Run<'a, R> {
    client: &'a Client,
    reader: Reader<R>,
    rejects: Rejects,
    counts: Counts,
    bar: &'a ProgressBar,
    /// The import's query: its `source`.
    query: &'a [(&'a str, String)],
    source_name: Option<&'a str>,
    checkpoint: Option<(&'a CheckpointFile, &'a Fingerprint, InputFormat)>,
    pacing: Pacing,
    /// Records counted before this run (a resumed import's), left out of its rate.
    resumed_records: u64,
    summary: ImportSummary,
}

impl<R: BufRead> Run<'_, R> {
    /// Reads batches and sends them, a few in flight; applies the answers in input order, so
    /// the checkpoint only ever moves past batches acknowledged with all before them.
    fn run(mut self) -> anyhow::Result<ImportSummary> {
        let (client, query) = (self.client, self.query);
        let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(0);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<(u64, Result<IngestResponse, ClientError>)>();
        std::thread::scope(|scope| {
            for _ in 0..self.pacing.in_flight.max(1) {
                let job_rx = Arc::clone(&job_rx);
                let done_tx = done_tx.clone();
                scope.spawn(move || {
                    loop {
                        let job = job_rx.lock().map(|rx| rx.recv());
                        let Ok(Ok((n, body))) = job else { return };
                        if done_tx.send((n, send(client, query, body))).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            let result = self.pump(&job_tx, &done_rx);
            // Workers end once the jobs channel closes; their answers are not waited for.
            drop(job_tx);
            result
        })?;
        self.summary.counts = self.counts;
        self.summary.rejects = (self.rejects.len > 0).then(|| self.rejects.path.clone());
        Ok(self.summary)
    }

    fn pump(
        &mut self,
        jobs: &mpsc::SyncSender<(u64, Vec<u8>)>,
        done: &mpsc::Receiver<(u64, Result<IngestResponse, ClientError>)>,
    ) -> anyhow::Result<()> {
        let mut element = Element::default();
        let mut sent: BTreeMap<u64, Batch> = BTreeMap::new();
        let mut answered: BTreeMap<u64, IngestResponse> = BTreeMap::new();
        let mut next_sent = 0u64;
        let mut next_applied = 0u64;
        let mut ended = false;
        let in_flight = self.pacing.in_flight.max(1);
        loop {
            if !ended && sent.len() < in_flight {
                let mut batch = self.read_batch(&mut element)?;
                if batch.is_empty() {
                    ended = true;
                } else {
                    let body = std::mem::take(&mut batch.body);
                    let n = next_sent;
                    next_sent += 1;
                    if body.is_empty() {
                        // Only records refused here: nothing to send.
                        let nothing = IngestResponse {
                            accepted: 0,
                            duplicates: 0,
                            rejected: 0,
                            expired: 0,
                            errors: Vec::new(),
                            more_errors: 0,
                            searchable: None,
                        };
                        answered.insert(n, nothing);
                    } else {
                        jobs.send((n, body))
                            .map_err(|_| anyhow::anyhow!("the senders stopped"))?;
                    }
                    sent.insert(n, batch);
                    continue;
                }
            }
            // Apply what is answered, in order.
            while let Some(response) = answered.remove(&next_applied) {
                let batch = sent.remove(&next_applied).expect("a batch per answer");
                self.apply(batch, response)?;
                next_applied += 1;
            }
            if !ended && sent.len() < in_flight {
                continue;
            }
            if sent.is_empty() {
                return Ok(());
            }
            let (n, answer) = done
                .recv()
                .map_err(|_| anyhow::anyhow!("the senders stopped"))?;
            let lines = &sent[&n].lines;
            let response = answer.map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "sending the records of lines {} to {}",
                    lines.first().copied().unwrap_or_default(),
                    lines.last().copied().unwrap_or_default()
                ))
            })?;
            answered.insert(n, response);
        }
    }

    /// The next batch: up to [`Pacing::batch_records`] records or [`MAX_BATCH_BYTES`].
    fn read_batch(&mut self, element: &mut Element) -> anyhow::Result<Batch> {
        let mut batch = Batch {
            body: Vec::with_capacity(MAX_BATCH_BYTES / 4),
            ..Batch::default()
        };
        while batch.lines.len() + batch.refused.len() < self.pacing.batch_records.max(1)
            && batch.body.len() < MAX_BATCH_BYTES
        {
            if !self.reader.next_into(element)? {
                break;
            }
            if let Some(size) = element.oversize {
                batch.refused.push(RejectedRecord {
                    line: element.line as usize,
                    id: None,
                    errors: vec![FieldError::new(
                        "record",
                        format!(
                            "{size} bytes, over the {} bytes a record may take here",
                            input::MAX_ELEMENT_BYTES
                        ),
                    )],
                });
            } else {
                batch.body.extend_from_slice(&element.bytes);
                batch.body.push(b'\n');
                batch.lines.push(element.line);
            }
        }
        batch.end = self.reader.position();
        Ok(batch)
    }

    /// Counts an acknowledged batch, writes its rejections with their input lines, and moves
    /// the checkpoint past it.
    fn apply(&mut self, batch: Batch, response: IngestResponse) -> anyhow::Result<()> {
        let refused_here = batch.refused.len() as u64;
        let mut rejected: Vec<RejectedRecord> = batch.refused;
        for mut r in response.errors {
            // The collector numbers a body's lines from 1; each is one input record.
            r.line = batch
                .lines
                .get(r.line.wrapping_sub(1))
                .copied()
                .unwrap_or_default() as usize;
            rejected.push(r);
        }
        rejected.sort_by_key(|r| r.line);
        let c = &mut self.counts;
        c.imported += response.accepted - response.duplicates;
        c.duplicates += response.duplicates;
        c.expired += response.expired;
        c.rejected += response.rejected - response.expired + refused_here;
        for r in &rejected {
            let expired = r
                .errors
                .first()
                .is_some_and(|e| e.reason.starts_with(EXPIRED_ON_ARRIVAL));
            let named = if expired {
                &mut self.summary.first_expired_lines
            } else {
                &mut self.summary.first_rejected_lines
            };
            if named.len() < LINES_NAMED {
                named.push(r.line as u64);
            }
        }
        self.rejects.append(&rejected)?;
        if let Some((file, fingerprint, format)) = self.checkpoint {
            file.save(&Checkpoint {
                version: 1,
                format,
                input_len: fingerprint.len,
                input_head_sha256: fingerprint.head_sha256.clone(),
                offset: batch.end.offset,
                line: batch.end.line,
                rejects_len: self.rejects.len,
                counts: self.counts,
                source: self.source_name.map(str::to_string),
            })?;
        }
        self.bar.set_position(batch.end.offset);
        let secs = self.bar.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{} records, {:.0} records/s",
            self.counts.records(),
            (self.counts.records() - self.resumed_records) as f64 / secs
        ));
        Ok(())
    }
}

/// Sends one batch, again while the collector cannot take it now (429, 503, unreachable), for
/// up to [`RETRY_FOR`]. Resending is safe: ids dedupe.
fn send(
    client: &Client,
    query: &[(&str, String)],
    body: Vec<u8>,
) -> Result<IngestResponse, ClientError> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(200);
    loop {
        let error = match client.post_ndjson(IMPORT_PATH, query, body.clone()) {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        let pause = match &error {
            ClientError::Busy { retry_after, .. } => retry_after.unwrap_or(wait),
            ClientError::Network { .. } => wait,
            _ => return Err(error),
        };
        if started.elapsed() + pause > RETRY_FOR {
            return Err(error);
        }
        std::thread::sleep(pause);
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// The rejects file: one JSON line per refused record (`{"line", "id"?, "errors"}`), created
/// when the first one comes.
struct Rejects {
    path: PathBuf,
    file: Option<File>,
    len: u64,
}

impl Rejects {
    /// For a new import: an old file of that name is replaced.
    fn fresh(path: &Path) -> anyhow::Result<Rejects> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                anyhow::bail!("cannot replace the rejects file {}: {e}", path.display())
            }
            _ => {}
        }
        Ok(Rejects {
            path: path.to_path_buf(),
            file: None,
            len: 0,
        })
    }

    /// For a resumed import: the file as the checkpoint knew it (what a lost batch wrote after
    /// is cut off; that batch is sent again).
    fn resume(path: &Path, len: u64) -> anyhow::Result<Rejects> {
        if len == 0 {
            return Rejects::fresh(path);
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open the rejects file {}: {e}", path.display()))?;
        file.set_len(len)?;
        Ok(Rejects {
            path: path.to_path_buf(),
            file: Some(file),
            len,
        })
    }

    fn append(&mut self, rejected: &[RejectedRecord]) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        let mut text = Vec::new();
        for r in rejected {
            serde_json::to_writer(&mut text, r)?;
            text.push(b'\n');
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::create(&self.path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the rejects file {}: {e}",
                    self.path.display()
                )
            })?),
        };
        file.seek(SeekFrom::Start(self.len))?;
        file.write_all(&text)?;
        // Durable before the checkpoint that counts it.
        file.sync_data()?;
        self.len += text.len() as u64;
        Ok(())
    }
}

fn progress_bar(wanted: bool, total_bytes: Option<u64>) -> ProgressBar {
    let template = if total_bytes.is_some() {
        "{spinner} {elapsed_precise} [{wide_bar}] {percent}% {msg}, ETA {eta}"
    } else {
        "{spinner} {elapsed_precise} {msg}"
    };
    crate::export::terminal_bar(wanted, total_bytes, template)
}
