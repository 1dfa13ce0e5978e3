//! Forwarding an org's read to its shard's owner: method, path and query, headers (the bearer
//! key among them) and body are passed on, and the owner's answer streamed back as it comes.
//! One connection per request, HTTP/1.1, to the owner's `advertise_url`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response, Uri, header};

/// Marks a request one node forwarded to another (its value: the forwarding node). A node that
/// gets such a request for a shard it does not hold answers 503 instead of forwarding again, so
/// a stale view of the owners never makes a loop.
pub const ROUTED_HEADER: &str = "x-codestax-routed-from";
/// Longest wait for the owner's TCP connection and HTTP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request could not be forwarded (the caller answers 503).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("owner URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot reach the owner at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the owner at {url} did not answer: {reason}")]
    Send { url: String, reason: String },
}

/// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Sends `request` to the node at `base_url` (an `http://host:port` advertise URL) on behalf of
/// node `from`, and returns its answer with the body streaming.
pub async fn forward(
    base_url: &str,
    from: &str,
    request: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let url_error = |reason: &str| ProxyError::Url {
        url: base_url.to_string(),
        reason: reason.to_string(),
    };
    let base: Uri = base_url.parse().map_err(|_| url_error("not a URL"))?;
    if base.scheme_str() != Some("http") {
        return Err(url_error("only http:// advertise URLs are routed to"));
    }
    let authority = base
        .authority()
        .ok_or_else(|| url_error("no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let connect_error = |reason: String| ProxyError::Connect {
        url: base_url.to_string(),
        reason,
    };
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((authority.host(), port)),
    )
    .await
    .map_err(|_| connect_error("timed out".into()))?
    .map_err(|e| connect_error(e.to_string()))?;
    let (mut sender, connection) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        hyper::client::conn::http1::handshake::<_, Body>(hyper_util::rt::TokioIo::new(tcp)),
    )
    .await
    .map_err(|_| connect_error("the HTTP handshake timed out".into()))?
    .map_err(|e| connect_error(e.to_string()))?;
    // Runs until the answer's body has been read to its end.
    tokio::spawn(connection);

    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = path.parse().map_err(|_| url_error("bad request target"))?;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(
        header::HOST,
        HeaderValue::from_str(authority.as_str()).map_err(|_| url_error("bad host"))?,
    );
    if let Ok(from) = HeaderValue::from_str(from) {
        parts.headers.insert(ROUTED_HEADER, from);
    }
    let answer = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| ProxyError::Send {
            url: base_url.to_string(),
            reason: e.to_string(),
        })?;
    let (mut parts, body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::routing::any;

    /// An owner that answers with what it got: method, target, key, forwarder, body.
    async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: String) -> Response<Body> {
        let got = serde_json::json!({
            "method": method.as_str(),
            "target": uri.to_string(),
            "authorization": headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
            "routed_from": headers.get(ROUTED_HEADER).and_then(|v| v.to_str().ok()),
            "connection": headers.get(header::CONNECTION).is_some(),
            "body": body,
        });
        Response::builder()
            .status(StatusCode::IM_A_TEAPOT)
            .header("x-owner", "c2")
            .body(Body::from(got.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn forwards_the_request_and_streams_the_answer_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(any(echo));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let request = Request::builder()
            .method(Method::PUT)
            .uri("http://c1.example/api/v1/orgs/acme/settings/retention?x=1")
            .header(header::AUTHORIZATION, "Bearer csk_token")
            .header(header::CONNECTION, "keep-alive")
            .body(Body::from("{\"days\":30}"))
            .unwrap();
        let answer = forward(&format!("http://{addr}"), "c1", request)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(answer.headers()["x-owner"], "c2");
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        let got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got["method"], "PUT");
        assert_eq!(got["target"], "/api/v1/orgs/acme/settings/retention?x=1");
        assert_eq!(got["authorization"], "Bearer csk_token");
        assert_eq!(got["routed_from"], "c1");
        assert_eq!(got["connection"], false, "hop-by-hop headers stay behind");
        assert_eq!(got["body"], "{\"days\":30}");
    }

    #[tokio::test]
    async fn an_owner_out_of_reach_or_an_unsupported_url_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let request = || Request::builder().uri("/").body(Body::empty()).unwrap();
        let err = forward(&format!("http://{closed}"), "c1", request())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Connect { .. }), "{err}");
        let err = forward("https://c2.example:8470", "c1", request())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Url { .. }), "{err}");
    }
}
