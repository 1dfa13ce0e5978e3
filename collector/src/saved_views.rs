//! Saved views of the dashboard: named filter sets per org, `<data_dir>/saved-views/<org>.json`.
//! Each org's file is an atomic state file (write, fsync, rename, fsync the directory), like the
//! retention overrides and the streams' definitions: a view answered as saved is on disk.
//! The filters are checked by the API before they get here; this is the mechanism only.

use chrono::{DateTime, Utc};
use codestax_storage::{OnDamage, StateFile, StateFileError, Versioned};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Most views one org may keep (each list is read whole on every request).
pub const MAX_VIEWS_PER_ORG: usize = 100;
/// Longest view name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest filter set, in bytes of JSON: a change's record holds the old and the new set, and
/// must fit the collector's own entry limit; the dashboard opens a view through a search URL,
/// itself at most 8 KiB.
pub const MAX_FILTERS_BYTES: usize = 8 * 1024;

const VERSION: u32 = 1;

/// One saved view: the search filters as the audit-log routes take them (name → values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedView {
    pub id: String,
    pub name: String,
    pub filters: BTreeMap<String, Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The key that created it.
    pub created_by: String,
}

/// What a change sets; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewPatch {
    pub name: Option<String>,
    pub filters: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SavedViewError {
    #[error("no such saved view")]
    NotFound,
    #[error(
        "this organization has {MAX_VIEWS_PER_ORG} saved views, the most it may keep; delete one first"
    )]
    TooMany,
    #[error("a saved view named {0:?} exists already")]
    NameTaken(String),
    #[error(transparent)]
    State(#[from] StateFileError),
    #[error("cannot create {}: {source}", .path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SavedViewError {
    /// The I/O error underneath, if the disk failed (e.g. it is full).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            SavedViewError::State(e) => e.io_error(),
            SavedViewError::Dir { source, .. } => Some(source),
            SavedViewError::NotFound | SavedViewError::TooMany | SavedViewError::NameTaken(_) => {
                None
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewsFile {
    version: u32,
    views: Vec<SavedView>,
}

impl Versioned for ViewsFile {
    const VERSION: u32 = VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

/// Every org's saved views. Changes of one collector are serialised by a lock, so a
/// read-modify-write of an org's file never loses another's change.
#[derive(Debug)]
pub struct SavedViews {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl SavedViews {
    pub fn open(data_dir: &Path) -> Result<SavedViews, SavedViewError> {
        let dir = data_dir.join("saved-views");
        std::fs::create_dir_all(&dir).map_err(|source| SavedViewError::Dir {
            path: dir.clone(),
            source,
        })?;
        Ok(SavedViews {
            dir,
            lock: Mutex::new(()),
        })
    }

    /// Org ids are safe in paths (checked where keys and orgs are made).
    fn file(&self, org: &str) -> StateFile {
        debug_assert!(codestax_common::is_valid_org_id(org), "{org}");
        StateFile::new(self.dir.join(format!("{org}.json")), ".tmp")
    }

    fn read(&self, org: &str) -> Result<Vec<SavedView>, SavedViewError> {
        Ok(self
            .file(org)
            .read_json::<ViewsFile>(OnDamage::Fail)?
            .map(|f| f.views)
            .unwrap_or_default())
    }

    fn write(&self, org: &str, views: Vec<SavedView>) -> Result<(), SavedViewError> {
        Ok(self.file(org).write_json(&ViewsFile {
            version: VERSION,
            views,
        })?)
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The org's views, oldest first.
    pub fn list(&self, org: &str) -> Result<Vec<SavedView>, SavedViewError> {
        let _guard = self.locked();
        self.read(org)
    }

    pub fn get(&self, org: &str, id: &str) -> Result<SavedView, SavedViewError> {
        self.list(org)?
            .into_iter()
            .find(|v| v.id == id)
            .ok_or(SavedViewError::NotFound)
    }

    /// Whether `name` could be added (or given to view `except`): room left and the name free.
    pub fn check_name(
        &self,
        org: &str,
        name: &str,
        except: Option<&str>,
    ) -> Result<(), SavedViewError> {
        check_name(&self.list(org)?, name, except)
    }

    /// Applies `change` to the org's views and saves them (durable before this returns),
    /// unless it fails.
    pub fn change<T>(
        &self,
        org: &str,
        change: impl FnOnce(&mut Vec<SavedView>) -> Result<T, SavedViewError>,
    ) -> Result<T, SavedViewError> {
        let Ok(out) = self.change_recorded(org, change, |_| Ok::<(), Infallible>(()))?;
        Ok(out)
    }

    /// As [`SavedViews::change`] for a change that is recorded: the org's new file is written and
    /// fsynced beside the old one, then `record` makes the change's audit entry durable, then
    /// the new file replaces the old. A full disk refuses the change before it is recorded; a
    /// refused record (`Ok(Err(_))`) leaves the views as they were.
    pub fn change_recorded<T, E>(
        &self,
        org: &str,
        change: impl FnOnce(&mut Vec<SavedView>) -> Result<T, SavedViewError>,
        record: impl FnOnce(&T) -> Result<(), E>,
    ) -> Result<Result<T, E>, SavedViewError> {
        let _guard = self.locked();
        let mut views = self.read(org)?;
        let out = change(&mut views)?;
        let prepared = self.file(org).prepare_json(&ViewsFile {
            version: VERSION,
            views,
        })?;
        if let Err(e) = record(&out) {
            return Ok(Err(e));
        }
        prepared.commit()?;
        Ok(Ok(out))
    }

    /// Cluster mode: the org's views made `views` (the node's cache of the cluster's), saved
    /// if they changed. Returns whether they did.
    pub fn replace(&self, org: &str, views: Vec<SavedView>) -> Result<bool, SavedViewError> {
        let _guard = self.locked();
        if self.read(org)? == views {
            return Ok(false);
        }
        self.write(org, views)?;
        Ok(true)
    }

    /// Every org with a views file, and its views (what a single node offers a cluster).
    pub fn all(&self) -> Result<BTreeMap<String, Vec<SavedView>>, SavedViewError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| SavedViewError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let mut out = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(org) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if codestax_common::is_valid_org_id(org) {
                out.insert(org.to_string(), self.list(org)?);
            }
        }
        Ok(out)
    }

    /// Adds `view`, made durable before this returns.
    pub fn create(&self, org: &str, view: SavedView) -> Result<SavedView, SavedViewError> {
        self.change(org, |views| add(views, view))
    }

    /// Applies `patch` to view `id`: the view before and after.
    pub fn patch(
        &self,
        org: &str,
        id: &str,
        patch: ViewPatch,
        now: DateTime<Utc>,
    ) -> Result<(SavedView, SavedView), SavedViewError> {
        self.change(org, |views| apply_patch(views, id, patch, now))
    }

    /// Removes view `id`: the view removed.
    pub fn delete(&self, org: &str, id: &str) -> Result<SavedView, SavedViewError> {
        self.change(org, |views| remove(views, id))
    }
}

/// Adds `view` to an org's `views` (room left and its name free): the view.
pub fn add(views: &mut Vec<SavedView>, view: SavedView) -> Result<SavedView, SavedViewError> {
    check_name(views, &view.name, None)?;
    views.push(view.clone());
    Ok(view)
}

/// Applies `patch` to view `id` of `views`: the view before and after.
pub fn apply_patch(
    views: &mut [SavedView],
    id: &str,
    patch: ViewPatch,
    now: DateTime<Utc>,
) -> Result<(SavedView, SavedView), SavedViewError> {
    if let Some(name) = &patch.name {
        check_name(views, name, Some(id))?;
    }
    let view = views
        .iter_mut()
        .find(|v| v.id == id)
        .ok_or(SavedViewError::NotFound)?;
    let old = view.clone();
    if let Some(name) = patch.name {
        view.name = name;
    }
    if let Some(filters) = patch.filters {
        view.filters = filters;
    }
    view.updated_at = now;
    Ok((old, view.clone()))
}

/// Removes view `id` from `views`: the view removed.
pub fn remove(views: &mut Vec<SavedView>, id: &str) -> Result<SavedView, SavedViewError> {
    let at = views
        .iter()
        .position(|v| v.id == id)
        .ok_or(SavedViewError::NotFound)?;
    Ok(views.remove(at))
}

fn check_name(views: &[SavedView], name: &str, except: Option<&str>) -> Result<(), SavedViewError> {
    if except.is_none() && views.len() >= MAX_VIEWS_PER_ORG {
        return Err(SavedViewError::TooMany);
    }
    let taken = views
        .iter()
        .any(|v| Some(v.id.as_str()) != except && v.name.eq_ignore_ascii_case(name));
    if taken {
        return Err(SavedViewError::NameTaken(name.to_string()));
    }
    Ok(())
}

/// A new view id: `view_` and 16 random hex digits.
pub fn new_id() -> String {
    let mut buf = [0u8; 8];
    rand::fill(&mut buf[..]);
    format!("view_{}", hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, name: &str) -> SavedView {
        let now = Utc::now();
        SavedView {
            id: id.into(),
            name: name.into(),
            filters: BTreeMap::from([("category".into(), vec!["scan".into()])]),
            created_at: now,
            updated_at: now,
            created_by: "key_x".into(),
        }
    }

    #[test]
    fn views_are_kept_per_org_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = SavedViews::open(dir.path()).unwrap();
        s.create("acme", view("view_1", "Scans")).unwrap();
        s.create("globex", view("view_2", "Scans")).unwrap();
        assert!(matches!(
            s.create("acme", view("view_3", "scans")),
            Err(SavedViewError::NameTaken(_))
        ));
        let (old, new) = s
            .patch(
                "acme",
                "view_1",
                ViewPatch {
                    name: Some("All scans".into()),
                    filters: None,
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(
            (old.name.as_str(), new.name.as_str()),
            ("Scans", "All scans")
        );
        assert_eq!(new.filters, old.filters);

        let s = SavedViews::open(dir.path()).unwrap();
        assert_eq!(s.list("acme").unwrap()[0].name, "All scans");
        assert_eq!(s.list("globex").unwrap().len(), 1);
        assert!(matches!(
            s.get("acme", "view_2"),
            Err(SavedViewError::NotFound)
        ));
        s.delete("acme", "view_1").unwrap();
        assert!(s.list("acme").unwrap().is_empty());
        assert!(!dir.path().join("saved-views/acme.json.tmp").exists());
    }

    #[test]
    fn an_org_keeps_at_most_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SavedViews::open(dir.path()).unwrap();
        for i in 0..MAX_VIEWS_PER_ORG {
            s.create("acme", view(&format!("view_{i}"), &format!("v{i}")))
                .unwrap();
        }
        assert!(matches!(
            s.create("acme", view("view_x", "one more")),
            Err(SavedViewError::TooMany)
        ));
        // A damaged file is an error naming it, never an empty list that a save would overwrite.
        std::fs::write(dir.path().join("saved-views/acme.json"), b"{\"vers").unwrap();
        let err = s.list("acme").unwrap_err().to_string();
        assert!(err.contains("acme.json"), "{err}");
    }
}
