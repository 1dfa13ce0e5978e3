//! One entry on disk: `len: u32 LE | crc: u32 LE | payload: len bytes`, `len` from 1 to the
//! format's limit. Which bytes the CRC-32 covers is the segment format's [`Checksum`] rule.

/// Bytes of a frame before its payload.
pub const FRAME_OVERHEAD: u64 = 8;

/// What a frame's CRC-32 covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The length field and the payload: a damaged length is caught by the checksum too. What
    /// every log writes now.
    LenAndPayload,
    /// The payload only: what WAL segments of format 1 hold.
    Payload,
}

impl Checksum {
    pub(crate) fn of(self, len: [u8; 4], payload: &[&[u8]]) -> u32 {
        let mut crc = crc32fast::Hasher::new();
        if self == Checksum::LenAndPayload {
            crc.update(&len);
        }
        for part in payload {
            crc.update(part);
        }
        crc.finalize()
    }
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameProblem {
    /// The data ends inside the frame.
    Truncated,
    /// The length field is zero or over the format's limit.
    BadLength(u32),
    /// The checksum does not match.
    BadChecksum,
    /// The checksum matches but the reader of the payload refused it.
    Refused(String),
}

impl std::fmt::Display for FrameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameProblem::Truncated => f.write_str("the file ends inside an entry (torn write)"),
            FrameProblem::BadLength(n) => write!(f, "impossible entry length {n}"),
            FrameProblem::BadChecksum => f.write_str("checksum mismatch"),
            FrameProblem::Refused(why) => f.write_str(why),
        }
    }
}

/// Frames appended to a buffer, to be written in one go.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
    count: u64,
}

impl Frames {
    pub fn new() -> Frames {
        Frames::default()
    }

    /// Adds a frame whose payload `fill` appends; `checksum` is the rule of the segment the
    /// frames go to ([`crate::Log::checksum`]). The payload must not be empty.
    pub fn push_with(&mut self, checksum: Checksum, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; FRAME_OVERHEAD as usize]);
        fill(&mut self.buf);
        let payload = start + FRAME_OVERHEAD as usize;
        let len = u32::try_from(self.buf.len() - payload).expect("payload under 4 GiB");
        debug_assert!(len > 0, "empty payloads are refused before framing");
        let len_bytes = len.to_le_bytes();
        let crc = checksum.of(len_bytes, &[&self.buf[payload..]]);
        self.buf[start..start + 4].copy_from_slice(&len_bytes);
        self.buf[start + 4..payload].copy_from_slice(&crc.to_le_bytes());
        self.count += 1;
    }

    /// Adds a frame holding `payload`.
    pub fn push(&mut self, checksum: Checksum, payload: &[u8]) {
        self.push_with(checksum, |out| out.extend_from_slice(payload));
    }

    /// The frames' bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// How many frames.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes so far (frame headers included).
    pub fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Empties the buffer, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}
