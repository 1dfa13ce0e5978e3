//! The segment file format: a 16-byte header (`CSXSPOOL`, version u32 LE, 4 zero bytes), then
//! frames `len: u32 LE | crc32(len bytes ++ payload): u32 LE | payload`. Segments are named by
//! their sequence number, `00000000000000000001.seg`, and only ever appended to.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::entry::SpoolEntry;

pub(crate) const MAGIC: &[u8; 8] = b"CSXSPOOL";
/// The format written. Version 1 held records as JSON only; version 2 adds records as encoded
/// LogRecords (and reads version 1).
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest format read.
pub(crate) const OLDEST_VERSION: u32 = 1;
/// Bytes before the first frame of a segment.
pub const HEADER_LEN: u64 = 16;
/// Bytes of a frame before its payload.
pub const FRAME_OVERHEAD: u64 = 8;
/// No payload is larger than this; a length field above it is damage, not data.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 30;
const SUFFIX: &str = ".seg";

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SUFFIX}"))
}

/// Sequence numbers of the segments in `dir`, in order.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name
            .strip_suffix(SUFFIX)
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<u64>().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

pub(crate) fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Creates a new, empty segment and makes it durable (file and directory entry).
pub(crate) fn create(dir: &Path, seq: u64) -> io::Result<File> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .read(true)
        .open(&path)?;
    file.write_all(&header())?;
    file.sync_all()?;
    crate::state_file::sync_dir(dir)?;
    Ok(file)
}

/// Appends the frame of `entry` to `out`.
pub(crate) fn encode_frame(entry: &SpoolEntry, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_OVERHEAD as usize]);
    entry.encode_into(out);
    let len =
        u32::try_from(out.len() - start - FRAME_OVERHEAD as usize).expect("entry under 4 GiB");
    let len_bytes = len.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(&out[start + FRAME_OVERHEAD as usize..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// The size of `entry` once framed.
pub(crate) fn framed_len(entry: &SpoolEntry) -> u64 {
    FRAME_OVERHEAD + entry.encoded_len() as u64
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameProblem {
    /// The file ends inside the frame.
    Truncated,
    /// The length field is impossible.
    BadLength(u32),
    /// The checksum does not match.
    BadChecksum,
    /// The checksum matches but the payload is of an unknown kind.
    UnknownKind,
}

impl std::fmt::Display for FrameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameProblem::Truncated => f.write_str("the file ends inside an entry (torn write)"),
            FrameProblem::BadLength(n) => write!(f, "impossible entry length {n}"),
            FrameProblem::BadChecksum => f.write_str("checksum mismatch"),
            FrameProblem::UnknownKind => f.write_str("unknown entry kind"),
        }
    }
}

/// Reads frames sequentially from a segment file.
pub(crate) struct FrameReader {
    file: BufReader<File>,
    offset: u64,
}

impl FrameReader {
    /// Opens a segment positioned at `offset` (at least [`HEADER_LEN`]).
    pub(crate) fn open(path: &Path, offset: u64) -> io::Result<FrameReader> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(FrameReader {
            file: BufReader::with_capacity(256 * 1024, file),
            offset,
        })
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Checks the segment header and returns its format version; the reader must be at
    /// offset 0.
    pub(crate) fn read_header(&mut self) -> io::Result<Result<u32, String>> {
        let mut h = [0u8; HEADER_LEN as usize];
        let n = read_full(&mut self.file, &mut h)?;
        self.offset += n as u64;
        if n < h.len() {
            return Ok(Err(format!("header is {n} of {HEADER_LEN} bytes")));
        }
        if &h[..8] != MAGIC {
            return Ok(Err("not a spool segment (bad magic)".into()));
        }
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
            return Ok(Err(format!(
                "segment format version {version}; this agent reads {OLDEST_VERSION} to {FORMAT_VERSION}"
            )));
        }
        Ok(Ok(version))
    }

    /// Reads the next frame: `Ok(None)` at a clean end of file. After a problem the reader's
    /// offset still names the start of the bad frame.
    pub(crate) fn next(&mut self) -> io::Result<Option<Result<SpoolEntry, FrameProblem>>> {
        let mut head = [0u8; FRAME_OVERHEAD as usize];
        let n = read_full(&mut self.file, &mut head)?;
        if n == 0 {
            return Ok(None);
        }
        if n < head.len() {
            return Ok(Some(Err(FrameProblem::Truncated)));
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_PAYLOAD {
            return Ok(Some(Err(FrameProblem::BadLength(len))));
        }
        // The kind byte, then the rest straight into the entry's own buffer.
        let mut kind = [0u8; 1];
        let mut rest = vec![0u8; len as usize - 1];
        if read_full(&mut self.file, &mut kind)? < 1
            || read_full(&mut self.file, &mut rest)? < rest.len()
        {
            return Ok(Some(Err(FrameProblem::Truncated)));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head[..4]);
        hasher.update(&kind);
        hasher.update(&rest);
        if hasher.finalize() != crc {
            return Ok(Some(Err(FrameProblem::BadChecksum)));
        }
        let Some(entry) = SpoolEntry::from_parts(kind[0], rest) else {
            return Ok(Some(Err(FrameProblem::UnknownKind)));
        };
        self.offset += FRAME_OVERHEAD + u64::from(len);
        Ok(Some(Ok(entry)))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_anywhere_in_a_frame_is_detected() {
        let entry = SpoolEntry::Json(br#"{"id":"x","n":12345}"#.to_vec());
        let mut frame = Vec::new();
        encode_frame(&entry, &mut frame);
        assert_eq!(frame.len() as u64, framed_len(&entry));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for byte in 0..frame.len() {
            let mut damaged = header().to_vec();
            let mut f = frame.clone();
            f[byte] ^= 0x10;
            damaged.extend_from_slice(&f);
            fs::write(&path, &damaged).unwrap();
            let mut r = FrameReader::open(&path, 0).unwrap();
            r.read_header().unwrap().unwrap();
            let got = r.next().unwrap().unwrap();
            assert!(got.is_err(), "flip at byte {byte} went unnoticed");
            assert_eq!(r.offset(), HEADER_LEN);
        }
    }
}
