//! Shard snapshots in the object store (docs/cluster.md, phase 3): what an owner uploads so the
//! next owner of a shard continues its orgs' chains instead of starting them again.
//!
//! Layout under `[cluster.object_store] url`'s prefix, per shard `s`:
//!
//! - `shards/<s>/chunks/<sha256>.ndjson.gz`: sealed records of one org, consecutive `seq`s in
//!   `seq` order, one canonical JSON a line, gzip. Named by the SHA-256 of the uncompressed
//!   NDJSON, so a chunk is written once and never changes; a snapshot uploads only the chunks
//!   of records stored since the one before (incremental), and a reader checks the name.
//! - `shards/<s>/manifests/<epoch>-<stream_seq>.json` (both zero-padded to 20 digits): the
//!   [`Manifest`] — the stream sequence the snapshot holds everything through, each org's chain
//!   head and every chunk, the previous snapshots' included.
//!
//! The metastore's `snapshots` row names the manifest; it is inserted only after every object
//! it names is stored, and only under the owner's current epoch ([`super::Metastore::publish_snapshot`]).
//!
//! Upkeep (docs/cluster.md, "Snapshot upkeep"): an org's small chunks are merged once it has
//! [`COMPACT_AFTER`] of them ([`SnapshotStore::compact`]), and the owner deletes what no recent
//! manifest names ([`SnapshotStore::collect`]). The rule that keeps a restore safe: the newest
//! [`KEEP_MANIFESTS`] manifests, the one the metastore's latest row names, and every chunk they
//! name are never deleted; anything else only once it is older than the grace the caller gives
//! (longer than any restore and any snapshot in progress take).
//!
//! Retention (docs/cluster.md, "Retention and snapshots"): the manifest carries each org's
//! retention checkpoint (the last deleted `seq` and hash, and tombstones above it), what proves
//! that a missing record was deleted by retention. Chunks wholly at or below an org's checkpoint
//! leave the manifest; a chunk may lack tombstoned seqs; a restore starts each org's chain from
//! its checkpoint ([`retained_runs`]).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use codestax_common::AuditRecord;
use codestax_common::chain::{ChainHead, RetentionCheckpoint};
use codestax_config::ObjectStoreConfig;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures_util::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::SnapshotError;
use super::metastore::{Lease, MetastoreLink, SnapshotRecord};
use crate::stream::allow::Allowlist;

/// The manifest format this collector writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// Most records in one chunk (bounds an owner's memory while it snapshots or restores).
pub const CHUNK_RECORDS: usize = 10_000;
/// Manifests of a shard the upkeep keeps, newest first (the latest published one always).
pub(crate) const KEEP_MANIFESTS: usize = 3;
/// A chunk of fewer records than this is small ...
pub const SMALL_CHUNK_RECORDS: u64 = (CHUNK_RECORDS / 4) as u64;
/// ... and an org's small chunks are merged once it has this many.
pub(crate) const COMPACT_AFTER: usize = 16;
/// How long one object store request may take, retries included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a shard's snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub shard: u32,
    /// The lease epoch it was taken under.
    pub epoch: i64,
    /// Every message of the shard up to this stream sequence is in the snapshot (0: none).
    pub stream_seq: u64,
    /// Per org, its last record in the snapshot.
    pub chain_heads: BTreeMap<String, ChainHead>,
    /// Per org, in `seq` order, chunks that together hold its records after its retention
    /// checkpoint up to `head.seq`, but those its tombstones name.
    pub chunks: Vec<Chunk>,
    /// Per org whose records retention deleted: what it deleted ([`RetentionCheckpoint`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retention: BTreeMap<String, RetentionCheckpoint>,
}

/// One chunk object: records `first_seq..=last_seq` of `org`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub org: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The object's path, prefix included.
    pub key: String,
}

impl Manifest {
    /// A shard nobody has snapshotted: nothing, from the stream's start.
    pub fn empty(shard: u32, epoch: i64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            shard,
            epoch,
            stream_seq: 0,
            chain_heads: BTreeMap::new(),
            chunks: Vec::new(),
            retention: BTreeMap::new(),
        }
    }

    /// Takes in `org`'s retention checkpoint `retained`: chunks wholly at or below it leave the
    /// manifest (their records are deleted), and the org's head moves past what was deleted
    /// right after it ([`Manifest::settle`]).
    pub fn retain(&mut self, org: &str, retained: RetentionCheckpoint) {
        let below = retained.checkpoint.seq;
        self.chunks.retain(|c| c.org != org || c.last_seq > below);
        self.retention.insert(org.to_string(), retained);
        self.settle(org);
    }

    /// Moves `org`'s head over deleted records: to its retention checkpoint if that is further,
    /// then over the tombstones right after it. So the next owner continues the chain after
    /// records the snapshot no longer holds.
    pub fn settle(&mut self, org: &str) {
        let Some(retained) = self.retention.get(org) else {
            return;
        };
        let mut head = match self.chain_heads.get(org) {
            Some(h) if h.seq >= retained.checkpoint.seq => h.clone(),
            _ => retained.checkpoint.clone(),
        };
        for t in &retained.tombstones {
            if t.seq == head.seq + 1 {
                head = t.head();
            }
        }
        if head.seq > 0 {
            self.chain_heads.insert(org.to_string(), head);
        }
    }

    /// The `seq`s retention deleted above `org`'s checkpoint.
    pub fn tombstoned(&self, org: &str) -> std::collections::BTreeSet<u64> {
        self.retention
            .get(org)
            .map(|r| r.tombstones.iter().map(|t| t.seq).collect())
            .unwrap_or_default()
    }

    /// The chain heads as the metastore row keeps them.
    pub fn heads_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.chain_heads).unwrap_or_default()
    }
}

/// The object store holding the snapshots.
#[derive(Clone)]
pub struct SnapshotStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl SnapshotStore {
    /// The S3 bucket of `config` (credentials from the standard AWS environment variables).
    pub fn new(config: &ObjectStoreConfig) -> Result<SnapshotStore, SnapshotError> {
        SnapshotStore::build(config, AmazonS3Builder::from_env())
    }

    /// [`SnapshotStore::new`] with the credentials given instead (tools and tests).
    pub fn with_credentials(
        config: &ObjectStoreConfig,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<SnapshotStore, SnapshotError> {
        let builder = AmazonS3Builder::new()
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key);
        SnapshotStore::build(config, builder)
    }

    fn build(
        config: &ObjectStoreConfig,
        builder: AmazonS3Builder,
    ) -> Result<SnapshotStore, SnapshotError> {
        let rest = config.url.strip_prefix("s3://").unwrap_or(&config.url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let https = config
            .endpoint
            .as_deref()
            .is_none_or(|e| e.starts_with("https://"));
        let tls = if https {
            Some(crate::stream::tls::client_config(None).map_err(SnapshotError::Settings)?)
        } else {
            None
        };
        // The operator configured this endpoint: any address is allowed, loopback included.
        let allow = Allowlist::new(&["0.0.0.0/0".into(), "::/0".into()])
            .map_err(SnapshotError::Settings)?;
        let mut builder = builder
            .with_bucket_name(bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: REQUEST_TIMEOUT,
                ..RetryConfig::default()
            })
            .with_http_connector(crate::stream::destination::http_connector(allow, tls));
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| SnapshotError::Settings(e.to_string()))?;
        Ok(SnapshotStore {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    fn shard_dir(&self, shard: u32) -> String {
        if self.prefix.is_empty() {
            format!("shards/{shard}")
        } else {
            format!("{}/shards/{shard}", self.prefix)
        }
    }

    /// Stores `records` (one org's sealed records after `manifest`'s head for it, consecutive,
    /// at most [`CHUNK_RECORDS`]) as a chunk of the manifest's shard, and adds it to `manifest`.
    pub async fn add_chunk(
        &self,
        manifest: &mut Manifest,
        records: &[AuditRecord],
    ) -> Result<(), SnapshotError> {
        let chunk = self.put_chunk(manifest.shard, records).await?;
        if let Some(head) = records.last().and_then(ChainHead::of) {
            manifest.chain_heads.insert(chunk.org.clone(), head);
        }
        manifest.chunks.push(chunk);
        Ok(())
    }

    /// Publishes `manifest` (its chunks stored): the manifest object, then its row in the
    /// metastore under `lease` — refused as fenced unless `lease` is still the shard's, under
    /// its epoch. Returns the manifest's location.
    pub async fn publish(
        &self,
        metastore: &MetastoreLink,
        lease: &Lease,
        manifest: &Manifest,
    ) -> Result<String, SnapshotError> {
        let location = self.put_manifest(manifest).await?;
        let row = SnapshotRecord {
            stream_seq: manifest.stream_seq,
            location: location.clone(),
            chain_heads: manifest.heads_json(),
        };
        metastore.publish(lease, &row).await?;
        Ok(location)
    }

    /// The manifest of `shard`'s latest published snapshot, checked against its row; `None`
    /// if the shard has none.
    pub async fn latest(
        &self,
        metastore: &MetastoreLink,
        shard: u32,
    ) -> Result<Option<Manifest>, SnapshotError> {
        let Some((_, stream_seq, location)) = metastore.latest_snapshot(shard).await? else {
            return Ok(None);
        };
        let manifest = self.get_manifest(shard, &location).await?;
        if manifest.stream_seq != stream_seq {
            return Err(SnapshotError::Damaged {
                key: location,
                reason: format!(
                    "it holds stream sequence {}, its row says {stream_seq}",
                    manifest.stream_seq
                ),
            });
        }
        Ok(Some(manifest))
    }

    /// Merges each org's adjacent small chunks in `manifest` (once it has `COMPACT_AFTER` of
    /// them) into chunks of up to [`CHUNK_RECORDS`], leaving out the records retention deleted.
    /// Returns how many chunks were replaced. The old chunks stay until
    /// [`SnapshotStore::collect`] finds no kept manifest naming them.
    pub async fn compact(&self, manifest: &mut Manifest) -> Result<usize, SnapshotError> {
        let small = |c: &Chunk| c.last_seq - c.first_seq + 1 < SMALL_CHUNK_RECORDS;
        let mut per_org: BTreeMap<&str, Vec<&Chunk>> = BTreeMap::new();
        for c in &manifest.chunks {
            per_org.entry(&c.org).or_default().push(c);
        }
        let mut chunks = Vec::with_capacity(manifest.chunks.len());
        let mut replaced = 0;
        for (org, own) in per_org {
            if own.iter().filter(|c| small(c)).count() < COMPACT_AFTER {
                chunks.extend(own.into_iter().cloned());
                continue;
            }
            let retained = manifest.retention.get(org);
            // Runs of adjacent small chunks, each run at most CHUNK_RECORDS seqs.
            let mut run: Vec<&Chunk> = Vec::new();
            for c in own {
                let seqs = run.first().map_or(0, |f| c.last_seq - f.first_seq + 1);
                if !small(c) || seqs > CHUNK_RECORDS as u64 {
                    replaced += self
                        .merge(
                            manifest.shard,
                            retained,
                            std::mem::take(&mut run),
                            &mut chunks,
                        )
                        .await?;
                }
                if small(c) {
                    run.push(c);
                } else {
                    chunks.push(c.clone());
                }
            }
            replaced += self
                .merge(manifest.shard, retained, run, &mut chunks)
                .await?;
        }
        manifest.chunks = chunks;
        Ok(replaced)
    }

    /// `run` (adjacent chunks of one org) as one chunk in `chunks`, without the records
    /// `retained` deleted; a run of one stays as it is. Returns how many chunks it replaced.
    async fn merge(
        &self,
        shard: u32,
        retained: Option<&RetentionCheckpoint>,
        run: Vec<&Chunk>,
        chunks: &mut Vec<Chunk>,
    ) -> Result<usize, SnapshotError> {
        if run.len() < 2 {
            chunks.extend(run.into_iter().cloned());
            return Ok(0);
        }
        let mut records = Vec::new();
        for c in &run {
            records.extend(self.get_chunk(c).await?);
        }
        records.retain(|r| {
            let seq = r.seq.unwrap_or(0);
            retained.is_none_or(|k| {
                seq > k.checkpoint.seq && !k.tombstones.iter().any(|t| t.seq == seq)
            })
        });
        if !records.is_empty() {
            chunks.push(self.put_chunk(shard, &records).await?);
        }
        Ok(run.len())
    }

    /// Deletes `shard`'s objects no restore can need: manifests but the newest
    /// `KEEP_MANIFESTS` and `latest` (the one the metastore's latest row names), and chunks
    /// none of those names — each only once written more than `grace` ago (a snapshot in
    /// progress, or a restore reading an older manifest, is younger). Nothing is deleted if a
    /// kept manifest cannot be read.
    pub async fn collect(
        &self,
        shard: u32,
        latest: &str,
        grace: Duration,
    ) -> Result<Collected, SnapshotError> {
        let dir = self.shard_dir(shard);
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut manifests = self.list(&format!("{dir}/manifests")).await?;
        manifests.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        let newest = manifests.len().saturating_sub(KEEP_MANIFESTS);
        let mut kept: Vec<String> = manifests[newest..]
            .iter()
            .map(|m| m.location.to_string())
            .collect();
        if !kept.iter().any(|k| k == latest) {
            kept.push(latest.to_string());
        }
        let mut named = std::collections::BTreeSet::new();
        for key in &kept {
            let m = self.get_manifest(shard, key).await?;
            named.extend(m.chunks.into_iter().map(|c| c.key));
        }
        let mut collected = Collected::default();
        for m in &manifests[..newest] {
            let key = m.location.to_string();
            if key != latest && m.last_modified < cutoff {
                self.delete(&key).await?;
                collected.manifests += 1;
            }
        }
        for c in self.list(&format!("{dir}/chunks")).await? {
            let key = c.location.to_string();
            if !named.contains(&key) && c.last_modified < cutoff {
                self.delete(&key).await?;
                collected.chunks += 1;
            }
        }
        Ok(collected)
    }

    /// Stores `records` (one org's, ascending, sealed) as a chunk of `shard`.
    async fn put_chunk(&self, shard: u32, records: &[AuditRecord]) -> Result<Chunk, SnapshotError> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Err(SnapshotError::Settings("an empty chunk".into()));
        };
        let (digest, body) = encode(records);
        let key = format!("{}/chunks/{digest}.ndjson.gz", self.shard_dir(shard));
        self.put(&key, body).await?;
        Ok(Chunk {
            org: first.org_id.clone(),
            first_seq: first.seq.unwrap_or(0),
            last_seq: last.seq.unwrap_or(0),
            key,
        })
    }

    /// The records of `chunk`, checked against its name and its range.
    pub async fn get_chunk(&self, chunk: &Chunk) -> Result<Vec<AuditRecord>, SnapshotError> {
        let body = self.get(&chunk.key).await?;
        let records = decode(&chunk.key, &body)?;
        let damaged = |reason: String| SnapshotError::Damaged {
            key: chunk.key.clone(),
            reason,
        };
        // Ascending from first_seq to last_seq; seqs retention deleted may be missing (what
        // covers a gap is checked as the chain is restored).
        let seqs: Vec<u64> = records.iter().map(|r| r.seq.unwrap_or(0)).collect();
        let ascending = seqs.windows(2).all(|w| w[0] < w[1]);
        if !ascending
            || seqs.first() != Some(&chunk.first_seq)
            || seqs.last() != Some(&chunk.last_seq)
        {
            return Err(damaged(format!(
                "it does not hold seq {} to {} in order",
                chunk.first_seq, chunk.last_seq
            )));
        }
        if let Some(r) = records.iter().find(|r| r.org_id != chunk.org) {
            return Err(damaged(format!("a record of org {:?}", r.org_id)));
        }
        Ok(records)
    }

    /// Stores `manifest`; returns its path (the snapshot row's `location`).
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<String, SnapshotError> {
        let key = format!(
            "{}/manifests/{:020}-{:020}.json",
            self.shard_dir(manifest.shard),
            manifest.epoch,
            manifest.stream_seq
        );
        let body = serde_json::to_vec(manifest).unwrap_or_default();
        self.put(&key, body).await?;
        Ok(key)
    }

    /// The manifest at `location`, of `shard`.
    pub async fn get_manifest(
        &self,
        shard: u32,
        location: &str,
    ) -> Result<Manifest, SnapshotError> {
        let body = self.get(location).await?;
        let damaged = |reason: String| SnapshotError::Damaged {
            key: location.to_string(),
            reason,
        };
        let manifest: Manifest =
            serde_json::from_slice(&body).map_err(|e| damaged(e.to_string()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(damaged(format!(
                "format {} (this collector reads {MANIFEST_FORMAT})",
                manifest.format
            )));
        }
        if manifest.shard != shard {
            return Err(damaged(format!("it is shard {}'s", manifest.shard)));
        }
        Ok(manifest)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<object_store::ObjectMeta>, SnapshotError> {
        let listed = self.store.list(Some(&Path::from(prefix))).try_collect();
        match tokio::time::timeout(REQUEST_TIMEOUT, listed).await {
            Ok(Ok(metas)) => Ok(metas),
            Ok(Err(e)) => Err(store_error("LIST", prefix, e.to_string())),
            Err(_) => Err(store_error("LIST", prefix, "no answer in time".into())),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), SnapshotError> {
        let path = Path::from(key);
        let delete = self.store.delete(&path);
        match tokio::time::timeout(REQUEST_TIMEOUT, delete).await {
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(store_error("DELETE", key, e.to_string())),
            Err(_) => Err(store_error("DELETE", key, "no answer in time".into())),
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), SnapshotError> {
        let path = Path::from(key);
        let put = self.store.put(&path, PutPayload::from(body));
        match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(store_error("PUT", key, e.to_string())),
            Err(_) => Err(store_error("PUT", key, "no answer in time".into())),
        }
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, SnapshotError> {
        let get = async {
            let got = self.store.get(&Path::from(key)).await?;
            got.bytes().await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, get).await {
            Ok(Ok(bytes)) => Ok(bytes.to_vec()),
            Ok(Err(e)) => Err(store_error("GET", key, e.to_string())),
            Err(_) => Err(store_error("GET", key, "no answer in time".into())),
        }
    }
}

/// Records of one org with consecutive `seq`s, and the deleted record's head they continue
/// (`None`: whatever the store's chain holds before them).
pub type Run = (Option<ChainHead>, Vec<AuditRecord>);

/// What of a chunk's `records` (one org's, ascending) to restore, given the org's retention
/// checkpoint: the records retention deleted are left out, and the rest is cut into runs of
/// consecutive `seq`s. Each run comes with the head it continues when that is a deleted record
/// (the checkpoint or a tombstone: the store must move there first); a gap nothing deleted
/// explains is an error naming the seq.
pub fn retained_runs(
    records: Vec<AuditRecord>,
    retained: Option<&RetentionCheckpoint>,
) -> Result<Vec<Run>, u64> {
    let default = RetentionCheckpoint::default();
    let retained = retained.unwrap_or(&default);
    let deleted: BTreeMap<u64, ChainHead> = std::iter::once(retained.checkpoint.clone())
        .chain(retained.tombstones.iter().map(|t| t.head()))
        .filter(|h| h.seq > 0)
        .map(|h| (h.seq, h))
        .collect();
    let mut runs: Vec<Run> = Vec::new();
    let mut last: Option<u64> = None;
    for record in records {
        let seq = record.seq.unwrap_or(0);
        if seq <= retained.checkpoint.seq || deleted.contains_key(&seq) {
            continue;
        }
        if last.is_some_and(|l| l + 1 == seq) {
            if let Some((_, run)) = runs.last_mut() {
                run.push(record);
            }
        } else {
            // A run's start: it follows a deleted record, or the previous run (or the genesis).
            let after = seq - 1;
            let from = deleted.get(&after).cloned();
            // Inside the chunk, every seq skipped was deleted; its first record follows the
            // previous chunk or a deleted record (the store checks the chain either way).
            let covered = last.is_none_or(|l| (l + 1..=after).all(|s| deleted.contains_key(&s)));
            if !covered {
                return Err(seq);
            }
            runs.push((from, vec![record]));
        }
        last = Some(seq);
    }
    Ok(runs)
}

/// What [`SnapshotStore::collect`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    pub manifests: usize,
    pub chunks: usize,
}

fn store_error(what: &'static str, key: &str, reason: String) -> SnapshotError {
    SnapshotError::Object {
        what,
        key: key.to_string(),
        reason,
    }
}

/// A chunk's name (SHA-256 of its NDJSON, hex) and its gzip body.
fn encode(records: &[AuditRecord]) -> (String, Vec<u8>) {
    let mut ndjson = String::new();
    for r in records {
        ndjson.push_str(&r.canonical_json());
        ndjson.push('\n');
    }
    let digest = hex::encode(Sha256::digest(ndjson.as_bytes()));
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(ndjson.as_bytes());
    (digest, gz.finish().unwrap_or_default())
}

/// A chunk's records, its body checked against the SHA-256 its `key` names.
fn decode(key: &str, body: &[u8]) -> Result<Vec<AuditRecord>, SnapshotError> {
    let damaged = |reason: String| SnapshotError::Damaged {
        key: key.to_string(),
        reason,
    };
    let mut ndjson = String::new();
    GzDecoder::new(body)
        .read_to_string(&mut ndjson)
        .map_err(|e| damaged(format!("not gzip of text: {e}")))?;
    let digest = hex::encode(Sha256::digest(ndjson.as_bytes()));
    let name = key.rsplit('/').next().unwrap_or_default();
    if name.strip_suffix(".ndjson.gz") != Some(digest.as_str()) {
        return Err(damaged(format!("its content hashes to {digest}")));
    }
    ndjson
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| damaged(format!("line {}: {e}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(org: &str, n: u64) -> Vec<AuditRecord> {
        let mut prev = ChainHead::genesis();
        (1..=n)
            .map(|seq| {
                let mut r: AuditRecord = serde_json::from_value(serde_json::json!({
                    "org_id": org, "id": format!("{org}-{seq}"), "action": "auth.login",
                    "actor": {"id": "ada"}, "time": "2026-12-04T12:00:00Z",
                    "received_at": "2026-12-04T12:00:01Z"
                }))
                .unwrap();
                let seal = codestax_common::chain::Unsealed::new(&r).seal(seq, &prev.hash);
                r.seq = Some(seq);
                r.prev_hash = Some(prev.hash.clone());
                r.hash = Some(seal.hash.clone());
                prev = ChainHead {
                    seq,
                    hash: seal.hash,
                };
                r
            })
            .collect()
    }

    #[test]
    fn a_chunk_round_trips_and_is_named_by_its_content() {
        let records = sealed("acme", 3);
        let (digest, body) = encode(&records);
        let key = format!("p/shards/1/chunks/{digest}.ndjson.gz");
        assert_eq!(decode(&key, &body).unwrap(), records);
        assert_eq!(
            encode(&records).0,
            digest,
            "the same records, the same name"
        );
        let other = format!("p/shards/1/chunks/{}.ndjson.gz", "0".repeat(64));
        assert!(matches!(
            decode(&other, &body),
            Err(SnapshotError::Damaged { .. })
        ));
        assert!(matches!(
            decode(&key, b"not gzip"),
            Err(SnapshotError::Damaged { .. })
        ));
    }

    fn tomb(r: &AuditRecord) -> codestax_common::chain::Tombstone {
        codestax_common::chain::Tombstone {
            seq: r.seq.unwrap(),
            hash: r.hash.clone().unwrap(),
            time: None,
        }
    }

    #[test]
    fn a_restore_starts_from_the_checkpoint_and_jumps_only_tombstones() {
        let records = sealed("acme", 10);
        // Deleted: 1-3 (the checkpoint), 6 and 9-10 (tombstones).
        let retained = RetentionCheckpoint {
            checkpoint: ChainHead::of(&records[2]).unwrap(),
            tombstones: vec![tomb(&records[5]), tomb(&records[8]), tomb(&records[9])],
        };
        // A chunk as written before the deletions, and as written after (seq 6 missing).
        let before = records.clone();
        let after: Vec<AuditRecord> = records
            .iter()
            .filter(|r| ![6, 9, 10].contains(&r.seq.unwrap()))
            .cloned()
            .collect();
        for chunk in [before, after] {
            let runs = retained_runs(chunk, Some(&retained)).unwrap();
            let shape: Vec<(Option<u64>, Vec<u64>)> = runs
                .iter()
                .map(|(from, run)| {
                    (
                        from.as_ref().map(|h| h.seq),
                        run.iter().map(|r| r.seq.unwrap()).collect(),
                    )
                })
                .collect();
            assert_eq!(shape, [(Some(3), vec![4, 5]), (Some(6), vec![7, 8])]);
            // Each run continues the head it comes with: the chain verifies from the checkpoint.
            let mut verifier = codestax_common::chain::ChainVerifier::after(retained.clone());
            for (_, run) in &runs {
                for r in run {
                    verifier.push(r).unwrap();
                }
            }
            assert_eq!(verifier.finish().last_seq, Some(10));
        }
        // A gap no tombstone covers is refused, naming the seq after it.
        let holed: Vec<AuditRecord> = records
            .iter()
            .filter(|r| r.seq != Some(7))
            .cloned()
            .collect();
        assert_eq!(retained_runs(holed, Some(&retained)).unwrap_err(), 8);
        // Nothing deleted: one run, continuing whatever came before.
        let runs = retained_runs(records[4..].to_vec(), None).unwrap();
        assert_eq!(runs.len(), 1);
        assert!(runs[0].0.is_none());
    }

    #[test]
    fn retention_takes_deleted_chunks_out_of_the_manifest_and_moves_the_head_past_them() {
        let records = sealed("acme", 6);
        let mut m = Manifest::empty(1, 1);
        for (first, last) in [(1, 2), (3, 4), (5, 6)] {
            m.chunks.push(Chunk {
                org: "acme".into(),
                first_seq: first,
                last_seq: last,
                key: format!("k{first}"),
            });
        }
        m.chunks.push(Chunk {
            org: "globex".into(),
            first_seq: 1,
            last_seq: 1,
            key: "g".into(),
        });
        m.chain_heads
            .insert("acme".into(), ChainHead::of(&records[4]).unwrap());
        m.retain(
            "acme",
            RetentionCheckpoint {
                checkpoint: ChainHead::of(&records[2]).unwrap(),
                tombstones: vec![tomb(&records[5])],
            },
        );
        let keys: Vec<&str> = m.chunks.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["k3", "k5", "g"], "only chunks wholly deleted go");
        assert_eq!(m.chain_heads["acme"].seq, 6, "past the deleted tail");
        assert_eq!(m.tombstoned("acme"), [6].into());
        // Everything deleted: the head is the checkpoint's.
        m.chain_heads.clear();
        m.retain(
            "acme",
            RetentionCheckpoint {
                checkpoint: ChainHead::of(&records[5]).unwrap(),
                tombstones: vec![],
            },
        );
        assert_eq!(m.chain_heads["acme"], ChainHead::of(&records[5]).unwrap());
        assert_eq!(m.chunks.len(), 1);
        // The manifest carries it; one written before it was kept still reads.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
        let mut old = serde_json::to_value(Manifest::empty(1, 1)).unwrap();
        old.as_object_mut().unwrap().remove("retention");
        assert!(
            serde_json::from_value::<Manifest>(old)
                .unwrap()
                .retention
                .is_empty()
        );
    }

    fn in_memory() -> SnapshotStore {
        SnapshotStore {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: "p".into(),
        }
    }

    #[tokio::test]
    async fn compaction_merges_an_orgs_small_chunks_without_what_retention_deleted() {
        let store = in_memory();
        let records = sealed("acme", 20);
        let mut m = Manifest::empty(1, 1);
        for r in &records {
            store
                .add_chunk(&mut m, std::slice::from_ref(r))
                .await
                .unwrap();
        }
        store.add_chunk(&mut m, &sealed("globex", 2)).await.unwrap();
        m.retain(
            "acme",
            RetentionCheckpoint {
                checkpoint: ChainHead::of(&records[2]).unwrap(),
                tombstones: vec![tomb(&records[9])],
            },
        );
        assert_eq!(m.chunks.len(), 18);
        // 17 small chunks of acme: one, without seq 10; globex's one chunk stays.
        assert_eq!(store.compact(&mut m).await.unwrap(), 17);
        assert_eq!(m.chunks.len(), 2);
        let acme = m.chunks.iter().find(|c| c.org == "acme").unwrap();
        let got = store.get_chunk(acme).await.unwrap();
        let seqs: Vec<u64> = got.iter().map(|r| r.seq.unwrap()).collect();
        let expected: Vec<u64> = (4..=20).filter(|&s| s != 10).collect();
        assert_eq!(seqs, expected);
        // Below the threshold nothing changes.
        assert_eq!(store.compact(&mut m).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn collection_keeps_the_newest_manifests_the_latest_row_and_their_chunks() {
        let store = in_memory();
        let shared = sealed("acme", 1);
        let mut locations = Vec::new();
        for i in 1..=5u64 {
            let mut m = Manifest::empty(1, 1);
            m.stream_seq = i;
            store.add_chunk(&mut m, &shared).await.unwrap();
            store
                .add_chunk(&mut m, &sealed(&format!("org{i}"), 1))
                .await
                .unwrap();
            locations.push((store.put_manifest(&m).await.unwrap(), m));
        }
        // Within the grace nothing goes.
        let none = store
            .collect(1, &locations[4].0, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(none, Collected::default());
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The metastore's row names manifest 1 (say, a newer one was never published).
        let got = store
            .collect(1, &locations[0].0, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            got,
            Collected {
                manifests: 1,
                chunks: 1
            }
        );
        for (i, (location, m)) in locations.iter().enumerate() {
            let kept = i != 1;
            assert_eq!(
                store.get_manifest(1, location).await.is_ok(),
                kept,
                "manifest {i}"
            );
            for c in &m.chunks {
                assert_eq!(
                    store.get_chunk(c).await.is_ok(),
                    kept || c.org == "acme",
                    "{c:?}"
                );
            }
        }
    }

    proptest::proptest! {
        /// Any bytes under any name: an answer, never a panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode("x/chunks/ab.ndjson.gz", &bytes);
        }
    }
}
