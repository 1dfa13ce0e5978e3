//! What retention keeps of the records it deletes, so that each org's hash chain still verifies
//! and continues after them: `<data_dir>/chain-checkpoints.json`, one
//! [`RetentionCheckpoint`] per org (the `seq` and `hash` of the last record of the deleted
//! prefix, and tombstones for deleted records above it).
//!
//! The janitor saves it **before** deleting ([`ChainCheckpoints::save`]); the verify endpoint
//! starts each org's check from it; at start the store continues each org's chain from the
//! higher of the index's head and the file's ([`ChainCheckpoints::merge_heads`]), so an org whose
//! every record was deleted does not start again at `seq` 1.
//!
//! Versioned; written to a temporary file, fsynced, renamed over the old one, directory
//! fsynced. On start a complete temporary file wins (a crash came between its fsync and the
//! rename).

use super::error::RetentionError;
use super::overrides::{load_preferring_tmp, save_atomically};
use codestax_common::chain::{ChainHead, RetentionCheckpoint};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

pub(crate) const FILE: &str = "chain-checkpoints.json";
const TMP: &str = "chain-checkpoints.json.tmp";
const VERSION: u32 = 1;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointFile {
    version: u32,
    /// Per org id.
    orgs: BTreeMap<String, RetentionCheckpoint>,
}

impl codestax_storage::Versioned for CheckpointFile {
    const VERSION: u32 = VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

/// The saved checkpoints, and the file they live in.
#[derive(Debug)]
pub struct ChainCheckpoints {
    dir: PathBuf,
    orgs: RwLock<BTreeMap<String, RetentionCheckpoint>>,
    /// Serialises saves.
    saving: Mutex<()>,
}

impl ChainCheckpoints {
    /// Loads the checkpoints saved in `dir` (the data dir); none if there is no file.
    pub fn open(dir: &Path) -> Result<ChainCheckpoints, RetentionError> {
        let file: Option<CheckpointFile> = load_preferring_tmp(dir, TMP, FILE)?;
        let orgs = file.map(|f| f.orgs).unwrap_or_default();
        Ok(ChainCheckpoints {
            dir: dir.to_path_buf(),
            orgs: RwLock::new(orgs),
            saving: Mutex::new(()),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// `org`'s checkpoint (the genesis, with no tombstones, if retention never deleted any of
    /// its records).
    pub fn get(&self, org: &str) -> RetentionCheckpoint {
        self.read().get(org).cloned().unwrap_or_default()
    }

    /// Every org's.
    pub fn all(&self) -> BTreeMap<String, RetentionCheckpoint> {
        self.read().clone()
    }

    /// Replaces the checkpoints of the orgs in `changed` and saves the file (durably) before
    /// returning; nothing changes in memory if the save fails.
    pub fn save(
        &self,
        changed: BTreeMap<String, RetentionCheckpoint>,
    ) -> Result<(), RetentionError> {
        if changed.is_empty() {
            return Ok(());
        }
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let mut orgs = self.all();
        orgs.extend(changed);
        let file = CheckpointFile {
            version: VERSION,
            orgs,
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("checkpoints always serialise");
        save_atomically(&self.dir, TMP, FILE, &bytes)?;
        *self.orgs.write().unwrap_or_else(|e| e.into_inner()) = file.orgs;
        Ok(())
    }

    /// Takes in checkpoints another node saved (a shard's snapshot taken over), durably: per
    /// org, the further checkpoint of the two and the tombstones of both above it. Returns the
    /// orgs whose checkpoint changed.
    pub fn adopt(
        &self,
        theirs: &BTreeMap<String, RetentionCheckpoint>,
    ) -> Result<Vec<String>, RetentionError> {
        let mut changed = BTreeMap::new();
        for (org, other) in theirs {
            let ours = self.get(org);
            let merged = merged(&ours, other);
            if merged != ours {
                changed.insert(org.clone(), merged);
            }
        }
        let orgs = changed.keys().cloned().collect();
        self.save(changed)?;
        Ok(orgs)
    }

    /// The chain heads the store continues from: per org, the higher (by `seq`) of the index's
    /// (its record with the highest `seq`) and the highest `seq` retention deleted.
    pub fn merge_heads(&self, mut index: HashMap<String, ChainHead>) -> HashMap<String, ChainHead> {
        for (org, cp) in self.read().iter() {
            let deleted = cp.head();
            if deleted.seq == 0 {
                continue;
            }
            match index.get(org) {
                Some(h) if h.seq >= deleted.seq => {}
                _ => {
                    index.insert(org.clone(), deleted);
                }
            }
        }
        index
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, RetentionCheckpoint>> {
        self.orgs.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// One org's two checkpoints of the same chain as one: the further checkpoint, and the
/// tombstones of both above it.
fn merged(a: &RetentionCheckpoint, b: &RetentionCheckpoint) -> RetentionCheckpoint {
    let checkpoint = if b.checkpoint.seq > a.checkpoint.seq {
        b.checkpoint.clone()
    } else {
        a.checkpoint.clone()
    };
    let tombstones: BTreeMap<u64, _> = a
        .tombstones
        .iter()
        .chain(&b.tombstones)
        .filter(|t| t.seq > checkpoint.seq)
        .map(|t| (t.seq, t.clone()))
        .collect();
    RetentionCheckpoint {
        checkpoint,
        tombstones: tombstones.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::chain::Tombstone;

    fn h(seq: u64, c: char) -> ChainHead {
        ChainHead {
            seq,
            hash: c.to_string().repeat(64),
        }
    }

    #[test]
    fn round_trip_recovery_and_merged_heads() {
        let dir = tempfile::tempdir().unwrap();
        let cps = ChainCheckpoints::open(dir.path()).unwrap();
        assert_eq!(cps.get("acme"), RetentionCheckpoint::default());
        let acme = RetentionCheckpoint {
            checkpoint: h(4, 'a'),
            tombstones: vec![Tombstone {
                seq: 7,
                hash: "b".repeat(64),
                time: None,
            }],
        };
        cps.save(BTreeMap::from([("acme".to_string(), acme.clone())]))
            .unwrap();
        assert!(!dir.path().join(TMP).exists());
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        let reopened = ChainCheckpoints::open(dir.path()).unwrap();
        assert_eq!(reopened.get("acme"), acme);

        // Heads: the file's wins when the index has nothing newer (or nothing at all).
        let index = HashMap::from([
            ("acme".to_string(), h(6, 'c')),
            ("globex".to_string(), h(3, 'd')),
        ]);
        let merged = reopened.merge_heads(index.clone());
        assert_eq!(merged["acme"], h(7, 'b'));
        assert_eq!(merged["globex"], h(3, 'd'));
        let mut newer = index;
        newer.insert("acme".into(), h(9, 'e'));
        assert_eq!(reopened.merge_heads(newer)["acme"], h(9, 'e'));
        assert_eq!(reopened.merge_heads(HashMap::new())["acme"], h(7, 'b'));

        // Another node's checkpoints: the further one wins, tombstones above it are merged.
        let theirs = RetentionCheckpoint {
            checkpoint: h(5, 'f'),
            tombstones: vec![Tombstone {
                seq: 9,
                hash: "9".repeat(64),
                time: None,
            }],
        };
        let changed = reopened
            .adopt(&BTreeMap::from([
                ("acme".to_string(), theirs),
                ("globex".to_string(), RetentionCheckpoint::default()),
            ]))
            .unwrap();
        assert_eq!(changed, vec!["acme".to_string()]);
        let adopted = ChainCheckpoints::open(dir.path()).unwrap().get("acme");
        assert_eq!(adopted.checkpoint, h(5, 'f'));
        assert_eq!(
            adopted.tombstones.iter().map(|t| t.seq).collect::<Vec<_>>(),
            [7, 9]
        );
        assert!(
            reopened
                .adopt(&BTreeMap::from([("acme".to_string(), acme.clone())]))
                .unwrap()
                .is_empty()
        );
        reopened
            .save(BTreeMap::from([("acme".to_string(), acme.clone())]))
            .unwrap();

        // A complete temporary file wins; a torn one is ignored; a future version is an error.
        let newer = CheckpointFile {
            version: VERSION,
            orgs: BTreeMap::from([("acme".to_string(), RetentionCheckpoint::default())]),
        };
        std::fs::write(dir.path().join(TMP), serde_json::to_vec(&newer).unwrap()).unwrap();
        assert_eq!(
            ChainCheckpoints::open(dir.path()).unwrap().get("acme"),
            RetentionCheckpoint::default()
        );
        std::fs::write(dir.path().join(TMP), b"{\"vers").unwrap();
        assert_eq!(
            ChainCheckpoints::open(dir.path()).unwrap().get("acme"),
            acme
        );
        std::fs::remove_file(dir.path().join(TMP)).unwrap();
        std::fs::write(dir.path().join(FILE), br#"{"version": 9, "orgs": {}}"#).unwrap();
        let err = ChainCheckpoints::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(FILE) && err.contains("version 9"), "{err}");
    }

    mod props {
        use super::*;
        use crate::retention::overrides::OverrideStore;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64)
            ))]

            /// Any bytes as the retention overrides or the chain checkpoints (stable and
            /// temporary files): loaded, or an error naming the file. Never a panic.
            #[test]
            fn prop_any_state_file_loads_or_is_named(
                stable in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..128),
                    Just(br#"{"version":1,"days":{"acme":4294967295,"":0}}"#.to_vec()),
                    Just(br#"{"version":4294967295,"days":{}}"#.to_vec()),
                ],
                tmp in proptest::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            ) {
                let dir = tempfile::tempdir().unwrap();
                for (file, tmp_file) in [(crate::retention::overrides::FILE, "retention-overrides.json.tmp"), (FILE, TMP)] {
                    std::fs::write(dir.path().join(file), &stable).unwrap();
                    if let Some(tmp) = &tmp {
                        std::fs::write(dir.path().join(tmp_file), tmp).unwrap();
                    }
                }
                let named = |e: RetentionError| {
                    let m = e.to_string();
                    assert!(m.contains(dir.path().to_str().unwrap()), "{m}");
                };
                if let Err(e) = OverrideStore::new(dir.path()).load() {
                    named(e);
                }
                if let Err(e) = ChainCheckpoints::open(dir.path()) {
                    named(e);
                }
            }
        }
    }
}
