//! Time partitions: one tantivy index per ISO week (or month) under `<dir>/<name>/`, opened lazily.
//!
//! A partition holds exactly the records whose `time` falls in `[start, end)`, so partitions are
//! time-disjoint: a newest-first walk over them in order of `start` is a walk in time order.

use super::error::IndexError;
use super::options::DirectoryHook;
use super::schema::{UidForm, register_tokenizers};
use super::scheme::PartitionKey;
use super::state::sync_dir;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tantivy::directory::MmapDirectory;
use tantivy::index::SegmentId;
use tantivy::schema::Schema;
use tantivy::{Directory, Index, IndexReader, ReloadPolicy};

/// An opened partition: its tantivy index and a manually reloaded reader.
pub(crate) struct OpenPartition {
    pub index: Index,
    pub reader: IndexReader,
    /// How the partition finds a record by (org, id) (which schema it was written with).
    pub uid_form: UidForm,
}

/// One partition: known from its directory, opened on first use.
pub(crate) struct Partition {
    pub key: PartitionKey,
    pub dir: PathBuf,
    /// Wraps the directory when the partition is opened.
    hook: Option<DirectoryHook>,
    opened: Mutex<Option<Arc<OpenPartition>>>,
}

/// Blocks of the doc store kept decompressed per segment reader.
const DOC_STORE_CACHE_BLOCKS: usize = 64;

impl Partition {
    /// A partition whose directory holds an index (it is opened later, through `hook` if any).
    pub fn existing(key: PartitionKey, dir: PathBuf, hook: Option<DirectoryHook>) -> Partition {
        Partition {
            key,
            dir,
            hook,
            opened: Mutex::new(None),
        }
    }

    /// Creates the partition's index: built in `.tmp-<name>` and renamed into place, so a crash
    /// never leaves a half-created partition under its real name.
    pub fn create(
        root: &Path,
        key: PartitionKey,
        schema: &Schema,
        hook: Option<DirectoryHook>,
    ) -> Result<Partition, IndexError> {
        let dir = root.join(&key.name);
        let tmp = root.join(format!(".tmp-{}", key.name));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
        let index = Index::create_in_dir(&tmp, schema.clone())
            .map_err(|e| IndexError::tantivy(&tmp, "create the partition index", e))?;
        drop(index);
        std::fs::rename(&tmp, &dir).map_err(|e| IndexError::io(&dir, e))?;
        sync_dir(root)?;
        Ok(Partition::existing(key, dir, hook))
    }

    /// The opened index and reader, opening them on first use. Refuses a partition written with a
    /// schema this version does not know.
    pub fn open(&self) -> Result<Arc<OpenPartition>, IndexError> {
        let mut slot = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = slot.as_ref() {
            return Ok(open.clone());
        }
        let index = MmapDirectory::open(&self.dir)
            .map_err(tantivy::TantivyError::from)
            .and_then(|mmap| {
                let directory: Box<dyn Directory> = Box::new(mmap);
                Index::open(match &self.hook {
                    Some(hook) => (hook.0)(&self.dir, directory),
                    None => directory,
                })
            })
            .map_err(|e| IndexError::tantivy(&self.dir, "open the partition index", e))?;
        let Some(uid_form) = UidForm::of(&index.schema()) else {
            return Err(IndexError::State {
                path: self.dir.clone(),
                message: "the partition was written with a schema this version does not know"
                    .into(),
            });
        };
        register_tokenizers(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
            .try_into()
            .map_err(|e| IndexError::tantivy(&self.dir, "open a reader", e))?;
        let open = Arc::new(OpenPartition {
            index,
            reader,
            uid_form,
        });
        *slot = Some(open.clone());
        Ok(open)
    }

    /// The opened index and reader, if the partition is open now (without opening it).
    fn opened_now(&self) -> Option<Arc<OpenPartition>> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes the last commit visible to searchers, if the partition is open (a partition opened
    /// later sees it anyway).
    pub fn reload(&self) -> Result<(), IndexError> {
        match self.opened_now() {
            Some(open) => self.reload_reader(&open),
            None => Ok(()),
        }
    }

    /// Reloads the reader if the partition's segments changed since (a background merge ended),
    /// which costs reading `meta.json`; a reload opens every segment again.
    pub fn reload_if_merged(&self) -> Result<(), IndexError> {
        let Some(open) = self.opened_now() else {
            return Ok(());
        };
        let on_disk: HashSet<SegmentId> = open
            .index
            .searchable_segment_ids()
            .map_err(|e| IndexError::tantivy(&self.dir, "read the segment list", e))?
            .into_iter()
            .collect();
        let searcher = open.reader.searcher();
        let seen = searcher.segment_readers();
        if seen.len() != on_disk.len() || seen.iter().any(|r| !on_disk.contains(&r.segment_id())) {
            self.reload_reader(&open)?;
        }
        Ok(())
    }

    fn reload_reader(&self, open: &OpenPartition) -> Result<(), IndexError> {
        open.reader
            .reload()
            .map_err(|e| IndexError::tantivy(&self.dir, "reload the reader", e))
    }

    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.opened_now().is_some()
    }

    /// Bytes of the files in the partition's directory (it holds no subdirectories).
    pub fn bytes_on_disk(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}
