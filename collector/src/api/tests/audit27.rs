//! Audit 27: holes found by a hostile pass over the API, each shown by a test that fails on the
//! code as it is (nothing in production code is changed here).

use super::*;

/// `codestax import` brings a source's `audit_log.viewed` entries in as `imported` records, and
/// an INGEST key chooses their actor. `group_views=true` groups consecutive views by
/// `actor.id` alone, whoever wrote them: an import naming a real reader's key joins that
/// reader's run of the collector's own view entries, and the row counts it as one of its views
/// (the dashboard's grouped line shows no writer at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_view_joins_a_real_readers_run_of_collector_views() {
    let mut t = TestApp::new(config());
    let (admin_info, admin) = t.state.keys.create("ent", Role::OrgAdmin, None).unwrap();
    let admin = admin.expose().to_string();
    let ingest = t.key("ent", Role::Ingest);
    // Two real reads: two collector entries by the admin key.
    for _ in 0..2 {
        assert_eq!(t.get("/api/v1/orgs/ent/audit-log", &admin).await.0, 200);
    }
    let fake = json!({
        "id": "imported-view-1",
        "time": codestax_common::time::format_rfc3339(&truncate_to_micros(Utc::now())),
        "actor": {"id": admin_info.id, "kind": "api_key"},
        "action": "audit_log.viewed",
        "target": {"kind": "organization", "id": "ent"},
        "metadata": {"filters": {}, "role": "ORG_ADMIN", "total": 0}
    });
    let (status, answer) = t
        .call(Method::POST, "/api/v1/import", &ingest, &fake.to_string())
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let (status, page) = t
        .get(
            "/api/v1/orgs/ent/audit-log?action=audit_log.viewed&group_views=true",
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    for row in page["rows"].as_array().unwrap() {
        let Some(run) = row.get("views") else {
            continue;
        };
        let writers: Vec<&Value> = run["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &entries[i.as_u64().unwrap() as usize]["provenance"]["writer"])
            .collect();
        assert!(
            writers.iter().all(|w| *w == "collector"),
            "a run of {}'s views mixes writers {writers:?}: {row}",
            run["actor_id"]
        );
    }
}
