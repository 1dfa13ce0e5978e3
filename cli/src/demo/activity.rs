//! Generated activity for the demo: believable sessions of an org's people and systems across
//! every category of the spec (logins, keys, repositories, scans, triage, team, settings,
//! integrations). Deterministic for a seed, so a re-run regenerates the same history and the
//! collector's dedupe keeps it once.

use chrono::{DateTime, Duration, Utc};
use codestax_common::{AuditRecord, Rules, record_from_value};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// One demo org: who works there and what they work on.
pub struct DemoOrg {
    pub id: &'static str,
    pub name: &'static str,
    pub domain: &'static str,
    pub people: &'static [(&'static str, &'static str)],
    pub repositories: &'static [&'static str],
}

pub const ORGS: &[DemoOrg] = &[
    DemoOrg {
        id: "acme",
        name: "Acme Corp",
        domain: "acme.example",
        people: &[
            ("u-ada", "Ada Lovelace"),
            ("u-bob", "Bob Stone"),
            ("u-cy", "Cy Young"),
            ("u-dee", "Dee Rivera"),
        ],
        repositories: &["acme/api", "acme/web", "acme/payments", "acme/infra"],
    },
    DemoOrg {
        id: "globex",
        name: "Globex",
        domain: "globex.example",
        people: &[("u-hank", "Hank Scorpio"), ("u-mona", "Mona Park")],
        repositories: &["globex/core", "globex/mobile"],
    },
    DemoOrg {
        id: "initech",
        name: "Initech",
        domain: "initech.example",
        people: &[("u-pete", "Peter Gibbons"), ("u-sam", "Samir N.")],
        repositories: &["initech/tps-reports"],
    },
];

const IPS: &[&str] = &[
    "203.0.113.10",
    "198.51.100.23",
    "192.0.2.77",
    "2001:db8::42",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Firefox/132.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0",
    "codestax-cli/0.1",
];
const SCAN_TYPES: &[&str] = &["sast", "secrets", "dependencies", "iac"];
const STATUSES: &[&str] = &[
    "open",
    "confirmed",
    "false_positive",
    "fixed",
    "accepted_risk",
];
const ROLES: &[&str] = &["MEMBER", "ORG_ADMIN", "ORG_OWNER"];

/// A source of activity for one org.
pub struct Activity<'a> {
    org: &'a DemoOrg,
    rng: StdRng,
    rules: Rules,
}

impl<'a> Activity<'a> {
    pub fn new(org: &'a DemoOrg, seed: u64) -> Self {
        let mut rules = Rules::new();
        rules.now = Utc::now();
        Activity {
            org,
            rng: StdRng::seed_from_u64(seed),
            rules,
        }
    }

    /// `n` records spread over the `days` before `end`, oldest first, with ids `<prefix>-<i>`.
    /// One of `choices` that is not `old`: a change always changes something.
    fn other_than(&mut self, choices: &[&'static str], old: &str) -> &'static str {
        let others: Vec<&'static str> = choices.iter().copied().filter(|c| *c != old).collect();
        others[self.rng.random_range(0..others.len())]
    }

    pub fn history(
        &mut self,
        prefix: &str,
        n: usize,
        days: i64,
        end: DateTime<Utc>,
    ) -> Vec<AuditRecord> {
        let span = Duration::days(days).num_seconds();
        let mut times: Vec<i64> = (0..n).map(|_| self.rng.random_range(0..span)).collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times
            .into_iter()
            .enumerate()
            .map(|(i, ago)| self.event(&format!("{prefix}-{i}"), end - Duration::seconds(ago)))
            .collect()
    }

    /// One event at `time` with id `id`.
    pub fn event(&mut self, id: &str, time: DateTime<Utc>) -> AuditRecord {
        let org = self.org;
        let (person_id, person) = org.people[self.rng.random_range(0..org.people.len())];
        let email = format!(
            "{}@{}",
            person.split(' ').next().unwrap_or("x").to_lowercase(),
            org.domain
        );
        let repo = org.repositories[self.rng.random_range(0..org.repositories.len())];
        let ip = IPS[self.rng.random_range(0..IPS.len())];
        let agent = AGENTS[self.rng.random_range(0..AGENTS.len())];
        let mut actor = json!({"id": person_id, "name": person, "email": email, "kind": "user"});
        let mut outcome = "success";
        let mut repository = Value::Null;
        let mut message = Value::Null;
        let mut metadata = json!({"ip": ip, "user_agent": agent});
        let pick = self.rng.random_range(0..100);
        let (action, target) = match pick {
            0..=14 => {
                if self.rng.random_bool(0.12) {
                    outcome = "failure";
                    message = json!("Wrong password");
                }
                (
                    "auth.login",
                    json!({"kind": "user", "id": person_id, "name": email}),
                )
            }
            15..=19 => (
                "auth.logout",
                json!({"kind": "user", "id": person_id, "name": email}),
            ),
            20..=21 => {
                let key = format!("key_{:08x}", self.rng.random::<u32>());
                metadata["role"] = json!("INGEST");
                (
                    "auth.api_key_created",
                    json!({"kind": "api_key", "id": key, "name": "ci runner"}),
                )
            }
            22 => {
                let key = format!("key_{:08x}", self.rng.random::<u32>());
                (
                    "auth.api_key_revoked",
                    json!({"kind": "api_key", "id": key, "name": "old laptop"}),
                )
            }
            23..=25 => {
                repository = json!(repo);
                (
                    "repository.connected",
                    json!({"kind": "repository", "id": repo, "name": repo}),
                )
            }
            26 => {
                repository = json!(repo);
                (
                    "repository.disconnected",
                    json!({"kind": "repository", "id": repo, "name": repo}),
                )
            }
            27..=29 => {
                repository = json!(repo);
                metadata["changes"] =
                    json!([{"field": "default_branch", "old": "master", "new": "main"}]);
                (
                    "repository.settings_changed",
                    json!({"kind": "repository", "id": repo, "name": repo}),
                )
            }
            30..=59 => {
                repository = json!(repo);
                let scan = format!("s-{}", self.rng.random_range(1000..99999));
                let scan_type = SCAN_TYPES[self.rng.random_range(0..SCAN_TYPES.len())];
                metadata["scan_type"] = json!(scan_type);
                let target = json!({"kind": "scan", "id": scan, "name": format!("{repo}@main")});
                match self.rng.random_range(0..10) {
                    0..=3 => ("scan.triggered", target),
                    4..=7 => {
                        actor =
                            json!({"id": "scanner", "name": "CodeStax scanner", "kind": "system"});
                        metadata.as_object_mut().map(|m| m.remove("user_agent"));
                        metadata["findings"] = json!(self.rng.random_range(0..12));
                        ("scan.completed", target)
                    }
                    8 => {
                        actor =
                            json!({"id": "scanner", "name": "CodeStax scanner", "kind": "system"});
                        outcome = "failure";
                        message = json!("Clone failed: repository not reachable");
                        ("scan.failed", target)
                    }
                    _ => ("scan.cancelled", target),
                }
            }
            60..=74 => {
                repository = json!(repo);
                let finding = format!("F-{}", self.rng.random_range(100..9999));
                let target = json!({"kind": "finding", "id": finding, "name": "Hard-coded secret"});
                match self.rng.random_range(0..3) {
                    0 => {
                        let old = STATUSES[self.rng.random_range(0..2)];
                        let new = self.other_than(&STATUSES[1..], old);
                        metadata["changes"] = json!([{"field": "status", "old": old, "new": new}]);
                        ("finding.triaged", target)
                    }
                    1 => {
                        metadata["reason"] = json!("test fixture");
                        ("finding.ignored", target)
                    }
                    _ => {
                        message = json!("Looks like the key was rotated last week");
                        ("finding.commented", target)
                    }
                }
            }
            75..=84 => {
                let (other_id, other) = org.people[self.rng.random_range(0..org.people.len())];
                let other_email = format!(
                    "{}@{}",
                    other.split(' ').next().unwrap_or("x").to_lowercase(),
                    org.domain
                );
                let target = json!({"kind": "user", "id": other_id, "name": other_email});
                match self.rng.random_range(0..3) {
                    0 => {
                        metadata["role"] = json!("MEMBER");
                        ("team.member_invited", target)
                    }
                    1 => {
                        let old = ROLES[self.rng.random_range(0..ROLES.len())];
                        let new = self.other_than(ROLES, old);
                        metadata["changes"] = json!([{"field": "role", "old": old, "new": new}]);
                        ("team.role_changed", target)
                    }
                    _ => ("team.member_removed", target),
                }
            }
            85..=92 => {
                let target_org = json!({"kind": "organization", "id": org.id, "name": org.name});
                match self.rng.random_range(0..3) {
                    0 => {
                        metadata["changes"] =
                            json!([{"field": "sso_required", "old": false, "new": true}]);
                        ("settings.org_updated", target_org)
                    }
                    1 => (
                        "settings.webhook_configured",
                        json!({"kind": "webhook", "id": "wh-1", "name": format!("https://hooks.{}/codestax", org.domain)}),
                    ),
                    _ => {
                        metadata["changes"] =
                            json!([{"field": "block_on", "old": "high", "new": "critical"}]);
                        (
                            "settings.policy_changed",
                            json!({"kind": "policy", "id": "p-merge", "name": "Block merges on findings"}),
                        )
                    }
                }
            }
            _ => match self.rng.random_range(0..4) {
                0 => (
                    "integration.jira_linked",
                    json!({"kind": "integration", "id": "jira", "name": format!("{}.atlassian.example", org.id)}),
                ),
                1 => {
                    actor = json!({"id": "oauth-refresher", "name": "Token refresher", "kind": "system"});
                    (
                        "integration.oauth_token_refreshed",
                        json!({"kind": "integration", "id": "github", "name": "GitHub App"}),
                    )
                }
                2 => (
                    "integration.webhook_enabled",
                    json!({"kind": "webhook", "id": "wh-slack", "name": "Slack #security"}),
                ),
                _ => (
                    "integration.webhook_disabled",
                    json!({"kind": "webhook", "id": "wh-slack", "name": "Slack #security"}),
                ),
            },
        };
        let value = json!({
            "id": id,
            "org_id": org.id,
            "time": codestax_common::time::format_rfc3339(&time),
            "actor": actor,
            "action": action,
            "target": target,
            "repository": repository,
            "outcome": outcome,
            "message": message,
            "metadata": metadata,
        });
        record_from_value(value, &self.rules).expect("generated demo records are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codestax_common::Category;
    use std::collections::BTreeSet;

    #[test]
    fn history_is_valid_deterministic_and_covers_every_category() {
        let end = Utc::now();
        let a = Activity::new(&ORGS[0], 7).history("h", 2000, 30, end);
        let b = Activity::new(&ORGS[0], 7).history("h", 2000, 30, end);
        assert_eq!(a, b);
        let categories: BTreeSet<&str> = a.iter().map(|r| r.category.as_str()).collect();
        for c in Category::ALL.iter().filter(|c| **c != Category::AuditLog) {
            assert!(categories.contains(c.as_str()), "{c} is generated");
        }
        assert!(a.windows(2).all(|w| w[0].time <= w[1].time), "oldest first");
        assert!(
            a.iter()
                .all(|r| r.time <= end && r.time > end - Duration::days(30))
        );
        let changes: Vec<_> = a.iter().flat_map(|r| &r.metadata.changes).collect();
        assert!(changes.len() > 100, "{} changes", changes.len());
        for c in changes {
            assert_ne!(c.old, c.new, "a change with old = new: {c:?}");
        }
    }
}
