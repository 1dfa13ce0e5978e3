//! The durable ingest path: a write-ahead log, the (org, id) dedupe set, and the group-committing
//! [`Store`] whose `submit` resolves only once the new records are fsynced.
//!
//! Lifecycle: [`Store::open`] (blocking) opens the WAL, loads the index's uid hashes, and returns
//! the WAL records after the index's `indexed_through` LSN for the caller to index before serving;
//! newly stored records then flow to the indexer as [`IndexBatch`]es, and the indexer reports
//! progress with [`Store::mark_indexed_through`], which prunes the dedupe set's recent map and
//! deletes fully indexed WAL segments (so the WAL keeps whatever the index has not committed, and
//! an indexer that failed re-reads it with [`Store::read_stored`]). [`Store::close`] waits for the
//! writer to release the WAL. A group that cannot be written is refused whole and marks the WAL
//! failing in the collector's [`Health`](crate::health::Health); the next group written clears it.
//!
//! Hash chains: the writer numbers each org's newly stored records (`seq`) and seals them into the
//! org's chain ([`codestax_common::chain`]) at group time, so the WAL payload is the sealed
//! record. The chain heads move only when the group is durable; at open they come from the index
//! ([`Store::open`]'s `chain_heads`) and from the WAL entries read.

mod backlog;
mod dedupe;
mod wal;
mod writer;

pub use backlog::{Backlog, INDEX_BYTES_PER_WAL_BYTE};
pub use dedupe::{DedupeSet, IdLookup};
pub use wal::{Lsn, MAX_ENTRY_BYTES, Wal, WalEntries, WalError, WalReader};
pub use writer::{
    Admission, IndexBatch, Store, StoreError, StoreOptions, StoreStats, StoredRecords,
};
