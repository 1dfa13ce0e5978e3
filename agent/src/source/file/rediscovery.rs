//! Finding files again that moved while nobody watched: checkpointed files by inode in their own
//! and the watched directories, and files rotated out of the globs that the agent never saw, by
//! name and time, next to the names it watches.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::discovery::walk;
use super::fingerprint::{self, read_at};
use crate::checkpoint::{FileKey, FilePosition};

/// File times come from a coarse clock (up to a tick behind the wall clock) and some file
/// systems keep them to the second or two: a file modified just after a moment may look a
/// little older.
pub const MTIME_SLACK: Duration = Duration::from_secs(2);

/// The key of a file's metadata.
pub fn key_of(meta: &fs::Metadata) -> FileKey {
    FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// Where the files of `keys` are among the files under `dirs` (each walked that many levels
/// down, `None` for all): the first path found for each.
pub fn locate(
    keys: &HashSet<FileKey>,
    dirs: &[(PathBuf, Option<usize>)],
) -> HashMap<FileKey, PathBuf> {
    let mut found = HashMap::new();
    for (dir, depth) in dirs {
        walk(dir, *depth, &mut |path| {
            if found.len() == keys.len() {
                return;
            }
            if let Ok(meta) = fs::metadata(path) {
                let key = key_of(&meta);
                if keys.contains(&key) {
                    found.entry(key).or_insert_with(|| path.to_path_buf());
                }
            }
        });
    }
    found
}

/// What a file found by its key turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// The file of the checkpoint: same first bytes, same bytes before the offset.
    Same { size: u64 },
    /// Another file under the same inode (the checkpoint's file is gone).
    Other,
    /// Not at this path any more (renamed again since it was found).
    Moved,
}

/// Compares the file at `path` with a checkpoint of its key.
pub fn compare(path: &Path, position: &FilePosition) -> io::Result<Found> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if key_of(&meta) != position.key {
        return Ok(Found::Moved);
    }
    let prefix = read_at(&file, 0, position.fingerprint.len as usize)?;
    let same = position.offset <= meta.len()
        && fingerprint::prefix_matches(&prefix, position.fingerprint)
        && fingerprint::tail_matches(&file, position.offset, position.tail)?;
    Ok(if same {
        Found::Same { size: meta.len() }
    } else {
        Found::Other
    })
}

/// A file that looks rotated away from a watched name.
#[derive(Debug)]
pub struct Rotated {
    pub path: PathBuf,
    pub key: FileKey,
    /// The watched name it is named after.
    pub base: PathBuf,
}

/// Regular files under `dirs` (each walked that many levels down) named after a name that
/// `watched` accepts in the same directory (the name, a separator `.`, `-` or `_`, and more:
/// `app.jsonl.1`, `app.jsonl-20261203`, `app.jsonl.2026-12-03`) and modified at or after
/// `since`: files rotated away from watched names (logrotate, Python's rotating handlers).
pub fn rotated_from(
    dirs: &[(PathBuf, Option<usize>)],
    watched: &dyn Fn(&Path) -> bool,
    since: SystemTime,
) -> Vec<Rotated> {
    let mut rotated = Vec::new();
    for (dir, depth) in dirs {
        walk(dir, *depth, &mut |path| {
            let Some(base) = watched_base(path, watched) else {
                return;
            };
            // Not followed: a link is not a rotated file.
            let Ok(meta) = fs::symlink_metadata(path) else {
                return;
            };
            if meta.is_file() && !meta.modified().is_ok_and(|m| m < since) {
                rotated.push(Rotated {
                    path: path.to_path_buf(),
                    key: key_of(&meta),
                    base,
                });
            }
        });
    }
    rotated.sort_by(|a, b| a.path.cmp(&b.path));
    rotated.dedup_by(|a, b| a.path == b.path);
    rotated
}

/// The watched name `path`'s name is the rotation of: the longest start of it, cut before a
/// separator, that `watched` accepts.
fn watched_base(path: &Path, watched: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    let name = path.file_name()?.as_bytes();
    let dir = path.parent()?;
    (1..name.len().saturating_sub(1))
        .rev()
        .filter(|&i| matches!(name[i], b'.' | b'-' | b'_'))
        .map(|i| dir.join(OsStr::from_bytes(&name[..i])))
        .find(|base| watched(base))
}

/// Whether the file begins as a gzip, zstd, xz or bzip2 stream does (a compressed rotation:
/// not lines to read).
pub fn compressed(path: &Path) -> io::Result<bool> {
    let head = read_at(&File::open(path)?, 0, 6)?;
    Ok(head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00])
        || head.starts_with(b"BZh"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        let watched = |p: &Path| p.extension().is_some_and(|e| e == "jsonl");
        for name in [
            "app.jsonl.1",
            "app.jsonl-20261203",
            "app.jsonl.2026-12-03",
            "app.jsonl_old",
            "app.jsonl.1.2",
        ] {
            let path = Path::new("/l").join(name);
            assert_eq!(
                watched_base(&path, &watched).as_deref(),
                Some(Path::new("/l/app.jsonl")),
                "{name}"
            );
        }
        for name in [
            "app.jsonl",
            "app.jsonl.",
            "app.jsonlx",
            "app.json.1",
            "app.log.1",
        ] {
            let path = Path::new("/l").join(name);
            assert_eq!(watched_base(&path, &watched), None, "{name}");
        }
    }

    #[test]
    fn compressed_files_are_told_by_their_magic() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], bool); 6] = [
            (b"\x1f\x8b\x08\x00rest", true),
            (b"\x28\xb5\x2f\xfdrest", true),
            (b"\xfd7zXZ\x00rest", true),
            (b"BZh91AY", true),
            (b"{\"action\":\"x.y\"}\n", false),
            (b"", false),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("f{i}"));
            fs::write(&path, bytes).unwrap();
            assert_eq!(compressed(&path).unwrap(), *want, "{bytes:?}");
        }
    }
}
