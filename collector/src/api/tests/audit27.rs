//! Audit 27: holes found by a hostile pass over the API, each shown by a test that fails on the
//! code as it is (nothing in production code is changed here).

use super::*;

const VIEWS: &str = "/api/v1/orgs/ent/saved-views";

/// A saved view's filters: `n` user values of about 45 bytes, all starting with `tag`.
fn big_filters(tag: &str, n: usize) -> Value {
    let users: Vec<String> = (0..n).map(|i| format!("{tag}{i:05}{}", "x".repeat(40))).collect();
    json!({ "user": users })
}

/// A change of a saved view's filters is recorded with the old and the new filters; two sets
/// that each fit a body (and a create's record) together pass `ingest.max_record_bytes`, and
/// the collector's own record of the change is refused by its own validation: the client gets
/// a 500 `internal` (no field) for a request that is its own mistake, or none at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_view_change_too_big_to_record_is_a_500() {
    let mut t = TestApp::new(config());
    let admin = t.key("ent", Role::OrgAdmin);
    let body = json!({"name": "big", "filters": big_filters("a", 700)}).to_string();
    assert!(body.len() < 64 * 1024);
    let (status, view) = t.call(Method::POST, VIEWS, &admin, &body).await;
    assert_eq!(status, 201, "{view}");
    let id = view["id"].as_str().unwrap().to_string();
    let patch = json!({"filters": big_filters("b", 700)}).to_string();
    assert!(patch.len() < 64 * 1024);
    let (status, answer) = t
        .call(Method::PATCH, &format!("{VIEWS}/{id}"), &admin, &patch)
        .await;
    assert!(
        status < 500,
        "a too-large saved-view change answers {status} {answer}; a client's own mistake \
         should be a 4xx naming the field"
    );
}
