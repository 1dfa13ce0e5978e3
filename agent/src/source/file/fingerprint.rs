//! File identity and derived record ids: hashes of a file's first bytes, of the bytes before a
//! checkpoint, and of a line's place in its file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::checkpoint::{Fingerprint, TailCheck};

/// Bytes before a checkpoint that are checked to detect truncate-and-rewrite.
pub const TAIL_CHECK_BYTES: u64 = 64;

/// A 64-bit hash (the first 8 bytes of SHA-256).
pub fn hash64(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let filled = fill_at(file, offset, &mut buf)?;
    buf.truncate(filled);
    Ok(buf)
}

/// Reads from `offset` into `buf` until it is full or the file ends; the bytes read.
pub fn fill_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The fingerprint of a file's first bytes (`prefix` is at most the configured size).
pub fn fingerprint_of(prefix: &[u8]) -> Fingerprint {
    Fingerprint {
        len: prefix.len() as u32,
        hash: hash64(prefix),
    }
}

/// Whether `prefix` (a file's first bytes, possibly more than the fingerprint covers) starts
/// with the bytes `fingerprint` was taken of.
pub fn prefix_matches(prefix: &[u8], fingerprint: Fingerprint) -> bool {
    let len = fingerprint.len as usize;
    prefix.len() >= len && hash64(&prefix[..len]) == fingerprint.hash
}

/// The tail check of bytes that end at a checkpoint's offset (at most [`TAIL_CHECK_BYTES`]).
pub fn tail_check_of(bytes: &[u8]) -> TailCheck {
    TailCheck {
        len: bytes.len() as u32,
        hash: hash64(bytes),
    }
}

/// The bytes of `file` just before `offset`: `min(offset, TAIL_CHECK_BYTES)` of them, fewer if
/// the file is now shorter.
pub fn tail_bytes(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let len = offset.min(TAIL_CHECK_BYTES);
    read_at(file, offset - len, len as usize)
}

/// Whether the bytes before `offset` are still those `tail` was taken of. A tail of fewer than
/// `min(offset, TAIL_CHECK_BYTES)` bytes never matches: it was taken of a file that was shorter
/// than the offset then.
pub fn tail_matches(file: &File, offset: u64, tail: TailCheck) -> io::Result<bool> {
    if u64::from(tail.len) != offset.min(TAIL_CHECK_BYTES) {
        return Ok(false);
    }
    if tail.len == 0 {
        return Ok(true);
    }
    let bytes = tail_bytes(file, offset)?;
    Ok(bytes.len() == tail.len as usize && hash64(&bytes) == tail.hash)
}

/// The id given to a record read without one: a hash of the file's first bytes up to the end
/// of the line (at most the fingerprint size), the line's offset and the line itself. Stable
/// across restarts and replays (the bytes hashed never change in an append-only file), equal
/// for the same line in a copy of the file (so the collector's dedupe removes the copy), and
/// different for different lines at the same offset of files that begin alike.
pub fn derived_id(prefix: &[u8], offset: u64, line: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"codestax-agent/file-line/v1\0");
    h.update((prefix.len() as u64).to_le_bytes());
    h.update(prefix);
    h.update(offset.to_le_bytes());
    h.update(line);
    let digest = h.finalize();
    format!("f-{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprints_grow_with_short_files() {
        let first = fingerprint_of(b"{\"a\":1}\n");
        assert!(prefix_matches(b"{\"a\":1}\n{\"b\":2}\n", first));
        assert!(!prefix_matches(b"{\"a\":2}\n{\"b\":2}\n", first));
        assert!(
            !prefix_matches(b"{\"a\"", first),
            "shorter than the fingerprint"
        );
        assert!(prefix_matches(b"", fingerprint_of(b"")));
    }

    #[test]
    fn tail_checks_see_rewrites() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"line one\nline two\n").unwrap();
        let file = f.reopen().unwrap();
        let tail = tail_check_of(&tail_bytes(&file, 18).unwrap());
        assert_eq!(tail.len, 18);
        assert!(tail_matches(&file, 18, tail).unwrap());
        file.set_len(0).unwrap();
        f.write_all(b"other 1\nother 2\nmore").unwrap();
        assert!(!tail_matches(&f.reopen().unwrap(), 18, tail).unwrap());
        assert!(tail_matches(&file, 0, TailCheck::default()).unwrap());
    }

    #[test]
    fn a_tail_taken_of_a_shorter_file_never_matches() {
        // Taken while the file was truncated (a copytruncate racing a read): it would otherwise
        // match whatever is written there next.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let empty = tail_check_of(&tail_bytes(&f.reopen().unwrap(), 58_035).unwrap());
        assert_eq!(empty.len, 0);
        f.write_all(&[b'x'; 60_000]).unwrap();
        assert!(!tail_matches(&f.reopen().unwrap(), 58_035, empty).unwrap());
        assert!(!tail_matches(&f.reopen().unwrap(), 10, TailCheck::default()).unwrap());
        let short = tail_check_of(b"xxxx");
        assert!(!tail_matches(&f.reopen().unwrap(), 100, short).unwrap());
        assert!(tail_matches(&f.reopen().unwrap(), 4, short).unwrap());
    }

    #[test]
    fn derived_ids() {
        let a = derived_id(b"hdr", 10, b"{}");
        assert_eq!(a, derived_id(b"hdr", 10, b"{}"));
        assert_ne!(a, derived_id(b"hdr", 11, b"{}"));
        assert_ne!(a, derived_id(b"hdx", 10, b"{}"));
        assert_ne!(a, derived_id(b"hdr", 10, b"{ }"));
        assert_eq!(a.len(), 34);
    }
}
