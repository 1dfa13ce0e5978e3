//! What a spool entry holds, and its byte encoding (the payload inside a segment frame).

use crate::checkpoint::{FileKey, FilePosition, Fingerprint, TailCheck};

const KIND_RECORD: u8 = 1;
const KIND_FILE_POSITION: u8 = 2;
const POSITION_LEN: usize = 1 + 8 + 8 + 4 + 8 + 8 + 4 + 8 + 8;

/// One entry of the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolEntry {
    /// An audit record, as JSON, with its `id` set.
    Record(Vec<u8>),
    /// How far a file has been read: written after that file's records in the same append, so
    /// the file checkpoint becomes durable in the same fsync as the records.
    FilePosition(FilePosition),
}

impl SpoolEntry {
    /// Size of the encoded payload, in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            SpoolEntry::Record(json) => 1 + json.len(),
            SpoolEntry::FilePosition(_) => POSITION_LEN,
        }
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            SpoolEntry::Record(json) => {
                out.push(KIND_RECORD);
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
        match kind {
            KIND_RECORD => Some(SpoolEntry::Record(rest.to_vec())),
            KIND_FILE_POSITION if payload.len() == POSITION_LEN => {
                let mut r = Fields(rest);
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
            SpoolEntry::Record(br#"{"id":"a"}"#.to_vec()),
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
