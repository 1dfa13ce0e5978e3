//! The `s3` destination: each batch becomes gzip-compressed NDJSON objects (one record a line,
//! in `seq` order) in any S3-compatible store, one object per receive hour:
//!
//! `<prefix>/org=<org>/date=YYYY-MM-DD/hour=HH/<first_seq>-<last_seq>.ndjson.gz`
//!
//! (UTC receive time; seqs zero-padded to 20 digits so listing order is `seq` order). A batch
//! spanning an hour boundary is split; each object is one `PUT`, which S3 makes visible whole
//! or not at all, and the same `seq` range always gives the same key and the same bytes. The
//! delivery task records a batch's range in the stream's cursor before sending it and sends
//! exactly that range again after a crash or a lost answer (`Cursor::pending_last`), so it
//! overwrites, never overlaps, its objects: each `seq` is in one object.
//!
//! S3 itself is `object_store`'s client (SigV4, path-style for a custom endpoint, its error
//! mapping); its requests go through [`connect`], the allowlist-checked connection every
//! destination uses, over HTTP/1 (hyper). 401/403/404 (bad credentials, no such bucket) and a
//! 400 refusing the session token (`ExpiredToken`, `InvalidToken`) are not retryable
//! (`failed`); anything else is.

use super::batch::{Item, SendError, TestAnswer};
use super::connect::{SEND_TIMEOUT, connect};
use crate::stream::allow::Allowlist;
use crate::stream::definition::{Destination, Secrets, unbracket};
use crate::stream::tls::client_config;
use axum::http::{HeaderValue, Uri, header};
use chrono::{DateTime, Datelike, Timelike, Utc};
use flate2::write::GzEncoder;
use http_body_util::BodyExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, PutOptions, PutPayload, RetryConfig,
};
use std::io::Write;
use std::sync::Arc;

/// The content type of the objects (gzip of NDJSON; no `Content-Encoding`, so clients hand
/// back the compressed bytes the key's `.gz` promises).
const CONTENT_TYPE: &str = "application/gzip";

pub struct S3Sender {
    store: AmazonS3,
    prefix: String,
    stream_id: String,
}

impl S3Sender {
    /// A sender for `destination`, which must be an S3 one.
    pub fn new(
        stream_id: &str,
        destination: &Destination,
        secrets: &Secrets,
        allow: Allowlist,
    ) -> Result<S3Sender, SendError> {
        let Destination::S3 {
            bucket,
            prefix,
            region,
            endpoint,
            ca_pem,
        } = destination
        else {
            return Err(SendError::NonRetryable("not an S3 destination".into()));
        };
        let (endpoint, ca_pem) = (endpoint.as_deref(), ca_pem.as_deref());
        let bad = SendError::NonRetryable;
        let (Some(key_id), Some(key)) = (&secrets.access_key_id, &secrets.secret_access_key) else {
            return Err(bad("the stream has no S3 credentials".into()));
        };
        let https = endpoint.is_none_or(|e| e.starts_with("https://"));
        let tls = if https {
            Some(client_config(ca_pem).map_err(bad)?)
        } else {
            None
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region)
            .with_access_key_id(key_id)
            .with_secret_access_key(key)
            .with_allow_http(!https)
            // The delivery task retries, with its own backoff and status.
            .with_retry(RetryConfig {
                max_retries: 0,
                retry_timeout: SEND_TIMEOUT,
                ..RetryConfig::default()
            })
            .with_http_connector(CheckedConnector { allow, tls });
        if let Some(token) = &secrets.session_token {
            builder = builder.with_token(token);
        }
        if let Some(e) = endpoint {
            // Path-style (`<endpoint>/<bucket>/<key>`): what S3-compatible stores serve.
            builder = builder
                .with_endpoint(e)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| bad(format!("S3 settings: {e}")))?;
        Ok(S3Sender {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            stream_id: stream_id.to_string(),
        })
    }

    /// Writes the batch: one object per receive hour, in order; `Ok` once every one is stored.
    pub async fn send(&mut self, items: &[Item]) -> Result<(), SendError> {
        for run in hour_runs(items) {
            let (first, last) = (&run[0], &run[run.len() - 1]);
            let key = object_key(
                &self.prefix,
                &first.org,
                first.received_at,
                first.seq,
                last.seq,
            );
            self.put(&key, ndjson_gz(run)?).await?;
        }
        Ok(())
    }

    /// Writes one test object, `<prefix>/_codestax-test/org=<org>/<stream>.ndjson.gz` (outside
    /// the `org=` partitions readers scan; overwritten by each test).
    pub async fn test(&mut self, item: &Item) -> Result<TestAnswer, SendError> {
        let key = join(
            &self.prefix,
            &format!(
                "_codestax-test/org={}/{}.ndjson.gz",
                item.org, self.stream_id
            ),
        );
        let body = ndjson_gz(std::slice::from_ref(item))?;
        match self.put(&key, body).await {
            Ok(()) => Ok(TestAnswer {
                status: Some(200),
                accepted: true,
            }),
            Err(SendError::NonRetryable(m)) => match status_of(&m) {
                Some(status) => Ok(TestAnswer {
                    status: Some(status),
                    accepted: false,
                }),
                None => Err(SendError::NonRetryable(m)),
            },
            Err(e) => Err(e),
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), SendError> {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, CONTENT_TYPE.into());
        let opts = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let location = Path::from(key);
        let put = self.store.put_opts(&location, PutPayload::from(body), opts);
        match tokio::time::timeout(SEND_TIMEOUT, put).await {
            Err(_) => Err(SendError::Retryable(format!(
                "S3 PUT {key}: no answer within {SEND_TIMEOUT:?}"
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(key, &e)),
        }
    }
}

/// The object key of records `first..=last` of `org` received in the hour of `received`.
pub fn object_key(
    prefix: &str,
    org: &str,
    received: DateTime<Utc>,
    first: u64,
    last: u64,
) -> String {
    join(
        prefix,
        &format!(
            "org={org}/date={:04}-{:02}-{:02}/hour={:02}/{first:020}-{last:020}.ndjson.gz",
            received.year(),
            received.month(),
            received.day(),
            received.hour()
        ),
    )
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// The batch cut into runs of consecutive items received in the same UTC hour.
fn hour_runs(items: &[Item]) -> impl Iterator<Item = &[Item]> {
    let hour = |i: &Item| i.received_at.timestamp().div_euclid(3600);
    items.chunk_by(move |a, b| hour(a) == hour(b))
}

/// The items as gzip NDJSON. Deterministic (no name, time 0 in the gzip header): the same
/// records give the same object.
fn ndjson_gz(items: &[Item]) -> Result<Vec<u8>, SendError> {
    let raw: usize = items.iter().map(|i| i.json.len() + 1).sum();
    let mut gz = GzEncoder::new(Vec::with_capacity(raw / 4), flate2::Compression::default());
    for i in items {
        gz.write_all(&i.json)
            .and_then(|()| gz.write_all(b"\n"))
            .map_err(|e| SendError::Retryable(format!("gzip: {e}")))?;
    }
    gz.finish()
        .map_err(|e| SendError::Retryable(format!("gzip: {e}")))
}

/// 401, 403 and 404 (bad credentials, no such bucket) and a refused address will not change by
/// retrying; anything else may.
fn classify(key: &str, e: &object_store::Error) -> SendError {
    use object_store::Error as E;
    let status = match e {
        E::Unauthenticated { .. } => Some(401),
        E::PermissionDenied { .. } => Some(403),
        E::NotFound { .. } => Some(404),
        _ => None,
    };
    if let Some(status) = status {
        return SendError::NonRetryable(format!(
            "S3 answered {status} to PUT {key}: {}",
            first_line(e)
        ));
    }
    let text = first_line(e);
    // A session token S3 refuses is a 400, not a 403 (AWS and moto alike); retrying will not
    // fix it either (temporary credentials expire: a PATCH gives new ones).
    if let Some(code) = ["ExpiredToken", "InvalidToken", "TokenRefreshRequired"]
        .into_iter()
        .find(|c| text.contains(&format!("<Code>{c}</Code>")))
    {
        return SendError::NonRetryable(format!("S3 answered 400 ({code}) to PUT {key}: {text}"));
    }
    if let Some(refused) = source_of::<RefusedAddress>(e) {
        return SendError::NonRetryable(refused.0.clone());
    }
    SendError::Retryable(format!("S3 PUT {key}: {text}"))
}

/// The status a [`classify`] message names (`S3 answered <status> ...`).
fn status_of(message: &str) -> Option<u16> {
    message
        .strip_prefix("S3 answered ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// The error and its causes on one line (S3 answers are XML over several lines).
fn first_line(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    let out: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out.chars().take(500).collect()
}

fn source_of<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// The allowlist refused the endpoint's address (carried through object_store's error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RefusedAddress(String);

/// object_store's transport: each request on a fresh connection from [`connect`] (the address
/// checked against the allowlist, TLS for `https`), HTTP/1.
#[derive(Debug)]
struct CheckedConnector {
    allow: Allowlist,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

/// The same transport for another S3 client of the collector (the cluster's snapshots, whose
/// endpoint the operator configured: `allow` lets it through).
pub(crate) fn http_connector(
    allow: Allowlist,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
) -> impl HttpConnector {
    CheckedConnector { allow, tls }
}

impl HttpConnector for CheckedConnector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(CheckedHttp {
            allow: self.allow.clone(),
            tls: self.tls.clone(),
        }))
    }
}

#[derive(Debug)]
struct CheckedHttp {
    allow: Allowlist,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

#[async_trait::async_trait]
impl HttpService for CheckedHttp {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = req.into_parts();
        let uri = parts.uri.clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(request_error(format!("not an http(s) URL: {uri}"))),
        };
        let host = unbracket(
            uri.host()
                .ok_or_else(|| request_error(format!("no host in {uri}")))?,
        )
        .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            Some(
                self.tls
                    .as_ref()
                    .ok_or_else(|| request_error("https without TLS settings".into()))?,
            )
        } else {
            None
        };
        let io = connect(&self.allow, &host, port, tls)
            .await
            .map_err(|e| match e {
                SendError::NonRetryable(m) => {
                    HttpError::new(HttpErrorKind::Connect, RefusedAddress(m))
                }
                SendError::Retryable(m) => HttpError::new(HttpErrorKind::Connect, Message(m)),
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| HttpError::new(HttpErrorKind::Connect, e))?;
        // Ends when the answer has been read and the sender dropped.
        tokio::spawn(conn);
        // Origin-form request line; the Host the signature covers (object_store signs it and
        // leaves setting it to the client).
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or(host);
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|e| request_error(e.to_string()))?;
        parts.headers.insert(
            header::HOST,
            HeaderValue::from_str(&authority).map_err(|e| request_error(e.to_string()))?,
        );
        let response = sender
            .send_request(HttpRequest::from_parts(parts, body))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let (parts, body) = response.into_parts();
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

fn request_error(m: String) -> HttpError {
    HttpError::new(HttpErrorKind::Request, Message(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, received: &str) -> Item {
        let t = DateTime::parse_from_rfc3339(received)
            .unwrap()
            .with_timezone(&Utc);
        Item {
            seq,
            id: format!("r{seq}").into(),
            org: "acme".into(),
            time: t,
            received_at: t,
            json: format!("{{\"seq\":{seq}}}").into_bytes().into(),
        }
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let t = DateTime::parse_from_rfc3339("2026-12-03T10:59:59.999Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            object_key("audit/siem", "acme", t, 1, 500),
            "audit/siem/org=acme/date=2026-12-03/hour=10/\
             00000000000000000001-00000000000000000500.ndjson.gz"
        );
        assert_eq!(
            object_key("", "acme", t, 7, 7),
            "org=acme/date=2026-12-03/hour=10/00000000000000000007-00000000000000000007.ndjson.gz"
        );
    }

    #[test]
    fn a_batch_across_an_hour_is_split_and_objects_are_deterministic() {
        let items = [
            item(1, "2026-12-03T10:59:58Z"),
            item(2, "2026-12-03T10:59:59.999Z"),
            item(3, "2026-12-03T11:00:00Z"),
            item(4, "2026-12-03T11:30:00Z"),
        ];
        let runs: Vec<Vec<u64>> = hour_runs(&items)
            .map(|r| r.iter().map(|i| i.seq).collect())
            .collect();
        assert_eq!(runs, vec![vec![1, 2], vec![3, 4]]);
        let a = ndjson_gz(&items[..2]).unwrap();
        assert_eq!(
            a,
            ndjson_gz(&items[..2]).unwrap(),
            "same records, same bytes"
        );
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&a[..]), &mut text)
            .unwrap();
        assert_eq!(text, "{\"seq\":1}\n{\"seq\":2}\n");
    }

    #[test]
    fn a_refused_session_token_is_not_retried_other_400s_are() {
        let answer = |body: &str| object_store::Error::Generic {
            store: "S3",
            source: body.to_string().into(),
        };
        let e = classify(
            "k",
            &answer("400 Bad Request: <Error><Code>ExpiredToken</Code></Error>"),
        );
        assert!(
            matches!(&e, SendError::NonRetryable(m) if m.contains("400 (ExpiredToken)")),
            "{e:?}"
        );
        let e = classify(
            "k",
            &answer("400 Bad Request: <Error><Code>BadDigest</Code></Error>"),
        );
        assert!(matches!(e, SendError::Retryable(_)), "{e:?}");
    }

    #[test]
    fn answers_are_classified() {
        let m = "S3 answered 404 to PUT k: bucket";
        assert_eq!(status_of(m), Some(404));
        assert_eq!(status_of("S3 PUT k: connection refused"), None);
    }
}
