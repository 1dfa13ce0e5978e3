//! [`AppState`]: what every handler shares, and the API's fixed [`ApiLimits`]. Below the
//! handlers and the router that wires them, so both depend on it and not on each other.

use crate::health::Health;
use crate::index::AuditIndex;
use crate::ingest::Ingest;
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::retention::RetentionPolicy;
use crate::saved_views::SavedViews;
use crate::stream::Streams;
use crate::tree::{Heads, Trees};
use std::sync::Arc;

/// Limits and defaults of the API, fixed at start.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Largest request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Largest gzip-inflated body, in bytes (413 above).
    pub max_decompressed_bytes: usize,
    /// Largest `limit` of a search page.
    pub max_search_limit: usize,
    /// Facet values listed per field unless `top` says otherwise.
    pub facet_top_n: usize,
    /// Time to read a request and produce its answer's head (408 after); a streamed body once
    /// started is not cut, so a long export runs to its end.
    pub request_timeout: std::time::Duration,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub keys: KeyStore,
    pub index: AuditIndex,
    pub ingest: Ingest,
    pub metrics: Arc<Metrics>,
    /// Every org's retention: the floor of every read, changed through the settings route.
    pub retention: Arc<RetentionPolicy>,
    pub limits: ApiLimits,
    /// Every org's Merkle tree, and their signed heads.
    pub trees: Arc<Trees>,
    pub heads: Arc<Heads>,
    /// Proofs of CSV exports, until the client fetches them.
    pub sidecars: Arc<crate::export_proof::Sidecars>,
    /// Started yet (the WAL replayed into the index), and whether the WAL and the index write.
    pub health: Health,
    /// Every org's saved views (the dashboard's named filter sets).
    pub saved_views: Arc<SavedViews>,
    /// Every org's streams; `None` until they are started (the routes answer 503 meanwhile).
    pub streams: Option<Streams>,
    /// Cluster mode: read routing and the keys' refresh; `None` on a single node.
    pub cluster: Option<crate::cluster::ClusterApi>,
}

/// When the API's deadline layer (`limits.request_timeout`) answers 408 for a request, in its
/// extensions: a handler that waits (`refresh=wait_for`) answers before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestDeadline(pub tokio::time::Instant);
