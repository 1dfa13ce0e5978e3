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
//! | 8     | tag: HMAC-SHA256 under the [`CursorKey`] of the org and query, then the bytes above; first 8 bytes |
//!
//! Version 1 (issued before the count was carried) is the same without the three count fields;
//! its layout is still read (the next page counts afresh), but every version 1 cursor issued
//! carries the unkeyed tag of its time, and is refused.
//!
//! The tag makes any change (truncation, bit flips, another version) and any reuse with another
//! org or other filters a [`IndexError::BadCursor`]. It is keyed with a secret of the collector,
//! derived from its signing key (which every node of a cluster shares, so a cursor one node
//! issued continues on another): only the collector makes cursors. That is what makes a search
//! recorded once per result set (its first page, without a cursor) a record of every read: a
//! cursor no recorded first page began, such as one starting a walk above the newest record of
//! any snapshot, is a `BadCursor`, and so is every cursor tagged before the tag was keyed (a bare
//! SHA-256 of public inputs that anyone could compute).

use super::error::IndexError;
use codestax_common::note::NoteSigner;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;

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

/// The key of cursors' tags. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    /// What the key is derived for from the signing key.
    const PURPOSE: &'static str = "codestax-audit/search-cursor";

    /// The key derived from the collector's signing key: the same on every node that has it.
    pub fn from_signer(signer: &NoteSigner) -> CursorKey {
        CursorKey(signer.derive_key(Self::PURPOSE))
    }

    /// A key of this process alone, until [`crate::index::AuditIndex::set_cursor_key`].
    pub(crate) fn random() -> CursorKey {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        CursorKey(key)
    }
}

impl fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl Cursor {
    /// Encodes the cursor for a walk identified by `scope` (the org and the normalised query),
    /// tagged under `key`.
    pub fn encode(&self, scope: &str, key: &CursorKey) -> String {
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
        let tag = tag(key, scope, &bytes);
        bytes.extend_from_slice(&tag);
        base64url_encode(&bytes)
    }

    /// Decodes a cursor issued for `scope` and tagged under `key`.
    pub fn decode(s: &str, scope: &str, key: &CursorKey) -> Result<Cursor, IndexError> {
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
        // Compared in constant time: how much of a tag matched must not show in the timing.
        if !tag_matches(key, scope, body, got_tag) {
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

fn mac(key: &CursorKey, scope: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update((scope.len() as u64).to_be_bytes().as_slice());
    mac.update(scope.as_bytes());
    mac.update(body);
    mac
}

fn tag(key: &CursorKey, scope: &str, body: &[u8]) -> [u8; TAG] {
    let digest = mac(key, scope, body).finalize().into_bytes();
    digest[..TAG].try_into().expect("HMAC-SHA256 has 32 bytes")
}

fn tag_matches(key: &CursorKey, scope: &str, body: &[u8], got: &[u8]) -> bool {
    mac(key, scope, body).verify_truncated_left(got).is_ok()
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
            let key = CursorKey::random();
            let s = c.encode("acme|q", &key);
            assert_eq!(Cursor::decode(&s, "acme|q", &key).unwrap(), c);
            assert!(matches!(
                Cursor::decode(&s, "globex|q", &key),
                Err(IndexError::BadCursor(_))
            ));
            for cut in 0..s.len() {
                assert!(
                    Cursor::decode(&s[..cut], "acme|q", &key).is_err(),
                    "cut {cut}"
                );
            }
            let raw = base64url_decode(&s).unwrap();
            for version in [0, 1, 2, 3, 255] {
                let mut other = raw.clone();
                if other[0] == version {
                    continue;
                }
                other[0] = version;
                assert!(Cursor::decode(&base64url_encode(&other), "acme|q", &key).is_err());
            }
            for i in 0..raw.len() {
                let mut flipped = raw.clone();
                flipped[i] ^= 0x10;
                assert!(
                    Cursor::decode(&base64url_encode(&flipped), "acme|q", &key).is_err(),
                    "byte {i}"
                );
            }
        }
    }

    /// The tag is keyed: a cursor made under another key, or with the unkeyed SHA-256 tag
    /// cursors had before, is refused; the key derived from one signing key is the same on
    /// every node holding it, so a cursor one node issued continues on another.
    #[test]
    fn only_a_cursor_tagged_under_the_collectors_key_decodes() {
        let signer = NoteSigner::new("collector.test", [7; 32]).unwrap();
        let node_a = CursorKey::from_signer(&signer);
        let node_b = CursorKey::from_signer(&NoteSigner::parse(&signer.encode()).unwrap());
        let other = CursorKey::from_signer(&NoteSigner::new("collector.test", [8; 32]).unwrap());
        let c = Cursor {
            snapshot: u64::MAX,
            time: i64::MAX,
            id: String::new(),
            count: None,
        };
        let issued = c.encode("acme|q", &node_a);
        assert_eq!(Cursor::decode(&issued, "acme|q", &node_b).unwrap(), c);
        for key in [&other, &CursorKey::random()] {
            assert!(matches!(
                Cursor::decode(&issued, "acme|q", key),
                Err(IndexError::BadCursor(_))
            ));
        }
        // Before the key: SHA-256 over a fixed prefix, the scope and the body.
        use sha2::Digest;
        let body = base64url_decode(&issued).unwrap()[..HEADER_1].to_vec();
        let mut h = Sha256::new();
        h.update(b"codestax-audit-cursor\0");
        h.update(6u64.to_be_bytes());
        h.update(b"acme|q");
        h.update(&body);
        let mut unkeyed = body;
        unkeyed.extend_from_slice(&h.finalize()[..TAG]);
        assert!(matches!(
            Cursor::decode(&base64url_encode(&unkeyed), "acme|q", &node_a),
            Err(IndexError::BadCursor(_))
        ));
    }
}
