//! What a spool entry holds, and its byte encoding (the payload inside a segment frame).

use codestax_common::AuditRecord;

use crate::checkpoint::{FileKey, FilePosition, Fingerprint, TailCheck};
use crate::encoded;

const KIND_JSON: u8 = 1;
const KIND_FILE_POSITION: u8 = 2;
const KIND_LOG: u8 = 3;
const POSITION_LEN: usize = 1 + 8 + 8 + 4 + 8 + 8 + 4 + 8 + 8;

/// One entry of the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolEntry {
    /// An audit record with its `id` set, as the protobuf encoding of its OTLP LogRecord
    /// (attributes style, [`codestax_common::otlp::to_log_record`]): the forwarder puts these
    /// bytes into requests as they are, without parsing them again.
    Log(Vec<u8>),
    /// An audit record with its `id` set, as JSON: what spool format 1 held. Still read (a
    /// spool left by an older agent), never written.
    Json(Vec<u8>),
    /// How far a file has been read: written after that file's records in the same append, so
    /// the file checkpoint becomes durable in the same fsync as the records.
    FilePosition(FilePosition),
}

impl SpoolEntry {
    /// The entry of a record (whose `id` is set).
    pub fn record(record: &AuditRecord) -> SpoolEntry {
        let mut bytes = Vec::with_capacity(1024);
        encoded::encode_record(record, &mut bytes);
        SpoolEntry::Log(bytes)
    }

    /// The record an entry holds (`None` for a file position), or why it does not read back.
    pub fn to_record(&self) -> Option<Result<AuditRecord, String>> {
        match self {
            SpoolEntry::Log(bytes) => Some(encoded::decode_record(bytes)),
            SpoolEntry::Json(json) => Some(serde_json::from_slice(json).map_err(|e| e.to_string())),
            SpoolEntry::FilePosition(_) => None,
        }
    }

    /// Size of the encoded payload, in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            SpoolEntry::Log(bytes) | SpoolEntry::Json(bytes) => 1 + bytes.len(),
            SpoolEntry::FilePosition(_) => POSITION_LEN,
        }
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            SpoolEntry::Log(bytes) => {
                out.push(KIND_LOG);
                out.extend_from_slice(bytes);
            }
            SpoolEntry::Json(json) => {
                out.push(KIND_JSON);
                out.extend_from_slice(json);
            }
            SpoolEntry::FilePosition(p) => {
                out.push(KIND_FILE_POSITION);
                out.extend_from_slice(&p.key.dev.to_le_bytes());
                out.extend_from_slice(&p.key.ino.to_le_bytes());
                out.extend_from_slice(&p.fingerprint.len.to_le_bytes());
                out.extend_from_slice(&p.fingerprint.hash.to_le_bytes());
                out.extend_from_slice(&p.offset.to_le_bytes());
                out.extend_from_slice(&p.tail.len.to_le_bytes());
                out.extend_from_slice(&p.tail.hash.to_le_bytes());
                out.extend_from_slice(&p.stamp.to_le_bytes());
            }
        }
    }

    /// Decodes a payload whose checksum has been verified; `None` for an unknown kind.
    pub(crate) fn decode(payload: &[u8]) -> Option<SpoolEntry> {
        let (&kind, rest) = payload.split_first()?;
        SpoolEntry::from_parts(kind, rest.to_vec())
    }

    /// [`SpoolEntry::decode`], keeping the payload's buffer for the record's bytes.
    pub(crate) fn from_payload(mut payload: Vec<u8>) -> Option<SpoolEntry> {
        let kind = *payload.first()?;
        payload.drain(..1);
        SpoolEntry::from_parts(kind, payload)
    }

    /// Decodes a verified payload given as its kind byte and the bytes after it (which become
    /// a record's buffer as they are); `None` for an unknown kind.
    pub(crate) fn from_parts(kind: u8, rest: Vec<u8>) -> Option<SpoolEntry> {
        match kind {
            KIND_LOG => Some(SpoolEntry::Log(rest)),
            KIND_JSON => Some(SpoolEntry::Json(rest)),
            KIND_FILE_POSITION if rest.len() == POSITION_LEN - 1 => {
                let mut r = Fields(&rest);
                Some(SpoolEntry::FilePosition(FilePosition {
                    key: FileKey {
                        dev: r.u64(),
                        ino: r.u64(),
                    },
                    fingerprint: Fingerprint {
                        len: r.u32(),
                        hash: r.u64(),
                    },
                    offset: r.u64(),
                    tail: TailCheck {
                        len: r.u32(),
                        hash: r.u64(),
                    },
                    stamp: r.u64(),
                }))
            }
            _ => None,
        }
    }
}

struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u64(&mut self) -> u64 {
        let (head, rest) = self.0.split_at(8);
        self.0 = rest;
        u64::from_le_bytes(head.try_into().expect("8 bytes"))
    }
    fn u32(&mut self) -> u32 {
        let (head, rest) = self.0.split_at(4);
        self.0 = rest;
        u32::from_le_bytes(head.try_into().expect("4 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let entries = [
            SpoolEntry::Json(br#"{"id":"a"}"#.to_vec()),
            SpoolEntry::Log(vec![0x0a, 0x01, 0x02]),
            SpoolEntry::FilePosition(FilePosition {
                key: FileKey { dev: 1, ino: 2 },
                fingerprint: Fingerprint { len: 3, hash: 4 },
                offset: 5,
                tail: TailCheck { len: 6, hash: 7 },
                stamp: 8,
            }),
        ];
        for entry in entries {
            let mut buf = Vec::new();
            entry.encode_into(&mut buf);
            assert_eq!(buf.len(), entry.encoded_len());
            assert_eq!(SpoolEntry::decode(&buf), Some(entry));
        }
        assert_eq!(SpoolEntry::decode(&[9, 1, 2]), None);
    }
}
