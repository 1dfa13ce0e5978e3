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

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use codestax_common::AuditRecord;
use codestax_common::chain::ChainHead;
use codestax_config::ObjectStoreConfig;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
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
    /// Per org, in `seq` order, chunks that together hold its records `1..=head.seq`.
    pub chunks: Vec<Chunk>,
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
        }
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

    /// Stores `records` (one org's, consecutive, sealed) as a chunk of `shard`.
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
        let seqs: Vec<Option<u64>> = records.iter().map(|r| r.seq).collect();
        let expected: Vec<Option<u64>> = (chunk.first_seq..=chunk.last_seq).map(Some).collect();
        if seqs != expected {
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

    proptest::proptest! {
        /// Any bytes under any name: an answer, never a panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode("x/chunks/ab.ndjson.gz", &bytes);
        }
    }
}
