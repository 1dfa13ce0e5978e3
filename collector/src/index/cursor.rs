//! The opaque pagination cursor.
//!
//! Layout of version 2 (then base64url without padding):
//!
//! | bytes | content                                                                |
//! |-------|------------------------------------------------------------------------|
//! | 1     | version, `2`                                                           |
//! | 8     | snapshot: records with an LSN at or above it are excluded (big-endian)  |
//! | 8     | `time` of the last entry returned, microseconds (big-endian, signed)   |
//! | 8     | the walk's count of matches at or after `anchor` (big-endian)          |
//! | 8     | `anchor`, microseconds (big-endian, signed; `i64::MIN`: no lower bound) |
//! | 8     | when that count was taken, microseconds since the epoch (wall clock)   |
//! | n     | `id` of the last entry returned, UTF-8                                 |
//! | 8     | tag: first 8 bytes of SHA-256 over the org, the query and the bytes above |
//!
//! Version 1 (issued before the count was carried) is the same without the three count fields;
//! it is still accepted, and the next page counts afresh.
//!
//! The tag makes any change (truncation, bit flips, another version) and any reuse with another
//! org or other filters a [`IndexError::BadCursor`]. It is not a secret: a crafted cursor can at
//! most choose where a walk of the caller's own org starts, and what `total` the caller is told
//! on its later pages (the first page's `total`, the one a read records, never comes from a
//! cursor).

use super::error::IndexError;
use sha2::{Digest, Sha256};

const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const HEADER_1: usize = 1 + 8 + 8;
const HEADER: usize = HEADER_1 + 8 + 8 + 8;
const TAG: usize = 8;
/// Longer cursors are rejected before decoding.
const MAX_CURSOR_CHARS: usize = 1024;

/// Where a walk is: the snapshot fixed on its first page, the last entry returned, and the
/// walk's count as far as it cannot change during the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Exclusive upper bound on the LSN of records in the walk.
    pub snapshot: u64,
    pub time: i64,
    pub id: String,
    /// `None` in a version 1 cursor.
    pub count: Option<CarriedCount>,
}

/// The part of a walk's `total` a cursor carries: the matches in the snapshot whose time is at
/// or after `anchor` (and before the query's `until`), counted at `counted_at`. See
/// `AuditIndex::search` for when a later page may rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CarriedCount {
    pub at_or_after_anchor: u64,
    /// Microseconds; `i64::MIN` when the walk has no lower time bound.
    pub anchor: i64,
    /// Wall clock, microseconds since the epoch.
    pub counted_at: i64,
}

impl Cursor {
    /// Encodes the cursor for a walk identified by `scope` (the org and the normalised query).
    pub fn encode(&self, scope: &str) -> String {
        let mut bytes = Vec::with_capacity(HEADER + self.id.len() + TAG);
        match &self.count {
            Some(c) => {
                bytes.push(VERSION);
                bytes.extend_from_slice(&self.snapshot.to_be_bytes());
                bytes.extend_from_slice(&self.time.to_be_bytes());
                bytes.extend_from_slice(&c.at_or_after_anchor.to_be_bytes());
                bytes.extend_from_slice(&c.anchor.to_be_bytes());
                bytes.extend_from_slice(&c.counted_at.to_be_bytes());
            }
            None => {
                bytes.push(VERSION_1);
                bytes.extend_from_slice(&self.snapshot.to_be_bytes());
                bytes.extend_from_slice(&self.time.to_be_bytes());
            }
        }
        bytes.extend_from_slice(self.id.as_bytes());
        let tag = tag(scope, &bytes);
        bytes.extend_from_slice(&tag);
        base64url_encode(&bytes)
    }

    /// Decodes a cursor issued for `scope`.
    pub fn decode(s: &str, scope: &str) -> Result<Cursor, IndexError> {
        let bad = |m: &str| IndexError::BadCursor(m.to_string());
        if s.len() > MAX_CURSOR_CHARS {
            return Err(bad("too long"));
        }
        let bytes = base64url_decode(s).ok_or_else(|| bad("not base64url"))?;
        let header = match bytes.first() {
            Some(&VERSION) => HEADER,
            Some(&VERSION_1) => HEADER_1,
            Some(_) => return Err(bad("unsupported version")),
            None => return Err(bad("too short")),
        };
        if bytes.len() < header + TAG {
            return Err(bad("too short"));
        }
        let (body, got_tag) = bytes.split_at(bytes.len() - TAG);
        if tag(scope, body) != got_tag {
            return Err(bad("does not belong to this org and query, or was altered"));
        }
        let word = |at: usize| -> [u8; 8] { body[at..at + 8].try_into().expect("8 bytes") };
        let snapshot = u64::from_be_bytes(word(1));
        let time = i64::from_be_bytes(word(9));
        let count = (header == HEADER).then(|| CarriedCount {
            at_or_after_anchor: u64::from_be_bytes(word(17)),
            anchor: i64::from_be_bytes(word(25)),
            counted_at: i64::from_be_bytes(word(33)),
        });
        let id = std::str::from_utf8(&body[header..])
            .map_err(|_| bad("id is not UTF-8"))?
            .to_string();
        Ok(Cursor {
            snapshot,
            time,
            id,
            count,
        })
    }
}

fn tag(scope: &str, body: &[u8]) -> [u8; TAG] {
    let mut h = Sha256::new();
    h.update(b"codestax-audit-cursor\0");
    h.update((scope.len() as u64).to_be_bytes());
    h.update(scope.as_bytes());
    h.update(body);
    let digest = h.finalize();
    digest[..TAG].try_into().expect("SHA-256 has 32 bytes")
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url (RFC 4648 §5) without padding.
pub(crate) fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes unpadded base64url; `None` on any other character, an impossible length, or non-zero
/// trailing bits (so every byte string has exactly one encoding).
pub(crate) fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= sextet(*c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        let unused_bits = 24 - 8 * produced as u32;
        if n & ((1u32 << unused_bits) - 1) != 0 {
            return None;
        }
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let s = base64url_encode(&bytes);
            assert_eq!(base64url_decode(&s), Some(bytes), "{s}");
        }
        assert_eq!(base64url_encode(b"hello?>"), "aGVsbG8_Pg");
        assert_eq!(base64url_decode("aGVsbG8_Pg"), Some(b"hello?>".to_vec()));
        assert_eq!(
            base64url_decode("aGVsbG8_Ph"),
            None,
            "non-zero trailing bits"
        );
        assert_eq!(base64url_decode("a"), None);
        assert_eq!(base64url_decode("aG=="), None);
        assert_eq!(base64url_decode("a+/b"), None);
    }

    #[test]
    fn cursor_round_trips_and_rejects_changes() {
        for count in [
            None,
            Some(CarriedCount {
                at_or_after_anchor: 1_000_632,
                anchor: i64::MIN,
                counted_at: 1_800_000_000_000_000,
            }),
            Some(CarriedCount {
                at_or_after_anchor: 0,
                anchor: -7,
                counted_at: 0,
            }),
        ] {
            let c = Cursor {
                snapshot: 1234,
                time: -5,
                id: "evt-ü-1".into(),
                count,
            };
            let s = c.encode("acme|q");
            assert_eq!(Cursor::decode(&s, "acme|q").unwrap(), c);
            assert!(matches!(
                Cursor::decode(&s, "globex|q"),
                Err(IndexError::BadCursor(_))
            ));
            for cut in 0..s.len() {
                assert!(Cursor::decode(&s[..cut], "acme|q").is_err(), "cut {cut}");
            }
            let raw = base64url_decode(&s).unwrap();
            for version in [0, 1, 2, 3, 255] {
                let mut other = raw.clone();
                if other[0] == version {
                    continue;
                }
                other[0] = version;
                assert!(Cursor::decode(&base64url_encode(&other), "acme|q").is_err());
            }
            for i in 0..raw.len() {
                let mut flipped = raw.clone();
                flipped[i] ^= 0x10;
                assert!(
                    Cursor::decode(&base64url_encode(&flipped), "acme|q").is_err(),
                    "byte {i}"
                );
            }
        }
    }
}
