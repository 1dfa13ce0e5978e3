//! The tantivy index of audit records: indexing, newest-first search with cursor pagination,
//! facets, and lookups by (org, id).
//!
//! # Layout
//!
//! One tantivy index per time partition (ISO week by default, or month) under `<dir>/<name>/`
//! (`2026-W48`, `2026-11`), opened lazily, plus `<dir>/index-state.json`. Partitions are
//! time-disjoint, so a search walks them newest to oldest, stops collecting once its page is full
//! (on a first page older ones are only counted; later pages do not visit them at all), and skips
//! those outside `[since, until)`. Retention drops whole
//! partitions ([`Indexer::delete_partition`]). Records of every org share the partitions; every
//! query carries a term filter on the org.
//!
//! Schema: fast fields `time` (µs), `lsn`, `seq`, `uid_hash`, and `id`, `org`, `category`,
//! `action`, `outcome`, `user` (email, else id), `repository`; indexed `org`, `uid_hash` (a
//! lookup by (org, id) checks a hit against the `org` and `id` columns) and `kw` (lowercased
//! `name\x1fvalue` keywords behind the filters); full-text `text`, `actor_text`, `target_text`,
//! `message_text`; the stored canonical JSON in `doc`. Partitions written before `uid_hash` was
//! indexed find records by a text `uid` term instead; they are still read and written as they
//! are (`UidForm`). Partitions written before the columns no read uses were left out keep them
//! (`received_at`, `actor_id`, `actor_email`, `target_kind`, `target_id`: `Columns`).
//!
//! # Hash chains
//!
//! Each record carries its org's chain fields (`seq`, `prev_hash`, `hash`, see
//! [`codestax_common::chain`]); `seq` is a fast field. [`AuditIndex::chain_heads`] finds each
//! org's last record (the store continues the chains from there at start) and
//! [`AuditIndex::verify_chain`] checks an org's records in `seq` order, in constant memory but for
//! 24 bytes per record to sort them.
//!
//! Streams walk their org's chain from their cursor after every commit; while one runs, the index
//! keeps the org's newest records (as stored) in memory, in a bounded tail of unbroken `seq`
//! runs, and [`AuditIndex::for_each_chained_stored`] reads them there rather than searching the
//! new segments and decompressing doc-store blocks shared with every other org (`tail.rs`).
//!
//! # Order and cursors
//!
//! Newest first: `time` desc, then `id` desc (byte order). A cursor holds the last `(time, id)`
//! returned and a snapshot: records are included only if committed before the walk's first page
//! (by their write-ahead-log LSN, which grows in commit order), so records that arrive during a
//! walk, older or newer, neither shift nor join it, and `total` stays the same on every page.
//! The first page counts every match; its cursor carries that count (split at an anchor just
//! above the walk's lower time bound), so later pages count only the few matches near the
//! retention floor, which may expire during the walk, and visit only the partitions and segments
//! that can hold their entries. Cursors are bound to the org and the filters, and tagged under a
//! key only the collector holds ([`CursorKey`]); anything else is [`IndexError::BadCursor`].
//! An export does not walk pages: [`AuditIndex::scan`] reads every match of a search once, in the
//! same order and from the same kind of snapshot, in bounded memory.
//!
//! # Facets
//!
//! Counted over fast columns (ordinals per segment, values read once per dictionary block). The
//! counts of a segment wholly inside the query's range and snapshot are kept in memory by segment
//! id, deletion state and query (segments never change; a merge or a deletion makes a new key),
//! so repeated facets over ranges that share whole segments count only the segments at the edges.
//!
//! # The `q` language
//!
//! Terms are separated by spaces, and all must match:
//!
//! - `word` — a word anywhere searchable: actor id, name and email, target id and name, action,
//!   repository, message, metadata values (IP, user agent, scan type, changes, other values).
//!   Case-insensitive. Text is split into words at anything not a letter or digit, so `SEC-12`,
//!   `10.0.0.7` or `scan.failed` search for those words next to each other. A word also finds
//!   the actions it names: each word of an action without its past-tense ending, and a catalog
//!   action's description, are indexed with the record (`triage` finds `finding.triaged`,
//!   `trigger` finds `scan.triggered`, `status` finds `finding.triaged` through "Triage status
//!   changed"; [`codestax_common::action_search_words`]). These words were added to the full
//!   text without a schema change: an existing index opens and is searched as it is, but records
//!   indexed before this version are not found by these words (there is no reindex);
//!   `action:` and `category:` find every record.
//! - `"a phrase"` — these words next to each other, within one value.
//! - `field:value` or `field:"a value"`, with field one of
//!   - `action`, `category` (aliases accepted, `category:triage`), `user` (actor id or email),
//!     `repository`, `outcome`, `ip`: the whole value, exactly, ignoring case;
//!   - `actor` (actor name), `target` (target name or id), `message`: words or a phrase, as above.
//! - `-word`, `-"a phrase"`, `-field:value` — must not match.
//!
//! Nothing else is syntax: `AND`, `OR`, `(` are words (punctuation alone matches anything), an
//! unclosed quote runs to the end. An unknown `field:` is an error naming the field (quote a
//! value that contains a colon, `"http://x"`). At most [`MAX_Q_CHARS`] characters and
//! [`MAX_Q_TERMS`] terms.
//!
//! # Recovery
//!
//! [`Indexer::add`] takes each record's LSN; [`Indexer::commit`] commits the partitions, reloads
//! their readers, then persists the highest LSN ([`AuditIndex::indexed_through`]) with a
//! temp + fsync + rename write. Replaying from the next LSN after a crash is safe: the caller
//! dedupes, and a record at an LSN a crash may have left committed is looked up first and not
//! added again if it is there.
//!
//! # Records of past partitions
//!
//! Records of the current week (and of any week whose writer is open, such as the previous one
//! for a while after the week turns) go to their partition's writer and are searchable at the
//! next commit. Records of other, past weeks (history brought in, agents catching up) are held
//! in the [`Indexer`]'s stage, grouped by partition, within `IndexOptions::cold_stage_bytes`
//! (counted as their canonical JSON, the only form staged, plus a few bytes; the flight parses
//! each back into a record; records in flight count too). When the stage is half full, or a partition's first record waited
//! `cold_flush_after`, every staged partition is handed over whole to a flight
//! (`flight::Flight`): `cold_flush_threads` threads of its own (lanes), each taking the largest
//! partition left, on which a writer (one thread) adds its records, commits and is closed, its
//! merges (from 8 segments of a size; the current week's writers wait for 16) finishing on a thread of their own. One flight at a time; the indexer keeps committing this week's records meanwhile.
//! When stage and flight together pass the budget, [`Indexer::add_stored`] waits for the
//! flight; the indexer task uses [`Indexer::add_stored_no_wait`] instead and takes no more
//! batches while [`Indexer::cold_stage_full`] (its bounded queue, then acks, wait), committing
//! this week's records it took on its schedule meanwhile.
//! Without the stage, a batch spanning many weeks made the at most `max_open_writers` writers
//! commit, close and reopen per week per batch, writing tiny segments (10–20× slower).
//! A past week holding most of a due stage (history brought in arrives in time order, one week
//! after another) gets a writer of its own instead of a flight, long-lived like this week's;
//! another past week's writer gives way to it, never this week's. Once the index is quiet, each
//! past week a flight or a closed writer left (a segment per flush) is merged into one segment,
//! one week at a time, so a search after a spread load does not pay per small segment.
//!
//! The stage lives in memory only: [`Indexer::commit_due`] keeps [`AuditIndex::indexed_through`]
//! below the lowest LSN staged or in flight, so the WAL keeps those records and a crash replays them; records
//! committed above it are looked up before being added again (as after any crash mid-commit),
//! and the store's dedupe set keeps their ids until the mark passes them. Searches and facet
//! counts see everything committed (this week's records stay fresh while past ones wait);
//! walks by `seq` (streams, chain checks, the Merkle backfill) and export scans see only
//! through `indexed_through`, so no staged record looks like a hole in its org's chain.
//! [`Indexer::commit`] lands the flight and flushes everything (shutdown, recovery); deletes
//! land the flight, flush the partition they touch and commit first, so retention never leaves staged records of a deleted
//! partition behind.
//!
//! # Retention
//!
//! Deletion comes in two sizes, both through the [`Indexer`] (the one writer): a whole partition
//! ([`Indexer::delete_partition`]: its directory goes), or one org's records older than a
//! cutoff ([`Indexer::delete_older_than`]: `delete_query` on `org AND time < cutoff`, a commit,
//! then a merge of the segments holding deletions so their bytes leave the disk). Both commit
//! pending records first, so nothing deleted is above `indexed_through` and a WAL replay cannot
//! bring it back. [`AuditIndex::org_spans`] tells who has records in a partition and how old
//! the oldest is. The policy (who keeps what for how long) is `crate::retention`'s; reads hide
//! expired records before they are deleted through [`SearchQuery::floor`].
//! Deleting an org's oldest records leaves its hash chain starting after them: before deleting,
//! the janitor reads the `seq`s (and the hashes it keeps) of what it is about to delete
//! ([`AuditIndex::expiring_chains`]) into the org's retention checkpoint, which
//! [`AuditIndex::verify_chain`] starts from (and the store's chain heads, if nothing newer is
//! left).

// The map, from the bottom layer up: each group depends only on the groups above it (and,
// within a group, without cycles; `tools/module-cycles` checks).

// Foundations, holding no index state.
/// Signed cursors of a walk.
mod cursor;
/// [`IndexError`].
mod error;
/// [`IndexOptions`].
mod options;
/// A phrase query that checks positions forward only.
mod phrase;
/// The `q` language and [`SearchQuery`], planned into a tantivy query.
mod query;
/// The tantivy schema and the document of a record.
mod schema;
/// [`PartitionScheme`], [`PartitionKey`]: time partitions as names and ranges.
mod scheme;
/// `index-state.json`: how far in the write-ahead log the index is committed.
mod state;
/// The newest records of orgs that streams follow, in memory.
mod tail;

/// The collectors (count, page, facets, org spans, chain positions), one per file.
mod collect;

// What the read side and the write side share.
/// One partition's tantivy index, opened lazily.
mod partition;
/// The partitions, their readers, the marks and the read caches, opened from a directory.
mod shared;
/// Reading stored records back.
mod stored;

// The read side: the [`AuditIndex`] handle, each kind of read in a file of its own.
/// [`AuditIndex`], lookups by (org, id), partition sizes, org spans.
mod audit_index;
/// Chain heads, chain verification, what retention keeps of chains.
mod chain;
/// [`AuditIndex::facets`]: top values and the histogram.
mod facets;
/// [`AuditIndex::scan`]: every match once, for exports.
mod scan;
/// [`AuditIndex::search`]: pages and cursors.
mod search;

// The write side.
/// Staged records indexed on threads of their own (lanes).
mod flight;
/// [`Indexer`]: add, commit, delete.
mod indexer;
/// The writers' merge policy, weighed against the room the disk keeps free.
mod merges;
/// Records of past partitions held for bulk indexing.
mod stage;

// Both: [`AuditIndex::open`] returns the read handle and the writer.
mod open;

/// For tests: a directory whose writes fail on demand.
#[cfg(test)]
pub(crate) mod faults;
#[cfg(test)]
mod tests;

pub use audit_index::{AuditIndex, IndexStats, OrgSpan, PartitionInfo, TailFollow};
pub use chain::{ChainReport, ExpiringChains};
pub use cursor::CursorKey;
pub use error::IndexError;
pub use facets::{Bucket, Facets, Histogram, Interval, ValueCount};
pub use indexer::{Indexer, Purge};
pub use options::{DirectoryHook, IndexOptions, MergeRoom, WrapDirectory};
pub use query::{MAX_Q_CHARS, MAX_Q_TERMS, SearchQuery, check_q};
pub use scan::Scan;
pub use scheme::{PartitionKey, PartitionScheme};
pub use search::{MAX_PAGE_SIZE, SearchPage};
pub use tail::{TailHead, TailRecord};
