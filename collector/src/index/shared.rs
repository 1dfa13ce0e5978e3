//! [`Shared`]: what the read side ([`AuditIndex`](super::AuditIndex) handles) and the write side
//! (the [`Indexer`](super::Indexer)) both hold: the partitions, their readers, how far the index
//! is, and the read caches. Opening an index directory builds it.

use super::collect::{FacetCache, TimeChunks};
use super::cursor::CursorKey;
use super::error::IndexError;
use super::options::IndexOptions;
use super::partition::{OpenPartition, Partition};
use super::schema::{Fields, UidForm, build_schema, col};
use super::state::{IndexState, read_state};
use super::tail::Tail;
use crate::uid::{uid, uid_hash};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tantivy::schema::{IndexRecordOption, Schema};
use tantivy::{DocAddress, DocId, DocSet, Searcher, SegmentReader, TERMINATED, Term};

/// State shared by [`AuditIndex`](super::AuditIndex) handles and the
/// [`Indexer`](super::Indexer).
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: IndexOptions,
    pub schema: Schema,
    pub fields: Fields,
    /// Partitions by start time.
    pub partitions: RwLock<BTreeMap<i64, Arc<Partition>>>,
    pub marks: RwLock<Marks>,
    /// Facet counts of whole segments (see [`FacetCache`]).
    pub facet_cache: Arc<FacetCache>,
    /// Time ranges of runs of documents per segment, for later pages of walks.
    pub time_chunks: Arc<TimeChunks>,
    /// Bumped after every commit that made records searchable: streams wait on it rather than
    /// poll.
    pub commits: tokio::sync::watch::Sender<u64>,
    /// The newest records of orgs that streams follow.
    pub tail: Tail,
    /// What search cursors are tagged under ([`super::AuditIndex::set_cursor_key`]).
    pub cursor_key: RwLock<CursorKey>,
}

/// How far the index is, as last committed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Marks {
    /// Persisted: every record up to this LSN is committed.
    pub indexed_through: Option<u64>,
    /// Every record searchable now that a new cursor walk includes: up to this LSN.
    pub snapshot_through: Option<u64>,
}

/// An index directory, opened: the shared state, the state file as read (or new), and the LSN
/// up to which re-added records may already be committed.
pub(crate) struct Opened {
    pub shared: Arc<Shared>,
    pub state: IndexState,
    pub replay_through: Option<u64>,
}

impl Shared {
    /// The partition of this directory name (`2026-W48`), if the name is one and it exists.
    pub fn partition_named(&self, name: &str) -> Option<Arc<Partition>> {
        let key = self.opts.partition.parse_name(name)?;
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.start)
            .cloned()
    }

    /// Opens (or creates) the index in `dir`: reads the state file, finds the partitions by their
    /// directory names (opened when first needed) and removes half-created ones. Refuses a
    /// directory written with another partition scheme.
    pub fn open(dir: &Path, opts: IndexOptions) -> Result<Opened, IndexError> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let found = read_state(dir)?;
        let state = found
            .clone()
            .unwrap_or_else(|| IndexState::new(opts.partition));
        if state.scheme != opts.partition {
            return Err(IndexError::Options(format!(
                "{} holds {} partitions, not {} ones",
                dir.display(),
                state.scheme.as_str(),
                opts.partition.as_str()
            )));
        }
        let (schema, fields) = build_schema();
        let mut partitions = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| IndexError::io(dir, e))? {
            let entry = entry.map_err(|e| IndexError::io(dir, e))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                // A partition whose creation did not finish: it never received a commit.
                std::fs::remove_dir_all(&path).map_err(|e| IndexError::io(&path, e))?;
                continue;
            }
            match opts.partition.parse_name(&name) {
                Some(key) => {
                    partitions.insert(
                        key.start,
                        Arc::new(Partition::existing(key, path, opts.directory.clone())),
                    );
                }
                None => {
                    tracing::warn!(path = %path.display(), "ignoring a directory that is not a partition")
                }
            }
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            facet_cache: Arc::new(FacetCache::new(
                opts.facet_cache_bytes,
                opts.facet_cache_min_docs,
            )),
            time_chunks: Arc::new(TimeChunks::new(opts.time_chunk_docs)),
            tail: Tail::new(opts.tail_bytes),
            cursor_key: RwLock::new(CursorKey::random()),
            opts,
            schema,
            fields,
            partitions: RwLock::new(partitions),
            marks: RwLock::new(Marks {
                indexed_through: state.indexed_through,
                snapshot_through: state.indexed_through,
            }),
            commits: tokio::sync::watch::Sender::new(0),
        });
        let mut replay_through = state.indexed_through.max(state.pending_through);
        if found.is_none() && !shared.partitions_newest_first(None, None).is_empty() {
            // The state file is gone but records are not: what the log still holds is unknown,
            // so report nothing indexed (the caller replays all) and make those re-adds replace.
            let max = shared.max_lsn()?;
            tracing::warn!(dir = %dir.display(), max_lsn = max, "index state file missing; re-adds up to the highest indexed LSN will replace");
            replay_through = max;
            shared
                .marks
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot_through = max;
        }
        Ok(Opened {
            shared,
            state,
            replay_through,
        })
    }

    /// Partitions that may hold records of `[since, until)`, newest first.
    pub fn partitions_newest_first(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Vec<Arc<Partition>> {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .rev()
            .filter(|p| p.key.overlaps(since, until))
            .cloned()
            .collect()
    }

    /// Every partition, newest first, but the one holding time `near` (if any) first: a record
    /// looked up by id is most likely in the partition of its own time.
    pub fn partitions_near_first(&self, near: i64) -> Vec<Arc<Partition>> {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let home = map
            .range(..=near)
            .next_back()
            .map(|(_, p)| p)
            .filter(|p| near < p.key.end);
        home.into_iter()
            .chain(
                map.values()
                    .rev()
                    .filter(|p| home.is_none_or(|h| h.key.start != p.key.start)),
            )
            .cloned()
            .collect()
    }

    /// A searcher of a partition; `None` if it was deleted meanwhile.
    pub fn searcher(&self, p: &Partition) -> Result<Option<Searcher>, IndexError> {
        Ok(self.opened(p)?.map(|open| open.reader.searcher()))
    }

    /// A partition, opened; `None` if it was deleted meanwhile.
    fn opened(&self, p: &Partition) -> Result<Option<Arc<OpenPartition>>, IndexError> {
        match p.open() {
            Ok(open) => Ok(Some(open)),
            Err(e) => {
                let live = self
                    .partitions
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&p.key.start);
                if live { Err(e) } else { Ok(None) }
            }
        }
    }

    /// The searchable record (org, id) in partition `p` and the searcher that found it; `None` if
    /// the partition does not hold it (or was deleted meanwhile).
    pub fn find(
        &self,
        p: &Partition,
        org: &str,
        id: &str,
    ) -> Result<Option<(Searcher, DocAddress)>, IndexError> {
        let Some(open) = self.opened(p)? else {
            return Ok(None);
        };
        let searcher = open.reader.searcher();
        let term = match open.uid_form {
            UidForm::Text => Term::from_field_text(self.fields.uid, &uid(org, id)),
            UidForm::Hash => Term::from_field_u64(self.fields.uid_hash, uid_hash(org, id)),
        };
        // A text uid is the record's own; a hash hit is checked against the org and id columns.
        let exact = open.uid_form == UidForm::Text;
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            if let Some(doc) = first_live_hit(reader, &term, exact, org, id, &p.dir)? {
                let addr = DocAddress::new(ord as u32, doc);
                return Ok(Some((searcher.clone(), addr)));
            }
        }
        Ok(None)
    }

    /// The highest LSN in any committed partition (opens every partition).
    fn max_lsn(&self) -> Result<Option<u64>, IndexError> {
        let mut max = None;
        for p in self.partitions_newest_first(None, None) {
            let Some(searcher) = self.searcher(&p)? else {
                continue;
            };
            for reader in searcher.segment_readers() {
                let lsn = reader
                    .fast_fields()
                    .u64(col::LSN)
                    .map_err(|e| IndexError::tantivy(&p.dir, "read the lsn column", e))?;
                if lsn.values.num_vals() > 0 {
                    max = max.max(Some(lsn.max_value()));
                }
            }
        }
        Ok(max)
    }
}

/// The first live document of `reader` holding `term` that is the record (org, id) (`exact`: any
/// holder is). The term's postings are read directly: a query and a collector cost more than the
/// lookup itself, and the store asks this for every duplicate it is sent.
fn first_live_hit(
    reader: &SegmentReader,
    term: &Term,
    exact: bool,
    org: &str,
    id: &str,
    dir: &Path,
) -> Result<Option<DocId>, IndexError> {
    let postings = reader
        .inverted_index(term.field())
        .map_err(|e| IndexError::tantivy(dir, "look up a record by id", e))?
        .read_postings(term, IndexRecordOption::Basic)
        .map_err(|e| IndexError::io(dir, e))?;
    let Some(mut postings) = postings else {
        return Ok(None);
    };
    let mut doc = postings.doc();
    while doc != TERMINATED {
        if !reader.is_deleted(doc) && (exact || is_record(reader, doc, org, id, dir)?) {
            return Ok(Some(doc));
        }
        doc = postings.advance();
    }
    Ok(None)
}

/// Whether document `doc` of `reader` is the record (org, id), by its `org` and `id` columns: a
/// hit on `uid_hash` alone does not prove it.
fn is_record(
    reader: &SegmentReader,
    doc: DocId,
    org: &str,
    id: &str,
    dir: &Path,
) -> Result<bool, IndexError> {
    let ff = reader.fast_fields();
    let mut value = String::new();
    for (name, want) in [(col::ORG, org), (col::ID, id)] {
        let Some(column) = ff
            .str(name)
            .map_err(|e| IndexError::tantivy(dir, "read a column to check a record's id", e))?
        else {
            return Ok(false);
        };
        let Some(ord) = column.term_ords(doc).next() else {
            return Ok(false);
        };
        value.clear();
        column
            .ord_to_str(ord, &mut value)
            .map_err(|e| IndexError::io(dir, e))?;
        if value != want {
            return Ok(false);
        }
    }
    Ok(true)
}
