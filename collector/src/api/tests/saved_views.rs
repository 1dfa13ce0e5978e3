//! Saved views through the router: roles and tenancy, checked bodies naming the field, every
//! change recorded in the org's log, and the views kept on disk.

use super::*;

const VIEWS: &str = "/api/v1/orgs/ent/saved-views";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_views_are_checked_recorded_kept_and_walled_per_org() {
    let mut t = TestApp::new(config());
    let admin = t.key("ent", Role::OrgAdmin);
    let owner = t.key("ent", Role::OrgOwner);
    let member = t.key("ent", Role::Member);
    let other = t.key("team", Role::OrgOwner);

    let (status, body) = t.get(VIEWS, &admin).await;
    assert_eq!((status, &body), (200, &json!({"views": []})));
    let scans = r#"{"name": "Failed scans", "filters": {"category": "scan", "outcome": ["failure"], "since": "7d"}}"#;
    assert_eq!(t.call(Method::POST, VIEWS, &member, scans).await.0, 403);
    assert_eq!(t.call(Method::POST, VIEWS, &other, scans).await.0, 404);

    for (bad, field) in [
        (r#"{"filters": {}}"#, "name"),
        (r#"{"name": "  "}"#, "name"),
        (r#"{"name": 7}"#, "name"),
        (r#"{"name": "a\u0007b"}"#, "name"),
        (r#"{"name": "invoice\u202Egnp.exe"}"#, "name"),
        (r#"{"name": "x", "shared": true}"#, "shared"),
        (r#"{"name": "x", "filters": []}"#, "filters"),
        (
            r#"{"name": "x", "filters": {"limit": "5"}}"#,
            "filters.limit",
        ),
        (
            r#"{"name": "x", "filters": {"category": "nope"}}"#,
            "filters.category",
        ),
        (
            r#"{"name": "x", "filters": {"since": "yesterday"}}"#,
            "filters.since",
        ),
        (
            r#"{"name": "x", "filters": {"since": ["1d", "2d"]}}"#,
            "filters.since",
        ),
        (r#"{"name": "x", "filters": {"user": [1]}}"#, "filters.user"),
        (
            r#"{"name": "x", "filters": {"q": "nofield:x"}}"#,
            "filters.q",
        ),
        ("[1]", "body"),
        ("nope", "body"),
    ] {
        let (status, body) = t.call(Method::POST, VIEWS, &admin, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["field"], field, "{bad}: {body}");
    }
    let long = format!(r#"{{"name": "{}"}}"#, "v".repeat(101));
    assert_eq!(
        t.call(Method::POST, VIEWS, &admin, &long).await.1["error"]["field"],
        "name"
    );

    let (status, view) = t.call(Method::POST, VIEWS, &admin, scans).await;
    assert_eq!(status, 201, "{view}");
    let id = view["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("view_"), "{id}");
    assert_eq!(
        view["filters"],
        json!({"category": ["scan"], "outcome": ["failure"], "since": ["7d"]}),
        "relative times stay relative"
    );
    let path = format!("{VIEWS}/{id}");
    assert_eq!(t.get(&path, &owner).await.1, view);
    let (status, body) = t.call(Method::POST, VIEWS, &owner, scans).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (409, &json!("name")),
        "{body}"
    );

    // Another org's key, whatever its role, sees nothing of it.
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let (status, _) = t
            .call(method.clone(), &path, &other, r#"{"name": "mine"}"#)
            .await;
        assert_eq!(status, 404, "{method}");
    }
    let (status, body) = t.get("/api/v1/orgs/team/saved-views", &other).await;
    assert_eq!((status, &body), (200, &json!({"views": []})));
    assert_eq!(t.get(&format!("{VIEWS}/view_nope"), &admin).await.0, 404);

    let (status, changed) = t
        .call(
            Method::PATCH,
            &path,
            &owner,
            r#"{"name": "Failed scans, 30 days", "filters": {"category": "scan", "since": "30d"}}"#,
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "Failed scans, 30 days");
    assert_eq!(changed["created_at"], view["created_at"]);
    // The same again changes nothing and records nothing.
    let same = r#"{"name": "Failed scans, 30 days"}"#;
    assert_eq!(t.call(Method::PATCH, &path, &owner, same).await.1, changed);
    assert_eq!(t.call(Method::PATCH, &path, &owner, "{}").await.0, 400);

    // Kept on disk: a new store over the same data dir lists it.
    let reopened = crate::saved_views::SavedViews::open(t.dir.path()).unwrap();
    assert_eq!(
        reopened.list("ent").unwrap()[0].name,
        "Failed scans, 30 days"
    );

    assert_eq!(t.call(Method::DELETE, &path, &admin, "").await.0, 204);
    assert_eq!(t.get(&path, &admin).await.0, 404);
    assert_eq!(t.call(Method::DELETE, &path, &admin, "").await.0, 404);

    // Each change is an entry of the org's own log, written by the collector for the key.
    let (_, log) = t
        .get(
            "/api/v1/orgs/ent/audit-log?action=audit_log.saved_view_created\
             &action=audit_log.saved_view_changed&action=audit_log.saved_view_deleted",
            &admin,
        )
        .await;
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "audit_log.saved_view_deleted",
            "audit_log.saved_view_changed",
            "audit_log.saved_view_created"
        ]
    );
    let changed = &entries[1];
    assert_eq!(changed["metadata"]["view_id"], json!(id));
    assert_eq!(changed["metadata"]["role"], "ORG_OWNER");
    assert_eq!(changed["provenance"]["writer"], "collector");
    assert_eq!(
        changed["metadata"]["changes"],
        json!([
            {"field": "name", "old": "Failed scans", "new": "Failed scans, 30 days"},
            {"field": "filters",
             "old": {"category": ["scan"], "outcome": ["failure"], "since": ["7d"]},
             "new": {"category": ["scan"], "since": ["30d"]}}
        ])
    );
    let (_, theirs) = t.get("/api/v1/orgs/team/audit-log", &other).await;
    assert!(!theirs.to_string().contains("saved_view"), "{theirs}");
}

/// Filters of `user` values (45 bytes each, starting with `tag`) taking as many bytes of JSON as
/// fit in `bytes`, at most 48 fewer.
fn filters_of(tag: &str, bytes: usize) -> Value {
    let users: Vec<String> = (0..(bytes - 10) / 48)
        .map(|i| format!("{tag}{i:05}{}", "x".repeat(40 - tag.len())))
        .collect();
    let filters = json!({ "user": users });
    let size = codestax_common::to_canonical_json(&filters).len();
    assert!(size <= bytes && size + 48 > bytes, "{size} for {bytes}");
    filters
}

/// The record of a change holds the old and the new filters: two sets that each fit a body
/// would not fit the collector's own entry together. A filter set over the documented bound is
/// the client's mistake, refused naming `filters` before anything is stored or recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_view_whose_change_cannot_be_recorded_is_refused_naming_filters() {
    use crate::saved_views::MAX_FILTERS_BYTES;
    let mut t = TestApp::new(config());
    let admin = t.key("ent", Role::OrgAdmin);
    let body = json!({"name": "big", "filters": filters_of("a", MAX_FILTERS_BYTES)}).to_string();
    let (status, view) = t.call(Method::POST, VIEWS, &admin, &body).await;
    assert_eq!(status, 201, "{view}");
    let path = format!("{VIEWS}/{}", view["id"].as_str().unwrap());

    // Over the bound (well within a body): refused, naming the field, on a change and a create.
    let over = filters_of("b", MAX_FILTERS_BYTES + 48);
    let patch = json!({"name": "bigger", "filters": over}).to_string();
    assert!(patch.len() < 64 * 1024);
    let (status, answer) = t.call(Method::PATCH, &path, &admin, &patch).await;
    assert_eq!(
        (status, &answer["error"]["code"], &answer["error"]["field"]),
        (400, &json!("invalid_parameter"), &json!("filters")),
        "{answer}"
    );
    let create = json!({"name": "other", "filters": over}).to_string();
    let (status, answer) = t.call(Method::POST, VIEWS, &admin, &create).await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("filters"))
    );

    // Nothing changed, nothing recorded.
    assert_eq!(t.get(&path, &admin).await.1, view);
    let (_, log) = t
        .get(
            "/api/v1/orgs/ent/audit-log?category=audit_log&action=audit_log.saved_view_changed",
            &admin,
        )
        .await;
    assert_eq!(log["total"], 0, "{log}");
}

/// A view stored before its filters were bounded may hold more than the bound: a change of its
/// filters (its old ones recorded whole) still cannot be recorded, and is refused naming
/// `filters`, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_a_view_stored_over_the_bound_is_refused_naming_filters() {
    let mut t = TestApp::new(config());
    let admin = t.key("ent", Role::OrgAdmin);
    let users = filters_of("a", 60 * 1024)["user"].clone();
    let now = truncate_to_micros(Utc::now());
    let old = crate::saved_views::SavedView {
        id: "view_old".into(),
        name: "from before".into(),
        filters: [("user".to_string(), serde_json::from_value(users).unwrap())].into(),
        created_at: now,
        updated_at: now,
        created_by: "key_old".into(),
    };
    t.state
        .saved_views
        .change_recorded(
            "ent",
            |v| crate::saved_views::add(v, old),
            |_| Ok::<_, ()>(()),
        )
        .unwrap()
        .unwrap();
    let path = format!("{VIEWS}/view_old");
    let (_, before) = t.get(&path, &admin).await;
    let patch = json!({"filters": filters_of("b", 8 * 1024)}).to_string();
    let (status, answer) = t.call(Method::PATCH, &path, &admin, &patch).await;
    assert_eq!(
        (status, &answer["error"]["code"], &answer["error"]["field"]),
        (400, &json!("too_large_to_record"), &json!("filters")),
        "{answer}"
    );
    assert_eq!(t.get(&path, &admin).await.1, before);
    // Its name can still change: that record holds no filters.
    let (status, renamed) = t
        .call(Method::PATCH, &path, &admin, r#"{"name": "renamed"}"#)
        .await;
    assert_eq!((status, &renamed["name"]), (200, &json!("renamed")));
}

/// The collector's own entries are checked against their own fixed limit, not
/// `ingest.max_record_bytes` (which bounds what apps send, as low as 1 KiB): at that setting a
/// change of the largest filters, and a search with the longest `q`, are still served and
/// recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collectors_own_entries_are_recorded_whatever_ingest_max_record_bytes_says() {
    use crate::saved_views::MAX_FILTERS_BYTES;
    let mut config = config();
    config.ingest.max_record_bytes = 1024;
    let mut t = TestApp::new(config);
    let admin = t.key("ent", Role::OrgAdmin);
    let body = json!({"name": "big", "filters": filters_of("a", MAX_FILTERS_BYTES)}).to_string();
    let (status, view) = t.call(Method::POST, VIEWS, &admin, &body).await;
    assert_eq!(status, 201, "{view}");
    let path = format!("{VIEWS}/{}", view["id"].as_str().unwrap());
    let name = "\u{1F600}".repeat(crate::saved_views::MAX_NAME_CHARS);
    let patch = json!({"name": name, "filters": filters_of("b", MAX_FILTERS_BYTES)}).to_string();
    let (status, changed) = t.call(Method::PATCH, &path, &admin, &patch).await;
    assert_eq!(status, 200, "{changed}");

    let q = "w".repeat(crate::index::MAX_Q_CHARS);
    let (status, page) = t
        .get(&format!("/api/v1/orgs/ent/audit-log?q={q}"), &admin)
        .await;
    assert_eq!(status, 200, "{page}");
    let (_, log) = t
        .get(
            "/api/v1/orgs/ent/audit-log?category=audit_log&limit=10",
            &admin,
        )
        .await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "audit_log.viewed",
            "audit_log.saved_view_changed",
            "audit_log.saved_view_created"
        ],
        "{log}"
    );
    assert_eq!(log["entries"][0]["metadata"]["filters"]["q"], json!([q]));
}
