//! `codestax verify`: checks an exported file's hash chain offline.
//!
//! Reads a JSON array or NDJSON export (CSV leaves fields out, so its hashes cannot be
//! recomputed) in one pass, and checks:
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
use codestax_common::chain::check_record;
use serde::de::{Error as _, SeqAccess, Visitor};
use std::fmt;
use std::io::BufRead;

/// How strict the check is.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Accept missing sequence numbers (an export made with filters); only the records present,
    /// and the links between consecutive numbers present, are checked.
    pub allow_gaps: bool,
}

/// What verified.
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
    /// The chain does not hold at `place`.
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
}

impl Checker {
    fn place(&self, at: u64, seq: Option<u64>) -> String {
        match seq {
            Some(seq) => format!("{} {at} (seq {seq})", self.unit),
            None => format!("{} {at}", self.unit),
        }
    }

    fn push(&mut self, at: u64, r: &AuditRecord) -> Result<(), VerifyError> {
        let seq = check_record(r).map_err(|reason| broken(self.place(at, r.seq), reason))?;
        let key = (r.time, r.id().to_string());
        if let Some(before) = &self.newest
            && key >= *before
        {
            return Err(broken(
                self.place(at, Some(seq)),
                "out of order: not older than the record before it (exports list newest first); \
                 records were moved or repeated",
            ));
        }
        self.newest = Some(key);
        let bytes = |h: &Option<String>| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h.as_deref().unwrap_or_default(), &mut out)
                .expect("check_record saw 64 hex digits");
            out
        };
        self.links.push(Link {
            seq,
            prev: bytes(&r.prev_hash),
            hash: bytes(&r.hash),
            at,
        });
        Ok(())
    }

    fn finish(mut self, opts: VerifyOptions) -> Result<VerifyReport, VerifyError> {
        self.links.sort_unstable_by_key(|l| l.seq);
        let mut missing = 0;
        for pair in self.links.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let here = self.place(b.at, Some(b.seq));
            if a.seq == b.seq {
                return Err(broken(
                    here,
                    format!(
                        "seq {} appears twice (also at {} {})",
                        b.seq, self.unit, a.at
                    ),
                ));
            }
            if b.seq == a.seq + 1 {
                if b.prev != a.hash {
                    return Err(broken(
                        here,
                        format!(
                            "prev_hash is not the hash of seq {} ({} {}): a record was changed, \
                             replaced or inserted",
                            a.seq, self.unit, a.at
                        ),
                    ));
                }
            } else if opts.allow_gaps {
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
                        "{gap} (after seq {} at {} {}): records were deleted \
                         (for an export made with filters, or after retention deleted a late \
                         arrival, use --allow-gaps)",
                        a.seq, self.unit, a.at
                    ),
                ));
            }
        }
        let last = self.links.last();
        let unchecked_prev_hash = self
            .links
            .first()
            .filter(|l| l.seq > 1)
            .map(|l| hex::encode(l.prev));
        Ok(VerifyReport {
            unchecked_prev_hash,
            records: self.links.len() as u64,
            first_seq: self.links.first().map(|l| l.seq),
            last_seq: last.map(|l| l.seq),
            last_hash: last.map(|l| hex::encode(l.hash)),
            missing,
        })
    }
}

/// Verifies an export read from `input` (a JSON array or NDJSON).
pub fn verify(mut input: impl BufRead, opts: VerifyOptions) -> Result<VerifyReport, VerifyError> {
    // Blank lines skipped before the first byte, to keep line numbers right.
    let mut skipped_lines = 0;
    let first = loop {
        let buf = input.fill_buf().map_err(VerifyError::Read)?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break Some(buf[i]),
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                skipped_lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
                input.consume(n);
            }
        }
    };
    match first {
        None => Ok(Checker {
            unit: "line",
            links: Vec::new(),
            newest: None,
        }
        .finish(opts)?),
        Some(b'[') => verify_json(input, opts),
        Some(b'{') => verify_ndjson(input, skipped_lines, opts),
        Some(_) => Err(VerifyError::Input(
            "not a JSON or NDJSON export; CSV exports leave fields out and cannot be verified: \
             export with --format ndjson (or json)"
                .into(),
        )),
    }
}

fn verify_ndjson(
    input: impl BufRead,
    skipped_lines: u64,
    opts: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let mut checker = Checker {
        unit: "line",
        links: Vec::new(),
        newest: None,
    };
    for (i, line) in input.lines().enumerate() {
        let at = skipped_lines + i as u64 + 1;
        let line = line.map_err(VerifyError::Read)?;
        if line.trim().is_empty() {
            continue;
        }
        let record: AuditRecord = serde_json::from_str(&line)
            .map_err(|e| broken(format!("line {at}"), format!("not an audit record: {e}")))?;
        checker.push(at, &record)?;
    }
    checker.finish(opts)
}

fn verify_json(input: impl BufRead, opts: VerifyOptions) -> Result<VerifyReport, VerifyError> {
    /// Feeds each element of the array to the checker as it is parsed.
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
    let mut checker = Checker {
        unit: "record",
        links: Vec::new(),
        newest: None,
    };
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
    checker.finish(opts)
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
        verify(text.as_bytes(), VerifyOptions::default())
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
            VerifyOptions { allow_gaps: true },
        )
        .unwrap();
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
