//! [`Heads`]: each org's signed tree head, signed on demand and kept.
//!
//! A head is signed only when asked for (a checkpoint request, a verify, an export) and only if
//! the org's tree has grown since its last one; otherwise the last one is handed out again. Every
//! head is written to `<data_dir>/heads/` (a storage log of JSON entries) and fsynced **before**
//! it is handed out, so the collector can always show what it signed, and at start each org's
//! latest head is checked against its tree: a tree that does not extend a head handed out
//! (lost or changed leaves) gets no new head, and says why.

use super::error::TreeError;
use super::trees::{Trees, lock};
use crate::index::CursorKey;
use chrono::{DateTime, Utc};
use codestax_common::merkle::{EMPTY_ROOT, Hash};
use codestax_common::note::{self, Checkpoint, NoteError, NoteSigner, VerifierKey};
use codestax_storage::{Checksum, Damage, Frames, Log, LogError, OpenLog, SegmentFormat};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

static FORMAT: SegmentFormat = SegmentFormat {
    noun: "signed tree head segment",
    magic: b"CXTH",
    suffix: ".heads",
    version: 1,
    oldest_version: 1,
    named_by_first_entry: true,
    checksum: |_| Checksum::LenAndPayload,
    max_payload: 64 * 1024,
};

/// A new segment is started past this size.
const SEGMENT_BYTES: u64 = 16 << 20;

/// A signed tree head as handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    pub org: String,
    /// Leaves (records) the head covers: `seq` 1 to `size`.
    pub size: u64,
    /// The root hash, lowercase hex.
    #[serde(with = "hex_hash")]
    pub root: Hash,
    #[serde(with = "codestax_common::time::micros")]
    pub time: DateTime<Utc>,
    /// The signed note (a C2SP checkpoint): what a verifier checks.
    pub note: String,
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// Why no head could be given.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("signed heads: {0}")]
    Log(#[from] LogError),
    #[error("cannot sign the tree head: {0}")]
    Note(#[from] NoteError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("the Merkle tree of org {org} is unavailable: {why}")]
    Unavailable { org: String, why: String },
    #[error(
        "the Merkle tree of org {org} does not extend the head of size {size} signed at {time}: \
         {why}; no new head is signed for it"
    )]
    Contradicted {
        org: String,
        size: u64,
        time: String,
        why: String,
    },
}

/// The signer and every org's latest head.
#[derive(Debug)]
pub struct Heads {
    signer: NoteSigner,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    log: Log,
    latest: HashMap<String, SignedHead>,
    /// Orgs whose tree does not extend their latest head, and why.
    contradicted: HashMap<String, String>,
}

impl Heads {
    /// Opens the heads kept in `dir`, signing new ones with `signer`.
    pub fn open(dir: &Path, signer: NoteSigner) -> Result<Heads, HeadError> {
        let mut latest: HashMap<String, SignedHead> = HashMap::new();
        let (log, notes) = Log::open(
            dir,
            OpenLog::new(&FORMAT, Damage::TornTailOnly),
            |_, payload| {
                let head: SignedHead = serde_json::from_slice(payload)
                    .map_err(|e| format!("not a signed head: {e}"))?;
                if latest.get(&head.org).is_none_or(|l| head.size >= l.size) {
                    latest.insert(head.org.clone(), head);
                }
                Ok(())
            },
        )?;
        for n in notes {
            tracing::warn!("{n}");
        }
        Ok(Heads {
            signer,
            state: Mutex::new(State {
                log,
                latest,
                contradicted: HashMap::new(),
            }),
        })
    }

    /// The key search cursors are tagged under, derived from the heads' key: the signing key
    /// every node of a cluster shares, so a cursor one node issued verifies on another.
    pub fn cursor_key(&self) -> CursorKey {
        CursorKey::from_signer(&self.signer)
    }

    /// Signs `text` (ending in a newline) as a signed note with the heads' key: an export's
    /// manifest. Not kept: the export carries it.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        self.signer.sign(text)
    }

    /// The public key heads verify with.
    pub fn verifier(&self) -> VerifierKey {
        self.signer.verifier()
    }

    /// Checks each org's latest head against its tree (at start, once the trees have caught
    /// up): the tree must have at least its size and the same root there. An org that fails is
    /// logged and gets no new head.
    pub fn check(&self, trees: &Trees) -> Result<(), HeadError> {
        let mut state = self.lock();
        let heads: Vec<SignedHead> = state.latest.values().cloned().collect();
        for head in heads {
            let tree = trees.org(&head.org);
            let have = tree.as_ref().map_or(0, |t| lock(t).size());
            let why = if head.size > have {
                Some(format!("the tree has {have} leaves"))
            } else if head.size == 0 {
                None
            } else {
                let root = lock(tree.as_ref().expect("has leaves")).root_at(head.size)?;
                (root != head.root).then(|| "its root at that size differs".to_string())
            };
            if let Some(why) = why {
                tracing::error!(
                    org = head.org,
                    size = head.size,
                    why,
                    "an org's Merkle tree contradicts a head signed before"
                );
                state.contradicted.insert(head.org.clone(), why);
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `org`'s latest head, if one was ever handed out.
    pub fn latest(&self, org: &str) -> Option<SignedHead> {
        self.lock().latest.get(org).cloned()
    }

    /// A signed head of `org` covering its first `size` leaves: its latest one if that is at
    /// least that large (no new head to sign and sync), else [`Heads::current`].
    pub fn covering(&self, org: &str, trees: &Trees, size: u64) -> Result<SignedHead, HeadError> {
        if trees.unavailable(org).is_none() {
            let state = self.lock();
            if !state.contradicted.contains_key(org)
                && let Some(l) = state.latest.get(org)
                && l.size >= size
            {
                return Ok(l.clone());
            }
        }
        self.current(org, trees)
    }

    /// `org`'s current signed head: its latest one if the tree has not grown since, else a new
    /// one, durably kept before it is returned.
    pub fn current(&self, org: &str, trees: &Trees) -> Result<SignedHead, HeadError> {
        if let Some(why) = trees.unavailable(org) {
            return Err(HeadError::Unavailable {
                org: org.to_string(),
                why,
            });
        }
        let mut state = self.lock();
        let latest = state.latest.get(org).cloned();
        if let Some(why) = state.contradicted.get(org) {
            let l = latest.as_ref();
            return Err(HeadError::Contradicted {
                org: org.to_string(),
                size: l.map_or(0, |l| l.size),
                time: l
                    .map(|l| codestax_common::time::format_rfc3339(&l.time))
                    .unwrap_or_default(),
                why: why.clone(),
            });
        }
        let (size, root) = match trees.org(org) {
            Some(t) => {
                let t = lock(&t);
                (t.size(), t.root())
            }
            None => (0, EMPTY_ROOT),
        };
        if let Some(l) = latest
            && l.size == size
            && l.root == root
        {
            return Ok(l);
        }
        let time = codestax_common::time::truncate_to_micros(Utc::now());
        let checkpoint = Checkpoint {
            origin: note::origin(self.signer.name(), org),
            size,
            root,
            time: Some(time),
        };
        let head = SignedHead {
            org: org.to_string(),
            size,
            root,
            time,
            note: self.signer.sign(&checkpoint.text())?,
        };
        let mut frames = Frames::new();
        frames.push(
            state.log.checksum(),
            &serde_json::to_vec(&head).expect("a head serialises"),
        );
        if !state.log.active_is_empty() && state.log.active_len() >= SEGMENT_BYTES {
            state.log.roll()?;
        }
        state.log.append(&frames)?;
        state.log.sync()?;
        state.latest.insert(org.to_string(), head.clone());
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::merkle::leaf_hash;
    use codestax_common::note::open;

    #[test]
    fn signed_on_demand_kept_and_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let signer = NoteSigner::new("collector.test", [5; 32]).unwrap();
        let trees = Trees::open(&dir.path().join("tree")).unwrap();
        let heads = Heads::open(&dir.path().join("heads"), signer.clone()).unwrap();
        // An org with nothing: the empty tree.
        let empty = heads.current("acme", &trees).unwrap();
        assert_eq!((empty.size, empty.root), (0, EMPTY_ROOT));
        let l: Vec<Hash> = (0..5u8).map(|i| leaf_hash(&[i])).collect();
        trees.append("acme", 1, &l[..3]).unwrap();
        let a = heads.current("acme", &trees).unwrap();
        assert_eq!(a.size, 3);
        // Nothing new: the same head again, not a new signature.
        assert_eq!(heads.current("acme", &trees).unwrap(), a);
        let text = open(&a.note, &signer.verifier()).unwrap();
        let cp = Checkpoint::parse(text).unwrap();
        assert_eq!(
            (cp.origin.as_str(), cp.size, cp.root, cp.time),
            ("collector.test/orgs/acme", 3, a.root, Some(a.time))
        );
        // Another key does not verify it.
        let other = NoteSigner::new("collector.test", [6; 32]).unwrap();
        assert!(open(&a.note, &other.verifier()).is_err());
        trees.append("acme", 4, &l[3..5]).unwrap();
        let b = heads.current("acme", &trees).unwrap();
        assert_eq!(b.size, 5);
        trees.sync_all().unwrap();
        drop((heads, trees));

        // Reopened: the latest head is kept and the tree extends it.
        let trees = Trees::open(&dir.path().join("tree")).unwrap();
        let heads = Heads::open(&dir.path().join("heads"), signer.clone()).unwrap();
        heads.check(&trees).unwrap();
        assert_eq!(heads.latest("acme"), Some(b.clone()));
        assert_eq!(heads.current("acme", &trees).unwrap(), b);
        drop((heads, trees));

        // A tree that lost leaves a head covered gets no new head, and says so.
        std::fs::remove_dir_all(dir.path().join("tree")).unwrap();
        let trees = Trees::open(&dir.path().join("tree")).unwrap();
        trees.append("acme", 1, &l[..2]).unwrap();
        let heads = Heads::open(&dir.path().join("heads"), signer).unwrap();
        heads.check(&trees).unwrap();
        let err = heads.current("acme", &trees).unwrap_err().to_string();
        assert!(err.contains("size 5") && err.contains("2 leaves"), "{err}");
    }
}
