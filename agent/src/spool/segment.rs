//! The spool's segment format: a 16-byte header (`CSXSPOOL`, version u32 LE, 4 zero bytes), then
//! frames whose CRC-32 covers the length and the payload ([`codestax_storage::frame`]).
//! Segments are named by their sequence number, `00000000000000000001.seg`.

use codestax_storage::{Checksum, FRAME_OVERHEAD, Frames, SegmentFormat};

use super::entry::SpoolEntry;

/// The segments of the spool. Version 1 held records as JSON only; version 2 adds records as
/// encoded LogRecords (and reads version 1).
pub(crate) static FORMAT: SegmentFormat = SegmentFormat {
    noun: "spool segment",
    magic: b"CSXSPOOL",
    suffix: ".seg",
    version: 2,
    oldest_version: 1,
    named_by_first_entry: false,
    checksum: |_| Checksum::LenAndPayload,
    max_payload: 1 << 30,
};

/// Appends the frame of `entry` to `frames`.
pub(crate) fn push_frame(frames: &mut Frames, checksum: Checksum, entry: &SpoolEntry) {
    frames.push_with(checksum, |out| entry.encode_into(out));
}

/// The size of `entry` once framed.
pub(crate) fn framed_len(entry: &SpoolEntry) -> u64 {
    FRAME_OVERHEAD + entry.encoded_len() as u64
}
