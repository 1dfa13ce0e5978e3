//! One tailed file: recognising it, reading whole lines from where it was left, turning them
//! into records or quarantine entries, and noticing truncation.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use codestax_common::Rules;

use super::FileSettings;
use super::fingerprint::{self, TAIL_CHECK_BYTES, read_at};
use crate::checkpoint::{CheckpointStore, FileKey, FilePosition, Fingerprint, TailCheck};
use crate::quarantine::{MAX_KEPT_BYTES, QuarantineEntry, QuarantineKind};
use crate::spool::SpoolEntry;
use codestax_common::LineParser;

/// Why a file is no longer matched by the globs (it is read to its end, then released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// Renamed to a name the globs do not match.
    OutOfGlob,
    /// Deleted (no links left).
    Deleted,
}

/// A tailed file's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    /// Read to the end, then released once idle for the grace period.
    Finishing {
        why: Leaving,
        idle_since: Instant,
    },
}

/// What one read of a file produced: records and quarantine entries for whole lines, and the
/// position after the last of them.
#[derive(Debug, Default)]
pub struct Chunk {
    pub entries: Vec<SpoolEntry>,
    pub quarantine: Vec<QuarantineEntry>,
    pub lines: u64,
    /// The file position to spool after the entries (`None` when nothing moved).
    pub position: Option<FilePosition>,
    /// More data is waiting beyond this chunk.
    pub more: bool,
    /// The file was found truncated (or rewritten) and is read again from its start.
    pub truncated: bool,
    /// The bytes just before `position`'s offset, as read (its tail check is their hash).
    behind: Vec<u8>,
    /// The file's generation when it was read (see [`TailedFile::commit`]).
    generation: u64,
}

/// A line over the limit, being skipped until its newline.
#[derive(Debug)]
struct Overlong {
    start: u64,
    prefix: Vec<u8>,
    len: u64,
    /// The bytes just before `start`.
    behind: Vec<u8>,
}

pub struct TailedFile {
    pub path: PathBuf,
    file: File,
    pub key: FileKey,
    pub settings: Arc<FileSettings>,
    pub status: Status,
    /// The first bytes of the file, at most `fingerprint_bytes`.
    prefix: Vec<u8>,
    fingerprint: Fingerprint,
    /// Everything before this offset is spooled (or quarantined).
    offset: u64,
    tail: TailCheck,
    /// Bytes from `pending_start` to `read_offset` are buffered in `pending`.
    pending: Vec<u8>,
    pending_start: u64,
    /// The bytes read just before `pending_start` (at most [`TAIL_CHECK_BYTES`]): tail checks
    /// are taken of what was read, never of the file again (it may have been truncated and
    /// rewritten since the read).
    behind: Vec<u8>,
    /// The bytes just before `offset`, to go back to on a rewind.
    committed_behind: Vec<u8>,
    read_offset: u64,
    overlong: Option<Overlong>,
    /// Lines starting before this offset were quarantined already (do not repeat after a
    /// failed append).
    quarantined_through: u64,
    /// Size at the last read, for the lag gauge.
    pub size: u64,
    /// The committed position's stamp.
    stamp: u64,
    /// Where new positions get their stamps.
    checkpoints: CheckpointStore,
    /// Counts the restarts from the start (truncations): a chunk read before one no longer
    /// describes the file.
    generation: u64,
    /// Test seam: called at the steps of a read, to change the file between them.
    #[cfg(test)]
    pub(super) between_steps: Option<Box<dyn FnMut(ReadStep) + Send>>,
}

/// Steps of a read between which a test may change the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStep {
    /// The file's size was taken (it bounds the read).
    SizeTaken,
    /// The first bytes were read again after a truncation.
    PrefixTaken,
}

impl TailedFile {
    /// Opens `path` and finds where to resume: the checkpoint whose key and fingerprint match
    /// and whose tail check still holds; otherwise the start (a new file, a reused inode or a
    /// file rewritten since).
    pub fn open(
        path: &Path,
        settings: Arc<FileSettings>,
        checkpoints: &CheckpointStore,
    ) -> io::Result<TailedFile> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let size = meta.len();
        let prefix = read_at(&file, 0, settings.fingerprint_bytes)?;
        let mut resume = None;
        let mut behind = Vec::new();
        if let Some(checkpoint) = checkpoints.checkpoint(key) {
            let candidate = checkpoint.position;
            let bytes = fingerprint::tail_bytes(&file, candidate.offset)?;
            if fingerprint::prefix_matches(&prefix, candidate.fingerprint)
                && candidate.offset <= size
                && bytes.len() as u64 == candidate.offset.min(TAIL_CHECK_BYTES)
                && (candidate.offset == 0 || fingerprint::tail_check_of(&bytes) == candidate.tail)
            {
                resume = Some(candidate);
                behind = bytes;
            } else if let Some(seen) = checkpoint.size.filter(|s| *s > candidate.offset) {
                // Bytes seen and not read: in a copy should this be copytruncate (read if the
                // copy is, then under the same ids), else gone with the file.
                tracing::warn!(
                    path = %path.display(),
                    checkpoint = candidate.offset,
                    seen,
                    size,
                    "file changed under its checkpoint (truncated, rewritten, or another file under its inode) before bytes {} to {seen} of it were read; unless a copy of them is read (copytruncate), they are lost; reading it from the start",
                    candidate.offset
                );
            } else {
                tracing::info!(
                    path = %path.display(),
                    checkpoint = candidate.offset,
                    size,
                    "file changed under its checkpoint (truncated, rewritten, or another file under its inode); reading it from the start"
                );
            }
        }
        let (offset, tail) = resume.map_or((0, TailCheck::default()), |c| (c.offset, c.tail));
        let tailed = TailedFile {
            path: path.to_path_buf(),
            file,
            key,
            settings,
            status: Status::Active,
            fingerprint: fingerprint::fingerprint_of(&prefix),
            prefix,
            offset,
            tail,
            pending: Vec::new(),
            pending_start: offset,
            committed_behind: behind.clone(),
            behind,
            read_offset: offset,
            overlong: None,
            quarantined_through: offset,
            size,
            stamp: checkpoints.next_stamp(),
            checkpoints: checkpoints.clone(),
            generation: 0,
            #[cfg(test)]
            between_steps: None,
        };
        checkpoints.opened(tailed.position(), path, size);
        Ok(tailed)
    }

    /// The committed position.
    pub fn position(&self) -> FilePosition {
        FilePosition {
            key: self.key,
            fingerprint: self.fingerprint,
            offset: self.offset,
            tail: self.tail,
            stamp: self.stamp,
        }
    }

    /// Bytes of the file not yet spooled.
    pub fn lag(&self) -> u64 {
        self.size.saturating_sub(self.offset)
    }

    /// Where the file is now (it may have been renamed since it was found), or `None` if it
    /// has been deleted (or cannot be told).
    pub fn current_path(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", self.file.as_raw_fd())).ok()?;
        if self.nlink().ok()? == 0 {
            return None;
        }
        Some(link)
    }

    /// Links left to the file (0 once deleted).
    pub fn nlink(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.nlink())
    }

    /// At the end of the file with nothing in flight.
    pub fn at_end(&self) -> bool {
        self.read_offset >= self.size
    }

    /// Reads whole lines after what has been read, at most `max_bytes` of new data.
    pub fn poll(
        &mut self,
        rules: &Rules,
        parser: &mut LineParser,
        max_bytes: usize,
    ) -> io::Result<Chunk> {
        let mut chunk = self.read_chunk(rules, parser, max_bytes)?;
        chunk.generation = self.generation;
        Ok(chunk)
    }

    fn read_chunk(
        &mut self,
        rules: &Rules,
        parser: &mut LineParser,
        max_bytes: usize,
    ) -> io::Result<Chunk> {
        let mut chunk = Chunk::default();
        let mut size = self.file.metadata()?.len();
        self.step(ReadStep::SizeTaken);
        // The bytes before the committed offset are checked on every poll, not only when the
        // file grew: a truncated file rewritten to exactly its old size shows nothing else.
        if self.rewritten(size)? {
            // The size may be the old content's (truncated since it was taken): the new one
            // bounds the read.
            size = self.file.metadata()?.len();
            self.restart_from_zero(size)?;
            chunk.truncated = true;
        }
        self.size = size;
        if size <= self.read_offset {
            if chunk.truncated {
                chunk.position = Some(FilePosition {
                    stamp: self.checkpoints.next_stamp(),
                    ..self.position()
                });
            }
            return Ok(chunk);
        }
        let want = (size - self.read_offset).min(max_bytes as u64) as usize;
        // Read straight behind the partial line kept from the last read.
        let kept = self.pending.len();
        self.pending.resize(kept + want, 0);
        let read = fingerprint::fill_at(&self.file, self.read_offset, &mut self.pending[kept..])
            .and_then(|n| Ok((n, self.file.metadata()?.len())));
        let (n, now) = match read {
            Ok(read) => read,
            Err(e) => {
                self.pending.truncate(kept);
                return Err(e);
            }
        };
        self.pending.truncate(kept + n);
        // Truncated and rewritten between the checks and the read, the data may be the new
        // content at the old offsets: drop it before anything is made of it, and start over.
        let rewritten = !chunk.truncated
            && self
                .rewritten(now)
                .inspect_err(|_| self.pending.truncate(kept))?;
        if rewritten || !self.prefix_covers(self.read_offset + n as u64) {
            self.pending.truncate(kept);
            self.restart_from_zero(now)?;
            self.size = now;
            chunk.truncated = true;
            chunk.more = true;
            chunk.position = Some(FilePosition {
                stamp: self.checkpoints.next_stamp(),
                ..self.position()
            });
            return Ok(chunk);
        }
        self.read_offset += n as u64;
        chunk.more = self.read_offset < size;
        self.split_lines(rules, parser, &mut chunk);
        let (line_start, behind) = match &self.overlong {
            Some(o) => (o.start, &o.behind),
            None => (self.pending_start, &self.behind),
        };
        if line_start != self.offset || chunk.truncated {
            chunk.position = Some(FilePosition {
                key: self.key,
                fingerprint: self.fingerprint,
                offset: line_start,
                tail: fingerprint::tail_check_of(behind),
                stamp: self.checkpoints.next_stamp(),
            });
            chunk.behind = behind.clone();
        }
        Ok(chunk)
    }

    /// The chunk is durable (spooled): its position becomes the committed one. The next chunk
    /// may have been read meanwhile; if that one found the file truncated (and restarted from
    /// its start), this older chunk no longer describes the file and changes nothing.
    pub fn commit(&mut self, chunk: &Chunk) {
        if chunk.generation != self.generation {
            return;
        }
        if let Some(p) = chunk.position {
            self.offset = p.offset;
            self.tail = p.tail;
            self.fingerprint = p.fingerprint;
            self.stamp = p.stamp;
            self.committed_behind.clone_from(&chunk.behind);
        }
    }

    /// The chunk's quarantine entries are written (even if its append then fails).
    pub fn quarantined(&mut self, chunk: &Chunk) {
        if chunk.generation != self.generation {
            return;
        }
        if let Some(q) = chunk.quarantine.last() {
            self.quarantined_through = self
                .quarantined_through
                .max(q.offset.unwrap_or_default() + 1);
        }
    }

    /// The chunk could not be spooled: forget what was read after the committed position.
    pub fn rewind(&mut self) {
        self.pending.clear();
        self.pending_start = self.offset;
        self.behind.clone_from(&self.committed_behind);
        self.read_offset = self.offset;
        self.overlong = None;
    }

    /// A file being released with an unterminated last line: quarantine what is there.
    pub fn unterminated(&self) -> Option<QuarantineEntry> {
        if let Some(o) = &self.overlong {
            return Some(QuarantineEntry::file_line(
                QuarantineKind::Unterminated,
                &self.path,
                o.start,
                format!(
                    "last line has no newline and is {} bytes, over max_line_bytes ({})",
                    o.len, self.settings.max_line_bytes
                ),
                &o.prefix,
                o.len,
            ));
        }
        (!self.pending.is_empty()).then(|| {
            QuarantineEntry::file_line(
                QuarantineKind::Unterminated,
                &self.path,
                self.pending_start,
                "file released with a last line that has no newline".into(),
                &self.pending,
                self.pending.len() as u64,
            )
        })
    }

    /// The file's first bytes must not change (they are read again on every poll: after a
    /// truncation they are the first thing rewritten); while the file is shorter than the
    /// fingerprint size, the fingerprint grows with it.
    fn prefix_still_matches(&mut self, size: u64) -> io::Result<bool> {
        if size < self.prefix.len() as u64 {
            return Ok(false);
        }
        let now = read_at(&self.file, 0, self.settings.fingerprint_bytes)?;
        if !now.starts_with(&self.prefix) {
            return Ok(false);
        }
        if now.len() > self.prefix.len() {
            self.prefix = now;
            self.fingerprint = fingerprint::fingerprint_of(&self.prefix);
        }
        Ok(true)
    }

    /// Whether the prefix covers the bytes read up to `end`, as far as the fingerprint size goes:
    /// derived ids hash a line's file up to its end. A prefix taken while the file was shorter
    /// (it was truncated, or being written, when the prefix was read) is extended with the
    /// bytes just read, which start at `pending_start`. False when those bytes do not reach
    /// back to the prefix's end or disagree with it: the file changed between the two reads.
    fn prefix_covers(&mut self, end: u64) -> bool {
        let want = (self.settings.fingerprint_bytes as u64).min(end) as usize;
        let have = self.prefix.len();
        if have >= want {
            return true;
        }
        let start = self.pending_start as usize;
        if start > have || self.pending.len() < want - start {
            return false;
        }
        let overlap = have - start;
        if self.pending[..overlap] != self.prefix[start..] {
            return false;
        }
        self.prefix
            .extend_from_slice(&self.pending[overlap..want - start]);
        self.fingerprint = fingerprint::fingerprint_of(&self.prefix);
        true
    }

    /// Whether the file is no longer the one read so far: shorter than what was read, other
    /// bytes before the committed offset or before the read position, or other first bytes.
    fn rewritten(&mut self, size: u64) -> io::Result<bool> {
        Ok(size < self.read_offset
            || (self.offset > 0 && !fingerprint::tail_matches(&self.file, self.offset, self.tail)?)
            || (self.read_offset > self.offset && !self.read_tail_matches()?)
            || !self.prefix_still_matches(size)?)
    }

    /// Whether the bytes just before the read position are still those read. Reads not yet
    /// committed are checked too: truncated and written past the read position before the first
    /// commit of a file (its offset 0: nothing to check there), the file would otherwise pass
    /// for the same one and its new first lines go unread.
    fn read_tail_matches(&self) -> io::Result<bool> {
        // `pending` may hold a read not yet counted in `read_offset` (the check after a read).
        let counted = (self.read_offset - self.pending_start) as usize;
        let mut read = self.behind.clone();
        keep_last(&mut read, &self.pending[..counted.min(self.pending.len())]);
        let start = self.read_offset - read.len() as u64;
        Ok(read_at(&self.file, start, read.len())? == read)
    }

    #[cfg_attr(not(test), inline(always))]
    fn step(&mut self, _step: ReadStep) {
        #[cfg(test)]
        if let Some(between) = &mut self.between_steps {
            between(_step);
        }
    }

    fn restart_from_zero(&mut self, size: u64) -> io::Result<()> {
        tracing::info!(
            path = %self.path.display(),
            size,
            read = self.read_offset,
            "file truncated or rewritten (copytruncate?); reading it again from the start"
        );
        self.prefix = read_at(&self.file, 0, self.settings.fingerprint_bytes)?;
        self.step(ReadStep::PrefixTaken);
        self.fingerprint = fingerprint::fingerprint_of(&self.prefix);
        self.offset = 0;
        self.tail = TailCheck::default();
        self.committed_behind.clear();
        self.quarantined_through = 0;
        self.generation += 1;
        self.rewind();
        Ok(())
    }

    fn split_lines(&mut self, rules: &Rules, parser: &mut LineParser, chunk: &mut Chunk) {
        let max_line = self.settings.max_line_bytes;
        let mut consumed = 0;
        while let Some(nl) = memchr(&self.pending[consumed..]) {
            let start = self.pending_start + consumed as u64;
            let line = &self.pending[consumed..consumed + nl];
            chunk.lines += 1;
            if let Some(o) = self.overlong.take() {
                let len = o.len + line.len() as u64;
                if o.start >= self.quarantined_through {
                    chunk.quarantine.push(QuarantineEntry::file_line(
                        QuarantineKind::LineTooLong,
                        &self.path,
                        o.start,
                        format!("line of {len} bytes is over max_line_bytes ({max_line})"),
                        &o.prefix,
                        len,
                    ));
                }
            } else if line.len() > max_line {
                if start >= self.quarantined_through {
                    chunk.quarantine.push(QuarantineEntry::file_line(
                        QuarantineKind::LineTooLong,
                        &self.path,
                        start,
                        format!(
                            "line of {} bytes is over max_line_bytes ({max_line})",
                            line.len()
                        ),
                        line,
                        line.len() as u64,
                    ));
                }
            } else if line.iter().all(u8::is_ascii_whitespace) {
                // Blank lines carry nothing.
            } else {
                match parser.parse(line, self.settings.org_id.as_deref(), rules) {
                    Ok(record) => {
                        if record.id.is_none() {
                            let end = start as usize + nl + 1;
                            let prefix = &self.prefix[..self.prefix.len().min(end)];
                            record.id = Some(fingerprint::derived_id(prefix, start, line));
                        }
                        chunk.entries.push(SpoolEntry::record(record));
                    }
                    Err(errors) => {
                        if start >= self.quarantined_through {
                            chunk.quarantine.push(QuarantineEntry::file_line(
                                QuarantineKind::InvalidRecord,
                                &self.path,
                                start,
                                errors.to_string(),
                                line,
                                line.len() as u64,
                            ));
                        }
                    }
                }
            }
            consumed += nl + 1;
        }
        keep_last(&mut self.behind, &self.pending[..consumed]);
        self.pending.drain(..consumed);
        self.pending_start += consumed as u64;
        // A partial line: keep it for its newline, unless it is already too long.
        if let Some(o) = &mut self.overlong {
            o.len += self.pending.len() as u64;
            keep_last(&mut self.behind, &self.pending);
            self.pending_start += self.pending.len() as u64;
            self.pending.clear();
        } else if self.pending.len() > max_line {
            let keep = self.pending.len().min(MAX_KEPT_BYTES);
            self.overlong = Some(Overlong {
                start: self.pending_start,
                prefix: self.pending[..keep].to_vec(),
                len: self.pending.len() as u64,
                behind: self.behind.clone(),
            });
            keep_last(&mut self.behind, &self.pending);
            self.pending_start += self.pending.len() as u64;
            self.pending.clear();
        }
    }
}

/// Appends `bytes` to `behind`, keeping only its last [`TAIL_CHECK_BYTES`].
fn keep_last(behind: &mut Vec<u8>, bytes: &[u8]) {
    let max = TAIL_CHECK_BYTES as usize;
    if bytes.len() >= max {
        behind.clear();
        behind.extend_from_slice(&bytes[bytes.len() - max..]);
    } else {
        behind.extend_from_slice(bytes);
        let excess = behind.len().saturating_sub(max);
        behind.drain(..excess);
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}
