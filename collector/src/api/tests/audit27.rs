//! Audit 27: holes found by a hostile pass over the API, each shown by a test that fails on the
//! code as it is (nothing in production code is changed here).

use super::*;

/// A cursor as `index::cursor` lays out version 1: anyone can make one, since its tag is a bare
/// SHA-256 of public inputs (the org and the query as `index::query::scope` spells them).
fn forged_cursor(scope: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut body = vec![1u8];
    body.extend_from_slice(&u64::MAX.to_be_bytes()); // snapshot: everything stored
    body.extend_from_slice(&i64::MAX.to_be_bytes()); // "after" the newest possible entry
    let mut h = Sha256::new();
    h.update(b"codestax-audit-cursor\0");
    h.update((scope.len() as u64).to_be_bytes());
    h.update(scope.as_bytes());
    h.update(&body);
    body.extend_from_slice(&h.finalize()[..8]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
}

/// Every search records an `audit_log.viewed` entry "once per result set": only the first page
/// (no `cursor`) is recorded. A cursor is bound to the org and filters by a tag that is not
/// keyed, so an ORG_ADMIN key forges a "next page" cursor for any filters, starting above the
/// newest record, and reads the whole result set with no trace in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_cursor_reads_any_result_set_without_an_audit_log_viewed_entry() {
    let mut t = TestApp::new(config());
    let admin = t.key("ent", Role::OrgAdmin);
    let now = Utc::now();
    t.ingest(
        (0..5)
            .map(|i| record("ent", &format!("s-{i}"), now - Duration::minutes(i)))
            .collect(),
    )
    .await;
    let scope = "v1\x1eent\x1e[]\x1e[]\x1e[\"scan\"]\x1e[]\x1e[]\x1eNone\x1eNone\x1eNone";
    let path = format!(
        "/api/v1/orgs/ent/audit-log?category=scan&limit=1000&cursor={}",
        forged_cursor(scope)
    );
    let (status, page) = t.get(&path, &admin).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["entries"].as_array().unwrap().len(),
        5,
        "the forged cursor reads the whole result set: {page}"
    );
    // What the log says was read (this search is recorded itself, after it counts).
    let (status, views) = t
        .get("/api/v1/orgs/ent/audit-log?action=audit_log.viewed", &admin)
        .await;
    assert_eq!(status, 200, "{views}");
    assert!(
        views["total"].as_u64().unwrap() >= 1,
        "5 records were read with no audit_log.viewed entry: {views}"
    );
}

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
