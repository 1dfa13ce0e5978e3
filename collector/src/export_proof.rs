//! The proof an export carries (`codestax-export/2`, see
//! [`codestax_common::export_proof`]): built once the records are written, since the manifest's
//! digest covers them in their order and the CSV manifest covers the file's bytes.
//!
//! From the `seq`s written, in file order: their leaf hashes read from the org's tree (so the
//! digest is over what the tree holds, and a record that differs from its leaf fails to verify),
//! a signed head of the org that covers them (its latest one when it does, else its current
//! one: the trees are ahead of the index), one multi-proof of the records and the holes against it, and, for an unfiltered
//! export, the holes inside its span with their times: records retention deleted (the
//! tombstones) or hides (older than the cut-off, not yet deleted). Memory: about 50 bytes per
//! exported record while the proof is built.

use crate::index::{AuditIndex, IndexError, SearchQuery};
use crate::retention::RetentionPolicy;
use crate::tree::{HeadError, Heads, TreeError, Trees, lock};
use chrono::{DateTime, Utc};
use codestax_common::export_proof::{
    FORMAT, Hole, Manifest, Proof, ProofBundle, RowLeaf, b64, holes_digest, records_digest,
};
use codestax_common::merkle::{self, Hash};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Leaves read under one hold of an org's tree lock while a proof is made.
const LEAVES_PER_LOCK: usize = 4096;

/// Why no proof could be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportProofError {
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("reading the records retention hides: {0}")]
    Index(#[from] IndexError),
    #[error("the proof: {0}")]
    Proof(String),
    #[error("cannot sign the manifest: {0}")]
    Sign(#[from] codestax_common::note::NoteError),
}

/// What the proof of one export is made from, fixed when the export starts.
pub struct ProofContext {
    pub org: String,
    /// `json`, `ndjson`, `csv`, …
    pub encoding: String,
    /// The filters as given, form-urlencoded with keys sorted; `None`: unfiltered.
    pub filters: Option<String>,
    /// The retention cut-off the export was read with.
    pub cutoff: Option<DateTime<Utc>>,
    /// Whether the file's bytes cannot recompute leaf hashes (CSV…): the manifest then binds
    /// the bytes, and the proof lists each row's `seq` and leaf hash.
    pub bytes_only: bool,
    pub trees: Arc<Trees>,
    pub heads: Arc<Heads>,
    pub retention: Arc<RetentionPolicy>,
    pub index: AuditIndex,
}

/// The filters of an export as the manifest names them: `None` when there are none.
pub fn canonical_filters(filters: &BTreeMap<String, Vec<String>>) -> Option<String> {
    if filters.is_empty() {
        return None;
    }
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, values) in filters {
        for v in values {
            s.append_pair(k, v);
        }
    }
    Some(s.finish())
}

impl ProofContext {
    /// Whether the org's tree can prove anything (else the export carries no proof).
    pub fn available(trees: &Trees, org: &str) -> bool {
        trees.unavailable(org).is_none()
    }

    /// The bundle for the records written (`seqs`, in file order) and, for bytes-only formats,
    /// the file's SHA-256. Blocking (tree reads, an fsync for a new head).
    pub fn build(
        self,
        seqs: &[u64],
        file_sha256: Option<Hash>,
    ) -> Result<ProofBundle, ExportProofError> {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        // Any signed head that covers the records proves them: the latest one usually does
        // (the trees are ahead of the index), which spares signing and syncing a new one.
        let head = self.heads.covering(
            &self.org,
            &self.trees,
            sorted.last().copied().unwrap_or_default(),
        )?;
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(ExportProofError::Proof(format!(
                "seq {} was written twice",
                w[0]
            )));
        }
        if let Some(&last) = sorted.last()
            && last > head.size
        {
            return Err(ExportProofError::Proof(format!(
                "seq {last} is beyond the signed tree of {} records",
                head.size
            )));
        }
        let holes = if self.filters.is_none() && sorted.len() > 1 {
            self.holes(&sorted)?
        } else {
            Vec::new()
        };
        let Some(tree) = self.trees.org(&self.org) else {
            if !seqs.is_empty() {
                return Err(ExportProofError::Proof("the org has no tree".into()));
            }
            return self.finish(head, Vec::new(), &[], Vec::new(), &[], file_sha256);
        };
        // Read in chunks, the lock let go between them: ingest appends to the same tree. Runs
        // of consecutive seqs (an unfiltered export is mostly one) are read at once.
        let mut leaves = Vec::with_capacity(sorted.len());
        for chunk in sorted.chunks(LEAVES_PER_LOCK) {
            let mut tree = lock(&tree);
            for run in chunk.chunk_by(|a, b| *b == a + 1) {
                let at = leaves.len();
                leaves.resize(at + run.len(), [0; 32]);
                tree.leaves(run[0] - 1, &mut leaves[at..])?;
            }
        }
        let mut tree = lock(&tree);
        let mut holes_full = Vec::with_capacity(holes.len());
        for (seq, time) in holes {
            holes_full.push((seq, tree.leaf(seq - 1)?, time));
        }
        let mut indexes: Vec<u64> = sorted
            .iter()
            .chain(holes_full.iter().map(|h| &h.0))
            .map(|s| s - 1)
            .collect();
        indexes.sort_unstable();
        let proof = merkle::multi_proof(&mut *tree, head.size, &indexes)?
            .map_err(|e| ExportProofError::Proof(e.to_string()))?;
        drop(tree);
        let in_order: Vec<Hash> = seqs
            .iter()
            .map(|s| leaves[sorted.binary_search(s).expect("sorted from seqs")])
            .collect();
        self.finish(head, in_order, &proof, holes_full, seqs, file_sha256)
    }

    fn finish(
        self,
        head: crate::tree::SignedHead,
        leaves_in_order: Vec<Hash>,
        proof: &[Hash],
        holes: Vec<(u64, Hash, DateTime<Utc>)>,
        seqs: &[u64],
        file_sha256: Option<Hash>,
    ) -> Result<ProofBundle, ExportProofError> {
        let manifest = Manifest {
            org: self.org.clone(),
            encoding: self.encoding.clone(),
            filters: self.filters.clone(),
            retention_cutoff: self.cutoff,
            tree_size: head.size,
            root: head.root,
            records: leaves_in_order.len() as u64,
            digest: records_digest(&leaves_in_order),
            holes: holes.len() as u64,
            holes_digest: holes_digest(&holes),
            file_sha256: file_sha256.filter(|_| self.bytes_only),
            created: codestax_common::time::truncate_to_micros(Utc::now()),
        };
        let rows = self.bytes_only.then(|| {
            seqs.iter()
                .zip(&leaves_in_order)
                .map(|(seq, leaf)| RowLeaf {
                    seq: *seq,
                    leaf_hash: b64(leaf),
                })
                .collect()
        });
        Ok(ProofBundle {
            format: FORMAT.into(),
            manifest: self.heads.sign(&manifest.text())?,
            proof: Proof {
                checkpoint: head.note,
                multi_proof: proof.iter().map(b64).collect(),
                holes: holes
                    .into_iter()
                    .map(|(seq, leaf, time)| Hole {
                        seq,
                        leaf_hash: b64(&leaf),
                        time,
                    })
                    .collect(),
                rows,
            },
        })
    }

    /// The `seq`s missing inside the span of `sorted`, each with its time: records older than
    /// the cut-off that the index still holds (read first), then those retention deleted (its
    /// tombstones, written before it deletes, so none falls between the two reads). A missing
    /// `seq` found in neither is left out: the verifier then names it.
    fn holes(&self, sorted: &[u64]) -> Result<Vec<(u64, DateTime<Utc>)>, ExportProofError> {
        let (first, last) = (sorted[0], sorted[sorted.len() - 1]);
        if last - first + 1 == sorted.len() as u64 {
            return Ok(Vec::new());
        }
        let mut times: BTreeMap<u64, DateTime<Utc>> = BTreeMap::new();
        if let Some(cutoff) = self.cutoff {
            let q = SearchQuery {
                until: Some(cutoff),
                ..SearchQuery::default()
            };
            let scan = self.index.scan(&self.org, &q)?;
            scan.for_each(|json| {
                if let Ok(r) = serde_json::from_slice::<SeqTime>(json)
                    && let (Some(seq), Ok(time)) =
                        (r.seq, codestax_common::time::parse_rfc3339(&r.time))
                    && (first..=last).contains(&seq)
                {
                    times.insert(seq, time);
                }
                Ok::<(), IndexError>(())
            })?;
        }
        let checkpoint = self.retention.checkpoints().get(&self.org);
        for t in checkpoint.tombstones {
            if let Some(time) = t.time
                && (first..=last).contains(&t.seq)
            {
                times.entry(t.seq).or_insert(time);
            }
        }
        let mut out = Vec::new();
        let mut expect = first;
        for &s in sorted {
            for missing in expect..s {
                match times.get(&missing) {
                    Some(t) => out.push((missing, *t)),
                    None => tracing::warn!(
                        org = self.org,
                        seq = missing,
                        "an unfiltered export misses a record that retention does not explain"
                    ),
                }
            }
            expect = s + 1;
        }
        Ok(out)
    }
}

/// The two fields of a stored record a hole needs.
#[derive(serde::Deserialize)]
struct SeqTime {
    #[serde(default)]
    seq: Option<u64>,
    time: String,
}

/// Proofs of bytes-only exports (CSV…), kept a while for the client to fetch once the bytes
/// have arrived: their manifest binds the file's SHA-256, so it exists only after the last byte,
/// and HTTP trailers are out of reach of most clients. Bounded: at most [`Sidecars::MAX`]
/// proofs, each for [`Sidecars::TTL`]; the oldest goes first.
#[derive(Debug, Default)]
pub struct Sidecars {
    kept: std::sync::Mutex<std::collections::VecDeque<Sidecar>>,
}

#[derive(Debug)]
struct Sidecar {
    id: String,
    org: String,
    at: std::time::Instant,
    bundle: ProofBundle,
}

impl Sidecars {
    pub const MAX: usize = 64;
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

    /// A new id to announce before the bytes (`x-codestax-export-proof`).
    pub fn new_id() -> String {
        hex::encode(rand::random::<[u8; 16]>())
    }

    /// Keeps `bundle` of `org`'s export `id`.
    pub fn put(&self, id: String, org: String, bundle: ProofBundle) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|s| s.at.elapsed() < Self::TTL);
        while kept.len() >= Self::MAX {
            kept.pop_front();
        }
        kept.push_back(Sidecar {
            id,
            org,
            at: std::time::Instant::now(),
            bundle,
        });
    }

    /// The proof of `org`'s export `id`, if it is made and still kept.
    pub fn get(&self, org: &str, id: &str) -> Option<ProofBundle> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .find(|s| s.id == id && s.org == org && s.at.elapsed() < Self::TTL)
            .map(|s| s.bundle.clone())
    }
}
