//! The key store: `<data_dir>/keys.json`, shared by the running collector and the CLI.
//!
//! Every change is a read-modify-write under an exclusive lock on `keys.lock`, reading the file
//! afresh, so two processes never lose each other's updates. The file is replaced atomically
//! (temp file, fsync, rename, fsync of the directory), so readers never take the lock: they see the
//! old or the new document, never half of one. A running collector picks up other writers' changes
//! with [`KeyStore::reload_if_changed`], which costs one `stat` when nothing changed.

use super::event::{KeyEvent, KeyEventKind};
use super::token::{TOKEN_LEN, TOKEN_PREFIX, Token, TokenHash, random_bytes};
use super::{KeyError, Role};
use chrono::{DateTime, Utc};
use codestax_common::is_valid_org_id;
use codestax_common::time::truncate_to_micros;
use codestax_storage::{AtomicFile, PreparedFile, StateFileError};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};
use subtle::ConstantTimeEq;

/// The store's file inside the data directory.
pub const KEYS_FILE: &str = "keys.json";
/// The lock file held during every read-modify-write of [`KEYS_FILE`].
pub const LOCK_FILE: &str = "keys.lock";
/// Where a new document is written before it is renamed over [`KEYS_FILE`].
const TEMP_FILE: &str = "keys.json.tmp";
/// The format version of [`KEYS_FILE`] this build reads and writes.
pub const STORE_VERSION: u64 = 1;
/// The window of [`UNKNOWN_TOKEN_LOOKS`]: an unknown token makes the store look at `keys.json`
/// again ([`KeyStore::authenticate`]) so that a key made by the CLI works at once.
const UNKNOWN_TOKEN_RECHECK: Duration = Duration::from_millis(100);
/// Looks (one `stat` each; the file is read only if it changed) that unknown tokens may cause per
/// [`UNKNOWN_TOKEN_RECHECK`]: many more than people make keys, so each new key is seen at once
/// (a single allowance per window refused a second key made within 100 ms of the first), and
/// few enough that a flood of random tokens costs at most 1000 `stat`s a second. A look whose
/// read fails uses up its window, so a damaged file is read at most ten times a second.
const UNKNOWN_TOKEN_LOOKS: u32 = 100;
/// How often [`KeyStore::spawn_reloader`] looks for changes by default.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(250);
/// Longest key name, in characters.
const MAX_NAME_CHARS: usize = 128;
/// Key ids are this prefix and 16 lowercase hex characters.
const KEY_ID_PREFIX: &str = "key_";

/// An API key as everyone but the store sees it: never the token, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Public identifier, `key_` and 16 hex characters. Safe to log and show.
    pub id: String,
    /// The org the key acts for.
    pub org_id: String,
    pub role: Role,
    /// A label given at creation (host, person, purpose).
    #[serde(default)]
    pub name: Option<String>,
    /// When the key was created, UTC.
    #[serde(with = "codestax_common::time::micros")]
    pub created_at: DateTime<Utc>,
    /// When the key was revoked, UTC; a revoked key authenticates nothing.
    #[serde(default, with = "codestax_common::time::micros_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Id of the key that created this one; `None` when created by the CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Id of the key that revoked this one; `None` when revoked by the CLI or not revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl KeyInfo {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// May this key read `org`'s audit log: the role allows it and it is the key's own org.
    pub fn can_read_log_of(&self, org: &str) -> bool {
        self.role.can_read_log() && self.org_id == org
    }

    /// May this key send records into `org`: the role allows it and it is the key's own org.
    pub fn can_ingest_into(&self, org: &str) -> bool {
        self.role.can_ingest() && self.org_id == org
    }

    /// The provenance of the records this key writes through ingest.
    pub fn provenance(&self) -> codestax_common::Provenance {
        codestax_common::Provenance::Ingest {
            key_id: self.id.clone(),
        }
    }

    /// The provenance of the records this key brings in through `POST /api/v1/import` from
    /// `source` (as the importer names it).
    pub fn import_provenance(&self, source: Option<String>) -> codestax_common::Provenance {
        codestax_common::Provenance::Imported {
            key_id: self.id.clone(),
            source,
        }
    }

    /// This key's lifecycle as events: its creation and, if revoked, its revocation.
    fn events(&self) -> impl Iterator<Item = KeyEvent> + '_ {
        let event = |kind, at, by: &Option<String>| KeyEvent {
            kind,
            key_id: self.id.clone(),
            org_id: self.org_id.clone(),
            role: self.role,
            name: self.name.clone(),
            at,
            by: by.clone(),
        };
        std::iter::once(event(
            KeyEventKind::Created,
            self.created_at,
            &self.created_by,
        ))
        .chain(
            self.revoked_at
                .map(|at| event(KeyEventKind::Revoked, at, &self.revoked_by)),
        )
    }
}

/// A key as the cluster's metastore keeps it (docs/cluster.md): its public fields and the
/// SHA-256 of its token in lowercase hex. Never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedKey {
    pub info: KeyInfo,
    pub token_sha256: String,
}

/// `keys.json`: `{"version": 1, "keys": [...]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u64,
    keys: Vec<StoredKey>,
}

/// Read before the whole document, so a future version is reported as such, not as corrupt.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

/// One key as stored: its public fields and the SHA-256 of its token, in lowercase hex.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    id: String,
    org_id: String,
    role: Role,
    #[serde(default)]
    name: Option<String>,
    #[serde(with = "codestax_common::time::micros")]
    created_at: DateTime<Utc>,
    #[serde(default, with = "codestax_common::time::micros_opt")]
    revoked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_by: Option<String>,
    token_sha256: String,
}

/// A key in memory: what it is and the hash of its token.
#[derive(Debug, Clone)]
struct Entry {
    info: KeyInfo,
    hash: TokenHash,
}

/// What identifies one version of `keys.json` without reading it. Every write renames a new file
/// into place, so the inode changes too, even when the size and mtime tick do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: Option<SystemTime>,
    #[cfg(unix)]
    dev_ino: (u64, u64),
    #[cfg(unix)]
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            mtime: meta.modified().ok(),
            #[cfg(unix)]
            dev_ino: (meta.dev(), meta.ino()),
            #[cfg(unix)]
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// One loaded version of the store: the keys in file order and an index by token hash.
#[derive(Debug, Default)]
struct Snapshot {
    entries: Vec<Entry>,
    by_hash: HashMap<TokenHash, usize>,
    stamp: Option<Stamp>,
}

impl Snapshot {
    /// Builds and checks a snapshot from the parsed file; `path` names the file in errors.
    fn from_file(file: KeyFile, path: &Path) -> Result<Snapshot, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut ids = HashSet::new();
        let mut snapshot = Snapshot::default();
        for (i, k) in file.keys.into_iter().enumerate() {
            if !is_valid_key_id(&k.id) {
                return Err(invalid(format!(
                    "keys[{i}].id: malformed key id {:?}",
                    k.id
                )));
            }
            if !ids.insert(k.id.clone()) {
                return Err(invalid(format!("keys[{i}].id: duplicate key id {}", k.id)));
            }
            if !is_valid_org_id(&k.org_id) {
                return Err(invalid(format!(
                    "keys[{i}].org_id: invalid org id {:?}",
                    k.org_id
                )));
            }
            if let Some(name) = &k.name
                && !is_valid_name(name)
            {
                return Err(invalid(format!("keys[{i}].name: invalid name {name:?}")));
            }
            let Some(hash) = TokenHash::from_hex(&k.token_sha256) else {
                return Err(invalid(format!(
                    "keys[{i}].token_sha256: expected 64 lowercase hex characters"
                )));
            };
            let entry = Entry {
                info: KeyInfo {
                    id: k.id,
                    org_id: k.org_id,
                    role: k.role,
                    name: k.name,
                    created_at: k.created_at,
                    revoked_at: k.revoked_at,
                    created_by: k.created_by,
                    revoked_by: k.revoked_by,
                },
                hash,
            };
            snapshot.push(entry).map_err(|id| {
                invalid(format!(
                    "keys[{i}].token_sha256: same token hash as key {id}"
                ))
            })?;
        }
        Ok(snapshot)
    }

    /// Adds a key; fails with the id of the key that has the same token hash.
    fn push(&mut self, entry: Entry) -> Result<(), String> {
        if let Some(&other) = self.by_hash.get(&entry.hash) {
            return Err(self.entries[other].info.id.clone());
        }
        self.by_hash.insert(entry.hash, self.entries.len());
        self.entries.push(entry);
        Ok(())
    }

    fn get_mut(&mut self, key_id: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.info.id == key_id)
    }

    fn to_file(&self) -> KeyFile {
        KeyFile {
            version: STORE_VERSION,
            keys: self
                .entries
                .iter()
                .map(|e| StoredKey {
                    id: e.info.id.clone(),
                    org_id: e.info.org_id.clone(),
                    role: e.info.role,
                    name: e.info.name.clone(),
                    created_at: e.info.created_at,
                    revoked_at: e.info.revoked_at,
                    created_by: e.info.created_by.clone(),
                    revoked_by: e.info.revoked_by.clone(),
                    token_sha256: e.hash.to_hex(),
                })
                .collect(),
        }
    }
}

/// The API keys of every org, backed by `<data_dir>/keys.json`. Cheap to clone: clones share the
/// loaded keys. Several stores (in one or several processes) may use the same directory.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    path: PathBuf,
    temp_path: PathBuf,
    lock_path: PathBuf,
    state: RwLock<Snapshot>,
    /// How many times another writer's changes were loaded ([`KeyStore::reloads`]).
    reloads: AtomicU64,
    /// Woken at each such load ([`KeyStore::reloaded`]).
    reloaded: tokio::sync::Notify,
    /// The looks at the file unknown tokens caused lately.
    rechecks: Mutex<RecheckWindow>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.inner.path)
            .field("keys", &self.read_state().entries.len())
            .finish()
    }
}

/// The looks unknown tokens have caused in the current window.
#[derive(Debug, Default)]
struct RecheckWindow {
    start: Option<Instant>,
    used: u32,
}

impl KeyStore {
    /// Opens the store in `data_dir`, creating the directory and an empty `keys.json` if missing.
    /// A file that cannot be read or parsed is an error naming it; it is never reset.
    pub fn open(data_dir: &Path) -> Result<KeyStore, KeyError> {
        fs::create_dir_all(data_dir).map_err(|source| KeyError::Io {
            op: "creating data directory",
            path: data_dir.to_path_buf(),
            source,
        })?;
        let store = KeyStore {
            inner: Arc::new(Inner {
                dir: data_dir.to_path_buf(),
                path: data_dir.join(KEYS_FILE),
                temp_path: data_dir.join(TEMP_FILE),
                lock_path: data_dir.join(LOCK_FILE),
                state: RwLock::new(Snapshot::default()),
                reloads: AtomicU64::new(0),
                reloaded: tokio::sync::Notify::new(),
                rechecks: Mutex::new(RecheckWindow::default()),
            }),
        };
        let _lock = store.lock()?;
        let snapshot = match store.read_file() {
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let mut empty = Snapshot::default();
                store.write_file(&mut empty)?;
                empty
            }
            other => other?,
        };
        *store.write_state() = snapshot;
        Ok(store)
    }

    /// The path of `keys.json`.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Creates a key for `org` (on behalf of the CLI) and returns it with its token, which is
    /// not stored anywhere and cannot be shown again. A running collector records the event when
    /// it loads the change.
    pub fn create(
        &self,
        org: &str,
        role: Role,
        name: Option<&str>,
    ) -> Result<(KeyInfo, Token), KeyError> {
        self.create_inner(org, role, name, None, |_| Ok(()))
    }

    /// As [`KeyStore::create`], recording `actor_key_id` (the key that asked) as the creator.
    /// Whether that key may do so is the caller's decision ([`Role::can_manage_keys`], same org).
    /// `record` makes the creation's audit entry durable under the store's lock, after the new
    /// key file is written and fsynced and before it replaces the old one: if the file cannot
    /// be written nothing is recorded, if the record fails the key does not exist
    /// ([`KeyError::NotRecorded`]).
    pub fn create_by(
        &self,
        actor_key_id: &str,
        org: &str,
        role: Role,
        name: Option<&str>,
        record: impl FnOnce(&KeyEvent) -> Result<(), String>,
    ) -> Result<(KeyInfo, Token), KeyError> {
        self.create_inner(org, role, name, Some(actor_key_id), record)
    }

    fn create_inner(
        &self,
        org: &str,
        role: Role,
        name: Option<&str>,
        by: Option<&str>,
        record: impl FnOnce(&KeyEvent) -> Result<(), String>,
    ) -> Result<(KeyInfo, Token), KeyError> {
        check_new_key(org, name)?;
        let token = Token::generate()?;
        let info = self.modify_recorded(
            |snapshot| {
                let id = loop {
                    let id = new_key_id()?;
                    if !snapshot.entries.iter().any(|e| e.info.id == id) {
                        break id;
                    }
                };
                let info = KeyInfo {
                    id,
                    org_id: org.to_string(),
                    role,
                    name: name.map(str::to_string),
                    created_at: truncate_to_micros(Utc::now()),
                    revoked_at: None,
                    created_by: by.map(str::to_string),
                    revoked_by: None,
                };
                let created = info
                    .events()
                    .next()
                    .expect("a key's first event is its creation");
                snapshot
                    .push(Entry {
                        info: info.clone(),
                        hash: token.hash(),
                    })
                    .map_err(|other| KeyError::Invalid {
                        path: self.inner.path.clone(),
                        reason: format!("new token collides with key {other}"),
                    })?;
                Ok((info, created))
            },
            record,
        )?;
        tracing::info!(key_id = %info.id, org_id = %info.org_id, role = %info.role, "API key created");
        Ok((info, token))
    }

    /// Revokes a key (on behalf of the CLI). Unknown ids are [`KeyError::NotFound`]; a key
    /// revoked before is [`KeyError::AlreadyRevoked`]. A running collector records the event
    /// when it loads the change.
    pub fn revoke(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        self.revoke_inner(key_id, None, |_| Ok(()))
    }

    /// As [`KeyStore::revoke`], recording `actor_key_id` as the revoker. Check the actor's role
    /// and org against [`KeyStore::get`] first. `record` makes the revocation's audit entry
    /// durable between the writing of the new key file and its replacing the old one (as in
    /// [`KeyStore::create_by`]): if it fails, the key stays as it was ([`KeyError::NotRecorded`]).
    pub fn revoke_by(
        &self,
        actor_key_id: &str,
        key_id: &str,
        record: impl FnOnce(&KeyEvent) -> Result<(), String>,
    ) -> Result<KeyInfo, KeyError> {
        self.revoke_inner(key_id, Some(actor_key_id), record)
    }

    fn revoke_inner(
        &self,
        key_id: &str,
        by: Option<&str>,
        record: impl FnOnce(&KeyEvent) -> Result<(), String>,
    ) -> Result<KeyInfo, KeyError> {
        let info = self.modify_recorded(
            |snapshot| {
                let entry = snapshot
                    .get_mut(key_id)
                    .ok_or_else(|| KeyError::NotFound(key_id.to_string()))?;
                if let Some(at) = entry.info.revoked_at {
                    return Err(KeyError::AlreadyRevoked {
                        id: key_id.to_string(),
                        at,
                    });
                }
                let mut revoked = entry.info.clone();
                revoked.revoked_at = Some(truncate_to_micros(Utc::now()));
                revoked.revoked_by = by.map(str::to_string);
                let event = revoked
                    .events()
                    .last()
                    .expect("a revoked key has a revocation");
                entry.info = revoked;
                Ok((entry.info.clone(), event))
            },
            record,
        )?;
        tracing::info!(key_id = %info.id, org_id = %info.org_id, role = %info.role, "API key revoked");
        Ok(info)
    }

    /// One key by id, revoked or not, as last loaded.
    pub fn get(&self, key_id: &str) -> Option<KeyInfo> {
        self.read_state()
            .entries
            .iter()
            .find(|e| e.info.id == key_id)
            .map(|e| e.info.clone())
    }

    /// The keys of `org` (or of every org), revoked ones included, oldest first, as last loaded.
    pub fn list(&self, org: Option<&str>) -> Vec<KeyInfo> {
        let mut keys: Vec<KeyInfo> = self
            .read_state()
            .entries
            .iter()
            .filter(|e| org.is_none_or(|o| e.info.org_id == o))
            .map(|e| e.info.clone())
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        keys
    }

    /// The key a presented token belongs to, unless it is unknown or revoked. Hashes the token
    /// once, looks the hash up, and compares the stored hash in constant time. A token unknown
    /// here may belong to a key another writer (the CLI) has just made: the store then looks at
    /// its file again (a `stat` when nothing changed; at most `UNKNOWN_TOKEN_LOOKS` per
    /// `UNKNOWN_TOKEN_RECHECK`) before refusing, so a key works the moment `keys create`
    /// returns.
    pub fn authenticate(&self, token: &str) -> Option<KeyInfo> {
        // The format is public, so rejecting malformed tokens early leaks nothing.
        if token.len() != TOKEN_LEN || !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let presented = TokenHash::of(token);
        match self.find(&presented) {
            Some(found) => found,
            None if self.may_recheck() => {
                if let Err(e) = self.reload_if_changed() {
                    self.recheck_failed();
                    tracing::warn!(error = %e, "cannot reload the key file; keeping the keys loaded before");
                }
                self.find(&presented).flatten()
            }
            None => None,
        }
    }

    /// `None` for an unknown hash; `Some(None)` for a revoked key or a hash that does not match.
    fn find(&self, presented: &TokenHash) -> Option<Option<KeyInfo>> {
        let state = self.read_state();
        let entry = &state.entries[*state.by_hash.get(presented)?];
        let matches: bool = entry.hash.0.ct_eq(&presented.0).into();
        Some((matches && !entry.info.is_revoked()).then(|| entry.info.clone()))
    }

    fn may_recheck(&self) -> bool {
        let mut window = self
            .inner
            .rechecks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if window
            .start
            .is_none_or(|at| now.duration_since(at) >= UNKNOWN_TOKEN_RECHECK)
        {
            *window = RecheckWindow {
                start: Some(now),
                used: 0,
            };
        }
        if window.used >= UNKNOWN_TOKEN_LOOKS {
            return false;
        }
        window.used += 1;
        true
    }

    /// After a look whose read failed: no more until the window ends.
    fn recheck_failed(&self) {
        let mut window = self
            .inner
            .rechecks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        window.used = UNKNOWN_TOKEN_LOOKS;
    }

    /// How many times changes made by another writer have been loaded: whoever acts on such
    /// changes (the collector records their key events) compares this with what it saw last.
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Acquire)
    }

    /// Completes after the next load of another writer's changes (or at once if one happened
    /// since the last wait), so they can be acted on without waiting for a timer.
    pub async fn reloaded(&self) {
        self.inner.reloaded.notified().await
    }

    /// Every key's creation and revocation, oldest first: the source of the
    /// `auth.api_key_created` / `auth.api_key_revoked` audit records.
    pub fn events(&self) -> Vec<KeyEvent> {
        let mut events: Vec<KeyEvent> = self
            .read_state()
            .entries
            .iter()
            .flat_map(|e| e.info.events())
            .collect();
        events.sort_by(|a, b| (a.at, &a.key_id, a.kind).cmp(&(b.at, &b.key_id, b.kind)));
        events
    }

    /// Reloads `keys.json` if another store changed it since it was last loaded. Costs one `stat`
    /// when nothing changed. On error the keys loaded before stay in use.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let meta = fs::metadata(&self.inner.path).map_err(|source| KeyError::Io {
            op: "checking key store",
            path: self.inner.path.clone(),
            source,
        })?;
        if self.read_state().stamp == Some(Stamp::of(&meta)) {
            return Ok(false);
        }
        let snapshot = self.read_file()?;
        let mut state = self.write_state();
        if state.stamp == snapshot.stamp {
            return Ok(false);
        }
        *state = snapshot;
        self.inner.reloads.fetch_add(1, Ordering::AcqRel);
        self.inner.reloaded.notify_one();
        Ok(true)
    }

    /// Every key with its token hash, as last loaded: what a cluster node offers the metastore.
    pub fn shared_keys(&self) -> Vec<SharedKey> {
        self.read_state()
            .entries
            .iter()
            .map(|e| SharedKey {
                info: e.info.clone(),
                token_sha256: e.hash.to_hex(),
            })
            .collect()
    }

    /// Takes in the cluster's keys (cluster mode: the metastore is the source, `keys.json` the
    /// node's cache, kept through restarts and metastore outages). Keys only grow and a
    /// revocation is final, so the merge is a union by id where a revocation wins. A remote key
    /// that breaks a rule (bad hash or org, an id or hash clash) is skipped with a warning, not
    /// taken. Returns whether anything changed; a change counts as a reload ([`Self::reloads`]),
    /// so the collector records its key events as for the CLI's changes.
    pub fn merge(&self, remote: &[SharedKey]) -> Result<bool, KeyError> {
        // Most rounds bring nothing new: then nothing is locked, read or written.
        let news = {
            let state = self.read_state();
            remote.iter().any(
                |key| match state.entries.iter().find(|e| e.info.id == key.info.id) {
                    None => true,
                    Some(e) => e.info.revoked_at.is_none() && key.info.revoked_at.is_some(),
                },
            )
        };
        if !news {
            return Ok(false);
        }
        let path = self.inner.path.clone();
        let changed = self.modify_if(|snapshot| {
            let mut changed = false;
            for key in remote {
                let Some(hash) = TokenHash::from_hex(&key.token_sha256) else {
                    tracing::warn!(key_id = %key.info.id, "cluster key with a malformed token hash; skipped");
                    continue;
                };
                if let Some(entry) = snapshot.get_mut(&key.info.id) {
                    if entry.hash != hash {
                        tracing::warn!(key_id = %key.info.id, "cluster key differs in its token hash from the cached key; skipped");
                    } else if entry.info.revoked_at.is_none() && key.info.revoked_at.is_some() {
                        entry.info.revoked_at = key.info.revoked_at;
                        entry.info.revoked_by = key.info.revoked_by.clone();
                        changed = true;
                    }
                    continue;
                }
                let valid = is_valid_key_id(&key.info.id)
                    && is_valid_org_id(&key.info.org_id)
                    && key.info.name.as_deref().is_none_or(is_valid_name);
                if !valid {
                    tracing::warn!(key_id = %key.info.id, "invalid cluster key; skipped");
                    continue;
                }
                let entry = Entry {
                    info: key.info.clone(),
                    hash,
                };
                match snapshot.push(entry) {
                    Ok(()) => changed = true,
                    Err(other) => {
                        tracing::warn!(key_id = %key.info.id, other = %other, path = %path.display(), "cluster key has the token hash of another key; skipped")
                    }
                }
            }
            Ok((changed, changed))
        })?;
        if changed {
            self.inner.reloads.fetch_add(1, Ordering::AcqRel);
            self.inner.reloaded.notify_one();
        }
        Ok(changed)
    }

    /// Runs [`KeyStore::reload_if_changed`] every `interval` (use [`RELOAD_INTERVAL`]) until the
    /// task is aborted. Failures are logged once per distinct error; the old keys stay in use.
    pub fn spawn_reloader(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error: Option<String> = None;
            loop {
                ticker.tick().await;
                let store = self.clone();
                match tokio::task::spawn_blocking(move || store.reload_if_changed()).await {
                    Ok(Ok(changed)) => {
                        if changed {
                            tracing::info!(path = %self.inner.path.display(), "API keys reloaded");
                        }
                        last_error = None;
                    }
                    Ok(Err(e)) => {
                        let message = e.to_string();
                        if last_error.as_deref() != Some(message.as_str()) {
                            tracing::warn!(error = %message, "reloading API keys failed; keeping the keys loaded before");
                            last_error = Some(message);
                        }
                    }
                    Err(e) if e.is_cancelled() => break,
                    Err(e) => tracing::error!(error = %e, "API key reload task panicked"),
                }
            }
        })
    }

    /// As [`Self::modify_if`] for a change that is recorded: the new file is written and fsynced
    /// beside the old one, then `record` makes the change's event durable, then the new file
    /// replaces the old. A full disk therefore refuses the change before anything is recorded,
    /// and a refused record leaves the key store as it was.
    fn modify_recorded<T>(
        &self,
        change: impl FnOnce(&mut Snapshot) -> Result<(T, KeyEvent), KeyError>,
        record: impl FnOnce(&KeyEvent) -> Result<(), String>,
    ) -> Result<T, KeyError> {
        let _lock = self.lock()?;
        let mut snapshot = self.read_file()?;
        let changed = change(&mut snapshot);
        let (out, event) = match changed {
            Ok(changed) => changed,
            Err(e) => {
                // Even a refused change has read the newest file: keep it.
                *self.write_state() = snapshot;
                return Err(e);
            }
        };
        let prepared = self.prepare_file(&snapshot)?;
        record(&event).map_err(KeyError::NotRecorded)?;
        self.commit_file(prepared, &mut snapshot)?;
        *self.write_state() = snapshot;
        Ok(out)
    }

    /// Read-modify-write under the exclusive lock: reads the file afresh, applies `change`,
    /// writes the result atomically if `change` says it changed something, and makes it this
    /// store's state before the lock is released (so two threads of one store cannot install
    /// their results out of order).
    fn modify_if<T>(
        &self,
        change: impl FnOnce(&mut Snapshot) -> Result<(T, bool), KeyError>,
    ) -> Result<T, KeyError> {
        let _lock = self.lock()?;
        let mut snapshot = self.read_file()?;
        let result = change(&mut snapshot);
        if let Ok((_, true)) = result {
            self.write_file(&mut snapshot)?;
        }
        // Even a refused change has read the newest file: keep it.
        *self.write_state() = snapshot;
        result.map(|(t, _)| t)
    }

    /// Takes the exclusive lock on `keys.lock`; released when the file is dropped.
    fn lock(&self) -> Result<File, KeyError> {
        let path = &self.inner.lock_path;
        let io_err = |op| {
            move |source| KeyError::Io {
                op,
                path: path.clone(),
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err("opening lock file"))?;
        file.lock().map_err(io_err("locking"))?;
        Ok(file)
    }

    /// Reads and checks `keys.json`, with the stamp of exactly the version read.
    fn read_file(&self) -> Result<Snapshot, KeyError> {
        let path = &self.inner.path;
        let io_err = |op| {
            move |source| KeyError::Io {
                op,
                path: path.clone(),
                source,
            }
        };
        let mut file = File::open(path).map_err(io_err("opening key store"))?;
        let stamp = Stamp::of(&file.metadata().map_err(io_err("checking key store"))?);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_err("reading key store"))?;
        let corrupt = |source| KeyError::Corrupt {
            path: path.clone(),
            source,
        };
        let VersionOnly { version } = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if version != STORE_VERSION {
            return Err(KeyError::UnsupportedVersion {
                path: path.clone(),
                version,
                supported: STORE_VERSION,
            });
        }
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(corrupt)?;
        let mut snapshot = Snapshot::from_file(file, path)?;
        snapshot.stamp = Some(stamp);
        Ok(snapshot)
    }

    /// Replaces `keys.json` with `snapshot` atomically and records the new file's stamp in it.
    /// Call only with the lock held.
    fn write_file(&self, snapshot: &mut Snapshot) -> Result<(), KeyError> {
        let prepared = self.prepare_file(snapshot)?;
        self.commit_file(prepared, snapshot)
    }

    /// Writes and fsyncs `snapshot` as the next `keys.json` under the temporary name (which
    /// reading ignores). Call only with the lock held.
    fn prepare_file(&self, snapshot: &Snapshot) -> Result<PreparedFile, KeyError> {
        let Inner {
            path, temp_path, ..
        } = &*self.inner;
        let mut bytes = serde_json::to_vec_pretty(&snapshot.to_file())
            .expect("the key file serialises to JSON");
        bytes.push(b'\n');
        let mut options = OpenOptions::new();
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        AtomicFile::create_with(path, temp_path, &mut options)
            .and_then(|mut f| {
                f.write_all(&bytes)
                    .map_err(|source| StateFileError::Write {
                        path: temp_path.clone(),
                        source,
                    })?;
                f.prepare()
            })
            .map_err(|e| self.file_error(e))
    }

    /// Puts a prepared `keys.json` in place and records the new file's stamp in `snapshot`.
    fn commit_file(&self, prepared: PreparedFile, snapshot: &mut Snapshot) -> Result<(), KeyError> {
        let path = &self.inner.path;
        prepared.commit().map_err(|e| self.file_error(e))?;
        let meta = fs::metadata(path).map_err(|source| KeyError::Io {
            op: "checking key store",
            path: path.clone(),
            source,
        })?;
        snapshot.stamp = Some(Stamp::of(&meta));
        Ok(())
    }

    /// A failed write of `keys.json`, named by the step that failed.
    fn file_error(&self, e: StateFileError) -> KeyError {
        let Inner { dir, temp_path, .. } = &*self.inner;
        let op = if e.path() == temp_path.as_path() {
            "writing"
        } else if e.path() == dir.as_path() {
            "syncing directory"
        } else {
            "replacing key store"
        };
        let path = e.path().to_path_buf();
        let source = e.into_io_error();
        KeyError::Io { op, path, source }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        // A snapshot is replaced whole, so a panic elsewhere cannot leave it half-changed.
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Checks a new key's org and name; the error holds at most the name's first 32 characters.
pub(crate) fn check_new_key(org: &str, name: Option<&str>) -> Result<(), KeyError> {
    if !is_valid_org_id(org) {
        return Err(KeyError::InvalidOrg(org.to_string()));
    }
    if let Some(name) = name
        && !is_valid_name(name)
    {
        let shown: String = name.chars().take(32).collect();
        let shown = if shown.len() < name.len() {
            format!("{shown}...")
        } else {
            shown
        };
        return Err(KeyError::InvalidName(shown));
    }
    Ok(())
}

/// A fresh random key id, `key_` and 16 hex characters.
pub(crate) fn new_key_id() -> Result<String, KeyError> {
    Ok(format!(
        "{KEY_ID_PREFIX}{}",
        hex::encode(random_bytes::<8>()?)
    ))
}

fn is_valid_key_id(id: &str) -> bool {
    id.strip_prefix(KEY_ID_PREFIX).is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn is_valid_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(codestax_common::is_refused_in_names)
}

#[cfg(test)]
mod tests;
