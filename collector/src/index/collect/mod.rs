//! tantivy collectors over fast columns, one per file, with the helpers they share. The time
//! range and the snapshot bound are checked here, per document, only in segments whose column
//! statistics do not already settle them.
//!
//! - [`filter`]: [`DocFilter`] (time range, snapshot) and its per-segment form, shared by all;
//! - [`count`]: [`FilteredCount`], the number of matches;
//! - [`page`]: [`PageCollector`], a newest-first page of a search, with [`top_k`] keeping the
//!   newest entries and [`time_chunks`] the time ranges of runs of documents;
//! - [`facets`]: [`FacetCollector`], value and hour counts into a [`FacetFruit`]
//!   ([`facet_fruit`]), whole segments' counts kept in the [`FacetCache`] ([`facet_cache`]);
//! - [`org_spans`]: [`OrgSpanCollector`], who has records in a partition (for retention);
//! - [`seqs`]: [`SeqCollector`], the chain positions of matches (for chain verification).

mod count;
mod facet_cache;
mod facet_fruit;
mod facets;
mod filter;
mod org_spans;
mod page;
mod seqs;
mod time_chunks;
mod top_k;

#[cfg(test)]
mod test_index;

pub(crate) use count::FilteredCount;
pub(crate) use facet_cache::FacetCache;
pub(crate) use facet_fruit::FacetFruit;
pub(crate) use facets::{FacetCollector, HOUR_MICROS};
pub(crate) use filter::{DocFilter, FastCol, SegmentFilter};
pub(crate) use org_spans::OrgSpanCollector;
pub(crate) use page::{PageCollector, PageFruit};
pub(crate) use seqs::SeqCollector;
pub(crate) use time_chunks::TimeChunks;
