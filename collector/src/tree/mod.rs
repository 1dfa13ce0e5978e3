//! Each org's Merkle tree (RFC 9162) over its records in `seq` order, and the signed heads of
//! those trees.
//!
//! - [`layout`]: where each stored hash is in an org's log;
//! - [`OrgTree`] (`org`): one org's tree — a storage log of 32-byte hashes (the leaves and the
//!   complete subtrees of levels 4, 8, …) under `<data_dir>/tree/org-<org id>/`, its frontier in
//!   memory (`O(log n)`), hashes not yet synced in memory until they are;
//! - [`Trees`] (`trees`): every org's tree and the directory lock;
//! - [`backfill_from_index`]: at start, the leaves of records the index holds and the tree
//!   lacks (records stored before trees existed);
//! - [`key`]: the Ed25519 signing key file; [`Heads`] (`heads`): signed tree heads, on demand.
//!
//! # Leaves
//!
//! Leaf `seq - 1` of an org's tree is [`codestax_common::chain::record_leaf_hash`] of its record
//! with that `seq`, computed when the store seals the record.
//!
//! # Durability without a second fsync per batch
//!
//! The store appends a group's leaves to the trees once the group is durable in the write-ahead
//! log, without syncing them: a record acknowledged is in the WAL, and the WAL keeps every
//! segment holding records the trees may not have durably. Before the store deletes WAL segments
//! (once the index has them), it syncs the trees; at start it replays the WAL from its oldest
//! entry into the trees, which skip what they have. A tree syncs on its own only past
//! [`org::MAX_PENDING`] unsynced hashes. Retention never touches the trees: the leaves of
//! deleted records stay, so everything left still proves against the same roots.

mod error;
mod heads;
pub mod key;
pub mod layout;
mod org;
mod trees;

pub use error::TreeError;
pub use heads::{HeadError, Heads, SignedHead};
pub use org::{MAX_PENDING, OrgTree};
pub use trees::{SharedTree, Trees, lock};

use crate::index::{AuditIndex, IndexError};
use codestax_common::chain::ChainHead;
use codestax_config::SigningConfig;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Why the trees or the heads could not be had at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("adding stored records to the Merkle trees: {0}")]
    Index(#[from] IndexError),
    #[error(transparent)]
    Key(#[from] key::KeyFileError),
    #[error(transparent)]
    Heads(#[from] HeadError),
}

/// Opens the trees in `dir` and gives them what the index holds beyond them
/// ([`backfill_from_index`]); the store then adds what only the WAL holds.
pub fn open_trees(
    dir: &Path,
    index: &AuditIndex,
    chain_heads: &HashMap<String, ChainHead>,
) -> Result<Arc<Trees>, StartError> {
    let trees = Trees::open(dir)?;
    let added = backfill_from_index(&trees, index, chain_heads)?;
    if added > 0 {
        trees.sync_all()?;
        tracing::info!(records = added, "stored records added to the Merkle trees");
    }
    Ok(Arc::new(trees))
}

/// The signing key (`signing`, or the one generated in `data_dir`) and the heads kept in `dir`,
/// checked against the trees (open them after the store has caught them up).
pub fn open_heads(
    dir: &Path,
    data_dir: &Path,
    signing: &SigningConfig,
    trees: &Trees,
) -> Result<Arc<Heads>, StartError> {
    let signer = key::load_or_generate(signing.key_file.as_deref(), data_dir, &signing.key_name)?;
    tracing::info!(key = %signer.verifier(), "signing tree heads");
    let heads = Heads::open(dir, signer)?;
    heads.check(trees)?;
    Ok(Arc::new(heads))
}

/// Gives each org's tree the leaves of the records the index holds beyond the tree's size, up
/// to its chain head (`heads`): the records of a collector that ran before trees existed, or
/// whose tree directory was lost. An org whose missing records are no longer stored (deleted by
/// retention before its tree existed) gets an unavailable tree, with why. Returns how many
/// leaves were added.
pub fn backfill_from_index(
    trees: &Trees,
    index: &AuditIndex,
    heads: &HashMap<String, ChainHead>,
) -> Result<u64, IndexError> {
    let mut added = 0;
    for (org, head) in heads {
        let size = trees.size(org);
        if head.seq <= size || trees.unavailable(org).is_some() {
            continue;
        }
        tracing::info!(
            org,
            from = size + 1,
            to = head.seq,
            "adding stored records to the org's Merkle tree"
        );
        index.for_each_chained(org, size + 1, |record| match trees.replay(record) {
            Ok(()) => {
                added += 1;
                true
            }
            Err(e) => {
                tracing::error!(org, error = %e, "cannot add stored records to the Merkle tree");
                false
            }
        })?;
        if trees.size(org) < head.seq && trees.unavailable(org).is_none() {
            tracing::warn!(
                org,
                size = trees.size(org),
                head = head.seq,
                "the org's Merkle tree lags its chain; the write-ahead log may hold the rest"
            );
        }
    }
    Ok(added)
}
