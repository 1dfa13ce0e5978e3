//! [`RetentionPolicy`]: each org's window, from the default, the `[[orgs]]` config and the API's
//! overrides; legal holds; and the floor every read applies.

use super::checkpoint::ChainCheckpoints;
use super::error::RetentionError;
use super::overrides::OverrideStore;
use crate::index::SearchQuery;
use chrono::{DateTime, Duration, Utc};
use codestax_common::time::truncate_to_micros;
use codestax_config::{CollectorConfig, MAX_RETENTION_DAYS, Plan};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Mutex, RwLock};

/// Where an org's `days` come from; the first that applies wins: `api`, `config`, `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `retention.default_days`.
    Default,
    /// The org's `[[orgs]] retention_days`.
    Config,
    /// Set through `PUT /api/v1/orgs/{org}/settings/retention` (enterprise orgs only).
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

/// One org's retention, as of the moment it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgRetention {
    pub org_id: String,
    /// Days records are kept.
    pub days: u32,
    pub source: Source,
    /// `free` for orgs not in the config.
    pub plan: Plan,
    /// While set, nothing of the org expires: nothing is deleted and reads hide nothing.
    pub legal_hold: bool,
    /// `retention.default_days`.
    pub default_days: u32,
}

impl OrgRetention {
    /// Records whose `time` is before this have expired at `now` (they are inside the window
    /// from this instant on, inclusive); `None` under legal hold, when nothing expires. Both the
    /// read floor and the janitor's cutoff are this.
    pub fn expires_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.legal_hold {
            return None;
        }
        Some(truncate_to_micros(now) - Duration::days(i64::from(self.days)))
    }

    /// Whether the org's plan lets it change its retention.
    pub fn plan_allows_changes(&self) -> bool {
        self.plan == Plan::Enterprise
    }
}

/// An org's `[[orgs]]` entry, as far as retention goes.
#[derive(Debug, Clone, Copy)]
struct Configured {
    plan: Plan,
    days: Option<u32>,
    legal_hold: bool,
}

/// Every org's retention: built once from the checked config and the saved overrides, changed
/// only through [`RetentionPolicy::set_days`]. Cheap to query; shared by the API and the janitor.
pub struct RetentionPolicy {
    default_days: u32,
    orgs: HashMap<String, Configured>,
    overrides: RwLock<BTreeMap<String, u32>>,
    store: OverrideStore,
    /// Serialises saves of the overrides file.
    saving: Mutex<()>,
    /// Serialises whole changes (read old, record, save) for [`RetentionPolicy::lock_changes`].
    changes: tokio::sync::Mutex<()>,
    /// What the janitor kept of the records it deleted (`chain-checkpoints.json`).
    checkpoints: ChainCheckpoints,
}

impl RetentionPolicy {
    /// The policy of a checked `config`, with the overrides saved in `dir` (the data dir).
    /// Overrides of orgs that are no longer on the enterprise plan stay on disk but are ignored
    /// (with a warning); an override file that cannot be read is an error.
    pub fn open(config: &CollectorConfig, dir: &Path) -> Result<RetentionPolicy, RetentionError> {
        let store = OverrideStore::new(dir);
        let overrides = store.load()?;
        let checkpoints = ChainCheckpoints::open(dir)?;
        for (org, days) in &overrides {
            if !(1..=MAX_RETENTION_DAYS).contains(days) {
                return Err(RetentionError::State {
                    path: store.path(),
                    message: format!(
                        "org {org:?}: {days} days is not between 1 and {MAX_RETENTION_DAYS}"
                    ),
                });
            }
        }
        let orgs = config
            .orgs
            .iter()
            .map(|o| {
                (
                    o.id.clone(),
                    Configured {
                        plan: o.plan,
                        days: o.retention_days,
                        legal_hold: o.legal_hold,
                    },
                )
            })
            .collect();
        let policy = RetentionPolicy {
            default_days: config.retention.default_days,
            orgs,
            overrides: RwLock::new(overrides),
            store,
            saving: Mutex::new(()),
            changes: tokio::sync::Mutex::new(()),
            checkpoints,
        };
        for org in policy.read_overrides().keys() {
            let plan = policy.configured(org).plan;
            if plan != Plan::Enterprise {
                tracing::warn!(
                    org = org.as_str(),
                    plan = plan.as_str(),
                    "ignoring the retention set through the API: the org is no longer on the enterprise plan"
                );
            }
        }
        Ok(policy)
    }

    /// Each org's chain checkpoint: what retention kept of the records it deleted (saved in the
    /// same data dir).
    pub fn checkpoints(&self) -> &ChainCheckpoints {
        &self.checkpoints
    }

    /// `retention.default_days`.
    pub fn default_days(&self) -> u32 {
        self.default_days
    }

    /// The retention of `org` now. Orgs not in the config are on the free plan with the default.
    pub fn for_org(&self, org: &str) -> OrgRetention {
        let c = self.configured(org);
        let api = if c.plan == Plan::Enterprise {
            self.read_overrides().get(org).copied()
        } else {
            None
        };
        let (days, source) = match (api, c.days) {
            (Some(days), _) => (days, Source::Api),
            (None, Some(days)) => (days, Source::Config),
            (None, None) => (self.default_days, Source::Default),
        };
        OrgRetention {
            org_id: org.to_string(),
            days,
            source,
            plan: c.plan,
            legal_hold: c.legal_hold,
            default_days: self.default_days,
        }
    }

    /// The query a read of `org` runs at `now`: `q` with the org's retention floor, so expired
    /// records are never returned, deleted or not. Every read (search, facets, get, export) goes
    /// through this.
    pub fn scope(&self, org: &str, q: &SearchQuery, now: DateTime<Utc>) -> SearchQuery {
        let mut q = q.clone();
        q.floor = self.for_org(org).expires_before(now);
        q
    }

    /// Held from reading the old value until the new one is saved, so that concurrent changes
    /// are applied, and recorded with their old values, one after the other.
    pub async fn lock_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// `org`'s retention if its plan lets it change it, else [`RetentionError::NotEnterprise`].
    pub fn check_editable(&self, org: &str) -> Result<OrgRetention, RetentionError> {
        let current = self.for_org(org);
        if !current.plan_allows_changes() {
            return Err(RetentionError::NotEnterprise {
                org: org.to_string(),
                plan: current.plan,
                default_days: self.default_days,
            });
        }
        Ok(current)
    }

    /// `days` if it is a valid retention (1 to 3650).
    pub fn check_days(days: i64) -> Result<u32, RetentionError> {
        u32::try_from(days)
            .ok()
            .filter(|d| (1..=MAX_RETENTION_DAYS).contains(d))
            .ok_or(RetentionError::DaysOutOfRange {
                days,
                max: MAX_RETENTION_DAYS,
            })
    }

    /// Sets `org`'s retention to `days`: saved atomically under the data dir, then in effect
    /// (it wins over the config). Blocking (fsync). Refused unless the org is on the enterprise
    /// plan and `days` is 1 to 3650.
    pub fn set_days(&self, org: &str, days: u32) -> Result<OrgRetention, RetentionError> {
        let Ok(set) = self.set_days_recorded(org, days, || Ok::<(), Infallible>(()))?;
        Ok(set)
    }

    /// As [`RetentionPolicy::set_days`] for a change that is recorded: the new overrides file is
    /// written and fsynced beside the old one, then `record` makes the change's audit entry
    /// durable, then the new file replaces the old. A full disk refuses the change before it is
    /// recorded; a refused record (`Ok(Err(_))`) leaves the retention as it was.
    pub fn set_days_recorded<E>(
        &self,
        org: &str,
        days: u32,
        record: impl FnOnce() -> Result<(), E>,
    ) -> Result<Result<OrgRetention, E>, RetentionError> {
        self.check_editable(org)?;
        let days = Self::check_days(i64::from(days))?;
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.read_overrides().clone();
        next.insert(org.to_string(), days);
        let prepared = self.store.prepare(&next)?;
        if let Err(e) = record() {
            return Ok(Err(e));
        }
        self.store.commit(prepared)?;
        *self.overrides.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(Ok(self.for_org(org)))
    }

    /// The overrides set through the API, per org.
    pub fn overrides(&self) -> BTreeMap<String, u32> {
        self.read_overrides().clone()
    }

    /// Cluster mode: the node's cache of the cluster's overrides made `days` (entries out of
    /// range skipped with a warning), saved like [`RetentionPolicy::set_days`] if it changed.
    /// Blocking (fsync). Returns whether it changed.
    pub fn replace_overrides(&self, days: BTreeMap<String, u32>) -> Result<bool, RetentionError> {
        let days: BTreeMap<String, u32> = days
            .into_iter()
            .filter(|(org, d)| {
                let ok = (1..=MAX_RETENTION_DAYS).contains(d);
                if !ok {
                    tracing::warn!(
                        org = org.as_str(),
                        days = d,
                        "ignoring an out-of-range retention override"
                    );
                }
                ok
            })
            .collect();
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        if *self.read_overrides() == days {
            return Ok(false);
        }
        self.store.save(&days)?;
        *self.overrides.write().unwrap_or_else(|e| e.into_inner()) = days;
        Ok(true)
    }

    fn configured(&self, org: &str) -> Configured {
        self.orgs.get(org).copied().unwrap_or(Configured {
            plan: Plan::Free,
            days: None,
            legal_hold: false,
        })
    }

    fn read_overrides(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, u32>> {
        self.overrides.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use codestax_config::OrgConfig;

    fn org(id: &str, plan: Plan, days: Option<u32>, legal_hold: bool) -> OrgConfig {
        OrgConfig {
            id: id.into(),
            name: None,
            plan,
            retention_days: days,
            legal_hold,
        }
    }

    fn config() -> CollectorConfig {
        let mut c = CollectorConfig::default();
        c.retention.default_days = 90;
        c.orgs = vec![
            org("acme", Plan::Enterprise, Some(365), false),
            org("initech", Plan::Enterprise, None, false),
            org("globex", Plan::Team, None, false),
            org("held", Plan::Free, None, true),
        ];
        c
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
    }

    #[test]
    fn sources_plans_and_floors() {
        let dir = tempfile::tempdir().unwrap();
        let p = RetentionPolicy::open(&config(), dir.path()).unwrap();
        let acme = p.for_org("acme");
        assert_eq!(
            (acme.days, acme.source, acme.plan),
            (365, Source::Config, Plan::Enterprise)
        );
        let unknown = p.for_org("nobody");
        assert_eq!(
            (
                unknown.days,
                unknown.source,
                unknown.plan,
                unknown.legal_hold
            ),
            (90, Source::Default, Plan::Free, false)
        );
        assert_eq!(
            unknown.expires_before(now()),
            Some(Utc.with_ymd_and_hms(2026, 8, 29, 12, 0, 0).unwrap())
        );
        assert_eq!(p.for_org("held").expires_before(now()), None);

        let q = SearchQuery {
            since: Some(Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap()),
            ..SearchQuery::default()
        };
        let scoped = p.scope("globex", &q, now());
        assert_eq!(scoped.since, q.since, "the client's since is kept");
        assert_eq!(
            scoped.floor,
            Some(Utc.with_ymd_and_hms(2026, 8, 29, 12, 0, 0).unwrap())
        );
        assert_eq!(p.scope("held", &q, now()).floor, None);
    }

    #[test]
    fn only_enterprise_orgs_change_and_the_change_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = RetentionPolicy::open(&config(), dir.path()).unwrap();
        for org in ["globex", "held", "nobody"] {
            let err = p.set_days(org, 30).unwrap_err();
            assert!(
                matches!(err, RetentionError::NotEnterprise { .. }),
                "{org}: {err}"
            );
            assert!(
                err.to_string()
                    .starts_with("extended retention needs the enterprise plan"),
                "{err}"
            );
        }
        for bad in [0, 3651, -1, i64::from(u32::MAX) + 1] {
            assert!(matches!(
                RetentionPolicy::check_days(bad),
                Err(RetentionError::DaysOutOfRange { .. })
            ));
        }
        assert_eq!(RetentionPolicy::check_days(3650).unwrap(), 3650);
        let acme = p.set_days("acme", 400).unwrap();
        assert_eq!((acme.days, acme.source), (400, Source::Api));
        // Enterprise orgs may also shorten, below the default.
        assert_eq!(p.set_days("initech", 7).unwrap().days, 7);

        let p = RetentionPolicy::open(&config(), dir.path()).unwrap();
        assert_eq!(
            (p.for_org("acme").days, p.for_org("acme").source),
            (400, Source::Api)
        );
        assert_eq!(p.for_org("initech").days, 7);

        // Moved off enterprise in the config: the override no longer applies.
        let mut downgraded = config();
        downgraded.orgs[0].plan = Plan::Team;
        downgraded.orgs[0].retention_days = None;
        let p = RetentionPolicy::open(&downgraded, dir.path()).unwrap();
        assert_eq!(
            (p.for_org("acme").days, p.for_org("acme").source),
            (90, Source::Default)
        );
    }

    #[test]
    fn an_override_out_of_range_on_disk_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(super::super::overrides::FILE),
            br#"{"version": 1, "days": {"acme": 0}}"#,
        )
        .unwrap();
        let err = RetentionPolicy::open(&config(), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"acme\": 0 days"), "{err}");
    }
}
