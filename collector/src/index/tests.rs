//! The index against brute force over the same records: every filter, every `q` form, cursor
//! walks (also while records arrive), tenancy, facets, hostile input, and reopening.

use super::*;
use crate::uid::uid_hash;
use chrono::{DateTime, Duration, TimeZone, Utc};
use codestax_common::{
    Actor, ActorKind, AuditRecord, CATALOG, Category, Change, Metadata, Outcome, Target, TargetKind,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

const ORGS: [&str; 3] = ["acme", "globex", "initech"];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap()
}

struct Person {
    id: String,
    name: Option<String>,
    email: Option<String>,
    kind: ActorKind,
}

fn people(org: &str) -> Vec<Person> {
    let user = |id: &str, name: &str, email: &str| Person {
        id: format!("{org}-{id}"),
        name: Some(name.to_string()),
        email: Some(format!("{email}@{org}.example")),
        kind: ActorKind::User,
    };
    vec![
        user("u1", "Ada Lovelace", "ada"),
        user("u2", "Zoë Ångström", "zoe"),
        user("u3", "Grace Hopper", "grace"),
        user("u4", "Linus Torvalds", "linus"),
        Person {
            id: format!("{org}-key-7"),
            name: Some("CI deploy key".into()),
            email: None,
            kind: ActorKind::ApiKey,
        },
        Person {
            id: "system".into(),
            name: None,
            email: None,
            kind: ActorKind::System,
        },
    ]
}

const REPOS: [&str; 4] = ["acme/api", "acme/web", "tools/scanner", "Infra/Terraform"];
const MESSAGES: [&str; 6] = [
    "Scan failed on branch main",
    "Login from new device",
    "Ticket SEC-12 linked to finding",
    "Policy changed by admin",
    "Webhook delivery failed",
    "Exported 120 rows",
];
const IPS: [&str; 4] = ["10.0.1.3", "10.0.1.4", "192.168.7.20", "2001:DB8::1"];

/// A deterministic corpus: `n` records over 3 orgs and 60 days; every action, category and
/// outcome; ids shared between orgs; some records at the very same microsecond.
fn corpus(seed: u64, n: usize) -> Vec<AuditRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let persons: HashMap<&str, Vec<Person>> = ORGS.iter().map(|o| (*o, people(o))).collect();
    let mut shared_times = Vec::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let org = ORGS[i % 3];
        let spec = CATALOG.choose(&mut rng).unwrap();
        let p = persons[org].choose(&mut rng).unwrap();
        let time = if !shared_times.is_empty() && rng.random_bool(0.05) {
            *shared_times.choose(&mut rng).unwrap()
        } else {
            let t = t0() + Duration::microseconds(rng.random_range(0..60 * 86_400_000_000i64));
            if rng.random_bool(0.02) {
                shared_times.push(t);
            }
            t
        };
        let mut metadata = Metadata::default();
        if rng.random_bool(0.7) {
            metadata.ip = Some(IPS.choose(&mut rng).unwrap().to_string());
        }
        if rng.random_bool(0.3) {
            metadata.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64)".into());
        }
        if rng.random_bool(0.1) {
            metadata.extra.insert("ticket".into(), json!("SEC-12"));
        }
        if rng.random_bool(0.1) {
            metadata.changes.push(Change {
                field: "retention_days".into(),
                old: json!(30),
                new: json!(rng.random_range(60..400)),
            });
        }
        if spec.category == Category::Scan {
            metadata.scan_type = Some(
                ["sast", "sca", "secrets"]
                    .choose(&mut rng)
                    .unwrap()
                    .to_string(),
            );
        }
        let kind = *TargetKind::ALL.choose(&mut rng).unwrap();
        out.push(AuditRecord {
            // Ids repeat across orgs (`evt-00007` exists in two orgs): the uid keeps them apart.
            id: Some(format!("evt-{:05}", i / 2)),
            org_id: org.to_string(),
            time,
            actor: Actor {
                id: p.id.clone(),
                name: p.name.clone(),
                email: p.email.clone(),
                kind: p.kind,
            },
            action: spec.name.to_string(),
            category: spec.category.as_str().to_string(),
            target: rng.random_bool(0.9).then(|| Target {
                kind,
                id: Some(format!("{}-{}", kind.as_str(), rng.random_range(1..50))),
                name: rng.random_bool(0.8).then(|| {
                    format!(
                        "{} {}",
                        kind.as_str(),
                        ["alpha", "beta", "gamma"].choose(&mut rng).unwrap()
                    )
                }),
            }),
            repository: rng
                .random_bool(0.75)
                .then(|| REPOS.choose(&mut rng).unwrap().to_string()),
            outcome: if rng.random_bool(0.2) {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            message: rng
                .random_bool(0.6)
                .then(|| MESSAGES.choose(&mut rng).unwrap().to_string()),
            metadata,
            schema_version: 1,
            received_at: Some(time + Duration::seconds(rng.random_range(0..30))),
            seq: None,
            prev_hash: None,
            provenance: None,
            hash: None,
        });
    }
    out
}

/// Small writers; and read caches that small test segments use: every segment's facets are
/// cached (so the brute-force comparisons go through the cache) and runs of time ranges are
/// short.
fn options() -> IndexOptions {
    IndexOptions {
        writer_memory_bytes: 16_000_000,
        writer_threads: 1,
        merge_threads: 1,
        max_open_writers: 16,
        partition: PartitionScheme::Week,
        facet_cache_min_docs: 0,
        time_chunk_docs: 16,
        ..IndexOptions::default()
    }
}

/// Indexes `records` with LSNs from `first_lsn`, committing every `batch`.
fn index_all(indexer: &mut Indexer, records: &[AuditRecord], first_lsn: u64, batch: usize) {
    for (i, r) in records.iter().enumerate() {
        indexer.add(first_lsn + i as u64, r).unwrap();
        if (i + 1) % batch == 0 {
            indexer.commit().unwrap();
        }
    }
    indexer.commit().unwrap();
}

fn build(dir: &Path, records: &[AuditRecord]) -> (AuditIndex, Indexer) {
    let (index, mut indexer) = AuditIndex::open(dir, options()).unwrap();
    let started = Instant::now();
    index_all(&mut indexer, records, 1, 700);
    eprintln!(
        "indexed {} records in {:?}",
        records.len(),
        started.elapsed()
    );
    (index, indexer)
}

// ---------------------------------------------------------------------------------------------
// Brute force

/// Words as the index splits them: at anything not alphanumeric, lowercased.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().flat_map(char::to_lowercase).collect())
        .collect()
}

fn phrase_in(values: &[String], phrase: &[String]) -> bool {
    values.iter().any(|v| {
        let w = words(v);
        w.windows(phrase.len()).any(|win| win == phrase)
    })
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.trim().to_lowercase()
}

fn keyword_matches(r: &AuditRecord, name: &str, value: &str) -> bool {
    match name {
        "action" => eq_ci(&r.action, value),
        "category" => {
            let want = Category::parse(value).map_or(value.to_string(), |c| c.as_str().to_string());
            eq_ci(&r.category, &want)
        }
        "user" => {
            eq_ci(&r.actor.id, value) || r.actor.email.as_deref().is_some_and(|e| eq_ci(e, value))
        }
        "repository" => r.repository.as_deref().is_some_and(|x| eq_ci(x, value)),
        "outcome" => eq_ci(r.outcome.as_str(), value),
        "ip" => r.metadata.ip.as_deref().is_some_and(|x| eq_ci(x, value)),
        other => panic!("no keyword {other}"),
    }
}

fn all_text(r: &AuditRecord) -> Vec<String> {
    let mut v = vec![r.actor.id.clone()];
    v.extend(r.actor.name.clone());
    v.extend(r.actor.email.clone());
    if let Some(t) = &r.target {
        v.extend(t.id.clone());
        v.extend(t.name.clone());
    }
    v.push(r.action.clone());
    codestax_common::action_search_words(&r.action, &mut |w| v.push(w.to_string()));
    v.extend(r.repository.clone());
    v.extend(r.message.clone());
    let m = &r.metadata;
    v.extend(m.ip.clone());
    v.extend(m.user_agent.clone());
    v.extend(m.scan_type.clone());
    for c in &m.changes {
        v.push(c.field.clone());
        v.push(c.old.to_string());
        v.push(c.new.to_string());
    }
    for x in m.extra.values() {
        v.push(x.as_str().map_or(x.to_string(), str::to_string));
    }
    v
}

fn brute_matches(r: &AuditRecord, org: &str, q: &SearchQuery) -> bool {
    if r.org_id != org {
        return false;
    }
    let any = |vals: &[String], name: &str| {
        vals.is_empty() || vals.iter().any(|v| keyword_matches(r, name, v))
    };
    if !(any(&q.users, "user")
        && any(&q.actions, "action")
        && any(&q.categories, "category")
        && any(&q.repositories, "repository")
        && any(&q.outcomes, "outcome"))
    {
        return false;
    }
    if q.since.is_some_and(|s| r.time < s) || q.until.is_some_and(|u| r.time >= u) {
        return false;
    }
    let clauses = match &q.text {
        Some(t) => super::query::parse_q(t).unwrap(),
        None => vec![],
    };
    clauses.iter().all(|c| {
        use super::query::{ClauseTarget, TextField};
        let hit = match c.target {
            ClauseTarget::Keyword(name) => Some(keyword_matches(r, name, &c.value)),
            ClauseTarget::Text(tf) => {
                let phrase = words(&c.value);
                if phrase.is_empty() {
                    None
                } else {
                    let values: Vec<String> = match tf {
                        TextField::All => all_text(r),
                        TextField::Actor => r.actor.name.iter().cloned().collect(),
                        TextField::Target => r
                            .target
                            .iter()
                            .flat_map(|t| t.name.iter().chain(t.id.iter()).cloned())
                            .collect(),
                        TextField::Message => r.message.iter().cloned().collect(),
                    };
                    Some(phrase_in(&values, &phrase))
                }
            }
        };
        hit.is_none_or(|h| h != c.negated)
    })
}

fn newest_first(records: &[AuditRecord], org: &str, q: &SearchQuery) -> Vec<AuditRecord> {
    let mut v: Vec<AuditRecord> = records
        .iter()
        .filter(|r| brute_matches(r, org, q))
        .cloned()
        .collect();
    v.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id().cmp(a.id())));
    v
}

fn ids(records: &[AuditRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{}/{}", r.org_id, r.id()))
        .collect()
}

fn text(s: &str) -> SearchQuery {
    SearchQuery {
        text: Some(s.to_string()),
        ..SearchQuery::default()
    }
}

/// Every filter alone, each `q` form, and combinations.
fn queries(org: &str) -> Vec<SearchQuery> {
    let day = |d: i64| t0() + Duration::days(d);
    let mut qs = vec![SearchQuery::default()];
    for p in people(org) {
        qs.push(SearchQuery {
            users: vec![p.id.clone()],
            ..Default::default()
        });
        if let Some(e) = &p.email {
            qs.push(SearchQuery {
                users: vec![e.to_uppercase()],
                ..Default::default()
            });
        }
    }
    qs.push(SearchQuery {
        users: vec![format!("{org}-u1"), format!("zoe@{org}.example")],
        ..Default::default()
    });
    for a in ["scan.failed", "auth.login", "audit_log.exported"] {
        qs.push(SearchQuery {
            actions: vec![a.into()],
            ..Default::default()
        });
    }
    qs.push(SearchQuery {
        actions: vec!["scan.failed".into(), "finding.triaged".into()],
        ..Default::default()
    });
    for c in Category::ALL {
        qs.push(SearchQuery {
            categories: vec![c.as_str().into()],
            ..Default::default()
        });
    }
    for r in REPOS {
        qs.push(SearchQuery {
            repositories: vec![r.into()],
            ..Default::default()
        });
    }
    qs.push(SearchQuery {
        repositories: vec!["infra/terraform".into(), "nope".into()],
        ..Default::default()
    });
    for o in Outcome::ALL {
        qs.push(SearchQuery {
            outcomes: vec![o.as_str().into()],
            ..Default::default()
        });
    }
    // Ranges: inside one week, across weeks, open-ended, empty, the very instant of a record.
    qs.push(SearchQuery {
        since: Some(day(10)),
        until: Some(day(12)),
        ..Default::default()
    });
    qs.push(SearchQuery {
        since: Some(day(3) + Duration::hours(5)),
        until: Some(day(40)),
        ..Default::default()
    });
    qs.push(SearchQuery {
        since: Some(day(50)),
        ..Default::default()
    });
    qs.push(SearchQuery {
        until: Some(day(7)),
        ..Default::default()
    });
    qs.push(SearchQuery {
        since: Some(day(20)),
        until: Some(day(20)),
        ..Default::default()
    });
    qs.push(SearchQuery {
        since: Some(day(-30)),
        until: Some(day(-1)),
        ..Default::default()
    });
    for q in [
        "scan",
        "main",
        "SEC-12",
        "sec",
        "10.0.1.3",
        "2001:db8::1",
        "zoë",
        "ZOË",
        "ångström",
        "mozilla",
        "retention_days",
        "sast",
        "\"scan failed\"",
        "\"failed scan\"",
        "\"new device\"",
        "\"Ticket SEC-12 linked\"",
        "action:scan.failed",
        "action:SCAN.FAILED",
        "category:triage",
        "category:finding",
        "triage",
        "trigger -triggered",
        "-triage",
        "\"status changed\"",
        "category:Authentication",
        &format!("user:ZOE@{org}.EXAMPLE"),
        &format!("user:{org}-key-7"),
        "actor:zoë",
        "actor:\"grace hopper\"",
        "actor:ci",
        "target:alpha",
        "target:\"repository beta\"",
        "target:finding",
        "repository:acme/api",
        "repository:ACME/API",
        "repository:acme",
        "outcome:failure",
        "ip:10.0.1.3",
        "ip:2001:db8::1",
        "message:branch",
        "message:\"new device\"",
        "-scan",
        "-outcome:success",
        "-\"new device\"",
        "scan -outcome:success",
        "login -ip:10.0.1.3 ada",
        "\"webhook delivery\" -actor:ada",
        "AND",
        "(",
        "OR scan",
        "evt",
        "30",
        "120 rows",
        "-",
    ] {
        qs.push(text(q));
    }
    qs.push(SearchQuery {
        categories: vec!["scan".into(), "finding".into()],
        outcomes: vec!["failure".into()],
        since: Some(day(5)),
        until: Some(day(45)),
        text: Some("-actor:ada main".into()),
        ..Default::default()
    });
    qs.push(SearchQuery {
        users: vec![format!("grace@{org}.example")],
        repositories: vec!["acme/api".into(), "acme/web".into()],
        text: Some("ip:10.0.1.4".into()),
        ..Default::default()
    });
    qs
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn handles_are_shareable() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<AuditIndex>();
    send::<Indexer>();
    send_sync::<IndexError>();
    let _ = AuditIndex::clone;
}

#[test]
fn every_filter_and_q_form_matches_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(7, 5_000);
    let (index, _indexer) = build(dir.path(), &records);
    let mut checked = 0;
    let mut nonempty = 0;
    let mut slowest = std::time::Duration::ZERO;
    for org in ORGS {
        for q in queries(org) {
            let want = newest_first(&records, org, &q);
            let started = Instant::now();
            let page = index.search(org, &q, 50, None).unwrap();
            slowest = slowest.max(started.elapsed());
            assert_eq!(page.total, want.len() as u64, "total of {org} {q:?}");
            let first: Vec<_> = want.iter().take(50).cloned().collect();
            assert_eq!(ids(&page.entries), ids(&first), "first page of {org} {q:?}");
            assert_eq!(page.entries, first, "records are returned as stored");
            assert_eq!(page.next_cursor.is_some(), want.len() > 50);
            checked += 1;
            nonempty += usize::from(!want.is_empty());
        }
    }
    eprintln!("{checked} queries ({nonempty} with matches); slowest search {slowest:?}");
    assert!(
        nonempty * 10 > checked * 8,
        "the queries mostly match something"
    );
}

#[test]
fn a_word_finds_the_actions_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(11, 1_500);
    let (index, _indexer) = build(dir.path(), &records);
    for (word, action) in [
        ("triage", "finding.triaged"),
        ("trigger", "scan.triggered"),
        ("cancel", "scan.cancelled"),
        ("revoke", "auth.api_key_revoked"),
    ] {
        let want = records
            .iter()
            .filter(|r| r.org_id == "acme" && r.action == action)
            .count() as u64;
        assert!(want > 0, "the corpus holds {action}");
        let q = SearchQuery {
            actions: vec![action.into()],
            ..text(word)
        };
        assert_eq!(
            index.search("acme", &q, 1, None).unwrap().total,
            want,
            "q={word} finds every {action}"
        );
    }
}

#[test]
fn cursor_walks_see_every_match_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(11, 5_000);
    let (index, _indexer) = build(dir.path(), &records);
    let walks = [
        ("acme", SearchQuery::default()),
        ("globex", text("-outcome:failure")),
        (
            "initech",
            SearchQuery {
                categories: vec!["scan".into(), "auth".into()],
                since: Some(t0() + Duration::days(9)),
                ..Default::default()
            },
        ),
    ];
    for (org, q) in walks {
        let want = newest_first(&records, org, &q);
        let (got, totals) = walk(&index, org, &q, 37, |_| {});
        assert_eq!(ids(&got), ids(&want), "{org} {q:?}");
        assert!(totals.iter().all(|t| *t == want.len() as u64));
        let unique: HashSet<_> = ids(&got).into_iter().collect();
        assert_eq!(unique.len(), got.len(), "no repeats");
    }
}

/// Walks all pages, calling `between` after each page; returns the entries and each page's total.
fn walk(
    index: &AuditIndex,
    org: &str,
    q: &SearchQuery,
    limit: usize,
    mut between: impl FnMut(usize),
) -> (Vec<AuditRecord>, Vec<u64>) {
    let mut cursor: Option<String> = None;
    let mut got = Vec::new();
    let mut totals = Vec::new();
    for page_no in 0.. {
        let page = index.search(org, q, limit, cursor.as_deref()).unwrap();
        assert!(page.entries.len() <= limit);
        got.extend(page.entries);
        totals.push(page.total);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        between(page_no);
        assert!(page_no < 10_000, "the walk ends");
    }
    (got, totals)
}

#[test]
fn a_walk_ignores_records_that_arrive_during_it() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(13, 3_000);
    let (index, mut indexer) = build(dir.path(), &records);
    let q = SearchQuery {
        outcomes: vec!["success".into()],
        ..Default::default()
    };
    let want = newest_first(&records, "acme", &q);
    // New records of the walk's org and filter, newer than all, older than all, and in between
    // (in the partitions the walk has yet to reach), some at the exact time of existing ones.
    let extra = corpus(99, 600);
    let mut extra_iter = extra.iter().enumerate().map(|(i, r)| {
        let mut r = r.clone();
        r.id = Some(format!("late-{i:04}"));
        r.org_id = "acme".into();
        r.outcome = Outcome::Success;
        r.time = match i % 4 {
            0 => t0() + Duration::days(70) + Duration::seconds(i as i64),
            1 => t0() - Duration::days(3) - Duration::seconds(i as i64),
            2 => r.time,
            _ => want[i % want.len()].time,
        };
        r
    });
    let mut lsn = 10_000;
    let mut added = Vec::new();
    let (got, totals) = walk(&index, "acme", &q, 37, |_| {
        for r in extra_iter.by_ref().take(20) {
            lsn += 1;
            indexer.add(lsn, &r).unwrap();
            added.push(r);
        }
        indexer.commit().unwrap();
    });
    assert!(
        added.len() >= 200,
        "records arrived during the walk ({})",
        added.len()
    );
    assert_eq!(
        ids(&got),
        ids(&want),
        "no gap, no repeat, none of the late records"
    );
    assert!(
        totals.iter().all(|t| *t == want.len() as u64),
        "total is stable: {totals:?}"
    );
    // A new walk sees them.
    let mut all = records.clone();
    all.extend(added);
    let fresh = index.search("acme", &q, 10, None).unwrap();
    assert_eq!(fresh.total, newest_first(&all, "acme", &q).len() as u64);
    let (got, _) = walk(&index, "acme", &q, 500, |_| {});
    assert_eq!(ids(&got), ids(&newest_first(&all, "acme", &q)));
}

#[test]
fn facets_never_count_what_a_new_search_cannot_see() {
    // A commit reloads the readers first and moves the search snapshot after (it persists the
    // state file in between). Facets counted the reloaded records in that window while a search
    // started then left them out: a client waiting on the facets total, then walking a search,
    // missed the last commit's records (seen end to end with the agent draining a spool).
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(23, 400);
    let (index, mut indexer) = build(dir.path(), &records);
    let q = SearchQuery::default();
    let before = index.shared().marks.read().unwrap().snapshot_through;
    let late: Vec<AuditRecord> = corpus(24, 50)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = Some(format!("late-{i}"));
            r.org_id = "acme".into();
            r
        })
        .collect();
    index_all(&mut indexer, &late, 10_000, 1_000);
    // Back inside the window: readers reloaded, snapshot not yet moved.
    let after = std::mem::replace(
        &mut index.shared().marks.write().unwrap().snapshot_through,
        before,
    );
    let facets = index.facets("acme", &q, 5).unwrap().total;
    let search = index.search("acme", &q, 1, None).unwrap().total;
    assert_eq!(facets, search, "facets and a new search count one snapshot");
    assert_eq!(search, newest_first(&records, "acme", &q).len() as u64);
    index.shared().marks.write().unwrap().snapshot_through = after;
    let mut all = records.clone();
    all.extend(late);
    let want = newest_first(&all, "acme", &q).len() as u64;
    assert_eq!(index.facets("acme", &q, 5).unwrap().total, want);
    assert_eq!(index.search("acme", &q, 1, None).unwrap().total, want);
}

#[test]
fn queries_never_leave_their_org() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(17, 2_000);
    let (index, _indexer) = build(dir.path(), &records);
    for org in ORGS {
        let (got, _) = walk(&index, org, &SearchQuery::default(), 400, |_| {});
        assert_eq!(
            got.len(),
            records.iter().filter(|r| r.org_id == org).count()
        );
        assert!(got.iter().all(|r| r.org_id == org));
        for other in ORGS.iter().filter(|o| **o != org) {
            for q in [
                text(&format!("user:ada@{other}.example")),
                text(&format!("ada@{other}.example")),
                SearchQuery {
                    users: vec![format!("{other}-u1")],
                    ..Default::default()
                },
            ] {
                let page = index.search(org, &q, 50, None).unwrap();
                assert_eq!(page.total, 0, "{org} {q:?}");
            }
            let f = index
                .facets(org, &text(&format!("user:zoe@{other}.example")), 10)
                .unwrap();
            assert_eq!(f.total, 0);
        }
        // Ids repeat across orgs; get and contains go by (org, id).
        let r = records
            .iter()
            .find(|r| {
                r.org_id == org && records.iter().any(|o| o.org_id != org && o.id() == r.id())
            })
            .unwrap();
        assert_eq!(index.get(org, r.id()).unwrap().as_ref(), Some(r));
        assert!(
            index
                .contains(org, r.id(), r.time.timestamp_micros())
                .unwrap()
        );
    }
    assert_eq!(
        index
            .search("nobody", &SearchQuery::default(), 10, None)
            .unwrap()
            .total,
        0
    );
}

fn brute_top(
    records: &[&AuditRecord],
    key: impl Fn(&AuditRecord) -> Option<String>,
    n: usize,
) -> Vec<ValueCount> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for r in records {
        if let Some(k) = key(r) {
            *counts.entry(k).or_default() += 1;
        }
    }
    let mut v: Vec<ValueCount> = counts
        .into_iter()
        .map(|(value, count)| ValueCount { value, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    v.truncate(n);
    v
}

#[test]
fn facets_equal_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(19, 5_000);
    let (index, _indexer) = build(dir.path(), &records);
    let day = |d: i64| t0() + Duration::days(d);
    let mut slowest = std::time::Duration::ZERO;
    for org in ORGS {
        let mut qs = queries(org);
        qs.push(SearchQuery {
            since: Some(day(10) + Duration::minutes(30)),
            until: Some(day(13) + Duration::minutes(30)),
            ..Default::default()
        });
        qs.push(SearchQuery {
            since: Some(day(10)),
            until: Some(day(13) + Duration::minutes(1)),
            ..Default::default()
        });
        for q in qs {
            for top_n in [3, 100] {
                let started = Instant::now();
                let f = index.facets(org, &q, top_n).unwrap();
                slowest = slowest.max(started.elapsed());
                let m: Vec<&AuditRecord> = records
                    .iter()
                    .filter(|r| brute_matches(r, org, &q))
                    .collect();
                assert_eq!(f.total, m.len() as u64, "{org} {q:?}");
                assert_eq!(
                    f.categories,
                    brute_top(&m, |r| Some(r.category.clone()), top_n)
                );
                assert_eq!(f.actions, brute_top(&m, |r| Some(r.action.clone()), top_n));
                assert_eq!(
                    f.users,
                    brute_top(&m, |r| Some(r.actor_label().to_string()), top_n)
                );
                assert_eq!(
                    f.repositories,
                    brute_top(&m, |r| r.repository.clone(), top_n)
                );
                assert_eq!(
                    f.outcomes,
                    brute_top(&m, |r| Some(r.outcome.as_str().to_string()), top_n)
                );
                // Histogram: the interval rule, UTC-aligned buckets, counts per bucket.
                let start = q.since.or(m.iter().map(|r| r.time).min());
                let end = q
                    .until
                    .or(m.iter().map(|r| r.time + Duration::microseconds(1)).max());
                let hourly =
                    matches!((start, end), (Some(s), Some(e)) if e - s <= Duration::days(3));
                let want_interval = if hourly {
                    Interval::Hour
                } else {
                    Interval::Day
                };
                assert_eq!(f.histogram.interval, want_interval, "{q:?}");
                let width = if hourly { 3600 } else { 86_400 };
                let mut want: BTreeMap<i64, u64> = BTreeMap::new();
                for r in &m {
                    *want
                        .entry(r.time.timestamp().div_euclid(width) * width)
                        .or_default() += 1;
                }
                let got: BTreeMap<i64, u64> = f
                    .histogram
                    .buckets
                    .iter()
                    .filter(|b| b.count > 0)
                    .map(|b| (b.start.timestamp(), b.count))
                    .collect();
                assert_eq!(got, want, "{q:?}");
                assert_eq!(
                    f.histogram.buckets.iter().map(|b| b.count).sum::<u64>(),
                    f.total
                );
                for pair in f.histogram.buckets.windows(2) {
                    assert_eq!(
                        (pair[1].start - pair[0].start).num_seconds(),
                        width,
                        "contiguous"
                    );
                }
            }
        }
    }
    eprintln!("slowest facets {slowest:?}");
    // The rule on explicit ranges.
    let three_days = SearchQuery {
        since: Some(day(1)),
        until: Some(day(4)),
        ..Default::default()
    };
    assert_eq!(
        index
            .facets("acme", &three_days, 5)
            .unwrap()
            .histogram
            .interval,
        Interval::Hour
    );
    let more = SearchQuery {
        since: Some(day(1)),
        until: Some(day(4) + Duration::seconds(1)),
        ..Default::default()
    };
    assert_eq!(
        index.facets("acme", &more, 5).unwrap().histogram.interval,
        Interval::Day
    );
    assert_eq!(
        index
            .facets("acme", &SearchQuery::default(), 5)
            .unwrap()
            .histogram
            .interval,
        Interval::Day
    );
}

#[test]
fn hostile_cursors_and_queries_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(23, 600);
    let (index, _indexer) = build(dir.path(), &records);
    let q = SearchQuery::default();
    let page = index.search("acme", &q, 5, None).unwrap();
    let good = page.next_cursor.unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut forged: Vec<String> = vec![
        String::new(),
        "!!!".into(),
        "a".into(),
        "AAAA".into(),
        "x".repeat(5000),
        good[..good.len() - 1].to_string(),
        good[..good.len() / 2].to_string(),
        format!("{good}AA"),
        "eyJ2IjoxfQ".into(),
    ];
    let mut raw = super::cursor::base64url_decode(&good).unwrap();
    let version = raw[0];
    for other in [0, 1, 3] {
        raw[0] = other;
        forged.push(super::cursor::base64url_encode(&raw));
    }
    raw[0] = version;
    let last = raw.len() - 1;
    raw[last] ^= 1;
    forged.push(super::cursor::base64url_encode(&raw));
    for _ in 0..200 {
        let len = rng.random_range(0..80);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        forged.push(super::cursor::base64url_encode(&bytes));
    }
    for c in &forged {
        match index.search("acme", &q, 5, Some(c)) {
            Err(IndexError::BadCursor(_)) => {}
            other => panic!("cursor {c:?}: {other:?}"),
        }
    }
    // A cursor belongs to its org and its filters.
    assert!(matches!(
        index.search("globex", &q, 5, Some(&good)),
        Err(IndexError::BadCursor(_))
    ));
    assert!(matches!(
        index.search("acme", &text("scan"), 5, Some(&good)),
        Err(IndexError::BadCursor(_))
    ));
    assert!(
        index.search("acme", &q, 9, Some(&good)).is_ok(),
        "the limit may change"
    );

    let long_words = "word ".repeat(2000);
    let weird = [
        "(",
        ")",
        "AND",
        "OR",
        "NOT",
        "a AND (b OR c)",
        "\"unclosed",
        "\"",
        "\"\"",
        ":",
        "::",
        "a:",
        "foo:bar",
        "-",
        "--",
        "-:",
        "user:",
        "user:\"",
        "*",
        "?",
        "~2",
        "^3",
        "[a TO b]",
        "{}",
        "\\",
        "\u{0}",
        "😀",
        "名前",
        "Ωmega ΣΑΣ",
        "İstanbul",
        "\u{202e}evil",
        "a\tb\nc",
        &long_words,
        &"x".repeat(10_000),
        &"é".repeat(999),
        &"\"a\" ".repeat(40),
        "http://example.com",
        "10:30",
        "-user:x@y -ip:1.2.3.4 \"scan failed\" category:nope",
    ];
    for w in weird {
        for result in [
            index.search("acme", &text(w), 10, None).map(|p| p.total),
            index.facets("acme", &text(w), 10).map(|f| f.total),
        ] {
            match result {
                Ok(_) | Err(IndexError::BadQuery { field: "q", .. }) => {}
                Err(e) => panic!("{w:?}: {e}"),
            }
        }
    }
    let err = index
        .search("acme", &text("foo:bar"), 10, None)
        .unwrap_err();
    assert!(err.to_string().contains("foo"), "{err}");
    assert!(err.is_client_error());
    // Odd but valid structured values and limits.
    let odd = SearchQuery {
        users: vec![String::new(), "\u{1f}".into()],
        ..Default::default()
    };
    assert_eq!(index.search("acme", &odd, 0, None).unwrap().total, 0);
    assert_eq!(
        index
            .search("acme", &q, usize::MAX, None)
            .unwrap()
            .entries
            .len(),
        200
    );
}

#[test]
fn reopen_recovery_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(29, 1_500);
    {
        let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
        assert_eq!(index.indexed_through(), None);
        index_all(&mut indexer, &records, 100, 400);
        assert_eq!(
            index.indexed_through(),
            Some(100 + records.len() as u64 - 1)
        );
    }
    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    let through = 100 + records.len() as u64 - 1;
    assert_eq!(index.indexed_through(), Some(through));
    assert_eq!(indexer.indexed_through(), Some(through));
    // Partitions open lazily: a query on the last days opens only the newest partitions.
    let recent = SearchQuery {
        since: Some(t0() + Duration::days(58)),
        ..Default::default()
    };
    index.search("acme", &recent, 10, None).unwrap();
    let opened: Vec<bool> = index
        .shared()
        .partitions_newest_first(None, None)
        .iter()
        .map(|p| p.is_open())
        .collect();
    assert!(opened[0] && !opened[opened.len() - 1], "{opened:?}");

    let mut hashes = Vec::new();
    index.for_each_uid_hash(|h| hashes.push(h)).unwrap();
    hashes.sort_unstable();
    let mut want: Vec<u64> = records
        .iter()
        .map(|r| uid_hash(&r.org_id, r.id()))
        .collect();
    want.sort_unstable();
    assert_eq!(hashes, want);
    // A lookup by id starts in the partition of the time it is given, and looks in every other
    // before saying no: the same id sent again with another time is still found.
    let (first, last) = (records[0].time, records[records.len() - 1].time);
    assert_ne!(
        PartitionScheme::Week.key_for(first),
        PartitionScheme::Week.key_for(last)
    );
    let elsewhere = [
        first,
        last,
        t0() + Duration::days(4_000),
        t0() - Duration::days(4_000),
    ];
    for r in records.iter().step_by(97) {
        assert!(
            index
                .contains(&r.org_id, r.id(), r.time.timestamp_micros())
                .unwrap()
        );
        for t in elsewhere {
            assert!(
                index
                    .contains(&r.org_id, r.id(), t.timestamp_micros())
                    .unwrap()
            );
        }
        assert_eq!(index.get(&r.org_id, r.id()).unwrap().as_ref(), Some(r));
    }
    for t in elsewhere {
        let t = t.timestamp_micros();
        assert!(!index.contains("acme", "evt-99999", t).unwrap());
        assert!(!index.contains("acmex", "evt-00001", t).unwrap());
    }
    assert_eq!(index.get("acme", "nope").unwrap(), None);
    let stats = index.stats().unwrap();
    assert_eq!(stats.docs, records.len() as u64);
    assert!(
        stats.partitions >= 9 && stats.bytes_on_disk > 0,
        "{stats:?}"
    );

    // Retention: drop the oldest partition.
    let parts = index.partitions().unwrap();
    assert!(parts.windows(2).all(|w| w[0].end <= w[1].start));
    let oldest = &parts[0];
    assert!(indexer.delete_partition(&oldest.name).unwrap());
    assert!(!indexer.delete_partition(&oldest.name).unwrap());
    assert!(!indexer.delete_partition("../etc").unwrap());
    let kept: Vec<AuditRecord> = records
        .iter()
        .filter(|r| r.time >= oldest.end)
        .cloned()
        .collect();
    assert_eq!(kept.len() as u64, records.len() as u64 - oldest.docs);
    for org in ORGS {
        let page = index
            .search(org, &SearchQuery::default(), 10, None)
            .unwrap();
        assert_eq!(
            page.total,
            newest_first(&kept, org, &SearchQuery::default()).len() as u64
        );
    }
    assert!(!dir.path().join(&oldest.name).exists());
    assert_eq!(index.stats().unwrap().docs, kept.len() as u64);
}

#[test]
fn a_replay_after_a_crash_mid_commit_does_not_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(31, 300);
    let opts = IndexOptions {
        max_open_writers: 1,
        ..options()
    };
    let (first, rest) = records.split_at(100);
    {
        let (_index, mut indexer) = AuditIndex::open(dir.path(), opts.clone()).unwrap();
        index_all(&mut indexer, first, 1, 1000);
        // With one writer, records of another week commit the previous partition: those commits
        // happen, then the process dies before `commit` records the LSN.
        for (i, r) in rest.iter().enumerate() {
            indexer.add(101 + i as u64, r).unwrap();
        }
        assert_eq!(indexer.open_writers(), 1);
        // A process's crash frees the writers' locks at once; in this process the closed writers'
        // merges hold theirs on a thread until done (reopening meanwhile: LockBusy under load).
        indexer.finish_closing_all();
        // Dropped without commit: a crash.
    }
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    assert_eq!(index.indexed_through(), Some(100));
    // The log is replayed from 101; the store would dedupe, but even without it nothing doubles:
    // a record the crash left committed is found and not added again.
    for (i, r) in rest.iter().enumerate() {
        indexer.add(101 + i as u64, r).unwrap();
    }
    assert_eq!(indexer.commit().unwrap(), Some(300));
    let mut hashes = Vec::new();
    index.for_each_uid_hash(|h| hashes.push(h)).unwrap();
    assert_eq!(hashes.len(), records.len(), "no duplicates");
    for org in ORGS {
        let (got, _) = walk(&index, org, &SearchQuery::default(), 1000, |_| {});
        assert_eq!(
            ids(&got),
            ids(&newest_first(&records, org, &SearchQuery::default()))
        );
    }
    drop((index, indexer));
    // Losing the state file: nothing counts as indexed, re-adds are checked, searches still work.
    std::fs::remove_file(dir.path().join("index-state.json")).unwrap();
    let (index, mut indexer) = AuditIndex::open(dir.path(), options_with(1)).unwrap();
    assert_eq!(index.indexed_through(), None);
    assert_eq!(
        index
            .search("acme", &SearchQuery::default(), 5, None)
            .unwrap()
            .total,
        100
    );
    // Facet counts of the segments as they are now are kept; the re-adds below must not change
    // them.
    for org in ORGS {
        index.facets(org, &SearchQuery::default(), 100).unwrap();
    }
    assert!(index.shared().facet_cache.len() > 0);
    index_all(&mut indexer, &records, 1, 1000);
    assert_eq!(index.stats().unwrap().docs, records.len() as u64);
    assert_eq!(index.indexed_through(), Some(300));
    // Nothing was added twice: pages and facets are as before.
    let q = SearchQuery::default();
    for org in ORGS {
        let want = newest_first(&records, org, &q);
        let (got, totals) = walk(&index, org, &q, 7, |_| {});
        assert_eq!(ids(&got), ids(&want));
        assert!(totals.iter().all(|t| *t == want.len() as u64), "{totals:?}");
        let f = index.facets(org, &q, 100).unwrap();
        assert_eq!(f.total, want.len() as u64);
        let m: Vec<&AuditRecord> = want.iter().collect();
        assert_eq!(
            f.users,
            brute_top(&m, |r| Some(r.actor_label().to_string()), 100)
        );
        assert_eq!(f.repositories, brute_top(&m, |r| r.repository.clone(), 100));
    }
}

#[test]
fn a_write_failure_midway_keeps_the_last_commit_and_re_adds_index_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(41, 400);
    let (first, rest) = records.split_at(200);
    // One week's partition fails (EIO, which no tmpfs gives): a commit over several partitions
    // commits some, then fails.
    let failing = PartitionScheme::Week.key_for(rest[0].time).name;
    let faults = faults::Faults::default();
    let opts = IndexOptions {
        directory: Some(faults.hook({
            let failing = failing.clone();
            move |path| path.ends_with(&failing)
        })),
        ..options()
    };
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    index_all(&mut indexer, first, 1, 1000);
    let committed: HashMap<&str, usize> = ORGS
        .iter()
        .map(|org| (*org, first.iter().filter(|r| r.org_id == *org).count()))
        .collect();

    const EIO: i32 = 5;
    faults.arm(EIO);
    let mut error = None;
    for (i, r) in rest.iter().enumerate() {
        if let Err(e) = indexer.add(201 + i as u64, r) {
            error = Some(e);
            break;
        }
    }
    let error = error.unwrap_or_else(|| indexer.commit().unwrap_err());
    let failure = error.failure();
    assert_eq!(failure.code(), "index_failed", "{error}");
    assert!(
        failure
            .to_string()
            .contains(&std::io::Error::from_raw_os_error(EIO).to_string()),
        "the OS error is named: {failure}"
    );

    // The readers serve the last commit, and what the failure left uncommitted cannot count as
    // indexed: a commit after the reset does not move `indexed_through`.
    indexer.reset().unwrap();
    assert_eq!(indexer.commit().unwrap(), Some(200));
    assert_eq!(index.indexed_through(), Some(200));
    for org in ORGS {
        let total = index
            .search(org, &SearchQuery::default(), 1, None)
            .unwrap()
            .total;
        assert!(total >= committed[org] as u64, "{org}: {total}");
    }
    // Still failing: the re-adds fail again, nothing is lost.
    let again = rest
        .iter()
        .enumerate()
        .try_for_each(|(i, r)| indexer.add(201 + i as u64, r))
        .and_then(|()| indexer.commit().map(|_| ()));
    assert!(again.is_err(), "the partition still fails");
    indexer.reset().unwrap();

    // The disk works again: the records after `indexed_through` are added again, as the indexer
    // task does from the WAL, and each is there once.
    faults.disarm();
    indexer.reset().unwrap();
    for (i, r) in rest.iter().enumerate() {
        indexer.add(201 + i as u64, r).unwrap();
    }
    assert_eq!(indexer.commit().unwrap(), Some(400));
    let mut hashes = Vec::new();
    index.for_each_uid_hash(|h| hashes.push(h)).unwrap();
    assert_eq!(hashes.len(), records.len(), "no duplicates");
    for org in ORGS {
        let q = SearchQuery::default();
        let (got, _) = walk(&index, org, &q, 1000, |_| {});
        assert_eq!(ids(&got), ids(&newest_first(&records, org, &q)));
    }
}

/// Writes `docs` into the partition of `key` with tantivy directly, as an earlier version of the
/// collector (or a forger) would: creates the partition with `schema` if it is missing.
/// `records` (LSNs from 1) written straight into weekly partitions with `schema` and `form`, as
/// an earlier version of the collector wrote them; the partitions written.
fn write_weeks(
    dir: &Path,
    schema: &tantivy::schema::Schema,
    form: schema::UidForm,
    records: &[AuditRecord],
) -> Vec<PartitionKey> {
    let (_, fields) = schema::build_schema();
    let mut by_partition: BTreeMap<PartitionKey, Vec<tantivy::TantivyDocument>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let doc = schema::document(&fields, form, 1 + i as u64, r, None).unwrap();
        by_partition
            .entry(PartitionScheme::Week.key_for(r.time))
            .or_default()
            .push(doc);
    }
    let keys = by_partition.keys().cloned().collect();
    for (key, docs) in by_partition {
        write_raw(dir, &key, schema, docs);
    }
    keys
}

fn write_raw(
    dir: &Path,
    key: &PartitionKey,
    schema: &tantivy::schema::Schema,
    docs: Vec<tantivy::TantivyDocument>,
) {
    let path = dir.join(key.name());
    let index = if path.exists() {
        tantivy::Index::open_in_dir(&path).unwrap()
    } else {
        std::fs::create_dir_all(&path).unwrap();
        tantivy::Index::create_in_dir(&path, schema.clone()).unwrap()
    };
    schema::register_tokenizers(&index);
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
    for doc in docs {
        writer.add_document(doc).unwrap();
    }
    writer.commit().unwrap();
}

#[test]
fn partitions_written_with_a_text_uid_are_still_read_and_written() {
    use schema::{UidForm, schema_for};
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(37, 600);
    let (old, late) = records.split_at(500);
    // What the collector wrote before `uid_hash` was indexed: every partition keyed by the text
    // uid. A crash came in the middle of a commit: LSNs 401..=500 may or may not be committed.
    let (legacy, fields) = schema_for(UidForm::Text);
    // One set of field handles serves partitions of both forms.
    assert_eq!(fields, schema_for(UidForm::Hash).1);
    let legacy_partitions = write_weeks(dir.path(), &legacy, UidForm::Text, old);
    state::write_state(
        dir.path(),
        &state::IndexState {
            indexed_through: Some(400),
            pending_through: Some(500),
            ..state::IndexState::new(PartitionScheme::Week)
        },
    )
    .unwrap();

    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    assert_eq!(index.stats().unwrap().docs, old.len() as u64);
    for r in old.iter().step_by(41) {
        let at = r.time.timestamp_micros();
        assert!(index.contains(&r.org_id, r.id(), at).unwrap());
        assert_eq!(index.get(&r.org_id, r.id()).unwrap().as_ref(), Some(r));
    }
    // The replay finds the committed copies by their text uid and does not add them again.
    index_all(&mut indexer, &old[400..], 401, 1000);
    assert_eq!(index.stats().unwrap().docs, old.len() as u64);
    // Later records: into the old partitions (same weeks) in their form, into new ones hashed. A
    // week none of the old records fell in gets a new partition.
    let mut fresh = late.to_vec();
    fresh[0].time = t0() + Duration::days(400);
    index_all(&mut indexer, &fresh, 501, 1000);
    assert_eq!(index.stats().unwrap().docs, records.len() as u64);
    for p in index.shared().partitions_newest_first(None, None) {
        let want = if legacy_partitions.contains(&p.key) {
            UidForm::Text
        } else {
            UidForm::Hash
        };
        assert_eq!(p.open().unwrap().uid_form, want, "{}", p.key.name());
    }
    assert!(!legacy_partitions.contains(&PartitionScheme::Week.key_for(fresh[0].time)));
    let all: Vec<AuditRecord> = old.iter().chain(&fresh).cloned().collect();
    for r in all.iter().skip(480) {
        assert_eq!(index.get(&r.org_id, r.id()).unwrap().as_ref(), Some(r));
    }
    for org in ORGS {
        let q = SearchQuery::default();
        let (got, _) = walk(&index, org, &q, 1000, |_| {});
        assert_eq!(ids(&got), ids(&newest_first(&all, org, &q)));
    }
    // A partition with a schema neither form has is refused, naming it.
    drop((index, indexer));
    let odd = PartitionScheme::Week.key_for(t0() + Duration::days(800));
    let mut b = tantivy::schema::Schema::builder();
    b.add_text_field("something_else", tantivy::schema::STRING);
    write_raw(dir.path(), &odd, &b.build(), vec![]);
    let (index, _indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    let err = index
        .search("acme", &SearchQuery::default(), 10, None)
        .unwrap_err();
    assert!(
        err.to_string().contains(odd.name()) && err.to_string().contains("schema"),
        "{err}"
    );
}

#[test]
fn partitions_written_with_every_column_are_still_read_and_written() {
    use schema::{Columns, UidForm, build, build_schema};
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(43, 400);
    let (old, late) = records.split_at(300);
    // What the collector wrote before the columns no read uses were left out.
    let (every, fields) = build(UidForm::Hash, Columns::All);
    let (lean, lean_fields) = build_schema();
    assert_eq!(fields, lean_fields, "one set of field handles serves both");
    assert_ne!(every, lean);
    let old_partitions = write_weeks(dir.path(), &every, UidForm::Hash, old);
    state::write_state(
        dir.path(),
        &state::IndexState {
            indexed_through: Some(old.len() as u64),
            ..state::IndexState::new(PartitionScheme::Week)
        },
    )
    .unwrap();

    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    assert_eq!(index.stats().unwrap().docs, old.len() as u64);
    // Later records: into the old weeks with their columns, into a new week without.
    let mut fresh = late.to_vec();
    fresh[0].time = t0() + Duration::days(400);
    index_all(&mut indexer, &fresh, 1 + old.len() as u64, 1000);
    assert_eq!(index.stats().unwrap().docs, records.len() as u64);
    for p in index.shared().partitions_newest_first(None, None) {
        let want = if old_partitions.contains(&p.key) {
            &every
        } else {
            &lean
        };
        assert_eq!(&p.open().unwrap().index.schema(), want, "{}", p.key.name());
    }
    let all: Vec<AuditRecord> = old.iter().chain(&fresh).cloned().collect();
    for r in all.iter().step_by(13) {
        let at = r.time.timestamp_micros();
        assert!(index.contains(&r.org_id, r.id(), at).unwrap());
        assert_eq!(index.get(&r.org_id, r.id()).unwrap().as_ref(), Some(r));
    }
    for org in ORGS {
        let q = SearchQuery::default();
        let (got, _) = walk(&index, org, &q, 1000, |_| {});
        assert_eq!(ids(&got), ids(&newest_first(&all, org, &q)));
        let facets = index.facets(org, &q, 5).unwrap();
        assert_eq!(facets.total, newest_first(&all, org, &q).len() as u64);
    }
}

#[test]
fn records_sharing_a_uid_hash_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = corpus(41, 3);
    for r in &mut records {
        r.org_id = "acme".into();
        r.time = t0();
    }
    records[0].id = Some("evt-a".into());
    records[1].id = Some("evt-b".into());
    records[2].id = Some("evt-c".into());
    let (a, b, c) = (&records[0], &records[1], &records[2]);
    {
        let (_index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
        index_all(&mut indexer, std::slice::from_ref(a), 1, 10);
    }
    // `b`, whose document also carries the hashes of `a` and `c` (as two real 64-bit collisions
    // would), in a newer partition (a lookup walks newest first).
    let mut forged = b.clone();
    forged.time = t0() + Duration::days(10);
    let (schema, fields) = schema::build_schema();
    let mut doc = schema::document(&fields, schema::UidForm::Hash, 2, &forged, None).unwrap();
    doc.add_u64(fields.uid_hash, uid_hash("acme", "evt-a"));
    doc.add_u64(fields.uid_hash, uid_hash("acme", "evt-c"));
    write_raw(
        dir.path(),
        &PartitionScheme::Week.key_for(forged.time),
        &schema,
        vec![doc],
    );

    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    assert_eq!(index.get("acme", "evt-a").unwrap().as_ref(), Some(a));
    for t in [t0(), forged.time] {
        assert!(
            !index
                .contains("acme", "evt-c", t.timestamp_micros())
                .unwrap()
        );
        assert!(
            index
                .contains("acme", "evt-a", t.timestamp_micros())
                .unwrap()
        );
    }
    assert_eq!(index.get("acme", "evt-c").unwrap(), None);
    assert_eq!(index.get("acme", "evt-b").unwrap(), Some(forged));
    // A replayed record whose hash collides is still added: skipping it would lose it.
    indexer.add(1, c).unwrap();
    indexer.commit().unwrap();
    assert_eq!(index.get("acme", "evt-c").unwrap().as_ref(), Some(c));
    // While `a`, replayed at its own LSN, is found and not doubled.
    indexer.add(1, a).unwrap();
    indexer.commit().unwrap();
    assert_eq!(index.stats().unwrap().docs, 3);
}

/// The segment files in a partition's directory that its `meta.json` does not list: what a
/// merge thrown away leaves behind.
fn unlisted_segment_files(dir: &Path) -> Vec<String> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let listed: HashSet<String> = meta["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["segment_id"].as_str().unwrap().replace('-', ""))
        .collect();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            let stem = name.split('.').next().unwrap_or_default();
            stem.len() == 32 && !listed.contains(stem)
        })
        .collect()
}

/// 100 records of one day per commit of one thread, as many commits as a writer merges from
/// ([`indexer::MERGE_MIN_SEGMENTS`]): that many small segments in one partition, and the last
/// commit starts tantivy merging them. Returns the records and the partition.
fn segments_merging(
    seed: u64,
    indexer: &mut Indexer,
    index: &AuditIndex,
) -> (Vec<AuditRecord>, std::sync::Arc<partition::Partition>) {
    let mut records = corpus(seed, 100 * indexer::MERGE_MIN_SEGMENTS);
    for r in &mut records {
        r.time = t0() + Duration::seconds(r.time.timestamp() % 86_400);
    }
    index_all(indexer, &records, 1, 100);
    let week = index.shared().partitions_newest_first(None, None)[0].clone();
    (records, week)
}

/// The segments a search of partition `p` sees now.
fn searched_segments(p: &partition::Partition) -> usize {
    p.open().unwrap().reader.searcher().segment_readers().len()
}

#[test]
fn closing_a_writer_lets_its_merges_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (index, mut indexer) = AuditIndex::open(dir.path(), options_with(1)).unwrap();
    let (records, week) = segments_merging(43, &mut indexer, &index);
    let n = records.len() as u64;
    // A record of another week right away: the one writer allowed is closed, merges under way.
    let mut other = records[0].clone();
    other.id = Some("evt-other-week".into());
    other.time = t0() + Duration::days(30);
    indexer.add(n + 1, &other).unwrap();
    indexer.commit().unwrap();
    indexer.finish_closing_all();
    assert_eq!(searched_segments(&week), 1, "the merge was kept");
    assert_eq!(unlisted_segment_files(&week.dir), Vec::<String>::new());
    // Back to the first week: a new writer.
    let mut late = records[1].clone();
    late.id = Some("evt-late".into());
    indexer.add(n + 2, &late).unwrap();
    indexer.commit().unwrap();
    assert_eq!(index.stats().unwrap().docs, n + 2);
    for r in [&records[0], records.last().unwrap(), &other, &late] {
        assert_eq!(index.get(&r.org_id, r.id()).unwrap().as_ref(), Some(r));
    }
}

#[test]
fn merges_become_searchable_without_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    let (records, week) = segments_merging(47, &mut indexer, &index);
    // No more records: the indexer's idle ticks pick the merge of the open writer up, and a
    // later tick removes the merged-away files.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while (searched_segments(&week) > 1 || !unlisted_segment_files(&week.dir).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        indexer.refresh().unwrap();
    }
    assert_eq!(searched_segments(&week), 1);
    assert_eq!(indexer.open_writers(), 1, "not idle long enough to close");
    assert_eq!(unlisted_segment_files(&week.dir), Vec::<String>::new());
    let (got, _) = walk(&index, "acme", &SearchQuery::default(), 1000, |_| {});
    assert_eq!(
        ids(&got),
        ids(&newest_first(&records, "acme", &SearchQuery::default()))
    );
}

#[test]
fn a_merge_without_room_waits_and_runs_once_there_is_room() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let keep = std::sync::Arc::new(AtomicU64::new(u64::MAX));
    let room = keep.clone();
    let opts = IndexOptions {
        merge_room: Some(super::MergeRoom(std::sync::Arc::new(move || {
            room.load(Ordering::Relaxed)
        }))),
        ..options()
    };
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    let (records, week) = segments_merging(53, &mut indexer, &index);
    let segments = searched_segments(&week);
    assert!(segments >= indexer::MERGE_MIN_SEGMENTS, "{segments}");
    // No room: the merge waits, through idle ticks and commits.
    let mut one_more = |i: u64| {
        let mut r = records[0].clone();
        r.id = Some(format!("evt-more-{i}"));
        indexer.add(records.len() as u64 + i, &r).unwrap();
        indexer.commit().unwrap();
        indexer.refresh().unwrap();
    };
    for i in 1..=3 {
        one_more(i);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        searched_segments(&week),
        segments + 3,
        "merged without room"
    );
    // Room again: the next commit's merge runs.
    keep.store(0, Ordering::Relaxed);
    one_more(4);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while searched_segments(&week) > 2 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        indexer.refresh().unwrap();
    }
    assert!(
        searched_segments(&week) <= 2,
        "{}",
        searched_segments(&week)
    );
    assert_eq!(index.stats().unwrap().docs, records.len() as u64 + 4);
}

fn options_with(max_open_writers: usize) -> IndexOptions {
    IndexOptions {
        max_open_writers,
        ..options()
    }
}

#[test]
fn options_and_scheme_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        IndexOptions {
            writer_memory_bytes: 10_000_000,
            ..options()
        },
        IndexOptions {
            writer_threads: 9,
            ..options()
        },
        IndexOptions {
            merge_threads: 0,
            ..options()
        },
        IndexOptions {
            writer_threads: 0,
            ..options()
        },
        IndexOptions {
            max_open_writers: 0,
            ..options()
        },
    ] {
        assert!(matches!(
            AuditIndex::open(dir.path(), bad),
            Err(IndexError::Options(_))
        ));
    }
    {
        let (_i, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
        indexer.add(1, &corpus(1, 1)[0]).unwrap();
        indexer.commit().unwrap();
    }
    let month = IndexOptions {
        partition: PartitionScheme::Month,
        ..options()
    };
    assert!(matches!(
        AuditIndex::open(dir.path(), month),
        Err(IndexError::Options(_))
    ));
    // A record without an id cannot be indexed.
    let (_i, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    let mut r = corpus(1, 1).remove(0);
    r.id = None;
    assert!(matches!(
        indexer.add(2, &r),
        Err(IndexError::InvalidRecord(_))
    ));
}

#[test]
fn month_partitions_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(37, 800);
    let opts = IndexOptions {
        partition: PartitionScheme::Month,
        ..options()
    };
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    index_all(&mut indexer, &records, 1, 300);
    let names: Vec<String> = index
        .partitions()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["2026-09", "2026-10"]);
    for q in queries("globex").into_iter().step_by(5) {
        let want = newest_first(&records, "globex", &q);
        let (got, _) = walk(&index, "globex", &q, 61, |_| {});
        assert_eq!(ids(&got), ids(&want), "{q:?}");
    }
}

/// Informal timings at scale, in release: `CODESTAX_BENCH_RECORDS=2000000 cargo test --release
/// -p codestax-collector --lib bench_at_scale -- --ignored --nocapture`. Half the records belong
/// to one org (the "largest org" of the target: 1 M records), the rest to 99 others, over a year.
#[test]
#[ignore]
fn bench_at_scale() {
    let n: usize = std::env::var("CODESTAX_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let opts = IndexOptions {
        writer_memory_bytes: 64_000_000,
        max_open_writers: 2,
        ..options()
    };
    let (index, mut indexer) = AuditIndex::open(dir.path(), opts).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let span = Duration::days(365).num_microseconds().unwrap();
    let started = Instant::now();
    let mut lsn = 0;
    for chunk in 0..n.div_ceil(10_000) {
        for (j, mut r) in corpus(chunk as u64, 10_000.min(n - chunk * 10_000))
            .into_iter()
            .enumerate()
        {
            let i = chunk * 10_000 + j;
            r.org_id = if rng.random_bool(0.5) {
                "big".into()
            } else {
                format!("org-{:02}", rng.random_range(0..99))
            };
            r.id = Some(format!("e{i:09}"));
            r.time = t0()
                + Duration::microseconds(
                    span / n as i64 * i as i64 + rng.random_range(0..1_000_000),
                );
            lsn += 1;
            indexer.add(lsn, &r).unwrap();
        }
        if chunk % 5 == 4 {
            indexer.commit().unwrap();
        }
    }
    indexer.commit().unwrap();
    drop(indexer);
    let stats = index.stats().unwrap();
    eprintln!("indexed {n} records in {:?}: {stats:?}", started.elapsed());
    let end = t0() + Duration::days(365);
    let cases: Vec<(&str, SearchQuery)> = vec![
        ("all", SearchQuery::default()),
        (
            "category+outcome",
            SearchQuery {
                categories: vec!["scan".into()],
                outcomes: vec!["failure".into()],
                ..Default::default()
            },
        ),
        (
            "user",
            SearchQuery {
                users: vec!["acme-u2".into(), "grace@globex.example".into()],
                ..Default::default()
            },
        ),
        ("q word", text("main")),
        ("q phrase+neg", text("\"scan failed\" -outcome:success")),
        ("q ip", text("ip:10.0.1.3")),
        (
            "last 30 days",
            SearchQuery {
                since: Some(end - Duration::days(30)),
                ..Default::default()
            },
        ),
        (
            "last 2 days + repo",
            SearchQuery {
                since: Some(end - Duration::days(2)),
                repositories: vec!["acme/api".into()],
                ..Default::default()
            },
        ),
    ];
    let p = |mut v: Vec<std::time::Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    for org in ["big", "org-07"] {
        for (name, q) in &cases {
            let mut s = Vec::new();
            let mut deep = Vec::new();
            let mut f = Vec::new();
            let mut total = 0;
            for _ in 0..20 {
                let t = Instant::now();
                let page = index.search(org, q, 50, None).unwrap();
                s.push(t.elapsed());
                total = page.total;
                if let Some(c) = &page.next_cursor {
                    let t = Instant::now();
                    index.search(org, q, 50, Some(c)).unwrap();
                    deep.push(t.elapsed());
                }
                let t = Instant::now();
                index.facets(org, q, 10).unwrap();
                f.push(t.elapsed());
            }
            let (s50, s99) = p(s);
            let (f50, f99) = p(f);
            let next = if deep.is_empty() {
                "-".to_string()
            } else {
                format!("{:?}", p(deep).1)
            };
            eprintln!(
                "{org:7} {name:20} total {total:8}  search p50 {s50:>10.2?} p99 {s99:>10.2?}  page 2 p99 {next:>10}  facets p50 {f50:>10.2?} p99 {f99:>10.2?}"
            );
        }
    }
    let t = Instant::now();
    let mut count = 0u64;
    index.for_each_uid_hash(|_| count += 1).unwrap();
    eprintln!("for_each_uid_hash over {count} in {:?}", t.elapsed());
    let t = Instant::now();
    for i in (0..n).step_by(n / 100) {
        let at = end.timestamp_micros();
        index.contains("big", &format!("e{i:09}"), at).unwrap();
    }
    eprintln!("contains: {:?} per call", t.elapsed() / 100);
    let t = Instant::now();
    for i in (0..n).step_by(n / 100) {
        index.get("big", &format!("e{i:09}")).unwrap();
    }
    eprintln!("get: {:?} per call", t.elapsed() / 100);
}

/// `records` with LSNs from `first`, and their stored JSON.
fn numbered(records: &[AuditRecord], first: u64) -> (Vec<(u64, AuditRecord)>, Vec<String>) {
    let with_lsn = records
        .iter()
        .enumerate()
        .map(|(i, r)| (first + i as u64, r.clone()))
        .collect();
    let stored = records.iter().map(AuditRecord::canonical_json).collect();
    (with_lsn, stored)
}

/// Seals `records` into their orgs' hash chains, as the store's writer does.
fn chained(records: &[AuditRecord]) -> Vec<AuditRecord> {
    use codestax_common::chain::{ChainHead, Unsealed};
    let mut heads: HashMap<String, ChainHead> = HashMap::new();
    records
        .iter()
        .map(|r| {
            let head = heads.entry(r.org_id.clone()).or_default();
            let seq = head.seq + 1;
            let sealed = Unsealed::new(r).seal(seq, &head.hash);
            let mut out = r.clone();
            (out.seq, out.prev_hash) = (Some(seq), Some(head.hash.clone()));
            out.hash = Some(sealed.hash.clone());
            *head = ChainHead::of(&out).unwrap();
            out
        })
        .collect()
}

#[test]
fn chain_heads_and_verify_across_partitions() {
    // Records arrive in an order unrelated to their times, so chains cross partitions both ways.
    let records = chained(&corpus(11, 900));
    let dir = tempfile::tempdir().unwrap();
    let (index, _indexer) = build(dir.path(), &records);
    assert!(index.partitions().unwrap().len() > 4);
    let heads = index.chain_heads().unwrap();
    assert_eq!(heads.len(), 3);
    for org in ORGS {
        let last = records.iter().rfind(|r| r.org_id == org).unwrap();
        assert_eq!(
            heads[org],
            codestax_common::chain::ChainHead::of(last).unwrap()
        );
        let report = index.verify_chain(org, None).unwrap();
        assert_eq!(report.error, None, "{org}");
        assert_eq!(report.summary.records, 300);
        assert_eq!(report.summary.first_seq, Some(1));
        assert_eq!(report.summary.last_seq, Some(300));
        assert_eq!(report.summary.last_hash, last.hash);
    }
    let none = index.verify_chain("nosuch", None).unwrap();
    assert_eq!((none.summary.records, none.error), (0, None));

    // A changed record, and a missing one, are named.
    let mut tampered = records.clone();
    let victim = tampered
        .iter()
        .position(|r| r.org_id == "globex" && r.seq == Some(120))
        .unwrap();
    tampered[victim].message = Some("nothing to see here".into());
    let gone = tampered
        .iter()
        .position(|r| r.org_id == "acme" && r.seq == Some(7))
        .unwrap();
    tampered.remove(gone);
    let dir = tempfile::tempdir().unwrap();
    let (index, _indexer) = build(dir.path(), &tampered);
    let globex = index.verify_chain("globex", None).unwrap();
    let e = globex.error.unwrap();
    assert_eq!(e.seq, Some(120), "{e}");
    assert!(e.reason.contains("does not match its hash"), "{e}");
    assert_eq!(globex.summary.records, 119);
    assert_eq!(globex.summary.last_seq, Some(119));
    let acme = index.verify_chain("acme", None).unwrap().error.unwrap();
    assert_eq!(acme.seq, Some(7), "{acme}");
    assert!(acme.reason.contains("missing"), "{acme}");
    assert_eq!(index.verify_chain("initech", None).unwrap().error, None);
}

#[test]
fn scans_hand_over_exactly_what_a_walk_returns() {
    let dir = tempfile::tempdir().unwrap();
    // Records of a few microseconds share their time: the order between them is by id.
    let records = corpus(7, 5_000);
    let (index, mut indexer) = build(dir.path(), &records);
    let mut checked = 0;
    for org in ORGS {
        for q in queries(org) {
            let want = newest_first(&records, org, &q);
            // The usual windows (one per partition here), and windows of a few records, which
            // cut partitions (and runs of records at the same time) into many.
            for window in [scan::WINDOW_ROWS, 7] {
                let scan = index.scan_in_windows(org, &q, window).unwrap();
                assert_eq!(scan.total(), want.len() as u64, "total of {org} {q:?}");
                let mut got = Vec::new();
                let n = scan
                    .for_each(|json| {
                        got.push(serde_json::from_slice::<AuditRecord>(json).unwrap());
                        Ok::<_, IndexError>(())
                    })
                    .unwrap();
                assert_eq!(n, want.len() as u64);
                assert_eq!(
                    ids(&got),
                    ids(&want),
                    "order of {org} {q:?}, window {window}"
                );
                assert_eq!(got, want, "records as stored");
            }
            checked += 1;
        }
    }
    assert!(checked > 50);

    // The snapshot is the one of the scan's start: records committed later are not in it.
    let q = SearchQuery::default();
    let before = newest_first(&records, "acme", &q);
    let scan = index.scan("acme", &q).unwrap();
    let mut late = corpus(99, 30);
    for (i, r) in late.iter_mut().enumerate() {
        r.id = Some(format!("late-{i}"));
        r.org_id = "acme".into();
    }
    index_all(&mut indexer, &late, 100_000, 10);
    let mut got = Vec::new();
    scan.for_each(|json| {
        got.push(serde_json::from_slice::<AuditRecord>(json).unwrap());
        Ok::<_, IndexError>(())
    })
    .unwrap();
    assert_eq!(ids(&got), ids(&before));
    let mut all = records.clone();
    all.extend(late);
    assert_eq!(
        index.scan("acme", &q).unwrap().total(),
        newest_first(&all, "acme", &q).len() as u64
    );

    // Every stored document has the layout the scan reads directly, and the files it reads are
    // found where they are mapped (to give their pages back).
    let fields = &index.shared().fields;
    for p in index.shared().partitions_newest_first(None, None) {
        let searcher = index.shared().searcher(&p).unwrap().unwrap();
        assert_eq!(
            scan::Mappings::of(&searcher).0.len(),
            3 * searcher.segment_readers().len(),
            "postings, columns and store of each segment"
        );
        for reader in searcher.segment_readers() {
            let store = reader.get_store_reader(1).unwrap();
            for doc in reader.doc_ids_alive().step_by(17) {
                let raw = store.get_document_bytes(doc).unwrap();
                let full: tantivy::TantivyDocument = store.get(doc).unwrap();
                let want = tantivy::schema::Value::as_bytes(&full.get_first(fields.doc).unwrap());
                assert_eq!(stored::stored_bytes(&raw, fields.doc), want);
            }
        }
    }
}

/// Matches of `q` with the retention floor applied, as a read sees them.
fn visible(records: &[AuditRecord], org: &str, q: &SearchQuery) -> Vec<AuditRecord> {
    let mut bounded = q.clone();
    bounded.since = q.since.max(q.floor);
    newest_first(records, org, &bounded)
}

#[test]
fn a_walk_counts_what_expires_and_is_deleted_during_it() {
    // The floor moves up while the walk goes on: a few minutes per page (the cursor's carried
    // count plus the matches still above the floor), now and then an hour (past the anchor: a
    // count afresh), once back (retention lengthened before anything was deleted); between pages
    // the janitor deletes what fell below the floor. Every page's total is the brute-force count
    // at that page, and no page returns an expired record.
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(41, 3_000);
    let (index, mut indexer) = build(dir.path(), &records);
    for (org, base) in [
        ("acme", SearchQuery::default()),
        (
            "globex",
            SearchQuery {
                outcomes: vec!["success".into()],
                until: Some(t0() + Duration::days(50)),
                ..Default::default()
            },
        ),
        (
            "initech",
            SearchQuery {
                // An explicit since above the floor: the floor only binds later in the walk.
                since: Some(t0() + Duration::days(3)),
                ..Default::default()
            },
        ),
    ] {
        let mut alive: Vec<AuditRecord> = records.clone();
        let mut floor = t0() + Duration::days(2);
        let mut cursor: Option<String> = None;
        let mut seen = HashSet::new();
        for page_no in 0.. {
            let q = SearchQuery {
                floor: Some(floor),
                ..base.clone()
            };
            let page = index.search(org, &q, 23, cursor.as_deref()).unwrap();
            let want = visible(&alive, org, &q);
            assert_eq!(page.total, want.len() as u64, "{org} page {page_no}");
            for r in &page.entries {
                assert!(r.time >= floor, "{org} page {page_no}: an expired record");
                assert!(seen.insert(r.id().to_string()), "{org}: a repeat");
            }
            let Some(next) = page.next_cursor else { break };
            cursor = Some(next);
            floor += match page_no {
                5 => -Duration::days(1),
                p if p % 9 == 8 => Duration::hours(7),
                _ => Duration::minutes(3),
            };
            if page_no % 4 == 3 && page_no > 5 {
                let cutoff = floor;
                for p in index.partitions().unwrap() {
                    if p.start < cutoff {
                        indexer
                            .delete_older_than(&p.name, &[(org.to_string(), cutoff)])
                            .unwrap();
                    }
                }
                alive.retain(|r| r.org_id != org || r.time >= cutoff);
            }
            assert!(page_no < 1000);
        }
        assert!(seen.len() > 100, "{org}: a long walk ({})", seen.len());
        let q = SearchQuery {
            floor: Some(floor),
            ..base.clone()
        };
        let f = index.facets(org, &q, 100).unwrap();
        let m = visible(&alive, org, &q);
        assert_eq!(f.total, m.len() as u64);
        let m: Vec<&AuditRecord> = m.iter().collect();
        assert_eq!(f.actions, brute_top(&m, |r| Some(r.action.clone()), 100));
    }
}

#[test]
fn entries_at_one_microsecond_across_segments_page_in_id_order() {
    // Entries at the same time in different segments are ordered by id across the segments,
    // also where a page ends in the middle of them.
    let dir = tempfile::tempdir().unwrap();
    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    let same = t0() + Duration::days(5);
    let mut rng = StdRng::seed_from_u64(3);
    let mut records = corpus(43, 400);
    for (i, r) in records.iter_mut().enumerate() {
        r.org_id = "acme".into();
        r.id = Some(format!("id-{:08x}", rng.random::<u32>()));
        if i % 3 != 0 {
            r.time = same;
        } else if i % 2 == 0 {
            r.time = same + Duration::microseconds(1);
        }
    }
    // Seven commits: the tie spans seven segments.
    index_all(&mut indexer, &records, 1, 60);
    for (limit, q) in [
        (7, SearchQuery::default()),
        (1, SearchQuery::default()),
        (50, text("-outcome:failure")),
    ] {
        let want = newest_first(&records, "acme", &q);
        let (got, totals) = walk(&index, "acme", &q, limit, |_| {});
        assert_eq!(ids(&got), ids(&want), "limit {limit} {q:?}");
        assert!(totals.iter().all(|t| *t == want.len() as u64));
    }
}

#[test]
fn walks_over_records_in_time_order_seek_their_pages() {
    // Records indexed in time order (as they mostly arrive): later pages visit only the runs of
    // documents around their cursor. Segments of many runs, small pages, a filter, a range,
    // late records in small segments older than everything, and runs inside a microsecond
    // shared by 40 records.
    let dir = tempfile::tempdir().unwrap();
    let (index, mut indexer) = AuditIndex::open(dir.path(), options()).unwrap();
    let mut records = corpus(67, 4_000);
    records.sort_by_key(|r| r.time);
    let same = records[1_500].time;
    for (i, r) in records.iter_mut().enumerate() {
        r.id = Some(format!("ord-{:05}", (i * 7919) % 4_000));
        if (1_490..1_530).contains(&i) {
            r.time = same;
        }
    }
    index_all(&mut indexer, &records, 1, 1_300);
    let mut all = records.clone();
    // Late records older than everything, in their own small segments.
    let late: Vec<AuditRecord> = corpus(71, 60)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = Some(format!("late-{i}"));
            r.time = t0() - Duration::days(1) + Duration::minutes(i as i64);
            r
        })
        .collect();
    index_all(&mut indexer, &late, 10_000, 20);
    all.extend(late);
    for (org, q, limit) in [
        ("acme", SearchQuery::default(), 9),
        ("globex", text("-outcome:failure"), 25),
        ("initech", SearchQuery::default(), 1),
        (
            "acme",
            SearchQuery {
                since: Some(t0() + Duration::days(20)),
                until: Some(t0() + Duration::days(41)),
                ..Default::default()
            },
            40,
        ),
    ] {
        let want = newest_first(&all, org, &q);
        let (got, totals) = walk(&index, org, &q, limit, |_| {});
        assert_eq!(ids(&got), ids(&want), "{org} {q:?} limit {limit}");
        assert!(totals.iter().all(|t| *t == want.len() as u64));
    }
}

#[test]
fn stale_old_and_crafted_cursors() {
    use super::cursor::{CarriedCount, Cursor};
    use super::query::Plan;
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(47, 900);
    let (index, _indexer) = build(dir.path(), &records);
    let q = SearchQuery {
        floor: Some(t0() + Duration::days(1)),
        ..Default::default()
    };
    let want = visible(&records, "acme", &q);
    let first = index.search("acme", &q, 10, None).unwrap();
    assert_eq!(first.total, want.len() as u64);
    let scope = Plan::new(&index.shared().fields, "acme", &q).unwrap().scope;
    let key = index.cursor_key();
    let good = Cursor::decode(first.next_cursor.as_deref().unwrap(), &scope, &key).unwrap();
    let count = good.count.unwrap();
    assert_eq!(
        count.anchor,
        (t0() + Duration::days(1) + Duration::minutes(10)).timestamp_micros()
    );
    let now = Utc::now().timestamp_micros();
    let with = |count: Option<CarriedCount>| {
        Cursor {
            count,
            ..good.clone()
        }
        .encode(&scope, &key)
    };
    let page = |c: &str| index.search("acme", &q, 10, Some(c)).unwrap();
    // A cursor issued before the count was carried: counted afresh, and the next cursor carries.
    let old = page(&with(None));
    assert_eq!(old.total, want.len() as u64);
    assert!(
        Cursor::decode(old.next_cursor.as_deref().unwrap(), &scope, &key)
            .unwrap()
            .count
            .is_some()
    );
    // Counted too long ago (or in the future): counted afresh.
    for counted_at in [now - 3_600_000_000, now + 3_600_000_000] {
        let stale = page(&with(Some(CarriedCount {
            at_or_after_anchor: 5,
            counted_at,
            ..count
        })));
        assert_eq!(stale.total, want.len() as u64);
        assert_eq!(stale.entries, want[10..20].to_vec());
    }
    // A fresh count is relied on: one crafted under the key (as only the collector can) changes
    // only the total told about a walk of the org (the entries are the same).
    let crafted = page(&with(Some(CarriedCount {
        at_or_after_anchor: 5,
        ..count
    })));
    let between = want
        .iter()
        .filter(|r| r.time < t0() + Duration::days(1) + Duration::minutes(10))
        .count();
    assert_eq!(crafted.total, 5 + between as u64);
    assert_eq!(crafted.entries, want[10..20].to_vec());
}

#[test]
fn raw_pages_are_the_stored_records() {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(53, 1_200);
    let (index, _indexer) = build(dir.path(), &records);
    let q = text("-outcome:failure");
    let mut cursor: Option<String> = None;
    let mut raw_cursor: Option<String> = None;
    loop {
        let page = index.search("globex", &q, 40, cursor.as_deref()).unwrap();
        let raw = index
            .search_raw("globex", &q, 40, raw_cursor.as_deref())
            .unwrap();
        assert_eq!(raw.total, page.total);
        assert_eq!(raw.entries.len(), page.entries.len());
        for (raw, record) in raw.entries.iter().zip(&page.entries) {
            // The stored canonical JSON, and the same JSON value the parsed record serialises to.
            assert_eq!(raw.get(), record.canonical_json());
            let value: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
            assert_eq!(value, serde_json::to_value(record).unwrap());
        }
        assert_eq!(raw.next_cursor.is_some(), page.next_cursor.is_some());
        match (page.next_cursor, raw.next_cursor) {
            (Some(c), Some(r)) => (cursor, raw_cursor) = (Some(c), Some(r)),
            _ => break,
        }
    }
    // Every stored record is read straight from its serialised bytes (not tantivy's slow path).
    let fields = &index.shared().fields;
    for p in index.shared().partitions_newest_first(None, None) {
        let searcher = index.shared().searcher(&p).unwrap().unwrap();
        let mut docs = super::stored::StoredDocs::new(&searcher, &p.dir, fields);
        let mut n = 0;
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            for doc in reader.doc_ids_alive() {
                let addr = tantivy::DocAddress::new(ord as u32, doc);
                let fast: AuditRecord = docs
                    .read(addr, |_, bytes| Ok(serde_json::from_slice(bytes).unwrap()))
                    .unwrap();
                let slow = super::stored::load(&searcher, &p.dir, fields, addr).unwrap();
                assert_eq!(fast, slow);
                n += 1;
            }
        }
        assert_eq!(docs.fast_reads, n);
    }
}

/// Facets of `q` against brute force over `records`: total, every column, the histogram's sum.
fn assert_facets(index: &AuditIndex, records: &[AuditRecord], org: &str, q: &SearchQuery) {
    let f = index.facets(org, q, 1000).unwrap();
    let m = visible(records, org, q);
    assert_eq!(f.total, m.len() as u64, "{org} {q:?}");
    let m: Vec<&AuditRecord> = m.iter().collect();
    assert_eq!(
        f.categories,
        brute_top(&m, |r| Some(r.category.clone()), 1000)
    );
    assert_eq!(f.actions, brute_top(&m, |r| Some(r.action.clone()), 1000));
    assert_eq!(
        f.users,
        brute_top(&m, |r| Some(r.actor_label().to_string()), 1000)
    );
    assert_eq!(
        f.repositories,
        brute_top(&m, |r| r.repository.clone(), 1000)
    );
    assert_eq!(
        f.outcomes,
        brute_top(&m, |r| Some(r.outcome.as_str().to_string()), 1000)
    );
    assert_eq!(
        f.histogram.buckets.iter().map(|b| b.count).sum::<u64>(),
        f.total
    );
}

#[test]
fn facet_counts_kept_per_segment_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = corpus(59, 3_000);
    let (index, mut indexer) = build(dir.path(), &records);
    let day = |d: i64| t0() + Duration::days(d);
    let qs = [
        SearchQuery::default(),
        SearchQuery {
            since: Some(day(7)),
            until: Some(day(40)),
            ..Default::default()
        },
        SearchQuery {
            since: Some(day(14)),
            until: Some(day(21)),
            categories: vec!["scan".into()],
            ..Default::default()
        },
        SearchQuery {
            since: Some(day(3)),
            ..text("-outcome:failure")
        },
        SearchQuery {
            floor: Some(day(30)),
            ..Default::default()
        },
    ];
    let check = |records: &[AuditRecord]| {
        for org in ORGS {
            for q in &qs {
                assert_facets(&index, records, org, q);
            }
        }
    };
    let cache = index.shared().facet_cache.clone();
    check(&records);
    let (hits, misses) = cache.counters();
    check(&records);
    let (hits2, misses2) = cache.counters();
    assert!(
        hits2 - hits > 100,
        "asked again, whole segments come from the cache"
    );
    assert_eq!(misses2, misses, "{hits}/{misses} then {hits2}/{misses2}");
    // The same org and filters over another range reuse the segments wholly inside both.
    let wider = SearchQuery {
        since: Some(day(6)),
        until: Some(day(41)),
        ..Default::default()
    };
    assert_facets(&index, &records, "acme", &wider);
    assert!(cache.counters().0 > hits2);

    // New records in the same weeks: new segments, and merges replace cached ones.
    let late: Vec<AuditRecord> = corpus(61, 900)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = Some(format!("late-{i}"));
            r
        })
        .collect();
    index_all(&mut indexer, &late, 10_000, 150);
    records.extend(late);
    check(&records);
    // Retention deletes records inside cached segments (and merges them away).
    for p in index.partitions().unwrap() {
        if p.start < day(20) {
            indexer
                .delete_older_than(&p.name, &[("globex".to_string(), day(20))])
                .unwrap();
        }
    }
    let erased = records
        .iter()
        .find(|r| r.org_id == "globex" && r.time < day(20))
        .unwrap()
        .clone();
    records.retain(|r| r.org_id != "globex" || r.time >= day(20));
    check(&records);
    // A deleted record is no longer found by id, in its own partition or by a walk of all.
    let at = erased.time.timestamp_micros();
    assert!(!index.contains("globex", erased.id(), at).unwrap());
    assert_eq!(index.get("globex", erased.id()).unwrap(), None);
}

/// Times a deep walk and facets on a copy of an existing index directory (the bench's
/// `<data dir>/collector/index`): `CODESTAX_PERF_INDEX=DIR CODESTAX_PERF_ORG=org-000 cargo test
/// --release -p codestax-collector perf_existing_index -- --ignored --nocapture`.
#[test]
#[ignore]
fn perf_existing_index() {
    let Ok(dir) = std::env::var("CODESTAX_PERF_INDEX") else {
        eprintln!("CODESTAX_PERF_INDEX not set");
        return;
    };
    let org = std::env::var("CODESTAX_PERF_ORG").unwrap_or_else(|_| "org-000".into());
    let (index, _indexer) = AuditIndex::open(Path::new(&dir), IndexOptions::default()).unwrap();
    let p = |mut v: Vec<std::time::Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    if std::env::var("CODESTAX_PERF_SKIP_WALK").is_err() {
        let q = SearchQuery::default();
        let started = Instant::now();
        let mut cursor: Option<String> = None;
        let mut pages = Vec::new();
        let mut records = 0u64;
        let mut totals = HashSet::new();
        loop {
            let t = Instant::now();
            let page = index.search_raw(&org, &q, 1000, cursor.as_deref()).unwrap();
            pages.push(t.elapsed());
            records += page.entries.len() as u64;
            totals.insert(page.total);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let el = started.elapsed();
        let (p50, p99) = p(pages.clone());
        eprintln!(
            "walk {org}: {records} records, {} pages in {el:?} = {:.0} rec/s; page p50 {p50:?} p99 {p99:?}; totals {totals:?}",
            pages.len(),
            records as f64 / el.as_secs_f64()
        );
    }
    let now = Utc::now();
    let mut lat = Vec::new();
    let mut total = 0;
    let cold = Instant::now();
    index
        .facets(
            &org,
            &SearchQuery {
                since: Some(now - Duration::days(30)),
                until: Some(now),
                ..Default::default()
            },
            10,
        )
        .unwrap();
    eprintln!(
        "facets 30 d {org}, first (nothing kept yet): {:?}",
        cold.elapsed()
    );
    for i in 0..40 {
        let until = now - Duration::days(i % 60);
        let q = SearchQuery {
            since: Some(until - Duration::days(30)),
            until: Some(until),
            ..Default::default()
        };
        let t = Instant::now();
        total = index.facets(&org, &q, 10).unwrap().total;
        lat.push(t.elapsed());
    }
    let (p50, p99) = p(lat);
    eprintln!("facets 30 d {org}: total {total}, p50 {p50:?} p99 {p99:?}");
}

/// The build keeps zstd's run-time CPU probe out (`.cargo/config.toml`): with it, every block of
/// a column dictionary decompressed (each dedupe hit's check, each facet value) ran `cpuid`
/// twice, a trap to the hypervisor on a VM (BENCHMARKS.md, session 23). Cargo passes the same
/// `[env]` to zstd's build script and to this crate.
#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
fn zstd_is_built_without_its_cpu_probe() {
    let flags = option_env!("CFLAGS_x86_64_unknown_linux_gnu").unwrap_or_default();
    assert!(
        flags.contains("-DDYNAMIC_BMI2=0"),
        "CFLAGS_x86_64_unknown_linux_gnu is {flags:?}: .cargo/config.toml's [env] did not apply \
         (or an environment variable of that name overrides it without -DDYNAMIC_BMI2=0)"
    );
}

/// Property tests (proptest) of `q` and cursors.
mod props;
mod stage;
mod tail;

/// What the columns no read uses cost (issue 14): the same 200,000 records, target ids near
/// unique as real ones are, indexed into a partition of each schema in turn (commits of 20,000,
/// merges waited for), the process's CPU per 1,000 records. A measurement, not a check:
/// `cargo test --release -p codestax-collector --lib -- --ignored cost_of_the_columns --nocapture`
#[test]
#[ignore]
fn cost_of_the_columns() {
    use schema::{Columns, UidForm, build, document};
    /// The process's user + system CPU (all threads).
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        codestax_harness::stat_cpu_seconds(&stat).unwrap()
    }
    let mut records = corpus(7, 200_000);
    for (i, r) in records.iter_mut().enumerate() {
        r.id = Some(format!("evt-{i:07}"));
        if let Some(t) = &mut r.target {
            t.id = Some(format!(
                "scan-{:x}",
                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 28
            ));
        }
    }
    let mut per_1000: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _round in 0..4 {
        for (name, columns) in [
            ("every column", Columns::All),
            ("read columns", Columns::Read),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (schema, fields) = build(UidForm::Hash, columns);
            let index = tantivy::Index::create_in_dir(dir.path(), schema).unwrap();
            schema::register_tokenizers(&index);
            let mut writer: tantivy::IndexWriter =
                index.writer_with_num_threads(1, 64_000_000).unwrap();
            let started = cpu_seconds();
            for (n, chunk) in records.chunks(20_000).enumerate() {
                for (i, r) in chunk.iter().enumerate() {
                    let lsn = (n * 20_000 + i) as u64;
                    writer
                        .add_document(document(&fields, UidForm::Hash, lsn, r, None).unwrap())
                        .unwrap();
                }
                writer.commit().unwrap();
            }
            writer.wait_merging_threads().unwrap();
            let ms = (cpu_seconds() - started) * 1000.0 / (records.len() as f64 / 1000.0);
            eprintln!("{name}: {ms:.1} ms per 1,000 records");
            per_1000.entry(name).or_default().push(ms);
        }
    }
    for (name, mut v) in per_1000 {
        v.sort_by(f64::total_cmp);
        eprintln!(
            "{name}: median {:.1} ms per 1,000 (runs {v:.1?})",
            v[v.len() / 2]
        );
    }
}
