//! The opaque pagination cursor.
//!
//! Layout (then base64url without padding):
//!
//! | bytes | content                                                                |
//! |-------|------------------------------------------------------------------------|
//! | 1     | version, `1`                                                           |
//! | 8     | snapshot: records with an LSN at or above it are excluded (big-endian)  |
//! | 8     | `time` of the last entry returned, microseconds (big-endian, signed)   |
//! | n     | `id` of the last entry returned, UTF-8                                 |
//! | 8     | tag: first 8 bytes of SHA-256 over the org, the query and the bytes above |
//!
//! The tag makes any change (truncation, bit flips, another version) and any reuse with another
//! org or other filters a [`IndexError::BadCursor`]. It is not a secret: a crafted cursor can at
//! most choose where a walk of the caller's own org starts.

use super::error::IndexError;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8;
const TAG: usize = 8;
/// Longer cursors are rejected before decoding.
const MAX_CURSOR_CHARS: usize = 1024;

/// Where a walk is: the snapshot fixed on its first page, and the last entry returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Exclusive upper bound on the LSN of records in the walk.
    pub snapshot: u64,
    pub time: i64,
    pub id: String,
}

impl Cursor {
    /// Encodes the cursor for a walk identified by `scope` (the org and the normalised query).
    pub fn encode(&self, scope: &str) -> String {
        let mut bytes = Vec::with_capacity(HEADER + self.id.len() + TAG);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.snapshot.to_be_bytes());
        bytes.extend_from_slice(&self.time.to_be_bytes());
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
        if bytes.len() < HEADER + TAG {
            return Err(bad("too short"));
        }
        if bytes[0] != VERSION {
            return Err(bad("unsupported version"));
        }
        let (body, got_tag) = bytes.split_at(bytes.len() - TAG);
        if tag(scope, body) != got_tag {
            return Err(bad("does not belong to this org and query, or was altered"));
        }
        let snapshot = u64::from_be_bytes(body[1..9].try_into().expect("8 bytes"));
        let time = i64::from_be_bytes(body[9..17].try_into().expect("8 bytes"));
        let id = std::str::from_utf8(&body[HEADER..])
            .map_err(|_| bad("id is not UTF-8"))?
            .to_string();
        Ok(Cursor { snapshot, time, id })
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
        let c = Cursor {
            snapshot: 1234,
            time: -5,
            id: "evt-ü-1".into(),
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
        let mut other_version = base64url_decode(&s).unwrap();
        other_version[0] = 2;
        assert!(Cursor::decode(&base64url_encode(&other_version), "acme|q").is_err());
    }
}
