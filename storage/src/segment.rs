//! Segment files: a 16-byte header, then frames. A segment is named by a 20-digit number and a
//! suffix (`00000000000000000001.seg`) and only ever appended to.
//!
//! Header: the format's magic, its version (u32 LE), then — for formats whose segments are named
//! by their first entry — that number (u64 LE, equal to the file name), zero-padded to 16 bytes.
//! The version says which [`Checksum`] rule the segment's frames follow.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::dir::sync_dir;
use crate::frame::{Checksum, FRAME_OVERHEAD, FrameProblem};

/// Bytes before the first frame of a segment.
pub const HEADER_LEN: u64 = 16;

/// How one kind of log lays out its segments.
#[derive(Debug)]
pub struct SegmentFormat {
    /// What a segment is called in messages ("spool segment").
    pub noun: &'static str,
    /// The first bytes of every segment (at most 8).
    pub magic: &'static [u8],
    /// The file name suffix (`.seg`).
    pub suffix: &'static str,
    /// The version written.
    pub version: u32,
    /// The oldest version read.
    pub oldest_version: u32,
    /// Whether segments are named (and their header stamped) by the number of their first entry,
    /// entries being numbered across segments; otherwise by a sequence number.
    pub named_by_first_entry: bool,
    /// The checksum rule of a version.
    pub checksum: fn(u32) -> Checksum,
    /// The largest payload; a length field above it is damage, not data.
    pub max_payload: u32,
}

impl SegmentFormat {
    /// The file of segment `id` in `dir`.
    pub fn path(&self, dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("{id:020}{}", self.suffix))
    }

    fn temp_path(&self, dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("{id:020}{}.tmp", self.suffix))
    }

    /// The segment number of a file name, if it names a segment of this format.
    pub fn parse_name(&self, name: &str) -> Option<u64> {
        let digits = name.strip_suffix(self.suffix)?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The segments in `dir`, in order. Leftover temporary files of an interrupted creation are
    /// removed.
    pub fn list(&self, dir: &Path) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        let temp_suffix = format!("{}.tmp", self.suffix);
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(&temp_suffix) {
                tracing::info!(path = %entry.path().display(), "removing an unfinished segment");
                fs::remove_file(entry.path())?;
            } else if let Some(id) = self.parse_name(name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The header of a new segment `id`.
    pub fn header(&self, id: u64) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        let m = self.magic.len();
        h[..m].copy_from_slice(self.magic);
        h[m..m + 4].copy_from_slice(&self.version.to_le_bytes());
        if self.named_by_first_entry {
            h[m + 4..m + 12].copy_from_slice(&id.to_le_bytes());
        }
        h
    }

    /// Checks a header; its version, or why it is unusable.
    pub fn check_header(&self, h: &[u8], id: u64) -> Result<u32, String> {
        let noun = self.noun;
        if h.len() < HEADER_LEN as usize {
            return Err(format!("header is {} of {HEADER_LEN} bytes", h.len()));
        }
        let m = self.magic.len();
        if &h[..m] != self.magic {
            return Err(format!("not a {noun} (bad magic)"));
        }
        let version = u32::from_le_bytes(h[m..m + 4].try_into().expect("4 bytes"));
        if !(self.oldest_version..=self.version).contains(&version) {
            return Err(format!(
                "{noun} format version {version}; this build reads {} to {}",
                self.oldest_version, self.version
            ));
        }
        if self.named_by_first_entry {
            let stamped = u64::from_le_bytes(h[m + 4..m + 12].try_into().expect("8 bytes"));
            if stamped != id {
                return Err(format!(
                    "header says first entry {stamped}, file name says {id}"
                ));
            }
        }
        Ok(version)
    }

    /// Creates an empty segment durably: temporary file, fsync, rename (over an empty segment
    /// of the same name, if any), fsync of the directory. A listed segment always has a whole
    /// header.
    pub fn create(&self, dir: &Path, id: u64) -> io::Result<File> {
        let temp = self.temp_path(dir, id);
        let written = File::create(&temp).and_then(|mut f| {
            f.write_all(&self.header(id))?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        let path = self.path(dir, id);
        fs::rename(&temp, &path)?;
        sync_dir(dir)?;
        fs::OpenOptions::new().append(true).open(&path)
    }
}

/// What the next frame of a segment is.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A clean end of the range read.
    End,
    /// A verified entry's payload.
    Entry(Vec<u8>),
    /// A torn or damaged frame; the reader's offset names its start.
    Bad(FrameProblem),
}

/// Reads a segment's frames in order, verifying each.
#[derive(Debug)]
pub struct SegmentReader {
    file: BufReader<File>,
    offset: u64,
    version: u32,
    checksum: Checksum,
    max_payload: u32,
}

impl SegmentReader {
    /// Opens segment `id` of `dir` and checks its header: `Ok(Err(why))` when the header is
    /// unusable. Positioned at `offset` (at least [`HEADER_LEN`]).
    pub fn open(
        format: &SegmentFormat,
        dir: &Path,
        id: u64,
        offset: u64,
    ) -> io::Result<Result<SegmentReader, String>> {
        let mut file = File::open(format.path(dir, id))?;
        let mut h = [0u8; HEADER_LEN as usize];
        let n = read_full(&mut file, &mut h)?;
        let version = match format.check_header(&h[..n], id) {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        let offset = offset.max(HEADER_LEN);
        if offset != HEADER_LEN {
            file.seek(SeekFrom::Start(offset))?;
        }
        Ok(Ok(SegmentReader {
            file: BufReader::with_capacity(256 * 1024, file),
            offset,
            version,
            checksum: (format.checksum)(version),
            max_payload: format.max_payload,
        }))
    }

    /// Where the next frame starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The segment's format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Reads the frame at [`SegmentReader::offset`] of a range ending at byte `end`. After a
    /// problem the offset still names the start of the bad frame.
    pub fn next(&mut self, end: u64) -> io::Result<Frame> {
        let remaining = end.saturating_sub(self.offset);
        if remaining == 0 {
            return Ok(Frame::End);
        }
        let mut head = [0u8; FRAME_OVERHEAD as usize];
        if remaining < FRAME_OVERHEAD || read_full(&mut self.file, &mut head)? < head.len() {
            return Ok(Frame::Bad(FrameProblem::Truncated));
        }
        let len_bytes: [u8; 4] = head[..4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(len_bytes);
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 || len > self.max_payload {
            return Ok(Frame::Bad(FrameProblem::BadLength(len)));
        }
        if u64::from(len) > remaining - FRAME_OVERHEAD {
            return Ok(Frame::Bad(FrameProblem::Truncated));
        }
        let mut payload = vec![0u8; len as usize];
        if read_full(&mut self.file, &mut payload)? < payload.len() {
            return Ok(Frame::Bad(FrameProblem::Truncated));
        }
        if self.checksum.of(len_bytes, &[&payload]) != crc {
            return Ok(Frame::Bad(FrameProblem::BadChecksum));
        }
        self.offset += FRAME_OVERHEAD + u64::from(len);
        Ok(Frame::Entry(payload))
    }

    /// Takes back a frame just read (its reader refused it): the offset names its start again.
    pub fn unread(&mut self, payload_len: usize) -> io::Result<()> {
        let back = FRAME_OVERHEAD as i64 + payload_len as i64;
        self.file.seek_relative(-back)?;
        self.offset -= back as u64;
        Ok(())
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
    use crate::frame::Frames;

    static FORMAT: SegmentFormat = SegmentFormat {
        noun: "test segment",
        magic: b"TESTSEG!",
        suffix: ".seg",
        version: 2,
        oldest_version: 1,
        named_by_first_entry: false,
        checksum: |v| match v {
            1 => Checksum::Payload,
            _ => Checksum::LenAndPayload,
        },
        max_payload: 1 << 20,
    };

    #[test]
    fn a_flipped_bit_anywhere_in_a_frame_is_detected() {
        let mut frames = Frames::new();
        frames.push(Checksum::LenAndPayload, br#"{"id":"x","n":12345}"#);
        let frame = frames.bytes().to_vec();
        let dir = tempfile::tempdir().unwrap();
        for byte in 0..frame.len() {
            let mut damaged = FORMAT.header(1).to_vec();
            let mut f = frame.clone();
            f[byte] ^= 0x10;
            damaged.extend_from_slice(&f);
            fs::write(FORMAT.path(dir.path(), 1), &damaged).unwrap();
            let mut r = SegmentReader::open(&FORMAT, dir.path(), 1, 0)
                .unwrap()
                .unwrap();
            let got = r.next(damaged.len() as u64).unwrap();
            assert!(
                matches!(got, Frame::Bad(_)),
                "flip at byte {byte} went unnoticed"
            );
            assert_eq!(r.offset(), HEADER_LEN);
        }
    }

    #[test]
    fn each_version_is_read_with_its_checksum_rule() {
        let dir = tempfile::tempdir().unwrap();
        for (version, rule) in [(1, Checksum::Payload), (2, Checksum::LenAndPayload)] {
            let mut bytes = FORMAT.header(1).to_vec();
            bytes[8..12].copy_from_slice(&u32::to_le_bytes(version));
            let mut frames = Frames::new();
            frames.push(rule, b"payload");
            bytes.extend_from_slice(frames.bytes());
            fs::write(FORMAT.path(dir.path(), 1), &bytes).unwrap();
            let mut r = SegmentReader::open(&FORMAT, dir.path(), 1, 0)
                .unwrap()
                .unwrap();
            assert_eq!(r.version(), version);
            let end = bytes.len() as u64;
            assert_eq!(r.next(end).unwrap(), Frame::Entry(b"payload".to_vec()));
            assert_eq!(r.next(end).unwrap(), Frame::End);
        }
        // A version outside the range read is named.
        let mut bytes = FORMAT.header(1).to_vec();
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        fs::write(FORMAT.path(dir.path(), 1), &bytes).unwrap();
        let why = SegmentReader::open(&FORMAT, dir.path(), 1, 0)
            .unwrap()
            .unwrap_err();
        assert!(why.contains("version 9"), "{why}");
    }
}
