//! [`Indexer`]: the single writer. Adds records to their time partition, commits, and records how
//! far in the write-ahead log the index is.

use super::audit_index::Inner;
use super::error::IndexError;
use super::partition::{Partition, PartitionKey};
use super::schema::document;
use super::state::{IndexState, sync_dir, write_state};
use crate::uid::uid;
use codestax_common::AuditRecord;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tantivy::{IndexWriter, Term};

/// A partition's open writer.
struct OpenWriter {
    partition: Arc<Partition>,
    writer: IndexWriter,
    /// Received records since its last commit.
    dirty: bool,
    /// For picking the least recently used writer to close.
    last_used: u64,
}

/// The index's one writer. Owned by a single (blocking) task; records become searchable when
/// [`Indexer::commit`] returns. Records added but not committed are lost when it is dropped or the
/// process dies: they are still in the write-ahead log, after [`AuditIndex::indexed_through`].
///
/// [`AuditIndex::indexed_through`]: super::AuditIndex::indexed_through
pub struct Indexer {
    inner: Arc<Inner>,
    /// Open writers by partition start.
    writers: HashMap<i64, OpenWriter>,
    /// As persisted in the state file.
    state: IndexState,
    /// Highest LSN added since open.
    max_added: Option<u64>,
    /// Records up to this LSN may already be committed: re-adding one replaces it (delete by uid,
    /// then add) instead of indexing it twice.
    replay_through: Option<u64>,
    /// Partitions committed since the last [`Indexer::commit`] whose readers need a reload.
    committed: BTreeSet<i64>,
    clock: u64,
}

impl Indexer {
    pub(crate) fn new(
        inner: Arc<Inner>,
        state: IndexState,
        replay_through: Option<u64>,
    ) -> Indexer {
        Indexer {
            inner,
            writers: HashMap::new(),
            state,
            max_added: None,
            replay_through,
            committed: BTreeSet::new(),
            clock: 0,
        }
    }

    /// Adds a record read from the write-ahead log at `lsn`. LSNs must grow in the order records
    /// are added (replays after a restart may repeat those after [`Self::indexed_through`]).
    ///
    /// The caller dedupes by (org, id); in addition, a record at an LSN that may already be
    /// committed (a replay after a crash) replaces its earlier copy rather than doubling it.
    pub fn add(&mut self, lsn: u64, record: &AuditRecord) -> Result<(), IndexError> {
        let doc = document(&self.inner.fields, lsn, record)?;
        let key = self.inner.opts.partition.key_for(record.time);
        let replay = self.replay_through.is_some_and(|r| lsn <= r);
        let uid_field = self.inner.fields.uid;
        let w = self.writer_for(&key)?;
        if replay {
            w.writer.delete_term(Term::from_field_text(
                uid_field,
                &uid(&record.org_id, record.id()),
            ));
        }
        w.writer
            .add_document(doc)
            .map_err(|e| IndexError::tantivy(&w.partition.dir, "add a record", e))?;
        w.dirty = true;
        self.max_added = self.max_added.max(Some(lsn));
        Ok(())
    }

    /// Adds a batch of records, partition by partition (in LSN order within each), so a batch
    /// that spans more partitions than there are open writers switches writers once per
    /// partition rather than once per record.
    pub fn add_batch(&mut self, records: &[(u64, AuditRecord)]) -> Result<(), IndexError> {
        let scheme = self.inner.opts.partition;
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&i| scheme.key_for(records[i].1.time).start);
        for i in order {
            let (lsn, record) = &records[i];
            self.add(*lsn, record)?;
        }
        Ok(())
    }

    /// Commits every partition that received records, makes them searchable, then persists the
    /// highest LSN added as [`Self::indexed_through`], which it returns. Writers that received
    /// nothing since the previous commit are closed.
    pub fn commit(&mut self) -> Result<Option<u64>, IndexError> {
        let dirty: Vec<i64> = self
            .writers
            .iter()
            .filter(|(_, w)| w.dirty)
            .map(|(k, _)| *k)
            .collect();
        if !dirty.is_empty() {
            self.persist_pending()?;
        }
        for key in &dirty {
            let w = self.writers.get_mut(key).expect("listed above");
            w.writer
                .commit()
                .map_err(|e| IndexError::tantivy(&w.partition.dir, "commit", e))?;
            w.dirty = false;
            self.committed.insert(*key);
        }
        // Close the writers idle for a whole commit interval.
        self.writers.retain(|key, _| dirty.contains(key));
        let partitions = self
            .inner
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for key in std::mem::take(&mut self.committed) {
            if let Some(p) = partitions.get(&key) {
                p.reload()?;
            }
        }
        let through = self.state.indexed_through.max(self.max_added);
        if through != self.state.indexed_through || self.state.pending_through.is_some() {
            let mut next = self.state.clone();
            next.indexed_through = through;
            next.pending_through = next.pending_through.filter(|p| Some(*p) > through);
            write_state(&self.inner.dir, &next)?;
            self.state = next;
        }
        let mut marks = self.inner.marks.write().unwrap_or_else(|e| e.into_inner());
        marks.indexed_through = through;
        marks.snapshot_through = marks.snapshot_through.max(through);
        Ok(through)
    }

    /// The LSN through which records are committed, as persisted.
    pub fn indexed_through(&self) -> Option<u64> {
        self.state.indexed_through
    }

    /// Deletes a whole partition (for retention): its writer, its records and its directory.
    /// Returns whether it existed. Records added to it later recreate it.
    pub fn delete_partition(&mut self, name: &str) -> Result<bool, IndexError> {
        let Some(key) = self.inner.opts.partition.parse_name(name) else {
            return Ok(false);
        };
        self.writers.remove(&key.start);
        self.committed.remove(&key.start);
        let removed = self
            .inner
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key.start);
        let Some(p) = removed else {
            return Ok(false);
        };
        std::fs::remove_dir_all(&p.dir).map_err(|e| IndexError::io(&p.dir, e))?;
        sync_dir(&self.inner.dir)?;
        tracing::info!(partition = name, "deleted partition");
        Ok(true)
    }

    /// Partition writers open now.
    pub fn open_writers(&self) -> usize {
        self.writers.len()
    }

    /// Before any partition commits records beyond `indexed_through`, records how far they go,
    /// so a replay after a crash knows which re-adds must replace.
    fn persist_pending(&mut self) -> Result<(), IndexError> {
        let Some(max) = self.max_added else {
            return Ok(());
        };
        if self.state.indexed_through >= Some(max) || self.state.pending_through >= Some(max) {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.pending_through = Some(max);
        write_state(&self.inner.dir, &next)?;
        self.state = next;
        Ok(())
    }

    /// The writer of a partition, creating the partition and opening the writer as needed.
    fn writer_for(&mut self, key: &PartitionKey) -> Result<&mut OpenWriter, IndexError> {
        self.clock += 1;
        if !self.writers.contains_key(&key.start) {
            if self.writers.len() >= self.inner.opts.max_open_writers {
                self.close_least_recently_used()?;
            }
            let partition = self.partition(key)?;
            let open = partition.open(&self.inner.schema)?;
            let writer = open
                .index
                .writer_with_num_threads(
                    self.inner.opts.writer_threads,
                    self.inner.opts.writer_memory_bytes,
                )
                .map_err(|e| IndexError::tantivy(&partition.dir, "open a writer", e))?;
            self.writers.insert(
                key.start,
                OpenWriter {
                    partition,
                    writer,
                    dirty: false,
                    last_used: 0,
                },
            );
        }
        let w = self.writers.get_mut(&key.start).expect("inserted above");
        w.last_used = self.clock;
        Ok(w)
    }

    /// Commits (without making searchable yet) and closes the least recently used writer.
    fn close_least_recently_used(&mut self) -> Result<(), IndexError> {
        let Some(key) = self
            .writers
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(k, _)| *k)
        else {
            return Ok(());
        };
        if self.writers[&key].dirty {
            self.persist_pending()?;
            let w = self.writers.get_mut(&key).expect("found above");
            w.writer
                .commit()
                .map_err(|e| IndexError::tantivy(&w.partition.dir, "commit", e))?;
            self.committed.insert(key);
        }
        self.writers.remove(&key);
        Ok(())
    }

    /// The partition of `key`, created if new.
    fn partition(&self, key: &PartitionKey) -> Result<Arc<Partition>, IndexError> {
        if let Some(p) = self
            .inner
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.start)
        {
            return Ok(p.clone());
        }
        let p = Arc::new(Partition::create(
            &self.inner.dir,
            key.clone(),
            &self.inner.schema,
        )?);
        self.inner
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.start, p.clone());
        tracing::debug!(partition = key.name(), "created partition");
        Ok(p)
    }
}
