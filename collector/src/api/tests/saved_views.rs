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
