//! [`FixedReader`]: random reads of a [`Log`](crate::Log) whose entries all have one payload
//! length (the collector's Merkle trees: 32-byte hashes). With every frame the same size, entry
//! `n` of a segment starting at entry `f` is at byte `HEADER_LEN + (n - f) × (8 + len)`, so one
//! entry is one positioned read, its frame verified as the log's readers verify it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::frame::{Checksum, FRAME_OVERHEAD, FrameProblem};
use crate::log::{Catalog, LogError};
use crate::segment::HEADER_LEN;

/// Open segment files kept at most.
const OPEN_FILES: usize = 8;

/// Reads durable entries of a fixed-size log by number.
#[derive(Debug)]
pub struct FixedReader {
    catalog: Catalog,
    payload_len: u32,
    files: HashMap<u64, (File, Checksum)>,
    frame: Vec<u8>,
}

impl FixedReader {
    /// A reader of `catalog`'s durable entries, every one of which has `payload_len` bytes.
    pub fn new(catalog: Catalog, payload_len: u32) -> FixedReader {
        FixedReader {
            catalog,
            payload_len,
            files: HashMap::new(),
            frame: vec![0; FRAME_OVERHEAD as usize + payload_len as usize],
        }
    }

    /// Reads entry `number` into `out` (`payload_len` bytes). An entry that is not durable, a
    /// frame of another length or a bad checksum is an error naming the file and offset.
    pub fn read(&mut self, number: u64, out: &mut [u8]) -> Result<(), LogError> {
        debug_assert_eq!(out.len(), self.payload_len as usize);
        let Some((id, state)) = self.catalog.containing(number) else {
            return Err(LogError::Corrupt {
                path: self.catalog.dir().to_path_buf(),
                offset: 0,
                reason: format!("no durable entry {number}"),
            });
        };
        let path = self.catalog.path(id);
        let offset = HEADER_LEN + (number - state.first_entry) * self.frame.len() as u64;
        let corrupt = |path: PathBuf, problem: FrameProblem| LogError::Corrupt {
            path,
            offset,
            reason: problem.to_string(),
        };
        if offset + self.frame.len() as u64 > state.len {
            return Err(corrupt(path, FrameProblem::Truncated));
        }
        if !self.files.contains_key(&id) {
            if self.files.len() >= OPEN_FILES {
                self.files.clear();
            }
            let file = File::open(&path).map_err(|source| LogError::Io {
                path: path.clone(),
                source,
            })?;
            let mut header = [0u8; HEADER_LEN as usize];
            file.read_exact_at(&mut header, 0)
                .map_err(|source| LogError::Io {
                    path: path.clone(),
                    source,
                })?;
            let format = self.catalog.format();
            let version = format
                .check_header(&header, id)
                .map_err(|reason| LogError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason,
                })?;
            self.files.insert(id, (file, (format.checksum)(version)));
        }
        let (file, checksum) = &self.files[&id];
        file.read_exact_at(&mut self.frame, offset)
            .map_err(|source| LogError::Io {
                path: path.clone(),
                source,
            })?;
        let len_bytes: [u8; 4] = self.frame[..4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(len_bytes);
        if len != self.payload_len {
            return Err(corrupt(path, FrameProblem::BadLength(len)));
        }
        let crc = u32::from_le_bytes(self.frame[4..8].try_into().expect("4 bytes"));
        let payload = &self.frame[FRAME_OVERHEAD as usize..];
        if checksum.of(len_bytes, &[payload]) != crc {
            return Err(corrupt(path, FrameProblem::BadChecksum));
        }
        out.copy_from_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frames;
    use crate::log::{Damage, Log, OpenLog};
    use crate::segment::SegmentFormat;

    static FORMAT: SegmentFormat = SegmentFormat {
        noun: "fixed test segment",
        magic: b"FIXT",
        suffix: ".fix",
        version: 1,
        oldest_version: 1,
        named_by_first_entry: true,
        checksum: |_| Checksum::LenAndPayload,
        max_payload: 8,
    };

    fn entry(n: u64) -> [u8; 8] {
        (n * 7919).to_le_bytes()
    }

    #[test]
    fn reads_any_durable_entry_across_segments_and_names_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(
            dir.path(),
            OpenLog::new(&FORMAT, Damage::TornTailOnly),
            |_, _| Ok(()),
        )
        .unwrap();
        let mut frames = Frames::new();
        for n in 0..100u64 {
            frames.clear();
            frames.push(log.checksum(), &entry(n));
            log.append(&frames).unwrap();
            if n % 30 == 29 {
                log.roll().unwrap();
            }
        }
        log.sync().unwrap();
        assert!(log.catalog().count() >= 4);
        let mut reader = FixedReader::new(log.catalog().clone(), 8);
        let mut out = [0u8; 8];
        for n in (0..100u64).rev().chain(0..100) {
            reader.read(n, &mut out).unwrap();
            assert_eq!(out, entry(n), "entry {n}");
        }
        // Not written (or not durable) yet.
        frames.clear();
        frames.push(log.checksum(), &entry(100));
        log.append(&frames).unwrap();
        assert!(reader.read(100, &mut out).is_err());
        log.sync().unwrap();
        reader.read(100, &mut out).unwrap();

        // A flipped bit in a stored entry is named with its file.
        let last = FORMAT.path(dir.path(), 90);
        let mut bytes = std::fs::read(&last).unwrap();
        let at = HEADER_LEN as usize + 3 * 16 + 9;
        bytes[at] ^= 4;
        std::fs::write(&last, &bytes).unwrap();
        let mut fresh = FixedReader::new(log.catalog().clone(), 8);
        let err = fresh.read(93, &mut out).unwrap_err().to_string();
        assert!(err.contains(last.to_str().unwrap()), "{err}");
        fresh.read(92, &mut out).unwrap();
    }
}
