//! [`FixedReader`]: random reads of a [`Log`](crate::Log) whose entries all have one payload
//! length (the collector's Merkle trees: 32-byte hashes). With every frame the same size, entry
//! `n` of a segment starting at entry `f` is at byte `HEADER_LEN + (n - f) × (8 + len)`, so one
//! entry is one positioned read, its frame verified as the log's readers verify it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::frame::{Checksum, FRAME_OVERHEAD, FrameProblem};
use crate::log::{Catalog, LogError, SegmentState};
use crate::segment::HEADER_LEN;

/// Open segment files kept at most.
const OPEN_FILES: usize = 8;
/// Entries one positioned read of [`FixedReader::read_run`] takes at most (its buffer's bound).
const RUN_ENTRIES: usize = 4096;

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
        self.read_run(number, out)
    }

    /// Reads the entries from `first` on into `out`, as many as it holds `payload_len`-byte
    /// payloads: one positioned read per segment rather than one per entry (an export's proof
    /// reads a million leaves), each frame checked as [`FixedReader::read`] checks it.
    pub fn read_run(&mut self, first: u64, out: &mut [u8]) -> Result<(), LogError> {
        let payload = self.payload_len as usize;
        debug_assert_eq!(out.len() % payload, 0);
        let frame_len = self.frame.len();
        let mut buf = std::mem::take(&mut self.frame);
        let mut done = 0;
        let result = (|| {
            while done < out.len() {
                let number = first + (done / payload) as u64;
                let wanted = (out.len() - done) / payload;
                let (id, state) = self.segment_of(number)?;
                let n = wanted
                    .min((state.first_entry + state.entries - number) as usize)
                    .min(RUN_ENTRIES);
                let offset = HEADER_LEN + (number - state.first_entry) * frame_len as u64;
                buf.resize(n * frame_len, 0);
                let path = self.catalog.path(id);
                let expected = self.payload_len;
                let (file, checksum) = self.file(id, offset + buf.len() as u64, &state)?;
                file.read_exact_at(&mut buf, offset)
                    .map_err(|source| LogError::Io {
                        path: path.clone(),
                        source,
                    })?;
                for (i, frame) in buf.chunks_exact(frame_len).enumerate() {
                    let corrupt = |problem: FrameProblem| LogError::Corrupt {
                        path: path.clone(),
                        offset: offset + (i * frame_len) as u64,
                        reason: problem.to_string(),
                    };
                    let len_bytes: [u8; 4] = frame[..4].try_into().expect("4 bytes");
                    let len = u32::from_le_bytes(len_bytes);
                    if len != expected {
                        return Err(corrupt(FrameProblem::BadLength(len)));
                    }
                    let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
                    let body = &frame[FRAME_OVERHEAD as usize..];
                    if checksum.of(len_bytes, &[body]) != crc {
                        return Err(corrupt(FrameProblem::BadChecksum));
                    }
                    out[done..done + payload].copy_from_slice(body);
                    done += payload;
                }
            }
            Ok(())
        })();
        buf.truncate(frame_len);
        self.frame = buf;
        result
    }

    /// The durable segment holding entry `number`.
    fn segment_of(&self, number: u64) -> Result<(u64, SegmentState), LogError> {
        self.catalog
            .containing(number)
            .ok_or_else(|| LogError::Corrupt {
                path: self.catalog.dir().to_path_buf(),
                offset: 0,
                reason: format!("no durable entry {number}"),
            })
    }

    /// Segment `id`'s file, opened (header checked) if it is not yet; `end`, the end of what is
    /// about to be read, must be within its durable length.
    fn file(
        &mut self,
        id: u64,
        end: u64,
        state: &SegmentState,
    ) -> Result<&(File, Checksum), LogError> {
        let path = self.catalog.path(id);
        if end > state.len {
            return Err(LogError::Corrupt {
                path,
                offset: state.len,
                reason: FrameProblem::Truncated.to_string(),
            });
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
        Ok(&self.files[&id])
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
        // Runs across segments, one read per segment, equal the entries one by one.
        for (first, n) in [(0u64, 100usize), (29, 2), (7, 61), (99, 1), (50, 0)] {
            let mut run = vec![0u8; 8 * n];
            reader.read_run(first, &mut run).unwrap();
            for (i, got) in run.chunks_exact(8).enumerate() {
                assert_eq!(got, entry(first + i as u64), "run from {first}, entry {i}");
            }
        }
        assert!(
            reader.read_run(95, &mut [0u8; 8 * 6]).is_err(),
            "past the durable end"
        );
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
        let err = fresh
            .read_run(88, &mut [0u8; 8 * 10])
            .unwrap_err()
            .to_string();
        assert!(err.contains(last.to_str().unwrap()), "{err}");
    }
}
