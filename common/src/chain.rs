//! The per-org hash chain that makes an audit log tamper-evident.
//!
//! The collector numbers the records it stores for an org `1, 2, 3, ...` (`seq`, in the order it
//! stores them, without gaps) and links each to the one before it:
//!
//! ```text
//! hash = lowercase_hex(SHA-256(prev_hash ‖ "\n" ‖ canonical_json(record)))
//! ```
//!
//! - `prev_hash` is the `hash` of the org's record at `seq - 1` as 64 lowercase hex digits, or
//!   [`GENESIS_HASH`] (64 zeros) for `seq` 1 — or the hash of a retention checkpoint's record;
//! - `canonical_json(record)` is [`AuditRecord::canonical_json`] (object keys in byte order, no
//!   whitespace) of the record **with `seq` set and `prev_hash` and `hash` absent**;
//! - `‖` is concatenation of UTF-8 bytes.
//!
//! [`record_hash`] is that definition, and the only one: the collector ([`Unsealed`], its fast
//! path, is tested against it), the verify endpoint and `codestax verify` all use it. Changing
//! any field of a record breaks its own hash; deleting, inserting or reordering records breaks
//! a `seq` or a `prev_hash` link.
//!
//! # The record as a Merkle leaf
//!
//! Each org's records are also the leaves of a Merkle tree ([`crate::merkle`]), leaf `seq - 1`
//! being the record with that `seq`. A record's **leaf bytes** are exactly the bytes its `hash`
//! is the SHA-256 of — `prev_hash ‖ "\n" ‖ canonical_json(record)` as above — so its leaf hash
//! ([`record_leaf_hash`]) is `SHA-256(0x00 ‖ prev_hash ‖ "\n" ‖ canonical_json(record))`. A leaf
//! thus binds every field of the record, `seq` and `prev_hash` included (and `hash`, which they
//! determine), and is computed from the record alone.

use crate::canonical::{ChainFields, write_record, write_string};
use crate::merkle::Hash;
use crate::record::AuditRecord;
use crate::record_view::RecordView;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The `prev_hash` of an org's first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub use crate::schema::CHAIN_FIELDS;

/// The most bytes sealing adds to a record's canonical JSON (the three fields, two commas).
pub const SEAL_OVERHEAD_BYTES: usize = 192;

/// Where a chain stands: the `seq` and `hash` of its last record. `seq` 0 with [`GENESIS_HASH`]
/// is the start of every chain; retention keeps one for the last record it deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    /// The start of a chain: nothing before `seq` 1.
    pub fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }

    /// The head after `record`, if it carries its chain fields.
    pub fn of(record: &AuditRecord) -> Option<ChainHead> {
        Some(ChainHead {
            seq: record.seq?,
            hash: record.hash.clone()?,
        })
    }
}

impl Default for ChainHead {
    fn default() -> Self {
        Self::genesis()
    }
}

/// The hash of `record` chained to `prev_hash`, as defined in the [module docs](self): over
/// the record with its `seq` as it is and its `prev_hash` and `hash` left out.
pub fn record_hash(prev_hash: &str, record: &AuditRecord) -> String {
    hash_of(prev_hash, &hashed_json(record))
}

/// The canonical JSON the chain hashes: the record with its `seq`, without `prev_hash` and `hash`.
fn hashed_json(record: &AuditRecord) -> String {
    let mut r = record.clone();
    r.prev_hash = None;
    r.hash = None;
    r.canonical_json()
}

fn hash_of(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// The Merkle leaf hash of `record`, as defined in the [module docs](self#the-record-as-a-merkle-leaf):
/// over the same bytes as [`record_hash`] (its `seq` as it is, its `prev_hash` the one given),
/// with the RFC 9162 leaf prefix.
pub fn record_leaf_hash(prev_hash: &str, record: &AuditRecord) -> Hash {
    leaf_of(prev_hash, &hashed_json(record))
}

fn leaf_of(prev_hash: &str, canonical: &str) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    h.finalize().into()
}

/// The Merkle leaf hash of a sealed record as it carries its chain fields: `None` when it has
/// no `seq` or `prev_hash` (written before chains existed).
pub fn leaf_of_sealed(record: &AuditRecord) -> Option<Hash> {
    record.seq?;
    Some(record_leaf_hash(record.prev_hash.as_deref()?, record))
}

/// A record's canonical JSON without its chain fields, with the places they go marked: prepared
/// off the collector's single writer thread, so that sealing there is a hash and a copy rather
/// than another serialisation.
#[derive(Debug, Clone)]
pub struct Unsealed {
    json: String,
    /// Byte offset in `json` where each of [`CHAIN_FIELDS`] goes: the start of the first entry
    /// whose key sorts after it, or the closing `}`.
    at: [usize; 3],
    /// The byte ranges in `json` of what says who sent the record, when, under which id, in
    /// order: without them `json` is the record's content.
    sender: [(usize, usize); 3],
}

/// A sealed record: its hash, its Merkle leaf hash and its canonical JSON with `seq`,
/// `prev_hash` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub hash: String,
    /// [`record_leaf_hash`] of the record.
    pub leaf: Hash,
    pub json: String,
}

const HASH: usize = 0;
const PREV_HASH: usize = 1;
const SEQ: usize = 2;

impl Unsealed {
    /// Prepares `record`; any chain fields it carries are left out.
    pub fn new(record: &AuditRecord) -> Unsealed {
        let mut json = String::with_capacity(768);
        let marks = write_record(record, ChainFields::Mark, &mut json);
        let mut sender = marks.sender;
        sender.sort_unstable();
        Unsealed {
            json,
            at: marks.chain,
            sender,
        }
    }

    /// Feeds the record's content ([`AuditRecord::content_json`]) to `hasher`, the same bytes as
    /// [`AuditRecord::hash_content`] does, from the JSON already written.
    pub fn hash_content<H: std::hash::Hasher>(&self, hasher: &mut H) {
        let mut pos = 0;
        for &(start, end) in &self.sender {
            if end > start {
                hasher.write(&self.json.as_bytes()[pos..start]);
                pos = end;
            }
        }
        hasher.write(&self.json.as_bytes()[pos..]);
    }

    /// Length of the canonical JSON without the chain fields, in bytes.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// Seals the record as number `seq` of its chain, after the record whose hash is `prev_hash`.
    pub fn seal(&self, seq: u64, prev_hash: &str) -> Sealed {
        let seq_json = seq.to_string();
        let hashed = self.render(&[(SEQ, &seq_json)]);
        let hash = hash_of(prev_hash, &hashed);
        let leaf = leaf_of(prev_hash, &hashed);
        let mut prev_json = String::with_capacity(prev_hash.len() + 2);
        write_string(prev_hash, &mut prev_json);
        let mut hash_json = String::with_capacity(hash.len() + 2);
        write_string(&hash, &mut hash_json);
        let json = self.render(&[
            (HASH, &hash_json),
            (PREV_HASH, &prev_json),
            (SEQ, &seq_json),
        ]);
        Sealed { hash, leaf, json }
    }

    /// The JSON with `fields` (indexes into [`CHAIN_FIELDS`], ascending, with their JSON values)
    /// put in their places.
    fn render(&self, fields: &[(usize, &str)]) -> String {
        let mut out = String::with_capacity(self.json.len() + SEAL_OVERHEAD_BYTES);
        let mut pos = 0;
        for &(field, value) in fields {
            let p = self.at[field];
            out.push_str(&self.json[pos..p]);
            pos = p;
            let at_end = self.json.as_bytes()[p] == b'}';
            if at_end && !out.ends_with('{') {
                out.push(',');
            }
            write_string(CHAIN_FIELDS[field], &mut out);
            out.push(':');
            out.push_str(value);
            if !at_end {
                out.push(',');
            }
        }
        out.push_str(&self.json[pos..]);
        out
    }
}

/// What retention leaves of an org's deleted records, so that what remains still verifies.
///
/// Retention deletes by time, not by `seq`, so what it deletes is a prefix of the chain plus,
/// rarely, records above it (a late arrival: an old `time`, a high `seq`). `checkpoint` is the
/// `seq` and `hash` of the highest deleted record `S` such that every `seq` up to `S` is
/// deleted; `tombstones` are the `seq`, `hash` and `time` of the deleted records above it,
/// ascending. The remaining chain starts at `S + 1` with `prev_hash` = the checkpoint's hash,
/// and a gap in it is accepted only where tombstones cover it ([`ChainVerifier::after`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionCheckpoint {
    pub checkpoint: ChainHead,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tombstones: Vec<Tombstone>,
}

/// A deleted record above the checkpoint: its `seq`, its `hash` and its `time` — what shows
/// that retention, not someone else, removed it (its time was before the cutoff). Files written
/// before the time was kept have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub seq: u64,
    pub hash: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::micros_opt"
    )]
    pub time: Option<DateTime<Utc>>,
}

impl Tombstone {
    /// Where the chain stands after this deleted record.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// What the janitor tells [`RetentionCheckpoint::advance`] of a record about to be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub hash: String,
    pub time: Option<DateTime<Utc>>,
}

impl RetentionCheckpoint {
    /// The highest `seq` deleted (with its hash): where the org's chain stands if nothing of it
    /// is left.
    pub fn head(&self) -> ChainHead {
        self.tombstones
            .last()
            .map_or_else(|| self.checkpoint.clone(), Tombstone::head)
    }

    /// Takes in the records about to be deleted, by `seq` (`deleted`); `about(seq)` gives the
    /// hash and time of one of them, and is asked only for those kept: the one the checkpoint
    /// moves to and those above it (tombstones). Seqs at or below the checkpoint already are
    /// ignored (a run that recorded them and then failed to delete them).
    pub fn advance<E>(
        &mut self,
        deleted: &BTreeSet<u64>,
        mut about: impl FnMut(u64) -> Result<Deleted, E>,
    ) -> Result<(), E> {
        let mut tombstones: BTreeMap<u64, Tombstone> = std::mem::take(&mut self.tombstones)
            .into_iter()
            .map(|t| (t.seq, t))
            .collect();
        let mut s = self.checkpoint.seq;
        while deleted.contains(&(s + 1)) || tombstones.contains_key(&(s + 1)) {
            s += 1;
        }
        if s > self.checkpoint.seq {
            let hash = match tombstones.get(&s) {
                Some(t) => t.hash.clone(),
                None => about(s)?.hash,
            };
            self.checkpoint = ChainHead { seq: s, hash };
            tombstones = tombstones.split_off(&(s + 1));
        }
        for &seq in deleted.range(s + 1..) {
            if let std::collections::btree_map::Entry::Vacant(e) = tombstones.entry(seq) {
                let Deleted { hash, time } = about(seq)?;
                e.insert(Tombstone { seq, hash, time });
            }
        }
        self.tombstones = tombstones.into_values().collect();
        Ok(())
    }
}

/// Checks one record on its own: it carries `seq`, `prev_hash` and `hash`, the hashes are 64
/// lowercase hex digits, and `hash` is [`record_hash`] of the record and its `prev_hash`.
/// Returns its `seq`.
pub fn check_record(record: &AuditRecord) -> Result<u64, String> {
    check_record_leaf(record).map(|(seq, _)| seq)
}

/// [`check_record`], also giving the record's Merkle leaf hash ([`record_leaf_hash`]) from the
/// same canonical JSON.
pub fn check_record_leaf(record: &AuditRecord) -> Result<(u64, Hash), String> {
    let seq = record
        .seq
        .ok_or_else(|| format!("record {:?} has no seq", record.id()))?;
    let prev = record
        .prev_hash
        .as_deref()
        .ok_or_else(|| format!("record {:?} has no prev_hash", record.id()))?;
    let hash = record
        .hash
        .as_deref()
        .ok_or_else(|| format!("record {:?} has no hash", record.id()))?;
    if seq == 0 {
        return Err("seq 0 is not a record's number; chains start at 1".into());
    }
    for (name, h) in [("prev_hash", prev), ("hash", hash)] {
        if !is_hash(h) {
            return Err(format!("{name} is not 64 lowercase hex digits: {h:?}"));
        }
    }
    if seq == 1 && prev != GENESIS_HASH {
        return Err("the first record (seq 1) must have the genesis prev_hash".into());
    }
    let canonical = hashed_json(record);
    if hash_of(prev, &canonical) != hash {
        return Err(format!(
            "the content of record {:?} does not match its hash (changed after it was stored)",
            record.id()
        ));
    }
    Ok((seq, leaf_of(prev, &canonical)))
}

/// A record that holds by [`check_record_leaf`]: its `seq`, leaf hash and chain hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedLeaf {
    pub seq: u64,
    pub leaf: Hash,
    pub prev_hash: Hash,
    pub hash: Hash,
}

/// [`check_record_leaf`] over a record's borrowed view, for checking records in bulk: `Some`
/// only when every check holds and the view is sure of the hashed form
/// ([`RecordView::hashed_json`]). On `None` the caller checks the `AuditRecord`, which gives
/// the same answer or names what is wrong; so this never decides differently. `scratch` is
/// reused for the canonical JSON.
pub fn check_view_leaf(view: &RecordView, scratch: &mut String) -> Option<CheckedLeaf> {
    let seq = view.seq.filter(|&s| s > 0)?;
    let (prev, hash) = (view.prev_hash.as_deref()?, view.hash.as_deref()?);
    if !is_hash(prev) || !is_hash(hash) || (seq == 1 && prev != GENESIS_HASH) {
        return None;
    }
    scratch.clear();
    if !view.hashed_json(scratch) {
        return None;
    }
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(scratch.as_bytes());
    let computed: Hash = h.finalize().into();
    let mut checked = CheckedLeaf {
        seq,
        leaf: leaf_of(prev, scratch),
        prev_hash: [0; 32],
        hash: [0; 32],
    };
    hex::decode_to_slice(hash, &mut checked.hash).ok()?;
    hex::decode_to_slice(prev, &mut checked.prev_hash).ok()?;
    (computed == checked.hash).then_some(checked)
}

/// Whether `s` has the form of a hash: 64 lowercase hex digits.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A verified stretch of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChainSummary {
    /// Records checked.
    pub records: u64,
    /// `seq` of the first record checked.
    pub first_seq: Option<u64>,
    /// `seq` of the last record checked, or of the checkpoint when there were none.
    pub last_seq: Option<u64>,
    /// `hash` of the last record checked, or of the checkpoint when there were none.
    pub last_hash: Option<String>,
}

/// The first place a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ChainBreak {
    /// The sequence number where it breaks (for a gap, the first missing one), when known.
    pub seq: Option<u64>,
    pub reason: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "seq {seq}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Checks records given in `seq` order, one at a time (so a chain of any length is checked in
/// constant memory): every hash recomputes, every `prev_hash` is the hash before it, and `seq`
/// goes up by one from the starting point without gaps — but where a retention tombstone
/// stands for the missing record ([`ChainVerifier::after`]).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    /// Where the chain stood before the records checked: genesis, or a retention checkpoint.
    start: ChainHead,
    last: ChainHead,
    /// Whether `last` is a tombstone (a deleted record) rather than a record checked.
    last_is_tombstone: bool,
    /// Retention tombstones not reached yet, ascending.
    tombstones: std::collections::VecDeque<ChainHead>,
    first_seq: Option<u64>,
    records: u64,
}

impl ChainVerifier {
    /// A verifier of a chain that continues `from` (the genesis when `None`).
    pub fn new(from: Option<ChainHead>) -> ChainVerifier {
        Self::after(RetentionCheckpoint {
            checkpoint: from.unwrap_or_default(),
            tombstones: Vec::new(),
        })
    }

    /// A verifier of what retention left of a chain: the first record must follow the
    /// checkpoint, and a missing record is accepted only where a tombstone stands for it (the
    /// next record's `prev_hash` must then be the tombstone's hash). Records at or below the
    /// checkpoint that are still stored (a janitor run recorded them, then failed to delete
    /// them) are not part of the chain checked: skipped, but the one at the checkpoint itself
    /// must have the checkpoint's hash.
    pub fn after(checkpoint: RetentionCheckpoint) -> ChainVerifier {
        let start = checkpoint.checkpoint;
        let mut tombstones: Vec<ChainHead> = checkpoint
            .tombstones
            .iter()
            .filter(|t| t.seq > start.seq)
            .map(Tombstone::head)
            .collect();
        tombstones.sort_by_key(|t| t.seq);
        ChainVerifier {
            last: start.clone(),
            last_is_tombstone: false,
            start,
            tombstones: tombstones.into(),
            first_seq: None,
            records: 0,
        }
    }

    /// Checks the next record.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        if self.records == 0
            && self.last.seq == self.start.seq
            && self.start.seq > 0
            && let Some(seq) = record.seq
            && seq <= self.start.seq
        {
            if seq == self.start.seq && record.hash.as_deref() != Some(self.start.hash.as_str()) {
                return Err(ChainBreak {
                    seq: Some(seq),
                    reason: "the record at the retention checkpoint does not have the \
                             checkpoint's hash"
                        .into(),
                });
            }
            return Ok(());
        }
        let Some(seq) = record.seq else {
            return Err(ChainBreak {
                seq: Some(self.last.seq + 1),
                reason: format!("record {:?} has no seq", record.id()),
            });
        };
        // Deleted records with a tombstone fill the gap up to this record.
        while seq > self.last.seq + 1
            && self
                .tombstones
                .front()
                .is_some_and(|t| t.seq == self.last.seq + 1)
        {
            self.last = self.tombstones.pop_front().expect("checked");
            self.last_is_tombstone = true;
        }
        let expected = self.last.seq + 1;
        if seq < expected {
            return Err(ChainBreak {
                seq: Some(seq),
                reason: format!(
                    "seq {seq} appears again or out of order after seq {}",
                    self.last.seq
                ),
            });
        }
        if seq > expected {
            let reason = if seq == expected + 1 {
                format!(
                    "record {expected} is missing (between {} and {seq})",
                    self.last.seq
                )
            } else {
                format!(
                    "records {expected} to {} are missing (between {} and {seq})",
                    seq - 1,
                    self.last.seq
                )
            };
            let reason = if self.start.seq > 0 || !self.tombstones.is_empty() {
                format!("{reason}, and no retention tombstone stands for it")
            } else {
                reason
            };
            return Err(ChainBreak {
                seq: Some(expected),
                reason,
            });
        }
        if record.prev_hash.as_deref() != Some(self.last.hash.as_str()) {
            let before = if self.last.seq == 0 {
                "the genesis hash".to_string()
            } else if self.last_is_tombstone {
                format!(
                    "the hash of seq {} (a retention tombstone: a deleted record)",
                    self.last.seq
                )
            } else if self.last.seq == self.start.seq {
                format!(
                    "the hash of seq {} (the retention checkpoint: the last deleted record)",
                    self.last.seq
                )
            } else {
                format!("the hash of seq {}", self.last.seq)
            };
            return Err(ChainBreak {
                seq: Some(seq),
                reason: format!(
                    "prev_hash is not {before}: a record was changed, removed or inserted before it"
                ),
            });
        }
        if let Err(reason) = check_record(record) {
            return Err(ChainBreak {
                seq: Some(seq),
                reason,
            });
        }
        // A tombstone for a record still stored (recorded, then not deleted): it must be it.
        if let Some(t) = self.tombstones.front()
            && t.seq == seq
        {
            if record.hash.as_deref() != Some(t.hash.as_str()) {
                return Err(ChainBreak {
                    seq: Some(seq),
                    reason: "the record does not have the hash of its retention tombstone".into(),
                });
            }
            self.tombstones.pop_front();
        }
        self.first_seq.get_or_insert(seq);
        self.records += 1;
        self.last_is_tombstone = false;
        self.last = ChainHead {
            seq,
            hash: record.hash.clone().unwrap_or_default(),
        };
        Ok(())
    }

    /// Where the chain stands after the records pushed so far.
    pub fn head(&self) -> &ChainHead {
        &self.last
    }

    /// What was verified. Tombstones right after the last record (deleted late arrivals with
    /// the highest `seq`s) end the chain.
    pub fn finish(mut self) -> ChainSummary {
        while let Some(t) = self.tombstones.pop_front() {
            if t.seq != self.last.seq + 1 {
                break;
            }
            self.last = t;
        }
        let ended = self.records > 0 || self.last.seq > 0;
        ChainSummary {
            records: self.records,
            first_seq: self.first_seq,
            last_seq: ended.then_some(self.last.seq),
            last_hash: ended.then_some(self.last.hash),
        }
    }
}

/// Verifies records given in `seq` order as one unbroken chain continuing `from` (a retention
/// checkpoint: the `seq` and `hash` of the last deleted record), or from the genesis when `None`.
/// Returns what was verified, or the first place it breaks.
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    from: Option<&ChainHead>,
) -> Result<ChainSummary, ChainBreak> {
    let mut v = ChainVerifier::new(from.cloned());
    for r in records {
        v.push(r)?;
    }
    Ok(v.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn record(id: &str, extra: Value) -> AuditRecord {
        let mut v = json!({
            "id": id,
            "org_id": "acme",
            "time": "2026-11-27T10:15:30.123456Z",
            "actor": {"id": "u-42", "email": "ada@acme.example", "kind": "user"},
            "action": "scan.triggered",
            "category": "scan",
            "received_at": "2026-11-27T10:15:31.000001Z"
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    /// Seals records into a chain the way the collector does.
    fn chain(records: &[AuditRecord]) -> Vec<AuditRecord> {
        let mut head = ChainHead::genesis();
        records
            .iter()
            .map(|r| {
                let seq = head.seq + 1;
                let sealed = Unsealed::new(r).seal(seq, &head.hash);
                let out: AuditRecord = serde_json::from_str(&sealed.json).unwrap();
                head = ChainHead {
                    seq,
                    hash: sealed.hash,
                };
                out
            })
            .collect()
    }

    #[test]
    fn the_definition_spelled_out() {
        let mut r = record("a", json!({}));
        r.seq = Some(1);
        let canonical = r.canonical_json();
        assert!(canonical.contains(r#","seq":1,"#), "{canonical}");
        let mut h = Sha256::new();
        h.update(format!("{GENESIS_HASH}\n{canonical}").as_bytes());
        assert_eq!(record_hash(GENESIS_HASH, &r), hex::encode(h.finalize()));
        // prev_hash and hash are not part of what is hashed.
        r.prev_hash = Some("x".into());
        r.hash = Some("y".into());
        assert_eq!(
            record_hash(GENESIS_HASH, &r),
            hex::encode({
                let mut h = Sha256::new();
                h.update(format!("{GENESIS_HASH}\n{canonical}").as_bytes());
                h.finalize()
            })
        );
    }

    /// docs/export.md: a stored (and exported) record's text without its `prev_hash` and
    /// `hash` members is what its hash covers after `prev_hash` and a newline.
    #[test]
    fn a_records_text_without_its_chain_members_is_what_its_hash_covers() {
        let sealed = chain(&[
            record("a", json!({})),
            record(
                "b",
                json!({"metadata": {"hash": "not the chain's", "z": 1}}),
            ),
        ]);
        let mut prev = GENESIS_HASH.to_string();
        for r in &sealed {
            let text = r.canonical_json();
            let hash = r.hash.clone().unwrap();
            let member = |k: &str, v: &str| format!(r#""{k}":"{v}","#);
            let without = text.replacen(&member("hash", &hash), "", 1).replacen(
                &member("prev_hash", &prev),
                "",
                1,
            );
            let removed = member("hash", &hash).len() + member("prev_hash", &prev).len();
            assert_eq!(without.len(), text.len() - removed, "{text}");
            assert_eq!(hash_of(&prev, &without), hash, "{text}");
            prev = hash;
        }
    }

    #[test]
    fn sealing_equals_the_definition_and_the_canonical_form() {
        let variants = [
            json!({}),
            json!({"category": ""}),
            json!({"message": "ünïcode \"quoted\" \n", "repository": "acme/api", "outcome": "failure"}),
            json!({"target": {"kind": "repository", "id": "r", "name": "=cmd"},
                   "metadata": {"ip": "10.0.0.1", "z": [1, {"b": 2, "a": 1.5}], "a": null}}),
            json!({"seq": 99, "prev_hash": "forged", "hash": "forged"}),
        ];
        let mut prev = GENESIS_HASH.to_string();
        for (i, extra) in variants.into_iter().enumerate() {
            let r = record(&format!("r{i}"), extra);
            let seq = i as u64 + 1;
            let sealed = Unsealed::new(&r).seal(seq, &prev);
            let mut want = r.clone();
            want.seq = Some(seq);
            want.prev_hash = None;
            want.hash = None;
            assert_eq!(sealed.hash, record_hash(&prev, &want), "variant {i}");
            assert_eq!(sealed.leaf, record_leaf_hash(&prev, &want), "variant {i}");
            // The leaf is over the very bytes the hash is over.
            let mut bytes = format!("{prev}\n{}", want.canonical_json()).into_bytes();
            assert_eq!(hex::encode(Sha256::digest(&bytes)), sealed.hash);
            bytes.insert(0, 0);
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&bytes)), sealed.leaf);
            want.prev_hash = Some(prev.clone());
            want.hash = Some(sealed.hash.clone());
            assert_eq!(sealed.json, want.canonical_json(), "variant {i}");
            assert_eq!(leaf_of_sealed(&want), Some(sealed.leaf), "variant {i}");
            assert!(sealed.json.len() <= Unsealed::new(&r).len() + SEAL_OVERHEAD_BYTES);
            assert_eq!(check_record(&want), Ok(seq));
            prev = sealed.hash;
        }
        // The splice also handles objects where the chain fields go first or last.
        let u = Unsealed {
            json: "{}".into(),
            at: [1, 1, 1],
            sender: [(0, 0); 3],
        };
        assert_eq!(
            u.render(&[(HASH, "1"), (PREV_HASH, "2"), (SEQ, "3")]),
            r#"{"hash":1,"prev_hash":2,"seq":3}"#
        );
        let u = Unsealed {
            json: r#"{"a":0,"z":9}"#.into(),
            at: [7, 7, 12],
            sender: [(0, 0); 3],
        };
        assert_eq!(
            u.render(&[(HASH, "1"), (PREV_HASH, "2"), (SEQ, "3")]),
            r#"{"a":0,"hash":1,"prev_hash":2,"z":9,"seq":3}"#
        );
    }

    #[test]
    fn verify_accepts_a_chain_and_names_the_first_break() {
        let records: Vec<_> = (0..5)
            .map(|i| record(&format!("r{i}"), json!({})))
            .collect();
        let sealed = chain(&records);
        let ok = verify_chain(&sealed, None).unwrap();
        assert_eq!(ok.records, 5);
        assert_eq!((ok.first_seq, ok.last_seq), (Some(1), Some(5)));
        assert_eq!(ok.last_hash, sealed[4].hash);
        assert_eq!(verify_chain([], None).unwrap(), ChainSummary::default());

        // A changed field.
        let mut changed = sealed.clone();
        changed[2].actor.email = Some("eve@acme.example".into());
        let e = verify_chain(&changed, None).unwrap_err();
        assert_eq!(e.seq, Some(3));
        assert!(e.reason.contains("does not match its hash"), "{e}");

        // A changed record whose hash was recomputed: the next link breaks.
        changed[2].hash = Some(record_hash(
            changed[2].prev_hash.as_deref().unwrap(),
            &changed[2],
        ));
        let e = verify_chain(&changed, None).unwrap_err();
        assert_eq!(e.seq, Some(4));
        assert!(e.reason.contains("prev_hash"), "{e}");

        // A deleted record.
        let mut deleted = sealed.clone();
        deleted.remove(1);
        let e = verify_chain(&deleted, None).unwrap_err();
        assert_eq!(e.seq, Some(2));
        assert!(e.reason.contains("missing"), "{e}");

        // Two records swapped.
        let mut swapped = sealed.clone();
        swapped.swap(1, 2);
        let e = verify_chain(&swapped, None).unwrap_err();
        assert_eq!(e.seq, Some(2), "{e}");

        // Renumbered records (seq and links rewritten but not the hashes).
        let mut renumbered = sealed.clone();
        renumbered[3].seq = Some(3);
        assert!(verify_chain(&renumbered, None).is_err());
    }

    #[test]
    fn verify_continues_from_a_checkpoint() {
        let records: Vec<_> = (0..6)
            .map(|i| record(&format!("r{i}"), json!({})))
            .collect();
        let sealed = chain(&records);
        let checkpoint = ChainHead::of(&sealed[2]).unwrap();
        let ok = verify_chain(&sealed[3..], Some(&checkpoint)).unwrap();
        assert_eq!(
            (ok.records, ok.first_seq, ok.last_seq),
            (3, Some(4), Some(6))
        );
        // Without the checkpoint the first remaining record does not start a chain.
        let e = verify_chain(&sealed[3..], None).unwrap_err();
        assert_eq!(e.seq, Some(1));
        // A checkpoint with nothing after it is where the chain stands.
        let empty = verify_chain([], Some(&checkpoint)).unwrap();
        assert_eq!(empty.last_seq, Some(3));
        assert_eq!(empty.last_hash, Some(checkpoint.hash.clone()));
        // A wrong checkpoint hash is a break at the first record.
        let wrong = ChainHead {
            seq: 3,
            hash: GENESIS_HASH.into(),
        };
        assert_eq!(
            verify_chain(&sealed[3..], Some(&wrong)).unwrap_err().seq,
            Some(4)
        );
    }

    fn verify_after(
        records: &[AuditRecord],
        cp: &RetentionCheckpoint,
    ) -> Result<ChainSummary, ChainBreak> {
        let mut v = ChainVerifier::after(cp.clone());
        for r in records {
            v.push(r)?;
        }
        Ok(v.finish())
    }

    fn head(r: &AuditRecord) -> ChainHead {
        ChainHead::of(r).unwrap()
    }

    fn about(sealed: &[AuditRecord], seq: u64) -> Deleted {
        let r = &sealed[seq as usize - 1];
        Deleted {
            hash: r.hash.clone().unwrap(),
            time: Some(r.time),
        }
    }

    #[test]
    fn retention_checkpoint_and_tombstones() {
        let sealed = chain(
            &(0..10)
                .map(|i| record(&format!("r{i}"), json!({})))
                .collect::<Vec<_>>(),
        );
        // Deleted by time: seqs 1-4, and 7 (a late arrival: old time, high seq).
        let deleted: BTreeSet<u64> = [1, 2, 3, 4, 7].into();
        let mut asked = Vec::new();
        let mut cp = RetentionCheckpoint::default();
        cp.advance(&deleted, |s| {
            asked.push(s);
            Ok::<_, ()>(about(&sealed, s))
        })
        .unwrap();
        // Only the hashes kept are asked for.
        assert_eq!(asked, vec![4, 7]);
        assert_eq!(cp.checkpoint, head(&sealed[3]));
        assert_eq!(
            cp.tombstones,
            vec![Tombstone {
                seq: 7,
                hash: sealed[6].hash.clone().unwrap(),
                time: Some(sealed[6].time)
            }]
        );
        assert_eq!(cp.head().seq, 7);
        let left: Vec<AuditRecord> = sealed
            .iter()
            .filter(|r| !deleted.contains(&r.seq.unwrap()))
            .cloned()
            .collect();
        let ok = verify_after(&left, &cp).unwrap();
        assert_eq!(
            (ok.records, ok.first_seq, ok.last_seq),
            (5, Some(5), Some(10))
        );
        // Without the checkpoint, it fails at the first record left.
        assert_eq!(verify_chain(&left, None).unwrap_err().seq, Some(1));
        // A missing tombstone: fails naming the seq.
        let mut no_tomb = cp.clone();
        no_tomb.tombstones.clear();
        let err = verify_after(&left, &no_tomb).unwrap_err();
        assert_eq!(err.seq, Some(7), "{err}");
        assert!(err.reason.contains("tombstone"), "{err}");
        // A tombstone with a wrong hash: the record after it does not link.
        let mut wrong = cp.clone();
        wrong.tombstones[0].hash = "a".repeat(64);
        let err = verify_after(&left, &wrong).unwrap_err();
        assert_eq!(err.seq, Some(8), "{err}");
        assert!(
            err.reason.contains("seq 7") && err.reason.contains("tombstone"),
            "{err}"
        );
        // A wrong checkpoint hash fails at the first record left.
        let mut wrong = cp.clone();
        wrong.checkpoint.hash = "b".repeat(64);
        assert_eq!(verify_after(&left, &wrong).unwrap_err().seq, Some(5));
        // Records still stored although recorded as deleted (a run that failed after saving):
        // they verify too.
        let ok = verify_after(&sealed, &cp).unwrap();
        assert_eq!(
            (ok.records, ok.first_seq, ok.last_seq),
            (6, Some(5), Some(10))
        );

        // Next run: 5 and 6 go; the checkpoint moves through the old tombstone 7 to 7.
        let deleted: BTreeSet<u64> = [5, 6].into();
        let mut asked = Vec::new();
        cp.advance(&deleted, |s| {
            asked.push(s);
            Ok::<_, ()>(about(&sealed, s))
        })
        .unwrap();
        assert!(asked.is_empty(), "7's hash is the tombstone's: {asked:?}");
        assert_eq!(cp.checkpoint, head(&sealed[6]));
        assert!(cp.tombstones.is_empty());
        let ok = verify_after(&sealed[7..], &cp).unwrap();
        assert_eq!(
            (ok.records, ok.first_seq, ok.last_seq),
            (3, Some(8), Some(10))
        );

        // The newest record deleted alone (a late arrival on top): a trailing tombstone ends
        // the chain.
        let mut cp = RetentionCheckpoint::default();
        cp.advance(&[10].into(), |s| Ok::<_, ()>(about(&sealed, s)))
            .unwrap();
        assert_eq!(cp.checkpoint, ChainHead::genesis());
        let ok = verify_after(&sealed[..9], &cp).unwrap();
        assert_eq!((ok.records, ok.last_seq), (9, Some(10)));
        assert_eq!(ok.last_hash, sealed[9].hash);
        // Everything deleted: the checkpoint is the head.
        cp.advance(&(1..=9).collect(), |s| Ok::<_, ()>(about(&sealed, s)))
            .unwrap();
        assert_eq!(
            (cp.checkpoint.clone(), cp.tombstones.len()),
            (head(&sealed[9]), 0)
        );
        assert_eq!(verify_after(&[], &cp).unwrap().last_seq, Some(10));
        // The file form.
        let json = serde_json::to_string(&cp).unwrap();
        assert_eq!(
            serde_json::from_str::<RetentionCheckpoint>(&json).unwrap(),
            cp
        );
        // Tombstones keep their time; those of files written before it was kept have none.
        let with_tomb = RetentionCheckpoint {
            checkpoint: ChainHead::genesis(),
            tombstones: vec![Tombstone {
                seq: 3,
                hash: "c".repeat(64),
                time: Some(sealed[2].time),
            }],
        };
        let json = serde_json::to_string(&with_tomb).unwrap();
        assert!(
            json.contains(r#""time":"2026-11-27T10:15:30.123456Z""#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<RetentionCheckpoint>(&json).unwrap(),
            with_tomb
        );
        let old = format!(
            r#"{{"checkpoint":{{"seq":2,"hash":"{}"}},"tombstones":[{{"seq":4,"hash":"{}"}}]}}"#,
            "a".repeat(64),
            "b".repeat(64)
        );
        let old: RetentionCheckpoint = serde_json::from_str(&old).unwrap();
        assert_eq!(old.tombstones[0].time, None);
        assert_eq!(old.head().seq, 4);
    }

    #[test]
    fn chain_fields_of_input_are_dropped() {
        let input = json!({
            "org_id": "acme", "time": "2026-11-27T10:15:30Z",
            "actor": {"id": "u-42", "email": "ada@acme.example"},
            "action": "scan.triggered",
            "seq": 7, "prev_hash": GENESIS_HASH, "hash": "f".repeat(64)
        });
        let rules = crate::Rules::at(crate::time::parse_rfc3339("2026-11-28T00:00:00Z").unwrap());
        let r = crate::record_from_value(input, &rules).unwrap();
        assert_eq!((r.seq, r.prev_hash, r.hash), (None, None, None));
    }

    #[test]
    fn check_record_catches_malformed_chain_fields() {
        let sealed = chain(&[record("a", json!({}))]);
        let mut r = sealed[0].clone();
        assert_eq!(check_record(&r), Ok(1));
        r.hash = Some(r.hash.unwrap().to_uppercase());
        assert!(check_record(&r).unwrap_err().contains("hex"));
        let mut r = sealed[0].clone();
        r.seq = None;
        assert!(check_record(&r).unwrap_err().contains("no seq"));
        let mut r = sealed[0].clone();
        r.prev_hash = Some("1".repeat(64));
        assert!(check_record(&r).unwrap_err().contains("genesis"));
    }
}
