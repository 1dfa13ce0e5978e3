//! Finding the files to tail: include/exclude globs, their base directories (what to walk and
//! what to watch) and the expansion of globs into paths.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

/// A glob could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("invalid glob {pattern:?}: {source}")]
pub struct GlobError {
    pub pattern: String,
    pub source: globset::Error,
}

/// One include pattern: where to start looking and how deep.
#[derive(Debug, Clone)]
struct Include {
    base: PathBuf,
    matcher: GlobMatcher,
    /// Directory levels below `base` a match may be at; `None` with `**`.
    depth: Option<usize>,
}

/// The include and exclude globs of one `[[sources.files]]` entry.
#[derive(Debug, Clone)]
pub struct FileGlobs {
    includes: Vec<Include>,
    exclude: GlobSet,
}

impl FileGlobs {
    /// Compiles the globs; relative ones are taken from `cwd`. `*` and `?` do not match `/`;
    /// `**` matches any number of directories.
    pub fn new(include: &[String], exclude: &[String], cwd: &Path) -> Result<FileGlobs, GlobError> {
        let glob = |pattern: &str| -> Result<Glob, GlobError> {
            let absolute = absolute(pattern, cwd);
            GlobBuilder::new(&absolute)
                .literal_separator(true)
                .build()
                .map_err(|source| GlobError {
                    pattern: pattern.to_string(),
                    source,
                })
        };
        let mut includes = Vec::new();
        for pattern in include {
            let absolute = absolute(pattern, cwd);
            let (base, rest) = split_base(&absolute);
            let depth = if rest.iter().any(|c| c.contains("**")) {
                None
            } else {
                Some(rest.len().saturating_sub(1))
            };
            includes.push(Include {
                base,
                matcher: glob(pattern)?.compile_matcher(),
                depth,
            });
        }
        let mut set = GlobSetBuilder::new();
        for pattern in exclude {
            set.add(glob(pattern)?);
        }
        let exclude = set.build().map_err(|source| GlobError {
            pattern: exclude.join(", "),
            source,
        })?;
        Ok(FileGlobs { includes, exclude })
    }

    /// Whether `path` is one of ours.
    pub fn matches(&self, path: &Path) -> bool {
        self.includes.iter().any(|i| i.matcher.is_match(path)) && !self.exclude.is_match(path)
    }

    /// Directories to watch for changes: each include's base, and whether to watch it
    /// recursively.
    pub fn watch_dirs(&self) -> Vec<(PathBuf, bool)> {
        let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
        for i in &self.includes {
            let recursive = i.depth != Some(0);
            match dirs.iter_mut().find(|(d, _)| *d == i.base) {
                Some((_, r)) => *r |= recursive,
                None => dirs.push((i.base.clone(), recursive)),
            }
        }
        dirs
    }

    /// Every regular file that matches now (symlinks to files are followed), sorted.
    pub fn expand(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for include in &self.includes {
            walk(&include.base, include.depth, &mut |path| {
                if include.matcher.is_match(path) && !self.exclude.is_match(path) {
                    found.push(path.to_path_buf());
                }
            });
        }
        found.sort();
        found.dedup();
        found
    }
}

fn absolute(pattern: &str, cwd: &Path) -> String {
    if Path::new(pattern).is_absolute() {
        pattern.to_string()
    } else {
        let mut s = cwd.display().to_string();
        if !s.ends_with('/') {
            s.push('/');
        }
        s.push_str(pattern.trim_start_matches("./"));
        s
    }
}

/// Splits an absolute pattern into its literal leading directories and the rest.
fn split_base(pattern: &str) -> (PathBuf, Vec<String>) {
    let mut base = PathBuf::from("/");
    let mut rest = Vec::new();
    for component in Path::new(pattern).components() {
        match component {
            Component::Normal(c) => {
                let c = c.to_string_lossy();
                if rest.is_empty() && !c.contains(['*', '?', '[', '{', '\\']) {
                    base.push(c.as_ref());
                } else {
                    rest.push(c.into_owned());
                }
            }
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                if rest.is_empty() {
                    base.pop();
                } else {
                    rest.push("..".into());
                }
            }
        }
    }
    if rest.is_empty() {
        // A literal file name: its directory is the base.
        let name = base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        base.pop();
        rest.push(name);
    }
    (base, rest)
}

/// Visits regular files under `dir`, at most `depth` directory levels down (unbounded for
/// `None`); symlinked directories are not followed (no loops), symlinked files are.
pub(super) fn walk(dir: &Path, depth: Option<usize>, visit: &mut dyn FnMut(&Path)) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot list directory");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            if depth != Some(0) {
                walk(&path, depth.map(|d| d - 1), visit);
            }
        } else if file_type.is_file()
            || (file_type.is_symlink() && fs::metadata(&path).is_ok_and(|m| m.is_file()))
        {
            visit(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(include: &[&str], exclude: &[&str], cwd: &Path) -> FileGlobs {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        FileGlobs::new(&s(include), &s(exclude), cwd).unwrap()
    }

    #[test]
    fn base_directories() {
        assert_eq!(
            split_base("/var/log/app/*.jsonl"),
            (PathBuf::from("/var/log/app"), vec!["*.jsonl".to_string()])
        );
        assert_eq!(
            split_base("/var/log/*/audit/**/x.jsonl").0,
            PathBuf::from("/var/log")
        );
        assert_eq!(
            split_base("/var/log/a.jsonl"),
            (PathBuf::from("/var/log"), vec!["a.jsonl".to_string()])
        );
    }

    #[test]
    fn expands_includes_minus_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/deep")).unwrap();
        for f in [
            "x.jsonl",
            "y.jsonl",
            "y.jsonl.gz",
            "skip.jsonl",
            "a/z.jsonl",
            "a/deep/w.jsonl",
        ] {
            fs::write(root.join(f), "").unwrap();
        }
        let g = globs(&["*.jsonl"], &["**/skip.jsonl"], root);
        assert_eq!(g.expand(), [root.join("x.jsonl"), root.join("y.jsonl")]);
        assert!(g.matches(&root.join("new.jsonl")));
        assert!(!g.matches(&root.join("skip.jsonl")));
        assert!(!g.matches(&root.join("a/z.jsonl")), "* does not cross /");
        assert_eq!(g.watch_dirs(), [(root.to_path_buf(), false)]);

        let g = globs(&["**/*.jsonl"], &["*/deep/*"], root);
        assert_eq!(g.expand().len(), 4);
        assert_eq!(g.watch_dirs(), [(root.to_path_buf(), true)]);

        let g = globs(&["*/z.jsonl"], &[], root);
        assert_eq!(g.expand(), [root.join("a/z.jsonl")]);
        assert!(
            globs(&["nothing/here/*.jsonl"], &[], root)
                .expand()
                .is_empty()
        );
        assert!(FileGlobs::new(&["a/[".into()], &[], root).is_err());
    }
}
