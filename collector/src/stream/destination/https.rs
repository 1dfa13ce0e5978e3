//! The `https` destination: each batch is one `POST` of NDJSON (one record a line, in `seq`
//! order) to the stream's URL, signed with HMAC-SHA256 when the stream has a secret:
//!
//! `X-Codestax-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`
//!
//! A receiver recomputes it over the raw body, compares in constant time and refuses a `t` too
//! far from its clock (replays). `X-Codestax-Stream`, `X-Codestax-First-Seq` and
//! `X-Codestax-Last-Seq` name the stream and the batch. Any 2xx accepts the whole batch; 401,
//! 403, 404 and 410 are not retryable (the stream shows `failed`), anything else is retried. One
//! kept-alive connection per stream ([`HttpClient`]), opened again (the address checked again)
//! when the receiver closes it; the answer's body is read (up to 64 KiB) and dropped.

use super::batch::{Item, SendError, TestAnswer};
use super::http::HttpClient;
use crate::stream::allow::Allowlist;
use crate::stream::definition::Secrets;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use sha2::Sha256;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-codestax-signature";

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `unix` seconds.
pub fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct HttpsSender {
    client: HttpClient,
    stream_id: HeaderValue,
    path: String,
    secret: Option<Vec<u8>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpsSender {
    pub fn new(
        stream_id: &str,
        url: &str,
        ca_pem: Option<&str>,
        secrets: &Secrets,
        allow: Allowlist,
    ) -> Result<HttpsSender, SendError> {
        let bad = |m: String| SendError::NonRetryable(m);
        let client = HttpClient::new(url, ca_pem, allow)?;
        let headers = secrets
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(e.to_string()))?,
                    HeaderValue::from_str(v).map_err(|e| bad(e.to_string()))?,
                ))
            })
            .collect::<Result<Vec<_>, SendError>>()?;
        Ok(HttpsSender {
            stream_id: HeaderValue::from_str(stream_id).map_err(|e| bad(e.to_string()))?,
            path: client
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            client,
            secret: secrets.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            headers,
        })
    }

    pub async fn send(&mut self, items: &[Item]) -> Result<(), SendError> {
        let status = self.post(items).await?;
        classify(status)
    }

    pub async fn test(&mut self, item: &Item) -> Result<TestAnswer, SendError> {
        let status = self.post(std::slice::from_ref(item)).await?;
        Ok(TestAnswer {
            status: Some(status),
            accepted: (200..300).contains(&status),
        })
    }

    /// POSTs the batch and returns the answer's status.
    async fn post(&mut self, items: &[Item]) -> Result<u16, SendError> {
        let mut body = Vec::with_capacity(items.iter().map(|i| i.json.len() + 1).sum());
        for i in items {
            body.extend_from_slice(&i.json);
            body.push(b'\n');
        }
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(header::HOST, self.client.authority().clone())
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header("x-codestax-stream", self.stream_id.clone());
        if let (Some(first), Some(last)) = (items.first(), items.last()) {
            req = req
                .header("x-codestax-first-seq", first.seq)
                .header("x-codestax-last-seq", last.seq);
        }
        if let Some(secret) = &self.secret {
            let t = chrono::Utc::now().timestamp();
            req = req.header(SIGNATURE_HEADER, signature(secret, t, &body));
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::NonRetryable(format!("cannot build the request: {e}")))?;
        Ok(self.client.send(req).await?.status)
    }
}

/// 2xx accepts; 401, 403, 404 and 410 will not change by retrying; anything else may.
fn classify(status: u16) -> Result<(), SendError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 | 404 | 410 => Err(SendError::NonRetryable(format!(
            "the destination answered {status}"
        ))),
        _ => Err(SendError::Retryable(format!(
            "the destination answered {status}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac k
        let s = signature(b"k", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            s,
            "t=1700000000,v1=1b6ad1bc9bf48c52ce01939866d5877c6cc4e87ddad27e16673cb8c4964394a3"
        );
        assert_eq!(classify(204), Ok(()));
        assert!(matches!(classify(403), Err(SendError::NonRetryable(_))));
        assert!(matches!(classify(503), Err(SendError::Retryable(_))));
    }
}
