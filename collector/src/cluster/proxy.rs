//! Forwarding an org's read to its shard's owner: method, path and query, headers (the bearer
//! key among them) and body are passed on, and the owner's answer streamed back as it comes.
//! One connection per request, HTTP/1.1, to the owner's `advertise_url`: `http://`, or
//! `https://` (TLS, the owner's certificate checked against the system's roots for its host).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response, Uri, header};
use rustls_pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

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

/// A shard's failed forwards are logged at most once in this long: during a failover every read
/// of the shard fails the same way, and one line per read would flood the log.
pub const FORWARD_WARN_EVERY: Duration = Duration::from_secs(10);

/// Which failed forwards are logged: per shard, the first, then one per [`FORWARD_WARN_EVERY`]
/// carrying how many were not logged since (one entry per shard: bounded by the shard count).
#[derive(Debug)]
pub struct ForwardWarnings {
    every: Duration,
    shards: Mutex<HashMap<u32, Quiet>>,
}

/// A shard's last logged failure and the failures not logged since.
#[derive(Debug)]
struct Quiet {
    logged_at: Instant,
    suppressed: u64,
}

impl Default for ForwardWarnings {
    fn default() -> Self {
        ForwardWarnings::new(FORWARD_WARN_EVERY)
    }
}

impl ForwardWarnings {
    pub fn new(every: Duration) -> Self {
        ForwardWarnings {
            every,
            shards: Mutex::new(HashMap::new()),
        }
    }

    /// A forward to `shard`'s owner failed at `now`: `Some(suppressed)` when it is to be logged,
    /// with the failures not logged since the last line, `None` when it is not.
    pub fn admit(&self, shard: u32, now: Instant) -> Option<u64> {
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let Some(quiet) = shards.get_mut(&shard) else {
            shards.insert(
                shard,
                Quiet {
                    logged_at: now,
                    suppressed: 0,
                },
            );
            return Some(0);
        };
        if now.saturating_duration_since(quiet.logged_at) < self.every {
            quiet.suppressed += 1;
            return None;
        }
        quiet.logged_at = now;
        Some(std::mem::take(&mut quiet.suppressed))
    }
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

/// How the owners' `https://` advertise URLs are checked: against the system's roots (a private
/// CA goes into the system's trust store), loaded once.
fn owner_tls() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| crate::stream::tls::client_config(None))
        .clone()
}

/// Sends `request` to the node at `base_url` (an `http://` or `https://` advertise URL) on
/// behalf of node `from`, and returns its answer with the body streaming.
pub async fn forward(
    base_url: &str,
    from: &str,
    request: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    forward_trusting(base_url, from, request, owner_tls).await
}

/// [`forward`], an `https://` owner's certificate checked with what `tls` gives.
async fn forward_trusting(
    base_url: &str,
    from: &str,
    request: Request<Body>,
    tls: impl FnOnce() -> Result<Arc<ClientConfig>, String>,
) -> Result<Response<Body>, ProxyError> {
    let url_error = |reason: &str| ProxyError::Url {
        url: base_url.to_string(),
        reason: reason.to_string(),
    };
    let base: Uri = base_url.parse().map_err(|_| url_error("not a URL"))?;
    let secure = match base.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(url_error(
                "only http:// and https:// advertise URLs are routed to",
            ));
        }
    };
    let authority = base
        .authority()
        .ok_or_else(|| url_error("no host"))?
        .clone();
    let port = authority
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    // An IPv6 literal without its brackets, for the socket and the certificate check.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let connect_error = |reason: String| ProxyError::Connect {
        url: base_url.to_string(),
        reason,
    };
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| connect_error("timed out".into()))?
    .map_err(|e| connect_error(e.to_string()))?;

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
    let request = Request::from_parts(parts, body);
    let answer = if secure {
        let config = tls().map_err(|reason| connect_error(format!("TLS settings: {reason}")))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| url_error("not a TLS server name"))?;
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| connect_error("the TLS handshake timed out".into()))?
        .map_err(|e| connect_error(format!("TLS: {e}")))?;
        send(stream, request, base_url).await?
    } else {
        send(tcp, request, base_url).await?
    };
    let (mut parts, body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// One HTTP/1.1 exchange over `io` (TCP, or TLS over TCP).
async fn send<T>(
    io: T,
    request: Request<Body>,
    base_url: &str,
) -> Result<Response<hyper::body::Incoming>, ProxyError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        hyper::client::conn::http1::handshake::<_, Body>(hyper_util::rt::TokioIo::new(io)),
    )
    .await
    .map_err(|_| ProxyError::Connect {
        url: base_url.to_string(),
        reason: "the HTTP handshake timed out".into(),
    })?
    .map_err(|e| ProxyError::Connect {
        url: base_url.to_string(),
        reason: e.to_string(),
    })?;
    // Runs until the answer's body has been read to its end.
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| ProxyError::Send {
            url: base_url.to_string(),
            reason: e.to_string(),
        })
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

    #[test]
    fn failed_forwards_are_logged_once_per_shard_per_interval_with_a_count() {
        let warnings = ForwardWarnings::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(warnings.admit(3, at(0)), Some(0), "the first is logged");
        for ms in [1, 500, 9_999] {
            assert_eq!(warnings.admit(3, at(ms)), None, "{ms} ms");
        }
        assert_eq!(
            warnings.admit(7, at(100)),
            Some(0),
            "another shard has its own interval"
        );
        assert_eq!(
            warnings.admit(3, at(10_000)),
            Some(3),
            "the next line counts the three not logged"
        );
        assert_eq!(warnings.admit(3, at(10_001)), None);
        assert_eq!(warnings.admit(3, at(25_000)), Some(1));
        assert_eq!(warnings.admit(3, at(40_000)), Some(0));
        // A clock read out of order (another thread's earlier `now`) is not logged.
        assert_eq!(warnings.admit(7, at(50)), None);
    }

    /// An owner behind TLS with a private CA's certificate for 127.0.0.1: it answers with the
    /// head of the request it got.
    async fn tls_owner(dir: &std::path::Path) -> (std::net::SocketAddr, Arc<ClientConfig>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let files = codestax_harness::test_certificates(dir, "IP:127.0.0.1").unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(files.server_config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.write_all(&head).await;
                let _ = tls.shutdown().await;
            }
        });
        (
            addr,
            crate::stream::tls::client_config(Some(&files.ca())).unwrap(),
        )
    }

    #[tokio::test]
    async fn forwards_to_an_https_owner_whose_certificate_it_trusts_only() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, trusted) = tls_owner(dir.path()).await;
        let url = format!("https://{addr}");
        let request = || {
            Request::builder()
                .uri("/api/v1/orgs/acme/audit-log?q=x")
                .header(header::AUTHORIZATION, "Bearer csk_token")
                .body(Body::empty())
                .unwrap()
        };
        let answer = forward_trusting(&url, "c1", request(), || Ok(trusted.clone()))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        let head = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(
            head.starts_with("get /api/v1/orgs/acme/audit-log?q=x http/1.1"),
            "{head}"
        );
        assert!(head.contains("x-codestax-routed-from: c1"), "{head}");
        assert!(head.contains("authorization: bearer csk_token"), "{head}");
        // The system's roots do not know the private CA: refused, not sent.
        let err = forward(&url, "c1", request()).await.unwrap_err();
        assert!(
            matches!(&err, ProxyError::Connect { reason, .. } if reason.contains("TLS")),
            "{err}"
        );
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
        let err = forward("ftp://c2.example:8470", "c1", request())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Url { .. }), "{err}");
    }
}
