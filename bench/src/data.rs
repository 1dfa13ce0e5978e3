//! The synthetic audit records both systems get: deterministic from (batch, position), about
//! 500 bytes of JSON each, with realistic mixes of actions, users, repositories and metadata.
//!
//! A [`Corpus`] is a list of batches. Every batch belongs to one org (an ingest key sends for
//! its own org only) and covers one slice of the corpus's time span, in batch order, so sending
//! the batches in order is a time-ordered backfill, as records arrive in production.

use chrono::{DateTime, SecondsFormat, Utc};
use std::io::Write;

/// One day in microseconds, the unit of record times.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// Now, in µs since the epoch (the unit of record times).
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// A small, fast, seedable generator (SplitMix64): the same numbers on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0), for any `n`: the 128-bit product cannot overflow (the
    /// former `((x >> 32) * n) >> 32` wrapped for n > 2^32 and gave values below 2^32 only).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Skewed towards 0: `n * u²`, so a few users and repositories do most of the work.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let u = self.unit();
        ((n as f64 * u * u) as u64).min(n - 1)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Actions with their relative frequency.
const ACTIONS: &[(&str, u32)] = &[
    ("auth.login", 15),
    ("auth.logout", 6),
    ("repository.connected", 2),
    ("repository.disconnected", 1),
    ("repository.settings_changed", 3),
    ("scan.triggered", 15),
    ("scan.completed", 14),
    ("scan.failed", 2),
    ("scan.cancelled", 1),
    ("finding.triaged", 12),
    ("finding.ignored", 4),
    ("finding.commented", 8),
    ("team.member_invited", 2),
    ("team.role_changed", 2),
    ("team.member_removed", 1),
    ("settings.org_updated", 1),
    ("settings.webhook_configured", 1),
    ("settings.policy_changed", 2),
    ("settings.retention_changed", 1),
    ("integration.jira_linked", 2),
    ("integration.oauth_token_refreshed", 4),
    ("integration.webhook_enabled", 1),
    ("integration.webhook_disabled", 1),
];

/// The categories of `ACTIONS`, for filter queries.
pub const CATEGORIES: &[&str] = &[
    "auth",
    "repository",
    "scan",
    "finding",
    "team",
    "settings",
    "integration",
];

const FIRST: &[&str] = &[
    "ada", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "karl",
    "lena", "mallory", "nina", "oscar", "peggy", "quinn", "rupert", "sybil", "trent", "ursula",
    "victor", "wendy", "xavier", "yara", "zoe",
];
const LAST: &[&str] = &[
    "lovelace",
    "hopper",
    "turing",
    "knuth",
    "ritchie",
    "thompson",
    "liskov",
    "hamilton",
    "dijkstra",
    "lamport",
    "torvalds",
    "stroustrup",
    "kernighan",
    "backus",
    "mccarthy",
    "wirth",
];
const REPO_WORDS: &[&str] = &[
    "api",
    "web",
    "infra",
    "billing",
    "auth",
    "mobile",
    "search",
    "gateway",
    "payments",
    "docs",
    "scanner",
    "worker",
    "frontend",
    "backend",
    "terraform",
    "charts",
    "sdk",
    "cli",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "codestax-cli/2.4.1 (linux; amd64)",
    "codestax-action/1.9.0 (github-actions)",
];
const SCAN_TYPES: &[&str] = &["sast", "sca", "secrets", "iac", "container"];
const CWES: &[&str] = &[
    "CWE-79", "CWE-89", "CWE-22", "CWE-798", "CWE-502", "CWE-918", "CWE-327", "CWE-611",
];
/// Words of the free-text part of messages; the common-word queries
/// ([`Kind::TextCommon`](crate::search::Kind::TextCommon)) pick from these.
pub const VOCAB: &[&str] = &[
    "dependency",
    "upgrade",
    "pipeline",
    "branch",
    "release",
    "hotfix",
    "staging",
    "production",
    "nightly",
    "manual",
    "scheduled",
    "webhook",
    "baseline",
    "regression",
    "policy",
    "exception",
    "approved",
    "reviewed",
    "escalated",
    "deferred",
    "critical",
    "high",
    "medium",
    "low",
    "injection",
    "traversal",
    "credential",
    "token",
    "secret",
    "certificate",
    "container",
    "image",
    "kubernetes",
    "terraform",
    "lambda",
    "bucket",
    "database",
    "cache",
    "queue",
    "gateway",
    "frontend",
    "backend",
    "mobile",
    "android",
    "ios",
    "desktop",
    "library",
    "framework",
    "monorepo",
    "submodule",
    "vendored",
    "license",
    "compliance",
    "soc2",
    "gdpr",
    "hipaa",
    "audit",
    "rotation",
    "expiry",
    "onboarding",
    "offboarding",
    "contractor",
    "oncall",
    "incident",
    "postmortem",
    "rollback",
    "canary",
    "feature",
    "flag",
    "migration",
    "schema",
    "index",
    "timeout",
    "retry",
    "quota",
    "limit",
    "throttle",
    "backlog",
    "sprint",
    "milestone",
    "roadmap",
    "customer",
    "tenant",
    "region",
    "europe",
    "america",
    "asia",
    "mirror",
    "fork",
    "upstream",
    "patch",
    "advisory",
    "cve",
    "sbom",
    "provenance",
    "signature",
    "attestation",
    "sandbox",
];

/// One org of a corpus and the size of its pools.
#[derive(Debug, Clone)]
pub struct OrgSpec {
    pub id: String,
    pub records: u64,
    pub users: u64,
    pub repos: u64,
}

/// One batch: the org it belongs to and the sequence number of its first record in that org.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    pub org: u32,
    pub first_seq: u64,
}

/// A deterministic set of records, as batches.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub orgs: Vec<OrgSpec>,
    pub batches: Vec<Batch>,
    pub batch_size: usize,
    /// Times run over `[start, start + span)`, in microseconds since the epoch.
    pub start_micros: i64,
    pub span_micros: i64,
    /// Times drawn at random over the whole span instead of following the batch order (a
    /// backfill out of order: every batch touches every week), but for each batch's last record
    /// (see `live_micros`).
    pub scattered: bool,
    /// The `(start, span)` times follow in batch order. In a scattered corpus each batch's last
    /// record keeps its time there, the last minutes: a live record amid the backfill, which the
    /// current week's freshness under a spread load is measured on whatever the weekday.
    live_micros: (i64, i64),
    seed: u64,
}

/// One generated record, in the fields both systems store.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub org_id: String,
    pub time_micros: i64,
    pub actor_id: String,
    pub actor_name: String,
    /// `None` for API-key actors.
    pub actor_email: Option<String>,
    pub actor_kind: &'static str,
    pub action: &'static str,
    pub target_kind: &'static str,
    pub target_id: String,
    pub target_name: String,
    pub repository: Option<String>,
    pub outcome: &'static str,
    pub message: String,
    pub ip: String,
    pub user_agent: &'static str,
    pub scan_type: Option<&'static str>,
    /// (field, old, new)
    pub change: Option<(&'static str, &'static str, &'static str)>,
    pub request_id: String,
}

impl Record {
    pub fn category(&self) -> &'static str {
        self.action.split('.').next().unwrap_or_default()
    }

    /// The metadata object as JSON.
    pub fn metadata_json(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            r#"{{"ip":"{}","user_agent":"{}""#,
            self.ip, self.user_agent
        );
        if let Some(s) = self.scan_type {
            let _ = write!(out, r#","scan_type":"{s}""#);
        }
        if let Some((field, old, new)) = self.change {
            let _ = write!(
                out,
                r#","changes":[{{"field":"{field}","old":"{old}","new":"{new}"}}]"#
            );
        }
        let _ = write!(out, r#","request_id":"{}"}}"#, self.request_id);
    }

    /// The record as one NDJSON line (the collector's native ingest format), newline included.
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            r#"{{"id":"{}","org_id":"{}","time":"{}","actor":{{"id":"{}","name":"{}","#,
            self.id,
            self.org_id,
            rfc3339(self.time_micros),
            self.actor_id,
            self.actor_name
        );
        if let Some(email) = &self.actor_email {
            let _ = write!(out, r#""email":"{email}","#);
        }
        let _ = write!(
            out,
            r#""kind":"{}"}},"action":"{}","target":{{"kind":"{}","id":"{}","name":"{}"}},"#,
            self.actor_kind, self.action, self.target_kind, self.target_id, self.target_name
        );
        if let Some(repo) = &self.repository {
            let _ = write!(out, r#""repository":"{repo}","#);
        }
        let _ = write!(
            out,
            r#""outcome":"{}","message":"{}","metadata":"#,
            self.outcome, self.message
        );
        self.metadata_json(out);
        out.extend_from_slice(b"}\n");
    }

    /// The record as one row of PostgreSQL's COPY text format, in [`COPY_COLUMNS`] order.
    /// Generated values hold no tab, newline or backslash, so nothing needs escaping.
    pub fn write_copy_row(&self, out: &mut Vec<u8>) {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "\\N".into());
        let _ = write!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t",
            self.id,
            self.org_id,
            rfc3339(self.time_micros),
            self.actor_id,
            self.actor_name,
            opt(&self.actor_email),
            self.actor_kind,
            self.action,
            self.category(),
            self.target_kind,
            self.target_id,
            self.target_name,
            opt(&self.repository),
            self.outcome,
            self.message,
        );
        self.metadata_json(out);
        out.push(b'\n');
    }
}

/// Column order of [`Record::write_copy_row`].
pub const COPY_COLUMNS: &str = "id, org_id, time, actor_id, actor_name, actor_email, actor_kind, action, category, target_kind, target_id, target_name, repository, outcome, message, metadata";

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Corpus {
    /// `total` records (a multiple of `batch_size`) over `orgs` orgs: the first holds `largest`,
    /// the others share the rest in sizes falling as 1/√rank. Times span the `days` before
    /// `end_micros`.
    pub fn search(
        total: u64,
        orgs: usize,
        largest: u64,
        batch_size: usize,
        end_micros: i64,
        days: i64,
    ) -> Corpus {
        let b = batch_size as u64;
        let total = total / b * b;
        let largest = (largest.min(total) / b * b).max(b.min(total));
        let mut sizes = vec![largest];
        if orgs > 1 {
            let rest = total - largest;
            let weights: Vec<f64> = (1..orgs).map(|i| 1.0 / (i as f64).sqrt()).collect();
            let sum: f64 = weights.iter().sum();
            let mut given = 0;
            // Every org gets at least one batch when there are enough to go round.
            let floor = if rest >= b * weights.len() as u64 {
                b
            } else {
                0
            };
            for w in &weights {
                let n = ((((rest as f64 * w / sum) as u64) / b) * b).max(floor);
                sizes.push(n);
                given += n;
            }
            // The rounding's remainder (or excess, from the floor) goes to the second org.
            sizes[1] = (sizes[1] + rest).saturating_sub(given);
        }
        let span = days * DAY_MICROS;
        Corpus::build(sizes, batch_size, end_micros - span, span, 1)
    }

    /// [`Corpus::recent`] over the 10 minutes before now: the ingest benches' current-week load.
    pub fn last_ten_minutes(total: u64, orgs: usize, batch_size: usize) -> Corpus {
        Corpus::recent(total, orgs, batch_size, now_micros(), 600_000_000)
    }

    /// `total` records spread evenly over `orgs` orgs, with times over the `span_micros` before
    /// `end_micros` (for ingest: records of the last minutes, as in production).
    pub fn recent(
        total: u64,
        orgs: usize,
        batch_size: usize,
        end_micros: i64,
        span_micros: i64,
    ) -> Corpus {
        let b = batch_size as u64;
        let batches = total.div_ceil(b);
        let sizes: Vec<u64> = (0..orgs as u64)
            .map(|i| (batches / orgs as u64 + u64::from(i < batches % orgs as u64)) * b)
            .collect();
        Corpus::build(sizes, batch_size, end_micros - span_micros, span_micros, 2)
    }

    /// The same corpus with record times drawn uniformly over the `span_micros` ending where
    /// its span ends (an out-of-order backfill: every batch touches the whole span).
    pub fn scattered_over(mut self, span_micros: i64) -> Corpus {
        let end = self.start_micros + self.span_micros;
        self.live_micros = (self.start_micros, self.span_micros);
        self.start_micros = end - span_micros;
        self.span_micros = span_micros;
        self.scattered = true;
        self
    }

    fn build(sizes: Vec<u64>, batch_size: usize, start: i64, span: i64, seed: u64) -> Corpus {
        let orgs: Vec<OrgSpec> = sizes
            .iter()
            .enumerate()
            .map(|(i, &records)| OrgSpec {
                id: format!("org-{i:03}"),
                records,
                users: (records / 2000).clamp(5, 400),
                repos: (records / 5000).clamp(3, 300),
            })
            .collect();
        let mut order: Vec<u32> = Vec::new();
        for (i, o) in orgs.iter().enumerate() {
            order.extend(std::iter::repeat_n(
                i as u32,
                (o.records / batch_size as u64) as usize,
            ));
        }
        let mut rng = Rng::new(seed);
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut next = vec![0u64; orgs.len()];
        let batches = order
            .into_iter()
            .map(|org| {
                let first_seq = next[org as usize];
                next[org as usize] += batch_size as u64;
                Batch { org, first_seq }
            })
            .collect();
        Corpus {
            orgs,
            batches,
            batch_size,
            start_micros: start,
            span_micros: span,
            scattered: false,
            live_micros: (start, span),
            seed,
        }
    }

    pub fn total(&self) -> u64 {
        (self.batches.len() * self.batch_size) as u64
    }

    pub fn org_ids(&self) -> Vec<String> {
        self.orgs.iter().map(|o| o.id.clone()).collect()
    }

    /// The time of record `j` of batch `b`, and the generator that draws the rest of it.
    fn time_and_rng(&self, b: usize, j: usize) -> (i64, Rng) {
        let batch = self.batches[b];
        let seq = batch.first_seq + j as u64;
        let mut rng = Rng::new(
            self.seed
                .wrapping_mul(0x1000_0000_01b3)
                .wrapping_add((u64::from(batch.org) << 40) ^ seq),
        );
        let n = self.batches.len() as i64;
        let time = if self.scattered && j + 1 < self.batch_size {
            self.start_micros + rng.below(self.span_micros.max(1) as u64) as i64
        } else {
            let (start, span) = self.live_micros;
            let slot = span / n.max(1);
            let step = (slot / self.batch_size as i64).max(1);
            start + span * b as i64 / n.max(1) + step * j as i64 + rng.below(step as u64) as i64
        };
        (time, rng)
    }

    /// The time of record `j` of batch `b` (what [`Corpus::record`] gives it), cheaply.
    pub fn time(&self, b: usize, j: usize) -> i64 {
        self.time_and_rng(b, j).0
    }

    /// Record `j` of batch `b`.
    pub fn record(&self, b: usize, j: usize) -> Record {
        let batch = self.batches[b];
        let org = &self.orgs[batch.org as usize];
        let (time, mut rng) = self.time_and_rng(b, j);

        let user = rng.skewed(org.users);
        let first = FIRST[user as usize % FIRST.len()];
        let last = LAST[(user as usize / FIRST.len()) % LAST.len()];
        let action = weighted_action(&mut rng);
        let api_key_actor = action.starts_with("scan.") && rng.below(4) == 0;
        let (actor_id, actor_name, actor_email, actor_kind) = if api_key_actor {
            (
                format!("key_ci_{}", org.id),
                "CI pipeline".to_string(),
                None,
                "api_key",
            )
        } else {
            (
                format!("u-{}-{user}", org.id),
                format!("{} {}", title(first), title(last)),
                Some(format!("{first}.{last}{user}@{}.example", org.id)),
                "user",
            )
        };
        let repo_n = rng.skewed(org.repos);
        let repo = format!(
            "{}/{}-{repo_n}",
            org.id,
            REPO_WORDS[repo_n as usize % REPO_WORDS.len()]
        );
        let category = action.split('.').next().unwrap_or_default();
        let scan_type = (category == "scan").then(|| rng.pick(SCAN_TYPES));
        let mut change = None;
        let (target_kind, target_id, target_name, repository) = match category {
            "scan" => (
                "scan",
                format!("scan-{:x}", rng.next_u64() >> 36),
                repo.clone(),
                Some(repo.clone()),
            ),
            "finding" => (
                "finding",
                format!("FND-{}", rng.below(200_000)),
                format!("{} in src/{}.rs", rng.pick(CWES), rng.pick(VOCAB)),
                Some(repo.clone()),
            ),
            "repository" => {
                change = (action == "repository.settings_changed").then_some((
                    "default_branch",
                    "master",
                    "main",
                ));
                (
                    "repository",
                    format!("repo-{repo_n}"),
                    repo.clone(),
                    Some(repo.clone()),
                )
            }
            "team" => {
                let other = rng.below(org.users);
                change = (action == "team.role_changed").then_some(("role", "member", "admin"));
                (
                    "user",
                    format!("u-{}-{other}", org.id),
                    format!(
                        "{}.{}{other}@{}.example",
                        FIRST[other as usize % FIRST.len()],
                        LAST[(other as usize / FIRST.len()) % LAST.len()],
                        org.id
                    ),
                    None,
                )
            }
            "settings" => {
                change = Some(("retention_days", "90", "365"));
                (
                    "policy",
                    format!("policy-{}", rng.below(20)),
                    "org policy".into(),
                    None,
                )
            }
            "integration" => (
                "integration",
                format!("int-{}", rng.below(10)),
                "jira".to_string(),
                None,
            ),
            _ => ("organization", org.id.clone(), org.id.clone(), None),
        };
        let outcome = if rng.below(10) == 0 {
            "failure"
        } else {
            "success"
        };
        let mut message = format!(
            "{} {} by {}",
            action.replace('.', " "),
            target_name,
            actor_name
        );
        for _ in 0..4 {
            message.push(' ');
            message.push_str(rng.pick(VOCAB));
        }
        let ip = if user.is_multiple_of(2) {
            format!("198.51.100.{}", user % 250 + 1)
        } else {
            format!("203.0.113.{}", user % 250 + 1)
        };
        let request_id = format!("{:016x}", rng.next_u64());
        // Random (from the record's own seed), like the ids agents derive for records without
        // one (32 hex digits of a hash) or UUIDs: they cost the index more than sequential ids.
        let id = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        Record {
            id,
            org_id: org.id.clone(),
            time_micros: time,
            actor_id,
            actor_name,
            actor_email,
            actor_kind,
            action,
            target_kind,
            target_id,
            target_name,
            repository,
            outcome,
            message,
            ip,
            user_agent: rng.pick(USER_AGENTS),
            scan_type,
            change,
            request_id,
        }
    }

    /// Batch `b` as an NDJSON body.
    pub fn ndjson_batch(&self, b: usize, out: &mut Vec<u8>) {
        out.clear();
        for j in 0..self.batch_size {
            self.record(b, j).write_ndjson(out);
        }
    }

    /// Batch `b` as COPY text rows.
    pub fn copy_batch(&self, b: usize, out: &mut Vec<u8>) {
        out.clear();
        for j in 0..self.batch_size {
            self.record(b, j).write_copy_row(out);
        }
    }

    /// The batches of org `org`, in order.
    pub fn batches_of(&self, org: usize) -> Vec<usize> {
        (0..self.batches.len())
            .filter(|&b| self.batches[b].org as usize == org)
            .collect()
    }

    /// The email of a user of `org` drawn like the records draw them.
    pub fn user_email(&self, org: usize, rng: &mut Rng) -> String {
        let o = &self.orgs[org];
        let user = rng.skewed(o.users);
        let first = FIRST[user as usize % FIRST.len()];
        let last = LAST[(user as usize / FIRST.len()) % LAST.len()];
        format!("{first}.{last}{user}@{}.example", o.id)
    }
}

fn weighted_action(rng: &mut Rng) -> &'static str {
    let total: u32 = ACTIONS.iter().map(|(_, w)| w).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for (a, w) in ACTIONS {
        if x < *w {
            return a;
        }
        x -= w;
    }
    ACTIONS[0].0
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_valid_json_of_about_500_bytes() {
        let c = Corpus::search(20_000, 5, 8_000, 1000, 1_800_000_000_000_000, 90);
        assert_eq!(c.total(), 20_000);
        assert_eq!(c.orgs[0].records, 8_000);
        assert_eq!(c.orgs.iter().map(|o| o.records).sum::<u64>(), 20_000);
        let mut a = Vec::new();
        let mut b = Vec::new();
        c.ndjson_batch(3, &mut a);
        c.ndjson_batch(3, &mut b);
        assert_eq!(a, b);
        let lines: Vec<&[u8]> = a.split(|&x| x == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1000);
        let mean = a.len() / lines.len();
        assert!((400..=650).contains(&mean), "mean record size {mean}");
        for line in lines {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert!(v["id"].is_string() && v["metadata"]["request_id"].is_string());
        }
        let mut ids = std::collections::HashSet::new();
        for batch in 0..c.batches.len() {
            for j in [0, 999] {
                let r = c.record(batch, j);
                assert_eq!(r.time_micros, c.time(batch, j));
                assert!(ids.insert(r.id.clone()), "ids are unique");
                assert!(r.time_micros >= c.start_micros);
                assert!(r.time_micros < c.start_micros + c.span_micros);
            }
        }
        let mut row = Vec::new();
        c.record(0, 0).write_copy_row(&mut row);
        assert_eq!(
            row.iter().filter(|&&x| x == b'\t').count(),
            COPY_COLUMNS.split(',').count() - 1
        );
    }

    #[test]
    fn below_is_uniform_over_ranges_wider_than_32_bits() {
        let mut rng = Rng::new(7);
        let n = 120 * DAY_MICROS as u64; // 120 days in µs, about 2^43
        let draws: Vec<u64> = (0..10_000).map(|_| rng.below(n)).collect();
        assert!(draws.iter().all(|&d| d < n));
        // Each tenth of the range gets about a tenth of the draws (the old formula put them all
        // below 2^32, in the first 0.04 %).
        for tenth in 0..10 {
            let hits = draws.iter().filter(|&&d| d / (n / 10) == tenth).count();
            assert!((800..1200).contains(&hits), "tenth {tenth}: {hits}");
        }
        assert_eq!(Rng::new(1).below(1), 0);
        assert!(
            std::iter::repeat_with(|| rng.below(u64::MAX))
                .take(100)
                .any(|d| d > 1 << 63)
        );
    }

    #[test]
    fn a_scattered_corpus_covers_its_whole_span_in_every_batch() {
        let end = 1_800_000_000_000_000;
        let span = 120 * DAY_MICROS;
        let c = Corpus::recent(4_000, 2, 1000, end, 600_000_000).scattered_over(span);
        assert_eq!((c.start_micros, c.span_micros), (end - span, span));
        for b in 0..c.batches.len() {
            // All but the last record, which is of the last ten minutes, in batch order.
            let live = c.time(b, 999);
            assert!(
                (end - 600_000_000..end).contains(&live),
                "batch {b}: {live}"
            );
            if b > 0 {
                assert!(c.time(b - 1, 999) <= live);
            }
            let times: Vec<i64> = (0..999).map(|j| c.time(b, j)).collect();
            assert!(times.iter().all(|&t| (end - span..end).contains(&t)));
            let days: std::collections::HashSet<i64> =
                times.iter().map(|t| (end - t) / DAY_MICROS).collect();
            assert!(
                days.len() > 100,
                "batch {b} touches {} of 120 days",
                days.len()
            );
        }
    }
}
