//! The `splunk_hec` destination: each batch is one `POST <url>/services/collector/event` with
//! `Authorization: Splunk <token>`, the body the batch's HEC events one after the other:
//!
//! `{"time": <record time, epoch seconds with fraction>, "host": <collector host>,
//!   "source": "codestax:<org>", "sourcetype": ..., "index"?: ..., "event": <formatted record>}`
//!
//! Splunk answers `{"text": ..., "code": n}`: a 2xx with code 0 accepts the whole batch. A bad,
//! disabled or missing token (401/403, codes 1–4), an unknown index (7) or a refused body are
//! not retryable (the stream shows `failed` and keeps trying slowly); server busy (503, code 9),
//! 429 and other 5xx are retried. Only the answer's `code` is read, never shown.

use super::batch::{Item, SendError, TestAnswer};
use super::connect::{CONNECT_TIMEOUT, SEND_TIMEOUT, connect};
use super::syslog::hostname;
use crate::stream::allow::Allowlist;
use crate::stream::tls::client_config;
use axum::http::{HeaderValue, Method, Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The HEC event endpoint, appended to the stream's URL.
pub const HEC_EVENT_PATH: &str = "/services/collector/event";
/// The most of an answer read (to find its `code`).
const ANSWER_LIMIT: usize = 64 * 1024;

pub struct HecSender {
    path: String,
    host: String,
    port: u16,
    authority: HeaderValue,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    authorization: HeaderValue,
    index: Option<String>,
    sourcetype: String,
    collector_host: String,
    allow: Allowlist,
}

impl HecSender {
    pub fn new(
        url: &str,
        token: Option<&str>,
        index: Option<&str>,
        sourcetype: &str,
        ca_pem: Option<&str>,
        allow: Allowlist,
    ) -> Result<HecSender, SendError> {
        let bad = |m: String| SendError::NonRetryable(m);
        let uri: Uri = url.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the URL must be https:// or http://".into())),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("the URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = HeaderValue::from_str(uri.authority().map_or(&host, |a| a.as_str()))
            .map_err(|e| bad(e.to_string()))?;
        let tls = if https {
            Some(client_config(ca_pem).map_err(bad)?)
        } else {
            None
        };
        let token = token.ok_or_else(|| bad("the stream has no HEC token".into()))?;
        let mut authorization = HeaderValue::from_str(&format!("Splunk {token}"))
            .map_err(|_| bad("the HEC token is not a valid header value".into()))?;
        authorization.set_sensitive(true);
        Ok(HecSender {
            path: format!("{}{HEC_EVENT_PATH}", uri.path().trim_end_matches('/')),
            host,
            port,
            authority,
            tls,
            authorization,
            index: index.map(str::to_string),
            sourcetype: sourcetype.to_string(),
            collector_host: hostname(),
            allow,
        })
    }

    pub async fn send(&mut self, items: &[Item]) -> Result<(), SendError> {
        let (status, code) = self.post(items).await?;
        classify(status, code)
    }

    pub async fn test(&mut self, item: &Item) -> Result<TestAnswer, SendError> {
        let (status, code) = self.post(std::slice::from_ref(item)).await?;
        Ok(TestAnswer {
            status: Some(status),
            accepted: classify(status, code).is_ok(),
        })
    }

    /// The batch as HEC events, one after the other.
    fn body(&self, items: &[Item]) -> Result<Vec<u8>, SendError> {
        let mut body = Vec::with_capacity(items.iter().map(|i| i.json.len() + 200).sum());
        for i in items {
            body.extend_from_slice(&hec_event(
                i,
                &self.collector_host,
                &self.sourcetype,
                self.index.as_deref(),
            )?);
            body.push(b'\n');
        }
        Ok(body)
    }

    /// POSTs the batch; the answer's status and HEC `code` (when its body has one).
    async fn post(&mut self, items: &[Item]) -> Result<(u16, Option<i64>), SendError> {
        let body = self.body(items)?;
        let io = connect(&self.allow, &self.host, self.port, self.tls.as_ref()).await?;
        let (mut sender, conn) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)),
        )
        .await
        .map_err(|_| SendError::Retryable("the HTTP handshake timed out".into()))?
        .map_err(|e| SendError::Retryable(format!("HTTP handshake: {e}")))?;
        let conn = tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(header::HOST, self.authority.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, self.authorization.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::NonRetryable(format!("cannot build the request: {e}")))?;
        let answer = tokio::time::timeout(SEND_TIMEOUT, async {
            let response = sender
                .send_request(req)
                .await
                .map_err(|e| SendError::Retryable(format!("HTTP: {e}")))?;
            let status = response.status().as_u16();
            // The code only: a body too long or cut short leaves it unknown.
            let code = Limited::new(response.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b.to_bytes()).ok())
                .and_then(|v| v.get("code").and_then(Value::as_i64));
            Ok::<_, SendError>((status, code))
        })
        .await;
        conn.abort();
        answer.map_err(|_| SendError::Retryable(format!("no answer within {SEND_TIMEOUT:?}")))?
    }
}

/// One HEC event for `item`.
pub fn hec_event(
    item: &Item,
    host: &str,
    sourcetype: &str,
    index: Option<&str>,
) -> Result<Vec<u8>, SendError> {
    let record: Value = serde_json::from_slice(&item.json)
        .map_err(|e| SendError::NonRetryable(format!("record {} is not JSON: {e}", item.id)))?;
    let micros = item.time.timestamp_micros();
    let time = serde_json::Number::from_f64(micros as f64 / 1e6).map_or(Value::Null, Value::Number);
    let mut e = Map::new();
    e.insert("time".into(), time);
    e.insert("host".into(), host.into());
    e.insert("source".into(), format!("codestax:{}", item.org).into());
    e.insert("sourcetype".into(), sourcetype.into());
    if let Some(index) = index {
        e.insert("index".into(), index.into());
    }
    e.insert("event".into(), record);
    serde_json::to_vec(&Value::Object(e)).map_err(|e| SendError::NonRetryable(e.to_string()))
}

/// What an answer means: Splunk's status and HEC code.
fn classify(status: u16, code: Option<i64>) -> Result<(), SendError> {
    let what = match code {
        Some(c) => format!("the HEC endpoint answered {status} (code {c})"),
        None => format!("the HEC endpoint answered {status}"),
    };
    match (status, code) {
        (200..=299, Some(0) | None) => Ok(()),
        // Busy, internal error, or an HTTP status that may pass.
        (_, Some(8 | 9)) | (429 | 500..=599 | 408, _) => Err(SendError::Retryable(what)),
        // Token missing, disabled, invalid; index refused; a body Splunk will not take.
        _ => Err(SendError::NonRetryable(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_event_carries_time_source_and_the_record() {
        let item = Item {
            seq: 7,
            id: "r7".into(),
            org: "acme".into(),
            time: chrono::Utc
                .timestamp_micros(1_700_000_000_250_000)
                .single()
                .unwrap(),
            received_at: chrono::Utc::now(),
            json: br#"{"id":"r7","seq":7}"#.to_vec(),
        };
        let e: Value = serde_json::from_slice(
            &hec_event(&item, "h1", "codestax:audit", Some("main")).unwrap(),
        )
        .unwrap();
        assert_eq!(e["time"], serde_json::json!(1_700_000_000.25));
        assert_eq!(e["source"], "codestax:acme");
        assert_eq!(e["index"], "main");
        assert_eq!(e["event"]["seq"], 7);
        let e: Value =
            serde_json::from_slice(&hec_event(&item, "h1", "st", None).unwrap()).unwrap();
        assert!(e.get("index").is_none());
    }

    #[test]
    fn answers_are_classified_by_status_and_code() {
        assert_eq!(classify(200, Some(0)), Ok(()));
        assert!(matches!(
            classify(200, Some(6)),
            Err(SendError::NonRetryable(_))
        ));
        assert!(matches!(
            classify(401, Some(4)),
            Err(SendError::NonRetryable(_))
        ));
        assert!(matches!(
            classify(403, Some(1)),
            Err(SendError::NonRetryable(_))
        ));
        assert!(matches!(
            classify(400, Some(7)),
            Err(SendError::NonRetryable(_))
        ));
        assert!(matches!(
            classify(503, Some(9)),
            Err(SendError::Retryable(_))
        ));
        assert!(matches!(classify(502, None), Err(SendError::Retryable(_))));
    }
}
