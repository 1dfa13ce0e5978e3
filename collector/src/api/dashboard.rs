//! The dashboard's Settings > Audit Log page: static HTML, CSS and JS embedded in the binary and
//! served with a strict Content-Security-Policy. The page signs in with an API key and talks to the
//! JSON API; nothing here needs a key or the index, so the routes take any state.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Where the Audit Log page lives; `/` redirects here.
pub const AUDIT_LOG_PAGE: &str = "/settings/audit-log";

/// The page renders untrusted audit data: scripts, styles and requests from this origin only, no
/// inline code, no framing, and Trusted Types so an `innerHTML` assignment throws in Chromium.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// One embedded file: its path, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: AUDIT_LOG_PAGE,
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../assets/dashboard/audit-log.html"),
    },
    Asset {
        path: "/dashboard/audit-log.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/dashboard/audit-log.js"),
    },
    Asset {
        path: "/dashboard/dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/dashboard/dashboard.css"),
    },
    Asset {
        path: "/dashboard/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/dashboard/favicon.svg"),
    },
];

/// The dashboard's routes, merged into the API's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/", get(|| async { Redirect::to(AUDIT_LOG_PAGE) }));
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    router
}

fn serve(asset: &'static Asset) -> Response {
    let headers = [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Embedded in the binary: a new build may change them, so revalidate each time.
        (header::CACHE_CONTROL, "no-cache"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    let mut response = asset.body.into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_every_asset_with_its_type_and_the_policy() {
        for asset in ASSETS {
            let response = get(asset.path).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let h = response.headers();
            assert_eq!(h[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], asset.body);
        }
    }

    #[tokio::test]
    async fn root_redirects_to_the_audit_log_page() {
        let response = get("/").await;
        assert!(response.status().is_redirection());
        assert_eq!(response.headers()[header::LOCATION], AUDIT_LOG_PAGE);
    }

    #[test]
    fn the_page_loads_only_its_own_files_and_has_no_inline_code() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for asset in &ASSETS[1..] {
            assert!(html.contains(asset.path), "the page links {}", asset.path);
        }
        for banned in ["<script>", "style=", "onclick", "http://", "https://"] {
            assert!(!html.contains(banned), "the page has {banned:?}");
        }
        let js = std::str::from_utf8(ASSETS[1].body).unwrap();
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "eval(",
            "document.write",
        ] {
            assert!(!js.contains(banned), "the script uses {banned}");
        }
        let default_src = CONTENT_SECURITY_POLICY.contains("default-src 'self'");
        assert!(default_src);
    }
}
