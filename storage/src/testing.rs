//! Damage for tests of logs built on this crate (feature `testing`): what can happen to segment
//! files between a run and the next start, as proptest values, and how to do it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::segment::SegmentFormat;

/// What happens to the segment files between a run and the next start.
#[derive(Debug, Clone)]
pub enum SegmentDamage {
    /// Bits flipped in one byte of one segment.
    Flip {
        segment: prop::sample::Index,
        at: prop::sample::Index,
        bits: u8,
    },
    /// One segment cut short.
    Cut {
        segment: prop::sample::Index,
        at: prop::sample::Index,
    },
    /// Garbage after the last segment's end.
    Append(Vec<u8>),
}

/// Any [`SegmentDamage`].
pub fn segment_damage() -> impl Strategy<Value = SegmentDamage> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        (index(), index(), 1u8..=255).prop_map(|(segment, at, bits)| SegmentDamage::Flip {
            segment,
            at,
            bits
        }),
        (index(), index()).prop_map(|(segment, at)| SegmentDamage::Cut { segment, at }),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(SegmentDamage::Append),
    ]
}

/// The segment files of `format` in `dir`, in order.
pub fn segment_paths(format: &SegmentFormat, dir: &Path) -> Vec<PathBuf> {
    format
        .list(dir)
        .unwrap()
        .into_iter()
        .map(|id| format.path(dir, id))
        .collect()
}

impl SegmentDamage {
    /// Does the damage to the segments of `format` in `dir` (there must be one).
    pub fn apply(&self, format: &SegmentFormat, dir: &Path) {
        let segments = segment_paths(format, dir);
        match self {
            SegmentDamage::Flip { segment, at, bits } => {
                let path = &segments[segment.index(segments.len())];
                flip(path, *at, *bits);
            }
            SegmentDamage::Cut { segment, at } => {
                let path = &segments[segment.index(segments.len())];
                let len = fs::metadata(path).unwrap().len() as usize;
                cut(path, at.index(len + 1) as u64);
            }
            SegmentDamage::Append(garbage) => append(segments.last().unwrap(), garbage),
        }
    }
}

/// Flips `bits` in the byte of `path` at `at` (nothing if the file is empty).
pub fn flip(path: &Path, at: prop::sample::Index, bits: u8) {
    let mut bytes = fs::read(path).unwrap();
    if !bytes.is_empty() {
        let i = at.index(bytes.len());
        bytes[i] ^= bits;
        fs::write(path, &bytes).unwrap();
    }
}

/// Cuts `path` to `len` bytes.
pub fn cut(path: &Path, len: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// Appends `bytes` to `path`.
pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Asserts that an error message names a file under `dir`.
pub fn assert_names(dir: &Path, message: &str, context: &dyn std::fmt::Debug) {
    assert!(
        message.contains(dir.to_str().unwrap()),
        "{context:?}: {message}"
    );
}

/// Copies the fixture directory `name` of `storage/tests/fixtures` (files written by earlier
/// versions) into `to`, so a test can open it as its own.
pub fn copy_fixture(name: &str, to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    for entry in fs::read_dir(&from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
