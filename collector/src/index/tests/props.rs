//! Property tests of what a search takes from outside: `q` (parsed, then run on a real index
//! against brute force) and cursors (any string, and crafted ones carrying a valid tag).
//! Longer run: `PROPTEST_CASES=5000 cargo test --release -p codestax-collector prop_`.

use super::*;
use crate::index::cursor::{CarriedCount, Cursor, base64url_encode};
use crate::index::query::{Plan, parse_q};
use proptest::prelude::*;
use std::sync::LazyLock;

/// One small index for every case (building it per case would dominate the run).
struct Fixture {
    _dir: tempfile::TempDir,
    records: Vec<AuditRecord>,
    index: AuditIndex,
    _indexer: Indexer,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let records = corpus(91, 300);
    let (index, indexer) = build(dir.path(), &records);
    Fixture {
        _dir: dir,
        records,
        index,
        _indexer: indexer,
    }
});

/// The default case count, unless `PROPTEST_CASES` says otherwise.
fn cases(n: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = n;
    }
    config
}

/// `q` texts: terms of the grammar (fields, negation, phrases, the corpus' own words), and
/// arbitrary text.
fn q_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        prop::sample::select(vec![
            "scan",
            "failed",
            "Ada",
            "lovelace",
            "Zoë",
            "ångström",
            "login",
            "device",
            "SEC-12",
            "acme/api",
            "10.0.1.3",
            "2001:db8::1",
            "branch",
            "main",
            "exported",
            "rows",
            "x",
            "success",
            "failure",
            "finding",
            "triage",
            "auth.login",
            "api_key",
            "*",
            "(",
            ")",
            "AND",
            "OR",
            "NOT",
            ":",
            "\\",
            "\u{0}",
            "😀",
            "İ",
            "\u{202e}",
        ])
        .prop_map(str::to_string),
        "\\PC{1,6}",
        "[a-z0-9@./:_-]{1,10}",
    ];
    let field = prop::sample::select(vec![
        "",
        "",
        "",
        "action:",
        "category:",
        "user:",
        "repository:",
        "outcome:",
        "ip:",
        "actor:",
        "target:",
        "message:",
        "User:",
        "nope:",
        ":",
    ]);
    let term = (
        any::<bool>(),
        field,
        any::<bool>(),
        prop::collection::vec(word, 0..3),
    )
        .prop_map(|(negated, field, quoted, words)| {
            let value = if quoted {
                format!("\"{}\"", words.join(" "))
            } else {
                words.join("")
            };
            format!("{}{field}{value}", if negated { "-" } else { "" })
        });
    prop_oneof![
        4 => prop::collection::vec(term, 0..6).prop_map(|t| t.join(" ")),
        1 => "\\PC{0,40}",
        1 => prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
    ]
}

fn is_bad_q(e: &IndexError) -> bool {
    matches!(e, IndexError::BadQuery { field: "q", message } if !message.is_empty())
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any `q` is clauses or a BadQuery naming `q`; never a panic.
    #[test]
    fn prop_parse_q_takes_any_text(q in prop_oneof![q_text(), "\\PC{0,1200}"]) {
        match parse_q(&q) {
            Ok(clauses) => assert!(clauses.len() <= MAX_Q_TERMS),
            Err(e) => assert!(is_bad_q(&e), "{q:?}: {e}"),
        }
    }

    /// Every `q` that parses finds, on a real index, exactly what brute force finds, and its
    /// facets count the same total; one that does not parse is a BadQuery for `q` everywhere.
    #[test]
    fn prop_q_on_a_real_index_matches_brute_force(q in q_text(), org in prop::sample::select(ORGS.to_vec())) {
        let f = &*FIXTURE;
        let query = text(&q);
        let parsed = parse_q(&q);
        let page = f.index.search(org, &query, 500, None);
        let facets = f.index.facets(org, &query, 5);
        match parsed {
            Ok(_) => {
                let want = newest_first(&f.records, org, &query);
                let page = page.unwrap();
                assert_eq!(page.total, want.len() as u64, "{q:?}");
                assert_eq!(ids(&page.entries), ids(&want), "{q:?}");
                assert_eq!(facets.unwrap().total, want.len() as u64, "{q:?}");
            }
            Err(_) => {
                assert!(page.as_ref().is_err_and(is_bad_q), "{q:?}");
                assert!(facets.as_ref().is_err_and(is_bad_q), "{q:?}");
            }
        }
    }

    /// Any string as a cursor is a BadCursor (the tag cannot be guessed).
    #[test]
    fn prop_any_cursor_string_is_a_bad_cursor(c in prop_oneof![
        "\\PC{0,80}",
        "[A-Za-z0-9_-]{0,120}",
        prop::collection::vec(any::<u8>(), 0..120).prop_map(|b| base64url_encode(&b)),
    ]) {
        let f = &*FIXTURE;
        match f.index.search("acme", &SearchQuery::default(), 5, Some(&c)) {
            Err(IndexError::BadCursor(_)) => {}
            other => panic!("cursor {c:?}: {other:?}"),
        }
    }

    /// The tag is no secret: a crafted cursor (any snapshot, time, id and carried count, with
    /// a valid tag) is a page or a BadCursor, never a panic or another error; it decodes to
    /// what was encoded, and only for its own org and query.
    #[test]
    fn prop_crafted_cursors_are_pages_or_bad_cursors(
        snapshot in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..400],
        time in prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>(),
            t0().timestamp_micros()..(t0() + Duration::days(60)).timestamp_micros()],
        id in prop_oneof!["evt-[0-9]{5}", "\\PC{0,20}"],
        count in proptest::option::of((any::<u64>(), any::<i64>(), prop_oneof![any::<i64>(), Just(Utc::now().timestamp_micros())])),
        q in prop_oneof![Just(String::new()), q_text()],
        since in proptest::option::of(0i64..60),
    ) {
        let f = &*FIXTURE;
        let mut query = text(&q);
        query.since = since.map(|d| t0() + Duration::days(d));
        let Ok(plan) = Plan::new(&f.index.shared().fields, "acme", &query) else {
            return Ok(());
        };
        let cursor = Cursor {
            snapshot,
            time,
            id,
            count: count.map(|(at_or_after_anchor, anchor, counted_at)| CarriedCount {
                at_or_after_anchor,
                anchor,
                counted_at,
            }),
        };
        let key = f.index.cursor_key();
        let encoded = cursor.encode(&plan.scope, &key);
        assert_eq!(Cursor::decode(&encoded, &plan.scope, &key).ok().as_ref(), (encoded.len() <= 1024).then_some(&cursor));
        assert!(Cursor::decode(&encoded, &plan.scope.replace("acme", "globex"), &key).is_err());
        match f.index.search("acme", &query, 7, Some(&encoded)) {
            Ok(page) => assert!(page.entries.iter().all(|e| e.org_id == "acme")),
            Err(IndexError::BadCursor(_)) => {}
            Err(e) => panic!("{cursor:?}: {e}"),
        }
        assert!(matches!(
            f.index.search("globex", &query, 7, Some(&encoded)),
            Err(IndexError::BadCursor(_)) | Err(IndexError::BadQuery { .. })
        ));
    }
}
