//! The checkpoint of a file import, beside its input (`FILE.import-checkpoint`): how far the
//! collector has acknowledged, so that a rerun after Ctrl-C or a crash goes on from there. It is
//! written (atomically, fsynced) after each acknowledged batch, and removed when the import
//! completes; a rerun without it starts over, which stores nothing twice (ids dedupe).

use super::input::{InputFormat, Position};
use codestax_storage::state::{OnDamage, StateFile, Versioned};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How much of the input's start its fingerprint covers.
const FINGERPRINT_BYTES: u64 = 64 * 1024;

/// The counts of an import so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Stored now for the first time.
    pub imported: u64,
    /// Already stored (an earlier run, or the same id twice): acknowledged, not stored again.
    pub duplicates: u64,
    /// Refused, each with its line in the rejects file (expired ones apart).
    pub rejected: u64,
    /// Older than the org's retention: refused on arrival, in the rejects file too.
    pub expired: u64,
}

impl Counts {
    pub fn records(&self) -> u64 {
        self.imported + self.duplicates + self.rejected + self.expired
    }
}

/// What the checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub format: InputFormat,
    /// The input it belongs to: its length and the SHA-256 of its first 64 KiB.
    pub input_len: u64,
    pub input_head_sha256: String,
    /// Just past the last record of the last acknowledged batch, and the line there.
    pub offset: u64,
    pub line: u64,
    /// The rejects file's length then: a rerun cuts off what a lost batch wrote after it.
    pub rejects_len: u64,
    pub counts: Counts,
    /// The source the records' provenance names (`--source`): a rerun must name the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Versioned for Checkpoint {
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
}

impl Checkpoint {
    pub fn position(&self) -> Position {
        Position {
            offset: self.offset,
            line: self.line,
        }
    }
}

/// The fingerprint of an input file: its length and the hash of its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub len: u64,
    pub head_sha256: String,
}

impl Fingerprint {
    pub fn of(path: &Path) -> std::io::Result<Fingerprint> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = Vec::new();
        file.take(FINGERPRINT_BYTES).read_to_end(&mut head)?;
        Ok(Fingerprint {
            len,
            head_sha256: hex::encode(Sha256::digest(&head)),
        })
    }
}

/// The checkpoint file of one input.
pub struct CheckpointFile {
    file: StateFile,
}

impl CheckpointFile {
    /// `INPUT.import-checkpoint`, beside the input.
    pub fn beside(input: &Path) -> CheckpointFile {
        let mut name = input.as_os_str().to_owned();
        name.push(".import-checkpoint");
        CheckpointFile {
            file: StateFile::new(PathBuf::from(name), ".tmp"),
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The checkpoint, if a run left one; one that belongs to another input (or another
    /// version of this one), another format or another source is refused, naming the file.
    pub fn load(
        &self,
        input: &Fingerprint,
        format: InputFormat,
        source: Option<&str>,
    ) -> anyhow::Result<Option<Checkpoint>> {
        let Some(c) = self.file.read_json::<Checkpoint>(OnDamage::Fail)? else {
            return Ok(None);
        };
        let path = self.path().display();
        if c.input_len != input.len || c.input_head_sha256 != input.head_sha256 {
            anyhow::bail!(
                "the checkpoint {path} was written for another input (or this file has changed \
                 since: {} bytes then, {} now); delete it to import from the start",
                c.input_len,
                input.len
            );
        }
        if c.format != format {
            anyhow::bail!(
                "the checkpoint {path} was written by an import with --format {}; use it again, \
                 or delete the checkpoint to start over",
                serde_json::to_value(c.format)?.as_str().unwrap_or_default()
            );
        }
        if c.source.as_deref() != source {
            anyhow::bail!(
                "the checkpoint {path} was written by an import with --source {:?}; use it again, \
                 or delete the checkpoint to start over",
                c.source.as_deref().unwrap_or_default()
            );
        }
        Ok(Some(c))
    }

    pub fn save(&self, c: &Checkpoint) -> anyhow::Result<()> {
        Ok(self.file.write_json(c)?)
    }

    /// The import is complete: nothing to resume.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
