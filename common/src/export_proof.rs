//! What makes an export verifiable on its own (format `codestax-export/2`): a signed manifest
//! saying what the file answers, the signed tree head of the export's snapshot, a multi-proof of
//! the exported records against it, and — for an unfiltered export — the retention holes inside
//! the exported span. [`ExportVerifier`] checks all of it against a public key given from
//! outside the file.
//!
//! # The manifest
//!
//! A C2SP signed note (same key as the tree heads) whose text is, line by line:
//!
//! ```text
//! codestax-export/2
//! org <org id>
//! encoding <json|ndjson|csv|…>
//! filters <unfiltered | the filters as given, form-urlencoded, keys sorted>
//! retention-cutoff <none | RFC 3339 UTC>
//! head <tree size> <base64 root>
//! records <count> <hex SHA-256 over the records' leaf hashes, in file order>
//! holes <count> <hex SHA-256 over the holes' (seq, leaf hash, time µs), ascending>
//! [file-sha256 <hex>]            (formats whose bytes cannot recompute leaf hashes)
//! created <RFC 3339 UTC>
//! ```
//!
//! Its first line cannot be a checkpoint's second (a number), so a manifest is never mistaken
//! for a tree head or the other way round.
//!
//! # What a verification proves
//!
//! With the collector's key: every record is in the org's log as the signed head says,
//! unchanged, at its `seq` (the multi-proof); the file holds exactly the records the collector
//! answered, in its order (count and digest); for an unfiltered export, every `seq` missing
//! inside the exported span is a record the collector signed as older than the retention
//! cut-off in effect. What it cannot prove: that the filter was applied faithfully (that no
//! record matching it was left out) — that rests on the collector.

use crate::merkle::{self, Hash};
use crate::note::{self, Checkpoint, NoteError, VerifierKey};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The format name of an export that carries its proof.
pub const FORMAT: &str = "codestax-export/2";

/// The key of the last line of an NDJSON export: `{"codestax_proof": ProofBundle}`.
pub const NDJSON_PROOF_KEY: &str = "codestax_proof";

/// What an export carries after its records (a JSON export's `manifest` and `proof`, an NDJSON
/// export's last line, a sidecar file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    pub format: String,
    /// The signed manifest (a signed note).
    pub manifest: String,
    pub proof: Proof,
}

/// The proof material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// The signed tree head (a C2SP checkpoint in a signed note) at the export's snapshot.
    pub checkpoint: String,
    /// The multi-proof ([`merkle::multi_proof`]) of the exported records' and the holes' leaves
    /// against that head, each hash in base64.
    pub multi_proof: Vec<String>,
    /// Records missing inside an unfiltered export's span: deleted (or hidden) by retention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<Hole>,
    /// For formats whose bytes cannot recompute leaf hashes (CSV…): each row's `seq` and leaf
    /// hash, in file order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<RowLeaf>>,
}

/// A record inside an unfiltered export's span that the file does not hold: its leaf hash (so
/// it proves with the others) and its time, which lies before the retention cut-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hole {
    pub seq: u64,
    /// Base64.
    pub leaf_hash: String,
    #[serde(with = "crate::time::micros")]
    pub time: DateTime<Utc>,
}

/// A row of a bytes-only export: its `seq` and leaf hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowLeaf {
    pub seq: u64,
    /// Base64.
    pub leaf_hash: String,
}

/// The manifest's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub org: String,
    /// The export's encoding: `json`, `ndjson`, `csv`, …
    pub encoding: String,
    /// The filters as given (form-urlencoded, keys sorted); `None`: unfiltered.
    pub filters: Option<String>,
    /// Records older than this were hidden from the export (the org's retention window).
    pub retention_cutoff: Option<DateTime<Utc>>,
    pub tree_size: u64,
    pub root: Hash,
    pub records: u64,
    /// SHA-256 over the exported records' leaf hashes, in file order ([`records_digest`]).
    pub digest: Hash,
    pub holes: u64,
    /// [`holes_digest`] of the holes.
    pub holes_digest: Hash,
    /// SHA-256 of the file's bytes, for formats that cannot recompute leaf hashes.
    pub file_sha256: Option<Hash>,
    pub created: DateTime<Utc>,
}

/// Why a manifest's text cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest line {line}: {reason}")]
pub struct ManifestError {
    pub line: usize,
    pub reason: String,
}

impl Manifest {
    /// The note text.
    pub fn text(&self) -> String {
        let time = crate::time::format_rfc3339;
        let mut s = format!("{FORMAT}\norg {}\nencoding {}\n", self.org, self.encoding);
        match &self.filters {
            None => s.push_str("filters unfiltered\n"),
            Some(f) => s.push_str(&format!("filters {f}\n")),
        }
        match &self.retention_cutoff {
            None => s.push_str("retention-cutoff none\n"),
            Some(t) => s.push_str(&format!("retention-cutoff {}\n", time(t))),
        }
        s.push_str(&format!(
            "head {} {}\nrecords {} {}\nholes {} {}\n",
            self.tree_size,
            b64(&self.root),
            self.records,
            hex::encode(self.digest),
            self.holes,
            hex::encode(self.holes_digest)
        ));
        if let Some(h) = &self.file_sha256 {
            s.push_str(&format!("file-sha256 {}\n", hex::encode(h)));
        }
        s.push_str(&format!("created {}\n", time(&self.created)));
        s
    }

    /// Reads a manifest's text (as [`note::open`] returns it); strict: every line in its place.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let body = text.strip_suffix('\n').ok_or(ManifestError {
            line: 0,
            reason: "the text does not end in a newline".into(),
        })?;
        let lines: Vec<&str> = body.split('\n').collect();
        let bad = |line: usize, reason: String| ManifestError { line, reason };
        if lines.first() != Some(&FORMAT) {
            return Err(bad(
                1,
                format!("expected {FORMAT:?}: not an export manifest"),
            ));
        }
        // `at` is the 0-based index of the next line to read.
        let mut at = 1usize;
        let mut take =
            |key: &str, optional: bool| -> Result<Option<(usize, &str)>, ManifestError> {
                let line = lines.get(at).copied();
                let value = line.and_then(|l| l.strip_prefix(key)?.strip_prefix(' '));
                match value {
                    Some(v) => {
                        at += 1;
                        Ok(Some((at, v)))
                    }
                    None if optional => Ok(None),
                    None => Err(bad(
                        at + 1,
                        format!("expected `{key} …`, found {:?}", line.unwrap_or("the end")),
                    )),
                }
            };
        let mut next = |key: &str| take(key, false).map(|v| v.expect("not optional"));
        let (_, org) = next("org")?;
        let (_, encoding) = next("encoding")?;
        let (_, filters) = next("filters")?;
        let (l, cutoff) = next("retention-cutoff")?;
        let retention_cutoff = match cutoff {
            "none" => None,
            t => Some(crate::time::parse_rfc3339(t).map_err(|e| bad(l, e))?),
        };
        let (l, head) = next("head")?;
        let (size, root) = head
            .split_once(' ')
            .ok_or_else(|| bad(l, "expected `head <size> <root>`".into()))?;
        let tree_size = number(size).ok_or_else(|| bad(l, format!("size {size:?}")))?;
        let root = from_b64(root).ok_or_else(|| bad(l, format!("root {root:?}")))?;
        let (l, records) = next("records")?;
        let (records, digest) = count_and_hex(records).ok_or_else(|| {
            bad(
                l,
                format!("expected `records <count> <hex digest>`, found {records:?}"),
            )
        })?;
        let (l, holes) = next("holes")?;
        let (holes, holes_digest) = count_and_hex(holes).ok_or_else(|| {
            bad(
                l,
                format!("expected `holes <count> <hex digest>`, found {holes:?}"),
            )
        })?;
        let file_sha256 = match take("file-sha256", true)? {
            Some((l, h)) => Some(from_hex(h).ok_or_else(|| bad(l, format!("hash {h:?}")))?),
            None => None,
        };
        let (l, created) = take("created", false)?.expect("not optional");
        let created = crate::time::parse_rfc3339(created).map_err(|e| bad(l, e))?;
        if lines.len() > l {
            return Err(bad(l + 1, "unexpected line after `created`".into()));
        }
        if org.is_empty() || encoding.is_empty() || filters.is_empty() {
            return Err(bad(2, "org, encoding and filters must not be empty".into()));
        }
        Ok(Manifest {
            org: org.to_string(),
            encoding: encoding.to_string(),
            filters: (filters != "unfiltered").then(|| filters.to_string()),
            retention_cutoff,
            tree_size,
            root,
            records,
            digest,
            holes,
            holes_digest,
            file_sha256,
            created,
        })
    }
}

/// A hash as the proof writes it: standard base64 (44 characters; hex would take 64).
pub fn b64(h: &Hash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h)
}

/// A 32-byte hash from its standard base64.
pub fn from_b64(s: &str) -> Option<Hash> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()?
        .try_into()
        .ok()
}

/// A 32-byte hash from 64 lowercase hex digits.
pub fn from_hex(s: &str) -> Option<Hash> {
    if !crate::chain::is_hash(s) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn count_and_hex(s: &str) -> Option<(u64, Hash)> {
    let (n, h) = s.split_once(' ')?;
    Some((number(n)?, from_hex(h)?))
}

/// SHA-256 over leaf hashes, in the order given: what binds an export's records and their
/// order.
#[derive(Debug, Clone, Default)]
pub struct RecordsDigest(Sha256);

impl RecordsDigest {
    pub fn push(&mut self, leaf: &Hash) {
        self.0.update(leaf);
    }

    pub fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

/// [`RecordsDigest`] of `leaves`.
pub fn records_digest<'a>(leaves: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut d = RecordsDigest::default();
    for l in leaves {
        d.push(l);
    }
    d.finish()
}

/// SHA-256 over each hole's `seq` (8 bytes, big-endian), leaf hash and time (µs since the epoch,
/// 8 bytes, big-endian), in the order given (ascending `seq`).
pub fn holes_digest(holes: &[(u64, Hash, DateTime<Utc>)]) -> Hash {
    let mut h = Sha256::new();
    for (seq, leaf, time) in holes {
        h.update(seq.to_be_bytes());
        h.update(leaf);
        h.update(time.timestamp_micros().to_be_bytes());
    }
    h.finalize().into()
}

/// What an export verified to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub manifest: Manifest,
    /// Whether the signatures were checked with a key given from outside the file.
    pub signed: bool,
    /// The key the signatures verified with.
    pub key: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// `seq`s of retention holes inside the span (unfiltered exports).
    pub holes: Vec<u64>,
    /// The signed head's checkpoint text (what `--since` compares against).
    pub checkpoint: Checkpoint,
}

impl fmt::Display for Proven {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        let span = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!(", seq {a} to {b}"),
            _ => String::new(),
        };
        match &self.key {
            Some(k) => write!(f, "ok: signed by {k}; ")?,
            None => f.write_str(
                "ok, UNSIGNED CHECK (no --public-key: the signatures were not checked, so this \
                 shows the file is self-consistent, not that the collector made it); ",
            )?,
        }
        write!(
            f,
            "{} records of org {}{span}, every one in the org's log as signed at tree size {} \
             (root {}), unchanged, in the collector's order; ",
            m.records,
            m.org,
            m.tree_size,
            hex::encode(m.root)
        )?;
        match &m.filters {
            None => {
                write!(
                    f,
                    "unfiltered: nothing removed inside the span except {} record(s) retention \
                     explains (older than {})",
                    self.holes.len(),
                    m.retention_cutoff
                        .map(|t| crate::time::format_rfc3339(&t))
                        .unwrap_or_else(|| "no cut-off".into())
                )?;
                if !self.holes.is_empty() {
                    let shown: Vec<String> =
                        self.holes.iter().take(20).map(|s| s.to_string()).collect();
                    write!(f, ": seq {}", shown.join(", "))?;
                    if self.holes.len() > 20 {
                        f.write_str(", …")?;
                    }
                }
            }
            Some(filters) => write!(
                f,
                "filtered by {filters}: that every matching record is here rests on trusting \
                 the collector"
            )?,
        }
        write!(f, "; exported {}", crate::time::format_rfc3339(&m.created))
    }
}

/// A verification that failed: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {reason}")]
pub struct ProofFailure {
    pub place: String,
    pub reason: String,
}

fn fail(place: impl Into<String>, reason: impl Into<String>) -> ProofFailure {
    ProofFailure {
        place: place.into(),
        reason: reason.into(),
    }
}

/// One record of the file as the verifier keeps it (48 bytes).
#[derive(Debug, Clone, Copy)]
struct Kept {
    seq: u64,
    leaf: Hash,
    /// 1-based line (NDJSON) or position (JSON, CSV row).
    at: u64,
}

/// Checks an export against its [`ProofBundle`]: give it each record's `seq`, leaf hash and
/// org in file order ([`ExportVerifier::push`]), then the bundle ([`ExportVerifier::finish`]).
/// The records' own hashes are checked by the caller (`chain::check_record_leaf`).
#[derive(Debug)]
pub struct ExportVerifier {
    /// `line` (NDJSON), `record` (JSON), `row` (CSV).
    unit: &'static str,
    kept: Vec<Kept>,
    digest: RecordsDigest,
    org: Option<(String, u64)>,
}

impl ExportVerifier {
    pub fn new(unit: &'static str) -> ExportVerifier {
        ExportVerifier {
            unit,
            kept: Vec::new(),
            digest: RecordsDigest::default(),
            org: None,
        }
    }

    fn place(&self, at: u64, seq: u64) -> String {
        format!("{} {at} (seq {seq})", self.unit)
    }

    /// Takes in the record at `at` (line or position).
    pub fn push(&mut self, at: u64, seq: u64, leaf: Hash, org: &str) -> Result<(), ProofFailure> {
        match &self.org {
            None => self.org = Some((org.to_string(), at)),
            Some((first, first_at)) if first != org => {
                return Err(fail(
                    self.place(at, seq),
                    format!(
                        "org_id {org:?} differs from {first:?} of {} {first_at}: records of \
                         another org were put in",
                        self.unit
                    ),
                ));
            }
            Some(_) => {}
        }
        self.digest.push(&leaf);
        self.kept.push(Kept { seq, leaf, at });
        Ok(())
    }

    /// Checks the bundle and everything pushed against it. `key`: the collector's public key,
    /// from outside the file (`None` checks the structure only, and [`Proven`] says so).
    /// `file_sha256`: the file's bytes, for bytes-only formats.
    pub fn finish(
        self,
        bundle: &ProofBundle,
        key: Option<&VerifierKey>,
        file_sha256: Option<Hash>,
    ) -> Result<Proven, ProofFailure> {
        if bundle.format != FORMAT {
            return Err(fail(
                "proof.format",
                format!("{:?} is not {FORMAT:?}", bundle.format),
            ));
        }
        // 1. The two signed notes: signatures by the given key only, never one in the file.
        let manifest_text = open(&bundle.manifest, key, "manifest")?;
        let manifest =
            Manifest::parse(&manifest_text).map_err(|e| fail("manifest", e.to_string()))?;
        let head_text = open(&bundle.proof.checkpoint, key, "proof.checkpoint")?;
        let head =
            Checkpoint::parse(&head_text).map_err(|e| fail("proof.checkpoint", e.to_string()))?;
        let want_origin = match key {
            Some(k) => note::origin(k.name(), &manifest.org),
            None => head.origin.clone(),
        };
        if head.origin != want_origin || !head.origin.ends_with(&format!("/orgs/{}", manifest.org))
        {
            return Err(fail(
                "proof.checkpoint",
                format!(
                    "the tree head is of log {:?}, not of org {:?} ({want_origin:?})",
                    head.origin, manifest.org
                ),
            ));
        }
        if (head.size, head.root) != (manifest.tree_size, manifest.root) {
            return Err(fail(
                "manifest",
                format!(
                    "its head (size {}) is not the signed tree head (size {})",
                    manifest.tree_size, head.size
                ),
            ));
        }
        match (&manifest.file_sha256, file_sha256) {
            (Some(want), Some(got)) if *want != got => {
                return Err(fail(
                    "file",
                    format!(
                        "its SHA-256 is {}, the manifest signs {}: the file was changed",
                        hex::encode(got),
                        hex::encode(want)
                    ),
                ));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(fail(
                    "manifest",
                    "it is for another kind of export (file-sha256 present or absent)",
                ));
            }
            _ => {}
        }
        // The records' org.
        if let Some((org, at)) = &self.org
            && *org != manifest.org
        {
            return Err(fail(
                format!("{} {at}", self.unit),
                format!(
                    "org_id {org:?} is not the manifest's org {:?}",
                    manifest.org
                ),
            ));
        }
        // 2. Holes: signed, ascending, inside the span, older than the cut-off.
        let mut holes = Vec::with_capacity(bundle.proof.holes.len());
        for (i, h) in bundle.proof.holes.iter().enumerate() {
            let place = format!("proof.holes[{i}] (seq {})", h.seq);
            let leaf = from_b64(&h.leaf_hash)
                .ok_or_else(|| fail(&place, "leaf_hash is not a base64 SHA-256 hash"))?;
            holes.push((h.seq, leaf, h.time));
        }
        if holes.len() as u64 != manifest.holes || holes_digest(&holes) != manifest.holes_digest {
            return Err(fail(
                "proof.holes",
                format!(
                    "they are not the {} hole(s) the manifest signs: holes were added, removed \
                     or changed",
                    manifest.holes
                ),
            ));
        }
        let mut sorted = self.kept.clone();
        sorted.sort_unstable_by_key(|k| k.seq);
        for pair in sorted.windows(2) {
            if pair[0].seq == pair[1].seq {
                return Err(fail(
                    self.place(pair[1].at, pair[1].seq),
                    format!(
                        "seq {} appears twice (also at {} {})",
                        pair[1].seq, self.unit, pair[0].at
                    ),
                ));
            }
        }
        let (first, last) = (sorted.first().map(|k| k.seq), sorted.last().map(|k| k.seq));
        for (seq, _, time) in &holes {
            let place = format!("proof.holes (seq {seq})");
            if manifest.filters.is_some() {
                return Err(fail(place, "a filtered export has no holes"));
            }
            if first.is_none_or(|f| *seq < f) || last.is_none_or(|l| *seq > l) {
                return Err(fail(place, "outside the exported span"));
            }
            if sorted.binary_search_by_key(seq, |k| k.seq).is_ok() {
                return Err(fail(place, "the file holds this record"));
            }
            if manifest.retention_cutoff.is_none_or(|c| *time >= c) {
                return Err(fail(
                    place,
                    format!(
                        "its time {} is not before the retention cut-off: retention does not \
                         explain it",
                        crate::time::format_rfc3339(time)
                    ),
                ));
            }
        }
        // 3. Unfiltered: the span holds every seq, as a record or a hole.
        if manifest.filters.is_none() {
            let mut h = holes.iter().map(|h| h.0).peekable();
            let mut expect = first.unwrap_or(0);
            for k in &sorted {
                while expect < k.seq {
                    if h.peek() == Some(&expect) {
                        h.next();
                        expect += 1;
                        continue;
                    }
                    // The run of missing seqs that no hole explains, up to the next hole.
                    let end = h.peek().copied().filter(|&s| s < k.seq).unwrap_or(k.seq);
                    let missing = if end == expect + 1 {
                        format!("seq {expect} is missing")
                    } else {
                        format!("seqs {expect} to {} are missing", end - 1)
                    };
                    return Err(fail(
                        self.place(k.at, k.seq),
                        format!(
                            "{missing} before it, and the proof does not name it as a \
                             retention hole: records were deleted from this unfiltered export"
                        ),
                    ));
                }
                expect = k.seq + 1;
            }
        }
        // 4. The records' number and order: what was added, removed or moved anywhere.
        let count = self.kept.len() as u64;
        if count != manifest.records {
            return Err(fail(
                "file",
                format!(
                    "it holds {count} records; the manifest signs {}: records were {}",
                    manifest.records,
                    if count < manifest.records {
                        "removed (or the file was cut short)"
                    } else {
                        "added"
                    }
                ),
            ));
        }
        let digest = self.digest.clone().finish();
        if digest != manifest.digest {
            return Err(fail(
                "file",
                "the records' digest is not the manifest's: records were replaced, added, \
                 removed or reordered",
            ));
        }
        // 5. The multi-proof: the records and the holes are in the signed tree.
        let mut leaves: Vec<(u64, Hash)> = sorted.iter().map(|k| (k.seq, k.leaf)).collect();
        leaves.extend(holes.iter().map(|h| (h.0, h.1)));
        leaves.sort_unstable_by_key(|l| l.0);
        for l in &mut leaves {
            if l.0 == 0 || l.0 > head.size {
                let at = sorted
                    .iter()
                    .find(|k| k.seq == l.0)
                    .map_or_else(|| "proof.holes".to_string(), |k| self.place(k.at, k.seq));
                return Err(fail(
                    at,
                    format!(
                        "seq {} is not in the signed tree of {} records",
                        l.0, head.size
                    ),
                ));
            }
            l.0 -= 1;
        }
        let mut proof = Vec::with_capacity(bundle.proof.multi_proof.len());
        for (i, h) in bundle.proof.multi_proof.iter().enumerate() {
            proof.push(from_b64(h).ok_or_else(|| {
                fail(
                    format!("proof.multi_proof[{i}]"),
                    "not a base64 SHA-256 hash",
                )
            })?);
        }
        let root = merkle::root_from_multi_proof(head.size, &leaves, &proof)
            .map_err(|e| fail("proof.multi_proof", e.to_string()))?;
        if root != head.root {
            return Err(fail(
                "proof.multi_proof",
                "the records' leaf hashes do not lead to the signed root: a record is not in \
                 the org's log as signed (changed, forged, or the proof or head was altered)",
            ));
        }
        Ok(Proven {
            signed: key.is_some(),
            key: key.map(|k| k.to_string()),
            first_seq: first,
            last_seq: last,
            holes: holes.iter().map(|h| h.0).collect(),
            checkpoint: head,
            manifest,
        })
    }
}

/// The text of a signed note, its signature checked with `key` (or, without a key, just read).
fn open(signed: &str, key: Option<&VerifierKey>, place: &str) -> Result<String, ProofFailure> {
    match key {
        Some(k) => note::open(signed, k)
            .map(str::to_string)
            .map_err(|e| fail(place, e.to_string())),
        None => signed
            .rfind("\n\n")
            .map(|i| signed[..i + 1].to_string())
            .ok_or_else(|| {
                fail(
                    place,
                    NoteError::Malformed("no blank line".into()).to_string(),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{Leaves, leaf_hash, multi_proof};
    use crate::note::NoteSigner;

    fn manifest() -> Manifest {
        Manifest {
            org: "acme".into(),
            encoding: "ndjson".into(),
            filters: None,
            retention_cutoff: Some(crate::time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap()),
            tree_size: 10,
            root: [7; 32],
            records: 3,
            digest: [1; 32],
            holes: 0,
            holes_digest: holes_digest(&[]),
            file_sha256: None,
            created: crate::time::parse_rfc3339("2026-12-03T10:00:00.5Z").unwrap(),
        }
    }

    #[test]
    fn manifest_text_round_trips_and_is_strict() {
        let mut m = manifest();
        assert_eq!(Manifest::parse(&m.text()).unwrap(), m);
        m.filters = Some("action=scan.triggered&since=7d".into());
        m.file_sha256 = Some([9; 32]);
        m.retention_cutoff = None;
        assert_eq!(Manifest::parse(&m.text()).unwrap(), m);
        let text = m.text();
        for (bad, line) in [
            (text.replace("org acme", "org"), 2),
            (text.replace("records 3", "records 03"), 7),
            (text.replace("head 10", "head ten"), 6),
            (format!("{text}extra\n"), 11),
            (text.replace("codestax-export/2", "codestax-export/3"), 1),
        ] {
            let e = Manifest::parse(&bad).unwrap_err();
            assert_eq!(e.line, line, "{bad:?}: {e}");
        }
    }

    /// A tree of `n` leaves, a verifier key, and a bundle over the leaves `seqs`.
    fn bundle_for(
        n: u64,
        seqs: &[u64],
        holes: &[(u64, DateTime<Utc>)],
        signer: &NoteSigner,
    ) -> (Vec<Hash>, ProofBundle) {
        let leaves: Vec<Hash> = (1..=n).map(|s| leaf_hash(&s.to_be_bytes())).collect();
        let root = merkle::root(&mut Leaves(&leaves), n).unwrap();
        let head = Checkpoint {
            origin: note::origin(signer.name(), "acme"),
            size: n,
            root,
            time: None,
        };
        let mut all: Vec<u64> = seqs
            .iter()
            .chain(holes.iter().map(|h| &h.0))
            .copied()
            .collect();
        all.sort();
        let idx: Vec<u64> = all.iter().map(|s| s - 1).collect();
        let proof = multi_proof(&mut Leaves(&leaves), n, &idx).unwrap().unwrap();
        let hole_list: Vec<(u64, Hash, DateTime<Utc>)> = holes
            .iter()
            .map(|(s, t)| (*s, leaves[*s as usize - 1], *t))
            .collect();
        let mut m = manifest();
        m.tree_size = n;
        m.root = root;
        m.records = seqs.len() as u64;
        m.digest = records_digest(seqs.iter().map(|s| &leaves[*s as usize - 1]));
        m.holes = holes.len() as u64;
        m.holes_digest = holes_digest(&hole_list);
        let bundle = ProofBundle {
            format: FORMAT.into(),
            manifest: signer.sign(&m.text()).unwrap(),
            proof: Proof {
                checkpoint: signer.sign(&head.text()).unwrap(),
                multi_proof: proof.iter().map(b64).collect(),
                holes: hole_list
                    .iter()
                    .map(|(s, l, t)| Hole {
                        seq: *s,
                        leaf_hash: b64(l),
                        time: *t,
                    })
                    .collect(),
                rows: None,
            },
        };
        (leaves, bundle)
    }

    fn run(
        leaves: &[Hash],
        file: &[u64],
        bundle: &ProofBundle,
        key: &VerifierKey,
    ) -> Result<Proven, ProofFailure> {
        let mut v = ExportVerifier::new("line");
        for (i, s) in file.iter().enumerate() {
            v.push(i as u64 + 1, *s, leaves[*s as usize - 1], "acme")?;
        }
        v.finish(bundle, Some(key), None)
    }

    #[test]
    fn a_bundle_proves_its_records_and_catches_each_change() {
        let signer = NoteSigner::new("test-collector", [3; 32]).unwrap();
        let key = signer.verifier();
        let old = crate::time::parse_rfc3339("2025-06-01T00:00:00Z").unwrap();
        let file = [9, 8, 6, 5, 4];
        let (leaves, bundle) = bundle_for(12, &file, &[(7, old)], &signer);
        let ok = run(&leaves, &file, &bundle, &key).unwrap();
        assert_eq!(
            (ok.first_seq, ok.last_seq, ok.holes.clone()),
            (Some(4), Some(9), vec![7])
        );
        assert!(ok.to_string().contains("seq 7"), "{ok}");

        let e = run(&leaves, &[9, 8, 5, 4], &bundle, &key).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 2 (seq 8): seq 6 is missing"),
            "{e}"
        );
        let e = run(&leaves, &[8, 6, 5, 4], &bundle, &key).unwrap_err();
        assert!(e.to_string().contains("holds 4 records"), "{e}");
        let e = run(&leaves, &[9, 6, 8, 5, 4], &bundle, &key).unwrap_err();
        assert!(e.to_string().contains("digest"), "{e}");
        let other = NoteSigner::new("test-collector", [4; 32]).unwrap();
        let e = run(&leaves, &file, &bundle, &other.verifier()).unwrap_err();
        assert!(
            e.place == "manifest" && e.reason.contains("no signature"),
            "{e}"
        );
        // A hole whose time is not before the cut-off is refused.
        let late = crate::time::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        let (leaves, bundle) = bundle_for(12, &file, &[(7, late)], &signer);
        let e = run(&leaves, &file, &bundle, &key).unwrap_err();
        assert!(
            e.place.contains("seq 7") && e.reason.contains("cut-off"),
            "{e}"
        );
        // A missing record with no hole is named.
        let (leaves, bundle) = bundle_for(12, &[9, 8, 5, 4], &[], &signer);
        let e = run(&leaves, &[9, 8, 5, 4], &bundle, &key).unwrap_err();
        assert!(
            e.place == "line 2 (seq 8)" && e.reason.starts_with("seqs 6 to 7 are missing"),
            "{e}"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn time() -> impl Strategy<Value = DateTime<Utc>> {
            (0i64..4_000_000_000_000_000)
                .prop_map(|us| DateTime::from_timestamp_micros(us).unwrap())
        }

        prop_compose! {
            fn manifests()(
                org in "[a-z0-9-]{1,20}",
                encoding in "[a-z]{1,8}",
                filters in proptest::option::of("[!-~]{1,40}"),
                cutoff in proptest::option::of(time()),
                tree_size: u64, root: [u8; 32], records: u64, digest: [u8; 32],
                holes: u64, holes_digest: [u8; 32],
                file_sha256 in proptest::option::of(any::<[u8; 32]>()),
                created in time(),
            ) -> Manifest {
                Manifest {
                    org, encoding,
                    filters: filters.filter(|f| f != "unfiltered"),
                    retention_cutoff: cutoff, tree_size, root, records, digest, holes, holes_digest,
                    file_sha256, created,
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn manifests_round_trip(m in manifests()) {
                prop_assert_eq!(Manifest::parse(&m.text()).unwrap(), m);
            }

            /// Outside bytes: any text, or a manifest with a byte changed, is read or refused,
            /// never a panic; what is read writes back to the same text.
            #[test]
            fn manifest_parser_takes_any_bytes(m in manifests(), at: usize, byte: u8, junk in ".{0,200}") {
                let _ = Manifest::parse(&junk);
                let mut bytes = m.text().into_bytes();
                let i = at % bytes.len();
                bytes[i] = byte;
                if let Ok(text) = String::from_utf8(bytes) {
                    let _ = Manifest::parse(&text);
                }
            }

            /// A bundle with any byte of its JSON changed is refused or read; read, it never
            /// verifies unless the change left its meaning whole, and never panics.
            #[test]
            fn bundles_with_a_byte_changed_never_verify_wrongly(at: usize, byte: u8) {
                let signer = NoteSigner::new("test-collector", [3; 32]).unwrap();
                let file = [9u64, 8, 6, 5, 4];
                let old = crate::time::parse_rfc3339("2025-06-01T00:00:00Z").unwrap();
                let (leaves, bundle) = bundle_for(12, &file, &[(7, old)], &signer);
                let mut json = serde_json::to_vec(&bundle).unwrap();
                let i = at % json.len();
                json[i] = byte;
                if let Ok(b) = serde_json::from_slice::<ProofBundle>(&json) {
                    let verified = run(&leaves, &file, &b, &signer.verifier());
                    if verified.is_ok() {
                        // Only a change that leaves every signed and proven value whole passes.
                        prop_assert_eq!(&b.manifest, &bundle.manifest);
                        prop_assert_eq!(&b.proof.checkpoint, &bundle.proof.checkpoint);
                        prop_assert_eq!(&b.proof.multi_proof, &bundle.proof.multi_proof);
                    }
                }
            }
        }
    }
}
