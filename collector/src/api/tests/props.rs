//! Property test of the whole router over a real store, index and key store: generated
//! requests (any route, method, token, query string, content type, encoding and body) never
//! answer 5xx.
//! Longer run: `PROPTEST_CASES=5000 cargo test --release -p codestax-collector prop_no_request`.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;

#[path = "../../../../common/tests/support/records.rs"]
mod records;

/// Route templates with the method they answer; `{org}` and `{id}` are filled from generated
/// values.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/orgs/{org}/audit-log"),
    ("GET", "/api/v1/orgs/{org}/audit-log/facets"),
    ("GET", "/api/v1/orgs/{org}/audit-log/export"),
    ("GET", "/api/v1/orgs/{org}/audit-log/{id}"),
    ("GET", "/api/v1/orgs/{org}/audit-log/verify"),
    ("GET", "/api/v1/orgs/{org}/settings/retention"),
    ("PUT", "/api/v1/orgs/{org}/settings/retention"),
    ("GET", "/api/v1/orgs/{org}/saved-views"),
    ("POST", "/api/v1/orgs/{org}/saved-views"),
    ("GET", "/api/v1/orgs/{org}/saved-views/{id}"),
    ("PATCH", "/api/v1/orgs/{org}/saved-views/{id}"),
    ("DELETE", "/api/v1/orgs/{org}/saved-views/{id}"),
    ("GET", "/api/v1/orgs/{org}/keys"),
    ("POST", "/api/v1/orgs/{org}/keys"),
    ("DELETE", "/api/v1/orgs/{org}/keys/{id}"),
    ("POST", "/api/v1/ingest"),
    ("POST", "/v1/logs"),
    ("GET", "/api/v1/whoami"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/{id}"),
];

fn query() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "since",
        "until",
        "q",
        "user",
        "action",
        "category",
        "outcome",
        "limit",
        "cursor",
        "top",
        "format",
        "with_chain",
        "x",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "7d",
            "99999999999d",
            "2026-11-27",
            "csv",
            "json",
            "ndjson",
            "true",
            "0",
            "1",
            "100000000000000000000",
            "scan",
            "-x \"y",
            "user:",
            "AAAA",
            "success",
        ])
        .prop_map(str::to_string),
        "\\PC{0,12}",
    ];
    prop::collection::vec((key, value), 0..4).prop_map(|pairs| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["ent", "evt-1", "evt-7"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["team", "held", "nope", "..", "%FF", "%00", "a%2Fb", ""])
            .prop_map(str::to_string),
        1 => "[a-zA-Z0-9._~-]{1,20}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(records::any_line(records::Shape::ANY), 1..4)
            .prop_map(|lines| lines.join(&b'\n')),
        prop::sample::select(vec![
            r#"{"days":30}"#,
            r#"{"days":0}"#,
            r#"{"days":-1}"#,
            r#"{"days":"x"}"#,
            r#"{"days":99999999999999999999}"#,
            r#"{"role":"member","name":"k"}"#,
            r#"{"role":"owner"}"#,
            "null",
            "[]",
            "{",
            r#"{"resourceLogs":[{}]}"#,
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn prop_no_request_answers_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let t = RefCell::new(TestApp::new(config()));
    let tokens: Vec<String> = {
        let t = t.borrow();
        vec![
            t.key("ent", Role::OrgOwner),
            t.key("ent", Role::Member),
            t.key("ent", Role::Ingest),
            t.key("team", Role::OrgAdmin),
            "csk_not_a_key".into(),
            String::new(),
        ]
    };
    let now = Utc::now();
    rt.block_on(
        t.borrow_mut().ingest(
            (0..20)
                .map(|i| record("ent", &format!("evt-{i}"), now - Duration::hours(i)))
                .collect(),
        ),
    );
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    // Requests that got past authentication and routing: the generator reaches the handlers.
    let handled = std::cell::Cell::new(0u32);
    let strategy = (
        prop::sample::select(ROUTES.to_vec()),
        proptest::option::of(prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH",
        ])),
        segment(),
        segment(),
        query(),
        prop_oneof![4 => 0..3usize, 1 => 0..tokens.len() + 1],
        prop::sample::select(vec![
            "",
            "application/json",
            "application/json",
            "application/x-ndjson",
            "application/x-protobuf",
            "text/plain",
            "application/json; charset=utf-8",
            "x/y",
        ]),
        prop_oneof![
            4 => Just(None),
            1 => prop::sample::select(vec!["gzip", "identity", "br", "gzip, gzip"]).prop_map(Some),
        ],
        body(),
    );
    runner
        .run(
            &strategy,
            |(
                (route_method, template),
                other_method,
                org,
                id,
                query,
                token,
                content_type,
                encoding,
                body,
            )| {
                // Mostly the route's own method, now and then another.
                let method =
                    Method::from_bytes(other_method.unwrap_or(route_method).as_bytes()).unwrap();
                let path = template.replace("{org}", &org).replace("{id}", &id);
                let uri = if query.is_empty() {
                    path
                } else {
                    format!("{path}?{query}")
                };
                let mut request = Request::builder().method(method.clone()).uri(&uri);
                if let Some(token) = tokens.get(token) {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                if !content_type.is_empty() {
                    request = request.header("content-type", content_type);
                }
                if let Some(encoding) = encoding {
                    request = request.header("content-encoding", encoding);
                }
                let Ok(request) = request.body(Body::from(body)) else {
                    return Ok(()); // Not a request the HTTP layer would parse.
                };
                let state = t.borrow().state.clone();
                let (status, bytes) = rt.block_on(async move {
                    let response = app(state).oneshot(request).await.unwrap();
                    let status = response.status();
                    let bytes = response.into_body().collect().await.unwrap().to_bytes();
                    (status, bytes)
                });
                t.borrow_mut().index_pending();
                if status.is_success() || status == axum::http::StatusCode::BAD_REQUEST {
                    handled.set(handled.get() + 1);
                }
                prop_assert!(
                    !status.is_server_error(),
                    "{method} {uri} answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                );
                Ok(())
            },
        )
        .unwrap();
    eprintln!("{} of {cases} requests handled", handled.get());
    assert!(handled.get() >= cases / 20, "{} of {cases}", handled.get());
}
