//! `codestax verify`: checks an exported file offline — its proof (`codestax-export/2`: signed
//! manifest, signed tree head, multi-proof, retention holes; see
//! [`codestax_common::export_proof`]) against a public key given from outside the file, and its
//! hash chain.
//!
//! An export with proof is a JSON object `{"format", "records", "manifest", "proof"}`, an NDJSON
//! file whose last line is `{"codestax_proof": …}`, or a bytes-only file (CSV) with its sidecar
//! `FILE.proof.json`. An export without proof (a JSON array, NDJSON without the proof line) is
//! checked as before and reported as "unsigned, chain only".
//!
//! Reads a JSON or NDJSON export in one pass, and checks:
//!
//! 1. every record: its `hash` recomputes from its content and `prev_hash`
//!    ([`codestax_common::chain::check_record`]), and seq 1 starts from the genesis hash;
//! 2. the order: records come newest first (time, then id, descending) as exported, so records
//!    moved within the file are found;
//! 3. the links: sorted by `seq`, no number appears twice, each record's `prev_hash` is the hash
//!    of the record numbered one less, and — unless gaps are allowed, for filtered exports — no
//!    number is missing between the first and the last.
//!
//! A file whose lowest `seq` is above 1 (an export made after retention deleted the oldest
//! records, or with filters) is accepted: the first record's own hash is checked, but its
//! `prev_hash` cannot be (the file has no checkpoint), and the summary says so and shows it, to
//! compare with the collector's `GET .../verify`.
//!
//! The first broken place is named by its line (NDJSON) or position (JSON) and its `seq`.
//! Memory: 80 bytes per record, for the link check.

use codestax_common::AuditRecord;
use codestax_common::chain::{CheckedLeaf, check_record_leaf, check_view_leaf};
use codestax_common::export_proof::{
    ExportVerifier, FORMAT, NDJSON_PROOF_KEY, Proof, ProofBundle, ProofFailure, Proven,
};
use codestax_common::merkle::Hash;
use codestax_common::note::{Checkpoint, VerifierKey};
use codestax_common::record_view::{RecordView, stored_time};
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// How strict the check is, and with what key.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Accept missing sequence numbers (an export made with filters); only the records present,
    /// and the links between consecutive numbers present, are checked. Only for exports without
    /// proof (format 1): an export with proof proves its gaps.
    pub allow_gaps: bool,
    /// The collector's public key, obtained outside the file: the only key the proof's
    /// signatures are checked with.
    pub key: Option<VerifierKey>,
}

/// What verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// An export without proof: its hash chain holds. Unsigned: anyone can recompute a chain.
    Chain(VerifyReport),
    /// An export with proof (`codestax-export/2`).
    Proven(Box<Proven>),
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verified::Chain(r) => write!(
                f,
                "{r} (unsigned, chain only: an export without proof, which anyone could have \
                 recomputed)"
            ),
            Verified::Proven(p) => p.fmt(f),
        }
    }
}

/// What the chain check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The hash of the record with the highest `seq`: compare it with the collector's
    /// `GET /api/v1/orgs/{org}/audit-log/verify` to know nothing was cut off the end.
    pub last_hash: Option<String>,
    /// Sequence numbers missing between the first and the last (only with `allow_gaps`).
    pub missing: u64,
    /// The `prev_hash` of the first record when its `seq` is above 1: what the file cannot
    /// check (the records before it are not in it — deleted by retention, or filtered out).
    pub unchecked_prev_hash: Option<String>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first_seq, self.last_seq, &self.last_hash) {
            (Some(first), Some(last), Some(hash)) => {
                write!(f, "ok: {} records, seq {first} to {last}, ", self.records)?;
                if self.missing > 0 {
                    write!(f, "{} missing (gaps allowed), ", self.missing)?;
                } else {
                    f.write_str("no gaps, ")?;
                }
                write!(f, "every hash and link holds; last hash {hash}")?;
                if let Some(prev) = &self.unchecked_prev_hash {
                    write!(
                        f,
                        "; the prev_hash of seq {first} is not checked (records before it are \
                         not in the file: deleted by retention or filtered out): {prev}"
                    )?;
                }
                Ok(())
            }
            _ => f.write_str("ok: no records"),
        }
    }
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain or the proof does not hold at `place`.
    #[error("{place}: {reason}")]
    Broken { place: String, reason: String },
    /// The input is not an export that can be checked.
    #[error("{0}")]
    Input(String),
    #[error("cannot read the input")]
    Read(#[source] std::io::Error),
}

fn broken(place: impl Into<String>, reason: impl Into<String>) -> VerifyError {
    VerifyError::Broken {
        place: place.into(),
        reason: reason.into(),
    }
}

impl From<ProofFailure> for VerifyError {
    fn from(e: ProofFailure) -> Self {
        broken(e.place, e.reason)
    }
}

/// One record's chain fields, kept for the link check.
struct Link {
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    /// 1-based line (NDJSON) or position (JSON).
    at: u64,
}

/// The checks that run record by record while reading.
struct Checker {
    /// `line` for NDJSON, `record` for a JSON array.
    unit: &'static str,
    links: Vec<Link>,
    newest: Option<(chrono::DateTime<chrono::Utc>, String)>,
    proof: ExportVerifier,
    /// Reused for each record's canonical JSON.
    scratch: String,
}

impl Checker {
    fn new(unit: &'static str) -> Checker {
        Checker {
            unit,
            links: Vec::new(),
            newest: None,
            proof: ExportVerifier::new(unit),
            scratch: String::with_capacity(1024),
        }
    }

    fn place(&self, at: u64, seq: Option<u64>) -> String {
        match seq {
            Some(seq) => format!("{} {at} (seq {seq})", self.unit),
            None => format!("{} {at}", self.unit),
        }
    }

    fn push(&mut self, at: u64, r: &AuditRecord) -> Result<(), VerifyError> {
        let (seq, leaf) =
            check_record_leaf(r).map_err(|reason| broken(self.place(at, r.seq), reason))?;
        let bytes = |h: &Option<String>| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h.as_deref().unwrap_or_default(), &mut out)
                .expect("check_record saw 64 hex digits");
            out
        };
        let checked = CheckedLeaf {
            seq,
            leaf,
            prev_hash: bytes(&r.prev_hash),
            hash: bytes(&r.hash),
        };
        self.push_checked(at, checked, &r.org_id, r.time, r.id())
    }

    /// Checks an NDJSON line through its borrowed view when the view is sure of the answer
    /// ([`check_view_leaf`]), else as an `AuditRecord`: the same checks, the same errors,
    /// without building the record for the lines that hold.
    fn push_line(&mut self, at: u64, line: &str) -> Result<(), VerifyError> {
        if let Ok(view) = serde_json::from_str::<RecordView>(line)
            && let Some(time) = stored_time(&view.time)
            && let Some(checked) = check_view_leaf(&view, &mut self.scratch)
        {
            let id = view.id.as_deref().unwrap_or_default();
            return self.push_checked(at, checked, &view.org_id, time, id);
        }
        let record: AuditRecord = serde_json::from_str(line)
            .map_err(|e| broken(format!("line {at}"), format!("not an audit record: {e}")))?;
        self.push(at, &record)
    }

    /// The checks after a record's own: its place in the proof, its order, its links.
    fn push_checked(
        &mut self,
        at: u64,
        checked: CheckedLeaf,
        org: &str,
        time: chrono::DateTime<chrono::Utc>,
        id: &str,
    ) -> Result<(), VerifyError> {
        let seq = checked.seq;
        self.proof.push(at, seq, checked.leaf, org)?;
        if let Some((before_time, before_id)) = &self.newest
            && (time, id) >= (*before_time, before_id.as_str())
        {
            return Err(broken(
                self.place(at, Some(seq)),
                "out of order: not older than the record before it (exports list newest first); \
                 records were moved or repeated",
            ));
        }
        match &mut self.newest {
            Some((t, i)) => {
                *t = time;
                i.clear();
                i.push_str(id);
            }
            None => self.newest = Some((time, id.to_string())),
        }
        self.links.push(Link {
            seq,
            prev: checked.prev_hash,
            hash: checked.hash,
            at,
        });
        Ok(())
    }

    /// The chain checks, then, for an export with proof, the proof's.
    fn finish(
        self,
        bundle: Option<ProofBundle>,
        opts: &VerifyOptions,
    ) -> Result<Verified, VerifyError> {
        match bundle {
            None if opts.key.is_some() => Err(broken(
                "proof",
                "the file carries no proof (no signed manifest or tree head), so nothing in it \
                 can be checked with the public key: it is an export without proof, or its \
                 proof was removed (without --public-key its hash chain alone is checked)",
            )),
            None => Ok(Verified::Chain(chain(
                self.links,
                self.unit,
                opts.allow_gaps,
            )?)),
            Some(bundle) => {
                if opts.allow_gaps {
                    return Err(VerifyError::Input(
                        "--allow-gaps is only for exports without proof; this export proves \
                         its gaps: verify it without the flag"
                            .into(),
                    ));
                }
                // The links between consecutive records still hold; gaps are the proof's.
                chain(self.links, self.unit, true)?;
                let proven = self.proof.finish(&bundle, opts.key.as_ref(), None)?;
                Ok(Verified::Proven(Box::new(proven)))
            }
        }
    }
}

/// The link check: sorted by `seq`, no number twice, each `prev_hash` the hash before it, and
/// (unless `allow_gaps`) no number missing.
fn chain(mut links: Vec<Link>, unit: &str, allow_gaps: bool) -> Result<VerifyReport, VerifyError> {
    let place = |at: u64, seq: u64| format!("{unit} {at} (seq {seq})");
    links.sort_unstable_by_key(|l| l.seq);
    let mut missing = 0;
    for pair in links.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let here = place(b.at, b.seq);
        if a.seq == b.seq {
            return Err(broken(
                here,
                format!("seq {} appears twice (also at {unit} {})", b.seq, a.at),
            ));
        }
        if b.seq == a.seq + 1 {
            if b.prev != a.hash {
                return Err(broken(
                    here,
                    format!(
                        "prev_hash is not the hash of seq {} ({unit} {}): a record was changed, \
                         replaced or inserted",
                        a.seq, a.at
                    ),
                ));
            }
        } else if allow_gaps {
            missing += b.seq - a.seq - 1;
        } else {
            let gap = if b.seq == a.seq + 2 {
                format!("seq {} is missing", a.seq + 1)
            } else {
                format!("seqs {} to {} are missing", a.seq + 1, b.seq - 1)
            };
            return Err(broken(
                here,
                format!(
                    "{gap} (after seq {} at {unit} {}): records were deleted \
                     (for an export made with filters, or after retention deleted a late \
                     arrival, use --allow-gaps)",
                    a.seq, a.at
                ),
            ));
        }
    }
    let last = links.last();
    let unchecked_prev_hash = links
        .first()
        .filter(|l| l.seq > 1)
        .map(|l| hex::encode(l.prev));
    Ok(VerifyReport {
        unchecked_prev_hash,
        records: links.len() as u64,
        first_seq: links.first().map(|l| l.seq),
        last_seq: last.map(|l| l.seq),
        last_hash: last.map(|l| hex::encode(l.hash)),
        missing,
    })
}

/// The sidecar of a bytes-only export (CSV, OCSF, ECS): `FILE.proof.json`.
pub fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".proof.json");
    PathBuf::from(name)
}

/// Verifies the export in `path`: a JSON or NDJSON export, or a bytes-only one (CSV) that has
/// its sidecar `FILE.proof.json` beside it.
pub fn verify_file(path: &Path, opts: &VerifyOptions) -> Result<Verified, VerifyError> {
    let sidecar = sidecar_path(path);
    if sidecar.exists() {
        return verify_bytes(path, &sidecar, opts);
    }
    let file = std::fs::File::open(path).map_err(VerifyError::Read)?;
    verify(std::io::BufReader::with_capacity(256 * 1024, file), opts)
}

/// Verifies a bytes-only export against its sidecar: the file's SHA-256 is the one the signed
/// manifest binds, and the rows' `seq`s and leaf hashes the sidecar lists prove against the
/// signed head. (The rows' content cannot recompute leaf hashes: that a row is the record
/// its leaf hashes rests on the manifest's signature over the bytes.)
pub fn verify_bytes(
    path: &Path,
    sidecar: &Path,
    opts: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    use sha2::{Digest, Sha256};
    let text = std::fs::read_to_string(sidecar).map_err(VerifyError::Read)?;
    let bundle: ProofBundle = serde_json::from_str(&text).map_err(|e| {
        broken(
            sidecar.display().to_string(),
            format!("not an export proof: {e}"),
        )
    })?;
    let mut file = std::fs::File::open(path).map_err(VerifyError::Read)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(VerifyError::Read)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let sha: Hash = h.finalize().into();
    let rows = bundle.proof.rows.as_deref().ok_or_else(|| {
        broken(
            "proof.rows",
            "missing: a sidecar lists each row's seq and leaf hash",
        )
    })?;
    let manifest_org = manifest_org(&bundle)?;
    let mut v = ExportVerifier::new("row");
    for (i, r) in rows.iter().enumerate() {
        let leaf = codestax_common::export_proof::from_b64(&r.leaf_hash).ok_or_else(|| {
            broken(
                format!("proof.rows[{i}] (seq {})", r.seq),
                "leaf_hash is not a base64 SHA-256 hash",
            )
        })?;
        v.push(i as u64 + 1, r.seq, leaf, &manifest_org)?;
    }
    let proven = v.finish(&bundle, opts.key.as_ref(), Some(sha))?;
    Ok(Verified::Proven(Box::new(proven)))
}

/// The org a bundle's manifest names (read before its signature is checked; the check follows).
fn manifest_org(bundle: &ProofBundle) -> Result<String, VerifyError> {
    let text = bundle
        .manifest
        .rfind("\n\n")
        .map(|i| &bundle.manifest[..i + 1])
        .ok_or_else(|| broken("manifest", "not a signed note"))?;
    codestax_common::export_proof::Manifest::parse(text)
        .map(|m| m.org)
        .map_err(|e| broken("manifest", e.to_string()))
}

/// Verifies an export read from `input` (a JSON array or object, or NDJSON).
pub fn verify(mut input: impl BufRead, opts: &VerifyOptions) -> Result<Verified, VerifyError> {
    // Blank lines skipped before the first byte, to keep line numbers right.
    let mut skipped_lines = 0;
    let first = loop {
        let buf = input.fill_buf().map_err(VerifyError::Read)?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                // `{"format"` opens an export object (format 2); any other `{` an NDJSON line.
                let rest = &buf[i..];
                let object = rest.first() == Some(&b'{')
                    && rest[1..]
                        .iter()
                        .skip_while(|b| b.is_ascii_whitespace())
                        .take(8)
                        .eq(b"\"format\"".iter());
                break Some(if object { b'o' } else { buf[i] });
            }
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                skipped_lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
                input.consume(n);
            }
        }
    };
    match first {
        None => Checker::new("line").finish(None, opts),
        Some(b'[') => verify_json(input, opts),
        Some(b'o') => verify_json_object(input, opts),
        Some(b'{') => verify_ndjson(input, skipped_lines, opts),
        Some(_) => Err(VerifyError::Input(
            "not a JSON or NDJSON export; a CSV export is verified with its proof file \
             (FILE.proof.json, written beside it by `codestax export`), else export with \
             --format ndjson (or json)"
                .into(),
        )),
    }
}

/// The last line of an NDJSON export with proof.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofLine {
    codestax_proof: ProofBundle,
}

fn verify_ndjson(
    input: impl BufRead,
    skipped_lines: u64,
    opts: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let mut checker = Checker::new("line");
    let mut bundle: Option<(u64, ProofBundle)> = None;
    let marker = format!("{{\"{NDJSON_PROOF_KEY}\"");
    for (i, line) in input.lines().enumerate() {
        let at = skipped_lines + i as u64 + 1;
        let line = line.map_err(VerifyError::Read)?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some((proof_at, _)) = &bundle {
            return Err(broken(
                format!("line {at}"),
                format!(
                    "a line after the proof (line {proof_at}): records were added after the end"
                ),
            ));
        }
        if line.starts_with(&marker) {
            let p: ProofLine = serde_json::from_str(&line)
                .map_err(|e| broken(format!("line {at}"), format!("not a proof line: {e}")))?;
            bundle = Some((at, p.codestax_proof));
            continue;
        }
        checker.push_line(at, &line)?;
    }
    checker.finish(bundle.map(|b| b.1), opts)
}

/// Feeds each element of a records array to the checker as it is parsed.
struct Each<'a> {
    checker: &'a mut Checker,
    failed: &'a mut Option<VerifyError>,
}

impl<'de> Visitor<'de> for Each<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of audit records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut at = 0u64;
        loop {
            at += 1;
            let record = match seq.next_element::<AuditRecord>() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => {
                    *self.failed = Some(broken(
                        format!("record {at}"),
                        format!("not an audit record: {e}"),
                    ));
                    return Err(A::Error::custom("stopped"));
                }
            };
            if let Err(e) = self.checker.push(at, &record) {
                *self.failed = Some(e);
                return Err(A::Error::custom("stopped"));
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Each<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

fn verify_json(input: impl BufRead, opts: &VerifyOptions) -> Result<Verified, VerifyError> {
    let mut checker = Checker::new("record");
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_reader(input);
    let result = serde::Deserializer::deserialize_seq(
        &mut de,
        Each {
            checker: &mut checker,
            failed: &mut failed,
        },
    )
    .and_then(|()| de.end());
    if let Some(e) = failed {
        return Err(e);
    }
    result.map_err(|e| VerifyError::Input(format!("not a JSON array of records: {e}")))?;
    checker.finish(None, opts)
}

/// A JSON export with proof: `{"format", "records": [...], "manifest", "proof"}`.
fn verify_json_object(input: impl BufRead, opts: &VerifyOptions) -> Result<Verified, VerifyError> {
    struct Object<'a> {
        checker: &'a mut Checker,
        failed: &'a mut Option<VerifyError>,
    }
    type Parts = (Option<String>, Option<String>, Option<Proof>);
    impl<'de> Visitor<'de> for Object<'_> {
        type Value = Parts;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an export object: format, records, manifest, proof")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts, A::Error> {
            let (mut format, mut manifest, mut proof) = (None, None, None);
            let mut records = false;
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "format" => format = Some(map.next_value::<String>()?),
                    "records" if !records => {
                        records = true;
                        map.next_value_seed(Each {
                            checker: &mut *self.checker,
                            failed: &mut *self.failed,
                        })?
                    }
                    "manifest" => manifest = Some(map.next_value::<String>()?),
                    "proof" => proof = Some(map.next_value::<Proof>()?),
                    other => {
                        return Err(A::Error::custom(format!(
                            "unknown or repeated key {other:?}"
                        )));
                    }
                }
            }
            if !records {
                return Err(A::Error::custom("no records"));
            }
            Ok((format, manifest, proof))
        }
    }
    let mut checker = Checker::new("record");
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_reader(input);
    let result = serde::Deserializer::deserialize_map(
        &mut de,
        Object {
            checker: &mut checker,
            failed: &mut failed,
        },
    )
    .and_then(|parts| de.end().map(|()| parts));
    if let Some(e) = failed {
        return Err(e);
    }
    let (format, manifest, proof) =
        result.map_err(|e| VerifyError::Input(format!("not a JSON export object: {e}")))?;
    let (Some(format), Some(manifest), Some(proof)) = (format, manifest, proof) else {
        return Err(broken(
            "proof",
            "the export object lacks its format, manifest or proof: the proof was removed",
        ));
    };
    if format != FORMAT {
        return Err(broken("format", format!("{format:?} is not {FORMAT:?}")));
    }
    checker.finish(
        Some(ProofBundle {
            format,
            manifest,
            proof,
        }),
        opts,
    )
}

/// The signed tree head an earlier export (or a saved checkpoint) stands on, for `--since`:
/// an export with proof (JSON, NDJSON, a `.proof.json` sidecar), the JSON of
/// `GET …/audit-log/checkpoint`, or the checkpoint's signed note itself.
pub fn earlier_head(path: &Path) -> Result<String, VerifyError> {
    let text = std::fs::read_to_string(path).map_err(VerifyError::Read)?;
    let place = path.display().to_string();
    let from_value = |v: &serde_json::Value| -> Option<String> {
        v.get("codestax_proof")
            .and_then(|p| p.pointer("/proof/checkpoint"))
            .or_else(|| v.pointer("/proof/checkpoint"))
            .or_else(|| v.get("checkpoint"))
            .and_then(|c| c.as_str())
            .map(str::to_string)
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        // A JSON object (export, sidecar, checkpoint answer), or NDJSON whose last line holds it.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(c) = from_value(&v)
        {
            return Ok(c);
        }
        if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty())
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(last)
            && let Some(c) = from_value(&v)
        {
            return Ok(c);
        }
        return Err(broken(
            place,
            "holds no signed tree head: not an export with proof, a proof file or a checkpoint",
        ));
    }
    Ok(text)
}

/// What `--since` proved: the log only grew between two signed heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    pub from: Checkpoint,
    pub to: Checkpoint,
}

impl fmt::Display for Growth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = |c: &Checkpoint| {
            c.time
                .map(|t| format!(" (signed {})", codestax_common::time::format_rfc3339(&t)))
                .unwrap_or_default()
        };
        if self.from.size == self.to.size {
            write!(
                f,
                "and the log is the one of the earlier head: tree size {}{}, same root",
                self.to.size,
                when(&self.from)
            )
        } else {
            write!(
                f,
                "and the log only grew: tree size {}{} is a prefix of tree size {}{} \
                 (RFC 9162 consistency proof)",
                self.from.size,
                when(&self.from),
                self.to.size,
                when(&self.to)
            )
        }
    }
}

/// Checks that the head `to` extends the earlier signed head `earlier` (its note, opened with
/// `key`): equal sizes need equal roots; otherwise `fetch(from, to)` gives the consistency proof
/// (from the collector: it is checked against the two signed roots, so it need not be trusted).
pub fn check_growth(
    earlier: &str,
    to: &Checkpoint,
    key: Option<&VerifierKey>,
    fetch: impl FnOnce(u64, u64) -> Result<Vec<String>, String>,
) -> Result<Growth, VerifyError> {
    let text = match key {
        Some(k) => codestax_common::note::open(earlier, k)
            .map(str::to_string)
            .map_err(|e| broken("--since", e.to_string()))?,
        None => earlier
            .rfind("\n\n")
            .map(|i| earlier[..i + 1].to_string())
            .ok_or_else(|| broken("--since", "not a signed note"))?,
    };
    let from = Checkpoint::parse(&text).map_err(|e| broken("--since", e.to_string()))?;
    if from.origin != to.origin {
        return Err(broken(
            "--since",
            format!(
                "the earlier head is of log {:?}, this export's of {:?}",
                from.origin, to.origin
            ),
        ));
    }
    if from.size > to.size {
        return Err(broken(
            "--since",
            format!(
                "the earlier head has {} records, more than this export's head ({}): this \
                 export is older, or the log lost records",
                from.size, to.size
            ),
        ));
    }
    if from.size == to.size {
        if from.root != to.root {
            return Err(broken(
                "--since",
                format!(
                    "two heads of size {} with different roots: the log was rewritten",
                    to.size
                ),
            ));
        }
        return Ok(Growth {
            from,
            to: to.clone(),
        });
    }
    let hashes = fetch(from.size, to.size).map_err(|e| broken("--since", e))?;
    let mut proof = Vec::with_capacity(hashes.len());
    for h in &hashes {
        proof.push(
            codestax_common::export_proof::from_hex(h)
                .ok_or_else(|| broken("--since", "the consistency proof is not hex hashes"))?,
        );
    }
    codestax_common::merkle::verify_consistency(from.size, to.size, &from.root, &to.root, &proof)
        .map_err(|e| {
        broken(
            "--since",
            format!(
                "tree size {} does not extend the earlier head of size {}: {e}: the log was \
                     rewritten",
                to.size, from.size
            ),
        )
    })?;
    Ok(Growth {
        from,
        to: to.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::chain::{ChainHead, Unsealed};
    use serde_json::json;

    /// `n` chained records, newest first (as exported), with times that do not follow seq.
    fn export(n: usize) -> Vec<AuditRecord> {
        let mut head = ChainHead::genesis();
        let mut out: Vec<AuditRecord> = (0..n)
            .map(|i| {
                // Times zig-zag: the order of seq is not the order of time.
                let minute = (i * 7) % n;
                let r: AuditRecord = serde_json::from_value(json!({
                    "id": format!("e{i}"), "org_id": "acme",
                    "time": format!("2026-11-27T10:{minute:02}:00Z"),
                    "actor": {"id": "u1", "email": "ada@acme.example"},
                    "action": "scan.triggered", "category": "scan",
                    "received_at": "2026-11-27T11:00:00Z"
                }))
                .unwrap();
                let seq = head.seq + 1;
                let sealed = Unsealed::new(&r).seal(seq, &head.hash);
                head = ChainHead {
                    seq,
                    hash: sealed.hash.clone(),
                };
                serde_json::from_str(&sealed.json).unwrap()
            })
            .collect();
        out.sort_by(|a, b| (b.time, b.id()).cmp(&(a.time, a.id())));
        out
    }

    fn ndjson(records: &[AuditRecord]) -> String {
        records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    }

    fn check(text: &str) -> Result<VerifyReport, VerifyError> {
        match verify(text.as_bytes(), &VerifyOptions::default())? {
            Verified::Chain(r) => Ok(r),
            Verified::Proven(p) => panic!("no proof here: {p}"),
        }
    }

    #[test]
    fn untouched_exports_verify_in_both_formats() {
        let records = export(10);
        let ok = check(&ndjson(&records)).unwrap();
        assert_eq!(
            (ok.records, ok.first_seq, ok.last_seq),
            (10, Some(1), Some(10))
        );
        let json = serde_json::to_string_pretty(&records).unwrap();
        assert_eq!(check(&json).unwrap(), ok);
        assert_eq!(check("").unwrap().records, 0);
        assert_eq!(check("[]").unwrap().records, 0);
        assert!(
            ok.to_string()
                .starts_with("ok: 10 records, seq 1 to 10, no gaps")
        );
    }

    #[test]
    fn an_export_after_retention_verifies_and_says_what_it_cannot_check() {
        let records = export(10);
        // Retention deleted seqs 1 to 3: the file starts at 4.
        let left: Vec<AuditRecord> = records
            .iter()
            .filter(|r| r.seq.unwrap() > 3)
            .cloned()
            .collect();
        let ok = check(&ndjson(&left)).unwrap();
        assert_eq!(
            (ok.records, ok.first_seq, ok.last_seq),
            (7, Some(4), Some(10))
        );
        let third = records.iter().find(|r| r.seq == Some(3)).unwrap();
        assert_eq!(ok.unchecked_prev_hash, third.hash);
        let summary = ok.to_string();
        assert!(
            summary.starts_with("ok: 7 records, seq 4 to 10, no gaps")
                && summary.contains("the prev_hash of seq 4 is not checked")
                && summary.ends_with(third.hash.as_deref().unwrap()),
            "{summary}"
        );
        // The other checks are as strict: a changed first record, or a link after it.
        let mut changed = left.clone();
        let at = changed.iter().position(|r| r.seq == Some(4)).unwrap();
        changed[at].prev_hash = Some("1".repeat(64));
        let e = check(&ndjson(&changed)).unwrap_err().to_string();
        assert!(
            e.contains("(seq 4)") && e.contains("does not match its hash"),
            "{e}"
        );
        let mut gap = left.clone();
        gap.retain(|r| r.seq != Some(7));
        let e = check(&ndjson(&gap)).unwrap_err().to_string();
        assert!(
            e.contains("seq 7 is missing") && e.contains("retention"),
            "{e}"
        );
        // A complete chain says nothing of the kind.
        assert!(
            !check(&ndjson(&records))
                .unwrap()
                .to_string()
                .contains("not checked")
        );
    }

    #[test]
    fn tampering_is_named() {
        let records = export(10);
        let line_of = |seq: u64| records.iter().position(|r| r.seq == Some(seq)).unwrap();

        let mut changed = records.clone();
        changed[line_of(4)].actor.email = Some("eve@acme.example".into());
        let e = check(&ndjson(&changed)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("line {} (seq 4): ", line_of(4) + 1)),
            "{e}"
        );
        assert!(e.contains("does not match its hash"), "{e}");

        let mut deleted = records.clone();
        deleted.remove(line_of(6));
        let e = check(&ndjson(&deleted)).unwrap_err().to_string();
        assert!(e.contains("seq 6 is missing"), "{e}");
        let gaps = verify(
            ndjson(&deleted).as_bytes(),
            &VerifyOptions {
                allow_gaps: true,
                key: None,
            },
        )
        .unwrap();
        let Verified::Chain(gaps) = gaps else {
            panic!("no proof")
        };
        assert_eq!(gaps.missing, 1);

        let mut swapped = records.clone();
        swapped.swap(2, 3);
        let e = check(&ndjson(&swapped)).unwrap_err().to_string();
        assert!(
            e.starts_with("line 4 ") && e.contains("out of order"),
            "{e}"
        );

        let mut doubled = records.clone();
        doubled.insert(1, records[1].clone());
        assert!(check(&ndjson(&doubled)).is_err());

        // A record replaced by another with a valid hash of its own: the link names it.
        let mut replaced = records.clone();
        let at = line_of(5);
        replaced[at].prev_hash = Some("1".repeat(64));
        replaced[at].hash = Some(codestax_common::chain::record_hash(
            &"1".repeat(64),
            &replaced[at],
        ));
        let e = check(&ndjson(&replaced)).unwrap_err().to_string();
        assert!(
            e.contains("(seq 5): prev_hash is not the hash of seq 4"),
            "{e}"
        );

        let e = check("timestamp,actor_name\n").unwrap_err().to_string();
        assert!(e.contains("CSV"), "{e}");
        let e = check("{\"not\": \"a record\"}\n").unwrap_err().to_string();
        assert!(e.starts_with("line 1: not an audit record"), "{e}");
        let json = serde_json::to_string(&changed).unwrap();
        let e = check(&json).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("record {} (seq 4)", line_of(4) + 1)),
            "{e}"
        );
    }
}
