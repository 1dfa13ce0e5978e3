//! Streams on disk, under `data_dir/streams/`: `definitions.json` (the streams made through the
//! API, their secrets sealed by [`SecretKey`]) and one cursor per stream,
//! `cursors/<org>/<id>.json`. Both are atomic state files (write, fsync, rename, fsync the
//! directory): a cursor written is a cursor kept, and the delivery task writes it only after the
//! destination accepted the batch. Streams declared in the TOML are not stored (the TOML is their
//! definition) but their cursors are.

use super::definition::{Secrets, StreamDef};
use super::secret::{SecretError, SecretKey};
use chrono::{DateTime, Utc};
use codestax_storage::{OnDamage, PreparedFile, StateFile, StateFileError, Versioned};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why the streams' state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    State(#[from] StateFileError),
    #[error("cannot create {}: {source}", .path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a stream definition in the metastore cannot be read: {0}")]
    Definition(String),
    #[error("stream {org}/{id}: {source}")]
    Secret {
        org: String,
        id: String,
        source: SecretError,
    },
}

impl StoreError {
    /// The I/O error underneath, if the disk failed (e.g. it is full).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            StoreError::State(e) => e.io_error(),
            StoreError::Dir { source, .. } => Some(source),
            StoreError::Definition(_) | StoreError::Secret { .. } => None,
        }
    }
}

/// Where a stream is: what the destination accepted, and what must be resolved first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    version: u32,
    /// Every record up to this `seq` was accepted by the destination (or filtered out, or
    /// expired before delivery).
    pub delivered_seq: u64,
    /// Start (or replay) from the first record received at or after this time: resolved into
    /// `delivered_seq` by the delivery task before it sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_time: Option<DateTime<Utc>>,
    /// A single node's cursor offered to a cluster (docs/cluster.md, "Moving a single node
    /// into a cluster"): start after this record — the newest the single node had delivered
    /// that an import brings over — wherever the cluster's log sealed it. Resolved into
    /// `delivered_seq` by the delivery task before it sends; until the org's log holds it the
    /// stream waits and says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_id: Option<String>,
    /// A batch from `delivered_seq + 1` to this `seq` was handed to a destination whose
    /// objects are named by their range (S3) and not yet known accepted: the next read stops
    /// here, so a batch sent again after a crash or a lost answer writes the same objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_last: Option<u64>,
    /// Records that retention deleted before they were delivered, since the stream was created.
    #[serde(default)]
    pub expired_records: u64,
    /// Records sent as a stub because they were too long for the destination.
    #[serde(default)]
    pub truncated_records: u64,
    /// When the destination last accepted a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
}

impl Cursor {
    pub fn at(delivered_seq: u64) -> Cursor {
        Cursor {
            version: CURSOR_VERSION,
            delivered_seq,
            ..Cursor::default()
        }
    }

    pub fn from_time(t: DateTime<Utc>) -> Cursor {
        Cursor {
            version: CURSOR_VERSION,
            from_time: Some(t),
            ..Cursor::default()
        }
    }
}

const CURSOR_VERSION: u32 = 1;
const DEFINITIONS_VERSION: u32 = 1;

impl Versioned for Cursor {
    const VERSION: u32 = CURSOR_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Definitions {
    version: u32,
    streams: Vec<Stored>,
}

impl Versioned for Definitions {
    const VERSION: u32 = DEFINITIONS_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    def: StreamDef,
    /// The [`Secrets`] as JSON, sealed for `org/id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// What the first cluster start of this data dir did with its streams (`offered.json`): they
/// are offered to the cluster's metastore once, and never again once this is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedStreams {
    version: u32,
    pub offered_at: DateTime<Utc>,
    /// `org/id` of the streams the cluster took.
    pub offered: Vec<String>,
    /// `org/id` of the streams the cluster already had (the cluster's kept).
    pub kept: Vec<String>,
}

impl OfferedStreams {
    pub fn new(offered: Vec<String>, kept: Vec<String>) -> OfferedStreams {
        OfferedStreams {
            version: OFFERED_VERSION,
            offered_at: Utc::now(),
            offered,
            kept,
        }
    }
}

const OFFERED_VERSION: u32 = 1;

impl Versioned for OfferedStreams {
    const VERSION: u32 = OFFERED_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

/// The streams' directory.
pub struct StreamStore {
    dir: PathBuf,
    key: SecretKey,
}

impl StreamStore {
    pub fn open(data_dir: &Path, key: SecretKey) -> Result<StreamStore, StoreError> {
        let dir = data_dir.join("streams");
        std::fs::create_dir_all(dir.join("cursors")).map_err(|source| StoreError::Dir {
            path: dir.clone(),
            source,
        })?;
        Ok(StreamStore { dir, key })
    }

    /// The key the definitions' secrets are sealed with.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    fn offered_file(&self) -> StateFile {
        StateFile::new(self.dir.join("offered.json"), ".tmp")
    }

    /// Whether (and what) this data dir's streams were offered to a cluster.
    pub fn offered(&self) -> Result<Option<OfferedStreams>, StoreError> {
        Ok(self.offered_file().read_json(OnDamage::Fail)?)
    }

    /// Records durably that this data dir's streams were offered to a cluster.
    pub fn record_offered(&self, offered: &OfferedStreams) -> Result<(), StoreError> {
        self.offered_file().write_json(offered)?;
        Ok(())
    }

    fn definitions_file(&self) -> StateFile {
        StateFile::new(self.dir.join("definitions.json"), ".tmp")
    }

    fn cursor_file(&self, org: &str, id: &str) -> StateFile {
        StateFile::new(
            self.dir
                .join("cursors")
                .join(org)
                .join(format!("{id}.json")),
            ".tmp",
        )
    }

    /// The streams made through the API, with their secrets.
    pub fn load(&self) -> Result<Vec<(StreamDef, Secrets)>, StoreError> {
        let Some(defs) = self
            .definitions_file()
            .read_json::<Definitions>(OnDamage::Fail)?
        else {
            return Ok(Vec::new());
        };
        defs.streams
            .into_iter()
            .map(|s| self.open_stored(s))
            .collect()
    }

    fn open_stored(&self, s: Stored) -> Result<(StreamDef, Secrets), StoreError> {
        let secrets = match &s.sealed {
            None => Secrets::default(),
            Some(sealed) => {
                let err = |source| StoreError::Secret {
                    org: s.def.org.clone(),
                    id: s.def.id.clone(),
                    source,
                };
                let plain = self.key.open(&binding(&s.def), sealed).map_err(err)?;
                serde_json::from_slice(&plain).map_err(|_| err(SecretError::Open))?
            }
        };
        Ok((s.def, secrets))
    }

    fn stored(&self, def: &StreamDef, secrets: &Secrets) -> Stored {
        Stored {
            sealed: (*secrets != Secrets::default()).then(|| {
                self.key.seal(
                    &binding(def),
                    &serde_json::to_vec(secrets).expect("secrets serialise"),
                )
            }),
            def: def.clone(),
        }
    }

    /// A stream as the cluster's metastore keeps it: the definition as JSON, its secrets
    /// sealed as in `definitions.json`.
    pub fn seal_definition(&self, def: &StreamDef, secrets: &Secrets) -> serde_json::Value {
        serde_json::to_value(self.stored(def, secrets)).expect("a stream serialises")
    }

    /// [`StreamStore::seal_definition`]'s stream back, its secrets opened.
    pub fn open_definition(
        &self,
        value: serde_json::Value,
    ) -> Result<(StreamDef, Secrets), StoreError> {
        let stored: Stored =
            serde_json::from_value(value).map_err(|e| StoreError::Definition(e.to_string()))?;
        self.open_stored(stored)
    }

    /// Replaces the stored streams with `streams` (the API-made ones).
    pub fn save<'a>(
        &self,
        streams: impl IntoIterator<Item = (&'a StreamDef, &'a Secrets)>,
    ) -> Result<(), StoreError> {
        self.prepare(streams)?.commit()?;
        Ok(())
    }

    /// Writes and fsyncs `streams` (the API-made ones) as the next `definitions.json`, not in
    /// place yet: a change is recorded between this and [`PreparedFile::commit`], so a full
    /// disk refuses it before its record is written. Dropped, the prepared file is removed.
    pub fn prepare<'a>(
        &self,
        streams: impl IntoIterator<Item = (&'a StreamDef, &'a Secrets)>,
    ) -> Result<PreparedFile, StoreError> {
        let streams = streams
            .into_iter()
            .filter(|(d, _)| !d.declared)
            .map(|(def, secrets)| self.stored(def, secrets))
            .collect();
        Ok(self.definitions_file().prepare_json(&Definitions {
            version: DEFINITIONS_VERSION,
            streams,
        })?)
    }

    pub fn read_cursor(&self, org: &str, id: &str) -> Result<Option<Cursor>, StoreError> {
        Ok(self.cursor_file(org, id).read_json(OnDamage::Fail)?)
    }

    /// Writes the cursor durably (returns once it is on disk).
    pub fn write_cursor(&self, org: &str, id: &str, cursor: &Cursor) -> Result<(), StoreError> {
        let file = self.cursor_file(org, id);
        if let Some(dir) = file.path().parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut c = cursor.clone();
        c.version = CURSOR_VERSION;
        file.write_json(&c)?;
        Ok(())
    }

    pub fn remove_cursor(&self, org: &str, id: &str) {
        let file = self.cursor_file(org, id);
        let _ = std::fs::remove_file(file.path());
        let _ = std::fs::remove_file(file.temp_path());
    }
}

fn binding(def: &StreamDef) -> String {
    format!("{}/{}", def.org, def.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::definition::{Destination, Filters, Format, Start};

    #[test]
    fn definitions_keep_secrets_sealed_and_cursors_read_back() {
        let data = tempfile::tempdir().unwrap();
        let keydir = tempfile::tempdir().unwrap();
        let key = SecretKey::load_or_generate(&keydir.path().join("k")).unwrap();
        let store = StreamStore::open(data.path(), key.clone()).unwrap();
        let def = StreamDef {
            id: "s1".into(),
            org: "acme".into(),
            name: "siem".into(),
            format: Format::Native,
            start: Start::Now,
            filters: Filters::default(),
            destination: Destination::Https {
                url: "https://siem.example.com/".into(),
                ca_pem: None,
            },
            declared: false,
            paused: false,
            created_at: Utc::now(),
        };
        let mut secrets = Secrets {
            secret: Some("very-secret-value-123".into()),
            ..Secrets::default()
        };
        secrets
            .headers
            .insert("Authorization".into(), "Bearer tok-xyz".into());
        store.save([(&def, &secrets)]).unwrap();
        let raw = std::fs::read_to_string(data.path().join("streams/definitions.json")).unwrap();
        assert!(
            !raw.contains("very-secret") && !raw.contains("tok-xyz"),
            "{raw}"
        );
        let loaded = StreamStore::open(data.path(), key).unwrap().load().unwrap();
        assert_eq!(loaded, vec![(def.clone(), secrets.clone())]);

        assert_eq!(store.read_cursor("acme", "s1").unwrap(), None);
        let c = Cursor::at(42);
        store.write_cursor("acme", "s1", &c).unwrap();
        assert_eq!(store.read_cursor("acme", "s1").unwrap(), Some(c));

        // As the cluster's metastore keeps it: sealed, and back equal (the owner compares
        // what it runs with what it reads, every second, and restarts only what changed).
        let value = store.seal_definition(&def, &secrets);
        assert!(
            !value.to_string().contains("very-secret") && !value.to_string().contains("tok-xyz"),
            "{value}"
        );
        assert_eq!(
            store.open_definition(value).unwrap(),
            (def.clone(), secrets.clone())
        );

        // Another key cannot open them: refused, naming the stream.
        let other = SecretKey::load_or_generate(&keydir.path().join("k2")).unwrap();
        let e = StreamStore::open(data.path(), other)
            .unwrap()
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("acme/s1"), "{e}");
    }
}
